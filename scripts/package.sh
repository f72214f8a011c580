#!/usr/bin/env bash
# Builds the installable artifact: `cargo pgrx package` (release) for one
# PostgreSQL version, as a tarball of the extension's three files with paths
# relative to / (no directory entries, root-owned):
#     bash scripts/package.sh [MAJOR]      (default: PG_MAJOR, else 15)
# The build uses that version's pg_config, headers and paths (scripts/pg.sh;
# inside its chroot for 17 and 18). Install it on a server without Rust with:
#     tar --unlink-first -xzf pazpaz_crypto-<version>-pg<MAJOR>-<arch>.tar.gz -C /
# (--unlink-first replaces files by new ones, so running servers keep the
# library they have mapped). Prints the artifact's path on stdout.
#
# Unlike the builds made for this machine, the package is built for the
# portable CPU set of scripts/cpu_target.sh, in its own target directory so
# that the two builds do not undo each other's compilation.
set -euo pipefail
cd "$(dirname "$0")/.."
export PG_MAJOR=${1:-${PG_MAJOR:-15}}
bash scripts/setup.sh >/dev/null
source scripts/pg.sh
PG_CONFIG=$PGBIN/pg_config
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
# 15 keeps the directories it always had. Each other version has a package
# tree of its own; builds made in a chroot (17, 18) also have their own target
# directory (under the repository, which the chroot sees).
sfx=$([ "$PG_MAJOR" = 15 ] || echo "-pg$PG_MAJOR")
out=target/package-portable$sfx
export CARGO_TARGET_DIR=$PWD/target/portable$([ -z "$PG_ROOT" ] || echo "$sfx")
source scripts/cpu_target.sh
RUSTFLAGS=$(portable_rustflags)
export RUSTFLAGS
rm -rf "$out"     # the artifact holds this build's files only
pg_exec cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$out" >&2
artifact="$PWD/target/pazpaz_crypto-$version-pg$PG_MAJOR-$(dpkg --print-architecture).tar.gz"
mapfile -t files < <(cd "$out" && find . -type f | sed 's|^\./||' | sort)
tar --owner=0 --group=0 --numeric-owner -czf "$artifact" -C "$out" "${files[@]}"
printf '%s\n' "${files[@]}" | sed 's/^/  /' >&2
echo "$artifact"
