#!/usr/bin/env bash
# A build compiled for a CPU feature this machine lacks (as when a library
# built for a newer machine is copied to an older one) refuses to load with an
# error naming the feature, instead of dying of SIGILL on the first key and
# taking every session through crash recovery.
#
# Builds the extension once more, for this CPU plus one feature it lacks, in
# its own target directory (a few minutes), and loads it from a private copy
# of PostgreSQL's layout (scripts/pg.sh use_package_overlay).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/pg.sh

if [ "$(uname -m)" != x86_64 ]; then
    echo "FAIL  cpu_features: written for x86_64 (the CPU check is a no-op elsewhere)"
    exit 1
fi
# Features Rust can compile for and this CPU does not report (TBM and SSE4a
# are AMD-only, and TBM was dropped after Bulldozer).
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
feature=
for f in tbm:tbm sse4a:sse4a avx512f:avx512f avx512vp2intersect:avx512_vp2intersect; do
    [[ $flags == *" ${f#*:} "* ]] || { feature=${f%%:*}; break; }
done
if [ -z "$feature" ]; then
    echo "FAIL  cpu_features: this CPU has every candidate feature; add one it lacks to the list"
    exit 1
fi
echo "cpu_features: building for this CPU plus '$feature', which it lacks"

pkg=$PWD/target/package-cpu-mismatch
CARGO_TARGET_DIR=$PWD/target/cpu-mismatch RUSTFLAGS="-C target-cpu=native -C target-feature=+$feature" \
    cargo pgrx package --pg-config /usr/lib/postgresql/15/bin/pg_config --out-dir "$pkg" >/dev/null 2>&1
use_package_overlay "$pkg" cpu-mismatch-root
trap 'pg_stop it_cpu; rm -rf "$PG_BASE/cpu-mismatch-root"' EXIT

fail=0
check() { if [ "$2" = "$3" ]; then echo "ok    $1"; else echo "FAIL  $1: got '$2', want '$3'"; fail=1; fi; }
want="this build of pazpaz_crypto needs CPU features this machine lacks: $feature"

# Not preloaded: the backend that loads the library gets an error; the
# server stays up.
pg_start it_cpu 55439 "shared_preload_libraries = ''"
out=$(psql -X -At -v VERBOSITY=verbose -c "CREATE EXTENSION pazpaz_crypto" 2>&1 || true)
check "CREATE EXTENSION fails with SQLSTATE 0A000" "$(echo "$out" | grep -c '^ERROR:  0A000: ')" 1
check "the error names the missing feature" "$(echo "$out" | grep -c -F "$want")" 1
check "and says what to do" "$(echo "$out" | grep -c "^HINT:  .*scripts/package.sh")" 1
out=$(psql -X -At -c "LOAD 'pazpaz_crypto'" 2>&1 || true)
check "LOAD fails the same way" "$(echo "$out" | grep -c -F "$want")" 1
check "the server is still up" "$(psql -X -At -c 'SELECT 1')" 1
check "no backend crashed" "$(grep -c 'terminated by signal' "$(pg_log it_cpu)" || true)" 0
pg_stop it_cpu

# Preloaded: the server does not start, and says why.
if pg_start it_cpu 55439 >/dev/null 2>&1; then
    check "a server preloading the library does not start" started refused
else
    check "a server preloading the library does not start" refused refused
fi
check "its log names the missing feature" "$(grep -c -F "$want" "$(pg_log it_cpu)" || true)" 1

exit $fail
