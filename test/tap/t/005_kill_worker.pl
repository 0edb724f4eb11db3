# kill -9 of the worker in the middle of a batch: the postmaster goes
# through crash recovery, the worker comes back, looks up what it may have
# sent, and every request ends done: 0 lost, 0 duplicated.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

start_simulator();
my $node = maestro_node('killworker', conf => <<'EOC');
maestro.rate_limit = 0
maestro.max_concurrency = 16
maestro.retry_delay = 100ms
EOC
$node->safe_psql('postgres',
	"ALTER SERVER sim OPTIONS (SET base_url '@{[ sim_url() ]}/_fault/key=slow;latency_ms=200;method=POST')");

my $seq0 = sim_max_seq();
my $off = log_offset($node);
my $t0 = time;
enqueue_batch($node, 'kill', 500);

ok(wait_for($node, "SELECT count(*) >= 100 FROM maestro_trigger_requests WHERE state = 'done'", 't', 180),
	'100 of 500 requests are done');
my ($pid) = worker_pids($node);
ok(defined $pid, 'the worker is running');
my $before = scalar_sql($node,
	"SELECT count(*) FILTER (WHERE state = 'done') || ' done, ' || count(*) FILTER (WHERE state = 'sending') || ' sending' FROM maestro_trigger_requests");
is(kill('KILL', $pid), 1, "kill -9 the worker (pid $pid)");
note sprintf('killed the worker %.2f s after the enqueue, with %s', time - $t0, $before);

ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state IN ('done', 'failed')", '500', 120),
	'all 500 requests settle after the crash');
note sprintf('500 requests settled %.2f s after the enqueue', time - $t0);

my $log = log_since($node, $off);
like($log, qr/background worker "maestro worker" \(PID $pid\) was terminated by signal 9/,
	'the postmaster saw the worker die');
like($log, qr/all server processes terminated; reinitializing/, 'and went through crash recovery');
like($log, qr/maestro worker found \d+ requests that may have been sent before a stop/,
	'the new worker took over the requests the dead one was sending');
my ($recovered) = $log =~ /maestro worker found (\d+) requests/;
note "requests in 'sending' at the crash: " . ($recovered // '?');

my $found = check_exactly_once($node, 'kill', 500, $seq0);
cmp_ok($found, '>=', 1, 'some requests were settled by looking them up after the crash (the kill hit mid-send)');

my @restarts = $log =~ /(background worker "maestro worker" \(PID \d+\) exited with exit code [1-9])/g;
is(scalar(@restarts), 0, 'no maestro worker exited with an error after the restart') or diag join("\n", @restarts);

$node->stop;
done_testing();
