# Defect 7 (issue 9): a fast shutdown waited for the worker's network
# calls: pg_ctl stop -m fast took 19 s while the worker waited on a look-up
# answered after 20 s (122 s for one that never answered). SIGTERM must cut
# a hung call short: the server stops within seconds, and the request stays
# in the queue to be looked up again after the restart.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

start_simulator();
my $node = maestro_node('fast_stop', no_setup => 1, conf => <<'EOC');
maestro.request_timeout = '120s'
EOC
$node->safe_psql('postgres', 'CREATE EXTENSION maestro');
# the first look-up of the instances takes 20 s; later ones are answered at once
add_server($node, 'hang', '/_fault/key=hang;latency_ms=20000;method=GET;times=1');

# a request that may already have been sent: the worker looks it up first
my $id = $node->safe_psql('postgres', qq{
SET maestro.server = 'hang';
BEGIN;
SELECT maestro_trigger_async('$WF1', '{"Name": "H", "Email": "h\@example.com"}', 'hung look-up') AS id \\gset
UPDATE maestro_trigger_requests SET verify_before_send = true WHERE id = :id;
COMMIT;
SELECT :id});

my $deadline = time + 30;
sleep 0.02 while sim_fault_count('hang') < 1 && time < $deadline;
is(sim_fault_count('hang'), 1, 'the worker is waiting for the look-up');
ok(scalar(worker_pids($node)), 'the worker runs');

my $t0 = time;
$node->stop('fast');
my $took = time - $t0;
note sprintf('pg_ctl stop -m fast during a look-up answered after 20 s: %.2f s', $took);
cmp_ok($took, '<', 5, 'a fast shutdown does not wait for the hung look-up (< 5 s)');

# nothing is lost: after the restart the request is looked up and sent
$node->start;
ok(wait_for($node, "SELECT state FROM maestro_trigger_requests WHERE id = $id", 'done', 60),
	'after the restart the request is done');
is(scalar(grep { $_->{name} =~ /^hung look-up \[mq / } @{ sim_instances($WF1) }), 1,
	'... with exactly one instance');

$node->stop;
done_testing();
