/*-------------------------------------------------------------------------
 *
 * queue_sql.c
 *		The worker's side of the queue table: claiming due requests and
 *		recording what became of them, each in one short transaction.
 *
 * A claim takes due rows oldest first, FOR UPDATE SKIP LOCKED, leaving out
 * in SQL the servers that may not be sent to now (pacing.c), and marks
 * them 'sending' in the same transaction: a row is 'sending' before its
 * POST can leave. Recording writes the outcomes of a round, notifies
 * listeners, and puts started instances into the mirror.
 *
 * src/queue_sql.c
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

/* the statements, prepared once per installation of the extension */
static Oid	plans_extension = InvalidOid;
static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr mark_plan = NULL;
static SPIPlanPtr due_plan = NULL;
static SPIPlanPtr record_plan = NULL;
static SPIPlanPtr mirror_plan = NULL;
static SPIPlanPtr unclaim_plan = NULL;

static MemoryContext
begin_work(const char *activity)
{
	MemoryContext caller = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
	return caller;
}

static void
end_work(MemoryContext back_to)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	MemoryContextSwitchTo(back_to);
}

static SPIPlanPtr
prepare(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);

	if (plan == NULL)
		elog(ERROR, "could not prepare a maestro worker statement: %s",
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

/*
 * Prepare the statements for the installed extension, once; false when
 * the extension is not installed (any more).
 */
static bool
prepare_plans(void)
{
	Oid			extension = get_extension_oid("maestro", true);
	char	   *table;
	char	   *schema;
	Oid			claim_types[3] = {INT4OID, OIDARRAYOID, TIMESTAMPTZOID};
	Oid			oidarray[1] = {OIDARRAYOID};
	Oid			int8array[1] = {INT8ARRAYOID};
	Oid			record_types[9] = {INT8OID, TEXTOID, INT4OID, TEXTOID, UUIDOID, TEXTOID, INT8OID, BOOLOID,
	TIMESTAMPTZOID};
	Oid			mirror_types[4] = {UUIDARRAYOID, UUIDARRAYOID, TEXTARRAYOID, JSONBARRAYOID};
	Oid			unclaim_types[2] = {INT8OID, INT8OID};

	if (!OidIsValid(extension))
		return false;
	if (extension == plans_extension)
		return true;

	if (claim_plan)
	{
		SPI_freeplan(claim_plan);
		SPI_freeplan(mark_plan);
		SPI_freeplan(due_plan);
		SPI_freeplan(record_plan);
		SPI_freeplan(mirror_plan);
		SPI_freeplan(unclaim_plan);
		claim_plan = NULL;
	}
	table = maestro_queue_table();
	schema = maestro_extension_schema_name();
	claim_plan = prepare(psprintf("SELECT id, server_id, requested_by, workflow_id::text,"
								  " inputs::text, instance_name, attempts, verify_before_send,"
								  " sent_at IS NULL OR sent_at < $3"
								  " FROM %s WHERE state = 'queued' AND next_attempt_at <= now()"
								  " AND server_id <> ALL ($2)"
								  " ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED",
								  table), 3, claim_types);
	mark_plan = prepare(psprintf("UPDATE %s SET state = 'sending', attempts = attempts + 1,"
								 " sent_at = now() WHERE id = ANY($1)", table), 1, int8array);
	due_plan = prepare(psprintf("SELECT min(next_attempt_at) FILTER (WHERE server_id <> ALL ($1)),"
								" count(*) FROM %s WHERE state = 'queued'",
								table), 1, oidarray);
	record_plan = prepare(psprintf("UPDATE %s SET state = $2, http_status = $3,"
								   " last_error = $4, instance_id = $5, instance_url = $6,"
								   " next_attempt_at = CASE WHEN $7 IS NULL THEN next_attempt_at"
								   "   ELSE now() + $7 * interval '1 millisecond' END,"
								   " verify_before_send = $8, sent_at = coalesce($9, sent_at),"
								   " done_at = CASE WHEN $2 IN ('done', 'failed') THEN now() END"
								   " WHERE id = $1 AND state = 'sending'"
								   " RETURNING workflow_id, instance_name, inputs", table),
						  9, record_types);

	/* a claimed request that was never sent goes back as it was */
	unclaim_plan = prepare(psprintf("UPDATE %s SET state = 'queued', attempts = attempts - 1,"
									" next_attempt_at = now() + $2 * interval '1 millisecond',"
									" sent_at = CASE WHEN attempts = 1 THEN NULL ELSE sent_at END"
									" WHERE id = $1 AND state = 'sending'", table),
						   2, unclaim_types);

	/*
	 * A started instance goes into the mirror at once, as In Progress (its
	 * first state), with its "new instance" event: the next sync completes
	 * it. No API call is spent on it.
	 */
	mirror_plan = prepare(psprintf("WITH seen AS ("
								   " INSERT INTO %1$s.maestro_synced_instances AS m"
								   "  (workflow_id, id, name, workflow_status, trigger_inputs,"
								   "   started_at, first_seen_at, last_seen_at)"
								   " SELECT w, i, n, 'In Progress', t, now(), now(), now()"
								   " FROM unnest($1, $2, $3, $4) AS u (w, i, n, t)"
								   " ON CONFLICT ON CONSTRAINT maestro_synced_instances_pkey DO NOTHING"
								   " RETURNING m.workflow_id, m.id),"
								   " events AS ("
								   " INSERT INTO %1$s.maestro_instance_events"
								   "  (workflow_id, instance_id, old_status, new_status)"
								   " SELECT workflow_id, id, NULL, 'In Progress' FROM seen"
								   " RETURNING workflow_id, instance_id)"
								   " SELECT workflow_id::text, instance_id::text FROM events",
								   schema),
						  4, mirror_types);
	plans_extension = extension;
	return true;
}

/* One claimed row as a Delivery with a memory context of its own. */
static Delivery *
delivery_from_row(HeapTuple tuple, TupleDesc desc)
{
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "maestro request",
											  ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	Delivery   *d = palloc0(sizeof(Delivery));
	bool		isnull;

	d->cxt = cxt;
	d->id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
	d->server_id = DatumGetObjectId(SPI_getbinval(tuple, desc, 2, &isnull));
	d->workflow_id = SPI_getvalue(tuple, desc, 4);
	d->inputs = SPI_getvalue(tuple, desc, 5);
	d->instance_name = SPI_getvalue(tuple, desc, 6);
	d->attempts = DatumGetInt32(SPI_getbinval(tuple, desc, 7, &isnull)) + 1;
	d->verify = DatumGetBool(SPI_getbinval(tuple, desc, 8, &isnull));
	d->sent_before_start = DatumGetBool(SPI_getbinval(tuple, desc, 9, &isnull));
	d->conn = maestro_connection_for(d->server_id,
									 DatumGetObjectId(SPI_getbinval(tuple, desc, 3, &isnull)),
									 &d->problem);
	MemoryContextSwitchTo(old);
	return d;
}

/*
 * Claim up to limit due requests of the servers that may be sent to, into
 * *claimed (a List of Delivery in the caller's context). With recover,
 * first take over the rows a stopped worker left 'sending'. Sets *more
 * when due requests may have been left behind, and *next_due to when the
 * earliest other queued request falls due (0: none). Returns false when
 * the extension is not (or no longer) installed.
 */
bool
maestro_queue_sql_claim(int limit, bool recover, List **claimed, bool *more,
						TimestampTz *next_due)
{
	MemoryContext caller;
	TimestampTz now = GetCurrentTimestamp();
	Datum		closed;
	Datum		args[3];
	Datum	   *ids;
	int			n_ids = 0;
	uint64		i;

	*claimed = NIL;
	*more = false;
	*next_due = 0;

	caller = begin_work("claiming maestro trigger requests");
	if (!prepare_plans())
	{
		end_work(caller);
		return false;
	}

	if (recover)
	{
		/* only one worker runs: 'sending' rows are a stopped worker's */
		SPI_execute(psprintf("UPDATE %s SET state = 'queued', verify_before_send = true,"
							 " next_attempt_at = now(), last_error = 'the worker stopped while"
							 " sending; the instance is looked up before sending again'"
							 " WHERE state = 'sending'", maestro_queue_table()), false, 0);
		if (SPI_processed > 0)
			ereport(LOG,
					(errmsg("maestro worker found %llu requests that may have been sent before a stop; they are looked up before sending",
							(unsigned long long) SPI_processed)));
	}

	closed = maestro_pacing_closed_servers(now);
	if (limit > 0)
	{
		args[0] = Int32GetDatum(limit);
		args[1] = closed;
		args[2] = TimestampTzGetDatum(MyStartTimestamp);
		SPI_execute_plan(claim_plan, args, NULL, false, 0);
		if (SPI_processed == (uint64) limit)
			*more = true;

		ids = palloc(sizeof(Datum) * Max(SPI_processed, 1));
		for (i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tuple = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			Oid			server_id = DatumGetObjectId(SPI_getbinval(tuple, desc, 2, &isnull));
			Delivery   *d;
			MemoryContext old;

			/* no more of a server's requests than its pacing lets ahead */
			if (!maestro_pacing_may_claim(server_id, now))
				continue;
			d = delivery_from_row(tuple, desc);
			maestro_delivery_add(d);
			old = MemoryContextSwitchTo(caller);
			*claimed = lappend(*claimed, d);
			MemoryContextSwitchTo(old);
			ids[n_ids++] = Int64GetDatum(d->id);
		}

		if (n_ids > 0)
		{
			Datum		values[1];

			values[0] = PointerGetDatum(construct_array(ids, n_ids, INT8OID, 8, true, TYPALIGN_DOUBLE));
			SPI_execute_plan(mark_plan, values, NULL, false, 0);
		}
	}

	if (!*more)
	{
		/* not read-only: it must see the rows just marked as no longer due */
		args[0] = maestro_pacing_closed_servers(now);
		SPI_execute_plan(due_plan, args, NULL, false, 1);
		if (SPI_processed == 1)
		{
			bool		isnull;
			Datum		due = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				*next_due = DatumGetTimestampTz(due);
			maestro_stats_worker(0, 0, 0, 0,
								 DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
															 SPI_tuptable->tupdesc, 2, &isnull)));
		}
	}
	end_work(caller);
	return true;
}

/* Write the outcomes of one round, and tell listeners. */
void
maestro_queue_sql_record(List *outcomes)
{
	ListCell   *cell;
	Datum	   *mirror[4];
	int			started = 0;
	int			k;
	MemoryContext caller;

	if (outcomes == NIL)
		return;
	for (k = 0; k < 4; k++)
		mirror[k] = palloc(sizeof(Datum) * list_length(outcomes));

	caller = begin_work("recording maestro trigger outcomes");
	if (!prepare_plans())
	{
		/* dropped while requests were in flight: nothing to record into */
		end_work(caller);
		return;
	}

	foreach(cell, outcomes)
	{
		Outcome    *o = (Outcome *) lfirst(cell);
		Datum		values[9];
		char		nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};

		if (o->unclaim)
		{
			values[0] = Int64GetDatum(o->id);
			values[1] = Int64GetDatum(Max(o->retry_in_ms, 0));
			SPI_execute_plan(unclaim_plan, values, NULL, false, 0);
			continue;
		}
		values[0] = Int64GetDatum(o->id);
		values[1] = CStringGetTextDatum(o->state);
		values[2] = Int32GetDatum(o->http_status);
		if (o->http_status == 0)
			nulls[2] = 'n';
		if (o->error)
			values[3] = CStringGetTextDatum(o->error);
		else
			nulls[3] = 'n';
		if (o->instance_id)
			values[4] = DirectFunctionCall1(uuid_in, CStringGetDatum(o->instance_id));
		else
			nulls[4] = 'n';
		if (o->instance_url)
			values[5] = CStringGetTextDatum(o->instance_url);
		else
			nulls[5] = 'n';
		values[6] = Int64GetDatum(o->retry_in_ms);
		if (strcmp(o->state, "queued") != 0)
			nulls[6] = 'n';
		values[7] = BoolGetDatum(o->verify);
		values[8] = TimestampTzGetDatum(o->sent_at);
		if (o->sent_at == 0)
			nulls[8] = 'n';

		SPI_execute_plan(record_plan, values, nulls, false, 0);
		if (SPI_processed == 1 && strcmp(o->state, "queued") != 0)
			Async_Notify("maestro_trigger", psprintf("%lld %s", (long long) o->id, o->state));
		if (SPI_processed == 1 && strcmp(o->state, "done") == 0 && o->instance_id)
		{
			HeapTuple	row = SPI_tuptable->vals[0];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;

			mirror[0][started] = SPI_getbinval(row, desc, 1, &isnull);
			mirror[1][started] = values[4];
			mirror[2][started] = SPI_getbinval(row, desc, 2, &isnull);
			mirror[3][started] = SPI_getbinval(row, desc, 3, &isnull);
			started++;
		}
		maestro_stats_worker(0, strcmp(o->state, "done") == 0, strcmp(o->state, "failed") == 0,
							 strcmp(o->state, "queued") == 0, -1);
	}

	/*
	 * Started instances go into the mirror at once, as In Progress (their
	 * first state), each with its "new instance" event: the next sync
	 * completes them. No API call is spent on it. The start was announced
	 * on channel maestro_trigger already; a second notification on
	 * maestro_instance would cost the worker an eighth of its throughput.
	 */
	if (started > 0)
	{
		Oid			elem_types[4] = {UUIDOID, UUIDOID, TEXTOID, JSONBOID};
		Datum		arrays[4];

		for (k = 0; k < 4; k++)
		{
			int16		typlen;
			bool		typbyval;
			char		typalign;

			get_typlenbyvalalign(elem_types[k], &typlen, &typbyval, &typalign);
			arrays[k] = PointerGetDatum(construct_array(mirror[k], started, elem_types[k],
														typlen, typbyval, typalign));
		}
		SPI_execute_plan(mirror_plan, arrays, NULL, false, 0);
	}
	end_work(caller);
}
