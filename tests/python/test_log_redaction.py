"""The logging promise, attacked the way an auditor would: a server that logs
everything it can (auto_explain verbose with nested statements,
log_statement = all, every bind parameter, durations, pg_stat_statements)
and a log-shipping extension (tests/python/fixtures/log_tap.c, an
emit_log_hook) loaded before and after pazpaz_crypto. Sessions set random
keys and write random marker plaintexts through a real driver (psycopg 3,
server-side parameters), then trigger every path by which PostgreSQL quotes
statements, parameters or values. Afterwards no key (base64, hex, URL-safe,
a 20-character prefix) and no marker may be in the server log or in what the
tap extension saw.

Each test names the finding of the security review it reproduces.

auto_explain and pg_stat_statements are loaded when the installation has
them (PostgreSQL 16's pgserver build has neither): the checks of what they
log or store skip without them, and everything else (log_statement = all,
parameter logging, error paths, the tap) runs on every server.
"""

import base64
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from conftest import PG_BASE, PG_MAJOR, ROOT, free_port, have_library, host_path, new_key, pg_config, \
    remove_cluster, require_library, start_cluster, unique_name

pytestmark = pytest.mark.every_version

TAP_SRC = ROOT / "tests/python/fixtures/log_tap.c"
# Under PG_BASE: the same path for the host (which builds it) and the server.
TAP_DIR = PG_BASE / unique_name(f"log_tap{PG_MAJOR}")

LOGGING = [
    "log_statement = all",
    "log_min_duration_statement = 0",
    "log_min_error_statement = info",
    "log_parameter_max_length = -1",
    "log_parameter_max_length_on_error = -1",
    "deadlock_timeout = 100ms",
]
# Settings of the optional modules, used only when the module is loaded.
MODULE_SETTINGS = {
    "auto_explain": [
        "auto_explain.log_min_duration = 0",
        "auto_explain.log_verbose = on",
        "auto_explain.log_analyze = on",
        "auto_explain.log_nested_statements = on",
    ],
    "pg_stat_statements": [
        "pg_stat_statements.track = all",
        "pg_stat_statements.track_utility = on",
    ],
}

ORDERS = {
    "ours-first": ["pazpaz_crypto", "auto_explain", "pg_stat_statements", "{tap}"],
    "ours-last": ["{tap}", "auto_explain", "pg_stat_statements", "pazpaz_crypto"],
}


def modules() -> list[str]:
    """The optional modules this installation has."""
    return [m for m in MODULE_SETTINGS if have_library(m)]


AUTO_EXPLAIN_WHY = ": this checks what it logs (plans, nested statements)"
PGSS_WHY = ": this checks what it stores"


def build_tap() -> Path:
    TAP_DIR.mkdir(parents=True, exist_ok=True)
    so = TAP_DIR / "log_tap.so"
    include = str(host_path(pg_config("--includedir-server")))
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-I", include, str(TAP_SRC), "-o", str(so)], check=True)
    so.chmod(0o755)
    TAP_DIR.chmod(0o755)
    return so


def spellings(key: str) -> list[str]:
    raw = base64.b64decode(key)
    url = base64.urlsafe_b64encode(raw).decode()
    forms = [key, key.rstrip("="), url, url.rstrip("="), raw.hex(), raw.hex().upper()]
    return forms + [f[:20] for f in forms]


class Server:
    def __init__(self, cluster, data_dir: Path):
        self.cluster = cluster
        self.tap = data_dir / "log_tap.txt"
        self.keys: list[str] = []
        self.markers: list[str] = []

    def connect(self, **kw) -> psycopg.Connection:
        return psycopg.connect(self.cluster.dsn(self.db), autocommit=True, **kw)

    def key(self) -> str:
        k = new_key()
        self.keys.append(k)
        return k

    def marker(self) -> str:
        m = "phi-" + secrets.token_hex(8)
        self.markers.append(m)
        return m

    def logs(self) -> str:
        text = self.cluster.log.read_text(errors="replace")
        if self.tap.exists():
            text += self.tap.read_text(errors="replace")
        return text

    def leaks(self) -> list[str]:
        """What of this server's keys and markers is in the log or the tap
        (names only: a key is never printed)."""
        logs = self.logs()
        found = [f"key #{i}" for i, k in enumerate(self.keys) if any(f in logs for f in spellings(k))]
        return found + [m for m in self.markers if m in logs]


@pytest.fixture(scope="module", params=list(ORDERS))
def server(request):
    so = build_tap()
    name = unique_name(f"redact_{request.param.replace('-', '_')}")
    have = modules()
    preload = [lib.format(tap=so) for lib in ORDERS[request.param] if lib not in MODULE_SETTINGS or lib in have]
    cluster = start_cluster(name, free_port(), *LOGGING, *(line for m in have for line in MODULE_SETTINGS[m]),
                            "shared_preload_libraries = '" + ",".join(preload) + "'")
    data = cluster.data
    s = Server(cluster, data)
    s.db = cluster.create_db()
    if "pg_stat_statements" in have:
        with s.connect() as c:
            c.execute("CREATE EXTENSION pg_stat_statements")
    try:
        yield s
    finally:
        remove_cluster(name)
        shutil.rmtree(TAP_DIR, ignore_errors=True)


def set_key(conn, key: str) -> None:
    # The recommended form: the key is a bind parameter.
    conn.execute("SELECT set_config('pazpaz.encryption_key', %s, false)", [key])


def fails(conn, sql: str, params=None) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as e:
        conn.execute(sql, params)
    return e.value


def test_the_searches_can_fail(server):
    """Positive controls: what is logged is searched, in the log and the tap
    (statement text is logged as it is; only its parameters are redacted)."""
    control = "control-" + secrets.token_hex(8)
    with server.connect() as c:
        c.execute(f"SELECT '{control}'::text")
    assert control in server.cluster.log.read_text()
    assert control in server.tap.read_text()


def recommended_set_config_sessions(server) -> list[str]:
    """Finding 1's sessions: a key, a keyring and the version setting, set
    the recommended way, and used. Returns the keys."""
    key = server.key()
    with server.connect() as c:
        set_key(c, key)
        assert c.execute("SELECT decrypt_field(encrypt_field('x'))").fetchone() == ("x",)
        # A keyring, too, and the version setting.
        k2 = server.key()
        c.execute("SELECT set_config('pazpaz.encryption_keys', %s, false), set_config('pazpaz.encryption_key', '', false)",
                  ['{"v1": "%s", "v2": "%s"}' % (key, k2)])
        c.execute("SET pazpaz.encryption_key_version = 'v2'")
        assert c.execute("SELECT key_version(encrypt_field_versioned('x'))").fetchone() == ("v2",)
    return [key, k2]


def test_finding_1_recommended_set_config_is_logged_redacted(server):
    recommended_set_config_sessions(server)
    logs = server.logs()
    assert "[statement redacted by pazpaz_crypto: it sets a key]" in logs, "the statements were logged, redacted"
    assert server.leaks() == []


def test_finding_1_auto_explain_of_the_recommended_set_config(server):
    require_library("auto_explain", AUTO_EXPLAIN_WHY)
    recommended_set_config_sessions(server)
    logs = server.logs()
    assert "plan:" in logs and "Query Text:" in logs, "auto_explain ran"
    assert "[statement redacted by pazpaz_crypto: it sets a key]" in logs, "the statements were logged, redacted"
    assert server.leaks() == []


def test_finding_1_pg_stat_statements_of_the_recommended_set_config(server):
    require_library("pg_stat_statements", PGSS_WHY)
    keys = recommended_set_config_sessions(server)
    # The parameterised form leaves no key in pg_stat_statements either.
    with server.connect() as c:
        tracked = "\n".join(q for (q,) in c.execute("SELECT query FROM pg_stat_statements"))
    assert "set_config" in tracked
    assert not any(f in tracked for k in keys for f in spellings(k))
    assert server.leaks() == []


def test_finding_3_key_details_and_cast_errors(server):
    with server.connect() as c:
        set_key(c, server.key())
        c.execute("CREATE TABLE uq (p text UNIQUE)")
        c.execute("CREATE TABLE parent (p text PRIMARY KEY)")
        c.execute("CREATE TABLE child (p text REFERENCES parent)")
        m = server.marker()
        c.execute("INSERT INTO uq SELECT decrypt_field(encrypt_field(%s))", [m])
        e = fails(c, "INSERT INTO uq SELECT decrypt_field(encrypt_field(%s))", [m])
        assert e.sqlstate == "23505"
        assert m in (e.diag.message_detail or ""), "the client still gets the detail"
        e = fails(c, "INSERT INTO child SELECT decrypt_field(encrypt_field(%s))", [server.marker()])
        assert e.sqlstate == "23503"
        m2 = server.marker()
        c.execute("CREATE TABLE dup (p text)")
        c.execute("INSERT INTO dup SELECT decrypt_field(encrypt_field(%s)) FROM generate_series(1, 2)", [m2])
        assert fails(c, "CREATE UNIQUE INDEX ON dup (p)").sqlstate == "23505"
        for cast in ("int", "date", "jsonb", "numeric", "uuid", "boolean", "inet"):
            e = fails(c, f"SELECT decrypt_field(encrypt_field(%s))::{cast}", [server.marker()])
            assert e.sqlstate.startswith("22"), (cast, e.sqlstate)
    assert server.leaks() == []


@pytest.mark.parametrize("fmt", ["text", "csv"])
def test_finding_4_first_copy_line_of_a_fresh_backend(server, fmt):
    with server.connect() as c:
        c.execute(f"CREATE TABLE IF NOT EXISTS cp_{fmt} (c encrypted_text, n int)")
    m = server.marker()
    with server.connect() as c:  # a fresh backend: nothing encrypted yet
        set_key(c, server.key())
        sep = "\t" if fmt == "text" else ","
        with pytest.raises(psycopg.Error) as e:
            with c.cursor().copy(f"COPY cp_{fmt} FROM STDIN (FORMAT {fmt})") as cp:
                cp.write(f"{m}{sep}not-a-number\n")
        assert e.value.sqlstate == "22P02"
        with pytest.raises(psycopg.Error):
            with c.cursor().copy(f"COPY cp_{fmt} FROM STDIN (FORMAT {fmt})") as cp:
                cp.write(f"{server.marker()}{sep}1{sep}extra\n")
    assert server.leaks() == []


def log_size(server) -> int:
    return server.cluster.log.stat().st_size


def log_since(server, offset: int) -> str:
    with open(server.cluster.log, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def bind_parameter_statements(server, table: str) -> None:
    """Finding 7's statements: markers as bind parameters (logged with
    log_statement = all and the parameter settings), in plans (constants
    that auto_explain prints), in a failing statement."""
    with server.connect() as c:
        set_key(c, server.key())
        c.execute(f"CREATE TABLE {table} (id int, c encrypted_text, t text)")
        c.execute(f"INSERT INTO {table} (id, c) VALUES (%s, %s)", [1, server.marker()])
        c.execute(f"INSERT INTO {table} (id, c) VALUES (%s, %s::text::encrypted_text)", [2, server.marker()])
        c.execute(f"INSERT INTO {table} (id, t) VALUES (%s, decrypt_field(encrypt_field(%s)))", [3, server.marker()])
        assert c.execute(f"SELECT count(*) FROM {table} WHERE c IS NOT NULL").fetchone() == (2,)
        # An error in the statement: log_parameter_max_length_on_error.
        fails(c, f"INSERT INTO {table} (id, c) VALUES (%s::int, %s)", ["not-an-int", server.marker()])
        envelope = c.execute(f"SELECT c::bytea FROM {table} WHERE id = 1").fetchone()[0]
    # Keyless: a raw envelope written through bytea must not need a key,
    # even when auto_explain prints the plan.
    with server.connect() as c:
        c.execute(f"INSERT INTO {table} (id, c) VALUES (%s, %s::bytea::encrypted_text)", [4, envelope])
        assert c.execute(f"SELECT key_version(c) FROM {table} WHERE id = 4").fetchone() == ("v1",)


def test_finding_7_bind_parameters(server):
    start = log_size(server)
    bind_parameter_statements(server, "bp")
    assert "INSERT INTO bp (id, c) VALUES ($1, $2)" in log_since(server, start), "the statements were logged"
    assert server.leaks() == []


def test_finding_7_plan_constants(server):
    require_library("auto_explain", AUTO_EXPLAIN_WHY)
    start = log_size(server)
    bind_parameter_statements(server, "bp_plans")
    new = log_since(server, start)
    # (In a session with a key, the plan's texts and values are redacted; its nodes are not.)
    assert "plan:" in new and "Insert on public.bp_plans" in new, "auto_explain logged the plans"
    assert server.leaks() == []


def test_finding_8_reports_by_other_processes(server):
    # A deadlock report quotes the other backend's statement: here a DO block
    # that spells out a key.
    with server.connect() as c:
        c.execute("CREATE TABLE dl (id int PRIMARY KEY)")
        c.execute("INSERT INTO dl VALUES (1), (2)")
    key = server.key()
    a, b = server.connect(), server.connect()
    a.execute("BEGIN")
    b.execute("BEGIN")
    a.execute("SELECT * FROM dl WHERE id = 1 FOR UPDATE")
    b.execute("SELECT * FROM dl WHERE id = 2 FOR UPDATE")
    errors = []

    def run_a():
        try:
            a.execute("DO $$ BEGIN PERFORM set_config('pazpaz.encryption_key', '" + key + "', true); "
                      "PERFORM * FROM dl WHERE id = 2 FOR UPDATE; END $$")
        except psycopg.Error as e:
            errors.append(e.sqlstate)

    t = threading.Thread(target=run_a)
    t.start()
    time.sleep(0.5)
    try:
        b.execute("SELECT * FROM dl WHERE id = 1 FOR UPDATE")
    except psycopg.Error as e:
        errors.append(e.sqlstate)
    t.join(10)
    a.close()
    b.close()
    assert "40P01" in errors, errors
    assert "deadlock detected" in server.cluster.log.read_text()
    assert server.leaks() == []


def test_finding_10_statement_shapes(server):
    with server.connect() as c:
        for name_sql in ("'pazpaz.encryption_kye'", "U&'pazpaz.encryption\\005fkey'",
                         "'pazpaz.encryption' || '_key'", "'pazpaz.' || repeat('x', 70)"):
            try:
                c.execute(f"SELECT set_config({name_sql}, %s, false)", [server.key()])
            except psycopg.Error:
                pass
        # Both the name and the value as parameters.
        c.execute("SELECT set_config(%s, %s, false)", ["pazpaz.encryption_key", server.key()])
        # PREPARE / EXECUTE under odd names and spacing.
        c.execute('PREPARE "a""b"(text) AS SELECT set_config(\'pazpaz.encryption_key\', $1, false)')
        c.execute('EXECUTE "a""b"(\'' + server.key() + "')")
        c.execute("PREPARE s(text) AS SELECT set_config('pazpaz.encryption_key', $1, false)")
        c.execute("EXECUTE/**/s('" + server.key() + "')")
        # PostgreSQL's own input error quoting a key.
        k = server.key()
        fails(c, f"SELECT set_config('pazpaz.encryption_key', '{k}', '{k}')")
        fails(c, f"SET pazpaz.encryption_key = {k}")
    assert server.leaks() == []


# A second round of attacks: decrypted text fed to anything that quotes its
# input in an error (name lookups, file names, settings, parsers) or that
# carries it into a statement (dynamic SQL, strict-params details).
OTHER_ERRORS = [
    "SELECT {v}::regclass", "SELECT {v}::regtype", "SELECT {v}::regnamespace", "SELECT {v}::regrole",
    "SELECT nextval({v})", "SELECT has_table_privilege({v}, 'select')", "SELECT current_setting({v})",
    "SELECT ('a.' || {v} || '.c')::regclass", "SELECT ({v} || ' & & (')::tsquery", "SELECT pg_read_file('/nonexistent/' || {v})",
    "SELECT to_regtype({v} || ' x(')", "SELECT xmlparse(document '<a>' || {v} || '</b>')",
    "SELECT ('<a>' || {v} || '</b>')::xml", "SELECT dyn_cast({v})", "SELECT dyn_where({v})", "SELECT strict_params({v})",
]


def test_review_decrypted_text_in_other_errors(server):
    with server.connect() as c:
        set_key(c, server.key())
        c.execute("CREATE TABLE r2 (id serial, c encrypted_text)")
        c.execute("CREATE FUNCTION dyn_cast(v text) RETURNS int LANGUAGE plpgsql AS $$"
                  " DECLARE r int; BEGIN EXECUTE 'SELECT ' || quote_literal(v) || '::int' INTO r; RETURN r; END $$")
        c.execute("CREATE FUNCTION dyn_where(v text) RETURNS bigint LANGUAGE plpgsql AS $$ DECLARE r bigint; BEGIN"
                  " EXECUTE format('SELECT count(*) FROM pg_class WHERE relname = %L AND 1/0 = 1', v) INTO r; RETURN r; END $$")
        c.execute("CREATE FUNCTION strict_params(v text) RETURNS int LANGUAGE plpgsql AS $$ #print_strict_params on\n"
                  " DECLARE r int; BEGIN SELECT 1 INTO STRICT r FROM pg_class WHERE relname <> v; RETURN r; END $$")
        for sql in OTHER_ERRORS:
            m = server.marker()
            rid = c.execute("INSERT INTO r2 (c) VALUES (%s) RETURNING id", [m]).fetchone()[0]
            e = fails(c, sql.format(v="(SELECT c::text FROM r2 WHERE id = %s)"), [rid])
            assert e.sqlstate, sql
    assert server.leaks() == []


def test_review_a_big_keyring_and_the_statement_line(server):
    """17 keys in one keyring (every spelling of each is remembered), and a
    key that reaches the STATEMENT: line of an error (a wrapper call that
    fails, under the default log_min_error_statement)."""
    with server.connect() as c:
        ring = {f"v{i}": server.key() for i in range(17)}
        c.execute("SELECT set_config('pazpaz.encryption_keys', %s, false), set_config('pazpaz.encryption_key_version', 'v0', false)",
                  [json.dumps(ring)])
        assert c.execute("SELECT count(*) FROM encryption_status()").fetchone() == (17,)
        for k in ring.values():
            fails(c, f"SELECT '{k}'::regclass")
    assert server.leaks() == []


def quoted_values_statements(server, table: str) -> None:
    """Third round: a decrypted value with double quotes in it (JSON kept in
    an encrypted column), values that errors print without quotes, internal
    queries and contexts of dynamic SQL at every level (auto_explain logs
    nested statements at LOG), plans whose values are identifiers or
    numbers."""
    with server.connect() as c:
        set_key(c, server.key())
        c.execute(f"CREATE TABLE {table} (id serial, c encrypted_text)")
        cases = [
            ('{"diagnosis": "%s", "x": 1}', f"SELECT c::text::int FROM {table} WHERE id = %s"),
            ('a"%s"b', f"SELECT c::text::numeric FROM {table} WHERE id = %s"),
            ("%s", f"SELECT query_to_xml('SELECT ' || c::text || ' FROM', true, true, '') FROM {table} WHERE id = %s"),
            ("1987-13-45 %s", f"SELECT make_date(1987, 13, 45), c::text::date FROM {table} WHERE id = %s"),
            ("a.b.c.%s", f"SELECT c::text::regclass FROM {table} WHERE id = %s"),
        ]
        for template, sql in cases:
            m = server.marker()
            rid = c.execute(f"INSERT INTO {table} (c) VALUES (%s) RETURNING id", [template % m]).fetchone()[0]
            fails(c, sql, [rid])
        # Numbers printed without quotes (make_date's own message quotes none).
        n = str(900000000 + secrets.randbelow(99999999))
        server.markers.append(n)
        rid = c.execute(f"INSERT INTO {table} (c) VALUES (%s) RETURNING id", [n]).fetchone()[0]
        fails(c, f"SELECT chr(c::text::int) FROM {table} WHERE id = %s", [rid])
        fails(c, f"SELECT setseed(c::text::float8) FROM {table} WHERE id = %s", [rid])
        # Dynamic SQL that quotes the value the safe way (%L), an identifier
        # (%I) or a number, logged by auto_explain as a nested statement.
        for fmt in ("SELECT %L::text", "SELECT 1 AS %I", "SELECT %s::bigint + 1"):
            m = server.marker() if "%s" not in fmt else n
            rid = c.execute(f"INSERT INTO {table} (c) VALUES (%s) RETURNING id", [m]).fetchone()[0]
            c.execute(f"DO $$ DECLARE v text; r text; BEGIN SELECT c::text INTO v FROM {table} WHERE id = " + str(rid)
                      + f"; EXECUTE format('{fmt}', v) INTO r; END $$")


def test_review_values_with_quotes_unquoted_values_and_nested_statements(server):
    quoted_values_statements(server, "r3")
    assert server.leaks() == []


def test_review_plans_of_nested_statements_with_those_values(server):
    """The same statements, as auto_explain logs them: the plans of the
    nested statements of the DO blocks (the dynamic SQL with the values)."""
    require_library("auto_explain", AUTO_EXPLAIN_WHY)
    start = log_size(server)
    quoted_values_statements(server, "r3_plans")
    new = log_since(server, start)
    assert re.search(r"plan:\n(?:\t[^\n]*\n)+[^\n]*CONTEXT:  [^\n]*\n\tPL/pgSQL function inline_code_block line \d+ at EXECUTE",
                     new), "auto_explain logged the plans of the DO blocks' dynamic statements"
    assert "Seq Scan on public.r3_plans" in new, "auto_explain logged the plan of the DO blocks' SELECT INTO"
    assert server.leaks() == []


def test_review_keyring_with_json_escapes(server):
    with server.connect() as c:
        k = server.key()
        ring = '{"v1": "%s"}' % k.replace("/", "\\/").replace("+", "\\u002b")
        c.execute("SELECT set_config('pazpaz.encryption_keys', %s, false)", [ring])
        assert c.execute("SELECT count(*) FROM encryption_status()").fetchone() == (1,)
        fails(c, f"SELECT decode('{k}', 'base64')::text::int")
    assert server.leaks() == []


def test_review_names_that_are_not_key_settings_stay_readable(server):
    """A schema or table named pazpaz is not a key setting: its statements
    are logged as they are (no over-redaction of the audit trail)."""
    with server.connect() as c:
        c.execute("CREATE SCHEMA IF NOT EXISTS pazpaz")
        c.execute("CREATE TABLE IF NOT EXISTS pazpaz.visits (id int)")
        c.execute("SELECT count(*) FROM pazpaz.visits")
    assert "statement: SELECT count(*) FROM pazpaz.visits" in server.cluster.log.read_text()


def test_finding_17_values_decrypted_in_workers_only(server):
    with server.connect() as c:
        set_key(c, server.key())
        c.execute("CREATE TABLE par AS SELECT g AS id, encrypt_field(%s || g) AS b FROM generate_series(1, 2000) g",
                  [server.marker()])
        c.execute("CREATE TABLE nn (a text NOT NULL, b text)")
    with server.connect() as c:  # fresh backend; decrypts in workers only
        set_key(c, server.keys[-1])
        # force_parallel_mode was renamed debug_parallel_query in 16.
        force = ("debug_parallel_query" if int(c.execute("SHOW server_version_num").fetchone()[0]) >= 160000
                 else "force_parallel_mode")
        c.execute("SET parallel_leader_participation = off")
        c.execute(f"SET {force} = on")
        c.execute("SET parallel_setup_cost = 0")
        c.execute("SET parallel_tuple_cost = 0")
        c.execute("SELECT count(decrypt_field(b)) FROM par").fetchone()
        c.execute(f"RESET {force}")
        e = fails(c, "INSERT INTO nn SELECT NULL, decrypt_field(b) FROM par WHERE id = 1")
        assert e.sqlstate == "23502"
    assert server.leaks() == []


def test_review_comments_around_a_set_of_a_key(server):
    """SET statements whose first word follows a comment, or whose setting
    name has comments around the dot: logged by log_statement = all as
    `statement: …` (and `execute <name>: …` over the extended protocol)
    before any check hook has seen the key."""
    templates = [
        "/* tenant 42 */ SET pazpaz --\n.index_key = '{k}';",
        "SET pazpaz/**/.encryption_key = '{k}';",
        "-- tenant 42\n  set /* a /* nested */ comment */ pazpaz . /**/ encryption_key = '{k}'",
    ]
    for t in templates:
        for prepare in (False, True):
            # A fresh session each time: the key is new to it.
            with server.connect() as c:
                sql = t.format(k=server.key())
                try:
                    c.execute(sql.rstrip(";") if prepare else sql, prepare=prepare)
                except psycopg.Error:
                    pass
    assert server.leaks() == []


def test_finding_8_crash_report_of_a_literal_key(server):
    """Last in the module: kill -9 makes the postmaster restart every backend."""
    key = server.key()
    c = server.connect()
    pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    # The README no longer shows this literal form; an operator may still type it.
    c.execute(f"SELECT set_config('pazpaz.encryption_key', '{key}', false)")
    os.kill(pid, signal.SIGKILL)
    # The postmaster reports the crash and restarts every backend; a
    # connection can still get through before it has noticed, so wait for
    # the report, then for the server to accept connections again.
    deadline = time.time() + 60
    while "was terminated by signal 9" not in server.cluster.log.read_text():
        assert time.time() < deadline, "the postmaster did not report the killed backend"
        time.sleep(0.2)
    while True:
        try:
            with server.connect() as c2:
                c2.execute("SELECT 1")
            break
        except psycopg.Error:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    assert server.leaks() == []
