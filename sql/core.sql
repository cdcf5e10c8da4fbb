-- core: line_status() end to end against the Twilio stand-in.
-- The harness points line_status.api_url at the stand-in (ALTER SYSTEM).
CREATE EXTENSION line_status;

-- The result type's columns, in order.
SELECT attnum, attname, format_type(atttypid, atttypmod)
  FROM pg_attribute
 WHERE attrelid = 'line_status_result'::regclass AND attnum > 0
 ORDER BY attnum;
SELECT enum_range(NULL::line_status_status);

-- Each of the five statuses, and the other columns.
SELECT phone_number, status, error_code, valid, country_code,
       checked_at IS NOT NULL AS checked, cached, response IS NOT NULL AS has_response
  FROM unnest(ARRAY['+14155550100', '+14155550101', '+14155550102',
                    '+14155550103', '+14155550104']) p,
       LATERAL line_status(p);

-- Comparing with lowercase literals works.
SELECT (line_status('+14155550100')).status = 'active' AS is_active,
       (line_status('+14155550103')).status IN ('inactive', 'unreachable') AS is_dead;

-- line_status: null gives a NULL status; a package error_code is kept.
SELECT phone_number, status, error_code, valid FROM line_status('+14155550105');
SELECT phone_number, status, error_code, valid FROM line_status('+14155550106');

-- Status compared case-insensitively; extra keys ignored; an unexpected
-- value becomes unknown and stays visible in response.
SELECT status FROM line_status('+14155550107');
SELECT status, response ? 'carrier' AS kept_extra FROM line_status('+14155550108');
SELECT status, response -> 'line_status' ->> 'status' AS raw FROM line_status('+14155550109');

-- An invalid number comes back as Twilio says, not as an error.
SELECT phone_number, status, valid, country_code, response -> 'validation_errors' AS why
  FROM line_status('+14155550110');

-- The whole answer is kept.
SELECT response ->> 'national_format' AS national, response -> 'line_status' AS ls
  FROM line_status('+14155550101');

-- Separators are tolerated.
SELECT phone_number, status FROM line_status(' +1 (415) 555-0102 ');
SELECT phone_number, status FROM line_status('+1.415.555.0103');

-- National format with a country code (upper or lower case).
SELECT phone_number, status, country_code FROM line_status('(415) 555-0101', 'US');
SELECT phone_number, status, country_code FROM line_status('4155550102', 'us');
SELECT phone_number, country_code FROM line_status('07700 900123', 'GB');

-- NULL phone gives NULL; a national number without a country is invalid,
-- answered locally.
SELECT line_status(NULL) IS NULL AS is_null;
SELECT (line_status(NULL, 'US')) IS NULL AS is_null;
SELECT * FROM line_status('4155550100');

-- The usual query shape.
CREATE TEMP TABLE contacts (id int, phone text);
INSERT INTO contacts VALUES (1, '+14155550100'), (2, '+14155550103'), (3, 'not a number'), (4, NULL);
SELECT id, phone, (line_status(phone)).status, (line_status(phone)).valid FROM contacts ORDER BY id;

-- An UPDATE-based clean-up.
ALTER TABLE contacts ADD COLUMN status line_status_status, ADD COLUMN valid boolean;
UPDATE contacts c SET status = r.status, valid = r.valid FROM (SELECT id, (line_status(phone)).* FROM contacts) r WHERE r.id = c.id;
SELECT id, status, valid FROM contacts ORDER BY id;
