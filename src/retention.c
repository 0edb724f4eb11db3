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
 * When a pass runs: at once when the worker starts, then again after
 * RETENTION_BACKLOG_MS while a pass found a full batch (a backlog), else
 * after RETENTION_ROUTINE_MS (or half the shorter retention, if that is
 * less than two minutes). A backlog keeps the worker awake until it is
 * gone; the routine pass does not (maestro_retention_next() tells a worker
 * that stays awake anyway when to wake for it): the worker still exits
 * when its queue is drained, and the next start (every commit that queues work starts it)
 * purges first. So a server in use is purged at least as often as it
 * sends, and an idle one has nothing new to purge.
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
#include "maestro.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

/* rows of each table deleted in one transaction */
#define RETENTION_BATCH			1000
/* the next pass while a batch came back full */
#define RETENTION_BACKLOG_MS	2000
/* the next pass otherwise, at most */
#define RETENTION_ROUTINE_MS	(60 * 1000)

static TimestampTz next_pass = 0;	/* 0: at once */
static bool backlog = false;

/*
 * Delete one batch of the rows older than retention_s seconds of table,
 * chosen by the query "pick" (which selects ids, oldest first) and
 * checked again by "still" on the row as it is when locked. Returns how
 * many were deleted.
 */
static uint64
delete_batch(const char *table, const char *pick, const char *still, int retention_s)
{
	Oid			types[1] = {TIMESTAMPTZOID};
	Datum		values[1];

	values[0] = TimestampTzGetDatum(TimestampTzPlusMilliseconds(GetCurrentTransactionStartTimestamp(),
																-(int64) retention_s * 1000));

	/*
	 * The ids are picked first, then the row is checked again as it is when
	 * the delete locks it: maestro_retry() may have queued a failed request
	 * again in between.
	 */
	maestro_queue_run_as_owner(psprintf("DELETE FROM %1$s WHERE id = ANY (ARRAY(SELECT id FROM %1$s"
										" WHERE %2$s LIMIT %3$d)) AND %4$s",
										table, pick, RETENTION_BATCH, still),
							   1, types, values, NULL, SPI_OK_DELETE);
	return SPI_processed;
}

/* One pass over both tables; true when either had a full batch. */
static bool
purge(void)
{
	char	   *schema;
	bool		full = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "deleting maestro rows past their retention");

	schema = maestro_extension_schema_name();
	if (schema != NULL && maestro_request_retention_s > 0)
	{
		uint64		n = delete_batch(psprintf("%s.maestro_trigger_requests", schema),
									 "state IN ('done', 'failed') AND done_at < $1 ORDER BY done_at",
									 "state IN ('done', 'failed') AND done_at < $1",
									 maestro_request_retention_s);

		if (n > 0)
			ereport(DEBUG1,
					(errmsg("maestro worker deleted %llu finished trigger requests past maestro.request_retention",
							(unsigned long long) n)));
		full |= (n == RETENTION_BATCH);
	}
	if (schema != NULL && maestro_event_retention_s > 0)
	{
		uint64		n = delete_batch(psprintf("%s.maestro_instance_events", schema),
									 "seen_at < $1 ORDER BY seen_at",
									 "seen_at < $1",
									 maestro_event_retention_s);

		if (n > 0)
			ereport(DEBUG1,
					(errmsg("maestro worker deleted %llu instance events past maestro.event_retention",
							(unsigned long long) n)));
		full |= (n == RETENTION_BATCH);
	}

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
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
		backlog = purge();
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

	next_pass = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
											backlog ? RETENTION_BACKLOG_MS : routine_ms());
	return backlog ? next_pass : 0;
}
