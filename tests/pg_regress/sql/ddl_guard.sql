-- DDL that would defeat the encryption is refused with 0A000.
SELECT set_config('pazpaz.encryption_key', generate_encryption_key(), false) IS NOT NULL AS key_set;

-- An encrypted_text constant as a default would be encrypted once, now,
-- under this session's key: refused, in CREATE TABLE and ALTER TABLE.
SELECT regress.try($$CREATE TABLE d1 (id int, c encrypted_text DEFAULT 'none')$$);
SELECT regress.try($$CREATE TABLE d1 (id int, c encrypted_text(10) DEFAULT 'none')$$);
CREATE TABLE d2 (id int, c encrypted_text);
SELECT regress.try($$ALTER TABLE d2 ALTER COLUMN c SET DEFAULT 'none'$$);
SELECT regress.try($$ALTER TABLE d2 ADD COLUMN e encrypted_text DEFAULT 'none'$$);
-- Also inside arrays, composites and domains, in domain defaults, foreign
-- tables and views.
SELECT regress.try($$CREATE TABLE d1 (id int, c encrypted_text[] DEFAULT '{none}')$$);
CREATE TYPE pair AS (a encrypted_text, b int);
SELECT regress.try($$CREATE TABLE d1 (id int, p pair DEFAULT '(none,1)')$$);
SELECT regress.try($$CREATE DOMAIN note AS encrypted_text DEFAULT 'none'$$);
CREATE DOMAIN note AS encrypted_text;
SELECT regress.try($$ALTER DOMAIN note SET DEFAULT 'none'$$);
CREATE FOREIGN DATA WRAPPER guard_fdw;
CREATE SERVER guard_srv FOREIGN DATA WRAPPER guard_fdw;
SELECT regress.try($$CREATE FOREIGN TABLE f1 (c encrypted_text DEFAULT 'none') SERVER guard_srv$$);
SELECT regress.try($$CREATE VIEW v1 AS SELECT 'none'::encrypted_text AS c$$);
-- A view whose name a temporary table (or a pg_catalog view) shadows, a
-- rule, a function's argument default.
CREATE TEMP TABLE shadowed (x int);
SELECT regress.try($$CREATE VIEW shadowed AS SELECT 'none'::encrypted_text AS c$$);
SELECT regress.try($$CREATE VIEW pg_tables AS SELECT 'none'::encrypted_text AS c$$);
DROP TABLE shadowed;
CREATE TABLE rule_target (c encrypted_text);
CREATE TABLE ruled (id int);
SELECT regress.try($$CREATE RULE r AS ON INSERT TO ruled DO ALSO INSERT INTO rule_target VALUES ('none'::encrypted_text)$$);
SELECT regress.try($$CREATE FUNCTION f_def(x encrypted_text DEFAULT 'none'::encrypted_text) RETURNS int LANGUAGE sql AS 'SELECT 1'$$);
CREATE INDEX ON ruled (id);
DROP TABLE rule_target, ruled;
-- The per-row cast is fine: every insert encrypts with a new nonce, under
-- the inserting session's write key.
ALTER TABLE d2 ALTER COLUMN c SET DEFAULT 'none'::text::encrypted_text;
CREATE TABLE d3 (id int, c encrypted_text DEFAULT 'none'::text::encrypted_text, n encrypted_text DEFAULT NULL);
INSERT INTO d2 (id) VALUES (1), (2);
SELECT count(DISTINCT c::bytea) AS distinct_envelopes, min(c::text) AS value FROM d2;
\d d2

-- Indexes and statistics over decrypted values would store plaintext.
SELECT regress.try($$CREATE INDEX ON d2 ((c::text))$$);
SELECT regress.try($$CREATE INDEX ON d2 (id) WHERE c::text = 'none'$$);
SELECT regress.try($$CREATE STATISTICS s1 ON (c::text) FROM d2$$);
CREATE TABLE d4 (id int, b bytea, j jsonb);
SELECT regress.try($$CREATE INDEX ON d4 ((decrypt_field(b)))$$);
SELECT regress.try($$CREATE STATISTICS s2 ON (decrypt_field_versioned(j)), id FROM d4$$);
-- A wrapper that claims to be IMMUTABLE does not get around it: in an
-- index, statistics or a generated column.
CREATE FUNCTION plain_of(encrypted_text) RETURNS text IMMUTABLE LANGUAGE sql AS 'SELECT $1::text';
SELECT regress.try($$CREATE INDEX ON d2 (plain_of(c))$$);
SELECT regress.try($$CREATE INDEX ON d2 (id) WHERE plain_of(c) = 'none'$$);
SELECT regress.try($$CREATE STATISTICS s4 ON (plain_of(c)) FROM d2$$);
SELECT regress.try($$ALTER TABLE d2 ADD COLUMN g text GENERATED ALWAYS AS (plain_of(c)) STORED$$);
SELECT regress.try($$CREATE TABLE d5 (c encrypted_text, g text GENERATED ALWAYS AS (plain_of(c)) STORED)$$);
-- What may be indexed: the key version, the ciphertext.
CREATE INDEX d2_version ON d2 (key_version(c));
CREATE INDEX d2_stale ON d2 (id) WHERE key_version(c) <> 'v2';
CREATE INDEX d2_envelope ON d2 ((c::bytea));
CREATE INDEX d4_b ON d4 (b);
CREATE STATISTICS s3 ON id, b FROM d4;
SELECT count(*) AS refused_objects_left FROM pg_indexes WHERE tablename IN ('d2', 'd4') AND indexname NOT IN ('d2_version', 'd2_stale', 'd2_envelope', 'd4_b');

DROP TABLE d2, d3, d4;
DROP FUNCTION plain_of(encrypted_text);
DROP SERVER guard_srv;
DROP FOREIGN DATA WRAPPER guard_fdw;
DROP DOMAIN note;
DROP TYPE pair;
RESET pazpaz.encryption_key;
