/*-------------------------------------------------------------------------
 *
 * http.c
 *		The synchronous HTTP layer: one reused libcurl handle per backend,
 *		timeouts, interrupts, the response size cap and GET retries.
 *
 * A single easy handle is driven through a persistent multi handle rather
 * than curl_easy_perform(): the multi handle keeps the connection cache
 * (keep-alive and TLS session reuse across calls), and polling it in short
 * slices lets pg_cancel_backend() and statement_timeout stop a transfer
 * within INTERRUPT_POLL_MS instead of curl's one-second progress ticks.
 * The same loop keeps the backend's connect and request timeouts.
 *
 * A large response body is handed to the caller where libcurl's buffer
 * holds it (sized from Content-Length, faulted in at once, freed with the
 * caller's memory context), and a list reader may give back the pages it
 * has read (maestro_response_release).
 *
 * Between calls the handle keeps its connection-wide options, and the last
 * header list and a small response buffer are kept, each for as long as
 * the next call's connection, token and settings are the same: a trigger
 * call in a statement of thousands spent about 8% of its instructions on
 * setting them up again. A call whose URL, headers and method are the last
 * call's sets only its body. After a call the handle points at static
 * state and the kept header list, and at the last body, which no transfer
 * reads before the next call sets its own.
 *
 * It also holds what every HTTP caller shares: the one classification of
 * a failed exchange (maestro_http_classify), the one reading of
 * Retry-After, and the worker's stop flag, which every wait here watches
 * so that a fast shutdown never waits on the network.
 *
 * Nothing here calls ereport() while libcurl is on the stack: callbacks
 * only record what happened, and errors are raised after the transfer
 * has been detached and every malloc'd object released.
 *
 * src/http.c
 *
 *-------------------------------------------------------------------------
 */
#include "maestro.h"

#include <sys/mman.h>
#include <unistd.h>

#include <curl/curl.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/wait_event.h"
#include "utils/timestamp.h"
#include "utils/memutils.h"
#include "utils/elog.h"
#include "access/xact.h"
#include "common/pg_prng.h"

/* How long one poll may block before interrupts are looked at again. */
#define INTERRUPT_POLL_MS	25

/* A body smaller than this is not worth releasing page by page. */
#define RELEASE_MIN_BYTES	(1024 * 1024)
#define RELEASE_STEP_BYTES	(256 * 1024)
/* A body this large is handed over rather than copied. */
#define HAND_OVER_MIN_BYTES	(64 * 1024)
/* A body announced this large is faulted in at once. */
#define POPULATE_MIN_BYTES	(1024 * 1024)

/* libcurl's receive buffer for the backend's list requests */
#define LIST_BUFFER_BYTES	(256 * 1024)

/* Backoff between GET retries, as DocuSign's SDKs do it. */
#define RETRY_INITIAL_MS	500
#define RETRY_MAX_BACKOFF_MS 5000
/* A Retry-After longer than this is not waited for: the error is raised. */
#define RETRY_MAX_WAIT_MS	30000

static CURLM *maestro_multi = NULL;
static CURL *maestro_easy = NULL;
/* maestro_easy holds no option since its last reset */
static bool maestro_easy_clean = false;

/*
 * What maestro_easy's connection-wide options were last set for. While a
 * call's connection and settings are the same, only the request's own
 * options are set, instead of a reset and the whole set: together 5% of a
 * trigger call's instructions. Anything else, or a call that did not end
 * well, resets the handle. The copies live in TopMemoryContext; the proxy
 * password is wiped before it is freed.
 */
typedef struct EasyProfile
{
	bool		valid;
	char	   *ca_file;
	char	   *proxy;
	char	   *proxy_user;
	char	   *proxy_password;

	/*
	 * The last request's own options, but its body: a call with the same
	 * URL, header list, method and size cap (a statement triggering one
	 * workflow row after row) sets only its body.
	 */
	bool		shaped;
	char	   *url;
	struct curl_slist *headers;
	bool		post;
	bool		idempotent;
	size_t		limit;
} EasyProfile;

static EasyProfile easy_profile;

static void configure_request(CURL *easy, const char *url, const MaestroRequest *req,
							  struct curl_slist *headers, MaestroBuffer *buf,
							  char *errbuf);
static void configure_body(CURL *easy, const MaestroRequest *req, MaestroBuffer *buf);

/*
 * The synchronous transfer's buffer and error text. They are static so
 * that maestro_easy may point at them from one call to the next, instead
 * of having the options cleared after each call and set again before the
 * next. The buffer's memory is kept for the next call when it is small: a
 * new 8 kB malloc per call made glibc consolidate the small chunks libcurl
 * had just freed, a percent of a trigger call's CPU.
 */
#define KEPT_BUFFER_MAX		(64 * 1024)
static MaestroBuffer sync_buf;
static char sync_errbuf[CURL_ERROR_SIZE];

static size_t
write_callback(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	MaestroBuffer *buf = (MaestroBuffer *) userdata;
	size_t		n = size * nmemb;
	size_t		needed = buf->len + n + 1;
	curl_off_t	announced = -1;

	if (buf->len + n > buf->limit)
	{
		buf->too_large = true;
		return 0;				/* makes libcurl fail with CURLE_WRITE_ERROR */
	}

	/*
	 * The first bytes: room for the whole body its Content-Length announces
	 * (within the cap), so that a large list is received without being
	 * moved as the buffer grows, also into the small buffer a previous call
	 * left (sync_buf). A compressed body is longer than announced and
	 * grows from there.
	 */
	if (buf->len == 0 && buf->easy != NULL &&
		curl_easy_getinfo(buf->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T,
						  &announced) == CURLE_OK &&
		announced > 0 && (size_t) announced <= buf->limit)
		needed = Max(needed, (size_t) announced + 1);
	if (needed > buf->cap)
	{
		size_t		newcap = Max(buf->cap * 2, needed);
		char	   *grown;

		newcap = Max(newcap, 8192);
		grown = realloc(buf->data, newcap);
		if (grown == NULL)
		{
			buf->out_of_memory = true;
			return 0;
		}
		buf->data = grown;
		buf->cap = newcap;
#ifdef MADV_POPULATE_WRITE
		/*
		 * A large announced body: its pages faulted in by one call rather
		 * than one fault each as the bytes arrive (about a fifth of the
		 * time of reading 10,000 instances went to page faults). Only the
		 * whole pages inside the new buffer; an older kernel refuses, and
		 * the pages then fault in as usual.
		 */
		if (buf->len == 0 && newcap >= POPULATE_MIN_BYTES)
		{
			uintptr_t	page = (uintptr_t) sysconf(_SC_PAGESIZE);
			uintptr_t	from = TYPEALIGN(page, (uintptr_t) grown);
			uintptr_t	to = TYPEALIGN_DOWN(page, (uintptr_t) grown + newcap);

			if (to > from)
				(void) madvise((void *) from, to - from, MADV_POPULATE_WRITE);
		}
#endif
	}
	memcpy(buf->data + buf->len, ptr, n);
	buf->len += n;
	buf->data[buf->len] = '\0';
	return n;
}

/* DocuSign's rate-limit headers and Retry-After, as they pass (parse.c). */
static size_t
header_callback(char *line, size_t size, size_t nitems, void *userdata)
{
	MaestroBuffer *buf = (MaestroBuffer *) userdata;

	maestro_rate_header_line(&buf->rate, line, size * nitems);
	return size * nitems;
}

static void
free_body(void *arg)
{
	free(arg);
}

/*
 * A large received body becomes the response's without a copy: a list of
 * 10,000 instances is 9 MB, and copying it doubled the backend's peak
 * memory before a row was built. The buffer is freed when the current
 * memory context is reset or deleted, errors included, as a palloc'd copy
 * would be. A small body is copied into the context as before, exactly
 * sized (the buffer has room for at least 8 kB).
 */
static void
hand_over_body(MaestroBuffer *buf, MaestroResponse *resp)
{
	MemoryContextCallback *cb;

	resp->body_len = buf->len;
	if (buf->data == NULL || buf->len < HAND_OVER_MIN_BYTES)
	{
		resp->body = palloc(buf->len + 1);
		if (buf->len > 0)
			memcpy(resp->body, buf->data, buf->len);
		resp->body[buf->len] = '\0';
		return;					/* the buffer is freed by the caller */
	}
	cb = palloc(sizeof(MemoryContextCallback));
	cb->func = free_body;
	cb->arg = buf->data;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
	/* a retry that received nothing leaves the last attempt's bytes */
	buf->data[buf->len] = '\0';
	resp->body = buf->data;
	resp->handed_over = true;
	buf->data = NULL;			/* no longer freed by the caller */
	buf->cap = 0;
}

/*
 * Give the pages of a response body before offset back to the kernel: a
 * list read element by element no longer needs what lies behind it, and
 * the rows built from it take its place in memory instead of adding to
 * it. Only whole pages inside the body are released; they read as zeros
 * afterwards, so nothing may look at the body before offset again. Where
 * the platform cannot do it, nothing happens.
 */
void
maestro_response_release(MaestroResponse *resp, size_t offset)
{
#ifdef MADV_DONTNEED
	uintptr_t	page = (uintptr_t) sysconf(_SC_PAGESIZE);
	uintptr_t	from = TYPEALIGN(page, (uintptr_t) resp->body + resp->released);
	uintptr_t	to = TYPEALIGN_DOWN(page, (uintptr_t) resp->body + Min(offset, resp->body_len));

	/*
	 * Only libcurl's buffer, a mapping of its own (a palloc'd copy shares
	 * its pages with other chunks); in steps: a system call per page would
	 * cost more than it saves.
	 */
	if (!resp->handed_over || resp->body_len < RELEASE_MIN_BYTES ||
		to < from + RELEASE_STEP_BYTES)
		return;
	if (madvise((void *) from, to - from, MADV_DONTNEED) == 0)
		resp->released = (size_t) (to - (uintptr_t) resp->body);
#endif
}

/*
 * libcurl sends a request again on its own when a reused (kept-alive)
 * connection turns out dead before any byte of the answer arrived. A
 * request that must not be repeated, such as a trigger or a pause, could
 * then reach Maestro twice: the first copy may have been acted on before
 * the connection died. libcurl asks for a rewind before such a re-send
 * only when body bytes went out through a read callback, never for an
 * empty body (pause, resume, cancel) nor for CURLOPT_POSTFIELDS, so a
 * refused rewind cannot stop it in general. This callback can: libcurl
 * calls it each time it is about to send the request on a connection,
 * the first send and any re-send alike. The second call is refused; the
 * transfer then fails with CURLE_ABORTED_BY_CALLBACK, an error the caller
 * sees and handles (the worker looks the request up before sending it
 * again), instead of a second copy. The same refusal would meet any other
 * repeat by libcurl, such as a 407 round with a proxy that does not
 * tunnel; there is none, since the proxy's credentials (Basic, libcurl's
 * default) go with the first request, and a tunnel authenticates before
 * the request is sent. An idempotent request may go again; it is counted
 * all the same, since the backend's timeouts take a first send as the end
 * of connecting (run_transfer).
 */
static int
refuse_resend(void *userdata, char *primary_ip, char *local_ip,
			  int primary_port, int local_port)
{
	MaestroBuffer *buf = (MaestroBuffer *) userdata;

	/* a count for every request: the backend's timeouts read it too */
	if (buf->sends++ == 0 || buf->may_resend)
		return CURL_PREREQFUNC_OK;
	buf->resend_refused = true;
	return CURL_PREREQFUNC_ABORT;
}

/*
 * The one classification of a finished exchange, for every caller: the
 * synchronous client retries a GET on NOT_SENT, RATE_LIMITED and
 * TRANSIENT; the worker retries a trigger POST on all but FINAL (and AUTH
 * without a minted token), looking it up first on TRANSIENT, SERVER and
 * BROKEN, where Maestro may have acted on it.
 */
MaestroFailure
maestro_http_classify(CURLcode rc, long status)
{
	if (rc != CURLE_OK)
	{
		switch (rc)
		{
			case CURLE_COULDNT_RESOLVE_HOST:
			case CURLE_COULDNT_CONNECT:
				return MAESTRO_FAIL_NOT_SENT;
			case CURLE_OPERATION_TIMEDOUT:
			case CURLE_SEND_ERROR:
			case CURLE_RECV_ERROR:
			case CURLE_GOT_NOTHING:
			case CURLE_PARTIAL_FILE:
			case CURLE_SSL_CONNECT_ERROR:
				return MAESTRO_FAIL_TRANSIENT;
			default:
				return MAESTRO_FAIL_BROKEN;
		}
	}
	if (status >= 200 && status <= 299)
		return MAESTRO_SUCCESS;
	if (status == 429)
		return MAESTRO_FAIL_RATE_LIMITED;
	if (status == 401)
		return MAESTRO_FAIL_AUTH;
	if (status == 502 || status == 503 || status == 504)
		return MAESTRO_FAIL_TRANSIENT;
	if (status >= 500)
		return MAESTRO_FAIL_SERVER;
	return MAESTRO_FAIL_FINAL;
}

/*
 * The one reading of Retry-After: in ms, kept within 1 s .. 1 h; -1 when
 * the answer has none. libcurl reports an absent header as 0, so 0 (which
 * no server means as "at once" to a client it rate-limits) counts as none.
 */
long
maestro_http_retry_after_ms(CURL *easy)
{
	curl_off_t	retry_after = 0;

	if (curl_easy_getinfo(easy, CURLINFO_RETRY_AFTER, &retry_after) != CURLE_OK ||
		retry_after <= 0)
		return -1;
	return (long) Min(Max(retry_after, 1), 3600) * 1000;
}

/* Set by the worker's SIGTERM handler: abandon any transfer or wait. */
volatile sig_atomic_t maestro_shutdown_requested = false;

static bool
must_stop(void)
{
	return QueryCancelPending || ProcDiePending || maestro_shutdown_requested;
}

static void
ensure_handles(void)
{
	if (maestro_multi == NULL)
	{
		maestro_multi = curl_multi_init();
		if (maestro_multi == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not create a libcurl multi handle")));
		/* one host, one request at a time: a small cache is plenty */
		curl_multi_setopt(maestro_multi, CURLMOPT_MAXCONNECTS, 4L);
	}
	if (maestro_easy == NULL)
	{
		maestro_easy = curl_easy_init();
		if (maestro_easy == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not create a libcurl handle")));
	}
}

/*
 * The DNS cache of this process's transfers. A multi handle's own is a
 * hash of 71 slots, and libcurl walks every slot at the end of each
 * transfer to drop stale names; in a backend those slots have mostly left
 * the CPU's cache since the last call (38 of a trigger call's 570 L1 data
 * misses, cachegrind). A share's cache has 23 slots and the same expiry,
 * and a process here talks to a host or two: 240 instructions fewer a
 * call. Without a share (out of memory) a transfer uses its multi
 * handle's cache as before.
 */
static CURLSH *
dns_share(void)
{
	static CURLSH *share = NULL;
	static bool tried = false;

	if (!tried)
	{
		tried = true;
		share = curl_share_init();
		if (share != NULL &&
			curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK)
		{
			curl_share_cleanup(share);
			share = NULL;
		}
	}
	return share;
}

static bool
same_option(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static bool
profile_matches(const MaestroConnection *conn)
{
	return easy_profile.valid &&
		same_option(easy_profile.ca_file, conn->ca_file) &&
		same_option(easy_profile.proxy, conn->proxy) &&
		same_option(easy_profile.proxy_user, conn->proxy_user) &&
		same_option(easy_profile.proxy_password, conn->proxy_password);
}

static void
profile_free_string(char **s, bool wipe)
{
	if (*s == NULL)
		return;
	if (wipe)
		explicit_bzero(*s, strlen(*s));
	pfree(*s);
	*s = NULL;
}

static void
profile_forget(void)
{
	easy_profile.valid = false;
	easy_profile.shaped = false;
	profile_free_string(&easy_profile.url, false);
	profile_free_string(&easy_profile.ca_file, false);
	profile_free_string(&easy_profile.proxy, false);
	profile_free_string(&easy_profile.proxy_user, false);
	profile_free_string(&easy_profile.proxy_password, true);
}

static char *
profile_copy(const char *s)
{
	return s ? MemoryContextStrdup(TopMemoryContext, s) : NULL;
}

static void
profile_remember(const MaestroConnection *conn)
{
	profile_forget();
	easy_profile.ca_file = profile_copy(conn->ca_file);
	easy_profile.proxy = profile_copy(conn->proxy);
	easy_profile.proxy_user = profile_copy(conn->proxy_user);
	easy_profile.proxy_password = profile_copy(conn->proxy_password);
	easy_profile.valid = true;
}

/*
 * The header list of the last synchronous call and what it was built
 * from: the next call with the same token and kind of request sends it
 * again instead of building it anew (2% of a trigger call's
 * instructions). The token's copy is wiped when it is replaced.
 */
static struct curl_slist *kept_headers = NULL;
static char *kept_headers_token = NULL;
static char *kept_headers_ctype = NULL;
static bool kept_headers_anonymous;
static bool kept_headers_body;

static struct curl_slist *
sync_headers(const MaestroConnection *conn, const MaestroRequest *req)
{
	const char *token = conn->access_token ? conn->access_token : "";
	struct curl_slist *list;

	if (kept_headers != NULL &&
		kept_headers_anonymous == req->anonymous &&
		kept_headers_body == (req->body != NULL) &&
		same_option(kept_headers_ctype, req->content_type) &&
		strcmp(kept_headers_token, token) == 0)
		return kept_headers;

	curl_slist_free_all(kept_headers);
	kept_headers = NULL;
	profile_free_string(&kept_headers_token, true);
	profile_free_string(&kept_headers_ctype, false);

	list = maestro_http_headers(conn, req);
	if (list == NULL)
		return NULL;
	kept_headers_token = MemoryContextStrdup(TopMemoryContext, token);
	kept_headers_ctype = profile_copy(req->content_type);
	kept_headers_anonymous = req->anonymous;
	kept_headers_body = (req->body != NULL);
	kept_headers = list;
	return list;
}

/*
 * A list of thousands of instances arrives in 16 kB reads by default: a
 * read, a poll and a callback each, so the backend's handle reads lists in
 * larger pieces (the worker's many handles keep the default). Any other
 * answer is a small object, and keeps the default: libcurl allocates the
 * buffer for every transfer and frees it after, and freeing one of 256 kB
 * also made glibc consolidate its free lists, 800 instructions of a
 * trigger call. Only a call of a new shape gets here, so a call's size
 * is always set.
 */
static void
set_receive_buffer(const MaestroRequest *req)
{
	bool		list = req->endpoint == MAESTRO_EP_WORKFLOWS ||
		req->endpoint == MAESTRO_EP_INSTANCES ||
		req->endpoint == MAESTRO_EP_ACCOUNT_INSTANCES;

	curl_easy_setopt(maestro_easy, CURLOPT_BUFFERSIZE,
					 list ? (long) LIST_BUFFER_BYTES : (long) CURL_MAX_WRITE_SIZE);
}

/*
 * maestro_easy set up for one request of conn: only the request's own
 * options when the handle is already set up for conn's connection, else
 * a reset (unless it is fresh) and every option.
 */
static void
configure_sync_handle(const MaestroConnection *conn, const char *url,
					  const MaestroRequest *req, struct curl_slist *headers)
{
	bool		post = strcmp(req->method, "POST") == 0;

	if (profile_matches(conn))
	{
		if (easy_profile.shaped &&
			easy_profile.headers == headers &&
			easy_profile.post == post &&
			easy_profile.idempotent == req->idempotent &&
			easy_profile.limit == sync_buf.limit &&
			strcmp(easy_profile.url, url) == 0)
		{
			configure_body(maestro_easy, req, &sync_buf);
			return;
		}
		configure_request(maestro_easy, url, req, headers, &sync_buf, sync_errbuf);
	}
	else
	{
		if (!maestro_easy_clean)
			curl_easy_reset(maestro_easy);	/* keeps connections and caches */
		maestro_easy_clean = false;
		profile_forget();
		maestro_http_configure(maestro_easy, conn, url, req, headers, &sync_buf, sync_errbuf);
		profile_remember(conn);
	}
	set_receive_buffer(req);
	profile_free_string(&easy_profile.url, false);
	easy_profile.url = MemoryContextStrdup(TopMemoryContext, url);
	easy_profile.headers = headers;
	easy_profile.post = post;
	easy_profile.idempotent = req->idempotent;
	easy_profile.limit = sync_buf.limit;
	easy_profile.shaped = true;
}

/* Forget every option of maestro_easy; it keeps its connections. */
static void
reset_sync_handle(void)
{
	profile_forget();
	if (maestro_easy != NULL && !maestro_easy_clean)
	{
		curl_easy_reset(maestro_easy);
		maestro_easy_clean = true;
	}
}

/*
 * Whether the transfer started at started has run out of time at now: past
 * maestro.connect_timeout while still connecting (libcurl has not yet been
 * about to send the request: name lookup, TCP, TLS and a proxy's tunnel),
 * or past maestro.request_timeout. If so, the error text is libcurl's for
 * the same case. Else *wait_ms is cut to the time left.
 */
static bool
transfer_timed_out(TimestampTz started, TimestampTz now, long *wait_ms)
{
	long		elapsed = (long) ((now - started) / 1000);
	long		left;

	if (sync_buf.sends == 0)
	{
		left = maestro_connect_timeout_ms - elapsed;
		if (left <= 0)
		{
			snprintf(sync_errbuf, CURL_ERROR_SIZE,
					 "Connection timed out after %ld milliseconds", elapsed);
			return true;
		}
		*wait_ms = Min(*wait_ms, left);
	}
	left = maestro_request_timeout_ms - elapsed;
	if (left <= 0)
	{
		snprintf(sync_errbuf, CURL_ERROR_SIZE,
				 "Operation timed out after %ld milliseconds with %zu bytes received",
				 elapsed, sync_buf.len);
		return true;
	}
	*wait_ms = Min(*wait_ms, left);
	return false;
}

/*
 * Drive one transfer, started at started, to its end, or until an
 * interrupt is pending or it runs out of time. The easy handle is always
 * detached again, so an aborted transfer's half-used connection is closed
 * by libcurl, never reused.
 *
 * The backend's transfers keep their timeouts here rather than in libcurl
 * (CURLOPT_CONNECTTIMEOUT_MS, CURLOPT_TIMEOUT_MS): libcurl arms two
 * timers on every transfer and looks at them at every step, about 1,000
 * instructions of a trigger call, where this loop wakes up anyway and
 * reads the clock once per wake-up. The worker's transfers keep
 * libcurl's.
 */
static CURLcode
run_transfer(TimestampTz started, bool *interrupted)
{
	CURLcode	result = CURLE_OK;
	CURLMcode	mc;
	CURLMsg    *msg;
	int			running = 1;
	int			left;
	bool		done = false;
	bool		timed_out = false;

	*interrupted = false;
	mc = curl_multi_add_handle(maestro_multi, maestro_easy);
	if (mc != CURLM_OK)
		return CURLE_FAILED_INIT;

	pgstat_report_wait_start(PG_WAIT_EXTENSION);
	while (running)
	{
		mc = curl_multi_perform(maestro_multi, &running);
		if (mc != CURLM_OK)
			break;
		if (must_stop())
		{
			*interrupted = true;
			break;
		}
		if (running)
		{
			long		wait_ms = INTERRUPT_POLL_MS;

			if (transfer_timed_out(started, GetCurrentTimestamp(), &wait_ms))
			{
				timed_out = true;
				break;
			}
			mc = curl_multi_poll(maestro_multi, NULL, 0, (int) wait_ms, NULL);
			if (mc != CURLM_OK)
				break;
		}
	}
	pgstat_report_wait_end();

	while ((msg = curl_multi_info_read(maestro_multi, &left)) != NULL)
	{
		if (msg->msg == CURLMSG_DONE && msg->easy_handle == maestro_easy)
		{
			result = msg->data.result;
			done = true;
		}
	}
	curl_multi_remove_handle(maestro_multi, maestro_easy);

	if (*interrupted)
		return CURLE_ABORTED_BY_CALLBACK;
	if (timed_out)
		return CURLE_OPERATION_TIMEDOUT;
	if (mc != CURLM_OK)
		return CURLE_FAILED_INIT;
	if (!done)
		return CURLE_GOT_NOTHING;
	return result;
}

/* The moment statement_timeout will fire, or 0 when it is off. */
static TimestampTz
statement_deadline(void)
{
	if (StatementTimeout <= 0 || !IsTransactionState())
		return 0;
	return TimestampTzPlusMilliseconds(GetCurrentStatementStartTimestamp(),
									   StatementTimeout);
}

/* Sleep that cancel, statement_timeout and shutdown can cut short. */
static void
sleep_interruptibly(long ms)
{
	TimestampTz end = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);

	for (;;)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), end);

		CHECK_FOR_INTERRUPTS();
		if (left <= 0 || maestro_shutdown_requested)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 left, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

static long
backoff_ms(int attempt)
{
	long		ms = RETRY_INITIAL_MS;
	int			i;

	for (i = 0; i < attempt && ms < RETRY_MAX_BACKOFF_MS; i++)
		ms *= 2;
	ms = Min(ms, RETRY_MAX_BACKOFF_MS);
	/* full jitter on the upper half, so that backends do not march in step */
	return ms / 2 + (long) (pg_prng_double(&pg_global_prng_state) * (ms / 2));
}

static struct curl_slist *
append_header(struct curl_slist *list, const char *header, bool *failed)
{
	struct curl_slist *grown;

	if (*failed)
		return list;
	grown = curl_slist_append(list, header);
	if (grown == NULL)
	{
		*failed = true;
		return list;
	}
	return grown;
}

/*
 * The request headers, bearer token included: a malloc'd list the caller
 * frees with curl_slist_free_all(), or NULL when out of memory. The token's
 * palloc'd copy is wiped before it is freed.
 */
struct curl_slist *
maestro_http_headers(const MaestroConnection *conn, const MaestroRequest *req)
{
	struct curl_slist *list = NULL;
	bool		failed = false;
	char	   *auth = psprintf("Authorization: Bearer %s",
									conn->access_token ? conn->access_token : "");

	/*
	 * In the list rather than as CURLOPT_USERAGENT, which libcurl formats
	 * into a header of its own byte by byte on every request: that was 6% of
	 * a trigger call's instructions.
	 */
	list = append_header(list, "User-Agent: maestro/" MAESTRO_VERSION
						 " (PostgreSQL " PG_MAJORVERSION ")", &failed);
	list = append_header(list, "Accept: application/json", &failed);
	if (!req->anonymous)
		list = append_header(list, auth, &failed);
	list = append_header(list, "Expect:", &failed);
	if (req->body)
	{
		char	   *ctype = psprintf("Content-Type: %s",
									 req->content_type ? req->content_type : "application/json");

		list = append_header(list, ctype, &failed);
		pfree(ctype);
	}
	explicit_bzero(auth, strlen(auth));
	pfree(auth);
	if (failed)
	{
		curl_slist_free_all(list);
		return NULL;
	}
	return list;
}

/*
 * The strings up to a NULL, joined in one palloc'd string: without a
 * format to interpret, at a fifth of psprintf's instructions for a URL.
 */
char *
maestro_concat(const char *first,...)
{
	va_list		args;
	const char *part;
	size_t		len = 0;
	char	   *result;
	char	   *p;

	va_start(args, first);
	for (part = first; part != NULL; part = va_arg(args, const char *))
		len += strlen(part);
	va_end(args);

	result = p = palloc(len + 1);
	va_start(args, first);
	for (part = first; part != NULL; part = va_arg(args, const char *))
	{
		size_t		n = strlen(part);

		memcpy(p, part, n);
		p += n;
	}
	va_end(args);
	*p = '\0';
	return result;
}

char *
maestro_http_url(const MaestroConnection *conn, const MaestroRequest *req)
{
	if (req->query == NULL)
		return maestro_concat(conn->base_url, req->path, NULL);
	return maestro_concat(conn->base_url, req->path, "?", req->query, NULL);
}

/*
 * Every option of one request on an easy handle that is fresh or was just
 * reset. The handle then points at url, headers, buf, errbuf and the
 * request's body: all must outlive the transfer.
 */
void
maestro_http_configure(CURL *easy, const MaestroConnection *conn, const char *url,
					   const MaestroRequest *req, struct curl_slist *headers,
					   MaestroBuffer *buf, char *errbuf)
{
	/* certificates are always verified; ca_file only says against what */
	if (conn->ca_file)
		curl_easy_setopt(easy, CURLOPT_CAINFO, conn->ca_file);
	/*
	 * The server's proxy, or none: an empty string also overrides the
	 * environment's http_proxy, HTTPS_PROXY, ALL_PROXY and NO_PROXY, so that
	 * where calls go does not depend on how the postmaster was started.
	 */
	curl_easy_setopt(easy, CURLOPT_PROXY, conn->proxy ? conn->proxy : "");
	curl_easy_setopt(easy, CURLOPT_NOPROXY, "");
	if (conn->proxy && conn->proxy_user)
	{
		curl_easy_setopt(easy, CURLOPT_PROXYUSERNAME, conn->proxy_user);
		curl_easy_setopt(easy, CURLOPT_PROXYPASSWORD,
						 conn->proxy_password ? conn->proxy_password : "");
	}
	if (conn->proxy && conn->ca_file)
		curl_easy_setopt(easy, CURLOPT_PROXY_CAINFO, conn->ca_file);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_SHARE, dns_share());
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	configure_request(easy, url, req, headers, buf, errbuf);
}

/*
 * The request's URL, given to libcurl parsed as well. Given only the
 * string, libcurl parses it at every transfer and prints it back out byte
 * by byte through its own printf: 22,000 instructions a request, a sixth of
 * a trigger call's. Given a parsed URL (CURLOPT_CURLU), it copies that
 * instead; the string is still set, as the transfer's effective URL. The
 * parse uses the flags libcurl's own parse of the string uses, and a URL
 * it refuses is left to libcurl as a string, which then fails the transfer
 * with the same error as before. The handle is buf's: the sync handle's
 * lives as long as the backend, a transfer's is freed with its easy handle.
 */
static void
set_url(CURL *easy, const char *url, MaestroBuffer *buf)
{
	curl_easy_setopt(easy, CURLOPT_URL, url);
	if (buf->url_handle == NULL)
		buf->url_handle = curl_url();
	if (buf->url_handle != NULL &&
		curl_url_set(buf->url_handle, CURLUPART_URL, url,
					 CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK)
		curl_easy_setopt(easy, CURLOPT_CURLU, buf->url_handle);
	else
		curl_easy_setopt(easy, CURLOPT_CURLU, NULL);
}

/*
 * The options of one request, which differ from request to request on a
 * connection: all of them are set every time, to a value or cleared.
 */
static void
configure_request(CURL *easy, const char *url, const MaestroRequest *req,
				  struct curl_slist *headers, MaestroBuffer *buf, char *errbuf)
{
	set_url(easy, url, buf);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
	/*
	 * Compression pays for list answers of megabytes; the answer to a POST
	 * is a small object, and the header cost a few percent of a trigger
	 * call's CPU (libcurl formats each header byte by byte).
	 */
	curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING,
					 strcmp(req->method, "POST") == 0 ? NULL : "");
	curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) buf->limit);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, write_callback);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, buf);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, header_callback);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, buf);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf);
	if (strcmp(req->method, "POST") != 0)
		curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
	curl_easy_setopt(easy, CURLOPT_PREREQFUNCTION, refuse_resend);
	curl_easy_setopt(easy, CURLOPT_PREREQDATA, buf);
	configure_body(easy, req, buf);
}

/*
 * What differs from one request to the next of the same shape: the body,
 * and the buffer's count of sends.
 */
static void
configure_body(CURL *easy, const MaestroRequest *req, MaestroBuffer *buf)
{
	buf->easy = easy;
	buf->sends = 0;
	buf->may_resend = req->idempotent;
	buf->resend_refused = false;
	maestro_rate_headers_reset(&buf->rate);
	if (strcmp(req->method, "POST") == 0)
	{
		/*
		 * The body as CURLOPT_POSTFIELDS: libcurl puts a body under 64 kB in
		 * the same buffer as the headers ("Expect:" is off), so a request
		 * leaves in one send() and costs one trip, where a read callback
		 * sends the body in a second one. That POSTFIELDS is re-sent
		 * without a rewind is what refuse_resend() is for. (Opening a new
		 * connection for every such POST would also prevent re-sends, at
		 * the price of a TCP and TLS handshake per request.)
		 */
		buf->upload = req->body ? req->body : "";
		buf->upload_len = strlen(buf->upload);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long) buf->upload_len);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDS, buf->upload);
	}
}

/*
 * The error for a transfer that failed below HTTP, on the easy handle that
 * ran it; also the worker's, for the pages of its sync (sync_loop.c).
 */
void
maestro_http_raise_transport_error(const MaestroConnection *conn, const MaestroRequest *req,
								   CURL *easy, CURLcode rc, const char *curl_message,
								   const MaestroBuffer *buf, int retries)
{
	const char *what = curl_message[0] ? curl_message : curl_easy_strerror(rc);

	if (buf->too_large || rc == CURLE_FILESIZE_EXCEEDED)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("Maestro response is larger than maestro.max_response_size (%d kB)",
						maestro_max_response_kb),
				 errdetail("%s %s", req->method, req->path),
				 errhint("Raise maestro.max_response_size if such large responses are expected.")));
	if (buf->out_of_memory)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory while receiving a Maestro response"),
				 errdetail("%s %s", req->method, req->path)));
	if (rc == CURLE_ABORTED_BY_CALLBACK && buf->resend_refused)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not complete the Maestro request"),
				 errdetail("%s %s: the connection was lost after the request was sent; it was not sent again, since Maestro may have acted on it.",
						   req->method, req->path),
				 errhint("Check whether the request took effect before repeating it.")));
	if (rc == CURLE_OPERATION_TIMEDOUT)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("Maestro request timed out"),
				 errdetail("%s %s: %s%s.", req->method, req->path, maestro_redact(what),
						   retries > 0 ? psprintf(" (after %d retries)", retries) : ""),
				 errhint("maestro.connect_timeout is %d ms and maestro.request_timeout is %d ms.",
						 maestro_connect_timeout_ms, maestro_request_timeout_ms)));
	if ((rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE) &&
		conn->proxy && easy != NULL)
	{
		long		proxy_verify = 0;

		curl_easy_getinfo(easy, CURLINFO_PROXY_SSL_VERIFYRESULT, &proxy_verify);
		if (proxy_verify != 0)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not verify the TLS certificate of the proxy"),
					 errdetail("%s %s: %s (curl error %d).", req->method, req->path,
							   maestro_redact(what), (int) rc),
					 errhint("The proxy %s (server option proxy) uses a certificate the system does not trust; if it comes from a private CA, name that CA's certificate in the server option ca_file.",
							 conn->proxy)));
	}
	if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not verify the TLS certificate of the Maestro host"),
				 errdetail("%s %s: %s (curl error %d).", req->method, req->path,
						   maestro_redact(what), (int) rc),
				 errhint("If the host uses a private CA, name its certificate in the server option ca_file.")));
	if (conn->proxy && easy != NULL)
	{
		long		connect_code = 0;

		curl_easy_getinfo(easy, CURLINFO_HTTP_CONNECTCODE, &connect_code);
		if (connect_code == 401 || connect_code == 407)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("the proxy refused the request"),
					 errdetail("%s %s: %s (curl error %d).", req->method, req->path,
							   maestro_redact(what), (int) rc),
					 errhint("The proxy %s (server option proxy) wants credentials it accepts: check proxy_user and proxy_password in the user mapping for server \"%s\".",
							 conn->proxy, conn->server_name)));
	}
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("could not complete the Maestro request"),
			 errdetail("%s %s: %s (curl error %d)%s.", req->method, req->path,
					   maestro_redact(what), (int) rc,
					   retries > 0 ? psprintf(", after %d retries", retries) : ""),
			 conn->proxy
			 ? errhint("The request went through the proxy %s (server option proxy): check that it is running and lets the request through to the host.",
					   conn->proxy)
			 : errhint("Check the base_url option of the server and that the host is reachable.")));
}

/*
 * Send one request, retrying it when it is idempotent and failed in a
 * retryable way. On return resp holds the final HTTP status and body, 2xx
 * or not: the caller decides what a status means. Transport failures,
 * interrupts and the size cap raise errors here.
 */
void
maestro_http_execute(const MaestroConnection *conn, const MaestroRequest *req,
					 MaestroResponse *resp)
{
	struct curl_slist *headers;
	MaestroBuffer *buf = &sync_buf;
	char	   *url;
	TimestampTz deadline = statement_deadline();
	TimestampTz started = GetCurrentTimestamp();
	volatile CURLcode rc = CURLE_OK;
	volatile bool interrupted = false;
	volatile int rate_limit_waits = 0;
	volatile size_t bytes = 0;
	int			attempt;

	buf->len = 0;
	buf->limit = (size_t) maestro_max_response_kb * 1024;
	memset(resp, 0, sizeof(*resp));

	/* the token endpoint is the account server's, outside the API's quota */
	if (req->endpoint != MAESTRO_EP_TOKEN)
		maestro_ratelimit_check(conn);

	url = maestro_http_url(conn, req);

	PG_TRY();
	{
		headers = sync_headers(conn, req);
		if (headers == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory while building a Maestro request")));

		for (attempt = 0;; attempt++)
		{
			long		wait_ms;
			MaestroFailure failure;

			ensure_handles();
			buf->len = 0;
			buf->too_large = buf->out_of_memory = false;
			sync_errbuf[0] = '\0';
			configure_sync_handle(conn, url, req, headers);

			rc = run_transfer(attempt == 0 ? started : GetCurrentTimestamp(),
							  (bool *) &interrupted);
			bytes += buf->len;
			if (interrupted)
				break;

			resp->status = 0;
			if (rc == CURLE_OK)
				curl_easy_getinfo(maestro_easy, CURLINFO_RESPONSE_CODE, &resp->status);
			if (rc == CURLE_OK && req->endpoint != MAESTRO_EP_TOKEN)
				maestro_ratelimit_observe(conn->server_id, &buf->rate);

			if (!req->idempotent || attempt >= maestro_max_retries || buf->too_large)
				break;
			/* a proxy that refused the tunnel will refuse it again */
			if (rc != CURLE_OK && conn->proxy)
			{
				long		connect_code = 0;

				curl_easy_getinfo(maestro_easy, CURLINFO_HTTP_CONNECTCODE, &connect_code);
				if (connect_code >= 300)
					break;
			}
			/* a retry could only be refused too */
			if (req->endpoint != MAESTRO_EP_TOKEN &&
				maestro_ratelimit_wait_ms(conn->server_id, NULL) > 0)
				break;
			failure = maestro_http_classify(rc, resp->status);
			if (failure != MAESTRO_FAIL_NOT_SENT && failure != MAESTRO_FAIL_RATE_LIMITED &&
				failure != MAESTRO_FAIL_TRANSIENT)
				break;

			wait_ms = backoff_ms(attempt);
			if (rc == CURLE_OK)
				wait_ms = Max(wait_ms, maestro_http_retry_after_ms(maestro_easy));
			if (wait_ms > RETRY_MAX_WAIT_MS)
				break;
			if (deadline != 0 &&
				TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms) >= deadline)
				break;

			if (rc == CURLE_OK && resp->status == 429)
				rate_limit_waits++;
			sleep_interruptibly(wait_ms);
			if (maestro_shutdown_requested)
			{
				interrupted = true;
				break;
			}
			resp->retries++;
		}

		if (interrupted)
		{
			/* let PostgreSQL raise its own error: 57014, or FATAL on die */
			CHECK_FOR_INTERRUPTS();
			ereport(ERROR,
					(errcode(ERRCODE_QUERY_CANCELED),
					 errmsg("canceling Maestro request due to an interrupt")));
		}
		if (rc != CURLE_OK)
			maestro_http_raise_transport_error(conn, req, maestro_easy, (CURLcode) rc, sync_errbuf,
											   buf, resp->retries);

		{
			char	   *ctype = NULL;

			curl_easy_getinfo(maestro_easy, CURLINFO_CONTENT_TYPE, &ctype);
			strlcpy(resp->content_type, ctype ? ctype : "", sizeof(resp->content_type));
		}
		hand_over_body(buf, resp);
	}
	PG_FINALLY();
	{
		maestro_stats_record(conn->server_id, req->endpoint,
							 rc == CURLE_OK && !interrupted ? resp->status : 0,
							 (double) (GetCurrentTimestamp() - started) / 1000.0,
							 resp->retries, rate_limit_waits, bytes);
		/* a body handed over to the response is no longer buf's */
		if (buf->cap > KEPT_BUFFER_MAX)
		{
			free(buf->data);
			buf->data = NULL;
			buf->cap = 0;
		}

		/*
		 * Between calls the handle points at the kept header list, the static
		 * buffer and error text, and this call's body, which no transfer
		 * reads before the next call has set its own (or GET). After a call
		 * that did not end in a completed exchange it forgets every option.
		 */
		if (!(maestro_easy != NULL && rc == CURLE_OK && !interrupted && easy_profile.valid))
			reset_sync_handle();
	}
	PG_END_TRY();

	pfree(url);
}
