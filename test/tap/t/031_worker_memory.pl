# The worker's memory stays flat under a steady paced backlog (defect 4):
# RssAnon of the worker is sampled while it sends a backlog at
# maestro.rate_limit, and must not grow with the number of requests sent.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

start_simulator();
my $node = maestro_node('memory', conf => "maestro.rate_limit = 100\nmaestro.max_concurrency = 16\n");

sub rss_anon_kb
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/status" or return undef;
	while (<$fh>)
	{
		return $1 if /^RssAnon:\s+(\d+)/;
	}
	return undef;
}

enqueue_batch($node, 'mem', 10000);
ok(wait_for($node, "SELECT count(*) >= 500 FROM maestro_trigger_requests WHERE state = 'done'", 't', 60),
	'the worker sends the backlog');
my ($pid) = worker_pids($node);
my $done0 = scalar_sql($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state = 'done'");
my $rss0 = rss_anon_kb($pid);
my @samples = ($rss0);
my $t0 = time;
while (time - $t0 < 60)
{
	sleep 5;
	push @samples, rss_anon_kb($pid) // last;
}
my $done1 = scalar_sql($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state = 'done'");
my $sent = $done1 - $done0;
my $growth = $samples[-1] - $rss0;
note sprintf('RssAnon over %.0f s (%d requests sent): %s kB; growth %d kB (%.2f kB per request)',
	time - $t0, $sent, join(' ', @samples), $growth, $sent ? $growth / $sent : 0);
cmp_ok($sent, '>=', 1000, 'over a thousand requests were sent while measuring');
cmp_ok($growth, '<', 2048, 'RssAnon grew by less than 2 MB');

$node->stop('fast');
done_testing();
