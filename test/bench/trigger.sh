#!/usr/bin/env bash
# test/bench/trigger.sh: 2,000 maestro_trigger calls (N) in one statement,
# each row with its own arguments, beside the limit (bench_client.c: one
# keep-alive connection, N POSTs one after another, each response parsed)
# and pgsql-http's http_post with keep-alive where that is installed. The
# endpoint is the nginx stand-in; every run's POSTs are counted in its
# access log, so a call that did not reach it (a function scan run once and
# rewound) cannot pass for one. Medians of RUNS (5) interleaved runs,
# and the median of the runs' paired ratios; ratios last. SHORT=1: 100 calls, one run. Run after `make install`.
# Beside the elapsed times it reports the CPU time per call of the backend
# (from /proc/PID/schedstat, where the kernel has it) and of the C client:
# figures a loaded machine distorts far less than elapsed times.
#
# Where the scheduler happens to put the client beside nginx changes the
# time per call more than anything the client does: on a 2-core VM whose
# idle CPUs halt, the C client's calls took 35 µs each with both on one
# CPU and 80 µs across CPUs (each request and answer then wakes a halted
# CPU). Unpinned, runs minutes apart differ by half. So each run is
# also repeated pinned (PIN=0: not), with taskset, where there are two
# CPUs: nginx on the last CPU and the client (the backend, or the C
# client) on the first ("apart", as with a remote API), then both on the
# last ("together": no wake-up across CPUs, so it compares CPU work).
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
# are loaded before its clock starts. With BENCH_CPU set, the backend is
# pinned to that CPU first.
maestro_time_cpu() {
	bench_psql -v sql="$1" <<'SQL' | awk '
		/^cpu / { c[++n] = $2 }
		/^Time: / { ms = $2 }
		END { if (n == 2 && c[1] != "" && c[2] != "") printf "%s %.1f\n", ms, (c[2] - c[1]) / 1e6; else printf "%s nan\n", ms }'
SELECT pg_backend_pid() AS pid \gset
\setenv BENCH_PID :pid
LOAD 'maestro';
\! test -z "$BENCH_CPU" || taskset -pc "$BENCH_CPU" "$BENCH_PID" >/dev/null
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

# nginx's processes (master and worker) to CPU list $1
pin_nginx() {
	local master
	master=$(cat "$MAESTRO_TEST_DIR/nginx/nginx.pid")
	for pid in "$master" $(pgrep -P "$master"); do
		taskset -apc "$1" "$pid" >/dev/null || return 1
	done
}

# one maestro run and one C client run, with the client on CPU $1 ("": any);
# their "elapsed_ms cpu_ms" lines are added to the files m$2 and c$2
run_pair() {
	local cpu=$1 tag=$2 pin=()
	[ -n "$cpu" ] && pin=(taskset -c "$cpu")
	BENCH_CPU=$cpu counted maestro_trigger maestro_time_cpu "$maestro_sql" >>"$MAESTRO_TEST_DIR/m$tag" || return 1
	counted "C client" "${pin[@]}" "$BENCH_CLIENT" trigger "$url" "$N" >>"$MAESTRO_TEST_DIR/c$tag" || return 1
}

ncpu=$(nproc 2>/dev/null || echo 1)
PIN=${PIN:-1}
if [ "$PIN" = 1 ] && { [ "$ncpu" -lt 2 ] || ! command -v taskset >/dev/null; }; then
	echo "pinned runs skipped: they need taskset and two CPUs"
	PIN=0
fi
first_cpu=0
last_cpu=$((ncpu - 1))

: >"$MAESTRO_TEST_DIR/m"; : >"$MAESTRO_TEST_DIR/c"; : >"$MAESTRO_TEST_DIR/h"
: >"$MAESTRO_TEST_DIR/ma"; : >"$MAESTRO_TEST_DIR/ca"; : >"$MAESTRO_TEST_DIR/mt"; : >"$MAESTRO_TEST_DIR/ct"
for _ in $(seq "$RUNS"); do
	run_pair "" "" || exit 1
	if [ "$BENCH_HTTP" = 1 ]; then
		counted pgsql-http bench_time_sql "$http_sql" >>"$MAESTRO_TEST_DIR/h" || exit 1
	fi
	if [ "$PIN" = 1 ]; then
		pin_nginx "$last_cpu" || exit 1
		run_pair "$first_cpu" a || exit 1
		run_pair "$last_cpu" t || exit 1
		pin_nginx "0-$last_cpu" || exit 1
	fi
done
m=$(median <"$MAESTRO_TEST_DIR/m")
c=$(median <"$MAESTRO_TEST_DIR/c")
# CPU µs per call, medians over the runs
mcpu=$(awk -v n="$N" '$2 != "nan" { print $2 * 1000 / n }' "$MAESTRO_TEST_DIR/m" | median)
ccpu=$(awk -v n="$N" '{ print $2 * 1000 / n }' "$MAESTRO_TEST_DIR/c" | median)
# the best run of each: what other work on the machine disturbed least
best() { sort -n | head -n 1; }
# Each maestro run is followed by a C client run: their ratio, run by run,
# cancels a slow spell of the machine that lasts longer than the pair,
# where the medians of each side can take their runs from different
# spells. "median (lowest to highest)" of the paired ratios of tag $1.
paired() {
	paste -d' ' "$MAESTRO_TEST_DIR/m$1" "$MAESTRO_TEST_DIR/c$1" |
		awk '$3 > 0 { printf "%.4f\n", $1 / $3 }' | sort -n |
		awk '{ r[NR] = $1 } END {
			if (NR == 0) { print "none"; exit }
			m = NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
			printf "%.2fx (%.2fx to %.2fx)\n", m, r[1], r[NR] }'
}
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
if [ "$PIN" = 1 ]; then
	for tag in a t; do
		[ $tag = a ] && what="pinned apart (client on CPU $first_cpu, nginx on CPU $last_cpu)" ||
			what="pinned together (both on CPU $last_cpu)"
		pm=$(median <"$MAESTRO_TEST_DIR/m$tag")
		pc=$(median <"$MAESTRO_TEST_DIR/c$tag")
		pmcpu=$(awk -v n="$N" '$2 != "nan" { print $2 * 1000 / n }' "$MAESTRO_TEST_DIR/m$tag" | median)
		pccpu=$(awk -v n="$N" '{ print $2 * 1000 / n }' "$MAESTRO_TEST_DIR/c$tag" | median)
		printf '%s: %s ms vs %s ms (%sx); CPU %s µs vs %s µs a call\n' "$what" "$pm" "$pc" \
			"$(ratio "$pm" "$pc")" "$pmcpu" "$pccpu"
		eval "ratio_$tag=$(ratio "$pm" "$pc")"
	done
fi
echo "paired runs, maestro / C:     unpinned $(paired "")"
if [ "$PIN" = 1 ]; then
	echo "                              pinned apart $(paired a)"
	echo "                              pinned together $(paired t)"
fi
[ "$BENCH_HTTP" = 1 ] && echo "ratio pgsql-http / maestro:   $(ratio "$h" "$m")x"
if [ "$PIN" = 1 ]; then
	echo "ratio maestro / C, pinned apart:    ${ratio_a}x"
	echo "ratio maestro / C, pinned together: ${ratio_t}x"
fi
echo "ratio maestro / C:            $(ratio "$m" "$c")x"
exit 0
