#!/usr/bin/env bash
# Builds the installable artifact: `cargo pgrx package` (release) for Debian's
# PostgreSQL 15, as a tarball of the extension's three files with paths
# relative to / (no directory entries, root-owned). Install it on a server
# without Rust with:
#     tar --unlink-first -xzf pazpaz_crypto-<version>-pg15-<arch>.tar.gz -C /
# (--unlink-first replaces files by new ones, so running servers keep the
# library they have mapped). Prints the artifact's path on stdout.
#
# Unlike the builds made for this machine, the package is built for the
# portable CPU set of scripts/cpu_target.sh, in its own target directory so
# that the two builds do not undo each other's compilation.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
out=target/package-portable
export CARGO_TARGET_DIR=$PWD/target/portable
source scripts/cpu_target.sh
RUSTFLAGS=$(portable_rustflags)
export RUSTFLAGS
cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$out" >&2
artifact="$PWD/target/pazpaz_crypto-$version-pg15-$(dpkg --print-architecture).tar.gz"
mapfile -t files < <(cd "$out" && find . -type f | sed 's|^\./||' | sort)
tar --owner=0 --group=0 --numeric-owner -czf "$artifact" -C "$out" "${files[@]}"
printf '%s\n' "${files[@]}" | sed 's/^/  /' >&2
echo "$artifact"
