/*-------------------------------------------------------------------------
 *
 * http.h
 *		The HTTP transport: libcurl handles kept per backend, driven by one
 *		multi handle so that connections are reused and a cancel is seen at
 *		once.
 *
 *-------------------------------------------------------------------------
 */
#ifndef LINE_STATUS_HTTP_H
#define LINE_STATUS_HTTP_H

#include <curl/curl.h>

/* Twilio's answers are about 1 kB; anything past this is not one. */
#define LS_HTTP_MAX_BODY (256 * 1024)

typedef struct LsTransfer
{
	CURL	   *easy;
	bool		held;			/* handed out by ls_http_acquire */
	bool		attached;		/* added to the multi handle */
	bool		custom_ca;		/* CURLOPT_CAINFO was set */
	bool		done;			/* finished, result fields valid */

	/* result of the last transfer */
	CURLcode	result;
	long		http_status;
	char	   *body;			/* malloc'd, NUL-terminated */
	size_t		body_len;
	size_t		body_cap;
	bool		too_large;		/* body exceeded LS_HTTP_MAX_BODY */
	int			max_sends;		/* most times the request may go out (0: any) */
	int			sends;			/* times it went out: libcurl resends a request
								 * whose kept connection died unanswered */
	bool		resend_refused; /* a resend beyond max_sends was stopped */
	long		retry_after_ms; /* Retry-After header, -1 when absent */
	char		errbuf[CURL_ERROR_SIZE];

	void	   *arg;			/* the caller's */
} LsTransfer;

/* Connection timing of a finished transfer, for error details. */
typedef struct LsTiming
{
	double		dns;
	double		connect;
	double		tls;
	double		first_byte;
	double		total;
	bool		reused;			/* on a kept connection: no DNS, connect, TLS */
	bool		sent;			/* the request went out */
	bool		headers;		/* response headers came back */
} LsTiming;

extern LsTransfer *ls_http_acquire(void);
extern void ls_http_release(LsTransfer *t);
extern void ls_http_start(LsTransfer *t, const char *url, const char *user,
						  const char *password);
extern LsTransfer *ls_http_wait(long max_wait_ms);
extern int	ls_http_in_flight(void);
extern void ls_http_abort_all(void);
extern void ls_http_timing(LsTransfer *t, LsTiming *timing);
extern void ls_http_sleep(long ms);

#endif							/* LINE_STATUS_HTTP_H */
