# The worker's POSTs are never re-sent by libcurl behind its back: when a
# kept-alive connection dies after a trigger went out on it, libcurl would
# send the request again on a new connection by itself. The worker must see
# that send fail, look the request up, and only then send it again: every
# POST the simulator sees is one attempt the queue recorded, and the
# workflow is started once.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MaestroTAP;

start_simulator();
# one request at a time, so the second reuses the first one's connection
my $node = maestro_node('noresend', conf => <<'EOC');
maestro.rate_limit = 0
maestro.max_concurrency = 1
maestro.retry_delay = 100ms
maestro.max_attempts = 3
EOC

my $sim = sim_url();
# reads the first POST, then resets the connection (the request is not processed)
$node->safe_psql('postgres', qq{
CREATE SERVER flaky FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$sim/_fault/key=wreset;reset=1;times=1;method=POST', account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER flaky OPTIONS (access_token 'sim-token');
});

# both in one transaction: the first opens a connection and leaves it alive,
# the second goes out on it and finds it dead
my ($first, $second) = split /\n/, $node->safe_psql('postgres', qq{
BEGIN;
SET LOCAL maestro.server = 'sim';
SELECT maestro_trigger_async('$WF1', '{"Name": "K", "Email": "k\@example.com"}', 'keepalive first');
SET LOCAL maestro.server = 'flaky';
SELECT maestro_trigger_async('$WF1', '{"Name": "R", "Email": "r\@example.com"}', 'keepalive second');
COMMIT;});

ok(wait_for($node, "SELECT string_agg(state, ',' ORDER BY id) FROM maestro_trigger_requests", 'done,done', 60),
	'both requests are done');
my $attempts = scalar_sql($node, "SELECT attempts FROM maestro_trigger_requests WHERE id = $second");
my $posts = sim_get('/__sim/count?path_contains=key=wreset&method=POST');
cmp_ok($posts, '>=', 2, 'the first POST of the second request was reset, and it was sent again');
is($posts, $attempts, 'every POST the simulator saw is an attempt the queue recorded (no silent re-send)');
my @started = grep { $_->{name} =~ /^keepalive second \[mq / } @{ sim_instances($WF1) };
is(scalar @started, 1, 'the workflow was started once');
note "the second request: $posts POSTs, $attempts attempts recorded";

$node->stop;
done_testing();
