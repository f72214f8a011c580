-- Casts of encrypted_text. Assignment casts let INSERT/UPDATE/COPY and
-- ALTER TABLE ... TYPE move between text and encrypted_text; there is no
-- implicit cast, so `WHERE col = 'x'` cannot silently compare ciphertext or
-- decrypt a whole column behind the user's back.
-- Every name is schema-qualified: nothing here depends on the search_path
-- CREATE EXTENSION runs with.
CREATE CAST (pg_catalog.text AS @extschema@.encrypted_text)
    WITH FUNCTION @extschema@.encrypted_text(pg_catalog.text, pg_catalog.int4, pg_catalog.bool) AS ASSIGNMENT;
CREATE CAST (pg_catalog.varchar AS @extschema@.encrypted_text)
    WITH FUNCTION @extschema@.encrypted_text(pg_catalog.text, pg_catalog.int4, pg_catalog.bool) AS ASSIGNMENT;
CREATE CAST (@extschema@.encrypted_text AS pg_catalog.text)
    WITH FUNCTION @extschema@.text(@extschema@.encrypted_text) AS ASSIGNMENT;
CREATE CAST (@extschema@.encrypted_text AS pg_catalog.varchar)
    WITH FUNCTION @extschema@.text(@extschema@.encrypted_text) AS ASSIGNMENT;
-- Length coercion for encrypted_text(n).
CREATE CAST (@extschema@.encrypted_text AS @extschema@.encrypted_text)
    WITH FUNCTION @extschema@.encrypted_text(@extschema@.encrypted_text, pg_catalog.int4, pg_catalog.bool) AS IMPLICIT;
-- The raw envelope, no key needed; explicit only.
CREATE CAST (@extschema@.encrypted_text AS pg_catalog.bytea) WITHOUT FUNCTION;
CREATE CAST (pg_catalog.bytea AS @extschema@.encrypted_text)
    WITH FUNCTION @extschema@.encrypted_text(pg_catalog.bytea);
