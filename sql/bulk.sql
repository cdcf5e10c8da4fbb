-- bulk: line_status(text[]) gives one row per element, in input order,
-- each distinct number asked once.
SET line_status.cache_ttl = 0;
SELECT r.ordinality, r.input, r.phone_number, r.status, r.valid, r.cached
  FROM line_status(ARRAY['+14155550100', NULL, 'junk', '+14155550101',
                         '+1 415 555 0100', '(415) 555-0102', '+14155550110',
                         '+14155550105', ''], 'US') WITH ORDINALITY r
 ORDER BY r.ordinality;

-- Empty and NULL arrays give no rows; NULL elements give a row of NULLs.
SELECT count(*) FROM line_status(ARRAY[]::text[]);
SELECT count(*) FROM line_status(NULL::text[]);
SELECT * FROM line_status(ARRAY[NULL]::text[]);
-- A NULL literal still picks the single-number function.
SELECT line_status(NULL) IS NULL AS single;

-- The column list.
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'line_status_bulk_result'::regclass AND attnum > 0 ORDER BY attnum;

-- The clean-up UPDATE from the README.
RESET line_status.cache_ttl;
CREATE TEMP TABLE contacts (id int, phone text, status line_status_status);
INSERT INTO contacts VALUES (1, '+14155550100'), (2, '+14155550103'), (3, 'nope'), (4, NULL), (5, '+14155550103');
UPDATE contacts c SET status = r.status
  FROM line_status(ARRAY(SELECT phone FROM contacts)) r WHERE r.input = c.phone;
SELECT id, phone, status FROM contacts ORDER BY id;
-- Answers came from, and went to, the cache.
SELECT input, status, cached FROM line_status(ARRAY['+14155550100', '+14155550103']);

-- Per-number failures: an ERROR naming the number by default...
SET line_status.max_retries = 0;
SET line_status.cache_ttl = 0;
SELECT count(*) FROM line_status(ARRAY['+14155550101', '+14155555999']);
\echo :LAST_ERROR_SQLSTATE
-- ...or, with on_error = unknown, status unknown with the error code, and
-- the rest goes on.  Failures are never cached.
RESET line_status.cache_ttl;
SET line_status.on_error = 'unknown';
SELECT input, status, error_code, valid, response ->> 'sqlstate' AS sqlstate, response ->> 'error' AS error
  FROM line_status(ARRAY['+14155550101', '+14155555999']) ORDER BY input;
SELECT count(*) AS failures_cached FROM line_status_cache WHERE phone_number = '+14155555999';
-- The setting applies to single lookups too.
SELECT status, error_code FROM line_status('+14155555998');
-- Credentials refused are always an error: they would fail every number.
SELECT count(*) FROM line_status(ARRAY['+14155558013']);
\echo :LAST_ERROR_SQLSTATE
RESET line_status.on_error;
RESET line_status.max_retries;

-- Bad country code: an error before anything else.
SELECT count(*) FROM line_status(ARRAY['4155550100'], 'USA');
-- Settings for the pool.
SET line_status.max_concurrency = 0;
SET line_status.max_concurrency = 1001;
SET line_status.max_concurrency = 8;
SET line_status.max_rate = -1;
SET line_status.on_error = 'ignore';
RESET ALL;

-- The procedure: fills a status column in committed batches.  (Its
-- progress NOTICEs carry timings; the scenario tests read them.)
SET client_min_messages = warning;
CREATE TABLE people (id serial PRIMARY KEY, phone varchar(40), status line_status_status, note text);
INSERT INTO people (phone) SELECT '+1425555' || lpad(g::text, 4, '0') FROM generate_series(1, 25) g;
INSERT INTO people (phone) VALUES ('garbage'), (NULL), ('+14155550110');
CALL line_status_update_table('people', 'phone', 'status', 10);
SELECT count(*) AS total, count(status) AS with_status FROM people;
-- A rerun has nothing left to do but the rows without a status.
CALL line_status_update_table('people', 'phone', 'status', 10);
-- Wrong columns and types are clear errors.
CALL line_status_update_table('people', 'telephone', 'status');
CALL line_status_update_table('people', 'phone', 'state');
CALL line_status_update_table('people', 'id', 'status');
CALL line_status_update_table('people', 'phone', 'id');
CALL line_status_update_table('people', 'phone', 'status', 0);
CALL line_status_update_table('no_such_table', 'phone', 'status');
-- A text status column works too, and identifiers are quoted safely.
CREATE TABLE "Odd ""Name""" ("the phone" text, "the status" text);
INSERT INTO "Odd ""Name""" VALUES ('+14155550102'), ('+14155550104');
CALL line_status_update_table('"Odd ""Name"""', 'the phone', 'the status');
SELECT * FROM "Odd ""Name""" ORDER BY 1;
DROP TABLE people, "Odd ""Name""";
