# A 2xx answer to a queued trigger that names no instance (the spec
# requires no field): the request is done, never sent again, and its
# instance_id is found by the instance's tagged name; when no instance of
# that name is listed, it is done without one, and last_error says why.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MaestroTAP;

start_simulator();
my $node = maestro_node('without_id', conf => <<'EOC');
maestro.rate_limit = 0
maestro.retry_delay = 100ms
EOC

my $sim = sim_url();
my %fault = (
	noid => 'key=noid;strip=instance_id,instance_url;method=POST',
	empty => 'key=empty;status=201;body=%7B%7D;method=POST',
);
for my $s (sort keys %fault)
{
	$node->safe_psql('postgres', qq{
CREATE SERVER $s FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$sim/_fault/$fault{$s}', account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER $s OPTIONS (access_token 'sim-token');
});
}
my $good = '{"Name": "N", "Email": "n@example.com"}';

sub enqueue_and_settle
{
	my ($server, $name) = @_;
	my $id = scalar_sql($node, qq{
SET maestro.server = '$server';
SELECT maestro_trigger_async('$WF1', '$good', '$name')});
	ok(wait_for($node, "SELECT state IN ('done', 'failed') FROM maestro_trigger_requests WHERE id = $id", 't', 60),
		"$server: the request settles");
	my @f = split /\|/, scalar_sql($node, qq{
SELECT state, attempts, coalesce(http_status, 0), coalesce(instance_id::text, ''),
       instance_url IS NULL, coalesce(last_error, ''), instance_name
FROM maestro_trigger_requests WHERE id = $id});
	return { id => $id, state => $f[0], attempts => $f[1], http_status => $f[2],
		instance_id => $f[3], no_url => $f[4], error => $f[5], name => $f[6] };
}

# --- the trigger started an instance, the answer does not say which --------
{
	my $seq0 = sim_max_seq();
	my $r = enqueue_and_settle('noid', 'no id in the answer');
	my @posts = grep { $_->{seq} > $seq0 && $_->{method} eq 'POST' && $_->{path} =~ /key=noid;/ } @{ sim_log() };
	my $inst = [ grep { $_->{name} eq $r->{name} } @{ sim_instances($WF1) } ];

	is("$r->{state} $r->{attempts} $r->{http_status}", 'done 1 201', 'no instance_id: done at the first attempt, HTTP 201');
	is(scalar(@posts), 1, '... after exactly one POST (never sent again)');
	is(scalar(@$inst), 1, '... one instance of that name exists');
	is($r->{instance_id}, $inst->[0]{id} // 'none', '... and the request has its id, found by the name');
	is($r->{no_url}, 't', '... the instance_url stays unknown');
	like($r->{error}, qr/found by its name/, '... last_error says how the id was found');
	is(scalar_sql($node, "SELECT count(*) FROM maestro_synced_instances WHERE id = '$r->{instance_id}'"), '1',
		'... and the started instance is in the mirror');
}

# --- nothing started, as far as the list shows: done, without an id -------
{
	my $seq0 = sim_max_seq();
	my $r = enqueue_and_settle('empty', 'answer without anything');
	my @posts = grep { $_->{seq} > $seq0 && $_->{method} eq 'POST' && $_->{path} =~ /key=empty;/ } @{ sim_log() };

	is("$r->{state} $r->{attempts} $r->{http_status}", 'done 1 201',
		'empty answer: done (a 2xx is never sent again), HTTP 201');
	is(scalar(@posts), 1, '... after exactly one POST');
	is($r->{instance_id}, '', '... no instance of that name is listed: no instance_id');
	like($r->{error}, qr/no instance of that name was listed/, '... and last_error says so');
}

done_testing();
