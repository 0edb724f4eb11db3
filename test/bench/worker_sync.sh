#!/usr/bin/env bash
# test/bench/worker_sync.sh: what the worker's periodic sync costs the
# worker, and whether its sends wait for it.
#
# N instances (default 10,000; SHORT=1: 1,000) in the simulator, pages of
# 100, maestro.sync_interval 1 s:
#  1. the worker's CPU time per sync run (from /proc, over SECS seconds,
#     default 30, SHORT 8; runs counted as page GETs at the simulator / the
#     pages of a run) and its RssAnon: peak, and after the runs;
#  2. every page answered 200 ms late (a simulator fault, so a run takes
#     about N/100 * 0.2 s): 50 triggers queued once a run is fetching, and
#     the seconds until all are done, beside the seconds the run took.
# Starts its own cluster and simulator (in /tmp/maestro-bench-worker-sync,
# ports 57439 and 57499, or MAESTRO_TEST_DIR, MAESTRO_PGPORT,
# MAESTRO_SIM_PORT) after `make install`.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MAESTRO_TEST_DIR=${MAESTRO_TEST_DIR:-/tmp/maestro-bench-worker-sync}
export MAESTRO_PGPORT=${MAESTRO_PGPORT:-57439}
export MAESTRO_SIM_PORT=${MAESTRO_SIM_PORT:-57499}
source "$HERE/../lib/cluster.sh"
if [ "${SHORT:-0}" = 1 ]; then
	N=${N:-1000}
	SECS=${SECS:-8}
else
	N=${N:-10000}
	SECS=${SECS:-30}
fi
PAGES=$(((N + 4 + 99) / 100))

rm -rf "$MAESTRO_TEST_DIR"
trap maestro_stop_all EXIT
maestro_start_cluster shared_preload_libraries=maestro maestro.sync_interval=1s \
	maestro.page_size=100 maestro.rate_limit=0 || exit 1
maestro_start_simulator || exit 1
curl -fsS -X POST -d "{\"workflow_id\": \"a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0003\", \"count\": $N, \"status\": \"Completed\"}" \
	"$MAESTRO_SIM_URL/__sim/instances" >/dev/null || exit 1
q() { psql -X -q -A -t -d postgres "$@"; }
q -v url="$MAESTRO_SIM_URL" >/dev/null <<'SQL' || exit 1
CREATE EXTENSION maestro;
CREATE SERVER sim FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE USER MAPPING FOR CURRENT_USER SERVER sim OPTIONS (access_token 'sim-token');
SELECT maestro_wake();
SQL
gets() { curl -fsS "$MAESTRO_SIM_URL/__sim/count?method=GET&path_contains=/workflow-instances"; }
wait_until() { # seconds, then a command that must succeed
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		[ $SECONDS -ge $deadline ] && return 1
		sleep 0.05
	done
}
mirror_full() { [ "$(q -c 'SELECT count(*) FROM maestro_synced_instances')" = $((N + 4)) ]; }
wait_until 120 mirror_full || { echo "the first sync did not complete"; exit 1; }
pid=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'maestro worker'")
tck=$(getconf CLK_TCK)
cpu() { awk -v t="$tck" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$pid/stat"; }
rss() { awk '/^RssAnon/ { print $2 }' "/proc/$pid/status"; }

# 1. CPU and memory over SECS seconds of runs
g0=$(gets)
c0=$(cpu)
peak=0
end=$((SECONDS + SECS))
while [ $SECONDS -lt $end ]; do
	r=$(rss)
	[ "$r" -gt "$peak" ] && peak=$r
	sleep 0.1
done
g1=$(gets)
c1=$(cpu)
runs=$(awk -v g=$((g1 - g0)) -v p=$PAGES 'BEGIN { printf "%.1f", g / p }')
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "sync of $((N + 4)) instances in $PAGES pages: $runs runs in $SECS s;" \
	"worker CPU $(awk -v c=$(echo "$c1 - $c0" | bc) -v r="$runs" 'BEGIN { printf "%.0f", c / r * 1000 }') ms a run"
echo "worker RssAnon: peak ${peak} kB during the runs, $(rss) kB now"

# 2. triggers queued while a run fetches slow pages
q -c "ALTER SERVER sim OPTIONS (SET base_url '$MAESTRO_SIM_URL/_fault/key=slow;method=GET;latency_ms=200')" >/dev/null
slow() { curl -fsS "$MAESTRO_SIM_URL/__sim/faults" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("slow", 0))'; }
fetching() { [ "$(slow)" -ge 2 ]; }
wait_until 120 fetching || { echo "no slow sync began"; exit 1; }
t0=$(date +%s.%N)
s0=$(slow)
q -c "SELECT maestro_trigger_async('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', jsonb_build_object('Name', 'B' || g, 'Email', 'b' || g || '@example.com'), 'bench ' || g) FROM generate_series(1, 50) g" >/dev/null
all_done() { [ "$(q -c "SELECT count(*) FROM maestro_trigger_requests WHERE state = 'done'")" = 50 ]; }
wait_until 300 all_done || { echo "the triggers were not done"; exit 1; }
t1=$(date +%s.%N)
# that run (the first with slow pages) ends once all its pages were asked for
run_ended() { [ "$(slow)" -ge $PAGES ] && [ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'maestro worker' AND query = 'maestro periodic sync' AND state = 'active'")" = 0 ]; }
wait_until 300 run_ended
t2=$(date +%s.%N)
echo "50 triggers queued during a sync of $PAGES pages answered 200 ms late:" \
	"all done after $(echo "$t1 - $t0" | bc | xargs printf %.2f) s; the sync ended $(echo "$t2 - $t0" | bc | xargs printf %.2f) s after they were queued"
