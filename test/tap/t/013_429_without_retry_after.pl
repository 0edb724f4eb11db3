# Defect 5 (issue 9): a 429 without Retry-After paused nothing. libcurl
# reports CURLINFO_RETRY_AFTER as 0 when the header is absent, so the pause
# was 0 s and the next POST left 1-5 ms later. DocuSign does not document
# Retry-After on its 429s, so this is the normal case: after a 429 the
# server gets nothing for at least a second.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MaestroTAP;

start_simulator();
# one request in flight at a time, so that the gap between POSTs is the
# pause after a 429 and nothing else
my $node = maestro_node('no_retry_after', no_setup => 1, conf => <<'EOC');
maestro.rate_limit = 0
maestro.max_concurrency = 1
EOC
$node->safe_psql('postgres', 'CREATE EXTENSION maestro');
add_server($node, 'busy', '/_fault/key=n429;status=429;method=POST');

enqueue_batch($node, 'busy', 5);
my $deadline = time + 60;
my @posts;
while (time < $deadline)
{
	@posts = grep { ($_->{fault} // '') =~ /key=n429/ } @{ sim_log(method => 'POST') };
	last if @posts >= 4;
	sleep 0.1;
}
is(scalar(grep { $_->{status} == 429 } @posts), scalar(@posts), 'every POST was answered 429 (no Retry-After)');
cmp_ok(scalar(@posts), '>=', 4, 'four POSTs arrived within 60 s');

my @t = sort { $a <=> $b } map { $_->{time} } @posts[ 0 .. 3 ];
my @gaps = map { $t[$_] - $t[ $_ - 1 ] } 1 .. $#t;
my ($min) = sort { $a <=> $b } @gaps;
note sprintf('gaps between the first four POSTs after 429s without Retry-After: %s s',
	join(', ', map { sprintf '%.3f', $_ } @gaps));
cmp_ok($min, '>=', 0.95, 'after a 429 without Retry-After the next POST waits at least a second');
cmp_ok(scalar(grep { $_->{time} < $t[0] + 1 } @posts), '<=', 1,
	'... at most one POST in the first second');

$node->stop;
done_testing();
