# Lowering maestro.max_concurrency on reload while every slot is in flight
# (defect 3): no error, no restart, nothing lost or doubled. And pacing
# claims only when there is room to send (defect 2): few transactions per
# second while a backlog is sent at maestro.rate_limit.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

start_simulator();
my $node = maestro_node('reload', conf => "maestro.rate_limit = 0\nmaestro.max_concurrency = 64\n");
$node->safe_psql('postgres',
	"ALTER SERVER sim OPTIONS (SET base_url '@{[ sim_url() ]}/_fault/key=slow;latency_ms=3000;method=POST')");

my $seq0 = sim_max_seq();
my $off = log_offset($node);
enqueue_batch($node, 'reload', 64);
ok(wait_for($node, "SELECT count(*) >= 64 FROM maestro_trigger_requests WHERE state = 'sending'", 't', 30),
	'64 requests are in flight');
$node->safe_psql('postgres', 'ALTER SYSTEM SET maestro.max_concurrency = 4; SELECT pg_reload_conf()');
sleep 0.5;
# a commit while every slot is taken: the next claim must not ask for a negative number
$node->safe_psql('postgres', qq{
SELECT count(maestro_trigger_async('$WF1', format('{"Name": "N%s", "Email": "n%s\@example.com"}', g, g)::jsonb,
                                   'reload ' || g))
FROM generate_series(65, 150) g});
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state = 'done'", '150', 180),
	'all 150 requests are done after the reload');
my $log = log_since($node, $off);
unlike($log, qr/LIMIT must not be negative/, 'no negative LIMIT');
unlike($log, qr/"maestro worker" \(PID \d+\) exited with exit code [1-9]/, 'the worker did not exit with an error');
check_exactly_once($node, 'reload', 150, $seq0);

# --- pacing: rate_limit 15 < max_concurrency 16, 150 queued ----------------
$node->safe_psql('postgres', qq{
ALTER SYSTEM SET maestro.max_concurrency = 16;
ALTER SYSTEM SET maestro.rate_limit = 15;
SELECT pg_reload_conf();
ALTER SERVER sim OPTIONS (SET base_url '@{[ sim_url() ]}');
});
sleep 1;
enqueue_batch($node, 'paced', 150);
ok(wait_for($node, "SELECT count(*) >= 20 FROM maestro_trigger_requests WHERE instance_name LIKE 'paced %' AND state = 'done'", 't', 60),
	'the paced backlog is being sent');
my ($x0, $c0, $lsn0) = split /\|/, scalar_sql($node,
	"SELECT txid_current(), xact_commit, pg_current_wal_lsn() FROM pg_stat_database WHERE datname = 'postgres'");
my $t0 = time;
sleep 5;
my ($x1, $c1, $wal) = split /\|/, scalar_sql($node,
	"SELECT txid_current(), xact_commit, pg_current_wal_lsn() - '$lsn0' FROM pg_stat_database WHERE datname = 'postgres'");
my $el = time - $t0;
note sprintf('pacing at 15/s: %.1f xids/s, %.1f commits/s, %.0f WAL bytes/s', ($x1 - $x0 - 1) / $el,
	($c1 - $c0) / $el, $wal / $el);
cmp_ok(($c1 - $c0) / $el, '<', 45, 'fewer than 45 transactions a second to send 15 requests a second');

$node->stop('fast');
done_testing();
