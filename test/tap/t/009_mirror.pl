# A trigger the worker completes shows up in the mirror at once, with its
# "new instance" event, and costs no API call; the next maestro_sync()
# completes the row and does not report the instance again.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MaestroTAP;

start_simulator();
my $node = maestro_node('mirror');

my $gets_before = sim_get("/__sim/count?method=GET&path_contains=/instances");
my $id = scalar_sql($node, qq{
SELECT maestro_trigger_async('$WF1', '{"Name": "M", "Email": "m\@example.com"}', 'mirrored');});
ok(wait_for($node, "SELECT state FROM maestro_trigger_requests WHERE id = $id", 'done', 180),
	'the request is done');

is(scalar_sql($node, qq{
SELECT count(*) FROM maestro_synced_instances s JOIN maestro_trigger_requests r
  ON r.instance_id = s.id AND r.workflow_id = s.workflow_id
WHERE r.id = $id AND s.workflow_status = 'In Progress' AND s.name = r.instance_name
  AND s.trigger_inputs = r.inputs}),
	'1', 'the started instance is in the mirror at once, In Progress, with its name and inputs');
is(scalar_sql($node, qq{
SELECT old_status IS NULL AND new_status = 'In Progress' FROM maestro_instance_events e
  JOIN maestro_trigger_requests r ON r.instance_id = e.instance_id WHERE r.id = $id}),
	't', 'its "new instance" event is recorded');
is(sim_get("/__sim/count?method=GET&path_contains=/instances"), $gets_before,
	'no API call was spent on it');
is(scalar_sql($node, qq{
SELECT request_state || ' ' || workflow_status FROM maestro_trigger_request_instances WHERE request_id = $id}),
	'done In Progress', 'the request leads to its instance');

# the next sync fills in the rest and reports the other instances, not this one
is(scalar_sql($node, "SELECT maestro_sync('$WF1')"), '4',
	'a sync completes the row (its object differs) and finds the 3 seeded instances');
is(scalar_sql($node, qq{
SELECT count(*) FROM maestro_instance_events e JOIN maestro_trigger_requests r
  ON r.instance_id = e.instance_id WHERE r.id = $id}),
	'1', 'the triggered instance has still one event: the sync did not see it as new');
is(scalar_sql($node, qq{
SELECT raw ->> 'name' = instance_name FROM maestro_synced_instances s
  JOIN maestro_trigger_requests r ON r.instance_id = s.id WHERE r.id = $id}),
	't', 'the synced row carries the whole object');

$node->stop;
done_testing();
