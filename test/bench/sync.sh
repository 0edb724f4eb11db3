#!/usr/bin/env bash
# test/bench/sync.sh: the mirror's cost and what it saves.
#
# A workflow with 10,000 instances (N) in the simulator: the time and the
# backend's peak memory of a full maestro_sync(), of a second sync with
# nothing changed, and a status report from the mirror versus the same
# report through maestro_all_instances, with the API calls each made
# (counted by the simulator). Starts its own cluster and simulator (in
# /tmp/maestro-bench-sync, ports 57436 and 57496) after `make install`.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MAESTRO_TEST_DIR=${MAESTRO_TEST_DIR:-/tmp/maestro-bench-sync}
export MAESTRO_PGPORT=${MAESTRO_PGPORT:-57436}
export MAESTRO_SIM_PORT=${MAESTRO_SIM_PORT:-57496}
source "$HERE/../lib/cluster.sh"
N=${N:-10000}

rm -rf "$MAESTRO_TEST_DIR"
trap maestro_stop_all EXIT
maestro_start_cluster || exit 1
maestro_start_simulator || exit 1
curl -s -X POST -d "{\"workflow_id\": \"a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0003\", \"count\": $N, \"status\": \"Completed\"}" \
	"$MAESTRO_SIM_URL/__sim/instances" >/dev/null
calls() { curl -s "$MAESTRO_SIM_URL/__sim/count?method=GET"; }

psql -X -q -A -t -d postgres -v url="$MAESTRO_SIM_URL" <<'SQL' | grep -v '^$'
CREATE EXTENSION maestro;
CREATE SERVER sim FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE USER MAPPING FOR CURRENT_USER SERVER sim OPTIONS (access_token 'sim-token');
-- peak resident memory; it includes the shared buffers the backend touched
CREATE FUNCTION peak_kb() RETURNS bigint LANGUAGE sql AS $$
  SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmHWM:\s+(\d+)'))[1]::bigint $$;
SELECT peak_kb() AS before_kb, clock_timestamp() AS t0 \gset
SELECT maestro_sync() AS changed \gset
SELECT format('full sync:           %s instances changed in %s ms; backend peak RSS %s kB (%s kB before; shared buffers touched included)',
              :changed, round(extract(epoch FROM clock_timestamp() - :'t0') * 1000), peak_kb(), :before_kb);
SELECT format('instance list alone: backend peak RSS %s kB after reading %s instances', peak_kb(),
              (SELECT count(*) FROM maestro_instances('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0003')));
SELECT clock_timestamp() AS t0 \gset
SELECT maestro_sync() AS changed \gset
SELECT format('unchanged sync:      %s instances changed in %s ms',
              :changed, round(extract(epoch FROM clock_timestamp() - :'t0') * 1000));
SQL
report() {
	psql -X -q -A -t -d postgres <<SQL
SELECT clock_timestamp() AS t0 \\gset
SELECT workflow_status, count(*) FROM $1 GROUP BY 1 \\g /dev/null
SELECT round(extract(epoch FROM clock_timestamp() - :'t0') * 1000, 1);
SQL
}
before=$(calls)
mirror_ms=$(report maestro_synced_instances)
mirror_calls=$(( $(calls) - before ))
before=$(calls)
api_ms=$(report maestro_all_instances)
api_calls=$(( $(calls) - before ))
echo "report from the mirror:             $mirror_ms ms, $mirror_calls API calls"
echo "report through maestro_all_instances: $api_ms ms, $api_calls API calls"
