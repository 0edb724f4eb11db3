# Defect 4 (issue 9): the worker's memory grew without bound under a steady
# paced backlog, ~2.5 KB per request sent (rate_limit 50, 20,000 queued:
# RssAnon 4.5 MB -> 32.6 MB in 240 s): the claimed requests' memory was
# freed only when the ready list emptied, which a backlog never lets happen.
# Here: rate_limit 100 for 60 s against the Node bench endpoint (the
# simulator where node is not installed); RssAnon is sampled once a second
# and must stay flat (< 2 MB over the whole window, < 1 MB over the second
# half, after warming up) while thousands of requests are sent.
# (Merged from two helpers' tests of the same defect, 016 and 031.)
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use HTTP::Tiny;
use JSON::PP;
use MaestroTAP;

my $have_node = system('sh', '-c', 'command -v node >/dev/null') == 0;
my ($bench, $port);
my $http = HTTP::Tiny->new(timeout => 10);
sub bench_stats
{
	my $r = $http->get("http://127.0.0.1:$port/__bench/stats");
	return $r->{success} ? decode_json($r->{content}) : undef;
}
if ($have_node)
{
	my $script = -f 'trigger_server.js' ? 'trigger_server.js' : "$ENV{MAESTRO_TOP}/test/bench/trigger_server.js";
	$port = PostgreSQL::Test::Cluster::get_free_port();
	$bench = IPC::Run::start([ 'node', $script, $port, 20 ], '<', '/dev/null',
		'>', "$PostgreSQL::Test::Utils::log_path/bench_$$.out", '2>', "$PostgreSQL::Test::Utils::log_path/bench_$$.err");
	my $deadline = time + 30;
	sleep 0.05 until bench_stats() || time > $deadline;
	ok(bench_stats(), 'the bench endpoint is up');
}
else
{
	note 'node is not installed: the simulator stands in for the bench endpoint';
}
END { eval { $bench->kill_kill(grace => 2) if $bench }; }

start_simulator();
my $node = maestro_node('memory', no_setup => 1, conf => <<'EOC');
maestro.rate_limit = 100
maestro.max_concurrency = 16
EOC
my $base = $have_node ? "http://127.0.0.1:$port" : sim_url();
$node->safe_psql('postgres', qq{
CREATE EXTENSION maestro;
CREATE SERVER bench FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$base', account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER bench OPTIONS (access_token 'bench-token');
});
enqueue_batch($node, 'backlog', 8000, 'bench');
ok(wait_for($node, "SELECT count(*) >= 500 FROM maestro_trigger_requests WHERE state = 'done'", 't', 60),
	'the worker is sending the backlog');
my ($pid) = worker_pids($node);

# RssAnon and requests done, once a second for 60 s
my $done = sub { scalar_sql($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state = 'done'") };
my @samples;
my $t0 = time;
while (time < $t0 + 60)
{
	my $due = $t0 + @samples;
	sleep 0.05 while time < $due;
	push @samples, { t => time - $t0, rss => rss_anon_kb($pid) // -1, done => $done->() };
}
my ($pid1) = worker_pids($node);
is($pid1 // 0, $pid, 'the same worker ran throughout');

my $first = $samples[0];
my ($mid) = grep { $_->{t} >= 30 } @samples;
my $end = $samples[-1];
note sprintf('RssAnon of the worker: %s kB (one sample every 5 s)',
	join(' ', map { $samples[$_]{rss} } grep { $_ % 5 == 0 } 0 .. $#samples));
my $sent = $end->{done} - $first->{done};
my $growth = $end->{rss} - $first->{rss};
note sprintf('whole window: %d requests sent in %.0f s, RssAnon %+d kB (%.2f kB per request)',
	$sent, $end->{t} - $first->{t}, $growth, $sent ? $growth / $sent : 0);
cmp_ok($sent, '>=', 1000, 'over a thousand requests were sent while measuring');
cmp_ok($growth, '<', 2048, 'RssAnon grew by less than 2 MB over the whole window');

my $sent2 = $end->{done} - $mid->{done};
my $growth2 = $end->{rss} - $mid->{rss};
note sprintf('second half: %d requests sent (%.1f/s), RssAnon %+d kB (%.2f kB per request)',
	$sent2, $sent2 / ($end->{t} - $mid->{t}), $growth2, $sent2 ? $growth2 / $sent2 : 0);
cmp_ok($sent2, '>=', 1000, 'at least 1,000 requests were sent in the second half (a real backlog)');
# flat: allocator noise only, far below 1,000+ requests times 2.5 kB
cmp_ok($growth2, '<', 1024, 'RssAnon grew by less than 1 MB over the second half (flat)');
SKIP:
{
	skip 'the bench endpoint counts duplicates; node is not installed', 1 unless $have_node;
	is(bench_stats()->{duplicates}, 0, 'no request was sent twice');
}

$node->stop('fast');
done_testing();
