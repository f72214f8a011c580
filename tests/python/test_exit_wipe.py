"""The key wipe at backend exit really runs, with the library preloaded.

`_PG_init` runs in the postmaster when the library is preloaded, and every
child discards the postmaster's exit callbacks (`on_exit_reset`), so a
registration made there never fires. gdb attaches to a real backend, breaks
on the wipe function, and the session then ends normally.
"""

import subprocess
import tempfile
import time
from pathlib import Path

import psycopg


def mapped_library(pid: int) -> tuple[Path, Path]:
    """The pazpaz_crypto.so a backend has mapped, as the host reaches it,
    and the backend's root directory (a chroot for some versions)."""
    root = Path(f"/proc/{pid}/root")
    paths = {line.split(None, 5)[5] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
             if line.rstrip().endswith("/pazpaz_crypto.so")}
    assert len(paths) == 1, paths
    return root / paths.pop().lstrip("/"), root


def wipe_symbol(lib: Path) -> str:
    out = subprocess.run(["nm", str(lib)], check=True, capture_output=True, text=True).stdout
    names = [line.split()[-1] for line in out.splitlines() if "wipe_at_exit" in line]
    assert len(names) == 1, names
    return names[0]


def session_exit_hits_wipe(cluster, db, set_key: bool) -> bool:
    conn = psycopg.connect(cluster.dsn(db), autocommit=True)
    if set_key:
        conn.execute("SELECT set_config('pazpaz.encryption_key', generate_encryption_key(), false)")
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    lib, root = mapped_library(pid)
    ready = Path(tempfile.mkdtemp()) / "breakpoint_set"
    gdb = subprocess.Popen(
        ["gdb", "-q", "-nx", "-batch", "-ex", f"set sysroot {root.resolve()}", "-p", str(pid),
         "-ex", "set pagination off", "-ex", f"break {wipe_symbol(lib)}", "-ex", f"shell touch {ready}",
         "-ex", "continue", "-ex", "detach"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Wait until gdb has set the breakpoint (it says so with a file: its
    # output is block-buffered in a pipe) and let the process run again.
    deadline = time.time() + 90
    while time.time() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        tracer = int(next(l for l in status.splitlines() if l.startswith("TracerPid:")).split()[1])
        state = next(l for l in status.splitlines() if l.startswith("State:")).split()[1]
        if ready.exists() and tracer and state != "t":
            break
        assert gdb.poll() is None, gdb.communicate()[0][-2000:]
        time.sleep(0.05)
    else:
        raise AssertionError("gdb did not attach within 90 s")
    ready.unlink()
    ready.parent.rmdir()
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
