#!/usr/bin/env bash
# A build compiled for a CPU feature this machine lacks (as when a library
# built for a newer machine is copied to an older one) refuses to load with an
# error naming the feature, instead of dying of SIGILL on the first key and
# taking every session through crash recovery.
#
# Builds the extension once more, for this CPU plus one feature it lacks, in
# its own target directory (a few minutes), and loads it from a private copy
# of PostgreSQL's layout (scripts/pg.sh use_package_overlay). The feature has
# to be one this CPU lacks, which on current CPUs means one compilers rarely
# emit (TBM, SSE4a), so the case that matters in practice (AVX-512 code on an
# AVX2 machine) is covered by disassembly: nothing that runs before the check
# passes, in either build, uses vector instructions beyond baseline x86_64.
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
mkdir -p target
if ! CARGO_TARGET_DIR=$PWD/target/cpu-mismatch RUSTFLAGS="-C target-cpu=native -C target-feature=+$feature" \
    cargo pgrx package --pg-config /usr/lib/postgresql/15/bin/pg_config --out-dir "$pkg" >target/cpu-mismatch.log 2>&1; then
    tail -30 target/cpu-mismatch.log
    echo "FAIL  cpu_features: the build failed (target/cpu-mismatch.log)"
    exit 1
fi

fail=0
check() { if [ "$2" = "$3" ]; then echo "ok    $1"; else echo "FAIL  $1: got '$2', want '$3'"; fail=1; fi; }

# Instructions of one function (objdump), one per line.
insns() { objdump -d --no-show-raw-insn --disassemble="$2" "$1" | grep -E '^ +[0-9a-f]+:' || true; }
# Beyond baseline x86_64: VEX/EVEX (v…) and AVX-512 mask (k…) instructions,
# YMM/ZMM/mask registers, and the SSSE3/SSE4/AES/CLMUL/POPCNT/LZCNT/BMI/
# MOVBE/ADX instructions compilers emit when those features are enabled.
vector() {
    grep -cE '%[yz]mm|%k[0-7]|:[[:space:]]+(v|k)[a-z]|:[[:space:]]+(aes|pclmul|pshufb|palignr|ptest|pblend|pmins|pmaxs|pminu|pmaxu|pinsr[bdq]|pextr[bdq]|pmovsx|pmovzx|pmulld|pcmpeqq|pcmpgtq|pcmp[ei]str|crc32|round|dpp|popcnt|lzcnt|tzcnt|andn|bextr|blsi|blsr|blsmsk|bzhi|pdep|pext|mulx|rorx|sarx|shlx|shrx|movbe|adcx|adox)' || true
}
# The function the first call of _PG_init reaches: direct, or through a GOT
# slot filled by a relocation (RELATIVE: the target's address; GLOB_DAT: its name).
first_call_target() {
    local so=$1 line got rel addr
    line=$(insns "$so" _PG_init | grep -m1 -E '[[:space:]]call')
    if [[ $line =~ \<([A-Za-z_][A-Za-z0-9_.]*)\>$ ]]; then echo "${BASH_REMATCH[1]}"; return; fi
    got=$(echo "$line" | grep -oE '# [0-9a-f]+' | cut -c3-)
    [ -n "$got" ] || { echo "?"; return; }
    rel=$(readelf -rW "$so" | awk -v a="$got" '{ x = $1; sub(/^0+/, "", x) } x == a { print; exit }')
    if [[ $rel == *pazpaz_require_cpu_features* ]]; then echo pazpaz_require_cpu_features; return; fi
    addr=$(echo "$rel" | awk '/R_X86_64_RELATIVE/ { x = $NF; sub(/^0+/, "", x); print x }')
    nm "$so" | awk -v a="$addr" '{ x = $1; sub(/^0+/, "", x) } x == a && a != "" { print $3; exit }'
}

for so in "$PGBIN/../lib/pazpaz_crypto.so" "$pkg/usr/lib/postgresql/15/lib/pazpaz_crypto.so"; do
    so=$(realpath "$so")
    label=${so#"$PWD/"}
    check "$label: the first call of _PG_init is the C check" "$(first_call_target "$so")" pazpaz_require_cpu_features
    until_call=$(insns "$so" _PG_init | sed '/[[:space:]]call/q')
    check "$label: _PG_init uses nothing beyond baseline x86_64 before it" "$(echo "$until_call" | vector)" 0
    magic=$(insns "$so" Pg_magic_func)
    check "$label: Pg_magic_func (called before _PG_init) is there" "$( [ -n "$magic" ] && echo yes)" yes
    check "$label: Pg_magic_func uses nothing beyond baseline x86_64" "$(echo "$magic" | vector)" 0
    c_code=$(for f in pazpaz_require_cpu_features pazpaz_require_cpu_features.cold pazpaz_cpu_lookup pazpaz_cpu_has; do
        insns "$so" "$f"
    done)
    check "$label: the C check is in the library" "$( [ "$(echo "$c_code" | wc -l)" -gt 50 ] && echo yes)" yes
    check "$label: the C check uses nothing beyond baseline x86_64" "$(echo "$c_code" | vector)" 0
done

use_package_overlay "$pkg" cpu-mismatch-root
trap 'pg_stop it_cpu; rm -rf "$PG_BASE/cpu-mismatch-root"' EXIT
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
