"""SQLAlchemy 2 helpers: the ``encrypted_text`` column type and key listeners.

``EncryptedText`` renders ``encrypted_text`` / ``encrypted_text(n)`` in DDL and
moves plain ``str`` values: the server encrypts on input and decrypts on
output, so no bind or result processing happens in Python. It works unchanged
with psycopg 3 (which sends ``str`` untyped and reads unknown types as text)
and with asyncpg (which exchanges types it has no codec for in text format).

Keys, the session way (a pool of real server connections)::

    engine = create_engine(url)
    install_key_listener(engine, current_keys)   # current_keys() -> None | str | Keyring

sets the keys ``current_keys()`` returns whenever a connection is checked out
of the pool, and clears them when it is returned.

Keys, the transaction way (behind PgBouncer in transaction mode, where every
transaction may run on another server connection)::

    install_transaction_key_listener(engine, current_keys)

sets them with ``set_config(…, true)`` as the first statement of every
transaction, so they end with it.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from sqlalchemy import event
from sqlalchemy.dialects.postgresql.base import ischema_names
from sqlalchemy.types import UserDefinedType

from . import CLEAR_KEYS_SQL, Keys, key_settings, set_keys_sql

__all__ = ["EncryptedText", "install_key_listener", "install_transaction_key_listener"]


class EncryptedText(UserDefinedType):
    """``encrypted_text`` (``length=None``) or ``encrypted_text(length)``: text
    encrypted by the server with the session's key; ``length`` is the maximum
    plaintext length in characters, enforced by the server like varchar(n).

    No comparison operators exist on the server (ciphertext is not
    comparable), so filter on other columns."""

    cache_ok = True

    def __init__(self, length: Optional[int] = None):
        self.length = length

    def get_col_spec(self, **kw: Any) -> str:
        return "encrypted_text" if self.length is None else f"encrypted_text({self.length})"

    @property
    def python_type(self) -> type:
        return str


# Reflection (Inspector, Alembic autogenerate) maps the server type back to
# EncryptedText(n) instead of warning about an unknown type.
ischema_names.setdefault("encrypted_text", EncryptedText)


def _sync_engine(engine: Any) -> Any:
    # An AsyncEngine's events live on its sync_engine.
    return getattr(engine, "sync_engine", engine)


def _run(dbapi_connection: Any, sql: str, params: Any = None) -> None:
    cur = dbapi_connection.cursor()
    try:
        if params is None:
            cur.execute(sql)
        else:
            cur.execute(sql, params)
    finally:
        cur.close()


def install_key_listener(engine: Any, keys_provider: Callable[[], Keys]) -> None:
    """Sets keys on every pooled connection when it is checked out, and clears
    them when it is returned (for an Engine or AsyncEngine).

    ``keys_provider()`` is called at each checkout, e.g. to read the current
    user's keys from a contextvar; ``None`` means no key.

    Why each step:

    - checkout: all three settings are written, so nothing of the previous
      user survives even if a reset was skipped; the statement is committed at
      once, because a session-level ``set_config`` made in a transaction that
      is later rolled back would be undone with it (the pool's own reset is a
      rollback).
    - return: SQLAlchemy's default reset-on-return is only a rollback, which
      leaves session settings (and so the keys) on the idle connection. The
      ``reset`` handler rolls back first (a reset issued inside the open
      transaction would be rolled back too), then clears the keys and
      commits. A connection being closed rather than pooled (``terminate_only``)
      takes its keys with its backend."""
    engine = _sync_engine(engine)
    set_sql = set_keys_sql(engine.dialect.paramstyle, local=False)

    @event.listens_for(engine, "checkout")
    def _set_keys_on_checkout(dbapi_connection: Any, connection_record: Any, connection_proxy: Any) -> None:
        _run(dbapi_connection, set_sql, key_settings(keys_provider()))
        dbapi_connection.commit()

    @event.listens_for(engine, "reset")
    def _clear_keys_on_return(dbapi_connection: Any, connection_record: Any, reset_state: Any) -> None:
        if reset_state.terminate_only or not reset_state.asyncio_safe:
            return
        dbapi_connection.rollback()
        _run(dbapi_connection, CLEAR_KEYS_SQL)
        dbapi_connection.commit()


def install_transaction_key_listener(engine: Any, keys_provider: Callable[[], Keys]) -> None:
    """Sets keys with ``set_config(…, true)`` as the first statement of every
    transaction (for an Engine or AsyncEngine), so that they end with it: the
    form for PgBouncer in transaction mode, where consecutive transactions of
    one client may run on different server connections and one server
    connection serves many clients.

    Needs real transactions: with ``isolation_level="AUTOCOMMIT"`` a
    transaction-local setting would end with its own statement, so this
    refuses to run there rather than leave the next statements keyless."""
    engine = _sync_engine(engine)
    set_sql = set_keys_sql(engine.dialect.paramstyle, local=True)

    @event.listens_for(engine, "begin")
    def _set_keys_on_begin(conn: Any) -> None:
        dbapi_connection = conn.connection.dbapi_connection
        if getattr(dbapi_connection, "autocommit", False):
            raise RuntimeError(
                "install_transaction_key_listener needs transactions; this connection is in autocommit mode"
            )
        # The DB-API cursor, not conn.execute(): the Connection is still inside
        # begin(), and the driver opens the server transaction with this
        # statement.
        _run(dbapi_connection, set_sql, key_settings(keys_provider()))
