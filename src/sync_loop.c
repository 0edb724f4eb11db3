/*-------------------------------------------------------------------------
 *
 * sync_loop.c
 *		maestro.sync_interval: the worker runs maestro_sync() every so
 *		often, as the mirror's owner, with that role's user mapping.
 *
 * The sync runs in a subtransaction of its own, so that a failed sync
 * (Maestro down, a 429, a shutdown that interrupted it) is logged and
 * tried again at the next interval, and never disturbs the queue. Its
 * HTTP calls are synchronous (http.c); they give up at once when the
 * worker is asked to stop.
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
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

static void
sync_once(void)
{
	MemoryContext caller = CurrentMemoryContext;
	char	   *schema;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "maestro periodic sync");

	schema = maestro_extension_schema_name();
	if (schema != NULL)
	{
		MemoryContext oldcontext = CurrentMemoryContext;
		ResourceOwner oldowner = CurrentResourceOwner;
		Oid			owner;
		bool		isnull;

		SPI_execute(psprintf("SELECT relowner FROM pg_catalog.pg_class"
							 " WHERE oid = '%s.maestro_synced_instances'::pg_catalog.regclass",
							 schema), true, 1);
		owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(oldcontext);
		PG_TRY();
		{
			MaestroRoleSwitch save;

			maestro_become_role(owner, &save);
			SPI_execute(psprintf("SELECT %s.maestro_sync()", schema), false, 0);
			maestro_restore_role(&save);
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcontext);
			CurrentResourceOwner = oldowner;
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			/* the subtransaction's abort gives back the role and settings */
			MemoryContextSwitchTo(caller);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcontext);
			CurrentResourceOwner = oldowner;
			if (!maestro_worker_stopping)
				ereport(WARNING,
						(errmsg("maestro periodic sync failed: %s", edata->message),
						 edata->detail ? errdetail("%s", edata->detail) : 0,
						 errhint("It is tried again in %d ms.", maestro_sync_interval_ms)));
		}
		PG_END_TRY();
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	MemoryContextSwitchTo(caller);
}

/*
 * Run the sync if it is due; returns when the next one is (0: syncing is
 * off). Called once a round by the loop's housekeeping.
 */
TimestampTz
maestro_sync_loop_run(TimestampTz now, TimestampTz next_sync)
{
	if (maestro_sync_interval_ms <= 0)
		return 0;
	if (next_sync != 0 && now < next_sync)
		return next_sync;
	sync_once();
	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), maestro_sync_interval_ms);
}
