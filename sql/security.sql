--
-- security: holes found in review (issue 9): a planted function in the
-- inserting role's search_path, who may name a CA file, encrypted private
-- keys, and token lifetimes from the network
--
\getenv sim_url MAESTRO_SIM_URL
\getenv certs MAESTRO_CERTS
\getenv ik MAESTRO_INTEGRATION_KEY
\getenv user_id MAESTRO_JWT_USER
\set ca_file :certs '/ca.pem'
\set jwt_key `cat "$MAESTRO_CERTS/jwt_private.pem"`
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo
SET maestro.server = 'sim';

--
-- 1. search_path: the row trigger runs as the inserting role, with that
-- role's search_path. A role that can create in a schema ahead of the
-- extension's plants functions there; none of them may run.
--
CREATE ROLE sec_planter;
CREATE ROLE sec_clerk;
CREATE SCHEMA planted AUTHORIZATION sec_planter;
CREATE TABLE planted_calls (what text, ran_as name);
GRANT INSERT ON planted_calls TO PUBLIC;
GRANT USAGE ON SCHEMA planted TO sec_clerk;
GRANT USAGE ON FOREIGN SERVER sim TO sec_clerk;
CREATE USER MAPPING FOR sec_clerk SERVER sim OPTIONS (access_token 'sim-token');
CREATE TABLE signups (email text, full_name text);
GRANT INSERT ON signups TO sec_clerk;
CREATE TRIGGER onboard AFTER INSERT ON signups FOR EACH ROW
  EXECUTE FUNCTION maestro_enqueue_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001',
    '{"Email": "email", "Name": "full_name"}', 'Signup {email}');

SET ROLE sec_planter;
-- the extension's own function, same signature, earlier in the path
CREATE FUNCTION planted.maestro_trigger_async(uuid, jsonb, text) RETURNS bigint
LANGUAGE sql AS $$
  INSERT INTO public.planted_calls VALUES ('maestro_trigger_async', current_user) RETURNING -1::bigint
$$;
RESET ROLE;
SET ROLE sec_clerk;
SET search_path = planted, public;
SET client_min_messages = error;	-- "no worker will send it": no preload here
INSERT INTO signups VALUES ('sam@example.com', 'Sam');
RESET client_min_messages;
RESET search_path;
RESET ROLE;
SELECT * FROM planted_calls;
SELECT inputs, regexp_replace(instance_name, ' \[mq .*\]$', '') AS name, requested_by
FROM maestro_trigger_requests WHERE instance_name LIKE 'Signup %' ORDER BY id;

-- a built-in that a planted function matches better (pg_catalog's
-- to_jsonb takes anyelement, this one the table's row type exactly):
-- qualifying the extension's own calls alone would not stop it
SET ROLE sec_planter;
CREATE FUNCTION planted.to_jsonb(public.signups) RETURNS jsonb
LANGUAGE sql AS $$
  INSERT INTO public.planted_calls VALUES ('to_jsonb', current_user)
  RETURNING '{"email": "planted", "full_name": "planted"}'::jsonb
$$;
RESET ROLE;
SET ROLE sec_clerk;
SET search_path = planted, public;
SET client_min_messages = error;
INSERT INTO signups VALUES ('kim@example.com', 'Kim');
RESET client_min_messages;
RESET search_path;
RESET ROLE;
SELECT * FROM planted_calls;
SELECT inputs, regexp_replace(instance_name, ' \[mq .*\]$', '') AS name
FROM maestro_trigger_requests WHERE instance_name LIKE 'Signup %' ORDER BY id;

-- every SQL and PL/pgSQL function of the extension runs with a pinned path
SELECT p.proname, l.lanname, p.proconfig
FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
     JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
     JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'maestro'
WHERE l.lanname IN ('sql', 'plpgsql')
ORDER BY 1;

DELETE FROM maestro_trigger_requests;
DROP SCHEMA planted CASCADE;
DROP TABLE signups, planted_calls;
DROP USER MAPPING FOR sec_clerk SERVER sim;
REVOKE ALL ON FOREIGN SERVER sim FROM sec_clerk;
DROP ROLE sec_clerk, sec_planter;

--
-- 2. ca_file names a file on the database server: only a superuser may
-- name one. A role with USAGE on the wrapper learns nothing about the
-- server's files (no access() probe for it).
--
CREATE ROLE sec_owner;
GRANT USAGE ON FOREIGN DATA WRAPPER maestro TO sec_owner;
SET ROLE sec_owner;
CREATE SERVER sec_srv FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'sim_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10', ca_file '/etc/passwd');
CREATE SERVER sec_srv FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'sim_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
-- an existing file and a missing one get the same answer
ALTER SERVER sec_srv OPTIONS (ADD ca_file '/etc/passwd');
ALTER SERVER sec_srv OPTIONS (ADD ca_file '/nonexistent/ca.pem');
RESET ROLE;
-- a superuser may, and the file is checked for them
ALTER SERVER sec_srv OPTIONS (ADD ca_file '/nonexistent/ca.pem');
ALTER SERVER sec_srv OPTIONS (ADD ca_file :'ca_file');
-- the owner may still change the server's other options, keeping that file,
SET ROLE sec_owner;
ALTER SERVER sec_srv OPTIONS (SET base_url 'https://demo.docusign.net/api/rest');
-- and drop it, but not name another
ALTER SERVER sec_srv OPTIONS (SET ca_file '/etc/passwd');
ALTER SERVER sec_srv OPTIONS (DROP ca_file);
SELECT srvname, srvoptions FROM pg_foreign_server WHERE srvname = 'sec_srv';
RESET ROLE;
DROP SERVER sec_srv;
REVOKE USAGE ON FOREIGN DATA WRAPPER maestro FROM sec_owner;
DROP ROLE sec_owner;

--
-- 3. an encrypted private key is refused at once, never a passphrase
-- prompt on the server's terminal: PKCS#8 and traditional PEM
--
\set enc_key `openssl pkey -in "$MAESTRO_CERTS/jwt_private.pem" -aes256 -passout pass:secret 2>&1`
\set enc_trad_key `openssl rsa -in "$MAESTRO_CERTS/jwt_private.pem" -traditional -aes256 -passout pass:secret 2>/dev/null`
SELECT :'enc_key' LIKE '-----BEGIN ENCRYPTED PRIVATE KEY-----%' AS pkcs8_encrypted,
       :'enc_trad_key' LIKE E'%Proc-Type: 4,ENCRYPTED%' AS traditional_encrypted;
CREATE SERVER sec_jwt FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'sim_url', auth_url :'sim_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
\set VERBOSITY default
CREATE USER MAPPING FOR CURRENT_USER SERVER sec_jwt
  OPTIONS (integration_key :'ik', user_id :'user_id', private_key :'enc_key');
CREATE USER MAPPING FOR CURRENT_USER SERVER sec_jwt
  OPTIONS (integration_key :'ik', user_id :'user_id', private_key :'enc_trad_key');
-- one stored before this check (here: written into the catalog directly)
-- is refused at use, before anything is sent
CREATE USER MAPPING FOR CURRENT_USER SERVER sec_jwt
  OPTIONS (integration_key :'ik', user_id :'user_id', private_key :'jwt_key');
UPDATE pg_user_mapping /* alters the user mapping behind the validator's back */
SET umoptions = array_replace(umoptions, 'private_key=' || :'jwt_key', 'private_key=' || :'enc_key')
WHERE umserver = (SELECT oid FROM pg_foreign_server WHERE srvname = 'sec_jwt');
SET maestro.server = 'sec_jwt';
SELECT mt.try('SELECT * FROM maestro_workflows()');
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=/oauth/token"; echo

--
-- 4. expires_in from the token endpoint is clamped (60 s .. 24 h): a
-- lifetime under a second must not make every call fetch a new token,
-- and a number too large for any clock must not break the cache
--
ALTER USER MAPPING FOR CURRENT_USER SERVER sec_jwt OPTIONS (SET private_key :'jwt_key');
-- the token endpoint answers with a fixed body (the token is one the API
-- accepts, written %73im-... so that no log holds it as it is)
SELECT format('%s/_fault/key=%s;body=%s', :'sim_url', key,
              replace(replace(body, '"', '%22'), ' ', '%20')) AS auth
FROM (VALUES ('exp_tiny', '{"access_token": "%73im-token", "token_type": "Bearer", "expires_in": 0.5}'))
     AS t(key, body) \gset
ALTER SERVER sec_jwt OPTIONS (SET auth_url :'auth');
SELECT count(*) FROM maestro_workflows();
SELECT count(*) FROM maestro_workflows();
SELECT pg_sleep(0.2);
SELECT count(*) FROM maestro_workflows();
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=key=exp_tiny"; echo
SELECT format('%s/_fault/key=%s;body=%s', :'sim_url', key,
              replace(replace(body, '"', '%22'), ' ', '%20')) AS auth
FROM (VALUES ('exp_huge', '{"access_token": "%73im-token", "token_type": "Bearer", "expires_in": 1e300}'))
     AS t(key, body) \gset
ALTER SERVER sec_jwt OPTIONS (SET auth_url :'auth');
SELECT count(*) FROM maestro_workflows();
SELECT count(*) FROM maestro_workflows();
SELECT count(*) FROM maestro_workflows();
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=key=exp_huge"; echo
SELECT format('%s/_fault/key=%s;body=%s', :'sim_url', key,
              replace(replace(body, '"', '%22'), ' ', '%20')) AS auth
FROM (VALUES ('exp_negative', '{"access_token": "%73im-token", "token_type": "Bearer", "expires_in": -5}'))
     AS t(key, body) \gset
ALTER SERVER sec_jwt OPTIONS (SET auth_url :'auth');
SELECT count(*) FROM maestro_workflows();
SELECT count(*) FROM maestro_workflows();
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=key=exp_negative"; echo

RESET maestro.server;
DROP SERVER sec_jwt CASCADE;
