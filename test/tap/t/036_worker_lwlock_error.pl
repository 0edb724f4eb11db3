# Issue 9, review item 13: an error raised while the worker holds an LWLock
# must not leave the lock held. The worker takes three: the API statistics
# (stats.c), the rate-limit headers (ratelimit.c) and the shared token cache
# (auth.c); nothing real raises an error inside them, so the hidden test
# hook maestro.fault_injection (superuser only) raises one there. For each:
# the worker logs the error, recovers and takes the same lock again (a lock
# it still held would hang it: LWLocks do not nest), keeps its pid, a
# backend that takes the lock afterwards does not hang, and once the hook
# is reset every request is sent exactly once.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

my ($ik, $user) = ($IK, $JWT_USER);
my $key = start_jwt_simulator();
my $node = maestro_node('lwlock', conf => <<'EOC');
maestro.rate_limit = 0
maestro.max_attempts = 100
maestro.retry_delay = '100ms'
EOC
my $url = sim_url();
$node->safe_psql('postgres', qq{
CREATE SERVER jwt FOREIGN DATA WRAPPER maestro OPTIONS (base_url '$url', auth_url '$url', account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER jwt
  OPTIONS (integration_key '$ik', user_id '$user', private_key '$key');});

is(scalar_sql($node, "SELECT count(*) FROM pg_settings WHERE name = 'maestro.fault_injection'"), '0',
	'the test hook is hidden from pg_settings');
my ($rc, $out, $err) = $node->psql('postgres', q{
CREATE ROLE plain LOGIN; SET ROLE plain; SET maestro.fault_injection = 'stats_lock'});
like($err, qr/permission denied to set parameter "maestro.fault_injection"/, '... and only a superuser may set it');

# point => [server the requests go to, a statement that takes the lock]
my @cases = (
	[ 'token_cache_lock', 'jwt', "SET maestro.server = 'jwt'; SELECT count(*) > 0 FROM maestro_workflows()" ],
	[ 'stats_lock', 'sim', 'SELECT maestro_stats_reset(); SELECT count(*) >= 0 FROM maestro_stats' ],
	[ 'ratelimit_lock', 'sim', 'SELECT count(*) >= 0 FROM maestro_rate_limits' ],
);

for my $case (@cases)
{
	my ($point, $server, $taker) = @$case;
	ok(defined wait_for_worker_exit($node, 60), "$point: no worker runs yet");
	my $offset = log_offset($node);
	my $seq0 = sim_max_seq();
	$node->safe_psql('postgres', "ALTER SYSTEM SET maestro.fault_injection = '$point'; SELECT pg_reload_conf()");
	# the reload reaches every process before this session's next statement
	# only eventually: the queueing session sets the hook off for itself
	$node->safe_psql('postgres', qq{SET maestro.fault_injection = ''; SET maestro.server = '$server';
SELECT count(maestro_trigger_async('$WF1', format('{"Name": "F%s", "Email": "f%s\@example.com"}', g, g)::jsonb,
                                   '$point ' || g))
FROM generate_series(1, 3) g});

	# how often the error was raised: an error that escapes the worker's
	# round is logged; one in the token fetch is the request's last error
	# (and counts as an attempt)
	my $faults = sub {
		my $logged = () = log_since($node, $offset) =~ /ERROR:  maestro fault injected at "$point"/g;
		return $logged + scalar_sql($node, qq{SELECT coalesce(max(attempts), 0) FROM maestro_trigger_requests
WHERE instance_name LIKE '$point %' AND last_error LIKE '%maestro fault injected at "$point"%'});
	};
	my $deadline = time + 60;
	sleep 0.1 while $faults->() < 1 && time < $deadline;
	cmp_ok($faults->(), '>=', 1, "$point: the worker raised the error with the lock held");
	my @pids = worker_pids($node);
	is(scalar(@pids), 1, "$point: ... and still runs");

	# a backend that takes the same lock returns (LWLock waits cannot be
	# cancelled: a lock left held would hang it, hence the client timeout)
	my $timed_out = 0;
	($rc, $out, $err) = $node->psql('postgres', "SET maestro.fault_injection = ''; $taker",
		timeout => 60, timed_out => \$timed_out);
	ok(!$timed_out && $rc == 0 && $out =~ /t$/, "$point: a backend takes the lock afterwards")
	  or diag "rc $rc, out <$out>, err <$err>, timed out: $timed_out";

	# the worker itself takes the lock again (and fails again)
	$deadline = time + 60;
	my $count = 0;
	while (time < $deadline)
	{
		$count = $faults->();
		last if $count >= 2;
		sleep 0.1;
	}
	cmp_ok($count, '>=', 2, "$point: the worker took the lock again after its recovery");
	is_deeply([ worker_pids($node) ], \@pids, "$point: ... in the same process");

	$node->safe_psql('postgres', 'ALTER SYSTEM RESET maestro.fault_injection; SELECT pg_reload_conf()');
	ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE '$point %' AND state = 'done'",
		'3', 120), "$point: once the hook is reset, the requests are sent");
	check_exactly_once($node, $point, 3, $seq0);
	my $log = log_since($node, $offset);
	unlike($log, qr/exited with exit code|terminated by signal|PANIC/, "$point: no process exited or crashed");
	note "$point: $count errors raised while the lock was held";
}

$node->stop;
done_testing();
