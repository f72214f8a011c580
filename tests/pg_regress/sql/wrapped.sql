-- Wrapped data keys on a server without a key-encryption key (KEK): the
-- regress server sets neither pazpaz.kek_file nor pazpaz.kek_command. What
-- needs a KEK is refused with an error that names the settings; everything
-- else behaves as before. (Servers with KEKs: tests/python/test_wrapped_keys.py.)

-- No KEK loaded: kek_status() has no rows.
SELECT count(*) AS keks_loaded FROM kek_status();
SHOW pazpaz.require_wrapped_keys;

-- A wrapped key is checked when SET: its form first, then the KEK it needs.
SELECT regress.try($$SET pazpaz.encryption_key = 'pzw1:k1:ymVkzz8uw+qvfTBz8UbOhBJ2BEH+mEVY6vkNaGjAv+i2ICFyxPUYbG9yHyIaNEaUkPr8+p9VHASMhK4U'$$);
SELECT regress.try($$SET pazpaz.encryption_keys = '{"t42.v1": "pzw1:k1:ymVkzz8uw+qvfTBz8UbOhBJ2BEH+mEVY6vkNaGjAv+i2ICFyxPUYbG9yHyIaNEaUkPr8+p9VHASMhK4U"}'$$);
SELECT regress.try($$SET pazpaz.encryption_key = 'pzw2:k1:ymVkzz8uw+qvfTBz8UbOhBJ2BEH+mEVY6vkNaGjAv+i2ICFyxPUYbG9yHyIaNEaUkPr8+p9VHASMhK4U'$$);
SELECT regress.try($$SET pazpaz.encryption_key = 'pzw1:ymVkzz8uw+qvfTBz8UbOhBJ2BEH+mEVY6vkNaGjAv+i2ICFyxPUYbG9yHyIaNEaUkPr8+p9VHASMhK4U'$$);
SELECT regress.try($$SET pazpaz.encryption_key = 'pzw1:k 1:ymVkzz8uw+qvfTBz8UbOhBJ2BEH+mEVY6vkNaGjAv+i2ICFyxPUYbG9yHyIaNEaUkPr8+p9VHASMhK4U'$$);
-- The messages never echo the value.
SELECT position('ymVkzz8u' IN regress.try($$SET pazpaz.encryption_key = 'pzw1:k1:ymVkzz8uw+qvfTBz8UbOhBJ2BEH+mEVY6vkNaGjAv+i2ICFyxPUYbG9yHyIaNEaUkPr8+p9VHASMhK4U'$$)) AS echoed;

-- The functions that need a KEK say so.
SELECT regress.try($$SELECT generate_wrapped_encryption_key()$$);
SELECT regress.try($$SELECT generate_wrapped_encryption_key('k1')$$);
SELECT regress.try($$SELECT wrap_encryption_key(generate_encryption_key())$$);
SELECT regress.try($$SELECT rewrap_encryption_key('pzw1:k1:ymVkzz8uw+qvfTBz8UbOhBJ2BEH+mEVY6vkNaGjAv+i2ICFyxPUYbG9yHyIaNEaUkPr8+p9VHASMhK4U')$$);

-- Raw keys work as before; encryption_status() says they did not come wrapped.
SELECT set_config('pazpaz.encryption_key', generate_encryption_key(), false) IS NOT NULL AS key_set;
SELECT version, is_current, length(fingerprint) AS fingerprint_length, wrapped, kek_id FROM encryption_status();
RESET pazpaz.encryption_key;

-- Who may call what: wrap_encryption_key (takes a raw key),
-- rewrap_encryption_key (carries a key across a KEK rotation) and
-- generate_wrapped_encryption_key (spends the KEK's 2^32 wraps) are not
-- granted to PUBLIC; kek_status is.
SELECT p.oid::regprocedure AS function, has_function_privilege('regress_app', p.oid, 'EXECUTE') AS app_may_call
FROM pg_proc p
WHERE p.proname IN ('generate_wrapped_encryption_key', 'wrap_encryption_key', 'rewrap_encryption_key', 'kek_status')
ORDER BY p.oid::regprocedure::text;
SET ROLE regress_app;
SELECT regress.try($$SELECT wrap_encryption_key('AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=')$$);
SELECT regress.try($$SELECT rewrap_encryption_key('pzw1:k1:ymVkzz8uw+qvfTBz8UbOhBJ2BEH+mEVY6vkNaGjAv+i2ICFyxPUYbG9yHyIaNEaUkPr8+p9VHASMhK4U')$$);
SELECT regress.try($$SELECT count(*) FROM kek_status()$$);
-- The policy is the server's: no session turns it off, not even a superuser's.
SELECT regress.try($$SET pazpaz.require_wrapped_keys = off$$);
RESET ROLE;
SELECT regress.try($$SET pazpaz.require_wrapped_keys = off$$);
-- The KEK settings are read at server start only, and by superusers only.
SELECT regress.try($$SET pazpaz.kek_file = 'kek.json'$$);
SELECT name, context FROM pg_settings WHERE name IN ('pazpaz.kek_file', 'pazpaz.kek_command', 'pazpaz.require_wrapped_keys') ORDER BY 1;
SET ROLE regress_app;
-- Refused (the message's wording changed in PostgreSQL 17: only the SQLSTATE
-- is compared).
SELECT split_part(regress.try($$SHOW pazpaz.kek_command$$), ':', 1) AS show_kek_command;
RESET ROLE;
