# Retries: 429 honours Retry-After; a 5xx or a broken answer is looked up
# by instance name before it is sent again (never a second instance); other
# 4xx fail at once; used-up attempts fail; NOTIFY maestro_trigger tells a
# listener; maestro_retry() queues a failed request again.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

start_simulator();
my $node = maestro_node('retries', conf => <<'EOC');
maestro.rate_limit = 0
maestro.retry_delay = 100ms
maestro.max_attempts = 3
EOC

my $sim = sim_url();
my %fault = (
	s429 => 'key=r429;status=429;retry_after=1;times=2;method=POST',
	s503 => 'key=r503;status=503;times=1;method=POST',
	strunc => 'key=rtrunc;truncate=1;times=1;method=POST',
	sdown => 'key=rdown;status=503;method=POST',
);
for my $s (sort keys %fault)
{
	$node->safe_psql('postgres', qq{
CREATE SERVER $s FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$sim/_fault/$fault{$s}', account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER $s OPTIONS (access_token 'sim-token');
});
}

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN maestro_trigger');

sub enqueue
{
	my ($server, $inputs, $name) = @_;
	return scalar_sql($node, qq{
SET maestro.server = '$server';
SELECT maestro_trigger_async('$WF1', '$inputs', '$name')});
}

# One scenario at a time, so that nothing else (another request's retry, a
# commit) wakes the worker for the one under test.
my $seq0 = sim_max_seq();
my $good = '{"Name": "T", "Email": "t@example.com"}';
my @scenarios = (
	[ r429 => 's429', $good, 'retry 429' ],
	[ r503 => 's503', $good, 'retry 503' ],
	[ rtrunc => 'strunc', $good, 'retry truncated' ],
	[ r400 => 'sim', '{"Name": "No Email"}', 'retry 400' ],
	[ rdown => 'sdown', $good, 'retry down' ],
);
my %id;
for my $s (@scenarios)
{
	my ($k, $server, $inputs, $name) = @$s;
	$id{$k} = enqueue($server, $inputs, $name);
	ok(wait_for($node, "SELECT state IN ('done', 'failed') FROM maestro_trigger_requests WHERE id = $id{$k}", 't'),
		"$k: the request settles (done or failed)");
}

my %row;
for my $k (keys %id)
{
	my @f = split /\|/, scalar_sql($node, qq{
SELECT state, attempts, coalesce(http_status, 0), coalesce(last_error, ''), coalesce(instance_id::text, ''),
       instance_url IS NULL, instance_name
FROM maestro_trigger_requests WHERE id = $id{$k}});
	$row{$k} = { state => $f[0], attempts => $f[1], http_status => $f[2], error => $f[3],
		instance_id => $f[4], no_url => $f[5], name => $f[6] };
}
my $log = [ grep { $_->{seq} > $seq0 } @{ sim_log() } ];
sub traffic
{
	my ($key) = @_;
	return [ sort { $a->{seq} <=> $b->{seq} } grep { $_->{path} =~ /key=\Q$key\E;/ } @$log ];
}
sub sim_named
{
	my ($name) = @_;
	return [ grep { $_->{name} eq $name } @{ sim_instances($WF1) } ];
}

# --- 429 with Retry-After: 1 ---------------------------------------------
{
	my $r = $row{r429};
	my @posts = grep { $_->{method} eq 'POST' } @{ traffic('r429') };
	is("$r->{state} $r->{attempts} $r->{http_status}", 'done 3 201', '429 twice: done at the third attempt');
	is(join(' ', map { $_->{status} } @posts), '429 429 201', '... after exactly 3 POSTs: 429, 429, 201');
	my @t = map { $_->{time} } @posts;
	note sprintf('429 retry_after=1: POSTs at +0, +%.3f, +%.3f s', $t[1] - $t[0], $t[2] - $t[0]) if @t == 3;
	cmp_ok($t[1] - $t[0], '>=', 0.95, '... the second POST waited for Retry-After (1 s)');
	cmp_ok($t[2] - $t[1], '>=', 0.95, '... and so did the third');
	cmp_ok($t[2] - $t[0], '>=', 1.9, '... first to last POST >= ~2 s');
	is(scalar(grep { $_->{method} eq 'GET' } @{ traffic('r429') }), 0,
		'... a 429 is not looked up: Maestro did not act on it');
	is(scalar(@{ sim_named($r->{name}) }), 1, '... one instance with that name');
}

# --- 503 once: looked up, then sent again ----------------------------------
{
	my $r = $row{r503};
	my @t = @{ traffic('r503') };
	is("$r->{state} $r->{attempts} $r->{http_status}", 'done 2 201', '503 once: done at the second attempt');
	is(join(' ', map { "$_->{method} $_->{status}" } @t), 'POST 503 GET 200 POST 201',
		'... POST 503, then GET instances, then POST 201');
	like($t[1]{path} // '', qr{/workflows/\Q$WF1\E/instances$}, '... the GET lists the workflow\'s instances');
	my $inst = sim_named($r->{name});
	is(scalar(@$inst), 1, '... exactly one instance with that name exists');
	is($r->{instance_id}, $inst->[0]{id} // 'none', '... and the request has its id');
}

# --- a broken answer to a trigger Maestro did act on -----------------------
{
	my $r = $row{rtrunc};
	my @t = @{ traffic('rtrunc') };
	is(join(' ', map { $_->{method} } @t), 'POST GET',
		'truncated answer: the request is looked up, not sent again');
	my $inst = sim_named($r->{name});
	is(scalar(@$inst), 1, '... exactly one instance with that name exists');
	is("$r->{state} $r->{instance_id}", 'done ' . ($inst->[0]{id} // 'none'),
		'... and the request is done with that instance');
	is($r->{no_url}, 't', '... instance_url is NULL (only the trigger answer has it)');
	like($r->{error}, qr/found by its name/, '... last_error says how it was found');
}

# --- 400: final at once ----------------------------------------------------
{
	my $r = $row{r400};
	is("$r->{state} $r->{attempts} $r->{http_status}", 'failed 1 400', '400 fails at once: attempts 1, http_status 400');
	like($r->{error}, qr/Email is required/, '... last_error carries the API\'s message');
	note "400 last_error: $r->{error}";
	is(scalar(grep { ($_->{instance_name} // '') eq $r->{name} } @$log), 1, '... one POST only');
}

# --- attempts used up ------------------------------------------------------
my $rd = $row{rdown};
{
	my @t = @{ traffic('rdown') };
	is("$rd->{state} $rd->{attempts} $rd->{http_status}", 'failed 3 503', 'always 503: failed after max_attempts (3)');
	like($rd->{error}, qr/after 3 attempts/, '... last_error says so');
	is(join(' ', map { $_->{method} } @t), 'POST GET POST GET POST',
		'... 3 POSTs, each retry after a look-up');
	is(scalar(@{ sim_named($rd->{name}) }), 0, '... no instance exists');
}

# --- NOTIFY ----------------------------------------------------------------
# poll the listener until all five have been told (or 120 s have passed)
my $notes = '';
my @want = ((map { "$id{$_} done" } qw(r429 r503 rtrunc)), "$id{r400} failed", "$id{rdown} failed");
my $deadline = time + 120;
until ((grep { $notes =~ /payload "\Q$_\E"/ } @want) == @want || time > $deadline)
{
	$notes .= $listener->query('SELECT 1');
	sleep 0.1;
}
for my $k (qw(r429 r503 rtrunc))
{
	like($notes, qr/"maestro_trigger" with payload "$id{$k} done"/, "NOTIFY maestro_trigger '$id{$k} done' ($k)");
}
like($notes, qr/"maestro_trigger" with payload "$id{r400} failed"/, "NOTIFY maestro_trigger '$id{r400} failed' (400)");
like($notes, qr/"maestro_trigger" with payload "$id{rdown} failed"/, "NOTIFY maestro_trigger '$id{rdown} failed' (attempts used up)");
unlike($notes, qr/payload "\d+ (queued|sending)"/, 'no notification for a retry in between');

# --- maestro_retry ---------------------------------------------------------
my ($rc, $out, $err) = $node->psql('postgres', "SELECT maestro_retry($id{r429})");
like($err, qr/maestro request $id{r429} is done, not failed/, 'maestro_retry refuses a done request');
($rc, $out, $err) = $node->psql('postgres', 'SELECT maestro_retry(999999)');
like($err, qr/maestro request 999999 does not exist/, 'maestro_retry: unknown id');

($rc, $out, $err) = $node->psql('postgres', qq{
ALTER SERVER sdown OPTIONS (SET base_url '$sim');
SELECT maestro_retry($id{rdown});
});
is($rc, 0, 'maestro_retry of the failed request succeeds') or diag $err;
ok(wait_for($node, "SELECT state || ' ' || attempts FROM maestro_trigger_requests WHERE id = $id{rdown}", 'done 1'),
	'after maestro_retry the request is sent again and done (attempts start over)');
my @posts = grep { ($_->{instance_name} // '') eq $rd->{name} } @{ sim_log(method => 'POST') };
is(scalar(@posts), 4, '... a fourth POST went out');
is(scalar(@{ sim_named($rd->{name}) }), 1, '... one instance with that name exists');
$notes = '';
$deadline = time + 120;
until ($notes =~ /payload "$id{rdown} done"/ || time > $deadline)
{
	$notes .= $listener->query('SELECT 1');
	sleep 0.1;
}
like($notes, qr/"maestro_trigger" with payload "$id{rdown} done"/, "NOTIFY maestro_trigger '$id{rdown} done' after the retry");

$listener->quit;
$node->stop;
done_testing();
