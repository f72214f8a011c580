"""Client helpers for the ``pazpaz_crypto`` PostgreSQL extension.

The extension encrypts inside PostgreSQL with keys that the application hands
to its own session through three settings (GUCs). This package holds the few
lines every application would otherwise copy:

- :class:`Keyring` and :func:`key_settings`: the values of the three settings
  for "no key", one key, or a keyring with a write version;
- :func:`set_keys_sql` / :func:`set_keys`: the log-safe way to set them, a
  parameterised ``set_config`` whose setting names are literals (the server's
  log filter recognises a key-setting statement by those names and redacts its
  parameters; a ``SET`` with the key spelled out, or a ``set_config($1, $2)``
  with the name as a parameter, is not log-safe);
- :mod:`pazpaz_crypto.asyncpg`: the same for asyncpg connections and pools;
- :mod:`pazpaz_crypto.sqlalchemy`: the ``EncryptedText`` column type and pool
  listeners that set keys on checkout (or per transaction behind PgBouncer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Tuple, Union

__all__ = [
    "KEY",
    "KEYS",
    "KEY_VERSION",
    "Keyring",
    "Keys",
    "key_settings",
    "set_keys_sql",
    "CLEAR_KEYS_SQL",
    "set_keys",
]

KEY = "pazpaz.encryption_key"
KEYS = "pazpaz.encryption_keys"
KEY_VERSION = "pazpaz.encryption_key_version"
_SETTINGS = (KEY, KEYS, KEY_VERSION)


@dataclass(frozen=True)
class Keyring:
    """Several key versions, for rotation: ``keys`` maps a version name to a
    base64 AES-256 key; ``current`` is the version new writes use."""

    keys: Mapping[str, str] = field(repr=False)  # never in a traceback or log
    current: str

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise ValueError(f"current version {self.current!r} is not one of {sorted(self.keys)}")


#: What a keys provider returns: ``None`` (no key), a base64 key, or a Keyring.
Keys = Optional[Union[str, Keyring]]


def key_settings(keys: Keys) -> Tuple[str, str, str]:
    """Values for (pazpaz.encryption_key, pazpaz.encryption_keys,
    pazpaz.encryption_key_version).

    All three are always set, '' meaning unset: a pooled connection that goes
    from one user's keyring to another user's single key (or to none) then
    never keeps a setting of the previous user, and never has both a key and
    a keyring (which the extension refuses at use)."""
    if keys is None:
        return ("", "", "")
    if isinstance(keys, str):
        return (keys, "", "")
    if isinstance(keys, Keyring):
        return ("", json.dumps(dict(keys.keys)), keys.current)
    raise TypeError(f"keys must be None, a base64 key (str) or a Keyring, not {type(keys).__name__}")


def _placeholders(paramstyle: str) -> Tuple[str, str, str]:
    if paramstyle in ("format", "pyformat"):
        return ("%s", "%s", "%s")
    if paramstyle == "numeric_dollar":  # asyncpg, SQLAlchemy's asyncpg adapter
        return ("$1", "$2", "$3")
    if paramstyle == "qmark":
        return ("?", "?", "?")
    if paramstyle == "numeric":
        return (":1", ":2", ":3")
    raise ValueError(f"unsupported paramstyle {paramstyle!r}")


def set_keys_sql(paramstyle: str = "format", *, local: bool = False, citus: bool = False) -> str:
    """One statement that sets all three settings from three parameters
    (see :func:`key_settings`). ``local=True`` (``set_config(…, true)``) keeps
    them for the current transaction only: the form for a transaction-mode
    pooler, where the next transaction may run on another server connection
    and this server connection may next serve another client.

    ``citus=True``: the extension's ``set_keys(…, true)``, whose ``SET LOCAL``
    statements Citus forwards to every node of the transaction (call it inside
    a transaction block; implies ``local``)."""
    flag = "true" if local else "false"
    if citus:
        a, b, c = _placeholders(paramstyle)
        return f"SELECT set_keys({a}, {b}, {c}, true)"
    return "SELECT " + ", ".join(
        f"set_config('{name}', {ph}, {flag})" for name, ph in zip(_SETTINGS, _placeholders(paramstyle))
    )


#: Clears the keys of the session (no parameters, so nothing to log).
CLEAR_KEYS_SQL = "SELECT " + ", ".join(f"set_config('{name}', '', false)" for name in _SETTINGS)


def set_keys(conn: Any, keys: Keys, *, local: bool = False, citus: bool = False) -> None:
    """Sets (or, with ``keys=None``, clears) the session's keys on a psycopg 3
    (or any ``format``-paramstyle DB-API) connection.

    Mind transactions: a setting made with ``local=False`` inside a transaction
    that is rolled back is undone with it; one made with ``local=True`` ends
    with the transaction, and outside a transaction block (autocommit) with
    the statement itself."""
    cur = conn.cursor()
    try:
        cur.execute(set_keys_sql("format", local=local, citus=citus), key_settings(keys))
    finally:
        cur.close()
