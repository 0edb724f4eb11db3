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
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "catalog/namespace.h"
#include "catalog/dependency.h"
#include "common/pg_prng.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "commands/sequence.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/inval.h"
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
 * The enqueue statement, prepared once per backend: one INSERT of six
 * parameters, so a row costs one nextval and one execution of a kept plan
 * instead of two statements parsed and planned. It is prepared as the
 * owner with search_path pinned, and run the same way. A relcache
 * invalidation of the queue table (DROP EXTENSION, a new owner, another
 * schema) or a full reset forgets it; PostgreSQL's plan cache replans it
 * on its own when needed.
 */
typedef struct EnqueuePlan
{
	bool		valid;
	Oid			table;
	Oid			sequence;
	Oid			owner;
	SPIPlanPtr	plan;
} EnqueuePlan;

static EnqueuePlan enqueue_plan;

static void
enqueue_plan_invalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == enqueue_plan.table)
		enqueue_plan.valid = false;
}

/* within SPI_connect */
static void
enqueue_plan_prepare(void)
{
	static bool callback_registered = false;
	Oid			schema;
	Oid			table;
	List	   *sequences;
	HeapTuple	tuple;
	MaestroRoleSwitch save;
	Oid			types[6] = {INT8OID, OIDOID, OIDOID, UUIDOID, JSONBOID, TEXTOID};
	SPIPlanPtr	plan;
	char	   *sql;

	if (enqueue_plan.valid)
		return;
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(enqueue_plan_invalidate, (Datum) 0);
		callback_registered = true;
	}
	if (enqueue_plan.plan != NULL)
	{
		SPI_freeplan(enqueue_plan.plan);
		enqueue_plan.plan = NULL;
	}
	enqueue_plan.table = InvalidOid;

	schema = extension_schema();
	table = OidIsValid(schema) ? get_relname_relid("maestro_trigger_requests", schema) : InvalidOid;
	tuple = OidIsValid(table) ? SearchSysCache1(RELOID, ObjectIdGetDatum(table)) : NULL;
	if (!HeapTupleIsValid(tuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the maestro queue table is missing"),
				 errhint("Run DROP EXTENSION maestro; CREATE EXTENSION maestro;")));
	enqueue_plan.owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	sequences = getOwnedSequences(table);
	if (list_length(sequences) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the maestro queue table has no id sequence"),
				 errhint("Run DROP EXTENSION maestro; CREATE EXTENSION maestro;")));

	sql = psprintf("INSERT INTO %s.maestro_trigger_requests"
				   " (id, server_id, requested_by, workflow_id, inputs, instance_name)"
				   " VALUES ($1, $2, $3, $4, $5, $6)",
				   quote_identifier(get_namespace_name(schema)));
	maestro_become_role(enqueue_plan.owner, &save);
	plan = SPI_prepare(sql, 6, types);
	if (plan == NULL)
		elog(ERROR, "could not prepare the maestro queue statement: %s",
			 SPI_result_code_string(SPI_result));
	maestro_restore_role(&save);
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "could not keep the maestro queue statement");
	enqueue_plan.plan = plan;
	enqueue_plan.sequence = linitial_oid(sequences);
	enqueue_plan.table = table;
	enqueue_plan.valid = true;
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
	Datum		values[6];
	MaestroRoleSwitch save;
	int			rc;

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

	SPI_connect();
	enqueue_plan_prepare();
	maestro_become_role(enqueue_plan.owner, &save);
	id = nextval_internal(enqueue_plan.sequence, true);
	values[0] = Int64GetDatum(id);
	values[1] = ObjectIdGetDatum(server_id);
	values[2] = ObjectIdGetDatum(save.userid);
	values[3] = PG_GETARG_DATUM(0);
	values[4] = JsonbPGetDatum(inputs);
	values[5] = CStringGetTextDatum(tagged_instance_name(name, id));
	rc = SPI_execute_plan(enqueue_plan.plan, values, NULL, false, 0);
	if (rc != SPI_OK_INSERT || SPI_processed != 1)
		elog(ERROR, "maestro queue statement failed: %s", SPI_result_code_string(rc));
	maestro_restore_role(&save);
	SPI_finish();

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
