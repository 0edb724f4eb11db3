# Defect 7 (issue 9): a fast shutdown waited for the worker's network
# calls: pg_ctl stop -m fast took 19 s while the worker waited on a look-up
# answered after 20 s (122 s for one that never answered). SIGTERM must cut
# a hung call short: the server stops within seconds, both while a periodic
# sync waits on a GET (a synchronous call, which watches the stop flag) and
# while the worker waits on a look-up (asynchronous); and the request stays
# in the queue to be looked up again after the restart.
# (Merged from two helpers' tests of the same defect, 015 and 032.)
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

start_simulator();
my $node = maestro_node('fast_stop', conf => <<'EOC');
maestro.rate_limit = 0
maestro.request_timeout = '120s'
maestro.sync_interval = 2s
EOC
$node->safe_psql('postgres',
	"ALTER SERVER sim OPTIONS (SET base_url '@{[ sim_url() ]}/_fault/key=synchang;latency_ms=30000;method=GET')");
# the worker started with the server, before the extension existed, and left
$node->safe_psql('postgres', 'SELECT maestro_wake()');

sub stop_seconds
{
	my $t0 = time;
	my $rc = system('pg_ctl', '-D', $node->data_dir, '-m', 'fast', '-w', '-t', '90', 'stop');
	my $s = time - $t0;
	if ($rc != 0)
	{
		system('pg_ctl', '-D', $node->data_dir, '-m', 'immediate', '-w', 'stop');
	}
	$node->_update_pid(0);
	return ($s, $rc);
}

# --- a periodic sync whose GET hangs ---------------------------------------
ok(wait_for($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'maestro worker'"
	  . " AND state = 'active' AND query = 'maestro periodic sync'", '1', 30),
	'the worker runs a periodic sync');
my $deadline = time + 30;
sleep 0.02 while sim_fault_count('synchang') < 1 && time < $deadline;
is(sim_fault_count('synchang'), 1, "... and waits on the sync's GET");
my ($s, $rc) = stop_seconds();
note sprintf('pg_ctl stop -m fast during a hung sync: %.2f s (exit %d)', $s, $rc >> 8);
is($rc, 0, 'pg_ctl stop -m fast succeeds');
cmp_ok($s, '<', 5, 'a fast shutdown does not wait for the hung sync (< 5 s)');

# --- a request that must be looked up before it is sent: its look-up hangs -
# the first look-up of the instances takes 20 s; later ones are answered at once
$node->append_conf('postgresql.conf', "maestro.sync_interval = 0\n");
$node->start;
$node->safe_psql('postgres', "ALTER SERVER sim OPTIONS (SET base_url '@{[ sim_url() ]}')");
add_server($node, 'hang', '/_fault/key=hang;latency_ms=20000;method=GET;times=1');
my $id = $node->safe_psql('postgres', qq{
SET maestro.server = 'hang';
BEGIN;
SELECT maestro_trigger_async('$WF1', '{"Name": "H", "Email": "h\@example.com"}', 'hung look-up') AS id \\gset
UPDATE maestro_trigger_requests SET verify_before_send = true WHERE id = :id;
COMMIT;
SELECT :id});

$deadline = time + 30;
sleep 0.02 while sim_fault_count('hang') < 1 && time < $deadline;
is(sim_fault_count('hang'), 1, 'the worker is waiting for the look-up');
ok(scalar(worker_pids($node)), 'the worker runs');
is(scalar_sql($node, "SELECT state FROM maestro_trigger_requests WHERE id = $id"), 'sending',
	'the request waits on its look-up');

($s, $rc) = stop_seconds();
note sprintf('pg_ctl stop -m fast during a look-up answered after 20 s: %.2f s (exit %d)', $s, $rc >> 8);
is($rc, 0, 'pg_ctl stop -m fast succeeds');
cmp_ok($s, '<', 5, 'a fast shutdown does not wait for the hung look-up (< 5 s)');

# nothing is lost: after the restart the request is looked up and sent
$node->start;
ok(wait_for($node, "SELECT state FROM maestro_trigger_requests WHERE id = $id", 'done', 60),
	'after the restart the request is done');
is(scalar(grep { $_->{name} =~ /^hung look-up \[mq / } @{ sim_instances($WF1) }), 1,
	'... with exactly one instance');

$node->stop;
done_testing();
