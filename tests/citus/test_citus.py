"""pazpaz_crypto on a Citus formation (a coordinator and two workers, every
node preloading Citus and pazpaz_crypto, one KEK ring, raw keys refused):
keys reach every node wrapped only, ciphertext — never plaintext — travels to
the workers, decryption runs on the workers, distributed and reference tables
of every format, rotation across shards that survives a worker restart, and a
keyless dump of the coordinator."""

import base64
import json
import threading
import time

import psycopg
import pytest

import pazpaz_crypto

from conftest import harness, ws

MARK = "PLAINMARK"  # every plaintext written here starts with it


def wrapped_keys(f, n=2):
    """n fresh data keys made on the coordinator (wrapped only), with their
    raw bytes unwrapped here from the ring."""
    with f.connect() as c:
        out = [c.execute("SELECT generate_wrapped_encryption_key()").fetchone()[0] for _ in range(n)]
    return [(w, ws.unwrap(w, f.ring)) for w in out]


def keys_json(keys, versions=("v1", "v2")):
    return json.dumps({v: w for v, (w, _) in zip(versions, keys)})


def begin_with_keys(conn, keys, current="v1"):
    """A transaction whose keys reach every node (the client package's
    set_keys with citus=True: the extension's set_keys(…, true))."""
    conn.execute("BEGIN")
    ring = pazpaz_crypto.Keyring(keys=json.loads(keys_json(keys)), current=current)
    pazpaz_crypto.set_keys(conn, ring, citus=True)


def secrets_of(keys, ring):
    return [s for _, raw in keys for s in ws.spellings(raw)] + ws.ring_spellings(ring)


@pytest.fixture(scope="module")
def keys(formation):
    return wrapped_keys(formation)


def test_keys_and_values_travel_wrapped_and_encrypted(formation, keys):
    f = formation
    with f.connect() as c:
        c.execute("CREATE TABLE visits (id int PRIMARY KEY, note encrypted_text, b bytea, j jsonb)")
        c.execute("SELECT create_distributed_table('visits', 'id', shard_count => 8)")
    activity = []
    with f.connect() as c:
        begin_with_keys(c, keys)
        # Literals, INSERT … SELECT through the implicit cast, bound parameters.
        c.execute(f"INSERT INTO visits VALUES (1, '{MARK}-lit', encrypt_field('{MARK}-b'),"
                  f" encrypt_field_versioned('{MARK}-j'))")
        c.execute(f"INSERT INTO visits (id, note) SELECT g, '{MARK}-sel-' || g FROM generate_series(2, 40) g")
        for i in range(41, 46):
            c.execute("INSERT INTO visits (id, note, b) VALUES (%s, %s, encrypt_field(%s))",
                      (i, f"{MARK}-param-{i}", f"{MARK}-pb-{i}"))
        with c.cursor().copy("COPY visits (id, note) FROM STDIN") as cp:
            for i in range(46, 60):
                cp.write_row((i, f"{MARK}-copy-{i}"))
        # Multi-row VALUES, UPDATE with a literal, EXPLAIN (planned on the
        # workers from the deparsed query), a reference table's replicas.
        c.execute(f"INSERT INTO visits (id, note) VALUES (60, '{MARK}-multi-60'), (61, '{MARK}-multi-61')")
        c.execute(f"UPDATE visits SET note = '{MARK}-updated' WHERE id = 61")
        explain = "\n".join(r[0] for r in c.execute(
            f"EXPLAIN (VERBOSE, COSTS OFF) INSERT INTO visits (id, note) VALUES (62, '{MARK}-explain')").fetchall())
        c.execute("CREATE TABLE staff (id int PRIMARY KEY, name encrypted_text)")
        c.execute("SELECT create_reference_table('staff')")
        c.execute(f"INSERT INTO staff VALUES (1, '{MARK}-staff-1')")
        c.execute("INSERT INTO staff VALUES (%s, %s)", (2, f"{MARK}-staff-2"))
        # While the transaction is open: what every node shows of it.
        with f.connect() as watcher:
            activity.append(str(watcher.execute("SELECT query FROM citus_stat_activity").fetchall()))
        for w in f.workers:
            with f.connect(w) as wc:
                activity.append(str(wc.execute("SELECT query FROM pg_stat_activity").fetchall()))
        with f.connect() as cc:
            activity.append(str(cc.execute("SELECT query FROM pg_stat_activity").fetchall()))
        c.execute("COMMIT")
    statements = []
    for node in f.nodes:
        with f.connect(node) as sc:
            statements.append(str(sc.execute("SELECT query FROM pg_stat_statements").fetchall()))
    with f.connect() as c:
        begin_with_keys(c, keys)
        rows = dict(c.execute("SELECT id, note::text FROM visits").fetchall())
        one = c.execute("SELECT note::text, decrypt_field(b), decrypt_field_versioned(j) FROM visits WHERE id = 1").fetchone()
        pb = c.execute("SELECT decrypt_field(b) FROM visits WHERE id = 43").fetchone()[0]
        # Text made on the coordinator (its local replica of the reference
        # table, and above a distributed scan) is the plaintext as always.
        staff = c.execute("SELECT format('%s', name), name || '!', name::varchar FROM staff WHERE id = 2").fetchone()
        above = c.execute("SELECT format('%s', s.name) FROM staff s JOIN visits v ON v.id = s.id + 59").fetchone()[0]
        c.execute("COMMIT")

    with harness.Checks() as ck:
        ck.eq("rows", 61, len(rows))
        ck.eq("literal", (f"{MARK}-lit", f"{MARK}-b", f"{MARK}-j"), one)
        ck.eq("insert select", f"{MARK}-sel-7", rows[7])
        ck.eq("parameter", f"{MARK}-param-44", rows[44])
        ck.eq("parameter into encrypt_field", f"{MARK}-pb-43", pb)
        ck.eq("copy", f"{MARK}-copy-50", rows[50])
        ck.eq("multi-row values", f"{MARK}-multi-60", rows[60])
        ck.eq("update", f"{MARK}-updated", rows[61])
        ck.eq("reference table, text on the coordinator",
              (f"{MARK}-staff-2", f"{MARK}-staff-2!", f"{MARK}-staff-2"), staff)
        ck.eq("text above a distributed scan", f"{MARK}-staff-1", above)
        ck.has("EXPLAIN of a distributed INSERT ran on a worker", explain, "Task Count: 1")
        logs = f.logs()
        secrets = secrets_of(keys, f.ring)
        ck.eq("no raw key or KEK spelling in any node's log", 0, ws.leaks(secrets, *logs.values()))
        ck.eq("no raw key in any node's pg_stat_activity / citus_stat_activity", 0, ws.leaks(secrets, *activity))
        ck.has("pg_stat_statements recorded the workers' key statements", " ".join(statements[1:]),
               "SET LOCAL pazpaz.encryption_keys = xxx")
        ck.lacks("no key, not even wrapped, in any node's pg_stat_statements", " ".join(statements), "pzw1:")
        ck.eq("no raw key in pg_stat_statements", 0, ws.leaks(secrets, *statements))
        ck.has("the workers' activity shows the transaction's shard statements", " ".join(activity[1:3]), "visits_")
        wlog = f.worker_logs()
        ck.lacks("no plaintext in a worker's log", wlog, MARK)
        ck.has("envelopes travelled instead", wlog, "pazpaz-transport:")


def test_reads_decrypt_on_the_workers(formation, keys):
    f = formation
    with f.connect() as c:
        c.execute("CREATE TABLE clinics (id int PRIMARY KEY, name encrypted_text)")
        c.execute("SELECT create_reference_table('clinics')")
        begin_with_keys(c, keys)
        c.execute(f"INSERT INTO clinics SELECT g, '{MARK}-clinic-' || g FROM generate_series(1, 5) g")
        c.execute("COMMIT")
        begin_with_keys(c, keys)
        plan = "\n".join(r[0] for r in c.execute("EXPLAIN (VERBOSE) SELECT note::text FROM visits").fetchall())
        joined = c.execute("SELECT v.note::text, k.name::text FROM visits v JOIN clinics k ON k.id = v.id "
                           "WHERE v.id = 3").fetchone()
        multi = c.execute("SELECT count(*) FROM visits WHERE note::text LIKE %s", ("%-sel-%",)).fetchone()[0]
        c.execute("COMMIT")
    worker_ports = {str(w.port) for w in f.workers}
    with harness.Checks() as ck:
        ck.has("the decrypting cast is in the shard query", plan, "(note)::text")
        ck("the task runs on a worker", any(f"port={p}" in plan for p in worker_ports), plan)
        ck.eq("join of a distributed and a reference table", (f"{MARK}-sel-3", f"{MARK}-clinic-3"), joined)
        ck.eq("multi-shard filter on decrypted values", 39, multi)


def test_tables_with_data_become_distributed(formation, keys):
    f = formation
    with f.connect() as c:
        c.execute("CREATE TABLE pre (id int PRIMARY KEY, t encrypted_text, b bytea, j jsonb)")
        c.execute("CREATE TABLE pre_ref (id int PRIMARY KEY, t encrypted_text)")
        begin_with_keys(c, keys)
        c.execute(f"INSERT INTO pre SELECT g, '{MARK}-pre-' || g, encrypt_field('{MARK}-preb-' || g),"
                  f" encrypt_field_versioned('{MARK}-prej-' || g) FROM generate_series(1, 30) g")
        c.execute(f"INSERT INTO pre_ref SELECT g, '{MARK}-ref-' || g FROM generate_series(1, 3) g")
        c.execute("COMMIT")
        c.execute("SELECT create_distributed_table('pre', 'id', shard_count => 4)")
        c.execute("SELECT create_reference_table('pre_ref')")
        begin_with_keys(c, keys)
        rows = c.execute("SELECT id, t::text, decrypt_field(b), decrypt_field_versioned(j) FROM pre ORDER BY id").fetchall()
        ref = c.execute("SELECT t::text FROM pre_ref WHERE id = 2").fetchone()[0]
        c.execute("COMMIT")
    assert len(rows) == 30
    assert rows[9] == (10, f"{MARK}-pre-10", f"{MARK}-preb-10", f"{MARK}-prej-10")
    assert ref == f"{MARK}-ref-2"


def test_rotation_across_shards_survives_a_worker_restart(formation, keys):
    f = formation
    n = 300
    with f.connect() as c:
        c.execute("CREATE TABLE notes (id int PRIMARY KEY, body encrypted_text, env jsonb)")
        c.execute("SELECT create_distributed_table('notes', 'id', shard_count => 8)")
        begin_with_keys(c, keys, current="v1")
        c.execute(f"INSERT INTO notes SELECT g, '{MARK}-note-' || g, encrypt_field_versioned('{MARK}-env-' || g)"
                  f" FROM generate_series(1, {n}) g")
        c.execute("COMMIT")

    batches = []
    restarted = threading.Event()

    def on_notice(d):
        if d.message_primary.startswith("batch "):
            batches.append(d.message_primary)

    def restart_worker():
        while len(batches) < 3:
            time.sleep(0.05)
        ws.run_pg(f"pg_exec_postgres \"$PGBIN/pg_ctl\" -D {f.workers[1].data} -m immediate -w restart "
                  f"-l {f.workers[1].log} >/dev/null")
        restarted.set()

    first_error = None
    with f.connect() as c:
        c.add_notice_handler(on_notice)
        # Session keys: each batch forwards them to the nodes it uses.
        c.execute("SELECT set_keys(%s, %s, %s, false)", ("", keys_json(keys), "v2"))
        t = threading.Thread(target=restart_worker)
        t.start()
        try:
            c.execute("CALL rotate_column('notes', 'body', 10)")
        except psycopg.Error as e:
            first_error = e.sqlstate
        t.join(timeout=120)
    assert restarted.is_set(), "the worker was not restarted during the rotation"
    batches_before = len(batches)

    notices = []
    with f.connect() as c:
        c.add_notice_handler(lambda d: notices.append(d.message_primary))
        c.execute("SELECT set_keys(%s, %s, %s, false)", ("", keys_json(keys), "v2"))
        for attempt in range(20):  # the restarted worker may still be starting
            try:
                c.execute("CALL rotate_column('notes', 'body', 50)")
                c.execute("CALL rotate_column('notes', 'env', 50)")
                break
            except psycopg.OperationalError:
                time.sleep(0.5)
        begin_with_keys(c, keys, current="v2")
        versions = dict(c.execute("SELECT key_version(body), count(*) FROM notes GROUP BY 1").fetchall())
        env_versions = dict(c.execute("SELECT key_version(env), count(*) FROM notes GROUP BY 1").fetchall())
        bodies = dict(c.execute("SELECT id, body::text FROM notes").fetchall())
        envs = dict(c.execute("SELECT id, decrypt_field_versioned(env) FROM notes").fetchall())
        c.execute("COMMIT")
    print(f"first run: {batches_before} batches, then error {first_error}; second run: {notices[-2:]}")
    assert versions == {"v2": n}
    assert env_versions == {"v2": n}
    assert all(bodies[i] == f"{MARK}-note-{i}" for i in range(1, n + 1))
    assert all(envs[i] == f"{MARK}-env-{i}" for i in range(1, n + 1))
    assert any("done" in m for m in notices)
    assert MARK not in f.worker_logs()
    assert ws.leaks(secrets_of(keys, f.ring), *f.logs().values()) == 0


def test_keyless_dump_of_the_coordinator(formation):
    """The coordinator relays the COPY output of distributed and reference
    tables, which Citus reads through connections of its own (to the
    workers, and to the coordinator's replica of a reference table): every
    node writes envelopes while its database says so (README: the keyless
    dump on Citus)."""
    f = formation
    for w in f.nodes:
        with f.connect(w) as wc:
            wc.execute("SET citus.enable_ddl_propagation = off")
            wc.execute("ALTER DATABASE clinic SET pazpaz.encrypted_text_io = 'envelope'")
    try:
        out = f.coordinator.tool("pg_dump", "-d", "clinic", "--no-owner",
                                 env={"PGOPTIONS": "-c pazpaz.encrypted_text_io=envelope"})
    finally:
        for w in f.nodes:
            with f.connect(w) as wc:
                wc.execute("SET citus.enable_ddl_propagation = off")
                wc.execute("ALTER DATABASE clinic RESET pazpaz.encrypted_text_io")
    assert "pazpaz:" in out.stdout, out.stderr[-2000:]  # rows, as envelopes
    assert out.returncode == 0, out.stderr[-2000:]
    assert "CREATE TABLE public.visits" in out.stdout
    assert MARK not in out.stdout


def test_set_keys_is_redacted_with_parameters_too(formation, keys):
    f = formation
    with f.connect() as c:
        c.execute("BEGIN")
        # A literal call: its statement line is redacted on the coordinator.
        c.execute(f"SELECT set_keys('', '{keys_json(keys)}', 'v1', true)")
        c.execute("COMMIT")
    raw = base64.b64encode(keys[0][1]).decode()
    logs = f.all_logs()
    assert raw not in logs
    assert keys[0][0] not in f.coordinator.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def index_key(formation):
    return wrapped_keys(formation, 1)[0][0]


def begin_with_search_keys(conn, keys, index_key):
    """A transaction whose data keys and index key reach every node."""
    conn.execute("BEGIN")
    conn.execute("SELECT set_keys(%s, %s, %s, true, %s)", ("", keys_json(keys), "v1", index_key))


def test_blind_and_match_indexes_on_a_distributed_table(formation, keys, index_key):
    """add_blind_index / add_match_index on a distributed table: the token
    column, trigger and index live with every shard, the backfill runs on
    the workers, lookups route by distribution column, and a lookup's search
    term never reaches a worker (its token is computed on the coordinator)."""
    f = formation
    n = 120
    with f.connect() as c:
        c.execute("CREATE TABLE clients (ws int, id int, email encrypted_text, name encrypted_text,"
                  " PRIMARY KEY (ws, id))")
        c.execute("SELECT create_distributed_table('clients', 'ws', shard_count => 8)")
        begin_with_search_keys(c, keys, index_key)
        c.execute(f"INSERT INTO clients SELECT g % 6, g, '{MARK}-user' || g || '@example.com',"
                  f" '{MARK}-Name' || g FROM generate_series(1, {n}) g")
        c.execute("COMMIT")
    notices = []
    with f.connect() as c:
        c.add_notice_handler(lambda d: notices.append(d.message_primary))
        # Session keys: each batch forwards them to the nodes it uses.
        c.execute("SELECT set_keys(%s, %s, %s, false, %s)", ("", keys_json(keys), "v1", index_key))
        c.execute("CALL add_blind_index('clients', 'email', normalization => 'lower', batch_size => 25)")
        c.execute("CALL add_match_index('clients', 'name', batch_size => 50)")
    assert any(m.startswith("batch ") for m in notices), notices
    assert any("done, 120 rows indexed" in m for m in notices), notices
    with f.connect() as c:
        assert c.execute("SELECT count(*) FROM clients WHERE email_bidx IS NULL OR name_tokens IS NULL"
                         ).fetchone()[0] == 0
    # Every shard has the token column, the trigger and the index.
    for w in f.workers:
        with f.connect(w) as wc:
            wc.execute("SET citus.show_shards_for_app_name_prefixes = '*'")  # Citus hides shards otherwise
            shards = wc.execute("SELECT count(*) FROM pg_class WHERE relname ~ '^clients_[0-9]+$'").fetchone()[0]
            trig = wc.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid::regclass::text ~ '^clients_[0-9]+$'"
                              " AND tgname ~ '^zz_pazpaz_(email_bidx|name_tokens)'").fetchone()[0]
            idx = wc.execute("SELECT count(*) FROM pg_class WHERE relname ~ '^clients_email_bidx_[0-9]+$'").fetchone()[0]
            # Each with the definition and its binding to the table's owner.
            nargs = wc.execute("SELECT DISTINCT tgnargs FROM pg_trigger WHERE tgname ~ '^zz_pazpaz_'").fetchall()
        assert shards > 0 and trig == 2 * shards and idx == shards and nargs == [(10,)], (w.name, shards, trig, idx, nargs)

    term = f"{MARK}-User7@Example.com"  # normalization 'lower'
    with f.connect() as c:
        begin_with_search_keys(c, keys, index_key)
        # Routed by the distribution column: one task, the token constant.
        plan = "\n".join(r[0] for r in c.execute(
            "EXPLAIN (VERBOSE, COSTS OFF) SELECT id FROM clients WHERE ws = 1"
            " AND email_bidx = blind_index_for('clients', 'email_bidx', %s)", (term,)).fetchall())
        assert "Task Count: 1" in plan, plan
        assert "email_bidx OPERATOR(pg_catalog.=) '\\x" in plan, plan
        assert MARK not in plan and "blind_index_for" not in plan, plan
        assert c.execute("SELECT id FROM clients WHERE ws = 1 AND email_bidx = blind_index_for('clients',"
                         " 'email_bidx', %s)", (term,)).fetchall() == [(7,)]
        # Without it, every shard; the same with blind_equals, a literal and
        # a prepared statement past the plan cache's custom plans.
        assert c.execute("SELECT id FROM clients WHERE email_bidx = blind_index_for('clients', 'email_bidx', %s)",
                         (term,)).fetchall() == [(7,)]
        assert c.execute("SELECT id FROM clients WHERE blind_equals(email_bidx, 'clients', 'email_bidx', %s)",
                         (term,)).fetchall() == [(7,)]
        assert c.execute(f"SELECT id FROM clients WHERE email_bidx = blind_index_for('clients', 'email_bidx',"
                         f" '{MARK}-user8@example.com')").fetchall() == [(8,)]
        for i in range(1, 11):
            got = c.execute("SELECT id FROM clients WHERE email_bidx = blind_index_for('clients', 'email_bidx', %s)",
                            (f"{MARK}-user{i}@example.com",), prepare=True).fetchall()
            assert got == [(i,)], (i, got)
        # Substring: candidates by token on the workers, the decrypting
        # recheck on the coordinator (README).
        rows = c.execute(
            "WITH candidates AS MATERIALIZED (SELECT id, name FROM clients"
            "  WHERE name_tokens @> blind_search_tokens_for('clients', 'name_tokens', %s))"
            " SELECT id FROM candidates WHERE name::text ILIKE '%%' || %s || '%%' ORDER BY id",
            (f"{MARK}-Name11", f"{MARK}-Name11")).fetchall()
        assert rows == [(11,)] + [(i,) for i in range(110, 120)], rows
        assert c.execute("SELECT count(*) FROM clients WHERE blind_contains(name_tokens, 'clients', 'name_tokens', %s)",
                         (f"{MARK}-Name11",)).fetchone()[0] >= 11
        # A new row: its tokens computed by the trigger on its worker.
        c.execute("INSERT INTO clients VALUES (2, 500, %s, %s)", (f"{MARK}-new@example.com", f"{MARK}-Newcomer"))
        assert c.execute("SELECT id FROM clients WHERE email_bidx = blind_index_for('clients', 'email_bidx', %s)",
                         (f"{MARK}-NEW@example.com",)).fetchall() == [(500,)]
        c.execute("COMMIT")
    assert MARK not in f.worker_logs()
    assert ws.leaks(secrets_of(keys, f.ring), *f.logs().values()) == 0


def test_a_blind_index_on_a_reference_table(formation, keys, index_key):
    """A reference table's replicas (on every worker and the coordinator)
    each keep their tokens."""
    f = formation
    with f.connect() as c:
        c.execute("CREATE TABLE practitioners (id int PRIMARY KEY, email encrypted_text)")
        c.execute("SELECT create_reference_table('practitioners')")
        begin_with_search_keys(c, keys, index_key)
        c.execute(f"INSERT INTO practitioners SELECT g, '{MARK}-doc' || g || '@example.com'"
                  " FROM generate_series(1, 30) g")
        c.execute("COMMIT")
        c.execute("SELECT set_keys(%s, %s, %s, false, %s)", ("", keys_json(keys), "v1", index_key))
        c.execute("CALL add_blind_index('practitioners', 'email', batch_size => 7)")
        begin_with_search_keys(c, keys, index_key)
        c.execute("INSERT INTO practitioners VALUES (31, %s)", (f"{MARK}-doc31@example.com",))
        for i in (3, 31):
            assert c.execute("SELECT id FROM practitioners WHERE email_bidx = blind_index_for('practitioners',"
                             " 'email_bidx', %s)", (f"{MARK}-doc{i}@example.com",)).fetchall() == [(i,)]
        # A join of a distributed table with the reference table on tokens
        # (the value reads a column: computed where Citus runs it).
        joined = c.execute("SELECT count(*) FROM clients c JOIN practitioners p ON p.id = c.id"
                           " WHERE p.email_bidx IS NOT NULL").fetchone()[0]
        assert joined > 0
        c.execute("COMMIT")
    for node in f.nodes:
        with f.connect(node) as nc:
            nc.execute("SET citus.show_shards_for_app_name_prefixes = '*'")
            missing = nc.execute("SELECT count(*) FROM pg_class c WHERE c.relname ~ '^practitioners_[0-9]+$'"
                                 " AND NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid"
                                 " AND a.attname = 'email_bidx')").fetchone()[0]
            assert missing == 0, node.name
    assert MARK not in f.worker_logs()


def test_a_lookup_without_a_planned_value_is_refused_on_citus(formation, keys, index_key):
    """A generic plan has no value for the lookup's parameter: Citus would
    send it to the workers as text, so the lookup is refused (and the plan
    cache never picks such a plan by itself)."""
    f = formation
    with f.connect() as c:
        begin_with_search_keys(c, keys, index_key)
        c.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        c.execute("PREPARE bylookup(text) AS SELECT id FROM clients"
                  " WHERE email_bidx = blind_index_for('clients', 'email_bidx', $1)")
        c.execute("SAVEPOINT s")
        with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
            c.execute(f"EXECUTE bylookup('{MARK}-user9@example.com')")
        assert "bound parameter" in str(e.value)
        c.execute("ROLLBACK TO SAVEPOINT s")
        # EXPLAIN of that generic plan would send the parameters with it.
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            c.execute(f"EXPLAIN (VERBOSE) EXECUTE bylookup('{MARK}-user9@example.com')")
        c.execute("ROLLBACK")
        c.execute("DEALLOCATE ALL")
    assert MARK not in f.worker_logs()


def test_unique_blind_index_per_workspace_on_citus(formation, keys, index_key):
    f = formation
    with f.connect() as c:
        c.execute("CREATE UNIQUE INDEX clients_ws_email_unique ON clients (ws, email_bidx)")
        begin_with_search_keys(c, keys, index_key)
        with pytest.raises(psycopg.errors.UniqueViolation) as e:
            c.execute("INSERT INTO clients VALUES (1, 900, %s, NULL)", (f"{MARK}-user7@example.com",))
        c.execute("ROLLBACK")
    assert "clients_ws_email_unique" in str(e.value)
    assert MARK not in str(e.value)
    assert MARK not in f.worker_logs()


def test_a_copied_trigger_on_a_worker_is_refused(formation, keys, index_key):
    """A role on a worker that copies the index's trigger onto a table of its
    own — even one named like a shard of the indexed table — does not get
    tokens under the table's context from a key-holding session."""
    f = formation
    w = f.workers[0]
    with f.connect(w) as wc:
        wc.execute("SET citus.enable_ddl_propagation = off")
        args = wc.execute("SELECT tgargs FROM pg_trigger WHERE tgrelid = 'clients'::regclass"
                          " AND tgname = 'zz_pazpaz_email_bidx'").fetchone()[0]
        other = wc.execute("SELECT s.shardid FROM pg_dist_shard s WHERE s.logicalrelid = 'clients'::regclass"
                           " AND NOT EXISTS (SELECT FROM pg_dist_placement p JOIN pg_dist_local_group g"
                           " ON p.groupid = g.groupid WHERE p.shardid = s.shardid) LIMIT 1").fetchone()[0]
        wc.execute("CREATE ROLE mallory LOGIN")
        wc.execute("GRANT CREATE ON SCHEMA public TO mallory")
        wc.execute("SET ROLE mallory")
        wc.execute(f"CREATE TABLE clients_{other} (ws int, id int, email encrypted_text, name encrypted_text,"
                   " email_bidx bytea)")
        argv = ", ".join("'" + a + "'" for a in args.rstrip(b"\0").decode().split("\0"))
        wc.execute(f"CREATE TRIGGER zz_pazpaz_email_bidx BEFORE INSERT OR UPDATE ON clients_{other}"
                   f" FOR EACH ROW EXECUTE FUNCTION blind_index_trigger({argv})")
        wc.execute(f"GRANT INSERT, SELECT ON clients_{other} TO PUBLIC")
        wc.execute("RESET ROLE")
        # A key-holding session writes to it.
        wc.execute("SELECT set_keys(%s, %s, %s, false, %s)", ("", keys_json(keys), "v1", index_key))
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            wc.execute(f"INSERT INTO clients_{other} (ws, id, email) VALUES (1, 1, 'guess@example.com')")
        assert "not registered" in str(e.value)
        wc.execute(f"DROP TABLE clients_{other}")
        wc.execute("REVOKE CREATE ON SCHEMA public FROM mallory")
        wc.execute("DROP ROLE mallory")


def test_a_context_claimed_first_on_a_worker_gives_no_oracle(formation, keys, index_key):
    """A role that registers a custom context for a table of its own on a
    worker (its registry is its own), and even copies the real trigger's
    arguments with their binding, gets no token computed there."""
    f = formation
    w = f.workers[0]
    with f.connect(w) as wc:
        wc.execute("SET citus.enable_ddl_propagation = off")
        wc.execute("CREATE ROLE eve LOGIN")
        wc.execute("GRANT CREATE ON SCHEMA public TO eve")
        fp = wc.execute("SELECT split_part(encode(tgargs, 'escape'), '\\000', 9) FROM pg_trigger"
                        " WHERE tgrelid = 'clients'::regclass AND tgname = 'zz_pazpaz_email_bidx'").fetchone()[0]
        real = wc.execute("SELECT tgargs FROM pg_trigger WHERE tgrelid = 'clients'::regclass"
                          " AND tgname = 'zz_pazpaz_email_bidx'").fetchone()[0]
        wc.execute("SET ROLE eve")
        own = ["pazpaz_crypto search v1", "exact", "email", "email_bidx", "encrypted_text", "clinic-ctx", "lower",
               "256", fp]
        for name, argv in (("eve_own", own), ("eve_copy", real.rstrip(b"\0").decode().split("\0"))):
            wc.execute(f"CREATE TABLE {name} (id int, email encrypted_text, email_bidx bytea)")
            wc.execute(f"CREATE TRIGGER zz_pazpaz_email_bidx BEFORE INSERT OR UPDATE ON {name} FOR EACH ROW"
                       f" EXECUTE FUNCTION blind_index_trigger({', '.join(repr(a) for a in argv)})")
            wc.execute(f"GRANT INSERT ON {name} TO PUBLIC")
        # The worker's own registry takes eve's claim...
        wc.execute("SELECT search_index_register('eve_own', %s)", (own,))
        wc.execute("RESET ROLE")
        # ...but a key-holding session writing to either table gets nothing.
        wc.execute("SELECT set_keys(%s, %s, %s, false, %s)", ("", keys_json(keys), "v1", index_key))
        for name in ("eve_own", "eve_copy"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                wc.execute(f"INSERT INTO {name} (id, email) VALUES (1, 'guess@example.com')")
        wc.execute("DROP TABLE eve_own, eve_copy")
        wc.execute("DELETE FROM search_indexes WHERE NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = rel)")
        wc.execute("REVOKE CREATE ON SCHEMA public FROM eve")
        wc.execute("DROP ROLE eve")


def test_lookups_whose_value_would_travel_as_text_are_refused(formation, keys, index_key):
    """Values written into the query as rows (VALUES, a CTE, unnest, a
    scalar subquery) would reach the workers as text: refused, and no
    worker sees them. Errors while a lookup is planned are ordinary errors
    (the backend and the node stay up)."""
    f = formation
    term = f"{MARK}-travel@example.com"
    shapes = [
        "SELECT c.id FROM clients c JOIN (VALUES (%s)) v(e) ON c.email_bidx = blind_index_for('clients', 'email_bidx', v.e)",
        "SELECT id FROM clients WHERE email_bidx = ANY (SELECT blind_index_for('clients', 'email_bidx', e)"
        " FROM unnest(ARRAY[%s]) e)",
        "SELECT id FROM clients WHERE email_bidx = blind_index_for('clients', 'email_bidx', (SELECT %s::text))",
        "WITH s(e) AS (SELECT %s::text) SELECT c.id FROM clients c, s"
        " WHERE c.email_bidx = blind_index_for('clients'::regclass, 'email_bidx', s.e)",
        # A local table's rows would be shipped to the workers.
        "SELECT c.id FROM clients c JOIN local_terms t ON c.email_bidx = blind_index_for('clients', 'email_bidx', t.e)"
        " WHERE t.e <> %s",
    ]
    with f.connect() as c:
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        c.execute("CREATE TABLE IF NOT EXISTS local_terms (e text)")
        begin_with_search_keys(c, keys, index_key)
        for sql in shapes:
            c.execute("SAVEPOINT s")
            with pytest.raises(psycopg.errors.FeatureNotSupported):
                c.execute(sql, (term,))
            c.execute("ROLLBACK TO SAVEPOINT s")
        # A lookup nested in another's arguments is decided too.
        got = c.execute("SELECT id FROM clients WHERE blind_equals(coalesce(email_bidx,"
                        " blind_index_for('clients', 'email_bidx', %s)), 'clients', 'email_bidx', %s)",
                        (term, f"{MARK}-user9@example.com")).fetchall()
        assert got == [(9,)]
        c.execute("COMMIT")
        # Errors at planning: no index key, a short query, a table with no
        # index, a name that is no table.
        for sql, err in (
            ("SELECT id FROM clients WHERE email_bidx = blind_index_for('clients', 'email_bidx', 'x')",
             psycopg.errors.ObjectNotInPrerequisiteState),
            ("SELECT blind_index_for('pg_class', 'x', 'y')", None),
            ("SELECT blind_index_for('nosuch', 'x', 'y')", psycopg.errors.UndefinedTable),
        ):
            with pytest.raises(psycopg.Error) as e:
                c.execute(sql)
            if err is not None:
                assert isinstance(e.value, err), (sql, e.value)
        begin_with_search_keys(c, keys, index_key)
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            c.execute("SELECT count(*) FROM clients WHERE blind_contains(name_tokens, 'clients', 'name_tokens', 'ab')")
        c.execute("ROLLBACK")
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
    assert MARK + "-travel" not in f.worker_logs()
    assert "terminated by signal" not in f.all_logs()


def test_lookups_on_local_tables_are_unchanged_with_citus_loaded(formation, keys, index_key):
    """A lookup on a table that is not a Citus table sends nothing anywhere:
    it runs as without Citus, also where its value is not known when the
    query is planned (a PL/pgSQL variable in a generic plan)."""
    f = formation
    with f.connect() as c:
        c.execute("SELECT set_keys(%s, %s, %s, false, %s)", ("", keys_json(keys), "v1", index_key))
        c.execute("CREATE TABLE loc (id int PRIMARY KEY, email encrypted_text)")
        c.execute("INSERT INTO loc SELECT g, 'loc' || g || '@example.com' FROM generate_series(1, 20) g")
        c.execute("CALL add_blind_index('loc', 'email')")
        c.execute("""CREATE FUNCTION loc_find(e text) RETURNS int LANGUAGE plpgsql AS $$
                     DECLARE t bytea; r int;
                     BEGIN t := blind_index_for('loc', 'email_bidx', e);
                           SELECT id INTO r FROM loc WHERE email_bidx = t; RETURN r; END $$""")
        c.execute("SET plan_cache_mode = force_generic_plan")
        assert [c.execute("SELECT loc_find(%s)", (f"loc{i}@example.com",)).fetchone()[0] for i in (3, 4)] == [3, 4]
        c.execute("RESET plan_cache_mode")
        # A trigger of the index's name and arguments but another shape (a
        # WHEN clause that never fires) is made again by a new CALL.
        args = c.execute("SELECT tgargs FROM pg_trigger WHERE tgrelid = 'loc'::regclass"
                         " AND tgname = 'zz_pazpaz_email_bidx'").fetchone()[0]
        argv = ", ".join("'" + a + "'" for a in args.rstrip(b"\0").decode().split("\0"))
        c.execute("DROP TRIGGER zz_pazpaz_email_bidx ON loc")
        c.execute(f"CREATE TRIGGER zz_pazpaz_email_bidx BEFORE INSERT OR UPDATE ON loc FOR EACH ROW WHEN (false)"
                  f" EXECUTE FUNCTION blind_index_trigger({argv})")
        c.execute("CALL add_blind_index('loc', 'email')")
        assert c.execute("SELECT tgqual IS NULL FROM pg_trigger WHERE tgrelid = 'loc'::regclass"
                         " AND tgname = 'zz_pazpaz_email_bidx'").fetchone()[0]
        c.execute("INSERT INTO loc VALUES (21, 'loc21@example.com')")
        assert c.execute("SELECT loc_find('loc21@example.com')").fetchone()[0] == 21
        # Renamed, it keeps its context; a new table of its old name gets
        # another one (or is refused), never the same.
        c.execute("ALTER TABLE loc RENAME TO loc_old")
        c.execute("CALL add_blind_index('loc_old', 'email')")  # resumes: same definition
        c.execute("CREATE TABLE loc (id int PRIMARY KEY, email encrypted_text)")
        with pytest.raises(psycopg.errors.DuplicateObject):
            c.execute("CALL add_blind_index('loc', 'email')")
        c.execute("DROP TABLE loc, loc_old")
        c.execute("DROP FUNCTION loc_find(text)")


def test_a_binding_holds_for_its_own_table_only(formation, keys, index_key):
    """The trigger's binding names its table: a copy onto another table of
    the same owner (which a role with TRIGGER on it could make) computes
    nothing; a renamed table refuses writes until add_blind_index binds it
    again, then works."""
    f = formation
    with f.connect() as c:
        args = c.execute("SELECT tgargs FROM pg_trigger WHERE tgrelid = 'clients'::regclass"
                         " AND tgname = 'zz_pazpaz_email_bidx'").fetchone()[0]
        argv = ", ".join("'" + a + "'" for a in args.rstrip(b"\0").decode().split("\0"))
        c.execute("CREATE TABLE clients_copy (ws int, id int, email encrypted_text, email_bidx bytea,"
                  " PRIMARY KEY (ws, id))")
        c.execute("SELECT create_distributed_table('clients_copy', 'ws', shard_count => 4)")
        c.execute("BEGIN")
        c.execute("SET LOCAL citus.enable_unsafe_triggers = on")
        c.execute(f"CREATE TRIGGER zz_pazpaz_email_bidx BEFORE INSERT OR UPDATE ON clients_copy"
                  f" FOR EACH ROW EXECUTE FUNCTION blind_index_trigger({argv})")
        c.execute("COMMIT")
        begin_with_search_keys(c, keys, index_key)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("INSERT INTO clients_copy (ws, id, email) VALUES (1, 1, 'guess@example.com')")
        c.execute("ROLLBACK")
        c.execute("DROP TABLE clients_copy")
        # Renamed: the binding no longer holds, on the coordinator nor on
        # the shards; a new CALL binds it again.
        c.execute("ALTER TABLE practitioners RENAME TO practitioners2")
        begin_with_search_keys(c, keys, index_key)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("INSERT INTO practitioners2 VALUES (40, %s)", (f"{MARK}-doc40@example.com",))
        c.execute("ROLLBACK")
        notices = []
        c.add_notice_handler(lambda d: notices.append(d.message_primary))
        c.execute("SELECT set_keys(%s, %s, %s, false, %s)", ("", keys_json(keys), "v1", index_key))
        c.execute("CALL add_blind_index('practitioners2', 'email', batch_size => 7)")
        assert any("bound again" in m for m in notices), notices
        begin_with_search_keys(c, keys, index_key)
        c.execute("INSERT INTO practitioners2 VALUES (40, %s)", (f"{MARK}-doc40@example.com",))
        assert c.execute("SELECT id FROM practitioners2 WHERE email_bidx = blind_index_for('practitioners2',"
                         " 'email_bidx', %s)", (f"{MARK}-doc40@example.com",)).fetchall() == [(40,)]
        assert c.execute("SELECT id FROM practitioners2 WHERE email_bidx = blind_index_for('practitioners2',"
                         " 'email_bidx', %s)", (f"{MARK}-doc3@example.com",)).fetchall() == [(3,)]
        c.execute("COMMIT")
    assert MARK not in f.worker_logs()


def test_a_set_local_sent_with_other_statements_is_forwarded_alone(formation, keys, index_key):
    """While set_keys has Citus forward SET LOCAL, a client's SET LOCAL sent in
    one string with other statements reaches the workers alone: the rest of
    the string (a search term) is neither run nor stored there."""
    f = formation
    term = f"{MARK}-multi@example.com"
    with f.connect() as c:
        begin_with_search_keys(c, keys, index_key)
        res = c.pgconn.exec_(f"SET LOCAL work_mem = '8MB'; SELECT '{term}'::text;"
                             f" SET LOCAL statement_timeout = '1min'".encode())
        assert res.status in (psycopg.pq.ExecStatus.COMMAND_OK, psycopg.pq.ExecStatus.TUPLES_OK), \
            res.error_message
        assert c.execute("SELECT count(*) FROM clients").fetchone()[0] > 0  # the SET LOCALs went out
        c.execute("COMMIT")
        # DDL that Citus sends as the text it is given, in one string with a
        # lookup.
        c.execute("CREATE TABLE IF NOT EXISTS ddlx (id int PRIMARY KEY, v int)")
        c.execute("SELECT create_distributed_table('ddlx', 'id')")
        begin_with_search_keys(c, keys, index_key)
        res = c.pgconn.exec_(f"CREATE INDEX ddlx_v ON ddlx (v); SELECT id FROM clients WHERE email_bidx ="
                             f" blind_index_for('clients', 'email_bidx', '{term}')".encode())
        assert res.status in (psycopg.pq.ExecStatus.COMMAND_OK, psycopg.pq.ExecStatus.TUPLES_OK), \
            res.error_message
        c.execute("COMMIT")
        c.execute("DROP TABLE ddlx")
    assert term not in f.worker_logs()
    for w in f.workers:
        with f.connect(w) as wc:
            stored = wc.execute("SELECT count(*) FROM pg_stat_statements WHERE query LIKE %s",
                                (f"%{term}%",)).fetchone()[0]
            assert stored == 0, w.name


def test_drop_blind_index_on_citus(formation, keys, index_key):
    f = formation
    with f.connect() as c:
        c.execute("CALL drop_match_index('clients', 'name')")
        cols = c.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = 'clients'::regclass"
                         " AND attname = 'name_tokens' AND NOT attisdropped").fetchone()[0]
    assert cols == 0
    for w in f.workers:
        with f.connect(w) as wc:
            wc.execute("SET citus.show_shards_for_app_name_prefixes = '*'")
            assert wc.execute("SELECT count(*) FROM pg_trigger WHERE tgname ~ '^zz_pazpaz_name_tokens'").fetchone()[0] == 0
            assert wc.execute("SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                              " WHERE c.relname ~ '^clients_[0-9]+$' AND a.attname = 'name_tokens'"
                              " AND NOT a.attisdropped").fetchone()[0] == 0


def test_transport_forms_do_not_replay(formation, keys):
    """A transport form seen in a worker's log, offered later as a value (a
    plaintext an application user typed), is refused in another transaction
    and in a session without one: it never makes a node adopt that
    ciphertext."""
    import re
    f = formation
    with f.connect() as c:
        c.execute("CREATE TABLE replay (id int PRIMARY KEY, note encrypted_text)")
        c.execute("SELECT create_distributed_table('replay', 'id', shard_count => 2)")
        begin_with_keys(c, keys)
        c.execute(f"INSERT INTO replay VALUES (0, '{MARK}-victim')")
        # Within the very transaction that made it (its secret is current):
        # a client's value is still no transport form.
        seen = re.findall(r"'(pazpaz-transport:[A-Za-z0-9+/=]+)'", f.worker_logs())
        assert seen, "no transport form in the workers' logs to replay"
        with pytest.raises(psycopg.Error) as e:
            c.execute("INSERT INTO replay VALUES (9, %s)", (seen[-1],))
        assert "transport form" in str(e.value), str(e.value)[:300]
        c.execute("ROLLBACK")
        begin_with_keys(c, keys)
        c.execute(f"INSERT INTO replay VALUES (0, '{MARK}-victim')")
        c.execute("COMMIT")
        seen = re.findall(r"'(pazpaz-transport:[A-Za-z0-9+/=]+)'", f.worker_logs())
        begin_with_keys(c, keys)
        with pytest.raises(psycopg.Error) as e:
            c.execute("INSERT INTO replay VALUES (1, %s)", (seen[0],))
        assert "transport form" in str(e.value), str(e.value)[:300]
        c.execute("ROLLBACK")
        c.execute("SELECT set_keys(%s, %s, %s, false)", ("", keys_json(keys), "v1"))
        with pytest.raises(psycopg.Error) as e:
            c.execute("SELECT %s::encrypted_text::text", (seen[0],))
        assert "transport form" in str(e.value), str(e.value)[:300]
        # The local table of an ordinary session: refused as well.
        c.execute("CREATE TABLE replay_local (note encrypted_text)")
        with pytest.raises(psycopg.Error) as e:
            c.execute("INSERT INTO replay_local VALUES (%s)", (seen[0],))
        assert "transport form" in str(e.value), str(e.value)[:300]


def test_text_made_on_the_coordinator_stays_plaintext(formation, keys):
    """Expressions the coordinator evaluates itself — a distributed INSERT of
    format(...) into a text column, initial partition pruning of a local
    table — see the plaintext, never the transport form."""
    f = formation
    with f.connect() as c:
        c.execute("CREATE TABLE summary (id int PRIMARY KEY, line text)")
        c.execute("SELECT create_distributed_table('summary', 'id', shard_count => 2)")
        c.execute("CREATE TABLE pt (k text, v int) PARTITION BY LIST (k)")
        c.execute("CREATE TABLE pt_a PARTITION OF pt FOR VALUES IN ('alice')")
        c.execute("CREATE TABLE pt_other PARTITION OF pt DEFAULT")
        c.execute("INSERT INTO pt VALUES ('alice', 1)")
        begin_with_keys(c, keys)
        c.execute("INSERT INTO summary VALUES (1, format('%s', 'fmt-value'::encrypted_text))")
        c.execute("INSERT INTO summary VALUES (2, concat('Note: ', %s::encrypted_text))", ("param-value",))
        pruned = c.execute("SELECT v FROM pt WHERE k = format('%s', 'alice'::encrypted_text)").fetchall()
        # search_path = pg_catalog, as a hardened function or session has it.
        c.execute("CREATE FUNCTION label(e encrypted_text) RETURNS text IMMUTABLE LANGUAGE plpgsql"
                  " SET search_path = pg_catalog AS $$ BEGIN RETURN format('%s', e); END $$")
        labelled = c.execute("SELECT public.label('lbl-value'::encrypted_text)").fetchone()[0]
        c.execute("INSERT INTO summary VALUES (3, public.label('lbl-dist'::encrypted_text))")
        c.execute("SET LOCAL search_path = pg_catalog")
        c.execute("INSERT INTO public.summary VALUES (4, format('%s', 'sp-value'::public.encrypted_text))")
        c.execute("RESET search_path")
        lines = dict(c.execute("SELECT id, line FROM summary").fetchall())
        c.execute("COMMIT")
    assert lines == {1: "fmt-value", 2: "Note: param-value", 3: "lbl-dist", 4: "sp-value"}
    assert pruned == [(1,)]
    assert labelled == "lbl-value"


def test_a_clients_own_set_local_of_a_key_is_masked(formation, keys):
    """A key SET LOCAL that the client writes itself (not set_keys) reaches
    pg_stat_statements masked even while Citus forwards SET LOCAL."""
    f = formation
    ring = keys_json(keys)
    with f.connect() as c:
        c.execute("SELECT pg_stat_statements_reset()")
        c.execute("SET citus.propagate_set_commands = local")
        c.execute("BEGIN")
        c.execute(f"SET LOCAL pazpaz.encryption_keys = '{ring}'")
        c.execute("COMMIT")
        stored = str(c.execute("SELECT query FROM pg_stat_statements WHERE query ILIKE '%pazpaz%'").fetchall())
    assert "pazpaz.encryption_keys = xxx" in stored, stored[:500]
    assert "pzw1:" not in stored
