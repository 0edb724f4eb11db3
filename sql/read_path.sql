--
-- read_path: maestro_instances reads a list response element by element and
-- builds jsonb straight from the parsed values; what it returns must be what
-- a whole-body parse and jsonb_in made of the same bytes
--
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo
SET timezone = 'UTC';
\set wf '''a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001'''
-- server "faulty" answers the next requests with exactly these bytes
CREATE FUNCTION pg_temp.serve(body bytea) RETURNS void LANGUAGE sql AS $$
  SELECT mt.fault('key=' || md5(body) || ';status=200;body_hex=' || encode(body, 'hex'))
$$;
CREATE FUNCTION pg_temp.serve(body text) RETURNS void LANGUAGE sql AS $$
  SELECT pg_temp.serve(convert_to(body, 'UTF8'))
$$;
SET maestro.server = 'faulty';

-- keys out of order and duplicated (jsonb keeps the last), nested too;
-- escapes, non-ASCII, every kind of number and literal
SELECT pg_temp.serve($j${"data":[{"name":"first","id":"b5500000-0000-4000-8000-0000000000a1",
  "name":"last wins","zeta":1,"alpha":{"b":1,"a":2,"b":3},"arr":[{"y":1,"x":2},[],{},""],
  "esc":"tab\there \"quoted\" back\\slash \u00e9 \ud83d\ude00 \/","utf8":"naïve – 日本",
  "n":[0,-0,1,-1,1.5,1e3,1E-2,0.1,2147483647,2147483648,-2147483648,-2147483649,3.0,
       12345678901234567890,1e308,1e400,-1e400,123.456e-5],
  "t":true,"f":false,"z":null,"":"empty key"}]}$j$);
SELECT name, raw FROM maestro_instances(:wf);
SELECT jsonb_pretty(raw -> 'n') FROM maestro_instances(:wf);
-- the same as jsonb_in on the text, wherever a double holds the number exactly
SELECT raw - 'n' = ($j${"name":"first","id":"b5500000-0000-4000-8000-0000000000a1",
  "name":"last wins","zeta":1,"alpha":{"b":1,"a":2,"b":3},"arr":[{"y":1,"x":2},[],{},""],
  "esc":"tab\there \"quoted\" back\\slash \u00e9 \ud83d\ude00 \/","utf8":"naïve – 日本",
  "t":true,"f":false,"z":null,"":"empty key"}$j$::jsonb) AS same_as_jsonb_in
FROM maestro_instances(:wf);

-- an object of more members than insertion sort is used for (40, some
-- duplicated, out of order), nested too: still what jsonb_in makes of it
SELECT format('{"data":[{%s,"inner":{%s}}]}', string_agg(m, ','), string_agg(m, ',')) AS big
FROM (SELECT format('"k%s":%s', (g * 7) % 37, g) AS m FROM generate_series(1, 45) AS g) s \gset
SELECT pg_temp.serve(:'big');
SELECT raw = (:'big'::jsonb -> 'data' -> 0) AS same_as_jsonb_in,
       (SELECT count(*) FROM jsonb_object_keys(raw -> 'inner')) AS keys,
       raw -> 'inner' -> 'k7' AS last_of_k7
FROM maestro_instances(:wf);

-- nested columns: the first of duplicated keys, as before; scalars too
SELECT pg_temp.serve($j$[{"trigger_inputs":{"a":1},"metadata":"m","trigger_inputs":{"b":2}},
  {"trigger_input":[1,{"k":"v"}],"metadata":{"v":2,"v":3}},
  {"trigger_inputs":null,"trigger_input":{"ignored":true},"metadata":null},
  {"trigger_inputs":7,"metadata":true}]$j$);
SELECT trigger_inputs, metadata, raw -> 'trigger_inputs' AS raw_inputs FROM maestro_instances(:wf);

-- where the list is: "data", "data" wrapping "instances", "instances", a bare
-- array; "data" first; other members before and after, white space, a byte
-- order mark, bytes after the root value (cJSON ignores them)
SELECT pg_temp.serve('{"page":{"n":[1,2]},"data":{"other":[{"name":"no"}],"instances":[{"name":"wrapped"}]},"next":null}');
SELECT name FROM maestro_instances(:wf);
SELECT pg_temp.serve('{"instances":[{"name":"top"}],"data":{"instances":"not a list"}}');
SELECT name FROM maestro_instances(:wf);
SELECT pg_temp.serve('{"instances":[{"name":"not chosen"}],"data":[{"name":"data wins"}]}');
SELECT name FROM maestro_instances(:wf);
SELECT pg_temp.serve(E' \n\t[ {"name":"a"} , 1, "s", null, [], {"name":"b"} ]  trailing bytes');
SELECT name FROM maestro_instances(:wf);
SELECT pg_temp.serve('\xefbbbf7b2264617461223a5b7b226e616d65223a22626f6d227d5d7d'::bytea);
SELECT name FROM maestro_instances(:wf);
SELECT pg_temp.serve('{"data":[]}');
SELECT count(*) FROM maestro_instances(:wf);

-- no list: an object without one is an empty list, a list field of
-- another kind an error (as for a whole-body parse)
SELECT pg_temp.serve('{"data":null,"page":{"next":null}}');
SELECT count(*) FROM maestro_instances(:wf);
SELECT pg_temp.serve('{"data":{"instances":{}}}');
SELECT count(*) FROM maestro_instances(:wf);
SELECT pg_temp.serve('{"data":{"instances":{}},"instances":7}');
SELECT mt.try($$SELECT * FROM maestro_instances('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001')$$);
SELECT pg_temp.serve('"not a list response"');
SELECT mt.try($$SELECT * FROM maestro_instances('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001')$$);

-- bodies that are not JSON anywhere: before, in, or after the list
SELECT pg_temp.serve('{"x":tru,"data":[{"name":"a"}]}');
SELECT mt.try($$SELECT * FROM maestro_instances('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001')$$);
SELECT pg_temp.serve('{"data":[{"name":"a"},{"name":"b",}]}');
SELECT mt.try($$SELECT * FROM maestro_instances('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001')$$);
SELECT pg_temp.serve('{"data":[{"name":"a"}],"after":[1,]}');
SELECT mt.try($$SELECT * FROM maestro_instances('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001')$$);
SELECT pg_temp.serve('{"data":[{"name":"a"}],"instances":[{"x":1},{]}');
SELECT mt.try($$SELECT * FROM maestro_instances('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001')$$);
SELECT pg_temp.serve('{"data":[{"name":"a"}');
SELECT mt.try($$SELECT * FROM maestro_instances('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001')$$);
SELECT pg_temp.serve('{"data":[{"name":"\ud800"}]}');
SELECT mt.try($$SELECT * FROM maestro_instances('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001')$$);
SELECT pg_temp.serve('\x7b2264617461223a5b7b226e616d65223a22ff227d5d7d'::bytea);
SELECT mt.try($$SELECT * FROM maestro_instances('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001')$$);
SELECT pg_temp.serve('');
SELECT mt.try($$SELECT * FROM maestro_instances('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001')$$);

-- a longer list: every element read once, in order
SELECT pg_temp.serve('{"data":[' || string_agg(format('{"id":"b5500000-0000-4000-8000-%s","name":"n%s","total_steps":%s,"tags":["t%s"]}',
                                                      lpad(g::text, 12, '0'), g, g, g), ',') || ']}')
FROM generate_series(1, 120) g;
SELECT count(*), count(DISTINCT id), sum(total_steps), min(name), max(tags[1]) FROM maestro_instances(:wf);
SELECT string_agg(total_steps::text, ',') = string_agg(g::text, ',') AS in_order
FROM (SELECT total_steps, row_number() OVER () AS g FROM maestro_instances(:wf)) s;
RESET maestro.server;
