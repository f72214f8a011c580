-- Helpers for the suite. regress.try(sql) runs a statement and returns 'ok'
-- or 'SQLSTATE: message', so that each file shows error codes and messages
-- without depending on psql's verbosity.
CREATE SCHEMA regress;
CREATE FUNCTION regress.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
-- A role without privileges beyond PUBLIC's.
CREATE ROLE regress_app LOGIN;
GRANT USAGE ON SCHEMA regress TO regress_app;
