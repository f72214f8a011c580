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
