"""The guide cannot rot: every ```sql block of README.md runs, in order, in
one psql session against a throwaway server, and must succeed."""

import re

import pytest

from conftest import ROOT, start_cluster, unique_name


@pytest.fixture(scope="module")
def readme_server():
    c = start_cluster(unique_name("it_readme"))
    yield c
    c.remove()


def sql_blocks(text: str) -> list[str]:
    # The same blocks as awk '/^```sql$/ {on=1; next} /^```$/ {on=0} on'.
    return re.findall(r"^```sql\n(.*?)^```$", text, flags=re.S | re.M)


def test_every_sql_block_of_the_readme_runs(readme_server):
    blocks = sql_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 8, f"expected at least 8 SQL blocks, found {len(blocks)}"
    script = readme_server.workdir() / "readme.sql"
    script.write_text("".join(blocks))
    r = readme_server.psql("-q", "-v", "ON_ERROR_STOP=1", "-c", "CREATE DATABASE readme")
    assert r.returncode == 0, r.stderr
    r = readme_server.psql("-q", "-v", "ON_ERROR_STOP=1", "-d", "readme", "-f", script)
    assert r.returncode == 0, f"README SQL failed:\n{r.stderr[-3000:]}"
