/* maestro--0.1--0.2.sql: update maestro from 0.1 to 0.2 */

\echo Use "ALTER EXTENSION maestro UPDATE TO '0.2'" to load this file. \quit

-- Every SQL change after 0.1 goes here, in the order it was made; make
-- generates maestro--0.2.sql (fresh installs) from 0.1 and this file.

-- ---------------------------------------------------------------------------
-- The account-wide instance list (issue 11, point 1): GET /workflow-instances,
-- paged; maestro_all_instances and maestro_sync() walk it instead of calling
-- once per workflow, and fall back to that where the API lacks it.
-- ---------------------------------------------------------------------------

CREATE FUNCTION maestro_account_instances(status text DEFAULT NULL, workflow_ids uuid[] DEFAULT NULL,
                                          started_by text DEFAULT NULL)
RETURNS SETOF maestro_workflow_instance
AS 'MODULE_PATHNAME'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION maestro_account_instances(text, uuid[], text) IS
'the instances of every workflow of the account (GET /workflow-instances), following every page; status, workflow_ids and started_by filter on the API side; one API call per page (maestro.page_size)';

CREATE FUNCTION maestro_all_instances()
RETURNS SETOF maestro_workflow_instance
AS 'MODULE_PATHNAME'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION maestro_all_instances() IS
'the instances of every workflow: the account-wide list page by page, or, where the API lacks it (404), one call per workflow plus one';

CREATE OR REPLACE VIEW maestro_all_instances AS
  SELECT i.* FROM maestro_all_instances() AS i;

COMMENT ON VIEW maestro_all_instances IS
'the instances of every workflow; each query costs one API call per page of the account-wide list (or, where the API lacks that list, one per workflow plus one)';

CREATE OR REPLACE FUNCTION maestro_sync(workflow_id uuid DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
  changed integer;
BEGIN
  -- One statement, in the caller's transaction: an error half-way (a
  -- timeout, a 429, a malformed page) rolls back every change, and the
  -- mirror stays as it was. Its parts all see the mirror as it was before
  -- the upsert, and the fetched rows spill to disk beyond work_mem. Every
  -- workflow is one paged walk of the account-wide list (or, where the API
  -- lacks it, one call per workflow, inside maestro_all_instances()).
  EXECUTE format($sync$
    WITH seen AS MATERIALIZED (
      SELECT * FROM %s i WHERE i.id IS NOT NULL AND i.workflow_id IS NOT NULL),
    before AS MATERIALIZED (
      SELECT s.workflow_id, s.id, s.workflow_status AS new_status,
             m.id IS NULL AS is_new, m.workflow_status AS old_status,
             -- the account-wide list names the workflow in each instance,
             -- the per-workflow list does not: not a change of the instance
             m.raw - '{workflow_id,workflow_definition_id}'::text[]
               IS DISTINCT FROM s.raw - '{workflow_id,workflow_definition_id}'::text[] AS differs
      FROM seen s
           LEFT JOIN @extschema@.maestro_synced_instances m
             ON m.workflow_id = s.workflow_id AND m.id = s.id),
    -- a new instance, or a new status, is an event, announced once
    events AS (
      INSERT INTO @extschema@.maestro_instance_events (workflow_id, instance_id, old_status, new_status)
      SELECT b.workflow_id, b.id, b.old_status, b.new_status
      FROM before b
      WHERE b.is_new OR b.old_status IS DISTINCT FROM b.new_status
      RETURNING maestro_instance_events.workflow_id, instance_id, old_status, new_status),
    notified AS (
      SELECT count(pg_notify('maestro_instance',
                             json_build_object('workflow_id', e.workflow_id, 'instance_id', e.instance_id,
                                               'old_status', e.old_status, 'new_status', e.new_status)::text)) AS notifications
      FROM events e),
    upserted AS (
      INSERT INTO @extschema@.maestro_synced_instances AS m
      SELECT s.*, now(), now() FROM seen s
      ON CONFLICT ON CONSTRAINT maestro_synced_instances_pkey DO UPDATE SET
        name = EXCLUDED.name, workflow_status = EXCLUDED.workflow_status,
        template_id = EXCLUDED.template_id, account_id = EXCLUDED.account_id,
        started_at = EXCLUDED.started_at, started_by = EXCLUDED.started_by,
        started_by_name = EXCLUDED.started_by_name, started_by_role = EXCLUDED.started_by_role,
        ended_at = EXCLUDED.ended_at, expires_at = EXCLUDED.expires_at,
        last_modified_at = EXCLUDED.last_modified_at, canceled_at = EXCLUDED.canceled_at,
        canceled_by = EXCLUDED.canceled_by, trigger_inputs = EXCLUDED.trigger_inputs,
        total_steps = EXCLUDED.total_steps, last_completed_step = EXCLUDED.last_completed_step,
        last_completed_step_name = EXCLUDED.last_completed_step_name, tags = EXCLUDED.tags,
        metadata = EXCLUDED.metadata, raw = EXCLUDED.raw, last_seen_at = now()
      RETURNING 1)
    -- changed: new, or any field differs from what the mirror held
    -- (reading notified makes the notifications happen; the INSERTs always run)
    SELECT (SELECT count(*) FROM before b WHERE b.is_new OR b.differs)
    FROM notified
    $sync$,
    CASE WHEN workflow_id IS NULL THEN '@extschema@.maestro_all_instances()'
         ELSE '@extschema@.maestro_instances($1)' END)
  INTO changed
  USING workflow_id;
  RETURN changed;
END
$$;

COMMENT ON FUNCTION maestro_sync(uuid) IS
'brings maestro_synced_instances up to date with one workflow''s instances, or every workflow''s (one paged walk of the account-wide list); records status changes in maestro_instance_events; returns how many instances were new or changed';
