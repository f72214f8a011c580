"""Shared fixtures for the Python suite: a real PostgreSQL 15 server (started
by scripts/pg.sh as the postgres user, library preloaded) and a fresh
database with the extension per test."""

import base64
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
PORT = int(os.environ.get("PAZPAZ_PYTEST_PORT", "55490"))
# A second, short-lived cluster (pgaudit, packaging) uses this name and port.
SECOND_NAME, SECOND_PORT = "pyaudit", int(os.environ.get("PAZPAZ_PYTEST_PORT2", "55491"))

# The client helper package is used straight from the repository.
sys.path.insert(0, str(ROOT / "python"))


def run_pg(cmd: str, env=None) -> str:
    """Runs a command with scripts/pg.sh sourced; returns stdout."""
    out = subprocess.run(
        ["bash", "-c", f"set -euo pipefail; source scripts/pg.sh; {cmd}"],
        cwd=ROOT, env={**os.environ, **(env or {})}, check=True, capture_output=True, text=True,
    )
    return out.stdout


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


class Cluster:
    def __init__(self, name: str, port: int):
        self.name, self.port = name, port
        self.host = f"/tmp/pazpaz_crypto/{name}/sock"
        self.log = Path(f"/tmp/pazpaz_crypto/{name}/server.log")

    def dsn(self, dbname="postgres", **kw) -> str:
        parts = {"host": self.host, "port": self.port, "user": "postgres", "dbname": dbname, **kw}
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def url(self, driver: str, dbname: str) -> str:
        return f"postgresql+{driver}://postgres@/{dbname}?host={self.host}&port={self.port}"

    def create_db(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.dsn(), autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        with psycopg.connect(self.dsn(name), autocommit=True) as c:
            c.execute("CREATE EXTENSION pazpaz_crypto")
        return name

    def drop_db(self, name: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def start_cluster(name: str, port: int, *conf_lines: str) -> Cluster:
    """Starts a fresh cluster with scripts/pg.sh; extra postgresql.conf lines
    come after the ones pg_start writes, so they override them."""
    args = " ".join(shlex.quote(line) for line in conf_lines)
    run_pg(f"pg_start {name} {port} {args}")
    return Cluster(name, port)


def remove_cluster(name: str) -> None:
    """Stops a cluster and deletes its directory (data, socket, log)."""
    run_pg(f"pg_stop {name}")
    shutil.rmtree(run_pg(f"pg_dir {name}").strip(), ignore_errors=True)


@pytest.fixture(scope="session")
def cluster():
    name = "pytest"
    run_pg(f"pg_start {name} {PORT}")
    yield Cluster(name, PORT)
    remove_cluster(name)


@pytest.fixture
def db(cluster):
    """Name of a fresh database with the extension created."""
    name = cluster.create_db()
    yield name
    cluster.drop_db(name)


@pytest.fixture
def key():
    return new_key()
