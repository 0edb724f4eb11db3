#!/usr/bin/env bash
# test/bench/trigger_queue.sh: throughput of the trigger queue.
#
# 10,000 requests (N) are queued in one transaction against a server that
# answers each trigger after 20 ms (trigger_server.js: the Python simulator
# answers fresh connections too slowly to be the thing not measured). Beside
# the worker, the limit: bench_client.c's curl-multi loop with the same
# concurrency on keep-alive connections against the same endpoint. The two
# take turns, RUNS times (default 5; 1 with SHORT=1), each against a freshly
# started server. Each run prints requests per second from commit to the
# last done_at, failures, duplicates, the enqueue cost per row, and what
# load distorts least: the worker's transactions, WAL bytes and CPU time per
# request (its database work runs in it), beside the C client's CPU time
# (perf stat, where perf is installed). With RATE=n it also shows the rate
# limit at work: the most requests the server received in any one-second
# window. Then the medians, the worker's peak memory, the server's own
# capacity (a Node client alone, fresh connections), and last the ratio of
# worker to C client.
#
# It starts its own cluster and server (in /tmp/maestro-bench, on ports
# 57434 and 57495) after `make install`; run as root; needs node. Knobs: N, CONCURRENCY
# (default 64), RATE (default 0: no limit), LATENCY_MS (default 20); SHORT=1 sends
# 500 to prove the script works.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MAESTRO_TEST_DIR=${MAESTRO_TEST_DIR:-/tmp/maestro-bench}
export MAESTRO_PGPORT=${MAESTRO_PGPORT:-57434}
source "$HERE/../lib/cluster.sh"
N=${N:-10000}
RUNS=${RUNS:-5}
[ "${SHORT:-0}" = 1 ] && N=500 && RUNS=1
CONCURRENCY=${CONCURRENCY:-64}
RATE=${RATE:-0}
LATENCY_MS=${LATENCY_MS:-20}

rm -rf "$MAESTRO_TEST_DIR"
BENCH_PORT=${BENCH_PORT:-57495}
BENCH_URL="http://127.0.0.1:$BENCH_PORT"
stop_all() {
	[ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null
	[ -n "${watcher:-}" ] && kill "$watcher" 2>/dev/null
	maestro_stop_cluster
}
trap stop_all EXIT
maestro_start_cluster shared_preload_libraries=maestro "maestro.rate_limit=$RATE" \
	"maestro.max_concurrency=$CONCURRENCY" synchronous_commit=on || exit 1

wf=a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0002
trigger_url="/v1/accounts/7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10/workflows/$wf/actions/trigger"

# a fresh server: its counts (requests, duplicates) are one run's
start_server() {
	[ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	node "$HERE/trigger_server.js" "$BENCH_PORT" "$LATENCY_MS" >/dev/null &
	server_pid=$!
	for _ in $(seq 50); do curl -s "$BENCH_URL/__bench/stats" >/dev/null && break; sleep 0.1; done
}

# run a command with its CPU time (perf stat's task-clock, in ms) written to
# file $1; without perf, just run it
perf_stat() {
	local out=$1
	shift
	if command -v perf >/dev/null && perf stat -x, -e task-clock -o "$out" -- true 2>/dev/null; then
		perf stat -x, -e task-clock -o "$out" -- "$@"
	else
		: >"$out"
		"$@"
	fi
}

median() {
	sort -n | awk '{v[NR] = $1} END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# the server's own capacity: a Node client alone, CONCURRENCY POSTs at a
# time on fresh connections
start_server
server_capacity=$(node "$HERE/load_client.js" "$BENCH_URL$trigger_url" 4000 "$CONCURRENCY")
bash "$HERE/build_client.sh" "$MAESTRO_TEST_DIR/bench_client" || exit 1

psql -X -q -d postgres -v url="$BENCH_URL" <<'SQL' || exit 1
CREATE EXTENSION maestro;
CREATE SERVER bench FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE USER MAPPING FOR CURRENT_USER SERVER bench OPTIONS (access_token 'bench-token');
SQL

# this cluster's worker (other clusters on the machine may have theirs)
postmaster=$(head -1 "$MAESTRO_TEST_DIR/pgdata/postmaster.pid")
worker_pid() {
	pgrep -P "$postmaster" -f 'maestro trigger queue worker' | head -1
}

# watch the worker's peak memory and its CPU time (clock ticks) while it
# runs, with shell builtins: a few processes started every 100 ms would
# take CPU the worker and the server compete for
: >"$MAESTRO_TEST_DIR/worker_cpu"
(
	peak=0
	pid=
	while :; do
		[ -n "$pid" ] && [ -e "/proc/$pid" ] || pid=$(worker_pid)
		if [ -n "$pid" ]; then
			hwm=
			while read -r key value _; do
				[ "$key" = VmHWM: ] && hwm=$value && break
			done <"/proc/$pid/status" 2>/dev/null
			[ -n "$hwm" ] && [ "$hwm" -gt "$peak" ] && peak=$hwm && echo "$peak" >"$MAESTRO_TEST_DIR/worker_peak_kb"
			# utime + stime: fields 14 and 15, the 12th and 13th after the command name
			stat=
			read -r stat <"/proc/$pid/stat" 2>/dev/null
			if [ -n "$stat" ]; then
				read -r -a fields <<<"${stat##*) }"
				echo "$pid $((fields[11] + fields[12]))" >>"$MAESTRO_TEST_DIR/worker_cpu"
			fi
		fi
		sleep 0.1
	done
) &
watcher=$!

: >"$MAESTRO_TEST_DIR/runs"
for run in $(seq "$RUNS"); do
	# the limit: a C client (libcurl multi, keep-alive), as many requests as the worker sends
	start_server
	c_rate=$(perf_stat "$MAESTRO_TEST_DIR/c_cpu" "$MAESTRO_TEST_DIR/bench_client" multi \
		"$BENCH_URL$trigger_url" "$N" "$CONCURRENCY") || exit 1
	c_cpu_ms=$(awk -F, '/task-clock/ {printf "%.0f", $1}' "$MAESTRO_TEST_DIR/c_cpu" 2>/dev/null)

	start_server
	psql -X -q -d postgres -c 'TRUNCATE maestro_trigger_requests, maestro_synced_instances, maestro_instance_events' || exit 1
	cpu_from=$(wc -l <"$MAESTRO_TEST_DIR/worker_cpu")
	read -r enqueue_ms committed <<<"$(psql -X -q -A -t -F ' ' -d postgres -v n="$N" -v wf="$wf" <<'SQL'
BEGIN;
SELECT clock_timestamp() AS t0 \gset
SELECT count(maestro_trigger_async(:'wf', jsonb_build_object('Amount', g, 'Approver', 'ops@example.com'), 'PO ' || g))
FROM generate_series(1, :n) AS g \g /dev/null
SELECT round(extract(epoch FROM clock_timestamp() - :'t0') * 1000) AS enqueue_ms \gset
COMMIT;
SELECT :enqueue_ms, extract(epoch FROM clock_timestamp());
SQL
)"
	read -r lsn0 xacts0 <<<"$(psql -X -A -t -F ' ' -d postgres -c "
		SELECT pg_current_wal_lsn(), sum(xact_commit) FROM pg_stat_database")"
	# Polled from one session: a psql started every 50 ms, with a backend
	# of its own and a count over the queue, took so much of the two CPUs
	# during the worker's turn alone that the worker's ratio fell from 93%
	# to 80% (the server's answers came 23.4 ms after the request instead
	# of 20.8). Each poll is one transaction, an index look-up.
	polls=0
	coproc POLL { psql -X -A -t -d postgres; }
	for _ in $(seq 1200); do
		echo "SELECT EXISTS (SELECT FROM maestro_trigger_requests WHERE state IN ('queued', 'sending'));" >&"${POLL[1]}"
		read -r left <&"${POLL[0]}" || { echo "the polling session failed" >&2; exit 1; }
		polls=$((polls + 1))
		[ "$left" = f ] && break
		sleep 0.05
	done
	exec {POLL[1]}>&-
	wait "$POLL_PID"

	# the worker's transactions and WAL per request, counted once it has
	# exited (idle) so that its statistics are flushed; the polls and the
	# read before them are one transaction each and taken off
	for _ in $(seq 300); do
		[ -z "$(worker_pid)" ] && break
		sleep 0.1
	done
	read -r wal_bytes xacts <<<"$(psql -X -A -t -F ' ' -d postgres -c "
		SELECT pg_current_wal_lsn() - '$lsn0', sum(xact_commit) - $xacts0 - $polls - 1 FROM pg_stat_database")"
	read -r done failed last_done first_sent <<<"$(psql -X -A -t -F ' ' -d postgres -c "
		SELECT count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE state = 'failed'),
		       extract(epoch FROM max(done_at)), extract(epoch FROM min(sent_at))
		FROM maestro_trigger_requests")"
	read -r sent duplicates max_per_second <<<"$(curl -s "$BENCH_URL/__bench/stats" |
		python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["requests"], s["duplicates"], s["max_per_second"])')"
	# the CPU of the workers that ran for this run (each one's last reading)
	worker_cpu_ms=$(tail -n +$((cpu_from + 1)) "$MAESTRO_TEST_DIR/worker_cpu" |
		awk -v hz="$(getconf CLK_TCK)" '{t[$1] = $2} END {for (p in t) s += t[p]; printf "%.0f", 1000 * s / hz}')
	span=$(echo "$last_done - $committed" | bc -l)
	rate=$(echo "$N / $span" | bc -l)
	printf 'run %d: worker %.0f req/s, C client %.0f req/s, ratio %.0f%%; done %d, failed %d, POSTs %d, duplicated %d; first send %.1f ms after commit; enqueue %.1f us/row; %.2f transactions and %.0f WAL bytes per request; CPU per request: worker %.0f us, C client %s us; most in 1 s: %d (load %s)\n' \
		"$run" "$rate" "$c_rate" "$(echo "100 * $rate / $c_rate" | bc -l)" "$done" "$failed" "$sent" "$duplicates" \
		"$(echo "($first_sent - $committed) * 1000" | bc -l)" "$(echo "$enqueue_ms * 1000 / $N" | bc -l)" \
		"$(echo "$xacts / $N" | bc -l)" "$(echo "$wal_bytes / $N" | bc -l)" \
		"$(echo "$worker_cpu_ms * 1000 / $N" | bc -l)" "${c_cpu_ms:+$(echo "$c_cpu_ms * 1000 / $N" | bc)}" "$max_per_second" \
		"$(cut -d' ' -f1-3 /proc/loadavg)"
	echo "$rate $c_rate $(echo "100 * $rate / $c_rate" | bc -l) $done $failed $sent $duplicates $(echo "$enqueue_ms * 1000 / $N" | bc -l) $(echo "$xacts / $N" | bc -l) $(echo "$wal_bytes / $N" | bc -l) $(echo "$worker_cpu_ms * 1000 / $N" | bc -l) ${c_cpu_ms:+$(echo "$c_cpu_ms * 1000 / $N" | bc -l)}" >>"$MAESTRO_TEST_DIR/runs"
done
kill "$watcher" 2>/dev/null

col() { awk -v c="$1" '{print $c}' "$MAESTRO_TEST_DIR/runs"; }
sum() { awk -v c="$1" '{s += $c} END {print s}' "$MAESTRO_TEST_DIR/runs"; }
printf 'requests:                  %d per run, %d runs (max_concurrency %d, rate_limit %s, server latency %d ms)\n' "$N" "$RUNS" "$CONCURRENCY" "$RATE" "$LATENCY_MS"
printf 'enqueue:                   %.1f us per row (median)\n' "$(col 8 | median)"
printf 'done / failed:             %d / %d (all runs)\n' "$(sum 4)" "$(sum 5)"
printf 'POSTs the server received: %d; duplicated instance names: %d (all runs)\n' "$(sum 6)" "$(sum 7)"
printf 'worker per request:        %.2f transactions, %.0f bytes of WAL (medians)\n' "$(col 9 | median)" "$(col 10 | median)"
printf 'CPU per request:           worker %.0f us (its database work included), C client %.0f us (medians)\n' "$(col 11 | median)" "$(col 12 | median)"
printf 'worker peak RSS:           %s kB\n' "$(cat "$MAESTRO_TEST_DIR/worker_peak_kb" 2>/dev/null || echo '?')"
printf 'server capacity alone:     %.0f requests/s (load_client.js, %d at a time, fresh connections, %d ms latency)\n' "$server_capacity" "$CONCURRENCY" "$LATENCY_MS"
printf 'worker throughput:         %.0f requests/s (median; commit to last done_at)\n' "$(col 1 | median)"
printf 'C curl-multi client:       %.0f requests/s (median; %d at a time, keep-alive, same endpoint)\n' "$(col 2 | median)" "$CONCURRENCY"
printf 'ratio worker / C client:   %.0f%% (median of the per-run ratios; runs: %s)\n' "$(col 3 | median)" "$(col 3 | awk '{printf "%s%.0f", (NR > 1 ? " " : ""), $1}')"
