# test/lib/cluster.sh: start and stop a scratch PostgreSQL 15 cluster and the
# Maestro simulator for tests, the demo and benchmarks. Source it, then call
# maestro_start_cluster / maestro_start_simulator; maestro_stop_all undoes both.
#
# Everything lives under $MAESTRO_TEST_DIR (default /tmp/maestro-test); the
# cluster listens on a Unix socket only, the simulator on 127.0.0.1.

MAESTRO_TOP=${MAESTRO_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
MAESTRO_TEST_DIR=${MAESTRO_TEST_DIR:-/tmp/maestro-test}
MAESTRO_PGPORT=${MAESTRO_PGPORT:-57432}
MAESTRO_SIM_PORT=${MAESTRO_SIM_PORT:-57480}
MAESTRO_PGBIN=${MAESTRO_PGBIN:-$(pg_config --bindir)}
# DocuSign's official OpenAPI file, vendored in the repository (see
# test/contract/spec/NOTICE); MAESTRO_SPEC may name another copy.
export MAESTRO_SPEC=${MAESTRO_SPEC:-$MAESTRO_TOP/test/contract/spec/maestro.rest.swagger-v1.0.0.json}

export PGHOST="$MAESTRO_TEST_DIR/socket"
export PGPORT="$MAESTRO_PGPORT"
export PGUSER=postgres
export PGDATABASE=postgres
export MAESTRO_SIM_URL="http://127.0.0.1:$MAESTRO_SIM_PORT"
# a second simulator speaks HTTPS with a certificate from the test CA
MAESTRO_TLS_PORT=${MAESTRO_TLS_PORT:-$((MAESTRO_SIM_PORT + 1))}
export MAESTRO_TLS_URL="https://127.0.0.1:$MAESTRO_TLS_PORT"
# test keys and certificates, made fresh (never committed)
export MAESTRO_CERTS="$MAESTRO_TEST_DIR/certs"
# the JWT grant's test identity, which the simulator accepts
export MAESTRO_INTEGRATION_KEY=11111111-2222-4333-8444-555555555555
export MAESTRO_JWT_USER=0ccdbb0b-a72e-452f-95f0-9f19654cb620

# Run a command as the postgres OS user when we are root (initdb refuses root).
maestro_as_postgres() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# maestro_start_cluster [extra postgres -c settings...]
maestro_start_cluster() {
	local data="$MAESTRO_TEST_DIR/pgdata"
	mkdir -p "$MAESTRO_TEST_DIR" "$PGHOST"
	if [ "$(id -u)" = 0 ]; then
		chown postgres:postgres "$MAESTRO_TEST_DIR" "$PGHOST"
	fi
	if [ ! -f "$data/PG_VERSION" ]; then
		maestro_as_postgres "$MAESTRO_PGBIN/initdb" -D "$data" -U postgres \
			--auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >"$MAESTRO_TEST_DIR/initdb.log" 2>&1 ||
			{ cat "$MAESTRO_TEST_DIR/initdb.log"; return 1; }
	fi
	local opts="-c listen_addresses='' -c unix_socket_directories='$PGHOST' -p $MAESTRO_PGPORT -c fsync=off"
	local extra
	for extra in "$@"; do
		opts="$opts -c $extra"
	done
	maestro_as_postgres "$MAESTRO_PGBIN/pg_ctl" -D "$data" -l "$MAESTRO_TEST_DIR/postgres.log" \
		-o "$opts" -w -t 60 start >/dev/null
}

maestro_stop_cluster() {
	local data="$MAESTRO_TEST_DIR/pgdata"
	if [ -f "$data/postmaster.pid" ]; then
		maestro_as_postgres "$MAESTRO_PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
	fi
}

# maestro_start_simulator [extra simulator arguments...]
# Starts the simulator (plain HTTP, with the OAuth token endpoint: tokens
# live 3 s) and a second one over HTTPS.
maestro_start_simulator() {
	mkdir -p "$MAESTRO_TEST_DIR"
	bash "$MAESTRO_TOP/test/simulator/make_test_certs.sh" "$MAESTRO_CERTS" || return 1
	# the server reads the CA bundle (ca_file); only public material is opened up
	chmod 755 "$MAESTRO_CERTS"
	chmod 644 "$MAESTRO_CERTS"/*.pem
	python3 "$MAESTRO_TOP/test/simulator/maestro_sim.py" --host 127.0.0.1 \
		--port "$MAESTRO_SIM_PORT" --quiet \
		${MAESTRO_SPEC:+--spec "$MAESTRO_SPEC"} \
		--oauth-public-key "$MAESTRO_CERTS/jwt_public.pem" \
		--integration-key "$MAESTRO_INTEGRATION_KEY" --oauth-user "$MAESTRO_JWT_USER" \
		--oauth-aud 127.0.0.1 --token-lifetime 3 \
		"$@" >"$MAESTRO_TEST_DIR/simulator.log" 2>&1 &
	echo $! >"$MAESTRO_TEST_DIR/simulator.pid"
	python3 "$MAESTRO_TOP/test/simulator/maestro_sim.py" --host 127.0.0.1 \
		--port "$MAESTRO_TLS_PORT" --quiet \
		--tls-cert "$MAESTRO_CERTS/server.pem" --tls-key "$MAESTRO_CERTS/server.key" \
		>"$MAESTRO_TEST_DIR/simulator-tls.log" 2>&1 &
	echo $! >"$MAESTRO_TEST_DIR/simulator-tls.pid"
	local i
	for i in $(seq 1 600); do   # up to 60 s: a loaded machine starts Python slowly
		if curl -fsS "$MAESTRO_SIM_URL/__sim/health" >/dev/null 2>&1 &&
			curl -fsS --cacert "$MAESTRO_CERTS/ca.pem" "$MAESTRO_TLS_URL/__sim/health" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.1
	done
	echo "simulator did not start; its logs:" >&2
	cat "$MAESTRO_TEST_DIR"/simulator*.log >&2
	return 1
}

maestro_stop_simulator() {
	local pidfile
	for pidfile in "$MAESTRO_TEST_DIR/simulator.pid" "$MAESTRO_TEST_DIR/simulator-tls.pid"; do
		if [ -f "$pidfile" ]; then
			kill "$(cat "$pidfile")" 2>/dev/null || true
			rm -f "$pidfile"
		fi
	done
}

maestro_stop_all() {
	maestro_stop_simulator
	maestro_stop_cluster
}
