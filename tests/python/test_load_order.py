"""Why the production setup preloads the library: without it, a key SET
before the library is loaded in a backend is an unprotected placeholder, and
the library says so loudly (a WARNING) when it is loaded. Sessions run in
psql, as an operator would."""

import pytest

from conftest import start_cluster, unique_name


@pytest.fixture(scope="module")
def unloaded():
    # A later shared_preload_libraries line overrides the one pg_start writes.
    c = start_cluster(unique_name("it_load"), None, "shared_preload_libraries = ''")
    r = c.psql("-q", "-v", "ON_ERROR_STOP=1", "-c", "CREATE EXTENSION pazpaz_crypto")
    assert r.returncode == 0, r.stderr
    c.key = c.value("SELECT generate_encryption_key()")
    yield c
    c.remove()


def session(c, script: str) -> str:
    """A psql session with :'key' bound; stdout and stderr together."""
    r = c.psql("-At", "-v", f"key={c.key}", input=script, merge=True)
    return r.stdout


def test_a_key_set_before_loading_is_a_placeholder_and_loading_warns(unloaded):
    key = unloaded.key
    out = session(unloaded, """\
SELECT set_config('pazpaz.encryption_key', :'key', false) IS NOT NULL;
SELECT current_setting('pazpaz.encryption_key') = :'key' AS placeholder_readable;
LOAD 'pazpaz_crypto';
SHOW pazpaz.encryption_key;
SELECT decrypt_field(encrypt_field('works once loaded'));
""")
    lines = out.splitlines()
    assert len(lines) >= 2 and lines[1] == "t", "before the library is loaded, current_setting() returns the key"
    assert out.count("WARNING:  pazpaz.encryption_key was set before the pazpaz_crypto library was loaded") == 1, \
        "loading the library warns about the earlier SET"
    # (booleans first: a failing assertion must not print the key)
    in_output = key in out
    assert not in_output, "the warning does not contain the key"
    assert lines.count("(hidden)") == 1, "after loading, the value is masked"
    assert lines.count("works once loaded") == 1, "and the key works"
    in_log = key in unloaded.log.read_text(errors="replace")
    assert not in_log, "the server log does not contain the key"


def test_alter_role_set_of_a_key_is_refused_once_loaded(unloaded):
    # Without the library in the backend, PostgreSQL stores a role setting of
    # an unknown extension unchecked; once loaded, the check hook refuses it.
    count = ("SELECT count(*) FROM pg_db_role_setting"
             " WHERE array_to_string(setconfig, ',') LIKE 'pazpaz.encryption_key=%';\n")
    try:
        out = session(unloaded, "ALTER ROLE postgres SET pazpaz.encryption_key = :'key';\n" + count)
        assert out.splitlines()[-1] == "1", \
            "a backend without the library stores ALTER ROLE … SET pazpaz.encryption_key"
    finally:
        unloaded.value("ALTER ROLE postgres RESET pazpaz.encryption_key")
    out = session(unloaded, "LOAD 'pazpaz_crypto';\nALTER ROLE postgres SET pazpaz.encryption_key = :'key';\n" + count)
    assert out.count("pazpaz.encryption_key cannot be set from ALTER ROLE") == 1, \
        "with the library loaded, the same ALTER ROLE is refused"
    assert out.splitlines()[-1] == "0", "… and nothing is stored"
    in_output = unloaded.key in out
    assert not in_output, "the refusal does not contain the key"
