#!/usr/bin/env bash
# The Citus suite (tests/citus): a coordinator and two workers on loopback,
# each with Citus and pazpaz_crypto preloaded, checked for keys and plaintext
# in every node's log, pg_stat_activity and citus_stat_activity.
#
#   PAZPAZ_CITUS_DIR=DIR bash scripts/test_citus.sh [pytest arguments]
#
# Citus is not in the package registries this project installs from, so the
# suite takes an installed Citus as given: DIR is the root under which
# Citus's files sit at PostgreSQL's own paths — `/` when Citus is installed
# from its packages into the system PostgreSQL, or the DESTDIR of a
# `make install DESTDIR=DIR` of a Citus build for PostgreSQL $PG_MAJOR (a
# directory of the host; for 17 and 18, built against the server in its
# chroot). PG_MAJOR picks the version, as for scripts/test.sh.
# Nothing is installed into the system PostgreSQL: the servers run from a
# private copy of its layout with this build of the extension and DIR's
# Citus files (PAZPAZ_PACKAGE_DIR=<cargo pgrx package tree> skips the build).
# Not part of scripts/test.sh (which must run where Citus cannot be
# installed).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PAZPAZ_CITUS_DIR:-}" ]; then
    echo "scripts/test_citus.sh: set PAZPAZ_CITUS_DIR to the root of a Citus installation for PostgreSQL ${PG_MAJOR:-15}" >&2
    echo "  (/ for Citus installed from its packages, or the DESTDIR of 'make install DESTDIR=…' of a Citus build)" >&2
    exit 2
fi
bash scripts/setup.sh >/dev/null
source scripts/pg.sh
lib=$(pg_config_of --pkglibdir) share=$(pg_config_of --sharedir)
# Citus's files as the host reaches them: under DIR, or (DIR = /) in the
# server's own installation (its chroot for 17 and 18).
citus=$(cd "$PAZPAZ_CITUS_DIR" && pwd -P)
if [ "$citus" = / ]; then
    citus_lib=$(pg_host_path "$lib") citus_share=$(pg_host_path "$share") citus=
else
    citus_lib=$citus$lib citus_share=$citus$share
fi
if [ ! -f "$citus_lib/citus.so" ]; then
    echo "scripts/test_citus.sh: no citus.so in $citus_lib (PAZPAZ_CITUS_DIR=$PAZPAZ_CITUS_DIR, PostgreSQL $PG_MAJOR)" >&2
    exit 2
fi
pkg=${PAZPAZ_PACKAGE_DIR:-}
if [ -z "$pkg" ]; then
    pkg=$PG_TARGET_DIR/package-citus$([ "$PG_MAJOR" = 15 ] || echo "-pg$PG_MAJOR")
    rm -rf "$pkg"
    echo "test_citus: building the extension (cargo pgrx package)…" >&2
    CARGO_TARGET_DIR=$PG_TARGET_DIR pg_exec cargo pgrx package --pg-config "$PGBIN/pg_config" --out-dir "$pkg" >/dev/null
fi
mkdir -p "$PG_BASE"
use_package_overlay "$(cd "$pkg" && pwd)" citus-overlay
overlay=$PG_BASE/citus-overlay
# Citus's files over the links to the installation's own.
if [ -n "$citus" ]; then
    for f in "$citus_lib"/*; do
        rm -rf "$overlay$lib/${f##*/}"
        cp -a "$f" "$overlay$lib/"
    done
    for f in "$citus_share"/extension/*; do
        rm -f "$overlay$share/extension/${f##*/}"
        cp -a "$f" "$overlay$share/extension/"
    done
fi
export PAZPAZ_OVERLAY_BIN=$PGBIN
trap 'rm -rf "$overlay"' EXIT
python3 -m pytest -p no:cacheprovider tests/citus "$@"
