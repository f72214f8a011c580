-- Versioned envelopes (byte format 2): jsonb {"version", "ciphertext"}.
SELECT generate_encryption_key() AS k1, generate_encryption_key() AS k2 \gset
SELECT set_config('pazpaz.encryption_keys', json_build_object('v1', :'k1', 'v2', :'k2')::text, false) IS NOT NULL AS ring_set;
SET pazpaz.encryption_key_version = 'v1';

SELECT jsonb_object_keys(encrypt_field_versioned('John Doe')) AS envelope_keys ORDER BY 1;
SELECT encrypt_field_versioned('John Doe')->>'version' AS version_in_plain_sql,
       key_version(encrypt_field_versioned('John Doe')) AS key_version,
       key_version(encrypt_field_versioned('John Doe', 'v2')) AS explicit_version;
SELECT decrypt_field_versioned(encrypt_field_versioned('Ünïcødé — 患者 🩺')) AS round_trip,
       decrypt_field_versioned(encrypt_field_versioned('', 'v2')) = '' AS empty_v2;
-- Envelopes are built in jsonb's binary layout: they behave like any jsonb.
SELECT e = e::text::jsonb AS equals_reparsed, jsonb_typeof(e) AS type,
       e @> jsonb_build_object('version', 'v1') AS contains_version,
       pg_column_size(e) = pg_column_size(e::text::jsonb) AS same_size
FROM (SELECT encrypt_field_versioned(repeat('x', n)) AS e FROM generate_series(0, 200, 50) n) s;
-- The ciphertext member is standard base64 of format 1.
SELECT octet_length(decode(encrypt_field_versioned('abc')->>'ciphertext', 'base64')) AS format1_len;

-- Known-answer envelopes from the existing application, under its keyring.
SELECT set_config('pazpaz.encryption_keys',
    '{"v1": "bMz1Y4AHud4S70SS7t8UyrpTbNpwEC5kGFbDbyOoiTE=", "v2": "Z/TsZIiTccYEKunb7MB/oeQGL2uW5CyHQnwYj9xtvEU="}', false) IS NOT NULL AS vector_ring;
SELECT decrypt_field_versioned(e) AS plaintext, key_version(e) AS version
FROM (VALUES
  ('{"version": "v1", "ciphertext": "MnX2k1AZjl/FrR93BSb8w6MfsoRQYQ8wfzR4nua7r6bSgyKG"}'::jsonb),
  ('{"version": "v2", "ciphertext": "9aaDPJ651n2ienSNr4se6oAexS0UJNHJ1Y1oxzmM5Y1DMjGK"}'),
  ('{"version": "v1", "ciphertext": "9b4LQobjRDsrjI1D7vponPAh21mS4sItA8uJW0/YFry6lczqEustHH514jE="}'),
  ('{"version": "v2", "ciphertext": "bAmbvexWCX4YRwald9ZSBKnDKw95kQTsGHPpx5P9la2yGDqwf4XNvYokHxyOAl0SHaUoksyW7gCC/VFnTYTKedo="}')
) v(e);
SELECT set_config('pazpaz.encryption_keys', json_build_object('v1', :'k1', 'v2', :'k2')::text, false) IS NOT NULL AS ring_set;

-- Re-encryption: to the write version, or a given one; unchanged when there.
SET pazpaz.encryption_key_version = 'v2';
SELECT encrypt_field_versioned('rotate me', 'v1') AS e1 \gset
SELECT key_version(reencrypt_field_versioned(:'e1')) AS now,
       decrypt_field_versioned(reencrypt_field_versioned(:'e1')) AS same_plaintext,
       reencrypt_field_versioned(reencrypt_field_versioned(:'e1')) IS NOT NULL AS ok;
SELECT reencrypt_field_versioned(e) = e AS unchanged_when_current
FROM (SELECT encrypt_field_versioned('already v2') AS e) s;
SELECT key_version(reencrypt_field_versioned(encrypt_field_versioned('x'), 'v1')) AS back_to_v1;

-- Associated data.
SELECT decrypt_field_versioned(encrypt_field_versioned('note', 'v1', 'clients.notes:7'), 'clients.notes:7') AS with_aad;
SELECT regress.try($$SELECT decrypt_field_versioned(encrypt_field_versioned('note', 'v1', 'clients.notes:7'), 'clients.notes:8')$$);
SELECT regress.try($$SELECT decrypt_field_versioned(encrypt_field_versioned('note', 'v1', 'clients.notes:7'))$$);
SELECT decrypt_field_versioned(reencrypt_field_versioned(encrypt_field_versioned('note', 'v1', 'a:1'), 'v2', 'a:1'), 'a:1') AS reencrypted_with_aad;

-- Unknown versions name the loaded ones; malformed envelopes get clear errors.
SELECT regress.try($$SELECT decrypt_field_versioned('{"version": "v7", "ciphertext": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}')$$);
SELECT regress.try($$SELECT encrypt_field_versioned('x', 'v7')$$);
SELECT e AS envelope, regress.try(format('SELECT decrypt_field_versioned(%L::jsonb)', e)) AS error
FROM (VALUES ('[]'), ('"v1"'), ('42'), ('{}'), ('{"ciphertext": "AAAA"}'), ('{"version": 1, "ciphertext": "AAAA"}'),
             ('{"version": "v1"}'), ('{"version": "v1", "ciphertext": null}'), ('{"version": "v1", "ciphertext": "not base64!"}'),
             ('{"version": "v1", "ciphertext": "AAAA"}')) v(e);
SELECT regress.try($$SELECT key_version('[]'::jsonb)$$), regress.try($$SELECT key_version('{"version": 2}'::jsonb)$$);
-- Tampering with the version member is caught (the envelope then names the
-- other key, and authentication fails).
SELECT regress.try(format('SELECT decrypt_field_versioned(%L::jsonb)',
    jsonb_set(encrypt_field_versioned('x', 'v1'), '{version}', '"v2"')));
-- That label is not authenticated (format 2 has no associated data), so
-- re-encryption does not pass over an envelope that claims the target
-- version: it authenticates it, re-encrypts it from the loaded key it does
-- authenticate under, and refuses it when there is none.
-- verify_field_versioned() tells whether an envelope authenticates under the
-- key its label names.
SELECT jsonb_set(encrypt_field_versioned('relabelled', 'v1'), '{version}', '"v2"') AS relabelled \gset
SELECT key_version(:'relabelled'::jsonb) AS claims, verify_field_versioned(:'relabelled'::jsonb) AS authentic,
       key_version(reencrypt_field_versioned(:'relabelled'::jsonb)) AS now,
       verify_field_versioned(reencrypt_field_versioned(:'relabelled'::jsonb)) AS now_authentic,
       decrypt_field_versioned(reencrypt_field_versioned(:'relabelled'::jsonb)) AS plaintext,
       decrypt_field_versioned(reencrypt_field_versioned(:'relabelled'::jsonb, 'v2')) AS plaintext_given_version;
SELECT verify_field_versioned(e) AS authentic, reencrypt_field_versioned(e) = e AS unchanged, reencrypt_field_versioned(e, 'v2') = e AS unchanged_given_version
FROM (SELECT encrypt_field_versioned('already v2') AS e) s;
-- With associated data.
SELECT verify_field_versioned(e, 'a:1') AS authentic, verify_field_versioned(e, 'a:2') AS other_aad, verify_field_versioned(e) AS no_aad,
       reencrypt_field_versioned(e, 'v2', 'a:1') = e AS unchanged
FROM (SELECT encrypt_field_versioned('note', 'v2', 'a:1') AS e) s;
SELECT decrypt_field_versioned(reencrypt_field_versioned(e, 'v2', 'a:1'), 'a:1') AS relabelled_with_aad,
       regress.try(format('SELECT reencrypt_field_versioned(%L::jsonb, %L, %L)', e, 'v2', 'a:2')) AS other_aad
FROM (SELECT jsonb_set(encrypt_field_versioned('note', 'v1', 'a:1'), '{version}', '"v2"') AS e) s;
-- Made with a key that is not loaded (the application's vector keyring):
-- authenticates under none, refused; an unknown version is not authentic.
SELECT verify_field_versioned(e) AS authentic, regress.try(format('SELECT reencrypt_field_versioned(%L::jsonb)', e)) AS reencrypt
FROM (VALUES ('{"version": "v2", "ciphertext": "9aaDPJ651n2ienSNr4se6oAexS0UJNHJ1Y1oxzmM5Y1DMjGK"}'::jsonb)) v(e);
SELECT verify_field_versioned('{"version": "v7", "ciphertext": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}') AS unknown_version;
SELECT regress.try($$SELECT verify_field_versioned('[]'::jsonb)$$) AS malformed,
       regress.try($$SELECT verify_field_versioned('{"version": "v1", "ciphertext": "AAAA"}'::jsonb)$$) AS too_short;

-- key_version() needs no key and can back an index.
RESET pazpaz.encryption_keys;
SELECT key_version('{"version": "v1", "ciphertext": "AAAA"}'::jsonb) AS without_key;
SELECT regress.try($$SELECT decrypt_field_versioned('{"version": "v1", "ciphertext": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}')$$);
SELECT regress.try($$SELECT verify_field_versioned('{"version": "v1", "ciphertext": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}')$$) AS verify_without_key;
SELECT p.provolatile AS key_version_volatility FROM pg_proc p WHERE p.oid = 'key_version(jsonb)'::regprocedure;
