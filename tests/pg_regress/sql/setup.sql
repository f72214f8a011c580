-- Helpers for the suite. regress.try(sql) runs a statement and returns 'ok'
-- or 'SQLSTATE: message', so that each file shows error codes and messages
-- without depending on psql's verbosity.
CREATE SCHEMA regress;
CREATE FUNCTION regress.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
-- For the hostile search_path tests (search.sql, search_path.sql):
-- regress.catalog_operators() lists every binary operator of pg_catalog over
-- the types the procedures compute with (an unqualified operator, or a
-- construct such as IS DISTINCT FROM, IN, NULLIF or CASE that looks one up,
-- would find a look-alike first); regress.plant_operator(schema, op, left,
-- right, result, note) makes a look-alike schema.op(left, right) that calls
-- the function note with its own name, then does what pg_catalog's does.
-- Run by the planting role, which owns what it makes.
CREATE FUNCTION regress.catalog_operators(OUT op text, OUT l text, OUT r text, OUT res text) RETURNS SETOF record
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT o.oprname::text, lt.typname::text, rt.typname::text, rs.typname::text
      FROM pg_operator o
      JOIN pg_type lt ON lt.oid = o.oprleft JOIN pg_type rt ON rt.oid = o.oprright JOIN pg_type rs ON rs.oid = o.oprresult
     WHERE o.oprnamespace = 'pg_catalog'::regnamespace
       AND lt.typname IN ('int2', 'int4', 'int8', 'float4', 'float8', 'numeric', 'text', 'bytea', 'oid', 'tid', 'xid',
                          'xid8', 'name', 'bool', 'jsonb', 'timestamptz', 'interval')
       AND rt.typname IN ('int2', 'int4', 'int8', 'float4', 'float8', 'numeric', 'text', 'bytea', 'oid', 'tid', 'xid',
                          'xid8', 'name', 'bool', 'jsonb', 'timestamptz', 'interval')
     ORDER BY 1, 2, 3
$$;
CREATE FUNCTION regress.plant_operator(s text, op text, l text, r text, res text, note text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fn text := 'op_' || left(md5(concat_ws('/', op, l, r)), 16);
BEGIN
    EXECUTE format($f$
        CREATE FUNCTION %1$I.%2$I(a pg_catalog.%3$s, b pg_catalog.%4$s) RETURNS pg_catalog.%5$s
        LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $b$
        BEGIN PERFORM %6$s(%7$L); RETURN a OPERATOR(pg_catalog.%8$s) b; END $b$
    $f$, s, fn, l, r, res, note, format('%s.%s(%s,%s)', s, op, l, r), op);
    EXECUTE format('CREATE OPERATOR %s.%s (LEFTARG = pg_catalog.%s, RIGHTARG = pg_catalog.%s, FUNCTION = %I.%I)',
                   quote_ident(s), op, l, r, s, fn);
END $$;
-- regress.explain_analyze(query) runs EXPLAIN ANALYZE and returns one row per
-- plan node, in plan order, with the counters rounded to whole numbers: the
-- text form differs between versions (PostgreSQL 18 prints rows=1.00 and
-- Buffers lines), the JSON form's values do not.
CREATE FUNCTION regress.explain_analyze(query text)
RETURNS TABLE (node text, filter text, actual_rows numeric, loops numeric, removed_by_filter numeric, workers_launched int)
LANGUAGE plpgsql AS $$
DECLARE
    plan jsonb;
BEGIN
    EXECUTE 'EXPLAIN (ANALYZE, FORMAT JSON, COSTS OFF, TIMING OFF, SUMMARY OFF, BUFFERS OFF) ' || query INTO plan;
    RETURN QUERY
    WITH RECURSIVE nodes(n, path) AS (
        SELECT plan->0->'Plan', ARRAY[1::bigint]
        UNION ALL
        SELECT c.n, nodes.path || c.i FROM nodes, jsonb_array_elements(nodes.n->'Plans') WITH ORDINALITY AS c(n, i)
    )
    SELECT coalesce(nullif(n->>'Partial Mode', 'Simple') || ' ', '')
               || CASE WHEN (n->>'Parallel Aware')::boolean THEN 'Parallel ' ELSE '' END
               || (n->>'Node Type') || coalesce(' on ' || (n->>'Relation Name'), ''),
           n->>'Filter',
           round((n->>'Actual Rows')::numeric),
           round((n->>'Actual Loops')::numeric),
           round((n->>'Rows Removed by Filter')::numeric),
           (n->>'Workers Launched')::int
      FROM nodes ORDER BY path;
END $$;
-- A role without privileges beyond PUBLIC's.
CREATE ROLE regress_app LOGIN;
GRANT USAGE ON SCHEMA regress TO regress_app;
