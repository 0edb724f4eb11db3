--
-- account_instances: the account-wide instance list (GET /workflow-instances)
-- followed page by page, and maestro_all_instances / maestro_sync() over it,
-- with their fallback to one call per workflow
--
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo
SET maestro.server = 'sim';
SET timezone = 'UTC';
\set onboarding '''a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001'''
\set approval '''a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0002'''
\set nda '''a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0003'''
-- (sim_requests.py prints what reached the simulator since --clear)

-- every instance of the account, each with its workflow
SELECT workflow_id, id, name, workflow_status FROM maestro_account_instances() ORDER BY id;

-- parsed exactly like the per-workflow list: every column the same; raw
-- keeps the whole element, the workflow's id and undeclared fields included
SELECT count(*) AS instances, count(*) FILTER (WHERE a.j IS DISTINCT FROM p.j) AS differing
FROM (SELECT i.id, to_jsonb(i) - 'raw' AS j FROM maestro_account_instances() i) a
     FULL JOIN (SELECT i.id, to_jsonb(i) - 'raw' AS j
                FROM maestro_workflows() w, maestro_instances(w.id) i) p USING (id);
SELECT raw->>'workflow_id' AS raw_workflow_id, raw->>'priority' AS undeclared, trigger_inputs
FROM maestro_account_instances() WHERE id = 'b5500000-0000-4000-8000-000000000002';

-- the filters go to the API, each workflow id as a parameter of its own
\! python3 test/simulator/sim_requests.py --clear
SELECT id, workflow_status FROM maestro_account_instances('In Progress', ARRAY[:onboarding, :approval]::uuid[],
                                                          '0ccdbb0b-a72e-452f-95f0-9f19654cb620') ORDER BY id;
\! python3 test/simulator/sim_requests.py
-- and are not applied again here: what the API answers is what comes back
SET maestro.server = 'faulty';
SELECT mt.fault('status=200;body=' || replace(replace(
  '{"instances":[{"id":"b5500000-0000-4000-8000-000000000001","workflow_id":"a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001","workflow_status":"Completed"}]}',
  '"', '%22'), ' ', '%20'));
SELECT workflow_id, id, workflow_status FROM maestro_account_instances('In Progress', ARRAY[:approval]::uuid[]);
SET maestro.server = 'sim';

-- an element that does not name its workflow: the filter's one workflow,
-- else NULL; workflow_definition_id names it as well as workflow_id
\! curl -s -X POST -d '{"workflow_id_field": null}' "$MAESTRO_SIM_URL/__sim/account-instances"; echo
SELECT workflow_id, id FROM maestro_account_instances(workflow_ids => ARRAY[:approval]::uuid[]);
SELECT workflow_id, count(*) FROM maestro_account_instances(workflow_ids => ARRAY[:onboarding, :approval]::uuid[]) GROUP BY 1;
\! curl -s -X POST -d '{"workflow_id_field": "workflow_definition_id"}' "$MAESTRO_SIM_URL/__sim/account-instances"; echo
SELECT workflow_id, count(*) FROM maestro_account_instances() GROUP BY 1 ORDER BY 1;
\! curl -s -X POST -d '{"workflow_id_field": "workflow_id"}' "$MAESTRO_SIM_URL/__sim/account-instances"; echo

-- no workflow at all: no instance, and no call to find that out
\! python3 test/simulator/sim_requests.py --clear
SELECT count(*) FROM maestro_account_instances(workflow_ids => '{}');
\! python3 test/simulator/sim_requests.py
SELECT mt.try($$SELECT * FROM maestro_account_instances(workflow_ids => ARRAY[NULL]::uuid[])$$);
-- what the API refuses is its error, with its words
SELECT mt.try($$SELECT * FROM maestro_account_instances(started_by => 'Jane Doe')$$);

-- paging: 24 instances, 5 a page, each page one call, counted as such
\! curl -s -X POST -d '{"workflow_id": "a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0003", "count": 20, "status": "Completed"}' "$MAESTRO_SIM_URL/__sim/instances" >/dev/null
SET maestro.page_size = 5;
SELECT maestro_stats_reset();
\! python3 test/simulator/sim_requests.py --clear
SELECT count(*) AS instances, count(DISTINCT id) AS distinct_ids FROM maestro_account_instances();
\! python3 test/simulator/sim_requests.py
SELECT endpoint, calls FROM maestro_stats WHERE server = 'sim' ORDER BY endpoint;

-- rows come page by page: a LIMIT over the function in the select list
-- stops the walk, and the pages not needed are never asked for
\! python3 test/simulator/sim_requests.py --clear
SELECT (i).name FROM (SELECT maestro_account_instances() AS i LIMIT 3) s;
\! python3 test/simulator/sim_requests.py
\! python3 test/simulator/sim_requests.py --clear
SELECT count(*) FROM (SELECT maestro_account_instances() AS i LIMIT 7) s;
\! python3 test/simulator/sim_requests.py

-- the last page's ctoken may be absent (above), empty or null
\! curl -s -X POST -d '{"last_ctoken": "empty"}' "$MAESTRO_SIM_URL/__sim/account-instances"; echo
SELECT count(*) FROM maestro_account_instances();
\! curl -s -X POST -d '{"last_ctoken": "null"}' "$MAESTRO_SIM_URL/__sim/account-instances"; echo
SELECT count(*) FROM maestro_account_instances();

-- a page is a GET: retried on 503 like any other, and the walk goes on
SET maestro.server = 'faulty';
SELECT mt.fault('key=retry2;after=1;times=1;status=503;retry_after=0');
SELECT count(*) AS instances, count(DISTINCT id) AS distinct_ids FROM maestro_account_instances();
\! python3 test/simulator/sim_requests.py --contains key=retry2
-- a failure on any page is an ERROR, never a partial result
SELECT mt.fault('key=page3;after=2;status=500'); SELECT mt.state('SELECT count(*) FROM maestro_account_instances()');
SELECT mt.fault('key=page2;after=1;malformed=1'); SELECT mt.state('SELECT count(*) FROM maestro_account_instances()');
SELECT mt.fault('key=page2t;after=1;truncate=1'); SELECT mt.state('SELECT count(*) FROM maestro_account_instances()');
-- a page that hands back the ctoken it was asked with would never end
SELECT mt.fault('status=200;body=%7B%22instances%22%3A%5B%5D%2C%22ctoken%22%3A%22again%22%7D');
SELECT mt.try('SELECT count(*) FROM maestro_account_instances()');
-- answers: without the list, no rows; a list that is no list, an error
SELECT mt.fault('status=200;body=%7B%7D'); SELECT count(*) FROM maestro_account_instances();
SELECT mt.fault('status=200;body=%7B%22instances%22%3A%22none%22%7D'); SELECT mt.try('SELECT count(*) FROM maestro_account_instances()');
-- values that do not fit their column become NULL; raw keeps them
SELECT mt.fault('status=200;body=' || replace(replace(
  '{"instances":[{"id":"not-a-uuid","workflow_id":"nope","name":42,"started_at":"yesterday","total_steps":"five","tags":["a",1]}, 7]}',
  '"', '%22'), ' ', '%20'));
SELECT workflow_id, id, name, started_at, total_steps, tags, raw->>'total_steps' AS raw_total_steps
FROM maestro_account_instances();
SET maestro.server = 'sim';
RESET maestro.page_size;

-- maestro_all_instances: one paged walk, no call per workflow
\! python3 test/simulator/sim_requests.py --clear
SELECT workflow_id, workflow_status, count(*) FROM maestro_all_instances GROUP BY 1, 2 ORDER BY 1, 2;
\! python3 test/simulator/sim_requests.py
CREATE TEMP TABLE walked AS SELECT * FROM maestro_all_instances;
-- an API without the endpoint (404): the same rows, one call per workflow
\! curl -s -X POST -d '{"enabled": false}' "$MAESTRO_SIM_URL/__sim/account-instances"; echo
\! python3 test/simulator/sim_requests.py --clear
SELECT count(*) AS instances,
       count(*) FILTER (WHERE NOT EXISTS (SELECT FROM walked w WHERE to_jsonb(w) - 'raw' = to_jsonb(a) - 'raw')) AS differing
FROM maestro_all_instances a;
\! python3 test/simulator/sim_requests.py
-- the function itself answers 404 with its error: it has nothing to fall back on
SELECT mt.state('SELECT * FROM maestro_account_instances()');
-- elements that do not say their workflow: the view falls back as well
\! curl -s -X POST -d '{"enabled": true, "workflow_id_field": null}' "$MAESTRO_SIM_URL/__sim/account-instances"; echo
\! python3 test/simulator/sim_requests.py --clear
SELECT count(*) AS instances, count(workflow_id) AS with_workflow FROM maestro_all_instances;
\! python3 test/simulator/sim_requests.py
\! curl -s -X POST -d '{"workflow_id_field": "workflow_id"}' "$MAESTRO_SIM_URL/__sim/account-instances"; echo
-- a later page that stops saying it comes too late to fall back: an error
SET maestro.server = 'faulty';
SET maestro.page_size = 10;
SELECT mt.fault('key=late;after=1;strip=workflow_id');
SELECT mt.try('SELECT count(*) FROM maestro_all_instances');
SET maestro.server = 'sim';
RESET maestro.page_size;

-- maestro_sync() without a workflow: one paged walk
DELETE FROM maestro_instance_events;
DELETE FROM maestro_synced_instances;
SET maestro.page_size = 10;
\! python3 test/simulator/sim_requests.py --clear
SELECT maestro_sync() AS changed;
\! python3 test/simulator/sim_requests.py
SELECT workflow_id, count(*) FROM maestro_synced_instances GROUP BY 1 ORDER BY 1;
-- nothing changed: nothing to report
SELECT maestro_sync() AS changed;
-- a failure on the third page leaves mirror and events as they were, though
-- the first two pages held a status change and a new instance
\! curl -s -X POST -d '{"workflow_status": "Completed"}' "$MAESTRO_SIM_URL/__sim/instances/b5500000-0000-4000-8000-000000000002/status" >/dev/null
SELECT instance_id IS NOT NULL AS triggered FROM maestro_trigger(:approval, '{"Amount": 5, "Approver": "x@example.com"}', 'PO-9');
SELECT count(*) AS mirrored, (SELECT count(*) FROM maestro_instance_events) AS events FROM maestro_synced_instances;
SET maestro.server = 'faulty';
SELECT mt.fault('key=sync3;after=2;status=500'); SELECT mt.state('SELECT maestro_sync()');
SELECT count(*) AS mirrored, (SELECT count(*) FROM maestro_instance_events) AS events,
       (SELECT workflow_status FROM maestro_synced_instances WHERE id = 'b5500000-0000-4000-8000-000000000002') AS status
FROM maestro_synced_instances;
SET maestro.server = 'sim';
-- without the endpoint: the same sync, one call per workflow
\! curl -s -X POST -d '{"enabled": false}' "$MAESTRO_SIM_URL/__sim/account-instances"; echo
\! python3 test/simulator/sim_requests.py --clear
SELECT maestro_sync() AS changed;
\! python3 test/simulator/sim_requests.py
SELECT old_status, new_status, count(*) FROM maestro_instance_events GROUP BY 1, 2 ORDER BY 1 NULLS FIRST, 2;
RESET maestro.page_size;
DELETE FROM maestro_instance_events;
DELETE FROM maestro_synced_instances;
