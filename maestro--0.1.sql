/* maestro--0.1.sql: the SQL surface of the maestro extension */

\echo Use "CREATE EXTENSION maestro" to load this file. \quit

-- Configuration: a server per Maestro account, a user mapping per role.

CREATE FUNCTION maestro_fdw_validator(text[], oid)
RETURNS void
AS 'MODULE_PATHNAME'
LANGUAGE C STRICT;

COMMENT ON FUNCTION maestro_fdw_validator(text[], oid) IS
'checks the options of maestro servers (base_url, account_id) and user mappings (access_token)';

CREATE FOREIGN DATA WRAPPER maestro
  VALIDATOR maestro_fdw_validator;

COMMENT ON FOREIGN DATA WRAPPER maestro IS
'DocuSign Maestro accounts: CREATE SERVER ... OPTIONS (base_url, account_id); CREATE USER MAPPING ... OPTIONS (access_token)';

-- Workflows

CREATE FUNCTION maestro_workflows(status text DEFAULT NULL)
RETURNS TABLE (
  id uuid,
  name text,
  account_id uuid,
  status text,
  created_at timestamptz,
  created_by text,
  modified_at timestamptz,
  modified_by text,
  raw jsonb)
AS 'MODULE_PATHNAME'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION maestro_workflows(text) IS
'the workflows of the account (GET /workflows), optionally only those with the given status (active, inactive, publishing, unpublishing, archived, archiving)';

CREATE FUNCTION maestro_trigger_requirements(workflow_id uuid)
RETURNS jsonb
AS 'MODULE_PATHNAME'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION maestro_trigger_requirements(uuid) IS
'what triggering the workflow requires (GET /workflows/{id}/trigger-requirements), as returned by Maestro';

CREATE FUNCTION maestro_trigger_inputs(workflow_id uuid)
RETURNS TABLE (
  field_name text,
  field_data_type text,
  default_value jsonb)
AS 'MODULE_PATHNAME'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION maestro_trigger_inputs(uuid) IS
'the trigger inputs the workflow takes, one row per field (from its trigger requirements)';

CREATE FUNCTION maestro_trigger(workflow_id uuid, inputs jsonb, instance_name text DEFAULT NULL,
                                OUT instance_id uuid, OUT instance_url text)
RETURNS record
AS 'MODULE_PATHNAME'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION maestro_trigger(uuid, jsonb, text) IS
'starts an instance of the workflow now (POST /workflows/{id}/actions/trigger) and returns its id and URL; never retried; the URL is a credential, do not log it; a name is generated when none is given';

CREATE FUNCTION maestro_pause(workflow_id uuid)
RETURNS text
AS 'MODULE_PATHNAME'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION maestro_pause(uuid) IS
'stops the workflow from accepting new instances (running ones go on); returns the new status, "paused"';

CREATE FUNCTION maestro_resume(workflow_id uuid)
RETURNS text
AS 'MODULE_PATHNAME'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION maestro_resume(uuid) IS
'lets a paused workflow accept new instances again; returns the new status, "active"';

-- Instances

CREATE TYPE maestro_workflow_instance AS (
  workflow_id uuid,
  id uuid,
  name text,
  workflow_status text,
  template_id uuid,
  account_id uuid,
  started_at timestamptz,
  started_by text,
  started_by_name text,
  started_by_role text,
  ended_at timestamptz,
  expires_at timestamptz,
  last_modified_at timestamptz,
  canceled_at timestamptz,
  canceled_by text,
  trigger_inputs jsonb,
  total_steps integer,
  last_completed_step integer,
  last_completed_step_name text,
  tags text[],
  metadata jsonb,
  raw jsonb);

COMMENT ON TYPE maestro_workflow_instance IS
'one workflow instance as Maestro reports it; raw keeps the whole object, fields the API adds later included';

CREATE FUNCTION maestro_instances(workflow_id uuid)
RETURNS SETOF maestro_workflow_instance
AS 'MODULE_PATHNAME'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION maestro_instances(uuid) IS
'the instances of one workflow (GET /workflows/{id}/instances)';

CREATE FUNCTION maestro_instance(workflow_id uuid, instance_id uuid)
RETURNS maestro_workflow_instance
AS 'MODULE_PATHNAME'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION maestro_instance(uuid, uuid) IS
'one instance of a workflow (GET /workflows/{id}/instances/{instance_id})';

CREATE FUNCTION maestro_cancel(workflow_id uuid, instance_id uuid)
RETURNS text
AS 'MODULE_PATHNAME'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION maestro_cancel(uuid, uuid) IS
'cancels a running instance (POST .../instances/{id}/actions/cancel); returns Maestro''s message';

CREATE VIEW maestro_all_instances AS
  SELECT i.*
    FROM maestro_workflows() AS w
         CROSS JOIN LATERAL maestro_instances(w.id) AS i;

COMMENT ON VIEW maestro_all_instances IS
'the instances of every workflow; each query costs one API call per workflow plus one';
