--
-- setup: the servers and helpers the other test files share
--
-- Server "sim" is the simulator as it is; server "faulty" is the simulator
-- behind a fault-injection path prefix that mt.fault() sets.
\getenv sim_url MAESTRO_SIM_URL
\! curl -s -X POST "$MAESTRO_SIM_URL/__sim/reset"; echo
CREATE SERVER sim FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'sim_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE USER MAPPING FOR CURRENT_USER SERVER sim OPTIONS (access_token 'sim-token');
CREATE SERVER faulty FOREIGN DATA WRAPPER maestro
  OPTIONS (base_url :'sim_url', account_id '7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10');
CREATE USER MAPPING FOR CURRENT_USER SERVER faulty OPTIONS (access_token 'sim-token');

CREATE SCHEMA mt;

-- the simulator's root URL, as configured on server "sim"
CREATE FUNCTION mt.sim_url() RETURNS text LANGUAGE sql AS $$
  SELECT option_value FROM pg_options_to_table(
    (SELECT srvoptions FROM pg_foreign_server WHERE srvname = 'sim'))
  WHERE option_name = 'base_url'
$$;

-- point server "faulty" at the simulator through a fault spec
CREATE FUNCTION mt.fault(spec text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('ALTER SERVER faulty OPTIONS (SET base_url %L)',
                 mt.sim_url() || '/_fault/' || spec);
END
$$;

-- run a statement; report its SQLSTATE, message and detail instead of failing
CREATE FUNCTION mt.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  state text;
  message text;
  detail text;
  hint text;
BEGIN
  EXECUTE sql;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                          detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
  RETURN state || ': ' || message
         || coalesce(E'\n  detail: ' || nullif(detail, ''), '')
         || coalesce(E'\n  hint: ' || nullif(hint, ''), '');
END
$$;

-- like mt.try, but only the SQLSTATE and message (for details that name ports)
CREATE FUNCTION mt.state(sql text) RETURNS text LANGUAGE sql AS $$
  SELECT split_part(mt.try(sql), E'\n', 1)
$$;

-- milliseconds a statement takes, error or not
CREATE FUNCTION mt.elapsed_ms(sql text) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
  started timestamptz := clock_timestamp();
BEGIN
  PERFORM mt.try(sql);
  RETURN extract(epoch FROM clock_timestamp() - started) * 1000;
END
$$;
