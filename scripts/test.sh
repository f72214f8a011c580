#!/usr/bin/env bash
# Runs every test: sets up the machine (idempotent), then
#   0. lint: cargo fmt --check and cargo clippy -D warnings (extension,
#      core, fuzz crate)
#   1. pure core tests (cargo test -p pazpaz_core), incl. property tests, and a
#      short fuzz run of every parser (scripts/fuzz.sh 10)
# once, and for each PostgreSQL version
#   2. #[pg_test]s inside PostgreSQL (cargo pgrx test, library preloaded)
#   3. SQL regression suite (tests/pg_regress) on a throwaway server
#   4. Python suite (tests/python, pytest): pg_dump, logs, leaks, crashes,
#      concurrency, the CPU check, drivers, SQLAlchemy, Alembic, PgBouncer, … (on a version
#      other than 15 only the tests marked every_version)
# Usage: bash scripts/test.sh [stage…]   (stages: lint core pgtest regress python)
# The versions: PG_MAJOR=N runs one (15, 16, 17 or 18); unset, all four.
# Where each version's server comes from: scripts/provision.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(lint core pgtest regress python)
want() { local s; for s in "${stages[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
step() { printf '\n=== %s ===\n' "$*"; }
if [ -n "${PG_MAJOR:-}" ]; then versions=("$PG_MAJOR"); else versions=(15 16 17 18); fi
for v in "${versions[@]}"; do
    case $v in 15 | 16 | 17 | 18) ;; *) echo "PG_MAJOR=$v: the supported versions are 15, 16, 17 and 18" >&2; exit 2 ;; esac
done
for s in "${stages[@]}"; do
    case $s in lint | core | pgtest | regress | python) ;; *) echo "unknown stage: $s" >&2; exit 2 ;; esac
done
timings=()

started=$SECONDS
PG_MAJOR=15 bash scripts/setup.sh

# lint and core do not depend on the server version: they build for Debian's
# PostgreSQL 15 on the host.
if want lint; then
    step "lint: cargo fmt --check"
    cargo fmt --check
    cargo fmt --check --manifest-path fuzz/Cargo.toml
    step "lint: cargo clippy -D warnings (extension with pg15, pazpaz_core, fuzz targets)"
    PG_MAJOR=15 cargo clippy -q --workspace --all-targets --features pg15 -- -D warnings
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
if want lint || want core; then timings+=("lint+core $((SECONDS - started)) s"); fi

# The stages that run against a server of PG_MAJOR (a subshell per version:
# scripts/pg.sh reads PG_MAJOR when sourced).
test_version() {
    export PG_MAJOR=$1
    [ "$PG_MAJOR" = 15 ] || bash scripts/setup.sh
    source scripts/pg.sh

    if want pgtest; then
        step "pgtest: cargo pgrx test pg$PG_MAJOR (library in shared_preload_libraries)"
        local pgdata=$PG_BASE/pgrx-test-$PG_MAJOR
        mkdir -p "$PG_BASE" && chown postgres:postgres "$PG_BASE"
        rm -rf "$pgdata" && install -d -o "$(pg_owner | cut -d: -f1)" -g "$(pg_owner | cut -d: -f2)" "$pgdata"
        CARGO_TARGET_DIR=$PG_TARGET_DIR pg_exec cargo pgrx test "pg$PG_MAJOR" --runas postgres --pgdata "$pgdata"
    fi

    # The remaining stages use the release build installed into PG_MAJOR's
    # server.
    if want regress || want python; then
        step "install: cargo pgrx package (release) into PostgreSQL $PG_MAJOR"
        install_extension --release
    fi

    if want regress; then
        step "regress: tests/pg_regress on PostgreSQL $PG_MAJOR"
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
}

if want pgtest || want regress || want python; then
    for v in "${versions[@]}"; do
        t0=$SECONDS
        (test_version "$v")
        timings+=("PostgreSQL $v $((SECONDS - t0)) s")
    done
fi

printf '\nAll requested test stages passed: %s (PostgreSQL %s)\n' "${stages[*]}" "${versions[*]}"
printf '  %s\n' "${timings[@]}"
