/* line_status 1.0 -> 1.1: the result cache. */

\echo Use "ALTER EXTENSION line_status UPDATE TO '1.1'" to load this file. \quit

-- Paid answers, one row per E.164 number.  Only the extension's functions
-- read and write it, with its owner's rights: ordinary roles get nothing.
CREATE TABLE @extschema@.line_status_cache (
	phone_number	text PRIMARY KEY,
	status			@extschema@.line_status_status,
	error_code		integer,
	valid			boolean NOT NULL,
	country_code	text,
	response		jsonb NOT NULL,
	checked_at		timestamptz NOT NULL
);

COMMENT ON TABLE @extschema@.line_status_cache IS
	'Twilio Line Status answers already paid for; see line_status.cache_ttl';

-- National-format lookups: which E.164 number (country, national number)
-- turned out to be, so that asking again in national format hits the cache.
CREATE TABLE @extschema@.line_status_cache_alias (
	country_code	text NOT NULL,
	national_number	text NOT NULL,
	phone_number	text NOT NULL,
	PRIMARY KEY (country_code, national_number)
);

CREATE INDEX ON @extschema@.line_status_cache_alias (phone_number);

REVOKE ALL ON @extschema@.line_status_cache, @extschema@.line_status_cache_alias FROM PUBLIC;

-- The rows are paid data: pg_dump keeps them.
SELECT pg_catalog.pg_extension_config_dump('@extschema@.line_status_cache', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.line_status_cache_alias', '');

CREATE FUNCTION @extschema@.line_status_normalize(phone text, country_code text DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'line_status_normalize'
LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.line_status_normalize(text, text) IS
	'The number as line_status() sends it (+digits, or digits in national format), or NULL if it cannot be a phone number';

CREATE FUNCTION @extschema@.line_status_refresh(phone text, country_code text DEFAULT NULL)
RETURNS @extschema@.line_status_result
AS 'MODULE_PATHNAME', 'line_status_refresh'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE COST 10000;

COMMENT ON FUNCTION @extschema@.line_status_refresh(text, text) IS
	'A fresh, paid lookup whatever the cache holds; the answer replaces the cached one';

REVOKE ALL ON FUNCTION @extschema@.line_status_refresh(text, text) FROM PUBLIC;

-- Erase one number (personal data) from the cache, national aliases included.
CREATE FUNCTION @extschema@.line_status_forget(phone text, country_code text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	num		text := @extschema@.line_status_normalize(phone, country_code);
	cc		text := upper(country_code);
	e164	text;
	n		bigint;
BEGIN
	IF num IS NULL THEN
		RETURN false;
	END IF;
	IF left(num, 1) = '+' THEN
		e164 := num;
	ELSE
		SELECT a.phone_number INTO e164
		  FROM @extschema@.line_status_cache_alias a
		 WHERE a.country_code = cc AND a.national_number = num;
	END IF;
	DELETE FROM @extschema@.line_status_cache_alias a
	 WHERE a.phone_number = e164 OR (a.country_code = cc AND a.national_number = num);
	DELETE FROM @extschema@.line_status_cache c WHERE c.phone_number = e164;
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n > 0;
END
$$;

REVOKE ALL ON FUNCTION @extschema@.line_status_forget(text, text) FROM PUBLIC;

-- Drop answers older than an interval; returns how many were dropped.
CREATE FUNCTION @extschema@.line_status_purge(older_than interval)
RETURNS bigint
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n		bigint;
BEGIN
	DELETE FROM @extschema@.line_status_cache c WHERE c.checked_at < now() - older_than;
	GET DIAGNOSTICS n = ROW_COUNT;
	DELETE FROM @extschema@.line_status_cache_alias a
	 WHERE NOT EXISTS (SELECT FROM @extschema@.line_status_cache c
					   WHERE c.phone_number = a.phone_number);
	RETURN n;
END
$$;

REVOKE ALL ON FUNCTION @extschema@.line_status_purge(interval) FROM PUBLIC;
