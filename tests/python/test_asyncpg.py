"""asyncpg without SQLAlchemy: how `encrypted_text` crosses the wire, and
keys on an asyncpg pool (setup on acquire, the pool's reset on release)."""

import asyncio
import contextvars

import asyncpg
import pytest

from conftest import new_key
from pazpaz_crypto import Keyring
from pazpaz_crypto.asyncpg import clear_keys, pool_setup, set_keys

current_keys: contextvars.ContextVar = contextvars.ContextVar("current_keys", default=None)


def connect_kwargs(cluster, db):
    return dict(host=cluster.host, port=cluster.port, user="postgres", database=db)


@pytest.mark.every_version
def test_encrypted_text_needs_no_codec(cluster, db):
    """asyncpg has no codec for an extension type and falls back to text
    format, which is the type's plaintext I/O: str in, str out, arrays too."""
    async def main():
        c = await asyncpg.connect(**connect_kwargs(cluster, db))
        try:
            await set_keys(c, new_key())
            await c.execute("CREATE TABLE t (id int, v encrypted_text, short encrypted_text(3))")
            await c.executemany("INSERT INTO t VALUES ($1, $2, $3)", [(1, "héllo ✓", "abc"), (2, "", None)])
            assert [tuple(r) for r in await c.fetch("SELECT id, v, short FROM t ORDER BY id")] == \
                [(1, "héllo ✓", "abc"), (2, "", None)]
            assert await c.fetchval("SELECT $1::encrypted_text[]", ["a", "b"]) == ["a", "b"]
            # asyncpg 0.32 crashes (segfault) decoding a text-format array of
            # any type it has no binary codec for when an element is '' (seen
            # with a plain textin/textout type too): aggregate as text[].
            assert await c.fetchval("SELECT array_agg(v::text ORDER BY id) FROM t") == ["héllo ✓", ""]
            with pytest.raises(asyncpg.StringDataRightTruncationError):
                await c.execute("INSERT INTO t VALUES (3, 'x', $1)", "abcd")
            # Binary COPY is the exception: there is no binary text codec.
            with pytest.raises(asyncpg.InternalClientError, match="no binary format encoder"):
                await c.copy_records_to_table("t", records=[(4, "x", None)])
        finally:
            await c.close()

    asyncio.run(main())


def test_binary_codec_moves_envelopes_without_a_key(cluster, db):
    """Registering a binary codec (bytes in, bytes out) switches a connection
    to the envelope: copying encrypted rows with binary COPY needs no key."""
    key = new_key()

    async def main():
        c = await asyncpg.connect(**connect_kwargs(cluster, db))
        try:
            await set_keys(c, key)
            await c.execute("CREATE TABLE src (id int, v encrypted_text); CREATE TABLE dst (LIKE src)")
            await c.executemany("INSERT INTO src VALUES ($1, $2)", [(i, f"note {i} ✓") for i in range(100)])
            await set_keys(c, None)
            await c.set_type_codec("encrypted_text", schema="public", format="binary",
                                   encoder=bytes, decoder=bytes)
            rows = await c.fetch("SELECT id, v FROM src")
            assert all(isinstance(r["v"], bytes) and b"note" not in r["v"] for r in rows)
            await c.copy_records_to_table("dst", records=[tuple(r) for r in rows])
            await c.reset_type_codec("encrypted_text", schema="public")
            await set_keys(c, key)
            assert await c.fetchval("SELECT count(*) FROM dst JOIN src USING (id) WHERE dst.v::text = src.v::text") == 100
        finally:
            await c.close()

    asyncio.run(main())


@pytest.mark.parametrize("reset", ["default", "custom, clears", "custom, forgets to clear"])
def test_pool_keys_on_acquire_cleared_on_release(cluster, db, reset):
    """pool_setup() sets the current user's keys on every acquire. What the
    connection holds when handed out is what the previous release left: the
    default reset (ROLLBACK, RESET ALL) clears keys; a custom reset= replaces
    RESET ALL and must clear them itself."""
    keys_a = Keyring({"v1": new_key(), "v2": new_key()}, current="v2")
    keys_b = Keyring({"v1": new_key(), "v2": new_key()}, current="v2")
    handed_out = []  # encryption_status() of each connection as acquired, before setup

    async def setup(conn):
        handed_out.append(await conn.fetch("SELECT version FROM encryption_status()"))
        await pool_setup(current_keys.get)(conn)

    resets = {
        "default": None,
        "custom, clears": clear_keys,
        "custom, forgets to clear": lambda conn: conn.execute("UNLISTEN *"),
    }

    async def main():
        pool = await asyncpg.create_pool(**connect_kwargs(cluster, db), min_size=1, max_size=1,
                                         setup=setup, reset=resets[reset])
        try:
            current_keys.set(keys_a)
            async with pool.acquire() as c:
                pid = await c.fetchval("SELECT pg_backend_pid()")
                await c.execute("CREATE TABLE notes (v encrypted_text)")
                await c.execute("INSERT INTO notes VALUES ($1)", "A's note")
                await c.execute("BEGIN")  # released inside a transaction

            current_keys.set(keys_b)
            async with pool.acquire() as c:
                assert await c.fetchval("SELECT pg_backend_pid()") == pid
                with pytest.raises(asyncpg.DataError, match="Decryption failed"):
                    await c.fetch("SELECT v FROM notes")

            current_keys.set(None)
            async with pool.acquire() as c:
                with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError, match="pazpaz.encryption_key"):
                    await c.fetch("SELECT v FROM notes")
        finally:
            await pool.close()

    asyncio.run(main())
    assert handed_out[0] == []  # a new connection
    if reset == "custom, forgets to clear":
        assert handed_out[1] != [] and handed_out[2] != []  # the previous user's keys, still there
    else:
        assert handed_out[1:] == [[], []]
