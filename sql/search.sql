-- Search indexes on encrypted columns, added and dropped in one statement:
--
--   CALL add_blind_index('clients', 'email', normalization => 'lower');   -- exact match: email_bidx bytea, B-tree
--   CALL add_match_index('clients', 'last_name');                      -- substring:   last_name_tokens int4[], GIN
--   SELECT … WHERE email_bidx = blind_index_for('clients', 'email_bidx', 'jane@example.com');
--   SELECT … WHERE last_name_tokens @> blind_search_tokens_for('clients', 'last_name_tokens', 'ohn')
--              AND last_name::text ILIKE '%ohn%';
--   CALL drop_blind_index('clients', 'email');  CALL drop_match_index('clients', 'last_name');
--
-- Adding an index: checks everything first (owner, column type, parameters,
-- index key and data key set), then in one transaction adds the token column
-- and the trigger that keeps it current from then on (zz_pazpaz_<token
-- column>, BEFORE INSERT OR UPDATE: every UPDATE, since another BEFORE
-- trigger may change the source and an UPDATE may write the token column
-- itself, which the trigger then computes again; named to fire after other
-- BEFORE triggers, which fire in name order), COMMITs, backfills the
-- existing rows in batches that COMMIT one by one (an UPDATE that the
-- trigger computes the token for; each batch a range of heap blocks holding
-- about batch_size rows), and
-- builds the index once every row has been walked (a B-tree before the
-- check for rows left behind, which it then answers; a GIN index after it),
-- never row by row during the walk. (The first walk of a new index, where
-- nothing else of the table's runs on an UPDATE, runs with the trigger on
-- INSERT only and computes the tokens in its own UPDATE; see "fast" below.) The index's definition (context, normalization,
-- bits, and the fingerprint of the index key it is built with) is stored as
-- the trigger's arguments. Interrupted, it loses at most the current batch:
-- CALL it again with the same arguments to finish. Like rotate_column it
-- must be CALLed by the table's owner, outside a transaction block, with the
-- keys set for the session.
--
-- Hostile search_path: as in rotate_column (sql/rotation.sql), nothing here
-- or in the SQL it generates is resolved through the caller's search_path:
-- every type, function, operator and operator class is schema-qualified and
-- the table is named by its schema and name. The trigger function is C.

-- ---- The registry of search indexes ------------------------------------------
--
-- The trigger's arguments (the definition: context, normalization, bits, key
-- fingerprint) are readable by everyone in pg_trigger, and the owner of any
-- table can create a trigger with any arguments. A trigger copied from
-- another table would make a session that holds the index key compute, on
-- writes to the copier's table, tokens under that table's context: tokens
-- the copier can then compare with the other table's, a dictionary oracle.
-- So the trigger and the lookups use a definition only when it is
-- registered here for their own table. Rows are written only by the two
-- SECURITY DEFINER functions below, which register what the table's own
-- trigger says (only its owner can have created it) and refuse a context
-- that belongs to a table of another owner: registered for one, or the
-- default "schema"."table"."column" of one. The table is an extension
-- configuration table: pg_dump dumps its rows (the relation by name, as a
-- regclass prints), so a restore keeps the indexes registered.
CREATE TABLE search_indexes (
    rel pg_catalog.regclass NOT NULL,
    token_column pg_catalog.name NOT NULL,
    -- The trigger's arguments (see src/search.rs).
    definition pg_catalog.text[] NOT NULL,
    PRIMARY KEY (rel, token_column)
);
SELECT pg_catalog.pg_extension_config_dump('@extschema@.search_indexes', '');
REVOKE ALL ON TABLE search_indexes FROM PUBLIC;
GRANT SELECT ON TABLE search_indexes TO PUBLIC;

-- (STRICT like every function of the extension; PARALLEL UNSAFE: it writes.)
CREATE FUNCTION search_index_register(tbl regclass, args text[]) RETURNS void
LANGUAGE plpgsql STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    want bytea;
    owner oid;
    parts text[];
BEGIN
    IF cardinality(args) <> 9 OR args[1] <> 'pazpaz_crypto search v1' OR args[2] NOT IN ('exact', 'match') THEN
        RAISE EXCEPTION 'search_index_register: not a search index definition' USING ERRCODE = '22023';
    END IF;
    -- The definition must be the one of the table's own trigger.
    SELECT string_agg(convert_to(u.a, 'UTF8') || '\x00'::bytea, ''::bytea ORDER BY u.i) INTO want
      FROM unnest(args) WITH ORDINALITY u(a, i);
    -- (A Citus table's trigger has a tenth argument, its binding to the
    -- table's owner: see src/search.rs.)
    IF NOT EXISTS (SELECT FROM pg_trigger t
                    WHERE t.tgrelid = tbl AND t.tgname = concat('zz_pazpaz_', args[4])
                      AND t.tgfoid = '@extschema@.blind_index_trigger()'::regprocedure
                      AND (t.tgargs = want OR (t.tgnargs = 10 AND substr(t.tgargs, 1, length(want)) = want))) THEN
        RAISE EXCEPTION 'search_index_register: % has no search index trigger with this definition', tbl
            USING ERRCODE = '42704';
    END IF;
    SELECT c.relowner INTO STRICT owner FROM pg_class c WHERE c.oid = tbl;
    -- A context belongs to the tables of one owner.
    IF EXISTS (SELECT FROM @extschema@.search_indexes r JOIN pg_class c ON c.oid = r.rel::oid
                WHERE r.definition[2] = args[2] AND r.definition[6] = args[6] AND c.relowner <> owner) THEN
        RAISE EXCEPTION 'The context of this search index on % is used by a search index on a table of another owner', tbl
            USING ERRCODE = '42501',
                  HINT = 'Equal contexts give equal tokens, which another table''s owner could compare. Pass another context.';
    END IF;
    BEGIN
        parts := parse_ident(args[6]);
    EXCEPTION WHEN OTHERS THEN
        parts := NULL;
    END;
    IF cardinality(parts) = 3 AND EXISTS (
        SELECT FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid
         WHERE n.nspname = parts[1]::name AND c.relname = parts[2]::name AND a.attname = parts[3]::name
           AND a.attnum > 0 AND NOT a.attisdropped AND c.oid <> tbl::oid AND c.relowner <> owner) THEN
        RAISE EXCEPTION 'The context of this search index on % is the default context of a column of a table of another owner', tbl
            USING ERRCODE = '42501', HINT = 'Pass another context.';
    END IF;
    -- Rows of tables dropped since.
    DELETE FROM @extschema@.search_indexes r WHERE NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = r.rel::oid);
    INSERT INTO @extschema@.search_indexes (rel, token_column, definition) VALUES (tbl, args[4]::name, args)
        ON CONFLICT (rel, token_column) DO UPDATE SET definition = EXCLUDED.definition;
END
$fn$;

-- Forgets an index whose trigger is gone.
CREATE FUNCTION search_index_unregister(tbl regclass, tokcol name) RETURNS void
LANGUAGE plpgsql STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF EXISTS (SELECT FROM pg_trigger t
                WHERE t.tgrelid = tbl AND t.tgname = concat('zz_pazpaz_', tokcol)
                  AND t.tgfoid = '@extschema@.blind_index_trigger()'::regprocedure) THEN
        RAISE EXCEPTION 'search_index_unregister: the trigger of this index on % still exists', tbl USING ERRCODE = '55000';
    END IF;
    DELETE FROM @extschema@.search_indexes r WHERE r.rel = tbl AND r.token_column = tokcol;
END
$fn$;

-- Whether an UPDATE of the table may run code that changes a row after the
-- UPDATE's SET computed its token: a trigger (of any kind, enabled or not:
-- one can be enabled at any time) other than the search index's own in the
-- shapes add_blind_index makes (named trig, of blind_index_trigger, BEFORE
-- INSERT or BEFORE INSERT OR UPDATE, no WHEN clause), or a rule.
-- PostgreSQL's internal triggers (foreign keys) change no row of an UPDATE
-- that leaves the keys as they are; writes of other rows in the UPDATE's
-- transaction are counted by the caller (rotation_table_writes). Internal
-- to add_blind_index/add_match_index (their first walk).
CREATE FUNCTION search_table_runs_code(tbl regclass, trig name) RETURNS boolean
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT EXISTS (SELECT FROM pg_trigger t
                    WHERE t.tgrelid = tbl AND NOT t.tgisinternal
                      AND NOT (t.tgname = trig AND t.tgfoid = '@extschema@.blind_index_trigger()'::regprocedure
                               AND t.tgtype IN (7, 23) AND t.tgqual IS NULL))
        OR EXISTS (SELECT FROM pg_rewrite r WHERE r.ev_class = tbl)
$fn$;

-- The table's size in blocks, and how many blocks hold about batch_size of
-- its nrows rows (at least one): the ranges of the batches (TID range
-- scans) of add_blind_index/add_match_index. Internal.
CREATE FUNCTION search_batch_blocks(tbl regclass, batch_size int4, nrows int8, OUT nblocks int8, OUT step int8)
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT b.n, GREATEST(1::int8, (batch_size::int8 * b.n) / GREATEST(nrows, 1::int8))
      FROM (SELECT pg_relation_size(tbl) / current_setting('block_size')::int8 AS n) b
$fn$;

-- The comments on a search index's trigger, which a CALL that resumes its
-- backfill reads. The walk mark: a first walk without the UPDATE trigger,
-- or that walk's second look, is not done, and tokens may be stale. The
-- current mark: the trigger has kept every write's token current since the
-- walk began (rows not indexed yet have none); it stays once the index is
-- done.
--
-- Only the current mark is trusted, and only the table's owner can comment
-- on its trigger. A CALL on a trigger without it (the comment lost, e.g. by
-- pg_dump --no-comments, or an index of an earlier version) computes every
-- token again: nothing else tells it whether a second look was done.
-- Internal.
CREATE FUNCTION search_walk_mark() RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN 'pazpaz_crypto: backfill under way, tokens may be stale; CALL the procedure that added this index again to finish it';

CREATE FUNCTION search_current_mark() RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN 'pazpaz_crypto: this trigger keeps every token current (rows its backfill has not reached yet have none)';

-- The index a CALL built on a token column: a valid index of the table
-- on the token column alone, B-tree (exact) or GIN (match), without an
-- expression or predicate, named <table>_<token column> (the table's name
-- then: a table renamed since keeps it); the first by name, NULL if there
-- is none. (Only the owner can index the table; a relation of the name
-- that is not such an index, which anyone with CREATE on the schema can
-- make, is none. An index of another name, one the owner made, is not the
-- CALL's.) Internal.
CREATE FUNCTION search_index_of(tbl regclass, tokcol name, kind text) RETURNS name
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT c.relname FROM pg_index i
      JOIN pg_class c ON c.oid = i.indexrelid
      JOIN pg_am am ON am.oid = c.relam
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
     WHERE i.indrelid = tbl AND i.indnatts = 1 AND i.indisvalid AND i.indisready
       AND i.indexprs IS NULL AND i.indpred IS NULL
       AND a.attname = tokcol AND NOT a.attisdropped
       AND am.amname = CASE kind WHEN 'exact' THEN 'btree'::name ELSE 'gin'::name END
       AND right(c.relname::text, length(tokcol::text) + 1) = '_' || tokcol::text
     ORDER BY c.relname LIMIT 1
$fn$;

-- A trigger of the table that would fire after the search index trigger
-- trig and could change the source after its token is computed: another
-- BEFORE row trigger on INSERT or UPDATE (of any columns, with or without a
-- WHEN clause) that fires where trig does (enabled, or ENABLE ALWAYS, as
-- the CALL makes trig) and whose name sorts after trig (BEFORE row triggers
-- fire in the byte order of their names; name compares in the C
-- collation). This is the CALL's check, before anything changes; the
-- trigger checks each write it fires on by the order it fires in
-- (src/search.rs, before_trigger_after). Internal.
CREATE FUNCTION search_trigger_after(tbl regclass, trig name) RETURNS name
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT t.tgname FROM pg_trigger t
     WHERE t.tgrelid = tbl AND NOT t.tgisinternal
       AND t.tgtype & 67 = 3           -- ROW | BEFORE, not INSTEAD
       AND t.tgtype & 20 <> 0          -- INSERT or UPDATE
       AND t.tgenabled IN ('O', 'A')
       AND t.tgfoid <> '@extschema@.blind_index_trigger()'::regprocedure
       AND t.tgname > trig
     ORDER BY t.tgname LIMIT 1
$fn$;

-- The start of each transaction of a CALL after its first: the table
-- locked by OID (ROW EXCLUSIVE, as its UPDATEs take; src/rotation.rs,
-- rotation_lock) and its name checked against the one the CALL's
-- statements were written with, so that they never reach another table
-- renamed into that name meanwhile (the lock keeps the name until the
-- transaction ends); and row-level security off for the transaction (see
-- search_index_add). Without SET search_path, whose restore at the
-- function's end would undo that setting: everything here is qualified.
-- Internal.
CREATE FUNCTION search_batch_begin(tbl regclass, rel text, caller text) RETURNS void
LANGUAGE plpgsql VOLATILE STRICT
AS $fn$
BEGIN
    IF (COALESCE(@extschema@.rotation_lock(tbl), @extschema@.rotation_lock_table(tbl)) OPERATOR(pg_catalog.=) rel) IS NOT TRUE THEN
        RAISE EXCEPTION '%: % was renamed during the CALL', caller, tbl
            USING ERRCODE = '55000', HINT = 'CALL it again: it resumes.';
    END IF;
    PERFORM pg_catalog.set_config('row_security', 'off', true);
END
$fn$;

-- Shared by add_blind_index and add_match_index (kind 'exact' or 'match').
CREATE PROCEDURE search_index_add(
    kind text,
    tbl regclass,
    col name,
    normalization text,
    bits integer,
    batch_size integer,
    context text,
    token_column name,
    index_key text
)
LANGUAGE plpgsql
AS $proc$
DECLARE
    caller pg_catalog.text := CASE WHEN kind OPERATOR(pg_catalog.=) 'exact' THEN 'add_blind_index' ELSE 'add_match_index' END;
    citus_table pg_catalog.bool := false;
    keycols pg_catalog.text;
    keyjoin pg_catalog.text;
    typid pg_catalog.oid;
    src_type pg_catalog.text;
    nsp pg_catalog.name;
    relname pg_catalog.name;
    rel pg_catalog.text;
    ctx pg_catalog.text := context;
    tokcol pg_catalog.text;
    trig pg_catalog.text;
    idx pg_catalog.text;
    fp pg_catalog.text;
    args pg_catalog.text[];
    targs pg_catalog.text[];
    trig_args pg_catalog.text;
    rebind pg_catalog.bool := false;
    shape_ok pg_catalog.bool;
    want_args pg_catalog.bytea;
    have_args pg_catalog.bytea;
    trig_cols pg_catalog.int4;
    cond pg_catalog.text;
    q pg_catalog.text;
    upd pg_catalog.text;
    mkidx pg_catalog.text;
    built pg_catalog.bool := false;
    total pg_catalog.int8;
    remaining pg_catalog.int8;
    done pg_catalog.int8 := 0;
    n pg_catalog.int8;
    batch pg_catalog.int4 := 0;
    pass pg_catalog.int4 := 0;
    nblocks pg_catalog.int8;
    step pg_catalog.int8;
    blk pg_catalog.int8;
    -- The first walk of a new index runs with the trigger on INSERT only
    -- (below); its transactions' ids, and whether every token must be
    -- computed again after it.
    fast pg_catalog.bool := false;
    recheck_all pg_catalog.bool := false;
    xids pg_catalog.xid[] := '{}';
    x pg_catalog.xid8;
    upd_fast pg_catalog.text;
    fix pg_catalog.text;
    writes pg_catalog.int8;
    mktrig pg_catalog.text;
    about pg_catalog.text := '';
    quiet pg_catalog.bool;
    last pg_catalog.xid8;
    later pg_catalog.name;
    again pg_catalog.int8 := 0;
BEGIN
    IF NOT (kind OPERATOR(pg_catalog.=) 'exact' OR kind OPERATOR(pg_catalog.=) 'match') THEN
        RAISE EXCEPTION 'kind must be exact or match' USING ERRCODE = '22023';
    END IF;
    IF batch_size IS NULL OR batch_size OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'batch_size must be a positive integer' USING ERRCODE = '22023';
    END IF;
    IF normalization IS NULL OR bits IS NULL OR index_key IS NULL THEN
        RAISE EXCEPTION 'normalization, bits and index_key must not be NULL' USING ERRCODE = '22023';
    END IF;
    SELECT a.atttypid INTO typid
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid OPERATOR(pg_catalog.=) tbl
       AND a.attname OPERATOR(pg_catalog.=) col
       AND a.attnum OPERATOR(pg_catalog.>) 0
       AND NOT a.attisdropped;
    -- Messages name the table and columns that exist, never a caller's
    -- string as given (it may be a value passed in the wrong place, and the
    -- log filter passes these messages as they are).
    IF NOT FOUND THEN
        RAISE EXCEPTION '%: relation % has no column of the name given', caller, tbl USING ERRCODE = '42703';
    END IF;
    -- A generated column is computed after the BEFORE triggers, so the
    -- trigger would never see its value.
    IF EXISTS (SELECT FROM pg_catalog.pg_attribute a
                WHERE a.attrelid OPERATOR(pg_catalog.=) tbl AND a.attname OPERATOR(pg_catalog.=) col
                  AND a.attgenerated OPERATOR(pg_catalog.<>) '') THEN
        RAISE EXCEPTION '%: column % of relation % is a generated column', caller, col, tbl
            USING ERRCODE = '0A000', HINT = 'Index the columns it is computed from.';
    END IF;
    -- The backfill UPDATE runs the table's triggers and index expressions
    -- as the caller (see rotate_column): run it as the owner.
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_class c
                    WHERE c.oid OPERATOR(pg_catalog.=) tbl::pg_catalog.oid
                      AND pg_catalog.pg_get_userbyid(c.relowner) OPERATOR(pg_catalog.=) CURRENT_USER) THEN
        RAISE EXCEPTION '% must be run by the owner of %', caller, tbl
            USING ERRCODE = '42501',
                  HINT = 'SET ROLE to the table''s owner first: the UPDATE runs the table''s triggers and index expressions, which must not run with the rights of another role.';
    END IF;
    IF @extschema@.rotation_trigger_grantee(tbl) IS NOT NULL THEN
        RAISE EXCEPTION '%: role % holds the TRIGGER privilege on % or a table of its inheritance tree, and could make the backfill run its code in this session, which holds the keys',
            caller, @extschema@.rotation_trigger_grantee(tbl), tbl
            USING ERRCODE = '42501',
                  HINT = 'REVOKE TRIGGER on the table from that role (GRANT ALL includes it), then check the table''s triggers: drop those you did not make.';
    END IF;
    -- One ordinary table: a partitioned table holds no rows of its own (its
    -- backfill would never find any) and the trigger and column would not
    -- reach rows of inheritance children.
    IF EXISTS (SELECT FROM pg_catalog.pg_class c
                WHERE c.oid OPERATOR(pg_catalog.=) tbl::pg_catalog.oid AND c.relkind OPERATOR(pg_catalog.<>) 'r') THEN
        RAISE EXCEPTION '%: % is not an ordinary table (partitioned tables, views and foreign tables are not supported)', caller, tbl
            USING ERRCODE = '0A000';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_inherits i
                WHERE i.inhparent OPERATOR(pg_catalog.=) tbl::pg_catalog.oid
                   OR i.inhrelid OPERATOR(pg_catalog.=) tbl::pg_catalog.oid) THEN
        RAISE EXCEPTION '%: % is a partition, or has inheritance parents or children, which one index would not cover', caller, tbl
            USING ERRCODE = '0A000', HINT = 'Index each table of its own.';
    END IF;
    IF typid OPERATOR(pg_catalog.=) '@extschema@.encrypted_text'::pg_catalog.regtype::pg_catalog.oid THEN
        src_type := 'encrypted_text';
    ELSIF typid OPERATOR(pg_catalog.=) 'pg_catalog.bytea'::pg_catalog.regtype::pg_catalog.oid THEN
        src_type := 'bytea';
    ELSIF typid OPERATOR(pg_catalog.=) 'pg_catalog.jsonb'::pg_catalog.regtype::pg_catalog.oid THEN
        src_type := 'jsonb';
    ELSE
        RAISE EXCEPTION '% indexes encrypted_text, bytea (format 1) and jsonb (format 2) columns, not %',
            caller, typid::pg_catalog.regtype USING ERRCODE = '42804';
    END IF;
    -- Parameters and the index key (its fingerprint names it in the
    -- definition), before anything changes.
    fp := @extschema@.search_index_check(kind, normalization, bits, index_key);
    IF NOT EXISTS (SELECT FROM @extschema@.encryption_status()) THEN
        RAISE EXCEPTION 'No encryption key is set: set pazpaz.encryption_key (or pazpaz.encryption_keys and pazpaz.encryption_key_version) for this session'
            USING ERRCODE = '55000', DETAIL = pg_catalog.format('%s decrypts %s to index it.', caller, col);
    END IF;

    -- schema.name, both quoted (see rotate_column), read under the lock
    -- that keeps it (every later transaction checks it: search_batch_begin).
    rel := @extschema@.rotation_lock_table(tbl);
    SELECT ns.nspname, c.relname INTO STRICT nsp, relname
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace ns ON ns.oid OPERATOR(pg_catalog.=) c.relnamespace
     WHERE c.oid OPERATOR(pg_catalog.=) tbl;
    -- A Citus table (distributed or reference): the trigger is created on
    -- its shards too (Citus propagates it, to nodes added later as well) and
    -- fires on the workers, which verify its binding to the table (name and owner)
    -- (a tenth argument, below); the backfill goes by primary key, since
    -- TIDs mean nothing across shards.
    SELECT k.citus_table, k.keycols, k.keyjoin INTO citus_table, keycols, keyjoin
      FROM @extschema@.citus_table_keys(tbl) k;
    IF citus_table AND keycols IS NULL THEN
        RAISE EXCEPTION '% needs a primary key on the Citus table %', caller, tbl USING ERRCODE = '0A000';
    END IF;
    -- The default context names the column (quoted identifiers, so that no
    -- two columns share one), so equal values in two columns never give
    -- equal tokens.
    tokcol := pg_catalog.concat(col, CASE WHEN kind OPERATOR(pg_catalog.=) 'exact' THEN '_bidx' ELSE '_tokens' END);
    IF token_column IS NOT NULL THEN
        tokcol := token_column;
    END IF;
    trig := pg_catalog.concat('zz_pazpaz_', tokcol);
    IF ctx IS NULL THEN
        -- An index this table has keeps the context it was registered with
        -- (the default named the table as it was then: renamed since, a CALL
        -- resumes it, or binds it again on Citus). Only the registry's:
        -- never a context read from a trigger someone else may have made.
        SELECT r.definition[6] INTO ctx FROM @extschema@.search_indexes r
         WHERE r.rel OPERATOR(pg_catalog.=) tbl AND r.token_column OPERATOR(pg_catalog.=) tokcol
           AND r.definition[2] OPERATOR(pg_catalog.=) kind AND r.definition[3] OPERATOR(pg_catalog.=) col::pg_catalog.text;
    END IF;
    IF ctx IS NULL THEN
        ctx := pg_catalog.format('%I.%I.%I', nsp, relname, col);
        -- A table renamed keeps its default context: a new table of the old
        -- name does not get the same one.
        IF EXISTS (SELECT FROM @extschema@.search_indexes r
                    WHERE r.rel OPERATOR(pg_catalog.<>) tbl AND r.definition[6] OPERATOR(pg_catalog.=) ctx
                      AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) r.rel::pg_catalog.oid)) THEN
            RAISE EXCEPTION '%: the default context of %.% is used by a search index of another table (renamed since?)', caller, tbl, col
                USING ERRCODE = '42710', HINT = 'Pass a context of its own: context => …';
        END IF;
    END IF;
    idx := pg_catalog.concat(relname, '_', tokcol);
    IF pg_catalog.octet_length(trig) OPERATOR(pg_catalog.>) 63 OR pg_catalog.octet_length(idx) OPERATOR(pg_catalog.>) 63 THEN
        RAISE EXCEPTION '%: the names of the trigger and index of this token column would be longer than 63 bytes', caller
            USING ERRCODE = '42622', HINT = 'Pass a shorter token_column (the trigger is zz_pazpaz_<token column>, the index <table>_<token column>).';
    END IF;
    -- A BEFORE trigger of the table's that fires after the index's would
    -- leave every token it changes the source of stale (the trigger refuses
    -- such writes).
    later := @extschema@.search_trigger_after(tbl, trig);
    IF later IS NOT NULL THEN
        RAISE EXCEPTION 'Trigger "%" fires after the trigger of the search index %.% and could change its source after the token is computed',
            later, relname, tokcol
            USING ERRCODE = '0A000',
                  HINT = 'BEFORE triggers fire in the byte order of their names: rename it to sort before zz_pazpaz_ (ALTER TRIGGER … RENAME TO …), or make it an AFTER trigger.';
    END IF;
    -- The CALL relies on the trigger firing on its own UPDATEs, which it
    -- does not under session_replication_role = replica.
    IF pg_catalog.current_setting('session_replication_role') OPERATOR(pg_catalog.<>) 'origin' THEN
        RAISE EXCEPTION '% must be run with session_replication_role = origin (the index''s trigger does not fire otherwise)', caller
            USING ERRCODE = '55000';
    END IF;
    -- The index the token column has already (the table may have been
    -- renamed since it was built); otherwise a relation of the index's
    -- name would make CREATE INDEX IF NOT EXISTS skip the build.
    idx := COALESCE(@extschema@.search_index_of(tbl, tokcol, kind)::pg_catalog.text, idx);
    built := @extschema@.search_index_of(tbl, tokcol, kind) IS NOT NULL;
    IF @extschema@.search_index_of(tbl, tokcol, kind) IS NULL
       AND EXISTS (SELECT FROM pg_catalog.pg_class c
                    WHERE c.relname OPERATOR(pg_catalog.=) idx
                      AND c.relnamespace OPERATOR(pg_catalog.=) (SELECT t.relnamespace FROM pg_catalog.pg_class t
                                                                  WHERE t.oid OPERATOR(pg_catalog.=) tbl::pg_catalog.oid)) THEN
        RAISE EXCEPTION '%: relation %.% exists and is not the index of %.% that % builds', caller, nsp, idx, tbl, tokcol, caller
            USING ERRCODE = '42P07', HINT = 'Drop or rename that relation, or pass another token_column, then CALL again.';
    END IF;
    args := ARRAY['pazpaz_crypto search v1', kind, col::pg_catalog.text, tokcol, src_type, ctx, normalization,
                  bits::pg_catalog.text, fp];
    -- The trigger's arguments: the definition, and for a Citus table its
    -- binding to the table (its name and owner; 64 hex digits), which the
    -- trigger verifies on every node (the workers' registries are their
    -- own: src/search.rs).
    targs := args;
    IF citus_table THEN
        targs := args OPERATOR(pg_catalog.||) @extschema@.search_index_binding(tbl, args);
    END IF;
    SELECT pg_catalog.string_agg(pg_catalog.quote_literal(u.a), ', ' ORDER BY u.i) INTO trig_args
      FROM pg_catalog.unnest(targs) WITH ORDINALITY u(a, i);
    mktrig := pg_catalog.format(
        'TRIGGER %I BEFORE INSERT OR UPDATE ON %s FOR EACH ROW EXECUTE FUNCTION @extschema@.blind_index_trigger(%s)',
        trig, rel, trig_args);
    -- pg_trigger.tgargs: each argument followed by a NUL byte.
    SELECT pg_catalog.string_agg(pg_catalog.convert_to(u.a, 'UTF8') OPERATOR(pg_catalog.||) '\x00'::pg_catalog.bytea,
                                 ''::pg_catalog.bytea ORDER BY u.i)
      INTO want_args
      FROM pg_catalog.unnest(targs) WITH ORDINALITY u(a, i);
    -- (Its shape too: a BEFORE INSERT OR UPDATE row trigger, tgtype 23,
    -- enabled, without a WHEN clause, of our function.)
    SELECT t.tgargs, pg_catalog.cardinality(t.tgattr::pg_catalog.int2[]),
           t.tgtype OPERATOR(pg_catalog.=) 23 AND t.tgqual IS NULL AND t.tgenabled OPERATOR(pg_catalog.=) 'O'
           AND t.tgfoid OPERATOR(pg_catalog.=) '@extschema@.blind_index_trigger()'::pg_catalog.regprocedure
      INTO have_args, trig_cols, shape_ok FROM pg_catalog.pg_trigger t
     WHERE t.tgrelid OPERATOR(pg_catalog.=) tbl AND t.tgname OPERATOR(pg_catalog.=) trig;
    IF FOUND THEN
        -- A Citus table renamed, or with another owner, since: the same
        -- definition with another binding. Bound again (until then its
        -- triggers refuse writes of source values).
        rebind := citus_table AND have_args OPERATOR(pg_catalog.<>) want_args
              AND pg_catalog.substr(have_args, 1, pg_catalog.length(want_args) OPERATOR(pg_catalog.-) 65)
                  OPERATOR(pg_catalog.=) pg_catalog.substr(want_args, 1, pg_catalog.length(want_args) OPERATOR(pg_catalog.-) 65)
              AND pg_catalog.length(have_args) OPERATOR(pg_catalog.=) pg_catalog.length(want_args)
              -- registered for this very table by an earlier CALL
              AND EXISTS (SELECT FROM @extschema@.search_indexes r
                           WHERE r.rel OPERATOR(pg_catalog.=) tbl AND r.token_column OPERATOR(pg_catalog.=) tokcol
                             AND r.definition OPERATOR(pg_catalog.=) args);
        IF have_args OPERATOR(pg_catalog.<>) want_args AND NOT rebind THEN
            RAISE EXCEPTION '% on %.% already exists with other parameters or another index key', tokcol, tbl, col
                USING ERRCODE = '42710',
                      HINT = 'CALL it again with the same arguments and index key to finish it, or drop it first; to rebuild it under a new index key, add a second one with token_column => …';
        END IF;
        -- A first walk without the UPDATE trigger (below) that did not
        -- finish: writes of other transactions meanwhile may have left
        -- tokens of values they replaced, and which ones is not known here.
        -- Every token is computed again. Such a walk marks its trigger
        -- (its comment, @extschema@.search_walk_mark()) until its rows have
        -- had their second look; a trigger on INSERT only is one too. So is
        -- any trigger without the current mark (see search_current_mark):
        -- the mark may have been lost.
        -- And so is a trigger not in the shape the CALL makes (disabled,
        -- ENABLE REPLICA or ALWAYS, a WHEN clause, UPDATE OF some columns,
        -- an earlier version's): writes may have passed it by.
        recheck_all := NOT citus_table AND (shape_ok IS NOT TRUE OR (trig_cols OPERATOR(pg_catalog.>) 0) IS TRUE OR EXISTS (
            SELECT FROM pg_catalog.pg_trigger t
             WHERE t.tgrelid OPERATOR(pg_catalog.=) tbl AND t.tgname OPERATOR(pg_catalog.=) trig
               AND (t.tgtype OPERATOR(pg_catalog.=) 7
                    OR (pg_catalog.obj_description(t.oid, 'pg_trigger') OPERATOR(pg_catalog.=) @extschema@.search_current_mark()) IS NOT TRUE)));
        IF trig_cols OPERATOR(pg_catalog.>) 0 OR rebind OR NOT shape_ok THEN
            -- A trigger of an earlier version (UPDATE OF the source column
            -- only): replaced by one that fires on every UPDATE.
            IF citus_table THEN
                PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
            END IF;
            EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', trig, rel);
            EXECUTE 'CREATE ' OPERATOR(pg_catalog.||) mktrig;
            -- (The comment went with the old trigger: what was found.)
            IF NOT citus_table THEN
                EXECUTE pg_catalog.format('COMMENT ON TRIGGER %I ON %s IS %L', trig, rel,
                    CASE WHEN recheck_all THEN @extschema@.search_walk_mark() ELSE @extschema@.search_current_mark() END);
            END IF;
            COMMIT;
        END IF;
        -- (An index of an earlier version has no registry row yet.)
        PERFORM @extschema@.search_index_register(tbl, args);
        COMMIT;
        IF rebind THEN
            RAISE NOTICE '%: % exists; bound again to %', caller, tokcol, tbl;
        END IF;
        RAISE NOTICE '%: % exists; resuming its backfill', caller, tokcol;
    ELSE
        IF EXISTS (SELECT FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid OPERATOR(pg_catalog.=) tbl AND a.attname OPERATOR(pg_catalog.=) tokcol
                      AND NOT a.attisdropped) THEN
            RAISE EXCEPTION 'column % of relation % already exists', tokcol, tbl
                USING ERRCODE = '42701', HINT = 'Pass another token_column.';
        END IF;
        IF citus_table THEN
            -- Citus refuses triggers on its tables unless told; this one
            -- only computes its own row's token (no query, nothing remote).
            PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
        END IF;
        -- The first walk of a new index is cheaper without a BEFORE UPDATE
        -- trigger: with one, PostgreSQL locks every row before updating it
        -- (one more heap change and WAL record a row, a third of the
        -- walk). So the trigger fires on INSERT only until the walk is done
        -- (the walk computes each token in its SET, with the trigger's own
        -- code), then on UPDATE too, and the rows other transactions wrote
        -- meanwhile are computed again (below). Only where nothing else of
        -- the table's runs on an UPDATE (no other trigger, no rule: such
        -- code could change the source after the SET computed its token),
        -- and not on Citus.
        fast := NOT citus_table AND NOT @extschema@.search_table_runs_code(tbl, trig)
                AND pg_catalog.current_setting('track_counts')::pg_catalog.bool;
        writes := @extschema@.rotation_table_writes(tbl);
        EXECUTE pg_catalog.format('ALTER TABLE %s ADD COLUMN %I %s', rel, tokcol,
            CASE WHEN kind OPERATOR(pg_catalog.=) 'exact' THEN 'pg_catalog.bytea' ELSE 'pg_catalog.int4[]' END);
        IF fast THEN
            EXECUTE pg_catalog.format(
                'CREATE TRIGGER %I BEFORE INSERT ON %s FOR EACH ROW EXECUTE FUNCTION @extschema@.blind_index_trigger(%s)',
                trig, rel, trig_args);
        ELSE
            EXECUTE 'CREATE ' OPERATOR(pg_catalog.||) mktrig;
            IF NOT citus_table THEN
                EXECUTE pg_catalog.format('COMMENT ON TRIGGER %I ON %s IS %L', trig, rel, @extschema@.search_current_mark());
            END IF;
        END IF;
        PERFORM @extschema@.search_index_register(tbl, args);
        IF fast THEN
            EXECUTE pg_catalog.format('COMMENT ON TRIGGER %I ON %s IS %L', trig, rel, @extschema@.search_walk_mark());
            -- (Nothing of the table's was written in this transaction: its
            -- id is one the second look trusts. An event trigger could.)
            -- (No IS DISTINCT FROM: it looks up = through the caller's
            -- search_path. An unknown count fails closed.)
            IF (@extschema@.rotation_table_writes(tbl) OPERATOR(pg_catalog.=) writes) IS NOT TRUE THEN
                recheck_all := true;
            END IF;
            -- Whether no other transaction writes anything anywhere until
            -- the trigger fires on UPDATE too, so that every row's version
            -- is then one of the walk's: no other transaction id is running
            -- now (the snapshot's xmin is this transaction's; this one holds
            -- the table's ACCESS EXCLUSIVE lock, so any later writer of the
            -- table is running now or gets its id later), and the ids of
            -- this transaction, of the walk's and of the one that makes the
            -- trigger fire on UPDATE follow each other with none between (a
            -- write needs an id, and ids are handed out in order). Then the
            -- rows need no second look (below). The snapshot must be taken
            -- now, after the lock: at READ COMMITTED only (at another level
            -- it is the transaction's first).
            last := pg_catalog.pg_current_xact_id();
            quiet := pg_catalog.current_setting('transaction_isolation') OPERATOR(pg_catalog.=) 'read committed'
                 AND pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot()) OPERATOR(pg_catalog.=) last;
            xids := ARRAY[pg_catalog.xid(last)];
        END IF;
        -- From here on every write keeps the token current (with fast, every
        -- INSERT, and every UPDATE once the walk is done).
        COMMIT;
    END IF;

    cond := pg_catalog.format('%I IS NULL AND %I IS NOT NULL', tokcol, col);
    q := pg_catalog.format('SELECT pg_catalog.count(*) FROM %s WHERE %s', rel, cond);
    -- Batches are ranges of heap blocks (TID range scans), about batch_size
    -- rows each. Unlike rotate_column there is no locking pass first: a row
    -- a concurrent transaction is writing makes the batch wait for it (as
    -- any UPDATE would), and if that write indexed the row (the trigger),
    -- the recheck of the condition skips it.
    -- The trigger computes the token of each row the UPDATE touches (its
    -- token is NULL and its source is not).
    upd := pg_catalog.format($q$
        UPDATE %1$s SET %3$I = NULL
         WHERE ctid OPERATOR(pg_catalog.>=) $1 AND ctid OPERATOR(pg_catalog.<) $2 AND %2$s
    $q$, rel, cond, tokcol);
    IF kind OPERATOR(pg_catalog.=) 'exact' THEN
        mkidx := pg_catalog.format('CREATE INDEX IF NOT EXISTS %I ON %s USING btree (%I pg_catalog.bytea_ops)', idx, rel, tokcol);
    ELSE
        mkidx := pg_catalog.format('CREATE INDEX IF NOT EXISTS %I ON %s USING gin (%I pg_catalog.array_ops)', idx, rel, tokcol);
    END IF;
    -- Row-level security must not hide rows from the backfill or its checks
    -- (FORCE ROW LEVEL SECURITY applies to the owner): off in each
    -- transaction, so that a policy that would filter the table makes the
    -- CALL fail (42501) instead of reporting done over part of it.
    PERFORM @extschema@.search_batch_begin(tbl, rel, caller);
    -- How many rows to index: counted; on a table of more than 10,000
    -- blocks (80 MB) estimated from a sample of about 1,000 of them, as
    -- rotate_column does (a count costs about a twelfth of the backfill;
    -- the check after the walk counts exactly). For the notices and the
    -- size of the batches only.
    nblocks := pg_catalog.pg_relation_size(tbl) OPERATOR(pg_catalog./)
               pg_catalog.current_setting('block_size')::pg_catalog.int8;
    IF nblocks OPERATOR(pg_catalog.>) 10000 AND NOT citus_table THEN
        EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM %s TABLESAMPLE pg_catalog.system ($1::pg_catalog.float4) WHERE %s',
                                  rel, cond)
            INTO total USING 100000::pg_catalog.float8 OPERATOR(pg_catalog./) nblocks;
        total := pg_catalog.round(total::pg_catalog.float8 OPERATOR(pg_catalog.*) nblocks OPERATOR(pg_catalog./) 1000);
        about := 'about ';
    ELSE
        EXECUTE q INTO total;
    END IF;
    RAISE NOTICE '%: % rows of %.% to index', caller, about OPERATOR(pg_catalog.||) total, tbl, col;
    remaining := total;
    IF citus_table THEN
        -- Batches by primary key: the subquery (planned on the coordinator)
        -- picks rows not indexed yet, the UPDATE runs on their shards, where
        -- the trigger computes each token with the keys forwarded to this
        -- transaction (forward_keys()). A row a concurrent write indexed
        -- meanwhile fails the recheck and is skipped.
        upd := pg_catalog.format($q$
            UPDATE %1$s AS t SET %3$I = NULL
              FROM (SELECT %4$s FROM %1$s WHERE %2$s LIMIT $1) AS s
             WHERE %5$s AND t.%3$I IS NULL AND t.%6$I IS NOT NULL
        $q$, rel, cond, tokcol, keycols, keyjoin, col);
        LOOP
            PERFORM @extschema@.forward_keys();
            PERFORM @extschema@.search_batch_begin(tbl, rel, caller);
            EXECUTE upd USING batch_size;
            GET DIAGNOSTICS n = ROW_COUNT;
            COMMIT;
            EXIT WHEN n OPERATOR(pg_catalog.=) 0;
            batch := batch OPERATOR(pg_catalog.+) 1;
            done := done OPERATOR(pg_catalog.+) n;
            RAISE NOTICE 'batch %: %/% rows', batch, done, total;
        END LOOP;
        PERFORM @extschema@.search_batch_begin(tbl, rel, caller);
        EXECUTE q INTO remaining;
        COMMIT;
    END IF;
    IF fast THEN
        -- The first walk: each token computed in the SET (the trigger's
        -- code: search_backfill_*), every transaction at READ COMMITTED (a
        -- row another writer changed is rechecked and computed on its new
        -- version), and each one's id kept.
        upd_fast := pg_catalog.format($q$
            UPDATE %1$s SET %3$I = @extschema@.%4$I(%5$s::pg_catalog.oid, %6$L, %7$I)
             WHERE ctid OPERATOR(pg_catalog.>=) $1 AND ctid OPERATOR(pg_catalog.<) $2 AND %2$s
        $q$, rel, cond, tokcol, CASE WHEN kind OPERATOR(pg_catalog.=) 'exact' THEN 'search_backfill_exact' ELSE 'search_backfill_match' END,
             tbl::pg_catalog.oid, tokcol, col);
        SELECT b.nblocks, b.step INTO nblocks, step FROM @extschema@.search_batch_blocks(tbl, batch_size, remaining) b;
        blk := 0;
        COMMIT;
        SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
        WHILE blk OPERATOR(pg_catalog.<) nblocks LOOP
            PERFORM @extschema@.search_batch_begin(tbl, rel, caller);
            writes := @extschema@.rotation_table_writes(tbl);
            EXECUTE upd_fast USING pg_catalog.format('(%s,0)', blk)::pg_catalog.tid,
                                   pg_catalog.format('(%s,0)', blk OPERATOR(pg_catalog.+) step)::pg_catalog.tid;
            GET DIAGNOSTICS n = ROW_COUNT;
            x := pg_catalog.pg_current_xact_id_if_assigned();
            IF x IS NOT NULL THEN
                xids := xids OPERATOR(pg_catalog.||) pg_catalog.xid(x);
                quiet := quiet AND x::pg_catalog.text::pg_catalog.int8
                                   OPERATOR(pg_catalog.=) (last::pg_catalog.text::pg_catalog.int8 OPERATOR(pg_catalog.+) 1);
                last := x;
            END IF;
            -- Code that ran in this UPDATE and may have changed a source
            -- after its token was computed: a trigger or rule made before
            -- the UPDATE took its lock (none can be made until this
            -- transaction ends), or any write of the table's rows but the
            -- UPDATE's own (its rows would carry this transaction's id).
            IF @extschema@.search_table_runs_code(tbl, trig)
               OR ((@extschema@.rotation_table_writes(tbl) OPERATOR(pg_catalog.-) writes) OPERATOR(pg_catalog.=) n) IS NOT TRUE THEN
                recheck_all := true;
            END IF;
            IF n OPERATOR(pg_catalog.>) 0 THEN
                batch := batch OPERATOR(pg_catalog.+) 1;
                done := done OPERATOR(pg_catalog.+) n;
                RAISE NOTICE 'batch %: %/% rows', batch, done, about OPERATOR(pg_catalog.||) total;
            END IF;
            COMMIT;
            SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
            blk := blk OPERATOR(pg_catalog.+) step;
        END LOOP;
        -- The trigger on UPDATE too. Its lock (SHARE ROW EXCLUSIVE) waits
        -- for every transaction writing the table; every write after it
        -- keeps the token current.
        PERFORM @extschema@.search_batch_begin(tbl, rel, caller);
        writes := @extschema@.rotation_table_writes(tbl);
        EXECUTE 'CREATE OR REPLACE ' OPERATOR(pg_catalog.||) mktrig;
        IF @extschema@.search_table_runs_code(tbl, trig) THEN
            recheck_all := true;
        END IF;
        quiet := quiet AND pg_catalog.pg_current_xact_id()::pg_catalog.text::pg_catalog.int8
                           OPERATOR(pg_catalog.=) (last::pg_catalog.text::pg_catalog.int8 OPERATOR(pg_catalog.+) 1)
                 -- (as in the first transaction)
                 AND (@extschema@.rotation_table_writes(tbl) OPERATOR(pg_catalog.=) writes) IS TRUE;
        IF quiet AND NOT recheck_all THEN
            EXECUTE pg_catalog.format('COMMENT ON TRIGGER %I ON %s IS %L', trig, rel, @extschema@.search_current_mark());
        END IF;
        COMMIT;
        SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
        RAISE DEBUG '%: first walk done without the UPDATE trigger; other writers: %, code of the table''s ran: %',
            caller, CASE WHEN quiet THEN 'none' ELSE 'maybe' END, recheck_all;
    END IF;
    IF ((fast AND NOT quiet) OR recheck_all) AND NOT citus_table THEN
        -- The rows another transaction wrote during the walk (an UPDATE
        -- may have replaced a source after its token was computed, or
        -- written a token by hand) are indexed again through the trigger:
        -- every row whose version is not one of the walk's.
        --
        -- In ONE statement, not in batches: the trigger leaves the token of
        -- an UPDATE of other columns as it is, so such a token, if stale,
        -- moves with its row, and batches by block would miss a row moved
        -- behind them. One UPDATE sees every row version committed before
        -- it began, and follows each one it finds changed to its newest
        -- version (READ COMMITTED), so none escapes it; it locks only the
        -- rows it writes.
        --
        -- If the walk's ids are not enough (code of the table's ran in it,
        -- or it was interrupted and is resumed), every token is computed
        -- again first, in batches, and their ids are the ones the statement
        -- trusts.
        COMMIT;
        SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
        n := 0;
        IF recheck_all THEN
            xids := '{}';
            fix := pg_catalog.format($q$
                UPDATE %1$s SET %2$I = NULL
                 WHERE ctid OPERATOR(pg_catalog.>=) $1 AND ctid OPERATOR(pg_catalog.<) $2 AND (%3$I IS NOT NULL OR %2$I IS NOT NULL)
            $q$, rel, tokcol, col);
            SELECT b.nblocks, b.step INTO nblocks, step FROM @extschema@.search_batch_blocks(tbl, batch_size, total) b;
            blk := 0;
            WHILE blk OPERATOR(pg_catalog.<) nblocks LOOP
                PERFORM @extschema@.search_batch_begin(tbl, rel, caller);
                EXECUTE fix USING pg_catalog.format('(%s,0)', blk)::pg_catalog.tid,
                                  pg_catalog.format('(%s,0)', blk OPERATOR(pg_catalog.+) step)::pg_catalog.tid;
                GET DIAGNOSTICS n = ROW_COUNT;
                again := again OPERATOR(pg_catalog.+) n;
                x := pg_catalog.pg_current_xact_id_if_assigned();
                IF x IS NOT NULL THEN
                    xids := xids OPERATOR(pg_catalog.||) pg_catalog.xid(x);
                END IF;
                COMMIT;
                SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
                blk := blk OPERATOR(pg_catalog.+) step;
            END LOOP;
            RAISE NOTICE '%: every token computed again (% rows)', caller, again;
            n := 0;
        END IF;
        -- (The ids as a constant, which PostgreSQL looks up in a hash
        -- table; a parameter would be searched in order, row by row.)
        PERFORM @extschema@.search_batch_begin(tbl, rel, caller);
        EXECUTE pg_catalog.format($q$
            UPDATE %1$s SET %2$I = NULL
             WHERE xmin OPERATOR(pg_catalog.<>) ALL (%4$L::pg_catalog.xid[]) AND (%3$I IS NOT NULL OR %2$I IS NOT NULL)
        $q$, rel, tokcol, col, xids);
        GET DIAGNOSTICS n = ROW_COUNT;
        EXECUTE pg_catalog.format('COMMENT ON TRIGGER %I ON %s IS %L', trig, rel, @extschema@.search_current_mark());
        COMMIT;
        SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
        RAISE DEBUG '%: second look at every row done (% rows indexed again)', caller, n;
        IF n OPERATOR(pg_catalog.>) 0 THEN
            RAISE NOTICE '%: % rows written by other transactions during the walk indexed again', caller, n;
        END IF;
    END IF;
    IF (fast OR recheck_all) AND NOT citus_table THEN
        PERFORM @extschema@.search_batch_begin(tbl, rel, caller);
        IF kind OPERATOR(pg_catalog.=) 'exact' THEN
            -- (See below.)
            IF NOT built THEN
                EXECUTE mkidx;
                built := true;
            END IF;
            PERFORM pg_catalog.set_config('enable_seqscan', 'off', true);
        END IF;
        EXECUTE q INTO remaining;
        COMMIT;
    END IF;
    -- Rows that moved behind the walk (an UPDATE of another column of a row
    -- not indexed yet) are picked up by a further pass.
    WHILE remaining OPERATOR(pg_catalog.>) 0 AND pass OPERATOR(pg_catalog.<) 5 AND NOT citus_table LOOP
        pass := pass OPERATOR(pg_catalog.+) 1;
        SELECT b.nblocks, b.step INTO nblocks, step FROM @extschema@.search_batch_blocks(tbl, batch_size, remaining) b;
        blk := 0;
        WHILE blk OPERATOR(pg_catalog.<) nblocks LOOP
            PERFORM @extschema@.search_batch_begin(tbl, rel, caller);
            EXECUTE upd USING pg_catalog.format('(%s,0)', blk)::pg_catalog.tid,
                              pg_catalog.format('(%s,0)', blk OPERATOR(pg_catalog.+) step)::pg_catalog.tid;
            GET DIAGNOSTICS n = ROW_COUNT;
            IF n OPERATOR(pg_catalog.>) 0 THEN
                batch := batch OPERATOR(pg_catalog.+) 1;
                done := done OPERATOR(pg_catalog.+) n;
                RAISE NOTICE 'batch %: %/% rows', batch, done, about OPERATOR(pg_catalog.||) total;
            END IF;
            COMMIT;
            blk := blk OPERATOR(pg_catalog.+) step;
        END LOOP;
        PERFORM @extschema@.search_batch_begin(tbl, rel, caller);
        IF kind OPERATOR(pg_catalog.=) 'exact' THEN
            -- The B-tree, built now rather than after the check, answers
            -- the check (it holds the NULL tokens) instead of a scan of the
            -- whole table, dead row versions included; rows a further pass
            -- indexes are added to it as they are updated. (A GIN index
            -- cannot find NULLs.) SET LOCAL: until the COMMIT below.
            IF NOT built THEN
                EXECUTE mkidx;
                built := true;
            END IF;
            PERFORM pg_catalog.set_config('enable_seqscan', 'off', true);
        END IF;
        EXECUTE q INTO remaining;
        COMMIT;
    END LOOP;
    IF remaining OPERATOR(pg_catalog.>) 0 THEN
        RAISE WARNING '%: % rows of %.% are not indexed yet (locked by other transactions?); CALL % again',
            caller, remaining, tbl, col, caller;
        RETURN;
    END IF;

    PERFORM @extschema@.search_batch_begin(tbl, rel, caller);
    IF NOT built THEN
        EXECUTE mkidx;
    END IF;
    IF @extschema@.search_index_of(tbl, tokcol, kind) IS NULL THEN
        RAISE EXCEPTION '%: relation %.% exists and is not the index of %.% that % builds', caller, nsp, idx, tbl, tokcol, caller
            USING ERRCODE = '42P07', HINT = 'Drop or rename that relation, or pass another token_column, then CALL again.';
    END IF;
    RAISE NOTICE '%: done, % rows indexed; % is indexed by %', caller, GREATEST(done, again), tokcol, idx;
END
$proc$;

CREATE PROCEDURE add_blind_index(
    tbl regclass,
    col name,
    normalization text DEFAULT 'none',
    bits integer DEFAULT 256,
    batch_size integer DEFAULT 1000,
    context text DEFAULT NULL,
    token_column name DEFAULT NULL,
    index_key text DEFAULT 'current'
)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL @extschema@.search_index_add('exact', tbl, col, normalization, bits, batch_size, context, token_column, index_key);
END
$proc$;

CREATE PROCEDURE add_match_index(
    tbl regclass,
    col name,
    normalization text DEFAULT 'lower',
    bits integer DEFAULT 20,
    batch_size integer DEFAULT 1000,
    context text DEFAULT NULL,
    token_column name DEFAULT NULL,
    index_key text DEFAULT 'current'
)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL @extschema@.search_index_add('match', tbl, col, normalization, bits, batch_size, context, token_column, index_key);
END
$proc$;

-- Shared by drop_blind_index and drop_match_index: drops the trigger and the
-- token column (and with it every index on it, a unique index included).
CREATE PROCEDURE search_index_drop(kind text, tbl regclass, col name, token_column name)
LANGUAGE plpgsql
AS $proc$
DECLARE
    caller pg_catalog.text := CASE WHEN kind OPERATOR(pg_catalog.=) 'exact' THEN 'drop_blind_index' ELSE 'drop_match_index' END;
    tokcol pg_catalog.text;
    trig pg_catalog.text;
    rel pg_catalog.text;
    have_args pg_catalog.bytea;
    prefix pg_catalog.bytea;
    citus_table pg_catalog.bool := false;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_class c
                    WHERE c.oid OPERATOR(pg_catalog.=) tbl::pg_catalog.oid
                      AND pg_catalog.pg_get_userbyid(c.relowner) OPERATOR(pg_catalog.=) CURRENT_USER) THEN
        RAISE EXCEPTION '% must be run by the owner of %', caller, tbl USING ERRCODE = '42501';
    END IF;
    tokcol := pg_catalog.concat(col, CASE WHEN kind OPERATOR(pg_catalog.=) 'exact' THEN '_bidx' ELSE '_tokens' END);
    IF token_column IS NOT NULL THEN
        tokcol := token_column;
    END IF;
    trig := pg_catalog.concat('zz_pazpaz_', tokcol);
    -- The first four trigger arguments (marker, kind, column, token column),
    -- each followed by its NUL byte in pg_trigger.tgargs.
    SELECT pg_catalog.string_agg(pg_catalog.convert_to(u.a, 'UTF8') OPERATOR(pg_catalog.||) '\x00'::pg_catalog.bytea,
                                 ''::pg_catalog.bytea ORDER BY u.i)
      INTO prefix
      FROM pg_catalog.unnest(ARRAY['pazpaz_crypto search v1', kind, col::pg_catalog.text, tokcol]) WITH ORDINALITY u(a, i);
    SELECT t.tgargs INTO have_args FROM pg_catalog.pg_trigger t
     WHERE t.tgrelid OPERATOR(pg_catalog.=) tbl AND t.tgname OPERATOR(pg_catalog.=) trig;
    IF NOT FOUND OR pg_catalog.substr(have_args, 1, pg_catalog.length(prefix)) OPERATOR(pg_catalog.<>) prefix THEN
        -- (Names only what exists: the column and token column given may be
        -- anything.)
        RAISE EXCEPTION '%: % has no % of that column with that token column', caller, tbl,
            CASE WHEN kind OPERATOR(pg_catalog.=) 'exact' THEN 'blind index' ELSE 'match index' END
            USING ERRCODE = '42704';
    END IF;
    SELECT pg_catalog.format('%I.%I', ns.nspname, c.relname) INTO STRICT rel
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace ns ON ns.oid OPERATOR(pg_catalog.=) c.relnamespace
     WHERE c.oid OPERATOR(pg_catalog.=) tbl;
    SELECT k.citus_table INTO citus_table FROM @extschema@.citus_table_keys(tbl) k;
    IF citus_table THEN
        PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
    END IF;
    EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', trig, rel);
    PERFORM @extschema@.search_index_unregister(tbl, tokcol::pg_catalog.name);
    EXECUTE pg_catalog.format('ALTER TABLE %s DROP COLUMN %I', rel, tokcol);
    RAISE NOTICE '%: dropped % and its trigger and indexes', caller, tokcol;
END
$proc$;

CREATE PROCEDURE drop_blind_index(tbl regclass, col name, token_column name DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL @extschema@.search_index_drop('exact', tbl, col, token_column);
END
$proc$;

CREATE PROCEDURE drop_match_index(tbl regclass, col name, token_column name DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL @extschema@.search_index_drop('match', tbl, col, token_column);
END
$proc$;


-- The same with a regclass table and text names: a literal column name
-- given beside a regclass (add_blind_index('t'::regclass, 'c')) picks text
-- over name, so without these a look-alike taking (regclass, text) in a
-- later schema of the search_path would take such a call over.
CREATE PROCEDURE add_blind_index(
    tbl regclass,
    col text,
    normalization text DEFAULT 'none',
    bits integer DEFAULT 256,
    batch_size integer DEFAULT 1000,
    context text DEFAULT NULL,
    token_column text DEFAULT NULL,
    index_key text DEFAULT 'current'
)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL @extschema@.search_index_add('exact', tbl, col::pg_catalog.name, normalization, bits, batch_size, context,
                                      token_column::pg_catalog.name, index_key);
END
$proc$;

CREATE PROCEDURE add_match_index(
    tbl regclass,
    col text,
    normalization text DEFAULT 'lower',
    bits integer DEFAULT 20,
    batch_size integer DEFAULT 1000,
    context text DEFAULT NULL,
    token_column text DEFAULT NULL,
    index_key text DEFAULT 'current'
)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL @extschema@.search_index_add('match', tbl, col::pg_catalog.name, normalization, bits, batch_size, context,
                                      token_column::pg_catalog.name, index_key);
END
$proc$;

CREATE PROCEDURE drop_blind_index(tbl regclass, col text, token_column text DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL @extschema@.search_index_drop('exact', tbl, col::pg_catalog.name, token_column::pg_catalog.name);
END
$proc$;

CREATE PROCEDURE drop_match_index(tbl regclass, col text, token_column text DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL @extschema@.search_index_drop('match', tbl, col::pg_catalog.name, token_column::pg_catalog.name);
END
$proc$;

-- ---- Calls that a hostile search_path cannot take over ---------------------
--
-- A literal argument ('public.members') has no type until PostgreSQL picks a
-- function; among candidates of one name it prefers text (the preferred type
-- of its category) to regclass or name. So a role that may create functions
-- in a schema of the search_path -- in the extension's own schema, if that
-- is public -- could otherwise shadow add_blind_index(regclass, name) with
-- add_blind_index(text, text), and run its code in the caller's session,
-- which holds the keys. These overloads take text, so a literal call picks
-- them (a look-alike with the same argument types cannot be created beside
-- them, and one with other types loses), and they hand the arguments,
-- typed, to the functions above.
--
-- blind_equals and blind_contains do the whole comparison, so that a query
-- needs no operator of its own: a bare "tokens @> …" is resolved through the
-- search_path, and an exact public.@>(int4[], int4[]) beats pg_catalog's
-- polymorphic @>(anyarray, anyarray). They are SQL functions with a body
-- parsed when the extension is created (RETURN …), which the planner inlines:
-- "email_bidx = blind_index_for(…)" and "tokens @> blind_search_tokens_for(…)"
-- reach the B-tree and GIN indexes as if written in the query.

CREATE PROCEDURE add_blind_index(
    tbl text,
    col text,
    normalization text DEFAULT 'none',
    bits integer DEFAULT 256,
    batch_size integer DEFAULT 1000,
    context text DEFAULT NULL,
    token_column text DEFAULT NULL,
    index_key text DEFAULT 'current'
)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL @extschema@.search_index_add('exact', tbl::pg_catalog.regclass, col::pg_catalog.name, normalization, bits,
                                      batch_size, context, token_column::pg_catalog.name, index_key);
END
$proc$;

CREATE PROCEDURE add_match_index(
    tbl text,
    col text,
    normalization text DEFAULT 'lower',
    bits integer DEFAULT 20,
    batch_size integer DEFAULT 1000,
    context text DEFAULT NULL,
    token_column text DEFAULT NULL,
    index_key text DEFAULT 'current'
)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL @extschema@.search_index_add('match', tbl::pg_catalog.regclass, col::pg_catalog.name, normalization, bits,
                                      batch_size, context, token_column::pg_catalog.name, index_key);
END
$proc$;

CREATE PROCEDURE drop_blind_index(tbl text, col text, token_column text DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL @extschema@.search_index_drop('exact', tbl::pg_catalog.regclass, col::pg_catalog.name, token_column::pg_catalog.name);
END
$proc$;

CREATE PROCEDURE drop_match_index(tbl text, col text, token_column text DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
BEGIN
    CALL @extschema@.search_index_drop('match', tbl::pg_catalog.regclass, col::pg_catalog.name, token_column::pg_catalog.name);
END
$proc$;

CREATE FUNCTION blind_index_for(tbl text, token_column text, value text) RETURNS bytea
LANGUAGE sql STABLE STRICT PARALLEL SAFE
RETURN @extschema@.blind_index_for(tbl::pg_catalog.regclass, token_column, value);

CREATE FUNCTION blind_search_tokens_for(tbl text, token_column text, query text) RETURNS int4[]
LANGUAGE sql STABLE STRICT PARALLEL SAFE
RETURN @extschema@.blind_search_tokens_for(tbl::pg_catalog.regclass, token_column, query);

CREATE FUNCTION blind_equals(token bytea, tbl text, token_column text, value text) RETURNS boolean
LANGUAGE sql STABLE STRICT PARALLEL SAFE
RETURN token OPERATOR(pg_catalog.=) @extschema@.blind_index_for(tbl::pg_catalog.regclass, token_column, value);

CREATE FUNCTION blind_contains(tokens int4[], tbl text, token_column text, query text) RETURNS boolean
LANGUAGE sql STABLE STRICT PARALLEL SAFE
RETURN tokens OPERATOR(pg_catalog.@>) @extschema@.blind_search_tokens_for(tbl::pg_catalog.regclass, token_column, query);
