#!/usr/bin/env bash
# Integration test of the encrypted_text type against real PostgreSQL 15
# servers (library in shared_preload_libraries), through real clients: psql,
# psycopg 3, pg_dump / pg_restore, COPY, logical replication.
#
#   1. round trips: literal, bound parameters, COPY text/csv/binary, UPDATE,
#      INSERT … SELECT
#   2. no plaintext in the table's files (heap and TOAST) or anywhere in the
#      data directory, against a plain-text control table
#   3. without a key: reading fails naming the setting; key_version and
#      ::bytea still work
#   4. typmod enforcement, tampering with ciphertext and with the header,
#      rotation with reencrypt()
#   5. ALTER COLUMN … TYPE migrations forward and back on 100,000 rows
#   6. pg_dump → restore: keyless (envelope mode) and with a key (plaintext
#      mode), and an envelope dump restored without the setting must fail
#   7. binary COPY between servers without keys; logical replication
#   8. constraint violations: the client sees the row, the server log not
#
# Usage (from the repository root, as root): bash tests/integration/encrypted_text.sh
# Exits non-zero and lists the failed checks if any check fails.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/pg.sh

T0=$SECONDS
WORK=$(mktemp -d /tmp/it_enc.XXXXXX)
chmod 755 "$WORK"

cleanup() {
    pg_stop it_enc2   # the subscriber first, so it does not retry against a stopped publisher
    pg_stop it_enc
    rm -rf "$WORK"
}
trap cleanup EXIT

# ---- assertions -------------------------------------------------------------

PASSED=0
FAILED=()

# Keys live only in the environment; never let one reach the test output.
scrub() {
    local s=$1 k
    for k in "${IT_KEY:-}" "${IT_KEY2:-}"; do
        [ -n "$k" ] && s=${s//"$k"/[key]}
    done
    printf '%s' "$s"
}
ok()  { PASSED=$((PASSED + 1)); printf '  ok    %s\n' "$1"; }
bad() {
    FAILED+=("$1")
    printf '  FAIL  %s\n' "$1"
    if [ $# -gt 1 ]; then scrub "$2" | head -n 40 | cut -c 1-240 | sed 's/^/        | /'; echo; fi
}
die() { bad "$1" "${2:-}"; echo "aborting: setup failed"; exit 1; }
section() { printf '\n== %s  (t=%ds)\n' "$1" $((SECONDS - T0)); }
note() { printf '  note  %s\n' "$1"; }

# check DESC CMD…: CMD must succeed.
check() { local d=$1; shift; if "$@"; then ok "$d"; else bad "$d" "command failed: $*"; fi; }
# check_eq DESC EXPECTED ACTUAL
check_eq() {
    if [ "$2" == "$3" ]; then ok "$1"; else bad "$1" "expected: $2"$'\n'"actual:   $3"; fi
}
# check_ne DESC A B: A and B differ.
check_ne() {
    if [ "$2" != "$3" ]; then ok "$1"; else bad "$1" "both are: $2"; fi
}
# check_ge DESC MIN ACTUAL (integers)
check_ge() {
    if [[ "$3" =~ ^[0-9]+$ ]] && [ "$3" -ge "$2" ]; then ok "$1"; else bad "$1" "expected >= $2, got: $3"; fi
}
# check_has DESC HAYSTACK NEEDLE / check_lacks DESC HAYSTACK NEEDLE
check_has() {
    if grep -qF -- "$3" <<<"$2"; then ok "$1"; else bad "$1" "'$3' not found in:"$'\n'"$2"; fi
}
check_lacks() {
    if ! grep -qF -- "$3" <<<"$2"; then ok "$1"; else bad "$1" "'$3' unexpectedly found in:"$'\n'"$(grep -F -- "$3" <<<"$2" | head -n 5)"; fi
}
# check_file_has / check_file_lacks DESC FILE NEEDLE (binary-safe, prints no content)
check_file_has() {
    local n; n=$(count_in "$3" "$2")
    if [ "$n" -gt 0 ]; then ok "$1"; else bad "$1" "'$3' not found in $2"; fi
}
check_file_lacks() {
    local n; n=$(count_in "$3" "$2")
    if [ "$n" -eq 0 ]; then ok "$1"; else bad "$1" "'$3' found $n times in $2"; fi
}

# ---- SQL helpers ------------------------------------------------------------

# psql: no psqlrc, quiet, unaligned, tuples only, stop at the first error.
psql_() { psql -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }

# The key is handed to the session the way an application does it (a
# set_config() call), read by psql from the environment so that it is on no
# command line and in no file. These files hold no key material.
cat >"$WORK/key.psql" <<'EOF'
\getenv it_key IT_KEY
SELECT set_config('pazpaz.encryption_key', :'it_key', false) \g /dev/null
\unset it_key
EOF
# keyring_file NAME V2_FROM WRITE_VERSION: keyring {"v1": IT_KEY, "v2": <V2_FROM>}
keyring_file() {
    cat >"$WORK/$1.psql" <<EOF
\\getenv k1 IT_KEY
\\getenv k2 $2
SELECT set_config('pazpaz.encryption_keys', json_build_object('v1', :'k1', 'v2', :'k2')::text, false) \\g /dev/null
SELECT set_config('pazpaz.encryption_key_version', '$3', false) \\g /dev/null
\\unset k1
\\unset k2
EOF
}

# pgopts OPTIONS CMD…: CMD with PGOPTIONS (session settings for clients that
# cannot run SQL first, like pg_dump); set by the shell, so on no command line.
pgopts() { local o=$1; shift; PGOPTIONS=$o "$@"; }
# q DB [psql options…]: SQL on stdin, in a session with the key set.
q()  { local db=$1; shift; psql_ -d "$db" "$@" -f "$WORK/key.psql" -f -; }
# qn DB [psql options…]: SQL on stdin, in a session without any key.
qn() { local db=$1; shift; psql_ -d "$db" "$@" -f -; }

# run DESC CMD…: CMD (usually q/qn with SQL on stdin) must succeed; its output
# is shown if it does not.
run() {
    local d=$1 out; shift
    if out=$("$@" 2>&1); then ok "$d"; else bad "$d" "$out"; fi
}
# expect_error DESC SQLSTATE TEXT CMD…: CMD (q/qn, SQL on stdin) must fail
# with that SQLSTATE and a message containing TEXT. At VERBOSITY verbose psql
# prints "ERROR:  <sqlstate>: <message>".
expect_error() {
    local d=$1 state=$2 text=$3 out rc; shift 3
    out=$("$@" -v VERBOSITY=verbose 2>&1); rc=$?
    if [ $rc -ne 0 ] && grep -qF "ERROR:  $state: " <<<"$out" && grep -qF -- "$text" <<<"$out"; then
        ok "$d"
    else
        bad "$d" "wanted psql to fail with ERROR $state containing '$text'; exit $rc, output:"$'\n'"$out"
    fi
}

# count_in NEEDLE PATH…: occurrences of NEEDLE (as bytes) in the files, in a
# directory tree, or in relation files given as a path without extension (then
# its segments .1, .2… and forks _fsm, _vm count too).
count_in() {
    python3 - "$@" <<'PY'
import glob, os, sys
needle, paths = sys.argv[1].encode(), sys.argv[2:]
files = []
for p in paths:
    if os.path.isdir(p):
        files += [os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs]
    else:
        files += [p] + glob.glob(glob.escape(p) + ".*") + glob.glob(glob.escape(p) + "_*")
total = 0
for f in files:
    try:
        with open(f, "rb") as fh:
            total += fh.read().count(needle)
    except (FileNotFoundError, IsADirectoryError):
        pass  # a temporary file that went away
print(total)
PY
}

rand_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# wait_until DESC SECONDS CMD…: polls until CMD prints "t".
wait_until() {
    local d=$1 secs=$2 i; shift 2
    for ((i = 0; i < secs * 5; i++)); do
        [ "$("$@" 2>/dev/null)" = t ] && return 0
        sleep 0.2
    done
    return 1
}

# ---- servers ----------------------------------------------------------------

section "setup: two throwaway clusters"
P1=55440 P2=55441
# it_enc2 is the subscriber and the target of cross-server copies.
pg_start it_enc2 $P2 >/dev/null || die "start cluster it_enc2"
H2=$PGHOST
# it_enc publishes (wal_level = logical); logging settings stay at their
# defaults (log_min_messages = warning, log_min_error_statement = error).
pg_start it_enc $P1 "wal_level = logical" >/dev/null || die "start cluster it_enc"
H1=$PGHOST
export PGHOST=$H1 PGPORT=$P1 PGUSER=postgres
C2=(-h "$H2" -p "$P2")
DATA1=$(pg_dir it_enc)/data
LOG1=$(pg_log it_enc)
LOG2=$(pg_log it_enc2)

psql_ -d postgres -c "CREATE DATABASE it" || die "create database it"
psql_ -d it -c "CREATE EXTENSION pazpaz_crypto" || die "create extension"
# Keys are made at run time and exported only for psql's \getenv and psycopg.
IT_KEY=$(psql_ -d it -c "SELECT generate_encryption_key()") || die "generate key"
IT_KEY2=$(psql_ -d it -c "SELECT generate_encryption_key()") || die "generate key"
export IT_KEY IT_KEY2
[ ${#IT_KEY} -eq 44 ] && [ "$IT_KEY" != "$IT_KEY2" ] || die "generated keys look wrong"

# Reference values: ASCII, multibyte UTF-8, empty, NULL, characters that COPY
# and CSV must escape (tab, newline, backslash, a literal \N), a plaintext that
# merely starts like the envelope text form, and a value large enough to be
# stored out of line.
q it >/dev/null <<'SQL' || die "create reference table"
CREATE TABLE ref (id int PRIMARY KEY, v text);
INSERT INTO ref VALUES
  (1, 'hello, world'),
  (2, 'Grüße, Zoë — 日本語のテキスト — 🙂🚀'),
  (3, ''),
  (4, NULL),
  (5, E'tab\there, new\nline, back\\slash, "double", ''single'', comma, \\N'),
  (6, 'pazpaz:this plaintext merely starts like an envelope'),
  (7, repeat('Ωmega-日本-🙂 ', 1500));
SQL

# Rows of TABLE (id, v encrypted_text) in database `it` that do not decrypt to
# the reference value, or whose stored bytes are not a v1 envelope of the
# expected size (2 + len("v1") header, 12 nonce, 16 tag: plaintext + 32).
mismatches() {
    q it <<SQL 2>&1
SELECT count(*) FROM ref r FULL JOIN $1 t USING (id)
 WHERE r.id IS NULL OR t.id IS NULL
    OR r.v IS DISTINCT FROM t.v::text
    OR (t.v IS NOT NULL AND (key_version(t.v) <> 'v1' OR octet_length(t.v::bytea) <> octet_length(r.v) + 32));
SQL
}
check_ref() { check_eq "$1" 0 "$(mismatches "$2")"; }

# ---- 1. round trips ---------------------------------------------------------
section "1. round trips"

# INSERT with literals: the unknown-typed literal goes through the type's input
# function (\gexec runs one generated INSERT per reference row).
run "INSERT with literals" q it <<'SQL'
CREATE TABLE rt_literal (id int PRIMARY KEY, v encrypted_text);
SELECT format('INSERT INTO rt_literal VALUES (%s, %L)', id, v) FROM ref ORDER BY id \gexec
SQL
check_ref "literals decrypt to the reference values" rt_literal

# Bound parameters from psycopg 3 (server-side binding: psycopg.Cursor sends
# the query and the parameters separately). A str parameter goes as type
# "unknown" (the server types it encrypted_text), %s::text as text (then the
# assignment cast), %b as text in binary format. The last table is loaded with
# binary encrypted_text parameters (the type's receive function) made from the
# envelopes returned by a binary-format query (the send function).
PY_OUT=$(python3 - <<'PY' 2>&1
import os
import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

with psycopg.connect(dbname="it", autocommit=True) as conn:
    conn.execute("SELECT set_config('pazpaz.encryption_key', %s, false)", (os.environ["IT_KEY"],))
    ref = conn.execute("SELECT id, v FROM ref ORDER BY id").fetchall()
    cur = conn.cursor()
    print(f"server_side_binding={int(type(cur) is psycopg.Cursor)}")
    for table, ph in (("rt_param_unknown", "%s"), ("rt_param_text", "%s::text"), ("rt_param_binary", "%b")):
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v encrypted_text)")
        for id_, v in ref:
            cur.execute(f"INSERT INTO {table} VALUES (%s, {ph})", (id_, v))
        got = conn.execute(f"SELECT id, v FROM {table} ORDER BY id").fetchall()
        print(f"{table}_client_read_equal={int(got == ref)}")

    # Binary results: encrypted_text comes out as its envelope, equal to ::bytea.
    rows = conn.cursor(binary=True).execute(
        "SELECT id, v, v::bytea FROM rt_param_unknown ORDER BY id").fetchall()
    header = bytes([1, 2]) + b"v1"  # format 1, version name of length 2
    print(f"binary_send_is_envelope={int(all(a == b for _, a, b in rows) and rows[0][1][:4] == header)}")

    class Envelope(bytes):
        pass

    class EnvelopeDumper(Dumper):
        format = Format.BINARY
        oid = conn.execute("SELECT 'encrypted_text'::regtype::oid").fetchone()[0]

        def dump(self, obj):
            return bytes(obj)

    conn.adapters.register_dumper(Envelope, EnvelopeDumper)
    cur = conn.cursor()  # a cursor takes the connection's adapters when it is made
    conn.execute("CREATE TABLE rt_param_recv (id int PRIMARY KEY, v encrypted_text)")
    failed = []
    for id_, env, _ in rows:
        # (psycopg sends None without a binary format; see below for that case)
        try:
            cur.execute("INSERT INTO rt_param_recv VALUES (%s, %b)", (id_, None if env is None else Envelope(env)))
        except psycopg.Error as e:
            failed.append(f"id {id_} ({'NULL' if env is None else 'envelope'}): {e.diag.message_primary}")
    print(f"recv_failed_rows={'; '.join(failed) or 'none'}")
    same = conn.execute("""SELECT count(*) FROM rt_param_recv a JOIN rt_param_unknown b USING (id)
                           WHERE a.v::bytea IS NOT DISTINCT FROM b.v::bytea""").fetchone()[0]
    print(f"recv_keeps_envelope={int(same == len(ref))}")

    # A binary-format NULL parameter typed encrypted_text, at the protocol
    # level: PostgreSQL then calls the (non-strict) receive function with no
    # data and expects NULL back.
    conn.execute("CREATE TEMP TABLE recv_null (v encrypted_text)")
    r = conn.pgconn.exec_params(b"INSERT INTO recv_null VALUES ($1)", [None], [EnvelopeDumper.oid], [1])
    ok = r.status == psycopg.pq.ExecStatus.COMMAND_OK
    print(f"binary_null_param={'ok' if ok else (r.error_message or b'').decode().strip().replace(chr(10), ' ')}")
PY
)
check_eq "psycopg uses server-side binding" 1 "$(grep -o 'server_side_binding=.*' <<<"$PY_OUT" | cut -d= -f2)"
for t in rt_param_unknown rt_param_text rt_param_binary; do
    check_eq "psycopg $t: values read back by the client are the ones sent" 1 \
        "$(grep -o "${t}_client_read_equal=.*" <<<"$PY_OUT" | cut -d= -f2)"
    check_ref "psycopg $t: stored values decrypt to the reference values" $t
done
check_eq "binary result format returns the envelope (send)" 1 "$(grep -o 'binary_send_is_envelope=.*' <<<"$PY_OUT" | cut -d= -f2)"
check_eq "binary encrypted_text parameters are accepted (recv)" none "$(grep -o 'recv_failed_rows=.*' <<<"$PY_OUT" | cut -d= -f2-)"
check_eq "binary encrypted_text parameters store the envelope unchanged (recv)" 1 "$(grep -o 'recv_keeps_envelope=.*' <<<"$PY_OUT" | cut -d= -f2)"
check_ref "rows loaded through recv decrypt to the reference values" rt_param_recv
check_eq "a binary-format NULL parameter of type encrypted_text is accepted (recv of NULL)" ok \
    "$(grep -o 'binary_null_param=.*' <<<"$PY_OUT" | cut -d= -f2-)"
grep -q '=' <<<"$PY_OUT" || bad "psycopg script ran" "$PY_OUT"
grep -q 'Traceback' <<<"$PY_OUT" && bad "psycopg script ran to the end" "$PY_OUT"

# COPY in text and CSV format: plaintext in (encrypts), plaintext out (decrypts).
for fmt in text csv; do
    run "COPY FROM/TO, format $fmt" q it <<SQL
\copy (SELECT id, v FROM ref ORDER BY id) TO '$WORK/ref.$fmt' WITH (FORMAT $fmt)
CREATE TABLE rt_copy_$fmt (id int PRIMARY KEY, v encrypted_text);
\copy rt_copy_$fmt FROM '$WORK/ref.$fmt' WITH (FORMAT $fmt)
\copy rt_copy_$fmt TO '$WORK/out.$fmt' WITH (FORMAT $fmt)
SQL
    check_ref "COPY FROM (format $fmt) stores the reference values" rt_copy_$fmt
    # Rows come back in insertion order; the files must be byte-identical.
    check "COPY TO (format $fmt) writes exactly what COPY FROM read" cmp -s "$WORK/ref.$fmt" "$WORK/out.$fmt"
done

# Binary COPY moves envelopes: out of one table and into another, unchanged.
# First the rows with a value, then the NULL row on its own (a NULL field makes
# PostgreSQL call the non-strict receive function with no data).
run "COPY FROM/TO, format binary (rows with a value)" q it <<SQL
CREATE TABLE rt_copy_binary (id int PRIMARY KEY, v encrypted_text);
\copy (SELECT * FROM rt_literal WHERE v IS NOT NULL) TO '$WORK/rt.bin' WITH (FORMAT binary)
\copy rt_copy_binary FROM '$WORK/rt.bin' WITH (FORMAT binary)
SQL
run "COPY FROM/TO, format binary (the NULL row)" q it <<SQL
\copy (SELECT * FROM rt_literal WHERE v IS NULL) TO '$WORK/rt_null.bin' WITH (FORMAT binary)
\copy rt_copy_binary FROM '$WORK/rt_null.bin' WITH (FORMAT binary)
SQL
check_ref "binary COPY round trip decrypts to the reference values" rt_copy_binary
check_eq "binary COPY round trip keeps every envelope byte for byte" 0 "$(q it <<'SQL' 2>&1
SELECT count(*) FROM rt_literal a JOIN rt_copy_binary b USING (id)
 WHERE a.v::bytea IS DISTINCT FROM b.v::bytea;
SQL
)"
check_file_lacks "binary COPY file holds no plaintext" "$WORK/rt.bin" "hello, world"
# A binary COPY of plain text into an encrypted_text column is refused (the
# receive function checks the envelope), not stored as if it were ciphertext.
q it >/dev/null 2>&1 <<SQL
\copy (SELECT id, v FROM ref WHERE id = 1) TO '$WORK/plain.bin' WITH (FORMAT binary)
CREATE TABLE rt_copy_refused (id int PRIMARY KEY, v encrypted_text);
SQL
expect_error "binary COPY of plain text into encrypted_text is refused" 22P03 "Invalid encrypted_text envelope" q it <<SQL
\copy rt_copy_refused FROM '$WORK/plain.bin' WITH (FORMAT binary)
SQL

# UPDATE: from placeholders to the reference values (text → encrypted_text
# assignment), and a literal UPDATE of one row and back.
run "UPDATE from a text column" q it <<'SQL'
CREATE TABLE rt_update (id int PRIMARY KEY, v encrypted_text);
INSERT INTO rt_update SELECT id, 'placeholder' FROM ref;
UPDATE rt_update t SET v = r.v FROM ref r WHERE r.id = t.id;
SQL
check_eq "UPDATE with a literal" "Übergangswert" "$(q it <<<"UPDATE rt_update SET v = 'Übergangswert' WHERE id = 1; SELECT v FROM rt_update WHERE id = 1;" 2>&1)"
run "UPDATE with a literal, back" q it <<<"UPDATE rt_update SET v = 'hello, world' WHERE id = 1;"
check_ref "UPDATE stores the reference values" rt_update

# INSERT … SELECT from a text column (assignment cast text → encrypted_text).
run "INSERT … SELECT from a text column" q it <<'SQL'
CREATE TABLE rt_insert_select (id int PRIMARY KEY, v encrypted_text);
INSERT INTO rt_insert_select SELECT id, v FROM ref;
SQL
check_ref "INSERT … SELECT stores the reference values" rt_insert_select

# Every encryption draws a fresh nonce: 1000 encryptions of one plaintext give
# 1000 different envelopes that all decrypt to it.
check_eq "same plaintext encrypted 1000 times: 1000 distinct envelopes, all decrypt" "1000|1000" "$(q it <<'SQL' 2>&1
SELECT count(DISTINCT e::bytea), count(*) FILTER (WHERE e::text = 'same')
  FROM (SELECT 'same'::text::encrypted_text AS e FROM generate_series(1, 1000)) s;
SQL
)"

# ---- 2. no plaintext on disk ------------------------------------------------
section "2. plaintext is not on disk"

# Two markers of the same shape: one only ever written to the encrypted table,
# one to a plain-text control table. The control proves the search can find
# what is there. The control column is STORAGE EXTERNAL (out of line, never
# compressed, as encrypted_text is), so pglz cannot hide its marker.
MARK_E="PAZPAZ-ENC-MARKER-$(rand_hex 11)"
MARK_P="PAZPAZ-PLN-MARKER-$(rand_hex 11)"
run "fill the encrypted and the control table (short and ~100 KB values)" \
    q it -v mark_e="$MARK_E" -v mark_p="$MARK_P" <<'SQL'
CREATE TABLE disk_enc (id int PRIMARY KEY, v encrypted_text);
CREATE TABLE disk_plain (id int PRIMARY KEY, v text);
ALTER TABLE disk_plain ALTER COLUMN v SET STORAGE EXTERNAL;
INSERT INTO disk_enc VALUES (1, :'mark_e');
INSERT INTO disk_plain VALUES (1, :'mark_p');
-- ~100 KB of non-repeating text (md5 of a counter) holding the marker 1400 times.
INSERT INTO disk_enc SELECT 2, string_agg(md5(i::text) || ' ' || :'mark_e', ' ' ORDER BY i) FROM generate_series(1, 1400) i;
INSERT INTO disk_plain SELECT 2, string_agg(md5(i::text) || ' ' || :'mark_p', ' ' ORDER BY i) FROM generate_series(1, 1400) i;
CHECKPOINT;
SQL
check_eq "long encrypted value decrypts to the original" t "$(q it -v mark_e="$MARK_E" -v mark_p="$MARK_P" <<'SQL' 2>&1
SELECT bool_and(replace(e.v::text, :'mark_e', :'mark_p') = p.v) FROM disk_enc e JOIN disk_plain p USING (id);
SQL
)"
# Relation files, relative to the data directory: heap, TOAST table, TOAST index.
relfiles() {
    q it <<SQL
SELECT pg_relation_filepath(c.oid), pg_relation_filepath(c.reltoastrelid),
       pg_relation_filepath((SELECT indexrelid FROM pg_index WHERE indrelid = c.reltoastrelid))
  FROM pg_class c WHERE c.oid = '$1'::regclass;
SQL
}
IFS='|' read -r ENC_HEAP ENC_TOAST ENC_TOASTIDX <<<"$(relfiles disk_enc)"
IFS='|' read -r PLN_HEAP PLN_TOAST PLN_TOASTIDX <<<"$(relfiles disk_plain)"
[ -n "$ENC_TOAST" ] && [ -n "$PLN_TOAST" ] || bad "both tables have a TOAST table" "enc: $ENC_TOAST plain: $PLN_TOAST"
check_eq "the long values were stored out of line (both TOAST tables hold > 100 KB)" "t|t" "$(q it <<'SQL' 2>&1
SELECT pg_relation_size((SELECT reltoastrelid FROM pg_class WHERE oid = 'disk_enc'::regclass)) > 100000,
       pg_relation_size((SELECT reltoastrelid FROM pg_class WHERE oid = 'disk_plain'::regclass)) > 100000;
SQL
)"
check_ge "control: marker found in the plain table's heap file" 1 "$(count_in "$MARK_P" "$DATA1/$PLN_HEAP")"
# (a few occurrences are cut in two by TOAST chunk boundaries)
check_ge "control: marker found >= 1300 of 1400 times in the plain table's TOAST file" 1300 "$(count_in "$MARK_P" "$DATA1/$PLN_TOAST")"
check_eq "marker absent from the encrypted table's heap file" 0 "$(count_in "$MARK_E" "$DATA1/$ENC_HEAP")"
check_eq "marker absent from the encrypted table's TOAST table and index" 0 \
    "$(count_in "$MARK_E" "$DATA1/$ENC_TOAST" "$DATA1/$ENC_TOASTIDX")"
# Wider: nowhere in the whole data directory, WAL included.
check_ge "control: plain marker found in the data directory (tables and WAL)" 1401 "$(count_in "$MARK_P" "$DATA1")"
check_eq "encrypted marker absent from the whole data directory, WAL included" 0 "$(count_in "$MARK_E" "$DATA1")"

# ---- 3. without a key -------------------------------------------------------
section "3. without a key"

expect_error "reading the column without a key fails and names pazpaz.encryption_key" 55000 "pazpaz.encryption_key" \
    qn it <<<"SELECT v FROM rt_literal WHERE id = 1;"
expect_error "decrypting cast without a key fails and names pazpaz.encryption_key" 55000 "pazpaz.encryption_key" \
    qn it <<<"SELECT v::text FROM rt_literal WHERE id = 2;"
expect_error "writing without a key fails and names pazpaz.encryption_key" 55000 "pazpaz.encryption_key" \
    qn it <<<"INSERT INTO rt_literal VALUES (100, 'no key here');"
expect_error "after RESET of the key, reading fails again" 55000 "pazpaz.encryption_key" \
    q it <<<"SELECT v FROM rt_literal WHERE id = 1; RESET pazpaz.encryption_key; SELECT v FROM rt_literal WHERE id = 1;"
check_eq "key_version(col) needs no key" "v1|6|7" "$(qn it <<<"SELECT string_agg(DISTINCT key_version(v), ','), count(v), count(*) FROM rt_literal;" 2>&1)"
ENV_NOKEY=$(qn it <<<"SELECT md5(string_agg(id || ':' || coalesce(v::bytea::text, 'null'), ',' ORDER BY id)) FROM rt_literal;" 2>&1)
ENV_KEY=$(q it <<<"SELECT md5(string_agg(id || ':' || coalesce(v::bytea::text, 'null'), ',' ORDER BY id)) FROM rt_literal;" 2>&1)
check_eq "col::bytea needs no key and gives the same envelopes as with a key" "$ENV_KEY" "$ENV_NOKEY"
check_eq "envelopes start with format 1, version \"v1\"" 6 "$(qn it <<<"SELECT count(*) FROM rt_literal WHERE substr(v::bytea, 1, 4) = '\\x01027631'::bytea;" 2>&1)"

# A session without a key that violates a constraint on a table with an
# encrypted column: PostgreSQL builds the "Failing row contains (…)" detail
# with the output function, which needs the key. Reported, not asserted: the
# output function cannot tell that it is formatting an error detail.
q it >/dev/null 2>&1 <<<"CREATE TABLE rt_nn (id int, v encrypted_text NOT NULL, w encrypted_text); INSERT INTO rt_nn VALUES (1, 'x', 'y');"
OUT=$(qn it -v VERBOSITY=verbose <<<"INSERT INTO rt_nn SELECT 2, NULL, w FROM rt_nn;" 2>&1)
if ! grep -qF "ERROR:  23502:" <<<"$OUT"; then
    note "without a key, a NOT NULL violation is reported as: $(grep -m1 -o 'ERROR:.*' <<<"$OUT")"
fi

# ---- 4. typmod, tampering, rotation -----------------------------------------
section "4. typmod, tampering, rotation"

run "encrypted_text(5) accepts 5 multibyte characters" q it <<'SQL'
CREATE TABLE tm (id serial, v encrypted_text(5));
INSERT INTO tm (v) VALUES ('abcde'), ('äöüßé'), ('日本語です'), ('🙂🙂🙂🙂🙂');
INSERT INTO tm (v) SELECT 'Zoë!!'::text;
SQL
check_eq "5-character values read back intact" "abcde,äöüßé,日本語です,🙂🙂🙂🙂🙂,Zoë!!" \
    "$(q it <<<"SELECT string_agg(v::text, ',' ORDER BY id) FROM tm;" 2>&1)"
check_eq "column type shows the typmod" "encrypted_text(5)" \
    "$(q it <<<"SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'tm'::regclass AND attname = 'v';" 2>&1)"
expect_error "encrypted_text(5) refuses 6 ASCII characters (literal)" 22001 "Value too long for type encrypted_text(5)" \
    q it <<<"INSERT INTO tm (v) VALUES ('abcdef');"
expect_error "encrypted_text(5) refuses 6 multibyte characters (literal)" 22001 "Value too long for type encrypted_text(5)" \
    q it <<<"INSERT INTO tm (v) VALUES ('日本語ですね');"
expect_error "encrypted_text(5) refuses 6 characters from a text value" 22001 "Value too long for type encrypted_text(5)" \
    q it <<<"INSERT INTO tm (v) SELECT 'äöüßéx'::text;"
expect_error "encrypted_text(5) refuses 6 characters through COPY" 22001 "Value too long for type encrypted_text(5)" \
    q it <<<"COPY tm (v) FROM PROGRAM 'echo abcdef';"
expect_error "narrowing the column below the stored length is refused" 22001 "Value too long for type encrypted_text(4)" \
    q it <<<"ALTER TABLE tm ALTER COLUMN v TYPE encrypted_text(4);"
check_eq "nothing too long was stored" 5 "$(q it <<<"SELECT count(*) FROM tm;" 2>&1)"

# Tampering: take the envelope as bytea, flip one bit, cast it back. Envelope
# layout: format(1) len(1) "v1"(2) nonce(12) ciphertext tag(16); bytes are
# 0-based for get_byte/set_byte.
expect_error "one bit flipped in the ciphertext: authentication fails" 22000 "Decryption failed (wrong key or tampering)" \
    q it <<'SQL'
SELECT set_byte(b, 16, get_byte(b, 16) # 1)::encrypted_text::text
  FROM (SELECT v::bytea AS b FROM rt_literal WHERE id = 1) s;
SQL
expect_error "one bit flipped in the tag: authentication fails" 22000 "Decryption failed (wrong key or tampering)" \
    q it <<'SQL'
SELECT set_byte(b, length(b) - 1, get_byte(b, length(b) - 1) # 128)::encrypted_text::text
  FROM (SELECT v::bytea AS b FROM rt_literal WHERE id = 1) s;
SQL
expect_error "one bit flipped in the nonce: authentication fails" 22000 "Decryption failed (wrong key or tampering)" \
    q it <<'SQL'
SELECT set_byte(b, 4, get_byte(b, 4) # 1)::encrypted_text::text
  FROM (SELECT v::bytea AS b FROM rt_literal WHERE id = 1) s;
SQL
expect_error "a truncated envelope is refused" 22P03 "Ciphertext too short" \
    qn it <<<"SELECT substr(v::bytea, 1, 20)::encrypted_text FROM rt_literal WHERE id = 1;"
expect_error "an unknown format byte is refused" 22P03 "Invalid encrypted_text envelope" \
    qn it <<<"SELECT set_byte(v::bytea, 0, 2)::encrypted_text FROM rt_literal WHERE id = 1;"

# Header tampering: rename the version "v1" → "v2" in the envelope. With the
# SAME key loaded under both names only the authenticated header (GCM
# associated data) can tell; with different keys it fails as well.
keyring_file ring_same IT_KEY v1
keyring_file ring_two IT_KEY2 v1
HDR_SQL="SELECT key_version(t), t::text FROM (SELECT overlay(v::bytea PLACING 'v2'::bytea FROM 3 FOR 2)::encrypted_text AS t FROM rt_literal WHERE id = 1) s;"
check_eq "untampered value reads with the keyring (v1 = the single key)" "hello, world" \
    "$(psql_ -d it -f "$WORK/ring_same.psql" -c "SELECT v FROM rt_literal WHERE id = 1" 2>&1)"
check_eq "renamed header is readable as v2 without a key" v2 \
    "$(qn it <<<"SELECT key_version(overlay(v::bytea PLACING 'v2'::bytea FROM 3 FOR 2)::encrypted_text) FROM rt_literal WHERE id = 1;" 2>&1)"
expect_error "header v1→v2 with the same key under both names: authentication fails" 22000 "Decryption failed (wrong key or tampering)" \
    psql_ -d it -f "$WORK/ring_same.psql" -f - <<<"$HDR_SQL"
expect_error "header v1→v2 with two different keys: authentication fails" 22000 "Decryption failed (wrong key or tampering)" \
    psql_ -d it -f "$WORK/ring_two.psql" -f - <<<"$HDR_SQL"
expect_error "header renamed to a version that is not loaded: error names the loaded versions" 42704 "loaded versions: v1, v2" \
    psql_ -d it -f "$WORK/ring_two.psql" -f - <<<"SELECT overlay(v::bytea PLACING 'v3'::bytea FROM 3 FOR 2)::encrypted_text::text FROM rt_literal WHERE id = 1;"

# Rotation: a table written under v1 is re-encrypted to v2 with one UPDATE.
keyring_file ring_v2 IT_KEY2 v2
run "rotation v1 → v2 with reencrypt()" psql_ -d it -f "$WORK/ring_v2.psql" -f - <<'SQL'
CREATE TABLE rt_rotated AS SELECT id, v FROM rt_literal;
UPDATE rt_rotated SET v = reencrypt(v);
SQL
check_eq "after rotation every value is under v2 and decrypts to the reference" "0|6" "$(psql_ -d it -f "$WORK/ring_v2.psql" -f - <<'SQL' 2>&1
SELECT count(*) FILTER (WHERE r.v IS DISTINCT FROM t.v::text), count(*) FILTER (WHERE key_version(t.v) = 'v2')
  FROM ref r JOIN rt_rotated t USING (id);
SQL
)"

# ---- 5. migrations ----------------------------------------------------------
section "5. migration of a live column, forward and back (100,000 rows)"

# A copy of the original column is kept; after each ALTER every row is
# compared with it (IS DISTINCT FROM: NULL and '' stay apart), and the md5 of
# the ordered aggregate is compared too.
run "create 100,000 rows of text and of varchar(255)" q it <<'SQL'
CREATE TABLE mig (id int PRIMARY KEY, c text);
INSERT INTO mig SELECT i, CASE WHEN i % 1000 = 0 THEN NULL
                               WHEN i % 1000 = 1 THEN ''
                               WHEN i % 3 = 0 THEN 'Zoë ' || md5(i::text) || ' 日本 🙂'
                               ELSE md5(i::text) END
  FROM generate_series(1, 100000) i;
CREATE TABLE mig_orig AS SELECT * FROM mig;
CREATE TABLE migv (id int PRIMARY KEY, c varchar(255));
-- up to exactly 255 characters, many of them multibyte
INSERT INTO migv SELECT i, CASE WHEN i % 997 = 0 THEN NULL
                                ELSE rpad('ü' || md5(i::text), 255 - (i % 200), '日') END
  FROM generate_series(1, 100000) i;
CREATE TABLE migv_orig AS SELECT * FROM migv;
SQL
MD5_SQL="SELECT md5(string_agg(id || ':' || coalesce(quote_literal(c::text), 'NULL'), ',' ORDER BY id)) FROM"
MIG_MD5=$(q it <<<"$MD5_SQL mig_orig;" 2>&1)
MIGV_MD5=$(q it <<<"$MD5_SQL migv_orig;" 2>&1)
check_eq "varchar(255) data reaches exactly 255 characters" 255 "$(q it <<<"SELECT max(char_length(c)) FROM migv;" 2>&1)"

# diff_rows TABLE ORIG: rows whose value differs from the copy (must be 0)
diff_rows() {
    q it <<<"SELECT count(*) FROM $1 m FULL JOIN $2 o USING (id) WHERE m.id IS NULL OR o.id IS NULL OR m.c::text IS DISTINCT FROM o.c;" 2>&1
}
coltype() {
    q it <<<"SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '$1'::regclass AND attname = 'c';" 2>&1
}

run "ALTER COLUMN c TYPE encrypted_text USING c::encrypted_text" q it <<<"ALTER TABLE mig ALTER COLUMN c TYPE encrypted_text USING c::encrypted_text;"
check_eq "column is now encrypted_text" encrypted_text "$(coltype mig)"
check_eq "every value is a v1 envelope (NULLs stay NULL)" "99900|99900|100" \
    "$(q it <<<"SELECT count(c), count(*) FILTER (WHERE key_version(c) = 'v1'), count(*) FILTER (WHERE c IS NULL) FROM mig;" 2>&1)"
check_eq "no stored value equals its plaintext bytes" 0 \
    "$(q it <<<"SELECT count(*) FROM mig m JOIN mig_orig o USING (id) WHERE position(convert_to(o.c, 'UTF8') IN m.c::bytea) > 0 AND o.c <> '';" 2>&1)"
check_eq "encrypted column decrypts to every original value" 0 "$(diff_rows mig mig_orig)"
run "ALTER COLUMN c TYPE text USING c::text (undo)" q it <<<"ALTER TABLE mig ALTER COLUMN c TYPE text USING c::text;"
check_eq "column is text again" text "$(coltype mig)"
check_eq "after the round trip every value is identical" 0 "$(diff_rows mig mig_orig)"
check_eq "after the round trip the md5 of all values is identical" "$MIG_MD5" "$(q it <<<"$MD5_SQL mig;" 2>&1)"

run "ALTER COLUMN c TYPE encrypted_text(255) from varchar(255)" q it <<<"ALTER TABLE migv ALTER COLUMN c TYPE encrypted_text(255) USING c::encrypted_text(255);"
check_eq "column is now encrypted_text(255)" "encrypted_text(255)" "$(coltype migv)"
check_eq "encrypted_text(255) column decrypts to every original value" 0 "$(diff_rows migv migv_orig)"
run "ALTER COLUMN c TYPE varchar(255) (undo)" q it <<<"ALTER TABLE migv ALTER COLUMN c TYPE varchar(255) USING c::varchar(255);"
check_eq "column is varchar(255) again" "character varying(255)" "$(coltype migv)"
check_eq "after the varchar round trip every value is identical" 0 "$(diff_rows migv migv_orig)"
check_eq "after the varchar round trip the md5 of all values is identical" "$MIGV_MD5" "$(q it <<<"$MD5_SQL migv;" 2>&1)"

# ---- 6. pg_dump and restore -------------------------------------------------
section "6. pg_dump → restore"

MARK_D="PAZPAZ-DUMP-MARKER-$(rand_hex 10)"
psql_ -d postgres -c "CREATE DATABASE dumpsrc" || die "create database dumpsrc"
run "fill the database to dump" q dumpsrc -v mark="$MARK_D" <<'SQL'
CREATE EXTENSION pazpaz_crypto;
CREATE TABLE patients (
    id int PRIMARY KEY,
    name encrypted_text(255) NOT NULL,
    notes encrypted_text
);
-- key_version() is immutable and needs no key: the index is rebuilt on restore.
CREATE INDEX patients_notes_version ON patients (key_version(notes));
INSERT INTO patients VALUES
  (1, 'Zoë Ångström', :'mark' || ' notes: 日本語 🙂'),
  (2, 'Bob', ''),
  (3, 'Carol', NULL),
  (4, 'Dan', E'tab\there\nnewline back\\slash \\N'),
  (5, 'Eve', repeat(:'mark' || ' long notes ', 2000));
INSERT INTO patients SELECT i, 'name ' || i, md5(i::text) FROM generate_series(100, 1099) i;
SQL
# What every restore must give back: the decrypted rows, and (keyless only)
# the very same envelopes.
q dumpsrc <<<"\copy (SELECT id, name, notes FROM patients ORDER BY id) TO '$WORK/patients.expected'" || die "export expected rows"
ENVSUM_SQL="SELECT md5(string_agg(id || ':' || name::bytea::text || ':' || coalesce(notes::bytea::text, 'null'), ',' ORDER BY id)) FROM patients;"
SRC_ENVSUM=$(qn dumpsrc <<<"$ENVSUM_SQL" 2>&1)
# restored_ok DB DESC: the restored table, read with the key, equals the source.
restored_ok() {
    q "$1" <<<"\copy (SELECT id, name, notes FROM patients ORDER BY id) TO '$WORK/patients.$1'" >/dev/null 2>&1
    check "$2" cmp -s "$WORK/patients.expected" "$WORK/patients.$1"
}

# Keyless: envelope mode for pg_dump's session; no key anywhere.
ENVELOPE="-c pazpaz.encrypted_text_io=envelope"
run "keyless pg_dump (plain format, envelope mode, no key)" pgopts "$ENVELOPE" pg_dump -d dumpsrc -f "$WORK/envelope.sql"
run "keyless pg_dump (custom format, envelope mode, no key)" pgopts "$ENVELOPE" pg_dump -d dumpsrc -Fc -f "$WORK/envelope.dump"
check_file_has "envelope dump holds envelopes (pazpaz:…)" "$WORK/envelope.sql" "pazpaz:AQJ2M"
check_file_lacks "envelope dump does not hold the plaintext marker" "$WORK/envelope.sql" "$MARK_D"
check_file_lacks "envelope dump does not hold a plaintext name" "$WORK/envelope.sql" "Ångström"
pg_restore -f "$WORK/envelope.dump.sql" "$WORK/envelope.dump" 2>/dev/null
check_file_has "custom-format envelope dump holds envelopes" "$WORK/envelope.dump.sql" "pazpaz:AQJ2M"
check_file_lacks "custom-format envelope dump does not hold the plaintext marker" "$WORK/envelope.dump.sql" "$MARK_D"

psql_ -d postgres -c "CREATE DATABASE restore_envelope" -c "CREATE DATABASE restore_envelope_fc" \
    -c "CREATE DATABASE restore_plain" -c "CREATE DATABASE restore_refused" -c "CREATE DATABASE restore_refused_fc" \
    || die "create restore databases"
run "keyless restore with psql (envelope mode, no key)" pgopts "$ENVELOPE" psql_ -d restore_envelope -f "$WORK/envelope.sql"
restored_ok restore_envelope "keyless psql restore: every row decrypts with the original key to the original"
check_eq "keyless psql restore: envelopes are byte-identical to the source" "$SRC_ENVSUM" "$(qn restore_envelope <<<"$ENVSUM_SQL" 2>&1)"
run "keyless pg_restore (envelope mode, no key)" pgopts "$ENVELOPE" pg_restore --exit-on-error -d restore_envelope_fc "$WORK/envelope.dump"
restored_ok restore_envelope_fc "keyless pg_restore: every row decrypts with the original key to the original"
check_eq "keyless pg_restore: envelopes are byte-identical to the source" "$SRC_ENVSUM" "$(qn restore_envelope_fc <<<"$ENVSUM_SQL" 2>&1)"
check_eq "restored expression index on key_version(notes) answers queries" "1004" \
    "$(qn restore_envelope <<<"SET enable_seqscan = off; SELECT count(*) FROM patients WHERE key_version(notes) = 'v1';" 2>&1)"

# An envelope dump restored WITHOUT the setting, by a session that has a key
# (the dangerous case: it could encrypt the envelopes a second time). It must
# stop with an error that says what to set, and load nothing.
OUT=$(psql_ -d restore_refused -f "$WORK/key.psql" -f "$WORK/envelope.sql" 2>&1); RC=$?
check_ne "envelope dump restored without the setting (with a key): psql fails" 0 "$RC"
check_has "… and the error tells to set pazpaz.encrypted_text_io" "$OUT" "pazpaz.encrypted_text_io = 'envelope'"
check_eq "… and no row was loaded" 0 "$(qn restore_refused <<<"SELECT count(*) FROM patients;" 2>&1)"
OUT=$(pg_restore --exit-on-error -d restore_refused_fc "$WORK/envelope.dump" 2>&1); RC=$?
check_ne "envelope dump restored by pg_restore without the setting (no key): fails" 0 "$RC"
check_has "… and the error tells to set pazpaz.encrypted_text_io" "$OUT" "pazpaz.encrypted_text_io"

# Default (plaintext) mode with a key: the dump holds plaintext, and a restore
# with a key encrypts again (new nonces).
run "pg_dump in plaintext mode with a key" pgopts "-c pazpaz.encryption_key=$IT_KEY" pg_dump -d dumpsrc -f "$WORK/plain.sql"
check_file_has "plaintext-mode dump DOES hold the plaintext (documented)" "$WORK/plain.sql" "$MARK_D"
check_file_lacks "plaintext-mode dump holds no envelope" "$WORK/plain.sql" "pazpaz:AQJ2M"
run "restore of the plaintext dump with a key" psql_ -d restore_plain -f "$WORK/key.psql" -f "$WORK/plain.sql"
restored_ok restore_plain "plaintext-mode restore: every row decrypts to the original"
check_ne "plaintext-mode restore encrypted the values anew" "$SRC_ENVSUM" "$(qn restore_plain <<<"$ENVSUM_SQL" 2>&1)"

# ---- 7. binary COPY and logical replication, no keys ------------------------
section "7. binary COPY between servers and logical replication without keys"

EXPECT_RT=$(q it <<<"\copy (SELECT id, v FROM rt_literal ORDER BY id) TO STDOUT" 2>&1)
RT_ENVSUM=$(qn it <<<"SELECT md5(string_agg(id || ':' || coalesce(v::bytea::text, 'null'), ',' ORDER BY id)) FROM rt_literal;" 2>&1)
psql_ "${C2[@]}" -d postgres -c "CREATE DATABASE bincopy" -c "CREATE DATABASE sub" || die "create databases on it_enc2"
run "binary COPY out of it_enc (no key)" qn it <<<"\copy rt_literal TO '$WORK/keyless.bin' WITH (FORMAT binary)"
run "binary COPY into it_enc2 (no key)" qn bincopy "${C2[@]}" <<SQL
CREATE EXTENSION pazpaz_crypto;
CREATE TABLE rt_literal (id int PRIMARY KEY, v encrypted_text);
\copy rt_literal FROM '$WORK/keyless.bin' WITH (FORMAT binary)
SQL
check_eq "binary COPY across servers: envelopes identical" "$RT_ENVSUM" \
    "$(qn bincopy "${C2[@]}" <<<"SELECT md5(string_agg(id || ':' || coalesce(v::bytea::text, 'null'), ',' ORDER BY id)) FROM rt_literal;" 2>&1)"
check_eq "binary COPY across servers: rows decrypt with the key to the originals" "$EXPECT_RT" \
    "$(q bincopy "${C2[@]}" <<<"\copy (SELECT id, v FROM rt_literal ORDER BY id) TO STDOUT" 2>&1)"

# Logical replication from it_enc (db it) to it_enc2 (db sub).
# a) Streaming changes with binary = true: pgoutput sends each value with the
#    type's send function and the apply worker reads it with receive, so
#    neither side needs a key. copy_data = false: only changes made after the
#    subscription exists are sent.
# b) The initial table synchronisation: in PostgreSQL 15 it always runs a
#    text-format COPY (binary initial copy arrived in 16), which calls the
#    output function on the publisher and the input function on the
#    subscriber. Without a key that fails ("No encryption key is set"), so the
#    keyless recipe is the envelope text form on both sides: options in the
#    subscription's connection string for the publisher's walsender, and a
#    database setting on the subscriber (its workers run no client session).
CONN1="host=$H1 port=$P1 dbname=it user=postgres"
LOG2_START=$(($(wc -l <"$LOG2") + 1))
run "publisher tables and publications" q it <<'SQL'
CREATE TABLE repl_stream (id int PRIMARY KEY, v encrypted_text);
CREATE TABLE repl_sync (id int PRIMARY KEY, v encrypted_text);
INSERT INTO repl_sync SELECT id, v FROM ref;
CREATE PUBLICATION pub_stream FOR TABLE repl_stream;
CREATE PUBLICATION pub_sync FOR TABLE repl_sync;
SQL
run "subscriber tables and subscriptions (binary = true)" qn sub "${C2[@]}" <<SQL
CREATE EXTENSION pazpaz_crypto;
CREATE TABLE repl_stream (id int PRIMARY KEY, v encrypted_text);
CREATE TABLE repl_sync (id int PRIMARY KEY, v encrypted_text);
ALTER DATABASE sub SET pazpaz.encrypted_text_io = envelope;
CREATE SUBSCRIPTION sub_stream CONNECTION '$CONN1' PUBLICATION pub_stream WITH (binary = true, copy_data = false);
CREATE SUBSCRIPTION sub_sync CONNECTION '$CONN1 options=''-c pazpaz.encrypted_text_io=envelope''' PUBLICATION pub_sync WITH (binary = true);
SQL
run "changes on the publisher: INSERT, UPDATE, DELETE" q it <<'SQL'
INSERT INTO repl_stream SELECT id, v FROM ref;
INSERT INTO repl_stream VALUES (100, 'to be deleted'), (101, 'before update');
UPDATE repl_stream SET v = 'after update: Zoë 🙂' WHERE id = 101;
DELETE FROM repl_stream WHERE id = 100;
SQL
# Reading on the subscriber: plaintext mode for this session (the database
# default there is envelope), with the key.
PLAIN_IO="-c pazpaz.encrypted_text_io=plaintext"
# Fingerprint of a replicated table's envelopes.
envsum() { echo "SELECT md5(string_agg(id || ':' || coalesce(v::bytea::text, 'null'), ',' ORDER BY id)) FROM $1"; }
PUB_STREAM=$(qn it <<<"$(envsum repl_stream);" 2>&1)
PUB_SYNC=$(qn it <<<"$(envsum repl_sync);" 2>&1)
# Caught up: both tables hold the publisher's envelopes, both synchronised.
repl_state() {
    qn sub "${C2[@]}" <<SQL
SELECT ($(envsum repl_stream)) = '$PUB_STREAM' AND ($(envsum repl_sync)) = '$PUB_SYNC'
   AND (SELECT count(*) = 2 AND bool_and(srsubstate = 'r') FROM pg_subscription_rel);
SQL
}
if wait_until "replication" 60 repl_state; then
    ok "logical replication caught up (streamed changes and initial sync)"
else
    bad "logical replication caught up (streamed changes and initial sync)" \
        "$(qn sub "${C2[@]}" <<<"SELECT srrelid::regclass, srsubstate FROM pg_subscription_rel; SELECT count(*) FROM repl_stream; SELECT count(*) FROM repl_sync;" 2>&1)"$'\n'"$(tail -n 20 "$LOG2")"
fi
for t in repl_stream repl_sync; do
    check_eq "replicated $t: envelopes identical to the publisher's" "$(qn it <<<"$(envsum $t);" 2>&1)" "$(qn sub "${C2[@]}" <<<"$(envsum $t);" 2>&1)"
    check_eq "replicated $t: rows decrypt with the key to the publisher's values" \
        "$(q it <<<"\copy (SELECT id, v FROM $t ORDER BY id) TO STDOUT" 2>&1)" \
        "$(PGOPTIONS="$PLAIN_IO" q sub "${C2[@]}" <<<"\copy (SELECT id, v FROM $t ORDER BY id) TO STDOUT" 2>&1)"
done
check_eq "replicated UPDATE arrived" "after update: Zoë 🙂" \
    "$(PGOPTIONS="$PLAIN_IO" q sub "${C2[@]}" <<<"SELECT v FROM repl_stream WHERE id = 101;" 2>&1)"
check_eq "no error in the subscriber's log since the subscriptions were made" "" \
    "$(tail -n +"$LOG2_START" "$LOG2" | grep -E 'ERROR|FATAL')"

# ---- 8. constraint violations and the server log ----------------------------
section "8. constraint violations: decrypted values stay out of the server log"

# The violating statements do not contain the marker themselves (PostgreSQL
# logs the text of a failing statement at log_min_error_statement = error,
# whatever the extension does); the marker only reaches an error through the
# "Failing row contains (…)" detail, which PostgreSQL builds with the type's
# output function, i.e. decrypted.
MARK_L="PAZPAZ-LOG-MARKER-$(rand_hex 10)"
run "table with a marker in an encrypted column" q it -v mark="$MARK_L" <<'SQL'
CREATE TABLE log_t (id int CHECK (id > 0), a encrypted_text, b encrypted_text NOT NULL);
INSERT INTO log_t VALUES (1, :'mark', 'x');
SQL
OUT=$(q it -v ON_ERROR_STOP=0 2>&1 <<'SQL'
UPDATE log_t SET b = NULL;
UPDATE log_t SET id = -1;
INSERT INTO log_t SELECT 2, a, NULL FROM log_t;
INSERT INTO log_t SELECT -2, a, b FROM log_t;
SQL
)
check_eq "client sees four violations" 4 "$(grep -c '^psql:.*ERROR:' <<<"$OUT")"
check_eq "client error DETAIL shows the decrypted row (the client holds the key)" 4 \
    "$(grep -c "DETAIL:  Failing row contains (.*$MARK_L" <<<"$OUT")"
# The same through bound parameters (the application's way); the logged
# statement shows only $1…, parameters are not logged on error by default.
PY_OUT=$(python3 - "$MARK_L" <<'PY' 2>&1
import os, sys
import psycopg
mark = sys.argv[1]
with psycopg.connect(dbname="it", autocommit=True) as conn:
    conn.execute("SELECT set_config('pazpaz.encryption_key', %s, false)", (os.environ["IT_KEY"],))
    for name, row, exc in (("not_null", (3, mark, None), psycopg.errors.NotNullViolation),
                           ("check", (-3, mark, "y"), psycopg.errors.CheckViolation)):
        try:
            conn.execute("INSERT INTO log_t VALUES (%s, %s, %s)", row)
            print(f"{name}=no error")
        except exc as e:
            print(f"{name}={int(mark in (e.diag.message_detail or ''))}")
PY
)
check_eq "psycopg: NOT NULL violation, client DETAIL shows the value" "not_null=1" "$(grep -o '^not_null=.*' <<<"$PY_OUT")"
check_eq "psycopg: CHECK violation, client DETAIL shows the value" "check=1" "$(grep -o '^check=.*' <<<"$PY_OUT")"
check_ge "server log has the NOT NULL violations" 3 "$(grep -c 'violates not-null constraint' "$LOG1")"
check_ge "server log has the CHECK violations" 3 "$(grep -c 'violates check constraint' "$LOG1")"
check_ge "server log shows the row detail replaced" 6 "$(grep -c 'Failing row contains (values hidden by pazpaz_crypto)' "$LOG1")"
check_eq "server log does not contain the marker anywhere" 0 "$(count_in "$MARK_L" "$LOG1")"

# Not a decrypted value, so outside the mechanism above: for a COPY FROM that
# violates a constraint, PostgreSQL's CONTEXT line quotes the raw input line,
# i.e. the plaintext as the client sent it (like the text of a failing INSERT
# with a literal). Reported, not asserted.
MARK_C="PAZPAZ-COPY-MARKER-$(rand_hex 10)"
printf -- '-4\t%s\tz\n' "$MARK_C" >"$WORK/violating.copy"
q it >/dev/null 2>&1 <<<"\copy log_t FROM '$WORK/violating.copy'"
if [ "$(count_in "$MARK_C" "$LOG1")" -gt 0 ]; then
    note "COPY FROM violating a constraint: the server log's CONTEXT line quotes the plaintext input line"
fi

# Nowhere in either server log: a key.
check_eq "server logs contain no key" 0 "$(( $(count_in "$IT_KEY" "$LOG1" "$LOG2") + $(count_in "$IT_KEY2" "$LOG1" "$LOG2") ))"

# ---- summary ----------------------------------------------------------------
printf '\n%d checks passed, %d failed, %ds\n' "$PASSED" "${#FAILED[@]}" $((SECONDS - T0))
if [ ${#FAILED[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${FAILED[@]}"
    exit 1
fi
