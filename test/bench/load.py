#!/usr/bin/python3
"""Load test of line_status, run by test/load.sh.  It prints figures; it is
not part of the test command.

Phase 1 (LOAD_SECONDS, default 60): LOAD_SESSIONS (16) sessions, each in
its own thread and backend, run statements back to back until the time is
up.  Each statement is, at random, a single lookup

    SELECT (line_status(p)).cached

or, with probability LOAD_BULK_SHARE (0.25), a bulk lookup of 50..200
distinct numbers (LOAD_BULK_MIN, LOAD_BULK_MAX)

    SELECT count(*), array_agg(DISTINCT phone_number) FILTER (WHERE NOT cached)
      FROM line_status(ARRAY[...])

The numbers are drawn at random from one pool of LOAD_POOL (20,000) fresh
numbers shared by all sessions, so sessions collide on the same numbers,
also while they are not yet cached.  The stand-in answers after
LOAD_LATENCY_MS (20) ms, lognormal; the cache is on (line_status.cache_ttl
at its default, or 7 days if the default is 0).  Autocommit: each
statement commits its cache writes when it ends.

Phase 2: once phase 1 is over and everything committed, the same sessions
look up every number that a successful phase-1 statement looked up again,
in bulk lookups of 200.  Every answer must come from the cache: phase 2
must cause 0 requests.

Figures: throughput (lookups/s, statements/s), statement latencies, cache
hits, errors by SQLSTATE (target 0), deadlocks 40P01 (target 0, also
pg_stat_database.deadlocks), unique violations 23505 (target 0), and
paid requests per number.  A number can honestly be paid twice: sessions
that miss the cache for it at the same time cannot see each other's
uncommitted rows, and each asks.  So numbers paid more than once are split
  (i)  paid again by a statement that started after another paying
       statement for the number had ended (committed), with no other paying
       statement for it still running: a real cache failure (target 0);
  (ii) concurrent misses: every extra payment came while another statement
       that paid for the number was still running.
Which statement paid is known from the client side (the rows with
cached = false, i.e. answered by a request in that statement), with the
client's own start and end times (a statement's snapshot is taken after
its start, and its commit is done before its end).  Phase 2 is the check of
(i) that does not depend on that reasoning.

Exit status 1 if a target is missed, else 0.  The stand-in is left at
latency 0, fixed; the cache rows of the pool are deleted at the end so that
LS_BENCH_REUSE=1 runs do not grow the cache table.
"""
import collections
import os
import random
import statistics
import sys
import threading
import time

import psycopg2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'scenarios'))

from common import (connect, extension_version, fresh_block, q, q1,  # noqa: E402
                    standin_config, standin_reset, standin_stats)


def env_int(name, default):
    return int(os.environ.get(name, default))


SECONDS = float(os.environ.get('LOAD_SECONDS', '60'))
SESSIONS = env_int('LOAD_SESSIONS', 16)
POOL = env_int('LOAD_POOL', 20000)
LATENCY_MS = float(os.environ.get('LOAD_LATENCY_MS', '20'))
BULK_SHARE = float(os.environ.get('LOAD_BULK_SHARE', '0.25'))
BULK_MIN = env_int('LOAD_BULK_MIN', 50)
BULK_MAX = env_int('LOAD_BULK_MAX', 200)
PHASE2_CHUNK = 200
PROGRESS_EVERY = 5.0

SINGLE_SQL = 'SELECT (line_status(%s)).cached'
BULK_SQL = ('SELECT count(*), array_agg(DISTINCT phone_number) FILTER (WHERE NOT cached) '
            'FROM line_status(%s::text[])')


class Stmt:
    """One successful statement: when it ran, how many lookups, which
    numbers it paid for (answered by a request, not the cache)."""
    __slots__ = ('kind', 'start', 'end', 'n', 'paid')

    def __init__(self, kind, start, end, n, paid):
        self.kind, self.start, self.end, self.n, self.paid = kind, start, end, n, paid


class Session(threading.Thread):
    """One backend running statements until deadline (phase 1), or the
    chunks of a queue (phase 2)."""

    def __init__(self, idx, pool, deadline=None, chunks=None, seed=None):
        super().__init__(daemon=True)
        self.idx = idx
        self.pool = pool
        self.deadline = deadline
        self.chunks = chunks
        self.rng = random.Random(seed)
        self.stmts = []
        self.errors = collections.Counter()
        self.error_samples = {}
        self.touched = set()
        self.not_cached_phase2 = 0
        self.conn = None

    def setup(self):
        self.conn = connect(application_name='line_status_load_%d' % self.idx)
        q(self.conn, 'RESET line_status.cache_ttl')
        if q1(self.conn, "SELECT setting::int FROM pg_settings WHERE name = 'line_status.cache_ttl'") == 0:
            q(self.conn, "SET line_status.cache_ttl = '7d'")

    def run_one(self, kind, numbers):
        t0 = time.monotonic()
        try:
            with self.conn.cursor() as cur:
                if kind == 'single':
                    cur.execute(SINGLE_SQL, (numbers[0],))
                    (cached,) = cur.fetchone()
                    paid = () if cached else (numbers[0],)
                    n = 1
                else:
                    cur.execute(BULK_SQL, (numbers,))
                    n, paid = cur.fetchone()
                    paid = tuple(paid or ())
                    if n != len(numbers):
                        raise AssertionError('bulk lookup of %d numbers gave %d rows' % (len(numbers), n))
        except psycopg2.Error as e:
            code = e.pgcode or type(e).__name__
            self.errors[code] += 1
            self.error_samples.setdefault(code, ' | '.join(str(e).split('\n'))[:300])
            if self.conn.closed:
                self.setup()
            return None
        t1 = time.monotonic()
        s = Stmt(kind, t0, t1, n, paid)
        self.touched.update(numbers)
        return s

    def run(self):
        try:
            self.setup()
            if self.chunks is not None:
                self.run_phase2()
            else:
                self.run_phase1()
        except Exception as e:          # noqa: BLE001 - reported by main
            self.errors[type(e).__name__] += 1
            self.error_samples.setdefault(type(e).__name__, str(e)[:300])
        finally:
            if self.conn is not None:
                self.conn.close()

    def run_phase1(self):
        while time.monotonic() < self.deadline:
            if self.rng.random() < BULK_SHARE:
                s = self.run_one('bulk', self.rng.sample(self.pool, self.rng.randint(BULK_MIN, BULK_MAX)))
            else:
                s = self.run_one('single', [self.pool[self.rng.randrange(len(self.pool))]])
            if s is not None:
                self.stmts.append(s)

    def run_phase2(self):
        while True:
            try:
                chunk = self.chunks.popleft()
            except IndexError:
                return
            s = self.run_one('bulk', chunk)
            if s is not None:
                self.stmts.append(s)
                self.not_cached_phase2 += len(s.paid)


def pct(values, p):
    if not values:
        return float('nan')
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def lat_line(label, stmts):
    d = [1000.0 * (s.end - s.start) for s in stmts]
    if not d:
        return '  %-8s none' % label
    return '  %-8s %7d statements, ms: p50 %6.1f  p95 %6.1f  p99 %6.1f  max %7.1f' % (
        label, len(d), pct(d, 50), pct(d, 95), pct(d, 99), max(d))


def classify(payers):
    """Split the extra payments of one number into (i) after a commit and
    (ii) concurrent.  payers: (start, end) of every statement that paid for
    it.  Returns (n_after_commit, n_concurrent)."""
    payers = sorted(payers)
    after = conc = 0
    for i, (b_start, _) in enumerate(payers):
        if i == 0:
            continue
        others = payers[:i] + payers[i + 1:]
        ended_before = any(a_end < b_start for _, a_end in others)
        running = any(c_start <= b_start < c_end for c_start, c_end in others)
        if ended_before and not running:
            after += 1
        else:
            conc += 1
    return after, conc


def deadlocks(conn):
    return q1(conn, 'SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()')


def delete_pool(conn, nsp, pool):
    for i in range(0, len(pool), 5000):
        part = pool[i:i + 5000]
        q(conn, 'DELETE FROM %s.line_status_cache_alias WHERE phone_number = ANY(%%s)' % nsp, (part,))
        q(conn, 'DELETE FROM %s.line_status_cache WHERE phone_number = ANY(%%s)' % nsp, (part,))


def run_phase1(pool):
    deadline = time.monotonic() + SECONDS
    sessions = [Session(i, pool, deadline=deadline, seed=random.random()) for i in range(SESSIONS)]
    t0 = time.monotonic()
    for s in sessions:
        s.start()
    next_report = t0 + PROGRESS_EVERY
    last = (0, 0, 0)
    while any(s.is_alive() for s in sessions):
        time.sleep(0.2)
        now = time.monotonic()
        if now >= next_report and now < deadline:
            stmts = sum(len(s.stmts) for s in sessions)
            lookups = sum(x.n for s in sessions for x in s.stmts[:])
            paid = sum(len(x.paid) for s in sessions for x in s.stmts[:])
            errs = sum(sum(s.errors.values()) for s in sessions)
            print('  %5.0f s: %7.0f statements/s, %8.0f lookups/s, %6.0f paid/s, %d errors so far'
                  % (now - t0, (stmts - last[0]) / PROGRESS_EVERY, (lookups - last[1]) / PROGRESS_EVERY,
                     (paid - last[2]) / PROGRESS_EVERY, errs), flush=True)
            last = (stmts, lookups, paid)
            next_report += PROGRESS_EVERY
    for s in sessions:
        s.join()
    return sessions, time.monotonic() - t0


def run_phase2(pool_touched):
    nums = sorted(pool_touched)
    random.shuffle(nums)
    chunks = collections.deque(nums[i:i + PHASE2_CHUNK] for i in range(0, len(nums), PHASE2_CHUNK))
    sessions = [Session(i, None, chunks=chunks) for i in range(SESSIONS)]
    t0 = time.monotonic()
    for s in sessions:
        s.start()
    for s in sessions:
        s.join()
    return sessions, time.monotonic() - t0


def main():
    admin = connect(application_name='line_status_load_admin')
    version = extension_version(admin)
    nsp = q1(admin, "SELECT quote_ident(extnamespace::regnamespace::text) FROM pg_extension "
                    "WHERE extname = 'line_status'")
    ttl = q1(admin, "SELECT setting FROM pg_settings WHERE name = 'line_status.cache_ttl'")
    block = fresh_block()
    pool = ['%s%07d' % (block, n) for n in random.sample(range(10 ** 7), POOL)]
    delete_pool(admin, nsp, pool)

    print('line_status %s load test: %d sessions for %.0f s; pool of %d numbers (%sxxxxxxx); '
          'single lookups and, %.0f %% of statements, bulk lookups of %d..%d; '
          'stand-in latency %.0f ms mean, lognormal; cache_ttl %s s'
          % (version, SESSIONS, SECONDS, POOL, block, BULK_SHARE * 100, BULK_MIN, BULK_MAX,
             LATENCY_MS, ttl if ttl != '0' else '0 (set to 7d per session)'), flush=True)

    standin_config(latency_ms=LATENCY_MS, latency_dist='lognormal', max_inflight=0)
    ok = True
    try:
        # ---------------------------------------------------------- phase 1
        print('phase 1:', flush=True)
        dl0 = deadlocks(admin)
        standin_reset()
        sessions, secs = run_phase1(pool)
        st_sum = standin_stats(summary=True)
        st = standin_stats(summary=False)
        dl1 = deadlocks(admin)

        stmts = [x for s in sessions for x in s.stmts]
        singles = [x for x in stmts if x.kind == 'single']
        bulks = [x for x in stmts if x.kind == 'bulk']
        lookups = sum(x.n for x in stmts)
        paid_client = sum(len(x.paid) for x in stmts)
        errors = collections.Counter()
        samples = {}
        for s in sessions:
            errors.update(s.errors)
            for k, v in s.error_samples.items():
                samples.setdefault(k, v)
        touched = set().union(*(s.touched for s in sessions))

        payers = collections.defaultdict(list)
        for x in stmts:
            for n in x.paid:
                payers[n].append((x.start, x.end))
        dup_numbers = [n for n, v in st['per_number'].items() if v.get('paid', 0) >= 2]
        n_after = n_conc = 0
        numbers_after = 0
        unexplained = 0          # paid per the stand-in, but by no successful statement
        for n in dup_numbers:
            a, c = classify(payers.get(n, []))
            n_after += a
            n_conc += c
            numbers_after += 1 if a else 0
            unexplained += max(0, st['per_number'][n]['paid'] - len(payers.get(n, [])))
        extra_paid = sum(v.get('paid', 0) - 1 for v in st['per_number'].values() if v.get('paid', 0) >= 2)
        mismatch = st_sum['paid'] - paid_client

        print(lat_line('single', singles))
        print(lat_line('bulk', bulks))

        # ---------------------------------------------------------- phase 2
        print('phase 2: every number phase 1 looked up (%d), again, in bulk lookups of %d:'
              % (len(touched), PHASE2_CHUNK), flush=True)
        standin_reset()
        sessions2, secs2 = run_phase2(touched)
        st2 = standin_stats(summary=True)
        errors2 = collections.Counter()
        for s in sessions2:
            errors2.update(s.errors)
            for k, v in s.error_samples.items():
                samples.setdefault(k, v)
        not_cached2 = sum(s.not_cached_phase2 for s in sessions2)
        looked2 = sum(x.n for s in sessions2 for x in s.stmts)
        rows = 0
        tl = sorted(touched)
        for i in range(0, len(tl), 5000):
            rows += q1(admin, 'SELECT count(*) FROM %s.line_status_cache WHERE phone_number = ANY(%%s)' % nsp,
                       (tl[i:i + 5000],))
        print('  %d lookups in %.1f s, %d requests' % (looked2, secs2, st2['requests']))
    finally:
        standin_config(latency_ms=0, latency_dist='fixed', max_inflight=0)

    delete_pool(admin, nsp, pool)
    admin.close()

    deadlock_count = errors.get('40P01', 0) + errors2.get('40P01', 0)
    unique_count = errors.get('23505', 0) + errors2.get('23505', 0)
    all_errors = errors + errors2
    print()
    print('SUMMARY (line_status %s, %d sessions, %.0f s, pool %d, latency %.0f ms lognormal)'
          % (version, SESSIONS, secs, POOL, LATENCY_MS))
    print('  phase 1 throughput:                 %9.0f lookups/s, %7.0f statements/s'
          % (lookups / secs, len(stmts) / secs))
    print('    statements:                       %9d single, %d bulk (%d lookups in all)'
          % (len(singles), len(bulks), lookups))
    print('    answered from the cache:          %9.1f %% of lookups' % (100.0 * (lookups - paid_client) / max(1, lookups)))
    print('  errors by SQLSTATE (target 0):      %9d  %s' % (
        sum(all_errors.values()), ', '.join('%s x%d' % kv for kv in sorted(all_errors.items())) or '-'))
    for k, v in sorted(samples.items()):
        print('    %s e.g.: %s' % (k, v))
    print('  deadlocks 40P01 (target 0):         %9d  (pg_stat_database.deadlocks %+d)'
          % (deadlock_count, dl1 - dl0))
    print('  unique violations 23505 (target 0): %9d' % unique_count)
    print('  stand-in, phase 1:                  %9d requests, %d paid, %d distinct numbers, max %d in flight'
          % (st_sum['requests'], st_sum['paid'], st_sum['distinct_numbers'], st_sum['max_inflight_seen']))
    print('    numbers_paid_more_than_once:      %9d  (max_paid_per_number %d, %d extra payments)'
          % (st_sum['numbers_paid_more_than_once'], st_sum['max_paid_per_number'], extra_paid))
    print('    (i)  paid again after a commit:   %9d  numbers (%d payments)  target 0'
          % (numbers_after, n_after))
    print('    (ii) concurrent misses:           %9d  payments' % n_conc)
    print('    paid with no successful statement:%9d  (stand-in paid - client-seen payers: %+d)'
          % (unexplained, mismatch))
    print('  phase 2 (same %d numbers again):    %9d requests (target 0), %d answers not from the cache,'
          % (len(touched), st2['requests'], not_cached2))
    print('    line_status_cache rows for them:  %9d of %d' % (rows, len(touched)))

    if all_errors or dl1 != dl0 or st2['requests'] or not_cached2 or numbers_after or rows != len(touched):
        ok = False
    print('  result: %s' % ('all targets met' if ok else 'TARGET MISSED'))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
