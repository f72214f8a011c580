"""A build compiled for a CPU feature this machine lacks (as when a library
built for a newer machine is copied to an older one) refuses to load with an
error naming the feature, instead of dying of SIGILL on the first key and
taking every session through crash recovery (src/cpu_check.c).

The extension is built once more, for this CPU plus one feature it lacks, in
its own target directory (a few minutes), and loaded from a private copy of
PostgreSQL's layout (scripts/pg.sh use_package_overlay). The feature has to
be one this CPU lacks, which on current CPUs means one compilers rarely emit
(TBM, SSE4a), so the case that matters in practice (AVX-512 code on an AVX2
machine) is covered by disassembly: nothing that runs before the check, in
either build, uses instructions beyond baseline x86_64.
"""

import os
import platform
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from conftest import ROOT, PG_BASE, Cluster, free_port, host_path, pg_config, pg_tool, run_pg, unique_name

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64",
                                reason="the CPU check is x86_64 code (a no-op elsewhere)")

# Features Rust can compile for, with the name /proc/cpuinfo gives them (TBM
# and SSE4a are AMD-only, and TBM was dropped after Bulldozer).
CANDIDATES = [("tbm", "tbm"), ("sse4a", "sse4a"), ("avx512f", "avx512f"),
              ("avx512vp2intersect", "avx512_vp2intersect")]

# Beyond baseline x86_64: VEX/EVEX (v…) and AVX-512 mask (k…) instructions,
# YMM/ZMM/mask registers, and the SSSE3/SSE4/AES/CLMUL/POPCNT/LZCNT/BMI/
# MOVBE/ADX instructions compilers emit when those features are enabled.
BEYOND_BASELINE = re.compile(
    r"%[yz]mm|%k[0-7]|:\s+(v|k)[a-z]|:\s+(aes|pclmul|pshufb|palignr|ptest|pblend|pmins|pmaxs|pminu|pmaxu|"
    r"pinsr[bdq]|pextr[bdq]|pmovsx|pmovzx|pmulld|pcmpeqq|pcmpgtq|pcmp[ei]str|crc32|round|dpp|popcnt|lzcnt|"
    r"tzcnt|andn|bextr|blsi|blsr|blsmsk|bzhi|pdep|pext|mulx|rorx|sarx|shlx|shrx|movbe|adcx|adox)")


def missing_feature() -> str:
    flags = set(Path("/proc/cpuinfo").read_text().split("\nflags")[1].split("\n")[0].split(":")[1].split())
    for rust, cpuinfo in CANDIDATES:
        if cpuinfo not in flags:
            return rust
    pytest.fail("this CPU has every candidate feature; add one it lacks to CANDIDATES")


@pytest.fixture(scope="module")
def mismatch():
    """(feature, package dir) of a build for this CPU plus a feature it lacks."""
    feature = missing_feature()
    pkg = ROOT / "target/package-cpu-mismatch"
    log = ROOT / "target/cpu-mismatch.log"
    env = {**os.environ, "CARGO_TARGET_DIR": str(ROOT / "target/cpu-mismatch"),
           "RUSTFLAGS": f"-C target-cpu=native -C target-feature=+{feature}"}
    with open(log, "w") as out:
        built = subprocess.run(["cargo", "pgrx", "package", "--pg-config", pg_tool("pg_config")[-1], "--out-dir", str(pkg)],
                               cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    assert built.returncode == 0, log.read_text()[-3000:]
    return feature, pkg


def libraries(mismatch):
    installed = host_path(pg_config("--pkglibdir")) / "pazpaz_crypto.so"
    (built,) = mismatch[1].rglob("pazpaz_crypto.so")
    return [installed.resolve(), built.resolve()]


def insns(so: Path, function: str) -> list[str]:
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", f"--disassemble={function}", str(so)],
                         check=True, capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if re.match(r"^ +[0-9a-f]+:", line)]


def beyond_baseline(lines: list[str]) -> list[str]:
    return [line for line in lines if BEYOND_BASELINE.search(line)]


def first_call_target(so: Path) -> str:
    """The function the first call of _PG_init reaches: direct, or through a
    GOT slot filled by a relocation (RELATIVE: the target's address;
    GLOB_DAT: its name)."""
    line = next(l for l in insns(so, "_PG_init") if re.search(r"\scall", l))
    m = re.search(r"<([A-Za-z_][A-Za-z0-9_.]*)>$", line)
    if m:
        return m.group(1)
    got = re.search(r"# ([0-9a-f]+)", line)
    assert got, line
    relocs = subprocess.run(["readelf", "-rW", str(so)], check=True, capture_output=True, text=True).stdout
    rel = next((r for r in relocs.splitlines() if r.split() and r.split()[0].lstrip("0") == got.group(1)), "")
    if "pazpaz_require_cpu_features" in rel:
        return "pazpaz_require_cpu_features"
    if "R_X86_64_RELATIVE" in rel:
        addr = rel.split()[-1].lstrip("0")
        syms = subprocess.run(["nm", str(so)], check=True, capture_output=True, text=True).stdout
        for s in syms.splitlines():
            f = s.split()
            if len(f) == 3 and f[0].lstrip("0") == addr:
                return f[2]
    return "?"


def test_the_first_call_of_pg_init_is_the_c_check(mismatch):
    for so in libraries(mismatch):
        assert first_call_target(so) == "pazpaz_require_cpu_features", so
        lines = insns(so, "_PG_init")
        until_call = lines[:next(i for i, l in enumerate(lines) if re.search(r"\scall", l)) + 1]
        assert beyond_baseline(until_call) == [], so


def test_code_before_the_check_is_baseline_x86_64(mismatch):
    for so in libraries(mismatch):
        magic = insns(so, "Pg_magic_func")  # PostgreSQL calls it before _PG_init
        assert magic, so
        assert beyond_baseline(magic) == [], so
        c_code = [l for f in ("pazpaz_require_cpu_features", "pazpaz_require_cpu_features.cold",
                              "pazpaz_cpu_lookup", "pazpaz_cpu_has") for l in insns(so, f)]
        assert len(c_code) > 50, f"{so}: the C check is not in the library"
        assert beyond_baseline(c_code) == [], so


def start_overlay(pkg: Path, name: str, *conf: str) -> Cluster:
    """A server that loads the build in `pkg` (scripts/pg.sh's overlay)."""
    port = free_port()
    run_pg(f"use_package_overlay {pkg} {name}-root; pg_start {name} {port} " + " ".join(shlex.quote(c) for c in conf))
    return Cluster(name, port)


def stop_overlay(name: str) -> None:
    run_pg(f"pg_stop {name}")
    for d in (PG_BASE / name, PG_BASE / f"{name}-root"):
        shutil.rmtree(d, ignore_errors=True)


def test_a_backend_loading_it_gets_an_error_and_the_server_stays_up(mismatch):
    feature, pkg = mismatch
    want = f"this build of pazpaz_crypto needs CPU features this machine lacks: {feature}"
    name = unique_name("cpu_mismatch")
    c = start_overlay(pkg, name, "shared_preload_libraries = ''")
    try:
        with psycopg.connect(c.dsn(), autocommit=True) as conn:
            with pytest.raises(psycopg.Error) as e:
                conn.execute("CREATE EXTENSION pazpaz_crypto")
            assert e.value.sqlstate == "0A000"
            assert want in e.value.diag.message_primary
            assert "scripts/package.sh" in (e.value.diag.message_hint or "")
        with psycopg.connect(c.dsn(), autocommit=True) as conn:
            with pytest.raises(psycopg.Error) as e:
                conn.execute("LOAD 'pazpaz_crypto'")
            assert want in e.value.diag.message_primary
        with psycopg.connect(c.dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert "terminated by signal" not in c.log.read_text()
    finally:
        stop_overlay(name)


def test_a_server_preloading_it_does_not_start_and_says_why(mismatch):
    feature, pkg = mismatch
    want = f"this build of pazpaz_crypto needs CPU features this machine lacks: {feature}"
    name = unique_name("cpu_mismatch_pre")
    try:
        with pytest.raises(subprocess.CalledProcessError):
            start_overlay(pkg, name)
        log = (PG_BASE / name / "server.log").read_text()
        assert log.count(want) == 1, log[-2000:]
    finally:
        stop_overlay(name)
