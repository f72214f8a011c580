"""Online rotation with concurrent writers: while CALL rotate_column() works
through a table in batches, another psql session inserts rows and updates
rows (both the encrypted column and others, so some rows are locked or moved
under the procedure). Afterwards every row decrypts to what was written and
none is left on the old version. Runs for a jsonb envelope column and an
encrypted_text column, in that order, on one table."""

import json
import re
import subprocess
import time

import pytest

from conftest import pg_tool, start_cluster, unique_name

pytestmark = pytest.mark.every_version

ROWS = 40000

# The writer: the application after phase 1 (v2 is its write key). Each
# iteration commits: inserts a row, rewrites one row's encrypted values, and
# touches another row's plain column (locking it for a moment). It runs until
# told to stop, after the rotation has finished.
WRITER = """\
SET pazpaz.encryption_key_version = 'v2';
DO $$
DECLARE r int;
BEGIN
    FOR i IN 1..100000 LOOP
        EXIT WHEN (SELECT stop FROM writer_ctl);
        INSERT INTO notes (plain, env, et)
        SELECT 'new ' || n, encrypt_field_versioned('new ' || n), ('new ' || n)::text
        FROM (SELECT clock_timestamp()::text || ' ' || i AS n) s;
        r := 1 + (i * 97) % 40000;
        UPDATE notes SET plain = plain || ' edited', touched = touched + 1 WHERE id = r;
        UPDATE notes SET env = encrypt_field_versioned(plain), et = plain WHERE id = r;
        UPDATE notes SET touched = touched + 1 WHERE id = 1 + (i * 389) % 40000;
        COMMIT;
        PERFORM pg_sleep(0.002);
    END LOOP;
END $$;
"""


@pytest.fixture(scope="module")
def rot():
    c = start_cluster(unique_name("it_rot"))
    try:
        c.value("CREATE EXTENSION pazpaz_crypto")
        k1, k2 = (c.value("SELECT generate_encryption_key()") for _ in range(2))
        # Startup options are per session, like set_config(…, false); the log
        # filter and hiding apply to them as to any setting.
        c.keys_env = {"PGOPTIONS": "-c pazpaz.encryption_keys=" + json.dumps({"v1": k1, "v2": k2}, separators=(",", ":"))}
        r = c.psql("-q", "-v", "ON_ERROR_STOP=1", env=c.keys_env, input=f"""\
SET pazpaz.encryption_key_version = 'v1';
CREATE TABLE notes (id serial PRIMARY KEY, plain text NOT NULL, touched int NOT NULL DEFAULT 0,
                    env jsonb, et encrypted_text);
CREATE TABLE writer_ctl (stop boolean NOT NULL);
INSERT INTO notes (plain) SELECT 'note ' || i || ' ' || md5(i::text) FROM generate_series(1, {ROWS}) i;
UPDATE notes SET env = encrypt_field_versioned(plain), et = plain;
VACUUM ANALYZE notes;
""")
        assert r.returncode == 0, r.stderr
        yield c
    finally:
        c.remove()


def q(c, sql: str) -> str:
    return c.value(sql, env=c.keys_env)


def new_rows(c) -> int:
    return int(q(c, "SELECT count(*) FROM notes WHERE plain LIKE 'new %'"))


def test_all_rows_start_on_v1(rot):
    # (Each column's test below leaves that column on v2.)
    assert q(rot, "SELECT count(*) FROM notes WHERE key_version(env) = 'v1' AND key_version(et) = 'v1'") == str(ROWS)


@pytest.mark.parametrize("col", ["env", "et"])
def test_rotation_while_a_writer_runs(rot, col):
    q(rot, "DELETE FROM writer_ctl")
    q(rot, "INSERT INTO writer_ctl VALUES (false)")
    log = rot.workdir() / f"writer_{col}.log"
    with open(log, "w") as out:
        writer = subprocess.Popen(pg_tool("psql") + ["-X", "-q", "-v", "ON_ERROR_STOP=1"], stdin=subprocess.PIPE,
                                  stdout=out, stderr=subprocess.STDOUT, text=True, env=rot.env(**rot.keys_env))
    writer.stdin.write(WRITER)
    writer.stdin.close()
    try:
        # The writer is at work once it has committed a row.
        start = new_rows(rot)
        deadline = time.monotonic() + 60
        while new_rows(rot) == start:
            assert writer.poll() is None, f"the writer ended early:\n{log.read_text()}"
            assert time.monotonic() < deadline, "the writer committed nothing within 60 s"
            time.sleep(0.05)
        before = new_rows(rot)
        r = rot.psql("-q", "-v", "ON_ERROR_STOP=1", "-c", "SET pazpaz.encryption_key_version = 'v2'",
                     "-c", f"CALL rotate_column('notes', '{col}', 300)", env=rot.keys_env, merge=True)
        after = new_rows(rot)
        writer_running = writer.poll() is None
    finally:
        q(rot, "UPDATE writer_ctl SET stop = true")
        writer_rc = writer.wait(120)
    assert r.returncode == 0, f"rotate_column failed:\n{r.stdout[-3000:]}"
    assert writer_rc == 0, f"the writer failed:\n{log.read_text()[-3000:]}"
    assert writer_running, "the writer ran through the whole rotation"
    assert after > before, f"the writer committed while the rotation ran ({before} -> {after})"
    batches = len(re.findall(r"NOTICE:  batch", r.stdout))
    assert batches > 10, f"rotation reported progress ({batches} batch notices)"
    # Rows the writer re-encrypted under v2 meanwhile are already done;
    # nothing may be left on v1 (the procedure re-checks and makes further
    # passes).
    assert q(rot, f"SELECT count(*) FROM notes WHERE key_version({col}) <> 'v2'") == "0", f"{col}: rows left on v1"


def test_no_row_lost_and_every_row_decrypts(rot):
    total = int(q(rot, "SELECT count(*) FROM notes"))
    assert total == ROWS + new_rows(rot), "no row lost (40,000 originals + the writers' inserts)"
    assert q(rot, "SELECT count(*) FROM notes WHERE decrypt_field_versioned(env) = plain") == str(total), \
        "every jsonb envelope decrypts to its plaintext"
    assert q(rot, "SELECT count(*) FROM notes WHERE et::text = plain") == str(total), \
        "every encrypted_text value decrypts to its plaintext"
    assert q(rot, "SELECT count(*) > 0 FROM notes WHERE plain LIKE '% edited' AND decrypt_field_versioned(env) = plain") \
        == "t", "rows edited during the rotation kept the edit"


def test_row_level_security_never_hides_rows_from_a_rotation(rot):
    """FORCE ROW LEVEL SECURITY applies to the table's owner: a policy that
    would hide rows from the CALL (and from its checks) makes it fail, never
    report done over part of the table; so does add_blind_index."""
    r = rot.psql("-q", "-v", "ON_ERROR_STOP=1", env=rot.keys_env, input="""\
SET pazpaz.encryption_key_version = 'v1';
SET pazpaz.index_key = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=';
CREATE ROLE tenant_owner;
GRANT CREATE ON SCHEMA public TO tenant_owner;
SET ROLE tenant_owner;
CREATE TABLE tenant_notes (tenant text, et encrypted_text);
INSERT INTO tenant_notes SELECT CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, 'n' || i FROM generate_series(1, 200) i;
ALTER TABLE tenant_notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_notes FORCE ROW LEVEL SECURITY;
CREATE POLICY only_a ON tenant_notes USING (tenant = 'a');
""")
    assert r.returncode == 0, r.stderr
    for call in ("CALL rotate_column('tenant_notes', 'et', 50, 'v2')", "CALL add_blind_index('tenant_notes', 'et')"):
        r = rot.psql("-v", "ON_ERROR_STOP=1", env=rot.keys_env, input=f"""\
SET pazpaz.index_key = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=';
SET ROLE tenant_owner;
{call};
""")
        assert r.returncode != 0, (call, r.stdout, r.stderr)
        assert "row-level security" in r.stderr, r.stderr
        assert "done" not in r.stderr, r.stderr
    r = rot.psql("-q", "-v", "ON_ERROR_STOP=1", env=rot.keys_env, input="""\
DROP TABLE tenant_notes;
REVOKE CREATE ON SCHEMA public FROM tenant_owner;
DROP ROLE tenant_owner;
""")
    assert r.returncode == 0, r.stderr
