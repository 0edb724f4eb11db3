#!/usr/bin/env bash
# test/bench/retention.sh: do the queue's table and indexes stay small after
# millions of requests?
#
# A stream of ROWS finished requests (default 3,000,000) goes through
# maestro_trigger_requests at RATE rows a second (default 10,000: five
# times what the queue can send), in batches of BATCH. Each batch leaves
# its rows as the worker leaves them: inserted 'queued', updated to
# 'sending', then to 'done' with an instance id, url and done_at, so every
# index (the primary key, the due and sending partial indexes, the
# finished index) sees the same churn as under a real queue; the three
# steps share one transaction so that the worker never claims the bench's
# rows. Each batch also queues one real request that the worker sends to
# nginx, which keeps the worker running as a busy server's would. With
# maestro.request_retention = RETENTION (default 10s) the worker deletes
# what is past it, and autovacuum (default settings) reclaims the space.
#
# Every SAMPLES-th of the run it prints the table's and each index's
# pg_relation_size, the live and dead rows and the autovacuum runs so far;
# at the end, for each relation, the peak over the last quarter of the run
# against the peak over the second quarter (after the warm-up), and
# "bounded" when the later peak is at most 1.5 times the earlier one. The
# last line is the worst of those ratios.
#
# Starts its own cluster and nginx (lib.sh) after `make install`. SHORT=1:
# 40,000 rows at 5,000/s with a 1 s retention, to prove the script works.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/lib.sh"
ROWS=${ROWS:-3000000}
RATE=${RATE:-10000}
BATCH=${BATCH:-10000}
RETENTION=${RETENTION:-10s}
SAMPLES=${SAMPLES:-20}
if [ "$SHORT" = 1 ]; then
	ROWS=40000
	RATE=5000
	BATCH=2000
	RETENTION=1s
	SAMPLES=4
fi
batches=$(((ROWS + BATCH - 1) / BATCH))

trap bench_stop EXIT
bench_setup shared_preload_libraries=maestro maestro.database_name=$BENCH_DB \
	"maestro.request_retention=$RETENTION" log_autovacuum_min_duration=0 >/dev/null || exit 1
server_oid=$(bench_psql -c "SELECT oid FROM pg_foreign_server WHERE srvname = 'bench'")

# one line of sizes, in kB: table, then each index of the table by name
sizes_header() {
	bench_psql -c "SELECT string_agg(format('%-12s', left(replace(c.relname, 'maestro_trigger_requests', 'tbl'), 12)), ' '
  ORDER BY c.relkind DESC, c.relname)
FROM pg_class c
WHERE c.oid = 'maestro_trigger_requests'::regclass
   OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'maestro_trigger_requests'::regclass)"
}
sizes() {
	bench_psql -c "SELECT string_agg(format('%-12s', pg_relation_size(c.oid) / 1024), ' ' ORDER BY c.relkind DESC, c.relname)
FROM pg_class c
WHERE c.oid = 'maestro_trigger_requests'::regclass
   OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'maestro_trigger_requests'::regclass)"
}
stats() {
	bench_psql -c "SELECT format('%s live %s dead %s autovacuums', n_live_tup, n_dead_tup, autovacuum_count)
FROM pg_stat_user_tables WHERE relid = 'maestro_trigger_requests'::regclass"
}

echo "$ROWS finished requests at $RATE/s in batches of $BATCH; maestro.request_retention = $RETENTION; load: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-9s %-7s %s %s\n' "rows" "s" "$(sizes_header)" "(kB; rows as pg_stat_user_tables counts them)"
samples_file="$MAESTRO_TEST_DIR/samples"
: >"$samples_file"
every=$(((batches + SAMPLES - 1) / SAMPLES))
start=$(date +%s.%N)
for b in $(seq 1 "$batches"); do
	bench_psql -v n="$BATCH" -v srv="$server_oid" -v b="$b" >/dev/null <<'SQL' || exit 1
BEGIN;
WITH ins AS (
  INSERT INTO maestro_trigger_requests (server_id, requested_by, workflow_id, inputs, instance_name)
  SELECT :srv, current_user::regrole, 'a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0002',
         jsonb_build_object('Vendor', 'Vendor ' || g, 'Amount', g % 100000, 'Approver', 'ops@example.com'),
         format('Purchase order %s-%s [mq %s]', :b, g, md5(g::text))
  FROM generate_series(1, :n) g
  RETURNING id)
SELECT min(id) AS lo, max(id) AS hi FROM ins \gset
UPDATE maestro_trigger_requests SET state = 'sending', attempts = attempts + 1, sent_at = clock_timestamp()
WHERE id BETWEEN :lo AND :hi;
UPDATE maestro_trigger_requests SET state = 'done', http_status = 201, instance_id = gen_random_uuid(),
       instance_url = 'https://apps.docusign.com/api/maestro/v1/accounts/7f09961a/instances/' || id || '/execution?mtid=1&mtsec=x',
       done_at = clock_timestamp()
WHERE id BETWEEN :lo AND :hi;
COMMIT;
SELECT maestro_trigger_async('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0002', '{"Vendor": "real"}', 'real ' || :b);
SQL
	# keep to RATE: wait until this batch's share of the run has passed
	sleep "$(awk -v s="$start" -v now="$(date +%s.%N)" -v b="$b" -v n="$BATCH" -v r="$RATE" \
		'BEGIN { d = s + b * n / r - now; printf "%.3f", (d > 0 ? d : 0) }')"
	if [ $((b % every)) = 0 ] || [ "$b" = "$batches" ]; then
		line=$(sizes)
		echo "$b $line" >>"$samples_file"
		printf '%-9s %-7s %s %s\n' "$((b * BATCH))" \
			"$(awk -v s="$start" -v now="$(date +%s.%N)" 'BEGIN { printf "%.0f", now - s }')" "$line" "$(stats)"
	fi
done
elapsed=$(awk -v s="$start" -v now="$(date +%s.%N)" 'BEGIN { printf "%.1f", now - s }')
echo "streamed $((batches * BATCH)) rows in $elapsed s ($(awk -v n=$((batches * BATCH)) -v t="$elapsed" 'BEGIN { printf "%.0f", n / t }') rows/s); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "rows left in the table: $(bench_psql -c 'SELECT count(*) FROM maestro_trigger_requests')" \
	"(those within the retention, and any backlog not yet deleted)"
echo "worker: $(bench_psql -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'maestro worker'") running at the end;" \
	"real requests sent: $(bench_posts) of $batches"

[ "$SHORT" = 1 ] && echo "(short mode: over in seconds, before autovacuum's first run; the verdicts below mean nothing)"
# each relation: peak of the last quarter of the samples against the second quarter's
awk -v header="$(sizes_header)" '
	{ n++; for (i = 2; i <= NF; i++) v[n, i] = $i; cols = NF }
	END {
		split(header, name, " ")
		q = int(n / 4); if (q < 1) q = 1
		worst = 0
		for (i = 2; i <= cols; i++) {
			early = 0; late = 0
			for (k = q + 1; k <= 2 * q && k <= n; k++) if (v[k, i] > early) early = v[k, i]
			for (k = n - q + 1; k <= n; k++) if (v[k, i] > late) late = v[k, i]
			r = early > 0 ? late / early : (late > 0 ? 99 : 1)
			if (r > worst) worst = r
			printf "%-34s peak %7d kB in the 2nd quarter, %7d kB in the last: x%.2f %s\n",
				name[i - 1], early, late, r, r <= 1.5 ? "bounded" : "GROWING"
		}
		printf "ratio (worst last-quarter / second-quarter peak size over the table and its indexes): %.2f\n", worst
	}' "$samples_file"
