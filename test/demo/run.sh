#!/usr/bin/env bash
# test/demo/run.sh: the demo in one command, on a fresh Debian 12 machine as
# root (or `make demo`). Installs what is missing (.ci/install-deps), builds
# and installs the extension (make && make install, for the PostgreSQL that
# $PG_CONFIG, or pg_config on the PATH, names), starts a scratch PostgreSQL
# cluster and the Maestro simulator, and runs an example session that lists
# workflows, triggers one, lists instances, cancels, pauses and resumes.
# MAESTRO_DEMO_KEEP=1 leaves both running to explore.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
export MAESTRO_TEST_DIR=${MAESTRO_TEST_DIR:-/tmp/maestro-demo}
export MAESTRO_PGPORT=${MAESTRO_PGPORT:-57433}
export MAESTRO_SIM_PORT=${MAESTRO_SIM_PORT:-57490}

# what maestro needs (quiet when it is all there); as another user than
# root only a check, since installing packages needs root
if [ "$(id -u)" = 0 ]; then
	bash "$TOP/.ci/install-deps" || exit 1
elif ! command -v pg_config >/dev/null 2>&1 && [ -z "${PG_CONFIG:-}" ]; then
	echo "demo: PostgreSQL 15 is not installed; run as root, or run 'bash .ci/install-deps' as root first" >&2
	exit 1
fi
export PG_CONFIG=${PG_CONFIG:-pg_config}
export MAESTRO_PGBIN=${MAESTRO_PGBIN:-$("$PG_CONFIG" --bindir)}

# the extension itself, from this checkout
build_log="$MAESTRO_TEST_DIR.build.log"
echo "demo: building and installing maestro into $("$PG_CONFIG" --pkglibdir)"
if ! { make -s -C "$TOP" PG_CONFIG="$PG_CONFIG" && make -s -C "$TOP" PG_CONFIG="$PG_CONFIG" install; } >"$build_log" 2>&1; then
	cat "$build_log" >&2
	echo "demo: the build failed (above)" >&2
	exit 1
fi
rm -f "$build_log"

source "$HERE/../lib/cluster.sh"

rm -rf "$MAESTRO_TEST_DIR"
if [ -z "${MAESTRO_DEMO_KEEP:-}" ]; then
	trap maestro_stop_all EXIT
fi
maestro_start_cluster || exit 1
maestro_start_simulator || exit 1
psql -X -q -c "CREATE DATABASE maestro_demo" >/dev/null
psql -X -q -d maestro_demo -v sim_url="$MAESTRO_SIM_URL" -f "$HERE/session.sql"

if [ -n "${MAESTRO_DEMO_KEEP:-}" ]; then
	cat <<EOT

The cluster and the simulator are still running. Connect with:
  psql -h $PGHOST -p $PGPORT -U postgres maestro_demo
Stop both with:
  MAESTRO_TEST_DIR=$MAESTRO_TEST_DIR MAESTRO_PGPORT=$MAESTRO_PGPORT MAESTRO_SIM_PORT=$MAESTRO_SIM_PORT \\
    bash -c 'source $HERE/../lib/cluster.sh; maestro_stop_all'
EOT
fi
