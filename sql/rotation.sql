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

-- rotate_column's view of a table and its inheritance children or
-- partitions: the largest heap in blocks, the files (a rewrite changes
-- them), the tree itself (a child detached or unlinked for a while would
-- miss batches), and whether a trigger or rule may keep an UPDATE from
-- writing a row as asked or change it afterwards (enabled UPDATE triggers of
-- any kind other than the search indexes' without a WHEN clause and
-- PostgreSQL's internal ones, rules) or a foreign table is among them. Internal.
CREATE FUNCTION rotation_table_state(tbl regclass, OUT nblocks int8, OUT files text, OUT guarded boolean, OUT tree text)
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH RECURSIVE t(oid, pending) AS (
        SELECT tbl::oid, false
        UNION SELECT i.inhrelid, i.inhdetachpending FROM pg_inherits i JOIN t ON i.inhparent = t.oid
    )
    SELECT max(pg_relation_size(t.oid)) / current_setting('block_size')::int8,
           string_agg(pg_relation_filenode(t.oid)::text, ',' ORDER BY t.oid),
           bool_or(c.relkind = 'f' OR c.relhasrules
                   OR EXISTS (SELECT FROM pg_trigger g
                               WHERE g.tgrelid = t.oid AND g.tgenabled <> 'D' AND NOT g.tgisinternal
                                 -- INSERT (4), DELETE (8: a row moved to
                                 -- another partition is deleted and
                                 -- inserted), UPDATE (16)
                                 AND (g.tgtype::int4 & 28) <> 0
                                 -- The search indexes' own trigger only in
                                 -- the shape add_blind_index makes (BEFORE
                                 -- INSERT OR UPDATE, row, no WHEN clause: a
                                 -- WHEN clause would run the owner's code).
                                 AND NOT (g.tgfoid = '@extschema@.blind_index_trigger()'::regprocedure
                                          AND g.tgtype = 23 AND g.tgqual IS NULL))),
           string_agg(t.oid::text || CASE WHEN t.pending THEN '-' ELSE '' END, ',' ORDER BY t.oid)
      FROM t JOIN pg_class c ON c.oid = t.oid
$fn$;

-- The first role other than a table's owner that holds the TRIGGER
-- privilege on the table, on a partition or child of it, or on one of its
-- ancestors (whose row triggers are copied onto partitions), as its name
-- (PUBLIC for everyone); NULL when none does. Such a role can put its own
-- trigger (or a WHEN clause of any functions) on the table, which the
-- batches' UPDATEs would run in the caller's session, with its keys.
-- Internal (rotate_column, search_index_add).
CREATE FUNCTION rotation_trigger_grantee(tbl regclass) RETURNS text
LANGUAGE sql STABLE STRICT
AS $fn$
    WITH RECURSIVE down(oid) AS (
            SELECT tbl::pg_catalog.oid
          UNION
            SELECT i.inhrelid FROM pg_catalog.pg_inherits i, down WHERE i.inhparent OPERATOR(pg_catalog.=) down.oid),
        up(oid) AS (
            SELECT tbl::pg_catalog.oid
          UNION
            SELECT i.inhparent FROM pg_catalog.pg_inherits i, up WHERE i.inhrelid OPERATOR(pg_catalog.=) up.oid)
    SELECT CASE WHEN a.grantee OPERATOR(pg_catalog.=) 0::pg_catalog.oid THEN 'PUBLIC'
                ELSE pg_catalog.pg_get_userbyid(a.grantee)::pg_catalog.text END
      FROM (SELECT oid FROM down UNION SELECT oid FROM up) t, pg_catalog.pg_class c,
           pg_catalog.aclexplode(c.relacl) a
     WHERE c.oid OPERATOR(pg_catalog.=) t.oid
       AND a.privilege_type OPERATOR(pg_catalog.=) 'TRIGGER'
       AND a.grantee OPERATOR(pg_catalog.<>) c.relowner
     ORDER BY 1 LIMIT 1
$fn$;

-- rotation_lock (src/rotation.rs): rotate_column's table lock (ACCESS
-- SHARE on its schema, so that a rename of the schema waits for the batch,
-- then ROW EXCLUSIVE, as its UPDATEs take) by OID, and the table's name then,
-- schema-qualified and quoted; NULL with nothing locked when the table is
-- gone or the current user may not UPDATE it. Internal.
CREATE FUNCTION rotation_lock(tbl regclass) RETURNS text
LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'rotation_lock_wrapper';

-- How many rows of the table (itself, not its children) this backend has
-- inserted, updated or deleted, aborted subtransactions' included, as
-- PostgreSQL's statistics count them (pg_stat_get_xact_tuples_*: the
-- current transaction's and those of the transactions since the backend
-- last reported its statistics, which it does only when idle, so never
-- during a CALL); NULL when track_counts is off. rotate_column compares the
-- growth over a pass with the rows its batches' UPDATEs report. Internal;
-- plain SQL so that it is inlined.
CREATE FUNCTION rotation_table_writes(tbl regclass) RETURNS int8
LANGUAGE sql VOLATILE PARALLEL RESTRICTED
AS $fn$
    SELECT CASE WHEN pg_catalog.current_setting('track_counts')::pg_catalog.bool
                THEN pg_catalog.pg_stat_get_xact_tuples_inserted(tbl::pg_catalog.oid)
                     OPERATOR(pg_catalog.+) pg_catalog.pg_stat_get_xact_tuples_updated(tbl::pg_catalog.oid)
                     OPERATOR(pg_catalog.+) pg_catalog.pg_stat_get_xact_tuples_deleted(tbl::pg_catalog.oid)
           END
$fn$;

-- Whether an UPDATE of the table may run code other than PostgreSQL's own
-- and this extension's, judged so that it fails closed: true for anything
-- but a plain table, unpartitioned and without inheritance, row security
-- policies, CHECK, exclusion or foreign key constraints (either side),
-- generated columns, or indexes with expressions or predicates, and whose
-- indexes' operator classes and access methods are pg_catalog's or this
-- extension's. Not a list of safe functions: some of pg_catalog's run
-- SQL given as text (query_to_xml, ts_stat), and a dependency on one is not
-- even recorded. (Triggers and rules are rotation_table_state's.) Internal
-- (rotate_column).
CREATE FUNCTION rotation_table_runs_code(tbl regclass) RETURNS boolean
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH ours(classid, objid) AS (
        SELECT m.classid, m.objid FROM pg_depend m JOIN pg_extension e ON e.oid = m.refobjid
         WHERE m.refclassid = 'pg_extension'::regclass AND m.deptype = 'e' AND e.extname = 'pazpaz_crypto'
    ),
    refs(classid, objid) AS (
        SELECT 'pg_opclass'::regclass::oid, x.opc
          FROM pg_index i, unnest(i.indclass::oid[]) x(opc) WHERE i.indrelid = tbl
        UNION ALL
        SELECT 'pg_proc'::regclass::oid, a.amhandler::oid
          FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am a ON a.oid = ic.relam
         WHERE i.indrelid = tbl
    )
    SELECT NOT EXISTS (SELECT FROM pg_class c
                        WHERE c.oid = tbl AND c.relkind = 'r' AND NOT c.relispartition
                          AND NOT c.relhassubclass AND NOT c.relrowsecurity)
        OR EXISTS (SELECT FROM pg_inherits h WHERE h.inhrelid = tbl OR h.inhparent = tbl)
        OR EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = tbl)
        OR EXISTS (SELECT FROM pg_constraint k
                    WHERE (k.conrelid = tbl AND k.contype IN ('c', 'x', 'f', 't'))
                       OR (k.confrelid = tbl AND k.contype = 'f'))
        OR EXISTS (SELECT FROM pg_attribute a
                    WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> '')
        OR EXISTS (SELECT FROM pg_index i
                    WHERE i.indrelid = tbl AND (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL))
        OR EXISTS (
            SELECT FROM refs r
             WHERE NOT EXISTS (SELECT FROM ours o WHERE o.classid = r.classid AND o.objid = r.objid)
               AND COALESCE(CASE r.classid
                       WHEN 'pg_proc'::regclass THEN (SELECT p.pronamespace FROM pg_proc p WHERE p.oid = r.objid)
                       ELSE (SELECT c.opcnamespace FROM pg_opclass c WHERE c.oid = r.objid)
                   END, 0) <> 'pg_catalog'::regnamespace)
$fn$;

-- How many transactions with IDs below `below` are still open (prepared
-- ones among them): those the current snapshot lists as running, and those
-- with IDs from its xmax up to `below` still in progress (a snapshot's xmax
-- is one past the latest ID that has ended, so a transaction that took its
-- ID after that is in no list). Internal (rotate_column).
CREATE FUNCTION rotation_open_writers(below xid8) RETURNS int8
LANGUAGE sql VOLATILE PARALLEL RESTRICTED
AS $fn$
    SELECT (SELECT pg_catalog.count(*)
              FROM pg_catalog.pg_snapshot_xip(s.snap) o(x)
             WHERE o.x OPERATOR(pg_catalog.<) below)
           OPERATOR(pg_catalog.+)
           (SELECT pg_catalog.count(*)
              FROM pg_catalog.generate_series(pg_catalog.pg_snapshot_xmax(s.snap)::pg_catalog.text::pg_catalog.int8,
                                              below::pg_catalog.text::pg_catalog.int8 OPERATOR(pg_catalog.-) 1) g(i)
             WHERE pg_catalog.pg_xact_status(g.i::pg_catalog.text::pg_catalog.xid8)
                   OPERATOR(pg_catalog.=) 'in progress'::pg_catalog.text)
      FROM (SELECT pg_catalog.pg_current_snapshot() AS snap) s
$fn$;

-- The same, raising the reason instead of returning NULL. Internal.
CREATE FUNCTION rotation_lock_table(tbl regclass) RETURNS text
LANGUAGE plpgsql VOLATILE STRICT SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    rel text := @extschema@.rotation_lock(tbl);
BEGIN
    IF rel IS NOT NULL THEN
        RETURN rel;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = tbl) THEN
        RAISE EXCEPTION 'relation with OID % was dropped during rotate_column', tbl::oid USING ERRCODE = '42P01';
    END IF;
    RAISE EXCEPTION 'permission denied for table %', tbl USING ERRCODE = '42501',
        HINT = 'rotate_column updates the table as its owner, who lost the UPDATE privilege on it.';
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
    q pg_catalog.text;
    upd pg_catalog.text;
    citus_table pg_catalog.bool := false;
    keycols pg_catalog.text;
    keyjoin pg_catalog.text;
    stale pg_catalog.text;
    vsel pg_catalog.text;
    win pg_catalog.text;
    upd_skip pg_catalog.text;
    skipped pg_catalog.text;
    built pg_catalog.text;
    files pg_catalog.text;
    files_now pg_catalog.text;
    guarded pg_catalog.bool;
    guarded_now pg_catalog.bool;
    tree pg_catalog.text;
    tree_now pg_catalog.text;
    colnum pg_catalog.int2;
    shaped pg_catalog.bool;
    col_ok pg_catalog.bool;
    xid_at_start pg_catalog.bool;
    since pg_catalog.xid8;
    nx pg_catalog.xid8;
    xids pg_catalog.int8;
    uncertain pg_catalog.bool;
    ours pg_catalog.xid[] := '{}';
    x pg_catalog.xid;
    m pg_catalog.int8;
    nblocks pg_catalog.int8;
    step pg_catalog.int8;
    step0 pg_catalog.int8;
    blk pg_catalog.int8;
    lo pg_catalog.tid;
    hi pg_catalog.tid;
    tries pg_catalog.int4;
    bad_label pg_catalog.bool;
    plain pg_catalog.bool;
    pct pg_catalog.float8;
    about pg_catalog.text := '';
    seek pg_catalog.bool;
    next_row pg_catalog.tid;
    probe pg_catalog.text;
    width pg_catalog.int8;
    others pg_catalog.text;
    waits pg_catalog.int4;
    upto pg_catalog.xid8;
    writes_before pg_catalog.int8;
    writes_after pg_catalog.int8;
    pass_rows pg_catalog.int8;
    walk_exact pg_catalog.bool;
    nobody pg_catalog.bool;
    counted pg_catalog.bool;
    opened pg_catalog.int8;
BEGIN
    IF batch_size IS NULL OR batch_size OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'batch_size must be a positive integer' USING ERRCODE = '22023';
    END IF;
    SELECT a.atttypid, a.attnum INTO typid, colnum
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
    IF @extschema@.rotation_trigger_grantee(tbl) IS NOT NULL THEN
        RAISE EXCEPTION 'rotate_column: role % holds the TRIGGER privilege on % or a table of its inheritance tree, and could make the UPDATE run its code in this session, which holds the keys',
            @extschema@.rotation_trigger_grantee(tbl), tbl
            USING ERRCODE = '42501',
                  HINT = 'REVOKE TRIGGER on the table from that role (GRANT ALL includes it), then check the table''s triggers: drop those you did not make.';
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

    IF citus_table THEN
        -- Phase 1 re-encrypts the values labelled with another version;
        -- phase 2 (jsonb only) those labelled with the target that do not
        -- authenticate.
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
                UPDATE %1$s AS t SET %2$I = s.new_value
                  FROM (SELECT %5$s, %3$s(%2$I, $2) AS new_value, %2$I%7$s AS old_value
                          FROM %1$s
                         WHERE %2$I IS NOT NULL AND %4$s
                         LIMIT $3) AS s
                 WHERE %6$s AND t.%2$I%7$s OPERATOR(pg_catalog.=) s.old_value
            $q$, rel, col, fn, cond, keycols, keyjoin,
                 CASE WHEN is_jsonb THEN '' ELSE '::pg_catalog.bytea' END);
            -- Row-level security must not hide rows from the walk or the
            -- checks (FORCE ROW LEVEL SECURITY applies to the owner): off in
            -- each transaction, so that a policy that would filter the table
            -- makes the CALL fail (42501) instead of reporting done over
            -- part of it.
            PERFORM pg_catalog.set_config('row_security', 'off', true);
            PERFORM @extschema@.forward_keys();
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
                LOOP
                    PERFORM pg_catalog.set_config('row_security', 'off', true);
                    PERFORM @extschema@.forward_keys();
                    EXECUTE upd USING NULL::pg_catalog.tid, target, batch_size;
                    GET DIAGNOSTICS n = ROW_COUNT;
                    -- Nothing more this pass (the rest, if any, changed meanwhile).
                    EXIT WHEN n OPERATOR(pg_catalog.=) 0;
                    batch := batch OPERATOR(pg_catalog.+) 1;
                    done := done OPERATOR(pg_catalog.+) n;
                    rotated := rotated OPERATOR(pg_catalog.+) n;
                    RAISE NOTICE 'batch %: %/% rows', batch, done, total;
                    COMMIT;
                END LOOP;
                COMMIT;
                PERFORM @extschema@.forward_keys();
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
    ELSE
        -- The table (with its inheritance children or partitions: an UPDATE
        -- with a TID range applies it to each) is walked in ranges of heap
        -- blocks, TID range scans each holding about batch_size of the rows
        -- to re-encrypt, with one UPDATE per range and no locking pass: a
        -- row another transaction is writing makes the batch wait for it,
        -- as any UPDATE would, and the recheck of the condition on the
        -- row's new version (READ COMMITTED) re-encrypts that version, or
        -- leaves it when it is on the target already. Row waits are bounded
        -- (lock_timeout 200 ms for the batch's transaction, set after the
        -- table lock, which is waited for as by any UPDATE, under the
        -- caller's lock_timeout); a range whose row locks do not clear in
        -- three tries is done without its locked rows (FOR UPDATE SKIP
        -- LOCKED), and the check below looks at that range again.
        --
        -- On a jsonb column, the same UPDATE re-encrypts the values labelled
        -- with the target that do not authenticate (format 2 does not
        -- authenticate its label): in the first pass every target-labelled
        -- value is authenticated, none excluded by its xmin (a frozen tuple
        -- keeps its raw xmin, which a later transaction of this CALL can
        -- share after wraparound).
        --
        -- What can be left after the walk: rows that other transactions
        -- wrote since the CALL began (the walk may have passed them), rows
        -- of ranges done without their locked rows, rows a trigger, rule or
        -- the table's own constraint or index functions kept from being
        -- updated or changed after, and, if the table was rewritten
        -- meanwhile (VACUUM FULL, CLUSTER: new files, rows moved), anything.
        -- The check after the walk counts the rows on another version over
        -- the whole table, every time (a scan without decryption, trusting
        -- nothing). On jsonb it also authenticates target-labelled values
        -- again: all of them when the table had INSERT, UPDATE or DELETE
        -- triggers or rules during any batch, when its partitions or
        -- children changed, or when it was rewritten; otherwise those
        -- written since the CALL began by others and those of skipped
        -- ranges; none when no other transaction took a transaction ID
        -- since the CALL began (every ID from `since` on is then one of the
        -- two of a batch of this CALL: its transaction and the UPDATE's
        -- subtransaction). Rows the check finds get a further pass, up to 5
        -- passes in all.
        --
        -- Which rows are stale: the label of a jsonb envelope is read by
        -- ->>, which costs less than key_version(); a value that is no
        -- envelope counts as stale, and its re-encryption reports it.
        -- Compared in the C collation (bytes, no locale lookup).
        IF is_jsonb THEN
            stale := pg_catalog.format('COALESCE((%I OPERATOR(pg_catalog.->>) ''version''::pg_catalog.text) OPERATOR(pg_catalog.<>) %L::pg_catalog.text COLLATE pg_catalog."C", true)',
                                       col, target);
        ELSE
            stale := pg_catalog.format('@extschema@.key_version(%I) OPERATOR(pg_catalog.<>) %L::pg_catalog.text COLLATE pg_catalog."C"', col, target);
        END IF;
        since := pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot());
        -- Called in a transaction that already wrote (a DO block, say): its
        -- ID is not one the count of the batches' IDs can place.
        xid_at_start := pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL;
        SELECT s.nblocks, s.files, s.guarded, s.tree INTO nblocks, files, guarded, tree
          FROM @extschema@.rotation_table_state(tbl) s;
        rel := @extschema@.rotation_lock_table(tbl);
        -- A plain table (no partitions, children or foreign table): its
        -- rows are sampled below and its batches look for the next row to do.
        SELECT c.relkind OPERATOR(pg_catalog.=) 'r' AND NOT c.relhassubclass INTO plain
          FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) tbl;
        -- How many rows to re-encrypt: counted; on a plain table of more
        -- than 10,000 blocks (80 MB) estimated from a sample of about 1,000
        -- of them (a count costs about a tenth of the rotation; the check
        -- after the walk counts exactly).
        pct := CASE WHEN plain AND nblocks OPERATOR(pg_catalog.>) 10000
                    THEN 100000::pg_catalog.float8 OPERATOR(pg_catalog./) nblocks ELSE 100 END;
        PERFORM pg_catalog.set_config('row_security', 'off', true);
        LOOP
            EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FILTER (WHERE %s), pg_catalog.count(*) FROM %s %s WHERE %I IS NOT NULL',
                                      stale, rel,
                                      CASE WHEN pct OPERATOR(pg_catalog.<) 100 THEN 'TABLESAMPLE pg_catalog.system ($1::pg_catalog.float4)' ELSE '' END,
                                      col) INTO total, n USING pct;
            EXIT WHEN pct OPERATOR(pg_catalog.>=) 100 OR n OPERATOR(pg_catalog.>) 0;
            pct := 100;  -- the sample saw no value: counted after all
        END LOOP;
        IF pct OPERATOR(pg_catalog.<) 100 THEN
            about := 'about ';
            total := pg_catalog.round(total OPERATOR(pg_catalog.*) 100 OPERATOR(pg_catalog./) pct);
            n := pg_catalog.round(n OPERATOR(pg_catalog.*) 100 OPERATOR(pg_catalog./) pct);
        END IF;
        RAISE NOTICE 'rotate_column: % rows of %.% to re-encrypt to version %', about OPERATOR(pg_catalog.||) total, tbl, col, target;
        -- Which target-labelled values a pass authenticates (NULL: none).
        vsel := CASE WHEN is_jsonb AND (n OPERATOR(pg_catalog.>) total OR about OPERATOR(pg_catalog.<>) '') THEN 'true' END;
        -- Estimated: the ranges may grow as if at least 1% of the rows
        -- were to do (below, the first one is sized as if all were).
        remaining := CASE WHEN about OPERATOR(pg_catalog.=) '' THEN total
                          ELSE GREATEST(total, n OPERATOR(pg_catalog./) 100) END;
        done := 0;
        pass := 0;
        LOOP
            -- Every transaction of the walk and of the check runs at READ
            -- COMMITTED, whatever default_transaction_isolation says: a
            -- batch rechecks a row another writer changed on its new
            -- version, and the check's count sees what committed before it
            -- (with one snapshot for the transaction it would not see what
            -- committed while the check waited). Set first thing after each
            -- COMMIT, before anything takes a snapshot.
            COMMIT;
            SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
            pass := pass OPERATOR(pg_catalog.+) 1;
            built := NULL;
            -- The first range: batch_size rows at the table's average
            -- density; later ones follow the density just seen (rows
            -- re-encrypted per block), never longer than the first.
            step0 := LEAST(nblocks, GREATEST(1::pg_catalog.int8,
                         (batch_size::pg_catalog.int8 OPERATOR(pg_catalog.*) nblocks) OPERATOR(pg_catalog./)
                         GREATEST(remaining, 1::pg_catalog.int8)));
            step := step0;
            IF pass OPERATOR(pg_catalog.=) 1 AND about OPERATOR(pg_catalog.<>) '' THEN
                -- An estimate: the first range as if every row were to do.
                step := LEAST(step0, GREATEST(1::pg_catalog.int8,
                            (batch_size::pg_catalog.int8 OPERATOR(pg_catalog.*) nblocks) OPERATOR(pg_catalog./)
                            GREATEST(n, 1::pg_catalog.int8)));
            END IF;
            skipped := '';
            uncertain := false;
            walk_exact := plain;
            pass_rows := 0;
            -- The rows of the table this backend has written so far in the
            -- CALL's transactions, by the statistics (see the check).
            writes_before := @extschema@.rotation_table_writes(tbl);
            xids := 0;
            blk := 0;
            seek := plain;
            -- Nothing to walk: no row to re-encrypt and no value to check.
            IF remaining OPERATOR(pg_catalog.=) 0 AND vsel IS NULL THEN
                blk := nblocks;
            END IF;
            WHILE blk OPERATOR(pg_catalog.<) nblocks LOOP
                -- The table, locked, by its name now (a rename meanwhile is
                -- followed; the lock keeps the name until the COMMIT).
                rel := COALESCE(@extschema@.rotation_lock(tbl), @extschema@.rotation_lock_table(tbl));
                -- Under that lock, for this batch: the column is the one
                -- the CALL was given (renamed or dropped and re-added
                -- meanwhile, the statements would name another), and the
                -- table is still as it was, without triggers or rules that
                -- could keep this batch from writing a row as asked (they
                -- may come and go between batches). Only a table that has
                -- children, triggers or rules at all needs the longer look.
                SELECT a.attname OPERATOR(pg_catalog.=) col AND a.atttypid OPERATOR(pg_catalog.=) typid AND NOT a.attisdropped,
                       c.relhassubclass OR c.relhastriggers OR c.relhasrules OR c.relkind OPERATOR(pg_catalog.<>) 'r',
                       c.relkind OPERATOR(pg_catalog.=) 'r' AND NOT c.relhassubclass
                  INTO col_ok, shaped, plain
                  FROM pg_catalog.pg_class c
                  JOIN pg_catalog.pg_attribute a
                    ON a.attrelid OPERATOR(pg_catalog.=) c.oid AND a.attnum OPERATOR(pg_catalog.=) colnum
                 WHERE c.oid OPERATOR(pg_catalog.=) tbl;
                IF NOT COALESCE(col_ok, false) THEN
                    RAISE EXCEPTION 'column % of % was renamed, dropped or changed during rotate_column', col, tbl
                        USING ERRCODE = '55000',
                              HINT = 'The batches committed so far are kept; CALL rotate_column again with the column''s name now.';
                END IF;
                IF shaped THEN
                    SELECT s.guarded, s.tree INTO guarded_now, tree_now
                      FROM @extschema@.rotation_table_state(tbl) s;
                    guarded := guarded OR guarded_now OR tree_now OPERATOR(pg_catalog.<>) tree;
                END IF;
                IF built IS NULL OR built OPERATOR(pg_catalog.<>) rel THEN
                    built := rel;
                    IF vsel IS NULL THEN
                        cond := stale;
                    ELSE
                        -- CASE keeps the order: the cheap tests first, the
                        -- decryption last.
                        cond := pg_catalog.format('CASE WHEN %s THEN true WHEN %s THEN NOT @extschema@.verify_field_versioned(%I) ELSE false END',
                                                  stale, vsel, col);
                    END IF;
                    -- The transaction ID it writes with is read after it
                    -- (rotation_write_xid), not returned with every row.
                    upd := pg_catalog.format($q$
                        UPDATE %1$s SET %2$I = %3$s(%2$I, %4$L::pg_catalog.text)
                         WHERE ctid OPERATOR(pg_catalog.>=) $1 AND ctid OPERATOR(pg_catalog.<) $2
                           AND %2$I IS NOT NULL AND %5$s
                    $q$, rel, col, fn, target, cond);
                    -- The same without the rows locked by others, if waiting
                    -- fails. The locked rows are the latest versions and stay
                    -- as they are until the UPDATE: no second test.
                    upd_skip := pg_catalog.format($q$
                        WITH batch AS (
                            SELECT ctid FROM %1$s
                             WHERE ctid OPERATOR(pg_catalog.>=) $1 AND ctid OPERATOR(pg_catalog.<) $2
                               AND %2$I IS NOT NULL AND %5$s
                             FOR UPDATE SKIP LOCKED
                        )
                        UPDATE %1$s SET %2$I = %3$s(%2$I, %4$L::pg_catalog.text)
                         WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT ctid FROM batch))
                    $q$, rel, col, fn, target, cond);
                    -- The first row in [$1, $2) that may be to do: on another
                    -- version, or, when this pass authenticates values, any
                    -- value (no decryption here, which the batch would then
                    -- repeat). min(), not LIMIT 1, so that the answer does
                    -- not depend on the plan (an index scan or a
                    -- synchronized sequential scan returns rows in another
                    -- order).
                    probe := pg_catalog.format($q$
                        SELECT pg_catalog.min(ctid) FROM %1$s
                         WHERE ctid OPERATOR(pg_catalog.>=) $1 AND ctid OPERATOR(pg_catalog.<) $2
                           AND %2$I IS NOT NULL%3$s
                    $q$, rel, col, CASE WHEN vsel IS NULL THEN ' AND ' OPERATOR(pg_catalog.||) stale ELSE '' END);
                END IF;
                PERFORM pg_catalog.set_config('row_security', 'off', true);
                -- After a range with nothing to do (and at the start), on a
                -- plain table: the walk goes on at the next row to do, so
                -- that a stretch of rows done already (half of a table that
                -- was rewritten by an UPDATE, or a second pass) costs one
                -- scan rather than a batch per range: it looks at windows of
                -- blocks, each twice as long as the one before, until one
                -- holds a row that may be to do. The rows it passes over
                -- hold no value, or (when this pass authenticates none) a
                -- value on the target: an UPDATE of their range would have
                -- changed none of them. A row written there by others after
                -- this look is one the check finds, like a row the walk had
                -- passed.
                IF seek AND plain THEN
                    width := step0;
                    LOOP
                        EXECUTE probe INTO next_row
                          USING pg_catalog.format('(%s,0)', blk)::pg_catalog.tid,
                                pg_catalog.format('(%s,0)', LEAST(nblocks, blk OPERATOR(pg_catalog.+) width))::pg_catalog.tid,
                                ours;
                        EXIT WHEN next_row IS NOT NULL OR blk OPERATOR(pg_catalog.+) width OPERATOR(pg_catalog.>=) nblocks;
                        blk := blk OPERATOR(pg_catalog.+) width;
                        width := width OPERATOR(pg_catalog.*) 2;
                    END LOOP;
                    IF next_row IS NULL THEN
                        COMMIT;
                        EXIT;  -- nothing more this pass; the check follows
                    END IF;
                    blk := (next_row::pg_catalog.text::pg_catalog.point)[0]::pg_catalog.int8;
                END IF;
                step := LEAST(step, nblocks OPERATOR(pg_catalog.-) blk);
                lo := pg_catalog.format('(%s,0)', blk)::pg_catalog.tid;
                hi := pg_catalog.format('(%s,0)', blk OPERATOR(pg_catalog.+) step)::pg_catalog.tid;
                PERFORM pg_catalog.set_config('lock_timeout', '200ms', true);  -- until the COMMIT
                tries := 0;
                LOOP
                    x := NULL;
                    PERFORM @extschema@.take_mislabelled_count();
                    BEGIN
                        IF tries OPERATOR(pg_catalog.>=) 3 THEN
                            EXECUTE upd_skip USING lo, hi, ours;
                        ELSE
                            EXECUTE upd USING lo, hi, ours;
                        END IF;
                        GET DIAGNOSTICS n = ROW_COUNT;
                        -- The xmin of the rows written: this
                        -- subtransaction's ID (NULL if it wrote nothing).
                        x := @extschema@.rotation_write_xid();
                        EXIT;
                    EXCEPTION
                        WHEN lock_not_available OR deadlock_detected THEN
                            tries := tries OPERATOR(pg_catalog.+) 1;
                            uncertain := true;
                            IF tries OPERATOR(pg_catalog.>) 3 THEN
                                RAISE;  -- not a row lock: SKIP LOCKED did not help
                            ELSIF tries OPERATOR(pg_catalog.=) 3 THEN
                                RAISE NOTICE 'rotate_column: rows in blocks % to % of %.% are locked by other transactions; leaving them to a further pass',
                                    blk, blk OPERATOR(pg_catalog.+) step OPERATOR(pg_catalog.-) 1, tbl, col;
                                skipped := pg_catalog.format('%s OR (ctid OPERATOR(pg_catalog.>=) %L::pg_catalog.tid AND ctid OPERATOR(pg_catalog.<) %L::pg_catalog.tid)',
                                                             skipped, lo, hi);
                            END IF;
                        WHEN SQLSTATE '22000' THEN
                            IF NOT is_jsonb THEN
                                RAISE;
                            END IF;
                            -- Which kind of value failed, for the message.
                            EXECUTE pg_catalog.format(
                                'SELECT EXISTS (SELECT FROM %s WHERE ctid OPERATOR(pg_catalog.>=) $1 AND ctid OPERATOR(pg_catalog.<) $2 AND %I IS NOT NULL AND %s AND NOT @extschema@.verify_field_versioned(%I))',
                                rel, col, stale, col) INTO bad_label USING lo, hi;
                            RAISE EXCEPTION USING ERRCODE = '22000', MESSAGE = SQLERRM,
                                DETAIL = CASE WHEN bad_label
                                    THEN pg_catalog.format('A value of %s.%I does not authenticate under the key of its version label.', tbl, col)
                                    ELSE pg_catalog.format('A value of %s.%I does not authenticate under the key of its version label, nor under any other loaded key.', tbl, col) END,
                                HINT = pg_catalog.format('List such values with SELECT ctid, key_version(%2$I) FROM %1$s WHERE NOT verify_field_versioned(%2$I);', tbl, col);
                    END;
                END LOOP;
                -- A row re-checked after waiting for another writer (READ
                -- COMMITTED) has its new value computed again, which can
                -- count it twice: never more than the rows written.
                m := LEAST(@extschema@.take_mislabelled_count(), n);
                pass_rows := pass_rows OPERATOR(pg_catalog.+) n;
                IF NOT plain OR tries OPERATOR(pg_catalog.>) 0 THEN
                    walk_exact := false;
                END IF;
                IF x IS NOT NULL THEN
                    ours := pg_catalog.array_append(ours, x);
                    -- This transaction's ID and its subtransaction's (the
                    -- batch's transaction had none before the UPDATE: the
                    -- CALL's first one had none when it began, below).
                    xids := xids OPERATOR(pg_catalog.+) 2;
                ELSIF pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL THEN
                    uncertain := true;  -- an ID this count cannot place
                END IF;
                IF n OPERATOR(pg_catalog.>) 0 THEN
                    batch := batch OPERATOR(pg_catalog.+) 1;
                    done := done OPERATOR(pg_catalog.+) n OPERATOR(pg_catalog.-) m;
                    rotated := rotated OPERATOR(pg_catalog.+) n;
                    IF n OPERATOR(pg_catalog.>) m THEN
                        RAISE NOTICE 'batch %: %/% rows', batch, done, about OPERATOR(pg_catalog.||) total;
                    END IF;
                    IF m OPERATOR(pg_catalog.>) 0 THEN
                        -- What was found, which is evidence of tampering or of
                        -- a faulty writer: the count is of re-encryptions
                        -- computed, and a row another writer replaced while
                        -- the batch waited for it keeps that writer's value.
                        RAISE NOTICE 'batch %: % values of %.% did not authenticate under the key their "version" names; re-encrypted to version % from the key they authenticate under (unless another transaction replaced them meanwhile)',
                            batch, m, tbl, col, target;
                    END IF;
                END IF;
                COMMIT;
                SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
                seek := n OPERATOR(pg_catalog.=) 0;
                blk := blk OPERATOR(pg_catalog.+) step;
                step := GREATEST(1::pg_catalog.int8, LEAST(step0,
                            (step OPERATOR(pg_catalog.*) batch_size) OPERATOR(pg_catalog./)
                            GREATEST(n, 1::pg_catalog.int8)));
            END LOOP;

            -- The check, in a transaction of its own. Its transaction ID
            -- ends the window since `since`.
            COMMIT;
            SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
            nx := pg_catalog.pg_current_xact_id();
            -- The statistics count every row of the table a transaction
            -- inserts, updates or deletes (an aborted subtransaction's too),
            -- and add them up, transaction after transaction, until the
            -- backend next reports them, which it does only when idle: never
            -- during the CALL. So the growth since the pass began is every
            -- row of the table the pass's transactions wrote, up to their
            -- COMMITs (a deferred trigger's included). NULL with
            -- track_counts off; TRUNCATE, which takes counts back, gives the
            -- table new files.
            writes_after := @extschema@.rotation_table_writes(tbl);
            SELECT s.nblocks, s.files, s.guarded, s.tree INTO nblocks, files_now, guarded_now, tree_now
              FROM @extschema@.rotation_table_state(tbl) s;
            guarded := guarded OR guarded_now OR tree_now OPERATOR(pg_catalog.<>) tree;
            tree := tree_now;
            -- Which target-labelled values to authenticate again. Those
            -- others wrote since the CALL began (xmin at or after `since`,
            -- and not one of this CALL's), and those of the ranges done
            -- without their locked rows:
            others := pg_catalog.format('((pg_catalog.age(xmin) OPERATOR(pg_catalog.<=) pg_catalog.age(%L::pg_catalog.xid8::pg_catalog.xid) AND NOT (xmin OPERATOR(pg_catalog.=) ANY ($3)))%s)',
                                        since, skipped);
            -- No other transaction took an ID since the CALL began (every ID
            -- from `since` on is one of the two of a batch of this CALL: its
            -- transaction and the UPDATE's subtransaction), so nobody else
            -- wrote a row.
            nobody := NOT uncertain AND NOT xid_at_start
                      AND (nx::pg_catalog.text::pg_catalog.int8 OPERATOR(pg_catalog.-) since::pg_catalog.text::pg_catalog.int8)
                          OPERATOR(pg_catalog.=) xids;
            -- Whether the rows on another version are counted. Not when the
            -- walk's own account of this pass is exact: nobody else wrote, no
            -- range was done without its locked rows, the table stayed a
            -- plain table in its files, without triggers or rules, its
            -- constraints, indexes and generated columns run no code but
            -- PostgreSQL's and this extension's, and the
            -- table's statistics counted exactly the rows the batches'
            -- UPDATEs wrote (so nothing else that ran in the pass's
            -- transactions, the table's constraint, index or
            -- generated-column functions or a deferred trigger of another
            -- table, wrote a row of it). The walk then covered every
            -- block the table had when it began and re-encrypted, in its
            -- own snapshot, every row on another version (and on jsonb, in a
            -- pass that authenticates target-labelled values, every one of
            -- them that did not authenticate); nobody can have changed a
            -- row behind it.
            counted := guarded OR NOT nobody OR NOT walk_exact
                       OR @extschema@.rotation_table_runs_code(tbl)
                       OR COALESCE(files_now, '') OPERATOR(pg_catalog.<>) COALESCE(files, '')
                       OR COALESCE((writes_after OPERATOR(pg_catalog.-) writes_before) OPERATOR(pg_catalog.<>) pass_rows, true);
            IF guarded OR COALESCE(files_now, '') OPERATOR(pg_catalog.<>) COALESCE(files, '') THEN
                -- Every one: a trigger or rule may have kept rows from being
                -- updated or changed them after, or a rewrite moved them
                -- behind the walk (keeping their xmin).
                win := 'true';
                files := files_now;
            ELSIF nobody AND NOT counted THEN
                -- None: nobody else wrote a value, and nothing else wrote
                -- in the pass's transactions.
                win := NULL;
            ELSIF nobody THEN
                -- Every one: code the batches' UPDATEs ran may have written
                -- (a relabelled value under a batch's own transaction ID,
                -- which no xmin tells from the batch's).
                win := 'true';
            ELSE
                win := others;
            END IF;
            IF NOT is_jsonb THEN
                win := NULL;
            END IF;
            -- The next pass authenticates the values the check looks at.
            vsel := win;
            -- Otherwise rows on another version are counted over the whole
            -- table: that count trusts nothing about who wrote what (the
            -- table's own triggers, constraints or index functions may write
            -- too) and costs a scan without decryption.
            rel := @extschema@.rotation_lock_table(tbl);
            IF win IS NULL THEN
                q := pg_catalog.format('SELECT pg_catalog.count(*) FROM %s WHERE %I IS NOT NULL AND %s', rel, col, stale);
            ELSE
                q := pg_catalog.format('SELECT pg_catalog.count(*) FROM %s WHERE %I IS NOT NULL AND CASE WHEN %s THEN true WHEN %s THEN NOT @extschema@.verify_field_versioned(%I) ELSE false END',
                                       rel, col, stale, win, col);
            END IF;
            PERFORM pg_catalog.set_config('row_security', 'off', true);
            -- Transactions that took their IDs before the check's (nx) and
            -- are still open (a prepared one among them) may yet commit rows
            -- on another version, which no snapshot shows before they do.
            -- Those open now are waited for before done is said (below).
            -- (A transaction that takes its ID later writes after the check
            -- began, as it could after the CALL.) With the premise that
            -- nobody else wrote, there are none.
            opened := @extschema@.rotation_open_writers(nx);
            IF counted THEN
                EXECUTE q INTO remaining USING NULL::pg_catalog.tid, NULL::pg_catalog.tid, ours;
            ELSE
                remaining := 0;
                RAISE DEBUG 'rotate_column: nobody else wrote and every batch wrote only its own rows: the check counts nothing';
            END IF;
            IF remaining OPERATOR(pg_catalog.=) 0 THEN
                upto := pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot());
                waits := 0;
                IF opened OPERATOR(pg_catalog.>) 0 THEN
                    -- About to say done, with transactions open that began
                    -- before the check: waited for, up to 10 seconds, as
                    -- CREATE INDEX CONCURRENTLY waits out older
                    -- transactions; then counted again, since the count's
                    -- snapshot did not show what they committed meanwhile.
                    WHILE opened OPERATOR(pg_catalog.>) 0 AND waits OPERATOR(pg_catalog.<) 100 LOOP
                        PERFORM pg_catalog.pg_sleep(0.1);
                        waits := waits OPERATOR(pg_catalog.+) 1;
                        opened := @extschema@.rotation_open_writers(nx);
                    END LOOP;
                    IF opened OPERATOR(pg_catalog.>) 0 THEN
                        COMMIT;
                        RAISE WARNING 'rotate_column: not done: % transactions that began before its check ended are still open and may write rows of %.% on other versions (prepared ones are listed in pg_prepared_xacts); CALL rotate_column again when they have ended',
                            opened, tbl, col;
                        RETURN;
                    END IF;
                END IF;
                -- Counted again after those waited for (the statement's
                -- snapshot shows what they committed). And when the count
                -- authenticated nothing, on the premise that nobody else
                -- took an ID before nx, but an ID after it ended before the
                -- count's snapshot (the xmax after the count is past nx):
                -- that transaction's rows were counted without
                -- authentication.
                IF waits OPERATOR(pg_catalog.>) 0
                   OR (counted AND is_jsonb AND win IS NULL AND upto OPERATOR(pg_catalog.>) nx) THEN
                    IF is_jsonb AND win IS NULL THEN
                        win := others;
                        vsel := win;
                        q := pg_catalog.format('SELECT pg_catalog.count(*) FROM %s WHERE %I IS NOT NULL AND CASE WHEN %s THEN true WHEN %s THEN NOT @extschema@.verify_field_versioned(%I) ELSE false END',
                                               rel, col, stale, win, col);
                    END IF;
                    EXECUTE q INTO remaining USING NULL::pg_catalog.tid, NULL::pg_catalog.tid, ours;
                END IF;
            END IF;
            COMMIT;
            EXIT WHEN remaining OPERATOR(pg_catalog.=) 0 OR pass OPERATOR(pg_catalog.>=) 5;
        END LOOP;
        IF remaining OPERATOR(pg_catalog.>) 0 THEN
            IF is_jsonb THEN
                RAISE WARNING 'rotate_column: % rows of %.% are still not on version % or do not authenticate (locked by other transactions?); CALL rotate_column again',
                    remaining, tbl, col, target;
            ELSE
                RAISE WARNING 'rotate_column: % rows of %.% are still not on version % (locked by other transactions?); CALL rotate_column again',
                    remaining, tbl, col, target;
            END IF;
            RETURN;
        END IF;
    END IF;

    IF is_jsonb THEN
        RAISE NOTICE 'rotate_column: done, % rows re-encrypted, none left on other versions, every value authenticates', rotated;
    ELSE
        RAISE NOTICE 'rotate_column: done, % rows re-encrypted, none left on other versions', rotated;
    END IF;
END
$proc$;

-- The same with a regclass table and a text column name, which a literal
-- column name beside a regclass picks over name (rotate_column('t'::regclass,
-- 'c')); and with text names, which is what a literal name picks over
-- regclass and name (PostgreSQL prefers text): with it here, a look-alike
-- rotate_column(text, text, …) in a schema later on the search_path never
-- takes over an unqualified CALL rotate_column('t', 'c'), which runs with
-- the session's keys (as the search procedures' text overloads).
CREATE PROCEDURE rotate_column(
    tbl text,
    col text,
    batch_size integer DEFAULT 1000,
    key_version text DEFAULT NULL
)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL @extschema@.rotate_column(tbl::pg_catalog.regclass, col::pg_catalog.name, batch_size, key_version);
END
$proc$;

CREATE PROCEDURE rotate_column(
    tbl regclass,
    col text,
    batch_size integer DEFAULT 1000,
    key_version text DEFAULT NULL
)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL @extschema@.rotate_column(tbl, col::pg_catalog.name, batch_size, key_version);
END
$proc$;
