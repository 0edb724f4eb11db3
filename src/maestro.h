/*-------------------------------------------------------------------------
 *
 * maestro.h
 *		Private declarations shared by the files of the maestro extension.
 *
 * The flow is one-directional:
 *
 *	functions.c (SQL wrappers) -> api.c (endpoints) -> http.c (libcurl)
 *	  -> json.c (cJSON parsing) -> convert.c (JSON values to Datums/rows)
 *
 * options.c turns foreign servers and user mappings into a
 * MaestroConnection; errors.c turns failed HTTP exchanges into ereports.
 * The trigger queue's worker has its own header, worker.h.
 *
 * src/maestro.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef MAESTRO_H
#define MAESTRO_H

#include "postgres.h"

#include <signal.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "parse.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

/* the Makefile passes default_version from maestro.control */
#ifndef MAESTRO_VERSION
#error "MAESTRO_VERSION must be defined (the Makefile takes it from maestro.control)"
#endif
#define MAESTRO_FDW_NAME "maestro"
#define MAESTRO_DEFAULT_BASE_URL "https://api.docusign.com"

/* maestro.c: one helper for every shared-memory struct */
extern void maestro_shmem_reserve(const char *name, Size size, bool with_lock);
extern bool maestro_shmem_attach(const char *name, Size size, void **ptr);
extern struct LWLock *maestro_shmem_lock(const char *name);

/* GUCs (maestro.c) */
extern char *maestro_server_name;
extern char *maestro_database_name;
extern int	maestro_max_concurrency;
extern int	maestro_rate_limit;
extern int	maestro_max_attempts;
extern int	maestro_retry_delay_ms;
extern int	maestro_sync_interval_ms;
extern int	maestro_request_retention_s;
extern int	maestro_event_retention_s;
extern char *maestro_fault_injection;
extern void maestro_fault_point(const char *point);
extern int	maestro_connect_timeout_ms;
extern int	maestro_request_timeout_ms;
extern int	maestro_max_response_kb;
extern int	maestro_max_retries;
extern int	maestro_page_size;

/*
 * Everything needed to talk to one Maestro account as one role: built from
 * a foreign server and the user mapping of the calling role (options.c).
 * The access token lives only here and in the curl header list.
 */
typedef struct MaestroConnection
{
	Oid			server_id;
	Oid			mapping_id;		/* the user mapping: the token cache's key */
	char	   *server_name;
	char	   *base_url;		/* no trailing slash */
	char	   *account_id;		/* canonical uuid text */
	char	   *ca_file;		/* CA bundle for TLS; NULL: the system's */
	char	   *proxy;			/* proxy URL without credentials; NULL: none */
	char	   *proxy_user;		/* from the user mapping */
	char	   *proxy_password;
	char	   *access_token;	/* static, or minted by auth.c */
	/* the JWT grant, when the user mapping asks for it */
	bool		jwt;
	char	   *auth_url;		/* no trailing slash */
	char	   *scopes;
	char	   *integration_key;
	char	   *user_id;
	char	   *private_key;
	/* with mapping_id, the token cache's key: a hash of the fields above */
	uint32		token_key;
} MaestroConnection;

/* The endpoints, as statistics count them (stats.c). */
typedef enum MaestroEndpoint
{
	MAESTRO_EP_WORKFLOWS,
	MAESTRO_EP_TRIGGER_REQUIREMENTS,
	MAESTRO_EP_TRIGGER,
	MAESTRO_EP_INSTANCES,
	MAESTRO_EP_INSTANCE,
	MAESTRO_EP_PAUSE,
	MAESTRO_EP_RESUME,
	MAESTRO_EP_CANCEL,
	MAESTRO_EP_TOKEN,
	MAESTRO_EP_ACCOUNT_INSTANCES,
	MAESTRO_ENDPOINTS
} MaestroEndpoint;

/* One HTTP exchange as api.c describes it to http.c. */
typedef struct MaestroRequest
{
	const char *method;			/* "GET" or "POST" */
	const char *path;			/* "/v1/accounts/..."; never holds a secret */
	const char *query;			/* "status=active" or NULL; already escaped */
	const char *body;			/* JSON text or NULL */
	const char *content_type;	/* of the body; NULL: application/json */
	bool		anonymous;		/* send no Authorization header */
	bool		idempotent;		/* may be retried (GETs only) */
	MaestroEndpoint endpoint;	/* what the statistics count it as */
} MaestroRequest;

/*
 * What came back; body is NUL-terminated and lives as long as the memory
 * context that was current when the request was executed (it is malloc'd,
 * freed by a reset callback of that context: handed over, not copied).
 */
typedef struct MaestroResponse
{
	long		status;
	char	   *body;
	size_t		body_len;
	bool		handed_over;	/* body is libcurl's buffer, not a palloc'd copy */
	size_t		released;		/* bytes before this given back (maestro_response_release) */
	char		content_type[128];
	int			retries;		/* how many times the request was re-sent */
} MaestroResponse;

/*
 * One transfer's data: the response body as libcurl delivers it (malloc'd,
 * capped at limit), and the request body as libcurl reads it.
 */
typedef struct MaestroBuffer
{
	char	   *data;
	size_t		len;
	size_t		cap;
	size_t		limit;
	CURL	   *easy;			/* the handle it is configured on */
	CURLU	   *url_handle;		/* its parsed URL (set_url), freed with it */
	bool		too_large;
	bool		out_of_memory;
	const char *upload;			/* a POST's body, sent as POSTFIELDS */
	size_t		upload_len;
	int			sends;			/* times libcurl was about to send it */
	bool		may_resend;		/* the request is idempotent */
	bool		resend_refused; /* and was stopped from sending it again */
	MaestroRateHeaders rate;	/* the last response's rate-limit headers */
} MaestroBuffer;

/* How a finished HTTP exchange failed, if it did (http.c). */
typedef enum MaestroFailure
{
	MAESTRO_SUCCESS,			/* 2xx */
	MAESTRO_FAIL_FINAL,			/* a 4xx: the request as it stands fails */
	MAESTRO_FAIL_AUTH,			/* 401: the token was refused */
	MAESTRO_FAIL_RATE_LIMITED,	/* 429: not acted on; wait, then again */
	MAESTRO_FAIL_NOT_SENT,		/* never reached the server */
	MAESTRO_FAIL_TRANSIENT,		/* 502-504, a broken transfer: may have arrived */
	MAESTRO_FAIL_SERVER,		/* another 5xx: may have been acted on */
	MAESTRO_FAIL_BROKEN			/* another transport error: may have arrived */
} MaestroFailure;

/* The filters of the account-wide instance list; NULL/0: not filtered. */
typedef struct MaestroInstanceFilter
{
	const char *status;
	char	  **workflow_ids;	/* canonical uuid text */
	int			nworkflow_ids;
	const char *started_by;
} MaestroInstanceFilter;

/*
 * One answer of a walk of the account's instances, fetched beforehand (the
 * worker's sync): the request it answers, and its 2xx body or, with
 * missing, the 404 the walk allowed. The body is in memory, or, when body
 * is NULL, in a temporary file at (fileno, offset). A list, in the walk's
 * order.
 */
typedef struct MaestroPage
{
	MaestroEndpoint endpoint;
	char	   *path;
	bool		missing;
	char	   *body;
	size_t		len;
	struct BufFile *file;
	int			fileno;
	off_t		offset;
	struct MaestroPage *next;
} MaestroPage;

/* functions.c: maestro_all_instances()'s walk, driven page by page */
typedef struct MaestroInstanceWalk MaestroInstanceWalk;
extern MaestroInstanceWalk *maestro_instance_walk_begin(MaestroConnection *conn);
extern bool maestro_instance_walk_next_request(MaestroInstanceWalk *walk, MaestroRequest *req,
											   bool *missing_ok);
extern void maestro_instance_walk_take(MaestroInstanceWalk *walk, const MaestroRequest *req,
									   const char *body, size_t len, bool missing);
extern void maestro_instance_walk_use_pages(const MaestroPage *pages);

/* options.c */
extern MaestroConnection *maestro_connect(void);
extern MaestroConnection *maestro_connection_for(Oid serverid, Oid userid, char **problem);
extern MaestroConnection *maestro_connection_copy(const MaestroConnection *conn);
extern bool maestro_is_uuid(const char *text);

/* http.c */
extern void maestro_http_execute(const MaestroConnection *conn,
								 const MaestroRequest *req,
								 MaestroResponse *resp);
extern struct curl_slist *maestro_http_headers(const MaestroConnection *conn,
											   const MaestroRequest *req);
extern char *maestro_http_url(const MaestroConnection *conn, const MaestroRequest *req);
extern char *maestro_concat(const char *first,...) __attribute__((sentinel));
extern void maestro_http_configure(CURL *easy, const MaestroConnection *conn,
								   const char *url, const MaestroRequest *req,
								   struct curl_slist *headers, MaestroBuffer *buf,
								   char *errbuf);
extern MaestroFailure maestro_http_classify(CURLcode rc, long status);
extern void maestro_http_raise_transport_error(const MaestroConnection *conn,
											   const MaestroRequest *req, CURL *easy,
											   CURLcode rc, const char *curl_message,
											   const MaestroBuffer *buf,
											   int retries) pg_attribute_noreturn();
extern long maestro_http_retry_after_ms(CURL *easy);
extern void maestro_response_release(MaestroResponse *resp, size_t offset);
extern volatile sig_atomic_t maestro_shutdown_requested;

/*
 * auth.c: maestro_auth_prepare gets a token synchronously (backends); the
 * worker takes the same steps without blocking: maestro_auth_lookup, and
 * when it claimed the fetch, runs maestro_auth_token_request's request on
 * its multi handle and reports the answer (maestro_auth_token_received) or
 * gives up (maestro_auth_release).
 */
typedef enum MaestroTokenState
{
	MAESTRO_TOKEN_READY,		/* conn->access_token is set */
	MAESTRO_TOKEN_FETCH,		/* the caller claimed the fetch: it asks */
	MAESTRO_TOKEN_WAIT			/* another process is fetching it */
} MaestroTokenState;

/* A fetch claimed in the shared token cache; claimed_at 0: none to end. */
typedef struct MaestroTokenClaim
{
	Oid			mapping_id;
	uint32		config_hash;
	TimestampTz claimed_at;
} MaestroTokenClaim;

extern void maestro_auth_shmem_request(void);
extern void maestro_auth_shmem_startup(void);
extern void maestro_auth_prepare(MaestroConnection *conn);
extern MaestroTokenState maestro_auth_lookup(MaestroConnection *conn, MaestroTokenClaim *claim,
											 TimestampTz *wait_until);
extern MaestroConnection *maestro_auth_token_request(const MaestroConnection *conn,
													 MaestroRequest *req);
extern void maestro_auth_token_received(MaestroConnection *conn, const MaestroTokenClaim *claim,
										const MaestroConnection *account,
										const MaestroRequest *req,
										const MaestroResponse *resp);
extern void maestro_auth_release(const MaestroTokenClaim *claim);
extern uint32 maestro_auth_token_key(const MaestroConnection *conn);
extern bool maestro_auth_same_token(const MaestroConnection *a, const MaestroConnection *b);
extern void maestro_auth_forget(MaestroConnection *conn);
extern bool maestro_private_key_is_valid(const char *pem);

/* errors.c */
extern void maestro_raise_http_error(const MaestroConnection *conn,
									 const MaestroRequest *req,
									 const MaestroResponse *resp) pg_attribute_noreturn();
extern char *maestro_error_message_from_body(const char *body, size_t len,
											 const char *content_type);
extern char *maestro_redact(const char *text);

/* A list response being read element by element (json.c). */
typedef struct MaestroListReader
{
	const char *body;
	size_t		len;
	size_t		pos;			/* at the list's '[', a ',' or the ']' */
	const char *wrapper_key;
	MaestroListWalk walk;		/* what is left to check after the list */
	const MaestroRequest *req;	/* for error messages */
} MaestroListReader;

/* A member of a small object as maestro_json_read_members reads it */
typedef struct MaestroMemberText
{
	char	   *text;			/* NULL: null, absent, an object or an array */
	bool		is_string;
} MaestroMemberText;

typedef enum MaestroBodyShape
{
	MAESTRO_NOT_JSON,
	MAESTRO_BODY_OTHER,			/* JSON, but not an object */
	MAESTRO_BODY_OBJECT
} MaestroBodyShape;

/* json.c */
extern cJSON *maestro_json_parse(const char *body, size_t len,
								 const MaestroRequest *req);
extern cJSON *maestro_json_try_parse(const char *body, size_t len);
extern MaestroBodyShape maestro_json_read_members(const char *body, size_t len,
												  const MaestroRequest *req,
												  const char *const *keys, int nkeys,
												  MaestroMemberText *out);
extern char *maestro_json_print(const cJSON *item);
extern bool maestro_json_list_begin(MaestroListReader *reader, const char *body, size_t len,
									const char *wrapper_key, const MaestroRequest *req);
extern cJSON *maestro_json_list_next(MaestroListReader *reader);
/* Maestro speaks UTF-8: the two conversions at the database's boundary */
extern char *maestro_utf8_to_server(const char *s, size_t len, bool strict);
extern char *maestro_server_to_utf8(const char *s);
extern void maestro_encoding_prepare(void);

/* api.c: one function per endpoint; each returns the parsed 2xx body */
extern cJSON *maestro_get_workflows(MaestroConnection *conn, const char *status);
extern cJSON *maestro_get_trigger_requirements(MaestroConnection *conn,
											   const char *workflow_id);
extern void maestro_trigger_request(MaestroConnection *conn, const char *workflow_id,
									const char *instance_name, const char *inputs_json,
									MaestroRequest *req);
/* the members of a trigger's answer, in maestro_post_trigger's answer[] */
#define MAESTRO_ANSWER_ID	0
#define MAESTRO_ANSWER_URL	1
#define MAESTRO_ANSWER_KEYS 2
extern const char *const maestro_trigger_answer_keys[MAESTRO_ANSWER_KEYS];
extern MaestroBodyShape maestro_post_trigger(MaestroConnection *conn, const char *workflow_id,
											 const char *instance_name, Jsonb *inputs,
											 MaestroMemberText *answer);
extern cJSON *maestro_get_instances(MaestroConnection *conn, const char *workflow_id);
extern void maestro_get_instances_response(MaestroConnection *conn, const char *workflow_id,
										   MaestroRequest *req, MaestroResponse *resp);
extern void maestro_instances_request(MaestroConnection *conn, const char *workflow_id,
									  MaestroRequest *req);
extern cJSON *maestro_get_instance(MaestroConnection *conn, const char *workflow_id,
								   const char *instance_id);
extern cJSON *maestro_post_workflow_action(MaestroConnection *conn,
										   const char *workflow_id, const char *action);
extern cJSON *maestro_post_cancel(MaestroConnection *conn, const char *workflow_id,
								  const char *instance_id);
extern void maestro_account_instances_request(MaestroConnection *conn,
											  const MaestroInstanceFilter *filter,
											  const char *ctoken, MaestroRequest *req);
extern void maestro_workflows_request(MaestroConnection *conn, MaestroRequest *req);
extern cJSON *maestro_call(MaestroConnection *conn, const MaestroRequest *req, bool missing_ok);

/* arguments.c */
extern char *maestro_uuid_argument(FunctionCallInfo fcinfo, int argno, const char *name);
extern void maestro_check_trigger_args(FunctionCallInfo fcinfo, Jsonb **inputs,
									   char **instance_name);

/* launcher.c: the worker's life cycle, shared by backends and the worker */
extern void maestro_queue_shmem_request(void);
extern void maestro_queue_shmem_startup(void);
extern void maestro_queue_register_launcher(void);
extern bool maestro_queue_available(void);
extern void maestro_queue_wake(void);
extern bool maestro_queue_claim_worker(void);
extern bool maestro_queue_take_wake(void);
extern bool maestro_queue_release_worker_if_idle(void);
extern void maestro_queue_release_worker(int code, Datum arg);
extern PGDLLEXPORT void maestro_launcher_main(Datum arg);

/* queue.c: the backends' side of the trigger queue */
extern char *maestro_queue_table(void);

/* queue.c: the one recipe for running SQL as another role */
typedef struct MaestroRoleSwitch
{
	Oid			userid;
	int			sec_context;
	int			nestlevel;
} MaestroRoleSwitch;
extern void maestro_become_role(Oid role, MaestroRoleSwitch *save);
extern void maestro_restore_role(MaestroRoleSwitch *save);
extern char *maestro_extension_schema_name(void);
extern Oid	maestro_extension_table_owner(const char *relname);
extern void maestro_queue_run_as_owner(const char *sql, int nargs, Oid *types, Datum *values,
									   const char *nulls, int expected);

/*
 * pacing.c: the rule that turns a 429 into a pause of its server, and
 * whether the worker holds a server paused (a 429, or its spent quota by
 * ratelimit.c's rule), and until when (in the worker's process).
 */
extern long maestro_pacing_pause_ms(long status, long retry_after_ms, int attempts);
extern TimestampTz maestro_pacing_paused_until(Oid server_id, TimestampTz now);

/* stats.c */
extern void maestro_stats_shmem_request(void);
extern void maestro_stats_shmem_startup(void);
extern void maestro_stats_record(Oid server_id, MaestroEndpoint endpoint, long status,
								 double elapsed_ms, int retries, int rate_limit_waits,
								 size_t bytes);
extern void maestro_stats_worker(int sent, int done, int failed, int retried,
								 int64 queue_depth);

/* ratelimit.c: DocuSign's X-RateLimit-* headers, and the quota rule */
extern void maestro_ratelimit_shmem_request(void);
extern void maestro_ratelimit_shmem_startup(void);
extern void maestro_ratelimit_observe(Oid server_id, const MaestroRateHeaders *seen);
extern long maestro_ratelimit_wait_ms(Oid server_id, TimestampTz *until);
extern void maestro_ratelimit_check(const MaestroConnection *conn);

/*
 * version.c: the SQL objects in this database against the library. Every
 * SQL-callable function but the FDW validator starts with
 * MAESTRO_CHECK_VERSION; as a declaration it comes before any initializer
 * that reads an argument.
 */
extern bool maestro_check_version(void);
extern bool maestro_worker_version_ok(void);
extern bool maestro_extension_row(Oid *extension, Oid *schema, char **version);
#define MAESTRO_CHECK_VERSION \
	bool		maestro_version_checked pg_attribute_unused() = maestro_check_version()

/* worker.c: the worker that sends queued triggers (see worker.h) */
extern PGDLLEXPORT void maestro_worker_main(Datum arg);

/* retention.c: deleting finished requests and old events (worker) */
extern TimestampTz maestro_retention_run(TimestampTz now);
extern TimestampTz maestro_retention_next(void);

/* failover.c: after a promotion, nothing unfinished is sent blindly (worker) */
extern void maestro_failover_check(void);

/* convert.c */
extern const cJSON *maestro_json_member(const cJSON *object, const char *key);
extern Datum maestro_json_to_text(const cJSON *item, bool *isnull);
extern Datum maestro_text_to_uuid(const char *text, bool *isnull);
extern Datum maestro_json_to_uuid(const cJSON *item, bool *isnull);
extern Datum maestro_json_to_timestamptz(const cJSON *item, bool *isnull);
extern Datum maestro_json_to_int4(const cJSON *item, bool *isnull);
extern Datum maestro_json_to_jsonb(const cJSON *item, bool *isnull);
extern Jsonb *maestro_json_jsonb(const cJSON *item);
extern Datum maestro_jsonb_member(Jsonb *object, const char *key, bool *isnull);
extern void maestro_json_members(const cJSON *object, const char *const *keys, int nkeys,
								 const cJSON **items, bool *unique);
extern Datum maestro_json_to_text_array(const cJSON *item, bool *isnull);
extern const cJSON *maestro_json_list(const cJSON *root, const char *wrapper_key);

#endif							/* MAESTRO_H */
