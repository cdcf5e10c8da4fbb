"""Helpers shared by the scenario tests (test/scenarios/test_*.py) and the
benchmarks (test/bench/).

Environment (set by test/lib.sh): PGHOST, PGPORT, PGUSER, PGDATABASE,
STANDIN_URL, STANDIN_TLS_URL, LS_CA_FILE, LS_PGDATA, LS_WORK.  libpq reads
the PG* variables itself; the scenario tests run in PGDATABASE (postgres),
not in contrib_regression, which belongs to the pg_regress suites.

Standard library plus psycopg2 only.
"""
import base64
import itertools
import json
import os
import random
import re
import threading
import time
import urllib.request

import functools

import psycopg2

# The credentials test/lib.sh configures and the stand-in accepts.
TEST_SID = 'AC00000000000000000000000000000001'
TEST_TOKEN = 'test-auth-token-0123456789abcdef'
# The same secret as it travels in the Authorization header.
TEST_TOKEN_B64 = base64.b64encode((TEST_SID + ':' + TEST_TOKEN).encode()).decode()

# Stand-in scenario numbers (see test/standin/standin.js).
HANG_60S = '+14155557000'       # answers after 60 s
ALWAYS_503 = '+14155555999'
ALWAYS_401 = '+14155558013'


def env(name):
    """An environment variable test/lib.sh sets; a clear error if missing."""
    v = os.environ.get(name)
    if not v:
        raise RuntimeError('%s is not set: run under test/run.sh, or source test/lib.sh '
                           'and start the stand-in and the cluster first' % name)
    return v


# ------------------------------------------------------------------ notes

# Figures a test wants shown: the runner appends them to the test's "ok" or
# "FAIL" line, so that there is still exactly one line per test.
NOTES = []


def note(text):
    NOTES.append(text)


# ------------------------------------------------------------------ PostgreSQL

_extension_ready = False


def ensure_extension():
    """CREATE EXTENSION IF NOT EXISTS line_status in PGDATABASE, once per process."""
    global _extension_ready
    if _extension_ready:
        return
    c = psycopg2.connect(dbname=env('PGDATABASE'), application_name='line_status_setup')
    try:
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute('CREATE EXTENSION IF NOT EXISTS line_status')
    finally:
        c.close()
    _extension_ready = True


def connect(user=None, application_name='line_status_scenarios'):
    """A new autocommit session (a new backend) in PGDATABASE, as PGUSER or user.
    The extension is created first if it is not there yet."""
    ensure_extension()
    kw = {'dbname': env('PGDATABASE'), 'application_name': application_name}
    if user is not None:
        kw['user'] = user
    conn = psycopg2.connect(**kw)
    conn.autocommit = True
    return conn


def q(conn, sql, args=None):
    """Run sql and return all rows (or None for a statement without rows)."""
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall() if cur.description is not None else None


def q1(conn, sql, args=None):
    """Run sql and return the first column of its only row."""
    rows = q(conn, sql, args)
    assert rows is not None and len(rows) == 1, 'expected one row from %r, got %r' % (sql, rows)
    return rows[0][0]


def extension_version(conn):
    """The version of the installed extension files (the control file's
    default_version, installed with the library and compiled into it), not
    the version this database's extension happens to be at."""
    return q1(conn, "SELECT default_version FROM pg_available_extensions WHERE name = 'line_status'")


def has_setting(conn, name):
    return q1(conn, 'SELECT count(*) FROM pg_settings WHERE name = %s', (name,)) == 1


def avoid_cache(conn):
    """For tests that must use one of the stand-in's fixed scenario numbers
    (which other suites may have looked up already): if this build has a
    result cache (line_status.cache_ttl), turn it off for this session, so
    that every call is a real request.  Without the setting, nothing to do."""
    if has_setting(conn, 'line_status.cache_ttl'):
        q(conn, 'SET line_status.cache_ttl = 0')


def error_text(e):
    """Everything a client sees of an error: message, detail, hint, context."""
    parts = [str(e), getattr(e, 'pgerror', None) or '']
    diag = getattr(e, 'diag', None)
    if diag is not None:
        for f in ('message_primary', 'message_detail', 'message_hint', 'context',
                  'internal_query', 'statement_position', 'source_function'):
            parts.append(getattr(diag, f, None) or '')
    return '\n'.join(parts)


class Background(threading.Thread):
    """Run one statement on conn in a thread (psycopg2 releases the GIL while
    it waits), recording the error it raised, if any, and when it ended."""

    def __init__(self, conn, sql, args=None):
        super().__init__(daemon=True)
        self.conn, self.sql, self.args = conn, sql, args
        self.rows = None
        self.error = None
        self.t_start = None
        self.t_end = None

    def run(self):
        self.t_start = time.monotonic()
        try:
            with self.conn.cursor() as cur:
                cur.execute(self.sql, self.args)
                self.rows = cur.fetchall() if cur.description is not None else None
        except Exception as e:          # noqa: BLE001 - recorded for the test
            self.error = e
        finally:
            self.t_end = time.monotonic()


def cancel_backend(ctl, pid):
    """pg_cancel_backend(pid) from session ctl; returns monotonic time just
    before the call (the latency figures are measured from there)."""
    t = time.monotonic()
    ok = q1(ctl, 'SELECT pg_cancel_backend(%s)', (pid,))
    assert ok is True, 'pg_cancel_backend(%d) returned %r' % (pid, ok)
    return t


def wait_until(pred, timeout, interval=0.05):
    """Poll pred() until it is true or timeout seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


# ------------------------------------------------------------------ numbers

# Numbers no other test in this run (nor, very probably, an earlier run) has
# looked up: "+1", an area code from 300..899 picked per run (never 415, the
# stand-in's scenario block, nor 202) and a counter.  This matters because
# answers may be cached (line_status.cache_ttl, in a table that outlives the
# session), so a number looked up before need not cause a request.
# The stand-in answers them with the status given by the last digit:
# 0 active, 1 reachable, 2 unreachable, 3 inactive, 4 unknown (then repeats).
_area = random.randint(300, 899)
_seq = itertools.count(random.randint(0, 500000))


def fresh_number(last_digit=None):
    n = next(_seq) % 1000000
    d = random.randint(0, 9) if last_digit is None else last_digit
    return '+1%03d%06d%d' % (_area, n, d)


def fresh_block():
    """A "+1NNN" prefix for bulk lookups ("+1NNN" || lpad(g::text, 7, '0')):
    an area code picked at random per call, never the one fresh_number()
    uses, nor 415 or 202."""
    while True:
        area = random.randint(300, 899)
        if area != _area:
            return '+1%03d' % area


# ------------------------------------------------------------------ memory

def backend_memory_kb(pid):
    """Resident anonymous memory of process pid, in kB.

    This is the "Anonymous:" line of /proc/<pid>/smaps_rollup (the same
    figure as RssAnon in /proc/<pid>/status, used as a fallback): the
    process's heap, malloc arenas (libcurl and OpenSSL allocate with malloc),
    stack and other private anonymous mappings that are resident.  It
    excludes shared_buffers and the rest of PostgreSQL's shared memory (which
    is shmem, counted as RssShmem) and file-backed pages such as the
    executable and libraries.  The Private_* lines are not used because they
    also count shared-memory pages that only this backend happens to map.
    """
    try:
        with open('/proc/%d/smaps_rollup' % pid) as f:
            for line in f:
                if line.startswith('Anonymous:'):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('RssAnon:'):
                return int(line.split()[1])
    raise RuntimeError('no anonymous memory figure for pid %d' % pid)


def memory_contexts_bytes(conn):
    """Total bytes of this session's own PostgreSQL memory contexts (palloc
    memory only, not malloc); needs a superuser session."""
    return int(q1(conn, 'SELECT sum(total_bytes) FROM pg_backend_memory_contexts'))


# ------------------------------------------------------------------ stand-in

# How the stand-in counts connections: its "connections" counter is
# incremented on every TCP connection either server accepts, the control API
# included; "tls_connections" on every connection to the HTTPS server only.
# We always call the control API over plain HTTP with urllib, which sends
# "Connection: close", so every control call is exactly one more TCP
# connection, counted before the request is answered (a stats answer
# includes its own connection; a reset wipes its own).  We count our control
# calls since our last reset to subtract them: see lookup_connections().
_control_calls_since_reset = None


def _control(path, method='GET', body=None):
    global _control_calls_since_reset
    url = env('STANDIN_URL') + path
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={'Connection': 'close', 'Content-Type': 'application/json'})
    if _control_calls_since_reset is not None:
        _control_calls_since_reset += 1
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def standin_reset():
    """POST /__standin/reset: zero every counter and the per-number scenario
    state (the 429/503-then-success counts).  The in-flight gauge is live and
    is not reset."""
    global _control_calls_since_reset
    _control('/__standin/reset', 'POST', {})
    _control_calls_since_reset = 0


def standin_stats(summary=True):
    """GET /__standin/stats.  summary=False adds per_number and paths."""
    st = _control('/__standin/stats' + ('?summary=1' if summary else ''))
    st['_control_calls'] = _control_calls_since_reset
    return st


def standin_config(**kw):
    """POST /__standin/config (latency_ms, latency_dist, max_inflight)."""
    return _control('/__standin/config', 'POST', kw)


def lookup_connections(stats):
    """TCP connections made to the stand-in since our last reset other than
    our own control-API calls, as of the stats answer given."""
    calls = stats.get('_control_calls')
    if calls is None:
        raise RuntimeError('lookup_connections() needs a standin_reset() first')
    return stats['connections'] - calls


def number_requests(stats, number):
    """Requests the stand-in saw for an E.164 number since the last reset
    (needs standin_stats(summary=False))."""
    return stats['per_number'].get(number, {}).get('requests', 0)


def user_agent_ok(ua, version):
    return re.match(r'^line_status/%s( |$)' % re.escape(version), ua) is not None


# Status the stand-in gives an ordinary number, by its last digit.
STATUS_BY_DIGIT = ('active', 'reachable', 'unreachable', 'inactive', 'unknown') * 2


def expected_status(e164):
    """The status the stand-in answers for an ordinary number."""
    return STATUS_BY_DIGIT[int(e164[-1])]


# British national numbers: US and CA national numbers are rewritten to
# E.164 locally (no alias row); GB ones are sent as they are with
# CountryCode=GB, and the stand-in maps them to +44 and the digits after the
# leading 0.  "07" + a 3-digit prefix picked per run + a counter + the digit
# that picks the status.
_gb_prefix = random.randint(100, 999)
_gb_seq = itertools.count(random.randint(0, 50000))


def fresh_gb():
    """(national number, its E.164 form) of a British number nobody has
    looked up in this run."""
    nat = '07%03d%05d%d' % (_gb_prefix, next(_gb_seq) % 100000, random.randint(0, 9))
    return nat, '+44' + nat[1:]


def server_ready():
    try:
        psycopg2.connect(dbname=env('PGDATABASE'), connect_timeout=2).close()
        return True
    except psycopg2.OperationalError:
        return False


def survives_crash(fn):
    """If the test loses its connection because a backend crashed, wait for
    the server to accept connections again (so that the next tests do not
    fail too) and say so; always put the stand-in's config back."""
    @functools.wraps(fn)
    def wrapper():
        try:
            fn()
        except psycopg2.OperationalError as e:
            if 'server closed the connection unexpectedly' in str(e) or 'recovery mode' in str(e):
                wait_until(server_ready, 60, 0.2)
                raise AssertionError('a backend crashed (see the server log): %s' % str(e).strip()) from e
            raise
        finally:
            standin_config(latency_ms=0, latency_dist='fixed', max_inflight=0)
    return wrapper
