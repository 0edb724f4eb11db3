--
-- instances: listing and reading workflow instances as typed rows
--
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo
SET maestro.server = 'sim';
SET timezone = 'UTC';
\set onboarding '''a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001'''

SELECT workflow_id, id, name, workflow_status, template_id, account_id, started_at,
       started_by, started_by_name, started_by_role, ended_at, expires_at
FROM maestro_instances(:onboarding) ORDER BY id;

SELECT id, last_modified_at, canceled_at, canceled_by, total_steps,
       last_completed_step, last_completed_step_name, tags, metadata
FROM maestro_instances(:onboarding) ORDER BY id;

-- trigger_inputs, whether the API spells it trigger_inputs or trigger_input
SELECT id, raw ? 'trigger_input' AS singular_key, trigger_inputs
FROM maestro_instances(:onboarding) ORDER BY id;

-- fields the API adds later are kept in raw
SELECT id, raw->>'priority' AS priority FROM maestro_instances(:onboarding) WHERE raw ? 'priority';

-- one instance, the same row type
SELECT (maestro_instance(:onboarding, 'b5500000-0000-4000-8000-000000000002')).name;
SELECT i.* IS NOT DISTINCT FROM l.* AS same_row
FROM maestro_instance(:onboarding, 'b5500000-0000-4000-8000-000000000002') AS i,
     maestro_instances(:onboarding) AS l
WHERE l.id = i.id;
SELECT pg_typeof(maestro_instance(:onboarding, 'b5500000-0000-4000-8000-000000000002'));

-- a workflow without instances, and an unknown instance
SELECT count(*) FROM maestro_instances('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0003');
SELECT mt.try($$SELECT maestro_instance('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', 'b5500000-0000-4000-8000-0000000000ff')$$);

-- the reporting view: the instances of every workflow
SELECT w.name, count(i.id)
FROM maestro_workflows() w LEFT JOIN maestro_all_instances i ON i.workflow_id = w.id
GROUP BY w.name ORDER BY w.name;
SELECT workflow_status, count(*) FROM maestro_all_instances GROUP BY 1 ORDER BY 1;

-- values that do not fit their column become NULL; raw keeps them
SELECT mt.fault('key=oddvalues;status=200;body=' ||
  replace(replace('{"data":[{"id":"not-a-uuid","name":42,"started_at":"yesterday","total_steps":"five","last_completed_step":2.5,"tags":["a",1],"ended_at":"2025-02-30T00:00:00Z","expires_at":"2025-06-01T10:00:00+05:30","trigger_inputs":null,"canceled_by":null}]}', '"', '%22'), ' ', '%20'));
SET maestro.server = 'faulty';
SELECT id, name, started_at, total_steps, last_completed_step, tags, ended_at, expires_at, trigger_inputs, canceled_by,
       raw->>'total_steps' AS raw_total_steps
FROM maestro_instances(:onboarding);
