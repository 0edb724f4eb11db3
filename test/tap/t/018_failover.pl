# Defect 8 (issue 9): failover with asynchronous replication doubled
# triggers. With the standby behind (its WAL receiver frozen before the
# primary stops with -m immediate), rows the old primary had marked
# 'sending' and sent reached the promoted standby as 'queued', and its
# worker sent them again: 466 of 2,000 started twice. After a promotion (a
# new timeline) the worker must treat every unfinished request as possibly
# sent and look it up by its tagged name first: 0 lost, 0 doubled.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

my $n = 2000;
start_simulator();

my ($primary, $standby) = failover_pair();

# the worker records the timeline it works on at its first start
enqueue_batch($primary, 'warm-up', 1);
ok(wait_for($primary, "SELECT state FROM maestro_trigger_requests", 'done', 30), 'the primary sends');
is(($primary->psql('postgres', 'SELECT timeline FROM maestro_worker_state'))[1], '1',
	'the worker recorded timeline 1');

my $seq0 = sim_max_seq();
enqueue_batch($primary, 'fo', $n);
$primary->wait_for_catchup($standby);
is(scalar_sql($standby, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'fo %'"), $n,
	"the standby has the $n queued requests");
is(scalar(worker_pids($standby)), 0, 'no worker runs on the hot standby');

# a few hundred sends into the batch, the standby stops receiving WAL; a few
# hundred sends later the primary dies
my ($walrcv, $at_freeze) = freeze_wal_receiver($standby, 200);
my $deadline = time + 60;
sleep 0.01 while sim_fault_count('lat') < $at_freeze + 300 && time < $deadline;
my $at_stop = sim_fault_count('lat');
$primary->stop('immediate');
kill 'CONT', $walrcv;
note "WAL receiver frozen after $at_freeze POSTs, primary stopped (-m immediate) after $at_stop";
my $on_standby = scalar_sql($standby,
	"SELECT count(*) FILTER (WHERE state = 'done') || ' done, ' || count(*) FILTER (WHERE state <> 'done') || ' not'"
	. " FROM maestro_trigger_requests WHERE instance_name LIKE 'fo %'");
note "the standby saw: $on_standby";
cmp_ok($at_stop, '<', $n, 'the primary died in the middle of the batch');

my $offset = log_offset($standby);
$standby->promote;
ok(wait_for($standby, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'fo %' AND state IN ('done', 'failed')",
	$n, 120), 'the promoted standby\'s worker settled every request');
like(log_since($standby, $offset), qr/maestro worker: the server is on timeline 2, the queue was last worked on timeline 1/,
	'the worker noticed the new timeline');
is(($standby->psql('postgres', 'SELECT timeline FROM maestro_worker_state'))[1], '2', '... and recorded it');

my $doubled = started_twice('fo', $seq0);
my $found = check_exactly_once($standby, 'fo', $n, $seq0);
note "after the failover: $doubled of $n started twice, $found settled by a look-up by name";

# The same check, deterministic and without replication: the recorded
# timeline is made to differ (as after a promotion) in the transaction that
# leaves requests unfinished, and the commit starts the worker.
my $node = $standby;
ok(defined wait_for_worker_exit($node, 30), 'the worker exits once the queue is drained');

# (a) three requests Maestro already has, back to 'queued' and 'sending':
# found by the one instance list, done without a second POST
$seq0 = sim_max_seq();
$offset = log_offset($node);
my $ids = scalar_sql($node, "SELECT string_agg(id::text, ',') FROM (SELECT id FROM maestro_trigger_requests"
	. " WHERE instance_name LIKE 'fo %' ORDER BY id LIMIT 3) s");
$node->safe_psql('postgres', q{
BEGIN;
UPDATE maestro_trigger_requests SET state = CASE WHEN id % 2 = 0 THEN 'queued' ELSE 'sending' END,
  instance_id = NULL, done_at = NULL
WHERE id IN (SELECT id FROM maestro_trigger_requests WHERE instance_name LIKE 'fo %' ORDER BY id LIMIT 3);
UPDATE maestro_worker_state SET timeline = 99;
SELECT maestro_wake();
COMMIT;});
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE id IN ($ids) AND state = 'done'"
	. " AND last_error LIKE 'found by its name after a failover%'",
	'3', 30), 'requests Maestro already has are found by their names after a timeline change');
is(scalar_sql($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state = 'done' AND instance_id IS NOT NULL"
	. " AND instance_name LIKE 'fo %'"), $n, '... and are done with their instance ids');
my @t = grep { $_->{seq} > $seq0 } @{ sim_log() };
is(scalar(grep { $_->{method} eq 'POST' } @t), 0, '... without a POST');
is(scalar(grep { $_->{method} eq 'GET' && $_->{path} =~ m{/instances$} } @t), 1, '... with one instance list');
like(log_since($node, $offset), qr/timeline 2, the queue was last worked on timeline 99.*\n.*DETAIL:.*3 were found/,
	'the log says what was found');

# (b) the list cannot be had (Maestro answers 503 to every GET): the
# requests are looked up one by one and not sent while that fails; once
# Maestro answers, they are sent, each once
ok(defined wait_for_worker_exit($node, 30), 'the worker exits again');
add_server($node, 'listdown', '/_fault/key=listdown;status=503;method=GET');
$seq0 = sim_max_seq();
$offset = log_offset($node);
$node->safe_psql('postgres', qq{
SET maestro.server = 'listdown';
BEGIN;
SELECT maestro_trigger_async('$WF1', format('{"Name": "D%s", "Email": "d%s\@example.com"}', g, g)::jsonb, 'down ' || g)
FROM generate_series(1, 2) g;
UPDATE maestro_worker_state SET timeline = 98;
COMMIT;});
# the list at the worker's start fails (after http.c's retries of a GET);
# then the requests' own look-ups fail too
$deadline = time + 60;
sleep 0.05 while log_since($node, $offset) !~ /could not list the instances of workflow/ && time < $deadline;
like(log_since($node, $offset), qr/could not list the instances of workflow/, 'the log says the list failed');
my $asked = sim_fault_count('listdown');
sleep 0.05 while sim_fault_count('listdown') <= $asked && time < $deadline;
cmp_ok(sim_fault_count('listdown'), '>', $asked, 'the requests are then looked up, and that fails too');
is(scalar(grep { $_->{seq} > $seq0 && $_->{method} eq 'POST' } @{ sim_log() }), 0,
	'... and nothing was sent meanwhile');
is(scalar_sql($node, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'down %' AND state IN ('queued', 'sending')"),
	'2', 'the two requests wait');
$node->safe_psql('postgres', "ALTER SERVER listdown OPTIONS (SET base_url '" . sim_url() . "')");
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'down %' AND state = 'done'",
	'2', 60), 'once Maestro answers, both are sent and done');
is(scalar(grep { $_->{name} =~ /^down \d+ \[mq / } @{ sim_instances($WF1) }), 2, '... one instance each');

done_testing();
