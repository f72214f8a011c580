#!/usr/bin/env bash
# Benchmark of pazpaz_crypto against baselines measured in the same run
# (scan floor, pgcrypto, plain text columns, no-op UPDATE, serial plans,
# the application's own Python decryption).
#
#   bash scripts/bench.sh [--rows N] [--runs R] [--quick] [--only GROUP,…] [--out FILE]
#
#   --rows N   rows of 100-byte ASCII text (default 1,000,000)
#   --runs R   timed runs per case after one warm-up, interleaved (default 5)
#   --quick    smoke test: 20,000 rows, 3 runs (under a minute)
#   --only     run only some groups (scan encrypt versioned copy rotation
#              procedure large parallel pgbench python memory search)
#
# Steps: builds the release package and installs it into PostgreSQL 15,
# starts a throwaway cluster `bench` on port 55470 (library preloaded,
# shared_buffers 512MB, jit off, fsync off, autovacuum off, no parallel plans
# unless a case asks for them), loads the data, runs bench/bench.py, prints
# one table and writes target/bench/results.json. The cluster is always
# stopped at the end.
#
# Environment:
#   BENCH_SKIP_INSTALL=1     use the extension already installed in PostgreSQL 15
#   BENCH_PACKAGE_DIR=DIR    use this `cargo pgrx package` tree instead, through a
#                            private copy of PostgreSQL's directory layout under
#                            /tmp/pazpaz_crypto (the system installation is left
#                            alone); implies BENCH_SKIP_INSTALL=1
#   BENCH_PORT=55470         port (55470–55479)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/pg.sh

NAME=bench
PORT=${BENCH_PORT:-55470}
if ((PORT < 55470 || PORT > 55479)); then
    echo "bench: BENCH_PORT must be in 55470–55479" >&2
    exit 2
fi

if [ -n "${BENCH_PACKAGE_DIR:-}" ]; then
    mkdir -p "$PG_BASE"
    use_package_overlay "$(cd "$BENCH_PACKAGE_DIR" && pwd)" bench-root
    echo "bench: using the package in $BENCH_PACKAGE_DIR (private PostgreSQL layout)" >&2
elif [ "${BENCH_SKIP_INSTALL:-0}" != 1 ]; then
    echo "bench: building and installing the release package (cargo pgrx package)…" >&2
    install_extension --release
fi
LIBRARY=$(cd "$(pg_host_path "$PGBIN")/../lib" && pwd)/pazpaz_crypto.so

# Stop the server and drop its data (GBs at 1M rows); server.log stays.
trap 'pg_stop "$NAME"; rm -rf "$(pg_dir "$NAME")/data" "$(pg_dir "$NAME")/copy_in.txt"; [ -z "${BENCH_PACKAGE_DIR:-}" ] || rm -rf "$PG_BASE/bench-root"' EXIT
echo "bench: starting cluster $NAME on port $PORT" >&2
pg_start "$NAME" "$PORT" \
    "shared_buffers = 512MB" \
    "max_parallel_workers_per_gather = 0" \
    "jit = off" \
    "autovacuum = off" \
    "max_wal_size = 8GB" \
    "checkpoint_timeout = 1h" \
    "wal_level = replica" \
    "log_min_messages = warning"

mkdir -p "$ROOT/target/bench"
BENCH_SERVER_DIR=$(pg_dir "$NAME") BENCH_LIBRARY=$LIBRARY BENCH_PGBENCH=$(pg_tool pgbench) \
    python3 bench/bench.py --out "$ROOT/target/bench/results.json" "$@"
