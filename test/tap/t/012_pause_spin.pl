# What an operator watches while the worker has nothing it may send: its
# CPU, the transaction ids and the WAL it uses up, and the POSTs Maestro
# receives.
#
# Defect 2 (issue 9): while pacing (rate_limit below max_concurrency, a
# backlog queued) the worker claimed every ~10 ms, ~100 transactions a
# second to send 10: a claim must happen when there is room to send.
#
# Defect 1: one request answered 429 with Retry-After: 60 and 20 more queued
# for that server: the worker spun at 99% CPU, ~14,000 xids/s and ~16 MB/s
# of WAL for the whole pause, sending nothing; the same when the hourly
# quota is used up (a 2xx with X-RateLimit-Remaining: 0): 16,000 xids/s,
# 18 MB/s of WAL. Paused, it must be idle, and requests it had claimed for
# the paused server go back to the queue.
#
# Defect 5: a 429 without Retry-After paused nothing (the next POST left
# 1-5 ms later): it must pause the server for at least a second.
# (Merged from two helpers' tests of the same defects, 012 and 030.)
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

start_simulator();
my $node = maestro_node('pause', conf => <<'EOC');
maestro.rate_limit = 10
maestro.max_concurrency = 16
maestro.retry_delay = 100ms
maestro.max_attempts = 100
EOC
my $sim = sim_url();

# Sample the worker over a window of $secs seconds: CPU seconds, xids
# assigned, WAL bytes written, and whether the same worker ran throughout.
sub watch
{
	my ($secs) = @_;
	my ($pid) = worker_pids($node);
	my $cpu0 = cpu_seconds($pid);
	my $xid0 = next_xid($node);
	my $lsn0 = wal_lsn($node);
	my $t0 = time;
	sleep 0.2 while time < $t0 + $secs;
	my $cpu1 = cpu_seconds($pid);
	my $xids = next_xid($node) - $xid0;
	my $wal = wal_bytes_since($node, $lsn0);
	my $elapsed = time - $t0;
	my ($pid1) = worker_pids($node);
	return {
		pid => $pid, same => (defined $pid1 && $pid1 == $pid), t0 => $t0, t1 => $t0 + $elapsed,
		cpu => (defined $cpu1 ? $cpu1 - $cpu0 : -1) / $elapsed, xids => $xids / $elapsed,
		wal => $wal / $elapsed, secs => $elapsed };
}

# --- defect 2: pacing ---------------------------------------------------------
my $seq0 = sim_max_seq();
enqueue_batch($node, 'paced', 80);
ok(wait_for($node, "SELECT count(*) > 0 FROM maestro_trigger_requests WHERE state = 'done'", 't', 30),
	'paced: the first requests are sent');
my $w = watch(4);
my @posts = grep { $_->{seq} > $seq0 && $_->{time} >= $w->{t0} && $_->{time} < $w->{t1} }
  @{ sim_log(method => 'POST') };
my $rate = @posts / $w->{secs};
note sprintf('paced (rate_limit 10, max_concurrency 16): %.1f POSTs/s, %.1f xids/s, %.0f WAL bytes/s, worker CPU %.1f%%',
	$rate, $w->{xids}, $w->{wal}, 100 * $w->{cpu});
ok($w->{same}, 'paced: the same worker ran throughout');
cmp_ok($rate, '>', 4, 'paced: requests were being sent during the window');
cmp_ok($rate, '<=', 11, '... within the rate limit');
# a claim and a record per request, with room to spare: not one every 10 ms
cmp_ok($w->{xids}, '<', 3 * $rate + 5,
	'paced: fewer than 3 transaction ids per request sent (no re-claim while waiting for a slot)');
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state = 'done'", '80', 60),
	'paced: all 80 requests are done');

# --- defect 1: a server paused by a 429 with Retry-After: 60 -------------------
add_server($node, 'p', '/_fault/key=p429;status=429;retry_after=60;times=1;method=POST');
enqueue_batch($node, 'paused first', 1, 'p');
my $deadline = time + 30;
sleep 0.05 while sim_fault_count('p429') < 1 && time < $deadline;
ok(wait_for($node, "SELECT state || ' ' || http_status FROM maestro_trigger_requests WHERE instance_name LIKE 'paused first %'",
	'queued 429', 30), 'paused: the first request got 429 and is queued again');
$seq0 = sim_max_seq();
enqueue_batch($node, 'paused more', 20, 'p');
is(scalar_sql($node, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'paused more %'"),
	'20', 'paused: 20 more requests are queued for the paused server');

$w = watch(10);
note sprintf('paused by Retry-After: 60 with 20 queued, over %.1f s: worker CPU %.1f%%, %.1f xids/s, %.0f WAL bytes/s',
	$w->{secs}, 100 * $w->{cpu}, $w->{xids}, $w->{wal});
ok($w->{same}, 'paused: the same worker ran throughout (it waits, it does not exit)');
cmp_ok($w->{cpu}, '<', 0.10, 'paused: worker CPU below 10%');
cmp_ok($w->{xids}, '<', 5, 'paused: fewer than 5 transaction ids a second');
cmp_ok($w->{wal}, '<', 20000, 'paused: less than 20 kB of WAL a second');
is(scalar(grep { $_->{seq} > $seq0 && $_->{method} eq 'POST' } @{ sim_log() }), 0,
	'paused: no POST went out during the pause');
is(states_of($node, "instance_name LIKE 'paused %'")->{done} // 0, 0, 'paused: none of the 21 requests is done');
is(states_of($node, "instance_name LIKE 'paused %'")->{failed} // 0, 0, 'paused: none of them failed');

# --- claimed requests of a server that gets paused go back to the queue ----
$node->safe_psql('postgres', qq{
CREATE SERVER p60b FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$sim/_fault/key=p60b;status=429;retry_after=60;times=1;method=POST', account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER p60b OPTIONS (access_token 'sim-token');});
enqueue_batch($node, 'p60b', 6, 'p60b');
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'p60b %' AND http_status = 429", '1', 30),
	'a second server: its first request got 429 with Retry-After: 60');
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'p60b %' AND state = 'sending'", '0', 10),
	'... and none of its requests stays claimed (sending) through the pause');
is(scalar_sql($node, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'p60b %' AND state = 'queued' AND next_attempt_at > now() + interval '40 s'"),
	'6', '... all 6 wait, queued, for the end of the pause');
is(scalar_sql($node, "SELECT sum(attempts) || ' ' || count(sent_at) FROM maestro_trigger_requests WHERE instance_name LIKE 'p60b %'"),
	'1 1', '... and only the one that was sent counts an attempt and has a sent_at');

# (queued, not claimed: safe to delete, so that their pause cannot end
# during the quota's window below)
$node->safe_psql('postgres', "DELETE FROM maestro_trigger_requests WHERE instance_name LIKE 'p60b %'");



# --- defect 1, the quota: a 2xx with X-RateLimit-Remaining: 0 ---------------
# the server is paused until X-RateLimit-Reset, the next top of the hour
$node->safe_psql('postgres', "DELETE FROM maestro_trigger_requests WHERE instance_name LIKE 'paused %'");
SKIP:
{
	skip 'too close to the top of the hour, when the quota resets', 10 if 3600 - time % 3600 < 90;
	sim_post('/__sim/ratelimit', { remaining => 1 });
	enqueue_batch($node, 'quota first', 6, 'sim');
	ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'quota first %' AND state = 'done'", '1', 30),
		'quota: the request that used up the quota is done');
	ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'quota first %' AND state = 'queued'", '5', 10),
		'quota: the other 5 claimed with it wait, queued');
	is(scalar_sql($node, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name LIKE 'quota first %' AND state = 'queued'"
		. " AND next_attempt_at > now() + interval '50 s'"), '5', 'quota: ... until the reset');
	$seq0 = sim_max_seq();
	enqueue_batch($node, 'quota more', 20, 'sim');
	$w = watch(10);
	note sprintf('paused by X-RateLimit-Remaining: 0 with 20 queued, over %.1f s: worker CPU %.1f%%, %.1f xids/s, %.0f WAL bytes/s',
		$w->{secs}, 100 * $w->{cpu}, $w->{xids}, $w->{wal});
	ok($w->{same}, 'quota: the same worker ran throughout');
	cmp_ok($w->{cpu}, '<', 0.10, 'quota: worker CPU below 10%');
	cmp_ok($w->{xids}, '<', 5, 'quota: fewer than 5 transaction ids a second');
	cmp_ok($w->{wal}, '<', 20000, 'quota: less than 20 kB of WAL a second');
	is(scalar(grep { $_->{seq} > $seq0 && $_->{method} eq 'POST' } @{ sim_log() }), 0,
		'quota: no POST went out while the quota was used up');
	is(states_of($node, "instance_name LIKE 'quota more %'")->{queued} // 0, 20, 'quota: the 20 more wait, queued');
	sim_post('/__sim/ratelimit', { remaining => 3000 });
}

# --- defect 5: 429 without Retry-After: every answer is 429 ----------------
add_server($node, 'pnone', '/_fault/key=pnone;status=429;method=POST');
enqueue_batch($node, 'pnone', 10, 'pnone');
my $t_pnone = time;
sleep 0.1 while time < $t_pnone + 3.5;
my @gaps = sort { $a <=> $b } map { $_->{time} } grep { $_->{path} =~ /key=pnone;/ } @{ sim_log(method => 'POST') };
note sprintf('429 without Retry-After, 10 requests: %d POSTs in the first 3.5 s; gaps %s', scalar(@gaps),
	join(' ', map { sprintf '%.3f', $gaps[$_] - $gaps[ $_ - 1 ] } 1 .. $#gaps));
cmp_ok(scalar(@gaps), '>=', 1, 'pnone: the server got the first POST');
cmp_ok(scalar(@gaps), '<=', 6, 'pnone: a 429 without Retry-After pauses the server: at most 6 POSTs in 3.5 s');
my $min_gap = 99;
for my $i (1 .. $#gaps)
{
	$min_gap = $gaps[$i] - $gaps[ $i - 1 ] if $gaps[$i] - $gaps[ $i - 1 ] < $min_gap;
}
cmp_ok($min_gap, '>=', 0.9, 'pnone: no POST follows a 429 by less than ~1 s') if @gaps > 1;

$node->stop;
done_testing();
