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
    # ALTER SCHEMA … RENAME's lock of the schema, which a CREATE in it holds.
    err = lock_timeout_error(server, db, "CREATE TABLE app.u (x int)", "ALTER SCHEMA app RENAME TO app2")
    assert "lock timeout" in err.diag.message_primary
    assert err.diag.message_detail is None, err.diag.message_detail
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
