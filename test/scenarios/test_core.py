"""Scenario tests: what one pg_regress session cannot see.  Each test checks
real figures from the stand-in's counters (requests, connections, paths,
per-number counts) or from the operating system (memory, the server log),
not just that no exception was raised.
"""
import collections
import os
import time

import psycopg2

from common import (ALWAYS_401, ALWAYS_503, HANG_60S, TEST_TOKEN, TEST_TOKEN_B64,
                    Background, avoid_cache, backend_memory_kb, cancel_backend, connect,
                    env, error_text, extension_version, fresh_block, fresh_number, lookup_connections,
                    memory_contexts_bytes, note, number_requests, q, q1, standin_reset,
                    standin_stats, user_agent_ok, wait_until)

# Generous bounds so that CI noise never fails a test; the targets are far
# lower and the measured figures are printed.
CANCEL_BOUND_S = 2.5


def lookup(conn, number, country=None):
    """(phone_number, status, valid) of one lookup."""
    return q(conn, 'SELECT phone_number, status::text, valid FROM line_status(%s, %s)',
             (number, country))[0]


def expect_sqlstate(conn, code, sql, args=None):
    """Run sql, which must fail with SQLSTATE code; return the error."""
    try:
        q(conn, sql, args)
    except psycopg2.Error as e:
        assert e.pgcode == code, 'expected SQLSTATE %s, got %s: %s' % (code, e.pgcode, e.pgerror)
        return e
    raise AssertionError('expected SQLSTATE %s from %r, but it succeeded' % (code, sql))


def wait_inflight_zero(timeout=5.0):
    """The stand-in's live in-flight gauge must drop to 0: every hung request's
    connection was closed by the client."""
    last = wait_until(lambda: standin_stats()['inflight'] == 0, timeout)
    if not last:
        raise AssertionError('the stand-in still has %d request(s) in flight %.0f s later: '
                             'a hung connection was not closed' % (standin_stats()['inflight'], timeout))


def check_user_agents(stats, version):
    uas = stats['user_agents']
    assert len(uas) == 1 and user_agent_ok(uas[0], version), \
        'expected every request to carry User-Agent line_status/%s, the stand-in saw %r' % (version, uas)


# ---------------------------------------------------------------- 1, 2: reuse

def test_connection_reuse_http():
    """200 sequential lookups (200 statements) in one backend: one TCP
    connection, 200 requests, and the extension's User-Agent on them."""
    n = 200
    conn = connect()
    try:
        version = extension_version(conn)
        numbers = [fresh_number() for _ in range(n)]
        standin_reset()
        for num in numbers:
            row = lookup(conn, num)
            assert row[0] == num and row[2] is True, 'bad answer for %s: %r' % (num, row)
        st = standin_stats()
    finally:
        conn.close()
    assert st['requests'] == n, 'expected %d requests, the stand-in saw %d' % (n, st['requests'])
    assert st['distinct_numbers'] == n, st['distinct_numbers']
    conns = lookup_connections(st)
    note('%d lookups over %d TCP connection(s)' % (n, conns))
    assert conns == 1, '%d sequential lookups opened %d TCP connections, expected 1' % (n, conns)
    check_user_agents(st, version)


def test_connection_reuse_tls():
    """50 lookups over https in one backend: one TLS connection."""
    n = 50
    conn = connect()
    try:
        version = extension_version(conn)
        q(conn, 'SET line_status.api_url = %s', (env('STANDIN_TLS_URL'),))
        q(conn, 'SET line_status.ca_file = %s', (env('LS_CA_FILE'),))
        numbers = [fresh_number() for _ in range(n)]
        standin_reset()
        for num in numbers:
            row = lookup(conn, num)
            assert row[0] == num and row[2] is True, 'bad answer for %s: %r' % (num, row)
        st = standin_stats()
    finally:
        conn.close()
    assert st['requests'] == n, 'expected %d requests, the stand-in saw %d' % (n, st['requests'])
    conns = lookup_connections(st)
    note('%d lookups over %d TLS connection(s)' % (n, st['tls_connections']))
    assert st['tls_connections'] == 1, \
        '%d sequential https lookups opened %d TLS connections, expected 1' % (n, st['tls_connections'])
    assert conns == 1, 'expected 1 lookup connection in all, got %d' % conns
    check_user_agents(st, version)


# ---------------------------------------------------------------- 3, 4, 5: cancel

def test_cancel_hung_request():
    """pg_cancel_backend() on a lookup the API never answers: 57014 at once,
    the session stays usable, and the hung connection is closed."""
    standin_reset()
    conn = connect()
    ctl = connect()
    try:
        pid = conn.get_backend_pid()
        q(conn, "SET line_status.timeout = '30s'")   # the cancel, not the timeout, must end it
        bg = Background(conn, 'SELECT line_status(%s)', (HANG_60S,))
        bg.start()
        time.sleep(0.5)
        st = standin_stats(summary=False)
        assert number_requests(st, HANG_60S) == 1 and st['inflight'] >= 1, \
            'the hanging request did not reach the stand-in: %r' % (st['per_number'],)
        wait = q(ctl, 'SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = %s', (pid,))
        t_cancel = cancel_backend(ctl, pid)
        bg.join(15)
        assert not bg.is_alive(), 'the lookup still runs 15 s after the cancel'
        latency = bg.t_end - t_cancel
        note('cancel -> error %.0f ms (wait event while hung: %s)' % (latency * 1000, '/'.join(map(str, wait[0]))))
        assert bg.error is not None, 'the cancelled lookup returned %r' % (bg.rows,)
        assert getattr(bg.error, 'pgcode', None) == '57014', \
            'expected SQLSTATE 57014, got %s: %s' % (getattr(bg.error, 'pgcode', None), bg.error)
        assert latency < CANCEL_BOUND_S, 'the cancel took %.2f s to end the lookup' % latency

        num = fresh_number(0)
        assert lookup(conn, num) == (num, 'active', True)
        wait_inflight_zero()
    finally:
        conn.close()
        ctl.close()


def test_statement_timeout_hung_request():
    """statement_timeout ends a lookup the API never answers with 57014;
    the session stays usable and the hung connection is closed."""
    standin_reset()
    conn = connect()
    try:
        q(conn, "SET line_status.timeout = '30s'")
        q(conn, "SET statement_timeout = '300ms'")
        t0 = time.monotonic()
        expect_sqlstate(conn, '57014', 'SELECT line_status(%s)', (HANG_60S,))
        elapsed = time.monotonic() - t0
        note('statement_timeout 300 ms -> error after %.0f ms' % (elapsed * 1000))
        assert elapsed < CANCEL_BOUND_S, 'statement_timeout 300ms ended the lookup after %.2f s' % elapsed
        st = standin_stats(summary=False)
        assert number_requests(st, HANG_60S) == 1, 'the request never reached the stand-in'

        q(conn, 'RESET statement_timeout')
        num = fresh_number(1)
        assert lookup(conn, num) == (num, 'reachable', True)
        wait_inflight_zero()
    finally:
        conn.close()


def test_cancel_during_retry_backoff():
    """A cancel while the lookup waits between retries (always 503,
    max_retries = 10) ends it at once, and no request follows."""
    standin_reset()
    conn = connect()
    ctl = connect()
    try:
        pid = conn.get_backend_pid()
        q(conn, 'SET line_status.max_retries = 10')
        bg = Background(conn, 'SELECT line_status(%s)', (ALWAYS_503,))
        bg.start()
        time.sleep(0.5)
        t_cancel = cancel_backend(ctl, pid)
        bg.join(30)
        assert not bg.is_alive(), 'the lookup still runs 30 s after the cancel'
        latency = bg.t_end - t_cancel
        assert bg.error is not None, 'the lookup returned %r' % (bg.rows,)
        assert getattr(bg.error, 'pgcode', None) == '57014', \
            'expected SQLSTATE 57014, got %s: %s' % (getattr(bg.error, 'pgcode', None), bg.error)
        at_error = number_requests(standin_stats(summary=False), ALWAYS_503)
        time.sleep(1.5)       # longer than the next backoff would have been
        later = number_requests(standin_stats(summary=False), ALWAYS_503)
        note('cancel -> error %.0f ms; %d request(s) before the cancel' % (latency * 1000, at_error))
        assert latency < CANCEL_BOUND_S, 'the cancel took %.2f s to end the lookup' % latency
        assert 2 <= at_error <= 5, \
            'expected 2..5 requests in the first 0.5 s of retrying, the stand-in saw %d' % at_error
        assert later == at_error, 'requests went on after the cancel: %d then %d' % (at_error, later)

        num = fresh_number(2)
        assert lookup(conn, num) == (num, 'unreachable', True)
    finally:
        conn.close()
        ctl.close()


def test_cancel_during_long_backoff():
    """The same, but cancelling in a backoff longer than the bound: after
    the 6th request of an always-503 number the wait before the 7th is
    3.2..6.4 s (200 ms doubling, half of it random), so only a wait that
    a cancel really interrupts ends within the bound."""
    standin_reset()
    conn = connect()
    ctl = connect()
    try:
        pid = conn.get_backend_pid()
        q(conn, 'SET line_status.max_retries = 10')
        bg = Background(conn, 'SELECT line_status(%s)', (ALWAYS_503,))
        bg.start()
        seen = wait_until(lambda: number_requests(standin_stats(summary=False), ALWAYS_503) >= 6,
                          20, interval=0.02)
        assert seen, 'the stand-in saw only %d requests in 20 s' % number_requests(
            standin_stats(summary=False), ALWAYS_503)
        t_cancel = cancel_backend(ctl, pid)
        bg.join(30)
        assert not bg.is_alive(), 'the lookup still runs 30 s after the cancel'
        latency = bg.t_end - t_cancel
        note('cancel in the 3.2..6.4 s backoff -> error %.0f ms' % (latency * 1000))
        assert bg.error is not None, 'the lookup returned %r' % (bg.rows,)
        assert getattr(bg.error, 'pgcode', None) == '57014', \
            'expected SQLSTATE 57014, got %s: %s' % (getattr(bg.error, 'pgcode', None), bg.error)
        assert latency < CANCEL_BOUND_S, 'the cancel took %.2f s to end the backoff' % latency
        requests = number_requests(standin_stats(summary=False), ALWAYS_503)
        assert requests == 6, 'expected 6 requests, the stand-in saw %d' % requests
    finally:
        conn.close()
        ctl.close()


# ---------------------------------------------------------------- 6: retries

def test_retries_counted():
    """Exactly 1 + max_retries requests, no more, no fewer."""
    standin_reset()
    conn = connect()
    try:
        avoid_cache(conn)
        # 3 x 429 then success, max_retries = 3: 4 requests, status active.
        q(conn, 'SET line_status.max_retries = 3')
        assert lookup(conn, '+14155554293') == ('+14155554293', 'active', True)
        # 2 x 503 then success, max_retries = 1: fails after 2 requests.
        q(conn, 'SET line_status.max_retries = 1')
        e = expect_sqlstate(conn, '38000', 'SELECT line_status(%s)', ('+14155555002',))
        assert '503' in error_text(e), 'the error does not mention 503: %s' % e.pgerror
        # always 503, max_retries = 0: exactly one request.
        q(conn, 'SET line_status.max_retries = 0')
        expect_sqlstate(conn, '38000', 'SELECT line_status(%s)', (ALWAYS_503,))
        st = standin_stats(summary=False)
    finally:
        conn.close()
    got = {n: number_requests(st, n) for n in ('+14155554293', '+14155555002', ALWAYS_503)}
    note('requests %r' % got)
    assert got == {'+14155554293': 4, '+14155555002': 2, ALWAYS_503: 1}, \
        'expected 4, 2 and 1 requests, the stand-in saw %r' % got


# ---------------------------------------------------------------- 7: input

JUNK = [
    ('letters', 'hello'),
    ('empty', ''),
    ('blanks', '   '),
    ('dot-dot path', '../+1415'),
    ('encoded slash', '+1415%2F555'),
    ('encoded plus', '%2B14155550100'),
    ('slashes', '+1415/555/0100'),
    ('query', '+14155550100?Fields=x'),
    ('fragment', '+14155550100#'),
    ('CR/LF inside', '+1415555\r\n0100'),
    ('CR/LF after', '+14155550100\r\n'),
    ('header injection', '+14155550100\r\nX-Evil: 1'),
    ('tab', '+1415555\t0100'),
    ('10 MB string', '1' * (10 * 1024 * 1024)),
    ('10 MB E.164', '+1' + '5' * (10 * 1024 * 1024)),
    ('too many digits', '+1415555010012345'),
    ('only a plus', '+'),
    ('too short', '+12'),
    ('country code 0', '+04155550100'),
    ('letter O', '+1415555010O'),
    ('Arabic-Indic digits', '+\u0661\u0664\u0661\u0665\u0665\u0665\u0665\u0660\u0661\u0660\u0660'),
    ('fullwidth digits', '+\uff11\uff14\uff11\uff15\uff15\uff15\uff15\uff10\uff11\uff10\uff10'),
    ('extension', '+1 415 555 0100 ext 5'),
    ('national without country', '4155550100'),
    ('national with separators, no country', '(415) 555-0100'),
]


def test_no_request_for_bad_input():
    """Input that cannot be a phone number is answered locally (valid =
    false, nothing else) and never reaches the API."""
    conn = connect()
    try:
        standin_reset()
        before = standin_stats()['requests']
        for label, text in JUNK:
            row = q(conn, 'SELECT phone_number, status, error_code, valid, country_code, '
                          'checked_at, cached, response FROM line_status(%s)', (text,))[0]
            assert row[3] is False and row[0] is None and row[1] is None and row[7] is None, \
                '%s: expected a local valid = false answer, got %r' % (label, row[:5])
        # The same with a country code, where only the national form changes.
        for label, text in JUNK:
            if 'national' in label:
                continue
            row = q(conn, 'SELECT valid, response FROM line_status(%s, %s)', (text, 'US'))[0]
            assert row == (False, None), '%s with US: expected a local answer, got %r' % (label, row)
        # A bad country code is the caller's error, before any request.
        for cc in ('USA', '', 'U1', '../', 'U\n', 'X' * 100000):
            expect_sqlstate(conn, '22023', 'SELECT line_status(%s, %s)', ('4155550100', cc))
        after = standin_stats()['requests']
        assert after == before, 'bad input caused %d request(s) to the API' % (after - before)
        note('%d bad inputs, 0 requests' % (2 * len(JUNK) - 2 + 6))
    finally:
        conn.close()


def test_request_path_exact():
    """The exact request line the API receives, with and without a country."""
    # US/CA national numbers are rewritten as E.164 locally (an exact rule);
    # other countries' national numbers go with CountryCode.
    for args, path, e164 in (
            (('+14155550100', None), '/v2/PhoneNumbers/%2B14155550100?Fields=line_status', '+14155550100'),
            (('4155550100', 'US'), '/v2/PhoneNumbers/%2B14155550100?Fields=line_status', '+14155550100'),
            (('(415) 555-0100', 'us'), '/v2/PhoneNumbers/%2B14155550100?Fields=line_status', '+14155550100'),
            (('07700 900100', 'gb'), '/v2/PhoneNumbers/07700900100?Fields=line_status&CountryCode=GB',
             '+447700900100'),
            ((' +1 (415) 555.0100 ', None), '/v2/PhoneNumbers/%2B14155550100?Fields=line_status', '+14155550100')):
        conn = connect()     # a new backend each time, so no in-backend state is shared
        try:
            avoid_cache(conn)
            standin_reset()
            row = lookup(conn, *args)
            st = standin_stats(summary=False)
        finally:
            conn.close()
        assert row == (e164, 'active', True), '%r: %r' % (args, row)
        assert st['paths'] == [path], 'line_status%r: expected request path %r, the stand-in saw %r' % (
            args, path, st['paths'])


# ---------------------------------------------------------------- 8: memory

def test_memory_flat():
    """100,000 lookups in one backend: resident anonymous memory (see
    common.backend_memory_kb) grows less than 5 MB after a 5,000-call
    warm-up.  The extension's settings are left at their defaults (with a
    result cache, every call here is a miss: a request and a cache write).
    The warm-up and every later statement are 5,000 calls each, so the
    per-statement state (the memo of the statement's answers, kept until
    the next statement) is the same size at both measurements."""
    chunk, total = 5000, 100000
    limit_kb = 5 * 1024
    block = fresh_block()
    conn = connect()
    try:
        pid = conn.get_backend_pid()
        standin_reset()
        sql = "SELECT count(line_status(%s || lpad(g::text, 7, '0'))) FROM generate_series(%s, %s) g"
        assert q1(conn, sql, (block, 1, chunk)) == chunk
        mem0 = backend_memory_kb(pid)
        ctx0 = memory_contexts_bytes(conn)
        t0 = time.monotonic()
        for start in range(chunk + 1, chunk + total + 1, chunk):
            assert q1(conn, sql, (block, start, start + chunk - 1)) == chunk
        secs = time.monotonic() - t0
        mem1 = backend_memory_kb(pid)
        ctx1 = memory_contexts_bytes(conn)
        st = standin_stats()
    finally:
        conn.close()
    growth = mem1 - mem0
    note('anonymous memory %d kB -> %d kB (%+d kB) over %d lookups in %.1f s; memory contexts %+d kB'
         % (mem0, mem1, growth, total, secs, (ctx1 - ctx0) // 1024))
    assert st['requests'] == chunk + total, \
        'expected %d real requests, the stand-in saw %d' % (chunk + total, st['requests'])
    assert growth < limit_kb, 'backend memory grew %d kB over %d lookups (limit %d kB)' % (growth, total, limit_kb)


# ---------------------------------------------------------------- 9: secrets

ROLE = 'ls_scen_secret_user'


def _drop_role(su):
    if q1(su, 'SELECT count(*) FROM pg_roles WHERE rolname = %s', (ROLE,)):
        q(su, 'DROP OWNED BY %s' % ROLE)
        q(su, 'DROP ROLE %s' % ROLE)


def _leaks(text):
    return TEST_TOKEN in text or TEST_TOKEN_B64 in text


def test_secrets_invisible_to_unprivileged_role():
    """A role granted EXECUTE sees the auth token nowhere: not in SHOW,
    current_setting, pg_settings, pg_db_role_setting, pg_stat_activity, nor
    in any error or notice (client_min_messages = debug5) it can provoke."""
    su = connect()
    seen = []        # (where, text) of everything the role was shown

    def probe(c, where, sql, args=None, sqlstate=None):
        try:
            rows = q(c, sql, args)
        except psycopg2.Error as e:
            seen.append((where, error_text(e)))
            assert sqlstate is None or e.pgcode == sqlstate, \
                '%s: expected SQLSTATE %s, got %s: %s' % (where, sqlstate, e.pgcode, e.pgerror)
            return None
        assert sqlstate is None, '%s: expected SQLSTATE %s, but it succeeded: %r' % (where, sqlstate, rows)
        seen.append((where, repr(rows)))
        return rows

    conns = []
    try:
        _drop_role(su)
        q(su, 'CREATE ROLE %s LOGIN' % ROLE)
        q(su, 'GRANT EXECUTE ON FUNCTION line_status(text, text) TO %s' % ROLE)

        r = connect(user=ROLE)
        conns.append(r)
        r.notices = collections.deque()
        assert q1(r, 'SELECT rolsuper FROM pg_roles WHERE rolname = current_user') is False
        q(r, 'SET client_min_messages = debug5')
        num = fresh_number(0)
        assert lookup(r, num) == (num, 'active', True), 'the role cannot look numbers up'

        # Reading the setting.
        probe(r, 'SHOW', 'SHOW line_status.auth_token', sqlstate='42501')
        probe(r, 'current_setting', "SELECT current_setting('line_status.auth_token')", sqlstate='42501')
        probe(r, 'current_setting missing_ok', "SELECT current_setting('line_status.auth_token', true)")
        probe(r, 'SHOW ALL', 'SHOW ALL')
        probe(r, 'pg_settings', 'SELECT row_to_json(s)::text FROM pg_settings s')
        probe(r, 'pg_db_role_setting', 'SELECT row_to_json(s)::text FROM pg_db_role_setting s')
        probe(r, 'pg_file_settings', 'SELECT row_to_json(s)::text FROM pg_file_settings s')
        probe(r, 'pg_proc proconfig', 'SELECT proname, proconfig FROM pg_proc WHERE proconfig IS NOT NULL')
        # Changing it (refused) or where it goes (refused).
        probe(r, 'SET auth_token', "SET line_status.auth_token = 'x'", sqlstate='42501')
        probe(r, 'SET api_url', "SET line_status.api_url = 'http://127.0.0.1:1'", sqlstate='42501')
        probe(r, 'set_config', "SELECT set_config('line_status.auth_token', 'x', false)", sqlstate='42501')

        # Failing lookups the role can provoke on its own.
        probe(r, '401', 'SELECT line_status(%s)', (ALWAYS_401,), sqlstate='28000')
        q(r, 'SET line_status.max_retries = 1')
        probe(r, '503', 'SELECT line_status(%s)', (ALWAYS_503,), sqlstate='38000')
        probe(r, 'bad JSON', 'SELECT line_status(%s)', ('+14155558000',), sqlstate='38000')
        probe(r, 'redirect', 'SELECT line_status(%s)', ('+14155558012',), sqlstate='38000')
        q(r, "SET line_status.timeout = '300ms'")
        probe(r, 'timeout', 'SELECT line_status(%s)', (HANG_60S,), sqlstate='08006')
        q(r, 'RESET line_status.timeout')

        # Failures that need a superuser to point the URL elsewhere: a
        # superuser session sets it, then becomes the role.
        s2 = connect()
        conns.append(s2)
        s2.notices = collections.deque()
        tls_port = env('STANDIN_TLS_URL').rsplit(':', 1)[1]
        for label, url, ca in (('connection refused', 'http://127.0.0.1:1', ''),
                               ('TLS host mismatch', 'https://127.0.0.1:%s' % tls_port, env('LS_CA_FILE')),
                               ('TLS unknown CA', env('STANDIN_TLS_URL'), '')):
            q(s2, 'RESET ROLE')
            q(s2, 'SET line_status.api_url = %s', (url,))
            q(s2, 'SET line_status.ca_file = %s', (ca,))
            q(s2, 'SET line_status.max_retries = 1')
            q(s2, "SET line_status.connect_timeout = '2s'")
            q(s2, 'SET ROLE %s' % ROLE)
            q(s2, 'SET client_min_messages = debug5')
            probe(s2, label, 'SELECT line_status(%s)', (fresh_number(),))

        # pg_stat_activity while another session of the role, and one of a
        # superuser, are inside a lookup, and after.
        other = connect(user=ROLE)
        conns.append(other)
        q(other, "SET line_status.timeout = '1500ms'")
        sus = connect()
        conns.append(sus)
        q(sus, "SET line_status.timeout = '1500ms'")
        bgs = [Background(other, 'SELECT line_status(%s)', (HANG_60S,)),
               Background(sus, 'SELECT line_status(%s)', (HANG_60S,))]
        for b in bgs:
            b.start()
        time.sleep(0.5)
        rows = probe(r, 'pg_stat_activity during', 'SELECT row_to_json(a)::text FROM pg_stat_activity a')
        assert any('line_status(' in row[0] for row in rows), \
            'pg_stat_activity did not show the other session\'s lookup: %r' % rows
        for b in bgs:
            b.join(10)
            assert b.error is not None, 'the hung lookup returned %r' % (b.rows,)
            seen.append(('other session error', error_text(b.error)))
        probe(r, 'pg_stat_activity after', 'SELECT row_to_json(a)::text FROM pg_stat_activity a')

        for c in (r, s2):
            seen.extend(('notice', n) for n in c.notices)
    finally:
        for c in conns:
            c.close()
        try:
            _drop_role(su)
        finally:
            su.close()

    leaked = [where for where, text in seen if _leaks(text)]
    note('%d texts checked, %d of them notices' % (len(seen), sum(1 for w, _ in seen if w == 'notice')))
    assert not leaked, 'the auth token was visible to an unprivileged role in: %s' % ', '.join(leaked)


def test_secrets_not_in_server_log():
    """With log_min_messages = debug5 and log_statement = all for a session
    that does successful and failing lookups, the server log (read as root)
    never contains the auth token."""
    log = os.path.join(env('LS_WORK'), 'postgres.log')
    start = os.path.getsize(log)
    conn = connect()
    try:
        for s in ("SET log_min_messages = debug5", "SET log_statement = 'all'",
                  "SET log_min_error_statement = debug5", "SET log_error_verbosity = verbose",
                  "SET line_status.max_retries = 1", "SET line_status.connect_timeout = '2s'"):
            q(conn, s)
        marker = fresh_number(0)
        assert lookup(conn, marker) == (marker, 'active', True)
        for sql, args in (('SELECT line_status(%s)', (ALWAYS_401,)),
                          ('SELECT line_status(%s)', (ALWAYS_503,)),
                          ('SELECT line_status(%s)', ('+14155558000',)),
                          ("SET line_status.timeout = '300ms'", None),
                          ('SELECT line_status(%s)', (HANG_60S,)),
                          ('RESET line_status.timeout', None),
                          ("SET line_status.api_url = 'http://127.0.0.1:1'", None),
                          ('SELECT line_status(%s)', (fresh_number(),)),
                          ('SET line_status.api_url = %s', (env('STANDIN_TLS_URL'),)),
                          ('SELECT line_status(%s)', (fresh_number(),)),
                          ('RESET line_status.api_url', None),
                          ('SET line_status.auth_token_file = %s', ('no_such_token_file',)),
                          ('SELECT line_status(%s)', (fresh_number(),)),
                          ('RESET line_status.auth_token_file', None),
                          ('SELECT pg_reload_conf()', None)):
            try:
                q(conn, sql, args)
            except psycopg2.Error:
                pass
        time.sleep(0.5)
    finally:
        conn.close()
    with open(log, 'rb') as f:
        data = f.read().decode('utf-8', 'replace')
    new = data[start:] if len(data) >= start else data
    assert marker in new and 'debug' in new.lower(), \
        'the session\'s statements and debug messages are not in %s: the test did not log' % log
    note('%d log bytes written by the session, %d in all, checked' % (len(new), len(data)))
    for name, secret in (('the auth token', TEST_TOKEN), ('the base64 credentials', TEST_TOKEN_B64)):
        i = data.find(secret)
        assert i < 0, '%s is in the server log, at byte %d: %r' % (name, i, data[max(0, i - 200):i + 80])


# ---------------------------------------------------------------- 10: savepoint

def test_error_in_savepoint_then_reuse():
    """BEGIN; SAVEPOINT a; a failing lookup; ROLLBACK TO a; a lookup works
    and reuses the connection; COMMIT."""
    standin_reset()
    conn = connect()
    try:
        q(conn, 'SET line_status.max_retries = 0')
        first, after = fresh_number(0), fresh_number(1)
        assert lookup(conn, first) == (first, 'active', True)
        q(conn, 'BEGIN')
        q(conn, 'SAVEPOINT a')
        e = expect_sqlstate(conn, '38000', 'SELECT line_status(%s)', (ALWAYS_503,))
        assert '503' in error_text(e)
        q(conn, 'ROLLBACK TO SAVEPOINT a')
        assert lookup(conn, after) == (after, 'reachable', True)
        q(conn, 'COMMIT')
        last = fresh_number(2)
        assert lookup(conn, last) == (last, 'unreachable', True)
        st = standin_stats(summary=False)
    finally:
        conn.close()
    got = [number_requests(st, n) for n in (first, ALWAYS_503, after, last)]
    assert got == [1, 1, 1, 1], 'expected one request per lookup, the stand-in saw %r' % got
    conns = lookup_connections(st)
    assert conns == 1, 'expected the four requests to share 1 connection, they used %d' % conns


def test_timeout_in_savepoint_then_new_connection():
    """BEGIN; SAVEPOINT a; a hung lookup ended by statement_timeout;
    ROLLBACK TO a; a lookup works on a new connection (the hung one is
    closed, not reused); COMMIT."""
    standin_reset()
    conn = connect()
    try:
        q(conn, "SET line_status.timeout = '30s'")
        first, after = fresh_number(3), fresh_number(4)
        assert lookup(conn, first) == (first, 'inactive', True)
        q(conn, 'BEGIN')
        q(conn, 'SAVEPOINT a')
        q(conn, "SET LOCAL statement_timeout = '300ms'")
        expect_sqlstate(conn, '57014', 'SELECT line_status(%s)', (HANG_60S,))
        q(conn, 'ROLLBACK TO SAVEPOINT a')
        assert lookup(conn, after) == (after, 'unknown', True)
        q(conn, 'COMMIT')
        st = standin_stats(summary=False)
        wait_inflight_zero()
    finally:
        conn.close()
    got = [number_requests(st, n) for n in (first, HANG_60S, after)]
    assert got == [1, 1, 1], 'expected one request per lookup, the stand-in saw %r' % got
    conns = lookup_connections(st)
    assert conns == 2, 'expected 2 connections (the hung one closed, then a new one), got %d' % conns
