-- pazpaz_crypto requires a UTF8 database: plaintext is UTF-8 on both sides.
-- CREATE EXTENSION in a database with another encoding fails (0A000) and
-- leaves nothing behind.
SELECT current_database() AS regress_db \gset
-- The errors are shown without their CONTEXT lines: where the extension script
-- raised them is PostgreSQL's to say, and 18 says it differently (it adds the
-- script's statement and line).
\set SHOW_CONTEXT never
CREATE DATABASE regress_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
CREATE DATABASE regress_sql_ascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
\c regress_latin1
CREATE EXTENSION pazpaz_crypto;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS extensions FROM pg_extension WHERE extname = 'pazpaz_crypto';
SELECT count(*) AS functions FROM pg_proc WHERE proname IN ('encrypt_field', 'decrypt_field');
SELECT count(*) AS types FROM pg_type WHERE typname = 'encrypted_text';
-- Even with a hostile search_path (the check is schema-qualified).
CREATE SCHEMA hostile;
CREATE FUNCTION hostile.getdatabaseencoding() RETURNS name LANGUAGE sql AS $$ SELECT 'UTF8'::name $$;
SET search_path = hostile, pg_catalog;
CREATE EXTENSION pazpaz_crypto SCHEMA hostile;
\echo :LAST_ERROR_SQLSTATE
RESET search_path;
\c regress_sql_ascii
CREATE EXTENSION pazpaz_crypto;
\echo :LAST_ERROR_SQLSTATE
\set SHOW_CONTEXT errors
-- No other way in: a database made from a template that has the extension
-- must have the template's encoding (only template0, which does not accept
-- connections, may differ), so no LATIN1 copy of a UTF8 database with the
-- extension can be made.
CREATE DATABASE regress_utf8 ENCODING 'UTF8' TEMPLATE template0;
\c regress_utf8
CREATE EXTENSION pazpaz_crypto;
SELECT pg_catalog.getdatabaseencoding(), extname FROM pg_extension WHERE extname = 'pazpaz_crypto';
\c :regress_db
CREATE DATABASE regress_latin1_copy TEMPLATE regress_utf8 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C';
\echo :LAST_ERROR_SQLSTATE
CREATE DATABASE regress_sql_ascii_copy TEMPLATE regress_utf8 ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C';
\echo :LAST_ERROR_SQLSTATE
SELECT datname FROM pg_database WHERE datname LIKE 'regress\_%\_copy';
SELECT datallowconn FROM pg_database WHERE datname = 'template0';
DROP DATABASE regress_latin1;
DROP DATABASE regress_sql_ascii;
DROP DATABASE regress_utf8;
