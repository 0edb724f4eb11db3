--
-- read_path_large: a list response of more than a megabyte, read with a
-- small work_mem. Its rows are kept in memory in a context of their own,
-- while the pages of the body behind the element being read are given
-- back to the kernel; every row must still be exactly what the API sent.
--
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo
SET timezone = 'UTC';
SET maestro.server = 'sim';
\set wf '''a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0003'''
-- short decimals (converted without printing them) beside integers and
-- numbers that are no short decimal, a string that makes each instance
-- about 1 kB, and nested values
SELECT jsonb_build_object('price', 9.99, 'total', 19.98, 'rate', 0.07, 'tiny', 1.5e-07,
         'big', 123456789012.5, 'neg', -2.675, 'qty', 3, 'large', 3000000000,
         'third', 0.333333333333333, 'long', 1.2345678901234567,
         'note', repeat('x', 700),
         'lines', jsonb_build_array(jsonb_build_object('sku', 'A-1', 'price', 4.35),
                                    jsonb_build_object('sku', 'B-2', 'price', 0.1))) AS inputs \gset
SELECT jsonb_build_object('workflow_id', :wf, 'count', 1500, 'name_prefix', 'Large',
                          'trigger_inputs', :'inputs'::jsonb)
\g (format=unaligned tuples_only=on) | curl -s -o /dev/null -w '%{http_code}\n' -X POST --data-binary @- "$MAESTRO_SIM_URL/__sim/instances"

SELECT maestro_stats_reset();
SET work_mem = '64kB';
-- every instance, each once, with its inputs as sent (1.2345678901234567
-- is printed by cJSON with 17 digits, as before: compared as numbers)
SELECT count(*) AS instances,
       count(DISTINCT id) AS distinct_ids,
       count(*) FILTER (WHERE (raw -> 'trigger_inputs') - 'long' = :'inputs'::jsonb - 'long') AS inputs_as_sent,
       count(*) FILTER (WHERE trigger_inputs = raw -> 'trigger_inputs') AS column_is_raw,
       count(*) FILTER (WHERE (trigger_inputs ->> 'long')::float8 = 1.2345678901234567) AS long_as_double,
       count(*) FILTER (WHERE name ~ '^Large [0-9]+$') AS bulk_names,
       count(DISTINCT name) FILTER (WHERE name ~ '^Large [0-9]+$') AS distinct_bulk_names
FROM maestro_instances(:wf);
-- the body was large enough to be given back page by page
SELECT calls, bytes_received > 1500 * 1000 AS over_a_megabyte
FROM maestro_stats WHERE endpoint = 'instances';
-- the printing of the numbers, as jsonb_in makes it of the same text
SELECT DISTINCT trigger_inputs - 'note' AS inputs FROM maestro_instances(:wf)
WHERE name ~ '^Large ';
-- read twice in one statement (a rescan builds the rows again)
SELECT g, count(*) FROM generate_series(1, 2) g, LATERAL
  (SELECT * FROM maestro_instances(:wf) WHERE g > 0) i GROUP BY g ORDER BY g;
RESET work_mem;
RESET maestro.server;

-- what follows the root's "data" list is checked once the list has been
-- read: a body broken there is still the error, and no row comes back
CREATE FUNCTION pg_temp.serve(body text) RETURNS void LANGUAGE sql AS $$
  SELECT mt.fault('key=' || md5(body) || ';status=200;body_hex=' || encode(convert_to(body, 'UTF8'), 'hex'))
$$;
SET maestro.server = 'faulty';
SELECT pg_temp.serve('{"instances":[{"x":1},{]},"data":[{"name":"a"}]}');
SELECT mt.try($$SELECT * FROM maestro_instances('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0003')$$);
SELECT pg_temp.serve('{"data":[{"name":"a"}],"data":tru}');
SELECT mt.try($$SELECT * FROM maestro_instances('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0003')$$);
SELECT pg_temp.serve('{"data":[{"name":"a"}],"page":{"next":null}');
SELECT mt.try($$SELECT * FROM maestro_instances('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0003')$$);
-- and one that is whole: a wrapper array before the list, a second "data" after it
SELECT pg_temp.serve('{"instances":[{"x":1}],"data":[{"name":"a"},{"name":"b"}],"data":7,"workflows":[],"page":{"next":null}} trailing');
SELECT name FROM maestro_instances('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0003');
RESET maestro.server;
