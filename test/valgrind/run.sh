#!/usr/bin/env bash
# test/valgrind/run.sh: the regression suite and a short memory workload with
# every PostgreSQL process running under valgrind's memcheck, with leak
# checking. Any memcheck error, or any definite leak, not in maestro.supp
# fails the run: each process exits with status 42 on one (the postmaster
# then reports it), and every report is counted from the logs.
#
# Uses the cluster of test/lib/cluster.sh (initialised, and stopped or
# running: it is restarted under valgrind, and restarted normally at the
# end if it was running) and a running simulator. Everything it writes goes
# under $MAESTRO_TEST_DIR/valgrind (the regression output too: the source
# tree's results/ is left alone).
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../lib/cluster.sh"

logdir="$MAESTRO_TEST_DIR/valgrind"
rm -rf "$logdir"
mkdir -p "$logdir/regress"
# valgrind runs as postgres, which may not be able to read the checkout
cp "$HERE/maestro.supp" "$logdir/maestro.supp"
chown -R postgres:postgres "$logdir" 2>/dev/null || true
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

was_running=
[ -f "$MAESTRO_TEST_DIR/pgdata/postmaster.pid" ] && was_running=1
maestro_stop_cluster
# --errors-for-leak-kinds=definite: blocks still reachable at exit are how
# PostgreSQL ends a process (it does not free its memory contexts); a block
# nothing points to any more is a leak
maestro_as_postgres valgrind --quiet --trace-children=yes \
	--leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
	--error-exitcode=42 --error-markers=VALGRINDERROR-BEGIN,VALGRINDERROR-END --num-callers=40 \
	--suppressions="$logdir/maestro.supp" --log-file="$logdir/%p.log" \
	"$MAESTRO_PGBIN/postgres" -D "$MAESTRO_TEST_DIR/pgdata" -c listen_addresses='' \
	-c unix_socket_directories="$PGHOST" -p "$PGPORT" -c fsync=off \
	-c maestro.database_name=contrib_regression \
	>"$logdir/postgres.out" 2>&1 &
started=
for _ in $(seq 600); do
	if psql -X -q -c 'SELECT 1' >/dev/null 2>&1; then
		started=1
		break
	fi
	sleep 1
done
if [ -z "$started" ]; then
	echo "not ok - postgres did not start under valgrind"
	sed 's/^/#   /' "$logdir"/[0-9]*.log "$logdir/postgres.out" | head -40
	echo "valgrind: 0 passed, 1 failed"
	exit 1
fi

(cd "$MAESTRO_TOP" && make -s installcheck EXTRA_REGRESS_OPTS="--outputdir=$logdir/regress" \
	>"$logdir/installcheck.out" 2>&1)
status=$?
check $status "regression suite under valgrind"
if [ $status -ne 0 ]; then
	sed 's/^/#   /' "$logdir/installcheck.out" | tail -20
	[ -f "$logdir/regress/regression.diffs" ] && sed 's/^/#   /' "$logdir/regress/regression.diffs" | head -60
fi
MEMORY_CALLS=3000 MEMORY_WARMUP=300 MEMORY_MAX_RSS_GROWTH_KB=100000 \
	bash "$MAESTRO_TOP/test/memory/run.sh" >"$logdir/memory.out" 2>&1
status=$?
check $status "memory workload under valgrind"
[ $status -ne 0 ] && sed 's/^/#   /' "$logdir/memory.out"

maestro_as_postgres "$MAESTRO_PGBIN/pg_ctl" -D "$MAESTRO_TEST_DIR/pgdata" -m fast -w -t 600 stop >/dev/null 2>&1
# the postmaster's own log file is written when it has exited: wait for it
for _ in $(seq 600); do
	pgrep -f "valgrind.*-D $MAESTRO_TEST_DIR/pgdata" >/dev/null || break
	sleep 1
done

processes=$(ls "$logdir"/[0-9]*.log 2>/dev/null | wc -l)
errors=$(cat "$logdir"/[0-9]*.log 2>/dev/null | grep -c 'VALGRINDERROR-BEGIN')
exits=$(grep -c 'exited with exit code 42' "$logdir/postgres.out")
echo "# $processes processes ran under memcheck; $errors error or leak reports; $exits processes exited with valgrind's error status"
check "$([ "$processes" -gt 10 ] && echo 0)" "the suites ran under memcheck ($processes processes > 10)"
check "$([ "$errors" = 0 ] && [ "$exits" = 0 ] && echo 0)" "no memcheck errors and no definite leaks"
if [ "$errors" != 0 ]; then
	grep -l 'VALGRINDERROR-BEGIN' "$logdir"/[0-9]*.log | head -3 |
		xargs -r -n1 sh -c 'sed -n "/VALGRINDERROR-BEGIN/,/VALGRINDERROR-END/p" "$0" | head -60 | sed "s/^/#   /"'
	echo "#   (logs in $logdir)"
fi

if [ -n "$was_running" ]; then
	maestro_start_cluster maestro.database_name=contrib_regression || check 1 "the cluster restarts after the valgrind run"
fi
echo "valgrind: $passed passed, $failed failed"
[ "$failed" = 0 ]
