#!/usr/bin/env bash
# Size limits against a real PostgreSQL 15 server, at their exact boundaries:
#   1. jsonb envelopes (format 2): the largest one the extension builds is one
#      PostgreSQL's own jsonb input accepts (jsonb_out → jsonb_in), and one byte
#      of plaintext more is refused with 54000, the limit PostgreSQL's own
#      builder has (checked too);
#   2. the text envelope form of encrypted_text: the largest value that has
#      one round-trips; one byte more is 54000 naming binary COPY (not XX000),
#      and binary COPY then moves it without a key;
#   3. plaintexts near MaxAllocSize (encrypt_field, the encrypted_text input
#      function and cast): the largest accepted one works, one byte more is
#      54000.
# Values up to 1 GB are built with repeat(): the script needs about 6 GB of
# memory and takes about two minutes on 2 cores.
#
# Usage (from the repository root, as root): bash tests/integration/limits.sh
# PAZPAZ_PACKAGE_DIR=<cargo pgrx package dir> runs that build through an
# overlay (scripts/pg.sh) instead of the installed one; LIMITS_PORT sets the port.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/pg.sh
if [ -n "${PAZPAZ_PACKAGE_DIR:-}" ]; then
    use_package_overlay "$PAZPAZ_PACKAGE_DIR" it_limits_overlay || exit 2
fi
trap 'pg_stop it_limits' EXIT
pg_start it_limits "${LIMITS_PORT:-55441}" "log_min_messages = warning" || exit 2
psql -X -q -c "CREATE EXTENSION pazpaz_crypto" || exit 2
K1=$(psql -X -At -c "SELECT generate_encryption_key()")
K2=$(psql -X -At -c "SELECT generate_encryption_key()")
WORK=$(mktemp -d /tmp/it_limits.XXXXXX)
chmod 777 "$WORK"

fail=0
check() { if [ "$2" = "$3" ]; then echo "ok    $1"; else echo "FAIL  $1: got '$2', want '$3'"; fail=1; fi; }
# Runs SQL with keys v1 (write version) and v10; prints the last query's
# result, or "SQLSTATE: message" if it failed.
run() {
    psql -X -At -v k1="$K1" -v k2="$K2" 2>/dev/null <<SQL
\set ON_ERROR_STOP 0
SELECT set_config('pazpaz.encryption_keys', json_build_object('v1', :'k1', 'v10', :'k2')::text, false) IS NULL;
SET pazpaz.encryption_key_version = 'v1';
$1
\if :ERROR
\echo :LAST_ERROR_SQLSTATE: :LAST_ERROR_MESSAGE
\endif
SQL
}
last() { run "$1" | tail -1; }
# The same in a session without keys, for PostgreSQL's own limits: in a
# session that holds keys the log filter redacts the numbers of errors
# (the client gets them in DETAIL, which psql's variables do not show).
last_keyless() {
    psql -X -At 2>/dev/null <<SQL | tail -1
\set ON_ERROR_STOP 0
$1
\if :ERROR
\echo :LAST_ERROR_SQLSTATE: :LAST_ERROR_MESSAGE
\endif
SQL
}

# 1. jsonb envelopes. For version "v1" the container is 39 bytes + the base64
# string: PostgreSQL itself builds 268,435,455 bytes (JENTRY_OFFLENMASK) and
# refuses one more.
check "PostgreSQL builds a 268,435,455-byte jsonb container" \
    "$(last "SELECT octet_length(jsonb_build_object('version', 'v1', 'ciphertext', repeat('A', 268435416))::text);")" 268435451
check "and refuses one byte more (54000)" \
    "$(last_keyless "SELECT jsonb_build_object('version', 'v1', 'ciphertext', repeat('A', 268435417));")" \
    "54000: total size of jsonb object elements exceeds the maximum of 268435455 bytes"
check "the largest envelope (201,326,534-byte plaintext) survives jsonb_out → jsonb_in and decrypts" \
    "$(last "WITH s AS MATERIALIZED (SELECT encrypt_field_versioned(repeat('é', 100663267)) AS e)
             SELECT e::text::jsonb = e, octet_length(e->>'ciphertext'), decrypt_field_versioned(e::text::jsonb) = repeat('é', 100663267) FROM s;")" \
    "t|268435416|t"
check "ASCII plaintext of the same size likewise" \
    "$(last "WITH s AS MATERIALIZED (SELECT encrypt_field_versioned(repeat('a', 201326534)) AS e)
             SELECT (e::text::jsonb = e)::text || '|' || pg_column_size(e) FROM s;")" "true|268435459"
check "one byte more is refused (54000), not stored as a jsonb PostgreSQL cannot read back" \
    "$(last "SELECT encrypt_field_versioned(repeat('a', 201326535)) IS NULL;")" \
    "54000: Plaintext too large to encrypt"
check "the reviewed range up to 201,326,561 bytes is refused too" \
    "$(last "SELECT encrypt_field_versioned(repeat('a', 201326561)) IS NULL;")" \
    "54000: Plaintext too large to encrypt"
check "re-encrypting the largest v1 envelope to a longer version name (v10) is refused (54000)" \
    "$(last "SELECT reencrypt_field_versioned(encrypt_field_versioned(repeat('a', 201326534)), 'v10') IS NULL;")" \
    "54000: Plaintext too large to encrypt"

# 2. The text envelope form: 7 + base64 + NUL must fit in MaxAllocSize; for a
# v1 envelope (32 bytes of overhead) the largest plaintext is 805,306,327 bytes.
check "the largest text form (1,073,741,819 bytes) is produced and read back in envelope mode" \
    "$(last "SET pazpaz.encrypted_text_io = envelope;
             WITH s AS MATERIALIZED (SELECT repeat('a', 805306327)::encrypted_text AS v)
             SELECT octet_length(encrypted_text_out(v)::text), encrypted_text_in(encrypted_text_out(v), 0, -1)::bytea = v::bytea FROM s;")" \
    "1073741819|t"
too_big="54000: encrypted_text value too large for the text envelope form (805306360-byte envelope, at most 805306359): COPY … (FORMAT binary) moves it without a key"
check "one byte more: 54000 naming binary COPY (text output, as pg_dump and COPY use)" \
    "$(last "SET pazpaz.encrypted_text_io = envelope; SELECT concat(repeat('a', 805306328)::encrypted_text) IS NULL;")" "$too_big"
check "and in COPY … TO in envelope mode" \
    "$(last "SET pazpaz.encrypted_text_io = envelope; COPY (SELECT repeat('a', 805306328)::encrypted_text) TO '$WORK/big.txt';")" "$too_big"
check "binary COPY moves it out with a key in plaintext mode" \
    "$(last "COPY (SELECT repeat('a', 805306328)::encrypted_text) TO '$WORK/big.bin' (FORMAT binary);")" "COPY 1"
check "and into a session without a key (no setting needed)" \
    "$(psql -X -At 2>&1 <<SQL
CREATE TEMP TABLE big (v encrypted_text);
COPY big FROM '$WORK/big.bin' (FORMAT binary);
SELECT key_version(v), octet_length(v::bytea) FROM big;
SQL
)" "CREATE TABLE
COPY 1
v1|805306360"
rm -f "$WORK/big.bin"
# The plaintext output of the same value works (its length plus a NUL fits).
check "the plaintext form of that value is returned with a key" \
    "$(last "SELECT octet_length(concat(repeat('a', 805306328)::encrypted_text));")" 805306328

# 3. Plaintexts near MaxAllocSize: the largest accepted plaintext is
# 1,073,739,677 bytes (field::MAX_PLAINTEXT), one more is 54000 on every path.
check "encrypt_field of the largest plaintext works and decrypts" \
    "$(last "WITH s AS MATERIALIZED (SELECT encrypt_field(repeat('a', 1073739677)) AS c)
             SELECT octet_length(c), octet_length(decrypt_field(c)) FROM s;")" "1073739705|1073739677"
check "encrypt_field of one byte more: 54000" \
    "$(last "SELECT encrypt_field(repeat('a', 1073739678)) IS NULL;")" "54000: Plaintext too large to encrypt"
check "text → encrypted_text of the largest plaintext works" \
    "$(last "SELECT octet_length(repeat('a', 1073739677)::encrypted_text::bytea);")" 1073739709
check "text → encrypted_text of one byte more: 54000" \
    "$(last "SELECT repeat('a', 1073739678)::encrypted_text IS NULL;")" "54000: Plaintext too large to encrypt"
check "the input function with a plaintext whose envelope would pass 1 GB - 1: 54000" \
    "$(last "SELECT encrypted_text_in(repeat('a', 1073741000)::cstring, 0, -1) IS NULL;")" "54000: Plaintext too large to encrypt"
check "encrypt_field_versioned of a plaintext near MaxAllocSize: 54000" \
    "$(last "SELECT encrypt_field_versioned(repeat('a', 1073739677)) IS NULL;")" "54000: Plaintext too large to encrypt"
check "the server log has no XX000-class internal error" \
    "$(grep -c 'invalid memory alloc request size' "$(pg_log it_limits)")" 0

rm -rf "$WORK"
[ $fail -eq 0 ] && echo "limits: all checks passed"
exit $fail
