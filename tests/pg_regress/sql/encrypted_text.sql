-- The encrypted_text type: declared in DDL, read and written as text.
SELECT generate_encryption_key() AS k1, generate_encryption_key() AS k2 \gset
SELECT set_config('pazpaz.encryption_keys', json_build_object('v1', :'k1', 'v2', :'k2')::text, false) IS NOT NULL AS ring_set;
SET pazpaz.encryption_key_version = 'v1';

CREATE TABLE clients (
    id int PRIMARY KEY,
    first_name encrypted_text(20) NOT NULL,
    medical_history encrypted_text
);
\d clients
INSERT INTO clients VALUES (1, 'Jane', 'Allergic to penicillin'), (2, 'Zoë 患者', NULL), (3, '', 'x');
SELECT * FROM clients ORDER BY id;
-- From text columns and expressions through the assignment cast.
CREATE TABLE staging (id int, name text, notes varchar(100));
INSERT INTO staging VALUES (4, 'John', 'Diabetes'), (5, 'Ana', 'Hypertension');
INSERT INTO clients SELECT id, name, notes FROM staging;
UPDATE clients SET medical_history = medical_history || ' (reviewed)' WHERE id = 4;
SELECT id, first_name, medical_history FROM clients WHERE id >= 4 ORDER BY id;

-- Stored ciphertext: the version is readable without a key; plaintext is not there.
SELECT id, key_version(first_name), octet_length(first_name::bytea) - octet_length(first_name::text) AS overhead,
       position(convert_to(first_name::text, 'UTF8') IN first_name::bytea) AS plaintext_at
FROM clients WHERE id <= 2 ORDER BY id;
SELECT encode(substring(first_name::bytea FROM 1 FOR 4), 'hex') AS header FROM clients WHERE id = 1;

-- Typmod = maximum length in characters, like varchar(n).
SELECT regress.try($$INSERT INTO clients VALUES (9, repeat('x', 21), NULL)$$);
SELECT regress.try($$INSERT INTO clients VALUES (9, repeat('é', 20), NULL)$$);
SELECT regress.try($$UPDATE clients SET first_name = repeat('y', 21)::text WHERE id = 1$$);
SELECT regress.try($$SELECT 'abc'::encrypted_text(0)$$), regress.try($$SELECT 'abc'::encrypted_text(1,2)$$);
DELETE FROM clients WHERE id = 9;

-- No comparison or sort on ciphertext.
SELECT regress.try($$SELECT * FROM clients WHERE first_name = 'Jane'$$);
SELECT regress.try($$SELECT * FROM clients ORDER BY medical_history$$);
SELECT regress.try($$SELECT DISTINCT first_name FROM clients$$);
-- Compare decrypted values explicitly instead.
SELECT id FROM clients WHERE first_name::text = 'Jane';

-- Tampering: one flipped ciphertext byte, or a changed version in the header.
SELECT regress.try($$SELECT set_byte(first_name::bytea, 10, get_byte(first_name::bytea, 10) # 1)::encrypted_text::text FROM clients WHERE id = 1$$);
SELECT regress.try($$SELECT overlay(first_name::bytea PLACING 'v2'::bytea FROM 3)::encrypted_text::text FROM clients WHERE id = 1$$);
-- Malformed envelopes are refused on the way in.
SELECT b AS bytes, regress.try(format('SELECT %L::bytea::encrypted_text', b)) AS error
FROM (VALUES ('\x'), ('\x02027631'), ('\x0102763100'), ('\x0102762000000000000000000000000000000000000000000000000000000000')) v(b);

-- Re-encryption to the write version; unchanged when already there.
SET pazpaz.encryption_key_version = 'v2';
UPDATE clients SET first_name = reencrypt(first_name), medical_history = reencrypt(medical_history)
WHERE key_version(first_name) <> 'v2';
SELECT key_version(first_name) AS version, count(*) FROM clients GROUP BY 1;
SELECT id, first_name FROM clients ORDER BY id;
SELECT count(*) AS unchanged FROM clients WHERE reencrypt(first_name)::bytea = first_name::bytea;
CALL rotate_column('clients', 'first_name', 2, 'v1');
SELECT key_version(first_name) AS version, count(*) FROM clients GROUP BY 1;

-- Without a key: reading names the setting; the envelope and version still work.
RESET pazpaz.encryption_keys;
SELECT first_name FROM clients;
SELECT regress.try($$INSERT INTO clients VALUES (10, 'nokey', NULL)$$);
SELECT id, key_version(first_name), octet_length(first_name::bytea) > 28 AS has_envelope FROM clients ORDER BY id;

-- Envelope text form (keyless dumps): ciphertext in and out, no key needed.
SET pazpaz.encrypted_text_io = 'envelope';
SELECT first_name AS env FROM clients WHERE id = 1 \gset
SELECT left(:'env', 7) AS prefix, length(:'env') > 40 AS long_enough;
CREATE TABLE clients_copy (LIKE clients);
INSERT INTO clients_copy SELECT * FROM clients;
SELECT regress.try($$INSERT INTO clients_copy VALUES (11, 'not an envelope', NULL)$$);
RESET pazpaz.encrypted_text_io;
SELECT set_config('pazpaz.encryption_keys', json_build_object('v1', :'k1', 'v2', :'k2')::text, false) IS NOT NULL AS ring_set;
SELECT a.id, a.first_name::text = b.first_name::text AS same FROM clients a JOIN clients_copy b USING (id) ORDER BY id;
-- In the default mode an envelope given as text is refused, not encrypted again.
SELECT regress.try(format('INSERT INTO clients VALUES (12, %L, NULL)', :'env'));

-- One-statement migration of a plaintext column, and back.
CREATE TABLE patients (id int, name varchar(50), notes text);
INSERT INTO patients SELECT i, 'patient ' || i, 'notes ' || i FROM generate_series(1, 1000) i;
CREATE TABLE patients_before AS SELECT * FROM patients;
ALTER TABLE patients
    ALTER COLUMN name TYPE encrypted_text(50) USING name::encrypted_text,
    ALTER COLUMN notes TYPE encrypted_text USING notes::encrypted_text;
SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'patients'::regclass AND attnum > 0 ORDER BY attnum;
SELECT count(*) AS same FROM patients p JOIN patients_before b USING (id) WHERE p.name::text = b.name AND p.notes::text = b.notes;
ALTER TABLE patients
    ALTER COLUMN name TYPE varchar(50) USING name::text,
    ALTER COLUMN notes TYPE text USING notes::text;
SELECT count(*) AS same FROM patients p JOIN patients_before b USING (id) WHERE p.name = b.name AND p.notes = b.notes;

DROP TABLE clients, clients_copy, staging, patients, patients_before;
