#!/usr/bin/env node
// Twilio Lookup v2 "Line Status" stand-in server for the line_status tests and
// benchmarks.  Node.js standard library only.  See README.md next to this file
// for the scenario table, the control API and the stats JSON.
//
// Design notes (speed matters: this must never be the bottleneck):
//  - no per-request logging, no URL objects, no regexes on the hot path;
//  - answers are built by string concatenation from pre-stringified pieces;
//  - latency is a setTimeout per answer, never blocking;
//  - counters are plain integers / Maps, stats are rendered only on demand.
'use strict';

const http = require('http');
const https = require('https');
const fs = require('fs');

// ---------------------------------------------------------------- options

const USAGE = `usage: node standin.js [options]
  --port N              HTTP on 127.0.0.1 (0 = pick a free port)
  --tls-port N          HTTPS on 127.0.0.1 (needs --cert and --key)
  --cert FILE --key FILE  PEM certificate and key for --tls-port
  --host ADDR           listen address (default 127.0.0.1)
  --account-sid S       (default AC00000000000000000000000000000001)
  --auth-token T        (default test-auth-token-0123456789abcdef)
  --api-key-sid S       (default SK00000000000000000000000000000001)
  --api-key-secret T    (default test-api-key-secret-abcdef0123456789)
  --latency-ms N        delay of normal lookup answers (default 0)
  --latency-dist D      fixed | lognormal (default fixed)
  --max-inflight N      answer 429/20429 when N lookups are in flight (0 = off)
  --ready-file FILE     write {"port":P,"tls_port":T,"pid":N} once listening
If neither --port nor --tls-port is given, HTTP listens on a free port.`;

function parseArgs(argv) {
  const o = {
    port: null, tlsPort: null, cert: null, key: null, host: '127.0.0.1',
    accountSid: 'AC00000000000000000000000000000001',
    authToken: 'test-auth-token-0123456789abcdef',
    apiKeySid: 'SK00000000000000000000000000000001',
    apiKeySecret: 'test-api-key-secret-abcdef0123456789',
    latencyMs: 0, latencyDist: 'fixed', maxInflight: 0, readyFile: null,
  };
  const names = {
    '--port': 'port', '--tls-port': 'tlsPort', '--cert': 'cert', '--key': 'key',
    '--host': 'host', '--account-sid': 'accountSid', '--auth-token': 'authToken',
    '--api-key-sid': 'apiKeySid', '--api-key-secret': 'apiKeySecret',
    '--latency-ms': 'latencyMs', '--latency-dist': 'latencyDist',
    '--max-inflight': 'maxInflight', '--ready-file': 'readyFile',
  };
  const die = (msg) => { process.stderr.write(`standin: ${msg}\n${USAGE}\n`); process.exit(2); };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    if (a === '-h' || a === '--help') { process.stdout.write(USAGE + '\n'); process.exit(0); }
    let v;
    const eq = a.indexOf('=');
    if (eq > 0) { v = a.slice(eq + 1); a = a.slice(0, eq); }
    const k = names[a];
    if (!k) die(`unknown option ${a}`);
    if (v === undefined) {
      if (i + 1 >= argv.length) die(`${a} needs a value`);
      v = argv[++i];
    }
    o[k] = v;
  }
  for (const k of ['port', 'tlsPort', 'latencyMs', 'maxInflight']) {
    if (o[k] === null) continue;
    const n = Number(o[k]);
    if (!Number.isFinite(n) || n < 0 || (k !== 'latencyMs' && !Number.isInteger(n))) die(`bad value for ${k}: ${o[k]}`);
    o[k] = n;
  }
  if (o.latencyDist !== 'fixed' && o.latencyDist !== 'lognormal') die(`--latency-dist must be fixed or lognormal`);
  if (o.tlsPort !== null && (!o.cert || !o.key)) die('--tls-port needs --cert and --key');
  if (o.port === null && o.tlsPort === null) o.port = 0;
  return o;
}

const opt = parseArgs(process.argv.slice(2));

// ---------------------------------------------------------------- runtime config

const cfg = { latency_ms: opt.latencyMs, latency_dist: opt.latencyDist, max_inflight: opt.maxInflight };
const SIGMA = 0.6076;              // lognormal sigma: p99 ~= 3.4 x mean
let lnMu = 0;                      // mu of the lognormal so that the mean is latency_ms
function configChanged() {
  lnMu = cfg.latency_ms > 0 ? Math.log(cfg.latency_ms) - SIGMA * SIGMA / 2 : 0;
}
configChanged();

function latency() {
  const m = cfg.latency_ms;
  if (m <= 0) return 0;
  if (cfg.latency_dist === 'fixed') return m;
  let u = Math.random();
  while (u === 0) u = Math.random();
  const z = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * Math.random());
  return Math.exp(lnMu + SIGMA * z);
}

// ---------------------------------------------------------------- auth

const b64 = (s) => Buffer.from(s, 'utf8').toString('base64');
const AUTH_ACCOUNT = 'Basic ' + b64(opt.accountSid + ':' + opt.authToken);
const AUTH_APIKEY = 'Basic ' + b64(opt.apiKeySid + ':' + opt.apiKeySecret);

// Slow path: returns the username when the credentials are valid, else null.
// Sets stats.last_auth to the username that was tried (or "none").
function slowAuth(h) {
  if (h === undefined || h === '') { S.lastAuth = 'none'; S.auth.none++; return null; }
  const sp = h.indexOf(' ');
  if (sp < 0 || h.slice(0, sp).toLowerCase() !== 'basic') { S.lastAuth = 'none'; S.auth.failed++; return null; }
  let dec;
  try { dec = Buffer.from(h.slice(sp + 1).trim(), 'base64').toString('utf8'); } catch (e) { dec = ''; }
  const c = dec.indexOf(':');
  const user = c < 0 ? dec : dec.slice(0, c);
  const pass = c < 0 ? '' : dec.slice(c + 1);
  S.lastAuth = user === '' ? 'none' : user;
  if (user === opt.accountSid && pass === opt.authToken) { S.auth.account_sid++; return user; }
  if (user === opt.apiKeySid && pass === opt.apiKeySecret) { S.auth.api_key++; return user; }
  S.auth.failed++;
  return null;
}

// ---------------------------------------------------------------- stats

const PATHS_MAX = 1000;
const UA_MAX = 20;
let inflight = 0;                 // live gauge, never reset
let S;                            // all resettable counters
let scen;                         // per-number scenario state (429N / 503N request counts)
function resetStats() {
  S = {
    requests: 0, paid: 0, connections: 0, tls_connections: 0,
    status: Object.create(null),
    perNumber: new Map(),
    maxInflightSeen: inflight,
    lastAuth: 'none',
    auth: { account_sid: 0, api_key: 0, failed: 0, none: 0 },
    uas: new Set(),
    paths: new Array(PATHS_MAX), pathIdx: 0, pathCount: 0,
    maxPaid: 0, paidMoreThanOnce: 0,
  };
  scen = new Map();
}
resetStats();

function countStatus(code) { S.status[code] = (S.status[code] | 0) + 1; }

function perNumber(key) {
  let e = S.perNumber.get(key);
  if (e === undefined) { e = { requests: 0, paid: 0 }; S.perNumber.set(key, e); }
  e.requests++;
  return e;
}

function markPaid(pn) {
  S.paid++;
  const p = ++pn.paid;
  if (p === 2) S.paidMoreThanOnce++;
  if (p > S.maxPaid) S.maxPaid = p;
}

function noteInflight(n) { if (n > S.maxInflightSeen) S.maxInflightSeen = n; }

function recordPath(u) {
  S.paths[S.pathIdx] = u;
  S.pathIdx = S.pathIdx + 1 === PATHS_MAX ? 0 : S.pathIdx + 1;
  if (S.pathCount < PATHS_MAX) S.pathCount++;
}

function pathsList() {
  const out = [];
  const start = S.pathCount < PATHS_MAX ? 0 : S.pathIdx;
  for (let i = 0; i < S.pathCount; i++) out.push(S.paths[(start + i) % PATHS_MAX]);
  return out;
}

function renderStats(summary) {
  const sc = {};
  for (const k of Object.keys(S.status)) sc[k] = S.status[k];
  const o = {
    requests: S.requests, paid: S.paid,
    connections: S.connections, tls_connections: S.tls_connections,
    status_counts: sc,
    max_inflight_seen: S.maxInflightSeen, inflight,
    last_auth: S.lastAuth, auth_counts: S.auth,
    user_agents: Array.from(S.uas),
    distinct_numbers: S.perNumber.size,
    max_paid_per_number: S.maxPaid,
    numbers_paid_more_than_once: S.paidMoreThanOnce,
    config: cfg,
  };
  if (!summary) {
    const pn = {};
    for (const [k, v] of S.perNumber) pn[k] = v;
    o.per_number = pn;
    o.paths = pathsList();
  }
  return JSON.stringify(o);
}

// ---------------------------------------------------------------- bodies

const CT_JSON = 'application/json';
const CT_HTML = 'text/html; charset=utf-8';
const URL_BASE = 'https://lookups.twilio.com/v2/PhoneNumbers/';

function errBody(code, message, status) {
  return JSON.stringify({ code, message, more_info: 'https://www.twilio.com/docs/errors/' + code, status });
}
const BODY_401 = errBody(20003, 'Authenticate', 401);
const BODY_404 = errBody(20404, 'The requested resource was not found', 404);
const BODY_429 = errBody(20429, 'Too Many Requests', 429);
const BODY_503 = errBody(20500, 'Service Unavailable', 503);
const BODY_500 = errBody(20500, 'Internal Server Error', 500);
const BODY_400 = errBody(60618, 'Invalid request parameter: malformed request parameter', 400);
const HDR_401 = { 'Content-Type': CT_JSON, 'Content-Length': BODY_401.length, 'WWW-Authenticate': 'Basic realm="Twilio API"' };
const HDR_404 = { 'Content-Type': CT_JSON, 'Content-Length': BODY_404.length };
const HDR_429 = { 'Content-Type': CT_JSON, 'Content-Length': BODY_429.length };
const HDR_429_RA = { 'Content-Type': CT_JSON, 'Content-Length': BODY_429.length, 'Retry-After': '0' };
const HDR_503 = { 'Content-Type': CT_JSON, 'Content-Length': BODY_503.length };
const HDR_500 = { 'Content-Type': CT_JSON, 'Content-Length': BODY_500.length };
const HDR_400 = { 'Content-Type': CT_JSON, 'Content-Length': BODY_400.length };

const HTML_PAGE = '<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n' +
  '<body><h1>502 Bad Gateway</h1><p>The upstream server returned an invalid response.</p></body></html>\n';
const HDR_HTML = { 'Content-Type': CT_HTML, 'Content-Length': Buffer.byteLength(HTML_PAGE) };
const REDIRECT_BODY = '<html><body>Moved to <a href="http://127.0.0.1:1/evil">here</a></body></html>\n';
const HDR_301 = { 'Content-Type': CT_HTML, 'Content-Length': REDIRECT_BODY.length, Location: 'http://127.0.0.1:1/evil' };

// Keys after line_status are identical for every answer.
const TAIL_NULLS = ',"line_type_intelligence":null,"identity_match":null,"reassigned_number":null,' +
  '"sms_pumping_risk":null,"phone_number_quality_score":null,"pre_fill":null,"url":';
const MID_NULLS = ',"caller_name":null,"sim_swap":null,"call_forwarding":null,"line_status":';

const LS = {};
for (const s of ['active', 'reachable', 'unreachable', 'inactive', 'unknown']) LS[s] = '{"status":"' + s + '","error_code":null}';
const STATUS_BY_DIGIT = [LS.active, LS.reachable, LS.unreachable, LS.inactive, LS.unknown,
  LS.active, LS.reachable, LS.unreachable, LS.inactive, LS.unknown];

// country info by E.164 prefix
function countryOf(e164) {
  if (e164.charCodeAt(1) === 49 /* '1' */) return CC_US;
  const p = e164.slice(1, 3);
  return CC_BY_PREFIX[p] || CC_ZZ;
}
const CC_US = { cc: '"US"', ccc: '"1"', plen: 1 };
const CC_ZZ = { cc: '"ZZ"', ccc: '"0"', plen: 0 };
const CC_BY_PREFIX = {
  44: { cc: '"GB"', ccc: '"44"', plen: 2 }, 49: { cc: '"DE"', ccc: '"49"', plen: 2 },
  33: { cc: '"FR"', ccc: '"33"', plen: 2 }, 61: { cc: '"AU"', ccc: '"61"', plen: 2 },
};

function nationalFormat(e164, c) {
  if (c === CC_ZZ) return '"' + e164 + '"';
  const nat = e164.slice(1 + c.plen);
  if (c === CC_US) {
    if (nat.length === 10) return '"(' + nat.slice(0, 3) + ') ' + nat.slice(3, 6) + '-' + nat.slice(6) + '"';
    return '"' + nat + '"';
  }
  return '"0' + nat + '"';
}

// A valid number's answer.  lsJson is the JSON text of line_status ("null" if absent).
// extraTop is inserted before the closing brace (already starts with ',').
function validBody(e164, lsJson, extraTop) {
  const c = countryOf(e164);
  return '{"calling_country_code":' + c.ccc + ',"country_code":' + c.cc +
    ',"phone_number":"' + e164 + '","national_format":' + nationalFormat(e164, c) +
    ',"valid":true,"validation_errors":null' + MID_NULLS + lsJson + TAIL_NULLS +
    '"' + URL_BASE + e164 + '"' + (extraTop || '') + '}';
}

// An invalid number's answer.  phone is the raw string to echo (JSON-escaped here).
function invalidBody(phone, err, ccc) {
  const ph = JSON.stringify(phone);
  return '{"calling_country_code":' + (ccc || 'null') + ',"country_code":null,"phone_number":' + ph +
    ',"national_format":null,"valid":false,"validation_errors":["' + err + '"]' + MID_NULLS + 'null' +
    TAIL_NULLS + JSON.stringify(URL_BASE + encodeURIComponent(phone).replace(/%2B/g, '+')) + '}';
}

// ---------------------------------------------------------------- scenarios

// kinds
const K = {
  NULL_LS: 1, ERR60600: 2, UPPER: 3, EXTRA: 4, PORTED: 5, IBP: 6,
  R429: 7, R503: 8, ALWAYS503: 9, ALWAYS500: 10, WAIT60: 11, HANG_BODY: 12,
  BAD_JSON: 13, BIG8M: 14, DESTROY: 15, HTML: 16, SHORT_BODY: 17, LS_STRING: 18,
  E404: 19, E400: 20, DRIP: 21, BIG50M: 22, ARRAY: 23, JNULL: 24, REDIRECT: 25,
  E401: 26, STATUS7: 27,
};
const SCEN = new Map([
  ['+14155550105', [K.NULL_LS]], ['+14155550106', [K.ERR60600]], ['+14155550107', [K.UPPER]],
  ['+14155550108', [K.EXTRA]], ['+14155550109', [K.PORTED]], ['+14155550110', [K.IBP]],
  ['+14155555999', [K.ALWAYS503]], ['+14155555998', [K.ALWAYS500]],
  ['+14155557000', [K.WAIT60]], ['+14155557001', [K.HANG_BODY]],
  ['+14155558000', [K.BAD_JSON]], ['+14155558001', [K.BIG8M]], ['+14155558002', [K.DESTROY]],
  ['+14155558003', [K.HTML]], ['+14155558004', [K.SHORT_BODY]], ['+14155558005', [K.LS_STRING]],
  ['+14155558006', [K.E404]], ['+14155558007', [K.E400]], ['+14155558008', [K.DRIP]],
  ['+14155558009', [K.BIG50M]], ['+14155558010', [K.ARRAY]], ['+14155558011', [K.JNULL]],
  ['+14155558012', [K.REDIRECT]], ['+14155558013', [K.E401]], ['+14155558014', [K.STATUS7]],
]);
for (let n = 0; n <= 9; n++) {
  SCEN.set('+1415555429' + n, [K.R429, n]);
  SCEN.set('+1415555500' + n, [K.R503, n]);
}

const BIG8M_PAD = 8 * 1024 * 1024;
const BIG50M_PAD = 50 * 1024 * 1024;
const PAD_CHUNK = Buffer.alloc(64 * 1024, 'x');
const bigCache = [null, null];
function big8mBody(withLs) {
  const i = withLs ? 1 : 0;
  if (bigCache[i] === null) {
    const b = validBody('+14155558001', withLs ? LS.active : 'null', ',"padding":"' + 'x'.repeat(BIG8M_PAD) + '"');
    bigCache[i] = Buffer.from(b, 'latin1');
  }
  return bigCache[i];
}

// ---------------------------------------------------------------- responding

function sendNow(res, status, hdrs, body) {
  res.writeHead(status, hdrs);
  res.end(body);
}

function jsonHdr(body) { return { 'Content-Type': CT_JSON, 'Content-Length': Buffer.byteLength(body) }; }

// Hold a slot in the in-flight gauge until release() (idempotent) is called.
function hold() {
  const n = ++inflight;
  if (n > S.maxInflightSeen) S.maxInflightSeen = n;
  let held = true;
  return () => { if (held) { held = false; inflight--; } };
}

function delayedFire(st) {
  if (st.done) return;
  st.done = true;
  inflight--;
  st.res.writeHead(st.status, st.hdrs);
  st.res.end(st.body);
}

// Send a 200-type answer after ms (the "paid" decision has already been taken).
function answerAfter(res, ms, status, hdrs, body) {
  if (!(ms > 0)) { noteInflight(inflight + 1); sendNow(res, status, hdrs, body); return; }
  const n = ++inflight;
  if (n > S.maxInflightSeen) S.maxInflightSeen = n;
  const st = { res, status, hdrs, body, done: false, timer: null };
  st.timer = setTimeout(delayedFire, ms, st);
  res.once('close', () => {
    if (!st.done) { st.done = true; inflight--; clearTimeout(st.timer); }
  });
}

// A normal (latency-subject) JSON answer.
function answer(res, body) {
  countStatus(200);
  answerAfter(res, latency(), 200, jsonHdr(body), body);
}

function rawHead(status, reason, ctype, len) {
  return 'HTTP/1.1 ' + status + ' ' + reason + '\r\nContent-Type: ' + ctype + '\r\nContent-Length: ' + len +
    '\r\nDate: ' + new Date().toUTCString() + '\r\nConnection: keep-alive\r\n\r\n';
}

function streamBig(res, prefix, padLen, suffix, release) {
  const total = Buffer.byteLength(prefix) + padLen + Buffer.byteLength(suffix);
  res.writeHead(200, { 'Content-Type': CT_JSON, 'Content-Length': total });
  let left = padLen;
  let stopped = false;
  res.once('close', () => { stopped = true; release(); });
  res.write(prefix);
  const pump = () => {
    while (!stopped && left > 0) {
      const n = left >= PAD_CHUNK.length ? PAD_CHUNK.length : left;
      left -= n;
      const ok = res.write(n === PAD_CHUNK.length ? PAD_CHUNK : PAD_CHUNK.subarray(0, n));
      if (!ok) { res.once('drain', pump); return; }
    }
    if (!stopped) { stopped = true; res.end(suffix); release(); }
  };
  pump();
}

function scenario(res, req, e164, sc, withLs, pn) {
  const kind = sc[0];
  switch (kind) {
    case K.NULL_LS:
      return answer(res, validBody(e164, 'null'));
    case K.ERR60600:
      if (withLs) markPaid(pn);
      return answer(res, validBody(e164, withLs ? '{"status":"unknown","error_code":60600}' : 'null'));
    case K.UPPER:
      if (withLs) markPaid(pn);
      return answer(res, validBody(e164, withLs ? '{"status":"ACTIVE","error_code":null}' : 'null'));
    case K.EXTRA:
      if (withLs) markPaid(pn);
      return answer(res, validBody(e164, withLs ? '{"status":"reachable","error_code":null,"ported":false}' : 'null',
        ',"carrier":null,"extra_thing":{"a":[1,2]}'));
    case K.PORTED:
      if (withLs) markPaid(pn);
      return answer(res, validBody(e164, withLs ? '{"status":"ported_out","error_code":null}' : 'null'));
    case K.IBP:
      return answer(res, invalidBody(e164, 'INVALID_BUT_POSSIBLE', '"1"'));
    case K.R429:
    case K.R503: {
      const seen = scen.get(e164) | 0;
      if (seen < sc[1]) {
        scen.set(e164, seen + 1);
        if (kind === K.R429) {
          countStatus(429);
          noteInflight(inflight + 1);
          return sendNow(res, 429, (sc[1] & 1) === 0 ? HDR_429_RA : HDR_429, BODY_429);
        }
        countStatus(503);
        noteInflight(inflight + 1);
        return sendNow(res, 503, HDR_503, BODY_503);
      }
      if (withLs) markPaid(pn);
      return answer(res, validBody(e164, withLs ? LS.active : 'null'));
    }
    case K.ALWAYS503:
      countStatus(503); noteInflight(inflight + 1);
      return sendNow(res, 503, HDR_503, BODY_503);
    case K.ALWAYS500:
      countStatus(500); noteInflight(inflight + 1);
      return sendNow(res, 500, HDR_500, BODY_500);
    case K.WAIT60: {
      if (withLs) markPaid(pn);
      countStatus(200);
      const body = validBody(e164, withLs ? LS.active : 'null');
      return answerAfter(res, 60000, 200, jsonHdr(body), body);
    }
    case K.HANG_BODY: {
      countStatus(200);
      const release = hold();
      const sock = req.socket;
      sock.write(rawHead(200, 'OK', CT_JSON, 400));
      const t = setTimeout(() => sock.destroy(), 60000);
      sock.once('close', () => { clearTimeout(t); release(); });
      return;
    }
    case K.BAD_JSON: {
      countStatus(200); noteInflight(inflight + 1);
      const b = '{"phone_number": "+14155558000", "valid": tru';
      return sendNow(res, 200, jsonHdr(b), b);
    }
    case K.BIG8M: {
      if (withLs) markPaid(pn);
      countStatus(200); noteInflight(inflight + 1);
      const b = big8mBody(withLs);
      return sendNow(res, 200, { 'Content-Type': CT_JSON, 'Content-Length': b.length }, b);
    }
    case K.DESTROY:
      countStatus('none'); noteInflight(inflight + 1);
      req.socket.destroy();
      return;
    case K.HTML:
      countStatus(200); noteInflight(inflight + 1);
      return sendNow(res, 200, HDR_HTML, HTML_PAGE);
    case K.SHORT_BODY: {
      countStatus(200); noteInflight(inflight + 1);
      const full = validBody(e164, withLs ? LS.active : 'null');
      const sock = req.socket;
      sock.end(rawHead(200, 'OK', CT_JSON, 500) + full.slice(0, 100));
      setTimeout(() => sock.destroy(), 1000).unref();
      return;
    }
    case K.LS_STRING:
      if (withLs) markPaid(pn);
      return answerNoLatency(res, validBody(e164, withLs ? '"active"' : 'null'));
    case K.E404:
      countStatus(404); noteInflight(inflight + 1);
      return sendNow(res, 404, HDR_404, BODY_404);
    case K.E400:
      countStatus(400); noteInflight(inflight + 1);
      return sendNow(res, 400, HDR_400, BODY_400);
    case K.DRIP: {
      if (withLs) markPaid(pn);
      countStatus(200);
      const body = Buffer.from(validBody(e164, withLs ? LS.active : 'null'), 'latin1');
      const release = hold();
      res.writeHead(200, { 'Content-Type': CT_JSON, 'Content-Length': body.length });
      let i = 0;
      const tick = () => {
        res.write(body.subarray(i, i + 1));
        if (++i >= body.length) { clearInterval(iv); res.end(); release(); }
      };
      const iv = setInterval(tick, 1000);
      res.once('close', () => { clearInterval(iv); release(); });
      tick();
      return;
    }
    case K.BIG50M: {
      if (withLs) markPaid(pn);
      countStatus(200);
      const full = validBody(e164, withLs ? LS.active : 'null');
      const prefix = full.slice(0, -1) + ',"padding":"';
      return streamBig(res, prefix, BIG50M_PAD, '"}', hold());
    }
    case K.ARRAY:
      return answerNoLatency(res, '[1,2,3]');
    case K.JNULL:
      return answerNoLatency(res, 'null');
    case K.REDIRECT:
      countStatus(301); noteInflight(inflight + 1);
      return sendNow(res, 301, HDR_301, REDIRECT_BODY);
    case K.E401:
      countStatus(401); noteInflight(inflight + 1);
      return sendNow(res, 401, HDR_401, BODY_401);
    case K.STATUS7:
      if (withLs) markPaid(pn);
      return answerNoLatency(res, validBody(e164, withLs ? '{"status":7,"error_code":null}' : 'null'));
  }
}

function answerNoLatency(res, body) {
  countStatus(200); noteInflight(inflight + 1);
  sendNow(res, 200, jsonHdr(body), body);
}

// ---------------------------------------------------------------- request handling

const PREFIX = '/v2/PhoneNumbers/';
const PLEN = PREFIX.length;
const COUNTRY_PREFIX = { US: '1', GB: '44', DE: '49', FR: '33' };

function decodeParam(s) {
  if (s.indexOf('%') < 0 && s.indexOf('+') < 0) return s;
  try { return decodeURIComponent(s.replace(/\+/g, ' ')); } catch (e) { return null; }
}

function fieldsHasLineStatus(v) {
  if (v === 'line_status') return true;
  const parts = v.split(',');
  for (let i = 0; i < parts.length; i++) if (parts[i].trim() === 'line_status') return true;
  return false;
}

function isDigits(s, from) {
  for (let i = from; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

function onLookup(req, res, url) {
  S.requests++;
  recordPath(url);
  const h = req.headers;
  const ua = h['user-agent'];
  if (ua !== undefined && S.uas.size < UA_MAX) S.uas.add(ua);

  // 1. auth
  const auth = h.authorization;
  if (auth === AUTH_ACCOUNT) { S.lastAuth = opt.accountSid; S.auth.account_sid++; }
  else if (auth === AUTH_APIKEY) { S.lastAuth = opt.apiKeySid; S.auth.api_key++; }
  else if (slowAuth(auth) === null) {
    countStatus(401);
    return sendNow(res, 401, HDR_401, BODY_401);
  }

  // 2. method and path: exactly /v2/PhoneNumbers/<one segment>
  if (req.method !== 'GET' || !url.startsWith(PREFIX)) { countStatus(404); return sendNow(res, 404, HDR_404, BODY_404); }
  const q = url.indexOf('?', PLEN);
  let seg = q < 0 ? url.slice(PLEN) : url.slice(PLEN, q);
  if (seg.length === 0 || seg.indexOf('/') >= 0) { countStatus(404); return sendNow(res, 404, HDR_404, BODY_404); }
  if (seg.indexOf('%') >= 0) {
    try { seg = decodeURIComponent(seg); } catch (e) { countStatus(404); return sendNow(res, 404, HDR_404, BODY_404); }
  }

  // 3. query: Fields, CountryCode
  let withLs = false;
  let country = null;
  if (q >= 0) {
    const qs = url.slice(q + 1);
    if (qs === 'Fields=line_status') withLs = true;
    else {
      const kv = qs.split('&');
      for (let i = 0; i < kv.length; i++) {
        const p = kv[i];
        const eq = p.indexOf('=');
        const k = eq < 0 ? p : p.slice(0, eq);
        if (k === 'Fields') {
          const v = decodeParam(eq < 0 ? '' : p.slice(eq + 1));
          if (v !== null && fieldsHasLineStatus(v)) withLs = true;
        } else if (k === 'CountryCode') {
          const v = decodeParam(eq < 0 ? '' : p.slice(eq + 1));
          if (v !== null) country = v.trim().toUpperCase();
        }
      }
    }
  }

  // 4. classify the number
  let key;
  let invalid = null;     // validation error, if any
  let e164 = null;
  if (seg.charCodeAt(0) === 43 /* '+' */) {
    if (isDigits(seg, 1)) e164 = seg; else invalid = 'NOT_A_NUMBER';
  } else if (!isDigits(seg, 0)) {
    invalid = 'NOT_A_NUMBER';
  } else {
    const cp = country === null ? undefined : COUNTRY_PREFIX[country];
    if (cp === undefined) invalid = 'INVALID_COUNTRY_CODE';
    else if (cp === '1') e164 = '+1' + (seg.length === 11 && seg.charCodeAt(0) === 49 ? seg.slice(1) : seg);
    else e164 = '+' + cp + (seg.charCodeAt(0) === 48 ? seg.slice(1) : seg);
  }
  if (e164 !== null) {
    const nd = e164.length - 1;
    if (nd < 8) invalid = 'TOO_SHORT';
    else if (nd > 15) invalid = 'TOO_LONG';
    key = e164;
  } else key = seg;
  const pn = perNumber(key);

  // 5. concurrency limit
  const mi = cfg.max_inflight;
  if (mi > 0 && inflight >= mi) {
    countStatus(429);
    return sendNow(res, 429, HDR_429, BODY_429);
  }

  // 6. answer
  if (invalid !== null) return answer(res, invalidBody(e164 !== null ? e164 : seg, invalid));
  const sc = SCEN.get(e164);
  if (sc !== undefined) return scenario(res, req, e164, sc, withLs, pn);
  if (withLs) {
    markPaid(pn);
    return answer(res, validBody(e164, STATUS_BY_DIGIT[e164.charCodeAt(e164.length - 1) - 48]));
  }
  return answer(res, validBody(e164, 'null'));
}

// ---------------------------------------------------------------- control API

function sendJson(res, status, obj) {
  const b = typeof obj === 'string' ? obj : JSON.stringify(obj);
  res.writeHead(status, { 'Content-Type': CT_JSON, 'Content-Length': Buffer.byteLength(b), 'Cache-Control': 'no-store' });
  res.end(b);
}

function applyConfig(o) {
  if (o === null || typeof o !== 'object' || Array.isArray(o)) return 'body must be a JSON object';
  const next = Object.assign({}, cfg);
  for (const k of Object.keys(o)) {
    const v = o[k];
    if (k === 'latency_ms') {
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) return 'latency_ms must be a number >= 0';
      next.latency_ms = v;
    } else if (k === 'latency_dist') {
      if (v !== 'fixed' && v !== 'lognormal') return 'latency_dist must be "fixed" or "lognormal"';
      next.latency_dist = v;
    } else if (k === 'max_inflight') {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) return 'max_inflight must be an integer >= 0';
      next.max_inflight = v;
    } else return 'unknown config key ' + k;
  }
  Object.assign(cfg, next);
  configChanged();
  return null;
}

function onControl(req, res, url) {
  const q = url.indexOf('?');
  const p = q < 0 ? url : url.slice(0, q);
  const qs = q < 0 ? '' : url.slice(q + 1);
  const m = req.method;
  if (p === '/__standin/stats') {
    if (m !== 'GET') return sendJson(res, 405, { error: 'use GET' });
    const summary = /(^|&)summary=(1|true|yes)(&|$)/.test(qs);
    return sendJson(res, 200, renderStats(summary));
  }
  if (p === '/__standin/reset') {
    if (m !== 'POST') return sendJson(res, 405, { error: 'use POST' });
    req.resume();
    resetStats();
    return sendJson(res, 200, { ok: true });
  }
  if (p === '/__standin/config') {
    if (m === 'GET') return sendJson(res, 200, cfg);
    if (m !== 'POST') return sendJson(res, 405, { error: 'use GET or POST' });
    const chunks = [];
    let size = 0;
    req.on('data', (c) => { size += c.length; if (size <= 65536) chunks.push(c); });
    req.on('end', () => {
      let o;
      const text = Buffer.concat(chunks).toString('utf8').trim();
      try { o = text === '' ? {} : JSON.parse(text); } catch (e) { return sendJson(res, 400, { error: 'invalid JSON: ' + e.message }); }
      const err = applyConfig(o);
      if (err) return sendJson(res, 400, { error: err });
      return sendJson(res, 200, cfg);
    });
    return;
  }
  if (p === '/__standin/health') return sendJson(res, 200, { ok: true, pid: process.pid });
  return sendJson(res, 404, { error: 'unknown control endpoint', endpoints: ['GET /__standin/stats[?summary=1]', 'POST /__standin/reset', 'GET|POST /__standin/config', 'GET /__standin/health'] });
}

function onRequest(req, res) {
  const url = req.url;
  if (url.charCodeAt(1) === 95 /* '_' */ && url.startsWith('/__standin/')) return onControl(req, res, url);
  return onLookup(req, res, url);
}

// ---------------------------------------------------------------- servers

const sockets = new Set();
function trackSocket(sock) {
  sockets.add(sock);
  sock.once('close', () => sockets.delete(sock));
}

function tune(server) {
  server.keepAliveTimeout = 65000;
  server.headersTimeout = 70000;   // only bounds the receipt of request headers
  server.requestTimeout = 0;       // never time out slow scenarios
  server.timeout = 0;
  server.maxRequestsPerSocket = 0;
  server.on('clientError', (err, sock) => {
    if (sock.writable && err.code !== 'ECONNRESET' && !sock.destroyed) {
      sock.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    } else sock.destroy();
  });
}

const servers = [];
const listening = { port: null, tls_port: null };

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host: opt.host, backlog: 4096 }, () => {
      server.removeListener('error', reject);
      resolve(server.address().port);
    });
  });
}

async function main() {
  if (opt.port !== null) {
    const s = http.createServer({ noDelay: true }, onRequest);
    tune(s);
    s.on('connection', (sock) => { S.connections++; trackSocket(sock); });
    servers.push(s);
    listening.port = await listen(s, opt.port);
  }
  if (opt.tlsPort !== null) {
    const s = https.createServer({ cert: fs.readFileSync(opt.cert), key: fs.readFileSync(opt.key), noDelay: true }, onRequest);
    tune(s);
    s.on('connection', (sock) => { S.connections++; S.tls_connections++; trackSocket(sock); });
    s.on('tlsClientError', () => {});
    servers.push(s);
    listening.tls_port = await listen(s, opt.tlsPort);
  }
  if (opt.readyFile) {
    const tmp = opt.readyFile + '.tmp.' + process.pid;
    fs.writeFileSync(tmp, JSON.stringify({ port: listening.port, tls_port: listening.tls_port, pid: process.pid }) + '\n');
    fs.renameSync(tmp, opt.readyFile);
  }
  process.stdout.write(`standin listening http=${listening.port === null ? '-' : listening.port} https=${listening.tls_port === null ? '-' : listening.tls_port}\n`);
}

let stopping = false;
function shutdown() {
  if (stopping) return;
  stopping = true;
  for (const s of servers) s.close();
  for (const sock of sockets) sock.destroy();
  if (opt.readyFile) {
    try {
      const cur = JSON.parse(fs.readFileSync(opt.readyFile, 'utf8'));
      if (cur.pid === process.pid) fs.unlinkSync(opt.readyFile);
    } catch (e) { /* gone already */ }
  }
  setImmediate(() => process.exit(0));
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
process.on('uncaughtException', (e) => { process.stderr.write('standin: uncaught: ' + (e && e.stack || e) + '\n'); });

main().catch((e) => { process.stderr.write('standin: ' + (e && e.message || e) + '\n'); process.exit(1); });
