"""Size limits against a real server, at their exact boundaries:
  1. jsonb envelopes (format 2): the largest one the extension builds is one
     PostgreSQL's own jsonb input accepts (jsonb_out → jsonb_in), and one byte
     of plaintext more is refused with 54000, the limit PostgreSQL's own
     builder has (checked too);
  2. the text envelope form of encrypted_text: the largest value that has
     one round-trips; one byte more is 54000 naming binary COPY (not XX000),
     and binary COPY then moves it without a key;
  3. plaintexts near MaxAllocSize (encrypt_field, the encrypted_text input
     function and cast): the largest accepted one works, one byte more is
     54000.
Values up to 1 GB are built with repeat(): the module needs about 6 GB of
memory and takes about two minutes on 2 cores. Sessions run in psql, which
reports each failure as "SQLSTATE: message".

PAZPAZ_PACKAGE_DIR=<cargo pgrx package dir> runs that build through an
overlay (scripts/pg.sh use_package_overlay) instead of the installed one.
"""

import contextlib
import os
import shlex

import pytest

from conftest import Checks, Cluster, free_port, remove_cluster, run_pg, start_cluster, unique_name


@pytest.fixture(scope="module")
def srv():
    name = unique_name("it_limits")
    package = os.environ.get("PAZPAZ_PACKAGE_DIR")
    if package:
        port = free_port()
        run_pg(f"use_package_overlay {shlex.quote(package)} {shlex.quote(name + '_overlay')}"
               f" && pg_start {name} {port} 'log_min_messages = warning'")
        c = Cluster(name, port)
    else:
        c = start_cluster(name, None, "log_min_messages = warning")
    try:
        c.value("CREATE EXTENSION pazpaz_crypto")
        c.keys = {"LIMITS_K1": c.value("SELECT generate_encryption_key()"),
                  "LIMITS_K2": c.value("SELECT generate_encryption_key()")}
        c.work = c.workdir()
        yield c
    finally:
        remove_cluster(name)
        if package:
            remove_cluster(name + "_overlay")


@contextlib.contextmanager
def no_internal_error(c, check):
    """After the block: the server log has no XX000-class allocation error."""
    yield
    check.eq("the server log has no XX000-class internal error", 0,
             c.log.read_text(errors="replace").count("invalid memory alloc request size"))


ERROR_TAIL = "\\if :ERROR\n\\echo :LAST_ERROR_SQLSTATE: :LAST_ERROR_MESSAGE\n\\endif\n"


def last(c, sql: str) -> str:
    """The last line of SQL's output in a session with keys v1 (the write
    version) and v10, or "SQLSTATE: message" if it failed."""
    script = ("\\set ON_ERROR_STOP 0\n\\getenv k1 LIMITS_K1\n\\getenv k2 LIMITS_K2\n"
              "SELECT set_config('pazpaz.encryption_keys', json_build_object('v1', :'k1', 'v10', :'k2')::text, false)"
              " IS NULL;\nSET pazpaz.encryption_key_version = 'v1';\n" + sql + "\n" + ERROR_TAIL)
    out = c.psql("-At", input=script, env=c.keys).stdout.splitlines()
    return out[-1] if out else ""


def last_keyless(c, sql: str) -> str:
    """The same in a session without keys, for PostgreSQL's own limits: in a
    session that holds keys the log filter redacts the numbers of errors
    (the client gets them in DETAIL, which psql's variables do not show)."""
    out = c.psql("-At", input="\\set ON_ERROR_STOP 0\n" + sql + "\n" + ERROR_TAIL).stdout.splitlines()
    return out[-1] if out else ""


def test_jsonb_envelopes_at_postgresqls_jsonb_limit(srv):
    # For version "v1" the container is 39 bytes + the base64 string:
    # PostgreSQL itself builds 268,435,455 bytes (JENTRY_OFFLENMASK) and
    # refuses one more.
    with Checks() as check, no_internal_error(srv, check):
        check.eq("PostgreSQL builds a 268,435,455-byte jsonb container", "268435451", last(
            srv, "SELECT octet_length(jsonb_build_object('version', 'v1', 'ciphertext', repeat('A', 268435416))::text);"))
        check.eq("and refuses one byte more (54000)",
                 "54000: total size of jsonb object elements exceeds the maximum of 268435455 bytes", last_keyless(
                     srv, "SELECT jsonb_build_object('version', 'v1', 'ciphertext', repeat('A', 268435417));"))
        check.eq("the largest envelope (201,326,534-byte plaintext) survives jsonb_out → jsonb_in and decrypts",
                 "t|268435416|t", last(srv, """WITH s AS MATERIALIZED (SELECT encrypt_field_versioned(repeat('é', 100663267)) AS e)
             SELECT e::text::jsonb = e, octet_length(e->>'ciphertext'), decrypt_field_versioned(e::text::jsonb) = repeat('é', 100663267) FROM s;"""))
        check.eq("ASCII plaintext of the same size likewise", "true|268435459", last(
            srv, """WITH s AS MATERIALIZED (SELECT encrypt_field_versioned(repeat('a', 201326534)) AS e)
             SELECT (e::text::jsonb = e)::text || '|' || pg_column_size(e) FROM s;"""))
        check.eq("one byte more is refused (54000), not stored as a jsonb PostgreSQL cannot read back",
                 "54000: Plaintext too large to encrypt",
                 last(srv, "SELECT encrypt_field_versioned(repeat('a', 201326535)) IS NULL;"))
        check.eq("the reviewed range up to 201,326,561 bytes is refused too", "54000: Plaintext too large to encrypt",
                 last(srv, "SELECT encrypt_field_versioned(repeat('a', 201326561)) IS NULL;"))
        check.eq("re-encrypting the largest v1 envelope to a longer version name (v10) is refused (54000)",
                 "54000: Plaintext too large to encrypt", last(
                     srv, "SELECT reencrypt_field_versioned(encrypt_field_versioned(repeat('a', 201326534)), 'v10') IS NULL;"))


def test_text_envelope_form_at_max_alloc_size(srv):
    # 7 + base64 + NUL must fit in MaxAllocSize; for a v1 envelope (32 bytes
    # of overhead) the largest plaintext is 805,306,327 bytes.
    big_txt, big_bin = srv.work / "big.txt", srv.work / "big.bin"
    too_big = ("54000: encrypted_text value too large for the text envelope form (805306360-byte envelope, at most"
               " 805306359): COPY … (FORMAT binary) moves it without a key")
    with Checks() as check, no_internal_error(srv, check):
        check.eq("the largest text form (1,073,741,819 bytes) is produced and read back in envelope mode",
                 "1073741819|t", last(srv, """SET pazpaz.encrypted_text_io = envelope;
             WITH s AS MATERIALIZED (SELECT repeat('a', 805306327)::encrypted_text AS v)
             SELECT octet_length(encrypted_text_out(v)::text), encrypted_text_in(encrypted_text_out(v), 0, -1)::bytea = v::bytea FROM s;"""))
        check.eq("one byte more: 54000 naming binary COPY (text output, as pg_dump and COPY use)", too_big, last(
            srv, "SET pazpaz.encrypted_text_io = envelope; SELECT concat(repeat('a', 805306328)::encrypted_text) IS NULL;"))
        check.eq("and in COPY … TO in envelope mode", too_big, last(
            srv, f"SET pazpaz.encrypted_text_io = envelope; COPY (SELECT repeat('a', 805306328)::encrypted_text) TO '{big_txt}';"))
        check.eq("binary COPY moves it out with a key in plaintext mode", "COPY 1", last(
            srv, f"COPY (SELECT repeat('a', 805306328)::encrypted_text) TO '{big_bin}' (FORMAT binary);"))
        keyless = srv.psql("-At", merge=True, input=f"""CREATE TEMP TABLE big (v encrypted_text);
COPY big FROM '{big_bin}' (FORMAT binary);
SELECT key_version(v), octet_length(v::bytea) FROM big;
""")
        check.eq("and into a session without a key (no setting needed)", "CREATE TABLE\nCOPY 1\nv1|805306360",
                 keyless.stdout.strip())
        big_bin.unlink(missing_ok=True)
        big_txt.unlink(missing_ok=True)
        # The plaintext output of the same value works (its length plus a NUL fits).
        check.eq("the plaintext form of that value is returned with a key", "805306328",
                 last(srv, "SELECT octet_length(concat(repeat('a', 805306328)::encrypted_text));"))


def test_plaintexts_near_max_alloc_size(srv):
    # The largest accepted plaintext is 1,073,739,677 bytes
    # (field::MAX_PLAINTEXT), one more is 54000 on every path.
    too_large = "54000: Plaintext too large to encrypt"
    with Checks() as check, no_internal_error(srv, check):
        check.eq("encrypt_field of the largest plaintext works and decrypts", "1073739705|1073739677", last(
            srv, """WITH s AS MATERIALIZED (SELECT encrypt_field(repeat('a', 1073739677)) AS c)
             SELECT octet_length(c), octet_length(decrypt_field(c)) FROM s;"""))
        check.eq("encrypt_field of one byte more: 54000", too_large,
                 last(srv, "SELECT encrypt_field(repeat('a', 1073739678)) IS NULL;"))
        check.eq("text → encrypted_text of the largest plaintext works", "1073739709",
                 last(srv, "SELECT octet_length(repeat('a', 1073739677)::encrypted_text::bytea);"))
        check.eq("text → encrypted_text of one byte more: 54000", too_large,
                 last(srv, "SELECT repeat('a', 1073739678)::encrypted_text IS NULL;"))
        check.eq("the input function with a plaintext whose envelope would pass 1 GB - 1: 54000", too_large,
                 last(srv, "SELECT encrypted_text_in(repeat('a', 1073741000)::cstring, 0, -1) IS NULL;"))
        check.eq("encrypt_field_versioned of a plaintext near MaxAllocSize: 54000", too_large,
                 last(srv, "SELECT encrypt_field_versioned(repeat('a', 1073739677)) IS NULL;"))

