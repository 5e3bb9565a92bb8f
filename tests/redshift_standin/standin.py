"""A stand-in for the Amazon Redshift Data API, for tests.

No emulator executes Data API SQL, so this small server speaks the Data
API's JSON protocol (as the AWS SDKs send it: POST /, X-Amz-Target
RedshiftData.<Operation>, application/x-amz-json-1.1) and runs the SQL on
DuckDB. A BatchExecuteStatement is one transaction, as on Redshift.
`COPY <table> FROM 's3://bucket/prefix' ... FORMAT AS PARQUET` is fulfilled
by reading the objects under that prefix from the S3 endpoint (the local
emulator) and inserting them with read_parquet. A failed COPY also leaves a
row in sys_load_error_detail, as Redshift does. `LOCK <table>` is accepted
and does nothing: batches run here one at a time anyway.

Because batches never overlap here, Redshift's serializable isolation
conflicts (error 1023, when a concurrent transaction wins) cannot happen on
their own. A test makes them: `CALL standin_conflict('<marker>', <n>)` makes
the next n batches whose SQL contains marker (say, the test's own bucket
name, which its COPY names) fail at their first MERGE with Redshift's
message, after the statements before it ran, and roll back.

    python standin.py --port 4577 --db /path/warehouse.duckdb [--s3-endpoint URL] [--page-size N]
"""

import argparse
import datetime
import decimal
import json
import os
import re
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import duckdb

LOCK_RE = re.compile(r"^\s*LOCK\s+(TABLE\s+)?[\w.]+(\s*,\s*[\w.]+)*\s*$", re.IGNORECASE)
CONFLICT_RE = re.compile(r"^\s*CALL\s+standin_conflict\s*\(\s*'([^']+)'\s*,\s*(\d+)\s*\)\s*$", re.IGNORECASE)
MERGE_RE = re.compile(r"^\s*MERGE\s", re.IGNORECASE)
COPY_RE = re.compile(
    r"^\s*COPY\s+([\w.]+)\s+FROM\s+'s3://([^/']+)/([^']*)'(.*)$", re.IGNORECASE | re.DOTALL
)


class StatementError(Exception):
    pass


class Engine:
    """One DuckDB connection; statements run one at a time."""

    def __init__(self, db_path, s3_endpoint):
        self.lock = threading.Lock()
        self.con = duckdb.connect(db_path)
        self.con.execute("SET TimeZone = 'UTC'") if self._has_timezone() else None
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS sys_load_error_detail ("
            " query_id BIGINT, file_name VARCHAR, line_number BIGINT, column_name VARCHAR,"
            " error_code INTEGER, error_message VARCHAR, start_time TIMESTAMP)"
        )
        self.s3 = boto3.client(
            "s3",
            endpoint_url=s3_endpoint,
            region_name=os.environ.get("AWS_REGION", "us-east-1"),
            aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
            aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        )
        self.query_ids = 0
        # marker -> batches still to fail with a serializable isolation conflict
        self.conflicts = {}

    def _has_timezone(self):
        try:
            self.con.execute("SELECT current_setting('TimeZone')")
            return True
        except duckdb.Error:
            return False

    def _copy(self, match):
        table, bucket, prefix, options = match.groups()
        if "PARQUET" not in options.upper():
            raise StatementError("the stand-in supports COPY ... FORMAT AS PARQUET only")
        self.query_ids += 1
        try:
            listed = self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
            keys = [o["Key"] for o in listed.get("Contents", [])]
        except Exception as e:  # the bucket itself may be missing
            keys, reason = [], str(e)
        else:
            reason = "The specified S3 prefix does not exist"
        if not keys:
            self.load_errors.append((self.query_ids, f"s3://{bucket}/{prefix}", 0, "", 1204, reason))
            raise StatementError(f"S3ServiceException: {reason}: s3://{bucket}/{prefix}")
        sources = [(bucket, k) for k in keys]
        if re.search(r"\bMANIFEST\b", options, re.IGNORECASE):
            if keys != [prefix]:
                self.load_errors.append((self.query_ids, f"s3://{bucket}/{prefix}", 0, "", 8001, "manifest not found"))
                raise StatementError(f"Manifest file is not found: s3://{bucket}/{prefix}")
            manifest = json.loads(self.s3.get_object(Bucket=bucket, Key=prefix)["Body"].read())
            sources = []
            for entry in manifest.get("entries", []):
                if "content_length" not in (entry.get("meta") or {}):
                    raise StatementError(f"meta.content_length is required for Parquet manifest entries: {entry.get('url')}")
                b, _, k = entry["url"][len("s3://"):].partition("/")
                sources.append((b, k))
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for i, (b, key) in enumerate(sources):
                path = os.path.join(tmp, f"{i}.parquet")
                try:
                    self.s3.download_file(b, key, path)
                except Exception as e:  # a mandatory entry that is missing
                    self.load_errors.append((self.query_ids, f"s3://{b}/{key}", 0, "", 8001, str(e)))
                    raise StatementError(f"S3ServiceException: the file s3://{b}/{key} cannot be read: {e}")
                paths.append(path)
            # Name the file Redshift would name: check each before the insert.
            for path, (b, key) in zip(paths, sources):
                quoted = "'" + path.replace("'", "''") + "'"
                try:
                    self.con.execute(f"SELECT COUNT(*) FROM parquet_metadata({quoted})").fetchall()
                except duckdb.Error as e:
                    self.load_errors.append((self.query_ids, f"s3://{b}/{key}", 0, "", 15001, str(e)))
                    raise StatementError(
                        f"Load into table '{table}' failed. Check 'sys_load_error_detail' for details: s3://{b}/{key}: {e}"
                    )
            files = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
            try:
                self.con.execute(f"INSERT INTO {table} SELECT * FROM read_parquet([{files}], hive_partitioning = false)")
            except duckdb.Error as e:
                self.load_errors.append((self.query_ids, f"s3://{bucket}/{prefix}", 0, "", 1216, str(e)))
                raise StatementError(f"Load into table '{table}' failed. Check 'sys_load_error_detail' for details: {e}")
        return None

    def _one(self, sql):
        """Runs one statement; returns (columns, rows) or None."""
        match = CONFLICT_RE.match(sql)
        if match:
            self.conflicts[match.group(1)] = int(match.group(2))
            return None
        match = COPY_RE.match(sql)
        if match:
            return self._copy(match)
        if LOCK_RE.match(sql):
            # Redshift makes the other writers wait; here batches already
            # run one at a time (self.lock in run()).
            return None
        try:
            cur = self.con.execute(sql)
            if cur.description is None:
                return None
            columns = [(d[0], str(d[1])) for d in cur.description]
            return columns, cur.fetchall()
        except duckdb.Error as e:
            raise StatementError(str(e))

    def run(self, sqls, transaction):
        """Runs statements; returns (results, None) or (results, (index, message))."""
        with self.lock:
            self.load_errors = []
            results = []
            conflict = self._take_conflict(sqls)
            if transaction:
                self.con.execute("BEGIN TRANSACTION")
            for i, sql in enumerate(sqls):
                try:
                    if conflict and MERGE_RE.match(sql):
                        self.query_ids += 1
                        raise StatementError(
                            "ERROR: 1023 DETAIL: Serializable isolation violation on table - 106518, "
                            f"transactions forming the cycle are: {self.query_ids}, {self.query_ids + 1} (pid:4242)"
                        )
                    results.append(self._one(sql))
                except StatementError as e:
                    if transaction:
                        self.con.execute("ROLLBACK")
                    self._record_load_errors()
                    return results, (i, str(e))
            if transaction:
                self.con.execute("COMMIT")
            self._record_load_errors()
            return results, None

    def _take_conflict(self, sqls):
        """Whether this batch is one that a standin_conflict call set to fail."""
        for marker, left in self.conflicts.items():
            if left > 0 and any(marker in sql for sql in sqls) and any(MERGE_RE.match(sql) for sql in sqls):
                self.conflicts[marker] = left - 1
                return True
        return False

    def _record_load_errors(self):
        # Outside the failed transaction, so the rows survive its rollback.
        for row in self.load_errors:
            self.con.execute(
                "INSERT INTO sys_load_error_detail VALUES (?, ?, ?, ?, ?, ?, now())", list(row)
            )
        self.load_errors = []


def field(value):
    if value is None:
        return {"isNull": True}
    if isinstance(value, bool):
        return {"booleanValue": value}
    if isinstance(value, int):
        return {"longValue": value}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, (decimal.Decimal, datetime.date, datetime.datetime, datetime.time)):
        return {"stringValue": str(value)}
    return {"stringValue": str(value)}


class Store:
    def __init__(self, engine, page_size):
        self.engine = engine
        self.page_size = page_size
        self.statements = {}
        self.tokens = {}
        self.lock = threading.Lock()

    def _new(self, sqls, batch, token):
        with self.lock:
            if token and token in self.tokens:
                return self.tokens[token]
        started = time.time()
        results, failure = self.engine.run(sqls, transaction=True)
        sid = str(uuid.uuid4())
        subs = []
        for i, sql in enumerate(sqls):
            if failure and i == failure[0]:
                status, error = "FAILED", failure[1]
            elif failure and i > failure[0]:
                status, error = "ABORTED", None
            elif failure:
                status, error = "ABORTED", None  # rolled back with the batch
            else:
                status, error = "FINISHED", None
            result = results[i] if i < len(results) else None
            subs.append({"Id": f"{sid}:{i + 1}", "Status": status, "Error": error, "QueryString": sql, "Result": result})
        entry = {
            "Id": sid,
            "Batch": batch,
            "Status": "FAILED" if failure else "FINISHED",
            "Error": f"Statement {failure[0] + 1} failed: {failure[1]}" if failure else None,
            "Subs": subs,
            "Described": 0,
            "CreatedAt": started,
            "UpdatedAt": time.time(),
        }
        with self.lock:
            self.statements[sid] = entry
            for s in subs:
                self.statements[s["Id"]] = {"Sub": s, "Parent": entry}
            if token:
                self.tokens[token] = sid
        return sid

    def execute(self, req):
        sid = self._new([req["Sql"]], False, req.get("ClientToken"))
        return {"Id": sid, "Database": req.get("Database"), "CreatedAt": time.time()}

    def batch(self, req):
        if not req.get("Sqls"):
            raise ValueError("Sqls is required")
        if len(req["Sqls"]) > 40:
            # The service's limit (SqlList max in the API model).
            raise ValueError(f"Sqls has {len(req['Sqls'])} statements; at most 40 are allowed")
        sid = self._new(list(req["Sqls"]), True, req.get("ClientToken"))
        return {"Id": sid, "Database": req.get("Database"), "CreatedAt": time.time()}

    def _get(self, sid):
        with self.lock:
            entry = self.statements.get(sid)
        if entry is None:
            raise KeyError(sid)
        return entry

    def describe(self, req):
        entry = self._get(req["Id"])
        if "Sub" in entry:
            raise KeyError(req["Id"])
        entry["Described"] += 1
        # Clients poll: the first answer says it is still running.
        status = "STARTED" if entry["Described"] == 1 else entry["Status"]
        out = {
            "Id": entry["Id"],
            "Status": status,
            "CreatedAt": entry["CreatedAt"],
            "UpdatedAt": entry["UpdatedAt"],
            "Duration": int((entry["UpdatedAt"] - entry["CreatedAt"]) * 1e9),
            "IsBatchStatement": entry["Batch"],
        }
        subs = entry["Subs"]
        if status in ("FINISHED", "FAILED"):
            if entry["Error"]:
                out["Error"] = entry["Error"]
            last = subs[-1]
            out["HasResultSet"] = last["Result"] is not None and not entry["Batch"]
            if not entry["Batch"]:
                out["QueryString"] = last["QueryString"]
                out["ResultRows"] = len(last["Result"][1]) if last["Result"] else -1
        if entry["Batch"]:
            out["SubStatements"] = [
                {
                    "Id": s["Id"],
                    "Status": s["Status"] if status != "STARTED" else "STARTED",
                    "QueryString": s["QueryString"],
                    "HasResultSet": s["Result"] is not None,
                    "ResultRows": len(s["Result"][1]) if s["Result"] else -1,
                    **({"Error": s["Error"]} if s["Error"] else {}),
                }
                for s in subs
            ]
        return out

    def result(self, req):
        entry = self._get(req["Id"])
        sub = entry["Sub"] if "Sub" in entry else entry["Subs"][-1]
        if sub["Result"] is None:
            raise ValueError(f"statement {req['Id']} has no result set")
        columns, rows = sub["Result"]
        start = int(req.get("NextToken") or 0)
        page = rows[start : start + self.page_size]
        out = {
            "ColumnMetadata": [{"name": n, "label": n, "typeName": t} for n, t in columns],
            "Records": [[field(v) for v in row] for row in page],
            "TotalNumRows": len(rows),
        }
        if start + self.page_size < len(rows):
            out["NextToken"] = str(start + self.page_size)
        return out

    def cancel(self, req):
        self._get(req["Id"])
        return {"Status": False}


def make_handler(store):
    operations = {
        "ExecuteStatement": store.execute,
        "BatchExecuteStatement": store.batch,
        "DescribeStatement": store.describe,
        "GetStatementResult": store.result,
        "CancelStatement": store.cancel,
    }

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send(200, {"status": "ok"})

        def do_POST(self):
            target = self.headers.get("X-Amz-Target", "")
            operation = operations.get(target.split(".")[-1])
            length = int(self.headers.get("Content-Length") or 0)
            try:
                request = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return self._send(400, {"__type": "ValidationException", "message": "body is not JSON"})
            if operation is None:
                return self._send(400, {"__type": "ValidationException", "message": f"unsupported operation {target}"})
            try:
                self._send(200, operation(request))
            except KeyError as e:
                self._send(400, {"__type": "ResourceNotFoundException", "message": f"Query does not exist: {e}"})
            except (ValueError, TypeError) as e:
                self._send(400, {"__type": "ValidationException", "message": str(e)})

    return Handler


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=4577)
    parser.add_argument("--db", required=True)
    parser.add_argument("--s3-endpoint", default=os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"))
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args()
    store = Store(Engine(args.db, args.s3_endpoint), args.page_size)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(store))
    server.serve_forever()


if __name__ == "__main__":
    main()
