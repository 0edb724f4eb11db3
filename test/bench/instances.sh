#!/usr/bin/env bash
# test/bench/instances.sh: maestro_instances on a workflow with 10,000
# instances (N; about 9 MB of JSON from the nginx stand-in) beside the limit,
# the C client that fetches, parses and converts every field of every
# instance (bench_client.c), and beside pgsql-http's http_get +
# jsonb_to_recordset where that extension is installed. Medians of RUNS (5)
# interleaved runs, and the backend's peak memory (VmHWM) over one call,
# compared with the document's size. Ratios last. SHORT=1: 200 instances,
# one run, to prove the script works. Run after `make install`.
set -u -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
N=${N:-10000}
[ "$SHORT" = 1 ] && N=200
trap bench_stop EXIT
bench_setup || exit 1
bench_make_instances "$N"
doc_bytes=$(stat -c %s "$MAESTRO_TEST_DIR/nginx/www/instances.json")
url="$BENCH_BASE/instances"

maestro_sql="SELECT count(*) FROM maestro_instances('$BENCH_WF')"
http_sql="SELECT count(*) FROM http_get('$url') AS h,
  jsonb_to_recordset((h.content::jsonb) -> 'data') AS x(id uuid, name text, workflow_status text,
    template_id uuid, account_id uuid, started_at timestamptz, started_by text, started_by_name text,
    started_by_role text, ended_at timestamptz, expires_at timestamptz, last_modified_at timestamptz,
    canceled_at timestamptz, canceled_by text, trigger_inputs jsonb, total_steps int,
    last_completed_step int, last_completed_step_name text, tags text[], metadata jsonb)"

# every path must see all N instances
rows=$(bench_psql -c "$maestro_sql")
[ "$rows" = "$N" ] || { echo "maestro_instances returned $rows rows, not $N"; exit 1; }
read -r _ crows < <("$BENCH_CLIENT" instances "$url")
[ "$crows" = "$N" ] || { echo "the C client converted $crows instances, not $N"; exit 1; }
if [ "$BENCH_HTTP" = 1 ]; then
	hrows=$(bench_psql -c "$http_sql")
	[ "$hrows" = "$N" ] || { echo "pgsql-http returned $hrows rows, not $N"; exit 1; }
fi

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$MAESTRO_TEST_DIR/m" ; : >"$MAESTRO_TEST_DIR/c" ; : >"$MAESTRO_TEST_DIR/h"
for run in $(seq "$RUNS"); do
	bench_time_sql "$maestro_sql" >>"$MAESTRO_TEST_DIR/m"
	"$BENCH_CLIENT" instances "$url" | cut -d' ' -f1 >>"$MAESTRO_TEST_DIR/c"
	[ "$BENCH_HTTP" = 1 ] && bench_time_sql "$http_sql" >>"$MAESTRO_TEST_DIR/h"
done
m=$(median <"$MAESTRO_TEST_DIR/m")
c=$(median <"$MAESTRO_TEST_DIR/c")

# peak resident memory of a backend over one call, less what it held after
# a warm-up call of the same kind (one instance: the libraries loaded, the
# connection made)
peak() {
	bench_psql <<SQL
$2 \g /dev/null
SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmHWM:\s+(\d+)'))[1]::bigint AS before \gset
$1 \g /dev/null
SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmHWM:\s+(\d+)'))[1]::bigint - :before;
SQL
}
one=c0ffee00-0000-4000-8000-000000000001
m_peak=$(peak "$maestro_sql" "SELECT maestro_instance('$BENCH_WF', '$one')")

printf 'document:            %d instances, %d bytes\n' "$N" "$doc_bytes"
# the machine's load beside the figures: a loaded machine stretches every side
printf 'load average:        %s before the runs, %s after\n' "$load_before" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf 'maestro_instances:   %s ms (median of %d)\n' "$m" "$RUNS"
printf 'C fetch+parse+convert: %s ms\n' "$c"
if [ "$BENCH_HTTP" = 1 ]; then
	h=$(median <"$MAESTRO_TEST_DIR/h")
	h_peak=$(peak "$http_sql" "SELECT (h.content::jsonb) ->> 'id' FROM http_get('$url/$one') AS h")
	printf 'pgsql-http + jsonb_to_recordset: %s ms\n' "$h"
	printf 'backend peak growth: maestro %d kB, pgsql-http %d kB\n' "$m_peak" "$h_peak"
else
	printf 'backend peak growth: maestro %d kB\n' "$m_peak"
	echo "pgsql-http: not installed, not measured"
fi
echo "ratio maestro / C:                    $(ratio "$m" "$c")x"
[ "$BENCH_HTTP" = 1 ] && echo "ratio pgsql-http / maestro:           $(ratio "$h" "$m")x"
echo "ratio maestro peak growth / document: $(ratio "$((m_peak * 1024))" "$doc_bytes")x"
