# The worker in a database whose encoding is LATIN1: what it sends is
# converted to UTF-8 (Maestro's encoding), and what it reads back into the
# database's, so that an uncertain send is found again by its instance name.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Encode qw(encode_utf8);
use MaestroTAP;

start_simulator();
my $node = maestro_node('latin1', database => 'latin1', no_setup => 1, conf => <<'EOC');
maestro.rate_limit = 0
maestro.retry_delay = 100ms
maestro.max_attempts = 3
EOC
$node->safe_psql('postgres',
	"CREATE DATABASE latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
maestro_setup($node, 'latin1');
is($node->safe_psql('latin1', 'SHOW server_encoding'), 'LATIN1', 'the database is LATIN1');

my $sim = sim_url();
# the first POST is processed but its answer is cut short: the worker must
# look the request up by its (non-ASCII) name to learn that it was done
$node->safe_psql('latin1', qq{
CREATE SERVER cut FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url '$sim/_fault/key=cut;truncate=1;times=1;method=POST', account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER cut OPTIONS (access_token 'sim-token');
});

# the SQL text is UTF-8; the session says so, the database stores LATIN1
my $plain = $node->safe_psql('latin1', qq{
SET client_encoding = 'UTF8';
SET maestro.server = 'sim';
SELECT maestro_trigger_async('$WF1', '{"Name": "Zoë Åström", "Email": "zoe\@example.com"}', 'Café Zoë');});
my $cut = $node->safe_psql('latin1', qq{
SET client_encoding = 'UTF8';
SET maestro.server = 'cut';
SELECT maestro_trigger_async('$WF1', '{"Name": "Zoë", "Email": "z\@example.com"}', 'Crème brûlée');});
is($node->safe_psql('latin1', "SELECT length(instance_name) < octet_length(convert_to(instance_name, 'UTF8')) FROM maestro_trigger_requests WHERE id = $plain"),
	't', 'the queued name is stored as LATIN1 text');

ok(wait_for($node, "SELECT string_agg(state, ',' ORDER BY id) FROM maestro_trigger_requests", 'done,done', 60, 'latin1'),
	'both requests are done');

# the simulator's JSON escapes non-ASCII, so names decode to characters;
# this file's literals are UTF-8 bytes
my %by_prefix = map { (($_->{name} =~ /^(.*) \[mq /)[0] // '') => $_ } @{ sim_instances($WF1) };
note 'instances started: ' . join(', ', grep { length } sort keys %by_prefix);
ok(exists $by_prefix{'Café Zoë'}, 'Maestro got the instance name in UTF-8');
is($by_prefix{'Café Zoë'}{trigger_inputs}{Name}, 'Zoë Åström', 'and the inputs');
is(scalar(grep { /^Crème brûlée$/ } keys %by_prefix), 1, 'the cut request started one instance');
# done after a single POST: the answer was cut, so only a look-up by the
# (non-ASCII) name can have found the instance and its id
is($node->safe_psql('latin1', "SELECT state || ' ' || (instance_id IS NOT NULL) FROM maestro_trigger_requests WHERE id = $cut"),
	'done true', 'the worker found the cut request again by its non-ASCII name');
is(sim_get('/__sim/count?path_contains=key=cut&method=POST'), '1', 'one POST for the cut request');

$node->stop;
done_testing();
