#!/usr/bin/env bash
# test/bench_cache.sh: the result-cache benchmark.  Paid requests for a
# 10,000-row table with 30% repeated numbers and 5% garbage, looked up twice
# (exactly one request per distinct valid number expected, none the second
# time: exits 1 otherwise), and the speed of 100,000 cached lookups against
# the plain join on line_status_cache doing comparable work (medians of 5
# alternating runs, with and without JIT).  See test/bench/bench_cache.py.
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
$PY "$LS_ROOT/test/bench/bench_cache.py"
