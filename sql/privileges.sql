-- privileges: the credentials, the URL and the CA bundle are for
-- superusers; the token is unreadable; calling costs money, so EXECUTE
-- is granted, not public.
CREATE ROLE ls_user LOGIN;
CREATE ROLE ls_other LOGIN;
GRANT EXECUTE ON FUNCTION line_status(text, text) TO ls_user;

-- The token cannot be stored where every role could read it, not even by
-- a superuser.
ALTER ROLE ls_user SET line_status.auth_token = 'leaked';
ALTER DATABASE contrib_regression SET line_status.auth_token = 'leaked';
CREATE FUNCTION leaky() RETURNS int LANGUAGE sql
  SET line_status.auth_token = 'leaked' AS 'SELECT 1';
SELECT count(*) AS stored FROM pg_db_role_setting WHERE array_to_string(setconfig, ',') LIKE '%auth_token%';

-- Even a superuser reads only the mask.
SET line_status.auth_token = 'superuser-secret';
SHOW line_status.auth_token;
SELECT current_setting('line_status.auth_token');
SELECT setting, reset_val FROM pg_settings WHERE name = 'line_status.auth_token';
RESET line_status.auth_token;

SET ROLE ls_user;
-- An ordinary role may look numbers up once granted...
SELECT status FROM line_status('+14155550100');
-- ...but can neither read the token nor change where it goes.
SHOW line_status.auth_token;
SELECT current_setting('line_status.auth_token');
SELECT count(*) AS visible FROM pg_settings WHERE name = 'line_status.auth_token';
SELECT count(*) AS readable FROM pg_settings WHERE setting LIKE '%test-auth-token%' OR reset_val LIKE '%test-auth-token%';
SELECT * FROM pg_file_settings;
SET line_status.api_url = 'http://127.0.0.1:9/steal';
SET line_status.account_sid = 'ACevil';
SET line_status.auth_token = 'x';
SET line_status.auth_token_file = '/etc/passwd';
SET line_status.ca_file = '/tmp/evil.pem';
SELECT set_config('line_status.api_url', 'http://127.0.0.1:9/steal', false);
-- Its own settings are its own.
SET line_status.timeout = '5s';
SET line_status.max_retries = 1;
-- Nor can it sneak the URL in through its role settings or a function.
ALTER ROLE ls_user SET line_status.api_url = 'http://127.0.0.1:9/steal';
RESET ROLE;

-- Without the grant there is no lookup.
SET ROLE ls_other;
SELECT line_status('+14155550100');
RESET ROLE;

DROP OWNED BY ls_user, ls_other;
DROP ROLE ls_user;
DROP ROLE ls_other;
