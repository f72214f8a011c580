"""The `cargo pgrx package` tree as an installable artifact, with no Rust
involved: a .tar.gz of the three files, checked, extracted over / (where the
same build is already installed: checksums are compared first, so this never
changes what is installed), then CREATE EXTENSION and a round trip on a fresh
cluster, and the catalogue of the extension's objects with their comments.

The package tree is $PAZPAZ_PACKAGE_DIR, by default target/package-release
(scripts/test.sh builds and installs it before this suite runs).
"""

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import psycopg
import pytest

from conftest import ROOT, SECOND_NAME, SECOND_PORT, new_key, remove_cluster, start_cluster
from pazpaz_crypto import set_keys

PG_CONFIG = "/usr/lib/postgresql/15/bin/pg_config"


def pg_config(flag: str) -> Path:
    return Path(subprocess.run([PG_CONFIG, flag], check=True, capture_output=True, text=True).stdout.strip())


PKGLIBDIR = pg_config("--pkglibdir")                 # /usr/lib/postgresql/15/lib
EXTDIR = pg_config("--sharedir") / "extension"       # /usr/share/postgresql/15/extension


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def same_content(a: Path, b: Path) -> bool:
    """Byte-identical, except the install script: cargo-pgrx writes the same
    statements in a different order from one schema generation to the next
    (objects that share a name), so .sql files compare as sorted lines."""
    if a.suffix == ".sql":
        return sorted(a.read_text().splitlines()) == sorted(b.read_text().splitlines())
    return sha256(a) == sha256(b)


@pytest.fixture(scope="module")
def package_dir() -> Path:
    d = Path(os.environ.get("PAZPAZ_PACKAGE_DIR", ROOT / "target/package-release"))
    if not d.is_dir():
        pytest.fail(f"no package tree at {d}: run scripts/test.sh (it builds target/package-release), "
                    "or set PAZPAZ_PACKAGE_DIR to a `cargo pgrx package --out-dir` directory")
    return d


@pytest.fixture(scope="module")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="pazpaz_pkg_"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def artifact(package_dir, workdir) -> Path:
    """The artifact scripts/package.sh makes (the README's packaging command):
    pazpaz_crypto-<version>-pg15-<arch>.tar.gz, the package's files only (no
    directory entries, so extracting over / touches no existing directory),
    owned by root, paths relative to /. It packages target/package-release,
    the tree scripts/test.sh built and installed."""
    if package_dir.resolve() != (ROOT / "target/package-release").resolve():
        pytest.fail("scripts/package.sh packages target/package-release; unset PAZPAZ_PACKAGE_DIR")
    made = subprocess.run(["bash", "scripts/package.sh"], cwd=ROOT, check=True, capture_output=True, text=True)
    path = Path(made.stdout.strip().splitlines()[-1])
    out = workdir / path.name
    shutil.copy(path, out)
    return out


def members(artifact: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(artifact) as t:
        return {m.name: m for m in t.getmembers()}


def test_artifact_holds_exactly_the_extension_files(artifact):
    m = members(artifact)
    version = re.search(r"pazpaz_crypto-(.+)-pg15-[a-z0-9]+\.tar\.gz", artifact.name).group(1)
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
    libraries, all of which resolve."""
    staging = workdir / "inspect"
    staging.mkdir()
    subprocess.run(["tar", "-xzf", str(artifact), "-C", str(staging)], check=True)
    so = staging / str(PKGLIBDIR).lstrip("/") / "pazpaz_crypto.so"
    deps = subprocess.run(["ldd", str(so)], check=True, capture_output=True, text=True).stdout
    assert "not found" not in deps
    assert not re.search(r"rustup|\.cargo|libstd-", deps), deps
    # The PostgreSQL module magic is there (PG_MODULE_MAGIC).
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(so)], check=True, capture_output=True, text=True).stdout
    assert "Pg_magic_func" in symbols and "_PG_init" in symbols


@pytest.fixture(scope="module")
def installed(artifact, workdir):
    """Extracts the artifact into a fresh root-owned staging directory,
    compares it with what is installed, then extracts it over / with plain
    tar (each file unlinked first, so running servers keep their mapped
    library)."""
    staging = workdir / "staging"
    staging.mkdir(mode=0o755)
    assert staging.stat().st_uid == 0
    subprocess.run(["tar", "-xzf", str(artifact), "-C", str(staging)], check=True)
    files = [p.relative_to(staging) for p in staging.rglob("*") if p.is_file()]
    differing = [str(f) for f in files if not (Path("/") / f).is_file() or not same_content(Path("/") / f, staging / f)]
    if differing:
        pytest.fail("the installed extension is not this package (install it with scripts/pg.sh "
                    f"install_package_dir, or point PAZPAZ_PACKAGE_DIR at the installed build): {differing}")

    subprocess.run(["tar", "--unlink-first", "-xzf", str(artifact), "-C", "/"], check=True)
    for f in files:
        target = Path("/") / f
        assert sha256(target) == sha256(staging / f), f
        assert target.stat().st_uid == 0

    cluster = start_cluster(SECOND_NAME, SECOND_PORT)  # a fresh server: loads the extracted library
    try:
        db = cluster.create_db()
        yield cluster, db
    finally:
        remove_cluster(SECOND_NAME)


def test_create_extension_and_round_trip(installed, artifact):
    cluster, db = installed
    version = re.search(r"pazpaz_crypto-(.+)-pg15-[a-z0-9]+\.tar\.gz", artifact.name).group(1)
    with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
        assert c.execute("SELECT extversion FROM pg_extension WHERE extname = 'pazpaz_crypto'").fetchone()[0] == version
        set_keys(c, new_key())
        assert c.execute("SELECT decrypt_field(encrypt_field('round trip ✓'))").fetchone()[0] == "round trip ✓"
        c.execute("CREATE TABLE t (v encrypted_text(20))")
        c.execute("INSERT INTO t VALUES (%s)", ("Zoë",))
        assert c.execute("SELECT v, key_version(v) FROM t").fetchone() == ("Zoë", "v1")
        # The library is preloaded by the fresh server, as in production.
        assert "pazpaz_crypto" in c.execute("SHOW shared_preload_libraries").fetchone()[0]


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
    cluster, db = installed
    out = subprocess.run(
        ["psql", "-X", "-A", "-t", "-h", cluster.host, "-p", str(cluster.port), "-U", "postgres", "-d", db,
         "-c", r"\dx+ pazpaz_crypto"], check=True, capture_output=True, text=True).stdout
    listed = {ln.strip() for ln in out.splitlines() if ln.strip()}
    assert listed == {o for o, _, _ in extension_objects(cluster, db)}
    assert EXPECTED_OBJECTS <= listed, sorted(EXPECTED_OBJECTS - listed)


def test_every_function_type_and_procedure_has_a_comment(installed):
    cluster, db = installed
    missing = [o for o, catalog, comment in extension_objects(cluster, db)
               if catalog in ("pg_proc", "pg_type") and not comment]
    assert not missing, "objects without a COMMENT: " + "; ".join(missing)


def test_every_cast_has_a_comment(installed):
    """COMMENT ON CAST documents what each cast does (encrypts, decrypts, or
    moves the raw envelope without a key) in \\dC+."""
    cluster, db = installed
    casts = [(o, comment) for o, catalog, comment in extension_objects(cluster, db) if catalog == "pg_cast"]
    assert len(casts) >= 6
    missing = [o for o, comment in casts if not comment]
    assert not missing, "casts without a COMMENT: " + "; ".join(missing)
