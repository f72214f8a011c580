#!/usr/bin/env bash
# What the CPU target of a build costs (README "CPU targets"): the same code
# built three ways on x86_64,
#   native    -C target-cpu=native (.cargo/config.toml, builds for this machine)
#   portable  the portable set of scripts/cpu_target.sh (scripts/package.sh)
#   dispatch  baseline x86-64 only: every crypto instruction chosen at run time
# measured by the cipher alone (crates/pazpaz_core/examples/cipher_cost.rs,
# interleaved rounds) and by the benchmark's scan, encrypt and 5,000-byte
# cases (scripts/bench.sh with each build's package, one after another).
#   bash scripts/cpu_cost.sh [--rows N] [--runs R]   (default 200,000 rows, 5 runs)
# Builds land in target/ (native) and target/cpu-<variant> (cached);
# results in target/cpu-cost/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
source scripts/pg.sh
source scripts/cpu_target.sh
[ "$(uname -m)" = x86_64 ] || { echo "cpu_cost: x86_64 only" >&2; exit 2; }
rows=200000 runs=5
while [ $# -gt 0 ]; do
    case $1 in
        --rows) rows=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        *) echo "usage: $0 [--rows N] [--runs R]" >&2; exit 2 ;;
    esac
done
variants=(native portable dispatch)
# native is the ordinary build (target/, .cargo/config.toml's flags).
flags() {
    case $1 in
        native) ;;
        portable) portable_rustflags ;;
        dispatch) echo "-C target-cpu=x86-64" ;;
    esac
}
out=$PWD/target/cpu-cost
mkdir -p "$out"
target_dir() { if [ "$1" = native ]; then echo "$PWD/target"; else echo "$PWD/target/cpu-$1"; fi; }
build() {
    local v=$1; shift
    if [ "$v" = native ]; then
        env -u CARGO_ENCODED_RUSTFLAGS -u RUSTFLAGS CARGO_TARGET_DIR="$(target_dir "$v")" "$@"
    else
        env -u CARGO_ENCODED_RUSTFLAGS CARGO_TARGET_DIR="$(target_dir "$v")" RUSTFLAGS="$(flags "$v")" "$@"
    fi
}
for v in "${variants[@]}"; do
    echo "cpu_cost: building $v (${v/native/-C target-cpu=native}$(flags "$v"))" >&2
    build "$v" cargo build -q --release -p pazpaz_core --example cipher_cost
    build "$v" cargo pgrx package --pg-config "$(pg_tool pg_config | tail -1)" --out-dir "$out/package-$v" \
        >"$out/build-$v.log" 2>&1 || { tail -20 "$out/build-$v.log"; exit 1; }
done

echo "== cipher alone: ns per format-1 operation, median of rounds" | tee "$out/cipher.txt"
for round in 1 2 3; do
    for v in "${variants[@]}"; do
        echo "$v $("$(target_dir "$v")/release/examples/cipher_cost" 3 | tr '\n' ' ')" | tee -a "$out/cipher.txt"
    done
done

for v in "${variants[@]}"; do
    echo "== benchmark, $v build" >&2
    BENCH_PACKAGE_DIR="$out/package-$v" bash scripts/bench.sh --rows "$rows" --runs "$runs" \
        --only scan,encrypt,large --out "$out/bench-$v.json" >"$out/bench-$v.txt" 2>&1 \
        || { tail -30 "$out/bench-$v.txt"; exit 1; }
done
# The machine is shared: each build is judged by its ratios to the baselines
# measured in its own run (pgcrypto, the scan floor), then compared.
python3 - "$out" "${variants[@]}" <<'PY' | tee "$out/summary.txt"
import json, sys
out, variants = sys.argv[1], sys.argv[2:]
tables = {v: {(r["case"], r["baseline"]): r["ratio"] for r in json.load(open(f"{out}/bench-{v}.json"))["table"]
              if r["ratio"] is not None} for v in variants}
print(f"{'case':<16}{'baseline':<22}" + "".join(f"{v:>10}" for v in variants)
      + "".join(f"{v + '/native':>17}" for v in variants[1:]))
for key, base in tables["native"].items():
    if not all(key in t for t in tables.values()):
        continue
    ratios = [tables[v][key] for v in variants]
    print(f"{key[0]:<16}{key[1]:<22}" + "".join(f"{r:>10.3f}" for r in ratios)
          + "".join(f"{r / base:>17.2f}" for r in ratios[1:]))
PY
