/*-------------------------------------------------------------------------
 *
 * functions.c
 *		The SQL-callable functions: argument checks (arguments.c), one call
 *		into api.c, and the parsed body turned into rows or a value.
 *
 * Each call parses into a private memory context that is deleted before
 * returning; on error the caller's context reset releases it. So a
 * backend that makes a million calls holds no more than one call's worth.
 *
 * The spec marks no response field as required: a missing field is NULL
 * (a list without its list is no rows), never an error. What stays an
 * error (08P01) is a 2xx body that is not JSON, or JSON of the wrong kind
 * where the endpoint returns an object (or a list).
 *
 * The account-wide instance list is paged: maestro_account_instances and
 * maestro_all_instances return it row by row (value-per-call), keeping
 * one page in memory and asking for the next only when the rows of the
 * current one are used up. The worker's periodic sync drives the same walk
 * page by page on its own transfers, and hands maestro_all_instances the
 * pages it fetched (see "page source" below).
 *
 * src/functions.c
 *
 *-------------------------------------------------------------------------
 */
#include "maestro.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/buffile.h"
#include "utils/array.h"
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
PG_FUNCTION_INFO_V1(maestro_account_instances);
PG_FUNCTION_INFO_V1(maestro_all_instances);

#define WORKFLOW_COLUMNS 9
#define INPUT_COLUMNS 3
#define INSTANCE_COLUMNS 22
#define ROW_BLOCK_BYTES (32 * 1024)

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
 * The list in a list response. The spec requires no field, so an object
 * without the list is an empty list (NULL iterates as one); but a body
 * that is not an object or an array, or a list field of another kind, is
 * not a list response at all.
 */
static const cJSON *
required_list(const cJSON *root, const char *wrapper_key, const char *what)
{
	const cJSON *list = maestro_json_list(root, wrapper_key);
	const cJSON *data = maestro_json_member(root, "data");
	const cJSON *wrapped = maestro_json_member(root, wrapper_key);

	if (list != NULL)
		return list;
	if (!cJSON_IsObject(root) ||
		(data != NULL && !cJSON_IsNull(data) && !cJSON_IsObject(data)) ||
		(wrapped != NULL && !cJSON_IsNull(wrapped)))
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("Maestro response holds no list of %s", what),
				 errdetail("Expected a JSON object whose \"data\" (or \"%s\") is an array.",
						   wrapper_key)));
	return NULL;
}

/* An object answer, or 08P01: what an endpoint that returns one sent. */
static void
required_object(const cJSON *root, const char *what)
{
	if (!cJSON_IsObject(root))
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("Maestro response is not %s object", what)));
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
	char	   *workflow_id = maestro_uuid_argument(fcinfo, 0, "workflow_id");
	MaestroConnection *conn = maestro_connect();
	cJSON	   *root = maestro_get_trigger_requirements(conn, workflow_id);
	bool		isnull;
	Datum		result;

	required_object(root, "a trigger requirements");
	result = maestro_json_to_jsonb(root, &isnull);
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}

Datum
maestro_trigger_inputs(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *workflow_id = maestro_uuid_argument(fcinfo, 0, "workflow_id");
	MaestroConnection *conn;
	MemoryContext oldcxt;
	cJSON	   *root;
	const cJSON *fields;
	const cJSON *field;

	InitMaterializedSRF(fcinfo, 0);
	conn = maestro_connect();

	oldcxt = call_context_begin();
	root = maestro_get_trigger_requirements(conn, workflow_id);
	required_object(root, "a trigger requirements");
	fields = maestro_json_member(root, "trigger_input_schema");
	if (fields != NULL && !cJSON_IsNull(fields) && !cJSON_IsArray(fields))
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("Maestro response holds no list of trigger inputs"),
				 errdetail("Expected \"trigger_input_schema\" to be an array.")));
	cJSON_ArrayForEach(field, fields)
	{
		Datum		values[INPUT_COLUMNS];
		bool		nulls[INPUT_COLUMNS];

		if (!cJSON_IsObject(field))
			continue;

		values[0] = maestro_json_to_text(maestro_json_member(field, "field_name"), &nulls[0]);
		values[1] = maestro_json_to_text(maestro_json_member(field, "field_data_type"), &nulls[1]);
		values[2] = maestro_json_to_jsonb(maestro_json_member(field, "default_value"), &nulls[2]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	call_context_end(oldcxt);

	return (Datum) 0;
}

/*
 * The row type of a function returning one row, fixed by its OUT
 * parameters: worked out (a pg_proc look-up and a new descriptor) once per
 * call site rather than per row, which was a few percent of a call in a
 * statement of many rows.
 */
static TupleDesc
call_site_row_type(FunctionCallInfo fcinfo)
{
	TupleDesc	tupdesc = (TupleDesc) fcinfo->flinfo->fn_extra;

	if (tupdesc == NULL)
	{
		MemoryContext oldcxt;

		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		oldcxt = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
		tupdesc = BlessTupleDesc(CreateTupleDescCopy(tupdesc));
		MemoryContextSwitchTo(oldcxt);
		fcinfo->flinfo->fn_extra = tupdesc;
	}
	return tupdesc;
}

Datum
maestro_trigger(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;
	char	   *workflow_id = maestro_uuid_argument(fcinfo, 0, "workflow_id");
	Jsonb	   *inputs;
	char	   *instance_name;
	MaestroConnection *conn;
	TupleDesc	tupdesc;
	MaestroMemberText answer[MAESTRO_ANSWER_KEYS];
	Datum		values[2];
	bool		nulls[2];

	maestro_check_trigger_args(fcinfo, &inputs, &instance_name);

	tupdesc = call_site_row_type(fcinfo);
	conn = maestro_connect();
	if (maestro_post_trigger(conn, workflow_id, instance_name, inputs, answer) != MAESTRO_BODY_OBJECT)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("Maestro response is not a trigger answer object"),
				 errdetail("The workflow may have started; look for instance \"%s\" with maestro_instances().",
						   instance_name)));
	values[0] = maestro_text_to_uuid(answer[MAESTRO_ANSWER_ID].is_string ?
									 answer[MAESTRO_ANSWER_ID].text : NULL, &nulls[0]);
	nulls[1] = answer[MAESTRO_ANSWER_URL].text == NULL;
	values[1] = nulls[1] ? (Datum) 0 : CStringGetTextDatum(answer[MAESTRO_ANSWER_URL].text);

	/*
	 * The spec requires neither field. The workflow has most likely started:
	 * an error would make callers retry and start it twice.
	 */
	if (nulls[0] || nulls[1])
		ereport(WARNING,
				(errmsg("Maestro accepted the trigger of instance \"%s\" but its answer has no %s",
						instance_name,
						nulls[0] && nulls[1] ? "instance_id and no instance_url" :
						nulls[0] ? "instance_id" : "instance_url"),
				 nulls[0] ? errhint("Look for the instance by its name with maestro_instances().") : 0));

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * A list's rows take about twice the response's size. A tuplestore of
 * work_mem (4 MB by default) writes the rest of them to a temporary file,
 * which for 10,000 instances was a tenth of the function's time. The
 * response is in memory already, bounded by maestro.max_response_kb, and
 * is given back page by page as its elements are read
 * (maestro_response_release), so rows up to 2.5 times its size are kept
 * in memory: at most about that much at once, beyond which the tuplestore
 * spills as usual. The rows go into a generation context, which packs
 * tuples of ~2 kB where the per-query context would round each one up to
 * a power of two; they are never freed one by one before the query ends.
 */
static void
rows_in_memory(ReturnSetInfo *rsinfo, size_t response_bytes)
{
	int			kbytes = (int) Min(response_bytes / 1024 * 5 / 2, (size_t) MAX_KILOBYTES);
	MemoryContext oldcxt;
	MemoryContext rows_cxt;

	if (kbytes <= work_mem)
		return;
	rows_cxt = GenerationContextCreate(rsinfo->econtext->ecxt_per_query_memory,
									   "maestro rows", ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(rows_cxt);
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
	char	   *workflow_id = maestro_uuid_argument(fcinfo, 0, "workflow_id");
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
	{
		/* no list: an empty one or an error, as required_list decides */
		(void) required_list(maestro_json_parse(resp.body, resp.body_len, &req),
							 "instances", "instances");
		call_context_end(oldcxt);
		return (Datum) 0;
	}
	rows_in_memory(rsinfo, resp.body_len);
	/*
	 * One instance's tree, jsonb and values fit in 32 kB (the benchmark's
	 * do): a first block of that size, kept across resets, spares a malloc
	 * and free per row.
	 */
	row_cxt = AllocSetContextCreate(CurrentMemoryContext, "maestro row",
									0, ROW_BLOCK_BYTES, ALLOCSET_DEFAULT_MAXSIZE);
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
		/* what lies behind this element is never read again */
		maestro_response_release(&resp, reader.pos);
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
	char	   *workflow_id = maestro_uuid_argument(fcinfo, 0, "workflow_id");
	char	   *instance_id = maestro_uuid_argument(fcinfo, 1, "instance_id");
	MaestroConnection *conn;
	TupleDesc	tupdesc;
	cJSON	   *root;
	Datum		values[INSTANCE_COLUMNS];
	bool		nulls[INSTANCE_COLUMNS];

	tupdesc = call_site_row_type(fcinfo);
	conn = maestro_connect();
	root = maestro_get_instance(conn, workflow_id, instance_id);
	if (!cJSON_IsObject(root))
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("Maestro response is not an instance object")));
	instance_row(PG_GETARG_DATUM(0), root, values, nulls);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * The one text field an action's answer carries; NULL when it is missing
 * (the action was accepted: HTTP 2xx). The answer must be an object.
 */
static Datum
action_result(FunctionCallInfo fcinfo, const cJSON *root, const char *field)
{
	bool		isnull;
	Datum		result;

	required_object(root, "an action answer");
	result = maestro_json_to_text(maestro_json_member(root, field), &isnull);
	if (isnull)
		PG_RETURN_NULL();
	return result;
}

Datum
maestro_pause(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;
	char	   *workflow_id = maestro_uuid_argument(fcinfo, 0, "workflow_id");

	return action_result(fcinfo, maestro_post_workflow_action(maestro_connect(), workflow_id,
															  "pause"),
						 "status");
}

Datum
maestro_resume(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;
	char	   *workflow_id = maestro_uuid_argument(fcinfo, 0, "workflow_id");

	return action_result(fcinfo, maestro_post_workflow_action(maestro_connect(), workflow_id,
															  "resume"),
						 "status");
}

Datum
maestro_cancel(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;
	char	   *workflow_id = maestro_uuid_argument(fcinfo, 0, "workflow_id");
	char	   *instance_id = maestro_uuid_argument(fcinfo, 1, "instance_id");

	return action_result(fcinfo, maestro_post_cancel(maestro_connect(), workflow_id,
													 instance_id),
						 "message");
}

/*
 * The account-wide instance list, walked page by page across calls of a
 * value-per-call SRF. Only the current page's JSON is held (page_cxt,
 * reset before the next page is fetched), so memory stays bounded however
 * many instances the account has, and a caller that stops early (a LIMIT
 * over the SRF in a select list) never asks for the pages it does not need.
 * An error on any page is an ERROR: never a silently partial result.
 *
 * maestro_all_instances() walks the same list unfiltered, but falls back to
 * one call per workflow (the workflow list, then each workflow's instances)
 * when the account list cannot serve: the API answers its first page with
 * 404 (a version without the endpoint), or its elements do not say which
 * workflow they belong to. Both are known before the first row is returned.
 *
 * The walk is one state machine with two halves: walk_next_request() says
 * which GET comes next, walk_take() reads its answer and decides what
 * follows. Between them the answer comes from one of two page sources: the
 * network (http.c, synchronously), or pages fetched beforehand. The
 * worker's periodic sync uses the second: it drives the same state machine
 * itself, fetching each page on its multi handle while it goes on sending
 * (sync_loop.c), then runs maestro_sync(), whose maestro_all_instances()
 * reads the fetched pages in order instead of the network.
 */
struct MaestroInstanceWalk
{
	MaestroConnection *conn;
	MemoryContext cxt;			/* the walk's own: ctokens, the workflow list */
	MemoryContext page_cxt;		/* the current page */
	MaestroInstanceFilter filter;
	Datum		filter_workflow;	/* the one workflow the filter names */
	bool		has_filter_workflow;
	bool		fallback;		/* maestro_all_instances() */
	bool		per_workflow;	/* falling back: one workflow at a time */
	bool		workflows_listed;	/* per workflow: the workflow list came */
	bool		started;
	bool		done;
	char	   *ctoken;			/* of the next page; NULL: first or none */
	const cJSON *next;			/* next element of the current page */
	Datum		page_workflow;	/* per workflow: whose instances the page holds */
	Datum	   *workflows;		/* per workflow: every workflow's id */
	int			nworkflows;
	int			next_workflow;
	/* the page source: fetched beforehand (the next to read), else the network */
	bool		prefetched;
	const MaestroPage *page_pos;
};

typedef struct MaestroInstanceWalk InstanceWalk;

/* pages fetched beforehand for the next maestro_all_instances() walk */
static const MaestroPage *installed_pages = NULL;

/* The workflow an account-list element names, as a uuid Datum. */
static bool
element_workflow(const cJSON *inst, Datum *workflow_id)
{
	static const char *const keys[] = {"workflow_id", "workflow_definition_id"};
	int			k;

	for (k = 0; k < (int) lengthof(keys); k++)
	{
		bool		isnull;
		Datum		d = maestro_json_to_uuid(maestro_json_member(inst, keys[k]), &isnull);

		if (!isnull)
		{
			*workflow_id = d;
			return true;
		}
	}
	return false;
}

/*
 * In maestro_all_instances(), rows must say their workflow. Checked on the
 * first page, before any row is returned: elements that do not say it make
 * the walk fall back; on a later page it is too late for that.
 */
static bool
walk_page_names_workflows(InstanceWalk *walk)
{
	const cJSON *inst;
	Datum		ignored;

	for (inst = walk->next; inst != NULL; inst = inst->next)
		if (cJSON_IsObject(inst) && !element_workflow(inst, &ignored))
			return false;
	return true;
}

/* Falling back: the workflow list comes next, then one page per workflow. */
static void
walk_fall_back(InstanceWalk *walk)
{
	walk->per_workflow = true;
	walk->done = false;
	walk->next = NULL;
}

/*
 * The GET the walk needs next, built in the current memory context; false
 * at the end. *missing_ok: a 404 is an answer (the first account page of
 * maestro_all_instances(), which then falls back).
 */
static bool
walk_next_request(InstanceWalk *walk, MaestroRequest *req, bool *missing_ok)
{
	*missing_ok = false;
	if (walk->done)
		return false;
	if (walk->per_workflow)
	{
		if (!walk->workflows_listed)
		{
			maestro_workflows_request(walk->conn, req);
			return true;
		}
		if (walk->next_workflow >= walk->nworkflows)
		{
			walk->done = true;
			return false;
		}
		maestro_instances_request(walk->conn,
								  DatumGetCString(DirectFunctionCall1(uuid_out,
																	  walk->workflows[walk->next_workflow])),
								  req);
		return true;
	}
	maestro_account_instances_request(walk->conn, &walk->filter, walk->ctoken, req);
	*missing_ok = walk->fallback && !walk->started;
	return true;
}

/*
 * The answer to req, parsed in page_cxt (NULL: a 404 that req allowed):
 * the next elements, and what the walk asks for after them.
 */
static void
walk_take(InstanceWalk *walk, const MaestroRequest *req, cJSON *root)
{
	MemoryContext old;
	const cJSON *list;
	const cJSON *wf;
	const cJSON *ctoken;
	char	   *next_ctoken = NULL;
	bool		first;

	if (req->endpoint == MAESTRO_EP_WORKFLOWS)
	{
		list = required_list(root, "workflows", "workflows");
		old = MemoryContextSwitchTo(walk->cxt);
		walk->workflows = palloc(sizeof(Datum) * Max(cJSON_GetArraySize(list), 1));
		cJSON_ArrayForEach(wf, list)
		{
			bool		isnull;
			Datum		id = maestro_json_to_uuid(maestro_json_member(wf, "id"), &isnull);

			if (!isnull)
				walk->workflows[walk->nworkflows++] = id;
		}
		MemoryContextSwitchTo(old);
		walk->workflows_listed = true;
		walk->next = NULL;
		return;
	}
	if (req->endpoint == MAESTRO_EP_INSTANCES)
	{
		walk->page_workflow = walk->workflows[walk->next_workflow++];
		list = required_list(root, "instances", "instances");
		walk->next = list ? list->child : NULL;
		return;
	}

	/* a page of the account list */
	first = !walk->started;
	walk->started = true;
	if (root == NULL)
	{
		walk_fall_back(walk);
		return;
	}
	list = required_list(root, "instances", "instances");
	ctoken = maestro_json_member(root, "ctoken");

	/* "absent or empty on the last page"; null and other kinds end it too */
	if (cJSON_IsString(ctoken) && ctoken->valuestring[0] != '\0')
	{
		if (walk->ctoken != NULL && strcmp(walk->ctoken, ctoken->valuestring) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("Maestro returned the same ctoken for two pages of the instance list"),
					 errdetail("Following it would ask for the same page forever.")));
		next_ctoken = MemoryContextStrdup(walk->cxt, ctoken->valuestring);
	}
	if (walk->ctoken != NULL)
		pfree(walk->ctoken);
	walk->ctoken = next_ctoken;
	walk->done = (next_ctoken == NULL);
	walk->next = list ? list->child : NULL;

	if (walk->fallback && !walk_page_names_workflows(walk))
	{
		if (first)
		{
			walk_fall_back(walk);
			return;
		}
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("Maestro's account-wide instance list does not say which workflow an instance belongs to"),
				 errdetail("Its first page did; a later one did not.")));
	}
}

/* The answer to req from the pages fetched beforehand, in their order. */
static cJSON *
prefetched_answer(InstanceWalk *walk, const MaestroRequest *req, bool missing_ok)
{
	const MaestroPage *page = walk->page_pos;

	/* the same walk over the same answers asks the same questions */
	if (page == NULL || page->endpoint != req->endpoint || strcmp(page->path, req->path) != 0 ||
		(page->missing && !missing_ok))
		elog(ERROR, "the prefetched pages of the instance list do not match its walk");
	walk->page_pos = page->next;
	if (page->missing)
		return NULL;
	if (page->body == NULL)
	{
		char	   *body = palloc(page->len + 1);

		if (BufFileSeek(page->file, page->fileno, page->offset, SEEK_SET) != 0 ||
			BufFileRead(page->file, body, page->len) != page->len)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not read a prefetched page of the instance list from its temporary file")));
		body[page->len] = '\0';
		return maestro_json_parse(body, page->len, req);
	}
	return maestro_json_parse(page->body, page->len, req);
}

/* The next page, from the walk's page source; false at the end. */
static bool
walk_fetch(InstanceWalk *walk)
{
	MemoryContext old;
	MaestroRequest req;
	bool		missing_ok;
	cJSON	   *root;

	MemoryContextReset(walk->page_cxt);
	old = MemoryContextSwitchTo(walk->page_cxt);
	if (!walk_next_request(walk, &req, &missing_ok))
	{
		MemoryContextSwitchTo(old);
		return false;
	}
	if (walk->prefetched)
		root = prefetched_answer(walk, &req, missing_ok);
	else
		root = maestro_call(walk->conn, &req, missing_ok);
	walk_take(walk, &req, root);
	MemoryContextSwitchTo(old);
	return true;
}

/* The next row of the walk; false at the end. Rows go to the caller's context. */
static bool
walk_next_row(InstanceWalk *walk, Datum *values, bool *nulls)
{
	for (;;)
	{
		const cJSON *inst = walk->next;
		Datum		workflow_id;
		bool		named;

		if (inst == NULL)
		{
			if (!walk_fetch(walk))
				return false;
			continue;
		}
		walk->next = inst->next;
		if (!cJSON_IsObject(inst))
			continue;

		if (walk->per_workflow)
		{
			workflow_id = walk->page_workflow;
			named = true;
		}
		else if (!(named = element_workflow(inst, &workflow_id)) && walk->has_filter_workflow)
		{
			workflow_id = walk->filter_workflow;
			named = true;
		}
		instance_row(named ? workflow_id : (Datum) 0, inst, values, nulls);
		nulls[0] = !named;
		return true;
	}
}

/*
 * maestro_all_instances()'s walk, for a caller that fetches its pages
 * itself (the worker's sync): in the current memory context, which must
 * outlive it. The caller asks for each request, sends it, and hands over
 * the answer; the rows are not read here.
 */
MaestroInstanceWalk *
maestro_instance_walk_begin(MaestroConnection *conn)
{
	InstanceWalk *walk = palloc0(sizeof(InstanceWalk));

	walk->conn = conn;
	walk->fallback = true;
	walk->cxt = CurrentMemoryContext;
	walk->page_cxt = AllocSetContextCreate(CurrentMemoryContext, "maestro instance page",
										   ALLOCSET_DEFAULT_SIZES);
	return walk;
}

/* The next GET the walk needs, built in the current context; false at the end. */
bool
maestro_instance_walk_next_request(MaestroInstanceWalk *walk, MaestroRequest *req,
								   bool *missing_ok)
{
	return walk_next_request(walk, req, missing_ok);
}

/*
 * The 2xx answer to the walk's last request (or, with missing, the 404 it
 * allowed). Raises what maestro_all_instances() would raise on it.
 */
void
maestro_instance_walk_take(MaestroInstanceWalk *walk, const MaestroRequest *req,
						   const char *body, size_t len, bool missing)
{
	MemoryContext old;

	MemoryContextReset(walk->page_cxt);
	old = MemoryContextSwitchTo(walk->page_cxt);
	walk_take(walk, req, missing ? NULL : maestro_json_parse(body, len, req));
	MemoryContextSwitchTo(old);
	/* only the pages matter here */
	walk->next = NULL;
	MemoryContextReset(walk->page_cxt);
}

/*
 * Until called again with NULL, the walks of maestro_all_instances() in
 * this process read these pages, fetched beforehand by a walk of the same
 * answers, instead of the network.
 */
void
maestro_instance_walk_use_pages(const MaestroPage *pages)
{
	installed_pages = pages;
}

static Datum
instance_walk(FunctionCallInfo fcinfo, bool fallback)
{
	FuncCallContext *funcctx;
	InstanceWalk *walk;
	Datum		values[INSTANCE_COLUMNS];
	bool		nulls[INSTANCE_COLUMNS];

	if (SRF_IS_FIRSTCALL())
	{
		MemoryContext old;
		TupleDesc	tupdesc;

		funcctx = SRF_FIRSTCALL_INIT();
		old = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		funcctx->tuple_desc = BlessTupleDesc(tupdesc);

		walk = palloc0(sizeof(InstanceWalk));
		walk->fallback = fallback;
		if (!fallback)
		{
			if (!PG_ARGISNULL(0))
				walk->filter.status = text_to_cstring(PG_GETARG_TEXT_PP(0));
			if (!PG_ARGISNULL(1))
			{
				ArrayType  *ids = PG_GETARG_ARRAYTYPE_P(1);
				Datum	   *elems;
				bool	   *elem_nulls;
				int			n;
				int			i;

				deconstruct_array(ids, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR,
								  &elems, &elem_nulls, &n);
				walk->filter.workflow_ids = palloc(sizeof(char *) * Max(n, 1));
				for (i = 0; i < n; i++)
				{
					if (elem_nulls[i])
						ereport(ERROR,
								(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
								 errmsg("workflow_ids must not contain null")));
					walk->filter.workflow_ids[i] =
						DatumGetCString(DirectFunctionCall1(uuid_out, elems[i]));
				}
				walk->filter.nworkflow_ids = n;
				if (n == 1)
				{
					walk->filter_workflow = elems[0];
					walk->has_filter_workflow = true;
				}
				/* no workflow at all: no instance, and no call to find that out */
				if (n == 0)
					walk->done = true;
			}
			if (!PG_ARGISNULL(2))
				walk->filter.started_by = text_to_cstring(PG_GETARG_TEXT_PP(2));
		}
		walk->cxt = funcctx->multi_call_memory_ctx;
		walk->page_cxt = AllocSetContextCreate(funcctx->multi_call_memory_ctx,
											   "maestro instance page",
											   ALLOCSET_DEFAULT_SIZES);
		if (!walk->done)
			walk->conn = maestro_connect();
		if (fallback && installed_pages != NULL)
		{
			walk->prefetched = true;
			walk->page_pos = installed_pages;
		}
		funcctx->user_fctx = walk;
		MemoryContextSwitchTo(old);
	}

	funcctx = SRF_PERCALL_SETUP();
	walk = (InstanceWalk *) funcctx->user_fctx;
	if (walk_next_row(walk, values, nulls))
		SRF_RETURN_NEXT(funcctx,
						HeapTupleGetDatum(heap_form_tuple(funcctx->tuple_desc, values, nulls)));
	SRF_RETURN_DONE(funcctx);
}

Datum
maestro_account_instances(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;

	return instance_walk(fcinfo, false);
}

Datum
maestro_all_instances(PG_FUNCTION_ARGS)
{
	MAESTRO_CHECK_VERSION;

	return instance_walk(fcinfo, true);
}
