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
#include "utils/guc.h"
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

static const char *const workflow_keys[] = {
	"id", "name", "account_id", "status", "metadata"
};

static void
workflow_row(const cJSON *wf, Datum *values, bool *nulls)
{
	const cJSON *f[lengthof(workflow_keys)];
	bool		unique[lengthof(workflow_keys)];
	const cJSON *meta;

	maestro_json_members(wf, workflow_keys, lengthof(workflow_keys), f, unique);
	meta = f[4];
	values[0] = maestro_json_to_uuid(f[0], &nulls[0]);
	values[1] = maestro_json_to_text(f[1], &nulls[1]);
	values[2] = maestro_json_to_uuid(f[2], &nulls[2]);
	values[3] = maestro_json_to_text(f[3], &nulls[3]);
	values[4] = maestro_json_to_timestamptz(maestro_json_member(meta, "created_at"), &nulls[4]);
	values[5] = maestro_json_to_text(maestro_json_member(meta, "created_by"), &nulls[5]);
	values[6] = maestro_json_to_timestamptz(maestro_json_member(meta, "modified_at"), &nulls[6]);
	values[7] = maestro_json_to_text(maestro_json_member(meta, "modified_by"), &nulls[7]);
	values[8] = maestro_json_to_jsonb(wf, &nulls[8]);
}

/* an instance's fields, in the order the API sends them */
enum
{
	I_ID, I_NAME, I_WORKFLOW_STATUS, I_TEMPLATE_ID, I_ACCOUNT_ID, I_STARTED_AT,
	I_STARTED_BY, I_STARTED_BY_NAME, I_STARTED_BY_ROLE, I_ENDED_AT, I_EXPIRES_AT,
	I_LAST_MODIFIED_AT, I_CANCELED_AT, I_CANCELED_BY, I_TRIGGER_INPUTS,
	I_TOTAL_STEPS, I_LAST_COMPLETED_STEP, I_LAST_COMPLETED_STEP_NAME, I_TAGS,
	I_METADATA, I_TRIGGER_INPUT, I_KEYS
};

static const char *const instance_keys[I_KEYS] = {
	"id", "name", "workflow_status", "template_id", "account_id", "started_at",
	"started_by", "started_by_name", "started_by_role", "ended_at", "expires_at",
	"last_modified_at", "canceled_at", "canceled_by", "trigger_inputs",
	"total_steps", "last_completed_step", "last_completed_step_name", "tags",
	"metadata", "trigger_input"
};

/*
 * A nested object's column: copied out of raw, which already holds it as
 * jsonb, unless its key is duplicated (raw keeps the last, the column the
 * first, as before).
 */
static Datum
nested_jsonb(Jsonb *raw, const cJSON *item, bool unique, bool *isnull)
{
	if (item == NULL || cJSON_IsNull(item))
	{
		*isnull = true;
		return (Datum) 0;
	}
	if (unique)
		return maestro_jsonb_member(raw, item->string, isnull);
	return maestro_json_to_jsonb(item, isnull);
}

/*
 * workflow_id is the caller's argument: list elements do not carry it.
 * One pass finds the fields; raw is built once from the parsed tree, and
 * the nested objects' columns are copied out of it.
 */
static void
instance_row(Datum workflow_id, const cJSON *inst, Datum *values, bool *nulls)
{
	const cJSON *f[I_KEYS];
	bool		unique[I_KEYS];
	Jsonb	   *raw = maestro_json_jsonb(inst);
	int			inputs = I_TRIGGER_INPUTS;

	maestro_json_members(inst, instance_keys, I_KEYS, f, unique);
	if (f[I_TRIGGER_INPUTS] == NULL)
		inputs = I_TRIGGER_INPUT;

	values[0] = workflow_id;
	nulls[0] = false;
	values[1] = maestro_json_to_uuid(f[I_ID], &nulls[1]);
	values[2] = maestro_json_to_text(f[I_NAME], &nulls[2]);
	values[3] = maestro_json_to_text(f[I_WORKFLOW_STATUS], &nulls[3]);
	values[4] = maestro_json_to_uuid(f[I_TEMPLATE_ID], &nulls[4]);
	values[5] = maestro_json_to_uuid(f[I_ACCOUNT_ID], &nulls[5]);
	values[6] = maestro_json_to_timestamptz(f[I_STARTED_AT], &nulls[6]);
	values[7] = maestro_json_to_text(f[I_STARTED_BY], &nulls[7]);
	values[8] = maestro_json_to_text(f[I_STARTED_BY_NAME], &nulls[8]);
	values[9] = maestro_json_to_text(f[I_STARTED_BY_ROLE], &nulls[9]);
	values[10] = maestro_json_to_timestamptz(f[I_ENDED_AT], &nulls[10]);
	values[11] = maestro_json_to_timestamptz(f[I_EXPIRES_AT], &nulls[11]);
	values[12] = maestro_json_to_timestamptz(f[I_LAST_MODIFIED_AT], &nulls[12]);
	values[13] = maestro_json_to_timestamptz(f[I_CANCELED_AT], &nulls[13]);
	values[14] = maestro_json_to_text(f[I_CANCELED_BY], &nulls[14]);
	values[15] = nested_jsonb(raw, f[inputs], unique[inputs], &nulls[15]);
	values[16] = maestro_json_to_int4(f[I_TOTAL_STEPS], &nulls[16]);
	values[17] = maestro_json_to_int4(f[I_LAST_COMPLETED_STEP], &nulls[17]);
	values[18] = maestro_json_to_text(f[I_LAST_COMPLETED_STEP_NAME], &nulls[18]);
	values[19] = maestro_json_to_text_array(f[I_TAGS], &nulls[19]);
	values[20] = nested_jsonb(raw, f[I_METADATA], unique[I_METADATA], &nulls[20]);
	values[21] = JsonbPGetDatum(raw);
	nulls[21] = false;
}

/*
 * A list response must hold a list: an object without one is a change in
 * the API we would otherwise report as "no rows".
 */
static void raise_no_list(const char *what) pg_attribute_noreturn();

static void
raise_no_list(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_PROTOCOL_VIOLATION),
			 errmsg("Maestro response holds no list of %s", what),
			 errdetail("Expected a \"data\" array in the response body.")));
}

static const cJSON *
required_list(const cJSON *root, const char *wrapper_key, const char *what)
{
	const cJSON *list = maestro_json_list(root, wrapper_key);

	if (list == NULL)
		raise_no_list(what);
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

/*
 * A list's rows take about twice the response's size. A tuplestore of
 * work_mem (4 MB by default) writes the rest of them to a temporary file,
 * which for 10,000 instances was a tenth of the function's time. The
 * response is in memory already, bounded by maestro.max_response_kb, so
 * rows up to its size are kept in memory as well: at most about twice the
 * response at once (it, and then it and half its rows), as long as the
 * download itself needed. Beyond that the tuplestore spills as usual.
 */
static void
rows_in_memory(ReturnSetInfo *rsinfo, size_t response_bytes)
{
	int			kbytes = (int) Min(response_bytes / 1024, (size_t) MAX_KILOBYTES);
	MemoryContext oldcxt;

	if (kbytes <= work_mem)
		return;
	oldcxt = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	tuplestore_end(rsinfo->setResult);
	rsinfo->setResult = tuplestore_begin_heap((rsinfo->allowedModes & SFRM_Materialize_Random) != 0,
											  false, kbytes);
	MemoryContextSwitchTo(oldcxt);
}

/*
 * The list is read element by element from the response body: only one
 * instance's cJSON tree exists at a time, and each row's values are freed
 * once the tuplestore has its copy.
 */
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
	MaestroRequest req;
	MaestroResponse resp;
	MaestroListReader reader;
	cJSON	   *inst;

	InitMaterializedSRF(fcinfo, 0);
	conn = maestro_connect();

	oldcxt = call_context_begin();
	maestro_get_instances_response(conn, workflow_id, &req, &resp);
	if (!maestro_json_list_begin(&reader, resp.body, resp.body_len, "instances", &req))
		raise_no_list("instances");
	rows_in_memory(rsinfo, resp.body_len);
	row_cxt = AllocSetContextCreate(CurrentMemoryContext, "maestro row",
									ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		Datum		values[INSTANCE_COLUMNS];
		bool		nulls[INSTANCE_COLUMNS];
		MemoryContext call_cxt;

		/* a long list must not hold off a cancel or statement_timeout */
		CHECK_FOR_INTERRUPTS();
		call_cxt = MemoryContextSwitchTo(row_cxt);
		inst = maestro_json_list_next(&reader);
		if (inst == NULL)
		{
			MemoryContextSwitchTo(call_cxt);
			break;
		}
		if (cJSON_IsObject(inst))
		{
			instance_row(workflow_datum, inst, values, nulls);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
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
