/*-------------------------------------------------------------------------
 *
 * worker.h
 *		Declarations shared by the files of the trigger-queue worker.
 *
 * The worker is split by concern, and the calls go one way:
 *
 *	worker.c (the loop, its one wait, error recovery, housekeeping)
 *	  -> sync_loop.c (the periodic maestro_sync(): its pages on the multi
 *		 handle, then the statement)
 *	  -> queue_sql.c (claiming and recording, in transactions)
 *	  -> delivery.c (what to do with a request: send, look up, retry)
 *	  -> transfer.c (asynchronous HTTP on the worker's multi handle)
 *	  -> pacing.c (per-server rate windows, pauses, claim budgets)
 *
 * queue_sql.c hands claimed requests to delivery.c; none of these calls
 * back up. launcher.c owns the worker's life cycle (start, wake, the exit
 * handshake); queue.c the backends' side of the queue.
 *
 * src/worker.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef MAESTRO_WORKER_H
#define MAESTRO_WORKER_H

#include "maestro.h"

#include "nodes/pg_list.h"

/* longest a retry or a pause is put off */
#define MAX_RETRY_DELAY_MS	(10 * 60 * 1000)

/*
 * One claimed request ('sending' in the table), from its claim until its
 * outcome is recorded. Everything it owns lives in cxt, deleted with it,
 * so that a steady backlog never accumulates memory.
 */
typedef struct Delivery
{
	MemoryContext cxt;
	int64		id;
	Oid			server_id;
	char	   *workflow_id;
	char	   *inputs;
	char	   *instance_name;
	int			attempts;		/* counting this one */
	bool		verify;			/* look it up by name before sending */
	bool		sent_before_start;	/* any earlier send was a previous worker's */
	/* accepted (2xx) without naming its instance: looked up for its id */
	bool		id_only;
	int			http_status;
	TimestampTz sent_at;
	char	   *instance_url;
	MaestroConnection *conn;
	char	   *problem;		/* why it cannot be sent at all */
	struct Delivery *next;
} Delivery;

/* What became of a request; recorded in one transaction per round. */
typedef struct Outcome
{
	int64		id;
	const char *state;			/* done, failed or queued (retry) */
	int			http_status;	/* 0: none */
	char	   *error;
	char	   *instance_id;
	char	   *instance_url;
	long		retry_in_ms;	/* for queued */
	bool		verify;
	TimestampTz sent_at;		/* when its POST left; 0: not sent */
	bool		unclaim;		/* queued again unsent: the attempt is not counted */
} Outcome;

/* One asynchronous HTTP exchange on the worker's multi handle. */
typedef enum TransferKind
{
	TRANSFER_SEND,				/* a trigger POST; owner is a Delivery */
	TRANSFER_LOOKUP,			/* an instances list; owner is a LookupGroup */
	TRANSFER_TOKEN,				/* a JWT grant; owner is delivery.c's TokenFetch */
	TRANSFER_SYNC_PAGE			/* a page of the periodic sync (sync_loop.c) */
} TransferKind;

typedef struct Transfer
{
	MemoryContext cxt;			/* the transfer's own memory */
	TransferKind kind;
	void	   *owner;
	Oid			server_id;
	CURL	   *easy;
	struct curl_slist *headers;
	MaestroBuffer buf;
	char		errbuf[CURL_ERROR_SIZE];
	char	   *url;
	MaestroRequest req;
	MaestroConnection *conn;
	TimestampTz started_at;
	/* set when it finished */
	CURLcode	result;
	long		status;
	struct Transfer *next;
} Transfer;

/* worker.c; the stop flag is http.c's, which its synchronous waits watch */
#define maestro_worker_stopping maestro_shutdown_requested
extern char *maestro_worker_caught_error(MemoryContext keep);
extern ErrorData *maestro_worker_caught_edata(MemoryContext keep);
extern MemoryContext maestro_worker_begin(const char *activity);
extern void maestro_worker_commit(MemoryContext back_to);

/* pacing.c */
extern TimestampTz maestro_pacing_next_slot(Oid server_id, TimestampTz now);
extern void maestro_pacing_record_send(Oid server_id, TimestampTz now);
extern void maestro_pacing_pause(Oid server_id, long ms);
extern void maestro_pacing_note_claimed(Oid server_id, int delta);
extern bool maestro_pacing_may_claim(Oid server_id, TimestampTz now);
extern bool maestro_pacing_wants_claim(TimestampTz now, TimestampTz *reopen);
extern Datum maestro_pacing_closed_servers(TimestampTz now);
extern void maestro_pacing_forget_claims(void);

/* transfer.c */
extern void maestro_transfer_init(void);
extern void maestro_transfer_shutdown(void);
extern Transfer *maestro_transfer_start(TransferKind kind, void *owner,
										MaestroConnection *conn,
										MaestroRequest *req,
										MemoryContext cxt);
extern int	maestro_transfer_count(void);
extern void maestro_transfer_kick(void);
extern void maestro_transfer_wait(long timeout_ms);
extern Transfer *maestro_transfer_take_finished(void);
extern void maestro_transfer_response(Transfer *t, MaestroResponse *resp);
extern void maestro_transfer_free(Transfer *t);
extern void maestro_transfer_abort_all(void);
extern void maestro_transfer_cancel(Transfer *t);

/* delivery.c */
typedef enum TokenGate
{
	TOKEN_READY,				/* conn->access_token is set */
	TOKEN_PARKED,				/* being fetched: the caller waits */
	TOKEN_FAILED				/* the fetch failed, or could not start */
} TokenGate;
extern TokenGate maestro_delivery_token(MaestroConnection *conn, TimestampTz now,
										char **problem, TimestampTz *wake);
extern long maestro_retry_backoff_ms(int attempts);
extern Outcome *maestro_new_outcome(int64 id, const char *state);
extern Outcome *maestro_retry_or_fail(int64 id, int attempts, int http_status,
									  char *error, bool uncertain,
									  long retry_after_ms);
extern void maestro_delivery_add(Delivery *d);
extern int	maestro_delivery_pending(void);
extern List *maestro_delivery_dispatch(TimestampTz now, TimestampTz *next_slot);
extern List *maestro_delivery_finished(Transfer *t);
extern void maestro_delivery_drop_all(void);

/* queue_sql.c */
extern bool maestro_queue_sql_claim(List *outcomes, int limit, bool recover,
									List **claimed, bool *more,
									TimestampTz *next_due);
extern void maestro_queue_sql_record(List *outcomes);

/* sync_loop.c */
extern TimestampTz maestro_sync_loop_run(TimestampTz now);
extern void maestro_sync_loop_finished(Transfer *t);
extern void maestro_sync_loop_show_activity(void);
extern void maestro_sync_loop_drop(void);

#endif							/* MAESTRO_WORKER_H */
