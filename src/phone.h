/*-------------------------------------------------------------------------
 *
 * phone.h
 *		Phone-number normalisation: pure C, no PostgreSQL or libcurl state,
 *		so that it can be unit-tested and fuzzed on its own.
 *
 *-------------------------------------------------------------------------
 */
#ifndef LINE_STATUS_PHONE_H
#define LINE_STATUS_PHONE_H

#include <stdbool.h>
#include <stddef.h>

/* Longest input looked at; anything longer cannot be a phone number. */
#define PHONE_MAX_INPUT 64
/* E.164 allows at most 15 digits, country code included. */
#define PHONE_MAX_DIGITS 15
#define PHONE_MIN_E164_DIGITS 7
#define PHONE_MIN_NATIONAL_DIGITS 4
/* Room for "+", 15 digits and a terminating NUL. */
#define PHONE_BUFSIZE (PHONE_MAX_DIGITS + 2)

typedef enum PhoneVerdict
{
	PHONE_E164,					/* "+" and 7..15 digits */
	PHONE_NATIONAL,				/* 4..15 digits without "+": needs a country */
	PHONE_EMPTY,
	PHONE_BAD_CHARACTER,
	PHONE_TOO_SHORT,
	PHONE_TOO_LONG,
	PHONE_BAD_COUNTRY_PREFIX,	/* "+0...": no country code starts with 0 */
	PHONE_NO_COUNTRY			/* national number, but no country given */
} PhoneVerdict;

extern PhoneVerdict phone_normalise(const char *in, size_t len,
									char out[PHONE_BUFSIZE]);
extern const char *phone_verdict_text(PhoneVerdict verdict);
extern bool phone_country_normalise(const char *in, size_t len, char out[3]);
extern bool phone_national_to_e164(const char *number, const char *country,
								   char out[PHONE_BUFSIZE]);
extern PhoneVerdict phone_resolve(const char *in, size_t len, const char *country,
								  char out[PHONE_BUFSIZE]);

#endif							/* LINE_STATUS_PHONE_H */
