"""Replays a whole `tvetl run` warehouse load, statement by statement.

    bench/.venv/bin/python bench/load_replay.py LAKE [--sql-dir DIR] [--memory-limit 320MB]
                                                     [--threads 2] [--explain TEXT]

LAKE is a lake that `tvetl run` wrote (e.g. /tmp/bench/lake-1000000). Into a
fresh database, with the local warehouse's settings (memory limit, threads,
no insertion order, core ids uncompressed, session-temporary staging tables),
it loads the lake's staged channels, demographics and sessions as tvetl does:
each load one transaction of its copy-in and its infra/sql/load_*.sql, then
the rebuild of the pending analytics days in one more. It prints the CPU
seconds (getrusage, all threads) of every statement that took 0.01 s or
more, the load's total and the process's peak RSS.

It needs no ingest, so it is the quick way to try a change to the load's SQL:
copy infra/sql, edit it, and pass the copy as --sql-dir. --explain prints
DuckDB's EXPLAIN ANALYZE profile of the statements that start with TEXT, as
they run: with the staging tables' temporaries in their place (e.g.
"DELETE FROM staging_viewing_sessions"). A statement that fails stops the replay
(exit 2), naming the statement, as an out-of-memory load of tvetl does.

This is the Python package's DuckDB, not the one built into tvetl: the same
version, but compiled differently: in session 22 a whole load cost 5-13%
less CPU here than in tvetl, and one aggregate query 20-30% less. Compare
replays with replays.
"""
import argparse
import glob
import os
import re
import resource
import sys
import tempfile

import duckdb

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
from merge_replay import MEMORY_LIMIT, THREADS, cpu, engine_settings, schema  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# source folder in the lake -> (staging table, load file)
LOADS = (("channels", "channels", "load_channels.sql"),
         ("demographics", "demographics", "load_demographics.sql"),
         ("viewership", "viewing_sessions", "load_viewing_sessions.sql"))


def split_statements(sql):
    """As tvetl_core::warehouse::split_statements: `;` ends a statement at the
    end of a line, and `--` comment lines are dropped."""
    statements, current = [], []
    for line in sql.splitlines():
        text = line.strip()
        if not text or text.startswith("--"):
            continue
        current.append(line)
        if text.endswith(";"):
            statements.append("\n".join(current).strip().rstrip(";").strip())
            current = []
    if "".join(current).strip():
        statements.append("\n".join(current).strip())
    return statements


def read_sql(sql_dir, name):
    """A SQL file with its `-- @include analytics_days.sql` line expanded."""
    text = open(os.path.join(sql_dir, name)).read()
    days = open(os.path.join(sql_dir, "analytics_days.sql")).read()
    return text.replace("-- @include analytics_days.sql\n", days)


def local_staging(sql):
    """The session's temporary staging tables in place of the persistent ones."""
    for _, table, _ in LOADS:
        sql = re.sub(r"(?<![\w.])staging\.%s(?!\w)" % table, "staging_" + table, sql)
    return sql


class Replay:
    def __init__(self, conn, explain):
        self.conn, self.explain, self.total = conn, explain, 0.0

    def run(self, sql):
        profile = self.explain is not None and sql.startswith(self.explain)
        start = cpu()
        try:
            result = self.conn.execute(("EXPLAIN ANALYZE " if profile else "") + sql).fetchall()
        except duckdb.Error as e:
            print(f"FAILED after {cpu() - start:.2f} CPU s: {e}\n  in: {sql}", flush=True)
            sys.exit(2)
        spent = cpu() - start
        self.total += spent
        if profile:
            print(result[0][1])
        if spent >= 0.01:
            print(f"{spent:8.2f} CPU s  {' '.join(sql.split())[:100]}", flush=True)

    def transaction(self, statements):
        self.run("BEGIN")
        for statement in statements:
            self.run(statement)
        self.run("COMMIT")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lake")
    parser.add_argument("--sql-dir", default=os.path.join(HERE, "..", "infra", "sql"))
    parser.add_argument("--memory-limit", default=MEMORY_LIMIT)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--explain", metavar="TEXT")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        conn = duckdb.connect(os.path.join(work, "replay.duckdb"))
        conn.execute(engine_settings(args.memory_limit, args.threads) + f"; SET temp_directory = '{work}/spill'")
        replay = Replay(conn, args.explain)
        conn.execute(schema(os.path.join(args.sql_dir, "schema.sql")))
        for _, table, _ in LOADS:
            conn.execute(f"CREATE TEMP TABLE staging_{table} AS SELECT * FROM staging.{table} WITH NO DATA")
        for load_id, (folder, table, sql_file) in enumerate(LOADS, start=1):
            files = sorted(glob.glob(os.path.join(args.lake, "staging", folder, "**", "*.parquet"), recursive=True))
            if not files:
                continue
            copy = f"INSERT INTO staging_{table} SELECT * FROM read_parquet({files!r}, hive_partitioning = false)"
            load = split_statements(read_sql(args.sql_dir, sql_file).replace("{load_id}", str(load_id)))
            replay.transaction([copy] + [local_staging(s) for s in load])
        replay.transaction(split_statements(read_sql(args.sql_dir, "analytics_pending.sql")))
        start = cpu()
        conn.close()
        replay.total += cpu() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"load: {replay.total:.2f} CPU s (closing included); process: {cpu():.2f} CPU s, peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
