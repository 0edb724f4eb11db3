--
-- workflows: listing workflows and what triggering them requires
--
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo
SET maestro.server = 'sim';

SELECT id, name, account_id, status, created_at, created_by, modified_at, modified_by
FROM maestro_workflows() ORDER BY name;

-- timestamps with 3 and 7 fractional digits and offsets all parse
SET timezone = 'UTC';
SELECT name, created_at, modified_at FROM maestro_workflows() ORDER BY name;
RESET timezone;

-- the raw object keeps everything
SELECT raw ? 'metadata' AS has_metadata, jsonb_typeof(raw) FROM maestro_workflows() LIMIT 1;

-- the status filter goes to the API as a query parameter
SELECT name FROM maestro_workflows('inactive');
SELECT name FROM maestro_workflows(status => 'active') ORDER BY name;
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=status=inactive&method=GET"; echo
SELECT mt.try($$SELECT * FROM maestro_workflows('bogus')$$);

-- trigger requirements, whole and as rows
SELECT r->>'trigger_event_type' AS event_type,
       r->'trigger_http_config'->>'method' AS method,
       jsonb_array_length(r->'trigger_input_schema') AS inputs
FROM maestro_trigger_requirements('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001') AS r;
SELECT * FROM maestro_trigger_inputs('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001');
SELECT field_name, field_data_type, default_value, jsonb_typeof(default_value)
FROM maestro_trigger_inputs('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0002');

-- an unknown workflow is no data found
SELECT mt.try($$SELECT maestro_trigger_requirements('00000000-0000-4000-8000-000000000000')$$);
SELECT mt.try($$SELECT * FROM maestro_trigger_inputs('00000000-0000-4000-8000-000000000000')$$);
