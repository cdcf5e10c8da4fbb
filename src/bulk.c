/*-------------------------------------------------------------------------
 *
 * bulk.c
 *		The concurrent engine behind line_status(text[]): fetch many numbers
 *		from Twilio at once, as fast as Twilio allows.
 *
 * Up to line_status.max_concurrency requests are in flight on libcurl's
 * multi interface (http.c), whose loop also watches for a cancel or
 * statement_timeout.  A 429 means Twilio wants fewer requests at once: the
 * limit drops to what Twilio just accepted, or is halved and the whole pool
 * pauses when 429s keep coming, and it then grows back by one per window of
 * successes (additive increase, multiplicative decrease).  A 429 is never
 * charged, so a number may be retried for it up to MAX_429_RETRIES times
 * without using up line_status.max_retries, which counts other transient
 * faults.  Optionally line_status.max_rate caps requests started per second.
 *
 * Every answer is stored in the cache as soon as it arrives, and its
 * variable part is appended to a temporary file (see bulk.h), so memory
 * stays bounded however many numbers there are.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/binaryheap.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "bulk.h"
#include "settings.h"
#include "worker.h"

/* A number may meet this many 429s before it is given up on. */
#define MAX_429_RETRIES 50

/* After a 429 cuts the limit, the next cut waits at least this long. */
#define COOL_DOWN_MS 250

static void fetch(LsBulk *b);

/* Header of a spilled answer; the three strings follow it. */
typedef struct SpillHeader
{
	int32		phone_len;		/* -1 for NULL */
	int32		country_len;
	int32		response_len;
} SpillHeader;

/* spill_write: append len bytes to the spill file. */
static void
spill_write(BufFile *f, const void *p, size_t len)
{
	if (len > 0)
		BufFileWrite(f, (void *) p, len);
}

/* spill_read: read exactly len bytes from the spill file. */
static void
spill_read(BufFile *f, void *p, size_t len)
{
	if (len > 0 && BufFileRead(f, p, len) != len)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read line_status's temporary file")));
}

/*
 * record: keep an answer for an entry: its fixed fields in the entry, the
 * rest appended to the spill file.
 */
static void
record(LsBulk *b, BulkEntry *e, LsResult *res)
{
	SpillHeader h;

	e->done = true;
	e->status = (int8) res->status;
	e->has_valid = res->has_valid;
	e->valid = res->valid;
	e->has_error_code = res->has_error_code;
	e->error_code = res->error_code;
	e->cached = res->cached;
	e->failed = res->failed;
	e->checked_at = res->has_checked_at ? res->checked_at : 0;

	h.phone_len = res->phone_number ? (int32) strlen(res->phone_number) : -1;
	h.country_len = res->country_code ? (int32) strlen(res->country_code) : -1;
	h.response_len = res->response ? (int32) VARSIZE(res->response) : -1;
	BufFileTell(b->spill, &e->spill_file, &e->spill_off);
	spill_write(b->spill, &h, sizeof(h));
	if (h.phone_len > 0)
		spill_write(b->spill, res->phone_number, h.phone_len);
	if (h.country_len > 0)
		spill_write(b->spill, res->country_code, h.country_len);
	if (h.response_len > 0)
		spill_write(b->spill, res->response, h.response_len);
}

/*
 * ls_bulk_result: an entry's answer, read back (palloc'd in the current
 * memory context).
 */
void
ls_bulk_result(LsBulk *b, BulkEntry *e, LsResult *res)
{
	SpillHeader h;

	memset(res, 0, sizeof(*res));
	res->status = (LsStatus) e->status;
	res->has_valid = e->has_valid;
	res->valid = e->valid;
	res->has_error_code = e->has_error_code;
	res->error_code = e->error_code;
	res->cached = e->cached;
	res->failed = e->failed;
	res->has_checked_at = e->checked_at != 0;
	res->checked_at = e->checked_at;

	if (BufFileSeek(b->spill, e->spill_file, e->spill_off, SEEK_SET) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not seek in line_status's temporary file")));
	spill_read(b->spill, &h, sizeof(h));
	if (h.phone_len >= 0)
	{
		res->phone_number = palloc(h.phone_len + 1);
		spill_read(b->spill, res->phone_number, h.phone_len);
		res->phone_number[h.phone_len] = '\0';
	}
	if (h.country_len >= 0)
	{
		res->country_code = palloc(h.country_len + 1);
		spill_read(b->spill, res->country_code, h.country_len);
		res->country_code[h.country_len] = '\0';
	}
	if (h.response_len > 0)
	{
		res->response = palloc(h.response_len);
		spill_read(b->spill, res->response, h.response_len);
	}
}

/*
 * entry_number / entry_country: the number and the country (NULL for E.164)
 * an entry stands for; its key is the country, if any, then the number.
 */
static const char *
entry_number(BulkEntry *e)
{
	return e->key[0] == '+' ? e->key : e->key + 2;
}

static const char *
entry_country(BulkEntry *e, char *buf)
{
	if (e->key[0] == '+')
		return NULL;
	buf[0] = e->key[0];
	buf[1] = e->key[1];
	buf[2] = '\0';
	return buf;
}

/*
 * ls_bulk_begin: a bulk lookup's state, in the current memory context,
 * sized for about "expected" distinct numbers.
 */
LsBulk *
ls_bulk_begin(LsCache *cache, long expected)
{
	LsBulk	   *b = palloc0(sizeof(LsBulk));
	HASHCTL		ctl;

	b->cache = cache;
	ctl.keysize = sizeof(((BulkEntry *) NULL)->key);
	ctl.entrysize = sizeof(BulkEntry);
	ctl.hcxt = CurrentMemoryContext;
	b->distinct = hash_create("line_status bulk", expected + 16, &ctl,
							  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	b->spill = BufFileCreateTemp(false);
	return b;
}

/*
 * ls_bulk_add: the entry for a normalised number (and its country, for a
 * national number), created on first sight.
 */
BulkEntry *
ls_bulk_add(LsBulk *b, const char *number, const char *country)
{
	char		key[sizeof(((BulkEntry *) NULL)->key)];
	BulkEntry  *e;
	bool		found;

	snprintf(key, sizeof(key), "%s%s", country ? country : "", number);
	e = hash_search(b->distinct, key, HASH_ENTER, &found);
	if (!found)
		memset(((char *) e) + sizeof(e->key), 0, sizeof(BulkEntry) - sizeof(e->key));
	return e;
}

/*
 * ls_bulk_run: answer every entry: from the cache where it has a fresh
 * answer, else from Twilio.
 */
void
ls_bulk_run(LsBulk *b)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "line_status probe",
											  ALLOCSET_DEFAULT_SIZES);
	HASH_SEQ_STATUS seq;
	BulkEntry  *e;

	b->misses = palloc_extended(sizeof(BulkEntry *) * (hash_get_num_entries(b->distinct) + 1),
								MCXT_ALLOC_HUGE);
	hash_seq_init(&seq, b->distinct);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		LsResult	res;
		char		cbuf[3];
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		old = MemoryContextSwitchTo(cxt);
		if (ls_cache_get(b->cache, entry_number(e), entry_country(e, cbuf), &res))
		{
			ls_stats_cache_hit();
			record(b, e, &res);
		}
		else
			b->misses[b->nmisses++] = e;
		MemoryContextSwitchTo(old);
		MemoryContextReset(cxt);
	}
	MemoryContextDelete(cxt);
	fetch(b);
}

/* ls_bulk_end: release the temporary file. */
void
ls_bulk_end(LsBulk *b)
{
	BufFileClose(b->spill);
}

/* due_cmp: order the retry heap so that its top is the earliest due. */
static int
due_cmp(Datum a, Datum b, void *arg)
{
	BulkEntry  *x = (BulkEntry *) DatumGetPointer(a);
	BulkEntry  *y = (BulkEntry *) DatumGetPointer(b);

	if (x->due < y->due)
		return 1;
	if (x->due > y->due)
		return -1;
	return 0;
}

/* ms_until: milliseconds from now until t, at least 0. */
static long
ms_until(TimestampTz now, TimestampTz t)
{
	return t > now ? (long) ((t - now + 999) / 1000) : 0;
}

/*
 * fetch: fetch every entry in b->misses from Twilio, concurrently, retrying
 * what is worth retrying, and record each answer (and store it in the
 * cache).  A failure is raised as an ERROR when it is fatal or
 * line_status.on_error = error (unless keep_going); otherwise it is recorded
 * as a failed result.
 */
static void
fetch(LsBulk *b)
{
	MemoryContext answer_cxt;
	MemoryContext old;
	binaryheap *retries;
	double		limit = ls_max_concurrency;
	TimestampTz pause_until = 0;
	TimestampTz last_cut = 0;
	int			streak_429 = 0;
	TimestampTz next_start = 0;
	int			next = 0;
	int			done = 0;
	char		cbuf[3];

	if (b->nmisses == 0)
		return;
	ls_twilio_check_credentials();
	ls_http_abort_all();

	answer_cxt = AllocSetContextCreate(CurrentMemoryContext, "line_status answer",
									   ALLOCSET_DEFAULT_SIZES);
	retries = binaryheap_allocate(b->nmisses, due_cmp, NULL);

	while (done < b->nmisses)
	{
		TimestampTz now = GetCurrentTimestamp();
		long		wait_ms = -1;
		LsTransfer *t;

		CHECK_FOR_INTERRUPTS();

		/* Start what the limits allow: retries that are due first. */
		while (ls_http_in_flight() < (int) limit && now >= pause_until &&
			   (ls_max_rate == 0 || now >= next_start))
		{
			BulkEntry  *e;

			if (!binaryheap_empty(retries) &&
				((BulkEntry *) DatumGetPointer(binaryheap_first(retries)))->due <= now)
				e = (BulkEntry *) DatumGetPointer(binaryheap_remove_first(retries));
			else if (next < b->nmisses)
				e = b->misses[next++];
			else
				break;

			t = ls_http_acquire();
			t->arg = e;
			t->max_sends = Max(ls_max_retries + 1 - e->attempts, 1);
			old = MemoryContextSwitchTo(answer_cxt);
			ls_twilio_start(t, ls_twilio_url(entry_number(e), entry_country(e, cbuf)));
			MemoryContextSwitchTo(old);
			MemoryContextReset(answer_cxt);
			if (ls_max_rate > 0)
				next_start = Max(next_start, now) + USECS_PER_SEC / ls_max_rate;
		}

		/* Wait for an answer, or until the next thing may start. */
		if (now < pause_until)
			wait_ms = ms_until(now, pause_until);
		else if (ls_max_rate > 0 && now < next_start)
			wait_ms = ms_until(now, next_start);
		if (!binaryheap_empty(retries))
		{
			long		r = ms_until(now, ((BulkEntry *) DatumGetPointer(binaryheap_first(retries)))->due);

			wait_ms = wait_ms < 0 ? r : Min(wait_ms, r);
		}
		if (ls_http_in_flight() == 0)
		{
			if (wait_ms < 0)
				elog(ERROR, "line_status bulk lookup has nothing to wait for");
			if (wait_ms > 0)
				ls_http_sleep(wait_ms);
			continue;
		}
		t = ls_http_wait(wait_ms);
		if (t == NULL)
			continue;

		/* Deal with the answer. */
		{
			BulkEntry  *e = (BulkEntry *) t->arg;
			LsVerdict	verdict = ls_twilio_verdict(t);
			LsResult	res;
			LsFailure	failure;
			bool		final = false;

			old = MemoryContextSwitchTo(answer_cxt);
			now = GetCurrentTimestamp();
			/* libcurl's own resends count as attempts */
			e->attempts += Max(t->sends, 1) - 1;
			if (verdict == LS_ANSWERED)
			{
				bool		ok = ls_twilio_read(t, entry_number(e), &res, &failure);

				ls_http_release(t);
				if (ok)
				{
					ls_cache_put(b->cache, entry_number(e), entry_country(e, cbuf), &res);
					record(b, e, &res);
					done++;
					streak_429 = 0;
					if (limit < ls_max_concurrency)
						limit = Min(ls_max_concurrency, limit + 1.0 / limit);
				}
				else
					final = true;
			}
			else if (verdict == LS_RETRY &&
					 t->result == CURLE_OK && t->http_status == 429 &&
					 e->attempts_429 < MAX_429_RETRIES)
			{
				/*
				 * Twilio wants fewer requests at once: slow the whole pool.
				 * What it accepted is about what we had in flight besides
				 * this one, so the limit drops to that at once (a 429 comes
				 * back immediately, and its slot must not go straight to
				 * another number).  Repeated 429s with no success between
				 * them (a rate limit rather than a concurrency limit) halve
				 * the limit and pause the pool for a backoff.
				 */
				int			others = ls_http_in_flight() - 1;

				e->attempts_429++;
				streak_429++;
				limit = Max(1.0, Min(limit - 1, (double) others));
				if (streak_429 >= 3 && now - last_cut >= COOL_DOWN_MS * 1000)
				{
					limit = Max(1.0, limit / 2);
					last_cut = now;
				}
				if (streak_429 >= 3 || t->retry_after_ms >= 0)
					pause_until = Max(pause_until,
									  now + ls_twilio_backoff_ms(0, t->retry_after_ms) * 1000);
				e->due = now + ls_twilio_backoff_ms(Min(e->attempts_429 - 1, 5), t->retry_after_ms) * 1000;
				ls_stats_retry();
				ls_http_release(t);
				binaryheap_add(retries, PointerGetDatum(e));
			}
			else if (verdict == LS_RETRY && e->attempts < ls_max_retries)
			{
				e->due = now + ls_twilio_backoff_ms(e->attempts, t->retry_after_ms) * 1000;
				e->attempts++;
				ls_stats_retry();
				ls_http_release(t);
				binaryheap_add(retries, PointerGetDatum(e));
			}
			else
			{
				ls_twilio_failure(t, entry_number(e), e->attempts + e->attempts_429 + 1, &failure);
				ls_http_release(t);
				final = true;
			}

			if (final)
			{
				if (failure.fatal || (ls_on_error == LS_ON_ERROR_ERROR && !b->keep_going))
					ls_twilio_raise(&failure);
				ls_result_failed(&failure, &res);
				record(b, e, &res);
				done++;
			}
			MemoryContextSwitchTo(old);
			MemoryContextReset(answer_cxt);
		}
	}
	binaryheap_free(retries);
	MemoryContextDelete(answer_cxt);
}
