# test/tap/lib/MaestroTAP.pm: what the worker's TAP tests share.
#
# A Maestro simulator per test file (started on a free port, stopped at
# END), a PostgreSQL node with maestro preloaded and a server "sim" pointing
# at the simulator, and small helpers: bounded polling, the simulator's
# request log and instance lists, the worker's pid, the server log since an
# offset.
package MaestroTAP;

use strict;
use warnings;

use Exporter 'import';
use POSIX ();
use File::Basename qw(dirname);
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use Time::HiRes qw(time sleep);
use Test::More;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;

our @EXPORT = qw(
  $ACCOUNT $WF1 $WF2
  start_simulator sim_url sim_get sim_json sim_post sim_reset sim_log
  sim_instances sim_max_seq
  maestro_node maestro_setup scalar_sql wait_for wait_for_worker_exit
  worker_pids log_offset log_since states_of median percentile
  max_in_window max_overlap enqueue_batch check_exactly_once send_marker
  wait_for_log wait_for_extension_waits
  cpu_seconds rss_anon_kb next_xid wal_lsn wal_bytes_since sim_fault_count
  add_server $IK $JWT_USER start_jwt_simulator failover_pair
  freeze_wal_receiver started_twice start_psql
);

our $ACCOUNT = '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10';
our $WF1 = 'a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001';    # Name, Email (+Company)
our $WF2 = 'a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0002';    # Amount, Approver
our $IK = '11111111-2222-4333-8444-555555555555';      # the JWT grant's integration key
our $JWT_USER = '0ccdbb0b-a72e-452f-95f0-9f19654cb620';  # ... and user

my $dir = $ENV{MAESTRO_TAP_DIR} // dirname(__FILE__) . '/..';
my $python = $ENV{MAESTRO_PYTHON} // 'python3';
my $http = HTTP::Tiny->new(timeout => 60);
my $json = JSON::PP->new->canonical;
my ($sim, $sim_port);

# Start the simulator on a port it picks itself (--port 0 prints it).
sub start_simulator
{
	my $script = "$dir/maestro_sim.py";
	$script = "$ENV{MAESTRO_TOP}/test/simulator/maestro_sim.py"
	  if !-f $script && $ENV{MAESTRO_TOP};
	die "maestro_sim.py not found" unless -f $script;

	my $out = "$PostgreSQL::Test::Utils::log_path/simulator_$$.out";
	my $err = "$PostgreSQL::Test::Utils::log_path/simulator_$$.err";
	$sim = IPC::Run::start([ $python, $script, '--host', '127.0.0.1', '--port', '0', '--quiet', @_ ],
		'<', '/dev/null', '>', $out, '2>', $err);
	my $deadline = time + 120;
	while (time < $deadline)
	{
		if (open my $fh, '<', $out)
		{
			local $/;
			my $text = <$fh> // '';
			if ($text =~ m{listening on http://127\.0\.0\.1:(\d+)})
			{
				$sim_port = $1;
				last;
			}
		}
		sleep 0.05;
	}
	die "simulator did not start: " . slurp_file($err) unless $sim_port;
	while (time < $deadline)
	{
		my $r = $http->get(sim_url() . '/__sim/health');
		return sim_url() if $r->{success};
		sleep 0.05;
	}
	die "simulator is not healthy";
}

# Test keys (make_test_certs.sh) in a fresh directory, and the simulator
# with a token endpoint that grants $IK / $JWT_USER a token for a JWT
# signed with them; more simulator options may follow. Returns the private
# key (PEM), and in list context also the directory of the keys.
sub start_jwt_simulator
{
	my (@more) = @_;
	my $certs = PostgreSQL::Test::Utils::tempdir();
	my $script = "$dir/make_test_certs.sh";
	$script = "$ENV{MAESTRO_TOP}/test/simulator/make_test_certs.sh"
	  if !-f $script && $ENV{MAESTRO_TOP};
	is(system('bash', $script, $certs), 0, 'test keys made');
	my $key = slurp_file("$certs/jwt_private.pem");
	start_simulator('--oauth-public-key', "$certs/jwt_public.pem", '--integration-key', $IK,
		'--oauth-user', $JWT_USER, '--oauth-aud', '127.0.0.1', '--token-lifetime', '3600', @more);
	return wantarray ? ($key, $certs) : $key;
}

# A primary with maestro (16 slots, no rate limit, every trigger answered
# after 20 ms so that a batch takes seconds: fault key "lat") and a
# streaming hot standby made from its backup, both started; standby_conf
# is appended to the standby's configuration first.
sub failover_pair
{
	my (%o) = @_;
	my $primary = PostgreSQL::Test::Cluster->new('primary');
	$primary->init(allows_streaming => 1);
	$primary->append_conf('postgresql.conf', <<'EOC');
shared_preload_libraries = 'maestro'
maestro.database_name = 'postgres'
maestro.rate_limit = 0
maestro.max_concurrency = 16
log_min_messages = info
EOC
	$primary->start;
	maestro_setup($primary, 'postgres', sim_url() . '/_fault/key=lat;latency_ms=20;method=POST');

	$primary->backup('bk');
	my $standby = PostgreSQL::Test::Cluster->new('standby');
	$standby->init_from_backup($primary, 'bk', has_streaming => 1);
	$standby->append_conf('postgresql.conf', $o{standby_conf}) if $o{standby_conf};
	$standby->start;
	return ($primary, $standby);
}

# Once the pair's primary has sent $after triggers, stop the standby's WAL
# receiver (SIGSTOP; the caller sends SIGCONT). Returns its pid and the
# triggers sent by then.
sub freeze_wal_receiver
{
	my ($standby, $after) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $deadline = time + 60;
	sleep 0.01 while sim_fault_count('lat') < $after && time < $deadline;
	my $walrcv = scalar_sql($standby, 'SELECT pid FROM pg_stat_wal_receiver');
	ok($walrcv =~ /^\d+$/, 'the standby streams from the primary');
	kill 'STOP', $walrcv;
	return ($walrcv, sim_fault_count('lat'));
}

# How many requests named "$label ..." Maestro accepted (201) more than
# once since simulator log entry $seq0.
sub started_twice
{
	my ($label, $seq0) = @_;
	my %accepted;
	$accepted{ $_->{instance_name} }++ for grep { $_->{seq} > $seq0 && $_->{status} == 201
		  && ($_->{instance_name} // '') =~ /^\Q$label\E \d+ \[mq / } @{ sim_log(method => 'POST') };
	return scalar(grep { $_ > 1 } values %accepted);
}

END
{
	if ($sim)
	{
		eval { $sim->kill_kill(grace => 5); };
	}
}

sub sim_url { return "http://127.0.0.1:$sim_port"; }

sub sim_get
{
	my ($path, %headers) = @_;
	my $r = $http->get(sim_url() . $path, { headers => \%headers });
	die "GET $path: $r->{status} $r->{content}" unless $r->{success};
	return $r->{content};
}

sub sim_json { return $json->decode(sim_get(@_)); }

sub sim_post
{
	my ($path, $body) = @_;
	my $r = $http->post(sim_url() . $path,
		{ content => defined $body ? $json->encode($body) : '',
		  headers => { 'Content-Type' => 'application/json' } });
	die "POST $path: $r->{status} $r->{content}" unless $r->{success};
	return $r->{content};
}

sub sim_reset { sim_post('/__sim/reset'); return; }

# The simulator's request log: [{seq, time, method, path, status, body,
# instance_name, fault, ...}], time being when the request arrived.
sub sim_log
{
	my (%q) = @_;
	my @args = map { "$_=" . _uri($q{$_}) } sort keys %q;
	return sim_json('/__sim/requests' . (@args ? '?' . join('&', @args) : ''));
}

sub _uri
{
	my ($s) = @_;
	$s =~ s/([^A-Za-z0-9\-._~])/sprintf('%%%02X', ord($1))/ge;
	return $s;
}

sub sim_max_seq
{
	my $log = sim_log();
	return @$log ? $log->[-1]{seq} : 0;
}

# The instances of a workflow, as the API lists them.
sub sim_instances
{
	my ($wf) = @_;
	my $r = sim_json("/v1/accounts/$ACCOUNT/workflows/$wf/instances",
		Authorization => 'Bearer sim-token');
	return $r->{data};
}

# A started node with maestro preloaded, serving database "database"
# (default postgres); extension and server "sim" set up unless no_setup.
sub maestro_node
{
	my ($name, %o) = @_;
	my $db = $o{database} // 'postgres';
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', <<"EOC" . ($o{conf} // ''));
shared_preload_libraries = 'maestro'
maestro.database_name = '$db'
restart_after_crash = on
log_min_messages = info
EOC
	$node->start;
	maestro_setup($node, $db, $o{base_url}) unless $o{no_setup};
	return $node;
}

sub maestro_setup
{
	my ($node, $db, $base_url) = @_;
	$base_url //= sim_url();
	$node->safe_psql($db // 'postgres', qq{
CREATE EXTENSION maestro;
CREATE SERVER sim FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$base_url', account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER sim OPTIONS (access_token 'sim-token');
});
	return;
}

# psql running $sql in database postgres of $node, in the background, with
# more connection options $conninfo (application_name=..., say) if given:
# { h => the IPC::Run handle, out => \$stdout, err => \$stderr }, the output
# unaligned, tuples only and quiet. Finish it with $call->{h}->finish.
sub start_psql
{
	my ($node, $sql, $conninfo) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-q', '-A', '-t', '-d',
		  $node->connstr('postgres') . (defined $conninfo ? " $conninfo" : ''), '-c', $sql ],
		'>', \$out, '2>', \$err);
	return { h => $h, out => \$out, err => \$err };
}

sub scalar_sql
{
	my ($node, $sql, $db) = @_;
	return $node->safe_psql($db // 'postgres', $sql);
}

# Poll until $sql returns $expected; false after $timeout seconds. Failed
# connections (say, during crash recovery) count as "not yet". Deadlines
# are generous (a loaded 2-core machine is slow): passing costs no more.
sub wait_for
{
	my ($node, $sql, $expected, $timeout, $db) = @_;
	$timeout //= 180;
	my $deadline = time + $timeout;
	my $last = '';
	while (time < $deadline)
	{
		my ($rc, $out, $err) = $node->psql($db // 'postgres', $sql);
		$last = $rc == 0 ? $out : "error: $err";
		return 1 if $rc == 0 && $out eq $expected;
		sleep 0.05;
	}
	diag "timed out after ${timeout}s waiting for <$sql> = <$expected>; last: <$last>";
	return 0;
}

# Polls until $count backends running a query that ends in the comment
# /* $tag */ are active in wait event type Extension: inside one of
# maestro's waits (a token fetch, an HTTP transfer), started and not yet
# answered. True if that many were seen within $timeout seconds.
sub wait_for_extension_waits
{
	my ($node, $tag, $count, $timeout) = @_;
	return wait_for($node, qq{
SELECT count(*) FROM pg_stat_activity
WHERE query LIKE '%$tag */' AND state = 'active' AND wait_event_type = 'Extension'}, "$count", $timeout);
}

# The positive marker of "nothing more was sent": queue one request named
# $name in a transaction of its own and wait until it is done. The worker
# claims the queue in order, so once the marker is done, whatever was queued
# before it has had its turn. True if the marker got done in time.
sub send_marker
{
	my ($node, $name, $db) = @_;
	$node->safe_psql($db // 'postgres',
		"SELECT maestro_trigger_async('$WF1', '{\"Name\": \"M\", \"Email\": \"m\@example.com\"}', '$name')");
	return wait_for($node,
		"SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE '$name [mq %' AND state = 'done'",
		'1', 180, $db);
}

sub worker_pids
{
	my ($node) = @_;
	my ($rc, $out) = $node->psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'maestro worker' ORDER BY pid");
	return $rc == 0 ? grep { /\d/ } split /\n/, $out : ();
}

# Wait until no maestro worker runs; the seconds it took, or undef.
sub wait_for_worker_exit
{
	my ($node, $timeout) = @_;
	my $start = time;
	while (time - $start < $timeout)
	{
		return time - $start unless worker_pids($node);
		sleep 0.05;
	}
	return undef;
}

# What an operator watches: a process's CPU time (user + system, seconds,
# from /proc/<pid>/stat), its anonymous resident memory (kB, from
# /proc/<pid>/status), the next transaction id the cluster will assign
# (read without assigning one) and the WAL insert position.
my $clk_tck = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;

sub cpu_seconds
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/stat" or return undef;
	my $stat = <$fh>;
	close $fh;
	# the command name (field 2) may hold spaces: split after its ')'
	$stat =~ s/^.*\)\s+//s;
	my @f = split /\s+/, $stat;
	# fields 14 and 15 (utime, stime) are the 12th and 13th after the name
	return ($f[11] + $f[12]) / $clk_tck;
}

sub rss_anon_kb
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/status" or return undef;
	while (<$fh>)
	{
		return $1 if /^RssAnon:\s+(\d+)\s+kB/;
	}
	return undef;
}

sub next_xid
{
	my ($node) = @_;
	return $node->safe_psql('postgres', 'SELECT pg_snapshot_xmax(pg_current_snapshot())');
}

sub wal_lsn
{
	my ($node) = @_;
	return $node->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
}

sub wal_bytes_since
{
	my ($node, $lsn) = @_;
	return $node->safe_psql('postgres', "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '$lsn')");
}

# How many requests a simulator fault key has matched so far: counted when
# a request arrives, before any latency_ms.
sub sim_fault_count
{
	my ($key) = @_;
	return sim_json('/__sim/faults')->{$key} // 0;
}

# A server (and the current user's mapping) at base_url sim_url() . $path.
sub add_server
{
	my ($node, $name, $path, $db) = @_;
	my $url = sim_url() . ($path // '');
	$node->safe_psql($db // 'postgres', qq{
CREATE SERVER $name FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$url', account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER $name OPTIONS (access_token 'sim-token');
});
	return;
}

sub log_offset { my ($node) = @_; return -s $node->logfile; }

# Poll the server log (from $offset on) until it matches $re; true if it
# did within $timeout seconds.
sub wait_for_log
{
	my ($node, $re, $offset, $timeout) = @_;
	my $deadline = time + ($timeout // 180);
	while (time < $deadline)
	{
		return 1 if slurp_file($node->logfile, $offset // 0) =~ $re;
		sleep 0.1;
	}
	diag "timed out after ${\($timeout // 180)}s waiting for $re in the server log";
	return 0;
}

sub log_since
{
	my ($node, $offset) = @_;
	return slurp_file($node->logfile, $offset);
}

sub states_of
{
	my ($node, $where, $db) = @_;
	$where //= 'true';
	my $out = $node->safe_psql($db // 'postgres',
		"SELECT state, count(*) FROM maestro_trigger_requests WHERE $where GROUP BY 1 ORDER BY 1");
	my %s = map { split /\|/ } grep { /\|/ } split /\n/, $out;
	return \%s;
}

sub percentile
{
	my ($p, @v) = @_;
	@v = sort { $a <=> $b } @v;
	return undef unless @v;
	my $i = int($p * $#v + 0.5);
	return $v[$i];
}

sub median { return percentile(0.5, @_); }

# The most of @times (seconds) that fall in any window [t, t + $width).
sub max_in_window
{
	my ($width, @t) = @_;
	@t = sort { $a <=> $b } @t;
	my ($most, $j) = (0, 0);
	for my $i (0 .. $#t)
	{
		$j++ while $j < @t && $t[$j] < $t[$i] + $width;
		$most = $j - $i if $j - $i > $most;
	}
	return $most;
}

# The most intervals [start, start + $len) open at one time.
sub max_overlap
{
	my ($len, @starts) = @_;
	my @ev = sort { $a->[0] <=> $b->[0] || $a->[1] <=> $b->[1] }
	  ((map { [ $_, 1 ] } @starts), (map { [ $_ + $len, -1 ] } @starts));
	my ($open, $most) = (0, 0);
	for my $e (@ev)
	{
		# at equal times the end (-1) sorts first
		$open += $e->[1];
		$most = $open if $open > $most;
	}
	return $most;
}

# Queue $n requests named "$label <n>" in one transaction (to server
# $server if given, else the only one).
sub enqueue_batch
{
	my ($node, $label, $n, $server) = @_;
	my $set = $server ? "SET maestro.server = '$server';" : '';
	$node->safe_psql('postgres', qq{$set
SELECT count(maestro_trigger_async('$WF1', format('{"Name": "N%s", "Email": "n%s\@example.com"}', g, g)::jsonb,
                                   '$label ' || g))
FROM generate_series(1, $n) g});
	return;
}

# Every request named "$label ..." is done, and Maestro holds exactly one
# instance for each: none lost, none duplicated. Counted three ways: the
# queue table, the trigger POSTs Maestro accepted (its request log: an
# accepted POST made an instance even if its answer never arrived), and
# the workflow's instance list.
sub check_exactly_once
{
	my ($node, $label, $n, $seq0) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;

	my $states = states_of($node, "instance_name LIKE '$label %'");
	is($states->{done} // 0, $n, "$label: all $n requests are done");
	is($states->{failed} // 0, 0, "$label: none failed");

	my %rows = map { my @f = split /\|/; ($f[1] => { id => $f[0], instance_id => $f[2], found => $f[3] }) }
	  split /\n/, $node->safe_psql('postgres', qq{
SELECT id, instance_name, coalesce(instance_id::text, ''), coalesce(last_error LIKE 'found by its name%', false)
FROM maestro_trigger_requests WHERE instance_name LIKE '$label %'});

	my @posts = grep { $_->{seq} > $seq0 && $_->{path} =~ m{/actions/trigger$}
		  && ($_->{instance_name} // '') =~ /^\Q$label\E \d+ \[mq / } @{ sim_log(method => 'POST') };
	my @accepted = grep { $_->{status} == 201 } @posts;
	my %times;
	$times{ $_->{instance_name} }++ for @accepted;
	my $dups = grep { $_ > 1 } values %times;
	is(scalar(@accepted), $n, "$label: Maestro accepted exactly $n trigger POSTs");
	is(scalar(keys %times), $n, "$label: ... for $n distinct instance names");
	is($dups, 0, "$label: no name was accepted twice (0 duplicated)");
	is(scalar(grep { !$rows{$_} } keys %times), 0, "$label: every accepted name is a queued request");

	my @inst = grep { $_->{name} =~ /^\Q$label\E \d+ \[mq / } @{ sim_instances($WF1) };
	my %inst = map { $_->{name} => $_->{id} } @inst;
	is(scalar(@inst), $n, "$label: the workflow has exactly $n such instances");
	is(scalar(keys %inst), $n, "$label: ... with distinct names");
	my @lost = grep { !exists $inst{$_} } keys %rows;
	is(scalar(@lost), 0, "$label: every request has its instance (0 lost)");
	my @wrong = grep { ($inst{$_} // '') ne $rows{$_}{instance_id} } keys %rows;
	is(scalar(@wrong), 0, "$label: every request records the id of its own instance");

	my $found = grep { $rows{$_}{found} eq 't' } keys %rows;
	note sprintf('%s: %d trigger POSTs in all (%d accepted, %d other), %d requests settled by a look-up by name',
		$label, scalar(@posts), scalar(@accepted), @posts - @accepted, $found);
	return $found;
}

1;
