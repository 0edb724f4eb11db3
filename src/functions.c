/*-------------------------------------------------------------------------
 *
 * functions.c
 *		The SQL-callable functions: argument checks, one call into api.c,
 *		and the parsed body turned into rows or a value.
 *
 * Each call parses into a private memory context that is deleted before
 * returning; on error the caller's context reset releases it. So a
 * backend that makes a million calls holds no more than one call's worth.
 *
 * src/functions.c
 *
 *-------------------------------------------------------------------------
 */
#include "maestro.h"

#include "access/htup_details.h"
#include "commands/dbcommands.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(maestro_workflows);
PG_FUNCTION_INFO_V1(maestro_trigger_requirements);
PG_FUNCTION_INFO_V1(maestro_trigger_inputs);
PG_FUNCTION_INFO_V1(maestro_trigger);
PG_FUNCTION_INFO_V1(maestro_instances);
PG_FUNCTION_INFO_V1(maestro_instance);
PG_FUNCTION_INFO_V1(maestro_pause);
PG_FUNCTION_INFO_V1(maestro_resume);
PG_FUNCTION_INFO_V1(maestro_cancel);

#define WORKFLOW_COLUMNS 9
#define INPUT_COLUMNS 3
#define INSTANCE_COLUMNS 22

/* Arguments are declared non-strict so that a NULL is an error, not a no-op. */
static char *
uuid_argument(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name)));
	return DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(argno)));
}

/* A context for one call's JSON trees and intermediate values. */
static MemoryContext
call_context_begin(void)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext,
											  "maestro call",
											  ALLOCSET_DEFAULT_SIZES);

	return MemoryContextSwitchTo(cxt);
}

static void
call_context_end(MemoryContext oldcxt)
{
	MemoryContext cxt = CurrentMemoryContext;

	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(cxt);
}

static void
workflow_row(const cJSON *wf, Datum *values, bool *nulls)
{
	const cJSON *meta = maestro_json_member(wf, "metadata");

	values[0] = maestro_json_to_uuid(maestro_json_member(wf, "id"), &nulls[0]);
	values[1] = maestro_json_to_text(maestro_json_member(wf, "name"), &nulls[1]);
	values[2] = maestro_json_to_uuid(maestro_json_member(wf, "account_id"), &nulls[2]);
	values[3] = maestro_json_to_text(maestro_json_member(wf, "status"), &nulls[3]);
	values[4] = maestro_json_to_timestamptz(maestro_json_member(meta, "created_at"), &nulls[4]);
	values[5] = maestro_json_to_text(maestro_json_member(meta, "created_by"), &nulls[5]);
	values[6] = maestro_json_to_timestamptz(maestro_json_member(meta, "modified_at"), &nulls[6]);
	values[7] = maestro_json_to_text(maestro_json_member(meta, "modified_by"), &nulls[7]);
	values[8] = maestro_json_to_jsonb(wf, &nulls[8]);
}

/* workflow_id is the caller's argument: list elements do not carry it. */
static void
instance_row(Datum workflow_id, const cJSON *inst, Datum *values, bool *nulls)
{
	const cJSON *inputs = maestro_json_member(inst, "trigger_inputs");

	if (inputs == NULL)
		inputs = maestro_json_member(inst, "trigger_input");

	values[0] = workflow_id;
	nulls[0] = false;
	values[1] = maestro_json_to_uuid(maestro_json_member(inst, "id"), &nulls[1]);
	values[2] = maestro_json_to_text(maestro_json_member(inst, "name"), &nulls[2]);
	values[3] = maestro_json_to_text(maestro_json_member(inst, "workflow_status"), &nulls[3]);
	values[4] = maestro_json_to_uuid(maestro_json_member(inst, "template_id"), &nulls[4]);
	values[5] = maestro_json_to_uuid(maestro_json_member(inst, "account_id"), &nulls[5]);
	values[6] = maestro_json_to_timestamptz(maestro_json_member(inst, "started_at"), &nulls[6]);
	values[7] = maestro_json_to_text(maestro_json_member(inst, "started_by"), &nulls[7]);
	values[8] = maestro_json_to_text(maestro_json_member(inst, "started_by_name"), &nulls[8]);
	values[9] = maestro_json_to_text(maestro_json_member(inst, "started_by_role"), &nulls[9]);
	values[10] = maestro_json_to_timestamptz(maestro_json_member(inst, "ended_at"), &nulls[10]);
	values[11] = maestro_json_to_timestamptz(maestro_json_member(inst, "expires_at"), &nulls[11]);
	values[12] = maestro_json_to_timestamptz(maestro_json_member(inst, "last_modified_at"), &nulls[12]);
	values[13] = maestro_json_to_timestamptz(maestro_json_member(inst, "canceled_at"), &nulls[13]);
	values[14] = maestro_json_to_text(maestro_json_member(inst, "canceled_by"), &nulls[14]);
	values[15] = maestro_json_to_jsonb(inputs, &nulls[15]);
	values[16] = maestro_json_to_int4(maestro_json_member(inst, "total_steps"), &nulls[16]);
	values[17] = maestro_json_to_int4(maestro_json_member(inst, "last_completed_step"), &nulls[17]);
	values[18] = maestro_json_to_text(maestro_json_member(inst, "last_completed_step_name"), &nulls[18]);
	values[19] = maestro_json_to_text_array(maestro_json_member(inst, "tags"), &nulls[19]);
	values[20] = maestro_json_to_jsonb(maestro_json_member(inst, "metadata"), &nulls[20]);
	values[21] = maestro_json_to_jsonb(inst, &nulls[21]);
}

/*
 * A list response must hold a list: an object without one is a change in
 * the API we would otherwise report as "no rows".
 */
static const cJSON *
required_list(const cJSON *root, const char *wrapper_key, const char *what)
{
	const cJSON *list = maestro_json_list(root, wrapper_key);

	if (list == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("Maestro response holds no list of %s", what),
				 errdetail("Expected a \"data\" array in the response body.")));
	return list;
}

Datum
maestro_workflows(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *status = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	MaestroConnection *conn;
	MemoryContext oldcxt;
	const cJSON *list;
	const cJSON *wf;

	InitMaterializedSRF(fcinfo, 0);
	conn = maestro_connect();

	oldcxt = call_context_begin();
	/* cJSON_ArrayForEach evaluates its array argument more than once */
	list = required_list(maestro_get_workflows(conn, status), "workflows", "workflows");
	cJSON_ArrayForEach(wf, list)
	{
		Datum		values[WORKFLOW_COLUMNS];
		bool		nulls[WORKFLOW_COLUMNS];

		if (!cJSON_IsObject(wf))
			continue;
		workflow_row(wf, values, nulls);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	call_context_end(oldcxt);

	return (Datum) 0;
}

Datum
maestro_trigger_requirements(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;
	char	   *workflow_id = uuid_argument(fcinfo, 0, "workflow_id");
	MaestroConnection *conn = maestro_connect();
	cJSON	   *root = maestro_get_trigger_requirements(conn, workflow_id);
	bool		isnull;
	Datum		result = maestro_json_to_jsonb(root, &isnull);

	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}

Datum
maestro_trigger_inputs(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *workflow_id = uuid_argument(fcinfo, 0, "workflow_id");
	MaestroConnection *conn;
	MemoryContext oldcxt;
	const cJSON *fields;
	const cJSON *field;

	InitMaterializedSRF(fcinfo, 0);
	conn = maestro_connect();

	oldcxt = call_context_begin();
	fields = maestro_json_member(maestro_get_trigger_requirements(conn, workflow_id),
								 "trigger_input_schema");
	cJSON_ArrayForEach(field, fields)
	{
		Datum		values[INPUT_COLUMNS];
		bool		nulls[INPUT_COLUMNS];

		values[0] = maestro_json_to_text(maestro_json_member(field, "field_name"), &nulls[0]);
		values[1] = maestro_json_to_text(maestro_json_member(field, "field_data_type"), &nulls[1]);
		values[2] = maestro_json_to_jsonb(maestro_json_member(field, "default_value"), &nulls[2]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	call_context_end(oldcxt);

	return (Datum) 0;
}

/*
 * The API requires an instance name. Without one we name the instance after
 * who started it, from where and when, so that it can be found again in
 * DocuSign's own UI.
 */
static char *
default_instance_name(void)
{
	return psprintf("%s@%s %s",
					GetUserNameFromId(GetUserId(), false),
					get_database_name(MyDatabaseId),
					timestamptz_to_str(GetCurrentTimestamp()));
}

/*
 * The arguments maestro_trigger and maestro_trigger_async share: a workflow
 * id, inputs that are a JSON object, and a non-empty instance name or NULL
 * for a generated one.
 */
void
maestro_check_trigger_args(FunctionCallInfo fcinfo, Jsonb **inputs, char **instance_name)
{
	(void) uuid_argument(fcinfo, 0, "workflow_id");
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("inputs must not be null"),
				 errhint("Pass '{}' for a workflow that takes no inputs.")));
	*inputs = PG_GETARG_JSONB_P(1);
	if (!JB_ROOT_IS_OBJECT(*inputs))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("inputs must be a JSON object"),
				 errdetail("The value given is a JSON %s.",
						   JB_ROOT_IS_SCALAR(*inputs) ? "scalar" : "array"),
				 errhint("Map each trigger input's field_name to its value, e.g. '{\"Email\": \"ada@example.com\"}'; maestro_trigger_inputs(workflow_id) lists the fields.")));

	if (PG_ARGISNULL(2))
		*instance_name = default_instance_name();
	else
	{
		*instance_name = text_to_cstring(PG_GETARG_TEXT_PP(2));
		if ((*instance_name)[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("instance_name must not be empty"),
					 errhint("Pass NULL to have a name generated.")));
	}
}

Datum
maestro_trigger(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;
	char	   *workflow_id = uuid_argument(fcinfo, 0, "workflow_id");
	Jsonb	   *inputs;
	char	   *instance_name;
	char	   *inputs_json;
	MaestroConnection *conn;
	TupleDesc	tupdesc;
	cJSON	   *root;
	Datum		values[2];
	bool		nulls[2];

	maestro_check_trigger_args(fcinfo, &inputs, &instance_name);

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);

	inputs_json = JsonbToCString(NULL, &inputs->root, VARSIZE(inputs));
	conn = maestro_connect();
	root = maestro_post_trigger(conn, workflow_id, instance_name, inputs_json);

	values[0] = maestro_json_to_uuid(maestro_json_member(root, "instance_id"), &nulls[0]);
	values[1] = maestro_json_to_text(maestro_json_member(root, "instance_url"), &nulls[1]);
	if (nulls[0])
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("Maestro accepted the trigger but returned no instance_id"),
				 errdetail("The workflow may have started; look for instance \"%s\" with maestro_instances().",
						   instance_name)));

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

Datum
maestro_instances(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *workflow_id = uuid_argument(fcinfo, 0, "workflow_id");
	Datum		workflow_datum = PG_GETARG_DATUM(0);
	MaestroConnection *conn;
	MemoryContext oldcxt;
	MemoryContext row_cxt;
	const cJSON *list;
	const cJSON *inst;

	InitMaterializedSRF(fcinfo, 0);
	conn = maestro_connect();

	oldcxt = call_context_begin();
	list = required_list(maestro_get_instances(conn, workflow_id), "instances", "instances");
	/* a row's values are copied into the tuplestore: free them at once */
	row_cxt = AllocSetContextCreate(CurrentMemoryContext, "maestro row",
									ALLOCSET_DEFAULT_SIZES);
	cJSON_ArrayForEach(inst, list)
	{
		Datum		values[INSTANCE_COLUMNS];
		bool		nulls[INSTANCE_COLUMNS];
		MemoryContext call_cxt;

		if (!cJSON_IsObject(inst))
			continue;
		call_cxt = MemoryContextSwitchTo(row_cxt);
		instance_row(workflow_datum, inst, values, nulls);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		MemoryContextSwitchTo(call_cxt);
		MemoryContextReset(row_cxt);
	}
	call_context_end(oldcxt);

	return (Datum) 0;
}

Datum
maestro_instance(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;
	char	   *workflow_id = uuid_argument(fcinfo, 0, "workflow_id");
	char	   *instance_id = uuid_argument(fcinfo, 1, "instance_id");
	MaestroConnection *conn;
	TupleDesc	tupdesc;
	cJSON	   *root;
	Datum		values[INSTANCE_COLUMNS];
	bool		nulls[INSTANCE_COLUMNS];

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);

	conn = maestro_connect();
	root = maestro_get_instance(conn, workflow_id, instance_id);
	if (!cJSON_IsObject(root))
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("Maestro response is not an instance object")));
	instance_row(PG_GETARG_DATUM(0), root, values, nulls);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* The one text field an action's response carries, or an error. */
static Datum
action_result(const cJSON *root, const char *field)
{
	bool		isnull;
	Datum		result = maestro_json_to_text(maestro_json_member(root, field), &isnull);

	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("Maestro response has no \"%s\" field", field),
				 errdetail("The action was accepted (HTTP 2xx).")));
	return result;
}

Datum
maestro_pause(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;
	char	   *workflow_id = uuid_argument(fcinfo, 0, "workflow_id");

	PG_RETURN_DATUM(action_result(maestro_post_workflow_action(maestro_connect(), workflow_id,
															   "pause"),
								  "status"));
}

Datum
maestro_resume(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;
	char	   *workflow_id = uuid_argument(fcinfo, 0, "workflow_id");

	PG_RETURN_DATUM(action_result(maestro_post_workflow_action(maestro_connect(), workflow_id,
															   "resume"),
								  "status"));
}

Datum
maestro_cancel(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;
	char	   *workflow_id = uuid_argument(fcinfo, 0, "workflow_id");
	char	   *instance_id = uuid_argument(fcinfo, 1, "instance_id");

	PG_RETURN_DATUM(action_result(maestro_post_cancel(maestro_connect(), workflow_id,
													  instance_id),
								  "message"));
}
