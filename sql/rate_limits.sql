--
-- rate_limits: DocuSign's X-RateLimit-* and X-BurstLimit-* headers as last
-- seen per server (maestro_rate_limits), and the hourly quota: once an
-- answer says none remain, calls fail at once with SQLSTATE 53400 and are
-- not sent, until the reset (trusted for at most an hour)
--
\getenv sim_url MAESTRO_SIM_URL
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo
-- servers of their own, so that a spent quota stops no other test's calls
CREATE SERVER rl FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'sim_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE SERVER rl_past FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'sim_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE SERVER rl_far FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'sim_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE USER MAPPING FOR CURRENT_USER SERVER rl OPTIONS (access_token 'sim-token');
CREATE USER MAPPING FOR CURRENT_USER SERVER rl_past OPTIONS (access_token 'sim-token');
CREATE USER MAPPING FOR CURRENT_USER SERVER rl_far OPTIONS (access_token 'sim-token');

-- the view's shape
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
WHERE attrelid = 'maestro_rate_limits'::regclass AND attnum > 0 ORDER BY attnum;

-- the hint of an error, the reset time it names, and whether the call was refused
CREATE FUNCTION mt.refusal(sql text, OUT state text, OUT message text, OUT renewed_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
  hint text;
BEGIN
  EXECUTE sql;
  state := 'ok';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
  renewed_at := substring(hint FROM '^The quota is renewed at (.*); try again then')::timestamptz;
END
$$;

-- nothing seen yet
SELECT count(*) FROM maestro_rate_limits WHERE server LIKE 'rl%';

-- every answer's headers are kept: the simulator's quota is 3000 an hour
SET maestro.server = 'rl';
SELECT count(*) FROM maestro_workflows();
SELECT server, "limit", remaining,
       reset_at > observed_at AND reset_at <= observed_at + interval '1 hour 1 minute'
         AND extract(epoch FROM reset_at)::bigint % 3600 = 0 AS reset_is_next_top_of_hour,
       burst_limit, burst_remaining,
       observed_at BETWEEN now() - interval '5 min' AND now() AS observed_just_now
FROM maestro_rate_limits WHERE server LIKE 'rl%';

-- the burst headers, when the API sends them; the last answer wins
\! curl -s -X POST -d '{"burst_limit": 200}' "$MAESTRO_SIM_URL/__sim/ratelimit" >/dev/null
SELECT count(*) FROM maestro_instances('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001');
SELECT server, "limit", remaining, burst_limit, burst_remaining FROM maestro_rate_limits WHERE server LIKE 'rl%';
-- an error answer carries them too
SELECT state FROM mt.refusal($$SELECT maestro_instance('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', 'b5500000-0000-4000-8000-0000000000ff')$$);
SELECT server, remaining, burst_remaining FROM maestro_rate_limits WHERE server LIKE 'rl%';

-- the last call of the hour is served, and says none remain
\! curl -s -X POST -d '{"remaining": 1}' "$MAESTRO_SIM_URL/__sim/ratelimit" >/dev/null
SELECT count(*) FROM maestro_workflows();
SELECT server, "limit", remaining FROM maestro_rate_limits WHERE server LIKE 'rl%';
\! curl -s "$MAESTRO_SIM_URL/__sim/count"; echo
-- now every call fails at once, with the reset time in its hint, unsent:
-- a read, a trigger, an action (and no retry waits for the quota)
SELECT q.n, r.state, r.message, r.renewed_at = l.reset_at AS hint_names_the_reset
FROM unnest(ARRAY['SELECT * FROM maestro_workflows()',
                  $$SELECT * FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{"Name": "N", "Email": "e@example.com"}', 'rate limited')$$,
                  $$SELECT maestro_pause('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0002')$$]) WITH ORDINALITY q(sql, n),
     maestro_rate_limits l,
     LATERAL mt.refusal(q.sql) r
WHERE l.server = 'rl' ORDER BY q.n;
\! curl -s "$MAESTRO_SIM_URL/__sim/count"; echo
-- the whole error, times masked
SELECT regexp_replace(mt.try('SELECT * FROM maestro_workflows()'),
                      '\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?[+-]\d\d', '<time>', 'g');
-- the statistics count no call that was not made
SELECT endpoint, calls FROM maestro_stats WHERE server = 'rl' ORDER BY 1;

-- a read that failed with 503 is not retried once its answer spent the quota
SELECT format('%s/_fault/key=rlretry;status=503', :'sim_url') AS url503 \gset
CREATE SERVER rl_retry FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'url503', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE USER MAPPING FOR CURRENT_USER SERVER rl_retry OPTIONS (access_token 'sim-token');
SET maestro.server = 'rl_retry';
SET maestro.max_retries = 1;
\! curl -s -X POST -d '{"remaining": 100}' "$MAESTRO_SIM_URL/__sim/ratelimit" >/dev/null
SELECT mt.try('SELECT * FROM maestro_workflows()') ~ '^58000: .*after 1 retries' AS retried_once;
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=key=rlretry"; echo
\! curl -s -X POST -d '{"remaining": 1}' "$MAESTRO_SIM_URL/__sim/ratelimit" >/dev/null
SELECT mt.try('SELECT * FROM maestro_workflows()') ~ '^58000: .*after 1 retries' AS retried_once;
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=key=rlretry"; echo
SELECT mt.state('SELECT * FROM maestro_workflows()');
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=key=rlretry"; echo
RESET maestro.max_retries;
DROP USER MAPPING FOR CURRENT_USER SERVER rl_retry;
DROP SERVER rl_retry;

-- a reset in the past: the quota has been renewed, calls go out again
\! curl -s -X POST -d "{\"remaining\": 0, \"reset\": $(( $(date +%s) - 10 ))}" "$MAESTRO_SIM_URL/__sim/ratelimit" >/dev/null
SET maestro.server = 'rl_past';
SELECT count(*) FROM maestro_workflows();
SELECT server, remaining, reset_at < now() AS reset_passed FROM maestro_rate_limits WHERE server = 'rl_past';
SELECT count(*) FROM maestro_workflows();
\! curl -s "$MAESTRO_SIM_URL/__sim/count"; echo

-- a reset far ahead (a skewed clock, a bad header) holds for an hour at most
\! curl -s -X POST -d "{\"reset\": $(( $(date +%s) + 5 * 3600 ))}" "$MAESTRO_SIM_URL/__sim/ratelimit" >/dev/null
SET maestro.server = 'rl_far';
SELECT count(*) FROM maestro_workflows();
SELECT r.state, l.reset_at > now() + interval '4 hours' AS header_says_hours_ahead,
       r.renewed_at = l.observed_at + interval '1 hour' AS held_for_one_hour
FROM maestro_rate_limits l, LATERAL mt.refusal('SELECT * FROM maestro_workflows()') r
WHERE l.server = 'rl_far';

-- a dropped server's values are not shown
DROP USER MAPPING FOR CURRENT_USER SERVER rl_far;
DROP SERVER rl_far;
SELECT server FROM maestro_rate_limits WHERE server LIKE 'rl%' ORDER BY 1;

-- done: the simulator's quota back to normal, the servers gone
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo
RESET maestro.server;
DROP USER MAPPING FOR CURRENT_USER SERVER rl;
DROP USER MAPPING FOR CURRENT_USER SERVER rl_past;
DROP SERVER rl;
DROP SERVER rl_past;
DROP FUNCTION mt.refusal(text);
