"""rotate_column's block-range batches: what happens around them.

  - progress: one NOTICE per batch, counts rising to the total, then done;
  - a row locked by another transaction: the batch waits at most
    lock_timeout (200 ms) three times, does its range without the row, and a
    further pass re-encrypts it once the lock is gone; a lock held throughout
    leaves that one row, reported, for the next CALL;
  - rows another transaction writes behind the walk, while it runs: a row on
    the old version and a value relabelled to the target version (which does
    not authenticate under the target key) are both found by the check after
    the walk and fixed by a further pass;
  - interrupted (cancelled) part-way: the committed batches stay and a
    second CALL finishes;
  - partitioned and inheritance tables: every child is walked;
  - plpgsql.extra_errors = 'all' (too_many_rows among them) in the session
    that CALLs: the batches still run.
Each test ends with every row on the target version, authenticating and
decrypting to its plaintext (kept in a plain column)."""

import re
import threading
import time

import psycopg
import pytest

import pazpaz_crypto
from conftest import new_key, start_cluster, unique_name

ROWS = 20000


@pytest.fixture(scope="module")
def srv():
    c = start_cluster(unique_name("it_rotb"))
    try:
        c.value("CREATE EXTENSION pazpaz_crypto")
        c.ring = {"v1": new_key(), "v2": new_key()}
        yield c
    finally:
        c.remove()


def connect(c, version="v1", notices=None) -> psycopg.Connection:
    conn = psycopg.connect(c.dsn(), autocommit=True)
    pazpaz_crypto.set_keys(conn, pazpaz_crypto.Keyring(c.ring, version))
    if notices is not None:
        conn.add_notice_handler(lambda d: notices.append(f"{d.severity}:  {d.message_primary}"))
    return conn


def make_table(conn, name: str, rows: int = ROWS) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, plain text NOT NULL, env jsonb, et encrypted_text)")
    conn.execute(f"INSERT INTO {name} SELECT i, 'note ' || i || ' ' || md5(i::text), NULL, NULL"
                 f" FROM generate_series(1, {rows}) i")
    conn.execute(f"UPDATE {name} SET env = encrypt_field_versioned(plain), et = plain")
    conn.execute(f"VACUUM ANALYZE {name}")


def all_rotated(conn, table: str, col: str) -> tuple[int, int, int]:
    """(rows, rows on v2, rows that authenticate and decrypt to plain)."""
    plain = f"decrypt_field_versioned({col})" if col == "env" else f"{col}::text"
    ok = f"verify_field_versioned({col}) AND " if col == "env" else ""
    return conn.execute(
        f"SELECT count(*), count(*) FILTER (WHERE key_version({col}) = 'v2'),"
        f" count(*) FILTER (WHERE {ok}{plain} = plain) FROM {table}").fetchone()


def call_rotate(c, table: str, col: str, batch: int, notices: list, started: threading.Event | None = None,
                at_batch: int = 3):
    """CALL rotate_column in a thread; `started` is set at the NOTICE of
    batch `at_batch`. Returns (thread, result dict)."""
    result = {}

    def on_notice(d):
        notices.append(f"{d.severity}:  {d.message_primary}")
        m = re.match(r"batch (\d+):", d.message_primary or "")
        if started is not None and m and int(m.group(1)) >= at_batch:
            started.set()

    def run():
        conn = connect(c, "v2")
        conn.add_notice_handler(on_notice)
        result["pid"] = conn.info.backend_pid
        try:
            conn.execute(f"CALL rotate_column('{table}', '{col}', {batch})")
            result["ok"] = True
        except psycopg.Error as e:
            result["error"] = e
        finally:
            if started is not None:
                started.set()
            conn.close()

    t = threading.Thread(target=run)
    t.start()
    return t, result


@pytest.mark.parametrize("col", ["env", "et"])
def test_progress_notices_rise_to_the_total(srv, col):
    conn = connect(srv)
    make_table(conn, "prog")
    notices: list[str] = []
    t, res = call_rotate(srv, "prog", col, 500, notices)
    t.join(300)
    assert res.get("ok"), res
    assert notices[0] == f"NOTICE:  rotate_column: {ROWS} rows of prog.{col} to re-encrypt to version v2"
    progress = [tuple(map(int, m.groups())) for m in
                (re.match(r"NOTICE:  batch (\d+): (\d+)/(\d+) rows", n) for n in notices) if m]
    assert len(progress) >= 20, f"about {ROWS // 500} batches of about 500 rows: {len(progress)}"
    assert [p[0] for p in progress] == list(range(1, len(progress) + 1)), "batches are numbered 1, 2, …"
    done = [p[1] for p in progress]
    assert done == sorted(done) and done[-1] == ROWS and {p[2] for p in progress} == {ROWS}
    assert max(b - a for a, b in zip([0] + done, done)) <= 2 * 500, "no batch is much larger than batch_size"
    assert notices[-1].startswith(f"NOTICE:  rotate_column: done, {ROWS} rows re-encrypted, none left on other versions")
    assert all_rotated(conn, "prog", col) == (ROWS, ROWS, ROWS)


@pytest.mark.parametrize("col", ["env", "et"])
def test_a_locked_row_waits_is_skipped_and_picked_up_by_a_further_pass(srv, col):
    conn = connect(srv)
    make_table(conn, "locked")
    holder = connect(srv)
    holder.autocommit = False
    # Row 10000 sits in the middle of the table; its lock is held for 2 s.
    holder.execute("UPDATE locked SET plain = plain WHERE id = 10000")
    notices: list[str] = []
    t, res = call_rotate(srv, "locked", col, 500, notices)
    time.sleep(2.0)
    holder.commit()
    holder.close()
    t.join(300)
    assert res.get("ok"), res
    text = "\n".join(notices)
    assert re.search(rf"rows in blocks \d+ to \d+ of locked\.{col} are locked by other transactions; "
                     r"leaving them to a further pass", text), text[-3000:]
    assert notices[-1].startswith("NOTICE:  rotate_column: done"), text[-3000:]
    assert all_rotated(conn, "locked", col) == (ROWS, ROWS, ROWS)


def test_a_lock_held_throughout_leaves_that_row_reported_and_a_second_call_finishes(srv):
    conn = connect(srv)
    make_table(conn, "held")
    holder = connect(srv)
    holder.autocommit = False
    holder.execute("SELECT 1 FROM held WHERE id = 7 FOR UPDATE")
    notices: list[str] = []
    t, res = call_rotate(srv, "held", "env", 2000, notices)
    t.join(300)
    assert res.get("ok"), res
    assert notices[-1] == ("WARNING:  rotate_column: 1 rows of held.env are still not on version v2 or do not"
                           " authenticate (locked by other transactions?); CALL rotate_column again"), notices[-3:]
    rows, on_v2, good = all_rotated(conn, "held", "env")
    assert (rows, on_v2) == (ROWS, ROWS - 1)
    assert conn.execute("SELECT key_version(env) FROM held WHERE id = 7").fetchone() == ("v1",)
    holder.rollback()
    holder.close()
    notices.clear()
    t, res = call_rotate(srv, "held", "env", 2000, notices)
    t.join(300)
    assert res.get("ok"), res
    assert notices[0] == "NOTICE:  rotate_column: 1 rows of held.env to re-encrypt to version v2"
    assert notices[-1].startswith("NOTICE:  rotate_column: done, 1 rows re-encrypted"), notices
    assert all_rotated(conn, "held", "env") == (ROWS, ROWS, ROWS)


def test_rows_written_behind_the_walk_are_found_and_fixed(srv):
    conn = connect(srv)
    make_table(conn, "behind")
    writer = connect(srv, "v1")
    notices: list[str] = []
    started = threading.Event()
    t, res = call_rotate(srv, "behind", "env", 200, notices, started, at_batch=5)
    assert started.wait(120), "the walk reached batch 5"
    assert t.is_alive(), "the CALL was still running when the writer wrote"
    # Rows 1–2 are in the first block, walked already. Row 1: written again
    # on v1 (an application that still writes with v1). Row 2: a v1
    # envelope relabelled "v2", which does not authenticate under v2.
    writer.execute("UPDATE behind SET env = encrypt_field_versioned(plain, 'v1') WHERE id = 1")
    writer.execute("UPDATE behind SET env = jsonb_set(encrypt_field_versioned(plain, 'v1'), '{version}', '\"v2\"')"
                   " WHERE id = 2")
    writer.close()
    t.join(300)
    assert res.get("ok"), res
    text = "\n".join(notices)
    assert re.search(r"batch \d+: 1 values of behind\.env did not authenticate under the key their \"version\" names;"
                     r" re-encrypted to version v2 from the key they authenticate under", text), text[-3000:]
    assert notices[-1].startswith("NOTICE:  rotate_column: done") and notices[-1].endswith("every value authenticates")
    assert all_rotated(conn, "behind", "env") == (ROWS, ROWS, ROWS)


@pytest.mark.parametrize("col", ["env", "et"])
def test_cancelled_part_way_a_second_call_finishes(srv, col):
    conn = connect(srv)
    make_table(conn, "cut")
    notices: list[str] = []
    started = threading.Event()
    t, res = call_rotate(srv, "cut", col, 200, notices, started, at_batch=10)
    assert started.wait(120), "the walk reached batch 10"
    conn.execute("SELECT pg_cancel_backend(%s)", (res["pid"],))
    t.join(300)
    assert isinstance(res.get("error"), psycopg.errors.QueryCanceled), res
    rows, on_v2, good = all_rotated(conn, "cut", col)
    progress = [0] + [int(m.group(1)) for m in (re.match(r"NOTICE:  batch \d+: (\d+)/", n) for n in notices) if m]
    # Each batch COMMITs right after its notice: all reported ones but
    # perhaps the last are committed, nothing else.
    assert len(progress) > 10 and on_v2 in progress[-2:], (on_v2, progress[-3:])
    assert good == rows == ROWS
    notices.clear()
    t, res = call_rotate(srv, "cut", col, 5000, notices)
    t.join(300)
    assert res.get("ok"), res
    assert notices[0] == f"NOTICE:  rotate_column: {ROWS - on_v2} rows of cut.{col} to re-encrypt to version v2"
    assert all_rotated(conn, "cut", col) == (ROWS, ROWS, ROWS)


@pytest.mark.parametrize("kind", ["partitioned", "inheritance"])
def test_every_partition_or_child_is_walked(srv, kind):
    conn = connect(srv)
    conn.execute("DROP TABLE IF EXISTS fam CASCADE")
    if kind == "partitioned":
        conn.execute("CREATE TABLE fam (id int, plain text NOT NULL, env jsonb, et encrypted_text) PARTITION BY RANGE (id)")
        conn.execute("CREATE TABLE fam_a PARTITION OF fam FOR VALUES FROM (1) TO (3001)")
        conn.execute("CREATE TABLE fam_b PARTITION OF fam FOR VALUES FROM (3001) TO (100001)")
    else:
        conn.execute("CREATE TABLE fam (id int, plain text NOT NULL, env jsonb, et encrypted_text)")
        conn.execute("CREATE TABLE fam_a () INHERITS (fam)")
        conn.execute("CREATE TABLE fam_b () INHERITS (fam)")
    target = "fam" if kind == "partitioned" else "fam_a"
    conn.execute(f"INSERT INTO {target} SELECT i, 'n' || i, encrypt_field_versioned('n' || i), ('n' || i)::text"
                 " FROM generate_series(1, 3000) i")
    target = "fam" if kind == "partitioned" else "fam_b"
    conn.execute(f"INSERT INTO {target} SELECT i, 'n' || i, encrypt_field_versioned('n' || i), ('n' || i)::text"
                 " FROM generate_series(3001, 12000) i")
    if kind == "inheritance":
        conn.execute("INSERT INTO fam SELECT i, 'n' || i, encrypt_field_versioned('n' || i), ('n' || i)::text"
                     " FROM generate_series(12001, 12500) i")
    for col in ("env", "et"):
        notices: list[str] = []
        t, res = call_rotate(srv, "fam", col, 1000, notices)
        t.join(300)
        assert res.get("ok"), res
        n = 12000 if kind == "partitioned" else 12500
        assert notices[0] == f"NOTICE:  rotate_column: {n} rows of fam.{col} to re-encrypt to version v2"
        assert notices[-1].startswith(f"NOTICE:  rotate_column: done, {n} rows re-encrypted"), notices[-3:]
        assert all_rotated(conn, "fam", col) == (n, n, n)


def test_plpgsql_extra_errors_all_does_not_break_it(srv):
    conn = connect(srv)
    make_table(conn, "strict_tab", 3000)
    rot = connect(srv, "v2")
    notices: list[str] = []
    rot.add_notice_handler(lambda d: notices.append(f"{d.severity}:  {d.message_primary}"))
    rot.execute("SET plpgsql.extra_errors = 'all'")
    rot.execute("SET plpgsql.extra_warnings = 'all'")
    for col in ("env", "et"):
        rot.execute(f"CALL rotate_column('strict_tab', '{col}', 500)")
        assert all_rotated(conn, "strict_tab", col) == (3000, 3000, 3000)
    assert not [n for n in notices if n.startswith("WARNING")], notices
    assert sum(n.startswith("NOTICE:  rotate_column: done, 3000 rows re-encrypted") for n in notices) == 2, notices
