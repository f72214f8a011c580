#!/usr/bin/env python3
"""Measurements behind scripts/bench.sh (run it through that script: it
starts the server and exports PGHOST/PGPORT/PGUSER).

Every case is compared with a baseline measured in the same run, in the same
group: within a group the cases are interleaved (A B C A B C …) after one
warm-up round, and each case reports the median and min–max of its runs in
µs per row. Ratios are median(case) / median(baseline); the JSON also keeps
the per-run paired ratios.

How each case is timed (also in the table's "how" column and the JSON):
  server   EXPLAIN (ANALYZE, TIMING OFF) → "Execution Time": the query's
           execution in the backend, without planning or client transfer.
  wall     a client clock around one statement (COPY, UPDATE, CALL) on a Unix
           socket; the statement moves no rows to the client, so this is
           server work plus one round trip.
  client   a client clock around execute + fetchall in Python (psycopg 3),
           including transfer and, for the application's way, Python's
           AES-GCM decryption.
  pgbench  transactions per second over a fixed duration.

Alongside, for robustness on a machine shared with other work, the CPU time
of the server side: the backend's own CPU time from /proc/<pid>/schedstat for
server and wall cases ("cpu µs/row"), the CPU of exited pgbench backends and
parallel workers from the postmaster's cutime/cstime. PASS/MISS is judged on
the wall-clock ratio; the CPU-time ratio is shown next to it and noted when
it disagrees.

Keys are generated here at random and never printed; the server gets them
through parameterised set_config() calls (pgbench: PGOPTIONS).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import math
import os
import re
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# The client helper package, straight from the repository.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
import pazpaz_crypto  # noqa: E402

GROUPS = ["scan", "encrypt", "versioned", "copy", "rotation", "procedure",
          "large", "parallel", "pgbench", "python", "memory", "search"]


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


# ---- keys (random per run, never printed) -----------------------------------

K1, K2 = secrets.token_bytes(32), secrets.token_bytes(32)
INDEX_KEY = secrets.token_bytes(32)  # pazpaz.index_key of the search group
KEYS = {"v1": b64(K1), "v2": b64(K2)}
PGC_A, PGC_B = secrets.token_bytes(32), secrets.token_bytes(32)  # pgcrypto keys


def connect() -> psycopg.Connection:
    # prepare_threshold=None: no automatic server-side preparation, so a plan
    # (serial or parallel) is never cached from an earlier execution.
    return psycopg.connect("", autocommit=True, prepare_threshold=None)


def set_keys(conn: psycopg.Connection, version: str = "v1") -> None:
    pazpaz_crypto.set_keys(conn, pazpaz_crypto.Keyring(KEYS, version))


def set_version(conn: psycopg.Connection, version: str) -> None:
    conn.execute("SELECT set_config('pazpaz.encryption_key_version', %s, false)", (version,))


# ---- timing primitives ------------------------------------------------------

EXEC_RE = re.compile(r"Execution Time: ([0-9.]+) ms")
WORKERS_RE = re.compile(r"Workers Launched: (\d+)")


# The backend's own CPU time around the last explain()/wall() call, from
# /proc/<pid>/schedstat (ns on CPU, ns waiting for a CPU). On a machine shared
# with other work, wall-clock times include time the backend spent runnable
# but not running; its CPU time does not.
LAST_CPU: dict[str, float | None] = {"cpu_ms": None, "wait_ms": None}


def schedstat(conn: psycopg.Connection) -> tuple[int, int]:
    f = Path(f"/proc/{conn.info.backend_pid}/schedstat").read_text().split()
    return int(f[0]), int(f[1])


class cpu_clock:
    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.start = schedstat(self.conn)

    def __exit__(self, *exc):
        end = schedstat(self.conn)
        LAST_CPU["cpu_ms"] = (end[0] - self.start[0]) / 1e6
        LAST_CPU["wait_ms"] = (end[1] - self.start[1]) / 1e6


def children_cpu_ms() -> float:
    """CPU time of the postmaster's exited children (pgbench's backends,
    parallel workers), from its cutime + cstime; 10 ms resolution."""
    pm = int(Path(os.environ["BENCH_SERVER_DIR"], "data", "postmaster.pid").read_text().split()[0])
    time.sleep(0.05)  # let the postmaster reap children that just exited
    fields = Path(f"/proc/{pm}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) * 1000.0 / os.sysconf("SC_CLK_TCK")


def explain(conn: psycopg.Connection, sql: str, params=None) -> tuple[float, str]:
    """Server-side execution time (ms) of `sql` and the plan text."""
    with cpu_clock(conn):
        rows = conn.execute("EXPLAIN (ANALYZE, TIMING OFF, COSTS OFF) " + sql, params).fetchall()
    plan = "\n".join(r[0] for r in rows)
    m = EXEC_RE.search(plan)
    if not m:
        raise RuntimeError("no Execution Time in EXPLAIN output")
    return float(m.group(1)), plan


def wall(conn: psycopg.Connection, sql: str, params=None) -> float:
    with cpu_clock(conn):
        t = time.perf_counter()
        conn.execute(sql, params)
        ms = (time.perf_counter() - t) * 1000.0
    return ms


def vacuum_checkpoint(conn: psycopg.Connection, table: str) -> None:
    conn.execute(f"VACUUM {table}")
    conn.execute("CHECKPOINT")


def wal_lsn(conn: psycopg.Connection) -> str:
    return conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]


def wal_since(conn: psycopg.Connection, lsn: str) -> int:
    return int(conn.execute("SELECT pg_current_wal_insert_lsn() - %s::pg_lsn", (lsn,)).fetchone()[0])


# ---- cases and groups -------------------------------------------------------

@dataclass
class Case:
    key: str
    label: str
    how: str                    # server | wall | client | pgbench
    rows: int                   # rows per run (µs/row = ms * 1000 / rows)
    run: Callable[[int], float]  # run index (-1 = warm-up) → ms
    cpu: bool = True             # also record the backend's CPU time
    samples: list[float] = field(default_factory=list)       # µs/row
    cpu_samples: list[float] = field(default_factory=list)   # backend CPU µs/row
    wait_ms: list[float] = field(default_factory=list)       # backend runnable, not running
    wall_ms: list[float] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu_samples) if self.cpu_samples else None


CASES: dict[str, Case] = {}


def run_group(name: str, cases: list[Case], runs: int) -> None:
    log(f"[{name}] warm-up")
    for c in cases:
        c.run(-1)
    for r in range(runs):
        for c in cases:
            LAST_CPU.update(cpu_ms=None, wait_ms=None)
            ms = c.run(r)
            c.samples.append(ms * 1000.0 / c.rows)
            if c.cpu and LAST_CPU["cpu_ms"] is not None:
                c.cpu_samples.append(LAST_CPU["cpu_ms"] * 1000.0 / c.rows)
                c.wait_ms.append(LAST_CPU["wait_ms"])
                c.wall_ms.append(ms)
        log(f"[{name}] run {r + 1}/{runs}: " + ", ".join(f"{c.key} {c.samples[-1]:.3f}" for c in cases))
    for c in cases:
        CASES[c.key] = c


# ---- data -------------------------------------------------------------------

TEXT100 = ("left(md5(i::text) || md5((i + 1000000007)::text) || md5((-i)::text)"
           " || md5((i * 7)::text), 100)")


def load_data(conn: psycopg.Connection, n: int, n5k: int, n_oltp: int, server_dir: str, groups: set[str]) -> dict:
    t0 = time.perf_counter()
    ex = conn.execute
    ex("CREATE EXTENSION IF NOT EXISTS pgcrypto")
    ex("CREATE EXTENSION IF NOT EXISTS pazpaz_crypto")
    set_keys(conn)

    log(f"loading {n:,} rows of 100-byte text")
    ex(f"CREATE TABLE src AS SELECT i AS id, {TEXT100} AS p FROM generate_series(1, %s) i", (n,))
    ex("CREATE TABLE f1 AS SELECT id, encrypt_field(p) AS c FROM src")                 # format 1
    ex("CREATE TABLE pgc AS SELECT id, encrypt(convert_to(p, 'UTF8'), %s, 'aes') AS c FROM src", (PGC_A,))
    if groups & {"versioned", "rotation"}:
        ex("CREATE TABLE vj AS SELECT id, encrypt_field_versioned(p) AS c FROM src")   # format 2, v1
    if "procedure" in groups:
        ex("CREATE TABLE vp AS SELECT id, encrypt_field_versioned(p) AS c FROM src")
    if groups & {"copy", "rotation"}:
        ex("CREATE TABLE et (id int, c encrypted_text)")
        ex("INSERT INTO et SELECT id, p FROM src")                                     # assignment cast
    if "rotation" in groups:
        ex("CREATE TABLE et_rot AS SELECT * FROM et")
        ex("CREATE TABLE pgc_rot AS SELECT * FROM pgc")
    if "copy" in groups:
        ex("CREATE TABLE et_in (c encrypted_text)")
        ex("CREATE TABLE tx_in (c text)")
        ex(f"COPY (SELECT p FROM src ORDER BY id) TO '{server_dir}/copy_in.txt'")
    if "large" in groups:
        log(f"loading {n5k:,} rows of 5,000-byte text")
        # 1,000 distinct random-hex bodies, made unique per row by a prefix;
        # stored uncompressed (TOAST, out of line) like real ciphertext.
        ex("CREATE TABLE pool AS SELECT k, (SELECT string_agg(md5((k * 1000 + j)::text), '')"
           " FROM generate_series(1, 157) j) AS s FROM generate_series(0, 999) k")
        ex("CREATE TABLE s5 (id int, p text)")
        ex("ALTER TABLE s5 ALTER p SET STORAGE EXTERNAL")
        ex("INSERT INTO s5 SELECT i, left(lpad(i::text, 10, '0') || s, 5000) FROM generate_series(1, %s) i"
           " JOIN pool ON k = i %% 1000", (n5k,))
        for t in ("f5", "g5"):
            ex(f"CREATE TABLE {t} (id int, c bytea)")
            ex(f"ALTER TABLE {t} ALTER c SET STORAGE EXTERNAL")
        ex("INSERT INTO f5 SELECT id, encrypt_field(p) FROM s5")
        ex("INSERT INTO g5 SELECT id, encrypt(convert_to(p, 'UTF8'), %s, 'aes') FROM s5", (PGC_A,))
        # The same length in multibyte text (Hebrew and English, 3,486
        # characters, 60% of the bytes in 2-byte characters): checking that
        # decrypted text is UTF-8 is only slow on such data (pgcrypto returns
        # bytea and checks nothing, so g5 is its baseline too).
        ex("CREATE TABLE m5 (id int, p text)")
        ex("INSERT INTO m5 SELECT i, convert_from(substring(convert_to(lpad(i::text, 10, '0') ||"
           " repeat('Patient reports mild pain, המטופל מדווח על כאב קל בגב התחתון. ', 80), 'UTF8')"
           " FROM 1 FOR 4998), 'UTF8') FROM generate_series(1, %s) i", (n5k,))
        ex("CREATE TABLE fm5 (id int, c bytea)")
        ex("ALTER TABLE fm5 ALTER c SET STORAGE EXTERNAL")
        ex("INSERT INTO fm5 SELECT id, encrypt_field(p) FROM m5")
        ex("DROP TABLE m5")
    if "pgbench" in groups:
        for t, typ in (("ob_enc", "encrypted_text"), ("ob_txt", "text")):
            ex(f"CREATE TABLE {t} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
               f" a {typ}, b {typ}, c {typ})")
            ex(f"INSERT INTO {t} (a, b, c) SELECT p, p, p FROM src ORDER BY id LIMIT %s", (n_oltp,))
    ex("VACUUM (FREEZE, ANALYZE)")
    ex("CHECKPOINT")
    sizes = dict(conn.execute(
        "SELECT relname, pg_total_relation_size(oid) FROM pg_class"
        " WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace").fetchall())
    check = conn.execute("SELECT count(*), min(octet_length(p)), max(octet_length(p)) FROM src").fetchone()
    assert check == (n, 100, 100), check
    log(f"data loaded in {time.perf_counter() - t0:.1f} s")
    return {"load_seconds": round(time.perf_counter() - t0, 1), "table_bytes": sizes}


# ---- groups -----------------------------------------------------------------

def group_scan(conn, n, runs):
    q = lambda sql, params=None: (lambda r: explain(conn, sql, params)[0])
    run_group("scan", [
        Case("floor", "scan floor: sum(octet_length(c)) over format-1 bytea", "server", n,
             q("SELECT sum(octet_length(c)) FROM f1")),
        Case("decrypt_field", "decrypt_field(c), 100 B", "server", n,
             q("SELECT sum(octet_length(decrypt_field(c))) FROM f1")),
        Case("pgcrypto_decrypt", "pgcrypto decrypt(c, key, 'aes'), 100 B", "server", n,
             q("SELECT sum(octet_length(decrypt(c, %s, 'aes'))) FROM pgc", (PGC_A,))),
    ], runs)


def group_encrypt(conn, n, runs):
    q = lambda sql, params=None: (lambda r: explain(conn, sql, params)[0])
    run_group("encrypt", [
        Case("encrypt_field", "encrypt_field(p), 100 B", "server", n,
             q("SELECT sum(octet_length(encrypt_field(p))) FROM src")),
        Case("pgcrypto_encrypt", "pgcrypto encrypt(convert_to(p,'UTF8'), key, 'aes'), 100 B", "server", n,
             q("SELECT sum(octet_length(encrypt(convert_to(p, 'UTF8'), %s, 'aes'))) FROM src", (PGC_A,))),
    ], runs)


def group_versioned(conn, n, runs):
    q = lambda sql, params=None: (lambda r: explain(conn, sql, params)[0])
    run_group("versioned", [
        Case("encrypt_versioned", "encrypt_field_versioned(p) → jsonb, 100 B", "server", n,
             q("SELECT sum(pg_column_size(encrypt_field_versioned(p))) FROM src")),
        Case("decrypt_versioned", "decrypt_field_versioned(c) from jsonb, 100 B", "server", n,
             q("SELECT sum(octet_length(decrypt_field_versioned(c))) FROM vj")),
        Case("jsonb_floor", "scan floor: sum(pg_column_size(c)) over jsonb envelopes", "server", n,
             q("SELECT sum(pg_column_size(c)) FROM vj")),
    ], runs)


def group_copy(conn, n, runs, server_dir):
    path = f"{server_dir}/copy_in.txt"

    def copy_in(table):
        def run(r):
            conn.execute(f"TRUNCATE {table}")
            return wall(conn, f"COPY {table} (c) FROM '{path}'")
        return run

    q = lambda sql: (lambda r: explain(conn, sql)[0])
    w = lambda sql: (lambda r: wall(conn, sql))
    run_group("copy", [
        Case("copy_in_et", "COPY FROM file into encrypted_text", "wall", n, copy_in("et_in")),
        Case("copy_in_text", "COPY FROM file into text", "wall", n, copy_in("tx_in")),
        Case("copy_out_et", "COPY (SELECT c FROM encrypted_text table) TO '/dev/null'", "wall", n,
             w("COPY (SELECT c FROM et) TO '/dev/null'")),
        Case("copy_out_text", "COPY (SELECT p FROM text table) TO '/dev/null'", "wall", n,
             w("COPY (SELECT p FROM src) TO '/dev/null'")),
        Case("read_cast_et", "sum(octet_length(c::text)) over encrypted_text", "server", n,
             q("SELECT sum(octet_length(c::text)) FROM et")),
        Case("read_text", "sum(octet_length(p)) over text", "server", n,
             q("SELECT sum(octet_length(p)) FROM src")),
    ], runs)
    rows = conn.execute("SELECT (SELECT count(*) FROM et_in), (SELECT count(*) FROM tx_in)").fetchone()
    assert rows == (n, n), rows


def group_rotation(conn, n, runs):
    state = {"vj": "v1", "et_rot": "v1", "pgc_rot": "A"}
    wal: dict[str, list[float]] = {}

    def update(key, sql, params=None):
        # WAL written per row, as a diagnostic: a rewrite and a no-op UPDATE
        # should write the same amount (same tuple sizes, full-page images
        # after the CHECKPOINT).
        lsn = wal_lsn(conn)
        ms = wall(conn, sql, params)
        wal.setdefault(key, []).append(round(wal_since(conn, lsn) / n, 1))
        return ms

    def reencrypt(key, table, fn):
        def run(r):
            target = "v2" if state[table] == "v1" else "v1"
            vacuum_checkpoint(conn, table)
            set_version(conn, target)
            ms = update(key, f"UPDATE {table} SET c = {fn}(c)")
            state[table] = target
            return ms
        return run

    def noop(key, table):
        def run(r):
            vacuum_checkpoint(conn, table)
            return update(key, f"UPDATE {table} SET c = c")
        return run

    def pgcrypto_rot(r):
        old, new = (PGC_A, PGC_B) if state["pgc_rot"] == "A" else (PGC_B, PGC_A)
        vacuum_checkpoint(conn, "pgc_rot")
        ms = update("rot_pgcrypto", "UPDATE pgc_rot SET c = encrypt(decrypt(c, %s, 'aes'), %s, 'aes')", (old, new))
        state["pgc_rot"] = "B" if state["pgc_rot"] == "A" else "A"
        return ms

    run_group("rotation", [
        Case("rot_jsonb", "UPDATE SET c = reencrypt_field_versioned(c), jsonb v1↔v2", "wall", n,
             reencrypt("rot_jsonb", "vj", "reencrypt_field_versioned")),
        Case("rot_jsonb_noop", "UPDATE SET c = c, jsonb", "wall", n, noop("rot_jsonb_noop", "vj")),
        Case("rot_et", "UPDATE SET c = reencrypt(c), encrypted_text v1↔v2", "wall", n,
             reencrypt("rot_et", "et_rot", "reencrypt")),
        Case("rot_et_noop", "UPDATE SET c = c, encrypted_text", "wall", n, noop("rot_et_noop", "et_rot")),
        Case("rot_pgcrypto", "UPDATE SET c = encrypt(decrypt(c, k1), k2), pgcrypto", "wall", n, pgcrypto_rot),
    ], runs)
    for key, values in wal.items():
        CASES[key].extra["wal_bytes_per_row"] = values[1:]  # without the warm-up
    set_version(conn, "v1")
    # Every row really moved: all on the last target version.
    for table, fn in (("vj", "key_version(c)"), ("et_rot", "key_version(c)")):
        got = conn.execute(f"SELECT count(*) FROM {table} WHERE {fn} = %s", (state[table],)).fetchone()[0]
        assert got == n, (table, got)


def group_procedure(conn, n, runs):
    state = {"v": "v1"}
    conn.execute("SET client_min_messages = warning")  # one NOTICE per batch

    def flip(sql, then_vacuum=False):
        def run(r):
            target = "v2" if state["v"] == "v1" else "v1"
            # The same layout before each: every row in a table without free
            # space (after a plain VACUUM the table would alternate between
            # a dense one and one with an empty half, and the cases with it).
            conn.execute("VACUUM FULL vp")
            vacuum_checkpoint(conn, "vp")
            if not then_vacuum:
                ms = wall(conn, sql, (target,))
            else:
                t = time.perf_counter()
                conn.execute(sql, (target,))
                conn.execute("VACUUM vp")
                ms = (time.perf_counter() - t) * 1000.0
            state["v"] = target
            return ms
        return run

    # The baseline is the same re-encryption as one UPDATE of the same
    # table, interleaved with the CALLs. rotate_column's check after its
    # walk reads the whole table, pruning the row versions the walk left,
    # which the UPDATE leaves to the next VACUUM: both again with that VACUUM.
    CALL = "CALL rotate_column('vp', 'c', 1000, %s)"
    UPDATE = "UPDATE vp SET c = reencrypt_field_versioned(c, %s)"
    run_group("procedure", [
        Case("rotate_column", "CALL rotate_column('vp','c', 1000, v) — batches of 1,000, v1↔v2", "wall", n, flip(CALL)),
        Case("rotate_one_update", "UPDATE vp SET c = reencrypt_field_versioned(c, v) — the same as one UPDATE",
             "wall", n, flip(UPDATE)),
        Case("rotate_column_vacuum", "the CALL, then VACUUM vp", "wall", n, flip(CALL, True), cpu=False),
        Case("rotate_one_update_vacuum", "the UPDATE, then VACUUM vp", "wall", n, flip(UPDATE, True), cpu=False),
    ], runs)
    conn.execute("RESET client_min_messages")
    got = conn.execute("SELECT count(*) FROM vp WHERE key_version(c) = %s", (state["v"],)).fetchone()[0]
    assert got == n, got


def group_large(conn, n5k, runs):
    q = lambda sql, params=None: (lambda r: explain(conn, sql, params)[0])
    run_group("large", [
        Case("encrypt_5k", "encrypt_field(p), 5,000 B", "server", n5k,
             q("SELECT sum(octet_length(encrypt_field(p))) FROM s5")),
        Case("pgcrypto_encrypt_5k", "pgcrypto encrypt(convert_to(p,'UTF8'), key, 'aes'), 5,000 B", "server", n5k,
             q("SELECT sum(octet_length(encrypt(convert_to(p, 'UTF8'), %s, 'aes'))) FROM s5", (PGC_A,))),
        Case("decrypt_5k", "decrypt_field(c), 5,000 B", "server", n5k,
             q("SELECT sum(octet_length(decrypt_field(c))) FROM f5")),
        Case("pgcrypto_decrypt_5k", "pgcrypto decrypt(c, key, 'aes'), 5,000 B", "server", n5k,
             q("SELECT sum(octet_length(decrypt(c, %s, 'aes'))) FROM g5", (PGC_A,))),
        Case("decrypt_5k_mb", "decrypt_field(c), 5,000 B multibyte text", "server", n5k,
             q("SELECT sum(octet_length(decrypt_field(c))) FROM fm5")),
        # What both sides pay before any cryptography: fetching the value out
        # of line from TOAST (byteapos/textpos read their argument in full,
        # and an empty pattern returns at once).
        Case("read_5k", "floor: position(''::bytea IN c), the stored ciphertext read, 5,000 B", "server", n5k,
             q("SELECT sum(position(''::bytea IN c)) FROM f5")),
        Case("read_text_5k", "floor: position('' IN p), the stored text read, 5,000 B", "server", n5k,
             q("SELECT sum(position('' IN p)) FROM s5")),
    ], runs)


PARALLEL_ON = ("SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0;"
               " SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0")
PARALLEL_OFF = ("RESET max_parallel_workers_per_gather; RESET parallel_setup_cost;"
                " RESET parallel_tuple_cost; RESET min_parallel_table_scan_size")


def group_parallel(conn, n, runs):
    decrypt = "SELECT sum(octet_length(decrypt_field(c))) FROM f1"
    # Control: a built-in function of the same shape, to tell whether this
    # machine can deliver a parallel speed-up at all right now.
    control = "SELECT sum(octet_length(md5(c))) FROM f1"
    launched: dict[str, list[int]] = {}
    total_cpu: dict[str, list[float]] = {}

    def serial(sql):
        def run(r):
            ms, plan = explain(conn, sql)
            assert "Gather" not in plan, plan
            return ms
        return run

    def parallel(key, sql):
        def run(r):
            conn.execute(PARALLEL_ON)
            try:
                before = children_cpu_ms()
                ms, plan = explain(conn, sql)
                # leader + workers: how much CPU the parallel plan burns in all
                total_cpu.setdefault(key, []).append((LAST_CPU["cpu_ms"] + children_cpu_ms() - before) * 1000.0 / n)
            finally:
                conn.execute(PARALLEL_OFF)
            m = WORKERS_RE.search(plan)
            launched.setdefault(key, []).append(int(m.group(1)) if m else 0)
            return ms
        return run

    # cpu=False: the leader's CPU time is not the parallel query's
    run_group("parallel", [
        Case("decrypt_serial", "decrypt_field(c), serial", "server", n, serial(decrypt)),
        Case("decrypt_parallel", "decrypt_field(c), 2 parallel workers (forced)", "server", n,
             parallel("decrypt_parallel", decrypt), cpu=False),
        Case("md5_serial", "control: md5(c), serial", "server", n, serial(control)),
        Case("md5_parallel", "control: md5(c), 2 parallel workers (forced)", "server", n,
             parallel("md5_parallel", control), cpu=False),
    ], runs)
    for key in ("decrypt_parallel", "md5_parallel"):
        CASES[key].extra["workers_launched"] = launched[key]
        CASES[key].extra["all_runs_used_2_workers"] = all(x == 2 for x in launched[key])
        # CPU of leader + workers per row (10 ms resolution): close to the
        # serial CPU time means the parallel plan adds little work, so a
        # missing speed-up comes from cores busy with other work.
        CASES[key].extra["total_cpu_us_per_row"] = total_cpu[key][1:]


def group_pgbench(conn, n_oltp, runs, seconds, pgbench, scriptdir):
    scripts = {}
    for t in ("ob_enc", "ob_txt"):
        p = Path(scriptdir) / f"pgbench_{t}.sql"
        p.write_text(
            f"\\set sid random(1, {n_oltp})\n"
            f"INSERT INTO {t} (a, b, c) VALUES (lpad(:sid::text, 100, 'abcdefghij'),"
            f" lpad(:sid::text, 100, 'klmnopqrst'), lpad(:sid::text, 100, 'uvwxyzABCD'));\n"
            f"SELECT a, b, c FROM {t} WHERE id = :sid;\n")
        scripts[t] = p
    # A key set at connection start (startup packet, source "client") is
    # accepted; the same options go to both cases.
    env = {**os.environ, "PGOPTIONS": f"-c pazpaz.encryption_key={b64(K1)}"}
    tps_samples = {"ob_enc": [], "ob_txt": []}
    cpu_samples = {"ob_enc": [], "ob_txt": []}

    def bench(table):
        def run(r):
            cpu0 = children_cpu_ms()
            out = subprocess.run(
                [*pgbench, "-n", "-M", "prepared", "-c", "2", "-j", "2", "-T", str(seconds),
                 "-f", str(scripts[table]), "postgres"],
                env=env, capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f"pgbench failed: {out.stderr.strip()[-500:]}")
            m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out.stdout)
            if not m:
                raise RuntimeError("no tps in pgbench output")
            tps = float(m.group(1))
            txns = int(re.search(r"number of transactions actually processed: (\d+)", out.stdout).group(1))
            if r >= 0:
                tps_samples[table].append(tps)
                # server CPU (both backends) per transaction, µs
                cpu_samples[table].append((children_cpu_ms() - cpu0) * 1000.0 / txns)
            # µs of wall time per transaction (aggregate over both clients):
            # returned as "ms for 1,000 rows" so µs/row = 1e6 / tps.
            return 1e6 / tps
        return run

    enc = Case("pgbench_enc", "pgbench: INSERT 3 encrypted_text cols + SELECT by id (µs/txn)", "pgbench", 1000,
               bench("ob_enc"))
    txt = Case("pgbench_text", "pgbench: same with text columns (µs/txn)", "pgbench", 1000, bench("ob_txt"))
    run_group("pgbench", [enc, txt], runs)
    enc.extra["tps"] = tps_samples["ob_enc"]
    txt.extra["tps"] = tps_samples["ob_txt"]
    enc.cpu_samples, txt.cpu_samples = cpu_samples["ob_enc"], cpu_samples["ob_txt"]
    for c in (enc, txt):
        c.extra["clients"], c.extra["seconds"], c.extra["protocol"] = 2, seconds, "prepared"


def group_python(conn, n, n_py, runs):
    aes = AESGCM(K1)

    def plain(r):
        t = time.perf_counter()
        rows = conn.execute("SELECT p FROM src LIMIT %s", (n_py,)).fetchall()
        ms = (time.perf_counter() - t) * 1000
        assert len(rows) == n_py
        return ms

    def apps_way(r):
        t = time.perf_counter()
        rows = conn.execute("SELECT c FROM f1 LIMIT %s", (n_py,)).fetchall()
        out = [aes.decrypt(c[:12], c[12:], None).decode() for (c,) in rows]
        ms = (time.perf_counter() - t) * 1000
        assert len(out) == n_py and len(out[0]) == 100
        return ms

    def extension(r):
        t = time.perf_counter()
        rows = conn.execute("SELECT decrypt_field(c) FROM f1 LIMIT %s", (n_py,)).fetchall()
        ms = (time.perf_counter() - t) * 1000
        assert len(rows) == n_py and len(rows[0][0]) == 100
        return ms

    def pgcrypto(r):
        t = time.perf_counter()
        rows = conn.execute("SELECT convert_from(decrypt(c, %s, 'aes'), 'UTF8') FROM pgc LIMIT %s",
                            (PGC_A, n_py)).fetchall()
        ms = (time.perf_counter() - t) * 1000
        assert len(rows) == n_py and len(rows[0][0]) == 100
        return ms

    run_group("python", [
        Case("py_plain", f"Python: fetch {n_py:,} plaintext rows", "client", n_py, plain),
        Case("py_app", f"Python: fetch {n_py:,} format-1 bytea + cryptography AESGCM (app's way)", "client",
             n_py, apps_way),
        Case("py_extension", f"Python: fetch {n_py:,} decrypt_field(c)", "client", n_py, extension),
        Case("py_pgcrypto", f"Python: fetch {n_py:,} pgcrypto decrypt", "client", n_py, pgcrypto),
    ], runs)


def proc_status(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
            out[k] = int(v.split()[0])  # kB
    return out


# ---- search (blind indexes and match tokens) ----------------------------------

SEARCH_LOOKUPS = 1000   # exact lookups per timed run
SEARCH_QUERIES = 20     # substring searches per timed run
SEARCH_SINGLE = 200     # single-row lookup statements per timed run


def load_search(conn: psycopg.Connection, n: int) -> None:
    """Three tables of n rows: plaintext email and name columns (B-tree and
    pg_trgm GIN indexes), the same encrypted (blind index and match index
    added by the procedures), and a copy for the backfill."""
    ex = conn.execute
    ex("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    ex("SELECT set_config('pazpaz.index_key', %s, false)", (b64(INDEX_KEY),))
    email = "'user' || i || '@example.com'"
    name = "left(md5(i::text), 12)"
    ex(f"CREATE TABLE sr_plain AS SELECT i AS id, {email} AS email, {name} AS name FROM generate_series(1, %s) i", (n,))
    ex("CREATE INDEX ON sr_plain (email)")
    ex("CREATE INDEX ON sr_plain USING gin (name gin_trgm_ops)")
    ex("CREATE TABLE sr_enc (id int, email encrypted_text, name encrypted_text)")
    ex("INSERT INTO sr_enc SELECT id, email, name FROM sr_plain")
    ex("CREATE TABLE sr_bf (id int, email encrypted_text)")
    ex("INSERT INTO sr_bf SELECT id, email FROM sr_plain")
    ex("CREATE TABLE s30 AS SELECT left(md5(i::text), 30) AS p FROM generate_series(1, %s) i", (n,))
    ex("SET client_min_messages = warning")
    ex("CALL add_blind_index('sr_enc', 'email', batch_size => 10000)")
    ex("CALL add_match_index('sr_enc', 'name', batch_size => 10000)")
    ex("RESET client_min_messages")
    ex("VACUUM ANALYZE sr_plain, sr_enc, sr_bf, s30")


def group_search(conn, n, runs):
    load_search(conn, n)
    step = max(1, n // SEARCH_LOOKUPS)
    emails = [f"user{i}@example.com" for i in range(1, n + 1, step)][:SEARCH_LOOKUPS]
    # Substrings of 3 and 4 characters of the names ('%ohn%'-style).
    import hashlib as _h
    subs = [_h.md5(str(i * 7919).encode()).hexdigest()[2:2 + 3 + i % 2] for i in range(1, SEARCH_QUERIES + 1)]
    # Nested-loop index lookups on both sides (the join is only a loop of
    # point lookups in one statement).
    conn.execute("SET enable_hashjoin = off")
    conn.execute("SET enable_mergejoin = off")

    def lookup(sql):
        return lambda r: explain(conn, sql, (emails,))[0]

    singles = emails[:: max(1, len(emails) // SEARCH_SINGLE)][:SEARCH_SINGLE]

    def single(sql):
        # One statement per lookup, as an application runs them: the sum of
        # their execution times.
        return lambda r: sum(explain(conn, sql, (e,))[0] for e in singles)

    def searches(sql):
        def run(r):
            return sum(explain(conn, sql.format(q=q))[0] for q in subs)
        return run

    def backfill(r):
        conn.execute("SET client_min_messages = warning")
        ms = wall(conn, "CALL add_blind_index('sr_bf', 'email', batch_size => 10000)")
        conn.execute("CALL drop_blind_index('sr_bf', 'email')")
        conn.execute("RESET client_min_messages")
        vacuum_checkpoint(conn, "sr_bf")
        return ms

    def noop_update(r):
        vacuum_checkpoint(conn, "sr_bf")
        ms = wall(conn, "UPDATE sr_bf SET email = email")
        vacuum_checkpoint(conn, "sr_bf")
        return ms

    # Both sides return the same rows (checked below).
    enc_search = ("SELECT count(*) FROM sr_enc WHERE name_tokens @> blind_search_tokens_for('sr_enc', 'name_tokens', '{q}')"
                  " AND name::text ILIKE '%{q}%'")
    trgm_search = "SELECT count(*) FROM sr_plain WHERE name ILIKE '%{q}%'"
    for q in subs:
        a = conn.execute(enc_search.format(q=q)).fetchone()[0]
        b = conn.execute(trgm_search.format(q=q)).fetchone()[0]
        assert a == b, (q, a, b)
    plan = explain(conn, enc_search.format(q=subs[0]))[1]
    assert "Bitmap Index Scan on sr_enc_name_tokens" in plan, plan
    plan = explain(conn, "SELECT sum(sr_enc.id) FROM unnest(%s::text[]) e(v) JOIN sr_enc"
                   " ON email_bidx = blind_index_for('sr_enc', 'email_bidx', e.v)", (emails,))[1]
    assert "Index Scan using sr_enc_email_bidx" in plan, plan
    found = conn.execute("SELECT count(sr_enc.id) FROM unnest(%s::text[]) e(v) JOIN sr_enc"
                         " ON email_bidx = blind_index_for('sr_enc', 'email_bidx', e.v)", (emails,)).fetchone()[0]
    assert found == len(emails), found

    run_group("search", [
        Case("lookup1_bidx", f"one-row lookup by blind index: {SEARCH_SINGLE} statements "
             "WHERE email_bidx = blind_index_for(…, $1), µs per lookup", "server", SEARCH_SINGLE,
             single("SELECT id FROM sr_enc WHERE email_bidx = blind_index_for('sr_enc', 'email_bidx', %s)")),
        Case("lookup1_plain", f"one-row lookup on a plaintext B-tree: {SEARCH_SINGLE} statements WHERE email = $1",
             "server", SEARCH_SINGLE, single("SELECT id FROM sr_plain WHERE email = %s")),
        Case("lookup_bidx", f"exact lookup by blind index: {len(emails):,} point lookups in one join, "
             "email_bidx = blind_index_for(…)", "server", len(emails),
             lookup("SELECT sum(sr_enc.id) FROM unnest(%s::text[]) e(v) JOIN sr_enc"
                    " ON email_bidx = blind_index_for('sr_enc', 'email_bidx', e.v)")),
        Case("lookup_plain", f"exact lookup on a plaintext B-tree: {len(emails):,} point lookups", "server",
             len(emails), lookup("SELECT sum(sr_plain.id) FROM unnest(%s::text[]) e(v) JOIN sr_plain ON email = e.v")),
        Case("blind_index_30", "blind_index(p, ctx) of a 30-byte value", "server", n,
             lambda r: explain(conn, "SELECT sum(length(blind_index(p, 'bench.s30.p'))) FROM s30")[0]),
        # 28 MACs a value: what a match index's backfill and trigger pay per row.
        Case("blind_tokens_30", "blind_tokens(p, ctx) of a 30-character value (100,000 rows)", "server",
             min(n, 100_000),
             lambda r: explain(conn, "SELECT sum(cardinality(blind_tokens(p, 'bench.s30.p')))"
                                     f" FROM (SELECT p FROM s30 LIMIT {min(n, 100_000)}) s")[0]),
        Case("floor_30", "scan floor: sum(octet_length(p)) of the same 30-byte values", "server", n,
             lambda r: explain(conn, "SELECT sum(octet_length(p)) FROM s30")[0]),
        Case("substring_tokens", f"substring search, token GIN + decrypting ILIKE recheck ({len(subs)} searches,"
             " µs per search)", "server", len(subs), searches(enc_search)),
        Case("substring_trgm", f"substring search, pg_trgm GIN on plaintext ({len(subs)} searches, µs per search)",
             "server", len(subs), searches(trgm_search)),
        Case("add_blind_index", "CALL add_blind_index(…, batch_size => 10000): backfill + B-tree build", "wall", n,
             backfill),
        Case("update_noop_bf", "UPDATE … SET email = email on the same table", "wall", n, noop_update),
    ], runs)
    conn.execute("RESET enable_hashjoin")
    conn.execute("RESET enable_mergejoin")


def group_memory(n, total):
    conn = connect()
    set_keys(conn)
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    sql = "SELECT sum(octet_length(decrypt_field(c))) FROM f1"
    conn.execute(sql).fetchone()  # warm-up: keyring, caches, buffers touched once
    before = proc_status(pid)
    loops = max(1, math.ceil(total / n))
    log(f"[memory] {loops} × {n:,} decrypts in backend {pid}")
    t = time.perf_counter()
    for _ in range(loops):
        conn.execute(sql).fetchone()
    secs = time.perf_counter() - t
    after = proc_status(pid)
    conn.close()
    return {
        "decrypts": loops * n,
        "seconds": round(secs, 2),
        "before_kB": before,
        "after_kB": after,
        "growth_kB": {k: after[k] - before[k] for k in before},
    }


# ---- report -----------------------------------------------------------------

@dataclass
class Check:
    case: str
    baseline: str
    op: str | None          # "<=" | ">=" | None (reference only)
    target: float | None
    note: str = ""
    kind: str = "time"      # time: median(case)/median(baseline); tps: tps(case)/tps(baseline)

    def ratio(self) -> float:
        c, b = CASES[self.case], CASES[self.baseline]
        if self.kind == "tps":
            return statistics.median(c.extra["tps"]) / statistics.median(b.extra["tps"])
        if self.kind == "abs":  # the case's own µs/row against an absolute target
            return c.median
        return c.median / b.median

    def paired(self) -> list[float]:
        c, b = CASES[self.case], CASES[self.baseline]
        if self.kind == "tps":
            return [x / y for x, y in zip(c.extra["tps"], b.extra["tps"])]
        if self.kind == "abs":
            return list(c.samples)
        return [x / y for x, y in zip(c.samples, b.samples)]

    def cpu_ratio(self) -> float | None:
        c, b = CASES[self.case], CASES[self.baseline]
        if c.cpu_median is None or b.cpu_median is None:
            return None
        if self.kind == "tps":  # throughput ratio from server CPU per transaction
            return b.cpu_median / c.cpu_median
        if self.kind == "abs":
            return c.cpu_median
        return c.cpu_median / b.cpu_median

    def meets(self, r: float) -> bool:
        return r <= self.target if self.op == "<=" else r >= self.target

    def verdict(self) -> str:
        """On the wall-clock ratio; the CPU-time ratio is added when it disagrees."""
        if self.op is None:
            return "info"
        if self.case.endswith("_parallel") and not CASES[self.case].extra.get("all_runs_used_2_workers"):
            return "MISS (workers)"
        ok = self.meets(self.ratio())
        v = "PASS" if ok else "MISS"
        cr = self.cpu_ratio()
        if cr is not None and self.meets(cr) != ok:
            v += f" (cpu {'PASS' if not ok else 'MISS'})"
        return v


CHECKS = [
    Check("floor", "floor", None, None, "scan floor"),
    Check("decrypt_field", "floor", "<=", 4.0),
    Check("decrypt_field", "pgcrypto_decrypt", "<=", 0.27),
    Check("pgcrypto_decrypt", "floor", None, None),
    Check("encrypt_field", "pgcrypto_encrypt", "<=", 0.30),
    Check("pgcrypto_encrypt", "pgcrypto_encrypt", None, None, "baseline"),
    Check("encrypt_versioned", "pgcrypto_encrypt", None, None),
    Check("decrypt_versioned", "pgcrypto_decrypt", None, None),
    Check("decrypt_versioned", "jsonb_floor", None, None),
    Check("copy_in_et", "copy_in_text", "<=", 1.5),
    Check("copy_in_text", "copy_in_text", None, None, "baseline"),
    Check("copy_out_et", "copy_out_text", "<=", 3.0),
    Check("copy_out_text", "copy_out_text", None, None, "baseline"),
    Check("read_cast_et", "read_text", None, None),
    Check("rot_jsonb", "rot_jsonb_noop", "<=", 1.6),
    Check("rot_jsonb_noop", "rot_jsonb_noop", None, None, "write floor"),
    Check("rot_et", "rot_et_noop", "<=", 1.6),
    Check("rot_et_noop", "rot_et_noop", None, None, "write floor"),
    Check("rot_jsonb", "rot_pgcrypto", None, None),
    Check("rotate_column", "rotate_one_update", "<=", 1.15),
    Check("rotate_one_update", "rotate_one_update", None, None, "baseline"),
    Check("rotate_column_vacuum", "rotate_one_update_vacuum", None, None, "each + VACUUM"),
    Check("rotate_one_update_vacuum", "rotate_one_update_vacuum", None, None, "baseline"),
    Check("rotate_column", "rot_jsonb", None, None, "other group"),
    Check("encrypt_5k", "pgcrypto_encrypt_5k", None, None),
    Check("decrypt_5k", "pgcrypto_decrypt_5k", None, None),
    Check("decrypt_5k_mb", "pgcrypto_decrypt_5k", None, None),
    Check("decrypt_5k_mb", "decrypt_5k", None, None, "multibyte vs hex text"),
    Check("read_5k", "read_5k", None, None, "read floor"),
    Check("decrypt_5k", "read_5k", None, None),
    Check("pgcrypto_decrypt_5k", "read_5k", None, None),
    Check("read_text_5k", "read_text_5k", None, None, "read floor"),
    Check("encrypt_5k", "read_text_5k", None, None),
    Check("pgcrypto_encrypt_5k", "read_text_5k", None, None),
    Check("decrypt_parallel", "decrypt_serial", "<=", 1 / 1.5, "≥1.5× faster"),
    Check("md5_parallel", "md5_serial", None, None, "control"),
    Check("pgbench_enc", "pgbench_text", ">=", 0.9, "TPS ratio", kind="tps"),
    Check("py_extension", "py_app", "<=", 0.6),
    Check("py_pgcrypto", "py_app", None, None),
    Check("py_plain", "py_app", None, None),
    Check("lookup1_bidx", "lookup1_plain", "<=", 1.5),
    Check("lookup1_plain", "lookup1_plain", None, None, "baseline"),
    Check("lookup_bidx", "lookup_plain", None, None, "per-row cost in a join"),
    Check("lookup_plain", "lookup_plain", None, None, "baseline"),
    Check("blind_index_30", "floor_30", "<=", 0.5, "µs/row, absolute", kind="abs"),
    Check("blind_tokens_30", "blind_index_30", None, None, "28 trigrams"),
    Check("floor_30", "floor_30", None, None, "scan floor"),
    Check("substring_tokens", "substring_trgm", "<=", 3.0),
    Check("substring_trgm", "substring_trgm", None, None, "baseline"),
    Check("add_blind_index", "update_noop_bf", "<=", 2.0),
    Check("update_noop_bf", "update_noop_bf", None, None, "write floor"),
]

MEMORY_TARGET_KB = 4096  # RssAnon growth over the whole loop


def fmt(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def print_table(memory: dict | None) -> list[dict]:
    rows = []
    header = ("case", "how", "µs/row", "(min–max)", "cpu µs/row", "baseline", "base µs", "ratio",
              "(paired min–max)", "cpu ratio", "target", "result")
    table = []
    for ch in CHECKS:
        if ch.case not in CASES or ch.baseline not in CASES:
            continue
        c, b = CASES[ch.case], CASES[ch.baseline]
        self_row = ch.case == ch.baseline
        r = None if self_row else ch.ratio()
        cr = None if self_row else ch.cpu_ratio()
        paired = [] if self_row else ch.paired()
        target = "" if ch.op is None else f"{ch.op} {ch.target:.2f}"
        if ch.note and not self_row:
            target = f"{target} ({ch.note})" if target else ch.note
        verdict = "" if self_row else ch.verdict()
        table.append((
            ch.case, c.how, fmt(c.median), f"({fmt(min(c.samples))}–{fmt(max(c.samples))})",
            "" if c.cpu_median is None else fmt(c.cpu_median),
            "" if self_row else ch.baseline, "" if self_row else fmt(b.median),
            "" if r is None else f"{r:.2f}",
            "" if not paired else f"({min(paired):.2f}–{max(paired):.2f})",
            "" if cr is None else f"{cr:.2f}",
            target if not self_row else ch.note, verdict))
        rows.append({
            "case": ch.case, "label": c.label, "how": c.how,
            "us_per_row_median": c.median, "us_per_row_min": min(c.samples), "us_per_row_max": max(c.samples),
            "cpu_us_per_row_median": c.cpu_median,
            "baseline": None if self_row else ch.baseline,
            "baseline_us_per_row_median": None if self_row else b.median,
            "ratio": r, "paired_ratios": paired, "cpu_ratio": cr, "ratio_kind": ch.kind,
            "target": None if ch.op is None else f"{ch.op} {ch.target}",
            "result": verdict or None, "note": ch.note or None,
        })
    if memory:
        g = memory["growth_kB"]
        verdict = "PASS" if g["RssAnon"] <= MEMORY_TARGET_KB else "MISS"
        table.append((
            "memory", "/proc", f"{g['RssAnon']:+} kB", f"(VmRSS {g['VmRSS']:+} kB)", "",
            f"{memory['decrypts']:,} decrypts", "", "", "", "", f"RssAnon growth <= {MEMORY_TARGET_KB} kB",
            verdict))
        rows.append({"case": "memory", "result": verdict, **memory,
                     "target": f"RssAnon growth <= {MEMORY_TARGET_KB} kB"})

    widths = [max(len(str(r[i])) for r in [header, *table]) for i in range(len(header))]
    line = "  ".join("{:<%d}" % w for w in widths)
    print()
    print(line.format(*header).rstrip())
    print(line.format(*("-" * w for w in widths)).rstrip())
    for r in table:
        print(line.format(*r).rstrip())
    print()
    print("Cases:")
    for key, c in CASES.items():
        extra = ""
        if key in ("decrypt_parallel", "md5_parallel"):
            tc = c.extra.get("total_cpu_us_per_row")
            extra = (f"  [workers launched per run: {c.extra.get('workers_launched')}; CPU of leader + workers "
                     f"{statistics.median(tc) if tc else float('nan'):.3f} µs/row]")
        if "tps" in c.extra:
            extra = (f"  [TPS median {statistics.median(c.extra['tps']):.0f}; server CPU "
                     f"{c.cpu_median or float('nan'):.1f} µs/txn]")
        if c.extra.get("wal_bytes_per_row"):
            extra = f"  [WAL {statistics.median(c.extra['wal_bytes_per_row']):.0f} B/row]"
        print(f"  {key:<20} {c.label}{extra}")
    waited = sum(sum(c.wait_ms) for c in CASES.values())
    timed = sum(sum(c.wall_ms) for c in CASES.values())
    if timed:
        print(f"\nNoise: over the timed statements the backend waited for a CPU {100 * waited / timed:.0f}% of the "
              "wall-clock time (other load on the machine); 'cpu' columns count only the backend's own CPU time.")
    print()
    return rows


def library_info(path: str) -> dict:
    info = {"path": path}
    try:
        data = Path(path).read_bytes()
        info["sha256"] = hashlib.sha256(data).hexdigest()
        info["bytes"] = len(data)
        sections = subprocess.run(["readelf", "-S", "-W", path], capture_output=True, text=True).stdout
        info["debug_build"] = ".debug_info" in sections
    except OSError as e:
        info["error"] = str(e)
    return info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int)
    ap.add_argument("--runs", type=int)
    ap.add_argument("--quick", action="store_true", help="smoke test: 20,000 rows, 3 runs")
    ap.add_argument("--only", help="comma-separated groups: " + ",".join(GROUPS))
    ap.add_argument("--out", default="target/bench/results.json")
    a = ap.parse_args()
    n = a.rows or (20_000 if a.quick else 1_000_000)
    runs = a.runs or (3 if a.quick else 5)
    if n < 1000 or runs < 1:
        ap.error("--rows must be ≥ 1000 and --runs ≥ 1")
    groups = set(GROUPS if not a.only else a.only.split(","))
    unknown = groups - set(GROUPS)
    if unknown:
        ap.error(f"unknown groups: {', '.join(sorted(unknown))}")
    server_dir = os.environ["BENCH_SERVER_DIR"]
    n5k = max(2_000, n // 10)
    n_oltp = min(n, 100_000)
    n_py = min(n, 100_000)
    mem_total = 1_000_000 if a.quick else 10_000_000
    pgbench_secs = 1 if a.quick else 10
    outdir = Path(a.out).parent
    outdir.mkdir(parents=True, exist_ok=True)

    lib = library_info(os.environ["BENCH_LIBRARY"])
    if lib.get("debug_build"):
        log("WARNING: the pazpaz_crypto library is a DEBUG build (has .debug_info); its numbers are not "
            "representative")
    started = dt.datetime.now(dt.timezone.utc)
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    t_start = time.perf_counter()

    conn = connect()
    meta = {
        "rows": n, "runs": runs, "warmup_runs": 1, "quick": a.quick, "rows_5k": n5k, "rows_python": n_py,
        "rows_pgbench_prefill": n_oltp, "groups": sorted(groups), "library": lib,
        "server_version": conn.execute("SHOW server_version").fetchone()[0],
        "settings": dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('shared_buffers', 'max_parallel_workers_per_gather',"
            " 'jit', 'fsync', 'autovacuum', 'max_wal_size', 'synchronous_commit', 'work_mem')").fetchall()),
        "nproc": os.cpu_count(), "loadavg_before": load_before, "started": started.isoformat(),
    }
    meta.update(load_data(conn, n, n5k, n_oltp, server_dir, groups))
    set_keys(conn)

    if "scan" in groups:
        group_scan(conn, n, runs)
    if "encrypt" in groups:
        group_encrypt(conn, n, runs)
    if "versioned" in groups:
        group_versioned(conn, n, runs)
    if "copy" in groups:
        group_copy(conn, n, runs, server_dir)
    if "large" in groups:
        group_large(conn, n5k, runs)
    if "parallel" in groups:
        group_parallel(conn, n, runs)
    if "python" in groups:
        group_python(conn, n, n_py, runs)
    if "rotation" in groups:
        group_rotation(conn, n, runs)
    if "procedure" in groups:
        group_procedure(conn, n, runs)
    if "pgbench" in groups:
        # pgbench of the server's version (for 17 and 18, run inside its
        # chroot: scripts/bench.sh), its scripts beside the cluster, where
        # both sides see them.
        pgbench = os.environ["BENCH_PGBENCH"].split("\n")
        group_pgbench(conn, n_oltp, runs, pgbench_secs, pgbench, server_dir)
    if "search" in groups:
        group_search(conn, n, runs)
    memory = group_memory(n, mem_total) if "memory" in groups else None
    conn.close()

    meta["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    meta["seconds"] = round(time.perf_counter() - t_start, 1)
    print(f"\npazpaz_crypto benchmark — {n:,} rows × 100 B, {runs} interleaved runs after 1 warm-up "
          f"(5,000 B case: {n5k:,} rows; Python: {n_py:,} rows); µs per row, median (min–max).")
    print(f"Library: {lib['path']} ({'DEBUG build!' if lib.get('debug_build') else 'release build'}); "
          f"load average before {' '.join(load_before)}, after {' '.join(meta['loadavg_after'])}; "
          f"{meta['seconds']} s.")
    print("how: server = EXPLAIN (ANALYZE, TIMING OFF) Execution Time; wall = client clock around one statement "
          "(no rows to the client); client = Python execute+fetchall (+ decryption); pgbench = 1e6/TPS, ratio is TPS.\n"
          "cpu µs/row: the backend's own CPU time (/proc/<pid>/schedstat) for the same statements; result is judged "
          "on the wall-clock ratio, '(cpu …)' when the CPU-time ratio disagrees.")
    rows = print_table(memory)
    result = {
        "meta": meta,
        "cases": {k: {"label": c.label, "how": c.how, "rows": c.rows, "samples_us_per_row": c.samples,
                      "median": c.median, "min": min(c.samples), "max": max(c.samples),
                      "cpu_samples_us_per_row": c.cpu_samples, "cpu_median": c.cpu_median,
                      "backend_wait_ms": c.wait_ms, **c.extra}
                  for k, c in CASES.items()},
        "table": rows,
        "memory": memory,
    }
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"Results written to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
