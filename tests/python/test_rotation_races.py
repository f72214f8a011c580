"""rotate_column against another session acting between its batches:
triggers enabled for a while, partitions detached and re-attached, children
unlinked, columns renamed, AFTER triggers undoing the update, rewrites,
locks, prepared transactions, a hostile search_path. Each ends done with
every row rotated, or with a WARNING or an ERROR: never a false "done".
The walk is slowed down by an IMMUTABLE expression index that sleeps a few
milliseconds per indexed value (the owner's own index: no trigger, so the
procedure does not treat the table as "guarded"), which leaves room for a
concurrent session to act between two batches."""

import json
import threading
import time

import psycopg
import pytest

from conftest import new_key

# PostgreSQL 15 only: the procedure is version-independent PL/pgSQL, which
# test_rotation_edges.py runs on every version; these take minutes (sleeps).

K1, K2 = new_key(), new_key()
RING = {"v1": K1, "v2": K2}
SLOW = """
CREATE FUNCTION slowf(jsonb) RETURNS int LANGUAGE plpgsql IMMUTABLE
AS $$ BEGIN PERFORM pg_catalog.pg_sleep(%s); RETURN 1; END $$
"""


def connect(cluster, db, version="v1", notes=None):
    c = psycopg.connect(cluster.dsn(db), autocommit=True)
    c.execute("SELECT set_config('pazpaz.encryption_keys', %s, false), "
              "set_config('pazpaz.encryption_key_version', %s, false)", [json.dumps(RING), version])
    if notes is not None:
        c.add_notice_handler(lambda d: notes.append(f"{d.severity}: {d.message_primary}"))
    return c


def fill(c, table, n, col="c", version="v1", start=1):
    c.execute(f"INSERT INTO {table} (id, {col}) SELECT g, encrypt_field_versioned('secret-' || g, %s) "
              f"FROM generate_series(%s::int, %s::int) g", [version, start, start + n - 1])


def not_on(c, table, col="c", version="v2"):
    """Rows whose value is not labelled `version` or does not authenticate."""
    return c.execute(f"SELECT count(*) FROM {table} WHERE {col} IS NOT NULL AND "
                     f"(({col}->>'version') IS DISTINCT FROM %s OR NOT verify_field_versioned({col}))",
                     [version]).fetchone()[0]


def said_done(notes):
    return any("rotate_column: done" in n for n in notes)


def run_call(cluster, db, sql, notes, errors):
    def body():
        try:
            with connect(cluster, db, "v2", notes) as c:
                c.execute(sql)
        except Exception as e:  # noqa: BLE001 - recorded for the assertion
            errors.append(e)
    t = threading.Thread(target=body)
    t.start()
    return t


def wait_rotated(c, table, at_least, timeout=60, col="c"):
    end = time.time() + timeout
    while time.time() < end:
        n = c.execute(f"SELECT count(*) FROM {table} WHERE {col}->>'version' = 'v2'").fetchone()[0]
        if n >= at_least:
            return n
        time.sleep(0.01)
    raise AssertionError("the walk did not start")


def assert_no_false_done(c, table, notes, errors, col="c"):
    left = not_on(c, table, col)
    if said_done(notes):
        assert left == 0, (f"rotate_column said done but {left} rows of {table}.{col} are not on v2 "
                           f"(or do not authenticate); notices: {notes[-6:]} errors: {errors}")


# --- findings candidates -------------------------------------------------


def test_trigger_enabled_then_disabled_mid_call(cluster, db):
    """A BEFORE UPDATE trigger that keeps rows from changing, enabled between
    two batches and disabled again before the check: the rows it kept were
    not written since the CALL began, and must still be found."""
    with connect(cluster, db) as c:
        c.execute(SLOW % "0.004")
        c.execute("CREATE TABLE t (id int PRIMARY KEY, c jsonb)")
        c.execute("CREATE INDEX ON t (slowf(c))")
        c.execute("CREATE FUNCTION keep() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_catalog.pg_sleep(0.004); RETURN NULL; END $$")
        c.execute("CREATE TRIGGER keep BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION keep()")
        c.execute("ALTER TABLE t DISABLE TRIGGER keep")
        fill(c, "t", 1500)
        c.execute("VACUUM ANALYZE t")
        notes, errors = [], []
        th = run_call(cluster, db, "CALL rotate_column('t', 'c', 50)", notes, errors)
        wait_rotated(c, "t", 1)
        c.execute("ALTER TABLE t ENABLE TRIGGER keep")
        time.sleep(0.6)
        c.execute("ALTER TABLE t DISABLE TRIGGER keep")
        th.join(120)
        assert_no_false_done(c, "t", notes, errors)


def test_partition_detached_and_reattached_mid_call(cluster, db):
    """A partition detached between two batches and attached again before
    the check (its files the same at the end): the batches that missed it
    must not be taken for done."""
    with connect(cluster, db) as c:
        c.execute(SLOW % "0.002")
        c.execute("CREATE TABLE p (id int, c jsonb) PARTITION BY RANGE (id)")
        c.execute("CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (1) TO (100000)")
        c.execute("CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (100000) TO (200000)")
        c.execute("CREATE INDEX ON p (slowf(c))")
        fill(c, "p", 1500, start=1)
        fill(c, "p", 1500, start=100000)
        c.execute("VACUUM ANALYZE p")
        notes, errors = [], []
        th = run_call(cluster, db, "CALL rotate_column('p', 'c', 40)", notes, errors)
        wait_rotated(c, "p2", 1)
        c.execute("ALTER TABLE p DETACH PARTITION p2")
        time.sleep(1.5)
        c.execute("ALTER TABLE p ATTACH PARTITION p2 FOR VALUES FROM (100000) TO (200000)")
        th.join(120)
        assert_no_false_done(c, "p", notes, errors)


def test_inheritance_child_unlinked_and_relinked_mid_call(cluster, db):
    """The same with inheritance: NO INHERIT, then INHERIT again."""
    with connect(cluster, db) as c:
        c.execute(SLOW % "0.002")
        c.execute("CREATE TABLE h (id int, c jsonb)")
        c.execute("CREATE TABLE h1 () INHERITS (h)")
        c.execute("CREATE INDEX ON h (slowf(c))")
        c.execute("CREATE INDEX ON h1 (slowf(c))")
        fill(c, "h", 1500)
        fill(c, "h1", 1500, start=100000)
        c.execute("VACUUM ANALYZE h, h1")
        notes, errors = [], []
        th = run_call(cluster, db, "CALL rotate_column('h', 'c', 40)", notes, errors)
        wait_rotated(c, "ONLY h1", 1)
        c.execute("ALTER TABLE h1 NO INHERIT h")
        time.sleep(1.5)
        c.execute("ALTER TABLE h1 INHERIT h")
        th.join(120)
        assert_no_false_done(c, "h", notes, errors)


def test_columns_swapped_mid_call(cluster, db):
    """Two envelope columns whose names are swapped between batches: the
    CALL must not go on rotating the other column under the given name."""
    with connect(cluster, db) as c:
        c.execute(SLOW % "0.003")
        c.execute("CREATE TABLE s (id int PRIMARY KEY, a jsonb, b jsonb)")
        c.execute("CREATE INDEX ON s (slowf(a))")
        c.execute("CREATE INDEX ON s (slowf(b))")
        c.execute("INSERT INTO s SELECT g, encrypt_field_versioned('a-' || g, 'v1'), "
                  "encrypt_field_versioned('b-' || g, 'v1') FROM generate_series(1, 1500) g")
        c.execute("VACUUM ANALYZE s")
        notes, errors = [], []
        th = run_call(cluster, db, "CALL rotate_column('s', 'a', 50)", notes, errors)
        wait_rotated(c, "s", 1, col="a")
        with c.transaction():
            c.execute("ALTER TABLE s RENAME a TO tmp")
            c.execute("ALTER TABLE s RENAME b TO a")
            c.execute("ALTER TABLE s RENAME tmp TO b")
        th.join(120)
        # The done notice names s.a: whichever column that is now, or the one
        # it was, must be fully rotated.
        if said_done(notes):
            left_a, left_b = not_on(c, "s", "a"), not_on(c, "s", "b")
            assert left_a == 0 and left_b == 0, (
                f"done, but {left_a} rows of s.a and {left_b} of s.b (the column first named a) "
                f"are not on v2: {notes[-4:]}")


def test_after_trigger_undoing_the_update(cluster, db):
    """An AFTER UPDATE row trigger that writes the old value back does it
    with the batch's own transaction ID: those rows must still be found."""
    with connect(cluster, db) as c:
        c.execute("CREATE TABLE u (id int PRIMARY KEY, c jsonb)")
        c.execute("""CREATE FUNCTION undo() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN
                       IF NEW.id % 10 = 0 AND OLD.c->>'version' = 'v1' THEN
                         UPDATE u SET c = OLD.c WHERE id = NEW.id;
                       END IF;
                       RETURN NULL;
                     END $$""")
        c.execute("CREATE TRIGGER undo AFTER UPDATE ON u FOR EACH ROW EXECUTE FUNCTION undo()")
        fill(c, "u", 200)
        notes, errors = [], []
        with connect(cluster, db, "v2", notes) as r:
            try:
                r.execute("CALL rotate_column('u', 'c', 50)")
            except psycopg.Error as e:
                errors.append(e)
        assert_no_false_done(c, "u", notes, errors)


# --- what held (kept as regression probes) ------------------------------


def test_relabelled_value_found_and_counted(cluster, db):
    """A v1 ciphertext relabelled "v2" is re-encrypted from v1 and the
    notices count it as such."""
    with connect(cluster, db) as c:
        c.execute("CREATE TABLE r (id int PRIMARY KEY, c jsonb)")
        fill(c, "r", 300, version="v2")
        fill(c, "r", 5, start=1000)
        c.execute("UPDATE r SET c = jsonb_set(c, '{version}', '\"v2\"') WHERE id >= 1000")
        notes = []
        with connect(cluster, db, "v2", notes) as r:
            r.execute("CALL rotate_column('r', 'c', 50)")
        assert said_done(notes), notes
        assert not_on(c, "r") == 0
        assert any("5 values" in n and "did not authenticate" in n for n in notes), notes
        got = c.execute("SELECT decrypt_field_versioned(c) FROM r WHERE id = 1002").fetchone()[0]
        assert got == "secret-1002"


def test_non_envelope_plaintext_not_echoed(cluster, db):
    """A jsonb value that is no envelope (e.g. an unmigrated plaintext) makes
    the CALL fail without quoting the value."""
    with connect(cluster, db) as c:
        c.execute("CREATE TABLE n (id int PRIMARY KEY, c jsonb)")
        fill(c, "n", 20)
        c.execute("""INSERT INTO n VALUES (99, '{"ssn": "078-05-1120"}'),
                     (98, '{"version": "v1", "ciphertext": "078-05-1120"}'),
                     (97, '{"version": "v2", "ciphertext": "MDc4LTA1LTExMjA="}')""")
        for bad in (99, 98, 97):
            notes = []
            with connect(cluster, db, "v2", notes) as r:
                with pytest.raises(psycopg.Error) as ei:
                    r.execute("CALL rotate_column('n', 'c', 5)")
            d = ei.value.diag
            text = " ".join(str(x) for x in (d.message_primary, d.message_detail, d.message_hint,
                                              d.context, *notes))
            assert "078-05-1120" not in text and "MDc4LTA1LTExMjA" not in text, text
            assert K1 not in text and K2 not in text
            c.execute("DELETE FROM n WHERE id = %s", [bad])
        log = cluster.log.read_text(errors="replace")
        assert K1 not in log and K2 not in log and "078-05-1120" not in log


def test_concurrent_writer_relabels_behind_walk(cluster, db):
    """Rows written by others behind the walk (a relabelled v1 value, a fresh
    v1 value) are caught by the check."""
    with connect(cluster, db) as c:
        c.execute(SLOW % "0.002")
        c.execute("CREATE TABLE w (id int PRIMARY KEY, c jsonb)")
        c.execute("CREATE INDEX ON w (slowf(c))")
        fill(c, "w", 1500)
        c.execute("VACUUM ANALYZE w")
        notes, errors = [], []
        th = run_call(cluster, db, "CALL rotate_column('w', 'c', 50)", notes, errors)
        wait_rotated(c, "w", 200)
        c.execute("UPDATE w SET c = jsonb_set(encrypt_field_versioned('x', 'v1'), '{version}', '\"v2\"') WHERE id = 1")
        c.execute("UPDATE w SET c = encrypt_field_versioned('y', 'v1') WHERE id = 2")
        th.join(120)
        assert not errors, errors
        assert said_done(notes) or any(n.startswith("WARNING") for n in notes), notes
        assert_no_false_done(c, "w", notes, errors)


def test_prepared_transaction_inserts_commit_after_walk(new_cluster):
    """Rows inserted by a transaction prepared before the CALL and committed
    during it: invisible to the walk, and their xmin is older than the CALL's
    own transactions."""
    cl = new_cluster("rotrev2pc", "max_prepared_transactions = 5")
    db = cl.create_db()
    with connect(cl, db) as c:
        c.execute(SLOW % "0.002")
        c.execute("CREATE TABLE q (id int PRIMARY KEY, c jsonb)")
        c.execute("CREATE INDEX ON q (slowf(c))")
        fill(c, "q", 1500)
        c.execute("VACUUM ANALYZE q")
        with connect(cl, db) as p:
            p.autocommit = False
            fill(p, "q", 10, start=5000)
            p.execute("PREPARE TRANSACTION 'rr'")
        notes, errors = [], []
        th = run_call(cl, db, "CALL rotate_column('q', 'c', 50)", notes, errors)
        wait_rotated(c, "q", 300)
        c.execute("COMMIT PREPARED 'rr'")
        th.join(120)
        assert_no_false_done(c, "q", notes, errors)


def test_hostile_search_path_objects_not_used(cluster, db):
    """A role with CREATE on public plants look-alikes of what rotate_column
    uses; the CALL (search_path public first) must not run them."""
    with connect(cluster, db) as c:
        c.execute("CREATE TABLE hs (id int PRIMARY KEY, c jsonb)")
        fill(c, "hs", 100)
        fill(c, "hs", 3, start=1000)
        c.execute("UPDATE hs SET c = jsonb_set(c, '{version}', '\"v2\"') WHERE id >= 1000")
        c.execute("CREATE ROLE mallory LOGIN")
        c.execute("GRANT CREATE ON SCHEMA public TO mallory")
        c.execute("CREATE TABLE public.pwned (what text)")
        c.execute("GRANT INSERT ON public.pwned TO mallory")
        c.execute("SET ROLE mallory")
        plant = "INSERT INTO public.pwned VALUES ('%s')"
        c.execute(f"""CREATE FUNCTION public.f_tid(tid, tid) RETURNS bool LANGUAGE plpgsql AS $$
                      BEGIN {plant % 'tid'}; RETURN true; END $$""")
        for op in (">=", "<", "="):
            c.execute(f"CREATE OPERATOR public.{op} (LEFTARG = tid, RIGHTARG = tid, FUNCTION = public.f_tid)")
        c.execute(f"""CREATE FUNCTION public.f_txt(text, text) RETURNS bool LANGUAGE plpgsql AS $$
                      BEGIN {plant % 'text'}; RETURN true; END $$""")
        c.execute("CREATE OPERATOR public.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = public.f_txt)")
        c.execute(f"""CREATE FUNCTION public.f_js(jsonb, text) RETURNS text LANGUAGE plpgsql AS $$
                      BEGIN {plant % 'jsonb'}; RETURN 'v2'; END $$""")
        c.execute("CREATE OPERATOR public.->> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = public.f_js)")
        for fn, args in (("count", "anyelement"), ("format", "text, variadic \"any\""),
                         ("age", "xid"), ("set_config", "text, text, boolean")):
            try:
                c.execute(f"""CREATE FUNCTION public.{fn}({args}) RETURNS int LANGUAGE plpgsql AS $$
                              BEGIN {plant % fn}; RETURN 0; END $$""")
            except psycopg.Error:
                pass
        c.execute("RESET ROLE")
        notes = []
        with connect(cluster, db, "v2", notes) as r:
            r.execute("SET search_path = public, pg_catalog")
            r.execute("CALL rotate_column('hs', 'c', 10)")
        assert c.execute("SELECT count(*) FROM public.pwned").fetchone()[0] == 0
        assert said_done(notes) and not_on(c, "hs") == 0, notes


def test_locker_without_write_then_done(cluster, db):
    """A session holding FOR UPDATE on rows during the walk (no write): the
    CALL must not say done while those rows are still v1."""
    with connect(cluster, db) as c:
        c.execute("CREATE TABLE l (id int PRIMARY KEY, c jsonb)")
        fill(c, "l", 500)
        with connect(cluster, db) as locker:
            locker.autocommit = False
            locker.execute("SELECT * FROM l WHERE id % 50 = 0 FOR UPDATE")
            notes, errors = [], []
            with connect(cluster, db, "v2", notes) as r:
                r.execute("CALL rotate_column('l', 'c', 100)")
            locker.rollback()
        assert_no_false_done(c, "l", notes, errors)
        assert not said_done(notes), notes


@pytest.mark.parametrize("rewrite", ["VACUUM FULL w2", "CLUSTER w2 USING w2_pkey"])
def test_rewrite_mid_call(cluster, db, rewrite):
    """VACUUM FULL / CLUSTER between two batches move rows behind the walk
    keeping their xmin: the new files must force the full check."""
    with connect(cluster, db) as c:
        c.execute(SLOW % "0.002")
        c.execute("CREATE TABLE w2 (id int PRIMARY KEY, c jsonb)")
        c.execute("CREATE INDEX ON w2 (slowf(c))")
        fill(c, "w2", 1500)
        c.execute("DELETE FROM w2 WHERE id % 3 = 0")
        c.execute("VACUUM ANALYZE w2")
        notes, errors = [], []
        th = run_call(cluster, db, "CALL rotate_column('w2', 'c', 40)", notes, errors)
        wait_rotated(c, "w2", 300)
        c.execute(rewrite)
        th.join(120)
        assert not errors, errors
        assert_no_false_done(c, "w2", notes, errors)
        assert said_done(notes), notes


def test_mislabelled_count_after_concurrent_update(cluster, db):
    """A relabelled row that another transaction rewrites (to another
    relabelled value) while the batch waits for it: the batch re-evaluates
    the row (READ COMMITTED recheck), and take_mislabelled_count() counts
    every reencrypt_field_versioned call that found a relabelled value, not
    rows written: the notices must still count one value."""
    with connect(cluster, db) as c:
        c.execute("CREATE TABLE m (id int PRIMARY KEY, c jsonb)")
        fill(c, "m", 50, version="v2")
        relabel = "jsonb_set(encrypt_field_versioned(%s, 'v1'), '{version}', '\"v2\"')"
        c.execute(f"UPDATE m SET c = {relabel} WHERE id = 1", ["first"])
        with connect(cluster, db) as w:
            w.autocommit = False
            w.execute(f"UPDATE m SET c = {relabel} WHERE id = 1", ["second"])
            notes, errors = [], []
            th = run_call(cluster, db, "CALL rotate_column('m', 'c', 1000)", notes, errors)
            time.sleep(0.12)
            w.commit()
            th.join(60)
        assert not errors, errors
        assert not_on(c, "m") == 0
        assert c.execute("SELECT decrypt_field_versioned(c) FROM m WHERE id = 1").fetchone()[0] == "second"
        counted = [n for n in notes if "did not authenticate" in n]
        assert counted and all(" 1 values" in n for n in counted), notes
        assert said_done(notes) and "done, 1 rows" in next(n for n in notes if "done" in n), notes


@pytest.mark.parametrize("batch", [1, 2147483647])
def test_edges_encrypted_text_and_jsonb(cluster, db, batch):
    """Empty tables, NULL-only tables, extreme batch sizes, encrypted_text."""
    with connect(cluster, db) as c:
        c.execute("CREATE TABLE e0 (id int, c jsonb)")
        c.execute("CREATE TABLE e1 (id int, c jsonb)")
        c.execute("INSERT INTO e1 SELECT g, NULL FROM generate_series(1, 500) g")
        c.execute("CREATE TABLE et (id int, c encrypted_text)")
        c.execute("INSERT INTO et SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'pt-' || g END "
                  "FROM generate_series(1, 700) g")
        c.execute("DELETE FROM et WHERE id % 5 = 0")
        for t in ("e0", "e1", "et"):
            notes = []
            with connect(cluster, db, "v2", notes) as r:
                r.execute(f"CALL rotate_column('{t}', 'c', {batch})")
            assert said_done(notes), (t, notes)
        left = c.execute("SELECT count(*) FROM et WHERE c IS NOT NULL AND key_version(c) <> 'v2'").fetchone()[0]
        assert left == 0
        assert c.execute("SELECT count(*) FROM et WHERE c::text = 'pt-' || id").fetchone()[0] == \
            c.execute("SELECT count(*) FROM et WHERE c IS NOT NULL").fetchone()[0]
