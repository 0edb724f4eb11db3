# test/bench/lib.sh: what the side-by-side benchmarks share. Source it.
#
#	bench_setup			starts a private cluster (test/lib/cluster.sh) and an
#						nginx stand-in for the API on BENCH_PORT, builds the C
#						client, creates database maestro_bench with maestro, a
#						server "bench" pointing at nginx, and pgsql-http when it
#						is installed (BENCH_HTTP=1, else 0 and a line saying so)
#	bench_make_instances N	writes the list response of N instances that
#						nginx serves at .../workflows/$BENCH_WF/instances
#	bench_posts			POSTs nginx has logged so far
#	bench_sim_setup N	instead of bench_setup, for the scripts measured against
#						the simulator (sync.sh, account_instances.sh): a private
#						cluster and simulator (stopped at exit), N Completed
#						instances in workflow $BENCH_SIM_WF, maestro in database
#						postgres with a server "sim", and peak_kb() (the
#						backend's peak RSS)
#	bench_sim_calls		GETs the simulator has answered so far
#	median				median of the numbers on stdin
#	ratio A B			A / B to two places
#
# nginx serves canned JSON: a trigger answer for every POST .../actions/trigger
# and the generated document for GET .../instances, far faster than any
# client here, so what is measured is the client. Knobs: SHORT=1 (small N,
# one run: proves the script works, measures nothing), RUNS (default 5).
# Everything lives in $BENCH_DIR (default /tmp/maestro-bench-side); the
# cluster listens on BENCH_PGPORT (57437), nginx on BENCH_PORT (57497).

BENCH_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# a directory and port of their own, never a test run's (the directory is
# deleted first): BENCH_DIR and BENCH_PGPORT, not MAESTRO_TEST_DIR/PGPORT
export MAESTRO_TEST_DIR=${BENCH_DIR:-/tmp/maestro-bench-side}
export MAESTRO_PGPORT=${BENCH_PGPORT:-57437}
source "$BENCH_HERE/../lib/cluster.sh"
BENCH_PORT=${BENCH_PORT:-57497}
BENCH_URL="http://127.0.0.1:$BENCH_PORT"
BENCH_ACCOUNT=7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10
BENCH_WF=a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0002
BENCH_BASE="$BENCH_URL/v1/accounts/$BENCH_ACCOUNT/workflows/$BENCH_WF"
BENCH_DB=maestro_bench
BENCH_CLIENT="$MAESTRO_TEST_DIR/bench_client"
SHORT=${SHORT:-0}
if [ "$SHORT" = 1 ]; then
	RUNS=1
else
	RUNS=${RUNS:-5}
fi
export PGDATABASE=$BENCH_DB

bench_psql() {
	psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$BENCH_DB" "$@"
}

bench_stop() {
	if [ -f "$MAESTRO_TEST_DIR/nginx/nginx.pid" ]; then
		kill "$(cat "$MAESTRO_TEST_DIR/nginx/nginx.pid")" 2>/dev/null
		rm -f "$MAESTRO_TEST_DIR/nginx/nginx.pid"
	fi
	maestro_stop_cluster
}

bench_start_nginx() {
	local dir="$MAESTRO_TEST_DIR/nginx"
	local nginx=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
	local user=""
	mkdir -p "$dir/www" "$dir/tmp"
	chmod 755 "$MAESTRO_TEST_DIR" "$dir" "$dir/www"
	[ "$(id -u)" = 0 ] && user="user root root;"
	cat >"$dir/nginx.conf" <<EOF
$user
daemon on;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 1024; }
http {
	access_log $dir/access.log;
	client_body_temp_path $dir/tmp; proxy_temp_path $dir/tmp; fastcgi_temp_path $dir/tmp;
	uwsgi_temp_path $dir/tmp; scgi_temp_path $dir/tmp;
	keepalive_requests 1000000;
	keepalive_timeout 120s;
	server {
		listen 127.0.0.1:$BENCH_PORT;
		root $dir/www;
		default_type application/json;
		location ~ /instances\$ { rewrite ^ /instances.json break; }
		location ~ /instances/[^/]+\$ { rewrite ^ /instance.json break; }
		location ~ /actions/trigger\$ {
			return 201 '{"instance_id":"c0ffee00-0000-4000-8000-000000000001","instance_url":"http://127.0.0.1/execution/c0ffee00?mtid=1&mtsec=x"}';
		}
	}
}
EOF
	"$nginx" -c "$dir/nginx.conf" -p "$dir" -e "$dir/error.log" || return 1
	local i
	for i in $(seq 100); do
		curl -s -o /dev/null "$BENCH_URL/" && return 0
		sleep 0.1
	done
	echo "nginx did not start" >&2
	return 1
}

bench_posts() {
	cat "$MAESTRO_TEST_DIR/nginx/access.log" 2>/dev/null | grep -c '"POST '
	return 0
}

# N instances shaped as the API sends them (about 900 bytes each)
bench_make_instances() {
	python3 - "$1" "$MAESTRO_TEST_DIR/nginx/www/instances.json" "$BENCH_WF" "$BENCH_ACCOUNT" <<'PY'
import json, sys, uuid, random
n, path, wf, account = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
rnd = random.Random(42)
out = []
for k in range(n):
    done = k % 3 == 0
    out.append({
        "id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
        "name": f"Purchase order {k + 1} for vendor {rnd.randint(1, 999)}",
        "workflow_status": "Completed" if done else "In Progress",
        "template_id": wf, "account_id": account,
        "started_at": f"2025-06-{1 + k % 28:02d}T{k % 24:02d}:{k % 60:02d}:{(k * 7) % 60:02d}.{k % 1000:03d}Z",
        "started_by": "0ccdbb0b-a72e-452f-95f0-9f19654cb620",
        "started_by_name": "Ada Lovelace",
        "started_by_role": "Preparer",
        "ended_at": f"2025-07-{1 + k % 28:02d}T10:30:00.1234567Z" if done else None,
        "expires_at": f"2025-08-{1 + k % 28:02d}T09:00:00.000Z",
        "last_modified_at": f"2025-07-{1 + k % 28:02d}T10:30:00.1234567Z",
        "canceled_at": None, "canceled_by": None,
        "trigger_inputs": {"Vendor": f"Vendor {k}", "Amount": rnd.randint(1, 100000),
                           "Approver": "ops@example.com",
                           "Lines": [{"sku": f"SKU-{k}-{j}", "qty": j + 1, "price": 9.99 * (j + 1)}
                                     for j in range(2)]},
        "total_steps": 5, "last_completed_step": 5 if done else k % 5,
        "last_completed_step_name": "Final step" if done else "Manager approval",
        "tags": ["purchasing", f"region-{k % 7}", "bench"],
        "metadata": {"workflow_created_by": "Bob Smith", "workflow_version": 3,
                     "workflow_metadata_id": "66df63a436871a9d22c63b03"},
    })
with open(path, "w") as f:
    json.dump({"data": out}, f, separators=(",", ":"))
with open(path.replace("instances.json", "instance.json"), "w") as f:
    json.dump(out[0], f, separators=(",", ":"))
PY
	chmod 644 "$MAESTRO_TEST_DIR/nginx/www/"*.json
}

bench_setup() {
	rm -rf "$MAESTRO_TEST_DIR"
	mkdir -p "$MAESTRO_TEST_DIR"
	bash "$BENCH_HERE/build_client.sh" "$BENCH_CLIENT" || return 1
	maestro_start_cluster "$@" || return 1
	bench_start_nginx || return 1
	PGOPTIONS="-c client_min_messages=warning" psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $BENCH_DB" \
		-c "CREATE DATABASE $BENCH_DB" || return 1
	bench_psql -v url="$BENCH_URL" -v account="$BENCH_ACCOUNT" <<'SQL' || return 1
CREATE EXTENSION maestro;
CREATE SERVER bench FOREIGN DATA WRAPPER maestro OPTIONS (base_url :'url', account_id :'account');
CREATE USER MAPPING FOR CURRENT_USER SERVER bench OPTIONS (access_token 'bench-token');
SQL
	if bench_psql -c "CREATE EXTENSION http" 2>/dev/null; then
		BENCH_HTTP=1
	else
		BENCH_HTTP=0
		echo "pgsql-http is not installed here (CREATE EXTENSION http failed): its column is skipped"
	fi
}

median() {
	sort -n | awk '{v[NR] = $1} END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }'
}

# the elapsed ms psql's \timing reports for the one statement in $1
bench_time_sql() {
	bench_psql -c '\timing on' -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1
}

BENCH_SIM_WF=a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0003

bench_sim_setup() {
	rm -rf "$MAESTRO_TEST_DIR"
	trap maestro_stop_all EXIT
	maestro_start_cluster || return 1
	maestro_start_simulator || return 1
	curl -s -X POST -d "{\"workflow_id\": \"$BENCH_SIM_WF\", \"count\": $1, \"status\": \"Completed\"}" \
		"$MAESTRO_SIM_URL/__sim/instances" >/dev/null || return 1
	psql -X -q -d postgres -v url="$MAESTRO_SIM_URL" -v account="$BENCH_ACCOUNT" <<'SQL'
CREATE EXTENSION maestro;
CREATE SERVER sim FOREIGN DATA WRAPPER maestro OPTIONS (base_url :'url', account_id :'account');
CREATE USER MAPPING FOR CURRENT_USER SERVER sim OPTIONS (access_token 'sim-token');
-- peak resident memory; it includes the shared buffers the backend touched
CREATE FUNCTION peak_kb() RETURNS bigint LANGUAGE sql AS $$
  SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmHWM:\s+(\d+)'))[1]::bigint $$;
SQL
}

bench_sim_calls() {
	curl -s "$MAESTRO_SIM_URL/__sim/count?method=GET"
}
