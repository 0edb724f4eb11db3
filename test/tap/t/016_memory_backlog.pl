# Defect 4 (issue 9): the worker's memory grew without bound under a steady
# paced backlog, ~2.5 KB per request sent (rate_limit 50, 20,000 queued:
# RssAnon 4.5 MB -> 32.6 MB in 240 s): the claimed requests' memory was
# freed only when the ready list emptied, which a backlog never lets happen.
# Here: rate_limit 100 against the Node bench endpoint for 60 s; after
# 30 s of warming up, RssAnon must stay flat (< 1 MB more) while thousands more are sent.
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

plan skip_all => 'node (Node.js) is not installed'
  unless system('sh', '-c', 'command -v node >/dev/null') == 0;

my $script = -f 'trigger_server.js' ? 'trigger_server.js' : "$ENV{MAESTRO_TOP}/test/bench/trigger_server.js";
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $bench = IPC::Run::start([ 'node', $script, $port, 20 ], '<', '/dev/null',
	'>', "$PostgreSQL::Test::Utils::log_path/bench_$$.out", '2>', "$PostgreSQL::Test::Utils::log_path/bench_$$.err");
END { eval { $bench->kill_kill(grace => 2) if $bench }; }
my $http = HTTP::Tiny->new(timeout => 10);
sub bench_stats
{
	my $r = $http->get("http://127.0.0.1:$port/__bench/stats");
	return $r->{success} ? decode_json($r->{content}) : undef;
}
my $deadline = time + 30;
sleep 0.05 until bench_stats() || time > $deadline;
ok(bench_stats(), 'the bench endpoint is up');

start_simulator();    # only for the library's server set-up helpers
my $node = maestro_node('memory', no_setup => 1, conf => <<'EOC');
maestro.rate_limit = 100
maestro.max_concurrency = 16
EOC
$node->safe_psql('postgres', qq{
CREATE EXTENSION maestro;
CREATE SERVER bench FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url 'http://127.0.0.1:$port', account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER bench OPTIONS (access_token 'bench-token');
});
enqueue_batch($node, 'backlog', 7000);
ok(wait_for($node, "SELECT count(*) > 0 FROM maestro_trigger_requests WHERE state = 'done'", 't', 30),
	'the worker is sending the backlog');
my ($pid) = worker_pids($node);

# RssAnon and requests sent, once a second for 60 s
my @samples;
my $t0 = time;
while (time < $t0 + 60)
{
	my $due = $t0 + @samples;
	sleep 0.05 while time < $due;
	push @samples, { t => time - $t0, rss => rss_anon_kb($pid), sent => bench_stats()->{requests} };
}
my ($pid1) = worker_pids($node);
is($pid1 // 0, $pid, 'the same worker ran throughout');

my ($mid) = grep { $_->{t} >= 30 } @samples;
my $end = $samples[-1];
my $sent = $end->{sent} - $mid->{sent};
my $growth = $end->{rss} - $mid->{rss};
note sprintf('RssAnon of the worker: %d kB at 0 s, %d kB at %.0f s, %d kB at %.0f s; %d requests sent in the second half (%.1f/s), %.2f kB per request',
	$samples[0]{rss}, $mid->{rss}, $mid->{t}, $end->{rss}, $end->{t}, $sent,
	$sent / ($end->{t} - $mid->{t}), $sent ? $growth / $sent : 0);
cmp_ok($sent, '>=', 1000, 'at least 1,000 requests were sent in the second half (a real backlog)');
# flat: allocator noise only, far below 1,000+ requests times 2.5 kB
cmp_ok($growth, '<', 1024, 'RssAnon grew by less than 1 MB over the second half (flat)');
is(bench_stats()->{duplicates}, 0, 'no request was sent twice');

$node->stop;
done_testing();
