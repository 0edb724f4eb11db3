--
-- trigger: starting workflow instances
--
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo
SET maestro.server = 'sim';
\set onboarding '''a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001'''

-- a named instance: an id and the participant URL come back
SELECT instance_id IS NOT NULL AS has_id,
       instance_url LIKE 'http%/execution?mtid=%&mtsec=%' AS has_url
FROM maestro_trigger(:onboarding, '{"Name": "Dan", "Email": "dan@example.com"}', 'Onboard dan@example.com');

-- the request followed the spec: instance_name and trigger_inputs in the body
\! curl -s "$MAESTRO_SIM_URL/__sim/requests?method=POST&path_contains=actions/trigger" | python3 -c 'import json,sys; r=json.load(sys.stdin)[-1]; print(r["body"])'

-- the new instance is there, In Progress, with its inputs
SELECT name, workflow_status, trigger_inputs
FROM maestro_instances(:onboarding) WHERE name = 'Onboard dan@example.com';

-- without a name, one is generated from role, database and time
SELECT i.name ~ '^postgres@contrib_regression \d{4}-\d\d-\d\d \d\d:\d\d:\d\d' AS generated_name
FROM maestro_trigger(:onboarding, '{"Name": "Eve", "Email": "eve@example.com"}') AS t,
     LATERAL maestro_instance(:onboarding, t.instance_id) AS i;

-- typed inputs go through as JSON values
SELECT i.trigger_inputs
FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0002',
                     '{"Amount": 1250.5, "Approver": "ops@example.com", "Urgent": true}',
                     'PO-1002') AS t,
     LATERAL maestro_instance('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0002', t.instance_id) AS i;

-- names are JSON-escaped
SELECT i.name
FROM maestro_trigger(:onboarding, '{"Name": "Q", "Email": "q@example.com"}',
                     E'quote " backslash \\ tab \t end') AS t,
     LATERAL maestro_instance(:onboarding, t.instance_id) AS i;

-- a trigger is never retried: one 503 is one request, and an error
SELECT mt.fault('key=post503;status=503;method=POST');
SET maestro.server = 'faulty';
SELECT mt.try($$SELECT * FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{"Name": "F", "Email": "f@example.com"}', 'F')$$);
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=key=post503&method=POST"; echo
-- nor after a transport error
SELECT mt.fault('key=postreset;reset=1;method=POST');
SELECT mt.state($$SELECT * FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{"Name": "F", "Email": "f@example.com"}', 'F')$$);
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=key=postreset&method=POST"; echo
-- The same holds for every POST, with a body or without (pause, resume,
-- cancel), when the connection is one kept alive from the call before: the
-- fault reads the request and resets the connection, and libcurl's silent
-- re-send on a fresh connection would be the second request counted here.
SELECT mt.fault('key=reusedtrigger;reset=1;method=POST');
SELECT count(*) > 0 AS kept_alive FROM maestro_workflows();
SELECT mt.state($$SELECT * FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{"Name": "F", "Email": "f@example.com"}', 'F')$$);
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=key=reusedtrigger&method=POST"; echo
SELECT mt.fault('key=reusedpause;reset=1;method=POST');
SELECT count(*) > 0 AS kept_alive FROM maestro_workflows();
SELECT mt.try($$SELECT maestro_pause('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001')$$);
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=key=reusedpause&method=POST"; echo
SELECT mt.fault('key=reusedresume;reset=1;method=POST');
SELECT count(*) > 0 AS kept_alive FROM maestro_workflows();
SELECT mt.state($$SELECT maestro_resume('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001')$$);
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=key=reusedresume&method=POST"; echo
SELECT mt.fault('key=reusedcancel;reset=1;method=POST');
SELECT count(*) > 0 AS kept_alive FROM maestro_workflows();
SELECT mt.state($$SELECT maestro_cancel('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '0b8c3a4e-5f60-4a71-8b92-a3b4c5d6e7f8')$$);
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=key=reusedcancel&method=POST"; echo
-- the reset connection is gone: the next call works on a new one
SELECT count(*) > 0 AS works FROM maestro_workflows();
