# Failover with a synchronous standby (issue 9, the README's guarantee for
# synchronous_standby_names): the primary's commits wait for the standby, so
# the worker cannot send a request whose 'sending' the standby has not got,
# and cannot go on past an outcome the standby has not got. Frozen standby
# (its WAL receiver stopped with SIGSTOP) mid-batch: the primary's worker
# stops sending within a round of its slots; the primary then stops with
# -m immediate and the standby is promoted: 0 lost, 0 doubled.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

my $n = 2000;
start_simulator();

# once promoted, the standby has no standby of its own to wait for
my ($primary, $standby) = failover_pair(standby_conf => "synchronous_standby_names = ''");
my $concurrency = 16;    # the pair's maestro.max_concurrency

# from now on every commit on the primary waits for the standby's flush
$primary->append_conf('postgresql.conf', "synchronous_standby_names = '*'");
$primary->reload;
ok(wait_for($primary, "SELECT string_agg(sync_state, ',') FROM pg_stat_replication", 'sync', 60),
	'the standby is synchronous');

enqueue_batch($primary, 'warm-up', 1);
ok(wait_for($primary, "SELECT state FROM maestro_trigger_requests", 'done', 30), 'the primary sends');

my $seq0 = sim_max_seq();
enqueue_batch($primary, 'fo', $n);
$primary->wait_for_catchup($standby);
is(scalar_sql($standby, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'fo %'"), $n,
	"the standby has the $n queued requests");

# a few hundred sends into the batch, the standby stops receiving WAL
my ($walrcv, $at_freeze) = freeze_wal_receiver($standby, 200);

# the worker's next commit (a claim or an outcome) waits for the standby,
# so the POSTs stop: wait until none arrived for 3 s (at most 90 s)
my ($last, $since) = ($at_freeze, time);
my $deadline = time + 90;
while (time < $deadline)
{
	my $now = sim_fault_count('lat');
	($last, $since) = ($now, time) if $now != $last;
	last if time - $since >= 3;
	sleep 0.1;
}
my $at_stop = sim_fault_count('lat');
cmp_ok(time - $since, '>=', 3, 'with the standby frozen, the primary stops sending');
cmp_ok($at_stop - $at_freeze, '<=', 2 * $concurrency,
	'... after at most the requests claimed before the freeze (two rounds of its slots)');
like(scalar_sql($primary, "SELECT string_agg(DISTINCT wait_event, ',') FROM pg_stat_activity WHERE backend_type = 'maestro worker'"),
	qr/SyncRep/, '... its worker waits for the standby');
cmp_ok($at_stop, '<', $n, 'the batch is unfinished');

$primary->stop('immediate');
kill 'CONT', $walrcv;
note "WAL receiver frozen after $at_freeze POSTs, $at_stop when the primary stopped (-m immediate)";
note 'the standby saw: ' . scalar_sql($standby,
	"SELECT count(*) FILTER (WHERE state = 'done') || ' done, ' || count(*) FILTER (WHERE state = 'sending') || ' sending, '"
	. " || count(*) FILTER (WHERE state = 'queued') || ' queued' FROM maestro_trigger_requests WHERE instance_name LIKE 'fo %'");

$standby->promote;
ok(wait_for($standby, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'fo %' AND state IN ('done', 'failed')",
	$n, 120), 'the promoted standby\'s worker settled every request');

my $doubled = started_twice('fo', $seq0);
my $found = check_exactly_once($standby, 'fo', $n, $seq0);
note "after the failover: $doubled of $n started twice, $found settled by a look-up by name";

$standby->stop;
done_testing();
