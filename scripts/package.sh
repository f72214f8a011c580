#!/usr/bin/env bash
# Builds the installable artifact: `cargo pgrx package` (release) for Debian's
# PostgreSQL 15, as a tarball of absolute paths to extract over / on a server
# (no Rust needed there):  tar -xzf pazpaz_crypto-*.tar.gz -C /
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
out=target/package-release
cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$out" >/dev/null
artifact="target/pazpaz_crypto-$version-pg15-$(dpkg --print-architecture).tar.gz"
tar -czf "$artifact" -C "$out" usr
echo "$artifact"
tar -tzf "$artifact" | grep -v '/$'
