"""The portable package (scripts/package.sh, the README's packaging command)
as an installable artifact, with no Rust involved: a .tar.gz of the three
files, checked, extracted into a private root (the README extracts it over /;
the paths in the archive are the same), then CREATE EXTENSION, a round trip
and the independent known-answer vectors on a fresh cluster that runs from
that root, and the catalogue of the extension's objects with their comments.

It runs for the PostgreSQL version under test (PG_MAJOR, default 15): the
artifact is that version's, built against its headers and paths, and the
server that loads it is a server of that version (in its chroot for 17 and
18; the work files are under PG_BASE, which the chroot sees at the same path).

The package is built for any x86_64 CPU with AES-NI, PCLMULQDQ and AVX, unlike
the build for this machine that the other suites test (.cargo/config.toml),
which stays installed untouched.
"""

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import secrets
import tarfile
from pathlib import Path

import psycopg
import pytest

from conftest import ROOT, Cluster, free_port, new_key, remove_cluster, run_pg
from pazpaz_crypto import Keyring, set_keys

pytestmark = pytest.mark.every_version

PG_MAJOR = os.environ.get("PG_MAJOR", "15")
PG_BASE = Path(os.environ.get("PG_BASE", "/tmp/pazpaz_crypto"))
ARTIFACT_NAME = re.compile(rf"pazpaz_crypto-(.+)-pg{PG_MAJOR}-[a-z0-9]+\.tar\.gz")


def tool(name: str) -> list[str]:
    """The argv that runs PostgreSQL tool `name` of the version under test
    (scripts/pg.sh pg_tool: one word per line, several for a chroot)."""
    return run_pg(f"pg_tool {shlex.quote(name)}").splitlines()


def pg_config(flag: str) -> Path:
    """A directory of the server under test, as the server sees it."""
    return Path(subprocess.run(tool("pg_config") + [flag], check=True, capture_output=True, text=True).stdout.strip())


# e.g. /usr/lib/postgresql/15/lib and /usr/share/postgresql/15/extension
PKGLIBDIR = pg_config("--pkglibdir")
EXTDIR = pg_config("--sharedir") / "extension"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="module")
def workdir():
    """Under PG_BASE, so that the server of a chroot sees it at the same path."""
    d = PG_BASE / f"pkg_{os.getpid()}_{secrets.token_hex(3)}"
    d.mkdir(mode=0o755, parents=True)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def artifact(workdir) -> Path:
    """The artifact scripts/package.sh makes (the README's packaging command)
    for the version under test: pazpaz_crypto-<version>-pg<N>-<arch>.tar.gz,
    the package's files only (no directory entries, so extracting over /
    touches no existing directory), owned by root, paths relative to /."""
    made = subprocess.run(["bash", "scripts/package.sh", PG_MAJOR], cwd=ROOT, check=True, capture_output=True,
                          text=True)
    path = Path(made.stdout.strip().splitlines()[-1])
    assert ARTIFACT_NAME.fullmatch(path.name), path.name
    out = workdir / path.name
    shutil.copy(path, out)
    return out


def members(artifact: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(artifact) as t:
        return {m.name: m for m in t.getmembers()}


def test_artifact_holds_exactly_the_extension_files(artifact):
    m = members(artifact)
    version = ARTIFACT_NAME.fullmatch(artifact.name).group(1)
    lib, ext = str(PKGLIBDIR).lstrip("/"), str(EXTDIR).lstrip("/")
    assert set(m) == {
        f"{lib}/pazpaz_crypto.so",
        f"{ext}/pazpaz_crypto.control",
        f"{ext}/pazpaz_crypto--{version}.sql",
    }
    assert all(i.isfile() and i.uid == 0 and i.gid == 0 for i in m.values())
    assert m[f"{lib}/pazpaz_crypto.so"].mode & 0o755 == 0o755


def test_library_needs_nothing_from_a_rust_toolchain(artifact, workdir):
    """The Rust standard library is linked in: the .so depends only on system
    libraries, all of which resolve (on the system the server runs on: its
    chroot for 17 and 18)."""
    staging = workdir / "inspect"
    staging.mkdir()
    subprocess.run(["tar", "-xzf", str(artifact), "-C", str(staging)], check=True)
    so = staging / str(PKGLIBDIR).lstrip("/") / "pazpaz_crypto.so"
    deps = run_pg(f"pg_exec ldd {shlex.quote(str(so))}")
    assert "not found" not in deps
    assert not re.search(r"rustup|\.cargo|libstd-", deps), deps
    # The PostgreSQL module magic is there (PG_MODULE_MAGIC).
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(so)], check=True, capture_output=True, text=True).stdout
    assert "Pg_magic_func" in symbols and "_PG_init" in symbols


@pytest.fixture(scope="module")
def installed(artifact, workdir):
    """Extracts the artifact with plain tar into a fresh root-owned directory
    standing in for /, and starts a fresh server whose PostgreSQL finds its
    library and extension files there (scripts/pg.sh use_package_overlay)."""
    root = workdir / "root"
    root.mkdir(mode=0o755)
    assert root.stat().st_uid == 0
    subprocess.run(["tar", "--unlink-first", "-xzf", str(artifact), "-C", str(root)], check=True)
    for f in (p for p in root.rglob("*") if p.is_file()):
        assert f.stat().st_uid == 0, f
    name, port = f"{workdir.name}_server", free_port()
    overlay = f"{workdir.name}/overlay"      # under PG_BASE
    try:
        # A fresh server: loads the extracted library (preloaded, as in production).
        run_pg(f"use_package_overlay {shlex.quote(str(root))} {shlex.quote(overlay)} && pg_start {name} {port}")
        cluster = Cluster(name, port)
        db = cluster.create_db()
        # The same path for the server (in a chroot or not) and for the host.
        library = PG_BASE / overlay / str(PKGLIBDIR).lstrip("/") / "pazpaz_crypto.so"
        assert sha256(library) == sha256(root / str(PKGLIBDIR).lstrip("/") / "pazpaz_crypto.so")
        yield cluster, db, library
    finally:
        remove_cluster(name)


def test_create_extension_and_round_trip(installed, artifact):
    cluster, db, library = installed
    version = ARTIFACT_NAME.fullmatch(artifact.name).group(1)
    with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
        assert c.execute("SHOW server_version_num").fetchone()[0][:-4] == PG_MAJOR
        assert c.execute("SELECT extversion FROM pg_extension WHERE extname = 'pazpaz_crypto'").fetchone()[0] == version
        set_keys(c, new_key())
        assert c.execute("SELECT decrypt_field(encrypt_field('round trip ✓'))").fetchone()[0] == "round trip ✓"
        c.execute("CREATE TABLE t (v encrypted_text(20))")
        c.execute("INSERT INTO t VALUES (%s)", ("Zoë",))
        assert c.execute("SELECT v, key_version(v) FROM t").fetchone() == ("Zoë", "v1")
        # The library is preloaded by the fresh server, as in production, and
        # it is the packaged one, not the build installed for the other suites.
        assert "pazpaz_crypto" in c.execute("SHOW shared_preload_libraries").fetchone()[0]
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        # By inode: a server in a chroot shows its files under the chroot's
        # path (the path as the host sees it ends with the server's path).
        mapped = {(int(line.split()[4]), line.split()[-1])
                  for line in Path(f"/proc/{pid}/maps").read_text().splitlines() if line.endswith("pazpaz_crypto.so")}
        assert {inode for inode, _ in mapped} == {library.stat().st_ino}, mapped
        assert all(path.endswith(str(library)) for _, path in mapped), mapped


def test_known_answer_vectors(installed):
    """The portable build decrypts the vectors an independent implementation
    made (Python cryptography), in both formats."""
    cluster, db, _ = installed
    vectors = json.loads(Path(ROOT, "tests/vectors/field_vectors.json").read_text())
    with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
        set_keys(c, Keyring(vectors["keys_base64"], current="v1"))
        for v in vectors["vectors"]:
            got = c.execute("SELECT decrypt_field_versioned(%s::jsonb)", (json.dumps(v["envelope"]),)).fetchone()[0]
            assert got == v["plaintext"]
        for version, key in vectors["keys_base64"].items():
            set_keys(c, key)
            for v in (v for v in vectors["vectors"] if v["key_version"] == version):
                got = c.execute("SELECT decrypt_field(%s)", (bytes.fromhex(v["bytea_hex"]),)).fetchone()[0]
                assert got == v["plaintext"]


EXPECTED_OBJECTS = {
    "type encrypted_text",
    "function encrypt_field(text)", "function encrypt_field(text,text)",
    "function decrypt_field(bytea)", "function decrypt_field(bytea,text)",
    "function encrypt_field_versioned(text)", "function encrypt_field_versioned(text,text)",
    "function decrypt_field_versioned(jsonb)",
    "function reencrypt_field_versioned(jsonb)", "function reencrypt_field_versioned(jsonb,text)",
    "function key_version(jsonb)", "function key_version(encrypted_text)",
    "function reencrypt(encrypted_text)",
    "function generate_encryption_key()", "function encryption_status()",
    "function rotate_column(regclass,name,integer,text)",
    "cast from text to encrypted_text", "cast from encrypted_text to text",
    "cast from character varying to encrypted_text", "cast from encrypted_text to character varying",
    "cast from encrypted_text to bytea", "cast from bytea to encrypted_text",
}

EXTENSION_OBJECTS = """
SELECT pg_describe_object(d.classid, d.objid, d.objsubid) AS object,
       d.classid::regclass::text AS catalog,
       obj_description(d.objid, d.classid::regclass::name) AS comment
  FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid AND d.refclassid = 'pg_extension'::regclass
 WHERE e.extname = 'pazpaz_crypto' AND d.deptype = 'e'
 ORDER BY 1
"""


def extension_objects(cluster, db) -> list[tuple[str, str, str | None]]:
    with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
        return c.execute(EXTENSION_OBJECTS).fetchall()


def test_dx_lists_every_object(installed):
    cluster, db, _ = installed
    out = subprocess.run(
        tool("psql") + ["-X", "-A", "-t", "-h", cluster.host, "-p", str(cluster.port), "-U", "postgres", "-d", db,
                        "-c", r"\dx+ pazpaz_crypto"], check=True, capture_output=True, text=True).stdout
    listed = {ln.strip() for ln in out.splitlines() if ln.strip()}
    assert listed == {o for o, _, _ in extension_objects(cluster, db)}
    assert EXPECTED_OBJECTS <= listed, sorted(EXPECTED_OBJECTS - listed)


IMPLICIT_ARRAY_TYPES = """
SELECT pg_describe_object(d.classid, d.objid, d.objsubid)
  FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid AND d.refclassid = 'pg_extension'::regclass
 WHERE e.extname = 'pazpaz_crypto' AND d.deptype = 'e' AND d.classid = 'pg_type'::regclass
   AND (EXISTS (SELECT 1 FROM pg_type elem WHERE elem.typarray = d.objid)
        OR EXISTS (SELECT 1 FROM pg_type t JOIN pg_class r ON r.oid = t.typrelid
                    WHERE t.oid = d.objid AND r.relkind = 'r'))
"""


def test_every_function_type_and_procedure_has_a_comment(installed):
    """Every function and type the extension defines has a COMMENT. The types
    PostgreSQL makes by itself — the array type of encrypted_text, and the
    row type of the search registry table and its array (encrypted_text[],
    search_indexes, search_indexes[]; members of the extension on some
    versions) — are not among them (the table itself has a comment)."""
    cluster, db, _ = installed
    with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
        implicit = {r[0] for r in c.execute(IMPLICIT_ARRAY_TYPES).fetchall()}
    assert implicit <= {"type encrypted_text[]", "type search_indexes", "type search_indexes[]"}, implicit
    missing = [o for o, catalog, comment in extension_objects(cluster, db)
               if catalog in ("pg_proc", "pg_type") and not comment and o not in implicit]
    assert not missing, "objects without a COMMENT: " + "; ".join(missing)


def test_every_cast_has_a_comment(installed):
    """COMMENT ON CAST documents what each cast does (encrypts, decrypts, or
    moves the raw envelope without a key) in \\dC+."""
    cluster, db, _ = installed
    casts = [(o, comment) for o, catalog, comment in extension_objects(cluster, db) if catalog == "pg_cast"]
    assert len(casts) >= 6
    missing = [o for o, comment in casts if not comment]
    assert not missing, "casts without a COMMENT: " + "; ".join(missing)
