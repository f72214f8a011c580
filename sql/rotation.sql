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
-- with keys set for the session (set_config(…, false)): keys set with
-- SET LOCAL end at the first COMMIT.
CREATE PROCEDURE rotate_column(
    tbl regclass,
    col name,
    batch_size integer DEFAULT 1000,
    key_version text DEFAULT NULL
)
LANGUAGE plpgsql
AS $proc$
DECLARE
    coltype regtype;
    fn text;
    target text := key_version;
    total bigint;
    remaining bigint;
    done bigint := 0;
    n bigint;
    batch integer := 0;
    pass integer := 0;
    cursor_tid tid;
    last_tid tid;
    q text;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be a positive integer' USING ERRCODE = '22023';
    END IF;
    SELECT a.atttypid::regtype INTO coltype
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = tbl AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" of relation % does not exist', col, tbl USING ERRCODE = '42703';
    END IF;
    IF coltype = 'jsonb'::regtype THEN
        fn := '@extschema@.reencrypt_field_versioned';
    ELSIF coltype = '@extschema@.encrypted_text'::regtype THEN
        fn := '@extschema@.reencrypt';
    ELSE
        RAISE EXCEPTION 'rotate_column re-encrypts jsonb envelope and encrypted_text columns, not %', coltype
            USING ERRCODE = '42804';
    END IF;
    IF target IS NULL THEN
        SELECT s.version INTO target FROM @extschema@.encryption_status() s WHERE s.is_current;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no write key version: set pazpaz.encryption_key_version, or pass key_version'
                USING ERRCODE = '55000';
        END IF;
    END IF;

    q := format('SELECT count(*) FROM %s WHERE %I IS NOT NULL AND @extschema@.key_version(%I) <> $1', tbl, col, col);
    EXECUTE q INTO total USING target;
    RAISE NOTICE 'rotate_column: % rows of %.% to re-encrypt to version %', total, tbl, col, target;
    remaining := total;

    WHILE remaining > 0 AND pass < 5 LOOP
        pass := pass + 1;
        cursor_tid := '(0,0)';
        LOOP
            EXECUTE format($q$
                WITH batch AS (
                    SELECT ctid FROM %1$s
                     WHERE ctid > $1 AND %2$I IS NOT NULL AND @extschema@.key_version(%2$I) <> $2
                     LIMIT $3
                     FOR UPDATE SKIP LOCKED
                ), upd AS (
                    -- A TID scan of exactly the locked rows (a join back to
                    -- the table could scan all of it for every batch).
                    UPDATE %1$s SET %2$I = %3$s(%2$I, $2)
                     WHERE ctid = ANY (ARRAY(SELECT ctid FROM batch))
                    RETURNING 1
                )
                SELECT (SELECT count(*) FROM upd), (SELECT max(ctid) FROM batch)
            $q$, tbl, col, fn)
            INTO n, last_tid USING cursor_tid, target, batch_size;
            EXIT WHEN last_tid IS NULL;
            IF n > 0 THEN
                batch := batch + 1;
                done := done + n;
                RAISE NOTICE 'batch %: %/% rows', batch, done, total;
            END IF;
            COMMIT;
            cursor_tid := last_tid;
        END LOOP;
        COMMIT;
        EXECUTE q INTO remaining USING target;
    END LOOP;

    IF remaining > 0 THEN
        RAISE WARNING 'rotate_column: % rows of %.% are still not on version % (locked by other transactions?); CALL rotate_column again',
            remaining, tbl, col, target;
    ELSE
        RAISE NOTICE 'rotate_column: done, % rows re-encrypted, none left on other versions', done;
    END IF;
END
$proc$;
