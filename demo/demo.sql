\pset footer off
\echo
\echo '== pazpaz_crypto: AES-256-GCM field encryption inside PostgreSQL =='
CREATE EXTENSION pazpaz_crypto;

\echo
\echo '-- 1. Keys are session state. The application generates a key once and'
\echo '--    hands it to each session with a parameterised set_config(); here the'
\echo '--    server generates throwaway keys, so no key is ever in a statement.'
CREATE TEMP TABLE demo_keys AS SELECT generate_encryption_key() AS k1, generate_encryption_key() AS k2;
SELECT set_config('pazpaz.encryption_key', k1, false) AS "set_config(...)" FROM demo_keys;
SHOW pazpaz.encryption_key;
SELECT * FROM encryption_status();

\echo
\echo '-- 2. The application''s field functions, same byte format (nonce || ciphertext || tag):'
SELECT encrypt_field('Patient has diabetes') AS ciphertext;
SELECT decrypt_field(encrypt_field('Patient has diabetes')) AS round_trip,
       octet_length(encrypt_field('Patient has diabetes')) AS bytes;
SELECT encrypt_field_versioned('john@example.com') AS versioned_envelope;

\echo
\echo '-- 3. An encrypted column, declared in DDL, read and written as text:'
CREATE TABLE clients (
    id serial PRIMARY KEY,
    first_name encrypted_text(255) NOT NULL,
    medical_history encrypted_text,
    city text
);
INSERT INTO clients (first_name, medical_history, city) VALUES
    ('Jane', 'Allergic to penicillin', 'Haifa'),
    ('Zoë', 'Type 2 diabetes; 患者 notes', 'Tel Aviv');
SELECT id, first_name, medical_history, city FROM clients ORDER BY id;
\echo '   What is stored (readable key version, ciphertext only):'
SELECT id, key_version(first_name), left(encode(first_name::bytea, 'hex'), 40) || '…' AS stored_bytes FROM clients ORDER BY id;
\echo '   There are no comparison operators on ciphertext:'
\set ON_ERROR_STOP 0
SELECT * FROM clients WHERE first_name = 'Jane';
\set ON_ERROR_STOP 1
SELECT id FROM clients WHERE first_name::text = 'Jane';

\echo
\echo '-- 4. Key rotation in the database: add v2, make it the write key, re-encrypt.'
RESET pazpaz.encryption_key;
SELECT set_config('pazpaz.encryption_keys', json_build_object('v1', k1, 'v2', k2)::text, false) IS NOT NULL AS keyring_set FROM demo_keys;
SET pazpaz.encryption_key_version = 'v2';
CALL rotate_column('clients', 'first_name', 1000);
UPDATE clients SET medical_history = reencrypt(medical_history) WHERE key_version(medical_history) <> 'v2';
SELECT key_version(first_name) AS first_name_version, key_version(medical_history) AS history_version, count(*)
FROM clients GROUP BY 1, 2;
SELECT id, first_name, medical_history FROM clients ORDER BY id;

\echo
\echo '-- 5. Encrypt a live plaintext column in one statement, and undo it:'
ALTER TABLE clients ALTER COLUMN city TYPE encrypted_text USING city::encrypted_text;
SELECT id, city, key_version(city) FROM clients ORDER BY id;
ALTER TABLE clients ALTER COLUMN city TYPE text USING city::text;
SELECT id, city, pg_typeof(city) FROM clients ORDER BY id;

\echo
\echo '-- 6. Without a key the data stays unreadable, and the error says what to set:'
RESET pazpaz.encryption_keys;
\set ON_ERROR_STOP 0
SELECT first_name FROM clients;
\set ON_ERROR_STOP 1
SELECT id, key_version(first_name) FROM clients ORDER BY id;
DROP TABLE clients;

\echo
\echo '-- 7. Search on encrypted columns. An index key (separate from the data keys)'
\echo '--    keys a blind index for exact lookups and trigram tokens for substring'
\echo '--    search; one CALL adds the token column, its trigger, the backfill and'
\echo '--    the B-tree / GIN index.'
CREATE TEMP TABLE demo_index_key AS SELECT generate_encryption_key() AS k;
SELECT set_config('pazpaz.encryption_key', k1, false) IS NOT NULL AS data_key_set FROM demo_keys;
SELECT set_config('pazpaz.index_key', k, false) IS NOT NULL AS index_key_set FROM demo_index_key;
CREATE TABLE patients (id int PRIMARY KEY, email encrypted_text, last_name encrypted_text);
INSERT INTO patients
SELECT i, 'patient' || i || '@example.com', (ARRAY['Johnson', 'Smith', 'Johansson', 'Brown'])[i % 4 + 1] || '-' || i
FROM generate_series(1, 5000) i;
SET client_min_messages = warning;
-- Calls schema-qualified (the demo's extension is in public; the README
-- recommends a schema of its own) and lookups through the matchers, which
-- need no operator of the query's: safe under a hostile search_path.
CALL public.add_blind_index('public.patients', 'email', normalization => 'lower', batch_size => 2500);
CALL public.add_match_index('public.patients', 'last_name', batch_size => 2500);
RESET client_min_messages;
ANALYZE patients;
\echo '-- Exact lookup (case-insensitive): an Index Scan on the blind index.'
EXPLAIN (COSTS OFF) SELECT id, email FROM patients
WHERE public.blind_equals(email_bidx, 'public.patients', 'email_bidx', 'Patient42@Example.com');
SELECT id, email FROM patients
WHERE public.blind_equals(email_bidx, 'public.patients', 'email_bidx', 'Patient42@Example.com');
\echo '-- Substring search: a Bitmap Index Scan on the tokens, then a recheck that decrypts only the candidates.'
EXPLAIN (COSTS OFF) SELECT id, last_name FROM patients
WHERE public.blind_contains(last_name_tokens, 'public.patients', 'last_name_tokens', 'sson-1')
  AND last_name::pg_catalog.text OPERATOR(pg_catalog.~~*) '%sson-1%';
SELECT id, last_name FROM patients
WHERE public.blind_contains(last_name_tokens, 'public.patients', 'last_name_tokens', 'sson-1')
  AND last_name::pg_catalog.text OPERATOR(pg_catalog.~~*) '%sson-1%' ORDER BY id LIMIT 5;
\echo '-- Without the index key, nobody can compute a token for a guessed value:'
RESET pazpaz.index_key;
\set ON_ERROR_STOP 0
SELECT id FROM patients WHERE public.blind_equals(email_bidx, 'public.patients', 'email_bidx', 'patient42@example.com');
\set ON_ERROR_STOP 1
DROP TABLE patients;
RESET pazpaz.encryption_key;
