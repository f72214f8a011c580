"""rotate_column at its edges: row-level security, huge batch sizes, held
locks, a hostile search_path, concurrent writers and rewrites, triggers and
rules that keep rows from being updated, renames mid-CALL, xmin wraparound,
kills. It either finishes with every row on the target (and, for jsonb,
every value authenticating) or says what is left: never a false "done"."""

import json
import threading
import time

import psycopg
import pytest

from conftest import new_key

pytestmark = pytest.mark.every_version

K1, K2 = new_key(), new_key()
KEYS = json.dumps({"v1": K1, "v2": K2})


def conn(cluster, db, version="v1", **kw):
    c = psycopg.connect(cluster.dsn(db), autocommit=True, **kw)
    c.execute("SELECT set_config('pazpaz.encryption_keys', %s, false), "
              "set_config('pazpaz.encryption_key_version', %s, false)", (KEYS, version))
    return c


def notices(c):
    out = []
    c.add_notice_handler(lambda d: out.append((d.severity, d.message_primary)))
    return out


def stale_jsonb(c, tbl, col):
    return c.execute(f"SELECT count(*) FILTER (WHERE key_version({col}) <> 'v2'), "
                     f"count(*) FILTER (WHERE NOT verify_field_versioned({col})) FROM {tbl} "
                     f"WHERE {col} IS NOT NULL").fetchone()


def test_force_rls_hides_rows(cluster, db):
    """A table with FORCE ROW LEVEL SECURITY whose policy would hide rows
    from the owner: the CALL fails (42501) instead of rotating part of it."""
    c = conn(cluster, db)
    c.execute("CREATE ROLE rls_owner")
    c.execute("GRANT CREATE, USAGE ON SCHEMA public TO rls_owner")
    c.execute("SET ROLE rls_owner")
    c.execute("CREATE TABLE t (id int, tenant text, h jsonb)")
    c.execute("INSERT INTO t SELECT i, CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, "
              "encrypt_field_versioned('x' || i) FROM generate_series(1, 200) i")
    c.execute("ALTER TABLE t ENABLE ROW LEVEL SECURITY")
    c.execute("ALTER TABLE t FORCE ROW LEVEL SECURITY")
    c.execute("CREATE POLICY p ON t USING (tenant = current_setting('app.tenant', true))")
    c.execute("SET app.tenant = 'a'")
    c.execute("SET pazpaz.encryption_key_version = 'v2'")
    ns = notices(c)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        c.execute("CALL rotate_column('t', 'h', 50, 'v2')")
    warned = True
    c.execute("RESET ROLE")
    c.execute("ALTER TABLE t NO FORCE ROW LEVEL SECURITY")
    c.execute("ALTER TABLE t DISABLE ROW LEVEL SECURITY")
    left = stale_jsonb(c, "t", "h")
    print("RLS", ns, left)
    assert warned or left == (0, 0), f"no WARNING, yet {left} values left (stale, unverified); notices {ns[-2:]}"


def test_huge_batch_size_tid_overflow(cluster, db):
    """A batch_size so large that batch_size * blocks / rows passes 2^32
    blocks: the range's end stays a valid TID (capped at the table's end)."""
    c = conn(cluster, db)
    c.execute("CREATE TABLE t2 (id int, h jsonb)")
    c.execute("INSERT INTO t2 SELECT i, encrypt_field_versioned('x' || i) FROM generate_series(1, 2000) i")
    c.execute("SET pazpaz.encryption_key_version = 'v2'")
    c.execute("UPDATE t2 SET h = reencrypt_field_versioned(h) WHERE id > 1")
    c.execute("CALL rotate_column('t2', 'h', 2000000000, 'v2')")
    assert stale_jsonb(c, "t2", "h") == (0, 0)


def test_default_batch_large_table_tid_overflow(cluster, db):
    """The same with the default batch_size on a large table: a jsonb
    re-CALL (nothing stale, target-labelled values to verify) makes the
    first range 1,000 × the table's blocks; above 4,294,967 blocks (about
    35 GB) its end would pass 2^32. Shown on a small table with a batch_size
    scaled up the same way."""
    c = conn(cluster, db)
    c.execute("CREATE TABLE t3 (id int, h jsonb)")
    c.execute("INSERT INTO t3 SELECT i, encrypt_field_versioned('x' || i) FROM generate_series(1, 3000) i")
    c.execute("SET pazpaz.encryption_key_version = 'v2'")
    c.execute("UPDATE t3 SET h = reencrypt_field_versioned(h)")
    nblocks = c.execute("SELECT pg_relation_size('t3') / 8192").fetchone()[0]
    bs = 4294967296 // nblocks + 1
    assert bs < 2**31
    c.execute(f"CALL rotate_column('t3', 'h', {bs}, 'v2')")


def test_a_held_table_lock_is_waited_for_under_the_callers_lock_timeout(cluster, db):
    """A session holding a SHARE lock on the table (idle in transaction):
    the CALL waits for the table lock as any UPDATE would, under the
    caller's lock_timeout, which ends it with 55P03 (not its own 200 ms row
    lock timeout, which would end it at once, nor for ever when the caller
    set a bound); nothing is lost and a CALL afterwards finishes."""
    c = conn(cluster, db)
    c.execute("CREATE TABLE t4 (id int, h jsonb)")
    c.execute("INSERT INTO t4 SELECT i, encrypt_field_versioned('x' || i) FROM generate_series(1, 10) i")
    p = conn(cluster, db)
    p.autocommit = False
    p.execute("LOCK TABLE t4 IN SHARE MODE")
    try:
        c.execute("SET lock_timeout = '1500ms'")
        c.execute("SET pazpaz.encryption_key_version = 'v2'")
        t0 = time.time()
        with pytest.raises(psycopg.errors.LockNotAvailable):
            c.execute("CALL rotate_column('t4', 'h', 5, 'v2')")
        took = time.time() - t0
        assert 1.3 < took < 10, f"the CALL gave up after {took:.1f}s, not after the caller's lock_timeout of 1.5 s"
    finally:
        p.rollback()
        c.execute("RESET lock_timeout")
    c.execute("CALL rotate_column('t4', 'h', 5, 'v2')")
    assert stale_jsonb(c, "t4", "h") == (0, 0)
    assert c.execute("SELECT count(*) FROM t4 WHERE decrypt_field_versioned(h) = 'x' || id").fetchone()[0] == 10


def test_hostile_search_path(cluster, db):
    """A role with CREATE on public plants look-alikes of everything the
    procedure could resolve through the search_path; they must not run."""
    c = conn(cluster, db)
    c.execute("CREATE TABLE hs (id int, h jsonb, e encrypted_text)")
    c.execute("INSERT INTO hs SELECT i, encrypt_field_versioned('x' || i), encrypted_text('y' || i) FROM generate_series(1, 300) i")
    c.execute("CREATE SCHEMA evil")
    c.execute("CREATE TABLE evil.hits (what text)")
    c.execute("GRANT ALL ON evil.hits TO PUBLIC")
    for sig, ret, body in [
        ("tid, tid", "bool", "SELECT true"),
        ("xid, xid", "bool", "SELECT true"),
        ("bigint, bigint", "bool", "SELECT true"),
        ("text, text", "bool", "SELECT false"),
    ]:
        fn = "evil.f_" + str(abs(hash(sig)))
        c.execute(f"CREATE FUNCTION {fn}({sig}) RETURNS {ret} LANGUAGE sql AS $$ INSERT INTO evil.hits VALUES ('{sig}'); {body} $$")
        for op in ["=", "<", "<=", ">=", ">", "<>"]:
            l, r = sig.split(", ")
            c.execute(f"CREATE OPERATOR evil.{op} (LEFTARG = {l}, RIGHTARG = {r}, FUNCTION = {fn})")
    c.execute("CREATE FUNCTION evil.count(anyelement) RETURNS bigint LANGUAGE sql AS $$ INSERT INTO evil.hits VALUES ('count'); SELECT 0::bigint $$")
    c.execute("CREATE FUNCTION evil.age(xid) RETURNS int LANGUAGE sql AS $$ INSERT INTO evil.hits VALUES ('age'); SELECT 0 $$")
    c.execute("CREATE FUNCTION evil.key_version(jsonb) RETURNS text LANGUAGE sql AS $$ INSERT INTO evil.hits VALUES ('kv'); SELECT 'v2' $$")
    c.execute("CREATE FUNCTION evil.array_append(xid[], xid) RETURNS xid[] LANGUAGE sql AS $$ INSERT INTO evil.hits VALUES ('aa'); SELECT '{}'::xid[] $$")
    c.execute("CREATE FUNCTION evil.pg_current_xact_id_if_assigned() RETURNS xid8 LANGUAGE sql AS $$ INSERT INTO evil.hits VALUES ('cx'); SELECT NULL::xid8 $$")
    c.execute("SET search_path = evil, pg_catalog, public")
    c.execute("SET pazpaz.encryption_key_version = 'v2'")
    ns = notices(c)
    c.execute("CALL public.rotate_column('public.hs', 'h', 40, 'v2')")
    c.execute("CALL public.rotate_column('public.hs', 'e', 40, 'v2')")
    c.execute("SET search_path = public")
    hits = c.execute("SELECT array_agg(DISTINCT what) FROM evil.hits").fetchone()[0]
    assert hits is None, f"look-alikes ran: {hits}"
    assert stale_jsonb(c, "hs", "h") == (0, 0)
    assert c.execute("SELECT count(*) FROM hs WHERE key_version(e) <> 'v2'").fetchone()[0] == 0


def test_concurrent_storm_jsonb(cluster, db):
    """Writers (v2 updates, relabels of v1 values, inserts under v1, deletes,
    row locks) and VACUUM FULL during the CALL; no WARNING must mean every
    value is on v2 and authenticates, and every row's plaintext is its own."""
    c = conn(cluster, db)
    c.execute("CREATE TABLE st (id int PRIMARY KEY, pad text, h jsonb)")
    c.execute("INSERT INTO st SELECT i, repeat('p', 200), encrypt_field_versioned('row ' || i) FROM generate_series(1, 6000) i")
    stop = threading.Event()
    errors = []
    relabels = []

    def writer(kind):
        w = conn(cluster, db, version="v1" if kind in ("relabel", "insert_v1") else "v2")
        i = 0
        try:
            while not stop.is_set():
                i += 1
                rid = (i * 7919 + hash(kind)) % 6000 + 1
                try:
                    if kind == "update":
                        w.execute("UPDATE st SET h = encrypt_field_versioned('row ' || id, 'v2'), pad = pad WHERE id = %s", (rid,))
                    elif kind == "relabel":
                        # a v1 value relabelled v2 without re-encryption
                        x = w.execute("UPDATE st SET h = jsonb_set(encrypt_field_versioned('row ' || id, 'v1'), '{version}', '\"v2\"') WHERE id = %s RETURNING xmin::text", (rid,)).fetchone()
                        if x:
                            relabels.append((x[0], time.monotonic()))
                    elif kind == "lock":
                        with w.transaction():
                            w.execute("SELECT 1 FROM st WHERE id BETWEEN %s AND %s FOR UPDATE", (rid, rid + 20))
                            time.sleep(0.3)
                    elif kind == "other":
                        w.execute("UPDATE st SET pad = pad || '' WHERE id BETWEEN %s AND %s", (rid, rid + 50))
                    elif kind == "vacfull" and i % 3 == 0:
                        w.execute("VACUUM FULL st")
                        time.sleep(0.5)
                except psycopg.errors.DeadlockDetected:
                    pass
                time.sleep(0.002)
        except Exception as ex:  # noqa
            errors.append(repr(ex))

    kinds = ["update", "relabel", "lock", "other", "vacfull"]
    ts = [threading.Thread(target=writer, args=(k,)) for k in kinds]
    for t in ts:
        t.start()
    time.sleep(0.3)
    c.execute("SET pazpaz.encryption_key_version = 'v2'")
    ns = notices(c)
    # relabels keep going during the whole CALL; stop them just before the
    # last check can run: stop everything after the walk has started.
    c.execute("CALL rotate_column('st', 'h', 200, 'v2')")
    returned = time.monotonic()
    stop.set()
    for t in ts:
        t.join()
    warned = [m for s, m in ns if s == "WARNING"]
    before = {x for x, t in relabels if t < returned - 0.05}
    bad = [r[0] for r in c.execute("SELECT xmin::text FROM st WHERE NOT verify_field_versioned(h)").fetchall()]
    print("STORM relabels", len(relabels), "unverified", bad, "committed before return", [b for b in bad if b in before])
    left = (c.execute("SELECT count(*) FROM st WHERE key_version(h) <> 'v2'").fetchone()[0],
            len([b for b in bad if b in before]))
    wrong = c.execute("SELECT count(*) FROM st WHERE CASE WHEN verify_field_versioned(h) THEN decrypt_field_versioned(h) <> 'row ' || id END").fetchone()[0]
    assert not errors, errors
    assert wrong in (0, None), f"{wrong} rows decrypt to another row's plaintext"
    assert warned or left == (0, 0), f"no WARNING, yet {left} left; last notices {ns[-3:]}"


@pytest.mark.parametrize("coltype", ["jsonb", "encrypted_text"])
def test_trigger_suppressed_update_reported_done(cluster, db, coltype):
    """A BEFORE UPDATE trigger that leaves some rows alone (signed records
    are immutable: RETURN NULL). Those rows stay on v1, and the CALL must
    say so (a WARNING), never done, even with no other transaction
    meanwhile."""
    c = conn(cluster, db)
    enc = "encrypt_field_versioned('x' || i)" if coltype == "jsonb" else "encrypted_text('x' || i)"
    c.execute(f"CREATE TABLE tr (id int, signed bool, h {coltype})")
    c.execute(f"INSERT INTO tr SELECT i, i % 10 = 0, {enc} FROM generate_series(1, 500) i")
    c.execute("""CREATE FUNCTION tr_guard() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN IF OLD.signed THEN RETURN NULL; END IF; RETURN NEW; END $$""")
    c.execute("CREATE TRIGGER guard BEFORE UPDATE ON tr FOR EACH ROW EXECUTE FUNCTION tr_guard()")
    c.execute("SET pazpaz.encryption_key_version = 'v2'")
    ns = notices(c)
    c.execute("CALL rotate_column('tr', 'h', 100, 'v2')")
    warned = [m for s, m in ns if s == "WARNING"]
    left = c.execute("SELECT count(*) FROM tr WHERE key_version(h) <> 'v2'").fetchone()[0]
    print("TRIG", coltype, left, ns[-1])
    assert warned or left == 0, f"no WARNING, yet {left} rows on v1; last notice {ns[-1]}"


def test_trigger_suppressed_all_rows(cluster, db):
    """Every row kept from updating by a DO INSTEAD NOTHING rule: an error
    or a WARNING, never done."""
    c = conn(cluster, db)
    c.execute("CREATE TABLE tr2 (id int, h encrypted_text)")
    c.execute("INSERT INTO tr2 SELECT i, encrypted_text('x' || i) FROM generate_series(1, 50) i")
    c.execute("CREATE RULE no_upd AS ON UPDATE TO tr2 DO INSTEAD NOTHING")
    c.execute("SET pazpaz.encryption_key_version = 'v2'")
    ns = notices(c)
    try:
        c.execute("CALL rotate_column('tr2', 'h', 10, 'v2')")
    except psycopg.errors.FeatureNotSupported:
        return  # an ERROR, not a false "done": held
    warned = [m for s, m in ns if s == "WARNING"]
    left = c.execute("SELECT count(*) FROM tr2 WHERE key_version(h) <> 'v2'").fetchone()[0]
    print("RULE", left, ns)
    assert warned or left == 0, f"no WARNING, yet {left} rows on v1; notices {ns}"


def test_prepared_and_subxact_row_locks(new_cluster):
    """Rows locked by a prepared transaction and by a subtransaction of an
    open one, for the whole CALL: it must end (bounded) with a WARNING, and
    the locked rows must be intact."""
    cl = new_cluster("rotedge2pc", "max_prepared_transactions = 5")
    db = cl.create_db()
    c = conn(cl, db)
    c.execute("CREATE TABLE pl (id int, h jsonb)")
    c.execute("INSERT INTO pl SELECT i, encrypt_field_versioned('r' || i) FROM generate_series(1, 3000) i")
    p = conn(cl, db)
    p.autocommit = False
    p.execute("SELECT 1 FROM pl WHERE id IN (5, 1500) FOR UPDATE")
    p.execute("PREPARE TRANSACTION 'rotedge_rows'")
    s = conn(cl, db)
    s.autocommit = False
    s.execute("SELECT 1")
    s.execute("SAVEPOINT a")
    s.execute("UPDATE pl SET h = h WHERE id = 2900")
    try:
        c.execute("SET pazpaz.encryption_key_version = 'v2'")
        c.execute("SET statement_timeout = '120s'")
        ns = notices(c)
        t0 = time.time()
        c.execute("CALL rotate_column('pl', 'h', 300, 'v2')")
        took = time.time() - t0
        warned = [m for s_, m in ns if s_ == "WARNING"]
        print("2PC", took, warned, ns[-1])
        assert warned, f"no WARNING with 3 rows locked all along; {ns[-1]}"
    finally:
        c.execute("ROLLBACK PREPARED 'rotedge_rows'")
        s.rollback()
    c.execute("CALL rotate_column('pl', 'h', 300, 'v2')")
    assert stale_jsonb(c, "pl", "h") == (0, 0)
    assert c.execute("SELECT count(*) FROM pl WHERE decrypt_field_versioned(h) = 'r' || id").fetchone()[0] == 3000


def test_walk_reverifies_its_own_batch(cluster, db):
    """Authentication costs: 500 values labelled v2 before the CALL are each
    authenticated once; the 500 it re-encrypts are not authenticated again
    by their own batch. (A row this CALL moved ahead of the walk is
    authenticated once more when the walk reaches it: a few, not all.)"""
    c = conn(cluster, db)
    c.execute("CREATE TABLE rv (id int, h jsonb)")
    c.execute("INSERT INTO rv SELECT i, encrypt_field_versioned('r' || i, CASE WHEN i % 2 = 0 THEN 'v2' ELSE 'v1' END) "
              "FROM generate_series(1, 1000) i")
    c.execute("SET track_functions = 'all'")
    c.execute("SET pazpaz.encryption_key_version = 'v2'")
    c.execute("CALL rotate_column('rv', 'h', 100, 'v2')")
    time.sleep(0.7)
    c.execute("SELECT pg_stat_force_next_flush()")
    calls = c.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions WHERE funcname = 'verify_field_versioned'").fetchone()[0]
    print("VERIFY calls", calls)
    assert 500 <= calls < 650, f"{calls} verify_field_versioned calls for 500 values labelled v2 before the CALL"


def test_rename_swap_mid_call(cluster, db):
    """A table swapped in under the same name mid-CALL (online migration:
    rename the old one away, rename a new one in): the CALL follows the
    table it was given, by OID, and finishes it (or says what is left)."""
    c = conn(cluster, db)
    c.execute("CREATE TABLE sw (id int, h jsonb)")
    c.execute("INSERT INTO sw SELECT i, encrypt_field_versioned('r' || i) FROM generate_series(1, 2000) i")
    c.execute("CREATE TABLE sw_new (id int, h jsonb)")
    c.execute("""CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN PERFORM pg_sleep(0.001); RETURN NEW; END $$""")
    c.execute("CREATE TRIGGER slow BEFORE UPDATE ON sw FOR EACH ROW EXECUTE FUNCTION slow()")
    oid = c.execute("SELECT 'sw'::regclass::oid").fetchone()[0]
    m = conn(cluster, db)

    def swap():
        time.sleep(1.0)
        with m.transaction():
            m.execute("ALTER TABLE sw RENAME TO sw_old")
            m.execute("ALTER TABLE sw_new RENAME TO sw")

    th = threading.Thread(target=swap)
    th.start()
    c.execute("SET pazpaz.encryption_key_version = 'v2'")
    ns = notices(c)
    err = None
    try:
        c.execute("CALL rotate_column(%s::oid::regclass, 'h', 100, 'v2')", (oid,))
    except psycopg.Error as e:
        err = e
    th.join()
    warned = [x for s, x in ns if s == "WARNING"]
    left = c.execute("SELECT count(*) FROM sw_old WHERE key_version(h) <> 'v2'").fetchone()[0]
    print("SWAP", err, left, ns[-1])
    assert err is not None or warned or left == 0, f"no ERROR/WARNING, yet {left} rows of the CALLed table on v1; {ns[-1]}"


def test_xmin_32bit_collision_after_wraparound(new_cluster):
    """A tuple written (and frozen) one epoch earlier keeps its raw xmin,
    which a transaction of this CALL can have again after wraparound: such
    a tuple must still be authenticated, not taken for one this CALL wrote.
    Five mislabelled values (label v2, sealed under v1) written long ago
    with consecutive xids, the CALL's batches getting those xids again
    (pg_resetwal puts the next xid one epoch later, 40 before them, instead
    of burning 2^32 xids): all five are re-encrypted, or reported."""
    from conftest import run_pg
    cl = new_cluster("rotedgewrap", "autovacuum = off")
    db = cl.create_db()
    c = conn(cl, db)
    c.execute("CREATE TABLE wx (id int, h jsonb)")
    c.execute("INSERT INTO wx SELECT i, encrypt_field_versioned('r' || i) FROM generate_series(1, 3000) i")
    bad = []
    for i in range(5):
        bad.append(int(c.execute(
            "INSERT INTO wx VALUES (%s, jsonb_set(encrypt_field_versioned('bad', 'v1'), '{version}', '\"v2\"')) "
            "RETURNING xmin::text::bigint", (10000 + i,)).fetchone()[0]))
    assert bad == list(range(bad[0], bad[0] + 5)), bad
    c.close()
    for d in ["template1", "postgres", db]:
        with psycopg.connect(cl.dsn(d), autocommit=True) as v:
            v.execute("VACUUM FREEZE")
    cl.stop()
    pgbin = "$PGBIN"
    run_pg(f"pg_exec_postgres {pgbin}/pg_resetwal -f -e 1 -x {bad[0] - 40} -D {cl.data} >/dev/null")
    run_pg(f"pg_exec_postgres {pgbin}/pg_ctl -D {cl.data} -l {cl.log} -w -t 60 start >/dev/null")
    c = conn(cl, db)
    print("WRAP next", c.execute("SELECT pg_current_snapshot()::text").fetchone()[0], "bad", bad)
    c.execute("SET pazpaz.encryption_key_version = 'v2'")
    ns = notices(c)
    c.execute("CALL rotate_column('wx', 'h', 100, 'v2')")
    warned = [x for s, x in ns if s == "WARNING"]
    left = c.execute("SELECT xmin::text FROM wx WHERE NOT verify_field_versioned(h)").fetchall()
    print("WRAP", [m for s, m in ns if 'did not authenticate' in m], left, ns[-1])
    assert warned or not left, f"no WARNING, yet mislabelled values with xmin {left} left; {ns[-1]}"


@pytest.mark.parametrize("how", ["terminate", "cancel"])
def test_kill_mid_call_then_recall(cluster, db, how):
    """A backend killed or cancelled mid-walk; a new CALL must finish, with
    every plaintext intact and pre-existing mislabelled values fixed."""
    c = conn(cluster, db)
    c.execute("CREATE TABLE kl (id int, h jsonb) PARTITION BY RANGE (id)")
    c.execute("CREATE TABLE kl_a PARTITION OF kl FOR VALUES FROM (0) TO (1500)")
    c.execute("CREATE TABLE kl_b PARTITION OF kl FOR VALUES FROM (1500) TO (10000)")
    c.execute("INSERT INTO kl SELECT i, encrypt_field_versioned('r' || i) FROM generate_series(1, 3000) i")
    c.execute("UPDATE kl SET h = jsonb_set(h, '{version}', '\"v2\"') WHERE id % 500 = 0")
    c.execute("""CREATE FUNCTION slow2() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN PERFORM pg_sleep(0.0005); RETURN NEW; END $$""")
    c.execute("CREATE TRIGGER slow BEFORE UPDATE ON kl FOR EACH ROW EXECUTE FUNCTION slow2()")
    pid = c.info.backend_pid
    k = conn(cluster, db)
    fn = "pg_terminate_backend" if how == "terminate" else "pg_cancel_backend"
    threading.Timer(0.8, lambda: k.execute(f"SELECT {fn}(%s)", (pid,))).start()
    c.execute("SET pazpaz.encryption_key_version = 'v2'")
    with pytest.raises(psycopg.Error):
        c.execute("CALL rotate_column('kl', 'h', 100, 'v2')")
    time.sleep(0.3)
    c = conn(cluster, db, version="v2")
    ns = notices(c)
    c.execute("CALL rotate_column('kl', 'h', 100, 'v2')")
    assert not [m for s, m in ns if s == "WARNING"], ns
    assert stale_jsonb(c, "kl", "h") == (0, 0)
    assert c.execute("SELECT count(*) FROM kl WHERE decrypt_field_versioned(h) = 'r' || id").fetchone()[0] == 3000


def test_inheritance_concurrent_relabel_in_child(cluster, db):
    """Relabels committed in an inheritance child behind the walk (a child
    bigger than the parent) must be found by the check."""
    c = conn(cluster, db)
    c.execute("CREATE TABLE ih (id int, h jsonb)")
    c.execute("CREATE TABLE ih_c (extra int) INHERITS (ih)")
    c.execute("INSERT INTO ih SELECT i, encrypt_field_versioned('r' || i) FROM generate_series(1, 100) i")
    c.execute("INSERT INTO ih_c SELECT i, encrypt_field_versioned('r' || i), 1 FROM generate_series(101, 4000) i")
    c.execute("""CREATE FUNCTION slow3() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN PERFORM pg_sleep(0.0003); RETURN NEW; END $$""")
    c.execute("CREATE TRIGGER slow BEFORE UPDATE ON ih_c FOR EACH ROW EXECUTE FUNCTION slow3()")
    w = conn(cluster, db)

    def relabel():
        time.sleep(0.8)  # the walk is past the first blocks by now
        for i in range(101, 121):
            w.execute("UPDATE ih SET h = jsonb_set(encrypt_field_versioned('r' || id, 'v1'), '{version}', '\"v2\"') WHERE id = %s", (i,))

    th = threading.Thread(target=relabel)
    th.start()
    c.execute("SET pazpaz.encryption_key_version = 'v2'")
    ns = notices(c)
    c.execute("CALL rotate_column('ih', 'h', 200, 'v2')")
    th.join()
    warned = [m for s, m in ns if s == "WARNING"]
    assert warned or stale_jsonb(c, "ih", "h") == (0, 0), ns[-2:]
    assert c.execute("SELECT count(*) FROM ih WHERE decrypt_field_versioned(h) = 'r' || id").fetchone()[0] == 4000


@pytest.mark.parametrize("coltype", ["jsonb", "encrypted_text"])
def test_large_table_estimated_and_its_done_stretch_skipped(cluster, db, coltype):
    """A plain table of more than 10,000 blocks: the first NOTICE gives an
    estimate from a sample ("about N rows") and the done NOTICE counts
    exactly the rows re-encrypted. On encrypted_text (whose version is
    authenticated), the first half of the table, on the target already, is
    passed over by one look instead of a batch per range; on jsonb it is
    walked, since every value labelled with the target is authenticated."""
    c = conn(cluster, db)
    enc = "encrypt_field_versioned('n' || i)" if coltype == "jsonb" else "('n' || i)::text::encrypted_text"
    # fillfactor 10 and padding: two rows a block, a table of 12,000 blocks
    # (96 MB) from 24,000 rows.
    pad = 150 if coltype == "jsonb" else 230
    c.execute(f"CREATE TABLE big (id int, plain text, pad text DEFAULT repeat('x', {pad}), h {coltype}) "
              "WITH (fillfactor = 10)")
    c.execute("SET pazpaz.encryption_key_version = 'v2'")
    c.execute(f"INSERT INTO big (id, plain, h) SELECT i, 'n' || i, {enc} FROM generate_series(1, 12000) i")
    c.execute("SET pazpaz.encryption_key_version = 'v1'")
    c.execute(f"INSERT INTO big (id, plain, h) SELECT i, 'n' || i, {enc} FROM generate_series(12001, 24000) i")
    c.execute("VACUUM ANALYZE big")
    blocks = c.execute("SELECT pg_relation_size('big') / current_setting('block_size')::int").fetchone()[0]
    assert blocks > 10000, blocks
    c.execute("SET track_functions = 'all'")
    c.execute("SELECT pg_stat_reset()")
    ns = notices(c)
    c.execute("CALL rotate_column('big', 'h', 1000, 'v2')")
    c.execute("SELECT pg_stat_force_next_flush()")
    first = ns[0][1]
    assert first.startswith("rotate_column: about ") and first.endswith(" rows of big.h to re-encrypt to version v2"), first
    estimate = int(first.split()[2])
    assert 0 < estimate <= 24000, first
    progress = [m for s, m in ns if m.startswith("batch ")]
    assert progress and all(f"/about {estimate} rows" in m for m in progress), progress[:3]
    done = "rotate_column: done, 12000 rows re-encrypted, none left on other versions"
    assert ns[-1] == ("NOTICE", done + (", every value authenticates" if coltype == "jsonb" else "")), ns[-3:]
    # 12,000 rows in batches of about 1,000.
    assert len(progress) <= 14, len(progress)
    plain = "decrypt_field_versioned(h)" if coltype == "jsonb" else "h::text"
    assert c.execute(f"SELECT count(*) FILTER (WHERE key_version(h) = 'v2' AND {plain} = plain) "
                     "FROM big").fetchone() == (24000,)
    if coltype == "jsonb":
        return
    # No batch for the ranges of the first half (each batch takes the
    # table's lock once).
    locks = None
    for _ in range(50):  # the backend's statistics reach the view when it is idle
        locks = c.execute("SELECT calls FROM pg_stat_user_functions WHERE funcname = 'rotation_lock'").fetchone()
        if locks:
            break
        time.sleep(0.1)
    assert locks is not None and locks[0] <= len(progress) + 2, (locks, len(progress))


def test_rotation_lock_checks_the_privilege_before_locking(cluster, db):
    """rotation_lock locks a table only for a role that may UPDATE it (else
    NULL and no lock, so that it cannot queue a lock on another role's
    table), locks partitions with their parent, and returns the table's
    name now; rotation_lock_table says why it could not."""
    c = conn(cluster, db)
    c.execute("CREATE TABLE locked_p (id int, h jsonb) PARTITION BY RANGE (id)")
    c.execute("CREATE TABLE locked_p1 PARTITION OF locked_p FOR VALUES FROM (0) TO (100)")
    c.execute("CREATE TABLE locked_p2 PARTITION OF locked_p FOR VALUES FROM (100) TO (200)")
    c.execute("CREATE ROLE lock_nobody")
    c.execute("GRANT SELECT ON locked_p TO lock_nobody")
    c.autocommit = False
    assert c.execute("SELECT rotation_lock('locked_p')").fetchone() == ("public.locked_p",)
    held = {r[0] for r in c.execute(
        "SELECT relation::regclass::text FROM pg_locks WHERE pid = pg_backend_pid() "
        "AND mode = 'RowExclusiveLock' AND locktype = 'relation'").fetchall()}
    assert {"locked_p", "locked_p1", "locked_p2"} <= held, held
    c.rollback()
    c.execute("SET ROLE lock_nobody")
    assert c.execute("SELECT rotation_lock('locked_p')").fetchone() == (None,)
    held = c.execute("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'relation' "
                     "AND relation IN ('locked_p'::regclass, 'locked_p1'::regclass)").fetchone()
    assert held == (0,)
    c.rollback()
    c.execute("SET ROLE lock_nobody")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        c.execute("SELECT rotation_lock_table('locked_p')")
    c.rollback()
    c.execute("ALTER TABLE locked_p RENAME TO locked_q")
    assert c.execute("SELECT rotation_lock('locked_q')").fetchone() == ("public.locked_q",)
    oid = c.execute("SELECT 'locked_q'::regclass::oid").fetchone()[0]
    c.commit()
    c.execute("DROP TABLE locked_q")
    c.commit()
    assert c.execute("SELECT rotation_lock(%s::oid::regclass)", (oid,)).fetchone() == (None,)
    with pytest.raises(psycopg.errors.UndefinedTable):
        c.execute("SELECT rotation_lock_table(%s::oid::regclass)", (oid,))
    c.rollback()
    c.autocommit = True
    c.execute("DROP ROLE lock_nobody")


@pytest.mark.parametrize("setting", [None, "enable_tidscan = off"])
def test_the_look_for_the_next_row_does_not_depend_on_the_plan(cluster, db, setting):
    """The walk passes over a stretch with nothing to do by looking for the
    next row to do: physically first come values labelled v2 whose
    ciphertext is under v1 (they must be re-encrypted), with high ids, then
    rows on v1 with low ids, and a partial index on id. With the caller's
    enable_tidscan off the look is planned as an index scan, which returns
    rows in id order: it must still find the first row in physical order,
    and the CALL end with every value on v2 and authenticating."""
    c = conn(cluster, db)
    c.execute("CREATE TABLE ord (id int, h jsonb)")
    c.execute("INSERT INTO ord SELECT 100000 + i, jsonb_set(encrypt_field_versioned('m' || i), '{version}', '\"v2\"') "
              "FROM generate_series(1, 2000) i")
    c.execute("INSERT INTO ord SELECT i, encrypt_field_versioned('s' || i) FROM generate_series(1, 2000) i")
    c.execute("CREATE INDEX ord_id ON ord (id) WHERE h IS NOT NULL")
    c.execute("VACUUM ANALYZE ord")
    assert c.execute("SELECT count(*) FROM ord WHERE NOT verify_field_versioned(h)").fetchone() == (2000,)
    if setting:
        c.execute(f"SET {setting}")
    ns = notices(c)
    c.execute("CALL rotate_column('ord', 'h', 500, 'v2')")
    assert ns[-1][1].startswith("rotate_column: done, 4000 rows re-encrypted"), ns[-3:]
    assert stale_jsonb(c, "ord", "h") == (0, 0)


def test_a_write_from_before_the_call_still_open_keeps_it_from_done(new_cluster):
    """A transaction that wrote before the CALL began and is still open (here
    prepared) at its end may commit a row on v1 and a v1 value labelled v2,
    that no count can see: the CALL waits for it a while, then says it is
    not done (WARNING), and once it has committed a second CALL finishes."""
    cl = new_cluster("rotedgeopen", "max_prepared_transactions = 5")
    db = cl.create_db()
    c = conn(cl, db)
    c.execute("CREATE TABLE ow (id int, h jsonb)")
    c.execute("INSERT INTO ow SELECT i, encrypt_field_versioned('o' || i) FROM generate_series(1, 500) i")
    w = conn(cl, db)
    w.autocommit = False
    w.execute("INSERT INTO ow VALUES (0, encrypt_field_versioned('o0')), "
              "(-1, jsonb_set(encrypt_field_versioned('o-1'), '{version}', '\"v2\"'))")
    w.execute("PREPARE TRANSACTION 'rotedge_open'")
    try:
        ns = notices(c)
        c.execute("CALL rotate_column('ow', 'h', 100, 'v2')")
        assert ns[-1][0] == "WARNING" and ns[-1][1].startswith(
            "rotate_column: not done: 1 transactions that began before its check ended are still open"), ns[-2:]
        assert not any(m.startswith("rotate_column: done") for _, m in ns), ns[-3:]
    finally:
        c.execute("COMMIT PREPARED 'rotedge_open'")
    assert stale_jsonb(c, "ow", "h") == (1, 1)
    ns = notices(c)
    c.execute("CALL rotate_column('ow', 'h', 100, 'v2')")
    assert ns[-1] == ("NOTICE", "rotate_column: done, 2 rows re-encrypted, none left on other versions, "
                                "every value authenticates"), ns[-3:]
    assert stale_jsonb(c, "ow", "h") == (0, 0)
    assert c.execute("SELECT count(*) FROM ow WHERE decrypt_field_versioned(h) = 'o' || id").fetchone() == (502,)


NO_COUNT = "rotate_column: nobody else wrote and every batch wrote only its own rows: the check counts nothing"


def debug_notices(c):
    c.execute("SET client_min_messages = debug1")
    return notices(c)


@pytest.mark.parametrize("coltype", ["jsonb", "encrypted_text"])
def test_the_check_counts_nothing_when_the_walk_accounts_for_every_row(cluster, db, coltype):
    """Nobody else writes during the CALL, the table is a plain one without
    triggers or rules whose constraints and indexes use only PostgreSQL's
    and the extension's functions, and the batches' UPDATEs wrote exactly
    the rows the statistics count: the walk's own account is exact and the
    check after it counts nothing. An UPDATE trigger that does nothing (it
    could have kept rows from being updated) brings the count back."""
    c = conn(cluster, db)
    enc = "encrypt_field_versioned" if coltype == "jsonb" else ""
    c.execute(f"CREATE TABLE nc (id int PRIMARY KEY, h {coltype} NOT NULL, note text UNIQUE)")
    c.execute(f"INSERT INTO nc SELECT i, {enc}('n' || i), 'note ' || i FROM generate_series(1, 3000) i")
    # PostgreSQL's B-tree over plain columns.
    c.execute("CREATE INDEX ON nc (note, id)")
    # A third already on v2 (a pass that authenticates target-labelled values).
    c.execute("SET pazpaz.encryption_key_version = 'v2'")
    fn = "reencrypt_field_versioned" if coltype == "jsonb" else "reencrypt"
    c.execute(f"UPDATE nc SET h = {fn}(h) WHERE id % 3 = 0")
    ns = debug_notices(c)
    c.execute("CALL rotate_column('nc', 'h', 500, 'v2')")
    said = [m for _, m in ns]
    assert NO_COUNT in said, said[-4:]
    assert said[-1].startswith("rotate_column: done, 2000 rows re-encrypted"), said[-3:]
    left = c.execute("SELECT count(*) FILTER (WHERE key_version(h) <> 'v2') FROM nc").fetchone()[0]
    assert left == 0
    if coltype == "jsonb":
        assert stale_jsonb(c, "nc", "h") == (0, 0)

    c.execute("CREATE FUNCTION nc_noop() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$")
    c.execute("CREATE TRIGGER nc_noop BEFORE UPDATE ON nc FOR EACH ROW EXECUTE FUNCTION nc_noop()")
    c.execute("SET pazpaz.encryption_key_version = 'v1'")
    c.execute(f"UPDATE nc SET h = {fn}(h) WHERE id % 2 = 0")
    ns = debug_notices(c)
    c.execute("CALL rotate_column('nc', 'h', 500, 'v2')")
    said = [m for _, m in ns]
    assert NO_COUNT not in said, said[-4:]
    assert said[-1].startswith("rotate_column: done, 1500 rows re-encrypted"), said[-3:]


PLAIN_OR_NOT = {
    # PostgreSQL's own functions may run SQL given as text (query_to_xml,
    # ts_stat): any CHECK constraint counts, whatever it calls.
    "check with pg_catalog functions only": "ALTER TABLE pn ADD CHECK (length(id::text) > 0)",
    "index on a pg_catalog function": "CREATE INDEX ON pn (lower(id::text))",
    "partial index": "CREATE INDEX ON pn (id) WHERE id > 10",
    "index on the extension's key_version": "CREATE INDEX ON pn (key_version(h))",
    "index with an operator class outside pg_catalog": (
        "CREATE OPERATOR CLASS public.pn_int4_ops FOR TYPE int4 USING btree AS OPERATOR 1 <, OPERATOR 2 <=,"
        " OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >, FUNCTION 1 btint4cmp(int4, int4);"
        " CREATE INDEX ON pn (id public.pn_int4_ops)"),
    "generated column": "ALTER TABLE pn ADD COLUMN g int GENERATED ALWAYS AS (id + 1) STORED",
    "row security": "ALTER TABLE pn ENABLE ROW LEVEL SECURITY",
    "referenced by a foreign key": "ALTER TABLE pn ADD PRIMARY KEY (id); CREATE TABLE pn_ref (r int REFERENCES pn ON UPDATE CASCADE)",
    "a partition": "CREATE TABLE pn_parent (id int, h jsonb) PARTITION BY RANGE (id); ALTER TABLE pn_parent ATTACH PARTITION pn FOR VALUES FROM (0) TO (100000)",
    "an inheritance parent": "CREATE TABLE pn_child () INHERITS (pn)",
}


@pytest.mark.parametrize("shape", sorted(PLAIN_OR_NOT))
def test_the_check_counts_on_a_table_that_is_not_plain(cluster, db, shape):
    """The check counts nothing only on a plain table: a constraint that may
    run code (a CHECK, whatever it calls; a foreign key, either side), an
    index with an expression or predicate (whatever it calls: a dependency
    on PostgreSQL's own functions is not even recorded) or an operator class
    of another extension, a generated column, row security, partitions or
    inheritance make it count, even when nobody else wrote."""
    c = conn(cluster, db)
    c.execute("DROP TABLE IF EXISTS pn_ref, pn_child, pn_parent, pn CASCADE")
    c.execute("CREATE TABLE pn (id int, h jsonb)")
    c.execute("INSERT INTO pn SELECT i, encrypt_field_versioned('p' || i) FROM generate_series(1, 600) i")
    ns = debug_notices(c)
    c.execute("CALL rotate_column('pn', 'h', 250, 'v2')")
    said = [m for _, m in ns]
    assert NO_COUNT in said, said[-4:]  # the plain table first
    c.execute(PLAIN_OR_NOT[shape])
    c.execute("SET pazpaz.encryption_key_version = 'v1'")
    c.execute("UPDATE pn SET h = reencrypt_field_versioned(h) WHERE id % 2 = 0")
    ns = debug_notices(c)
    c.execute("CALL rotate_column('pn', 'h', 250, 'v2')")
    said = [m for _, m in ns]
    assert NO_COUNT not in said, said[-4:]
    assert said[-1].startswith("rotate_column: done, 300 rows re-encrypted"), said[-3:]
    assert stale_jsonb(c, "pn", "h") == (0, 0)


@pytest.mark.parametrize("stats", ["on", "off", "off when the table was opened"])
@pytest.mark.parametrize("hook", ["check", "index", "generated", "delete and insert"])
def test_a_write_behind_the_walk_by_the_tables_own_code_is_counted(cluster, db, hook, stats):
    """The table's own code that the batch's UPDATE runs (a CHECK
    constraint, an index expression, a stored generated column) writes, in
    the batch's own transaction, a row the walk has re-encrypted already
    back to a v1 value. Nobody else took a transaction ID, so only the
    table's statistics can tell: with them on, the batch wrote more rows
    than its UPDATE reports and the check counts; with track_counts off,
    or off while the session first opened the table, nothing counts the
    rows and the check counts too. The CALL never ends "done" with a row
    left on v1."""
    c = conn(cluster, db)
    c.execute("DROP TABLE IF EXISTS wb, wb_stash; DROP FUNCTION IF EXISTS wb_vol, wb_imm")
    c.execute("""
        CREATE TABLE wb (id int, h jsonb);
        CREATE TABLE wb_stash (v jsonb, used bool);
        INSERT INTO wb SELECT i, encrypt_field_versioned('w' || i) FROM generate_series(1, 40) i;
        INSERT INTO wb_stash SELECT encrypt_field_versioned('w1'), false;
    """)
    write = ("DELETE FROM public.wb WHERE id = 1; INSERT INTO public.wb VALUES (1, (SELECT v FROM public.wb_stash));"
             if hook == "delete and insert" else
             "UPDATE public.wb SET h = (SELECT v FROM public.wb_stash) WHERE id = 1;")
    c.execute(f"""
        CREATE FUNCTION wb_vol(i int, x jsonb) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            IF i = 30 AND x ->> 'version' = 'v2' AND NOT (SELECT used FROM public.wb_stash) THEN
                UPDATE public.wb_stash SET used = true;
                {write}
            END IF;
            RETURN true;
        END $$;
        CREATE FUNCTION wb_imm(i int, v jsonb) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
        BEGIN RETURN public.wb_vol(i, v); END $$;
    """)
    if hook == "check":
        c.execute("ALTER TABLE wb ADD CONSTRAINT audit CHECK (wb_vol(id, h))")
    elif hook == "generated":
        c.execute("ALTER TABLE wb ADD COLUMN g boolean GENERATED ALWAYS AS (wb_imm(id, h)) STORED")
    else:
        c.execute("CREATE INDEX ON wb (wb_imm(id, h))")
    c.execute("VACUUM wb")
    c.close()
    c = conn(cluster, db)  # a new session: the table is not open in it yet
    if stats == "off":
        c.execute("SET track_counts = off")
    elif stats == "off when the table was opened":
        c.execute("SET track_counts = off")
        c.execute("SELECT count(*) FROM wb")
        c.execute("SET track_counts = on")
    ns = debug_notices(c)
    c.execute("CALL rotate_column('wb', 'h', 1000, 'v2')")
    said = [m for _, m in ns]
    assert c.execute("SELECT used FROM wb_stash").fetchone()[0], "the hook did not fire"
    assert NO_COUNT not in said, said[-4:]
    assert said[-1].startswith("rotate_column: done"), said[-3:]
    assert stale_jsonb(c, "wb", "h") == (0, 0)
    assert c.execute("SELECT count(*) FROM wb").fetchone() == (40,)


@pytest.mark.parametrize("coltype", ["encrypted_text", "jsonb"])
def test_a_writer_that_took_its_id_after_the_last_batch_is_waited_for(cluster, db, coltype):
    """A transaction takes its ID after the walk's last batch that wrote has
    ended (and before the check), writes nothing yet, and inserts a v1 row
    two seconds later. A snapshot's xmax is one past the latest ID that has
    ended, so the snapshot's list of running transactions does not hold it:
    the CALL must still wait for it (then find its row), or say it is not
    done — never "done" with the row coming after. The table's statement
    trigger sleeps once no row is left on v1, so that the walk's remaining
    ranges take long enough for the writer to start."""
    c = conn(cluster, db)
    enc = "encrypt_field_versioned" if coltype == "jsonb" else ""
    c.execute(f"CREATE TABLE ra (id int, h {coltype})")
    c.execute(f"INSERT INTO ra SELECT i, {enc}('r' || i) FROM generate_series(1, 300) i")
    c.execute("SET pazpaz.encryption_key_version = 'v2'")
    c.execute(f"INSERT INTO ra SELECT i, {enc}('r' || i) FROM generate_series(301, 400) i")
    c.execute("SET pazpaz.encryption_key_version = 'v1'")
    c.execute("""
        CREATE FUNCTION ra_slow() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NOT EXISTS (SELECT FROM public.ra WHERE public.key_version(h) <> 'v2') THEN
                PERFORM pg_sleep(0.5);
            END IF;
            RETURN NULL;
        END $$""")
    c.execute("CREATE TRIGGER ra_slow BEFORE UPDATE ON ra FOR EACH STATEMENT EXECUTE FUNCTION ra_slow()")
    took = threading.Event()
    failed = []

    def writer():
        try:
            with conn(cluster, db) as watch, conn(cluster, db) as w:
                deadline = time.monotonic() + 60
                while watch.execute("SELECT count(*) FROM ra WHERE key_version(h) <> 'v2'").fetchone()[0] > 0:
                    assert time.monotonic() < deadline, "the walk did not finish the v1 rows"
                    time.sleep(0.005)
                w.autocommit = False
                w.execute("SELECT pg_current_xact_id()")
                took.set()
                time.sleep(2)
                w.execute(f"INSERT INTO ra VALUES (0, {enc}('late'))")
                w.commit()
        except Exception as e:  # reported by the test below
            failed.append(e)

    t = threading.Thread(target=writer)
    t.start()
    ns = notices(c)
    c.execute("CALL rotate_column('ra', 'h', 100, 'v2')")
    t.join()
    assert not failed, failed
    assert took.is_set()
    said = [m for _, m in ns]
    stale = c.execute("SELECT count(*) FROM ra WHERE key_version(h) <> 'v2'").fetchone()[0]
    if ns[-1][0] == "WARNING":
        assert said[-1].startswith("rotate_column: not done"), said[-2:]
    else:
        assert said[-1].startswith("rotate_column: done"), said[-3:]
        assert stale == 0, f"done, yet the writer's row is on v1: {said[-3:]}"
    assert c.execute("SELECT count(*) FROM ra").fetchone() == (401,)


def test_a_cascade_into_the_table_at_the_batchs_commit_is_counted(cluster, db):
    """The table runs no code of its own: its only constraints are a unique
    key and a foreign key of another table that follows it (ON UPDATE
    CASCADE, PostgreSQL's own code). That other table has a deferred
    constraint trigger which, at the COMMIT of the batch whose cascade
    fired it, writes the v1 value of a row back into the table, in the
    batch's own transaction (no other transaction ID). Only the table's
    statistics, read after the batches' COMMITs, show the write: the check
    counts, and the CALL ends with every value on v2."""
    c = conn(cluster, db)
    c.execute("""
        CREATE TABLE dt (id int PRIMARY KEY, h jsonb UNIQUE);
        CREATE TABLE dq (h jsonb REFERENCES dt (h) ON UPDATE CASCADE);
        CREATE TABLE dt_stash (id int, h jsonb, used boolean);
        INSERT INTO dt SELECT i, encrypt_field_versioned('d' || i) FROM generate_series(1, 30) i;
        INSERT INTO dq SELECT h FROM dt WHERE id = 20;
        INSERT INTO dt_stash SELECT id, h, false FROM dt WHERE id = 3;
        CREATE FUNCTION dq_restore() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NOT (SELECT used FROM public.dt_stash) THEN
                UPDATE public.dt_stash SET used = true;
                UPDATE public.dt SET h = s.h FROM public.dt_stash s WHERE dt.id = s.id;
            END IF;
            RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER dq_restore AFTER UPDATE ON dq DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION dq_restore();
    """)
    ns = debug_notices(c)
    c.execute("CALL rotate_column('dt', 'h', 1000, 'v2')")
    said = [m for _, m in ns]
    assert c.execute("SELECT used FROM dt_stash").fetchone()[0], "the deferred trigger did not fire"
    assert NO_COUNT not in said, said[-4:]
    assert said[-1].startswith("rotate_column: done"), said[-3:]
    assert stale_jsonb(c, "dt", "h") == (0, 0)


@pytest.mark.parametrize("isolation", ["repeatable read", "serializable"])
def test_the_check_sees_what_committed_while_it_waited_at_any_default_isolation(cluster, db, isolation):
    """The caller's default_transaction_isolation is not READ COMMITTED. A
    writer inserts a v1 row during the last batch (its transaction ID comes
    after the batch's) and commits while the check waits for it: the count
    after the wait must see the row (one snapshot for the check's
    transaction would not), so the CALL ends with it on v2."""
    c = conn(cluster, db)
    c.execute("""
        CREATE FUNCTION iso_slow(i int) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            IF i = 20 THEN PERFORM pg_sleep(2); END IF;
            RETURN true;
        END $$;
        CREATE TABLE iso (id int, h jsonb CHECK (iso_slow(id)));
        INSERT INTO iso SELECT i, encrypt_field_versioned('i' || i) FROM generate_series(1, 20) i;
    """)
    failed = []

    def writer():
        try:
            with conn(cluster, db) as w:
                time.sleep(0.7)  # during the batch's sleep, after its IDs
                w.autocommit = False
                w.execute("INSERT INTO iso VALUES (100, encrypt_field_versioned('late'))")
                time.sleep(3)  # the check has begun by now
                w.commit()
        except Exception as e:  # reported below
            failed.append(e)

    t = threading.Thread(target=writer)
    t.start()
    c.execute(f"SET default_transaction_isolation = '{isolation}'")
    ns = notices(c)
    c.execute("CALL rotate_column('iso', 'h', 1000, 'v2')")
    t.join()
    c.execute("RESET default_transaction_isolation")
    assert not failed, failed
    said = [m for _, m in ns]
    assert said[-1].startswith("rotate_column: done"), said[-3:]
    assert stale_jsonb(c, "iso", "h") == (0, 0)
    assert c.execute("SELECT count(*) FROM iso").fetchone() == (21,)


def test_a_writer_committing_while_the_check_counts_is_seen(cluster, db):
    """A writer that took its transaction ID before the CALL (so the check
    counts) inserts a v1 row and commits while the check's count scans the
    table, after the count's snapshot: the count cannot see the row, and by
    the time the count ends the writer has ended too. The CALL must still
    find the row (it waits for such writers before it says done, and counts
    again) and end with it on v2."""
    c = conn(cluster, db)
    c.execute("CREATE TABLE wc (id int, h jsonb)")
    c.execute("INSERT INTO wc SELECT i, encrypt_field_versioned(repeat('w', 100)) FROM generate_series(1, 200000) i")
    c.execute("VACUUM ANALYZE wc")
    w = conn(cluster, db)
    w.autocommit = False
    w.execute("INSERT INTO wc VALUES (0, encrypt_field_versioned('late'))")
    wx = w.execute("SELECT pg_current_xact_id()::text::int8").fetchone()[0]
    pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    done = threading.Event()
    committed = []

    def watcher():
        with conn(cluster, db) as mon:
            seen = []
            while not done.is_set():
                x = mon.execute("SELECT backend_xid::text::int8 FROM pg_stat_activity WHERE pid = %s",
                                (pid,)).fetchone()[0]
                if x is not None and x != wx and (not seen or seen[-1] != x):
                    seen.append(x)
                    if len(seen) == 2:  # the batch's transaction, then the check's
                        time.sleep(0.02)  # its count is scanning the table now
                        w.commit()
                        committed.append(x)
                        return
                time.sleep(0.001)

    t = threading.Thread(target=watcher)
    t.start()
    ns = notices(c)
    try:
        c.execute("CALL rotate_column('wc', 'h', 1000000, 'v2')")
    finally:
        done.set()
        t.join()
        if not committed:
            w.commit()
    said = [m for _, m in ns]
    assert said[-1].startswith("rotate_column: done"), said[-3:]
    assert stale_jsonb(c, "wc", "h") == (0, 0)


def test_a_relabel_by_the_tables_own_code_is_authenticated(cluster, db):
    """The table's CHECK function, run by a batch's UPDATE, writes a v1
    ciphertext labelled "v2" into a row the walk has rotated, under the
    batch's own transaction ID: nobody else wrote, yet the check must
    authenticate the values (it counts because the table runs code of its
    own) and re-encrypt that one."""
    c = conn(cluster, db)
    c.execute("""
        CREATE TABLE rl_stash (v jsonb, used boolean);
        INSERT INTO rl_stash SELECT jsonb_set(encrypt_field_versioned('forged'), '{version}', '"v2"'), false;
        CREATE FUNCTION rl_hook(i int, x jsonb) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            IF i = 30 AND x ->> 'version' = 'v2' AND NOT (SELECT used FROM public.rl_stash) THEN
                UPDATE public.rl_stash SET used = true;
                UPDATE public.rl SET h = (SELECT v FROM public.rl_stash) WHERE id = 3;
            END IF;
            RETURN true;
        END $$;
        CREATE TABLE rl (id int, h jsonb CHECK (rl_hook(id, h)));
        INSERT INTO rl SELECT i, encrypt_field_versioned('r' || i) FROM generate_series(1, 40) i;
    """)
    ns = notices(c)
    c.execute("CALL rotate_column('rl', 'h', 1000, 'v2')")
    said = [m for _, m in ns]
    assert c.execute("SELECT used FROM rl_stash").fetchone()[0], "the hook did not fire"
    assert said[-1].startswith("rotate_column: done"), said[-3:]
    assert stale_jsonb(c, "rl", "h") == (0, 0)


def test_a_when_clause_on_the_search_trigger_makes_the_check_count(cluster, db):
    """The search index's own trigger, replaced by the table's owner with one
    of the same arguments and a WHEN clause, runs the owner's code in every
    batch: here it swaps the session's v2 key for the rest of the batch's
    transaction, so later rows of the batch are sealed under another key but
    labelled v2, without writing a row or taking a transaction ID. The check
    must not trust the walk (it counts and authenticates every value), and
    the CALL never says done over a value that does not authenticate."""
    c = conn(cluster, db)
    c.execute("SELECT set_config('pazpaz.index_key', %s, false)", (new_key(),))
    c.execute("CREATE TABLE ww (id int PRIMARY KEY, note jsonb, email jsonb)")
    c.execute("INSERT INTO ww SELECT g, encrypt_field_versioned('note ' || g), encrypt_field_versioned('e' || g)"
              " FROM generate_series(1, 20) g")
    c.execute("SET client_min_messages = warning")
    c.execute("CALL add_blind_index('ww', 'email')")
    c.execute("RESET client_min_messages")
    other = json.dumps({"v1": K1, "v2": new_key()})
    c.execute(f"""CREATE FUNCTION ww_swap() RETURNS boolean LANGUAGE sql VOLATILE AS $f$
        SELECT pg_catalog.set_config('pazpaz.encryption_keys', '{other}', true) IS NOT NULL $f$""")
    d = c.execute("SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'ww'::regclass"
                  " AND NOT tgisinternal").fetchone()[0]
    c.execute(d.replace("CREATE TRIGGER", "CREATE OR REPLACE TRIGGER")
               .replace("FOR EACH ROW", "FOR EACH ROW WHEN (public.ww_swap())"))
    ns = debug_notices(c)
    try:
        c.execute("CALL rotate_column('ww', 'note', 5, 'v2')")
        raised = None
    except psycopg.errors.DataException as e:
        # A value that authenticates under no loaded key stops the CALL.
        raised = e
        assert "does not authenticate" in e.diag.message_detail, e.diag.message_detail
    said = [m for _, m in ns]
    assert NO_COUNT not in said, said[-4:]
    c.execute("RESET client_min_messages")
    bad = c.execute("SELECT count(*) FILTER (WHERE NOT verify_field_versioned(note)) FROM ww").fetchone()[0]
    # "done" exactly when every value authenticates under the real v2 key.
    done = raised is None and said[-1].startswith("rotate_column: done")
    assert done == (bad == 0), (bad, raised, said[-3:])
