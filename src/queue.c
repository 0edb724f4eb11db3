/*-------------------------------------------------------------------------
 *
 * queue.c
 *		The durable trigger queue as backends see it: enqueueing in the
 *		caller's transaction, retrying a failed request, and waking (or
 *		starting) the worker once the enqueueing transaction commits.
 *
 * A request is a row of maestro_trigger_requests, written in the caller's
 * transaction, so a rollback takes it back and a commit makes it durable.
 * Nothing is sent from here: a transaction callback wakes the worker at
 * commit, and only then, which is what keeps a rolled-back insert from
 * ever starting a workflow.
 *
 * The worker's life cycle (starting it, waking it) is launcher.c's; the
 * worker's own SQL on the queue is queue_sql.c's.
 *
 * src/queue.c
 *
 *-------------------------------------------------------------------------
 */
#include "maestro.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "common/pg_prng.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteHandler.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(maestro_trigger_async);
PG_FUNCTION_INFO_V1(maestro_retry);
PG_FUNCTION_INFO_V1(maestro_wake);

/* set when this transaction queued work; the commit callback acts on it */
static bool wake_at_commit = false;

static void
queue_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_at_commit)
				maestro_queue_wake();
			wake_at_commit = false;
			break;
		case XACT_EVENT_PREPARE:
			if (wake_at_commit)
				ereport(NOTICE,
						(errmsg("maestro requests queued in a prepared transaction are sent after SELECT maestro_wake()"),
						 errhint("Run SELECT maestro_wake() after COMMIT PREPARED.")));
			wake_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_at_commit = false;
			break;
		default:
			break;
	}
}

static void
wake_worker_at_commit(void)
{
	static bool registered = false;

	if (!registered)
	{
		RegisterXactCallback(queue_xact_callback, NULL);
		registered = true;
	}
	wake_at_commit = true;
}

/* The schema maestro is installed in, or InvalidOid when it is not here. */
static Oid
extension_schema(void)
{
	Oid			schema;

	return maestro_extension_row(NULL, &schema, NULL) ? schema : InvalidOid;
}

/* The extension's schema, quoted for SPI statements; NULL if absent. */
char *
maestro_extension_schema_name(void)
{
	Oid			schema = extension_schema();

	return OidIsValid(schema) ? pstrdup(quote_identifier(get_namespace_name(schema))) : NULL;
}

/* The queue table, schema-qualified, for SPI statements; NULL if absent. */
char *
maestro_queue_table(void)
{
	Oid			schema = extension_schema();

	if (!OidIsValid(schema))
		return NULL;
	return psprintf("%s.maestro_trigger_requests",
					quote_identifier(get_namespace_name(schema)));
}

/*
 * The owner of one of the extension's tables (the queue, the mirror): the
 * role its work runs as.
 */
Oid
maestro_extension_table_owner(const char *relname)
{
	Oid			relid = get_relname_relid(relname, extension_schema());
	HeapTuple	tuple;
	Oid			owner;

	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the maestro table %s is missing", relname),
				 errhint("Run DROP EXTENSION maestro; CREATE EXTENSION maestro;")));
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}

/*
 * The queue is written as the extension's owner, so that roles need no
 * privilege on it beyond reading their own rows; what a role may queue is
 * decided by the checks in the callers, not by table privileges.
 *
 * Running as another role is done as PostgreSQL does it for its own
 * security-restricted operations: with search_path pinned to pg_catalog,
 * so that no function or operator the caller planted in a schema of its
 * search_path can run with that role's rights. This is the one recipe for
 * it; the worker's periodic sync uses it too.
 */
void
maestro_become_role(Oid role, MaestroRoleSwitch *save)
{
	GetUserIdAndSecContext(&save->userid, &save->sec_context);
	SetUserIdAndSecContext(role, save->sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	save->nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

/*
 * Back to the role before maestro_become_role(). An error in between needs
 * no call: aborting the (sub)transaction restores both the role and the
 * settings.
 */
void
maestro_restore_role(MaestroRoleSwitch *save)
{
	AtEOXact_GUC(false, save->nestlevel);
	SetUserIdAndSecContext(save->userid, save->sec_context);
}

static void
run_as_queue_owner(const char *sql, int nargs, Oid *types, Datum *values,
				   const char *nulls, int expected)
{
	MaestroRoleSwitch save;
	int			rc;

	maestro_become_role(maestro_extension_table_owner("maestro_trigger_requests"), &save);
	rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);
	if (rc != expected)
		elog(ERROR, "maestro queue statement failed: %s", SPI_result_code_string(rc));
	maestro_restore_role(&save);
}

/*
 * The same recipe for the worker's own upkeep of the extension's tables
 * (retention.c, failover.c): as their owner, search_path pinned.
 */
void
maestro_queue_run_as_owner(const char *sql, int nargs, Oid *types, Datum *values,
						   const char *nulls, int expected)
{
	run_as_queue_owner(sql, nargs, types, values, nulls, expected);
}

/*
 * The enqueue: one row written straight into the queue table, as logical
 * replication's apply worker writes one (ExecSimpleRelationInsert: the
 * table's constraints, index entries and row triggers, as an INSERT has
 * them), without a statement. A prepared INSERT run through SPI cost 87,000
 * instructions a row, most of it starting an executor and planning the
 * partial indexes' predicates again for one row; this costs about half of
 * that (callgrind: 108,900 -> 66,400 instructions a queued row). What a row
 * needs is looked up once per backend: the table, its sequence and owner,
 * where the six given values go, and the defaults of the other columns,
 * planned and compiled once and evaluated per row, so that a default an
 * update of the extension changes is the one used. The row is written as
 * the table's owner with search_path pinned (a trigger someone adds to the
 * table runs so). A relcache invalidation of the table (DROP EXTENSION, a
 * new owner, a changed column or default) or a full reset forgets what was
 * looked up.
 */
#define ENQUEUE_GIVEN 6

typedef struct EnqueueTarget
{
	bool		valid;
	Oid			table;
	Oid			sequence;
	Oid			owner;
	MemoryContext cxt;			/* the defaults below */
	AttrNumber	given[ENQUEUE_GIVEN];	/* id, server_id, requested_by,
										 * workflow_id, inputs, instance_name */
	int			ndefaults;
	AttrNumber *default_attnums;
	ExprState **defaults;		/* planned and compiled once */
} EnqueueTarget;

static EnqueueTarget enqueue_target;

static void
enqueue_target_invalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == enqueue_target.table)
		enqueue_target.valid = false;
}

static void
enqueue_target_prepare(void)
{
	static bool callback_registered = false;
	static const char *const given_names[ENQUEUE_GIVEN] = {
		"id", "server_id", "requested_by", "workflow_id", "inputs", "instance_name"
	};
	static const Oid given_types[ENQUEUE_GIVEN] = {
		INT8OID, OIDOID, REGROLEOID, UUIDOID, JSONBOID, TEXTOID
	};
	Oid			schema;
	Oid			table;
	List	   *sequences;
	Relation	rel;
	TupleDesc	desc;
	MemoryContext old;

	if (enqueue_target.valid)
		return;
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(enqueue_target_invalidate, (Datum) 0);
		callback_registered = true;
	}
	if (enqueue_target.cxt == NULL)
		enqueue_target.cxt = AllocSetContextCreate(CacheMemoryContext, "maestro enqueue defaults",
												   ALLOCSET_SMALL_SIZES);
	MemoryContextReset(enqueue_target.cxt);
	enqueue_target.table = InvalidOid;
	enqueue_target.ndefaults = 0;

	schema = extension_schema();
	table = OidIsValid(schema) ? get_relname_relid("maestro_trigger_requests", schema) : InvalidOid;
	rel = OidIsValid(table) ? try_relation_open(table, AccessShareLock) : NULL;
	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the maestro queue table is missing"),
				 errhint("Run DROP EXTENSION maestro; CREATE EXTENSION maestro;")));
	sequences = getOwnedSequences(table);
	if (list_length(sequences) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the maestro queue table has no id sequence"),
				 errhint("Run DROP EXTENSION maestro; CREATE EXTENSION maestro;")));
	desc = RelationGetDescr(rel);
	for (int i = 0; i < ENQUEUE_GIVEN; i++)
	{
		AttrNumber	attnum = get_attnum(table, given_names[i]);

		if (attnum <= 0 || TupleDescAttr(desc, attnum - 1)->atttypid != given_types[i])
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the maestro queue table has no column \"%s\" of type %s",
							given_names[i], format_type_be(given_types[i])),
					 errhint("Run ALTER EXTENSION maestro UPDATE, or DROP EXTENSION maestro; CREATE EXTENSION maestro;")));
		enqueue_target.given[i] = attnum;
	}

	old = MemoryContextSwitchTo(enqueue_target.cxt);
	enqueue_target.default_attnums = palloc(desc->natts * sizeof(AttrNumber));
	enqueue_target.defaults = palloc(desc->natts * sizeof(ExprState *));
	for (int attnum = 1; attnum <= desc->natts; attnum++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, attnum - 1);
		bool		given = false;
		Node	   *expr;

		for (int i = 0; i < ENQUEUE_GIVEN; i++)
			given |= enqueue_target.given[i] == attnum;
		if (given || att->attisdropped || att->attgenerated)
			continue;
		expr = build_column_default(rel, attnum);
		if (expr == NULL)
			continue;
		enqueue_target.default_attnums[enqueue_target.ndefaults] = attnum;
		enqueue_target.defaults[enqueue_target.ndefaults] =
			ExecInitExpr(expression_planner((Expr *) expr), NULL);
		enqueue_target.ndefaults++;
	}
	MemoryContextSwitchTo(old);

	enqueue_target.owner = rel->rd_rel->relowner;
	enqueue_target.sequence = linitial_oid(sequences);
	enqueue_target.table = table;
	enqueue_target.valid = true;
	relation_close(rel, AccessShareLock);
}

/* Write one request row; as the table's owner (maestro_become_role). */
static void
enqueue_insert(const Datum *given)
{
	Relation	rel = table_open(enqueue_target.table, RowExclusiveLock);
	EState	   *estate = CreateExecutorState();
	MemoryContext old = MemoryContextSwitchTo(estate->es_query_cxt);
	RangeTblEntry *rte = makeNode(RangeTblEntry);
	ResultRelInfo *result = makeNode(ResultRelInfo);
	ExprContext *econtext = GetPerTupleExprContext(estate);
	TupleTableSlot *slot;
	bool		triggers = rel->trigdesc != NULL;

	rte->rtekind = RTE_RELATION;
	rte->relid = enqueue_target.table;
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	ExecInitRangeTable(estate, list_make1(rte));
	InitResultRelInfo(result, rel, 1, NULL, 0);
	estate->es_output_cid = GetCurrentCommandId(true);
	ExecOpenIndices(result, false);

	/*
	 * The partial indexes' predicates are planned already in the relcache
	 * (RelationGetIndexPredicate): compiled as they are, they skip the
	 * planning ExecInsertIndexTuples would do again for every row, 3,000
	 * instructions each.
	 */
	for (int i = 0; i < result->ri_NumIndices; i++)
	{
		IndexInfo  *index = result->ri_IndexRelationInfo[i];

		if (index->ii_Predicate != NIL && index->ii_PredicateState == NULL)
			index->ii_PredicateState = ExecInitQual(index->ii_Predicate, NULL);
	}

	slot = ExecInitExtraTupleSlot(estate, RelationGetDescr(rel), &TTSOpsVirtual);
	ExecClearTuple(slot);
	memset(slot->tts_isnull, true, slot->tts_tupleDescriptor->natts * sizeof(bool));
	for (int i = 0; i < ENQUEUE_GIVEN; i++)
	{
		slot->tts_values[enqueue_target.given[i] - 1] = given[i];
		slot->tts_isnull[enqueue_target.given[i] - 1] = false;
	}
	for (int i = 0; i < enqueue_target.ndefaults; i++)
	{
		AttrNumber	attnum = enqueue_target.default_attnums[i];

		slot->tts_values[attnum - 1] = ExecEvalExpr(enqueue_target.defaults[i], econtext,
													&slot->tts_isnull[attnum - 1]);
	}
	ExecStoreVirtualTuple(slot);

	if (triggers)
		AfterTriggerBeginQuery();
	ExecSimpleRelationInsert(result, estate, slot);
	if (triggers)
		AfterTriggerEndQuery(estate);

	ExecCloseIndices(result);
	ExecResetTupleTable(estate->es_tupleTable, false);
	MemoryContextSwitchTo(old);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
}

/*
 * The name the instance will carry. Maestro offers no idempotency key, so
 * the name is the key: it ends in the request id and a random tag, and the
 * worker finds an instance by it when it cannot know whether a send
 * reached Maestro. The tag tells apart requests that share an id (a
 * restored backup, another cluster queueing to the same account): it must
 * differ, not be secret, so it comes from a generator seeded once per
 * process from pg_strong_random. Asking OpenSSL for every tag cost 8,500
 * instructions a row, a twelfth of the enqueue. The seed is taken again in
 * a process forked from the one that took it, which would repeat its tags.
 */
static pg_prng_state tag_prng;
static int	tag_prng_pid = 0;

static char *
tagged_instance_name(const char *name, int64 id)
{
	uint32		tag;

	if (tag_prng_pid != MyProcPid)
	{
		uint64		seed;

		if (!pg_strong_random(&seed, sizeof(seed)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate a random tag")));
		pg_prng_seed(&tag_prng, seed);
		tag_prng_pid = MyProcPid;
	}
	tag = pg_prng_uint32(&tag_prng);
	return psprintf("%s [mq %lld-%08x]", name, (long long) id, tag);
}

/* this database's name; a connected database cannot be renamed */
static char *database_name = NULL;

Datum
maestro_trigger_async(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;
	Jsonb	   *inputs;
	char	   *name;
	Oid			server_id;
	int64		id;
	Datum		values[ENQUEUE_GIVEN];
	MaestroRoleSwitch save;

	maestro_check_trigger_args(fcinfo, &inputs, &name);

	if (database_name == NULL)
		database_name = MemoryContextStrdup(TopMemoryContext, get_database_name(MyDatabaseId));
	if (strcmp(database_name, maestro_database_name) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the maestro worker serves database \"%s\", not this one",
						maestro_database_name),
				 errdetail("Requests queued here would never be sent."),
				 errhint("Set maestro.database_name = '%s' in postgresql.conf and restart the server.",
						 database_name)));

	/*
	 * The checks a direct call makes, now rather than at send time. From the
	 * connection cache (options.c): a role, maestro.server, or any change to
	 * what it was resolved from asks again.
	 */
	server_id = maestro_connect()->server_id;

	enqueue_target_prepare();
	maestro_become_role(enqueue_target.owner, &save);
	id = nextval_internal(enqueue_target.sequence, true);
	values[0] = Int64GetDatum(id);
	values[1] = ObjectIdGetDatum(server_id);
	values[2] = ObjectIdGetDatum(save.userid);
	values[3] = PG_GETARG_DATUM(0);
	values[4] = JsonbPGetDatum(inputs);
	values[5] = CStringGetTextDatum(tagged_instance_name(name, id));
	enqueue_insert(values);
	maestro_restore_role(&save);

	if (!maestro_queue_available())
		ereport(WARNING,
				(errmsg("maestro request %lld is queued, but no worker will send it",
						(long long) id),
				 errdetail("maestro is not in shared_preload_libraries."),
				 errhint("Add maestro to shared_preload_libraries and restart; queued requests are sent then.")));
	wake_worker_at_commit();

	PG_RETURN_INT64(id);
}

Datum
maestro_retry(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;
	int64		id = PG_GETARG_INT64(0);
	Oid			types[2] = {INT8OID, OIDOID};
	Datum		values[2];
	char	   *table = maestro_queue_table();
	char	   *state = NULL;
	bool		isnull;

	if (table == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"maestro\" is not installed in this database")));

	values[0] = Int64GetDatum(id);
	values[1] = ObjectIdGetDatum(GetUserId());
	SPI_connect();
	run_as_queue_owner(psprintf("SELECT state FROM %s WHERE id = $1 AND requested_by = $2 FOR UPDATE",
								table),
					   2, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 1)
		state = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0],
												  SPI_tuptable->tupdesc, 1, &isnull));
	if (state == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("maestro request %lld does not exist", (long long) id),
				 errhint("A role sees and retries only the requests it queued itself.")));
	if (strcmp(state, "failed") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("maestro request %lld is %s, not failed", (long long) id, state),
				 errdetail("Only a failed request can be queued again.")));

	run_as_queue_owner(psprintf("UPDATE %s SET state = 'queued', attempts = 0, next_attempt_at = now(),"
								" done_at = NULL WHERE id = $1", table),
					   1, types, values, NULL, SPI_OK_UPDATE);
	SPI_finish();
	wake_worker_at_commit();
	PG_RETURN_VOID();
}

Datum
maestro_wake(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;
	if (!maestro_queue_available())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("maestro is not in shared_preload_libraries, so there is no worker to wake")));
	wake_worker_at_commit();
	PG_RETURN_VOID();
}
