# A fast shutdown does not wait for the worker's network calls (defect 7):
# pg_ctl stop -m fast while a periodic sync waits on a GET that Maestro
# answers only after 30 s (a synchronous call, which watches the stop
# flag), and while the worker waits on such a look-up (asynchronous).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

start_simulator();
my $node = maestro_node('shutdown', conf => <<'EOC');
maestro.rate_limit = 0
maestro.request_timeout = 120s
maestro.sync_interval = 2s
EOC
$node->safe_psql('postgres',
	"ALTER SERVER sim OPTIONS (SET base_url '@{[ sim_url() ]}/_fault/key=hang;latency_ms=30000;method=GET')");
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
sleep 1;    # the sync's GET is under way
my ($s, $rc) = stop_seconds();
note sprintf('pg_ctl stop -m fast during a hung sync: %.2f s (exit %d)', $s, $rc >> 8);
is($rc, 0, 'pg_ctl stop -m fast succeeds');
cmp_ok($s, '<', 5, '... in less than 5 s');

# --- a request that must be looked up before it is sent: its look-up hangs -
$node->append_conf('postgresql.conf', "maestro.sync_interval = 0\n");
$node->start;
$node->safe_psql('postgres', qq{
BEGIN;
SELECT maestro_trigger_async('$WF1', '{"Name": "S", "Email": "s\@example.com"}', 'shutdown 1');
UPDATE maestro_trigger_requests SET verify_before_send = true;
COMMIT;});
ok(wait_for($node, "SELECT state FROM maestro_trigger_requests", 'sending', 30),
	'the request waits on its look-up');
sleep 1;    # the look-up is under way
($s, $rc) = stop_seconds();
note sprintf('pg_ctl stop -m fast during a hung look-up: %.2f s (exit %d)', $s, $rc >> 8);
is($rc, 0, 'pg_ctl stop -m fast succeeds');
cmp_ok($s, '<', 5, '... in less than 5 s');

done_testing();
