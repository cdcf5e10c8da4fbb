/*-------------------------------------------------------------------------
 *
 * settings.h
 *		The line_status.* configuration parameters (GUCs).
 *
 *-------------------------------------------------------------------------
 */
#ifndef LINE_STATUS_SETTINGS_H
#define LINE_STATUS_SETTINGS_H

extern char *ls_api_url;
extern char *ls_account_sid;
extern char *ls_ca_file;
extern char *ls_auth_token_file;
extern int	ls_timeout_ms;
extern int	ls_connect_timeout_ms;
extern int	ls_max_retries;
extern int	ls_cache_ttl_s;
extern int	ls_max_concurrency;
extern int	ls_max_rate;

/* line_status.on_error */
typedef enum LsOnError
{
	LS_ON_ERROR_ERROR,
	LS_ON_ERROR_UNKNOWN
} LsOnError;

extern int	ls_on_error;

extern void ls_define_settings(void);
extern const char *ls_auth_token(void);

#endif							/* LINE_STATUS_SETTINGS_H */
