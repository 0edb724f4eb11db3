/*-------------------------------------------------------------------------
 *
 * parse.h
 *		What a byte sequence from Maestro means, without the PostgreSQL
 *		backend: uuid text, RFC 3339 timestamps, JSON numbers and string
 *		arrays, the list in a list response, the members of a small flat
 *		object, the error body's message, and the redaction of secrets.
 *
 * This header and parse.c use only libc and cJSON, so that the same code
 * is compiled into the extension (convert.c and errors.c wrap it) and into
 * the fuzzer in test/fuzz/, which runs without a server. It must never
 * include a PostgreSQL header.
 *
 * Nothing here raises or exits. Functions that build text write into a
 * MaestroText, whose memory comes from an allocator the caller injects
 * (palloc_extended without OOM errors in the extension, malloc in the
 * fuzzer); when an allocation fails they return false and the caller
 * decides what to report.
 *
 * src/parse.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef MAESTRO_PARSE_H
#define MAESTRO_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

/* Longest message taken from an error body, in bytes, before "..." */
#define MAESTRO_MAX_MESSAGE_BYTES 500
/* How many entries of an RFC 9457 errors[] list are quoted */
#define MAESTRO_MAX_LISTED_ERRORS 10

/*
 * Where a MaestroText's memory comes from. alloc_fn and free_fn are
 * required; realloc_fn may be NULL (then growing copies). None may raise
 * or longjmp: out of memory is a NULL result.
 */
typedef struct MaestroAllocator
{
	void	   *(*alloc_fn) (size_t size);
	void	   *(*realloc_fn) (void *ptr, size_t size);
	void		(*free_fn) (void *ptr);
} MaestroAllocator;

/*
 * A growable NUL-terminated string. After maestro_text_init, data is
 * never NULL unless failed is set; once failed, appends do nothing.
 */
typedef struct MaestroText
{
	char	   *data;
	size_t		len;			/* bytes before the terminating NUL */
	size_t		cap;			/* bytes allocated */
	bool		failed;			/* an allocation failed */
	const MaestroAllocator *mem;
} MaestroText;

extern bool maestro_text_init(MaestroText *text, const MaestroAllocator *mem);
extern bool maestro_text_append(MaestroText *text, const char *bytes, size_t len);
extern bool maestro_text_append_str(MaestroText *text, const char *str);
extern bool maestro_text_append_char(MaestroText *text, char c);
extern void maestro_text_free(MaestroText *text);

/* UTF-8 as PostgreSQL accepts it: no NUL, no surrogates, nothing overlong */
extern bool maestro_utf8_is_valid(const char *bytes, size_t len);

/* uuid text: 8-4-4-4-12 hex digits, either case */
extern bool maestro_uuid_is_canonical(const char *text);
/* canonical uuid text, each brace of {...} optional as in the spec; false leaves uuid untouched */
extern bool maestro_uuid_decode(const char *text, unsigned char uuid[16]);

/*
 * An RFC 3339 date-time in its parts, as written (not normalised to UTC).
 * second may be 60 (a leap second).
 */
typedef struct MaestroDateTime
{
	int			year;			/* 1..9999 */
	int			month;			/* 1..12 */
	int			day;			/* 1..days in that month */
	int			hour;			/* 0..23 */
	int			minute;			/* 0..59 */
	int			second;			/* 0..60 */
	int			microsecond;	/* 0..999999; digits past the sixth dropped */
	int			offset_seconds; /* east of UTC: "+02:00" is 7200; none is 0 */
} MaestroDateTime;

extern bool maestro_rfc3339_decode(const char *text, MaestroDateTime *dt);

/* JSON values */
extern const cJSON *maestro_object_member(const cJSON *object, const char *key);
extern const cJSON *maestro_response_list(const cJSON *root, const char *wrapper_key);
extern bool maestro_number_to_int32(const cJSON *item, int32_t *value);
extern bool maestro_is_string_array(const cJSON *item);
/* a number cJSON prints with "%g" as digits * 10^-scale, without printing it */
extern bool maestro_double_decimal(double d, int64_t *digits, int *scale);

/*
 * The list in a list response without parsing the whole body into one
 * tree (parse.c says how). maestro_list_locate validates everything but
 * the chosen list's elements and puts the offset of the list's '[' in
 * *list; maestro_list_next, from *pos = *list, gives each element's byte
 * span (1), the end of the list (0) or a malformed list (-1); each element
 * is then parsed with maestro_list_element_parse (NULL: not valid). cJSON
 * allocates through whatever hooks the caller installed.
 */
#define MAESTRO_LIST_INVALID	(-1)	/* the body is not JSON cJSON accepts */
#define MAESTRO_LIST_ABSENT		0	/* valid JSON holding no list */
#define MAESTRO_LIST_FOUND		1
extern int	maestro_list_locate(const char *body, size_t len, const char *wrapper_key,
								size_t *list);
extern int	maestro_list_next(const char *body, size_t len, size_t *pos,
							  size_t *start, size_t *elem_len);
extern cJSON *maestro_list_element_parse(const char *element, size_t len);
/* the same two steps in one: the next element parsed (1), 0 or -1 as above */
extern int	maestro_list_next_parsed(const char *body, size_t len, size_t *pos,
									 cJSON **element);

/*
 * maestro_list_locate in two halves, for a caller that reads the list to
 * its end: maestro_list_begin may leave what follows the list unchecked
 * (when the list is the root's "data" array), and maestro_list_end checks
 * it, given the offset of the list's ']' (where maestro_list_next_parsed
 * returned 0), reading nothing before that. Begin's verdict, the
 * elements' and end's together are maestro_list_locate's and the
 * elements'.
 */
typedef struct MaestroListWalk
{
	size_t		list;			/* offset of the list's '[' */
	bool		wrapper_seen;	/* wrapper_key was met at the root before the list */
	bool		unchecked;		/* what follows the list is for maestro_list_end */
} MaestroListWalk;

extern int	maestro_list_begin(const char *body, size_t len, const char *wrapper_key,
							   MaestroListWalk *walk);
extern bool maestro_list_end(const char *body, size_t len, const char *wrapper_key,
							 MaestroListWalk *walk, size_t close);

/*
 * A small object read without a cJSON tree, such as a trigger's answer
 * (two uuid and URL strings, where cJSON's parse was a twentieth of a
 * trigger call's instructions). It reads only an object whose member
 * values are all strings without escapes, true, false or null, white
 * space around it aside; values[i] is then the first member named
 * keys[i], exactly as cJSON's parse and cJSON_GetObjectItemCaseSensitive
 * would find it. Anything else (escapes or a NUL byte in a string,
 * numbers, nested values, other JSON, what is not JSON, and more than
 * MAESTRO_FLAT_MAX_KEYS keys) returns false, with values[] meaningless,
 * and the caller parses the body with cJSON.
 */
#define MAESTRO_FLAT_MAX_KEYS 8
typedef enum MaestroFlatKind
{
	MAESTRO_FLAT_ABSENT = 0,
	MAESTRO_FLAT_STRING,		/* text[0..len) inside the body, no quotes */
	MAESTRO_FLAT_TRUE,
	MAESTRO_FLAT_FALSE,
	MAESTRO_FLAT_NULL
} MaestroFlatKind;

typedef struct MaestroFlatValue
{
	MaestroFlatKind kind;
	const char *text;
	size_t		len;
} MaestroFlatValue;

extern bool maestro_flat_object_read(const char *body, size_t len, const char *const *keys,
									 int nkeys, MaestroFlatValue *values);

/*
 * The API's own words in an error body, whatever its shape; root is the
 * body parsed as JSON, or NULL when it is not (valid UTF-8) JSON. The
 * message is appended to out, unredacted, and is valid UTF-8.
 */
extern bool maestro_error_text(const char *body, size_t len, const char *content_type,
							   const cJSON *root, MaestroText *out);

/* text with URL query strings and bearer tokens replaced, appended to out */
extern bool maestro_redact_text(const char *text, MaestroText *out);

/*
 * DocuSign's rate-limit headers of a response (X-RateLimit-Limit,
 * -Remaining and -Reset, X-BurstLimit-Limit and -Remaining, in this
 * order), read line by line as libcurl's header callback gets them; -1:
 * absent or not a non-negative integer. Only the last response of a
 * transfer counts: a status line starts over, and lines after the header
 * block's end (trailers) are ignored. A header that comes twice counts
 * the first time. Beside them: whether a Retry-After header came (the
 * worker's back-off tells a 429 without one apart).
 */
#define MAESTRO_RATE_HEADERS 5
typedef struct MaestroRateHeaders
{
	int64_t		value[MAESTRO_RATE_HEADERS];
	bool		retry_after;	/* a Retry-After header came */
	bool		ended;			/* the header block has ended */
} MaestroRateHeaders;

extern void maestro_rate_headers_reset(MaestroRateHeaders *seen);
extern void maestro_rate_header_line(MaestroRateHeaders *seen, const char *line, size_t len);

#endif							/* MAESTRO_PARSE_H */
