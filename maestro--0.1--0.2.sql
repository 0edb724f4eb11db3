/* maestro--0.1--0.2.sql: update maestro from 0.1 to 0.2 */

\echo Use "ALTER EXTENSION maestro UPDATE TO '0.2'" to load this file. \quit

-- Every SQL change after 0.1 goes here, in the order it was made; make
-- generates maestro--0.2.sql (fresh installs) from 0.1 and this file.

-- Retention and failover (issue 9): the worker deletes finished requests
-- past maestro.request_retention and events past maestro.event_retention,
-- oldest first, and after a promotion looks up every unfinished request
-- before sending it.

CREATE INDEX maestro_trigger_requests_finished
  ON maestro_trigger_requests (done_at) WHERE state IN ('done', 'failed');

COMMENT ON INDEX maestro_trigger_requests_finished IS
'finds the finished requests past maestro.request_retention, oldest first, without reading the queue';

CREATE INDEX maestro_instance_events_seen
  ON maestro_instance_events (seen_at);

COMMENT ON INDEX maestro_instance_events_seen IS
'finds the events past maestro.event_retention, oldest first';

CREATE TABLE maestro_worker_state (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  timeline bigint NOT NULL,
  changed_at timestamptz NOT NULL DEFAULT now());

COMMENT ON TABLE maestro_worker_state IS
'one row: the WAL timeline the worker last worked the queue on; when it starts on another (after a promotion or a point-in-time recovery), it looks up every request that is not done or failed before sending it';

-- written by the worker only; not dumped: a restored database starts afresh
REVOKE ALL ON maestro_worker_state FROM PUBLIC;
