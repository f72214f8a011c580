"""Keys behind a real PgBouncer in transaction mode.

More clients than server connections, each client with its own keyring, each
transaction starting with set_config(…, true): no client ever reads or writes
with another client's keys, and no key outlives its transaction on the
server connection it ran on. A control shows what the per-transaction form
prevents: a session-level set_config stays on the server connection for
whichever client comes next (PgBouncer runs no reset query between
transactions in this mode)."""

import contextvars
import shutil
import subprocess
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from conftest import free_port, new_key, require_program
from pazpaz_crypto import Keyring, set_keys
from pazpaz_crypto.sqlalchemy import EncryptedText, install_transaction_key_listener

POOL_SIZE = 2
CLIENTS = 8
TRANSACTIONS = 40


class PgBouncer:
    def __init__(self, cluster, db: str):
        self.program = require_program("pgbouncer")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pazpaz_pgbouncer_"))
        server = f"host={cluster.host} port={cluster.port} dbname={db}"
        (self.dir / "userlist.txt").write_text('"postgres" ""\n')
        (self.dir / "pgbouncer.ini").write_text(f"""
[databases]
app = {server}
; one server connection: makes the control test deterministic
app_single = {server} pool_size=1

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir}/userlist.txt
pool_mode = transaction
default_pool_size = {POOL_SIZE}
max_client_conn = 100
logfile = {self.dir}/pgbouncer.log
pidfile = {self.dir}/pgbouncer.pid
""")
        shutil.chown(self.dir, "postgres", "postgres")
        for f in self.dir.iterdir():
            shutil.chown(f, "postgres", "postgres")
        # PgBouncer refuses to run as root.
        self.proc = subprocess.Popen(
            [self.program, str(self.dir / "pgbouncer.ini")],
            user="postgres", group="postgres", extra_groups=[],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self._wait_ready()

    def dsn(self, dbname="app") -> str:
        # psycopg's prepared statements need PgBouncer >= 1.21 in this mode.
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def connect(self, dbname="app") -> psycopg.Connection:
        return psycopg.connect(self.dsn(dbname), autocommit=True, prepare_threshold=None)

    def _wait_ready(self):
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.proc.stderr.read().decode()}")
            try:
                with self.connect() as c:
                    c.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def bouncer(cluster):
    require_program("pgbouncer")
    db = cluster.create_db()
    with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
        c.execute("CREATE TABLE notes (id serial PRIMARY KEY, owner int NOT NULL, n int NOT NULL, secret encrypted_text NOT NULL)")
    b = PgBouncer(cluster, db)
    b.db = db
    yield b
    b.stop()
    cluster.drop_db(db)


def keyring() -> Keyring:
    # Same version names for every client: a mix-up would not be caught by
    # an "unknown version" error, only by the keys themselves.
    return Keyring({"v1": new_key(), "v2": new_key()}, current="v2")


def run_threads(n, target) -> None:
    errors = []
    start = threading.Barrier(n)

    def wrapped(i):
        try:
            start.wait()
            target(i)
        except BaseException as e:  # reported in the main thread
            errors.append((i, e))

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        i, e = errors[0]
        raise AssertionError(f"client {i} failed ({len(errors)} clients failed)") from e


def verify_directly(cluster, db, rings, expected, table="notes"):
    """Every row decrypts with its owner's keys, bypassing PgBouncer: no row
    was ever written with another client's key."""
    with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
        for owner, ring in rings.items():
            set_keys(c, ring)
            rows = dict(c.execute(f"SELECT n, secret FROM {table} WHERE owner = %s", (owner,)).fetchall())
            assert rows == expected[owner], f"client {owner}"


def test_clients_never_share_keys_through_transaction_pooling(cluster, bouncer):
    rings = {i: keyring() for i in range(CLIENTS)}
    expected = {i: {} for i in range(CLIENTS)}
    fingerprints = defaultdict(set)   # client -> fingerprints seen in its keyed transactions
    clients_of_pid = defaultdict(set)  # server backend -> clients it served
    keyless = defaultdict(int)         # server backend -> keyless transactions it ran

    def client(i):
        with bouncer.connect() as conn:
            for n in range(TRANSACTIONS):
                if n % 4 == 3:
                    # A transaction that sets no key, on whatever server
                    # connection it lands: nothing of a previous transaction.
                    with conn.transaction():
                        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
                        assert conn.execute("SELECT * FROM encryption_status()").fetchall() == []
                        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="pazpaz.encryption_key"):
                            with conn.transaction():  # savepoint
                                conn.execute("SELECT secret FROM notes LIMIT 1").fetchall()
                    keyless[pid] += 1
                    clients_of_pid[pid].add(i)
                    continue

                secret = f"client {i} note {n} ✓"
                with conn.transaction():
                    set_keys(conn, rings[i], local=True)
                    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
                    fingerprints[i] |= {r[2] for r in conn.execute("SELECT * FROM encryption_status()")}
                    conn.execute("INSERT INTO notes (owner, n, secret) VALUES (%s, %s, %s)", (i, n, secret))
                    expected[i][n] = secret
                    mine = dict(conn.execute("SELECT n, secret FROM notes WHERE owner = %s", (i,)).fetchall())
                    assert mine == expected[i]
                    # Another client's row does not open with these keys.
                    other = conn.execute("SELECT id FROM notes WHERE owner <> %s LIMIT 1", (i,)).fetchone()
                    if other:
                        with pytest.raises(psycopg.errors.DataException, match="Decryption failed"):
                            with conn.transaction():
                                conn.execute("SELECT secret FROM notes WHERE id = %s", other).fetchall()
                clients_of_pid[pid].add(i)

    run_threads(CLIENTS, client)

    # PgBouncer multiplexed 8 clients over at most 2 server connections, so
    # each server connection served several clients in turn.
    assert 1 <= len(clients_of_pid) <= POOL_SIZE
    assert max(len(c) for c in clients_of_pid.values()) >= CLIENTS // POOL_SIZE
    assert sum(keyless.values()) == CLIENTS * (TRANSACTIONS // 4)
    # Each client always saw its own two keys, and no one else's.
    assert all(len(fps) == 2 for fps in fingerprints.values())
    assert len(set().union(*fingerprints.values())) == 2 * CLIENTS
    verify_directly(cluster, bouncer.db, rings, expected)


def test_session_level_keys_leak_through_transaction_pooling(bouncer):
    """The control: set_config(…, false) outlives the client's transaction
    and is found by the next client on that server connection. This is why
    behind a transaction-mode pooler keys are set per transaction."""
    key = new_key()
    with bouncer.connect("app_single") as a, bouncer.connect("app_single") as b:
        try:
            set_keys(a, key, local=False)  # the wrong form for this pooler
            leaked = b.execute("SELECT fingerprint FROM encryption_status()").fetchall()
            with psycopg.connect(bouncer.dsn("app_single"), autocommit=True, prepare_threshold=None) as c:
                set_keys(c, key)
                own = c.execute("SELECT fingerprint FROM encryption_status()").fetchall()
            assert leaked == own != []
        finally:
            set_keys(b, None)
        # With the per-transaction form nothing is left behind.
        with a.transaction():
            set_keys(a, key, local=True)
            assert len(a.execute("SELECT * FROM encryption_status()").fetchall()) == 1
        assert b.execute("SELECT * FROM encryption_status()").fetchall() == []


# ---- SQLAlchemy through PgBouncer: install_transaction_key_listener ----------------

class Base(DeclarativeBase):
    pass


class Memo(Base):
    __tablename__ = "memos"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[int]
    n: Mapped[int]
    secret: Mapped[str] = mapped_column(EncryptedText())


current_keys: contextvars.ContextVar = contextvars.ContextVar("current_keys", default=None)


def test_sqlalchemy_transaction_listener_through_pgbouncer(cluster, bouncer):
    engine = sa.create_engine(
        f"postgresql+psycopg://postgres@127.0.0.1:{bouncer.port}/app",
        connect_args={"prepare_threshold": None}, pool_size=CLIENTS, max_overflow=0,
    )
    install_transaction_key_listener(engine, current_keys.get)
    rings = {i: keyring() for i in range(CLIENTS)}
    expected = {i: {} for i in range(CLIENTS)}
    try:
        with engine.begin() as conn:
            Base.metadata.create_all(conn)

        def client(i):
            # Each thread runs in its own context: its "current user".
            for n in range(TRANSACTIONS // 2):
                current_keys.set(None if n % 5 == 4 else rings[i])
                with Session(engine) as s, s.begin():
                    if current_keys.get() is None:
                        assert s.execute(sa.text("SELECT * FROM encryption_status()")).all() == []
                        continue
                    s.add(Memo(owner=i, n=n, secret=f"memo {i}/{n} ✓"))
                    expected[i][n] = f"memo {i}/{n} ✓"
                    s.flush()
                    mine = dict(s.execute(sa.select(Memo.n, Memo.secret).where(Memo.owner == i)).all())
                    assert mine == expected[i]

        run_threads(CLIENTS, client)
        verify_directly(cluster, bouncer.db, rings, expected, table="memos")

        # In autocommit mode a transaction-local key would end with its own
        # statement: the listener refuses instead of leaving keys unset.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            current_keys.set(rings[0])
            with pytest.raises(RuntimeError, match="autocommit"):
                conn.execute(sa.select(Memo.secret)).all()
    finally:
        current_keys.set(None)
        engine.dispose()
