/*-------------------------------------------------------------------------
 *
 * fuzz_body_twilio.c
 *		The two static helpers of check_json() in src/twilio.c, copied as
 *		they are there (keep in step), for fuzz_body.c.
 *
 * test/fuzz/run.sh compiles this file with gcc and PostgreSQL's own flags
 * (-O2 -fwrapv -fno-strict-aliasing), like the server's build of
 * src/twilio.c, rather than with clang: code whose behaviour is undefined
 * can come out differently (labs(strtol(...)) of an exponent below
 * LONG_MIN is "huge" with clang -O1 and is not with gcc), and the harness
 * must behave as the server does.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include "postgres_fe.h"

#include "common/jsonapi.h"

int			fuzz_twilio_nesting(const char *s, size_t len);
void		fuzz_twilio_check_number(void *state, char *token, JsonTokenType type);

/* nesting() of src/twilio.c */
int
fuzz_twilio_nesting(const char *s, size_t len)
{
	int			depth = 0;
	int			deepest = 0;
	bool		in_string = false;
	size_t		i;

	for (i = 0; i < len; i++)
	{
		char		c = s[i];

		if (in_string)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
		}
		else if (c == '"')
			in_string = true;
		else if (c == '[' || c == '{')
			deepest = Max(deepest, ++depth);
		else if (c == ']' || c == '}')
			depth--;
	}
	return deepest;
}

/* check_number() of src/twilio.c */
void
fuzz_twilio_check_number(void *state, char *token, JsonTokenType type)
{
	const char *e;
	long		x;

	if (type != JSON_TOKEN_NUMBER)
		return;
	if (strlen(token) > 1000)
	{
		*(bool *) state = true;
		return;
	}
	if ((e = strpbrk(token, "eE")) == NULL)
		return;
	errno = 0;
	x = strtol(e + 1, NULL, 10);
	if (errno == ERANGE || x > 1000 || x < -1000)
		*(bool *) state = true;
}
