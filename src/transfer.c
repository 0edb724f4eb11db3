/*-------------------------------------------------------------------------
 *
 * transfer.c
 *		The worker's asynchronous HTTP: every trigger POST, instance
 *		look-up and page of the periodic sync, and the token fetches (the
 *		JWT grant) of the requests, run on one curl multi handle, and the
 *		worker's single wait watches the latch and the transfers' sockets
 *		together.
 *
 * libcurl tells us which sockets it wants watched (CURLMOPT_SOCKETFUNCTION)
 * and we put them, with the latch and postmaster death, into one
 * WaitEventSet. So a commit (latch), a SIGTERM (latch), a socket that
 * became ready and the next timeout of either side all end the same wait;
 * nothing polls in slices.
 *
 * Where there is epoll, libcurl's sockets live in an epoll set of their
 * own, changed exactly when libcurl asks, and the WaitEventSet (built
 * once) watches that set as one descriptor. A WaitEventSet cannot drop a
 * socket, and libcurl stops watching a connection whenever its transfer
 * ends, so otherwise the set is rebuilt nearly every round: with 64
 * transfers in flight that was a third of the worker's system calls.
 *
 * As in http.c, no callback raises an error: they only record what
 * happened, in malloc'd memory.
 *
 * src/transfer.c
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#ifdef HAVE_SYS_EPOLL_H
#include <sys/epoll.h>
#endif

#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

/* A socket libcurl wants watched, and for what (CURL_POLL_*). */
typedef struct WatchedSocket
{
	curl_socket_t fd;
	int			what;
} WatchedSocket;

static CURLM *multi = NULL;
static Transfer *running = NULL;
static int	running_count = 0;
static Transfer *finished = NULL;

static WatchedSocket *sockets = NULL;
static int	n_sockets = 0;
static int	sockets_cap = 0;
static WaitEventSet *wait_set = NULL;
static WaitEvent *wait_events = NULL;
static int	wait_events_cap = 0;

#ifdef HAVE_SYS_EPOLL_H
/* libcurl's sockets, watched as one descriptor by wait_set */
static int	curl_epoll = -1;
#else
/* wait_set no longer watches the sockets libcurl wants watched */
static bool wait_set_stale = true;
#endif

#ifdef HAVE_SYS_EPOLL_H

/* Tell curl_epoll what libcurl wants of fd (0: nothing). */
static int
epoll_watch(curl_socket_t fd, int what, bool known)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.data.fd = fd;
	if (what & CURL_POLL_IN)
		ev.events |= EPOLLIN;
	if (what & CURL_POLL_OUT)
		ev.events |= EPOLLOUT;
	if (what == CURL_POLL_REMOVE)
	{
		/* a descriptor already closed has left the set by itself */
		(void) epoll_ctl(curl_epoll, EPOLL_CTL_DEL, fd, &ev);
		return 0;
	}
	/* a descriptor closed and reused by a new socket may be new to us or not */
	if (epoll_ctl(curl_epoll, known ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) == 0)
		return 0;
	if (errno == ENOENT || errno == EEXIST)
		return epoll_ctl(curl_epoll, known ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev) == 0 ? 0 : -1;
	return -1;
}
#endif

static int
socket_callback(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	int			i;

	for (i = 0; i < n_sockets; i++)
		if (sockets[i].fd == fd)
			break;
	if (what == CURL_POLL_REMOVE || i == n_sockets || sockets[i].what != what)
	{
#ifdef HAVE_SYS_EPOLL_H
		if (epoll_watch(fd, what, i < n_sockets) != 0)
			return -1;			/* libcurl fails the transfer */
#else
		wait_set_stale = true;
#endif
	}
	if (what == CURL_POLL_REMOVE)
	{
		if (i < n_sockets)
			sockets[i] = sockets[--n_sockets];
	}
	else
	{
		if (i == n_sockets)
		{
			if (n_sockets == sockets_cap)
			{
				int			cap = Max(16, sockets_cap * 2);
				WatchedSocket *grown = realloc(sockets, sizeof(WatchedSocket) * cap);

				if (grown == NULL)
					return -1;	/* libcurl fails the transfer */
				sockets = grown;
				sockets_cap = cap;
			}
			n_sockets++;
			sockets[i].fd = fd;
		}
		else if (sockets[i].what == what)
			return 0;
		sockets[i].what = what;
	}
	return 0;
}

void
maestro_transfer_init(void)
{
	multi = curl_multi_init();
	if (multi == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl multi handle")));
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_callback);
#ifdef HAVE_SYS_EPOLL_H
	curl_epoll = epoll_create1(EPOLL_CLOEXEC);
	if (curl_epoll < 0)
		ereport(FATAL,
				(errcode_for_socket_access(),
				 errmsg("could not create an epoll descriptor: %m")));
#endif
}

void
maestro_transfer_shutdown(void)
{
	maestro_transfer_abort_all();
	if (wait_set)
		FreeWaitEventSet(wait_set);
	wait_set = NULL;
	if (multi)
		curl_multi_cleanup(multi);
	multi = NULL;
#ifdef HAVE_SYS_EPOLL_H
	if (curl_epoll >= 0)
		close(curl_epoll);
	curl_epoll = -1;
#endif
}

int
maestro_transfer_count(void)
{
	return running_count;
}

/*
 * Start one exchange; its memory goes into cxt (the caller's, which must
 * outlive the transfer). NULL when it could not start (out of memory).
 */
Transfer *
maestro_transfer_start(TransferKind kind, void *owner, MaestroConnection *conn,
					   MaestroRequest *req, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	Transfer   *t = palloc0(sizeof(Transfer));

	t->cxt = cxt;
	t->kind = kind;
	t->owner = owner;
	t->server_id = conn->server_id;
	t->conn = conn;
	t->req = *req;
	t->url = maestro_http_url(conn, req);
	t->headers = maestro_http_headers(conn, req);
	t->buf.limit = (size_t) maestro_max_response_kb * 1024;
	t->easy = curl_easy_init();
	MemoryContextSwitchTo(old);

	if (t->headers == NULL || t->easy == NULL)
		goto fail;
	maestro_http_configure(t->easy, conn, t->url, &t->req, t->headers, &t->buf, t->errbuf);
	/* libcurl's timers: a backend keeps its own (http.c, run_transfer) */
	curl_easy_setopt(t->easy, CURLOPT_CONNECTTIMEOUT_MS, (long) maestro_connect_timeout_ms);
	curl_easy_setopt(t->easy, CURLOPT_TIMEOUT_MS, (long) maestro_request_timeout_ms);
	curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t);
	if (curl_multi_add_handle(multi, t->easy) != CURLM_OK)
		goto fail;

	t->started_at = GetCurrentTimestamp();
	t->next = running;
	running = t;
	running_count++;
	return t;

fail:
	curl_slist_free_all(t->headers);
	if (t->easy)
		curl_easy_cleanup(t->easy);
	curl_url_cleanup(t->buf.url_handle);
	pfree(t);
	return NULL;
}

/* Release what libcurl holds for a transfer; its palloc'd memory stays. */
static void
release(Transfer *t)
{
	curl_multi_remove_handle(multi, t->easy);
	curl_easy_cleanup(t->easy);
	t->easy = NULL;
	curl_url_cleanup(t->buf.url_handle);
	t->buf.url_handle = NULL;
	curl_slist_free_all(t->headers);
	t->headers = NULL;
}

/* Move the transfers libcurl reports done to the finished list. */
static void
harvest(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		Transfer   *t = NULL;
		Transfer  **link;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
		t->result = msg->data.result;
		if (t->result == CURLE_OK)
			curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status);
		for (link = &running; *link; link = &(*link)->next)
			if (*link == t)
			{
				*link = t->next;
				break;
			}
		running_count--;
		t->next = finished;
		finished = t;
	}
}

#ifdef HAVE_SYS_EPOLL_H
/* The latch, postmaster death and curl_epoll: built once. */
static void
ensure_wait_set(void)
{
	if (wait_set != NULL)
		return;
	wait_set = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wait_set, WL_SOCKET_READABLE, curl_epoll, NULL, NULL);
	if (wait_events == NULL)
	{
		wait_events_cap = 3;
		wait_events = MemoryContextAlloc(TopMemoryContext, sizeof(WaitEvent) * wait_events_cap);
	}
}
#else
/* The latch, postmaster death and every socket libcurl watches now. */
static void
ensure_wait_set(void)
{
	int			i;

	if (wait_set != NULL && !wait_set_stale)
		return;
	if (wait_set)
		FreeWaitEventSet(wait_set);
	wait_set = CreateWaitEventSet(TopMemoryContext, n_sockets + 2);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (i = 0; i < n_sockets; i++)
	{
		uint32		events = 0;

		if (sockets[i].what & CURL_POLL_IN)
			events |= WL_SOCKET_READABLE;
		if (sockets[i].what & CURL_POLL_OUT)
			events |= WL_SOCKET_WRITEABLE;
		if (events)
			AddWaitEventToSet(wait_set, events, sockets[i].fd, NULL, NULL);
	}
	if (wait_events_cap < n_sockets + 2)
	{
		if (wait_events)
			pfree(wait_events);
		wait_events_cap = n_sockets + 2;
		wait_events = MemoryContextAlloc(TopMemoryContext, sizeof(WaitEvent) * wait_events_cap);
	}
	wait_set_stale = false;
}
#endif

/*
 * Let the transfers just started leave now, before the round's database
 * work, rather than at the next wait. What ends meanwhile is harvested
 * only by the wait: until its answer is read (a 429 pauses its server),
 * it must keep its slot, or the round would send into that slot unpaced.
 */
void
maestro_transfer_kick(void)
{
	int			still;

	curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &still);
}

/*
 * The worker's one wait: until the latch is set, a socket is ready,
 * libcurl's next timeout, or timeout_ms (-1: no limit of the caller's),
 * whichever comes first. Drives the transfers after it; those that ended
 * are then returned by maestro_transfer_take_finished().
 */
void
maestro_transfer_wait(long timeout_ms)
{
	long		curl_ms = -1;
	int			n;
	int			i;
	int			still;

	/* start what was added, and run whatever timers are due */
	curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &still);
	harvest();
	if (finished != NULL)
		return;

	curl_multi_timeout(multi, &curl_ms);
	if (curl_ms >= 0 && (timeout_ms < 0 || curl_ms < timeout_ms))
		timeout_ms = curl_ms;
	ensure_wait_set();

	n = WaitEventSetWait(wait_set, timeout_ms, wait_events, wait_events_cap,
						 PG_WAIT_EXTENSION);
	for (i = 0; i < n; i++)
	{
		WaitEvent  *e = &wait_events[i];
		int			mask = 0;

		if (e->events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			continue;
		}
#ifdef HAVE_SYS_EPOLL_H
		if (e->fd == curl_epoll)
		{
			struct epoll_event ready[64];
			int			n_ready = epoll_wait(curl_epoll, ready, lengthof(ready), 0);
			int			j;

			/* more than these: the set stays readable, the next wait is short */
			for (j = 0; j < n_ready; j++)
			{
				mask = 0;
				if (ready[j].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
					mask |= CURL_CSELECT_IN;
				if (ready[j].events & (EPOLLOUT | EPOLLERR))
					mask |= CURL_CSELECT_OUT;
				if (ready[j].events & EPOLLERR)
					mask |= CURL_CSELECT_ERR;
				curl_multi_socket_action(multi, ready[j].data.fd, mask, &still);
			}
			continue;
		}
#endif
		if (e->events & WL_SOCKET_READABLE)
			mask |= CURL_CSELECT_IN;
		if (e->events & WL_SOCKET_WRITEABLE)
			mask |= CURL_CSELECT_OUT;
		if (mask)
			curl_multi_socket_action(multi, e->fd, mask, &still);
	}
	curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &still);
	harvest();
}

/*
 * The finished transfer last taken, until it is freed: an error raised
 * while its caller deals with it (recording its statistics, say) must not
 * leave its handle, header list and buffer behind (abort_all frees them).
 */
static Transfer *in_hand = NULL;

/* One finished transfer, or NULL; the caller frees it. */
Transfer *
maestro_transfer_take_finished(void)
{
	Transfer   *t = finished;

	if (t)
	{
		finished = t->next;
		t->next = NULL;
	}
	in_hand = t;
	return t;
}

/*
 * The answer of a finished transfer as the synchronous path hands one on
 * (http.c): its transport failure raised as the same error, else its
 * status, content type and body. The body is the transfer's buffer, not a
 * copy: resp is good until the transfer is freed.
 */
void
maestro_transfer_response(Transfer *t, MaestroResponse *resp)
{
	char	   *ctype = NULL;

	if (t->result != CURLE_OK)
		maestro_http_raise_transport_error(t->conn, &t->req, t->easy, t->result, t->errbuf,
										   &t->buf, 0);
	memset(resp, 0, sizeof(*resp));
	resp->status = t->status;
	resp->body = t->buf.data ? t->buf.data : "";
	resp->body_len = t->buf.len;
	curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &ctype);
	strlcpy(resp->content_type, ctype ? ctype : "", sizeof(resp->content_type));
}

/* Free libcurl's side and the response buffer; not the context. */
void
maestro_transfer_free(Transfer *t)
{
	if (t == in_hand)
		in_hand = NULL;
	if (t->easy)
		release(t);
	free(t->buf.data);
	t->buf.data = NULL;
}

/* Abandon one transfer under way; its palloc'd memory stays the owner's. */
void
maestro_transfer_cancel(Transfer *t)
{
	Transfer  **link;

	for (link = &running; *link; link = &(*link)->next)
		if (*link == t)
		{
			*link = t->next;
			running_count--;
			break;
		}
	for (link = &finished; *link; link = &(*link)->next)
		if (*link == t)
		{
			*link = t->next;
			break;
		}
	t->next = NULL;
	maestro_transfer_free(t);
}

/* Abandon every transfer (shutdown, or recovery from an error). */
void
maestro_transfer_abort_all(void)
{
	while (running)
	{
		Transfer   *t = running;

		running = t->next;
		maestro_transfer_free(t);
		/*
		 * a send's memory is its request's; a look-up's is its group's; a
		 * sync page's is the sync run's (maestro_sync_loop_drop); a token
		 * fetch's its fetch's (delivery.c frees those, and ends the fetch's
		 * claim, in maestro_delivery_drop_all)
		 */
		if (t->kind == TRANSFER_SEND)
			MemoryContextDelete(t->cxt);
	}
	running_count = 0;
	while (finished)
	{
		Transfer   *t = finished;

		finished = t->next;
		maestro_transfer_free(t);
		if (t->kind == TRANSFER_SEND)
			MemoryContextDelete(t->cxt);
	}
	if (in_hand)
	{
		Transfer   *t = in_hand;

		maestro_transfer_free(t);
		if (t->kind == TRANSFER_SEND)
			MemoryContextDelete(t->cxt);
	}
}
