# Retention (issue 9): the worker deletes finished requests (done, failed)
# once maestro.request_retention has passed since done_at, and rows of
# maestro_instance_events after maestro.event_retention (0: kept forever);
# a queued or sending request is never deleted, however old. A worker that
# has gone idle purges when it next starts.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

start_simulator();
my $node = maestro_node('retention', conf => <<'EOC');
maestro.rate_limit = 0
maestro.request_retention = '2s'
maestro.event_retention = 0
maestro.request_timeout = '10min'
EOC

is(scalar_sql($node, 'SHOW maestro.request_retention'), '2s', 'maestro.request_retention is set');
is(scalar_sql($node, "SELECT boot_val FROM pg_settings WHERE name = 'maestro.request_retention'"), '604800',
	'its default is 7 days');

# requests that stay unfinished: one in flight for 5 minutes (sending), one
# answered 429 with Retry-After: 3600 (queued for a later retry)
add_server($node, 'slow', '/_fault/key=slow;latency_ms=300000;method=POST');
add_server($node, 'later', '/_fault/key=later;status=429;retry_after=3600;times=1;method=POST');
enqueue_batch($node, 'in flight', 1, 'slow');
enqueue_batch($node, 'retry later', 1, 'later');
my $deadline = time + 30;
sleep 0.05 while (sim_fault_count('slow') < 1 || sim_fault_count('later') < 1) && time < $deadline;
ok(wait_for($node, "SELECT string_agg(state, ',' ORDER BY id) FROM maestro_trigger_requests", 'sending,queued', 30),
	'one request is sending, one queued for a retry in an hour');

# finished ones: 5 done (each with a "new instance" event), 1 failed (400)
enqueue_batch($node, 'finished', 5, 'sim');
$node->safe_psql('postgres', qq{SET maestro.server = 'sim';
SELECT maestro_trigger_async('$WF1', '{"Name": "No Email"}', 'bad input')});
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state IN ('done', 'failed')", '6', 30),
	'six requests finished (5 done, 1 failed)');
is(scalar_sql($node, 'SELECT count(*) FROM maestro_instance_events'), '5', 'five instance events were recorded');

# past 2 s they go, while the worker runs (it waits for the retry)
my $t0 = time;
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state IN ('done', 'failed')", '0', 30),
	'the finished requests are deleted once maestro.request_retention has passed');
note sprintf('finished requests deleted %.1f s after they were all done (retention 2 s)', time - $t0);
is(scalar_sql($node, "SELECT string_agg(state, ',' ORDER BY id) FROM maestro_trigger_requests"), 'sending,queued',
	'the sending and the queued request are kept');
is(scalar_sql($node, 'SELECT count(*) FROM maestro_instance_events'), '5',
	'events are kept while maestro.event_retention is 0');

# events too, once a retention is set
$node->safe_psql('postgres', "ALTER SYSTEM SET maestro.event_retention = '2s'; SELECT pg_reload_conf()");
ok(wait_for($node, 'SELECT count(*) FROM maestro_instance_events', '0', 30),
	'with maestro.event_retention = 2s the events are deleted');
is(scalar_sql($node, "SELECT string_agg(state, ',' ORDER BY id) FROM maestro_trigger_requests"), 'sending,queued',
	'... and the unfinished requests are still kept');
is(scalar_sql($node, "SELECT count(*) FROM maestro_synced_instances"), '5', '... the mirror itself is kept');

# A backlog of many batches (100,000 finished requests, 100 batches of
# 1,000) goes in one stretch, not one batch per wait: the worker (kept
# running by the two unfinished requests) runs batch after batch, so it
# outpaces a queue that finishes ~2,000 requests a second. One batch every
# 2 s, as before, would take 200 s; the deadline is 90 s on a loaded
# machine. Requests sent meanwhile are not held up.
$node->safe_psql('postgres', q{
INSERT INTO maestro_trigger_requests (state, server_id, requested_by, workflow_id, inputs, instance_name,
                                      attempts, sent_at, done_at)
SELECT 'done', (SELECT oid FROM pg_foreign_server WHERE srvname = 'sim'), current_user::regrole,
       gen_random_uuid(), '{"Name": "old"}', 'backlog ' || g, 1,
       now() - interval '1 hour', now() - interval '1 hour' + g * interval '1 ms'
FROM generate_series(1, 100000) g});
my $backlog_t0 = time;
enqueue_batch($node, 'during backlog', 20, 'sim');
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'backlog %'", '0', 90),
	'a backlog of 100 batches is deleted in one stretch');
my $backlog_s = time - $backlog_t0;
note sprintf('100,000 finished requests deleted in %.1f s (%.0f rows/s)', $backlog_s, 100000 / $backlog_s);
my $sent_deadline = time + 60;
my $sent = 0;
while (time < $sent_deadline)
{
	$sent = grep { $_->{name} =~ /^during backlog \d+ / } @{ sim_instances($WF1) };
	last if $sent >= 20;
	sleep 0.2;
}
is($sent, 20, 'the 20 requests queued during the purge were sent');
is(scalar_sql($node, "SELECT string_agg(state, ',' ORDER BY id) FROM maestro_trigger_requests"
	. " WHERE instance_name NOT LIKE 'during backlog%'"), 'sending,queued',
	'... and the unfinished requests are still kept');

# an idle worker exits; what finished before is purged at its next start.
# Start from a known table: the 20 sent during the purge may or may not
# have been purged already, as the worker's next retention pass came.
$node->safe_psql('postgres', q{
DELETE FROM maestro_trigger_requests
 WHERE state IN ('queued', 'sending') OR instance_name LIKE 'during backlog%';
ALTER SYSTEM SET maestro.request_retention = '5min'; SELECT pg_reload_conf()});
$node->restart;
enqueue_batch($node, 'old', 3, 'sim');
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state = 'done'", '3', 30), 'three more are done');
ok(defined wait_for_worker_exit($node, 30), 'the worker exits once the queue is drained');
# as if they had finished ten minutes ago
$node->safe_psql('postgres', "UPDATE maestro_trigger_requests SET done_at = done_at - interval '10 minutes'");
enqueue_batch($node, 'new', 1, 'sim');
ok(wait_for($node, "SELECT string_agg(state || ' ' || split_part(instance_name, ' ', 1), ',') FROM maestro_trigger_requests",
	'done new', 30), 'the next start of the worker deleted the three past the retention, not the new one');

# the update from 0.1 adds what retention and the failover check use
ok(defined wait_for_worker_exit($node, 30), 'the worker exits again');
my $url = sim_url();
$node->safe_psql('postgres', qq{
DROP EXTENSION maestro CASCADE;
CREATE EXTENSION maestro VERSION '0.1';
ALTER EXTENSION maestro UPDATE;
CREATE SERVER sim FOREIGN DATA WRAPPER maestro OPTIONS (base_url '$url', account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER sim OPTIONS (access_token 'sim-token');});
is(scalar_sql($node, q{SELECT count(*) FROM pg_indexes WHERE indexname IN
  ('maestro_trigger_requests_finished', 'maestro_instance_events_seen')}), '2', 'the update adds the two indexes');
is(scalar_sql($node, 'SELECT count(*) FROM maestro_worker_state'), '0', '... and the timeline table, empty');
enqueue_batch($node, 'updated', 2);
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state = 'done'", '2', 30),
	'after the update the worker sends');
is(scalar_sql($node, 'SELECT timeline FROM maestro_worker_state'), '1', '... and records its timeline');
ok(defined wait_for_worker_exit($node, 30), '... and exits');
$node->safe_psql('postgres', "UPDATE maestro_trigger_requests SET done_at = done_at - interval '10 minutes'");
enqueue_batch($node, 'later', 1);
ok(wait_for($node, "SELECT string_agg(split_part(instance_name, ' ', 1), ',') FROM maestro_trigger_requests WHERE state = 'done'",
	'later', 30), 'its next start purges the two past the retention and sends the new one');

$node->stop;
done_testing();
