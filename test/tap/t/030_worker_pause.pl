# A paused server costs nothing while it waits (defect 1), and a 429 with
# no Retry-After pauses it for at least a second (defect 5). Measured over
# the pause: the worker's CPU time, the transaction ids and the WAL the
# cluster uses, and the POSTs Maestro receives.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use POSIX ();
use MaestroTAP;

start_simulator();
my $node = maestro_node('pause', conf => <<'EOC');
maestro.retry_delay = 100ms
maestro.max_attempts = 100
EOC
my $sim = sim_url();
$node->safe_psql('postgres', qq{
CREATE SERVER p60 FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$sim/_fault/key=p60;status=429;retry_after=60;times=1;method=POST', account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER p60 OPTIONS (access_token 'sim-token');
CREATE SERVER p60b FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$sim/_fault/key=p60b;status=429;retry_after=60;times=1;method=POST', account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER p60b OPTIONS (access_token 'sim-token');
CREATE SERVER pnone FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$sim/_fault/key=pnone;status=429;method=POST', account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER pnone OPTIONS (access_token 'sim-token');
});

my $ticks = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;
sub cpu_seconds
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/stat" or return undef;
	my $stat = <$fh>;
	$stat =~ s/^.*\)\s+//;
	my @f = split /\s+/, $stat;
	return ($f[11] + $f[12]) / $ticks;
}

sub enqueue
{
	my ($server, $label, $n) = @_;
	$node->safe_psql('postgres', qq{
SET maestro.server = '$server';
SELECT count(maestro_trigger_async('$WF1', '{"Name": "P", "Email": "p\@example.com"}', '$label ' || g))
FROM generate_series(1, $n) g});
}

# --- defect 1: 429 with Retry-After: 60, then 20 more for that server ------
enqueue('p60', 'p60', 1);
ok(wait_for($node, "SELECT count(*) >= 1 FROM maestro_trigger_requests WHERE http_status = 429", 't', 30),
	'one request got 429 with Retry-After: 60');
enqueue('p60', 'p60more', 20);
my ($pid) = worker_pids($node);
ok(defined $pid, 'the worker runs');
sleep 1;
my $posts0 = scalar(grep { $_->{path} =~ /key=p60;/ } @{ sim_log(method => 'POST') });
my ($xid0, $lsn0) = split /\|/, scalar_sql($node, 'SELECT txid_current(), pg_current_wal_lsn()');
my $cpu0 = cpu_seconds($pid);
my $t0 = time;
sleep 10;
my $cpu1 = cpu_seconds($pid);
my $elapsed = time - $t0;
my ($xid1, $wal) = split /\|/, scalar_sql($node, "SELECT txid_current(), pg_current_wal_lsn() - '$lsn0'");
my $posts1 = scalar(grep { $_->{path} =~ /key=p60;/ } @{ sim_log(method => 'POST') });
my $cpu_pct = 100 * ($cpu1 - $cpu0) / $elapsed;
my $xids = ($xid1 - $xid0 - 1) / $elapsed;
my $wal_rate = $wal / $elapsed;
note sprintf('paused 60 s with 20 due requests: worker CPU %.1f%%, %.1f xids/s, %.0f WAL bytes/s, %d POSTs in %.1f s',
	$cpu_pct, $xids, $wal_rate, $posts1 - $posts0, $elapsed);
cmp_ok($cpu_pct, '<', 10, 'the worker sleeps through the pause (CPU < 10%)');
cmp_ok($xids, '<', 5, '... using (almost) no transaction ids');
cmp_ok($wal_rate, '<', 20000, '... and writing (almost) no WAL');
is($posts1 - $posts0, 0, '... and sending nothing to the paused server');
is(scalar_sql($node, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'p60%' AND state = 'failed'"),
	'0', 'no request of the paused server failed');

# --- claimed requests of a server that gets paused go back to the queue ----
enqueue('p60b', 'p60b', 6);
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'p60b %' AND http_status = 429", '1', 30),
	'a second server: its first request got 429 with Retry-After: 60');
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'p60b %' AND state = 'sending'", '0', 10),
	'... and none of its requests stays claimed (sending) through the pause');
is(scalar_sql($node, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'p60b %' AND state = 'queued' AND next_attempt_at > now() + interval '40 s'"),
	'6', '... all 6 wait, queued, for the end of the pause');
is(scalar_sql($node, "SELECT sum(attempts) || ' ' || count(sent_at) FROM maestro_trigger_requests WHERE instance_name LIKE 'p60b %'"),
	'1 1', '... and only the one that was sent counts an attempt and has a sent_at');

# --- defect 5: 429 without Retry-After: every answer is 429 ----------------
enqueue('pnone', 'pnone', 10);
sleep 3.5;
my @posts = sort { $a <=> $b } map { $_->{time} } grep { $_->{path} =~ /key=pnone;/ } @{ sim_log(method => 'POST') };
note sprintf('429 without Retry-After, 10 requests: %d POSTs in the first 3.5 s; gaps %s', scalar(@posts),
	join(' ', map { sprintf '%.3f', $posts[$_] - $posts[ $_ - 1 ] } 1 .. $#posts));
cmp_ok(scalar(@posts), '>=', 1, 'the server got the first POST');
cmp_ok(scalar(@posts), '<=', 6, 'a 429 without Retry-After pauses the server: at most 6 POSTs in 3.5 s');
my $min_gap = 99;
for my $i (1 .. $#posts)
{
	$min_gap = $posts[$i] - $posts[ $i - 1 ] if $posts[$i] - $posts[ $i - 1 ] < $min_gap;
}
cmp_ok($min_gap, '>=', 0.9, 'no POST follows a 429 by less than ~1 s') if @posts > 1;

# --- a used-up quota: a 2xx with X-RateLimit-Remaining: 0 ------------------
# (the simulator resets its quota at the top of the hour)
my $to_reset = 3600 - time % 3600;
SKIP:
{
	skip 'too close to the top of the hour for a quota pause', 5 if $to_reset < 60;
	sim_post('/__sim/ratelimit', { remaining => 1 });
	enqueue('sim', 'quota', 6);
	ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'quota %' AND state = 'done'", '1', 30),
		'quota: the request that used up the quota is done');
	ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'quota %' AND state = 'queued'", '5', 10),
		'quota: the other 5 wait, queued');
	is(scalar_sql($node, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'quota %' AND state = 'queued' AND next_attempt_at > now() + interval '50 s'"),
		'5', 'quota: ... until the reset');
	my ($qpid) = worker_pids($node);
	my ($qx0) = scalar_sql($node, 'SELECT txid_current()');
	my $qc0 = cpu_seconds($qpid);
	my $qt0 = time;
	sleep 5;
	my $qcpu = 100 * (cpu_seconds($qpid) - $qc0) / (time - $qt0);
	my $qxids = (scalar_sql($node, 'SELECT txid_current()') - $qx0 - 1) / (time - $qt0);
	note sprintf('quota pause: worker CPU %.1f%%, %.1f xids/s', $qcpu, $qxids);
	cmp_ok($qcpu, '<', 10, 'quota: the worker sleeps through the pause (CPU < 10%)');
	cmp_ok($qxids, '<', 5, 'quota: ... using (almost) no transaction ids');
}

$node->stop('fast');
done_testing();
