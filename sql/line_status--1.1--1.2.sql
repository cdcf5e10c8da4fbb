/* line_status 1.1 -> 1.2: bulk lookups and the batch procedure. */

\echo Use "ALTER EXTENSION line_status UPDATE TO '1.2'" to load this file. \quit

-- One row of a bulk lookup: the array element, then its answer.
CREATE TYPE @extschema@.line_status_bulk_result AS (
	input			text,
	phone_number	text,
	status			@extschema@.line_status_status,
	error_code		integer,
	valid			boolean,
	country_code	text,
	checked_at		timestamptz,
	cached			boolean,
	response		jsonb
);

CREATE FUNCTION @extschema@.line_status(phones text[], country_code text DEFAULT NULL)
RETURNS SETOF @extschema@.line_status_bulk_result
AS 'MODULE_PATHNAME', 'line_status_bulk'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE COST 10000 ROWS 1000;

COMMENT ON FUNCTION @extschema@.line_status(text[], text) IS
	'Line status of every element, in input order; each distinct number asked once, concurrently';

REVOKE ALL ON FUNCTION @extschema@.line_status(text[], text) FROM PUBLIC;

/*
 * line_status_update_table: fill status_column of every row of tbl whose
 * status_column is NULL, from the number in phone_column, batch_size rows
 * per transaction.  It commits after each batch, so a rerun after a crash
 * or a cancel skips the rows already done (and pays nothing for numbers
 * already cached).  Rows whose answer has no status (invalid numbers) stay
 * NULL.  Progress is reported with NOTICEs.  Call it outside a transaction
 * block.  It runs with the caller's rights: the caller needs UPDATE on the
 * table and EXECUTE on line_status(text[], text).  (A procedure with a SET
 * clause cannot COMMIT, hence no pinned search_path: the body qualifies the
 * extension's objects, and the caller's own search_path can only affect the
 * caller.)
 */
CREATE PROCEDURE @extschema@.line_status_update_table(
	tbl regclass,
	phone_column name,
	status_column name,
	batch_size integer DEFAULT 1000,
	country_code text DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
	phone_type	regtype;
	status_type	regtype;
	status_expr	text;
	total		bigint;
	done		bigint := 0;
	last		tid := '(0,0)';
	started		timestamptz := clock_timestamp();
	ctids		tid[];
	phones		text[];
	updated		bigint;
	elapsed		float8;
	rate		float8;
BEGIN
	IF batch_size IS NULL OR batch_size < 1 THEN
		RAISE EXCEPTION 'batch_size must be at least 1'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;

	SELECT a.atttypid::regtype INTO phone_type FROM pg_attribute a
	 WHERE a.attrelid = tbl AND a.attname = phone_column AND a.attnum > 0 AND NOT a.attisdropped;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'column "%" of relation % does not exist', phone_column, tbl
			USING ERRCODE = 'undefined_column';
	END IF;
	IF phone_type NOT IN ('text'::regtype, 'character varying'::regtype, 'character'::regtype) THEN
		RAISE EXCEPTION 'column "%" of relation % has type %, not text', phone_column, tbl, phone_type
			USING ERRCODE = 'datatype_mismatch',
				  HINT = 'The phone column must be text, varchar or char.';
	END IF;

	SELECT a.atttypid::regtype INTO status_type FROM pg_attribute a
	 WHERE a.attrelid = tbl AND a.attname = status_column AND a.attnum > 0 AND NOT a.attisdropped;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'column "%" of relation % does not exist', status_column, tbl
			USING ERRCODE = 'undefined_column';
	END IF;
	IF status_type = '@extschema@.line_status_status'::regtype THEN
		status_expr := 'r.status';
	ELSIF status_type IN ('text'::regtype, 'character varying'::regtype) THEN
		status_expr := 'r.status::text';
	ELSE
		RAISE EXCEPTION 'column "%" of relation % has type %, not line_status_status or text',
			status_column, tbl, status_type
			USING ERRCODE = 'datatype_mismatch';
	END IF;

	EXECUTE format('SELECT count(*) FROM %s WHERE %I IS NULL AND %I IS NOT NULL',
				   tbl, status_column, phone_column) INTO total;
	RAISE NOTICE 'line_status: % rows to check in %', total, tbl;

	LOOP
		-- The next batch after the last one, in physical order; rows done
		-- (status set) are skipped, so a rerun resumes where it stopped.
		EXECUTE format('SELECT array_agg(ctid ORDER BY ctid), array_agg(%I ORDER BY ctid) FROM '
					   '(SELECT ctid, %I FROM %s WHERE ctid > $1 AND %I IS NULL AND %I IS NOT NULL '
					   'ORDER BY ctid LIMIT $2) s',
					   phone_column, phone_column, tbl, status_column, phone_column)
			INTO ctids, phones USING last, batch_size;
		EXIT WHEN ctids IS NULL;

		EXECUTE format('UPDATE %s t SET %I = %s '
					   'FROM (SELECT * FROM unnest($1) WITH ORDINALITY AS c(ctid, i)) c, '
					   '     @extschema@.line_status($2, $3) WITH ORDINALITY AS r '
					   'WHERE r.ordinality = c.i AND t.ctid = c.ctid AND r.status IS NOT NULL',
					   tbl, status_column, status_expr)
			USING ctids, phones, country_code;
		GET DIAGNOSTICS updated = ROW_COUNT;

		done := done + array_length(ctids, 1);
		last := ctids[array_length(ctids, 1)];
		COMMIT;

		elapsed := extract(epoch FROM clock_timestamp() - started);
		rate := CASE WHEN elapsed > 0 THEN done / elapsed ELSE 0 END;
		RAISE NOTICE 'line_status: % of % rows done (% with a status), % rows/s, about % s left',
			done, total, updated, round(rate::numeric, 1),
			CASE WHEN rate > 0 THEN round(((total - done) / rate)::numeric) ELSE NULL END;
	END LOOP;
	RAISE NOTICE 'line_status: finished, % rows checked in % s', done,
		round(extract(epoch FROM clock_timestamp() - started)::numeric, 1);
END
$$;

COMMENT ON PROCEDURE @extschema@.line_status_update_table(regclass, name, name, integer, text) IS
	'Fill a status column for a whole table in committed batches; rerun to resume';
