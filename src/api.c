/*-------------------------------------------------------------------------
 *
 * api.c
 *		The Maestro endpoints: for each, its method, path and body, sent
 *		through http.c, and its 2xx body parsed into a cJSON tree (a
 *		trigger's answer: read into its two members, json.c).
 *
 * Paths are built only from validated uuids and the account id, so they
 * hold no secret and need no escaping; they appear in error details as
 * they are. Only GETs are marked idempotent: a POST is never re-sent.
 *
 * src/api.c
 *
 *-------------------------------------------------------------------------
 */
#include "maestro.h"

#include <curl/curl.h>

#include "utils/json.h"
#include "utils/memutils.h"

/*
 * "/v1/accounts/{account}" followed by the parts given, joined without a
 * format (maestro_concat). The ids in them are checked uuids: nothing to
 * escape.
 */
#define account_path(conn, ...) \
	maestro_concat("/v1/accounts/", (conn)->account_id, __VA_ARGS__, NULL)

/*
 * Send a request and return its 2xx response, unparsed; resp is filled in
 * (req's strings must outlive it). With missing_ok, a 404 returns false
 * instead of raising: for an endpoint this API version may lack.
 */
static bool
send_request(MaestroConnection *conn, const MaestroRequest *req, bool missing_ok,
			 MaestroResponse *resp)
{
	maestro_auth_prepare(conn);
	maestro_http_execute(conn, req, resp);

	/*
	 * A minted token the API refuses was revoked or expired early: mint a
	 * new one and send once more. The request had no effect, so even a
	 * trigger may be repeated here.
	 */
	if (resp->status == 401 && conn->jwt)
	{
		maestro_auth_forget(conn);
		maestro_auth_prepare(conn);
		maestro_http_execute(conn, req, resp);
	}
	if (resp->status == 404 && missing_ok)
		return false;
	if (resp->status < 200 || resp->status > 299)
		maestro_raise_http_error(conn, req, resp);
	return true;
}

/* The same for a request given by its parts; req is filled in. */
static bool
call_raw(MaestroConnection *conn, MaestroEndpoint endpoint, const char *method,
		 const char *path, const char *query, const char *body, bool missing_ok,
		 MaestroRequest *req, MaestroResponse *resp)
{
	memset(req, 0, sizeof(*req));
	req->method = method;
	req->path = path;
	req->query = query;
	req->body = body;
	req->idempotent = (strcmp(method, "GET") == 0);
	req->endpoint = endpoint;
	return send_request(conn, req, missing_ok, resp);
}

/*
 * Send a request built by one of the *_request functions below and parse
 * its 2xx body. With missing_ok, a 404 returns NULL instead of raising.
 */
cJSON *
maestro_call(MaestroConnection *conn, const MaestroRequest *req, bool missing_ok)
{
	MaestroResponse resp;

	if (!send_request(conn, req, missing_ok, &resp))
		return NULL;
	return maestro_json_parse(resp.body, resp.body_len, req);
}

/*
 * Send one request and parse its 2xx body. With missing_ok, a 404 returns
 * NULL instead of raising.
 */
static cJSON *
call_ex(MaestroConnection *conn, MaestroEndpoint endpoint, const char *method,
		const char *path, const char *query, const char *body, bool missing_ok)
{
	MaestroRequest req;
	MaestroResponse resp;

	if (!call_raw(conn, endpoint, method, path, query, body, missing_ok, &req, &resp))
		return NULL;
	return maestro_json_parse(resp.body, resp.body_len, &req);
}

static cJSON *
call(MaestroConnection *conn, MaestroEndpoint endpoint, const char *method,
	 const char *path, const char *query, const char *body)
{
	return call_ex(conn, endpoint, method, path, query, body, false);
}

/* "&name=value" with the value URL-encoded */
static void
append_param(StringInfo query, const char *name, const char *value)
{
	char	   *escaped = curl_easy_escape(NULL, value, 0);

	if (escaped == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	appendStringInfo(query, "%s%s=%s", query->len > 0 ? "&" : "", name, escaped);
	curl_free(escaped);
}

cJSON *
maestro_get_workflows(MaestroConnection *conn, const char *status)
{
	char	   *query = NULL;

	if (status != NULL)
	{
		char	   *escaped = curl_easy_escape(NULL, maestro_server_to_utf8(status), 0);

		if (escaped == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory")));
		query = psprintf("status=%s", escaped);
		curl_free(escaped);
	}
	return call(conn, MAESTRO_EP_WORKFLOWS, "GET", account_path(conn, "/workflows"), query, NULL);
}

/* The workflow list (all of them), for callers that send it themselves. */
void
maestro_workflows_request(MaestroConnection *conn, MaestroRequest *req)
{
	memset(req, 0, sizeof(*req));
	req->method = "GET";
	req->path = account_path(conn, "/workflows");
	req->idempotent = true;
	req->endpoint = MAESTRO_EP_WORKFLOWS;
}

cJSON *
maestro_get_trigger_requirements(MaestroConnection *conn, const char *workflow_id)
{
	return call(conn, MAESTRO_EP_TRIGGER_REQUIREMENTS, "GET",
				account_path(conn, "/workflows/", workflow_id, "/trigger-requirements"),
				NULL, NULL);
}

/* The trigger's body up to its inputs, which the caller appends. */
static void
start_trigger_body(StringInfo body, const char *instance_name)
{
	initStringInfo(body);
	appendStringInfoString(body, "{\"instance_name\":");
	escape_json(body, instance_name);
	appendStringInfoString(body, ",\"trigger_inputs\":");
}

static void
finish_trigger_request(MaestroConnection *conn, const char *workflow_id,
					   StringInfo body, MaestroRequest *req)
{
	appendStringInfoChar(body, '}');
	memset(req, 0, sizeof(*req));
	req->method = "POST";
	req->path = account_path(conn, "/workflows/", workflow_id, "/actions/trigger");
	/* built in the database's encoding; Maestro reads UTF-8 */
	req->body = maestro_server_to_utf8(body->data);
	req->idempotent = false;
	req->endpoint = MAESTRO_EP_TRIGGER;
}

/*
 * The trigger request, for callers that send it themselves (the worker).
 * inputs_json is the text of a JSON object.
 */
void
maestro_trigger_request(MaestroConnection *conn, const char *workflow_id,
						const char *instance_name, const char *inputs_json,
						MaestroRequest *req)
{
	StringInfoData body;

	start_trigger_body(&body, instance_name);
	appendStringInfoString(&body, inputs_json);
	finish_trigger_request(conn, workflow_id, &body, req);
}

const char *const maestro_trigger_answer_keys[MAESTRO_ANSWER_KEYS] = {
	"instance_id", "instance_url"
};

/*
 * Trigger a workflow. The inputs are printed straight into the body:
 * printing them into a string of their own first cost an allocation of
 * 1 kB and a copy per call. The answer's instance_id and instance_url go
 * to answer[MAESTRO_ANSWER_ID] and answer[MAESTRO_ANSWER_URL], read
 * without a cJSON tree when the answer is a plain object of strings.
 */
MaestroBodyShape
maestro_post_trigger(MaestroConnection *conn, const char *workflow_id,
					 const char *instance_name, Jsonb *inputs, MaestroMemberText *answer)
{
	MaestroRequest req;
	MaestroResponse resp;
	StringInfoData body;

	start_trigger_body(&body, instance_name);
	(void) JsonbToCString(&body, &inputs->root, VARSIZE(inputs));
	finish_trigger_request(conn, workflow_id, &body, &req);
	(void) send_request(conn, &req, false, &resp);
	return maestro_json_read_members(resp.body, resp.body_len, &req,
									 maestro_trigger_answer_keys, MAESTRO_ANSWER_KEYS, answer);
}

cJSON *
maestro_get_instances(MaestroConnection *conn, const char *workflow_id)
{
	return call(conn, MAESTRO_EP_INSTANCES, "GET",
				account_path(conn, "/workflows/", workflow_id, "/instances"),
				NULL, NULL);
}

/* The instances list request, for the worker, which sends it itself. */
void
maestro_instances_request(MaestroConnection *conn, const char *workflow_id,
						  MaestroRequest *req)
{
	memset(req, 0, sizeof(*req));
	req->method = "GET";
	req->path = account_path(conn, "/workflows/", workflow_id, "/instances");
	req->idempotent = true;
	req->endpoint = MAESTRO_EP_INSTANCES;
}

/*
 * The request for one page of the account-wide instance list (GET
 * /workflow-instances). The filters go to the API; ctoken is NULL for the
 * first page.
 */
void
maestro_account_instances_request(MaestroConnection *conn, const MaestroInstanceFilter *filter,
								  const char *ctoken, MaestroRequest *req)
{
	StringInfoData query;
	int			i;

	initStringInfo(&query);
	if (filter->status != NULL)
		append_param(&query, "status", filter->status);
	for (i = 0; i < filter->nworkflow_ids; i++)
		append_param(&query, "workflow_definition_id", filter->workflow_ids[i]);
	if (filter->started_by != NULL)
		append_param(&query, "started_by_id", filter->started_by);
	if (maestro_page_size > 0)
		appendStringInfo(&query, "%spage_size=%d", query.len > 0 ? "&" : "", maestro_page_size);
	if (ctoken != NULL)
		append_param(&query, "ctoken", ctoken);

	memset(req, 0, sizeof(*req));
	req->method = "GET";
	req->path = account_path(conn, "/workflow-instances");
	req->query = query.len > 0 ? query.data : NULL;
	req->idempotent = true;
	req->endpoint = MAESTRO_EP_ACCOUNT_INSTANCES;
}

/*
 * The same list unparsed, for reading it element by element
 * (maestro_json_list_begin): a long list never becomes one tree.
 */
void
maestro_get_instances_response(MaestroConnection *conn, const char *workflow_id,
							   MaestroRequest *req, MaestroResponse *resp)
{
	(void) call_raw(conn, MAESTRO_EP_INSTANCES, "GET",
					account_path(conn, "/workflows/", workflow_id, "/instances"),
					NULL, NULL, false, req, resp);
}

cJSON *
maestro_get_instance(MaestroConnection *conn, const char *workflow_id,
					 const char *instance_id)
{
	return call(conn, MAESTRO_EP_INSTANCE, "GET",
				account_path(conn, "/workflows/", workflow_id, "/instances/", instance_id),
				NULL, NULL);
}

/* action is "pause" or "resume"; neither takes a body. */
cJSON *
maestro_post_workflow_action(MaestroConnection *conn, const char *workflow_id,
							 const char *action)
{
	return call(conn, strcmp(action, "pause") == 0 ? MAESTRO_EP_PAUSE : MAESTRO_EP_RESUME, "POST",
				account_path(conn, "/workflows/", workflow_id, "/actions/", action),
				NULL, NULL);
}

cJSON *
maestro_post_cancel(MaestroConnection *conn, const char *workflow_id,
					const char *instance_id)
{
	return call(conn, MAESTRO_EP_CANCEL, "POST",
				account_path(conn, "/workflows/", workflow_id, "/instances/", instance_id,
							 "/actions/cancel"),
				NULL, NULL);
}
