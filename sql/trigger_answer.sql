--
-- trigger_answer: a trigger's answer is read without a cJSON tree when it
-- is a plain object of strings, and by cJSON otherwise; both readings
-- must give the same row. Each answer below is served as it is written
-- (body_hex), so that the escapes, spacing and member order are exactly
-- these
--
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo
SET maestro.server = 'faulty';
CREATE FUNCTION pg_temp.answer(body text) RETURNS void LANGUAGE sql AS $$
  SELECT mt.fault('method=POST;status=201;body_hex=' || encode(convert_to(body, 'UTF8'), 'hex'))
$$;
-- the row of a trigger answered with body, and the error it raises
CREATE FUNCTION pg_temp.row_for(body text) RETURNS TABLE (instance_id uuid, instance_url text)
LANGUAGE sql AS $$
  SELECT pg_temp.answer(body);
  SELECT * FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{"Name": "Ada"}', 'Answer')
$$;
CREATE FUNCTION pg_temp.error_for(body text) RETURNS text LANGUAGE sql AS $$
  SELECT pg_temp.answer(body);
  SELECT mt.try($q$SELECT * FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{"Name": "Ada"}', 'Answer')$q$)
$$;

-- the plain answer, with white space and members in either order
SELECT * FROM pg_temp.row_for('{"instance_id":"c0ffee00-0000-4000-8000-000000000001","instance_url":"https://x.example/i/1"}');
SELECT * FROM pg_temp.row_for(E' \n{ "instance_url" : "https://x.example/i/2" ,\t"instance_id" : "C0FFEE00-0000-4000-8000-000000000002" }\r\n');
-- other members of any kind beside them
SELECT * FROM pg_temp.row_for('{"status":"started","instance_id":"c0ffee00-0000-4000-8000-000000000003","ok":true,"none":null,"instance_url":"u3"}');
SELECT * FROM pg_temp.row_for('{"steps":[1,{"a":2}],"instance_id":"c0ffee00-0000-4000-8000-000000000004","count":7,"instance_url":"u4"}');
-- escapes, in a value and in a key, are decoded
SELECT * FROM pg_temp.row_for('{"instance_id":"c0ffee00-0000-4000-8000-000000000005","instance_url":"https:\/\/x.example\/i\/5?a=\u00e9"}');
SELECT * FROM pg_temp.row_for('{"instance\u005fid":"c0ffee00-0000-4000-8000-000000000006","instance_url":"u6"}');
-- a name given twice: the first counts, as cJSON reads it
SELECT * FROM pg_temp.row_for('{"instance_id":"c0ffee00-0000-4000-8000-000000000007","instance_id":"c0ffee00-0000-4000-8000-000000000008","instance_url":"u7"}');
-- an instance_url that is no string: its JSON text; null is no url
SELECT * FROM pg_temp.row_for('{"instance_id":"c0ffee00-0000-4000-8000-000000000009","instance_url":true}');
SELECT * FROM pg_temp.row_for('{"instance_id":"c0ffee00-0000-4000-8000-000000000010","instance_url":12.5}');
SELECT * FROM pg_temp.row_for('{"instance_id":"c0ffee00-0000-4000-8000-000000000011","instance_url":null}');
-- an instance_id that is no uuid string is no id
SELECT * FROM pg_temp.row_for('{"instance_id":"c0ffee00","instance_url":"u12"}');
SELECT * FROM pg_temp.row_for('{"instance_id":false,"instance_url":"u13"}');
-- what is not JSON is an error, however close it comes (the last is not UTF-8)
SELECT pg_temp.error_for('{"instance_id":"c0ffee00-0000-4000-8000-000000000014","instance_url":"u14",}');
SELECT pg_temp.error_for('{"instance_id":"c0ffee00-0000-4000-8000-000000000015","instance_url":"u15"');
SELECT pg_temp.error_for('{"instance_id":"c0ffee00-0000-4000-8000-000000000016","instance_url":nul}');
SELECT pg_temp.error_for('{"instance_id":"c0ffee00-0000-4000-8000-000000000017" "instance_url":"u17"}');
SELECT mt.fault('method=POST;status=201;body_hex=7b22696e7374616e63655f6964223a2263ff227d');
SELECT mt.try($$SELECT * FROM maestro_trigger('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', '{"Name": "Ada"}', 'Answer')$$);
SET maestro.server = 'sim';
