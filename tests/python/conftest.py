"""Shared machinery of the Python suite: real PostgreSQL servers started by
scripts/pg.sh as the postgres user (library preloaded), each under a unique
name and on a free port chosen at run time, and the tools of the server
version under test.

The version comes from the environment variable PG_MAJOR (default 15), the
same one scripts/pg.sh reads; every test carries it as the `pg_major`
fixture parameter (test ids end in [pg15], [pg17], …). PostgreSQL's tools
(psql, pg_dump, pg_restore, pgbench, pg_config, …) are run through
`pg_tool(name)`, which may be a command of several words (a server in a
chroot). Paths under PG_BASE (sockets, data directories, server logs, work
files) are the same for the host and for the server."""

import base64
import functools
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
PG_MAJOR = int(os.environ.get("PG_MAJOR", "15"))
PG_BASE = Path(os.environ.get("PG_BASE", "/tmp/pazpaz_crypto"))

# The client helper package is used straight from the repository.
sys.path.insert(0, str(ROOT / "python"))


def run_pg(cmd: str, env=None) -> str:
    """Runs a command with scripts/pg.sh sourced; returns stdout."""
    out = subprocess.run(
        ["bash", "-c", f"set -euo pipefail; source scripts/pg.sh; {cmd}"],
        cwd=ROOT, env={**os.environ, "PG_MAJOR": str(PG_MAJOR), **(env or {})},
        check=True, capture_output=True, text=True,
    )
    return out.stdout


@functools.cache
def pg_tool(name: str) -> list[str]:
    """The command (argv) that runs PostgreSQL tool `name` of PG_MAJOR's
    server, as scripts/pg.sh's pg_tool names it (one word per line)."""
    words = run_pg(f"pg_tool {shlex.quote(name)}").splitlines()
    assert words, f"pg_tool {name} printed nothing"
    return words


@functools.cache
def server_root() -> Path:
    """Where the server's own files (library, headers) are seen from the host:
    the chroot directory when the tools run in one, else /."""
    cmd = pg_tool("pg_config")
    if Path(cmd[0]).name == "chroot":
        return Path(next(w for w in cmd[1:] if not w.startswith("-")))
    return Path("/")


def host_path(server_path: str) -> Path:
    """A path of the server's file system, as the host reaches it."""
    return server_root() / server_path.lstrip("/")


@functools.cache
def pg_config(flag: str) -> str:
    """A pg_config value of the server under test (a path of the server's
    file system; see host_path)."""
    return subprocess.run(pg_tool("pg_config") + [flag], check=True, capture_output=True,
                          text=True).stdout.strip()


def have_library(name: str) -> bool:
    """Whether the server's installation has the loadable module `name`."""
    return host_path(pg_config("--pkglibdir")).joinpath(f"{name}.so").exists()


def require_library(name: str, why: str = "") -> None:
    if not have_library(name):
        pytest.skip(f"PostgreSQL {PG_MAJOR}'s installation has no {name} module{why}")


def require_program(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.skip(f"{name} is not installed on this machine")
    return path


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique_name(prefix: str) -> str:
    """A cluster name nobody else uses (others run servers under PG_BASE
    at the same time)."""
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


class Cluster:
    def __init__(self, name: str, port: int):
        self.name, self.port = name, port
        self.dir = PG_BASE / name
        self.host = str(self.dir / "sock")
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"

    def dsn(self, dbname="postgres", **kw) -> str:
        parts = {"host": self.host, "port": self.port, "user": "postgres", "dbname": dbname, **kw}
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def url(self, driver: str, dbname: str) -> str:
        return f"postgresql+{driver}://postgres@/{dbname}?host={self.host}&port={self.port}"

    def env(self, dbname="postgres", **extra) -> dict:
        """Environment for libpq tools talking to this server."""
        return {**os.environ, "PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": "postgres",
                "PGDATABASE": dbname, **extra}

    def workdir(self, sub="work") -> Path:
        """A directory for files the tools and the server both read and
        write (under PG_BASE, so the same path for both)."""
        d = self.dir / sub
        d.mkdir(mode=0o777, parents=True, exist_ok=True)
        d.chmod(0o777)
        return d

    def tool(self, name: str, *args, input=None, env=None, dbname="postgres", merge=False, check=False,
             timeout=1800) -> subprocess.CompletedProcess:
        """Runs a PostgreSQL tool against this server; output as text
        (stderr folded into stdout when merge)."""
        return subprocess.run(
            pg_tool(name) + [str(a) for a in args], input=input, text=True, timeout=timeout, check=check,
            env=self.env(dbname, **(env or {})), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge else subprocess.PIPE)

    def psql(self, *args, **kw) -> subprocess.CompletedProcess:
        """psql without psqlrc."""
        return self.tool("psql", "-X", *args, **kw)

    def value(self, sql: str, dbname="postgres", env=None) -> str:
        """The result of one query through psql (unaligned, tuples only)."""
        r = self.psql("-At", "-v", "ON_ERROR_STOP=1", "-c", sql, dbname=dbname, env=env)
        if r.returncode != 0:
            raise AssertionError(f"psql failed on {sql[:200]!r}:\n{r.stderr[-2000:]}")
        return r.stdout.strip()

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

    def stop(self) -> None:
        run_pg(f"pg_stop {shlex.quote(self.name)}")

    def remove(self) -> None:
        remove_cluster(self.name)


def start_cluster(name: str, port: int | None = None, *conf_lines: str) -> Cluster:
    """Starts a fresh cluster with scripts/pg.sh (a free port unless one is
    given); extra postgresql.conf lines come after the ones pg_start writes,
    so they override them."""
    port = port or free_port()
    args = " ".join(shlex.quote(line) for line in conf_lines)
    run_pg(f"pg_start {shlex.quote(name)} {port} {args}")
    return Cluster(name, port)


def remove_cluster(name: str) -> None:
    """Stops a cluster and deletes its directory (data, socket, log)."""
    run_pg(f"pg_stop {shlex.quote(name)}")
    shutil.rmtree(PG_BASE / name, ignore_errors=True)


@pytest.fixture
def new_cluster():
    """Starts clusters for one test (unique names, free ports) and removes
    them afterwards, the last started first."""
    made = []

    def start(prefix: str, *conf: str) -> Cluster:
        c = start_cluster(unique_name(prefix), None, *conf)
        made.append(c)
        return c

    yield start
    for c in reversed(made):
        c.remove()


# A second, short-lived cluster (packaging) uses this name and port.
SECOND_NAME, SECOND_PORT = unique_name("pysecond"), free_port()


@pytest.fixture(scope="session", autouse=True, params=[PG_MAJOR], ids=lambda v: f"pg{v}")
def pg_major(request) -> int:
    """The PostgreSQL major version under test (PG_MAJOR)."""
    return request.param


@pytest.fixture(scope="session")
def cluster():
    c = start_cluster(unique_name("pytest"))
    yield c
    c.remove()


@pytest.fixture
def db(cluster):
    """Name of a fresh database with the extension created."""
    name = cluster.create_db()
    yield name
    cluster.drop_db(name)


@pytest.fixture
def key():
    return new_key()


class Checks:
    """Soft assertions: every check of a test runs and is reported; the test
    fails at the end of the block if any did. Failure texts pass through
    `scrub` (keys must never reach the output)."""

    def __init__(self, scrub=lambda s: s):
        self.failed: list[str] = []
        self.passed = 0
        self.scrub = scrub

    def __call__(self, name: str, ok, why: str = "") -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed.append(self.scrub(f"{name}" + (f": {why}" if why else ""))[:2000])
        return bool(ok)

    def eq(self, name: str, expected, actual) -> bool:
        return self(name, expected == actual, f"expected {expected!r}, got {actual!r}")

    def ne(self, name: str, a, b) -> bool:
        return self(name, a != b, f"both are {a!r}")

    def ge(self, name: str, minimum: int, actual) -> bool:
        try:
            ok = int(actual) >= minimum
        except (TypeError, ValueError):
            ok = False
        return self(name, ok, f"expected >= {minimum}, got {actual!r}")

    def has(self, name: str, haystack: str, needle: str) -> bool:
        return self(name, needle in haystack, f"{needle!r} not found in:\n{haystack[-3000:]}")

    def lacks(self, name: str, haystack: str, needle: str) -> bool:
        return self(name, needle not in haystack, f"{needle!r} unexpectedly found")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        print(f"{self.passed} checks passed, {len(self.failed)} failed")
        if exc_type is None and self.failed:
            raise AssertionError(f"{len(self.failed)} of {len(self.failed) + self.passed} checks failed:\n  "
                                 + "\n  ".join(self.failed))
        return False
