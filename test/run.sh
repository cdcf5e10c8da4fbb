#!/usr/bin/env bash
# test/run.sh: the whole test suite, from a fresh Debian 12 machine (as root).
# Installs the packages it needs, builds with -Wall -Wextra -Werror, installs,
# starts a throwaway cluster and the Twilio stand-in, runs the pg_regress
# suites and the scenario tests, and ends with "N passed, M failed".
source "$(dirname "$0")/lib.sh"
set +e

ls_setup
ls_configure >/dev/null

passed=0
failed=0

# pg_regress: one test per file in sql/.
ls_log "pg_regress suites"
curl -s -X POST "$STANDIN_URL/__standin/reset" >/dev/null
make -C "$LS_ROOT" installcheck >"$LS_WORK/regress.log" 2>&1
grep -E '^test |^ok |^not ok ' "$LS_WORK/regress.log"
r_ok=$(grep -cE '^test .*\.\.\. ok' "$LS_WORK/regress.log")
r_bad=$(grep -cE '^test .*\.\.\. FAILED' "$LS_WORK/regress.log")
if [ "$r_ok" -eq 0 ] && [ "$r_bad" -eq 0 ]; then
	cat "$LS_WORK/regress.log"
	r_bad=1
fi
if [ "$r_bad" -gt 0 ] && [ -f "$LS_ROOT/regression.diffs" ]; then
	head -200 "$LS_ROOT/regression.diffs"
fi
passed=$((passed + r_ok))
failed=$((failed + r_bad))

# Scenario tests: what one regress session cannot see.
ls_log "scenario tests"
$PY "$LS_ROOT/test/scenarios/run.py" | tee "$LS_WORK/scenarios.log"
s_ok=$(grep -cE '^ok ' "$LS_WORK/scenarios.log")
s_bad=$(grep -cE '^FAIL ' "$LS_WORK/scenarios.log")
if [ "$s_ok" -eq 0 ] && [ "$s_bad" -eq 0 ]; then
	s_bad=1
fi
passed=$((passed + s_ok))
failed=$((failed + s_bad))

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
