/*-------------------------------------------------------------------------
 *
 * json.c
 *		Parsing Maestro's JSON bodies with cJSON, and printing cJSON values
 *		back to text.
 *
 * cJSON's allocation hooks are process-wide, and another library in the
 * backend may use cJSON with plain malloc. So the palloc hooks are
 * installed only for the length of one parse or print and removed again;
 * the hooks never raise an error, so nothing can skip the removal. Every
 * cJSON node we create therefore lives in the caller's memory context and
 * is released with it, errors included; no cJSON_Delete() is needed (the
 * list walk in parse.c frees the values it only checks, through the same
 * hooks, so that a long envelope does not pile up).
 *
 * src/json.c
 *
 *-------------------------------------------------------------------------
 */
#include "maestro.h"
#include "parse.h"

#include "mb/pg_wchar.h"
#include "utils/memutils.h"

/*
 * Out of memory is reported to cJSON as NULL, which it handles as a failed
 * parse or print, so that an error never unwinds through cJSON's frames.
 */
static void *
json_palloc(size_t size)
{
	return palloc_extended(size, MCXT_ALLOC_NO_OOM | MCXT_ALLOC_HUGE);
}

static void
json_pfree(void *ptr)
{
	if (ptr != NULL)
		pfree(ptr);
}

static cJSON_Hooks palloc_hooks = {json_palloc, json_pfree};

/* NULL when the text is not valid UTF-8 JSON; never raises by itself. */
cJSON *
maestro_json_try_parse(const char *body, size_t len)
{
	cJSON	   *root;

	if (body == NULL || len == 0)
		return NULL;
	if (!pg_verify_mbstr(PG_UTF8, body, (int) len, true))
		return NULL;

	cJSON_InitHooks(&palloc_hooks);
	root = cJSON_ParseWithLength(body, len);
	cJSON_InitHooks(NULL);

	return root;
}

static void raise_not_json(const MaestroRequest *req, size_t len) pg_attribute_noreturn();

static void
raise_not_json(const MaestroRequest *req, size_t len)
{
	ereport(ERROR,
			(errcode(ERRCODE_PROTOCOL_VIOLATION),
			 errmsg("Maestro sent a response that is not valid JSON"),
			 errdetail("%s %s answered with %zu bytes that do not parse as UTF-8 JSON.",
					   req->method, req->path, len),
			 errhint("The response may have been cut short or come from a proxy; check base_url.")));
}

/* Parse a success body; anything but JSON is a protocol violation. */
cJSON *
maestro_json_parse(const char *body, size_t len, const MaestroRequest *req)
{
	cJSON	   *root = maestro_json_try_parse(body, len);

	if (root == NULL)
		raise_not_json(req, len);
	return root;
}

/*
 * Start reading the list in a list response element by element (parse.c's
 * maestro_list_locate). Everything but the list's elements is checked
 * here, each element when maestro_json_list_next parses it; a body that
 * is not JSON is the same error as from maestro_json_parse. False when
 * the body is JSON without a list.
 */
bool
maestro_json_list_begin(MaestroListReader *reader, const char *body, size_t len,
						const char *wrapper_key, const MaestroRequest *req)
{
	int			rc;

	reader->body = body;
	reader->len = len;
	reader->req = req;
	if (body == NULL || len == 0 || !pg_verify_mbstr(PG_UTF8, body, (int) len, true))
		raise_not_json(req, len);

	cJSON_InitHooks(&palloc_hooks);
	rc = maestro_list_locate(body, len, wrapper_key, &reader->pos);
	cJSON_InitHooks(NULL);

	if (rc == MAESTRO_LIST_INVALID)
		raise_not_json(req, len);
	return rc == MAESTRO_LIST_FOUND;
}

/* The next element, parsed in the current memory context; NULL at the end. */
cJSON *
maestro_json_list_next(MaestroListReader *reader)
{
	int			rc;
	cJSON	   *element;

	cJSON_InitHooks(&palloc_hooks);
	rc = maestro_list_next_parsed(reader->body, reader->len, &reader->pos, &element);
	cJSON_InitHooks(NULL);

	if (rc < 0)
		raise_not_json(reader->req, reader->len);
	return rc == 0 ? NULL : element;
}

char *
maestro_json_print(const cJSON *item)
{
	char	   *text;

	cJSON_InitHooks(&palloc_hooks);
	text = cJSON_PrintUnformatted(item);
	cJSON_InitHooks(NULL);

	if (text == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory while printing JSON")));
	return text;
}
