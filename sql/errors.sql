-- errors: every failure is an ERROR with a fitting SQLSTATE, a short
-- message and a detail saying what happened; the session stays usable.
-- Retries are tested with max_retries = 0 here to keep this quick; the
-- scenario tests count them.
SET line_status.max_retries = 0;
-- Every lookup here must reach the stand-in, not the cache.
SET line_status.cache_ttl = 0;

-- 401: Twilio refused the credentials (28000).
SELECT line_status('+14155558013');
\echo :LAST_ERROR_SQLSTATE
-- 404 and 400 from Twilio.
SELECT line_status('+14155558006');
\echo :LAST_ERROR_SQLSTATE
SELECT line_status('+14155558007');
\echo :LAST_ERROR_SQLSTATE
-- 5xx: retried, then an error.
SELECT line_status('+14155555999');
\echo :LAST_ERROR_SQLSTATE
SELECT line_status('+14155555998');
\echo :LAST_ERROR_SQLSTATE
-- 429 that never ends (max_retries = 0).
SELECT line_status('+14155554291');
\echo :LAST_ERROR_SQLSTATE
-- Redirects are never followed.
SELECT line_status('+14155558012');
\echo :LAST_ERROR_SQLSTATE

-- Answers that are not the JSON Twilio sends (38000), never a crash.
SELECT line_status('+14155558000');
\echo :LAST_ERROR_SQLSTATE
SELECT line_status('+14155558003');
\echo :LAST_ERROR_SQLSTATE
SELECT line_status('+14155558005');
\echo :LAST_ERROR_SQLSTATE
SELECT line_status('+14155558010');
\echo :LAST_ERROR_SQLSTATE
SELECT line_status('+14155558011');
\echo :LAST_ERROR_SQLSTATE
SELECT line_status('+14155558014');
\echo :LAST_ERROR_SQLSTATE
-- Too large: the body is cut off at the cap.
SELECT line_status('+14155558001');
\echo :LAST_ERROR_SQLSTATE

-- Transport faults: their details carry timings and ports, so only the
-- message and SQLSTATE are shown.
\set VERBOSITY terse
-- dropped connection
SELECT line_status('+14155558002');
\echo :LAST_ERROR_SQLSTATE
-- truncated body
SELECT line_status('+14155558004');
\echo :LAST_ERROR_SQLSTATE
-- timeout while waiting for the answer
SET line_status.timeout = '300ms';
SELECT line_status('+14155557000');
\echo :LAST_ERROR_SQLSTATE
-- timeout while reading the body
SELECT line_status('+14155557001');
\echo :LAST_ERROR_SQLSTATE
RESET line_status.timeout;
\set VERBOSITY default

-- The session is still usable, on the same kept connection.
SELECT status FROM line_status('+14155550100');

-- Connection refused (08001).
\set VERBOSITY terse
SET line_status.api_url = 'http://127.0.0.1:1';
SELECT line_status('+14155550100');
\echo :LAST_ERROR_SQLSTATE
-- DNS failure for the API host (the .invalid TLD never resolves).
SET line_status.api_url = 'http://api.line-status.invalid';
SELECT line_status('+14155550100');
\echo :LAST_ERROR_SQLSTATE
RESET line_status.api_url;
\set VERBOSITY default

-- Missing credentials fail before any request.
SET line_status.account_sid = '';
SELECT line_status('+14155550100');
\echo :LAST_ERROR_SQLSTATE
RESET line_status.account_sid;
SET line_status.auth_token_file = 'no_such_file';
SELECT line_status('+14155550100');
\echo :LAST_ERROR_SQLSTATE
RESET line_status.auth_token_file;

-- Wrong credentials: a 401 says so.
SET line_status.auth_token = 'wrong-token';
SELECT line_status('+14155550100');
\echo :LAST_ERROR_SQLSTATE
RESET line_status.auth_token;

-- API Key SID and secret work as well as Account SID and token.
SET line_status.account_sid = 'SK00000000000000000000000000000001';
SET line_status.auth_token = 'test-api-key-secret-abcdef0123456789';
SELECT status FROM line_status('+14155550101');
RESET line_status.account_sid;
RESET line_status.auth_token;

-- Bad settings are refused with a reason.
SET line_status.api_url = 'ftp://lookups.twilio.com';
SET line_status.api_url = 'file:///etc/passwd';
SET line_status.api_url = 'https://user:pw@lookups.twilio.com';
SET line_status.api_url = 'https://lookups.twilio.com/?x=1';
SET line_status.api_url = 'https://lookups.twilio.com/#x';
SET line_status.api_url = E'https://lookups.twilio.com\r\nX: y';
SET line_status.api_url = '';
SET line_status.timeout = 0;
SET line_status.timeout = '2 min';
SHOW line_status.timeout;
SET line_status.connect_timeout = '1500ms';
SHOW line_status.connect_timeout;
SET line_status.max_retries = -1;
SET line_status.max_retrys = 1;
RESET ALL;

-- Still usable after all of that.
SELECT status FROM line_status('+14155550102');
