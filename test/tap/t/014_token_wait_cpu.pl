# Defect 6 (issue 9): backends waiting for a token that another backend is
# fetching spun at 100% CPU (one waiter 99%, four ~40% each) for as long as
# the token endpoint took. Backends that need the token another backend is
# fetching must sleep until it is there: they use no CPU meanwhile, can be
# cancelled, all get their answer, and the account server is asked once.
# (Merged from two helpers' tests of the same defect, 014 and 040.)
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

my ($ik, $user) = ($IK, $JWT_USER);
my $waiters = 3;
my $latency_ms = 10000;	# the account server's answer takes this long

my $key = start_jwt_simulator();
my $node = maestro_node('tokenwait', no_setup => 1);
my $url = sim_url();
$node->safe_psql('postgres', qq{
CREATE EXTENSION maestro;
CREATE SERVER sim FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$url', auth_url '$url/_fault/key=slowtoken;latency_ms=$latency_ms',
           account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER sim
  OPTIONS (integration_key '$ik', user_id '$user', private_key '$key');});

sub start_call
{
	my ($name, $out) = @_;
	return IPC::Run::start(
		[ 'psql', '-X', '-A', '-t', '-d', $node->connstr('postgres') . " application_name=$name",
		  '-c', 'SELECT count(*) FROM maestro_workflows()' ],
		'>', $out, '2>', \my $err);
}

sub pid_of
{
	my ($name) = @_;
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE application_name = '$name' AND state = 'active'");
}

# the first backend starts the fetch and waits on the account server
my %out;
my @runs = (start_call('fetcher', \$out{fetcher}));
ok(wait_for($node, "SELECT wait_event_type FROM pg_stat_activity WHERE application_name = 'fetcher'",
		'Extension', 60),
	'the first backend is waiting for the account server');

# the others need the same token meanwhile
push @runs, start_call("waiter$_", \$out{"waiter$_"}) for 1 .. $waiters;
ok(wait_for($node, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'waiter%' AND state = 'active'",
		"$waiters", 30),
	"$waiters more backends want the token");
my @pids = map { pid_of("waiter$_") } 1 .. $waiters;

# their CPU time over a window inside the fetch
sleep 0.5;
my $t0 = time;
my @cpu0 = map { cpu_seconds($_) } @pids;
sleep 2.5;
my @cpu1 = map { cpu_seconds($_) } @pids;
my $wall = time - $t0;

# A spinning waiter takes whatever CPU the machine gives it (one waiter
# 99%, four ~40% each on two idle cores); a sleeping one close to nothing.
# Judged on the sum, so that a busy machine starving the spinners cannot
# hide them: all waiters together under a fifth of one core.
my $still = $node->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fetcher' AND state = 'active'") eq '1';
ok($still, 'the token fetch was still under way at the end of the window')
  or diag 'the machine is too slow for this measurement';
is(sim_fault_count('slowtoken'), 1, 'the waiters did not ask the account server themselves');
my $total = 0;
for my $i (0 .. $#pids)
{
	my $used = defined $cpu1[$i] && defined $cpu0[$i] ? $cpu1[$i] - $cpu0[$i] : $wall;
	note sprintf('waiter %d (pid %d): %.2f s CPU in %.2f s of waiting (%.0f%%)',
		$i + 1, $pids[$i], $used, $wall, 100 * $used / $wall);
	cmp_ok($used / $wall, '<', 0.10, 'waiter ' . ($i + 1) . ': below 10% CPU while it waits for the token');
	$total += $used;
}
cmp_ok($total / $wall, '<', 0.20,
	"the $waiters waiters sleep while the token is fetched (together < 20% of one core)");

# a waiter can be cancelled: it ends at once, not when the fetch does
my $cancel_err = '';
my $cancelled = IPC::Run::start(
	[ 'psql', '-X', '-A', '-t', '-d', $node->connstr('postgres') . " application_name=cancelme",
	  '-c', 'SELECT count(*) FROM maestro_workflows()' ],
	'>', \my $cancel_out, '2>', \$cancel_err);
ok(wait_for($node, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cancelme' AND state = 'active'",
		'1', 30),
	'one more waiter');
$node->safe_psql('postgres',
	"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'cancelme'");
$cancelled->finish;
like($cancel_err, qr/canceling statement due to user request/, 'the cancelled waiter ends with 57014');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fetcher' AND state = 'active'"),
	'1', 'while the fetch is still running');

$_->finish for @runs;
is($out{$_}, "3\n", "$_ got its answer") for sort keys %out;
is(sim_get('/__sim/count?path_contains=key=slowtoken'), '1', 'the account server was asked once');
is(sim_json('/__sim/oauth/tokens')->{issued}, 1, 'one token was issued');

$node->stop;
done_testing();
