/*-------------------------------------------------------------------------
 *
 * auth.c
 *		The bearer token of a request: a user mapping's static access_token,
 *		or one minted with DocuSign's OAuth JWT grant and cached.
 *
 * The JWT grant (API-NOTES.md section 9.2): an RS256-signed assertion
 * {iss: integration key, sub: user id, aud: the account server's host,
 * iat, exp, scope} is posted to {auth_url}/oauth/token, which answers with
 * an access token good for expires_in seconds (an hour).
 *
 * Minted tokens are cached in shared memory when maestro is preloaded, so
 * every backend and the worker share one token per user mapping, and only
 * one of them asks for a new one at a time; otherwise each backend keeps
 * its own. A cache entry is keyed by the user mapping and by a hash of every
 * option that shapes the token, so that ALTER SERVER or ALTER USER MAPPING
 * makes the old token unreachable at once, in every process. A token is
 * used until shortly before it expires; a 401 from the API drops it.
 *
 * Getting a token is a few steps with one set of cache rules, so that the
 * backends' synchronous path (maestro_auth_prepare) and the worker, which
 * runs the token request on its multi handle beside its other transfers
 * (delivery.c), cannot drift apart: look in the cache, claiming the fetch
 * when there is no fresh token and nobody else fetches it
 * (maestro_auth_lookup); build the request (maestro_auth_token_request);
 * store the answer's token or raise its error (maestro_auth_token_received);
 * give a failed or abandoned fetch up (maestro_auth_release). Every end of
 * a claimed fetch wakes the processes waiting for it, a FATAL exit too.
 *
 * src/auth.c
 *
 *-------------------------------------------------------------------------
 */
#include "maestro.h"

#include <math.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "common/base64.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#define TOKEN_SLOTS			64
#define MAX_TOKEN_LEN		4096
#define ASSERTION_LIFETIME	3600	/* DocuSign allows at most an hour */
/* bounds on a token's expires_in (token_lifetime()) */
#define TOKEN_LIFETIME_DEFAULT	3600
#define TOKEN_LIFETIME_MIN	60
#define TOKEN_LIFETIME_MAX	(24 * 3600)
/* a fetch running longer than a request can take is taken over */
#define FETCH_TAKEOVER_MS	(maestro_request_timeout_ms + 1000L)

typedef struct TokenSlot
{
	Oid			mapping_id;
	uint32		config_hash;
	TimestampTz use_until;		/* 0: empty */
	bool		fetching;
	TimestampTz fetch_started;
	char		token[MAX_TOKEN_LEN];
} TokenSlot;

typedef struct TokenCache
{
	LWLock	   *lock;
	ConditionVariable fetched;
	TokenSlot	slots[TOKEN_SLOTS];
} TokenCache;

static TokenCache *shared_cache = NULL;
static TokenCache *local_cache = NULL;
/* maestro.c's shared-memory hooks call these (AddinShmemInitLock held) */
void
maestro_auth_shmem_request(void)
{
	maestro_shmem_reserve("maestro tokens", sizeof(TokenCache), true);
}

void
maestro_auth_shmem_startup(void)
{
	if (maestro_shmem_attach("maestro tokens", sizeof(TokenCache), (void **) &shared_cache))
	{
		shared_cache->lock = maestro_shmem_lock("maestro tokens");
		ConditionVariableInit(&shared_cache->fetched);
	}
}

static TokenCache *
token_cache(void)
{
	if (shared_cache)
		return shared_cache;
	if (local_cache == NULL)
		local_cache = MemoryContextAllocZero(TopMemoryContext, sizeof(TokenCache));
	return local_cache;
}

static void
cache_lock(TokenCache *cache)
{
	if (cache->lock)
		LWLockAcquire(cache->lock, LW_EXCLUSIVE);
}

static void
cache_unlock(TokenCache *cache)
{
	if (cache->lock)
		LWLockRelease(cache->lock);
}

/*
 * A hash of everything that shapes the token: a change to any of it is a
 * new token. Computed once, when the connection is built (options.c): the
 * private key alone is over a kilobyte, and the worker compares keys in
 * loops.
 */
uint32
maestro_auth_token_key(const MaestroConnection *conn)
{
	const char *parts[6] = {conn->auth_url, conn->scopes, conn->integration_key,
	conn->user_id, conn->private_key, conn->account_id};
	uint32		hash = 0;
	int			i;

	for (i = 0; i < 6; i++)
		hash = hash_combine(hash, parts[i] ? hash_bytes((const unsigned char *) parts[i],
														strlen(parts[i])) : 0);
	return hash;
}

static TokenSlot *
find_slot(TokenCache *cache, Oid mapping_id, uint32 hash, bool create)
{
	TokenSlot  *victim = NULL;
	int			i;

	for (i = 0; i < TOKEN_SLOTS; i++)
	{
		TokenSlot  *slot = &cache->slots[i];

		if (slot->mapping_id == mapping_id && slot->config_hash == hash)
			return slot;
		if (!slot->fetching && (victim == NULL || slot->use_until < victim->use_until))
			victim = slot;
	}
	if (!create || victim == NULL)
		return NULL;
	memset(victim, 0, sizeof(TokenSlot));
	victim->mapping_id = mapping_id;
	victim->config_hash = hash;
	return victim;
}

/* ---- the assertion ---- */

static char *
base64url(const unsigned char *data, int len)
{
	int			enclen = pg_b64_enc_len(len);
	char	   *out = palloc(enclen + 1);
	int			n = pg_b64_encode((const char *) data, len, out, enclen);
	int			i,
				j;

	for (i = 0, j = 0; i < n; i++)
	{
		if (out[i] == '=')
			continue;
		out[j++] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
	}
	out[j] = '\0';
	return out;
}

/* The host of a URL, which DocuSign wants as the assertion's audience. */
static char *
url_host(const char *url)
{
	CURLU	   *u = curl_url();
	char	   *host = NULL;
	char	   *result = NULL;

	if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK)
		result = pstrdup(host);
	curl_free(host);
	curl_url_cleanup(u);
	return result ? result : pstrdup("");
}

static void
raise_encrypted_key_error(const char *server_name)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 server_name
			 ? errmsg("private_key of the user mapping for maestro server \"%s\" is encrypted",
					  server_name)
			 : errmsg("private_key is encrypted"),
			 errdetail("maestro has no passphrase to decrypt it with, and the server must never prompt for one."),
			 errhint("Store the key unencrypted: openssl pkey -in encrypted.pem -out key.pem asks for the passphrase once and writes the plain key.")));
}

/*
 * OpenSSL asks this for the passphrase of an encrypted key. Without it,
 * OpenSSL's default callback would prompt on the server's terminal (and
 * wait there when the postmaster has one). We never have a passphrase:
 * note that one was wanted and fail the read.
 */
static int
refuse_passphrase(char *buf, int size, int rwflag, void *userdata)
{
	*(bool *) userdata = true;
	return -1;
}

/*
 * The RSA key in pem, or NULL; *encrypted says whether it was refused for
 * being encrypted. OpenSSL's error queue is left empty, so that a later
 * TLS handshake in the same process never reports our failure as its own.
 */
static EVP_PKEY *
read_private_key(const char *pem, bool *encrypted)
{
	BIO		   *bio = BIO_new_mem_buf(pem, -1);
	EVP_PKEY   *key = NULL;

	*encrypted = false;
	if (bio == NULL)
		return NULL;
	key = PEM_read_bio_PrivateKey(bio, NULL, refuse_passphrase, encrypted);
	BIO_free(bio);
	ERR_clear_error();
	if (key && (*encrypted || EVP_PKEY_base_id(key) != EVP_PKEY_RSA))
	{
		EVP_PKEY_free(key);
		key = NULL;
	}
	return key;
}

/*
 * For the validator: does the text hold an RSA private key? An encrypted
 * one is refused with its own error, here and at use.
 */
bool
maestro_private_key_is_valid(const char *pem)
{
	bool		encrypted;
	EVP_PKEY   *key = read_private_key(pem, &encrypted);

	if (encrypted)
		raise_encrypted_key_error(NULL);
	if (key == NULL)
		return false;
	EVP_PKEY_free(key);
	return true;
}

/*
 * The signed assertion. The OpenSSL objects are freed before any error is
 * raised, so nothing leaks on the error path.
 */
static char *
signed_assertion(const MaestroConnection *conn)
{
	StringInfoData claims;
	char	   *header = base64url((const unsigned char *) "{\"alg\":\"RS256\",\"typ\":\"JWT\"}", 27);
	char	   *payload;
	char	   *signing_input;
	EVP_PKEY   *key;
	EVP_MD_CTX *ctx;
	unsigned char *signature = NULL;
	size_t		siglen = 0;
	bool		ok = false;
	bool		encrypted;
	long		now = (long) time(NULL);

	initStringInfo(&claims);
	appendStringInfo(&claims, "{\"iss\":\"%s\",\"sub\":\"%s\",\"aud\":\"%s\","
					 "\"iat\":%ld,\"nbf\":%ld,\"exp\":%ld,\"scope\":\"%s\"}",
					 conn->integration_key, conn->user_id, url_host(conn->auth_url),
					 now, now, now + ASSERTION_LIFETIME, conn->scopes);
	payload = base64url((const unsigned char *) claims.data, claims.len);
	signing_input = psprintf("%s.%s", header, payload);

	key = read_private_key(conn->private_key, &encrypted);
	if (encrypted)
		raise_encrypted_key_error(conn->server_name);
	ctx = EVP_MD_CTX_new();
	if (key && ctx &&
		EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
		EVP_DigestSign(ctx, NULL, &siglen, (const unsigned char *) signing_input,
					   strlen(signing_input)) == 1)
	{
		signature = palloc(siglen);
		ok = EVP_DigestSign(ctx, signature, &siglen, (const unsigned char *) signing_input,
							strlen(signing_input)) == 1;
	}
	EVP_MD_CTX_free(ctx);
	EVP_PKEY_free(key);

	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("could not sign the JWT assertion for maestro server \"%s\"",
						conn->server_name),
				 errhint("Check the private_key option of the user mapping: it must be an RSA private key in PEM form.")));
	return psprintf("%s.%s", signing_input, base64url(signature, (int) siglen));
}

/* ---- asking the account server ---- */

static char *
form_escape(const char *text)
{
	char	   *escaped = curl_easy_escape(NULL, text, 0);
	char	   *result;

	if (escaped == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	result = pstrdup(escaped);
	curl_free(escaped);
	return result;
}

/*
 * What to do about a refused grant: DocuSign's own error codes mean
 * different fixes.
 */
static void
raise_grant_error(const MaestroConnection *conn, const MaestroResponse *resp)
{
	cJSON	   *root = maestro_json_try_parse(resp->body, resp->body_len);
	const cJSON *error = maestro_json_member(root, "error");
	const cJSON *description = maestro_json_member(root, "error_description");
	const char *code = cJSON_IsString(error) ? error->valuestring : "";
	const char *why = cJSON_IsString(description) ? description->valuestring : "";
	const char *hint = NULL;

	if (strcmp(code, "consent_required") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("DocuSign user %s has not consented to integration key %s",
						conn->user_id, conn->integration_key),
				 errdetail("HTTP %ld from POST /oauth/token: consent_required", resp->status),
				 errhint("Have the user (or an organization administrator) open %s/oauth/auth?response_type=code&scope=%s&client_id=%s&redirect_uri=<a redirect URI registered for the integration key> once and accept.",
						 conn->auth_url, form_escape(conn->scopes), conn->integration_key)));

	if (strcmp(why, "no_valid_keys_or_signatures") == 0)
		hint = psprintf("The private_key does not belong to an RSA key pair registered for integration key %s.",
						conn->integration_key);
	else if (strcmp(why, "issuer_not_found") == 0)
		hint = "The integration_key is not known to this account server; check it, and that auth_url is the right environment (demo or production).";
	else if (strcmp(why, "user_not_found") == 0)
		hint = "The user_id is not a user of this environment; use the user's API Username (a GUID).";
	else if (strcmp(code, "invalid_scope") == 0)
		hint = "The integration key does not allow these scopes; check the server's scopes option.";

	ereport(ERROR,
			(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			 errmsg("DocuSign refused the JWT grant for maestro server \"%s\"", conn->server_name),
			 errdetail("HTTP %ld from POST /oauth/token: %s", resp->status,
					   maestro_error_message_from_body(resp->body, resp->body_len,
													   resp->content_type)),
			 hint ? errhint("%s", hint) : 0));
}

/*
 * How long to keep a token, from the answer's expires_in, clamped: a
 * lifetime under a minute (0.5, 0, negative) would have every call mint a
 * new token, and a huge one (or one beyond what a long can hold) would
 * keep a token forever. DocuSign's tokens live an hour (8 hours for some
 * grants); one the API refuses earlier is dropped on its 401.
 */
static long
token_lifetime(const cJSON *expires_in)
{
	double		seconds;

	if (!cJSON_IsNumber(expires_in) || isnan(expires_in->valuedouble))
		return TOKEN_LIFETIME_DEFAULT;
	seconds = expires_in->valuedouble;
	if (seconds < TOKEN_LIFETIME_MIN)
		return TOKEN_LIFETIME_MIN;
	if (seconds > TOKEN_LIFETIME_MAX)
		return TOKEN_LIFETIME_MAX;
	return (long) seconds;
}

/*
 * How long before expiry a token is replaced: a minute, or a tenth of a
 * short lifetime, so that a request never leaves with a token about to die.
 */
static TimestampTz
use_until(long lifetime_s)
{
	long		margin_ms = Min(60 * 1000L, lifetime_s * 100L);

	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), lifetime_s * 1000L - margin_ms);
}

/*
 * The token, copied where the connection itself lives. The caller's
 * memory context may be shorter-lived than the connection (the worker
 * prepares a send in a context it resets each round, and keeps the
 * connection for the answer); maestro_auth_forget compares against this
 * string when the API refuses the token, and a freed copy would make it
 * keep a refused token cached until it expires.
 */
static char *
token_for(MaestroConnection *conn, const char *token)
{
	return MemoryContextStrdup(GetMemoryChunkContext(conn), token);
}

/* ---- the fetches this process has claimed ---- */

/*
 * A claimed fetch that this process ends in any way (a token stored, an
 * error, shutdown, or even a FATAL exit) is released, so that the processes
 * waiting for it look again at once instead of at the takeover time.
 */
static MaestroTokenClaim held[2 * TOKEN_SLOTS];
static int	n_held = 0;
static bool exit_hook_set = false;

static bool
same_claim(const MaestroTokenClaim *a, const MaestroTokenClaim *b)
{
	return a->mapping_id == b->mapping_id && a->config_hash == b->config_hash &&
		a->claimed_at == b->claimed_at;
}

static bool
held_by_me(Oid mapping_id, uint32 hash, TimestampTz claimed_at)
{
	MaestroTokenClaim claim = {mapping_id, hash, claimed_at};
	int			i;

	for (i = 0; i < n_held; i++)
		if (same_claim(&held[i], &claim))
			return true;
	return false;
}

/* Forget a claim; false when it was not held (already ended). */
static bool
unhold(const MaestroTokenClaim *claim)
{
	int			i;

	for (i = 0; i < n_held; i++)
		if (same_claim(&held[i], claim))
		{
			held[i] = held[--n_held];
			return true;
		}
	return false;
}

/* Clear a claim's fetching flag, unless another process took it over. */
static void
clear_claim(TokenCache *cache, const MaestroTokenClaim *claim)
{
	TokenSlot  *slot;

	cache_lock(cache);
	slot = find_slot(cache, claim->mapping_id, claim->config_hash, false);
	if (slot && slot->fetching && slot->fetch_started == claim->claimed_at)
		slot->fetching = false;
	cache_unlock(cache);
}

static void
release_held_at_exit(int code, Datum arg)
{
	TokenCache *cache = token_cache();

	while (n_held > 0)
		clear_claim(cache, &held[--n_held]);
	if (cache == shared_cache)
		ConditionVariableBroadcast(&cache->fetched);
}

static void
hold(const MaestroTokenClaim *claim)
{
	if (!exit_hook_set)
	{
		before_shmem_exit(release_held_at_exit, 0);
		exit_hook_set = true;
	}
	/* more claims than slots cannot be: each holds a slot fetching */
	if (n_held < (int) lengthof(held))
		held[n_held++] = *claim;
}

/* ---- the steps of getting a token ---- */

/*
 * Look for conn's token in the cache (the first step, for the synchronous
 * path and the worker alike):
 *
 * MAESTRO_TOKEN_READY: conn->access_token is set (a static token, or a
 *	fresh minted one).
 * MAESTRO_TOKEN_FETCH: there is none, and the caller has claimed the fetch
 *	(*claim): it asks (maestro_auth_token_request), then reports the answer
 *	(maestro_auth_token_received) or gives up (maestro_auth_release).
 * MAESTRO_TOKEN_WAIT: another process is fetching it; look again when it
 *	broadcasts, or at *wait_until, when that fetch may be taken over (it
 *	started longer ago than a request can take: its process died or hangs).
 *
 * A process never waits for itself: a fetch this process claimed and has
 * not ended is claimed again, so that no path can deadlock on its own
 * claim.
 */
MaestroTokenState
maestro_auth_lookup(MaestroConnection *conn, MaestroTokenClaim *claim,
					TimestampTz *wait_until)
{
	TokenCache *cache;
	TokenSlot  *slot;
	uint32		hash;
	TimestampTz now = GetCurrentTimestamp();
	MaestroTokenState state = MAESTRO_TOKEN_WAIT;
	char		token[MAX_TOKEN_LEN];

	*wait_until = 0;
	memset(claim, 0, sizeof(*claim));
	if (!conn->jwt)
		return MAESTRO_TOKEN_READY;

	cache = token_cache();
	hash = conn->token_key;
	claim->mapping_id = conn->mapping_id;
	claim->config_hash = hash;

	cache_lock(cache);
	maestro_fault_point("token_cache_lock");
	slot = find_slot(cache, conn->mapping_id, hash, true);
	if (slot == NULL)
		state = MAESTRO_TOKEN_FETCH;	/* every slot is being fetched: uncached */
	else if (slot->use_until > now)
	{
		strlcpy(token, slot->token, MAX_TOKEN_LEN);
		state = MAESTRO_TOKEN_READY;
	}
	else if (!slot->fetching || cache != shared_cache ||
			 TimestampDifferenceExceeds(slot->fetch_started, now, FETCH_TAKEOVER_MS) ||
			 held_by_me(conn->mapping_id, hash, slot->fetch_started))
	{
		slot->fetching = true;
		slot->fetch_started = now;
		claim->claimed_at = now;
		state = MAESTRO_TOKEN_FETCH;
	}
	else
		*wait_until = TimestampTzPlusMilliseconds(slot->fetch_started, FETCH_TAKEOVER_MS);
	cache_unlock(cache);

	if (state == MAESTRO_TOKEN_READY)
	{
		conn->access_token = token_for(conn, token);
		explicit_bzero(token, sizeof(token));
	}
	else if (state == MAESTRO_TOKEN_FETCH && claim->claimed_at != 0)
		hold(claim);
	return state;
}

/*
 * The token request of a claimed fetch: *req (palloc'd in the current
 * context, which must outlive the request) goes to the connection returned,
 * a copy of conn whose base_url is the account server.
 */
MaestroConnection *
maestro_auth_token_request(const MaestroConnection *conn, MaestroRequest *req)
{
	MaestroConnection *account = palloc(sizeof(MaestroConnection));

	*account = *conn;
	account->base_url = conn->auth_url;
	memset(req, 0, sizeof(*req));
	req->method = "POST";
	req->path = "/oauth/token";
	req->content_type = "application/x-www-form-urlencoded";
	req->anonymous = true;
	req->idempotent = false;
	req->endpoint = MAESTRO_EP_TOKEN;
	req->body = psprintf("grant_type=%s&assertion=%s",
						 form_escape("urn:ietf:params:oauth:grant-type:jwt-bearer"),
						 signed_assertion(conn));
	return account;
}

/*
 * The account server answered a claimed fetch (resp as http.c gives it):
 * store the token, end the claim and wake the processes waiting for it, and
 * set conn->access_token. Anything but a usable token raises the error the
 * user sees; the claim then stays held, for the caller to release.
 */
void
maestro_auth_token_received(MaestroConnection *conn, const MaestroTokenClaim *claim,
							const MaestroConnection *account, const MaestroRequest *req,
							const MaestroResponse *resp)
{
	TokenCache *cache = token_cache();
	TokenSlot  *slot;
	cJSON	   *root;
	const cJSON *token;
	long		lifetime;

	if (resp->status == 400 || resp->status == 401)
		raise_grant_error(conn, resp);
	if (resp->status < 200 || resp->status > 299)
		maestro_raise_http_error(account, req, resp);

	root = maestro_json_parse(resp->body, resp->body_len, req);
	token = maestro_json_member(root, "access_token");
	if (!cJSON_IsString(token) || token->valuestring[0] == '\0' ||
		strlen(token->valuestring) >= MAX_TOKEN_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("DocuSign's token response holds no usable access_token")));
	lifetime = token_lifetime(maestro_json_member(root, "expires_in"));
	conn->access_token = token_for(conn, token->valuestring);

	/*
	 * Stored even when another process took the fetch over meanwhile: a
	 * fresh token is what its waiters want too. And stored when the fetch
	 * had no slot (every one was being fetched when it began), into one
	 * freed since: else each call of that mapping would fetch anew for as
	 * long as the slots stayed busy.
	 */
	cache_lock(cache);
	slot = find_slot(cache, claim->mapping_id, claim->config_hash, true);
	if (slot)
	{
		slot->fetching = false;
		strlcpy(slot->token, token->valuestring, MAX_TOKEN_LEN);
		slot->use_until = use_until(lifetime);
	}
	cache_unlock(cache);
	unhold(claim);
	if (cache == shared_cache)
		ConditionVariableBroadcast(&cache->fetched);
}

/*
 * Give up a claimed fetch (it failed, or was abandoned): the processes
 * waiting for it look again at once, and one of them fetches. Nothing
 * happens for a claim already ended, so calling it twice is harmless.
 */
void
maestro_auth_release(const MaestroTokenClaim *claim)
{
	TokenCache *cache = token_cache();

	if (!unhold(claim))
		return;
	clear_claim(cache, claim);
	if (cache == shared_cache)
		ConditionVariableBroadcast(&cache->fetched);
}

/* Do two connections use the same token (the cache's key)? */
bool
maestro_auth_same_token(const MaestroConnection *a, const MaestroConnection *b)
{
	return a->jwt && b->jwt && a->mapping_id == b->mapping_id &&
		a->token_key == b->token_key;
}

/*
 * Make conn->access_token usable, synchronously (the backends' path): a
 * static token as it is, a minted one from the cache, or a new one when the
 * cache has none that is fresh.
 */
void
maestro_auth_prepare(MaestroConnection *conn)
{
	TokenCache *cache;
	MaestroTokenClaim claim;
	MaestroTokenState state;
	bool		slept = false;

	if (!conn->jwt)
		return;
	cache = token_cache();

	/*
	 * Wait while another process fetches this token. The condition
	 * variable is prepared once, before the first check, so that a
	 * broadcast between the check and the sleep is not lost; each sleep
	 * then really sleeps until a broadcast or its timeout, and the check is
	 * repeated. The wait is bounded by the takeover time of that fetch.
	 * Cancel and shutdown end the sleep at once (ConditionVariableTimedSleep
	 * checks for interrupts); on an error, the abort cancels the sleep.
	 */
	if (cache == shared_cache)
		ConditionVariablePrepareToSleep(&cache->fetched);
	for (;;)
	{
		TimestampTz wait_until;
		long		wait_ms;

		state = maestro_auth_lookup(conn, &claim, &wait_until);
		if (state != MAESTRO_TOKEN_WAIT)
			break;
		wait_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), wait_until);
		(void) ConditionVariableTimedSleep(&cache->fetched, Max(wait_ms, 1) + 10,
										   PG_WAIT_EXTENSION);
		slept = true;
	}
	if (cache == shared_cache)
		ConditionVariableCancelSleep();

	/*
	 * The sleep resets the process latch whatever set it; a wake-up meant for
	 * the caller (the worker's, when a backend queues a request) must not be
	 * lost: set it again, at the cost of one extra look at most.
	 */
	if (slept)
		SetLatch(MyLatch);

	if (state == MAESTRO_TOKEN_READY)
		return;

	PG_TRY();
	{
		MaestroRequest req;
		MaestroResponse resp;
		MaestroConnection *account = maestro_auth_token_request(conn, &req);

		maestro_http_execute(account, &req, &resp);
		maestro_auth_token_received(conn, &claim, account, &req, &resp);
	}
	PG_CATCH();
	{
		maestro_auth_release(&claim);
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/* The API refused the token (401): drop it, so the next call mints anew. */
void
maestro_auth_forget(MaestroConnection *conn)
{
	TokenCache *cache;
	TokenSlot  *slot;

	if (!conn->jwt)
		return;
	cache = token_cache();
	cache_lock(cache);
	slot = find_slot(cache, conn->mapping_id, conn->token_key, false);
	if (slot && !slot->fetching && conn->access_token &&
		strcmp(slot->token, conn->access_token) == 0)
		slot->use_until = 0;
	cache_unlock(cache);
	conn->access_token = NULL;
}
