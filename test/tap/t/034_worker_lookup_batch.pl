# Requests that must be looked up before they are sent again are settled by
# one instances list per workflow, not one per request: 40 requests of two
# workflows marked verify_before_send and taken over by a new worker (as
# after a crash), 10 of which Maestro already has, cost exactly two GETs,
# although they take two claims; those found are done without a POST, the
# others are sent once.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

start_simulator();
my $node = maestro_node('lookup', conf => "maestro.rate_limit = 0\n");

# 10 requests sent normally: Maestro has their instances
enqueue_batch($node, 'lk', 10);
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state = 'done'", '10', 60),
	'10 requests are done');
my $seq0 = sim_max_seq();

# as after a crash: those 10 and 30 new ones (20 of WF1, 10 of WF2) must be verified
$node->safe_psql('postgres', qq{
BEGIN;
SELECT count(maestro_trigger_async('$WF1', format('{"Name": "N%s", "Email": "n%s\@example.com"}', g, g)::jsonb,
                                   'lk ' || g)) FROM generate_series(11, 30) g;
SELECT count(maestro_trigger_async('$WF2', '{"Amount": 5, "Approver": "a\@example.com"}', 'lk2 ' || g))
FROM generate_series(1, 10) g;
UPDATE maestro_trigger_requests SET state = 'queued', verify_before_send = true, instance_id = NULL,
  next_attempt_at = now() + interval '2 s';
COMMIT;});
# a new worker takes them over, as after a crash
$node->restart('fast');
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state = 'done'", '40', 60),
	'all 40 requests are done');

my @log = grep { $_->{seq} > $seq0 } @{ sim_log() };
my @gets = grep { $_->{method} eq 'GET' && $_->{path} =~ m{/instances$} } @log;
my @posts = grep { $_->{method} eq 'POST' && $_->{path} =~ m{/actions/trigger$} } @log;
note sprintf('%d instances GETs, %d trigger POSTs for 40 requests to verify', scalar(@gets), scalar(@posts));
is(scalar(@gets), 2, 'one instances list per workflow (2), not one per request');
is(scalar(@posts), 30, 'the 30 requests Maestro did not have are sent, the 10 it had are not');
is(scalar_sql($node, "SELECT count(*) FROM maestro_trigger_requests WHERE last_error LIKE 'found by its name%'"),
	'10', 'the 10 are settled by their names');
my %n;
$n{ $_->{name} }++ for grep { $_->{name} =~ /^lk \d+ \[mq / } @{ sim_instances($WF1) };
is(scalar(grep { $_ > 1 } values %n), 0, 'no instance name twice');
is(scalar(keys %n), 30, 'WF1 has exactly 30 such instances');

$node->stop('fast');
done_testing();
