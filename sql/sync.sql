--
-- sync: a local mirror of the instances, status-change events, and
-- reporting views that cost no API call
--
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo
SET maestro.server = 'sim';
SET timezone = 'UTC';
-- what this test creates in the simulator is dated from now on
SELECT now() - interval '1 hour' AS test_began \gset

-- the first sync finds every instance: all are new, each is an event
SELECT maestro_sync();
SELECT workflow_id, id, name, workflow_status, started_at, first_seen_at = last_seen_at AS first_time
FROM maestro_synced_instances ORDER BY id;
SELECT workflow_id, instance_id, old_status, new_status FROM maestro_instance_events ORDER BY id;

-- unchanged: nothing to report, no event; last_seen_at moves on
SELECT max(last_seen_at) AS seen_before FROM maestro_synced_instances \gset
SELECT maestro_sync();
SELECT count(*) AS events FROM maestro_instance_events;
SELECT bool_and(last_seen_at > :'seen_before') AS seen_again FROM maestro_synced_instances;

-- a status change and a new instance: two changed, two events, two NOTIFYs
\! curl -s -X POST -d '{"workflow_status": "Completed"}' "$MAESTRO_SIM_URL/__sim/instances/b5500000-0000-4000-8000-000000000002/status" >/dev/null
SELECT instance_id IS NOT NULL AS triggered FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0002',
  '{"Amount": 5, "Approver": "x@example.com"}', 'PO-7');
\! psql -X -q -d contrib_regression -c "SET maestro.server = 'sim'" -c "LISTEN maestro_instance" -c "SELECT 'changed: ' || maestro_sync()" -At | sed -nE -e 's/^(changed: .*)/\1/p' -e 's/^Asynchronous notification "maestro_instance" with payload .*"old_status" : ("[^"]*"|null), "new_status" : "([^"]*)".*/notified: \1 -> \2/p' | sort
SELECT old_status, new_status, name
FROM maestro_instance_events e JOIN maestro_synced_instances i ON i.id = e.instance_id
WHERE e.id > 4 ORDER BY e.id;
-- the change is in the mirror; ended_at came with it
SELECT workflow_status, ended_at IS NOT NULL AS ended FROM maestro_synced_instances
WHERE id = 'b5500000-0000-4000-8000-000000000002';

-- one workflow only
\! curl -s -X POST -d '{"workflow_status": "Canceled"}' "$MAESTRO_SIM_URL/__sim/instances/b5500000-0000-4000-8000-000000000004/status" >/dev/null
SELECT maestro_sync('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001') AS changed_in_onboarding;
SELECT workflow_status FROM maestro_synced_instances WHERE id = 'b5500000-0000-4000-8000-000000000004';
SELECT maestro_sync('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0002') AS changed_in_approval;

-- a failure half-way leaves the mirror and the events as they were: the
-- first workflow's change is read, then the third workflow's list is too big
-- (one call per workflow, as where the API lacks the account-wide list; its
-- paged walk fails half-way in account_instances.sql)
\! curl -s -X POST -d '{"enabled": false}' "$MAESTRO_SIM_URL/__sim/account-instances" >/dev/null
\! curl -s -X POST -d '{"workflow_id": "a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0003", "count": 10000, "status": "Completed"}' "$MAESTRO_SIM_URL/__sim/instances" >/dev/null
\! curl -s -X POST -d '{"workflow_status": "Failed"}' "$MAESTRO_SIM_URL/__sim/instances/b5500000-0000-4000-8000-000000000002/status" >/dev/null
SELECT count(*) AS mirrored, (SELECT count(*) FROM maestro_instance_events) AS events FROM maestro_synced_instances;
SET maestro.max_response_size = '64kB';
SELECT mt.state('SELECT maestro_sync()');
RESET maestro.max_response_size;
\! curl -s -X POST -d '{"enabled": true}' "$MAESTRO_SIM_URL/__sim/account-instances" >/dev/null
SELECT count(*) AS mirrored, (SELECT count(*) FROM maestro_instance_events) AS events,
       (SELECT workflow_status FROM maestro_synced_instances WHERE id = 'b5500000-0000-4000-8000-000000000002') AS status
FROM maestro_synced_instances;

-- a workflow with 10,000 instances
SELECT maestro_sync() AS changed;
SELECT workflow_id, count(*) FROM maestro_synced_instances GROUP BY 1 ORDER BY 1;

-- the reporting views, on known data (the seeded instances and the 10,000)
SELECT * FROM maestro_instances_by_status ORDER BY workflow_id, workflow_status;
SELECT workflow_id, completed, mean_duration, median_duration, p95_duration
FROM maestro_completion_times WHERE workflow_id <> 'a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0003' ORDER BY 1;
SELECT count(*) AS stuck FROM maestro_stuck_instances('1 day');
SELECT name, workflow_status FROM maestro_stuck_instances('0 seconds');
-- the seeded instances, day by day
SELECT day::date, workflow_id, started, completed, canceled, failed
FROM maestro_daily_activity WHERE day < date_trunc('day', :'test_began'::timestamptz) ORDER BY 1, 2;
-- and what this test did (one trigger, the 10,000, the status changes),
-- summed over the days it ran on
SELECT workflow_id, sum(started) AS started, sum(completed) AS completed,
       sum(canceled) AS canceled, sum(failed) AS failed
FROM maestro_daily_activity WHERE day >= date_trunc('day', :'test_began'::timestamptz)
GROUP BY 1 ORDER BY 1;

-- from a queued request to its instance's status
INSERT INTO maestro_trigger_requests (server_id, requested_by, workflow_id, inputs, instance_name,
                                      state, instance_id)
VALUES ((SELECT oid FROM pg_foreign_server WHERE srvname = 'sim'), current_user::regrole,
        'a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{}', 'linked', 'done',
        'b5500000-0000-4000-8000-000000000002');
SELECT request_state, instance_id, workflow_status FROM maestro_trigger_request_instances;
DELETE FROM maestro_trigger_requests;

-- a mirror of another account's data is not for everyone
SELECT grantee, privilege_type FROM information_schema.role_table_grants
WHERE table_name IN ('maestro_synced_instances', 'maestro_instance_events') AND grantee = 'PUBLIC';
