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
 * Content-Type, which the API does not keep consistent.
 *
 * src/errors.c
 *
 *-------------------------------------------------------------------------
 */
#include "maestro.h"

#include "utils/elog.h"

#define MAX_MESSAGE_CHARS 500
#define MAX_LISTED_ERRORS 10

/*
 * Remove what must never reach a log: the query string of any URL (an
 * instance_url carries the mtsec secret in it) and bearer tokens.
 */
char *
maestro_redact(const char *text)
{
	StringInfoData out;
	const char *p = text;

	initStringInfo(&out);
	while (*p)
	{
		if (pg_strncasecmp(p, "http://", 7) == 0 || pg_strncasecmp(p, "https://", 8) == 0)
		{
			/* copy the URL up to its query, drop the query */
			while (*p && !isspace((unsigned char) *p) && *p != '"' && *p != '\'' &&
				   *p != '?' && *p != '<' && *p != '>')
				appendStringInfoChar(&out, *p++);
			if (*p == '?')
			{
				appendStringInfoString(&out, "?<redacted>");
				while (*p && !isspace((unsigned char) *p) && *p != '"' && *p != '\'' &&
					   *p != '<' && *p != '>')
					p++;
			}
		}
		else if (pg_strncasecmp(p, "bearer ", 7) == 0)
		{
			appendBinaryStringInfo(&out, p, 7);
			appendStringInfoString(&out, "<redacted>");
			p += 7;
			while (*p && !isspace((unsigned char) *p) && *p != '"' && *p != '\'')
				p++;
		}
		else
			appendStringInfoChar(&out, *p++);
	}
	return out.data;
}

/* Visible text of a plain or HTML body: tags dropped, space collapsed. */
static char *
text_from_body(const char *body, size_t len, bool html)
{
	StringInfoData out;
	size_t		i;
	bool		in_tag = false;
	bool		space = false;

	initStringInfo(&out);
	for (i = 0; i < len && out.len < MAX_MESSAGE_CHARS; i++)
	{
		unsigned char c = (unsigned char) body[i];

		if (html && c == '<')
			in_tag = true;
		if (in_tag)
		{
			if (c == '>')
			{
				in_tag = false;
				space = out.len > 0;
			}
			continue;
		}
		if (isspace(c) || c < 0x20 || c == 0x7f)
		{
			space = out.len > 0;
			continue;
		}
		if (space)
			appendStringInfoChar(&out, ' ');
		space = false;
		appendStringInfoChar(&out, (char) c);
	}
	if (i < len)
		appendStringInfoString(&out, "...");
	return out.data;
}

static const char *
string_member(const cJSON *object, const char *key)
{
	const cJSON *item = maestro_json_member(object, key);

	return cJSON_IsString(item) ? item->valuestring : NULL;
}

/* The RFC 9457 errors[] list: "target: message (CODE)" joined by "; ". */
static void
append_problem_errors(StringInfo out, const cJSON *errors)
{
	const cJSON *entry;
	int			n = 0;

	if (!cJSON_IsArray(errors))
		return;
	cJSON_ArrayForEach(entry, errors)
	{
		const char *code = string_member(entry, "code");
		const char *message = string_member(entry, "message");
		const char *target = string_member(entry, "target");

		if (n++ >= MAX_LISTED_ERRORS)
		{
			appendStringInfoString(out, "; ...");
			break;
		}
		appendStringInfoString(out, n == 1 ? " (" : "; ");
		if (target)
			appendStringInfo(out, "%s: ", target);
		appendStringInfoString(out, message ? message : "(no message)");
		if (code)
			appendStringInfo(out, " [%s]", code);
	}
	if (n > 0)
		appendStringInfoChar(out, ')');
}

/*
 * The API's own words for what went wrong, whatever shape the body has;
 * redacted, never NULL.
 */
char *
maestro_error_message_from_body(const char *body, size_t len, const char *content_type)
{
	cJSON	   *root = maestro_json_try_parse(body, len);
	StringInfoData out;

	initStringInfo(&out);
	if (len == 0)
		appendStringInfoString(&out, "(empty response body)");
	else if (cJSON_IsObject(root))
	{
		const char *title = string_member(root, "title");
		const char *detail = string_member(root, "detail");
		const char *error = string_member(root, "error");
		const char *description = string_member(root, "error_description");
		const char *error_code = string_member(root, "errorCode");
		const char *message = string_member(root, "message");

		if (title || detail)
		{
			/* RFC 9457 problem details */
			if (title && detail)
				appendStringInfo(&out, "%s: %s", title, detail);
			else
				appendStringInfoString(&out, title ? title : detail);
			append_problem_errors(&out, maestro_json_member(root, "errors"));
		}
		else if (error && description)
			appendStringInfo(&out, "%s: %s", error, description);	/* OAuth */
		else if (error)
			appendStringInfoString(&out, error);	/* Maestro {error, code} */
		else if (error_code && message)
			appendStringInfo(&out, "%s: %s", error_code, message);	/* eSignature */
		else if (message)
			appendStringInfoString(&out, message);
		else
			appendStringInfoString(&out, text_from_body(body, len, false));
	}
	else
	{
		bool		html = (content_type && strstr(content_type, "html") != NULL) ||
			(len > 0 && body[0] == '<');

		appendStringInfoString(&out, text_from_body(body, len, html));
	}

	if (out.len > MAX_MESSAGE_CHARS)
	{
		out.data[MAX_MESSAGE_CHARS] = '\0';
		out.len = MAX_MESSAGE_CHARS;
		appendStringInfoString(&out, "...");
	}
	return maestro_redact(out.data);
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
