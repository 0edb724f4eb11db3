# Defect 6 (issue 9): backends waiting for a token that another backend is
# fetching spun at 100% CPU (one waiter 99%, four ~40% each) for as long as
# the token endpoint took. A waiter must sleep until the token is there.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

my $ik = '11111111-2222-4333-8444-555555555555';
my $user = '0ccdbb0b-a72e-452f-95f0-9f19654cb620';
my $certs = PostgreSQL::Test::Utils::tempdir();
my $script = -f 'make_test_certs.sh' ? 'make_test_certs.sh' : "$ENV{MAESTRO_TOP}/test/simulator/make_test_certs.sh";
is(system('bash', $script, $certs), 0, 'test keys made');
my $key = slurp_file("$certs/jwt_private.pem");

start_simulator('--oauth-public-key', "$certs/jwt_public.pem", '--integration-key', $ik,
	'--oauth-user', $user, '--oauth-aud', '127.0.0.1', '--token-lifetime', '3600');
my $node = maestro_node('token_wait', no_setup => 1);
my $url = sim_url();
# the account server takes 5 s to answer
$node->safe_psql('postgres', qq{
CREATE EXTENSION maestro;
CREATE SERVER sim FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$url', auth_url '$url/_fault/key=slowtoken;latency_ms=5000', account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER sim
  OPTIONS (integration_key '$ik', user_id '$user', private_key '$key');});

sub call_api
{
	my ($name) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-A', '-t', '-d', $node->connstr('postgres') . " application_name=$name", '-c',
		  'SELECT count(*) FROM maestro_workflows()' ],
		'>', \$out, '2>', \$err);
	return { h => $h, out => \$out, err => \$err };
}

sub active_pid
{
	my ($name) = @_;
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE application_name = '$name' AND state = 'active'");
}

# the first backend asks the account server for the token
my $fetcher = call_api('fetcher');
my $deadline = time + 30;
sleep 0.02 while sim_fault_count('slowtoken') < 1 && time < $deadline;
is(sim_fault_count('slowtoken'), 1, 'the first backend is fetching the token');

# two more backends need the same token meanwhile: they wait for it
my @waiters = map { call_api("waiter$_") } 1 .. 2;
my @pids;
$deadline = time + 10;
while (time < $deadline)
{
	@pids = grep { /\d/ } map { active_pid("waiter$_") } 1 .. 2;
	last if @pids == 2;
	sleep 0.02;
}
is(scalar(@pids), 2, 'two waiting backends are running their query');

my @cpu0 = map { cpu_seconds($_) } @pids;
my $t0 = time;
sleep 0.1 while time < $t0 + 2;
my @cpu1 = map { cpu_seconds($_) } @pids;
my $secs = time - $t0;
my $still = active_pid('fetcher') ne '';
ok($still, 'the token fetch was still under way at the end of the window')
  or diag 'the machine is too slow for this measurement';
is(sim_fault_count('slowtoken'), 1, 'the waiters did not ask the account server themselves');

for my $i (0 .. 1)
{
	my $share = ($cpu1[$i] - $cpu0[$i]) / $secs;
	note sprintf('waiter %d: %.1f%% CPU over %.1f s while the token was fetched', $i + 1, 100 * $share, $secs);
	cmp_ok($share, '<', 0.10, "waiter " . ($i + 1) . ": below 10% CPU while it waits for the token");
}

$_->{h}->finish for $fetcher, @waiters;
is(join(',', map { ${ $_->{out} } =~ s/\s+//gr } $fetcher, @waiters), '3,3,3',
	'all three backends got the token and listed the workflows');
is(sim_json('/__sim/oauth/tokens')->{issued}, 1, 'one token was issued for the three');

$node->stop;
done_testing();
