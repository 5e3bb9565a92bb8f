"""Replays the load's MERGE into core against plain inserts of the same rows.

    bench/.venv/bin/python bench/merge_replay.py LAKE [MODE ...]

LAKE is a lake that `tvetl run` wrote (e.g. /tmp/bench/lake-1000000). Each
mode runs in a fresh database with the local warehouse's settings
(MEMORY_LIMIT, THREADS, core ids uncompressed), over the lake's staged sessions
deduplicated by event_id into an empty core, and prints the statement's CPU
seconds (getrusage, all threads). Modes: merge (as loaded), merge_insert_only,
insert_not_exists, insert.
"""
import os
import re
import resource
import sys
import tempfile

import duckdb

HERE = os.path.dirname(os.path.abspath(__file__))
COLUMNS = ("event_id, user_id, device_id, channel_id, program_id, start_time, end_time, event_date, "
           "session_seconds, duration_seconds, platform, source_key, source_version, source_record_no, load_id")
VALUES = ("n.event_id, n.user_id, n.device_id, n.channel_id, n.program_id, n.start_time, n.end_time, "
          "CAST(n.start_time AS DATE), CAST(DATEDIFF('microsecond', n.start_time, n.end_time) AS DOUBLE PRECISION) / 1000000, "
          "n.duration_seconds, n.platform, n.source_key, n.source_version, n.source_record_no, 1")


def loaded_merge():
    """The load's own MERGE statement, over the deduplicated rows."""
    sql = open(os.path.join(HERE, "..", "infra", "sql", "load_viewing_sessions.sql")).read()
    merge = sql[sql.index("MERGE INTO core.viewing_sessions"):]
    merge = merge[:merge.index(";")]
    return merge.replace("USING staging.viewing_sessions n", "USING deduped n").replace("{load_id}", "1")


ON = "USING deduped n ON core.viewing_sessions.event_id = n.event_id"
STATEMENTS = {
    "merge": loaded_merge(),
    "merge_insert_only": f"MERGE INTO core.viewing_sessions {ON} WHEN NOT MATCHED THEN INSERT ({COLUMNS}) VALUES ({VALUES})",
    "insert_not_exists": f"INSERT INTO core.viewing_sessions ({COLUMNS}) SELECT {VALUES} FROM deduped n "
                         "WHERE NOT EXISTS (SELECT 1 FROM core.viewing_sessions c WHERE c.event_id = n.event_id)",
    "insert": f"INSERT INTO core.viewing_sessions ({COLUMNS}) SELECT {VALUES} FROM deduped n",
}


def schema(path=os.path.join(HERE, "..", "infra", "sql", "schema.sql")):
    """schema.sql (or the one at `path`) with core's ids uncompressed, as the
    local warehouse stores them."""
    sql = open(path).read()
    head, rest = sql.split("CREATE TABLE IF NOT EXISTS core.viewing_sessions (", 1)
    body, tail = rest.split(");", 1)
    for column in ("event_id", "user_id", "device_id"):
        body = re.sub(r"(\n    %s VARCHAR\(256\)( NOT NULL)?)" % column, r"\1 USING COMPRESSION uncompressed", body)
    return head + "CREATE TABLE IF NOT EXISTS core.viewing_sessions (" + body + ");" + tail


# `tvetl run`'s defaults: DEFAULT_MEMORY_LIMIT of cli/src/warehouse.rs, and
# one thread per core it may run on (available_parallelism in cli/src/main.rs).
MEMORY_LIMIT = "320MB"
THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)


def engine_settings(memory_limit=MEMORY_LIMIT, threads=THREADS):
    """The local warehouse's engine settings for a load (cli/src/warehouse.rs)."""
    return (f"SET memory_limit = '{memory_limit}'; SET threads = {threads}; "
            "SET preserve_insertion_order = false")


def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def replay(lake, mode):
    with tempfile.TemporaryDirectory() as work:
        conn = duckdb.connect(os.path.join(work, "replay.duckdb"))
        conn.execute(engine_settings())
        conn.execute(schema())
        files = os.path.join(lake, "staging", "viewership", "*", "*.parquet")
        # Typed like the staging table, as the load's copy-in is: read on its
        # own, the Parquet's UTC timestamps would be TIMESTAMPTZ.
        conn.execute("CREATE TEMP TABLE staged AS SELECT * FROM staging.viewing_sessions WITH NO DATA")
        conn.execute(f"INSERT INTO staged SELECT * FROM read_parquet('{files}', hive_partitioning = false)")
        conn.execute("""CREATE TEMP TABLE deduped AS
            SELECT * EXCLUDE (delivery_rank) FROM (
                SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY source_key DESC, source_record_no DESC) AS delivery_rank
                FROM staged)
            WHERE delivery_rank = 1""")
        rows = conn.execute("SELECT COUNT(*) FROM deduped").fetchone()[0]
        conn.execute("BEGIN")
        start = cpu()
        conn.execute(STATEMENTS[mode])
        spent = cpu() - start
        conn.execute("COMMIT")
        conn.close()
        print(f"{mode:18} {rows:>9,} rows  {spent:.3f} CPU s")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for mode in sys.argv[2:] or list(STATEMENTS):
        replay(sys.argv[1], mode)
