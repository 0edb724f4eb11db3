#!/usr/bin/env bash
# test/valgrind/run.sh: the regression suite and a short memory workload with
# every backend running under valgrind's memcheck. Any memcheck error not in
# maestro.supp fails the run.
#
# Uses the cluster of test/lib/cluster.sh (initialised, and stopped or
# running: it is restarted under valgrind and stopped again at the end) and
# a running simulator.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../lib/cluster.sh"

logdir="$MAESTRO_TEST_DIR/valgrind"
rm -rf "$logdir"
mkdir -p "$logdir"
# valgrind runs as postgres, which may not be able to read the checkout
cp "$HERE/maestro.supp" "$logdir/maestro.supp"
chown -R postgres:postgres "$logdir" 2>/dev/null || true
passed=0
failed=0

maestro_stop_cluster
maestro_as_postgres valgrind --quiet --trace-children=yes --leak-check=no \
	--suppressions="$logdir/maestro.supp" --log-file="$logdir/%p.log" \
	"$MAESTRO_PGBIN/postgres" -D "$MAESTRO_TEST_DIR/pgdata" -c listen_addresses='' \
	-c unix_socket_directories="$PGHOST" -p "$PGPORT" -c fsync=off \
	-c maestro.database_name=contrib_regression \
	>"$logdir/postgres.out" 2>&1 &
started=
for _ in $(seq 120); do
	if psql -X -q -c 'SELECT 1' >/dev/null 2>&1; then
		started=1
		break
	fi
	sleep 1
done
if [ -z "$started" ]; then
	echo "not ok - postgres did not start under valgrind"
	sed 's/^/#   /' "$logdir"/*.log "$logdir/postgres.out" | head -20
	echo "valgrind: 0 passed, 1 failed"
	exit 1
fi

if (cd "$MAESTRO_TOP" && make -s installcheck >"$logdir/installcheck.out" 2>&1); then
	echo "ok - regression suite under valgrind"
	passed=$((passed + 1))
else
	echo "not ok - regression suite under valgrind"
	sed 's/^/#   /' "$logdir/installcheck.out" | tail -20
	failed=$((failed + 1))
fi
if MEMORY_CALLS=3000 MEMORY_WARMUP=300 MEMORY_MAX_RSS_GROWTH_KB=100000 \
	bash "$MAESTRO_TOP/test/memory/run.sh" >"$logdir/memory.out" 2>&1; then
	echo "ok - memory workload under valgrind"
	passed=$((passed + 1))
else
	echo "not ok - memory workload under valgrind"
	sed 's/^/#   /' "$logdir/memory.out"
	failed=$((failed + 1))
fi

maestro_as_postgres "$MAESTRO_PGBIN/pg_ctl" -D "$MAESTRO_TEST_DIR/pgdata" -m fast -w -t 120 stop >/dev/null 2>&1 || true
sleep 1

# an error report starts with "==pid== <kind>" right after a blank "==pid=="
errors=$(cat "$logdir"/[0-9]*.log 2>/dev/null |
	grep -cE '^==[0-9]+== (Invalid|Conditional jump|Syscall param|Use of uninitialised|Mismatched|Source and destination|Argument .* of function)')
processes=$(ls "$logdir"/[0-9]*.log 2>/dev/null | wc -l)
echo "# $processes processes ran under memcheck; $errors errors reported"
if [ "$errors" = 0 ] && [ "$processes" -gt 10 ]; then
	echo "ok - no memcheck errors"
	passed=$((passed + 1))
else
	echo "not ok - memcheck errors (logs in $logdir)"
	grep -lE '^==[0-9]+== (Invalid|Conditional|Syscall|Use of|Mismatched|Source and)' "$logdir"/[0-9]*.log |
		head -3 | xargs -r -n1 sh -c 'sed -n "1,40p" "$0" | sed "s/^/#   /"'
	failed=$((failed + 1))
fi
echo "valgrind: $passed passed, $failed failed"
[ "$failed" = 0 ]
