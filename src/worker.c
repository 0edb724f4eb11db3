/*-------------------------------------------------------------------------
 *
 * worker.c
 *		The background worker that sends queued trigger requests.
 *
 * One loop: claim due requests, send them concurrently through a curl
 * multi handle (at most maestro.max_concurrency in flight, at most
 * maestro.rate_limit a second per server), record each outcome, and wait
 * for the next commit, the next due retry, or a finished transfer.
 *
 * Exactly once. A request is marked 'sending' in a committed transaction
 * before its POST leaves, so after any crash the worker knows which sends
 * may have reached Maestro. Such a request, and one whose send failed in a
 * way that leaves it unknown whether Maestro acted (a 5xx, a transport
 * error after connecting), carries verify_before_send: before it is sent
 * again the worker lists the workflow's instances and looks for the
 * request's instance name, which ends in the request id and a random tag
 * (queue.c). Found, the request is done; not found, it is sent.
 *
 * The worker exits once nothing is in flight, queued, or due, so that an
 * idle server keeps no connection to the database; queue.c starts it again
 * at the next commit. SIGTERM ends it with exit code 0, which also keeps
 * the postmaster from restarting it after DROP DATABASE ... WITH (FORCE).
 *
 * src/worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "maestro.h"

#include <limits.h>
#include <math.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/pmsignal.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/builtins.h"
#include "utils/resowner.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

/* how long the worker lingers with nothing to do before it exits */
#define IDLE_EXIT_MS		2000
/* longest single wait while transfers are in flight */
#define POLL_SLICE_MS		10
/* the rate limit's window: a second, plus slack for clock granularity */
#define RATE_WINDOW_MS		1010
/* longest a retry or a rate-limit pause is put off */
#define MAX_RETRY_DELAY_MS	(10 * 60 * 1000)

static volatile sig_atomic_t got_sigterm = false;

/* One request whose POST is in flight. */
typedef struct InFlight
{
	MemoryContext cxt;
	int64		id;
	Oid			server_id;
	int			attempts;
	CURL	   *easy;
	struct curl_slist *headers;
	MaestroBuffer buf;
	char		errbuf[CURL_ERROR_SIZE];
	char	   *url;
	MaestroRequest req;
	MaestroConnection *conn;	/* a copy, to drop a refused token */
	char	   *workflow_id;	/* to find the instance by its name */
	char	   *instance_name;
	TimestampTz started_at;		/* when the POST left */
	long		rate_remaining; /* X-RateLimit-Remaining, -1 if absent */
	long		rate_reset;		/* X-RateLimit-Reset (epoch s), -1 if absent */
	struct InFlight *next;
} InFlight;

/* Send pacing of one server: the times of its last rate_limit sends. */
typedef struct ServerPace
{
	Oid			server_id;
	TimestampTz *sent;
	int			capacity;
	int			head;
	int			count;
	TimestampTz paused_until;
	int			claimed;		/* of its requests in the ready list */
	struct ServerPace *next;
} ServerPace;

/* A request claimed for sending, with what is needed to send it. */
typedef struct Claimed
{
	int64		id;
	Oid			server_id;
	char	   *workflow_id;
	char	   *inputs;
	char	   *instance_name;
	int			attempts;		/* counting this one */
	bool		verify;
	MaestroConnection *conn;
	char	   *problem;		/* why it cannot be sent at all */
} Claimed;

/* What became of a request; recorded in one transaction per batch. */
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
} Outcome;

static CURLM *multi = NULL;
static InFlight *in_flight = NULL;
static int	in_flight_count = 0;
static ServerPace *paces = NULL;
static int	pace_capacity = -1;
static List *ready = NIL;		/* claimed ('sending'), waiting for a slot */
static MemoryContext ready_cxt = NULL;

/* the statements, prepared once per installation of the extension */
static Oid	plans_extension = InvalidOid;
static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr mark_plan = NULL;
static SPIPlanPtr due_plan = NULL;
static SPIPlanPtr record_plan = NULL;
static SPIPlanPtr mirror_plan = NULL;

static void
worker_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	got_sigterm = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

/* ---- pacing ---- */

static ServerPace *
pace_for(Oid server_id)
{
	ServerPace *pace;

	if (pace_capacity != maestro_rate_limit)
	{
		/* the limit changed on reload: start the windows afresh */
		while (paces)
		{
			ServerPace *next = paces->next;

			if (paces->sent)
				pfree(paces->sent);
			pfree(paces);
			paces = next;
		}
		pace_capacity = maestro_rate_limit;
	}
	for (pace = paces; pace; pace = pace->next)
		if (pace->server_id == server_id)
			return pace;

	pace = MemoryContextAllocZero(TopMemoryContext, sizeof(ServerPace));
	pace->server_id = server_id;
	pace->capacity = pace_capacity;
	if (pace_capacity > 0)
		pace->sent = MemoryContextAllocZero(TopMemoryContext,
											sizeof(TimestampTz) * pace_capacity);
	pace->next = paces;
	paces = pace;
	return pace;
}

/*
 * When the server may get its next request: now, or later when the rate
 * limit's window or a pause asked for by the API says so.
 */
static TimestampTz
pace_next_slot(ServerPace *pace, TimestampTz now)
{
	TimestampTz slot = now;

	if (pace->capacity > 0 && pace->count >= pace->capacity)
		slot = Max(slot, TimestampTzPlusMilliseconds(pace->sent[pace->head], RATE_WINDOW_MS));

	/*
	 * No bursts: a window's worth sent at once arrives spread over the
	 * network's jitter, and a burst at the end of one window plus one at the
	 * start of the next would exceed the limit as the server counts. So the
	 * sends are spaced evenly, with 5% slack.
	 */
	if (pace->capacity > 0 && pace->count > 0)
		slot = Max(slot, pace->sent[(pace->head + pace->count - 1) % pace->capacity] +
				   (TimestampTz) (1050000.0 / pace->capacity));
	return Max(Max(slot, pace->paused_until),
			   now + (TimestampTz) maestro_ratelimit_wait_ms(pace->server_id, NULL) * 1000);
}

/* How many more requests the server may get in the current window. */
static int
pace_allowance(ServerPace *pace, TimestampTz now)
{
	int			used = 0;
	int			i;

	if (pace->paused_until > now || maestro_ratelimit_wait_ms(pace->server_id, NULL) > 0)
		return 0;
	if (pace->capacity <= 0)
		return INT_MAX;
	for (i = 0; i < pace->count; i++)
		if (pace->sent[(pace->head + i) % pace->capacity] >
			TimestampTzPlusMilliseconds(now, -RATE_WINDOW_MS))
			used++;
	return pace->capacity - used;
}

static void
pace_record(ServerPace *pace, TimestampTz now)
{
	if (pace->capacity <= 0)
		return;
	if (pace->count < pace->capacity)
		pace->sent[(pace->head + pace->count++) % pace->capacity] = now;
	else
	{
		pace->sent[pace->head] = now;
		pace->head = (pace->head + 1) % pace->capacity;
	}
}

static void
pace_pause(Oid server_id, long ms)
{
	ServerPace *pace = pace_for(server_id);
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													Min(ms, MAX_RETRY_DELAY_MS));

	pace->paused_until = Max(pace->paused_until, until);
}

/* ---- transactions ---- */

static void
begin_work(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

static void
end_work(MemoryContext back_to)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	MemoryContextSwitchTo(back_to);
}

static SPIPlanPtr
prepare(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);

	if (plan == NULL)
		elog(ERROR, "could not prepare a maestro worker statement: %s",
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

/*
 * Prepare the worker's statements for the installed extension, once; false
 * when the extension is not installed (any more).
 */
static bool
prepare_plans(void)
{
	Oid			extension = get_extension_oid("maestro", true);
	char	   *table;
	Oid			int4[1] = {INT4OID};
	Oid			int8array[1] = {INT8ARRAYOID};
	Oid			record_types[9] = {INT8OID, TEXTOID, INT4OID, TEXTOID, UUIDOID, TEXTOID, INT8OID, BOOLOID,
	TIMESTAMPTZOID};

	if (!OidIsValid(extension))
		return false;
	if (extension == plans_extension)
		return true;

	if (claim_plan)
	{
		SPI_freeplan(claim_plan);
		SPI_freeplan(mark_plan);
		SPI_freeplan(due_plan);
		SPI_freeplan(record_plan);
		SPI_freeplan(mirror_plan);
	}
	table = maestro_queue_table();
	claim_plan = prepare(psprintf("SELECT id, server_id, requested_by, workflow_id::text,"
								  " inputs::text, instance_name, attempts, verify_before_send"
								  " FROM %s WHERE state = 'queued' AND next_attempt_at <= now()"
								  " ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED",
								  table), 1, int4);
	mark_plan = prepare(psprintf("UPDATE %s SET state = 'sending', attempts = attempts + 1,"
								 " sent_at = now() WHERE id = ANY($1)", table), 1, int8array);
	due_plan = prepare(psprintf("SELECT min(next_attempt_at), count(*) FROM %s WHERE state = 'queued'",
								table), 0, NULL);
	record_plan = prepare(psprintf("UPDATE %s SET state = $2, http_status = $3,"
								   " last_error = $4, instance_id = $5, instance_url = $6,"
								   " next_attempt_at = CASE WHEN $7 IS NULL THEN next_attempt_at"
								   "   ELSE now() + $7 * interval '1 millisecond' END,"
								   " verify_before_send = $8, sent_at = coalesce($9, sent_at),"
								   " done_at = CASE WHEN $2 IN ('done', 'failed') THEN now() END"
								   " WHERE id = $1 AND state = 'sending'"
								   " RETURNING workflow_id, instance_name, inputs", table),
						  9, record_types);

	/*
	 * A started instance goes into the mirror at once, as In Progress (its
	 * first state), with its "new instance" event: the next sync completes
	 * it. No API call is spent on it.
	 */
	{
		char	   *schema = maestro_extension_schema_name();
		Oid			mirror_types[4] = {UUIDARRAYOID, UUIDARRAYOID, TEXTARRAYOID, JSONBARRAYOID};

		mirror_plan = prepare(psprintf("WITH seen AS ("
									   " INSERT INTO %1$s.maestro_synced_instances AS m"
									   "  (workflow_id, id, name, workflow_status, trigger_inputs,"
									   "   started_at, first_seen_at, last_seen_at)"
									   " SELECT w, i, n, 'In Progress', t, now(), now(), now()"
									   " FROM unnest($1, $2, $3, $4) AS u (w, i, n, t)"
									   " ON CONFLICT ON CONSTRAINT maestro_synced_instances_pkey DO NOTHING"
									   " RETURNING m.workflow_id, m.id),"
									   " events AS ("
									   " INSERT INTO %1$s.maestro_instance_events"
									   "  (workflow_id, instance_id, old_status, new_status)"
									   " SELECT workflow_id, id, NULL, 'In Progress' FROM seen"
									   " RETURNING workflow_id, instance_id)"
									   " SELECT workflow_id::text, instance_id::text FROM events",
									   schema),
							  4, mirror_types);
	}
	plans_extension = extension;
	return true;
}

/*
 * Claim up to "slots" due requests whose servers may be sent to now, into
 * memory context keep. Sets
 * *more when due requests were left behind, *next_due to when the earliest
 * queued request falls due, and returns NULL with *gone set when the
 * extension is not (or no longer) installed.
 */
static List *
claim(int slots, bool recover, bool *more, TimestampTz *next_due,
	  bool *gone, MemoryContext keep)
{
	MemoryContext caller = CurrentMemoryContext;
	List	   *claimed = NIL;
	Datum	   *ids;
	int			n_ids = 0;
	uint64		i;
	Datum		args[1];
	TimestampTz now = GetCurrentTimestamp();

	*more = false;
	*gone = false;
	*next_due = 0;

	begin_work("claiming maestro trigger requests");
	if (!prepare_plans())
	{
		*gone = true;
		end_work(caller);
		return NIL;
	}

	if (recover)
	{
		/* only one worker runs: 'sending' rows are a dead worker's */
		SPI_execute(psprintf("UPDATE %s SET state = 'queued', verify_before_send = true,"
							 " next_attempt_at = now(), last_error = 'the worker stopped while"
							 " sending; the instance is looked up before sending again'"
							 " WHERE state = 'sending'", maestro_queue_table()), false, 0);
		if (SPI_processed > 0)
			ereport(LOG,
					(errmsg("maestro worker found %llu requests that may have been sent before a stop; they are looked up before sending",
							(unsigned long long) SPI_processed)));
	}

	args[0] = Int32GetDatum(slots);
	SPI_execute_plan(claim_plan, args, NULL, false, 0);
	if (SPI_processed == (uint64) slots)
		*more = true;

	ids = MemoryContextAlloc(keep, sizeof(Datum) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Oid			server_id = DatumGetObjectId(SPI_getbinval(tuple, desc, 2, &isnull));
		ServerPace *pace = pace_for(server_id);
		MemoryContext old;
		Claimed    *c;

		/*
		 * Take no more of a server's requests than it may get in this
		 * window; the rest stay queued. Sends are paced again when they
		 * leave, since a request may wait for a free slot.
		 */
		if (pace->claimed >= pace_allowance(pace, now))
		{
			*more = true;
			continue;
		}
		pace->claimed++;

		old = MemoryContextSwitchTo(keep);
		c = palloc0(sizeof(Claimed));
		c->id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
		c->server_id = server_id;
		c->workflow_id = SPI_getvalue(tuple, desc, 4);
		c->inputs = SPI_getvalue(tuple, desc, 5);
		c->instance_name = SPI_getvalue(tuple, desc, 6);
		c->attempts = DatumGetInt32(SPI_getbinval(tuple, desc, 7, &isnull)) + 1;
		c->verify = DatumGetBool(SPI_getbinval(tuple, desc, 8, &isnull));
		c->conn = maestro_connection_for(server_id,
										 DatumGetObjectId(SPI_getbinval(tuple, desc, 3, &isnull)),
										 &c->problem);
		claimed = lappend(claimed, c);
		MemoryContextSwitchTo(old);
		ids[n_ids++] = Int64GetDatum(c->id);
	}

	if (n_ids > 0)
	{
		Datum		values[1];

		values[0] = PointerGetDatum(construct_array(ids, n_ids, INT8OID, 8, true, TYPALIGN_DOUBLE));
		SPI_execute_plan(mark_plan, values, NULL, false, 0);
	}

	if (!*more)
	{
		SPI_execute_plan(due_plan, NULL, NULL, true, 1);
		if (SPI_processed == 1)
		{
			bool		isnull;
			Datum		due = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				*next_due = DatumGetTimestampTz(due);
			maestro_stats_worker(0, 0, 0, 0,
								 DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
															 SPI_tuptable->tupdesc, 2, &isnull)));
		}
	}
	end_work(caller);
	return claimed;
}

/* Write the outcomes of one batch, and tell listeners. */
static void
record(List *outcomes, MemoryContext keep)
{
	ListCell   *cell;
	Datum	   *mirror[4];
	int			started = 0;
	int			k;

	if (outcomes == NIL)
		return;
	for (k = 0; k < 4; k++)
		mirror[k] = palloc(sizeof(Datum) * list_length(outcomes));

	begin_work("recording maestro trigger outcomes");
	if (!prepare_plans())
	{
		/* dropped while requests were in flight: nothing to record into */
		end_work(keep);
		return;
	}

	foreach(cell, outcomes)
	{
		Outcome    *o = (Outcome *) lfirst(cell);
		Datum		values[9];
		char		nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};

		values[0] = Int64GetDatum(o->id);
		values[1] = CStringGetTextDatum(o->state);
		values[2] = Int32GetDatum(o->http_status);
		if (o->http_status == 0)
			nulls[2] = 'n';
		if (o->error)
			values[3] = CStringGetTextDatum(o->error);
		else
			nulls[3] = 'n';
		if (o->instance_id)
			values[4] = DirectFunctionCall1(uuid_in, CStringGetDatum(o->instance_id));
		else
			nulls[4] = 'n';
		if (o->instance_url)
			values[5] = CStringGetTextDatum(o->instance_url);
		else
			nulls[5] = 'n';
		values[6] = Int64GetDatum(o->retry_in_ms);
		if (strcmp(o->state, "queued") != 0)
			nulls[6] = 'n';
		values[7] = BoolGetDatum(o->verify);
		values[8] = TimestampTzGetDatum(o->sent_at);
		if (o->sent_at == 0)
			nulls[8] = 'n';

		SPI_execute_plan(record_plan, values, nulls, false, 0);
		if (SPI_processed == 1 && strcmp(o->state, "queued") != 0)
			Async_Notify("maestro_trigger", psprintf("%lld %s", (long long) o->id, o->state));
		if (SPI_processed == 1 && strcmp(o->state, "done") == 0 && o->instance_id)
		{
			HeapTuple	row = SPI_tuptable->vals[0];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;

			mirror[0][started] = SPI_getbinval(row, desc, 1, &isnull);
			mirror[1][started] = values[4];
			mirror[2][started] = SPI_getbinval(row, desc, 2, &isnull);
			mirror[3][started] = SPI_getbinval(row, desc, 3, &isnull);
			started++;
		}
		maestro_stats_worker(0, strcmp(o->state, "done") == 0, strcmp(o->state, "failed") == 0,
							 strcmp(o->state, "queued") == 0, -1);
	}

	/*
	 * Started instances go into the mirror at once, as In Progress (their
	 * first state), each with its "new instance" event: the next sync
	 * completes them. No API call is spent on it. The start was announced
	 * on channel maestro_trigger already; a second notification on
	 * maestro_instance would cost the worker an eighth of its throughput.
	 */
	if (started > 0)
	{
		Oid			elem_types[4] = {UUIDOID, UUIDOID, TEXTOID, JSONBOID};
		Datum		arrays[4];
		int			k;

		for (k = 0; k < 4; k++)
		{
			int16		typlen;
			bool		typbyval;
			char		typalign;

			get_typlenbyvalalign(elem_types[k], &typlen, &typbyval, &typalign);
			arrays[k] = PointerGetDatum(construct_array(mirror[k], started, elem_types[k],
														typlen, typbyval, typalign));
		}
		SPI_execute_plan(mirror_plan, arrays, NULL, false, 0);
	}
	end_work(keep);
}

/* ---- deciding what became of a request ---- */

static long
retry_delay_ms(int attempts)
{
	double		ms = (double) maestro_retry_delay_ms * pow(2.0, Max(attempts - 1, 0));

	/* jitter: between half and one and a half times the delay */
	ms *= 0.5 + pg_prng_double(&pg_global_prng_state);
	return (long) Min(ms, (double) MAX_RETRY_DELAY_MS);
}

static Outcome *
new_outcome(int64 id, const char *state)
{
	Outcome    *o = palloc0(sizeof(Outcome));

	o->id = id;
	o->state = state;
	o->retry_in_ms = -1;
	return o;
}

/*
 * A failure that may be retried: queued again, or failed once the attempts
 * are used up. "uncertain" means Maestro may have acted on the request.
 */
static Outcome *
retry_or_fail(int64 id, int attempts, int http_status, char *error,
			  bool uncertain, long retry_after_ms)
{
	Outcome    *o;

	if (attempts >= maestro_max_attempts)
	{
		o = new_outcome(id, "failed");
		o->error = psprintf("%s (after %d attempts)", error, attempts);
	}
	else
	{
		o = new_outcome(id, "queued");
		o->error = error;
		o->retry_in_ms = retry_after_ms >= 0 ? Max(retry_after_ms, retry_delay_ms(attempts))
			: retry_delay_ms(attempts);
	}
	o->http_status = http_status;
	o->verify = uncertain;
	return o;
}

static Outcome *
outcome_of(InFlight *f, CURLcode rc)
{
	long		status = 0;
	curl_off_t	retry_after = -1;
	char	   *message;

	if (rc != CURLE_OK)
	{
		/* refused or unresolved: the request cannot have reached Maestro */
		bool		uncertain = !(rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST);

		return retry_or_fail(f->id, f->attempts, 0,
							 psprintf("transport error: %s",
									  maestro_redact(f->errbuf[0] ? f->errbuf : curl_easy_strerror(rc))),
							 uncertain, -1);
	}

	curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &status);
	if (status >= 200 && status <= 299)
	{
		cJSON	   *root = maestro_json_try_parse(f->buf.data, f->buf.len);
		const cJSON *id = maestro_json_member(root, "instance_id");
		const cJSON *url = maestro_json_member(root, "instance_url");
		Outcome    *o = new_outcome(f->id, "done");

		o->http_status = (int) status;
		if (cJSON_IsString(id) && maestro_is_uuid(id->valuestring))
			o->instance_id = pstrdup(id->valuestring);
		else					/* the spec requires no field: still done */
			o->instance_id = maestro_find_instance_by_name(f->conn, f->workflow_id,
														   f->instance_name, &o->error);
		if (cJSON_IsString(url))
			o->instance_url = pstrdup(url->valuestring);
		return o;
	}

	message = psprintf("HTTP %ld: %s", status,
					   maestro_error_message_from_body(f->buf.data, f->buf.len, NULL));
	curl_easy_getinfo(f->easy, CURLINFO_RETRY_AFTER, &retry_after);
	if (status == 401 && f->conn->jwt)
	{
		/* a minted token was refused: the request had no effect */
		maestro_auth_forget(f->conn);
		return retry_or_fail(f->id, f->attempts, (int) status, message, false, 0);
	}
	if (status == 429)
	{
		long		wait = retry_after >= 0 ? (long) retry_after * 1000 : retry_delay_ms(f->attempts);

		pace_pause(f->server_id, wait);
		return retry_or_fail(f->id, f->attempts, (int) status, message, false, wait);
	}
	if (status >= 500)
		return retry_or_fail(f->id, f->attempts, (int) status, message, true,
							 retry_after >= 0 ? (long) retry_after * 1000 : -1);

	/* any other answer is final: the request as it stands will not succeed */
	{
		Outcome    *o = new_outcome(f->id, "failed");

		o->http_status = (int) status;
		o->error = message;
		return o;
	}
}

/*
 * In a PG_CATCH block outside any transaction: the caught error's message
 * (and hint), copied into keep, the error state cleared. The request it
 * concerns records it; the worker goes on.
 */
static char *
caught_error(MemoryContext keep)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(keep);
	edata = CopyErrorData();
	FlushErrorState();
	return edata->hint ? psprintf("%s %s", edata->message, edata->hint) : edata->message;
}

/*
 * Before sending again a request that may already have reached Maestro,
 * look for its instance by name. Returns the outcome when that settles it
 * (found, or the look-up failed and the request waits), NULL to send.
 */
static Outcome *
look_up_sent(Claimed *c, MemoryContext keep)
{
	Outcome    *volatile result = NULL;

	pgstat_report_activity(STATE_RUNNING, "looking up a maestro instance by name");
	PG_TRY();
	{
		cJSON	   *root = maestro_get_instances(c->conn, c->workflow_id);
		const cJSON *list = maestro_json_list(root, "instances");
		const cJSON *inst;

		cJSON_ArrayForEach(inst, list)
		{
			const cJSON *name = maestro_json_member(inst, "name");
			const cJSON *id = maestro_json_member(inst, "id");

			if (cJSON_IsString(name) && strcmp(name->valuestring, c->instance_name) == 0 &&
				cJSON_IsString(id) && maestro_is_uuid(id->valuestring))
			{
				Outcome    *o = new_outcome(c->id, "done");

				o->instance_id = pstrdup(id->valuestring);
				o->error = pstrdup("found by its name after an uncertain send; Maestro gives the instance_url only at trigger time");
				result = o;
				break;
			}
		}
	}
	PG_CATCH();
	{
		result = retry_or_fail(c->id, c->attempts, 0,
							   psprintf("could not look up whether an earlier send arrived: %s",
										caught_error(keep)),
							   true, -1);
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	return result;
}

/*
 * A minted token for the request, from the cache or the account server;
 * NULL when it is there, else the outcome of failing to get one.
 */
static Outcome *
prepare_token(Claimed *c, MemoryContext keep)
{
	Outcome    *volatile result = NULL;

	if (!c->conn->jwt)
		return NULL;
	PG_TRY();
	{
		maestro_auth_prepare(c->conn);
	}
	PG_CATCH();
	{
		result = retry_or_fail(c->id, c->attempts, 0,
							   psprintf("could not get an access token: %s", caught_error(keep)),
							   c->verify, -1);
	}
	PG_END_TRY();
	return result;
}

/* ---- sending ---- */

static size_t
header_callback(char *buffer, size_t size, size_t nitems, void *userdata)
{
	InFlight   *f = (InFlight *) userdata;
	size_t		n = size * nitems;

	if (n > 22 && pg_strncasecmp(buffer, "X-RateLimit-Remaining:", 22) == 0)
		f->rate_remaining = strtol(buffer + 22, NULL, 10);
	else if (n > 18 && pg_strncasecmp(buffer, "X-RateLimit-Reset:", 18) == 0)
		f->rate_reset = strtol(buffer + 18, NULL, 10);
	return n;
}

/* Start the POST of one claimed request; false if it could not start. */
static bool
start_send(Claimed *c)
{
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "maestro request",
											  ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	InFlight   *f = palloc0(sizeof(InFlight));

	f->cxt = cxt;
	f->id = c->id;
	f->server_id = c->server_id;
	f->attempts = c->attempts;
	f->rate_remaining = -1;
	f->rate_reset = -1;
	/* the claimed request's memory goes before the transfer ends */
	f->conn = maestro_connection_copy(c->conn);
	f->workflow_id = pstrdup(c->workflow_id);
	f->instance_name = pstrdup(c->instance_name);
	maestro_trigger_request(c->conn, c->workflow_id, c->instance_name, c->inputs, &f->req);
	f->url = maestro_http_url(c->conn, &f->req);
	f->headers = maestro_http_headers(c->conn, &f->req);
	f->buf.limit = (size_t) maestro_max_response_kb * 1024;
	f->easy = curl_easy_init();
	MemoryContextSwitchTo(old);

	if (f->headers == NULL || f->easy == NULL)
	{
		curl_slist_free_all(f->headers);
		if (f->easy)
			curl_easy_cleanup(f->easy);
		MemoryContextDelete(cxt);
		return false;
	}

	maestro_http_configure(f->easy, f->conn, f->url, &f->req, f->headers, &f->buf, f->errbuf);
	curl_easy_setopt(f->easy, CURLOPT_PRIVATE, f);
	curl_easy_setopt(f->easy, CURLOPT_HEADERFUNCTION, header_callback);
	curl_easy_setopt(f->easy, CURLOPT_HEADERDATA, f);
	if (curl_multi_add_handle(multi, f->easy) != CURLM_OK)
	{
		curl_slist_free_all(f->headers);
		curl_easy_cleanup(f->easy);
		MemoryContextDelete(cxt);
		return false;
	}

	f->next = in_flight;
	in_flight = f;
	in_flight_count++;
	f->started_at = GetCurrentTimestamp();
	maestro_stats_worker(1, 0, 0, 0, -1);
	return true;
}

static void
finish_send(InFlight *f)
{
	InFlight  **link;

	for (link = &in_flight; *link; link = &(*link)->next)
		if (*link == f)
		{
			*link = f->next;
			break;
		}
	in_flight_count--;
	curl_multi_remove_handle(multi, f->easy);
	curl_easy_cleanup(f->easy);
	curl_slist_free_all(f->headers);
	free(f->buf.data);
	MemoryContextDelete(f->cxt);
}

/* Drive the transfers; collect the outcomes of those that finished. */
static List *
collect(void)
{
	List	   *outcomes = NIL;
	CURLMsg    *msg;
	int			running;
	int			left;

	curl_multi_perform(multi, &running);
	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		InFlight   *f = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &f);
		{
			Outcome    *o = outcome_of(f, msg->data.result);

			o->sent_at = f->started_at;
			outcomes = lappend(outcomes, o);
		}
		{
			long		status = 0;
			curl_off_t	total_us = 0;

			if (msg->data.result == CURLE_OK)
				curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &status);
			curl_easy_getinfo(f->easy, CURLINFO_TOTAL_TIME_T, &total_us);
			maestro_stats_record(f->server_id, MAESTRO_EP_TRIGGER, status,
								 (double) total_us / 1000.0, 0, status == 429 ? 1 : 0,
								 f->buf.len);
		}

		/* a spent hourly quota holds the server's sends (pace_allowance) */
		maestro_ratelimit_observe(f->server_id, f->easy);
		finish_send(f);
	}
	return outcomes;
}

/* The ready list and its cells live in ready_cxt, across loop iterations. */
static List *
lappend_in(List *list, Claimed *c)
{
	MemoryContext old = MemoryContextSwitchTo(ready_cxt);

	list = lappend(list, c);
	MemoryContextSwitchTo(old);
	return list;
}

/*
 * Hand ready requests to curl while slots are free, after a look-up where
 * one is due; a request whose server must wait stays ready. Sets
 * *next_slot to when a waiting server may be sent to again.
 */
static List *
dispatch(MemoryContext keep, TimestampTz *next_slot)
{
	List	   *outcomes = NIL;
	List	   *waiting = NIL;
	ListCell   *cell;
	TimestampTz now = GetCurrentTimestamp();

	*next_slot = 0;
	foreach(cell, ready)
	{
		Claimed    *c = (Claimed *) lfirst(cell);
		ServerPace *pace = pace_for(c->server_id);
		TimestampTz slot = pace_next_slot(pace, now);
		Outcome    *o = NULL;

		if (in_flight_count >= maestro_max_concurrency || slot > now)
		{
			if (slot > now && (*next_slot == 0 || slot < *next_slot))
				*next_slot = slot;
			waiting = lappend_in(waiting, c);
			continue;
		}
		pace->claimed = Max(pace->claimed - 1, 0);

		if (c->problem)
		{
			o = new_outcome(c->id, "failed");
			o->error = pstrdup(c->problem);
			o->verify = c->verify;
		}
		else
		{
			pace_record(pace, now);
			if (c->verify)
			{
				/* the look-up is a call of its own; the send waits its turn */
				o = look_up_sent(c, keep);
				if (o == NULL)
				{
					c->verify = false;
					now = GetCurrentTimestamp();
					slot = pace_next_slot(pace, now);
					if (slot > now)
					{
						if (*next_slot == 0 || slot < *next_slot)
							*next_slot = slot;
						pace->claimed++;
						waiting = lappend_in(waiting, c);
						continue;
					}
					pace_record(pace, now);
				}
			}
			if (o == NULL)
				o = prepare_token(c, keep);
			if (o == NULL && !start_send(c))
				o = retry_or_fail(c->id, c->attempts, 0,
								  pstrdup("out of memory while preparing the request"),
								  c->verify, -1);
		}
		if (o)
			outcomes = lappend(outcomes, o);
	}
	list_free(ready);
	ready = waiting;
	if (ready == NIL)
		MemoryContextReset(ready_cxt);
	return outcomes;
}

/* The earlier of due and the time the first re-queued outcome falls due. */
static TimestampTz
earliest_retry(List *outcomes, TimestampTz due)
{
	ListCell   *cell;
	TimestampTz now = GetCurrentTimestamp();

	foreach(cell, outcomes)
	{
		Outcome    *o = (Outcome *) lfirst(cell);

		if (strcmp(o->state, "queued") == 0)
		{
			TimestampTz at = TimestampTzPlusMilliseconds(now, Max(o->retry_in_ms, 0));

			if (due == 0 || at < due)
				due = at;
		}
	}
	return due;
}

/*
 * maestro.sync_interval: run maestro_sync() as the mirror's owner, with that
 * role's user mapping, in a subtransaction of its own so that a failed sync
 * (Maestro down, a 429) is logged and retried at the next interval, and
 * never disturbs the queue.
 */
static TimestampTz
periodic_sync(TimestampTz next_sync, MemoryContext keep)
{
	TimestampTz now = GetCurrentTimestamp();
	char	   *schema;

	if (maestro_sync_interval_ms <= 0)
		return 0;
	if (next_sync != 0 && now < next_sync)
		return next_sync;

	begin_work("maestro periodic sync");
	schema = maestro_extension_schema_name();
	if (schema != NULL)
	{
		MemoryContext oldcontext = CurrentMemoryContext;
		ResourceOwner oldowner = CurrentResourceOwner;
		Oid			save_userid;
		int			save_sec_context;
		Oid			owner;
		bool		isnull;

		SPI_execute(psprintf("SELECT relowner FROM pg_catalog.pg_class"
							 " WHERE oid = '%s.maestro_synced_instances'::pg_catalog.regclass",
							 schema), true, 1);
		owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

		GetUserIdAndSecContext(&save_userid, &save_sec_context);
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(oldcontext);
		PG_TRY();
		{
			SetUserIdAndSecContext(owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
			SPI_execute(psprintf("SELECT %s.maestro_sync()", schema), false, 0);
			SetUserIdAndSecContext(save_userid, save_sec_context);
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcontext);
			CurrentResourceOwner = oldowner;
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			SetUserIdAndSecContext(save_userid, save_sec_context);
			MemoryContextSwitchTo(keep);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcontext);
			CurrentResourceOwner = oldowner;
			ereport(WARNING,
					(errmsg("maestro periodic sync failed: %s", edata->message),
					 edata->detail ? errdetail("%s", edata->detail) : 0,
					 errhint("It is tried again in %d ms.", maestro_sync_interval_ms)));
		}
		PG_END_TRY();
	}
	end_work(keep);
	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), maestro_sync_interval_ms);
}

static void
drop_in_flight(void)
{
	while (in_flight)
		finish_send(in_flight);
}

static void
worker_loop(void)
{
	MemoryContext loop_cxt = AllocSetContextCreate(TopMemoryContext, "maestro worker loop",
												   ALLOCSET_DEFAULT_SIZES);
	bool		recover = true;
	bool		more = true;
	TimestampTz next_due = 0;
	TimestampTz next_slot = 0;
	TimestampTz idle_since = 0;
	TimestampTz next_sync = 0;
	bool		checked_before_exit = false;

	ready_cxt = AllocSetContextCreate(TopMemoryContext, "maestro ready requests",
									  ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		TimestampTz now;
		List	   *outcomes = NIL;
		long		wait_ms;

		MemoryContextSwitchTo(loop_cxt);
		MemoryContextReset(loop_cxt);

		if (got_sigterm)
			break;
		/* with transfers in flight no latch wait notices a dead postmaster */
		if (!PostmasterIsAlive())
			proc_exit(1);
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (maestro_queue_take_wake())
			more = true;
		next_sync = periodic_sync(next_sync, loop_cxt);
		now = GetCurrentTimestamp();
		if (next_due != 0 && now >= next_due)
			more = true;

		/*
		 * Keep up to a second round of requests claimed ahead, so that a
		 * finished transfer's slot is refilled at once, not after the next
		 * claiming transaction.
		 */
		if (more && list_length(ready) < maestro_max_concurrency)
		{
			bool		gone;
			List	   *claimed = claim(2 * maestro_max_concurrency - in_flight_count -
										list_length(ready),
										recover, &more, &next_due, &gone, ready_cxt);

			if (gone)
				break;
			recover = false;
			MemoryContextSwitchTo(ready_cxt);
			ready = list_concat(ready, claimed);
			MemoryContextSwitchTo(loop_cxt);
		}

		outcomes = dispatch(loop_cxt, &next_slot);
		if (in_flight_count > 0)
		{
			outcomes = list_concat(outcomes, collect());
			outcomes = list_concat(outcomes, dispatch(loop_cxt, &next_slot));
		}
		record(outcomes, loop_cxt);
		next_due = earliest_retry(outcomes, next_due);

		if (in_flight_count > 0 || outcomes != NIL)
		{
			idle_since = 0;
			checked_before_exit = false;
			if (in_flight_count > 0)
				curl_multi_poll(multi, NULL, 0, POLL_SLICE_MS, NULL);
			continue;
		}
		if (more && ready == NIL)
			continue;

		/*
		 * Nothing in flight: sleep until a commit, the next due retry or the
		 * end of a rate-limit pause. With none of those ahead, linger a
		 * little, then exit.
		 */
		now = GetCurrentTimestamp();
		if (next_due != 0 || next_slot != 0 || next_sync != 0)
		{
			TimestampTz until = 0;

			if (next_due != 0)
				until = next_due;
			if (next_slot != 0 && (until == 0 || next_slot < until))
				until = next_slot;
			/* with a sync interval the worker stays, sleeping until the next sync */
			if (next_sync != 0 && (until == 0 || next_sync < until))
				until = next_sync;
			idle_since = 0;
			wait_ms = TimestampDifferenceMilliseconds(now, until);
		}
		else
		{
			if (idle_since == 0)
				idle_since = now;
			if (!more && ready == NIL &&
				TimestampDifferenceExceeds(idle_since, now, IDLE_EXIT_MS))
			{
				/*
				 * Look at the queue once more before leaving: a request
				 * queued for a later retry must keep the worker alive.
				 */
				if (!checked_before_exit)
				{
					checked_before_exit = true;
					more = true;
					continue;
				}
				if (maestro_queue_release_worker_if_idle())
					break;
				more = true;	/* a commit came in just now */
				continue;
			}
			wait_ms = IDLE_EXIT_MS;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(wait_ms, 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	drop_in_flight();
	MemoryContextSwitchTo(TopMemoryContext);
}

void
maestro_worker_main(Datum arg)
{
	pqsignal(SIGTERM, worker_sigterm);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	if (!maestro_queue_claim_worker())
		proc_exit(0);
	before_shmem_exit(maestro_queue_release_worker, 0);

	BackgroundWorkerInitializeConnection(maestro_database_name, NULL, 0);
	pgstat_report_appname("maestro worker");
	/* the worker runs as a superuser: resolve nothing through user schemas */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	if (!maestro_worker_version_ok())
		proc_exit(0);

	multi = curl_multi_init();
	if (multi == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl multi handle")));

	worker_loop();
	curl_multi_cleanup(multi);
	proc_exit(0);
}

/*
 * Whether the database exists, read as the autovacuum launcher reads
 * pg_database: a heap scan, since a backend without a database cannot use
 * the catalog indexes.
 */
static bool
database_exists(const char *name)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;
	bool		found = false;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		if (strcmp(NameStr(((Form_pg_database) GETSTRUCT(tuple))->datname), name) == 0)
		{
			found = true;
			break;
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return found;
}

/*
 * Runs once when the server starts: if the served database exists, start
 * the worker, which sends whatever a crash or shutdown left queued.
 */
void
maestro_launcher_main(Datum arg)
{
	bool		exists;

	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	exists = database_exists(maestro_database_name);

	if (!exists)
	{
		ereport(LOG,
				(errmsg("maestro.database_name \"%s\" does not exist; no trigger queue is served",
						maestro_database_name)));
		proc_exit(0);
	}
	maestro_queue_wake();
	proc_exit(0);
}
