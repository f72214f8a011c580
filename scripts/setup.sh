#!/usr/bin/env bash
# Installs everything the demo, the tests and the benchmark need, idempotently:
# Debian packages, cargo-pgrx 0.18.1 (matching the pinned pgrx), pgrx's
# registration of Debian's PostgreSQL 15, and the Python packages of the tests;
# then, when PG_MAJOR is another version, that version's server
# (scripts/provision.sh: pgserver for 16, a Debian chroot for 17 and 18).
# Safe to run again: every step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian 12's PostgreSQL: the default build, the lint stage, the host's
# postgres user (the servers of 16, 17 and 18 run as it too).
HOST_PG=15
PG_CONFIG=/usr/lib/postgresql/$HOST_PG/bin/pg_config
# g++: libFuzzer (the fuzz crate, also built by the lint stage's clippy).
APT_PACKAGES=(sudo gcc g++ binutils postgresql-$HOST_PG postgresql-server-dev-$HOST_PG postgresql-contrib libclang-dev
              clang pgbouncer postgresql-$HOST_PG-pgaudit hyperfine python3-pip gdb debootstrap)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian starts a cluster of its own on 5432; the project uses throwaway ones.
if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
    pg_ctlcluster "$HOST_PG" main stop 2>/dev/null || true
fi

# The lint stage of scripts/test.sh.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    echo "setup: installing rustfmt and clippy"
    rustup component add rustfmt clippy
fi
if ! cargo pgrx --version 2>/dev/null | grep -q '0\.18\.1'; then
    echo "setup: installing cargo-pgrx 0.18.1 (a few minutes)"
    cargo install cargo-pgrx --version 0.18.1 --locked
fi
if ! grep -qs "pg$HOST_PG = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    cargo pgrx init "--pg$HOST_PG" "$PG_CONFIG"
fi

PY_PACKAGES=("psycopg[binary]>=3.1" "SQLAlchemy[asyncio]>=2.0" "asyncpg>=0.29" "alembic>=1.13" "pytest>=8" "cryptography>=41")
if ! python3 -c 'import psycopg, sqlalchemy, greenlet, asyncpg, alembic, pytest, cryptography' 2>/dev/null; then
    echo "setup: installing Python packages"
    python3 -m pip install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
fi

if [ "${PG_MAJOR:-$HOST_PG}" != "$HOST_PG" ]; then
    bash scripts/provision.sh "$PG_MAJOR"
fi
