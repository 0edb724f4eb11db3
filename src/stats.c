/*-------------------------------------------------------------------------
 *
 * stats.c
 *		Counters of the API calls, per server and endpoint, as
 *		pg_stat_statements keeps them for queries: calls, errors by class,
 *		retries, rate-limit waits, bytes received and latency (mean, and the
 *		95th percentile from a log-scale histogram); and the worker's queue
 *		depth and throughput.
 *
 * With maestro in shared_preload_libraries the counters live in shared
 * memory and cover every backend and the worker; otherwise each backend
 * counts only its own calls. Recording never raises an error.
 *
 * src/stats.c
 *
 *-------------------------------------------------------------------------
 */
#include "maestro.h"

#include <math.h>

#include "foreign/foreign.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(maestro_stats);
PG_FUNCTION_INFO_V1(maestro_worker_stats);
PG_FUNCTION_INFO_V1(maestro_stats_reset);

#define STATS_ENTRIES		256
#define LATENCY_BUCKETS		24	/* bucket b: latencies below 2^b ms */

static const char *const endpoint_names[MAESTRO_ENDPOINTS] = {
	"workflows", "trigger_requirements", "trigger", "instances", "instance",
	"pause", "resume", "cancel", "token", "account_instances"
};

typedef struct StatsEntry
{
	Oid			server_id;
	int			endpoint;		/* -1: free */
	int64		calls;
	int64		errors_transport;
	int64		errors_4xx;
	int64		errors_429;
	int64		errors_5xx;
	int64		retries;
	int64		rate_limit_waits;
	int64		bytes_received;
	double		total_ms;
	int64		latency[LATENCY_BUCKETS];
} StatsEntry;

typedef struct MaestroStats
{
	LWLock	   *lock;
	TimestampTz reset_at;
	StatsEntry	entries[STATS_ENTRIES];
	/* the worker's side */
	int64		worker_sent;
	int64		worker_done;
	int64		worker_failed;
	int64		worker_retried;
	int64		queue_depth;	/* queued requests at the last claim */
	TimestampTz queue_depth_at;
	TimestampTz first_sent_at;
	TimestampTz last_done_at;
} MaestroStats;

static MaestroStats *shared_stats = NULL;
static MaestroStats *local_stats = NULL;

static void
stats_clear(MaestroStats *stats)
{
	int			i;

	memset(stats->entries, 0, sizeof(stats->entries));
	for (i = 0; i < STATS_ENTRIES; i++)
		stats->entries[i].endpoint = -1;
	stats->worker_sent = stats->worker_done = stats->worker_failed = 0;
	stats->worker_retried = stats->queue_depth = 0;
	stats->queue_depth_at = stats->first_sent_at = stats->last_done_at = 0;
	stats->reset_at = GetCurrentTimestamp();
}

/* maestro.c's shared-memory hooks call these (AddinShmemInitLock held) */
void
maestro_stats_shmem_request(void)
{
	maestro_shmem_reserve("maestro stats", sizeof(MaestroStats), true);
}

void
maestro_stats_shmem_startup(void)
{
	if (maestro_shmem_attach("maestro stats", sizeof(MaestroStats), (void **) &shared_stats))
	{
		shared_stats->lock = maestro_shmem_lock("maestro stats");
		stats_clear(shared_stats);
	}
}

static MaestroStats *
stats(void)
{
	if (shared_stats)
		return shared_stats;
	if (local_stats == NULL)
	{
		local_stats = MemoryContextAllocZero(TopMemoryContext, sizeof(MaestroStats));
		stats_clear(local_stats);
	}
	return local_stats;
}

static void
lock(MaestroStats *s, LWLockMode mode)
{
	if (s->lock)
		LWLockAcquire(s->lock, mode);
}

static void
unlock(MaestroStats *s)
{
	if (s->lock)
		LWLockRelease(s->lock);
}

/*
 * One finished API call: status 0 for a transport failure (or a call that
 * was interrupted), retries and rate_limit_waits as they happened.
 */
void
maestro_stats_record(Oid server_id, MaestroEndpoint endpoint, long status,
					 double elapsed_ms, int retries, int rate_limit_waits,
					 size_t bytes)
{
	MaestroStats *s = stats();
	StatsEntry *entry = NULL;
	int			bucket = 0;
	int			i;

	if (endpoint < 0 || endpoint >= MAESTRO_ENDPOINTS)
		return;
	while (bucket < LATENCY_BUCKETS - 1 && elapsed_ms >= (double) (1L << bucket))
		bucket++;

	lock(s, LW_EXCLUSIVE);
	maestro_fault_point("stats_lock");
	for (i = 0; i < STATS_ENTRIES; i++)
	{
		StatsEntry *e = &s->entries[i];

		if (e->endpoint == (int) endpoint && e->server_id == server_id)
		{
			entry = e;
			break;
		}
		if (entry == NULL && e->endpoint == -1)
			entry = e;
	}
	if (entry && entry->endpoint == -1)
	{
		entry->endpoint = endpoint;
		entry->server_id = server_id;
	}
	if (entry)
	{
		entry->calls++;
		if (status == 0)
			entry->errors_transport++;
		else if (status == 429)
			entry->errors_429++;
		else if (status >= 500)
			entry->errors_5xx++;
		else if (status >= 300)
			entry->errors_4xx++;
		entry->retries += retries;
		entry->rate_limit_waits += rate_limit_waits;
		entry->bytes_received += bytes;
		entry->total_ms += elapsed_ms;
		entry->latency[bucket]++;
	}
	unlock(s);
}

/* The worker's events: a send, and a request's fate. */
void
maestro_stats_worker(int sent, int done, int failed, int retried, int64 queue_depth)
{
	MaestroStats *s = stats();
	TimestampTz now = GetCurrentTimestamp();

	lock(s, LW_EXCLUSIVE);
	if (sent > 0 && s->worker_sent == 0)
		s->first_sent_at = now;
	s->worker_sent += sent;
	s->worker_done += done;
	s->worker_failed += failed;
	s->worker_retried += retried;
	if (done + failed > 0)
		s->last_done_at = now;
	if (queue_depth >= 0)
	{
		s->queue_depth = queue_depth;
		s->queue_depth_at = now;
	}
	unlock(s);
}

/* The upper edge of the bucket the p-th fraction of calls falls into. */
static double
percentile_ms(const StatsEntry *e, double p)
{
	int64		target = (int64) ceil(p * e->calls);
	int64		seen = 0;
	int			b;

	for (b = 0; b < LATENCY_BUCKETS; b++)
	{
		seen += e->latency[b];
		if (seen >= target && target > 0)
			return (double) (1L << b);
	}
	return 0;
}

Datum
maestro_stats(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MaestroStats *s = stats();
	StatsEntry *copy;
	TimestampTz reset_at;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	copy = palloc(sizeof(s->entries));
	lock(s, LW_SHARED);
	memcpy(copy, s->entries, sizeof(s->entries));
	reset_at = s->reset_at;
	unlock(s);

	for (i = 0; i < STATS_ENTRIES; i++)
	{
		StatsEntry *e = &copy[i];
		ForeignServer *server;
		Datum		values[13];
		bool		nulls[13] = {0};

		if (e->endpoint < 0 || e->calls == 0)
			continue;
		server = GetForeignServerExtended(e->server_id, FSV_MISSING_OK);
		if (server)
			values[0] = CStringGetTextDatum(server->servername);
		else
			nulls[0] = true;
		values[1] = CStringGetTextDatum(endpoint_names[e->endpoint]);
		values[2] = Int64GetDatum(e->calls);
		values[3] = Int64GetDatum(e->errors_transport);
		values[4] = Int64GetDatum(e->errors_4xx);
		values[5] = Int64GetDatum(e->errors_429);
		values[6] = Int64GetDatum(e->errors_5xx);
		values[7] = Int64GetDatum(e->retries);
		values[8] = Int64GetDatum(e->rate_limit_waits);
		values[9] = Int64GetDatum(e->bytes_received);
		values[10] = Float8GetDatum(e->total_ms / e->calls);
		values[11] = Float8GetDatum(percentile_ms(e, 0.95));
		values[12] = TimestampTzGetDatum(reset_at);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

Datum
maestro_worker_stats(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;
	MaestroStats *s = stats();
	MaestroStats copy;
	TupleDesc	tupdesc;
	Datum		values[8];
	bool		nulls[8] = {0};
	double		seconds;

	lock(s, LW_SHARED);
	memcpy(&copy, s, sizeof(MaestroStats));
	unlock(s);

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);

	values[0] = Int64GetDatum(copy.queue_depth);
	nulls[0] = copy.queue_depth_at == 0;
	values[1] = TimestampTzGetDatum(copy.queue_depth_at);
	nulls[1] = copy.queue_depth_at == 0;
	values[2] = Int64GetDatum(copy.worker_sent);
	values[3] = Int64GetDatum(copy.worker_done);
	values[4] = Int64GetDatum(copy.worker_failed);
	values[5] = Int64GetDatum(copy.worker_retried);
	seconds = (copy.first_sent_at && copy.last_done_at > copy.first_sent_at)
		? (double) (copy.last_done_at - copy.first_sent_at) / USECS_PER_SEC : 0;
	values[6] = Float8GetDatum(seconds > 0 ? (copy.worker_done + copy.worker_failed) / seconds : 0);
	nulls[6] = seconds <= 0;
	values[7] = TimestampTzGetDatum(copy.reset_at);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

Datum
maestro_stats_reset(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;
	MaestroStats *s = stats();

	lock(s, LW_EXCLUSIVE);
	stats_clear(s);
	unlock(s);
	PG_RETURN_VOID();
}
