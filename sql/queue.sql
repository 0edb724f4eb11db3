--
-- queue: the SQL surface of the trigger queue. This cluster does not preload
-- maestro, so nothing is sent; the worker is tested by test/tap.
--
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo
SET maestro.server = 'sim';
\set onboarding '''a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001'''

-- a request is a row, written in the caller's transaction
SELECT maestro_trigger_async(:onboarding, '{"Name": "Q", "Email": "q@example.com"}', 'Queued one') AS id \gset
SELECT id = :id AS same_id, state, workflow_id, inputs, attempts, requested_by,
       server_id = (SELECT oid FROM pg_foreign_server WHERE srvname = 'sim') AS on_sim,
       instance_name ~ ('^Queued one \[mq ' || :id || '-[0-9a-f]{8}\]$') AS tagged_name,
       next_attempt_at <= now() AS due, instance_id, instance_url, done_at
FROM maestro_trigger_requests;

-- a rolled-back transaction leaves nothing
BEGIN;
SELECT maestro_trigger_async(:onboarding, '{"Name": "R", "Email": "r@example.com"}') IS NOT NULL AS queued;
ROLLBACK;
SELECT count(*) FROM maestro_trigger_requests;

-- a generated name carries the request id too
SELECT maestro_trigger_async(:onboarding, '{"Name": "G", "Email": "g@example.com"}') AS id2 \gset
SELECT instance_name ~ ('^postgres@contrib_regression .* \[mq ' || :id2 || '-[0-9a-f]{8}\]$') AS generated
FROM maestro_trigger_requests WHERE id = :id2;

-- the same argument checks as maestro_trigger, before anything is queued
SELECT mt.try($$SELECT maestro_trigger_async(NULL, '{}')$$);
SELECT mt.try($$SELECT maestro_trigger_async('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', NULL)$$);
SELECT mt.try($$SELECT maestro_trigger_async('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '[1, 2]')$$);
SELECT mt.try($$SELECT maestro_trigger_async('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{}', '')$$);
SELECT count(*) FROM maestro_trigger_requests;
-- and nothing was sent
\! curl -s "$MAESTRO_SIM_URL/__sim/count?method=POST"; echo

-- a row trigger maps columns to inputs, typed, and names the instance
CREATE TABLE customers (id serial, email text, full_name text, seats int, vip boolean);
CREATE TRIGGER onboard AFTER INSERT ON customers FOR EACH ROW
  EXECUTE FUNCTION maestro_enqueue_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001',
    '{"Email": "email", "Name": "full_name", "Seats": "seats", "VIP": "vip"}', 'Onboard {email} ({seats})');
INSERT INTO customers (email, full_name, seats, vip)
VALUES ('ada@example.com', 'Ada Lovelace', 3, true), ('bob@example.com', NULL, NULL, false);
SELECT inputs, regexp_replace(instance_name, ' \[mq .*\]$', '') AS name
FROM maestro_trigger_requests WHERE instance_name LIKE 'Onboard %' ORDER BY id;
-- rolled back with its row
BEGIN;
INSERT INTO customers (email) VALUES ('gone@example.com');
ROLLBACK;
SELECT count(*) FROM maestro_trigger_requests WHERE inputs->>'Email' = 'gone@example.com';

-- bad trigger arguments fail at the first insert, naming the trigger; nothing is queued
CREATE TABLE leads (email text);
CREATE TRIGGER bad_uuid AFTER INSERT ON leads FOR EACH ROW
  EXECUTE FUNCTION maestro_enqueue_trigger('not-a-uuid', '{"Email": "email"}');
INSERT INTO leads VALUES ('x@example.com');
DROP TRIGGER bad_uuid ON leads;
CREATE TRIGGER bad_mapping AFTER INSERT ON leads FOR EACH ROW
  EXECUTE FUNCTION maestro_enqueue_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '["email"]');
INSERT INTO leads VALUES ('x@example.com');
DROP TRIGGER bad_mapping ON leads;
CREATE TRIGGER bad_json AFTER INSERT ON leads FOR EACH ROW
  EXECUTE FUNCTION maestro_enqueue_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', 'Email=email');
INSERT INTO leads VALUES ('x@example.com');
DROP TRIGGER bad_json ON leads;
CREATE TRIGGER bad_column AFTER INSERT ON leads FOR EACH ROW
  EXECUTE FUNCTION maestro_enqueue_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{"Email": "mail"}');
INSERT INTO leads VALUES ('x@example.com');
DROP TRIGGER bad_column ON leads;
CREATE TRIGGER bad_template AFTER INSERT ON leads FOR EACH ROW
  EXECUTE FUNCTION maestro_enqueue_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{"Email": "email"}', 'Lead {name}');
INSERT INTO leads VALUES ('x@example.com');
DROP TRIGGER bad_template ON leads;
CREATE TRIGGER bad_args AFTER INSERT ON leads FOR EACH ROW
  EXECUTE FUNCTION maestro_enqueue_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001');
INSERT INTO leads VALUES ('x@example.com');
DROP TRIGGER bad_args ON leads;
CREATE TRIGGER too_early BEFORE INSERT ON leads FOR EACH ROW
  EXECUTE FUNCTION maestro_enqueue_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{"Email": "email"}');
INSERT INTO leads VALUES ('x@example.com');
DROP TRIGGER too_early ON leads;
CREATE TRIGGER per_statement AFTER INSERT ON leads FOR EACH STATEMENT
  EXECUTE FUNCTION maestro_enqueue_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{"Email": "email"}');
INSERT INTO leads VALUES ('x@example.com');
DROP TRIGGER per_statement ON leads;
SELECT count(*) FROM leads;
SELECT count(*) FROM maestro_trigger_requests WHERE inputs->>'Email' = 'x@example.com';

-- roles: each sees and retries only its own requests, and writes none directly
CREATE ROLE queue_a;
CREATE ROLE queue_b;
GRANT USAGE ON SCHEMA mt TO queue_a, queue_b;
GRANT USAGE ON FOREIGN SERVER sim TO queue_a, queue_b;
CREATE USER MAPPING FOR queue_a SERVER sim OPTIONS (access_token 'sim-token');
SET ROLE queue_a;
SELECT maestro_trigger_async(:onboarding, '{"Name": "A", "Email": "a@example.com"}', 'by a') AS a_id \gset
SELECT count(*) AS visible, min(regexp_replace(instance_name, '-[0-9a-f]{8}\]$', '-<tag>]')) AS name FROM maestro_trigger_requests;
RESET ROLE;
-- queue_b has USAGE but no user mapping: refused at enqueue time
SET ROLE queue_b;
SELECT mt.try($$SELECT maestro_trigger_async('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{}', 'by b')$$);
SELECT count(*) AS visible FROM maestro_trigger_requests;
-- cannot write the queue directly
SELECT mt.state($$INSERT INTO maestro_trigger_requests (server_id, requested_by, workflow_id, inputs, instance_name) VALUES (1, 'queue_b', 'a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{}', 'x')$$);
SELECT mt.state('UPDATE maestro_trigger_requests SET state = ''queued''');
SELECT mt.state('DELETE FROM maestro_trigger_requests');
SELECT mt.state('TRUNCATE maestro_trigger_requests');
-- nor retry another role's request
SELECT mt.try(format('SELECT maestro_retry(%s)', :a_id));
RESET ROLE;

-- maestro_retry queues an own failed request again, and only a failed one
SET ROLE queue_a;
SELECT mt.try(format('SELECT maestro_retry(%s)', :a_id));
RESET ROLE;
UPDATE maestro_trigger_requests SET state = 'failed', attempts = 5, http_status = 503,
  last_error = 'HTTP 503', done_at = now() WHERE id = :a_id;
SET ROLE queue_a;
SELECT maestro_retry(:a_id);
SELECT state, attempts, done_at, next_attempt_at <= now() AS due FROM maestro_trigger_requests;
SELECT mt.try('SELECT maestro_retry(999999)');
RESET ROLE;

-- the queue is written as its owner with search_path pinned: a function the
-- caller plants ahead of pg_catalog never runs with the owner's rights
CREATE SCHEMA planted AUTHORIZATION queue_a;
SET ROLE queue_a;
CREATE FUNCTION planted.nextval(regclass) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
  RAISE NOTICE 'planted nextval ran as %', current_user;
  RETURN 1;
END $$;
CREATE FUNCTION planted.pg_get_serial_sequence(text, text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  RAISE NOTICE 'planted pg_get_serial_sequence ran as %', current_user;
  RETURN NULL;
END $$;
SET search_path = planted, pg_catalog, public;
SELECT maestro_trigger_async('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{"Name": "P", "Email": "p@example.com"}', 'planted') > :a_id AS queued;
RESET search_path;
RESET ROLE;
DROP SCHEMA planted CASCADE;

-- the table grants nothing broader than reading own rows
SELECT grantee, privilege_type FROM information_schema.role_table_grants
WHERE table_name = 'maestro_trigger_requests' AND grantee = 'PUBLIC' ORDER BY 2;
SELECT relrowsecurity FROM pg_class WHERE relname = 'maestro_trigger_requests';

-- the tags differ within a session and between sessions: each backend
-- seeds its own generator (the warning that no worker runs is shown above)
SET client_min_messages = error;
SELECT count(maestro_trigger_async(:onboarding, '{}', 'tagged ' || g)) FROM generate_series(1, 3) AS g;
\c
SET maestro.server = 'sim';
SET client_min_messages = error;
SELECT count(maestro_trigger_async(:onboarding, '{}', 'tagged ' || g)) FROM generate_series(4, 6) AS g;
SELECT count(*) AS requests, count(DISTINCT substring(instance_name FROM '-([0-9a-f]{8})\]$')) AS distinct_tags
FROM maestro_trigger_requests WHERE instance_name ~ '^tagged \d \[mq \d+-[0-9a-f]{8}\]$';
RESET client_min_messages;

-- without shared_preload_libraries there is no worker to wake
SELECT mt.state('SELECT maestro_wake()');

DROP USER MAPPING FOR queue_a SERVER sim;
REVOKE ALL ON FOREIGN SERVER sim FROM queue_a, queue_b;
REVOKE USAGE ON SCHEMA mt FROM queue_a, queue_b;
DELETE FROM maestro_trigger_requests;
DROP ROLE queue_a;
DROP ROLE queue_b;
DROP TABLE customers, leads;
