--
-- actions: pause and resume a workflow, cancel an instance
--
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo
SET maestro.server = 'sim';
\set onboarding '''a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001'''

SELECT maestro_pause(:onboarding);
-- pausing twice is a conflict
SELECT mt.try($$SELECT maestro_pause('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001')$$);
-- a paused workflow takes no new instances
SELECT mt.try($$SELECT * FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{"Name": "P", "Email": "p@example.com"}', 'while paused')$$);
SELECT maestro_resume(:onboarding);
SELECT mt.try($$SELECT maestro_resume('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001')$$);
SELECT instance_id IS NOT NULL AS started
FROM maestro_trigger(:onboarding, '{"Name": "R", "Email": "r@example.com"}', 'after resume');

-- cancel a running instance
SELECT maestro_cancel(:onboarding, 'b5500000-0000-4000-8000-000000000002');
SELECT workflow_status, canceled_at IS NOT NULL AS canceled
FROM maestro_instance(:onboarding, 'b5500000-0000-4000-8000-000000000002');
-- a finished instance cannot be canceled
SELECT mt.try($$SELECT maestro_cancel('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', 'b5500000-0000-4000-8000-000000000001')$$);
SELECT mt.try($$SELECT maestro_cancel('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', 'b5500000-0000-4000-8000-000000000002')$$);
-- an unknown workflow or instance
SELECT mt.try($$SELECT maestro_pause('00000000-0000-4000-8000-000000000000')$$);
SELECT mt.try($$SELECT maestro_cancel('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '00000000-0000-4000-8000-000000000000')$$);
-- the requests carried no body
\! curl -s "$MAESTRO_SIM_URL/__sim/requests?method=POST&path_contains=/actions/" | python3 -c 'import json,sys; print(sorted({str(r["body"]) for r in json.load(sys.stdin) if "trigger" not in r["path"]}))'
