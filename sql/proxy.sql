--
-- proxy: the server option proxy and the user mapping's proxy_user and
-- proxy_password; checked at CREATE/ALTER, credentials never echoed, a
-- proxy that is down is 08006 with a hint naming it. (Calls through a real
-- proxy, HTTPS through CONNECT, and the postmaster's proxy environment
-- being ignored are in test/tap/t/050_proxy.pl.)
--
\getenv sim_url MAESTRO_SIM_URL
-- what a proxy may be
CREATE SERVER px FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'sim_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10',
           proxy 'http://127.0.0.1:9');
ALTER SERVER px OPTIONS (SET proxy 'https://proxy.example.com:3128/');
ALTER SERVER px OPTIONS (SET proxy 'socks5h://127.0.0.1:1080');
SELECT option_value FROM pg_foreign_server, pg_options_to_table(srvoptions)
WHERE srvname = 'px' AND option_name = 'proxy';
-- and what not: credentials in a world-readable option are refused unechoed
ALTER SERVER px OPTIONS (SET proxy 'http://puser:url-pa55word@127.0.0.1:3128');
ALTER SERVER px OPTIONS (SET proxy 'http://puser@127.0.0.1:3128');
ALTER SERVER px OPTIONS (SET proxy 'http://puser:url-pa55word@[bad');
ALTER SERVER px OPTIONS (SET proxy 'puser:url-pa55word@127.0.0.1:3128');
ALTER SERVER px OPTIONS (SET proxy 'socks5://127.0.0.1:1080');
ALTER SERVER px OPTIONS (SET proxy 'ftp://127.0.0.1:21');
ALTER SERVER px OPTIONS (SET proxy '127.0.0.1:3128');
ALTER SERVER px OPTIONS (SET proxy 'http://127.0.0.1:3128/some/path');
ALTER SERVER px OPTIONS (SET proxy 'http://127.0.0.1:3128/?a=b');
ALTER SERVER px OPTIONS (SET proxy 'http://:3128');
-- the credentials belong in the user mapping
CREATE USER MAPPING FOR CURRENT_USER SERVER px
  OPTIONS (access_token 'sim-token', proxy_password 'x');
CREATE USER MAPPING FOR CURRENT_USER SERVER px
  OPTIONS (access_token 'sim-token', proxy_user 'a:b', proxy_password 'x');
CREATE USER MAPPING FOR CURRENT_USER SERVER px
  OPTIONS (access_token 'sim-token', proxy_user '', proxy_password 'x');
CREATE USER MAPPING FOR CURRENT_USER SERVER px
  OPTIONS (access_token 'sim-token', proxy_user 'puser', proxy_password 'pr0xy-s3cret-pw');
ALTER SERVER px OPTIONS (proxy_user 'x');
-- other roles cannot read the password: it is a user-mapping option
CREATE ROLE maestro_px_reader;
SET ROLE maestro_px_reader;
SELECT umoptions IS NULL AS hidden, srvoptions::text LIKE '%127.0.0.1%' AS proxy_readable
FROM pg_user_mappings m JOIN pg_foreign_server s ON m.srvid = s.oid WHERE m.srvname = 'px';
RESET ROLE;
DROP ROLE maestro_px_reader;

-- a proxy that is down: 08006, the hint names it, the password appears nowhere
ALTER SERVER px OPTIONS (SET proxy 'http://127.0.0.1:9');
SET maestro.server = 'px';
SET maestro.max_retries = 0;
SELECT mt.try('SELECT * FROM maestro_workflows()') ~ '^08006: could not complete the Maestro request' AS transport_error,
       mt.try('SELECT * FROM maestro_workflows()') LIKE '%hint: The request went through the proxy http://127.0.0.1:9 (server option proxy)%' AS hint_names_proxy,
       strpos(mt.try('SELECT * FROM maestro_workflows()'),
              (SELECT option_value FROM pg_user_mappings, pg_options_to_table(umoptions)
               WHERE srvname = 'px' AND option_name = 'proxy_password')) > 0 AS password_shown;
-- the same for a trigger (never retried) and for a socks5h proxy
SELECT split_part(mt.try($$SELECT * FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{}', 'via a dead proxy')$$), E'\n', 1);
ALTER SERVER px OPTIONS (SET proxy 'socks5h://127.0.0.1:9');
SELECT mt.try('SELECT * FROM maestro_workflows()') ~ '^08006: ' AS transport_error,
       mt.try('SELECT * FROM maestro_workflows()') LIKE '%hint: The request went through the proxy socks5h://127.0.0.1:9 %' AS hint_names_proxy;
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=via%20a%20dead"; echo

-- without the option, calls go straight to base_url
ALTER SERVER px OPTIONS (DROP proxy);
SELECT count(*) FROM maestro_workflows();

-- a 407 from something on the way names the options to set
ALTER SERVER px OPTIONS (SET base_url :'sim_url');
SELECT format('%s/_fault/status=407', :'sim_url') AS url407 \gset
ALTER SERVER px OPTIONS (SET base_url :'url407');
SELECT mt.try('SELECT * FROM maestro_workflows()');

RESET maestro.server;
RESET maestro.max_retries;
DROP USER MAPPING FOR CURRENT_USER SERVER px;
DROP SERVER px;
