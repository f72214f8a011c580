#!/usr/bin/env bash
# The guide cannot rot: every ```sql block of README.md runs, in order, in one
# psql session against a throwaway server, and must succeed.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/pg.sh
trap 'pg_stop it_readme' EXIT
pg_start it_readme 55435

sql=$(mktemp)
awk '/^```sql$/ {on=1; next} /^```$/ {on=0} on' README.md >"$sql"
blocks=$(grep -c '^```sql$' README.md)
echo "readme: running $blocks SQL blocks ($(wc -l <"$sql") lines) from README.md"
[ "$blocks" -ge 8 ] || { echo "readme: expected at least 8 SQL blocks"; exit 1; }
psql -X -q -v ON_ERROR_STOP=1 -c 'CREATE DATABASE readme'
psql -X -q -v ON_ERROR_STOP=1 -d readme -f "$sql" >/dev/null
echo "readme: all SQL examples ran"
rm -f "$sql"
