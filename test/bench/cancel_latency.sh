#!/usr/bin/env bash
# test/bench/cancel_latency.sh: how long after statement_timeout fires does a
# maestro call in flight stop? Runs N calls against a simulator that answers
# after 5 s, with statement_timeout = 200ms, and reports the overshoot.
# Needs a running cluster with maestro installed and the simulator
# (source test/lib/cluster.sh; maestro_start_cluster; maestro_start_simulator).
set -u -o pipefail
N=${N:-20}
DB=maestro_bench
PGOPTIONS="-c client_min_messages=warning" psql -X -q -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
psql -X -q -A -t -d $DB -v sim_url="$MAESTRO_SIM_URL/_fault/latency_ms=5000" -v n="$N" <<'SQL'
CREATE EXTENSION maestro;
CREATE SERVER slow FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'sim_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE USER MAPPING FOR CURRENT_USER SERVER slow OPTIONS (access_token 'sim-token');
SQL
for i in $(seq "$N"); do
	psql -X -q -A -t -d $DB -c "SET statement_timeout = '200ms'" \
		-c "SELECT extract(epoch FROM clock_timestamp()) * 1000" \
		-c "SELECT count(*) FROM maestro_workflows()" \
		-c "SELECT extract(epoch FROM clock_timestamp()) * 1000" 2>/dev/null |
		awk 'NR==1 {a=$1} NR==2 {b=$1} END {printf "%.1f\n", b - a - 200}'
done | sort -n | awk '{v[NR]=$1; s+=$1} END {
	printf "statement_timeout 200ms vs a 5 s response, %d calls: overshoot mean %.1f ms, median %.1f ms, max %.1f ms\n",
		NR, s/NR, v[int((NR+1)/2)], v[NR] }'
PGOPTIONS="-c client_min_messages=warning" psql -X -q -c "DROP DATABASE IF EXISTS $DB"
