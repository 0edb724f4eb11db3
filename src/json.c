/*-------------------------------------------------------------------------
 *
 * json.c
 *		Parsing Maestro's JSON bodies with cJSON, and printing cJSON values
 *		back to text.
 *
 * cJSON's allocation hooks are process-wide, and another library in the
 * backend may use cJSON with plain malloc. So the palloc hooks are
 * installed only for the length of one parse or print and removed again;
 * the hooks never raise an error, so nothing can skip the removal. Every cJSON node we create therefore lives in the
 * caller's memory context and is released with it, errors included; no
 * cJSON_Delete() is needed or used.
 *
 * src/json.c
 *
 *-------------------------------------------------------------------------
 */
#include "maestro.h"

#include "common/string.h"
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

/*
 * Maestro speaks UTF-8; a database may use another encoding. Every string
 * of a parsed response (keys and values) is converted to the database's
 * encoding by maestro_json_parse, once, so that whatever is built from
 * the tree (text, jsonb) holds text in the encoding PostgreSQL expects.
 * In a UTF-8 (or SQL_ASCII) database nothing is copied. A character the
 * database's encoding cannot hold is an error (22P05, as for a client
 * whose encoding cannot hold it) in a success body; in an error message
 * (strict = false), where the error being reported matters more, it
 * becomes '?'.
 */
static bool
convert_quietly(const char *s, size_t len, char **result)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = true;

	/* the conversion takes no locks or buffers: an error is just dropped */
	PG_TRY();
	{
		*result = pg_any_to_server(s, (int) len, PG_UTF8);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/* Character by character, '?' for each that the encoding cannot hold. */
static char *
convert_lossy(const char *s, size_t len)
{
	StringInfoData out;
	size_t		in = 0;

	initStringInfo(&out);
	while (in < len)
	{
		int			n = IS_HIGHBIT_SET(s[in])
			? Min(Max(pg_utf_mblen((const unsigned char *) s + in), 1), (int) (len - in)) : 1;
		char	   *converted;

		if (n == 1 && !IS_HIGHBIT_SET(s[in]))
			appendStringInfoChar(&out, s[in]);
		else if (convert_quietly(s + in, n, &converted))
			appendStringInfoString(&out, converted);
		else
			appendStringInfoChar(&out, '?');
		in += n;
	}
	return out.data;
}

char *
maestro_utf8_to_server(const char *s, size_t len, bool strict)
{
	char	   *result;

	if (len == 0 || GetDatabaseEncoding() == PG_UTF8 || pg_is_ascii(s))
		return unconstify(char *, s);
	if (strict)
		return pg_any_to_server(s, (int) len, PG_UTF8);
	if (convert_quietly(s, len, &result))
		return result;
	return convert_lossy(s, len);
}

/* Text in the database's encoding, as UTF-8 for a request. */
char *
maestro_server_to_utf8(const char *s)
{
	if (s == NULL || GetDatabaseEncoding() == PG_UTF8)
		return unconstify(char *, s);
	return pg_server_to_any(s, (int) strlen(s), PG_UTF8);
}

static void
tree_to_server(cJSON *item, bool strict)
{
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

/* Parse a success body; anything but JSON is a protocol violation. */
cJSON *
maestro_json_parse(const char *body, size_t len, const MaestroRequest *req)
{
	cJSON	   *root = parse_utf8(body, len);

	if (root == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("Maestro sent a response that is not valid JSON"),
				 errdetail("%s %s answered with %zu bytes that do not parse as UTF-8 JSON.",
						   req->method, req->path, len),
				 errhint("The response may have been cut short or come from a proxy; check base_url.")));
	if (GetDatabaseEncoding() != PG_UTF8)
		tree_to_server(root, true);
	return root;
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
