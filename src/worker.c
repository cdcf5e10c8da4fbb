/*-------------------------------------------------------------------------
 *
 * worker.c
 *		What needs shared_preload_libraries: statistics shared by all
 *		sessions, the hand-off of paid answers, and the background worker.
 *
 * Paid answers outlive the caller.  A backend's cache writes belong to its
 * transaction; when that rolls back, the answers Twilio already gave (and
 * charged for) would be lost.  So each backend remembers the answers it
 * paid for in the current transaction (up to PENDING_MAX), and on
 * (sub)transaction abort copies them into a ring in shared memory; a
 * read-only transaction, which cannot write the cache, hands them over at
 * once.  The worker stores them in its own transactions, with the same
 * non-blocking protocol as everyone else (cache.c): an answer whose number
 * another transaction is still writing is tried again a little later.
 *
 * The worker also drains line_status_queue, filled by the async trigger
 * policy and line_status_enqueue(): up to QUEUE_BATCH entries per
 * transaction, with the concurrent engine of bulk lookups; each answer goes
 * to the cache and, for the trigger, into the row that asked; an entry is
 * deleted in the same transaction that stores its answer.  Failed entries
 * stay, with a growing delay before the next try.
 *
 * One worker serves the database named by line_status.database.  It
 * restarts 5 s after a crash, exits at SIGTERM, rereads the configuration at
 * SIGHUP, reports itself idle between rounds and hides its statements from
 * pg_stat_statements.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/genam.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "bulk.h"
#include "phone.h"
#include "settings.h"
#include "worker.h"

#define HANDOFF_SLOTS 4096
#define HANDOFF_MAX_RESPONSE 2048
#define LATENCY_BUCKETS 24		/* bucket b: [2^(b-1), 2^b) ms; 0: < 1 ms */
#define QUEUE_BATCH 1000
#define NAPTIME_MS 1000
/* Give up on storing a handed-off answer after this long. */
#define HANDOFF_PATIENCE_MS (10 * 60 * 1000)

/* Kinds of errors, by SQLSTATE (see the README's table). */
enum
{
	ERR_CREDENTIALS,
	ERR_RATE_LIMITED,
	ERR_CONNECT,
	ERR_TRANSPORT,
	ERR_BAD_REQUEST,
	ERR_REMOTE,
	NUM_ERR_KINDS
};

/* A paid answer on its way to the worker. */
typedef struct Handoff
{
	Oid			dboid;
	char		number[PHONE_BUFSIZE];
	char		country[3];		/* "" for an E.164 number */
	int8		status;
	bool		has_valid;
	bool		valid;
	bool		has_error_code;
	int32		error_code;
	TimestampTz checked_at;
	char		phone_number[PHONE_BUFSIZE + 8];
	char		country_code[8];
	int32		response_len;
	char		response[HANDOFF_MAX_RESPONSE];
} Handoff;

typedef struct LsShared
{
	LWLock	   *lock;			/* the ring and "since" */
	Latch	   *worker_latch;
	pg_atomic_uint64 requests;
	pg_atomic_uint64 cache_hits;
	pg_atomic_uint64 retries;
	pg_atomic_uint64 answers[LS_NUM_STATUSES + 1];	/* the last: no status */
	pg_atomic_uint64 errors[NUM_ERR_KINDS];
	pg_atomic_uint64 latency_sum_us;
	pg_atomic_uint64 latency[LATENCY_BUCKETS];
	pg_atomic_uint64 handed_off;
	pg_atomic_uint64 handoffs_dropped;
	pg_atomic_uint64 stored_by_worker;
	TimestampTz since;
	int			head;
	int			count;
	Handoff		ring[HANDOFF_SLOTS];
} LsShared;

char	   *ls_worker_database = NULL;

static LsShared *shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* An answer this backend paid for in the current transaction. */
typedef struct Pending
{
	char		number[PHONE_BUFSIZE];
	char		country[3];
	LsResult	res;			/* strings and response in pending_cxt */
} Pending;

/* At most this many per transaction are kept for a hand-off on rollback. */
#define PENDING_MAX 1024

static MemoryContext pending_cxt = NULL;
static Pending *pending = NULL;
static int	npending = 0;
static bool enqueued = false;
static bool xact_callback_registered = false;

PGDLLEXPORT void line_status_worker_main(Datum arg);

PG_FUNCTION_INFO_V1(line_status_stats);
PG_FUNCTION_INFO_V1(line_status_stats_reset);
PG_FUNCTION_INFO_V1(line_status_enqueue);

/*
 * zero_counters: set every statistic to zero and "since" to now; init for
 * the first time (pg_atomic_init_u64), else by plain writes.
 */
static void
zero_counters(bool init)
{
	pg_atomic_uint64 *all[7 + LS_NUM_STATUSES + 1 + NUM_ERR_KINDS + LATENCY_BUCKETS];
	int			n = 0;
	int			i;

	all[n++] = &shared->requests;
	all[n++] = &shared->cache_hits;
	all[n++] = &shared->retries;
	all[n++] = &shared->latency_sum_us;
	all[n++] = &shared->handed_off;
	all[n++] = &shared->handoffs_dropped;
	all[n++] = &shared->stored_by_worker;
	for (i = 0; i <= LS_NUM_STATUSES; i++)
		all[n++] = &shared->answers[i];
	for (i = 0; i < NUM_ERR_KINDS; i++)
		all[n++] = &shared->errors[i];
	for (i = 0; i < LATENCY_BUCKETS; i++)
		all[n++] = &shared->latency[i];
	for (i = 0; i < n; i++)
	{
		if (init)
			pg_atomic_init_u64(all[i], 0);
		else
			pg_atomic_write_u64(all[i], 0);
	}
	shared->since = GetCurrentTimestamp();
}

/* shmem_request: ask for our shared memory and lock (PostgreSQL 15 hook). */
static void
shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(LsShared)));
	RequestNamedLWLockTranche("line_status", 1);
}

/* shmem_startup: set the shared state up, once per cluster start. */
static void
shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("line_status", sizeof(LsShared), &found);
	if (!found)
	{
		memset(shared, 0, offsetof(LsShared, ring));
		shared->lock = &(GetNamedLWLockTranche("line_status"))->lock;
		zero_counters(true);
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * ls_worker_init: from _PG_init, when loaded by shared_preload_libraries:
 * shared memory, the worker's setting, and the worker itself.
 */
void
ls_worker_init(void)
{
	BackgroundWorker w;

	if (!process_shared_preload_libraries_in_progress)
		return;

	DefineCustomStringVariable("line_status.database",
							   "Database whose line_status queue and hand-offs the background worker serves.",
							   NULL,
							   &ls_worker_database,
							   "postgres",
							   PGC_POSTMASTER, 0,
							   NULL, NULL, NULL);

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = shmem_startup;

	memset(&w, 0, sizeof(w));
	w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	w.bgw_start_time = BgWorkerStart_RecoveryFinished;
	w.bgw_restart_time = 5;
	snprintf(w.bgw_library_name, BGW_MAXLEN, "line_status");
	snprintf(w.bgw_function_name, BGW_MAXLEN, "line_status_worker_main");
	snprintf(w.bgw_name, BGW_MAXLEN, "line_status worker");
	snprintf(w.bgw_type, BGW_MAXLEN, "line_status worker");
	RegisterBackgroundWorker(&w);
}

/* ls_worker_available: is the shared memory (and so the worker) there? */
bool
ls_worker_available(void)
{
	return shared != NULL;
}

static void
require_shared(void)
{
	if (shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("line_status is not loaded by shared_preload_libraries"),
				 errhint("Add line_status to shared_preload_libraries in postgresql.conf and restart the server.")));
}

/* ---------------------------------------------------------------- stats */

/* ls_stats_request: one request sent to Twilio, answered in latency_ms. */
void
ls_stats_request(double latency_ms)
{
	int			b = 0;

	if (shared == NULL)
		return;
	pg_atomic_fetch_add_u64(&shared->requests, 1);
	pg_atomic_fetch_add_u64(&shared->latency_sum_us, (uint64) (latency_ms * 1000.0));
	while (b < LATENCY_BUCKETS - 1 && latency_ms >= (double) (1 << b))
		b++;
	pg_atomic_fetch_add_u64(&shared->latency[b], 1);
}

void
ls_stats_retry(void)
{
	if (shared)
		pg_atomic_fetch_add_u64(&shared->retries, 1);
}

void
ls_stats_cache_hit(void)
{
	if (shared)
		pg_atomic_fetch_add_u64(&shared->cache_hits, 1);
}

/* ls_stats_answer: one answer read, by status (LS_STATUS_NONE: no status). */
void
ls_stats_answer(LsStatus status)
{
	if (shared)
		pg_atomic_fetch_add_u64(&shared->answers[status == LS_STATUS_NONE ? LS_NUM_STATUSES : status], 1);
}

/* ls_stats_error: one lookup that failed for good, by kind. */
void
ls_stats_error(LsFailure *f)
{
	int			kind;

	if (shared == NULL)
		return;
	switch (f->sqlstate)
	{
		case ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION:
			kind = ERR_CREDENTIALS;
			break;
		case ERRCODE_CONFIGURATION_LIMIT_EXCEEDED:
			kind = ERR_RATE_LIMITED;
			break;
		case ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION:
			kind = ERR_CONNECT;
			break;
		case ERRCODE_CONNECTION_FAILURE:
			kind = ERR_TRANSPORT;
			break;
		case ERRCODE_INVALID_PARAMETER_VALUE:
			kind = ERR_BAD_REQUEST;
			break;
		default:
			kind = ERR_REMOTE;
			break;
	}
	pg_atomic_fetch_add_u64(&shared->errors[kind], 1);
}

/* latency_p99: the 99th percentile, interpolated within its bucket. */
static double
latency_p99(uint64 *buckets, uint64 total)
{
	double		target = total * 0.99;
	uint64		seen = 0;
	int			b;

	if (total == 0)
		return 0;
	for (b = 0; b < LATENCY_BUCKETS; b++)
	{
		if (seen + buckets[b] >= target && buckets[b] > 0)
		{
			double		lo = b == 0 ? 0 : (double) (1 << (b - 1));
			double		hi = (double) (1 << b);

			return lo + (hi - lo) * (target - seen) / buckets[b];
		}
		seen += buckets[b];
	}
	return (double) (1 << (LATENCY_BUCKETS - 1));
}

/*
 * line_status_stats(): the counters, as one row (the view line_status_stats
 * shows them).
 */
Datum
line_status_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[22];
	bool		nulls[22];
	uint64		buckets[LATENCY_BUCKETS];
	uint64		requests;
	int			i;
	int			n = 0;

	require_shared();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "line_status_stats must return a composite type");
	memset(nulls, false, sizeof(nulls));

	requests = pg_atomic_read_u64(&shared->requests);
	values[n++] = Int64GetDatum(requests);
	values[n++] = Int64GetDatum(pg_atomic_read_u64(&shared->cache_hits));
	for (i = 0; i <= LS_NUM_STATUSES; i++)
		values[n++] = Int64GetDatum(pg_atomic_read_u64(&shared->answers[i]));
	for (i = 0; i < NUM_ERR_KINDS; i++)
		values[n++] = Int64GetDatum(pg_atomic_read_u64(&shared->errors[i]));
	values[n++] = Int64GetDatum(pg_atomic_read_u64(&shared->retries));
	for (i = 0; i < LATENCY_BUCKETS; i++)
		buckets[i] = pg_atomic_read_u64(&shared->latency[i]);
	values[n] = Float8GetDatum(requests ? pg_atomic_read_u64(&shared->latency_sum_us) / 1000.0 / requests : 0);
	nulls[n++] = requests == 0;
	values[n] = Float8GetDatum(latency_p99(buckets, requests));
	nulls[n++] = requests == 0;
	values[n++] = Int64GetDatum(pg_atomic_read_u64(&shared->handed_off));
	values[n++] = Int64GetDatum(pg_atomic_read_u64(&shared->handoffs_dropped));
	values[n++] = Int64GetDatum(pg_atomic_read_u64(&shared->stored_by_worker));
	LWLockAcquire(shared->lock, LW_SHARED);
	values[n++] = TimestampTzGetDatum(shared->since);
	LWLockRelease(shared->lock);
	Assert(n == tupdesc->natts);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/* line_status_stats_reset(): zero the counters. */
Datum
line_status_stats_reset(PG_FUNCTION_ARGS)
{
	require_shared();
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	zero_counters(false);
	LWLockRelease(shared->lock);
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------- hand-off */

/* fill_handoff: an answer as a Handoff; false if it does not fit. */
static bool
fill_handoff(Handoff *h, const char *number, const char *country, LsResult *res)
{
	if (res->response == NULL || VARSIZE(res->response) > HANDOFF_MAX_RESPONSE ||
		(res->phone_number && strlen(res->phone_number) >= sizeof(h->phone_number)) ||
		(res->country_code && strlen(res->country_code) >= sizeof(h->country_code)))
		return false;
	h->dboid = MyDatabaseId;
	strlcpy(h->number, number, sizeof(h->number));
	strlcpy(h->country, country ? country : "", sizeof(h->country));
	h->status = (int8) res->status;
	h->has_valid = res->has_valid;
	h->valid = res->valid;
	h->has_error_code = res->has_error_code;
	h->error_code = res->error_code;
	h->checked_at = res->checked_at;
	strlcpy(h->phone_number, res->phone_number ? res->phone_number : "", sizeof(h->phone_number));
	strlcpy(h->country_code, res->country_code ? res->country_code : "", sizeof(h->country_code));
	h->response_len = VARSIZE(res->response);
	memcpy(h->response, res->response, h->response_len);
	return true;
}

/* push: copy hand-offs into the shared ring and wake the worker. */
static void
push(Handoff *h, int n)
{
	int			i;
	int			dropped = 0;

	if (shared == NULL || n == 0)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < n; i++)
	{
		if (shared->count == HANDOFF_SLOTS)
		{
			dropped = n - i;
			break;
		}
		memcpy(&shared->ring[(shared->head + shared->count) % HANDOFF_SLOTS], &h[i], sizeof(Handoff));
		shared->count++;
	}
	LWLockRelease(shared->lock);
	pg_atomic_fetch_add_u64(&shared->handed_off, n - dropped);
	pg_atomic_fetch_add_u64(&shared->handoffs_dropped, dropped);
	if (shared->worker_latch)
		SetLatch(shared->worker_latch);
}

/* forget_pending: drop the remembered answers (they are stored, or handed over). */
static void
forget_pending(void)
{
	npending = 0;
	if (pending_cxt)
		MemoryContextReset(pending_cxt);
}

/* push_pending: hand every remembered answer to the worker, and forget them. */
static void
push_pending(void)
{
	int			i;
	Handoff		h;

	for (i = 0; i < npending; i++)
		if (fill_handoff(&h, pending[i].number,
						 pending[i].country[0] ? pending[i].country : NULL, &pending[i].res))
			push(&h, 1);
	forget_pending();
}

/*
 * xact_callback: on abort, hand this transaction's paid answers to the
 * worker; on commit they are stored already.  Wake the worker after a commit
 * that queued numbers.
 */
static void
xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		push_pending();
	if (event == XACT_EVENT_COMMIT && enqueued && shared && shared->worker_latch)
		SetLatch(shared->worker_latch);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		forget_pending();
		enqueued = false;
	}
}

/* subxact_callback: a rolled-back subtransaction's answers go too. */
static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		push_pending();
}

static void
register_callbacks(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(xact_callback, NULL);
		RegisterSubXactCallback(subxact_callback, NULL);
		xact_callback_registered = true;
	}
}

/*
 * ls_worker_handoff: an answer this backend paid for and stored (or could
 * not store) in its transaction.  It goes to the worker at once when the
 * transaction cannot write (read-only), else only if the transaction rolls
 * back.  Nothing happens without the worker, in the worker itself, or in a
 * database the worker does not serve.
 */
void
ls_worker_handoff(const char *key, const char *number, const char *country,
				  LsResult *res)
{
	Handoff		h;

	static Oid	worker_db = InvalidOid;

	if (shared == NULL || !IsUnderPostmaster || IsBackgroundWorker ||
		RecoveryInProgress())
		return;
	if (!OidIsValid(worker_db))
		worker_db = get_database_oid(ls_worker_database, true);
	if (MyDatabaseId != worker_db)
		return;
	if (XactReadOnly)
	{
		if (fill_handoff(&h, number, country, res))
			push(&h, 1);
		return;
	}
	register_callbacks();
	if (npending == PENDING_MAX || res->response == NULL ||
		VARSIZE(res->response) > HANDOFF_MAX_RESPONSE)
		return;
	if (pending_cxt == NULL)
	{
		pending_cxt = AllocSetContextCreate(TopMemoryContext, "line_status pending answers",
											ALLOCSET_DEFAULT_SIZES);
		pending = MemoryContextAlloc(TopMemoryContext, sizeof(Pending) * PENDING_MAX);
	}
	{
		Pending    *p = &pending[npending++];
		MemoryContext old = MemoryContextSwitchTo(pending_cxt);

		strlcpy(p->number, number, sizeof(p->number));
		strlcpy(p->country, country ? country : "", sizeof(p->country));
		p->res = *res;
		p->res.phone_number = res->phone_number ? pstrdup(res->phone_number) : NULL;
		p->res.country_code = res->country_code ? pstrdup(res->country_code) : NULL;
		p->res.response = palloc(VARSIZE(res->response));
		memcpy(p->res.response, res->response, VARSIZE(res->response));
		MemoryContextSwitchTo(old);
	}
}

/* ---------------------------------------------------------------- queue */

/*
 * ls_worker_enqueue: queue a number for the worker (as the cache's owner:
 * ordinary roles cannot write the queue).  With a relation, the worker
 * writes the status into that relation's rows whose phone column holds
 * phone_text and whose status column is still NULL.
 */
void
ls_worker_enqueue(LsCache *c, const char *number, const char *country,
				  Oid relid, const char *phone_column, const char *status_column,
				  const char *phone_text)
{
	static LocalTransactionId warned = InvalidLocalTransactionId;
	Oid			save_userid;
	int			save_sec;
	Oid			types[6] = {TEXTOID, TEXTOID, TEXTOID, OIDOID, TEXTOID, TEXTOID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	char	   *sql;

	if (!OidIsValid(get_relname_relid("line_status_queue", c->nsp)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the line_status queue needs extension version 1.3"),
				 errhint("Run ALTER EXTENSION line_status UPDATE.")));
	/* Say once per transaction when nobody will drain what is queued here. */
	if (warned != MyProc->lxid)
	{
		warned = MyProc->lxid;
		if (shared == NULL)
			ereport(WARNING,
					(errmsg("line_status background worker is not running: queued numbers wait"),
					 errhint("Add line_status to shared_preload_libraries in postgresql.conf and restart the server.")));
		else if (MyDatabaseId != get_database_oid(ls_worker_database, true))
			ereport(WARNING,
					(errmsg("line_status background worker serves database \"%s\", not this one: queued numbers wait",
							ls_worker_database),
					 errhint("Set line_status.database in postgresql.conf and restart the server.")));
	}

	values[0] = CStringGetTextDatum(number);
	values[1] = country ? CStringGetTextDatum(country) : (Datum) 0;
	nulls[1] = country ? ' ' : 'n';
	values[2] = phone_text ? CStringGetTextDatum(phone_text) : (Datum) 0;
	nulls[2] = phone_text ? ' ' : 'n';
	values[3] = ObjectIdGetDatum(relid);
	nulls[3] = OidIsValid(relid) ? ' ' : 'n';
	values[4] = phone_column ? CStringGetTextDatum(phone_column) : (Datum) 0;
	nulls[4] = phone_column ? ' ' : 'n';
	values[5] = status_column ? CStringGetTextDatum(status_column) : (Datum) 0;
	nulls[5] = status_column ? ' ' : 'n';
	sql = psprintf("INSERT INTO %s.line_status_queue "
				   "(phone_number, country_code, phone_text, relid, phone_column, status_column) "
				   "VALUES ($1, $2, $3, $4, $5, $6)",
				   quote_identifier(get_namespace_name(c->nsp)));

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(c->owner,
						   save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(sql, 6, types, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not queue a number for line_status");
	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec);
	register_callbacks();
	enqueued = true;
}

/*
 * line_status_enqueue(phone text, country_code text) returns boolean: queue
 * a number for the worker to look up and cache; false when it cannot be a
 * phone number.
 */
Datum
line_status_enqueue(PG_FUNCTION_ARGS)
{
	LsCache		cache;
	text	   *phone;
	char		number[PHONE_BUFSIZE];
	char		cbuf[3];
	const char *country = NULL;
	PhoneVerdict verdict;

	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);
	if (!PG_ARGISNULL(1))
	{
		text	   *c = PG_GETARG_TEXT_PP(1);

		if (!phone_country_normalise(VARDATA_ANY(c), VARSIZE_ANY_EXHDR(c), cbuf))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid country code")));
		country = cbuf;
	}
	phone = PG_GETARG_TEXT_PP(0);
	verdict = phone_resolve(VARDATA_ANY(phone), VARSIZE_ANY_EXHDR(phone), country, number);
	if (verdict != PHONE_E164 && verdict != PHONE_NATIONAL)
		PG_RETURN_BOOL(false);
	ls_cache_init(&cache, get_func_namespace(fcinfo->flinfo->fn_oid));
	ls_worker_enqueue(&cache, number, verdict == PHONE_E164 ? NULL : country,
					  InvalidOid, NULL, NULL, NULL);
	PG_RETURN_BOOL(true);
}

/* ---------------------------------------------------------------- worker */

/*
 * report_running / report_idle: what pg_stat_activity shows for the worker:
 * running while it works, and idle since the end of its last work (not
 * re-reported at every wake-up).
 */
static bool reported_running = true;

static void
report_running(const char *what)
{
	pgstat_report_activity(STATE_RUNNING, what);
	reported_running = true;
}

static void
report_idle(void)
{
	if (reported_running)
		pgstat_report_activity(STATE_IDLE, NULL);
	reported_running = false;
}

/* Hand-offs the worker could not store yet (their number was busy). */
static Handoff *retry_list = NULL;
static TimestampTz *retry_since = NULL;
static int	nretry = 0;

/* result_of: a Handoff as an LsResult (pointing into the Handoff). */
static void
result_of(Handoff *h, LsResult *res)
{
	memset(res, 0, sizeof(*res));
	res->status = (LsStatus) h->status;
	res->has_valid = h->has_valid;
	res->valid = h->valid;
	res->has_error_code = h->has_error_code;
	res->error_code = h->error_code;
	res->has_checked_at = true;
	res->checked_at = h->checked_at;
	res->phone_number = h->phone_number[0] ? h->phone_number : NULL;
	res->country_code = h->country_code[0] ? h->country_code : NULL;
	res->response = (Jsonb *) h->response;
}

/* extension_schema: the schema of an extension (PostgreSQL 15 exports no such call). */
static Oid
extension_schema(Oid ext)
{
	Relation	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	Oid			nsp = InvalidOid;

	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(ext));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
		nsp = ((Form_pg_extension) GETSTRUCT(tup))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return nsp;
}

/*
 * extension_cache: the cache of the extension in this database, or false
 * when it is not installed (or too old to have a queue).
 */
static bool
extension_cache(LsCache *c)
{
	Oid			ext = get_extension_oid("line_status", true);

	if (!OidIsValid(ext))
		return false;
	ls_cache_init(c, extension_schema(ext));
	return OidIsValid(c->cache_rel) &&
		OidIsValid(get_relname_relid("line_status_queue", c->nsp));
}

/*
 * store_handoffs: store what backends handed over (and what could not be
 * stored before), each in the worker's own transaction.
 */
static void
store_handoffs(void)
{
	Handoff    *batch;
	int			n = 0;
	int			i;
	LsCache		cache;
	TimestampTz now = GetCurrentTimestamp();

	if (retry_list == NULL)
	{
		retry_list = MemoryContextAlloc(TopMemoryContext, sizeof(Handoff) * HANDOFF_SLOTS);
		retry_since = MemoryContextAlloc(TopMemoryContext, sizeof(TimestampTz) * HANDOFF_SLOTS);
	}
	batch = palloc(sizeof(Handoff) * HANDOFF_SLOTS);
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	while (shared->count > 0 && n < HANDOFF_SLOTS - nretry)
	{
		Handoff    *h = &shared->ring[shared->head];

		if (h->dboid == MyDatabaseId)
			memcpy(&batch[n++], h, sizeof(Handoff));
		shared->head = (shared->head + 1) % HANDOFF_SLOTS;
		shared->count--;
	}
	LWLockRelease(shared->lock);
	if (n == 0 && nretry == 0)
	{
		pfree(batch);
		return;
	}

	report_running("storing answers handed over by backends");
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (extension_cache(&cache))
	{
		int			kept = 0;

		/* earlier busy ones first, then the new ones */
		for (i = 0; i < nretry + n; i++)
		{
			Handoff    *h = i < nretry ? &retry_list[i] : &batch[i - nretry];
			TimestampTz since = i < nretry ? retry_since[i] : now;
			LsResult	res;

			result_of(h, &res);
			if (ls_cache_put(&cache, h->number, h->country[0] ? h->country : NULL, &res))
				pg_atomic_fetch_add_u64(&shared->stored_by_worker, 1);
			else if (now - since < HANDOFF_PATIENCE_MS * (int64) 1000 && kept < HANDOFF_SLOTS)
			{
				if (&retry_list[kept] != h)
					memmove(&retry_list[kept], h, sizeof(Handoff));
				retry_since[kept++] = since;
			}
		}
		nretry = kept;
	}
	else
		nretry = 0;
	PopActiveSnapshot();
	CommitTransactionCommand();
	pfree(batch);
}

/* fill_rows: write a status into the rows that queued it, as their owner. */
static void
fill_rows(Oid relid, const char *phone_column, const char *status_column,
		  const char *phone_text, LsCache *cache, LsStatus status)
{
	HeapTuple	tp = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;
	Oid			save_userid;
	int			save_sec;
	Oid			types[2] = {cache->status_type, TEXTOID};
	Datum		values[2];
	char	   *sql;

	if (!HeapTupleIsValid(tp))
		return;					/* the table is gone */
	owner = ((Form_pg_class) GETSTRUCT(tp))->relowner;
	ReleaseSysCache(tp);

	values[0] = ObjectIdGetDatum(cache->status_oids[status]);
	values[1] = CStringGetTextDatum(phone_text);
	sql = psprintf("UPDATE %s SET %s = $1 WHERE %s::pg_catalog.text OPERATOR(pg_catalog.=) $2 AND %s IS NULL",
				   quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
											  get_rel_name(relid)),
				   quote_identifier(status_column), quote_identifier(phone_column),
				   quote_identifier(status_column));
	/* A table altered since the row was queued must not stop the queue. */
	GetUserIdAndSecContext(&save_userid, &save_sec);
	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
		SPI_execute_with_args(sql, 2, types, values, NULL, false, 0);
		SetUserIdAndSecContext(save_userid, save_sec);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContext cxt = MemoryContextSwitchTo(TopTransactionContext);
		ErrorData  *err;

		SetUserIdAndSecContext(save_userid, save_sec);
		err = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		ereport(WARNING,
				(errmsg("line_status worker could not write a status into relation %u", relid),
				 errdetail_internal("%s", err->message)));
	}
	PG_END_TRY();
}

/*
 * drain_queue: one batch of the queue, in one transaction; true if there
 * was anything to do.
 */
static bool
drain_queue(void)
{
	LsCache		cache;
	bool		worked = false;

	/* now() is the statement's start: a worker must set it itself. */
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (extension_cache(&cache))
	{
		const char *nsp = quote_identifier(get_namespace_name(cache.nsp));
		uint64		n;
		uint64		i;

		SPI_connect();
		SPI_execute(psprintf("SELECT id, phone_number, country_code, phone_text, relid, "
							 "phone_column, status_column FROM %s.line_status_queue "
							 "WHERE next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now() "
							 "ORDER BY id LIMIT %d FOR UPDATE SKIP LOCKED", nsp, QUEUE_BATCH),
					false, 0);
		n = SPI_processed;
		if (n > 0)
		{
			SPITupleTable *tt = SPI_tuptable;
			LsBulk	   *b = ls_bulk_begin(&cache, n);
			BulkEntry **entries = palloc(sizeof(BulkEntry *) * n);

			worked = true;
			report_running("looking up queued numbers");
			b->keep_going = true;
			for (i = 0; i < n; i++)
			{
				char	   *number = SPI_getvalue(tt->vals[i], tt->tupdesc, 2);
				char	   *country = SPI_getvalue(tt->vals[i], tt->tupdesc, 3);

				entries[i] = ls_bulk_add(b, number, country);
			}
			ls_bulk_run(b);

			for (i = 0; i < n; i++)
			{
				HeapTuple	row = tt->vals[i];
				char	   *id = SPI_getvalue(row, tt->tupdesc, 1);
				LsResult	res;

				ls_bulk_result(b, entries[i], &res);
				if (res.failed)
				{
					SPI_execute(psprintf("UPDATE %s.line_status_queue SET attempts = attempts + 1, "
										 "next_attempt_at = pg_catalog.now() + "
										 "pg_catalog.make_interval(secs => pg_catalog.least(3600, 2 ^ attempts * 10)) "
										 "WHERE id = %s", nsp, id), false, 0);
					continue;
				}
				if (res.status != LS_STATUS_NONE && SPI_getvalue(row, tt->tupdesc, 5) != NULL)
				{
					bool		isnull;
					Oid			relid = DatumGetObjectId(SPI_getbinval(row, tt->tupdesc, 5, &isnull));

					fill_rows(relid, SPI_getvalue(row, tt->tupdesc, 6),
							  SPI_getvalue(row, tt->tupdesc, 7),
							  SPI_getvalue(row, tt->tupdesc, 4), &cache, res.status);
				}
				SPI_execute(psprintf("DELETE FROM %s.line_status_queue WHERE id = %s", nsp, id),
							false, 0);
			}
			ls_bulk_end(b);
		}
		SPI_finish();
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
	return worked;
}

/*
 * line_status_worker_main: the background worker: store hand-offs, drain
 * the queue, sleep until woken or NAPTIME_MS passes.  An error is logged,
 * its transaction rolled back, and the loop goes on after a pause.
 */
void
line_status_worker_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(ls_worker_database, NULL, 0);
	pgstat_report_appname("line_status worker");
	/* The worker's own statements are not the users' workload. */
	SetConfigOption("pg_stat_statements.track", "none", PGC_SUSET, PGC_S_OVERRIDE);
	shared->worker_latch = MyLatch;

	for (;;)
	{
		MemoryContext cxt = CurrentMemoryContext;

		PG_TRY();
		{
			bool		busy;

			store_handoffs();
			busy = drain_queue();
			report_idle();
			if (!busy && (shared->count == 0 || nretry > 0))
			{
				(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 NAPTIME_MS, PG_WAIT_EXTENSION);
				ResetLatch(MyLatch);
			}
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(cxt);
			EmitErrorReport();
			FlushErrorState();
			AbortCurrentTransaction();
			report_idle();
			(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 10 * NAPTIME_MS, PG_WAIT_EXTENSION);
		}
		PG_END_TRY();

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
}
