"""Wrapped data keys on real servers with a key-encryption key (KEK) ring:
the known-answer vectors of tests/vectors/wrapped_key_vectors.json (made with
Python `cryptography`), refusals at SET time, the server refusing to start on
a bad KEK file or command, pazpaz.require_wrapped_keys, the raw key of
generate_wrapped_encryption_key() never on the wire, KEK rotation, parallel
workers and rotate_column with wrapped keys."""

import base64
import json
import os
import secrets
import subprocess
import time

import psycopg
import pytest

from conftest import ROOT
from wrapped_support import (
    POSTGRES_UID, connect, data_dir, leaks, fingerprint, force_parallel, kek_path, new_ring, open_field, remove, restart, ring_spellings,
    spellings, start, unique, unwrap, wrap, write_kek_file,
)

VECTORS = json.loads((ROOT / "tests/vectors/wrapped_key_vectors.json").read_text())
pytestmark = pytest.mark.every_version


@pytest.fixture(scope="module")
def kat_server():
    """A server whose KEK ring is the vectors' (k1, k2 current, kek.2026-01)."""
    name = unique("wk_kat")
    path = write_kek_file(kek_path(name), VECTORS["kek_ring"])
    c = start(name, f"pazpaz.kek_file = '{path}'")
    with connect(c) as conn:
        conn.execute("CREATE EXTENSION pazpaz_crypto")
    yield c
    remove(name)


def set_key(conn, value, setting="pazpaz.encryption_key", local=False):
    conn.execute("SELECT set_config(%s, %s, %s)", [setting, value, local])


def status(conn):
    return conn.execute("SELECT version, is_current, fingerprint, wrapped, kek_id FROM encryption_status() ORDER BY 1").fetchall()


def test_kek_status_lists_the_ring(kat_server):
    ring = VECTORS["kek_ring"]
    with connect(kat_server) as conn:
        rows = conn.execute("SELECT kek_id, is_current, fingerprint FROM kek_status() ORDER BY 1").fetchall()
    want = sorted((i, i == ring["current"], fingerprint(base64.b64decode(k))) for i, k in ring["keys"].items())
    assert rows == want
    assert "loaded 3 key-encryption key(s) from pazpaz.kek_file (k1, k2, kek.2026-01; current: k2)" in kat_server.log.read_text()


@pytest.mark.parametrize("v", VECTORS["vectors"], ids=lambda v: v["name"])
def test_vectors_unwrap_to_their_data_keys(kat_server, v):
    raw = base64.b64decode(v["data_key"])
    ct = base64.b64decode(v["field"]["ciphertext"])
    with connect(kat_server) as conn:
        set_key(conn, v["wrapped"])
        assert conn.execute("SELECT decrypt_field(%s)", [ct]).fetchone()[0] == v["field"]["plaintext"]
        assert status(conn) == [("v1", True, fingerprint(raw), True, v["kek_id"])]
        # The same key in a keyring, next to a raw one.
        conn.execute("RESET pazpaz.encryption_key")
        ring = {"t42.v1": v["wrapped"], "raw": base64.b64encode(secrets.token_bytes(32)).decode()}
        set_key(conn, json.dumps(ring), "pazpaz.encryption_keys")
        set_key(conn, "t42.v1", "pazpaz.encryption_key_version")
        env = conn.execute("SELECT encrypt_field_versioned('x')").fetchone()[0]
        assert env["version"] == "t42.v1"
        assert open_field(raw, base64.b64decode(env["ciphertext"])) == "x"
        assert [r[3:] for r in status(conn)] == [(False, None), (True, v["kek_id"])]


@pytest.mark.parametrize("setting", ["pazpaz.encryption_key", "pazpaz.encryption_keys"])
@pytest.mark.parametrize("bad", VECTORS["must_fail"], ids=lambda v: v["name"])
def test_must_fail_entries_are_refused_at_set(kat_server, bad, setting):
    value = bad["wrapped"] if setting == "pazpaz.encryption_key" else json.dumps({"t42.v1": bad["wrapped"]})
    body = bad["wrapped"].rsplit(":", 1)[1]
    with connect(kat_server) as conn:
        with pytest.raises(psycopg.Error) as e:
            set_key(conn, value, setting)
        assert e.value.sqlstate == bad["sqlstate"]
        assert e.value.diag.message_primary == f"invalid value for {setting}: {bad['error']}"
        client_text = str(e.value) + (e.value.diag.message_hint or "") + (e.value.diag.message_detail or "")
        echoed = body[:16] in client_text
        assert not echoed
        # Refused means not set: the session has no key.
        assert conn.execute("SELECT count(*) FROM encryption_status()").fetchone()[0] == 0


def test_no_kek_or_key_material_in_the_server_log(kat_server):
    """Last use of kat_server's log: every vector and must_fail entry went
    through it, with their errors."""
    log = kat_server.log.read_text(errors="replace")
    assert leaks(ring_spellings(VECTORS["kek_ring"]), log) == 0, "a KEK reached the server log"
    for v in VECTORS["vectors"]:
        assert leaks(spellings(base64.b64decode(v["data_key"])), log) == 0, f"the data key of {v['name']} reached the log"
    assert "invalid value for pazpaz.encryption_key: Wrapped data key" in log  # the refusals were logged


def test_generated_key_never_reaches_the_client(kat_server, tmp_path):
    """The wire, traced by libpq: generate_wrapped_encryption_key() returns
    the wrapped form only. The raw key is recovered here by unwrapping with
    the test's copy of the KEK, and it is nowhere in the trace; the key in
    use is that one (Python decrypts the server's ciphertext with it)."""
    trace = tmp_path / "wire.trace"
    wrapped = []
    with connect(kat_server) as conn, open(trace, "w") as f:
        conn.pgconn.trace(f.fileno())
        for sql in ["SELECT generate_wrapped_encryption_key()", "SELECT generate_wrapped_encryption_key('k1')"]:
            wrapped.append(conn.execute(sql).fetchone()[0])
        wrapped.append(conn.execute("SELECT rewrap_encryption_key(%s, 'kek.2026-01')", [wrapped[0]]).fetchone()[0])
        set_key(conn, wrapped[0])
        sealed = conn.execute("SELECT encrypt_field('generated marker')").fetchone()[0]
        conn.execute("SELECT decrypt_field(encrypt_field('again'))")
        conn.pgconn.untrace()
    assert [w.split(":")[1] for w in wrapped] == ["k2", "k1", "kek.2026-01"]
    raws = [unwrap(w, VECTORS["kek_ring"]) for w in wrapped]
    rewrapped_same, generated_differ = raws[0] == raws[2], raws[0] != raws[1]
    assert rewrapped_same and generated_differ
    assert open_field(raws[0], sealed) == "generated marker"
    wire = trace.read_text(errors="replace")
    assert wrapped[0] in wire  # the trace does show what crossed
    assert leaks([s for raw in raws for s in spellings(raw)], wire) == 0, "a generated raw key crossed the wire"
    # The wrapped form is no key by itself: its body is not a 32-byte key.
    with connect(kat_server) as conn:
        with pytest.raises(psycopg.Error) as e:
            set_key(conn, wrapped[0].rsplit(":", 1)[1])
        assert e.value.sqlstate == "22023"


def test_wrap_encryption_key_and_privileges(kat_server):
    raw = secrets.token_bytes(32)
    b64 = base64.b64encode(raw).decode()
    with connect(kat_server) as conn:
        w = conn.execute("SELECT wrap_encryption_key(%s)", [b64]).fetchone()[0]
        same = unwrap(w, VECTORS["kek_ring"]) == raw
        assert w.startswith("pzw1:k2:") and same
        w1 = conn.execute("SELECT wrap_encryption_key(%s, 'k1')", [b64]).fetchone()[0]
        same = unwrap(w1, VECTORS["kek_ring"]) == raw
        assert same
        for sql, args, state in [
            ("SELECT wrap_encryption_key(%s)", [w], "22023"),         # already wrapped
            ("SELECT wrap_encryption_key(%s, 'k9')", [b64], "42704"),  # unknown KEK
            ("SELECT wrap_encryption_key('AAAA')", [], "22023"),
            ("SELECT rewrap_encryption_key(%s, 'k9')", [w], "42704"),
            ("SELECT rewrap_encryption_key(%s)", [w[:-2]], "22000"),
            ("SELECT generate_wrapped_encryption_key('nope')", [], "42704"),
        ]:
            with pytest.raises(psycopg.Error) as e:
                conn.execute(sql, args)
            assert e.value.sqlstate == state, sql
            echoed = b64[:16] in str(e.value)
            assert not echoed
        conn.execute("DROP ROLE IF EXISTS wk_app; CREATE ROLE wk_app LOGIN")
        conn.execute("GRANT USAGE ON SCHEMA public TO wk_app")
    with psycopg.connect(kat_server.dsn(user="wk_app"), autocommit=True) as app:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("SELECT wrap_encryption_key(%s)", [b64])
        # Each call spends one of the KEK's 2^32 random-nonce wraps.
        for sql in ("SELECT generate_wrapped_encryption_key()", "SELECT generate_wrapped_encryption_key('k1')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(sql)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("SELECT rewrap_encryption_key(%s)", [w1])
        # An ordinary role sets wrapped keys and uses them.
        set_key(app, w1)
        assert app.execute("SELECT decrypt_field(encrypt_field('app'))").fetchone()[0] == "app"
    with connect(kat_server) as conn:
        conn.execute("GRANT EXECUTE ON FUNCTION wrap_encryption_key(text), rewrap_encryption_key(text),"
                     " generate_wrapped_encryption_key() TO wk_app")
    with psycopg.connect(kat_server.dsn(user="wk_app"), autocommit=True) as app:
        granted = [unwrap(app.execute(sql, [arg]).fetchone()[0], VECTORS["kek_ring"]) == raw
                   for sql, arg in [("SELECT wrap_encryption_key(%s)", b64), ("SELECT rewrap_encryption_key(%s)", w1)]]
        assert granted == [True, True]
        assert app.execute("SELECT generate_wrapped_encryption_key()").fetchone()[0].startswith("pzw1:k2:")
    with connect(kat_server) as conn:
        conn.execute("REVOKE EXECUTE ON FUNCTION wrap_encryption_key(text), rewrap_encryption_key(text),"
                     " generate_wrapped_encryption_key() FROM wk_app")


def wait_for_setting(conn, name, value, timeout=10.0):
    deadline = time.time() + timeout
    while conn.execute(f"SHOW {name}").fetchone()[0] != value:
        if time.time() > deadline:
            raise AssertionError(f"{name} never became {value}")
        time.sleep(0.05)


def test_require_wrapped_keys(kat_server):
    raw = base64.b64encode(secrets.token_bytes(32)).decode()
    wrapped = VECTORS["vectors"][0]["wrapped"]
    with connect(kat_server) as before, connect(kat_server) as admin:
        set_key(before, raw)
        assert before.execute("SELECT decrypt_field(encrypt_field('raw ok'))").fetchone()[0] == "raw ok"
        admin.execute("ALTER SYSTEM SET pazpaz.require_wrapped_keys = on")
        admin.execute("SELECT pg_reload_conf()")
        try:
            wait_for_setting(before, "pazpaz.require_wrapped_keys", "on")
            # A raw key set before the reload is judged again at its next use.
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
                before.execute("SELECT encrypt_field('x')")
            assert "pazpaz.require_wrapped_keys is on" in str(e.value)
            with connect(kat_server) as s:
                with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
                    set_key(s, raw)
                assert e.value.diag.message_primary == (
                    "invalid value for pazpaz.encryption_key: raw keys are refused because "
                    "pazpaz.require_wrapped_keys is on: give the key in its wrapped form (pzw1:…)")
                # The index key of search follows the same policy.
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    set_key(s, raw, "pazpaz.index_key")
                set_key(s, VECTORS["vectors"][1]["wrapped"], "pazpaz.index_key")
                assert "wrap_encryption_key" in e.value.diag.message_hint
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    set_key(s, json.dumps({"w": wrapped, "r": raw}), "pazpaz.encryption_keys")
                set_key(s, wrapped)
                assert s.execute("SELECT decrypt_field(encrypt_field('wrapped ok'))").fetchone()[0] == "wrapped ok"
                # Not even a superuser's session turns it off.
                with pytest.raises(psycopg.errors.CantChangeRuntimeParam):
                    s.execute("SET pazpaz.require_wrapped_keys = off")
        finally:
            admin.execute("ALTER SYSTEM RESET pazpaz.require_wrapped_keys")
            admin.execute("SELECT pg_reload_conf()")
            wait_for_setting(admin, "pazpaz.require_wrapped_keys", "off")


def test_wrapped_index_keys(kat_server):
    """pazpaz.index_key (and index_key_next) take wrapped keys too: the blind
    index under a wrapped key is the one under its raw key."""
    v = VECTORS["vectors"][2]
    db = kat_server.create_db()
    try:
        with connect(kat_server, db) as conn:
            q = "SELECT blind_index('ada@example.org', 'clients.email')"
            set_key(conn, v["wrapped"], "pazpaz.index_key")
            under_wrapped = conn.execute(q).fetchone()[0]
            fp = conn.execute("SELECT fingerprint FROM index_key_status() WHERE setting = 'pazpaz.index_key'"
                              ).fetchone()[0]
            set_key(conn, v["data_key"], "pazpaz.index_key")
            assert conn.execute(q).fetchone()[0] == under_wrapped
            set_key(conn, VECTORS["vectors"][3]["wrapped"], "pazpaz.index_key_next")
            assert conn.execute(q).fetchone()[0] == under_wrapped
            assert len(fp) == 8
            with pytest.raises(psycopg.errors.DataException):
                set_key(conn, VECTORS["must_fail"][0]["wrapped"], "pazpaz.index_key")
    finally:
        kat_server.drop_db(db)


def test_parallel_workers_and_rotate_column_with_wrapped_keys(kat_server):
    db = kat_server.create_db()
    w1, w2 = (VECTORS["vectors"][i]["wrapped"] for i in (0, 1))
    raw2 = base64.b64decode(VECTORS["vectors"][1]["data_key"])
    try:
        with connect(kat_server, db) as conn:
            set_key(conn, json.dumps({"v1": w1, "v2": w2}), "pazpaz.encryption_keys")
            set_key(conn, "v1", "pazpaz.encryption_key_version")
            conn.execute("CREATE TABLE notes (id int PRIMARY KEY, j jsonb, t encrypted_text)")
            conn.execute("INSERT INTO notes SELECT i, encrypt_field_versioned('row ' || i), ('row ' || i)::text "
                         "FROM generate_series(1, 2000) i")
            conn.execute("ANALYZE notes")
            force_parallel(conn)
            q = "SELECT count(*) FROM notes WHERE decrypt_field_versioned(j) = t::text"
            plan = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {q}").fetchone()[0][0]["Plan"]

            def launched(node):
                return node.get("Workers Launched", 0) + sum(launched(p) for p in node.get("Plans", []))
            assert launched(plan) >= 1, plan
            assert conn.execute(q).fetchone()[0] == 2000
            conn.execute("RESET ALL")
            set_key(conn, json.dumps({"v1": w1, "v2": w2}), "pazpaz.encryption_keys")
            set_key(conn, "v2", "pazpaz.encryption_key_version")
            conn.execute("CALL rotate_column('notes', 'j', 500)")
            conn.execute("CALL rotate_column('notes', 't', 500)")
            assert conn.execute("SELECT key_version(j), key_version(t), count(*) FROM notes GROUP BY 1, 2").fetchall() \
                == [("v2", "v2", 2000)]
            # Only v2, still wrapped: every row reads; Python reads one too.
            conn.execute("RESET ALL")
            set_key(conn, json.dumps({"v2": w2}), "pazpaz.encryption_keys")
            assert conn.execute(q).fetchone()[0] == 2000
            env = conn.execute("SELECT j FROM notes WHERE id = 7").fetchone()[0]
            assert open_field(raw2, base64.b64decode(env["ciphertext"])) == "row 7"
    finally:
        kat_server.drop_db(db)


# ---- the server does not start on a bad KEK source ----------------------------------

RING = new_ring("k1")


def _pasted(key: str) -> str:
    return key.replace("/", "_").replace("+", "-").rstrip("=")


def _cases():
    ring = json.dumps(RING).encode()
    return [
        ("world-readable", dict(ring=ring, mode=0o644), "has group or other access (mode 0644)"),
        ("group-readable", dict(ring=ring, mode=0o640), "has group or other access (mode 0640)"),
        ("other-writable", dict(ring=ring, mode=0o602), "has group or other access (mode 0602)"),
        ("owned by root", dict(ring=ring, mode=0o644, uid=0), "must be owned by the database server's user"),
        ("unreadable", dict(ring=ring, mode=0o600, uid=0), "Permission denied"),
        ("missing", dict(ring=None), "could not open pazpaz.kek_file"),
        # Opening a FIFO for reading waits for a writer: the postmaster hung,
        # silent, until SIGKILL.
        ("a FIFO", dict(ring=b"", fifo=True), "is not a regular file"),
        ("not JSON", dict(ring=b"k1=" + RING["keys"]["k1"].encode()), "malformed JSON or not an object"),
        ("flat object", dict(ring=json.dumps({"k1": RING["keys"]["k1"]}).encode()), "unknown member"),
        ("16-byte key", dict(ring=json.dumps({"keys": {"k1": base64.b64encode(os.urandom(16)).decode()}}).encode()),
         'member 1 of "keys" is not the base64 of 32 bytes'),
        ("no current", dict(ring=json.dumps({"keys": {**RING["keys"], "k2": RING["keys"]["k1"]}}).encode()),
         '"current" must name the key that new wraps use'),
        # A KEK pasted into "current" (its unpadded URL-safe base64 is a valid id).
        ("a key as current", dict(ring=json.dumps({"current": _pasted(RING["keys"]["k1"]), "keys": RING["keys"]}).encode()),
         '"current" names an id that is not in "keys" (the ids in "keys": k1)'),
        ("a key as an id", dict(ring=json.dumps({"keys": {_pasted(RING["keys"]["k1"]): "AAAA"}}).encode()),
         'member 1 of "keys" is not the base64 of 32 bytes'),
        ("command fails", dict(command="echo \"$(cat {path})\" >/dev/null; exit 3", ring=ring),
         "pazpaz.kek_command failed: child process exited with exit code 3"),
        ("command prints garbage", dict(command="echo not-json-{secret}", ring=ring), "malformed JSON or not an object"),
        ("both set", dict(command="cat {path}", also_file=True, ring=ring),
         "pazpaz.kek_file and pazpaz.kek_command are both set"),
    ]


@pytest.mark.parametrize("case,how,want", _cases(), ids=[c[0] for c in _cases()])
def test_server_refuses_to_start(case, how, want):
    """A server that started with a good ring is stopped, given the bad file
    or command, and started again: it must not come up, and its log says why
    (scripts/pg.sh's pg_start hands every file under PG_BASE to postgres, so
    the bad state is made after it)."""
    name = unique("wk_bad")
    path = write_kek_file(kek_path(name), RING)
    c = start(name, f"pazpaz.kek_file = '{path}'")
    secret = RING["keys"]["k1"].replace("/", "_").replace("+", "-").rstrip("=")
    try:
        offset = c.log.stat().st_size
        if how.get("ring") is None:
            path.unlink()
        elif how.get("fifo"):
            path.unlink()
            os.mkfifo(path, 0o600)
            os.chown(path, POSTGRES_UID, -1)
        else:
            write_kek_file(path, how["ring"], how.get("mode", 0o600), how.get("uid", POSTGRES_UID))
        conf = []
        if "command" in how:
            conf.append(f"pazpaz.kek_command = '{how['command'].format(path=path, secret=secret)}'")
            if not how.get("also_file"):
                conf.append("pazpaz.kek_file = ''")
        with open(data_dir(name) / "postgresql.conf", "a") as f:
            f.write("".join(line + "\n" for line in conf))
        began = time.monotonic()
        with pytest.raises(subprocess.CalledProcessError):
            restart(c)
        assert time.monotonic() - began < 30, "the server took as long to refuse as pg_ctl waits"
        log = c.log.read_text(errors="replace")[offset:]
        assert leaks(ring_spellings(RING), log) == 0, "a KEK reached the log"
        assert "FATAL" in log and want in log, log[-3000:]  # (holds no key: checked above)
    finally:
        remove(name)


def _processes_with(text: str) -> list[str]:
    """The pids of processes whose command line holds `text`."""
    found = []
    for proc in os.listdir("/proc"):
        if not proc.isdigit():
            continue
        try:
            cmdline = open(f"/proc/{proc}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(proc)
    return found


def test_a_command_that_never_exits_stops_the_start_within_the_timeout():
    """A kek_command that hangs (and a child of it that holds its output):
    the postmaster, its signals blocked while it loads libraries, waited
    forever and pg_ctl could not stop it. Now, past
    pazpaz.kek_command_timeout, the command's process group is killed and the
    server stops with a FATAL that says why (not quoting the command)."""
    name = unique("wk_hang")
    path = write_kek_file(kek_path(name), RING)
    c = start(name, f"pazpaz.kek_file = '{path}'")
    # Unique durations: the processes can be looked for afterwards.
    token = f"{secrets.randbelow(10**6):06d}"
    command = f"sleep 1001.{token} & sleep 1000.{token}; cat {path}"
    try:
        offset = c.log.stat().st_size
        with open(data_dir(name) / "postgresql.conf", "a") as f:
            f.write(f"pazpaz.kek_file = ''\npazpaz.kek_command = '{command}'\npazpaz.kek_command_timeout = 2\n")
        began = time.monotonic()
        with pytest.raises(subprocess.CalledProcessError):
            restart(c)
        assert time.monotonic() - began < 30, "pg_ctl waited for its own timeout"
        log = c.log.read_text(errors="replace")[offset:]
        want = "pazpaz.kek_command did not exit within pazpaz.kek_command_timeout (2 s); its process group was killed"
        assert "FATAL" in log and want in log, log[-3000:]
        assert token not in log, "the command was quoted"
        assert leaks(ring_spellings(RING), log) == 0, "a KEK reached the log"
        deadline = time.monotonic() + 5
        while _processes_with(token) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _processes_with(token) == [], "a process of the command survived"
    finally:
        for pid in _processes_with(token):
            try:
                os.kill(int(pid), 9)
            except OSError:
                pass
        remove(name)


def test_the_command_runs_with_default_signals_and_an_empty_mask():
    """The postmaster loads its libraries with signals blocked: the command
    (and everything it starts) must not inherit that mask, nor any ignored
    signal."""
    name = unique("wk_sigs")
    path = write_kek_file(kek_path(name), RING)
    out = kek_path(name).with_suffix(".sigs")
    c = start(name, f"pazpaz.kek_command = 'grep -E \"^Sig(Blk|Ign)\" /proc/self/status > {out}; cat {path}'")
    try:
        sigs = dict(line.split(":") for line in out.read_text().splitlines())
        assert {k: int(v.strip(), 16) for k, v in sigs.items()} == {"SigBlk": 0, "SigIgn": 0}, sigs
        assert "from pazpaz.kek_command (k1; current: k1)" in c.log.read_text()
    finally:
        remove(name)
        out.unlink(missing_ok=True)


# ---- KEK from a command, and KEK rotation ---------------------------------------------

def test_kek_rotation_with_a_command(tmp_path):
    """Tenants' keys wrapped under k1; the ring gains k2 (current); every
    wrapped key is rewrapped to k2; the server restarts without k1; every row
    still decrypts with the rewrapped keys, and the old wrapped forms are
    refused, naming k1 and the loaded ids."""
    name = unique("wk_rot")
    ring = new_ring("k1")
    path = write_kek_file(kek_path(name), ring)
    c = start(name, f"pazpaz.kek_command = 'cat {path}'")
    try:
        assert "from pazpaz.kek_command (k1; current: k1)" in c.log.read_text()
        db = c.create_db()
        tenants = {}
        with connect(c, db) as conn:
            conn.execute("CREATE TABLE notes (tenant text, id int, body encrypted_text, j jsonb)")
            for t in ("t42", "t43", "t44"):
                tenants[t] = conn.execute("SELECT generate_wrapped_encryption_key()").fetchone()[0]
                set_key(conn, json.dumps({f"{t}.v1": tenants[t]}), "pazpaz.encryption_keys")
                conn.execute("INSERT INTO notes SELECT %s, i, %s || i, encrypt_field_versioned(%s || i) "
                             "FROM generate_series(1, 50) i", [t, f"{t} note ", f"{t} note "])
                conn.execute("RESET pazpaz.encryption_keys")
        # 1. The ring gains k2, the current KEK; restart.
        ring2 = {"current": "k2", "keys": {**ring["keys"], **new_ring("k2")["keys"]}}
        write_kek_file(path, ring2)
        restart(c)
        # 2. Rewrap every tenant's key (the application stores the new forms).
        with connect(c, db) as conn:
            assert conn.execute("SELECT string_agg(kek_id || ':' || is_current, ',' ORDER BY kek_id) FROM kek_status()"
                                ).fetchone()[0] == "k1:false,k2:true"
            old = dict(tenants)
            for t in tenants:
                tenants[t] = conn.execute("SELECT rewrap_encryption_key(%s)", [tenants[t]]).fetchone()[0]
                same = unwrap(tenants[t], ring2) == unwrap(old[t], ring2)
                assert tenants[t].startswith("pzw1:k2:") and same
        # 3. Restart without k1.
        write_kek_file(path, {"keys": {"k2": ring2["keys"]["k2"]}})
        restart(c)
        with connect(c, db) as conn:
            for t, w in tenants.items():
                set_key(conn, json.dumps({f"{t}.v1": w}), "pazpaz.encryption_keys")
                rows = conn.execute("SELECT count(*) FROM notes WHERE tenant = %s AND body::text = %s || id "
                                    "AND decrypt_field_versioned(j) = %s || id", [t, f"{t} note ", f"{t} note "]
                                    ).fetchone()[0]
                assert rows == 50, t
                assert status(conn)[0][3:] == (True, "k2")
                conn.execute("RESET pazpaz.encryption_keys")
                with pytest.raises(psycopg.errors.UndefinedObject) as e:
                    set_key(conn, old[t])
                assert 'key-encryption key "k1" is not loaded (loaded key-encryption keys: k2)' in str(e.value)
        log = c.log.read_text(errors="replace")
        assert leaks(ring_spellings(ring2), log) == 0, "a KEK reached the log"
    finally:
        remove(name)


# ---- a key setting's size is bounded before anything copies it --------------------

def test_huge_key_setting_is_an_error_not_an_abort():
    """Any role can give a key setting any value. A value far beyond any
    valid one (150 MB) is refused with an ERROR, in a server whose memory is
    limited (ulimit -v) so that copying it a few times to remember it would
    fail: before the bound, the failed allocation aborted the backend
    (SIGABRT), and the postmaster restarted the whole cluster."""
    name = unique("wk_huge")
    path = write_kek_file(kek_path(name), RING)
    c = start(name, f"pazpaz.kek_file = '{path}'")
    try:
        with connect(c) as conn:
            conn.execute("CREATE EXTENSION pazpaz_crypto")
            conn.execute("CREATE ROLE plain LOGIN")
        restart(c, memory_kib=1400000)
        offset = c.log.stat().st_size
        with psycopg.connect(c.dsn(user="plain"), autocommit=True) as conn:
            for setting in ("pazpaz.encryption_key", "pazpaz.encryption_keys", "pazpaz.index_key",
                            "pazpaz.index_key_next"):
                with pytest.raises(psycopg.errors.ProgramLimitExceeded) as e:
                    conn.execute("SELECT set_config(%s, repeat('A', 150000000), false)", [setting])
                assert f"invalid value for {setting}: longer than 65536 bytes" in str(e.value)
            # One byte over the bound is refused the same way; the backend lives on.
            with pytest.raises(psycopg.errors.ProgramLimitExceeded):
                conn.execute("SELECT set_config('pazpaz.encryption_key', repeat('A', 65537), false)")
            assert conn.execute("SELECT 1").fetchone()[0] == 1
        log = c.log.read_text(errors="replace")[offset:]
        assert "terminated by signal" not in log and "memory allocation of" not in log, log[-2000:]
    finally:
        remove(name)


def test_kek_settings_without_preloading_warn():
    """pazpaz.kek_command in postgresql.conf, the library not preloaded: the
    setting is a placeholder any role can SHOW, and no KEK is loaded. When a
    backend loads the library it says so with a WARNING (never quoting the
    setting's value)."""
    name = unique("wk_nopre")
    token = "token-" + secrets.token_hex(8)
    c = start(name, "shared_preload_libraries = ''", f"pazpaz.kek_command = 'vault read {token}'")
    try:
        notices = []
        with connect(c) as conn:
            conn.add_notice_handler(lambda d: notices.append((d.severity, d.message_primary)))
            conn.execute("LOAD 'pazpaz_crypto'")
        want = ("WARNING", "pazpaz.kek_command is set, but pazpaz_crypto is not in shared_preload_libraries: "
                "no key-encryption key is loaded, and the setting is a placeholder that any role can read with SHOW")
        assert want in notices, notices
        assert not any(token in m for _, m in notices)
    finally:
        remove(name)


def _writable_memory(pid: int) -> bytes:
    """The writable mappings of a process (heap, stacks, anonymous and shared
    memory), as root reads them through /proc/<pid>/mem."""
    chunks = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if not fields[1].startswith("rw"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                chunks.append(mem.read(end - start))
            except (OSError, ValueError, OverflowError):
                pass
    return b"\0".join(chunks)


def _text_spellings(raw: bytes) -> list[bytes]:
    """The spellings of a key as text (its raw bytes are in AES key
    schedules, necessarily)."""
    b64 = base64.b64encode(raw)
    url = base64.urlsafe_b64encode(raw)
    return [b64, b64.rstrip(b"="), url.rstrip(b"="), raw.hex().encode(), raw.hex().upper().encode()]


def test_no_key_or_kek_as_text_in_a_backends_memory():
    """The log filter kept every spelling of every key it had seen in plain
    text for the life of the backend, RESET and DISCARD ALL included, and
    the KEK ring's text in every process: a role that can read a backend's
    memory (pg_read_server_files and /proc/self/mem) recovered them. Now
    only keyed digests are kept. Checked on the memory of a backend after
    it set a wrapped key (unwrapped to a raw key it remembered in every
    spelling), used it and reset it."""
    name = unique("wk_mem")
    ring = new_ring("k1", "k2")
    path = write_kek_file(kek_path(name), ring)
    c = start(name, f"pazpaz.kek_file = '{path}'")
    try:
        raw = secrets.token_bytes(32)
        with connect(c) as conn:
            conn.execute("CREATE EXTENSION pazpaz_crypto")
            set_key(conn, wrap(raw, ring))
            sealed = conn.execute("SELECT encrypt_field('memory marker')").fetchone()[0]
            assert conn.execute("SELECT decrypt_field(%s)", [sealed]).fetchone()[0] == "memory marker"
            conn.execute("RESET pazpaz.encryption_key")
            conn.execute("DISCARD ALL")
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            memory = _writable_memory(pid)
            assert len(memory) > 1_000_000
            # Positive control: what the session sent is there to be found.
            assert b"memory marker" in memory
            found = [i for i, s in enumerate(_text_spellings(raw)) if s in memory]
            assert found == [], f"the data key as text (spellings {found}) in the backend's memory"
            keks = [s for k in ring["keys"].values() for s in _text_spellings(base64.b64decode(k))]
            assert sum(1 for s in keks if s in memory) == 0, "a KEK as text in the backend's memory"
            assert json.dumps(ring).encode()[:40] not in memory, "the KEK ring's text in the backend's memory"
    finally:
        remove(name)
