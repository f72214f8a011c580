"""Crash safety of key rotation: a backend killed with SIGKILL in the middle
of re-encrypting a column. The postmaster then kills every backend and
replays the WAL (crash recovery); afterwards
  - every row is entirely on v1 or entirely on v2 and decrypts, with the
    keyring, to its original plaintext (kept in a plain column);
  - what was committed survived, what was not left no trace: the
    single-statement UPDATE left every row on v1, rotate_column lost at most
    its current batch and never part of a batch;
  - running the rotation again finishes the job: every row on v2.

Cases:
  1. UPDATE rot_update SET c = reencrypt_field_versioned(c)   (300k jsonb rows)
  2. CALL rotate_column('rot_call', 'c', …)                    (jsonb)
  3. CALL rotate_column('rot_text', 'body', …)                 (encrypted_text)
Keys are generated in the database at setup and never printed. Sessions run
in psql; the kill is a real SIGKILL of the backend process.
"""

import os
import re
import signal
import subprocess
import time

import pytest

from conftest import pg_tool, start_cluster, unique_name

ROWS_UPDATE = int(os.environ.get("CRASH_ROWS_UPDATE", "300000"))
ROWS_CALL = int(os.environ.get("CRASH_ROWS_CALL", "200000"))
BATCH = 2000

SETUP = r"""CREATE EXTENSION pazpaz_crypto;
CREATE TABLE keys (k1 text NOT NULL, k2 text NOT NULL);
INSERT INTO keys SELECT generate_encryption_key(), generate_encryption_key();

-- The keyring {v1, v2} for this session, writing with write_version. A
-- procedure, so that CALL prints nothing.
CREATE PROCEDURE use_keys(write_version text) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('pazpaz.encryption_keys', json_build_object('v1', k1, 'v2', k2)::text, false),
            set_config('pazpaz.encryption_key_version', write_version, false)
       FROM keys;
END $$;

-- Rows per version of a table; raises unless the table still has all its
-- rows and each one is on v1 or v2 and decrypts to its plaintext. A row
-- with one version's header and another's ciphertext cannot decrypt.
CREATE FUNCTION check_rows(tbl regclass, col name, expected bigint, OUT on_v1 bigint, OUT on_v2 bigint)
LANGUAGE plpgsql AS $$
DECLARE
    plaintext text := CASE WHEN (SELECT atttypid FROM pg_attribute WHERE attrelid = tbl AND attname = col) = 'jsonb'::regtype
                           THEN format('decrypt_field_versioned(%I)', col) ELSE format('%I::text', col) END;
    wrong bigint;
    total bigint;
BEGIN
    EXECUTE format($q$SELECT count(*) FILTER (WHERE key_version(%1$I) = 'v1'),
                             count(*) FILTER (WHERE key_version(%1$I) = 'v2'),
                             count(*) FILTER (WHERE %2$s IS DISTINCT FROM plain),
                             count(*)
                        FROM %3$s$q$, col, plaintext, tbl)
       INTO on_v1, on_v2, wrong, total;
    IF total <> expected OR wrong <> 0 OR on_v1 + on_v2 <> total THEN
        RAISE EXCEPTION '%: % rows (expected %), % decrypt to a wrong plaintext, % on neither v1 nor v2',
            tbl, total, expected, wrong, total - on_v1 - on_v2;
    END IF;
END $$;

CALL use_keys('v1');
CREATE TABLE rot_update (id int PRIMARY KEY, plain text NOT NULL, c jsonb NOT NULL);
INSERT INTO rot_update
SELECT g, p, encrypt_field_versioned(p)
  FROM (SELECT g, format('patient %s: %s', g, md5(g::text)) AS p FROM generate_series(1, :rows_update) g) s;
CREATE TABLE rot_call (id int PRIMARY KEY, plain text NOT NULL, c jsonb NOT NULL);
INSERT INTO rot_call
SELECT g, p, encrypt_field_versioned(p)
  FROM (SELECT g, format('note %s: %s', g, md5(g::text)) AS p FROM generate_series(1, :rows_call) g) s;
CREATE TABLE rot_text (id int PRIMARY KEY, plain text NOT NULL, body encrypted_text NOT NULL);
INSERT INTO rot_text
SELECT g, p, p::encrypted_text
  FROM (SELECT g, format('name %s: %s', g, md5(g::text)) AS p FROM generate_series(1, :rows_call) g) s;
-- A checkpoint now, so that recovery replays only the rotation's WAL.
CHECKPOINT;
"""


@pytest.fixture(scope="module")
def crash():
    c = start_cluster(unique_name("it_crash"), None, "log_min_messages = warning", "restart_after_crash = on")
    try:
        r = c.psql("-q", "-v", "ON_ERROR_STOP=1", "-v", f"rows_update={ROWS_UPDATE}", "-v", f"rows_call={ROWS_CALL}",
                   input=SETUP)
        assert r.returncode == 0, r.stderr[-3000:]
        yield c
    finally:
        c.remove()


def psql_ok(c, *args) -> str:
    r = c.psql("-q", "-v", "ON_ERROR_STOP=1", *args, merge=True)
    assert r.returncode == 0, r.stdout[-3000:]
    return r.stdout


def value(c, sql: str) -> str:
    r = c.psql("-At", "-c", sql)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def versions(c, table: str, col: str, expected: int) -> tuple[int, int]:
    """(rows on v1, rows on v2); check_rows raises unless the table has all
    its rows and each one is on v1 or v2 and decrypts to its plaintext."""
    out = psql_ok(c, "-At", "-F", " ", "-c", "CALL use_keys('v1')",
                  "-c", f"SELECT * FROM check_rows('{table}', '{col}', {expected})")
    v1, v2 = out.splitlines()[-1].split()
    return int(v1), int(v2)


def wait_for_recovery(c) -> None:
    """Until the server accepts connections again after crash recovery."""
    deadline = time.monotonic() + 60
    while c.psql("-At", "-c", "SELECT 1").returncode != 0:
        assert time.monotonic() < deadline, "the server did not come back within 60 s"
        time.sleep(0.5)


def run_and_kill(c, name: str, sql: str, cond) -> tuple[int, str]:
    """Runs SQL (after use_keys('v2')) in a background psql session named
    NAME, waits until cond() is true while that session is still at work,
    kills its backend with SIGKILL, and waits for crash recovery; checks the
    log shows the kill and a recovery. Returns the pid and the session's
    output."""
    log_start = c.log.stat().st_size
    out_file = c.workdir() / f"{name}.out"
    with open(out_file, "w") as out:
        bg = subprocess.Popen(pg_tool("psql") + ["-X", "-v", "ON_ERROR_STOP=1", "-c", "CALL use_keys('v2')", "-c", sql],
                              stdout=out, stderr=subprocess.STDOUT, env=c.env(PGAPPNAME=name))
    try:
        pid = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pid = value(c, f"SELECT pid FROM pg_stat_activity WHERE application_name = '{name}' AND state = 'active'"
                           " AND backend_type = 'client backend' AND query <> 'CALL use_keys(''v2'')'")
            if pid or bg.poll() is not None:
                break
            time.sleep(0.05)
        assert pid, f"{name}: the statement never started:\n{out_file.read_text()}"
        deadline = time.monotonic() + 60
        while not cond(out_file):
            assert bg.poll() is None, f"{name}: finished before the kill; make it larger:\n{out_file.read_text()}"
            assert time.monotonic() < deadline, f"{name}: the kill condition never became true"
            time.sleep(0.05)
        os.kill(int(pid), signal.SIGKILL)
        rc = bg.wait(120)
    finally:
        if bg.poll() is None:
            bg.kill()
            bg.wait()
    output = out_file.read_text()
    assert rc != 0, f"{name}: the killed session reported success"
    assert re.search(r"server closed the connection unexpectedly|terminating connection|connection to server .* lost",
                     output), f"{name}: the session did not lose its connection:\n{output}"
    wait_for_recovery(c)
    with open(c.log, "rb") as f:
        f.seek(log_start)
        log = f.read().decode(errors="replace")
    assert f"server process (PID {pid}) was terminated by signal 9" in log, \
        f"the server log does not show backend {pid} killed by signal 9"
    assert "all server processes terminated; reinitializing" in log, \
        "the server log does not show the postmaster reinitializing"
    assert "automatic recovery in progress" in log, "the server log does not show a crash recovery"
    print(f"crash: {name}: backend {pid} killed mid-rotation, server recovered")
    return int(pid), output


def test_killed_update_leaves_every_row_on_v1_and_a_rerun_finishes(crash):
    # Killed once it has written 64 MB of WAL, about a third of what the
    # whole UPDATE writes: new versions of many rows exist in WAL and in
    # shared buffers (some written out), but the transaction never committed.
    def wal_since(lsn: str) -> int:
        return int(value(crash, f"SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '{lsn}')::bigint / 1048576"))

    wal_start = value(crash, "SELECT pg_current_wal_insert_lsn()")
    at_kill = []

    def wal_written(_out) -> bool:
        at_kill.append(wal_since(wal_start))
        return at_kill[-1] >= 64

    run_and_kill(crash, "rotate_update", "UPDATE rot_update SET c = reencrypt_field_versioned(c)", wal_written)
    v1, v2 = versions(crash, "rot_update", "c", ROWS_UPDATE)
    assert v2 == 0, f"rot_update: {v2} rows on v2 after the uncommitted UPDATE was killed"
    wal_start = value(crash, "SELECT pg_current_wal_insert_lsn()")
    psql_ok(crash, "-c", "CALL use_keys('v2')", "-c", "UPDATE rot_update SET c = reencrypt_field_versioned(c)")
    print(f"crash: the killed UPDATE had written {at_kill[-1]} MB of WAL; the complete one writes {wal_since(wal_start)} MB")
    v1, v2 = versions(crash, "rot_update", "c", ROWS_UPDATE)
    assert (v1, v2) == (0, ROWS_UPDATE), f"rot_update after re-run: {v1} on v1, {v2} on v2"


@pytest.mark.parametrize("table,col", [("rot_call", "c"), ("rot_text", "body")])
def test_killed_rotate_column_loses_at_most_its_batch_and_a_rerun_finishes(crash, table, col):
    # Killed after it reported batch 40 of about 100: batches up to 39 are
    # committed for sure (each batch COMMITs right after its notice, which
    # gives the rows re-encrypted so far), batch 40 perhaps, nothing more,
    # and never part of a batch: the rows on v2 are the count of the last
    # notice or of the one before it.
    def batches_seen(out_file) -> int:
        seen = re.findall(r"NOTICE:  batch ([0-9]+):", out_file.read_text())
        return int(seen[-1]) if seen else 0

    name = f"rotate_{table}"
    _, output = run_and_kill(crash, name, f"CALL rotate_column('{table}', '{col}', {BATCH})",
                             lambda f: batches_seen(f) >= 40)
    reported = [0] + [int(n) for n in re.findall(r"NOTICE:  batch [0-9]+: ([0-9]+)/", output)]
    v1, v2 = versions(crash, table, col, ROWS_CALL)
    assert v1 > 0, f"{table}: no row left on v1; the kill came too late to test anything"
    assert len(reported) > 40, f"{table}: {len(reported) - 1} batches reported before the kill"
    assert v2 in reported[-2:], \
        f"{table}: {v2} rows on v2, not the count of one of the last two batches reported ({reported[-2:]})"
    rerun = psql_ok(crash, "-c", "CALL use_keys('v2')", "-c", f"CALL rotate_column('{table}', '{col}', {BATCH})")
    v1, v2 = versions(crash, table, col, ROWS_CALL)
    assert (v1, v2) == (0, ROWS_CALL), f"{table} after re-run: {v1} on v1, {v2} on v2"
    assert "rotate_column: done" in rerun, f"{table}: the re-run did not report completion"
