"""asyncpg helpers.

asyncpg needs no codec for ``encrypted_text``: it exchanges types it does not
know (no stable OID, no codec registered) in text format, which is exactly the
type's plaintext text I/O. Binary COPY (``copy_records_to_table``) is the
exception: it needs a binary codec and would move envelopes, not text.

Keys: ``asyncpg.create_pool(..., setup=pool_setup(current_keys))`` sets them
whenever a connection is acquired; the pool's default reset on release
(``Connection.reset()``: ROLLBACK if needed, then ``RESET ALL``) clears them.
A custom ``reset=`` callback replaces ``RESET ALL``: have it call
:func:`clear_keys` (or ``conn.reset()``)."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from . import CLEAR_KEYS_SQL, Keys, key_settings, set_keys_sql

__all__ = ["set_keys", "clear_keys", "pool_setup"]


async def set_keys(conn: Any, keys: Keys, *, local: bool = False) -> None:
    """Sets (``keys=None``: clears) the keys of an asyncpg connection with one
    parameterised ``set_config`` statement. ``local=True`` for the current
    transaction only (transaction-mode poolers)."""
    await conn.execute(set_keys_sql("numeric_dollar", local=local), *key_settings(keys))


async def clear_keys(conn: Any) -> None:
    await conn.execute(CLEAR_KEYS_SQL)


def pool_setup(keys_provider: Callable[[], Keys]) -> Callable[[Any], Awaitable[None]]:
    """A ``setup=`` callback for ``asyncpg.create_pool`` that sets the keys
    ``keys_provider()`` returns (e.g. from a contextvar of the current
    request) on every acquired connection."""

    async def setup(conn: Any) -> None:
        await set_keys(conn, keys_provider())

    return setup
