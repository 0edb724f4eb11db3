#!/usr/bin/env bash
# test/bench/trigger.sh: 2,000 maestro_trigger calls (N) in one statement,
# each row with its own arguments, beside the limit (bench_client.c: one
# keep-alive connection, N POSTs one after another, each response parsed)
# and pgsql-http's http_post with keep-alive where that is installed. The
# endpoint is the nginx stand-in; every run's POSTs are counted in its
# access log, so a call that did not reach it (a function scan run once and
# rewound) cannot pass for one. Medians of RUNS (5) interleaved runs;
# ratios last. SHORT=1: 100 calls, one run. Run after `make install`.
# Beside the elapsed times it reports the CPU time per call of the backend
# (from /proc/PID/schedstat, where the kernel has it) and of the C client:
# figures a loaded machine distorts far less than elapsed times.
set -u -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
N=${N:-2000}
[ "$SHORT" = 1 ] && N=100
trap bench_stop EXIT
bench_setup || exit 1
url="$BENCH_BASE/actions/trigger"

maestro_sql="SELECT count(t.instance_id) FROM generate_series(1, $N) AS g,
  LATERAL maestro_trigger('$BENCH_WF', jsonb_build_object('n', g), 'bench ' || g) AS t"
http_sql="SET http.curlopt_tcp_keepalive = '1';
SELECT count(*) FILTER (WHERE h.status = 201) FROM generate_series(1, $N) AS g,
  LATERAL http_post('$url', format('{\"instance_name\":\"bench %s\",\"trigger_inputs\":{\"n\":%s}}', g, g),
                    'application/json') AS h"

# "elapsed_ms cpu_ms" of the statement $1 in one session: its backend's CPU
# time from /proc/PID/schedstat (ns on the CPU), "nan" where there is none.
# The library is loaded first (2.3 ms of CPU), as the C client's libraries
# are loaded before its clock starts.
maestro_time_cpu() {
	bench_psql -v sql="$1" <<'SQL' | awk '
		/^cpu / { c[++n] = $2 }
		/^Time: / { ms = $2 }
		END { if (n == 2 && c[1] != "" && c[2] != "") printf "%s %.1f\n", ms, (c[2] - c[1]) / 1e6; else printf "%s nan\n", ms }'
SELECT pg_backend_pid() AS pid \gset
\setenv BENCH_PID :pid
LOAD 'maestro';
\! echo "cpu $(cut -d' ' -f1 /proc/$BENCH_PID/schedstat 2>/dev/null)"
\timing on
:sql;
\timing off
\! echo "cpu $(cut -d' ' -f1 /proc/$BENCH_PID/schedstat 2>/dev/null)"
SQL
}

# run "what" command...: its ms on stdout; fails unless nginx logged N more POSTs
counted() {
	local what=$1 before after ms
	shift
	before=$(bench_posts)
	ms=$("$@") || { echo "$what failed" >&2; return 1; }
	after=$(bench_posts)
	if [ $((after - before)) != "$N" ]; then
		echo "$what: nginx logged $((after - before)) POSTs, not $N" >&2
		return 1
	fi
	echo "$ms"
}

: >"$MAESTRO_TEST_DIR/m"; : >"$MAESTRO_TEST_DIR/c"; : >"$MAESTRO_TEST_DIR/h"
for _ in $(seq "$RUNS"); do
	counted maestro_trigger maestro_time_cpu "$maestro_sql" >>"$MAESTRO_TEST_DIR/m" || exit 1
	counted "C client" "$BENCH_CLIENT" trigger "$url" "$N" >>"$MAESTRO_TEST_DIR/c" || exit 1
	if [ "$BENCH_HTTP" = 1 ]; then
		counted pgsql-http bench_time_sql "$http_sql" >>"$MAESTRO_TEST_DIR/h" || exit 1
	fi
done
m=$(median <"$MAESTRO_TEST_DIR/m")
c=$(median <"$MAESTRO_TEST_DIR/c")
# CPU µs per call, medians over the runs
mcpu=$(awk -v n="$N" '$2 != "nan" { print $2 * 1000 / n }' "$MAESTRO_TEST_DIR/m" | median)
ccpu=$(awk -v n="$N" '{ print $2 * 1000 / n }' "$MAESTRO_TEST_DIR/c" | median)
# the best run of each: what other work on the machine disturbed least
best() { sort -n | head -n 1; }
mbest=$(best <"$MAESTRO_TEST_DIR/m" | cut -d' ' -f1)
cbest=$(best <"$MAESTRO_TEST_DIR/c" | cut -d' ' -f1)
mcpubest=$(awk -v n="$N" '$2 != "nan" { print $2 * 1000 / n }' "$MAESTRO_TEST_DIR/m" | best)
ccpubest=$(awk -v n="$N" '{ print $2 * 1000 / n }' "$MAESTRO_TEST_DIR/c" | best)
printf 'calls per run:           %d (each counted at the server)\n' "$N"
printf 'maestro_trigger:         %s ms (median of %d)\n' "$m" "$RUNS"
printf 'C keep-alive loop:       %s ms\n' "$c"
if [ "$mcpu" = nan ]; then
	echo "CPU per call:            not measured (no /proc/PID/schedstat)"
else
	printf 'CPU per call:            backend %s µs, C client %s µs (%sx)\n' "$mcpu" "$ccpu" "$(ratio "$mcpu" "$ccpu")"
	printf 'best of %d runs:          %s ms vs %s ms (%sx); CPU %s µs vs %s µs (%sx)\n' "$RUNS" \
		"$mbest" "$cbest" "$(ratio "$mbest" "$cbest")" "$mcpubest" "$ccpubest" "$(ratio "$mcpubest" "$ccpubest")"
fi
echo "load average:            $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
if [ "$BENCH_HTTP" = 1 ]; then
	h=$(median <"$MAESTRO_TEST_DIR/h")
	printf 'pgsql-http http_post:    %s ms\n' "$h"
else
	echo "pgsql-http: not installed, not measured"
fi
echo "ratio maestro / C:            $(ratio "$m" "$c")x"
[ "$BENCH_HTTP" = 1 ] && echo "ratio pgsql-http / maestro:   $(ratio "$h" "$m")x"
exit 0
