#!/usr/bin/env bash
# test/demo/run.sh: a scratch PostgreSQL cluster, the Maestro simulator, and
# an example session that lists workflows, triggers one, lists instances,
# cancels, pauses and resumes. Run as root (or as a user who may run initdb)
# after `make install`. MAESTRO_DEMO_KEEP=1 leaves both running to explore.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MAESTRO_TEST_DIR=${MAESTRO_TEST_DIR:-/tmp/maestro-demo}
export MAESTRO_PGPORT=${MAESTRO_PGPORT:-57433}
export MAESTRO_SIM_PORT=${MAESTRO_SIM_PORT:-57490}
source "$HERE/../lib/cluster.sh"

if [ ! -f "$(pg_config --sharedir)/extension/maestro.control" ]; then
	echo "maestro is not installed: run 'make && make install' first" >&2
	exit 1
fi
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
