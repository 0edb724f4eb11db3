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
