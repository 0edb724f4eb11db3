#!/usr/bin/env bash
# test/memory/run.sh: tens of thousands of calls in one backend, successes and
# every kind of failure, must not grow the backend's memory.
#
# Needs a running cluster with maestro installed (PGHOST, PGPORT, PGUSER) and
# the simulator at MAESTRO_SIM_URL. MEMORY_CALLS sets the measured calls
# (default 20000); MEMORY_MAX_RSS_GROWTH_KB and MEMORY_MAX_CONTEXT_GROWTH_KB
# the limits (default 2048 kB of RSS, 64 kB of palloc'd memory).
set -u -o pipefail

CALLS=${MEMORY_CALLS:-20000}
WARMUP=${MEMORY_WARMUP:-2000}
MAX_RSS=${MEMORY_MAX_RSS_GROWTH_KB:-2048}
MAX_CTX=${MEMORY_MAX_CONTEXT_GROWTH_KB:-64}
DB=maestro_memory
passed=0
failed=0

# the workload's expected failures assume the simulator's seed data
curl -fsS -X POST "$MAESTRO_SIM_URL/__sim/reset" >/dev/null || {
	echo "not ok - the simulator at $MAESTRO_SIM_URL does not answer"
	echo "memory: 0 passed, 1 failed"
	exit 1
}

PGOPTIONS="-c client_min_messages=warning" psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null || {
	echo "not ok - could not create database $DB"
	echo "memory: 0 passed, 1 failed"
	exit 1
}

# 22,000 calls are more than the simulator's hourly quota of 3,000, and a
# spent quota stops calls unsent (53400): give this run a larger one
curl -s -X POST -d '{"limit": 1000000}' "$MAESTRO_SIM_URL/__sim/ratelimit" >/dev/null

out=$(psql -X -q -A -t -v ON_ERROR_STOP=1 -v sim_url="$MAESTRO_SIM_URL" -v calls="$CALLS" \
	-v warmup="$WARMUP" -d "$DB" 2>&1 <<'SQL'
CREATE EXTENSION maestro;
CREATE SERVER sim FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'sim_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE USER MAPPING FOR CURRENT_USER SERVER sim OPTIONS (access_token 'sim-token');
SELECT format('%s/_fault/status=500', :'sim_url') AS err500_url \gset
SELECT format('%s/_fault/malformed=1', :'sim_url') AS malformed_url \gset
SELECT format('%s/_fault/oversize=300000', :'sim_url') AS big_url \gset
CREATE SERVER err500 FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'err500_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE SERVER malformed FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'malformed_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE SERVER big FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'big_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE SERVER down FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url 'http://127.0.0.1:9', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE USER MAPPING FOR CURRENT_USER SERVER err500 OPTIONS (access_token 'sim-token');
CREATE USER MAPPING FOR CURRENT_USER SERVER malformed OPTIONS (access_token 'sim-token');
CREATE USER MAPPING FOR CURRENT_USER SERVER big OPTIONS (access_token 'sim-token');
CREATE USER MAPPING FOR CURRENT_USER SERVER down OPTIONS (access_token 'sim-token');

-- the backend's resident set and its palloc'd memory, in kB
CREATE FUNCTION rss_kb() RETURNS bigint LANGUAGE sql AS $$
  SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmRSS:\s+(\d+)'))[1]::bigint
$$;
CREATE FUNCTION context_kb() RETURNS bigint LANGUAGE sql AS $$
  SELECT sum(total_bytes) / 1024 FROM pg_backend_memory_contexts
$$;

-- one call of each kind in turn: rows, a value, an action, a trigger, and
-- errors from the API (404, 409, 500), the parser, the size cap, the
-- transport and argument checks, each caught in its own subtransaction;
-- and the account-wide list walked in pages of 2, to its end and stopped
-- half-way by a LIMIT
CREATE FUNCTION exercise(n int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
  errors int := 0;
  wf uuid := 'a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001';
BEGIN
  SET maestro.max_retries = 0;
  SET maestro.max_response_size = '100kB';
  PERFORM set_config('maestro.server', 'sim', true);
  SET maestro.page_size = 2;
  FOR i IN 1..n LOOP
    BEGIN
      CASE i % 12
        WHEN 0 THEN PERFORM set_config('maestro.server', 'sim', true);
                    PERFORM count(*) FROM maestro_workflows();
        WHEN 1 THEN PERFORM count(*) FROM maestro_instances(wf);
        WHEN 2 THEN PERFORM maestro_trigger_requirements(wf);
        WHEN 3 THEN PERFORM maestro_instance(wf, 'b5500000-0000-4000-8000-000000000001');
        WHEN 4 THEN PERFORM maestro_cancel(wf, 'b5500000-0000-4000-8000-000000000001');  -- 409
        WHEN 5 THEN PERFORM maestro_instance(wf, 'b5500000-0000-4000-8000-0000000000ff'); -- 404
        WHEN 6 THEN PERFORM maestro_trigger(wf, '[1]');                                  -- bad input
        WHEN 7 THEN PERFORM set_config('maestro.server', 'err500', true);
                    PERFORM count(*) FROM maestro_workflows();                          -- 500
        WHEN 8 THEN PERFORM set_config('maestro.server', 'malformed', true);
                    PERFORM count(*) FROM maestro_workflows();                          -- bad JSON
        WHEN 9 THEN PERFORM set_config('maestro.server', 'big', true);
                    PERFORM count(*) FROM maestro_workflows();                          -- too large
        WHEN 10 THEN PERFORM set_config('maestro.server', 'down', true);
                    PERFORM count(*) FROM maestro_workflows();                          -- refused
        ELSE PERFORM set_config('maestro.server', 'sim', true);
             PERFORM count(*) FROM maestro_trigger_inputs(wf);
             IF i % 24 = 11 THEN
               PERFORM count(*) FROM maestro_account_instances();
             ELSE
               PERFORM count(*) FROM (SELECT maestro_account_instances() LIMIT 3) s;
             END IF;
      END CASE;
    EXCEPTION WHEN OTHERS THEN
      errors := errors + 1;
    END;
  END LOOP;
  RETURN errors;
END
$$;

SELECT exercise(:warmup) AS warmup_errors \gset
SELECT rss_kb() AS rss_before, context_kb() AS context_before \gset
SELECT exercise(:calls) AS errors \gset
SELECT 'calls=' || :calls, 'warmup_errors=' || :warmup_errors, 'errors=' || :errors,
       'rss_growth_kb=' || (rss_kb() - :rss_before),
       'context_growth_kb=' || (context_kb() - :context_before);
SQL
)
status=$?
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null

if [ $status -ne 0 ]; then
	echo "not ok - the memory workload did not run"
	echo "$out" | sed 's/^/#   /'
	echo "memory: 0 passed, 1 failed"
	exit 1
fi

line=$(echo "$out" | tail -n 1)
errors=$(echo "$line" | sed -n 's/.*|errors=\([0-9-]*\).*/\1/p')
warmup_errors=$(echo "$line" | sed -n 's/.*warmup_errors=\([0-9-]*\).*/\1/p')
rss=$(echo "$line" | sed -n 's/.*rss_growth_kb=\([0-9-]*\).*/\1/p')
ctx=$(echo "$line" | sed -n 's/.*context_growth_kb=\([0-9-]*\).*/\1/p')
echo "# $CALLS calls after $WARMUP warm-up calls: $errors of them failed as intended"
echo "# backend RSS grew by $rss kB, palloc'd memory by $ctx kB"

check() {
	if [ "$1" = 1 ]; then
		echo "ok - $2"
		passed=$((passed + 1))
	else
		echo "not ok - $2"
		failed=$((failed + 1))
	fi
}
# calls 1..n: those with i % 12 in 4..10 (7 of every 12) are made to fail,
# the others must succeed; an unreachable simulator would fail them all
failures_in() {
	local n=$1 rem=$(($1 % 12)) extra
	extra=$(( rem > 10 ? 7 : (rem > 3 ? rem - 3 : 0) ))
	echo $(( (n / 12) * 7 + extra ))
}
expected_errors=$(failures_in "$CALLS")
expected_warmup=$(failures_in "$WARMUP")
check "$([ "$errors" = "$expected_errors" ] && [ "$warmup_errors" = "$expected_warmup" ] && echo 1)" \
	"exactly the calls made to fail failed ($errors of $CALLS, expected $expected_errors; warm-up $warmup_errors of $WARMUP, expected $expected_warmup)"
check "$([ "$rss" -le "$MAX_RSS" ] && echo 1)" "backend RSS growth $rss kB <= $MAX_RSS kB over $CALLS calls"
check "$([ "$ctx" -le "$MAX_CTX" ] && echo 1)" "palloc'd memory growth $ctx kB <= $MAX_CTX kB over $CALLS calls"
echo "memory: $passed passed, $failed failed"
[ "$failed" = 0 ]
