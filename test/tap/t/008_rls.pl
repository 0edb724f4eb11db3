# Row-level security and privileges of the queue: each role sees and
# retries only its own requests, which go out with its own user mapping; no
# role can write the queue table directly; a role without a user mapping (or
# without USAGE) cannot enqueue.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MaestroTAP;

start_simulator('--token', 'bob-token');
my $node = maestro_node('rls', conf => "maestro.rate_limit = 0\n");
$node->safe_psql('postgres', q{
CREATE ROLE alice LOGIN;
CREATE ROLE bob LOGIN;
CREATE ROLE carol LOGIN;
CREATE ROLE dave LOGIN;
CREATE ROLE eve LOGIN;
GRANT USAGE ON FOREIGN SERVER sim TO alice, bob, carol, eve;
CREATE USER MAPPING FOR alice SERVER sim OPTIONS (access_token 'sim-token');
CREATE USER MAPPING FOR bob SERVER sim OPTIONS (access_token 'bob-token');
CREATE USER MAPPING FOR eve SERVER sim OPTIONS (access_token 'not-a-valid-token');
});

sub as
{
	my ($role, $sql) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', $sql, extra_params => [ '-U', $role ]);
	return wantarray ? ($rc, $out, $err) : $out;
}

sub enqueue_as
{
	my ($role, $name, $inputs) = @_;
	$inputs //= '{"Name": "R", "Email": "r@example.com"}';
	my ($rc, $out, $err) = as($role, "SELECT maestro_trigger_async('$WF1', '$inputs', '$name')");
	return ($rc, $out, $err);
}

my %ids;
for my $r ([ alice => 'alice 1' ], [ alice => 'alice 2' ], [ bob => 'bob 1' ], [ bob => 'bob 2' ],
	[ bob => 'bob 3' ], [ eve => 'eve 1' ])
{
	my ($rc, $id, $err) = enqueue_as(@$r);
	is($rc, 0, "$r->[0] can enqueue ($r->[1])") or diag $err;
	push @{ $ids{ $r->[0] } }, $id;
}
my ($rc, $bad, $err) = enqueue_as('alice', 'alice bad', '{"Name": "No Email"}');
push @{ $ids{alice} }, $bad;

ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state IN ('done', 'failed')", '7', 180),
	'all 7 requests settle');

# --- each role sees its own ---------------------------------------------------

is(as('alice', "SELECT count(*), count(*) FILTER (WHERE requested_by = 'alice'::regrole) FROM maestro_trigger_requests"),
	'3|3', 'alice sees her 3 requests and nothing else');
is(as('bob', "SELECT count(*), count(*) FILTER (WHERE requested_by = 'bob'::regrole) FROM maestro_trigger_requests"),
	'3|3', 'bob sees his 3 requests and nothing else');
is(as('carol', 'SELECT count(*) FROM maestro_trigger_requests'), '0', 'carol sees none');
is(as('bob', "SELECT count(*) FROM maestro_trigger_requests WHERE id = $ids{alice}[0]"), '0',
	'bob cannot see alice\'s request by its id');
is(scalar_sql($node, 'SELECT count(*) FROM maestro_trigger_requests'), '7', 'the superuser sees all 7');

# --- each request goes out with its role's own user mapping ---------------------

is(as('alice', "SELECT string_agg(state, ',' ORDER BY id) FROM maestro_trigger_requests"),
	'done,done,failed', 'alice: two done, the one missing an input failed');
is(as('bob', "SELECT string_agg(state, ',' ORDER BY id) FROM maestro_trigger_requests"),
	'done,done,done', 'bob\'s requests, sent with bob\'s token, are done');
is(as('eve', "SELECT state || ' ' || http_status FROM maestro_trigger_requests"),
	'failed 401', 'eve\'s request went out with eve\'s (invalid) token and failed with 401');
my @eve_posts = grep { ($_->{instance_name} // '') =~ /^eve 1 / } @{ sim_log(method => 'POST') };
is(join(',', map { $_->{auth} } @eve_posts), 'bad', 'the simulator saw eve\'s request with a bad token, once');

# --- maestro_retry --------------------------------------------------------------

($rc, my $out, $err) = as('bob', "SELECT maestro_retry($bad)");
isnt($rc, 0, 'bob cannot retry alice\'s failed request');
like($err, qr/maestro request $bad does not exist/, '... it "does not exist" for him');
is(scalar_sql($node, "SELECT state FROM maestro_trigger_requests WHERE id = $bad"), 'failed', '... and it stays failed');

($rc, $out, $err) = as('alice', "SELECT maestro_retry($bad)");
is($rc, 0, 'alice can retry her own failed request') or diag $err;
ok(wait_for($node, "SELECT state || ' ' || attempts FROM maestro_trigger_requests WHERE id = $bad", 'failed 1', 180),
	'... it was sent again (and failed again: the input is still missing)');
is(scalar(grep { ($_->{instance_name} // '') =~ /^alice bad / } @{ sim_log(method => 'POST') }), 2,
	'... two POSTs in all');

# --- no direct writes -------------------------------------------------------------

my %dml = (
	INSERT => "INSERT INTO maestro_trigger_requests (server_id, requested_by, workflow_id, inputs, instance_name)"
	  . " SELECT oid, 'alice', '$WF1', '{}', 'forged' FROM pg_foreign_server WHERE srvname = 'sim'",
	UPDATE => "UPDATE maestro_trigger_requests SET state = 'queued' WHERE id = $ids{alice}[0]",
	DELETE => "DELETE FROM maestro_trigger_requests WHERE id = $ids{alice}[0]",
	TRUNCATE => 'TRUNCATE maestro_trigger_requests',
	nextval => "SELECT nextval('maestro_trigger_requests_id_seq')",
);
for my $role (qw(alice bob))
{
	for my $op (sort keys %dml)
	{
		($rc, $out, $err) = as($role, $dml{$op});
		like($err, qr/permission denied for (table|sequence) maestro_trigger_requests/, "$role cannot $op the queue directly");
	}
}
is(scalar_sql($node, "SELECT count(*) || ' ' || count(*) FILTER (WHERE state = 'done') FROM maestro_trigger_requests"),
	'7 5', 'the queue is unchanged');

# --- no user mapping, no USAGE: no enqueue -------------------------------------------

($rc, $out, $err) = enqueue_as('carol', 'carol 1');
isnt($rc, 0, 'carol (USAGE, no user mapping) cannot enqueue');
like($err, qr/role "carol" has no user mapping for maestro server "sim"/, '... the error says why');
($rc, $out, $err) = enqueue_as('dave', 'dave 1');
isnt($rc, 0, 'dave (no USAGE on the server) cannot enqueue');
like($err, qr/permission denied for maestro server "sim"/, '... the error says why');
$node->safe_psql('postgres', qq{
CREATE TABLE carols (email text);
GRANT INSERT ON carols TO carol;
CREATE TRIGGER q AFTER INSERT ON carols FOR EACH ROW
  EXECUTE FUNCTION maestro_enqueue_trigger('$WF1', '{"Email": "email"}');});
($rc, $out, $err) = as('carol', "INSERT INTO carols VALUES ('c\@example.com')");
like($err, qr/role "carol" has no user mapping/, 'carol\'s row trigger fails at the insert too');
is(scalar_sql($node, 'SELECT count(*) FROM maestro_trigger_requests'), '7', 'nothing was queued for carol or dave');

$node->stop;
done_testing();
