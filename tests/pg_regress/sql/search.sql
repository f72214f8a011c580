-- Search on encrypted columns: exact match through a blind index, substring
-- match through keyed trigram tokens, both maintained by a trigger and used
-- through ordinary B-tree and GIN indexes.
--
-- Keys are generated server-side and set with set_config(), so no key is
-- ever spelled out in a statement (an application passes them as bind
-- parameters). The index key is separate from the data keys.
SELECT generate_encryption_key() AS data_key, generate_encryption_key() AS index_key,
       generate_encryption_key() AS next_index_key, generate_encryption_key() AS wrong_key \gset
SELECT set_config('pazpaz.encryption_key', :'data_key', false) IS NOT NULL AS data_key_set;
SELECT set_config('pazpaz.index_key', :'index_key', false) IS NOT NULL AS index_key_set;

-- The index key follows the rules of the data keys: hidden, validated,
-- never from a configuration file or a role's settings.
SHOW pazpaz.index_key;
SELECT current_setting('pazpaz.index_key') AS shown, count(*) AS in_pg_settings
FROM pg_settings WHERE name LIKE 'pazpaz.index%' GROUP BY 1;
SELECT regress.try($$SET pazpaz.index_key = 'AAEC'$$);
SELECT regress.try($$SET pazpaz.index_key_next = 'not base64!'$$);
SELECT regress.try($$ALTER ROLE regress_app SET pazpaz.index_key = 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8='$$);
SELECT regress.try($$CREATE FUNCTION f() RETURNS int LANGUAGE sql SET pazpaz.index_key = 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=' AS 'SELECT 1'$$);
SELECT setting, length(fingerprint) AS fingerprint_length FROM index_key_status();

-- ---- The functions ---------------------------------------------------------
-- blind_index(value, context [, normalization [, bits]]): 256 bits by default.
SELECT length(blind_index('jane@example.com', 'public.clients.email')) AS bytes,
       length(blind_index('jane@example.com', 'public.clients.email', 'none', 12)) AS bytes_of_12_bits,
       get_byte(blind_index('jane@example.com', 'public.clients.email', 'none', 12), 1) & 15 AS low_bits_of_12;
-- Equal values give equal indexes; 'lower' ignores case and spacing (NFKC,
-- so full-width letters and non-breaking spaces too); contexts separate.
SELECT blind_index('Jane@Example.com ', 'ctx', 'lower') = blind_index('jane@example.com', 'ctx', 'lower') AS lower_equal,
       blind_index(E'ＪＡＮＥ\u00a0 Doe', 'ctx', 'lower') = blind_index('jane doe', 'ctx', 'lower') AS nfkc_equal,
       blind_index('Jane@Example.com', 'ctx') = blind_index('jane@example.com', 'ctx') AS none_equal,
       blind_index('jane@example.com', 'public.clients.email') = blind_index('jane@example.com', 'public.leads.email') AS contexts_equal;
-- NULL in, NULL out; bad parameters are 22023.
SELECT blind_index(NULL, 'ctx') IS NULL AS null_value, blind_tokens(NULL, 'ctx') IS NULL AS null_tokens;
SELECT regress.try($$SELECT blind_index('x', 'ctx', 'upper')$$);
SELECT regress.try($$SELECT blind_index('x', 'ctx', 'none', 0)$$);
SELECT regress.try($$SELECT blind_index('x', 'ctx', 'none', 257)$$);
SELECT regress.try($$SELECT blind_tokens('x', 'ctx', 'none', 7)$$);
SELECT regress.try($$SELECT blind_tokens('x', 'ctx', 'none', 33)$$);
-- Tokens: one per distinct trigram; short values have none, short queries
-- are refused (they would match every row).
SELECT cardinality(blind_tokens('Johnson', 'ctx', 'lower')) AS trigrams_of_johnson,
       cardinality(blind_tokens('jo', 'ctx')) AS tokens_of_a_short_value,
       blind_tokens('Johnson', 'ctx', 'lower') @> blind_search_tokens('OHNS', 'ctx', 'lower') AS substring_found,
       blind_tokens('Johnson', 'ctx', 'lower') @> blind_search_tokens('jack', 'ctx', 'lower') AS other_found;
SELECT regress.try($$SELECT blind_search_tokens('jo', 'ctx')$$);
SELECT regress.try($$SELECT blind_search_tokens('  jo  ', 'ctx', 'lower')$$);

-- ---- A table with encrypted columns -----------------------------------------
CREATE TABLE clients (
    id int PRIMARY KEY,
    workspace_id int NOT NULL,
    email encrypted_text,
    last_name encrypted_text,
    notes jsonb,          -- format 2
    phone bytea           -- format 1
);
INSERT INTO clients
SELECT i, i % 3,
       CASE WHEN i % 100 = 0 THEN NULL ELSE pg_catalog.format('Client.%s@Example.com', i) END,
       (ARRAY['Johnson', 'Smith', 'Johansson', 'Brown', 'Ng', 'Müller'])[i % 6 + 1] || ' ' || i,
       encrypt_field_versioned('note ' || i),
       encrypt_field('+1 555 ' || lpad(i::text, 4, '0'))
FROM generate_series(1, 3000) i;

-- One statement each: token column, trigger, batched backfill, index.
CALL add_blind_index('clients', 'email', normalization => 'lower', batch_size => 1000);
CALL add_match_index('clients', 'last_name', batch_size => 2000);
-- What was added (the trigger's arguments hold the index's definition; the
-- last is the fingerprint of the index key, masked here).
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
WHERE attrelid = 'clients'::regclass AND (attname LIKE '%\_bidx' OR attname LIKE '%\_tokens');
SELECT indexrelid::regclass AS index, pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'clients'::regclass ORDER BY 1;
SELECT regexp_replace(pg_get_triggerdef(oid), '[0-9a-f]{8}''\)$', '…'')') AS trigger FROM pg_trigger
WHERE tgrelid = 'clients'::regclass ORDER BY tgname;
ANALYZE clients;

-- Exact lookup: one readable WHERE clause, answered by the B-tree.
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT id FROM clients WHERE email_bidx = blind_index_for('clients', 'email_bidx', 'client.42@example.com');
SELECT id, email FROM clients WHERE email_bidx = blind_index_for('clients', 'email_bidx', 'CLIENT.42@example.com ');
-- The same with the plain function and the index's parameters.
SELECT id FROM clients WHERE email_bidx = blind_index('client.42@example.com', 'public.clients.email', 'lower');
-- Substring search: the GIN index finds the candidates, the recheck
-- decrypts only those.
EXPLAIN (COSTS OFF)
SELECT id FROM clients
WHERE last_name_tokens @> blind_search_tokens_for('clients', 'last_name_tokens', 'hans')
  AND last_name::text ILIKE '%hans%';
SELECT count(*) AS johansson_rows FROM clients
WHERE last_name_tokens @> blind_search_tokens_for('clients', 'last_name_tokens', 'HANS')
  AND last_name::text ILIKE '%hans%';
SELECT count(*) AS same_by_scan FROM clients WHERE last_name::text ILIKE '%hans%';
SELECT count(*) AS candidates, count(*) FILTER (WHERE last_name::text ILIKE '%ohns%') AS matches FROM clients
WHERE last_name_tokens @> blind_search_tokens_for('clients', 'last_name_tokens', 'ohns');
SELECT regress.try($$SELECT blind_search_tokens_for('clients', 'last_name_tokens', 'ng')$$);
RESET enable_seqscan;
-- Every row is indexed, NULL email rows with a NULL token.
SELECT count(*) FILTER (WHERE email_bidx IS NULL) AS null_tokens, count(*) FILTER (WHERE email IS NULL) AS null_emails,
       count(*) FILTER (WHERE email_bidx = blind_index(email::text, 'public.clients.email', 'lower')) AS correct
FROM clients;

-- The trigger keeps the tokens current on INSERT and UPDATE of the source.
INSERT INTO clients (id, workspace_id, email, last_name) VALUES (5001, 1, 'New.Person@Example.com', 'Newman');
UPDATE clients SET email = 'changed.42@example.com' WHERE id = 42;
UPDATE clients SET workspace_id = 2 WHERE id = 43;
UPDATE clients SET email = NULL WHERE id = 44;
SELECT id, email_bidx IS NOT DISTINCT FROM blind_index(email::text, 'public.clients.email', 'lower') AS bidx_current,
       last_name_tokens IS NOT DISTINCT FROM blind_tokens(last_name::text, 'public.clients.last_name', 'lower') AS tokens_current,
       email_bidx IS NULL AS null_bidx
FROM clients WHERE id IN (42, 43, 44, 5001) ORDER BY id;
SELECT count(*) AS old_value_found FROM clients WHERE email_bidx = blind_index_for('clients', 'email_bidx', 'client.42@example.com');

-- Another BEFORE trigger that changes the source (an anonymization on an
-- UPDATE that does not name the email): the token follows the value the
-- row ends up with, not the one the UPDATE named.
CREATE FUNCTION anonymize() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.email := 'erased-' || NEW.id || '@example.invalid'; RETURN NEW; END $$;
CREATE TRIGGER anonymize BEFORE UPDATE OF workspace_id ON clients FOR EACH ROW
WHEN (NEW.workspace_id = 99) EXECUTE FUNCTION anonymize();
UPDATE clients SET workspace_id = 99 WHERE id = 50;
SELECT id, email, email_bidx = blind_index(email::text, 'public.clients.email', 'lower') AS bidx_current FROM clients WHERE id = 50;
SELECT count(*) AS erased_value_found FROM clients WHERE blind_equals(email_bidx, 'public.clients', 'email_bidx', 'client.50@example.com');
DROP TRIGGER anonymize ON clients;
DROP FUNCTION anonymize();
UPDATE clients SET workspace_id = 2 WHERE id = 50;

-- The token column cannot be written by hand: another row's token (to make
-- this row answer that row's lookup), NULL or '{}' (to hide a row), on
-- UPDATE or INSERT, is computed again from the row's own value.
UPDATE clients SET email_bidx = (SELECT email_bidx FROM clients WHERE id = 1) WHERE id = 2;
UPDATE clients SET email_bidx = NULL WHERE id = 3;
UPDATE clients SET last_name_tokens = '{}' WHERE id = 4;
UPDATE clients SET email_bidx = (SELECT email_bidx FROM clients WHERE id = 1), email = email WHERE id = 5;
INSERT INTO clients (id, workspace_id, email, email_bidx)
SELECT 5003, 1, 'planted@example.com', email_bidx FROM clients WHERE id = 1;
SELECT id FROM clients WHERE blind_equals(email_bidx, 'public.clients', 'email_bidx', 'client.1@example.com') ORDER BY id;
SELECT id, email_bidx IS NOT DISTINCT FROM blind_index(email::text, 'public.clients.email', 'lower') AS bidx_current,
       last_name_tokens IS NOT DISTINCT FROM blind_tokens(last_name::text, 'public.clients.last_name', 'lower') AS tokens_current
FROM clients WHERE id IN (2, 3, 4, 5, 5003) ORDER BY id;
DELETE FROM clients WHERE id = 5003;
-- Without the index key, writes of other columns still work (nothing to
-- compute); a write of the token column fails.
RESET pazpaz.index_key;
SELECT regress.try($$UPDATE clients SET workspace_id = 2 WHERE id = 6$$) AS other_column_without_index_key;
SELECT regress.try($$UPDATE clients SET email_bidx = NULL WHERE id = 6$$) AS token_column_without_index_key;
SELECT set_config('pazpaz.index_key', :'index_key', false) IS NOT NULL AS index_key_set;

-- ---- A copied definition is not used ------------------------------------------
-- The trigger's arguments (context, key fingerprint) are public in
-- pg_trigger. An owner of another table, without the key, copies them onto
-- its own table, so that a session holding the key would compute tokens
-- under clients' context for the values written there: a dictionary oracle
-- by comparing the two token columns. Only registered definitions are used.
SELECT rel, token_column, definition[6] AS context FROM search_indexes ORDER BY 1, 2;
CREATE ROLE regress_copier;
GRANT CREATE ON SCHEMA public TO regress_copier;
GRANT USAGE ON SCHEMA regress TO regress_copier;
SET ROLE regress_copier;
CREATE TABLE public.copied (id int PRIMARY KEY, email encrypted_text, email_bidx bytea);
DO $$
BEGIN
    EXECUTE (SELECT replace(pg_get_triggerdef(t.oid), 'ON public.clients', 'ON public.copied')
               FROM pg_trigger t WHERE t.tgrelid = 'public.clients'::regclass AND t.tgname = 'zz_pazpaz_email_bidx');
END $$;
SELECT regress.try($$SELECT search_index_register('public.copied', (SELECT definition FROM search_indexes WHERE rel = 'public.clients'::regclass AND token_column = 'email_bidx'))$$) AS register_the_copy;
-- Nor through the procedure, with clients' context (or the default context
-- of a column of another owner's table).
DROP TRIGGER zz_pazpaz_email_bidx ON public.copied;
ALTER TABLE public.copied DROP COLUMN email_bidx;
SELECT regress.try($$CALL add_blind_index('public.copied', 'email', normalization => 'lower', context => 'public.clients.email')$$) AS same_context;
SELECT regress.try($$CALL add_match_index('public.copied', 'email', context => '"public"."clients"."phone"')$$) AS default_context_of_another_table;
CREATE TABLE public.copied2 (id int PRIMARY KEY, email encrypted_text, email_bidx bytea);
DO $$
BEGIN
    EXECUTE (SELECT replace(pg_get_triggerdef(t.oid), 'ON public.clients', 'ON public.copied2')
               FROM pg_trigger t WHERE t.tgrelid = 'public.clients'::regclass AND t.tgname = 'zz_pazpaz_email_bidx');
END $$;
GRANT INSERT, SELECT ON public.copied2 TO PUBLIC;
RESET ROLE;
-- The key-holding session writes a guessed value into the copy: refused,
-- and the lookup of the copy too; its table stays as it was.
SELECT regress.try($$INSERT INTO public.copied2 VALUES (1, 'client.7@example.com')$$) AS write_into_the_copy;
SELECT regress.try($$SELECT blind_index_for('public.copied2', 'email_bidx', 'client.7@example.com')$$) AS lookup_in_the_copy;
SELECT count(*) AS copied_rows FROM public.copied2;
SELECT count(*) AS registered_for_the_copies FROM search_indexes WHERE rel IN ('public.copied'::regclass, 'public.copied2'::regclass);
-- The registry is written only through the procedures.
SET ROLE regress_copier;
SELECT regress.try($$INSERT INTO search_indexes SELECT 'public.copied2', 'email_bidx', definition FROM search_indexes WHERE token_column = 'email_bidx'$$) AS insert_directly;
RESET ROLE;
DROP TABLE public.copied, public.copied2;
REVOKE CREATE ON SCHEMA public FROM regress_copier;
REVOKE USAGE ON SCHEMA regress FROM regress_copier;
DROP ROLE regress_copier;

-- jsonb (format 2) and bytea (format 1) columns. (From here on the batch
-- NOTICEs are left out: batches are ranges of heap blocks, so their counts
-- depend on where earlier updates put the rows.)
SET client_min_messages = warning;
CALL add_blind_index('clients', 'notes');
CALL add_match_index('clients', 'phone', normalization => 'none');
RESET client_min_messages;
SELECT id FROM clients WHERE notes_bidx = blind_index_for('clients', 'notes_bidx', 'note 7');
SELECT count(*) AS phones_with_0123 FROM clients
WHERE phone_tokens @> blind_search_tokens_for('clients', 'phone_tokens', '0123') AND decrypt_field(phone) LIKE '%0123%';
UPDATE clients SET notes = encrypt_field_versioned('changed note') WHERE id = 8;
SELECT id FROM clients WHERE notes_bidx = blind_index_for('clients', 'notes_bidx', 'changed note');

-- ---- Writes without a key fail; they never store a wrong or empty token ----
SELECT regress.try($$RESET pazpaz.index_key$$);
SELECT regress.try($$INSERT INTO clients (id, workspace_id, email) VALUES (5002, 1, 'x@example.com')$$);
SELECT regress.try($$UPDATE clients SET email = 'y@example.com' WHERE id = 45$$);
SELECT regress.try($$SELECT blind_index('x', 'ctx')$$);
SELECT regress.try($$SELECT id FROM clients WHERE email_bidx = blind_index_for('clients', 'email_bidx', 'x')$$);
-- Another index key: the index names the key it was built with.
SELECT set_config('pazpaz.index_key', :'wrong_key', false) IS NOT NULL AS wrong_key_set;
SELECT regexp_replace(regress.try($$INSERT INTO clients (id, workspace_id, email) VALUES (5002, 1, 'x@example.com')$$),
                      'fingerprint [0-9a-f]{8}', 'fingerprint …') AS with_another_key;
SELECT set_config('pazpaz.index_key', :'index_key', false) IS NOT NULL AS index_key_set;
SELECT regress.try($$RESET pazpaz.encryption_key$$);
SELECT regress.try($$INSERT INTO clients (id, workspace_id, email) VALUES (5002, 1, 'x@example.com')$$);
SELECT set_config('pazpaz.encryption_key', :'data_key', false) IS NOT NULL AS data_key_set;
SELECT count(*) AS rows_5002 FROM clients WHERE id = 5002;

-- ---- A role without the index key cannot compute tokens for guesses ---------
GRANT SELECT ON clients TO regress_app;
SET ROLE regress_app;
SELECT set_config('pazpaz.encryption_key', :'data_key', false) IS NOT NULL AS app_data_key_set;
SELECT regress.try($$RESET pazpaz.index_key$$);
SELECT regress.try($$SELECT count(*) FROM clients WHERE email_bidx = blind_index('client.7@example.com', 'public.clients.email', 'lower')$$);
-- With a key of its own, its tokens match nothing.
SELECT set_config('pazpaz.index_key', :'wrong_key', false) IS NOT NULL AS own_key_set;
SELECT count(*) AS guesses_matched FROM clients
WHERE email_bidx = ANY (SELECT blind_index(pg_catalog.format('client.%s@example.com', i), 'public.clients.email', 'lower')
                        FROM generate_series(1, 3000) i);
RESET ROLE;
SELECT set_config('pazpaz.index_key', :'index_key', false) IS NOT NULL AS index_key_set;

-- ---- Unique email per workspace ----------------------------------------------
CREATE UNIQUE INDEX clients_email_per_workspace ON clients (workspace_id, email_bidx);
SELECT regress.try($$INSERT INTO clients (id, workspace_id, email) VALUES (6001, 1, 'Client.1@EXAMPLE.com')$$);
SELECT regress.try($$INSERT INTO clients (id, workspace_id, email) VALUES (6002, 2, 'Client.1@EXAMPLE.com')$$);
-- The client sees the constraint's name and the token bytes, never the address.
DO $$
DECLARE msg text; det text;
BEGIN
    INSERT INTO clients (id, workspace_id, email) VALUES (6003, 1, 'client.1@example.com');
EXCEPTION WHEN unique_violation THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
    RAISE NOTICE 'message: %', msg;
    RAISE NOTICE 'detail names the token: %, holds the address: %',
        det LIKE 'Key (workspace_id, email_bidx)=(1, \\x%) already exists.', strpos(lower(det), 'client.1@') > 0;
END $$;

-- ---- Resuming, parameters, privileges ------------------------------------------
-- CALLed again with the same arguments: resumes (nothing left to do).
CALL add_blind_index('clients', 'email', normalization => 'lower', batch_size => 1000);
SELECT regress.try($$CALL add_blind_index('clients', 'email', normalization => 'none')$$);
SELECT regress.try($$CALL add_blind_index('clients', 'workspace_id')$$);
SELECT regress.try($$CALL add_blind_index('clients', 'nope')$$);
SELECT regress.try($$CALL add_blind_index('clients', 'email', normalization => 'upper', token_column => 'e2')$$);
SELECT regress.try($$CALL add_match_index('clients', 'email', bits => 40)$$);
SELECT regress.try($$CALL add_blind_index('clients', 'email', token_column => 'e2', index_key => 'next')$$);
SELECT regress.try($$CALL drop_blind_index('clients', 'last_name')$$);
-- Partitioned tables (no rows of their own: the backfill never ended),
-- partitions and tables in an inheritance hierarchy are refused.
CREATE TABLE parted (id int, email encrypted_text) PARTITION BY RANGE (id);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100);
INSERT INTO parted VALUES (1, 'a@example.com');
CREATE TABLE inh_parent (id int, email encrypted_text);
CREATE TABLE inh_child () INHERITS (inh_parent);
SELECT regress.try($$CALL add_blind_index('parted', 'email')$$) AS partitioned;
SELECT regress.try($$CALL add_blind_index('parted_1', 'email')$$) AS partition;
SELECT regress.try($$CALL add_match_index('inh_parent', 'email')$$) AS inheritance_parent;
SELECT regress.try($$CALL add_match_index('inh_child', 'email')$$) AS inheritance_child;
SELECT count(*) AS token_columns FROM pg_attribute WHERE attrelid IN ('parted'::regclass, 'parted_1'::regclass, 'inh_parent'::regclass, 'inh_child'::regclass) AND attname LIKE 'email\_%';
DROP TABLE parted, inh_parent, inh_child;
-- Inside a transaction block (here: a function) it cannot COMMIT its batches.
SELECT regress.try($$CALL add_blind_index('clients', 'last_name')$$);
SET ROLE regress_app;
SELECT regress.try($$CALL add_blind_index('clients', 'last_name')$$);
SELECT regress.try($$CALL drop_blind_index('clients', 'email')$$);
RESET ROLE;

-- ---- Triggers that fire after the index's, index names, a lost comment --------
-- A BEFORE trigger that fires after the index's (name order, byte by byte:
-- any name starting with a non-ASCII letter sorts after zz_pazpaz_) could
-- change the source after its token is computed: the CALL refuses it before
-- anything changes, and the trigger refuses writes once one exists.
CREATE TABLE ord (id int PRIMARY KEY, email encrypted_text, note encrypted_text);
INSERT INTO ord SELECT i, 'User' || i || '@X.org' FROM generate_series(1, 20) i;
CREATE FUNCTION ord_norm() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.email := lower(NEW.email::text)::encrypted_text;
    RETURN NEW;
END $$;
CREATE TRIGGER "überprüfung" BEFORE INSERT OR UPDATE ON ord FOR EACH ROW EXECUTE FUNCTION ord_norm();
SELECT regress.try($$CALL add_blind_index('ord', 'email')$$) AS sorts_after;
SELECT count(*) AS token_columns FROM pg_attribute WHERE attrelid = 'ord'::regclass AND attname = 'email_bidx';
ALTER TRIGGER "überprüfung" ON ord RENAME TO a_normalize;
SET client_min_messages = warning;
CALL add_blind_index('ord', 'email');
RESET client_min_messages;
SELECT count(*) FILTER (WHERE email_bidx = blind_index_for('ord', 'email_bidx', email::text)) AS current, count(*) FROM ord;
-- Made afterwards: writes it fires on fail (never a stale token) until it
-- is renamed, disabled or an AFTER trigger. Writes of other columns too (it
-- may change the source on any UPDATE). An INSERT it does not fire on
-- passes.
CREATE TRIGGER zzz_late BEFORE UPDATE ON ord FOR EACH ROW EXECUTE FUNCTION ord_norm();
SELECT regress.try($$INSERT INTO ord VALUES (22, 'Other@X.org')$$) AS insert;
SELECT regress.try($$UPDATE ord SET note = 'x' WHERE id = 1$$) AS update_with_trigger_after;
ALTER TABLE ord DISABLE TRIGGER zzz_late;
SELECT regress.try($$UPDATE ord SET email = 'Changed@X.org' WHERE id = 1$$) AS disabled;
ALTER TABLE ord ENABLE TRIGGER zzz_late;
SELECT regress.try($$UPDATE ord SET email = 'Changed@X.org' WHERE id = 1$$) AS enabled_again;
ALTER TRIGGER zzz_late ON ord RENAME TO b_late;
SELECT regress.try($$UPDATE ord SET email = 'Changed2@X.org' WHERE id = 1$$) AS renamed;
CREATE TRIGGER zzz_after AFTER INSERT OR UPDATE ON ord FOR EACH ROW EXECUTE FUNCTION ord_norm();
SELECT regress.try($$INSERT INTO ord VALUES (21, 'New@X.org')$$) AS after_trigger;
-- Only a trigger that fires in this write counts: not one of UPDATE OF
-- other columns (until they are set), not a replica-only one in an origin
-- session. A WHEN clause is not evaluated: such a trigger counts.
CREATE TRIGGER zzz_of_note BEFORE UPDATE OF note ON ord FOR EACH ROW EXECUTE FUNCTION ord_norm();
SELECT regress.try($$UPDATE ord SET email = 'Of@X.org' WHERE id = 3$$) AS update_of_other_column;
SELECT regress.try($$UPDATE ord SET note = 'n' WHERE id = 3$$) AS update_of_its_column;
DROP TRIGGER zzz_of_note ON ord;
CREATE TRIGGER zzz_replica BEFORE INSERT OR UPDATE ON ord FOR EACH ROW EXECUTE FUNCTION ord_norm();
ALTER TABLE ord ENABLE REPLICA TRIGGER zzz_replica;
SELECT regress.try($$UPDATE ord SET email = 'Replica@X.org' WHERE id = 3$$) AS replica_only;
DROP TRIGGER zzz_replica ON ord;
CREATE TRIGGER zzz_when BEFORE UPDATE ON ord FOR EACH ROW WHEN (false) EXECUTE FUNCTION ord_norm();
SELECT regress.try($$UPDATE ord SET email = 'When@X.org' WHERE id = 3$$) AS when_clause;
DROP TRIGGER zzz_when ON ord;
-- The order is the one PostgreSQL fires them in, not the names': a session
-- with ignore_system_indexes (any role may set it when it connects) reads
-- the triggers in catalog order, where a_second, made after the index's,
-- comes after it although its name sorts before.
CREATE TRIGGER a_second BEFORE INSERT ON ord FOR EACH ROW EXECUTE FUNCTION ord_norm();
SELECT format('dbname=%s options=''-c ignore_system_indexes=on''', current_database()) AS catalog_order_conn,
       format('dbname=%s options=''-c ignore_system_indexes=off''', current_database()) AS name_order_conn \gset
\c :"catalog_order_conn"
SELECT set_config('pazpaz.encryption_key', :'data_key', false) IS NOT NULL AS data_key_set,
       set_config('pazpaz.index_key', :'index_key', false) IS NOT NULL AS index_key_set;
SELECT current_setting('ignore_system_indexes') AS ignore_system_indexes;
SELECT regress.try($$INSERT INTO ord VALUES (23, 'Heap@X.org')$$) AS catalog_order;
\c :"name_order_conn"
SELECT set_config('pazpaz.encryption_key', :'data_key', false) IS NOT NULL AS data_key_set,
       set_config('pazpaz.index_key', :'index_key', false) IS NOT NULL AS index_key_set;
SELECT regress.try($$INSERT INTO ord VALUES (23, 'Name@X.org')$$) AS name_order;
DROP TRIGGER a_second ON ord;
-- A rename inside a statement that writes the table (from a function in its
-- VALUES list) would change the order the index's trigger checks, not the
-- one that statement fires in (zzz_norm after it): refused then, as ALTER
-- TABLE is, and the INSERT with it. At the top level it is not.
CREATE TRIGGER zzz_norm BEFORE INSERT OR UPDATE ON ord FOR EACH ROW EXECUTE FUNCTION ord_norm();
CREATE FUNCTION ord_rename() RETURNS encrypted_text LANGUAGE plpgsql AS $$
BEGIN
    ALTER TRIGGER zzz_norm ON ord RENAME TO a_norm;
    RETURN 'n'::text::encrypted_text;
END $$;
SELECT regress.try($$INSERT INTO ord VALUES (24, 'Evil@X.org', ord_rename())$$) AS renamed_mid_statement;
SELECT count(*) AS inserted, (SELECT array_agg(tgname ORDER BY tgname) FROM pg_trigger
                               WHERE tgrelid = 'ord'::regclass AND tgname IN ('zzz_norm', 'a_norm')) AS names
  FROM ord WHERE id = 24;
SELECT regress.try($$SELECT ord_rename()$$) AS renamed_alone;
SELECT regress.try($$INSERT INTO ord VALUES (24, 'Evil@X.org')$$) AS renamed_before;
SELECT email_bidx = blind_index_for('ord', 'email_bidx', 'evil@x.org') AS current FROM ord WHERE id = 24;
DROP TRIGGER a_norm ON ord;
DROP FUNCTION ord_rename();
DELETE FROM ord WHERE id = 24;
-- The same for a drop: the statement would still fire the trigger dropped
-- (after the index's), however it is dropped.
CREATE FUNCTION ord_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.email := 'changed@x.org'::text::encrypted_text;
    RETURN NEW;
END $$;
CREATE TRIGGER zzz_change BEFORE INSERT OR UPDATE ON ord FOR EACH ROW EXECUTE FUNCTION ord_change();
CREATE FUNCTION ord_drop() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    DROP TRIGGER zzz_change ON ord;
    RETURN 25;
END $$;
CREATE FUNCTION ord_drop_cascade() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    DROP FUNCTION ord_change() CASCADE;
    RETURN 25;
END $$;
SELECT regress.try($$INSERT INTO ord VALUES (ord_drop(), 'c@x.org')$$) AS dropped_mid_statement;
SELECT regress.try($$INSERT INTO ord VALUES (ord_drop_cascade(), 'c@x.org')$$) AS dropped_with_its_function;
SELECT count(*) AS inserted,
       (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'ord'::regclass AND tgname = 'zzz_change') AS trigger_kept
  FROM ord WHERE id = 25;
SELECT regress.try($$SELECT ord_drop()$$) AS dropped_alone;
SELECT regress.try($$INSERT INTO ord VALUES (25, 'c@x.org')$$) AS dropped_before;
DROP FUNCTION ord_drop(), ord_drop_cascade(), ord_change();
DELETE FROM ord WHERE id = 25;
-- Not the internal triggers an ALTER TABLE of its own drops: foreign keys'
-- (either side) and deferrable constraints'.
CREATE TABLE ord_parent (id int PRIMARY KEY);
INSERT INTO ord_parent SELECT i FROM generate_series(1, 30) i;
ALTER TABLE ord ADD COLUMN pid int REFERENCES ord_parent, ADD CONSTRAINT ord_pid_uq UNIQUE (id, pid) DEFERRABLE;
CREATE TABLE ord_child (cid int REFERENCES ord);
ALTER TABLE ord ALTER COLUMN pid TYPE bigint;
ALTER TABLE ord DROP CONSTRAINT ord_pid_fkey, DROP CONSTRAINT ord_pid_uq;
ALTER TABLE ord DROP COLUMN pid;
ALTER TABLE ord ALTER COLUMN id TYPE bigint;
DROP TABLE ord_child, ord_parent;
-- A CALL that finds the index's trigger in another shape than it makes
-- (disabled here, as for a bulk load) cannot know what writes passed it by:
-- it makes it again and computes every token again.
ALTER TABLE ord DISABLE TRIGGER zz_pazpaz_email_bidx;
UPDATE ord SET email = 'passed@x.org' WHERE id = 4;
ALTER TABLE ord ENABLE REPLICA TRIGGER zz_pazpaz_email_bidx;
UPDATE ord SET email = 'passed2@x.org' WHERE id = 5;
CALL add_blind_index('ord', 'email');
SELECT count(*) FILTER (WHERE email_bidx IS DISTINCT FROM blind_index_for('ord', 'email_bidx', email::text)) AS stale,
       (SELECT tgenabled FROM pg_trigger WHERE tgrelid = 'ord'::regclass AND tgname = 'zz_pazpaz_email_bidx') AS enabled
  FROM ord;
-- ALTER COLUMN … TYPE rewrites every value without firing the trigger: of
-- a source column it is refused (and rolled back); of another column it is
-- not.
SELECT regress.try($$ALTER TABLE ord ALTER COLUMN email TYPE encrypted_text USING lower(email::text)::encrypted_text$$) AS retype_source;
SELECT regress.try($$ALTER TABLE ord ALTER COLUMN id TYPE bigint$$) AS retype_other;
-- So are a retype of the token column, and a drop or rename of either
-- (the trigger names them by name: a column swapped in under the name
-- would keep the old tokens).
SELECT regress.try($$ALTER TABLE ord ALTER COLUMN email_bidx TYPE bytea USING NULL$$) AS retype_token;
SELECT regress.try($$ALTER TABLE ord DROP COLUMN email$$) AS drop_source;
SELECT regress.try($$ALTER TABLE ord RENAME COLUMN email TO email_old$$) AS rename_source;
SELECT regress.try($$ALTER TABLE ord RENAME COLUMN email_bidx TO other_bidx$$) AS rename_token;
SELECT regress.try($$ALTER TABLE ord RENAME COLUMN note TO note2$$) AS rename_other;
ALTER TABLE ord RENAME COLUMN note2 TO note;
-- A trigger disabled and enabled again (a bulk load) let writes pass it by:
-- its comment goes, and the next CALL computes every token again.
ALTER TABLE ord DISABLE TRIGGER ALL;
UPDATE ord SET email = 'loaded@x.org' WHERE id = 6;
ALTER TABLE ord ENABLE TRIGGER ALL;
SELECT obj_description(t.oid, 'pg_trigger') IS NULL AS comment_gone
  FROM pg_trigger t WHERE t.tgrelid = 'ord'::regclass AND t.tgname = 'zz_pazpaz_email_bidx';
CALL add_blind_index('ord', 'email');
SELECT count(*) FILTER (WHERE email_bidx IS DISTINCT FROM blind_index_for('ord', 'email_bidx', email::text)) AS stale FROM ord;
-- The CALL needs the trigger to fire on its own UPDATEs.
SET session_replication_role = replica;
SELECT regress.try($$CALL add_blind_index('ord', 'email')$$) AS replica_session;
RESET session_replication_role;
SELECT count(*) FILTER (WHERE email_bidx IS DISTINCT FROM blind_index_for('ord', 'email_bidx', email::text)) AS stale FROM ord;
-- A table renamed keeps its index (no second one under the new name).
ALTER TABLE ord RENAME TO ord_renamed;
CALL add_blind_index('ord_renamed', 'email');
SELECT indexrelid::regclass AS index FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
 WHERE i.indrelid = 'ord_renamed'::regclass AND a.attname = 'email_bidx';
ALTER TABLE ord_renamed RENAME TO ord;
SELECT count(*) FILTER (WHERE email_bidx = blind_index_for('ord', 'email_bidx', email::text)) AS current, count(*) FROM ord;
-- The trigger's comment lost (pg_dump --no-comments, a tool that clears
-- comments): every token is computed again, since the CALL cannot know
-- whether a walk's second look was done. Here a stale token written with
-- the trigger disabled stands for one such a walk left, and the index is
-- gone as it would be before the walk was done.
DROP INDEX ord_email_bidx;
ALTER TABLE ord DISABLE TRIGGER zz_pazpaz_email_bidx;
UPDATE ord SET email = 'stale@x.org' WHERE id = 2;
ALTER TABLE ord ENABLE TRIGGER zz_pazpaz_email_bidx;
COMMENT ON TRIGGER zz_pazpaz_email_bidx ON ord IS NULL;
SELECT count(*) FILTER (WHERE email_bidx IS DISTINCT FROM blind_index_for('ord', 'email_bidx', email::text)) AS stale FROM ord;
CALL add_blind_index('ord', 'email');
SELECT count(*) FILTER (WHERE email_bidx IS DISTINCT FROM blind_index_for('ord', 'email_bidx', email::text)) AS stale FROM ord;
-- Done: the trigger carries the mark a resume trusts.
SELECT obj_description(t.oid, 'pg_trigger') = 'pazpaz_crypto: this trigger keeps every token current (rows its backfill has not reached yet have none)' AS current_mark,
       (SELECT count(*) FROM pg_indexes WHERE indexname = 'ord_email_bidx') AS indexes
  FROM pg_trigger t WHERE t.tgrelid = 'ord'::regclass AND t.tgname = 'zz_pazpaz_email_bidx';
-- A relation of the index's name made beforehand (anyone with CREATE on the
-- schema can) would make CREATE INDEX IF NOT EXISTS skip the build: the CALL
-- refuses, before anything changes.
CREATE TABLE ord_note_tokens (x int);
SELECT regress.try($$CALL add_match_index('ord', 'note')$$) AS squatted;
SELECT count(*) AS token_columns FROM pg_attribute WHERE attrelid = 'ord'::regclass AND attname = 'note_tokens';
CREATE INDEX ord_note_tokens2 ON ord (id);
DROP TABLE ord_note_tokens;
ALTER INDEX ord_note_tokens2 RENAME TO ord_note_tokens;
SELECT regress.try($$CALL add_match_index('ord', 'note')$$) AS another_index_of_the_name;
DROP INDEX ord_note_tokens;
SET client_min_messages = warning;
CALL add_match_index('ord', 'note');
RESET client_min_messages;
SELECT indexrelid::regclass AS index, pg_get_indexdef(indexrelid) ~ 'USING gin \(note_tokens' AS on_tokens
  FROM pg_index WHERE indrelid = 'ord'::regclass AND indexrelid::regclass::text = 'ord_note_tokens';
DROP TABLE ord;
DROP FUNCTION ord_norm();

-- ---- Rotation of the index key, readers never without an index -----------------
-- 1. Every application sets both keys: pazpaz.index_key (old) and
--    pazpaz.index_key_next (new). 2. A second token column under the next key.
SELECT set_config('pazpaz.index_key_next', :'next_index_key', false) IS NOT NULL AS next_key_set;
SET client_min_messages = warning;
CALL add_blind_index('clients', 'email', normalization => 'lower', token_column => 'email_bidx2', index_key => 'next');
RESET client_min_messages;
-- Writes keep both current; readers use the old column until they switch.
INSERT INTO clients (id, workspace_id, email) VALUES (7001, 1, 'rotating@example.com');
SELECT (SELECT id FROM clients WHERE email_bidx = blind_index_for('clients', 'email_bidx', 'rotating@example.com')) AS old_column,
       (SELECT id FROM clients WHERE email_bidx2 = blind_index_for('clients', 'email_bidx2', 'rotating@example.com')) AS new_column,
       (SELECT count(*) FROM clients WHERE email_bidx = email_bidx2) AS equal_tokens;
-- 3. Readers switch to email_bidx2; 4. the old index goes (with its unique
-- index: recreate that on the new column first).
CREATE UNIQUE INDEX clients_email_per_workspace2 ON clients (workspace_id, email_bidx2);
CALL drop_blind_index('clients', 'email');
-- 5. Applications move the new key to pazpaz.index_key and unset the next
-- one; the index finds its key by fingerprint in either setting.
SELECT set_config('pazpaz.index_key', :'next_index_key', false) IS NOT NULL AS new_key_current;
RESET pazpaz.index_key_next;
INSERT INTO clients (id, workspace_id, email) VALUES (7002, 1, 'after@example.com');
SELECT id FROM clients WHERE email_bidx2 = blind_index_for('clients', 'email_bidx2', 'AFTER@example.com');
SELECT count(*) FILTER (WHERE email_bidx2 IS NOT DISTINCT FROM blind_index(email::text, 'public.clients.email', 'lower')) AS correct,
       count(*) AS total
FROM clients;

-- ---- Per-tenant contexts ------------------------------------------------------------
CREATE TABLE tenant_notes (id int PRIMARY KEY, tenant int, body encrypted_text);
INSERT INTO tenant_notes SELECT i, i % 2, 'same text' FROM generate_series(1, 4) i;
CALL add_match_index('tenant_notes', 'body', context => 'tenant-shared');
SELECT count(*) FILTER (WHERE body_tokens = blind_tokens(body::text, 'tenant-shared', 'lower')) AS under_that_context,
       count(*) FILTER (WHERE body_tokens = blind_tokens(body::text, 'public.tenant_notes.body', 'lower')) AS under_the_default
FROM tenant_notes;

-- ---- Dropping undoes it ---------------------------------------------------------------
CALL drop_match_index('clients', 'last_name');
CALL drop_blind_index('clients', 'email', 'email_bidx2');
CALL drop_blind_index('clients', 'notes');
CALL drop_match_index('clients', 'phone');
SELECT count(*) AS search_columns FROM pg_attribute
WHERE attrelid = 'clients'::regclass AND NOT attisdropped AND (attname LIKE '%_bidx%' OR attname LIKE '%_tokens');
SELECT count(*) AS search_triggers FROM pg_trigger WHERE tgrelid = 'clients'::regclass;
INSERT INTO clients (id, workspace_id, email) VALUES (7003, 1, 'plain@example.com');

DROP TABLE clients, tenant_notes;

-- ---- Hostile search_path ----------------------------------------------------------
-- As for rotate_column (search_path.sql): a role with CREATE on public plants
-- look-alikes of what the procedures, their generated SQL and the lookups
-- use — operators, format()/concat() overloads, count(*)/max(tid), domains —
-- in public and in its own schema; a superuser then adds, uses and drops
-- indexes with those schemas first. Nothing of the planter's may run.
CREATE ROLE planter;
GRANT CREATE ON SCHEMA public TO planter;
CREATE SCHEMA planter AUTHORIZATION planter;
GRANT USAGE ON SCHEMA regress TO planter;
SET ROLE planter;
SET search_path = pg_catalog, pg_temp;
CREATE TABLE public.plant_log (what text);
GRANT INSERT ON public.plant_log TO PUBLIC;
GRANT USAGE ON SCHEMA planter TO PUBLIC;
CREATE FUNCTION public.plant_note(what pg_catalog.text) RETURNS pg_catalog.bool
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN INSERT INTO public.plant_log VALUES (what); RETURN true; END $$;
DO $plant$
DECLARE s text; o record; f text; t text; i int := 0;
BEGIN
    FOREACH s IN ARRAY ARRAY['public', 'planter'] LOOP
        -- Every binary operator of pg_catalog over the types the procedures
        -- compute with (regress.catalog_operators), and the array operators
        -- of the match tokens.
        FOR o IN SELECT * FROM regress.catalog_operators()
                  UNION ALL
                 SELECT * FROM (VALUES ('=', 'oid', 'regtype', 'bool'), ('=', 'oid', 'regclass', 'bool'),
                                       ('@>', 'int4[]', 'int4[]', 'bool'), ('&&', 'int4[]', 'int4[]', 'bool'),
                                       ('||', 'xid[]', 'xid', 'xid[]'))
                        v(op, l, r, res)
                  ORDER BY 1, 2, 3 LOOP
            PERFORM regress.plant_operator(s, o.op, o.l, o.r, o.res, 'public.plant_note');
        END LOOP;
        FOREACH f IN ARRAY ARRAY['format(text, name, name)', 'format(text, name, name, name)', 'format(text, text, text)',
                                 'format(text, name)', 'format(text, text)', 'format(text, text, text, text, text)',
                                 'concat(name, text)', 'concat(text, text)', 'concat(name, text, text)',
                                 'octet_length(text)', 'convert_to(text, text)', 'unnest(text[])'] LOOP
            i := i + 1;
            EXECUTE format($f$
                CREATE FUNCTION %1$I.%2$s RETURNS pg_catalog.text
                LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $b$
                BEGIN PERFORM public.plant_note(%3$L); RETURN NULL; END $b$
            $f$, s, regexp_replace(regexp_replace(f, '\((.*)\)', '(\1)'), '(\w+)(?=[,)])', 'pg_catalog.\1', 'g'), s || '.' || f);
        END LOOP;
        EXECUTE format($f$
            CREATE FUNCTION %1$I.plant_count(c pg_catalog.int8) RETURNS pg_catalog.int8
            LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $b$
            BEGIN PERFORM public.plant_note(%2$L); RETURN c OPERATOR(pg_catalog.+) 1; END $b$;
            CREATE AGGREGATE %1$I.count(*) (SFUNC = %1$I.plant_count, STYPE = pg_catalog.int8, INITCOND = '0');
        $f$, s, s || '.count(*)');
        FOREACH t IN ARRAY ARRAY['text', 'tid', 'oid', 'name', 'int4', 'int8', 'bytea'] LOOP
            EXECUTE format('CREATE DOMAIN %I.%I AS pg_catalog.%I CHECK (public.plant_note(%L))', s, t, t, format('domain %s.%s', s, t));
        END LOOP;
    END LOOP;
END
$plant$;
-- Look-alikes of the documented calls, whose literal arguments PostgreSQL
-- types only when it picks a function (it prefers text to regclass or
-- name): the extension's own text overloads make the same argument types
-- impossible beside them in public, and other types lose to them. In the
-- planter's schema (first in the search_path below) the same types are
-- possible, and a schema-qualified call never looks there.
SELECT regress.try($$CREATE FUNCTION public.blind_index_for(text, text, text) RETURNS bytea LANGUAGE sql AS 'SELECT NULL::bytea'$$) AS same_types_in_public;
SELECT regress.try($$CREATE PROCEDURE public.add_blind_index(tbl text, col text, normalization text DEFAULT 'none', bits int DEFAULT 256, batch_size int DEFAULT 1000, context text DEFAULT NULL, token_column text DEFAULT NULL, index_key text DEFAULT 'current') LANGUAGE sql AS 'SELECT 1'$$) AS same_types_in_public;
DO $plant$
DECLARE s text; f text; i int := 100;
BEGIN
    FOREACH s IN ARRAY ARRAY['public', 'planter'] LOOP
        FOREACH f IN ARRAY ARRAY['blind_index_for(name, name, name) bytea', 'blind_index_for(varchar, varchar, varchar) bytea',
                                 'blind_index_for(regclass, name, name) bytea', 'blind_search_tokens_for(name, text, text) int4[]',
                                 'blind_search_tokens_for(varchar, varchar, varchar) int4[]', 'blind_equals(bytea, varchar, text, text) bool',
                                 'blind_equals(bytea, name, name, name) bool', 'blind_contains(int4[], name, text, text) bool',
                                 'blind_contains(anyarray, varchar, varchar, varchar) bool'] LOOP
            i := i + 1;
            EXECUTE format($f$
                CREATE FUNCTION %1$I.%2$s RETURNS pg_catalog.%3$s
                LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $b$
                BEGIN PERFORM public.plant_note(%4$L); RETURN NULL; END $b$
            $f$, s, regexp_replace(regexp_replace(f, ' \S+$', ''), '(\w+(\[\])?)(?=[,)])', 'pg_catalog.\1', 'g'),
               regexp_replace(f, '^.* ', ''), s || '.' || regexp_replace(f, ' \S+$', ''));
        END LOOP;
        FOREACH f IN ARRAY ARRAY['add_blind_index(tbl varchar, col varchar, normalization text DEFAULT NULL, batch_size int DEFAULT NULL)',
                                 'add_match_index(tbl name, col name, batch_size int DEFAULT NULL)',
                                 'drop_blind_index(tbl varchar, col varchar)', 'drop_match_index(tbl name, col name)'] LOOP
            EXECUTE format($f$
                CREATE PROCEDURE %1$I.%2$s
                LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $b$
                BEGIN PERFORM public.plant_note(%3$L); END $b$
            $f$, s, f, s || '.' || f);
        END LOOP;
    END LOOP;
    -- Exact look-alikes where the planter may create them.
    CREATE FUNCTION planter.blind_equals(pg_catalog.bytea, pg_catalog.text, pg_catalog.text, pg_catalog.text) RETURNS pg_catalog.bool
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $b$ BEGIN PERFORM public.plant_note('planter.blind_equals'); RETURN true; END $b$;
    CREATE FUNCTION planter.blind_contains(pg_catalog.int4[], pg_catalog.text, pg_catalog.text, pg_catalog.text) RETURNS pg_catalog.bool
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $b$ BEGIN PERFORM public.plant_note('planter.blind_contains'); RETURN true; END $b$;
END
$plant$;
RESET search_path;
RESET ROLE;
SELECT count(*) > 40 AS planted FROM pg_proc WHERE proname LIKE 'plant_%' OR pronamespace = 'planter'::regnamespace;
CREATE TABLE sp_people (id int PRIMARY KEY, name encrypted_text);
INSERT INTO sp_people SELECT i, 'Person ' || i FROM generate_series(1, 50) i;
SET search_path = planter, public, pg_catalog;
SET client_min_messages = warning;
CALL public.add_blind_index('public.sp_people', 'name', normalization => 'lower', batch_size => 20);
CALL public.add_match_index('public.sp_people', 'name', batch_size => 20);
RESET client_min_messages;
INSERT INTO public.sp_people VALUES (51, 'Person 51');
SELECT id FROM public.sp_people WHERE name_bidx OPERATOR(pg_catalog.=) public.blind_index_for('public.sp_people', 'name_bidx', 'PERSON 51');
SELECT pg_catalog.count(*) AS with_son_2 FROM public.sp_people
WHERE name_tokens OPERATOR(pg_catalog.@>) public.blind_search_tokens_for('public.sp_people', 'name_tokens', 'son 2');
-- The documented lookups: the extension's matchers, schema-qualified, with
-- literal arguments; the planner still uses the indexes.
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM public.sp_people WHERE public.blind_equals(name_bidx, 'public.sp_people', 'name_bidx', 'PERSON 51');
SELECT id FROM public.sp_people WHERE public.blind_equals(name_bidx, 'public.sp_people', 'name_bidx', 'PERSON 51');
EXPLAIN (COSTS OFF) SELECT id FROM public.sp_people
WHERE public.blind_contains(name_tokens, 'public.sp_people', 'name_tokens', 'son 2')
  AND name::pg_catalog.text OPERATOR(pg_catalog.~~*) '%son 2%';
SELECT pg_catalog.count(*) AS with_son_2 FROM public.sp_people
WHERE public.blind_contains(name_tokens, 'public.sp_people', 'name_tokens', 'son 2')
  AND name::pg_catalog.text OPERATOR(pg_catalog.~~*) '%son 2%';
SELECT pg_catalog.length(public.blind_index_for('public.sp_people', 'name_bidx', 'person 51')) AS blind_index_for_literal,
       pg_catalog.cardinality(public.blind_search_tokens_for('public.sp_people', 'name_tokens', 'son 2')) AS search_tokens_for_literal;
-- The same under the default search_path ("$user", public), unqualified.
RESET search_path;
SELECT id FROM sp_people WHERE blind_equals(name_bidx, 'sp_people', 'name_bidx', 'PERSON 51');
SELECT count(*) AS with_son_2 FROM sp_people WHERE blind_contains(name_tokens, 'sp_people', 'name_tokens', 'son 2') AND name::text ILIKE '%son 2%';
SELECT length(blind_index_for('sp_people', 'name_bidx', 'person 51')) AS blind_index_for_literal;
RESET enable_seqscan;
SET search_path = planter, public, pg_catalog;
CALL public.drop_blind_index('public.sp_people', 'name');
CALL public.drop_match_index('public.sp_people', 'name');
RESET search_path;
SELECT what FROM public.plant_log;
-- Why the matchers: a bare @> written in the query is resolved through the
-- search_path, and the planter's exact public.@>(int4[], int4[]) beats
-- pg_catalog's @>(anyarray, anyarray) even with pg_catalog searched first.
SET client_min_messages = warning;
CALL add_match_index('sp_people', 'name');
RESET client_min_messages;
SELECT count(*) AS bare_operator FROM sp_people WHERE name_tokens @> blind_search_tokens_for('sp_people', 'name_tokens', 'son 2');
SELECT DISTINCT what FROM public.plant_log;
DROP TABLE sp_people;
DROP OWNED BY planter;
REVOKE CREATE ON SCHEMA public FROM planter;
REVOKE USAGE ON SCHEMA regress FROM planter;
DROP ROLE planter;
RESET pazpaz.index_key;
RESET pazpaz.encryption_key;
