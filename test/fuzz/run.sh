#!/usr/bin/env bash
# test/fuzz/run.sh: build the libFuzzer target over src/parse.c and run it for
# FUZZ_SECONDS (default 60, the CI pass; "make fuzz-run" runs 300) on a copy
# of test/fuzz/corpus. Ends with "fuzz: N passed, N failed": 1 passed when
# libFuzzer exits 0, executed at least one input (its final stats say how
# many) and left no crash, leak, timeout or OOM artifact; else 1
# failed, with the input in hex and the sanitizer's report. Everything it
# writes goes to a temporary directory, kept (and named) only on failure.
# FUZZ_FLAGS adds libFuzzer options, e.g. FUZZ_FLAGS='-jobs=4 -workers=4'.
set -u -o pipefail
cd "$(dirname "$0")/../.."

seconds=${FUZZ_SECONDS:-60}
work=$(mktemp -d "${TMPDIR:-/tmp}/maestro-fuzz.XXXXXX")

fail() {
	echo "not ok - $1"
	echo "fuzz: 0 passed, 1 failed"
	exit 1
}

if ! make -s fuzz >"$work/build.log" 2>&1; then
	cat "$work/build.log"
	fail "build test/fuzz/fuzz_parsers (needs clang and libclang-rt-14-dev)"
fi

mkdir "$work/corpus" "$work/artifacts"
cp test/fuzz/corpus/* "$work/corpus/"

# -timeout: one input taking 25 s is a hang; -rss_limit_mb: libFuzzer's default
# shellcheck disable=SC2086
test/fuzz/fuzz_parsers -max_total_time="$seconds" -max_len=65536 -timeout=25 \
	-dict=test/fuzz/maestro.dict -artifact_prefix="$work/artifacts/" \
	-print_final_stats=1 ${FUZZ_FLAGS:-} "$work/corpus" >"$work/fuzz.log" 2>&1
status=$?

# the run's figures: executions, speed, coverage
grep -E '^#[0-9]+[[:space:]]+DONE' "$work/fuzz.log" | tail -n 1
grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$work/fuzz.log"
# a run that executed nothing proves nothing: require units from -print_final_stats
units=$(sed -nE 's/^stat::number_of_executed_units:[[:space:]]*([0-9]+).*/\1/p' "$work/fuzz.log" | tail -n 1)

shopt -s nullglob
artifacts=("$work"/artifacts/*)
if [ "$status" -eq 0 ] && [ ${#artifacts[@]} -eq 0 ] && [ "${units:-0}" -eq 0 ]; then
	tail -n 20 "$work/fuzz.log"
	echo "(kept in $work)"
	fail "fuzz_parsers executed no input (stat::number_of_executed_units: ${units:-missing})"
fi
if [ "$status" -eq 0 ] && [ ${#artifacts[@]} -eq 0 ]; then
	rm -rf "$work"
	echo "ok - fuzz_parsers ran ${seconds}s, $units inputs: no crash, leak or undefined behaviour"
	echo "fuzz: 1 passed, 0 failed"
	exit 0
fi

echo "libFuzzer exited with status $status; its report:"
# the sanitizer's report, or the last lines when there is none
if grep -qE '^==[0-9]+==|check failed|runtime error|^SUMMARY' "$work/fuzz.log"; then
	sed -n -E '/^==[0-9]+==|check failed|runtime error/,$p' "$work/fuzz.log" | head -n 150
else
	tail -n 40 "$work/fuzz.log"
fi
for a in "${artifacts[@]}"; do
	echo "input $a ($(wc -c <"$a") bytes), in hex:"
	od -A d -t x1z -v "$a" | head -n 64
done
echo "reproduce: test/fuzz/fuzz_parsers ${artifacts[0]:-<input>}"
echo "(kept in $work)"
fail "fuzz_parsers found a crash, leak or undefined behaviour"
