#!/bin/bash
# test/tap/run.sh: the TAP suite of maestro's trigger-queue worker.
#
# Each test file under t/ starts its own PostgreSQL 15 cluster (maestro in
# shared_preload_libraries) and its own Maestro simulator, and drives the
# worker end to end: commit and rollback, wake latency, concurrency and rate
# limit, retries, kill -9 of the worker and of the postmaster, DROP
# EXTENSION / DROP DATABASE while it runs, and row-level security.
#
# initdb refuses to run as root, so as root the suite runs as the postgres
# OS user from a copy in a temporary directory that user can read. Install
# the extension first (make && make install).
#
#   bash test/tap/run.sh [t/005_kill_worker.pl ...]
#
# MAESTRO_TAP_KEEP=1 keeps the temporary directory (clusters' logs under
# tmp_check/log) even when everything passed; it is always kept on failure.
# The last line is "tap: N passed, N failed" (individual TAP assertions; a
# test script that dies or misses its plan counts as one failure more).
set -u

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PGBIN=${MAESTRO_PGBIN:-/usr/lib/postgresql/15/bin}
PGXS_DIR=$(cd "$(dirname "$("$PGBIN/pg_config" --pgxs)")/../.." && pwd)
PERL_LIB="$PGXS_DIR/src/test/perl"
PG_REGRESS="$PGXS_DIR/src/test/regress/pg_regress"

for f in "$PERL_LIB/PostgreSQL/Test/Cluster.pm" "$PG_REGRESS" "$PGBIN/initdb"; do
	if [ ! -e "$f" ]; then
		echo "tap: $f is missing (install postgresql-server-dev-15 / postgresql-15)" >&2
		echo "tap: 0 passed, 1 failed"
		exit 1
	fi
done
if [ ! -f "$("$PGBIN/pg_config" --pkglibdir)/maestro.so" ]; then
	echo "tap: maestro.so is not installed; run make install first" >&2
	echo "tap: 0 passed, 1 failed"
	exit 1
fi

as_postgres() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

WORK=$(mktemp -d /tmp/maestro-tap.XXXXXX)
cp -r "$TOP/test/tap/t" "$TOP/test/tap/lib" "$WORK/"
cp "$TOP/test/simulator/maestro_sim.py" "$TOP/test/simulator/make_test_certs.sh" \
	"$TOP/test/bench/trigger_server.js" "$WORK/"
# t/020_upgrade.pl compares the release metadata with the control file, and
# looks for the version check in every SQL-callable C function
cp -r "$TOP/META.json" "$TOP/maestro.control" "$TOP/src" "$WORK/"
if [ "$(id -u)" = 0 ]; then
	chown -R postgres:postgres "$WORK"
fi
chmod 755 "$WORK"

# a python3 (3.11 or later) the postgres user can run: root's may be a
# pyenv shim under /root
PYTHON=${MAESTRO_PYTHON:-}
if [ -z "$PYTHON" ]; then
	for p in python3 /usr/bin/python3; do
		if as_postgres env PATH="$PATH" "$p" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
			PYTHON=$p
			break
		fi
	done
fi
if [ -z "$PYTHON" ]; then
	echo "tap: no python3 >= 3.11 that the postgres user can run" >&2
	echo "tap: 0 passed, 1 failed"
	exit 1
fi

start=$(date +%s)
cd "$WORK" || exit 1
if [ $# -gt 0 ]; then
	TESTS=("$@")
else
	TESTS=(t/*.pl)
fi
as_postgres env PATH="$PGBIN:$PATH" PG_REGRESS="$PG_REGRESS" MAESTRO_TOP="$TOP" \
	MAESTRO_TAP_DIR="$WORK" MAESTRO_PYTHON="$PYTHON" PERL5LIB="$PERL_LIB:$WORK/lib" \
	prove -v "${TESTS[@]}" >"$WORK/prove.out" 2>&1
rc=$?
cat "$WORK/prove.out"
end=$(date +%s)

passed=$(grep -cE '^ok [0-9]+' "$WORK/prove.out")
failed=$(grep -E '^not ok [0-9]+' "$WORK/prove.out" | grep -vc '# TODO')
# scripts that died before done_testing or ran fewer tests than planned
broken=$(grep -cE '^[[:space:]]+Parse errors:' "$WORK/prove.out")
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ] && [ "$broken" -eq 0 ]; then
	broken=1
fi
failed=$((failed + broken))

echo "tap: $((end - start)) s; logs in $WORK/tmp_check/log"
if [ "$rc" -eq 0 ] && [ "$failed" -eq 0 ] && [ "${MAESTRO_TAP_KEEP:-0}" != 1 ]; then
	rm -rf "$WORK"
	echo "tap: (removed $WORK)"
fi
echo "tap: $passed passed, $failed failed"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ]
