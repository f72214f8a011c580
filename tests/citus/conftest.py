"""A Citus formation for the suite: a coordinator and two workers on
loopback, each started by scripts/pg.sh with Citus and pazpaz_crypto
preloaded, from the private installation scripts/test_citus.sh prepares
(PAZPAZ_OVERLAY_BIN). Every node logs every statement, so the tests can read
what travelled to each node."""

import importlib.util
import os
import sys
from pathlib import Path

import psycopg
import pytest

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("pg_harness", HERE.parent / "python" / "conftest.py")
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)
# The wrapped-key helpers of the Python suite import its conftest by name.
sys.path.insert(0, str(HERE.parent / "python"))
_this = sys.modules.get("conftest")
sys.modules["conftest"] = harness
import wrapped_support as ws  # noqa: E402
if _this is not None:
    sys.modules["conftest"] = _this

DB = "clinic"

NODE_CONF = (
    # pazpaz_crypto after pg_stat_statements: its utility hook masks the
    # value of a key SET before pg_stat_statements stores the text.
    "shared_preload_libraries = 'citus,pg_stat_statements,pazpaz_crypto'",
    # The default 'top': with 'all', the coordinator would also store the
    # SET LOCAL statements set_keys runs nested, whose text Citus forwards
    # (README).
    "pg_stat_statements.track = 'top'",
    "max_prepared_transactions = 64",      # Citus commits multi-shard writes in two phases
    "wal_level = logical",
    "log_statement = 'all'",
    "log_min_error_statement = 'error'",
    "log_line_prefix = '%m [%p] %a '",
)


class Formation:
    def __init__(self, coordinator, workers, ring):
        self.coordinator, self.workers = coordinator, workers
        self.ring = ring  # the KEK ring every node loaded

    @property
    def nodes(self):
        return [self.coordinator, *self.workers]

    def connect(self, node=None, **kw):
        node = node or self.coordinator
        return psycopg.connect(node.dsn(DB), autocommit=True, **kw)

    def logs(self) -> dict:
        return {n.name: n.log.read_text(errors="replace") for n in self.nodes}

    def worker_logs(self) -> str:
        return "\n".join(w.log.read_text(errors="replace") for w in self.workers)

    def all_logs(self) -> str:
        return "\n".join(self.logs().values())


@pytest.fixture(scope="session")
def formation():
    if not os.environ.get("PAZPAZ_OVERLAY_BIN"):
        pytest.exit("run the Citus suite with scripts/test_citus.sh (it needs PAZPAZ_CITUS_DIR)", returncode=2)
    made = []
    ring = ws.new_ring("k1")
    kek = ws.write_kek_file(harness.PG_BASE / f"citus_{os.getpid()}.kek.json", ring)
    conf = (*NODE_CONF, f"pazpaz.kek_file = '{kek}'", "pazpaz.require_wrapped_keys = on")
    try:
        for role in ("coord", "worker1", "worker2"):
            made.append(harness.start_cluster(harness.unique_name(f"citus_{role}"), None, *conf))
        for node in made:
            with psycopg.connect(node.dsn(), autocommit=True) as c:
                c.execute(f"CREATE DATABASE {DB}")
            with psycopg.connect(node.dsn(DB), autocommit=True) as c:
                c.execute("CREATE EXTENSION citus")
                c.execute("CREATE EXTENSION pg_stat_statements")
        coordinator, workers = made[0], made[1:]
        with psycopg.connect(coordinator.dsn(DB), autocommit=True) as c:
            c.execute("SELECT citus_set_coordinator_host('127.0.0.1', %s)", (coordinator.port,))
            for w in workers:
                c.execute("SELECT citus_add_node('127.0.0.1', %s)", (w.port,))
            c.execute("CREATE EXTENSION pazpaz_crypto")
        yield Formation(coordinator, workers, ring)
    finally:
        for node in reversed(made):
            node.remove()
        kek.unlink(missing_ok=True)
