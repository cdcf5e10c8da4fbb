/*-------------------------------------------------------------------------
 *
 * twilio.h
 *		The Twilio Lookup v2 request and response: URL, retries, errors, and
 *		reading an answer into an LsResult.
 *
 *-------------------------------------------------------------------------
 */
#ifndef LINE_STATUS_TWILIO_H
#define LINE_STATUS_TWILIO_H

#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "http.h"

/* The values of the line_status_status enum, in its order. */
typedef enum LsStatus
{
	LS_STATUS_NONE = -1,		/* SQL NULL */
	LS_STATUS_ACTIVE = 0,
	LS_STATUS_REACHABLE,
	LS_STATUS_UNREACHABLE,
	LS_STATUS_INACTIVE,
	LS_STATUS_UNKNOWN
} LsStatus;

#define LS_NUM_STATUSES 5

extern const char *const ls_status_names[LS_NUM_STATUSES];

/* One lookup's answer: the columns of line_status_result. */
typedef struct LsResult
{
	char	   *phone_number;	/* NULL for SQL NULL */
	LsStatus	status;
	bool		has_error_code;
	int32		error_code;
	bool		has_valid;		/* false: valid is SQL NULL */
	bool		valid;
	char	   *country_code;	/* NULL for SQL NULL */
	bool		has_checked_at;
	TimestampTz checked_at;
	bool		cached;
	Jsonb	   *response;		/* NULL when no request was made */
	bool		failed;			/* stands for a failure (never cached) */
} LsResult;

/* A lookup that failed for good: what the ERROR would say. */
typedef struct LsFailure
{
	int			sqlstate;
	char	   *message;
	char	   *detail;
	const char *hint;
	bool		fatal;			/* hits every number alike: always raised */
	int			code;			/* Twilio's error code, else HTTP status, else 0 */
} LsFailure;

/* What to do with a finished transfer. */
typedef enum LsVerdict
{
	LS_ANSWERED,				/* HTTP 200: read it */
	LS_RETRY,					/* 429, 5xx or a connection fault */
	LS_FAILED					/* anything else */
} LsVerdict;

extern void ls_result_rejected(LsResult *res);
extern void ls_twilio_check_credentials(void);
extern char *ls_twilio_url(const char *number, const char *country);
extern void ls_twilio_start(LsTransfer *t, const char *url);
extern LsVerdict ls_twilio_verdict(LsTransfer *t);
extern long ls_twilio_backoff_ms(int attempt, long retry_after_ms);
extern bool ls_twilio_read(LsTransfer *t, const char *number, LsResult *res,
						   LsFailure *f);
extern void ls_twilio_failure(LsTransfer *t, const char *number, int attempts,
							  LsFailure *f);
extern void ls_twilio_raise(LsFailure *f) pg_attribute_noreturn();
extern void ls_result_failed(LsFailure *f, LsResult *res);
extern void ls_twilio_lookup(const char *number, const char *country, LsResult *res);

#endif							/* LINE_STATUS_TWILIO_H */
