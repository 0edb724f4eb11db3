/*-------------------------------------------------------------------------
 *
 * version.c
 *		Whether the extension's SQL objects in this database are the ones
 *		this library was built for.
 *
 * The library and the SQL objects are installed apart: `make install` (or a
 * package upgrade) replaces maestro.so at once, while each database keeps
 * the SQL objects of the version it was created or last updated to, until
 * someone runs ALTER EXTENSION maestro UPDATE. A library that runs against
 * older objects may read an argument as a type the SQL declares otherwise,
 * or look for a table, column or function that is not there yet; so every
 * SQL-callable function and the worker ask here first, and refuse with an
 * error that says what to run.
 *
 * The version comes from one place, default_version in maestro.control,
 * which the Makefile passes as MAESTRO_VERSION. A backend reads
 * pg_extension.extversion once and remembers only a match: a mismatch is
 * looked up again at the next call, so the ALTER EXTENSION UPDATE another
 * session commits is seen at once. A match is forgotten when any function
 * changes (DROP EXTENSION, CREATE EXTENSION ... VERSION, an update), which
 * a pg_proc invalidation tells every backend.
 *
 * maestro_fdw_validator does not ask: CREATE SERVER and ALTER SERVER must
 * keep working on older objects, and the update itself runs it.
 *
 * src/version.c
 *
 *-------------------------------------------------------------------------
 */
#include "maestro.h"

#include <ctype.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

/* this backend has seen the installed SQL objects match the library */
static bool version_matched = false;
static bool callback_registered = false;

static void
forget_match(Datum arg, int cacheid, uint32 hashvalue)
{
	version_matched = false;
}

/*
 * maestro's row of pg_extension in this database: false when maestro is
 * not installed here. Each output may be NULL: *extension gets its oid,
 * *schema its namespace, *version its extversion (palloc'd). The one
 * catalog look-up for the version check here and the schema queue.c, the
 * worker and retention use (get_extension_schema is static before
 * PostgreSQL 16).
 */
bool
maestro_extension_row(Oid *extension, Oid *schema, char **version)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	bool		found;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("maestro"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	found = HeapTupleIsValid(tuple);
	if (extension)
		*extension = found ? ((Form_pg_extension) GETSTRUCT(tuple))->oid : InvalidOid;
	if (schema)
		*schema = found ? ((Form_pg_extension) GETSTRUCT(tuple))->extnamespace : InvalidOid;
	if (version)
	{
		bool		isnull = true;
		Datum		d = found ? heap_getattr(tuple, Anum_pg_extension_extversion,
											 RelationGetDescr(rel), &isnull) : (Datum) 0;

		*version = isnull ? NULL : text_to_cstring(DatumGetTextPP(d));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * The next number of a dotted version; false if the part is not a number
 * (a hand-made "0.2dev"). A version that has run out reads as zeros.
 */
static bool
next_part(const char **s, long *n)
{
	char	   *end;

	*n = 0;
	if (**s == '\0')
		return true;
	if (!isdigit((unsigned char) **s))
		return false;
	*n = strtol(*s, &end, 10);
	if (*end == '.')
		end++;
	else if (*end != '\0')
		return false;
	*s = end;
	return true;
}

/*
 * Compare dotted versions: <0, 0, >0. One that is not made of numbers
 * compares as older, so that the hint points at ALTER EXTENSION UPDATE.
 */
static int
compare_versions(const char *a, const char *b)
{
	while (*a || *b)
	{
		long		na;
		long		nb;

		if (!next_part(&a, &na))
			return -1;
		if (!next_part(&b, &nb))
			return 1;
		if (na != nb)
			return na < nb ? -1 : 1;
	}
	return 0;
}

/*
 * Whether the objects match: true also when maestro is not installed in
 * this database (nothing to compare; the callers find out what is missing
 * themselves) and while maestro's own CREATE or ALTER EXTENSION script runs
 * (its extversion is updated only after the script, and the script may call
 * the library). On a mismatch *installed gets the SQL objects' version.
 */
static bool
version_matches(char **installed)
{
	Oid			extension;
	char	   *version;

	if (version_matched)
		return true;

	if (!callback_registered)
	{
		CacheRegisterSyscacheCallback(PROCOID, forget_match, (Datum) 0);
		callback_registered = true;
	}

	(void) maestro_extension_row(&extension, NULL, &version);
	if (version == NULL)
		return true;
	if (creating_extension && CurrentExtensionObject == extension)
		return true;
	if (strcmp(version, MAESTRO_VERSION) == 0)
	{
		version_matched = true;
		return true;
	}
	*installed = version;
	return false;
}

/*
 * Raise the error unless the SQL objects match the library. A declaration
 * (MAESTRO_CHECK_VERSION in maestro.h) calls it, so that it can come first
 * in a function, before any initializer reads an argument. Returns true.
 *
 * SQLSTATE 0A000 feature_not_supported: this library does not support
 * objects of another version. Not 55000 object_not_in_prerequisite_state,
 * which maestro raises for Maestro's 409 conflicts: a handler written for
 * "already paused" must not swallow an extension that needs an update.
 */
bool
maestro_check_version(void)
{
	char	   *installed = NULL;

	if (version_matches(&installed))
		return true;
	if (compare_versions(installed, MAESTRO_VERSION) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("maestro's SQL objects are at version %s but the library is %s",
						installed, MAESTRO_VERSION),
				 errdetail("The extension in this database was created or last updated for an older library."),
				 errhint("Run ALTER EXTENSION maestro UPDATE.")));
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("maestro's SQL objects are at version %s but the library is %s",
					installed, MAESTRO_VERSION),
			 errdetail("The SQL objects are newer than the library this server has loaded."),
			 errhint("Install the library of maestro %s and restart the server.", installed)));
	return false;				/* not reached */
}

/*
 * The worker's check, in a transaction of its own, before it touches the
 * queue: on a mismatch it logs once and the caller exits with code 0, so
 * that the postmaster does not restart it; a commit that queues work (which
 * needs the update first) starts it again.
 */
bool
maestro_worker_version_ok(void)
{
	char	   *installed = NULL;
	bool		ok;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	ok = version_matches(&installed);
	if (!ok)
		ereport(WARNING,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("maestro's SQL objects are at version %s but the library is %s",
						installed, MAESTRO_VERSION),
				 errdetail("The trigger queue worker of database \"%s\" exits without sending; queued requests stay queued.",
						   maestro_database_name),
				 compare_versions(installed, MAESTRO_VERSION) < 0
				 ? errhint("Run ALTER EXTENSION maestro UPDATE in database \"%s\".",
						   maestro_database_name)
				 : errhint("Install the library of maestro %s and restart the server.",
						   installed)));
	PopActiveSnapshot();
	CommitTransactionCommand();
	return ok;
}
