#!/usr/bin/python3
"""Core benchmark of line_status, run by test/bench_core.sh.

In one backend, against the stand-in at 0 ms latency:
  - sequential lookups per second: the median of 5 runs of 5,000 distinct
    numbers each (one statement per run), after a 1,000-lookup warm-up,
    with the stand-in's TCP connection count to show keep-alive;
    when the build has a result cache (line_status.cache_ttl), also with
    the cache off, and for cache hits;
  - backend memory growth (resident anonymous memory, see
    test/scenarios/common.py backend_memory_kb) over 100,000 calls.
A benchmark, not a test: it prints figures and fails only if something
breaks (an error, or fewer requests than lookups).
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'scenarios'))

from common import (backend_memory_kb, connect, extension_version, fresh_block,  # noqa: E402
                    has_setting, lookup_connections, memory_contexts_bytes, q, q1,
                    standin_config, standin_reset, standin_stats)

WARMUP = 1000
RUNS = 5
PER_RUN = 5000
MEM_CALLS = 100000
MEM_CHUNK = 5000

SQL = "SELECT count(line_status(%s || lpad(g::text, 7, '0'))) FROM generate_series(%s, %s) g"


def timed_runs(conn, label, blocks, expect_requests):
    """RUNS statements of PER_RUN lookups (block i for run i); returns the median rate."""
    rates = []
    for i, block in enumerate(blocks):
        before = standin_stats()['requests']
        t0 = time.perf_counter()
        n = q1(conn, SQL, (block, 1, PER_RUN))
        secs = time.perf_counter() - t0
        made = standin_stats()['requests'] - before
        assert n == PER_RUN, n
        if expect_requests and made != PER_RUN:
            raise SystemExit('run %d: %d lookups made %d requests, expected %d' % (i + 1, PER_RUN, made, PER_RUN))
        rates.append(PER_RUN / secs)
        print('  run %d: %d lookups in %.3f s = %7.0f lookups/s  (%d requests)' % (i + 1, PER_RUN, secs, PER_RUN / secs, made))
    med = statistics.median(rates)
    print('  %s: median %.0f lookups/s (%.3f ms per lookup)' % (label, med, 1000.0 / med))
    return med


def main():
    standin_config(latency_ms=0, latency_dist='fixed', max_inflight=0)
    conn = connect(application_name='line_status_bench')
    pid = conn.get_backend_pid()
    version = extension_version(conn)
    cache = has_setting(conn, 'line_status.cache_ttl')
    ttl = q1(conn, 'SHOW line_status.cache_ttl') if cache else None
    print('line_status %s core benchmark: one backend (pid %d), stand-in latency 0 ms' % (version, pid))
    print('result cache: %s' % ('line_status.cache_ttl = %s (each new number: request + cache write)' % ttl
                                if cache else 'none in this build'))

    standin_reset()
    assert q1(conn, SQL, (fresh_block(), 1, WARMUP)) == WARMUP
    print('warm-up: %d lookups' % WARMUP)

    print('sequential lookups, %d runs of %d distinct numbers:' % (RUNS, PER_RUN))
    blocks = [fresh_block() for _ in range(RUNS)]
    med = timed_runs(conn, 'default settings', blocks, True)
    results = [('default settings', med)]
    if cache:
        print('cache hits (the same numbers again, no requests):')
        results.append(('cache hits', timed_runs(conn, 'cache hits', blocks, False)))
        q(conn, 'SET line_status.cache_ttl = 0')
        print('cache off (line_status.cache_ttl = 0):')
        results.append(('cache off', timed_runs(conn, 'cache off', [fresh_block() for _ in range(RUNS)], True)))
        q(conn, 'RESET line_status.cache_ttl')
    st = standin_stats()
    conns = lookup_connections(st)
    print('stand-in: %d requests over %d TCP connection(s) (keep-alive: %s)'
          % (st['requests'], conns, 'yes' if conns == 1 else 'NO'))

    print('memory over %d calls (statements of %d, default settings):' % (MEM_CALLS, MEM_CHUNK))
    block = fresh_block()
    # One statement of MEM_CHUNK first, so that the per-statement state is
    # the same size at both measurements.
    assert q1(conn, SQL, (block, 1, MEM_CHUNK)) == MEM_CHUNK
    mem0 = backend_memory_kb(pid)
    ctx0 = memory_contexts_bytes(conn)
    t0 = time.perf_counter()
    for start in range(MEM_CHUNK + 1, MEM_CHUNK + MEM_CALLS + 1, MEM_CHUNK):
        assert q1(conn, SQL, (block, start, start + MEM_CHUNK - 1)) == MEM_CHUNK
    secs = time.perf_counter() - t0
    mem1 = backend_memory_kb(pid)
    ctx1 = memory_contexts_bytes(conn)
    conn.close()
    print('  resident anonymous memory: %.1f MB -> %.1f MB (%+.2f MB) in %.1f s (%.0f lookups/s)'
          % (mem0 / 1024.0, mem1 / 1024.0, (mem1 - mem0) / 1024.0, secs, MEM_CALLS / secs))
    print('  PostgreSQL memory contexts: %+.2f MB' % ((ctx1 - ctx0) / 1048576.0))

    print()
    print('SUMMARY')
    for label, rate in results:
        print('  sequential lookups/s, %-17s %8.0f' % (label + ':', rate))
    print('  TCP connections to the stand-in:     %8d' % conns)
    print('  memory growth over %d calls:   %+8.2f MB' % (MEM_CALLS, (mem1 - mem0) / 1024.0))


if __name__ == '__main__':
    main()
