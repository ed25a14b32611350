"""CI: the demo's analytics files open in DuckDB (a reader independent of the
Rust `parquet` crate) and hold exactly the rows the demo's report counted.

Usage: duckdb_check.py REPORT.json DIR
"""
import json
import os
import sys

import duckdb

report = json.load(open(sys.argv[1]))
root = sys.argv[2]
rows = report["analytics"]["rows"]
failed = False
for table, want in sorted(rows.items()):
    tdir = os.path.join(root, table)
    if want == 0 and not os.path.isdir(tdir):
        continue
    glob = os.path.join(tdir, "**", "*.parquet")
    got = duckdb.sql(
        f"select count(*) from read_parquet('{glob}', hive_partitioning = true)"
    ).fetchall()[0][0]
    status = "ok" if got == want else "MISMATCH"
    failed |= got != want
    print(f"{table:<18} duckdb {got:>7}  report {want:>7}  {status}")
# The partition columns read as columns, and an analyst's first query runs.
by_region = duckdb.sql(
    "select region, count(*) as sessions, min(date), min(hour) from read_parquet("
    f"'{os.path.join(root, 'session_started', '**', '*.parquet')}', hive_partitioning = true)"
    " where not resumed group by region order by region"
).fetchall()
print("sessions by region:", by_region)
if not by_region or sum(n for _, n, _, _ in by_region) != report["analytics"]["counted"]["sessions"]:
    print("sessions by region do not add up to the sessions the relays counted")
    failed = True
sys.exit(1 if failed else 0)
