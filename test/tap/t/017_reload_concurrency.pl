# Defect 3 (issue 9): lowering maestro.max_concurrency on reload while all
# slots were in flight made the next claim run LIMIT with a negative value:
# ERROR, the worker exited with code 1, restarted 5 s later and settled
# the abandoned requests by look-ups (losing their instance_url). A reload
# must simply take effect: no error, the same worker, nothing lost or
# doubled, and no more than the new limit in flight once the old sends end.
#
# Defect 2: while pacing (rate_limit 15 below max_concurrency 16, a backlog
# queued) the worker claimed every ~10 ms, ~100 transactions a second to
# send 15: a claim must happen when there is room to send.
# (Merged from two helpers' tests of the same defects, 017 and 033.)
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

start_simulator();
my $node = maestro_node('reload', no_setup => 1, conf => <<'EOC');
maestro.rate_limit = 0
maestro.max_concurrency = 8
EOC
$node->safe_psql('postgres', 'CREATE EXTENSION maestro');
# every trigger is answered after 1.5 s
my $latency = 1.5;
add_server($node, 'slow', '/_fault/key=slow;latency_ms=1500;method=POST');

# exactly 8 queued: all in flight, nothing left to claim ahead
my $seq0 = sim_max_seq();
enqueue_batch($node, 'reload', 8);
my $deadline = time + 30;
sleep 0.02 while sim_fault_count('slow') < 8 && time < $deadline;
is(sim_fault_count('slow'), 8, 'all 8 slots are in flight');
my ($pid) = worker_pids($node);
my $offset = log_offset($node);

$node->safe_psql('postgres', 'ALTER SYSTEM SET maestro.max_concurrency = 2; SELECT pg_reload_conf()');
my $t_reload = time;
# a new session sees the new value once the postmaster has re-read the
# file, and by then it has signalled the worker too
ok(wait_for($node, 'SHOW maestro.max_concurrency', '2', 30), 'the reload took effect');
# more work while the 8 are still in flight: the worker claims again
enqueue_batch($node, 'reload', 16);

# until every request is settled, the same worker runs
my %pids;
$deadline = time + 90;
my $done = 0;
while (time < $deadline)
{
	$pids{$_}++ for worker_pids($node);
	last if ($done = scalar_sql($node,
		"SELECT count(*) = 24 FROM maestro_trigger_requests WHERE state IN ('done', 'failed')") eq 't');
	sleep 0.1;
}
ok($done, 'all 24 requests are settled');
my $log = log_since($node, $offset);
unlike($log, qr/ERROR|FATAL/, 'no ERROR or FATAL in the server log after the reload');
unlike($log, qr/LIMIT must not be negative/, 'no negative LIMIT');
unlike($log, qr/maestro worker.*exited with exit code/, 'the worker did not exit with an error');
is(join(',', sort keys %pids), $pid, 'the same worker ran throughout (pid unchanged)');
is(scalar_sql($node, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_url IS NULL"), '0',
	'every request has the instance_url of its trigger answer (none settled by a look-up)');
check_exactly_once($node, 'reload', 24, $seq0);

# the new limit holds for every POST that left after the reload was seen
my @t = sort { $a <=> $b } map { $_->{time} }
  grep { $_->{seq} > $seq0 && ($_->{fault} // '') =~ /key=slow/ } @{ sim_log(method => 'POST') };
my $most = 0;
for my $p (grep { $_ > $t_reload + 0.5 } @t)
{
	my $open = grep { $_ <= $p && $_ > $p - ($latency - 0.05) } @t;
	$most = $open if $open > $most;
}
note sprintf('after lowering max_concurrency 8 -> 2: at most %d POSTs in flight at once', $most);
cmp_ok($most, '<=', 2, 'after the reload at most 2 POSTs are in flight at once');

# --- pacing: rate_limit 15 < max_concurrency 16, 150 queued ----------------
$node->safe_psql('postgres', q{
ALTER SYSTEM SET maestro.max_concurrency = 16;
ALTER SYSTEM SET maestro.rate_limit = 15;
SELECT pg_reload_conf();});
ok(wait_for($node, 'SHOW maestro.rate_limit', '15', 30), 'pacing: rate_limit 15 took effect');
add_server($node, 'fast');
enqueue_batch($node, 'paced', 150, 'fast');
ok(wait_for($node, "SELECT count(*) >= 20 FROM maestro_trigger_requests WHERE instance_name LIKE 'paced %' AND state = 'done'", 't', 60),
	'the paced backlog is being sent');
my ($x0, $c0, $lsn0) = split /\|/, scalar_sql($node,
	"SELECT txid_current(), xact_commit, pg_current_wal_lsn() FROM pg_stat_database WHERE datname = 'postgres'");
my $t0 = time;
sleep 0.1 while time < $t0 + 5;
my ($x1, $c1, $wal) = split /\|/, scalar_sql($node,
	"SELECT txid_current(), xact_commit, pg_current_wal_lsn() - '$lsn0' FROM pg_stat_database WHERE datname = 'postgres'");
my $el = time - $t0;
note sprintf('pacing at 15/s: %.1f xids/s, %.1f commits/s, %.0f WAL bytes/s', ($x1 - $x0 - 1) / $el,
	($c1 - $c0) / $el, $wal / $el);
cmp_ok(($c1 - $c0) / $el, '<', 45, 'fewer than 45 transactions a second to send 15 requests a second');

$node->stop;
done_testing();
