# The periodic sync's own JWT token goes through the worker's token gate
# (delivery.c), like the sends': while the account server takes 15 s to
# answer the sync's token request, a static-token server's triggers are
# sent; the sync then runs with the one token fetched; and a refused grant
# is logged as a failed sync at about one token request per sync interval,
# not a loop. (Before: the sync minted its token synchronously, and every
# transfer of the worker waited for it.)
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP;
use MaestroTAP;

my $ik = '11111111-2222-4333-8444-555555555555';
my $user = '0ccdbb0b-a72e-452f-95f0-9f19654cb620';
my $certs = PostgreSQL::Test::Utils::tempdir();
my $script = -f 'make_test_certs.sh' ? 'make_test_certs.sh' : "$ENV{MAESTRO_TOP}/test/simulator/make_test_certs.sh";
is(system('bash', $script, $certs), 0, 'test keys made');
my $key = slurp_file("$certs/jwt_private.pem");
start_simulator('--oauth-public-key', "$certs/jwt_public.pem", '--integration-key', $ik,
	'--oauth-user', $user, '--oauth-aud', '127.0.0.1', '--token-lifetime', '3600');
my $url = sim_url();
my $node = maestro_node('synctoken', no_setup => 1, conf => "maestro.sync_interval = '1s'\nmaestro.server = 'jsim'\nmaestro.request_timeout = '120s'\n");
$node->safe_psql('postgres', 'CREATE EXTENSION maestro');
add_server($node, 'stat');
$node->safe_psql('postgres', qq{
CREATE SERVER jsim FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$url', auth_url '$url/_fault/key=tokS;latency_ms=15000;times=1', account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER jsim
  OPTIONS (integration_key '$ik', user_id '$user', private_key '$key');});
$node->safe_psql('postgres', 'SELECT maestro_wake()');
my $deadline = time + 60;
sleep 0.05 while sim_fault_count('tokS') < 1 && time < $deadline;
is(sim_fault_count('tokS'), 1, 'the sync asked for its token');
$node->safe_psql('postgres', qq{SET maestro.server = 'stat';
SELECT count(maestro_trigger_async('$WF1', jsonb_build_object('Name', 'n' || g, 'Email', 'x' || g || '\@example.com'), 'fast ' || g)) FROM generate_series(1, 3) g;});
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state = 'done'", '3', 60), 'sends done');
is(sim_json('/__sim/oauth/tokens')->{issued}, 0, 'while the sync token fetch still hangs');
ok(wait_for($node, "SELECT count(*) >= 4 FROM maestro_synced_instances", 't', 120), 'the sync ran with the token');
is(sim_fault_count('tokS'), 1, 'one token request');
# refused grant: logged, not a loop of token requests
my $off = log_offset($node);
$node->safe_psql('postgres', "ALTER SERVER jsim OPTIONS (SET auth_url '$url/_fault/key=tokR;times=0')");
sim_post('/__sim/oauth/consent', { user => $user, consented => JSON::PP::false });
ok(wait_for_log($node, qr/maestro periodic sync failed: could not get an access token: DocuSign user/, $off, 60), 'refusal logged');
my $n0 = sim_fault_count('tokR');
sleep 3;	# a window to count in: refusals must not turn into a loop of token requests
my $n1 = sim_fault_count('tokR');
note "token requests in 3 s of refusals: " . ($n1 - $n0);
cmp_ok($n1 - $n0, '<=', 5, 'about one per sync interval, no loop');
$node->stop('fast');
done_testing();
