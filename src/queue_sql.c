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
 * The worker's database work is per batch, not per request: outcomes are
 * written by one statement (an UPDATE from arrays that also fills the
 * mirror), in the transaction of the next claim (worker.c decides when),
 * so a steady backlog costs one commit per batch. That commit is
 * synchronous because of the claim in it.
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

/* the arrays record_plan takes, one per column of an outcome */
#define RECORD_COLUMNS 9

/* the statements, prepared once per installation of the extension */
static Oid	plans_extension = InvalidOid;
static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr mark_plan = NULL;
static SPIPlanPtr due_plan = NULL;
static SPIPlanPtr record_plan = NULL;
static SPIPlanPtr unclaim_plan = NULL;

/*
 * generic: planned once, whatever the arguments. For the statements whose
 * best plan does not depend on them (a look-up by id, an UPDATE from
 * arrays): left to choose, the plan cache may plan them anew on every
 * execution, which costs more than running them.
 */
static SPIPlanPtr
prepare(const char *sql, int nargs, Oid *types, bool generic)
{
	SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, types,
										  generic ? CURSOR_OPT_GENERIC_PLAN : 0);

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
	Oid			record_types[RECORD_COLUMNS] = {INT8ARRAYOID, TEXTARRAYOID, INT4ARRAYOID,
		TEXTARRAYOID, UUIDARRAYOID, TEXTARRAYOID, INT8ARRAYOID, BOOLARRAYOID,
	TIMESTAMPTZARRAYOID};
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
								  table), 3, claim_types, false);
	mark_plan = prepare(psprintf("UPDATE %s SET state = 'sending', attempts = attempts + 1,"
								 " sent_at = now() WHERE id = ANY($1)", table), 1, int8array, true);
	due_plan = prepare(psprintf("SELECT min(next_attempt_at) FILTER (WHERE server_id <> ALL ($1)),"
								" count(*) FROM %s WHERE state = 'queued'",
								table), 1, oidarray, false);

	/*
	 * A round's outcomes, one array per column; only rows still 'sending'
	 * are written. A started instance goes into the mirror at once, as In
	 * Progress (its first state), with its "new instance" event: the next
	 * sync completes it. No API call is spent on it. The start is
	 * announced on channel maestro_trigger; a second notification on
	 * maestro_instance would cost the worker an eighth of its throughput.
	 * It returns the ids whose final outcome was written, to notify.
	 */
	record_plan = prepare(psprintf("WITH o AS ("
								   " SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9)"
								   "  AS o (id, state, http_status, error, instance_id, instance_url,"
								   "        retry_ms, verify, sent_at)),"
								   " r AS ("
								   " UPDATE %2$s AS q SET state = o.state, http_status = o.http_status,"
								   "  last_error = o.error, instance_id = o.instance_id,"
								   "  instance_url = o.instance_url,"
								   "  next_attempt_at = CASE WHEN o.retry_ms IS NULL THEN q.next_attempt_at"
								   "   ELSE now() + o.retry_ms * interval '1 millisecond' END,"
								   "  verify_before_send = o.verify, sent_at = coalesce(o.sent_at, q.sent_at),"
								   "  done_at = CASE WHEN o.state IN ('done', 'failed') THEN now() END"
								   " FROM o WHERE q.id = o.id AND q.state = 'sending'"
								   " RETURNING q.id, q.state, q.workflow_id, q.instance_id,"
								   "  q.instance_name, q.inputs),"
								   " seen AS ("
								   " INSERT INTO %1$s.maestro_synced_instances AS m"
								   "  (workflow_id, id, name, workflow_status, trigger_inputs,"
								   "   started_at, first_seen_at, last_seen_at)"
								   " SELECT workflow_id, instance_id, instance_name, 'In Progress', inputs,"
								   "  now(), now(), now()"
								   " FROM r WHERE state = 'done' AND instance_id IS NOT NULL"
								   " ON CONFLICT ON CONSTRAINT maestro_synced_instances_pkey DO NOTHING"
								   " RETURNING m.workflow_id, m.id),"
								   " events AS ("
								   " INSERT INTO %1$s.maestro_instance_events"
								   "  (workflow_id, instance_id, old_status, new_status)"
								   " SELECT workflow_id, id, NULL, 'In Progress' FROM seen)"
								   " SELECT id FROM r WHERE state <> 'queued'",
								   schema, table),
						  RECORD_COLUMNS, record_types, true);

	/* a claimed request that was never sent goes back as it was */
	unclaim_plan = prepare(psprintf("UPDATE %s SET state = 'queued', attempts = attempts - 1,"
									" next_attempt_at = now() + $2 * interval '1 millisecond',"
									" sent_at = CASE WHEN attempts = 1 THEN NULL ELSE sent_at END"
									" WHERE id = $1 AND state = 'sending'", table),
						   2, unclaim_types, true);

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

/* An array of n values of type elemtype; nulls may be NULL (none null). */
static Datum
make_array(Datum *values, bool *nulls, int n, Oid elemtype)
{
	int			dims[1] = {n};
	int			lbs[1] = {1};
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs, elemtype,
											  typlen, typbyval, typalign));
}

static int
compare_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * Write the outcomes of a round, in the open transaction: the rare
 * unclaims one by one, everything else in one statement. Listeners are
 * told of each final outcome written, in the order of outcomes.
 */
static void
record_outcomes(List *outcomes)
{
	static const Oid elem_types[RECORD_COLUMNS] = {INT8OID, TEXTOID, INT4OID, TEXTOID, UUIDOID,
	TEXTOID, INT8OID, BOOLOID, TIMESTAMPTZOID};
	int			cap = list_length(outcomes);
	Datum	   *values[RECORD_COLUMNS];
	bool	   *nulls[RECORD_COLUMNS];
	Datum		args[RECORD_COLUMNS];
	int64	   *written;
	int			n_written = 0;
	int			n = 0;
	int			k;
	ListCell   *cell;

	for (k = 0; k < RECORD_COLUMNS; k++)
	{
		values[k] = palloc(sizeof(Datum) * cap);
		nulls[k] = palloc0(sizeof(bool) * cap);
	}

	foreach(cell, outcomes)
	{
		Outcome    *o = (Outcome *) lfirst(cell);

		if (o->unclaim)
		{
			Datum		unclaim[2];

			unclaim[0] = Int64GetDatum(o->id);
			unclaim[1] = Int64GetDatum(Max(o->retry_in_ms, 0));
			SPI_execute_plan(unclaim_plan, unclaim, NULL, false, 0);
			continue;
		}
		values[0][n] = Int64GetDatum(o->id);
		values[1][n] = CStringGetTextDatum(o->state);
		values[2][n] = Int32GetDatum(o->http_status);
		nulls[2][n] = o->http_status == 0;
		if (o->error)
			values[3][n] = CStringGetTextDatum(o->error);
		nulls[3][n] = o->error == NULL;
		if (o->instance_id)
			values[4][n] = DirectFunctionCall1(uuid_in, CStringGetDatum(o->instance_id));
		nulls[4][n] = o->instance_id == NULL;
		if (o->instance_url)
			values[5][n] = CStringGetTextDatum(o->instance_url);
		nulls[5][n] = o->instance_url == NULL;
		values[6][n] = Int64GetDatum(o->retry_in_ms);
		nulls[6][n] = strcmp(o->state, "queued") != 0;
		values[7][n] = BoolGetDatum(o->verify);
		values[8][n] = TimestampTzGetDatum(o->sent_at);
		nulls[8][n] = o->sent_at == 0;
		n++;
	}
	if (n == 0)
		return;

	for (k = 0; k < RECORD_COLUMNS; k++)
		args[k] = make_array(values[k], nulls[k], n, elem_types[k]);
	SPI_execute_plan(record_plan, args, NULL, false, 0);

	written = palloc(sizeof(int64) * Max(SPI_processed, 1));
	for (n_written = 0; n_written < (int) SPI_processed; n_written++)
	{
		bool		isnull;

		written[n_written] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[n_written],
														 SPI_tuptable->tupdesc, 1, &isnull));
	}
	qsort(written, n_written, sizeof(int64), compare_int64);
	foreach(cell, outcomes)
	{
		Outcome    *o = (Outcome *) lfirst(cell);

		if (!o->unclaim && strcmp(o->state, "queued") != 0 &&
			bsearch(&o->id, written, n_written, sizeof(int64), compare_int64) != NULL)
			Async_Notify("maestro_trigger", psprintf("%lld %s", (long long) o->id, o->state));
	}
}

/*
 * Count committed outcomes in the API statistics, once per batch: the
 * counters take an exclusive lock.
 */
static void
count_outcomes(List *outcomes)
{
	int			done = 0;
	int			failed = 0;
	int			retried = 0;
	ListCell   *cell;

	foreach(cell, outcomes)
	{
		Outcome    *o = (Outcome *) lfirst(cell);

		if (o->unclaim)
			continue;
		done += strcmp(o->state, "done") == 0;
		failed += strcmp(o->state, "failed") == 0;
		retried += strcmp(o->state, "queued") == 0;
	}
	if (done + failed + retried > 0)
		maestro_stats_worker(0, done, failed, retried, -1);
}

/*
 * Claim up to limit due requests of the servers that may be sent to, in
 * the open transaction; see maestro_queue_sql_claim.
 */
static void
claim_due(int limit, bool recover, MemoryContext caller, List **claimed,
		  bool *more, TimestampTz *next_due)
{
	TimestampTz now = GetCurrentTimestamp();
	Datum		closed;
	Datum		args[3];
	Datum	   *ids;
	int			n_ids = 0;
	uint64		i;

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
}

/*
 * With outcomes (a round's, possibly NIL) written first, in the same
 * transaction: claim up to limit due requests of the servers that may be
 * sent to, into *claimed (a List of Delivery in the caller's context).
 * With recover, first take over the rows a stopped worker left 'sending'.
 * Sets *more when due requests may have been left behind, and *next_due
 * to when the earliest other queued request falls due (0: none). Returns
 * false when the extension is not (or no longer) installed; the outcomes
 * then have nothing to be written into.
 *
 * Outcomes written survive a claim that fails: the transaction is rolled
 * back, the outcomes are written again in one of their own, and the error
 * is raised again (the worker recovers as from any error, dropping what
 * it had claimed). Lost with the claim, they would leave their rows
 * 'sending', to be looked up before being sent again: a 'done' row would
 * lose its instance_url, a final 4xx would be sent again, a retry could
 * leave before its back-off. (Not a subtransaction around the claim: it
 * would take a transaction id of its own for every claim.) An error in
 * writing the outcomes themselves (a constraint a user added, say) still
 * takes them with it: they are not tried again, or one bad outcome would
 * fail every claim.
 */
bool
maestro_queue_sql_claim(List *outcomes, int limit, bool recover, List **claimed,
						bool *more, TimestampTz *next_due)
{
	MemoryContext caller;
	ErrorData  *volatile claim_error = NULL;

	*claimed = NIL;
	*more = false;
	*next_due = 0;

	caller = maestro_worker_begin("claiming maestro trigger requests");
	if (!prepare_plans())
	{
		maestro_worker_commit(caller);
		return false;
	}

	/* before a recovery, which would take the rows these outcomes are for */
	if (outcomes == NIL)
	{
		claim_due(limit, recover, caller, claimed, more, next_due);
		maestro_worker_commit(caller);
		return true;
	}
	record_outcomes(outcomes);

	PG_TRY();
	{
		maestro_fault_point("claim_after_record");
		claim_due(limit, recover, caller, claimed, more, next_due);
	}
	PG_CATCH();
	{
		/* rolls the transaction back, and releases what the error held */
		claim_error = maestro_worker_caught_edata(caller);
	}
	PG_END_TRY();

	if (claim_error != NULL)
	{
		ErrorData  *volatile record_error = NULL;

		PG_TRY();
		{
			maestro_queue_sql_record(outcomes);
		}
		PG_CATCH();
		{
			record_error = maestro_worker_caught_edata(caller);
		}
		PG_END_TRY();
		/* the claim's error is raised either way; this one is only logged */
		if (record_error != NULL)
			ereport(LOG,
					(errmsg("maestro worker could not write a round's outcomes after a failed claim: %s",
							record_error->message)));
		ReThrowError(claim_error);
	}
	maestro_worker_commit(caller);
	count_outcomes(outcomes);
	return true;
}

/* Write the outcomes of a round in a transaction of their own. */
void
maestro_queue_sql_record(List *outcomes)
{
	MemoryContext caller;
	bool		recorded;

	if (outcomes == NIL)
		return;
	caller = maestro_worker_begin("recording maestro trigger outcomes");
	/* dropped while requests were in flight: nothing to record into */
	recorded = prepare_plans();
	if (recorded)
		record_outcomes(outcomes);
	maestro_worker_commit(caller);
	if (recorded)
		count_outcomes(outcomes);
}
