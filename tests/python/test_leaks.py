"""Security evidence: keys and protected plaintext stay out of sight.

A real server logs everything it can (every statement, every bind parameter,
debug5) and tracks every statement in pg_stat_statements (when the
installation has that module: PostgreSQL 16's pgserver build has not, and
there only its sweep is skipped). Sessions (psycopg
with server-side parameters, and psql) then set keys in every supported and
several unsupported ways, use every function, rotate, and trigger every error
the extension can raise. Afterwards no key (base64, hex, urlsafe, or a
20-character prefix of those) and no protected plaintext may appear in:
  - the server log,
  - pg_stat_statements (view and its query-text file),
  - pg_stat_activity.query as seen by a non-superuser allowed to read it,
  - pg_settings / SHOW ALL,
  - any error, notice, hint or context text a client received.
Positive controls prove each of those searches can fail.

The tests run in order on one server and build on each other (sessions held
open, texts collected, secrets registered); the sweeps come last:
  1a-1d. sessions that use keys: psycopg, other ways to set keys, psql,
         refused sources (ALTER ROLE/DATABASE/SYSTEM, function SET, conf)
  2. other roles cannot read keys; encryption_status() shows no key
  3. malformed inputs: exact SQLSTATE and message, backend survives
  4. positive controls, then the sweeps of every place listed above

Output (with -s): PASS / FAIL / KNOWN-LIMITATION lines only; keys are never
printed.
"""

import base64
import hashlib
import json
import os
import re
import secrets
import subprocess
import time

import psycopg
import pytest
from psycopg import ClientCursor
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import have_library, pg_tool, require_library, start_cluster, unique_name

pytestmark = pytest.mark.every_version

# Set by the leak_server fixture.
LOG = PGDATA = HOST = PORT = POSTMASTER_START = SERVER_VERSION_NUM = None
STARTED = time.monotonic()

# ---------------------------------------------------------------------------
# Secrets, and how to look for them
# ---------------------------------------------------------------------------

class Secret:
    """A value that must not show up. `forms` are the strings searched for:
    a key in standard base64 (with and without padding), hex and urlsafe
    base64, plus 20-character prefixes so that a truncated copy is caught."""

    def __init__(self, label, kind, forms):
        self.label, self.kind = label, kind
        self.forms = [f for f in dict.fromkeys(forms) if f]

    def found_in(self, text):
        low = text.lower()
        return any(f in text or (f.isalnum() and f.lower() in low) for f in self.forms)


SECRETS = []


def new_key(label, nbytes=32, want_urlsafe_chars=False):
    """A fresh random key (or a wrong-size one); returns its base64 text."""
    while True:
        raw = secrets.token_bytes(nbytes)
        b64 = base64.b64encode(raw).decode()
        if not want_urlsafe_chars or ("+" in b64 or "/" in b64):
            break
    url = base64.urlsafe_b64encode(raw).decode()
    hx = raw.hex()
    SECRETS.append(Secret(label, "key", [b64, b64.rstrip("="), b64[:20], hx, hx[:24], url, url.rstrip("="), url[:20]]))
    return b64


def marker_seed(label, kind="plaintext"):
    """Protected plaintext is made on the server as leak_marker(seed) =
    'PZM' || md5(seed): the statement text and bind parameters carry only the
    seed, so the plaintext exists only inside the server (as it would for a
    value written long ago). Any copy of it outside is a leak."""
    seed = secrets.token_hex(12)
    digest = hashlib.md5(seed.encode()).hexdigest()
    SECRETS.append(Secret(label, kind, ["PZM" + digest, digest]))
    return seed, "PZM" + digest


def client_marker(label):
    """Plaintext the client sends in a COPY data stream (never logged by
    log_statement): it must not reach the server log by another path."""
    m = "CPY" + secrets.token_hex(12)
    SECRETS.append(Secret(label, "copy", [m]))
    return m


def scrub(text):
    """Replaces every secret form in `text` (for printing diagnostics)."""
    text = str(text)
    for s in SECRETS:
        for f in sorted(s.forms, key=len, reverse=True):
            text = text.replace(f, f"<{s.label}>")
    return text


# ---------------------------------------------------------------------------
# Assertions
# ---------------------------------------------------------------------------

FAILED = []
KNOWN = []


def check(name, ok, why=""):
    line = ("PASS " if ok else "FAIL ") + name
    if not ok and why:
        line += f"  [{scrub(why)}]"
    print(line, flush=True)
    if not ok:
        FAILED.append(name)
    return ok


def known_limitation(name, why):
    print(f"KNOWN-LIMITATION {name}  [{why}]", flush=True)
    KNOWN.append(name)


def section(title):
    print(f"\n--- {title} ---", flush=True)


def sweep(location, text, kinds=("key", "plaintext", "copy"), known=None):
    """One FAIL line per secret found in `text`; one PASS line if none.
    `known` maps a label to the reason it is a documented limitation."""
    known = known or {}
    leaked = [s for s in SECRETS if s.kind in kinds and s.found_in(text)]
    for s in leaked:
        if s.label in known:
            known_limitation(f"{location}: {s.label} is visible", known[s.label])
        else:
            check(f"{location}: {s.label} must not appear", False, "found")
    unexpected = [s for s in leaked if s.label not in known]
    n = len([s for s in SECRETS if s.kind in kinds])
    if not unexpected:
        check(f"{location}: none of {n} secrets ({', '.join(kinds)}) found", True)


def control(location, text, needle, what):
    """Positive control: proves that the search in `location` finds things."""
    check(f"control: {location} does show {what}", needle in text, "search found nothing")


# ---------------------------------------------------------------------------
# Connections; every error and notice text a client receives is collected
# ---------------------------------------------------------------------------

CLIENT_TEXTS = []   # (origin, field, text)
FIELDS = ("message_primary", "message_detail", "message_hint", "context", "internal_query")


def record(origin, diag):
    for f in FIELDS:
        v = getattr(diag, f, None)
        if v:
            CLIENT_TEXTS.append((origin, f, v))


def connect(user="postgres", **kw):
    kw.setdefault("prepare_threshold", 0)   # named server-side prepared statements
    conn = psycopg.connect(host=HOST, port=PORT, dbname="postgres", user=user, autocommit=True, **kw)
    conn.add_notice_handler(lambda d, u=user: record(f"notice to {u}", d))
    return conn


def run(conn, sql, params=None):
    """('ok', rows) or (sqlstate, primary message); error texts are recorded."""
    try:
        cur = conn.execute(sql, params)
        return "ok", (cur.fetchall() if cur.description else [])
    except psycopg.Error as e:
        record("error", e.diag)
        CLIENT_TEXTS.append(("error", "str", str(e)))
        return e.sqlstate, e.diag.message_primary


def expect_error(conn, name, sql, params, sqlstate, message):
    got = run(conn, sql, params)
    return check(f"{name} -> {sqlstate} {message}", got == (sqlstate, message), f"got {got[0]} {got[1]!r}")


def one(conn, sql, params=None):
    return conn.execute(sql, params).fetchone()[0]


def set_key(conn, name, value, local=False):
    """The recommended way: a parameterised set_config."""
    conn.execute(f"SELECT set_config('{name}', %s, %s)", (value, local))


def use_single(conn, key):
    set_key(conn, "pazpaz.encryption_keys", "")
    set_key(conn, "pazpaz.encryption_key_version", "")
    set_key(conn, "pazpaz.encryption_key", key)


def use_ring(conn, ring, version):
    set_key(conn, "pazpaz.encryption_key", "")
    set_key(conn, "pazpaz.encryption_keys", json.dumps(ring))
    set_key(conn, "pazpaz.encryption_key_version", version or "")


def fingerprint(b64):
    h = hashlib.sha256(b"pazpaz_crypto key fingerprint v1\0" + base64.b64decode(b64))
    return h.digest()[:4].hex()


# ---------------------------------------------------------------------------
# Keys and markers of this run
# ---------------------------------------------------------------------------

K1 = new_key("keyring key v1 (parameterised set_config)")
K2 = new_key("keyring key v2 (parameterised set_config)")
K_SINGLE = new_key("single key (parameterised set_config)")
K_LOCAL = new_key("per-transaction key (set_config is_local = true)")
K_WRONG = new_key("wrong key (decrypt with another key)")
K_PSQL = new_key("key set from psql (set_config with :'var')")
K_PSQL_LOCAL = new_key("key set from psql per transaction")
K_OPT = new_key("key in connection startup options (-c)")
K_FORBIDDEN = new_key("key in refused ALTER ROLE/DATABASE/SYSTEM and function SET")
K_CONF = new_key("key in postgresql.conf (refused at reload)")
K_BAD16 = new_key("16-byte key refused at SET", 16)
K_BAD31 = new_key("31-byte key refused at SET", 31)
K_BAD33 = new_key("33-byte key refused at SET", 33)
K_URLSAFE = new_key("urlsafe-encoded key refused at SET", want_urlsafe_chars=True)
K_OBS = new_key("key of the pg_read_all_settings role")
LABEL_LITERAL = "key in a literal SET statement"
LABEL_CLIENT = "key interpolated client-side into set_config (psql :'var', psycopg ClientCursor)"
K_LITERAL = new_key(LABEL_LITERAL)
K_CLIENT = new_key(LABEL_CLIENT)
K_APP = new_key("key of a non-superuser role (parameterised set_config)")
K_GENERIC = new_key("key set with set_config($1, $2): setting name bound too")
K_PREPARED = new_key("key passed to SQL-level PREPARE/EXECUTE (psql)")
K_DECOY = new_key("decoy key")
SECRETS.pop()  # a control, not a secret: it is only ever SELECTed and must be found

SEED_ROWS = [marker_seed(f"plaintext of stored row {i}") for i in range(3)]
SEED_FAIL, M_FAIL = marker_seed("plaintext of a row failing NOT NULL / CHECK")
SEED_LOCAL, M_LOCAL = marker_seed("plaintext encrypted under a per-transaction key")
SEED_PSQL, M_PSQL = marker_seed("plaintext handled in psql")
SEED_PAR, M_PAR = marker_seed("plaintext decrypted in parallel workers")
SEED_DEC_ROW, _ = marker_seed("plaintext decrypted by decrypt_field_versioned into a failing row")
SEED_DEC_PART, _ = marker_seed("plaintext decrypted by decrypt_field_versioned into a partition-key detail")
M_COPY_LONG = client_marker("COPY plaintext too long for encrypted_text(5)")
M_COPY_NULL = client_marker("COPY plaintext of a row failing NOT NULL")
CONTROL = "CTRL" + secrets.token_hex(12)   # must be found everywhere it is put


def verdict(start):
    """Fails the test if any check since `start` failed (names only: keys
    and markers are never printed)."""
    failed = FAILED[start:]
    assert not failed, f"{len(failed)} checks failed:\n  " + "\n  ".join(failed)


held = []   # sessions kept open and idle for the pg_stat_activity look


@pytest.fixture(scope="module")
def leak_server():
    """Log and track everything: the worst realistic logging configuration.
    pg_start writes its own shared_preload_libraries line; the later one wins.
    pg_stat_statements is loaded when the installation has it (its sweep is
    skipped otherwise; every other check runs)."""
    global LOG, PGDATA, HOST, PORT, POSTMASTER_START, SERVER_VERSION_NUM
    pgss = have_library("pg_stat_statements")
    tracking = (["shared_preload_libraries = 'pazpaz_crypto,pg_stat_statements'",
                 "pg_stat_statements.track_utility = on"] if pgss else [])
    c = start_cluster(unique_name("it_leak"), None,
                      "log_statement = all",
                      "log_min_messages = debug5",
                      "log_min_error_statement = debug5",
                      "log_parameter_max_length = -1",
                      "log_parameter_max_length_on_error = -1",
                      "log_min_duration_statement = 0",
                      *tracking,
                      "log_connections = on",
                      "log_disconnections = on")
    LOG, PGDATA, HOST, PORT = str(c.log), str(c.data), c.host, c.port
    try:
        # The postmaster must survive everything (compared at the end).
        with connect() as admin:
            POSTMASTER_START = one(admin, "SELECT pg_postmaster_start_time()")
            SERVER_VERSION_NUM = int(one(admin, "SHOW server_version_num"))
            admin.execute("CREATE EXTENSION pazpaz_crypto")
            if pgss:
                admin.execute("CREATE EXTENSION pg_stat_statements")
            admin.execute("""
                CREATE FUNCTION leak_marker(seed text) RETURNS text
                LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT 'PZM' || md5(seed) $$""")
            # app: an ordinary application role. obs: a monitoring role that may read
            # every query text and every setting. nobody: no privileges at all.
            admin.execute("CREATE ROLE app LOGIN")
            admin.execute("CREATE ROLE obs LOGIN IN ROLE pg_read_all_stats, pg_read_all_settings")
            admin.execute("CREATE ROLE nobody LOGIN")
            admin.execute("GRANT CREATE ON SCHEMA public TO app")
        yield c
    finally:
        for conn in held:
            conn.close()
        c.remove()


# ===========================================================================
def test_1a_psycopg_superuser_keyring_rotation_encrypted_text(leak_server):
    """1a. psycopg, superuser, server-side parameters: keyring, rotation, encrypted_text"""
    global settings_texts
    start = len(FAILED)
    section('1a. psycopg, superuser, server-side parameters: keyring, rotation, encrypted_text')
    a = connect()
    held.append(a)
    use_ring(a, {"v1": K1, "v2": K2}, "v1")
    a.execute("""CREATE TABLE notes (id int PRIMARY KEY, v jsonb, b bytea, e encrypted_text, s encrypted_text(40))""")
    a.execute("CREATE TABLE vault (a jsonb, b jsonb)")
    for i, (seed, _) in enumerate(SEED_ROWS):
        a.execute("""INSERT INTO notes VALUES (%s,
                        encrypt_field_versioned(leak_marker(%s)),
                        encrypt_field(leak_marker(%s), 'notes.b:' || %s),
                        leak_marker(%s), leak_marker(%s))""", (i, seed, seed, i, seed, seed))
    a.execute("INSERT INTO vault SELECT encrypt_field_versioned(leak_marker(%s)), encrypt_field_versioned(leak_marker(%s))",
              (SEED_DEC_ROW, SEED_DEC_PART))
    rows = a.execute("""SELECT decrypt_field_versioned(v), decrypt_field(b, 'notes.b:' || id), e::text, s::text
                        FROM notes ORDER BY id""").fetchall()
    check("round trip of versioned, aad-bound and encrypted_text values",
          rows == [(m, m, m, m) for _, m in SEED_ROWS])
    check("encrypt_field_versioned with an explicit version",
          one(a, "SELECT key_version(encrypt_field_versioned(leak_marker(%s), 'v2'))", (SEED_ROWS[0][0],)) == "v2")
    check("encrypt/decrypt_field_versioned with aad",
          one(a, "SELECT decrypt_field_versioned(encrypt_field_versioned(leak_marker(%s), 'v1', 'x'), 'x')",
              (SEED_ROWS[0][0],)) == SEED_ROWS[0][1])

    # Rotation v1 -> v2: a plain UPDATE for the jsonb column, CALL for encrypted_text.
    set_key(a, "pazpaz.encryption_key_version", "v2")
    a.execute("UPDATE notes SET v = reencrypt_field_versioned(v)")
    a.execute("CALL rotate_column('notes', 'e', 2)")
    a.execute("CALL rotate_column('notes', 's', 1, 'v2')")
    check("rotation moved every value to v2",
          one(a, "SELECT bool_and(key_version(v) = 'v2' AND key_version(e) = 'v2' AND key_version(s) = 'v2') FROM notes"))
    check("reencrypt(encrypted_text, version) and back",
          one(a, "SELECT key_version(reencrypt(reencrypt(e, 'v1'))) FROM notes WHERE id = 0") == "v2")
    check("reencrypt_field_versioned(envelope, version)",
          one(a, "SELECT key_version(reencrypt_field_versioned(v, 'v1')) FROM notes WHERE id = 0") == "v1")
    check("decrypt after rotation",
          one(a, "SELECT string_agg(decrypt_field_versioned(v) || e::text, ',' ORDER BY id) FROM notes")
          == ",".join(m + m for _, m in SEED_ROWS))
    status = a.execute("SELECT version, is_current, fingerprint FROM encryption_status() ORDER BY version").fetchall()
    check("encryption_status() lists versions, the write version and fingerprints",
          status == [("v1", False, fingerprint(K1)), ("v2", True, fingerprint(K2))])

    # Parallel workers get the leader's keys (and log at debug5 too).
    a.execute("CREATE TABLE par (id int, b bytea)")
    a.execute("INSERT INTO par SELECT g, encrypt_field(leak_marker(%s)) FROM generate_series(1, 20000) g", (SEED_PAR[0],))
    a.execute("ANALYZE par")
    for g in ("parallel_setup_cost = 0", "parallel_tuple_cost = 0",
              "min_parallel_table_scan_size = 0", "max_parallel_workers_per_gather = 2"):
        a.execute(f"SET {g}")
    plan = "\n".join(r[0] for r in a.execute(
        f"EXPLAIN (ANALYZE, COSTS OFF) SELECT count(*) FROM par WHERE decrypt_field(b) = leak_marker('{SEED_PAR[0]}')"))
    check("decryption runs in parallel workers", "Workers Launched: 2" in plan, "no parallel plan")
    check("parallel workers decrypt with the leader's keys",
          one(a, "SELECT count(*) FROM par WHERE decrypt_field(b) = leak_marker(%s)", (SEED_PAR[0],)) == 20000)
    a.execute("RESET ALL")
    use_ring(a, {"v1": K1, "v2": K2}, "v2")  # RESET ALL also reset the keys

    # Single-key mode, and an error in the very statement that sets the key: the
    # error context then lists the bind parameters.
    use_single(a, K_SINGLE)
    check("single key is version v1", one(a, "SELECT key_version(encrypt_field_versioned('x'))") == "v1")
    expect_error(a, "error in the statement that sets a key",
                 "SELECT set_config('pazpaz.encryption_key', %s, false), 1/0", (K_SINGLE,),
                 "22012", "division by zero")

    # "Failing row contains (…)": PostgreSQL formats the row with the columns'
    # output functions. The server log must not get the plaintext; the client
    # (which holds the key) does, by design, so that detail is not collected.
    def violate(conn, name, sql, params, state):
        try:
            conn.execute(sql, params)
            check(f"{name} is raised", False, "no error")
            return ""
        except psycopg.Error as e:
            check(f"{name} is raised ({state})", e.sqlstate == state, e.sqlstate)
            CLIENT_TEXTS.extend(("error", f, getattr(e.diag, f)) for f in FIELDS
                                if getattr(e.diag, f) and f != "message_detail")
            return e.diag.message_detail or ""


    a.execute("CREATE TABLE strict_notes (id int CHECK (id > 0), e encrypted_text, must text NOT NULL)")
    details = [violate(a, "NOT NULL violation", "INSERT INTO strict_notes SELECT 1, leak_marker(%s), NULL",
                       (SEED_FAIL,), "23502"),
               violate(a, "CHECK violation", "INSERT INTO strict_notes SELECT -1, leak_marker(%s), 'x'",
                       (SEED_FAIL,), "23514")]
    check("the client does receive the decrypted failing row (by design)",
          all(d.startswith("Failing row contains") and M_FAIL in d for d in details))

    # The same back door with values decrypted by the functions (not by the
    # type's output function) into plain text columns: an archive or export
    # INSERT … SELECT decrypt_field_versioned(…) that violates a constraint. In a
    # fresh backend, so that nothing was output by encrypted_text before.
    a.execute("CREATE TABLE export (p text, must text NOT NULL)")
    a.execute("CREATE TABLE export_part (p text) PARTITION BY LIST (p)")
    with connect() as fresh:
        use_ring(fresh, {"v1": K1, "v2": K2}, "v2")
        violate(fresh, "NOT NULL violation of decrypted text", "INSERT INTO export SELECT decrypt_field_versioned(a), NULL FROM vault",
                None, "23502")
        violate(fresh, "no partition for decrypted text", "INSERT INTO export_part SELECT decrypt_field_versioned(b) FROM vault",
                None, "23514")

    # COPY data is never logged by log_statement; an error in it must not put
    # the plaintext into the server log through the error context.
    a.execute("CREATE TABLE copy_short (id int, e encrypted_text(5))")
    for table, row, state in (("copy_short", (1, M_COPY_LONG), "22001"),
                              ("strict_notes", (1, M_COPY_NULL, None), "23502")):
        try:
            with a.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN") as cp:
                cp.write_row(row)
            check(f"COPY into {table} fails", False, "no error")
        except psycopg.Error as e:
            record("error", e.diag)
            check(f"COPY into {table} fails ({state})", e.sqlstate == state, e.sqlstate)

    # Per transaction (the way behind a transaction-mode pooler).
    use_single(a, "")
    with a.transaction():
        set_key(a, "pazpaz.encryption_key", K_LOCAL, local=True)
        a.execute("CREATE TABLE local_notes (b bytea)")
        a.execute("INSERT INTO local_notes SELECT encrypt_field(leak_marker(%s))", (SEED_LOCAL,))
        check("is_local key works inside its transaction",
              one(a, "SELECT decrypt_field(b) FROM local_notes") == M_LOCAL)
    check("is_local key is gone after COMMIT",
          a.execute("SELECT * FROM encryption_status()").fetchall() == [])

    # Settings views as seen by the superuser while keys are set.
    use_ring(a, {"v1": K1, "v2": K2}, "v2")
    a.execute(f"SET application_name = '{CONTROL}'")
    settings_texts = {
        "pg_settings (superuser with keys set)": repr(a.execute("SELECT * FROM pg_settings").fetchall()),
        "SHOW ALL (superuser with keys set)": repr(a.execute("SHOW ALL").fetchall()),
        "EXPLAIN (SETTINGS) (superuser with keys set)": repr(a.execute("EXPLAIN (SETTINGS) SELECT 1").fetchall()),
    }
    check("pg_settings has no row for the key settings",
          one(a, "SELECT count(*) FROM pg_settings WHERE name IN ('pazpaz.encryption_key', 'pazpaz.encryption_keys')") == 0)
    a.execute("RESET application_name")
    # Leave this session idle right after the recommended call.
    set_key(a, "pazpaz.encryption_key_version", "v2")
    use_single(a, "")
    set_key(a, "pazpaz.encryption_keys", json.dumps({"v1": K1, "v2": K2}))

    # A second session holding a per-transaction key, idle in transaction.
    a2 = connect()
    held.append(a2)
    a2.execute("BEGIN")
    set_key(a2, "pazpaz.encryption_key", K_LOCAL, local=True)
    verdict(start)


# ===========================================================================
def test_1b_other_ways_keys_reach_a_session(leak_server):
    """1b. other ways keys reach a session"""
    global g
    start = len(FAILED)
    section('1b. other ways keys reach a session')
    # Startup options: allowed (session source), must stay out of logs as well.
    o = connect(options=f"-c pazpaz.encryption_key={K_OPT}")
    check("key from startup options works",
          one(o, "SELECT fingerprint FROM encryption_status()") == fingerprint(K_OPT))
    o.close()

    # A literal SET in its own session, by the application role: the log must be
    # redacted; pg_stat_statements/pg_stat_activity keep the text (see below).
    lit = connect("app", prepare_threshold=None)
    held.append(lit)
    lit.execute(f"SET pazpaz.encryption_key = '{K_LITERAL}'")
    check("literal SET works for a non-superuser", one(lit, "SELECT decrypt_field(encrypt_field('x'))") == "x")
    settings_texts["pg_settings (non-superuser with key set)"] = repr(lit.execute("SELECT * FROM pg_settings").fetchall())
    settings_texts["SHOW ALL (non-superuser with key set)"] = repr(lit.execute("SHOW ALL").fetchall())
    lit.execute(f"SET pazpaz.encryption_key = '{K_LITERAL}'")  # idle on the literal SET

    # Client-side interpolation (what psql's :'var' and ClientCursor do).
    cc = psycopg.connect(host=HOST, port=PORT, dbname="postgres", user="postgres", autocommit=True,
                         cursor_factory=ClientCursor)
    cc.add_notice_handler(lambda d: record("notice to postgres", d))
    held.append(cc)
    cc.execute("SELECT set_config('pazpaz.encryption_key', %s, false)", (K_CLIENT,))

    # The setting name bound as a parameter too (a generic "set a session
    # variable" helper). The statement text then does not name the setting.
    g = connect()
    held.append(g)
    g.execute("SELECT set_config(%s, %s, false)", ("pazpaz.encryption_key", K_GENERIC))
    check("set_config($1, $2) sets the key", one(g, "SELECT count(*) FROM encryption_status()") == 1)
    verdict(start)


# ===========================================================================
def test_1c_psql_session(leak_server):
    """1c. psql session"""
    global psql_stdout
    start = len(FAILED)
    section('1c. psql session')
    PSQL_SCRIPT = r"""
    \set VERBOSITY verbose
    \set SHOW_CONTEXT always
    \getenv k PAZPAZ_K
    \getenv kl PAZPAZ_K_LOCAL
    \getenv klit PAZPAZ_K_LITERAL
    \getenv kprep PAZPAZ_K_PREPARED
    \getenv kbad PAZPAZ_K_BAD
    \getenv seed PAZPAZ_SEED
    -- psql 15 has no \bind: the key is a quoted variable in set_config.
    SELECT set_config('pazpaz.encryption_key', :'k', false) IS NOT NULL AS key_set;
    CREATE TEMP TABLE p (id int, e encrypted_text(40), v jsonb, b bytea);
    INSERT INTO p SELECT 1, leak_marker(:'seed'), encrypt_field_versioned(leak_marker(:'seed')), encrypt_field(leak_marker(:'seed'));
    SELECT e::text = leak_marker(:'seed') AND decrypt_field_versioned(v) = e::text AND decrypt_field(b) = e::text AS psql_roundtrip FROM p;
    BEGIN;
    SELECT set_config('pazpaz.encryption_key', :'kl', true) IS NOT NULL AS local_key_set;
    SELECT decrypt_field(b) AS wrong_key_must_fail FROM p;
    ROLLBACK;
    SELECT decrypt_field('\x0102'::bytea);
    SELECT decrypt_field_versioned('{"version": "v7", "ciphertext": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="}');
    SELECT 'much too long for forty characters, really much too long'::encrypted_text(40);
    SELECT set_config('pazpaz.encryption_key', :'kbad', false);
    SET pazpaz.encryption_key = :'kbad';
    SHOW pazpaz.encryption_key;
    SELECT current_setting('pazpaz.encryption_key') AS current_setting;
    -- A literal SET, as a psql user would type it.
    SET pazpaz.encryption_key = :'klit';
    SELECT count(*) AS literal_key_loaded FROM encryption_status();
    -- The rotation runbook's keyring, built from variables.
    RESET pazpaz.encryption_key;
    SELECT set_config('pazpaz.encryption_keys', json_build_object('v1', :'k', 'v2', :'kl')::text, false) IS NOT NULL AS ring_set;
    SELECT version, is_current FROM encryption_status();
    RESET pazpaz.encryption_keys;
    -- SQL-level PREPARE/EXECUTE: psql's only server-side parameter.
    PREPARE set_key(text) AS SELECT set_config('pazpaz.encryption_key', $1, false) IS NOT NULL;
    EXECUTE set_key(:'kprep');
    SELECT count(*) AS prepared_key_loaded FROM encryption_status();
    """
    env = dict(os.environ, PAZPAZ_K=K_PSQL, PAZPAZ_K_LOCAL=K_PSQL_LOCAL, PAZPAZ_K_LITERAL=K_LITERAL,
               PAZPAZ_K_PREPARED=K_PREPARED, PAZPAZ_K_BAD=K_BAD16, PAZPAZ_SEED=SEED_PSQL[0])
    env.update(PGHOST=HOST, PGPORT=str(PORT))
    p = subprocess.run(pg_tool("psql") + ["-X", "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=0"],
                       input=PSQL_SCRIPT, env=env, capture_output=True, text=True, timeout=60)
    check("psql: round trip", "psql_roundtrip \n----------------\n t" in p.stdout)
    check("psql: SHOW of the key gives only (hidden)", "(hidden)" in p.stdout)
    check("psql: literal SET, keyring from variables and EXECUTE each set a key",
          all(re.search(rf"{col} \n-+\n +(1|t)\n", p.stdout) for col in ("literal_key_loaded", "ring_set", "prepared_key_loaded")))
    check("psql: wrong per-transaction key fails to decrypt",
          "22000: Decryption failed (wrong key or tampering)" in p.stderr)
    for line in p.stderr.splitlines():
        # Failing-row details are meant for the key holder; none are expected here.
        CLIENT_TEXTS.append(("psql stderr", "line", line))
    psql_stdout = p.stdout
    verdict(start)


# ===========================================================================
def test_1d_refused_sources_store_no_key(leak_server):
    """1d. refused sources: the key must not be stored anywhere"""
    global adm
    start = len(FAILED)
    section('1d. refused sources: the key must not be stored anywhere')
    adm = connect()
    ring_json = json.dumps({"v1": K_FORBIDDEN})
    for what, stmt, msg_src in (
            ("ALTER ROLE … SET", f"ALTER ROLE app SET pazpaz.encryption_key = '{K_FORBIDDEN}'", "test"),
            ("ALTER ROLE … IN DATABASE … SET", f"ALTER ROLE app IN DATABASE postgres SET pazpaz.encryption_keys = '{ring_json}'", "test"),
            ("ALTER ROLE ALL … SET", f"ALTER ROLE ALL SET pazpaz.encryption_key = '{K_FORBIDDEN}'", "test"),
            ("ALTER DATABASE … SET", f"ALTER DATABASE postgres SET pazpaz.encryption_key = '{K_FORBIDDEN}'", "test"),
            ("ALTER SYSTEM SET", f"ALTER SYSTEM SET pazpaz.encryption_key = '{K_FORBIDDEN}'", "file"),
            ("ALTER SYSTEM SET (keyring)", f"ALTER SYSTEM SET pazpaz.encryption_keys = '{ring_json}'", "file"),
            ("CREATE FUNCTION … SET", f"CREATE FUNCTION f_key() RETURNS int LANGUAGE sql SET pazpaz.encryption_key = '{K_FORBIDDEN}' AS 'SELECT 1'", "test"),
            ("CREATE PROCEDURE … SET", f"CREATE PROCEDURE p_key() LANGUAGE sql SET pazpaz.encryption_keys = '{ring_json}' AS 'SELECT 1'", "test"),
            ("ALTER FUNCTION … SET", f"ALTER FUNCTION leak_marker(text) SET pazpaz.encryption_key = '{K_FORBIDDEN}'", "test")):
        guc = "pazpaz.encryption_keys" if "encryption_keys" in stmt else "pazpaz.encryption_key"
        where = ("a configuration file or ALTER SYSTEM" if msg_src == "file"
                 else "ALTER ROLE, ALTER DATABASE or a function's SET clause")
        expect_error(adm, f"refused: {what}", stmt, None, "42501", f"{guc} cannot be set from {where}")
    with connect("app", prepare_threshold=None) as app_self:
        expect_error(app_self, "refused: a role's ALTER ROLE … SET on itself",
                     f"ALTER ROLE app SET pazpaz.encryption_key = '{K_FORBIDDEN}'", None, "42501",
                     "pazpaz.encryption_key cannot be set from ALTER ROLE, ALTER DATABASE or a function's SET clause")
    stored = repr(adm.execute("SELECT * FROM pg_db_role_setting").fetchall())
    stored += repr(adm.execute("SELECT proname, proconfig FROM pg_proc WHERE proconfig IS NOT NULL").fetchall())
    stored += open(os.path.join(PGDATA, "postgresql.auto.conf")).read()
    sweep("pg_db_role_setting, pg_proc.proconfig, postgresql.auto.conf", stored, kinds=("key",))

    # postgresql.conf: the reload refuses the line; the key is not applied.
    conf = os.path.join(PGDATA, "postgresql.conf")
    original = open(conf).read()
    log_size = os.path.getsize(LOG)
    with open(conf, "a") as f:
        f.write(f"pazpaz.encryption_key = '{K_CONF}'\n")
    adm.execute("SELECT pg_reload_conf()")
    for _ in range(50):
        if "contains errors" in open(LOG, errors="replace").read()[log_size:]:
            break
        time.sleep(0.1)
    with connect() as fresh:
        check("postgresql.conf key is not applied", one(fresh, "SHOW pazpaz.encryption_key") == "")
    with open(LOG, "rb") as f:
        f.seek(log_size)
        reload_log = f.read().decode(errors="replace")
    # The postmaster reports the refusal at LOG level: the administrator must
    # learn why (the message carries no value, only the setting's name).
    check("server log tells the administrator why the postgresql.conf key was refused",
          " LOG:  pazpaz.encryption_key cannot be set from a configuration file or ALTER SYSTEM" in reload_log,
          "the postmaster's LOG line was replaced by the statement-redaction marker")
    with open(conf, "w") as f:
        f.write(original)
    adm.execute("SELECT pg_reload_conf()")
    verdict(start)


# ===========================================================================
def test_2_other_roles_cannot_get_keys(leak_server):
    """2. other roles cannot get keys"""
    global app, nb, obs
    start = len(FAILED)
    section('2. other roles cannot get keys')
    KEY_GUCS = ("pazpaz.encryption_key", "pazpaz.encryption_keys")


    def must_not_reveal(conn, who, sql):
        """The statement must either be refused (42501) or return a mask."""
        got = run(conn, sql)
        if got[0] == "ok":
            value = got[1][0][0] if got[1] else None
            check(f"{who}: {sql} shows no key", value in ("", "(hidden)", None), "not masked")
        else:
            check(f"{who}: {sql} is refused (42501)", got[0] == "42501", got[0])


    # The application role wants the recommended, log-safe way.
    app = connect("app")
    held.append(app)
    got = run(app, "SELECT set_config('pazpaz.encryption_key', %s, false) IS NOT NULL", (K_APP,))
    check("non-superuser can set its key with the recommended parameterised set_config", got[0] == "ok",
          f"got {got[0]} {got[1]!r}")
    # (Also give it a key by a literal SET, the way open to any role.)
    app.execute(f"SET pazpaz.encryption_key = '{K_LITERAL}'")
    for guc in KEY_GUCS:
        for sql in (f"SHOW {guc}", f"SELECT current_setting('{guc}')", f"SELECT current_setting('{guc}', true)"):
            must_not_reveal(app, "non-superuser, own session", sql)
    check("non-superuser: pg_settings has no row for the key settings",
          one(app, "SELECT count(*) FROM pg_settings WHERE name IN ('pazpaz.encryption_key', 'pazpaz.encryption_keys')") == 0)

    # Code owned by another role that runs inside the keyed session (a SECURITY
    # DEFINER function, as a trigger or view would be) can use the key but not
    # read it: every SQL-level reader is masked.
    with connect() as admin:
        admin.execute("""
            CREATE FUNCTION peek() RETURNS text LANGUAGE sql SECURITY DEFINER AS $$
                SELECT current_setting('pazpaz.encryption_key') || '|' ||
                       coalesce((SELECT string_agg(name || '=' || setting || '/' || coalesce(reset_val, ''), ',')
                                 FROM pg_settings WHERE name LIKE 'pazpaz.%'), '') $$""")
        admin.execute("ALTER FUNCTION peek() OWNER TO nobody")
    peeked = one(app, "SELECT peek()")
    check("another role's SECURITY DEFINER code in the keyed session sees only (hidden)",
          peeked.startswith("(hidden)|"), "not masked")
    sweep("another role's code running in the keyed session", peeked, kinds=("key",))

    # Keys of other sessions: nothing that a role without privileges can read.
    nb = connect("nobody")
    for guc in KEY_GUCS:
        must_not_reveal(nb, "role without privileges", f"SHOW {guc}")
    expect_error(nb, "role without privileges: pg_file_settings", "SELECT * FROM pg_file_settings", None,
                 "42501", "permission denied for view pg_file_settings")

    # A role with pg_read_all_settings may SHOW, and sees only the mask.
    obs = connect("obs")
    set_key(obs, "pazpaz.encryption_key", K_OBS)
    check("pg_read_all_settings role: SHOW gives (hidden)", one(obs, "SHOW pazpaz.encryption_key") == "(hidden)")
    check("pg_read_all_settings role: current_setting gives (hidden)",
          one(obs, "SELECT current_setting('pazpaz.encryption_key')") == "(hidden)")
    settings_texts["pg_settings (pg_read_all_settings role with key set)"] = repr(obs.execute("SELECT * FROM pg_settings").fetchall())
    settings_texts["SHOW ALL (pg_read_all_settings role with key set)"] = repr(obs.execute("SHOW ALL").fetchall())

    # The superuser sees the mask too; encryption_status() shows no key.
    su = connect()
    use_ring(su, {"v1": K1, "v2": K2}, "v2")
    for guc in KEY_GUCS:
        expected = "(hidden)" if guc.endswith("keys") else ""
        check(f"superuser: SHOW {guc} gives '{expected}'", one(su, f"SHOW {guc}") == expected)
    use_single(su, K_SINGLE)
    check("superuser: SHOW pazpaz.encryption_key gives (hidden)", one(su, "SHOW pazpaz.encryption_key") == "(hidden)")
    check("superuser: current_setting gives (hidden)",
          one(su, "SELECT current_setting('pazpaz.encryption_key')") == "(hidden)")
    check("superuser: set_config returns (hidden), not the key",
          one(su, "SELECT set_config('pazpaz.encryption_key', %s, false)", (K_SINGLE,)) == "(hidden)")
    st = su.execute("SELECT * FROM encryption_status()")
    cols = [d.name for d in st.description]
    st_rows = st.fetchall()
    check("encryption_status(): columns are version, is_current, fingerprint, wrapped, kek_id",
          cols == ["version", "is_current", "fingerprint", "wrapped", "kek_id"])
    check("encryption_status(): fingerprint is 8 hex digits of a hash, not key material",
          st_rows == [("v1", True, fingerprint(K_SINGLE), False, None)])
    sweep("encryption_status() output", repr(st_rows), kinds=("key",))
    su.close()
    verdict(start)


# ===========================================================================
def test_3_malformed_inputs_exact_errors_backend_survives(leak_server):
    """3. malformed inputs: exact SQLSTATE and message; the backend survives"""
    start = len(FAILED)
    section('3. malformed inputs: exact SQLSTATE and message; the backend survives')
    t = connect()
    PID = one(t, "SELECT pg_backend_pid()")
    RING = {"v1": K1, "v2": K2}
    use_ring(t, RING, "v2")
    good = one(t, "SELECT encrypt_field('payload')")
    good_env = one(t, "SELECT encrypt_field_versioned('payload')")
    good_et = bytes(one(t, "SELECT 'payload'::encrypted_text::bytea"))
    # A value whose plaintext is not UTF-8, made by an independent implementation.
    nonce = secrets.token_bytes(12)
    not_utf8 = nonce + AESGCM(base64.b64decode(K2)).encrypt(nonce, b"\xff\xfe\xfd", None)
    b64 = lambda b: base64.b64encode(b).decode()
    tampered = bytearray(good); tampered[15] ^= 1
    et_v1_header = bytearray(good_et); et_v1_header[3] = ord("1")   # 'v2' -> 'v1' in the authenticated header
    TOO_SHORT = "Ciphertext too short"
    AUTH = "Decryption failed (wrong key or tampering)"
    JENV = "Invalid encrypted field envelope: "
    EENV = "Invalid encrypted_text envelope: "
    LOADED = "(loaded versions: v1, v2)"
    KEYS_JSON = "invalid value for pazpaz.encryption_keys: pazpaz.encryption_keys must be a JSON object mapping version names to base64 keys: "
    BAD_NAME = "Key version name must be 1 to 64 characters of A-Z, a-z, 0-9, '_', '-' or '.'"

    # (name, key state, SQL, parameters, SQLSTATE, message)
    CASES = [
        # format 1
        ("decrypt_field of empty bytea", "ring", "SELECT decrypt_field('\\x'::bytea)", None, "22P03", TOO_SHORT),
        ("decrypt_field of 27 bytes", "ring", "SELECT decrypt_field(%s)", (secrets.token_bytes(27),), "22P03", TOO_SHORT),
        ("decrypt_field of 28 random bytes", "ring", "SELECT decrypt_field(%s)", (secrets.token_bytes(28),), "22000", AUTH),
        ("decrypt_field of a tampered value", "ring", "SELECT decrypt_field(%s)", (bytes(tampered),), "22000", AUTH),
        ("decrypt_field with the wrong key", "wrong", "SELECT decrypt_field(%s)", (good,), "22000", AUTH),
        ("decrypt_field with the wrong aad", "ring", "SELECT decrypt_field(%s, 'other')", (good,), "22000", AUTH),
        ("decrypt_field of non-UTF-8 plaintext", "ring", "SELECT decrypt_field(%s)", (not_utf8,), "22021",
         "Decrypted value is not valid UTF-8 text"),
        # format 2
        ("envelope []", "ring", "SELECT decrypt_field_versioned('[]')", None, "22P02", JENV + "not a JSON object"),
        ("envelope \"x\"", "ring", "SELECT decrypt_field_versioned('\"x\"')", None, "22P02", JENV + "not a JSON object"),
        ("envelope {}", "ring", "SELECT decrypt_field_versioned('{}')", None, "22P02", JENV + 'missing "version"'),
        ("envelope with numeric version", "ring", "SELECT decrypt_field_versioned(%s::jsonb)",
         (json.dumps({"version": 1, "ciphertext": b64(good)}),), "22P02", JENV + '"version" is not a string'),
        ("envelope without ciphertext", "ring", "SELECT decrypt_field_versioned('{\"version\": \"v1\"}')", None,
         "22P02", JENV + 'missing "ciphertext"'),
        ("envelope with non-string ciphertext", "ring",
         "SELECT decrypt_field_versioned('{\"version\": \"v1\", \"ciphertext\": 42}')", None,
         "22P02", JENV + '"ciphertext" is not a string'),
        ("envelope with bad base64", "ring",
         "SELECT decrypt_field_versioned('{\"version\": \"v1\", \"ciphertext\": \"***\"}')", None,
         "22P02", JENV + '"ciphertext" is not valid base64'),
        ("envelope with short ciphertext", "ring", "SELECT decrypt_field_versioned(%s::jsonb)",
         (json.dumps({"version": "v1", "ciphertext": b64(secrets.token_bytes(27))}),), "22P03", TOO_SHORT),
        ("envelope of an unknown version", "ring", "SELECT decrypt_field_versioned(%s::jsonb)",
         (json.dumps({"version": "v9", "ciphertext": b64(good)}),), "42704", f'Key version "v9" is not loaded {LOADED}'),
        ("envelope with an invalid version name", "ring", "SELECT decrypt_field_versioned(%s::jsonb)",
         (json.dumps({"version": "v 9!", "ciphertext": b64(good)}),), "42704",
         f'Key version "(invalid name)" is not loaded {LOADED}'),
        ("envelope with a version swapped to another key", "ring", "SELECT decrypt_field_versioned(%s::jsonb)",
         (json.dumps({"version": "v1", "ciphertext": good_env["ciphertext"]}),), "22000", AUTH),
        ("key_version of []", "none", "SELECT key_version('[]'::jsonb)", None, "22P02", JENV + "not a JSON object"),
        ("reencrypt_field_versioned of {}", "ring", "SELECT reencrypt_field_versioned('{}')", None,
         "22P02", JENV + 'missing "version"'),
        ("encrypt_field_versioned to an unknown version", "ring", "SELECT encrypt_field_versioned('x', 'v9')", None,
         "42704", f'Key version "v9" is not loaded {LOADED}'),
        # format 3 (encrypted_text)
        ("encrypted_text from empty bytea", "none", "SELECT '\\x'::bytea::encrypted_text", None, "22P03", TOO_SHORT),
        ("encrypted_text with a wrong format byte", "none", "SELECT %s::bytea::encrypted_text",
         (b"\x02" + good_et[1:],), "22P03", EENV + "unknown format byte"),
        ("encrypted_text truncated", "none", "SELECT %s::bytea::encrypted_text", (good_et[:20],), "22P03", TOO_SHORT),
        ("encrypted_text with a bad version name", "none", "SELECT %s::bytea::encrypted_text",
         (b"\x01\x02!!" + good_et[4:],), "22P03", EENV + "invalid key version name"),
        ("encrypted_text with an empty version name", "none", "SELECT %s::bytea::encrypted_text",
         (b"\x01\x00" + secrets.token_bytes(40),), "22P03", EENV + "invalid key version name"),
        ("encrypted_text with an altered (authenticated) header", "ring", "SELECT %s::bytea::encrypted_text::text",
         (bytes(et_v1_header),), "22000", AUTH),
        ("key_version of a truncated encrypted_text", "none", "SELECT key_version(%s::bytea::encrypted_text)",
         (good_et[:3],), "22P03", TOO_SHORT),
        ("encrypted_text too long for its typmod", "ring", "SELECT 'abcdef'::encrypted_text(5)", None,
         "22001", "Value too long for type encrypted_text(5)"),
        ("encrypted_text(0)", "ring", "SELECT 'a'::encrypted_text(0)", None, "22023",
         "encrypted_text takes one modifier: the maximum length in characters, from 1 to 10485760"),
        ("encrypted_text(1, 2)", "ring", "SELECT 'a'::encrypted_text(1, 2)", None, "22023",
         "encrypted_text takes one modifier: the maximum length in characters, from 1 to 10485760"),
        # Type input functions see these literals (ciphertext only, nothing secret).
        ("plaintext mode given an envelope in text form", "ring", f"SELECT 'pazpaz:{b64(good_et)}'::encrypted_text", None, "22P03",
         EENV + "input is an envelope in text form; SET pazpaz.encrypted_text_io = 'envelope' to load envelopes"),
        ("envelope mode: garbage", "envelope", "SELECT 'garbage'::encrypted_text", None, "22P03",
         EENV + 'text form must start with "pazpaz:"'),
        ("envelope mode: bad base64", "envelope", "SELECT 'pazpaz:***'::encrypted_text", None, "22P03",
         EENV + "text form is not valid base64"),
        ("envelope mode: truncated", "envelope", f"SELECT 'pazpaz:{b64(good_et[:10])}'::encrypted_text", None,
         "22P03", TOO_SHORT),
        ("envelope mode: wrong format byte", "envelope", f"SELECT 'pazpaz:{b64(bytes([7]) + good_et[1:])}'::encrypted_text",
         None, "22P03", EENV + "unknown format byte"),
        # key state at use
        ("no key set", "none", "SELECT encrypt_field('x')", None, "55000",
         "No encryption key is set: set pazpaz.encryption_key (or pazpaz.encryption_keys and pazpaz.encryption_key_version) for this session"),
        ("no key set, encrypted_text input", "none", "SELECT 'x'::encrypted_text", None, "55000",
         "No encryption key is set: set pazpaz.encryption_key (or pazpaz.encryption_keys and pazpaz.encryption_key_version) for this session"),
        ("both key settings set", "both", "SELECT encrypt_field('x')", None, "22023",
         "Both pazpaz.encryption_key and pazpaz.encryption_keys are set; set only one of them"),
        ("keyring without a write version", "ring_noversion", "SELECT encrypt_field('x')", None, "22023",
         f"pazpaz.encryption_key_version must be set to choose the write key from pazpaz.encryption_keys {LOADED}"),
        ("write version not in the keyring", "ring_v9", "SELECT encrypt_field('x')", None, "42704",
         f'Key version "v9" is not loaded {LOADED}'),
        ("rotate_column without a write version", "ring_noversion", "CALL rotate_column('notes', 'v')", None, "55000",
         "no write key version: set pazpaz.encryption_key_version, or pass key_version"),
        ("rotate_column with batch_size 0", "ring", "CALL rotate_column('notes', 'v', 0)", None, "22023",
         "batch_size must be a positive integer"),
        ("rotate_column of a missing column", "ring", "CALL rotate_column('notes', 'nope')", None, "42703",
         'column nope of relation notes does not exist'),
        ("rotate_column of a bytea column", "ring", "CALL rotate_column('notes', 'b')", None, "42804",
         "rotate_column re-encrypts jsonb envelope and encrypted_text columns, not bytea"),
        # key settings refused when SET (values are keys: never echoed)
        ("SET key: bad base64", "ring", "SELECT set_config('pazpaz.encryption_key', %s, false)", ("not base64!" + K_BAD33,),
         "22023", "invalid value for pazpaz.encryption_key: Encryption key is not valid base64"),
        ("SET key: 16 bytes", "ring", "SELECT set_config('pazpaz.encryption_key', %s, false)", (K_BAD16,),
         "22023", "invalid value for pazpaz.encryption_key: Encryption key must be 32 bytes"),
        ("SET key: 31 bytes", "ring", "SELECT set_config('pazpaz.encryption_key', %s, false)", (K_BAD31,),
         "22023", "invalid value for pazpaz.encryption_key: Encryption key must be 32 bytes"),
        ("SET key: 33 bytes", "ring", "SELECT set_config('pazpaz.encryption_key', %s, false)", (K_BAD33,),
         "22023", "invalid value for pazpaz.encryption_key: Encryption key must be 32 bytes"),
        ("SET key: hex instead of base64", "ring", "SELECT set_config('pazpaz.encryption_key', %s, false)",
         (base64.b64decode(K1).hex(),), "22023", "invalid value for pazpaz.encryption_key: Encryption key must be 32 bytes"),
        ("SET key: urlsafe base64", "ring", "SELECT set_config('pazpaz.encryption_key', %s, false)",
         (base64.urlsafe_b64encode(base64.b64decode(K_URLSAFE)).decode(),), "22023",
         "invalid value for pazpaz.encryption_key: Encryption key is not valid base64"),
        ("SET key: base64 without padding", "ring", "SELECT set_config('pazpaz.encryption_key', %s, false)",
         (K1.rstrip("="),), "22023", "invalid value for pazpaz.encryption_key: Encryption key is not valid base64"),
        ("SET keyring: not JSON", "ring", "SELECT set_config('pazpaz.encryption_keys', %s, false)",
         ("v1=" + K1,), "22023", KEYS_JSON + "malformed JSON at line 1 column 1"),
        ("SET keyring: unterminated", "ring", "SELECT set_config('pazpaz.encryption_keys', %s, false)",
         (json.dumps({"v1": K1})[:-1],), "22023", KEYS_JSON + "malformed JSON at line 1 column 53"),
        ("SET keyring: trailing characters", "ring", "SELECT set_config('pazpaz.encryption_keys', %s, false)",
         (json.dumps({"v1": K1}) + " x",), "22023", KEYS_JSON + "trailing characters at line 1 column 56"),
        ("SET keyring: unquoted key", "ring", "SELECT set_config('pazpaz.encryption_keys', %s, false)",
         ('{"v1": x' + K1 + "}",), "22023", KEYS_JSON + "malformed JSON at line 1 column 8"),
        ("SET keyring: key is not a string", "ring", "SELECT set_config('pazpaz.encryption_keys', %s, false)",
         (json.dumps({"v1": [K1]}),), "22023", KEYS_JSON + 'the key of version "v1" must be a base64 string'),
        ("SET keyring: version appears twice", "ring", "SELECT set_config('pazpaz.encryption_keys', %s, false)",
         ('{"v1": "%s", "v1": "%s"}' % (K1, K2),), "22023", KEYS_JSON + 'version "v1" appears twice'),
        ("SET keyring: bad version name", "ring", "SELECT set_config('pazpaz.encryption_keys', %s, false)",
         (json.dumps({"v 1": K1}),), "22023", "invalid value for pazpaz.encryption_keys: " + BAD_NAME),
        ("SET keyring: 16-byte key", "ring", "SELECT set_config('pazpaz.encryption_keys', %s, false)",
         (json.dumps({"v1": K_BAD16}),), "22023", "invalid value for pazpaz.encryption_keys: Encryption key must be 32 bytes"),
        ("SET keyring: empty object", "ring", "SELECT set_config('pazpaz.encryption_keys', '{}', false)", None,
         "22023", "invalid value for pazpaz.encryption_keys: pazpaz.encryption_keys holds no keys"),
        ("SET key version: bad name", "ring", "SELECT set_config('pazpaz.encryption_key_version', 'v 2!', false)", None,
         "22023", "invalid value for pazpaz.encryption_key_version: " + BAD_NAME),
    ]


    def key_state(conn, state):
        conn.execute("RESET pazpaz.encrypted_text_io")
        if state == "none":
            use_single(conn, "")
        elif state == "ring":
            use_ring(conn, RING, "v2")
        elif state == "wrong":
            use_single(conn, K_WRONG)
        elif state == "both":
            use_ring(conn, RING, "")
            set_key(conn, "pazpaz.encryption_key", K_SINGLE)
        elif state == "ring_noversion":
            use_ring(conn, RING, "")
        elif state == "ring_v9":
            use_ring(conn, RING, "v9")
        elif state == "envelope":
            use_single(conn, "")
            conn.execute("SET pazpaz.encrypted_text_io = envelope")


    survived = True
    for name, state, sql, params, sqlstate, message in CASES:
        key_state(t, state)
        expect_error(t, name, sql, params, sqlstate, message)
        try:
            survived &= one(t, "SELECT 1") == 1 and one(t, "SELECT pg_backend_pid()") == PID
        except psycopg.Error:
            survived = False
            t = connect()
    check(f"the backend survived all {len(CASES)} malformed inputs (SELECT 1 on the same connection)", survived)
    t.close()
    verdict(start)


# ===========================================================================
def test_4_controls(leak_server):
    """4. controls: each search below can find things"""
    global decoy
    start = len(FAILED)
    section('4. controls: each search below can find things')
    ctl = connect()
    ctl.execute(f"SELECT '{CONTROL}' AS control_literal")                     # simple literal in the log
    decoy = base64.b64decode(K_DECOY)
    # Literals in the statement text (bind parameters are redacted from the log
    # in every session, so they could not serve as the control).
    ctl.execute(f"SELECT '{K_DECOY}', '{decoy.hex()}', '{base64.urlsafe_b64encode(decoy).decode()}'")
    run(ctl, f"SELECT '{CONTROL}'::int")                                      # an error text with the control
    ctl.execute(f"SET application_name = '{CONTROL}'")                         # verbatim SET text in pgss (15-17)
    ctl.execute(f"DO $$ BEGIN PERFORM '{CONTROL}'; END $$")                   # verbatim utility text in pgss (all)
    ctl.execute(f"SELECT '{CONTROL}' AS idle_control")                          # idle: visible in pg_stat_activity
    held.append(ctl)
    verdict(start)


# ===========================================================================
def test_4_sweep_pg_stat_activity_of_other_roles(leak_server):
    """4. sweep: pg_stat_activity, seen by other roles"""
    start = len(FAILED)
    section('4. sweep: pg_stat_activity, seen by other roles')
    LITERAL_WHY = ("PostgreSQL shows a statement's text to the same role and to pg_read_all_stats "
                   "members; a literal key in the text is visible there. Use a parameterised set_config")
    with connect("obs") as obs2:
        activity = repr(obs2.execute("SELECT usename, state, query FROM pg_stat_activity").fetchall())
    nb_activity = repr(nb.execute("SELECT usename, state, query FROM pg_stat_activity").fetchall())
    control("pg_stat_activity (pg_read_all_stats role)", activity, CONTROL, "another role's query text")
    control("pg_stat_activity (pg_read_all_stats role)", activity, "set_config('pazpaz.encryption_key', $1",
            "the held session's last statement")
    sweep("pg_stat_activity (pg_read_all_stats role)", activity, kinds=("key", "plaintext"),
          known={LABEL_LITERAL: LITERAL_WHY, LABEL_CLIENT: LITERAL_WHY})
    check("pg_stat_activity (role without privileges): other roles' statements are hidden",
          CONTROL not in nb_activity and "insufficient privilege" in nb_activity)
    sweep("pg_stat_activity (role without privileges)", nb_activity, kinds=("key", "plaintext"))
    for c in held:
        c.close()
    for c in (adm, obs, nb, app, g):
        c.close()
    time.sleep(0.3)
    verdict(start)


# ===========================================================================
def test_4_sweep_settings_views(leak_server):
    """4. sweep: settings views"""
    start = len(FAILED)
    section('4. sweep: settings views')
    for where, text in settings_texts.items():
        sweep(where, text, kinds=("key",))
    control("pg_settings", settings_texts["pg_settings (superuser with keys set)"], CONTROL, "a session setting")
    control("SHOW ALL", settings_texts["SHOW ALL (superuser with keys set)"], CONTROL, "a session setting")
    verdict(start)


# ===========================================================================
def test_4_sweep_pg_stat_statements(leak_server):
    """4. sweep: pg_stat_statements"""
    start = len(FAILED)
    section('4. sweep: pg_stat_statements')
    require_library("pg_stat_statements", " (nothing to sweep)")
    # Up to 17, pg_stat_statements stores a SET statement's text verbatim, so a
    # literal key in SET is visible there (documented). From 18 on it replaces
    # SET's constants with $n like those of any other statement; other utility
    # statements (DO, COMMENT, NOTIFY, ...) are still kept verbatim.
    set_verbatim = SERVER_VERSION_NUM < 180000
    PGSS_WHY = ("PostgreSQL up to 17 stores SET statements verbatim in pg_stat_statements; "
                "the recommended parameterised set_config is normalised and clean")
    known = {LABEL_LITERAL: PGSS_WHY} if set_verbatim else {}
    with connect() as s:
        pgss = repr(s.execute("SELECT userid::regrole, query FROM pg_stat_statements").fetchall())
    pgss_file = os.path.join(PGDATA, "pg_stat_tmp", "pgss_query_texts.stat")
    pgss_text = open(pgss_file, errors="replace").read() if os.path.exists(pgss_file) else ""
    control("pg_stat_statements", pgss, f"DO $$ BEGIN PERFORM '{CONTROL}'; END $$",
            "a verbatim utility statement (DO block)")
    control("pg_stat_statements query-text file", pgss_text, f"DO $$ BEGIN PERFORM '{CONTROL}'; END $$",
            "a verbatim utility statement (DO block)")
    if set_verbatim:
        control("pg_stat_statements", pgss, f"SET application_name = '{CONTROL}'", "a verbatim SET statement")
    else:
        control("pg_stat_statements", pgss, "SET application_name = $1", "a SET statement, normalised (18)")
    control("pg_stat_statements", pgss, "SELECT set_config($", "the recommended call (normalised)")
    sweep("pg_stat_statements view", pgss, kinds=("key", "plaintext", "copy"), known=known)
    sweep("pg_stat_statements query-text file", pgss_text, kinds=("key", "plaintext", "copy"), known=known)
    verdict(start)


# ===========================================================================
def test_4_sweep_texts_received_by_clients(leak_server):
    """4. sweep: texts received by clients (errors, notices, hints, contexts)"""
    start = len(FAILED)
    section('4. sweep: texts received by clients (errors, notices, hints, contexts)')
    client = "\n".join(f"{o} {f}: {t}" for o, f, t in CLIENT_TEXTS)
    control("client texts", client, CONTROL, "an error message quoting its input")
    control("client texts", client, "rotate_column: done", "notices")
    # COPY plaintext is the client's own input, echoed back to it: not checked here.
    sweep("client error/notice texts (psycopg and psql)", client, kinds=("key", "plaintext"))
    sweep("psql standard output", psql_stdout, kinds=("key",))
    verdict(start)


# ===========================================================================
def test_4_sweep_server_log(leak_server):
    """4. sweep: server log"""
    start = len(FAILED)
    section('4. sweep: server log')
    log = open(LOG, errors="replace").read()
    control("server log", log, CONTROL, "an unrelated statement's literal (the filter leaves it alone)")
    for form, text in (("base64", K_DECOY), ("hex", decoy.hex()), ("urlsafe", base64.urlsafe_b64encode(decoy).decode())):
        # The same matcher as every sweep, on a key that was only SELECTed.
        check(f"control: the sweep finds a decoy key's {form} form in the server log (statement literal)",
              Secret("decoy", "key", [text]).found_in(log))
    control("server log", log, "[statement redacted by pazpaz_crypto: it sets a key]", "the redaction marker")
    control("server log", log, "Failing row contains (values hidden by pazpaz_crypto).", "the hidden failing row")
    control("server log", log, "cannot be set from", "the reason a key from postgresql.conf/ALTER ROLE was refused")
    sweep("server log", log)
    verdict(start)


# ===========================================================================
def test_4_the_postmaster_never_restarted(leak_server):
    """the postmaster never restarted"""
    start = len(FAILED)
    section('the postmaster never restarted')
    with connect() as s:
        check("the postmaster never restarted", one(s, "SELECT pg_postmaster_start_time()") == POSTMASTER_START)
    verdict(start)
