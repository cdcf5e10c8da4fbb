-- input: what cannot be a phone number is answered locally (valid = false,
-- everything else NULL, no request); bad country codes are errors.
-- (The scenario tests check with the stand-in's counters that none of
-- these sent a request.)
CREATE TEMP TABLE bad (label text, input text);
INSERT INTO bad VALUES
  ('empty', ''),
  ('spaces', '   '),
  ('letters', 'call me'),
  ('letters in digits', '+1415555O100'),
  ('tab', E'+1415\t5550100'),
  ('newline', E'+14155550100\n'),
  ('CR LF', E'+14155550100\r\nHost: evil'),
  ('unicode digits', '+١٤١٥٥٥٥٠١٠٠'),
  ('fullwidth digits', '+１４１５５５５０１００'),
  ('plus only', '+'),
  ('too few digits', '+123456'),
  ('too many digits', '+1234567890123456'),
  ('country code 0', '+04155550100'),
  ('second plus', '+1+4155550100'),
  ('slash', '+1415/5550100'),
  ('dot dot slash', '../+14155550100'),
  ('question mark', '+14155550100?Fields=x'),
  ('hash', '+14155550100#x'),
  ('percent 2F', '+1415%2F5550100'),
  ('percent 00', '+14155550100%00'),
  ('ampersand', '+14155550100&CountryCode=GB'),
  ('backslash', E'+1415\\5550100'),
  ('escape-like', E'+1415\\x005550100'),
  ('long', repeat('1', 65)),
  ('absurd', repeat('+14155550100', 1000000));

SELECT label, r.* FROM bad, LATERAL line_status(input) r ORDER BY label;
SELECT label, r.valid FROM bad, LATERAL line_status(input, 'US') r ORDER BY label;

-- Shortest and longest accepted shapes go to Twilio.
SELECT phone_number, valid FROM line_status('+1415555');
SELECT phone_number, valid FROM line_status('+141555501001234');

-- Country codes: two ASCII letters, or an error (SQLSTATE 22023).
\set VERBOSITY default
SELECT line_status('4155550100', 'USA');
\echo :LAST_ERROR_SQLSTATE
SELECT line_status('4155550100', '');
SELECT line_status('4155550100', 'U1');
SELECT line_status('4155550100', repeat('U', 100000));
SELECT line_status('4155550100', E'U\n');
-- A country code alongside an E.164 number is not needed and not sent.
SELECT phone_number, status FROM line_status('+14155550100', 'GB');
