/*-------------------------------------------------------------------------
 *
 * settings.c
 *		The line_status.* configuration parameters.
 *
 * Three of them guard the credentials: the API URL (whoever can change it
 * can send the credentials to a server of their own), the account SID and
 * the auth token, plus the CA bundle that decides which servers are
 * trusted.  Those are PGC_SUSET, so only superusers and roles granted SET
 * on them can change them.
 *
 * The auth token is a secret, and GUC values are visible in many places:
 * SHOW, current_setting(), pg_settings (including reset_val and boot_val),
 * and, for values stored with ALTER ROLE/DATABASE ... SET or a function's
 * SET clause, pg_db_role_setting and pg_proc, which every role can read.
 * So the token never lives in the GUC value at all: the check hook moves it
 * into the hook's "extra" and leaves a mask in its place, and the assign
 * hook points ls_auth_token() at the extra.  GUC keeps value and extra
 * together through SET LOCAL, RESET, rollback and reloads, so the real token
 * follows every change.  Sources that would store the token in a catalog
 * are refused.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include "storage/fd.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "settings.h"

#define AUTH_TOKEN_MASK "********"

char	   *ls_api_url = NULL;
char	   *ls_account_sid = NULL;
char	   *ls_ca_file = NULL;
char	   *ls_auth_token_file = NULL;
int			ls_timeout_ms = 10000;
int			ls_connect_timeout_ms = 5000;
int			ls_max_retries = 3;
int			ls_cache_ttl_s = 7 * 24 * 3600;
int			ls_max_concurrency = 50;
int			ls_max_rate = 0;
int			ls_on_error = LS_ON_ERROR_ERROR;

static const struct config_enum_entry on_error_options[] = {
	{"error", LS_ON_ERROR_ERROR, false},
	{"unknown", LS_ON_ERROR_UNKNOWN, false},
	{NULL, 0, false}
};

/* The GUC-visible value of line_status.auth_token: always the mask. */
static char *auth_token_masked = NULL;

/* The real token: the "extra" of the current value, owned by guc.c. */
static const char *auth_token_secret = NULL;

/* The token last read from line_status.auth_token_file, and what it was read from. */
static char *file_token = NULL;
static char *file_token_path = NULL;
static struct stat file_token_stat;

/* Longest token file we read. */
#define MAX_TOKEN_FILE 4096

/*
 * check_api_url: accept only an absolute http or https URL without
 * credentials, query or fragment, since the phone number path is appended
 * to it and the auth token is sent to it.
 */
static bool
check_api_url(char **newval, void **extra, GucSource source)
{
	const char *url = *newval;
	const char *host;
	const char *p;

	if (url == NULL || url[0] == '\0')
	{
		GUC_check_errdetail("The API URL must not be empty.");
		return false;
	}
	if (pg_strncasecmp(url, "https://", 8) == 0)
		host = url + 8;
	else if (pg_strncasecmp(url, "http://", 7) == 0)
		host = url + 7;
	else
	{
		GUC_check_errdetail("The API URL must start with https:// or http://.");
		return false;
	}
	if (*host == '\0' || *host == '/')
	{
		GUC_check_errdetail("The API URL must name a host.");
		return false;
	}
	for (p = url; *p; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (c <= 0x20 || c >= 0x7f)
		{
			GUC_check_errdetail("The API URL must not contain spaces, control characters or non-ASCII characters.");
			return false;
		}
		if (c == '?' || c == '#' || c == '@' || c == '\\')
		{
			GUC_check_errdetail("The API URL must not contain \"?\", \"#\", \"@\" or \"\\\": no query, fragment or credentials.");
			return false;
		}
	}
	return true;
}

/*
 * check_auth_token: keep the token out of the GUC value (see the file
 * header).  Refuse sources that store settings in catalogs every role can
 * read.  The messages never quote the value.
 */
static bool
check_auth_token(char **newval, void **extra, GucSource source)
{
	char	   *secret;

	if (source == PGC_S_TEST || source == PGC_S_DATABASE ||
		source == PGC_S_USER || source == PGC_S_DATABASE_USER ||
		source == PGC_S_GLOBAL)
	{
		GUC_check_errcode(ERRCODE_INSUFFICIENT_PRIVILEGE);
		GUC_check_errmsg("line_status.auth_token cannot be stored with ALTER ROLE, ALTER DATABASE or a function's SET clause");
		GUC_check_errdetail("Such values are kept in catalogs that every role can read.");
		GUC_check_errhint("Use ALTER SYSTEM or postgresql.conf, which only superusers can read.");
		return false;
	}

	/*
	 * The visible value is always the mask, set or not: then a reload never
	 * logs "parameter changed to" with the file's plain text, and SHOW tells
	 * nobody anything.  Setting the mask itself keeps the current token.
	 */
	if (*newval != NULL && strcmp(*newval, AUTH_TOKEN_MASK) == 0)
		secret = auth_token_secret ? strdup(auth_token_secret) : NULL;
	else if (*newval != NULL && (*newval)[0] != '\0')
	{
		secret = strdup(*newval);
		if (secret == NULL)
			return false;
	}
	else
		secret = NULL;

	if (*newval != NULL)
	{
		/* Scrub the plain text before handing the buffer back to guc.c. */
		explicit_bzero(*newval, strlen(*newval));
		free(*newval);
	}
	*newval = strdup(AUTH_TOKEN_MASK);
	if (*newval == NULL)
	{
		if (secret)
		{
			explicit_bzero(secret, strlen(secret));
			free(secret);
		}
		return false;
	}
	*extra = secret;
	return true;
}

/* assign_auth_token: make the token that goes with the new value current. */
static void
assign_auth_token(const char *newval, void *extra)
{
	auth_token_secret = (const char *) extra;
}

/*
 * read_token_file: the token in line_status.auth_token_file (its first
 * line, without surrounding white space), re-read only when the file
 * changed.  The file must be private to the server's OS user, as
 * PostgreSQL demands of its own key files.  Errors name the file, never
 * its content.
 */
static const char *
read_token_file(const char *path)
{
	struct stat st;
	char		buf[MAX_TOKEN_FILE + 1];
	int			fd;
	ssize_t		n;
	char	   *start;
	char	   *end;

	if (stat(path, &st) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("could not read line_status.auth_token_file \"%s\": %m", path)));
	if (file_token != NULL && strcmp(path, file_token_path) == 0 &&
		st.st_ino == file_token_stat.st_ino && st.st_size == file_token_stat.st_size &&
		st.st_mtime == file_token_stat.st_mtime)
		return file_token;

	if (!S_ISREG(st.st_mode))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("line_status.auth_token_file \"%s\" is not a regular file", path)));
	if (st.st_mode & (S_IRWXG | S_IRWXO))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("line_status.auth_token_file \"%s\" has group or world access", path),
				 errhint("Run chmod 600 on it; it holds a secret.")));

	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	if (fd < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("could not open line_status.auth_token_file \"%s\": %m", path)));
	n = read(fd, buf, MAX_TOKEN_FILE);
	CloseTransientFile(fd);
	if (n < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("could not read line_status.auth_token_file \"%s\": %m", path)));
	buf[n] = '\0';

	start = buf;
	while (*start == ' ' || *start == '\t' || *start == '\r' || *start == '\n')
		start++;
	end = start;
	while (*end && *end != '\r' && *end != '\n')
		end++;
	while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	*end = '\0';
	if (*start == '\0')
	{
		explicit_bzero(buf, sizeof(buf));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("line_status.auth_token_file \"%s\" is empty", path)));
	}

	if (file_token != NULL)
	{
		explicit_bzero(file_token, strlen(file_token));
		pfree(file_token);
		pfree(file_token_path);
	}
	file_token = MemoryContextStrdup(TopMemoryContext, start);
	file_token_path = MemoryContextStrdup(TopMemoryContext, path);
	file_token_stat = st;
	explicit_bzero(buf, sizeof(buf));
	return file_token;
}

/*
 * ls_auth_token: the auth token, or NULL when none is configured.
 * line_status.auth_token wins over line_status.auth_token_file.  Callers
 * pass it to libcurl and nowhere else.
 */
const char *
ls_auth_token(void)
{
	if (auth_token_secret != NULL && auth_token_secret[0] != '\0')
		return auth_token_secret;
	if (ls_auth_token_file != NULL && ls_auth_token_file[0] != '\0')
		return read_token_file(ls_auth_token_file);
	return NULL;
}

/*
 * ls_define_settings: declare every line_status.* parameter, then reserve
 * the prefix so that misspelled names are errors, not silent placeholders.
 */
void
ls_define_settings(void)
{
	DefineCustomStringVariable("line_status.api_url",
							   "Base URL of the Twilio Lookup API.",
							   "The number is appended as /v2/PhoneNumbers/{number}. "
							   "Only superusers can change it, since the credentials are sent there.",
							   &ls_api_url,
							   "https://lookups.twilio.com",
							   PGC_SUSET, 0,
							   check_api_url, NULL, NULL);

	DefineCustomStringVariable("line_status.account_sid",
							   "Twilio Account SID (AC...) or API Key SID (SK...) used as the user name.",
							   NULL,
							   &ls_account_sid,
							   "",
							   PGC_SUSET, 0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("line_status.auth_token",
							   "Twilio Auth Token or API Key secret.",
							   "It always reads back as ********. Prefer line_status.auth_token_file: a value in a configuration file is written to the server log when the file is reloaded.",
							   &auth_token_masked,
							   "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY,
							   check_auth_token, assign_auth_token, NULL);

	DefineCustomStringVariable("line_status.auth_token_file",
							   "File holding the Twilio Auth Token or API Key secret on its first line.",
							   "A relative path is taken from the data directory. The file must not be "
							   "readable by group or others. line_status.auth_token, if set, wins.",
							   &ls_auth_token_file,
							   "",
							   PGC_SUSET, 0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("line_status.ca_file",
							   "File of trusted CA certificates (PEM) for the API's TLS certificate.",
							   "Empty means the system's CA bundle.",
							   &ls_ca_file,
							   "",
							   PGC_SUSET, 0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("line_status.timeout",
							"Longest time one request to Twilio may take.",
							NULL,
							&ls_timeout_ms,
							10000, 1, INT_MAX,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("line_status.connect_timeout",
							"Longest time connecting to Twilio may take, TLS handshake included.",
							NULL,
							&ls_connect_timeout_ms,
							5000, 1, INT_MAX,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("line_status.max_retries",
							"How often a request that failed with 429, 5xx or a connection fault is retried.",
							NULL,
							&ls_max_retries,
							3, 0, 20,
							PGC_USERSET, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("line_status.cache_ttl",
							"How old a cached answer may be and still be used; 0 turns caching off.",
							"Cached answers are kept in line_status_cache.",
							&ls_cache_ttl_s,
							7 * 24 * 3600, 0, INT_MAX,
							PGC_USERSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("line_status.max_concurrency",
							"Most requests a bulk lookup keeps in flight at once.",
							"A 429 from Twilio lowers the number in flight below this for a while.",
							&ls_max_concurrency,
							50, 1, 1000,
							PGC_USERSET, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("line_status.max_rate",
							"Most requests per second a bulk lookup starts; 0 means no limit.",
							NULL,
							&ls_max_rate,
							0, 0, 100000,
							PGC_USERSET, 0,
							NULL, NULL, NULL);

	DefineCustomEnumVariable("line_status.on_error",
							 "What a lookup that failed for good (after retries) gives.",
							 "error raises an ERROR naming the number; unknown gives status unknown "
							 "with the error code and goes on. Credential, TLS and connection "
							 "failures are always errors.",
							 &ls_on_error,
							 LS_ON_ERROR_ERROR, on_error_options,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);

	MarkGUCPrefixReserved("line_status");
}
