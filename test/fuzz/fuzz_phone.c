/*-------------------------------------------------------------------------
 *
 * fuzz_phone.c
 *		libFuzzer target for src/phone.c: phone_normalise,
 *		phone_country_normalise and phone_national_to_e164.
 *
 * Build and run with test/fuzz/run.sh.  By hand:
 *   clang-14 -g -O1 -fsanitize=fuzzer,address,undefined \
 *       -fno-sanitize-recover=undefined -Isrc \
 *       test/fuzz/fuzz_phone.c src/phone.c -o /tmp/fuzz_phone
 *   /tmp/fuzz_phone -max_total_time=20 /tmp/corpus-copy
 *
 * The input is used three ways:
 *   - all of it as the phone text (phone_normalise);
 *   - its first two bytes as a country (phone_country_normalise, with the
 *     true length, so inputs that are not two bytes long must be refused);
 *   - the rest (from byte 2 on) as a phone text; when that is a national
 *     number, phone_national_to_e164 with the fuzzed country (when it is
 *     one) and with "US" and "CA";
 *   - the rest again through phone_resolve (when src/phone.c has it), with
 *     the fuzzed country, "US" and none.
 *
 * Every output buffer is a heap block of exactly the declared size, so an
 * out-of-bounds write is an AddressSanitizer report; every invariant that
 * fails is an abort() with a message, which libFuzzer records as a crash.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "phone.h"

/*
 * phone_resolve() (normalise, then the country rule) is newer than the other
 * functions: fuzzed when src/phone.c has it, skipped when it does not.
 */
extern PhoneVerdict phone_resolve(const char *in, size_t len, const char *country,
								  char out[PHONE_BUFSIZE]);
#pragma weak phone_resolve

#define CHECK(cond, ...) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "fuzz_phone: invariant failed: %s: ", #cond); \
			fprintf(stderr, __VA_ARGS__); \
			fputc('\n', stderr); \
			abort(); \
		} \
	} while (0)

static int
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int
is_separator(char c)
{
	return c == ' ' || c == '.' || c == '-' || c == '(' || c == ')';
}

/* A fresh heap block of n bytes, filled with a byte no output contains. */
static char *
poisoned(size_t n)
{
	char	   *p = malloc(n);

	if (p == NULL)
		abort();
	memset(p, 0x7f, n);
	return p;
}

/*
 * check_phone: call phone_normalise(in, len) and check everything that must
 * hold of its answer.  Returns the verdict; the output is copied to "copy"
 * (PHONE_BUFSIZE bytes) for the caller.
 */
static PhoneVerdict
check_phone(const char *in, size_t len, char *copy)
{
	char	   *out = poisoned(PHONE_BUFSIZE);
	PhoneVerdict v = phone_normalise(in, len, out);
	const char *nul = memchr(out, '\0', PHONE_BUFSIZE);
	size_t		olen;
	size_t		i;
	size_t		start;
	int			plus;
	int			in_digits;
	int			bad_char;

	/* Always a NUL-terminated string inside the buffer. */
	CHECK(nul != NULL, "output not NUL-terminated within PHONE_BUFSIZE");
	olen = (size_t) (nul - out);
	CHECK(olen <= PHONE_BUFSIZE - 1, "output length %zu", olen);
	CHECK((int) v >= PHONE_E164 && (int) v <= PHONE_NO_COUNTRY, "verdict %d out of range", (int) v);
	CHECK(strcmp(phone_verdict_text(v), "unknown") != 0, "verdict %d has no text", (int) v);
	/* phone_normalise never decides that a country is missing. */
	CHECK(v != PHONE_NO_COUNTRY, "PHONE_NO_COUNTRY from phone_normalise");

	/*
	 * An independent reading of the input: leading spaces, an optional "+",
	 * then digits and separators only.  in_digits counts the digits,
	 * bad_char says whether anything else is there.
	 */
	start = 0;
	while (start < len && in[start] == ' ')
		start++;
	plus = start < len && in[start] == '+';
	if (plus)
		start++;
	in_digits = 0;
	bad_char = 0;
	for (i = start; i < len; i++)
	{
		if (is_digit(in[i]))
			in_digits++;
		else if (!is_separator(in[i]))
			bad_char = 1;
	}

	if (v == PHONE_E164 || v == PHONE_NATIONAL)
	{
		size_t		d = (v == PHONE_E164) ? 1 : 0;
		size_t		ndigits = olen - d;
		size_t		k = 0;

		CHECK(len <= PHONE_MAX_INPUT, "accepted an input of %zu bytes", len);
		CHECK(!bad_char, "accepted an input with a character outside digits and separators");
		if (v == PHONE_E164)
		{
			CHECK(plus && out[0] == '+', "E.164 output without a leading '+': \"%s\"", out);
			CHECK(ndigits >= PHONE_MIN_E164_DIGITS && ndigits <= PHONE_MAX_DIGITS,
				  "E.164 with %zu digits: \"%s\"", ndigits, out);
			CHECK(out[1] != '0', "E.164 country code starting with 0: \"%s\"", out);
		}
		else
		{
			CHECK(!plus, "national verdict for an input with a leading '+'");
			CHECK(ndigits >= PHONE_MIN_NATIONAL_DIGITS && ndigits <= PHONE_MAX_DIGITS,
				  "national number with %zu digits: \"%s\"", ndigits, out);
		}
		for (i = d; i < olen; i++)
			CHECK(is_digit(out[i]), "non-digit 0x%02x at %zu in \"%s\"", (unsigned char) out[i], i, out);
		/* The output's digits are exactly the input's digits, in order. */
		CHECK((int) ndigits == in_digits, "%zu digits out, %d in", ndigits, in_digits);
		for (i = start; i < len; i++)
		{
			if (is_digit(in[i]))
			{
				CHECK(out[d + k] == in[i], "digit %zu differs", k);
				k++;
			}
		}
	}
	else
	{
		/* Rejected: the output is empty, and the reason is true. */
		CHECK(olen == 0, "rejected (%s) but output is \"%s\"", phone_verdict_text(v), out);
		switch (v)
		{
			case PHONE_TOO_LONG:
				CHECK(len > PHONE_MAX_INPUT || in_digits > PHONE_MAX_DIGITS,
					  "TOO_LONG for %zu bytes with %d digits", len, in_digits);
				break;
			case PHONE_BAD_CHARACTER:
				CHECK(bad_char, "BAD_CHARACTER without one");
				break;
			case PHONE_EMPTY:
				CHECK(!bad_char && !plus && in_digits == 0, "EMPTY, but plus=%d digits=%d", plus, in_digits);
				break;
			case PHONE_TOO_SHORT:
				CHECK(!bad_char && in_digits < (plus ? PHONE_MIN_E164_DIGITS : PHONE_MIN_NATIONAL_DIGITS),
					  "TOO_SHORT with %d digits, plus=%d", in_digits, plus);
				break;
			case PHONE_BAD_COUNTRY_PREFIX:
				CHECK(plus && !bad_char, "BAD_COUNTRY_PREFIX without '+'");
				break;
			default:
				break;
		}
	}

	memcpy(copy, out, PHONE_BUFSIZE);
	free(out);
	return v;
}

/* check_idempotent: normalising an accepted output gives it back unchanged. */
static void
check_idempotent(PhoneVerdict v, const char *out)
{
	size_t		n = strlen(out);
	char	   *again_in = malloc(n ? n : 1);	/* exact size, no NUL */
	char		again[PHONE_BUFSIZE];
	PhoneVerdict v2;

	if (again_in == NULL)
		abort();
	memcpy(again_in, out, n);
	v2 = check_phone(again_in, n, again);
	CHECK(v2 == v, "verdict %d, then %d for \"%s\"", (int) v, (int) v2, out);
	CHECK(strcmp(again, out) == 0, "\"%s\" normalises to \"%s\"", out, again);
	free(again_in);
}

/* check_country: phone_country_normalise on in[0..len). */
static int
check_country(const char *in, size_t len, char *result)
{
	char	   *out = poisoned(3);
	int			ok = phone_country_normalise(in, len, out);
	size_t		i;

	if (ok)
	{
		CHECK(len == 2, "country accepted with length %zu", len);
		for (i = 0; i < 2; i++)
		{
			char		c = in[i];

			if (c >= 'a' && c <= 'z')
				c = c - 'a' + 'A';
			CHECK(c >= 'A' && c <= 'Z', "country accepted with byte 0x%02x", (unsigned char) in[i]);
			CHECK(out[i] == c, "country byte %zu is 0x%02x", i, (unsigned char) out[i]);
		}
		CHECK(out[2] == '\0', "country not NUL-terminated");
		memcpy(result, out, 3);
		/* Idempotent too. */
		{
			char	   *again = poisoned(3);

			CHECK(phone_country_normalise(out, 2, again), "upper-cased country refused");
			CHECK(memcmp(again, out, 3) == 0, "country not idempotent");
			free(again);
		}
	}
	else if (len == 2)
	{
		int			letters = 1;

		for (i = 0; i < 2; i++)
		{
			char		c = in[i];

			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
				letters = 0;
		}
		CHECK(!letters, "two ASCII letters refused as a country");
	}
	free(out);
	return ok;
}

/* check_nanp: phone_national_to_e164(number, country). */
static void
check_nanp(const char *number, const char *country)
{
	size_t		nlen = strlen(number);
	char	   *num = malloc(nlen + 1); /* exact size */
	char	   *ctry = malloc(3);
	char	   *out = poisoned(PHONE_BUFSIZE);
	int			nanp = (strcmp(country, "US") == 0 || strcmp(country, "CA") == 0);
	int			ok;

	if (num == NULL || ctry == NULL)
		abort();
	memcpy(num, number, nlen + 1);
	memcpy(ctry, country, 3);
	ok = phone_national_to_e164(num, ctry, out);
	if (ok)
	{
		const char *ten = (nlen == 11) ? number + 1 : number;
		char		again[PHONE_BUFSIZE];
		PhoneVerdict v;

		CHECK(nanp, "rewrote a number for country %s", country);
		CHECK(memchr(out, '\0', PHONE_BUFSIZE) != NULL, "E.164 rewrite not NUL-terminated");
		CHECK(strlen(out) == 12, "rewrite \"%s\" is not +1 and ten digits", out);
		CHECK(out[0] == '+' && out[1] == '1', "rewrite \"%s\" does not start with +1", out);
		CHECK(nlen == 10 || (nlen == 11 && number[0] == '1'), "rewrote %zu digits", nlen);
		CHECK(memcmp(out + 2, ten, 10) == 0, "rewrite \"%s\" of \"%s\" changed digits", out, number);
		CHECK(out[2] >= '2' && out[5] >= '2', "NANP area code or exchange starts with 0/1: \"%s\"", out);
		/* The rewrite is an E.164 number that normalises to itself. */
		v = check_phone(out, strlen(out), again);
		CHECK(v == PHONE_E164 && strcmp(again, out) == 0, "rewrite \"%s\" is not a stable E.164 number", out);
	}
	else if (nanp)
	{
		const char *ten = (nlen == 11 && number[0] == '1') ? number + 1 : number;
		size_t		tlen = strlen(ten);

		CHECK(!(tlen == 10 && ten[0] >= '2' && ten[3] >= '2'),
			  "a NANP number \"%s\" was not rewritten for %s", number, country);
	}
	free(num);
	free(ctry);
	free(out);
}

/*
 * check_resolve: phone_resolve(in, len, country) must be phone_normalise,
 * then PHONE_NO_COUNTRY (empty output) for a national number without a
 * country, then phone_national_to_e164 when that rewrites it.
 */
static void
check_resolve(const char *in, size_t len, const char *country)
{
	char	   *out = poisoned(PHONE_BUFSIZE);
	char	   *ctry = NULL;
	char		norm[PHONE_BUFSIZE];
	PhoneVerdict v,
				want;

	if (country != NULL)
	{
		ctry = malloc(3);		/* exact size */
		if (ctry == NULL)
			abort();
		memcpy(ctry, country, 3);
	}
	v = phone_resolve(in, len, ctry, out);
	want = check_phone(in, len, norm);
	CHECK(memchr(out, '\0', PHONE_BUFSIZE) != NULL, "phone_resolve output not NUL-terminated");
	if (want == PHONE_NATIONAL && country == NULL)
	{
		CHECK(v == PHONE_NO_COUNTRY, "national number without a country: verdict %d", (int) v);
		CHECK(out[0] == '\0', "NO_COUNTRY with output \"%s\"", out);
	}
	else if (want == PHONE_NATIONAL)
	{
		char		e164[PHONE_BUFSIZE];

		if (phone_national_to_e164(norm, country, e164))
		{
			CHECK(v == PHONE_E164, "rewritable national number: verdict %d", (int) v);
			CHECK(strcmp(out, e164) == 0, "resolved to \"%s\", rewrite is \"%s\"", out, e164);
		}
		else
		{
			CHECK(v == PHONE_NATIONAL, "national number: verdict %d", (int) v);
			CHECK(strcmp(out, norm) == 0, "resolved to \"%s\", normalised \"%s\"", out, norm);
		}
	}
	else
	{
		CHECK(v == want, "verdict %d, phone_normalise says %d", (int) v, (int) want);
		CHECK(strcmp(out, norm) == 0, "resolved to \"%s\", normalised \"%s\"", out, norm);
	}
	free(out);
	free(ctry);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *) data;
	char		out[PHONE_BUFSIZE];
	char		country[3] = "";
	int			have_country;
	PhoneVerdict v;

	/* 1. The whole input as a phone text. */
	v = check_phone(in, size, out);
	if (v == PHONE_E164 || v == PHONE_NATIONAL)
		check_idempotent(v, out);

	/* 2. The first two bytes as a country (with the true length when shorter). */
	have_country = check_country(in, size < 2 ? size : 2, country);
	/* And the whole input, which must be refused unless it is two bytes. */
	{
		char		scratch[3];

		(void) check_country(in, size, scratch);
	}

	/* 3. The rest as a national number for that country, and for US / CA. */
	if (size >= 2)
	{
		char		rest[PHONE_BUFSIZE];
		char	   *tail = malloc(size - 2 ? size - 2 : 1); /* exact size */

		if (tail == NULL)
			abort();
		memcpy(tail, in + 2, size - 2);
		v = check_phone(tail, size - 2, rest);
		free(tail);
		if (v == PHONE_E164 || v == PHONE_NATIONAL)
			check_idempotent(v, rest);
		if (v == PHONE_NATIONAL)
		{
			if (have_country)
				check_nanp(rest, country);
			check_nanp(rest, "US");
			check_nanp(rest, "CA");
			check_nanp(rest, "GB");
		}
	}

	/* 4. phone_resolve, when there is one: the rest, with and without a country. */
	if (phone_resolve != NULL && size >= 2)
	{
		check_resolve(in + 2, size - 2, have_country ? country : NULL);
		check_resolve(in + 2, size - 2, "US");
		check_resolve(in + 2, size - 2, NULL);
	}
	return 0;
}
