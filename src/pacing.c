/*-------------------------------------------------------------------------
 *
 * pacing.c
 *		When the worker may send to a server: per-server rate windows
 *		(maestro.rate_limit), pauses the API asked for (a 429; a spent
 *		hourly quota, by ratelimit.c's rule), retry backoff, and how many
 *		requests of a server may be claimed ahead of sending.
 *
 * The rule that turns a 429 into a pause is here (maestro_pacing_pause_ms);
 * the quota rule is ratelimit.c's, shared with every backend; and the one
 * question the worker asks of both is here: is this server paused, and
 * until when (maestro_pacing_paused_until).
 *
 * Claims are paced too, so that a server that may not be sent to costs no
 * transaction: a paused server, or a rate-limited one with half a window's
 * worth already claimed, is "closed" and left out of the claim in SQL; the
 * loop claims for it again when its pause ends or its claimed requests
 * have drained (maestro_pacing_wants_claim).
 *
 * src/pacing.c
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include <limits.h>
#include <math.h>

#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "utils/array.h"
#include "utils/memutils.h"

/* the rate limit's window: a second, plus slack for clock granularity */
#define RATE_WINDOW_MS		1010
/* a server-asked wait (Retry-After, X-RateLimit-Reset) is kept in 1 s..1 h */
#define MIN_PAUSE_MS		1000
#define MAX_PAUSE_MS		(3600 * 1000)

/* Pacing of one server: the times of its last rate_limit sends. */
typedef struct ServerPace
{
	Oid			server_id;
	TimestampTz *sent;
	int			capacity;
	int			head;
	int			count;
	TimestampTz paused_until;
	int			claimed;		/* claimed, not yet sent or settled */
	bool		held_back;		/* left out of a claim: claim again later */
	struct ServerPace *next;
} ServerPace;

static ServerPace *paces = NULL;
static int	pace_capacity = -1;

static ServerPace *
pace_for(Oid server_id)
{
	ServerPace *pace;

	if (pace_capacity != maestro_rate_limit)
	{
		/* the limit changed on reload: new windows, same pauses and claims */
		for (pace = paces; pace; pace = pace->next)
		{
			if (pace->sent)
				pfree(pace->sent);
			pace->sent = NULL;
			pace->capacity = maestro_rate_limit;
			pace->head = pace->count = 0;
			if (maestro_rate_limit > 0)
				pace->sent = MemoryContextAllocZero(TopMemoryContext,
													sizeof(TimestampTz) * maestro_rate_limit);
			pace->held_back = true; /* its claim budget changed */
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
 * Retry backoff of the worker: maestro.retry_delay doubled per attempt,
 * jittered between half and one and a half times, capped.
 */
long
maestro_retry_backoff_ms(int attempts)
{
	double		ms = (double) maestro_retry_delay_ms * pow(2.0, Max(attempts - 1, 0));

	ms *= 0.5 + pg_prng_double(&pg_global_prng_state);
	return (long) Min(ms, (double) MAX_RETRY_DELAY_MS);
}

/*
 * How long a server must be left alone after this answer; 0: not at all.
 *
 * A 429 always pauses: for its Retry-After, or, without one (DocuSign does
 * not document it on 429s, and libcurl reports an absent header as 0), for
 * the retry backoff and never less than a second; kept within 1 s .. 1 h,
 * so that a wrong number from the network can neither spin nor stall. (A
 * spent quota is ratelimit.c's rule, which keeps its reset within an hour.)
 */
long
maestro_pacing_pause_ms(long status, long retry_after_ms, int attempts)
{
	long		ms;

	if (status != 429)
		return 0;
	ms = retry_after_ms > 0 ? retry_after_ms : maestro_retry_backoff_ms(attempts);
	return Min(Max(ms, MIN_PAUSE_MS), MAX_PAUSE_MS);
}

/* The end of the server's pause (a 429's, or its spent quota's); may be past. */
static TimestampTz
pace_paused_until(ServerPace *pace)
{
	TimestampTz quota_until = 0;

	if (maestro_ratelimit_wait_ms(pace->server_id, &quota_until) > 0)
		return Max(pace->paused_until, quota_until);
	return pace->paused_until;
}

void
maestro_pacing_pause(Oid server_id, long ms)
{
	ServerPace *pace = pace_for(server_id);
	TimestampTz until;

	if (ms <= 0)
		return;
	until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), Min(ms, MAX_PAUSE_MS));
	pace->paused_until = Max(pace->paused_until, until);
	pace->held_back = true;
}

/* Whether the server is paused at now, and until when; 0 if not paused. */
TimestampTz
maestro_pacing_paused_until(Oid server_id, TimestampTz now)
{
	TimestampTz until = pace_paused_until(pace_for(server_id));

	return until > now ? until : 0;
}

/*
 * When the server may get its next request: now, or later when the rate
 * limit's window or a pause says so.
 */
TimestampTz
maestro_pacing_next_slot(Oid server_id, TimestampTz now)
{
	ServerPace *pace = pace_for(server_id);
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
	return Max(slot, pace_paused_until(pace));
}

/* A request (a POST or a look-up) leaves for the server now. */
void
maestro_pacing_record_send(Oid server_id, TimestampTz now)
{
	ServerPace *pace = pace_for(server_id);

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

/* Claimed requests of a server: +1 when claimed, -1 when sent or settled. */
void
maestro_pacing_note_claimed(Oid server_id, int delta)
{
	ServerPace *pace = pace_for(server_id);

	pace->claimed = Max(pace->claimed + delta, 0);
}

/* The most of a server's requests claimed ahead of their sends. */
static int
claim_budget(ServerPace *pace)
{
	return pace->capacity > 0 ? pace->capacity : INT_MAX;
}

static bool
pace_closed(ServerPace *pace, TimestampTz now)
{
	if (pace_paused_until(pace) > now)
		return true;
	/* half a window claimed ahead is plenty: claim again when it drained */
	return pace->capacity > 0 && pace->claimed > pace->capacity / 2;
}

/*
 * Whether one more request of the server may be claimed now; if not, the
 * server is held back and claimed for again when it reopens.
 */
bool
maestro_pacing_may_claim(Oid server_id, TimestampTz now)
{
	ServerPace *pace = pace_for(server_id);

	if (pace_paused_until(pace) > now || pace->claimed >= claim_budget(pace))
	{
		pace->held_back = true;
		return false;
	}
	return true;
}

/*
 * The servers a claim leaves out in SQL (an oid[] Datum), each then held
 * back.
 */
Datum
maestro_pacing_closed_servers(TimestampTz now)
{
	ServerPace *pace;
	Datum	   *oids;
	int			n = 0;
	int			total = 0;

	for (pace = paces; pace; pace = pace->next)
		total++;
	oids = palloc(sizeof(Datum) * Max(total, 1));
	for (pace = paces; pace; pace = pace->next)
	{
		if (pace_closed(pace, now))
		{
			pace->held_back = true;
			oids[n++] = ObjectIdGetDatum(pace->server_id);
		}
	}
	return PointerGetDatum(construct_array(oids, n, OIDOID, sizeof(Oid), true, TYPALIGN_INT));
}

/*
 * Whether a held-back server has reopened (its pause ended, its claimed
 * requests drained), so that a claim is due; *reopen is set to the
 * earliest end of a pause still ahead, 0 if none.
 */
bool
maestro_pacing_wants_claim(TimestampTz now, TimestampTz *reopen)
{
	ServerPace *pace;
	bool		wants = false;

	*reopen = 0;
	for (pace = paces; pace; pace = pace->next)
	{
		if (!pace->held_back)
			continue;
		if (!pace_closed(pace, now))
		{
			pace->held_back = false;
			wants = true;
		}
		else
		{
			TimestampTz until = pace_paused_until(pace);

			if (until > now && (*reopen == 0 || until < *reopen))
				*reopen = until;
		}
	}
	return wants;
}

/* Everything claimed was dropped (after an error): no claims are counted. */
void
maestro_pacing_forget_claims(void)
{
	ServerPace *pace;

	for (pace = paces; pace; pace = pace->next)
	{
		pace->claimed = 0;
		pace->held_back = true;
	}
}
