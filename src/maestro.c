/*-------------------------------------------------------------------------
 *
 * maestro.c
 *		Module entry point: the GUCs and the one-time library set-up.
 *
 * Everything a backend configures about its Maestro calls is a GUC in the
 * "maestro" prefix; secrets are never GUCs (they live in user mappings).
 *
 * src/maestro.c
 *
 *-------------------------------------------------------------------------
 */
#include "maestro.h"

#include <curl/curl.h>
#include <limits.h>

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/memutils.h"

PG_MODULE_MAGIC;

char	   *maestro_server_name = NULL;
int			maestro_connect_timeout_ms = 5000;
int			maestro_request_timeout_ms = 30000;
int			maestro_max_response_kb = 10240;
int			maestro_max_retries = 3;
int			maestro_page_size = 0;
char	   *maestro_database_name = NULL;
int			maestro_max_concurrency = 16;
int			maestro_rate_limit = 15;
int			maestro_max_attempts = 5;
int			maestro_retry_delay_ms = 1000;
int			maestro_sync_interval_ms = 0;
int			maestro_request_retention_s = 7 * 24 * 3600;
int			maestro_event_retention_s = 0;
char	   *maestro_fault_injection = NULL;

void		_PG_init(void);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/*
 * One named struct of maestro's shared memory: reserve its space (and an
 * LWLock tranche of the same name, when it needs a lock) from the request
 * hook; attach to it from the startup hook (AddinShmemInitLock held),
 * which zeroes it when it is created now and says so, for the caller to
 * initialise the rest.
 */
void
maestro_shmem_reserve(const char *name, Size size, bool with_lock)
{
	RequestAddinShmemSpace(MAXALIGN(size));
	if (with_lock)
		RequestNamedLWLockTranche(name, 1);
}

bool
maestro_shmem_attach(const char *name, Size size, void **ptr)
{
	bool		found;

	*ptr = ShmemInitStruct(name, size, &found);
	if (!found)
		memset(*ptr, 0, size);
	return !found;
}

/* The LWLock reserved with a struct; only from the startup hook. */
LWLock *
maestro_shmem_lock(const char *name)
{
	return &(GetNamedLWLockTranche(name))->lock;
}

/*
 * The shared state of the token cache, the statistics, the rate limits
 * and the trigger queue, requested and set up in one place.
 */
static void
maestro_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	maestro_auth_shmem_request();
	maestro_stats_shmem_request();
	maestro_ratelimit_shmem_request();
	maestro_queue_shmem_request();
}

static void
maestro_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	maestro_auth_shmem_startup();
	maestro_stats_shmem_startup();
	maestro_ratelimit_shmem_startup();
	maestro_queue_shmem_startup();
	LWLockRelease(AddinShmemInitLock);
}

/*
 * The test hook of maestro.fault_injection: raise an ERROR when the
 * setting names this point. The points are where the tests need an error
 * that nothing real raises: "stats_lock" (stats.c), "ratelimit_lock"
 * (ratelimit.c) and "token_cache_lock" (auth.c), each while that LWLock
 * is held, and "claim_after_record" (queue_sql.c), in a claim after its
 * outcomes were written.
 */
void
maestro_fault_point(const char *point)
{
	if (maestro_fault_injection != NULL && maestro_fault_injection[0] != '\0' &&
		strcmp(maestro_fault_injection, point) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("maestro fault injected at \"%s\"", point),
				 errdetail("maestro.fault_injection is a test hook; reset it.")));
}

void
_PG_init(void)
{
	/*
	 * curl_global_init is not thread-safe and must run before any handle
	 * exists; the backend is single-threaded and loads us once.
	 */
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialize libcurl")));

	DefineCustomStringVariable("maestro.server",
							   "Foreign server (of the maestro wrapper) that maestro functions call.",
							   "When empty and exactly one maestro server exists, that one is used.",
							   &maestro_server_name,
							   "",
							   PGC_USERSET,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("maestro.connect_timeout",
							"Time allowed to connect to Maestro.",
							NULL,
							&maestro_connect_timeout_ms,
							5000, 1, 3600 * 1000,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("maestro.request_timeout",
							"Time allowed for one Maestro HTTP request, connecting included.",
							"Retries get the full time again; statement_timeout bounds them all.",
							&maestro_request_timeout_ms,
							30000, 1, 24 * 3600 * 1000,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("maestro.max_response_size",
							"Largest Maestro response body accepted.",
							NULL,
							&maestro_max_response_kb,
							10240, 1, MaxAllocSize / 1024 / 2,
							PGC_USERSET,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("maestro.max_retries",
							"How many times a failed read-only Maestro request is retried.",
							"Only GETs are retried, on 429, 502, 503, 504 and transport errors.",
							&maestro_max_retries,
							3, 0, 10,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("maestro.page_size",
							"Instances asked for per page of the account-wide instance list.",
							"0 sends no page_size: Maestro's own default applies.",
							&maestro_page_size,
							0, 0, 100000,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);

	/*
	 * The worker connects to this database when it starts, so the setting
	 * is fixed at server start; a backend that loads the library later may
	 * not define a PGC_POSTMASTER variable, and only reads it.
	 */
	DefineCustomStringVariable("maestro.database_name",
							   "Database whose trigger queue the maestro worker sends.",
							   NULL,
							   &maestro_database_name,
							   "postgres",
							   process_shared_preload_libraries_in_progress ? PGC_POSTMASTER : PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("maestro.max_concurrency",
							"Most trigger requests the worker has in flight at once.",
							NULL,
							&maestro_max_concurrency,
							16, 1, 1024,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("maestro.rate_limit",
							"Most requests per second the worker sends to one server; 0 means no limit.",
							"DocuSign's burst limit is 500 calls in 30 seconds.",
							&maestro_rate_limit,
							15, 0, 100000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("maestro.max_attempts",
							"How many times the worker sends a trigger request before it fails.",
							NULL,
							&maestro_max_attempts,
							5, 1, 100,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("maestro.retry_delay",
							"First wait before the worker sends a request again; it doubles with each attempt.",
							NULL,
							&maestro_retry_delay_ms,
							1000, 1, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("maestro.sync_interval",
							"How often the worker runs maestro_sync(); 0 turns it off.",
							"The worker then stays running, and syncs with the user mapping of the mirror's owner.",
							&maestro_sync_interval_ms,
							0, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("maestro.request_retention",
							"How long finished trigger requests (done or failed) are kept; 0 keeps them forever.",
							"The worker deletes older ones, counted from done_at, in batches of 1,000.",
							&maestro_request_retention_s,
							7 * 24 * 3600, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("maestro.event_retention",
							"How long rows of maestro_instance_events are kept; 0 keeps them forever.",
							"The worker deletes older ones, counted from seen_at, in batches of 1,000.",
							&maestro_event_retention_s,
							0, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	/*
	 * A test hook, not a setting: the name of a point (see
	 * maestro_fault_point) where an ERROR is raised on purpose, so that the
	 * TAP tests can prove the worker's recovery from an error that nothing
	 * real raises there (one inside a section that holds an LWLock).
	 * Hidden from SHOW ALL and the sample file; only a superuser may set
	 * it.
	 */
	DefineCustomStringVariable("maestro.fault_injection",
							   "Test hook: raise an error at the named point.",
							   NULL,
							   &maestro_fault_injection,
							   "",
							   PGC_SUSET,
							   GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	MarkGUCPrefixReserved("maestro");

	if (process_shared_preload_libraries_in_progress)
	{
		prev_shmem_request_hook = shmem_request_hook;
		shmem_request_hook = maestro_shmem_request;
		prev_shmem_startup_hook = shmem_startup_hook;
		shmem_startup_hook = maestro_shmem_startup;
		maestro_queue_register_launcher();
	}
}
