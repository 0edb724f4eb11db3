--
-- config: server and user-mapping options, and choosing the server
--
\set account '''7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10'''

-- the wrapper and its validator exist
SELECT fdwname, fdwvalidator::regproc FROM pg_foreign_data_wrapper WHERE fdwname = 'maestro';

-- account_id is required and must be a uuid
CREATE SERVER bad FOREIGN DATA WRAPPER maestro;
CREATE SERVER bad FOREIGN DATA WRAPPER maestro OPTIONS (account_id '12345');
CREATE SERVER bad FOREIGN DATA WRAPPER maestro OPTIONS (account_id '7f09961a42f94c2b9d5e3f1f0f6a2b10');

-- unknown options, in every context
CREATE SERVER bad FOREIGN DATA WRAPPER maestro OPTIONS (account_id :account, host 'x');
CREATE SERVER bad FOREIGN DATA WRAPPER maestro OPTIONS (account_id :account, access_token 'x');
ALTER USER MAPPING FOR CURRENT_USER SERVER sim OPTIONS (ADD password 'x');
ALTER FOREIGN DATA WRAPPER maestro OPTIONS (ADD base_url 'https://api.docusign.com');

-- base_url must be an absolute http(s) URL without credentials or query
CREATE SERVER bad FOREIGN DATA WRAPPER maestro OPTIONS (account_id :account, base_url 'api.docusign.com');
CREATE SERVER bad FOREIGN DATA WRAPPER maestro OPTIONS (account_id :account, base_url 'ftp://api.docusign.com');
CREATE SERVER bad FOREIGN DATA WRAPPER maestro OPTIONS (account_id :account, base_url 'file:///etc/passwd');
CREATE SERVER bad FOREIGN DATA WRAPPER maestro OPTIONS (account_id :account, base_url 'https://user:pw@api.docusign.com');
CREATE SERVER bad FOREIGN DATA WRAPPER maestro OPTIONS (account_id :account, base_url 'https://api.docusign.com/?x=1');
CREATE SERVER bad FOREIGN DATA WRAPPER maestro OPTIONS (account_id :account, base_url 'https://');

-- ALTER is validated too, and a failed ALTER changes nothing
CREATE SERVER demo FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url 'https://api-d.docusign.com/', account_id :account);
ALTER SERVER demo OPTIONS (SET base_url 'gopher://api-d.docusign.com');
ALTER SERVER demo OPTIONS (DROP account_id);
SELECT srvoptions FROM pg_foreign_server WHERE srvname = 'demo';

-- the access token is checked without ever being echoed
CREATE USER MAPPING FOR CURRENT_USER SERVER demo OPTIONS (access_token '');
CREATE USER MAPPING FOR CURRENT_USER SERVER demo OPTIONS (access_token 'Bearer s3cr3t-t0ken');
CREATE USER MAPPING FOR CURRENT_USER SERVER demo OPTIONS (access_token E's3cr3t\r\nX-Injected: 1');
CREATE USER MAPPING FOR CURRENT_USER SERVER demo OPTIONS (access_token 's3cr3t-t0ken');
ALTER USER MAPPING FOR CURRENT_USER SERVER demo OPTIONS (ADD base_url 'https://x');

-- choosing the server: several exist and maestro.server is unset
RESET maestro.server;
SELECT mt.try('SELECT * FROM maestro_workflows()');
-- a name that does not exist, or a server of another wrapper
SET maestro.server = 'nope';
SELECT mt.try('SELECT * FROM maestro_workflows()');
CREATE FOREIGN DATA WRAPPER other_wrapper;
CREATE SERVER other_server FOREIGN DATA WRAPPER other_wrapper;
SET maestro.server = 'other_server';
SELECT mt.try('SELECT * FROM maestro_workflows()');
DROP SERVER other_server;
DROP FOREIGN DATA WRAPPER other_wrapper;
-- the chosen server is used
SET maestro.server = 'sim';
SELECT count(*) FROM maestro_workflows();
-- with exactly one maestro server, maestro.server may stay unset
RESET maestro.server;
DROP SERVER demo CASCADE;
DROP SERVER faulty CASCADE;
SELECT count(*) FROM maestro_workflows();
SELECT mt.try($$CREATE SERVER faulty FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url 'http://127.0.0.1:1', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10')$$);
CREATE USER MAPPING FOR CURRENT_USER SERVER faulty OPTIONS (access_token 'sim-token');

-- GUCs take units, and the prefix is reserved
SET maestro.request_timeout = '2s';
SHOW maestro.request_timeout;
SET maestro.connect_timeout = 1500;
SHOW maestro.connect_timeout;
SET maestro.max_response_size = '1MB';
SHOW maestro.max_response_size;
SET maestro.max_retries = 11;
SET maestro.no_such_setting = 1;
RESET ALL;
SELECT name, setting, unit FROM pg_settings
WHERE name LIKE 'maestro.%' AND name <> 'maestro.database_name' ORDER BY name;
