--
-- conn_cache: a backend keeps the server, user mapping and options it
-- resolved (per role and maestro.server), and every change to them takes
-- effect at the next call of the same session
--
-- Which mapping or server a call used shows in its outcome: the simulator
-- accepts the token of the setup's mappings and answers 401 to any other.
\getenv sim_url MAESTRO_SIM_URL
SET maestro.server = 'sim';
CREATE SERVER cc FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'sim_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE USER MAPPING FOR CURRENT_USER SERVER cc OPTIONS (access_token 'sim-token');
CREATE FUNCTION mt.call() RETURNS text LANGUAGE sql
  AS $$ SELECT mt.state('SELECT count(*) FROM maestro_workflows()') $$;

-- ALTER USER MAPPING between calls, and back
SELECT mt.call();
ALTER USER MAPPING FOR CURRENT_USER SERVER sim OPTIONS (SET access_token 'wrong-token');
SELECT mt.call();
ALTER USER MAPPING FOR CURRENT_USER SERVER sim OPTIONS (SET access_token 'sim-token');
SELECT mt.call();

-- ALTER SERVER OPTIONS between calls: a base_url where nothing listens, and back
SET maestro.server = 'cc';
SELECT mt.call();
ALTER SERVER cc OPTIONS (SET base_url 'http://127.0.0.1:1');
SELECT mt.call();
ALTER SERVER cc OPTIONS (SET base_url :'sim_url');
SELECT mt.call();
-- and the requests go where the server now says: three reached the simulator
\! python3 test/simulator/sim_requests.py --clear
SELECT mt.call(), mt.call(), mt.call();
\! python3 test/simulator/sim_requests.py

-- DROP and CREATE the server between calls: the new one, with its own mapping
DROP SERVER cc CASCADE;
SELECT mt.call();
CREATE SERVER cc FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'sim_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
SELECT mt.call();
CREATE USER MAPPING FOR CURRENT_USER SERVER cc OPTIONS (access_token 'wrong-token');
SELECT mt.call();
ALTER USER MAPPING FOR CURRENT_USER SERVER cc OPTIONS (SET access_token 'sim-token');
SELECT mt.call();
-- renamed: the old name no longer resolves, the new one does
ALTER SERVER cc RENAME TO cc2;
SELECT mt.call();
SET maestro.server = 'cc2';
SELECT mt.call();
ALTER SERVER cc2 RENAME TO cc;

-- changing maestro.server between calls switches at once, both ways
ALTER USER MAPPING FOR CURRENT_USER SERVER cc OPTIONS (SET access_token 'wrong-token');
SET maestro.server = 'cc';
SELECT mt.call();
SET maestro.server = 'sim';
SELECT mt.call();
SET maestro.server = 'cc';
SELECT mt.call();
ALTER USER MAPPING FOR CURRENT_USER SERVER cc OPTIONS (SET access_token 'sim-token');

-- maestro.server unset: the only server is chosen; a second one created
-- after that choice makes the next call ambiguous, and dropping it again
-- makes the choice work again (all in a transaction, rolled back)
BEGIN;
RESET maestro.server;
DROP SERVER faulty CASCADE;
DROP SERVER cc CASCADE;
SELECT mt.call();
CREATE SERVER cc FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url 'http://127.0.0.1:1', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
SELECT mt.call();
DROP SERVER cc;
SELECT mt.call();
ROLLBACK;

-- a change committed by another session is seen by the next call, even
-- within one transaction
SET maestro.server = 'sim';
BEGIN;
SELECT mt.call();
\! psql -X -q -d contrib_regression -c "ALTER USER MAPPING FOR postgres SERVER sim OPTIONS (SET access_token 'wrong-token')"
SELECT mt.call();
\! psql -X -q -d contrib_regression -c "ALTER USER MAPPING FOR postgres SERVER sim OPTIONS (SET access_token 'sim-token')"
SELECT mt.call();
COMMIT;

-- SET ROLE between calls: each role has its own mapping, never another's
CREATE ROLE cc_alice;
CREATE ROLE cc_bob;
GRANT USAGE ON SCHEMA mt TO cc_alice, cc_bob;
GRANT USAGE ON FOREIGN SERVER sim TO cc_alice, cc_bob;
CREATE USER MAPPING FOR cc_alice SERVER sim OPTIONS (access_token 'wrong-token');
SELECT mt.call();
SET ROLE cc_alice;
SELECT mt.call();
SET ROLE cc_bob;
SELECT mt.call();
RESET ROLE;
SELECT mt.call();
-- a PUBLIC mapping serves bob; then his own, created between calls, does
CREATE USER MAPPING FOR PUBLIC SERVER sim OPTIONS (access_token 'sim-token');
SET ROLE cc_bob;
SELECT mt.call();
RESET ROLE;
CREATE USER MAPPING FOR cc_bob SERVER sim OPTIONS (access_token 'wrong-token');
SET ROLE cc_bob;
SELECT mt.call();
RESET ROLE;

-- SECURITY DEFINER runs with the owner's mapping, and only inside
CREATE FUNCTION mt.call_as_alice() RETURNS text LANGUAGE sql SECURITY DEFINER
  AS $$ SELECT mt.state('SELECT count(*) FROM maestro_workflows()') $$;
ALTER FUNCTION mt.call_as_alice() OWNER TO cc_alice;
SELECT mt.call(), mt.call_as_alice(), mt.call();
CREATE FUNCTION mt.call_as_owner() RETURNS text LANGUAGE sql SECURITY DEFINER
  AS $$ SELECT mt.state('SELECT count(*) FROM maestro_workflows()') $$;
GRANT EXECUTE ON FUNCTION mt.call_as_owner() TO cc_alice;
SET ROLE cc_alice;
SELECT mt.call(), mt.call_as_owner(), mt.call();
RESET ROLE;

-- USAGE as of every call: a REVOKE, direct or of a membership
ALTER USER MAPPING FOR cc_alice SERVER sim OPTIONS (SET access_token 'sim-token');
SET ROLE cc_alice;
SELECT mt.call();
RESET ROLE;
REVOKE USAGE ON FOREIGN SERVER sim FROM cc_alice;
SET ROLE cc_alice;
SELECT mt.call();
RESET ROLE;
CREATE ROLE cc_users;
GRANT USAGE ON FOREIGN SERVER sim TO cc_users;
GRANT cc_users TO cc_alice;
SET ROLE cc_alice;
SELECT mt.call();
RESET ROLE;
REVOKE cc_users FROM cc_alice;
SET ROLE cc_alice;
SELECT mt.call();
RESET ROLE;
-- ... also one committed by another session in the middle of a transaction,
-- for a call and for a queued trigger alike
GRANT cc_users TO cc_alice;
BEGIN;
SET LOCAL ROLE cc_alice;
-- no worker may send here: not its warning, which names the request id
SET LOCAL client_min_messages = error;
SELECT mt.call(),
  mt.state($$SELECT maestro_trigger_async('0b1c2d3e-4f50-4617-8829-3a4b5c6d7e8f', '{}')$$);
\! psql -X -q -d contrib_regression -c "REVOKE cc_users FROM cc_alice"
SELECT mt.call(),
  mt.state($$SELECT maestro_trigger_async('0b1c2d3e-4f50-4617-8829-3a4b5c6d7e8f', '{}')$$);
ROLLBACK;

-- the HTTP handle keeps a connection's options only for that connection:
-- a server whose ca_file trusts the TLS simulator, then one without, then
-- the first again, each call in turn
\getenv tls_url MAESTRO_TLS_URL
\getenv certs MAESTRO_CERTS
\set ca_file :certs '/ca.pem'
CREATE SERVER cc_ca FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'tls_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10', ca_file :'ca_file');
CREATE USER MAPPING FOR CURRENT_USER SERVER cc_ca OPTIONS (access_token 'sim-token');
CREATE SERVER cc_noca FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'tls_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE USER MAPPING FOR CURRENT_USER SERVER cc_noca OPTIONS (access_token 'sim-token');
SET maestro.server = 'cc_ca';
SELECT mt.call();
SET maestro.server = 'cc_noca';
SELECT mt.call();
SET maestro.server = 'cc_ca';
SELECT mt.call();
SELECT mt.call();
SET maestro.server = 'cc_noca';
SELECT mt.call();
RESET maestro.server;
-- a changed timeout applies at the next call on the same connection:
-- every answer of server "faulty" now takes 1.5 s
SET maestro.server = 'faulty';
SET maestro.max_retries = 0;
SELECT mt.fault('key=cc;latency_ms=1500');
SELECT mt.call();
SET maestro.request_timeout = 300;
SELECT mt.call();
RESET maestro.request_timeout;
SELECT mt.call();
ALTER SERVER faulty OPTIONS (SET base_url :'sim_url');
RESET maestro.max_retries;
RESET maestro.server;
DROP SERVER cc_ca CASCADE;
DROP SERVER cc_noca CASCADE;

-- what a request says of itself: every one names maestro; a GET asks for
-- a compressed answer (lists can be megabytes), a POST does not (its
-- answer is a small object)
SET maestro.server = 'sim';
\! python3 test/simulator/sim_requests.py --clear
SELECT count(*) > 0 AS listed FROM maestro_workflows();
SELECT instance_id IS NOT NULL AS started
  FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{"Name": "C", "Email": "c@example.com"}', 'conn_cache headers');
\! curl -s "$MAESTRO_SIM_URL/__sim/requests" | python3 -c 'import json, re, sys; [print(e["method"], re.sub(r"^.*/v1/accounts/[^/]+", "", e["path"]), e["user_agent"].split("/")[0], "gzip" in (e["accept_encoding"] or "")) for e in json.load(sys.stdin)]'
RESET maestro.server;

DROP FUNCTION mt.call_as_alice();
DROP FUNCTION mt.call_as_owner();
DROP FUNCTION mt.call();
DROP USER MAPPING FOR PUBLIC SERVER sim;
DROP USER MAPPING FOR cc_alice SERVER sim;
DROP USER MAPPING FOR cc_bob SERVER sim;
REVOKE USAGE ON FOREIGN SERVER sim FROM cc_bob, cc_users;
REVOKE USAGE ON SCHEMA mt FROM cc_alice, cc_bob;
DROP ROLE cc_alice;
DROP ROLE cc_bob;
DROP ROLE cc_users;
DROP SERVER cc CASCADE;
RESET maestro.server;
