--
-- errors: every failure class has its SQLSTATE, and the API's own words
--
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo
SET maestro.server = 'faulty';
\set list 'SELECT * FROM maestro_workflows()'
\set pause 'SELECT maestro_pause(''a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001'')'

-- HTTP statuses, in RFC 9457, legacy {error, code} and plain-text bodies
SELECT mt.fault('status=400'); SELECT mt.try(:'pause');
SELECT mt.fault('status=400;format=legacy'); SELECT mt.try(:'pause');
SELECT mt.fault('status=401;format=text'); SELECT mt.try(:'pause');
SELECT mt.fault('status=403'); SELECT mt.try(:'pause');
SELECT mt.fault('status=404;format=legacy'); SELECT mt.try(:'pause');
SELECT mt.fault('status=409'); SELECT mt.try(:'pause');
SELECT mt.fault('status=429;retry_after=0'); SELECT mt.try(:'pause');
SELECT mt.fault('status=500'); SELECT mt.try(:'pause');
SELECT mt.fault('status=502;html=1'); SELECT mt.try(:'pause');
SELECT mt.fault('status=418;format=text'); SELECT mt.try(:'pause');
-- a redirect is not followed (it would carry the token elsewhere): the
-- target, which records any request, never hears from us
SELECT mt.fault('status=302;format=text'); SELECT mt.try(:'pause');
SELECT mt.fault('status=307;redirect=' || replace(replace(mt.sim_url() || '/__sim/echo-auth', ':', '%3A'), '/', '%2F'));
SELECT mt.state('SELECT * FROM maestro_workflows()');
\! curl -s "$MAESTRO_SIM_URL/__sim/echo-auth/last" | python3 -c 'import json,sys; print("requests reaching the redirect target:", json.load(sys.stdin)["count"])'
-- OAuth and eSignature error shapes
SELECT mt.fault('status=400;body=%7B%22error%22%3A%22invalid_grant%22%2C%22error_description%22%3A%22no%20valid%20grant%22%7D'); SELECT mt.try(:'pause');
SELECT mt.fault('status=400;body=%7B%22errorCode%22%3A%22HOURLY_APIINVOCATION_LIMIT_EXCEEDED%22%2C%22message%22%3A%22The%20maximum%20number%20of%20hourly%20API%20invocations%20has%20been%20exceeded.%22%7D'); SELECT mt.try(:'pause');
-- an error body that quotes a URL with a secret query string is redacted
SELECT mt.fault('status=400;format=text;body=see%20https%3A%2F%2Fapps-d.docusign.com%2Fexecution%3Fmtid%3D1%26mtsec%3DSECRET%20and%20Bearer%20abc.def'); SELECT mt.try(:'pause');

-- GETs are retried on 429, 502, 503 and 504, then succeed
SELECT mt.fault('key=r503;status=503;times=2;method=GET'); SELECT count(*) FROM maestro_workflows();
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=key=r503"; echo
SELECT mt.fault('key=r429;status=429;retry_after=0;times=1'); SELECT count(*) FROM maestro_workflows();
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=key=r429"; echo
-- at most maestro.max_retries times, then the error says how often
SET maestro.max_retries = 2;
SELECT mt.fault('key=r504;status=504;format=text'); SELECT mt.try(:'list');
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=key=r504"; echo
-- 429 with retries used up is 53400
SELECT mt.fault('key=r429b;status=429;retry_after=0'); SELECT mt.try(:'list');
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=key=r429b"; echo
-- no retry at all when maestro.max_retries = 0; 4xx other than 429 are never retried
SET maestro.max_retries = 0;
SELECT mt.fault('key=r0;status=503'); SELECT mt.state(:'list');
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=key=r0"; echo
RESET maestro.max_retries;
SELECT mt.fault('key=r400;status=400'); SELECT mt.state(:'list');
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=key=r400"; echo
-- Retry-After is honoured: one second between the two requests (at least
-- that; the upper bound only tells it from the 30 s a wrong unit would give).
-- In FROM, so that it runs once (BETWEEN would evaluate it twice)
SELECT mt.fault('key=ra1;status=503;retry_after=1;times=1');
SELECT ms BETWEEN 1000 AND 20000 AS waited_retry_after FROM mt.elapsed_ms(:'list') AS ms;
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=key=ra1"; echo
-- a Retry-After beyond 30 s is not waited for (waiting would take an hour)
SELECT mt.fault('key=ra3600;status=429;retry_after=3600');
SELECT mt.elapsed_ms(:'list') < 20000 AS gave_up_at_once;
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=key=ra3600"; echo

-- transport failures: 08006; a GET is retried through them
SELECT mt.fault('key=t1;reset=1;times=1'); SELECT count(*) FROM maestro_workflows();
SELECT mt.fault('key=t2;reset=1'); SELECT mt.state(:'list');
SELECT mt.fault('key=t3;truncate=1'); SELECT mt.state(:'list');
SELECT mt.fault('key=t3p;truncate=1'); SELECT mt.state(:'pause');
-- nothing listens there
ALTER SERVER faulty OPTIONS (SET base_url 'http://127.0.0.1:9');
SELECT mt.state(:'list');

-- bodies that are not what they claim: 08P01
SELECT mt.fault('malformed=1'); SELECT mt.try(:'list');
SELECT mt.fault('empty=1'); SELECT mt.try(:'pause');
SELECT mt.fault('status=200;html=1'); SELECT mt.try(:'list');
-- (a missing field is NULL, a list without its list no rows: optional_fields.sql;
-- a list field that is no list, or an answer that is no object, is an error)
SELECT mt.fault('status=200;body=%7B%22data%22%3A%22unexpected%22%7D'); SELECT mt.try(:'list');
SELECT mt.fault('status=200;body=%22paused%22'); SELECT mt.try(:'pause');
SELECT mt.fault('status=200;body=%5B1%2C2%5D'); SELECT mt.try($$SELECT maestro_instance('a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001', 'b5500000-0000-4000-8000-000000000001')$$);
-- not UTF-8
SELECT mt.fault('status=200;body_hex=7b2264617461223a5b7b226e616d65223a22fffe227d5d7d'); SELECT mt.try(:'list');

-- a body larger than maestro.max_response_size: 54000, never retried
SET maestro.max_response_size = '64kB';
SELECT mt.fault('key=big;oversize=200000'); SELECT mt.try(:'list');
\! curl -s "$MAESTRO_SIM_URL/__sim/count?path_contains=key=big"; echo
RESET maestro.max_response_size;
SELECT mt.fault('key=big2;oversize=200000'); SELECT mt.try(:'list');
