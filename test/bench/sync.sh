#!/usr/bin/env bash
# test/bench/sync.sh: the mirror's cost and what it saves.
#
# A workflow with 10,000 instances (N) in the simulator: the time and the
# backend's peak memory of a full maestro_sync(), of a second sync with
# nothing changed, and a status report from the mirror versus the same
# report through maestro_all_instances, with the API calls each made
# (counted by the simulator). Starts its own cluster and simulator (in
# /tmp/maestro-bench-sync, ports 57436 and 57496; BENCH_DIR, BENCH_PGPORT and
# MAESTRO_SIM_PORT override them) after `make install`.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export BENCH_DIR=${BENCH_DIR:-/tmp/maestro-bench-sync} BENCH_PGPORT=${BENCH_PGPORT:-57436}
export MAESTRO_SIM_PORT=${MAESTRO_SIM_PORT:-57496}
source "$HERE/lib.sh"
N=${N:-10000}

bench_sim_setup "$N" || exit 1
calls() { bench_sim_calls; }

psql -X -q -A -t -d postgres <<'SQL' | grep -v '^$'
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
