"""Whose code runs in a session that holds the keys, and what an interrupted
wait reports: rotate_column reached through an unqualified CALL under a
search_path with a writable schema, partitions of another owner, tables
with a search index put into inheritance trees, and lock waits of the
procedures and of ALTER SCHEMA … RENAME cancelled by lock_timeout."""

import threading
import time

import psycopg
import pytest

from conftest import new_key, remove_cluster, run_pg, free_port, Cluster, unique_name

pytestmark = pytest.mark.every_version


@pytest.fixture(scope="module")
def server():
    # RUST_BACKTRACE=1 in the server's environment, as on a developer's
    # machine: a Rust backtrace, if one were attached to an error, would
    # then reach the client.
    name = unique_name("trust")
    port = free_port()
    run_pg(f"pg_start {name} {port} \"shared_preload_libraries = 'pazpaz_crypto'\"", env={"RUST_BACKTRACE": "1"})
    yield Cluster(name, port)
    remove_cluster(name)


@pytest.fixture
def db(server):
    name = unique_name("t")
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    with psycopg.connect(server.dsn(name), autocommit=True) as c:
        c.execute("CREATE SCHEMA pazpaz")
        c.execute("CREATE EXTENSION pazpaz_crypto SCHEMA pazpaz")
        c.execute("GRANT USAGE ON SCHEMA pazpaz TO PUBLIC")
        c.execute("CREATE TABLE public.plant_log (what text)")
        c.execute("GRANT INSERT ON public.plant_log TO PUBLIC")
        c.execute("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenant_py') THEN "
                  "CREATE ROLE tenant_py; END IF; END$$")
        c.execute("GRANT CREATE ON SCHEMA public TO tenant_py")
    yield name
    server.drop_db(name)


def keyed(server, dbname):
    c = psycopg.connect(server.dsn(dbname), autocommit=True)
    c.execute("SET search_path = pazpaz, public")
    c.execute("SELECT set_config('pazpaz.encryption_keys', %s, false), "
              "set_config('pazpaz.encryption_key_version', 'v1', false)",
              ('{"v1": "%s", "v2": "%s"}' % (new_key(), new_key()),))
    return c


def planted(c):
    return [r[0] for r in c.execute("SELECT what FROM public.plant_log")]


def test_an_unqualified_rotate_column_call_reaches_the_extension(server, db):
    c = keyed(server, db)
    c.execute("SET ROLE tenant_py")
    c.execute("CREATE PROCEDURE public.rotate_column(tbl text, col text, batch_size int DEFAULT 1000, "
              "key_version text DEFAULT NULL) LANGUAGE plpgsql AS "
              "$$BEGIN INSERT INTO public.plant_log VALUES ('rotate_column'); END$$")
    c.execute("RESET ROLE")
    c.execute("CREATE TABLE public.t (id int, secret jsonb)")
    c.execute("INSERT INTO public.t SELECT i, encrypt_field_versioned('v' || i) FROM generate_series(1, 50) i")
    c.execute("SELECT set_config('pazpaz.encryption_key_version', 'v2', false)")
    c.execute("CALL rotate_column('public.t', 'secret')")
    assert planted(c) == []
    assert c.execute("SELECT count(*) FILTER (WHERE key_version(secret) = 'v2'), count(*) FROM public.t"
                     ).fetchone() == (50, 50)
    c.close()


def test_a_regclass_table_with_a_literal_column_reaches_the_extension(server, db):
    """A literal column name beside a regclass picks text over name: the
    extension has (regclass, text) overloads, so look-alikes with those
    types in a later schema lose."""
    c = keyed(server, db)
    c.execute("SET ROLE tenant_py")
    log = "LANGUAGE plpgsql AS $$BEGIN INSERT INTO public.plant_log VALUES ('{}'); END$$"
    for sig in ("rotate_column(tbl regclass, col text)", "rotate_column(regclass, text, integer)",
                "add_blind_index(tbl regclass, col text)", "drop_blind_index(tbl regclass, col text)",
                "add_match_index(tbl regclass, col text)", "drop_match_index(tbl regclass, col text)"):
        c.execute(f"CREATE PROCEDURE public.{sig} " + log.format(sig.split("(")[0]))
    c.execute("RESET ROLE")
    c.execute("SELECT set_config('pazpaz.index_key', %s, false)", (new_key(),))
    c.execute("CREATE TABLE public.t (id int, secret jsonb, email pazpaz.encrypted_text)")
    c.execute("INSERT INTO public.t SELECT i, encrypt_field_versioned('v' || i), 'e' || i FROM generate_series(1, 20) i")
    c.execute("SELECT set_config('pazpaz.encryption_key_version', 'v2', false)")
    c.execute("CALL rotate_column('public.t'::regclass, 'secret')")
    c.execute("SELECT set_config('pazpaz.encryption_key_version', 'v1', false)")
    c.execute("CALL rotate_column('public.t'::regclass, 'secret', 500)")
    c.execute("CALL add_blind_index('public.t'::regclass, 'email')")
    assert c.execute("SELECT count(*) FROM public.t WHERE email_bidx IS NOT NULL").fetchone() == (20,)
    c.execute("CALL drop_blind_index('public.t'::regclass, 'email')")
    c.execute("CALL add_match_index('public.t'::regclass, 'email')")
    assert c.execute("SELECT count(*) FROM public.t WHERE email_tokens IS NOT NULL").fetchone() == (20,)
    c.execute("CALL drop_match_index('public.t'::regclass, 'email')")
    assert planted(c) == []
    assert c.execute("SELECT count(*) FROM public.t WHERE key_version(secret) = 'v1'").fetchone() == (20,)
    c.close()


def test_a_trigger_of_another_role_stops_the_rotation_before_it_runs(server, db):
    """GRANT ALL includes TRIGGER: a role with it can put its own code on
    the owner's table, which the batches' UPDATEs would run with the keys,
    through the trigger's function or its WHEN clause (even one made of
    built-in and extension functions only)."""
    c = keyed(server, db)
    c.execute("CREATE TABLE public.t (id int, secret jsonb)")
    c.execute("INSERT INTO public.t SELECT i, encrypt_field_versioned('v' || i) FROM generate_series(1, 10) i")
    c.execute("GRANT ALL ON public.t TO tenant_py")
    c.execute("CREATE FUNCTION public.owners_noop() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$")
    c.execute("SET ROLE tenant_py")
    c.execute("CREATE FUNCTION public.steal() RETURNS trigger LANGUAGE plpgsql AS "
              "$$BEGIN INSERT INTO public.plant_log VALUES (pazpaz.decrypt_field_versioned(NEW.secret)); "
              "RETURN NEW; END$$")
    c.execute("CREATE FUNCTION public.peek(v jsonb) RETURNS bool LANGUAGE plpgsql AS "
              "$$BEGIN INSERT INTO public.plant_log VALUES (pazpaz.decrypt_field_versioned(v)); RETURN true; END$$")
    c.execute("CREATE TRIGGER a_steal BEFORE UPDATE ON public.t FOR EACH ROW EXECUTE FUNCTION public.steal()")
    c.execute("CREATE TRIGGER a_builtin BEFORE UPDATE ON public.t FOR EACH ROW "
              "WHEN (pg_catalog.set_config('plant.seen', pazpaz.decrypt_field_versioned(OLD.secret), false) "
              "IS NOT NULL) EXECUTE FUNCTION pg_catalog.suppress_redundant_updates_trigger()")
    c.execute("RESET ROLE")
    c.execute("SELECT set_config('plant.seen', '', false)")
    c.execute("SELECT set_config('pazpaz.encryption_key_version', 'v2', false)")
    # While the role holds TRIGGER, nothing runs.
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
        c.execute("CALL rotate_column('public.t', 'secret')")
    assert "tenant_py" in str(e.value) and "TRIGGER" in str(e.value), str(e.value)
    # Revoked, what it left behind is refused on each batch: its function.
    c.execute("REVOKE TRIGGER ON public.t FROM tenant_py")
    c.execute("DROP TRIGGER a_builtin ON public.t")
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
        c.execute("CALL rotate_column('public.t', 'secret')")
    assert "a_steal" in str(e.value), str(e.value)
    c.execute("DROP TRIGGER a_steal ON public.t")
    # The owner's own function, with the other role's WHEN clause.
    c.execute("GRANT TRIGGER ON public.t TO tenant_py")
    c.execute("SET ROLE tenant_py")
    c.execute("CREATE TRIGGER a_peek BEFORE UPDATE ON public.t FOR EACH ROW WHEN (public.peek(OLD.secret)) "
              "EXECUTE FUNCTION public.owners_noop()")
    c.execute("RESET ROLE")
    c.execute("REVOKE TRIGGER ON public.t FROM tenant_py")
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
        c.execute("CALL rotate_column('public.t', 'secret')")
    assert "a_peek" in str(e.value), str(e.value)
    assert planted(c) == []
    assert c.execute("SELECT current_setting('plant.seen')").fetchone() == ("",)
    # The owner's own trigger, with a WHEN clause of built-in code, is fine;
    # so is another role's trigger that never fires on UPDATE, INSERT or
    # DELETE.
    c.execute("DROP TRIGGER a_peek ON public.t")
    c.execute("CREATE TRIGGER a_mine BEFORE UPDATE ON public.t FOR EACH ROW WHEN (OLD.id > 0) "
              "EXECUTE FUNCTION public.owners_noop()")
    c.execute("CREATE TRIGGER a_truncate_only BEFORE TRUNCATE ON public.t EXECUTE FUNCTION public.steal()")
    c.execute("CALL rotate_column('public.t', 'secret')")
    assert c.execute("SELECT count(*) FROM public.t WHERE key_version(secret) = 'v2'").fetchone() == (10,)
    assert planted(c) == []
    c.close()


def test_a_partition_of_another_owner_stops_the_rotation_before_its_code_runs(server, db):
    c = keyed(server, db)
    c.execute("CREATE TABLE public.p (id int, secret jsonb) PARTITION BY RANGE (id)")
    c.execute("CREATE TABLE public.p1 PARTITION OF public.p FOR VALUES FROM (0) TO (10)")
    c.execute("CREATE TABLE public.p2 PARTITION OF public.p FOR VALUES FROM (10) TO (20)")
    c.execute("INSERT INTO public.p SELECT i, encrypt_field_versioned('v' || i) FROM generate_series(0, 19) i")
    c.execute("ALTER TABLE public.p2 OWNER TO tenant_py")
    c.execute("SET ROLE tenant_py")
    c.execute("CREATE FUNCTION public.steal() RETURNS trigger LANGUAGE plpgsql AS "
              "$$BEGIN INSERT INTO public.plant_log VALUES (NEW.secret::text); RETURN NEW; END$$")
    c.execute("CREATE TRIGGER a_steal BEFORE UPDATE ON public.p2 FOR EACH ROW EXECUTE FUNCTION public.steal()")
    c.execute("RESET ROLE")
    c.execute("SELECT set_config('pazpaz.encryption_key_version', 'v2', false)")
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
        c.execute("CALL rotate_column('public.p', 'secret', 5)")
    assert '"p2"' in str(e.value) and e.value.diag.message_hint, str(e.value)
    assert planted(c) == []
    # Given back to the table's owner, the tree rotates.
    c.execute("DROP TRIGGER a_steal ON public.p2")
    c.execute("ALTER TABLE public.p2 OWNER TO CURRENT_USER")
    c.execute("CALL rotate_column('public.p', 'secret', 5)")
    assert c.execute("SELECT count(*) FROM public.p WHERE key_version(secret) = 'v2'").fetchone() == (20,)
    c.close()


def test_a_parent_of_another_owner_stops_the_rotation_of_its_partition(server, db):
    """A partitioned parent's owner can put an index (with its own
    function in the expression), a CHECK constraint or a row trigger on
    every partition through the parent."""
    c = keyed(server, db)
    c.execute("CREATE TABLE public.p (id int, secret jsonb) PARTITION BY RANGE (id)")
    c.execute("CREATE TABLE public.p1 PARTITION OF public.p FOR VALUES FROM (0) TO (10)")
    c.execute("INSERT INTO public.p SELECT i, encrypt_field_versioned('v' || i) FROM generate_series(0, 9) i")
    c.execute("ALTER TABLE public.p OWNER TO tenant_py")
    c.execute("SET ROLE tenant_py")
    # (An index expression must be IMMUTABLE, so it leaves its mark in a
    # setting of the session that runs it.)
    c.execute("CREATE FUNCTION public.look(v jsonb) RETURNS int IMMUTABLE LANGUAGE plpgsql AS "
              "$$BEGIN PERFORM pg_catalog.set_config('plant.seen', "
              "coalesce(pazpaz.decrypt_field_versioned(v), 'ran'), false); RETURN 1; "
              "EXCEPTION WHEN OTHERS THEN PERFORM pg_catalog.set_config('plant.seen', 'ran', false); RETURN 1; END$$")
    c.execute("CREATE INDEX ON public.p (public.look(secret))")
    c.execute("RESET ROLE")
    c.execute("SELECT set_config('plant.seen', '', false)")  # the index build's own calls
    c.execute("SELECT set_config('pazpaz.encryption_key_version', 'v2', false)")
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
        c.execute("CALL rotate_column('public.p1', 'secret')")
    assert '"p"' in str(e.value), str(e.value)
    assert c.execute("SELECT current_setting('plant.seen')").fetchone() == ("",)
    c.close()


def test_a_table_dropped_while_the_call_waits_for_it(server, db):
    with psycopg.connect(server.dsn(db), autocommit=True) as c:
        c.execute("CREATE TABLE public.gone (id int, secret jsonb)")
        c.execute("INSERT INTO public.gone VALUES (1, NULL)")
    holder = psycopg.connect(server.dsn(db))
    holder.execute("LOCK TABLE public.gone IN ACCESS EXCLUSIVE MODE")
    c = keyed(server, db)
    result = {}

    def call():
        try:
            c.execute("CALL rotate_column('public.gone', 'secret')")
        except psycopg.Error as e:
            result["error"] = e
    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.5)
    holder.execute("DROP TABLE public.gone")
    holder.commit()
    holder.close()
    t.join(30)
    e = result.get("error")
    assert isinstance(e, psycopg.errors.UndefinedTable), repr(e)
    assert "dropped during rotate_column" in str(e), str(e)
    assert "pgrx" not in str(e) and "backtrace" not in str(e), str(e)
    c.close()


def test_a_table_with_a_search_index_stays_out_of_inheritance_trees(server, db):
    c = keyed(server, db)
    c.execute("SELECT set_config('pazpaz.index_key', %s, false)", (new_key(),))
    c.execute("CREATE TABLE public.m (id int, email pazpaz.encrypted_text)")
    c.execute("INSERT INTO public.m VALUES (1, 'a@example.com')")
    c.execute("CALL add_blind_index('public.m', 'email')")
    c.execute("CREATE TABLE public.parts (id int, email pazpaz.encrypted_text, email_bidx bytea) "
              "PARTITION BY RANGE (id)")
    c.execute("CREATE TABLE public.plain (id int, email pazpaz.encrypted_text, email_bidx bytea)")
    for sql in ("ALTER TABLE public.parts ATTACH PARTITION public.m FOR VALUES FROM (0) TO (100)",
                "ALTER TABLE public.m INHERIT public.plain",
                "ALTER TABLE public.plain INHERIT public.m",
                "CREATE TABLE public.child () INHERITS (public.m)"):
        with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
            c.execute(sql)
        assert "search index" in str(e.value), (sql, str(e.value))
    assert c.execute("SELECT count(*) FROM pg_inherits").fetchone() == (0,)
    c.execute("CREATE FOREIGN DATA WRAPPER trust_fdw")
    c.execute("CREATE SERVER trust_srv FOREIGN DATA WRAPPER trust_fdw")
    with pytest.raises(psycopg.errors.FeatureNotSupported):
        c.execute("CREATE FOREIGN TABLE public.fchild () INHERITS (public.m) SERVER trust_srv")
    # In REPEATABLE READ, an index committed after the snapshot was taken
    # is seen all the same (the check reads the catalog as it is now).
    c.execute("CREATE TABLE public.r (id int, email pazpaz.encrypted_text)")
    rr = psycopg.connect(server.dsn(db))
    rr.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    rr.execute("SELECT 1")
    c.execute("CALL add_blind_index('public.r', 'email')")
    with pytest.raises(psycopg.errors.FeatureNotSupported):
        rr.execute("ALTER TABLE public.r INHERIT public.plain")
    rr.rollback()
    rr.close()
    assert c.execute("SELECT count(*) FROM pg_inherits").fetchone() == (0,)
    # A table in a tree cannot get one either.
    c.execute("CREATE TABLE public.q1 PARTITION OF public.parts FOR VALUES FROM (100) TO (200)")
    with pytest.raises(psycopg.errors.FeatureNotSupported):
        c.execute("CALL add_blind_index('public.q1', 'email')")
    # Without its index, the table attaches as any other.
    c.execute("CALL drop_blind_index('public.m', 'email')")
    c.execute("ALTER TABLE public.m ADD COLUMN email_bidx bytea")
    c.execute("ALTER TABLE public.parts ATTACH PARTITION public.m FOR VALUES FROM (0) TO (100)")
    c.close()


def lock_timeout_error(server, db, hold_sql, wait_sql):
    holder = psycopg.connect(server.dsn(db))
    holder.execute(hold_sql)
    c = keyed(server, db)
    c.execute("SET lock_timeout = '300ms'")
    try:
        with pytest.raises(psycopg.errors.LockNotAvailable) as e:
            c.execute(wait_sql)
    finally:
        holder.rollback()
        holder.close()
    c.close()
    return e.value


def test_an_interrupted_lock_wait_reports_the_server_error_without_a_backtrace(server, db):
    with psycopg.connect(server.dsn(db), autocommit=True) as c:
        c.execute("CREATE SCHEMA app")
        c.execute("CREATE TABLE app.t (id int, secret jsonb)")
        c.execute("INSERT INTO app.t VALUES (1, NULL)")
    # rotate_column's lock by OID, each batch.
    err = lock_timeout_error(server, db, "LOCK TABLE app.t IN ACCESS EXCLUSIVE MODE",
                             "CALL rotate_column('app.t', 'secret')")
    assert "lock timeout" in err.diag.message_primary
    assert err.diag.message_detail is None, err.diag.message_detail
    assert "rotate_column" in (err.diag.context or ""), err.diag.context
    # ALTER SCHEMA … RENAME's lock of the schema (PostgreSQL's own rename
    # takes none), which a CREATE in it holds, and a batch of the CALLs
    # (rotation_lock) too: a rename waits for the batch's transaction.
    for hold in ("CREATE TABLE app.u (x int)", "SELECT pazpaz.rotation_lock('app.t'::regclass)"):
        err = lock_timeout_error(server, db, hold, "ALTER SCHEMA app RENAME TO app2")
        assert "lock timeout" in err.diag.message_primary
        assert err.diag.message_detail is None, err.diag.message_detail
    with psycopg.connect(server.dsn(db), autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'app'").fetchone() == (1,)
    # A cancel of the wait: the same.
    holder = psycopg.connect(server.dsn(db))
    holder.execute("LOCK TABLE app.t IN ACCESS EXCLUSIVE MODE")
    c = keyed(server, db)
    threading.Timer(0.5, c.cancel).start()
    try:
        with pytest.raises(psycopg.errors.QueryCanceled) as e:
            c.execute("CALL rotate_column('app.t', 'secret')")
        assert e.value.diag.message_detail is None, e.value.diag.message_detail
    finally:
        holder.rollback()
        holder.close()
        c.close()
    time.sleep(0.1)
