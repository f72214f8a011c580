"""Shared helpers of the wrapped-key tests (tests/python/test_wrapped_*.py):
servers with a key-encryption key (KEK) ring in a file or a command, and an
independent implementation of the wrapped form (Python `cryptography`), so
that a test can unwrap what the server made and look for the raw key
wherever it must not be.

    pzw1:<kek id>:<base64(nonce(12) || AES-256-GCM(KEK, data key, aad) || tag(16))>
    aad = b"pazpaz data key" || kek id

PAZPAZ_PACKAGE_DIR=<cargo pgrx package --out-dir> runs another build of the
extension through scripts/pg.sh's overlay instead of the installed one.
"""

import base64
import hashlib
import json
import os
import secrets
import shlex
import shutil
import subprocess
from pathlib import Path

import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import Cluster, free_port, pg_config, pg_tool, remove_cluster, require_library, run_pg, unique_name

PACKAGE_DIR = os.environ.get("PAZPAZ_PACKAGE_DIR")
AAD_PREFIX = b"pazpaz data key"
PG_BASE = Path(run_pg('echo "$PG_BASE"').strip())
# The uid the server runs as (scripts/pg.sh's pg_owner where it has one:
# servers of other versions may run in a chroot).
POSTGRES_UID = int(run_pg('if declare -F pg_owner >/dev/null; then pg_owner; else id -u postgres; fi').split(":")[0])


unique = unique_name


def leaks(needles, *texts) -> int:
    """How many of the secret spellings `needles` occur in any of `texts`: a
    number, so that a failing assertion never prints a key."""
    return sum(1 for n in needles if any(n in t for t in texts))


# ---- the wrapped form, independently of the extension ---------------------------

def new_ring(*ids: str, current: str | None = None) -> dict:
    """A KEK ring with fresh random keys."""
    return {"current": current or ids[-1], "keys": {i: base64.b64encode(secrets.token_bytes(32)).decode() for i in ids}}


def wrap(raw: bytes, ring: dict, kek_id: str | None = None) -> str:
    kek_id = kek_id or ring["current"]
    nonce = secrets.token_bytes(12)
    body = nonce + AESGCM(base64.b64decode(ring["keys"][kek_id])).encrypt(nonce, raw, AAD_PREFIX + kek_id.encode())
    return f"pzw1:{kek_id}:{base64.b64encode(body).decode()}"


def unwrap(wrapped: str, ring: dict) -> bytes:
    _, kek_id, body = wrapped.split(":", 2)
    sealed = base64.b64decode(body)
    return AESGCM(base64.b64decode(ring["keys"][kek_id])).decrypt(sealed[:12], sealed[12:], AAD_PREFIX + kek_id.encode())


def fingerprint(raw: bytes) -> str:
    """encryption_status()'s fingerprint, computed here."""
    return hashlib.sha256(b"pazpaz_crypto key fingerprint v1\0" + raw).hexdigest()[:8]


def spellings(raw: bytes) -> list[str]:
    """Every spelling of a raw key a leak could take, and their 20-character
    prefixes."""
    b64 = base64.b64encode(raw).decode()
    url = base64.urlsafe_b64encode(raw).decode()
    forms = [b64, b64.rstrip("="), url, url.rstrip("="), raw.hex(), raw.hex().upper()]
    return forms + [f[:20] for f in forms]


def ring_spellings(ring: dict) -> list[str]:
    return [s for k in ring["keys"].values() for s in spellings(base64.b64decode(k))]


def open_field(raw: bytes, sealed: bytes, aad: bytes = b"") -> str:
    """Decrypts format 1 (nonce || ciphertext || tag) with a raw data key."""
    return AESGCM(raw).decrypt(sealed[:12], sealed[12:], aad or None).decode()


# ---- servers ----------------------------------------------------------------------

def data_dir(name: str) -> Path:
    return Path(run_pg(f"pg_dir {shlex.quote(name)}").strip()) / "data"


def kek_path(name: str) -> Path:
    return PG_BASE / f"{name}.kek.json"


def write_kek_file(path: Path, ring, mode: int = 0o600, uid: int = POSTGRES_UID) -> Path:
    """The ring as the server reads it (a dict is written as JSON, bytes as is)."""
    PG_BASE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(ring if isinstance(ring, bytes) else json.dumps(ring).encode())
    os.chown(path, uid, -1)
    path.chmod(mode)
    return path


def _overlay(name: str) -> str:
    if not PACKAGE_DIR:
        return ""
    return f"use_package_overlay {shlex.quote(PACKAGE_DIR)} {shlex.quote(name + '-root')} && "


def _pgbin(name: str) -> str:
    """Sets PGBIN to the overlay of an earlier start, if there is one."""
    if not PACKAGE_DIR:
        return ""
    return f"PGBIN={shlex.quote(str(PG_BASE / (name + '-root') / pg_config('--bindir').lstrip('/')))}; "


def start(name: str, *conf: str) -> Cluster:
    """A fresh cluster (library preloaded by pg_start) on a free port."""
    port = free_port()
    args = " ".join(shlex.quote(c) for c in conf)
    run_pg(f"{_overlay(name)}pg_start {shlex.quote(name)} {port} {args}")
    return Cluster(name, port)


def restart(c: Cluster, memory_kib: int | None = None) -> None:
    """Restarts a cluster with the configuration now in its files (and with
    its processes' address space limited to `memory_kib`, ulimit -v)."""
    run_pg(
        f"{_pgbin(c.name)}"
        + (f"ulimit -v {int(memory_kib)}; " if memory_kib else "")
        +
        'if declare -F pg_exec_postgres >/dev/null; then as_pg=pg_exec_postgres; else as_pg="runuser -u postgres --"; fi; '
        f'$as_pg "$PGBIN/pg_ctl" -D "$(pg_dir {c.name})/data" -l "$(pg_log {c.name})" -w -t 60 restart >/dev/null'
    )


def start_existing(name: str, data: Path, overlay_of: str) -> Cluster:
    """Starts a server on a data directory made elsewhere (a base backup of
    cluster `overlay_of`, whose build it runs), on a free port with its own
    socket directory."""
    port = free_port()
    sock = data.parent / "sock"
    sock.mkdir(exist_ok=True)
    with open(data / "postgresql.auto.conf", "a") as f:
        f.write(f"\nport = {port}\nunix_socket_directories = '{sock}'\n")
    subprocess.run(["chown", "-R", "postgres:postgres", str(data.parent)], check=True)
    data.chmod(0o700)
    run_pg(
        f"{_pgbin(overlay_of)}"
        'if declare -F pg_exec_postgres >/dev/null; then as_pg=pg_exec_postgres; else as_pg="runuser -u postgres --"; fi; '
        f'$as_pg "$PGBIN/pg_ctl" -D {shlex.quote(str(data))} -l {shlex.quote(str(data.parent / "server.log"))} -w -t 60 start >/dev/null'
    )
    return Cluster(name, port)


def tool(name: str) -> list[str]:
    """The command that runs PostgreSQL tool `name` of the version under test."""
    return pg_tool(name)


def remove(name: str) -> None:
    remove_cluster(name)
    shutil.rmtree(PG_BASE / f"{name}-root", ignore_errors=True)
    kek_path(name).unlink(missing_ok=True)


def connect(c: Cluster, dbname: str = "postgres", **kw) -> psycopg.Connection:
    return psycopg.connect(c.dsn(dbname), autocommit=True, **kw)


def new_db(c: Cluster) -> str:
    return c.create_db()


def server_version_num(conn) -> int:
    return int(conn.execute("SHOW server_version_num").fetchone()[0])


def force_parallel(conn) -> None:
    """Plans with a parallel worker wherever one is allowed."""
    name = "debug_parallel_query" if server_version_num(conn) >= 160000 else "force_parallel_mode"
    for s in [f"SET {name} = on", "SET parallel_setup_cost = 0", "SET parallel_tuple_cost = 0",
              "SET min_parallel_table_scan_size = 0", "SET max_parallel_workers_per_gather = 2"]:
        conn.execute(s)



def require_libraries(*libs: str) -> None:
    for lib in libs:
        require_library(lib)
