#!/usr/bin/env bash
# Provides a PostgreSQL server with headers for one major version:
#     bash scripts/provision.sh [MAJOR]      (default: PG_MAJOR, else 15)
#   15  Debian 12's packages on the host (scripts/setup.sh installs them)
#   16  PyPI pgserver 0.1.4 (PostgreSQL 16.2 with pg_config and the server
#       headers, no contrib modules), unpacked under the cache, run on the host
#   17  a Debian 13 "trixie" chroot (debootstrap) with postgresql-17
#   18  a Debian "testing" chroot with postgresql-18
# and registers its pg_config with cargo-pgrx (in the chroot for 17 and 18).
#
# Everything lives under PAZPAZ_CACHE (default /var/cache/pazpaz_crypto) and
# is kept between runs: a setup is done once and marked done by a marker file
# written as its last step, holding a description of what was set up. A
# missing or different marker (an interrupted or changed setup) or a missing
# pg_config makes it start over from nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
SCRIPTS=$PWD/scripts
MAJOR=${1:-${PG_MAJOR:-15}}
CACHE=${PAZPAZ_CACHE:-/var/cache/pazpaz_crypto}
PGSERVER_VERSION=0.1.4

say() { echo "provision pg$MAJOR: $*" >&2; }

# Deletes a directory made by this script, refusing if anything is mounted
# below it: rm -rf would follow a bind mount into the host's files.
remove_tree() {
    local dir=$1
    [ -e "$dir" ] || return 0
    dir=$(realpath -e "$dir")
    case $dir in "$CACHE"/?*) ;; *) echo "refusing to delete $dir (not under $CACHE)" >&2; return 1 ;; esac
    if awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
        echo "refusing to delete $dir: something is mounted below it (see findmnt -R $dir)" >&2
        return 1
    fi
    rm -rf --one-file-system "$dir"
}

# done_already MARKER DESCRIPTION: the setup that wrote MARKER was the same.
done_already() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

registered_with_pgrx() { # PG_CONFIG [chroot]
    local toml=$HOME/.pgrx/config.toml
    if [ -n "${2:-}" ]; then toml=$2/root/.pgrx/config.toml; fi
    grep -qs "^pg$MAJOR = \"$1\"" "$toml"
}

provision_16() {
    local dir=$CACHE/pg16 marker=$CACHE/pg16.done
    local desc="pypi pgserver==$PGSERVER_VERSION"
    local pg_config=$dir/pgserver/pginstall/bin/pg_config
    if ! done_already "$marker" "$desc" || ! "$pg_config" --version >/dev/null 2>&1; then
        say "unpacking PyPI pgserver $PGSERVER_VERSION into $dir"
        rm -f "$marker"
        remove_tree "$dir"
        mkdir -p "$CACHE" && chmod 755 "$CACHE"
        # Only the PostgreSQL build inside the wheel is used, not its Python
        # code: no dependencies. The wheel's binaries do not depend on the
        # Python version.
        python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --no-compile \
            --only-binary=:all: --target "$dir" "pgserver==$PGSERVER_VERSION"
        chmod -R a+rX "$dir"
        "$pg_config" --version | grep -q '^PostgreSQL 16\.' || { say "$pg_config is not PostgreSQL 16"; return 1; }
        echo "$desc" >"$marker"
    fi
    if ! registered_with_pgrx "$pg_config"; then
        cargo pgrx init --pg16 "$pg_config" >/dev/null
    fi
}

debian_mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
    local uri
    uri=$(sed -n 's/^URIs:[[:space:]]*\(http[^[:space:]]*\/debian\/\?\)[[:space:]]*$/\1/p' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
    echo "${uri:-http://deb.debian.org/debian}"
}

# Name resolution as on the host (apt, cargo), localhost for servers that
# listen on it (cargo pgrx test), the host name for sudo. Done on every run:
# the host's name and resolvers may have changed since the chroot was made.
configure_network() {
    local root=$1 name
    name=$(hostname)
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t%s\n' "$name" >"$root/etc/hosts.new"
    if ! cmp -s "$root/etc/hosts.new" "$root/etc/hosts"; then mv "$root/etc/hosts.new" "$root/etc/hosts"; else rm "$root/etc/hosts.new"; fi
}

# The chroot's postgres user gets the host's uid and gid, so that cluster
# directories under PG_BASE belong to "postgres" on both sides.
add_postgres_user() {
    local root=$1 uid gid
    uid=$(id -u postgres) gid=$(id -g postgres)
    if ! chroot "$root" getent group postgres >/dev/null; then
        if chroot "$root" getent group "$gid" >/dev/null; then
            chroot "$root" groupadd --system postgres
        else
            chroot "$root" groupadd --system --gid "$gid" postgres
        fi
    fi
    if ! chroot "$root" getent passwd postgres >/dev/null; then
        local uidopt=(--uid "$uid")
        chroot "$root" getent passwd "$uid" >/dev/null && uidopt=()
        chroot "$root" useradd --system "${uidopt[@]}" --gid postgres --home-dir /var/lib/postgresql \
            --no-create-home --shell /bin/bash --comment "PostgreSQL administrator" postgres
    fi
}

provision_chroot() {
    local suite=$1 root=$CACHE/chroot-$MAJOR marker=$CACHE/chroot-$MAJOR.done
    local pg_config=/usr/lib/postgresql/$MAJOR/bin/pg_config
    local packages=(postgresql-$MAJOR postgresql-server-dev-$MAJOR clang libclang-dev gcc libc6-dev make
                    pkg-config sudo ca-certificates)
    local desc="debootstrap $suite; ${packages[*]}; pgaudit if available"
    local run=("$SCRIPTS/chroot" "$root")
    if ! done_already "$marker" "$desc" || ! "${run[@]}" "$pg_config" --version >/dev/null 2>&1; then
        local started=$SECONDS mirror
        mirror=$(debian_mirror)
        rm -f "$marker"
        remove_tree "$root"
        if ! command -v debootstrap >/dev/null; then
            say "installing debootstrap"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
                || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
        fi
        say "debootstrap $suite from $mirror into $root"
        mkdir -p "$CACHE" && chmod 755 "$CACHE"
        # In a mount namespace of its own: what it mounts in the chroot while it
        # works vanishes with it, even if it fails.
        unshare --mount --propagation private -- debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$CACHE/chroot-$MAJOR.debootstrap.log" 2>&1 \
            || { tail -30 "$CACHE/chroot-$MAJOR.debootstrap.log" >&2; return 1; }
        if [ "$MAJOR" = 18 ]; then
            # The testing index on the mirror may be past its Valid-Until date.
            echo 'Acquire::Check-Valid-Until "false";' >"$root/etc/apt/apt.conf.d/99pazpaz-no-valid-until"
        fi
        # No service starts inside the chroot, no cluster is made on install.
        printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
        chmod 755 "$root/usr/sbin/policy-rc.d"
        configure_network "$root"
        add_postgres_user "$root"
        local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -qq -o Dpkg::Options::=--force-confold)
        "${run[@]}" apt-get update -qq
        "${run[@]}" "${apt[@]}" install --no-install-recommends postgresql-common >/dev/null
        sed -i 's/^#\?[[:space:]]*create_main_cluster.*/create_main_cluster = false/' \
            "$root/etc/postgresql-common/createcluster.conf"
        grep -q '^create_main_cluster = false' "$root/etc/postgresql-common/createcluster.conf"
        local extra=()
        if "${run[@]}" apt-cache show "postgresql-$MAJOR-pgaudit" >/dev/null 2>&1; then
            extra+=("postgresql-$MAJOR-pgaudit")
        fi
        say "installing ${packages[*]} ${extra[*]}"
        "${run[@]}" "${apt[@]}" install --no-install-recommends "${packages[@]}" "${extra[@]}" >/dev/null
        "${run[@]}" apt-get clean
        [ "$("${run[@]}" id -u postgres)" = "$(id -u postgres)" ] \
            || say "note: postgres has uid $("${run[@]}" id -u postgres) in the chroot, $(id -u postgres) on the host"
        "${run[@]}" "$pg_config" --version | grep -q "^PostgreSQL $MAJOR\." \
            || { say "$pg_config in the chroot is not PostgreSQL $MAJOR"; return 1; }
        echo "$desc" >"$marker"
        say "chroot ready in $((SECONDS - started)) s ($(du -sh --one-file-system "$root" | cut -f1))"
    fi
    configure_network "$root"
    if ! registered_with_pgrx "$pg_config" "$root"; then
        "${run[@]}" cargo pgrx init "--pg$MAJOR" "$pg_config" >/dev/null
    fi
}

case $MAJOR in
    15) bash "$SCRIPTS/setup.sh" ;;
    16) provision_16 ;;
    17) provision_chroot trixie ;;
    18) provision_chroot testing ;;
    *) echo "PostgreSQL $MAJOR is not supported: 15, 16, 17 and 18 are (README, \"Supported versions\")" >&2; exit 2 ;;
esac
