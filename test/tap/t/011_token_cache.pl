# The JWT grant's token is shared: with maestro preloaded, every backend and
# the worker use one token per user mapping, and of several backends that
# need a new one at once only one asks the account server.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MaestroTAP;

my ($ik, $user) = ($IK, $JWT_USER);
my $key = start_jwt_simulator();
my $node = maestro_node('tokens', no_setup => 1);
my $url = sim_url();
$node->safe_psql('postgres', qq{
CREATE EXTENSION maestro;
CREATE SERVER sim FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$url', auth_url '$url', account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER sim
  OPTIONS (integration_key '$ik', user_id '$user', private_key '$key');});

sub issued { return sim_json('/__sim/oauth/tokens')->{issued}; }

# five backends, one after the other, and the worker
for my $i (1 .. 5)
{
	is($node->safe_psql('postgres', 'SELECT count(*) FROM maestro_workflows()'), '3',
		"backend $i calls the API");
}
$node->safe_psql('postgres', qq{
SELECT maestro_trigger_async('$WF1', format('{"Name": "T%s", "Email": "t%s\@example.com"}', g, g)::jsonb,
                             'token ' || g) FROM generate_series(1, 5) g;});
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state = 'done'", '5', 180),
	'the worker sent five triggers');
is(issued(), 1, 'one token served five backends and the worker');

# a changed option makes a new token; four backends wanting it at once ask
# once: the account server answers after 10 s, and the test sees all four
# waiting (wait event Extension) before any new token was issued
$node->safe_psql('postgres',
	"ALTER SERVER sim OPTIONS (SET auth_url '$url/_fault/latency_ms=10000')");
my @runs = map { start_psql($node, 'SELECT count(*) FROM maestro_workflows() /* token-race */') } 0 .. 3;
my $waiting = wait_for_extension_waits($node, 'token-race', 4, 60);
my $issued_then = issued();
ok($waiting && $issued_then == 1, 'the four backends waited for a token at the same time')
  or diag "all four seen waiting: $waiting; tokens issued by then: $issued_then";
$_->{h}->finish for @runs;
for my $i (0 .. 3)
{
	is("${ $runs[$i]{out} }|${ $runs[$i]{err} }", "3\n|", 'backend ' . ($i + 1) . ' of the four got its answer');
}
is(issued(), 2, 'four backends starting at once asked for one new token');
is(sim_get('/__sim/count?path_contains=/oauth/token'), '2', 'the account server saw two requests in all');

$node->stop;
done_testing();
