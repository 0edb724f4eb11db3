/*-------------------------------------------------------------------------
 *
 * json.c
 *		Parsing Maestro's JSON bodies with cJSON (whole, or a list response
 *		element by element, or a small object's members without a tree
 *		when it allows), and printing cJSON values back to text.
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

#include "access/xact.h"
#include "catalog/namespace.h"
#include "common/string.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
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

/*
 * Maestro speaks UTF-8; a database may use another encoding. Every string
 * of a parsed response (keys and values) is converted to the database's
 * encoding by maestro_json_parse, once, so that whatever is built from
 * the tree (text, jsonb) holds text in the encoding PostgreSQL expects;
 * request bodies and query strings are converted to UTF-8. In a UTF-8 (or
 * SQL_ASCII) database nothing is copied. A character the database's
 * encoding cannot hold is an error (22P05, as for a client whose encoding
 * cannot hold it) in a success body; in an error message (strict =
 * false), where the error being reported matters more, it becomes '?'.
 *
 * The conversion functions are looked up once, in a transaction (the
 * catalog is read), by maestro_encoding_prepare(), which every path to the
 * API passes through when it resolves its server; they are then usable
 * outside a transaction too, as the worker needs.
 */
static FmgrInfo *utf8_to_server_proc = NULL;
static FmgrInfo *server_to_utf8_proc = NULL;

static bool
conversion_needed(void)
{
	int			encoding = GetDatabaseEncoding();

	return encoding != PG_UTF8 && encoding != PG_SQL_ASCII;
}

static FmgrInfo *
conversion_proc(int from, int to)
{
	Oid			proc = FindDefaultConversionProc(from, to);
	FmgrInfo   *info;

	if (!OidIsValid(proc))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("default conversion function for encoding \"%s\" to \"%s\" does not exist",
						pg_encoding_to_char(from), pg_encoding_to_char(to))));
	info = MemoryContextAlloc(TopMemoryContext, sizeof(FmgrInfo));
	fmgr_info_cxt(proc, info, TopMemoryContext);
	return info;
}

void
maestro_encoding_prepare(void)
{
	if (!conversion_needed() || server_to_utf8_proc != NULL || !IsTransactionState())
		return;
	utf8_to_server_proc = conversion_proc(PG_UTF8, GetDatabaseEncoding());
	server_to_utf8_proc = conversion_proc(GetDatabaseEncoding(), PG_UTF8);
}

static FmgrInfo *
ready_proc(FmgrInfo **proc)
{
	maestro_encoding_prepare();
	if (*proc == NULL)
		elog(ERROR, "maestro: encoding conversion used before it was prepared");
	return *proc;
}

/*
 * Convert len bytes; returns how many were converted (all, unless noerror
 * and a character the target cannot hold stopped it). The result is always
 * terminated.
 */
static int
convert(FmgrInfo *proc, int from, int to, const char *s, int len, char *out, bool noerror)
{
	return DatumGetInt32(FunctionCall6(proc, Int32GetDatum(from), Int32GetDatum(to),
									   CStringGetDatum(s), CStringGetDatum(out),
									   Int32GetDatum(len), BoolGetDatum(noerror)));
}

char *
maestro_utf8_to_server(const char *s, size_t len, bool strict)
{
	FmgrInfo   *proc;
	int			to = GetDatabaseEncoding();
	char	   *result;
	char	   *out;
	size_t		in = 0;

	if (len == 0 || !conversion_needed() || pg_is_ascii(s))
		return unconstify(char *, s);
	if (len >= MaxAllocSize / (MAX_CONVERSION_GROWTH + 1))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("out of memory"),
				 errdetail("A string of %zu bytes is too long for encoding conversion.", len)));
	proc = ready_proc(&utf8_to_server_proc);
	/* room for every character converted, or replaced by '?' */
	result = palloc(len * MAX_CONVERSION_GROWTH + 1);
	out = result;
	while (in < len)
	{
		int			done = convert(proc, PG_UTF8, to, s + in, (int) (len - in), out, !strict);

		in += done;
		out += strlen(out);
		if (in < len)
		{
			/* a character the database cannot hold: skip it */
			*out++ = '?';
			*out = '\0';
			in += Max(pg_utf_mblen((const unsigned char *) s + in), 1);
		}
	}
	return result;
}

/* Text in the database's encoding, as UTF-8 for a request. */
char *
maestro_server_to_utf8(const char *s)
{
	size_t		len;
	char	   *result;

	if (s == NULL || !conversion_needed() || pg_is_ascii(s))
		return unconstify(char *, s);
	len = strlen(s);
	if (len >= MaxAllocSize / (MAX_CONVERSION_GROWTH + 1))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("out of memory"),
				 errdetail("A string of %zu bytes is too long for encoding conversion.", len)));
	result = palloc(len * MAX_CONVERSION_GROWTH + 1);
	/* every server encoding maps into Unicode: nothing is lost */
	(void) convert(ready_proc(&server_to_utf8_proc), GetDatabaseEncoding(), PG_UTF8,
				   s, (int) len, result, false);
	return result;
}

static void
tree_to_server(cJSON *item, bool strict)
{
	check_stack_depth();
	for (; item != NULL; item = item->next)
	{
		if (item->string != NULL)
			item->string = maestro_utf8_to_server(item->string, strlen(item->string), strict);
		if (cJSON_IsString(item) && item->valuestring != NULL)
			item->valuestring = maestro_utf8_to_server(item->valuestring,
													   strlen(item->valuestring), strict);
		if (item->child != NULL)
			tree_to_server(item->child, strict);
	}
}

/* NULL when the text is not valid UTF-8 JSON. */
static cJSON *
parse_utf8(const char *body, size_t len)
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

/*
 * For bodies read for what they say about an error, or for ASCII fields
 * only: NULL when the text is not valid UTF-8 JSON; never raises by
 * itself. The tree's strings stay UTF-8 (parse.c's error texts expect it);
 * errors.c converts the message it builds from them.
 */
cJSON *
maestro_json_try_parse(const char *body, size_t len)
{
	return parse_utf8(body, len);
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
	cJSON	   *root = parse_utf8(body, len);

	if (root == NULL)
		raise_not_json(req, len);
	if (GetDatabaseEncoding() != PG_UTF8)
		tree_to_server(root, true);
	return root;
}

/*
 * The members keys[] of a body that should be a small object, such as a
 * trigger's answer, without a cJSON tree when the body is an object of
 * strings (parse.c's maestro_flat_object_read), else from cJSON's parse.
 * Either way out[i] is what maestro_json_member(root, keys[i]) would give:
 * the text of a string, "true" or "false" for a boolean, a number printed,
 * NULL for anything else or nothing, and whether it was a string; copies
 * in the current memory context. With req the body is a success body:
 * its strings are converted to the database's encoding as
 * maestro_json_parse converts them, and a body that is not JSON raises
 * its error; without req it stays UTF-8 and is MAESTRO_NOT_JSON.
 */
MaestroBodyShape
maestro_json_read_members(const char *body, size_t len, const MaestroRequest *req,
						  const char *const *keys, int nkeys, MaestroMemberText *out)
{
	MaestroFlatValue flat[MAESTRO_FLAT_MAX_KEYS];
	cJSON	   *root;
	int			i;

	Assert(nkeys <= MAESTRO_FLAT_MAX_KEYS);
	memset(out, 0, sizeof(MaestroMemberText) * nkeys);
	if (body == NULL || len == 0 || !pg_verify_mbstr(PG_UTF8, body, (int) len, true))
	{
		if (req != NULL)
			raise_not_json(req, len);
		return MAESTRO_NOT_JSON;
	}

	/* a conversion checks every string, which only cJSON's tree visits */
	if ((req == NULL || GetDatabaseEncoding() == PG_UTF8) &&
		maestro_flat_object_read(body, len, keys, nkeys, flat))
	{
		for (i = 0; i < nkeys; i++)
		{
			switch (flat[i].kind)
			{
				case MAESTRO_FLAT_STRING:
					out[i].text = pnstrdup(flat[i].text, flat[i].len);
					out[i].is_string = true;
					break;
				case MAESTRO_FLAT_TRUE:
					out[i].text = pstrdup("true");
					break;
				case MAESTRO_FLAT_FALSE:
					out[i].text = pstrdup("false");
					break;
				case MAESTRO_FLAT_ABSENT:
				case MAESTRO_FLAT_NULL:
					break;
			}
		}
		return MAESTRO_BODY_OBJECT;
	}

	root = req != NULL ? maestro_json_parse(body, len, req) : parse_utf8(body, len);
	if (root == NULL)
		return MAESTRO_NOT_JSON;
	if (!cJSON_IsObject(root))
		return MAESTRO_BODY_OTHER;
	for (i = 0; i < nkeys; i++)
	{
		const cJSON *item = maestro_object_member(root, keys[i]);

		if (cJSON_IsString(item))
		{
			out[i].text = pstrdup(item->valuestring);
			out[i].is_string = true;
		}
		else if (cJSON_IsBool(item))
			out[i].text = pstrdup(cJSON_IsTrue(item) ? "true" : "false");
		else if (cJSON_IsNumber(item))
			out[i].text = maestro_json_print(item);
	}
	return MAESTRO_BODY_OBJECT;
}

/*
 * Start reading the list in a list response element by element (parse.c's
 * maestro_list_begin). What precedes the list is checked here, each
 * element when maestro_json_list_next parses it, and what follows the
 * list when it reaches the end (before it if the list is not the root's
 * "data"); a body that is not JSON is the same error as from
 * maestro_json_parse, raised before the function returns any row. False
 * when the body is JSON without a list.
 */
bool
maestro_json_list_begin(MaestroListReader *reader, const char *body, size_t len,
						const char *wrapper_key, const MaestroRequest *req)
{
	int			rc;

	reader->body = body;
	reader->len = len;
	reader->req = req;
	reader->wrapper_key = wrapper_key;
	if (body == NULL || len == 0 || !pg_verify_mbstr(PG_UTF8, body, (int) len, true))
		raise_not_json(req, len);

	cJSON_InitHooks(&palloc_hooks);
	rc = maestro_list_begin(body, len, wrapper_key, &reader->walk);
	cJSON_InitHooks(NULL);

	if (rc == MAESTRO_LIST_INVALID)
		raise_not_json(req, len);
	reader->pos = reader->walk.list;
	return rc == MAESTRO_LIST_FOUND;
}

/*
 * The next element, parsed in the current memory context, its strings in
 * the database's encoding as maestro_json_parse leaves them; NULL at the
 * end.
 */
cJSON *
maestro_json_list_next(MaestroListReader *reader)
{
	int			rc;
	cJSON	   *element;

	cJSON_InitHooks(&palloc_hooks);
	rc = maestro_list_next_parsed(reader->body, reader->len, &reader->pos, &element);
	/* at the end, what follows the list (it may not have been checked yet) */
	if (rc == 0 &&
		!maestro_list_end(reader->body, reader->len, reader->wrapper_key, &reader->walk,
						  reader->pos))
		rc = -1;
	cJSON_InitHooks(NULL);

	if (rc < 0)
		raise_not_json(reader->req, reader->len);
	if (rc == 0)
		return NULL;
	if (GetDatabaseEncoding() != PG_UTF8)
		tree_to_server(element, true);
	return element;
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
