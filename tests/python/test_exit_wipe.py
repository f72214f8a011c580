"""The key wipe at backend exit really runs, with the library preloaded.

`_PG_init` runs in the postmaster when the library is preloaded, and every
child discards the postmaster's exit callbacks (`on_exit_reset`), so a
registration made there never fires. gdb attaches to a real backend, breaks
on the wipe function, and the session then ends normally.
"""

import subprocess
import time
from pathlib import Path

import psycopg

LIB = "/usr/lib/postgresql/15/lib/pazpaz_crypto.so"


def wipe_symbol() -> str:
    out = subprocess.run(["nm", LIB], check=True, capture_output=True, text=True).stdout
    names = [line.split()[-1] for line in out.splitlines() if "wipe_at_exit" in line]
    assert len(names) == 1, names
    return names[0]


def session_exit_hits_wipe(cluster, db, set_key: bool) -> bool:
    conn = psycopg.connect(cluster.dsn(db), autocommit=True)
    if set_key:
        conn.execute("SELECT set_config('pazpaz.encryption_key', generate_encryption_key(), false)")
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    gdb = subprocess.Popen(
        ["gdb", "-q", "-nx", "-batch", "-p", str(pid), "-ex", "set pagination off",
         "-ex", f"break {wipe_symbol()}", "-ex", "continue", "-ex", "detach"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Wait until gdb has attached and let the process run again (its output
    # is block-buffered in a pipe, so /proc tells).
    deadline = time.time() + 90
    while time.time() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        tracer = int(next(l for l in status.splitlines() if l.startswith("TracerPid:")).split()[1])
        state = next(l for l in status.splitlines() if l.startswith("State:")).split()[1]
        if tracer and state != "t":
            break
        time.sleep(0.2)
    time.sleep(1)
    conn.close()  # the backend exits normally: proc_exit runs its callbacks
    out = gdb.communicate(timeout=60)[0]
    assert "Breakpoint 1 at" in out, out[-2000:]
    return "Breakpoint 1," in out


def test_backend_exit_runs_the_wipe(cluster, db):
    assert session_exit_hits_wipe(cluster, db, set_key=True)


def test_no_callback_without_a_key(cluster, db):
    # Control: the breakpoint is real, and a backend that never held a key
    # registers nothing.
    assert not session_exit_hits_wipe(cluster, db, set_key=False)
