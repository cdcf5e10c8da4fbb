/*-------------------------------------------------------------------------
 *
 * cache.h
 *		The result cache (line_status_cache) and the per-statement memo.
 *
 *-------------------------------------------------------------------------
 */
#ifndef LINE_STATUS_CACHE_H
#define LINE_STATUS_CACHE_H

#include "twilio.h"

/* Where the extension's objects are, looked up once per statement. */
typedef struct LsCache
{
	Oid			nsp;			/* the extension's schema */
	Oid			cache_rel;		/* line_status_cache, or InvalidOid */
	Oid			cache_idx;		/* its primary key */
	Oid			alias_rel;		/* line_status_cache_alias */
	Oid			alias_idx;		/* its primary key */
	Oid			owner;			/* owner of the cache table */
	Oid			status_type;	/* line_status_status */
	Oid			status_oids[LS_NUM_STATUSES];	/* its values */
} LsCache;

extern void ls_cache_init(LsCache *c, Oid nsp);
extern bool ls_cache_enabled(LsCache *c);
extern bool ls_cache_get(LsCache *c, const char *number, const char *country,
						 LsResult *res);
extern bool ls_cache_put(LsCache *c, const char *number, const char *country,
						 LsResult *res);
extern bool ls_memo_get(const char *number, const char *country, LsResult *res);
extern void ls_memo_put(const char *number, const char *country, LsResult *res);
extern void ls_check_number(LsCache *c, const char *number, const char *country,
							bool force, LsResult *res);

#endif							/* LINE_STATUS_CACHE_H */
