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
	char		key[PHONE_BUFSIZE]; /* normalised number (hash key) */
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
	const char *country;		/* for national numbers, or NULL */
	BufFile    *spill;
	BulkEntry **misses;			/* entries to fetch from Twilio */
	int			nmisses;
} LsBulk;

extern void ls_bulk_record(LsBulk *b, BulkEntry *e, LsResult *res);
extern void ls_bulk_result(LsBulk *b, BulkEntry *e, LsResult *res);
extern void ls_bulk_fetch(LsBulk *b);
extern const char *ls_bulk_country(LsBulk *b, BulkEntry *e);

#endif							/* LINE_STATUS_BULK_H */
