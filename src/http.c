/*-------------------------------------------------------------------------
 *
 * http.c
 *		The HTTP transport: libcurl easy handles pooled per backend and driven
 *		by one multi handle.
 *
 * Why a multi handle even for one request at a time: its connection cache
 * outlives each transfer, so sequential lookups reuse one TCP (and TLS)
 * connection; and the loop that drives it is ours, so between libcurl calls
 * we wait at most LS_HTTP_POLL_MS and run CHECK_FOR_INTERRUPTS().  A cancel
 * or statement_timeout signal also wakes poll() at once (EINTR), so the
 * ordinary 57014 error comes within milliseconds.  We install no signal
 * handlers of our own.
 *
 * An ERROR can longjmp out of the loop with transfers still attached.  The
 * transaction and subtransaction abort callbacks detach them, so their
 * connections are closed and the handles are ready for the next call.
 *
 * libcurl stays on malloc (routing it through palloc crashed other
 * extensions when a memory context was reset under it).  Response bodies
 * are malloc'd buffers kept with their handle and reused.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "http.h"
#include "settings.h"
#include "worker.h"

#if LIBCURL_VERSION_NUM < 0x074200	/* 7.66.0: curl_multi_poll() */
#error "line_status needs libcurl 7.66.0 or later"
#endif

/* Longest wait inside libcurl before we look at interrupts again. */
#define LS_HTTP_POLL_MS 50

#define USER_AGENT "line_status/" LINE_STATUS_VERSION " (PostgreSQL extension; +https://github.com/line-status)"

static CURLM *multi = NULL;
static LsTransfer **pool = NULL;
static int	pool_size = 0;
static int	pool_cap = 0;
static int	in_flight = 0;

/* Finished transfers not yet handed to the caller (at most pool_size). */
static LsTransfer **finished = NULL;
static int	n_finished = 0;

static bool callbacks_registered = false;

/*
 * write_body: libcurl's write callback.  Append to the transfer's buffer;
 * past LS_HTTP_MAX_BODY, stop the transfer (returning less than given makes
 * libcurl fail with CURLE_WRITE_ERROR).  Never raises a PostgreSQL error:
 * a longjmp out of libcurl would corrupt its state.
 */
static size_t
write_body(char *data, size_t size, size_t nmemb, void *userdata)
{
	LsTransfer *t = (LsTransfer *) userdata;
	size_t		n = size * nmemb;

	if (t->body_len + n > LS_HTTP_MAX_BODY)
	{
		t->too_large = true;
		return 0;
	}
	if (t->body_len + n + 1 > t->body_cap)
	{
		size_t		cap = t->body_cap ? t->body_cap : 4096;
		char	   *p;

		while (cap < t->body_len + n + 1)
			cap *= 2;
		p = realloc(t->body, cap);
		if (p == NULL)
			return 0;
		t->body = p;
		t->body_cap = cap;
	}
	memcpy(t->body + t->body_len, data, n);
	t->body_len += n;
	t->body[t->body_len] = '\0';
	return n;
}

/*
 * read_header: libcurl's header callback.  We need only Retry-After, in
 * its delta-seconds form (the HTTP-date form is rare for APIs and ignored).
 */
static size_t
read_header(char *data, size_t size, size_t nmemb, void *userdata)
{
	LsTransfer *t = (LsTransfer *) userdata;
	size_t		n = size * nmemb;
	static const char name[] = "retry-after:";

	if (n > sizeof(name) - 1 && pg_strncasecmp(data, name, sizeof(name) - 1) == 0)
	{
		size_t		i = sizeof(name) - 1;
		long		secs = 0;
		bool		digits = false;

		while (i < n && (data[i] == ' ' || data[i] == '\t'))
			i++;
		while (i < n && data[i] >= '0' && data[i] <= '9' && secs < 86400)
		{
			secs = secs * 10 + (data[i] - '0');
			digits = true;
			i++;
		}
		if (digits)
			t->retry_after_ms = secs * 1000;
	}
	return n;
}

#if LIBCURL_VERSION_NUM >= 0x075000	/* 7.80.0: CURLOPT_PREREQFUNCTION */
/*
 * before_send: libcurl's pre-request callback, called each time the request
 * is about to go out.  libcurl resends on its own when a kept connection
 * dies before any answer; each send may be charged, so sends are counted
 * and a resend beyond max_sends is refused.
 */
static int
before_send(void *userdata, char *conn_primary_ip, char *conn_local_ip,
			int conn_primary_port, int conn_local_port)
{
	LsTransfer *t = (LsTransfer *) userdata;

	if (t->max_sends > 0 && t->sends >= t->max_sends)
	{
		t->resend_refused = true;
		return CURL_PREREQFUNC_ABORT;
	}
	t->sends++;
	return CURL_PREREQFUNC_OK;
}
#endif

/* detach: take a transfer off the multi handle, aborting it if unfinished. */
static void
detach(LsTransfer *t)
{
	if (t->attached)
	{
		curl_multi_remove_handle(multi, t->easy);
		t->attached = false;
		in_flight--;
	}
}

/*
 * ls_http_abort_all: abort every transfer in flight and forget finished
 * ones.  Called on transaction and subtransaction abort, and before a new
 * batch, so that no handle outlives the statement that started it.
 */
void
ls_http_abort_all(void)
{
	int			i;

	for (i = 0; i < pool_size; i++)
	{
		detach(pool[i]);
		pool[i]->done = false;
		pool[i]->held = false;
		pool[i]->arg = NULL;
	}
	n_finished = 0;
	in_flight = 0;
}

static void
xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		ls_http_abort_all();
}

static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		ls_http_abort_all();
}

/* ensure_multi: create the multi handle and register cleanup, once. */
static void
ensure_multi(void)
{
	if (multi != NULL)
		return;
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialize libcurl")));
	multi = curl_multi_init();
	if (multi == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl multi handle")));
	if (!callbacks_registered)
	{
		RegisterXactCallback(xact_callback, NULL);
		RegisterSubXactCallback(subxact_callback, NULL);
		callbacks_registered = true;
	}
}

#define SETOPT(h, opt, val) \
	do { \
		CURLcode setopt_rc_ = curl_easy_setopt((h), (opt), (val)); \
		if (setopt_rc_ != CURLE_OK) \
			ereport(ERROR, \
					(errcode(ERRCODE_SYSTEM_ERROR), \
					 errmsg("could not set libcurl option %s", #opt), \
					 errdetail("%s", curl_easy_strerror(setopt_rc_)))); \
	} while (0)

/*
 * set_fixed_options: the options that are the same for every request of a
 * handle: no redirects, http and https only, full TLS verification, our
 * callbacks and User-Agent.
 */
static void
set_fixed_options(LsTransfer *t)
{
	CURL	   *h = t->easy;
	static struct curl_slist *headers = NULL;

	if (headers == NULL)
	{
		headers = curl_slist_append(NULL, "Accept: application/json");
		if (headers == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory")));
	}
	SETOPT(h, CURLOPT_HTTPGET, 1L);
	SETOPT(h, CURLOPT_HTTPHEADER, headers);
#if LIBCURL_VERSION_NUM >= 0x075500	/* 7.85.0: CURLOPT_PROTOCOLS_STR */
	SETOPT(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	SETOPT(h, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	SETOPT(h, CURLOPT_FOLLOWLOCATION, 0L);
	SETOPT(h, CURLOPT_SSL_VERIFYPEER, 1L);
	SETOPT(h, CURLOPT_SSL_VERIFYHOST, 2L);
	SETOPT(h, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
	SETOPT(h, CURLOPT_USERAGENT, USER_AGENT);
	SETOPT(h, CURLOPT_NOSIGNAL, 1L);
	SETOPT(h, CURLOPT_TCP_KEEPALIVE, 1L);
	SETOPT(h, CURLOPT_WRITEFUNCTION, write_body);
	SETOPT(h, CURLOPT_WRITEDATA, t);
	SETOPT(h, CURLOPT_HEADERFUNCTION, read_header);
	SETOPT(h, CURLOPT_HEADERDATA, t);
	SETOPT(h, CURLOPT_ERRORBUFFER, t->errbuf);
	SETOPT(h, CURLOPT_PRIVATE, t);
#if LIBCURL_VERSION_NUM >= 0x075000
	SETOPT(h, CURLOPT_PREREQFUNCTION, before_send);
	SETOPT(h, CURLOPT_PREREQDATA, t);
#endif
	t->custom_ca = false;
}

/*
 * ls_http_acquire: an idle transfer from the pool, growing the pool when
 * all are busy.  Handles are kept for the life of the backend.
 */
LsTransfer *
ls_http_acquire(void)
{
	int			i;
	LsTransfer *t;

	ensure_multi();
	for (i = 0; i < pool_size; i++)
	{
		t = pool[i];
		if (!t->held)
		{
			t->held = true;
			return t;
		}
	}

	if (pool_size == pool_cap)
	{
		int			newcap = pool_cap ? pool_cap * 2 : 8;

		pool = pool ? repalloc(pool, sizeof(LsTransfer *) * newcap)
			: MemoryContextAlloc(TopMemoryContext, sizeof(LsTransfer *) * newcap);
		finished = finished ? repalloc(finished, sizeof(LsTransfer *) * newcap)
			: MemoryContextAlloc(TopMemoryContext, sizeof(LsTransfer *) * newcap);
		pool_cap = newcap;
	}
	t = (LsTransfer *) MemoryContextAllocZero(TopMemoryContext, sizeof(LsTransfer));
	t->easy = curl_easy_init();
	if (t->easy == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl handle")));
	set_fixed_options(t);
	pool[pool_size++] = t;
	t->held = true;
	return t;
}

/* ls_http_release: give a transfer back to the pool. */
void
ls_http_release(LsTransfer *t)
{
	detach(t);
	t->done = false;
	t->held = false;
	t->arg = NULL;
	/* Keep a small buffer for the next answer, not a huge one. */
	if (t->body_cap > 64 * 1024)
	{
		free(t->body);
		t->body = NULL;
		t->body_cap = 0;
	}
	t->body_len = 0;
}

/*
 * ls_http_start: begin a GET of url with HTTP Basic credentials, using the
 * current timeouts and CA file.
 */
void
ls_http_start(LsTransfer *t, const char *url, const char *user,
			  const char *password)
{
	CURL	   *h = t->easy;
	CURLMcode	mc;

	Assert(t->held && !t->attached);
	t->done = false;
	t->result = CURLE_OK;
	t->http_status = 0;
	t->body_len = 0;
	if (t->body)
		t->body[0] = '\0';
	t->too_large = false;
	t->retry_after_ms = -1;
	t->errbuf[0] = '\0';
	t->sends = 0;
	t->resend_refused = false;

	if (ls_ca_file != NULL && ls_ca_file[0] != '\0')
	{
		SETOPT(h, CURLOPT_CAINFO, ls_ca_file);
		t->custom_ca = true;
	}
	else if (t->custom_ca)
	{
		/* back to libcurl's built-in CA bundle */
		curl_easy_reset(h);
		set_fixed_options(t);
	}
	SETOPT(h, CURLOPT_URL, url);
	SETOPT(h, CURLOPT_USERNAME, user);
	SETOPT(h, CURLOPT_PASSWORD, password);
	SETOPT(h, CURLOPT_TIMEOUT_MS, (long) ls_timeout_ms);
	SETOPT(h, CURLOPT_CONNECTTIMEOUT_MS, (long) ls_connect_timeout_ms);

	mc = curl_multi_add_handle(multi, h);
	if (mc != CURLM_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not start an HTTP request"),
				 errdetail("%s", curl_multi_strerror(mc))));
	t->attached = true;
	in_flight++;
}

/* collect: move every transfer libcurl reports as done to the finished list. */
static void
collect(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		LsTransfer *t = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
		t->result = msg->data.result;
		curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->http_status);
		{
			double		total = 0;
			int			i;

			curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME, &total);
			for (i = 0; i < Max(t->sends, 1); i++)
				ls_stats_request(total * 1000.0);
		}
		if (t->too_large)
			t->result = CURLE_FILESIZE_EXCEEDED;
		else if (t->resend_refused)
		{
			/* what the last send met; libcurl's text would name our callback */
			t->result = CURLE_GOT_NOTHING;
			strlcpy(t->errbuf, "Empty reply from server (the connection closed without an answer)",
					sizeof(t->errbuf));
		}
		detach(t);
		t->done = true;
		finished[n_finished++] = t;
	}
}

/*
 * ls_http_wait: drive the transfers in flight until one finishes, and
 * return it; return NULL when max_wait_ms passes first (-1: no limit) or
 * when nothing is in flight.  Interrupts are checked at least every
 * LS_HTTP_POLL_MS; a cancel raises its ordinary error here, and the abort
 * callbacks clean up.
 */
LsTransfer *
ls_http_wait(long max_wait_ms)
{
	TimestampTz deadline = 0;

	if (max_wait_ms >= 0)
		deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), max_wait_ms);

	for (;;)
	{
		int			running;
		long		wait_ms;
		CURLMcode	mc;

		CHECK_FOR_INTERRUPTS();

		if (n_finished > 0)
			return finished[--n_finished];
		if (in_flight == 0)
			return NULL;

		mc = curl_multi_perform(multi, &running);
		if (mc != CURLM_OK)
			ereport(ERROR,
					(errcode(ERRCODE_SYSTEM_ERROR),
					 errmsg("could not run HTTP requests"),
					 errdetail("%s", curl_multi_strerror(mc))));
		collect();
		if (n_finished > 0)
			return finished[--n_finished];

		curl_multi_timeout(multi, &wait_ms);
		if (wait_ms < 0 || wait_ms > LS_HTTP_POLL_MS)
			wait_ms = LS_HTTP_POLL_MS;
		if (max_wait_ms >= 0)
		{
			long		secs;
			int			usecs;
			long		left;

			TimestampDifference(GetCurrentTimestamp(), deadline, &secs, &usecs);
			left = secs * 1000 + usecs / 1000;
			if (left <= 0)
				return NULL;
			if (wait_ms > left)
				wait_ms = left;
		}
		if (wait_ms > 0)
		{
			pgstat_report_wait_start(PG_WAIT_EXTENSION);
			mc = curl_multi_poll(multi, NULL, 0, (int) wait_ms, NULL);
			pgstat_report_wait_end();
			if (mc != CURLM_OK)
				ereport(ERROR,
						(errcode(ERRCODE_SYSTEM_ERROR),
						 errmsg("could not wait for HTTP requests"),
						 errdetail("%s", curl_multi_strerror(mc))));
		}
	}
}

/*
 * ls_http_in_flight: the number of transfers started and not yet handed
 * back by ls_http_wait (finished ones waiting to be collected included).
 */
int
ls_http_in_flight(void)
{
	return in_flight + n_finished;
}

/* ls_http_timing: how long each phase of a finished transfer took, in ms. */
void
ls_http_timing(LsTransfer *t, LsTiming *timing)
{
	double		v;

	memset(timing, 0, sizeof(*timing));
	if (curl_easy_getinfo(t->easy, CURLINFO_NAMELOOKUP_TIME, &v) == CURLE_OK)
		timing->dns = v * 1000.0;
	if (curl_easy_getinfo(t->easy, CURLINFO_CONNECT_TIME, &v) == CURLE_OK)
		timing->connect = v * 1000.0;
	if (curl_easy_getinfo(t->easy, CURLINFO_APPCONNECT_TIME, &v) == CURLE_OK)
		timing->tls = v * 1000.0;
	if (curl_easy_getinfo(t->easy, CURLINFO_STARTTRANSFER_TIME, &v) == CURLE_OK)
		timing->first_byte = v * 1000.0;
	if (curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME, &v) == CURLE_OK)
		timing->total = v * 1000.0;
	{
		long		n;

		if (curl_easy_getinfo(t->easy, CURLINFO_NUM_CONNECTS, &n) == CURLE_OK)
			timing->reused = n == 0;
		if (curl_easy_getinfo(t->easy, CURLINFO_REQUEST_SIZE, &n) == CURLE_OK)
			timing->sent = n > 0;
		if (curl_easy_getinfo(t->easy, CURLINFO_HEADER_SIZE, &n) == CURLE_OK)
			timing->headers = n > 0;
	}
}

/*
 * ls_http_sleep: wait ms milliseconds for a retry, in a way that a cancel
 * or statement_timeout interrupts at once.
 */
void
ls_http_sleep(long ms)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);

	for (;;)
	{
		long		secs;
		int			usecs;
		long		left;

		CHECK_FOR_INTERRUPTS();
		TimestampDifference(GetCurrentTimestamp(), deadline, &secs, &usecs);
		left = secs * 1000 + usecs / 1000;
		if (left <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 left, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
