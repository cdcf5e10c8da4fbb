/*-------------------------------------------------------------------------
 *
 * twilio.c
 *		What is specific to Twilio Lookup v2: the request URL, which failures
 *		are retried and how long to back off, the errors a caller sees, and
 *		reading a 200 answer into an LsResult.
 *
 * Answers are checked with PostgreSQL's non-throwing JSON parser before
 * jsonb_in() sees them, so a body that is not JSON becomes our own clear
 * error, never a crash or an error from deep inside the JSON code.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "common/pg_prng.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/numeric.h"

#include "settings.h"
#include "worker.h"
#include "twilio.h"

/* Backoff: 200 ms doubling per attempt, at most 10 s; Retry-After up to 60 s. */
#define BACKOFF_BASE_MS 200
#define BACKOFF_MAX_MS 10000
#define RETRY_AFTER_MAX_MS 60000

/* Deepest nesting of arrays and objects accepted in an answer (Twilio's: 3). */
#define MAX_NESTING 1000

/* Longest piece of Twilio's error message quoted in a detail. */
#define MAX_QUOTED 200

const char *const ls_status_names[LS_NUM_STATUSES] = {
	"active", "reachable", "unreachable", "inactive", "unknown"
};

/*
 * ls_result_rejected: the answer for input that cannot be a phone number:
 * valid = false and everything else NULL, no request made.
 */
void
ls_result_rejected(LsResult *res)
{
	memset(res, 0, sizeof(*res));
	res->status = LS_STATUS_NONE;
	res->has_valid = true;
	res->valid = false;
}

/*
 * ls_twilio_check_credentials: fail before any request when the
 * credentials are not configured.
 */
void
ls_twilio_check_credentials(void)
{
	if (ls_account_sid == NULL || ls_account_sid[0] == '\0' ||
		ls_auth_token() == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("Twilio credentials are not configured"),
				 errdetail("line_status.account_sid and line_status.auth_token or line_status.auth_token_file must be set."),
				 errhint("As a superuser, ALTER SYSTEM SET line_status.account_sid and "
						 "line_status.auth_token_file (a file private to the server), then SELECT pg_reload_conf().")));
}

/* append_path_segment: percent-encode s as one URL path segment or query value. */
static void
append_encoded(StringInfo buf, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;

		if ((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
			(c >= 'a' && c <= 'z') || c == '-' || c == '.' || c == '_' || c == '~')
			appendStringInfoChar(buf, (char) c);
		else
		{
			appendStringInfoChar(buf, '%');
			appendStringInfoChar(buf, hex[c >> 4]);
			appendStringInfoChar(buf, hex[c & 0x0F]);
		}
	}
}

/*
 * ls_twilio_url: the Lookup URL for a normalised number and an optional
 * country.  The number is one percent-encoded path segment, so even if it
 * held "/", "?" or "#" it could not change the path or the query.
 */
char *
ls_twilio_url(const char *number, const char *country)
{
	StringInfoData buf;
	int			len = strlen(ls_api_url);

	while (len > 0 && ls_api_url[len - 1] == '/')
		len--;
	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, ls_api_url, len);
	appendStringInfoString(&buf, "/v2/PhoneNumbers/");
	append_encoded(&buf, number);
	appendStringInfoString(&buf, "?Fields=line_status");
	if (country != NULL)
	{
		appendStringInfoString(&buf, "&CountryCode=");
		append_encoded(&buf, country);
	}
	return buf.data;
}

/* ls_twilio_start: start the request for url with the configured credentials. */
void
ls_twilio_start(LsTransfer *t, const char *url)
{
	ls_http_start(t, url, ls_account_sid, ls_auth_token());
}

/*
 * ls_twilio_verdict: 429, 5xx and connection faults are worth another try;
 * timeouts only before the request went out (after that, Twilio may have
 * answered and charged); everything else is final.
 */
LsVerdict
ls_twilio_verdict(LsTransfer *t)
{
	switch (t->result)
	{
		case CURLE_OK:
			if (t->http_status == 200)
				return LS_ANSWERED;
			if (t->http_status == 429 || t->http_status >= 500)
				return LS_RETRY;
			return LS_FAILED;
		case CURLE_COULDNT_CONNECT:
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_SEND_ERROR:
		case CURLE_RECV_ERROR:
		case CURLE_GOT_NOTHING:
			return LS_RETRY;
		case CURLE_OPERATION_TIMEDOUT:
			{
				LsTiming timing;

				ls_http_timing(t, &timing);
				return timing.sent ? LS_FAILED : LS_RETRY;
			}
		default:
			return LS_FAILED;
	}
}

/*
 * ls_twilio_backoff_ms: how long to wait before retry number attempt+1:
 * Retry-After when the server sent it, else exponential backoff with
 * jitter (half fixed, half random) so that many clients do not retry in step.
 */
long
ls_twilio_backoff_ms(int attempt, long retry_after_ms)
{
	long		d;

	if (retry_after_ms >= 0)
		return Min(retry_after_ms, RETRY_AFTER_MAX_MS);
	d = BACKOFF_BASE_MS;
	while (attempt-- > 0 && d < BACKOFF_MAX_MS)
		d *= 2;
	d = Min(d, BACKOFF_MAX_MS);
	return d / 2 + (long) (pg_prng_double(&pg_global_prng_state) * (d / 2));
}

/*
 * nesting: how deeply arrays and objects nest in a JSON text (strings
 * skipped), found before the recursive parser could run out of stack.
 */
static int
nesting(const char *s, size_t len)
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

/*
 * check_number: a JSON parser callback that flags numbers jsonb's numeric
 * cannot hold (numeric_in would raise "value overflows numeric format"):
 * more than 1,000 characters, or an exponent beyond +-1,000.  Twilio's
 * numbers are small integers.
 */
static void
check_number(void *state, char *token, JsonTokenType type)
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
	/* no labs(): labs(LONG_MIN) is undefined (found by fuzzing) */
	if (errno == ERANGE || x > 1000 || x < -1000)
		*(bool *) state = true;
}

/*
 * check_json: is body (len bytes) well-formed UTF-8 JSON that jsonb can
 * hold?  On failure, put the reason into *why.
 */
static bool
check_json(const char *body, size_t len, const char **why)
{
	JsonLexContext *lex;
	JsonParseErrorType rc;
	JsonSemAction sem = {0};
	bool		huge = false;

	if (len == 0)
	{
		*why = "The body is empty.";
		return false;
	}
	if (memchr(body, '\0', len) != NULL)
	{
		*why = "The body contains a NUL byte.";
		return false;
	}
	if (!pg_verify_mbstr(PG_UTF8, body, len, true))
	{
		*why = "The body is not valid UTF-8.";
		return false;
	}
	if (nesting(body, len) > MAX_NESTING)
	{
		*why = psprintf("The body is nested more than %d levels deep.", MAX_NESTING);
		return false;
	}
	lex = makeJsonLexContextCstringLen((char *) body, len, PG_UTF8, true);
	sem.semstate = &huge;
	sem.scalar = check_number;
	rc = pg_parse_json(lex, &sem);
	if (rc != JSON_SUCCESS)
	{
		*why = psprintf("The body is not valid JSON: %s", json_errdetail(rc, lex));
		return false;
	}
	if (huge)
	{
		*why = "The body holds a number too large or too precise for PostgreSQL.";
		return false;
	}
	return true;
}

/* body_to_jsonb: a checked body as jsonb, converted to the server encoding. */
static Jsonb *
body_to_jsonb(const char *body, size_t len)
{
	char	   *text = pg_any_to_server(body, len, PG_UTF8);

	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
}

/* get_key: the value of key in a jsonb object, or NULL if absent. */
static JsonbValue *
get_key(JsonbContainer *obj, const char *key, JsonbValue *buf)
{
	return getKeyJsonValueFromContainer(obj, key, strlen(key), buf);
}

/* jsonb_type_name: a JSON type name, for error details. */
static const char *
jsonb_type_name(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvString:
			return "a string";
		case jbvNumeric:
			return "a number";
		case jbvBool:
			return "a boolean";
		case jbvBinary:
			return JsonContainerIsArray(v->val.binary.data) ? "an array" : "an object";
		default:
			return "a JSON value";
	}
}

/* text_of: a palloc'd C string from a jsonb string value. */
static char *
text_of(JsonbValue *v)
{
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/*
 * bad_answer: describe a 200 answer that is not what Twilio sends; false,
 * for the caller to return.
 */
static bool
bad_answer(LsFailure *f, const char *number, const char *detail)
{
	memset(f, 0, sizeof(*f));
	f->sqlstate = ERRCODE_EXTERNAL_ROUTINE_EXCEPTION;
	f->message = psprintf("unexpected answer from Twilio for \"%s\"", number);
	f->detail = pstrdup(detail);
	f->hint = "Check that line_status.api_url points to Twilio Lookup.";
	f->code = 200;
	return false;
}

/* int_of: a jsonb number as int32, false when it is not one. */
static bool
int_of(JsonbValue *v, int32 *out)
{
	bool		err = false;

	*out = numeric_int4_opt_error(v->val.numeric, &err);
	return !err;
}

/*
 * map_status: Twilio's status text to our enum, case-insensitively (the API
 * sends lowercase, the product page shows capitalised).  A value outside the
 * five becomes unknown; the raw answer stays in the response column.
 */
static LsStatus
map_status(const char *s, int len)
{
	int			i;

	for (i = 0; i < LS_NUM_STATUSES; i++)
	{
		if (strlen(ls_status_names[i]) == (size_t) len &&
			pg_strncasecmp(s, ls_status_names[i], len) == 0)
			return (LsStatus) i;
	}
	return LS_STATUS_UNKNOWN;
}

/*
 * ls_twilio_read: read a 200 answer into res.  When it is not the JSON
 * object Twilio sends, describe why in f and return false.
 */
bool
ls_twilio_read(LsTransfer *t, const char *number, LsResult *res, LsFailure *f)
{
	const char *why;
	Jsonb	   *jb;
	JsonbValue	buf;
	JsonbValue *v;

	if (!check_json(t->body ? t->body : "", t->body_len, &why))
		return bad_answer(f, number, why);
	jb = body_to_jsonb(t->body, t->body_len);
	if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb))
		return bad_answer(f, number, "The body is not a JSON object.");

	memset(res, 0, sizeof(*res));
	res->status = LS_STATUS_NONE;
	res->response = jb;
	res->has_checked_at = true;
	res->checked_at = GetCurrentTimestamp();

	v = get_key(&jb->root, "valid", &buf);
	if (v == NULL || v->type != jbvBool)
		return bad_answer(f, number, "\"valid\" is missing or not a boolean.");
	res->has_valid = true;
	res->valid = v->val.boolean;

	v = get_key(&jb->root, "phone_number", &buf);
	if (v != NULL && v->type == jbvString)
		res->phone_number = text_of(v);
	else if (v == NULL || v->type == jbvNull)
		res->phone_number = pstrdup(number);
	else
		return bad_answer(f, number, psprintf("\"phone_number\" is %s, not a string.", jsonb_type_name(v)));

	v = get_key(&jb->root, "country_code", &buf);
	if (v != NULL && v->type == jbvString)
		res->country_code = text_of(v);
	else if (v != NULL && v->type != jbvNull)
		return bad_answer(f, number, psprintf("\"country_code\" is %s, not a string.", jsonb_type_name(v)));

	v = get_key(&jb->root, "line_status", &buf);
	if (v == NULL || v->type == jbvNull)
	{
		ls_stats_answer(LS_STATUS_NONE);
		return true;
	}
	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		return bad_answer(f, number, psprintf("\"line_status\" is %s, not an object.", jsonb_type_name(v)));
	else
	{
		JsonbContainer *ls = v->val.binary.data;
		JsonbValue	buf2;
		JsonbValue *s;

		s = get_key(ls, "status", &buf2);
		if (s != NULL && s->type == jbvString)
			res->status = map_status(s->val.string.val, s->val.string.len);
		else if (s != NULL && s->type != jbvNull)
			return bad_answer(f, number, psprintf("\"line_status.status\" is %s, not a string.", jsonb_type_name(s)));

		s = get_key(ls, "error_code", &buf2);
		if (s != NULL && s->type == jbvNumeric)
		{
			if (!int_of(s, &res->error_code))
				return bad_answer(f, number, "\"line_status.error_code\" is out of range.");
			res->has_error_code = true;
		}
		else if (s != NULL && s->type != jbvNull)
			return bad_answer(f, number, psprintf("\"line_status.error_code\" is %s, not a number.", jsonb_type_name(s)));
	}
	ls_stats_answer(res->status);
	return true;
}

/*
 * twilio_error_detail: "Twilio answered HTTP 401 with error 20003:
 * Authenticate." from an error body, or just the status when the body is not
 * Twilio's error JSON.
 */
static char *
twilio_error_detail(LsTransfer *t, int *code)
{
	const char *why;

	*code = 0;
	if (t->body_len > 0 && check_json(t->body, t->body_len, &why))
	{
		Jsonb	   *jb = body_to_jsonb(t->body, t->body_len);

		if (JB_ROOT_IS_OBJECT(jb) && !JB_ROOT_IS_SCALAR(jb))
		{
			JsonbValue	b1,
						b2;
			JsonbValue *c = get_key(&jb->root, "code", &b1);
			JsonbValue *m = get_key(&jb->root, "message", &b2);

			if (c != NULL && c->type == jbvNumeric && int_of(c, code))
			{
				if (m != NULL && m->type == jbvString)
					return psprintf("Twilio answered HTTP %ld with error %d: %.*s.",
									t->http_status, *code,
									pg_mbcliplen(m->val.string.val, m->val.string.len, MAX_QUOTED),
									m->val.string.val);
				return psprintf("Twilio answered HTTP %ld with error %d.",
								t->http_status, *code);
			}
		}
	}
	return psprintf("Twilio answered HTTP %ld.", t->http_status);
}

/*
 * timeout_detail: say which phase ran out of time, with what each phase
 * took, since "timed out" alone does not tell a DNS problem from a slow API.
 */
static char *
timeout_detail(LsTransfer *t)
{
	LsTiming	tm;
	const char *phase;

	ls_http_timing(t, &tm);
	if (tm.headers)
		phase = "reading the answer";
	else if (tm.sent)
		phase = "waiting for the answer";
	else if (tm.reused)
		phase = "sending the request";
	else if (tm.dns == 0)
		phase = "resolving the host name";
	else if (tm.connect == 0)
		phase = "connecting";
	else if (tm.tls == 0 && pg_strncasecmp(ls_api_url, "https:", 6) == 0)
		phase = "in the TLS handshake";
	else
		phase = "sending the request";
	return psprintf("The request timed out after %.0f ms %s (%sDNS %.0f ms, connect %.0f ms, TLS %.0f ms, first byte %.0f ms).",
					tm.total, phase, tm.reused ? "on a kept connection; " : "",
					tm.dns, tm.connect, tm.tls, tm.first_byte);
}

/*
 * ls_twilio_failure: describe a transfer that failed for good, in f.  The
 * message names the number; the detail says what happened; the hint says
 * what to change where that helps.  Failures that would hit every number
 * alike (credentials refused, TLS, no connection) are marked fatal.
 */
void
ls_twilio_failure(LsTransfer *t, const char *number, int attempts, LsFailure *f)
{
	char	   *tries = attempts > 1 ? psprintf(" after %d attempts", attempts) : "";
	const char *curlmsg = t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->result);
	long		status = t->http_status;
	int			sqlstate = ERRCODE_EXTERNAL_ROUTINE_EXCEPTION;
	char	   *message = psprintf("could not look up line status of \"%s\"", number);
	char	   *detail;
	const char *hint = NULL;
	int			code;

	bool		fatal = false;

	code = 0;
	switch (t->result)
	{
		case CURLE_OK:
			detail = twilio_error_detail(t, &code);
			if (code == 0)
				code = (int) status;
			if (status == 401 || status == 403)
			{
				sqlstate = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
				message = "Twilio refused the credentials";
				fatal = true;
				hint = "Check line_status.account_sid and line_status.auth_token.";
			}
			else if (status == 429)
			{
				sqlstate = ERRCODE_CONFIGURATION_LIMIT_EXCEEDED;
				detail = psprintf("%s Still rate limited%s.", detail, tries);
				hint = "Send fewer requests at once, or raise line_status.max_retries.";
			}
			else if (status == 400)
				sqlstate = ERRCODE_INVALID_PARAMETER_VALUE;
			else if (status >= 300 && status < 400)
			{
				detail = psprintf("%s Redirects are not followed.", detail);
				hint = "Check line_status.api_url.";
			}
			else if (status >= 500)
				detail = psprintf("%s Gave up%s.", detail, tries);
			break;
		case CURLE_OPERATION_TIMEDOUT:
			sqlstate = ERRCODE_CONNECTION_FAILURE;
			detail = timeout_detail(t);
			hint = "Raise line_status.timeout or line_status.connect_timeout if Twilio is merely slow.";
			break;
		case CURLE_FILESIZE_EXCEEDED:
			detail = psprintf("The answer was larger than %d bytes.", LS_HTTP_MAX_BODY);
			hint = "Check that line_status.api_url points to Twilio Lookup.";
			break;
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_SSL_CERTPROBLEM:
			sqlstate = ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION;
			detail = psprintf("The TLS connection failed%s: %s", tries, curlmsg);
			hint = "Check the host name in line_status.api_url; if the API uses a private CA, set line_status.ca_file to its certificate bundle.";
			fatal = true;
			break;
		case CURLE_COULDNT_CONNECT:
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_RESOLVE_PROXY:
			sqlstate = ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION;
			detail = psprintf("Could not connect to the API%s: %s", tries, curlmsg);
			hint = "Check line_status.api_url and the network.";
			fatal = true;
			break;
		default:
			sqlstate = ERRCODE_CONNECTION_FAILURE;
			detail = psprintf("The request failed%s: %s", tries, curlmsg);
			break;
	}
	f->sqlstate = sqlstate;
	f->message = message;
	f->detail = detail;
	f->hint = hint;
	f->fatal = fatal;
	f->code = code;
}

/* ls_twilio_raise: raise a failure as an ERROR. */
void
ls_twilio_raise(LsFailure *f)
{
	ls_stats_error(f);
	ereport(ERROR,
			(errcode(f->sqlstate),
			 errmsg_internal("%s", f->message),
			 errdetail_internal("%s", f->detail),
			 f->hint ? errhint("%s", f->hint) : 0));
}

/* push_string_pair: add "key": "value" to the object being built. */
static void
push_string_pair(JsonbParseState **state, const char *key, const char *value)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = (char *) key;
	v.val.string.len = strlen(key);
	pushJsonbValue(state, WJB_KEY, &v);
	v.val.string.val = (char *) value;
	v.val.string.len = strlen(value);
	pushJsonbValue(state, WJB_VALUE, &v);
}

/*
 * ls_result_failed: the result that stands for a failure when
 * line_status.on_error = unknown: status unknown, Twilio's error code (or
 * the HTTP status) in error_code, valid NULL, and the error in response.
 */
void
ls_result_failed(LsFailure *f, LsResult *res)
{
	JsonbParseState *state = NULL;

	ls_stats_error(f);
	memset(res, 0, sizeof(*res));
	res->status = LS_STATUS_UNKNOWN;
	res->has_error_code = f->code != 0;
	res->error_code = f->code;
	res->has_checked_at = true;
	res->checked_at = GetCurrentTimestamp();
	res->failed = true;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	push_string_pair(&state, "error", f->message);
	push_string_pair(&state, "detail", f->detail);
	push_string_pair(&state, "sqlstate", unpack_sql_state(f->sqlstate));
	res->response = JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));
}

/*
 * ls_twilio_lookup: one number, start to finish: request, retries with
 * backoff, then the answer, or an error (or, with line_status.on_error =
 * unknown, a result that records the failure).
 */
void
ls_twilio_lookup(const char *number, const char *country, LsResult *res)
{
	char	   *url;
	int			attempt;
	LsFailure	failure;

	ls_twilio_check_credentials();
	url = ls_twilio_url(number, country);
	for (attempt = 0;; attempt++)
	{
		LsTransfer *t = ls_http_acquire();
		LsTransfer *done;
		LsVerdict	verdict;

		t->max_sends = ls_max_retries + 1 - attempt;
		ls_twilio_start(t, url);
		done = ls_http_wait(-1);
		Assert(done == t);
		(void) done;
		/* libcurl's own resends count as attempts */
		attempt += Max(t->sends, 1) - 1;
		verdict = ls_twilio_verdict(t);
		if (verdict == LS_ANSWERED)
		{
			bool		ok = ls_twilio_read(t, number, res, &failure);

			ls_http_release(t);
			if (ok)
				return;
			break;
		}
		if (verdict == LS_RETRY && attempt < ls_max_retries)
		{
			long		delay = ls_twilio_backoff_ms(attempt, t->retry_after_ms);

			ls_http_release(t);
			ls_stats_retry();
			ls_http_sleep(delay);
			continue;
		}
		ls_twilio_failure(t, number, attempt + 1, &failure);
		ls_http_release(t);
		break;
	}
	if (failure.fatal || ls_on_error == LS_ON_ERROR_ERROR)
		ls_twilio_raise(&failure);
	ls_result_failed(&failure, res);
}
