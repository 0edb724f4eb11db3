/*-------------------------------------------------------------------------
 *
 * ratelimit.c
 *		DocuSign's rate-limit headers: the last values each server sent,
 *		and the one rule that says whether its hourly quota is spent.
 *
 * Every response of the API carries X-RateLimit-Limit, -Remaining and
 * -Reset (epoch seconds of the top of the next hour), and may carry
 * X-BurstLimit-Limit and -Remaining. parse.c reads them as each response's
 * header lines arrive; http.c and the worker hand what it read of each
 * finished transfer to maestro_ratelimit_observe(), which keeps the last
 * values per server; maestro_rate_limits() shows them.
 *
 * The rule (maestro_ratelimit_wait_ms): a server's quota is spent when its
 * last answer said Remaining 0 and its reset lies ahead. Until then a
 * synchronous call fails at once with SQLSTATE 53400 instead of spending
 * a round trip on a certain refusal, and the worker holds that server's
 * requests. The reset is trusted for at most an hour after the answer that
 * carried it (the quota is hourly; a later reset is a skewed clock or a bad
 * header, and must not stop every call for longer), and a reset in the
 * past means the quota has been renewed.
 *
 * With maestro in shared_preload_libraries the values live in shared
 * memory, so an answer seen by any backend or the worker holds for all;
 * otherwise each backend keeps its own. Servers are keyed by database and
 * OID. Observing never raises an error: the worker calls it outside any
 * transaction.
 *
 * src/ratelimit.c
 *
 *-------------------------------------------------------------------------
 */
#include "maestro.h"

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

PG_FUNCTION_INFO_V1(maestro_rate_limits);

#define RATELIMIT_ENTRIES	64
/* longest a reset is trusted after the answer that carried it */
#define RATELIMIT_MAX_WAIT_S 3600

typedef struct RateLimitEntry
{
	Oid			dbid;			/* InvalidOid: a free slot */
	Oid			server_id;
	int64		limit;			/* -1: the header was absent */
	int64		remaining;
	int64		reset;			/* epoch seconds */
	int64		burst_limit;
	int64		burst_remaining;
	TimestampTz observed_at;
} RateLimitEntry;

typedef struct RateLimits
{
	LWLock	   *lock;

	/*
	 * Entries that say Remaining 0. While there is none, which is nearly
	 * always, a call is not held back and the entries are not searched
	 * under the lock (a third of a percent of a trigger call). Read without
	 * the lock: a count a moment old lets one more request through, which
	 * the API then refuses with a 429, as it would without this rule.
	 */
	pg_atomic_uint32 spent_entries;
	RateLimitEntry entries[RATELIMIT_ENTRIES];
} RateLimits;

static RateLimits *shared_limits = NULL;
static RateLimits *local_limits = NULL;

/* maestro.c's shared-memory hooks call these (AddinShmemInitLock held) */
void
maestro_ratelimit_shmem_request(void)
{
	maestro_shmem_reserve("maestro rate limits", sizeof(RateLimits), true);
}

void
maestro_ratelimit_shmem_startup(void)
{
	if (maestro_shmem_attach("maestro rate limits", sizeof(RateLimits), (void **) &shared_limits))
	{
		shared_limits->lock = maestro_shmem_lock("maestro rate limits");
		pg_atomic_init_u32(&shared_limits->spent_entries, 0);
	}
}

static RateLimits *
limits(void)
{
	if (shared_limits)
		return shared_limits;
	if (local_limits == NULL)
	{
		local_limits = MemoryContextAllocZero(TopMemoryContext, sizeof(RateLimits));
		pg_atomic_init_u32(&local_limits->spent_entries, 0);
	}
	return local_limits;
}

static void
lock(RateLimits *l, LWLockMode mode)
{
	if (l->lock)
		LWLockAcquire(l->lock, mode);
}

static void
unlock(RateLimits *l)
{
	if (l->lock)
		LWLockRelease(l->lock);
}

/*
 * Keep the rate-limit headers of a response just received (headers, as
 * maestro_ratelimit_header_line read them). An answer without any of them
 * (an error page of a proxy, the token endpoint) leaves the last values as
 * they were.
 */
void
maestro_ratelimit_observe(Oid server_id, const MaestroRateHeaders *headers)
{
	RateLimitEntry seen;
	RateLimits *l;
	RateLimitEntry *slot = NULL;
	int			i;

	seen.dbid = MyDatabaseId;
	seen.server_id = server_id;
	seen.limit = headers->value[0];
	seen.remaining = headers->value[1];
	seen.reset = headers->value[2];
	seen.burst_limit = headers->value[3];
	seen.burst_remaining = headers->value[4];
	if (seen.limit < 0 && seen.remaining < 0 && seen.reset < 0 &&
		seen.burst_limit < 0 && seen.burst_remaining < 0)
		return;
	seen.observed_at = GetCurrentTimestamp();

	l = limits();
	lock(l, LW_EXCLUSIVE);
	maestro_fault_point("ratelimit_lock");
	for (i = 0; i < RATELIMIT_ENTRIES; i++)
	{
		RateLimitEntry *e = &l->entries[i];

		if (e->dbid == seen.dbid && e->server_id == server_id)
		{
			slot = e;
			break;
		}
		/* a free slot, else the one seen longest ago */
		if (slot == NULL || (slot->dbid != InvalidOid &&
							 (e->dbid == InvalidOid || e->observed_at < slot->observed_at)))
			slot = e;
	}
	/* answers can finish out of order; keep the newest */
	if (!(slot->dbid == seen.dbid && slot->server_id == server_id &&
		  slot->observed_at > seen.observed_at))
	{
		if (slot->dbid != InvalidOid && slot->remaining == 0)
			pg_atomic_sub_fetch_u32(&l->spent_entries, 1);
		if (seen.remaining == 0)
			pg_atomic_add_fetch_u32(&l->spent_entries, 1);
		*slot = seen;
	}
	unlock(l);
}

static bool
find_entry(Oid server_id, RateLimitEntry *out)
{
	RateLimits *l = limits();
	bool		found = false;
	int			i;

	lock(l, LW_SHARED);
	for (i = 0; i < RATELIMIT_ENTRIES; i++)
	{
		if (l->entries[i].dbid == MyDatabaseId && l->entries[i].server_id == server_id &&
			MyDatabaseId != InvalidOid)
		{
			*out = l->entries[i];
			found = true;
			break;
		}
	}
	unlock(l);
	return found;
}

/*
 * The rule: when the server's hourly quota is spent, the time it is renewed
 * (*until) and the milliseconds until then; else 0. Both paths, the
 * backends' calls and the worker's sends, ask this and nothing else.
 */
long
maestro_ratelimit_wait_ms(Oid server_id, TimestampTz *until)
{
	RateLimitEntry e;
	TimestampTz now;
	TimestampTz reset;

	if (until)
		*until = 0;
	if (pg_atomic_read_u32(&limits()->spent_entries) == 0)
		return 0;
	if (!find_entry(server_id, &e) || e.remaining != 0 || e.reset < 0)
		return 0;
	now = GetCurrentTimestamp();
	reset = time_t_to_timestamptz((pg_time_t) Min(e.reset, (int64) PG_INT32_MAX * 2));
	reset = Min(reset, TimestampTzPlusMilliseconds(e.observed_at, RATELIMIT_MAX_WAIT_S * 1000L));
	if (reset <= now)
		return 0;
	if (until)
		*until = reset;
	return Max(1, TimestampDifferenceMilliseconds(now, reset));
}

/* Refuse a synchronous call to a server whose quota is spent, unsent. */
void
maestro_ratelimit_check(const MaestroConnection *conn)
{
	TimestampTz until;
	RateLimitEntry e;

	if (maestro_ratelimit_wait_ms(conn->server_id, &until) == 0)
		return;
	if (!find_entry(conn->server_id, &e))
		e.limit = -1;
	ereport(ERROR,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("the hourly API quota of maestro server \"%s\" is used up", conn->server_name),
			 e.limit >= 0
			 ? errdetail("Maestro answered X-RateLimit-Remaining: 0 (of %lld calls an hour) at %s; the request was not sent.",
						 (long long) e.limit, timestamptz_to_str(e.observed_at))
			 : errdetail("Maestro answered X-RateLimit-Remaining: 0 at %s; the request was not sent.",
						 timestamptz_to_str(e.observed_at)),
			 errhint("The quota is renewed at %s; try again then, or queue triggers with maestro_trigger_async(), which waits by itself.",
					 timestamptz_to_str(until))));
}

Datum
maestro_rate_limits(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	RateLimits *l = limits();
	RateLimitEntry *copy;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	copy = palloc(sizeof(l->entries));
	lock(l, LW_SHARED);
	memcpy(copy, l->entries, sizeof(l->entries));
	unlock(l);

	for (i = 0; i < RATELIMIT_ENTRIES; i++)
	{
		RateLimitEntry *e = &copy[i];
		ForeignServer *server;
		Datum		values[7];
		bool		nulls[7] = {0};

		if (e->dbid != MyDatabaseId || e->dbid == InvalidOid)
			continue;
		/* a dropped server's last answer means nothing to anyone */
		server = GetForeignServerExtended(e->server_id, FSV_MISSING_OK);
		if (server == NULL)
			continue;
		values[0] = CStringGetTextDatum(server->servername);
		values[1] = Int64GetDatum(e->limit);
		nulls[1] = e->limit < 0;
		values[2] = Int64GetDatum(e->remaining);
		nulls[2] = e->remaining < 0;
		nulls[3] = e->reset < 0 || e->reset > (int64) PG_INT32_MAX * 2;
		if (!nulls[3])
			values[3] = TimestampTzGetDatum(time_t_to_timestamptz((pg_time_t) e->reset));
		values[4] = Int64GetDatum(e->burst_limit);
		nulls[4] = e->burst_limit < 0;
		values[5] = Int64GetDatum(e->burst_remaining);
		nulls[5] = e->burst_remaining < 0;
		values[6] = TimestampTzGetDatum(e->observed_at);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
