#!/usr/bin/env bash
# Crash safety of key rotation: a backend killed with SIGKILL in the middle of
# re-encrypting a column. The postmaster then kills every backend and replays
# the WAL (crash recovery); afterwards
#   - every row is entirely on v1 or entirely on v2 and decrypts, with the
#     keyring, to its original plaintext (kept in a plain column);
#   - what was committed survived, what was not left no trace: the
#     single-statement UPDATE left every row on v1, rotate_column lost at most
#     its current batch and never part of a batch;
#   - running the rotation again finishes the job: every row on v2.
#
# Cases:
#   1. UPDATE rot_update SET c = reencrypt_field_versioned(c)   (300k jsonb rows)
#   2. CALL rotate_column('rot_call', 'c', …)                    (jsonb)
#   3. CALL rotate_column('rot_text', 'body', …)                 (encrypted_text)
# Keys are generated in the database at setup and never printed.
# Usage (from the repository root, as root): bash tests/integration/crash.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/pg.sh

CLUSTER=it_crash
PORT=55461
ROWS_UPDATE=${CRASH_ROWS_UPDATE:-300000}
ROWS_CALL=${CRASH_ROWS_CALL:-200000}
BATCH=2000
WORK=$(mktemp -d)
trap 'pg_stop "$CLUSTER"; rm -rf "$WORK"' EXIT

pg_start "$CLUSTER" "$PORT" "log_min_messages = warning" "restart_after_crash = on"
LOG=$(pg_log "$CLUSTER")
psql_() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

echo "crash: setup ($ROWS_UPDATE + $ROWS_CALL + $ROWS_CALL rows)"
psql_ -v rows_update="$ROWS_UPDATE" -v rows_call="$ROWS_CALL" <<'SQL'
CREATE EXTENSION pazpaz_crypto;
CREATE TABLE keys (k1 text NOT NULL, k2 text NOT NULL);
INSERT INTO keys SELECT generate_encryption_key(), generate_encryption_key();

-- The keyring {v1, v2} for this session, writing with write_version. A
-- procedure, so that CALL prints nothing.
CREATE PROCEDURE use_keys(write_version text) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('pazpaz.encryption_keys', json_build_object('v1', k1, 'v2', k2)::text, false),
            set_config('pazpaz.encryption_key_version', write_version, false)
       FROM keys;
END $$;

-- Rows per version of a table; raises unless the table still has all its
-- rows and each one is on v1 or v2 and decrypts to its plaintext. A row
-- with one version's header and another's ciphertext cannot decrypt.
CREATE FUNCTION check_rows(tbl regclass, col name, expected bigint, OUT on_v1 bigint, OUT on_v2 bigint)
LANGUAGE plpgsql AS $$
DECLARE
    plaintext text := CASE WHEN (SELECT atttypid FROM pg_attribute WHERE attrelid = tbl AND attname = col) = 'jsonb'::regtype
                           THEN format('decrypt_field_versioned(%I)', col) ELSE format('%I::text', col) END;
    wrong bigint;
    total bigint;
BEGIN
    EXECUTE format($q$SELECT count(*) FILTER (WHERE key_version(%1$I) = 'v1'),
                             count(*) FILTER (WHERE key_version(%1$I) = 'v2'),
                             count(*) FILTER (WHERE %2$s IS DISTINCT FROM plain),
                             count(*)
                        FROM %3$s$q$, col, plaintext, tbl)
       INTO on_v1, on_v2, wrong, total;
    IF total <> expected OR wrong <> 0 OR on_v1 + on_v2 <> total THEN
        RAISE EXCEPTION '%: % rows (expected %), % decrypt to a wrong plaintext, % on neither v1 nor v2',
            tbl, total, expected, wrong, total - on_v1 - on_v2;
    END IF;
END $$;

CALL use_keys('v1');
CREATE TABLE rot_update (id int PRIMARY KEY, plain text NOT NULL, c jsonb NOT NULL);
INSERT INTO rot_update
SELECT g, p, encrypt_field_versioned(p)
  FROM (SELECT g, format('patient %s: %s', g, md5(g::text)) AS p FROM generate_series(1, :rows_update) g) s;
CREATE TABLE rot_call (id int PRIMARY KEY, plain text NOT NULL, c jsonb NOT NULL);
INSERT INTO rot_call
SELECT g, p, encrypt_field_versioned(p)
  FROM (SELECT g, format('note %s: %s', g, md5(g::text)) AS p FROM generate_series(1, :rows_call) g) s;
CREATE TABLE rot_text (id int PRIMARY KEY, plain text NOT NULL, body encrypted_text NOT NULL);
INSERT INTO rot_text
SELECT g, p, p::encrypted_text
  FROM (SELECT g, format('name %s: %s', g, md5(g::text)) AS p FROM generate_series(1, :rows_call) g) s;
-- A checkpoint now, so that recovery replays only the rotation's WAL.
CHECKPOINT;
SQL

# check TABLE COLUMN EXPECTED_ROWS -> prints "ON_V1 ON_V2" (or fails)
check() {
    psql_ -At -F ' ' -c "CALL use_keys('v1')" -c "SELECT * FROM check_rows('$1', '$2', $3)" | tail -1
}

# Waits until the server accepts connections again after crash recovery.
wait_for_recovery() {
    local i
    for i in $(seq 1 120); do
        if psql -X -At -c 'SELECT 1' >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    fail "the server did not come back within 60 s"
}

# The server log must show this kill and a crash recovery after it.
expect_recovery_in_log() {
    local since=$1 pid=$2 tail_log
    tail_log=$(tail -n +"$since" "$LOG")
    grep -q "server process (PID $pid) was terminated by signal 9" <<<"$tail_log" \
        || fail "the server log does not show backend $pid killed by signal 9"
    grep -q "all server processes terminated; reinitializing" <<<"$tail_log" \
        || fail "the server log does not show the postmaster reinitializing"
    grep -q "automatic recovery in progress" <<<"$tail_log" \
        || fail "the server log does not show a crash recovery"
}

# run_and_kill NAME SQL WAIT_CONDITION: runs SQL (after use_keys('v2')) in a
# background session named NAME, waits until WAIT_CONDITION (a shell
# command) is true while that session is still at work, kills its backend
# with SIGKILL, and waits for crash recovery. Sets KILLED_AT (log line).
run_and_kill() {
    local name=$1 sql=$2 cond=$3 bg pid="" i since
    since=$(($(wc -l <"$LOG") + 1))
    PGAPPNAME=$name psql -X -v ON_ERROR_STOP=1 -c "CALL use_keys('v2')" -c "$sql" >"$WORK/$name.out" 2>&1 &
    bg=$!
    for i in $(seq 1 600); do
        pid=$(psql -X -At -c "SELECT pid FROM pg_stat_activity WHERE application_name = '$name' AND state = 'active' AND backend_type = 'client backend' AND query <> 'CALL use_keys(''v2'')'")
        [ -n "$pid" ] && break
        kill -0 "$bg" 2>/dev/null || break
        sleep 0.05
    done
    [ -n "$pid" ] || { cat "$WORK/$name.out" >&2; fail "$name: the statement never started"; }
    for i in $(seq 1 1200); do
        kill -0 "$bg" 2>/dev/null || { cat "$WORK/$name.out" >&2; fail "$name: finished before the kill; make it larger"; }
        eval "$cond" && break
        sleep 0.05
    done
    eval "$cond" || fail "$name: the kill condition never became true"
    kill -9 "$pid"
    wait "$bg" && fail "$name: the killed session reported success" || true
    grep -qE "server closed the connection unexpectedly|terminating connection|connection to server .* lost" "$WORK/$name.out" \
        || { cat "$WORK/$name.out" >&2; fail "$name: the session did not lose its connection"; }
    wait_for_recovery
    expect_recovery_in_log "$since" "$pid"
    echo "crash: $name: backend $pid killed mid-rotation, server recovered"
}

# ---- 1. one big UPDATE --------------------------------------------------------------
# Killed once it has written 64 MB of WAL, about a third of what the whole
# UPDATE writes: new versions of many rows exist in WAL and in shared
# buffers (some written out), but the transaction never committed.
wal_since() { psql -X -At -c "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '$1')::bigint / 1048576"; }
wal_start=$(psql -X -At -c "SELECT pg_current_wal_insert_lsn()")
wal_written() {
    local mb; mb=$(wal_since "$wal_start")
    echo "$mb" >"$WORK/wal_at_kill"
    [ "$mb" -ge 64 ]
}
run_and_kill rotate_update "UPDATE rot_update SET c = reencrypt_field_versioned(c)" wal_written
out=$(check rot_update c "$ROWS_UPDATE")
read -r v1 v2 <<<"$out"
[ "$v2" = 0 ] || fail "rot_update: $v2 rows on v2 after the uncommitted UPDATE was killed"
echo "PASS 1a killed UPDATE: all $v1 rows still on v1 and decrypt"
wal_start=$(psql -X -At -c "SELECT pg_current_wal_insert_lsn()")
psql_ -c "CALL use_keys('v2')" -c "UPDATE rot_update SET c = reencrypt_field_versioned(c)" >/dev/null
echo "crash: the killed UPDATE had written $(cat "$WORK/wal_at_kill") MB of WAL; the complete one writes $(wal_since "$wal_start") MB"
out=$(check rot_update c "$ROWS_UPDATE")
read -r v1 v2 <<<"$out"
[ "$v1" = 0 ] && [ "$v2" = "$ROWS_UPDATE" ] || fail "rot_update after re-run: $v1 on v1, $v2 on v2"
echo "PASS 1b UPDATE re-run: all $v2 rows on v2 and decrypt"

# ---- 2 and 3. rotate_column ---------------------------------------------------------------
# Killed after it reported batch 40 of 100: batches up to 39 are committed for
# sure (each batch COMMITs right after its notice).
batches_seen() { sed -nE 's/.*NOTICE:  batch ([0-9]+):.*/\1/p' "$WORK/$1.out" | tail -1; }
rotate_case() {
    local label=$1 tbl=$2 col=$3 name="rotate_$2" seen v1 v2
    run_and_kill "$name" "CALL rotate_column('$tbl', '$col', $BATCH)" "[ \"\$(batches_seen $name)\" -ge 40 ] 2>/dev/null"
    seen=$(batches_seen "$name")
    out=$(check "$tbl" "$col" "$ROWS_CALL")
    read -r v1 v2 <<<"$out"
    [ "$v1" -gt 0 ] || fail "$tbl: no row left on v1; the kill came too late to test anything"
    [ "$v2" -ge $(((seen - 1) * BATCH)) ] || fail "$tbl: only $v2 rows on v2 although batch $seen had been reported"
    [ $((v2 % BATCH)) = 0 ] || fail "$tbl: $v2 rows on v2, not a whole number of batches of $BATCH"
    echo "PASS ${label}a killed rotate_column: $v2 rows on v2 (whole batches, batch $seen reported), $v1 on v1, all decrypt"
    psql_ -c "CALL use_keys('v2')" -c "CALL rotate_column('$tbl', '$col', $BATCH)" 2>"$WORK/$name.rerun"
    out=$(check "$tbl" "$col" "$ROWS_CALL")
    read -r v1 v2 <<<"$out"
    [ "$v1" = 0 ] && [ "$v2" = "$ROWS_CALL" ] || fail "$tbl after re-run: $v1 on v1, $v2 on v2"
    grep -q "rotate_column: done" "$WORK/$name.rerun" || fail "$tbl: the re-run did not report completion"
    echo "PASS ${label}b rotate_column re-run: all $v2 rows on v2 and decrypt"
}
rotate_case 2 rot_call c
rotate_case 3 rot_text body

echo "PASS crash"
