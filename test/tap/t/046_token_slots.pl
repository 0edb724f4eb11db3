# The shared token cache has 64 slots, one per user mapping. While every
# one of them is held by a fetch under way, a 65th mapping fetches its token
# without a slot; the token it gets must still be kept, in a slot freed by
# the time it arrives, so that the mapping's next call does not ask the
# account server again.
#
# 64 backends, each as a role of its own with a mapping of its own, fetch
# at once from an account server that answers after 20 s (time enough to
# see them all fetching on a loaded machine); the test sees all
# 64 waiting, then a 65th role calls, and calls again.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MaestroTAP;

my $SLOTS = 64;
my $key = start_jwt_simulator();
my $node = maestro_node('slots', no_setup => 1, conf => "max_connections = 100\n");
my $url = sim_url();
my $roles = join('', map { qq{
CREATE ROLE slot_$_;
GRANT USAGE ON FOREIGN SERVER sim TO slot_$_;
CREATE USER MAPPING FOR slot_$_ SERVER sim
  OPTIONS (integration_key '$IK', user_id '$JWT_USER', private_key '$key');} } 1 .. $SLOTS + 1);
$node->safe_psql('postgres', qq{
CREATE EXTENSION maestro;
CREATE SERVER sim FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$url', auth_url '$url/_fault/latency_ms=20000', account_id '$ACCOUNT');
$roles});

sub issued { return sim_json('/__sim/oauth/tokens')->{issued}; }
sub call_as
{
	my ($n) = @_;
	return $node->safe_psql('postgres', "SET ROLE slot_$n; SELECT count(*) FROM maestro_workflows()");
}

my @runs = map { start_psql($node, "SET ROLE slot_$_; SELECT count(*) FROM maestro_workflows() /* slot-race */") }
  1 .. $SLOTS;
my $waiting = wait_for_extension_waits($node, 'slot-race', $SLOTS, 120);
my $issued_then = issued();
ok($waiting && $issued_then == 0, "the $SLOTS backends were fetching at the same time")
  or diag "all seen fetching: $waiting; tokens issued by then: $issued_then";

# every slot is held by a fetch: this one has none
is(call_as($SLOTS + 1), '3', 'a 65th mapping gets its token while every slot is being fetched');
$_->{h}->finish for @runs;
is(scalar(grep { ${ $_->{out} } eq "3\n" } @runs), $SLOTS, "... and the $SLOTS others theirs")
  or diag join("\n", map { "<${ $_->{out} }> <${ $_->{err} }>" } @runs);
is(issued(), $SLOTS + 1, 'one token request each');

is(call_as($SLOTS + 1), '3', "the 65th mapping's next call works");
is(issued(), $SLOTS + 1, '... with the token it fetched without a slot: no new token request');

$node->stop;
done_testing();
