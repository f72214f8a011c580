"""Per-tenant keys and crypto-shredding, as the README describes them.

Each tenant's data key lives wrapped in the application's secret manager
(here a dict) under a version name of its own (`t42.v1`); a session loads
only its tenant's keyring. Tenant t42 is then erased by destroying its
wrapped key — and the stray copies a literal SET left behind are dealt with
the README's way: pg_stat_statements is reset and the key-encryption key is
rotated (the other tenants' keys rewrapped, the old KEK dropped at restart),
so a forgotten copy of t42's wrapped key is useless too.

Afterwards t42's rows are unreadable and t43's readable in the live
database, in a base backup taken before the erasure (pg_basebackup) and in a
keyless pg_dump restored elsewhere; neither their plaintext nor t42's raw
key is in the WAL, the backup, the dump or the server log."""

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from conftest import run_pg
from wrapped_support import (
    PG_BASE, connect, kek_path, leaks, new_ring, remove, require_libraries, restart, spellings, start, start_existing,
    tool, unique, unwrap, write_kek_file,
)

pytestmark = pytest.mark.every_version

ROWS = 40


def set_ring(conn, tenant_ring: dict) -> None:
    conn.execute("SELECT set_config('pazpaz.encryption_keys', %s, false)", [json.dumps(tenant_ring)])


def tenant_rows(conn, tenant: str) -> int:
    """How many of a tenant's rows decrypt to their expected text."""
    return conn.execute(
        "SELECT count(*) FROM notes WHERE tenant = %s AND body::text LIKE %s AND decrypt_field_versioned(history) "
        "LIKE %s", [tenant, f"{tenant}-note-%", f"{tenant}-history-%"]).fetchone()[0]


def unreadable(conn, tenant: str) -> str:
    """The error reading one of the tenant's rows gives (there must be one)."""
    with pytest.raises(psycopg.Error) as e:
        conn.execute("SELECT body::text FROM notes WHERE tenant = %s LIMIT 1", [tenant]).fetchall()
    return f"{e.value.sqlstate}: {e.value.diag.message_primary}"


def files_under(*roots: Path):
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for n in names:
                p = Path(dirpath, n)
                if p.is_file() and not p.is_symlink():
                    yield p


def test_crypto_shredding_per_tenant():
    require_libraries("pg_stat_statements")
    name, backup_name = unique("wk_shred"), unique("wk_shred_backup")
    ring = new_ring("k1")
    path = write_kek_file(kek_path(name), ring)
    c = start(name, f"pazpaz.kek_file = '{path}'", "shared_preload_libraries = 'pazpaz_crypto,pg_stat_statements'",
              "pg_stat_statements.track_utility = on")
    try:
        db = c.create_db()
        with connect(c) as admin:
            admin.execute("CREATE EXTENSION pg_stat_statements")
        secret_manager = {}
        markers = {}
        with connect(c, db) as conn:
            conn.execute("CREATE TABLE notes (tenant text, id int, body encrypted_text, history jsonb)")
            for t in ("t42", "t43"):
                secret_manager[t] = {f"{t}.v1": conn.execute("SELECT generate_wrapped_encryption_key()").fetchone()[0]}
        raw = {t: unwrap(r[f"{t}.v1"], ring) for t, r in secret_manager.items()}
        for t in ("t42", "t43"):
            tag = secrets.token_hex(6)
            markers[t] = [f"{t}-note-{tag}-{i}" for i in range(ROWS)]
            with connect(c, db) as s:  # the tenant's session: its keyring only
                set_ring(s, secret_manager[t])
                with s.cursor() as cur:
                    cur.executemany("INSERT INTO notes VALUES (%s, %s, %s, encrypt_field_versioned(%s))",
                                    [(t, i, m, m.replace("-note-", "-history-")) for i, m in enumerate(markers[t])])
                assert tenant_rows(s, t) == ROWS
                # The other tenant's rows are not readable with this keyring.
                other = "t43" if t == "t42" else "t42"
                if other in markers:
                    assert unreadable(s, other).startswith("42704: Key version \"t42.v1\" is not loaded")
        # A stray copy: someone once set t42's keys with a literal SET.
        with connect(c, db) as s:
            s.execute("SET pazpaz.encryption_keys = '" + json.dumps(secret_manager["t42"]) + "'")
            assert s.execute("SELECT count(*) FROM notes WHERE tenant = 't42' AND body IS NOT NULL").fetchone()[0] == ROWS

        # A base backup and a keyless dump, both taken before the erasure.
        backup = PG_BASE / backup_name / "data"
        backup.parent.mkdir(parents=True)
        subprocess.run(tool("pg_basebackup") + ["-h", c.host, "-p", str(c.port), "-U", "postgres", "-D", str(backup),
                                                "-X", "stream", "-c", "fast"], check=True, capture_output=True)
        work = PG_BASE / f"{name}-work"  # seen at the same path by the tools of every version
        work.mkdir(exist_ok=True)
        dump = work / "clinic.dump"
        env = {**os.environ, "PGOPTIONS": "-c pazpaz.encrypted_text_io=envelope"}
        subprocess.run(tool("pg_dump") + ["-h", c.host, "-p", str(c.port), "-U", "postgres", "-Fc", "-f", str(dump), db],
                       check=True, env=env, capture_output=True)

        # ---- erase tenant t42 ----
        with connect(c) as admin:
            stats = "\n".join(r[0] for r in admin.execute("SELECT query FROM pg_stat_statements"))
            version = int(admin.execute("SHOW server_version_num").fetchone()[0])
        stray = secret_manager["t42"]["t42.v1"]
        # What must be purged besides the secret manager (up to 17:
        # PostgreSQL 18 stores SET statements with their constants replaced).
        assert (stray in stats) == (version < 180000)
        del secret_manager["t42"]
        with connect(c) as admin:
            admin.execute("SELECT pg_stat_statements_reset()")
            # Sessions still holding t42's keyring end (a pooler's too).
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                          "pg_backend_pid()", [db])
        # Rotate the KEK: every remaining key rewrapped to k2, k1 dropped.
        ring2 = {"current": "k2", "keys": {**ring["keys"], **new_ring("k2")["keys"]}}
        write_kek_file(path, ring2)
        restart(c)
        with connect(c, db) as admin:
            for t, r in secret_manager.items():
                for v, w in r.items():
                    r[v] = admin.execute("SELECT rewrap_encryption_key(%s)", [w]).fetchone()[0]
        write_kek_file(path, {"keys": {"k2": ring2["keys"]["k2"]}})
        restart(c)

        # ---- live database ----
        with connect(c, db) as s:
            set_ring(s, secret_manager["t43"])
            assert tenant_rows(s, "t43") == ROWS
            assert unreadable(s, "t42").startswith('42704: Key version "t42.v1" is not loaded (loaded versions: t43.v1)')
            # The ciphertext is still there, labelled, and useless.
            assert s.execute("SELECT key_version(body), count(*) FROM notes WHERE tenant = 't42' GROUP BY 1"
                             ).fetchall() == [("t42.v1", ROWS)]
            with pytest.raises(psycopg.errors.UndefinedObject) as e:
                s.execute("SELECT set_config('pazpaz.encryption_keys', %s, false)", [json.dumps({"t42.v1": stray})])
            assert 'key-encryption key "k1" is not loaded' in str(e.value)

        # ---- the base backup ----
        b = start_existing(backup_name, backup, overlay_of=name)
        with connect(b, db) as s:
            set_ring(s, secret_manager["t43"])
            assert tenant_rows(s, "t43") == ROWS
            assert unreadable(s, "t42").startswith("42704:")
        run_pg(f"pg_stop {backup_name}")

        # ---- the keyless dump, restored into a fresh database ----
        with connect(c) as admin:
            admin.execute("CREATE DATABASE restored")
        subprocess.run(tool("pg_restore") + ["-h", c.host, "-p", str(c.port), "-U", "postgres", "-d", "restored",
                                             str(dump)], check=True, env=env, capture_output=True)
        with connect(c, "restored") as s:
            set_ring(s, secret_manager["t43"])
            assert tenant_rows(s, "t43") == ROWS
            assert unreadable(s, "t42").startswith("42704:")

        # ---- what is on disk: WAL, data files, the backup, the dump, the log ----
        data = Path(run_pg(f"pg_dir {name}").strip())
        plaintexts = [m.encode() for t in markers for m in markers[t]]
        plaintexts += [m.replace("-note-", "-history-").encode() for t in markers for m in markers[t]]
        t42_key = [sp.encode() for sp in spellings(raw["t42"])] + [raw["t42"]]
        files = list(files_under(data / "data" / "pg_wal", data / "data" / "base", backup, dump.parent, c.log.parent))
        assert any(f.parent.name == "pg_wal" for f in files) and dump in files  # the search covers them
        # Positive control: the envelopes' key version labels (plaintext by
        # design) are found in the heap, the WAL and the backup.
        labelled = {f.parent.name for f in files if b"t42.v1" in f.read_bytes()}
        assert "pg_wal" in labelled and any(p.isdigit() for p in labelled), labelled
        for f in files:
            blob = f.read_bytes()
            assert leaks(plaintexts, blob) == 0, f"plaintext found in {f}"
            assert leaks(t42_key, blob) == 0, f"t42's data key found in {f}"
    finally:
        run_pg(f"pg_stop {backup_name}")
        remove(backup_name)
        remove(name)
        shutil.rmtree(PG_BASE / f"{name}-work", ignore_errors=True)
