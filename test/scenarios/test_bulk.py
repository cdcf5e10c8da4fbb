"""Scenario tests of bulk lookups, line_status(text[], text), and of the
batch procedure line_status_update_table: input order and duplicates,
real concurrency, cancel and statement_timeout in the middle of a batch,
429s, the per-number failure policy, line_status.max_rate, and a table
filled in committed batches that resumes after a cancel.  Every test checks
the stand-in's counters (requests, paid, per-number counts, in-flight
gauges), SQLSTATEs or timings, with generous bounds.
"""
import collections
import functools
import itertools
import random
import time

import psycopg2

from common import (survives_crash, STATUS_BY_DIGIT, expected_status, fresh_gb, ALWAYS_503, Background, cancel_backend, connect, env, error_text, fresh_number,
                    note, number_requests, q, q1, standin_config, standin_reset, standin_stats,
                    wait_until)

CANCEL_BOUND_S = 2.5






def fresh_nanp(last_digit=None):
    """A fresh +1 number that is valid in the North American Numbering Plan
    (exchange not starting with 0 or 1), so that line_status() rewrites its
    national form with 'US' to this same E.164 number.  (For an invalid
    exchange it cannot, and sends the national form with CountryCode=US:
    then it is a different number to it.)"""
    while True:
        n = fresh_number(last_digit)
        if n[5] >= '2':
            return n


def fmt_us(e164):
    """+1NNNNNNNNNN written the way people do: +1 (NNN) NNN-NNNN."""
    return '+1 (%s) %s-%s' % (e164[2:5], e164[5:8], e164[8:])


def forget(conn, numbers):
    """Remove numbers (E.164) from the cache, so that an earlier run
    against the same cluster cannot make them hits."""
    q(conn, 'DELETE FROM line_status_cache_alias WHERE phone_number = ANY(%s)', (numbers,))
    q(conn, 'DELETE FROM line_status_cache WHERE phone_number = ANY(%s)', (numbers,))


def expect_sqlstate(conn, code, sql, args=None):
    """Run sql, which must fail with SQLSTATE code; return the error."""
    try:
        q(conn, sql, args)
    except psycopg2.Error as e:
        assert e.pgcode == code, 'expected SQLSTATE %s, got %s: %s' % (code, e.pgcode, e.pgerror)
        return e
    raise AssertionError('expected SQLSTATE %s from %r, but it succeeded' % (code, sql))


def wait_inflight_zero(timeout=5.0):
    """The stand-in's live in-flight gauge must drop to 0: every request the
    extension abandoned had its connection closed."""
    if not wait_until(lambda: standin_stats()['inflight'] == 0, timeout):
        raise AssertionError('the stand-in still has %d request(s) in flight %.0f s later: '
                             'abandoned transfers were not closed' % (standin_stats()['inflight'], timeout))



RESULT_COLS = ('ordinality, input, phone_number, status::text, error_code, valid, country_code, '
               'checked_at, cached, response::text')


# ---------------------------------------------------------------- 1: order, duplicates

@survives_crash
def test_bulk_order_and_duplicates():
    """One row per element, in input order (WITH ORDINALITY), input = the
    element; duplicates (the same text, the same number written another
    way, and a US national number with 'US' that is the same as an E.164
    element) get identical answers; one request per distinct valid number
    and none for garbage; a NULL element gives a row of NULLs; a second call
    answers everything from the cache without a request."""
    e = [fresh_nanp(d) for d in range(6)]         # statuses by last digit
    nat_only = [fresh_number(d) for d in (7, 8)]  # appear only in national form
    arr = [e[0], e[1], None, 'not a number', e[0], fmt_us(e[1]), nat_only[0][2:], '',
           e[2], None, '(%s) %s-%s' % (nat_only[0][2:5], nat_only[0][5:8], nat_only[0][8:]),
           e[3], '++14155550100', e[2][2:], e[4], 'x' * 70, e[5], nat_only[1][2:], e[4], '+0123456789']
    # The number each element stands for (None: NULL or garbage).
    key = [e[0], e[1], None, None, e[0], e[1], nat_only[0], None, e[2], None, nat_only[0], e[3], None,
           e[2], e[4], None, e[5], nat_only[1], e[4], None]
    assert len(arr) == len(key)
    distinct = sorted(set(k for k in key if k))
    conn = connect()
    try:
        forget(conn, distinct)
        standin_reset()
        sql = 'SELECT %s FROM line_status(%%s::text[], %%s) WITH ORDINALITY' % RESULT_COLS
        rows = q(conn, sql, (arr, 'US'))
        st = standin_stats(summary=False)
        standin_reset()
        rows2 = q(conn, sql, (arr, 'US'))
        st2 = standin_stats()
    finally:
        conn.close()

    assert [r[0] for r in rows] == list(range(1, len(arr) + 1)), 'ordinality: %r' % [r[0] for r in rows]
    assert [r[1] for r in rows] == arr, 'input column is not the elements in order: %r' % [r[1] for r in rows]
    by_key = collections.defaultdict(set)
    for r, k, el in zip(rows, key, arr):
        if el is None:
            assert r[2:] == (None,) * 8, 'NULL element: expected a row of NULLs, got %r' % (r,)
        elif k is None:
            assert r[2:4] == (None, None) and r[5] is False and r[9] is None, \
                'garbage %r: expected valid = false and no answer, got %r' % (el, r)
        else:
            assert r[2] == k and r[3] == expected_status(k) and r[5] is True and r[8] is False, \
                'element %r: expected %s %s, not cached, got %r' % (el, k, expected_status(k), r[2:9])
            by_key[k].add(r[2:])
    differing = {k: len(v) for k, v in by_key.items() if len(v) != 1}
    assert not differing, 'duplicates got different answers: %r' % {k: by_key[k] for k in differing}

    per = {n: number_requests(st, n) for n in distinct}
    assert all(v == 1 for v in per.values()), 'expected one request per distinct number, got %r' % per
    assert st['requests'] == len(distinct), 'expected %d requests, the stand-in saw %d (%r)' % (
        len(distinct), st['requests'], sorted(st['per_number']))

    assert [r[1:3] for r in rows2] == [r[1:3] for r in rows], 'the second call answered differently'
    assert all(r[8] is True for r, k in zip(rows2, key) if k), 'second call: not every answer came from the cache'
    assert st2['requests'] == 0, 'second call made %d requests, expected 0' % st2['requests']
    note('%d elements, %d distinct numbers, %d requests' % (len(arr), len(distinct), st['requests']))


@survives_crash
def test_bulk_e164_elements_ignore_country():
    """In line_status(text[], 'GB'), the country only concerns the national
    elements, as in line_status(text, 'GB'): an E.164 element is requested
    without CountryCode (the exact path line_status(text) uses) and makes no
    alias row; a national element is requested with CountryCode=GB and makes
    exactly one alias row."""
    e1, e2 = fresh_number(), fresh_number()
    nat, gb164 = fresh_gb()
    conn = connect()
    try:
        forget(conn, [e1, e2, gb164])
        standin_reset()
        rows = q(conn, "SELECT input, phone_number FROM line_status(%s::text[], 'GB')", ([e1, nat, e2],))
        st = standin_stats(summary=False)
        aliases = q(conn, 'SELECT country_code, national_number, phone_number FROM line_status_cache_alias '
                          'WHERE phone_number = ANY(%s) ORDER BY 2', ([e1, e2, gb164],))
    finally:
        conn.close()
    assert rows == [(e1, e1), (nat, gb164), (e2, e2)], rows
    want = sorted(['/v2/PhoneNumbers/%%2B%s?Fields=line_status' % e1[1:],
                   '/v2/PhoneNumbers/%%2B%s?Fields=line_status' % e2[1:],
                   '/v2/PhoneNumbers/%s?Fields=line_status&CountryCode=GB' % nat])
    assert sorted(st['paths']) == want, 'request paths: expected %r, the stand-in saw %r' % (want, st['paths'])
    assert aliases == [('GB', nat, gb164)], \
        'expected one alias row (GB, %s), line_status_cache_alias has %r' % (nat, aliases)


# ---------------------------------------------------------------- 2: UPDATE ... FROM

@survives_crash
def test_bulk_update_from_issue():
    """The statement from the issue, on a 1,000-row table (900 distinct
    numbers, 100 rows repeating some of them):
    UPDATE contacts c SET status = r.status
      FROM line_status(ARRAY(SELECT phone FROM contacts)) r WHERE r.input = c.phone;
    updates all 1,000 rows with the right statuses, with one request per
    distinct number."""
    numbers = [fresh_number() for _ in range(900)]
    rng = random.Random(3)
    phones = numbers + [rng.choice(numbers) for _ in range(100)]
    rng.shuffle(phones)
    conn = connect()
    try:
        forget(conn, numbers)
        q(conn, 'DROP TABLE IF EXISTS ls_scen_contacts')
        q(conn, 'CREATE TABLE ls_scen_contacts (id serial PRIMARY KEY, phone text, status line_status_status)')
        q(conn, 'INSERT INTO ls_scen_contacts (phone) SELECT unnest(%s::text[])', (phones,))
        standin_reset()
        t0 = time.monotonic()
        with conn.cursor() as cur:
            cur.execute('UPDATE ls_scen_contacts c SET status = r.status '
                        'FROM line_status(ARRAY(SELECT phone FROM ls_scen_contacts)) r WHERE r.input = c.phone')
            updated = cur.rowcount
        secs = time.monotonic() - t0
        st = standin_stats()
        got = q(conn, 'SELECT phone, status::text FROM ls_scen_contacts')
        q(conn, 'DROP TABLE ls_scen_contacts')
    finally:
        conn.close()
    note('1000 rows updated in %.2f s, %d requests' % (secs, st['requests']))
    assert updated == 1000, 'UPDATE updated %d rows, expected 1000' % updated
    wrong = [(p, s) for p, s in got if s != expected_status(p)]
    assert not wrong, '%d rows have a wrong status, e.g. %r' % (len(wrong), wrong[:5])
    assert st['requests'] == 900 and st['max_paid_per_number'] == 1, \
        'expected 900 requests, one per distinct number; got %d, max %d per number' % (
            st['requests'], st['max_paid_per_number'])


# ---------------------------------------------------------------- 3: concurrency

@survives_crash
def test_bulk_is_concurrent():
    """At 200 ms per answer, 200 new numbers with max_concurrency = 50 take
    well under the 40 s a sequential loop would (bound 8 s, ideal 0.8 s),
    and the stand-in sees at least 40 requests in flight at once."""
    n = 200
    numbers = [fresh_number() for _ in range(n)]
    conn = connect()
    try:
        forget(conn, numbers)
        q(conn, 'SET line_status.max_concurrency = 50')
        standin_config(latency_ms=200, latency_dist='fixed')
        standin_reset()
        t0 = time.monotonic()
        got = q1(conn, 'SELECT count(status) FROM line_status(%s::text[])', (numbers,))
        secs = time.monotonic() - t0
        st = standin_stats()
    finally:
        standin_config(latency_ms=0)
        conn.close()
    note('%d lookups at 200 ms in %.2f s, max in flight %d, %d connections'
         % (n, secs, st['max_inflight_seen'], st['connections'] - st['_control_calls']))
    assert got == n, '%d of %d numbers got a status' % (got, n)
    assert st['requests'] == n, 'expected %d requests, got %d' % (n, st['requests'])
    assert secs < 8.0, '%d lookups at 200 ms took %.1f s with max_concurrency 50 (bound 8 s, ideal 0.8 s)' % (
        n, secs)
    assert st['max_inflight_seen'] >= 40, \
        'at most %d requests were in flight at once (max_concurrency 50)' % st['max_inflight_seen']


# ---------------------------------------------------------------- 4: cancel, statement_timeout

@survives_crash
def test_bulk_cancel_and_statement_timeout():
    """A batch of 300 numbers at 2 s per answer with max_concurrency 100:
    pg_cancel_backend() after 0.5 s ends it with 57014 within 2.5 s, the
    stand-in's in-flight gauge returns to 0 (every transfer aborted, its
    connection closed), and the same session then completes a bulk lookup.
    The same with statement_timeout = '500ms'."""
    conn = connect()
    ctl = connect()
    figures = []
    try:
        pid = conn.get_backend_pid()
        q(conn, 'SET line_status.max_concurrency = 100')
        q(conn, "SET line_status.timeout = '30s'")
        bulk = 'SELECT count(status) FROM line_status(%s::text[])'
        for how in ('cancel', 'statement_timeout'):
            numbers = [fresh_number() for _ in range(300)]
            after = [fresh_number() for _ in range(20)]
            forget(ctl, numbers + after)
            wait_inflight_zero()
            standin_config(latency_ms=2000)
            standin_reset()
            if how == 'cancel':
                bg = Background(conn, bulk, (numbers,))
                bg.start()
                time.sleep(0.5)
                inflight = standin_stats()['inflight']
                t_stop = cancel_backend(ctl, pid)
                bg.join(15)
                assert not bg.is_alive(), 'the cancelled bulk lookup is still running 15 s later'
                err, t_end = bg.error, bg.t_end
            else:
                q(conn, "SET statement_timeout = '500ms'")
                t0 = time.monotonic()
                t_stop = t0 + 0.5
                err = None
                try:
                    q(conn, bulk, (numbers,))
                except psycopg2.Error as e:
                    err = e
                t_end = time.monotonic()
                q(conn, 'RESET statement_timeout')
                inflight = standin_stats()['max_inflight_seen']
            assert err is not None, '%s: the bulk lookup was not interrupted' % how
            assert getattr(err, 'pgcode', None) == '57014', '%s: expected SQLSTATE 57014, got %s: %s' % (
                how, getattr(err, 'pgcode', None), error_text(err))
            latency = t_end - t_stop
            assert inflight >= 90, '%s: only %d requests were in flight (max_concurrency 100)' % (how, inflight)
            assert latency < CANCEL_BOUND_S, '%s: the error came %.2f s after it, bound %.1f s' % (
                how, latency, CANCEL_BOUND_S)
            t0 = time.monotonic()
            wait_inflight_zero(5.0)
            closed = time.monotonic() - t0
            figures.append('%s: 57014 after %.0f ms, in flight %d -> 0 within %.0f ms' % (
                how, latency * 1000, inflight, closed * 1000))
            standin_config(latency_ms=0)
            assert q1(conn, bulk, (after,)) == len(after), '%s: the next bulk lookup failed' % how
    finally:
        standin_config(latency_ms=0)
        conn.close()
        ctl.close()
    note('; '.join(figures))


# ---------------------------------------------------------------- 5: 429 storm

@survives_crash
def test_bulk_429_storm():
    """The API takes 10 requests at once (max_inflight 10, 50 ms each), we
    offer 50 (max_concurrency 50) for 500 numbers: the 429s slow the pool
    down but every number gets its status, each paid exactly once."""
    n = 500
    numbers = [fresh_number() for _ in range(n)]
    conn = connect()
    try:
        forget(conn, numbers)
        q(conn, 'SET line_status.max_concurrency = 50')
        standin_config(latency_ms=50, max_inflight=10)
        standin_reset()
        t0 = time.monotonic()
        rows = q(conn, 'SELECT input, status::text FROM line_status(%s::text[])', (numbers,))
        secs = time.monotonic() - t0
        st = standin_stats()
    finally:
        standin_config(latency_ms=0, max_inflight=0)
        conn.close()
    note('%.2f s (ideal %.1f s), %d requests, %d of them 429' % (
        secs, n * 0.05 / 10, st['requests'], st['status_counts'].get('429', 0)))
    wrong = [(p, s) for p, s in rows if s != expected_status(p)]
    assert len(rows) == n and not wrong, '%d rows, wrong statuses: %r' % (len(rows), wrong[:5])
    assert st['paid'] == n, 'paid %d, expected %d' % (st['paid'], n)
    assert st['max_paid_per_number'] == 1, 'a number was paid %d times' % st['max_paid_per_number']


# ---------------------------------------------------------------- 6: failure policy

@survives_crash
def test_bulk_failure_policy():
    """With max_retries 0, one number that always gets a 503 among good
    ones: with the default on_error the statement fails (38000) naming the
    number; with on_error = 'unknown' it completes, that row has status
    unknown, error_code 20500 (Twilio's code from the 503 body) and an
    "error" key in response, the good numbers have their statuses, and the
    failed number is not cached while the good ones are."""
    good1 = [fresh_number() for _ in range(10)]
    good2 = [fresh_number() for _ in range(10)]
    conn = connect()
    try:
        forget(conn, good1 + good2 + [ALWAYS_503])
        q(conn, 'SET line_status.max_retries = 0')
        standin_reset()
        e = expect_sqlstate(conn, '38000', 'SELECT count(*) FROM line_status(%s::text[])',
                            (good1[:5] + [ALWAYS_503] + good1[5:],))
        message = error_text(e)
        st1 = standin_stats(summary=False)

        q(conn, "SET line_status.on_error = 'unknown'")
        standin_reset()
        rows = q(conn, 'SELECT input, phone_number, status::text, error_code, valid, response FROM '
                       'line_status(%s::text[])', (good2[:5] + [ALWAYS_503] + good2[5:],))
        st2 = standin_stats(summary=False)
        cached = set(n for (n,) in q(conn, 'SELECT phone_number FROM line_status_cache WHERE phone_number = ANY(%s)',
                                     (good2 + [ALWAYS_503],)))
    finally:
        conn.close()
    assert ALWAYS_503 in e.diag.message_primary, \
        'the error does not name %s: %s' % (ALWAYS_503, message)
    assert number_requests(st1, ALWAYS_503) == 1, 'max_retries 0: %d requests for %s' % (
        number_requests(st1, ALWAYS_503), ALWAYS_503)
    assert len(rows) == 11, rows
    bad = [r for r in rows if r[0] == ALWAYS_503]
    assert len(bad) == 1, rows
    _, _, status, code, _, resp = bad[0]
    assert status == 'unknown' and code == 20500, \
        'failed number: expected status unknown, error_code 20500, got %r, %r' % (status, code)
    assert isinstance(resp, dict) and 'error' in resp and ALWAYS_503 in resp['error'], \
        'failed number: response should carry the error, got %r' % (resp,)
    for inp, phone, status, code, valid, resp in rows:
        if inp != ALWAYS_503:
            assert (phone, status, code, valid) == (inp, expected_status(inp), None, True), \
                'good number %s: %r' % (inp, (phone, status, code, valid))
    assert number_requests(st2, ALWAYS_503) == 1 and st2['requests'] == 11, \
        'expected 11 requests, one each, got %d' % st2['requests']
    assert ALWAYS_503 not in cached, 'the failed answer was cached'
    assert cached == set(good2), 'the good answers were not all cached: %d of %d' % (
        len(cached & set(good2)), len(good2))


# ---------------------------------------------------------------- 7: max_rate

@survives_crash
def test_bulk_max_rate():
    """line_status.max_rate = 50 caps the requests started per second: 100
    new numbers at latency 0 take at least 1.5 s (ideal 2 s), not the few
    milliseconds they take without it."""
    n = 100
    numbers = [fresh_number() for _ in range(n)]
    conn = connect()
    try:
        forget(conn, numbers)
        q(conn, 'SET line_status.max_rate = 50')
        standin_reset()
        t0 = time.monotonic()
        got = q1(conn, 'SELECT count(status) FROM line_status(%s::text[])', (numbers,))
        secs = time.monotonic() - t0
        st = standin_stats()
    finally:
        conn.close()
    note('%d lookups at max_rate 50 in %.2f s' % (n, secs))
    assert got == n and st['requests'] == n, 'got %d statuses, %d requests' % (got, st['requests'])
    assert secs >= 1.5, '%d lookups at max_rate 50 took only %.2f s (expected about 2 s)' % (n, secs)
    assert secs < 10, '%d lookups at max_rate 50 took %.1f s' % (n, secs)


# ---------------------------------------------------------------- 8: the procedure

def _progress(notices):
    return [m for m in notices if 'rows done' in m]


@survives_crash
def test_procedure_fills_table():
    """CALL line_status_update_table('t', 'phone', 'status', 500) on a
    3,000-row table (2,600 distinct numbers, 250 repeats, 100 garbage, 50
    NULL): every row with a valid number gets its status, the others stay
    NULL, one request per distinct number, NOTICEs report the rows to check,
    the progress after each batch and the end; a rerun makes no request."""
    numbers = [fresh_number() for _ in range(2600)]
    rng = random.Random(11)
    phones = numbers + [rng.choice(numbers) if k % 2 else fmt_us(rng.choice(numbers)) for k in range(250)]
    phones += ['garbage %d' % k for k in range(100)] + [None] * 50
    rng.shuffle(phones)
    conn = connect()
    conn.notices = collections.deque()
    try:
        forget(conn, numbers)
        q(conn, 'DROP TABLE IF EXISTS ls_scen_proc')
        q(conn, 'CREATE TABLE ls_scen_proc (id serial PRIMARY KEY, phone text, status line_status_status)')
        q(conn, 'INSERT INTO ls_scen_proc (phone) SELECT unnest(%s::text[])', (phones,))
        standin_reset()
        t0 = time.monotonic()
        q(conn, "CALL line_status_update_table('ls_scen_proc', 'phone', 'status', 500)")
        secs = time.monotonic() - t0
        notices1 = list(conn.notices)
        conn.notices.clear()
        st1 = standin_stats()
        got = q(conn, 'SELECT phone, status::text FROM ls_scen_proc')
        q(conn, "CALL line_status_update_table('ls_scen_proc', 'phone', 'status', 500)")
        notices2 = list(conn.notices)
        st2 = standin_stats()
        q(conn, 'DROP TABLE ls_scen_proc')
    finally:
        conn.close()
    note('%.2f s, %d requests, %d notices' % (secs, st1['requests'], len(notices1)))
    norm = {p: p for p in numbers}
    norm.update({fmt_us(p): p for p in numbers})
    wrong = [(p, s) for p, s in got if (expected_status(norm[p]) if p in norm else None) != s]
    assert not wrong, '%d rows have a wrong status, e.g. %r' % (len(wrong), wrong[:5])
    assert st1['requests'] == 2600 and st1['max_paid_per_number'] == 1, \
        'expected 2600 requests, one per distinct number; got %d, max %d per number' % (
            st1['requests'], st1['max_paid_per_number'])
    assert any('2950 rows to check' in m for m in notices1), 'no "rows to check" NOTICE: %r' % notices1
    prog = _progress(notices1)
    assert len(prog) == 6, 'expected 6 progress NOTICEs (2950 rows, batches of 500), got %d: %r' % (
        len(prog), prog)
    assert '500 of 2950 rows done' in prog[0] and '2950 of 2950 rows done' in prog[-1], prog
    assert any('finished' in m for m in notices1), 'no "finished" NOTICE: %r' % notices1
    assert st2['requests'] == st1['requests'], 'the rerun made %d requests, expected 0' % (
        st2['requests'] - st1['requests'])
    assert any('100 rows to check' in m for m in notices2), \
        'the rerun should only look at the 100 garbage rows: %r' % notices2


@survives_crash
def test_procedure_resume_after_cancel():
    """At 100 ms per answer, CALL ... batch 200 on a 1,000-row table is
    cancelled once at least two batches are committed (seen from another
    session); it fails with 57014 and the committed batches are exactly the
    first rows.  A rerun at latency 0 finishes the table and never asks
    again for a number of a committed batch.  CURRENT behaviour, asserted
    on purpose: the answers of the batch that was interrupted are lost with
    its transaction (cache rows included, see test_cache's
    test_rollback_discards_cache_writes), and the requests that were in
    flight are billed anyway, so numbers of that one batch, and only of it,
    may be paid twice."""
    n, batch = 1000, 200
    numbers = [fresh_number() for _ in range(n)]
    conn = connect()
    watch = connect()
    try:
        forget(watch, numbers)
        q(watch, 'DROP TABLE IF EXISTS ls_scen_resume')
        q(watch, 'CREATE TABLE ls_scen_resume (id serial PRIMARY KEY, phone text, status line_status_status)')
        q(watch, 'INSERT INTO ls_scen_resume (phone) SELECT unnest(%s::text[])', (numbers,))
        pid = conn.get_backend_pid()
        standin_config(latency_ms=100)
        standin_reset()
        call = "CALL line_status_update_table('ls_scen_resume', 'phone', 'status', %d)" % batch
        bg = Background(conn, call)
        bg.start()
        done = lambda: q1(watch, 'SELECT count(status) FROM ls_scen_resume')    # noqa: E731
        assert wait_until(lambda: done() >= 2 * batch or not bg.is_alive(), 30), \
            'two batches were not committed within 30 s (%d rows done)' % done()
        assert bg.is_alive(), 'the CALL ended before it could be cancelled: %r' % (bg.error,)
        cancel_backend(watch, pid)
        bg.join(15)
        assert not bg.is_alive(), 'the cancelled CALL is still running'
        assert getattr(bg.error, 'pgcode', None) == '57014', 'expected 57014, got %r' % (bg.error,)
        committed = done()
        first_rows = q1(watch, 'SELECT count(*) FROM ls_scen_resume WHERE id <= %s AND status IS NOT NULL',
                        (committed,))
        wait_inflight_zero()
        standin_config(latency_ms=0)
        q(conn, call)
        st = standin_stats(summary=False)
        got = q(watch, 'SELECT id, phone, status::text FROM ls_scen_resume ORDER BY id')
        q(watch, 'DROP TABLE ls_scen_resume')
    finally:
        standin_config(latency_ms=0)
        conn.close()
        watch.close()
    paid = {p: st['per_number'].get(p, {}).get('paid', 0) for p in numbers}
    twice = [i + 1 for i, p in enumerate(numbers) if paid[p] > 1]
    note('cancelled after %d rows committed; %d numbers of the interrupted batch paid twice' % (
        committed, len(twice)))
    assert committed >= 2 * batch and committed % batch == 0 and first_rows == committed, \
        'committed rows should be whole batches of the first rows: %d done, %d of them the first' % (
            committed, first_rows)
    wrong = [(i, p, s) for i, p, s in got if s != expected_status(p)]
    assert not wrong, 'after the rerun %d rows are wrong or missing, e.g. %r' % (len(wrong), wrong[:5])
    assert all(paid[p] >= 1 for p in numbers), 'some numbers were never paid for'
    assert all(paid[numbers[i]] == 1 for i in range(committed)), \
        'numbers of committed batches were asked for again by the rerun'
    assert all(committed < i <= committed + batch for i in twice), \
        'numbers paid twice outside the interrupted batch (rows %d..%d): rows %r' % (
            committed + 1, committed + batch, [i for i in twice if not committed < i <= committed + batch][:10])
    assert max(paid.values()) <= 2, 'a number was paid %d times' % max(paid.values())


@survives_crash
def test_procedure_bad_columns():
    """Wrong column names and types are clear errors before any request:
    a missing column is 42703, a phone column that is not text or a status
    column that is neither line_status_status nor text is 42804, a
    batch_size below 1 is 22023."""
    conn = connect()
    try:
        q(conn, 'DROP TABLE IF EXISTS ls_scen_badcols')
        q(conn, 'CREATE TABLE ls_scen_badcols (p text, s line_status_status, pn bigint, si integer)')
        q(conn, "INSERT INTO ls_scen_badcols (p, pn) VALUES (%s, 1)", (fresh_number(),))
        standin_reset()
        call = "CALL line_status_update_table('ls_scen_badcols', %s, %s, %s)"
        checks = []
        for args, code, words in ((('nope', 's', 10), '42703', ('nope',)),
                                  (('p', 'nope', 10), '42703', ('nope',)),
                                  (('pn', 's', 10), '42804', ('pn', 'bigint')),
                                  (('p', 'si', 10), '42804', ('si', 'integer')),
                                  (('p', 's', 0), '22023', ('batch_size',))):
            e = expect_sqlstate(conn, code, call, args)
            text = e.diag.message_primary or ''
            assert all(w in text for w in words), '%r: the message %r does not name %r' % (args, text, words)
            checks.append(code)
        st = standin_stats()
        left = q1(conn, 'SELECT count(s) FROM ls_scen_badcols')
        q(conn, 'DROP TABLE ls_scen_badcols')
    finally:
        conn.close()
    assert st['requests'] == 0, 'failed calls made %d requests' % st['requests']
    assert left == 0, 'a failed call updated the table'
