"""pgaudit next to pazpaz_crypto: reads and writes of tables with encrypted
columns are audited, and the audit log holds no key and no decrypted value
when keys are set the recommended way.

The documented configuration (AUDIT_CONF below):

    shared_preload_libraries = 'pazpaz_crypto,pgaudit'
    pgaudit.log = 'read, write'   # SELECT/COPY TO, INSERT/UPDATE/DELETE/TRUNCATE/COPY FROM
    pgaudit.log_relation = on     # one line per table touched, with its name
    pgaudit.log_catalog = off     # no lines for catalog-only queries (psql \\d, drivers' type lookups)
    pgaudit.log_parameter = off   # the default; must stay off: see below

pgaudit logs statement text, never result rows, so decrypted values stay out
as long as plaintext travels as bind parameters (psycopg 3, asyncpg,
SQLAlchemy do that) and parameters are not logged. Object auditing
(pgaudit.role) is the narrower alternative: only tables granted to the audit
role are logged.

What these settings would change, found with the probes below:
- pgaudit.log = 'misc' (or 'all') logs SET statements; a `SET
  pazpaz.encryption_key = '…'` line is redacted by the extension's log hook.
- pgaudit.log_parameter = on puts every bind parameter in the audit line: the
  plaintext of every INSERT/UPDATE, and the key of the recommended
  set_config statement. The extension's log filter replaces that field
  (unless a superuser turns pazpaz.log_redact_values off).
- pgaudit.log = 'read' (or 'all') also audits statements run inside
  functions and DO blocks, with their text: a key spelled out there, or a
  decrypted value built into dynamic SQL, would be logged; the filter
  scrubs the key by value and, in a session that holds keys, the literals
  of audited statements.
"""

import uuid

import psycopg
import pytest

from conftest import new_key, remove_cluster, require_library, start_cluster, unique_name
from pazpaz_crypto import Keyring, set_keys

AUDIT_CONF = [
    "shared_preload_libraries = 'pazpaz_crypto,pgaudit'",
    "pgaudit.log = 'read, write'",
    "pgaudit.log_relation = on",
    "pgaudit.log_catalog = off",
    "pgaudit.log_parameter = off",
]
REDACTED = "[statement redacted by pazpaz_crypto: it sets a key]"


@pytest.fixture(scope="module")
def audited():
    require_library("pgaudit")
    name = unique_name("pyaudit")
    cluster = start_cluster(name, None, *AUDIT_CONF)
    try:
        db = cluster.create_db()
        with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
            c.execute("CREATE EXTENSION pgaudit")
            c.execute("CREATE TABLE clients (id serial PRIMARY KEY, first_name encrypted_text(255) NOT NULL,"
                      " medical_history encrypted_text)")
            c.execute("CREATE TABLE visits (id serial PRIMARY KEY, note encrypted_text)")
            c.execute("CREATE ROLE pazpaz_auditor NOLOGIN")
            c.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON clients TO pazpaz_auditor")
        cluster.db = db
        yield cluster
    finally:
        remove_cluster(name)


class LogWindow:
    """The server log written between entering and leaving the block."""

    def __init__(self, cluster):
        self.path = cluster.log

    def __enter__(self):
        self.start = self.path.stat().st_size
        return self

    def __exit__(self, *exc):
        with self.path.open("rb") as f:
            f.seek(self.start)
            self.text = f.read().decode("utf-8", "replace")

    def audit_lines(self, *fields: str) -> list[str]:
        """AUDIT lines that contain every one of `fields` (e.g. 'WRITE,INSERT')."""
        return [ln for ln in self.text.splitlines() if "AUDIT:" in ln and all(f in ln for f in fields)]


def secrets_absent(text: str, keys, plaintexts) -> None:
    """Fails naming the offending log lines, with the secret masked (a key
    must not reach the test output either)."""
    found = []
    for label, values in (("<KEY>", keys), ("<PLAINTEXT>", plaintexts)):
        for v in values:
            found += [ln.replace(v, label) for ln in text.splitlines() if v in ln]
    if found:
        pytest.fail("secrets in the server log:\n" + "\n".join(found), pytrace=False)


def app_workload(conn, plain: dict) -> None:
    """An application's reads and writes, values as bind parameters."""
    cid = conn.execute("INSERT INTO clients (first_name, medical_history) VALUES (%s, %s) RETURNING id",
                       (plain["name"], plain["history"])).fetchone()[0]
    conn.execute("UPDATE clients SET medical_history = %s WHERE id = %s", (plain["update"], cid))
    assert conn.execute("SELECT first_name, medical_history FROM clients WHERE id = %s", (cid,)).fetchone() \
        == (plain["name"], plain["update"])


def distinctive(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex}"


def test_reads_and_writes_are_audited_without_keys_or_plaintext(audited):
    key = new_key()
    ring = Keyring({"v1": new_key(), "v2": new_key()}, current="v2")
    plain = {k: distinctive(k) for k in ("name", "history", "update")}
    with LogWindow(audited) as log:
        with psycopg.connect(audited.dsn(audited.db), autocommit=True) as c:
            set_keys(c, key)  # session-level, as on a pool checkout
            app_workload(c, plain)
            with c.transaction():  # per transaction, as behind PgBouncer
                set_keys(c, ring, local=True)
                app_workload(c, {k: v + "-tx" for k, v in plain.items()})
    assert len(log.audit_lines("WRITE,INSERT,TABLE,public.clients")) == 2
    assert len(log.audit_lines("WRITE,UPDATE,TABLE,public.clients")) == 2
    assert len(log.audit_lines("READ,SELECT,TABLE,public.clients")) == 2
    # The key-setting statements are audited too, as statements without values.
    for line in log.audit_lines("READ,SELECT,,,"):
        assert REDACTED in line or "set_config('pazpaz.encryption_key', $1" in line
    secrets_absent(log.text, [key, *ring.keys.values()], [*plain.values()])


def test_object_auditing_of_encrypted_tables(audited):
    """pgaudit.role: only the tables granted to the audit role are logged."""
    key = new_key()
    plain = {k: distinctive(k) for k in ("name", "history", "update")}
    with LogWindow(audited) as log:
        with psycopg.connect(audited.dsn(audited.db), autocommit=True) as c:
            c.execute("SET pgaudit.log = 'none'")
            c.execute("SET pgaudit.role = 'pazpaz_auditor'")
            set_keys(c, key)
            app_workload(c, plain)
            c.execute("INSERT INTO visits (note) VALUES (%s)", (plain["history"],))
    for op in ("WRITE,INSERT", "WRITE,UPDATE", "READ,SELECT"):
        assert len(log.audit_lines("OBJECT,", op, "TABLE,public.clients")) == 1, op
    assert log.audit_lines("public.visits") == []
    assert log.audit_lines("SESSION,") == []
    secrets_absent(log.text, [key], plain.values())


def test_misc_class_logs_set_statements_redacted(audited):
    """pgaudit.log = 'misc' (part of 'all') audits SET. A key spelled out in
    SET (not the recommended way) reaches pgaudit's line verbatim; the
    extension's log hook replaces it."""
    key = new_key()
    with LogWindow(audited) as log:
        with psycopg.connect(audited.dsn(audited.db), autocommit=True) as c:
            c.execute("SET pgaudit.log = 'all'")
            c.execute(f"SET pazpaz.encryption_key = '{key}'")
            c.execute(f"SELECT set_config('pazpaz.encryption_key', '{key}', false)")
            c.execute("RESET pazpaz.encryption_key")
    # Every statement that names a key setting is audited, its text replaced.
    for tag in ("MISC,SET", "READ,SELECT", "MISC,RESET"):
        assert len(log.audit_lines(tag, REDACTED)) == 1, tag
    secrets_absent(log.text, [key], [])


def test_log_parameter_plaintext_is_redacted_unless_values_logging_is_allowed(audited):
    """pgaudit.log_parameter = on puts the bind parameters of every write —
    the plaintext being encrypted — into the audit line. The extension's log
    filter replaces that field; a superuser who turns
    pazpaz.log_redact_values off gets pgaudit's own behaviour back."""
    key = new_key()
    plain = {k: distinctive(k) for k in ("name", "history", "update")}
    with LogWindow(audited) as log:
        with psycopg.connect(audited.dsn(audited.db), autocommit=True) as c:
            set_keys(c, key)
            c.execute("SET pgaudit.log_parameter = on")
            app_workload(c, plain)
    insert = log.audit_lines("WRITE,INSERT,TABLE,public.clients")
    assert len(insert) == 1 and "[parameters redacted by pazpaz_crypto]" in insert[0]
    secrets_absent(log.text, [key], plain.values())
    plain = {k: distinctive(k) for k in ("name", "history", "update")}
    with LogWindow(audited) as log:
        with psycopg.connect(audited.dsn(audited.db), autocommit=True) as c:
            set_keys(c, key)
            c.execute("SET pgaudit.log_parameter = on")
            c.execute("SET pazpaz.log_redact_values = off")
            app_workload(c, plain)
    insert = log.audit_lines("WRITE,INSERT,TABLE,public.clients")
    assert len(insert) == 1 and plain["name"] in insert[0] and plain["history"] in insert[0]


def test_decrypted_values_in_nested_dynamic_sql_stay_out_of_the_audit_log(audited):
    """pgaudit audits statements run inside a DO block with their text; a
    statement built from a decrypted value carries it as a literal."""
    key = new_key()
    plain = {k: distinctive(k) for k in ("name", "history", "update")}
    with LogWindow(audited) as log:
        with psycopg.connect(audited.dsn(audited.db), autocommit=True) as c:
            set_keys(c, key)
            app_workload(c, plain)
            c.execute("CREATE TABLE IF NOT EXISTS audit_copy (t text)")
            c.execute("DO $$ DECLARE v text; BEGIN SELECT medical_history::text INTO v FROM clients"
                      " ORDER BY id DESC LIMIT 1; EXECUTE format('INSERT INTO audit_copy VALUES (%L)', 'copied: ' || v); END $$")
    assert log.audit_lines("WRITE,INSERT,TABLE,public.audit_copy"), "the nested INSERT should be audited"
    secrets_absent(log.text, [key], plain.values())


def test_log_parameter_must_not_put_keys_in_the_audit_log(audited):
    """With pgaudit.log_parameter = on, pgaudit appends the bind parameters
    to the AUDIT message itself. The extension's log hook replaces the
    statement text in that message but leaves the parameter field, i.e. the
    key of the recommended set_config statement (src/log_filter.rs: its
    whole-message fallback only runs for elevel LOG, pgaudit emits at
    LOG_SERVER_ONLY, and it runs after the statement text, which held the
    setting's name, has been replaced)."""
    key = new_key()
    with LogWindow(audited) as log:
        with psycopg.connect(audited.dsn(audited.db), autocommit=True) as c:
            c.execute("SET pgaudit.log_parameter = on")
            set_keys(c, key)
    assert log.audit_lines(REDACTED), "the set_config statement should be audited (redacted)"
    secrets_absent(log.text, [key], [])


def test_key_spelled_out_inside_a_do_block_stays_out_of_the_audit_log(audited):
    """pgaudit.log = 'read' audits the statements run inside functions and
    DO blocks, with their text. A key spelled out in such a statement (not
    the recommended way, but the top-level equivalent, a SET with the key,
    is redacted) reaches the audit line; the log hook's whole-message
    fallback would catch it at elevel LOG (pgaudit.log_client = on shows it
    does) but pgaudit emits at LOG_SERVER_ONLY."""
    key = new_key()
    with LogWindow(audited) as log:
        with psycopg.connect(audited.dsn(audited.db), autocommit=True) as c:
            c.execute(f"DO $$ BEGIN PERFORM set_config('pazpaz.encryption_key', '{key}', false); END $$")
    assert log.audit_lines("READ,SELECT"), "the nested statement should be audited"
    secrets_absent(log.text, [key], [])
