#!/usr/bin/python3
"""Bulk-lookup benchmark of line_status, run by test/bench_bulk.sh.

1. Throughput.  SET line_status.max_concurrency = 100; one
   SELECT count(*) FROM line_status(ARRAY(...)) over 10,000 distinct fresh
   numbers, with the stand-in answering after 50 ms fixed, then after 50 ms
   mean lognormal (sigma 0.6076, p99 about 3.4 x the mean).  Ideal:
   10,000 x 50 ms / 100 = 5.0 s.  RUNS runs each (fresh numbers every run),
   medians; targets: at least 80 % of ideal (fixed), 70 % (lognormal).
   In the same run, the sequential path on 500 fresh numbers at 50 ms,
   SELECT count(line_status(p)) FROM unnest(...), and the bulk speed-up.

2. 429 storm.  The stand-in refuses (429 / 20429, never paid) a lookup
   arriving while 20 are in flight; latency 50 ms; 5,000 fresh numbers,
   max_concurrency 100.  Correctness (exit 1 if violated): the call
   completes, every row has a status, the stand-in was paid exactly once per
   number (paid == 5,000, max_paid_per_number == 1,
   numbers_paid_more_than_once == 0).  Figures: the 429 count and the rate
   against the ideal for 20 in flight (20 / 50 ms = 400 lookups/s).

3. Memory.  One call over 1,000,000 fresh numbers at 0 ms latency, built
   server-side (ARRAY(SELECT ... FROM generate_series(1, 1000000))), in a
   new backend, sampled every 100 ms from another thread: VmHWM (peak
   resident set, including the shared buffers the backend touched), and the
   resident anonymous (private) memory as test/scenarios/common.py measures
   it.  Target: peak below 200 MB.

A benchmark: it prints figures; it fails only if the 429-storm correctness
check fails or something breaks.  The stand-in is left at latency 0,
fixed, max_inflight 0; the cache rows this run created are deleted at the
end so that LS_BENCH_REUSE=1 runs do not grow the cache table.
"""
import os
import statistics
import sys
import threading
import time

import psycopg2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'scenarios'))

from common import (backend_memory_kb, connect, extension_version, fresh_block, q, q1,  # noqa: E402
                    standin_config, standin_reset, standin_stats)

RUNS = int(os.environ.get('LS_BENCH_RUNS', '3'))
CONCURRENCY = 100
LATENCY_MS = 50
BULK_N = 10000
SEQ_N = 500
STORM_N = 5000
STORM_INFLIGHT = 20
MEM_N = 1000000
MEM_TARGET_MB = 200

BULK_SQL = ("SELECT count(*), count(status) FROM line_status(ARRAY("
            "SELECT %s || lpad(g::text, 7, '0') FROM generate_series(1, %s) g))")
SEQ_SQL = ("SELECT count(line_status(p)) FROM unnest(ARRAY("
           "SELECT %s || lpad(g::text, 7, '0') FROM generate_series(1, %s) g)) p")


class Bench:
    def __init__(self):
        self.conn = connect(application_name='line_status_bench_bulk')
        self.nsp = q1(self.conn, "SELECT quote_ident(extnamespace::regnamespace::text) "
                                 "FROM pg_extension WHERE extname = 'line_status'")
        self.blocks = []

    def cache_rows(self, prefix):
        return q1(self.conn, 'SELECT count(*) FROM %s.line_status_cache WHERE left(phone_number, %%s) = %%s'
                  % self.nsp, (len(prefix), prefix))

    def unused_block(self):
        """A "+1NNN" prefix with no row in the cache (so its 10,000,000
        numbers are fresh even in a reused environment), not used before by
        this run."""
        for _ in range(100):
            b = fresh_block()
            if b not in self.blocks and self.cache_rows(b) == 0:
                self.blocks.append(b)
                return b
        raise SystemExit('no unused "+1NNN" block left in line_status_cache')

    def cleanup(self):
        if self.conn.closed:
            self.conn = connect(application_name='line_status_bench_bulk')
        n = 0
        for b in self.blocks:
            n += q1(self.conn, 'WITH d AS (DELETE FROM %s.line_status_cache WHERE left(phone_number, %%s) = %%s '
                               'RETURNING 1) SELECT count(*) FROM d' % self.nsp, (len(b), b))
        # Give the space back (the rows were the last ones in the table), so
        # that a later benchmark's scans of the cache do not read empty pages.
        q(self.conn, 'VACUUM %s.line_status_cache' % self.nsp)
        return n


def bulk_call(conn, block, n):
    """One bulk call over n fresh numbers; returns seconds (checks the rows)."""
    t0 = time.perf_counter()
    rows, with_status = q(conn, BULK_SQL, (block, n))[0]
    secs = time.perf_counter() - t0
    assert rows == n and with_status == n, (rows, with_status, n)
    return secs


def throughput(bench):
    conn = bench.conn
    q(conn, 'SET line_status.max_concurrency = %d' % CONCURRENCY)
    ideal = BULK_N * LATENCY_MS / 1000.0 / CONCURRENCY

    # Warm-up: library, cache lookups, the connection pool.
    standin_config(latency_ms=0, latency_dist='fixed', max_inflight=0)
    bulk_call(conn, bench.unused_block(), 1000)

    results = {}
    for dist, target in (('fixed', 0.80), ('lognormal', 0.70)):
        standin_config(latency_ms=LATENCY_MS, latency_dist=dist, max_inflight=0)
        print('bulk, %d fresh numbers, max_concurrency %d, latency %d ms %s (ideal %.1f s):'
              % (BULK_N, CONCURRENCY, LATENCY_MS, dist, ideal))
        secs_runs = []
        for run in range(RUNS):
            block = bench.unused_block()
            standin_reset()
            secs = bulk_call(conn, block, BULK_N)
            st = standin_stats()
            secs_runs.append(secs)
            print('  run %d: %.2f s = %5.0f lookups/s, %3.0f %% of ideal  (%d requests, %d paid, '
                  'max in flight %d)' % (run + 1, secs, BULK_N / secs, 100 * ideal / secs,
                                         st['requests'], st['paid'], st['max_inflight_seen']))
            if st['paid'] != BULK_N or st['numbers_paid_more_than_once'] != 0:
                print('  WARNING: %d paid for %d numbers, %d paid more than once'
                      % (st['paid'], BULK_N, st['numbers_paid_more_than_once']))
        med = statistics.median(secs_runs)
        eff = ideal / med
        print('  median %.2f s = %.0f lookups/s = %.0f %% of ideal (target >= %.0f %%: %s)'
              % (med, BULK_N / med, 100 * eff, 100 * target, 'PASS' if eff >= target else 'MISS'))
        results[dist] = {'secs': med, 'rate': BULK_N / med, 'eff': eff, 'target': target,
                         'runs': secs_runs}

    standin_config(latency_ms=LATENCY_MS, latency_dist='fixed', max_inflight=0)
    block = bench.unused_block()
    standin_reset()
    t0 = time.perf_counter()
    n = q1(conn, SEQ_SQL, (block, SEQ_N))
    secs = time.perf_counter() - t0
    st = standin_stats()
    assert n == SEQ_N, n
    seq_rate = SEQ_N / secs
    print('sequential, %d fresh numbers, latency %d ms fixed: %.2f s = %.1f lookups/s (%.1f ms per lookup, '
          '%d requests)' % (SEQ_N, LATENCY_MS, secs, seq_rate, 1000 * secs / SEQ_N, st['requests']))
    speedup = results['fixed']['rate'] / seq_rate
    print('bulk / sequential speed-up at %d ms: %.0fx' % (LATENCY_MS, speedup))
    q(conn, 'RESET line_status.max_concurrency')
    results['seq'] = {'secs': secs, 'rate': seq_rate, 'speedup': speedup}
    results['ideal'] = ideal
    return results


def storm(bench):
    conn = bench.conn
    q(conn, 'SET line_status.max_concurrency = %d' % CONCURRENCY)
    ideal_rate = STORM_INFLIGHT / (LATENCY_MS / 1000.0)
    block = bench.unused_block()
    standin_config(latency_ms=LATENCY_MS, latency_dist='fixed', max_inflight=STORM_INFLIGHT)
    standin_reset()
    print('429 storm: stand-in max_inflight %d, latency %d ms, %d fresh numbers, max_concurrency %d '
          '(ideal %.0f lookups/s, %.1f s):' % (STORM_INFLIGHT, LATENCY_MS, STORM_N, CONCURRENCY,
                                              ideal_rate, STORM_N / ideal_rate))
    error = None
    rows = with_status = 0
    t0 = time.perf_counter()
    try:
        rows, with_status = q(conn, BULK_SQL, (block, STORM_N))[0]
    except psycopg2.Error as e:
        error = (e.pgerror or str(e)).strip().splitlines()[0]
    secs = time.perf_counter() - t0
    st = standin_stats()
    standin_config(latency_ms=0, latency_dist='fixed', max_inflight=0)
    if conn.closed:
        bench.conn = connect(application_name='line_status_bench_bulk')
    else:
        q(conn, 'RESET line_status.max_concurrency')
    n429 = st['status_counts'].get('429', 0)
    rate = STORM_N / secs
    print('  %s in %.2f s = %.0f lookups/s = %.0f %% of the ideal %.0f/s'
          % ('FAILED: ' + error if error else 'completed', secs, rate, 100 * rate / ideal_rate, ideal_rate))
    print('  stand-in: %d requests, %d answers 429, %d paid, max %d paid per number, %d numbers paid more '
          'than once, max in flight %d, status counts %s'
          % (st['requests'], n429, st['paid'], st['max_paid_per_number'], st['numbers_paid_more_than_once'],
             st['max_inflight_seen'], st['status_counts']))
    checks = [
        ('the call completed%s' % (' (%s)' % error if error else ''), error is None),
        ('every row has a status (%d rows, %d with a status)' % (rows, with_status),
         rows == STORM_N and with_status == STORM_N),
        ('paid == %d (%d)' % (STORM_N, st['paid']), st['paid'] == STORM_N),
        ('max_paid_per_number == 1 (%d)' % st['max_paid_per_number'], st['max_paid_per_number'] == 1),
        ('numbers_paid_more_than_once == 0 (%d)' % st['numbers_paid_more_than_once'],
         st['numbers_paid_more_than_once'] == 0),
    ]
    ok = True
    for label, passed in checks:
        print('  %s: %s' % ('PASS' if passed else 'FAIL', label))
        ok = ok and passed
    return {'ok': ok, 'secs': secs, 'rate': rate, 'ideal': ideal_rate, 'n429': n429,
            'requests': st['requests'], 'paid': st['paid'], 'error': error}


def proc_status_kb(pid):
    """VmHWM, VmRSS, RssAnon, RssShmem of a process, in kB."""
    out = {}
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            key = line.split(':', 1)[0]
            if key in ('VmHWM', 'VmRSS', 'RssAnon', 'RssShmem'):
                out[key] = int(line.split()[1])
    return out


class Sampler(threading.Thread):
    """Samples a backend's memory every interval seconds until stopped."""

    def __init__(self, pid, interval=0.1):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.stop = threading.Event()
        self.samples = []           # (t, status dict, anonymous kB)

    def run(self):
        t0 = time.monotonic()
        while not self.stop.is_set():
            try:
                self.samples.append((time.monotonic() - t0, proc_status_kb(self.pid),
                                     backend_memory_kb(self.pid)))
            except (FileNotFoundError, ProcessLookupError, RuntimeError):
                break
            self.stop.wait(self.interval)

    def peak(self, key):
        if key == 'anon':
            return max((s[2] for s in self.samples), default=0)
        return max((s[1].get(key, 0) for s in self.samples), default=0)


def memory(bench):
    block = bench.unused_block()
    standin_config(latency_ms=0, latency_dist='fixed', max_inflight=0)
    standin_reset()
    conn = connect(application_name='line_status_bench_bulk_memory')
    pid = conn.get_backend_pid()
    q(conn, 'SET line_status.max_concurrency = %d' % CONCURRENCY)
    q1(conn, 'SELECT 1')
    base = proc_status_kb(pid)
    base_anon = backend_memory_kb(pid)
    work_mem = q1(conn, 'SHOW work_mem')
    shared_buffers = q1(conn, 'SHOW shared_buffers')
    print('memory: one call over %d fresh numbers (%s...), latency 0 ms, max_concurrency %d, new backend '
          '(pid %d), work_mem %s, shared_buffers %s' % (MEM_N, block, CONCURRENCY, pid, work_mem, shared_buffers))
    print('  before: VmHWM %.1f MB, VmRSS %.1f MB, anonymous %.1f MB, RssShmem %.1f MB'
          % (base['VmHWM'] / 1024.0, base['VmRSS'] / 1024.0, base_anon / 1024.0, base['RssShmem'] / 1024.0))
    sampler = Sampler(pid)
    sampler.start()
    error = None
    t0 = time.perf_counter()
    try:
        rows, with_status = q(conn, BULK_SQL, (block, MEM_N))[0]
    except psycopg2.Error as e:
        error = (e.pgerror or str(e)).strip().splitlines()[0]
        rows = with_status = -1
    secs = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    after = None
    if not conn.closed:
        after = proc_status_kb(pid)
        conn.close()
    st = standin_stats()
    hwm = max(sampler.peak('VmHWM'), after['VmHWM'] if after else 0)
    anon = sampler.peak('anon')
    shmem = sampler.peak('RssShmem')
    print('  %s in %.1f s = %.0f lookups/s (%d rows, %d with a status; %d requests, %d paid)'
          % ('FAILED: ' + error if error else 'completed', secs, MEM_N / secs if secs else 0,
             rows, with_status, st['requests'], st['paid']))
    print('  %d samples: peak VmHWM %.1f MB (of which shared memory up to %.1f MB), '
          'peak anonymous (private) %.1f MB' % (len(sampler.samples), hwm / 1024.0, shmem / 1024.0, anon / 1024.0))
    # A coarse profile: the anonymous memory at each tenth of the call.
    if sampler.samples:
        step = max(1, len(sampler.samples) // 10)
        prof = sampler.samples[::step]
        print('  anonymous MB over time: %s' % '  '.join('%.0fs:%.0f' % (t, a / 1024.0) for t, _, a in prof))
    print('  target peak < %d MB, on the private memory: %s (peak anonymous %.1f MB; VmHWM less the '
          'shared memory, about %.1f MB).  VmHWM itself, %.1f MB, also counts the shared buffers the '
          'backend touched (at most shared_buffers, whatever the input size): %s'
          % (MEM_TARGET_MB, 'PASS' if anon < MEM_TARGET_MB * 1024 else 'MISS', anon / 1024.0,
             (hwm - shmem) / 1024.0, hwm / 1024.0, 'under' if hwm < MEM_TARGET_MB * 1024 else 'over'))
    if error:
        raise SystemExit('the 1,000,000-number call failed: %s' % error)
    if rows != MEM_N or with_status != MEM_N:
        raise SystemExit('the 1,000,000-number call gave %d rows, %d with a status' % (rows, with_status))
    return {'secs': secs, 'hwm': hwm, 'anon': anon, 'shmem': shmem, 'base_hwm': base['VmHWM'],
            'requests': st['requests']}


def main():
    bench = Bench()
    version = extension_version(bench.conn)
    print('line_status %s bulk-lookup benchmark, %d run(s) per throughput figure' % (version, RUNS))
    storm_res = None
    try:
        print()
        print('1. throughput')
        thr = throughput(bench)
        print()
        print('2. 429 storm')
        storm_res = storm(bench)
        print()
        print('3. memory')
        mem = memory(bench)
    finally:
        standin_config(latency_ms=0, latency_dist='fixed', max_inflight=0)
        try:
            t0 = time.perf_counter()
            deleted = bench.cleanup()
            print()
            print('cleanup: stand-in back to latency 0 / max_inflight 0; deleted the %d cache rows '
                  'of this run in %.1f s' % (deleted, time.perf_counter() - t0))
        except Exception as e:      # noqa: BLE001 - do not hide the first error
            print('cleanup failed: %s' % e)
    bench.conn.close()

    print()
    print('SUMMARY (bulk lookups)')
    print('  throughput, %d fresh numbers, max_concurrency %d, latency %d ms, ideal %.1f s, medians of %d:'
          % (BULK_N, CONCURRENCY, LATENCY_MS, thr['ideal'], RUNS))
    for dist in ('fixed', 'lognormal'):
        r = thr[dist]
        print('    %-10s %6.2f s  %6.0f lookups/s  %3.0f %% of ideal  (target >= %.0f %%: %s)'
              % (dist + ':', r['secs'], r['rate'], 100 * r['eff'], 100 * r['target'],
                 'PASS' if r['eff'] >= r['target'] else 'MISS'))
    print('    sequential, %d numbers at %d ms:  %.2f s  %.1f lookups/s;  bulk speed-up %.0fx'
          % (SEQ_N, LATENCY_MS, thr['seq']['secs'], thr['seq']['rate'], thr['seq']['speedup']))
    s = storm_res
    print('  429 storm, %d numbers, stand-in max_inflight %d, latency %d ms, max_concurrency %d:'
          % (STORM_N, STORM_INFLIGHT, LATENCY_MS, CONCURRENCY))
    print('    %.2f s  %.0f lookups/s = %.0f %% of the ideal %.0f/s;  %d answers 429 (%d requests, %d paid)'
          % (s['secs'], s['rate'], 100 * s['rate'] / s['ideal'], s['ideal'], s['n429'], s['requests'], s['paid']))
    print('    correctness (completes, every row a status, paid once per number): %s'
          % ('PASS' if s['ok'] else 'FAIL'))
    print('  memory, one call over %d numbers at 0 ms: %.1f s (%.0f lookups/s)'
          % (MEM_N, mem['secs'], MEM_N / mem['secs']))
    print('    peak private (anonymous) memory %.1f MB  (target < %d MB: %s)'
          % (mem['anon'] / 1024.0, MEM_TARGET_MB, 'PASS' if mem['anon'] < MEM_TARGET_MB * 1024 else 'MISS'))
    print('    peak VmHWM %.1f MB, of which shared memory (shared buffers touched) up to %.1f MB'
          % (mem['hwm'] / 1024.0, mem['shmem'] / 1024.0))
    if not s['ok']:
        sys.exit(1)


if __name__ == '__main__':
    main()
