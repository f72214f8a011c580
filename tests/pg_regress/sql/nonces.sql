-- Fork safety of nonces: every backend is forked from the postmaster, which
-- loaded the library (shared_preload_libraries). Two backends each make
-- 10,000 ciphertexts; no nonce may repeat.
SHOW shared_preload_libraries;
SELECT generate_encryption_key() AS k \gset
CREATE TABLE nonces (backend int, nonce bytea);
\c
SELECT set_config('pazpaz.encryption_key', :'k', false) IS NOT NULL AS key_set;
INSERT INTO nonces SELECT pg_backend_pid(), substring(encrypt_field('same text') FROM 1 FOR 12) FROM generate_series(1, 10000);
\c
SELECT set_config('pazpaz.encryption_key', :'k', false) IS NOT NULL AS key_set;
INSERT INTO nonces SELECT pg_backend_pid(), substring(encrypt_field('same text') FROM 1 FOR 12) FROM generate_series(1, 10000);
SELECT count(DISTINCT backend) AS backends, count(*) AS nonces, count(DISTINCT nonce) AS distinct_nonces FROM nonces;
-- The same through the type's input path and the versioned functions.
CREATE TABLE more_nonces (nonce bytea);
\c
SELECT set_config('pazpaz.encryption_key', :'k', false) IS NOT NULL AS key_set;
INSERT INTO more_nonces SELECT substring(('same' || '')::text::encrypted_text::bytea FROM 5 FOR 12) FROM generate_series(1, 5000);
INSERT INTO more_nonces SELECT substring(decode(encrypt_field_versioned('same')->>'ciphertext', 'base64') FROM 1 FOR 12) FROM generate_series(1, 5000);
SELECT count(*) AS nonces, count(DISTINCT nonce) AS distinct_nonces
FROM (SELECT nonce FROM nonces UNION ALL SELECT nonce FROM more_nonces) s;
DROP TABLE nonces, more_nonces;
