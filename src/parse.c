/*-------------------------------------------------------------------------
 *
 * parse.c
 *		Deciding what the bytes of a Maestro response mean, in plain C.
 *
 * This file owns every judgement about untrusted text from the API that
 * does not need the backend:
 *
 *	- uuid text (canonical, or in braces) and its 16 bytes;
 *	- RFC 3339 date-times, broken down into their fields;
 *	- whether a JSON number fits an int32, which short decimal cJSON
 *	  prints for a double, whether a JSON value is an array of strings,
 *	  and where the list is in a list response;
 *	- the message in an error body of any shape (API-NOTES.md section 6),
 *	  and the redaction of URL query strings and bearer tokens;
 *	- the rate-limit headers of a response, line by line.
 *
 * It includes no PostgreSQL header: convert.c and errors.c wrap it with
 * Datums, palloc and ereport, and test/fuzz/fuzz_parsers.c links it alone
 * with cJSON and malloc. Nothing here raises, exits or reads past the
 * bytes it is given; a failed allocation is a false result. Character
 * classes are ASCII, whatever the locale.
 *
 * src/parse.c
 *
 *-------------------------------------------------------------------------
 */
#include "parse.h"

#include <string.h>

#define TEXT_INITIAL_SIZE 64

/* ---------------------------------------------------------------------
 * MaestroText: a growable string on an injected allocator
 * ---------------------------------------------------------------------
 */

bool
maestro_text_init(MaestroText *text, const MaestroAllocator *mem)
{
	text->mem = mem;
	text->len = 0;
	text->failed = false;
	text->data = mem->alloc_fn(TEXT_INITIAL_SIZE);
	if (text->data == NULL)
	{
		text->cap = 0;
		text->failed = true;
		return false;
	}
	text->cap = TEXT_INITIAL_SIZE;
	text->data[0] = '\0';
	return true;
}

/* Room for extra more bytes and the NUL; on failure the old data stays. */
static bool
text_reserve(MaestroText *text, size_t extra)
{
	size_t		need;
	size_t		cap;
	char	   *data;

	if (text->failed)
		return false;
	if (extra > SIZE_MAX / 4 - text->len)
	{
		text->failed = true;
		return false;
	}
	need = text->len + extra + 1;
	if (need <= text->cap)
		return true;
	cap = text->cap;
	while (cap < need)
		cap *= 2;
	if (text->mem->realloc_fn != NULL)
		data = text->mem->realloc_fn(text->data, cap);
	else
	{
		data = text->mem->alloc_fn(cap);
		if (data != NULL)
		{
			memcpy(data, text->data, text->len + 1);
			text->mem->free_fn(text->data);
		}
	}
	if (data == NULL)
	{
		text->failed = true;
		return false;
	}
	text->data = data;
	text->cap = cap;
	return true;
}

bool
maestro_text_append(MaestroText *text, const char *bytes, size_t len)
{
	if (!text_reserve(text, len))
		return false;
	memcpy(text->data + text->len, bytes, len);
	text->len += len;
	text->data[text->len] = '\0';
	return true;
}

bool
maestro_text_append_str(MaestroText *text, const char *str)
{
	return maestro_text_append(text, str, strlen(str));
}

bool
maestro_text_append_char(MaestroText *text, char c)
{
	return maestro_text_append(text, &c, 1);
}

void
maestro_text_free(MaestroText *text)
{
	if (text->data != NULL)
		text->mem->free_fn(text->data);
	text->data = NULL;
	text->len = 0;
	text->cap = 0;
}

/* ---------------------------------------------------------------------
 * Characters
 * ---------------------------------------------------------------------
 */

static bool
is_ascii_space(unsigned char c)
{
	return c == ' ' || (c >= '\t' && c <= '\r');
}

static bool
is_ascii_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* a table, not branches: every instance row decodes three uuids */
static const signed char hex_values[256] = {
	['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5,
	['5'] = 6, ['6'] = 7, ['7'] = 8, ['8'] = 9, ['9'] = 10,
	['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
	['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16
};

/* 0..15, or -1 for anything but an ASCII hex digit (entries are value + 1) */
static int
hex_value(unsigned char c)
{
	return hex_values[c] - 1;
}

static unsigned char
ascii_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char) (c - 'A' + 'a') : c;
}

/* Does text begin with prefix (lower case), ignoring ASCII case? */
static bool
has_prefix_ci(const char *text, const char *prefix)
{
	for (; *prefix; text++, prefix++)
	{
		if (ascii_lower((unsigned char) *text) != (unsigned char) *prefix)
			return false;		/* also where text ends */
	}
	return true;
}

/*
 * Length of the well-formed UTF-8 character at s (at most avail bytes), or
 * 0 if there is none: the rules of PostgreSQL's pg_utf8_islegal, with NUL
 * rejected as pg_verify_mbstr does.
 */
static size_t
utf8_char_length(const unsigned char *s, size_t avail)
{
	unsigned char c = s[0];
	size_t		n;
	size_t		i;
	unsigned char lo = 0x80,
				hi = 0xBF;

	if (c == 0)
		return 0;
	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		n = 2;
	else if (c >= 0xE0 && c <= 0xEF)
		n = 3;
	else if (c >= 0xF0 && c <= 0xF4)
		n = 4;
	else
		return 0;
	if (avail < n)
		return 0;
	/* the second byte's range excludes overlongs, surrogates, > U+10FFFF */
	if (c == 0xE0)
		lo = 0xA0;
	else if (c == 0xED)
		hi = 0x9F;
	else if (c == 0xF0)
		lo = 0x90;
	else if (c == 0xF4)
		hi = 0x8F;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i < n; i++)
	{
		if (s[i] < 0x80 || s[i] > 0xBF)
			return 0;
	}
	return n;
}

bool
maestro_utf8_is_valid(const char *bytes, size_t len)
{
	const unsigned char *s = (const unsigned char *) bytes;
	size_t		i = 0;

	while (i < len)
	{
		size_t		n = utf8_char_length(s + i, len - i);

		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

/* Append bytes with every byte that is not well-formed UTF-8 as '?'. */
static bool
append_utf8(MaestroText *out, const char *bytes, size_t len)
{
	const unsigned char *s = (const unsigned char *) bytes;
	size_t		i = 0;

	while (i < len)
	{
		size_t		start = i;

		/* the longest well-formed run, copied at once */
		while (i < len)
		{
			size_t		n = utf8_char_length(s + i, len - i);

			if (n == 0)
				break;
			i += n;
		}
		if (!maestro_text_append(out, bytes + start, i - start))
			return false;
		if (i < len)
		{
			if (!maestro_text_append_char(out, '?'))
				return false;
			i++;
		}
	}
	return true;
}

static bool
append_utf8_str(MaestroText *out, const char *str)
{
	return append_utf8(out, str, strlen(str));
}

/* ---------------------------------------------------------------------
 * uuids
 * ---------------------------------------------------------------------
 */

/*
 * Canonical 8-4-4-4-12 hex text; what uuid_out produces and what the API
 * puts in its paths.
 */
bool
maestro_uuid_is_canonical(const char *text)
{
	int			i;

	if (text == NULL)
		return false;
	for (i = 0; i < 36; i++)
	{
		unsigned char c = (unsigned char) text[i];

		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (c != '-')
				return false;
		}
		else if (hex_value(c) < 0)
			return false;		/* also where the text ends */
	}
	return text[36] == '\0';
}

/*
 * Canonical uuid text, with the braces the spec's pattern allows: its
 * ^[{]?...[}]?$ makes each one optional on its own, and schema-valid
 * answers (Prism's, for one) do carry a lone "{" or "}". One pass: every
 * instance row decodes three.
 */
bool
maestro_uuid_decode(const char *text, unsigned char uuid[16])
{
	/* where each byte's two hex digits start in 8-4-4-4-12 */
	static const unsigned char digit_at[16] = {
		0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34
	};
	unsigned char bytes[16];
	const unsigned char *p = (const unsigned char *) text;
	int			i;

	size_t		len;

	if (text == NULL)
		return false;
	if (p[0] == '{')
		p++;
	/* 36 characters and a closing brace, or none, whether or not one opened */
	len = strnlen((const char *) p, 38);
	if (!(len == 36 || (len == 37 && p[36] == '}')))
		return false;
	if (p[8] != '-' || p[13] != '-' || p[18] != '-' || p[23] != '-')
		return false;
	for (i = 0; i < 16; i++)
	{
		int			hi = hex_value(p[digit_at[i]]);
		int			lo = hex_value(p[digit_at[i] + 1]);

		if ((hi | lo) < 0)
			return false;
		bytes[i] = (unsigned char) (hi << 4 | lo);
	}
	memcpy(uuid, bytes, 16);
	return true;
}

/* ---------------------------------------------------------------------
 * RFC 3339 date-times
 * ---------------------------------------------------------------------
 */

/* count digits exactly; on failure *p may have moved, the caller gives up */
static bool
read_digits(const char **p, int count, int *value)
{
	int			i;

	*value = 0;
	for (i = 0; i < count; i++)
	{
		if (!is_ascii_digit((unsigned char) **p))
			return false;
		*value = *value * 10 + (**p - '0');
		(*p)++;
	}
	return true;
}

/* *p is c: step over it; otherwise stay (never past the end) */
static bool
read_char(const char **p, char c)
{
	if (**p != c)
		return false;
	(*p)++;
	return true;
}

static int
days_in_month(int year, int month)
{
	static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool		leap = (year % 4 == 0) && (year % 100 != 0 || year % 400 == 0);

	return (month == 2 && leap) ? 29 : days[month - 1];
}

/*
 * RFC 3339 date-time, any number of fractional digits (the API sends 3 and
 * 7; past the sixth they are dropped), the separator T, t or a space, and
 * the offset Z, z, +hh:mm or +hhmm; a missing offset is taken as UTC.
 * Nothing may follow. Parsed by hand so that malformed input is a false,
 * never an error. Whether the instant fits a timestamp is the caller's
 * question.
 */
bool
maestro_rfc3339_decode(const char *text, MaestroDateTime *dt)
{
	const char *p = text;
	MaestroDateTime v;

	if (text == NULL)
		return false;
	memset(&v, 0, sizeof(v));
	if (!read_digits(&p, 4, &v.year) || !read_char(&p, '-') ||
		!read_digits(&p, 2, &v.month) || !read_char(&p, '-') ||
		!read_digits(&p, 2, &v.day))
		return false;
	if (*p != 'T' && *p != 't' && *p != ' ')
		return false;
	p++;
	if (!read_digits(&p, 2, &v.hour) || !read_char(&p, ':') ||
		!read_digits(&p, 2, &v.minute) || !read_char(&p, ':') ||
		!read_digits(&p, 2, &v.second))
		return false;
	if (*p == '.' || *p == ',')
	{
		int			scale = 100000;

		p++;
		if (!is_ascii_digit((unsigned char) *p))
			return false;
		while (is_ascii_digit((unsigned char) *p))
		{
			v.microsecond += (*p - '0') * scale;
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
		v.offset_seconds = sign * (hours * 3600 + minutes * 60);
	}
	if (*p != '\0')
		return false;

	if (v.year < 1 || v.month < 1 || v.month > 12 || v.day < 1 ||
		v.day > days_in_month(v.year, v.month) ||
		v.hour > 23 || v.minute > 59 || v.second > 60)
		return false;
	*dt = v;
	return true;
}

/* ---------------------------------------------------------------------
 * JSON values
 * ---------------------------------------------------------------------
 */

const cJSON *
maestro_object_member(const cJSON *object, const char *key)
{
	if (!cJSON_IsObject(object))
		return NULL;
	return cJSON_GetObjectItemCaseSensitive(object, key);
}

/*
 * The list in a list response: "data" as an array (the spec), "data" as an
 * object wrapping the array under wrapper_key (SDK beta.1), the array
 * under wrapper_key at the top, or a bare array.
 */
const cJSON *
maestro_response_list(const cJSON *root, const char *wrapper_key)
{
	const cJSON *data;

	if (cJSON_IsArray(root))
		return root;
	data = maestro_object_member(root, "data");
	if (cJSON_IsArray(data))
		return data;
	if (wrapper_key != NULL)
	{
		const cJSON *inner = maestro_object_member(data, wrapper_key);

		if (cJSON_IsArray(inner))
			return inner;
		inner = maestro_object_member(root, wrapper_key);
		if (cJSON_IsArray(inner))
			return inner;
	}
	return NULL;
}

/*
 * An integral JSON number within int32. The range is tested before any
 * conversion: casting a double outside the target type (1e300, inf, NaN)
 * is undefined behaviour in C.
 */
bool
maestro_number_to_int32(const cJSON *item, int32_t *value)
{
	double		d;

	if (!cJSON_IsNumber(item))
		return false;
	d = item->valuedouble;
	if (!(d >= -2147483648.0 && d <= 2147483647.0))
		return false;			/* NaN fails this too */
	if (d != (double) (int32_t) d)
		return false;
	*value = (int32_t) d;
	return true;
}

/*
 * The decimal cJSON prints for a number that is not an int: "%1.15g" when
 * that reads back as the same double, else "%1.17g" (print_number). Most
 * numbers an API sends are short decimals such as 9.99, and for those
 * the answer needs no printing: if digits / 10^scale, with fewer than 16
 * digits, is exactly d once rounded to a double (an IEEE division of two
 * exactly representable values is correctly rounded), then it is the
 * only decimal of 15 significant digits that rounds to d (DBL_DIG is 15),
 * so "%1.15g" prints it and cJSON keeps that printing. The smallest such
 * scale is taken, so digits has no trailing zero and scale is the number
 * of digits after the point in the printing (in "1.5e-07" too). False
 * when d is no such decimal: then the printing has to be done.
 */
bool
maestro_double_decimal(double d, int64_t *digits, int *scale)
{
	static const double pow10[16] = {
		1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7,
		1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15
	};
	int			k;

	for (k = 0; k < 16; k++)
	{
		double		scaled = d * pow10[k];
		int64_t		m;

		/* fewer than 16 digits, so exactly representable; NaN and inf fail */
		if (!(scaled < 1e15 && scaled > -1e15))
			return false;
		/* the nearest integer: adding 0.5 is exact below 2^52 */
		m = (int64_t) (scaled < 0 ? scaled - 0.5 : scaled + 0.5);
		if ((double) m / pow10[k] == d)
		{
			*digits = m;
			*scale = k;
			return true;
		}
	}
	return false;
}

/* An array whose every element is a string; [] is one. */
bool
maestro_is_string_array(const cJSON *item)
{
	const cJSON *element;

	if (!cJSON_IsArray(item))
		return false;
	cJSON_ArrayForEach(element, item)
	{
		if (!cJSON_IsString(element) || element->valuestring == NULL)
			return false;
	}
	return true;
}

/* ---------------------------------------------------------------------
 * Error bodies
 * ---------------------------------------------------------------------
 */

static const char *
string_member(const cJSON *object, const char *key)
{
	const cJSON *item = maestro_object_member(object, key);

	return cJSON_IsString(item) ? item->valuestring : NULL;
}

/*
 * Visible text of a plain or HTML body: tags dropped, white space and
 * control characters collapsed to one space, at most
 * MAESTRO_MAX_MESSAGE_BYTES bytes (whole characters) and "..." when there
 * was more; bytes that are not UTF-8 become '?'.
 */
static bool
append_body_text(MaestroText *out, const char *body, size_t len, bool html)
{
	const unsigned char *s = (const unsigned char *) body;
	size_t		base = out->len;
	size_t		i = 0;
	bool		in_tag = false;
	bool		space = false;

	while (i < len && out->len - base < MAESTRO_MAX_MESSAGE_BYTES)
	{
		unsigned char c = s[i];
		size_t		n;

		if (html && c == '<')
			in_tag = true;
		if (in_tag)
		{
			if (c == '>')
			{
				in_tag = false;
				space = out->len > base;
			}
			i++;
			continue;
		}
		if (is_ascii_space(c) || c < 0x20 || c == 0x7f)
		{
			space = out->len > base;
			i++;
			continue;
		}
		if (space && !maestro_text_append_char(out, ' '))
			return false;
		space = false;
		n = utf8_char_length(s + i, len - i);
		if (n == 0)
		{
			if (!maestro_text_append_char(out, '?'))
				return false;
			i++;
		}
		else
		{
			if (!maestro_text_append(out, body + i, n))
				return false;
			i += n;
		}
	}
	if (i < len)
		return maestro_text_append_str(out, "...");
	return !out->failed;
}

/* The RFC 9457 errors[] list: " (target: message [CODE]; ...)". */
static bool
append_problem_errors(MaestroText *out, const cJSON *errors)
{
	const cJSON *entry;
	int			n = 0;

	if (!cJSON_IsArray(errors))
		return true;
	cJSON_ArrayForEach(entry, errors)
	{
		const char *code = string_member(entry, "code");
		const char *message = string_member(entry, "message");
		const char *target = string_member(entry, "target");

		if (n++ >= MAESTRO_MAX_LISTED_ERRORS)
		{
			maestro_text_append_str(out, "; ...");
			break;
		}
		maestro_text_append_str(out, n == 1 ? " (" : "; ");
		if (target)
		{
			append_utf8_str(out, target);
			maestro_text_append_str(out, ": ");
		}
		append_utf8_str(out, message ? message : "(no message)");
		if (code)
		{
			maestro_text_append_str(out, " [");
			append_utf8_str(out, code);
			maestro_text_append_char(out, ']');
		}
		if (out->failed)
			return false;
	}
	if (n > 0)
		maestro_text_append_char(out, ')');
	return !out->failed;
}

/* "first: second" */
static bool
append_pair(MaestroText *out, const char *first, const char *second)
{
	append_utf8_str(out, first);
	maestro_text_append_str(out, ": ");
	append_utf8_str(out, second);
	return !out->failed;
}

/*
 * The API's own words for what went wrong, whatever shape the body has:
 * RFC 9457 problem details (title, detail, errors[]), Maestro's {error,
 * code}, OAuth's {error, error_description}, eSignature's {errorCode,
 * message}, {message}, plain text, or HTML with its tags dropped. It
 * branches on the body, not on the Content-Type, which the API does not
 * keep consistent; content_type only helps to spot HTML. The message is
 * cut to MAESTRO_MAX_MESSAGE_BYTES (on a character boundary) plus "...".
 */
bool
maestro_error_text(const char *body, size_t len, const char *content_type,
				   const cJSON *root, MaestroText *out)
{
	size_t		start = out->len;

	if (out->failed)
		return false;
	if (body == NULL)
		len = 0;
	if (len == 0)
		maestro_text_append_str(out, "(empty response body)");
	else if (cJSON_IsObject(root))
	{
		const char *title = string_member(root, "title");
		const char *detail = string_member(root, "detail");
		const char *error = string_member(root, "error");
		const char *description = string_member(root, "error_description");
		const char *error_code = string_member(root, "errorCode");
		const char *message = string_member(root, "message");

		if (title || detail)
		{
			/* RFC 9457 problem details */
			if (title && detail)
				append_pair(out, title, detail);
			else
				append_utf8_str(out, title ? title : detail);
			append_problem_errors(out, maestro_object_member(root, "errors"));
		}
		else if (error && description)
			append_pair(out, error, description);	/* OAuth */
		else if (error)
			append_utf8_str(out, error);	/* Maestro {error, code} */
		else if (error_code && message)
			append_pair(out, error_code, message);	/* eSignature */
		else if (message)
			append_utf8_str(out, message);
		else
			append_body_text(out, body, len, false);
	}
	else
	{
		bool		html = (content_type && strstr(content_type, "html") != NULL) ||
			body[0] == '<';

		append_body_text(out, body, len, html);
	}
	if (out->failed)
		return false;
	/* an HTML page with nothing outside its tags, or only white space */
	if (out->len == start)
		maestro_text_append_str(out, "(no text in the response body)");
	if (out->failed)
		return false;

	if (out->len - start > MAESTRO_MAX_MESSAGE_BYTES)
	{
		size_t		cut = start + MAESTRO_MAX_MESSAGE_BYTES;

		/* never split a character: back up to the start of the one cut */
		while (cut > start && ((unsigned char) out->data[cut] & 0xC0) == 0x80)
			cut--;
		out->data[cut] = '\0';
		out->len = cut;
		maestro_text_append_str(out, "...");
	}
	return !out->failed;
}

/* ---------------------------------------------------------------------
 * Redaction
 * ---------------------------------------------------------------------
 */

/* where a URL in running text ends */
static bool
ends_url(char c)
{
	return c == '\0' || is_ascii_space((unsigned char) c) || c == '"' || c == '\'' ||
		c == '<' || c == '>';
}

/*
 * Remove what must never reach a log: the query string of any URL (an
 * instance_url carries the mtsec secret in it) becomes "?<redacted>", and
 * "Bearer" with the blanks and token after it becomes "Bearer <redacted>".
 * Everything else is copied byte for byte.
 */
bool
maestro_redact_text(const char *text, MaestroText *out)
{
	const char *p = text;

	if (out->failed)
		return false;
	if (text == NULL)
		return true;
	while (*p)
	{
		if (has_prefix_ci(p, "http://") || has_prefix_ci(p, "https://"))
		{
			const char *from = p;

			/* copy the URL up to its query, drop the query */
			while (!ends_url(*p) && *p != '?')
				p++;
			maestro_text_append(out, from, (size_t) (p - from));
			if (*p == '?')
			{
				maestro_text_append_str(out, "?<redacted>");
				while (!ends_url(*p))
					p++;
			}
		}
		else if (has_prefix_ci(p, "bearer") && (p[6] == ' ' || p[6] == '\t'))
		{
			/* "Bearer <redacted>", however many blanks stood before the token */
			maestro_text_append(out, p, 6);
			maestro_text_append_str(out, " <redacted>");
			p += 6;
			while (*p == ' ' || *p == '\t')
				p++;
			while (*p && !is_ascii_space((unsigned char) *p) && *p != '"' && *p != '\'')
				p++;
		}
		else
		{
			const char *from = p++;

			/* up to where a URL or "bearer" could begin */
			while (*p && *p != 'h' && *p != 'H' && *p != 'b' && *p != 'B')
				p++;
			maestro_text_append(out, from, (size_t) (p - from));
		}
		if (out->failed)
			return false;
	}
	return true;
}

/* ---------------------------------------------------------------------
 * The list in a list response, found without building its tree
 * ---------------------------------------------------------------------
 *
 * A list of 10,000 instances parsed whole by cJSON takes several times
 * the body's size in nodes. maestro_list_locate walks only the envelope
 * (the root, and "data" when it is an object) and finds the list's
 * elements by their brackets; each element is then parsed on its own by
 * the caller, so no more than one element's tree exists at a time.
 *
 * What is accepted is what cJSON_ParseWithLength accepts for the whole
 * body (trailing bytes after the root value included), with the same
 * choice of list as maestro_response_list: every value outside the list
 * is parsed by cJSON here, every element of the chosen list by the caller
 * (maestro_list_element_parse), and the elements of an array that could
 * have been the list but was not are parsed here after the walk. The
 * one difference: cJSON's nesting limit counts from the element, not from
 * the root (two levels at most).
 */

/* cJSON's white space: every byte up to and including the space */
static size_t
json_skip_ws(const char *s, size_t len, size_t pos)
{
	while (pos < len && (unsigned char) s[pos] <= 32)
		pos++;
	return pos;
}

/* a byte cJSON's parse_value can start with */
static bool
json_value_start(char c)
{
	return c == 'n' || c == 'f' || c == 't' || c == '"' || c == '-' ||
		(c >= '0' && c <= '9') || c == '[' || c == '{';
}

/*
 * Parse the one value at s[pos..len) with cJSON; on success *end is just
 * past it. The tree is returned to the caller (or deleted when out is
 * NULL).
 */
static bool
json_parse_at(const char *s, size_t len, size_t pos, size_t *end, cJSON **out)
{
	const char *stop = NULL;
	cJSON	   *item;

	if (pos >= len || !json_value_start(s[pos]))
		return false;
	item = cJSON_ParseWithLengthOpts(s + pos, len - pos, &stop, false);
	if (item == NULL)
		return false;
	*end = (size_t) (stop - s);
	if (out)
		*out = item;
	else
		cJSON_Delete(item);
	return true;
}

/*
 * Where the value starting at s[pos] (not white space) ends, by its
 * brackets and strings alone: no check of what lies between. A scalar
 * ends at the first byte that cannot follow it in a container.
 */
static bool
json_skim(const char *s, size_t len, size_t pos, size_t *end)
{
	size_t		depth = 0;

	if (pos >= len)
		return false;
	if (s[pos] != '[' && s[pos] != '{' && s[pos] != '"')
	{
		size_t		p = pos;

		while (p < len && (unsigned char) s[p] > 32 && s[p] != ',' && s[p] != ']' &&
			   s[p] != '}')
			p++;
		if (p == pos)
			return false;
		*end = p;
		return true;
	}
	for (; pos < len; pos++)
	{
		char		c = s[pos];

		if (c == '"')
		{
			/* the string ends at the next quote after an even run of backslashes */
			size_t		q = pos + 1;

			for (;;)
			{
				const char *hit = memchr(s + q, '"', len - q);
				size_t		backslashes = 0;

				if (hit == NULL)
					return false;
				q = (size_t) (hit - s);
				while (q - backslashes > pos + 1 && s[q - backslashes - 1] == '\\')
					backslashes++;
				if (backslashes % 2 == 0)
					break;
				q++;
			}
			pos = q;
			if (depth == 0)
			{
				*end = pos + 1;
				return true;
			}
		}
		else if (c == '[' || c == '{')
			depth++;
		else if (c == ']' || c == '}')
		{
			if (--depth == 0)
			{
				*end = pos + 1;
				return true;
			}
		}
	}
	return false;
}

/*
 * From *pos (the list's '[', or the ',' or ']' after an element) to where
 * the next element starts, in *next: 1 when there is one, 0 at the end of
 * the list (with *pos on its ']'), -1 when the bytes are no list.
 */
static int
list_advance(const char *body, size_t len, size_t *pos, size_t *next)
{
	size_t		p = *pos;

	if (p >= len)
		return -1;
	if (body[p] == '[')
	{
		p = json_skip_ws(body, len, p + 1);
		if (p < len && body[p] == ']')
		{
			*pos = p;
			return 0;
		}
	}
	else if (body[p] == ',')
		p = json_skip_ws(body, len, p + 1);
	else if (body[p] == ']')
		return 0;
	else
		return -1;
	*next = p;
	return 1;
}

int
maestro_list_next(const char *body, size_t len, size_t *pos, size_t *start, size_t *elem_len)
{
	size_t		p = 0;
	size_t		end;
	int			step = list_advance(body, len, pos, &p);

	if (step != 1)
		return step;
	if (!json_skim(body, len, p, &end))
		return -1;
	*start = p;
	*elem_len = end - p;
	/* the next call starts at the ',' or ']' after the element */
	p = json_skip_ws(body, len, end);
	if (p >= len || (body[p] != ',' && body[p] != ']'))
		return -1;
	*pos = p;
	return 1;
}

int
maestro_list_next_parsed(const char *body, size_t len, size_t *pos, cJSON **element)
{
	size_t		p = 0;
	size_t		end;
	int			step;

	*element = NULL;
	step = list_advance(body, len, pos, &p);
	if (step != 1)
		return step;
	/* cJSON finds where the element ends: no second pass over its bytes */
	if (!json_parse_at(body, len, p, &end, element))
		return -1;
	p = json_skip_ws(body, len, end);
	if (p >= len || (body[p] != ',' && body[p] != ']'))
	{
		cJSON_Delete(*element);
		*element = NULL;
		return -1;
	}
	*pos = p;
	return 1;
}

cJSON *
maestro_list_element_parse(const char *element, size_t len)
{
	size_t		end;
	cJSON	   *item = NULL;

	if (!json_parse_at(element, len, 0, &end, &item))
		return NULL;
	if (end != len)
	{
		cJSON_Delete(item);
		return NULL;
	}
	return item;
}

/*
 * The string at s[pos] (its opening quote) when it has no escape and no
 * NUL byte: its bytes in *text and *tlen, *end just past its closing
 * quote. cJSON reads such a string as exactly these bytes (it keeps other
 * control bytes as they are; a NUL would end its copy early). memchr
 * looks at many bytes at a time, where a loop testing each byte cost
 * twice as much as the rest of the reading.
 */
static bool
flat_string_at(const char *s, size_t len, size_t pos, const char **text, size_t *tlen,
			   size_t *end)
{
	const char *start = s + pos + 1;
	const char *close;

	if (pos >= len || s[pos] != '"')
		return false;
	close = memchr(start, '"', len - pos - 1);
	if (close == NULL || memchr(start, '\\', (size_t) (close - start)) != NULL ||
		memchr(start, '\0', (size_t) (close - start)) != NULL)
		return false;
	*text = start;
	*tlen = (size_t) (close - start);
	*end = (size_t) (close - s) + 1;
	return true;
}

/* true, false or null at s[pos]: cJSON compares the four or five bytes */
static MaestroFlatKind
flat_literal_at(const char *s, size_t len, size_t pos, size_t *end)
{
	static const struct
	{
		const char *word;
		size_t		len;
		MaestroFlatKind kind;
	}			literals[] = {
		{"true", 4, MAESTRO_FLAT_TRUE},
		{"false", 5, MAESTRO_FLAT_FALSE},
		{"null", 4, MAESTRO_FLAT_NULL},
	};
	int			i;

	for (i = 0; i < 3; i++)
	{
		if (len - pos >= literals[i].len &&
			memcmp(s + pos, literals[i].word, literals[i].len) == 0)
		{
			*end = pos + literals[i].len;
			return literals[i].kind;
		}
	}
	return MAESTRO_FLAT_ABSENT;
}

bool
maestro_flat_object_read(const char *body, size_t len, const char *const *keys, int nkeys,
						 MaestroFlatValue *values)
{
	size_t		pos;
	size_t		key_lens[MAESTRO_FLAT_MAX_KEYS];
	int			i;

	if (body == NULL || nkeys > MAESTRO_FLAT_MAX_KEYS)
		return false;
	for (i = 0; i < nkeys; i++)
	{
		values[i].kind = MAESTRO_FLAT_ABSENT;
		key_lens[i] = strlen(keys[i]);
	}
	pos = json_skip_ws(body, len, 0);
	if (pos >= len || body[pos] != '{')
		return false;
	pos = json_skip_ws(body, len, pos + 1);
	if (pos < len && body[pos] == '}')
		return json_skip_ws(body, len, pos + 1) == len;
	for (;;)
	{
		const char *key;
		size_t		key_len;
		MaestroFlatValue value;

		if (!flat_string_at(body, len, pos, &key, &key_len, &pos))
			return false;
		pos = json_skip_ws(body, len, pos);
		if (pos >= len || body[pos] != ':')
			return false;
		pos = json_skip_ws(body, len, pos + 1);
		if (pos >= len)
			return false;
		value.text = NULL;
		value.len = 0;
		if (body[pos] == '"')
		{
			if (!flat_string_at(body, len, pos, &value.text, &value.len, &pos))
				return false;
			value.kind = MAESTRO_FLAT_STRING;
		}
		else if ((value.kind = flat_literal_at(body, len, pos, &pos)) == MAESTRO_FLAT_ABSENT)
			return false;

		/* the first member of a name is the one cJSON finds */
		for (i = 0; i < nkeys; i++)
		{
			if (values[i].kind == MAESTRO_FLAT_ABSENT &&
				key_lens[i] == key_len && memcmp(keys[i], key, key_len) == 0)
			{
				values[i] = value;
				break;
			}
		}

		pos = json_skip_ws(body, len, pos);
		if (pos < len && body[pos] == ',')
		{
			pos = json_skip_ws(body, len, pos + 1);
			continue;
		}
		if (pos < len && body[pos] == '}')
			return json_skip_ws(body, len, pos + 1) == len;
		return false;
	}
}

/* Every element of the array at s[pos] parses: where it ends, or false. */
static bool
json_array_check(const char *s, size_t len, size_t pos, bool parse, size_t *end)
{
	size_t		p = pos;
	size_t		start,
				elen;
	int			rc;

	while ((rc = maestro_list_next(s, len, &p, &start, &elen)) == 1)
	{
		if (parse)
		{
			cJSON	   *item = maestro_list_element_parse(s + start, elen);

			if (item == NULL)
				return false;
			cJSON_Delete(item);
		}
	}
	if (rc < 0)
		return false;
	*end = p + 1;				/* past the ']' maestro_list_next stopped at */
	return true;
}

/* The key at s[pos] (a JSON string): its decoded text, or NULL. */
static cJSON *
json_key_at(const char *s, size_t len, size_t pos, size_t *end)
{
	cJSON	   *key = NULL;

	if (pos >= len || s[pos] != '"' || !json_parse_at(s, len, pos, end, &key))
		return NULL;
	if (!cJSON_IsString(key) || key->valuestring == NULL)
	{
		cJSON_Delete(key);
		return NULL;
	}
	return key;
}

typedef struct ListCandidates
{
	const char *wrapper_key;
	size_t		data_array;		/* 0: none (an array never starts at 0 here) */
	size_t		data_wrapped;
	size_t		root_wrapped;
	bool		data_seen;
	bool		stop_at_data;	/* stop the walk at the root's "data" array */
	bool		stopped;		/* and it did: the rest is still unchecked */
	bool		wrapper_seen;	/* at the root, when it stopped */
} ListCandidates;

static bool json_walk_members(const char *s, size_t len, size_t pos, int level,
							  ListCandidates *cand, bool wrapper_seen, bool after_value,
							  size_t *end);

/*
 * The object at s[pos]: every member value parsed by cJSON except the
 * arrays that may be the list, which are only skimmed and recorded.
 * level 0 is the root, 1 the first "data" member.
 */
static bool
json_walk_object(const char *s, size_t len, size_t pos, int level,
				 ListCandidates *cand, size_t *end)
{
	pos = json_skip_ws(s, len, pos + 1);
	if (pos < len && s[pos] == '}')
	{
		*end = pos + 1;
		return true;
	}
	return json_walk_members(s, len, pos, level, cand, false, false, end);
}

/*
 * An object's members from s[pos], a key, or (after_value) from just past
 * a member's value. With cand->stop_at_data, the root's "data" array ends
 * the walk there (cand->stopped), with nothing after it checked yet.
 */
static bool
json_walk_members(const char *s, size_t len, size_t pos, int level,
				  ListCandidates *cand, bool wrapper_seen, bool after_value, size_t *end)
{
	for (;;)
	{
		if (!after_value)
		{
			cJSON	   *key;
			const char *name;
			size_t		vend = 0;
			bool		ok;
			size_t	   *slot = NULL;
			bool		descend = false;

			key = json_key_at(s, len, pos, &pos);
			if (key == NULL)
				return false;
			name = key->valuestring;
			if (level == 0 && !cand->data_seen && strcmp(name, "data") == 0)
			{
				cand->data_seen = true;
				slot = &cand->data_array;
				descend = true;
			}
			else if (cand->wrapper_key != NULL && !wrapper_seen &&
					 strcmp(name, cand->wrapper_key) == 0)
			{
				wrapper_seen = true;
				slot = (level == 0) ? &cand->root_wrapped : &cand->data_wrapped;
			}
			cJSON_Delete(key);

			pos = json_skip_ws(s, len, pos);
			if (pos >= len || s[pos] != ':')
				return false;
			pos = json_skip_ws(s, len, pos + 1);
			if (slot != NULL && pos < len && s[pos] == '[')
			{
				*slot = pos;
				if (slot == &cand->data_array && cand->stop_at_data)
				{
					/* the first choice whatever follows: the caller reads it */
					cand->stopped = true;
					cand->wrapper_seen = wrapper_seen;
					*end = pos;
					return true;
				}
				ok = json_array_check(s, len, pos, false, &vend);
			}
			else if (descend && pos < len && s[pos] == '{')
				ok = json_walk_object(s, len, pos, 1, cand, &vend);
			else
				ok = json_parse_at(s, len, pos, &vend, NULL);
			if (!ok)
				return false;
			pos = vend;
		}
		after_value = false;
		pos = json_skip_ws(s, len, pos);
		if (pos < len && s[pos] == ',')
		{
			pos = json_skip_ws(s, len, pos + 1);
			continue;
		}
		if (pos < len && s[pos] == '}')
		{
			*end = pos + 1;
			return true;
		}
		return false;
	}
}

static int
list_locate(const char *body, size_t len, const char *wrapper_key, bool lazy,
			MaestroListWalk *walk)
{
	ListCandidates cand;
	size_t		pos = 0;
	size_t		end;
	size_t		chosen;
	size_t		others[3];
	int			i;

	memset(walk, 0, sizeof(*walk));
	if (body == NULL || len == 0)
		return MAESTRO_LIST_INVALID;
	memset(&cand, 0, sizeof(cand));
	cand.wrapper_key = wrapper_key;
	cand.stop_at_data = lazy;
	/* cJSON skips a byte order mark before the root value only (and only in a body of 5 bytes or more) */
	if (len > 4 && memcmp(body, "\xEF\xBB\xBF", 3) == 0)
		pos = 3;
	pos = json_skip_ws(body, len, pos);
	if (pos >= len)
		return MAESTRO_LIST_INVALID;
	if (body[pos] == '[')
	{
		if (!json_array_check(body, len, pos, false, &end))
			return MAESTRO_LIST_INVALID;
		walk->list = pos;
		return MAESTRO_LIST_FOUND;
	}
	if (body[pos] != '{')
		return json_parse_at(body, len, pos, &end, NULL) ?
			MAESTRO_LIST_ABSENT : MAESTRO_LIST_INVALID;
	if (!json_walk_object(body, len, pos, 0, &cand, &end))
		return MAESTRO_LIST_INVALID;
	if (cand.stopped)
	{
		/*
		 * An array under wrapper_key before the list is not chosen: parsed
		 * now, so that nothing before the list is read again (a reader may
		 * give back the body's pages behind it).
		 */
		if (cand.root_wrapped != 0 &&
			!json_array_check(body, len, cand.root_wrapped, true, &end))
			return MAESTRO_LIST_INVALID;
		walk->list = cand.data_array;
		walk->wrapper_seen = cand.wrapper_seen;
		walk->unchecked = true;
		return MAESTRO_LIST_FOUND;
	}

	/* maestro_response_list's order; the arrays not chosen must parse too */
	chosen = cand.data_array ? cand.data_array :
		cand.data_wrapped ? cand.data_wrapped : cand.root_wrapped;
	others[0] = cand.data_array;
	others[1] = cand.data_wrapped;
	others[2] = cand.root_wrapped;
	for (i = 0; i < 3; i++)
	{
		if (others[i] != 0 && others[i] != chosen &&
			!json_array_check(body, len, others[i], true, &end))
			return MAESTRO_LIST_INVALID;
	}
	if (chosen == 0)
		return MAESTRO_LIST_ABSENT;
	walk->list = chosen;
	return MAESTRO_LIST_FOUND;
}

int
maestro_list_locate(const char *body, size_t len, const char *wrapper_key, size_t *list)
{
	MaestroListWalk walk;
	int			rc = list_locate(body, len, wrapper_key, false, &walk);

	if (rc == MAESTRO_LIST_FOUND)
		*list = walk.list;
	return rc;
}

/*
 * The root's "data" array, where the spec puts the list, is the list
 * whatever follows it; skimming it whole first only to find where the
 * envelope goes on would be a second pass over nearly the whole body.
 * So the walk stops there, and the rest is checked by maestro_list_end
 * once the caller has read the list to its ']', with the same verdict as
 * maestro_list_locate's in the end. Everything before the list is checked
 * here and never read again. Any other shape is located whole.
 */
int
maestro_list_begin(const char *body, size_t len, const char *wrapper_key,
				   MaestroListWalk *walk)
{
	return list_locate(body, len, wrapper_key, true, walk);
}

bool
maestro_list_end(const char *body, size_t len, const char *wrapper_key,
				 MaestroListWalk *walk, size_t close)
{
	ListCandidates cand;
	size_t		end;

	if (!walk->unchecked)
		return true;
	if (close >= len || body[close] != ']')
		return false;
	memset(&cand, 0, sizeof(cand));
	cand.wrapper_key = wrapper_key;
	cand.data_seen = true;
	/* the root's members after the list; nothing before it is read */
	if (!json_walk_members(body, len, close + 1, 0, &cand, walk->wrapper_seen, true, &end))
		return false;
	/* an array under wrapper_key after the list is not chosen */
	if (cand.root_wrapped != 0 && !json_array_check(body, len, cand.root_wrapped, true, &end))
		return false;
	walk->unchecked = false;
	return true;
}

/* ---------------------------------------------------------------------
 * Rate-limit headers
 * ---------------------------------------------------------------------
 */

/* the headers, lower case, in MaestroRateHeaders.value's order */
static const char *const rate_header_names[MAESTRO_RATE_HEADERS] = {
	"x-ratelimit-limit",
	"x-ratelimit-remaining",
	"x-ratelimit-reset",
	"x-burstlimit-limit",
	"x-burstlimit-remaining",
};

void
maestro_rate_headers_reset(MaestroRateHeaders *seen)
{
	int			i;

	for (i = 0; i < MAESTRO_RATE_HEADERS; i++)
		seen->value[i] = -1;
	seen->retry_after = false;
	seen->ended = false;
}

/* A header's value as a non-negative integer, or -1; spaces around it. */
static int64_t
rate_header_number(const char *p, const char *end)
{
	int64_t		value = 0;
	bool		digits = false;

	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	for (; p < end && is_ascii_digit((unsigned char) *p); p++)
	{
		if (value > (INT64_MAX - 9) / 10)
			return -1;
		value = value * 10 + (*p - '0');
		digits = true;
	}
	while (p < end && is_ascii_space((unsigned char) *p))
		p++;
	return digits && p == end ? value : -1;
}

/*
 * Reading the headers here, as they pass, costs a third of looking each
 * one up once the transfer is done (curl_easy_header walks every header
 * for each name): 1.5% of a trigger call's instructions.
 */
void
maestro_rate_header_line(MaestroRateHeaders *seen, const char *line, size_t len)
{
	const char *end = line + len;
	int			i;

	if (len >= 5 && memcmp(line, "HTTP/", 5) == 0)
	{
		maestro_rate_headers_reset(seen);
		return;
	}
	if (len == 0 || line[0] == '\r' || line[0] == '\n')
	{
		seen->ended = true;
		return;
	}
	if (seen->ended)
		return;
	if (len > 12 && has_prefix_ci(line, "retry-after:"))
	{
		seen->retry_after = true;
		return;
	}
	if (len < 2 || ascii_lower((unsigned char) line[0]) != 'x' || line[1] != '-')
		return;
	for (i = 0; i < MAESTRO_RATE_HEADERS; i++)
	{
		const char *name = rate_header_names[i];
		size_t		name_len = strlen(name);
		size_t		k;

		if (len <= name_len || line[name_len] != ':')
			continue;
		for (k = 2; k < name_len; k++)
		{
			if (ascii_lower((unsigned char) line[k]) != (unsigned char) name[k])
				break;
		}
		if (k < name_len)
			continue;
		if (seen->value[i] == -1)
			seen->value[i] = rate_header_number(line + name_len + 1, end);
		return;
	}
}
