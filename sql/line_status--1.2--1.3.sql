/* line_status 1.2 -> 1.3: triggers, the queue and the background worker, statistics. */

\echo Use "ALTER EXTENSION line_status UPDATE TO '1.3'" to load this file. \quit

-- Numbers waiting for the background worker.  An entry is deleted in the
-- transaction that stores its answer.  Autovacuum is told to visit often,
-- since every entry is deleted soon after it is inserted.
CREATE TABLE @extschema@.line_status_queue (
	id				bigserial PRIMARY KEY,
	phone_number	text NOT NULL,
	country_code	text,
	phone_text		text,
	relid			oid,
	phone_column	text,
	status_column	text,
	attempts		integer NOT NULL DEFAULT 0,
	next_attempt_at	timestamptz NOT NULL DEFAULT now(),
	enqueued_at		timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
		autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 1000);

REVOKE ALL ON @extschema@.line_status_queue FROM PUBLIC;
REVOKE ALL ON SEQUENCE @extschema@.line_status_queue_id_seq FROM PUBLIC;

-- Queued numbers survive pg_dump and restore as well as a restart.
SELECT pg_catalog.pg_extension_config_dump('@extschema@.line_status_queue', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.line_status_queue_id_seq', '');

CREATE FUNCTION @extschema@.line_status_enqueue(phone text, country_code text DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'line_status_enqueue'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

COMMENT ON FUNCTION @extschema@.line_status_enqueue(text, text) IS
	'Queue a number for the background worker to look up and cache; false if it cannot be a phone number';

REVOKE ALL ON FUNCTION @extschema@.line_status_enqueue(text, text) FROM PUBLIC;

-- The row trigger: CREATE TRIGGER ... BEFORE INSERT OR UPDATE OF phone ... FOR EACH ROW
-- EXECUTE FUNCTION line_status_trigger('phone', 'status', 'fill' | 'reject' | 'async' [, ...]).
CREATE FUNCTION @extschema@.line_status_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'line_status_trigger'
LANGUAGE C;

COMMENT ON FUNCTION @extschema@.line_status_trigger() IS
	'Row trigger: check the phone column of new and changed rows (arguments: phone column, status column, fill|reject|async, ...)';

/*
 * line_status_fill_rows: a statement-level AFTER INSERT trigger that looks
 * up every new number of the statement at once, concurrently, and fills
 * the status column of the new rows.  For bulk INSERT ... SELECT and COPY:
 *
 *   CREATE TRIGGER t AFTER INSERT ON contacts REFERENCING NEW TABLE AS new_rows
 *     FOR EACH STATEMENT EXECUTE FUNCTION line_status_fill_rows('phone', 'status');
 *
 * The transition table must be called new_rows.  Rows whose status column
 * is already set are left alone.
 */
CREATE FUNCTION @extschema@.line_status_fill_rows()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
	phone_col	text := TG_ARGV[0];
	status_col	text := TG_ARGV[1];
BEGIN
	IF TG_LEVEL <> 'STATEMENT' OR TG_WHEN <> 'AFTER' OR TG_NARGS < 2 THEN
		RAISE EXCEPTION 'line_status_fill_rows() must be an AFTER ... FOR EACH STATEMENT trigger with arguments (phone column, status column)'
			USING ERRCODE = 'E0001';
	END IF;
	EXECUTE format('UPDATE %I.%I t SET %I = r.status '
				   'FROM @extschema@.line_status(ARRAY(SELECT DISTINCT %I FROM new_rows WHERE %I IS NULL)) r '
				   'WHERE t.%I = r.input AND t.%I IS NULL AND r.status IS NOT NULL',
				   TG_TABLE_SCHEMA, TG_TABLE_NAME, status_col, phone_col, status_col,
				   phone_col, status_col);
	RETURN NULL;
END
$$;

COMMENT ON FUNCTION @extschema@.line_status_fill_rows() IS
	'Statement trigger: look up all new numbers of an INSERT or COPY at once (arguments: phone column, status column)';

-- Statistics shared by all sessions (needs shared_preload_libraries).
CREATE FUNCTION @extschema@.line_status_stats(
	OUT requests bigint, OUT cache_hits bigint,
	OUT active bigint, OUT reachable bigint, OUT unreachable bigint,
	OUT inactive bigint, OUT unknown bigint, OUT no_status bigint,
	OUT errors_credentials bigint, OUT errors_rate_limited bigint,
	OUT errors_connect bigint, OUT errors_transport bigint,
	OUT errors_bad_request bigint, OUT errors_remote bigint,
	OUT retries bigint, OUT latency_mean_ms float8, OUT latency_p99_ms float8,
	OUT handed_off bigint, OUT handoffs_dropped bigint, OUT stored_by_worker bigint,
	OUT since timestamptz)
AS 'MODULE_PATHNAME', 'line_status_stats'
LANGUAGE C VOLATILE STRICT PARALLEL SAFE;

CREATE VIEW @extschema@.line_status_stats AS
	SELECT s.*, (SELECT count(*) FROM @extschema@.line_status_queue) AS queued
	  FROM @extschema@.line_status_stats() s;

CREATE FUNCTION @extschema@.line_status_stats_reset()
RETURNS void
AS 'MODULE_PATHNAME', 'line_status_stats_reset'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

REVOKE ALL ON FUNCTION @extschema@.line_status_stats_reset() FROM PUBLIC;
