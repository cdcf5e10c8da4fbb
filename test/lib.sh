# test/lib.sh: shared by test/run.sh, test/demo.sh and the benchmarks.
# Installs what is missing, builds and installs the extension, and starts a
# throwaway PostgreSQL cluster and the Twilio stand-in, all torn down on exit.
# Source it from bash; it sets PGHOST, PGPORT, PGUSER, PGDATABASE, STANDIN_URL,
# STANDIN_TLS_URL, LS_CA_FILE and LS_WORK.

set -euo pipefail

LS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=/usr/lib/postgresql/15/bin
PY=/usr/bin/python3

# Test credentials known to the stand-in.
LS_TEST_SID=AC00000000000000000000000000000001
LS_TEST_TOKEN=test-auth-token-0123456789abcdef

ls_log() { printf '== %s\n' "$*" >&2; }

# ls_install_packages: the Debian packages the build and the tests need.
ls_install_packages() {
	local pkgs="postgresql-15 postgresql-server-dev-15 libcurl4-openssl-dev
		build-essential python3 python3-psycopg2 nodejs openssl curl ca-certificates
		clang-14 libclang-rt-14-dev"
	local missing=""
	for p in $pkgs; do
		dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
	done
	if [ -n "$missing" ]; then
		ls_log "installing:$missing"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq $missing >/dev/null
	fi
}

# ls_build: build with -Wall -Wextra -Werror (set in the Makefile) and install.
ls_build() {
	ls_log "building line_status"
	make -C "$LS_ROOT" -s clean >/dev/null
	make -C "$LS_ROOT" -s >/dev/null
	make -C "$LS_ROOT" -s install >/dev/null
}

# ls_free_port: a TCP port nobody listens on.
ls_free_port() {
	$PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# ls_make_certs: a CA and a server certificate for the name localhost only
# (so https://127.0.0.1 fails host verification), and a second, unrelated CA
# (for the wrong-CA test).
ls_make_certs() {
	local d=$LS_WORK/tls
	mkdir -p "$d"
	(
		cd "$d"
		openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=line_status test CA" \
			-keyout ca.key -out ca.pem >/dev/null 2>&1
		openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=unrelated CA" \
			-keyout other-ca.key -out other-ca.pem >/dev/null 2>&1
		openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
			-keyout server.key -out server.csr >/dev/null 2>&1
		printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n' > ext.cnf
		openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
			-days 2 -extfile ext.cnf -out server.pem >/dev/null 2>&1
	)
	chmod 755 "$d"
	chmod 644 "$d"/*.pem
	LS_CA_FILE=$d/ca.pem
	LS_OTHER_CA_FILE=$d/other-ca.pem
	export LS_CA_FILE LS_OTHER_CA_FILE
}

# ls_start_standin [extra args...]: start the stand-in on HTTP and HTTPS.
ls_start_standin() {
	local ready=$LS_WORK/standin.json
	rm -f "$ready"
	node "$LS_ROOT/test/standin/standin.js" --port 0 --tls-port 0 \
		--cert "$LS_WORK/tls/server.pem" --key "$LS_WORK/tls/server.key" \
		--ready-file "$ready" "$@" >"$LS_WORK/standin.log" 2>&1 &
	LS_STANDIN_PID=$!
	for _ in $(seq 1 100); do
		[ -s "$ready" ] && break
		sleep 0.1
	done
	[ -s "$ready" ] || { cat "$LS_WORK/standin.log" >&2; echo "stand-in did not start" >&2; return 1; }
	STANDIN_PORT=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$ready")
	STANDIN_TLS_PORT=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["tls_port"])' "$ready")
	STANDIN_URL=http://127.0.0.1:$STANDIN_PORT
	STANDIN_TLS_URL=https://localhost:$STANDIN_TLS_PORT
	export STANDIN_PORT STANDIN_TLS_PORT STANDIN_URL STANDIN_TLS_URL LS_STANDIN_PID
}

# ls_start_cluster: initdb and start a cluster owned by the postgres OS user
# (initdb refuses to run as root), listening on a free port and a socket in
# LS_WORK.  Extra postgresql.conf lines come from $LS_EXTRA_CONF.
ls_start_cluster() {
	local data=$LS_WORK/data
	PGPORT=$(ls_free_port)
	PGHOST=$LS_WORK/sock
	mkdir -p "$PGHOST"
	chown postgres "$LS_WORK" "$PGHOST"
	runuser -u postgres -- "$PG_BIN/initdb" -D "$data" -U postgres -A trust \
		--no-sync >"$LS_WORK/initdb.log" 2>&1
	cat >>"$data/postgresql.conf" <<EOF
port = $PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PGHOST'
fsync = off
max_connections = 60
log_line_prefix = '%m [%p] %u '
shared_preload_libraries = 'line_status'
${LS_EXTRA_CONF:-}
EOF
	runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$data" -l "$LS_WORK/postgres.log" -w start >/dev/null
	PGUSER=postgres
	PGDATABASE=postgres
	export PGPORT PGHOST PGUSER PGDATABASE
	LS_PGDATA=$data
	export LS_PGDATA
}

# ls_configure: point the extension at the stand-in, the way the README tells
# an administrator to do it: the token in a file private to the postgres OS
# user, the other settings with ALTER SYSTEM (never ALTER ROLE/DATABASE).
ls_configure() {
	install -o postgres -g postgres -m 600 /dev/null "$LS_PGDATA/line_status.token"
	printf '%s\n' "$LS_TEST_TOKEN" > "$LS_PGDATA/line_status.token"
	psql -qX -v ON_ERROR_STOP=1 <<EOF
LOAD 'line_status';
ALTER SYSTEM SET line_status.api_url = '$STANDIN_URL';
ALTER SYSTEM SET line_status.account_sid = '$LS_TEST_SID';
ALTER SYSTEM SET line_status.auth_token_file = 'line_status.token';
SELECT pg_reload_conf();
EOF
}

ls_cleanup() {
	if [ -n "${LS_PGDATA:-}" ] && [ -d "$LS_PGDATA" ]; then
		runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$LS_PGDATA" -m immediate stop >/dev/null 2>&1 || true
	fi
	if [ -n "${LS_STANDIN_PID:-}" ]; then
		kill "$LS_STANDIN_PID" 2>/dev/null || true
	fi
	if [ -n "${LS_WORK:-}" ] && [ -z "${LS_KEEP:-}" ]; then
		rm -rf "$LS_WORK"
	fi
}

# ls_setup: everything above, in order.
ls_setup() {
	[ "$(id -u)" = 0 ] || { echo "run as root (it installs packages and runs PostgreSQL as postgres)" >&2; exit 1; }
	ls_install_packages
	ls_build
	LS_WORK=$(mktemp -d /tmp/line_status.XXXXXX)
	chmod 755 "$LS_WORK"
	export LS_WORK
	trap ls_cleanup EXIT
	ls_make_certs
	ls_start_standin "$@"
	ls_start_cluster
}
