--
-- bad_input: wrong arguments fail with clear errors before any request
--
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo
SET maestro.server = 'sim';

-- not a uuid: PostgreSQL's own input error
SELECT maestro_instances('not-a-uuid');
SELECT maestro_pause('a4490cd8');

-- NULL arguments
SELECT mt.try('SELECT maestro_pause(NULL)');
SELECT mt.try('SELECT maestro_cancel(NULL, NULL)');
SELECT mt.try($$SELECT maestro_cancel('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', NULL)$$);
SELECT mt.try($$SELECT * FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', NULL)$$);
SELECT mt.try('SELECT * FROM maestro_instances(NULL)');

-- inputs that are not a JSON object
SELECT mt.try($$SELECT * FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '["Ada"]')$$);
SELECT mt.try($$SELECT * FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '"Ada"')$$);
SELECT mt.try($$SELECT * FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{"Name": "Ada"')$$);
-- an empty instance name
SELECT mt.try($$SELECT * FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{}', '')$$);
-- none of these reached the API
\! curl -s "$MAESTRO_SIM_URL/__sim/count?method=POST&path_contains=actions/trigger"; echo

-- missing required inputs: Maestro's 400 names each field
SELECT mt.try($$SELECT * FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{}', 'no inputs')$$);
SELECT mt.try($$SELECT * FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0002', '{"Approver": "x"}', 'partial')$$);

-- an unknown server, and a role without a user mapping
SET maestro.server = 'no_such_server';
SELECT mt.try('SELECT * FROM maestro_workflows()');
RESET maestro.server;
CREATE ROLE maestro_nomap;
GRANT USAGE ON SCHEMA mt TO maestro_nomap;
GRANT USAGE ON FOREIGN SERVER sim TO maestro_nomap;
SET maestro.server = 'sim';
SET ROLE maestro_nomap;
SELECT mt.try($$SELECT maestro_cancel('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', 'b5500000-0000-4000-8000-000000000002')$$);
RESET ROLE;
REVOKE ALL ON FOREIGN SERVER sim FROM maestro_nomap;
REVOKE USAGE ON SCHEMA mt FROM maestro_nomap;
DROP ROLE maestro_nomap;
