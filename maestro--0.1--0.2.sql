/* maestro--0.1--0.2.sql: update maestro from 0.1 to 0.2 */

\echo Use "ALTER EXTENSION maestro UPDATE TO '0.2'" to load this file. \quit

-- Every SQL change after 0.1 goes here, in the order it was made; make
-- generates maestro--0.2.sql (fresh installs) from 0.1 and this file.

-- release-pkg (issue 8): the worker does not run against SQL objects older
-- than the library, so requests queued before this update may be waiting.
-- Wake it at commit (a fresh install has none queued and wakes nobody).
DO $$
BEGIN
  IF EXISTS (SELECT FROM @extschema@.maestro_trigger_requests WHERE state IN ('queued', 'sending')) THEN
    PERFORM @extschema@.maestro_wake();
  END IF;
EXCEPTION WHEN object_not_in_prerequisite_state THEN
  NULL;  -- maestro is not preloaded: no worker to wake; they go at the next start
END
$$;

-- Issue 11, points 3 and 4 (api-proxy-rates): DocuSign's rate-limit headers
-- as last seen per server. (The proxy options need no SQL: the validator
-- knows them.)
CREATE FUNCTION maestro_rate_limits(
  OUT server text, OUT "limit" bigint, OUT remaining bigint, OUT reset_at timestamptz,
  OUT burst_limit bigint, OUT burst_remaining bigint, OUT observed_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME'
LANGUAGE C VOLATILE PARALLEL SAFE;

COMMENT ON FUNCTION maestro_rate_limits() IS
'the rate-limit headers of the last API answer that carried any, per server of this database; what the view maestro_rate_limits shows';

CREATE VIEW maestro_rate_limits AS SELECT * FROM maestro_rate_limits();

COMMENT ON VIEW maestro_rate_limits IS
'per server, the last X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset (as reset_at), X-BurstLimit-Limit and X-BurstLimit-Remaining Maestro sent, and when (observed_at); NULL where a header was absent. While remaining is 0 and reset_at lies ahead (trusted for at most an hour), calls to the server fail at once with SQLSTATE 53400 and the worker holds its requests; server-wide when maestro is preloaded, else this backend''s';
