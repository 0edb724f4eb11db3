/*-------------------------------------------------------------------------
 *
 * retention.c
 *		Deleting what has been kept long enough: finished trigger requests
 *		after maestro.request_retention, rows of maestro_instance_events
 *		after maestro.event_retention.
 *
 * The worker calls maestro_retention_run() on every round of its loop. A
 * pass deletes at most RETENTION_BATCH rows of each table in one short
 * transaction, oldest first, so that it never holds many row locks, never
 * writes a burst of WAL and never keeps the worker from its sends for
 * long. Only 'done' and 'failed' requests are deleted, by done_at; a
 * queued or sending request is never touched, however old.
 *
 * When a pass runs: at once when the worker starts, else after
 * RETENTION_ROUTINE_MS (or half the shorter retention, if that is less
 * than two minutes). While passes find full batches (a backlog), the
 * worker runs one pass after another for up to RETENTION_ROUND_MS, sends
 * what is due, and goes on at its next round without waiting: tens of
 * thousands of rows a second, far more than the queue can send, so a
 * sustained stream never outgrows it, while sends wait at most
 * RETENTION_ROUND_MS and every transaction stays small. A backlog keeps
 * the worker awake until it is gone; the routine pass does not
 * (maestro_retention_next() tells a worker that stays awake anyway when
 * to wake for it): the worker still exits when its queue is drained, and
 * the next start (every commit that queues work starts it) purges first.
 * So a server in use is purged at least as often as it sends, and an idle
 * one has nothing new to purge.
 *
 * The deletes run as the tables' owner with search_path pinned, the same
 * way queue.c writes the queue. A failed pass (say, a lock timeout) is
 * logged and tried again at the next routine time; it never stops the
 * worker.
 *
 * src/retention.c
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

/* rows of each table deleted in one transaction */
#define RETENTION_BATCH			1000
/*
 * How long one round of the worker may spend on batches: while batches come
 * back full it deletes batch after batch for this long, then lets the
 * worker send and comes back on its next round, without waiting.
 */
#define RETENTION_ROUND_MS		100
/* the next pass otherwise, at most */
#define RETENTION_ROUTINE_MS	(60 * 1000)

/* What is deleted from one table, and when. */
typedef struct RetentionTable
{
	const char *table;			/* in the extension's schema */
	const char *finished;		/* which rows may go at all ("" or "... AND ") */
	const char *since;			/* the column the retention is counted from */
	int		   *retention_s;	/* the setting, in seconds; 0: kept forever */
	const char *what;			/* for the log */
} RetentionTable;

static const RetentionTable tables[] = {
	{"maestro_trigger_requests", "state IN ('done', 'failed') AND ", "done_at",
	&maestro_request_retention_s, "finished trigger requests past maestro.request_retention"},
	{"maestro_instance_events", "", "seen_at",
	&maestro_event_retention_s, "instance events past maestro.event_retention"},
};

static TimestampTz next_pass = 0;	/* 0: at once */
static bool backlog = false;

/*
 * Delete one batch of the rows of t past its retention, oldest first.
 * Returns how many were deleted.
 */
static uint64
delete_batch(const char *schema, const RetentionTable *t)
{
	Oid			types[1] = {TIMESTAMPTZOID};
	Datum		values[1];
	uint64		n;

	values[0] = TimestampTzGetDatum(TimestampTzPlusMilliseconds(GetCurrentTransactionStartTimestamp(),
																-(int64) *t->retention_s * 1000));

	/*
	 * The ids are picked first (by the index on the column, oldest first),
	 * then the row is checked again as it is when the delete locks it:
	 * maestro_retry() may have queued a failed request again in between.
	 */
	maestro_queue_run_as_owner(psprintf("DELETE FROM %1$s.%2$s WHERE id = ANY (ARRAY(SELECT id FROM %1$s.%2$s"
										" WHERE %3$s%4$s < $1 ORDER BY %4$s LIMIT %5$d)) AND %3$s%4$s < $1",
										schema, t->table, t->finished, t->since, RETENTION_BATCH),
							   1, types, values, NULL, SPI_OK_DELETE);
	n = SPI_processed;
	if (n > 0)
		ereport(DEBUG1,
				(errmsg("maestro worker deleted %llu %s", (unsigned long long) n, t->what)));
	return n;
}

/* One pass over both tables in one transaction; true when either had a full batch. */
static bool
purge(void)
{
	MemoryContext caller;
	char	   *schema;
	bool		full = false;

	caller = maestro_worker_begin("deleting maestro rows past their retention");

	schema = maestro_extension_schema_name();
	for (size_t i = 0; schema != NULL && i < lengthof(tables); i++)
	{
		if (*tables[i].retention_s > 0 &&
			delete_batch(schema, &tables[i]) == RETENTION_BATCH)
			full = true;
	}

	maestro_worker_commit(caller);
	return full;
}

/* The routine interval: a minute, or half the shorter retention. */
static long
routine_ms(void)
{
	long		ms = RETENTION_ROUTINE_MS;

	if (maestro_request_retention_s > 0)
		ms = Min(ms, (long) maestro_request_retention_s * 500);
	if (maestro_event_retention_s > 0)
		ms = Min(ms, (long) maestro_event_retention_s * 500);
	return Max(ms, 1000);
}

/*
 * When the next routine pass is due, 0 when retention is off: a worker
 * that stays awake anyway (transfers in flight, a retry or a sync ahead)
 * wakes for it; an idle one does not stay for it.
 */
TimestampTz
maestro_retention_next(void)
{
	if (maestro_request_retention_s <= 0 && maestro_event_retention_s <= 0)
		return 0;
	return next_pass;
}

/*
 * Run a pass if one is due. Returns when the worker should wake for the
 * next one: a time while a backlog remains, else 0 (the routine pass needs
 * no wake-up of its own; it runs on the first round after its time).
 */
TimestampTz
maestro_retention_run(TimestampTz now)
{
	MemoryContext caller = CurrentMemoryContext;

	if (maestro_request_retention_s <= 0 && maestro_event_retention_s <= 0)
	{
		backlog = false;
		return 0;
	}
	if (next_pass != 0 && now < next_pass)
		return backlog ? next_pass : 0;

	PG_TRY();
	{
		TimestampTz started = GetCurrentTimestamp();

		/*
		 * Batch after batch while they come back full, each its own short
		 * transaction, for at most RETENTION_ROUND_MS: then the worker sends
		 * what is due and comes back on its next round.
		 */
		do
		{
			backlog = purge();
		} while (backlog && !maestro_shutdown_requested &&
				 !TimestampDifferenceExceeds(started, GetCurrentTimestamp(), RETENTION_ROUND_MS));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* the standard recovery: the abort releases locks, SPI, snapshots */
		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		pgstat_report_activity(STATE_IDLE, NULL);
		backlog = false;
		ereport(WARNING,
				(errmsg("maestro worker could not delete rows past their retention: %s", edata->message),
				 edata->detail ? errdetail("%s", edata->detail) : 0,
				 errhint("It is tried again in %ld seconds.", routine_ms() / 1000)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);

	/* a backlog goes on at the next round, without waiting */
	next_pass = backlog ? GetCurrentTimestamp() :
		TimestampTzPlusMilliseconds(GetCurrentTimestamp(), routine_ms());
	return backlog ? next_pass : 0;
}
