/*-------------------------------------------------------------------------
 *
 * fuzz_parsers.c
 *		libFuzzer target for what maestro makes of a hostile response body:
 *		the JSON-to-row conversions and the error-body parser, through
 *		src/parse.c, without a server.
 *
 * Each input is used three ways:
 *
 *	1. as a 2xx body: parsed by cJSON and, if an object or array, walked
 *	   as functions.c and worker.c walk workflow lists, instance lists and
 *	   single instances (every column: uuid, text, RFC 3339 timestamps,
 *	   int32, string arrays, nested objects printed for jsonb, and the
 *	   numbers in them that convert.c builds without printing), trigger
 *	   requirements (trigger-input rows) and the trigger response, which
 *	   is also read without a tree and checked against cJSON's reading;
 *	2. as an error body: the message extracted with no Content-Type, with
 *	   text/html and with application/problem+json, then redacted; also
 *	   with allocators that fail part way;
 *	3. as one string: through the RFC 3339 and uuid parsers;
 *	4. as a list response read element by element (maestro_list_locate,
 *	   maestro_list_next, maestro_list_element_parse), checked against
 *	   cJSON's parse of the whole body: the same verdict, the same list,
 *	   the same elements; and read in two halves as json.c reads it
 *	   (maestro_list_begin, the elements, maestro_list_end), with the
 *	   same verdict.
 *
 * Beyond "no crash, no leak, no undefined behaviour", it checks what the
 * callers rely on and aborts (a crash libFuzzer reports) when it fails:
 * messages are valid UTF-8, at most 503 bytes, and keep no URL query or
 * bearer token; decoded timestamps and uuids are in range and round-trip;
 * cJSON's printed jsonb text parses again.
 *
 * test/fuzz/fuzz_parsers.c
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "parse.h"

#define CHECK(cond) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "fuzz_parsers: check failed at %s:%d: %s\n", \
					__FILE__, __LINE__, #cond); \
			abort(); \
		} \
	} while (0)

/* ---------------------------------------------------------------------
 * Allocators: plain malloc, and one that fails after a number of calls
 * ---------------------------------------------------------------------
 */

static void *
plain_alloc(size_t size)
{
	return malloc(size);
}

static void *
plain_realloc(void *ptr, size_t size)
{
	return realloc(ptr, size);
}

static void
plain_free(void *ptr)
{
	free(ptr);
}

static const MaestroAllocator plain = {plain_alloc, plain_realloc, plain_free};
/* no realloc_fn: MaestroText grows by copying */
static const MaestroAllocator plain_no_realloc = {plain_alloc, NULL, plain_free};

static int	failing_budget;

static void *
failing_alloc(size_t size)
{
	if (failing_budget-- <= 0)
		return NULL;
	return malloc(size);
}

static void *
failing_realloc(void *ptr, size_t size)
{
	if (failing_budget-- <= 0)
		return NULL;
	return realloc(ptr, size);
}

static const MaestroAllocator failing = {failing_alloc, failing_realloc, plain_free};

/* ---------------------------------------------------------------------
 * Column conversions, as convert.c does them
 * ---------------------------------------------------------------------
 */

/* the sink keeps the compiler from dropping what is computed */
static volatile size_t sink;

static int
hex_digit_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* A decoded uuid is the text's hex digits, in order. */
static void
check_uuid(const char *text)
{
	unsigned char uuid[16];
	const char *s;
	int			i,
				j;

	if (!maestro_uuid_decode(text, uuid))
		return;
	/* each brace is optional on its own */
	s = (text[0] == '{') ? text + 1 : text;
	CHECK(strlen(s) == 36u || (strlen(s) == 37u && s[36] == '}'));
	CHECK(maestro_uuid_is_canonical(text) == (text[0] != '{' && strlen(text) == 36u));
	for (i = 0, j = 0; i < 36; i++)
	{
		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			CHECK(s[i] == '-');
			continue;
		}
		CHECK(hex_digit_value(s[i]) == ((j % 2 == 0) ? uuid[j / 2] >> 4 : uuid[j / 2] & 0xF));
		j++;
	}
}

/*
 * The body's lines as a response's header lines: every value read is -1
 * or the number a reference reading gives for the header's first line
 * after the last status line (and before the block's end).
 */
static void
check_rate_headers(const char *body, size_t size)
{
	static const char *const names[MAESTRO_RATE_HEADERS] = {
		"x-ratelimit-limit:", "x-ratelimit-remaining:", "x-ratelimit-reset:",
		"x-burstlimit-limit:", "x-burstlimit-remaining:"
	};
	MaestroRateHeaders seen;
	size_t		start = 0;
	int			i;

	maestro_rate_headers_reset(&seen);
	while (start < size)
	{
		const char *line = body + start;
		const char *nl = memchr(line, '\n', size - start);
		size_t		len = nl ? (size_t) (nl - line) + 1 : size - start;
		MaestroRateHeaders before = seen;
		bool		status_line = len >= 5 && memcmp(line, "HTTP/", 5) == 0;

		maestro_rate_header_line(&seen, line, len);
		/* set only by its own header in the block, cleared only by a status line */
		if (seen.retry_after && !before.retry_after)
			CHECK(!before.ended && len > 12 && strncasecmp(line, "retry-after:", 12) == 0);
		if (!seen.retry_after && before.retry_after)
			CHECK(status_line);
		for (i = 0; i < MAESTRO_RATE_HEADERS; i++)
		{
			size_t		name_len = strlen(names[i]);
			bool		named = !before.ended && len > name_len &&
				strncasecmp(line, names[i], name_len) == 0;

			CHECK(seen.value[i] >= -1);
			/* a line changes at most its own header's value, once */
			if (seen.value[i] != before.value[i] && !(len >= 5 && memcmp(line, "HTTP/", 5) == 0))
			{
				CHECK(named && before.value[i] == -1);
				if (named)
				{
					char	   *copy = strndup(line + name_len, len - name_len);
					char	   *endp;
					long long	v;

					if (copy == NULL)
						return;
					v = strtoll(copy, &endp, 10);
					CHECK(v == seen.value[i]);
					free(copy);
				}
			}
		}
		start += len;
	}
}

static void
check_timestamp(const char *text)
{
	MaestroDateTime dt;

	if (!maestro_rfc3339_decode(text, &dt))
		return;
	CHECK(dt.year >= 1 && dt.year <= 9999);
	CHECK(dt.month >= 1 && dt.month <= 12);
	CHECK(dt.day >= 1 && dt.day <= 31);
	CHECK(dt.hour >= 0 && dt.hour <= 23);
	CHECK(dt.minute >= 0 && dt.minute <= 59);
	CHECK(dt.second >= 0 && dt.second <= 60);
	CHECK(dt.microsecond >= 0 && dt.microsecond <= 999999);
	CHECK(dt.offset_seconds >= -(23 * 3600 + 59 * 60) &&
		  dt.offset_seconds <= 23 * 3600 + 59 * 60);
	CHECK(dt.offset_seconds % 60 == 0);
}

/* maestro_json_to_text: strings, numbers (printed by cJSON) and booleans */
static void
column_text(const cJSON *item)
{
	if (cJSON_IsString(item))
		sink += strlen(item->valuestring);
	else if (cJSON_IsNumber(item))
	{
		char	   *printed = cJSON_PrintUnformatted(item);

		if (printed != NULL)
		{
			sink += strlen(printed);
			free(printed);
		}
	}
	else if (cJSON_IsBool(item))
		sink += cJSON_IsTrue(item);
}

static void
column_uuid(const cJSON *item)
{
	if (cJSON_IsString(item))
		check_uuid(item->valuestring);
}

static void
column_timestamptz(const cJSON *item)
{
	if (cJSON_IsString(item))
		check_timestamp(item->valuestring);
}

static void
column_int4(const cJSON *item)
{
	int32_t		value;

	if (maestro_number_to_int32(item, &value))
	{
		CHECK(cJSON_IsNumber(item));
		CHECK((double) value == item->valuedouble);
		sink += (size_t) value;
	}
}

static void
column_text_array(const cJSON *item)
{
	const cJSON *element;

	if (!maestro_is_string_array(item))
		return;
	cJSON_ArrayForEach(element, item)
		sink += strlen(element->valuestring);
}

/*
 * maestro_double_decimal: when it finds digits and a scale for a number,
 * they are the decimal cJSON prints for it (the value numeric_in reads,
 * with as many digits after the point), "%d", "%1.15g" with or without an
 * exponent alike. Compared as sign, digits without leading zeros, scale.
 */
static void
check_double_decimal(const cJSON *item)
{
	int64_t		digits;
	int			scale;
	char	   *printed;
	const char *p;
	char		want[64];
	char		got[64];
	size_t		n = 0;
	int			frac = 0,
				exponent = 0,
				got_scale;
	int			negative = 0;
	uint64_t	magnitude;

	if (!maestro_double_decimal(item->valuedouble, &digits, &scale))
		return;
	CHECK(scale >= 0 && scale <= 15);
	CHECK(digits > -1000000000000000LL && digits < 1000000000000000LL);
	CHECK(scale == 0 || digits % 10 != 0);
	printed = cJSON_PrintUnformatted(item);
	if (printed == NULL)
		return;
	p = printed;
	if (*p == '-')
	{
		negative = 1;
		p++;
	}
	for (; *p >= '0' && *p <= '9'; p++)
		if (n > 0 || *p != '0')
			got[n++] = *p;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++, frac++)
			if (n > 0 || *p != '0')
				got[n++] = *p;
	if (*p == 'e' || *p == 'E')
		exponent = atoi(p + 1);
	got[n] = '\0';
	got_scale = frac - exponent;
	CHECK(got_scale >= 0);		/* no "1e+20" for fewer than 16 digits */
	magnitude = digits < 0 ? (uint64_t) -digits : (uint64_t) digits;
	if (magnitude == 0)
		want[0] = '\0';
	else
		snprintf(want, sizeof(want), "%llu", (unsigned long long) magnitude);
	CHECK(strcmp(got, want) == 0);
	CHECK(got_scale == scale);
	CHECK(magnitude == 0 || negative == (digits < 0));
	free(printed);
}

static void
check_numbers(const cJSON *item)
{
	for (; item != NULL; item = item->next)
	{
		if (cJSON_IsNumber(item))
			check_double_decimal(item);
		check_numbers(item->child);
	}
}

/*
 * maestro_json_to_jsonb: any value but null, printed by cJSON for jsonb_in.
 * What cJSON prints must be JSON again, or jsonb_in would reject it.
 */
static void
column_jsonb(const cJSON *item)
{
	char	   *printed;
	cJSON	   *again;

	if (item == NULL || cJSON_IsNull(item))
		return;
	printed = cJSON_PrintUnformatted(item);
	if (printed == NULL)
		return;					/* out of memory: an ERROR in maestro */
	again = cJSON_Parse(printed);
	CHECK(again != NULL);
	cJSON_Delete(again);
	free(printed);
}

/* ---------------------------------------------------------------------
 * Rows, as functions.c and worker.c build them
 * ---------------------------------------------------------------------
 */

static void
workflow_row(const cJSON *wf)
{
	const cJSON *meta = maestro_object_member(wf, "metadata");

	column_uuid(maestro_object_member(wf, "id"));
	column_text(maestro_object_member(wf, "name"));
	column_uuid(maestro_object_member(wf, "account_id"));
	column_text(maestro_object_member(wf, "status"));
	column_timestamptz(maestro_object_member(meta, "created_at"));
	column_text(maestro_object_member(meta, "created_by"));
	column_timestamptz(maestro_object_member(meta, "modified_at"));
	column_text(maestro_object_member(meta, "modified_by"));
	column_jsonb(wf);
}

static void
instance_row(const cJSON *inst)
{
	const cJSON *inputs = maestro_object_member(inst, "trigger_inputs");

	if (inputs == NULL)
		inputs = maestro_object_member(inst, "trigger_input");
	column_uuid(maestro_object_member(inst, "id"));
	column_text(maestro_object_member(inst, "name"));
	column_text(maestro_object_member(inst, "workflow_status"));
	column_uuid(maestro_object_member(inst, "template_id"));
	column_uuid(maestro_object_member(inst, "account_id"));
	column_timestamptz(maestro_object_member(inst, "started_at"));
	column_text(maestro_object_member(inst, "started_by"));
	column_text(maestro_object_member(inst, "started_by_name"));
	column_text(maestro_object_member(inst, "started_by_role"));
	column_timestamptz(maestro_object_member(inst, "ended_at"));
	column_timestamptz(maestro_object_member(inst, "expires_at"));
	column_timestamptz(maestro_object_member(inst, "last_modified_at"));
	column_timestamptz(maestro_object_member(inst, "canceled_at"));
	column_text(maestro_object_member(inst, "canceled_by"));
	column_jsonb(inputs);
	column_int4(maestro_object_member(inst, "total_steps"));
	column_int4(maestro_object_member(inst, "last_completed_step"));
	column_text(maestro_object_member(inst, "last_completed_step_name"));
	column_text_array(maestro_object_member(inst, "tags"));
	column_jsonb(maestro_object_member(inst, "metadata"));
	column_jsonb(inst);
}

static void
walk_list(const cJSON *root, const char *wrapper_key, void (*row) (const cJSON *))
{
	const cJSON *list = maestro_response_list(root, wrapper_key);
	const cJSON *element;

	if (list == NULL)
		return;					/* an ERROR in maestro: no list */
	CHECK(cJSON_IsArray(list));
	cJSON_ArrayForEach(element, list)
	{
		if (cJSON_IsObject(element))
			row(element);
	}
}

/* maestro_trigger_inputs: one row per element of trigger_input_schema */
static void
trigger_input_rows(const cJSON *root)
{
	const cJSON *fields = maestro_object_member(root, "trigger_input_schema");
	const cJSON *field;

	cJSON_ArrayForEach(field, fields)
	{
		column_text(maestro_object_member(field, "field_name"));
		column_text(maestro_object_member(field, "field_data_type"));
		column_jsonb(maestro_object_member(field, "default_value"));
	}
}

/* maestro_trigger's row and the worker's reading of the same response */
static void
trigger_response(const cJSON *root)
{
	const cJSON *id = maestro_object_member(root, "instance_id");
	const cJSON *url = maestro_object_member(root, "instance_url");

	column_uuid(id);
	column_text(url);
	if (cJSON_IsString(id))
		sink += maestro_uuid_is_canonical(id->valuestring);
}

/*
 * A trigger's answer read without a tree (maestro_flat_object_read): when
 * it reads the body at all, cJSON's parse of it is an object of strings,
 * booleans and nulls, and each key's member is the one cJSON finds, with
 * the same value.
 */
static void
check_flat_object(const char *body, size_t len, const cJSON *root)
{
	static const char *const keys[] = {"instance_id", "instance_url", "id", "status", ""};
	const int	nkeys = (int) (sizeof(keys) / sizeof(keys[0]));
	MaestroFlatValue values[sizeof(keys) / sizeof(keys[0])];
	const cJSON *child;
	int			i;

	if (!maestro_flat_object_read(body, len, keys, nkeys, values))
		return;
	CHECK(cJSON_IsObject(root));
	cJSON_ArrayForEach(child, root)
		CHECK(cJSON_IsString(child) || cJSON_IsBool(child) || cJSON_IsNull(child));
	for (i = 0; i < nkeys; i++)
	{
		const cJSON *item = maestro_object_member(root, keys[i]);

		switch (values[i].kind)
		{
			case MAESTRO_FLAT_ABSENT:
				CHECK(item == NULL);
				break;
			case MAESTRO_FLAT_STRING:
				CHECK(values[i].text >= body && values[i].text + values[i].len <= body + len);
				CHECK(cJSON_IsString(item));
				CHECK(strlen(item->valuestring) == values[i].len);
				CHECK(memcmp(item->valuestring, values[i].text, values[i].len) == 0);
				break;
			case MAESTRO_FLAT_TRUE:
				CHECK(cJSON_IsTrue(item));
				break;
			case MAESTRO_FLAT_FALSE:
				CHECK(cJSON_IsFalse(item));
				break;
			case MAESTRO_FLAT_NULL:
				CHECK(cJSON_IsNull(item));
				break;
		}
	}
}

static void
walk_body(const cJSON *root)
{
	if (!cJSON_IsObject(root) && !cJSON_IsArray(root))
		return;
	walk_list(root, "workflows", workflow_row);
	walk_list(root, "instances", instance_row);
	if (cJSON_IsObject(root))
	{
		instance_row(root);		/* maestro_instance */
		workflow_row(root);
		trigger_input_rows(root);
		trigger_response(root);
	}
	column_jsonb(root);			/* maestro_trigger_requirements */
	/* the numbers in every jsonb column, as convert.c builds them */
	check_numbers(root);
}

/* ---------------------------------------------------------------------
 * Lists read element by element
 * ---------------------------------------------------------------------
 */

/* deepest bracket nesting outside strings */
static size_t
nesting(const char *s, size_t len)
{
	size_t		depth = 0,
				most = 0,
				i;
	bool		in_string = false;

	for (i = 0; i < len; i++)
	{
		if (in_string)
		{
			if (s[i] == '\\')
				i++;
			else if (s[i] == '"')
				in_string = false;
		}
		else if (s[i] == '"')
			in_string = true;
		else if (s[i] == '[' || s[i] == '{')
			most = ++depth > most ? depth : most;
		else if ((s[i] == ']' || s[i] == '}') && depth > 0)
			depth--;
	}
	return most;
}

/* equal as printed (cJSON_Compare calls inf unequal to itself) */
static void
same_json(const cJSON *a, const cJSON *b)
{
	char	   *pa = cJSON_PrintUnformatted(a);
	char	   *pb = cJSON_PrintUnformatted(b);

	if (pa != NULL && pb != NULL)
		CHECK(strcmp(pa, pb) == 0);
	free(pa);
	free(pb);
}

/*
 * The element-wise reading accepts what cJSON accepts for the whole body
 * and finds the list maestro_response_list finds, element for element.
 * Only the nesting limit differs (it counts from the element), so bodies
 * nested near it are left out of the comparison.
 */
static void
check_list_scan(const char *body, size_t len, const cJSON *root, const char *wrapper_key)
{
	size_t		list = 0,
				pos,
				start,
				elen;
	int			rc = maestro_list_locate(body, len, wrapper_key, &list);
	const cJSON *expected = root ? maestro_response_list(root, wrapper_key) : NULL;
	const cJSON *want = expected ? expected->child : NULL;
	bool		comparable = nesting(body, len) < 990;
	bool		ok = true;
	int			next;

	if (rc == MAESTRO_LIST_INVALID)
	{
		CHECK(root == NULL || !comparable);
		return;
	}
	if (rc == MAESTRO_LIST_ABSENT)
	{
		CHECK(expected == NULL || !comparable);
		CHECK(root != NULL || !comparable);
		return;
	}
	CHECK(rc == MAESTRO_LIST_FOUND);
	CHECK(list < len && body[list] == '[');
	pos = list;
	while ((next = maestro_list_next(body, len, &pos, &start, &elen)) == 1)
	{
		cJSON	   *element;

		CHECK(start >= list && start + elen <= len);
		element = maestro_list_element_parse(body + start, elen);
		if (element == NULL)
		{
			ok = false;
			break;
		}
		if (comparable && root != NULL)
		{
			CHECK(want != NULL);
			same_json(element, want);
			want = want->next;
		}
		if (cJSON_IsObject(element))
			instance_row(element);
		cJSON_Delete(element);
	}
	if (next < 0)
		ok = false;

	/* the one-step reading gives the same elements and the same verdict */
	{
		size_t		pos2 = list;
		size_t		pos3 = list;
		cJSON	   *element;
		int			rc2;

		while ((rc2 = maestro_list_next_parsed(body, len, &pos2, &element)) == 1)
		{
			cJSON	   *again;

			CHECK(maestro_list_next(body, len, &pos3, &start, &elen) == 1);
			again = maestro_list_element_parse(body + start, elen);
			CHECK(again != NULL);
			same_json(element, again);
			CHECK(pos2 == pos3);
			cJSON_Delete(again);
			cJSON_Delete(element);
		}
		CHECK((rc2 == 0) == ok);
	}
	if (!comparable)
		return;
	/* a list cJSON rejects fails in one of its elements */
	CHECK(ok == (root != NULL));
	if (ok)
	{
		CHECK(expected != NULL);
		CHECK(want == NULL);
	}
}

/*
 * The reading in two halves (maestro_list_begin, the elements,
 * maestro_list_end), as json.c does it, reaches the verdict of
 * maestro_list_locate and the elements together, on the same list. It
 * never reads what lies behind the element it has reached: functions.c
 * gives those pages of the body back (they read as zeros afterwards), so
 * here that part of a copy is zeroed after every step.
 */
static void
check_list_halves(const char *body, size_t len, const char *wrapper_key)
{
	MaestroListWalk walk;
	size_t		list = 0,
				pos;
	int			full = maestro_list_locate(body, len, wrapper_key, &list);
	char	   *copy = malloc(len + 1);
	int			rc;
	bool		full_ok = false,
				halves_ok = false;
	cJSON	   *element;
	int			step;

	if (copy == NULL)
		return;
	memcpy(copy, body, len + 1);
	rc = maestro_list_begin(copy, len, wrapper_key, &walk);

	if (full == MAESTRO_LIST_FOUND)
	{
		pos = list;
		while ((step = maestro_list_next_parsed(body, len, &pos, &element)) == 1)
			cJSON_Delete(element);
		full_ok = (step == 0);
	}
	if (rc != MAESTRO_LIST_FOUND)
	{
		CHECK(rc == full);
		CHECK(!walk.unchecked);
		free(copy);
		return;
	}
	CHECK(full != MAESTRO_LIST_ABSENT);
	CHECK(walk.list < len && body[walk.list] == '[');
	if (full == MAESTRO_LIST_FOUND)
		CHECK(walk.list == list);
	else
		CHECK(walk.unchecked);	/* only what follows the list can be wrong */
	pos = walk.list;
	memset(copy, 0, pos);
	while ((step = maestro_list_next_parsed(copy, len, &pos, &element)) == 1)
	{
		cJSON_Delete(element);
		memset(copy, 0, pos);
	}
	if (step == 0)
		halves_ok = maestro_list_end(copy, len, wrapper_key, &walk, pos);
	CHECK(halves_ok == (full == MAESTRO_LIST_FOUND && full_ok));
	free(copy);
}

/* ---------------------------------------------------------------------
 * Error messages and redaction
 * ---------------------------------------------------------------------
 */

static bool
starts_with_ci(const char *s, const char *prefix)
{
	for (; *prefix; s++, prefix++)
	{
		char		c = *s;

		if (c >= 'A' && c <= 'Z')
			c = (char) (c - 'A' + 'a');
		if (c != *prefix)
			return false;
	}
	return true;
}

static bool
url_ends(char c)
{
	return c == '\0' || c == ' ' || (c >= '\t' && c <= '\r') || c == '"' ||
		c == '\'' || c == '<' || c == '>';
}

/*
 * Redacted text keeps no query string (a '?' in a URL is only ever the
 * one before "<redacted>") and no bearer token.
 */
static void
check_redacted(const char *text)
{
	const char *p = text;

	while (*p)
	{
		if (starts_with_ci(p, "http://") || starts_with_ci(p, "https://"))
		{
			while (!url_ends(*p))
			{
				if (*p == '?')
					CHECK(url_ends(p[1]) && strncmp(p + 1, "<redacted>", 10) == 0);
				p++;
			}
		}
		else if (starts_with_ci(p, "bearer") && (p[6] == ' ' || p[6] == '\t'))
		{
			CHECK(strncmp(p + 6, " <redacted>", 11) == 0);
			p += 17;
		}
		else
			p++;
	}
}

static void
redact(const char *text, const MaestroAllocator *mem)
{
	MaestroText out;

	if (!maestro_text_init(&out, mem))
		return;
	if (maestro_redact_text(text, &out))
	{
		CHECK(out.len == strlen(out.data));
		check_redacted(out.data);
		if (maestro_utf8_is_valid(text, strlen(text)))
			CHECK(maestro_utf8_is_valid(out.data, out.len));
	}
	maestro_text_free(&out);
}

static void
error_message(const char *body, size_t len, const char *content_type, const cJSON *root)
{
	MaestroText out;
	MaestroText again;
	int			budget;

	CHECK(maestro_text_init(&out, &plain));
	CHECK(maestro_error_text(body, len, content_type, root, &out));
	/* empty when an HTML page has no text outside its tags */
	CHECK(out.len <= MAESTRO_MAX_MESSAGE_BYTES + 3);
	CHECK(out.len == strlen(out.data));
	CHECK(maestro_utf8_is_valid(out.data, out.len));
	redact(out.data, &plain);

	/* growing by copying gives the same text */
	CHECK(maestro_text_init(&again, &plain_no_realloc));
	CHECK(maestro_error_text(body, len, content_type, root, &again));
	CHECK(again.len == out.len && memcmp(again.data, out.data, out.len) == 0);
	maestro_text_free(&again);

	/* allocation failing part way: false, or the same text; never a crash */
	for (budget = 0; budget < 4; budget++)
	{
		failing_budget = budget;
		if (!maestro_text_init(&again, &failing))
			continue;
		if (maestro_error_text(body, len, content_type, root, &again))
			CHECK(again.len == out.len && memcmp(again.data, out.data, out.len) == 0);
		else
			CHECK(again.failed);
		maestro_text_free(&again);
		failing_budget = budget;
		redact(out.data, &failing);
	}
	maestro_text_free(&out);
}

/* ---------------------------------------------------------------------
 * The entry points
 * ---------------------------------------------------------------------
 */

int			LLVMFuzzerInitialize(int *argc, char ***argv);
int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	cJSON_Hooks hooks = {malloc, free};

	(void) argc;
	(void) argv;
	cJSON_InitHooks(&hooks);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* a response body as http.c hands it on: NUL-terminated after size */
	char	   *body = malloc(size + 1);
	cJSON	   *root;
	bool		utf8;

	if (body == NULL)
		return 0;
	memcpy(body, data, size);
	body[size] = '\0';

	/* 1. a 2xx body */
	root = cJSON_ParseWithLength(body, size);
	walk_body(root);
	check_flat_object(body, size, root);

	/* 2. an error body; json.c hands on a parse only of valid UTF-8 */
	utf8 = maestro_utf8_is_valid(body, size);
	error_message(body, size, NULL, utf8 ? root : NULL);
	error_message(body, size, "text/html; charset=utf-8", utf8 ? root : NULL);
	error_message(body, size, "application/problem+json", utf8 ? root : NULL);
	redact(body, &plain);

	/* 4. a list response read element by element (valid UTF-8 only, as json.c) */
	if (utf8)
	{
		check_list_scan(body, size, root, "instances");
		check_list_scan(body, size, root, "workflows");
		check_list_halves(body, size, "instances");
	}

	/* 5. the bytes as a response's header lines */
	check_rate_headers(body, size);

	/* 3. one string (up to the first NUL) */
	check_timestamp(body);
	check_uuid(body);

	cJSON_Delete(root);
	free(body);
	return 0;
}
