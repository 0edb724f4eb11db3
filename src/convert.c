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
 * only builds the Datums.
 *
 * src/convert.c
 *
 *-------------------------------------------------------------------------
 */
#include "maestro.h"
#include "parse.h"

#include "catalog/pg_type.h"
#include "datatype/timestamp.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
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
maestro_json_to_uuid(const cJSON *item, bool *isnull)
{
	pg_uuid_t  *uuid;
	unsigned char bytes[UUID_LEN];

	*isnull = true;
	if (!cJSON_IsString(item) || !maestro_uuid_decode(item->valuestring, bytes))
		return (Datum) 0;
	uuid = palloc(sizeof(pg_uuid_t));
	memcpy(uuid->data, bytes, UUID_LEN);
	*isnull = false;
	return UUIDPGetDatum(uuid);
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

/* Any JSON value but null; printed by cJSON, parsed by jsonb_in. */
Datum
maestro_json_to_jsonb(const cJSON *item, bool *isnull)
{
	*isnull = (item == NULL || cJSON_IsNull(item));
	if (*isnull)
		return (Datum) 0;
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(maestro_json_print(item)));
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
