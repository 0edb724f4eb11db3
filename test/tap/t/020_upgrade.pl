# The upgrade path: a database created at 0.1 and brought up to date with
# ALTER EXTENSION maestro UPDATE ends up with exactly the objects a fresh
# CREATE EXTENSION makes, and keeps its data; until it is updated, the
# library refuses to run against the old objects, with the error that says
# what to do, and the worker stays away from them without a restart loop.
#
# Database a: CREATE EXTENSION maestro VERSION '0.1', a queue and a mirror
# with rows in them; database b: CREATE EXTENSION maestro (fresh). Every
# member object of the extension (pg_depend deptype 'e') is described from
# the catalogs in both, with what belongs to it (columns, constraints,
# indexes, view and function definitions, types, policies, sequences,
# triggers, grants and initial privileges, comments, the FDW, the config
# dumps), and the two descriptions must be identical. Nothing in it lists
# maestro's objects by name, so what is added to an upgrade script is
# compared too. So is every release after 0.1, updated with a request in its
# queue.
#
# Also: META.json, the control file and the library agree on the version.
use strict;
use warnings;
use JSON::PP;
use Time::HiRes qw(time sleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MaestroTAP;

my $dir = $ENV{MAESTRO_TAP_DIR} // '.';

# --- one version everywhere -------------------------------------------------

sub control_version
{
	my ($file) = @_;
	my ($v) = slurp_file($file) =~ /^default_version\s*=\s*'([^']*)'/m;
	return $v;
}

my $version = control_version("$dir/maestro.control");
ok(defined $version && $version =~ /^\d+(\.\d+)+$/,
	"maestro.control has a default_version (" . ($version // 'none') . ")");
# PGXN wants semantic versions: default_version 0.2 is 0.2.0 in META.json
my $semver = $version;
$semver .= '.0' while ($semver =~ tr/.//) < 2;
my $meta = JSON::PP->new->decode(slurp_file("$dir/META.json"));
is($meta->{version}, $semver, "META.json: version is the control file's default_version ($semver)");
is($meta->{provides}{maestro}{version}, $semver,
	'META.json: provides.maestro.version is the same');

# Every SQL-callable C function checks the version before it reads an
# argument, but the validator, which must work while the update runs. Read
# from the sources, so that a function added later without the check fails
# here even though 0.1 (below) does not have it.
my @unchecked;
my $entry_points = 0;
for my $file (glob("$dir/src/*.c"))
{
	my $code = slurp_file($file);
	for my $f ($code =~ /^PG_FUNCTION_INFO_V1\((\w+)\);/mg)
	{
		next if $f eq 'maestro_fdw_validator';
		$entry_points++;
		push @unchecked, $f unless $code =~ /^Datum\n\Q$f\E\(PG_FUNCTION_ARGS\)\n\{\n\tMAESTRO_CHECK_VERSION;\n/m;
	}
}
cmp_ok($entry_points, '>=', 15, "the sources define the SQL-callable C functions ($entry_points)");
is(join(', ', @unchecked), '', 'each begins with MAESTRO_CHECK_VERSION');

start_simulator();
# debug1: the postmaster logs every worker's exit code, 0 included
my $node = maestro_node('upgrade', database => 'a', no_setup => 1, conf => "log_min_messages = debug1\n");
my $sharedir = $node->config_data('--sharedir');
is(control_version("$sharedir/extension/maestro.control"), $version,
	'the installed control file is this checkout\'s');

my $sim = sim_url();
$node->safe_psql('postgres', 'CREATE DATABASE a');
$node->safe_psql('postgres', 'CREATE DATABASE b');
$node->safe_psql('postgres', 'CREATE DATABASE c');

my $setup_server = qq{
CREATE SERVER sim FOREIGN DATA WRAPPER maestro OPTIONS (base_url '$sim', account_id '$ACCOUNT');
CREATE USER MAPPING FOR CURRENT_USER SERVER sim OPTIONS (access_token 'sim-token');
};
$node->safe_psql('a', "CREATE EXTENSION maestro VERSION '0.1';" . $setup_server);
$node->safe_psql('b', "CREATE EXTENSION maestro;" . $setup_server);
is($node->safe_psql('b', "SELECT extversion FROM pg_extension WHERE extname = 'maestro'"),
	$version, "a fresh CREATE EXTENSION installs version $version");

# --- data in the 0.1 queue and mirror ----------------------------------------

# The mirror's rows as maestro_sync() makes them: synced in b against the
# simulator, carried into a's 0.1 tables (a's own functions refuse to run
# until it is updated). json_populate_recordset takes the columns a has.
is($node->safe_psql('b', 'SELECT maestro_sync() > 0'), 't', 'b: maestro_sync() mirrors the simulator');
my $workflows = $node->safe_psql('b', 'SELECT count(*) FROM maestro_workflows()');
for my $t (qw(maestro_synced_instances maestro_instance_events))
{
	my $rows = $node->safe_psql('b', "SELECT json_agg(t) FROM $t t");
	$rows =~ s/'/''/g;
	$node->safe_psql('a', "INSERT INTO $t SELECT * FROM json_populate_recordset(NULL::$t, '$rows')");
}
$node->safe_psql('a', q{SELECT setval('maestro_instance_events_id_seq', (SELECT max(id) FROM maestro_instance_events))});

# The queue: a request done, one failed, one still queued, as the worker
# and maestro_trigger_async leave them.
$node->safe_psql('a', qq{
INSERT INTO maestro_trigger_requests (state, server_id, requested_by, workflow_id, inputs, instance_name,
    attempts, http_status, last_error, instance_id, instance_url, sent_at, done_at, created_at)
SELECT s.state, (SELECT oid FROM pg_foreign_server WHERE srvname = 'sim'), current_user::regrole,
       '$WF1', jsonb_build_object('Name', 'U' || n, 'Email', 'u' || n || '\@example.com'),
       format('upgrade %s [mq %s-0000000%s]', n, n, n), s.attempts, s.http_status, s.last_error,
       s.instance_id, s.instance_url, s.sent_at, s.done_at, now() - interval '1 hour'
FROM (VALUES
  (1, 'done', 1, 201, NULL, 'b5500000-0000-4000-8000-0000000000aa'::uuid, 'https://example.com/x?mtsec=1',
   now() - interval '50 minutes', now() - interval '50 minutes'),
  (2, 'failed', 5, 400, 'HTTP 400: Bad Request', NULL, NULL, now() - interval '40 minutes', now() - interval '40 minutes'),
  (3, 'queued', 0, NULL, NULL, NULL, NULL, NULL, NULL))
  AS s(n, state, attempts, http_status, last_error, instance_id, instance_url, sent_at, done_at)});

# what must survive the update: every 0.1 column, in a's own order
my %columns;
for my $t (qw(maestro_trigger_requests maestro_synced_instances maestro_instance_events))
{
	$columns{$t} = $node->safe_psql('a', qq{
SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
WHERE attrelid = '$t'::regclass AND attnum > 0 AND NOT attisdropped});
}
sub table_rows
{
	my ($t, $where) = @_;
	return $node->safe_psql('a', "SELECT $columns{$t} FROM $t WHERE " . ($where // 'true') . ' ORDER BY 1, 2');
}
my %before = map { $_ => table_rows($_) } qw(maestro_synced_instances maestro_instance_events);
$before{settled} = table_rows('maestro_trigger_requests', "state <> 'queued'");
my $immutable = 'id, server_id, requested_by, workflow_id, inputs, instance_name, created_at';
$before{queue} = $node->safe_psql('a', "SELECT $immutable FROM maestro_trigger_requests ORDER BY id");
my $queued = $node->safe_psql('a', "SELECT id || '|' || instance_name FROM maestro_trigger_requests WHERE state = 'queued'");
my ($queued_id, $queued_name) = split /\|/, $queued;
cmp_ok(length $before{maestro_synced_instances}, '>', 0, 'a: the 0.1 mirror holds rows');
cmp_ok(length $before{maestro_instance_events}, '>', 0, 'a: the 0.1 event log holds rows');
is($node->safe_psql('a', 'SELECT count(*) FROM maestro_trigger_requests'), '3', 'a: the 0.1 queue holds 3 requests');

# --- the 0.2 library refuses the 0.1 objects ---------------------------------

my %sample = (
	uuid => "'$WF1'::uuid",
	jsonb => q{'{"Name": "V", "Email": "v@example.com"}'::jsonb},
	text => q{'v'::text},
	bigint => '1::bigint',
	integer => '1',
	interval => q{'1 day'::interval},
	boolean => 'true');

sub version_error_ok
{
	my ($db, $sql, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($rc, $out, $err) = $node->psql($db, "\\set VERBOSITY verbose\n$sql");
	ok($rc != 0
		  && $err =~ /ERROR:  0A000: maestro's SQL objects are at version 0\.1 but the library is \Q$version\E\n/
		  && $err =~ /HINT:  Run ALTER EXTENSION maestro UPDATE\./,
		"a (0.1): $what raises the version error (0A000) with the hint")
	  or diag "rc $rc, stdout <$out>, stderr <$err>";
	return;
}

# every C function of 0.1 but the validator, found in the catalog
my @c_functions = split /\n/, $node->safe_psql('a', q{
SELECT p.proname || '|' || coalesce(array_to_string(p.proargtypes::regtype[], ','), '')
FROM pg_depend d JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
JOIN pg_language l ON l.oid = p.prolang
WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'maestro')
  AND l.lanname = 'c' AND p.proname <> 'maestro_fdw_validator'
ORDER BY 1});
cmp_ok(scalar @c_functions, '>=', 10, 'a: 0.1 has its C functions (' . scalar(@c_functions) . ')');
for my $f (@c_functions)
{
	my ($name, $types) = split /\|/, $f, -1;
	my @args = map { $sample{$_} // die "no sample value for an argument of type $_" } grep { length } split /,/, $types;
	version_error_ok('a', "SELECT * FROM $name(" . join(', ', @args) . ')', "$name()");
}
version_error_ok('a', 'SELECT maestro_sync()', 'maestro_sync() (PL/pgSQL over the C functions)');
version_error_ok('a', 'SELECT * FROM maestro_stats', 'the maestro_stats view');
$node->safe_psql('a', qq{
CREATE TABLE customers (email text, name text);
CREATE TRIGGER onboard AFTER INSERT ON customers FOR EACH ROW
  EXECUTE FUNCTION maestro_enqueue_trigger('$WF1', '{"Email": "email", "Name": "name"}');});
version_error_ok('a', "INSERT INTO customers VALUES ('t\@example.com', 'T')",
	'an insert whose maestro_enqueue_trigger() queues a request');

# the validator keeps working: servers can be changed and checked before the update
is(($node->psql('a', "ALTER SERVER sim OPTIONS (SET base_url '$sim')"))[0], 0,
	'a (0.1): ALTER SERVER works (the validator does not check the version)');
my ($rc, $out, $err) = $node->psql('a', "CREATE SERVER bad FOREIGN DATA WRAPPER maestro OPTIONS (base_url 'ftp://x', account_id '$ACCOUNT')");
like($err, qr/ERROR:.*base_url/, 'a (0.1): ... and still refuses a bad option');

# the worker: started at server start for the queued request, it warns once
# and exits with code 0, so the postmaster does not restart it
my $offset = log_offset($node);
$node->restart;
my $deadline = time + 180;
sleep 0.1 while time < $deadline
  && log_since($node, $offset) !~ /WARNING:  maestro's SQL objects are at version 0\.1 but the library is \Q$version\E\n/;
like(log_since($node, $offset), qr/WARNING:  maestro's SQL objects are at version 0\.1 but the library is \Q$version\E\n/,
	'the worker logs the version mismatch');
my $exit = qr/background worker "maestro worker" \(PID \d+\) (exited with exit code \d+|was terminated by signal \d+)/;
$deadline = time + 180;
sleep 0.1 while time < $deadline && log_since($node, $offset) !~ $exit;
my $log = log_since($node, $offset);
my @exits = $log =~ /$exit/g;
is(join(', ', @exits), 'exited with exit code 0', 'the worker exits with code 0, so the postmaster does not restart it');
like($log, qr/unregistering background worker "maestro trigger queue worker"/,
	'... and the postmaster forgets it (no restart loop)');
my @warnings = $log =~ /WARNING:  maestro's SQL objects are at version/g;
is(scalar @warnings, 1, 'it warns once');
like($log, qr/HINT:  Run ALTER EXTENSION maestro UPDATE in database "a"\./, '... with the hint naming the database');
ok(!worker_pids($node), 'no worker runs');
is($node->safe_psql('a', "SELECT state || ' ' || attempts FROM maestro_trigger_requests WHERE id = $queued_id"),
	'queued 0', 'the queued request was left alone');

# --- the update, from another session ----------------------------------------

# One session sees the error, another updates, and the first one's next call
# works: a mismatch is not cached.
my $connstr = $node->connstr('a');
($rc, $out, $err) = $node->psql('a', qq{
\\set VERBOSITY verbose
SELECT count(*) FROM maestro_workflows();
\\! psql -X -q -d "$connstr" -c "ALTER EXTENSION maestro UPDATE"
SELECT count(*) FROM maestro_workflows();
}, on_error_stop => 0);
like($err, qr/ERROR:  0A000: maestro's SQL objects are at version 0\.1 but the library is \Q$version\E\n/, 'a session sees the error before the update');
unlike($err, qr/ERROR:(?! +0A000: maestro's SQL objects are at version 0\.1)/, 'ALTER EXTENSION maestro UPDATE succeeds in another session');
is($out, $workflows, '... after which the first session\'s next call works');
is($node->safe_psql('a', "SELECT extversion FROM pg_extension WHERE extname = 'maestro'"),
	$version, "a: the extension is at version $version");

# --- the queued request goes out once the objects are current -----------------

ok(wait_for($node, "SELECT state FROM maestro_trigger_requests WHERE id = $queued_id", 'done', 180, 'a'),
	'a: the request queued before the update is sent after it');
is(scalar(grep { ($_->{instance_name} // '') eq $queued_name && $_->{status} == 201 }
		  @{ sim_log(method => 'POST') }),
	1, '... once, under its name');
# the worker put the instance it started into the mirror: that row is new
my $new_instance = $node->safe_psql('a', "SELECT instance_id FROM maestro_trigger_requests WHERE id = $queued_id");
ok($new_instance ne '', '... and records its instance');

# --- the data survived ---------------------------------------------------------

is(table_rows('maestro_synced_instances', "id <> '$new_instance'"), $before{maestro_synced_instances},
	'a: every row of maestro_synced_instances is as it was');
is(table_rows('maestro_instance_events', "instance_id <> '$new_instance'"), $before{maestro_instance_events},
	'a: every row of maestro_instance_events is as it was');
is(table_rows('maestro_trigger_requests', "state <> 'queued' AND id <> $queued_id"), $before{settled},
	'a: the done and failed requests are as they were');
is($node->safe_psql('a', "SELECT $immutable FROM maestro_trigger_requests ORDER BY id"), $before{queue},
	'a: every request keeps its server, role, workflow, inputs, name and time');
my $new_id = $node->safe_psql('a', "SELECT maestro_trigger_async('$WF1', '{\"Name\": \"W\", \"Email\": \"w\@example.com\"}', 'after the update')");
cmp_ok($new_id, '>', 3, 'a: new requests go on from the old ids');

# --- the objects are those of a fresh install ----------------------------------

# One line per fact, sorted; multi-line definitions one line each, numbered.
my $describe = q{
WITH ext AS (SELECT e.* FROM pg_extension e WHERE extname = 'maestro'),
m AS (
  SELECT d.classid, d.objid FROM pg_depend d, ext
  WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'),
rels AS (SELECT c.* FROM pg_class c JOIN m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid),
procs AS (SELECT p.* FROM pg_proc p JOIN m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid),
types AS (SELECT t.* FROM pg_type t JOIN m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid),
fdws AS (SELECT w.* FROM pg_foreign_data_wrapper w
         JOIN m ON m.classid = 'pg_foreign_data_wrapper'::regclass AND m.objid = w.oid),
cons AS (SELECT c.* FROM pg_constraint c
         WHERE c.conrelid IN (SELECT oid FROM rels) OR c.contypid IN (SELECT oid FROM types)),
idx AS (SELECT i.indexrelid AS oid, i.* FROM pg_index i WHERE i.indrelid IN (SELECT oid FROM rels)),
trg AS (SELECT t.* FROM pg_trigger t WHERE t.tgrelid IN (SELECT oid FROM rels) AND NOT t.tgisinternal),
pol AS (SELECT p.* FROM pg_policy p WHERE p.polrelid IN (SELECT oid FROM rels)),
rul AS (SELECT r.* FROM pg_rewrite r WHERE r.ev_class IN (SELECT oid FROM rels) AND r.rulename <> '_RETURN'),
numbered(kind, name, body) AS (
  SELECT 'function', p.oid::regprocedure::text,
         CASE WHEN p.prokind = 'a' THEN 'aggregate' ELSE pg_get_functiondef(p.oid) END FROM procs p
  UNION ALL
  SELECT 'view', r.oid::regclass::text, pg_get_viewdef(r.oid, true) FROM rels r WHERE r.relkind IN ('v', 'm')
  UNION ALL
  SELECT 'policy', format('%s on %s', p.polname, p.polrelid::regclass),
         format('%s %s to %s using (%s) with check (%s)',
                CASE WHEN p.polpermissive THEN 'permissive' ELSE 'restrictive' END, p.polcmd,
                (SELECT string_agg(CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r) END, ',' ORDER BY 1)
                   FROM unnest(p.polroles) r),
                pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)) FROM pol p
  UNION ALL
  SELECT 'rule', format('%s on %s', r.rulename, r.ev_class::regclass), pg_get_ruledef(r.oid, true) FROM rul r),
lines(line) AS (
  SELECT format('member: %s', pg_describe_object(classid, objid, 0)) FROM m
  UNION ALL
  SELECT format('member of a kind this test does not describe: %s', classid::regclass) FROM m
  WHERE classid NOT IN ('pg_proc'::regclass, 'pg_class'::regclass, 'pg_type'::regclass,
                        'pg_foreign_data_wrapper'::regclass)
  UNION ALL
  SELECT format('extension: version %s, relocatable %s, schema %s, owner %s', extversion, extrelocatable,
                extnamespace::regnamespace, pg_get_userbyid(extowner)) FROM ext
  UNION ALL
  SELECT format('config dump: %s where %L', c::regclass, cond) FROM ext, unnest(extconfig, extcondition) u(c, cond)
  UNION ALL
  SELECT format('%s %s, line %s: %s', n.kind, n.name, lpad(l.nr::text, 4, '0'), l.text)
  FROM numbered n, regexp_split_to_table(n.body, E'\n') WITH ORDINALITY l(text, nr)
  UNION ALL
  SELECT format('function %s: owner %s, acl %s, security definer %s, leakproof %s, cost %s, rows %s',
                p.oid::regprocedure, pg_get_userbyid(p.proowner), p.proacl, p.prosecdef, p.proleakproof,
                p.procost, p.prorows) FROM procs p
  UNION ALL
  SELECT format('relation %s: kind %s, persistence %s, owner %s, acl %s, row security %s/%s, options %s, replica identity %s, of type %s',
                r.oid::regclass, r.relkind, r.relpersistence, pg_get_userbyid(r.relowner), r.relacl,
                r.relrowsecurity, r.relforcerowsecurity, r.reloptions, r.relreplident,
                nullif(r.reloftype, 0)::regtype) FROM rels r
  UNION ALL
  SELECT format('column %s.%s: #%s %s, not null %s, default %s, identity %s, generated %s, collation %s, acl %s, storage %s',
                a.attrelid::regclass, a.attname,
                row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
                format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid),
                a.attidentity, a.attgenerated, nullif(a.attcollation, 0)::regcollation, a.attacl, a.attstorage)
  FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
  WHERE a.attrelid IN (SELECT oid FROM rels UNION ALL SELECT typrelid FROM types WHERE typtype = 'c')
    AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT format('constraint %s on %s: %s, deferrable %s/%s, validated %s', c.conname,
                coalesce(nullif(c.conrelid, 0)::regclass::text, c.contypid::regtype::text),
                pg_get_constraintdef(c.oid, true), c.condeferrable, c.condeferred, c.convalidated) FROM cons c
  UNION ALL
  SELECT format('index %s: %s, clustered %s, replica identity %s', i.oid::regclass,
                pg_get_indexdef(i.oid), i.indisclustered, i.indisreplident) FROM idx i
  UNION ALL
  SELECT format('trigger %s on %s: %s, enabled %s', t.tgname, t.tgrelid::regclass,
                pg_get_triggerdef(t.oid, true), t.tgenabled) FROM trg t
  UNION ALL
  SELECT format('sequence %s: %s from %s by %s, %s..%s, cache %s, cycle %s, owned by %s',
                s.seqrelid::regclass, s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin,
                s.seqmax, s.seqcache, s.seqcycle,
                (SELECT string_agg(pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid), ', ')
                   FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                    AND d.deptype IN ('a', 'i')))
  FROM pg_sequence s WHERE s.seqrelid IN (SELECT oid FROM rels)
  UNION ALL
  SELECT format('type %s: kind %s, owner %s, acl %s, base %s, not null %s, default %s',
                t.oid::regtype, t.typtype, pg_get_userbyid(t.typowner), t.typacl,
                nullif(t.typbasetype, 0)::regtype, t.typnotnull, t.typdefault) FROM types t
  UNION ALL
  SELECT format('enum %s: #%s %s', e.enumtypid::regtype,
                row_number() OVER (PARTITION BY e.enumtypid ORDER BY e.enumsortorder), e.enumlabel)
  FROM pg_enum e WHERE e.enumtypid IN (SELECT oid FROM types)
  UNION ALL
  SELECT format('foreign-data wrapper %s: handler %s, validator %s, owner %s, acl %s, options %s',
                w.fdwname, nullif(w.fdwhandler, 0)::regproc, nullif(w.fdwvalidator, 0)::regprocedure,
                pg_get_userbyid(w.fdwowner), w.fdwacl, w.fdwoptions) FROM fdws w
  UNION ALL
  -- the privileges pg_dump takes as the extension's own, not to be dumped
  SELECT format('initial privileges of %s: %s (%s)', pg_describe_object(i.classoid, i.objoid, i.objsubid),
                i.initprivs, i.privtype)
  FROM pg_init_privs i WHERE (i.classoid, i.objoid) IN (SELECT classid, objid FROM m)
  UNION ALL
  SELECT format('comment on %s: %s', pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description)
  FROM pg_description d
  WHERE (d.classoid, d.objoid) IN (SELECT classid, objid FROM m)
     OR (d.classoid = 'pg_class'::regclass AND d.objoid IN (SELECT oid FROM idx))
     OR (d.classoid = 'pg_constraint'::regclass AND d.objoid IN (SELECT oid FROM cons))
     OR (d.classoid = 'pg_trigger'::regclass AND d.objoid IN (SELECT oid FROM trg))
     OR (d.classoid = 'pg_policy'::regclass AND d.objoid IN (SELECT oid FROM pol))
     OR (d.classoid = 'pg_rewrite'::regclass AND d.objoid IN (SELECT oid FROM rul))
     OR (d.classoid = 'pg_class'::regclass AND d.objoid IN (SELECT typrelid FROM types)))
SELECT line FROM lines ORDER BY line COLLATE "C";
};

my @upgraded = split /\n/, $node->safe_psql('a', $describe);
my @fresh = split /\n/, $node->safe_psql('b', $describe);

# what each side has that the other lacks (a multiset difference)
my %count;
$count{$_}++ for @upgraded;
$count{$_}-- for @fresh;
my @only_upgraded = grep { $count{$_} > 0 } sort keys %count;
my @only_fresh = grep { $count{$_} < 0 } sort keys %count;
ok(!@only_upgraded && !@only_fresh,
	'the updated extension\'s objects are identical to a fresh install\'s (' . scalar(@fresh) . ' facts compared)')
  or diag join("\n", 'only after ALTER EXTENSION UPDATE (0.1 + upgrade scripts):',
	(map { "- $_" } @only_upgraded), 'only in a fresh CREATE EXTENSION:', map { "+ $_" } @only_fresh);

# the description covers what it claims to (an empty one would compare equal)
my %kinds;
for (@fresh)
{
	$kinds{$1}++ if /^(member|config dump|function|view|policy|relation|column|constraint|index|sequence|type|foreign-data wrapper|initial privileges|comment on)\b/;
}
my @expected_kinds = ('member', 'config dump', 'function', 'view', 'policy', 'relation', 'column',
	'constraint', 'index', 'sequence', 'type', 'foreign-data wrapper', 'initial privileges', 'comment on');
is(join(', ', grep { !$kinds{$_} } @expected_kinds), '', 'the comparison covers every kind of object it describes')
  or diag explain \%kinds;
ok((grep { /^function .*, acl \{/ } @fresh) && (grep { /^relation .*, acl \{/ } @fresh),
	'... grants of functions and tables among them');
is(join("\n", grep { /^member of a kind this test does not describe/ } @fresh), '',
	'every member object is of a kind the comparison describes');
note sprintf('%d member objects, %d facts about them', $kinds{member}, scalar @fresh);

# --- every later release, updated, has the same objects --------------------------

# Each release between 0.1 and this one (as PostgreSQL lists what it can
# install: 0.1's script and the updates after it), installed with a request
# in its queue and updated to the current version in a database of its own.
my @releases = grep { $_ ne '0.1' && $_ ne $version } split /\n/, $node->safe_psql('postgres',
	"SELECT version FROM pg_available_extension_versions WHERE name = 'maestro' ORDER BY string_to_array(version, '.')::int[]");
cmp_ok(scalar @releases, '>=', 1, 'releases after 0.1 to update from: ' . join(', ', @releases));
for my $release (@releases)
{
	(my $db = "r$release") =~ s/\./_/g;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, "CREATE EXTENSION maestro VERSION '$release';" . $setup_server);
	$node->safe_psql($db, qq{INSERT INTO maestro_trigger_requests (server_id, requested_by, workflow_id, inputs, instance_name)
SELECT oid, current_user::regrole, '$WF1', '{}', 'release $release [mq 1-00000001]' FROM pg_foreign_server WHERE srvname = 'sim'});
	$node->safe_psql($db, 'ALTER EXTENSION maestro UPDATE');
	is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'maestro'"), $version,
		"$release: updated to $version");
	my %diff;
	$diff{$_}++ for split /\n/, $node->safe_psql($db, $describe);
	$diff{$_}-- for @fresh;
	my @differ = map { ($diff{$_} > 0 ? '- ' : '+ ') . $_ } grep { $diff{$_} } sort keys %diff;
	is(join("\n", @differ), '', "$release: the updated objects are identical to a fresh install's");
	# (the worker serves database a only: this one's request stays queued)
	is($node->safe_psql($db, q{SELECT state || ' ' || instance_name FROM maestro_trigger_requests}),
		"queued release $release [mq 1-00000001]", "$release: the request queued before the update is kept");
}

# --- a cached match is forgotten when the objects change under a session ------------

$node->safe_psql('c', "CREATE EXTENSION maestro;" . $setup_server);
($rc, $out, $err) = $node->psql('c', qq{
\\set VERBOSITY verbose
SELECT count(*) FROM maestro_workflows();
\\! psql -X -q -d "@{[ $node->connstr('c') ]}" -c "DROP EXTENSION maestro CASCADE" -c "CREATE EXTENSION maestro VERSION '0.1'"
SELECT count(*) FROM maestro_workflows();
}, on_error_stop => 0);
is($out, $workflows, 'c: a session at the current version calls the API');
like($err, qr/ERROR:  0A000: maestro's SQL objects are at version 0\.1 but the library is \Q$version\E/,
	'c: once another session re-creates the extension at 0.1, its next call gets the version error');

$node->stop;
done_testing();
