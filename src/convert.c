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
 * src/convert.c
 *
 *-------------------------------------------------------------------------
 */
#include "maestro.h"

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
	if (!cJSON_IsObject(object))
		return NULL;
	return cJSON_GetObjectItemCaseSensitive(object, key);
}

/*
 * The list in a list response: "data" as an array (the spec), "data" as an
 * object wrapping the array under wrapper_key (SDK beta.1), or a bare array.
 */
const cJSON *
maestro_json_list(const cJSON *root, const char *wrapper_key)
{
	const cJSON *data;

	if (cJSON_IsArray(root))
		return root;
	data = maestro_json_member(root, "data");
	if (cJSON_IsArray(data))
		return data;
	if (wrapper_key != NULL)
	{
		const cJSON *inner = maestro_json_member(data, wrapper_key);

		if (cJSON_IsArray(inner))
			return inner;
		inner = maestro_json_member(root, wrapper_key);
		if (cJSON_IsArray(inner))
			return inner;
	}
	return NULL;
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

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return c - 'A' + 10;
}

/* Canonical uuid text, optionally in braces as the spec's pattern allows. */
Datum
maestro_json_to_uuid(const cJSON *item, bool *isnull)
{
	char		text[37];
	const char *s;
	size_t		len;
	pg_uuid_t  *uuid;
	int			i,
				j;

	*isnull = true;
	if (!cJSON_IsString(item))
		return (Datum) 0;
	s = item->valuestring;
	len = strlen(s);
	if (len == 38 && s[0] == '{' && s[37] == '}')
	{
		s++;
		len -= 2;
	}
	if (len != 36)
		return (Datum) 0;
	memcpy(text, s, 36);
	text[36] = '\0';
	if (!maestro_is_uuid(text))
		return (Datum) 0;

	uuid = palloc(sizeof(pg_uuid_t));
	for (i = 0, j = 0; i < 36; i++)
	{
		if (text[i] == '-')
			continue;
		uuid->data[j / 2] = (j % 2 == 0)
			? (unsigned char) (hex_value(text[i]) << 4)
			: (unsigned char) (uuid->data[j / 2] | hex_value(text[i]));
		j++;
	}
	*isnull = false;
	return UUIDPGetDatum(uuid);
}

static bool
read_digits(const char **p, int count, int *value)
{
	int			i;

	*value = 0;
	for (i = 0; i < count; i++)
	{
		if (!isdigit((unsigned char) **p))
			return false;
		*value = *value * 10 + (**p - '0');
		(*p)++;
	}
	return true;
}

/*
 * RFC 3339 date-time, any number of fractional digits (the API sends 3 and
 * 7), offset Z or +hh:mm/+hhmm; a missing offset is taken as UTC. Parsed
 * by hand so that malformed input is a NULL, never an error.
 */
bool
maestro_parse_rfc3339(const char *text, TimestampTz *result)
{
	const char *p = text;
	struct pg_tm tm;
	fsec_t		fsec = 0;
	int			tz = 0;
	int			leap;
	Timestamp	ts;

	memset(&tm, 0, sizeof(tm));
	if (!read_digits(&p, 4, &tm.tm_year) || *p++ != '-' ||
		!read_digits(&p, 2, &tm.tm_mon) || *p++ != '-' ||
		!read_digits(&p, 2, &tm.tm_mday))
		return false;
	if (*p != 'T' && *p != 't' && *p != ' ')
		return false;
	p++;
	if (!read_digits(&p, 2, &tm.tm_hour) || *p++ != ':' ||
		!read_digits(&p, 2, &tm.tm_min) || *p++ != ':' ||
		!read_digits(&p, 2, &tm.tm_sec))
		return false;
	if (*p == '.' || *p == ',')
	{
		int			scale = 100000;

		p++;
		if (!isdigit((unsigned char) *p))
			return false;
		while (isdigit((unsigned char) *p))
		{
			fsec += (*p - '0') * scale;
			scale /= 10;
			p++;
		}
	}
	if (*p == 'Z' || *p == 'z')
		p++;
	else if (*p == '+' || *p == '-')
	{
		int			sign = (*p == '-') ? -1 : 1;
		int			hours,
					minutes;

		p++;
		if (!read_digits(&p, 2, &hours))
			return false;
		if (*p == ':')
			p++;
		if (!read_digits(&p, 2, &minutes) || hours > 23 || minutes > 59)
			return false;
		/* PostgreSQL counts zones in seconds west of Greenwich */
		tz = -sign * (hours * SECS_PER_HOUR + minutes * SECS_PER_MINUTE);
	}
	if (*p != '\0')
		return false;

	if (tm.tm_year < 1 || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1)
		return false;
	leap = isleap(tm.tm_year) ? 1 : 0;
	if (tm.tm_mday > day_tab[leap][tm.tm_mon - 1] ||
		tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
		return false;

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
	double		value;

	*isnull = true;
	if (!cJSON_IsNumber(item))
		return (Datum) 0;
	value = item->valuedouble;
	if (value != (double) (int64) value || value < PG_INT32_MIN || value > PG_INT32_MAX)
		return (Datum) 0;
	*isnull = false;
	return Int32GetDatum((int32) value);
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
	if (!cJSON_IsArray(item))
		return (Datum) 0;
	elems = palloc(sizeof(Datum) * Max(cJSON_GetArraySize(item), 1));
	cJSON_ArrayForEach(element, item)
	{
		if (!cJSON_IsString(element))
			return (Datum) 0;
		elems[n++] = CStringGetTextDatum(element->valuestring);
	}
	*isnull = false;
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}
