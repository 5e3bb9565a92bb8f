#!/usr/bin/env python3
"""DuckDB baseline for the tvetl benchmark.

Does the job of `tvetl run` followed by `tvetl report top-channels` and
`tvetl report user-average` (see shared/spec/data-contract.md, sections 2, 3
and 5) as one plain DuckDB program, so the Rust pipeline has an honest,
efficient comparison point:

  * reads every viewing-session file under INPUT/viewership/ (CSV and JSON
    Lines, optionally gzip-compressed), every channel file under
    INPUT/channels/ and every demographics file under INPUT/demographics/;
  * validates each session in SQL (MALFORMED, MISSING_FIELD, BAD_TIMESTAMP,
    BAD_DURATION, TOO_LONG) and writes the rejected rows to
    OUT/quarantine/viewership/ingest_date=YYYY-MM-DD/ as Parquet;
  * deduplicates by event_id (last delivery wins: later object key byte-wise,
    then later record in the object), enriches with the channel name
    ("Unknown" when missing) and demographics;
  * writes the sessions as Hive-partitioned, zstd-compressed Parquet under
    OUT/staging/viewership/event_date=YYYY-MM-DD/;
  * computes the top 10 channels on --date and the per-day average watch
    seconds per user, splitting sessions that cross UTC midnight;
  * prints one JSON object on stdout.

Files are loaded one INSERT per object key, in byte-wise key order, into an
in-memory table whose insertion order DuckDB preserves (preserve_insertion_order
is on by default), so `rowid` is the global delivery order used for the
dedup. Each file is still scanned in parallel by DuckDB.

Usage: duckdb_baseline.py --input DIR --out DIR [--date YYYY-MM-DD] [--threads N]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip
import json
import os
import resource
import shutil
import sys
import time

import duckdb

SESSION_FIELDS = [
    "event_id",
    "user_id",
    "device_id",
    "channel_id",
    "program_id",
    "start_time",
    "end_time",
    "duration_seconds",
    "platform",
]
CHANNEL_FIELDS = ["channel_id", "channel_name", "genre", "network", "language"]
DEMO_FIELDS = ["user_id", "age_band", "gender", "region"]
REASONS = ["MALFORMED", "MISSING_FIELD", "BAD_TIMESTAMP", "BAD_DURATION", "TOO_LONG"]

CSV_EXT = (".csv", ".csv.gz")
JSONL_EXT = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
JSON_EXT = (".json", ".json.gz")

# RFC 4180. The header is read here (csv_header) and handed to DuckDB as the
# column list, so its sniffer cannot guess a dialect, header or skip count
# from a dirty sample; DuckDB still handles LF/CRLF, a BOM, quoted newlines
# and gzip by itself.
CSV_OPTS = "auto_detect=false, header=true, delim=',', quote='\"', escape='\"'"

# Timestamp forms of the contract, checked strictly, then converted to a naive
# TIMESTAMP holding UTC:
#   RFC 3339 with Z or an offset, optional fractional seconds;
#   'YYYY-MM-DD HH:MM:SS[.fff]' meaning UTC;
#   an integer of epoch milliseconds.
# A 'Z' time is cast straight to TIMESTAMP (cheap); an offset needs the
# TIMESTAMPTZ cast (ICU), which honours the offset.
MACROS = r"""
CREATE OR REPLACE TEMP MACRO parse_ts(s) AS CASE
  WHEN s[11] IN ('T', 't')
       AND regexp_full_match(s, '\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})')
    THEN CASE WHEN s[-1] IN ('Z', 'z') THEN try_cast(upper(s) AS TIMESTAMP)
              ELSE try_cast(try_cast(upper(s) AS TIMESTAMPTZ) AS TIMESTAMP) END
  WHEN s[11] = ' ' AND regexp_full_match(s, '\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)?')
    THEN try_cast(s AS TIMESTAMP)
  WHEN regexp_full_match(s, '-?\d{1,15}')
    THEN epoch_ms(CAST(s AS BIGINT))
END;
-- As in tvetl, a value of only spaces counts as empty.
CREATE OR REPLACE TEMP MACRO is_empty(s) AS coalesce(trim(s), '') = '';
"""

CHECKED_DDL = """
CREATE TEMP TABLE checked (
  file_idx INTEGER,
  event_id VARCHAR, user_id VARCHAR, device_id VARCHAR, channel_id VARCHAR,
  program_id VARCHAR, platform VARCHAR,
  start_ts TIMESTAMP, end_ts TIMESTAMP, duration_s BIGINT,
  reason VARCHAR,
  original VARCHAR
)
"""


def sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def list_files(root: str, exts: tuple[str, ...]) -> list[tuple[str, str]]:
    """(object key, path) of every file under root/ whose name ends in one
    of exts, sorted by key byte-wise (UTF-8 order == code point order)."""
    base = os.path.dirname(root.rstrip("/"))
    out = []
    if not os.path.isdir(root):
        return out
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.lower().endswith(exts):
                path = os.path.join(dirpath, name)
                key = os.path.relpath(path, base).replace(os.sep, "/")
                out.append((key, path))
    out.sort(key=lambda kp: kp[0].encode("utf-8"))
    return out


def csv_header(path: str) -> list[str]:
    """Column names of a CSV file's header row, trimmed and lower-cased
    (names match case-insensitively); a repeated name gets a suffix."""
    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
        header = next(csv.reader(fh), [])
    names, seen = [], set()
    for i, raw in enumerate(header):
        name = raw.strip().lower() or f"column{i}"
        while name in seen:
            name += "_dup"
        seen.add(name)
        names.append(name)
    return names


def read_csv_sql(path: str, extra: str = "") -> tuple[str, set[str]]:
    names = csv_header(path)
    cols = "{" + ", ".join(f"{sql_str(n)}: 'VARCHAR'" for n in names) + "}"
    return f"read_csv({sql_str(path)}, {CSV_OPTS}, columns={cols}{extra})", set(names)


def project(fields: list[str], have: set[str]) -> str:
    return ", ".join(
        (f'"{f}"' if f in have else "CAST(NULL AS VARCHAR)") + f' AS "{f}"'
        for f in fields
    )


def json_columns(fields: list[str]) -> str:
    return "{" + ", ".join(f"'{f}': 'VARCHAR'" for f in fields) + "}"


def session_insert(file_idx: int, source_sql: str, is_json: bool) -> str:
    """INSERT that parses, validates and types one file's sessions."""
    # A JSON line that is not an object (or not JSON) comes back from
    # read_json(ignore_errors=true) as a row of NULLs: that is MALFORMED.
    malformed = (
        "(" + " AND ".join(f"{f} IS NULL" for f in SESSION_FIELDS) + ")"
        if is_json
        else "false"
    )
    return f"""
INSERT INTO checked
SELECT {file_idx}, event_id, user_id, device_id, channel_id, program_id,
       CASE WHEN platform IS NULL OR platform = '' THEN NULL
            WHEN lower(platform) IN ('stb', 'smart_tv', 'mobile', 'web') THEN lower(platform)
            ELSE 'other' END,
       st,
       coalesce(et, st + to_seconds(least(dur, 86401))),
       CASE WHEN et IS NOT NULL THEN (epoch_us(et) - epoch_us(st)) // 1000000 ELSE dur END,
       reason,
       CASE WHEN reason IS NOT NULL
            THEN to_json(struct_pack(event_id, user_id, device_id, channel_id, program_id,
                                     start_time, end_time, duration_seconds, platform))::VARCHAR
       END
FROM (
  SELECT *,
    CASE
      WHEN {malformed} THEN 'MALFORMED'
      WHEN is_empty(event_id) OR is_empty(user_id) OR is_empty(channel_id)
           OR is_empty(start_time) OR (is_empty(end_time) AND is_empty(duration_seconds))
        THEN 'MISSING_FIELD'
      WHEN st IS NULL OR (NOT is_empty(end_time) AND et IS NULL) THEN 'BAD_TIMESTAMP'
      WHEN (NOT is_empty(duration_seconds) AND coalesce(dur, 0) <= 0)
           OR (et IS NOT NULL AND et <= st) THEN 'BAD_DURATION'
      WHEN epoch_us(coalesce(et, st + to_seconds(least(dur, 86401)))) - epoch_us(st) > 86400000000
        THEN 'TOO_LONG'
    END AS reason
  FROM (
    SELECT *,
      parse_ts(start_time) AS st,
      CASE WHEN NOT is_empty(end_time) THEN parse_ts(end_time) END AS et,
      CASE WHEN regexp_full_match(duration_seconds, '\\d{{1,18}}')
           THEN try_cast(duration_seconds AS BIGINT) END AS dur
    FROM ({source_sql})
  )
)
"""

def day_parts(columns: str, on: str | None = None) -> str:
    """The sessions' watch microseconds per UTC day, as `columns, us` rows
    (with a leading `day` unless `on` names one day): the part in the start
    day, and the part past midnight in the next day (a session lasts at most
    24 hours, so there is no third)."""
    if on:
        return (f"SELECT {columns}, us_day0 AS us FROM sessions WHERE event_date = DATE '{on}'\n"
                f"UNION ALL\n"
                f"SELECT {columns}, us_day1 FROM sessions WHERE event_date = DATE '{on}' - 1 AND us_day1 > 0")
    return (f"SELECT event_date AS day, {columns}, us_day0 AS us FROM sessions\n"
            f"UNION ALL\n"
            f"SELECT event_date + 1, {columns}, us_day1 FROM sessions WHERE us_day1 > 0")


def load_sessions(con, input_dir: str, files_report: list) -> tuple[list, int]:
    """Load every viewing-session file. Returns (file table rows, malformed CSV rows)."""
    con.execute(CHECKED_DDL)
    csv_files = list_files(os.path.join(input_dir, "viewership"), CSV_EXT)
    json_files = list_files(os.path.join(input_dir, "viewership"), JSONL_EXT)
    files = sorted(
        [(k, p, False) for k, p in csv_files] + [(k, p, True) for k, p in json_files],
        key=lambda f: f[0].encode("utf-8"),
    )
    file_rows = []  # (file_idx, key, first_rowid, n_rows)
    next_rowid = 0
    for idx, (key, path, is_json) in enumerate(files):
        try:
            if is_json:
                source = (
                    f"SELECT * FROM read_json({sql_str(path)}, format='newline_delimited', "
                    f"columns={json_columns(SESSION_FIELDS)}, ignore_errors=true, "
                    f"case_insensitive_keys=true)"
                )
            else:
                if not csv_header(path):  # empty object: nothing to load
                    files_report.append({"key": key, "status": "loaded"})
                    continue
                scan, have = read_csv_sql(
                    path, ", store_rejects=true, rejects_table='rej_err', rejects_scan='rej_scan'"
                )
                source = f"SELECT {project(SESSION_FIELDS, have)} FROM {scan}"
            n = con.execute(session_insert(idx, source, is_json)).fetchone()[0]
        except (duckdb.Error, OSError, ValueError, EOFError, csv.Error) as e:
            files_report.append({"key": key, "status": "failed", "error": str(e).splitlines()[0]})
            continue
        files_report.append({"key": key, "status": "loaded"})
        file_rows.append((idx, key, next_rowid, n))
        next_rowid += n
    con.execute("CREATE TEMP TABLE files (file_idx INTEGER, key VARCHAR, first_rowid BIGINT, n BIGINT)")
    if file_rows:
        con.executemany("INSERT INTO files VALUES (?, ?, ?, ?)", file_rows)
    # CSV records the reader rejected (wrong column count, bad quoting): MALFORMED.
    # The rejects tables only exist once a CSV scan with store_rejects ran.
    have_rej = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'rej_err'"
    ).fetchone()[0]
    if have_rej:
        con.execute(
            """CREATE TEMP TABLE malformed AS
               SELECT s.file_path AS path, e.line AS line, ltrim(any_value(e.csv_line), chr(10) || chr(13)) AS original
               FROM rej_err e JOIN rej_scan s USING (scan_id, file_id)
               GROUP BY ALL"""
        )
        # a failed file's rejects do not count: its INSERT was rolled back
        failed = {f["key"] for f in files_report if f["status"] == "failed"}
        paths = {p: k for k, p, _ in files}
        con.execute("CREATE TEMP TABLE malformed_keys (path VARCHAR, key VARCHAR, ok BOOLEAN)")
        con.executemany(
            "INSERT INTO malformed_keys VALUES (?, ?, ?)",
            [(p, k, k not in failed) for p, k in paths.items()],
        )
        con.execute(
            """CREATE OR REPLACE TEMP TABLE malformed AS
               SELECT k.key, m.line, m.original FROM malformed m JOIN malformed_keys k USING (path)
               WHERE k.ok"""
        )
    else:
        con.execute("CREATE TEMP TABLE malformed (key VARCHAR, line BIGINT, original VARCHAR)")
    return files, con.execute("SELECT count(*) FROM malformed").fetchone()[0]


def load_dimension(con, name: str, root: str, fields: list[str], key: str, required: list[str]):
    """Load a small dimension (channels or demographics): last delivery per key wins."""
    files = sorted(
        [(k, p, "csv") for k, p in list_files(root, CSV_EXT)]
        + [(k, p, "jsonl") for k, p in list_files(root, JSONL_EXT)]
        + [(k, p, "json") for k, p in list_files(root, JSON_EXT)],
        key=lambda f: f[0].encode("utf-8"),
    )
    cols = ", ".join(f'"{f}" VARCHAR' for f in fields)
    con.execute(f"CREATE TEMP TABLE {name}_raw ({cols})")
    for k, path, kind in files:
        try:
            if kind == "csv":
                if not csv_header(path):
                    continue
                scan, have = read_csv_sql(path, ", ignore_errors=true")
                src = f"SELECT {project(fields, have)} FROM {scan}"
            else:
                fmt = "newline_delimited" if kind == "jsonl" else "auto"
                src = (
                    f"SELECT {', '.join(fields)} FROM read_json({sql_str(path)}, format='{fmt}', "
                    f"columns={json_columns(fields)}, ignore_errors=true, case_insensitive_keys=true)"
                )
            con.execute(f"INSERT INTO {name}_raw {src}")
        except (duckdb.Error, OSError, ValueError, EOFError, csv.Error) as e:
            print(f"warning: {k}: {str(e).splitlines()[0]}", file=sys.stderr)
    ok = " AND ".join(f"NOT is_empty({f})" for f in required)
    con.execute(
        f"""CREATE TEMP TABLE {name} AS
            SELECT {', '.join(fields)} FROM {name}_raw
            WHERE rowid IN (SELECT max(rowid) FROM {name}_raw WHERE {ok} GROUP BY {key})"""
    )
    con.execute(f"DROP TABLE {name}_raw")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", required=True, help="input folder (the raw bucket)")
    ap.add_argument("--out", required=True, help="output folder (the lake)")
    ap.add_argument("--date", help="day of the top-channels report (default: most common start date)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=10, help="number of top channels")
    ap.add_argument("--no-demographics", action="store_true", help="skip the demographics join")
    ap.add_argument("--warehouse", metavar="FILE",
                    help="also keep a warehouse, as tvetl does: persist the deduplicated sessions and "
                         "the daily channel and user viewing tables into this DuckDB database file")
    args = ap.parse_args(argv)
    if args.date:
        dt.date.fromisoformat(args.date)

    # Wall and CPU seconds per step. CPU is the process's user + system time,
    # all threads: the cost of one step measured within one process, which
    # is steadier on a shared machine than a difference of two runs.
    timings, cpu_timings = {}, {}

    def cpu_now():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    t_all = t = time.perf_counter()
    cpu_at = cpu_now()

    def lap(name):
        nonlocal t, cpu_at
        now, cpu = time.perf_counter(), cpu_now()
        timings[name] = round(now - t, 3)
        cpu_timings[name] = round(cpu - cpu_at, 3)
        t, cpu_at = now, cpu

    os.makedirs(args.out, exist_ok=True)
    tmp_dir = os.path.join(args.out, ".duckdb_tmp")
    con = duckdb.connect(":memory:")
    con.execute(f"SET threads = {int(args.threads)}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET temp_directory = {sql_str(tmp_dir)}")
    con.execute("SET preserve_insertion_order = true")  # rowid == delivery order
    con.execute(MACROS)

    # -- extract + validate ------------------------------------------------
    files_report: list = []
    _files, n_malformed_csv = load_sessions(con, args.input, files_report)
    lap("load_validate")

    load_dimension(con, "channels", os.path.join(args.input, "channels"),
                   CHANNEL_FIELDS, "channel_id", ["channel_id", "channel_name"])
    if args.no_demographics:
        con.execute("CREATE TEMP TABLE demographics (user_id VARCHAR, age_band VARCHAR, gender VARCHAR, region VARCHAR)")
    else:
        load_dimension(con, "demographics", os.path.join(args.input, "demographics"),
                       DEMO_FIELDS, "user_id", ["user_id"])
    lap("load_dimensions")

    counts = dict(con.execute(
        "SELECT coalesce(reason, 'OK'), count(*) FROM checked GROUP BY ALL"
    ).fetchall())
    quarantined = {r: int(counts.get(r, 0)) for r in REASONS}
    quarantined["MALFORMED"] += int(n_malformed_csv)
    rows_accepted = int(counts.get("OK", 0))
    rows_read = rows_accepted + sum(quarantined.values())

    # -- quarantine --------------------------------------------------------
    ingest_date = dt.datetime.now(dt.timezone.utc).date().isoformat()
    q_dir = os.path.join(args.out, "quarantine", "viewership", f"ingest_date={ingest_date}")
    os.makedirs(q_dir, exist_ok=True)
    con.execute(f"""
        COPY (
          SELECT f.key AS source_key, CAST(c.rowid - f.first_rowid + 1 AS BIGINT) AS record_number,
                 c.reason, c.original
          FROM checked c JOIN files f USING (file_idx)
          WHERE c.reason IS NOT NULL
          UNION ALL
          SELECT key, CAST(line AS BIGINT), 'MALFORMED', original FROM malformed
        ) TO {sql_str(os.path.join(q_dir, 'part-0.parquet'))} (FORMAT parquet, COMPRESSION zstd)
    """)
    lap("quarantine")

    # -- dedup (last delivery wins) + enrich --------------------------------
    con.execute("""
        CREATE TEMP TABLE sessions AS
        SELECT s.event_id, s.user_id, s.device_id, s.channel_id,
               coalesce(ch.channel_name, 'Unknown') AS channel_name,
               ch.genre, ch.network, ch.language,
               s.program_id, s.platform,
               s.start_ts, s.end_ts, s.duration_s,
               d.age_band, d.gender, d.region,
               f.key AS source_key,
               CAST(s.start_ts AS DATE) AS event_date,
               -- microseconds of [start, end) in the start day and in the next day
               epoch_us(least(s.end_ts, CAST(CAST(s.start_ts AS DATE) + 1 AS TIMESTAMP))) - epoch_us(s.start_ts) AS us_day0,
               greatest(epoch_us(s.end_ts) - epoch_us(CAST(CAST(s.start_ts AS DATE) + 1 AS TIMESTAMP)), 0) AS us_day1
        FROM checked s
        JOIN files f USING (file_idx)
        LEFT JOIN channels ch USING (channel_id)
        LEFT JOIN demographics d USING (user_id)
        WHERE s.reason IS NULL
          AND s.rowid IN (SELECT max(rowid) FROM checked WHERE reason IS NULL GROUP BY event_id)
    """)
    con.execute("DROP TABLE checked")
    n_sessions = con.execute("SELECT count(*) FROM sessions").fetchone()[0]
    duplicates_removed = rows_accepted - int(n_sessions)
    lap("dedup_enrich")

    # -- load: Hive-partitioned Parquet ---------------------------------------
    staging = os.path.join(args.out, "staging", "viewership")
    if os.path.isdir(staging):
        shutil.rmtree(staging)
    os.makedirs(os.path.dirname(staging), exist_ok=True)
    con.execute(f"""
        COPY (
          SELECT event_id, user_id, device_id, channel_id, channel_name, genre, network, language,
                 program_id, platform,
                 CAST(start_ts AS TIMESTAMPTZ) AS start_time, CAST(end_ts AS TIMESTAMPTZ) AS end_time,
                 duration_s AS duration_seconds, age_band, gender, region, source_key, event_date
          FROM sessions
        ) TO {sql_str(staging)}
        (FORMAT parquet, PARTITION_BY (event_date), COMPRESSION zstd, FILENAME_PATTERN 'part-{{i}}')
    """)
    lap("write_parquet")

    # -- warehouse (only with --warehouse) -----------------------------------
    # What tvetl does beyond the job above: core sessions and both analytics
    # tables persisted in a database file, so reports can be asked later.
    if args.warehouse:
        for f in (args.warehouse, args.warehouse + ".wal"):
            if os.path.exists(f):
                os.remove(f)
        con.execute(f"ATTACH {sql_str(args.warehouse)} AS wh")
        # The ids are stored uncompressed, as tvetl's warehouse stores them
        # (cli/src/warehouse.rs, UNCOMPRESSED_COLUMNS), so that both pay for
        # the same physical design.
        con.execute("""
            CREATE TABLE wh.viewing_sessions (
              event_id VARCHAR USING COMPRESSION uncompressed,
              user_id VARCHAR USING COMPRESSION uncompressed,
              device_id VARCHAR USING COMPRESSION uncompressed,
              channel_id VARCHAR, program_id VARCHAR, start_time TIMESTAMP, end_time TIMESTAMP,
              event_date DATE, session_seconds DOUBLE, duration_seconds BIGINT, platform VARCHAR,
              source_key VARCHAR
            )
        """)
        con.execute("""
            INSERT INTO wh.viewing_sessions
            SELECT event_id, user_id, device_id, channel_id, program_id, start_ts AS start_time,
                   end_ts AS end_time, event_date, (us_day0 + us_day1) / 1e6 AS session_seconds,
                   duration_s AS duration_seconds, platform, source_key
            FROM sessions
        """)
        con.execute(f"""
            CREATE TEMP TABLE day_viewing AS
            SELECT day, channel_id, user_id, sum(us) AS us, count(*) AS sessions FROM (
              {day_parts("channel_id, user_id")}
            ) GROUP BY ALL
        """)
        con.execute("""
            CREATE TABLE wh.daily_channel_viewing AS
            SELECT day AS view_date, channel_id, sum(us) / 1e6 AS watch_seconds, count(*) AS reach,
                   sum(sessions) AS sessions
            FROM day_viewing GROUP BY ALL
        """)
        con.execute("""
            CREATE TABLE wh.daily_user_viewing AS
            SELECT day AS view_date, user_id, sum(us) / 1e6 AS watch_seconds, count(*) AS channels,
                   sum(sessions) AS sessions
            FROM day_viewing GROUP BY ALL
        """)
        con.execute("DROP TABLE day_viewing")
        con.execute("DETACH wh")
        lap("warehouse")

    # -- reports -----------------------------------------------------------
    date = args.date
    if not date:
        row = con.execute(
            "SELECT event_date FROM sessions GROUP BY event_date ORDER BY count(*) DESC, event_date LIMIT 1"
        ).fetchone()
        date = row[0].isoformat() if row else None
    top = []
    if date:
        top_rows = con.execute(f"""
            WITH parts AS (
              {day_parts("channel_id, user_id", on=date)}
            ), agg AS (
              SELECT channel_id, sum(us) AS us, count(DISTINCT user_id) AS reach
              FROM parts GROUP BY channel_id
            )
            SELECT a.channel_id, coalesce(ch.channel_name, 'Unknown'), a.us, a.reach
            FROM agg a LEFT JOIN channels ch USING (channel_id)
            ORDER BY a.us DESC, a.channel_id ASC
            LIMIT {int(args.limit)}
        """).fetchall()
        top = [
            {"rank": i + 1, "channel_id": cid, "channel_name": name,
             "watch_seconds": int(us) / 1e6, "reach": int(reach)}
            for i, (cid, name, us, reach) in enumerate(top_rows)
        ]
    day_rows = con.execute(f"""
        WITH parts AS (
          {day_parts("user_id")}
        )
        SELECT day, count(DISTINCT user_id) AS users, sum(us) AS us
        FROM parts GROUP BY day ORDER BY day
    """).fetchall()
    days = [
        {"date": day.isoformat(), "active_users": int(users),
         "avg_watch_seconds_per_user": int(us) / 1e6 / int(users)}
        for day, users, us in day_rows
    ]
    lap("reports")
    timings["total"] = round(time.perf_counter() - t_all, 3)
    con.close()
    shutil.rmtree(tmp_dir, ignore_errors=True)

    out = {
        "rows_read": rows_read,
        "rows_accepted": rows_accepted,
        "duplicates_removed": duplicates_removed,
        "quarantined": quarantined,
        "date": date,
        "top_channels": top,
        "days": days,
        "files": files_report,
        "duckdb_version": duckdb.__version__,
        "threads": args.threads,
        "timings_s": timings,
        "cpu_s": cpu_timings,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
