/*-------------------------------------------------------------------------
 *
 * bulk.h
 *		Bulk lookups: many numbers, each distinct one asked once, the misses
 *		fetched concurrently.
 *
 *-------------------------------------------------------------------------
 */
#ifndef LINE_STATUS_BULK_H
#define LINE_STATUS_BULK_H

#include "storage/buffile.h"
#include "utils/hsearch.h"

#include "cache.h"
#include "phone.h"
#include "twilio.h"

/*
 * One distinct number of a bulk call.  The fixed-size part stays in memory;
 * the answer's variable part (phone_number, country_code, response) is
 * spilled to a temporary file, so a million answers do not sit in RAM.
 */
typedef struct BulkEntry
{
	char		key[PHONE_BUFSIZE + 3]; /* "CC" (or "") + normalised number */
	bool		done;
	int8		status;			/* LsStatus */
	bool		has_valid;
	bool		valid;
	bool		has_error_code;
	bool		cached;
	bool		failed;
	uint16		attempts;		/* failures other than 429 */
	uint16		attempts_429;
	int32		error_code;
	TimestampTz checked_at;
	TimestampTz due;			/* when a retry may start */
	int32		spill_file;		/* where the variable part is */
	off_t		spill_off;
} BulkEntry;

/* A bulk call's state. */
typedef struct LsBulk
{
	LsCache    *cache;
	HTAB	   *distinct;		/* BulkEntry by key */
	BufFile    *spill;
	BulkEntry **misses;			/* entries to fetch from Twilio */
	int			nmisses;
	bool		keep_going;		/* record failures, whatever on_error says */
} LsBulk;

extern LsBulk *ls_bulk_begin(LsCache *cache, long expected);
extern BulkEntry *ls_bulk_add(LsBulk *b, const char *number, const char *country);
extern void ls_bulk_run(LsBulk *b);
extern void ls_bulk_result(LsBulk *b, BulkEntry *e, LsResult *res);
extern void ls_bulk_end(LsBulk *b);

#endif							/* LINE_STATUS_BULK_H */
