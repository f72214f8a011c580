"""Concurrency: many sessions, each with its own keyring, encrypting,
decrypting, re-encrypting and switching keys at the same time.

pgbench runs CONC_CLIENTS (default 8) clients for CONC_SECONDS (default 60)
over six transaction scripts. Client N's keys live in client_keys (made with
generate_encryption_key() at setup), so the checker can rebuild every
client's keyring. All clients use the same version names, v1 and v2: a
session that used another client's key by mistake would not get a helpful
"unknown version" but a wrong key, which only GCM authentication can catch.
Each transaction sets its keys with set_config(…, true) and verifies what it
reads, raising an exception on a wrong plaintext, so a wrong result becomes a
pgbench error.

  insert     (3) encrypt new rows under v1 or v2 (jsonb and encrypted_text)
  read       (3) decrypt a random sample of the client's rows
  reencrypt  (2) re-encrypt random rows to the transaction's write version
  keychange  (1) switch write version and keyring inside one transaction:
                 v1 → v2 → back to v1, then a keyring without v1 must refuse
  cross      (1) another client's rows must fail authentication with my keys
  nokey      (1) no keys set: the previous transaction's keys must be gone

Afterwards: pgbench exited 0 with no failed or aborted client; every row
decrypts to its plaintext with its own client's keyring; no row decrypts
with the next client's keyring; no nonce repeats; both versions and
re-encrypted rows exist (so the workload did what it claims); no backend
crashed.
"""

import os
import re

import pytest

from conftest import start_cluster, unique_name

CLIENTS = int(os.environ.get("CONC_CLIENTS", "8"))
SECONDS_RUN = int(os.environ.get("CONC_SECONDS", "60"))

SETUP = r"""
CREATE EXTENSION pazpaz_crypto;

-- Each client's two keys. The keyring JSON is built from them wherever a
-- session needs it, so no key ever appears in a statement's text.
CREATE TABLE client_keys (client_id int PRIMARY KEY, k1 text NOT NULL, k2 text NOT NULL);
INSERT INTO client_keys
SELECT c, generate_encryption_key(), generate_encryption_key()
  FROM generate_series(0, :nclients - 1) c;
DO $$ BEGIN
    IF (SELECT count(DISTINCT k) FROM client_keys, LATERAL (VALUES (k1), (k2)) v(k)) <> 2 * (SELECT count(*) FROM client_keys) THEN
        RAISE EXCEPTION 'per-client keys are not all distinct';
    END IF;
END $$;

CREATE TABLE notes_v (
    id bigserial PRIMARY KEY, client_id int NOT NULL, plain text NOT NULL,
    env jsonb NOT NULL, touched int NOT NULL DEFAULT 0);
CREATE TABLE notes_t (
    id bigserial PRIMARY KEY, client_id int NOT NULL, plain text NOT NULL,
    body encrypted_text NOT NULL, touched int NOT NULL DEFAULT 0);
CREATE INDEX ON notes_v (client_id);
CREATE INDEX ON notes_t (client_id);

-- Sets a client's keyring (or only its v2 key) for the current transaction.
CREATE FUNCTION use_keys(cid int, write_version text, without_v1 boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('pazpaz.encryption_keys',
                       CASE WHEN without_v1 THEN json_build_object('v2', k2)
                            ELSE json_build_object('v1', k1, 'v2', k2) END::text, true),
            set_config('pazpaz.encryption_key_version', write_version, true)
       FROM client_keys WHERE client_id = cid;
END $$;

CREATE FUNCTION expect_zero(n bigint, what text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF n <> 0 THEN RAISE EXCEPTION '% (% rows)', what, n; END IF;
END $$;

-- Decrypts a random sample of a client's rows and compares with the
-- recorded plaintext. A decryption error propagates as is.
CREATE FUNCTION check_client_rows(cid int, n int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    FOR r IN SELECT id, plain, env FROM notes_v WHERE client_id = cid ORDER BY random() LIMIT n LOOP
        IF decrypt_field_versioned(r.env) IS DISTINCT FROM r.plain OR key_version(r.env) NOT IN ('v1', 'v2') THEN
            RAISE EXCEPTION 'wrong plaintext: notes_v row % of client %', r.id, cid;
        END IF;
    END LOOP;
    FOR r IN SELECT id, plain, body FROM notes_t WHERE client_id = cid ORDER BY random() LIMIT n LOOP
        IF r.body::text IS DISTINCT FROM r.plain OR key_version(r.body) NOT IN ('v1', 'v2') THEN
            RAISE EXCEPTION 'wrong plaintext: notes_t row % of client %', r.id, cid;
        END IF;
    END LOOP;
END $$;

CREATE FUNCTION new_plaintext(cid int) RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT format('client %s: %s %s', cid, md5(random()::text), repeat('ü', (random() * 40)::int))
$$;

-- A few rows per client before the clients start, so reads always find some.
DO $$
DECLARE c int;
BEGIN
    FOR c IN SELECT client_id FROM client_keys LOOP
        PERFORM use_keys(c, 'v1');
        INSERT INTO notes_v (client_id, plain, env)
        SELECT c, p, encrypt_field_versioned(p) FROM (SELECT new_plaintext(c) p FROM generate_series(1, 20)) s;
        INSERT INTO notes_t (client_id, plain, body)
        SELECT c, p, p::encrypted_text FROM (SELECT new_plaintext(c) p FROM generate_series(1, 20)) s;
    END LOOP;
END $$;
"""

# Every script is one explicit transaction: keys set with is_local = true
# last until its COMMIT only. (name: script, weight)
SCRIPTS = {
    "insert": r"""
\set v random(1, 2)
BEGIN;
SELECT use_keys(:client_id, 'v' || :v);
WITH ins AS (
    INSERT INTO notes_v (client_id, plain, env)
    SELECT :client_id, p, encrypt_field_versioned(p) FROM (SELECT new_plaintext(:client_id) p) s
    RETURNING plain, env)
SELECT expect_zero(count(*) FILTER (WHERE key_version(env) <> 'v' || :v
                                       OR decrypt_field_versioned(env) IS DISTINCT FROM plain),
                   'new jsonb envelope has the wrong version or plaintext') FROM ins;
WITH ins AS (
    INSERT INTO notes_t (client_id, plain, body)
    SELECT :client_id, p, p::encrypted_text FROM (SELECT new_plaintext(:client_id) p) s
    RETURNING plain, body)
SELECT expect_zero(count(*) FILTER (WHERE key_version(body) <> 'v' || :v OR body::text IS DISTINCT FROM plain),
                   'new encrypted_text has the wrong version or plaintext') FROM ins;
SELECT check_client_rows(:client_id, 3);
COMMIT;
""",
    "read": r"""
\set v random(1, 2)
BEGIN;
SELECT use_keys(:client_id, 'v' || :v);
SELECT check_client_rows(:client_id, 20);
COMMIT;
""",
    "reencrypt": r"""
\set v random(1, 2)
BEGIN;
SELECT use_keys(:client_id, 'v' || :v);
WITH upd AS (
    UPDATE notes_v SET env = reencrypt_field_versioned(env), touched = touched + 1
     WHERE id IN (SELECT id FROM notes_v WHERE client_id = :client_id ORDER BY random() LIMIT 10)
    RETURNING plain, env)
SELECT expect_zero(count(*) FILTER (WHERE key_version(env) <> 'v' || :v
                                       OR decrypt_field_versioned(env) IS DISTINCT FROM plain),
                   're-encrypted jsonb envelope has the wrong version or plaintext') FROM upd;
WITH upd AS (
    UPDATE notes_t SET body = reencrypt(body), touched = touched + 1
     WHERE id IN (SELECT id FROM notes_t WHERE client_id = :client_id ORDER BY random() LIMIT 10)
    RETURNING plain, body)
SELECT expect_zero(count(*) FILTER (WHERE key_version(body) <> 'v' || :v OR body::text IS DISTINCT FROM plain),
                   're-encrypted encrypted_text has the wrong version or plaintext') FROM upd;
COMMIT;
""",
    "keychange": r"""
BEGIN;
SELECT use_keys(:client_id, 'v1');
INSERT INTO notes_v (client_id, plain, env)
SELECT :client_id, p, encrypt_field_versioned(p) FROM (SELECT new_plaintext(:client_id) p) s
RETURNING id AS vid \gset
INSERT INTO notes_t (client_id, plain, body)
SELECT :client_id, p, p::encrypted_text FROM (SELECT new_plaintext(:client_id) p) s
RETURNING id AS tid \gset
-- New write version in the same transaction: re-encryption must follow it.
SELECT set_config('pazpaz.encryption_key_version', 'v2', true);
WITH upd AS (
    UPDATE notes_v SET env = reencrypt_field_versioned(env), touched = touched + 1 WHERE id = :vid
    RETURNING plain, env)
SELECT expect_zero(count(*) FILTER (WHERE key_version(env) <> 'v2' OR decrypt_field_versioned(env) IS DISTINCT FROM plain),
                   'jsonb row not on v2 after switching the write version') FROM upd;
WITH upd AS (
    UPDATE notes_t SET body = reencrypt(body), touched = touched + 1 WHERE id = :tid
    RETURNING plain, body)
SELECT expect_zero(count(*) FILTER (WHERE key_version(body) <> 'v2' OR body::text IS DISTINCT FROM plain),
                   'encrypted_text row not on v2 after switching the write version') FROM upd;
-- Back to v1 by name.
WITH upd AS (
    UPDATE notes_v SET env = reencrypt_field_versioned(env, 'v1'), touched = touched + 1 WHERE id = :vid
    RETURNING plain, env)
SELECT expect_zero(count(*) FILTER (WHERE key_version(env) <> 'v1' OR decrypt_field_versioned(env) IS DISTINCT FROM plain),
                   'jsonb row not back on v1') FROM upd;
WITH upd AS (
    UPDATE notes_t SET body = reencrypt(body, 'v1'), touched = touched + 1 WHERE id = :tid
    RETURNING plain, body)
SELECT expect_zero(count(*) FILTER (WHERE key_version(body) <> 'v1' OR body::text IS DISTINCT FROM plain),
                   'encrypted_text row not back on v1') FROM upd;
-- A keyring without v1: a keyring cached from before the change would still
-- decrypt these v1 rows.
SELECT use_keys(:client_id, 'v2', true);
DO $$
DECLARE refused int := 0;
BEGIN
    BEGIN
        PERFORM decrypt_field_versioned(env) FROM notes_v WHERE id = :vid;
    EXCEPTION WHEN undefined_object THEN refused := refused + 1;
    END;
    BEGIN
        PERFORM body::text FROM notes_t WHERE id = :tid;
    EXCEPTION WHEN undefined_object THEN refused := refused + 1;
    END;
    IF refused <> 2 THEN
        RAISE EXCEPTION 'v1 rows of client % still decrypt after v1 left the keyring', :client_id;
    END IF;
END $$;
COMMIT;
""",
    "cross": r"""
\set other (:client_id + random(1, :nclients - 1)) % :nclients
BEGIN;
SELECT use_keys(:client_id, 'v1');
DO $$
DECLARE r record; refused int := 0; tried int := 0;
BEGIN
    FOR r IN (SELECT env AS v, NULL::encrypted_text AS t FROM notes_v WHERE client_id = :other ORDER BY random() LIMIT 3)
             UNION ALL
             (SELECT NULL, body FROM notes_t WHERE client_id = :other ORDER BY random() LIMIT 3) LOOP
        tried := tried + 1;
        BEGIN
            IF r.v IS NOT NULL THEN PERFORM decrypt_field_versioned(r.v); ELSE PERFORM r.t::text; END IF;
        EXCEPTION WHEN data_exception THEN
            -- Only "Decryption failed (wrong key or tampering)" counts.
            IF SQLSTATE <> '22000' THEN RAISE; END IF;
            refused := refused + 1;
        END;
    END LOOP;
    IF tried = 0 OR refused <> tried THEN
        RAISE EXCEPTION 'client % decrypted % of % rows of client % (key bleed)', :client_id, tried - refused, tried, :other;
    END IF;
END $$;
COMMIT;
""",
    "nokey": r"""
BEGIN;
DO $$
DECLARE refused boolean := false;
BEGIN
    BEGIN
        PERFORM decrypt_field_versioned(env) FROM notes_v WHERE client_id = :client_id LIMIT 1;
    EXCEPTION WHEN object_not_in_prerequisite_state THEN refused := true;
    END;
    IF NOT refused THEN
        RAISE EXCEPTION 'client %: a key outlived the transaction that set it', :client_id;
    END IF;
END $$;
COMMIT;
""",
}
WEIGHTS = {"insert": 3, "read": 3, "reencrypt": 2, "keychange": 1, "cross": 1, "nokey": 1}

OWN_KEYRING = r"""
-- Every row decrypts to its plaintext with its own client's keyring.
DO $$
DECLARE c int; bad bigint; n bigint;
BEGIN
    FOR c IN SELECT client_id FROM client_keys ORDER BY 1 LOOP
        PERFORM use_keys(c, 'v1');
        SELECT count(*) FILTER (WHERE decrypt_field_versioned(env) IS DISTINCT FROM plain), count(*)
          INTO bad, n FROM notes_v WHERE client_id = c;
        IF bad <> 0 OR n < 20 THEN RAISE EXCEPTION 'client %: % of % jsonb rows wrong', c, bad, n; END IF;
        SELECT count(*) FILTER (WHERE body::text IS DISTINCT FROM plain), count(*)
          INTO bad, n FROM notes_t WHERE client_id = c;
        IF bad <> 0 OR n < 20 THEN RAISE EXCEPTION 'client %: % of % encrypted_text rows wrong', c, bad, n; END IF;
    END LOOP;
END $$;
"""

# No row decrypts with the next client's keyring: each attempt must fail GCM
# authentication (same version names, different keys).
OTHER_KEYRING = r"""

-- No row decrypts with the next client's keyring: each attempt must fail GCM
-- authentication (same version names, different keys).
CREATE FUNCTION opens(v jsonb, t encrypted_text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF v IS NOT NULL THEN PERFORM decrypt_field_versioned(v); ELSE PERFORM t::text; END IF;
    RETURN true;
EXCEPTION WHEN data_exception THEN
    IF SQLSTATE <> '22000' THEN RAISE; END IF;
    RETURN false;
END $$;
DO $$
DECLARE c int; other int; opened bigint; n bigint;
BEGIN
    FOR c IN SELECT client_id FROM client_keys ORDER BY 1 LOOP
        other := (c + 1) % (SELECT count(*) FROM client_keys);
        PERFORM use_keys(other, 'v1');
        SELECT count(*) FILTER (WHERE opens(env, NULL)), count(*) INTO opened, n FROM notes_v WHERE client_id = c;
        IF opened <> 0 OR n = 0 THEN RAISE EXCEPTION 'client %''s keyring opened % of % jsonb rows of client %', other, opened, n, c; END IF;
        SELECT count(*) FILTER (WHERE opens(NULL, body)), count(*) INTO opened, n FROM notes_t WHERE client_id = c;
        IF opened <> 0 OR n = 0 THEN RAISE EXCEPTION 'client %''s keyring opened % of % encrypted_text rows of client %', other, opened, n, c; END IF;
    END LOOP;
END $$;
"""

NO_NONCE_REPEATS = r"""

-- (Each check below ends in \gset only to keep its void result out of the
-- output; expect_zero raises when its count is not zero.)
-- No nonce repeats across all sessions (a generator state shared between
-- backends would repeat them).
SELECT expect_zero(count(*) - count(DISTINCT nonce), 'repeated nonces')
  FROM (SELECT substring(decode(env->>'ciphertext', 'base64') FROM 1 FOR 12) AS nonce FROM notes_v
        UNION ALL
        SELECT substring(b FROM 3 + get_byte(b, 1) FOR 12) FROM (SELECT body::bytea AS b FROM notes_t) s) n \gset
"""

WORKLOAD_COVERED = r"""

-- The workload really exercised what it claims: both versions per client,
-- and re-encrypted rows.
SELECT expect_zero(count(*), 'clients without rows on both versions')
  FROM (SELECT client_id FROM notes_v GROUP BY 1 HAVING count(DISTINCT key_version(env)) < 2
        UNION ALL
        SELECT client_id FROM notes_t GROUP BY 1 HAVING count(DISTINCT key_version(body)) < 2) s \gset
SELECT expect_zero(count(*), 'tables without re-encrypted rows')
  FROM (SELECT WHERE NOT EXISTS (SELECT FROM notes_v WHERE touched > 0)
        UNION ALL
        SELECT WHERE NOT EXISTS (SELECT FROM notes_t WHERE touched > 0)) s \gset
SELECT format('rows: %s jsonb, %s encrypted_text; re-encrypted at least once: %s and %s',
              (SELECT count(*) FROM notes_v), (SELECT count(*) FROM notes_t),
              (SELECT count(*) FROM notes_v WHERE touched > 0), (SELECT count(*) FROM notes_t WHERE touched > 0)) AS summary \gset
\echo :summary
"""


def psql(c, script: str, **kw):
    r = c.psql("-q", "-v", "ON_ERROR_STOP=1", input=script, **kw)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.fixture(scope="module")
def run():
    c = start_cluster(unique_name("it_conc"), None, "max_connections = 40", "log_min_messages = warning")
    try:
        r = c.psql("-q", "-v", "ON_ERROR_STOP=1", "-v", f"nclients={CLIENTS}", input=SETUP)
        assert r.returncode == 0, r.stderr[-3000:]
        work = c.workdir()
        files = []
        for name, text in SCRIPTS.items():
            (work / f"{name}.sql").write_text(text)
            files += ["-f", f"{work / name}.sql@{WEIGHTS[name]}"]
        c.pgbench = c.tool("pgbench", "-n", "-c", CLIENTS, "-j", 2, "-T", SECONDS_RUN, "-D", f"nclients={CLIENTS}",
                           *files, timeout=SECONDS_RUN + 600)
        yield c
    finally:
        c.remove()


def test_pgbench_ran_every_script_without_a_failure(run):
    r = run.pgbench
    assert r.returncode == 0 and "aborted" not in r.stderr, \
        f"pgbench exited with status {r.returncode}:\n" + "\n".join(r.stderr.splitlines()[:40])
    failed = re.search(r"^number of failed transactions: ([0-9]+)", r.stdout, re.M)
    processed = re.search(r"^number of transactions actually processed: ([0-9]+)", r.stdout, re.M)
    assert failed and failed.group(1) == "0", f"pgbench reports failed transactions:\n{r.stdout}"
    assert processed and int(processed.group(1)) >= 1000, f"the workload did not really run:\n{r.stdout}"
    # Every script ran (per-script counts follow each "SQL script N" header).
    scripts_run = len(re.findall(r"^ - [1-9][0-9]* transactions", r.stdout, re.M))
    assert scripts_run == 6, f"only {scripts_run} of 6 transaction scripts ran:\n{r.stdout}"


def test_every_row_decrypts_with_its_own_clients_keyring(run):
    psql(run, OWN_KEYRING)


def test_no_row_decrypts_with_another_clients_keyring(run):
    psql(run, OTHER_KEYRING)


def test_no_nonce_repeats(run):
    psql(run, NO_NONCE_REPEATS)


def test_the_workload_used_both_versions_and_reencrypted(run):
    out = psql(run, WORKLOAD_COVERED)
    assert "rows:" in out, out


def test_no_backend_crashed(run):
    crashes = [line for line in run.log.read_text(errors="replace").splitlines()
               if "terminated by signal" in line or "PANIC" in line]
    assert crashes == [], "a backend crashed:\n" + "\n".join(crashes)
