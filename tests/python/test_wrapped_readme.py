"""The README's wrapped-key guide cannot rot: its production `postgresql.conf`
block (with the test's own KEK command in place of the example path) starts
a server that requires wrapped keys, and every ```sql kek block of the
README runs there, in order, in one session. (Plain ```sql blocks run on a
server without a KEK: tests/integration/readme.sh.)"""

import re
import textwrap

import psycopg
import pytest

from conftest import ROOT
from wrapped_support import PG_BASE, connect, kek_path, new_ring, remove, start, unique, unwrap, write_kek_file

README = (ROOT / "README.md").read_text()
pytestmark = pytest.mark.every_version


def production_conf() -> list[str]:
    block = re.search(r"^Production setup .*?^```\n(.*?)^```$", README, flags=re.S | re.M).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def kek_blocks() -> list[str]:
    return [textwrap.dedent(b) for b in re.findall(r"^ *```sql kek\n(.*?)^ *```$", README, flags=re.S | re.M)]


def test_production_setup_and_the_wrapped_key_guide():
    conf = production_conf()
    assert "shared_preload_libraries = 'pazpaz_crypto'" in conf
    assert "pazpaz.require_wrapped_keys = on" in conf
    assert any(c.startswith("pazpaz.kek_command = ") for c in conf)
    blocks = kek_blocks()
    assert len(blocks) >= 3
    name = unique("wk_readme")
    ring = new_ring("k1", "k2", current="k2")
    path = write_kek_file(kek_path(name), ring)
    script = PG_BASE / f"{name}.kek.sh"
    script.write_text(f"#!/bin/sh\nexec cat {path}\n")
    script.chmod(0o755)
    lines = [re.sub(r"^pazpaz\.kek_command = .*", f"pazpaz.kek_command = '{script}'", c) for c in conf]
    c = start(name, *lines)
    try:
        db = c.create_db()
        with connect(c, db) as conn:
            for b in blocks:
                conn.execute(b)
            # The guide's promise: keys come wrapped, raw ones are refused.
            w = conn.execute("SELECT generate_wrapped_encryption_key()").fetchone()[0]
            conn.execute("SELECT set_config('pazpaz.encryption_key', %s, false)", [w])
            assert conn.execute("SELECT decrypt_field(encrypt_field('ok'))").fetchone()[0] == "ok"
            unwrapped = len(unwrap(w, ring)) == 32
            assert unwrapped
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT set_config('pazpaz.encryption_key', generate_encryption_key(), false)")
    finally:
        remove(name)
        script.unlink(missing_ok=True)
