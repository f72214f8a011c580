-- Parallel workers see the leader's keys (GUC state is passed to them) and
-- decrypt in parallel plans.
SELECT generate_encryption_key() AS k1, generate_encryption_key() AS k2 \gset
SELECT set_config('pazpaz.encryption_keys', json_build_object('v1', :'k1', 'v2', :'k2')::text, false) IS NOT NULL AS ring_set;
SET pazpaz.encryption_key_version = 'v1';
CREATE TABLE par (id int, plain text, f bytea, v jsonb, t encrypted_text);
INSERT INTO par SELECT i, 'row ' || i, encrypt_field('row ' || i), encrypt_field_versioned('row ' || i, CASE WHEN i % 2 = 0 THEN 'v1' ELSE 'v2' END), 'row ' || i
FROM generate_series(1, 20000) i;
ANALYZE par;
SET max_parallel_workers_per_gather = 2;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
EXPLAIN (COSTS OFF) SELECT count(*) FROM par WHERE decrypt_field(f) = plain;
SELECT count(*) AS format1_ok FROM par WHERE decrypt_field(f) = plain;
SELECT count(*) AS versioned_ok FROM par WHERE decrypt_field_versioned(v) = plain;
SELECT count(*) AS type_ok FROM par WHERE t::text = plain;
-- The workers really ran (2 launched, 3 partial aggregates: theirs and the
-- leader's) and decrypted their share of the rows, none of which the filter
-- removed.
SELECT * FROM regress.explain_analyze($$SELECT count(*) FROM par WHERE decrypt_field_versioned(v) = plain$$);
-- debug_parallel_query (force_parallel_mode in 15) runs even a simple query in
-- a worker (Single Copy: the worker decrypts, the leader only collects the
-- rows), with parallel plans costed as usual again.
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
SELECT CASE WHEN current_setting('server_version_num')::int >= 160000
            THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END AS force_parallel \gset
SET :force_parallel = on;
EXPLAIN (COSTS OFF, VERBOSE) SELECT decrypt_field(f) AS in_worker FROM par WHERE id = 42;
SELECT decrypt_field(f) AS in_worker FROM par WHERE id = 42;
RESET :force_parallel;
-- A worker without the leader's key would fail: the error is the same as the leader's.
RESET pazpaz.encryption_keys;
SELECT regress.try($$SELECT count(*) FROM par WHERE decrypt_field(f) = plain$$);
DROP TABLE par;
