-- Descriptions of every SQL object, for \dx+ and \df+ (names schema-qualified,
-- so nothing depends on the search_path CREATE EXTENSION runs with).
COMMENT ON TYPE @extschema@.encrypted_text IS
  'Text encrypted with AES-256-GCM under the session''s key (pazpaz.encryption_key / pazpaz.encryption_keys); optional typmod = maximum plaintext length in characters';
COMMENT ON FUNCTION @extschema@.encrypt_field(pg_catalog.text) IS
  'Encrypts text with the session''s write key: bytea nonce(12) || ciphertext || tag(16)';
COMMENT ON FUNCTION @extschema@.encrypt_field(pg_catalog.text, pg_catalog.text) IS
  'encrypt_field(plaintext, aad): as encrypt_field, binding the ciphertext to associated data (e.g. ''table.column:'' || id)';
COMMENT ON FUNCTION @extschema@.decrypt_field(pg_catalog.bytea) IS
  'Decrypts a bytea made by encrypt_field with the session''s write key';
COMMENT ON FUNCTION @extschema@.decrypt_field(pg_catalog.bytea, pg_catalog.text) IS
  'decrypt_field(ciphertext, aad): decrypts a value made by encrypt_field(plaintext, aad) with the same aad';
COMMENT ON FUNCTION @extschema@.encrypt_field_versioned(pg_catalog.text) IS
  'Encrypts text under the write version: jsonb {"version", "ciphertext"}';
COMMENT ON FUNCTION @extschema@.encrypt_field_versioned(pg_catalog.text, pg_catalog.text) IS
  'encrypt_field_versioned(plaintext, key_version): encrypts under the given key version';
COMMENT ON FUNCTION @extschema@.encrypt_field_versioned(pg_catalog.text, pg_catalog.text, pg_catalog.text) IS
  'encrypt_field_versioned(plaintext, key_version, aad): encrypts under the given version with associated data';
COMMENT ON FUNCTION @extschema@.decrypt_field_versioned(pg_catalog.jsonb) IS
  'Decrypts a versioned envelope with the key its "version" names';
COMMENT ON FUNCTION @extschema@.decrypt_field_versioned(pg_catalog.jsonb, pg_catalog.text) IS
  'decrypt_field_versioned(envelope, aad): decrypts an envelope made with associated data';
COMMENT ON FUNCTION @extschema@.reencrypt_field_versioned(pg_catalog.jsonb) IS
  'Re-encrypts an envelope under the write version; returns it unchanged when already there and authentic (a relabelled one is re-encrypted from the loaded key it authenticates under)';
COMMENT ON FUNCTION @extschema@.reencrypt_field_versioned(pg_catalog.jsonb, pg_catalog.text) IS
  'reencrypt_field_versioned(envelope, key_version): re-encrypts under the given version';
COMMENT ON FUNCTION @extschema@.reencrypt_field_versioned(pg_catalog.jsonb, pg_catalog.text, pg_catalog.text) IS
  'reencrypt_field_versioned(envelope, key_version, aad): re-encrypts an envelope made with associated data';
COMMENT ON FUNCTION @extschema@.verify_field_versioned(pg_catalog.jsonb) IS
  'Whether a versioned envelope authenticates under the key its "version" names (false when that version is not loaded); the label itself is not authenticated, so check this before dropping a key';
COMMENT ON FUNCTION @extschema@.verify_field_versioned(pg_catalog.jsonb, pg_catalog.text) IS
  'verify_field_versioned(envelope, aad): as verify_field_versioned, for an envelope made with associated data';
COMMENT ON FUNCTION @extschema@.key_version(pg_catalog.jsonb) IS
  'Key version of a versioned envelope; needs no key; IMMUTABLE, so it can back an index';
COMMENT ON FUNCTION @extschema@.key_version(@extschema@.encrypted_text) IS
  'Key version in an encrypted_text header; needs no key; IMMUTABLE, so it can back an index';
COMMENT ON FUNCTION @extschema@.reencrypt(@extschema@.encrypted_text) IS
  'Re-encrypts an encrypted_text value under the write version; returns it unchanged when already there';
COMMENT ON FUNCTION @extschema@.generate_encryption_key() IS
  'A new AES-256 key: base64 of 32 bytes from the operating system''s CSPRNG';
COMMENT ON FUNCTION @extschema@.encryption_status() IS
  'Loaded key versions of this session, which one writes, an 8-hex-digit fingerprint of each, and whether it came wrapped and under which key-encryption key (never a key)';
COMMENT ON FUNCTION @extschema@.encrypted_text(pg_catalog.text, pg_catalog.int4, pg_catalog.bool) IS
  'Cast text to encrypted_text(n): encrypts with the write key, enforcing the length limit';
COMMENT ON FUNCTION @extschema@.encrypted_text(@extschema@.encrypted_text, pg_catalog.int4, pg_catalog.bool) IS
  'Length coercion to encrypted_text(n); decrypts only when the byte length cannot prove the value fits';
COMMENT ON FUNCTION @extschema@.encrypted_text(pg_catalog.bytea) IS
  'Cast bytea to encrypted_text: the raw envelope, checked for structure; needs no key';
COMMENT ON FUNCTION @extschema@.text(@extschema@.encrypted_text) IS
  'Cast encrypted_text to text: decrypts with the session''s key for the value''s version';
COMMENT ON FUNCTION @extschema@.encrypted_text_in(pg_catalog.cstring, pg_catalog.oid, pg_catalog.int4) IS 'encrypted_text input: encrypts (or reads the envelope text form when pazpaz.encrypted_text_io = envelope)';
COMMENT ON FUNCTION @extschema@.encrypted_text_out(@extschema@.encrypted_text) IS 'encrypted_text output: decrypts (or writes the envelope text form when pazpaz.encrypted_text_io = envelope)';
COMMENT ON FUNCTION @extschema@.encrypted_text_recv(pg_catalog.internal, pg_catalog.oid, pg_catalog.int4) IS 'encrypted_text binary input: the envelope; needs no key';
COMMENT ON FUNCTION @extschema@.encrypted_text_send(@extschema@.encrypted_text) IS 'encrypted_text binary output: the envelope; needs no key';
COMMENT ON FUNCTION @extschema@.encrypted_text_typmod_in(pg_catalog.cstring[]) IS 'encrypted_text(n) modifier input';
COMMENT ON FUNCTION @extschema@.encrypted_text_typmod_out(pg_catalog.int4) IS 'encrypted_text(n) modifier output';
COMMENT ON PROCEDURE @extschema@.rotate_column(pg_catalog.regclass, pg_catalog.name, pg_catalog.int4, pg_catalog.text) IS
  'Re-encrypts one jsonb-envelope or encrypted_text column to the write (or given) key version in batches, committing after each; resumable';
COMMENT ON PROCEDURE @extschema@.rotate_column(pg_catalog.text, pg_catalog.text, pg_catalog.int4, pg_catalog.text) IS
  'Re-encrypts one jsonb-envelope or encrypted_text column to the write (or given) key version in batches, committing after each; resumable';
COMMENT ON PROCEDURE @extschema@.rotate_column(pg_catalog.regclass, pg_catalog.text, pg_catalog.int4, pg_catalog.text) IS
  'Re-encrypts one jsonb-envelope or encrypted_text column to the write (or given) key version in batches, committing after each; resumable';
COMMENT ON FUNCTION @extschema@.reencrypt(@extschema@.encrypted_text, pg_catalog.text) IS
  'reencrypt(value, key_version): re-encrypts an encrypted_text value under the given key version';
COMMENT ON CAST (pg_catalog.text AS @extschema@.encrypted_text) IS
  'Assignment cast: encrypts with the session''s write key';
COMMENT ON CAST (pg_catalog.varchar AS @extschema@.encrypted_text) IS
  'Assignment cast: encrypts with the session''s write key';
COMMENT ON CAST (@extschema@.encrypted_text AS pg_catalog.text) IS
  'Assignment cast: decrypts with the session''s key for the value''s version';
COMMENT ON CAST (@extschema@.encrypted_text AS pg_catalog.varchar) IS
  'Assignment cast: decrypts with the session''s key for the value''s version';
COMMENT ON CAST (@extschema@.encrypted_text AS @extschema@.encrypted_text) IS
  'Length coercion for encrypted_text(n)';
COMMENT ON CAST (@extschema@.encrypted_text AS pg_catalog.bytea) IS
  'Explicit cast: the raw envelope, no key needed';
COMMENT ON CAST (pg_catalog.bytea AS @extschema@.encrypted_text) IS
  'Explicit cast: a raw envelope, checked for structure, no key needed';
-- Search on encrypted columns (src/search.rs, sql/search.sql).
COMMENT ON FUNCTION @extschema@.blind_index(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.int4) IS
  'blind_index(value, context, normalization, bits): HMAC-SHA-256 of the normalized value under the key derived from pazpaz.index_key for context, truncated to bits (1-256)';
COMMENT ON FUNCTION @extschema@.blind_index(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.int4, pg_catalog.text) IS
  'blind_index(value, context, normalization, bits, key_fingerprint): under the index key setting whose key has this fingerprint (index key rotation)';
COMMENT ON FUNCTION @extschema@.blind_tokens(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.int4) IS
  'Keyed trigram tokens of a value to index (sorted, distinct int4 in a space of 2^bits; empty below 3 characters), for a GIN index and @>';
COMMENT ON FUNCTION @extschema@.blind_tokens(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.int4, pg_catalog.text) IS
  'blind_tokens(value, context, normalization, bits, key_fingerprint): under the index key setting whose key has this fingerprint';
COMMENT ON FUNCTION @extschema@.blind_search_tokens(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.int4) IS
  'Tokens of a substring query (at least 3 characters after normalization, else 22023): tokens @> blind_search_tokens(query, …), then recheck';
COMMENT ON FUNCTION @extschema@.blind_index_for(pg_catalog.regclass, pg_catalog.text, pg_catalog.text) IS
  'blind_index_for(tbl, token_column, value): the blind index of value with the context, normalization, bits and key of the index add_blind_index made';
COMMENT ON FUNCTION @extschema@.blind_search_tokens_for(pg_catalog.regclass, pg_catalog.text, pg_catalog.text) IS
  'blind_search_tokens_for(tbl, token_column, query): the query tokens with the parameters and key of the index add_match_index made';
COMMENT ON FUNCTION @extschema@.blind_index_for(pg_catalog.text, pg_catalog.text, pg_catalog.text) IS
  'blind_index_for(tbl, token_column, value) with the table named by text: the one a literal table name picks, so a look-alike in a writable schema cannot take the call over';
COMMENT ON FUNCTION @extschema@.blind_search_tokens_for(pg_catalog.text, pg_catalog.text, pg_catalog.text) IS
  'blind_search_tokens_for(tbl, token_column, query) with the table named by text (see blind_index_for(text, text, text))';
COMMENT ON FUNCTION @extschema@.blind_equals(pg_catalog.bytea, pg_catalog.text, pg_catalog.text, pg_catalog.text) IS
  'blind_equals(token_column, tbl, token_column_name, value): token = blind_index_for(tbl, name, value) with pg_catalog''s =, inlined (the B-tree is used); no operator resolved through the search_path';
COMMENT ON FUNCTION @extschema@.blind_contains(pg_catalog.int4[], pg_catalog.text, pg_catalog.text, pg_catalog.text) IS
  'blind_contains(tokens_column, tbl, token_column_name, query): tokens @> blind_search_tokens_for(tbl, name, query) with pg_catalog''s @>, inlined (the GIN index is used); recheck the candidates';
COMMENT ON TABLE @extschema@.search_indexes IS
  'The search indexes added by add_blind_index/add_match_index, per table and token column: the trigger and the lookups use a definition only when it is registered here for their own table';
COMMENT ON FUNCTION @extschema@.search_index_register(pg_catalog.regclass, pg_catalog.text[]) IS
  'Internal to add_blind_index/add_match_index: registers the definition of the table''s own search trigger, refusing a context of another owner''s table';
COMMENT ON FUNCTION @extschema@.search_index_unregister(pg_catalog.regclass, pg_catalog.name) IS
  'Internal to drop_blind_index/drop_match_index: forgets an index whose trigger is gone';
COMMENT ON FUNCTION @extschema@.citus_table_keys(pg_catalog.regclass) IS
  'Internal to rotate_column and add_blind_index/add_match_index: whether a table is a Citus table, and its primary key columns for their batches';
COMMENT ON FUNCTION @extschema@.rotation_table_state(pg_catalog.regclass) IS
    'Internal (rotate_column): a table''s largest heap in blocks, its files, whether triggers, rules or foreign tables may keep an UPDATE from writing a row as asked, and its inheritance tree.';
COMMENT ON FUNCTION @extschema@.rotation_trigger_grantee(pg_catalog.regclass) IS
    'Internal (rotate_column, add_blind_index, add_match_index): the first role other than its owner that holds TRIGGER on a table, its partitions or children, or its ancestors; NULL when none does.';
COMMENT ON FUNCTION @extschema@.rotation_lock(pg_catalog.regclass) IS
    'Internal (rotate_column, add_blind_index, add_match_index): locks the table''s schema (ACCESS SHARE, so that ALTER SCHEMA ... RENAME waits for the batch), then the table and its partitions or children (ROW EXCLUSIVE) by OID, and returns its name then, schema-qualified and quoted; NULL, with nothing locked, when it is gone or the current user may not UPDATE it; an error (42501) when the table or one of its partitions or children is owned by another role than the current user.';
COMMENT ON FUNCTION @extschema@.rotation_lock_table(pg_catalog.regclass) IS
    'Internal (rotate_column): rotation_lock, raising the reason instead of returning NULL.';
COMMENT ON FUNCTION @extschema@.take_mislabelled_count() IS
    'Internal (rotate_column): how many envelopes labelled with their target version were re-encrypted from another key in this session since the last call, which resets it.';
COMMENT ON FUNCTION @extschema@.rotation_table_writes(pg_catalog.regclass) IS
    'Internal (rotate_column): the rows of the table (not its children) this backend has inserted, updated or deleted since it last reported its statistics (never during a CALL), aborted subtransactions included; NULL when track_counts is off.';
COMMENT ON FUNCTION @extschema@.rotation_table_runs_code(pg_catalog.regclass) IS
    'Internal (rotate_column): whether an UPDATE of the table may run code other than PostgreSQL''s own and this extension''s, judged to fail closed: true unless the table is plain (no partitions, inheritance, row security, CHECK, exclusion or foreign key constraints, generated columns) and its indexes use no function but this extension''s.';
COMMENT ON FUNCTION @extschema@.rotation_open_writers(pg_catalog.xid8) IS
    'Internal (rotate_column): how many transactions with IDs below the given one are still open, prepared ones included.';
COMMENT ON FUNCTION @extschema@.rotation_write_xid() IS
    'Internal (rotate_column): the transaction ID the current transaction or subtransaction writes rows with, NULL while it has none.';
COMMENT ON FUNCTION @extschema@.search_index_binding(pg_catalog.regclass, pg_catalog.text[]) IS
  'Internal to add_blind_index/add_match_index on Citus tables: the binding of an index definition to the table''s owner (HMAC under the index key), which the trigger verifies on every node';
COMMENT ON FUNCTION @extschema@.search_lookup_unplanned_exact(pg_catalog.text) IS
  'Internal (Citus): stands in for a blind_index_for whose value was not known when its query was planned; carries no value and raises';
COMMENT ON FUNCTION @extschema@.search_lookup_unplanned_match(pg_catalog.text) IS
  'Internal (Citus): stands in for a blind_search_tokens_for whose value was not known when its query was planned; carries no value and raises';
COMMENT ON FUNCTION @extschema@.index_key_status() IS
  'Index key settings that are set, each with an 8-hex-digit fingerprint of its key (never a key)';
COMMENT ON FUNCTION @extschema@.search_index_check(pg_catalog.text, pg_catalog.text, pg_catalog.int4, pg_catalog.text) IS
  'Internal to add_blind_index/add_match_index: checks parameters and returns the fingerprint of the index key to build with';
COMMENT ON FUNCTION @extschema@.blind_index_trigger() IS
  'Trigger of add_blind_index/add_match_index: keeps a token column current (its arguments are the index definition); fails the write without the keys';
COMMENT ON FUNCTION @extschema@.search_backfill_exact(pg_catalog.oid, pg_catalog.text, anyelement) IS
  'Internal to add_blind_index: the blind index the trigger of the table''s search index computes for a source value (its first walk)';
COMMENT ON FUNCTION @extschema@.search_backfill_match(pg_catalog.oid, pg_catalog.text, anyelement) IS
  'Internal to add_match_index: the match tokens the trigger of the table''s search index computes for a source value (its first walk)';
COMMENT ON FUNCTION @extschema@.search_batch_blocks(pg_catalog.regclass, pg_catalog.int4, pg_catalog.int8) IS
  'Internal to add_blind_index/add_match_index: the table''s size in blocks and the blocks of one batch';
COMMENT ON FUNCTION @extschema@.search_walk_mark() IS
  'Internal to add_blind_index/add_match_index: the comment on a search index''s trigger while its backfill is not done and tokens may be stale';
COMMENT ON FUNCTION @extschema@.search_current_mark() IS
  'Internal to add_blind_index/add_match_index: the comment on a search index''s trigger once it keeps every token current';
COMMENT ON FUNCTION @extschema@.search_index_of(pg_catalog.regclass, pg_catalog.name, pg_catalog.text) IS
  'Internal to add_blind_index/add_match_index: the B-tree or GIN index of a token column, if it has one';
COMMENT ON FUNCTION @extschema@.search_batch_begin(pg_catalog.regclass, pg_catalog.text, pg_catalog.text) IS
  'Internal to add_blind_index/add_match_index: locks the table by OID at the start of a transaction of the CALL, checks it still has the name the CALL writes to, and turns row-level security off for the transaction';
COMMENT ON FUNCTION @extschema@.search_trigger_after(pg_catalog.regclass, pg_catalog.name) IS
  'Internal to add_blind_index/add_match_index: a BEFORE row trigger of the table that would fire after the search index''s trigger';
COMMENT ON FUNCTION @extschema@.search_table_runs_code(pg_catalog.regclass, pg_catalog.name) IS
  'Internal to add_blind_index/add_match_index: whether an UPDATE of the table runs a trigger (other than the index''s own) or rule';
COMMENT ON PROCEDURE @extschema@.search_index_add(pg_catalog.text, pg_catalog.regclass, pg_catalog.name, pg_catalog.text, pg_catalog.int4, pg_catalog.int4, pg_catalog.text, pg_catalog.name, pg_catalog.text) IS
  'Internal to add_blind_index/add_match_index';
COMMENT ON PROCEDURE @extschema@.add_blind_index(pg_catalog.regclass, pg_catalog.name, pg_catalog.text, pg_catalog.int4, pg_catalog.int4, pg_catalog.text, pg_catalog.name, pg_catalog.text) IS
  'Adds an exact-match blind index to an encrypted column: <col>_bidx bytea, its trigger, a batched resumable backfill, a B-tree index';
COMMENT ON PROCEDURE @extschema@.add_match_index(pg_catalog.regclass, pg_catalog.name, pg_catalog.text, pg_catalog.int4, pg_catalog.int4, pg_catalog.text, pg_catalog.name, pg_catalog.text) IS
  'Adds a substring match index to an encrypted column: <col>_tokens int4[], its trigger, a batched resumable backfill, a GIN index';
COMMENT ON PROCEDURE @extschema@.search_index_drop(pg_catalog.text, pg_catalog.regclass, pg_catalog.name, pg_catalog.name) IS
  'Internal to drop_blind_index/drop_match_index';
COMMENT ON PROCEDURE @extschema@.drop_blind_index(pg_catalog.regclass, pg_catalog.name, pg_catalog.name) IS
  'Drops a blind index added by add_blind_index: its trigger and token column (and every index on it)';
COMMENT ON PROCEDURE @extschema@.drop_match_index(pg_catalog.regclass, pg_catalog.name, pg_catalog.name) IS
  'Drops a match index added by add_match_index: its trigger and token column (and every index on it)';
COMMENT ON PROCEDURE @extschema@.add_blind_index(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.int4, pg_catalog.int4, pg_catalog.text, pg_catalog.text, pg_catalog.text) IS
  'add_blind_index with the table and columns named by text: the one a literal call picks, so a look-alike in a writable schema cannot take it over';
COMMENT ON PROCEDURE @extschema@.add_blind_index(pg_catalog.regclass, pg_catalog.text, pg_catalog.text, pg_catalog.int4, pg_catalog.int4, pg_catalog.text, pg_catalog.text, pg_catalog.text) IS
  'add_blind_index with the table and columns named by text: the one a literal call picks, so a look-alike in a writable schema cannot take it over';
COMMENT ON PROCEDURE @extschema@.add_match_index(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.int4, pg_catalog.int4, pg_catalog.text, pg_catalog.text, pg_catalog.text) IS
  'add_match_index with the table and columns named by text (see add_blind_index(text, …))';
COMMENT ON PROCEDURE @extschema@.add_match_index(pg_catalog.regclass, pg_catalog.text, pg_catalog.text, pg_catalog.int4, pg_catalog.int4, pg_catalog.text, pg_catalog.text, pg_catalog.text) IS
  'add_match_index with the table and columns named by text (see add_blind_index(text, …))';
COMMENT ON PROCEDURE @extschema@.drop_blind_index(pg_catalog.text, pg_catalog.text, pg_catalog.text) IS
  'drop_blind_index with the table and columns named by text (see add_blind_index(text, …))';
COMMENT ON PROCEDURE @extschema@.drop_blind_index(pg_catalog.regclass, pg_catalog.text, pg_catalog.text) IS
  'drop_blind_index with the table and columns named by text (see add_blind_index(text, …))';
COMMENT ON PROCEDURE @extschema@.drop_match_index(pg_catalog.text, pg_catalog.text, pg_catalog.text) IS
  'drop_match_index with the table and columns named by text (see add_blind_index(text, …))';
COMMENT ON PROCEDURE @extschema@.drop_match_index(pg_catalog.regclass, pg_catalog.text, pg_catalog.text) IS
  'drop_match_index with the table and columns named by text (see add_blind_index(text, …))';
COMMENT ON FUNCTION @extschema@.set_keys(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.bool, pg_catalog.text) IS
    'Sets pazpaz.encryption_key, pazpaz.encryption_keys, pazpaz.encryption_key_version (and pazpaz.index_key) for the session, or with is_local for the transaction and every Citus node it uses; NULL leaves a setting as it is, '''' unsets it';
COMMENT ON FUNCTION @extschema@.forward_keys() IS
    'Sets the session''s key settings for this transaction on every Citus node it uses (rotate_column''s batches on Citus tables); no effect without Citus';
