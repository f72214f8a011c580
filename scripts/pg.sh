# Throwaway PostgreSQL clusters for the demo, tests and benchmark.
# Source this file; PostgreSQL refuses to run as root, so servers run as the
# `postgres` user and clients connect over a private Unix socket directory.
# The server version comes from PG_MAJOR (default 15, Debian 12's).
#   pg_start NAME PORT [postgresql.conf lines…]   -> sets PGHOST/PGPORT/PGUSER
#   pg_stop NAME
#   pg_tool TOOL    prints the command (one word per line) that runs TOOL
#                   (pg_dump, psql, pg_config, …) of PG_MAJOR's server
PG_MAJOR=${PG_MAJOR:-15}
PGBIN=/usr/lib/postgresql/$PG_MAJOR/bin
PG_BASE=${PG_BASE:-/tmp/pazpaz_crypto}

pg_dir() { echo "$PG_BASE/$1"; }

pg_start() {
    local name=$1 port=$2; shift 2
    local dir; dir=$(pg_dir "$name")
    pg_stop "$name" 2>/dev/null || true
    rm -rf "$dir"
    mkdir -p "$dir/sock"
    chown -R postgres:postgres "$PG_BASE" "$dir"
    chmod 755 "$PG_BASE"
    runuser -u postgres -- "$PGBIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
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
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
        || { cat "$dir/server.log"; return 1; }
    export PGHOST="$dir/sock" PGPORT="$port" PGUSER=postgres PGDATABASE=postgres
}

pg_stop() {
    local dir; dir=$(pg_dir "$1")
    # Stopping a server that is not running is not an error (and must not
    # end a caller running under set -e, e.g. in an EXIT trap).
    if [ -d "$dir/data" ]; then
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    return 0
}

pg_tool() { printf '%s\n' "$PGBIN/$1"; }

pg_log() { echo "$(pg_dir "$1")/server.log"; }

# Builds the extension package (release unless --debug) and installs it into
# Debian's PostgreSQL 15. Files are replaced by rename, so servers that have
# the old library mapped keep running.
install_extension() {
    local mode=${1:---release} out
    out="$PWD/target/package-${mode#--}"
    if [ "$mode" = --debug ]; then
        cargo pgrx package --debug --pg-config "$PGBIN/pg_config" --out-dir "$out" >/dev/null
    else
        cargo pgrx package --pg-config "$PGBIN/pg_config" --out-dir "$out" >/dev/null
    fi
    install_package_dir "$out"
}

# Copies a `cargo pgrx package` tree into / (no Rust involved).
install_package_dir() {
    local root=$1 f dest
    while IFS= read -r f; do
        dest="/${f#"$root"/}"
        mkdir -p "$(dirname "$dest")"
        cp "$f" "$dest.tmp.$$" && mv -f "$dest.tmp.$$" "$dest"
    done < <(find "$root" -type f)
}

# Runs another build of the extension without touching /usr: PostgreSQL finds
# its library and share directories relative to its own executable (symlinks
# resolved), so a copy of bin/ next to symlinked lib/ and share/ trees, with
# this package's three files in place of the installed ones, loads that build.
#   use_package_overlay PACKAGE_DIR NAME   -> sets PGBIN for pg_start/pg_stop
use_package_overlay() {
    local pkg=$1 overlay=$PG_BASE/$2 f
    local lib=/usr/lib/postgresql/15/lib share=/usr/share/postgresql/15
    [ -f "$pkg$lib/pazpaz_crypto.so" ] || { echo "no $pkg$lib/pazpaz_crypto.so" >&2; return 2; }
    rm -rf "$overlay"
    mkdir -p "$overlay$lib" "$overlay$share/extension" "$overlay/usr/lib/postgresql/15/bin"
    cp -a /usr/lib/postgresql/15/bin/. "$overlay/usr/lib/postgresql/15/bin/"
    for f in "$lib"/*; do ln -s "$f" "$overlay$lib/"; done
    for f in "$share"/*; do [ "$(basename "$f")" = extension ] || ln -s "$f" "$overlay$share/"; done
    for f in "$share"/extension/*; do ln -s "$f" "$overlay$share/extension/"; done
    rm -f "$overlay$lib"/pazpaz_crypto.so "$overlay$share"/extension/pazpaz_crypto*
    cp "$pkg$lib"/pazpaz_crypto.so "$overlay$lib/"
    cp "$pkg$share"/extension/pazpaz_crypto* "$overlay$share/extension/"
    PGBIN=$overlay/usr/lib/postgresql/15/bin
}
