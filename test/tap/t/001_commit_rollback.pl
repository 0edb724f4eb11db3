# Requests are sent after commit and never after rollback; the row trigger
# maestro_enqueue_trigger() maps columns to typed inputs and names the
# instance from its template; bad trigger arguments fail at the first insert.
use strict;
use warnings;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);
use MaestroTAP;

start_simulator();
my $node = maestro_node('commit');
my $json = JSON::PP->new->canonical;

# --- commit vs rollback ---------------------------------------------------

my $seq0 = sim_max_seq();
my ($rc, $out, $err) = $node->psql('postgres', qq{
BEGIN;
SELECT maestro_trigger_async('$WF1', '{"Name": "R", "Email": "r\@example.com"}', 'rolled back ' || g)
FROM generate_series(1, 5) g;
ROLLBACK;

BEGIN;
SELECT maestro_trigger_async('$WF1', '{"Name": "E", "Email": "e\@example.com"}', 'aborted by error');
SELECT 1/0;
COMMIT;

BEGIN;
SELECT maestro_trigger_async('$WF1', '{"Name": "S", "Email": "s\@example.com"}', 'savepoint kept');
SAVEPOINT s;
SELECT maestro_trigger_async('$WF1', '{"Name": "S", "Email": "s\@example.com"}', 'savepoint rolled back');
ROLLBACK TO SAVEPOINT s;
COMMIT;

BEGIN;
SELECT maestro_trigger_async('$WF1', format('{"Name": "C%s", "Email": "c%s\@example.com"}', g, g)::jsonb,
                             'committed ' || g)
FROM generate_series(1, 5) g;
COMMIT;
}, on_error_stop => 0);
like($err, qr/division by zero/, 'the transaction that failed did fail');

ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state = 'done'", '6'),
	'the 6 committed requests are done');
# the rolled-back ones had every chance to go out: a request queued after
# them all is done
ok(send_marker($node, 'marker 1'), 'a request queued after them all is done');

is(scalar_sql($node, "SELECT count(*) FROM maestro_trigger_requests WHERE instance_name NOT LIKE 'marker %'"),
	'6', 'only committed requests are in the queue table');

my @posts = grep { $_->{seq} > $seq0 && $_->{path} =~ m{/actions/trigger$}
	  && ($_->{instance_name} // '') !~ /^marker / } @{ sim_log(method => 'POST') };
my @rolled = grep { ($_->{instance_name} // '') =~ /^(rolled back|aborted by error|savepoint rolled back)/ } @posts;
is(scalar(@rolled), 0, 'nothing from a rolled-back transaction or subtransaction reached Maestro');

my %posted;
$posted{ $_->{instance_name} }++ for @posts;
my $rows = scalar_sql($node, q{
SELECT id, instance_name, state, http_status, attempts, instance_id, instance_url IS NOT NULL,
       instance_url LIKE 'http%mtsec=%', sent_at IS NOT NULL, done_at IS NOT NULL
FROM maestro_trigger_requests WHERE instance_name NOT LIKE 'marker %' ORDER BY id});
my @rows = map { [ split /\|/ ] } split /\n/, $rows;
is(scalar(@rows), 6, 'six rows');
is(scalar(@posts), 6, 'the simulator received exactly 6 trigger POSTs');
my %sim_ids = map { $_->{name} => $_->{id} } @{ sim_instances($WF1) };
for my $r (@rows)
{
	my ($id, $name, $state, $status, $attempts, $iid, $has_url, $url_ok, $sent, $done) = @$r;
	like($name, qr/^(committed \d|savepoint kept) \[mq \Q$id\E-[0-9a-f]{8}\]$/,
		"request $id: instance name carries [mq id-tag]");
	is("$state $status $attempts", 'done 201 1', "request $id: done at the first attempt with 201");
	is($posted{$name} // 0, 1, "request $id: POSTed exactly once");
	is($iid, $sim_ids{$name} // 'missing', "request $id: instance_id is the simulator's instance of that name");
	is("$has_url $url_ok $sent $done", 't t t t', "request $id: instance_url, sent_at, done_at set");
}

# --- maestro_enqueue_trigger end to end ----------------------------------

$seq0 = sim_max_seq();
$node->safe_psql('postgres', qq{
CREATE TABLE customers (id serial PRIMARY KEY, full_name text, email text, company text);
CREATE TRIGGER onboard AFTER INSERT ON customers FOR EACH ROW
  EXECUTE FUNCTION maestro_enqueue_trigger('$WF1', '{"Email": "email", "Name": "full_name"}', 'Onboard {email}');
CREATE TABLE orders (id int PRIMARY KEY, amount numeric, approver text, urgent boolean);
CREATE TRIGGER approve AFTER INSERT ON orders FOR EACH ROW
  EXECUTE FUNCTION maestro_enqueue_trigger('$WF2', '{"Amount": "amount", "Approver": "approver", "Urgent": "urgent"}',
                                           'PO-{id} for {approver}');
INSERT INTO customers (full_name, email, company) VALUES
  ('Ada Lovelace', 'ada\@example.com', 'Analytical'),
  ('Grace Hopper', 'grace\@example.com', NULL);
BEGIN;
INSERT INTO customers (full_name, email) VALUES ('Not Committed', 'nc\@example.com');
ROLLBACK;
INSERT INTO orders VALUES (1001, 1250.50, 'ops\@example.com', true), (1002, 7, 'fin\@example.com', false);
});
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state = 'done'", '11'),
	'the 4 rows inserted by committed statements are sent');
ok(send_marker($node, 'marker 2'), 'a request queued after the rolled-back insert is done');

@posts = grep { $_->{seq} > $seq0 && $_->{path} =~ m{/actions/trigger$}
	  && ($_->{instance_name} // '') !~ /^marker / } @{ sim_log(method => 'POST') };
is(scalar(@posts), 4, 'four trigger POSTs, none for the rolled-back insert');
my %by_prefix;
for my $p (@posts)
{
	my ($prefix) = $p->{instance_name} =~ /^(.*) \[mq \d+-[0-9a-f]{8}\]$/;
	$by_prefix{ $prefix // $p->{instance_name} } = $p;
}
is_deeply([ sort keys %by_prefix ],
	[ 'Onboard ada@example.com', 'Onboard grace@example.com',
	  'PO-1001 for ops@example.com', 'PO-1002 for fin@example.com' ],
	'instance names come from the template');
is($json->encode($by_prefix{'Onboard ada@example.com'}{body}{trigger_inputs}),
	'{"Email":"ada@example.com","Name":"Ada Lovelace"}',
	'customer inputs are the mapped columns, nothing else');
is($json->encode($by_prefix{'PO-1001 for ops@example.com'}{body}{trigger_inputs}),
	'{"Amount":1250.5,"Approver":"ops@example.com","Urgent":true}',
	'a numeric column arrives as a JSON number, a boolean as a JSON boolean');
is($json->encode($by_prefix{'PO-1002 for fin@example.com'}{body}{trigger_inputs}),
	'{"Amount":7,"Approver":"fin@example.com","Urgent":false}',
	'second order: typed inputs');

# --- bad trigger arguments ------------------------------------------------

my @bad = (
	[ 'bad_uuid', q{'not-a-uuid', '{"Email": "email"}'}, qr/trigger "bad_uuid" on table public\.bad_uuid_t: the workflow id 'not-a-uuid' is not a uuid/ ],
	[ 'bad_map', qq{'$WF1', '["email"]'}, qr/trigger "bad_map" on table public\.bad_map_t: the input mapping must be a JSON object/ ],
	[ 'bad_json', qq{'$WF1', 'email'}, qr/trigger "bad_json" on table public\.bad_json_t: the input mapping must be a JSON object/ ],
	[ 'bad_col', qq{'$WF1', '{"Email": "e_mail"}'}, qr/trigger "bad_col" on table public\.bad_col_t: input "Email" maps to "e_mail", which is not a column/ ],
	[ 'bad_name', qq{'$WF1', '{"Email": "email"}', 'Hi {nobody}'}, qr/trigger "bad_name" on table public\.bad_name_t: the instance name refers to \{nobody\}/ ],
	[ 'bad_nargs', qq{'$WF1'}, qr/trigger "bad_nargs" on table public\.bad_nargs_t: maestro_enqueue_trigger\(\) takes 2 or 3 arguments/ ],
);
my $before = scalar_sql($node, 'SELECT count(*) FROM maestro_trigger_requests');
for my $b (@bad)
{
	my ($name, $args, $re) = @$b;
	$node->safe_psql('postgres', qq{
CREATE TABLE ${name}_t (id serial, email text);
CREATE TRIGGER $name AFTER INSERT ON ${name}_t FOR EACH ROW EXECUTE FUNCTION maestro_enqueue_trigger($args);
});
	my ($rc, $out, $err) = $node->psql('postgres', "INSERT INTO ${name}_t (email) VALUES ('x\@example.com')");
	isnt($rc, 0, "$name: the first insert fails");
	like($err, $re, "$name: the error names the trigger, the table and the problem");
	is(scalar_sql($node, "SELECT count(*) FROM ${name}_t"), '0', "$name: the row is not inserted");
}
is(scalar_sql($node, 'SELECT count(*) FROM maestro_trigger_requests'), $before,
	'bad triggers queued nothing');

# --- only the served database can queue -----------------------------------

$node->safe_psql('postgres', 'CREATE DATABASE other');
maestro_setup($node, 'other');
($rc, $out, $err) = $node->psql('other',
	"SELECT maestro_trigger_async('$WF1', '{\"Name\": \"O\", \"Email\": \"o\@example.com\"}', 'other db')");
isnt($rc, 0, 'enqueueing in a database the worker does not serve fails');
like($err, qr/the maestro worker serves database "postgres", not this one/, '... saying which database is served');
is(scalar_sql($node, 'SELECT count(*) FROM maestro_trigger_requests', 'other'), '0', '... and queues nothing there');

$node->stop;
done_testing();
