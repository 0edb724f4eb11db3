/*-------------------------------------------------------------------------
 *
 * convert.c
 *		Tolerant conversion of JSON values from Maestro into Datums.
 *
 * The API's fields drift (API-NOTES.md sections 3, 8 and 13), so every
 * conversion here is total: a missing field, JSON null, or a value that
 * does not fit the column's type yields SQL NULL rather than an error.
 * The raw jsonb column of each row keeps the value as it came.
 *
 * What a value means (a uuid, an RFC 3339 date-time, an int32, a list of
 * strings) is decided in parse.c, which the fuzzer also runs; this file
 * only builds the Datums. jsonb values are built straight from cJSON's
 * tree (a JsonbValue tree, sorted as jsonb_in sorts), never printed and
 * parsed again.
 *
 * src/convert.c
 *
 *-------------------------------------------------------------------------
 */
#include "maestro.h"
#include "parse.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "datatype/timestamp.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/uuid.h"

const cJSON *
maestro_json_member(const cJSON *object, const char *key)
{
	return maestro_object_member(object, key);
}

/* The list in a list response, wherever the API's version put it. */
const cJSON *
maestro_json_list(const cJSON *root, const char *wrapper_key)
{
	return maestro_response_list(root, wrapper_key);
}

Datum
maestro_json_to_text(const cJSON *item, bool *isnull)
{
	*isnull = false;
	if (cJSON_IsString(item))
		return CStringGetTextDatum(item->valuestring);
	if (cJSON_IsNumber(item))
		return CStringGetTextDatum(maestro_json_print(item));
	if (cJSON_IsBool(item))
		return CStringGetTextDatum(cJSON_IsTrue(item) ? "true" : "false");
	*isnull = true;
	return (Datum) 0;
}

/* Canonical uuid text, optionally in braces as the spec's pattern allows. */
Datum
maestro_text_to_uuid(const char *text, bool *isnull)
{
	pg_uuid_t  *uuid;
	unsigned char bytes[UUID_LEN];

	*isnull = true;
	if (text == NULL || !maestro_uuid_decode(text, bytes))
		return (Datum) 0;
	uuid = palloc(sizeof(pg_uuid_t));
	memcpy(uuid->data, bytes, UUID_LEN);
	*isnull = false;
	return UUIDPGetDatum(uuid);
}

/* The same for a JSON string. */
Datum
maestro_json_to_uuid(const cJSON *item, bool *isnull)
{
	return maestro_text_to_uuid(cJSON_IsString(item) ? item->valuestring : NULL, isnull);
}

/*
 * RFC 3339 date-time (parse.c reads it) as a timestamptz: NULL-worthy
 * false when malformed or outside PostgreSQL's range, never an error.
 */
static bool
maestro_parse_rfc3339(const char *text, TimestampTz *result)
{
	MaestroDateTime dt;
	struct pg_tm tm;
	fsec_t		fsec;
	int			tz;
	Timestamp	ts;

	if (!maestro_rfc3339_decode(text, &dt))
		return false;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = dt.year;
	tm.tm_mon = dt.month;
	tm.tm_mday = dt.day;
	tm.tm_hour = dt.hour;
	tm.tm_min = dt.minute;
	tm.tm_sec = dt.second;
	fsec = dt.microsecond;
	/* PostgreSQL counts zones in seconds west of Greenwich */
	tz = -dt.offset_seconds;

	if (tm2timestamp(&tm, fsec, &tz, &ts) != 0 || !IS_VALID_TIMESTAMP(ts))
		return false;
	*result = ts;
	return true;
}

Datum
maestro_json_to_timestamptz(const cJSON *item, bool *isnull)
{
	TimestampTz ts;

	*isnull = true;
	if (!cJSON_IsString(item) || !maestro_parse_rfc3339(item->valuestring, &ts))
		return (Datum) 0;
	*isnull = false;
	return TimestampTzGetDatum(ts);
}

Datum
maestro_json_to_int4(const cJSON *item, bool *isnull)
{
	int32_t		value;

	*isnull = !maestro_number_to_int32(item, &value);
	return *isnull ? (Datum) 0 : Int32GetDatum((int32) value);
}

/*
 * A JSON number as jsonb_in would read cJSON's printing of it: what the
 * API sent is gone once cJSON has made it a double, and the printing is
 * what raw held before it was built directly. An integral value within
 * int32 (the common case: cJSON prints it with "%d") needs no text, nor
 * does a short decimal such as a price (parse.c finds the digits cJSON
 * would print, and numeric_in gives such a text exactly their value with
 * their number of decimals); infinity, which cJSON prints as null, is
 * null.
 */
static void
jsonb_number(const cJSON *item, JsonbValue *v)
{
	double		d = item->valuedouble;
	int64_t		digits;
	int			scale;

	if (isnan(d) || isinf(d))
	{
		v->type = jbvNull;
		return;
	}
	v->type = jbvNumeric;
	if (d == (double) item->valueint)
		v->val.numeric = int64_to_numeric(item->valueint);
	else if (maestro_double_decimal(d, &digits, &scale))
		v->val.numeric = int64_div_fast_to_numeric((int64) digits, scale);
	else
		v->val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in,
															 CStringGetDatum(maestro_json_print(item)),
															 ObjectIdGetDatum(InvalidOid),
															 Int32GetDatum(-1)));
}

/* cJSON strings are UTF-8 without NUL, as the body was checked to be */
static void
jsonb_string(const char *str, JsonbValue *v)
{
	size_t		len = strlen(str);

	if (len > JENTRY_OFFLENMASK)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("string too long to represent as jsonb string"),
				 errdetail("Due to an implementation restriction, jsonb strings cannot exceed %d bytes.",
						   JENTRY_OFFLENMASK)));
	v->type = jbvString;
	v->val.string.val = (char *) str;
	v->val.string.len = (int) len;
}

static void
jsonb_scalar(const cJSON *item, JsonbValue *v)
{
	if (cJSON_IsString(item))
		jsonb_string(item->valuestring, v);
	else if (cJSON_IsNumber(item))
		jsonb_number(item, v);
	else if (cJSON_IsBool(item))
	{
		v->type = jbvBool;
		v->val.boolean = cJSON_IsTrue(item);
	}
	else
		v->type = jbvNull;
}

/* jsonb's key order: shorter first, then bytewise */
static inline int
key_compare(const JsonbPair *a, const JsonbPair *b)
{
	if (a->key.val.string.len != b->key.val.string.len)
		return a->key.val.string.len > b->key.val.string.len ? 1 : -1;
	return memcmp(a->key.val.string.val, b->key.val.string.val, a->key.val.string.len);
}

/* the same, equal keys in the order they came */
static int
pair_compare(const void *a, const void *b)
{
	const JsonbPair *pa = (const JsonbPair *) a;
	const JsonbPair *pb = (const JsonbPair *) b;
	int			res = key_compare(pa, pb);

	if (res == 0)
		res = pa->order < pb->order ? -1 : 1;
	return res;
}

/*
 * Sort an object's members as jsonb stores them and keep the last of
 * duplicated keys: what pushJsonbValue's uniqueifying (and so jsonb_in)
 * makes of the same members in the same order. Objects from the API have
 * a few dozen members at most, for which insertion sort (stable) is the
 * fastest; a larger one is sorted by qsort with the arrival order as the
 * tie-break.
 */
static int
sort_pairs(JsonbPair *pairs, int n)
{
	int			i,
				out;

	if (n <= 32)
	{
		for (i = 1; i < n; i++)
		{
			JsonbPair	tmp = pairs[i];
			int			j = i - 1;

			while (j >= 0 && key_compare(&pairs[j], &tmp) > 0)
			{
				pairs[j + 1] = pairs[j];
				j--;
			}
			pairs[j + 1] = tmp;
		}
	}
	else
		qsort(pairs, n, sizeof(JsonbPair), pair_compare);

	/* of each run of equal keys, the last to arrive */
	out = 0;
	for (i = 0; i < n; i++)
	{
		if (i + 1 < n && key_compare(&pairs[i], &pairs[i + 1]) == 0)
			continue;
		if (out != i)
			pairs[out] = pairs[i];
		out++;
	}
	return out;
}

/*
 * The JsonbValue tree of a cJSON value, built in place: jsonb's own
 * builder (pushJsonbValue) would grow each object and array as it goes
 * and sort every object with qsort; here each is sized once and sorted
 * as above, with the same result.
 */
static void
json_value(const cJSON *item, JsonbValue *v)
{
	const cJSON *child;
	int			n = 0;

	if (!cJSON_IsObject(item) && !cJSON_IsArray(item))
	{
		jsonb_scalar(item, v);
		return;
	}
	/* only containers nest: a scalar needs no check */
	check_stack_depth();
	for (child = item->child; child != NULL; child = child->next)
		n++;
	if (cJSON_IsObject(item))
	{
		JsonbPair  *pairs = palloc(sizeof(JsonbPair) * Max(n, 1));
		int			i = 0;

		for (child = item->child; child != NULL; child = child->next, i++)
		{
			jsonb_string(child->string ? child->string : "", &pairs[i].key);
			json_value(child, &pairs[i].value);
			pairs[i].order = i;
		}
		v->type = jbvObject;
		v->val.object.pairs = pairs;
		v->val.object.nPairs = sort_pairs(pairs, n);
	}
	else
	{
		JsonbValue *elems = palloc(sizeof(JsonbValue) * Max(n, 1));
		int			i = 0;

		for (child = item->child; child != NULL; child = child->next, i++)
			json_value(child, &elems[i]);
		v->type = jbvArray;
		v->val.array.elems = elems;
		v->val.array.nElems = n;
		v->val.array.rawScalar = false;
	}
}

/*
 * Any JSON value but null, built from the parsed tree: no printing, no
 * second parse. The result is what jsonb_in makes of cJSON's printing.
 */
Jsonb *
maestro_json_jsonb(const cJSON *item)
{
	JsonbValue	v;

	json_value(item, &v);
	return JsonbValueToJsonb(&v);	/* a scalar is wrapped as jsonb_in does */
}

Datum
maestro_json_to_jsonb(const cJSON *item, bool *isnull)
{
	*isnull = (item == NULL || cJSON_IsNull(item));
	if (*isnull)
		return (Datum) 0;
	return JsonbPGetDatum(maestro_json_jsonb(item));
}

/*
 * The value of key in an object already built as jsonb (the row's raw),
 * copied out rather than built again; NULL where absent or JSON null.
 */
Datum
maestro_jsonb_member(Jsonb *object, const char *key, bool *isnull)
{
	JsonbValue *v = getKeyJsonValueFromContainer(&object->root, key, strlen(key), NULL);

	*isnull = (v == NULL || v->type == jbvNull);
	if (*isnull)
		return (Datum) 0;
	return JsonbPGetDatum(JsonbValueToJsonb(v));
}

/*
 * The first member named keys[i] of object in items[i] (NULL if absent),
 * in one pass over its members; unique[i] says whether it is the only one.
 * Members usually come in the order of keys, so that order is tried first.
 */
void
maestro_json_members(const cJSON *object, const char *const *keys, int nkeys,
					 const cJSON **items, bool *unique)
{
	const cJSON *child;
	int			next = 0;
	int			i,
				k;

	memset(items, 0, sizeof(const cJSON *) * nkeys);
	for (i = 0; i < nkeys; i++)
		unique[i] = true;
	if (!cJSON_IsObject(object))
		return;
	for (child = object->child; child != NULL; child = child->next)
	{
		if (child->string == NULL)
			continue;
		i = -1;
		if (next < nkeys && strcmp(child->string, keys[next]) == 0)
			i = next;
		else
		{
			for (k = 0; k < nkeys; k++)
			{
				if (strcmp(child->string, keys[k]) == 0)
				{
					i = k;
					break;
				}
			}
		}
		if (i < 0)
			continue;
		next = i + 1;
		if (items[i] == NULL)
			items[i] = child;
		else
			unique[i] = false;
	}
}

/* An array of strings; any other element makes the whole value NULL. */
Datum
maestro_json_to_text_array(const cJSON *item, bool *isnull)
{
	const cJSON *element;
	Datum	   *elems;
	int			n = 0;

	*isnull = true;
	if (!maestro_is_string_array(item))
		return (Datum) 0;
	elems = palloc(sizeof(Datum) * Max(cJSON_GetArraySize(item), 1));
	cJSON_ArrayForEach(element, item)
		elems[n++] = CStringGetTextDatum(element->valuestring);
	*isnull = false;
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}
