--
-- privileges: USAGE on the server and a user mapping decide who may call
--
SET maestro.server = 'sim';
CREATE ROLE maestro_reader;
CREATE ROLE maestro_other;
GRANT USAGE ON SCHEMA mt TO maestro_reader, maestro_other;

-- no USAGE on the server: a permission error that names it
SET ROLE maestro_reader;
SELECT mt.try('SELECT * FROM maestro_workflows()');
SELECT mt.try($$SELECT maestro_pause('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001')$$);
RESET ROLE;

-- USAGE but no user mapping: the error names the role and what to create
GRANT USAGE ON FOREIGN SERVER sim TO maestro_reader;
SET ROLE maestro_reader;
SELECT mt.try('SELECT * FROM maestro_workflows()');
RESET ROLE;

-- its own mapping works
CREATE USER MAPPING FOR maestro_reader SERVER sim OPTIONS (access_token 'sim-token');
SET ROLE maestro_reader;
SELECT count(*) FROM maestro_workflows();
-- it sees its own mapping's options, never another role's
SELECT usename, umoptions IS NOT NULL AS sees_options FROM pg_user_mappings WHERE srvname = 'sim' ORDER BY usename;
-- nor change where the server sends the token
ALTER SERVER sim OPTIONS (SET base_url 'https://attacker.example');
RESET ROLE;

-- a mapping with a wrong token is the remote's 401, not a local error
CREATE USER MAPPING FOR maestro_other SERVER sim OPTIONS (access_token 'wrong-token');
GRANT USAGE ON FOREIGN SERVER sim TO maestro_other;
SET ROLE maestro_other;
SELECT mt.try('SELECT * FROM maestro_workflows()');
RESET ROLE;

-- a PUBLIC mapping serves roles without their own
DROP USER MAPPING FOR maestro_other SERVER sim;
CREATE USER MAPPING FOR PUBLIC SERVER sim OPTIONS (access_token 'sim-token');
SET ROLE maestro_other;
SELECT count(*) FROM maestro_workflows();
RESET ROLE;
DROP USER MAPPING FOR PUBLIC SERVER sim;

-- a mapping without access_token
CREATE USER MAPPING FOR maestro_other SERVER sim;
SET ROLE maestro_other;
SELECT mt.try('SELECT * FROM maestro_workflows()');
RESET ROLE;

-- a view owned by another role still calls as the querying role: the
-- view's owner lends no user mapping
CREATE VIEW reader_workflows AS SELECT name FROM maestro_workflows();
ALTER VIEW reader_workflows OWNER TO maestro_reader;
GRANT SELECT ON reader_workflows TO maestro_other;
DROP USER MAPPING FOR maestro_other SERVER sim;
SET ROLE maestro_other;
SELECT mt.state('SELECT * FROM reader_workflows');
RESET ROLE;
DROP VIEW reader_workflows;
CREATE USER MAPPING FOR maestro_other SERVER sim;

-- no SECURITY DEFINER function without a pinned search_path; the queue's
-- tables grant PUBLIC nothing but SELECT
SELECT count(*) AS unpinned_security_definer FROM pg_proc p
  JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'maestro'
WHERE p.prosecdef AND NOT coalesce(p.proconfig::text LIKE '%search_path=%', false);
SELECT c.relname, a.privilege_type FROM pg_class c
  JOIN pg_depend d ON d.objid = c.oid AND d.classid = 'pg_class'::regclass
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'maestro',
  LATERAL aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
WHERE a.grantee = 0 ORDER BY 1, 2;

-- revoking USAGE takes effect at once
REVOKE USAGE ON FOREIGN SERVER sim FROM maestro_reader;
SET ROLE maestro_reader;
SELECT mt.state('SELECT * FROM maestro_workflows()');
RESET ROLE;

DROP USER MAPPING FOR maestro_reader SERVER sim;
DROP USER MAPPING FOR maestro_other SERVER sim;
REVOKE USAGE ON FOREIGN SERVER sim FROM maestro_other;
REVOKE USAGE ON SCHEMA mt FROM maestro_reader, maestro_other;
DROP ROLE maestro_reader;
DROP ROLE maestro_other;
