/*
 * test/bench/bench_client.c: the limit the benchmarks compare maestro with,
 * a plain C client on libcurl and cJSON doing the same work outside the
 * database. It links src/parse.c, so uuids and timestamps are read by the
 * very parsers maestro uses.
 *
 *	bench_client trigger URL N		N POSTs, one at a time, on one keep-alive
 *									connection, with the headers maestro
 *									sends; each body differs, each response
 *									is parsed, its instance_id decoded and
 *									its instance_url copied. Prints the
 *									elapsed ms and the process's CPU ms.
 *	bench_client instances URL		GET a list of instances, parse it, and
 *									convert every field of every instance
 *									(uuids to 16 bytes, timestamps to
 *									microseconds since 2000, integers, strings
 *									and string arrays copied, the nested
 *									objects and the whole object kept as
 *									parsed). Prints "ms instances".
 *	bench_client multi URL N C		N POSTs, C at a time, with curl-multi on
 *									keep-alive connections. Prints requests
 *									per second, and exits 1 if any failed.
 *
 * Built by the benchmark scripts (test/bench/lib.sh) with
 *	cc -O2 -I src test/bench/bench_client.c src/parse.c -lcurl -lcjson
 * never committed as a binary.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <cjson/cJSON.h>

#include "parse.h"

typedef struct Buffer
{
	char	   *data;
	size_t		len;
	size_t		cap;
} Buffer;

static size_t
collect(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	Buffer	   *buf = userdata;
	size_t		n = size * nmemb;

	if (buf->len + n + 1 > buf->cap)
	{
		size_t		cap = buf->cap ? buf->cap * 2 : 65536;

		while (cap < buf->len + n + 1)
			cap *= 2;
		buf->data = realloc(buf->data, cap);
		if (buf->data == NULL)
		{
			fprintf(stderr, "out of memory\n");
			exit(2);
		}
		buf->cap = cap;
	}
	memcpy(buf->data + buf->len, ptr, n);
	buf->len += n;
	buf->data[buf->len] = '\0';
	return n;
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* CPU time this process has used, user and system */
static double
cpu_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* days since 1970-01-01 of a proleptic Gregorian date (Hinnant's algorithm) */
static int64_t
days_from_civil(int y, int m, int d)
{
	int64_t		era;
	unsigned	yoe,
				doy,
				doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned) (y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t) doe - 719468;
}

/* microseconds since 2000-01-01 UTC, as a timestamptz holds it */
static int
to_timestamp(const cJSON *item, int64_t *out)
{
	MaestroDateTime dt;

	if (!cJSON_IsString(item) || !maestro_rfc3339_decode(item->valuestring, &dt))
		return 0;
	*out = ((days_from_civil(dt.year, dt.month, dt.day) - 10957) * 86400 +
			dt.hour * 3600 + dt.minute * 60 + dt.second - dt.offset_seconds) * 1000000LL +
		dt.microsecond;
	return 1;
}

static int
to_uuid(const cJSON *item, unsigned char out[16])
{
	return cJSON_IsString(item) && maestro_uuid_decode(item->valuestring, out);
}

static char *
to_text(const cJSON *item)
{
	return cJSON_IsString(item) ? strdup(item->valuestring) : NULL;
}

/* One instance's 22 columns, as maestro_instances returns them. */
typedef struct Row
{
	unsigned char id[16],
				template_id[16],
				account_id[16];
	int64_t		ts[6];
	int32_t		total_steps,
				last_completed_step;
	char	   *text[7];
	char	  **tags;
	int			ntags;
	const cJSON *trigger_inputs,
			   *metadata,
			   *raw;
	int			nulls;
} Row;

static void
convert_instance(const cJSON *inst, Row *row)
{
	static const char *const ts_fields[6] = {"started_at", "ended_at", "expires_at",
	"last_modified_at", "canceled_at", NULL};
	static const char *const text_fields[7] = {"name", "workflow_status", "started_by",
	"started_by_name", "started_by_role", "canceled_by", "last_completed_step_name"};
	const cJSON *tags;
	int			i;

	memset(row, 0, sizeof(*row));
	row->nulls += !to_uuid(maestro_object_member(inst, "id"), row->id);
	row->nulls += !to_uuid(maestro_object_member(inst, "template_id"), row->template_id);
	row->nulls += !to_uuid(maestro_object_member(inst, "account_id"), row->account_id);
	for (i = 0; ts_fields[i]; i++)
		row->nulls += !to_timestamp(maestro_object_member(inst, ts_fields[i]), &row->ts[i]);
	for (i = 0; i < 7; i++)
	{
		row->text[i] = to_text(maestro_object_member(inst, text_fields[i]));
		row->nulls += row->text[i] == NULL;
	}
	row->nulls += !maestro_number_to_int32(maestro_object_member(inst, "total_steps"),
										   &row->total_steps);
	row->nulls += !maestro_number_to_int32(maestro_object_member(inst, "last_completed_step"),
										   &row->last_completed_step);
	tags = maestro_object_member(inst, "tags");
	if (maestro_is_string_array(tags))
	{
		const cJSON *tag;

		row->tags = malloc(sizeof(char *) * (cJSON_GetArraySize(tags) + 1));
		cJSON_ArrayForEach(tag, tags)
			row->tags[row->ntags++] = strdup(tag->valuestring);
	}
	row->trigger_inputs = maestro_object_member(inst, "trigger_inputs");
	row->metadata = maestro_object_member(inst, "metadata");
	row->raw = inst;
}

static void
free_row(Row *row)
{
	int			i;

	for (i = 0; i < 7; i++)
		free(row->text[i]);
	for (i = 0; i < row->ntags; i++)
		free(row->tags[i]);
	free(row->tags);
}

static CURL *
new_handle(const char *url, Buffer *buf)
{
	CURL	   *h = curl_easy_init();

	curl_easy_setopt(h, CURLOPT_URL, url);

	/*
	 * The URL parsed once, as maestro gives it (http.c, set_url): given only
	 * the string, libcurl parses it and prints it back out at every request
	 * (a fifth of a trigger request's instructions). The parsed URL lives
	 * as long as the process.
	 */
	{
		CURLU	   *parsed = curl_url();

		if (parsed != NULL &&
			curl_url_set(parsed, CURLUPART_URL, url,
						 CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK)
			curl_easy_setopt(h, CURLOPT_CURLU, parsed);
	}
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, buf);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	/*
	 * No proxy, as maestro sets it for a server without one: libcurl then
	 * does not read the proxy variables of the environment for every
	 * request (2% of a trigger request's instructions).
	 */
	curl_easy_setopt(h, CURLOPT_PROXY, "");
	curl_easy_setopt(h, CURLOPT_NOPROXY, "");
	return h;
}

static int
run_instances(const char *url)
{
	Buffer		buf = {0};
	CURL	   *h = new_handle(url, &buf);
	double		t0 = now_ms();
	cJSON	   *root;
	const cJSON *list;
	const cJSON *inst;
	long		n = 0,
				nulls = 0;

	if (curl_easy_perform(h) != CURLE_OK)
	{
		fprintf(stderr, "GET %s failed\n", url);
		return 1;
	}
	root = cJSON_ParseWithLength(buf.data, buf.len);
	list = maestro_response_list(root, "instances");
	cJSON_ArrayForEach(inst, list)
	{
		Row			row;

		convert_instance(inst, &row);
		nulls += row.nulls;
		free_row(&row);
		n++;
	}
	cJSON_Delete(root);
	printf("%.1f %ld\n", now_ms() - t0, n);
	curl_easy_cleanup(h);
	free(buf.data);
	return n > 0 ? 0 : 1;
}

static int
run_trigger(const char *url, long count)
{
	Buffer		buf = {0};
	CURL	   *h = new_handle(url, &buf);
	struct curl_slist *headers = NULL;
	double		t0 = now_ms();
	double		cpu0 = cpu_ms();
	long		i,
				ok = 0;

	/* the request maestro sends, byte for byte but the body's numbers */
	headers = curl_slist_append(headers, "User-Agent: maestro/" MAESTRO_VERSION " (PostgreSQL 15)");
	headers = curl_slist_append(headers, "Accept: application/json");
	headers = curl_slist_append(headers, "Authorization: Bearer bench-token");
	headers = curl_slist_append(headers, "Expect:");
	headers = curl_slist_append(headers, "Content-Type: application/json");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	for (i = 1; i <= count; i++)
	{
		char		body[128];
		unsigned char id[16];
		cJSON	   *root;
		long		status = 0;

		snprintf(body, sizeof(body),
				 "{\"instance_name\":\"bench %ld\",\"trigger_inputs\":{\"n\":%ld}}", i, i);
		buf.len = 0;
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		if (curl_easy_perform(h) != CURLE_OK)
			continue;
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
		root = cJSON_ParseWithLength(buf.data, buf.len);
		if (status >= 200 && status < 300 &&
			to_uuid(maestro_object_member(root, "instance_id"), id))
		{
			char	   *instance_url = to_text(maestro_object_member(root, "instance_url"));

			if (instance_url != NULL)
				ok++;
			free(instance_url);
		}
		cJSON_Delete(root);
	}
	printf("%.1f %.1f\n", now_ms() - t0, cpu_ms() - cpu0);
	curl_slist_free_all(headers);
	curl_easy_cleanup(h);
	free(buf.data);
	if (ok != count)
	{
		fprintf(stderr, "%ld of %ld POSTs failed\n", count - ok, count);
		return 1;
	}
	return 0;
}

static int
run_multi(const char *url, long count, int concurrency)
{
	CURLM	   *multi = curl_multi_init();
	CURL	  **handles = calloc(concurrency, sizeof(CURL *));
	Buffer	   *bufs = calloc(concurrency, sizeof(Buffer));
	struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
	static const char body[] = "{\"instance_name\":\"capacity\",\"trigger_inputs\":{}}";
	long		started = 0,
				done = 0,
				failed = 0;
	double		t0 = now_ms();
	int			i;

	for (i = 0; i < concurrency && started < count; i++, started++)
	{
		handles[i] = new_handle(url, &bufs[i]);
		curl_easy_setopt(handles[i], CURLOPT_HTTPHEADER, headers);
		curl_easy_setopt(handles[i], CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(handles[i], CURLOPT_PRIVATE, &bufs[i]);
		curl_multi_add_handle(multi, handles[i]);
	}
	while (done < count)
	{
		int			running,
					left;
		CURLMsg    *msg;

		curl_multi_perform(multi, &running);
		while ((msg = curl_multi_info_read(multi, &left)) != NULL)
		{
			long		status = 0;
			CURL	   *h = msg->easy_handle;
			Buffer	   *buf;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
			curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **) &buf);
			if (msg->data.result != CURLE_OK || status < 200 || status > 299)
				failed++;
			done++;
			buf->len = 0;
			curl_multi_remove_handle(multi, h);
			if (started < count)
			{
				started++;
				curl_multi_add_handle(multi, h);	/* reuses its connection */
			}
		}
		if (done < count)
			curl_multi_poll(multi, NULL, 0, 100, NULL);
	}
	printf("%.0f\n", count / ((now_ms() - t0) / 1000.0));
	for (i = 0; i < concurrency; i++)
	{
		if (handles[i])
			curl_easy_cleanup(handles[i]);
		free(bufs[i].data);
	}
	curl_multi_cleanup(multi);
	curl_slist_free_all(headers);
	free(handles);
	free(bufs);
	if (failed)
		fprintf(stderr, "%ld of %ld POSTs failed\n", failed, count);
	return failed ? 1 : 0;
}

int
main(int argc, char **argv)
{
	int			rc = 2;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (argc == 4 && strcmp(argv[1], "trigger") == 0)
		rc = run_trigger(argv[2], atol(argv[3]));
	else if (argc == 3 && strcmp(argv[1], "instances") == 0)
		rc = run_instances(argv[2]);
	else if (argc == 5 && strcmp(argv[1], "multi") == 0)
		rc = run_multi(argv[2], atol(argv[3]), atoi(argv[4]));
	else
		fprintf(stderr, "usage: bench_client trigger URL N | instances URL | multi URL N C\n");
	curl_global_cleanup();
	return rc;
}
