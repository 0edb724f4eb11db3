/* maestro--0.1--0.2.sql: update maestro from 0.1 to 0.2 */

\echo Use "ALTER EXTENSION maestro UPDATE TO '0.2'" to load this file. \quit

-- Every SQL change after 0.1 goes here, in the order it was made; make
-- generates maestro--0.2.sql (fresh installs) from 0.1 and this file.

-- release-pkg (issue 8): the worker does not run against SQL objects older
-- than the library, so requests queued before this update may be waiting.
-- Wake it at commit (a fresh install has none queued and wakes nobody).
DO $$
BEGIN
  IF EXISTS (SELECT FROM @extschema@.maestro_trigger_requests WHERE state IN ('queued', 'sending')) THEN
    PERFORM @extschema@.maestro_wake();
  END IF;
EXCEPTION WHEN object_not_in_prerequisite_state THEN
  NULL;  -- maestro is not preloaded: no worker to wake; they go at the next start
END
$$;

-- ---------------------------------------------------------------------
-- security: the extension's SQL and PL/pgSQL functions run with a pinned
-- search_path (issue 9, item 9)
--
-- maestro_enqueue_trigger() runs as whoever inserts the row, with that
-- role's search_path. In 0.1 it called maestro_trigger_async() unqualified,
-- so a role able to create functions in a schema earlier in that path
-- could plant its own maestro_trigger_async(uuid, jsonb, text) and have it
-- run with the inserting role's rights (the CVE-2018-1058 pattern).
-- Qualifying the extension's own objects is not enough: a planted function
-- that matches a call better than the built-in does (to_jsonb(the
-- table's row type) beside pg_catalog's to_jsonb(anyelement)), or a
-- planted operator, wins too. So every SQL and PL/pgSQL function of the
-- extension now runs with search_path = pg_catalog, pg_temp, and calls the
-- extension's objects through @extschema@ (maestro is not relocatable, so
-- that is fixed at install). Error messages now name the table with its schema.
--
-- maestro_sync() and maestro_stuck_instances() already qualified every
-- object of the extension; they only get the pinned path. The views
-- (maestro_all_instances, maestro_stats, ...) need nothing: a view stores
-- its query with the functions and operators resolved to OIDs when it was
-- created, so the caller's search_path is never consulted.
-- The C functions name their SQL with the schema and run it with a
-- pinned search_path already (queue.c).
-- ---------------------------------------------------------------------

CREATE OR REPLACE FUNCTION maestro_enqueue_trigger()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  workflow uuid;
  mapping jsonb;
  new_row jsonb;
  inputs jsonb := '{}';
  field text;
  source jsonb;
  instance_name text;
  placeholder text;
BEGIN
  IF TG_LEVEL <> 'ROW' OR TG_WHEN <> 'AFTER' OR TG_OP NOT IN ('INSERT', 'UPDATE') THEN
    RAISE EXCEPTION 'trigger "%" on table %: maestro_enqueue_trigger() must be AFTER INSERT (or UPDATE) FOR EACH ROW',
      TG_NAME, TG_RELID::regclass
      USING ERRCODE = 'invalid_object_definition';
  END IF;
  IF TG_NARGS NOT IN (2, 3) THEN
    RAISE EXCEPTION 'trigger "%" on table %: maestro_enqueue_trigger() takes 2 or 3 arguments, not %',
      TG_NAME, TG_RELID::regclass, TG_NARGS
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'EXECUTE FUNCTION maestro_enqueue_trigger(''<workflow uuid>'', ''{"Input": "column", ...}'' [, ''instance name with {column}''])';
  END IF;

  BEGIN
    workflow := TG_ARGV[0]::uuid;
  EXCEPTION WHEN invalid_text_representation THEN
    RAISE EXCEPTION 'trigger "%" on table %: the workflow id % is not a uuid',
      TG_NAME, TG_RELID::regclass, quote_literal(TG_ARGV[0])
      USING ERRCODE = 'invalid_parameter_value';
  END;
  BEGIN
    mapping := TG_ARGV[1]::jsonb;
  EXCEPTION WHEN invalid_text_representation THEN
    mapping := NULL;
  END;
  IF mapping IS NULL OR jsonb_typeof(mapping) <> 'object' THEN
    RAISE EXCEPTION 'trigger "%" on table %: the input mapping must be a JSON object',
      TG_NAME, TG_RELID::regclass
      USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('Got %s.', quote_literal(TG_ARGV[1])),
            HINT = 'Map each trigger input to a column: ''{"Email": "email", "Name": "full_name"}''.';
  END IF;

  new_row := to_jsonb(NEW);
  FOR field, source IN SELECT key, value FROM jsonb_each(mapping) LOOP
    IF jsonb_typeof(source) <> 'string' OR NOT new_row ? (source #>> '{}') THEN
      RAISE EXCEPTION 'trigger "%" on table %: input "%" maps to %, which is not a column of the table',
        TG_NAME, TG_RELID::regclass, field, source
        USING ERRCODE = 'undefined_column';
    END IF;
    inputs := inputs || jsonb_build_object(field, new_row -> (source #>> '{}'));
  END LOOP;

  IF TG_NARGS = 3 THEN
    instance_name := TG_ARGV[2];
    FOR placeholder IN SELECT DISTINCT m[1] FROM regexp_matches(TG_ARGV[2], '\{([^{}]+)\}', 'g') AS m LOOP
      IF NOT new_row ? placeholder THEN
        RAISE EXCEPTION 'trigger "%" on table %: the instance name refers to {%}, which is not a column of the table',
          TG_NAME, TG_RELID::regclass, placeholder
          USING ERRCODE = 'undefined_column';
      END IF;
      instance_name := replace(instance_name, '{' || placeholder || '}',
                               coalesce(new_row ->> placeholder, ''));
    END LOOP;
  END IF;

  PERFORM @extschema@.maestro_trigger_async(workflow, inputs, instance_name);
  RETURN NULL;
END
$$;

ALTER FUNCTION maestro_sync(uuid) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION maestro_stuck_instances(interval) SET search_path = pg_catalog, pg_temp;
-- Issue 11, points 3 and 4 (api-proxy-rates): DocuSign's rate-limit headers
-- as last seen per server. (The proxy options need no SQL: the validator
-- knows them.)
CREATE FUNCTION maestro_rate_limits(
  OUT server text, OUT "limit" bigint, OUT remaining bigint, OUT reset_at timestamptz,
  OUT burst_limit bigint, OUT burst_remaining bigint, OUT observed_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME'
LANGUAGE C VOLATILE PARALLEL SAFE;

COMMENT ON FUNCTION maestro_rate_limits() IS
'the rate-limit headers of the last API answer that carried any, per server of this database; what the view maestro_rate_limits shows';

CREATE VIEW maestro_rate_limits AS SELECT * FROM maestro_rate_limits();

COMMENT ON VIEW maestro_rate_limits IS
'per server, the last X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset (as reset_at), X-BurstLimit-Limit and X-BurstLimit-Remaining Maestro sent, and when (observed_at); NULL where a header was absent. While remaining is 0 and reset_at lies ahead (trusted for at most an hour), calls to the server fail at once with SQLSTATE 53400 and the worker holds its requests; server-wide when maestro is preloaded, else this backend''s';
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
SET search_path = pg_catalog, pg_temp
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
