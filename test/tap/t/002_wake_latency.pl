# The worker is woken by the commit itself (no polling): the time from
# commit to the POST reaching Maestro is small, whether the worker is already
# running (woken through its latch) or has to be started. An idle worker
# exits after about 2 s and nothing starts it again until the next commit.
# The bounds are generous, for a loaded machine; the latencies themselves
# are measured by test/bench/trigger_queue.sh.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

start_simulator();
my $node = maestro_node('latency', conf => "maestro.rate_limit = 0\n");
$node->safe_psql('postgres',
	'CREATE TABLE lat (id bigint PRIMARY KEY, cold boolean, t_commit float8)');

# One enqueue per transaction; t_commit is the clock just before COMMIT,
# so every figure below over-states the latency by the commit's own time.
sub one_request
{
	my ($cold, $n) = @_;
	my $sql = '';
	for (1 .. $n)
	{
		$sql .= qq{
BEGIN;
INSERT INTO lat SELECT maestro_trigger_async('$WF1', '{"Name": "L", "Email": "l\@example.com"}', 'latency'),
                       $cold, extract(epoch FROM clock_timestamp());
COMMIT;
SELECT pg_sleep(0.1);
};
	}
	$node->safe_psql('postgres', $sql);
}

# warm up: the first worker start loads libcurl etc.
one_request('true', 1);
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state <> 'done'", '0'),
	'first request done');

# 20 commits, 100 ms apart: the worker stays up between them
one_request('false', 20);
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state <> 'done'", '0'),
	'the 20 requests are done');

# idle: the worker exits by itself
my $gone = wait_for_worker_exit($node, 60);
ok(defined $gone, 'the worker exits once the queue is idle');
my $last_done = scalar_sql($node,
	'SELECT extract(epoch FROM clock_timestamp() - max(done_at)) FROM maestro_trigger_requests');
note sprintf('worker gone %.2f s after the last request was done', $last_done);
cmp_ok($last_done, '<', 15, 'the worker exits within seconds of idleness (~2 s; not lingering)');

# no polling: nothing runs and nothing is requested while the queue is idle
my $seq = sim_max_seq();
my $t0 = time;
my $seen = 0;
while (time - $t0 < 3)
{
	$seen++ if worker_pids($node);
	sleep 0.1;
}
is($seen, 0, 'with an idle queue for 3 s no maestro worker runs');
is(scalar(grep { $_->{seq} > $seq } @{ sim_log() }), 0, 'and the simulator hears nothing');

# a cold start: the commit has to start a worker
one_request('true', 5);
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state <> 'done'", '0'),
	'requests sent after a cold start are done');

my %arrived;
for my $e (@{ sim_log(method => 'POST') })
{
	$arrived{ $1 } = $e->{time} if ($e->{instance_name} // '') =~ /\[mq (\d+)-/;
}
my @rows = map { [ split /\|/ ] } split /\n/, scalar_sql($node, q{
SELECT r.id, l.cold, l.t_commit, extract(epoch FROM r.sent_at)
FROM lat l JOIN maestro_trigger_requests r USING (id) ORDER BY r.id});
my (@warm_sim, @warm_sent, @cold_sim);
for my $r (@rows)
{
	my ($id, $cold, $t_commit, $sent_at) = @$r;
	next unless defined $arrived{$id};
	my $ms_sim = ($arrived{$id} - $t_commit) * 1000;
	my $ms_sent = ($sent_at - $t_commit) * 1000;
	if ($cold eq 't') { push @cold_sim, $ms_sim; }
	else { push @warm_sim, $ms_sim; push @warm_sent, $ms_sent; }
}
is(scalar(@warm_sim), 20, 'all 20 warm requests reached the simulator');
is(scalar(@cold_sim), 6, 'the warm-up and the 5 requests after the cold start reached the simulator');
# the first request of the cold batch is the cold one; drop the warm-up
my $cold_first = $cold_sim[1];
my $med = median(@warm_sim);
note sprintf('commit -> simulator receive, worker running (ms): median %.1f, p90 %.1f, max %.1f, min %.1f',
	$med, percentile(0.9, @warm_sim), percentile(1, @warm_sim), percentile(0, @warm_sim));
note sprintf('commit -> sent_at (claimed), worker running (ms): median %.1f, max %.1f',
	median(@warm_sent), percentile(1, @warm_sent));
note sprintf('commit -> simulator receive, worker started by the commit (ms): %.1f (warm-up start %.1f)',
	$cold_first, $cold_sim[0]);
cmp_ok($med, '<', 500, 'median commit-to-send latency with the worker running is < 500 ms');
cmp_ok($cold_first // 1e9, '<', 5000, 'commit-to-send latency when the commit starts the worker is < 5 s');

$node->stop;
done_testing();
