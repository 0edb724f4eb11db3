# The worker's token fetch (the JWT grant) runs on its multi handle like
# every other call of the worker: while the account server takes its time,
# the worker goes on sending for other servers, asks once per token however
# many requests (and backends) need it, gives the fetch up at once on a
# fast shutdown, and records a refused grant on the queued requests in the
# same words as before. (Before: the fetch was synchronous, and every
# other transfer waited for it, up to maestro.request_timeout.)
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP;
use MaestroTAP;

my ($ik, $user) = ($IK, $JWT_USER);
my $key = start_jwt_simulator();
my $url = sim_url();
# request_timeout is long, so that a hung fetch is never over by a timeout
# (nor taken over) while a test looks at it
my $node = maestro_node('token_async', no_setup => 1, conf => <<'EOC');
maestro.request_timeout = '120s'
maestro.max_attempts = 2
maestro.retry_delay = '200ms'
EOC
$node->safe_psql('postgres', 'CREATE EXTENSION maestro');
add_server($node, 'stat');	# a static token: nothing to fetch

# A server whose token comes from the JWT grant at auth_url.
sub jwt_server
{
	my ($name, $auth_url) = @_;
	$node->safe_psql('postgres', qq{
CREATE SERVER $name FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$url', auth_url '$auth_url', account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER $name
  OPTIONS (integration_key '$ik', user_id '$user', private_key '$key');});
	return;
}

# Queue $n triggers for a server, in one transaction.
sub queue
{
	my ($server, $label, $n) = @_;
	$node->safe_psql('postgres', qq{
SET maestro.server = '$server';
SELECT count(maestro_trigger_async('$WF1',
  jsonb_build_object('Name', '$label ' || g, 'Email', 'x' || g || '\@example.com'), '$label ' || g))
FROM generate_series(1, $n) g;});
	return;
}

sub count_of
{
	my ($label, $state) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE '$label %' AND state = '$state'");
}

sub issued { return sim_json('/__sim/oauth/tokens')->{issued}; }

sub poll
{
	my ($cond, $timeout) = @_;
	my $deadline = time + $timeout;
	while (time < $deadline)
	{
		return 1 if $cond->();
		sleep 0.05;
	}
	return $cond->();
}

# A backend calling the API through a server (its maestro.server).
sub backend_call
{
	my ($name, $server) = @_;
	return start_psql($node, 'SELECT count(*) FROM maestro_workflows()',
		"application_name=$name options='-c maestro.server=$server'");
}

sub waiting_backends
{
	my ($prefix) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE '$prefix%'"
		  . " AND state = 'active' AND wait_event_type = 'Extension'");
}

# ---- 1 and 2: the worker fetches; other sends go on; one token request ----
# The account server takes 40 s over the first token request of jwt1.
jwt_server('jwt1', "$url/_fault/key=tok1;latency_ms=40000;times=1");
queue('jwt1', 'slow', 4);
ok(poll(sub { sim_fault_count('tok1') >= 1 }, 60), 'the worker asked the account server for the token');

# three backends need the same token meanwhile
my @calls = map { backend_call("waiter$_", 'jwt1') } 1 .. 3;
ok(poll(sub { waiting_backends('waiter') eq '3' }, 20),
	'three backends wait for the token the worker is fetching');

my $t0 = time;
queue('stat', 'fast', 4);
ok(poll(sub { count_of('fast', 'done') eq '4' }, 90), 'the requests of the static-token server are done');
my $fast_s = time - $t0;
my $issued = issued();
my $slow_done = count_of('slow', 'done');
note sprintf('the static-token requests took %.2f s; tokens issued by then: %d', $fast_s, $issued);
is($issued, 0, 'they were sent while the token fetch was still under way');
is($slow_done, '0', 'and the requests needing the token were not sent without it');

# the worker uses (almost) no CPU while its fetch is in flight
my ($worker) = worker_pids($node);
my $cpu0 = $worker ? cpu_seconds($worker) : undef;
my $w0 = time;
sleep 0.1 while time < $w0 + 2;
my $cpu1 = $worker ? cpu_seconds($worker) : undef;
# no worker to measure counts as a failure
my $cpu_share = defined $cpu0 && defined $cpu1 ? ($cpu1 - $cpu0) / (time - $w0) : 1;
note sprintf('worker CPU while its fetch is in flight: %.0f%%', 100 * $cpu_share);
is(issued(), 0, 'the fetch was still under way after that window');
cmp_ok($cpu_share, '<', 0.2, 'the worker waits for the fetch without spinning');

ok(poll(sub { count_of('slow', 'done') eq '4' }, 180), 'once the token came, the parked requests were sent');
$_->{h}->finish for @calls;
is(join('', map { ${ $_->{out} } } @calls), "3\n3\n3\n", 'the three backends got their answers with it');
is(sim_fault_count('tok1'), 1, 'the account server was asked once for the worker and the three backends');
is(issued(), 1, 'one token was issued');

# ---- 2b: a backend fetches; the worker parks its requests, sends others ----
jwt_server('jwt2', "$url/_fault/key=tok2;latency_ms=30000;times=1");
my $fetcher = backend_call('fetcher2', 'jwt2');
ok(poll(sub { sim_fault_count('tok2') >= 1 }, 60), 'a backend is fetching the token');
queue('jwt2', 'parked', 3);
ok(poll(sub { count_of('parked', 'sending') eq '3' }, 60), 'the worker claimed the requests needing it');
$t0 = time;
queue('stat', 'beside', 3);
ok(poll(sub { count_of('beside', 'done') eq '3' }, 90), 'requests of another server are done meanwhile');
note sprintf('took %.2f s', time - $t0);
is(issued(), 1, 'while the backend was still fetching');
($worker) = worker_pids($node);
$cpu0 = $worker ? cpu_seconds($worker) : undef;
$w0 = time;
sleep 0.1 while time < $w0 + 2;
$cpu1 = $worker ? cpu_seconds($worker) : undef;
$cpu_share = defined $cpu0 && defined $cpu1 ? ($cpu1 - $cpu0) / (time - $w0) : 1;
note sprintf('worker CPU while another process fetches its token: %.0f%%', 100 * $cpu_share);
cmp_ok($cpu_share, '<', 0.2, 'the worker looks again now and then, without spinning');
ok(poll(sub { count_of('parked', 'done') eq '3' }, 180), 'the worker sent them with the token the backend got');
$fetcher->{h}->finish;
is(${ $fetcher->{out} }, "3\n", 'the backend got its answer');
is(sim_fault_count('tok2'), 1, 'one token request for the backend and the worker');

# ---- 3: the worker stops during its fetch; a waiting backend is not stuck ----
jwt_server('jwt3', "$url/_fault/key=tok3;latency_ms=100000;times=1");
queue('jwt3', 'hung', 1);
ok(poll(sub { sim_fault_count('tok3') >= 1 }, 60), 'the worker is fetching a token that does not come');
my $waiter = backend_call('waiter3', 'jwt3');
ok(poll(sub { waiting_backends('waiter3') eq '1' }, 30), 'a backend waits for that token');
($worker) = worker_pids($node);
$t0 = time;
$node->safe_psql('postgres', "SELECT pg_terminate_backend($worker)");
ok(poll(sub { sim_fault_count('tok3') >= 2 }, 30),
	'once the worker stopped, the waiting backend asked for the token itself');
$waiter->{h}->finish;
my $waited = time - $t0;
note sprintf('the waiting backend had its answer %.2f s after the worker was stopped', $waited);
is(${ $waiter->{out} }, "3\n", 'and got its answer');
cmp_ok($waited, '<', 30, 'long before a takeover of the abandoned fetch (121 s)');
# The request the stopped worker had claimed is looked up by name, then sent,
# by the next one; with a new auth_url (a new token), that look-up waits for
# the token first.
my $seq = sim_max_seq();
$node->safe_psql('postgres',
	"ALTER SERVER jwt3 OPTIONS (SET auth_url '$url/_fault/key=tok3b;latency_ms=2000')");
queue('stat', 'wake', 1);
ok(poll(sub { count_of('hung', 'done') eq '1' }, 180), 'the next worker looked the request up and sent it');
is(sim_fault_count('tok3b'), 1, 'with one token request');
my @gets = grep { $_->{auth} eq 'ok' }
  @{ sim_log(since => $seq, path_contains => "/workflows/$WF1/instances", method => 'GET') };
is(scalar(@gets), 1, 'after one look-up, with the new token');

# ---- 4: a refused grant, a server error, no answer: recorded as before ----
# (times=0: the fault never fires, it only counts the token requests)
my $auth4 = "$url/_fault/key=tok4;times=0";
jwt_server('jwt4', $auth4);
jwt_server('jwt5', "$url/_fault/key=tok5;status=503");
jwt_server('jwt6', 'http://127.0.0.1:9');
sim_post('/__sim/oauth/consent', { user => $user, consented => JSON::PP::false });
queue('jwt4', 'refused', 4);
queue('jwt5', 'unavailable', 1);
queue('jwt6', 'unreachable', 1);
ok(poll(sub { count_of('refused', 'failed') eq '4' && count_of('unavailable', 'failed') eq '1'
			&& count_of('unreachable', 'failed') eq '1' }, 180),
	'the requests failed after their two attempts');
my %error = map { split /\|/, $_, 2 } split /\n/, $node->safe_psql('postgres',
	"SELECT DISTINCT split_part(instance_name, ' ', 1), last_error || '|' || attempts || ' ' || coalesce(http_status, 0)"
	  . " FROM maestro_trigger_requests WHERE state = 'failed'");
my $consent = "could not get an access token: DocuSign user $user has not consented to integration key $ik"
  . " Have the user (or an organization administrator) open $auth4/oauth/auth?response_type=code"
  . "&scope=signature%20aow_manage%20impersonation&client_id=$ik"
  . "&redirect_uri=<a redirect URI registered for the integration key> once and accept. (after 2 attempts)";

is($error{refused}, "$consent|2 0", 'a refused grant: the same error text as before');
# one request per token and round of attempts, not one per request and attempt (8)
note 'token requests for the 4 refused requests of 2 attempts each: ' . sim_fault_count('tok4');
cmp_ok(sim_fault_count('tok4'), '<=', 5, 'the refused requests shared their token requests');
is($error{unavailable}, 'could not get an access token: Maestro server error (after 2 attempts)|2 0',
	'a 503 from the account server: the same error text as before');
is($error{unreachable},
	'could not get an access token: could not complete the Maestro request Check the base_url option of the server and that the host is reachable. (after 2 attempts)|2 0',
	'an unreachable account server: the same error text as before');

# ---- 4b: a stream of requests meets the refused grant ----
# One request a transaction, one after another for about a second: a failed
# fetch holds its token back for a second, so that the requests arriving
# meanwhile wait and share the next fetch rather than ask once each; and
# every attempt they spend is spent on a fetch that failed.
jwt_server('jwt10', "$url/_fault/key=tok10;times=0");
my $stream = 15;
my $stream_t0 = time;
$node->safe_psql('postgres', "SET maestro.server = 'jwt10';
SELECT maestro_trigger_async('$WF1', jsonb_build_object('Name', 'stream $_', 'Email', 'x$_\@example.com'), 'stream $_')")
  for 1 .. $stream;
ok(poll(sub { count_of('stream', 'failed') eq "$stream" }, 180), 'the streamed requests failed after their two attempts');
my $stream_s = time - $stream_t0;
is($node->safe_psql('postgres',
		"SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'stream %'"
		  . " AND attempts = 2 AND last_error LIKE 'could not get an access token: DocuSign user % has not consented%'"),
	"$stream", 'each with the refused grant\'s error');
note sprintf('token requests for %d requests arriving one by one, 2 attempts each, in %.1f s: %d',
	$stream, $stream_s, sim_fault_count('tok10'));
cmp_ok(sim_fault_count('tok10'), '<=', int($stream_s) + 2, 'about a token request a second at most');
cmp_ok(sim_fault_count('tok10'), '<', $stream, 'fewer than one per request');
sim_post('/__sim/oauth/consent', { user => $user, consented => JSON::PP::true });

# ---- 3d: a backend fetching a token is terminated (FATAL) ----
# A FATAL exit runs no PG_CATCH: the fetch's claim must still end, so that
# the processes waiting for that token do not wait for the takeover.
jwt_server('jwt9', "$url/_fault/key=tok9;latency_ms=100000;times=1");
my $doomed = backend_call('doomed9', 'jwt9');
ok(poll(sub { sim_fault_count('tok9') >= 1 }, 60), 'a backend is fetching a token that does not come');
my $waiter9 = backend_call('waiter9', 'jwt9');
ok(poll(sub { waiting_backends('waiter9') eq '1' }, 30), 'another backend waits for that token');
$t0 = time;
$node->safe_psql('postgres',
	"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'doomed9'");
$doomed->{h}->finish;
like(${ $doomed->{err} }, qr/terminating connection due to administrator command/, 'the fetching backend was terminated');
$waiter9->{h}->finish;
$waited = time - $t0;
note sprintf('the waiting backend had its answer %.2f s after the fetching one was terminated', $waited);
is(${ $waiter9->{out} }, "3\n", 'the waiting backend got its token');
cmp_ok($waited, '<', 30, 'long before a takeover of the abandoned fetch');

# ---- 3c: an error escapes a round of the worker during its fetch ----
# Recording an outcome fails (a check constraint refuses instance_url): the
# worker's error recovery abandons what it had in flight, its token fetch
# too, and a backend waiting for that token must not wait for the takeover.
jwt_server('jwt8', "$url/_fault/key=tok8;latency_ms=100000;times=1");
queue('jwt8', 'recover', 1);
ok(poll(sub { sim_fault_count('tok8') >= 1 }, 60), 'the worker is fetching a token that does not come');
my $waiter8 = backend_call('waiter8', 'jwt8');
ok(poll(sub { waiting_backends('waiter8') eq '1' }, 30), 'a backend waits for that token');
# the request that wanted it is gone, so that after its recovery the worker
# itself needs that token no more (and cannot be the one to fetch it); and
# a send that hangs keeps the worker busy, so that it does not exit (which
# would also end the fetch's claim)
$node->safe_psql('postgres', "DELETE FROM maestro_trigger_requests WHERE instance_name LIKE 'recover %'");
add_server($node, 'slowsend', '/_fault/key=slowsend;latency_ms=100000');
queue('slowsend', 'busy', 1);
ok(poll(sub { sim_fault_count('slowsend') >= 1 }, 60), 'a send hangs');
my $off = log_offset($node);
$node->safe_psql('postgres',
	'ALTER TABLE maestro_trigger_requests ADD CONSTRAINT no_url CHECK (instance_url IS NULL) NOT VALID');
$t0 = time;
queue('stat', 'boom', 1);
ok(wait_for_log($node, qr/violates check constraint "no_url"/, $off, 60),
	'recording an outcome failed in the worker');
$waiter8->{h}->finish;
$waited = time - $t0;
note sprintf('the waiting backend had its answer %.2f s after the error', $waited);
is(${ $waiter8->{out} }, "3\n", 'the waiting backend got its token');
cmp_ok($waited, '<', 30, 'long before a takeover of the abandoned fetch');
ok(poll(sub { count_of('boom', 'done') eq '1' }, 180), 'the worker recovered and settled the request');
is(scalar(worker_pids($node)), 1, 'in the same worker, still running');
$node->safe_psql('postgres', 'ALTER TABLE maestro_trigger_requests DROP CONSTRAINT no_url');

# ---- 3b: a fast shutdown during a hung token fetch ----
jwt_server('jwt7', "$url/_fault/key=tok7;latency_ms=100000;times=1");
queue('jwt7', 'stop', 1);
ok(poll(sub { sim_fault_count('tok7') >= 1 }, 60), 'the worker is fetching a token that does not come');
$t0 = time;
$node->stop('fast');
my $stop_s = time - $t0;
note sprintf('pg_ctl stop -m fast took %.2f s', $stop_s);
cmp_ok($stop_s, '<', 5, 'a fast shutdown does not wait for the token fetch');

done_testing();
