"""What a wrapped key leaves behind, on a server that logs everything it can
(log_statement = all, durations, auto_explain verbose with analyze and nested
statements, pg_stat_statements tracking utility statements): sessions set
WRAPPED keys with literal SETs (the form the README advises against, and
exactly what pg_stat_statements keeps verbatim), run work and errors under
them, and a superuser wraps existing raw keys with wrap_encryption_key,
literally and as a bind parameter.

Afterwards the server log and pg_stat_statements may hold wrapped forms,
never a raw data key (recovered here by unwrapping with the test's copy of
the KEK) in any spelling, nor a KEK. A second server with another KEK under
the same id cannot use a wrapped key taken from the first one's
pg_stat_statements."""

import base64
import json
import re
import secrets

import psycopg
import pytest

from wrapped_support import (
    connect, kek_path, leaks, new_ring, remove, require_libraries, ring_spellings, spellings, start, unique, unwrap,
    write_kek_file,
)

pytestmark = pytest.mark.every_version

LOGGING = [
    "shared_preload_libraries = 'pazpaz_crypto,auto_explain,pg_stat_statements'",
    "log_statement = all",
    "log_min_duration_statement = 0",
    "log_min_error_statement = info",
    "log_parameter_max_length = -1",
    "log_parameter_max_length_on_error = -1",
    "auto_explain.log_min_duration = 0",
    "auto_explain.log_verbose = on",
    "auto_explain.log_analyze = on",
    "auto_explain.log_nested_statements = on",
    "pg_stat_statements.track = all",
    "pg_stat_statements.track_utility = on",
]


@pytest.fixture(scope="module")
def servers():
    require_libraries("auto_explain", "pg_stat_statements")
    names = [unique("wk_log"), unique("wk_other")]
    rings = [new_ring("k1"), new_ring("k1")]  # same id, different keys
    try:
        cs = []
        for name, ring in zip(names, rings):
            path = write_kek_file(kek_path(name), ring)
            cs.append(start(name, *LOGGING, f"pazpaz.kek_file = '{path}'"))
            with connect(cs[-1]) as conn:
                conn.execute("CREATE EXTENSION pazpaz_crypto")
                conn.execute("CREATE EXTENSION pg_stat_statements")
        yield cs, rings
    finally:
        for name in names:
            remove(name)


def work(conn, marker):
    """Encryption, decryption, nested statements and errors under the
    session's keys."""
    sealed = conn.execute(f"SELECT encrypt_field('{marker}')").fetchone()[0]
    assert conn.execute("SELECT decrypt_field(%s)", [sealed]).fetchone()[0] == marker
    conn.execute("DO $$BEGIN PERFORM decrypt_field(encrypt_field('nested')); END$$")
    with pytest.raises(psycopg.Error):
        conn.execute("SELECT decrypt_field('\\x00'::bytea)")
    return sealed


def test_literal_wrapped_keys_leave_no_raw_key(servers):
    (c, other), (ring, other_ring) = servers
    wrapped, raws = [], []
    with connect(c) as admin:
        wrapped += [admin.execute("SELECT generate_wrapped_encryption_key()").fetchone()[0] for _ in range(4)]
        # Existing raw keys wrapped once by a superuser: the literal form (a
        # raw key in statement text) and the recommended bind parameter.
        raw_literal, raw_param = (base64.b64encode(secrets.token_bytes(32)).decode() for _ in range(2))
        raws += [base64.b64decode(raw_literal), base64.b64decode(raw_param)]
        wrapped.append(admin.execute(f"SELECT wrap_encryption_key('{raw_literal}')").fetchone()[0])
        wrapped.append(admin.execute("SELECT wrap_encryption_key(%s)", [raw_param]).fetchone()[0])
        wrapped.append(admin.execute(f"SELECT rewrap_encryption_key('{wrapped[0]}')").fetchone()[0])
    raws += [unwrap(w, ring) for w in wrapped]

    with connect(c) as s:  # literal SET of a single key
        s.execute(f"SET pazpaz.encryption_key = '{wrapped[0]}'")
        sealed = work(s, "marker-one")
    with connect(c) as s:  # literal keyring of one tenant
        s.execute("SET pazpaz.encryption_keys = '" + json.dumps({"t42.v1": wrapped[1], "t42.v2": wrapped[2]}) + "'")
        s.execute("SET pazpaz.encryption_key_version = 't42.v2'")
        work(s, "marker-two")
    with connect(c) as s:  # per transaction, and a literal set_config
        with s.transaction():
            s.execute(f"SET LOCAL pazpaz.encryption_key = '{wrapped[4]}'")
            work(s, "marker-three")
        s.execute(f"SELECT set_config('pazpaz.encryption_key', '{wrapped[5]}', false)")
        work(s, "marker-four")
        # A tampered wrapped key, refused at SET, logged with its statement.
        with pytest.raises(psycopg.errors.DataException):
            s.execute(f"SET pazpaz.encryption_key = '{wrapped[3][:-4]}AAAA'")
    with psycopg.connect(c.dsn(), options=f"-c pazpaz.encryption_key={wrapped[6]}", autocommit=True) as s:
        work(s, "marker-five")

    with connect(c) as admin:
        stats = "\n".join(r[0] for r in admin.execute("SELECT query FROM pg_stat_statements"))
    log = c.log.read_text(errors="replace")
    with connect(c) as admin:
        version = int(admin.execute("SHOW server_version_num").fetchone()[0])
    # The literal SET is in pg_stat_statements verbatim — wrapped — up to
    # PostgreSQL 17; 18 stores SET statements with their constants replaced.
    if version < 180000:
        assert f"SET pazpaz.encryption_key = '{wrapped[0]}'" in stats
    else:
        assert "SET pazpaz.encryption_key = $1" in stats
        assert wrapped[0] not in stats
    assert "wrap_encryption_key($1)" in stats
    # The literal statements were logged, redacted by shape.
    assert "statement: [statement redacted by pazpaz_crypto: it sets a key]" in log
    for where, text in [("server log", log), ("pg_stat_statements", stats)]:
        assert leaks([sp for raw in raws for sp in spellings(raw)], text) == 0, f"a raw data key reached the {where}"
        assert leaks(ring_spellings(ring), text) == 0, f"the KEK reached the {where}"

    # Taken from pg_stat_statements to a server whose KEK k1 is another key:
    # useless there.
    # (On 18 it is not there: taken from the application instead.)
    found = re.search(r"SET pazpaz\.encryption_key = '(pzw1:[^']+)'", stats)
    stolen = found.group(1) if version < 180000 else wrapped[0]
    with connect(other) as s:
        with pytest.raises(psycopg.errors.DataException) as e:
            s.execute("SELECT set_config('pazpaz.encryption_key', %s, false)", [stolen])
        assert e.value.diag.message_primary == (
            'invalid value for pazpaz.encryption_key: Wrapped data key failed to authenticate under '
            'key-encryption key "k1" (wrong key-encryption key or tampering)')
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            s.execute("SELECT decrypt_field(%s)", [sealed])
        # Even its own fresh key cannot read the first server's ciphertext.
        s.execute("SELECT set_config('pazpaz.encryption_key', generate_wrapped_encryption_key(), false)")
        with pytest.raises(psycopg.errors.DataException):
            s.execute("SELECT decrypt_field(%s)", [sealed])
