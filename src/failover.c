/*-------------------------------------------------------------------------
 *
 * failover.c
 *		After a promotion, no unfinished request is sent without first
 *		asking Maestro whether it already exists.
 *
 * The queue's exactly-once rests on one fact: a request is marked
 * 'sending' in a committed transaction before its POST leaves. With
 * asynchronous replication a standby may be promoted without the last
 * commits of the old primary, so rows the old primary marked 'sending'
 * (and sent) arrive on the new primary as 'queued': sent again, they would
 * start their workflow twice.
 *
 * So the worker remembers the WAL timeline it last worked the queue on
 * (maestro_worker_state). Every promotion (and every point-in-time
 * recovery) starts a new timeline. When the worker starts on a timeline
 * other than the recorded one, every request that is not done or failed
 * may have been sent: for each workflow with such requests it lists the
 * workflow's instances once (not once per request) and looks for each
 * request's tagged instance name. Found, the request is done, with that
 * instance; not found, it is queued to be sent. When a workflow's list
 * cannot be had (Maestro down, the user mapping gone), its requests keep
 * verify_before_send, and the worker looks each one up before sending it.
 * All of that, and the new timeline, is written in one transaction, so a
 * crash half-way does it again from the start.
 *
 * The first start with this table (a fresh install, or an update from
 * 0.1) records the timeline and changes nothing.
 *
 * src/failover.c
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/lwlock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

/* The unfinished requests of one workflow of one server. */
typedef struct WorkflowGroup
{
	Oid			server_id;
	char	   *workflow_id;
	MaestroConnection *conn;	/* NULL: problem says why */
	char	   *problem;
	bool		listed;			/* the instance list was had */
	int			n;				/* instances listed */
	Datum	   *names;
	Datum	   *ids;
} WorkflowGroup;

/*
 * The recorded timeline, read under a row lock; 0 when none is recorded,
 * -1 when the table does not exist (the SQL objects are still 0.1's).
 */
static int64
recorded_timeline(const char *schema)
{
	bool		isnull;
	Datum		reg;

	SPI_execute(psprintf("SELECT pg_catalog.to_regclass(%s)",
						 quote_literal_cstr(psprintf("%s.maestro_worker_state", schema))),
				true, 1);
	reg = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull || !OidIsValid(DatumGetObjectId(reg)))
		return -1;
	maestro_queue_run_as_owner(psprintf("SELECT timeline FROM %s.maestro_worker_state FOR UPDATE", schema),
							   0, NULL, NULL, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return 0;
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

static void
record_timeline(const char *schema, TimeLineID tli)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum((int64) tli)};

	maestro_queue_run_as_owner(psprintf("INSERT INTO %s.maestro_worker_state AS s (timeline) VALUES ($1)"
										" ON CONFLICT (singleton) DO UPDATE SET timeline = $1, changed_at = now()",
										schema),
							   1, types, values, NULL, SPI_OK_INSERT);
}

/*
 * The workflows with unfinished requests, each with the connection of one
 * of its requesters (the list is the account's, whoever asks), in cxt.
 */
static List *
unfinished_groups(const char *schema, MemoryContext cxt)
{
	List	   *groups = NIL;
	uint64		i;

	maestro_queue_run_as_owner(psprintf("SELECT server_id, workflow_id::text, min(requested_by::oid)"
										" FROM %s.maestro_trigger_requests"
										" WHERE state IN ('queued', 'sending') GROUP BY 1, 2",
										schema),
							   0, NULL, NULL, NULL, SPI_OK_SELECT);
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		MemoryContext old = MemoryContextSwitchTo(cxt);
		WorkflowGroup	   *g = palloc0(sizeof(WorkflowGroup));

		g->server_id = DatumGetObjectId(SPI_getbinval(tuple, desc, 1, &isnull));
		g->workflow_id = SPI_getvalue(tuple, desc, 2);
		g->conn = maestro_connection_for(g->server_id,
										 DatumGetObjectId(SPI_getbinval(tuple, desc, 3, &isnull)),
										 &g->problem);
		groups = lappend(groups, g);
		MemoryContextSwitchTo(old);
	}
	return groups;
}

/*
 * List the workflow's instances (outside any transaction, as the worker's
 * other look-ups do); on failure log why and leave g->listed false.
 */
static void
list_instances(WorkflowGroup *g, MemoryContext cxt)
{
	/* the parsed list (palloc'd, json.c) lives only as long as this call */
	MemoryContext call_cxt = AllocSetContextCreate(cxt, "maestro failover list",
												   ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(call_cxt);

	if (g->conn == NULL)
	{
		ereport(WARNING,
				(errmsg("maestro worker cannot look up the requests of workflow %s after a failover: %s",
						g->workflow_id, g->problem)));
		MemoryContextSwitchTo(old);
		MemoryContextDelete(call_cxt);
		return;
	}
	pgstat_report_activity(STATE_RUNNING, "listing maestro instances after a failover");
	PG_TRY();
	{
		cJSON	   *root = maestro_get_instances(g->conn, g->workflow_id);
		const cJSON *list = maestro_json_list(root, "instances");
		const cJSON *inst;
		int			size = cJSON_GetArraySize(list);

		g->names = MemoryContextAlloc(cxt, sizeof(Datum) * Max(size, 1));
		g->ids = MemoryContextAlloc(cxt, sizeof(Datum) * Max(size, 1));
		cJSON_ArrayForEach(inst, list)
		{
			const cJSON *name = maestro_json_member(inst, "name");
			const cJSON *id = maestro_json_member(inst, "id");

			if (g->n < size && cJSON_IsString(name) && cJSON_IsString(id) &&
				maestro_is_uuid(id->valuestring))
			{
				MemoryContextSwitchTo(cxt);
				g->names[g->n] = CStringGetTextDatum(name->valuestring);
				g->ids[g->n] = CStringGetTextDatum(id->valuestring);
				MemoryContextSwitchTo(call_cxt);
				g->n++;
			}
		}
		g->listed = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* outside a transaction: release what the failed call may hold */
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		LWLockReleaseAll();
		ConditionVariableCancelSleep();
		ereport(WARNING,
				(errmsg("maestro worker could not list the instances of workflow %s after a failover: %s",
						g->workflow_id, edata->message),
				 errdetail("Its unfinished requests are looked up one by one before they are sent.")));
		g->n = 0;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	MemoryContextDelete(call_cxt);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Settle one workflow's unfinished requests by its instance list, or mark
 * them to be looked up one by one. Adds to *found and *queued.
 */
static void
settle(const char *schema, WorkflowGroup *g, uint64 *found, uint64 *queued)
{
	char	   *table = psprintf("%s.maestro_trigger_requests", schema);
	Oid			types[4] = {OIDOID, TEXTOID, TEXTARRAYOID, TEXTARRAYOID};
	Datum		values[4];
	uint64		i;

	values[0] = ObjectIdGetDatum(g->server_id);
	values[1] = CStringGetTextDatum(g->workflow_id);

	if (g->listed && g->n > 0)
	{
		values[2] = PointerGetDatum(construct_array(g->names, g->n, TEXTOID, -1, false, TYPALIGN_INT));
		values[3] = PointerGetDatum(construct_array(g->ids, g->n, TEXTOID, -1, false, TYPALIGN_INT));
		maestro_queue_run_as_owner(psprintf("UPDATE %s AS q SET state = 'done', instance_id = f.id::uuid,"
											" http_status = NULL, verify_before_send = false, done_at = now(),"
											" last_error = 'found by its name after a failover (the server is on a new"
											" timeline); Maestro gives the instance_url only at trigger time'"
											" FROM unnest($3, $4) AS f (name, id)"
											" WHERE q.server_id = $1 AND q.workflow_id = $2::uuid"
											" AND q.state IN ('queued', 'sending') AND q.instance_name = f.name"
											" RETURNING q.id", table),
								   4, types, values, NULL, SPI_OK_UPDATE_RETURNING);
		for (i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
														 SPI_tuptable->tupdesc, 1, &isnull));

			Async_Notify("maestro_trigger", psprintf("%lld done", (long long) id));
		}
		*found += SPI_processed;
	}

	/*
	 * The rest: not in the list, so never started; or the list could not be
	 * had, so each is looked up before it is sent. A 'sending' row is the
	 * old primary's: it is due now.
	 */
	types[2] = BOOLOID;
	types[3] = TEXTOID;
	values[2] = BoolGetDatum(!g->listed);
	values[3] = CStringGetTextDatum(g->listed
									? "not found by its name after a failover (the server is on a new timeline); sent again"
									: "the server is on a new timeline (a failover): the instance is looked up before sending again");
	maestro_queue_run_as_owner(psprintf("UPDATE %s SET state = 'queued', verify_before_send = $3,"
										" next_attempt_at = CASE WHEN state = 'sending' THEN now() ELSE next_attempt_at END,"
										" last_error = CASE WHEN state = 'sending' OR attempts > 0 THEN $4 ELSE last_error END"
										" WHERE server_id = $1 AND workflow_id = $2::uuid AND state IN ('queued', 'sending')",
										table),
							   4, types, values, NULL, SPI_OK_UPDATE);
	*queued += SPI_processed;
}

/*
 * Called once when the worker starts, before it claims anything: compare
 * the timeline with the recorded one, and after a change settle every
 * unfinished request as above. An error here (other than a failed list,
 * which is handled) ends the worker, which is restarted and checks again:
 * it must not send anything before the check has been made.
 */
void
maestro_failover_check(void)
{
	MemoryContext caller;
	MemoryContext cxt;
	TimeLineID	tli;
	char	   *schema;
	int64		recorded;
	List	   *groups;
	ListCell   *cell;
	uint64		found = 0;
	uint64		queued = 0;

	/* the worker starts only after recovery; the timeline is final then */
	if (RecoveryInProgress())
		return;
	tli = GetWALInsertionTimeLine();

	cxt = AllocSetContextCreate(TopMemoryContext, "maestro failover check", ALLOCSET_DEFAULT_SIZES);

	caller = maestro_worker_begin("checking the maestro queue's timeline");
	schema = maestro_extension_schema_name();
	recorded = schema ? recorded_timeline(schema) : -1;
	if (recorded == 0)
		record_timeline(schema, tli);
	if (recorded <= 0 || recorded == (int64) tli)
	{
		maestro_worker_commit(caller);
		MemoryContextDelete(cxt);
		return;
	}
	schema = MemoryContextStrdup(cxt, schema);
	groups = unfinished_groups(schema, cxt);
	maestro_worker_commit(caller);

	/* the network calls, outside any transaction */
	foreach(cell, groups)
		list_instances((WorkflowGroup *) lfirst(cell), cxt);

	caller = maestro_worker_begin("settling maestro requests after a failover");
	recorded = recorded_timeline(schema);
	if (recorded > 0 && recorded != (int64) tli)
	{
		foreach(cell, groups)
			settle(schema, (WorkflowGroup *) lfirst(cell), &found, &queued);
		record_timeline(schema, tli);
		ereport(LOG,
				(errmsg("maestro worker: the server is on timeline %u, the queue was last worked on timeline %lld",
						tli, (long long) recorded),
				 errdetail("Of the requests that were not done or failed, %llu were found in Maestro by their instance names and are done, %llu are queued (each looked up before sending where its workflow's instances could not be listed).",
						   (unsigned long long) found, (unsigned long long) queued)));
	}
	maestro_worker_commit(caller);
	MemoryContextDelete(cxt);
}
