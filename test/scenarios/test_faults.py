"""Scenario tests of transport and answer faults: what a lookup does when
the API cannot be reached, or answers something that is not an answer.

For every fault, one test checks
  (a) the SQLSTATE, and that the error's message and detail say what
      happened;
  (b) that the session stays usable: a good lookup right after, in the same
      session;
  (c) that nothing wrong is cached: with line_status.cache_ttl at its
      default (never 0 here, so a wrong answer would be cached if the code
      let it), line_status_cache has no row for the faulty number, and with
      line_status.on_error = 'unknown' (where the statement succeeds and
      commits, so a cache write would stay) two lookups of the faulty
      number both reach the API;
  (d) for the body-size, drip and hang faults, that the backend's resident
      anonymous memory does not grow over 20 more faults;
plus the stand-in's request, paid, connection and in-flight counters where
they tell what the extension really did (how often it asked, whether it
stopped reading), and a bulk lookup meeting every answer fault at once.

Each fault is met on a kept-alive connection (a good lookup first), as in a
real backend, which reuses its connection from one lookup to the next.
"""
import re
import socket
import time

import psycopg2

import common
from common import (STATUS_BY_DIGIT, backend_memory_kb, connect, env, error_text, fresh_number, memory_contexts_bytes,
                    note, number_requests, q, q1, standin_reset, standin_stats, wait_until)

# Stand-in fault numbers (test/standin/README.md).
HANG_AFTER_HEADERS = '+14155557001'   # status line and headers, then nothing
BAD_JSON = '+14155558000'             # 200, '{"phone_number": "+14155558000", "valid": tru'
BODY_8MB = '+14155558001'             # 200, ~8 MB of valid JSON (paid)
DROPPED = '+14155558002'              # socket destroyed, no answer at all
HTML_200 = '+14155558003'             # 200, an HTML "502 Bad Gateway" page
TRUNCATED = '+14155558004'            # Content-Length 500, 100 bytes, then FIN
DRIP = '+14155558008'                 # 200, body at 1 byte per second (paid)
BODY_50MB = '+14155558009'            # 200, ~50 MB streamed with back-pressure (paid)

# The extension's cap on an answer (LS_HTTP_MAX_BODY in src/http.h).
MAX_BODY = 256 * 1024

MEM_REPEATS = 20
MEM_LIMIT_KB = 2 * 1024



class Checks:
    """Collects failed checks, so that a test reports every problem it saw
    (one bug must not hide the others), then fails with all of them."""

    def __init__(self):
        self.failed = []

    def check(self, ok, msg):
        if not ok:
            self.failed.append(msg)
        return ok

    def done(self):
        if self.failed:
            raise AssertionError('%d problem(s): %s' % (len(self.failed), ' || '.join(self.failed)))


def lookup(conn, number):
    """(phone_number, status, valid, cached, response) of one lookup."""
    return q(conn, 'SELECT phone_number, status::text, valid, cached, response FROM line_status(%s)',
             (number,))[0]


def cache_on(conn):
    """line_status.cache_ttl at its default, which must not be 0: these
    tests need the cache on, so that a wrong answer would be cached."""
    q(conn, 'RESET line_status.cache_ttl')
    ttl = q1(conn, "SELECT setting::int FROM pg_settings WHERE name = 'line_status.cache_ttl'")
    assert ttl > 0, 'line_status.cache_ttl is 0 by default here: the cache checks would prove nothing'


def forget(conn, number):
    """No cache row for number before the test (an earlier run may have
    left one), so that the lookup really reaches the API."""
    q(conn, 'DELETE FROM line_status_cache_alias WHERE phone_number = %s', (number,))
    q(conn, 'DELETE FROM line_status_cache WHERE phone_number = %s', (number,))


def cache_rows(conn, number):
    return q1(conn, 'SELECT count(*) FROM line_status_cache WHERE phone_number = %s', (number,))


def good_lookup(conn, chk, when):
    """A fresh number, answered by the API (not the cache), correctly."""
    num = fresh_number()
    before = number_requests(standin_stats(summary=False), num)
    row = lookup(conn, num)
    made = number_requests(standin_stats(summary=False), num) - before
    chk.check(row[:4] == (num, STATUS_BY_DIGIT[int(num[-1])], True, False),
              'good lookup (%s the fault): expected %r, got %r' % (
                  when, (num, STATUS_BY_DIGIT[int(num[-1])], True, False), row[:4]))
    chk.check(made == 1, 'good lookup (%s the fault) made %d requests, expected 1' % (when, made))
    return num


def expect_fault(conn, sqlstate, patterns, number):
    """Look number up, which must fail with sqlstate, and with message and
    detail matching every regex in patterns (case-insensitive).  Returns
    (error, seconds)."""
    t0 = time.monotonic()
    try:
        q(conn, 'SELECT line_status(%s)', (number,))
    except psycopg2.Error as e:
        secs = time.monotonic() - t0
        assert e.pgcode == sqlstate, 'expected SQLSTATE %s, got %s: %s' % (sqlstate, e.pgcode, error_text(e))
        said = '%s\n%s' % (e.diag.message_primary or '', e.diag.message_detail or '')
        for p in patterns:
            assert re.search(p, said, re.I), 'the error does not say /%s/: %r' % (p, said)
        return e, secs
    raise AssertionError('expected SQLSTATE %s for %s, but the lookup succeeded' % (sqlstate, number))


def failure_not_cached(conn, chk, number, sqlstate, settings=()):
    """With on_error = 'unknown' the failure becomes a result (status
    unknown, the error in response) and the statement commits: it must not
    be cached, so a second lookup reaches the API again, and no row is
    left."""
    for s in settings:
        q(conn, s)
    q(conn, "SET line_status.on_error = 'unknown'")
    try:
        for i in (1, 2):
            before = number_requests(standin_stats(summary=False), number)
            phone, status, valid, cached, resp = lookup(conn, number)
            made = number_requests(standin_stats(summary=False), number) - before
            chk.check(status == 'unknown' and valid is None and cached is False and
                      isinstance(resp, dict) and resp.get('sqlstate') == sqlstate,
                      "on_error = 'unknown', lookup %d: expected status unknown, valid NULL, not cached, "
                      'response.sqlstate %s; got %r' % (i, sqlstate, (status, valid, cached, resp)))
            chk.check(made >= 1, "on_error = 'unknown', lookup %d of %s made no request: "
                                 'the failure was served from the cache' % (i, number))
    finally:
        q(conn, 'RESET line_status.on_error')
        for s in settings:
            q(conn, 'RESET %s' % s.split()[1])
    chk.check(cache_rows(conn, number) == 0,
              "on_error = 'unknown': line_status_cache has a row for the failed number %s" % number)


def memory_flat(conn, chk, label, number, sqlstate, warmups=2):
    """MEM_REPEATS more faults do not grow the backend's resident anonymous
    memory by MEM_LIMIT_KB or more.  Returns the note text."""
    pid = conn.get_backend_pid()
    for _ in range(warmups):
        expect_fault(conn, sqlstate, (), number)
    mem0 = backend_memory_kb(pid)
    ctx0 = memory_contexts_bytes(conn)
    t0 = time.monotonic()
    for _ in range(MEM_REPEATS):
        expect_fault(conn, sqlstate, (), number)
    secs = time.monotonic() - t0
    mem1 = backend_memory_kb(pid)
    ctx1 = memory_contexts_bytes(conn)
    growth = mem1 - mem0
    chk.check(growth < MEM_LIMIT_KB, '%s: backend memory grew %d kB over %d faults (limit %d kB)'
              % (label, growth, MEM_REPEATS, MEM_LIMIT_KB))
    return 'memory over %d faults %+d kB (contexts %+d kB, %.1f s)' % (
        MEM_REPEATS, growth, (ctx1 - ctx0) // 1024, secs)


def inflight_zero(timeout):
    return wait_until(lambda: standin_stats()['inflight'] == 0, timeout, interval=0.02)


_standin_pid = None


def standin_wchar():
    """Bytes the stand-in process has written so far (wchar of
    /proc/<pid>/io: Node writes to its sockets with write()/writev(), which
    count there; our control calls add a few hundred bytes each).  The
    stand-in serves only this test environment."""
    global _standin_pid
    if _standin_pid is None:
        _standin_pid = common._control('/__standin/health')['pid']
    with open('/proc/%d/io' % _standin_pid) as f:
        for line in f:
            if line.startswith('wchar:'):
                return int(line.split()[1])
    raise RuntimeError('no wchar for pid %d' % _standin_pid)


def closed_port():
    """A TCP port on 127.0.0.1 that nobody listens on."""
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def setup(conn, *numbers):
    cache_on(conn)
    for n in numbers:
        forget(conn, n)


# ---------------------------------------------------------------- connecting

def test_connection_refused():
    """api_url on a closed port: 08001 "Could not connect ... after 4
    attempts" (max_retries 3), nothing cached, the session works again with
    the real URL."""
    chk = Checks()
    conn = connect()
    try:
        num = fresh_number()
        setup(conn, num)
        standin_reset()
        good_lookup(conn, chk, 'before')
        q(conn, 'SET line_status.api_url = %s', ('http://127.0.0.1:%d' % closed_port(),))
        e, secs = expect_fault(conn, '08001', (r'could not connect', r'after 4 attempts'), num)
        q(conn, 'RESET line_status.api_url')
        good_lookup(conn, chk, 'after')
        chk.check(cache_rows(conn, num) == 0, 'line_status_cache has a row for %s' % num)
        chk.check(number_requests(standin_stats(summary=False), num) == 0, 'the stand-in saw the number')
        note('error after %.0f ms: %s' % (secs * 1000, e.diag.message_detail))
    finally:
        conn.close()
    chk.done()


def test_dns_failure():
    """An api_url host under .invalid: 08001, the detail says the host
    could not be resolved, nothing cached, the session works again."""
    chk = Checks()
    conn = connect()
    try:
        num = fresh_number()
        setup(conn, num)
        standin_reset()
        good_lookup(conn, chk, 'before')
        q(conn, "SET line_status.api_url = 'https://lookups.line-status-test.invalid'")
        e, secs = expect_fault(conn, '08001', (r'resolv', r'line-status-test\.invalid'), num)
        q(conn, 'RESET line_status.api_url')
        good_lookup(conn, chk, 'after')
        chk.check(cache_rows(conn, num) == 0, 'line_status_cache has a row for %s' % num)
        chk.check(secs < 5, 'the DNS failure took %.1f s to report' % secs)
        note('error after %.0f ms: %s' % (secs * 1000, e.diag.message_detail))
    finally:
        conn.close()
    chk.done()


def test_tls_wrong_host_name():
    """https://127.0.0.1:<tls port> with the right CA, but a certificate for
    localhost only: 08001, the detail says TLS and the host name; no HTTP
    request is sent, the handshake is not retried, nothing cached; the
    session works again over plain http."""
    chk = Checks()
    conn = connect()
    try:
        num = fresh_number()
        setup(conn, num)
        standin_reset()
        good_lookup(conn, chk, 'before')
        tls_port = env('STANDIN_TLS_URL').rsplit(':', 1)[1]
        before = standin_stats()
        q(conn, 'SET line_status.api_url = %s', ('https://127.0.0.1:%s' % tls_port,))
        q(conn, 'SET line_status.ca_file = %s', (env('LS_CA_FILE'),))
        e, secs = expect_fault(conn, '08001', (r'TLS', r'host ?name', r'127\.0\.0\.1'), num)
        after = standin_stats()
        q(conn, 'RESET line_status.api_url')
        q(conn, 'RESET line_status.ca_file')
        good_lookup(conn, chk, 'after')
        chk.check(after['requests'] == before['requests'],
                  'an HTTP request was sent over the unverified connection')
        chk.check(after['tls_connections'] - before['tls_connections'] == 1,
                  'expected 1 TLS handshake (not retried), the stand-in saw %d'
                  % (after['tls_connections'] - before['tls_connections']))
        chk.check(cache_rows(conn, num) == 0, 'line_status_cache has a row for %s' % num)
        note('error after %.0f ms: %s' % (secs * 1000, e.diag.message_detail))
    finally:
        conn.close()
    chk.done()


def test_dropped_connection():
    """+14155558002 (the socket is destroyed, no answer): retried
    max_retries (3) times, then 08006 "Empty reply ... after 4 attempts";
    the stand-in must have seen exactly max_retries + 1 = 4 requests.
    Nothing cached; the session works."""
    chk = Checks()
    conn = connect()
    try:
        setup(conn, DROPPED)
        q(conn, 'SET line_status.max_retries = 3')
        standin_reset()
        good_lookup(conn, chk, 'before')
        e, secs = expect_fault(conn, '08006', (r'empty reply|closed', r'after 4 attempts'), DROPPED)
        made = number_requests(standin_stats(summary=False), DROPPED)
        good_lookup(conn, chk, 'after')
        chk.check(cache_rows(conn, DROPPED) == 0, 'line_status_cache has a row for %s' % DROPPED)
        failure_not_cached(conn, chk, DROPPED, '08006', ('SET line_status.max_retries = 0',))
        chk.check(made == 4, 'max_retries = 3: expected 4 requests, the stand-in saw %d '
                             '(the error says "%s")' % (made, e.diag.message_detail))
        note('%d requests, error after %.0f ms' % (made, secs * 1000))
    finally:
        conn.close()
    chk.done()


# ---------------------------------------------------------------- bad answers

def test_truncated_body():
    """+14155558004 (Content-Length 500, 100 bytes, then the connection is
    closed): 08006, the detail says the transfer was closed early; one
    request (not retried: the answer had begun); nothing cached."""
    chk = Checks()
    conn = connect()
    try:
        setup(conn, TRUNCATED)
        standin_reset()
        good_lookup(conn, chk, 'before')
        e, secs = expect_fault(conn, '08006', (r'closed', r'remaining'), TRUNCATED)
        made = number_requests(standin_stats(summary=False), TRUNCATED)
        good_lookup(conn, chk, 'after')
        chk.check(cache_rows(conn, TRUNCATED) == 0, 'line_status_cache has a row for %s' % TRUNCATED)
        failure_not_cached(conn, chk, TRUNCATED, '08006')
        chk.check(made == 1, 'expected 1 request, the stand-in saw %d' % made)
        note(e.diag.message_detail)
    finally:
        conn.close()
    chk.done()


def test_invalid_json():
    """+14155558000 (200 with invalid JSON): 38000 "unexpected answer",
    the detail says the body is not valid JSON; one request; nothing
    cached."""
    chk = Checks()
    conn = connect()
    try:
        setup(conn, BAD_JSON)
        standin_reset()
        good_lookup(conn, chk, 'before')
        e, _ = expect_fault(conn, '38000', (r'unexpected answer', BAD_JSON.replace('+', r'\+'),
                                            r'not valid JSON'), BAD_JSON)
        made = number_requests(standin_stats(summary=False), BAD_JSON)
        good_lookup(conn, chk, 'after')
        chk.check(cache_rows(conn, BAD_JSON) == 0, 'line_status_cache has a row for %s' % BAD_JSON)
        failure_not_cached(conn, chk, BAD_JSON, '38000')
        chk.check(made == 1, 'expected 1 request, the stand-in saw %d' % made)
        note(e.diag.message_detail)
    finally:
        conn.close()
    chk.done()


def test_html_error_page_200():
    """+14155558003 (200, Content-Type text/html, a "502 Bad Gateway"
    page): 38000, the detail says the body is not valid JSON; nothing
    cached."""
    chk = Checks()
    conn = connect()
    try:
        setup(conn, HTML_200)
        standin_reset()
        good_lookup(conn, chk, 'before')
        e, _ = expect_fault(conn, '38000', (r'unexpected answer', r'not valid JSON'), HTML_200)
        made = number_requests(standin_stats(summary=False), HTML_200)
        good_lookup(conn, chk, 'after')
        chk.check(cache_rows(conn, HTML_200) == 0, 'line_status_cache has a row for %s' % HTML_200)
        failure_not_cached(conn, chk, HTML_200, '38000')
        chk.check(made == 1, 'expected 1 request, the stand-in saw %d' % made)
        note(e.diag.message_detail)
    finally:
        conn.close()
    chk.done()


# ---------------------------------------------------------------- big and slow answers

def test_body_8mb():
    """+14155558001 (200, ~8 MB of valid JSON, sent at once): 38000, the
    detail says the answer was larger than the cap, within 2 s; one
    request; nothing cached; memory flat over 20 more."""
    chk = Checks()
    conn = connect()
    try:
        setup(conn, BODY_8MB)
        standin_reset()
        good_lookup(conn, chk, 'before')
        e, secs = expect_fault(conn, '38000', (r'larger than %d bytes' % MAX_BODY,), BODY_8MB)
        made = number_requests(standin_stats(summary=False), BODY_8MB)
        good_lookup(conn, chk, 'after')
        chk.check(cache_rows(conn, BODY_8MB) == 0, 'line_status_cache has a row for %s' % BODY_8MB)
        chk.check(made == 1, 'expected 1 request, the stand-in saw %d' % made)
        chk.check(secs < 2, 'the 8 MB answer took %.2f s to be refused' % secs)
        failure_not_cached(conn, chk, BODY_8MB, '38000')
        mem = memory_flat(conn, chk, '8 MB body', BODY_8MB, '38000')
        note('error after %.0f ms; %s' % (secs * 1000, mem))
    finally:
        conn.close()
    chk.done()


def test_body_50mb_cut_off():
    """+14155558009 (200, ~50 MB streamed with back-pressure): cut off at
    the cap at once: 38000 "larger than" in well under 5 s (bound 2 s), and
    the stand-in stops sending: its in-flight gauge is back to 0 within 2 s
    (the connection was closed) and it wrote less than 16 MB of the 50 MB
    into the socket (measured as the stand-in process's wchar).  One
    request; nothing cached; memory flat over 20 more."""
    chk = Checks()
    conn = connect()
    try:
        setup(conn, BODY_50MB)
        standin_reset()
        good_lookup(conn, chk, 'before')
        w0 = standin_wchar()
        e, secs = expect_fault(conn, '38000', (r'larger than %d bytes' % MAX_BODY,), BODY_50MB)
        t0 = time.monotonic()
        stopped = inflight_zero(2.0)
        stop_secs = time.monotonic() - t0
        time.sleep(0.1)             # anything still being written would show
        sent = standin_wchar() - w0
        made = number_requests(standin_stats(summary=False), BODY_50MB)
        chk.check(secs < 2, 'the 50 MB answer took %.2f s to be cut off' % secs)
        chk.check(stopped, 'the stand-in was still sending the 50 MB answer 2 s after the error')
        chk.check(sent < 16 * 1024 * 1024, 'the stand-in wrote %.1f MB of the 50 MB answer: '
                                           'it was read to the end, not cut off' % (sent / 1048576.0))
        chk.check(made == 1, 'expected 1 request, the stand-in saw %d' % made)
        good_lookup(conn, chk, 'after')
        chk.check(cache_rows(conn, BODY_50MB) == 0, 'line_status_cache has a row for %s' % BODY_50MB)
        failure_not_cached(conn, chk, BODY_50MB, '38000')
        w1 = standin_wchar()
        mem = memory_flat(conn, chk, '50 MB body', BODY_50MB, '38000')
        chk.check(inflight_zero(2.0), 'the stand-in was still sending after the repeated 50 MB answers')
        sent_rep = standin_wchar() - w1
        chk.check(sent_rep < 22 * 16 * 1024 * 1024, 'the stand-in wrote %.0f MB for 22 cut-off answers'
                  % (sent_rep / 1048576.0))
        note('error after %.0f ms; stand-in stopped %.0f ms later, having written %.1f MB '
             '(%.1f MB per answer over the repeats); %s'
             % (secs * 1000, stop_secs * 1000, sent / 1048576.0, sent_rep / 22 / 1048576.0, mem))
    finally:
        conn.close()
    chk.done()


def timeout_fault(number, paid_per_request):
    """The drip and hang tests: the answer has begun (status line and
    headers, and for the drip one byte) when line_status.timeout ends it.
      - timeout 1s, a kept-alive connection, default max_retries (3):
        08006 "timed out ... reading the answer" within 2.5 s, exactly one
        request (never retried: the answer had begun, so Twilio has
        charged), the slow connection closed;
      - the same with max_retries 0: the detail still says "reading the
        answer" (the phase must not depend on whether the connection was
        reused);
      - the session works; nothing cached (also with on_error = unknown);
      - memory flat over 20 more faults at timeout 200ms."""
    chk = Checks()
    conn = connect()
    try:
        setup(conn, number)
        standin_reset()
        good_lookup(conn, chk, 'before')
        q(conn, "SET line_status.timeout = '1s'")
        e, secs = expect_fault(conn, '08006', (r'timed out',), number)
        st = standin_stats(summary=False)
        made, paid = number_requests(st, number), st['per_number'].get(number, {}).get('paid', 0)
        chk.check(re.search('reading the answer', e.diag.message_detail or ''),
                  'the detail does not say "reading the answer": %r' % e.diag.message_detail)
        chk.check(secs < 2.5, 'timeout 1s: the error came after %.2f s' % secs)
        chk.check(made == 1 and paid == paid_per_request,
                  'a timeout while reading the answer was retried: %d requests (%d paid), expected 1 (%d paid); '
                  'error after %.2f s' % (made, paid, paid_per_request, secs))
        chk.check(inflight_zero(3.0), 'the slow connection was not closed')

        good_lookup(conn, chk, 'before the max_retries 0')
        q(conn, 'SET line_status.max_retries = 0')
        e0, secs0 = expect_fault(conn, '08006', (r'timed out',), number)
        q(conn, 'RESET line_status.max_retries')
        chk.check(re.search('reading the answer', e0.diag.message_detail or ''),
                  'max_retries 0 on a kept-alive connection: the detail does not say "reading the answer": %r'
                  % e0.diag.message_detail)
        q(conn, 'RESET line_status.timeout')

        good_lookup(conn, chk, 'after')
        chk.check(cache_rows(conn, number) == 0, 'line_status_cache has a row for %s' % number)
        failure_not_cached(conn, chk, number, '08006', ("SET line_status.timeout = '200ms'",))
        q(conn, "SET line_status.timeout = '200ms'")
        mem = memory_flat(conn, chk, number, number, '08006')
        q(conn, 'RESET line_status.timeout')
        chk.check(inflight_zero(3.0), 'slow connections were left open after the repeated faults')
        note('error after %.0f ms, %d request(s), %d paid; %s' % (secs * 1000, made, paid, mem))
    finally:
        conn.close()
    chk.done()


def test_drip_one_byte_per_second():
    """+14155558008 (headers and the first byte at once, then 1 byte/s):
    see timeout_fault; the one request is paid."""
    timeout_fault(DRIP, 1)


def test_hang_after_headers():
    """+14155557001 (status line and headers, then nothing): see
    timeout_fault; the stand-in does not count it as paid."""
    timeout_fault(HANG_AFTER_HEADERS, 0)


# ---------------------------------------------------------------- bulk

def test_faults_in_bulk_not_cached():
    """One bulk lookup of 20 good numbers and every answer fault, with
    on_error = 'unknown', max_retries 0 and timeout 1s: each fault row is
    status unknown with its SQLSTATE in response and a detail that says
    what happened, and was asked exactly once (max_retries 0), every good
    row is right;
    the good numbers are cached and the faults are not; the same bulk again
    asks the API for every fault and for no good number."""
    faults = {BAD_JSON: ('38000', 'not valid JSON'), HTML_200: ('38000', 'not valid JSON'),
              TRUNCATED: ('08006', 'closed'), BODY_8MB: ('38000', 'larger than'),
              BODY_50MB: ('38000', 'larger than'), DROPPED: ('08006', 'empty reply|connection died|closed'),
              DRIP: ('08006', 'timed out .* reading the answer'),
              HANG_AFTER_HEADERS: ('08006', 'timed out .* reading the answer')}
    good = [fresh_number() for _ in range(20)]
    arr = good[:10] + list(faults) + good[10:]
    chk = Checks()
    conn = connect()
    try:
        setup(conn, *(good + list(faults)))
        q(conn, "SET line_status.on_error = 'unknown'")
        q(conn, 'SET line_status.max_retries = 0')
        q(conn, "SET line_status.timeout = '1s'")
        per_run = []
        for run in (1, 2):
            standin_reset()
            t0 = time.monotonic()
            rows = q(conn, 'SELECT input, phone_number, status::text, valid, cached, response '
                           'FROM line_status(%s::text[])', (arr,))
            secs = time.monotonic() - t0
            st = standin_stats(summary=False)
            per_run.append((secs, st['requests'],
                            ' '.join('%s x%d' % (n[-4:], number_requests(st, n))
                                     for n in faults if number_requests(st, n) > 1) or 'none'))
            chk.check(len(rows) == len(arr), 'run %d: %d rows for %d elements' % (run, len(rows), len(arr)))
            for inp, phone, status, valid, cached, resp in rows:
                if inp in faults:
                    code, said = faults[inp]
                    chk.check(status == 'unknown' and valid is None and cached is False and
                              isinstance(resp, dict) and resp.get('sqlstate') == code and
                              re.search(said, resp.get('detail', ''), re.I),
                              'run %d, %s: expected a failure with SQLSTATE %s and a detail saying /%s/, got %r'
                              % (run, inp, code, said, (status, valid, cached, resp)))
                    made = number_requests(st, inp)
                    chk.check(made >= 1, 'run %d: no request for the fault %s (served from the cache?)'
                              % (run, inp))
                    chk.check(made <= 1, 'run %d, max_retries 0: %d requests for the fault %s, expected 1'
                              % (run, made, inp))
                else:
                    chk.check((phone, status, valid, cached) ==
                              (inp, STATUS_BY_DIGIT[int(inp[-1])], True, run == 2),
                              'run %d, good number %s: %r' % (run, inp, (phone, status, valid, cached)))
            if run == 2:
                asked = [n for n in good if number_requests(st, n)]
                chk.check(not asked, 'run 2 asked the API again for %d cached good numbers' % len(asked))
            cached = set(n for (n,) in q(conn, 'SELECT phone_number FROM line_status_cache '
                                               'WHERE phone_number = ANY(%s)', (arr,)))
            chk.check(cached == set(good), 'run %d: cached %d of %d good numbers and the faults %r'
                      % (run, len(cached & set(good)), len(good), sorted(cached & set(faults))))
        q(conn, 'RESET line_status.on_error')
        q(conn, 'RESET line_status.max_retries')
        q(conn, 'RESET line_status.timeout')
        good_lookup(conn, chk, 'after')
        note('run 1 %.2f s, %d requests (faults asked more than once: %s); '
             'run 2 %.2f s, %d requests (faults asked more than once: %s)' % (per_run[0] + per_run[1]))
    finally:
        conn.close()
    chk.done()
