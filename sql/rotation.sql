-- Batched, resumable re-encryption of one column: the in-database
-- replacement of an application's re-encryption script.
--
--   CALL rotate_column('clients', 'medical_history');            -- to the write version
--   CALL rotate_column('clients', 'medical_history', 5000, 'v2');
--
-- Each batch re-encrypts up to batch_size rows and COMMITs, so row locks and
-- WAL stay bounded and concurrent writers wait at most one batch. The table is
-- walked once in physical order (TID range scans); rows that were locked or
-- changed by others meanwhile are picked up by a further pass. Interrupted
-- (cancelled, timed out, backend killed), it loses at most the current batch
-- and a new CALL finishes the job. Must be CALLed outside a transaction block,
-- with keys set for the session (set_config(..., false)): keys set with
-- SET LOCAL end at the first COMMIT.
--
-- A jsonb column then gets a verification pass: format 2 does not
-- authenticate its "version" label, so a value relabelled to the target
-- version would pass for rotated. Every value is authenticated
-- (verify_field_versioned, a decrypt-only check) and those that fail are
-- re-encrypted from the loaded key they authenticate under, or reported.
--
-- Hostile search_path: the procedure runs with the caller's search_path (a
-- procedure that COMMITs cannot carry a SET search_path clause), which may
-- put a schema writable by others before pg_catalog. So nothing here, in the
-- static SQL, in PL/pgSQL's own expressions or in the generated SQL, is
-- resolved through it: every type, function and operator is
-- schema-qualified, and the table is named by its schema and name.
-- Whether a table is a Citus table (distributed or reference), and if so
-- its primary key columns as the batches of rotate_column and of the search
-- backfill name them: the column list, and the join of the table (t) with a
-- batch (s) on them (NULL without a primary key). Internal.
CREATE FUNCTION citus_table_keys(tbl regclass, OUT citus_table boolean, OUT keycols text, OUT keyjoin text)
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    citus_table := false;
    IF to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
        EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition WHERE logicalrelid OPERATOR(pg_catalog.=) $1)'
            INTO citus_table USING tbl;
    END IF;
    IF citus_table THEN
        SELECT string_agg(quote_ident(a.attname), ', '),
               string_agg(format('t.%1$I OPERATOR(pg_catalog.=) s.%1$I', a.attname), ' AND ')
          INTO keycols, keyjoin
          FROM pg_index i
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[])
         WHERE i.indrelid = tbl AND i.indisprimary;
    END IF;
END
$fn$;

CREATE PROCEDURE rotate_column(
    tbl regclass,
    col name,
    batch_size integer DEFAULT 1000,
    key_version text DEFAULT NULL
)
LANGUAGE plpgsql
AS $proc$
DECLARE
    typid pg_catalog.oid;
    is_jsonb pg_catalog.bool;
    rel pg_catalog.text;
    fn pg_catalog.text;
    target pg_catalog.text := key_version;
    cond pg_catalog.text;
    total pg_catalog.int8;
    remaining pg_catalog.int8;
    done pg_catalog.int8;
    rotated pg_catalog.int8 := 0;
    n pg_catalog.int8;
    batch pg_catalog.int4 := 0;
    pass pg_catalog.int4;
    cursor_tid pg_catalog.tid;
    last_tid pg_catalog.tid;
    q pg_catalog.text;
    upd pg_catalog.text;
    citus_table pg_catalog.bool := false;
    keycols pg_catalog.text;
    keyjoin pg_catalog.text;
BEGIN
    IF batch_size IS NULL OR batch_size OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'batch_size must be a positive integer' USING ERRCODE = '22023';
    END IF;
    SELECT a.atttypid INTO typid
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid OPERATOR(pg_catalog.=) tbl
       AND a.attname OPERATOR(pg_catalog.=) col
       AND a.attnum OPERATOR(pg_catalog.>) 0
       AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column % of relation % does not exist', col, tbl USING ERRCODE = '42703';
    END IF;
    -- The UPDATE runs the table's triggers and index expressions as the
    -- caller: a superuser rotating a table that another role owns would run
    -- that role's code with superuser rights. Run it as the owner.
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_class c
                    WHERE c.oid OPERATOR(pg_catalog.=) tbl::pg_catalog.oid
                      AND pg_catalog.pg_get_userbyid(c.relowner) OPERATOR(pg_catalog.=) CURRENT_USER) THEN
        RAISE EXCEPTION 'rotate_column must be run by the owner of %', tbl
            USING ERRCODE = '42501',
                  HINT = 'SET ROLE to the table''s owner first: the UPDATE runs the table''s triggers and index expressions, which must not run with the rights of another role.';
    END IF;
    IF typid OPERATOR(pg_catalog.=) 'pg_catalog.jsonb'::pg_catalog.regtype::pg_catalog.oid THEN
        fn := '@extschema@.reencrypt_field_versioned';
        is_jsonb := true;
    ELSIF typid OPERATOR(pg_catalog.=) '@extschema@.encrypted_text'::pg_catalog.regtype::pg_catalog.oid THEN
        fn := '@extschema@.reencrypt';
        is_jsonb := false;
    ELSE
        RAISE EXCEPTION 'rotate_column re-encrypts jsonb envelope and encrypted_text columns, not %',
            typid::pg_catalog.regtype USING ERRCODE = '42804';
    END IF;
    IF target IS NULL THEN
        SELECT s.version INTO target FROM @extschema@.encryption_status() s WHERE s.is_current;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no write key version: set pazpaz.encryption_key_version, or pass key_version'
                USING ERRCODE = '55000';
        END IF;
    END IF;
    -- schema.name, both quoted. The text of a regclass omits the schema when
    -- the table is visible at that moment; a same-named table created later
    -- in pg_temp (searched first for tables) would then take its place in the
    -- statements reused from batch to batch.
    SELECT pg_catalog.format('%I.%I', ns.nspname, c.relname) INTO STRICT rel
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace ns ON ns.oid OPERATOR(pg_catalog.=) c.relnamespace
     WHERE c.oid OPERATOR(pg_catalog.=) tbl;

    -- A Citus table (distributed or reference) has no TIDs across shards and
    -- takes neither FOR UPDATE nor a volatile function in an UPDATE: its
    -- batches re-encrypt in a subquery (run on the workers, where the rows
    -- are) and update by primary key, guarded by the old ciphertext, so a
    -- row changed meanwhile is left to the next batch (as SKIP LOCKED leaves
    -- it here). Each batch is its own transaction, and a worker knows only
    -- the keys that transaction forwarded (forward_keys()).
    SELECT k.citus_table, k.keycols, k.keyjoin INTO citus_table, keycols, keyjoin
      FROM @extschema@.citus_table_keys(tbl) k;
    IF citus_table AND keycols IS NULL THEN
        RAISE EXCEPTION 'rotate_column needs a primary key on the Citus table %', tbl USING ERRCODE = '0A000';
    END IF;

    -- Phase 1 re-encrypts the values labelled with another version; phase 2
    -- (jsonb only) those labelled with the target that do not authenticate.
    FOR phase IN 1..2 LOOP
        IF phase OPERATOR(pg_catalog.=) 1 THEN
            cond := pg_catalog.format('@extschema@.key_version(%I) OPERATOR(pg_catalog.<>) %L::pg_catalog.text', col, target);
        ELSIF is_jsonb THEN
            cond := pg_catalog.format('NOT @extschema@.verify_field_versioned(%I)', col);
        ELSE
            EXIT;
        END IF;
        q := pg_catalog.format('SELECT pg_catalog.count(*) FROM %s WHERE %I IS NOT NULL AND %s', rel, col, cond);
        upd := pg_catalog.format($q$
            WITH batch AS (
                SELECT ctid FROM %1$s
                 WHERE ctid OPERATOR(pg_catalog.>) $1 AND %2$I IS NOT NULL AND %4$s
                 LIMIT $3
                 FOR UPDATE SKIP LOCKED
            ), upd AS (
                -- A TID scan of exactly the locked rows (a join back to
                -- the table could scan all of it for every batch).
                UPDATE %1$s SET %2$I = %3$s(%2$I, $2)
                 WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT ctid FROM batch))
                RETURNING 1
            )
            SELECT (SELECT pg_catalog.count(*) FROM upd), (SELECT pg_catalog.max(ctid) FROM batch)
        $q$, rel, col, fn, cond);
        IF citus_table THEN
            upd := pg_catalog.format($q$
                UPDATE %1$s AS t SET %2$I = s.new_value
                  FROM (SELECT %5$s, %3$s(%2$I, $2) AS new_value, %2$I%7$s AS old_value
                          FROM %1$s
                         WHERE %2$I IS NOT NULL AND %4$s
                         LIMIT $3) AS s
                 WHERE %6$s AND t.%2$I%7$s OPERATOR(pg_catalog.=) s.old_value
            $q$, rel, col, fn, cond, keycols, keyjoin,
                 CASE WHEN is_jsonb THEN '' ELSE '::pg_catalog.bytea' END);
            PERFORM @extschema@.forward_keys();
        END IF;
        -- Row-level security must not hide rows from the walk or the checks
        -- (FORCE ROW LEVEL SECURITY applies to the owner): off in each
        -- transaction, so that a policy that would filter the table makes
        -- the CALL fail (42501) instead of reporting done over part of it.
        PERFORM pg_catalog.set_config('row_security', 'off', true);
        EXECUTE q INTO total;
        IF phase OPERATOR(pg_catalog.=) 1 THEN
            RAISE NOTICE 'rotate_column: % rows of %.% to re-encrypt to version %', total, tbl, col, target;
        ELSIF total OPERATOR(pg_catalog.>) 0 THEN
            RAISE NOTICE 'rotate_column: % values of %.% do not authenticate under the key their "version" names; re-encrypting them to version %',
                total, tbl, col, target;
        END IF;
        remaining := total;
        done := 0;
        pass := 0;

        WHILE remaining OPERATOR(pg_catalog.>) 0 AND pass OPERATOR(pg_catalog.<) 5 LOOP
            pass := pass OPERATOR(pg_catalog.+) 1;
            cursor_tid := '(0,0)'::pg_catalog.tid;
            LOOP
                PERFORM pg_catalog.set_config('row_security', 'off', true);
                IF citus_table THEN
                    PERFORM @extschema@.forward_keys();
                    EXECUTE upd USING cursor_tid, target, batch_size;
                    GET DIAGNOSTICS n = ROW_COUNT;
                    -- Nothing more this pass (the rest, if any, changed meanwhile).
                    last_tid := CASE WHEN n OPERATOR(pg_catalog.>) 0 THEN cursor_tid END;
                ELSIF phase OPERATOR(pg_catalog.=) 1 THEN
                    EXECUTE upd INTO n, last_tid USING cursor_tid, target, batch_size;
                ELSE
                    BEGIN
                        EXECUTE upd INTO n, last_tid USING cursor_tid, target, batch_size;
                    EXCEPTION WHEN SQLSTATE '22000' THEN
                        RAISE EXCEPTION USING ERRCODE = '22000', MESSAGE = SQLERRM,
                            DETAIL = pg_catalog.format('A value of %s.%I does not authenticate under the key of its version label, nor under any other loaded key.', tbl, col),
                            HINT = pg_catalog.format('List such values with SELECT ctid, key_version(%2$I) FROM %1$s WHERE NOT verify_field_versioned(%2$I);', tbl, col);
                    END;
                END IF;
                EXIT WHEN last_tid IS NULL;
                IF n OPERATOR(pg_catalog.>) 0 THEN
                    batch := batch OPERATOR(pg_catalog.+) 1;
                    done := done OPERATOR(pg_catalog.+) n;
                    rotated := rotated OPERATOR(pg_catalog.+) n;
                    RAISE NOTICE 'batch %: %/% rows', batch, done, total;
                END IF;
                COMMIT;
                cursor_tid := last_tid;
            END LOOP;
            COMMIT;
            IF citus_table THEN
                PERFORM @extschema@.forward_keys();
            END IF;
            PERFORM pg_catalog.set_config('row_security', 'off', true);
            EXECUTE q INTO remaining;
        END LOOP;

        IF remaining OPERATOR(pg_catalog.>) 0 THEN
            IF phase OPERATOR(pg_catalog.=) 1 THEN
                RAISE WARNING 'rotate_column: % rows of %.% are still not on version % (locked by other transactions?); CALL rotate_column again',
                    remaining, tbl, col, target;
            ELSE
                RAISE WARNING 'rotate_column: % values of %.% still do not authenticate (locked by other transactions?); CALL rotate_column again',
                    remaining, tbl, col;
            END IF;
            RETURN;
        END IF;
    END LOOP;

    IF is_jsonb THEN
        RAISE NOTICE 'rotate_column: done, % rows re-encrypted, none left on other versions, every value authenticates', rotated;
    ELSE
        RAISE NOTICE 'rotate_column: done, % rows re-encrypted, none left on other versions', rotated;
    END IF;
END
$proc$;
