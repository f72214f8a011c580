# Throwaway PostgreSQL clusters for the demo, tests and benchmark.
# Source this file; PostgreSQL refuses to run as root, so servers run as the
# `postgres` user and clients connect over a private Unix socket directory.
# The server version comes from PG_MAJOR (default 15, Debian 12's); where each
# version's server comes from is scripts/provision.sh:
#   15  Debian's packages on the host          (/usr/lib/postgresql/15)
#   16  PyPI pgserver under PAZPAZ_CACHE, run on the host
#   17, 18  a Debian chroot under PAZPAZ_CACHE: the server, its tools and
#       the builds run inside it (scripts/chroot), with PG_BASE and the
#       repository at the same paths as on the host.
#   pg_start NAME PORT [postgresql.conf lines…]   -> sets PGHOST/PGPORT/PGUSER
#   pg_stop NAME
#   pg_dir NAME / pg_log NAME   the cluster's directory / its server log
#   pg_free_port    a free TCP port
#   pg_tool TOOL    prints the command (one word per line) that runs TOOL
#                   (pg_dump, psql, pg_config, …) of PG_MAJOR's server, as
#                   root: a path, or `…/scripts/chroot`, ROOT, a path
#   pg_exec CMD…    runs CMD as root where PG_MAJOR's server lives
#   pg_config_of FLAG   a pg_config value (a path as the server sees it)
#   pg_host_path PATH   that path as the host sees it
#   install_extension / use_package_overlay: see below
PG_MAJOR=${PG_MAJOR:-15}
PG_BASE=${PG_BASE:-/tmp/pazpaz_crypto}
PAZPAZ_CACHE=${PAZPAZ_CACHE:-/var/cache/pazpaz_crypto}
PAZPAZ_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)

case $PG_MAJOR in
    15) PG_ROOT=""; PGBIN=/usr/lib/postgresql/$PG_MAJOR/bin ;;
    16) PG_ROOT=""; PGBIN=$PAZPAZ_CACHE/pg16/pgserver/pginstall/bin ;;
    17 | 18) PG_ROOT=$PAZPAZ_CACHE/chroot-$PG_MAJOR; PGBIN=/usr/lib/postgresql/$PG_MAJOR/bin ;;
    *)
        echo "scripts/pg.sh: PostgreSQL $PG_MAJOR is not supported (PG_MAJOR must be 15, 16, 17 or 18)" >&2
        return 2 2>/dev/null || exit 2
        ;;
esac
PG_SERVER_BIN=$PGBIN    # PGBIN itself may point to an overlay (use_package_overlay)
# A private copy of the installation (use_package_overlay) made by a caller
# whose children source this file again (scripts/test_citus.sh).
if [ -n "${PAZPAZ_OVERLAY_BIN:-}" ]; then PGBIN=$PAZPAZ_OVERLAY_BIN; fi
# The cargo target directory of builds for PG_MAJOR: builds made inside a
# chroot (another C library) have their own under the repository (which the
# chroot sees); builds on the host use the usual one.
if [ -n "$PG_ROOT" ]; then
    PG_TARGET_DIR=$PAZPAZ_REPO/target/pg$PG_MAJOR
else
    PG_TARGET_DIR=${CARGO_TARGET_DIR:-$PAZPAZ_REPO/target}
fi

pg_exec() {
    if [ -n "$PG_ROOT" ]; then "$PAZPAZ_REPO/scripts/chroot" "$PG_ROOT" "$@"; else "$@"; fi
}

# Runs CMD as the server's postgres user.
pg_exec_postgres() { pg_exec runuser -u postgres -- "$@"; }

pg_tool() {
    if [ -n "$PG_ROOT" ]; then printf '%s\n' "$PAZPAZ_REPO/scripts/chroot" "$PG_ROOT"; fi
    printf '%s\n' "$PGBIN/$1"
}

pg_config_of() { pg_exec "$PGBIN/pg_config" "$1"; }

pg_host_path() { echo "${PG_ROOT}$1"; }

pg_dir() { echo "$PG_BASE/$1"; }

# A TCP port on loopback that nothing listens on right now.
pg_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pg_log() { echo "$(pg_dir "$1")/server.log"; }

# uid:gid of postgres where the server runs (the chroots are made with the
# host's, scripts/provision.sh).
pg_owner() {
    if [ -z "${_PG_OWNER:-}" ]; then
        if [ -n "$PG_ROOT" ]; then
            _PG_OWNER=$(chroot "$PG_ROOT" id -u postgres):$(chroot "$PG_ROOT" id -g postgres)
        else
            _PG_OWNER=$(id -u postgres):$(id -g postgres)
        fi
    fi
    echo "$_PG_OWNER"
}

# Fails, saying how to set it up, when PG_MAJOR's server is not installed.
pg_require() {
    if [ ! -x "$(pg_host_path "$PG_SERVER_BIN")/initdb" ]; then
        echo "PostgreSQL $PG_MAJOR is not set up on this machine: bash scripts/setup.sh with PG_MAJOR=$PG_MAJOR" \
             "(or bash scripts/provision.sh $PG_MAJOR) sets it up" >&2
        return 1
    fi
}

pg_start() {
    local name=$1 port=$2; shift 2
    pg_require || return 1
    local dir; dir=$(pg_dir "$name")
    pg_stop "$name" 2>/dev/null || true
    rm -rf "$dir"
    mkdir -p "$dir/sock"
    chown postgres:postgres "$PG_BASE"
    chmod 755 "$PG_BASE"
    chown -R "$(pg_owner)" "$dir"
    pg_exec_postgres "$PGBIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log"; return 1; }
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$dir/sock'"
        echo "fsync = off"
        echo "shared_preload_libraries = 'pazpaz_crypto'"
        local line
        for line in "$@"; do echo "$line"; done
    } >>"$dir/data/postgresql.conf"
    pg_exec_postgres "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
        || { cat "$dir/server.log"; return 1; }
    export PGHOST="$dir/sock" PGPORT="$port" PGUSER=postgres PGDATABASE=postgres
}

pg_stop() {
    local dir; dir=$(pg_dir "$1")
    # Stopping a server that is not running is not an error (and must not
    # end a caller running under set -e, e.g. in an EXIT trap).
    if [ -d "$dir/data" ]; then
        pg_exec_postgres "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    return 0
}

# Builds the extension package (release unless --debug) for PG_MAJOR (inside
# the chroot for 17 and 18) and installs it into that server's directories.
# Files are replaced by rename, so servers that have the old library mapped
# keep running.
install_extension() {
    local mode=${1:---release} out args=()
    pg_require || return 1
    # A package tree per version, emptied first: only this build's files are
    # installed.
    out="$PG_TARGET_DIR/package-${mode#--}"
    [ "$PG_MAJOR" = 15 ] || out+="-pg$PG_MAJOR"
    if [ "$mode" = --debug ]; then args+=(--debug); fi
    rm -rf "$out"
    (cd "$PAZPAZ_REPO" && CARGO_TARGET_DIR=$PG_TARGET_DIR pg_exec \
        cargo pgrx package "${args[@]}" --pg-config "$PGBIN/pg_config" --out-dir "$out" >/dev/null)
    install_package_dir "$out"
}

# Copies a `cargo pgrx package` tree for PG_MAJOR into that server's
# directories (in its chroot for 17 and 18; no Rust involved). Refuses any
# file that is not for this server's library or extension directory.
install_package_dir() {
    local root=$1 f rel lib ext files=()
    lib=$(pg_config_of --pkglibdir) ext=$(pg_config_of --sharedir)/extension
    mapfile -t files < <(cd "$root" && find . -type f | sed 's|^\.||')
    [ ${#files[@]} -gt 0 ] || { echo "install_package_dir: no files in $root" >&2; return 1; }
    for rel in "${files[@]}"; do
        case $rel in
            "$lib"/pazpaz_crypto.so | "$ext"/pazpaz_crypto*) ;;
            *) echo "install_package_dir: $rel is not for PostgreSQL $PG_MAJOR's $lib or $ext" >&2; return 1 ;;
        esac
    done
    for rel in "${files[@]}"; do
        f=$PG_ROOT$rel
        mkdir -p "$(dirname "$f")"
        cp "$root$rel" "$f.tmp.$$" && mv -f "$f.tmp.$$" "$f"
    done
}

# Runs another build of the extension without touching the installation:
# PostgreSQL finds its library and share directories relative to its own
# executable (symlinks resolved), so a copy of bin/ next to symlinked lib/ and
# share/ trees, with this package's three files in place of the installed
# ones, loads that build. The overlay is under PG_BASE, which the chroots of
# 17 and 18 see at the same path.
#   use_package_overlay PACKAGE_DIR NAME   -> sets PGBIN for pg_start/pg_stop
# PACKAGE_DIR is a `cargo pgrx package --out-dir` tree for PG_MAJOR (paths as
# the server sees them).
use_package_overlay() {
    local pkg=$1 overlay=$PG_BASE/$2 f bin lib share
    bin=$(pg_config_of --bindir) lib=$(pg_config_of --pkglibdir) share=$(pg_config_of --sharedir)
    [ -f "$pkg$lib/pazpaz_crypto.so" ] || { echo "no $pkg$lib/pazpaz_crypto.so" >&2; return 2; }
    rm -rf "$overlay"
    mkdir -p "$overlay$lib" "$overlay$share/extension" "$overlay$bin"
    cp -a "$(pg_host_path "$bin")/." "$overlay$bin/"
    # Libraries the programs find relative to themselves (RPATH $ORIGIN/…, as
    # in pgserver's build of 16) are linked at the same place in the overlay.
    local rpath dir
    for rpath in $(for f in "$overlay$bin"/*; do readelf -d "$f" 2>/dev/null; done \
                   | sed -n 's/.*(R\(UN\)\{0,1\}PATH).*\[\(.*\)\]/\2/p' | tr ':' '\n' | grep '^\$ORIGIN/' | sort -u); do
        dir=$(realpath -m "$bin/${rpath#\$ORIGIN/}")
        if [ -e "$(pg_host_path "$dir")" ] && [ ! -e "$overlay$dir" ]; then
            mkdir -p "$(dirname "$overlay$dir")"
            ln -s "$dir" "$overlay$dir"
        fi
    done
    # Links name the files as the server sees them (inside its chroot).
    for f in "$(pg_host_path "$lib")"/*; do ln -s "$lib/${f##*/}" "$overlay$lib/"; done
    for f in "$(pg_host_path "$share")"/*; do
        [ "${f##*/}" = extension ] || ln -s "$share/${f##*/}" "$overlay$share/"
    done
    for f in "$(pg_host_path "$share")"/extension/*; do ln -s "$share/extension/${f##*/}" "$overlay$share/extension/"; done
    rm -f "$overlay$lib"/pazpaz_crypto.so "$overlay$share"/extension/pazpaz_crypto*
    cp "$pkg$lib"/pazpaz_crypto.so "$overlay$lib/"
    cp "$pkg$share"/extension/pazpaz_crypto* "$overlay$share/extension/"
    PGBIN=$overlay$bin
}
