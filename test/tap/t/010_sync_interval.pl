# maestro.sync_interval: the worker keeps the mirror fresh by itself, with
# the user mapping of the mirror's owner; a failed sync is logged and tried
# again, and the worker stays up.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MaestroTAP;

start_simulator();
my $node = maestro_node('sync', conf => "maestro.sync_interval = '1s'\n");

# the extension came after the launcher looked: wake starts the worker
scalar_sql($node, 'SELECT maestro_wake()');
ok(wait_for($node, "SELECT count(*) >= 4 FROM maestro_synced_instances", 't', 180),
	'the worker syncs by itself: the seeded instances are in the mirror');

sim_post('/__sim/instances/b5500000-0000-4000-8000-000000000002/status',
	{ workflow_status => 'Completed' });
ok(wait_for($node, qq{
SELECT workflow_status FROM maestro_synced_instances WHERE id = 'b5500000-0000-4000-8000-000000000002'},
	'Completed', 180), 'a status change in Maestro reaches the mirror within the interval');
is(scalar_sql($node, qq{
SELECT old_status || ' -> ' || new_status FROM maestro_instance_events
WHERE instance_id = 'b5500000-0000-4000-8000-000000000002' ORDER BY id DESC LIMIT 1}),
	'In Progress -> Completed', 'and is recorded as an event');

# Maestro fails: the sync is logged as failed, the worker stays
my $offset = log_offset($node);
scalar_sql($node, "ALTER SERVER sim OPTIONS (SET base_url '" . sim_url() . "/_fault/status=503')");
# the sync's GETs are retried with backoff first: give it time
ok(wait_for_log($node, qr/maestro periodic sync failed: Maestro server error/, $offset),
	'a failed sync is logged');
# meanwhile the database serves maestro calls to a server that works
my $url = sim_url();
is(scalar_sql($node, qq{
CREATE SERVER good FOREIGN DATA WRAPPER maestro OPTIONS (base_url '$url', account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER good OPTIONS (access_token 'sim-token');
SET maestro.server = 'good';
SELECT count(*) FROM maestro_workflows();
DROP USER MAPPING FOR CURRENT_USER SERVER good;
DROP SERVER good;}), '3', 'still answering: a maestro call through another server works');
ok(scalar(worker_pids($node)) == 1, 'the worker is still running');
scalar_sql($node, "ALTER SERVER sim OPTIONS (SET base_url '" . sim_url() . "')");
sim_post('/__sim/instances/b5500000-0000-4000-8000-000000000004/status',
	{ workflow_status => 'Canceled' });
ok(wait_for($node, qq{
SELECT workflow_status FROM maestro_synced_instances WHERE id = 'b5500000-0000-4000-8000-000000000004'},
	'Canceled', 180), 'and the next sync succeeds');

$node->stop;
done_testing();
