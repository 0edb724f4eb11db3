--
-- optional_fields: the spec requires no field of any response. A 2xx
-- answer without a field gives NULL (a list without its list, no rows),
-- never an error; only a body that is not JSON, or not the object (or
-- list) the endpoint returns, is one (08P01)
--
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo
SET maestro.server = 'faulty';
SET timezone = 'UTC';
\set onboarding '''a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001'''
\set inputs '''{"Name": "Ada", "Email": "ada@example.com"}'''

-- a trigger answered without instance_id: the row, with a WARNING that
-- names the instance; the workflow did start
SELECT mt.fault('strip=instance_id');
SELECT instance_id, instance_url IS NOT NULL AS has_url
FROM maestro_trigger(:onboarding, :inputs, 'Onboard without id');
SET maestro.server = 'sim';
SELECT count(*) AS started FROM maestro_instances(:onboarding) WHERE name = 'Onboard without id';
SET maestro.server = 'faulty';
-- without instance_url, and without either
SELECT mt.fault('strip=instance_url');
SELECT instance_id IS NOT NULL AS has_id, instance_url FROM maestro_trigger(:onboarding, :inputs, 'Onboard without url');
SELECT mt.fault('strip=instance_id,instance_url');
SELECT * FROM maestro_trigger(:onboarding, :inputs, 'Onboard without either');
-- an empty object is such an answer too; an answer that is no object is not
SELECT mt.fault('method=POST;status=201;body=%7B%7D');
SELECT * FROM maestro_trigger(:onboarding, :inputs, 'Onboard empty');
SELECT mt.fault('method=POST;status=201;body=%5B%5D');
SELECT mt.try($$SELECT * FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{"Name": "Ada", "Email": "ada@example.com"}', 'Onboard array')$$);
SELECT mt.fault('method=POST;status=201;html=1');
SELECT mt.try($$SELECT * FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{"Name": "Ada", "Email": "ada@example.com"}', 'Onboard html')$$);

-- the workflow list: missing fields are NULL; no list at all, no rows
SELECT mt.fault('strip=name,metadata');
SELECT id, name, status, created_at, modified_by FROM maestro_workflows() ORDER BY id;
SELECT mt.fault('strip=data');
SELECT count(*) FROM maestro_workflows();
SELECT mt.fault('status=200;body=%7B%7D');
SELECT count(*) FROM maestro_workflows();

-- trigger requirements: without the schema, no inputs; a field without its type
SELECT mt.fault('strip=trigger_input_schema');
SELECT count(*) FROM maestro_trigger_inputs(:onboarding);
SELECT maestro_trigger_requirements(:onboarding) ? 'trigger_input_schema' AS has_schema;
SELECT mt.fault('strip=field_data_type,default_value');
SELECT * FROM maestro_trigger_inputs(:onboarding);
SELECT mt.fault('status=200;body=%7B%22trigger_input_schema%22%3A%22Name%22%7D');
SELECT mt.try($$SELECT * FROM maestro_trigger_inputs('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001')$$);
SELECT mt.fault('status=200;body=%5B%5D');
SELECT mt.try($$SELECT maestro_trigger_requirements('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001')$$);

-- instances: each missing field is NULL; the instance's workflow is the argument's
SELECT mt.fault('strip=workflow_status,started_at,trigger_inputs,trigger_input,tags,metadata');
SELECT id, workflow_status, started_at, trigger_inputs, tags, metadata FROM maestro_instances(:onboarding)
WHERE name IS NULL OR name NOT LIKE 'Onboard without%' ORDER BY id;
SELECT mt.fault('status=200;body=%7B%7D');
SELECT workflow_id, id, name, raw FROM maestro_instance(:onboarding, 'b5500000-0000-4000-8000-000000000001');
SELECT count(*) FROM maestro_instances(:onboarding);

-- ids as the spec's uuid pattern allows them: each brace optional on its own
SELECT mt.fault('status=200;body=' || replace(
  '{"data":[{"id":"{b5500000-0000-4000-8000-000000000001"},{"id":"b5500000-0000-4000-8000-000000000002}"},{"id":"{B5500000-0000-4000-8000-000000000003}"},{"id":"{{b5500000-0000-4000-8000-000000000004}"}]}',
  '"', '%22'));
SELECT id, raw->>'id' AS sent FROM maestro_instances(:onboarding);

-- actions: the action is taken; a missing answer field is NULL
SELECT mt.fault('strip=status');
SELECT maestro_pause(:onboarding) IS NULL AS paused_without_status;
SET maestro.server = 'sim';
SELECT mt.state($$SELECT maestro_pause('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001')$$) AS paused_already;
SET maestro.server = 'faulty';
SELECT maestro_resume(:onboarding) IS NULL AS resumed_without_status;
SELECT mt.fault('strip=message');
SELECT maestro_cancel(:onboarding, 'b5500000-0000-4000-8000-000000000002') IS NULL AS canceled_without_message;
SET maestro.server = 'sim';
SELECT workflow_status FROM maestro_instance(:onboarding, 'b5500000-0000-4000-8000-000000000002');
