#!/usr/bin/env bash
# test/bench_bulk.sh: the bulk-lookup benchmark.  line_status(text[]) over
# 10,000 fresh numbers at 50 ms stand-in latency (fixed and lognormal) with
# max_concurrency 100 against the 5.0 s ideal, and the sequential path for
# comparison; a 429 storm (stand-in max_inflight 20) that must still pay
# exactly once per number (exits 1 otherwise); and the backend's peak memory
# during one call over 1,000,000 numbers.  See test/bench/bench_bulk.py.
#
# Like test/run.sh it builds, installs and starts a throwaway cluster and
# stand-in (as root).  With LS_BENCH_REUSE=1 it uses an environment that is
# already running instead (PG*, STANDIN_URL, ... exported, as test/lib.sh
# sets them, and the extension configured).  LS_BENCH_RUNS (default 3) sets
# the number of runs per throughput figure.
source "$(dirname "$0")/lib.sh"

if [ -z "${LS_BENCH_REUSE:-}" ]; then
	ls_setup
	ls_configure >/dev/null
fi
$PY "$LS_ROOT/test/bench/bench_bulk.py"
