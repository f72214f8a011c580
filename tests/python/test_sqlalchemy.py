"""SQLAlchemy 2 with psycopg 3 and with asyncpg, through the helper package:
`EncryptedText` columns created by `metadata.create_all` and by Alembic
migrations, ORM reads and writes, keys set on every pooled connection by
`install_key_listener`, and the one-statement migration of a plaintext column
(and its undo) as an Alembic revision."""

import asyncio
import contextvars
import logging
import random
import secrets
import tempfile
import textwrap
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.util import await_only, greenlet_spawn

from conftest import new_key
from pazpaz_crypto import Keyring, set_keys
from pazpaz_crypto.sqlalchemy import EncryptedText, install_key_listener

DRIVERS = ["psycopg", "asyncpg"]

# The keys of the user the current request runs for; an application would
# set this in its request middleware.
current_keys: contextvars.ContextVar = contextvars.ContextVar("current_keys", default=None)


class Base(DeclarativeBase):
    pass


class Client(Base):
    __tablename__ = "clients"
    id: Mapped[int] = mapped_column(primary_key=True)
    clinic: Mapped[str] = mapped_column(sa.String(50))
    first_name: Mapped[str] = mapped_column(EncryptedText(255))
    medical_history: Mapped[str | None] = mapped_column(EncryptedText())


def unicode_text(rng: random.Random, n: int) -> str:
    pools = ["abcdefghijklmnopqrstuvwxyz ", "äöüßéèçñøåæ", "ΑΒΓΔабвгд", "中文日本語한국어", "😀🩺💊🧬"]
    return "".join(rng.choice(rng.choice(pools)) for _ in range(n))


def status(conn) -> list[tuple]:
    """encryption_status() rows, through a SQLAlchemy Connection or Session."""
    return [tuple(r) for r in conn.execute(sa.text("SELECT * FROM encryption_status()"))]


def fingerprints(cluster, db, keys) -> set[str]:
    """The fingerprints the server shows for `keys` (computed on a separate
    connection, to compare with what a pooled connection holds)."""
    with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
        set_keys(c, keys)
        return {r[2] for r in c.execute("SELECT * FROM encryption_status()")}


def make_engine(cluster, db, driver, **kw):
    if driver == "psycopg":
        engine = sa.create_engine(cluster.url("psycopg", db), **kw)
    else:
        engine = create_async_engine(cluster.url("asyncpg", db), **kw)
    install_key_listener(engine, current_keys.get)
    return engine


def run(driver, engine, scenario):
    """Runs scenario(bind) and disposes of the engine. The scenario is
    ordinary synchronous SQLAlchemy code on `bind`; with asyncpg, `bind` is
    the AsyncEngine's sync_engine and the scenario runs the way AsyncSession
    runs ORM code (in a greenlet on the event loop, every round trip through
    the asyncpg driver), so one scenario covers both drivers, the pool and
    its listeners included."""
    if driver == "psycopg":
        try:
            return scenario(engine)
        finally:
            engine.dispose()

    async def main():
        try:
            return await greenlet_spawn(scenario, engine.sync_engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())


@pytest.fixture(params=DRIVERS)
def driver(request):
    return request.param


@pytest.fixture(autouse=True)
def no_keys():
    """Each test starts, and leaves the context, with no current user."""
    token = current_keys.set(None)
    yield
    current_keys.reset(token)


@pytest.fixture
def user_keys():
    keys = Keyring({"v1": new_key(), "v2": new_key()}, current="v2")
    token = current_keys.set(keys)
    yield keys
    current_keys.reset(token)


# ---- create_all + ORM ------------------------------------------------------------

def test_create_all_and_orm_round_trip(cluster, db, driver, user_keys):
    rng = random.Random(secrets.randbits(32))
    people = [(unicode_text(rng, rng.randint(1, 255)), unicode_text(rng, rng.randint(0, 3000))) for _ in range(50)]
    follow_up = " — follow-up 2024-05-01: stable"

    def scenario(bind):
        with Session(bind) as s:
            Base.metadata.create_all(s.connection())
            s.add_all([Client(clinic="north", first_name=f, medical_history=m) for f, m in people])
            s.add(Client(clinic="north", first_name="No History", medical_history=None))
            s.commit()

        with Session(bind) as s:
            got = s.execute(sa.select(Client.first_name, Client.medical_history).order_by(Client.id)).all()
            assert [tuple(r) for r in got] == people + [("No History", None)]
            # The ORM's read-modify-write of an encrypted attribute.
            c = s.scalars(sa.select(Client).order_by(Client.id).limit(1)).one()
            c.medical_history += follow_up
            s.commit()
            first_id = c.id

        with Session(bind) as s:
            assert s.get(Client, first_id).medical_history == people[0][1] + follow_up

            # DDL and storage: the server type, the envelope of the write
            # version, no plaintext in the stored bytes.
            types = dict(s.execute(sa.text(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = 'clients'::regclass AND attnum > 0")).all())
            assert types["first_name"] == "encrypted_text(255)" and types["medical_history"] == "encrypted_text"
            rows = s.execute(sa.text(
                "SELECT first_name::bytea, key_version(first_name), medical_history::bytea FROM clients"
                " WHERE id > :first AND medical_history IS NOT NULL ORDER BY id"), {"first": first_id}).all()
            assert len(rows) == len(people) - 1
            for (raw_first, version, raw_history), (first, history) in zip(rows, people[1:]):
                assert version == "v2"
                assert first.encode() not in bytes(raw_first)
                assert len(history) < 8 or history.encode() not in bytes(raw_history)

            # encrypted_text(255) is enforced by the server like varchar(255).
            s.add(Client(clinic="north", first_name="x" * 256))
            with pytest.raises(sa.exc.DBAPIError, match="too long for type encrypted_text"):
                s.flush()
            s.rollback()

            # Reflection maps the server type back to the helper type.
            cols = {c["name"]: c["type"] for c in sa.inspect(s.connection()).get_columns("clients")}
            assert isinstance(cols["first_name"], EncryptedText) and cols["first_name"].length == 255
            assert isinstance(cols["medical_history"], EncryptedText) and cols["medical_history"].length is None

    run(driver, make_engine(cluster, db, driver), scenario)


def test_async_orm_with_asyncpg(cluster, db, user_keys):
    """The same, written the way an asyncio application writes it."""
    engine = make_engine(cluster, db, "asyncpg")

    async def main():
        try:
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
            async with AsyncSession(engine, expire_on_commit=False) as s:
                s.add(Client(clinic="south", first_name="Zoë Ångström", medical_history="asthma"))
                await s.commit()
                c = (await s.execute(sa.select(Client).where(Client.clinic == "south"))).scalar_one()
                assert (c.first_name, c.medical_history) == ("Zoë Ångström", "asthma")
                c.medical_history += "; penicillin allergy"
                await s.commit()
            async with AsyncSession(engine) as s:
                c = (await s.execute(sa.select(Client))).scalar_one()
                assert c.medical_history == "asthma; penicillin allergy"
                assert (await s.execute(sa.select(sa.func.key_version(Client.medical_history)))).scalar() == "v2"
        finally:
            await engine.dispose()

    asyncio.run(main())


# ---- keys on pooled connections ---------------------------------------------------------

def test_pooled_connection_does_not_keep_previous_users_keys(cluster, db, driver):
    """One pooled connection (pool_size=1) serves user A, then user B with
    another key, then an anonymous request. Between them it sits in the pool
    without keys, even when A returned it inside an open or failed
    transaction."""
    # Same version names, other keys: the dangerous case for a mix-up.
    keys_a = Keyring({"v1": new_key(), "v2": new_key()}, current="v2")
    keys_b = Keyring({"v1": new_key(), "v2": new_key()}, current="v2")
    fp_a, fp_b = fingerprints(cluster, db, keys_a), fingerprints(cluster, db, keys_b)
    engine = make_engine(cluster, db, driver, pool_size=1, max_overflow=0)

    def driver_connection(s: Session):
        return s.connection().connection.driver_connection

    def idle_status(s: Session, raw) -> list:
        """Closes the session (the connection goes back to the pool) and
        reads what the idle pooled connection holds, through the driver
        connection itself: a checkout would set keys."""
        s.close()
        if driver == "psycopg":
            rows = raw.execute("SELECT * FROM encryption_status()").fetchall()
            raw.rollback()
            return rows
        return await_only(raw.fetch("SELECT * FROM encryption_status()"))

    def backend_pid(s: Session) -> int:
        return s.execute(sa.text("SELECT pg_backend_pid()")).scalar()

    def scenario(bind):
        def as_user(keys):
            current_keys.set(keys)  # what request middleware would do
            return Session(bind)

        with as_user(keys_a) as s:
            Base.metadata.create_all(s.connection())
            s.add(Client(clinic="a", first_name="Alice", medical_history="A's secret"))
            s.commit()
            assert {r[2] for r in status(s)} == fp_a
            pid_a = backend_pid(s)
            s.execute(sa.select(Client)).all()  # returned with a transaction open
            assert idle_status(s, driver_connection(s)) == []

        with as_user(keys_a) as s:
            raw = driver_connection(s)
            s.add(Client(clinic="a", first_name="x" * 300))
            with pytest.raises(sa.exc.DBAPIError):
                s.flush()
            assert idle_status(s, raw) == []  # returned inside an aborted transaction

        with as_user(keys_b) as s:
            assert backend_pid(s) == pid_a  # the same server connection
            assert {r[2] for r in status(s)} == fp_b
            with pytest.raises(sa.exc.DBAPIError, match="Decryption failed"):
                s.execute(sa.select(Client.medical_history)).all()

        with as_user(None) as s:
            assert backend_pid(s) == pid_a
            assert status(s) == []
            with pytest.raises(sa.exc.DBAPIError, match="pazpaz.encryption_key"):
                s.execute(sa.select(Client.first_name)).all()
            s.rollback()
            # Columns that are not encrypted stay readable without a key.
            assert s.execute(sa.select(Client.clinic)).scalars().all() == ["a"]

        with as_user(keys_a) as s:
            rows = s.execute(sa.select(Client.first_name, Client.medical_history)).all()
            assert [tuple(r) for r in rows] == [("Alice", "A's secret")]

    run(driver, engine, scenario)


def test_keys_never_reach_sqlalchemy_logs(cluster, db, driver, user_keys, caplog):
    """The listeners run their statement on the DB-API cursor: with engine
    logging at DEBUG (statements and parameters), no key appears, and a
    failing statement's exception text holds no key either."""
    engine = make_engine(cluster, db, driver, echo="debug")

    def scenario(bind):
        with Session(bind) as s:
            Base.metadata.create_all(s.connection())
            s.add(Client(clinic="n", first_name="Bob"))
            s.commit()
            assert s.execute(sa.select(Client.first_name)).scalar() == "Bob"
            with pytest.raises(sa.exc.DBAPIError) as err:
                s.execute(sa.text("SELECT decrypt_field('\\x00'::bytea)"))
            return str(err.value)

    with caplog.at_level(logging.DEBUG, logger="sqlalchemy"):
        error_text = run(driver, engine, scenario)
    logged = caplog.text + error_text
    assert "INSERT INTO clients" in caplog.text  # the logging did capture statements
    for secret in user_keys.keys.values():
        assert secret not in logged
        assert secret not in repr(user_keys)


def test_sqlalchemy_docs_reset_recipe_keeps_keys(cluster, db, user_keys):
    """Why install_key_listener rolls back before it clears: the reset
    recipe in SQLAlchemy's PostgreSQL docs (RESET ALL, then rollback) runs
    RESET ALL inside the transaction the connection came back with — or one
    psycopg opens for it — and its own rollback undoes it. The keys stay."""
    engine = sa.create_engine(cluster.url("psycopg", db), pool_size=1, max_overflow=0, pool_reset_on_return=None)

    @sa.event.listens_for(engine, "checkout")
    def set_on_checkout(dbapi_connection, record, proxy):
        set_keys(dbapi_connection, current_keys.get())
        dbapi_connection.commit()

    @sa.event.listens_for(engine, "reset")
    def docs_recipe(dbapi_connection, record, reset_state):
        if not reset_state.terminate_only:
            dbapi_connection.execute("CLOSE ALL")
            dbapi_connection.execute("RESET ALL")
            dbapi_connection.execute("DISCARD TEMP")
        dbapi_connection.rollback()

    try:
        with engine.connect() as c:
            raw = c.connection.driver_connection
            assert status(c) != []
        assert raw.execute("SELECT count(*) FROM encryption_status()").fetchone()[0] == 2
        raw.rollback()
    finally:
        engine.dispose()


# ---- Alembic ---------------------------------------------------------------------------

ENV_PY = """
from alembic import context

# The caller passes a connection (with keys set by the pool listener).
connection = context.config.attributes["connection"]
context.configure(connection=connection)
with context.begin_transaction():
    context.run_migrations()
"""

REVISIONS = {
    "0001_clients.py": '''
        """clients, with an encrypted column from the start"""
        import sqlalchemy as sa
        from alembic import op
        from pazpaz_crypto.sqlalchemy import EncryptedText

        revision = "0001"
        down_revision = None

        def upgrade():
            op.create_table(
                "clients",
                sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("first_name", sa.String(255), nullable=False),
                sa.Column("medical_history", EncryptedText()),
            )

        def downgrade():
            op.drop_table("clients")
    ''',
    "0002_notes.py": '''
        """an encrypted column added to an existing table"""
        import sqlalchemy as sa
        from alembic import op
        from pazpaz_crypto.sqlalchemy import EncryptedText

        revision = "0002"
        down_revision = "0001"

        def upgrade():
            op.add_column("clients", sa.Column("notes", EncryptedText(2000)))

        def downgrade():
            op.drop_column("clients", "notes")
    ''',
    "0003_encrypt_first_name.py": '''
        """encrypt first_name in place: one ALTER TABLE each way"""
        import sqlalchemy as sa
        from alembic import op
        from pazpaz_crypto.sqlalchemy import EncryptedText

        revision = "0003"
        down_revision = "0002"

        def upgrade():
            op.alter_column(
                "clients", "first_name",
                type_=EncryptedText(255), existing_type=sa.String(255), existing_nullable=False,
                postgresql_using="first_name::encrypted_text",
            )

        def downgrade():
            op.alter_column(
                "clients", "first_name",
                type_=sa.String(255), existing_type=EncryptedText(255), existing_nullable=False,
                postgresql_using="first_name::text",
            )
    ''',
}


@pytest.fixture
def alembic_config():
    """A migration environment in a temporary directory, configured in code
    (no alembic.ini)."""
    with tempfile.TemporaryDirectory(prefix="pazpaz_alembic_") as d:
        root = Path(d)
        (root / "env.py").write_text(ENV_PY)
        (root / "versions").mkdir()
        for name, body in REVISIONS.items():
            (root / "versions" / name).write_text(textwrap.dedent(body))
        cfg = Config()
        cfg.set_main_option("script_location", d)
        yield cfg


def migrate(bind, cfg, fn, *args):
    """Runs an Alembic command on a connection of `bind` (keys set by the
    pool listener), the programmatic way: the connection is handed to env.py."""
    with bind.begin() as conn:
        cfg.attributes["connection"] = conn
        fn(cfg, *args)


def test_alembic_migrations_encrypt_a_column_and_undo(cluster, db, driver, user_keys, alembic_config):
    rng = random.Random(secrets.randbits(32))
    names = [unicode_text(rng, rng.randint(1, 255)) for _ in range(200)] + ["", "O'Brien", "x" * 255]
    histories = [unicode_text(rng, rng.randint(0, 500)) for _ in names]
    notes = [f"note {i} ✓" for i in range(len(names))]

    def check(column_type):
        with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
            set_keys(c, user_keys)
            got_type, not_null = c.execute(
                "SELECT format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
                " WHERE attrelid = 'clients'::regclass AND attname = 'first_name'").fetchone()
            assert (got_type, not_null) == (column_type, True)
            rows = c.execute("SELECT first_name, medical_history, notes FROM clients ORDER BY id").fetchall()
            assert rows == list(zip(names, histories, notes))
            if column_type.startswith("encrypted_text"):
                for raw, name in c.execute("SELECT first_name::bytea, first_name FROM clients ORDER BY id"):
                    assert len(name) < 4 or name.encode() not in bytes(raw)
                versions = {r[0] for r in c.execute("SELECT key_version(first_name) FROM clients")}
                assert versions == {"v2"}

    def scenario(bind):
        migrate(bind, alembic_config, command.upgrade, "0002")
        with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
            set_keys(c, user_keys)
            with c.cursor() as cur:
                cur.executemany("INSERT INTO clients (first_name, medical_history, notes) VALUES (%s, %s, %s)",
                                list(zip(names, histories, notes)))
        check("character varying(255)")

        migrate(bind, alembic_config, command.upgrade, "head")
        check("encrypted_text(255)")
        with bind.connect() as conn:  # and through the driver under test
            assert conn.execute(sa.text("SELECT first_name FROM clients ORDER BY id")).scalars().all() == names

        migrate(bind, alembic_config, command.downgrade, "0002")
        check("character varying(255)")

        migrate(bind, alembic_config, command.downgrade, "base")
        with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
            assert c.execute("SELECT to_regclass('clients')").fetchone()[0] is None

    run(driver, make_engine(cluster, db, driver), scenario)
