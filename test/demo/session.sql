-- The maestro demo: a session against the bundled Maestro simulator.
\set ECHO queries
\pset footer off

-- 1. Install, and tell maestro where the account is and how to get in.
CREATE EXTENSION maestro;
CREATE SERVER docusign FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'sim_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE USER MAPPING FOR CURRENT_USER SERVER docusign
  OPTIONS (access_token 'sim-token');

-- 2. Which workflows exist, and what does onboarding need?
SELECT id, name, status FROM maestro_workflows() ORDER BY name;
SELECT * FROM maestro_trigger_inputs('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001');

-- 3. Start an onboarding for a new customer (instance_url is a credential:
--    hand it to the participant, do not log it).
SELECT instance_id FROM maestro_trigger(
  'a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001',
  '{"Name": "Grace Hopper", "Email": "grace@example.com", "Company": "Navy"}',
  'Onboard grace@example.com') \gset

-- 4. The instances of the workflow, the new one included.
SELECT name, workflow_status, started_at::date, last_completed_step_name
FROM maestro_instances('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001') ORDER BY started_at;

-- 5. Changed our mind: cancel it.
SELECT maestro_cancel('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', :'instance_id');
SELECT name, workflow_status, canceled_at IS NOT NULL AS canceled
FROM maestro_instance('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', :'instance_id');

-- 6. Pause the workflow: running instances go on, new ones are refused.
SELECT maestro_pause('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001');
\set VERBOSITY default
SELECT * FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001',
  '{"Name": "Alan Turing", "Email": "alan@example.com"}');
SELECT maestro_resume('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001');

-- 7. A report over every workflow's instances.
SELECT workflow_status, count(*) FROM maestro_all_instances GROUP BY 1 ORDER BY 1;
