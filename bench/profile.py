#!/usr/bin/env python3
r"""Profiles one SQL statement inside a backend with `perf record`.

Needs a running server (PGHOST/PGPORT/PGUSER in the environment), e.g.

    source scripts/pg.sh && pg_start bench 55470 "shared_buffers = 512MB" "jit = off"
    psql -c "CREATE EXTENSION pazpaz_crypto" -c "CREATE TABLE src AS SELECT i AS id, \
        left(md5(i::text) || md5((-i)::text) || md5((i * 7)::text) || md5((i * 13)::text), 100) AS p \
        FROM generate_series(1, 500000) i"
    python3 bench/profile.py --setup "CREATE TABLE f1 AS SELECT id, encrypt_field(p) AS c FROM src" \
        "SELECT sum(octet_length(decrypt_field(c))) FROM f1"
    python3 bench/profile.py --perf-args "--call-graph dwarf,8192" --no-warmup --repeat 1 \
        --setup "…" "UPDATE vj SET c = reencrypt_field_versioned(c, 'v2')"
    pg_stop bench

Keys are random per invocation and never printed, so data to decrypt is made
with --setup statements in the same session. Prints the top symbols of
`perf report --stdio`; the perf data stays in --out for further reports.
"""

import argparse
import base64
import json
import secrets
import signal
import subprocess
import sys
import time

import psycopg


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("sql")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--perf-args", default="")
    ap.add_argument("--out", default="/tmp/pazpaz_crypto/bench-perf.data")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--no-warmup", action="store_true", help="for statements that change the data (UPDATE)")
    ap.add_argument("--setup", action="append", default=[],
                    help="statement run first, untimed, with the same random keys (e.g. to encrypt a table)")
    a = ap.parse_args()

    ring = json.dumps({v: base64.b64encode(secrets.token_bytes(32)).decode() for v in ("v1", "v2")})
    with psycopg.connect("", autocommit=True, prepare_threshold=None) as conn:
        conn.execute("SELECT set_config('pazpaz.encryption_keys', %s, false),"
                     " set_config('pazpaz.encryption_key_version', 'v1', false)", (ring,))
        for stmt in a.setup:
            conn.execute(stmt)
        def run(sql):
            cur = conn.execute(sql)
            if cur.description is not None:
                cur.fetchall()

        if not a.no_warmup:
            run(a.sql)
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        perf = subprocess.Popen(["perf", "record", "-q", "-o", a.out, *a.perf_args.split(), "-p", str(pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        t = time.perf_counter()
        for _ in range(a.repeat):
            run(a.sql)
        secs = time.perf_counter() - t
        perf.send_signal(signal.SIGINT)
        perf.wait()
    print(f"{a.repeat} × statement in {secs:.2f} s", file=sys.stderr)
    report = subprocess.run(["perf", "report", "-i", a.out, "--stdio", "--no-children", "--percent-limit", "0.5",
                             "--sort", "dso,symbol"], capture_output=True, text=True).stdout
    lines = [l for l in report.splitlines() if l.strip() and not l.startswith("#")]
    print("\n".join(lines[: a.top]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
