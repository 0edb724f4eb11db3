/*-------------------------------------------------------------------------
 *
 * arguments.c
 *		Checks of SQL arguments shared by the synchronous functions
 *		(functions.c) and the trigger queue (queue.c).
 *
 * src/arguments.c
 *
 *-------------------------------------------------------------------------
 */
#include "maestro.h"

#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

/*
 * What uuid_out() writes (lower-case 8-4-4-4-12), without a function call
 * through fmgr and a StringInfo: formatted once or twice per trigger call.
 */
static char *
uuid_text(const pg_uuid_t *uuid)
{
	static const char hex[] = "0123456789abcdef";
	char	   *text = palloc(2 * UUID_LEN + 5);
	char	   *p = text;
	int			i;

	for (i = 0; i < UUID_LEN; i++)
	{
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = hex[uuid->data[i] >> 4];
		*p++ = hex[uuid->data[i] & 0x0F];
	}
	*p = '\0';
	return text;
}

/* Arguments are declared non-strict so that a NULL is an error, not a no-op. */
char *
maestro_uuid_argument(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name)));
	return uuid_text(PG_GETARG_UUID_P(argno));
}

/*
 * The API requires an instance name. Without one we name the instance after
 * who started it, from where and when, so that it can be found again in
 * DocuSign's own UI.
 */
static char *
default_instance_name(void)
{
	return psprintf("%s@%s %s",
					GetUserNameFromId(GetUserId(), false),
					get_database_name(MyDatabaseId),
					timestamptz_to_str(GetCurrentTimestamp()));
}

/*
 * The arguments maestro_trigger and maestro_trigger_async share: a workflow
 * id, inputs that are a JSON object, and a non-empty instance name or NULL
 * for a generated one.
 */
void
maestro_check_trigger_args(FunctionCallInfo fcinfo, Jsonb **inputs, char **instance_name)
{
	/* only its presence: the callers format it themselves when they need it */
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", "workflow_id")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("inputs must not be null"),
				 errhint("Pass '{}' for a workflow that takes no inputs.")));
	*inputs = PG_GETARG_JSONB_P(1);
	if (!JB_ROOT_IS_OBJECT(*inputs))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("inputs must be a JSON object"),
				 errdetail("The value given is a JSON %s.",
						   JB_ROOT_IS_SCALAR(*inputs) ? "scalar" : "array"),
				 errhint("Map each trigger input's field_name to its value, e.g. '{\"Email\": \"ada@example.com\"}'; maestro_trigger_inputs(workflow_id) lists the fields.")));

	if (PG_ARGISNULL(2))
		*instance_name = default_instance_name();
	else
	{
		*instance_name = text_to_cstring(PG_GETARG_TEXT_PP(2));
		if ((*instance_name)[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("instance_name must not be empty"),
					 errhint("Pass NULL to have a name generated.")));
	}
}
