# maestro.connect_timeout and maestro.request_timeout, end to end: a call
# whose connection never completes (a TLS handshake nobody answers) ends
# after the connect timeout, not the request timeout; a call whose request
# went out but is never answered ends after the request timeout; an answer
# slower than the connect timeout but within the request timeout arrives.
# Each ends with 08006 and says which limit it met, and the session's next
# call works.
use strict;
use warnings;
use IO::Socket::INET;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MaestroTAP;

start_simulator();
my $node = maestro_node('timeouts');

# a port that completes TCP handshakes (the kernel's backlog) and never
# reads, writes or accepts
my $silent = IO::Socket::INET->new(Listen => 16, LocalAddr => '127.0.0.1', LocalPort => 0,
	Proto => 'tcp', ReuseAddr => 1) or die "listen: $!";
my $silent_port = $silent->sockport;
$node->safe_psql('postgres', qq{
CREATE SERVER silent_tls FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url 'https://127.0.0.1:$silent_port', account_id '$MaestroTAP::ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER silent_tls OPTIONS (access_token 'sim-token');
CREATE SERVER silent_http FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url 'http://127.0.0.1:$silent_port', account_id '$MaestroTAP::ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER silent_http OPTIONS (access_token 'sim-token');
});
add_server($node, 'slow', '/_fault/latency_ms=1500');

# the statement's error and its elapsed milliseconds, in one session that
# then makes a call to the simulator
sub timed
{
	my ($server, $call) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', qq{
\\set VERBOSITY verbose
SET maestro.connect_timeout = 1000;
SET maestro.request_timeout = 3000;
SET maestro.max_retries = 0;
SET maestro.server = '$server';
SELECT set_config('t.start', clock_timestamp()::text, false);
$call;
SELECT 'elapsed=' || round(extract(epoch FROM clock_timestamp() - current_setting('t.start')::timestamptz) * 1000);
SET maestro.server = 'sim';
SELECT 'next=' || count(*) FROM maestro_workflows();
}, on_error_stop => 0);
	my ($elapsed) = $out =~ /elapsed=(\d+)/;
	my ($next) = $out =~ /next=(\d+)/;
	return ($err, $elapsed // -1, $next // '', $out);
}

my ($err, $ms, $next) = timed('silent_tls', 'SELECT count(*) FROM maestro_workflows()');
like($err, qr/ERROR:  08006: Maestro request timed out/, 'a TLS handshake nobody answers times out');
# libcurl's words for a handshake that timed out, or maestro's
like($err, qr/DETAIL:  GET \S+: (?:Connection timed out after \d+ milliseconds|SSL connection timeout)/,
	'... as a connection that did not complete');
ok($ms >= 950 && $ms < 2900, "... after maestro.connect_timeout, not maestro.request_timeout ($ms ms)");
is($next, '3', '... and the session\'s next call works');

($err, $ms, $next) = timed('silent_http', "SELECT maestro_pause('$MaestroTAP::WF1')");
like($err, qr/ERROR:  08006: Maestro request timed out/, 'a request that is never answered times out');
like($err, qr/Operation timed out after \d+ milliseconds with 0 bytes received/,
	'... as a request that was sent');
ok($ms >= 2950 && $ms < 9000, "... after maestro.request_timeout ($ms ms)");
is($next, '3', '... and the session\'s next call works');

my $out;
($err, $ms, $next, $out) = timed('slow', 'SELECT count(*) FROM maestro_workflows()');
unlike($err, qr/ERROR/, 'an answer slower than the connect timeout arrives')
  or diag $err;
ok($ms >= 1450 && $ms < 2950, "... after the simulator's latency ($ms ms)");
is($next, '3', '... and the next call works');

close $silent;
$node->stop;
done_testing();
