"""The Redshift Data API stand-in (server.py), through boto3's real
`redshift-data` client, with COPY reading Parquet from ministack's S3.

run_tests.sh starts both services and passes their endpoints in
AWS_ENDPOINT_URL (ministack) and STANDIN_ENDPOINT. Without them, the
`services` fixture starts its own on free ports (ministack through
scripts/emulator.sh, the stand-in directly) and stops them afterwards.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import boto3
import duckdb
import pytest
from botocore.config import Config

REPO = Path(__file__).resolve().parents[2]
SQL_DIR = REPO / "infra" / "sql"
SERVER = Path(__file__).resolve().parent / "server.py"
ROLE = "arn:aws:iam::000000000000:role/tvetl-copy"
TARGET = {"Database": "dev", "WorkgroupName": "tvetl-test"}
CREDENTIALS = {"region_name": "us-east-1", "aws_access_key_id": "test", "aws_secret_access_key": "test"}
# The columns of staging.viewing_sessions, in order (infra/sql/schema.sql).
SESSION_COLUMNS = """
    event_id VARCHAR, user_id VARCHAR, device_id VARCHAR, channel_id VARCHAR, program_id VARCHAR,
    start_time TIMESTAMP, end_time TIMESTAMP, duration_seconds BIGINT, platform VARCHAR,
    source_key VARCHAR, source_version VARCHAR, source_record_no BIGINT
"""
# Four deliveries: e1 twice (the later object key wins), e2 crosses midnight.
SESSION_ROWS = [
    ("e1", "u1", "d1", "c1", "p1", "2024-01-01 10:00:00", "2024-01-01 11:00:00", 3600, "tv", "raw/a.csv", "v1", 1),
    ("e2", "u2", "d2", "c1", "p2", "2024-01-01 23:30:00", "2024-01-02 00:30:00", None, "app", "raw/a.csv", "v1", 2),
    ("e3", "u1", "d1", "c2", None, "2024-01-01 12:00:00", "2024-01-01 12:30:00", 1800, None, "raw/a.csv", "v1", 3),
    ("e1", "u1", "d1", "c1", "p1", "2024-01-01 10:00:00", "2024-01-01 10:45:00", 2700, "tv", "raw/b.csv", "v2", 1),
]


# --------------------------------------------------------------------------
# services
# --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


@pytest.fixture(scope="session")
def services(tmp_path_factory):
    s3_endpoint = os.environ.get("AWS_ENDPOINT_URL")
    standin = os.environ.get("STANDIN_ENDPOINT")
    started = []
    env = None
    if not s3_endpoint:
        port = free_port()
        env = {**os.environ, "EMULATOR_PORT": str(port), "TVETL_RUN_DIR": str(tmp_path_factory.mktemp("run"))}
        started.append(("ministack", env))
        subprocess.run([str(REPO / "scripts" / "emulator.sh"), "start"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        s3_endpoint = f"http://127.0.0.1:{port}"
    if not standin:
        port = free_port()
        workdir = tmp_path_factory.mktemp("standin")
        log = open(workdir / "standin.log", "w")
        proc = subprocess.Popen(
            [sys.executable, str(SERVER), "--port", str(port), "--db", str(workdir / "standin.duckdb"),
             "--s3-endpoint", s3_endpoint, "--page-size", "2"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        started.append(("standin", proc))
        standin = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{s3_endpoint}/_ministack/health")
        wait_http(f"{standin}/_standin/health")
        yield {"s3": s3_endpoint, "standin": standin}
    finally:
        for kind, handle in reversed(started):
            if kind == "standin":
                os.killpg(handle.pid, signal.SIGTERM)
                handle.wait(10)
            else:
                subprocess.run([str(REPO / "scripts" / "emulator.sh"), "stop"], env=handle, check=False)


@pytest.fixture(scope="session")
def rd(services):
    return boto3.client("redshift-data", endpoint_url=services["standin"],
                        config=Config(retries={"max_attempts": 1}), **CREDENTIALS)


@pytest.fixture(scope="session")
def s3(services):
    return boto3.client("s3", endpoint_url=services["s3"], config=Config(s3={"addressing_style": "path"}),
                        **CREDENTIALS)


@pytest.fixture(scope="session")
def page_size(services) -> int:
    with urllib.request.urlopen(f"{services['standin']}/_standin/health") as r:
        return json.load(r)["page_size"]


@pytest.fixture(scope="session")
def bucket(s3) -> str:
    name = f"tvetl-standin-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def split_sql(text: str) -> list[str]:
    """The statements of a .sql file (no semicolons in its strings or comments)."""
    lines = [line.split("--", 1)[0] for line in text.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def wait(rd, statement_id: str, timeout: float = 60) -> tuple[dict, list[str]]:
    """Polls DescribeStatement as a client would; returns the last answer and every status seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = rd.describe_statement(Id=statement_id)
        seen.append(described["Status"])
        if described["Status"] in ("FINISHED", "FAILED", "ABORTED"):
            return described, seen
        time.sleep(0.05)
    raise AssertionError(f"{statement_id} still {seen[-1]} after {timeout} s")


def field(f: dict):
    assert len(f) == 1, f"a Field is a union, exactly one member: {f}"
    (kind, value), = f.items()
    return None if kind == "isNull" else value


def records(rd, statement_id: str) -> list[list]:
    out, token = [], None
    while True:
        page = rd.get_statement_result(Id=statement_id, **({"NextToken": token} if token else {}))
        out.extend([field(f) for f in rec] for rec in page["Records"])
        token = page.get("NextToken")
        if not token:
            return out


def execute(rd, sql: str, **extra) -> dict:
    described, _ = wait(rd, rd.execute_statement(Sql=sql, **{**TARGET, **extra})["Id"])
    return described


def query(rd, sql: str) -> list[list]:
    described = execute(rd, sql)
    assert described["Status"] == "FINISHED", described.get("Error")
    return records(rd, described["Id"])


def batch(rd, sqls: list[str], **extra) -> dict:
    described, _ = wait(rd, rd.batch_execute_statement(Sqls=sqls, **{**TARGET, **extra})["Id"])
    return described


def write_parquet(path: Path, rows=SESSION_ROWS, columns=SESSION_COLUMNS, timestamp_type="TIMESTAMP") -> int:
    con = duckdb.connect()
    con.execute(f"CREATE TABLE s ({columns.replace('TIMESTAMP', timestamp_type)})")
    if rows:
        marks = ", ".join("?" * len(rows[0]))
        con.executemany(f"INSERT INTO s VALUES ({marks})", [list(r) for r in rows])
    con.execute(f"COPY s TO '{path}' (FORMAT parquet)")
    con.close()
    return path.stat().st_size


def copy(bucket: str, key: str, table: str = "staging.viewing_sessions", extra: str = "") -> str:
    return f"COPY {table}\nFROM 's3://{bucket}/{key}'\n  iam_role '{ROLE}'\n  format as parquet{extra}"


def load_statements(load_id: int) -> list[str]:
    text = (SQL_DIR / "load_viewing_sessions.sql").read_text()
    return split_sql(text.replace("{load_id}", str(load_id)))


@pytest.fixture(scope="session")
def schema(rd) -> dict:
    statements = split_sql((SQL_DIR / "schema.sql").read_text())
    return batch(rd, statements)


@pytest.fixture(scope="session")
def staged_file(s3, bucket, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("parquet") / "part-1.parquet"
    write_parquet(path)
    # A hive-style key: COPY must not add an event_date column from it.
    key = "staging/viewership/event_date=2024-01-01/part-1.parquet"
    s3.upload_file(str(path), bucket, key)
    return key


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------


def test_execute_statement_polls_from_started_to_finished(rd):
    sql = ("SELECT 42 AS answer, 'x''y' AS s, NULL AS n, 1.5::DOUBLE AS d, TRUE AS b, DATE '2024-01-01' AS day, "
           "TIMESTAMP '2024-01-01 10:00:00.25' AS ts, 12.34::DECIMAL(10,2) AS dec, 9007199254740993::BIGINT AS big")
    submitted = rd.execute_statement(Sql=sql, StatementName="probe", **TARGET)
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", submitted["Id"])
    assert submitted["Database"] == "dev" and submitted["WorkgroupName"] == "tvetl-test"
    described, seen = wait(rd, submitted["Id"])
    assert seen[0] == "STARTED" and seen[-1] == "FINISHED", seen
    assert described["HasResultSet"] is True and described["ResultRows"] == 1
    assert described["QueryString"] == sql
    assert described["Duration"] >= 0 and described["RedshiftQueryId"] > 0
    assert described["CreatedAt"] <= described["UpdatedAt"]  # boto3 parsed epoch seconds into datetimes
    result = rd.get_statement_result(Id=submitted["Id"])
    assert result["TotalNumRows"] == 1 and "NextToken" not in result
    assert [c["name"] for c in result["ColumnMetadata"]] == ["answer", "s", "n", "d", "b", "day", "ts", "dec", "big"]
    assert [c["typeName"] for c in result["ColumnMetadata"]] == [
        "int4", "varchar", "varchar", "float8", "bool", "date", "timestamp", "numeric", "int8"]
    assert result["Records"][0] == [
        {"longValue": 42}, {"stringValue": "x'y"}, {"isNull": True}, {"doubleValue": 1.5}, {"booleanValue": True},
        {"stringValue": "2024-01-01"}, {"stringValue": "2024-01-01 10:00:00.25"}, {"stringValue": "12.34"},
        {"longValue": 9007199254740993},
    ]


def test_cluster_target_secret_and_parameters(rd):
    secret = "arn:aws:secretsmanager:us-east-1:000000000000:secret:tvetl-abc"
    submitted = rd.execute_statement(
        Sql="SELECT CAST(:n AS INTEGER) + 1 AS next, :who AS who, 'a:b' AS literal",
        Database="dev", ClusterIdentifier="tvetl-cluster", SecretArn=secret,
        Parameters=[{"name": "n", "value": "41"}, {"name": "who", "value": "o'brien"}],
    )
    assert submitted["ClusterIdentifier"] == "tvetl-cluster" and submitted["SecretArn"] == secret
    described, _ = wait(rd, submitted["Id"])
    assert described["Status"] == "FINISHED", described.get("Error")
    assert described["ClusterIdentifier"] == "tvetl-cluster"
    assert records(rd, submitted["Id"]) == [[42, "o'brien", "a:b"]]


def test_schema_sql_runs_as_one_batch(rd, schema):
    statements = split_sql((SQL_DIR / "schema.sql").read_text())
    assert schema["Status"] == "FINISHED", schema.get("Error")
    subs = schema["SubStatements"]
    assert [s["Id"] for s in subs] == [f"{schema['Id']}:{i}" for i in range(1, len(statements) + 1)]
    assert all(s["Status"] == "FINISHED" and not s["HasResultSet"] for s in subs)
    assert [s["QueryString"] for s in subs] == statements
    tables = query(rd, "SELECT table_schema || '.' || table_name FROM information_schema.tables "
                       "WHERE table_schema IN ('staging', 'core', 'analytics') ORDER BY 1")
    created = sorted(re.findall(r"CREATE TABLE IF NOT EXISTS (\S+)", (SQL_DIR / "schema.sql").read_text()))
    assert [t[0] for t in tables] == created
    again = batch(rd, statements)  # every statement is idempotent
    assert again["Status"] == "FINISHED", again.get("Error")


def test_copy_and_load_sql_in_one_batch(rd, schema, bucket, staged_file):
    statements = [copy(bucket, staged_file)] + load_statements(1)
    assert len(statements) <= 40
    described = batch(rd, statements)
    assert described["Status"] == "FINISHED", described.get("Error")
    subs = described["SubStatements"]
    assert subs[0]["ResultRows"] == len(SESSION_ROWS)  # rows the COPY loaded
    last = subs[-1]
    assert last["HasResultSet"] and last["Id"] == f"{described['Id']}:{len(statements)}"
    counts = rd.get_statement_result(Id=last["Id"])
    assert [c["name"] for c in counts["ColumnMetadata"]] == [
        "rows_staged", "rows_already_loaded", "duplicates_removed", "rows_merged", "days_touched"]
    assert records(rd, last["Id"]) == [[4, 0, 1, 3, 2]]

    assert query(rd, "SELECT event_id, CAST(end_time AS VARCHAR), load_id FROM core.viewing_sessions "
                     "ORDER BY event_id") == [
        ["e1", "2024-01-01 10:45:00", 1], ["e2", "2024-01-02 00:30:00", 1], ["e3", "2024-01-01 12:30:00", 1]]
    assert query(rd, "SELECT CAST(view_date AS VARCHAR), channel_id, watch_seconds, reach, sessions "
                     "FROM analytics.daily_channel_viewing ORDER BY 1, 2") == [
        ["2024-01-01", "c1", 4500.0, 2, 2], ["2024-01-01", "c2", 1800.0, 1, 1], ["2024-01-02", "c1", 1800.0, 1, 1]]
    assert query(rd, "SELECT COUNT(*) FROM staging.viewing_sessions") == [[0]]

    # The same file again: the ledger makes the load change nothing.
    replay = batch(rd, [copy(bucket, staged_file)] + load_statements(2))
    assert replay["Status"] == "FINISHED", replay.get("Error")
    assert records(rd, replay["SubStatements"][-1]["Id"]) == [[4, 4, 1, 0, 0]]
    assert query(rd, "SELECT COUNT(*), MAX(load_id) FROM core.viewing_sessions") == [[3, 1]]


def test_copy_with_manifest(rd, schema, s3, bucket, tmp_path):
    table = "copy_manifest_probe"
    assert execute(rd, f"CREATE TABLE {table} AS SELECT * FROM staging.viewing_sessions WHERE FALSE")[
        "Status"] == "FINISHED"
    # Timestamps adjusted to UTC, as the Rust writer's Timestamp(µs, "UTC"), load into TIMESTAMP columns.
    size = write_parquet(tmp_path / "m.parquet", timestamp_type="TIMESTAMPTZ")
    s3.upload_file(str(tmp_path / "m.parquet"), bucket, "manifest/data/one.parquet")
    entries = [
        {"url": f"s3://{bucket}/manifest/data/one.parquet", "mandatory": True, "meta": {"content_length": size}},
        {"url": f"s3://{bucket}/manifest/data/optional-missing.parquet", "meta": {"content_length": 1}},
    ]
    s3.put_object(Bucket=bucket, Key="manifest/load.manifest", Body=json.dumps({"entries": entries}))
    done = execute(rd, copy(bucket, "manifest/load.manifest", table, " MANIFEST"))
    assert done["Status"] == "FINISHED", done.get("Error")
    assert done["ResultRows"] == len(SESSION_ROWS)
    assert query(rd, f"SELECT CAST(MIN(start_time) AS VARCHAR) FROM {table}") == [["2024-01-01 10:00:00"]]

    # A missing mandatory file fails the COPY.
    entries[1]["mandatory"] = True
    s3.put_object(Bucket=bucket, Key="manifest/strict.manifest", Body=json.dumps({"entries": entries}))
    failed = execute(rd, copy(bucket, "manifest/strict.manifest", table, " MANIFEST"))
    assert failed["Status"] == "FAILED" and "optional-missing.parquet" in failed["Error"]
    assert query(rd, f"SELECT COUNT(*) FROM {table}") == [[len(SESSION_ROWS)]]  # still only the first load


def test_result_pages_by_page_size(rd, page_size):
    n = 2 * page_size + 1
    described = execute(rd, f"SELECT i, 'row ' || i AS label FROM range({n}) t(i) ORDER BY i")
    assert described["ResultRows"] == n
    pages, token = [], None
    while True:
        page = rd.get_statement_result(Id=described["Id"], **({"NextToken": token} if token else {}))
        assert page["TotalNumRows"] == n
        assert [c["name"] for c in page["ColumnMetadata"]] == ["i", "label"]
        pages.append([field(rec[0]) for rec in page["Records"]])
        token = page.get("NextToken")
        if not token:
            break
    assert [len(p) for p in pages] == [page_size, page_size, 1]
    assert sum(pages, []) == list(range(n))
    paginated = rd.get_paginator("get_statement_result").paginate(Id=described["Id"])
    assert sum(len(p["Records"]) for p in paginated) == n
    with pytest.raises(rd.exceptions.ValidationException):
        rd.get_statement_result(Id=described["Id"], NextToken="not-a-token")


def test_failed_batch_leaves_nothing_and_names_the_statement(rd):
    assert execute(rd, "CREATE TABLE atomic_probe (a INTEGER NOT NULL)")["Status"] == "FINISHED"
    described = batch(rd, [
        "INSERT INTO atomic_probe VALUES (1), (2)",
        "CREATE TABLE atomic_new AS SELECT 1 AS x",
        "INSERT INTO atomic_probe VALUES ('not a number')",
        "INSERT INTO atomic_probe VALUES (3)",
    ])
    assert described["Status"] == "FAILED"
    assert described["Error"].startswith(f"Sub-statement 3 of 4 ({described['Id']}:3) failed")
    assert "Conversion Error" in described["Error"] and "not a number" in described["Error"]
    subs = described["SubStatements"]
    assert [s["Status"] for s in subs] == ["FINISHED", "FINISHED", "FAILED", "ABORTED"]
    assert "Conversion Error" in subs[2]["Error"] and "Error" not in subs[0]
    assert subs[0]["ResultRows"] == 2
    assert query(rd, "SELECT COUNT(*) FROM atomic_probe") == [[0]]
    assert query(rd, "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'atomic_new'") == [[0]]


def test_same_client_token_runs_once(rd):
    assert execute(rd, "CREATE TABLE token_probe (a INTEGER)")["Status"] == "FINISHED"
    token = f"load-{uuid.uuid4()}"
    sqls = ["INSERT INTO token_probe VALUES (1)", "INSERT INTO token_probe VALUES (2)"]
    first = rd.batch_execute_statement(Sqls=sqls, ClientToken=token, **TARGET)
    assert wait(rd, first["Id"])[0]["Status"] == "FINISHED"
    second = rd.batch_execute_statement(Sqls=sqls, ClientToken=token, **TARGET)
    assert second["Id"] == first["Id"]
    assert wait(rd, second["Id"])[0]["Status"] == "FINISHED"
    assert query(rd, "SELECT COUNT(*) FROM token_probe") == [[2]]

    single = rd.execute_statement(Sql="INSERT INTO token_probe VALUES (3)", ClientToken=token + "-x", **TARGET)
    again = rd.execute_statement(Sql="INSERT INTO token_probe VALUES (3)", ClientToken=token + "-x", **TARGET)
    assert again["Id"] == single["Id"]
    wait(rd, single["Id"])
    assert query(rd, "SELECT COUNT(*) FROM token_probe") == [[3]]
    # Without a token boto3 fills in a fresh one each call, so both run.
    for _ in range(2):
        execute(rd, "INSERT INTO token_probe VALUES (4)")
    assert query(rd, "SELECT COUNT(*) FROM token_probe WHERE a = 4") == [[2]]
    with pytest.raises(rd.exceptions.ValidationException):
        rd.batch_execute_statement(Sqls=["SELECT 1"], ClientToken=token, **TARGET)


def test_copy_of_missing_object_fails_and_is_logged(rd, schema, bucket, staged_file):
    missing = "staging/viewership/event_date=2024-01-09/part-missing.parquet"
    described = batch(rd, [copy(bucket, staged_file), copy(bucket, missing), "SELECT 1"])
    assert described["Status"] == "FAILED"
    assert "Sub-statement 2 of 3" in described["Error"]
    assert "does not exist" in described["Error"] and "sys_load_error_detail" in described["Error"]
    subs = described["SubStatements"]
    assert [s["Status"] for s in subs] == ["FINISHED", "FAILED", "ABORTED"]
    # The first COPY's rows went with the rollback.
    assert query(rd, "SELECT COUNT(*) FROM staging.viewing_sessions") == [[0]]
    rows = query(rd, "SELECT query_id, TRIM(file_name), error_code, error_message, database_name "
                     f"FROM sys_load_error_detail WHERE query_id = {subs[1]['RedshiftQueryId']}")
    assert len(rows) == 1
    assert rows[0][1] == f"s3://{bucket}/{missing}" and "does not exist" in rows[0][3]
    assert rows[0][4] == "dev"
    assert query(rd, f"SELECT COUNT(*) FROM stl_load_errors WHERE query = {subs[1]['RedshiftQueryId']}") == [[1]]


def test_copy_of_unreadable_or_mismatched_files_fails_and_is_logged(rd, schema, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="broken/part-0.parquet", Body=b"this is not parquet")
    described = execute(rd, copy(bucket, "broken/"))
    assert described["Status"] == "FAILED" and "not a readable Parquet file" in described["Error"]
    rows = query(rd, "SELECT file_name, error_code FROM sys_load_error_detail "
                     f"WHERE query_id = {described['RedshiftQueryId']}")
    assert rows == [[f"s3://{bucket}/broken/part-0.parquet", 15001]]

    write_parquet(tmp_path / "narrow.parquet", rows=[("e9", "u9")], columns="event_id VARCHAR, user_id VARCHAR")
    s3.upload_file(str(tmp_path / "narrow.parquet"), bucket, "narrow/part-0.parquet")
    described = execute(rd, copy(bucket, "narrow/part-0.parquet"))
    assert described["Status"] == "FAILED" and "has 2 columns" in described["Error"]

    nulls = [tuple(None if i == 0 else v for i, v in enumerate(SESSION_ROWS[0]))]
    write_parquet(tmp_path / "nulls.parquet", rows=nulls)
    s3.upload_file(str(tmp_path / "nulls.parquet"), bucket, "nulls/part-0.parquet")
    described = execute(rd, copy(bucket, "nulls/part-0.parquet"))
    assert described["Status"] == "FAILED" and "NOT NULL" in described["Error"]
    rows = query(rd, "SELECT column_name, error_code FROM sys_load_error_detail "
                     f"WHERE query_id = {described['RedshiftQueryId']}")
    assert rows == [["event_id", 1213]]
    assert query(rd, "SELECT COUNT(*) FROM staging.viewing_sessions") == [[0]]


def test_api_errors(rd, services):
    unknown = str(uuid.uuid4())
    with pytest.raises(rd.exceptions.ResourceNotFoundException) as e:
        rd.describe_statement(Id=unknown)
    assert e.value.response["Error"]["Message"] and e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(rd.exceptions.ResourceNotFoundException):
        rd.get_statement_result(Id=unknown + ":1")
    with pytest.raises(rd.exceptions.ResourceNotFoundException):
        rd.cancel_statement(Id=unknown)
    with pytest.raises(rd.exceptions.ValidationException):
        rd.describe_statement(Id="not-a-statement-id")
    with pytest.raises(rd.exceptions.ValidationException):
        rd.execute_statement(Sql="SELECT 1", Database="dev")  # neither cluster nor workgroup
    with pytest.raises(rd.exceptions.ValidationException):
        rd.execute_statement(Sql="SELECT 1", WorkgroupName="tvetl-test")  # no database
    with pytest.raises(rd.exceptions.ValidationException):
        rd.batch_execute_statement(Sqls=[f"SELECT {i}" for i in range(41)], **TARGET)

    done = batch(rd, ["SELECT 1", "CREATE TEMP TABLE t_probe (a INT)"])
    with pytest.raises(rd.exceptions.ValidationException):  # a batch's result is read per sub-statement
        rd.get_statement_result(Id=done["Id"])
    with pytest.raises(rd.exceptions.ResourceNotFoundException):  # DDL has no result
        rd.get_statement_result(Id=done["Id"] + ":2")
    assert records(rd, done["Id"] + ":1") == [[1]]
    with pytest.raises(rd.exceptions.ValidationException):  # already finished
        rd.cancel_statement(Id=done["Id"])
    sub = rd.describe_statement(Id=done["Id"] + ":1")
    assert sub["Id"] == done["Id"] + ":1" and "SubStatements" not in sub

    two = execute(rd, "SELECT 1; SELECT 2")
    assert two["Status"] == "FAILED" and "single SQL statement" in two["Error"]

    request = urllib.request.Request(services["standin"] + "/", data=b"{}", method="POST", headers={
        "X-Amz-Target": "RedshiftData.ListTables", "Content-Type": "application/x-amz-json-1.1"})
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(request)
    assert http.value.code == 400 and json.load(http.value)["__type"] == "UnknownOperationException"


def test_each_call_is_its_own_session_unless_kept_alive(rd):
    assert execute(rd, "CREATE TEMP TABLE scratch AS SELECT 7 AS v")["Status"] == "FINISHED"
    gone = execute(rd, "SELECT v FROM scratch")
    assert gone["Status"] == "FAILED" and "scratch" in gone["Error"]

    first = rd.execute_statement(Sql="CREATE TEMP TABLE kept AS SELECT 8 AS v", SessionKeepAliveSeconds=60,
                                 **TARGET)
    assert first.get("SessionId")
    assert wait(rd, first["Id"])[0]["Status"] == "FINISHED"
    second = rd.execute_statement(Sql="SELECT v FROM kept", SessionId=first["SessionId"])
    described, _ = wait(rd, second["Id"])
    assert described["Status"] == "FINISHED", described.get("Error")
    assert records(rd, second["Id"]) == [[8]]
