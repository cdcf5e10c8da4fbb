#!/usr/bin/python3
"""End-to-end fuzz of the Twilio answer reader inside a real backend.

A small HTTP server (standard library, 127.0.0.1, a free port) answers every
lookup with a generated answer: a valid Twilio body mutated byte-wise or
structurally (truncated, bytes flipped, types of valid / line_status /
status / error_code / phone_number / country_code swapped, huge and tiny
numbers, deep nesting, \\u0000, lone surrogates, invalid UTF-8, unknown and
duplicate keys, bodies at and past the 256 kB limit), and now and then a
non-200 status with a mutated Twilio error body.  One superuser session
points line_status.api_url at it (SET, this session only), with
line_status.cache_ttl = 0 and line_status.max_retries = 0, and looks up
distinct numbers one by one (and, every --bulk-every lookups, a few at once
through line_status(text[])), alternating line_status.on_error between
error and unknown.

Every lookup must either return its row or raise an ERROR; a lost
connection is a backend crash.  Also counted and reported:
  - internal errors (SQLSTATE class XX: an elog(ERROR) that is a bug);
  - mismatches: the row or the error is not what src/twilio.c's rules say
    for the body that was sent (an oracle computed here);
  - invalid UTF-8 in a returned text/jsonb column or in an error message.
The inputs of a crash are written to --crash-dir (test/fuzz/crashes/).

Environment: libpq's PG* variables (PGHOST, PGPORT, PGUSER, PGDATABASE), as
test/lib.sh sets them; the session must be a superuser.  If the server has
no credentials configured, --sid and --token are SET in the session.

Prints one summary line
    fuzz_reader_e2e: N executions, C crashes
followed by figures; exits 1 on a crash, an internal error or a hang
(--strict also on a mismatch or invalid UTF-8), else 0.

Usage: test/fuzz/fuzz_reader_e2e.py [--count N] [--seed S] [--bulk-every K]
       [--on-error error|unknown|mix] [--cache-ttl S] [--server-log FILE]
       [--crash-dir DIR] [--replay] [--case-log FILE] [--strict] [--verbose]
With --cache-ttl S > 0 every single lookup that gave a row is repeated; a
repeat served from the cache must give the same columns.
"""
import argparse
import collections
import decimal
import glob
import hashlib
import http.server
import json
import os
import random
import re
import socket
import sys
import threading
import time

import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_BODY = 256 * 1024           # LS_HTTP_MAX_BODY in src/http.h
MAX_QUOTED = 200                # twilio.c: bytes of Twilio's message quoted
STATUSES = ('active', 'reachable', 'unreachable', 'inactive', 'unknown')


# ---------------------------------------------------------------- JSON text

class Raw:
    """A JSON fragment emitted verbatim (numbers Python cannot hold, bad escapes)."""

    def __init__(self, text):
        self.text = text


def dumps(v):
    """JSON text of v, where Raw values are emitted as they are; dict keys
    may be Raw too, and a list of pairs stands for an object with
    duplicate keys."""
    if isinstance(v, Raw):
        return v.text
    if v is None:
        return 'null'
    if v is True:
        return 'true'
    if v is False:
        return 'false'
    if isinstance(v, (int, float)):
        return json.dumps(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return '[' + ','.join(dumps(x) for x in v) + ']'
    if isinstance(v, Pairs):
        return '{' + ','.join(dumps(k) + ':' + dumps(x) for k, x in v.items) + '}'
    if isinstance(v, dict):
        return '{' + ','.join(dumps(k) + ':' + dumps(x) for k, x in v.items()) + '}'
    raise TypeError(type(v))


class Pairs:
    """An object with possibly duplicate keys."""

    def __init__(self, items):
        self.items = items


# ---------------------------------------------------------------- answers

def twilio_answer(number, rng):
    """A well-formed Twilio Lookup v2 answer for number, as a dict."""
    kind = rng.random()
    e164 = number if number.startswith('+') else '+44' + number.lstrip('0')
    if kind < 0.12:
        return {'calling_country_code': None, 'country_code': None, 'phone_number': e164,
                'national_format': None, 'valid': False,
                'validation_errors': [rng.choice(['TOO_SHORT', 'TOO_LONG', 'NOT_A_NUMBER',
                                                  'INVALID_BUT_POSSIBLE', 'INVALID_COUNTRY_CODE'])],
                'caller_name': None, 'sim_swap': None, 'call_forwarding': None,
                'line_status': None, 'line_type_intelligence': None, 'identity_match': None,
                'reassigned_number': None, 'sms_pumping_risk': None,
                'phone_number_quality_score': None, 'pre_fill': None,
                'url': 'https://lookups.twilio.com/v2/PhoneNumbers/' + e164}
    status = rng.choice(STATUSES + ('ACTIVE', 'Reachable', 'ported_out'))
    err = rng.choice([None, None, None, 60600, 60601, 60608, 60616])
    return {'calling_country_code': '1' if e164.startswith('+1') else '44',
            'country_code': 'US' if e164.startswith('+1') else 'GB',
            'phone_number': e164, 'national_format': '(415) 555-0100', 'valid': True,
            'validation_errors': None, 'caller_name': None, 'sim_swap': None,
            'call_forwarding': None,
            'line_status': {'status': status, 'error_code': err},
            'line_type_intelligence': None, 'identity_match': None, 'reassigned_number': None,
            'sms_pumping_risk': None, 'phone_number_quality_score': None, 'pre_fill': None,
            'url': 'https://lookups.twilio.com/v2/PhoneNumbers/' + e164}


def twilio_error(status, rng):
    code = {400: 60618, 401: 20003, 403: 20003, 404: 20404, 429: 20429}.get(status, 20500)
    msg = rng.choice(['Authenticate', 'The requested resource was not found',
                      'Too Many Requests', 'Service Unavailable', 'Invalid parameter'])
    return {'code': code, 'message': msg,
            'more_info': 'https://www.twilio.com/docs/errors/%d' % code, 'status': status}


NUMBER_TOKENS = ['0', '-0', '1', '-1', '1.5', '2.5', '-2.5', '0.49999', '60600', '60600.0',
                 '6.06e4', '6.06E+4', '2147483647', '2147483648', '-2147483648', '-2147483649',
                 '2147483647.4', '2147483647.5', '-2147483648.5', '9223372036854775808',
                 '1e9', '1e10', '1e-10', '1e308', '1e309', '1e400', '-1e400', '1e-400',
                 '1e1000', '1e1001', '-1E-1000', '1e-1001', '1e131071', '1e131072', '1e-16383',
                 '1e-16384', '1e1000000', '1e-99999999999999999999', '1E+99999999999999999999',
                 '1e-9223372036854775808', '1e9223372036854775807',
                 '123456789012345678901234567890123456789012345678901234567890',
                 '0.' + '0' * 500 + '1', '1' + '0' * 1000]
STRING_VALUES = list(STATUSES) + ['ACTIVE', 'Unknown', 'UNREACHABLE', 'ported_out', '', ' active',
                                  'active ', 'activ', 'activee', 'actïve', '\u00e9', '\U0001F600',
                                  'x' * 300, 'é' * 150, '+14155550100', 'US', 'null', 'true',
                                  '60600', '\t\n', '"', '\\', '/']
BAD_ESCAPES = ['"\\u0000"', '"a\\u0000b"', '"\\ud800"', '"\\udc00"', '"\\ud800\\u0041"',
               '"\\ud800\\ud800"', '"\\ud83d\\ude00"', '"\\u00"', '"\\x41"', '"\\uZZZZ"',
               '"\\/\\b\\f\\n\\r\\t"', '"\\u00e9"', '"\\uFFFF"', '"\\uFEFF"', '"\\U0041"']


def random_scalar(rng):
    r = rng.random()
    if r < 0.15:
        return None
    if r < 0.3:
        return rng.random() < 0.5
    if r < 0.55:
        return Raw(rng.choice(NUMBER_TOKENS))
    if r < 0.85:
        return rng.choice(STRING_VALUES)
    return Raw(rng.choice(BAD_ESCAPES))


def random_value(rng, depth=0):
    r = rng.random()
    if depth > 3 or r < 0.6:
        return random_scalar(rng)
    if r < 0.8:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(['status', 'error_code', 'a', '', 'valid']): random_value(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}


def nested(rng, depth):
    kind = rng.random()
    if kind < 0.5:
        return Raw('[' * depth + '1' + ']' * depth)
    if kind < 0.8:
        return Raw('{"a":' * depth + '1' + '}' * depth)
    return Raw('[{"status":' * depth + '"active"' + '}]' * depth)


def mutate_structure(doc, rng):
    """Change the decoded answer: swap a field's type, drop it, add keys."""
    fields = ['valid', 'line_status', 'phone_number', 'country_code', 'status', 'error_code']
    for _ in range(rng.randint(1, 3)):
        op = rng.random()
        f = rng.choice(fields)
        target = doc
        if f in ('status', 'error_code'):
            ls = doc.get('line_status')
            if not isinstance(ls, dict):
                ls = {'status': 'active', 'error_code': None}
                doc['line_status'] = ls
            target = ls
        if op < 0.55:
            target[f] = random_value(rng)
        elif op < 0.65:
            target.pop(f, None)
        elif op < 0.75:
            target[f] = nested(rng, rng.choice([1, 2, 10, 100, 1000, 5000]))
        elif op < 0.85:
            target[rng.choice(['carrier', 'extra', '', 'Valid', 'VALID', 'line_status ',
                               'é', 'x' * 500])] = random_value(rng)
        elif op < 0.92:
            # duplicate key: jsonb keeps the last one
            items = list(target.items()) + [(f, random_value(rng))]
            if target is doc:
                return Pairs(items)
            doc['line_status'] = Pairs(items)
            return doc
        else:
            target[Raw(rng.choice(BAD_ESCAPES))] = random_value(rng)
    return doc


INTERESTING_BYTES = [b'\x00', b'\xff', b'\xc3', b'\xc3\xa9', b'\xed\xa0\x80', b'\xf4\x90\x80\x80',
                     b'\xc0\xaf', b'\xe0\x80\xaf', b'"', b'\\', b'{', b'}', b'[', b']', b',', b':',
                     b'\\u0000', b'\\ud800', b'\x7f', b'\x1f', b'\n', b' ', b'-', b'e', b'.',
                     b'\xef\xbb\xbf', b'nul', b'tru']


def mutate_bytes(body, rng):
    """Byte-level mutations of an encoded body."""
    b = bytearray(body)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        n = len(b)
        if op < 0.2 and n:
            del b[rng.randrange(n):]                        # truncate
        elif op < 0.35 and n:
            i = rng.randrange(n)
            b[i] ^= 1 << rng.randrange(8)                   # bit flip
        elif op < 0.55:
            i = rng.randrange(n + 1)
            b[i:i] = rng.choice(INTERESTING_BYTES)          # insert
        elif op < 0.7 and n:
            i = rng.randrange(n)
            b[i:i + rng.randint(1, 4)] = rng.choice(INTERESTING_BYTES)   # replace
        elif op < 0.8 and n:
            i = rng.randrange(n)
            del b[i:i + rng.randint(1, 16)]                 # delete
        elif op < 0.9 and n:
            i = rng.randrange(n)
            j = min(n, i + rng.randint(1, 64))
            b[i:i] = b[i:j]                                 # duplicate
        else:
            b[rng.randrange(n + 1):rng.randrange(n + 1)] = bytes(rng.randrange(256)
                                                                  for _ in range(rng.randint(1, 8)))
    return bytes(b)


def special_body(rng):
    """Whole bodies chosen for their shape rather than mutated."""
    k = rng.randrange(20)
    if k == 0:
        return b''
    if k == 1:
        return rng.choice([b'null', b'[]', b'{}', b'"x"', b'1', b'true', b'[1,2,3]', b' ', b'\n{}\n'])
    if k == 2:
        return b'[' * 150000 + b']' * 150000                          # too deep, > 256 kB
    if k == 3:
        return b'[' * 120000 + b']' * 120000                          # deep, < 256 kB
    if k == 4:
        return b'{"valid":true,"a":' + b'[' * 5000 + b']' * 5000 + b'}'
    if k == 5:
        pad = MAX_BODY - len(b'{"valid":true,"p":""}') + rng.choice([-1, 0, 1])
        return b'{"valid":true,"p":"' + b'x' * pad + b'"}'            # at the limit
    if k == 6:
        return b'{"valid":true,"p":"' + b'x' * (MAX_BODY + 4096) + b'"}'
    if k == 7:
        keys = ','.join('"k%d":%d' % (i, i) for i in range(rng.choice([1000, 10000])))
        return ('{"valid":true,' + keys + '}').encode()
    if k == 8:
        return b'{"valid":true,"line_status":{"status":"active","error_code":' + \
            rng.choice(NUMBER_TOKENS).encode() + b'}}'
    if k == 9:
        return b'{"valid":true,"line_status":{"status":"' + 'é'.encode() * 60000 + b'"}}'
    if k == 10:
        return b'\xef\xbb\xbf{"valid":true}'
    if k == 11:
        return b'{"valid":true}' + rng.choice([b' ', b'x', b'{}', b'\x00', b',', b'\xff'])
    if k == 12:
        return b'{"valid":true,"line_status":' + nested(rng, rng.choice([10, 1000, 20000])).text.encode() + b'}'
    if k == 13:
        return b'{"valid":true,"phone_number":' + rng.choice(BAD_ESCAPES).encode() + b'}'
    if k == 14:
        return rng.choice([b'<html>502 Bad Gateway</html>', b'{"valid":true', b'{"valid":tru',
                           b'{"valid":True}', b"{'valid':true}", b'{"valid":NaN}',
                           b'{"valid":true,}', b'{valid:true}', b'{"valid":true}}'])
    if k == 15:
        return b'{"valid":false,"line_status":{"status":null,"error_code":null},"phone_number":null,"country_code":null}'
    if k == 16:
        return ('{"valid":true,"country_code":"' + '\U0001F600' * rng.randint(1, 3000) + '"}').encode()
    if k == 17:
        return b'{"valid":true,"line_status":{"status":"active","error_code":1e1000000}}'
    if k == 18:
        return b'{"valid":true,"line_status":{"status":"active","error_code":' + \
            b'1' * rng.choice([100, 1000, 131072, 200000]) + b'}}'
    return b'{"valid":true,"x":"\\ud800"}'


class Case:
    """One answer: HTTP status, headers, body, and how to misbehave."""

    def __init__(self, status, body, ctype='application/json', mode='normal', retry_after=None):
        self.status = status
        self.body = body
        self.ctype = ctype
        self.mode = mode          # normal | chunked | short | close
        self.retry_after = retry_after

    def describe(self):
        return {'status': self.status, 'mode': self.mode, 'content_type': self.ctype,
                'retry_after': self.retry_after, 'body_len': len(self.body)}


def make_case(number, rng, bulk):
    r = rng.random()
    mode = 'normal'
    x = rng.random()
    if x < 0.03:
        mode = 'chunked'
    elif x < 0.045:
        mode = 'short'
    elif x < 0.05:
        mode = 'close'
    ctype = rng.choice(['application/json'] * 8 + ['text/html', 'application/json; charset=latin1', ''])
    if r < 0.12:
        statuses = [400, 401, 403, 404, 500, 503, 301, 204, 418, 302]
        if not bulk:
            statuses.append(429)  # in a bulk lookup 429s are retried (with backoff)
        status = rng.choice(statuses)
        err = twilio_error(status, rng)
        y = rng.random()
        if y < 0.3:
            # a message whose 200th byte falls inside a multibyte character
            err['message'] = 'm' * (MAX_QUOTED - 1 - rng.randint(0, 2)) + rng.choice(['é', '€', '\U0001F600']) * 3
        elif y < 0.5:
            err['code'] = random_value(rng)
        elif y < 0.6:
            err['message'] = random_value(rng)
        body = dumps(err).encode()
        if rng.random() < 0.3:
            body = mutate_bytes(body, rng)
        if status == 204:
            body = b''          # a 204 has no body; bytes here would poison the connection
            mode = 'normal'     # and libcurl ignores its Content-Length
        ra = rng.choice([None, None, '0', '1', '-1', 'abc', '99999999999999999999', ' 2', 'Wed, 21 Oct 2015 07:28:00 GMT'])
        return Case(status, body, ctype, mode, ra)
    if r < 0.22:
        return Case(200, special_body(rng), ctype, mode)
    doc = twilio_answer(number, rng)
    if rng.random() < 0.6:
        doc = mutate_structure(doc, rng)
    body = dumps(doc).encode()
    if rng.random() < 0.45:
        body = mutate_bytes(body, rng)
    return Case(200, body, ctype, mode)


# ---------------------------------------------------------------- the server

class Answers:
    """number -> Case, filled by the client before each query."""

    def __init__(self):
        self.lock = threading.Lock()
        self.cases = {}
        self.requests = 0
        self.unknown = 0

    def put(self, key, case):
        with self.lock:
            self.cases[key] = case

    def get(self, key):
        with self.lock:
            self.requests += 1
            c = self.cases.get(key)
            if c is None:
                self.unknown += 1
            return c


ANSWERS = Answers()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def setup(self):
        super().setup()
        # headers and body go out in separate writes: without this, Nagle's
        # algorithm and delayed ACKs add 40 ms to every answer
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):      # quiet
        pass

    def do_GET(self):
        m = re.match(r'^/v2/PhoneNumbers/([^/?]+)(?:\?(.*))?$', self.path)
        key = None
        if m:
            seg = m.group(1).replace('%2B', '+').replace('%2b', '+')
            country = ''
            for part in (m.group(2) or '').split('&'):
                if part.startswith('CountryCode='):
                    country = part[len('CountryCode='):]
            key = (seg, country)
        case = ANSWERS.get(key) if key else None
        if case is None:
            case = Case(404, b'{"code":20404,"message":"not a fuzz number","status":404}')
        try:
            self.answer(case)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def answer(self, case):
        if case.mode == 'close':
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(case.status)
        if case.ctype:
            self.send_header('Content-Type', case.ctype)
        if case.retry_after is not None:
            self.send_header('Retry-After', case.retry_after)
        if case.mode == 'chunked':
            self.send_header('Transfer-Encoding', 'chunked')
            self.end_headers()
            body = case.body
            step = max(1, len(body) // 3)
            for i in range(0, len(body), step):
                chunk = body[i:i + step]
                self.wfile.write(b'%x\r\n%s\r\n' % (len(chunk), chunk))
            self.wfile.write(b'0\r\n\r\n')
            return
        if case.mode == 'short':
            self.send_header('Content-Length', str(len(case.body) + 100))
            self.end_headers()
            self.wfile.write(case.body)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_header('Content-Length', str(len(case.body)))
        self.end_headers()
        self.wfile.write(case.body)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass                    # the client hung up: that is its business


def start_server():
    srv = Server(('127.0.0.1', 0), Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    return srv


# ---------------------------------------------------------------- the oracle

class Unparsable(Exception):
    pass


class OutOfRange(Exception):
    """A number numeric_in() may refuse (22003): not modelled."""


class HugeNumber(Exception):
    """A number check_json() refuses (src/twilio.c, check_number): more
    than 1,000 characters, or an exponent beyond +-1,000."""


def huge_number(tok):
    """check_number()'s rule, with Python's unbounded integers."""
    if len(tok) > 1000:
        return True
    m = re.search(r'[eE]([+-]?)(\d+)$', tok)
    return m is not None and int(m.group(2)) > 1000


class TooDeep(Exception):
    """Nested deeper than Python's json module goes: not modelled."""


def _reject_constant(name):
    raise Unparsable(name)


def _no_bad_strings(v):
    if isinstance(v, str):
        if '\x00' in v or any(0xD800 <= ord(ch) <= 0xDFFF for ch in v):
            raise Unparsable('string')
    elif isinstance(v, list):
        for x in v:
            _no_bad_strings(x)
    elif isinstance(v, dict):
        for k, x in v.items():
            _no_bad_strings(k)
            _no_bad_strings(x)


def _pairs_hook(pairs):
    # every key and value, also of duplicates that the dict drops: check_json
    # and jsonb_in read them all
    for k, v in pairs:
        _no_bad_strings(k)
        _no_bad_strings(v)
    return dict(pairs)          # the last duplicate wins, as in jsonb


def decode_like_jsonb(body):
    """The body as jsonb_in() would read it, or Unparsable when the reader
    must reject it (or it is outside what this oracle models: numbers that
    numeric cannot hold, nesting deeper than the stack allows)."""
    try:
        text = body.decode('utf-8', 'strict')
    except UnicodeDecodeError:
        raise Unparsable('utf8')
    if not text or '\x00' in text or text[0] == '\ufeff':
        raise Unparsable('empty/nul/bom')
    # Python's float/int parsing differs from numeric's limits: keep numbers
    # as text and look at them one by one.
    numbers = []
    huge = []

    def number(tok):
        if huge_number(tok):
            huge.append(tok)
            return decimal.Decimal(0)
        try:
            d = decimal.Decimal(tok)
        except decimal.InvalidOperation:
            raise OutOfRange()  # an exponent past what decimal (or numeric) holds
        numbers.append(d)
        return d

    try:
        v = json.loads(text, parse_float=number, parse_int=number,
                       parse_constant=_reject_constant, object_pairs_hook=_pairs_hook)
    except RecursionError:
        raise TooDeep()
    except ValueError:
        raise Unparsable('json')
    _no_bad_strings(v)
    # numbers of dropped duplicates count too: check_json and numeric_in
    # read each one
    if huge:
        raise HugeNumber(huge[0][:40])
    if any(not numeric_ok(d) for d in numbers):
        raise OutOfRange()
    return v


def numeric_ok(d):
    """Is this number well inside what numeric_in() can hold (131072 digits
    before the point, 16383 after)?  Outside, or near the edge, jsonb_in
    may raise 22003, which the oracle does not predict."""
    if not d.is_finite():
        return False
    t = d.as_tuple()
    return t.exponent + len(t.digits) <= 100000 and t.exponent >= -16000


def expect_200(body, number):
    """('row', fields) or ('bad', None) or ('skip', why) for a 200 answer."""
    try:
        doc = decode_like_jsonb(body)
    except Unparsable as e:
        return ('bad-or-error', str(e))
    except TooDeep:
        return ('skip', 'too deep for Python')
    except OutOfRange:
        return ('skip', 'numeric range')
    except HugeNumber:
        return ('bad', None)
    if not isinstance(doc, dict):
        return ('bad', None)
    fields = {}
    v = doc.get('valid', KeyError)
    if not isinstance(v, bool):
        return ('bad', None)
    fields['valid'] = v
    pn = doc.get('phone_number')
    if isinstance(pn, str):
        fields['phone_number'] = pn
    elif pn is None:
        fields['phone_number'] = number
    else:
        return ('bad', None)
    cc = doc.get('country_code')
    if isinstance(cc, str):
        fields['country_code'] = cc
    elif cc is None:
        fields['country_code'] = None
    else:
        return ('bad', None)
    fields['status'] = None
    fields['error_code'] = None
    ls = doc.get('line_status')
    if ls is None:
        return ('row', fields)
    if not isinstance(ls, dict):
        return ('bad', None)
    st = ls.get('status')
    if isinstance(st, str):
        low = st.lower()
        fields['status'] = low if low in STATUSES and st.isascii() else 'unknown'
    elif st is not None:
        return ('bad', None)
    ec = ls.get('error_code')
    if isinstance(ec, decimal.Decimal):
        r = ec.quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP,
                        context=decimal.Context(prec=200000, Emax=999999, Emin=-999999))
        if not -2 ** 31 <= r <= 2 ** 31 - 1:
            return ('bad', None)
        fields['error_code'] = int(r)
    elif ec is not None:
        return ('bad', None)
    return ('row', fields)


def expect_failure(case):
    """(sqlstate, fatal, code) for a non-200 answer or a transport failure."""
    if case.mode == 'close':
        return ('08006', False, 0)     # no HTTP answer: error_code stays NULL
    if len(case.body) > MAX_BODY:
        return ('38000', False, 0)     # CURLE_FILESIZE_EXCEEDED, before the body ends
    if case.mode == 'short':
        return ('08006', False, 0)     # CURLE_PARTIAL_FILE: error_code stays NULL
    s = case.status
    code = 0
    doc = None
    try:
        doc = decode_like_jsonb(case.body)
        if isinstance(doc, dict) and isinstance(doc.get('code'), decimal.Decimal):
            c = doc['code']
            if numeric_ok(c):
                r = c.quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP,
                               context=decimal.Context(prec=200000, Emax=999999, Emin=-999999))
                if -2 ** 31 <= r <= 2 ** 31 - 1:
                    code = int(r)
            else:
                code = None     # jsonb_in raises: not modelled
    except (Unparsable, HugeNumber):
        doc = None              # check_json refuses it: the detail has no code
    except (TooDeep, OutOfRange):
        doc = None
        code = None             # jsonb_in may raise 54001 / 22003: not modelled
    if code == 0:
        code = s
    if s in (401, 403):
        return ('28000', True, code)
    if s == 429:
        return ('53400', False, code)
    if s == 400:
        return ('22023', False, code)
    return ('38000', False, code)


# ---------------------------------------------------------------- the client

def valid_utf8(b):
    try:
        b.decode('utf-8', 'strict')
        return True
    except UnicodeDecodeError:
        return False


COLS = ('phone_number, status::text, error_code, valid, country_code, checked_at, cached, '
        'textsend(response::text) AS response')


class Fuzzer:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.stats = collections.Counter()
        self.sqlstates = collections.Counter()
        self.findings = collections.defaultdict(list)
        self.crash_files = []
        self.slowest = []
        self.srv = start_server()
        self.url = 'http://127.0.0.1:%d' % self.srv.server_address[1]
        self.conn = None
        self.pid = None
        self.log = open(args.case_log, 'w') if args.case_log else None
        # Numbers nobody looked up before (the cache outlives the run): not
        # from the seed, which only decides the answers.
        sysrng = random.SystemRandom()
        area = sysrng.randint(200, 999)
        self.numbers = iter('+1%03d%07d' % (area, i) for i in
                            range(sysrng.randint(0, 9000000), 10 ** 7))
        self.gb_numbers = iter('07%09d' % i for i in range(sysrng.randint(0, 10 ** 8), 10 ** 9))

    # -- session
    def connect(self):
        self.conn = psycopg2.connect(dbname=os.environ.get('PGDATABASE', 'postgres'),
                                     application_name='line_status_fuzz_e2e')
        self.conn.autocommit = True
        with self.conn.cursor() as cur:
            cur.execute('CREATE EXTENSION IF NOT EXISTS line_status')
            cur.execute('SELECT rolsuper FROM pg_roles WHERE rolname = current_user')
            if not cur.fetchone()[0]:
                raise SystemExit('fuzz_reader_e2e: needs a superuser session (line_status.api_url is superuser-only)')
            cur.execute('SELECT pg_backend_pid()')
            self.pid = cur.fetchone()[0]
            cur.execute('SET line_status.api_url = %s', (self.url,))
            cur.execute('SET line_status.cache_ttl = %s', (self.args.cache_ttl,))
            cur.execute('SET line_status.max_retries = 0')
            cur.execute('SET line_status.timeout = 10000')
            cur.execute("SET statement_timeout = '60s'")
            cur.execute('SELECT current_setting(%s, true)', ('line_status.account_sid',))
            sid = cur.fetchone()[0]
            if not sid:
                cur.execute('SET line_status.account_sid = %s', (self.args.sid,))
                cur.execute('SET line_status.auth_token = %s', (self.args.token,))

    def alive(self):
        """Is our backend still the same live process?"""
        if self.conn is None or self.conn.closed:
            return False
        try:
            with self.conn.cursor() as cur:
                cur.execute('SELECT pg_backend_pid()')
                return cur.fetchone()[0] == self.pid
        except psycopg2.Error:
            return False

    def set_on_error(self, mode):
        with self.conn.cursor() as cur:
            cur.execute('SET line_status.on_error = %s', (mode,))

    # -- cases
    def record_case(self, key, case, i):
        if self.log:
            self.log.write(json.dumps({'i': i, 'number': key[0], 'country': key[1],
                                       **case.describe(),
                                       'body_sha1': hashlib.sha1(case.body).hexdigest(),
                                       'body_head': case.body[:200].decode('latin1')}) + '\n')
            self.log.flush()

    def save_crash(self, cases, sql, err):
        os.makedirs(self.args.crash_dir, exist_ok=True)
        for key, case in cases:
            h = hashlib.sha1(case.body).hexdigest()[:16]
            base = os.path.join(self.args.crash_dir, 'e2e-%s' % h)
            with open(base + '.body', 'wb') as f:
                f.write(case.body)
            with open(base + '.json', 'w') as f:
                json.dump({'number': key[0], 'country': key[1], 'sql': sql, 'error': str(err),
                           'seed': self.args.seed, **case.describe()}, f, indent=1)
            self.crash_files.append(base + '.body')

    def finding(self, kind, text):
        self.findings[kind].append(text)
        if self.args.verbose:
            print('  %s: %s' % (kind, text), flush=True)

    def timed(self, t0, cases):
        secs = time.monotonic() - t0
        self.slowest.append((secs, ['%d %s %d bytes %r' % (c.status, c.mode, len(c.body), c.body[:40])
                                    for _, c in cases]))
        self.slowest.sort(key=lambda x: -x[0])
        del self.slowest[3:]

    # -- one statement
    def run(self, sql, params, cases):
        """Execute; returns ('row', rows) or ('error', exc) or ('crash', exc)."""
        self.stats['executions'] += 1
        t0 = time.monotonic()
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql, params)
                rows = cur.fetchall()
            self.timed(t0, cases)
            return ('row', rows)
        except psycopg2.Error as e:
            self.timed(t0, cases)
            if e.pgcode is not None and self.alive():
                if e.pgcode == '57014':
                    self.stats['hangs'] += 1
                    self.finding('hang', 'statement timeout after %.0f s: %s' % (time.monotonic() - t0, sql))
                return ('error', e)
            return ('crash', e)
        except UnicodeDecodeError as e:
            # psycopg2 could not decode what the server sent
            if self.alive():
                self.finding('invalid UTF-8', 'client could not decode: %s' % e)
                return ('error', e)
            return ('crash', e)

    def crashed(self, sql, cases, err):
        self.stats['crashes'] += 1
        self.finding('crash', '%s -> %s' % (sql, str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__))
        self.save_crash(cases, sql, err)
        # wait for the server to come back after its crash restart
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.connect()
                return
            except psycopg2.Error:
                time.sleep(0.5)
        raise SystemExit('fuzz_reader_e2e: the server did not come back after a crash')

    # -- checks
    READER_SQLSTATES = {'38000', '08006', '08001', '22023', '28000', '53400'}

    def first_line(self, e):
        msg = getattr(e, 'pgerror', None) or str(e)
        lines = [ln for ln in msg.strip().splitlines() if ln.strip()]
        return lines[0] if lines else type(e).__name__

    def check_error(self, e, on_error, cases, exps):
        """A statement raised e; cases/exps: what was sent and expected."""
        code = getattr(e, 'pgcode', None)
        self.sqlstates[code or 'client'] += 1
        where = '; '.join('HTTP %d %s body %r' % (c.status, c.mode, c.body[:120]) for _, c in cases)
        if code and code.startswith('XX'):
            self.stats['internal_errors'] += 1
            self.finding('internal error', '%s %s (%s)' % (code, self.first_line(e), where))
        msg = getattr(e, 'pgerror', None) or ''
        if '\ufffd' in msg:
            self.finding('invalid UTF-8', 'error message: %r' % msg[:300])
        if code and code not in self.READER_SQLSTATES:
            # not one of the reader's own errors: it came from deeper down
            # (jsonb_in, numeric_in, the stack check), and on_error = unknown
            # cannot turn it into a row
            self.finding('foreign error', 'on_error=%s: %s %s (%s)' % (on_error, code, self.first_line(e), where[:300]))
        if any(x is None for x in exps):
            return
        wanted = set()
        for kind, want in exps:
            if kind == 'error':
                wanted |= want
        if not wanted:
            self.finding('mismatch', 'wanted rows, got SQLSTATE %s: %s (%s)' % (code, self.first_line(e), where[:300]))
        elif code not in wanted:
            self.finding('mismatch', 'wanted SQLSTATE %s, got %s: %s (%s)' % (
                '/'.join(sorted(wanted)), code, self.first_line(e), where[:300]))

    def check_rows(self, rows, on_error, cases, exps):
        """The statement returned rows, one per case, in order."""
        if len(rows) != len(cases):
            self.finding('mismatch', '%d rows for %d numbers' % (len(rows), len(cases)))
            return
        predictable = all(x is not None for x in exps)
        if predictable and any(kind == 'error' for kind, _ in exps):
            self.finding('mismatch', 'wanted SQLSTATE %s, got rows (%s)' % (
                '/'.join(sorted(set().union(*[w for k, w in exps if k == 'error']))),
                '; '.join('HTTP %d %s body %r' % (c.status, c.mode, c.body[:120]) for _, c in cases)[:400]))
            return
        for row, (key, case), exp in zip(rows, cases, exps):
            phone, status, error_code, valid, country, checked_at, cached, response = row[-8:]
            response = bytes(response) if response is not None else None
            if response is not None and not valid_utf8(response):
                self.finding('invalid UTF-8', 'response column of a %d answer: %r' % (case.status, response[:300]))
            if exp is None or exp[0] != 'row':
                continue
            got = {'phone_number': phone, 'status': status, 'error_code': error_code,
                   'valid': valid, 'country_code': country}
            for k, v in exp[1].items():
                if got[k] != v:
                    self.finding('mismatch', '%s: wanted %r, got %r (HTTP %d %s, body %r; response %r)' % (
                        k, v, got[k], case.status, case.mode, case.body[:1000],
                        (response or b'')[:300]))
                    break

    def expectation(self, case, number, on_error):
        """What the lookup must give: ('row', fields) / ('error', {sqlstates})
        / None when the oracle does not know (or failed itself: counted)."""
        try:
            return self._expectation(case, number, on_error)
        except Exception as e:     # noqa: BLE001 - the oracle's bug, not the extension's
            self.stats['oracle_errors'] += 1
            self.finding('oracle error', '%s: %s (body %r)' % (type(e).__name__, e, case.body[:200]))
            return None

    def _expectation(self, case, number, on_error):
        if case.mode in ('close', 'short') or case.status != 200 or len(case.body) > MAX_BODY:
            sqlstate, fatal, code = expect_failure(case)
            if code is None:
                return None
            if on_error == 'error' or fatal:
                return ('error', {sqlstate})
            return ('row', {'status': 'unknown', 'error_code': code or None, 'valid': None,
                            'phone_number': None, 'country_code': None})
        kind, fields = expect_200(case.body, number)
        if kind == 'skip':
            return None
        if kind == 'bad-or-error':
            # Python cannot read it: check_json must refuse it (38000), or
            # the stack check stops it (54001) first
            return ('error', {'38000', '54001'}) if on_error == 'error' else None
        if kind == 'bad':
            if on_error == 'error':
                return ('error', {'38000'})
            return ('row', {'status': 'unknown', 'error_code': 200, 'valid': None,
                            'phone_number': None, 'country_code': None})
        return ('row', fields)

    # -- the loop
    def single(self, i, on_error):
        national = self.rng.random() < 0.1
        if national:
            number, country = next(self.gb_numbers), 'GB'
        else:
            number, country = next(self.numbers), ''
        case = make_case(number, self.rng, bulk=False)
        key = (number, country)
        ANSWERS.put(key, case)
        self.record_case(key, case, i)
        sql = 'SELECT %s FROM line_status(%%s, %%s)' % COLS
        params = (number, country or None)
        cases = [(key, case)]
        exps = [self.expectation(case, number, on_error)]
        outcome, val = self.run(sql, params, cases)
        if outcome == 'crash':
            self.crashed('line_status(%r, %r)' % params, cases, val)
        elif outcome == 'error':
            self.check_error(val, on_error, cases, exps)
        else:
            self.stats['rows'] += len(val)
            self.check_rows(val, on_error, cases, exps)
            if self.args.cache_ttl > 0:
                self.again(sql, params, cases, val[0])

    def again(self, sql, params, cases, first):
        """With the cache on: the same lookup again; if it comes from the
        cache, it must give what the first one gave."""
        outcome, val = self.run(sql, params, cases)
        if outcome == 'crash':
            self.crashed('line_status(%r, %r) again' % params, cases, val)
            return
        if outcome == 'error':
            self.check_error(val, 'error', cases, [None])
            return
        row = val[0]
        if row[6]:
            self.stats['cache_hits'] += 1
            for k, a, b in zip(('phone_number', 'status', 'error_code', 'valid', 'country_code'),
                               first[:5], row[:5]):
                if k == 'phone_number' and not params[1]:
                    # an E.164 lookup is cached under the number asked for,
                    # and a cached row gives that number, whatever
                    # phone_number Twilio's answer had
                    if b != params[0]:
                        self.finding('mismatch', 'from the cache phone_number is %r, asked %r' % (b, params[0]))
                    elif a != b:
                        self.stats['cache_phone_differs'] += 1
                    continue
                if a != b:
                    self.finding('mismatch', 'from the cache %s is %r, was %r (body %r)' % (
                        k, b, a, cases[0][1].body[:300]))

    def bulk(self, i, on_error):
        n = self.rng.randint(2, 6)
        nums = [next(self.numbers) for _ in range(n)]
        cases = []
        for num in nums:
            case = make_case(num, self.rng, bulk=True)
            key = (num, '')
            ANSWERS.put(key, case)
            self.record_case(key, case, i)
            cases.append((key, case))
        exps = [self.expectation(c, k[0], on_error) for k, c in cases]
        # line_status(text[]) returns (input, the columns of line_status_result)
        sql = ('SELECT input, %s FROM line_status(ARRAY[%s]::text[])'
               % (COLS, ','.join(['%s'] * n)))
        outcome, val = self.run(sql, nums, cases)
        self.stats['bulk_statements'] += 1
        if outcome == 'crash':
            self.crashed('line_status(ARRAY%r)' % (nums,), cases, val)
        elif outcome == 'error':
            self.check_error(val, on_error, cases, exps)
        else:
            self.stats['rows'] += len(val)
            self.check_rows(val, on_error, cases, exps)

    def replay(self, paths):
        """Saved crash inputs (e2e-*.json beside e2e-*.body): each once, as
        a single lookup in on_error = error mode, then in unknown mode."""
        for meta_path in paths:
            with open(meta_path) as f:
                meta = json.load(f)
            with open(meta_path[:-len('.json')] + '.body', 'rb') as f:
                body = f.read()
            case = Case(meta['status'], body, meta.get('content_type') or '', meta.get('mode', 'normal'),
                        meta.get('retry_after'))
            for on_error in ('error', 'unknown'):
                self.set_on_error(on_error)
                number = next(self.numbers)
                key = (number, '')
                ANSWERS.put(key, case)
                sql = 'SELECT %s FROM line_status(%%s, %%s)' % COLS
                outcome, val = self.run(sql, (number, None), [(key, case)])
                self.stats['replayed'] += 1
                if outcome == 'crash':
                    self.stats['crashes'] += 1
                    self.finding('crash', 'saved input %s crashes again' % meta_path)
                    self.connect()
                elif outcome == 'error':
                    self.check_error(val, on_error, [(key, case)], [None])
                else:
                    self.stats['rows'] += 1
                    self.check_rows(val, on_error, [(key, case)], [None])

    def main(self):
        log_start = None
        if self.args.server_log and os.path.exists(self.args.server_log):
            log_start = os.path.getsize(self.args.server_log)
        self.connect()
        t0 = time.monotonic()
        if self.args.replay:
            self.replay(sorted(glob.glob(os.path.join(self.args.crash_dir, 'e2e-*.json'))))
        modes = {'error': ['error'], 'unknown': ['unknown'], 'mix': ['error', 'unknown']}[self.args.on_error]
        for i in range(self.args.count):
            on_error = modes[i % len(modes)]
            self.set_on_error(on_error)
            if self.args.bulk_every and i % self.args.bulk_every == self.args.bulk_every - 1:
                self.bulk(i, on_error)
            else:
                self.single(i, on_error)
            if self.stats['crashes'] >= self.args.max_crashes:
                break
        secs = time.monotonic() - t0
        if not self.alive():
            self.stats['crashes'] += 1
            self.finding('crash', 'the session was lost at the end of the run')
        log_crashes = []
        if log_start is not None:
            with open(self.args.server_log, 'rb') as f:
                f.seek(log_start)
                for line in f.read().decode('utf-8', 'replace').splitlines():
                    if re.search(r'terminated by signal|was terminated by exception|PANIC:|'
                                 r'exited with exit code [1-9]|AddressSanitizer|runtime error:', line):
                        log_crashes.append(line)
        if log_crashes and not self.stats['crashes']:
            self.stats['crashes'] += 1
        for line in log_crashes[:10]:
            self.finding('server log', line)
        return secs, log_crashes

    def report(self, secs, log_crashes):
        s = self.stats
        print('fuzz_reader_e2e: %d executions, %d crashes' % (s['executions'], s['crashes']))
        if s['replayed']:
            print('  %d saved crash inputs replayed' % s['replayed'])
        print('  %.1f s (%.0f executions/s), seed %d, %d HTTP requests answered, %d rows, '
              '%d bulk statements, %d cache hits' % (
                  secs, s['executions'] / secs if secs else 0, self.args.seed,
                  ANSWERS.requests, s['rows'], s['bulk_statements'], s['cache_hits']))
        if s['cache_phone_differs']:
            print('  cached rows whose phone_number is the number asked for, not the answer\'s: %d'
                  % s['cache_phone_differs'])
        print('  errors by SQLSTATE: %s' % (', '.join('%s %d' % kv for kv in sorted(self.sqlstates.items(), key=lambda kv: str(kv[0]))) or 'none'))
        print('  internal errors (XX): %d, hangs: %d, mismatches: %d, invalid UTF-8: %d, '
              'foreign errors: %d, server log: %d' % (
                  s['internal_errors'], s['hangs'], len(self.findings['mismatch']),
                  len(self.findings['invalid UTF-8']), len(self.findings['foreign error']),
                  len(log_crashes)))
        if s['oracle_errors']:
            print('  oracle errors (bugs of this script, lookups not checked): %d' % s['oracle_errors'])
        for kind in ('crash', 'server log', 'internal error', 'hang', 'mismatch', 'invalid UTF-8',
                     'foreign error', 'oracle error'):
            items = self.findings.get(kind, [])
            distinct = list(dict.fromkeys(items))
            for text in distinct[:5]:
                print('  %s: %s' % (kind, text[:600]))
            if len(distinct) > 5:
                print('  %s: ... %d more' % (kind, len(distinct) - 5))
        for secs, what in self.slowest:
            print('  slowest: %.2f s: %s' % (secs, '; '.join(what)[:300]))
        for f in self.crash_files:
            print('  crash input saved: %s' % f)
        bad = s['crashes'] or s['internal_errors'] or s['hangs']
        if self.args.strict:
            bad = bad or self.findings.get('mismatch') or self.findings.get('invalid UTF-8')
        return 1 if bad else 0


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--count', type=int, default=300, help='lookups (statements) to run')
    p.add_argument('--seed', type=int, default=None)
    p.add_argument('--bulk-every', type=int, default=10,
                   help='every K-th statement is a bulk lookup of 2..6 numbers (0: never)')
    p.add_argument('--on-error', choices=('error', 'unknown', 'mix'), default='mix')
    p.add_argument('--cache-ttl', type=int, default=0)
    p.add_argument('--max-crashes', type=int, default=3)
    p.add_argument('--server-log', default=None,
                   help='PostgreSQL log to scan for crashes (default: $LS_WORK/postgres.log if present)')
    p.add_argument('--crash-dir', default=os.path.join(HERE, 'crashes'))
    p.add_argument('--case-log', default=None, help='write every case to this file (JSON lines)')
    p.add_argument('--sid', default='AC00000000000000000000000000000001')
    p.add_argument('--token', default='test-auth-token-0123456789abcdef')
    p.add_argument('--strict', action='store_true', help='also fail on mismatches and invalid UTF-8')
    p.add_argument('--replay', action='store_true',
                   help='first look up once more every saved crash input of --crash-dir (e2e-*.json/.body)')
    p.add_argument('--verbose', action='store_true')
    args = p.parse_args(argv[1:])
    if args.seed is None:
        args.seed = random.randrange(2 ** 31)
    if args.server_log is None and os.environ.get('LS_WORK'):
        args.server_log = os.path.join(os.environ['LS_WORK'], 'postgres.log')
    fz = Fuzzer(args)
    secs, log_crashes = fz.main()
    return fz.report(secs, log_crashes)


if __name__ == '__main__':
    sys.exit(main(sys.argv))
