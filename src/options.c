/*-------------------------------------------------------------------------
 *
 * options.c
 *		The maestro foreign-data wrapper's options: their validation at
 *		CREATE/ALTER time, and their resolution into a MaestroConnection
 *		for the calling role at call time.
 *
 * Endpoints and the account id are server options (world-readable);
 * the access token is a user-mapping option (hidden from other roles).
 *
 * A backend resolves the same connection for every call of a statement,
 * and finding it (the scan of pg_foreign_server when maestro.server is
 * empty, the user mapping, the options) was about 8% of a trigger
 * call's CPU (perf). So maestro_connect() keeps what it resolved, per
 * calling role and value of maestro.server, until any foreign-data
 * wrapper, server or user mapping changes: a syscache callback forgets
 * everything, so ALTER SERVER, ALTER USER MAPPING, CREATE and DROP take
 * effect at the next call, in this session and, once committed, in every
 * other (each call reads pending invalidations first, even inside a
 * transaction). The role is part of the key, so SET ROLE and
 * SECURITY DEFINER functions never see another role's mapping; the USAGE
 * check is made on every call, since it also depends on role memberships.
 * The worker (maestro_connection_for) does not cache.
 *
 * src/options.c
 *
 *-------------------------------------------------------------------------
 */
#include "maestro.h"
#include "parse.h"

#include <curl/curl.h>
#include <unistd.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/reloptions.h"
#include "access/table.h"
#include "catalog/pg_foreign_data_wrapper.h"
#include "catalog/pg_foreign_server.h"
#include "catalog/pg_user_mapping.h"
#include "commands/defrem.h"
#include "foreign/foreign.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(maestro_fdw_validator);

typedef struct MaestroOption
{
	const char *name;
	Oid			context;		/* catalog the option belongs to */
} MaestroOption;

static const MaestroOption maestro_options[] = {
	{"base_url", ForeignServerRelationId},
	{"account_id", ForeignServerRelationId},
	{"auth_url", ForeignServerRelationId},
	{"scopes", ForeignServerRelationId},
	{"ca_file", ForeignServerRelationId},
	{"proxy", ForeignServerRelationId},
	{"access_token", UserMappingRelationId},
	{"integration_key", UserMappingRelationId},
	{"user_id", UserMappingRelationId},
	{"private_key", UserMappingRelationId},
	{"proxy_user", UserMappingRelationId},
	{"proxy_password", UserMappingRelationId},
	{NULL, InvalidOid}
};

#define DEFAULT_SCOPES "signature aow_manage impersonation"

static const char *
option_context_name(Oid context)
{
	switch (context)
	{
		case ForeignServerRelationId:
			return "server";
		case UserMappingRelationId:
			return "user mapping";
		case ForeignDataWrapperRelationId:
			return "foreign-data wrapper";
		default:
			return "foreign table";
	}
}

/*
 * Canonical 8-4-4-4-12 hex text; what uuid_out produces and what the API
 * puts in its paths. parse.c decides it (ASCII only, whatever the locale,
 * and fuzzed), so that an option and a response field are read alike.
 */
bool
maestro_is_uuid(const char *text)
{
	return maestro_uuid_is_canonical(text);
}

/*
 * A base URL must be an absolute http(s) URL without credentials, query or
 * fragment: the token goes to whatever host it names, and anything after
 * the path would corrupt the request paths appended to it.
 */
static void
validate_url_option(const char *option, const char *value)
{
	CURLU	   *url = curl_url();
	CURLUcode	rc;
	char	   *scheme = NULL;
	char	   *host = NULL;
	char	   *user = NULL;
	char	   *query = NULL;
	char	   *fragment = NULL;
	const char *problem = NULL;

	if (url == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));

	rc = curl_url_set(url, CURLUPART_URL, value, CURLU_NON_SUPPORT_SCHEME);
	if (strncasecmp(value, "http://", 7) != 0 && strncasecmp(value, "https://", 8) != 0 &&
		strstr(value, "://") == NULL)
		problem = "it must start with http:// or https://";
	else if (rc != CURLUE_OK)
		problem = curl_url_strerror(rc);
	else
	{
		curl_url_get(url, CURLUPART_SCHEME, &scheme, 0);
		curl_url_get(url, CURLUPART_HOST, &host, 0);
		curl_url_get(url, CURLUPART_USER, &user, 0);
		curl_url_get(url, CURLUPART_QUERY, &query, 0);
		curl_url_get(url, CURLUPART_FRAGMENT, &fragment, 0);

		if (scheme == NULL ||
			(pg_strcasecmp(scheme, "http") != 0 && pg_strcasecmp(scheme, "https") != 0))
			problem = "the scheme must be http or https";
		else if (host == NULL || host[0] == '\0')
			problem = "it names no host";
		else if (user != NULL)
			problem = "it must not carry credentials; the access token belongs in the user mapping";
		else if (query != NULL || fragment != NULL)
			problem = "it must not have a query string or fragment";
	}

	curl_free(scheme);
	curl_free(host);
	curl_free(user);
	curl_free(query);
	curl_free(fragment);
	curl_url_cleanup(url);

	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
				 errmsg("invalid value for option \"%s\": \"%s\"", option, value),
				 errdetail("The URL is not usable: %s.", problem),
				 strcmp(option, "base_url") == 0
				 ? errhint("Use the API's root, e.g. 'https://api-d.docusign.com' for the demo environment or 'https://api.docusign.com' for production.")
				 : errhint("Use the account server's root, e.g. 'https://account-d.docusign.com' for the demo environment or 'https://account.docusign.com' for production.")));
}

/*
 * A proxy is an http, https or socks5h URL naming a host and port and
 * nothing more. Server options are world-readable, so credentials are
 * refused here (they belong in the user mapping as proxy_user and
 * proxy_password) and a value carrying some is never echoed. socks5h, not
 * socks5: the proxy resolves the API's host name, as an http proxy does.
 */
static void
validate_proxy_option(const char *value)
{
	CURLU	   *url = curl_url();
	char	   *scheme = NULL;
	char	   *host = NULL;
	char	   *user = NULL;
	char	   *password = NULL;
	char	   *path = NULL;
	char	   *query = NULL;
	char	   *fragment = NULL;
	const char *problem = NULL;
	/* whatever is wrong, a value that may hold credentials is not echoed */
	bool		secret = strchr(value, '@') != NULL;

	if (url == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));

	if (strstr(value, "://") == NULL)
		problem = "it must start with http://, https:// or socks5h://";
	else if (curl_url_set(url, CURLUPART_URL, value, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK)
		problem = "it is not a valid URL";
	else
	{
		curl_url_get(url, CURLUPART_SCHEME, &scheme, 0);
		curl_url_get(url, CURLUPART_HOST, &host, 0);
		curl_url_get(url, CURLUPART_USER, &user, 0);
		curl_url_get(url, CURLUPART_PASSWORD, &password, 0);
		curl_url_get(url, CURLUPART_PATH, &path, 0);
		curl_url_get(url, CURLUPART_QUERY, &query, 0);
		curl_url_get(url, CURLUPART_FRAGMENT, &fragment, 0);

		if (user != NULL || password != NULL)
			problem = "it must not carry credentials; give them as proxy_user and proxy_password in the user mapping";
		else if (scheme == NULL ||
				 (pg_strcasecmp(scheme, "http") != 0 && pg_strcasecmp(scheme, "https") != 0 &&
				  pg_strcasecmp(scheme, "socks5h") != 0))
			problem = "the scheme must be http, https or socks5h";
		else if (host == NULL || host[0] == '\0')
			problem = "it names no host";
		else if ((path != NULL && strcmp(path, "/") != 0) || query != NULL || fragment != NULL)
			problem = "it must not have a path, query string or fragment";
	}

	curl_free(scheme);
	curl_free(host);
	curl_free(user);
	curl_free(password);
	curl_free(path);
	curl_free(query);
	curl_free(fragment);
	curl_url_cleanup(url);

	if (problem != NULL && secret)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
				 errmsg("invalid value for option \"proxy\""),
				 errdetail("The URL is not usable: %s.", problem),
				 errhint("Use the proxy's URL alone, e.g. 'http://proxy.example.com:3128'.")));
	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
				 errmsg("invalid value for option \"proxy\": \"%s\"", value),
				 errdetail("The URL is not usable: %s.", problem),
				 errhint("Use the proxy's URL alone, e.g. 'http://proxy.example.com:3128'.")));
}

/*
 * The token becomes an HTTP header: anything but visible ASCII could split
 * it into further headers. The value is never echoed.
 */
static void
validate_access_token(const char *value)
{
	const char *p;

	if (value[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
				 errmsg("option \"access_token\" must not be empty")));
	for (p = value; *p; p++)
	{
		if (*p <= ' ' || *p >= 127)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
					 errmsg("invalid value for option \"access_token\""),
					 errdetail("The token contains white space or a non-ASCII character at position %d.",
							   (int) (p - value) + 1),
					 errhint("Paste the token alone, without the \"Bearer \" prefix.")));
	}
}

/*
 * Is path already the ca_file of a server of this wrapper (the validator
 * identifies it)? Then a superuser chose it, and keeping it names no new
 * file.
 */
static bool
ca_file_in_use(Oid validator, const char *path)
{
	Relation	rel = table_open(ForeignServerRelationId, AccessShareLock);
	SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	HeapTuple	tuple;
	bool		found = false;

	while (!found && HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		Form_pg_foreign_server server = (Form_pg_foreign_server) GETSTRUCT(tuple);
		Datum		datum;
		bool		isnull;
		ListCell   *cell;

		if (GetForeignDataWrapper(server->srvfdw)->fdwvalidator != validator)
			continue;
		datum = heap_getattr(tuple, Anum_pg_foreign_server_srvoptions,
							 RelationGetDescr(rel), &isnull);
		if (isnull)
			continue;
		foreach(cell, untransformRelOptions(datum))
		{
			DefElem    *def = (DefElem *) lfirst(cell);

			if (strcmp(def->defname, "ca_file") == 0 &&
				strcmp(defGetString(def), path) == 0)
				found = true;
		}
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

Datum
maestro_fdw_validator(PG_FUNCTION_ARGS)
{
	List	   *options = untransformRelOptions(PG_GETARG_DATUM(0));
	Oid			catalog = PG_GETARG_OID(1);
	bool		have_account = false;
	bool		have_token = false;
	int			jwt_options = 0;
	bool		have_proxy_user = false;
	bool		have_proxy_password = false;
	ListCell   *cell;

	foreach(cell, options)
	{
		DefElem    *def = (DefElem *) lfirst(cell);
		const MaestroOption *opt;
		bool		known = false;
		StringInfoData valid;

		initStringInfo(&valid);
		for (opt = maestro_options; opt->name; opt++)
		{
			if (opt->context != catalog)
				continue;
			if (strcmp(opt->name, def->defname) == 0)
				known = true;
			appendStringInfo(&valid, "%s%s", valid.len ? ", " : "", opt->name);
		}

		if (!known)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
					 errmsg("invalid option \"%s\" for a maestro %s",
							def->defname, option_context_name(catalog)),
					 valid.len > 0
					 ? errhint("Valid options in this context are: %s.", valid.data)
					 : errhint("There are no valid options in this context.")));

		if (strcmp(def->defname, "base_url") == 0 || strcmp(def->defname, "auth_url") == 0)
			validate_url_option(def->defname, defGetString(def));
		else if (strcmp(def->defname, "integration_key") == 0 ||
				 strcmp(def->defname, "user_id") == 0)
		{
			if (!maestro_is_uuid(defGetString(def)))
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
						 errmsg("invalid value for option \"%s\": \"%s\"", def->defname,
								defGetString(def)),
						 errdetail("It must be a GUID such as 7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10."),
						 errhint("Both are on the Apps and Keys page of DocuSign: the integration key, and the user's API Username.")));
			jwt_options++;
		}
		else if (strcmp(def->defname, "private_key") == 0)
		{
			/* never echo the key, not even a part of it */
			if (!maestro_private_key_is_valid(defGetString(def)))
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
						 errmsg("invalid value for option \"private_key\""),
						 errdetail("The value is not an RSA private key in PEM form."),
						 errhint("Paste the whole key generated for the integration key, from -----BEGIN to the END line.")));
			jwt_options++;
		}
		else if (strcmp(def->defname, "scopes") == 0)
		{
			const char *p;

			for (p = defGetString(def); *p; p++)
				if (*p < ' ' || *p >= 127 || *p == '"' || *p == '\\')
					ereport(ERROR,
							(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
							 errmsg("invalid value for option \"scopes\": \"%s\"", defGetString(def)),
							 errdetail("Scopes are words separated by spaces, such as \"%s\".", DEFAULT_SCOPES)));
			if (defGetString(def)[0] == '\0')
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
						 errmsg("option \"scopes\" must not be empty")));
		}
		else if (strcmp(def->defname, "ca_file") == 0)
		{
			const char *path = defGetString(def);

			/*
			 * The server process reads this file, and the access() probe
			 * below would tell anyone with USAGE on the wrapper whether a
			 * file exists and is readable by it. So only a superuser names
			 * one; the owner may keep (or drop) what a superuser set, since
			 * the validator sees the whole option list on every ALTER.
			 */
			if (!superuser() && !ca_file_in_use(fcinfo->flinfo->fn_oid, path))
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("permission denied to set option \"ca_file\""),
						 errdetail("Only a superuser may name a file on the database server."),
						 errhint("Ask a superuser to run ALTER SERVER ... OPTIONS (ADD ca_file '...').")));
			if (!is_absolute_path(path))
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
						 errmsg("option \"ca_file\" must be an absolute path")));
			if (superuser() && access(path, R_OK) != 0)
				ereport(ERROR,
						(errcode_for_file_access(),
						 errmsg("could not read the file named by option \"ca_file\": \"%s\": %m", path)));
		}
		else if (strcmp(def->defname, "proxy") == 0)
			validate_proxy_option(defGetString(def));
		else if (strcmp(def->defname, "proxy_user") == 0)
		{
			const char *p;

			/* Basic authentication joins user and password with a colon */
			for (p = defGetString(def); *p; p++)
				if ((unsigned char) *p < ' ' || *p == 127 || *p == ':')
					ereport(ERROR,
							(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
							 errmsg("invalid value for option \"proxy_user\""),
							 errdetail("The user name contains a colon or a control character.")));
			if (defGetString(def)[0] == '\0')
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
						 errmsg("option \"proxy_user\" must not be empty")));
			have_proxy_user = true;
		}
		else if (strcmp(def->defname, "proxy_password") == 0)
			have_proxy_password = true;	/* any text; never echoed */
		else if (strcmp(def->defname, "access_token") == 0)
			have_token = true;
		else if (strcmp(def->defname, "account_id") == 0)
		{
			const char *value = defGetString(def);

			if (!maestro_is_uuid(value))
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
						 errmsg("invalid value for option \"account_id\": \"%s\"", value),
						 errdetail("The account id must be a UUID such as 7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10."),
						 errhint("Use the \"API Account ID\" shown on the Apps and Keys page of DocuSign, not the account number.")));
			have_account = true;
		}
		if (strcmp(def->defname, "access_token") == 0)
			validate_access_token(defGetString(def));
	}

	if (catalog == UserMappingRelationId && jwt_options > 0 && jwt_options < 3)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_OPTION_NAME_NOT_FOUND),
				 errmsg("the JWT grant needs all of integration_key, user_id and private_key"),
				 errhint("Give all three, or use access_token alone.")));
	if (catalog == UserMappingRelationId && jwt_options > 0 && have_token)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
				 errmsg("a user mapping takes either access_token or the JWT grant options, not both")));

	if (catalog == UserMappingRelationId && have_proxy_password && !have_proxy_user)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_OPTION_NAME_NOT_FOUND),
				 errmsg("option \"proxy_password\" needs \"proxy_user\"")));

	if (catalog == ForeignServerRelationId && !have_account)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_OPTION_NAME_NOT_FOUND),
				 errmsg("option \"account_id\" is required for a maestro server"),
				 errhint("Add OPTIONS (account_id '<API Account ID>').")));

	PG_RETURN_VOID();
}

/*
 * Which server to call: maestro.server, or the only server of the maestro
 * wrapper when that GUC is empty.
 */
static ForeignServer *
choose_server(void)
{
	ForeignDataWrapper *fdw;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tuple;
	Oid			found = InvalidOid;
	int			count = 0;

	fdw = GetForeignDataWrapperByName(MAESTRO_FDW_NAME, true);
	if (fdw == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("foreign-data wrapper \"%s\" does not exist", MAESTRO_FDW_NAME),
				 errhint("Run CREATE EXTENSION maestro.")));

	if (maestro_server_name != NULL && maestro_server_name[0] != '\0')
	{
		ForeignServer *server = GetForeignServerByName(maestro_server_name, true);

		if (server == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("server \"%s\" named by maestro.server does not exist",
							maestro_server_name),
					 errhint("Create it with CREATE SERVER %s FOREIGN DATA WRAPPER maestro, or change maestro.server.",
							 quote_identifier(maestro_server_name))));
		if (server->fdwid != fdw->fdwid)
			ereport(ERROR,
					(errcode(ERRCODE_WRONG_OBJECT_TYPE),
					 errmsg("server \"%s\" named by maestro.server does not use the maestro foreign-data wrapper",
							maestro_server_name)));
		return server;
	}

	rel = table_open(ForeignServerRelationId, AccessShareLock);
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	while (HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		Form_pg_foreign_server form = (Form_pg_foreign_server) GETSTRUCT(tuple);

		if (form->srvfdw == fdw->fdwid)
		{
			found = form->oid;
			count++;
		}
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);

	if (count == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("no maestro server exists"),
				 errhint("Create one with CREATE SERVER docusign FOREIGN DATA WRAPPER maestro OPTIONS (account_id '...').")));
	if (count > 1)
		ereport(ERROR,
				(errcode(ERRCODE_AMBIGUOUS_PARAMETER),
				 errmsg("maestro.server is not set and %d maestro servers exist", count),
				 errhint("Choose one with SET maestro.server = '<server name>'.")));

	return GetForeignServer(found);
}

/*
 * The options of the role's own user mapping, else of the PUBLIC one; false
 * when neither exists.
 */
static bool
mapping_options(Oid userid, Oid serverid, List **options, Oid *mapping_id)
{
	HeapTuple	tuple;
	Datum		datum;
	bool		isnull;

	*options = NIL;
	*mapping_id = InvalidOid;
	tuple = SearchSysCache2(USERMAPPINGUSERSERVER,
							ObjectIdGetDatum(userid),
							ObjectIdGetDatum(serverid));
	if (!HeapTupleIsValid(tuple))
		tuple = SearchSysCache2(USERMAPPINGUSERSERVER,
								ObjectIdGetDatum(InvalidOid),
								ObjectIdGetDatum(serverid));
	if (!HeapTupleIsValid(tuple))
		return false;

	*mapping_id = ((Form_pg_user_mapping) GETSTRUCT(tuple))->oid;
	datum = SysCacheGetAttr(USERMAPPINGUSERSERVER, tuple,
							Anum_pg_user_mapping_umoptions, &isnull);
	if (!isnull)
		*options = untransformRelOptions(datum);
	ReleaseSysCache(tuple);
	return true;
}

static char *
option_value(List *options, const char *name)
{
	ListCell   *cell;

	foreach(cell, options)
	{
		DefElem    *def = (DefElem *) lfirst(cell);

		if (strcmp(def->defname, name) == 0)
			return defGetString(def);
	}
	return NULL;
}

static char *
without_trailing_slashes(const char *url)
{
	char	   *copy = pstrdup(url);
	size_t		len = strlen(copy);

	while (len > 0 && copy[len - 1] == '/')
		copy[--len] = '\0';
	return copy;
}

/*
 * The account server that goes with an API host: DocuSign's two
 * environments are known; any other base_url needs auth_url set.
 */
static char *
default_auth_url(const char *base_url)
{
	if (pg_strncasecmp(base_url, "https://api-d.docusign.com", 26) == 0)
		return pstrdup("https://account-d.docusign.com");
	if (pg_strncasecmp(base_url, "https://api.docusign.com", 24) == 0)
		return pstrdup("https://account.docusign.com");
	return NULL;
}

static MaestroConnection *
build_connection(ForeignServer *server, List *mapping, Oid mapping_id)
{
	MaestroConnection *conn = palloc0(sizeof(MaestroConnection));
	char	   *base_url = option_value(server->options, "base_url");
	char	   *auth_url = option_value(server->options, "auth_url");
	char	   *scopes = option_value(server->options, "scopes");

	conn->server_id = server->serverid;
	conn->mapping_id = mapping_id;
	conn->server_name = pstrdup(server->servername);
	conn->account_id = option_value(server->options, "account_id");
	conn->ca_file = option_value(server->options, "ca_file");
	conn->proxy = option_value(server->options, "proxy");
	conn->proxy_user = option_value(mapping, "proxy_user");
	conn->proxy_password = option_value(mapping, "proxy_password");
	conn->base_url = without_trailing_slashes(base_url ? base_url : MAESTRO_DEFAULT_BASE_URL);
	conn->access_token = option_value(mapping, "access_token");

	conn->integration_key = option_value(mapping, "integration_key");
	conn->user_id = option_value(mapping, "user_id");
	conn->private_key = option_value(mapping, "private_key");
	conn->jwt = conn->integration_key && conn->user_id && conn->private_key;
	conn->auth_url = auth_url ? without_trailing_slashes(auth_url)
		: default_auth_url(conn->base_url);
	conn->scopes = pstrdup(scopes ? scopes : DEFAULT_SCOPES);
	if (conn->jwt)
		conn->token_key = maestro_auth_token_key(conn);
	return conn;
}

/*
 * The connection cache. Each entry holds one MaestroConnection laid out
 * in a single chunk (the struct, then its strings), so that a caller gets
 * its own copy with one palloc and memcpy: callers change their copy
 * (auth.c sets access_token), and a copy stays valid when the cache is
 * flushed under it, which can happen whenever invalidations are read.
 */
typedef struct ConnCacheEntry
{
	Oid			userid;
	char	   *server_guc;		/* maestro.server when it was resolved */
	Size		size;			/* of conn, strings included */
	MaestroConnection *conn;
} ConnCacheEntry;

/* enough for the roles and server choices of one session; then start over */
#define CONN_CACHE_MAX	16

static MemoryContext conn_cache_context = NULL;
static ConnCacheEntry conn_cache[CONN_CACHE_MAX];
static int	conn_cache_count = 0;
/* bumped by every flush: a connection resolved across one is not kept */
static uint64 conn_cache_generation = 0;

static void
conn_cache_flush(Datum arg, int cacheid, uint32 hashvalue)
{
	conn_cache_count = 0;
	conn_cache_generation++;
	if (conn_cache_context != NULL)
		MemoryContextReset(conn_cache_context);
}

/* the string fields of MaestroConnection, for the flat copies */
#define CONN_STRING_FIELDS(X) \
	X(server_name) X(base_url) X(account_id) X(ca_file) X(proxy) \
	X(proxy_user) X(proxy_password) X(access_token) X(auth_url) X(scopes) \
	X(integration_key) X(user_id) X(private_key)

/* conn as one chunk in cxt; its size in *size */
static MaestroConnection *
connection_flatten(MemoryContext cxt, const MaestroConnection *conn, Size *size)
{
	Size		total = MAXALIGN(sizeof(MaestroConnection));
	MaestroConnection *flat;
	char	   *p;

#define ADD_SIZE(field) if (conn->field) total += strlen(conn->field) + 1;
	CONN_STRING_FIELDS(ADD_SIZE)
#undef ADD_SIZE
	flat = MemoryContextAlloc(cxt, total);
	*flat = *conn;
	p = (char *) flat + MAXALIGN(sizeof(MaestroConnection));
#define PUT_STRING(field) \
	if (conn->field) \
	{ \
		size_t		len = strlen(conn->field) + 1; \
		memcpy(p, conn->field, len); \
		flat->field = p; \
		p += len; \
	}
	CONN_STRING_FIELDS(PUT_STRING)
#undef PUT_STRING
	*size = total;
	return flat;
}

/* a copy of a flat connection in the current memory context */
static MaestroConnection *
connection_unflatten(const MaestroConnection *flat, Size size)
{
	MaestroConnection *copy = palloc(size);

	memcpy(copy, flat, size);
#define MOVE_STRING(field) \
	if (flat->field) \
		copy->field = (char *) copy + (flat->field - (const char *) flat);
	CONN_STRING_FIELDS(MOVE_STRING)
#undef MOVE_STRING
	return copy;
}

/*
 * The connection for the calling role to the chosen server, resolved and
 * checked from the catalogs; every reason it cannot be had is an error
 * that says what to create or grant.
 */
static MaestroConnection *
resolve_connection(Oid userid)
{
	ForeignServer *server = choose_server();
	MaestroConnection *conn;
	List	   *mapping;
	Oid			mapping_id;

	if (pg_foreign_server_aclcheck(server->serverid, userid, ACL_USAGE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for maestro server \"%s\"", server->servername),
				 errdetail("Role \"%s\" lacks USAGE on the server.",
						   GetUserNameFromId(userid, false)),
				 errhint("A superuser or the server's owner can run GRANT USAGE ON FOREIGN SERVER %s TO %s.",
						 quote_identifier(server->servername),
						 quote_identifier(GetUserNameFromId(userid, false)))));

	if (!mapping_options(userid, server->serverid, &mapping, &mapping_id))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" has no user mapping for maestro server \"%s\"",
						GetUserNameFromId(userid, false), server->servername),
				 errhint("Create one with CREATE USER MAPPING FOR %s SERVER %s OPTIONS (access_token '...').",
						 quote_identifier(GetUserNameFromId(userid, false)),
						 quote_identifier(server->servername))));

	conn = build_connection(server, mapping, mapping_id);

	/* Catalog rows written before the validator existed could lack these. */
	if (conn->account_id == NULL || !maestro_is_uuid(conn->account_id))
		ereport(ERROR,
				(errcode(ERRCODE_FDW_OPTION_NAME_NOT_FOUND),
				 errmsg("maestro server \"%s\" has no valid account_id", server->servername),
				 errhint("Run ALTER SERVER %s OPTIONS (ADD account_id '<API Account ID>').",
						 quote_identifier(server->servername))));
	if (conn->access_token == NULL && !conn->jwt)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("the user mapping for maestro server \"%s\" has no access_token",
						server->servername),
				 errhint("Run ALTER USER MAPPING FOR CURRENT_USER SERVER %s OPTIONS (ADD access_token '...'), or give the JWT grant options integration_key, user_id and private_key.",
						 quote_identifier(server->servername))));
	if (conn->jwt && conn->auth_url == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_OPTION_NAME_NOT_FOUND),
				 errmsg("maestro server \"%s\" needs auth_url for the JWT grant", server->servername),
				 errdetail("Its base_url is not one of DocuSign's, so the account server cannot be derived from it."),
				 errhint("Run ALTER SERVER %s OPTIONS (ADD auth_url 'https://account-d.docusign.com').",
						 quote_identifier(server->servername))));

	return conn;
}

/*
 * The connection for the calling role to the chosen server, in the
 * current memory context: from the cache when nothing it was read from
 * has changed since, else resolved anew (and kept).
 */
MaestroConnection *
maestro_connect(void)
{
	Oid			userid = GetUserId();
	const char *guc = maestro_server_name ? maestro_server_name : "";
	uint64		generation;
	MaestroConnection *conn;
	ConnCacheEntry *entry;
	int			i;

	if (conn_cache_context == NULL)
	{
		conn_cache_context = AllocSetContextCreate(TopMemoryContext,
												   "maestro connection cache",
												   ALLOCSET_SMALL_SIZES);
		CacheRegisterSyscacheCallback(FOREIGNDATAWRAPPEROID, conn_cache_flush, (Datum) 0);
		CacheRegisterSyscacheCallback(FOREIGNSERVEROID, conn_cache_flush, (Datum) 0);
		CacheRegisterSyscacheCallback(USERMAPPINGOID, conn_cache_flush, (Datum) 0);
		/* what USAGE on the server also depends on: memberships, roles */
		CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, conn_cache_flush, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHOID, conn_cache_flush, (Datum) 0);
	}

	/* a change committed by another session since the last call flushes now */
	AcceptInvalidationMessages();
	/* before the look-up: it may read catalogs, and so flush the cache */
	maestro_encoding_prepare();

	for (i = 0; i < conn_cache_count; i++)
	{
		entry = &conn_cache[i];
		/*
		 * USAGE was checked when the entry was made. What it depends on (the
		 * server's ACL and owner, role memberships, roles) flushes the cache
		 * when it changes, seen by the AcceptInvalidationMessages above.
		 */
		if (entry->userid == userid && strcmp(entry->server_guc, guc) == 0)
			return connection_unflatten(entry->conn, entry->size);
	}

	generation = conn_cache_generation;
	conn = resolve_connection(userid);

	/* not kept when a flush came while it was read: it may be stale */
	if (generation == conn_cache_generation)
	{
		if (conn_cache_count == CONN_CACHE_MAX)
			conn_cache_flush((Datum) 0, 0, 0);
		entry = &conn_cache[conn_cache_count];
		entry->userid = userid;
		entry->server_guc = MemoryContextStrdup(conn_cache_context, guc);
		entry->conn = connection_flatten(conn_cache_context, conn, &entry->size);
		conn_cache_count++;
	}
	return conn;
}

/*
 * The connection for a stored (server, role) pair, as the worker needs it
 * at send time: privileges may have changed since the request was queued.
 * Never raises; returns NULL and sets *problem instead.
 */
MaestroConnection *
maestro_connection_for(Oid serverid, Oid userid, char **problem)
{
	ForeignServer *server = GetForeignServerExtended(serverid, FSV_MISSING_OK);
	const char *role = GetUserNameFromId(userid, true);
	MaestroConnection *conn;
	List	   *mapping;
	Oid			mapping_id;

	*problem = NULL;
	if (server == NULL)
		*problem = psprintf("maestro server with OID %u no longer exists", serverid);
	else if (role == NULL)
		*problem = psprintf("role with OID %u no longer exists", userid);
	else if (pg_foreign_server_aclcheck(serverid, userid, ACL_USAGE) != ACLCHECK_OK)
		*problem = psprintf("role \"%s\" no longer has USAGE on maestro server \"%s\"",
							role, server->servername);
	else if (!mapping_options(userid, serverid, &mapping, &mapping_id))
		*problem = psprintf("role \"%s\" no longer has a user mapping for maestro server \"%s\"",
							role, server->servername);
	if (*problem)
		return NULL;

	conn = build_connection(server, mapping, mapping_id);
	maestro_encoding_prepare();
	if (conn->account_id == NULL || !maestro_is_uuid(conn->account_id))
		*problem = psprintf("maestro server \"%s\" has no valid account_id", server->servername);
	else if (conn->access_token == NULL && !conn->jwt)
		*problem = psprintf("the user mapping of role \"%s\" for maestro server \"%s\" has no access_token",
							role, server->servername);
	else if (conn->jwt && conn->auth_url == NULL)
		*problem = psprintf("maestro server \"%s\" needs auth_url for the JWT grant",
							server->servername);
	return *problem ? NULL : conn;
}

/* A copy of a connection whose strings all live in the current context. */
MaestroConnection *
maestro_connection_copy(const MaestroConnection *conn)
{
	Size		size;

	return connection_flatten(CurrentMemoryContext, conn, &size);
}
