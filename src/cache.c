/*-------------------------------------------------------------------------
 *
 * cache.c
 *		Never pay twice for the same number: the line_status_cache table and
 *		a per-statement memo.
 *
 * Reads go straight to the primary-key index (no SPI, no planner), so a
 * cached answer costs about what one index probe of a join costs.  They
 * need no privilege of the caller: ordinary roles have none on the table.
 * They use the latest snapshot, not the statement's: they see answers that
 * other sessions committed since the statement began, and (the writes are
 * followed by CommandCounterIncrement) the statement's own earlier answers,
 * so a number repeated in a statement of any size is paid for once.
 *
 * Writes run through SPI as the table's owner, with
 * SECURITY_RESTRICTED_OPERATION, with every name schema-qualified, so the
 * caller's search_path and rights do not matter.
 *
 * Writes must never wait for each other: a statement that looks up many
 * numbers holds its new rows until it commits, and two such statements
 * waiting for each other's rows would deadlock.  So, holding a short
 * advisory lock on the number (taken without waiting, released at once), we
 * look it up with a dirty snapshot: if another transaction is writing it,
 * we leave it to that one; else we insert it, or update an older row.
 * Nothing is waited for, nothing deadlocks, and ON CONFLICT DO NOTHING
 * keeps out duplicate-key errors even from writers that skip the protocol.
 *
 * The memo remembers the answers of the current top-level statement (up to
 * MEMO_MAX entries), so a number that appears twice in one statement is
 * asked for once even when nothing is written to the cache: caching off, or
 * a read-only transaction.
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
#include "worker.h"

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
enum
{
	PLAN_INSERT,
	PLAN_UPDATE,
	PLAN_ALIAS
};
static SPIPlanPtr plans[3];
static Oid	plans_nsp = InvalidOid;

/*
 * ls_cache_init: find the extension's objects in its schema nsp (the schema
 * of the calling function), never through search_path.  A missing cache
 * table (an old extension version) leaves caching off.
 */
void
ls_cache_init(LsCache *c, Oid nsp)
{
	int			i;

	memset(c, 0, sizeof(*c));
	c->nsp = nsp;
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
	Snapshot	snap = GetLatestSnapshot();

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
	Snapshot	snap = GetLatestSnapshot();
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
		res->has_valid = !nulls[CC_VALID - 1];
		res->valid = res->has_valid && DatumGetBool(values[CC_VALID - 1]);
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

/* Who else is writing a key, as seen through a dirty snapshot. */
typedef enum KeyState
{
	KEY_ABSENT,					/* no row */
	KEY_PRESENT,				/* a committed row we may update, or our own */
	KEY_BUSY					/* another transaction is writing it, or has
								 * written it since our snapshot */
} KeyState;

/*
 * key_state: look the key up with a dirty snapshot, which also sees rows
 * that other transactions are inserting, updating or deleting right now.
 */
static KeyState
key_state(Oid relid, Oid idxid, int nkeys, Datum *keys)
{
	Relation	heap = table_open(relid, AccessShareLock);
	Relation	idx = index_open(idxid, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(heap, NULL);
	SnapshotData dirty;
	ScanKeyData skey[2];
	IndexScanDesc scan;
	KeyState	state = KEY_ABSENT;
	int			i;

	InitDirtySnapshot(dirty);
	for (i = 0; i < nkeys; i++)
	{
		ScanKeyInit(&skey[i], i + 1, BTEqualStrategyNumber, F_TEXTEQ, keys[i]);
		skey[i].sk_collation = idx->rd_indcollation[i];
	}
	scan = index_beginscan(heap, idx, &dirty, nkeys, 0);
	index_rescan(scan, skey, nkeys, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		if (TransactionIdIsValid(dirty.xmin) || TransactionIdIsValid(dirty.xmax))
		{
			state = KEY_BUSY;
			break;
		}

		/*
		 * Under REPEATABLE READ or SERIALIZABLE, a row committed after our
		 * snapshot cannot be updated (40001), and it is as new as our
		 * answer anyway: leave it.
		 */
		if (IsolationUsesXactSnapshot() &&
			!table_tuple_satisfies_snapshot(heap, slot, GetTransactionSnapshot()))
		{
			state = KEY_BUSY;
			break;
		}
		state = KEY_PRESENT;
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(idx, NoLock);
	table_close(heap, NoLock);
	return state;
}

/*
 * lock_key / unlock_key: a short advisory lock on a key, taken without
 * waiting, so that looking at a key and writing it is one step for every
 * session that follows this protocol.
 */
static bool
lock_key(const char *key, LOCKTAG *tag)
{
	uint32		h = hash_bytes((const unsigned char *) key, strlen(key));

	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, ADVISORY_CLASS, h, 2);
	return LockAcquire(tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL;
}

static void
unlock_key(LOCKTAG *tag)
{
	LockRelease(tag, ExclusiveLock, false);
}

/* prepare_plans: the write statements for the extension's schema. */
static void
prepare_plans(LsCache *c)
{
	const char *nsp = quote_identifier(get_namespace_name(c->nsp));
	Oid			row_types[7] = {TEXTOID, TEXTOID, INT4OID, BOOLOID, TEXTOID, JSONBOID, TIMESTAMPTZOID};
	Oid			alias_types[3] = {TEXTOID, TEXTOID, TEXTOID};
	const char *sql[3];
	int			i;

	if (plans[0] != NULL && plans_nsp == c->nsp)
		return;
	for (i = 0; i < 3; i++)
	{
		if (plans[i] != NULL)
			SPI_freeplan(plans[i]);
		plans[i] = NULL;
	}

	sql[PLAN_INSERT] =
		psprintf("INSERT INTO %s.line_status_cache "
				 "(phone_number, status, error_code, valid, country_code, response, checked_at) "
				 "VALUES ($1, CAST($2 AS %s.line_status_status), $3, $4, $5, $6, $7) "
				 "ON CONFLICT DO NOTHING", nsp, nsp);
	sql[PLAN_UPDATE] =
		psprintf("UPDATE %s.line_status_cache SET "
				 "status = CAST($2 AS %s.line_status_status), error_code = $3, valid = $4, "
				 "country_code = $5, response = $6, checked_at = $7 "
				 "WHERE phone_number OPERATOR(pg_catalog.=) $1 "
				 "AND checked_at OPERATOR(pg_catalog.<) $7", nsp, nsp);
	sql[PLAN_ALIAS] =
		psprintf("INSERT INTO %s.line_status_cache_alias "
				 "(country_code, national_number, phone_number) VALUES ($1, $2, $3) "
				 "ON CONFLICT DO NOTHING", nsp);
	for (i = 0; i < 3; i++)
	{
		plans[i] = SPI_prepare(sql[i], i == PLAN_ALIAS ? 3 : 7,
							   i == PLAN_ALIAS ? alias_types : row_types);
		if (plans[i] == NULL)
			elog(ERROR, "could not prepare a cache write: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plans[i]);
	}
	plans_nsp = c->nsp;
}

/*
 * ls_cache_put: store a definitive answer (a 200 with a well-formed body;
 * failures and local rejections never get here).  National lookups are
 * stored under the E.164 number Twilio returned, with an alias row for
 * (country, national number); an answer without an E.164 number is not
 * stored.  Read-only transactions skip the write, and so does a key that
 * another transaction is writing at this moment (then the result is false):
 * its answer will be there.  Either way the answer is handed to the
 * background worker, which stores it if this transaction does not commit.
 */
bool
ls_cache_put(LsCache *c, const char *number, const char *country, LsResult *res)
{
	Oid			save_userid;
	int			save_sec;
	const char *key;
	Datum		values[7];
	char		nulls[7];
	LOCKTAG		tag;
	KeyState	state;

	bool		stored = true;

	if (!ls_cache_enabled(c) || res->response == NULL || res->failed)
		return true;
	if (country != NULL)
	{
		if (res->phone_number == NULL || res->phone_number[0] != '+')
			return true;
		key = res->phone_number;
	}
	else
		key = number;
	/* Paid for: if this transaction cannot keep it, the worker will. */
	ls_worker_handoff(key, number, country, res);
	if (XactReadOnly || RecoveryInProgress())
		return true;

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

	if (lock_key(key, &tag))
	{
		state = key_state(c->cache_rel, c->cache_idx, 1, values);
		if (state == KEY_ABSENT)
			SPI_execute_plan(plans[PLAN_INSERT], values, nulls, false, 0);
		else if (state == KEY_PRESENT)
			SPI_execute_plan(plans[PLAN_UPDATE], values, nulls, false, 0);
		else
			stored = false;
		unlock_key(&tag);
	}
	else
		stored = false;

	if (country != NULL)
	{
		char		akey[MEMO_KEYLEN];
		Datum		avalues[3];

		snprintf(akey, sizeof(akey), "%s:%s", country, number);
		avalues[0] = CStringGetTextDatum(country);
		avalues[1] = CStringGetTextDatum(number);
		avalues[2] = values[0];
		if (lock_key(akey, &tag))
		{
			if (key_state(c->alias_rel, c->alias_idx, 2, avalues) == KEY_ABSENT)
				SPI_execute_plan(plans[PLAN_ALIAS], avalues, NULL, false, 0);
			unlock_key(&tag);
		}
	}
	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec);

	/* Make the new rows visible to the reads of this very statement. */
	CommandCounterIncrement();
	return stored;
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

	if (res->failed || hash_get_num_entries(h) >= MEMO_MAX)
		return;
	memo_key(key, number, country);
	e = hash_search(h, key, HASH_ENTER, &found);
	old = MemoryContextSwitchTo(memo_cxt);
	e->res = *res;
	e->res.phone_number = res->phone_number ? pstrdup(res->phone_number) : NULL;
	e->res.country_code = res->country_code ? pstrdup(res->country_code) : NULL;
	if (res->response)
	{
		e->res.response = palloc(VARSIZE(res->response));
		memcpy(e->res.response, res->response, VARSIZE(res->response));
	}
	MemoryContextSwitchTo(old);
}


/*
 * ls_check_number: the answer for one normalised number: a fresh enough
 * cached one, else this statement's earlier answer (for when nothing is
 * written to the cache), else Twilio's, which is stored in the cache (and
 * handed to the background worker, so that it outlives a rollback) and in
 * the memo.  force skips the first two.
 */
void
ls_check_number(LsCache *c, const char *number, const char *country,
				bool force, LsResult *res)
{
	if (!force)
	{
		if (ls_cache_get(c, number, country, res))
		{
			ls_stats_cache_hit();
			return;
		}
		if (ls_memo_get(number, country, res))
			return;
	}
	ls_twilio_lookup(number, country, res);
	ls_cache_put(c, number, country, res);
	ls_memo_put(number, country, res);
}
