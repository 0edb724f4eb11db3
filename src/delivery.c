/*-------------------------------------------------------------------------
 *
 * delivery.c
 *		The delivery policy of the trigger queue: when a claimed request is
 *		sent, when it must first be looked up by name, and what an answer
 *		makes of it (done, retried, failed).
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
 * One list call settles every such request of a workflow: requests to be
 * verified gather in a group per (server, workflow), and the group's one
 * GET answers for all of them. A request that joins while its workflow's
 * GET is in flight waits for the next one, whose answer is sure to be
 * later than its own uncertain send, unless that send was a previous
 * worker's (after a crash): any GET of this worker is later than it.
 *
 * Every call here is asynchronous (transfer.c), getting a token included.
 * A minted token is cached (auth.c) and fetched when it expires: one fetch
 * per token (user mapping and the options that shape it), however many
 * requests need it. They wait meanwhile where they are, in the ready list
 * or their look-up group, and start when it is there; requests for other
 * servers and tokens go on. When another process is fetching the token,
 * the worker does not sleep on the cache's condition variable: it looks
 * again every TOKEN_RECHECK_MS, a wake-up of its one wait. A refused grant,
 * a server error or a transport error of the fetch is recorded on each
 * request that waited for it, in the words the synchronous path uses.
 *
 * src/delivery.c
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "lib/ilist.h"
#include "utils/memutils.h"

/* Requests of one (server, workflow) waiting for one instances list. */
typedef struct LookupGroup
{
	MemoryContext cxt;
	Oid			server_id;
	char	   *workflow_id;
	MaestroConnection *conn;	/* of its first request */
	Delivery   *members;
	int			n_members;
	bool		in_flight;		/* its GET is under way */
	dlist_node	node;			/* in groups */
} LookupGroup;

/*
 * The tagged names ("... [mq <id>-<tag>]") a workflow's last instances
 * list showed, kept a while: after a crash, the requests a previous worker
 * may have sent take several claims, and every GET of this worker is later
 * than their sends, so one list answers for all of them.
 */
typedef struct KnownNames
{
	MemoryContext cxt;
	Oid			server_id;
	char	   *workflow_id;
	char	  **names;			/* sorted */
	char	  **ids;			/* the instance id of each name */
	int			n;
	TimestampTz listed_at;
	dlist_node	node;			/* in known */
} KnownNames;

/*
 * A claimed request whose server is paused for longer than this goes back
 * to the queue until the pause ends, rather than stay 'sending' unsent.
 */
#define UNCLAIM_PAUSE_MS	2000

/* how long a list answers for a previous worker's requests */
#define KNOWN_NAMES_TTL_MS	(5 * 60 * 1000)

/* how often to look at a token another process is fetching */
#define TOKEN_RECHECK_MS	25

/* how long a failed fetch of the worker holds its token back */
#define FAILED_TOKEN_BACKOFF_MS	1000

/*
 * A token the worker's requests wait for: the worker's own fetch (in
 * flight), or another process's (looked at again at recheck_at). A fetch
 * of the worker that failed fails the requests waiting for it at once, and
 * then holds the token back until recheck_at, FAILED_TOKEN_BACKOFF_MS
 * later: requests that need the token meanwhile wait for the next fetch,
 * so that a stream of requests meeting a refused grant costs the account
 * server a token request a second rather than one each (and no attempt of
 * theirs is spent without a fetch), and the periodic sync is told of the
 * failure instead of asking again at once, and again, without end.
 */
typedef struct TokenFetch
{
	MemoryContext cxt;
	MaestroConnection *conn;	/* a copy: the token's key */
	MaestroTokenClaim claim;	/* ours, while in flight */
	bool		in_flight;
	TimestampTz recheck_at;
	char	   *failed;			/* the error of our fetch that failed */
	dlist_node	node;			/* in fetches */
} TokenFetch;

/* claimed requests waiting for a free slot, in claim order */
static Delivery *ready_head = NULL;
static Delivery *ready_tail = NULL;
static int	ready_count = 0;
static dlist_head groups = DLIST_STATIC_INIT(groups);
static int	lookup_members = 0;
static dlist_head known = DLIST_STATIC_INIT(known);
static dlist_head fetches = DLIST_STATIC_INIT(fetches);

static void
known_forget(KnownNames *k)
{
	dlist_delete(&k->node);
	MemoryContextDelete(k->cxt);
}

static KnownNames *
known_for(Oid server_id, const char *workflow_id)
{
	dlist_iter	iter;
	TimestampTz now = GetCurrentTimestamp();

	dlist_foreach(iter, &known)
	{
		KnownNames *k = dlist_container(KnownNames, node, iter.cur);

		if (k->server_id == server_id && strcmp(k->workflow_id, workflow_id) == 0)
		{
			if (TimestampDifferenceExceeds(k->listed_at, now, KNOWN_NAMES_TTL_MS))
			{
				known_forget(k);
				return NULL;
			}
			return k;
		}
	}
	return NULL;
}

static int
compare_strings(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Keep the tagged names of a list that left at listed_at. */
static void
known_remember(Oid server_id, const char *workflow_id, const cJSON *list,
			   TimestampTz listed_at)
{
	KnownNames *k = known_for(server_id, workflow_id);
	MemoryContext cxt;
	MemoryContext old;
	const cJSON *inst;
	int			cap = cJSON_GetArraySize(list);
	char	  **names;
	char	  **ids;
	int			i;

	if (k)
		known_forget(k);
	cxt = AllocSetContextCreate(TopMemoryContext, "maestro known names", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	k = palloc0(sizeof(KnownNames));
	k->cxt = cxt;
	k->server_id = server_id;
	k->workflow_id = pstrdup(workflow_id);
	k->listed_at = listed_at;
	names = palloc(sizeof(char *) * Max(cap, 1));
	ids = palloc(sizeof(char *) * Max(cap, 1));
	cJSON_ArrayForEach(inst, list)
	{
		const cJSON *name = maestro_json_member(inst, "name");
		const cJSON *id = maestro_json_member(inst, "id");

		if (cJSON_IsString(name) && strstr(name->valuestring, " [mq ") != NULL &&
			cJSON_IsString(id) && maestro_is_uuid(id->valuestring))
		{
			/* the id follows its name, so that sorting keeps the pairs */
			names[k->n] = psprintf("%s%c%s",
								   maestro_utf8_to_server(name->valuestring,
														  strlen(name->valuestring), false),
								   '\0', id->valuestring);
			k->n++;
		}
	}
	qsort(names, k->n, sizeof(char *), compare_strings);
	for (i = 0; i < k->n; i++)
		ids[i] = names[i] + strlen(names[i]) + 1;
	k->names = names;
	k->ids = ids;
	MemoryContextSwitchTo(old);
	dlist_push_head(&known, &k->node);
}

/*
 * A request a previous worker may have sent, settled by a list this worker
 * already has: found, its outcome is appended and true returned; not
 * found, it is to be sent (verify cleared) and false returned; false too
 * when no list answers for it.
 */
static bool
settled_by_known_names(Delivery *d, List **outcomes)
{
	KnownNames *k;
	char	  **hit;
	char	   *key = d->instance_name;

	if (!d->sent_before_start || (k = known_for(d->server_id, d->workflow_id)) == NULL)
		return false;
	hit = bsearch(&key, k->names, k->n, sizeof(char *), compare_strings);
	if (hit == NULL)
	{
		d->verify = false;
		return false;
	}
	{
		Outcome    *o = maestro_new_outcome(d->id, "done");

		o->instance_id = pstrdup(k->ids[hit - k->names]);
		o->error = pstrdup("found by its name after an uncertain send; Maestro gives the instance_url only at trigger time");
		*outcomes = lappend(*outcomes, o);
	}
	return true;
}

static void
delivery_free(Delivery *d)
{
	/* a request looked up after its send no longer counted as claimed */
	if (!d->id_only)
		maestro_pacing_note_claimed(d->server_id, -1);
	MemoryContextDelete(d->cxt);
}

static void
ready_push(Delivery *d, bool front)
{
	d->next = NULL;
	if (front)
	{
		d->next = ready_head;
		ready_head = d;
		if (ready_tail == NULL)
			ready_tail = d;
	}
	else
	{
		if (ready_tail)
			ready_tail->next = d;
		else
			ready_head = d;
		ready_tail = d;
	}
	ready_count++;
}

/* A newly claimed request; it is sent (or looked up) when its turn comes. */
void
maestro_delivery_add(Delivery *d)
{
	maestro_pacing_note_claimed(d->server_id, +1);
	ready_push(d, false);
}

/* Claimed requests not yet sent: waiting for a slot or for a look-up. */
int
maestro_delivery_pending(void)
{
	return ready_count + lookup_members;
}

Outcome *
maestro_new_outcome(int64 id, const char *state)
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
Outcome *
maestro_retry_or_fail(int64 id, int attempts, int http_status, char *error,
					  bool uncertain, long retry_after_ms)
{
	Outcome    *o;

	if (attempts >= maestro_max_attempts)
	{
		o = maestro_new_outcome(id, "failed");
		o->error = psprintf("%s (after %d attempts)", error, attempts);
	}
	else
	{
		o = maestro_new_outcome(id, "queued");
		o->error = error;
		o->retry_in_ms = Max(retry_after_ms, maestro_retry_backoff_ms(attempts));
	}
	o->http_status = http_status;
	o->verify = uncertain;
	return o;
}

/* ---- tokens ---- */

static TokenFetch *
fetch_for(const MaestroConnection *conn)
{
	dlist_iter	iter;

	dlist_foreach(iter, &fetches)
	{
		TokenFetch *f = dlist_container(TokenFetch, node, iter.cur);

		if (maestro_auth_same_token(f->conn, conn))
			return f;
	}
	return NULL;
}

static TokenFetch *
fetch_new(const MaestroConnection *conn)
{
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "maestro token fetch",
											  ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	TokenFetch *f = palloc0(sizeof(TokenFetch));

	f->cxt = cxt;
	f->conn = maestro_connection_copy(conn);
	MemoryContextSwitchTo(old);
	dlist_push_head(&fetches, &f->node);
	return f;
}

/* The fetch is over; its transfer (if any) must be freed already. */
static void
fetch_forget(TokenFetch *f)
{
	dlist_delete(&f->node);
	MemoryContextDelete(f->cxt);
}

/*
 * Sign the assertion and start the token request of a fetch this worker
 * has claimed. Raises what the synchronous path would (an unusable key).
 */
static bool
fetch_start(TokenFetch *f)
{
	MemoryContext old = MemoryContextSwitchTo(f->cxt);
	MaestroRequest req;
	MaestroConnection *account = maestro_auth_token_request(f->conn, &req);

	MemoryContextSwitchTo(old);
	return maestro_transfer_start(TRANSFER_TOKEN, f, account, &req, f->cxt) != NULL;
}

/*
 * Can a request with this connection start: its token is there (set in
 * conn, READY), or it waits for it (PARKED: a fetch is under way, maybe
 * started here, or a failed one holds the token back; the time to look
 * again, if any, goes into *wake), or it failed (FAILED: *problem says
 * why, in the synchronous path's words).
 */
static TokenGate
token_gate(MaestroConnection *conn, TimestampTz now, MemoryContext keep,
		   char **problem, TimestampTz *wake)
{
	TokenFetch *volatile f;
	volatile MaestroTokenState state = MAESTRO_TOKEN_WAIT;
	MaestroTokenClaim claim;
	TimestampTz wait_until = 0;

	*problem = NULL;
	if (!conn->jwt)
		return TOKEN_READY;
	f = fetch_for(conn);
	if (f && f->failed)
	{
		if (now < f->recheck_at)
		{
			if (*wake == 0 || f->recheck_at < *wake)
				*wake = f->recheck_at;
			return TOKEN_PARKED;
		}
		fetch_forget(f);
		f = NULL;
	}
	if (f && f->in_flight)
		return TOKEN_PARKED;	/* its end wakes the worker */
	if (f && now < f->recheck_at)
	{
		if (*wake == 0 || f->recheck_at < *wake)
			*wake = f->recheck_at;
		return TOKEN_PARKED;
	}

	memset(&claim, 0, sizeof(claim));
	PG_TRY();
	{
		state = maestro_auth_lookup(conn, &claim, &wait_until);
		if (state != MAESTRO_TOKEN_READY && f == NULL)
			f = fetch_new(conn);
		if (state == MAESTRO_TOKEN_FETCH)
		{
			f->claim = claim;
			if (!fetch_start(f))
				*problem = pstrdup("could not get an access token: out of memory while preparing the request");
		}
	}
	PG_CATCH();
	{
		*problem = psprintf("could not get an access token: %s",
							maestro_worker_caught_error(keep));
	}
	PG_END_TRY();

	if (*problem)
	{
		maestro_auth_release(&claim);
		if (f)
			fetch_forget(f);
		return TOKEN_FAILED;
	}
	if (state == MAESTRO_TOKEN_READY)
	{
		if (f)
			fetch_forget(f);
		return TOKEN_READY;
	}
	if (state == MAESTRO_TOKEN_FETCH)
	{
		f->in_flight = true;
		f->recheck_at = 0;
		return TOKEN_PARKED;
	}
	/* another process fetches it: soon, or when that fetch may be taken over */
	f->recheck_at = Min(TimestampTzPlusMilliseconds(now, TOKEN_RECHECK_MS), wait_until);
	if (*wake == 0 || f->recheck_at < *wake)
		*wake = f->recheck_at;
	return TOKEN_PARKED;
}

/*
 * The token gate for the worker's other calls (its periodic sync): READY,
 * conn->access_token is set; PARKED, a fetch is under way (the worker's
 * own, whose end wakes the loop, or another process's: look again at
 * *wake, when set); FAILED, *problem (palloc'd) says why, as the requests
 * record it ("could not get an access token: " and the error's message
 * and hint). A failed fetch, the caller's or another's, is reported for as
 * long as it holds the token back; the sync's next run asks anew.
 */
TokenGate
maestro_delivery_token(MaestroConnection *conn, TimestampTz now, char **problem,
					   TimestampTz *wake)
{
	TokenFetch *f = conn->jwt ? fetch_for(conn) : NULL;

	/* what holds the sends back is, for the sync, a failed run */
	if (f && f->failed && now < f->recheck_at)
	{
		*problem = pstrdup(f->failed);
		return TOKEN_FAILED;
	}
	return token_gate(conn, now, CurrentMemoryContext, problem, wake);
}

/* ---- sending ---- */

/* Start a request's POST; its token is there. */
static Outcome *
start_send(Delivery *d, TimestampTz now)
{
	MemoryContext old;
	MaestroRequest req;

	old = MemoryContextSwitchTo(d->cxt);
	maestro_trigger_request(d->conn, d->workflow_id, d->instance_name, d->inputs, &req);
	MemoryContextSwitchTo(old);
	if (maestro_transfer_start(TRANSFER_SEND, d, d->conn, &req, d->cxt) == NULL)
		return maestro_retry_or_fail(d->id, d->attempts, 0,
									 pstrdup("out of memory while preparing the request"),
									 d->verify, -1);
	maestro_pacing_record_send(d->server_id, now);
	maestro_stats_worker(1, 0, 0, 0, -1);
	return NULL;
}

/*
 * What an answer to a trigger POST makes of its request; NULL when Maestro
 * accepted it without naming the instance it started (the spec requires
 * no field): the request is then done, never sent again, and its id is
 * looked up by its name first (d->id_only).
 */
static Outcome *
outcome_of_send(Transfer *t, Delivery *d, long pause_ms)
{
	MaestroFailure failure = maestro_http_classify(t->result, t->status);
	long		retry_after_ms = -1;
	char	   *message;

	if (t->result != CURLE_OK)
		message = psprintf("transport error: %s",
						   maestro_redact(t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->result)));
	else if (failure == MAESTRO_SUCCESS)
	{
		MaestroMemberText answer[MAESTRO_ANSWER_KEYS];
		const MaestroMemberText *id = &answer[MAESTRO_ANSWER_ID];
		const MaestroMemberText *url = &answer[MAESTRO_ANSWER_URL];
		Outcome    *o;

		(void) maestro_json_read_members(t->buf.data, t->buf.len, NULL,
										 maestro_trigger_answer_keys, MAESTRO_ANSWER_KEYS, answer);
		if (!id->is_string || !maestro_is_uuid(id->text))
		{
			d->id_only = true;
			d->verify = false;
			d->sent_before_start = false;	/* only a later list can show it */
			d->http_status = (int) t->status;
			d->sent_at = t->started_at;
			if (url->is_string)
				d->instance_url = MemoryContextStrdup(d->cxt, url->text);
			return NULL;
		}
		o = maestro_new_outcome(d->id, "done");
		o->http_status = (int) t->status;
		o->instance_id = id->text;
		if (url->is_string)
			o->instance_url = url->text;
		return o;
	}
	else
	{
		message = psprintf("HTTP %ld: %s", t->status,
						   maestro_error_message_from_body(t->buf.data, t->buf.len, NULL));
		if (t->buf.rate.retry_after)
			retry_after_ms = maestro_http_retry_after_ms(t->easy);
	}

	switch (failure)
	{
		case MAESTRO_SUCCESS:
			break;
		case MAESTRO_FAIL_AUTH:
			if (d->conn->jwt)
			{
				/* a minted token was refused: the request had no effect */
				maestro_auth_forget(d->conn);
				return maestro_retry_or_fail(d->id, d->attempts, (int) t->status, message,
											 false, 0);
			}
			break;
		case MAESTRO_FAIL_RATE_LIMITED:
			/* the server paused (maestro_delivery_finished); wait for it */
			return maestro_retry_or_fail(d->id, d->attempts, (int) t->status, message, false,
										 pause_ms);
		case MAESTRO_FAIL_NOT_SENT:
			return maestro_retry_or_fail(d->id, d->attempts, (int) t->status, message, false, -1);
		case MAESTRO_FAIL_TRANSIENT:
		case MAESTRO_FAIL_SERVER:
		case MAESTRO_FAIL_BROKEN:
			/* Maestro may have acted on it: look it up before sending again */
			return maestro_retry_or_fail(d->id, d->attempts, (int) t->status, message, true,
										 retry_after_ms);
		case MAESTRO_FAIL_FINAL:
			break;
	}

	/* any other answer is final: the request as it stands will not succeed */
	{
		Outcome    *o = maestro_new_outcome(d->id, "failed");

		o->http_status = (int) t->status;
		o->error = message;
		return o;
	}
}

/* ---- looking up ---- */

static LookupGroup *
group_for(Delivery *d)
{
	LookupGroup *g;
	MemoryContext cxt;
	dlist_iter	iter;

	/*
	 * Every GET of this worker left after any send of a previous one, so a
	 * request whose uncertain send was a previous worker's may join a GET
	 * already in flight (this is what makes the look-ups after a crash one
	 * per workflow); any other waits for the next GET.
	 */
	dlist_foreach(iter, &groups)
	{
		g = dlist_container(LookupGroup, node, iter.cur);
		if ((!g->in_flight || d->sent_before_start) && g->server_id == d->server_id &&
			strcmp(g->workflow_id, d->workflow_id) == 0)
			return g;
	}

	cxt = AllocSetContextCreate(TopMemoryContext, "maestro look-up", ALLOCSET_SMALL_SIZES);
	g = MemoryContextAllocZero(cxt, sizeof(LookupGroup));
	g->cxt = cxt;
	g->server_id = d->server_id;
	g->workflow_id = MemoryContextStrdup(cxt, d->workflow_id);
	g->conn = d->conn;
	dlist_push_head(&groups, &g->node);
	return g;
}

/* The group's members have all been settled or sent on. */
static void
group_free(LookupGroup *g)
{
	dlist_delete(&g->node);
	MemoryContextDelete(g->cxt);
}

static void
join_group(Delivery *d)
{
	LookupGroup *g = group_for(d);

	/* the group's conn is its first member's: keep that one alive first */
	d->next = NULL;
	if (g->members == NULL)
		g->conn = d->conn;
	d->next = g->members;
	g->members = d;
	g->n_members++;
	lookup_members++;
}

/* The outcome of a request accepted without an id, looked up by name. */
static Outcome *
id_only_outcome(Delivery *d, const char *instance_id, char *note)
{
	Outcome    *o = maestro_new_outcome(d->id, "done");

	o->http_status = d->http_status;
	o->sent_at = d->sent_at;
	o->instance_id = instance_id ? pstrdup(instance_id) : NULL;
	o->instance_url = d->instance_url ? pstrdup(d->instance_url) : NULL;
	o->error = note;
	return o;
}

/* Every member of g gets a retry outcome (the look-up failed). */
static List *
group_retry_all(LookupGroup *g, const char *why, List *outcomes)
{
	Delivery   *d = g->members;

	while (d)
	{
		Delivery   *next = d->next;

		if (d->id_only)
			outcomes = lappend(outcomes,
							   id_only_outcome(d, NULL,
											   psprintf("Maestro accepted the trigger but its answer named no instance_id; looking the instance up by its name failed: %s", why)));
		else
			outcomes = lappend(outcomes,
							   maestro_retry_or_fail(d->id, d->attempts, 0,
													 psprintf("could not look up whether an earlier send arrived: %s", why),
													 true, -1));
		lookup_members--;
		delivery_free(d);
		d = next;
	}
	g->members = NULL;
	g->n_members = 0;
	return outcomes;
}

static int
compare_names(const void *a, const void *b)
{
	return strcmp((*(Delivery *const *) a)->instance_name,
				  (*(Delivery *const *) b)->instance_name);
}

/*
 * The instances list came: a member found by its name is done; the rest
 * were never started and go back to the front of the ready list, to be
 * sent now.
 */
static List *
lookup_finished(Transfer *t, LookupGroup *g, List *outcomes)
{
	MaestroFailure failure = maestro_http_classify(t->result, t->status);
	cJSON	   *root;
	const cJSON *list;
	const cJSON *inst;
	Delivery  **sorted;
	bool	   *found;
	Delivery   *d;
	int			i = 0;

	if (failure != MAESTRO_SUCCESS)
	{
		char	   *why;

		if (t->result != CURLE_OK)
			why = psprintf("transport error: %s",
						   maestro_redact(t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->result)));
		else
			why = psprintf("HTTP %ld: %s", t->status,
						   maestro_error_message_from_body(t->buf.data, t->buf.len, NULL));
		if (failure == MAESTRO_FAIL_AUTH && g->conn->jwt)
			maestro_auth_forget(g->conn);
		return group_retry_all(g, why, outcomes);
	}

	root = maestro_json_try_parse(t->buf.data, t->buf.len);
	list = maestro_json_list(root, "instances");
	if (root == NULL || list == NULL)
		return group_retry_all(g, "the instances list could not be read", outcomes);

	sorted = palloc(sizeof(Delivery *) * g->n_members);
	for (d = g->members; d; d = d->next)
		sorted[i++] = d;
	qsort(sorted, g->n_members, sizeof(Delivery *), compare_names);
	found = palloc0(sizeof(bool) * g->n_members);

	known_remember(g->server_id, g->workflow_id, list, t->started_at);
	cJSON_ArrayForEach(inst, list)
	{
		const cJSON *name = maestro_json_member(inst, "name");
		const cJSON *id = maestro_json_member(inst, "id");
		Delivery	key;
		Delivery   *keyp = &key;
		Delivery  **hit;

		if (!cJSON_IsString(name) || !cJSON_IsString(id) || !maestro_is_uuid(id->valuestring))
			continue;
		/* the names in the table are in the database's encoding */
		key.instance_name = maestro_utf8_to_server(name->valuestring,
												   strlen(name->valuestring), false);
		hit = bsearch(&keyp, sorted, g->n_members, sizeof(Delivery *), compare_names);
		if (hit && !found[hit - sorted] && (*hit)->id_only)
		{
			outcomes = lappend(outcomes,
							   id_only_outcome(*hit, id->valuestring,
											   pstrdup("Maestro's answer named no instance_id; the instance was found by its name (Maestro gives the instance_url only in that answer)")));
			found[hit - sorted] = true;
		}
		else if (hit && !found[hit - sorted])
		{
			Outcome    *o = maestro_new_outcome((*hit)->id, "done");

			o->instance_id = pstrdup(id->valuestring);
			o->error = pstrdup("found by its name after an uncertain send; Maestro gives the instance_url only at trigger time");
			outcomes = lappend(outcomes, o);
			found[hit - sorted] = true;
		}
	}

	/* the rest are sent now, first in line; those found are done */
	for (i = g->n_members - 1; i >= 0; i--)
	{
		d = sorted[i];
		lookup_members--;
		if (found[i])
			delivery_free(d);
		else if (d->id_only)
		{
			/* accepted, so never sent again: done without its id */
			outcomes = lappend(outcomes,
							   id_only_outcome(d, NULL,
											   pstrdup("Maestro accepted the trigger but its answer named no instance_id, and no instance of that name was listed yet")));
			delivery_free(d);
		}
		else
		{
			d->verify = false;
			ready_push(d, true);
		}
	}
	g->members = NULL;
	g->n_members = 0;
	return outcomes;
}

/* ---- dispatching ---- */

/*
 * Start what may start now: sends and look-ups, in claim order, while
 * slots are free and each server's pacing allows, and the token fetches
 * they need. Sets *next_slot to when a waiting server may be sent to again,
 * or a token another process fetches is looked at again (0: none waits).
 * Returns the outcomes settled without a transfer.
 */
List *
maestro_delivery_dispatch(TimestampTz now, TimestampTz *next_slot)
{
	List	   *outcomes = NIL;
	MemoryContext keep = CurrentMemoryContext;
	Delivery   *d = ready_head;
	Delivery   *kept_head = NULL;
	Delivery   *kept_tail = NULL;
	int			kept = 0;
	dlist_mutable_iter miter;

	*next_slot = 0;
	ready_head = ready_tail = NULL;
	ready_count = 0;

	/*
	 * A token another process fetches whose time to look again has come
	 * is looked at by the next request that needs it, as if never seen:
	 * forgotten here, it cannot outlive the requests that waited for it. A
	 * failed fetch of ours has failed its requests already: once its
	 * back-off is over, the next that needs the token asks anew.
	 */
	dlist_foreach_modify(miter, &fetches)
	{
		TokenFetch *f = dlist_container(TokenFetch, node, miter.cur);

		if (!f->in_flight && f->recheck_at <= now)
			fetch_forget(f);
	}

	/* requests to verify join their workflow's look-up, whatever the slots */
	while (d)
	{
		Delivery   *next = d->next;
		TimestampTz slot = 0;

		d->next = NULL;
		if (d->problem)
		{
			Outcome    *o = maestro_new_outcome(d->id, "failed");

			o->error = pstrdup(d->problem);
			o->verify = d->verify;
			outcomes = lappend(outcomes, o);
			delivery_free(d);
		}
		else if (d->verify && settled_by_known_names(d, &outcomes))
			delivery_free(d);
		else if (d->verify)
			join_group(d);
		else if (!maestro_worker_stopping &&
				 maestro_pacing_paused_until(d->server_id, now) >
				 TimestampTzPlusMilliseconds(now, UNCLAIM_PAUSE_MS))
		{
			Outcome    *o = maestro_new_outcome(d->id, "queued");

			o->unclaim = true;
			o->verify = d->verify;
			o->retry_in_ms = TimestampDifferenceMilliseconds(now,
															 maestro_pacing_paused_until(d->server_id, now));
			outcomes = lappend(outcomes, o);
			delivery_free(d);
		}
		else if (maestro_worker_stopping ||
				 maestro_transfer_count() >= maestro_max_concurrency ||
				 (slot = maestro_pacing_next_slot(d->server_id, now)) > now)
		{
			if (!maestro_worker_stopping && maestro_transfer_count() < maestro_max_concurrency &&
				(*next_slot == 0 || slot < *next_slot))
				*next_slot = slot;
			if (kept_tail)
				kept_tail->next = d;
			else
				kept_head = d;
			kept_tail = d;
			kept++;
		}
		else
		{
			char	   *problem;
			TokenGate	gate = token_gate(d->conn, now, keep, &problem, next_slot);
			Outcome    *o = NULL;

			if (gate == TOKEN_PARKED)
			{
				/* it waits for its token where it is, in claim order */
				if (kept_tail)
					kept_tail->next = d;
				else
					kept_head = d;
				kept_tail = d;
				kept++;
				d = next;
				continue;
			}
			if (gate == TOKEN_FAILED)
				o = maestro_retry_or_fail(d->id, d->attempts, 0, problem, d->verify, -1);
			else
				o = start_send(d, now);
			if (o)
			{
				outcomes = lappend(outcomes, o);
				delivery_free(d);
			}
			else
				maestro_pacing_note_claimed(d->server_id, -1);
		}
		d = next;
	}

	/* whatever arrived while we went through the list stays after it */
	if (kept_head)
	{
		kept_tail->next = ready_head;
		if (ready_tail == NULL)
			ready_tail = kept_tail;
		ready_head = kept_head;
		ready_count += kept;
	}

	/* one GET per workflow, when a slot and the server's pacing allow */
	dlist_foreach_modify(miter, &groups)
	{
		LookupGroup *g = dlist_container(LookupGroup, node, miter.cur);
		TimestampTz slot;
		char	   *problem;
		MaestroRequest req;
		MemoryContext old;

		if (maestro_worker_stopping ||
			maestro_transfer_count() >= maestro_max_concurrency)
			break;
		if (!g->in_flight)
		{
			TokenGate	gate = TOKEN_READY;

			slot = maestro_pacing_next_slot(g->server_id, now);
			if (slot > now)
			{
				if (*next_slot == 0 || slot < *next_slot)
					*next_slot = slot;
			}
			else if ((gate = token_gate(g->conn, now, keep, &problem, next_slot)) == TOKEN_FAILED)
			{
				outcomes = group_retry_all(g, problem, outcomes);
				group_free(g);
			}
			else if (gate == TOKEN_READY)	/* (else it waits for its token) */
			{
				old = MemoryContextSwitchTo(g->cxt);
				maestro_instances_request(g->conn, g->workflow_id, &req);
				MemoryContextSwitchTo(old);
				/* out of memory: tried again next round */
				if (maestro_transfer_start(TRANSFER_LOOKUP, g, g->conn, &req, g->cxt) != NULL)
				{
					g->in_flight = true;
					maestro_pacing_record_send(g->server_id, now);
				}
			}
		}
	}
	return outcomes;
}

/*
 * A token fetch failed: every request waiting for that token (in the ready
 * list, or in a look-up group not yet under way) is retried, or failed
 * once its attempts are used up, with the fetch's error, as when each
 * fetched it for itself.
 */
static List *
fail_parked(const MaestroConnection *conn, char *problem, List *outcomes)
{
	Delivery   *d = ready_head;
	dlist_mutable_iter miter;

	ready_head = ready_tail = NULL;
	ready_count = 0;
	while (d)
	{
		Delivery   *next = d->next;

		if (d->conn && maestro_auth_same_token(d->conn, conn))
		{
			outcomes = lappend(outcomes,
							   maestro_retry_or_fail(d->id, d->attempts, 0, problem,
													 d->verify, -1));
			delivery_free(d);
		}
		else
			ready_push(d, false);
		d = next;
	}

	dlist_foreach_modify(miter, &groups)
	{
		LookupGroup *g = dlist_container(LookupGroup, node, miter.cur);

		if (!g->in_flight && g->conn && maestro_auth_same_token(g->conn, conn))
		{
			outcomes = group_retry_all(g, problem, outcomes);
			group_free(g);
		}
	}
	return outcomes;
}

/* Store the token the answer holds: NULL; else the error, in keep. */
static char *
token_answer(Transfer *t, TokenFetch *f, MemoryContext keep)
{
	char	   *volatile problem = NULL;

	PG_TRY();
	{
		MaestroResponse resp;

		maestro_transfer_response(t, &resp);
		maestro_auth_token_received(f->conn, &f->claim, t->conn, &t->req, &resp);
	}
	PG_CATCH();
	{
		problem = psprintf("could not get an access token: %s",
						   maestro_worker_caught_error(keep));
	}
	PG_END_TRY();
	return problem;
}

/*
 * The worker's token request ended: the token is stored for every process
 * (its waiting requests start at the next dispatch), or the requests that
 * wait for it get the error. Either way the claim ends, and the processes
 * waiting for it are woken.
 */
static List *
token_finished(Transfer *t, TokenFetch *f, List *outcomes)
{
	char	   *problem = token_answer(t, f, CurrentMemoryContext);

	maestro_auth_release(&f->claim);	/* nothing left to do once stored */
	maestro_transfer_free(t);
	f->in_flight = false;
	if (problem == NULL)
	{
		fetch_forget(f);
		return outcomes;
	}
	f->failed = MemoryContextStrdup(f->cxt, problem);
	f->recheck_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), FAILED_TOKEN_BACKOFF_MS);
	return fail_parked(f->conn, problem, outcomes);
}

/*
 * A transfer ended: what it makes of its request(s), as outcomes (the
 * look-up's misses go back to the ready list instead). Pauses the server
 * when the answer says so.
 */
List *
maestro_delivery_finished(Transfer *t)
{
	List	   *outcomes = NIL;
	curl_off_t	total_us = 0;
	long		retry_after_ms = -1;
	long		pause_ms;

	curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME_T, &total_us);
	maestro_stats_record(t->server_id, t->req.endpoint, t->result == CURLE_OK ? t->status : 0,
						 (double) total_us / 1000.0, 0, t->status == 429 ? 1 : 0, t->buf.len);
	/* the account server's answer says nothing of the API's pacing or quota */
	if (t->kind == TRANSFER_TOKEN)
		return token_finished(t, (TokenFetch *) t->owner, outcomes);
	if (t->buf.rate.retry_after)
		retry_after_ms = maestro_http_retry_after_ms(t->easy);
	/* a spent hourly quota holds the server's sends (pacing.c asks) */
	if (t->result == CURLE_OK)
		maestro_ratelimit_observe(t->server_id, &t->buf.rate);
	pause_ms = maestro_pacing_pause_ms(t->result == CURLE_OK ? t->status : 0, retry_after_ms,
									   t->kind == TRANSFER_SEND ? ((Delivery *) t->owner)->attempts : 1);
	if (pause_ms > 0)
		maestro_pacing_pause(t->server_id, pause_ms);

	if (t->kind == TRANSFER_SEND)
	{
		Delivery   *d = (Delivery *) t->owner;
		Outcome    *o = outcome_of_send(t, d, pause_ms);

		maestro_transfer_free(t);
		if (o == NULL)
			join_group(d);		/* accepted without an id: look it up */
		else
		{
			o->sent_at = t->started_at;
			outcomes = lappend(outcomes, o);
			/* the send's -1 was counted when it left */
			MemoryContextDelete(d->cxt);
		}
	}
	else
	{
		LookupGroup *g = (LookupGroup *) t->owner;

		outcomes = lookup_finished(t, g, outcomes);
		maestro_transfer_free(t);
		group_free(g);
	}
	return outcomes;
}

/*
 * Forget every claimed request (shutdown, or recovery from an error), and
 * give up the token fetches, whose transfers were abandoned before: the
 * processes waiting for those tokens look again at once.
 */
void
maestro_delivery_drop_all(void)
{
	while (!dlist_is_empty(&fetches))
	{
		TokenFetch *f = dlist_container(TokenFetch, node, dlist_pop_head_node(&fetches));

		maestro_auth_release(&f->claim);
		MemoryContextDelete(f->cxt);
	}
	while (ready_head)
	{
		Delivery   *d = ready_head;

		ready_head = d->next;
		MemoryContextDelete(d->cxt);
	}
	ready_tail = NULL;
	ready_count = 0;
	while (!dlist_is_empty(&groups))
	{
		LookupGroup *g = dlist_container(LookupGroup, node, dlist_pop_head_node(&groups));
		Delivery   *d = g->members;

		while (d)
		{
			Delivery   *next = d->next;

			MemoryContextDelete(d->cxt);
			d = next;
		}
		MemoryContextDelete(g->cxt);
	}
	lookup_members = 0;
	maestro_pacing_forget_claims();
}
