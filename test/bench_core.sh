#!/usr/bin/env bash
# test/bench_core.sh: the core benchmark.  Sequential lookups per second in
# one backend at 0 ms stand-in latency (median of 5 runs of 5,000 distinct
# numbers, after a warm-up), the stand-in's connection count (keep-alive),
# and backend memory growth over 100,000 calls.  See test/bench/bench_core.py.
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
$PY "$LS_ROOT/test/bench/bench_core.py"
