#!/usr/bin/env bash
# Runs every test: sets up the machine (idempotent), then
#   0. lint: cargo fmt --check and cargo clippy -D warnings (extension, core,
#      fuzz crate)
#   1. pure core tests (cargo test -p pazpaz_core), incl. property tests, and a
#      short fuzz run of every parser (scripts/fuzz.sh 10)
#   2. #[pg_test]s inside PostgreSQL (cargo pgrx test, library preloaded)
#   3. SQL regression suite (tests/pg_regress) on a throwaway server
#   4. Python suite (tests/python, pytest): pg_dump, logs, leaks, crashes,
#      concurrency, the CPU check, drivers, SQLAlchemy, Alembic, PgBouncer, … (on a version
#      other than 15 only the tests marked every_version)
# Usage: bash scripts/test.sh [stage…]   (stages: lint core pgtest regress python)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash scripts/setup.sh
source scripts/pg.sh

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(lint core pgtest regress python)
want() { local s; for s in "${stages[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
step() { printf '\n=== %s ===\n' "$*"; }

if want lint; then
    step "lint: cargo fmt --check"
    cargo fmt --check
    cargo fmt --check --manifest-path fuzz/Cargo.toml
    step "lint: cargo clippy -D warnings (extension with pg15, pazpaz_core, fuzz targets)"
    cargo clippy -q --workspace --all-targets --features pg15 -- -D warnings
    # The fuzz crate (outside the workspace) with RUSTC_BOOTSTRAP=1, as
    # scripts/fuzz.sh builds it.
    RUSTC_BOOTSTRAP=1 cargo clippy -q --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings
fi

if want core; then
    step "core: cargo test -p pazpaz_core"
    cargo test -q -p pazpaz_core
    step "core: fuzz smoke run (10 s per target; the long campaign is scripts/fuzz.sh)"
    bash scripts/fuzz.sh 10
fi

if want pgtest; then
    step "pgtest: cargo pgrx test (library in shared_preload_libraries)"
    mkdir -p "$PG_BASE" && chown postgres:postgres "$PG_BASE"
    rm -rf "$PG_BASE/pgrx-test" && install -d -o postgres -g postgres "$PG_BASE/pgrx-test"
    cargo pgrx test pg15 --runas postgres --pgdata "$PG_BASE/pgrx-test"
fi

# The remaining stages use the release build installed into Debian's PostgreSQL.
if want regress || want python; then
    step "install: cargo pgrx package (release) into PostgreSQL 15"
    install_extension --release
fi

if want regress; then
    step "regress: tests/pg_regress"
    bash tests/pg_regress/run.sh
fi


if want python; then
    if [ "$PG_MAJOR" = 15 ]; then
        step "python: pytest tests/python (PostgreSQL $PG_MAJOR)"
        python3 -m pytest -q -p no:cacheprovider tests/python
    else
        step "python: pytest -m every_version tests/python (PostgreSQL $PG_MAJOR)"
        python3 -m pytest -q -p no:cacheprovider -m every_version tests/python
    fi
fi

printf '\nAll requested test stages passed: %s\n' "${stages[*]}"
