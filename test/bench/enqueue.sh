#!/usr/bin/env bash
# test/bench/enqueue.sh: what maestro_trigger_async costs per row, 50,000
# rows (N) queued in one INSERT ... SELECT in one session, each in a
# transaction that is rolled back (so nothing is sent). Beside it, the same
# statement without the call (the cost of the statement itself). Medians
# of RUNS (5) interleaved runs; ratios last. SHORT=1: 2,000 rows, one run.
# Run after `make install`.
set -u -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
N=${N:-50000}
[ "$SHORT" = 1 ] && N=2000
trap bench_stop EXIT
bench_setup shared_preload_libraries=maestro maestro.database_name=$BENCH_DB >/dev/null || exit 1

enqueue="INSERT INTO ids SELECT maestro_trigger_async('$BENCH_WF', jsonb_build_object('Amount', g, 'Approver', 'ops@example.com'), 'PO ' || g) FROM generate_series(1, $N) AS g"
plain="INSERT INTO ids SELECT length(jsonb_build_object('Amount', g, 'Approver', 'ops@example.com')::text || 'PO ' || g) FROM generate_series(1, $N) AS g"

# one run: the statement's ms, in a transaction rolled back
run() {
	bench_psql -c "CREATE TEMP TABLE ids (id bigint)" -c 'BEGIN' -c '\timing on' -c "$1" -c '\timing off' \
		-c "SELECT count(*) FROM ids" -c 'ROLLBACK' | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1
}

# every row queued in the transaction, with its own id
rows=$(bench_psql -c "CREATE TEMP TABLE ids (id bigint)" -c 'BEGIN' -c "$enqueue" \
	-c "SELECT count(DISTINCT id) FROM ids" -c 'ROLLBACK' | tail -1)
[ "$rows" = "$N" ] || { echo "maestro_trigger_async queued $rows distinct rows, not $N"; exit 1; }

: >"$MAESTRO_TEST_DIR/e"; : >"$MAESTRO_TEST_DIR/p"
for _ in $(seq "$RUNS"); do
	run "$enqueue" >>"$MAESTRO_TEST_DIR/e"
	run "$plain" >>"$MAESTRO_TEST_DIR/p"
done
e=$(median <"$MAESTRO_TEST_DIR/e")
p=$(median <"$MAESTRO_TEST_DIR/p")
printf 'maestro_trigger_async: %d rows in %s ms (median of %d)\n' "$N" "$e" "$RUNS"
printf 'the same statement without the call: %s ms\n' "$p"
echo "enqueue cost per row:     $(awk -v e="$e" -v n="$N" 'BEGIN { printf "%.1f", e * 1000 / n }') us"
echo "net of the statement:     $(awk -v e="$e" -v p="$p" -v n="$N" 'BEGIN { printf "%.1f", (e - p) * 1000 / n }') us"
echo "rows per second:          $(awk -v e="$e" -v n="$N" 'BEGIN { printf "%.0f", n / (e / 1000) }')"
echo "ratio enqueue / the statement alone:  $(ratio "$e" "$p")x"
echo "ratio us per row / 20 us (target):    $(awk -v e="$e" -v n="$N" 'BEGIN { printf "%.2f", e * 1000 / n / 20 }')x"
