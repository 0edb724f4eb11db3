--
-- interrupts: cancel, statement_timeout and maestro.request_timeout stop a
-- call in flight, with PostgreSQL's own errors
--
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo
SET maestro.server = 'faulty';
\set list 'SELECT * FROM maestro_workflows()'

-- statement_timeout during a slow response: 57014 well before the answer
-- (which would come after 60 s)
SELECT mt.fault('latency_ms=60000');
SET statement_timeout = '300ms';
SELECT clock_timestamp() AS started \gset
SELECT * FROM maestro_workflows();
RESET statement_timeout;
SELECT clock_timestamp() - :'started' < interval '30s' AS stopped_in_time;

-- statement_timeout during a body that drips in byte by byte
SELECT mt.fault('drip_ms=200');
SET statement_timeout = '500ms';
SELECT mt.try(:'list');
RESET statement_timeout;

-- pg_cancel_backend from another session, once the call waits on Maestro
-- (polled for 60 s at least); the answer would come after 60 s
SELECT mt.fault('latency_ms=60000');
SELECT clock_timestamp() AS started \gset
\! for i in $(seq 600); do n=$(psql -X -A -t -d contrib_regression -c "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity WHERE query LIKE '%cancel-me%' AND state = 'active' AND wait_event_type = 'Extension' AND pid <> pg_backend_pid()" 2>/dev/null); case $n in ''|0) sleep 0.1 ;; *) break ;; esac; done &
SELECT * FROM maestro_workflows() /* cancel-me */;
SELECT clock_timestamp() - :'started' < interval '30s' AS stopped_in_time;

-- the backend is still fine and the next call works
ALTER SERVER faulty OPTIONS (SET base_url 'http://127.0.0.1:1');
SET maestro.server = 'sim';
SELECT count(*) FROM maestro_workflows();
SET maestro.server = 'faulty';

-- maestro.request_timeout: a timeout is 08006; GETs retry it, POSTs do not
-- (the simulator counts the requests that reached it under each key)
SET maestro.request_timeout = '300ms';
SET maestro.max_retries = 1;
SELECT mt.fault('key=rt;latency_ms=20000');
SELECT split_part(r, E'\n', 1) AS error, r ~ 'after 1 retries' AS retried_once
FROM mt.try(:'list') AS r;
SELECT mt.fault('key=rtp;latency_ms=20000;status=503');
SELECT split_part(r, E'\n', 1) AS error, r ~ 'retries' AS retried
FROM mt.try($$SELECT maestro_pause('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001')$$) AS r;
\! curl -s "$MAESTRO_SIM_URL/__sim/faults" | python3 -c 'import json,sys; c=json.load(sys.stdin); print("GET requests:", c.get("rt"), "POST requests:", c.get("rtp"))'
RESET maestro.max_retries;
RESET maestro.request_timeout;

-- retries never run past statement_timeout: the last error comes back early,
-- instead of waiting out the 25 s the server asks for (which it would wait
-- without statement_timeout: 30 s is the most maestro waits for)
SELECT mt.fault('key=st503;status=503;format=text;retry_after=25');
SET maestro.max_retries = 10;
SET statement_timeout = '10s';
SELECT clock_timestamp() AS started \gset
SELECT mt.state(:'list');
RESET statement_timeout;
SELECT clock_timestamp() - :'started' < interval '10s' AS within_statement_time;
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=key=st503"; echo
RESET maestro.max_retries;
