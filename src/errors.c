/*-------------------------------------------------------------------------
 *
 * errors.c
 *		Turning a Maestro response with a non-2xx status into an ERROR with
 *		a SQLSTATE a program can catch, and keeping secrets out of every
 *		message text.
 *
 * The API answers errors in several shapes (API-NOTES.md section 6): RFC
 * 9457 problem details, the older {error, code} object, OAuth's {error,
 * error_description}, eSignature's {errorCode, message}, plain text for 401
 * and HTML from proxies. The parser branches on the body, never on the
 * Content-Type, which the API does not keep consistent. Reading the body
 * and redacting the message are parse.c's (the fuzzer runs them); this
 * file maps HTTP statuses to SQLSTATEs and raises.
 *
 * src/errors.c
 *
 *-------------------------------------------------------------------------
 */
#include "maestro.h"
#include "parse.h"

#include "utils/elog.h"
#include "utils/memutils.h"

/*
 * parse.c builds its text with these: palloc in the current context, but
 * out of memory is a NULL (reported here), never an error inside parse.c.
 */
static void *
text_palloc(size_t size)
{
	return palloc_extended(size, MCXT_ALLOC_NO_OOM | MCXT_ALLOC_HUGE);
}

static void *
text_repalloc(void *ptr, size_t size)
{
	return repalloc_extended(ptr, size, MCXT_ALLOC_NO_OOM | MCXT_ALLOC_HUGE);
}

static void
text_pfree(void *ptr)
{
	if (ptr != NULL)
		pfree(ptr);
}

static const MaestroAllocator text_allocator = {text_palloc, text_repalloc, text_pfree};

static void
text_begin(MaestroText *text)
{
	if (!maestro_text_init(text, &text_allocator))
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
}

/* The finished text, palloc'd in the current context. */
static char *
text_end(MaestroText *text, bool ok)
{
	if (!ok || text->failed)
	{
		maestro_text_free(text);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	}
	return text->data;
}

/*
 * Remove what must never reach a log: the query string of any URL (an
 * instance_url carries the mtsec secret in it) and bearer tokens.
 */
char *
maestro_redact(const char *text)
{
	MaestroText out;

	text_begin(&out);
	return text_end(&out, maestro_redact_text(text, &out));
}

/*
 * The API's own words for what went wrong, whatever shape the body has
 * (parse.c knows the shapes); redacted, never NULL.
 */
char *
maestro_error_message_from_body(const char *body, size_t len, const char *content_type)
{
	cJSON	   *root = maestro_json_try_parse(body, len);
	MaestroText message;
	char	   *redacted;

	text_begin(&message);
	text_end(&message, maestro_error_text(body, len, content_type, root, &message));
	/* parse.c's text is UTF-8 (anything else made '?'); ours may not be */
	redacted = maestro_redact(maestro_utf8_to_server(message.data, strlen(message.data), false));
	maestro_text_free(&message);
	return redacted;
}

void
maestro_raise_http_error(const MaestroConnection *conn, const MaestroRequest *req,
						 const MaestroResponse *resp)
{
	const char *api_message = maestro_error_message_from_body(resp->body, resp->body_len,
															  resp->content_type);
	const char *retried = resp->retries > 0
		? psprintf(" (after %d retries)", resp->retries) : "";
	long		status = resp->status;
	int			sqlstate;
	const char *message;
	const char *hint = NULL;

	if (status == 400)
	{
		sqlstate = ERRCODE_INVALID_PARAMETER_VALUE;
		message = "Maestro rejected the request as invalid";
	}
	else if (status == 401)
	{
		sqlstate = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
		message = "Maestro did not accept the access token";
		hint = psprintf("Renew the access_token of the user mapping for server \"%s\"; DocuSign access tokens expire after about eight hours.",
						conn->server_name);
		/* some proxies (tinyproxy) answer a wrong password with 401 */
		if (conn->proxy)
			hint = psprintf("%s If the detail is the proxy's own page, check proxy_user and proxy_password instead (the request went through the proxy %s).",
							hint, conn->proxy);
	}
	else if (status == 403)
	{
		sqlstate = ERRCODE_INSUFFICIENT_PRIVILEGE;
		message = "Maestro refused access";
		hint = "The token needs the signature and aow_manage scopes, its user needs access to the workflow, and Maestro must be enabled for the account.";
	}
	else if (status == 404)
	{
		sqlstate = ERRCODE_NO_DATA_FOUND;
		message = "Maestro object not found";
		hint = psprintf("Check the workflow and instance ids, and the account_id of server \"%s\".",
						conn->server_name);
	}
	else if (status == 409)
	{
		sqlstate = ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE;
		message = "Maestro refused the action in the object's current state";
	}
	else if (status == 429)
	{
		sqlstate = ERRCODE_CONFIGURATION_LIMIT_EXCEEDED;
		message = "Maestro rate limit exceeded";
		hint = "DocuSign allows about 3,000 calls an hour per account; retry later, or read instances from a synchronised copy.";
		{
			TimestampTz until;

			if (maestro_ratelimit_wait_ms(conn->server_id, &until) > 0)
				hint = psprintf("The hourly quota is renewed at %s; retry then, or read instances from a synchronised copy.",
								timestamptz_to_str(until));
		}
	}
	else if (status == 407)
	{
		/* an http proxy's own answer: the request went no further */
		sqlstate = ERRCODE_CONNECTION_FAILURE;
		message = "the proxy refused the request";
		hint = conn->proxy
			? psprintf("The proxy %s (server option proxy) wants credentials it accepts: check proxy_user and proxy_password in the user mapping for server \"%s\".",
					   conn->proxy, conn->server_name)
			: "A proxy on the way to Maestro wants credentials: name it in the server option proxy, and give proxy_user and proxy_password in the user mapping.";
	}
	else if (status >= 500 && status <= 599)
	{
		sqlstate = ERRCODE_SYSTEM_ERROR;
		message = "Maestro server error";
	}
	else if (status >= 300 && status <= 399)
	{
		sqlstate = ERRCODE_CONNECTION_FAILURE;
		message = "Maestro answered with a redirect, which is not followed";
		hint = "Redirects would carry the access token to another host; set base_url to the final address.";
	}
	else
	{
		sqlstate = ERRCODE_PROTOCOL_VIOLATION;
		message = "Maestro answered with an unexpected HTTP status";
	}

	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg("%s", message),
			 errdetail("HTTP %ld from %s %s%s: %s", status, req->method, req->path,
					   retried, api_message),
			 hint ? errhint("%s", hint) : 0));
	pg_unreachable();
}
