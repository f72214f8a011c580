#!/usr/bin/env bash
# The demo: sets up the machine (idempotent), builds and installs the
# extension, starts a throwaway PostgreSQL 15 (or PG_MAJOR's) with the library
# preloaded, runs demo/demo.sql in psql, and stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/pg.sh
echo "demo: building and installing pazpaz_crypto (release)"
install_extension --release
trap 'pg_stop demo' EXIT
pg_start demo "$(pg_free_port)"
echo "demo: throwaway server on port $PGPORT (socket $PGHOST), library preloaded"
mapfile -t psql < <(pg_tool psql)
"${psql[@]}" -X -q -v ON_ERROR_STOP=1 -f demo/demo.sql
echo "demo: done; stopping the server"
