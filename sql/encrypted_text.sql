-- Casts of encrypted_text. Assignment casts let INSERT/UPDATE/COPY and
-- ALTER TABLE … TYPE move between text and encrypted_text; there is no
-- implicit cast, so `WHERE col = 'x'` cannot silently compare ciphertext or
-- decrypt a whole column behind the user's back.
CREATE CAST (text AS encrypted_text)
    WITH FUNCTION encrypted_text(text, integer, boolean) AS ASSIGNMENT;
CREATE CAST (varchar AS encrypted_text)
    WITH FUNCTION encrypted_text(text, integer, boolean) AS ASSIGNMENT;
CREATE CAST (encrypted_text AS text)
    WITH FUNCTION text(encrypted_text) AS ASSIGNMENT;
CREATE CAST (encrypted_text AS varchar)
    WITH FUNCTION text(encrypted_text) AS ASSIGNMENT;
-- Length coercion for encrypted_text(n).
CREATE CAST (encrypted_text AS encrypted_text)
    WITH FUNCTION encrypted_text(encrypted_text, integer, boolean) AS IMPLICIT;
-- The raw envelope, no key needed; explicit only.
CREATE CAST (encrypted_text AS bytea) WITHOUT FUNCTION;
CREATE CAST (bytea AS encrypted_text)
    WITH FUNCTION encrypted_text(bytea);
