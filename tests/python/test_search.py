"""Search on encrypted columns against a real server: the formats agree with
an independent Python implementation (tests/vectors/search_vectors.py), the
index key and the plaintext never reach the server log (log_statement = all,
a unique violation, errors), an interrupted backfill resumes, and parallel
workers compute the same tokens.

The module runs its own server. With PAZPAZ_PACKAGE_DIR set to a `cargo pgrx
package` tree, that build is loaded through scripts/pg.sh's package overlay
(nothing is installed); otherwise the installed extension is used.
"""

import json
import os
import random
import re
import secrets
import sys
import threading
import time

import psycopg
import pytest

from conftest import ROOT, Cluster, free_port, new_key, remove_cluster, run_pg

sys.path.insert(0, str(ROOT / "tests" / "vectors"))
import search_vectors as ref  # noqa: E402

LOG_CONF = [
    "log_statement = 'all'",
    "log_min_duration_statement = 0",
    "log_min_messages = info",
    "log_min_error_statement = info",
    "log_parameter_max_length = -1",
    "log_parameter_max_length_on_error = -1",
    "log_error_verbosity = verbose",
]


@pytest.fixture(scope="module")
def server():
    name = f"search_{os.getpid()}"
    port = free_port()
    conf = " ".join(f'"{line}"' for line in LOG_CONF)
    pkg = os.environ.get("PAZPAZ_PACKAGE_DIR")
    overlay = f"use_package_overlay {pkg} {name}-root; " if pkg else ""
    run_pg(f"{overlay}pg_start {name} {port} {conf}")
    yield Cluster(name, port)
    remove_cluster(name)
    if pkg:
        run_pg(f'rm -rf "$PG_BASE/{name}-root"')


@pytest.fixture
def conn(server):
    db = server.create_db()
    c = psycopg.connect(server.dsn(db), autocommit=True)
    yield c
    c.close()
    server.drop_db(db)


def set_keys(c, data_key, index_key, next_key=None):
    c.execute("SELECT set_config('pazpaz.encryption_key', %s, false), set_config('pazpaz.index_key', %s, false)",
              (data_key, index_key))
    if next_key:
        c.execute("SELECT set_config('pazpaz.index_key_next', %s, false)", (next_key,))


def test_known_answers_and_an_independent_implementation(conn):
    vectors = json.loads((ROOT / "tests" / "vectors" / "search_vectors.json").read_text())
    assert vectors == ref.vectors(), "search_vectors.json is what search_vectors.py makes"
    set_keys(conn, new_key(), vectors["index_key"])
    for v in vectors["blind_index"]:
        got = conn.execute("SELECT encode(blind_index(%s, %s, %s, %s), 'hex')",
                           (v["value"], v["context"], v["normalize"], v["bits"])).fetchone()[0]
        assert got == v["hex"], v
    for v in vectors["tokens"]:
        got = conn.execute("SELECT blind_tokens(%s, %s, %s, %s)",
                           (v["value"], v["context"], v["normalize"], v["bits"])).fetchone()[0]
        assert got == v["tokens"], v
    # Random values and keys, both normalizations.
    rng = random.Random(7)
    alphabet = "abcXYZ  \t\u00a0éÉßΣς\u0301ﬁＡ0123"
    for _ in range(200):
        k = secrets.token_bytes(32)
        set_keys(conn, new_key(), ref.base64.b64encode(k).decode())
        value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        mode = rng.choice(["none", "lower"])
        bits = rng.randrange(1, 257)
        tbits = rng.randrange(8, 33)
        ctx = f"public.t{rng.randrange(10)}.c"
        got = conn.execute("SELECT encode(blind_index(%s, %s, %s, %s), 'hex'), blind_tokens(%s, %s, %s, %s)",
                           (value, ctx, mode, bits, value, ctx, mode, tbits)).fetchone()
        assert got[0] == ref.blind_index(k, value, ctx, mode, bits).hex(), (value, mode, bits)
        assert got[1] == ref.tokens(k, value, ctx, mode, tbits), (value, mode, tbits)


def test_the_log_never_holds_the_index_key_or_a_plaintext(server, conn):
    data_key, index_key = new_key(), new_key()
    start = server.log.stat().st_size
    emails = [f"secret.person{i}@hidden-domain.example" for i in range(50)]
    # The ways an application may set the key: a parameterised set_config (the
    # recommended one), and even a literal SET (redacted by shape and value).
    set_keys(conn, data_key, index_key)
    conn.execute(f"SET pazpaz.index_key = '{index_key}'")
    conn.execute("CREATE TABLE people (id int PRIMARY KEY, ws int, email encrypted_text)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO people VALUES (%s, 1, %s)", list(enumerate(emails)))
    conn.execute("CALL add_blind_index('people', 'email', normalization => 'lower', batch_size => 20)")
    conn.execute("CALL add_match_index('people', 'email', batch_size => 20)")
    conn.execute("CREATE UNIQUE INDEX people_email_per_ws ON people (ws, email_bidx)")
    token = conn.execute("SELECT encode(email_bidx, 'hex') FROM people WHERE id = 3").fetchone()[0]
    with pytest.raises(psycopg.errors.UniqueViolation) as e:
        conn.execute("INSERT INTO people VALUES (100, 1, %s)", (emails[3].upper(),))
    assert "people_email_per_ws" in str(e.value)
    assert emails[3] not in str(e.value).lower() and emails[3] not in (e.value.diag.message_detail or "").lower()
    # Lookups and errors with the plaintext as a bind parameter.
    assert conn.execute("SELECT id FROM people WHERE email_bidx = blind_index_for('people', 'email_bidx', %s)",
                        (emails[7],)).fetchone()[0] == 7
    assert conn.execute("SELECT count(*) FROM people WHERE email_tokens @> blind_search_tokens_for('people', "
                        "'email_tokens', %s) AND email::text ILIKE %s", ("person1", "%person1%")).fetchone()[0] == 11
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("SELECT blind_search_tokens_for('people', 'email_tokens', %s)", (emails[0][:2],))
    conn.execute("RESET pazpaz.index_key")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as e:
        conn.execute("INSERT INTO people VALUES (101, 2, %s)", (emails[9],))
    assert "pazpaz.index_key" in str(e.value)
    time.sleep(0.5)
    with open(server.log, "rb") as f:
        f.seek(start)
        log = f.read().decode("utf-8", "replace")
    assert "add_blind_index: done" in log or "statement:" in log, "the log was written"
    assert index_key not in log and index_key[:20] not in log, "the index key reached the server log"
    assert data_key not in log and data_key[:20] not in log
    low = log.lower()
    for email in emails:
        assert email not in low, f"a plaintext reached the server log: {email}"
    assert token not in low, "the token of the violating row reached the server log"


def test_an_interrupted_backfill_resumes(server, conn):
    data_key, index_key = new_key(), new_key()
    set_keys(conn, data_key, index_key)
    conn.execute("CREATE TABLE big (id int PRIMARY KEY, email encrypted_text)")
    conn.execute("INSERT INTO big SELECT i, 'user' || i || '@example.com' FROM generate_series(1, 20000) i")
    worker = psycopg.connect(conn.info.dsn, autocommit=True)
    set_keys(worker, data_key, index_key)
    pid = worker.info.backend_pid
    errors = []

    def run():
        try:
            worker.execute("CALL add_blind_index('big', 'email', batch_size => 500)")
        except psycopg.Error as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    deadline = time.time() + 30
    while time.time() < deadline:
        done = conn.execute("SELECT count(*) FROM big WHERE email_bidx IS NOT NULL").fetchone()[0] \
            if conn.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = 'big'::regclass AND attname = "
                            "'email_bidx'").fetchone()[0] else 0
        if done >= 2000:
            break
        time.sleep(0.05)
    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    t.join()
    assert errors, "the backfill was interrupted"
    partial = conn.execute("SELECT count(*) FROM big WHERE email_bidx IS NOT NULL").fetchone()[0]
    assert 0 < partial < 20000
    # Writes meanwhile: an insert, a new value of a row indexed already, and
    # a token written by hand; the CALL that resumes leaves none of them
    # with a token of another value.
    conn.execute("INSERT INTO big VALUES (20001, 'late@example.com')")
    assert conn.execute("SELECT email_bidx IS NOT NULL FROM big WHERE id = 1").fetchone()[0]
    conn.execute("UPDATE big SET email = 'changed@example.com' WHERE id = 1")
    conn.execute("UPDATE big SET email_bidx = (SELECT email_bidx FROM big WHERE id = 3) WHERE id = 2")
    # An index on the token column made by hand meanwhile changes nothing.
    conn.execute("CREATE INDEX big_by_hand ON big (email_bidx)")
    conn.execute("CALL add_blind_index('big', 'email', batch_size => 500)")
    row = conn.execute("SELECT count(*) FILTER (WHERE email_bidx = blind_index(email::text, 'public.big.email')),"
                       " count(*) FROM big").fetchone()
    assert row == (20001, 20001)
    assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'big_email_bidx'").fetchone()[0] == 1


def test_a_table_swapped_in_under_its_name_during_the_call_is_never_written(server, conn):
    """The owner renames the table away and another one into its name while
    the CALL runs (an online migration): the CALL's next transaction finds
    the name changed and stops (55000), before writing or indexing the
    other table; CALLed again on the table it was given, it finishes."""
    data_key, index_key = new_key(), new_key()
    set_keys(conn, data_key, index_key)
    conn.execute("CREATE TABLE sw (id int PRIMARY KEY, email encrypted_text)")
    conn.execute("INSERT INTO sw SELECT i, 'u' || i || '@x.org' FROM generate_series(1, 4000) i")
    # A BEFORE UPDATE trigger that sorts first: the walk then runs with the
    # index's trigger on UPDATE, a batch at a time, slowly.
    conn.execute("""CREATE FUNCTION sw_slow() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN PERFORM pg_sleep(0.001); RETURN NEW; END $$""")
    conn.execute("CREATE TRIGGER a_slow BEFORE UPDATE ON sw FOR EACH ROW EXECUTE FUNCTION sw_slow()")
    conn.execute("CREATE TABLE sw_new (id int PRIMARY KEY, email encrypted_text)")
    conn.execute("INSERT INTO sw_new SELECT i, 'n' || i || '@x.org' FROM generate_series(1, 4000) i")
    oid = conn.execute("SELECT 'sw'::regclass::oid").fetchone()[0]
    worker = psycopg.connect(conn.info.dsn, autocommit=True)
    set_keys(worker, data_key, index_key)
    errors = []

    def run():
        try:
            worker.execute("CALL add_blind_index(%s::oid::regclass, 'email', batch_size => 200)", (oid,))
        except psycopg.Error as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    wait_until(lambda: conn.execute("SELECT count(*) FROM sw WHERE email_bidx IS NOT NULL").fetchone()[0]
               if conn.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = %s AND attname = 'email_bidx'",
                               (oid,)).fetchone()[0] else False,
               "the walk started")
    with conn.transaction():
        conn.execute("ALTER TABLE sw RENAME TO sw_old")
        conn.execute("ALTER TABLE sw_new RENAME TO sw")
    t.join()
    worker.close()
    assert errors and errors[0].sqlstate == "55000", errors
    assert "renamed during the CALL" in str(errors[0])
    # The other table: no token column, trigger or index of the CALL's.
    assert conn.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = 'sw'::regclass AND attname = 'email_bidx'"
                        ).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'sw'::regclass").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM pg_index WHERE indrelid = 'sw'::regclass").fetchone()[0] == 1
    conn.execute("CALL add_blind_index('sw_old', 'email', batch_size => 1000)")
    row = conn.execute("SELECT count(*) FILTER (WHERE email_bidx = blind_index_for('sw_old', 'email_bidx', email::text)),"
                       " count(*) FROM sw_old").fetchone()
    assert row == (4000, 4000)


def wait_until(cond, what, timeout=60):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, what
        time.sleep(0.01)


@pytest.mark.parametrize("kind", ["exact", "match"])
def test_writes_during_the_backfill_leave_no_token_of_another_value(server, conn, kind):
    """Another session writes while the walk is under way: it changes the
    value of a row the walk has indexed, writes a token by hand (another
    row's, so that a lookup of that value finds this row), deletes and
    inserts. Every token is the one of its row's value when the CALL is
    done. The writes are ordered by a row lock: the walk waits for the last
    row, which the writer holds while it writes rows the walk has passed."""
    data_key, index_key = new_key(), new_key()
    set_keys(conn, data_key, index_key)
    conn.execute("CREATE TABLE w (id int PRIMARY KEY, email encrypted_text, note text)")
    conn.execute("INSERT INTO w SELECT i, 'user' || i || '@example.com', 'n' FROM generate_series(1, 20000) i")
    last = conn.execute("SELECT id FROM w ORDER BY ctid DESC LIMIT 1").fetchone()[0]
    tok = "email_bidx" if kind == "exact" else "email_tokens"
    proc = "add_blind_index" if kind == "exact" else "add_match_index"
    # The token of a row's value, as the index computes it.
    of = ("blind_index_for('w', 'email_bidx', email::text)" if kind == "exact"
          else "blind_tokens(email::text, 'public.w.email', 'lower')")
    worker = psycopg.connect(conn.info.dsn, autocommit=True)
    set_keys(worker, data_key, index_key)
    writer = psycopg.connect(conn.info.dsn, autocommit=True)
    set_keys(writer, data_key, index_key)
    errors = []

    def run():
        try:
            worker.execute(f"CALL {proc}('w', 'email', batch_size => 200)")
        except psycopg.Error as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    try:
        # As soon as the token column exists (the walk has not reached the
        # end), the writer takes the last row's lock.
        wait_until(lambda: writer.execute(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'w'::regclass AND attname = %s AND NOT attisdropped",
            (tok,)).fetchone()[0] == 1, "the token column appears")
        writer.execute("BEGIN")
        writer.execute("SELECT * FROM w WHERE id = %s FOR UPDATE", (last,))
        # The walk waits for it, every batch before committed.
        wait_until(lambda: conn.execute(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
            (worker.info.backend_pid,)).fetchone()[0], "the walk waits for the writer's row")
        assert conn.execute(f"SELECT {tok} IS NOT NULL FROM w WHERE id = 1").fetchone()[0]
        writer.execute("UPDATE w SET email = 'changed@example.com' WHERE id = 1")
        writer.execute(f"UPDATE w SET {tok} = (SELECT {tok} FROM w WHERE id = 4) WHERE id = 2")
        writer.execute("UPDATE w SET note = 'other column' WHERE id = 3")
        writer.execute("DELETE FROM w WHERE id = 5")
        writer.execute("INSERT INTO w VALUES (20001, 'late@example.com', 'n')")
        writer.execute("COMMIT")
    finally:
        t.join()
    assert not errors, errors
    row = conn.execute(f"SELECT count(*) FILTER (WHERE {tok} = {of}), count(*) FROM w").fetchone()
    assert row == (20000, 20000)
    # The lookups find the new value's row, and the hand-written token is gone.
    if kind == "exact":
        ids = [r[0] for r in conn.execute(
            "SELECT id FROM w WHERE email_bidx = blind_index_for('w', 'email_bidx', 'user4@example.com')")]
        assert ids == [4]
        ids = [r[0] for r in conn.execute(
            "SELECT id FROM w WHERE email_bidx = blind_index_for('w', 'email_bidx', 'user1@example.com')")]
        assert ids == []
    worker.close()
    writer.close()


def test_a_stale_token_moved_during_the_second_look_is_indexed_again(server, conn):
    """A value replaced during the walk (its token is the old value's), then,
    while the second look is under way, its row moved to the end of the
    table by an UPDATE of another column (the trigger leaves the token as
    it is): the second look still finds it."""
    data_key, index_key = new_key(), new_key()
    set_keys(conn, data_key, index_key)
    conn.execute("CREATE TABLE mv (id int PRIMARY KEY, email encrypted_text, note text) WITH (autovacuum_enabled = off)")
    conn.execute("ALTER TABLE mv ALTER note SET STORAGE PLAIN")
    conn.execute("INSERT INTO mv SELECT i, 'user' || i || '@example.com', 'n' FROM generate_series(1, 30000) i")
    last = conn.execute("SELECT id FROM mv ORDER BY ctid DESC LIMIT 1").fetchone()[0]
    sessions = [psycopg.connect(conn.info.dsn, autocommit=True) for _ in range(4)]
    worker, hold, writer, hold2 = sessions
    for c in sessions:
        set_keys(c, data_key, index_key)
    errors = []

    def run():
        try:
            worker.execute("CALL add_blind_index('mv', 'email', batch_size => 20)")
        except psycopg.Error as e:
            errors.append(e)

    def waits():
        return conn.execute("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                            (worker.info.backend_pid,)).fetchone()[0]

    def trigger_type():
        row = conn.execute("SELECT tgtype FROM pg_trigger WHERE tgrelid = 'mv'::regclass "
                           "AND tgname = 'zz_pazpaz_email_bidx'").fetchone()
        return row and row[0]

    t = threading.Thread(target=run)
    t.start()
    try:
        wait_until(lambda: trigger_type() is not None, "the trigger appears")
        hold.execute("BEGIN")
        hold.execute("SELECT * FROM mv WHERE id = %s FOR UPDATE", (last,))
        wait_until(waits, "the walk waits for the last row")
        assert trigger_type() == 7, "the walk runs with the trigger on INSERT only"
        # (In this order: the new version of row 10 comes first in the
        # table, so the second look waits there before it gets to 500.)
        writer.execute("UPDATE mv SET email = 'changed10@example.com' WHERE id = 10")
        writer.execute("UPDATE mv SET email = 'changed@example.com' WHERE id = 500")
        hold2.execute("BEGIN")
        hold2.execute("SELECT * FROM mv WHERE id = 10 FOR UPDATE")
        hold.execute("COMMIT")
        # The second look (the trigger now fires on UPDATE) waits for row 10.
        wait_until(lambda: trigger_type() == 23 and waits(), "the second look waits for row 10")
        writer.execute("UPDATE mv SET note = repeat('y', 7500) WHERE id = 500")
        hold2.execute("COMMIT")
    finally:
        for c in (hold, hold2):
            c.execute("ROLLBACK")
        t.join()
    assert not errors, errors
    bad = conn.execute("SELECT count(*) FROM mv WHERE email_bidx IS DISTINCT FROM "
                       "blind_index_for('mv', 'email_bidx', email::text)").fetchone()[0]
    assert bad == 0
    ids = [r[0] for r in conn.execute(
        "SELECT id FROM mv WHERE email_bidx = blind_index_for('mv', 'email_bidx', 'user500@example.com')")]
    assert ids == []
    for c in sessions:
        c.close()


def test_writes_of_an_event_trigger_in_the_procedures_own_transactions_are_indexed_again(server, conn):
    """An event trigger (a superuser's) that writes the table when the
    procedure makes or replaces its trigger: those writes carry the ids of
    the procedure's own transactions, and are indexed again all the same."""
    data_key, index_key = new_key(), new_key()
    set_keys(conn, data_key, index_key)
    conn.execute("CREATE TABLE ev (id int PRIMARY KEY, email encrypted_text)")
    conn.execute("INSERT INTO ev SELECT i, 'user' || i || '@example.com' FROM generate_series(1, 2000) i")
    conn.execute("""CREATE FUNCTION ev_write() RETURNS event_trigger LANGUAGE plpgsql AS $$
                    BEGIN
                      IF tg_tag = 'CREATE TRIGGER' AND EXISTS (SELECT FROM pg_attribute
                          WHERE attrelid = 'ev'::regclass AND attname = 'email_bidx') THEN
                        UPDATE ev SET email = ('evil' || id || '@example.com')::encrypted_text WHERE id IN (1, 1999);
                        UPDATE ev SET email_bidx = (SELECT email_bidx FROM ev WHERE id = 3) WHERE id IN (2, 1998);
                      END IF;
                    END $$""")
    conn.execute("CREATE EVENT TRIGGER ev_write ON ddl_command_start EXECUTE FUNCTION ev_write()")
    try:
        conn.execute("CALL add_blind_index('ev', 'email', batch_size => 500)")
    finally:
        conn.execute("DROP EVENT TRIGGER ev_write")
    bad = conn.execute("SELECT count(*) FROM ev WHERE email_bidx IS DISTINCT FROM "
                       "blind_index_for('ev', 'email_bidx', email::text)").fetchone()[0]
    assert bad == 0


def test_a_lookup_of_the_other_kind_says_which_lookup_to_use(conn):
    set_keys(conn, new_key(), new_key())
    conn.execute("CREATE TABLE k (id int, email encrypted_text)")
    conn.execute("INSERT INTO k VALUES (1, 'a@example.com')")
    conn.execute("CALL add_blind_index('k', 'email')")
    conn.execute("CALL add_match_index('k', 'email')")
    with pytest.raises(psycopg.errors.UndefinedObject, match="k.email_tokens is a match index: look it up with blind_search_tokens_for"):
        conn.execute("SELECT blind_index_for('k', 'email_tokens', 'a@example.com')")
    with pytest.raises(psycopg.errors.UndefinedObject, match="k.email_bidx is a blind index: look it up with blind_index_for"):
        conn.execute("SELECT blind_search_tokens_for('k', 'email_bidx', 'example')")


def test_a_generated_source_column_is_refused(conn):
    set_keys(conn, new_key(), new_key())
    # (bytea, format 1: a generated encrypted_text would not be immutable)
    conn.execute("CREATE TABLE gen (id int, a text, email bytea GENERATED ALWAYS AS (decode(a, 'base64')) STORED)")
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="generated column"):
        conn.execute("CALL add_blind_index('gen', 'email')")
    assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'gen'::regclass").fetchone()[0] == 0


def test_a_trigger_that_changes_the_value_on_update_is_indexed_after_it(server, conn):
    """An UPDATE trigger of the table's that rewrites the value: the token
    is the one of the value the row is stored with (the backfill's own
    UPDATE runs it too)."""
    data_key, index_key = new_key(), new_key()
    set_keys(conn, data_key, index_key)
    conn.execute("CREATE TABLE tr (id int PRIMARY KEY, email encrypted_text)")
    conn.execute("INSERT INTO tr SELECT i, 'User' || i || '@Example.com' FROM generate_series(1, 3000) i")
    conn.execute("""CREATE FUNCTION tr_mark() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN NEW.email := (NEW.email::text || '!')::encrypted_text; RETURN NEW; END $$""")
    conn.execute("CREATE TRIGGER a_mark BEFORE UPDATE ON tr FOR EACH ROW EXECUTE FUNCTION tr_mark()")
    conn.execute("CALL add_blind_index('tr', 'email', batch_size => 500)")
    row = conn.execute("SELECT count(*) FILTER (WHERE email_bidx = blind_index_for('tr', 'email_bidx', email::text)),"
                       " count(*) FILTER (WHERE email::text LIKE '%!'), count(*) FROM tr").fetchone()
    assert row == (3000, 3000, 3000)


def test_parallel_workers_compute_the_same_tokens(conn):
    set_keys(conn, new_key(), new_key())
    conn.execute("CREATE TABLE p (id int, email encrypted_text)")
    conn.execute("INSERT INTO p SELECT i, 'user' || i || '@example.com' FROM generate_series(1, 50000) i")
    conn.execute("CALL add_blind_index('p', 'email', batch_size => 10000)")
    conn.execute("CALL add_match_index('p', 'email', batch_size => 10000)")
    for s in ("max_parallel_workers_per_gather = 2", "parallel_setup_cost = 0", "parallel_tuple_cost = 0",
              "min_parallel_table_scan_size = 0", "enable_indexscan = off", "enable_bitmapscan = off"):
        conn.execute("SET " + s)
    q = ("SELECT count(*) FILTER (WHERE email_bidx = blind_index(email::text, 'public.p.email')"
         " AND email_tokens = blind_tokens(email::text, 'public.p.email', 'lower')) FROM p")
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, COSTS OFF) " + q).fetchall())
    assert "Workers Launched: 2" in plan or "Workers Launched: 1" in plan, plan
    assert conn.execute(q).fetchone()[0] == 50000
    # The lookups by index too (they read the index's definition from the
    # table's trigger and the registry, in each worker).
    q = ("SELECT count(*) FILTER (WHERE email_bidx = blind_index_for('p', 'email_bidx', email::text)"
         " AND email_tokens @> blind_search_tokens_for('p', 'email_tokens', email::text)) FROM p")
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, COSTS OFF) " + q).fetchall())
    assert "Workers Launched: 2" in plan or "Workers Launched: 1" in plan, plan
    assert conn.execute(q).fetchone()[0] == 50000


@pytest.fixture(scope="module")
def limited_server():
    """A server whose processes may map at most 3 GB (ulimit -v), as a
    container's memory limit would: an allocation beyond it fails."""
    name = f"search_lim_{os.getpid()}"
    port = free_port()
    pkg = os.environ.get("PAZPAZ_PACKAGE_DIR")
    overlay = f"use_package_overlay {pkg} {name}-root; " if pkg else ""
    run_pg(f"{overlay}ulimit -v 3000000; pg_start {name} {port} \"log_min_messages = warning\"")
    yield Cluster(name, port)
    remove_cluster(name)
    if pkg:
        run_pg(f'rm -rf "$PG_BASE/{name}-root"')


def test_huge_values_get_an_error_not_a_crash(limited_server):
    """A value of 160 MB made blind_tokens build a list of every trigram (16
    bytes each): the allocation failed and the backend aborted, which made
    the postmaster restart every session. Tokens and the 'lower'
    normalization now take at most 1 MiB (54000), and the trigrams are
    hashed as they stream by."""
    c = psycopg.connect(limited_server.dsn(limited_server.create_db()), autocommit=True)
    set_keys(c, new_key(), new_key())
    huge = "repeat('abcdefgh', 20000000)"
    for q in (f"SELECT cardinality(blind_tokens({huge}, 'x'))",
              f"SELECT cardinality(blind_tokens({huge}, 'x', 'lower'))",
              f"SELECT cardinality(blind_search_tokens({huge}, 'x', 'lower'))",
              f"SELECT length(blind_index({huge}, 'x', 'lower'))"):
        with pytest.raises(psycopg.errors.ProgramLimitExceeded) as e:
            c.execute(q)
        assert "at most 1048576 bytes" in str(e.value)
    assert c.execute("SELECT 1").fetchone() == (1,), "the backend survived"
    # 32 MB took 5 s (not cancellable) before: refused at once now.
    c.execute("SET statement_timeout = '3s'")
    t = time.time()
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):
        c.execute("SELECT cardinality(blind_tokens(repeat('abcdefgh', 4000000), 'x'))")
    assert time.time() - t < 2
    # A 'none' blind index takes any size: its HMAC streams in place.
    assert c.execute(f"SELECT length(blind_index({huge}, 'x'))").fetchone() == (32,)
    # Up to the limit, values are indexed (1 MiB of text, a million trigrams).
    n = c.execute("SELECT cardinality(blind_tokens(repeat('abcdefghijklmnopqrstuvwxyz', 40329) || 'abcdefghij', "
                  "'x', 'lower', 32))").fetchone()[0]
    assert n == 26
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):
        c.execute("SELECT blind_tokens(repeat('a', 1048577), 'x')")
    # An expanding normalization is bounded by its output: U+FDFA is 18
    # characters in NFKC.
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):
        c.execute("SELECT blind_tokens(repeat(chr(65018), 100000), 'x', 'lower')")
    c.close()
    log = limited_server.log.read_text(errors="replace")
    assert "terminated by signal" not in log and "was terminated" not in log, log[-2000:]


def test_a_dedicated_schema_and_the_documented_lookups_under_plants(server):
    """The recommended setup (README "Search on encrypted columns"): the
    extension in a schema only its owner can write to, the lookups written
    with the matchers, schema-qualified. A role with CREATE on public plants
    the two reported hijacks (an exact public.@>(int4[], int4[]), and a
    public.blind_index_for(text, text, text) that beats (regclass, text,
    text) for literal names) plus text look-alikes of the matchers and
    procedures; none of them runs in the key-holding session, and the
    indexes are still used."""
    name = "t_" + secrets.token_hex(6)
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    c = psycopg.connect(server.dsn(name), autocommit=True)
    try:
        c.execute("CREATE SCHEMA pazpaz")
        c.execute("CREATE EXTENSION pazpaz_crypto SCHEMA pazpaz")
        c.execute("GRANT USAGE ON SCHEMA pazpaz TO PUBLIC")
        c.execute("CREATE ROLE planter_py")
        c.execute("GRANT CREATE ON SCHEMA public TO planter_py")
        c.execute("CREATE TABLE public.plant_log (what text)")
        c.execute("GRANT INSERT ON public.plant_log TO PUBLIC")
        c.execute("SET ROLE planter_py")
        note = "BEGIN INSERT INTO public.plant_log VALUES ('{0}'); RETURN {1}; END"
        c.execute("CREATE FUNCTION public.plant_contains(a int4[], b int4[]) RETURNS bool LANGUAGE plpgsql AS $$"
                  + note.format("@>", "a OPERATOR(pg_catalog.@>) b") + "$$")
        c.execute("CREATE OPERATOR public.@> (LEFTARG = int4[], RIGHTARG = int4[], FUNCTION = public.plant_contains)")
        for sig, ret, val in (("blind_index_for(text, text, text)", "bytea", "NULL"),
                              ("blind_search_tokens_for(text, text, text)", "int4[]", "NULL"),
                              ("blind_equals(bytea, text, text, text)", "bool", "true"),
                              ("blind_contains(int4[], text, text, text)", "bool", "true")):
            c.execute(f"CREATE FUNCTION public.{sig} RETURNS {ret} LANGUAGE plpgsql AS $$"
                      + note.format(sig, val) + "$$")
        c.execute("CREATE PROCEDURE public.add_blind_index(text, text, normalization text DEFAULT NULL) "
                  "LANGUAGE plpgsql AS $$BEGIN INSERT INTO public.plant_log VALUES ('add_blind_index'); END$$")
        c.execute("RESET ROLE")
        set_keys(c, new_key(), new_key())
        c.execute("CREATE TABLE members (id int PRIMARY KEY, email pazpaz.encrypted_text, last_name pazpaz.encrypted_text)")
        with c.cursor() as cur:
            cur.executemany("INSERT INTO members VALUES (%s, %s, %s)",
                            [(i, f"user{i}@example.com", f"Johansson {i}") for i in range(200)])
        c.execute("CALL pazpaz.add_blind_index('public.members', 'email', normalization => 'lower')")
        c.execute("CALL pazpaz.add_match_index('public.members', 'last_name')")
        c.execute("ANALYZE members")
        c.execute("SET enable_seqscan = off")
        exact = ("SELECT id FROM members WHERE pazpaz.blind_equals(email_bidx, 'public.members', 'email_bidx', %s)")
        assert c.execute(exact, ("USER7@example.com",)).fetchall() == [(7,)]
        plan = "\n".join(r[0] for r in c.execute("EXPLAIN (COSTS OFF) " + exact, ("user7@example.com",)))
        assert "Index Scan using members_email_bidx" in plan, plan
        substring = ("SELECT count(*) FROM members "
                     "WHERE pazpaz.blind_contains(last_name_tokens, 'public.members', 'last_name_tokens', %s) "
                     "AND last_name::pg_catalog.text OPERATOR(pg_catalog.~~*) ('%%' || %s || '%%')")
        assert c.execute(substring, ("son 1", "son 1")).fetchone()[0] == 111
        plan = "\n".join(r[0] for r in c.execute("EXPLAIN (COSTS OFF) " + substring, ("son 1", "son 1")))
        assert "Bitmap Index Scan on members_last_name_tokens" in plan, plan
        # The lookups written with the (regclass-typed) functions, as before,
        # also pick the extension's, with the operator written out.
        assert c.execute("SELECT id FROM members WHERE email_bidx OPERATOR(pg_catalog.=) "
                         "pazpaz.blind_index_for('public.members', 'email_bidx', %s)", ("user8@example.com",)
                         ).fetchall() == [(8,)]
        c.execute("CALL pazpaz.drop_blind_index('public.members', 'email')")
        assert c.execute("SELECT count(*) FROM public.plant_log").fetchone()[0] == 0
    finally:
        c.close()
        server.drop_db(name)
        with psycopg.connect(server.dsn(), autocommit=True) as c2:
            c2.execute("DROP ROLE IF EXISTS planter_py")


def test_a_value_passed_in_the_wrong_place_never_reaches_the_log(server, conn):
    """The extension's own errors pass the log filter as they are, so they
    must not repeat what a caller passed: a value given where a column name
    belongs (blind_index_for('members', $1, 'email_bidx')) was logged as
    "members.<the value> is not a search index of pazpaz_crypto"."""
    set_keys(conn, new_key(), new_key())
    conn.execute("CREATE TABLE members (id int PRIMARY KEY, email encrypted_text)")
    conn.execute("INSERT INTO members VALUES (1, 'someone@example.com')")
    conn.execute("CALL add_blind_index('members', 'email', normalization => 'lower')")
    start = server.log.stat().st_size
    markers = [f"jane.PHIMARK{i}.{secrets.token_hex(4)}@example.com" for i in range(8)]
    calls = [
        ("SELECT blind_index_for('members', %s, 'email_bidx')", psycopg.errors.UndefinedObject),
        ("SELECT blind_search_tokens_for('members', %s, 'query')", psycopg.errors.UndefinedObject),
        ("SELECT blind_equals('\\x00'::bytea, 'members', %s, 'x')", psycopg.errors.UndefinedObject),
        ("CALL add_blind_index('members', %s)", psycopg.errors.UndefinedColumn),
        ("CALL add_match_index('members', 'email', token_column => %s || repeat('x', 60))",
         psycopg.errors.NameTooLong),
        ("CALL drop_blind_index('members', %s)", psycopg.errors.UndefinedObject),
        ("CALL drop_match_index('members', 'email', %s)", psycopg.errors.UndefinedObject),
    ]
    for (sql, error), marker in zip(calls, markers):
        with pytest.raises(error) as e:
            conn.execute(sql, (marker,))
        assert marker not in str(e.value), (sql, str(e.value))
    # An existing column that is not an index is named (it is a name).
    with pytest.raises(psycopg.errors.UndefinedObject) as e:
        conn.execute("SELECT blind_index_for('members', 'email', 'x')")
    assert "members.email is not a search index" in str(e.value)
    time.sleep(0.5)
    with open(server.log, "rb") as f:
        f.seek(start)
        log = f.read().decode("utf-8", "replace")
    assert "has no search index of pazpaz_crypto on the column named" in log, "the errors were logged"
    for m in markers:
        assert m not in log and "PHIMARK" not in log, f"a value reached the server log: {m}"


def test_the_registry_survives_a_keyless_dump_and_restore(server):
    """search_indexes is an extension configuration table: a keyless
    pg_dump carries its rows (the table by name), so the restored indexes
    are registered and work with the keys, and a trigger copied to another
    table in the restored database is still refused."""
    data_key, index_key = new_key(), new_key()
    src = server.create_db()
    c = psycopg.connect(server.dsn(src), autocommit=True)
    set_keys(c, data_key, index_key)
    c.execute("CREATE SCHEMA crm")
    c.execute("CREATE TABLE crm.members (id int PRIMARY KEY, email encrypted_text, last_name encrypted_text)")
    c.execute("INSERT INTO crm.members SELECT i, 'user' || i || '@example.com', 'Johansson ' || i "
              "FROM generate_series(1, 100) i")
    c.execute("CALL add_blind_index('crm.members', 'email', normalization => 'lower')")
    c.execute("CALL add_match_index('crm.members', 'last_name')")
    c.close()
    work = server.workdir("search_dump")
    dump = work / "members.sql"
    envelope = {"PGOPTIONS": "-c pazpaz.encrypted_text_io=envelope"}
    r = server.tool("pg_dump", "-d", src, "-f", dump, env=envelope, dbname=src)
    assert r.returncode == 0, r.stderr
    assert "search_indexes" in dump.read_text()
    dst = "t_" + secrets.token_hex(6)
    with psycopg.connect(server.dsn(), autocommit=True) as c0:
        c0.execute(f"CREATE DATABASE {dst}")
    r = server.psql("-v", "ON_ERROR_STOP=1", "-d", dst, "-f", dump, env=envelope, dbname=dst)
    assert r.returncode == 0, r.stderr
    c = psycopg.connect(server.dsn(dst), autocommit=True)
    try:
        rows = c.execute("SELECT rel::text, token_column::text FROM search_indexes ORDER BY 2").fetchall()
        assert rows == [("crm.members", "email_bidx"), ("crm.members", "last_name_tokens")]
        set_keys(c, data_key, index_key)
        c.execute("INSERT INTO crm.members VALUES (101, 'New.Member@Example.com', 'Newman')")
        assert c.execute("SELECT id FROM crm.members WHERE blind_equals(email_bidx, 'crm.members', 'email_bidx', "
                         "'new.member@example.com')").fetchall() == [(101,)]
        assert c.execute("SELECT id FROM crm.members WHERE blind_equals(email_bidx, 'crm.members', 'email_bidx', "
                         "'USER7@example.com')").fetchall() == [(7,)]
        assert c.execute("SELECT count(*) FROM crm.members WHERE blind_contains(last_name_tokens, 'crm.members', "
                         "'last_name_tokens', 'son 1') AND last_name::text ILIKE '%son 1%'").fetchone()[0] == 12
        c.execute("CREATE TABLE copy (id int, email encrypted_text, email_bidx bytea)")
        c.execute("DO $$ BEGIN EXECUTE (SELECT replace(pg_get_triggerdef(oid), 'ON crm.members', 'ON public.copy') "
                  "FROM pg_trigger WHERE tgname = 'zz_pazpaz_email_bidx'); END $$")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("INSERT INTO copy VALUES (1, 'user7@example.com')")
    finally:
        c.close()
        server.drop_db(dst)
        server.drop_db(src)


def test_the_procedures_messages_reach_the_log_intact_and_without_values(server, conn):
    """In a session that holds keys the log filter redacts what follows a
    ": " and every number of other code's messages. The add/drop
    procedures' own NOTICEs, WARNINGs and errors name only existing tables
    and columns and counts, so they are logged as written (they were
    "add_blind_index: [value redacted by pazpaz_crypto]" and "batch #"); no
    value goes with them."""
    set_keys(conn, new_key(), new_key())
    emails = [f"logged.person{i}.{secrets.token_hex(3)}@hidden.example" for i in range(50)]
    conn.execute("CREATE TABLE people (id int PRIMARY KEY, email encrypted_text)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO people VALUES (%s, %s)", list(enumerate(emails)))
    start = server.log.stat().st_size
    conn.execute("CALL add_blind_index('people', 'email', normalization => 'lower', batch_size => 20)")
    with pytest.raises(psycopg.errors.UndefinedColumn):
        conn.execute("CALL add_blind_index('people', %s)", (emails[0],))
    with pytest.raises(psycopg.errors.DuplicateObject):
        conn.execute("CALL add_blind_index('people', 'email', normalization => 'none')")
    conn.execute("CALL drop_blind_index('people', 'email')")
    time.sleep(0.5)
    with open(server.log, "rb") as f:
        f.seek(start)
        log = f.read().decode("utf-8", "replace")
    assert re.search(r"batch 1: \d+/50 rows\n", log), log[-3000:]
    for line in ("add_blind_index: 50 rows of people.email to index",
                 "add_blind_index: done, 50 rows indexed; email_bidx is indexed by people_email_bidx",
                 "add_blind_index: relation people has no column of the name given",
                 "email_bidx on people.email already exists with other parameters or another index key",
                 "drop_blind_index: dropped email_bidx and its trigger and indexes"):
        assert line in log, f"{line!r} not in the log:\n{log[-3000:]}"
    assert "batch #" not in log and "add_blind_index: [value redacted" not in log
    low = log.lower()
    for e in emails:
        assert e not in low, f"a plaintext reached the server log: {e}"
