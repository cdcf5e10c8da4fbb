"""Scenario tests of the background worker and what feeds it (extension 1.3):
the async trigger policy filled by the worker, the queue surviving a server
restart, a burst of 100,000 queued numbers (rate, the worker's memory, the
queue table's size afterwards), the shared statistics, the worker coming
back after it is terminated and rereading its configuration at SIGHUP, the
worker staying idle when there is nothing to do, and the row 'fill' trigger
(one lookup after another) against the statement trigger
line_status_fill_rows() (all at once).

These run in PGDATABASE (postgres), the database the worker serves
(line_status.database).  Every test waits until the queue is empty before it
starts, so that one test's leftovers cannot be counted by the next, and puts
the stand-in's configuration back (latency 0, no in-flight limit) when it is
done.  "Rollback keeps paid answers" is test_cache.test_rollback_keeps_paid_answers.
"""
import io
import os
import subprocess
import threading
import time

import psycopg2

from common import (STATUS_BY_DIGIT, expected_status, ALWAYS_503, backend_memory_kb, connect, env, fresh_block, fresh_number,
                    note, q, q1, standin_config, standin_reset, standin_stats, wait_until)

PG_BIN = '/usr/lib/postgresql/15/bin'

ALWAYS_500 = '+14155555998'



def worker_pids(conn):
    return [r[0] for r in q(conn, "SELECT pid FROM pg_stat_activity "
                                  "WHERE backend_type = 'line_status worker' ORDER BY pid")]


def worker_pid(conn, timeout=15):
    """The pid of the (one) line_status worker, waiting for it to appear."""
    pids = wait_until(lambda: worker_pids(conn), timeout, 0.1)
    assert pids, 'no line_status worker in pg_stat_activity after %d s' % timeout
    assert len(pids) == 1, 'more than one line_status worker: %r' % (pids,)
    return pids[0]


def queued(conn):
    return q1(conn, 'SELECT count(*) FROM line_status_queue')


def queue_drained(conn, timeout=60):
    """Wait until the queue is empty (what earlier tests left is drained)."""
    n = wait_until(lambda: queued(conn) == 0, timeout, 0.2)
    assert n, 'line_status_queue still has %d entries after %d s' % (queued(conn), timeout)


def forget(conn, numbers):
    q(conn, 'DELETE FROM line_status_cache_alias WHERE phone_number = ANY(%s)', (numbers,))
    q(conn, 'DELETE FROM line_status_cache WHERE phone_number = ANY(%s)', (numbers,))


def cached_count(conn, numbers):
    return q1(conn, 'SELECT count(*) FROM line_status_cache WHERE phone_number = ANY(%s)', (numbers,))


def enqueue(conn, numbers):
    """Queue numbers with line_status_enqueue() in one statement."""
    n = q1(conn, 'SELECT count(*) FILTER (WHERE line_status_enqueue(p)) FROM unnest(%s::text[]) p',
           (numbers,))
    assert n == len(numbers), 'line_status_enqueue accepted %d of %d numbers' % (n, len(numbers))


def restore_standin():
    standin_config(latency_ms=0, max_inflight=0)


def restart_server():
    """pg_ctl restart -m fast of the test cluster; returns its duration (s)."""
    t0 = time.monotonic()
    subprocess.run(['runuser', '-u', 'postgres', '--', PG_BIN + '/pg_ctl', '-D', env('LS_PGDATA'),
                    '-l', os.path.join(env('LS_WORK'), 'postgres.log'), '-w', '-t', '120',
                    'restart', '-m', 'fast'],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=180)
    return time.monotonic() - t0


# ---------------------------------------------------------------- idle

def test_worker_idle_between_rounds():
    """With nothing queued, the worker's pg_stat_activity row stays 'idle'
    (waiting on its latch, wait_event_type Extension) for 3 s, and its
    state_change does not move: no stream of activity reports."""
    conn = connect()
    try:
        queue_drained(conn)
        pid = worker_pid(conn)
        time.sleep(1.5)     # let the last round, if any, end
        samples = []
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end:
            samples.append(q(conn, 'SELECT state, state_change, wait_event_type '
                                   'FROM pg_stat_activity WHERE pid = %s', (pid,))[0])
            time.sleep(0.1)
    finally:
        conn.close()
    states = {s[0] for s in samples}
    changes = {s[1] for s in samples}
    waiting = sum(1 for s in samples if s[2] == 'Extension')
    assert states == {'idle'}, 'the idle worker reported states %r' % (states,)
    assert waiting >= len(samples) * 0.9, \
        'the worker waited on its latch in only %d of %d samples' % (waiting, len(samples))
    note('%d samples: idle, %d waiting on its latch, state_change moved %d times'
         % (len(samples), waiting, len(changes) - 1))
    # An idle backend's state_change is when it became idle.  The worker
    # reports STATE_IDLE again after every empty round (once a second), and
    # pgstat_report_activity() stamps state_change each time, so "idle
    # since" never looks further back than a second.
    assert len(changes) == 1, \
        'state_change of the idle worker moved %d times in 3 s (re-reported idle every round)' \
        % (len(changes) - 1)


# ---------------------------------------------------------------- statistics

def test_statistics():
    """line_status_stats after a reset: 10 fresh lookups (two of each
    status), 5 of them again (cache hits), one 503 failure with
    max_retries 1 (two requests, one retry, an ERROR), one 500 failure with
    on_error = unknown and max_retries 0 (one request).  Stand-in latency
    20 ms for the normal answers."""
    numbers = [fresh_number(d) for d in range(10)]
    conn = connect()
    try:
        queue_drained(conn)
        forget(conn, numbers)
        standin_config(latency_ms=20)
        q(conn, 'SELECT line_status_stats_reset()')
        standin_reset()
        for n in numbers:
            assert q1(conn, 'SELECT (line_status(%s)).status::text', (n,)) == expected_status(n)
        for n in numbers[:5]:
            assert q1(conn, 'SELECT (line_status(%s)).cached', (n,)) is True
        q(conn, 'SET line_status.max_retries = 1')
        try:
            q(conn, 'SELECT line_status(%s)', (ALWAYS_503,))
            raise AssertionError('the 503 number did not raise an error')
        except psycopg2.Error as e:
            assert e.pgcode == '38000', 'the 503 failure raised %s' % e.pgcode
        q(conn, 'SET line_status.max_retries = 0')
        q(conn, "SET line_status.on_error = 'unknown'")
        r = q(conn, 'SELECT status::text, error_code FROM line_status(%s)', (ALWAYS_500,))
        assert r == [('unknown', 20500)], 'on_error = unknown gave %r' % (r,)
        st = q(conn, 'SELECT row_to_json(s) FROM line_status_stats s')[0][0]
        sst = standin_stats()
    finally:
        try:
            restore_standin()
        finally:
            conn.close()
    assert sst['requests'] == 13, 'the stand-in saw %d requests, expected 13' % sst['requests']
    want = {'requests': 13, 'cache_hits': 5,
            'active': 2, 'reachable': 2, 'unreachable': 2, 'inactive': 2, 'unknown': 2,
            'no_status': 0,
            'errors_credentials': 0, 'errors_rate_limited': 0, 'errors_connect': 0,
            'errors_transport': 0, 'errors_bad_request': 0, 'errors_remote': 2,
            'retries': 1, 'handed_off': 0, 'handoffs_dropped': 0, 'stored_by_worker': 0,
            'queued': 0}
    got = {k: st[k] for k in want}
    assert got == want, 'line_status_stats: %r, expected %r' % (
        {k: v for k, v in got.items() if want[k] != v}, {k: v for k, v in want.items() if got[k] != v})
    mean, p99 = st['latency_mean_ms'], st['latency_p99_ms']
    assert mean is not None and mean > 0, 'latency_mean_ms = %r' % (mean,)
    # ten of the 13 requests waited 20 ms at the stand-in
    assert mean >= 10 * 20 / 13.0, 'latency_mean_ms = %.2f, below 10 x 20 ms / 13 requests' % mean
    assert p99 is not None and p99 >= mean, 'latency_p99_ms = %r < mean %r' % (p99, mean)
    assert p99 >= 16, 'latency_p99_ms = %.2f, but 10 of 13 requests took >= 20 ms' % p99
    note('mean %.1f ms, p99 %.1f ms' % (mean, p99))


# ---------------------------------------------------------------- async trigger

def test_async_trigger_fill():
    """A table with the async trigger: INSERT of 500 fresh numbers returns at
    once (< 2 s, with the stand-in answering after 200 ms), and the worker
    fills every row's status (the stand-in's status for each number) within
    30 s, concurrently (more than 10 requests in flight at once), one
    request per number, and empties the queue."""
    numbers = [fresh_number() for _ in range(500)]
    conn = connect()
    try:
        queue_drained(conn)
        forget(conn, numbers)
        q(conn, 'DROP TABLE IF EXISTS ls_w_async')
        q(conn, 'CREATE TABLE ls_w_async (id serial PRIMARY KEY, phone text, status line_status_status)')
        q(conn, "CREATE TRIGGER ls BEFORE INSERT OR UPDATE OF phone ON ls_w_async FOR EACH ROW "
                "EXECUTE FUNCTION line_status_trigger('phone', 'status', 'async')")
        standin_config(latency_ms=200)
        standin_reset()
        t0 = time.monotonic()
        q(conn, 'INSERT INTO ls_w_async (phone) SELECT unnest(%s::text[])', (numbers,))
        t_insert = time.monotonic() - t0
        filled = wait_until(lambda: q1(conn, 'SELECT count(status) FROM ls_w_async') == len(numbers),
                            30, 0.1)
        t_fill = time.monotonic() - t0
        rows = dict(q(conn, 'SELECT phone, status::text FROM ls_w_async'))
        left = q1(conn, 'SELECT count(*) FROM line_status_queue WHERE relid = %s::regclass',
                  ('ls_w_async',))
        sst = standin_stats()
        q(conn, 'DROP TABLE ls_w_async')
    finally:
        try:
            restore_standin()
        finally:
            conn.close()
    assert t_insert < 2, 'INSERT of 500 rows with the async trigger took %.2f s' % t_insert
    assert filled, 'the worker filled %d of %d rows in 30 s' % (
        sum(1 for v in rows.values() if v is not None), len(numbers))
    wrong = [(n, rows[n]) for n in numbers if rows[n] != expected_status(n)]
    assert not wrong, '%d rows have the wrong status, e.g. %r' % (len(wrong), wrong[:3])
    assert left == 0, '%d queue entries left for the table' % left
    assert sst['requests'] == len(numbers) and sst['paid'] == len(numbers), \
        'stand-in: %d requests, %d paid for %d numbers' % (sst['requests'], sst['paid'], len(numbers))
    assert sst['numbers_paid_more_than_once'] == 0, 'numbers paid twice: %d' % sst['numbers_paid_more_than_once']
    assert sst['max_inflight_seen'] > 10, \
        'the worker had at most %d requests in flight' % sst['max_inflight_seen']
    note('INSERT %.2f s, all filled after %.2f s, %d in flight at most'
         % (t_insert, t_fill, sst['max_inflight_seen']))


def test_async_trigger_column_types():
    """The async policy with the other column types the README allows: a
    char(16) phone column with a line_status_status column, and a varchar
    phone column with a text status column; the triggers are BEFORE INSERT
    OR UPDATE (not OF phone), so the worker's own UPDATE of the status
    fires them too and must leave the status it wrote.  The worker fills
    every row within 15 s, one request per number."""
    chars = [fresh_number() for _ in range(5)]
    texts = [fresh_number() for _ in range(5)]
    conn = connect()
    try:
        queue_drained(conn)
        forget(conn, chars + texts)
        q(conn, 'DROP TABLE IF EXISTS ls_w_char, ls_w_text')
        q(conn, 'CREATE TABLE ls_w_char (id serial, phone char(16), status line_status_status)')
        q(conn, 'CREATE TABLE ls_w_text (id serial, phone varchar(20), status text)')
        for t in ('ls_w_char', 'ls_w_text'):
            q(conn, "CREATE TRIGGER ls BEFORE INSERT OR UPDATE ON %s FOR EACH ROW "
                    "EXECUTE FUNCTION line_status_trigger('phone', 'status', 'async')" % t)
        standin_reset()
        q(conn, 'INSERT INTO ls_w_char (phone) SELECT unnest(%s::text[])', (chars,))
        q(conn, 'INSERT INTO ls_w_text (phone) SELECT unnest(%s::text[])', (texts,))

        def filled():
            return q1(conn, 'SELECT (SELECT count(status) FROM ls_w_char) + '
                            '(SELECT count(status) FROM ls_w_text)') == 10
        wait_until(filled, 15, 0.1)
        time.sleep(0.5)     # a re-queue by the worker's own UPDATE would show now
        char_rows = dict(q(conn, 'SELECT rtrim(phone), status::text FROM ls_w_char'))
        text_rows = dict(q(conn, 'SELECT phone, status FROM ls_w_text'))
        drained = wait_until(lambda: queued(conn) == 0, 15, 0.1)
        sst = standin_stats()
        q(conn, 'DROP TABLE ls_w_char, ls_w_text')
    finally:
        conn.close()
    wrong_text = [(n, text_rows.get(n)) for n in texts if text_rows.get(n) != expected_status(n)]
    assert not wrong_text, 'varchar phone / text status: %d rows wrong: %r' % (len(wrong_text), wrong_text)
    assert drained, 'the queue did not empty'
    assert sst['requests'] == 10, 'the stand-in saw %d requests for 10 numbers' % sst['requests']
    # The worker writes the status with "WHERE phone = $2" where $2 is the
    # text the trigger queued (phone_text): for char(16) that is the padded
    # value, and char = text compares as text with the column's padding
    # stripped, so no row matches; the entry is deleted all the same.
    wrong_char = [(n, char_rows.get(n)) for n in chars if char_rows.get(n) != expected_status(n)]
    assert not wrong_char, 'char(16) phone column: %d of 5 rows never filled (answers cached, ' \
        'queue emptied): %r' % (len(wrong_char), wrong_char[:2])


# ---------------------------------------------------------------- row vs statement trigger

def test_row_fill_sequential_statement_fill_concurrent():
    """30 fresh numbers at 100 ms stand-in latency, by INSERT ... SELECT and
    by COPY: with the row trigger (policy fill) the lookups are made one
    after another (>= 3 s: documented); with line_status_fill_rows() as an
    AFTER ... FOR EACH STATEMENT trigger they are made at once (< 1.5 s).
    Every row gets the right status, one request per number."""
    conn = connect()
    times = {}
    try:
        queue_drained(conn)
        standin_config(latency_ms=100)
        for kind in ('row', 'statement'):
            for how in ('insert', 'copy'):
                numbers = [fresh_number() for _ in range(30)]
                forget(conn, numbers)
                q(conn, 'DROP TABLE IF EXISTS ls_w_fill')
                q(conn, 'CREATE TABLE ls_w_fill (id serial, phone text, status line_status_status)')
                if kind == 'row':
                    q(conn, "CREATE TRIGGER ls BEFORE INSERT ON ls_w_fill FOR EACH ROW "
                            "EXECUTE FUNCTION line_status_trigger('phone', 'status', 'fill')")
                else:
                    q(conn, "CREATE TRIGGER ls AFTER INSERT ON ls_w_fill REFERENCING NEW TABLE AS new_rows "
                            "FOR EACH STATEMENT EXECUTE FUNCTION line_status_fill_rows('phone', 'status')")
                standin_reset()
                t0 = time.monotonic()
                if how == 'insert':
                    q(conn, 'INSERT INTO ls_w_fill (phone) SELECT unnest(%s::text[])', (numbers,))
                else:
                    with conn.cursor() as cur:
                        cur.copy_expert('COPY ls_w_fill (phone) FROM STDIN',
                                        io.StringIO(''.join(n + '\n' for n in numbers)))
                secs = time.monotonic() - t0
                rows = dict(q(conn, 'SELECT phone, status::text FROM ls_w_fill'))
                sst = standin_stats()
                times[(kind, how)] = secs
                wrong = [(n, rows.get(n)) for n in numbers if rows.get(n) != expected_status(n)]
                assert not wrong, '%s trigger, %s: %d rows wrong, e.g. %r' % (kind, how, len(wrong), wrong[:3])
                assert sst['requests'] == 30 and sst['paid'] == 30, \
                    '%s trigger, %s: %d requests, %d paid' % (kind, how, sst['requests'], sst['paid'])
        q(conn, 'DROP TABLE ls_w_fill')
    finally:
        try:
            restore_standin()
        finally:
            conn.close()
    note('row trigger: INSERT %.2f s, COPY %.2f s; statement trigger: INSERT %.2f s, COPY %.2f s'
         % (times[('row', 'insert')], times[('row', 'copy')],
            times[('statement', 'insert')], times[('statement', 'copy')]))
    for how in ('insert', 'copy'):
        assert times[('row', how)] >= 3.0, \
            'row trigger, %s: 30 lookups at 100 ms took only %.2f s' % (how, times[('row', how)])
        assert times[('statement', how)] < 1.5, \
            'statement trigger, %s: 30 lookups at 100 ms took %.2f s' % (how, times[('statement', how)])


# ---------------------------------------------------------------- terminate, SIGHUP

def test_worker_terminated_comes_back():
    """pg_terminate_backend() of the worker: it exits, a new worker (another
    pid) appears within 15 s (bgw_restart_time 5 s), and it drains the
    queue: 20 numbers queued while it was gone are cached."""
    numbers = [fresh_number() for _ in range(20)]
    conn = connect()
    try:
        queue_drained(conn)
        forget(conn, numbers)
        old = worker_pid(conn)
        t0 = time.monotonic()
        assert q1(conn, 'SELECT pg_terminate_backend(%s)', (old,)) is True
        gone = wait_until(lambda: old not in worker_pids(conn), 5, 0.05)
        assert gone, 'worker %d still there 5 s after pg_terminate_backend' % old
        enqueue(conn, numbers)
        new_pids = wait_until(lambda: [p for p in worker_pids(conn) if p != old], 15, 0.1)
        t_back = time.monotonic() - t0
        assert new_pids, 'no new worker within 15 s of terminating %d' % old
        done = wait_until(lambda: cached_count(conn, numbers) == len(numbers) and queued(conn) == 0,
                          15, 0.1)
        t_done = time.monotonic() - t0
        assert done, 'the new worker cached %d of %d queued numbers (%d left in the queue)' % (
            cached_count(conn, numbers), len(numbers), queued(conn))
    finally:
        conn.close()
    note('new worker after %.1f s, queue drained after %.1f s' % (t_back, t_done))


def test_worker_sighup_rereads_configuration():
    """pg_reload_conf(): the worker keeps its pid, rereads the
    configuration (ALTER SYSTEM SET line_status.max_concurrency = 4: the
    stand-in then sees at most 4 of its requests in flight, at 50 ms latency
    for 60 numbers) and keeps working; after RESET and another reload it is
    concurrent again."""
    conn = connect()
    try:
        queue_drained(conn)
        pid = worker_pid(conn)
        standin_config(latency_ms=50)
        q(conn, 'ALTER SYSTEM SET line_status.max_concurrency = 4')
        q(conn, 'SELECT pg_reload_conf()')
        time.sleep(1.5)         # the worker rereads it after its current round
        limited = [fresh_number() for _ in range(60)]
        forget(conn, limited)
        standin_reset()
        enqueue(conn, limited)
        ok1 = wait_until(lambda: cached_count(conn, limited) == len(limited), 30, 0.1)
        st1 = standin_stats()
        pid1 = worker_pid(conn)

        q(conn, 'ALTER SYSTEM RESET line_status.max_concurrency')
        q(conn, 'SELECT pg_reload_conf()')
        time.sleep(1.5)
        free = [fresh_number() for _ in range(60)]
        forget(conn, free)
        standin_reset()
        enqueue(conn, free)
        ok2 = wait_until(lambda: cached_count(conn, free) == len(free), 30, 0.1)
        st2 = standin_stats()
        pid2 = worker_pid(conn)
    finally:
        try:
            q(conn, 'ALTER SYSTEM RESET line_status.max_concurrency')
            q(conn, 'SELECT pg_reload_conf()')
            restore_standin()
        finally:
            conn.close()
    assert pid1 == pid and pid2 == pid, 'the worker changed pid at SIGHUP: %d -> %d -> %d' % (pid, pid1, pid2)
    assert ok1 and ok2, 'not all numbers cached after the reloads (%s, %s)' % (ok1, ok2)
    assert st1['requests'] == 60 and st2['requests'] == 60, \
        'requests: %d and %d for 60 numbers each' % (st1['requests'], st2['requests'])
    assert st1['max_inflight_seen'] <= 4, \
        'with max_concurrency = 4 the worker had %d requests in flight' % st1['max_inflight_seen']
    assert st2['max_inflight_seen'] > 4, \
        'after RESET the worker had at most %d requests in flight' % st2['max_inflight_seen']
    note('in flight: %d with max_concurrency 4, %d after RESET'
         % (st1['max_inflight_seen'], st2['max_inflight_seen']))


# ---------------------------------------------------------------- restart

def test_queue_survives_restart():
    """200 numbers queued while the stand-in answers after 5 s; the server
    is restarted (pg_ctl restart -m fast) while the worker waits for them:
    the restart does not wait for the answers (< 4 s), the queue still
    holds all 200 after it (the worker's batch was rolled back, not lost),
    and once the stand-in answers at once again every number ends up in the
    cache and the queue empties (30 s)."""
    numbers = [fresh_number() for _ in range(200)]
    conn = connect()
    try:
        queue_drained(conn)
        forget(conn, numbers)
        standin_config(latency_ms=5000)
        enqueue(conn, numbers)
        # the worker has taken the batch and its requests are in flight
        busy = wait_until(lambda: standin_stats()['inflight'] > 0, 5, 0.05)
        assert busy, 'the worker did not start on the queued numbers within 5 s'
    finally:
        conn.close()
    try:
        t_restart = restart_server()
        conn = connect()
        try:
            after = q1(conn, 'SELECT count(*) FROM line_status_queue WHERE phone_number = ANY(%s)',
                       (numbers,))
            cached_before = cached_count(conn, numbers)
            standin_config(latency_ms=0)
            done = wait_until(lambda: cached_count(conn, numbers) == len(numbers) and queued(conn) == 0,
                              30, 0.2)
            cached, left = cached_count(conn, numbers), queued(conn)
        finally:
            conn.close()
    finally:
        restore_standin()
    note('restart %.2f s; %d queued after it, %d already cached' % (t_restart, after, cached_before))
    assert after + cached_before == len(numbers), \
        '%d numbers neither queued nor cached after the restart' % (len(numbers) - after - cached_before)
    assert t_restart < 4, 'the restart took %.2f s (the worker waited for its answers?)' % t_restart
    assert after == len(numbers), 'only %d of %d numbers still queued after the restart' % (after, len(numbers))
    assert done, 'after the restart: %d of %d cached, %d queued' % (cached, len(numbers), left)


# ---------------------------------------------------------------- burst

BURST = 100000


def test_burst_drain():
    """100,000 numbers queued by one statement (line_status_enqueue over
    generate_series), stand-in latency 0: the worker drains them all within
    120 s, one request per number, every number cached; its memory
    (anonymous RSS) stays under 150 MB during the drain; afterwards a manual
    VACUUM leaves the queue table empty and small (< 1 MB: its empty pages
    are truncated)."""
    block = fresh_block()
    pattern = block + '%'
    conn = connect()
    samples = []
    stop = threading.Event()
    try:
        queue_drained(conn)
        q(conn, 'DELETE FROM line_status_cache WHERE phone_number LIKE %s', (pattern,))
        pid = worker_pid(conn)
        base_kb = backend_memory_kb(pid)
        standin_reset()

        def sample():
            while not stop.is_set():
                try:
                    samples.append(backend_memory_kb(pid))
                except (FileNotFoundError, ProcessLookupError, RuntimeError):
                    samples.append(-1)      # the worker died
                stop.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.monotonic()
        n = q1(conn, "SELECT count(*) FILTER (WHERE line_status_enqueue(%s || lpad(g::text, 7, '0'))) "
                     "FROM generate_series(1, %s) g", (block, BURST))
        t_enq = time.monotonic() - t0
        assert n == BURST, 'line_status_enqueue accepted %d of %d' % (n, BURST)
        size_full = q1(conn, "SELECT pg_relation_size('line_status_queue')")
        drained = wait_until(lambda: queued(conn) == 0, 120, 0.5)
        t_drain = time.monotonic() - t0 - t_enq
        stop.set()
        sampler.join(5)
        assert drained, 'the worker left %d of %d queued after 120 s' % (queued(conn), BURST)
        cached = q1(conn, 'SELECT count(*) FROM line_status_cache WHERE phone_number LIKE %s', (pattern,))
        sst = standin_stats()
        same_pid = worker_pid(conn) == pid
        q(conn, 'VACUUM line_status_queue')
        live = q1(conn, 'SELECT count(*) FROM line_status_queue')
        size = q1(conn, "SELECT pg_relation_size('line_status_queue')")
        idx = q1(conn, "SELECT pg_indexes_size('line_status_queue')")
    finally:
        stop.set()
        conn.close()
    peak_kb = max(samples) if samples else 0
    note('enqueue %.1f s, drain %.1f s = %.0f/s; worker memory %.1f MB before, peak %.1f MB; '
         'queue table %.1f MB full, %d kB after VACUUM (indexes %d kB)'
         % (t_enq, t_drain, BURST / t_drain, base_kb / 1024.0, peak_kb / 1024.0,
            size_full / 1048576.0, size // 1024, idx // 1024))
    assert -1 not in samples and same_pid, 'the worker died during the drain'
    assert sst['requests'] == BURST and sst['paid'] == BURST, \
        'stand-in: %d requests, %d paid for %d numbers' % (sst['requests'], sst['paid'], BURST)
    assert cached == BURST, '%d of %d numbers cached' % (cached, BURST)
    assert peak_kb < 150 * 1024, 'the worker reached %.1f MB during the drain' % (peak_kb / 1024.0)
    assert live == 0, '%d rows in the queue after the drain' % live
    assert size < 1024 * 1024, 'the queue table is %d kB after VACUUM' % (size // 1024)
