/* maestro--0.2--0.3.sql: update maestro from 0.2 to 0.3 */

\echo Use "ALTER EXTENSION maestro UPDATE TO '0.3'" to load this file. \quit

-- Every SQL change after 0.2 goes here, in the order it was made; make
-- generates maestro--0.3.sql (fresh installs) from 0.1 and the upgrade
-- scripts.

-- As in every update: the worker does not run against SQL objects older
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

-- ---------------------------------------------------------------------
-- speed (issue 10): the queue's state check costs a fifth of an enqueue
--
-- PostgreSQL compiles a table's CHECK constraints anew for every INSERT
-- statement it executes (their stored text is read back into an expression
-- and planned), and maestro_trigger_async executes one INSERT per row: the
-- check of state took 18% of a queued row's time (perf: stringToNode,
-- expression_planner). Only maestro writes the table (roles may only read
-- their own rows), always with one of the four states, so the check guarded
-- nothing a caller could do. Its values are now in the column's comment.
-- (A domain would keep the check at no cost per row, but changing the
-- column's type would fail this update in any database with a view of its
-- own over the column.)
ALTER TABLE @extschema@.maestro_trigger_requests
  DROP CONSTRAINT maestro_trigger_requests_state_check;

COMMENT ON COLUMN @extschema@.maestro_trigger_requests.state IS
'queued (waiting to be sent, or to be sent again), sending (claimed by the worker), done (started; instance_id is the instance) or failed (a final error, in last_error); written only by maestro';
