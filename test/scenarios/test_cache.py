"""Scenario tests of the result cache (line_status_cache and
line_status_cache_alias): many sessions writing the same numbers at once,
never paying twice for a number, the cache surviving pg_dump / pg_restore,
what a ROLLBACK does to it, national aliases written concurrently, and a
REPEATABLE READ transaction meeting a row another session refreshed.  Every test checks the stand-in's counters
(requests, paid, per-number counts) and the cache tables themselves.
"""
import functools
import itertools
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time

import psycopg2

from common import (survives_crash, STATUS_BY_DIGIT, expected_status, fresh_gb, connect, env, fresh_number, note, number_requests, q, q1, standin_reset,
                    standin_stats, wait_until)

PG_BIN = '/usr/lib/postgresql/15/bin'







def forget(conn, numbers):
    """Remove numbers (E.164) from the cache and its aliases, so that an
    earlier run against the same cluster cannot make them hits."""
    q(conn, 'DELETE FROM line_status_cache_alias WHERE phone_number = ANY(%s)', (numbers,))
    q(conn, 'DELETE FROM line_status_cache WHERE phone_number = ANY(%s)', (numbers,))


def cache_rows(conn, numbers):
    """{phone_number: row count} of line_status_cache for numbers."""
    rows = q(conn, 'SELECT phone_number, count(*) FROM line_status_cache '
                   'WHERE phone_number = ANY(%s) GROUP BY 1', (numbers,))
    return dict(rows)


def run_threads(fns):
    """Run each callable in its own thread, all started together; return
    the list of exceptions they raised (empty if none)."""
    errors = []
    lock = threading.Lock()

    def wrap(fn):
        try:
            fn()
        except Exception as e:      # noqa: BLE001 - collected for the test
            with lock:
                errors.append(e)

    threads = [threading.Thread(target=wrap, args=(fn,), daemon=True) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive(), 'a session thread did not finish within 120 s (deadlocked?)'
    return errors


def describe(errors):
    out = []
    for e in errors:
        code = getattr(e, 'pgcode', None)
        out.append('%s %s' % (code or type(e).__name__, ' | '.join(str(e).split('\n'))[:200]))
    return '; '.join(out)


# ---------------------------------------------------------------- 1: concurrency

@survives_crash
def test_concurrent_sessions_same_numbers():
    """8 sessions, each with its own connection, look up the SAME 300 fresh
    numbers in their own shuffled order, 3 rounds, some rounds inside an
    explicit transaction with two SELECTs over overlapping halves.  Round 1
    races on inserts, round 2 (cache_ttl = 1 s, every row stale) races on
    updates of the same rows, round 3 reads.  No statement may fail (no
    deadlock 40P01, no unique violation 23505, nothing), every number ends
    up in line_status_cache exactly once, and afterwards a further pass is
    answered entirely from the cache, without a request."""
    nsess, nnum, rounds = 8, 300, 3
    numbers = [fresh_number() for _ in range(nnum)]
    sql = 'SELECT count(*) FROM (SELECT line_status(p) FROM unnest(%s::text[]) p) s'
    admin = connect()
    conns = [connect(application_name='ls_cache_conc_%d' % i) for i in range(nsess)]
    barrier = threading.Barrier(nsess)
    per_round_requests = []
    try:
        forget(admin, numbers)
        standin_reset()

        def session(i, rnd):
            c = conns[i]
            rng = random.Random(1000 * rnd + i)
            order = numbers[:]
            rng.shuffle(order)
            if rnd == 1:
                q(c, 'SET line_status.cache_ttl = 1')
            else:
                q(c, 'RESET line_status.cache_ttl')
            barrier.wait(30)
            if (i + rnd) % 2 == 0:
                # Explicit transaction: two statements over overlapping halves
                # (the middle 100 numbers are in both).
                first, second = order[:200], order[100:]
                q(c, 'BEGIN')
                try:
                    got1 = q1(c, sql, (first,))
                    got2 = q1(c, sql, (second,))
                    q(c, 'COMMIT')
                except Exception:
                    q(c, 'ROLLBACK')
                    raise
                assert (got1, got2) == (200, 200), 'session %d round %d counted %r' % (i, rnd, (got1, got2))
            else:
                got = q1(c, sql, (order,))
                assert got == nnum, 'session %d round %d counted %r' % (i, rnd, got)

        for rnd in range(rounds):
            if rnd == 1:
                time.sleep(1.2)     # every row written in round 0 is now older than 1 s
            before = standin_stats()['requests']
            errors = run_threads([lambda i=i: session(i, rnd) for i in range(nsess)])
            assert not errors, 'round %d: %d statement(s) failed: %s' % (rnd, len(errors), describe(errors))
            per_round_requests.append(standin_stats()['requests'] - before)

        rows = cache_rows(admin, numbers)
        missing = [n for n in numbers if n not in rows]
        doubled = {n: k for n, k in rows.items() if k != 1}
        assert not missing, '%d of %d numbers are not in line_status_cache, e.g. %r' % (
            len(missing), nnum, missing[:5])
        assert not doubled, 'numbers with more than one cache row: %r' % doubled
        bad = q(admin, 'SELECT phone_number, status::text FROM line_status_cache WHERE phone_number = ANY(%s)',
                (numbers,))
        wrong = [(n, s) for n, s in bad if s != expected_status(n)]
        assert not wrong, 'cached statuses are wrong: %r' % wrong[:5]

        # A further pass: everything from the cache.
        standin_reset()
        c = conns[0]
        q(c, 'RESET line_status.cache_ttl')
        order = numbers[:]
        random.shuffle(order)
        cached = q(c, 'SELECT count(*) FILTER (WHERE (r).cached), count(*) FROM '
                      '(SELECT line_status(p) AS r FROM unnest(%s::text[]) p) s', (order,))[0]
        st = standin_stats()
    finally:
        for c in conns:
            c.close()
        admin.close()
    note('requests per round %s (%d sessions x %d numbers)' % (per_round_requests, nsess, nnum))
    assert per_round_requests[0] >= nnum, 'round 0 made only %d requests for %d new numbers' % (
        per_round_requests[0], nnum)
    assert per_round_requests[1] >= nnum, \
        'round 1 (cache_ttl = 1 s, all rows stale) made only %d requests' % per_round_requests[1]
    assert per_round_requests[2] == 0, 'round 2 (fresh cache) made %d requests' % per_round_requests[2]
    assert cached == (nnum, nnum), 'the final pass had %d of %d answers from the cache' % cached
    assert st['requests'] == 0, 'the final pass made %d requests, expected 0' % st['requests']


# ---------------------------------------------------------------- 2: paid once

@survives_crash
def test_paid_once_with_duplicates_and_garbage():
    """A 2,000-row table: 1,300 distinct valid numbers, 600 duplicates of
    them (half written differently: spaces, dashes, parentheses) and 100
    rows of garbage.  SELECT line_status(phone) FROM t: one request per
    distinct valid number, none for the garbage; the same query again
    makes no request at all and answers every valid row from the cache."""
    ndistinct, ndup, ngarbage = 1300, 600, 100
    numbers = [fresh_number() for _ in range(ndistinct)]
    rng = random.Random(7)
    rows = list(numbers)
    for k in range(ndup):
        n = rng.choice(numbers)
        if k % 2:
            n = '+1 (%s) %s-%s' % (n[2:5], n[5:8], n[8:])
        rows.append(n)
    garbage = ['not a number', '', '++1555', 'call me', '+', '12', '+1-415-CALL-NOW', '555 0100 ext 7',
               'NaN', '0x1F']
    rows += [garbage[k % len(garbage)] for k in range(ngarbage)]
    rng.shuffle(rows)
    assert len(rows) == 2000
    conn = connect()
    try:
        forget(conn, numbers)
        q(conn, 'CREATE TEMP TABLE t (id serial, phone text)')
        q(conn, 'INSERT INTO t (phone) SELECT unnest(%s::text[])', (rows,))
        sql = ('SELECT count(*), count(*) FILTER (WHERE (r).valid), count(*) FILTER (WHERE (r).cached) '
               'FROM (SELECT line_status(phone) AS r FROM t) s')
        standin_reset()
        t0 = time.monotonic()
        first = q(conn, sql)[0]
        secs1 = time.monotonic() - t0
        st1 = standin_stats(summary=False)
        t0 = time.monotonic()
        second = q(conn, sql)[0]
        secs2 = time.monotonic() - t0
        st2 = standin_stats()
        in_cache = len(cache_rows(conn, numbers))
    finally:
        conn.close()
    note('first run %.2f s, %d requests; second run %.2f s, %d more'
         % (secs1, st1['requests'], secs2, st2['requests'] - st1['requests']))
    assert first[0] == 2000 and first[1] == ndistinct + ndup, 'first run: %r' % (first,)
    assert st1['requests'] == ndistinct, 'expected %d requests (distinct valid numbers), the stand-in saw %d' % (
        ndistinct, st1['requests'])
    assert st1['paid'] == ndistinct and st1['max_paid_per_number'] == 1, \
        'paid %d, max per number %d' % (st1['paid'], st1['max_paid_per_number'])
    assert set(st1['per_number']) == set(numbers), 'requests went to numbers other than the valid ones: %r' % (
        sorted(set(st1['per_number']) - set(numbers))[:5],)
    assert first[2] == ndup, 'first run: %d duplicates answered without a request, expected %d' % (first[2], ndup)
    assert in_cache == ndistinct, '%d of %d numbers are in line_status_cache' % (in_cache, ndistinct)
    assert st2['requests'] == st1['requests'], 'the second run made %d requests, expected 0' % (
        st2['requests'] - st1['requests'])
    assert second == (2000, ndistinct + ndup, ndistinct + ndup), 'second run: %r' % (second,)


# ---------------------------------------------------------------- 3: pg_dump

DUMP_SRC = 'ls_scen_dump_src'
DUMP_DST = 'ls_scen_dump_dst'


def _dbconn(dbname):
    c = psycopg2.connect(dbname=dbname, application_name='line_status_scenarios')
    c.autocommit = True
    return c


def _run(argv):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert p.returncode == 0, '%s exited %d: %s' % (' '.join(argv[:1]), p.returncode,
                                                    p.stderr.decode(errors='replace')[-2000:])
    return p


@survives_crash
def test_pg_dump_keeps_cache():
    """The cache is paid data: pg_dump -Fc of a database, pg_restore into a
    new one (CREATE EXTENSION comes from the dump) brings back every row of
    line_status_cache and line_status_cache_alias unchanged, and a lookup of
    a dumped number in the restored database, in E.164 or national form, is
    cached = true without a request."""
    e164 = [fresh_number() for _ in range(20)]
    gb = [fresh_gb() for _ in range(5)]
    admin = connect()
    workdir = tempfile.mkdtemp(prefix='ls_dump_', dir=env('LS_WORK'))
    src = dst = None
    try:
        for db in (DUMP_SRC, DUMP_DST):
            q(admin, 'DROP DATABASE IF EXISTS %s WITH (FORCE)' % db)
        q(admin, 'CREATE DATABASE %s' % DUMP_SRC)
        src = _dbconn(DUMP_SRC)
        q(src, 'CREATE EXTENSION line_status')
        standin_reset()
        assert q1(src, 'SELECT count(*) FROM line_status(%s::text[])', (e164,)) == len(e164)
        for nat, n in gb:
            assert q1(src, "SELECT (line_status(%s, 'GB')).phone_number", (nat,)) == n
        assert standin_stats()['requests'] == len(e164) + len(gb)
        cache_sql = ('SELECT phone_number, status::text, error_code, valid, country_code, response::text, '
                     'checked_at FROM line_status_cache ORDER BY 1')
        alias_sql = 'SELECT country_code, national_number, phone_number FROM line_status_cache_alias ORDER BY 1, 2'
        src_cache, src_alias = q(src, cache_sql), q(src, alias_sql)
        assert len(src_cache) == len(e164) + len(gb), src_cache
        assert sorted((r[1], r[2]) for r in src_alias if r[0] == 'GB') == sorted(gb), src_alias
        src.close()
        src = None

        dump = os.path.join(workdir, 'src.dump')
        _run([PG_BIN + '/pg_dump', '-Fc', '-U', 'postgres', '-h', env('PGHOST'), '-p', env('PGPORT'),
              '-f', dump, DUMP_SRC])
        q(admin, 'CREATE DATABASE %s' % DUMP_DST)
        _run([PG_BIN + '/pg_restore', '-U', 'postgres', '-h', env('PGHOST'), '-p', env('PGPORT'),
              '--exit-on-error', '-d', DUMP_DST, dump])

        dst = _dbconn(DUMP_DST)
        assert q1(dst, "SELECT extversion FROM pg_extension WHERE extname = 'line_status'") is not None
        dst_cache, dst_alias = q(dst, cache_sql), q(dst, alias_sql)
        assert dst_cache == src_cache, 'line_status_cache differs after restore: %d rows, was %d' % (
            len(dst_cache), len(src_cache))
        assert dst_alias == src_alias, 'line_status_cache_alias differs after restore: %r vs %r' % (
            dst_alias, src_alias)

        standin_reset()
        r1 = q(dst, 'SELECT phone_number, status::text, cached FROM line_status(%s)', (e164[3],))[0]
        r2 = q(dst, "SELECT phone_number, status::text, cached FROM line_status(%s, 'GB')", (gb[0][0],))[0]
        r3 = q(dst, 'SELECT count(*) FILTER (WHERE cached) FROM line_status(%s::text[])', (e164,))[0][0]
        st = standin_stats()
    finally:
        for c in (src, dst):
            if c is not None:
                c.close()
        for db in (DUMP_SRC, DUMP_DST):
            q(admin, 'DROP DATABASE IF EXISTS %s WITH (FORCE)' % db)
        admin.close()
        shutil.rmtree(workdir, ignore_errors=True)
    note('%d cache rows, %d alias rows restored' % (len(dst_cache), len(dst_alias)))
    assert r1 == (e164[3], expected_status(e164[3]), True), 'E.164 lookup after restore: %r' % (r1,)
    assert r2 == (gb[0][1], expected_status(gb[0][1]), True), 'national lookup after restore: %r' % (r2,)
    assert r3 == len(e164), 'bulk lookup after restore: %d of %d cached' % (r3, len(e164))
    assert st['requests'] == 0, 'lookups of restored numbers made %d requests, expected 0' % st['requests']


# ---------------------------------------------------------------- 4: rollback

@survives_crash
def test_rollback_keeps_paid_answers():
    """Paid answers outlive the caller: numbers looked up (scalar and bulk)
    in a transaction that then rolls back are handed to the background
    worker, which stores them in its own transaction; looking them up again
    makes no request.  Also for an error later in the same transaction and
    for a rolled-back savepoint."""
    scalar = [fresh_number() for _ in range(5)]
    bulk = [fresh_number() for _ in range(5)]
    sub = [fresh_number() for _ in range(3)]
    every = scalar + bulk + sub
    conn = connect()
    try:
        forget(conn, every)
        standin_reset()
        q(conn, 'BEGIN')
        for n in scalar:
            assert q1(conn, 'SELECT (line_status(%s)).status::text', (n,)) == expected_status(n)
        assert q1(conn, 'SELECT count(status) FROM line_status(%s::text[])', (bulk,)) == len(bulk)
        q(conn, 'SAVEPOINT s')
        assert q1(conn, 'SELECT count(status) FROM line_status(%s::text[])', (sub,)) == len(sub)
        q(conn, 'ROLLBACK TO SAVEPOINT s')
        try:
            q(conn, 'SELECT 1/0')
        except psycopg2.Error:
            pass
        q(conn, 'ROLLBACK')
        st1 = standin_stats()
        # The worker stores them within a few seconds (generous bound).
        deadline = time.time() + 20
        while time.time() < deadline and len(cache_rows(conn, every)) < len(every):
            time.sleep(0.1)
        stored = len(cache_rows(conn, every))
        again = q(conn, 'SELECT count(*) FILTER (WHERE NOT (r).cached) FROM '
                        '(SELECT line_status(p) AS r FROM unnest(%s::text[]) p) s', (every,))[0][0]
        st2 = standin_stats()
    finally:
        conn.close()
    k = len(every)
    assert st1['requests'] == k and st1['paid'] == k, 'first lookups: %r' % (st1,)
    assert stored == k, 'after ROLLBACK the worker stored %d of %d paid answers' % (stored, k)
    assert again == 0, 'after ROLLBACK %d of %d lookups were paid again' % (again, k)
    assert st2['requests'] == k, 'looking the numbers up again made %d requests' % (st2['requests'] - k)
    note('%d answers kept after ROLLBACK, 0 paid again' % k)


# ---------------------------------------------------------------- 5: national alias

@survives_crash
def test_national_alias_concurrent():
    """4 sessions look up the same 100 national numbers at once (British
    ones with 'GB': US and CA national numbers are rewritten to E.164
    locally and make no alias row), two with line_status(text, text) per
    row, two with the bulk form: no errors, every session gets the right
    E.164 number, one cache row and exactly one alias row per number, and
    afterwards the national form is answered from the cache."""
    nsess, nnum = 4, 100
    gb = [fresh_gb() for _ in range(nnum)]
    nats = [nat for nat, _ in gb]
    numbers = [n for _, n in gb]
    admin = connect()
    conns = [connect(application_name='ls_alias_conc_%d' % i) for i in range(nsess)]
    barrier = threading.Barrier(nsess)
    results = [None] * nsess
    try:
        forget(admin, numbers)
        q(admin, "DELETE FROM line_status_cache_alias WHERE country_code = 'GB' AND national_number = ANY(%s)",
          (nats,))
        standin_reset()

        def session(i):
            order = nats[:]
            random.Random(i).shuffle(order)
            barrier.wait(30)
            if i % 2 == 0:
                rows = q(conns[i], "SELECT p, (r).phone_number FROM "
                                   "(SELECT p, line_status(p, 'GB') AS r FROM unnest(%s::text[]) p) s", (order,))
            else:
                rows = q(conns[i], "SELECT input, phone_number FROM line_status(%s::text[], 'GB')", (order,))
            results[i] = dict(rows)

        errors = run_threads([lambda i=i: session(i) for i in range(nsess)])
        assert not errors, '%d session(s) failed: %s' % (len(errors), describe(errors))
        aliases = q(admin, "SELECT national_number, phone_number, count(*) OVER (PARTITION BY national_number) "
                           "FROM line_status_cache_alias WHERE country_code = 'GB' AND national_number = ANY(%s)",
                    (nats,))
        rows = cache_rows(admin, numbers)
        requests = standin_stats()['requests']
        standin_reset()
        again = q1(admin, "SELECT count(*) FILTER (WHERE cached) FROM line_status(%s::text[], 'GB')", (nats,))
        st = standin_stats()
    finally:
        for c in conns:
            c.close()
        admin.close()
    note('%d requests for %d numbers x %d sessions' % (requests, nnum, nsess))
    want = dict(gb)
    for i, got in enumerate(results):
        assert got == want, 'session %d got wrong E.164 numbers: %r' % (
            i, [(k, v) for k, v in got.items() if want.get(k) != v][:5])
    amap = {a: p for a, p, _ in aliases}
    assert len(aliases) == nnum and all(k == 1 for _, _, k in aliases), \
        'expected exactly one alias row per national number, got %d rows for %d numbers' % (len(aliases), nnum)
    assert amap == want, 'alias rows point at the wrong numbers'
    assert sorted(rows) == sorted(numbers) and set(rows.values()) == {1}, \
        'expected one cache row per number: %d numbers cached' % len(rows)
    assert again == nnum and st['requests'] == 0, \
        'national lookups after: %d of %d cached, %d requests' % (again, nnum, st['requests'])


# ---------------------------------------------------------------- 6: REPEATABLE READ

@survives_crash
def test_repeatable_read_stale_row_refreshed_elsewhere():
    """A REPEATABLE READ transaction whose snapshot holds a stale cache row
    (older than cache_ttl) that another session refreshes and commits in
    the meantime.  Cache reads use the latest snapshot, so a plain lookup
    (bulk here) is answered from the other session's fresh row without a
    request; a forced, paid lookup (line_status_refresh) must not fail the
    caller's statement when its cache write meets the newer row (no 40001
    "could not serialize access due to concurrent update")."""
    x, y = fresh_number(), fresh_number()
    a, b = connect(), connect()
    try:
        forget(a, [x, y])
        assert q1(a, 'SELECT count(status) FROM line_status(%s::text[])', ([x, y],)) == 2
        q(a, "UPDATE line_status_cache SET checked_at = now() - interval '30 days' WHERE phone_number = ANY(%s)",
          ([x, y],))
        q(a, 'BEGIN ISOLATION LEVEL REPEATABLE READ')
        assert q1(a, 'SELECT count(*) FROM line_status_cache WHERE phone_number = ANY(%s)', ([x, y],)) == 2
        # b refreshes both stale rows and commits.
        assert q1(b, 'SELECT count(*) FILTER (WHERE NOT cached) FROM line_status(%s::text[])', ([x, y],)) == 2
        standin_reset()
        outcome = []
        for label, sql, num in (('line_status_refresh(text)', 'SELECT (line_status_refresh(%s)).status::text', x),
                                ('line_status(text[])', 'SELECT status::text FROM line_status(ARRAY[%s])', y)):
            q(a, 'SAVEPOINT s')
            try:
                outcome.append((label, q1(a, sql, (num,)) == expected_status(num), None))
                q(a, 'RELEASE SAVEPOINT s')
            except psycopg2.Error as e:
                outcome.append((label, False, '%s %s' % (e.pgcode, e.diag.message_primary)))
                q(a, 'ROLLBACK TO SAVEPOINT s')
        q(a, 'COMMIT')
        st = standin_stats()
    finally:
        a.close()
        b.close()
    failed = ['%s: %s' % (label, err) for label, ok, err in outcome if not ok]
    assert not failed, 'in REPEATABLE READ, a lookup failed because another session refreshed the ' \
                       'cache row: %s' % '; '.join(failed)
    assert st['requests'] == 1, 'expected one request (the refresh; the bulk lookup reads the other ' \
                                'session\'s fresh row), got %d' % st['requests']
