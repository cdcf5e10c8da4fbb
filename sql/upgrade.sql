-- upgrade: 1.0 installs without the cache; ALTER EXTENSION UPDATE adds it.
CREATE SCHEMA upg;
DROP EXTENSION line_status;
CREATE EXTENSION line_status VERSION '1.0' SCHEMA upg;
SELECT extversion FROM pg_extension WHERE extname = 'line_status';
SELECT to_regclass('upg.line_status_cache') IS NULL AS no_cache_yet;
SET line_status.cache_ttl = '1h';
SELECT status, cached FROM upg.line_status('+14155550101');
ALTER EXTENSION line_status UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'line_status';
SELECT status, cached FROM upg.line_status('+14155550101');
SELECT status, cached FROM upg.line_status('+14155550101');
SELECT pg_describe_object(classid, objid, 0) AS member
  FROM pg_depend WHERE refobjid = (SELECT oid FROM pg_extension WHERE extname = 'line_status')
   AND deptype = 'e' ORDER BY 1;
-- Everything lives in the extension's schema.
SELECT count(*) FROM pg_proc WHERE proname LIKE 'line_status%' AND pronamespace <> 'upg'::regnamespace;
DROP EXTENSION line_status;
DROP SCHEMA upg;
CREATE EXTENSION line_status;
