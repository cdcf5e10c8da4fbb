#!/usr/bin/env bash
# test/load.sh: the load test.  16 sessions for 60 s (LOAD_SECONDS) doing
# single and bulk lookups (50..200 numbers) drawn from one pool of 20,000
# numbers, so that sessions collide on the same numbers, with the stand-in
# at 20 ms mean lognormal latency and the cache on; then every number again
# (phase 2), which must cost 0 requests.  Prints throughput, errors by
# SQLSTATE, deadlocks, unique violations and duplicate paid requests (split
# into concurrent misses and payments after a commit).  Not part of the test
# command; exits 1 if a target is missed.  See test/bench/load.py for the
# other knobs (LOAD_SESSIONS, LOAD_POOL, LOAD_LATENCY_MS, LOAD_BULK_SHARE,
# LOAD_BULK_MIN, LOAD_BULK_MAX).
#
# Like test/run.sh it builds, installs and starts a throwaway cluster and
# stand-in (as root).  With LS_BENCH_REUSE=1 it uses an environment that is
# already running instead (PG*, STANDIN_URL, ... exported, as test/lib.sh
# sets them, and the extension configured).
source "$(dirname "$0")/lib.sh"

if [ -z "${LS_BENCH_REUSE:-}" ]; then
	ls_setup
	ls_configure >/dev/null
fi
$PY "$LS_ROOT/test/bench/load.py"
