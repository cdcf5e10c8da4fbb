/* line_status 1.0: the status type, the result type and line_status(text, text). */

\echo Use "CREATE EXTENSION line_status" to load this file. \quit

CREATE TYPE @extschema@.line_status_status AS ENUM
	('active', 'reachable', 'unreachable', 'inactive', 'unknown');

COMMENT ON TYPE @extschema@.line_status_status IS
	'Line status of a phone number, as Twilio Lookup Line Status reports it';

CREATE TYPE @extschema@.line_status_result AS (
	phone_number	text,
	status			@extschema@.line_status_status,
	error_code		integer,
	valid			boolean,
	country_code	text,
	checked_at		timestamptz,
	cached			boolean,
	response		jsonb
);

COMMENT ON TYPE @extschema@.line_status_result IS
	'What line_status() answers for one phone number';

CREATE FUNCTION @extschema@.line_status(phone text, country_code text DEFAULT NULL)
RETURNS @extschema@.line_status_result
AS 'MODULE_PATHNAME', 'line_status_lookup'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE COST 10000;

COMMENT ON FUNCTION @extschema@.line_status(text, text) IS
	'Ask Twilio Lookup (Fields=line_status) whether a phone number is in service';

-- Checking a number costs money: nobody may do it until granted.
REVOKE ALL ON FUNCTION @extschema@.line_status(text, text) FROM PUBLIC;
