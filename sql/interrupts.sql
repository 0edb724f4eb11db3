--
-- interrupts: cancel, statement_timeout and maestro.request_timeout stop a
-- call in flight, with PostgreSQL's own errors
--
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo
SET maestro.server = 'faulty';
\set list 'SELECT * FROM maestro_workflows()'

-- statement_timeout during a slow response: 57014 well before the answer
SELECT mt.fault('latency_ms=5000');
SET statement_timeout = '300ms';
SELECT clock_timestamp() AS started \gset
SELECT * FROM maestro_workflows();
RESET statement_timeout;
SELECT clock_timestamp() - :'started' < interval '1s' AS stopped_in_time;

-- statement_timeout during a body that drips in byte by byte
SELECT mt.fault('drip_ms=200');
SET statement_timeout = '500ms';
SELECT mt.try(:'list');
RESET statement_timeout;

-- pg_cancel_backend from another session
SELECT mt.fault('latency_ms=5000');
SELECT clock_timestamp() AS started \gset
\! (sleep 0.5; psql -X -q -d contrib_regression -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%cancel-me%' AND pid <> pg_backend_pid()" >/dev/null) &
SELECT * FROM maestro_workflows() /* cancel-me */;
SELECT clock_timestamp() - :'started' < interval '1.5s' AS stopped_in_time;

-- the backend is still fine and the next call works
ALTER SERVER faulty OPTIONS (SET base_url 'http://127.0.0.1:1');
SET maestro.server = 'sim';
SELECT count(*) FROM maestro_workflows();
SET maestro.server = 'faulty';

-- maestro.request_timeout: a timeout is 08006; GETs retry it, POSTs do not
SET maestro.request_timeout = '300ms';
SET maestro.max_retries = 1;
SELECT mt.fault('key=rt;latency_ms=2000');
SELECT split_part(r, E'\n', 1) AS error, r ~ 'after 1 retries' AS retried_once
FROM mt.try(:'list') AS r;
SELECT mt.fault('key=rtp;latency_ms=2000;status=503');
SELECT split_part(r, E'\n', 1) AS error, r ~ 'retries' AS retried
FROM mt.try($$SELECT maestro_pause('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001')$$) AS r;
RESET maestro.max_retries;
RESET maestro.request_timeout;

-- retries never run past statement_timeout: the last error comes back early
SELECT mt.fault('key=st503;status=503;format=text');
SET maestro.max_retries = 10;
SET statement_timeout = '1500ms';
SELECT clock_timestamp() AS started \gset
SELECT mt.state(:'list');
RESET statement_timeout;
SELECT clock_timestamp() - :'started' < interval '1.5s' AS within_statement_time;
RESET maestro.max_retries;
