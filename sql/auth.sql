--
-- auth: the OAuth JWT grant and its token cache, and TLS verification
--
-- The simulator's token endpoint accepts the test integration key and user,
-- checks the assertion's RS256 signature against the test public key, and
-- issues tokens that live as long as /__sim/oauth/lifetime says.
\getenv sim_url MAESTRO_SIM_URL
\getenv tls_url MAESTRO_TLS_URL
\getenv certs MAESTRO_CERTS
\getenv ik MAESTRO_INTEGRATION_KEY
\getenv user_id MAESTRO_JWT_USER
\set jwt_key `cat "$MAESTRO_CERTS/jwt_private.pem"`
\set pkcs1_key `cat "$MAESTRO_CERTS/jwt_private_pkcs1.pem"`
\set other_key `cat "$MAESTRO_CERTS/jwt_other_private.pem"`
\set ca_file :certs '/ca.pem'
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo

CREATE SERVER jwt FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'sim_url', auth_url :'sim_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');

-- the options are checked when they are set
CREATE USER MAPPING FOR CURRENT_USER SERVER jwt OPTIONS (integration_key :'ik');
CREATE USER MAPPING FOR CURRENT_USER SERVER jwt
  OPTIONS (integration_key 'my-app', user_id :'user_id', private_key :'jwt_key');
CREATE USER MAPPING FOR CURRENT_USER SERVER jwt
  OPTIONS (integration_key :'ik', user_id :'user_id', private_key 'MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcw');
CREATE USER MAPPING FOR CURRENT_USER SERVER jwt
  OPTIONS (integration_key :'ik', user_id :'user_id', private_key :'jwt_key', access_token 'abc');
ALTER SERVER jwt OPTIONS (ADD scopes '');
ALTER SERVER jwt OPTIONS (ADD scopes 'signature "aow_manage"');
ALTER SERVER jwt OPTIONS (ADD ca_file 'ca.pem');
ALTER SERVER jwt OPTIONS (ADD ca_file '/nonexistent/ca.pem');
ALTER SERVER jwt OPTIONS (SET auth_url 'ldap://127.0.0.1');

-- the grant: one token serves every call until shortly before it expires
-- (tokens live an hour here, so that no pause of a slow machine ends one)
\! curl -s -X POST -d '{"seconds": 3600}' "$MAESTRO_SIM_URL/__sim/oauth/lifetime"; echo
CREATE USER MAPPING FOR CURRENT_USER SERVER jwt
  OPTIONS (integration_key :'ik', user_id :'user_id', private_key :'jwt_key');
SELECT usename, umoptions IS NOT NULL AS has_options FROM pg_user_mappings WHERE srvname = 'jwt';
SET maestro.server = 'jwt';
SELECT count(*) FROM maestro_workflows();
SELECT count(*) FROM maestro_instances('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001');
\! curl -s "$MAESTRO_SIM_URL/__sim/oauth/tokens"; echo
-- the API refuses the token (revoked): it is replaced and the call sent once
-- more; the new token lives 3 s, for the next step
\! curl -s -X POST -d '{"seconds": 3}' "$MAESTRO_SIM_URL/__sim/oauth/lifetime"; echo
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/oauth/expire" >/dev/null
SELECT maestro_pause('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001');
\! curl -s "$MAESTRO_SIM_URL/__sim/oauth/tokens"; echo
\! curl -s "$MAESTRO_SIM_URL/__sim/requests?path_contains=actions/pause" | python3 -c 'import json,sys; print(sum(1 for r in json.load(sys.stdin) if not r["path"].startswith("/_fault")))'
-- the token expires: a new one is minted (3 s is a lower bound: the token was
-- minted before the sleep began, so it is past its time whatever the load)
SELECT pg_sleep(3);
\! curl -s -X POST -d '{"seconds": 3600}' "$MAESTRO_SIM_URL/__sim/oauth/lifetime"; echo
SELECT count(*) FROM maestro_workflows();
\! curl -s "$MAESTRO_SIM_URL/__sim/oauth/tokens"; echo
-- the assertion the simulator verified: claims and the form body
\! curl -s "$MAESTRO_SIM_URL/__sim/requests?path_contains=/oauth/token" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(len(r), sorted({x["oauth"] for x in r}), r[0]["body"])'
-- a key in PKCS#1 form works too, and a changed option takes effect at once
ALTER USER MAPPING FOR CURRENT_USER SERVER jwt OPTIONS (SET private_key :'pkcs1_key');
SELECT maestro_resume('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001');
\! curl -s "$MAESTRO_SIM_URL/__sim/oauth/tokens"; echo

-- refusals, each with what to fix
ALTER USER MAPPING FOR CURRENT_USER SERVER jwt OPTIONS (SET private_key :'other_key');
SELECT mt.try('SELECT * FROM maestro_workflows()');
ALTER USER MAPPING FOR CURRENT_USER SERVER jwt OPTIONS (SET private_key :'jwt_key', SET integration_key 'aaaaaaaa-2222-4333-8444-555555555555');
SELECT mt.try('SELECT * FROM maestro_workflows()');
ALTER USER MAPPING FOR CURRENT_USER SERVER jwt OPTIONS (SET integration_key :'ik', SET user_id 'bbbbbbbb-a72e-452f-95f0-9f19654cb620');
SELECT mt.try('SELECT * FROM maestro_workflows()');
ALTER USER MAPPING FOR CURRENT_USER SERVER jwt OPTIONS (SET user_id :'user_id');
ALTER SERVER jwt OPTIONS (ADD scopes 'signature');
SELECT mt.try('SELECT * FROM maestro_workflows()');
ALTER SERVER jwt OPTIONS (DROP scopes);
-- the user has not consented: the hint carries the consent URL
\! curl -s -X POST -d "{\"user\": \"$MAESTRO_JWT_USER\", \"consented\": false}" "$MAESTRO_SIM_URL/__sim/oauth/consent" >/dev/null
ALTER SERVER jwt OPTIONS (ADD scopes 'signature aow_manage');
SELECT replace(mt.try('SELECT * FROM maestro_workflows()'), :'sim_url', '<sim_url>') AS try;
\! curl -s -X POST -d "{\"user\": \"$MAESTRO_JWT_USER\", \"consented\": true}" "$MAESTRO_SIM_URL/__sim/oauth/consent" >/dev/null
SELECT count(*) FROM maestro_workflows();
-- the account server fails
SELECT format('%s/_fault/status=503;format=text', :'sim_url') AS broken_auth \gset
ALTER SERVER jwt OPTIONS (SET auth_url :'broken_auth', SET scopes 'signature aow_manage impersonation');
SELECT mt.state('SELECT * FROM maestro_workflows()');
-- a base_url that is not DocuSign's needs auth_url
ALTER SERVER jwt OPTIONS (DROP auth_url);
SELECT mt.try('SELECT * FROM maestro_workflows()');

-- TLS: certificates are verified; ca_file names the CA to trust
CREATE SERVER tls FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'tls_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE USER MAPPING FOR CURRENT_USER SERVER tls OPTIONS (access_token 'sim-token');
SET maestro.server = 'tls';
SELECT mt.try('SELECT * FROM maestro_workflows()');
ALTER SERVER tls OPTIONS (ADD ca_file :'ca_file');
SELECT count(*) FROM maestro_workflows();
-- a certificate from another CA is refused even with ca_file set
\set selfsigned_ca :certs '/selfsigned.pem'
ALTER SERVER tls OPTIONS (SET ca_file :'selfsigned_ca');
SELECT mt.try('SELECT * FROM maestro_workflows()');

RESET maestro.server;
\! curl -s -X POST -d '{"seconds": null}' "$MAESTRO_SIM_URL/__sim/oauth/lifetime"; echo
DROP SERVER jwt CASCADE;
DROP SERVER tls CASCADE;
