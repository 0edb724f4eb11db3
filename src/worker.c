/*-------------------------------------------------------------------------
 *
 * worker.c
 *		The background worker that sends queued trigger requests: its loop,
 *		its one wait, and its recovery from errors.
 *
 * Each round: take the transfers that ended, and at once refill their
 * slots from the requests claimed in an earlier round (delivery.c); a
 * freed slot waits for no database work. Do the periodic housekeeping.
 * Then, once there is room for a batch, claim due requests (pacing.c
 * leaves out the servers that may not be sent to now) in ONE transaction
 * that also records the outcomes gathered since the last one, and start
 * what may start (delivery.c), token fetches included. A steady backlog so
 * costs one commit per batch, however many requests it settles. Then ONE
 * wait (transfer.c): until the latch is set (a commit, SIGTERM, SIGHUP), a
 * transfer's socket is ready, or the earliest of libcurl's timeout, the
 * next due request, the next free slot of a paced server, the end of a
 * pause, the next look at a token another process is fetching, the next
 * housekeeping, and the latest an outcome may wait to be recorded. A round
 * with nothing to do costs no transaction.
 *
 * The worker exits once nothing is in flight, queued, or due, so that an
 * idle server keeps no connection to the database; a commit starts it
 * again (launcher.c). SIGTERM ends it promptly with exit code 0, which also
 * keeps the postmaster from restarting it after DROP DATABASE ... WITH
 * (FORCE): the asynchronous transfers (sends, look-ups, token fetches, the
 * pages of a periodic sync) are abandoned at once, an abandoned token fetch
 * waking the backends waiting for that token (delivery.c). The worker
 * makes no synchronous network call. Rows it left 'sending' are looked up
 * by the next worker before they are sent again.
 *
 * src/worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include <setjmp.h>

#include "access/xact.h"
#include "executor/spi.h"
#include "libpq/pqsignal.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

/* how long the worker lingers with nothing to do before it exits */
#define IDLE_EXIT_MS		2000
/* the pause after an error escaped a round, so that it cannot spin */
#define ERROR_PAUSE_MS		1000
/* longest an outcome waits to be recorded with a claim (see below) */
#define RECORD_DELAY_MS		10

/* the loop's state, static so that it survives a longjmp */
static bool recover = true;
static bool need_claim = true;
static TimestampTz next_due = 0;
static TimestampTz idle_since = 0;
static bool checked_before_exit = false;

/*
 * Outcomes not yet recorded, in loop_cxt (not reset while there are any),
 * and since when. The database work of a round costs per statement and
 * per commit as much as per row, so outcomes wait for the next claim to
 * be written in its transaction, and claims wait until there is room for
 * a batch (claim_batch()): the slots are refilled meanwhile from the
 * requests claimed earlier. An outcome waits RECORD_DELAY_MS at most, and
 * not at all once nothing is in flight. Waiting costs no guarantee: until
 * it is recorded its row stays 'sending', so it is neither claimed again
 * nor, after a crash, sent again before it is looked up.
 */
static List *unrecorded = NIL;
static TimestampTz unrecorded_since = 0;

static void
worker_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	maestro_shutdown_requested = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

/*
 * In a PG_CATCH block outside any transaction: the caught error's message
 * (and hint), copied into keep, and what the error left behind released
 * as a background worker's error recovery does (locks, condition
 * variables, a transaction if one was open), since no transaction abort
 * will. The request it concerns records the message; the worker goes on.
 */
char *
maestro_worker_caught_error(MemoryContext keep)
{
	ErrorData  *edata = maestro_worker_caught_edata(keep);

	return edata->hint ? psprintf("%s %s", edata->message, edata->hint) : edata->message;
}

/* The same, for a caller that reports the whole error (sync_loop.c). */
ErrorData *
maestro_worker_caught_edata(MemoryContext keep)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(keep);
	edata = CopyErrorData();
	FlushErrorState();
	HOLD_INTERRUPTS();
	LWLockReleaseAll();
	ConditionVariableCancelSleep();
	pgstat_report_wait_end();
	AbortCurrentTransaction();
	RESUME_INTERRUPTS();
	MemoryContextSwitchTo(keep);
	return edata;
}

/*
 * The worker's database work (claims, records, the sync's statement,
 * retention, the failover check): a short transaction with SPI and a
 * snapshot, shown as activity (NULL: as it is). Returns the caller's
 * memory context, which maestro_worker_commit switches back to.
 */
MemoryContext
maestro_worker_begin(const char *activity)
{
	MemoryContext caller = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (activity != NULL)
		pgstat_report_activity(STATE_RUNNING, activity);
	return caller;
}

void
maestro_worker_commit(MemoryContext back_to)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	MemoryContextSwitchTo(back_to);
}

/* The earlier of due and the time the first re-queued outcome falls due. */
static TimestampTz
earliest_retry(List *outcomes, TimestampTz due)
{
	ListCell   *cell;
	TimestampTz now = GetCurrentTimestamp();

	foreach(cell, outcomes)
	{
		Outcome    *o = (Outcome *) lfirst(cell);

		if (strcmp(o->state, "queued") == 0)
		{
			TimestampTz at = TimestampTzPlusMilliseconds(now, Max(o->retry_in_ms, 0));

			if (due == 0 || at < due)
				due = at;
		}
	}
	return due;
}

static TimestampTz
earlier(TimestampTz a, TimestampTz b)
{
	if (a == 0)
		return b;
	if (b == 0)
		return a;
	return Min(a, b);
}

/*
 * Periodic work besides sending, run once a round with the time; returns
 * when it next wants to run (0: it does not need the worker to stay).
 */
static TimestampTz
housekeeping(TimestampTz now)
{
	TimestampTz next = 0;

	/*
	 * The sync fetches its pages on the multi handle like any transfer, and
	 * runs its statement only once they are all here: it never holds the
	 * loop on the network.
	 */
	next = earlier(next, maestro_sync_loop_run(now));
	next = earlier(next, maestro_retention_run(now));
	return next;
}

/* Record what is unrecorded on its own and note when retries fall due. */
static void
record_now(void)
{
	if (unrecorded == NIL)
		return;
	maestro_queue_sql_record(unrecorded);
	next_due = earliest_retry(unrecorded, next_due);
	unrecorded = NIL;
	unrecorded_since = 0;
}

static void
add_unrecorded(List *outcomes)
{
	if (outcomes == NIL)
		return;
	if (unrecorded == NIL)
		unrecorded_since = GetCurrentTimestamp();
	unrecorded = list_concat(unrecorded, outcomes);
}

/* Room for more claimed requests: a round in flight and one ready. */
static int
claim_room(void)
{
	int			pending = maestro_delivery_pending();

	if (pending >= maestro_max_concurrency)
		return 0;
	return Max(2 * maestro_max_concurrency - maestro_transfer_count() - pending, 0);
}

/* The least room worth a claim: a quarter of the slots. */
static int
claim_batch(void)
{
	return Max(maestro_max_concurrency / 4, 1);
}

static void
worker_loop(void)
{
	MemoryContext loop_cxt = AllocSetContextCreate(TopMemoryContext, "maestro worker loop",
												   ALLOCSET_DEFAULT_SIZES);
	sigjmp_buf	local_sigjmp_buf;

	/*
	 * An error that escapes a round (a failed claim or record, out of
	 * memory) is handled as background workers handle theirs: the
	 * transaction is aborted and every lock, buffer pin and wait released.
	 * What was in flight or claimed is dropped and taken over again as
	 * after a crash: looked up by name before it is sent; a token fetch in
	 * flight is given up, so that backends waiting for it fetch it.
	 */
	if (sigsetjmp(local_sigjmp_buf, 1) != 0)
	{
		error_context_stack = NULL;
		HOLD_INTERRUPTS();
		EmitErrorReport();
		AbortCurrentTransaction();
		LWLockReleaseAll();
		ConditionVariableCancelSleep();
		pgstat_report_wait_end();
		MemoryContextSwitchTo(TopMemoryContext);
		FlushErrorState();
		MemoryContextReset(loop_cxt);
		/*
		 * Written already if only the claim after them failed (queue_sql.c);
		 * else their rows stay 'sending': looked up before sent again.
		 */
		unrecorded = NIL;
		unrecorded_since = 0;
		maestro_transfer_abort_all();
		maestro_delivery_drop_all();
		maestro_sync_loop_drop();
		recover = true;
		need_claim = true;
		RESUME_INTERRUPTS();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 ERROR_PAUSE_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	PG_exception_stack = &local_sigjmp_buf;

	for (;;)
	{
		TimestampTz now;
		TimestampTz next_slot = 0;
		TimestampTz reopen = 0;
		TimestampTz next_housekeeping;
		TimestampTz wake_at;
		List	   *outcomes = NIL;
		Transfer   *t;
		long		timeout_ms = -1;
		bool		busy;
		bool		claim_now;

		MemoryContextSwitchTo(loop_cxt);
		if (unrecorded == NIL)
			MemoryContextReset(loop_cxt);

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (maestro_queue_take_wake())
			need_claim = true;

		/* what the last wait brought */
		while ((t = maestro_transfer_take_finished()) != NULL)
		{
			if (t->kind == TRANSFER_SYNC_PAGE)
				maestro_sync_loop_finished(t);
			else
				outcomes = list_concat(outcomes, maestro_delivery_finished(t));
		}
		busy = outcomes != NIL;
		add_unrecorded(outcomes);
		if (maestro_shutdown_requested)
		{
			record_now();
			break;
		}

		/*
		 * The freed slots first: what they take was claimed, durably, in an
		 * earlier round, so it leaves before this round's database work.
		 */
		outcomes = maestro_delivery_dispatch(GetCurrentTimestamp(), &next_slot);
		busy |= outcomes != NIL;
		add_unrecorded(outcomes);
		maestro_transfer_kick();

		next_housekeeping = housekeeping(GetCurrentTimestamp());
		if (maestro_shutdown_requested)
		{
			record_now();
			break;
		}

		now = GetCurrentTimestamp();
		if (next_due != 0 && now >= next_due)
		{
			need_claim = true;
			next_due = 0;
		}
		if (maestro_pacing_wants_claim(now, &reopen))
			need_claim = true;

		claim_now = need_claim && claim_room() >= claim_batch();
		if (claim_now)
		{
			List	   *claimed;
			bool		more;
			TimestampTz due;

			/* the outcomes are written in the claim's transaction */
			if (!maestro_queue_sql_claim(unrecorded, claim_room(), recover, &claimed, &more, &due))
				break;			/* the extension is gone */
			recover = false;
			need_claim = more;
			if (!more)
				next_due = due;
			next_due = earliest_retry(unrecorded, next_due);
			unrecorded = NIL;
			unrecorded_since = 0;
			busy |= claimed != NIL;

			/* what was just claimed, into the slots still free */
			outcomes = maestro_delivery_dispatch(GetCurrentTimestamp(), &next_slot);
			busy |= outcomes != NIL;
			add_unrecorded(outcomes);
		}
		if (unrecorded != NIL &&
			(claim_now || maestro_transfer_count() == 0 ||
			 list_length(unrecorded) >= claim_batch() ||
			 TimestampDifferenceExceeds(unrecorded_since, GetCurrentTimestamp(), RECORD_DELAY_MS)))
			record_now();
		if (maestro_shutdown_requested)
		{
			record_now();
			break;
		}

		/* ---- the one wait ---- */
		now = GetCurrentTimestamp();
		if (maestro_pacing_wants_claim(now, &reopen))
			need_claim = true;

		if (need_claim && claim_room() >= claim_batch())
			timeout_ms = 0;
		else
		{
			bool		waiting = maestro_transfer_count() > 0 || maestro_delivery_pending() > 0;

			wake_at = earlier(earlier(next_due, next_slot), earlier(reopen, next_housekeeping));
			if (unrecorded != NIL)
				wake_at = earlier(wake_at, TimestampTzPlusMilliseconds(unrecorded_since,
																	   RECORD_DELAY_MS));
			if (busy || waiting || wake_at != 0 || need_claim)
			{
				idle_since = 0;
				checked_before_exit = false;
			}
			/* staying anyway, it also wakes for retention's routine pass */
			if (waiting || wake_at != 0)
				wake_at = earlier(wake_at, maestro_retention_next());
			if (!waiting && wake_at == 0 && !need_claim)
			{
				/*
				 * Nothing to do and nothing ahead: linger a little, look at
				 * the queue once more (a retry queued for later must keep
				 * the worker), then leave unless a commit came in.
				 */
				if (idle_since == 0)
					idle_since = now;
				if (TimestampDifferenceExceeds(idle_since, now, IDLE_EXIT_MS))
				{
					if (!checked_before_exit)
					{
						checked_before_exit = true;
						need_claim = true;
						continue;
					}
					if (maestro_queue_release_worker_if_idle())
						break;
					need_claim = true;	/* a commit came in just now */
					continue;
				}
				wake_at = TimestampTzPlusMilliseconds(idle_since, IDLE_EXIT_MS);
			}
			if (wake_at != 0)
				timeout_ms = Max(TimestampDifferenceMilliseconds(now, wake_at), 0);
		}
		maestro_sync_loop_show_activity();
		maestro_transfer_wait(timeout_ms);
	}
	PG_exception_stack = NULL;
	MemoryContextSwitchTo(TopMemoryContext);
}

void
maestro_worker_main(Datum arg)
{
	pqsignal(SIGTERM, worker_sigterm);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	if (!maestro_queue_claim_worker())
		proc_exit(0);
	before_shmem_exit(maestro_queue_release_worker, 0);

	BackgroundWorkerInitializeConnection(maestro_database_name, NULL, 0);
	pgstat_report_appname("maestro worker");
	/* the worker runs as a superuser: resolve nothing through user schemas */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	if (!maestro_worker_version_ok())
		proc_exit(0);
	maestro_failover_check();

	maestro_transfer_init();
	worker_loop();
	maestro_transfer_shutdown();
	maestro_delivery_drop_all();
	maestro_sync_loop_drop();
	proc_exit(0);
}
