#!/usr/bin/env bash
# SQL regression suite: each tests/pg_regress/sql/NAME.sql runs in psql against
# a throwaway server with the library preloaded, and its output must equal
# expected/NAME.out. The files double as examples of use.
#   bash tests/pg_regress/run.sh [NAME…]
# To accept new output after reviewing it: ACCEPT=1 bash tests/pg_regress/run.sh NAME
# Another build without installing it: PAZPAZ_PACKAGE_DIR=<cargo pgrx package
# --out-dir> runs the server from an overlay that loads that build (with
# PG_BASE chosen so as not to collide with other runs).
# The server is PG_MAJOR's (scripts/pg.sh), on a free port unless REGRESS_PORT
# says otherwise; pg_regress and psql are that version's too (in its chroot
# for 17 and 18). Where a version's output really differs, pg_regress accepts
# an alternative expected file, expected/NAME_1.out.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/pg.sh
if [ -n "${PAZPAZ_PACKAGE_DIR:-}" ]; then use_package_overlay "$PAZPAZ_PACKAGE_DIR" regress-overlay; fi
DIR=tests/pg_regress
OUT=target/regress/pg$PG_MAJOR
PG_REGRESS=$(dirname "$(pg_config_of --pgxs)")/../test/regress/pg_regress

if [ $# -gt 0 ]; then tests=("$@"); else
    mapfile -t tests < <(grep -v '^#' "$DIR/schedule" | sed '/^$/d')
fi

# A name of its own (other checkouts share PG_BASE); its directory, with the
# server log, stays when the suite fails.
name=regress-pg$PG_MAJOR-$$
trap 'pg_stop "$name"' EXIT
pg_start "$name" "${REGRESS_PORT:-$(pg_free_port)}" "log_min_messages = warning"
rm -rf "$OUT" && mkdir -p "$OUT"

status=0
pg_exec "$PG_REGRESS" --bindir="$PGBIN" --host="$PGHOST" --port="$PGPORT" --user=postgres \
    --dbname=pazpaz_regress --inputdir="$DIR" --outputdir="$OUT" \
    --load-extension=pazpaz_crypto "${tests[@]}" || status=$?
if [ $status -ne 0 ]; then
    if [ "${ACCEPT:-0}" = 1 ]; then
        for t in "${tests[@]}"; do cp "$OUT/results/$t.out" "$DIR/expected/$t.out"; done
        echo "accepted new expected output for: ${tests[*]} (review it with git diff)"
    else
        cat "$OUT/regression.diffs" 2>/dev/null | head -200
        exit $status
    fi
fi
pg_stop "$name" && rm -rf "$(pg_dir "$name")"
