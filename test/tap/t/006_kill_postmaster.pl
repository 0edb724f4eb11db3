# kill -9 of the postmaster in the middle of a batch. First as a real crash
# leaves things (the postmaster and all its children die at once), then the
# postmaster alone (its children are orphaned and must exit by themselves).
# After a restart the launcher starts the worker, which looks up what may
# have been sent, and every request ends done: 0 lost, 0 duplicated.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

start_simulator();
my $node = maestro_node('killpm', conf => <<'EOC');
maestro.rate_limit = 0
maestro.max_concurrency = 16
maestro.retry_delay = 100ms
EOC
$node->safe_psql('postgres',
	"ALTER SERVER sim OPTIONS (SET base_url '@{[ sim_url() ]}/_fault/key=slow;latency_ms=200;method=POST')");

sub children_of
{
	my ($ppid) = @_;
	my @kids;
	for my $dir (glob '/proc/[0-9]*')
	{
		open my $fh, '<', "$dir/stat" or next;
		my $stat = <$fh> // '';
		close $fh;
		$stat =~ s/^.*\) //s;    # after "pid (comm) "
		my (undef, $parent) = split ' ', $stat;
		push @kids, ($dir =~ m{(\d+)$})[0] if defined $parent && $parent == $ppid;
	}
	return @kids;
}

# Running: it exists and is not a zombie (an orphan that exited waits for
# init to reap it; a new postmaster can start only once its predecessor is
# reaped, so before a restart wait_gone waits for that too).
sub running
{
	my ($pid) = @_;
	return 0 unless kill 0, $pid;
	open my $fh, '<', "/proc/$pid/stat" or return 0;
	my $stat = <$fh> // '';
	return $stat !~ /\) Z /;
}

sub wait_gone
{
	my ($timeout, $reaped, @pids) = @_;
	my $start = time;
	while (time - $start < $timeout)
	{
		return time - $start unless grep { $reaped ? kill(0, $_) : running($_) } @pids;
		sleep 0.02;
	}
	return undef;
}

# Trigger POSTs that arrived in [$from, $to). Judged only once the requests
# queued after the kill are settled: by then the simulator has logged every
# request that arrived before $to (it logs a request when it answers).
sub posts_between
{
	my ($from, $to) = @_;
	return scalar grep { $_->{time} >= $from && $_->{time} < $to && $_->{path} =~ m{/actions/trigger$} }
	  @{ sim_log(method => 'POST') };
}

# --- the postmaster and all its children at once --------------------------

my $seq0 = sim_max_seq();
my $t0 = time;
enqueue_batch($node, 'crash', 500);
ok(wait_for($node, "SELECT count(*) >= 100 FROM maestro_trigger_requests WHERE state = 'done'", 't', 180),
	'100 of 500 requests are done');
my ($worker) = worker_pids($node);
ok(defined $worker, 'the worker is running');
my $pm = $node->{_pid};
my @kids = children_of($pm);
ok(scalar(grep { $_ == ($worker // -1) } @kids), 'the worker is a child of the postmaster');
my $before = scalar_sql($node,
	"SELECT count(*) FILTER (WHERE state = 'done') || ' done, ' || count(*) FILTER (WHERE state = 'sending') || ' sending' FROM maestro_trigger_requests");
my $t_kill = time;
kill 'KILL', $pm, @kids;
$node->kill9;    # forgets the pid
note sprintf('killed the postmaster and %d children %.2f s after the enqueue, with %s', scalar(@kids), $t_kill - $t0, $before);
ok(defined wait_gone(60, 1, $pm, @kids), 'all processes of the cluster are gone');
# the cluster stays down for 2 s (an outage to watch, not a wait for anything)
sleep 2;

my $off = log_offset($node);
my $t_start = time;
$node->start;
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state IN ('done', 'failed')", '500', 300),
	'after a restart all 500 requests settle');
# a POST sent just before the kill may be logged as arriving a little later
# on a busy machine: 0.5 s of grace
is(posts_between($t_kill + 0.5, $t_start), 0, 'nothing was sent while the cluster was down');
note sprintf('all settled %.2f s after the enqueue', time - $t0);
my $log = log_since($node, $off);
like($log, qr/maestro worker found \d+ requests that may have been sent before a stop/,
	'the worker started at server start took over what was being sent');
my $found = check_exactly_once($node, 'crash', 500, $seq0);
cmp_ok($found, '>=', 1, 'some requests were settled by a look-up (the crash hit mid-send)');

# --- the postmaster alone: its orphaned worker must stop ---------------------

ok(defined wait_for_worker_exit($node, 60), 'the worker is idle and gone before the next batch');
$seq0 = sim_max_seq();
$t0 = time;
enqueue_batch($node, 'orphan', 300);
ok(wait_for($node, "SELECT count(*) >= 50 FROM maestro_trigger_requests WHERE state = 'done' AND instance_name LIKE 'orphan %'", 't', 180),
	'50 of 300 requests are done');
($worker) = worker_pids($node);
ok(defined $worker, 'the worker is running');
$pm = $node->{_pid};
@kids = children_of($pm);
$t_kill = time;
$node->kill9;
my $exit = wait_gone(60, 0, $worker);
note defined $exit
  ? sprintf('the orphaned worker exited %.2f s after the postmaster died', $exit)
  : 'the orphaned worker still runs 60 s after the postmaster died';
ok(defined $exit && $exit < 10, 'the orphaned worker exits within seconds of the postmaster\'s death');
kill 'KILL', grep { running($_) } @kids;
ok(defined wait_gone(60, 1, $pm, @kids), 'all orphans are gone');
# down for 2 s more, to see that nothing is sent
sleep 2;

$t_start = time;
$node->start;
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state IN ('done', 'failed') AND instance_name LIKE 'orphan %'", '300', 300),
	'after a restart all 300 requests settle');
my $late = posts_between($t_kill + 0.5, $t_start);
note "trigger POSTs that arrived between 0.5 s after the postmaster died and the restart: $late";
is($late, 0, 'the orphaned worker started no new trigger after the postmaster died');
check_exactly_once($node, 'orphan', 300, $seq0);

$node->stop;
done_testing();
