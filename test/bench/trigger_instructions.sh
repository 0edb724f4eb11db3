#!/usr/bin/env bash
# test/bench/trigger_instructions.sh: instructions per maestro_trigger call
# beside the C client's per request, counted by valgrind's callgrind, which
# other work on the machine cannot distort (elapsed and CPU times on a
# shared machine can swing by half from run to run). The backend is a
# single-user postgres (--single) under callgrind running the statement of
# trigger.sh twice, with N1 and N2 calls (default 200 and 1,200); the
# difference divided by N2 - N1 leaves out start-up, library loading and
# the first connection. The C client (bench_client.c, sending the same
# request) is counted the same way. The nginx stand-in answers both. Needs
# valgrind; takes about 30 s (SHORT=1: 20 and 120 calls). Run after
# `make install`. It also splits a call's instructions into those inside
# maestro_trigger and those of the statement around it, and counts the
# same calls made from the select list (no function scan, so no tuplestore
# per row), the cheaper form for a statement that only needs the calls made.
set -u -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
N1=${N1:-200}
N2=${N2:-1200}
if [ "$SHORT" = 1 ]; then
	N1=20
	N2=120
fi
trap bench_stop EXIT
if ! command -v valgrind >/dev/null; then
	echo "valgrind is not installed: nothing measured" >&2
	exit 1
fi
bench_setup >/dev/null || exit 1
# single-user mode needs the cluster stopped; nginx keeps running
maestro_stop_cluster
out="$MAESTRO_TEST_DIR/callgrind"
mkdir -p "$out"
chmod 777 "$out"

# trigger.sh's statement, and the same calls from the select list
lateral_sql() {
	echo "SELECT count(t.instance_id) FROM generate_series(1, $1) AS g, LATERAL maestro_trigger('$BENCH_WF', jsonb_build_object('n', g), 'bench ' || g) AS t;"
}
select_list_sql() {
	echo "SELECT count(maestro_trigger('$BENCH_WF', jsonb_build_object('n', g), 'bench ' || g)) FROM generate_series(1, $1) AS g;"
}

# the callgrind total of one run of statement form $2 ($3 names its
# files); fails unless nginx logged n more POSTs
backend_ir() {
	local n=$1 form=$2 name=$3 before after
	before=$(bench_posts)
	# one line: single-user mode takes a newline as the end of a statement
	"$form" "$n" |
		maestro_as_postgres valgrind --tool=callgrind --callgrind-out-file="$out/$name.$n" \
			"$MAESTRO_PGBIN/postgres" --single -D "$MAESTRO_TEST_DIR/pgdata" -c fsync=off \
			"$BENCH_DB" >"$out/$name.$n.log" 2>&1 || return 1
	after=$(bench_posts)
	if [ $((after - before)) != "$n" ]; then
		echo "maestro_trigger: nginx logged $((after - before)) POSTs, not $n" >&2
		return 1
	fi
	awk '/^totals:/ { print $2 }' "$out/$name.$n"
}

client_ir() {
	local n=$1
	valgrind --tool=callgrind --callgrind-out-file="$out/client.$n" \
		"$BENCH_CLIENT" trigger "$BENCH_BASE/actions/trigger" "$n" >"$out/client.$n.log" 2>&1 || return 1
	awk '/^totals:/ { print $2 }' "$out/client.$n"
}

# the instructions of run file $1 inside maestro_trigger and what it calls:
# the rest of a row's are the statement's own (generate_series, the
# arguments' jsonb_build_object and ||, the function scan that keeps each
# row in a tuplestore, count), which the C client has no counterpart of
inside_ir() {
	function_ir "$1" maestro_trigger
}

# the instructions of run file $1 in function $2 and what it calls
function_ir() {
	callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null |
		awk -v f=":$2 [" 'index($0, f) && !/=>/ { gsub(",", "", $1); print $1; exit }'
}

b1=$(backend_ir "$N1" lateral_sql backend) && b2=$(backend_ir "$N2" lateral_sql backend) ||
	{ echo "the backend's runs failed" >&2; exit 1; }
s1=$(backend_ir "$N1" select_list_sql select) && s2=$(backend_ir "$N2" select_list_sql select) ||
	{ echo "the backend's select-list runs failed" >&2; exit 1; }
c1=$(client_ir "$N1") && c2=$(client_ir "$N2") || { echo "the C client's runs failed" >&2; exit 1; }
m=$(((b2 - b1) / (N2 - N1)))
c=$(((c2 - c1) / (N2 - N1)))
sl=$(((s2 - s1) / (N2 - N1)))
i1=$(inside_ir "$out/backend.$N1")
i2=$(inside_ir "$out/backend.$N2")
printf 'calls per run:           %d and %d (each counted at the server)\n' "$N1" "$N2"
printf 'maestro_trigger:         %d instructions a call\n' "$m"
printf 'C client, same request:  %d instructions a request\n' "$c"
if [ -n "$i1" ] && [ -n "$i2" ]; then
	i=$(((i2 - i1) / (N2 - N1)))
	printf '  inside the function:   %d (%sx the C client)\n' "$i" "$(ratio "$i" "$c")"
	printf '  the statement around:  %d a row\n' "$((m - i))"
	a1=$(function_ir "$out/backend.$N1" jsonb_build_object)
	a2=$(function_ir "$out/backend.$N2" jsonb_build_object)
	if [ -n "$a1" ] && [ -n "$a2" ]; then
		printf '    of which jsonb_build_object, the row'"'"'s inputs: %d\n' "$(((a2 - a1) / (N2 - N1)))"
	fi
else
	echo "  inside the function:   not measured (no callgrind_annotate, or no symbols)"
fi
printf 'the same, select list:   %d a call (%sx the C client)\n' "$sl" "$(ratio "$sl" "$c")"
echo "ratio maestro / C:            $(ratio "$m" "$c")x"
exit 0
