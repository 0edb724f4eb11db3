--
-- encoding: a database that is not UTF-8. Maestro speaks UTF-8; maestro
-- converts what it sends from the database's encoding, and what it
-- receives into it.
--
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo
CREATE DATABASE maestro_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
\c maestro_latin1
SET client_encoding = 'UTF8';
SHOW server_encoding;
CREATE EXTENSION maestro;
\getenv sim_url MAESTRO_SIM_URL
CREATE SERVER sim FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'sim_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE USER MAPPING FOR CURRENT_USER SERVER sim OPTIONS (access_token 'sim-token');
\set onboarding '''a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001'''

-- a name and inputs with accents: each is one LATIN1 character here
SELECT i.name, length(i.name) AS name_chars, i.trigger_inputs,
       length(i.trigger_inputs ->> 'Name') AS input_chars,
       i.raw ->> 'name' = i.name AS raw_agrees
FROM maestro_trigger(:onboarding, '{"Name": "Zoë Åström", "Email": "zoe@example.com"}', 'Café Zoë') AS t,
     LATERAL maestro_instance(:onboarding, t.instance_id) AS i;

-- Maestro received UTF-8 (the simulator's log, with non-ASCII escaped)
\! curl -s "$MAESTRO_SIM_URL/__sim/requests?method=POST&path_contains=actions/trigger" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)[-1]["body"], ensure_ascii=True, sort_keys=True))'

-- the list and its jsonb columns agree
SELECT name, trigger_inputs ->> 'Name' AS input_name
FROM maestro_instances(:onboarding) WHERE name LIKE 'Caf%';

-- an instance whose name LATIN1 cannot hold (started elsewhere): reading
-- it is an error with its own SQLSTATE, never bytes in the wrong encoding
\! curl -s -o /dev/null -X POST -H "Authorization: Bearer $(printf 'sim-%s' token)" -H 'Content-Type: application/json' -d '{"instance_name": "\u6771\u4eac", "trigger_inputs": {"Name": "T", "Email": "t@example.com"}}' "$MAESTRO_SIM_URL/v1/accounts/7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10/workflows/a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001/actions/trigger"
SELECT count(*) FROM maestro_instances(:onboarding);
-- an error body is read in the database's encoding too, what it cannot
-- hold as '?'
SELECT format('%s/_fault/status=400;body=%s', :'sim_url',
              '%7B%22message%22%3A%22Feld%20%C3%BCberpr%C3%BCfen%3A%20%E6%9D%B1%22%7D') AS url \gset
ALTER SERVER sim OPTIONS (SET base_url :'url');
SELECT count(*) FROM maestro_workflows();
ALTER SERVER sim OPTIONS (SET base_url :'sim_url');

\c contrib_regression
DROP DATABASE maestro_latin1;
