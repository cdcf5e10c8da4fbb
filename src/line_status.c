/*-------------------------------------------------------------------------
 *
 * line_status.c
 *		The SQL-callable entry points of the line_status extension, and the
 *		module's initialisation.  Everything else lives in a file of its own:
 *		settings.c (GUCs), phone.c (normalisation), http.c (transport),
 *		twilio.c (request and answer).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_enum.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "phone.h"
#include "settings.h"
#include "twilio.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(line_status_lookup);

/* Column positions of line_status_result. */
enum
{
	COL_PHONE_NUMBER,
	COL_STATUS,
	COL_ERROR_CODE,
	COL_VALID,
	COL_COUNTRY_CODE,
	COL_CHECKED_AT,
	COL_CACHED,
	COL_RESPONSE,
	NUM_RESULT_COLS
};

void		_PG_init(void);

/* _PG_init: declare the settings when the library is loaded. */
void
_PG_init(void)
{
	ls_define_settings();
}

/*
 * status_datum: the line_status_status enum value for st.  The enum's type
 * comes from the function's own result descriptor, never from search_path,
 * so a same-named type elsewhere cannot be picked up.
 */
static Datum
status_datum(Oid enumtypid, LsStatus st)
{
	Oid			oid = GetSysCacheOid2(ENUMTYPOIDNAME, Anum_pg_enum_oid,
									  ObjectIdGetDatum(enumtypid),
									  CStringGetDatum(ls_status_names[st]));

	if (!OidIsValid(oid))
		elog(ERROR, "enum value \"%s\" is missing from type %u",
			 ls_status_names[st], enumtypid);
	return ObjectIdGetDatum(oid);
}

/* result_tuple: an LsResult as a line_status_result datum. */
static Datum
result_tuple(TupleDesc tupdesc, LsResult *r)
{
	Datum		values[NUM_RESULT_COLS];
	bool		nulls[NUM_RESULT_COLS];

	memset(nulls, true, sizeof(nulls));
	if (r->phone_number)
	{
		values[COL_PHONE_NUMBER] = CStringGetTextDatum(r->phone_number);
		nulls[COL_PHONE_NUMBER] = false;
	}
	if (r->status != LS_STATUS_NONE)
	{
		values[COL_STATUS] = status_datum(TupleDescAttr(tupdesc, COL_STATUS)->atttypid,
										  r->status);
		nulls[COL_STATUS] = false;
	}
	if (r->has_error_code)
	{
		values[COL_ERROR_CODE] = Int32GetDatum(r->error_code);
		nulls[COL_ERROR_CODE] = false;
	}
	values[COL_VALID] = BoolGetDatum(r->valid);
	nulls[COL_VALID] = false;
	if (r->country_code)
	{
		values[COL_COUNTRY_CODE] = CStringGetTextDatum(r->country_code);
		nulls[COL_COUNTRY_CODE] = false;
	}
	if (r->has_checked_at)
	{
		values[COL_CHECKED_AT] = TimestampTzGetDatum(r->checked_at);
		nulls[COL_CHECKED_AT] = false;
	}
	values[COL_CACHED] = BoolGetDatum(r->cached);
	nulls[COL_CACHED] = false;
	if (r->response)
	{
		values[COL_RESPONSE] = JsonbPGetDatum(r->response);
		nulls[COL_RESPONSE] = false;
	}
	return HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
}

/*
 * country_arg: the optional country_code argument, validated and
 * upper-cased, or NULL.  A bad value is the caller's mistake, so it is an
 * error rather than an invalid-number answer.
 */
static const char *
country_arg(FunctionCallInfo fcinfo, int argno, char *buf)
{
	text	   *t;

	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
		return NULL;
	t = PG_GETARG_TEXT_PP(argno);
	if (!phone_country_normalise(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), buf))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid country code"),
				 errdetail("A country code is two letters (ISO 3166-1 alpha-2), such as \"US\" or \"GB\".")));
	return buf;
}

/*
 * line_status_lookup: line_status(phone text, country_code text) returns
 * line_status_result.  NULL phone gives NULL; input that cannot be a phone
 * number gives valid = false without a request.
 */
Datum
line_status_lookup(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	char		cbuf[3];
	const char *country;
	char		number[PHONE_BUFSIZE];
	PhoneVerdict verdict;
	text	   *phone;
	LsResult	res;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "line_status must be declared to return a composite type");
	tupdesc = BlessTupleDesc(tupdesc);

	country = country_arg(fcinfo, 1, cbuf);
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	phone = PG_GETARG_TEXT_PP(0);

	verdict = phone_normalise(VARDATA_ANY(phone), VARSIZE_ANY_EXHDR(phone), number);
	if ((verdict != PHONE_E164 && verdict != PHONE_NATIONAL) ||
		(verdict == PHONE_NATIONAL && country == NULL))
		ls_result_rejected(&res);
	else
		ls_twilio_lookup(number, verdict == PHONE_NATIONAL ? country : NULL, &res);

	PG_RETURN_DATUM(result_tuple(tupdesc, &res));
}
