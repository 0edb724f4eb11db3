# The periodic sync fetches its pages on the worker's multi handle (issue
# 9: every network call of the worker goes through it): while a page of the
# account-wide list hangs, queued triggers are sent and done; the sync then
# completes with the mirror right, one request per page; a 429 on a page
# fails that run with a WARNING and holds the sends for its Retry-After;
# pages beyond work_mem wait in a temporary file; where the API lacks the
# account-wide list the sync falls back to one list per workflow; and
# pg_ctl stop -m fast during a hung page returns at once.
use strict;
use warnings;
use POSIX qw(ceil);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP;
use MaestroTAP;

my $PAGE_SIZE = 2;
my $HANG_S = 45;
my @SEEDED = map { sprintf('b5500000-0000-4000-8000-%012d', $_) } 1 .. 4;
my $seeded_list = join(', ', map { "'$_'" } @SEEDED);

start_simulator();
# one run at the worker's start, none during the test
my $node = maestro_node('sync_async', conf => <<"EOC");
maestro.sync_interval = '1h'
maestro.page_size = $PAGE_SIZE
maestro.request_timeout = '120s'
maestro.rate_limit = 0
EOC

sub set_base_url
{
	my ($fault) = @_;
	$node->safe_psql('postgres',
		"ALTER SERVER sim OPTIONS (SET base_url '" . sim_url() . ($fault // '') . "')");
}

sub page_gets
{
	return sim_get('/__sim/count?method=GET&path_contains=/workflow-instances');
}

# The instances the API holds: per workflow (a path the page count ignores).
sub api_instances
{
	my $wfs = sim_json("/v1/accounts/$ACCOUNT/workflows", Authorization => 'Bearer sim-token');
	my @all;
	for my $wf (@{ $wfs->{data} // $wfs->{workflows} })
	{
		push @all, map { "$_->{id} $wf->{id} $_->{workflow_status}" } @{ sim_instances($wf->{id}) };
	}
	return join("\n", sort @all);
}

sub mirror_instances
{
	return scalar_sql($node,
		"SELECT id || ' ' || workflow_id || ' ' || workflow_status FROM maestro_synced_instances ORDER BY 1");
}

# --- sends go on while a page of the sync hangs ----------------------------
# the second GET (the second page) is answered after $HANG_S s; POSTs never wait
set_base_url("/_fault/key=slowpage;method=GET;after=1;times=1;latency_ms=" . ($HANG_S * 1000));
my $gets_before = page_gets();
scalar_sql($node, 'SELECT maestro_wake()');

my $deadline = time + 120;
sleep 0.05 while sim_fault_count('slowpage') < 2 && time < $deadline;
my $hang_began = time;
is(sim_fault_count('slowpage'), 2, 'the sync asked for its second page, which hangs');
ok(wait_for($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'maestro worker'"
	  . " AND state = 'active' AND query = 'maestro periodic sync'", '1', 30),
	'the worker shows the sync under way');

$node->safe_psql('postgres', "SELECT maestro_trigger_async('$WF1', jsonb_build_object('Name', 'N' || g, 'Email', 'n' || g || '\@example.com'), 'during sync ' || g) FROM generate_series(1, 5) g");
# well before the page is answered: the old worker sent nothing until then
ok(wait_for($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state = 'done'", '5',
		$HANG_S - 15),
	'the 5 triggers queued meanwhile are sent and done while the page hangs');
note sprintf('done %.1f s after the page began to hang', time - $hang_began);
is(scalar_sql($node, "SELECT count(*) FROM maestro_synced_instances WHERE id IN ($seeded_list)"),
	'0', '... and the sync has not applied anything yet');
is(sim_fault_count('slowpage'), 2, '... nor asked for a third page: it was still fetching');

# --- the sync completes, and the mirror is right ----------------------------
ok(wait_for($node, "SELECT count(*) FROM maestro_synced_instances WHERE id IN ($seeded_list)",
		'4', $HANG_S + 120),
	'the sync completes once the page is answered');
my $api = api_instances();
my $n = scalar(split /\n/, $api);
is($n, 9, 'the API holds the 4 seeded instances and the 5 triggered');
is(mirror_instances(), $api, 'the mirror holds exactly what the API lists, with their status');
is(scalar_sql($node, "SELECT count(*) || ' ' || count(DISTINCT instance_id) FROM maestro_instance_events"),
	'9 9', 'one "new instance" event each, none twice');
is(page_gets() - $gets_before, ceil($n / $PAGE_SIZE),
	"one request per page: ceil($n / $PAGE_SIZE) GETs of the account-wide list, no more");
is(scalar_sql($node, "SELECT calls FROM maestro_stats WHERE endpoint = 'account_instances'"),
	ceil($n / $PAGE_SIZE), 'maestro_stats counts them');
is(scalar_sql($node, "SELECT count(*) FROM maestro_trigger_requests WHERE state <> 'done'"), '0',
	'every request is done');

# --- a 429 on a page: the run fails, the sends wait for its Retry-After -----
$node->append_conf('postgresql.conf', "maestro.sync_interval = '3s'\n");
set_base_url("/_fault/key=p429;method=GET;after=1;times=1;status=429;retry_after=10");
my $offset = log_offset($node);
$node->restart;
scalar_sql($node, 'SELECT maestro_wake()');
$deadline = time + 120;
sleep 0.05 while sim_fault_count('p429') < 2 && time < $deadline;
is(sim_fault_count('p429'), 2, 'the second page of a sync is answered 429');
$node->safe_psql('postgres', "SELECT maestro_trigger_async('$WF1', '{\"Name\": \"P\", \"Email\": \"p\@example.com\"}', 'after 429')");
ok(wait_for_log($node, qr/WARNING:  maestro periodic sync failed: Maestro rate limit exceeded/, $offset),
	'the run fails with a WARNING');
ok(wait_for_log($node, qr/WARNING:  maestro periodic sync failed: maestro server "sim" is paused/, $offset),
	'the next run, while the server is paused, fails without asking');
ok(wait_for($node, "SELECT state FROM maestro_trigger_requests WHERE instance_name LIKE 'after 429%'",
		'done', 180), 'the trigger queued after it is sent');
# both times by the simulator's clock: when the requests arrived
my ($post) = grep { ($_->{instance_name} // '') =~ /^after 429/ } @{ sim_log(method => 'POST') };
my ($page429) = grep { $_->{status} == 429 } @{ sim_log(method => 'GET') };
note sprintf('its POST arrived %.2f s after the 429', $post->{time} - $page429->{time});
cmp_ok($post->{time} - $page429->{time}, '>=', 9.5, '... only once the Retry-After (10 s) had passed');
sim_post('/__sim/instances/b5500000-0000-4000-8000-000000000003/status',
	{ workflow_status => 'Completed' });
ok(wait_for($node, "SELECT workflow_status FROM maestro_synced_instances WHERE id = '$SEEDED[2]'",
		'Completed', 180), 'a later run succeeds');

# --- many pages: those beyond work_mem wait in a temporary file ------------
$node->append_conf('postgresql.conf', "work_mem = '64kB'\nmaestro.page_size = 20\n");
$node->reload;
ok(wait_for($node, "SELECT setting FROM pg_settings WHERE name = 'maestro.page_size'", '20', 30),
	'pages of 20, work_mem 64kB');
sim_post('/__sim/instances', { workflow_id => 'a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0003',
	count => 300, status => 'Completed' });
# the tenth GET (a page of a run, after some 150 kB of pages) waits 20 s
set_base_url("/_fault/key=midway;method=GET;after=9;times=1;latency_ms=20000");
$deadline = time + 120;
sleep 0.05 while sim_fault_count('midway') < 10 && time < $deadline;
is(sim_fault_count('midway'), 10, 'a sync waits for its tenth page');
my $tmpdir = $node->data_dir . '/base/pgsql_tmp';
my @tmp = glob("$tmpdir/*");
ok(scalar(@tmp) >= 1, '... with the pages beyond work_mem in a temporary file, before its statement runs');
is(scalar_sql($node, "SELECT count(*) FROM maestro_synced_instances WHERE workflow_id = 'a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0003'"),
	'0', '... which has not run yet');
$api = api_instances();
$n = scalar(split /\n/, $api);
ok(wait_for($node, "SELECT count(*) FROM maestro_synced_instances", $n, 180),
	"the sync of $n instances completes");
is(mirror_instances(), $api, '... and the mirror holds exactly what the API lists');
$deadline = time + 60;
sleep 0.05 while glob("$tmpdir/*") && time < $deadline;
is(scalar(my @left = glob("$tmpdir/*")), 0, 'the temporary file is removed after the run');
set_base_url();

# --- an API without the account-wide list: one list per workflow ----------
sim_post('/__sim/account-instances', { enabled => JSON::PP::false });
my $workflow_gets = sim_get('/__sim/count?method=GET&path_contains=/workflows');
sim_post('/__sim/instances/b5500000-0000-4000-8000-000000000004/status',
	{ workflow_status => 'Canceled' });
ok(wait_for($node, "SELECT workflow_status FROM maestro_synced_instances WHERE id = '$SEEDED[3]'",
		'Canceled', 180), 'where the account-wide list answers 404, the sync falls back and succeeds');
cmp_ok(sim_get('/__sim/count?method=GET&path_contains=/workflows') - $workflow_gets, '>=', 4,
	'... through the workflow list and one instances list per workflow');
is(mirror_instances(), api_instances(), '... and the mirror holds exactly what the API lists');
sim_post('/__sim/account-instances', { enabled => JSON::PP::true });

# --- pg_ctl stop -m fast during a hung page ---------------------------------
$node->append_conf('postgresql.conf', "maestro.sync_interval = '1h'\n");
set_base_url("/_fault/key=hang;method=GET;latency_ms=60000");
$node->restart;
scalar_sql($node, 'SELECT maestro_wake()');
$deadline = time + 120;
sleep 0.05 while sim_fault_count('hang') < 1 && time < $deadline;
is(sim_fault_count('hang'), 1, 'a page of the sync hangs');
my $t0 = time;
my $rc = system('pg_ctl', '-D', $node->data_dir, '-m', 'fast', '-w', '-t', '90', 'stop');
my $took = time - $t0;
system('pg_ctl', '-D', $node->data_dir, '-m', 'immediate', '-w', 'stop') if $rc != 0;
$node->_update_pid(0);
note sprintf('pg_ctl stop -m fast during a hung sync page: %.2f s', $took);
is($rc, 0, 'pg_ctl stop -m fast succeeds');
cmp_ok($took, '<', 5, '... in less than 5 s');

done_testing();
