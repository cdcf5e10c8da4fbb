/*-------------------------------------------------------------------------
 *
 * phone.c
 *		Decide locally whether a text can be a phone number, and reduce it to
 *		the digits Twilio needs.
 *
 * Every request costs money, so whatever cannot be a phone number is
 * answered here without one.  People write numbers with spaces, dots,
 * dashes and parentheses; those are dropped.  Everything else that is not
 * an ASCII digit (letters, control characters, Unicode digits, "%", "/",
 * "?", "#") rejects the input, so the output is always "+" and digits or
 * digits alone, and nothing in it can change the request's path or query.
 *
 * This file knows nothing of PostgreSQL or libcurl: it is fuzzed on its own.
 *
 *-------------------------------------------------------------------------
 */
#include <string.h>

#include "phone.h"

/*
 * phone_normalise: reduce "in" (len bytes, not necessarily NUL-terminated,
 * may contain NULs) to "+digits" (PHONE_E164) or "digits" (PHONE_NATIONAL)
 * in "out", or say why it cannot be a phone number.  "out" is always a
 * NUL-terminated string, empty on rejection.
 */
PhoneVerdict
phone_normalise(const char *in, size_t len, char out[PHONE_BUFSIZE])
{
	size_t		i = 0;
	size_t		n = 0;
	int			ndigits = 0;
	bool		plus = false;

	out[0] = '\0';
	if (len > PHONE_MAX_INPUT)
		return PHONE_TOO_LONG;

	while (i < len && in[i] == ' ')
		i++;
	if (i < len && in[i] == '+')
	{
		plus = true;
		out[n++] = '+';
		i++;
	}

	for (; i < len; i++)
	{
		char		c = in[i];

		if (c >= '0' && c <= '9')
		{
			if (ndigits == PHONE_MAX_DIGITS)
			{
				out[0] = '\0';
				return PHONE_TOO_LONG;
			}
			out[n++] = c;
			ndigits++;
		}
		else if (c == ' ' || c == '.' || c == '-' || c == '(' || c == ')')
			continue;
		else
		{
			out[0] = '\0';
			return PHONE_BAD_CHARACTER;
		}
	}
	out[n] = '\0';

	if (ndigits == 0)
	{
		out[0] = '\0';
		return plus ? PHONE_TOO_SHORT : PHONE_EMPTY;
	}
	if (ndigits < (plus ? PHONE_MIN_E164_DIGITS : PHONE_MIN_NATIONAL_DIGITS))
	{
		out[0] = '\0';
		return PHONE_TOO_SHORT;
	}
	if (plus && out[1] == '0')
	{
		out[0] = '\0';
		return PHONE_BAD_COUNTRY_PREFIX;
	}
	return plus ? PHONE_E164 : PHONE_NATIONAL;
}

/* phone_verdict_text: a short English reason, for documentation and tests. */
const char *
phone_verdict_text(PhoneVerdict verdict)
{
	switch (verdict)
	{
		case PHONE_E164:
			return "E.164 number";
		case PHONE_NATIONAL:
			return "national number";
		case PHONE_EMPTY:
			return "no digits";
		case PHONE_BAD_CHARACTER:
			return "a character that cannot be part of a phone number";
		case PHONE_TOO_SHORT:
			return "too few digits";
		case PHONE_TOO_LONG:
			return "too many digits";
		case PHONE_BAD_COUNTRY_PREFIX:
			return "country code starting with 0";
		case PHONE_NO_COUNTRY:
			return "national number without a country";
	}
	return "unknown";
}

/*
 * phone_country_normalise: accept exactly two ASCII letters (ISO 3166-1
 * alpha-2, either case) and write them upper-cased to "out".
 */
bool
phone_country_normalise(const char *in, size_t len, char out[3])
{
	size_t		i;

	if (len != 2)
		return false;
	for (i = 0; i < 2; i++)
	{
		char		c = in[i];

		if (c >= 'a' && c <= 'z')
			c = c - 'a' + 'A';
		if (c < 'A' || c > 'Z')
			return false;
		out[i] = c;
	}
	out[2] = '\0';
	return true;
}

/*
 * phone_national_to_e164: rewrite a national number as E.164 where the rule
 * is exact and needs no numbering plan: the North American Numbering Plan
 * (US and CA: ten digits, or eleven starting with the trunk prefix 1).
 * Then a national lookup hits the cache entry of the same E.164 number
 * instead of paying for it again.  Elsewhere (trunk prefixes that some
 * countries keep, variable lengths) Twilio decides; false.
 */
bool
phone_national_to_e164(const char *number, const char *country,
					   char out[PHONE_BUFSIZE])
{
	size_t		n = strlen(number);

	if (!(country[0] == 'U' && country[1] == 'S') &&
		!(country[0] == 'C' && country[1] == 'A'))
		return false;
	if (n == 11 && number[0] == '1')
	{
		number++;
		n--;
	}
	/* NANP area codes and exchanges never start with 0 or 1. */
	if (n != 10 || number[0] < '2' || number[3] < '2')
		return false;
	out[0] = '+';
	out[1] = '1';
	memcpy(out + 2, number, 11);
	return true;
}

/*
 * phone_resolve: what is sent for an input and an optional country:
 * PHONE_E164 (national US/CA numbers rewritten), PHONE_NATIONAL (digits, to
 * go with the country), or why it cannot be looked up (a national number
 * needs a country).
 */
PhoneVerdict
phone_resolve(const char *in, size_t len, const char *country,
			  char out[PHONE_BUFSIZE])
{
	PhoneVerdict verdict = phone_normalise(in, len, out);
	char		e164[PHONE_BUFSIZE];

	if (verdict != PHONE_NATIONAL)
		return verdict;
	if (country == NULL)
	{
		out[0] = '\0';
		return PHONE_NO_COUNTRY;
	}
	if (phone_national_to_e164(out, country, e164))
	{
		memcpy(out, e164, PHONE_BUFSIZE);
		return PHONE_E164;
	}
	return PHONE_NATIONAL;
}
