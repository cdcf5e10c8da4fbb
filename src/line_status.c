/*-------------------------------------------------------------------------
 *
 * line_status.c
 *		The SQL-callable entry points of the line_status extension, and the
 *		module's initialisation.  Everything else lives in a file of its own:
 *		settings.c (GUCs), phone.c (normalisation), http.c (transport),
 *		twilio.c (request and answer), cache.c (cache table and memo),
 *		bulk.c (the concurrent engine for arrays), trigger.c (the row
 *		trigger), worker.c (shared memory, statistics, background worker).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "bulk.h"
#include "cache.h"
#include "phone.h"
#include "settings.h"
#include "trigger.h"
#include "twilio.h"
#include "worker.h"

/*
 * PostgreSQL 15 is the only version built and tested.  It needs at least 15:
 * shmem_request_hook, InitMaterializedSRF and MarkGUCPrefixReserved.
 */
#if PG_VERSION_NUM < 150000
#error "line_status needs PostgreSQL 15 or later"
#endif

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(line_status_lookup);
PG_FUNCTION_INFO_V1(line_status_refresh);
PG_FUNCTION_INFO_V1(line_status_normalize);
PG_FUNCTION_INFO_V1(line_status_bulk);
PG_FUNCTION_INFO_V1(line_status_trigger);

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

/* What one call site keeps across calls (in fn_extra, for one query). */
typedef struct CallState
{
	TupleDesc	tupdesc;		/* line_status_result, blessed */
	LsCache		cache;
} CallState;

void		_PG_init(void);

/*
 * _PG_init: declare the settings when the library is loaded; with
 * shared_preload_libraries, also shared memory and the background worker.
 */
void
_PG_init(void)
{
	ls_define_settings();
	ls_worker_init();
}

/*
 * result_values: an LsResult as the columns of line_status_result, into
 * values/nulls (which the bulk function offsets by its input column).
 */
static void
result_values(CallState *st, LsResult *r, Datum *values, bool *nulls)
{
	memset(nulls, true, sizeof(bool) * NUM_RESULT_COLS);
	if (r->phone_number)
	{
		values[COL_PHONE_NUMBER] = CStringGetTextDatum(r->phone_number);
		nulls[COL_PHONE_NUMBER] = false;
	}
	if (r->status != LS_STATUS_NONE)
	{
		values[COL_STATUS] = ObjectIdGetDatum(st->cache.status_oids[r->status]);
		nulls[COL_STATUS] = false;
	}
	if (r->has_error_code)
	{
		values[COL_ERROR_CODE] = Int32GetDatum(r->error_code);
		nulls[COL_ERROR_CODE] = false;
	}
	values[COL_VALID] = BoolGetDatum(r->valid);
	nulls[COL_VALID] = !r->has_valid;
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
}

/* result_tuple: an LsResult as a line_status_result datum. */
static Datum
result_tuple(CallState *st, LsResult *r)
{
	Datum		values[NUM_RESULT_COLS];
	bool		nulls[NUM_RESULT_COLS];

	result_values(st, r, values, nulls);
	return HeapTupleGetDatum(heap_form_tuple(st->tupdesc, values, nulls));
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

/* normalise: phone_resolve() for a text datum. */
static PhoneVerdict
normalise(text *phone, const char *country, char number[PHONE_BUFSIZE])
{
	return phone_resolve(VARDATA_ANY(phone), VARSIZE_ANY_EXHDR(phone), country, number);
}

/*
 * call_state: this call site's state, set up on its first call: the result
 * descriptor (from the function's declaration, never from search_path) and
 * where the cache is.
 */
static CallState *
call_state(FunctionCallInfo fcinfo)
{
	CallState  *st = (CallState *) fcinfo->flinfo->fn_extra;

	if (st == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
		TupleDesc	tupdesc;

		st = palloc0(sizeof(CallState));
		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "function returning line_status_result called in a context that cannot accept it");
		st->tupdesc = BlessTupleDesc(tupdesc);
		ls_cache_init(&st->cache, get_func_namespace(fcinfo->flinfo->fn_oid));
		MemoryContextSwitchTo(old);
		fcinfo->flinfo->fn_extra = st;
	}
	return st;
}

/*
 * lookup: the body of line_status() and line_status_refresh().  NULL phone
 * gives NULL; input that cannot be a phone number gives valid = false
 * without a request.
 */
static Datum
lookup(FunctionCallInfo fcinfo, bool force)
{
	CallState  *st = call_state(fcinfo);
	char		cbuf[3];
	const char *country;
	char		number[PHONE_BUFSIZE];
	PhoneVerdict verdict;
	text	   *phone;
	LsResult	res;

	country = country_arg(fcinfo, 1, cbuf);
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	phone = PG_GETARG_TEXT_PP(0);

	verdict = normalise(phone, country, number);
	if (verdict == PHONE_E164)
		ls_check_number(&st->cache, number, NULL, force, &res);
	else if (verdict == PHONE_NATIONAL)
		ls_check_number(&st->cache, number, country, force, &res);
	else
		ls_result_rejected(&res);

	PG_RETURN_DATUM(result_tuple(st, &res));
}

/* line_status(phone text, country_code text) returns line_status_result */
Datum
line_status_lookup(PG_FUNCTION_ARGS)
{
	return lookup(fcinfo, false);
}

/*
 * line_status_refresh(phone text, country_code text): a fresh, paid lookup
 * whatever the cache holds; the answer replaces the cached one.
 */
Datum
line_status_refresh(PG_FUNCTION_ARGS)
{
	return lookup(fcinfo, true);
}

/*
 * line_status_normalize(phone text, country_code text) returns text: the
 * number as line_status() sends it ("+digits"; digits for a national number
 * it cannot rewrite as E.164), or NULL when the input cannot be a phone
 * number.  Useful to join results back to rows.
 */
Datum
line_status_normalize(PG_FUNCTION_ARGS)
{
	char		cbuf[3];
	const char *country = country_arg(fcinfo, 1, cbuf);
	char		number[PHONE_BUFSIZE];
	PhoneVerdict verdict;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	verdict = normalise(PG_GETARG_TEXT_PP(0), country, number);
	if (verdict != PHONE_E164 && verdict != PHONE_NATIONAL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(number));
}

/* Stands for an array element that cannot be a phone number. */
static BulkEntry rejected_entry;

/*
 * line_status_bulk: line_status(phones text[], country_code text) returns
 * setof line_status_bulk_result: one row per element, in input order, with
 * the element beside its answer.  Each distinct number is looked up once:
 * from the cache if it holds a fresh answer, else from Twilio, concurrently
 * (bulk.c).  Answers are spilled to a temporary file and rows go to a
 * tuplestore, which spills past work_mem.
 */
Datum
line_status_bulk(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	CallState  *st;
	char		cbuf[3];
	const char *country;
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *elem_nulls;
	int			n;
	int			i;
	BulkEntry **entries;
	LsBulk	   *b;
	MemoryContext row_cxt;
	MemoryContext old;

	InitMaterializedSRF(fcinfo, 0);
	st = call_state(fcinfo);
	country = country_arg(fcinfo, 1, cbuf);
	if (PG_ARGISNULL(0))
		return (Datum) 0;
	arr = PG_GETARG_ARRAYTYPE_P(0);
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &elem_nulls, &n);

	/* Each distinct number once. */
	b = ls_bulk_begin(&st->cache, Min(n, 1024));
	entries = palloc_extended(sizeof(BulkEntry *) * Max(n, 1), MCXT_ALLOC_HUGE);
	for (i = 0; i < n; i++)
	{
		char		number[PHONE_BUFSIZE];
		PhoneVerdict verdict;

		if ((i & 1023) == 0)
			CHECK_FOR_INTERRUPTS();
		if (elem_nulls[i])
		{
			entries[i] = NULL;
			continue;
		}
		verdict = normalise((text *) DatumGetPointer(elems[i]), country, number);
		if (verdict == PHONE_E164)
			entries[i] = ls_bulk_add(b, number, NULL);
		else if (verdict == PHONE_NATIONAL)
			entries[i] = ls_bulk_add(b, number, country);
		else
			entries[i] = &rejected_entry;
	}

	/* The cache first; what it lacks is fetched, concurrently. */
	ls_bulk_run(b);

	/* One row per element, in input order. */
	row_cxt = AllocSetContextCreate(CurrentMemoryContext, "line_status row",
									ALLOCSET_DEFAULT_SIZES);
	for (i = 0; i < n; i++)
	{
		Datum		values[NUM_RESULT_COLS + 1];
		bool		nulls[NUM_RESULT_COLS + 1];
		LsResult	res;

		if ((i & 1023) == 0)
			CHECK_FOR_INTERRUPTS();
		old = MemoryContextSwitchTo(row_cxt);
		values[0] = elems[i];
		nulls[0] = elem_nulls[i];
		if (entries[i] == NULL)
			memset(nulls + 1, true, sizeof(bool) * NUM_RESULT_COLS);
		else
		{
			if (entries[i] == &rejected_entry)
				ls_result_rejected(&res);
			else
				ls_bulk_result(b, entries[i], &res);
			result_values(st, &res, values + 1, nulls + 1);
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		MemoryContextSwitchTo(old);
		MemoryContextReset(row_cxt);
	}
	ls_bulk_end(b);
	return (Datum) 0;
}

/*
 * line_status_trigger(): the row trigger (trigger.c).  Its call state holds
 * where the cache is, like the other entry points'.
 */
Datum
line_status_trigger(PG_FUNCTION_ARGS)
{
	CallState  *st = (CallState *) fcinfo->flinfo->fn_extra;

	if (st == NULL)
	{
		st = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(CallState));
		ls_cache_init(&st->cache, get_func_namespace(fcinfo->flinfo->fn_oid));
		fcinfo->flinfo->fn_extra = st;
	}
	return line_status_trigger_impl(fcinfo, &st->cache);
}
