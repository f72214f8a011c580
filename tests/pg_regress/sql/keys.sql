-- The key settings: validated when SET, hidden, session state only.
SELECT generate_encryption_key() AS k1, generate_encryption_key() AS k2 \gset

-- With the library preloaded, a key set by a fresh session before any of the
-- extension's functions has run is already validated and hidden.
\c
SELECT set_config('pazpaz.encryption_key', :'k1', false);
SHOW pazpaz.encryption_key;
SELECT count(*) AS in_show_all FROM pg_show_all_settings() WHERE name IN ('pazpaz.encryption_key', 'pazpaz.encryption_keys');
SET ROLE regress_app;
SHOW pazpaz.encryption_key;
RESET ROLE;
RESET pazpaz.encryption_key;

-- Malformed values are refused when SET, and the message never echoes them.
SELECT regress.try($$SET pazpaz.encryption_key = 'garbage'$$);
SELECT regress.try($$SET pazpaz.encryption_key = 'AAAAAAAAAAAAAAAAAAAAAA=='$$);            -- 16 bytes
SELECT regress.try($$SET pazpaz.encryption_key = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='$$); -- 29 bytes
SELECT regress.try(format('SET pazpaz.encryption_key = %L', encode(gen_bytes, 'base64')))
FROM (SELECT decode(repeat('ab', n), 'hex') AS gen_bytes FROM (VALUES (31), (33)) v(n)) s;
SELECT regress.try($$SET pazpaz.encryption_keys = '{"v1": "not-a-key"}'$$);
SELECT regress.try($$SET pazpaz.encryption_keys = '["garbage"]'$$);
SELECT regress.try($$SET pazpaz.encryption_keys = '{}'$$);
SELECT regress.try($$SET pazpaz.encryption_keys = '{"": "AAAA"}'$$);
SELECT regress.try($$SET pazpaz.encryption_key_version = ''$$) AS empty_version_is_unset;
SELECT regress.try($$SET pazpaz.encryption_key_version = 'v 2'$$);
-- Misspelled names in the reserved prefix are refused (the library is preloaded).
SELECT regress.try($$SET pazpaz.encryption_kye = 'x'$$);

-- Hidden: not in SHOW ALL / pg_settings, masked for anyone who may SHOW it.
SELECT set_config('pazpaz.encryption_key', :'k1', false);
SHOW pazpaz.encryption_key;
SELECT current_setting('pazpaz.encryption_key');
SELECT count(*) AS in_pg_settings FROM pg_settings WHERE name IN ('pazpaz.encryption_key', 'pazpaz.encryption_keys');
SELECT name FROM pg_settings WHERE name LIKE 'pazpaz.%' ORDER BY 1;
SELECT count(*) AS in_show_all FROM pg_show_all_settings() WHERE name IN ('pazpaz.encryption_key', 'pazpaz.encryption_keys');

-- An ordinary role sees the mask too, and sets and uses its own session's keys.
SET ROLE regress_app;
SELECT current_setting('pazpaz.encryption_key');
SELECT set_config('pazpaz.encryption_key', :'k2', false);
SELECT current_setting('pazpaz.encryption_key');
SELECT set_config('pazpaz.encryption_keys', json_build_object('v1', :'k1')::text, true) AS local_ring;
SELECT decrypt_field(encrypt_field('app data')) AS own_round_trip;
RESET ROLE;
RESET pazpaz.encryption_keys;
SELECT set_config('pazpaz.encryption_key', :'k2', false) IS NOT NULL AS key_set;

-- encryption_status(): versions and fingerprints, never a key.
SELECT version, is_current, length(fingerprint) AS fp_len,
       fingerprint <> :'k2' AND position(fingerprint IN :'k2') = 0 AS not_the_key
FROM encryption_status();

-- Keyring mode: several versions, one writes.
RESET pazpaz.encryption_key;
SELECT set_config('pazpaz.encryption_keys', json_build_object('v1', :'k1', 'v2', :'k2')::text, false) IS NOT NULL AS ring_set;
SELECT version, is_current FROM encryption_status() ORDER BY 1;
SELECT regress.try($$SELECT encrypt_field('x')$$) AS no_write_version;
SET pazpaz.encryption_key_version = 'v2';
SELECT version, is_current FROM encryption_status() ORDER BY 1;
SELECT decrypt_field(encrypt_field('ring')) AS ring_round_trip;
SET pazpaz.encryption_key_version = 'v9';
SELECT regress.try($$SELECT encrypt_field('x')$$) AS unknown_write_version;
SET pazpaz.encryption_key_version = 'v2';

-- A single key is always version v1, whatever the write version says.
SELECT set_config('pazpaz.encryption_key', :'k1', false) IS NOT NULL AS single_key;
RESET pazpaz.encryption_keys;
SELECT version, is_current FROM encryption_status();
SELECT set_config('pazpaz.encryption_keys', json_build_object('v1', :'k1', 'v2', :'k2')::text, false) IS NOT NULL AS ring_set;

-- Both key settings at once is an error at use, not a silent choice.
SELECT set_config('pazpaz.encryption_key', :'k1', false) IS NOT NULL AS both_set;
SELECT regress.try($$SELECT encrypt_field('x')$$);
SELECT regress.try($$SELECT * FROM encryption_status()$$);
RESET pazpaz.encryption_key;

-- SET LOCAL / set_config(…, true) last for the transaction only.
RESET pazpaz.encryption_keys;
BEGIN;
SELECT set_config('pazpaz.encryption_key', :'k1', true) IS NOT NULL AS local_set;
SELECT decrypt_field(encrypt_field('in transaction')) AS inside;
COMMIT;
SELECT regress.try($$SELECT encrypt_field('x')$$) AS after_commit;
BEGIN;
SET LOCAL pazpaz.encryption_key = :'k1';
SELECT count(*) AS versions_inside FROM encryption_status();
ROLLBACK;
SELECT count(*) AS versions_after_rollback FROM encryption_status();

-- RESET ALL and DISCARD ALL forget keys.
SELECT set_config('pazpaz.encryption_key', :'k1', false) IS NOT NULL AS set_again;
RESET ALL;
SELECT count(*) AS after_reset_all FROM encryption_status();
SELECT set_config('pazpaz.encryption_key', :'k1', false) IS NOT NULL AS set_again;
DISCARD ALL;
SELECT count(*) AS after_discard_all FROM encryption_status();

-- Keys can only be session state: every source that would store them in
-- plain text is refused, saying why.
SELECT regress.try(format('ALTER ROLE regress_app SET pazpaz.encryption_key = %L', :'k1'));
SELECT regress.try(format('ALTER DATABASE %I SET pazpaz.encryption_keys = %L', current_database(), json_build_object('v1', :'k1')));
SELECT regress.try(format('ALTER ROLE regress_app IN DATABASE %I SET pazpaz.encryption_key = %L', current_database(), :'k1'));
SELECT regress.try(format('CREATE FUNCTION regress.f() RETURNS int LANGUAGE sql SET pazpaz.encryption_key = %L AS ''SELECT 1''', :'k1'));
ALTER SYSTEM SET pazpaz.encryption_key = :'k1';
SELECT count(*) AS stored_role_settings FROM pg_db_role_setting WHERE array_to_string(setconfig, ',') LIKE '%pazpaz%';
-- The non-secret settings are ordinary.
SELECT regress.try($$ALTER ROLE regress_app SET pazpaz.encryption_key_version = 'v2'$$);
ALTER ROLE regress_app RESET pazpaz.encryption_key_version;
