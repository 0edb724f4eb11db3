/*-------------------------------------------------------------------------
 *
 * sync_loop.c
 *		maestro.sync_interval: the worker runs maestro_sync() every so
 *		often, as the mirror's owner, with that role's user mapping.
 *
 * A run has two phases, so that it never holds the worker on the network.
 * First its pages: maestro_all_instances()'s walk (functions.c) says which
 * GET comes next (a page of the account-wide list, or, where the API lacks
 * it, the workflow list and one list per workflow), and each goes out on
 * the worker's multi handle (transfer.c) like a send, paced with the sends
 * (pacing.c) and counted in maestro_stats. The sends go on meanwhile. The
 * answers are kept in the run's memory context (beyond work_mem, in a
 * temporary file). Then, with every page here, maestro_sync() runs through
 * SPI, with those pages installed as the page source of its
 * maestro_all_instances(): the statement that upserts the mirror and
 * records the events is the one in the extension's SQL, and waits on no
 * network call. The run's memory and file are freed when it ends, whatever
 * the ending.
 *
 * A run fails, is logged as a WARNING and is tried again at the next
 * interval when: a page fails (an HTTP error, a transport error, a body
 * the walk cannot read; no page is retried within a run), the server is
 * paused when a page is due (a 429, or its spent hourly quota), the
 * mirror's owner cannot connect, or the statement fails. A 429 or a spent
 * quota a page reveals pauses the server for the sends too. The statement
 * runs in a subtransaction of its own, so a failed sync never disturbs the
 * queue. A shutdown abandons the page under way at once (transfer.c).
 *
 * src/sync_loop.c
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/buffile.h"
#include "utils/backend_status.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#define SYNC_ACTIVITY "maestro periodic sync"

/* A sync under way: fetching its pages. Everything it holds is in cxt. */
typedef struct SyncRun
{
	MemoryContext cxt;
	MaestroConnection *conn;	/* the mirror owner's */
	MaestroInstanceWalk *walk;
	MaestroPage *pages;			/* the answers so far, in the walk's order */
	MaestroPage **tail;
	Size		in_memory;		/* bytes of the bodies kept in memory */
	BufFile    *file;			/* the bodies beyond work_mem; NULL: none */
	MemoryContext page_cxt;		/* the page under way: its request, transfer */
	MaestroRequest req;
	bool		missing_ok;
	bool		requested;		/* req is the walk's next, not yet answered */
	Transfer   *transfer;		/* req under way */
} SyncRun;

static SyncRun *run = NULL;

/* when the next run is due once this one ends; 0: at once (the first) */
static TimestampTz next_start = 0;

static void
sync_warning(ErrorData *edata)
{
	if (maestro_worker_stopping)
		return;
	ereport(WARNING,
			(errmsg("maestro periodic sync failed: %s", edata->message),
			 edata->detail ? errdetail("%s", edata->detail) : 0,
			 errhint("It is tried again in %d ms.", maestro_sync_interval_ms)));
}

/* Forget the run, its pages and its transfer; the next is due an interval on. */
static void
run_end(void)
{
	next_start = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), maestro_sync_interval_ms);
	if (run == NULL)
		return;
	if (run->transfer)
		maestro_transfer_cancel(run->transfer);
	maestro_instance_walk_use_pages(NULL);
	if (run->file)
		BufFileClose(run->file);
	MemoryContextDelete(run->cxt);
	run = NULL;
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* A step of the run that may raise; false (and the run ended) if it did. */
typedef void (*SyncStep) (void *arg);

static bool
guarded(SyncStep step, void *arg)
{
	MemoryContext caller = CurrentMemoryContext;
	volatile bool ok = true;

	PG_TRY();
	{
		step(arg);
	}
	PG_CATCH();
	{
		sync_warning(maestro_worker_caught_edata(caller));
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	if (!ok)
		run_end();
	return ok;
}

/*
 * The run's connection: the mirror owner's, as maestro_sync() would make
 * it. *(bool *) arg is cleared when there is no extension to sync.
 */
static void
connect_as_owner(void *arg)
{
	MemoryContext caller;
	char	   *schema;

	caller = maestro_worker_begin(NULL);
	schema = maestro_extension_schema_name();
	if (schema == NULL)
		*(bool *) arg = false;
	else
	{
		Oid			owner;
		MaestroRoleSwitch save;
		MaestroConnection *conn;

		/* the mirror's owner: the role the sync runs as, with its user mapping */
		owner = maestro_extension_table_owner("maestro_synced_instances");
		maestro_become_role(owner, &save);
		conn = maestro_connect();
		maestro_restore_role(&save);
		MemoryContextSwitchTo(run->cxt);
		run->conn = maestro_connection_copy(conn);
		run->walk = maestro_instance_walk_begin(run->conn);
	}
	maestro_worker_commit(caller);
}

/* Start a run; false when there is nothing to run or it failed at once. */
static bool
run_begin(void)
{
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "maestro periodic sync",
											  ALLOCSET_DEFAULT_SIZES);
	bool		have_extension = true;

	run = MemoryContextAllocZero(cxt, sizeof(SyncRun));
	run->cxt = cxt;
	run->tail = &run->pages;
	pgstat_report_activity(STATE_RUNNING, SYNC_ACTIVITY);
	if (!guarded(connect_as_owner, &have_extension))
		return false;
	if (!have_extension)
	{
		run_end();
		return false;
	}
	return true;
}

static void
next_request(void *arg)
{
	MemoryContext old;

	run->page_cxt = AllocSetContextCreate(run->cxt, "maestro sync page", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(run->page_cxt);
	run->requested = maestro_instance_walk_next_request(run->walk, &run->req, &run->missing_ok);
	MemoryContextSwitchTo(old);
	if (!run->requested)
	{
		MemoryContextDelete(run->page_cxt);
		run->page_cxt = NULL;
	}
}

/* The server may not be sent to now: the run fails as a call would. */
static void
raise_paused(void *arg)
{
	TimestampTz until = *(TimestampTz *) arg;

	/* a spent quota: the error every call gets then */
	maestro_ratelimit_check(run->conn);
	ereport(ERROR,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("maestro server \"%s\" is paused after Maestro answered 429",
					run->conn->server_name),
			 errdetail("The worker sends it nothing until %s; the page was not requested.",
					   timestamptz_to_str(until))));
}

/*
 * The statement, with the pages installed: as the mirror's owner, in a
 * subtransaction of its own, so that a failed sync leaves the queue alone.
 */
static void
apply(void)
{
	MemoryContext caller;
	char	   *schema;

	caller = maestro_worker_begin(NULL);

	schema = maestro_extension_schema_name();
	if (schema != NULL)
	{
		MemoryContext oldcontext = CurrentMemoryContext;
		ResourceOwner oldowner = CurrentResourceOwner;
		Oid			owner;

		owner = maestro_extension_table_owner("maestro_synced_instances");

		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(oldcontext);
		PG_TRY();
		{
			MaestroRoleSwitch save;

			maestro_become_role(owner, &save);
			maestro_instance_walk_use_pages(run->pages);
			SPI_execute(psprintf("SELECT %s.maestro_sync()", schema), false, 0);
			maestro_instance_walk_use_pages(NULL);
			maestro_restore_role(&save);
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcontext);
			CurrentResourceOwner = oldowner;
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			/* the subtransaction's abort gives back the role and settings */
			maestro_instance_walk_use_pages(NULL);
			MemoryContextSwitchTo(caller);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcontext);
			CurrentResourceOwner = oldowner;
			sync_warning(edata);
		}
		PG_END_TRY();
	}
	maestro_worker_commit(caller);
}

/*
 * Take the run one step on: start its next page when the page may leave,
 * or run the statement when none is left. Returns when it wants to be
 * called again: 0 while a transfer is under way (its end wakes the loop),
 * or -1 when the run ended.
 */
static TimestampTz
run_step(TimestampTz now)
{
	TimestampTz paused;
	TimestampTz slot;

	if (run->transfer)
		return 0;
	if (!run->requested && !guarded(next_request, NULL))
		return -1;
	if (!run->requested)
	{
		apply();
		run_end();
		return -1;
	}

	/* the page is paced with the sends */
	paused = maestro_pacing_paused_until(run->conn->server_id, now);
	if (paused != 0)
	{
		(void) guarded(raise_paused, &paused);
		return -1;
	}
	slot = maestro_pacing_next_slot(run->conn->server_id, now);
	if (slot > now)
		return slot;
	if (maestro_transfer_count() >= maestro_max_concurrency)
		return 0;
	/* a token as the sends get theirs: fetched beside them, never waited for */
	if (run->conn->jwt)
	{
		char	   *problem = NULL;
		TimestampTz wake = 0;

		switch (maestro_delivery_token(run->conn, now, &problem, &wake))
		{
			case TOKEN_READY:
				break;
			case TOKEN_PARKED:
				return wake;	/* 0: the worker's own fetch, whose end wakes it */
			case TOKEN_FAILED:
				{
					ErrorData	edata = {0};

					edata.message = problem;
					sync_warning(&edata);
					run_end();
					return -1;
				}
		}
	}
	run->transfer = maestro_transfer_start(TRANSFER_SYNC_PAGE, run, run->conn, &run->req,
										   run->page_cxt);
	if (run->transfer == NULL)
	{
		ErrorData	edata = {0};

		edata.message = "out of memory while preparing the request";
		sync_warning(&edata);
		run_end();
		return -1;
	}
	maestro_pacing_record_send(run->conn->server_id, now);
	return 0;
}

/*
 * Start the sync if it is due, or take the one under way a step on;
 * returns when it next wants to run (0: syncing is off, or a page is under
 * way). Called once a round by the loop's housekeeping. The first run is
 * due when the worker starts; each next one an interval after the last
 * ended, whether it succeeded or failed.
 */
TimestampTz
maestro_sync_loop_run(TimestampTz now)
{
	TimestampTz next;

	if (maestro_sync_interval_ms <= 0)
	{
		if (run != NULL)
			run_end();
		next_start = 0;
		return 0;
	}
	if (run == NULL)
	{
		if (next_start != 0 && now < next_start)
			return next_start;
		if (!run_begin())
			return next_start;
	}
	next = run_step(now);
	return next < 0 ? next_start : next;
}

/* The HTTP failure of a page, raised as the synchronous call raises it. */
static void
raise_page_error(void *arg)
{
	Transfer   *t = (Transfer *) arg;
	MaestroResponse resp;

	maestro_transfer_response(t, &resp);
	maestro_raise_http_error(run->conn, &t->req, &resp);
}

/*
 * Keep the answer of the page that came (run->transfer) for the statement,
 * and let the walk read it. Bodies go to memory up to work_mem in all, and
 * to a temporary file beyond, so that the worker's memory does not grow
 * with the account; the file lives as long as the run.
 */
static void
keep_page(void *arg)
{
	Transfer   *t = run->transfer;
	bool		missing = *(bool *) arg;
	MaestroPage *page = MemoryContextAllocZero(run->cxt, sizeof(MaestroPage));
	char	   *body = t->buf.data ? t->buf.data : "";

	page->endpoint = run->req.endpoint;
	page->path = MemoryContextStrdup(run->cxt, run->req.path);
	page->missing = missing;
	page->len = missing ? 0 : t->buf.len;
	if (!missing && run->in_memory + page->len <= (Size) work_mem * 1024)
	{
		page->body = MemoryContextAllocHuge(run->cxt, page->len + 1);
		memcpy(page->body, body, page->len);
		page->body[page->len] = '\0';
		run->in_memory += page->len;
	}
	else if (!missing)
	{
		if (run->file == NULL)
		{
			MemoryContext old = MemoryContextSwitchTo(run->cxt);

			/* outlives the transactions of the run's steps */
			run->file = BufFileCreateTemp(true);
			MemoryContextSwitchTo(old);
		}
		page->file = run->file;
		BufFileTell(run->file, &page->fileno, &page->offset);
		BufFileWrite(run->file, body, page->len);
	}
	*run->tail = page;
	run->tail = &page->next;
	maestro_instance_walk_take(run->walk, &run->req, body, t->buf.len, missing);
}

/* A page's transfer ended (the loop hands it over). */
void
maestro_sync_loop_finished(Transfer *t)
{
	curl_off_t	total_us = 0;
	long		retry_after_ms = -1;
	long		status = t->result == CURLE_OK ? t->status : 0;
	bool		missing;

	if (run == NULL || t != run->transfer)
	{
		/* not reached: a run's end abandons its page */
		maestro_transfer_free(t);
		return;
	}
	missing = status == 404 && run->missing_ok;

	curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME_T, &total_us);
	maestro_stats_record(t->server_id, t->req.endpoint, status, (double) total_us / 1000.0,
						 0, status == 429 ? 1 : 0, t->buf.len);
	if (t->buf.rate.retry_after)
		retry_after_ms = maestro_http_retry_after_ms(t->easy);
	/* what it says of the server holds the sends too */
	if (t->result == CURLE_OK)
		maestro_ratelimit_observe(t->server_id, &t->buf.rate);
	maestro_pacing_pause(t->server_id, maestro_pacing_pause_ms(status, retry_after_ms, 1));

	/* run->transfer stays t until it is dealt with: a run's end releases it */
	if (maestro_http_classify(t->result, t->status) == MAESTRO_SUCCESS || missing)
	{
		if (!guarded(keep_page, &missing))
			return;
		run->transfer = NULL;
		maestro_transfer_free(t);
	}
	else
	{
		/* a refused minted token: the next run mints anew */
		if (status == 401 && run->conn->jwt)
			maestro_auth_forget(run->conn);
		if (guarded(raise_page_error, t))
			run_end();			/* not reached: it raises */
		return;
	}
	MemoryContextDelete(run->page_cxt);
	run->page_cxt = NULL;
	run->requested = false;
}

/*
 * While a sync is under way, the worker shows it as its activity, over
 * what a claim or a record reported meanwhile.
 */
void
maestro_sync_loop_show_activity(void)
{
	if (run == NULL)
		return;
	/* our own entry, read without its lock: only this process writes it */
	if (MyBEEntry != NULL && MyBEEntry->st_state == STATE_RUNNING &&
		strcmp(MyBEEntry->st_activity_raw, SYNC_ACTIVITY) == 0)
		return;
	pgstat_report_activity(STATE_RUNNING, SYNC_ACTIVITY);
}

/*
 * Forget the run under way (shutdown, or recovery from an error, after
 * maestro_transfer_abort_all(); releasing its page again is harmless).
 */
void
maestro_sync_loop_drop(void)
{
	if (run != NULL)
		run_end();
}
