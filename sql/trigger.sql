-- trigger: line_status_trigger() (fill, reject, async) and the statement
-- trigger line_status_fill_rows().  The background worker does not serve
-- this database, so async rows are only queued here (the scenario tests
-- check the worker).  The cache stays on: the stand-in's +1415555010x
-- numbers have fixed answers, cached or not.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS line_status;
RESET client_min_messages;
SET line_status.max_retries = 0;

-- fill: the status column follows the number.
CREATE TABLE t_fill (id int PRIMARY KEY, phone text, note text, status line_status_status);
CREATE TRIGGER ls BEFORE INSERT OR UPDATE ON t_fill
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', 'status', 'fill');
INSERT INTO t_fill (id, phone) VALUES
  (1, '+14155550100'), (2, '+1 415 555 0101'), (3, '(415) 555-0102'), (4, '+14155550103'),
  (5, '+14155550104'), (6, NULL), (7, 'junk'), (8, '+14155550110'), (9, '+14155550105');
-- (3 is national without a country, 7 not a number, 8 invalid, 9 has no
-- line status: all NULL.)
-- A status given by the caller is overwritten by the answer.
INSERT INTO t_fill (id, phone, status) VALUES (10, '+14155550103', 'active'), (11, NULL, 'active');
SELECT id, phone, status FROM t_fill ORDER BY id;

-- UPDATE that leaves the number unchanged makes no request.  The number is
-- taken out of the cache and the API URL points nowhere, so any lookup
-- would fail; these UPDATEs must succeed and keep the status.
SELECT line_status_forget('+14155550100');
SET line_status.api_url = 'http://127.0.0.1:1';
UPDATE t_fill SET note = 'touched' WHERE id = 1;
UPDATE t_fill SET phone = phone, note = 'again' WHERE id = 1;
UPDATE t_fill SET note = 'null stays null' WHERE id = 6;
SELECT id, phone, note, status FROM t_fill WHERE id IN (1, 6) ORDER BY id;
-- ...while changing the number does a lookup (which fails here: 08001).
SELECT line_status_forget('+14155550101');
\set VERBOSITY sqlstate
UPDATE t_fill SET phone = '+14155550101' WHERE id = 1;
\set VERBOSITY default
\echo :LAST_ERROR_SQLSTATE
RESET line_status.api_url;
-- With the stand-in again, the changed number is looked up and stored.
UPDATE t_fill SET phone = '+14155550101' WHERE id = 1;
UPDATE t_fill SET phone = '+14155550103' WHERE id = 2;
-- A number changed to NULL clears the status.
UPDATE t_fill SET phone = NULL WHERE id = 3;
-- A status set by hand without touching the number is left as given.
UPDATE t_fill SET status = 'unknown' WHERE id = 4;
SELECT id, phone, note, status FROM t_fill WHERE id <= 4 ORDER BY id;
-- The answers went to the cache.
SELECT status, cached FROM line_status('+14155550101');

-- UPDATE OF phone: the trigger fires only when phone is in the SET list.
CREATE TABLE t_of (id int, phone varchar(20), status text);
CREATE TRIGGER ls BEFORE INSERT OR UPDATE OF phone ON t_of
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', 'status', 'fill');
INSERT INTO t_of VALUES (1, '+14155550102', 'ignored');
UPDATE t_of SET phone = '+14155550104';
SELECT id, phone, status, pg_typeof(status) FROM t_of;

-- A text status column and a char phone column.
CREATE TABLE t_text (id int, phone char(12), status varchar(20));
CREATE TRIGGER ls BEFORE INSERT ON t_text
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', 'status', 'fill');
INSERT INTO t_text VALUES (1, '+14155550101'), (2, '+14155550105'), (3, 'not a phone');
SELECT id, phone, status, pg_typeof(status) FROM t_text ORDER BY id;

-- National numbers with country=XX: US numbers are rewritten locally, GB
-- numbers go to Twilio with CountryCode=GB.
CREATE TABLE t_nat (id int, phone text, status line_status_status);
CREATE TRIGGER ls BEFORE INSERT ON t_nat
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', 'status', 'fill', 'country=GB');
INSERT INTO t_nat VALUES (1, '020 7946 0011'), (2, '07700 900123'), (3, '+14155550103'), (4, '12');
SELECT id, phone, status FROM t_nat ORDER BY id;
SELECT national_number, country_code, phone_number FROM line_status_cache_alias
 WHERE national_number IN ('02079460011', '07700900123') ORDER BY 1;
-- Without a country, a national number cannot be looked up: no status.
CREATE TABLE t_nonat (id int, phone text, status line_status_status);
CREATE TRIGGER ls BEFORE INSERT ON t_nonat
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', 'status', 'fill');
INSERT INTO t_nonat VALUES (1, '020 7946 0011');
SELECT id, phone, status FROM t_nonat;
-- country=us works for US national numbers.
CREATE TABLE t_us (id int, phone text, status line_status_status);
CREATE TRIGGER ls BEFORE INSERT ON t_us
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', 'status', 'fill', 'country=us');
INSERT INTO t_us VALUES (1, '(415) 555-0103');
SELECT id, phone, status FROM t_us;

-- reject, default set: invalid and inactive are refused (23L01); the
-- message names the number and its status.
CREATE TABLE t_rej (id int, phone text);
CREATE TRIGGER ls BEFORE INSERT OR UPDATE ON t_rej
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', '', 'reject');
INSERT INTO t_rej VALUES (1, '+14155550100'), (2, '+14155550102'), (3, '+14155550104'), (4, NULL), (5, '+14155550105');
INSERT INTO t_rej VALUES (6, '+14155550103');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO t_rej VALUES (7, '+14155550110');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO t_rej VALUES (8, 'junk');
\echo :LAST_ERROR_SQLSTATE
-- One refused row refuses the whole statement.
INSERT INTO t_rej VALUES (9, '+14155550101'), (10, '+1 (415) 555-0103');
\echo :LAST_ERROR_SQLSTATE
UPDATE t_rej SET phone = '+14155550103' WHERE id = 1;
\echo :LAST_ERROR_SQLSTATE
SELECT id, phone FROM t_rej ORDER BY id;
-- The error's fields name the table and the column.
DO $$
DECLARE
  st text; sch text; tab text; col text;
BEGIN
  INSERT INTO t_rej VALUES (11, '+14155550103');
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, sch = SCHEMA_NAME, tab = TABLE_NAME, col = COLUMN_NAME;
  RAISE WARNING 'sqlstate %, schema %, table %, column %', st, sch, tab, col;
END
$$;

-- reject with a custom set, and a status column that is filled for the
-- rows let through.
CREATE TABLE t_rej2 (id int, phone text, status line_status_status);
CREATE TRIGGER ls BEFORE INSERT ON t_rej2
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', 'status', 'reject', 'unreachable', 'unknown');
INSERT INTO t_rej2 VALUES (1, '+14155550100'), (2, '+14155550101'), (3, '+14155550103'), (4, '+14155550110'), (5, 'junk');
INSERT INTO t_rej2 VALUES (6, '+14155550102');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO t_rej2 VALUES (7, '+14155550104');
\echo :LAST_ERROR_SQLSTATE
SELECT id, phone, status FROM t_rej2 ORDER BY id;
-- Only 'invalid': local rejections and Twilio's valid:false.
CREATE TABLE t_rej3 (id int, phone text);
CREATE TRIGGER ls BEFORE INSERT ON t_rej3
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', '', 'reject', 'invalid', 'country=US');
INSERT INTO t_rej3 VALUES (1, '(415) 555-0103'), (2, '+14155550105');
INSERT INTO t_rej3 VALUES (3, '555');
\echo :LAST_ERROR_SQLSTATE
SELECT id, phone FROM t_rej3 ORDER BY id;

-- async: the row is accepted at once with a NULL status and the number is
-- queued with the table and columns; nothing more happens in this
-- database (the worker serves another one).
CREATE TABLE t_async (id int, phone text, status line_status_status);
CREATE TRIGGER ls BEFORE INSERT OR UPDATE OF phone ON t_async
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', 'status', 'async');
SET line_status.api_url = 'http://127.0.0.1:1';
INSERT INTO t_async VALUES (1, '+1 415 555 0100', 'active'), (2, 'junk', NULL), (3, NULL, 'active'),
  (4, '+14155550103', NULL), (5, '020 7946 0011', NULL);
UPDATE t_async SET phone = '+14155550102' WHERE id = 4;
RESET line_status.api_url;
SELECT id, phone, status FROM t_async ORDER BY id;
SELECT phone_number, country_code, phone_text, relid = 't_async'::regclass AS same_table,
       phone_column, status_column, attempts
  FROM line_status_queue WHERE relid = 't_async'::regclass ORDER BY id;
-- line_status_enqueue(): a number without a table; false for non-numbers.
SELECT line_status_enqueue('+14155550104'), line_status_enqueue('020 7946 0011', 'GB'),
       line_status_enqueue('020 7946 0011'), line_status_enqueue('junk'), line_status_enqueue(NULL);
SELECT line_status_enqueue('+14155550104', 'GBR');
SELECT phone_number, country_code, phone_text, relid FROM line_status_queue
 WHERE relid IS NULL ORDER BY id;
DELETE FROM line_status_queue;

-- Argument errors, at the trigger's first use, naming the argument.
CREATE TABLE t_bad (id int, phone text, num bigint, status line_status_status, st_int int);
-- no such column (42703)
CREATE TRIGGER ls BEFORE INSERT ON t_bad
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('telephone', 'status', 'fill');
INSERT INTO t_bad (id, phone) VALUES (1, '+14155550100');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER ls ON t_bad;
CREATE TRIGGER ls BEFORE INSERT ON t_bad
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', 'state', 'fill');
INSERT INTO t_bad (id, phone) VALUES (1, '+14155550100');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER ls ON t_bad;
-- phone column not text (42804)
CREATE TRIGGER ls BEFORE INSERT ON t_bad
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('num', 'status', 'fill');
INSERT INTO t_bad (id, num) VALUES (1, 14155550100);
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER ls ON t_bad;
-- status column neither line_status_status nor text (42804)
CREATE TRIGGER ls BEFORE INSERT ON t_bad
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', 'st_int', 'fill');
INSERT INTO t_bad (id, phone) VALUES (1, '+14155550100');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER ls ON t_bad;
-- unknown policy (22023)
CREATE TRIGGER ls BEFORE INSERT ON t_bad
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', 'status', 'check');
INSERT INTO t_bad (id, phone) VALUES (1, '+14155550100');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER ls ON t_bad;
-- too few arguments (22023)
CREATE TRIGGER ls BEFORE INSERT ON t_bad
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', 'status');
INSERT INTO t_bad (id, phone) VALUES (1, '+14155550100');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER ls ON t_bad;
CREATE TRIGGER ls BEFORE INSERT ON t_bad
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger();
INSERT INTO t_bad (id, phone) VALUES (1, '+14155550100');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER ls ON t_bad;
-- fill and async need a status column (22023)
CREATE TRIGGER ls BEFORE INSERT ON t_bad
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', '', 'fill');
INSERT INTO t_bad (id, phone) VALUES (1, '+14155550100');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER ls ON t_bad;
CREATE TRIGGER ls BEFORE INSERT ON t_bad
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', '', 'async');
INSERT INTO t_bad (id, phone) VALUES (1, '+14155550100');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER ls ON t_bad;
-- a status list belongs to reject only (22023)
CREATE TRIGGER ls BEFORE INSERT ON t_bad
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', 'status', 'fill', 'inactive');
INSERT INTO t_bad (id, phone) VALUES (1, '+14155550100');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER ls ON t_bad;
-- unknown status in the list (22023)
CREATE TRIGGER ls BEFORE INSERT ON t_bad
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', 'status', 'reject', 'inactive', 'dead');
INSERT INTO t_bad (id, phone) VALUES (1, '+14155550100');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER ls ON t_bad;
-- bad country argument (22023)
CREATE TRIGGER ls BEFORE INSERT ON t_bad
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', 'status', 'fill', 'country=GBR');
INSERT INTO t_bad (id, phone) VALUES (1, '+14155550100');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER ls ON t_bad;
CREATE TRIGGER ls BEFORE INSERT ON t_bad
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', 'status', 'fill', 'country=');
INSERT INTO t_bad (id, phone) VALUES (1, '+14155550100');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER ls ON t_bad;
-- AFTER, FOR EACH STATEMENT and DELETE are protocol violations (39P01)
CREATE TRIGGER ls AFTER INSERT ON t_bad
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', 'status', 'fill');
INSERT INTO t_bad (id, phone) VALUES (1, '+14155550100');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER ls ON t_bad;
CREATE TRIGGER ls BEFORE INSERT ON t_bad
  FOR EACH STATEMENT EXECUTE FUNCTION line_status_trigger('phone', 'status', 'fill');
INSERT INTO t_bad (id, phone) VALUES (1, '+14155550100');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER ls ON t_bad;
CREATE TRIGGER ls BEFORE DELETE ON t_bad
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', 'status', 'fill');
INSERT INTO t_bad (id, phone) VALUES (1, '+14155550100');
DELETE FROM t_bad;
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER ls ON t_bad;
-- A column dropped after the trigger was created is an error at the next use.
CREATE TRIGGER ls BEFORE INSERT ON t_bad
  FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', 'status', 'fill');
INSERT INTO t_bad (id, phone) VALUES (2, '+14155550100');
ALTER TABLE t_bad DROP COLUMN status;
INSERT INTO t_bad (id, phone) VALUES (3, '+14155550100');
\echo :LAST_ERROR_SQLSTATE
SELECT id, phone FROM t_bad ORDER BY id;
DROP TABLE t_bad;

-- line_status_fill_rows(): one bulk lookup per statement, for INSERT ...
-- SELECT and COPY.  Rows whose status is already set are left alone.
CREATE TABLE t_bulk (id int, phone text, status line_status_status);
CREATE TRIGGER ls AFTER INSERT ON t_bulk REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION line_status_fill_rows('phone', 'status');
INSERT INTO t_bulk
  SELECT g, '+1415555010' || (g % 5), CASE WHEN g = 9 THEN 'unknown'::line_status_status END
    FROM generate_series(0, 9) g;
INSERT INTO t_bulk VALUES (10, NULL), (11, 'junk'), (12, '+14155550105'), (13, '+14155550110');
COPY t_bulk (id, phone) FROM STDIN;
20	+14155550101
21	+14155550103
22	\N
23	+14155550102
\.
SELECT id, phone, status FROM t_bulk ORDER BY id;
-- Misuse: as a row trigger, or without arguments (E0001).
CREATE TABLE t_bulk_bad (id int, phone text, status line_status_status);
CREATE TRIGGER ls AFTER INSERT ON t_bulk_bad
  FOR EACH ROW EXECUTE FUNCTION line_status_fill_rows('phone', 'status');
INSERT INTO t_bulk_bad VALUES (1, '+14155550100');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER ls ON t_bulk_bad;
CREATE TRIGGER ls AFTER INSERT ON t_bulk_bad REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION line_status_fill_rows('phone');
INSERT INTO t_bulk_bad VALUES (1, '+14155550100');
\echo :LAST_ERROR_SQLSTATE

DROP TABLE t_fill, t_of, t_text, t_nat, t_nonat, t_us, t_rej, t_rej2, t_rej3, t_async, t_bulk, t_bulk_bad;
RESET ALL;
