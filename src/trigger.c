/*-------------------------------------------------------------------------
 *
 * trigger.c
 *		line_status_trigger(): check the phone number of each new or changed
 *		row, configured by the trigger's arguments, without PL/pgSQL.
 *
 *	CREATE TRIGGER t BEFORE INSERT OR UPDATE OF phone ON contacts
 *		FOR EACH ROW EXECUTE FUNCTION line_status_trigger('phone', 'status', 'fill');
 *
 * Arguments: the phone column; the status column ('' for none); the policy:
 *	fill	store the status in the status column;
 *	reject	refuse the row (SQLSTATE 23L01) when the number is invalid or its
 *			status is one of the rejected ones (by default invalid and
 *			inactive; further arguments list them instead: active,
 *			reachable, unreachable, inactive, unknown, invalid), and store
 *			the status if a status column is given;
 *	async	accept the row at once and queue the number; the background
 *			worker fills the status column later.
 * An argument "country=XX" gives the country for national-format numbers.
 *
 * A row trigger sees one row at a time, so a multi-row INSERT or COPY with
 * fill or reject looks new numbers up one after another (the cache and the
 * statement's memo still make repeats free).  For bulk loads, use async, or
 * the statement-level line_status_fill_rows() trigger, which looks every new
 * number of the statement up at once.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "cache.h"
#include "phone.h"
#include "trigger.h"
#include "worker.h"

#define ERRCODE_LINE_STATUS_REJECTED MAKE_SQLSTATE('2','3','L','0','1')

/* What "reject" refuses: bits by LsStatus, plus invalid numbers. */
#define REJECT_INVALID (1 << LS_NUM_STATUSES)

typedef enum TriggerPolicy
{
	POLICY_FILL,
	POLICY_REJECT,
	POLICY_ASYNC
} TriggerPolicy;

/* A trigger's arguments, checked against its table. */
typedef struct TriggerConfig
{
	int			phone_attnum;
	int			status_attnum;	/* 0: none */
	Oid			status_type;	/* line_status_status, text or varchar */
	TriggerPolicy policy;
	int			reject;			/* bits, for POLICY_REJECT */
	char		country[3];		/* "" for none */
} TriggerConfig;

/* column_of: a column's number and type, or a clear error. */
static int
column_of(Relation rel, const char *name, const char *role, Oid *type)
{
	int			attnum = SPI_fnumber(RelationGetDescr(rel), name);

	if (attnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"%s\" does not exist",
						name, RelationGetRelationName(rel)),
				 errdetail("line_status_trigger() was given it as the %s column.", role)));
	*type = TupleDescAttr(RelationGetDescr(rel), attnum - 1)->atttypid;
	return attnum;
}

/*
 * parse_config: read and check the trigger's arguments; every mistake is an
 * error that names the argument.
 */
static void
parse_config(TriggerData *td, Oid status_enum, TriggerConfig *cfg)
{
	Trigger    *tg = td->tg_trigger;
	Relation	rel = td->tg_relation;
	Oid			type;
	int			i;

	memset(cfg, 0, sizeof(*cfg));
	if (tg->tgnargs < 3)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("line_status_trigger() needs at least three arguments"),
				 errhint("Give the phone column, the status column ('' for none) and a policy: "
						 "fill, reject or async.")));

	cfg->phone_attnum = column_of(rel, tg->tgargs[0], "phone", &type);
	if (type != TEXTOID && type != VARCHAROID && type != BPCHAROID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of relation \"%s\" has type %s, not text",
						tg->tgargs[0], RelationGetRelationName(rel), format_type_be(type)),
				 errhint("The phone column must be text, varchar or char.")));

	if (tg->tgargs[1][0] != '\0')
	{
		cfg->status_attnum = column_of(rel, tg->tgargs[1], "status", &type);
		if (type != status_enum && type != TEXTOID && type != VARCHAROID)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("column \"%s\" of relation \"%s\" has type %s, not line_status_status or text",
							tg->tgargs[1], RelationGetRelationName(rel), format_type_be(type))));
		cfg->status_type = type;
	}

	if (strcmp(tg->tgargs[2], "fill") == 0)
		cfg->policy = POLICY_FILL;
	else if (strcmp(tg->tgargs[2], "reject") == 0)
		cfg->policy = POLICY_REJECT;
	else if (strcmp(tg->tgargs[2], "async") == 0)
		cfg->policy = POLICY_ASYNC;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown line_status_trigger() policy \"%s\"", tg->tgargs[2]),
				 errhint("The policies are fill, reject and async.")));
	if (cfg->policy != POLICY_REJECT && cfg->status_attnum == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("line_status_trigger() policy \"%s\" needs a status column", tg->tgargs[2])));

	for (i = 3; i < tg->tgnargs; i++)
	{
		const char *a = tg->tgargs[i];
		int			s;

		if (strncmp(a, "country=", 8) == 0)
		{
			if (!phone_country_normalise(a + 8, strlen(a + 8), cfg->country))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid country code in line_status_trigger() argument \"%s\"", a)));
			continue;
		}
		if (cfg->policy != POLICY_REJECT)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unexpected line_status_trigger() argument \"%s\"", a),
					 errhint("Statuses to refuse are given only with the reject policy.")));
		if (strcmp(a, "invalid") == 0)
		{
			cfg->reject |= REJECT_INVALID;
			continue;
		}
		for (s = 0; s < LS_NUM_STATUSES; s++)
			if (strcmp(a, ls_status_names[s]) == 0)
				break;
		if (s == LS_NUM_STATUSES)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown status \"%s\" in line_status_trigger() arguments", a),
					 errhint("Use active, reachable, unreachable, inactive, unknown or invalid.")));
		cfg->reject |= 1 << s;
	}
	if (cfg->policy == POLICY_REJECT && cfg->reject == 0)
		cfg->reject = REJECT_INVALID | (1 << LS_STATUS_INACTIVE);
}

/*
 * phone_as_text: the phone column's value as the worker will compare it
 * (column::text): without the blank padding of a char(n) column.
 */
static char *
phone_as_text(TupleDesc desc, int attnum, text *t)
{
	char	   *s = text_to_cstring(t);

	if (TupleDescAttr(desc, attnum - 1)->atttypid == BPCHAROID)
	{
		int			len = strlen(s);

		while (len > 0 && s[len - 1] == ' ')
			s[--len] = '\0';
	}
	return s;
}

/* clipped: the input for a message, cut to a readable length. */
static char *
clipped(text *t)
{
	char	   *s = text_to_cstring(t);
	int			len = strlen(s);

	if (len > PHONE_MAX_INPUT)
		s[pg_mbcliplen(s, len, PHONE_MAX_INPUT)] = '\0';
	return s;
}

/* status_value: the value to store for a status, in the column's type. */
static Datum
status_value(TriggerConfig *cfg, LsCache *cache, LsStatus st)
{
	if (cfg->status_type == TEXTOID || cfg->status_type == VARCHAROID)
		return CStringGetTextDatum(ls_status_names[st]);
	return ObjectIdGetDatum(cache->status_oids[st]);
}

/*
 * line_status_trigger_impl: the trigger itself (see the file header).  It is
 * called from line_status.c, which holds the entry points and their state.
 * The arguments are checked on every call: a column may have been dropped
 * or retyped since the last one, and the check costs little beside a lookup.
 */
Datum
line_status_trigger_impl(FunctionCallInfo fcinfo, LsCache *cache)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TriggerConfig cfg;
	HeapTuple	row;
	TupleDesc	desc;
	Datum		phone;
	bool		isnull;
	char		number[PHONE_BUFSIZE];
	PhoneVerdict verdict;
	const char *country;
	LsResult	res;
	text	   *t;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("line_status_trigger() must be called as a trigger")));
	if (!TRIGGER_FIRED_FOR_ROW(td->tg_event) || !TRIGGER_FIRED_BEFORE(td->tg_event) ||
		TRIGGER_FIRED_BY_DELETE(td->tg_event) || TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("line_status_trigger() must be a BEFORE INSERT OR UPDATE ... FOR EACH ROW trigger")));

	parse_config(td, cache->status_type, &cfg);
	desc = RelationGetDescr(td->tg_relation);
	row = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	phone = heap_getattr(row, cfg.phone_attnum, desc, &isnull);

	/* An UPDATE that leaves the number as it was changes nothing. */
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		bool		oldnull;
		Datum		old = heap_getattr(td->tg_trigtuple, cfg.phone_attnum, desc, &oldnull);

		if (isnull == oldnull &&
			(isnull || datumIsEqual(old, phone, false, -1)))
			return PointerGetDatum(row);
	}

	if (isnull)
	{
		if (cfg.status_attnum != 0)
		{
			bool		nulls = true;
			Datum		v = (Datum) 0;

			row = heap_modify_tuple_by_cols(row, desc, 1, &cfg.status_attnum, &v, &nulls);
		}
		return PointerGetDatum(row);
	}

	t = DatumGetTextPP(phone);
	country = cfg.country[0] ? cfg.country : NULL;
	verdict = phone_resolve(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), country, number);

	if (cfg.policy == POLICY_ASYNC)
	{
		if (verdict == PHONE_E164 || verdict == PHONE_NATIONAL)
			ls_worker_enqueue(cache, number, verdict == PHONE_NATIONAL ? country : NULL,
							  RelationGetRelid(td->tg_relation),
							  td->tg_trigger->tgargs[0], td->tg_trigger->tgargs[1],
							  phone_as_text(desc, cfg.phone_attnum, t));
		/* The worker fills the column; until then it is NULL. */
		{
			bool		nulls = true;
			Datum		v = (Datum) 0;

			row = heap_modify_tuple_by_cols(row, desc, 1, &cfg.status_attnum, &v, &nulls);
		}
		return PointerGetDatum(row);
	}

	if (verdict == PHONE_E164)
		ls_check_number(cache, number, NULL, false, &res);
	else if (verdict == PHONE_NATIONAL)
		ls_check_number(cache, number, country, false, &res);
	else
		ls_result_rejected(&res);

	if (cfg.policy == POLICY_REJECT)
	{
		bool		invalid = res.has_valid && !res.valid;

		if ((invalid && (cfg.reject & REJECT_INVALID)) ||
			(!invalid && res.status != LS_STATUS_NONE && (cfg.reject & (1 << res.status))))
			ereport(ERROR,
					(errcode(ERRCODE_LINE_STATUS_REJECTED),
					 errmsg("phone number \"%s\" is %s", clipped(t),
							invalid ? "not valid" : ls_status_names[res.status]),
					 errdetail("Trigger \"%s\" on \"%s\" refuses rows whose number is %s.",
							   td->tg_trigger->tgname, RelationGetRelationName(td->tg_relation),
							   invalid ? "invalid" : ls_status_names[res.status]),
					 errtablecol(td->tg_relation, cfg.phone_attnum)));
	}

	if (cfg.status_attnum != 0)
	{
		bool		nulls = res.status == LS_STATUS_NONE;
		Datum		v = nulls ? (Datum) 0 : status_value(&cfg, cache, res.status);

		row = heap_modify_tuple_by_cols(row, desc, 1, &cfg.status_attnum, &v, &nulls);
	}
	return PointerGetDatum(row);
}
