#!/usr/bin/env bash
# test/bench/memory.sh: the backend's resident memory after 1,000 and after
# 21,000 calls in one session (maestro_trigger, then maestro_instance, each
# against the nginx stand-in, 1,000 calls a statement), and the growth in
# between; the target is under 1 MB. Every POST is counted at nginx.
# Ratios last. SHORT=1: 100 and 300 calls.
# Run after `make install`.
set -u -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
FIRST=1000
TOTAL=21000
BATCH=1000
if [ "$SHORT" = 1 ]; then
	FIRST=100
	TOTAL=300
	BATCH=100
fi
trap bench_stop EXIT
bench_setup || exit 1
bench_make_instances 10 # the single instance maestro_instance reads

kind() {
	local call=$1
	{
		cat <<SQL
SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmRSS:\s+(\d+)'))[1]::bigint AS rss0 \gset
SQL
		for i in $(seq 1 $((TOTAL / BATCH))); do
			echo "SELECT count($call) FROM generate_series(1, $BATCH) AS g \\g /dev/null"
			if [ $((i * BATCH)) = "$FIRST" ]; then
				echo "SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmRSS:\s+(\d+)'))[1]::bigint AS rss1 \\gset"
			fi
		done
		cat <<SQL
SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmRSS:\s+(\d+)'))[1]::bigint AS rss2 \gset
SELECT :rss1, :rss2, :rss2 - :rss1;
SQL
	} | bench_psql -F " " || return 1
}

before=$(bench_posts)
read -r t1 t2 tg < <(kind "(maestro_trigger('$BENCH_WF', jsonb_build_object('n', g), 'mem ' || g)).instance_id")
posts=$(( $(bench_posts) - before ))
[ -n "$tg" ] || { echo "the maestro_trigger run failed"; exit 1; }
[ "$posts" = "$TOTAL" ] || { echo "nginx logged $posts POSTs, not $TOTAL"; exit 1; }
read -r i1 i2 ig < <(kind "(maestro_instance('$BENCH_WF', ('c0ffee00-0000-4000-8000-00000000000' || (g % 10))::uuid)).id")
[ -n "$ig" ] || { echo "the maestro_instance run failed"; exit 1; }

printf 'maestro_trigger:  RSS %d kB after %d calls, %d kB after %d: growth %d kB\n' "$t1" "$FIRST" "$t2" "$TOTAL" "$tg"
printf 'maestro_instance: RSS %d kB after %d calls, %d kB after %d: growth %d kB\n' "$i1" "$FIRST" "$i2" "$TOTAL" "$ig"
echo "ratio trigger growth / 1 MB:   $(ratio "$tg" 1024)x"
echo "ratio instance growth / 1 MB:  $(ratio "$ig" 1024)x"
