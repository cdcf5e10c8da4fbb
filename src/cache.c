/*-------------------------------------------------------------------------
 *
 * cache.c
 *		Never pay twice for the same number: the line_status_cache table and
 *		a per-statement memo.
 *
 * Reads go straight to the primary-key index (no SPI, no planner), so a
 * cached answer costs about what one index probe of a join costs.  They
 * need no privilege of the caller: ordinary roles have none on the table.
 *
 * Writes run through SPI as the table's owner, with
 * SECURITY_RESTRICTED_OPERATION, with every name schema-qualified, so the
 * caller's search_path and rights do not matter.  Before writing a number
 * we take a transaction-level advisory lock on it without waiting; if
 * another transaction is storing the same number, we leave it to that
 * one.  So cache writes never wait on each other and cannot deadlock, and
 * INSERT ... ON CONFLICT makes duplicate keys impossible.
 *
 * The memo remembers every answer of the current top-level statement (up to
 * MEMO_MAX entries), so a number that appears twice in one statement is
 * asked for once, even when caching is off and even before the statement's
 * own cache writes are visible to it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_enum.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "common/hashfn.h"

#include "cache.h"
#include "phone.h"
#include "settings.h"

/* Columns of line_status_cache, in table order. */
enum
{
	CC_PHONE_NUMBER = 1,
	CC_STATUS,
	CC_ERROR_CODE,
	CC_VALID,
	CC_COUNTRY_CODE,
	CC_RESPONSE,
	CC_CHECKED_AT,
	CC_NATTS = CC_CHECKED_AT
};

/* Columns of line_status_cache_alias. */
enum
{
	CA_COUNTRY_CODE = 1,
	CA_NATIONAL_NUMBER,
	CA_PHONE_NUMBER
};

/* First key of our advisory locks: "LS" in ASCII, to keep clear of users'. */
#define ADVISORY_CLASS 0x4C53

#define MEMO_MAX 10000

/* Memo key: "+digits" or "CC:digits". */
#define MEMO_KEYLEN (PHONE_BUFSIZE + 4)

typedef struct MemoEntry
{
	char		key[MEMO_KEYLEN];
	LsResult	res;
} MemoEntry;

static MemoryContext memo_cxt = NULL;
static HTAB *memo = NULL;
static LocalTransactionId memo_lxid = InvalidLocalTransactionId;
static TimestampTz memo_stmt = 0;

/* Saved plans for writes, and the schema they were made for. */
static SPIPlanPtr put_plan = NULL;
static SPIPlanPtr alias_plan = NULL;
static Oid	plans_nsp = InvalidOid;

/*
 * ls_cache_init: find the extension's objects next to the calling function
 * (its schema is the extension's), never through search_path.  A missing
 * cache table (an old extension version) leaves caching off.
 */
void
ls_cache_init(LsCache *c, Oid fn_oid)
{
	int			i;

	memset(c, 0, sizeof(*c));
	c->nsp = get_func_namespace(fn_oid);
	c->status_type = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
									 CStringGetDatum("line_status_status"),
									 ObjectIdGetDatum(c->nsp));
	if (!OidIsValid(c->status_type))
		elog(ERROR, "type line_status_status is missing from the extension's schema");
	for (i = 0; i < LS_NUM_STATUSES; i++)
	{
		c->status_oids[i] = GetSysCacheOid2(ENUMTYPOIDNAME, Anum_pg_enum_oid,
											ObjectIdGetDatum(c->status_type),
											CStringGetDatum(ls_status_names[i]));
		if (!OidIsValid(c->status_oids[i]))
			elog(ERROR, "enum value \"%s\" is missing from line_status_status",
				 ls_status_names[i]);
	}

	c->cache_rel = get_relname_relid("line_status_cache", c->nsp);
	c->alias_rel = get_relname_relid("line_status_cache_alias", c->nsp);
	if (OidIsValid(c->cache_rel) && OidIsValid(c->alias_rel))
	{
		Relation	rel = table_open(c->cache_rel, AccessShareLock);

		c->cache_idx = RelationGetPrimaryKeyIndex(rel);
		c->owner = rel->rd_rel->relowner;
		if (RelationGetDescr(rel)->natts != CC_NATTS)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("line_status_cache does not have the expected columns"),
					 errhint("Do not alter the extension's tables; ALTER EXTENSION line_status UPDATE instead.")));
		table_close(rel, NoLock);
		rel = table_open(c->alias_rel, AccessShareLock);
		c->alias_idx = RelationGetPrimaryKeyIndex(rel);
		table_close(rel, NoLock);
	}
	if (!OidIsValid(c->cache_idx) || !OidIsValid(c->alias_idx))
		c->cache_rel = InvalidOid;
}

/* ls_cache_enabled: is there a cache table, and is caching switched on? */
bool
ls_cache_enabled(LsCache *c)
{
	return OidIsValid(c->cache_rel) && ls_cache_ttl_s > 0;
}

/*
 * probe: fetch the row with key (a text) from heap via its unique index,
 * into slot; false if there is none.
 */
static bool
probe(Relation heap, Relation idx, Datum key, TupleTableSlot *slot)
{
	ScanKeyData skey;
	IndexScanDesc scan;
	bool		found;
	Snapshot	snap = ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot();

	ScanKeyInit(&skey, 1, BTEqualStrategyNumber, F_TEXTEQ, key);
	skey.sk_collation = idx->rd_indcollation[0];
	scan = index_beginscan(heap, idx, snap, 1, 0);
	index_rescan(scan, &skey, 1, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	return found;
}

/* status_of: the LsStatus of an enum value of line_status_status. */
static LsStatus
status_of(LsCache *c, Oid v)
{
	int			i;

	for (i = 0; i < LS_NUM_STATUSES; i++)
		if (c->status_oids[i] == v)
			return (LsStatus) i;
	return LS_STATUS_UNKNOWN;
}

/*
 * resolve_alias: the E.164 key that a national number and country were
 * stored under, or NULL.
 */
static char *
resolve_alias(LsCache *c, const char *number, const char *country)
{
	Relation	heap = table_open(c->alias_rel, AccessShareLock);
	Relation	idx = index_open(c->alias_idx, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(heap, NULL);
	ScanKeyData skey[2];
	IndexScanDesc scan;
	Snapshot	snap = ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot();
	char	   *e164 = NULL;

	ScanKeyInit(&skey[0], 1, BTEqualStrategyNumber, F_TEXTEQ, CStringGetTextDatum(country));
	skey[0].sk_collation = idx->rd_indcollation[0];
	ScanKeyInit(&skey[1], 2, BTEqualStrategyNumber, F_TEXTEQ, CStringGetTextDatum(number));
	skey[1].sk_collation = idx->rd_indcollation[1];
	scan = index_beginscan(heap, idx, snap, 2, 0);
	index_rescan(scan, skey, 2, NULL, 0);
	if (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		Datum		d = slot_getattr(slot, CA_PHONE_NUMBER, &isnull);

		if (!isnull)
			e164 = TextDatumGetCString(d);
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(idx, NoLock);
	table_close(heap, NoLock);
	return e164;
}

/*
 * ls_cache_get: the cached answer for a number (E.164, or national with its
 * country) if one is younger than line_status.cache_ttl.  The result has
 * cached = true and the original checked_at.
 */
bool
ls_cache_get(LsCache *c, const char *number, const char *country, LsResult *res)
{
	Relation	heap;
	Relation	idx;
	TupleTableSlot *slot;
	const char *key = number;
	bool		found;
	Datum		values[CC_NATTS];
	bool		nulls[CC_NATTS];

	if (!ls_cache_enabled(c))
		return false;
	if (country != NULL)
	{
		key = resolve_alias(c, number, country);
		if (key == NULL)
			return false;
	}

	heap = table_open(c->cache_rel, AccessShareLock);
	idx = index_open(c->cache_idx, AccessShareLock);
	slot = table_slot_create(heap, NULL);
	found = probe(heap, idx, CStringGetTextDatum(key), slot);
	if (found)
	{
		TimestampTz cutoff;

		slot_getallattrs(slot);
		memcpy(values, slot->tts_values, sizeof(values));
		memcpy(nulls, slot->tts_isnull, sizeof(nulls));
		cutoff = GetCurrentTimestamp() - (TimestampTz) ls_cache_ttl_s * USECS_PER_SEC;
		if (nulls[CC_CHECKED_AT - 1] ||
			DatumGetTimestampTz(values[CC_CHECKED_AT - 1]) < cutoff)
			found = false;
	}
	if (found)
	{
		memset(res, 0, sizeof(*res));
		res->cached = true;
		res->phone_number = nulls[CC_PHONE_NUMBER - 1] ? NULL :
			TextDatumGetCString(values[CC_PHONE_NUMBER - 1]);
		res->status = nulls[CC_STATUS - 1] ? LS_STATUS_NONE :
			status_of(c, DatumGetObjectId(values[CC_STATUS - 1]));
		res->has_error_code = !nulls[CC_ERROR_CODE - 1];
		if (res->has_error_code)
			res->error_code = DatumGetInt32(values[CC_ERROR_CODE - 1]);
		res->valid = !nulls[CC_VALID - 1] && DatumGetBool(values[CC_VALID - 1]);
		res->country_code = nulls[CC_COUNTRY_CODE - 1] ? NULL :
			TextDatumGetCString(values[CC_COUNTRY_CODE - 1]);
		res->response = nulls[CC_RESPONSE - 1] ? NULL :
			DatumGetJsonbPCopy(values[CC_RESPONSE - 1]);
		res->has_checked_at = true;
		res->checked_at = DatumGetTimestampTz(values[CC_CHECKED_AT - 1]);
	}
	ExecDropSingleTupleTableSlot(slot);
	index_close(idx, NoLock);
	table_close(heap, NoLock);
	return found;
}

/*
 * try_lock_number: take a transaction-level advisory lock on key without
 * waiting; false if another transaction holds it.
 */
static bool
try_lock_number(LsCache *c, const char *key)
{
	LOCKTAG		tag;
	uint32		h = hash_bytes((const unsigned char *) key, strlen(key));

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, ADVISORY_CLASS, h, 2);
	return LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL;
}

/* prepare_plans: the two write statements for the extension's schema. */
static void
prepare_plans(LsCache *c)
{
	const char *nsp = quote_identifier(get_namespace_name(c->nsp));
	char	   *sql;
	Oid			put_types[7] = {TEXTOID, TEXTOID, INT4OID, BOOLOID, TEXTOID, JSONBOID, TIMESTAMPTZOID};
	Oid			alias_types[3] = {TEXTOID, TEXTOID, TEXTOID};

	if (put_plan != NULL && plans_nsp == c->nsp)
		return;
	if (put_plan != NULL)
	{
		SPI_freeplan(put_plan);
		SPI_freeplan(alias_plan);
		put_plan = alias_plan = NULL;
	}

	sql = psprintf("INSERT INTO %s.line_status_cache AS c "
				   "(phone_number, status, error_code, valid, country_code, response, checked_at) "
				   "VALUES ($1, CAST($2 AS %s.line_status_status), $3, $4, $5, $6, $7) "
				   "ON CONFLICT (phone_number) DO UPDATE SET "
				   "status = EXCLUDED.status, error_code = EXCLUDED.error_code, "
				   "valid = EXCLUDED.valid, country_code = EXCLUDED.country_code, "
				   "response = EXCLUDED.response, checked_at = EXCLUDED.checked_at "
				   "WHERE c.checked_at OPERATOR(pg_catalog.<) EXCLUDED.checked_at",
				   nsp, nsp);
	put_plan = SPI_prepare(sql, 7, put_types);
	if (put_plan == NULL)
		elog(ERROR, "could not prepare the cache write: %s", SPI_result_code_string(SPI_result));
	SPI_keepplan(put_plan);

	sql = psprintf("INSERT INTO %s.line_status_cache_alias AS a "
				   "(country_code, national_number, phone_number) VALUES ($1, $2, $3) "
				   "ON CONFLICT (country_code, national_number) DO UPDATE SET "
				   "phone_number = EXCLUDED.phone_number "
				   "WHERE a.phone_number OPERATOR(pg_catalog.<>) EXCLUDED.phone_number",
				   nsp);
	alias_plan = SPI_prepare(sql, 3, alias_types);
	if (alias_plan == NULL)
		elog(ERROR, "could not prepare the cache alias write: %s", SPI_result_code_string(SPI_result));
	SPI_keepplan(alias_plan);
	plans_nsp = c->nsp;
}

/*
 * ls_cache_put: store a definitive answer (a 200 with a well-formed body;
 * the caller never passes anything else).  National lookups are stored
 * under the E.164 number Twilio returned, with an alias row for
 * (country, national number); an answer without an E.164 number is not
 * stored.  Read-only transactions skip the write.
 */
void
ls_cache_put(LsCache *c, const char *number, const char *country, LsResult *res)
{
	Oid			save_userid;
	int			save_sec;
	const char *key;
	Datum		values[7];
	char		nulls[7];

	if (!ls_cache_enabled(c) || res->response == NULL)
		return;
	if (country != NULL)
	{
		if (res->phone_number == NULL || res->phone_number[0] != '+')
			return;
		key = res->phone_number;
	}
	else
		key = number;
	if (XactReadOnly || RecoveryInProgress())
		return;
	if (!try_lock_number(c, key))
		return;

	memset(nulls, ' ', sizeof(nulls));
	values[0] = CStringGetTextDatum(key);
	if (res->status == LS_STATUS_NONE)
	{
		values[1] = (Datum) 0;
		nulls[1] = 'n';
	}
	else
		values[1] = CStringGetTextDatum(ls_status_names[res->status]);
	values[2] = Int32GetDatum(res->error_code);
	nulls[2] = res->has_error_code ? ' ' : 'n';
	values[3] = BoolGetDatum(res->valid);
	values[4] = res->country_code ? CStringGetTextDatum(res->country_code) : (Datum) 0;
	nulls[4] = res->country_code ? ' ' : 'n';
	values[5] = JsonbPGetDatum(res->response);
	values[6] = TimestampTzGetDatum(res->checked_at);

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(c->owner,
						   save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	prepare_plans(c);
	if (SPI_execute_plan(put_plan, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not store a line status in the cache");
	if (country != NULL)
	{
		Datum		avalues[3];

		avalues[0] = CStringGetTextDatum(country);
		avalues[1] = CStringGetTextDatum(number);
		avalues[2] = values[0];
		if (SPI_execute_plan(alias_plan, avalues, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not store a line status alias in the cache");
	}
	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec);
}

/* memo_key: the memo's key for a number and optional country. */
static void
memo_key(char *key, const char *number, const char *country)
{
	if (country)
		snprintf(key, MEMO_KEYLEN, "%s:%s", country, number);
	else
		snprintf(key, MEMO_KEYLEN, "%s", number);
}

/*
 * memo_current: the memo of the current top-level statement, emptied when a
 * new statement or transaction has begun.
 */
static HTAB *
memo_current(void)
{
	LocalTransactionId lxid = MyProc->lxid;
	TimestampTz stmt = GetCurrentStatementStartTimestamp();

	if (memo_cxt == NULL)
		memo_cxt = AllocSetContextCreate(TopMemoryContext, "line_status memo",
										 ALLOCSET_DEFAULT_SIZES);
	if (memo == NULL || lxid != memo_lxid || stmt != memo_stmt)
	{
		HASHCTL		ctl;

		MemoryContextReset(memo_cxt);
		ctl.keysize = MEMO_KEYLEN;
		ctl.entrysize = sizeof(MemoEntry);
		ctl.hcxt = memo_cxt;
		memo = hash_create("line_status memo", 256, &ctl,
						   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		memo_lxid = lxid;
		memo_stmt = stmt;
	}
	return memo;
}

/* ls_memo_get: this statement's earlier answer for the number, if any. */
bool
ls_memo_get(const char *number, const char *country, LsResult *res)
{
	char		key[MEMO_KEYLEN];
	MemoEntry  *e;

	memo_key(key, number, country);
	e = hash_search(memo_current(), key, HASH_FIND, NULL);
	if (e == NULL)
		return false;
	*res = e->res;
	res->cached = true;
	return true;
}

/* ls_memo_put: remember an answer for the rest of the statement. */
void
ls_memo_put(const char *number, const char *country, LsResult *res)
{
	char		key[MEMO_KEYLEN];
	HTAB	   *h = memo_current();
	MemoEntry  *e;
	bool		found;
	MemoryContext old;

	if (hash_get_num_entries(h) >= MEMO_MAX)
		return;
	memo_key(key, number, country);
	e = hash_search(h, key, HASH_ENTER, &found);
	old = MemoryContextSwitchTo(memo_cxt);
	e->res = *res;
	e->res.phone_number = res->phone_number ? pstrdup(res->phone_number) : NULL;
	e->res.country_code = res->country_code ? pstrdup(res->country_code) : NULL;
	e->res.response = res->response ?
		(Jsonb *) pnstrdup((char *) res->response, VARSIZE(res->response)) : NULL;
	MemoryContextSwitchTo(old);
}
