# An error that escapes a round of the worker (here: recording outcomes
# fails on a check constraint) gets a background worker's standard error
# recovery: the transaction is aborted, locks and memory released, the
# worker stays (no exit, no restart), and the requests it was handling are
# taken over as after a crash: looked up by name, none sent twice.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

start_simulator();
my $node = maestro_node('errors', conf => "maestro.rate_limit = 0\nmaestro.retry_delay = 100ms\n");

# a successful trigger returns an instance_url, which this refuses
$node->safe_psql('postgres',
	'ALTER TABLE maestro_trigger_requests ADD CONSTRAINT no_url CHECK (instance_url IS NULL)');
my $off = log_offset($node);
my $seq0 = sim_max_seq();
enqueue_batch($node, 'err', 5);
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state = 'done'", '5', 60),
	'all 5 requests end done');
my $log = log_since($node, $off);
my @pids = $log =~ /\[(\d+)\] ERROR:  new row for relation "maestro_trigger_requests" violates check constraint "no_url"/g;
cmp_ok(scalar(@pids), '>=', 1, 'recording the outcomes failed');
my %pids = map { $_ => 1 } @pids;
is(scalar(keys %pids), 1, '... always in the same worker');
unlike($log, qr/"maestro worker" \(PID \d+\) exited with exit code/, 'the worker did not exit');
is(scalar_sql($node, "SELECT count(*) FROM maestro_trigger_requests WHERE last_error LIKE 'found by its name%'"),
	'5', 'the requests were settled by looking them up by name');
my %n;
$n{ $_->{name} }++ for grep { $_->{name} =~ /^err \d+ \[mq / } @{ sim_instances($WF1) };
is(scalar(keys %n), 5, 'Maestro has 5 such instances');
is(scalar(grep { $_ > 1 } values %n), 0, '... none twice');

$node->stop('fast');
done_testing();
