#!/usr/bin/env bash
# Fuzzes the parsers of the pure core (crates/pazpaz_core) with cargo-fuzz
# (libFuzzer): every target in fuzz/ for a time budget each, and fails on any
# crash, panic, failed assertion, timeout or memory error.
#
#   bash scripts/fuzz.sh [seconds-per-target] [target…]
#       default 60 s per target, all targets (cargo fuzz list)
#   FUZZ_SANITIZER=none bash scripts/fuzz.sh 600     # without AddressSanitizer
#
# Stable toolchain: cargo-fuzz's instrumentation (-Cpasses=sancov-module,
# -Cllvm-args=…) is accepted by stable rustc; only AddressSanitizer needs the
# nightly-only -Zsanitizer=address, which RUSTC_BOOTSTRAP=1 unlocks on stable
# (the ASan runtime ships with the stable x86_64-unknown-linux-gnu std).
# The corpus grows in fuzz/corpus/<target> (kept between runs, not in git);
# fuzz/seeds/<target> holds the hand-made starting inputs; a crashing input
# lands in fuzz/artifacts/<target>/ and is replayed with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs=${1:-60}
shift || true
sanitizer=${FUZZ_SANITIZER:-address}
case "$secs" in '' | *[!0-9]*) echo "usage: $0 [seconds-per-target] [target…]" >&2; exit 2 ;; esac

# libfuzzer-sys compiles libFuzzer itself (C++).
if ! command -v c++ >/dev/null; then
    echo "fuzz: installing g++ (libFuzzer is C++)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
# Fuzz the portable configuration (scripts/cpu_target.sh), whose crypto
# instructions are compile-time features, which cargo-fuzz's own RUSTFLAGS
# would otherwise override.
source ../scripts/cpu_target.sh
export RUSTFLAGS="${RUSTFLAGS:-} $(portable_rustflags)"
# Cargo caches its rustc probes, failures included, without keying them on
# RUSTC_BOOTSTRAP: one earlier `cargo fuzz build` without it would make every
# later ASan build fail with "the option `Z` is only accepted on the nightly
# compiler". The cache is only an optimisation; start from a clean one.
rm -f target/.rustc_info.json

echo "fuzz: building targets (sanitizer: $sanitizer, $(rustc --version))"
build_log=$(mktemp)
if ! cargo fuzz build -s "$sanitizer" >"$build_log" 2>&1; then
    cat "$build_log" >&2
    echo "fuzz: build failed" >&2
    exit 1
fi
rm -f "$build_log"

targets=("$@")
[ ${#targets[@]} -eq 0 ] && mapfile -t targets < <(cargo fuzz list)

failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    dict=()
    case "$t" in
        keyring_json) dict=(-dict=dicts/json.dict) ;;
        encrypted_text_form) dict=(-dict=dicts/encrypted_text_form.dict) ;;
    esac
    log=$(mktemp)
    echo "fuzz: $t for ${secs}s"
    # New inputs go to the first directory (corpus); the seeds are read only.
    set +e
    cargo fuzz run -s "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        "${dict[@]}" >"$log" 2>&1
    rc=$?
    set -e
    # Statistics for the summary (absent when the run stopped at a crash).
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(sed -nE 's/.* cov: ([0-9]+) .*/\1/p' "$log" | tail -1)
    corpus=$(find "corpus/$t" -type f | wc -l)
    summary+=("$(printf '%-16s %12s execs  cov %-5s corpus %-5s %s' "$t" "${execs:-?}" "${cov:-?}" "$corpus" \
        "$([ $rc -eq 0 ] && echo ok || echo "FAILED (exit $rc)")")")
    if [ $rc -ne 0 ]; then
        failed+=("$t")
        echo "fuzz: $t FAILED (exit $rc); last lines of its log:" >&2
        tail -40 "$log" >&2
        ls -l "artifacts/$t" >&2 || true
    fi
    rm -f "$log"
done

printf '\nfuzz summary (%ss per target, sanitizer %s):\n' "$secs" "$sanitizer"
printf '  %s\n' "${summary[@]}"
if ((${#failed[@]})); then
    echo "fuzz: FAILED targets: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: no crashes"
