/*-------------------------------------------------------------------------
 *
 * worker.h
 *		Shared memory (statistics, hand-off of paid answers) and the
 *		background worker that drains the queue and stores hand-offs.
 *		All of it needs shared_preload_libraries; without it the functions
 *		here do nothing, or raise an error that says so.
 *
 *-------------------------------------------------------------------------
 */
#ifndef LINE_STATUS_WORKER_H
#define LINE_STATUS_WORKER_H

#include "cache.h"
#include "twilio.h"

extern char *ls_worker_database;

extern void ls_worker_init(void);
extern bool ls_worker_available(void);

/* statistics */
extern void ls_stats_request(double latency_ms);
extern void ls_stats_retry(void);
extern void ls_stats_answer(LsStatus status);
extern void ls_stats_error(LsFailure *f);
extern void ls_stats_cache_hit(void);

/* hand-off of paid answers, and the queue */
extern void ls_worker_handoff(const char *key, const char *number,
							  const char *country, LsResult *res);
extern void ls_worker_enqueue(LsCache *c, const char *number, const char *country,
							  Oid relid, const char *phone_column,
							  const char *status_column, const char *phone_text);

#endif							/* LINE_STATUS_WORKER_H */
