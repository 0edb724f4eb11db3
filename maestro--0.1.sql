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

-- The trigger queue: start workflows from database triggers

CREATE TABLE maestro_trigger_requests (
  id bigserial PRIMARY KEY,
  state text NOT NULL DEFAULT 'queued'
    CHECK (state IN ('queued', 'sending', 'done', 'failed')),
  server_id oid NOT NULL,
  requested_by regrole NOT NULL,
  workflow_id uuid NOT NULL,
  inputs jsonb NOT NULL,
  instance_name text NOT NULL,
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  verify_before_send boolean NOT NULL DEFAULT false,
  http_status integer,
  last_error text,
  instance_id uuid,
  instance_url text,
  created_at timestamptz NOT NULL DEFAULT now(),
  sent_at timestamptz,
  done_at timestamptz);

CREATE INDEX maestro_trigger_requests_due
  ON maestro_trigger_requests (next_attempt_at, id) WHERE state = 'queued';
CREATE INDEX maestro_trigger_requests_sending
  ON maestro_trigger_requests (id) WHERE state = 'sending';

COMMENT ON TABLE maestro_trigger_requests IS
'trigger requests queued by maestro_trigger_async, one row each: queued -> sending -> done or failed; each role sees only its own';
COMMENT ON COLUMN maestro_trigger_requests.server_id IS 'the maestro server (pg_foreign_server.oid) the request goes to';
COMMENT ON COLUMN maestro_trigger_requests.requested_by IS 'the role whose user mapping sends the request';
COMMENT ON COLUMN maestro_trigger_requests.instance_name IS 'the name sent to Maestro; it ends in [mq <id>-<tag>], by which the worker finds the instance after an uncertain send';
COMMENT ON COLUMN maestro_trigger_requests.verify_before_send IS 'an earlier send may have reached Maestro: the worker looks the instance up by name before sending again';
COMMENT ON COLUMN maestro_trigger_requests.instance_url IS 'the participant URL Maestro returned; it carries a secret';
COMMENT ON COLUMN maestro_trigger_requests.sent_at IS 'when the last POST left; while state is sending, when the worker claimed the request';

-- Rows are written only by the functions below, as the extension's owner;
-- a role reads its own requests and nothing else.
REVOKE ALL ON maestro_trigger_requests FROM PUBLIC;
GRANT SELECT ON maestro_trigger_requests TO PUBLIC;
REVOKE ALL ON SEQUENCE maestro_trigger_requests_id_seq FROM PUBLIC;
ALTER TABLE maestro_trigger_requests ENABLE ROW LEVEL SECURITY;
CREATE POLICY maestro_trigger_requests_own ON maestro_trigger_requests
  FOR SELECT USING (requested_by = current_user::text::regrole);

-- pg_dump keeps the queue
SELECT pg_catalog.pg_extension_config_dump('maestro_trigger_requests', '');
SELECT pg_catalog.pg_extension_config_dump('maestro_trigger_requests_id_seq', '');

CREATE FUNCTION maestro_trigger_async(workflow_id uuid, inputs jsonb, instance_name text DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION maestro_trigger_async(uuid, jsonb, text) IS
'queues a trigger of the workflow in the current transaction and returns the request id; the worker sends it after commit, never if the transaction rolls back';

CREATE FUNCTION maestro_retry(request_id bigint)
RETURNS void
AS 'MODULE_PATHNAME'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION maestro_retry(bigint) IS
'queues one of your failed trigger requests again';

CREATE FUNCTION maestro_wake()
RETURNS void
AS 'MODULE_PATHNAME'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION maestro_wake() IS
'wakes the worker at commit; needed only after COMMIT PREPARED of a transaction that queued requests';

CREATE FUNCTION maestro_enqueue_trigger()
RETURNS trigger
LANGUAGE plpgsql
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

  PERFORM maestro_trigger_async(workflow, inputs, instance_name);
  RETURN NULL;
END
$$;

COMMENT ON FUNCTION maestro_enqueue_trigger() IS
'row trigger: queues a trigger of the workflow (1st argument) with inputs taken from the new row''s columns (2nd argument, {"Input": "column"}), optionally named by a template (3rd argument, "Onboard {email}")';

-- Reporting without API calls: a local mirror of the instances

CREATE TABLE maestro_synced_instances (
  workflow_id uuid NOT NULL,
  id uuid NOT NULL,
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
  raw jsonb,
  first_seen_at timestamptz NOT NULL,
  last_seen_at timestamptz NOT NULL,
  PRIMARY KEY (workflow_id, id));

CREATE INDEX maestro_synced_instances_status
  ON maestro_synced_instances (workflow_status, workflow_id);

COMMENT ON TABLE maestro_synced_instances IS
'the last-seen state of every instance, as maestro_sync() found it; query it instead of maestro_all_instances to spare the API quota';

CREATE TABLE maestro_instance_events (
  id bigserial PRIMARY KEY,
  workflow_id uuid NOT NULL,
  instance_id uuid NOT NULL,
  old_status text,
  new_status text,
  seen_at timestamptz NOT NULL DEFAULT now());

CREATE INDEX maestro_instance_events_instance
  ON maestro_instance_events (workflow_id, instance_id, seen_at);

COMMENT ON TABLE maestro_instance_events IS
'each status change maestro_sync() saw: a new instance (old_status NULL), or In Progress -> Completed, Canceled, Failed, ...; announced on channel maestro_instance';

-- the mirror holds the account's data: its owner grants who may read it
REVOKE ALL ON maestro_synced_instances, maestro_instance_events FROM PUBLIC;
REVOKE ALL ON SEQUENCE maestro_instance_events_id_seq FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('maestro_synced_instances', '');
SELECT pg_catalog.pg_extension_config_dump('maestro_instance_events', '');
SELECT pg_catalog.pg_extension_config_dump('maestro_instance_events_id_seq', '');

CREATE FUNCTION maestro_sync(workflow_id uuid DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
  workflows uuid[];
  wf uuid;
  changed integer := 0;
  n integer;
BEGIN
  IF workflow_id IS NULL THEN
    SELECT array_agg(w.id) INTO workflows FROM @extschema@.maestro_workflows() w;
  ELSE
    workflows := ARRAY[workflow_id];
  END IF;

  -- All in the caller's transaction: an error half-way (a timeout, a 429,
  -- a malformed page) rolls back every change, and the mirror stays as it
  -- was. One statement per workflow: its parts all see the mirror as it was
  -- before the upsert, and the fetched rows spill to disk beyond work_mem.
  FOREACH wf IN ARRAY coalesce(workflows, '{}') LOOP
    WITH seen AS MATERIALIZED (
      SELECT * FROM @extschema@.maestro_instances(wf) i WHERE i.id IS NOT NULL),
    before AS MATERIALIZED (
      SELECT s.workflow_id, s.id, s.workflow_status AS new_status,
             m.id IS NULL AS is_new, m.workflow_status AS old_status,
             m.raw IS DISTINCT FROM s.raw AS differs
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
    INTO n
    FROM notified;
    changed := changed + n;
  END LOOP;
  RETURN changed;
END
$$;

COMMENT ON FUNCTION maestro_sync(uuid) IS
'brings maestro_synced_instances up to date with one workflow''s instances, or every workflow''s; records status changes in maestro_instance_events; returns how many instances were new or changed';

-- from a queued request to its instance's current state
CREATE VIEW maestro_trigger_request_instances WITH (security_invoker = true) AS
  SELECT r.id AS request_id, r.state AS request_state, r.workflow_id, r.instance_id,
         i.workflow_status, i.last_completed_step_name, i.ended_at, i.last_seen_at
  FROM @extschema@.maestro_trigger_requests r
       LEFT JOIN @extschema@.maestro_synced_instances i
         ON i.workflow_id = r.workflow_id AND i.id = r.instance_id;

COMMENT ON VIEW maestro_trigger_request_instances IS
'each of your trigger requests with its instance''s last-synced status';

-- Reporting views over the mirror: no API call

CREATE VIEW maestro_instances_by_status AS
  SELECT workflow_id, workflow_status, count(*) AS instances
  FROM @extschema@.maestro_synced_instances
  GROUP BY workflow_id, workflow_status;

COMMENT ON VIEW maestro_instances_by_status IS 'instances per workflow and status, from the mirror';

CREATE VIEW maestro_completion_times AS
  SELECT workflow_id, count(*) AS completed,
         avg(ended_at - started_at) AS mean_duration,
         percentile_cont(0.5) WITHIN GROUP (ORDER BY ended_at - started_at) AS median_duration,
         percentile_cont(0.95) WITHIN GROUP (ORDER BY ended_at - started_at) AS p95_duration
  FROM @extschema@.maestro_synced_instances
  WHERE lower(workflow_status) = 'completed' AND ended_at IS NOT NULL AND started_at IS NOT NULL
  GROUP BY workflow_id;

COMMENT ON VIEW maestro_completion_times IS 'mean, median and 95th-percentile duration of completed instances per workflow, from the mirror';

CREATE FUNCTION maestro_stuck_instances(older_than interval DEFAULT '7 days')
RETURNS SETOF @extschema@.maestro_synced_instances
LANGUAGE sql STABLE
AS $$
  SELECT * FROM @extschema@.maestro_synced_instances
  WHERE replace(lower(workflow_status), '-', ' ') = 'in progress'
    AND started_at < now() - older_than
  ORDER BY started_at
$$;

COMMENT ON FUNCTION maestro_stuck_instances(interval) IS 'instances in progress for longer than the given time, oldest first, from the mirror';

CREATE VIEW maestro_daily_activity AS
  SELECT day, workflow_id,
         count(*) FILTER (WHERE what = 'started') AS started,
         count(*) FILTER (WHERE what = 'completed') AS completed,
         count(*) FILTER (WHERE what = 'canceled') AS canceled,
         count(*) FILTER (WHERE what = 'failed') AS failed
  FROM (SELECT date_trunc('day', started_at) AS day, workflow_id, 'started' AS what
        FROM @extschema@.maestro_synced_instances WHERE started_at IS NOT NULL
        UNION ALL
        SELECT date_trunc('day', coalesce(ended_at, canceled_at, last_modified_at)), workflow_id,
               CASE lower(workflow_status) WHEN 'completed' THEN 'completed'
                    WHEN 'canceled' THEN 'canceled' WHEN 'cancelled' THEN 'canceled'
                    WHEN 'failed' THEN 'failed' END
        FROM @extschema@.maestro_synced_instances
        WHERE lower(workflow_status) IN ('completed', 'canceled', 'cancelled', 'failed')) AS activity
  GROUP BY day, workflow_id;

COMMENT ON VIEW maestro_daily_activity IS 'per day and workflow: instances started, completed, canceled and failed, from the mirror';

-- Statistics of the API calls

CREATE FUNCTION maestro_stats(
  OUT server text, OUT endpoint text, OUT calls bigint,
  OUT errors_transport bigint, OUT errors_4xx bigint, OUT errors_429 bigint, OUT errors_5xx bigint,
  OUT retries bigint, OUT rate_limit_waits bigint, OUT bytes_received bigint,
  OUT mean_ms double precision, OUT p95_ms double precision, OUT since timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME'
LANGUAGE C VOLATILE PARALLEL SAFE;

CREATE VIEW maestro_stats AS SELECT * FROM maestro_stats();

COMMENT ON VIEW maestro_stats IS
'API calls per server and endpoint since the last maestro_stats_reset(): calls, errors by class (transport, other 4xx and 3xx, 429, 5xx), retries, rate-limit waits, bytes received, mean latency and the 95th percentile (upper edge of a power-of-two bucket, in ms); server-wide when maestro is preloaded, else this backend''s';

CREATE FUNCTION maestro_worker_stats(
  OUT queue_depth bigint, OUT queue_depth_at timestamptz, OUT sent bigint, OUT done bigint,
  OUT failed bigint, OUT retried bigint, OUT requests_per_second double precision,
  OUT since timestamptz)
RETURNS record
AS 'MODULE_PATHNAME'
LANGUAGE C VOLATILE PARALLEL SAFE;

CREATE VIEW maestro_worker_stats AS SELECT * FROM maestro_worker_stats();

COMMENT ON VIEW maestro_worker_stats IS
'the trigger queue worker: queued requests when it last looked, requests sent, done, failed and queued again, and its throughput, since the last maestro_stats_reset()';

CREATE FUNCTION maestro_stats_reset()
RETURNS void
AS 'MODULE_PATHNAME'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

REVOKE ALL ON FUNCTION maestro_stats_reset() FROM PUBLIC;

COMMENT ON FUNCTION maestro_stats_reset() IS 'clears maestro_stats and maestro_worker_stats';
