#!/usr/bin/env bash
# Why the production setup preloads the library: without it, a key SET before
# the library is loaded in a backend is an unprotected placeholder, and the
# library says so loudly (a WARNING) when it is loaded.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/pg.sh
trap 'pg_stop it_load' EXIT
# A later shared_preload_libraries line overrides the one pg_start writes.
pg_start it_load 55438 "shared_preload_libraries = ''"
psql -X -q -c "CREATE EXTENSION pazpaz_crypto"

fail=0
check() { if [ "$2" = "$3" ]; then echo "ok    $1"; else echo "FAIL  $1: got '$2', want '$3'"; fail=1; fi; }

key=$(psql -X -At -c "SELECT generate_encryption_key()")
out=$(psql -X -At -v key="$key" 2>&1 <<'SQL'
SELECT set_config('pazpaz.encryption_key', :'key', false) IS NOT NULL;
SELECT current_setting('pazpaz.encryption_key') = :'key' AS placeholder_readable;
LOAD 'pazpaz_crypto';
SHOW pazpaz.encryption_key;
SELECT decrypt_field(encrypt_field('works once loaded'));
SQL
)
check "before the library is loaded, current_setting() returns the key" "$(echo "$out" | sed -n 2p)" t
check "loading the library warns about the earlier SET" \
    "$(echo "$out" | grep -c 'WARNING:  pazpaz.encryption_key was set before the pazpaz_crypto library was loaded')" 1
check "the warning does not contain the key" "$(echo "$out" | grep -c -F "$key")" 0
check "after loading, the value is masked" "$(echo "$out" | grep -c '^(hidden)$')" 1
check "and the key works" "$(echo "$out" | grep -c '^works once loaded$')" 1
check "the server log does not contain the key" "$(grep -c -F "$key" "$(pg_log it_load)" || true)" 0

# Without the library in the backend, PostgreSQL stores a role setting of an
# unknown extension unchecked; once loaded, the check hook refuses it.
unloaded=$(psql -X -At -v key="$key" 2>&1 <<'SQL'
ALTER ROLE postgres SET pazpaz.encryption_key = :'key';
SELECT count(*) FROM pg_db_role_setting WHERE array_to_string(setconfig, ',') LIKE 'pazpaz.encryption_key=%';
SQL
)
check "a backend without the library stores ALTER ROLE … SET pazpaz.encryption_key" "$(echo "$unloaded" | tail -1)" 1
psql -X -q -c "ALTER ROLE postgres RESET pazpaz.encryption_key"
loaded=$(psql -X -At -v key="$key" 2>&1 <<'SQL'
LOAD 'pazpaz_crypto';
ALTER ROLE postgres SET pazpaz.encryption_key = :'key';
SELECT count(*) FROM pg_db_role_setting WHERE array_to_string(setconfig, ',') LIKE 'pazpaz.encryption_key=%';
SQL
)
check "with the library loaded, the same ALTER ROLE is refused" \
    "$(echo "$loaded" | grep -c 'pazpaz.encryption_key cannot be set from ALTER ROLE')" 1
check "… and nothing is stored" "$(echo "$loaded" | tail -1)" 0

[ $fail -eq 0 ] && echo "load_order: all checks passed" || { echo "load_order: FAILED"; exit 1; }
