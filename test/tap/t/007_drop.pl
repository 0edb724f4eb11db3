# DROP EXTENSION and DROP DATABASE while the worker runs: both succeed
# promptly, the worker goes away without a crash loop, and the queue works
# again once recreated. An idle queue holds no connection, so a plain DROP
# DATABASE succeeds.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

start_simulator();
# 40 requests at 2 s each, 4 at a time: a batch takes 20 s, so a DROP that
# waited for the worker to finish would show
my $slow = sim_url() . '/_fault/key=slow;latency_ms=2000;method=POST';

# Lines that tell of a worker failing or being restarted.
sub trouble
{
	my ($log) = @_;
	return grep {
		/background worker "maestro (worker|launcher)" \(PID \d+\) (exited with exit code [1-9]|was terminated by signal)/
		  || /\b(FATAL|PANIC):/
	} split /\n/, $log;
}

# --- DROP EXTENSION -----------------------------------------------------------

my $node = maestro_node('dropext', conf => "maestro.rate_limit = 0\nmaestro.max_concurrency = 4\n");
$node->safe_psql('postgres', "ALTER SERVER sim OPTIONS (SET base_url '$slow')");
enqueue_batch($node, 'dropext', 40);
ok(wait_for($node, "SELECT count(*) > 0 FROM maestro_trigger_requests WHERE state = 'done'", 't', 180),
	'requests are being sent');
ok(scalar(worker_pids($node)), 'the worker runs');

my $off = log_offset($node);
my $t = time;
my ($rc, $out, $err) = $node->psql('postgres', 'DROP EXTENSION maestro CASCADE', timeout => 180);
my $took = time - $t;
is($rc, 0, 'DROP EXTENSION maestro CASCADE succeeds while requests are in flight') or diag $err;
note sprintf('DROP EXTENSION took %.2f s', $took);
cmp_ok($took, '<', 10, 'within a few seconds (not after the batch)');
my $gone = wait_for_worker_exit($node, 60);
ok(defined $gone, 'the worker exits');
note sprintf('worker gone %.2f s after the DROP', $took + ($gone // 60));
# watch for 8 s: long enough for a restart loop (bgw_restart_time 5 s) to
# show (an observation window, not a wait for anything)
sleep 8;
ok(!worker_pids($node), 'no worker 8 s later');
my @trouble = trouble(log_since($node, $off));
is(scalar(@trouble), 0, 'no worker failed, crashed or was restarted after the DROP') or diag join("\n", @trouble);

my $seq = sim_max_seq();
maestro_setup($node, 'postgres');
my $id = scalar_sql($node,
	"SELECT maestro_trigger_async('$WF1', '{\"Name\": \"A\", \"Email\": \"a\@example.com\"}', 'after recreate')");
ok(wait_for($node, "SELECT state FROM maestro_trigger_requests WHERE id = $id", 'done', 180),
	'after CREATE EXTENSION again a new request is sent and done');
is(scalar(grep { $_->{seq} > $seq && ($_->{instance_name} // '') =~ /^after recreate / && $_->{status} == 201 } @{ sim_log(method => 'POST') }),
	1, '... once');

# dropped and created again while the worker lingers after a request
$id = scalar_sql($node,
	"SELECT maestro_trigger_async('$WF1', '{\"Name\": \"B\", \"Email\": \"b\@example.com\"}', 'before quick recreate')");
ok(wait_for($node, "SELECT state FROM maestro_trigger_requests WHERE id = $id", 'done', 180), 'a request is done');
my ($lingering) = worker_pids($node);
ok(defined $lingering, 'the worker lingers');
$off = log_offset($node);
$node->safe_psql('postgres', 'DROP EXTENSION maestro CASCADE');
maestro_setup($node, 'postgres');
$id = scalar_sql($node,
	"SELECT maestro_trigger_async('$WF1', '{\"Name\": \"C\", \"Email\": \"c\@example.com\"}', 'after quick recreate')");
ok(wait_for($node, "SELECT state FROM maestro_trigger_requests WHERE id = $id", 'done', 180),
	'a request queued right after DROP and CREATE EXTENSION is done');
note 'the same worker ' . ((grep { $_ == $lingering } worker_pids($node)) ? 'still runs' : 'is gone');
@trouble = trouble(log_since($node, $off));
is(scalar(@trouble), 0, '... with no worker failing') or diag join("\n", @trouble);
$node->stop;

# --- DROP DATABASE ------------------------------------------------------------

my $app = maestro_node('dropdb', database => 'app', no_setup => 1,
	conf => "maestro.rate_limit = 0\nmaestro.max_concurrency = 4\n");
ok(wait_for_log($app, qr/maestro.database_name "app" does not exist; no trigger queue is served/),
	'the launcher notes that the served database does not exist yet');
$app->safe_psql('postgres', 'CREATE DATABASE app');
maestro_setup($app, 'app', $slow);
enqueue_app(40, 'dropdb');
ok(wait_for($app, "SELECT count(*) > 0 FROM maestro_trigger_requests WHERE state = 'done'", 't', 180, 'app'),
	'requests are being sent from database app');
ok(scalar(worker_pids($app)), 'the worker runs');

$off = log_offset($app);
$t = time;
($rc, $out, $err) = $app->psql('postgres', 'DROP DATABASE app WITH (FORCE)', timeout => 180);
$took = time - $t;
is($rc, 0, 'DROP DATABASE app WITH (FORCE) succeeds while the worker runs') or diag $err;
note sprintf('DROP DATABASE ... WITH (FORCE) took %.2f s', $took);
ok(defined wait_for_worker_exit($app, 60), 'the worker is gone');
sleep 8;    # the observation window, as above
ok(!worker_pids($app), 'no worker 8 s later');
my $log = log_since($app, $off);
@trouble = trouble($log);
is(scalar(@trouble), 0, 'no maestro FATAL, crash or restart loop after the drop') or diag join("\n", @trouble);
my $fatals = () = $log =~ /FATAL:.*database "app" does not exist/g;
is($fatals, 0, 'nothing tried to connect to the dropped database');

# idle queue: a plain DROP DATABASE
$app->safe_psql('postgres', 'CREATE DATABASE app');
maestro_setup($app, 'app');
$seq = sim_max_seq();
enqueue_app(3, 'idle');
ok(wait_for($app, "SELECT count(*) FROM maestro_trigger_requests WHERE state = 'done'", '3', 180, 'app'),
	'a recreated database app is served again');
$gone = wait_for_worker_exit($app, 60);
ok(defined $gone, 'the worker exits once the queue is idle');
$off = log_offset($app);
($rc, $out, $err) = $app->psql('postgres', 'DROP DATABASE app', timeout => 180);
is($rc, 0, 'with the queue idle a plain DROP DATABASE app succeeds') or diag $err;
sleep 6;    # the observation window, as above
@trouble = trouble(log_since($app, $off));
is(scalar(@trouble), 0, 'and nothing fails afterwards') or diag join("\n", @trouble);
$app->stop;

sub enqueue_app
{
	my ($n, $label) = @_;
	$app->safe_psql('app', qq{
SELECT count(maestro_trigger_async('$WF1', '{"Name": "D", "Email": "d\@example.com"}', '$label ' || g))
FROM generate_series(1, $n) g});
}

done_testing();
