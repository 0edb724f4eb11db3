#!/usr/bin/env bash
# test/bench/account_instances.sh: what a paged walk of the account-wide
# instance list costs, against one workflow's unpaged list.
#
# N instances (default 50,000) in one workflow of the simulator. In a fresh
# backend each: maestro_account_instances() in pages of P (default 500),
# read in FROM and in the select list, and maestro_instances() of that
# workflow in one answer; the time, the backend's peak RSS, and the API
# calls each made (counted by the simulator). Starts its own cluster and
# simulator (in /tmp/maestro-bench-account, ports 57437 and 57497; BENCH_DIR,
# BENCH_PGPORT and MAESTRO_SIM_PORT override them) after
# `make install`.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export BENCH_DIR=${BENCH_DIR:-/tmp/maestro-bench-account} BENCH_PGPORT=${BENCH_PGPORT:-57437}
export MAESTRO_SIM_PORT=${MAESTRO_SIM_PORT:-57497}
source "$HERE/lib.sh"
N=${N:-50000}
P=${P:-500}

bench_sim_setup "$N" || exit 1
calls() { bench_sim_calls; }

# run $2 (a query counting rows) in a fresh backend: "rows, ms, peak kB, baseline kB"
measure() {
	psql -X -q -A -t -d postgres <<SQL
SET maestro.page_size = $P;
SET maestro.max_response_size = '500MB';
SELECT peak_kb() AS before_kb, clock_timestamp() AS t0 \\gset
SELECT ($1) AS n \\gset
SELECT format('%s rows in %s ms; backend peak RSS %s kB (%s kB before)', :n,
              round(extract(epoch FROM clock_timestamp() - :'t0') * 1000), peak_kb(), :before_kb);
SQL
}
for what in "account list in FROM, pages of $P|SELECT count(*) FROM maestro_account_instances()" \
	"account list in the select list, pages of $P|SELECT count(*) FROM (SELECT maestro_account_instances() i) s" \
	"one workflow's list, one answer|SELECT count(*) FROM maestro_instances('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0003')"; do
	before=$(calls)
	line=$(measure "${what#*|}")
	printf '%-45s %s, %s API calls\n' "${what%%|*}:" "$line" $(( $(calls) - before ))
done
