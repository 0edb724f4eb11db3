--
-- queue_plan: maestro_trigger_async writes its row straight into the queue
-- table, looking up what a row needs once per session, as the queue's owner
-- with search_path pinned, and again when the extension is dropped and
-- created anew or the table changes; the row meets the table's defaults,
-- constraints and row triggers as an INSERT's would
--
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo
SET maestro.server = 'sim';
\set onboarding '''a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001'''
-- no worker in this cluster: each row warns so; a planted function would fail the call
SET client_min_messages = error;

-- functions and operators planted where the first call (which prepares the
-- statement) would find them, were search_path not pinned: any of them
-- running would fail the call
CREATE SCHEMA planted;
CREATE FUNCTION planted.nextval(regclass) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'planted nextval ran as %', current_user;
  RETURN 1;
END $$;
CREATE FUNCTION planted.textcat(text, text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'planted textcat ran as %', current_user;
  RETURN $1;
END $$;
CREATE OPERATOR planted.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = planted.textcat);
CREATE FUNCTION planted.int8(oid) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'planted int8 ran as %', current_user;
  RETURN 0;
END $$;
SET search_path = planted, pg_catalog, public;
SELECT maestro_trigger_async(:onboarding, '{"Name": "A", "Email": "a@example.com"}', 'first') AS a \gset
SELECT maestro_trigger_async(:onboarding, '{"Name": "B", "Email": "b@example.com"}', 'second') AS b \gset
RESET search_path;
DROP SCHEMA planted CASCADE;
SELECT :b = :a + 1 AS consecutive,
       (SELECT count(*) FROM maestro_trigger_requests WHERE id IN (:a, :b)) AS rows,
       (SELECT bool_and(instance_name ~ '^(first|second) \[mq [0-9]+-[0-9a-f]{8}\]$')
          FROM maestro_trigger_requests WHERE id IN (:a, :b)) AS tagged;

-- many rows in one statement: one id each, every name tagged with its own id
SELECT count(*) AS queued, count(DISTINCT id) AS ids FROM (
  SELECT maestro_trigger_async(:onboarding, jsonb_build_object('Name', 'N' || g, 'Email', g || '@example.com'), 'bulk ' || g) AS id
  FROM generate_series(1, 200) AS g) s;
SELECT count(*) FILTER (WHERE instance_name ~ ('^bulk ' || substr(inputs->>'Name', 2) || ' \[mq ' || id || '-[0-9a-f]{8}\]$'))
         AS named_by_own_id,
       count(DISTINCT substring(instance_name from '-([0-9a-f]{8})\]$')) > 190 AS random_tags
FROM maestro_trigger_requests WHERE instance_name LIKE 'bulk %';

-- the extension dropped and created again in this session: a new table and
-- sequence, and the statement prepared anew against them
DROP EXTENSION maestro CASCADE;
CREATE EXTENSION maestro;
\getenv sim_url MAESTRO_SIM_URL
CREATE SERVER sim FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'sim_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE USER MAPPING FOR CURRENT_USER SERVER sim OPTIONS (access_token 'sim-token');
CREATE SERVER faulty FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'sim_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE USER MAPPING FOR CURRENT_USER SERVER faulty OPTIONS (access_token 'sim-token');
SELECT maestro_trigger_async(:onboarding, '{"Name": "C", "Email": "c@example.com"}', 'after') AS c;
SELECT id, instance_name ~ '^after \[mq 1-[0-9a-f]{8}\]$' AS tagged FROM maestro_trigger_requests;

-- the table's row triggers run, BEFORE and AFTER, as an INSERT's would
CREATE TABLE queue_audit (id bigint, name text);
CREATE FUNCTION queue_before() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.instance_name := 'renamed ' || NEW.instance_name;
  RETURN NEW;
END $$;
CREATE FUNCTION queue_after() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.queue_audit VALUES (NEW.id, NEW.instance_name);
  RETURN NULL;
END $$;
CREATE TRIGGER audit_before BEFORE INSERT ON maestro_trigger_requests
  FOR EACH ROW EXECUTE FUNCTION queue_before();
CREATE TRIGGER audit_after AFTER INSERT ON maestro_trigger_requests
  FOR EACH ROW EXECUTE FUNCTION queue_after();
SELECT maestro_trigger_async(:onboarding, '{"Name": "T", "Email": "t@example.com"}', 'audited') AS t \gset
SELECT a.id = :t AS same_id, a.name ~ '^renamed audited \[mq ' AS before_ran,
       q.instance_name = a.name AS stored_as_changed
FROM queue_audit a JOIN maestro_trigger_requests q USING (id);
DROP TRIGGER audit_before ON maestro_trigger_requests;
DROP TRIGGER audit_after ON maestro_trigger_requests;
DROP TABLE queue_audit;
DROP FUNCTION queue_before(), queue_after();

-- a constraint added to the table holds for the calls that follow in this
-- session, and a failed row leaves nothing behind
ALTER TABLE maestro_trigger_requests ADD CONSTRAINT needs_email CHECK (inputs ? 'Email');
SELECT mt.state($$SELECT maestro_trigger_async('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{"Name": "E"}', 'no email')$$);
SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'no email%';
ALTER TABLE maestro_trigger_requests DROP CONSTRAINT needs_email;

-- so does a changed default
ALTER TABLE maestro_trigger_requests ALTER COLUMN next_attempt_at SET DEFAULT now() + interval '1 hour';
BEGIN;
SELECT maestro_trigger_async(:onboarding, '{"Name": "L", "Email": "l@example.com"}', 'later') AS l \gset
SELECT next_attempt_at = now() + interval '1 hour' AS later, state, attempts, created_at = now() AS created_now
FROM maestro_trigger_requests WHERE id = :l;
COMMIT;
ALTER TABLE maestro_trigger_requests ALTER COLUMN next_attempt_at SET DEFAULT now();

-- a column the row needs gone: an error that says which, and what to do
BEGIN;
ALTER TABLE maestro_trigger_requests RENAME COLUMN inputs TO inputs_renamed;
SELECT mt.try($$SELECT maestro_trigger_async('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{}', 'renamed')$$);
ROLLBACK;

-- a server the role may no longer use is refused within the same session
CREATE ROLE maestro_qp;
GRANT USAGE ON FOREIGN SERVER sim TO maestro_qp;
CREATE USER MAPPING FOR maestro_qp SERVER sim OPTIONS (access_token 'sim-token');
GRANT USAGE ON SCHEMA mt TO maestro_qp;
SET ROLE maestro_qp;
SELECT maestro_trigger_async(:onboarding, '{"Name": "D", "Email": "d@example.com"}', 'granted') > 1 AS queued;
RESET ROLE;
REVOKE USAGE ON FOREIGN SERVER sim FROM maestro_qp;
SET ROLE maestro_qp;
SELECT mt.state($$SELECT maestro_trigger_async('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{}', 'revoked')$$);
RESET ROLE;
DELETE FROM maestro_trigger_requests;
DROP USER MAPPING FOR maestro_qp SERVER sim;
REVOKE USAGE ON SCHEMA mt FROM maestro_qp;
DROP ROLE maestro_qp;
RESET maestro.server;
RESET client_min_messages;
