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

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "catalog/namespace.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/uuid.h"

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

/*
 * The schema maestro is installed in, or InvalidOid when it is not
 * installed in this database (get_extension_schema is static before
 * PostgreSQL 16).
 */
static Oid
extension_schema(void)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	Oid			schema = InvalidOid;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("maestro"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
		schema = ((Form_pg_extension) GETSTRUCT(tuple))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return schema;
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

static Oid
queue_table_owner(void)
{
	Oid			relid = get_relname_relid("maestro_trigger_requests", extension_schema());
	HeapTuple	tuple;
	Oid			owner;

	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the maestro queue table is missing"),
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

	maestro_become_role(queue_table_owner(), &save);
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
 * The name the instance will carry. Maestro offers no idempotency key, so
 * the name is the key: it ends in the request id and a random tag, and the
 * worker finds an instance by it when it cannot know whether a send
 * reached Maestro.
 */
static char *
tagged_instance_name(const char *name, int64 id)
{
	uint8		tag[4];

	if (!pg_strong_random(tag, sizeof(tag)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random tag")));
	return psprintf("%s [mq %lld-%02x%02x%02x%02x]", name, (long long) id,
					tag[0], tag[1], tag[2], tag[3]);
}

Datum
maestro_trigger_async(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;
	Datum		workflow_id;
	Jsonb	   *inputs;
	char	   *name;
	char	   *table;
	MaestroConnection *conn;
	int64		id;
	Oid			types[6] = {INT8OID, OIDOID, OIDOID, UUIDOID, JSONBOID, TEXTOID};
	Datum		values[6];
	bool		isnull;

	maestro_check_trigger_args(fcinfo, &inputs, &name);
	workflow_id = PG_GETARG_DATUM(0);

	if (strcmp(get_database_name(MyDatabaseId), maestro_database_name) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the maestro worker serves database \"%s\", not this one",
						maestro_database_name),
				 errdetail("Requests queued here would never be sent."),
				 errhint("Set maestro.database_name = '%s' in postgresql.conf and restart the server.",
						 get_database_name(MyDatabaseId))));

	/* the same checks a direct call makes, now rather than at send time */
	conn = maestro_connect();
	table = maestro_queue_table();

	SPI_connect();
	run_as_queue_owner(psprintf("SELECT nextval(pg_get_serial_sequence('%s', 'id'))", table),
					   0, NULL, NULL, NULL, SPI_OK_SELECT);
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

	values[0] = Int64GetDatum(id);
	values[1] = ObjectIdGetDatum(conn->server_id);
	values[2] = ObjectIdGetDatum(GetUserId());
	values[3] = workflow_id;
	values[4] = JsonbPGetDatum(inputs);
	values[5] = CStringGetTextDatum(tagged_instance_name(name, id));
	run_as_queue_owner(psprintf("INSERT INTO %s (id, server_id, requested_by, workflow_id, inputs, instance_name)"
								" VALUES ($1, $2, $3, $4, $5, $6)", table),
					   6, types, values, NULL, SPI_OK_INSERT);
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
