#!/usr/bin/env bash
# test/security/run.sh: no secret in any log line, error or NOTICE.
#
# One cluster logs everything (log_min_messages = debug5, log_statement =
# all, log_error_verbosity = verbose). Phase 1 runs the whole regression
# suite against it; phase 2 restarts it with maestro preloaded and runs a
# workload through the worker: JWT-grant tokens minted and refreshed,
# triggers queued, sent, failed and retried. Then the server log, the
# regression results and the workload's output are searched for every
# secret: the static access tokens, each line of the private keys, every
# access token the simulator minted and every instance_url secret (mtsec)
# it handed out. Needs the simulators of test/lib/cluster.sh running.
# Everything it writes goes under $MAESTRO_TEST_DIR/security (the
# regression output too: the source tree's results/ is left alone).
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../lib/cluster.sh"
data="$MAESTRO_TEST_DIR/security-pgdata"
port=$((MAESTRO_PGPORT + 2))
log="$MAESTRO_TEST_DIR/security-postgres.log"
work="$MAESTRO_TEST_DIR/security"
passed=0
failed=0
check() {
	if [ "$1" = 0 ]; then
		echo "ok - $2"
		passed=$((passed + 1))
	else
		echo "not ok - $2"
		failed=$((failed + 1))
	fi
}

rm -rf "$data" "$work"
mkdir -p "$work/regress"
chown postgres "$work/regress" 2>/dev/null || true
maestro_as_postgres "$MAESTRO_PGBIN/initdb" -D "$data" -U postgres --auth=trust --no-sync \
	-E UTF8 --locale=C.UTF-8 >/dev/null
touch "$log"
chown postgres "$log" 2>/dev/null || true
logging="-c log_min_messages=debug5 -c log_statement=all -c log_error_verbosity=verbose -c log_min_error_statement=debug5"
start() {
	maestro_as_postgres "$MAESTRO_PGBIN/pg_ctl" -D "$data" -l "$log" -w -t 60 \
		-o "-c listen_addresses='' -c unix_socket_directories='$PGHOST' -p $port -c fsync=off $logging $*" \
		start >/dev/null
}
stop() {
	maestro_as_postgres "$MAESTRO_PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
}

# phase 1: the regression suite
start "-c maestro.database_name=contrib_regression"
(cd "$MAESTRO_TOP" && PGPORT=$port make -s installcheck EXTRA_REGRESS_OPTS="--outputdir=$work/regress" \
	>"$work/installcheck.out" 2>&1)
check $? "regression suite passes on a cluster that logs everything"
stop

# phase 2: the worker, the JWT grant, failures and retries
start "-c shared_preload_libraries=maestro -c maestro.database_name=postgres -c maestro.retry_delay=100ms"
PGPORT=$port psql -X -d postgres -v sim="$MAESTRO_SIM_URL" -v ik="$MAESTRO_INTEGRATION_KEY" \
	-v user_id="$MAESTRO_JWT_USER" -v key="$(cat "$MAESTRO_CERTS/jwt_private.pem")" \
	>"$work/workload.out" 2>&1 <<'SQL'
SET client_min_messages = debug5;
CREATE EXTENSION maestro;
CREATE SERVER sim FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'sim', auth_url :'sim', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE USER MAPPING FOR CURRENT_USER SERVER sim
  OPTIONS (integration_key :'ik', user_id :'user_id', private_key :'key');
SELECT count(*) FROM maestro_workflows();
SELECT instance_url IS NOT NULL FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001',
  '{"Name": "S", "Email": "s@example.com"}', 'security sync');
SELECT count(maestro_trigger_async('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001',
  jsonb_build_object('Name', 'S' || g, 'Email', 's' || g || '@example.com'), 'security ' || g))
FROM generate_series(1, 20) g;
-- one that fails for good, one refused by a 401 once its token is revoked
SELECT maestro_trigger_async('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{"Name": "missing email"}', 'security bad');
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/oauth/expire" >/dev/null
SELECT maestro_trigger_async('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{"Name": "T", "Email": "t@example.com"}', 'security after revoke');
-- wait (up to 180 s) until the worker has settled all 22
DO $$
BEGIN
  FOR i IN 1..1800 LOOP
    EXIT WHEN (SELECT count(*) FROM maestro_trigger_requests WHERE state IN ('done', 'failed')) = 22;
    PERFORM pg_sleep(0.1);
  END LOOP;
END
$$;
SELECT state, count(*), count(instance_url) FROM maestro_trigger_requests GROUP BY 1 ORDER BY 1;
SELECT id, state, last_error FROM maestro_trigger_requests WHERE state <> 'done';
SELECT id, state, attempts, http_status, instance_id IS NOT NULL AS has_instance
FROM maestro_trigger_requests WHERE instance_name LIKE 'security 1 %';
SQL
grep -q "^ done *| *21 *| *21" "$work/workload.out"
check $? "workload: 21 requests sent through the worker with minted tokens"
stop

# the secrets
{
	echo sim-token
	echo wrong-token
	echo contract-token
	echo pr0xy-s3cret-pw	# sql/proxy.sql's proxy_password
	grep -hv -- '-----' "$MAESTRO_CERTS"/jwt_private.pem "$MAESTRO_CERTS"/jwt_private_pkcs1.pem \
		"$MAESTRO_CERTS"/jwt_other_private.pem
	curl -s "$MAESTRO_SIM_URL/__sim/secrets" |
		python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)["secrets"]))'
} >"$work/secrets.txt"
minted=$(curl -s "$MAESTRO_SIM_URL/__sim/secrets" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["secrets"]))')
echo "# $(wc -l <"$work/secrets.txt") secrets to look for, $minted of them minted tokens and mtsec values"
[ "$minted" -gt 20 ]
check $? "the runs handed out minted tokens and instance_url secrets to look for"

grep -qE "LOG:  ([0-9A-Z]{5}: )?statement: SELECT count\(\*\) FROM maestro_workflows\(\)" "$log"
check $? "the server log holds the statements (log_statement = all)"
grep -qE "DEBUG:  [0-9]+: " "$log" || grep -q "DEBUG:" "$log"
check $? "the server log holds debug5 output"

python3 "$HERE/scan_secrets.py" --secrets "$work/secrets.txt" "$log"
check $? "no secret in the server log"
python3 "$HERE/scan_secrets.py" --secrets "$work/secrets.txt" --sql-dir "$MAESTRO_TOP/sql" \
	"$work"/regress/results/*.out "$work/workload.out"
check $? "no secret in any error, detail, hint or NOTICE the clients saw"

echo "security: $passed passed, $failed failed"
[ "$failed" = 0 ]
