#!/usr/bin/env python3
"""A stand-in for the Amazon Redshift Data API that runs the SQL on DuckDB.

No local AWS emulator executes Data API SQL (ministack has no redshift-data
service), so this server speaks the Data API's wire protocol the way the AWS
SDKs send it -- POST /, header ``X-Amz-Target: RedshiftData.<Operation>``,
``Content-Type: application/x-amz-json-1.1`` -- and executes the statements on
a DuckDB database file. The SQL in infra/sql runs on DuckDB unchanged; the one
Redshift statement DuckDB cannot run, ``COPY <table> FROM 's3://…' … FORMAT AS
PARQUET [MANIFEST]``, is carried out here: the objects are fetched from the S3
endpoint (the local emulator) and inserted with ``read_parquet``.

Operations: ExecuteStatement, BatchExecuteStatement, DescribeStatement,
GetStatementResult, CancelStatement. What it models:

* Statements run asynchronously on one worker thread, in submission order, each
  request in its own DuckDB connection (a Data API call is its own session, so
  temp tables do not outlive it; SessionKeepAliveSeconds/SessionId keep one).
* Every call runs in one transaction: a batch is BEGIN … COMMIT, and any failure
  rolls the whole batch back and marks it FAILED, naming the sub-statement.
  Sub-statement ids are ``<Id>:1``, ``<Id>:2``, … as in the real API.
* The first DescribeStatement of a statement reports STARTED even if it is done
  (``--started-describes``), so clients' polling loops are exercised.
* A ClientToken seen before returns the earlier Id without running anything.
* GetStatementResult pages by ``--page-size`` rows with an opaque NextToken.
* A failed COPY leaves rows in ``sys_load_error_detail`` (the columns of
  Redshift's SYS_LOAD_ERROR_DETAIL; ``stl_load_errors`` is a view over it),
  written after the rollback so that they survive it, as system tables do.

It never contacts anything but the S3 endpoint it is given, which must be a
loopback address unless ``--allow-remote-s3``; DuckDB extension auto-install is
off, so no SQL can make it download anything.

    python server.py [--host 127.0.0.1] [--port 4577] [--db FILE] [--page-size N]
                     [--s3-endpoint URL] [--reset-db]

Besides the Data API: ``GET /`` or ``GET /_standin/health`` answers 200 with a
small JSON status, and ``POST /_standin/reset`` empties the database and forgets
every statement.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import decimal
import ipaddress
import json
import logging
import math
import os
import queue
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import duckdb

log = logging.getLogger("redshift-data-standin")

SUBMITTED, STARTED, FINISHED, ABORTED, FAILED = "SUBMITTED", "STARTED", "FINISHED", "ABORTED", "FAILED"
TERMINAL = (FINISHED, ABORTED, FAILED)

# BatchExecuteStatement's Sqls: "Minimum number of 1 item. Maximum number of 40 items."
MAX_BATCH_STATEMENTS = 40
# Statement ids: the service model's UUID pattern, with a sub-statement suffix.
ID_RE = re.compile(r"^[a-z0-9]{8}(?:-[a-z0-9]{4}){3}-[a-z0-9]{12}(?::\d{1,2})?$")

DUCKDB_CONFIG = {
    # Nothing in a statement may make DuckDB fetch an extension from the network.
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}

# Load error codes written to sys_load_error_detail. Redshift's own codes for
# Parquet loads are not documented one by one; these are the stand-in's.
ERR_S3 = 8001  # object, prefix or manifest missing or unreadable in S3
ERR_PARQUET = 15001  # not a Parquet file, or a file DuckDB cannot read
ERR_SCHEMA = 15007  # Parquet columns do not fit the table (count or type)
ERR_NOT_NULL = 1213  # missing data for a NOT NULL column
ERR_OTHER = 1200  # any other failure while inserting the rows

LOAD_ERROR_DDL = """
CREATE TABLE IF NOT EXISTS main.sys_load_error_detail (
    user_id INTEGER,
    query_id BIGINT,
    transaction_id BIGINT,
    session_id INTEGER,
    database_name VARCHAR,
    table_id INTEGER,
    start_time TIMESTAMP,
    file_name VARCHAR,
    line_number BIGINT,
    column_name VARCHAR,
    column_type VARCHAR,
    column_length VARCHAR,
    position INTEGER,
    error_code INTEGER,
    error_message VARCHAR
)
"""
STL_VIEW_DDL = """
CREATE OR REPLACE VIEW main.stl_load_errors AS
SELECT user_id AS userid, 0 AS slice, table_id AS tbl, start_time AS starttime,
       session_id AS session, query_id AS query, file_name AS filename, line_number,
       column_name AS colname, column_type AS type, column_length AS col_length, position,
       CAST(NULL AS VARCHAR) AS raw_line, CAST(NULL AS VARCHAR) AS raw_field_value,
       error_code AS err_code, error_message AS err_reason
FROM main.sys_load_error_detail
"""


class ApiError(Exception):
    """An error answer of the API: HTTP status, __type and Message."""

    def __init__(self, kind: str, message: str, status: int = 400, **extra):
        super().__init__(message)
        self.kind, self.message, self.status, self.extra = kind, message, status, extra


class StatementFailure(Exception):
    """A statement failed; `load_errors` are rows for sys_load_error_detail."""

    def __init__(self, message: str, load_errors=None):
        super().__init__(message)
        self.load_errors = load_errors or []


class Cancelled(Exception):
    pass


def now() -> float:
    return time.time()


def validation(message: str) -> ApiError:
    return ApiError("ValidationException", message)


# --------------------------------------------------------------------------
# SQL text helpers
# --------------------------------------------------------------------------


def strip_sql(sql: str) -> str:
    """The statement without leading comments/whitespace or trailing semicolons."""
    s = sql
    while True:
        s = s.lstrip()
        if s.startswith("--"):
            nl = s.find("\n")
            s = "" if nl < 0 else s[nl + 1 :]
        elif s.startswith("/*"):
            end = s.find("*/")
            s = "" if end < 0 else s[end + 2 :]
        else:
            break
    return s.rstrip().rstrip(";").rstrip()


def sql_literal(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def substitute_parameters(sql: str, parameters) -> str:
    """Replaces :name with the parameter's value as a SQL string literal.

    The Data API sends every value as a string and Redshift converts it to the
    type the context needs; a DuckDB string literal is converted the same way.
    Text inside quotes or comments and `::type` casts are left alone.
    """
    if not parameters:
        return sql
    values = {}
    for p in parameters:
        if not isinstance(p, dict) or "name" not in p or "value" not in p:
            raise validation("each of Parameters needs a name and a value")
        values[p["name"]] = p["value"]
    out, i, n = [], 0, len(sql)
    used = set()
    while i < n:
        c = sql[i]
        if c in ("'", '"'):
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            out.append(sql[i : j + 1])
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(sql[i:j])
            i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i)
            j = n if j < 0 else j + 2
            out.append(sql[i:j])
            i = j
        elif c == ":" and i + 1 < n and sql[i + 1] == ":":
            out.append("::")
            i += 2
        elif c == ":" and i + 1 < n and (sql[i + 1].isalpha() or sql[i + 1] == "_"):
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] == "_"):
                j += 1
            name = sql[i + 1 : j]
            if name not in values:
                raise StatementFailure(f"no value was given for parameter :{name}")
            used.add(name)
            out.append(sql_literal(values[name]))
            i = j
        else:
            out.append(c)
            i += 1
    unused = set(values) - used
    if unused:
        raise StatementFailure(f"parameters not used by the statement: {', '.join(sorted(unused))}")
    return "".join(out)


QUERY_TYPES = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN, duckdb.StatementType.PRAGMA,
               duckdb.StatementType.CALL, duckdb.StatementType.EXECUTE}
DML_TYPES = {duckdb.StatementType.INSERT, duckdb.StatementType.UPDATE, duckdb.StatementType.DELETE,
             duckdb.StatementType.MERGE_INTO}

TRANSACTION_RE = re.compile(
    r"^(?P<kw>BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK|ABORT)(?:\s+(?:WORK|TRANSACTION))?$", re.I
)

IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)'
COPY_RE = re.compile(
    rf"^COPY\s+(?P<table>{IDENT}(?:\s*\.\s*{IDENT}){{0,2}})\s*(?:\((?P<cols>[^)]*)\)\s*)?"
    r"FROM\s+'(?P<src>s3://(?:[^']|'')*)'(?P<opts>.*)$",
    re.I | re.S,
)


# --------------------------------------------------------------------------
# Values and column metadata in the Data API's form
# --------------------------------------------------------------------------

INT_TYPES = {"TINYINT": ("int2", 5), "SMALLINT": ("int2", 5), "UTINYINT": ("int2", 5),
             "INTEGER": ("int4", 10), "USMALLINT": ("int4", 10),
             "BIGINT": ("int8", 19), "UINTEGER": ("int8", 19)}


def column_metadata(name: str, duck_type) -> dict:
    t = str(duck_type)
    precision, scale, signed, case_sensitive = 0, 0, False, False
    if t == "BOOLEAN":
        type_name, precision = "bool", 1
    elif t in INT_TYPES:
        type_name, precision = INT_TYPES[t]
        signed = True
    elif t in ("HUGEINT", "UBIGINT", "UHUGEINT"):
        type_name, precision, signed = "numeric", 38, True
    elif t == "FLOAT":
        type_name, precision, signed = "float4", 8, True
    elif t == "DOUBLE":
        type_name, precision, signed = "float8", 17, True
    elif t.startswith("DECIMAL"):
        type_name, signed = "numeric", True
        m = re.match(r"DECIMAL\((\d+),\s*(\d+)\)", t)
        if m:
            precision, scale = int(m.group(1)), int(m.group(2))
    elif t in ("VARCHAR", "UUID", '"NULL"', "NULL", "BIT"):
        type_name, precision, case_sensitive = "varchar", 65535, True
    elif t == "DATE":
        type_name, precision = "date", 13
    elif t == "TIMESTAMP WITH TIME ZONE":
        type_name, precision, scale = "timestamptz", 35, 6
    elif t.startswith("TIMESTAMP"):
        type_name, precision, scale = "timestamp", 29, 6
    elif t == "TIME WITH TIME ZONE":
        type_name, precision, scale = "timetz", 21, 6
    elif t == "TIME":
        type_name, precision, scale = "time", 15, 6
    elif t == "INTERVAL":
        type_name = "interval"
    elif t == "BLOB":
        type_name = "varbyte"
    elif t.endswith("]") or t.startswith(("STRUCT", "MAP", "UNION", "JSON")):
        type_name, case_sensitive = "super", True
    else:
        type_name, case_sensitive = "varchar", True
    return {
        "name": name,
        "label": name,
        "typeName": type_name,
        "isCaseSensitive": case_sensitive,
        "isCurrency": False,
        "isSigned": signed,
        "nullable": 1,
        "precision": precision,
        "scale": scale,
        "length": 0,
        "schemaName": "",
        "tableName": "",
    }


def _fraction(micro: int) -> str:
    return ("." + f"{micro:06d}".rstrip("0")) if micro else ""


def format_timestamp(v: dt.datetime) -> str:
    if v.tzinfo is not None:
        v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return v.strftime("%Y-%m-%d %H:%M:%S") + _fraction(v.microsecond) + "+00"
    return v.strftime("%Y-%m-%d %H:%M:%S") + _fraction(v.microsecond)


def format_interval(v: dt.timedelta) -> str:
    sign = "-" if v < dt.timedelta(0) else ""
    v = abs(v)
    days, secs = v.days, v.seconds
    parts = []
    if days:
        parts.append(f"{sign}{days} day{'s' if days != 1 else ''}")
    if secs or v.microseconds or not days:
        h, rem = divmod(secs, 3600)
        m, s = divmod(rem, 60)
        parts.append(f"{sign}{h:02d}:{m:02d}:{s:02d}{_fraction(v.microseconds)}")
    return " ".join(parts)


def to_field(v) -> dict:
    """One value as a Data API Field: exactly one member set (it is a union)."""
    if v is None:
        return {"isNull": True}
    if isinstance(v, bool):
        return {"booleanValue": v}
    if isinstance(v, int):
        if -(2**63) <= v < 2**63:
            return {"longValue": v}
        return {"stringValue": str(v)}
    if isinstance(v, float):
        if math.isfinite(v):
            return {"doubleValue": v}
        return {"stringValue": "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")}
    if isinstance(v, decimal.Decimal):
        return {"stringValue": format(v, "f")}
    if isinstance(v, str):
        return {"stringValue": v}
    if isinstance(v, dt.datetime):
        return {"stringValue": format_timestamp(v)}
    if isinstance(v, dt.date):
        return {"stringValue": v.isoformat()}
    if isinstance(v, dt.time):
        base = v.replace(microsecond=0, tzinfo=None).isoformat() + _fraction(v.microsecond)
        return {"stringValue": base + ("+00" if v.tzinfo is not None else "")}
    if isinstance(v, dt.timedelta):
        return {"stringValue": format_interval(v)}
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"blobValue": base64.b64encode(bytes(v)).decode("ascii")}
    if isinstance(v, uuid.UUID):
        return {"stringValue": str(v)}
    if isinstance(v, (list, tuple, dict)):
        return {"stringValue": json.dumps(v, default=str, separators=(",", ":"))}
    return {"stringValue": str(v)}


# Families of types, for checking a Parquet file's columns against the table
# COPY loads: Redshift rejects a file whose column types do not fit.
def type_family(t: str) -> tuple[str, int]:
    t = t.upper()
    widths = {"TINYINT": 1, "UTINYINT": 1, "SMALLINT": 2, "USMALLINT": 2, "INTEGER": 4,
              "UINTEGER": 4, "BIGINT": 8, "UBIGINT": 8, "HUGEINT": 16}
    if t in widths:
        return "int", widths[t]
    if t in ("FLOAT", "REAL"):
        return "float", 4
    if t == "DOUBLE":
        return "float", 8
    if t.startswith("DECIMAL"):
        return "decimal", 0
    if t in ("VARCHAR", "BLOB", "UUID") or t.startswith("VARCHAR"):
        return "string", 0
    if t == "BOOLEAN":
        return "bool", 0
    if t == "DATE":
        return "date", 0
    if t.startswith("TIMESTAMP"):
        return "timestamp", 0
    if t.startswith("TIME"):
        return "time", 0
    return "other", 0


def fits(file_type: str, table_type: str) -> bool:
    ff, fw = type_family(file_type)
    tf, tw = type_family(table_type)
    if "other" in (ff, tf):
        return True
    if tf == "float" and ff == "float":
        return fw <= tw
    if tf == "int" and ff == "int":
        return fw <= tw
    if tf == "decimal":
        return ff in ("decimal", "int")
    return ff == tf


# --------------------------------------------------------------------------
# Statements
# --------------------------------------------------------------------------


class Statement:
    def __init__(self, sid: str, sql: str, request: dict, parent: "Statement | None" = None, index: int = 0):
        self.id = sid
        self.sql = sql
        self.request = request
        self.parent = parent
        self.index = index
        self.subs: list[Statement] = []
        self.is_batch = False
        self.status = SUBMITTED
        self.error: str | None = None
        self.created_at = self.updated_at = now()
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.has_result_set = False
        self.result_rows = -1
        self.result_size = -1
        self.columns: list[dict] = []
        self.records: list[list[dict]] = []
        self.query_id = 0
        self.describes = 0
        self.cancel_requested = False

    def set_status(self, status: str, error: str | None = None):
        self.status = status
        if error is not None:
            self.error = error
        t = now()
        self.updated_at = t
        if status == STARTED and self.started_at is None:
            self.started_at = t
        if status in TERMINAL:
            self.ended_at = t

    def duration_ns(self) -> int:
        if self.started_at is None or self.ended_at is None:
            return -1
        return int((self.ended_at - self.started_at) * 1e9)


class Engine:
    """Holds every statement and runs them one at a time on DuckDB."""

    def __init__(self, db_path: str, page_size: int, s3_endpoint: str | None, started_describes: int,
                 allow_remote_s3: bool, max_batch: int, check_copy_types: bool = True):
        self.db_path = db_path
        self.check_copy_types = check_copy_types
        self.page_size = page_size
        self.s3_endpoint = s3_endpoint
        self.started_describes = started_describes
        self.allow_remote_s3 = allow_remote_s3
        self.max_batch = max_batch
        self.lock = threading.Lock()  # statements, tokens, sessions, `running`
        self.statements: dict[str, Statement] = {}
        self.tokens: dict[tuple[str, str], tuple[str, dict]] = {}
        self.sessions: dict[str, dict] = {}
        self.jobs: queue.Queue = queue.Queue()
        self.running: tuple[Statement, object] | None = None
        self._s3 = None
        self.con = self._open()
        self.probe = duckdb.connect(":memory:", config=dict(DUCKDB_CONFIG))
        self.next_query_id = self._first_query_id()
        self.next_transaction_id = self.next_query_id
        threading.Thread(target=self._work, name="standin-worker", daemon=True).start()

    # -- database ----------------------------------------------------------

    def _open(self):
        con = duckdb.connect(self.db_path, config=dict(DUCKDB_CONFIG))
        try:
            con.execute("SET TimeZone = 'UTC'")
        except duckdb.Error:
            pass
        con.execute(LOAD_ERROR_DDL)
        con.execute(STL_VIEW_DDL)
        return con

    def _first_query_id(self) -> int:
        got = self.con.execute("SELECT COALESCE(MAX(query_id), 0) FROM main.sys_load_error_detail").fetchone()[0]
        return max(int(got) + 1, 1000)

    def _reset_database(self):
        for s in self.sessions.values():
            try:
                s["cursor"].close()
            except duckdb.Error:
                pass
        self.sessions.clear()
        self.con.close()
        if self.db_path != ":memory:":
            for path in (self.db_path, self.db_path + ".wal"):
                if os.path.exists(path):
                    os.remove(path)
        self.con = self._open()
        with self.lock:
            self.statements.clear()
            self.tokens.clear()

    # -- S3 ----------------------------------------------------------------

    def s3(self):
        if self._s3 is None:
            endpoint = self.s3_endpoint
            if not endpoint:
                raise StatementFailure(
                    "COPY needs an S3 endpoint: start the stand-in with --s3-endpoint or AWS_ENDPOINT_URL"
                )
            host = urllib.parse.urlparse(endpoint).hostname or ""
            if not self.allow_remote_s3 and not is_loopback(host):
                raise StatementFailure(f"refusing S3 endpoint {endpoint}: not a loopback address")
            import boto3
            from botocore.config import Config

            session = boto3.session.Session(
                aws_access_key_id="test",
                aws_secret_access_key="test",
                region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            )
            self._s3 = session.client(
                "s3",
                endpoint_url=endpoint,
                config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
            )
        return self._s3

    # -- requests (HTTP threads) -------------------------------------------

    def submit(self, operation: str, body: dict) -> dict:
        if operation == "ExecuteStatement":
            sql = body.get("Sql")
            if not isinstance(sql, str) or not sql.strip():
                raise validation("Sql is required")
            sqls = [sql]
        else:
            sqls = body.get("Sqls")
            if not isinstance(sqls, list) or not sqls:
                raise validation("Sqls must hold at least 1 SQL statement")
            if len(sqls) > self.max_batch:
                raise validation(
                    f"Sqls holds {len(sqls)} statements; BatchExecuteStatement takes at most {self.max_batch}"
                )
            if not all(isinstance(s, str) and s.strip() for s in sqls):
                raise validation("every member of Sqls must be a non-empty string")
        session_id = body.get("SessionId")
        keep_alive = body.get("SessionKeepAliveSeconds")
        if session_id is None:
            cluster, workgroup = body.get("ClusterIdentifier"), body.get("WorkgroupName")
            if bool(cluster) == bool(workgroup):
                raise validation("give exactly one of ClusterIdentifier and WorkgroupName")
            if not body.get("Database"):
                raise validation("Database is required")
        request = {k: body[k] for k in ("Database", "ClusterIdentifier", "WorkgroupName", "SecretArn", "DbUser",
                                         "StatementName", "Parameters") if body.get(k) is not None}
        token = body.get("ClientToken")
        fingerprint = {"sqls": sqls, **{k: v for k, v in request.items() if k != "StatementName"}}
        with self.lock:
            if token:
                seen = self.tokens.get((operation, token))
                if seen:
                    earlier_id, earlier_fp = seen
                    if earlier_fp != fingerprint:
                        raise validation(f"ClientToken {token} was already used with a different request")
                    return self._submit_response(self.statements[earlier_id])
            if session_id is not None:
                session = self.sessions.get(session_id)
                if session is None or session["expires"] < now():
                    raise ApiError("ResourceNotFoundException", f"Session {session_id} does not exist or has expired",
                                   ResourceId=session_id)
                request = {**session["request"], **request}
            elif keep_alive:
                session_id = str(uuid.uuid4())
                self.sessions[session_id] = {"cursor": None, "expires": now() + int(keep_alive), "request": request,
                                             "keep_alive": int(keep_alive)}
            if session_id is not None:
                request["SessionId"] = session_id
            top = Statement(str(uuid.uuid4()), "; ".join(sqls) if operation != "ExecuteStatement" else sqls[0],
                            request)
            if operation == "BatchExecuteStatement":
                top.is_batch = True
                top.subs = [Statement(f"{top.id}:{i}", s, request, parent=top, index=i) for i, s in
                            enumerate(sqls, start=1)]
            for st in [top, *top.subs]:
                st.query_id = self.next_query_id
                self.next_query_id += 1
                self.statements[st.id] = st
            if token:
                self.tokens[(operation, token)] = (top.id, fingerprint)
        self.jobs.put(("run", top))
        log.info("%s %s (%d statement%s)", operation, top.id, len(sqls), "" if len(sqls) == 1 else "s")
        return self._submit_response(top)

    @staticmethod
    def _submit_response(st: Statement) -> dict:
        out = {"Id": st.id, "CreatedAt": st.created_at}
        for k in ("Database", "ClusterIdentifier", "WorkgroupName", "SecretArn", "DbUser", "SessionId"):
            if st.request.get(k) is not None:
                out[k] = st.request[k]
        return out

    def lookup(self, sid) -> Statement:
        if not isinstance(sid, str) or not sid:
            raise validation("Id is required")
        if not ID_RE.match(sid):
            raise validation(f"Id {sid} is not a valid statement id")
        with self.lock:
            st = self.statements.get(sid)
        if st is None:
            raise ApiError("ResourceNotFoundException", f"Query {sid} does not exist", ResourceId=sid)
        return st

    def describe(self, sid) -> dict:
        st = self.lookup(sid)
        with self.lock:
            top = st.parent or st
            st.describes += 1
            fake = st.status in TERMINAL and st.status != ABORTED and st.describes <= self.started_describes
            out = {"Id": st.id, "QueryString": st.sql, "CreatedAt": st.created_at, "UpdatedAt": st.updated_at,
                   "RedshiftQueryId": st.query_id, "RedshiftPid": 1073741824 + (zlib.crc32(top.id.encode()) % 100000)}
            for k in ("Database", "ClusterIdentifier", "WorkgroupName", "SecretArn", "DbUser", "SessionId"):
                if top.request.get(k) is not None:
                    out[k] = top.request[k]
            if top.request.get("Parameters") and st is top:
                out["QueryParameters"] = top.request["Parameters"]
            if fake:
                out.update(Status=STARTED, Duration=-1, HasResultSet=False, ResultRows=-1, ResultSize=-1,
                           UpdatedAt=st.started_at or st.updated_at)
            else:
                out.update(Status=st.status, Duration=st.duration_ns(), HasResultSet=st.has_result_set,
                           ResultRows=st.result_rows, ResultSize=st.result_size)
                if st.error is not None:
                    out["Error"] = st.error
            if st.is_batch:
                out["SubStatements"] = [self._sub_view(sub, fake) for sub in st.subs]
        return out

    @staticmethod
    def _sub_view(sub: Statement, parent_faked: bool) -> dict:
        status = sub.status
        if parent_faked:  # keep the picture consistent with a batch still running
            status = {FAILED: STARTED, ABORTED: SUBMITTED}.get(status, status)
        out = {"Id": sub.id, "QueryString": sub.sql, "Status": status, "CreatedAt": sub.created_at,
               "UpdatedAt": sub.updated_at, "RedshiftQueryId": sub.query_id,
               "Duration": sub.duration_ns() if status in TERMINAL else -1,
               "HasResultSet": sub.has_result_set if status == FINISHED else False,
               "ResultRows": sub.result_rows if status == FINISHED else -1,
               "ResultSize": sub.result_size if status == FINISHED else -1}
        if sub.error is not None and not parent_faked:
            out["Error"] = sub.error
        return out

    def result(self, sid, next_token) -> dict:
        st = self.lookup(sid)
        with self.lock:
            if st.is_batch:
                raise validation("BatchExecuteStatement result can only be retrieved with sub-statement id.")
            if st.status != FINISHED or not st.has_result_set:
                raise ApiError("ResourceNotFoundException",
                               "Query does not have result. Please check query status with DescribeStatement.",
                               ResourceId=sid)
            offset = 0
            if next_token:
                try:
                    decoded = json.loads(base64.urlsafe_b64decode(next_token.encode()).decode())
                    if decoded["id"] != st.id:
                        raise ValueError
                    offset = int(decoded["offset"])
                    if not 0 < offset < len(st.records):
                        raise ValueError
                except (ValueError, KeyError, TypeError, json.JSONDecodeError):
                    raise validation("NextToken is invalid") from None
            end = offset + self.page_size
            out = {"ColumnMetadata": st.columns, "Records": st.records[offset:end], "TotalNumRows": len(st.records)}
            if end < len(st.records):
                out["NextToken"] = base64.urlsafe_b64encode(
                    json.dumps({"id": st.id, "offset": end}).encode()).decode()
        return out

    def cancel(self, sid) -> dict:
        st = self.lookup(sid)
        if st.parent is not None:
            raise validation("cancel a batch by its Id, not a sub-statement's")
        with self.lock:
            if st.status in TERMINAL:
                raise validation(f"Could not cancel a query that is already in {st.status} state.")
            st.cancel_requested = True
            if st.status == SUBMITTED:
                st.set_status(ABORTED)
                for sub in st.subs:
                    sub.set_status(ABORTED)
            elif self.running and self.running[0] is st:
                try:
                    self.running[1].interrupt()
                except duckdb.Error:
                    pass
        log.info("CancelStatement %s", sid)
        return {"Status": True}

    def reset(self):
        done = threading.Event()
        self.jobs.put(("reset", done))
        done.wait(60)

    # -- execution (worker thread) -----------------------------------------

    def _work(self):
        while True:
            kind, arg = self.jobs.get()
            try:
                if kind == "reset":
                    self._reset_database()
                    arg.set()
                    log.info("reset: database emptied, statements forgotten")
                else:
                    self._run(arg)
            except Exception:  # never let the worker die
                log.exception("worker error")

    def _cursor_for(self, top: Statement):
        sid = top.request.get("SessionId")
        if sid:
            with self.lock:
                session = self.sessions[sid]
                session["expires"] = now() + session["keep_alive"]
            if session["cursor"] is None:
                session["cursor"] = self.con.cursor()
            return session["cursor"], False
        return self.con.cursor(), True

    def _run(self, top: Statement):
        with self.lock:
            if top.status != SUBMITTED:  # cancelled while queued
                return
            top.set_status(STARTED)
        cur, owned = self._cursor_for(top)
        with self.lock:
            self.running = (top, cur)
        units = top.subs if top.is_batch else [top]
        load_errors: list[dict] = []
        transaction_id = self.next_transaction_id
        self.next_transaction_id += 1
        failure: tuple[Statement, str] | None = None
        cancelled = False
        try:
            cur.execute("BEGIN TRANSACTION")
            for unit in units:
                if top.cancel_requested:
                    raise Cancelled()
                if unit is not top:
                    with self.lock:
                        unit.set_status(STARTED)
                try:
                    self._execute(cur, unit, top, transaction_id)
                except StatementFailure as e:
                    load_errors.extend(e.load_errors)
                    failure = (unit, str(e))
                    break
                except duckdb.InterruptException:
                    raise Cancelled() from None
                except duckdb.Error as e:
                    if top.cancel_requested:
                        raise Cancelled() from None
                    failure = (unit, engine_message(e))
                    break
                if unit is not top:
                    with self.lock:
                        unit.set_status(FINISHED)
            if failure is None:
                try:
                    cur.execute("COMMIT")
                except duckdb.Error as e:
                    failure = (units[-1], "COMMIT failed: " + engine_message(e))
        except Cancelled:
            cancelled = True
        except Exception as e:  # a bug here must still end the statement
            log.exception("statement %s", top.id)
            failure = (units[0], f"internal error in the stand-in: {e}")
        if failure is not None or cancelled:
            try:
                cur.execute("ROLLBACK")
            except duckdb.Error:
                pass
        if load_errors:  # after the rollback, so that they stay, as system tables' rows do
            self._record_load_errors(cur, load_errors)
        if owned:
            try:
                cur.close()
            except duckdb.Error:
                pass
        with self.lock:
            self.running = None
            if cancelled:
                for unit in units:
                    if unit.status not in TERMINAL or unit is top:
                        unit.set_status(ABORTED)
                top.set_status(ABORTED)
            elif failure is not None:
                failed_unit, message = failure
                for unit in units:
                    if unit is failed_unit:
                        unit.set_status(FAILED, message)
                    elif unit.status != FINISHED:
                        unit.set_status(ABORTED)
                if top.is_batch:
                    n = failed_unit.index
                    top.set_status(FAILED, f"Sub-statement {n} of {len(units)} ({failed_unit.id}) failed, "
                                           f"so the whole batch was rolled back: {message}")
                else:
                    top.set_status(FAILED, message)
            else:
                top.set_status(FINISHED)
        log.info("%s %s%s", top.id, top.status, f": {top.error}" if top.error else "")

    def _execute(self, cur, unit: Statement, top: Statement, transaction_id: int):
        text = strip_sql(unit.sql)
        m = COPY_RE.match(text)
        if m:
            rows = self._copy(cur, unit, top, m, transaction_id)
            unit.has_result_set, unit.result_rows, unit.result_size = False, rows, 0
            return
        sql = substitute_parameters(unit.sql, top.request.get("Parameters"))
        try:
            parsed = duckdb.extract_statements(sql)
        except duckdb.Error as e:
            raise StatementFailure(engine_message(e)) from None
        if len(parsed) != 1:
            raise StatementFailure(
                f"a statement must be a single SQL statement, this text holds {len(parsed)}; "
                "send several with BatchExecuteStatement"
            )
        stype = parsed[0].type
        if stype == duckdb.StatementType.TRANSACTION:
            self._transaction_control(cur, text)
            unit.has_result_set, unit.result_rows, unit.result_size = False, 0, 0
            return
        cur.execute(sql)
        description = cur.description or []
        is_count = len(description) == 1 and description[0][0] == "Count"
        dml = stype in DML_TYPES
        # Queries have a result set; so has DML with RETURNING. Other DML
        # reports its row count; DDL and the rest report neither.
        if description and (stype in QUERY_TYPES or (dml and not is_count)):
            rows = cur.fetchall()
            unit.columns = [column_metadata(d[0], d[1]) for d in description]
            unit.records = [[to_field(v) for v in row] for row in rows]
            unit.has_result_set = True
            unit.result_rows = len(rows)
            unit.result_size = len(json.dumps(unit.records, separators=(",", ":")))
        else:
            got = cur.fetchall() if description else []
            unit.has_result_set = False
            unit.result_rows = int(got[0][0]) if dml and is_count and got else 0
            unit.result_size = 0

    @staticmethod
    def _transaction_control(cur, text: str):
        m = TRANSACTION_RE.match(" ".join(text.split()))
        kw = (m.group("kw").upper().split()[0] if m else "")
        # The call already runs in one transaction: BEGIN is a no-op (Redshift
        # only warns), COMMIT/END commit and open the next, ROLLBACK/ABORT too.
        if kw in ("COMMIT", "END"):
            cur.execute("COMMIT")
            cur.execute("BEGIN TRANSACTION")
        elif kw in ("ROLLBACK", "ABORT"):
            cur.execute("ROLLBACK")
            cur.execute("BEGIN TRANSACTION")

    # -- COPY --------------------------------------------------------------

    def _copy(self, cur, unit: Statement, top: Statement, m, transaction_id: int) -> int:
        table, cols = m.group("table"), m.group("cols")
        source = m.group("src").replace("''", "'")
        options = re.sub(r"'(?:[^']|'')*'", "''", m.group("opts")).upper()
        started = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        table_id = zlib.crc32(table.lower().encode()) & 0x7FFFFFFF

        def row(file_name, message, code, column_name="", column_type="") -> dict:
            return {"user_id": 100, "query_id": unit.query_id, "transaction_id": transaction_id,
                    "session_id": 1073741824 + (zlib.crc32(top.id.encode()) % 100000),
                    "database_name": top.request.get("Database", "dev"), "table_id": table_id,
                    "start_time": started, "file_name": file_name[:256], "line_number": 0,
                    "column_name": column_name, "column_type": column_type, "column_length": "",
                    "position": 0, "error_code": code, "error_message": message[:512]}

        def fail(file_name, reason, code, column_name="", column_type=""):
            raise StatementFailure(
                f"Load into table '{table}' failed. Check 'sys_load_error_detail' system table for details. "
                f"[{file_name}: {reason}]",
                [row(file_name, reason, code, column_name, column_type)],
            )

        fmt = re.search(r"\bFORMAT\s+(?:AS\s+)?([A-Z]+)", options)
        if not fmt:
            fmt = re.search(r"\b(CSV|JSON|AVRO|ORC|PARQUET|SHAPEFILE)\b", options)
        if not fmt or fmt.group(1) != "PARQUET":
            raise StatementFailure("the stand-in runs COPY … FORMAT AS PARQUET only"
                                   + (f" (this COPY is {fmt.group(1)})" if fmt else " (this COPY has no FORMAT)"))
        if not re.search(r"\b(IAM_ROLE|CREDENTIALS|ACCESS_KEY_ID|SESSION_TOKEN)\b", options):
            raise StatementFailure("COPY needs an authorization clause: IAM_ROLE, CREDENTIALS or ACCESS_KEY_ID")
        manifest = re.search(r"\bMANIFEST\b", options) is not None

        # Columns of the target, before any file is read: a missing table is a
        # plain statement error, not a load error.
        try:
            target = cur.execute(f"SELECT * FROM {table} LIMIT 0").description
        except duckdb.InterruptException:
            raise
        except duckdb.Error as e:
            raise StatementFailure(f"COPY into {table}: {engine_message(e).splitlines()[0]}") from None
        target_types = [(d[0], str(d[1])) for d in target]
        if cols:
            wanted = [c.strip().strip('"').lower() for c in cols.split(",") if c.strip()]
            by_name = {n.lower(): (n, t) for n, t in target_types}
            missing = [c for c in wanted if c not in by_name]
            if missing:
                raise StatementFailure(f"column {missing[0]} of the COPY column list is not in {table}")
            target_types = [by_name[c] for c in wanted]

        bucket, _, key = source[len("s3://"):].partition("/")
        s3 = self.s3()
        from botocore.exceptions import BotoCoreError, ClientError

        def s3_reason(e) -> str:
            if isinstance(e, ClientError):
                err = e.response.get("Error", {})
                return f"S3ServiceException: {err.get('Message') or err.get('Code')} ({err.get('Code')})"
            return f"S3ServiceException: {e}"

        objects: list[tuple[str, str, str, bool]] = []  # (url, bucket, key, mandatory)
        if manifest:
            try:
                body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except (ClientError, BotoCoreError) as e:
                fail(source, f"cannot read the manifest: {s3_reason(e)}", ERR_S3)
            try:
                entries = json.loads(body)["entries"]
                if not isinstance(entries, list):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                fail(source, "the manifest is not JSON with an \"entries\" list", ERR_S3)
            for entry in entries:
                url = entry.get("url", "") if isinstance(entry, dict) else ""
                if not url.startswith("s3://") or "/" not in url[5:]:
                    fail(source, f"manifest entry {entry!r} has no s3://bucket/key url", ERR_S3)
                length = (entry.get("meta") or {}).get("content_length")
                if not isinstance(length, int):
                    # Redshift needs meta.content_length for every file of a columnar COPY.
                    fail(url, "manifest entry has no meta.content_length, which a PARQUET COPY requires", ERR_S3)
                b, _, k = url[5:].partition("/")
                objects.append((url, b, k, bool(entry.get("mandatory", False))))
        else:
            try:
                pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
                for page in pages:
                    for obj in page.get("Contents", []):
                        if not obj["Key"].endswith("/"):
                            objects.append((f"s3://{bucket}/{obj['Key']}", bucket, obj["Key"], True))
            except (ClientError, BotoCoreError) as e:
                fail(source, s3_reason(e), ERR_S3)
            if not objects:
                fail(source, f"The specified S3 prefix '{key}' does not exist", ERR_S3)

        workdir = tempfile.mkdtemp(prefix="standin-copy-")
        try:
            files: list[tuple[str, str]] = []
            for i, (url, b, k, mandatory) in enumerate(objects):
                path = os.path.join(workdir, f"{i:05d}.parquet")
                try:
                    with open(path, "wb") as out:
                        body = s3.get_object(Bucket=b, Key=k)["Body"]
                        for chunk in iter(lambda: body.read(1 << 20), b""):
                            out.write(chunk)
                except (ClientError, BotoCoreError) as e:
                    if manifest and not mandatory and isinstance(e, ClientError) and \
                            e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                        continue
                    fail(url, s3_reason(e), ERR_S3)
                files.append((url, path))
            if not files:
                fail(source, "no file of the manifest was found", ERR_S3)
            for url, path in files:
                try:
                    columns = self.probe.execute(f"DESCRIBE SELECT * FROM read_parquet({sql_literal(path)})").fetchall()
                    self.probe.execute(f"SELECT COUNT(*) FROM read_parquet({sql_literal(path)})").fetchall()
                except duckdb.Error as e:
                    fail(url, f"not a readable Parquet file: {engine_message(e)}", ERR_PARQUET)
                if len(columns) != len(target_types):
                    fail(url, f"the file has {len(columns)} columns but {table} loads {len(target_types)} "
                              "(PARQUET COPY maps columns by position)", ERR_SCHEMA)
                for position, ((fname, ftype, *_), (tname, ttype)) in enumerate(zip(columns, target_types), 1):
                    if self.check_copy_types and not fits(ftype, ttype):
                        fail(url, f"incompatible Parquet schema for column {position} ('{tname}'): "
                                  f"column type {ttype}, Parquet column '{fname}' is {ftype}", ERR_SCHEMA,
                             column_name=tname, column_type=ttype.lower()[:10])
            listing = ", ".join(sql_literal(p) for _, p in files)
            insert = f"INSERT INTO {table}{f' ({cols})' if cols else ''} " \
                     f"SELECT * FROM read_parquet([{listing}], hive_partitioning = false)"
            try:
                loaded = cur.execute(insert).fetchone()[0]
            except duckdb.InterruptException:
                raise
            except duckdb.Error as e:
                message = engine_message(e)
                nn = re.search(r"NOT NULL constraint failed: [\w\"]+\.([\w\"]+)", message)
                code = ERR_NOT_NULL if nn else ERR_OTHER
                column = nn.group(1).strip('"') if nn else ""
                rows = [row(url, message, code, column) for url, _ in files]
                raise StatementFailure(
                    f"Load into table '{table}' failed. Check 'sys_load_error_detail' system table for details. "
                    f"[{message}]", rows) from None
            log.info("COPY %s: %d rows from %d file(s)", table, loaded, len(files))
            return int(loaded)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _record_load_errors(self, cur, rows: list[dict]):
        names = list(rows[0])
        try:
            cur.execute("BEGIN TRANSACTION")
            cur.executemany(
                f"INSERT INTO main.sys_load_error_detail ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                [[r[n] for n in names] for r in rows],
            )
            cur.execute("COMMIT")
        except duckdb.Error:
            log.exception("could not record load errors")
            try:
                cur.execute("ROLLBACK")
            except duckdb.Error:
                pass


def engine_message(e: Exception) -> str:
    return str(e).strip()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except OSError:
            return False


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------

OPERATIONS = {"ExecuteStatement", "BatchExecuteStatement", "DescribeStatement", "GetStatementResult",
              "CancelStatement"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "redshift-data-standin"
    engine: Engine

    def log_message(self, fmt, *args):
        log.debug("%s " + fmt, self.address_string(), *args)

    def _send(self, status: int, payload: dict, content_type="application/x-amz-json-1.1", headers=None):
        body = json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, err: ApiError):
        payload = {"__type": err.kind, "Message": err.message, **err.extra}
        self._send(err.status, payload, headers={"X-Amzn-ErrorType": err.kind})

    def do_GET(self):
        if self.path in ("/", "/health", "/_standin/health"):
            e = self.engine
            self._send(200, {"service": "redshift-data-standin", "db": e.db_path, "page_size": e.page_size,
                             "s3_endpoint": e.s3_endpoint, "statements": len(e.statements)},
                       content_type="application/json")
        else:
            self._send(404, {"message": "not found"}, content_type="application/json")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path == "/_standin/reset":
            self.engine.reset()
            self._send(200, {"reset": "ok"}, content_type="application/json")
            return
        target = self.headers.get("X-Amz-Target", "")
        service, _, operation = target.partition(".")
        try:
            if service != "RedshiftData" or not operation:
                raise ApiError("UnknownOperationException", f"unknown X-Amz-Target {target!r}")
            if operation not in OPERATIONS:
                raise ApiError("UnknownOperationException", f"the stand-in does not implement {operation}")
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise ValueError
            except ValueError:
                raise ApiError("SerializationException", "the request body is not a JSON object") from None
            self._send(200, self._dispatch(operation, body))
        except ApiError as err:
            self._error(err)
        except Exception as exc:  # answer, and keep serving
            log.exception("%s failed", operation)
            self._error(ApiError("InternalServerException", f"stand-in error: {exc}", status=500))

    def _dispatch(self, operation: str, body: dict) -> dict:
        e = self.engine
        if operation in ("ExecuteStatement", "BatchExecuteStatement"):
            return e.submit(operation, body)
        if operation == "DescribeStatement":
            return e.describe(body.get("Id"))
        if operation == "GetStatementResult":
            return e.result(body.get("Id"), body.get("NextToken"))
        return e.cancel(body.get("Id"))


def main(argv=None) -> int:
    run_dir = os.environ.get("TVETL_RUN_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tvetl-run")
    p = argparse.ArgumentParser(description="Amazon Redshift Data API stand-in over DuckDB")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("STANDIN_PORT", "4577")))
    p.add_argument("--db", default=None, help="DuckDB file (default: $TVETL_RUN_DIR/redshift-data-standin-PORT.duckdb)")
    p.add_argument("--page-size", type=int, default=1000, help="rows per GetStatementResult page")
    p.add_argument("--s3-endpoint", default=None,
                   help="S3 endpoint for COPY (default: $AWS_ENDPOINT_URL_S3, then $AWS_ENDPOINT_URL)")
    p.add_argument("--started-describes", type=int, default=1,
                   help="how many DescribeStatement calls report STARTED before the real end state")
    p.add_argument("--max-batch-statements", type=int, default=MAX_BATCH_STATEMENTS)
    p.add_argument("--lenient-copy-types", action="store_true",
                   help="let COPY insert Parquet columns whose types do not fit the table's (DuckDB casts them)")
    p.add_argument("--reset-db", action="store_true", help="delete the DuckDB file first")
    p.add_argument("--allow-remote-s3", action="store_true", help="allow a non-loopback S3 endpoint")
    p.add_argument("--log-level", default=os.environ.get("STANDIN_LOG_LEVEL", "INFO"))
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.page_size < 1:
        p.error("--page-size must be at least 1")
    if args.host not in ("localhost",) and not is_loopback(args.host):
        p.error("the stand-in binds only to loopback addresses")
    db = args.db or os.path.join(run_dir, f"redshift-data-standin-{args.port}.duckdb")
    if db != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(db)), exist_ok=True)
        if args.reset_db:
            for path in (db, db + ".wal"):
                if os.path.exists(path):
                    os.remove(path)
    s3_endpoint = args.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    # boto3 must not pick a profile or real credentials up from the environment.
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        os.environ.pop(var, None)
    Handler.engine = Engine(db, args.page_size, s3_endpoint, args.started_describes, args.allow_remote_s3,
                            args.max_batch_statements, check_copy_types=not args.lenient_copy_types)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    log.info("Redshift Data API stand-in on http://%s:%d (db %s, page size %d, S3 %s)", args.host, args.port, db,
             args.page_size, s3_endpoint or "none")
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
