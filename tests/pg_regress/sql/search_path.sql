-- Every SQL object of the extension is safe under a hostile search_path.
-- mallory, an ordinary role allowed to create objects in public (where the
-- extension lives here), plants look-alikes of what rotate_column uses, in
-- public and in a schema of her own: operators on the types it compares,
-- format() overloads that match its calls more exactly than
-- format(text, VARIADIC "any"), count(*) and max(tid), and domains named
-- like the types it declares. Each one notes in public.hijack_log that it ran
-- and, when it runs as a superuser, makes mallory one. A superuser with keys
-- then rotates a jsonb and an encrypted_text column with those schemas ahead
-- of pg_catalog in the search_path. Nothing of mallory's may run.
SELECT generate_encryption_key() AS k1, generate_encryption_key() AS k2 \gset
SELECT set_config('pazpaz.encryption_keys', json_build_object('v1', :'k1', 'v2', :'k2')::text, false) IS NOT NULL AS ring_set;
SET pazpaz.encryption_key_version = 'v1';
CREATE TABLE sp_clients (id int PRIMARY KEY, plain text, notes jsonb, history encrypted_text);
INSERT INTO sp_clients SELECT i, 'note ' || i, encrypt_field_versioned('note ' || i), ('note ' || i)::text FROM generate_series(1, 10) i;
INSERT INTO sp_clients VALUES (11, NULL, NULL, NULL);
-- One v1 envelope relabelled "v2": the verification pass re-encrypts it.
UPDATE sp_clients SET notes = jsonb_set(notes, '{version}', '"v2"') WHERE id = 4;

CREATE ROLE mallory;
GRANT CREATE ON SCHEMA public TO mallory;
CREATE SCHEMA mallory AUTHORIZATION mallory;
GRANT USAGE ON SCHEMA regress TO mallory;
SET ROLE mallory;
SET search_path = pg_catalog, pg_temp;
CREATE TABLE public.hijack_log (what text, by_role name);
GRANT SELECT, INSERT ON public.hijack_log TO PUBLIC;
GRANT USAGE ON SCHEMA mallory TO PUBLIC;
CREATE FUNCTION public.hijack_note(what pg_catalog.text) RETURNS pg_catalog.bool
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO public.hijack_log VALUES (what, current_user);
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        ALTER ROLE mallory SUPERUSER;
    END IF;
    RETURN true;
END $$;
DO $plant$
DECLARE
    s text;
    o record;
    f record;
    t text;
    i int := 0;
BEGIN
    FOREACH s IN ARRAY ARRAY['public', 'mallory'] LOOP
        -- operator, left type, right type, result type, the type both sides are compared as
        FOR o IN SELECT * FROM (VALUES
            ('=', 'regtype', 'regtype', 'bool', 'oid'), ('<>', 'regtype', 'regtype', 'bool', 'oid'),
            ('=', 'oid', 'oid', 'bool', 'oid'), ('<>', 'oid', 'oid', 'bool', 'oid'),
            ('=', 'oid', 'regclass', 'bool', 'oid'), ('=', 'regclass', 'oid', 'bool', 'oid'),
            ('=', 'oid', 'regtype', 'bool', 'oid'),
            ('=', 'text', 'text', 'bool', 'text'), ('<>', 'text', 'text', 'bool', 'text'),
            ('=', 'name', 'name', 'bool', 'name'),
            ('=', 'int8', 'int8', 'bool', 'int8'), ('<>', 'int8', 'int8', 'bool', 'int8'),
            ('>', 'int8', 'int8', 'bool', 'int8'), ('>', 'int8', 'int4', 'bool', 'int8'),
            ('<', 'int8', 'int4', 'bool', 'int8'),
            ('=', 'int4', 'int4', 'bool', 'int4'), ('<>', 'int4', 'int4', 'bool', 'int4'),
            ('>', 'int4', 'int4', 'bool', 'int4'), ('<', 'int4', 'int4', 'bool', 'int4'),
            ('>', 'int2', 'int4', 'bool', 'int4'),
            ('=', 'tid', 'tid', 'bool', 'tid'), ('<>', 'tid', 'tid', 'bool', 'tid'),
            ('>', 'tid', 'tid', 'bool', 'tid'), ('<', 'tid', 'tid', 'bool', 'tid'),
            ('+', 'int4', 'int4', 'int4', 'int4'), ('+', 'int8', 'int8', 'int8', 'int8'),
            ('+', 'int8', 'int4', 'int8', 'int8')
        ) v(op, l, r, res, base) LOOP
            i := i + 1;
            EXECUTE format($f$
                CREATE FUNCTION %1$I.hijack_op_%2$s(a pg_catalog.%3$s, b pg_catalog.%4$s) RETURNS pg_catalog.%5$s
                LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $b$
                BEGIN
                    PERFORM public.hijack_note(%7$L);
                    RETURN a::%6$s OPERATOR(pg_catalog.%8$s) b::%6$s;
                END $b$
            $f$, s, i, o.l, o.r, o.res, o.base, format('%s.%s(%s,%s)', s, o.op, o.l, o.r), o.op);
            EXECUTE format('CREATE OPERATOR %s.%s (LEFTARG = pg_catalog.%s, RIGHTARG = pg_catalog.%s, FUNCTION = %I.hijack_op_%s)',
                           quote_ident(s), o.op, o.l, o.r, s, i);
        END LOOP;
        -- And every other binary operator of pg_catalog over the types the
        -- procedures compute with (regress.catalog_operators).
        FOR o IN SELECT * FROM regress.catalog_operators() c
                  WHERE NOT EXISTS (SELECT FROM pg_operator p
                                     WHERE p.oprnamespace = s::regnamespace AND p.oprname = c.op
                                       AND p.oprleft = c.l::regtype::oid AND p.oprright = c.r::regtype::oid) LOOP
            PERFORM regress.plant_operator(s, o.op, o.l, o.r, o.res, 'public.hijack_note');
        END LOOP;
        -- format() with the argument types of every call rotate_column makes or made.
        FOR f IN SELECT * FROM (VALUES
            ('text, regclass, name, name'), ('text, regclass, name, text'), ('text, text, name, name'),
            ('text, text, name, text'), ('text, text, name, text, text'), ('text, name, name'),
            ('text, name, text'), ('text, name'), ('text, regclass, name'), ('text, text, name')
        ) v(args) LOOP
            i := i + 1;
            EXECUTE format($f$
                CREATE FUNCTION %1$I.format(%2$s) RETURNS pg_catalog.text
                LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $b$
                BEGIN
                    PERFORM public.hijack_note(%3$L);
                    RETURN pg_catalog.format(%4$s);
                END $b$
            $f$, s,
                (SELECT string_agg(format('a%s pg_catalog.%s', u.n, u.typ), ', ') FROM unnest(string_to_array(f.args, ', ')) WITH ORDINALITY u(typ, n)),
                format('%s.format(%s)', s, f.args),
                (SELECT string_agg(format('a%s', u.n), ', ') FROM unnest(string_to_array(f.args, ', ')) WITH ORDINALITY u(typ, n)));
        END LOOP;
        -- count(*) and max(tid).
        EXECUTE format($f$
            CREATE FUNCTION %1$I.hijack_count(c pg_catalog.int8) RETURNS pg_catalog.int8
            LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $b$
            BEGIN PERFORM public.hijack_note(%2$L); RETURN c OPERATOR(pg_catalog.+) 1; END $b$;
            CREATE AGGREGATE %1$I.count(*) (SFUNC = %1$I.hijack_count, STYPE = pg_catalog.int8, INITCOND = '0');
            CREATE FUNCTION %1$I.hijack_max(m pg_catalog.tid, t pg_catalog.tid) RETURNS pg_catalog.tid
            LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $b$
            BEGIN PERFORM public.hijack_note(%3$L); RETURN CASE WHEN m IS NULL THEN t ELSE pg_catalog.tidlarger(m, t) END; END $b$;
            CREATE AGGREGATE %1$I.max(pg_catalog.tid) (SFUNC = %1$I.hijack_max, STYPE = pg_catalog.tid);
        $f$, s, s || '.count(*)', s || '.max(tid)');
        -- Domains named like the types a PL/pgSQL block declares.
        FOREACH t IN ARRAY ARRAY['text', 'tid', 'oid', 'regtype', 'regclass', 'name', 'int4', 'int8', 'bool'] LOOP
            EXECUTE format('CREATE DOMAIN %I.%I AS pg_catalog.%I CHECK (public.hijack_note(%L))',
                           s, t, t, format('domain %s.%s', s, t));
        END LOOP;
    END LOOP;
END
$plant$;
RESET search_path;
RESET ROLE;
-- (Every pg_catalog operator over those types has its look-alike; the
-- number of them differs between versions.)
SELECT n.nspname, count(*) FILTER (WHERE kind = 'operator') > 250 AS operators,
       NOT EXISTS (
           SELECT FROM regress.catalog_operators() c
            WHERE NOT EXISTS (SELECT FROM pg_operator p WHERE p.oprnamespace = n.oid AND p.oprname = c.op
                                                         AND p.oprleft = c.l::regtype::oid AND p.oprright = c.r::regtype::oid)) AS every_operator,
       count(*) FILTER (WHERE kind = 'format') AS formats,
       count(*) FILTER (WHERE kind = 'aggregate') AS aggregates, count(*) FILTER (WHERE kind = 'domain') AS domains
FROM (SELECT oprnamespace, 'operator' FROM pg_operator
      UNION ALL SELECT pronamespace, CASE WHEN prokind = 'a' THEN 'aggregate' ELSE 'format' END FROM pg_proc
                WHERE proname IN ('format', 'count', 'max')
      UNION ALL SELECT typnamespace, 'domain' FROM pg_type WHERE typtype = 'd') o(nsp, kind)
JOIN pg_namespace n ON n.oid = o.nsp WHERE n.nspname IN ('public', 'mallory') GROUP BY n.nspname, n.oid ORDER BY 1;
-- A temporary table named like the target (pg_temp is searched first for tables).
CREATE TEMP TABLE sp_clients AS SELECT * FROM public.sp_clients;
GRANT SELECT ON public.sp_clients TO regress_app;

-- The plants work: statements like those of an unqualified rotate_column,
-- run by an ordinary role, call mallory's code — with public or mallory's
-- schema first in the search_path, and some even with pg_catalog first,
-- where pg_catalog has no exact match (regtype = regtype, format(text, regclass, …)).
SET ROLE regress_app;
SET search_path = public, pg_catalog;
SELECT 'jsonb'::regtype = 'jsonb'::regtype AS same_type, format('%s.%I', 'public.sp_clients'::regclass, 'notes'::name) AS formatted;
DO $$DECLARE n bigint := 1; t tid := '(0,1)'; BEGIN IF n > 0 THEN n := n + 1; END IF; END $$;
SELECT count(*) AS rows FROM public.sp_clients WHERE ctid > '(0,0)';
SET search_path = mallory, public, pg_catalog;
SELECT max(ctid) IS NOT NULL AS has_max FROM public.sp_clients WHERE key_version(notes) <> 'v9';
SET search_path = pg_catalog, public;
SELECT 'jsonb'::regtype = 'jsonb'::regtype AS same_type, format('%s.%I', 'public.sp_clients'::regclass, 'notes'::name) AS formatted;
RESET search_path;
RESET ROLE;
SELECT what, by_role, count(*) FROM public.hijack_log GROUP BY 1, 2 ORDER BY 1, 2;
TRUNCATE public.hijack_log;

-- The rotation, by a superuser with keys, mallory's objects first.
SET pazpaz.encryption_key_version = 'v2';
SET search_path = public, pg_catalog;
CALL rotate_column('public.sp_clients', 'notes', 3);
-- (Qualified: with mallory's schema first she could also plant a rotate_column.)
SET search_path = mallory, public, pg_catalog;
CALL public.rotate_column('public.sp_clients', 'history', 3);
RESET search_path;

-- Nothing of mallory's ran, she is not a superuser, and the rotation worked:
-- every row on v2, every value authentic and decrypting to its plaintext;
-- the temporary table was not touched.
SELECT what, by_role FROM public.hijack_log;
SELECT rolsuper AS mallory_is_superuser FROM pg_roles WHERE rolname = 'mallory';
SELECT key_version(notes) AS notes_version, key_version(history) AS history_version, count(*)
FROM public.sp_clients GROUP BY 1, 2 ORDER BY 1, 2;
SELECT count(*) FILTER (WHERE verify_field_versioned(notes) AND decrypt_field_versioned(notes) = plain AND history::text = plain) AS decrypt_ok
FROM public.sp_clients;
SELECT key_version(notes) AS temp_notes_version, key_version(history) AS temp_history_version, count(*)
FROM pg_temp.sp_clients GROUP BY 1, 2 ORDER BY 1, 2;

DROP TABLE pg_temp.sp_clients;
DROP TABLE public.sp_clients;
DROP OWNED BY mallory;
REVOKE CREATE ON SCHEMA public FROM mallory;
REVOKE USAGE ON SCHEMA regress FROM mallory;
DROP ROLE mallory;
