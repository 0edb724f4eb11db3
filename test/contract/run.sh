#!/usr/bin/env bash
# Contract test of the maestro extension against DocuSign's official OpenAPI
# file, mocked by Stoplight Prism with request validation turned into errors,
# plus the replay of every example response of the spec. See README.md.
#
# Needs: a running PostgreSQL 15 cluster with the extension installed
# (PGHOST, PGPORT, PGUSER, PGDATABASE; PGUSER must be able to CREATE DATABASE
# and CREATE EXTENSION maestro), node/npm, python3, psql, curl.
# Optional: MAESTRO_SIM_URL (a running simulator started with --spec; if
# unset, this script starts test/simulator/maestro_sim.py itself),
# MAESTRO_SPEC (the OpenAPI file; default spec/maestro.rest.swagger-v1.0.0.json), CONTRACT_PRISM_PORT (default 57481),
# CONTRACT_DB (default maestro_contract).
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

# DocuSign's OpenAPI file, vendored in spec/ (see spec/NOTICE)
SPEC=${MAESTRO_SPEC:-$HERE/spec/maestro.rest.swagger-v1.0.0.json}
DB=${CONTRACT_DB:-maestro_contract}
PORT=${CONTRACT_PRISM_PORT:-57481}
SIM_URL=${MAESTRO_SIM_URL:-}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/maestro-contract.XXXXXX")
PRISM_PID=
SIM_PID=
PY_PID=
DB_CREATED=

bail() {    # a failure before the checks could run: still one summary line
    echo "not ok - $1"
    shift
    for line in "$@"; do echo "#   $line"; done
    echo "contract: 0 passed, 1 failed"
    exit 1
}

cleanup() {
    if [ -n "$PY_PID" ] && kill -0 "$PY_PID" 2>/dev/null; then
        kill "$PY_PID" 2>/dev/null
        wait "$PY_PID" 2>/dev/null
    fi
    if [ -n "$DB_CREATED" ]; then
        psql -X -q -v ON_ERROR_STOP=1 -d "${PGDATABASE:-postgres}" \
            -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    for pid in "$PY_PID" "$PRISM_PID" "$SIM_PID"; do
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    if [ "${CONTRACT_KEEP_LOGS:-}" ]; then
        echo "# logs kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() {
    python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

[ -n "$SPEC" ] && [ -f "$SPEC" ] || bail "the OpenAPI file $SPEC is missing" "set MAESTRO_SPEC or restore test/contract/spec/"
for tool in node npm python3 psql curl; do
    command -v "$tool" >/dev/null || bail "the tool $tool is not installed"
done

# --- Prism -----------------------------------------------------------------
PRISM="$HERE/node_modules/.bin/prism"
if [ ! -x "$PRISM" ]; then
    npm ci --prefix "$HERE" --no-audit --no-fund >"$WORK/npm.log" 2>&1 ||
        bail "npm ci --prefix test/contract failed" "$(tail -5 "$WORK/npm.log")"
fi
if ! port_free "$PORT"; then
    PORT=$(free_port)
fi
"$PRISM" mock --errors -h 127.0.0.1 -p "$PORT" "$SPEC" >"$WORK/prism.log" 2>&1 &
PRISM_PID=$!
PRISM_URL="http://127.0.0.1:$PORT"
up=
for _ in $(seq 300); do
    if curl -s -o /dev/null "$PRISM_URL/"; then up=1; break; fi
    kill -0 "$PRISM_PID" 2>/dev/null || break
    sleep 0.2
done
[ -n "$up" ] || bail "prism starts on $PRISM_URL" "$(tail -20 "$WORK/prism.log")"
echo "# prism $("$PRISM" --version 2>/dev/null) mocking $SPEC on $PRISM_URL"

# --- simulator (only when CI did not start one) -------------------------------
if [ -z "$SIM_URL" ]; then
    SIM_PORT=$(free_port)
    python3 "$ROOT/test/simulator/maestro_sim.py" --port "$SIM_PORT" --quiet --spec "$SPEC" \
        >"$WORK/sim.log" 2>&1 &
    SIM_PID=$!
    SIM_URL="http://127.0.0.1:$SIM_PORT"
    up=
    for _ in $(seq 600); do
        if curl -s -o /dev/null "$SIM_URL/__sim/examples"; then up=1; break; fi
        kill -0 "$SIM_PID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$up" ] || bail "the simulator starts on $SIM_URL" "$(tail -20 "$WORK/sim.log")"
    echo "# started the simulator on $SIM_URL"
fi

# --- database ------------------------------------------------------------------
out=$(psql -X -q -v ON_ERROR_STOP=1 -d "${PGDATABASE:-postgres}" \
        -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" -c "CREATE DATABASE \"$DB\"" 2>&1) ||
    bail "create the scratch database $DB" "$out"
DB_CREATED=1

# in the background, so that a signal reaches the trap at once
python3 "$HERE/contract.py" --spec "$SPEC" --prism-url "$PRISM_URL" --sim-url "$SIM_URL" --db "$DB" &
PY_PID=$!
wait "$PY_PID"
rc=$?
PY_PID=
if [ $rc -ne 0 ] && [ -n "${CONTRACT_VERBOSE:-}" ]; then
    echo "# ---- prism log (tail) ----"
    tail -80 "$WORK/prism.log" | sed 's/^/# /'
fi
exit $rc
