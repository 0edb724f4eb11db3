# DocuSign's hourly quota, one rule for every path: with maestro preloaded,
# an answer saying X-RateLimit-Remaining: 0 seen by a backend holds the
# worker's sends until X-RateLimit-Reset, and one seen by the worker makes
# backends' calls fail at once with 53400, unsent. maestro_rate_limits shows
# the last values in every session.
use strict;
use warnings;
use Time::HiRes qw(time sleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MaestroTAP;

start_simulator();
my $node = maestro_node('rates', conf => "maestro.rate_limit = 0\nmaestro.retry_delay = 100ms\n");

sub call
{
	my ($sql) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	return $rc == 0 ? $out : $err;
}
sub api_requests { return sim_get('/__sim/count?path_contains=/v1/'); }
sub post_time
{
	my ($label) = @_;
	my ($post) = grep { ($_->{instance_name} // '') =~ /^\Q$label\E \[mq / && $_->{status} == 201 }
	  @{ sim_log(method => 'POST') };
	return $post ? $post->{time} : undef;
}

# 1. a backend spends the last call of the hour; the reset is 10 s ahead
my $reset = int(time) + 10;
sim_post('/__sim/ratelimit', { remaining => 1, reset => $reset, burst_limit => 200 });
is(call('SELECT count(*) FROM maestro_workflows()'), '3', 'a backend makes the last call of the hour');
is(call(q{SELECT "limit", remaining, extract(epoch FROM reset_at)::bigint, burst_limit, burst_remaining
          FROM maestro_rate_limits WHERE server = 'sim'}),
	"3000|0|$reset|200|199", 'another session sees what that answer said (shared memory)');
my $before = api_requests();
my $err = call('SELECT count(*) FROM maestro_workflows()');
like($err, qr/ERROR:  53400: the hourly API quota of maestro server "sim" is used up/,
	'another backend\'s call fails at once with 53400');
is(api_requests(), $before, '... and is not sent');

$node->safe_psql('postgres', qq{
SELECT maestro_trigger_async('$WF1', '{"Name": "H", "Email": "h\@example.com"}', 'held 1');});
ok(wait_for($node, "SELECT state FROM maestro_trigger_requests WHERE instance_name LIKE 'held 1 %'", 'done', 90),
	'the worker sends a request queued while the quota was spent ...');
my $t = post_time('held 1');
ok(defined $t && $t >= $reset - 0.01, '... only once the quota was renewed')
  or diag sprintf('POST at %s, reset at %d', $t // 'never', $reset);

# 2. the worker spends the last call; the backends then hold back
$reset = int(time) + 10;
sim_post('/__sim/ratelimit', { remaining => 1, reset => $reset, burst_limit => 50 });
$node->safe_psql('postgres', qq{
SELECT maestro_trigger_async('$WF1', '{"Name": "W", "Email": "w\@example.com"}', 'worker 1');});
ok(wait_for($node, "SELECT state FROM maestro_trigger_requests WHERE instance_name LIKE 'worker 1 %'", 'done', 60),
	'the worker makes the last call of the hour');
is(call(q{SELECT remaining, extract(epoch FROM reset_at)::bigint, burst_remaining FROM maestro_rate_limits WHERE server = 'sim'}),
	"0|$reset|49", 'a backend sees what the worker\'s answer said');
$before = api_requests();
$err = call("SELECT * FROM maestro_instances('$WF1')");
my $renewed = $reset;
like($err, qr/ERROR:  53400: .*\n.*\nHINT:  The quota is renewed at /, 'a backend\'s call fails at once with 53400 ...');
is(api_requests(), $before, '... and is not sent');
$node->safe_psql('postgres', qq{
SELECT maestro_trigger_async('$WF1', '{"Name": "W", "Email": "w2\@example.com"}', 'worker 2');});
ok(wait_for($node, "SELECT state FROM maestro_trigger_requests WHERE instance_name LIKE 'worker 2 %'", 'done', 90),
	'the worker sends its next request ...');
$t = post_time('worker 2');
ok(defined $t && $t >= $reset - 0.01, '... only once the quota was renewed')
  or diag sprintf('POST at %s, reset at %d', $t // 'never', $reset);
is(call('SELECT count(*) FROM maestro_workflows()'), '3', 'after the reset, backends call again');

$node->stop;
done_testing();
