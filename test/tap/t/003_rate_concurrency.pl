# maestro.rate_limit and maestro.max_concurrency hold, as Maestro sees it:
# measured from the simulator's request log (each entry's "time" is when
# the request arrived). Arrival times carry the jitter of a loaded machine
# (tens of ms), so the rate is judged over windows long enough for that
# not to matter; concurrency is judged in the simulator's own clock, which
# has no jitter to allow for (a slot frees only when an answer has left).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

start_simulator();
my $node = maestro_node('rate', conf => "maestro.rate_limit = 10\nmaestro.max_concurrency = 16\n");

sub trigger_posts_since
{
	my ($seq) = @_;
	return [ sort { $a->{time} <=> $b->{time} }
		  grep { $_->{seq} > $seq && $_->{path} =~ m{/actions/trigger$} }
		  @{ sim_log(method => 'POST') } ];
}

# --- rate limit: 60 requests at 10 a second -------------------------------

my $seq = sim_max_seq();
$node->safe_psql('postgres', qq{
SELECT maestro_trigger_async('$WF1', '{"Name": "R", "Email": "r\@example.com"}', 'rate ' || g)
FROM generate_series(1, 60) g});
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state = 'done'", '60'),
	'60 rate-limited requests are done');
my $posts = trigger_posts_since($seq);
is(scalar(@$posts), 60, 'the simulator received 60 trigger POSTs');
my @t = map { $_->{time} } @$posts;
my $span = $t[-1] - $t[0];
my $most = max_in_window(1.0, @t);
my $most5 = max_in_window(5.0, @t);
my $burst = max_in_window(0.3, @t);
my $tightest = 99;
for my $i (0 .. $#t - 10)
{
	$tightest = $t[ $i + 10 ] - $t[$i] if $t[ $i + 10 ] - $t[$i] < $tightest;
}
note sprintf('rate_limit 10: %d POSTs over %.3f s; most in any 1 s window: %d, in any 5 s: %d, '
	  . 'in any 300 ms: %d; shortest time spanning 11 POSTs: %.3f s',
	scalar(@t), $span, $most, $most5, $burst, $tightest);
# the worker spaces its sends 105 ms apart: 48 arrive in 5 s; 51 would take
# arrivals squeezed by 250 ms, or sends more than 10 a second
cmp_ok($most5, '<=', 50, 'at most 50 POSTs arrived in any 5-second window (10 a second)')
  or diag 'arrivals (s after the first): ' . join(' ', map { sprintf '%.3f', $_ - $t[0] } @t);
# spaced, not in bursts: 3 in 300 ms; a burst of a second's worth would be 10
cmp_ok($burst, '<=', 5, 'at most 5 POSTs arrived in any 300 ms (no bursts)')
  or diag 'arrivals (s after the first): ' . join(' ', map { sprintf '%.3f', $_ - $t[0] } @t);
cmp_ok($span, '>=', 4.9, '60 requests at 10/s take at least ~5 s');
cmp_ok($span, '<', 20, '... and not much longer (the limit is used, not undershot)');

# --- concurrency: 4 in flight at most -------------------------------------

$node->safe_psql('postgres', qq{
ALTER SYSTEM SET maestro.rate_limit = 0;
ALTER SYSTEM SET maestro.max_concurrency = 4;
SELECT pg_reload_conf();
ALTER SERVER sim OPTIONS (SET base_url '@{[ sim_url() ]}/_fault/key=slow;latency_ms=1000');
});
# the next batch gets a worker started with the new settings
ok(defined wait_for_worker_exit($node, 60), 'the worker of the first batch has exited');
$seq = sim_max_seq();
my $t0 = time;
$node->safe_psql('postgres', qq{
SELECT maestro_trigger_async('$WF1', '{"Name": "C", "Email": "c\@example.com"}', 'conc ' || g)
FROM generate_series(1, 20) g});
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state = 'done'", '80'),
	'20 slow requests are done');
my $elapsed = time - $t0;
$posts = trigger_posts_since($seq);
is(scalar(@$posts), 20, 'the simulator received 20 trigger POSTs');
@t = map { $_->{time} } @$posts;
# each request is in Maestro's hands for at least its 1 s latency
my $overlap = max_overlap(1.0, @t);
# and the worker can start the next one only after an answer: never 5
# arrivals within 1 s
$burst = max_in_window(1.0, @t);
note sprintf('max_concurrency 4, 1 s latency: 20 requests in %.2f s (first to last arrival %.2f s); '
	  . 'most in flight at once %d; most arrivals in any 1 s %d', $elapsed, $t[-1] - $t[0], $overlap, $burst);
cmp_ok($overlap, '<=', 4, 'at most 4 requests were in flight at once');
cmp_ok($burst, '<=', 4, 'never 5 arrivals within the 1 s a request takes');
is($overlap, 4, 'and the 4 slots were used');
cmp_ok($t[-1] - $t[0] + 1.0, '>=', 5, '20 x 1 s at concurrency 4 take at least 5 s');
cmp_ok($elapsed, '<', 15, '... and much less than the 20 s they take one at a time');

$node->stop;
done_testing();
