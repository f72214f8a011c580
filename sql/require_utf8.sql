-- First statement of the install script: pazpaz_crypto reads and writes
-- plaintext as UTF-8, so it refuses a database with another encoding
-- (LATIN1, SQL_ASCII, ...) instead of accepting writes it could not read
-- back. Schema-qualified throughout: it runs with the installer's
-- search_path. ASCII only: the script is read in the database's encoding.
DO $pazpaz_require_utf8$
BEGIN
    IF pg_catalog.getdatabaseencoding() OPERATOR(pg_catalog.<>) 'UTF8' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'feature_not_supported',
            MESSAGE = pg_catalog.format('pazpaz_crypto requires a UTF8 database (this one is %s)',
                                        pg_catalog.getdatabaseencoding()),
            HINT = 'Create the database with ENCODING ''UTF8'' (e.g. CREATE DATABASE ... ENCODING ''UTF8'' TEMPLATE template0) and install the extension there.';
    END IF;
END
$pazpaz_require_utf8$;
