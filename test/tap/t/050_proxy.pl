# The server option proxy, against a real proxy (tinyproxy, started here on
# 127.0.0.1 with Basic authentication, CONNECT allowed to the TLS
# simulator's port only): backends, the worker and the JWT grant's token
# request all go through it; HTTPS goes through CONNECT with ca_file; an
# https:// proxy (a TLS front relaying to tinyproxy) is verified too; a
# wrong password and a dead proxy are 08006 with a hint naming the proxy,
# and the password appears in no error and no server log line. The
# postmaster runs with http_proxy, https_proxy, HTTPS_PROXY and ALL_PROXY
# pointing at a dead port, and later with NO_PROXY covering 127.0.0.1:
# neither changes where maestro's calls go.
use strict;
use warnings;
use Cwd ();
use IO::Socket::INET;
use IPC::Run;
use Time::HiRes qw(time sleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MaestroTAP;

my $ik = '11111111-2222-4333-8444-555555555555';
my $user = '0ccdbb0b-a72e-452f-95f0-9f19654cb620';
my $password = 'tap-pr0xy-pa55word';
my $wrong = 'wrong-pr0xy-pa55word';

my ($tinyproxy) = grep { -x $_ } ('/usr/bin/tinyproxy', '/usr/sbin/tinyproxy');
die "tinyproxy is not installed (.ci/install-deps installs tinyproxy-bin)" unless $tinyproxy;

my $tmp = Cwd::abs_path(PostgreSQL::Test::Utils::tempdir());
my $certs = "$tmp/certs";
my $dir = $ENV{MAESTRO_TAP_DIR} // '.';
my $script = -f "$dir/make_test_certs.sh" ? "$dir/make_test_certs.sh" : "$ENV{MAESTRO_TOP}/test/simulator/make_test_certs.sh";
is(system('bash', $script, $certs), 0, 'test keys and certificates made');
my $key = slurp_file("$certs/jwt_private.pem");

# the plain simulator (with the token endpoint) and one over HTTPS
my $sim = start_simulator('--oauth-public-key', "$certs/jwt_public.pem", '--integration-key', $ik,
	'--oauth-user', $user, '--oauth-aud', '127.0.0.1', '--token-lifetime', '3600');
my ($sim_port) = $sim =~ /:(\d+)$/;
my $tls_port = PostgreSQL::Test::Cluster::get_free_port();
my $sim_script = -f "$dir/maestro_sim.py" ? "$dir/maestro_sim.py" : "$ENV{MAESTRO_TOP}/test/simulator/maestro_sim.py";
my $log = $PostgreSQL::Test::Utils::log_path;
my $tls = IPC::Run::start(
	[ $ENV{MAESTRO_PYTHON} // 'python3', $sim_script, '--host', '127.0.0.1', '--port', $tls_port,
	  '--quiet', '--tls-cert', "$certs/server.pem", '--tls-key', "$certs/server.key" ],
	'<', '/dev/null', '>', "$log/tls_sim.out", '2>', "$log/tls_sim.err");
my $tls_url = "https://127.0.0.1:$tls_port";

# curl, with a given environment; returns (exit code, stdout)
sub curl
{
	my ($env, @args) = @_;
	local %ENV = (%ENV, %$env);
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'curl', '-sS', '--max-time', '10', @args ], '<', '/dev/null', '>', \$out, '2>', \$err);
	return ($? >> 8, $out);
}

sub wait_until
{
	my ($what, $check) = @_;
	my $deadline = time + 60;
	while (time < $deadline)
	{
		return 1 if $check->();
		sleep 0.1;
	}
	die "timed out waiting for $what";
}
wait_until('the TLS simulator',
	sub { (curl({}, '--cacert', "$certs/ca.pem", "$tls_url/__sim/health"))[1] eq 'ok' });
sub tls_count { return (curl({}, '--cacert', "$certs/ca.pem", "$tls_url/__sim/count"))[1]; }

# tinyproxy: 127.0.0.1 only, Basic authentication, CONNECT to the TLS port only
my $proxy_port = PostgreSQL::Test::Cluster::get_free_port();
my $proxy_log = "$tmp/tinyproxy.log";
open my $conf, '>', "$tmp/tinyproxy.conf" or die;
print $conf <<"EOC";
Port $proxy_port
Listen 127.0.0.1
Timeout 60
MaxClients 50
LogFile "$proxy_log"
LogLevel Connect
Allow 127.0.0.1
ConnectPort $tls_port
BasicAuth puser $password
EOC
close $conf;
my $proxy = IPC::Run::start([ $tinyproxy, '-d', '-c', "$tmp/tinyproxy.conf" ],
	'<', '/dev/null', '>', "$log/tinyproxy.out", '2>', "$log/tinyproxy.err");
wait_until('tinyproxy', sub { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$proxy_port", Timeout => 1) });
my $proxy_url = "http://127.0.0.1:$proxy_port";
sub proxy_log { return -f $proxy_log ? slurp_file($proxy_log) : ''; }

END
{
	eval { $proxy->kill_kill(grace => 5) if $proxy; };
	eval { $tls->kill_kill(grace => 5) if $tls; };
}

# an https:// proxy: a TLS front (the test CA's certificate for 127.0.0.1)
# relaying to tinyproxy
my $relay_port = PostgreSQL::Test::Cluster::get_free_port();
open my $py, '>', "$tmp/tls_relay.py" or die;
print $py <<'EOPY';
import socket, ssl, sys, threading
cert, key, port_in, port_out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port_in))
srv.listen(50)

def pipe(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

def handle(c):
    try:
        t = ctx.wrap_socket(c, server_side=True)
        u = socket.create_connection(("127.0.0.1", port_out))
    except OSError:
        c.close()
        return
    threading.Thread(target=pipe, args=(t, u), daemon=True).start()
    pipe(u, t)

while True:
    c, _ = srv.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
EOPY
close $py;
my $relay = IPC::Run::start(
	[ $ENV{MAESTRO_PYTHON} // 'python3', "$tmp/tls_relay.py", "$certs/server.pem", "$certs/server.key",
	  $relay_port, $proxy_port ],
	'<', '/dev/null', '>', "$log/tls_relay.out", '2>', "$log/tls_relay.err");
wait_until('the TLS relay', sub { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$relay_port", Timeout => 1) });
my $https_proxy_url = "https://127.0.0.1:$relay_port";
END { eval { $relay->kill_kill(grace => 5) if $relay; }; }

# a port nothing listens on
my $dead_port = PostgreSQL::Test::Cluster::get_free_port();
my $dead = "http://127.0.0.1:$dead_port";

# the proxy environment a postmaster can inherit from a service manager
my %proxy_env = (http_proxy => $dead, https_proxy => $dead, HTTPS_PROXY => $dead, ALL_PROXY => $dead);
my $node;
{
	local %ENV = (%ENV, %proxy_env);
	$node = maestro_node('proxy', no_setup => 1, conf => "maestro.rate_limit = 0\nmaestro.retry_delay = 100ms\n"
		  # statements stay out of the log (as the README advises for user
		  # mappings); every message maestro logs is searched below
		  . "log_statement = none\nlog_min_messages = debug1\n");
}

# what a program started by a backend sees (a backend's own environ in /proc
# is overwritten by its process title)
sub server_shell
{
	my ($command) = @_;
	return $node->safe_psql('postgres', qq{
CREATE TEMP TABLE out (line text);
COPY out FROM PROGRAM \$\$$command\$\$;
SELECT string_agg(line, ' ') FROM out;});
}
is(server_shell('printenv http_proxy https_proxy HTTPS_PROXY ALL_PROXY'), join(' ', ($dead) x 4),
	"backends run with http_proxy, https_proxy, HTTPS_PROXY and ALL_PROXY = $dead");
like(server_shell("curl -sS --max-time 10 -o /dev/null $sim/__sim/health 2>&1; echo exit \$?"),
	qr/exit [1-9]/, '... which breaks a default libcurl client there (the curl tool)');

$node->safe_psql('postgres', qq{
CREATE EXTENSION maestro;
CREATE SERVER direct FOREIGN DATA WRAPPER maestro OPTIONS (base_url '$sim', account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER direct OPTIONS (access_token 'sim-token');
CREATE SERVER tlsdirect FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$tls_url', ca_file '$certs/ca.pem', account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER tlsdirect OPTIONS (access_token 'sim-token');
CREATE SERVER viaproxy FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$sim', account_id '$ACCOUNT', proxy '$proxy_url');
CREATE USER MAPPING FOR CURRENT_USER SERVER viaproxy
  OPTIONS (access_token 'sim-token', proxy_user 'puser', proxy_password '$password');
CREATE SERVER tlsproxy FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$tls_url', ca_file '$certs/ca.pem', account_id '$ACCOUNT', proxy '$proxy_url');
CREATE USER MAPPING FOR CURRENT_USER SERVER tlsproxy
  OPTIONS (access_token 'sim-token', proxy_user 'puser', proxy_password '$password');
CREATE SERVER jwtproxy FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$sim', auth_url '$sim', account_id '$ACCOUNT', proxy '$proxy_url');
CREATE USER MAPPING FOR CURRENT_USER SERVER jwtproxy
  OPTIONS (integration_key '$ik', user_id '$user', private_key '$key',
           proxy_user 'puser', proxy_password '$password');
CREATE SERVER badpass FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$sim', account_id '$ACCOUNT', proxy '$proxy_url');
CREATE USER MAPPING FOR CURRENT_USER SERVER badpass
  OPTIONS (access_token 'sim-token', proxy_user 'puser', proxy_password '$wrong');
CREATE SERVER httpsproxy FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$sim', ca_file '$certs/ca.pem', account_id '$ACCOUNT', proxy '$https_proxy_url');
CREATE USER MAPPING FOR CURRENT_USER SERVER httpsproxy
  OPTIONS (access_token 'sim-token', proxy_user 'puser', proxy_password '$password');
CREATE SERVER tlshttpsproxy FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$tls_url', ca_file '$certs/ca.pem', account_id '$ACCOUNT', proxy '$https_proxy_url');
CREATE USER MAPPING FOR CURRENT_USER SERVER tlshttpsproxy
  OPTIONS (access_token 'sim-token', proxy_user 'puser', proxy_password '$password');
CREATE SERVER untrustedproxy FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$sim', account_id '$ACCOUNT', proxy '$https_proxy_url');
CREATE USER MAPPING FOR CURRENT_USER SERVER untrustedproxy
  OPTIONS (access_token 'sim-token', proxy_user 'puser', proxy_password '$password');
CREATE SERVER nopass FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$sim', account_id '$ACCOUNT', proxy '$proxy_url');
CREATE USER MAPPING FOR CURRENT_USER SERVER nopass OPTIONS (access_token 'sim-token');
CREATE SERVER tlsbadpass FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$tls_url', ca_file '$certs/ca.pem', account_id '$ACCOUNT', proxy '$proxy_url');
CREATE USER MAPPING FOR CURRENT_USER SERVER tlsbadpass
  OPTIONS (access_token 'sim-token', proxy_user 'puser', proxy_password '$wrong');
CREATE SERVER deadproxy FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$sim', account_id '$ACCOUNT', proxy '$dead');
CREATE USER MAPPING FOR CURRENT_USER SERVER deadproxy
  OPTIONS (access_token 'sim-token', proxy_user 'puser', proxy_password '$password');
});
my $log_start = 0;

sub workflows
{
	my ($server) = @_;
	my ($rc, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSET maestro.server = '$server';\nSELECT count(*) FROM maestro_workflows()");
	return $rc == 0 ? $out : $err;
}

sub last_sim_request
{
	my ($path) = @_;
	my $log = sim_log(path_contains => $path);
	return $log->[-1] // {};
}

# without the option: straight to the API, whatever the environment says
is(workflows('direct'), '3', 'no proxy option: a call succeeds despite http_proxy in the environment');
is(last_sim_request('/workflows')->{via}, undef, '... and reached the API directly');
is(workflows('tlsdirect'), '3', 'no proxy option: an HTTPS call succeeds despite https_proxy/HTTPS_PROXY/ALL_PROXY');
my $seq = sim_max_seq();
$node->safe_psql('postgres', qq{SET maestro.server = 'direct';
SELECT maestro_trigger_async('$WF1', '{"Name": "D", "Email": "d\@example.com"}', 'direct 1');});
ok(wait_for($node, "SELECT state FROM maestro_trigger_requests WHERE instance_name LIKE 'direct 1 %'", 'done', 60),
	'the worker sends past the environment too');

# through the proxy, with its credentials from the user mapping
is(workflows('viaproxy'), '3', 'a backend calls the API through the proxy');
like(last_sim_request('/workflows')->{via} // '', qr/tinyproxy/, '... the API saw the proxy\'s Via header');
like(proxy_log(), qr{GET http://127\.0\.0\.1:$sim_port/v1/accounts/$ACCOUNT/workflows}, '... and the proxy logged the request');

$node->safe_psql('postgres', qq{SET maestro.server = 'viaproxy';
SELECT maestro_trigger_async('$WF1', '{"Name": "P", "Email": "p\@example.com"}', 'proxied 1');});
ok(wait_for($node, "SELECT state FROM maestro_trigger_requests WHERE instance_name LIKE 'proxied 1 %'", 'done', 60),
	'the worker sends a queued trigger through the proxy');
my ($post) = grep { ($_->{instance_name} // '') =~ /^proxied 1 / } @{ sim_log(method => 'POST') };
like($post->{via} // '', qr/tinyproxy/, '... the trigger POST arrived through the proxy');

is(workflows('jwtproxy'), '3', 'the JWT grant works through the proxy');
like(last_sim_request('/oauth/token')->{via} // '', qr/tinyproxy/, '... its token request went through the proxy');
like(last_sim_request('/workflows')->{via} // '', qr/tinyproxy/, '... and so did the API call');

# the worker's own token fetch (on its multi handle, beside its sends) goes
# through the proxy as well: a server with an auth_url of its own, so that
# no backend has fetched its token before
$node->safe_psql('postgres', qq{
CREATE SERVER jwtworker FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$sim', auth_url '$sim/_fault/key=tokW;times=0', account_id '$ACCOUNT', proxy '$proxy_url');
CREATE USER MAPPING FOR CURRENT_USER SERVER jwtworker
  OPTIONS (integration_key '$ik', user_id '$user', private_key '$key',
           proxy_user 'puser', proxy_password '$password');
SET maestro.server = 'jwtworker';
SELECT maestro_trigger_async('$WF1', '{"Name": "W", "Email": "w\@example.com"}', 'jwtworker 1');});
ok(wait_for($node, "SELECT state FROM maestro_trigger_requests WHERE instance_name LIKE 'jwtworker 1 %'", 'done', 60),
	'the worker sends a trigger with a token it fetched itself');
is(sim_fault_count('tokW'), 1, '... after one token request');
like(proxy_log(), qr{POST http://127\.0\.0\.1:$sim_port/_fault/key=tokW}, '... which the proxy logged');
like(last_sim_request('/oauth/token')->{via} // '', qr/tinyproxy/, '... and the account server saw come through it');

# HTTPS: a CONNECT tunnel, the API host's certificate verified with ca_file
my $tls_before = tls_count();
is(workflows('tlsproxy'), '3', 'HTTPS through the proxy (CONNECT) with ca_file');
like(proxy_log(), qr{CONNECT 127\.0\.0\.1:$tls_port}, '... the proxy logged the CONNECT to the TLS simulator');
is(tls_count(), $tls_before + 1, '... and the TLS simulator got the request');

# an https:// proxy, its certificate verified against ca_file
my $err;
is(workflows('httpsproxy'), '3', 'an https:// proxy (TLS to the proxy, verified with ca_file)');
like(last_sim_request('/workflows')->{via} // '', qr/tinyproxy/, '... the call went through it');
$tls_before = tls_count();
is(workflows('tlshttpsproxy'), '3', 'HTTPS through an https:// proxy (TLS inside the TLS tunnel)');
is(tls_count(), $tls_before + 1, '... and the TLS simulator got the request');
$err = workflows('untrustedproxy');
like($err, qr/ERROR:  08006: could not verify the TLS certificate of the proxy/,
	'an https:// proxy whose certificate the system does not trust (no ca_file): 08006');
like($err, qr/HINT:  The proxy \Q$https_proxy_url\E \(server option proxy\) uses a certificate/, '... the hint names the proxy');

# refusals
$err = workflows('nopass');
like($err, qr/ERROR:  08006: the proxy refused the request/, 'no proxy credentials (http): the proxy\'s 407 is 08006');
like($err, qr/HINT:  The proxy \Q$proxy_url\E \(server option proxy\) wants credentials/, '... the hint names the proxy');
# tinyproxy answers a wrong password with 401, which only its page tells
# from the API's own 401
$err = workflows('badpass');
like($err, qr/ERROR:  28000: .*\nDETAIL:  HTTP 401 .*tinyproxy/, 'a wrong proxy password (http): tinyproxy\'s 401, with its page in the detail');
like($err, qr/HINT:  .*check proxy_user and proxy_password instead \(the request went through the proxy \Q$proxy_url\E\)/,
	'... the hint names the proxy and its options');
$err = workflows('tlsbadpass');
like($err, qr/ERROR:  08006: the proxy refused the request/, 'a wrong proxy password (CONNECT): 08006');
like($err, qr/DETAIL:  .*CONNECT tunnel failed, response 40[17]/, '... the detail has the proxy\'s answer');
like($err, qr/HINT:  The proxy \Q$proxy_url\E \(server option proxy\) wants credentials/, '... the hint names the proxy');
my $t0 = time;
$err = workflows('deadproxy');
like($err, qr/ERROR:  08006: could not complete the Maestro request/, 'a proxy that is down: 08006');
like($err, qr/HINT:  The request went through the proxy \Q$dead\E \(server option proxy\)/, '... the hint names the proxy');
my $all_errors = join "\n", map { workflows($_) } qw(nopass badpass tlsbadpass deadproxy);
unlike($all_errors, qr/\Q$password\E|\Q$wrong\E/, 'no error carries a proxy password');

# the worker with a dead proxy: the request is retried, then fails, unsent
$node->safe_psql('postgres', qq{SET maestro.server = 'deadproxy';
SELECT maestro_trigger_async('$WF1', '{"Name": "X", "Email": "x\@example.com"}', 'dead proxy 1');});
ok(wait_for($node, "SELECT state FROM maestro_trigger_requests WHERE instance_name LIKE 'dead proxy 1 %'", 'failed', 120),
	'the worker cannot send through a dead proxy: the request fails after its attempts');
is(scalar(grep { ($_->{instance_name} // '') =~ /^dead proxy 1 / } @{ sim_log(method => 'POST') }), 0,
	'... and nothing reached the API around the proxy');

# NO_PROXY in the postmaster's environment does not bypass the proxy option
$node->stop;
{
	local %ENV = (%ENV, %proxy_env, NO_PROXY => '127.0.0.1,localhost', no_proxy => '127.0.0.1,localhost');
	$node->start;
}
is(server_shell('printenv NO_PROXY'), '127.0.0.1,localhost',
	'backends now run with NO_PROXY=127.0.0.1,localhost in their environment');
is(workflows('viaproxy'), '3', 'with NO_PROXY covering the host, a call with the proxy option ...');
like(last_sim_request('/workflows')->{via} // '', qr/tinyproxy/, '... still goes through the proxy');
is(workflows('direct'), '3', '... and one without it still goes direct');

$node->stop;
my $server_log = slurp_file($node->logfile);
unlike($server_log, qr/\Q$password\E/, 'the server log never holds the proxy password');
unlike($server_log, qr/\Q$wrong\E/, '... nor the wrong one');
unlike(proxy_log(), qr/\Q$password\E/, '(nor does the proxy\'s log)');

done_testing();
