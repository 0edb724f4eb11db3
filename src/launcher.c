/*-------------------------------------------------------------------------
 *
 * launcher.c
 *		The worker's life cycle: the launcher that starts it when the server
 *		comes up, starting it (or waking it) at a commit that queued work,
 *		and the handshake by which it exits when idle.
 *
 * The worker runs only while there is work. When a commit finds no worker,
 * it registers one (a dynamic background worker); the worker exits when
 * the queue is drained. So an idle server holds no connection to the
 * database, and DROP DATABASE is not blocked. The state the two sides share
 * lives in a small shared-memory struct, which exists only when maestro is
 * in shared_preload_libraries.
 *
 * src/launcher.c
 *
 *-------------------------------------------------------------------------
 */
#include "maestro.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

/* How long a requested worker may take to start before we ask again. */
#define WORKER_START_TIMEOUT_MS 10000

typedef struct MaestroQueueShared
{
	slock_t		mutex;
	bool		worker_running;
	pid_t		worker_pid;
	int			worker_procno;
	bool		start_requested;
	TimestampTz start_requested_at;
	bool		wake_pending;	/* work committed since the worker last looked */
} MaestroQueueShared;

static MaestroQueueShared *queue_shared = NULL;

/* maestro.c's shared-memory hooks call these (AddinShmemInitLock held) */
void
maestro_queue_shmem_request(void)
{
	maestro_shmem_reserve("maestro queue", sizeof(MaestroQueueShared), false);
}

void
maestro_queue_shmem_startup(void)
{
	if (maestro_shmem_attach("maestro queue", sizeof(MaestroQueueShared), (void **) &queue_shared))
	{
		SpinLockInit(&queue_shared->mutex);
		queue_shared->worker_procno = -1;
	}
}

static void
fill_worker(BackgroundWorker *worker, bool launcher)
{
	memset(worker, 0, sizeof(BackgroundWorker));
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
	/* a crashed worker comes back and finishes what it had claimed */
	worker->bgw_restart_time = launcher ? BGW_NEVER_RESTART : 5;
	snprintf(worker->bgw_library_name, BGW_MAXLEN, "maestro");
	snprintf(worker->bgw_function_name, BGW_MAXLEN,
			 launcher ? "maestro_launcher_main" : "maestro_worker_main");
	snprintf(worker->bgw_name, BGW_MAXLEN,
			 launcher ? "maestro launcher" : "maestro trigger queue worker");
	snprintf(worker->bgw_type, BGW_MAXLEN,
			 launcher ? "maestro launcher" : "maestro worker");
}

/*
 * Called from _PG_init while shared_preload_libraries is processed: a
 * launcher that sends what a crash or shutdown left in the queue as soon as
 * the server is up.
 */
void
maestro_queue_register_launcher(void)
{
	BackgroundWorker launcher;

	fill_worker(&launcher, true);
	RegisterBackgroundWorker(&launcher);
}

bool
maestro_queue_available(void)
{
	return queue_shared != NULL;
}

/*
 * Wake the worker, or start one when none runs. Safe in a commit callback:
 * it never raises an error.
 */
void
maestro_queue_wake(void)
{
	int			procno = -1;
	bool		start = false;

	if (queue_shared == NULL)
		return;

	SpinLockAcquire(&queue_shared->mutex);
	queue_shared->wake_pending = true;
	if (queue_shared->worker_running)
		procno = queue_shared->worker_procno;
	else if (!queue_shared->start_requested ||
			 TimestampDifferenceExceeds(queue_shared->start_requested_at,
										GetCurrentTimestamp(),
										WORKER_START_TIMEOUT_MS))
	{
		queue_shared->start_requested = true;
		queue_shared->start_requested_at = GetCurrentTimestamp();
		start = true;
	}
	SpinLockRelease(&queue_shared->mutex);

	if (procno >= 0)
		SetLatch(&ProcGlobal->allProcs[procno].procLatch);
	if (start)
	{
		BackgroundWorker worker;

		fill_worker(&worker, false);
		if (!RegisterDynamicBackgroundWorker(&worker, NULL))
		{
			SpinLockAcquire(&queue_shared->mutex);
			queue_shared->start_requested = false;
			SpinLockRelease(&queue_shared->mutex);
			ereport(WARNING,
					(errmsg("could not start the maestro worker: no background worker slot is free"),
					 errdetail("Queued requests stay queued until a worker can start."),
					 errhint("Raise max_worker_processes.")));
		}
	}
}

/*
 * The worker's side of the handshake. Returns false when another worker
 * already runs: there is only ever one.
 */
bool
maestro_queue_claim_worker(void)
{
	bool		claimed = false;

	SpinLockAcquire(&queue_shared->mutex);
	if (!queue_shared->worker_running)
	{
		queue_shared->worker_running = true;
		queue_shared->worker_pid = MyProcPid;
		queue_shared->worker_procno = MyProc->pgprocno;
		claimed = true;
	}
	queue_shared->start_requested = false;
	SpinLockRelease(&queue_shared->mutex);
	return claimed;
}

/* Take and clear the "work was committed" flag. */
bool
maestro_queue_take_wake(void)
{
	bool		pending;

	SpinLockAcquire(&queue_shared->mutex);
	pending = queue_shared->wake_pending;
	queue_shared->wake_pending = false;
	SpinLockRelease(&queue_shared->mutex);
	return pending;
}

/*
 * The worker may exit only if nothing was committed since it last looked;
 * deciding and giving up the slot happen under one lock, so a commit either
 * sees the worker running (and wakes it) or sees none (and starts one).
 */
bool
maestro_queue_release_worker_if_idle(void)
{
	bool		released = false;

	SpinLockAcquire(&queue_shared->mutex);
	if (!queue_shared->wake_pending && queue_shared->worker_pid == MyProcPid)
	{
		queue_shared->worker_running = false;
		queue_shared->worker_pid = 0;
		queue_shared->worker_procno = -1;
		released = true;
	}
	SpinLockRelease(&queue_shared->mutex);
	return released;
}

/* On any exit of the worker, crashes aside, give the slot back. */
void
maestro_queue_release_worker(int code, Datum arg)
{
	if (queue_shared == NULL)
		return;
	SpinLockAcquire(&queue_shared->mutex);
	if (queue_shared->worker_pid == MyProcPid)
	{
		queue_shared->worker_running = false;
		queue_shared->worker_pid = 0;
		queue_shared->worker_procno = -1;
	}
	SpinLockRelease(&queue_shared->mutex);
}

/*
 * Whether the database exists, read as the autovacuum launcher reads
 * pg_database: a heap scan, since a backend without a database cannot use
 * the catalog indexes.
 */
static bool
database_exists(const char *name)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;
	bool		found = false;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		if (strcmp(NameStr(((Form_pg_database) GETSTRUCT(tuple))->datname), name) == 0)
		{
			found = true;
			break;
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return found;
}

/*
 * Runs once when the server starts: if the served database exists, start
 * the worker, which sends whatever a crash or shutdown left queued.
 */
void
maestro_launcher_main(Datum arg)
{
	bool		exists;

	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	exists = database_exists(maestro_database_name);

	if (!exists)
	{
		ereport(LOG,
				(errmsg("maestro.database_name \"%s\" does not exist; no trigger queue is served",
						maestro_database_name)));
		proc_exit(0);
	}
	maestro_queue_wake();
	proc_exit(0);
}
