-- cache: a number looked up once is answered from line_status_cache until
-- its answer is older than line_status.cache_ttl.
SELECT line_status_purge('0 s') >= 0 AS purged;
SHOW line_status.cache_ttl;

-- First lookup pays, the second is cached with the original checked_at.
CREATE TEMP TABLE first AS SELECT * FROM line_status('+12025550100');
SELECT phone_number, status, cached FROM first;
SELECT l.phone_number, l.status, l.cached, l.checked_at = f.checked_at AS same_time,
       l.response = f.response AS same_response
  FROM line_status('+12025550100') l, first f;
SELECT phone_number, status, error_code, valid, country_code, response IS NOT NULL AS has_response
  FROM line_status_cache WHERE phone_number = '+12025550100';

-- Separators do not defeat the cache.
SELECT status, cached FROM line_status('+1 (202) 555-0100');

-- Invalid numbers and package error codes are definitive answers: cached.
SELECT valid, cached FROM line_status('+14155550110');
SELECT valid, cached FROM line_status('+14155550110');
SELECT status, error_code, cached FROM line_status('+14155550106');
SELECT status, error_code, cached FROM line_status('+14155550106');
SELECT status, cached FROM line_status('+14155550105');
SELECT status, cached FROM line_status('+14155550105');

-- Failures are never cached: 503-then-success is asked again and answers.
SET line_status.max_retries = 0;
SELECT line_status('+14155555001') IS NOT NULL;
SELECT count(*) AS cached_failures FROM line_status_cache WHERE phone_number = '+14155555001';
SELECT status, cached FROM line_status('+14155555001');
SELECT status, cached FROM line_status('+14155555001');
RESET line_status.max_retries;
-- Local rejections are never cached.
SELECT valid FROM line_status('not a number');
SELECT count(*) AS junk FROM line_status_cache WHERE phone_number !~ '^\+[0-9]+$';

-- National format: US and CA numbers are rewritten as E.164 locally (an
-- exact rule), so they share the E.164 number's entry.
SELECT phone_number, cached FROM line_status('(202) 555-0111', 'US');
SELECT phone_number, cached FROM line_status('+12025550111');
SELECT phone_number, cached FROM line_status('1 202 555 0111', 'ca');
SELECT line_status_normalize('(202) 555-0111', 'US'), line_status_normalize('020 7946 0018', 'GB'),
       line_status_normalize('020 7946 0018'), line_status_normalize('nope');
-- Elsewhere Twilio resolves the number; the answer is stored under its
-- E.164 number with an alias, so the same national number and country hit
-- the cache.
SELECT phone_number, cached FROM line_status('020 7946 0018', 'GB');
SELECT phone_number, cached FROM line_status('0207 946 0018', 'gb');
SELECT phone_number, cached FROM line_status('+442079460018');
SELECT * FROM line_status_cache_alias WHERE national_number = '02079460018';
-- ...but not the same digits in another country.
SELECT phone_number, cached FROM line_status('02079460018', 'DE');

-- A number that appears twice in one statement is asked for once, even
-- with caching off.
SET line_status.cache_ttl = 0;
SELECT p, (line_status(p)).cached FROM (VALUES (1, '+12025550122'), (2, '+12025550122'), (3, '+1 202 555 0122')) v(i, p) ORDER BY i;
SELECT count(*) AS stored_with_ttl_0 FROM line_status_cache WHERE phone_number = '+12025550122';
-- A new statement asks again (caching is off).
SELECT cached FROM line_status('+12025550122');
RESET line_status.cache_ttl;

-- The TTL: an entry older than cache_ttl is not used.
SELECT cached FROM line_status('+12025550133');
UPDATE line_status_cache SET checked_at = now() - interval '2 hours' WHERE phone_number = '+12025550133';
SET line_status.cache_ttl = '3h';
SELECT cached FROM line_status('+12025550133');
SET line_status.cache_ttl = '1h';
SELECT cached, checked_at > now() - interval '1 minute' AS fresh FROM line_status('+12025550133');
RESET line_status.cache_ttl;

-- refresh: always a fresh, paid lookup, which replaces the entry.
SELECT checked_at AS before FROM line_status_cache WHERE phone_number = '+12025550100' \gset
SELECT status, cached, checked_at > :'before' AS newer FROM line_status_refresh('+12025550100');
SELECT checked_at > :'before' AS replaced FROM line_status_cache WHERE phone_number = '+12025550100';
SELECT line_status_refresh(NULL) IS NULL AS null_in_null_out;
SELECT valid FROM line_status_refresh('junk');

-- forget: erase one number, national aliases included.
SELECT line_status_forget('+1 202 555 0100');
SELECT line_status_forget('+12025550100');
SELECT count(*) FROM line_status_cache WHERE phone_number = '+12025550100';
SELECT line_status_forget('2025550111', 'US');
SELECT count(*) FROM line_status_cache WHERE phone_number = '+12025550111';
SELECT line_status_forget('020 7946 0018', 'GB');
SELECT count(*) FROM line_status_cache_alias WHERE phone_number = '+442079460018';
SELECT line_status_forget('junk'), line_status_forget(NULL);
SELECT cached FROM line_status('+12025550100');

-- purge: drop entries older than an interval.
UPDATE line_status_cache SET checked_at = now() - interval '40 days' WHERE phone_number = '+12025550133';
SELECT line_status_purge('30 days');
SELECT count(*) FROM line_status_cache WHERE phone_number = '+12025550133';

-- A read-only transaction still answers; it just does not store.
BEGIN READ ONLY;
SELECT status, cached FROM line_status('+12025550144');
COMMIT;
SELECT count(*) AS stored FROM line_status_cache WHERE phone_number = '+12025550144';

-- The cache is dumped by pg_dump: it is an extension configuration table.
SELECT c.relname FROM pg_extension e, unnest(e.extconfig) t(oid), pg_class c
 WHERE e.extname = 'line_status' AND c.oid = t.oid ORDER BY 1;

-- Privileges: an ordinary role may look up (answers come from the cache)
-- but can neither read nor write the table, nor call the admin functions.
CREATE ROLE ls_cache_user LOGIN;
GRANT EXECUTE ON FUNCTION line_status(text, text) TO ls_cache_user;
SET ROLE ls_cache_user;
SELECT status, cached FROM line_status('+12025550100');
SELECT status, cached FROM line_status('+12025550155');
SELECT * FROM line_status_cache;
SELECT * FROM line_status_cache_alias;
INSERT INTO line_status_cache VALUES ('+19995550000', 'active', NULL, true, 'US', '{}', now());
UPDATE line_status_cache SET status = 'inactive';
DELETE FROM line_status_cache;
SELECT line_status_refresh('+12025550100');
SELECT line_status_forget('+12025550100');
SELECT line_status_purge('0 s');
-- A search_path trap does not redirect the extension's writes.
CREATE TEMP TABLE line_status_cache (phone_number text PRIMARY KEY);
SET search_path = pg_temp, public;
SELECT status, cached FROM line_status('+12025550166');
RESET search_path;
RESET ROLE;
SELECT count(*) AS stored FROM public.line_status_cache WHERE phone_number IN ('+12025550155', '+12025550166');
DROP OWNED BY ls_cache_user;
DROP ROLE ls_cache_user;
