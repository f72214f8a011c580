-- Key rotation inside the database: the runbook, as a test.
SELECT generate_encryption_key() AS k1, generate_encryption_key() AS k2 \gset

-- 10,000 rows written under v1, with their plaintext kept aside for checking.
SELECT set_config('pazpaz.encryption_keys', json_build_object('v1', :'k1')::text, false) IS NOT NULL AS ring_v1;
CREATE TABLE clients (id int PRIMARY KEY, plain text, medical_history jsonb);
-- rotate_column's batches are ranges of heap blocks, so the rows per batch
-- shown below depend on where rows lie: no autovacuum to move them.
ALTER TABLE clients SET (autovacuum_enabled = off);
INSERT INTO clients
SELECT i, 'history of client ' || i || repeat(' ✓', i % 7), NULL FROM generate_series(1, 10000) i;
UPDATE clients SET medical_history = encrypt_field_versioned(plain);
CREATE INDEX clients_key_version ON clients (key_version(medical_history));
ANALYZE clients;
SELECT key_version(medical_history) AS version, count(*) FROM clients GROUP BY 1;

-- Phase 1: add v2 to the keyring and make it the write key.
SELECT set_config('pazpaz.encryption_keys', json_build_object('v1', :'k1', 'v2', :'k2')::text, false) IS NOT NULL AS ring_v1_v2;
SET pazpaz.encryption_key_version = 'v2';

-- Phase 2: re-encrypt in one statement.
WITH rotated AS (
    UPDATE clients SET medical_history = reencrypt_field_versioned(medical_history)
    WHERE key_version(medical_history) <> 'v2'
    RETURNING 1)
SELECT count(*) AS rows_reencrypted FROM rotated;

-- Phase 3: verify none is left on v1 — the index finds stale rows.
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT count(*) FROM clients WHERE key_version(medical_history) = 'v1';
RESET enable_seqscan;
SELECT count(*) AS left_on_v1 FROM clients WHERE key_version(medical_history) = 'v1';
-- The label is not authenticated: before dropping v1, check that every value
-- authenticates under the key its label names (a decrypt-only pass).
SELECT count(*) AS not_authentic FROM clients WHERE NOT verify_field_versioned(medical_history);
SELECT count(*) FILTER (WHERE decrypt_field_versioned(medical_history) = plain) AS decrypt_ok, count(*) AS total FROM clients;

-- A second run changes nothing: no row matches, and even without the WHERE
-- clause every value would come back unchanged.
WITH rotated AS (
    UPDATE clients SET medical_history = reencrypt_field_versioned(medical_history)
    WHERE key_version(medical_history) <> 'v2'
    RETURNING 1)
SELECT count(*) AS rows_reencrypted FROM rotated;
SELECT count(*) AS changed_if_forced FROM clients WHERE reencrypt_field_versioned(medical_history) <> medical_history;

-- Phase 4: drop v1 from the keyring; everything still reads.
SELECT set_config('pazpaz.encryption_keys', json_build_object('v2', :'k2')::text, false) IS NOT NULL AS ring_v2;
SELECT count(*) FILTER (WHERE decrypt_field_versioned(medical_history) = plain) AS decrypt_ok_v2_only FROM clients;

-- The batched procedure: back to a v3 key in batches of about 3,000 rows
-- (ranges of heap blocks; here the rows from the UPDATEs above lie unevenly),
-- with progress.
SELECT generate_encryption_key() AS k3 \gset
SELECT set_config('pazpaz.encryption_keys', json_build_object('v2', :'k2', 'v3', :'k3')::text, false) IS NOT NULL AS ring_v2_v3;
SET pazpaz.encryption_key_version = 'v3';
CALL rotate_column('clients', 'medical_history', 3000);
SELECT key_version(medical_history) AS version, count(*) FROM clients GROUP BY 1;
SELECT count(*) FILTER (WHERE decrypt_field_versioned(medical_history) = plain) AS decrypt_ok FROM clients;
-- Re-running is harmless.
CALL rotate_column('clients', 'medical_history', 3000);

-- A value relabelled to the target version: format 2 does not authenticate
-- the "version" label, so the runbook's version check misses it; the
-- verification query finds it, and rotate_column's verification pass
-- re-encrypts it from the key it authenticates under.
UPDATE clients SET medical_history = jsonb_set(encrypt_field_versioned(plain, 'v2'), '{version}', '"v3"') WHERE id IN (17, 4242);
SELECT count(*) AS left_on_other_versions FROM clients WHERE key_version(medical_history) <> 'v3';
SELECT id FROM clients WHERE NOT verify_field_versioned(medical_history) ORDER BY id;
CALL rotate_column('clients', 'medical_history', 3000);
SELECT count(*) AS not_authentic FROM clients WHERE NOT verify_field_versioned(medical_history);
SELECT count(*) FILTER (WHERE decrypt_field_versioned(medical_history) = plain) AS decrypt_ok FROM clients;
-- One that authenticates under no loaded key (made with another keyring) is
-- reported, with how to find such values.
UPDATE clients SET medical_history = '{"version": "v3", "ciphertext": "9aaDPJ651n2ienSNr4se6oAexS0UJNHJ1Y1oxzmM5Y1DMjGK"}' WHERE id = 99;
CALL rotate_column('clients', 'medical_history', 3000);
SELECT id FROM clients WHERE NOT verify_field_versioned(medical_history);
UPDATE clients SET medical_history = encrypt_field_versioned(plain) WHERE id = 99;
CALL rotate_column('clients', 'medical_history', 3000);

-- Interrupted: a batch fails part-way, here at a row that cannot be
-- decrypted (it claims v2 but was made with the v3 key; the UPDATE puts it
-- physically last). The batches before it stay committed; once the row is
-- dealt with, a second CALL finishes the job.
CREATE TABLE visits (id int PRIMARY KEY, plain text, note jsonb);
ALTER TABLE visits SET (autovacuum_enabled = off);
INSERT INTO visits SELECT i, 'visit ' || i, encrypt_field_versioned('visit ' || i, 'v2') FROM generate_series(1, 3000) i;
UPDATE visits SET note = jsonb_set(encrypt_field_versioned(plain, 'v3'), '{version}', '"v2"') WHERE id = 1500;
\set VERBOSITY terse
CALL rotate_column('visits', 'note', 500);
\set VERBOSITY default
SELECT key_version(note) AS version, count(*) FROM visits GROUP BY 1 ORDER BY 1;
UPDATE visits SET note = encrypt_field_versioned(plain, 'v2') WHERE id = 1500;
CALL rotate_column('visits', 'note', 5000);
SELECT key_version(note) AS version, count(*) FROM visits GROUP BY 1;
SELECT count(*) FILTER (WHERE decrypt_field_versioned(note) = plain) AS decrypt_ok FROM visits;
DROP TABLE visits;

-- Wrong uses get clear errors.
CALL rotate_column('clients', 'plain');
CALL rotate_column('clients', 'no_such_column');
CALL rotate_column('clients', 'medical_history', 0);
DROP TABLE clients;

-- rotate_column runs the table's triggers and index expressions as its
-- caller: it must be the table's owner (a superuser SETs ROLE first).
CREATE ROLE regress_owner;
CREATE TABLE owned (id int, c encrypted_text);
ALTER TABLE owned OWNER TO regress_owner;
CALL rotate_column('owned', 'c');
DROP TABLE owned;
DROP ROLE regress_owner;
