#!/usr/bin/env bash
# test/demo.sh: the main job on sample data, from a fresh Debian 12 machine
# (as root).  Builds and installs the extension, starts a throwaway cluster,
# and checks a sample contacts table: against our Twilio stand-in, or
# against the real Twilio when TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are
# set (that costs about $0.007 per distinct valid number: 12 here).
source "$(dirname "$0")/lib.sh"

ls_setup
if [ -n "${TWILIO_ACCOUNT_SID:-}" ] && [ -n "${TWILIO_AUTH_TOKEN:-}" ]; then
	ls_log "using the real Twilio Lookup API"
	install -o postgres -g postgres -m 600 /dev/null "$LS_PGDATA/line_status.token"
	printf '%s\n' "$TWILIO_AUTH_TOKEN" > "$LS_PGDATA/line_status.token"
	psql -qX -v ON_ERROR_STOP=1 -v sid="$TWILIO_ACCOUNT_SID" <<'EOF'
LOAD 'line_status';
ALTER SYSTEM SET line_status.account_sid = :'sid';
ALTER SYSTEM SET line_status.auth_token_file = 'line_status.token';
SELECT pg_reload_conf();
EOF
	SAMPLE_NUMBERS="${DEMO_NUMBERS:-+14155552671 +447700900077}"
else
	ls_log "using the Twilio stand-in at $STANDIN_URL (set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN for the real API)"
	ls_configure >/dev/null
	curl -s -X POST -d '{"latency_ms":300,"latency_dist":"lognormal"}' "$STANDIN_URL/__standin/config" >/dev/null
	SAMPLE_NUMBERS=""
fi

psql -X -v ON_ERROR_STOP=1 -v extra="$SAMPLE_NUMBERS" <<'EOF'
\set QUIET on
CREATE EXTENSION line_status;
CREATE TABLE contacts (id serial PRIMARY KEY, name text, phone text, status line_status_status);
INSERT INTO contacts (name, phone) VALUES
  ('Ada',     '+1 415 555 0100'),
  ('Brendan', '+1 (415) 555-0101'),
  ('Chiara',  '+14155550102'),
  ('Dmitri',  '+1.415.555.0103'),
  ('Emeka',   '+14155550104'),
  ('Fatima',  '+14155550110'),
  ('Gustav',  '(415) 555-0100'),
  ('Hana',    '+14155550101'),
  ('Ivan',    'n/a'),
  ('Jun',     ''),
  ('Kofi',    NULL),
  ('Lena',    '+12025550147'),
  ('Mateo',   '+12025550148'),
  ('Nadia',   '+447700900123'),
  ('Oren',    '+12025550147');
INSERT INTO contacts (name, phone)
  SELECT 'Extra ' || n, n FROM unnest(string_to_array(nullif(:'extra', ''), ' ')) n;
\set QUIET off

\echo
\echo '== One number'
SELECT * FROM line_status('+14155550100');

\echo '== The contacts, one call per row (a repeated number is asked once; garbage is never sent)'
SELECT c.id, c.name, c.phone, r.phone_number, r.status, r.valid, r.cached
  FROM contacts c LEFT JOIN LATERAL line_status(c.phone, 'US') r ON true ORDER BY c.id;

\echo '== The clean-up job: every distinct number at once, concurrently (all cached by now)'
UPDATE contacts c SET status = r.status
  FROM line_status(ARRAY(SELECT phone FROM contacts), 'US') r WHERE r.input = c.phone;
SELECT id, name, phone, status FROM contacts ORDER BY id;

\echo '== Numbers worth texting'
SELECT name, phone FROM contacts WHERE status IN ('active', 'reachable') ORDER BY id;

\echo '== What was paid for (the cache)'
SELECT phone_number, status, valid, country_code, checked_at FROM line_status_cache ORDER BY phone_number;
EOF

if [ -z "${TWILIO_ACCOUNT_SID:-}" ]; then
	echo "== The stand-in's counters: requests it answered (each would cost ~\$0.007)"
	curl -s "$STANDIN_URL/__standin/stats?summary=1" | $PY -c 'import json,sys; d=json.load(sys.stdin); print("requests:", d["requests"], " distinct numbers:", d["distinct_numbers"], " most requests for one number:", d["max_paid_per_number"])'
fi
