-- tls: real TLS against the stand-in, with a CA made at test time.
-- The server certificate names only "localhost".
\getenv tls_url STANDIN_TLS_URL
\getenv ca_file LS_CA_FILE
\getenv other_ca LS_OTHER_CA_FILE
SET line_status.max_retries = 0;
-- Every lookup here must reach the stand-in, not the cache.
SET line_status.cache_ttl = 0;
SET line_status.api_url = :'tls_url';

-- The right CA: verified, answered.
SET line_status.ca_file = :'ca_file';
SELECT phone_number, status FROM line_status('+14155550100');

-- The system CA bundle does not know our test CA (08001, with a hint).
RESET line_status.ca_file;
SELECT line_status('+14155550100');
\echo :LAST_ERROR_SQLSTATE

-- An unrelated CA.
SET line_status.ca_file = :'other_ca';
SELECT line_status('+14155550100');
\echo :LAST_ERROR_SQLSTATE

-- A CA file that does not exist.
SET line_status.ca_file = '/nonexistent/ca.pem';
SELECT line_status('+14155550100');
\echo :LAST_ERROR_SQLSTATE

-- The right CA but a host name the certificate does not name.
SET line_status.ca_file = :'ca_file';
SELECT replace(:'tls_url', 'localhost', '127.0.0.1') AS ip_url \gset
SET line_status.api_url = :'ip_url';
SELECT line_status('+14155550100');
\echo :LAST_ERROR_SQLSTATE

-- And back: the session is fine.
SET line_status.api_url = :'tls_url';
SELECT status FROM line_status('+14155550101');
