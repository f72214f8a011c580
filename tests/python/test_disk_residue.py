"""What PostgreSQL itself writes to disk outside the extension's reach
(SECURITY.md, "What PostgreSQL writes outside the extension's reach"), and
proof that the documented safe configuration avoids it:

- parallel workers receive the leader's key settings through dynamic shared
  memory: with `dynamic_shared_memory_type = mmap` that is a file in
  `pg_dynshmem/`; with the default `posix` nothing of it is on disk;
- a sort over decrypted values spills plaintext to temporary files in
  `temp_tablespaces` (the place to put on an encrypted volume), not in the
  data directory — except a `WITH HOLD` cursor, which PostgreSQL writes out
  at commit into the data directory's `base/pgsql_tmp`;
- a one-statement migration leaves the old plaintext in WAL; after a
  CHECKPOINT with `wal_recycle = off` and WAL switched past it, it is gone
  from `pg_wal`.
"""

import secrets
import shutil
import threading
import time
from pathlib import Path

import psycopg
import pytest

from conftest import PG_BASE, free_port, new_key, remove_cluster, start_cluster, unique_name


def files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        try:
            if p.is_file() and needle in p.read_bytes():
                hits.append(str(p.relative_to(root)))
        except (FileNotFoundError, PermissionError):
            pass  # a temporary file removed while we looked
    return hits


@pytest.fixture
def node(request):
    made = []

    def start(*conf):
        name = unique_name(f"disk_{len(made)}")
        c = start_cluster(name, free_port(), *conf)
        made.append(name)
        with psycopg.connect(c.dsn(), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pazpaz_crypto")
        return c

    yield start
    for name in made:
        remove_cluster(name)


def parallel_decrypt_while_scanning(cluster, key: str, look_in: Path) -> list[str]:
    """Runs a parallel decrypting scan and, while its workers run, looks for
    the key in `look_in`."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as c:
        c.execute("SELECT set_config('pazpaz.encryption_key', %s, false)", [key])
        c.execute("CREATE TABLE IF NOT EXISTS big AS SELECT encrypt_field(repeat('x', 50) || g) AS b"
                  " FROM generate_series(1, 300000) g")
    hits: list[str] = []
    done = threading.Event()

    def scan():
        with psycopg.connect(cluster.dsn(), autocommit=True) as c:
            c.execute("SELECT set_config('pazpaz.encryption_key', %s, false)", [key])
            c.execute("SET max_parallel_workers_per_gather = 2")
            c.execute("SET parallel_setup_cost = 0")
            c.execute("SET parallel_tuple_cost = 0")
            for _ in range(8):
                c.execute("SELECT count(decrypt_field(b)) FROM big").fetchone()
        done.set()

    t = threading.Thread(target=scan)
    t.start()
    while not done.is_set():
        hits += files_containing(look_in, key.encode())
        time.sleep(0.02)
    t.join()
    return hits


@pytest.mark.every_version
def test_parallel_workers_keys_stay_off_disk_with_posix_shared_memory(node):
    key = new_key()
    posix = node("dynamic_shared_memory_type = posix")
    assert parallel_decrypt_while_scanning(posix, key, posix.data / "pg_dynshmem") == []
    assert files_containing(posix.data, key.encode()) == []
    # The documented exception: mmap puts the serialized settings in a file.
    mmap = node("dynamic_shared_memory_type = mmap")
    assert parallel_decrypt_while_scanning(mmap, key, mmap.data / "pg_dynshmem") != [], \
        "the mmap case is what SECURITY.md describes"


def test_spilled_plaintext_lands_in_temp_tablespaces_except_held_cursors(node):
    space = PG_BASE / unique_name("tempspace")
    space.mkdir(parents=True)
    shutil.chown(space, "postgres", "postgres")
    c = node("work_mem = 64kB")
    marker = "spill-" + secrets.token_hex(8)
    try:
        with psycopg.connect(c.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE TABLESPACE enc_temp LOCATION '{space}'")
            conn.execute("SELECT set_config('pazpaz.encryption_key', %s, false)", [new_key()])
            conn.execute("CREATE TABLE notes AS SELECT g AS id, encrypt_field(%s || g) AS b"
                         " FROM generate_series(1, 20000) g", [marker])
            conn.execute("SET temp_tablespaces = enc_temp")
            # A sort over decrypted values, held open by a cursor: its spill
            # files stay until the cursor closes.
            with conn.transaction():
                conn.execute("DECLARE sorted CURSOR FOR SELECT decrypt_field(b) AS t FROM notes ORDER BY 1")
                conn.execute("FETCH 1 FROM sorted")
                assert files_containing(space, marker.encode()) != [], "the sort spills where temp_tablespaces says"
                assert files_containing(c.data, marker.encode()) == [], "and nowhere in the data directory"
            # The documented exception: a WITH HOLD cursor is written out at
            # commit into the data directory's base/pgsql_tmp, whatever
            # temp_tablespaces says.
            with conn.transaction():
                conn.execute("DECLARE held CURSOR WITH HOLD FOR SELECT decrypt_field(b) AS t FROM notes")
            hits = files_containing(c.data, marker.encode())
            assert hits and all(h.startswith("base/pgsql_tmp/") for h in hits), hits
            conn.execute("CLOSE held")
    finally:
        shutil.rmtree(space, ignore_errors=True)


def test_wal_of_a_migration_is_gone_after_checkpoint_without_recycling(node):
    c = node("wal_recycle = off", "min_wal_size = 32MB", "max_wal_size = 64MB", "wal_keep_size = 0")
    marker = "migrated-" + secrets.token_hex(8)
    with psycopg.connect(c.dsn(), autocommit=True) as conn:
        conn.execute("SELECT set_config('pazpaz.encryption_key', %s, false)", [new_key()])
        conn.execute("CREATE TABLE contacts AS SELECT g AS id, %s || g AS notes FROM generate_series(1, 2000) g", [marker])
        conn.execute("CHECKPOINT")
        conn.execute("ALTER TABLE contacts ALTER COLUMN notes TYPE encrypted_text USING notes::encrypted_text")
        assert files_containing(c.data / "pg_wal", marker.encode()) != [], "the old plaintext is in WAL at first"
        assert files_containing(c.data / "base", marker.encode()) == [], "the table holds only envelopes"
        # The documented step: switch WAL past it and checkpoint (twice: the
        # segment before the latest redo pointer is removed).
        for _ in range(3):
            conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")
    assert files_containing(c.data / "pg_wal", marker.encode()) == []
