/*-------------------------------------------------------------------------
 *
 * fuzz_body.c
 *		libFuzzer target for the first stage of reading a Twilio answer:
 *		check_json() in src/twilio.c, which decides whether a body may be
 *		given to jsonb_in().
 *
 * ls_twilio_read() needs the backend (jsonb, palloc, ereport), which cannot
 * be linked into a standalone program.  Its first stage can: check_json()
 * only uses PostgreSQL's JSON lexer/parser and UTF-8 verifier, and both are
 * in src/common, shipped compiled for frontend programs as libpgcommon.a
 * (postgresql-server-dev-15).  This file links the real, installed
 * libpgcommon.a and libpgport.a and runs the same checks, in the same
 * order, with the same arguments as check_json():
 *
 *   empty body -> NUL byte -> UTF-8 (pg_verify_mbstr(PG_UTF8, ..., true)) ->
 *   nesting() > MAX_NESTING -> makeJsonLexContextCstringLen(body, len,
 *   PG_UTF8, true) -> pg_parse_json() with check_number() as the scalar
 *   callback -> json_errdetail() on failure -> a number too large.
 *
 * nesting() and check_number() are static in src/twilio.c: they are copied
 * into fuzz_body_twilio.c (compiled with gcc, as the server is), and must be
 * kept in step with it, as must check_json() here.
 *
 * Two things differ, both forced by what the frontend library contains:
 *   - pg_verify_mbstr() is backend-only (mbutils.c).  For noError = true it
 *     is exactly "pg_wchar_table[PG_UTF8].mbverifystr(s, len) == len", which
 *     is what the frontend's pg_encoding_verifymbstr() returns; that is used.
 *   - json_errdetail() is compiled only into the backend (#ifndef FRONTEND
 *     in src/common/jsonapi.c of PostgreSQL 15).  fe_json_errdetail() below
 *     stands in for it: other words, but the same reads of the lexer's
 *     state (the offending token, token_start..token_terminator), which is
 *     what matters for memory safety.
 * And one difference of the frontend build itself: parse_object() and
 * parse_array() call check_stack_depth() only in the backend.  Since
 * check_json() refuses more than MAX_NESTING levels before parsing, the
 * recursion here is bounded too.
 *
 * libpgcommon.a is not instrumented, so AddressSanitizer cannot see its own
 * loads and libFuzzer gets no coverage from inside it.  Hence:
 *   - the body is also checked from a copy placed right before an
 *     inaccessible page, and one right after one: any read past either end,
 *     instrumented or not, is a SIGSEGV, which libFuzzer reports as a crash;
 *   - an instrumented reference validator (RFC 8259 plus PostgreSQL's
 *     extra rules: no \u0000, paired surrogates only, strict UTF-8) must
 *     agree with the verdict, stage by stage.  It gives libFuzzer coverage
 *     to steer by, and it is an oracle: a body check_json() lets through
 *     must be JSON of the grammar jsonb_in() reads, nested at most
 *     MAX_NESTING levels, whose numbers have at most 1,000 characters and
 *     an exponent within +-1,000 (what numeric_in can take; computed here
 *     without any integer overflow), and a body it refuses must really
 *     break one of those rules.
 * Further invariants: the result does not depend on where the bytes are;
 * a failure always has a reason that is a NUL-terminated, valid UTF-8
 * string (it goes into errdetail and into the response jsonb of
 * line_status.on_error = unknown); a body accepted with de-escaping is
 * accepted without it too.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"

#define CHECK(cond, ...) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "fuzz_body: invariant failed: %s: ", #cond); \
			fprintf(stderr, __VA_ARGS__); \
			fputc('\n', stderr); \
			abort(); \
		} \
	} while (0)

/* ------------------------------------------------------------------------
 * fe_json_errdetail: a stand-in for the backend's json_errdetail(), which
 * the frontend library does not have.  The wording is not PostgreSQL's;
 * the memory it reads is: for the errors that quote the offending token,
 * the bytes from lex->token_start to lex->token_terminator (copied, as the
 * backend does, into a fresh buffer); for JSON_ESCAPING_REQUIRED, the byte
 * at lex->token_terminator; for the others, nothing.  Returns palloc'd text.
 * ------------------------------------------------------------------------
 */
static const char *
error_name(JsonParseErrorType error)
{
	switch (error)
	{
		case JSON_SUCCESS:
			return "success";
		case JSON_ESCAPING_INVALID:
			return "invalid escape";
		case JSON_ESCAPING_REQUIRED:
			return "unescaped control character";
		case JSON_EXPECTED_ARRAY_FIRST:
			return "expected an array element or ]";
		case JSON_EXPECTED_ARRAY_NEXT:
			return "expected , or ]";
		case JSON_EXPECTED_COLON:
			return "expected :";
		case JSON_EXPECTED_END:
			return "expected the end";
		case JSON_EXPECTED_JSON:
			return "expected a value";
		case JSON_EXPECTED_MORE:
			return "unexpected end of input";
		case JSON_EXPECTED_OBJECT_FIRST:
			return "expected a string or }";
		case JSON_EXPECTED_OBJECT_NEXT:
			return "expected , or }";
		case JSON_EXPECTED_STRING:
			return "expected a string";
		case JSON_INVALID_TOKEN:
			return "invalid token";
		case JSON_UNICODE_CODE_POINT_ZERO:
			return "\\u0000";
		case JSON_UNICODE_ESCAPE_FORMAT:
			return "bad \\u escape";
		case JSON_UNICODE_HIGH_ESCAPE:
			return "\\u escape above 007F in a non-UTF8 encoding";
		case JSON_UNICODE_HIGH_SURROGATE:
			return "high surrogate after a high surrogate";
		case JSON_UNICODE_LOW_SURROGATE:
			return "lone surrogate";
	}
	return NULL;
}

static char *
fe_json_errdetail(JsonParseErrorType error, JsonLexContext *lex)
{
	const char *name = error_name(error);

	/* the backend raises elog(ERROR) for a code it does not know */
	CHECK(name != NULL && error != JSON_SUCCESS, "json_errdetail: error code %d", (int) error);
	switch (error)
	{
		case JSON_ESCAPING_REQUIRED:
			return psprintf("%s 0x%02x", name, (unsigned char) *lex->token_terminator);
		case JSON_ESCAPING_INVALID:
		case JSON_EXPECTED_END:
		case JSON_EXPECTED_ARRAY_FIRST:
		case JSON_EXPECTED_ARRAY_NEXT:
		case JSON_EXPECTED_COLON:
		case JSON_EXPECTED_JSON:
		case JSON_EXPECTED_OBJECT_FIRST:
		case JSON_EXPECTED_OBJECT_NEXT:
		case JSON_EXPECTED_STRING:
		case JSON_INVALID_TOKEN:
			{
				ptrdiff_t	n = lex->token_terminator - lex->token_start;
				char	   *token;
				char	   *s;

				CHECK(n >= 0 && n <= lex->input_length, "token of %ld bytes", (long) n);
				token = palloc(n + 1);
				memcpy(token, lex->token_start, n);
				token[n] = '\0';
				s = psprintf("%s: \"%s\"", name, token);
				pfree(token);
				return s;
			}
		default:
			return pstrdup(name);
	}
}

/* ------------------------------------------------------------------------
 * From src/twilio.c (keep in step): MAX_NESTING here; nesting() and
 * check_number() in fuzz_body_twilio.c, compiled as the server compiles
 * them; check_json() below, except for the two calls named in the header
 * comment.
 * ------------------------------------------------------------------------
 */
#define MAX_NESTING 1000

extern int	fuzz_twilio_nesting(const char *s, size_t len);
extern void fuzz_twilio_check_number(void *state, char *token, JsonTokenType type);

#define nesting fuzz_twilio_nesting
#define check_number fuzz_twilio_check_number

/*
 * The parser hands every scalar, and (when there is a callback for it) every
 * key, to the callbacks in fresh palloc'd copies, which the server frees with
 * its memory context; here they are freed at once.  The key callback only
 * frees: it changes nothing in how the body is parsed.
 */
static void
check_number_and_free(void *state, char *token, JsonTokenType type)
{
	check_number(state, token, type);
	if (token)
		pfree(token);
}

static void
free_key(void *state, char *fname, bool isnull)
{
	if (fname)
		pfree(fname);
}

typedef struct CheckResult
{
	bool		ok;
	int			stage;			/* STAGE_* */
	JsonParseErrorType rc;
	char	   *why;			/* palloc'd, NULL when ok */
} CheckResult;

enum
{
	STAGE_OK, STAGE_EMPTY, STAGE_NUL, STAGE_UTF8, STAGE_NESTING, STAGE_JSON, STAGE_NUMBER
};

static CheckResult
check_json(const char *body, size_t len, bool need_escapes)
{
	CheckResult r = {false, STAGE_OK, JSON_SUCCESS, NULL};
	JsonLexContext *lex;
	JsonSemAction sem = {0};
	bool		huge = false;

	if (len == 0)
	{
		r.stage = STAGE_EMPTY;
		r.why = pstrdup("The body is empty.");
		return r;
	}
	if (memchr(body, '\0', len) != NULL)
	{
		r.stage = STAGE_NUL;
		r.why = pstrdup("The body contains a NUL byte.");
		return r;
	}
	/* = pg_verify_mbstr(PG_UTF8, body, len, true) */
	if (pg_encoding_verifymbstr(PG_UTF8, body, len) != (int) len)
	{
		r.stage = STAGE_UTF8;
		r.why = pstrdup("The body is not valid UTF-8.");
		return r;
	}
	if (nesting(body, len) > MAX_NESTING)
	{
		r.stage = STAGE_NESTING;
		r.why = psprintf("The body is nested more than %d levels deep.", MAX_NESTING);
		return r;
	}
	lex = makeJsonLexContextCstringLen((char *) body, len, PG_UTF8, need_escapes);
	sem.semstate = &huge;
	sem.scalar = check_number_and_free;
	sem.object_field_start = free_key;
	r.rc = pg_parse_json(lex, &sem);
	if (r.rc != JSON_SUCCESS)
	{
		char	   *detail = fe_json_errdetail(r.rc, lex);

		r.stage = STAGE_JSON;
		r.why = psprintf("The body is not valid JSON: %s", detail);
		pfree(detail);
	}
	else if (huge)
	{
		r.stage = STAGE_NUMBER;
		r.why = pstrdup("The body holds a number too large or too precise for PostgreSQL.");
	}
	else
		r.ok = true;
	if (lex->strval)
	{
		pfree(lex->strval->data);
		pfree(lex->strval);
	}
	pfree(lex);
	return r;
}

/* ------------------------------------------------------------------------
 * Reference validator: strict UTF-8 and JSON as jsonb_in() accepts it.
 * ------------------------------------------------------------------------
 */

/* Length of the well-formed UTF-8 sequence at s (n bytes left), 0 if none. */
static int
ref_utf8_char(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	int			len;
	unsigned char lo = 0x80,
				hi = 0xBF;
	int			i;

	if (c == 0)
		return 0;				/* PostgreSQL never accepts NUL in text */
	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		len = 2;
	else if (c >= 0xE0 && c <= 0xEF)
	{
		len = 3;
		if (c == 0xE0)
			lo = 0xA0;			/* no overlongs */
		else if (c == 0xED)
			hi = 0x9F;			/* no UTF-16 surrogates */
	}
	else if (c >= 0xF0 && c <= 0xF4)
	{
		len = 4;
		if (c == 0xF0)
			lo = 0x90;			/* no overlongs */
		else if (c == 0xF4)
			hi = 0x8F;			/* nothing above U+10FFFF */
	}
	else
		return 0;
	if ((size_t) len > n)
		return 0;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xBF)
			return 0;
	return len;
}

static bool
ref_utf8(const unsigned char *s, size_t n)
{
	size_t		i = 0;

	while (i < n)
	{
		int			l = ref_utf8_char(s + i, n - i);

		if (l == 0)
			return false;
		i += l;
	}
	return true;
}

typedef struct Ref
{
	const unsigned char *s;
	size_t		n;
	size_t		i;
	int			depth;
	int			max_depth;
	bool		huge;			/* a number numeric_in may refuse */
} Ref;

/*
 * ref_huge_number: does the number token s[0..n) have more than 1,000
 * characters, or an exponent beyond +-1,000?  The exponent is judged by its
 * digits, so that no size of exponent can overflow anything.
 */
static bool
ref_huge_number(const unsigned char *s, size_t n)
{
	size_t		i = 0;
	size_t		ndig;
	int			value = 0;

	if (n > 1000)
		return true;
	while (i < n && s[i] != 'e' && s[i] != 'E')
		i++;
	if (i == n)
		return false;
	i++;
	if (i < n && (s[i] == '+' || s[i] == '-'))
		i++;
	while (i < n && s[i] == '0')
		i++;
	ndig = n - i;
	if (ndig > 4)
		return true;
	for (; i < n; i++)
		value = value * 10 + (s[i] - '0');
	return value > 1000;
}

static void
ref_ws(Ref *r)
{
	while (r->i < r->n && (r->s[r->i] == ' ' || r->s[r->i] == '\t' ||
						   r->s[r->i] == '\n' || r->s[r->i] == '\r'))
		r->i++;
}

static int
ref_hex4(Ref *r)
{
	int			v = 0;
	int			k;

	if (r->n - r->i < 4)
		return -1;
	for (k = 0; k < 4; k++)
	{
		unsigned char c = r->s[r->i + k];

		if (c >= '0' && c <= '9')
			v = v * 16 + (c - '0');
		else if (c >= 'a' && c <= 'f')
			v = v * 16 + (c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v = v * 16 + (c - 'A' + 10);
		else
			return -1;
	}
	r->i += 4;
	return v;
}

/* A string; r->i is at the opening quote. */
static bool
ref_string(Ref *r)
{
	r->i++;
	for (;;)
	{
		unsigned char c;

		if (r->i >= r->n)
			return false;
		c = r->s[r->i];
		if (c == '"')
		{
			r->i++;
			return true;
		}
		if (c < 0x20)
			return false;
		if (c != '\\')
		{
			r->i++;				/* UTF-8 was checked as a whole */
			continue;
		}
		r->i++;
		if (r->i >= r->n)
			return false;
		c = r->s[r->i++];
		switch (c)
		{
			case '"':
			case '\\':
			case '/':
			case 'b':
			case 'f':
			case 'n':
			case 'r':
			case 't':
				break;
			case 'u':
				{
					int			u = ref_hex4(r);

					if (u < 0)
						return false;
					if (u == 0)
						return false;	/* \u0000: text cannot hold it */
					if (u >= 0xDC00 && u <= 0xDFFF)
						return false;	/* low surrogate alone */
					if (u >= 0xD800 && u <= 0xDBFF)
					{
						int			lo;

						/* must be followed at once by \u + a low surrogate */
						if (r->n - r->i < 2 || r->s[r->i] != '\\' || r->s[r->i + 1] != 'u')
							return false;
						r->i += 2;
						lo = ref_hex4(r);
						if (lo < 0xDC00 || lo > 0xDFFF)
							return false;
					}
					break;
				}
			default:
				return false;
		}
	}
}

static bool
ref_number(Ref *r)
{
	const unsigned char *s = r->s;
	size_t		n = r->n;
	size_t		start = r->i;

	if (r->i < n && s[r->i] == '-')
		r->i++;
	if (r->i >= n)
		return false;
	if (s[r->i] == '0')
		r->i++;
	else if (s[r->i] >= '1' && s[r->i] <= '9')
		while (r->i < n && s[r->i] >= '0' && s[r->i] <= '9')
			r->i++;
	else
		return false;
	if (r->i < n && s[r->i] == '.')
	{
		r->i++;
		if (r->i >= n || s[r->i] < '0' || s[r->i] > '9')
			return false;
		while (r->i < n && s[r->i] >= '0' && s[r->i] <= '9')
			r->i++;
	}
	if (r->i < n && (s[r->i] == 'e' || s[r->i] == 'E'))
	{
		r->i++;
		if (r->i < n && (s[r->i] == '+' || s[r->i] == '-'))
			r->i++;
		if (r->i >= n || s[r->i] < '0' || s[r->i] > '9')
			return false;
		while (r->i < n && s[r->i] >= '0' && s[r->i] <= '9')
			r->i++;
	}
	if (ref_huge_number(s + start, r->i - start))
		r->huge = true;
	return true;
}

/* Does an identifier-like character follow (which would glue onto a token)? */
static bool
ref_glued(Ref *r)
{
	unsigned char c;

	if (r->i >= r->n)
		return false;
	c = r->s[r->i];
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		(c >= '0' && c <= '9') || c == '_' || c >= 0x80;
}

static bool ref_value(Ref *r);

static bool
ref_container(Ref *r, bool object)
{
	unsigned char close = object ? '}' : ']';

	r->i++;
	if (++r->depth > r->max_depth)
		r->max_depth = r->depth;
	ref_ws(r);
	if (r->i < r->n && r->s[r->i] == close)
	{
		r->i++;
		r->depth--;
		return true;
	}
	for (;;)
	{
		if (object)
		{
			ref_ws(r);
			if (r->i >= r->n || r->s[r->i] != '"' || !ref_string(r))
				return false;
			ref_ws(r);
			if (r->i >= r->n || r->s[r->i] != ':')
				return false;
			r->i++;
		}
		if (!ref_value(r))
			return false;
		ref_ws(r);
		if (r->i >= r->n)
			return false;
		if (r->s[r->i] == ',')
		{
			r->i++;
			continue;
		}
		if (r->s[r->i] == close)
		{
			r->i++;
			r->depth--;
			return true;
		}
		return false;
	}
}

static bool
ref_value(Ref *r)
{
	ref_ws(r);
	if (r->i >= r->n)
		return false;
	switch (r->s[r->i])
	{
		case '{':
			return ref_container(r, true);
		case '[':
			return ref_container(r, false);
		case '"':
			return ref_string(r);
		case '-':
		case '0':
		case '1':
		case '2':
		case '3':
		case '4':
		case '5':
		case '6':
		case '7':
		case '8':
		case '9':
			return ref_number(r) && !ref_glued(r);
		default:
			{
				static const char *const words[] = {"true", "false", "null"};
				int			k;

				for (k = 0; k < 3; k++)
				{
					size_t		l = strlen(words[k]);

					if (r->n - r->i >= l && memcmp(r->s + r->i, words[k], l) == 0)
					{
						r->i += l;
						return !ref_glued(r);
					}
				}
				return false;
			}
	}
}

/*
 * ref_check: the STAGE_* check_json must stop at.  For a body that is not
 * JSON, either STAGE_NESTING or STAGE_JSON can be right (the nesting count
 * runs first, over whatever the text is): *either_json says so.
 */
static int
ref_check(const unsigned char *s, size_t n, bool *either_json)
{
	Ref			r = {s, n, 0, 0, 0, false};

	*either_json = false;
	if (n == 0)
		return STAGE_EMPTY;
	if (memchr(s, '\0', n) != NULL)
		return STAGE_NUL;
	if (!ref_utf8(s, n))
		return STAGE_UTF8;
	if (!ref_value(&r) || (ref_ws(&r), r.i != r.n))
	{
		*either_json = true;
		return STAGE_JSON;
	}
	if (r.max_depth > MAX_NESTING)
		return STAGE_NESTING;
	return r.huge ? STAGE_NUMBER : STAGE_OK;
}

/* ------------------------------------------------------------------------
 * Guarded copies: the body flush against an inaccessible page.
 * ------------------------------------------------------------------------
 */
static size_t page;
static unsigned char *area;		/* guard | room | guard | room | guard */
static size_t room;

static void
setup_guards(size_t max_len)
{
	page = (size_t) sysconf(_SC_PAGESIZE);
	room = ((max_len + page - 1) / page + 1) * page;
	area = mmap(NULL, 3 * page + 2 * room, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(area != MAP_FAILED, "mmap failed");
	CHECK(mprotect(area, page, PROT_NONE) == 0, "mprotect");
	CHECK(mprotect(area + page + room, page, PROT_NONE) == 0, "mprotect");
	CHECK(mprotect(area + 2 * page + 2 * room, page, PROT_NONE) == 0, "mprotect");
}

/* The copy that ends where the middle guard page begins. */
static const char *
copy_at_end(const uint8_t *data, size_t size)
{
	unsigned char *end = area + page + room;

	memcpy(end - size, data, size);
	return (const char *) (end - size);
}

/* The copy that starts where the middle guard page ends. */
static const char *
copy_at_start(const uint8_t *data, size_t size)
{
	unsigned char *start = area + 2 * page + room;

	memcpy(start, data, size);
	return (const char *) start;
}

static void
free_result(CheckResult *r)
{
	if (r->why)
		pfree(r->why);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	CheckResult a,
				b,
				c;
	int			expect;
	bool		either_json;

	if (area == NULL)
		setup_guards(1 << 20);
	if (size > (1 << 20))
		return 0;

	/* libFuzzer's own copy: an exact-size heap block, redzoned by ASan. */
	a = check_json((const char *) data, size, true);
	/* Flush against a guard page after it, and before it. */
	b = check_json(copy_at_end(data, size), size, true);
	c = check_json(copy_at_start(data, size), size, true);

	CHECK(a.ok == b.ok && a.ok == c.ok && a.stage == b.stage && a.stage == c.stage &&
		  a.rc == b.rc && a.rc == c.rc, "verdict depends on where the body is");
	CHECK(a.ok == (a.stage == 0), "ok/stage mismatch");
	if (!a.ok)
	{
		CHECK(a.why != NULL, "failure without a reason");
		CHECK(b.why != NULL && strcmp(a.why, b.why) == 0 && c.why != NULL &&
			  strcmp(a.why, c.why) == 0, "reason depends on where the body is");
		/* The reason goes into errdetail and into a jsonb string. */
		CHECK(ref_utf8((const unsigned char *) a.why, strlen(a.why)),
			  "reason is not valid UTF-8: %s", a.why);
	}

	/* The oracle. */
	expect = ref_check(data, size, &either_json);
	CHECK(a.stage == expect || (either_json && a.stage == STAGE_NESTING),
		  "check_json stage %d (rc %d), reference stage %d", a.stage, (int) a.rc, expect);

	/* Accepted with de-escaping => accepted without it. */
	if (a.ok)
	{
		CheckResult d = check_json((const char *) data, size, false);

		CHECK(d.ok, "accepted with need_escapes but refused without: rc %d", (int) d.rc);
		free_result(&d);
	}

	free_result(&a);
	free_result(&b);
	free_result(&c);
	return 0;
}
