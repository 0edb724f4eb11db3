--
-- stats: API calls counted per server and endpoint, exactly; the wait event
-- a call shows while it waits on Maestro
--
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo
SELECT maestro_stats_reset();
SELECT count(*) FROM maestro_stats;

-- a known sequence of calls
SET maestro.server = 'sim';
SELECT count(*) FROM maestro_workflows();
SELECT count(*) FROM maestro_workflows('active');
SELECT count(*) FROM maestro_instances('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001');
SELECT mt.state($$SELECT maestro_instance('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', 'b5500000-0000-4000-8000-0000000000ff')$$);
SELECT maestro_pause('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001');
SELECT mt.state($$SELECT maestro_pause('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001')$$);
SELECT maestro_resume('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001');
SET maestro.server = 'faulty';
-- a 503 then success: one call, one retry
SELECT mt.fault('key=s503;status=503;times=1'); SELECT count(*) FROM maestro_workflows();
-- a 429 then success: one call, one retry, one rate-limit wait
SELECT mt.fault('key=s429;status=429;retry_after=0;times=1'); SELECT count(*) FROM maestro_workflows();
-- 500 for good on an action, never retried
SELECT mt.fault('key=s500;status=500'); SELECT mt.state($$SELECT maestro_cancel('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', 'b5500000-0000-4000-8000-000000000002')$$);
-- nothing listens
ALTER SERVER faulty OPTIONS (SET base_url 'http://127.0.0.1:9');
SET maestro.max_retries = 0;
SELECT mt.state('SELECT * FROM maestro_workflows()');
RESET maestro.max_retries;

SELECT server, endpoint, calls, errors_transport, errors_4xx, errors_429, errors_5xx,
       retries, rate_limit_waits, bytes_received > 0 AS got_bytes,
       mean_ms > 0 AS timed, p95_ms >= 1 AS p95_set
FROM maestro_stats ORDER BY server, endpoint;

-- latency is measured: a call that takes at least 300 ms sets p95 to the
-- upper edge of its power-of-two bucket: 512 ms, or a later edge when a busy
-- machine adds to it
SELECT mt.fault('key=slow;latency_ms=300');
SELECT count(*) FROM maestro_workflows();
SELECT calls, mean_ms * calls >= 300 AS total_includes_slow_call,
       p95_ms IN (512, 1024, 2048, 4096, 8192) AS p95_in_slow_bucket
FROM maestro_stats WHERE server = 'faulty' AND endpoint = 'workflows';

-- reset clears everything; only its owner may reset
SELECT maestro_stats_reset();
SELECT count(*) FROM maestro_stats;
SELECT has_function_privilege('public', 'maestro_stats_reset()', 'EXECUTE') AS public_may_reset;

-- while a call waits on Maestro, pg_stat_activity says so: another session
-- polls (for 60 s at least) until the call shows the wait event, prints it and
-- cancels the call, which would otherwise wait 120 s for its answer
SELECT mt.fault('key=wait;latency_ms=120000');
\! for i in $(seq 600); do w=$(psql -X -A -t -d contrib_regression -c "SELECT 'waiting: ' || wait_event_type || '/' || wait_event FROM pg_stat_activity WHERE query LIKE '%wait-me%' AND state = 'active' AND wait_event_type = 'Extension' AND pid <> pg_backend_pid()" 2>/dev/null); if [ -n "$w" ]; then echo "$w"; psql -X -q -d contrib_regression -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%wait-me%' AND pid <> pg_backend_pid()" >/dev/null; break; fi; sleep 0.1; done &
SELECT count(*) FROM maestro_workflows() /* wait-me */;
