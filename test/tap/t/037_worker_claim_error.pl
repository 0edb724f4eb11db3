# The worker writes a round's outcomes in the transaction of its next
# claim. An error in the claim after the outcomes were written must not take
# them with it: lost, a request Maestro answered would stay 'sending' and be
# looked up by name after the worker's recovery, losing its instance_url (a
# final 4xx would be sent again, a retry could leave before its back-off).
# The hidden test hook maestro.fault_injection raises the error there
# ("claim_after_record"), since nothing real does.
#
# One request in flight at a time (max_concurrency 1) and a backlog: the
# first claim takes two requests; when the first one's answer comes, the
# second leaves and the next claim carries the first one's outcome. That
# claim fails.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

start_simulator();
my $node = maestro_node('claimerr', conf => <<'EOC');
maestro.rate_limit = 0
maestro.max_concurrency = 1
maestro.retry_delay = 100ms
EOC
# long enough that the second request is in flight when the claim fails,
# short against the worker's 1 s pause after an error, so that Maestro has
# answered an abandoned request before the worker looks it up
$node->safe_psql('postgres',
	"ALTER SERVER sim OPTIONS (SET base_url '@{[ sim_url() ]}/_fault/key=slow;latency_ms=300;method=POST')");
$node->safe_psql('postgres',
	"ALTER SYSTEM SET maestro.fault_injection = 'claim_after_record'; SELECT pg_reload_conf()");

$node->safe_psql('postgres', 'SELECT maestro_stats_reset()');
my $off = log_offset($node);
my $seq0 = sim_max_seq();
enqueue_batch($node, 'claim', 4);

ok(wait_for_log($node, qr/ERROR:  maestro fault injected at "claim_after_record"/, $off, 60),
	'a claim failed after it had written the outcomes');
my @pids = worker_pids($node);
$node->safe_psql('postgres', 'ALTER SYSTEM RESET maestro.fault_injection; SELECT pg_reload_conf()');

ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'claim %' AND state = 'done'",
	'4', 60), 'all 4 requests end done');

# the first request's outcome was in the failed claim
my $first = $node->safe_psql('postgres', q{
SELECT http_status, attempts, instance_url IS NOT NULL, coalesce(last_error, '<none>')
FROM maestro_trigger_requests WHERE instance_name LIKE 'claim 1 [mq %'});
is($first, '201|1|t|<none>',
	"the first request's outcome survived the failed claim: sent once, its instance_url kept, never looked up");
my $failed_claims = () = log_since($node, $off) =~ /ERROR:  maestro fault injected at "claim_after_record"/g;
note "claims failed: $failed_claims; first request: $first";

check_exactly_once($node, 'claim', 4, $seq0);
# written twice (rolled back with the claim, then on their own), counted once
is(scalar_sql($node, 'SELECT done FROM maestro_worker_stats'), '4', 'maestro_worker_stats counts 4 done, not 5');
is_deeply([ worker_pids($node) ], \@pids, 'the worker recovered in the same process');
unlike(log_since($node, $off), qr/exited with exit code|terminated by signal|PANIC/,
	'no process exited or crashed');

$node->stop('fast');
done_testing();
