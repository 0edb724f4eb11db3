#!/usr/bin/env bash
# test/bench/run_all.sh: every side-by-side benchmark, one after another,
# each ending with its ratios. By default in the short mode (SHORT=1: small
# N, one run), which proves that each script works, for CI: no time or
# ratio decides anything here, only whether a script ran to its end and
# printed its ratios. SHORT=0 runs the full benchmarks (several minutes).
# Needs `make install`, nginx, and node for the queue benchmark; pgsql-http
# is used where it is installed. The last line is "bench: N passed, N failed".
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export SHORT=${SHORT:-1}
passed=0
failed=0
for script in instances.sh trigger.sh trigger_instructions.sh enqueue.sh memory.sh trigger_queue.sh retention.sh; do
	echo "== $script"
	if [ "$script" = trigger_queue.sh ]; then
		# it keeps its cluster in MAESTRO_TEST_DIR: give it one of its own
		out=$(MAESTRO_TEST_DIR="${BENCH_DIR:-/tmp/maestro-bench-side}-queue" \
			MAESTRO_PGPORT="${BENCH_QUEUE_PGPORT:-57438}" bash "$HERE/$script" 2>&1)
	else
		out=$(bash "$HERE/$script" 2>&1)
	fi
	status=$?
	echo "$out"
	if [ $status = 0 ] && tail -n 1 <<<"$out" | grep -q '^ratio'; then
		echo "ok - $script"
		passed=$((passed + 1))
	else
		echo "not ok - $script (exit status $status)"
		failed=$((failed + 1))
	fi
done
echo "bench: $passed passed, $failed failed"
[ "$failed" = 0 ]
