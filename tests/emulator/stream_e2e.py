"""The stream path end to end against the emulator (ministack), with the real
`bootstrap` binaries of ingest-stream and compact-partitions.

  stream_e2e.py kinesis     -- records put on a Kinesis stream whose event source
                               mapping (ReportBatchItemFailures) feeds the deployed
                               ingest-stream bootstrap: Parquet per day in the lake,
                               Glue partitions, bad records quarantined with their
                               sequence numbers; the same batch replayed changes no
                               object and adds no row
  stream_e2e.py failure     -- S3 fails part-way (a proxy in front of the emulator
                               answers 503 to every PUT once a budget is spent, so
                               the SDK's own retries fail too): the response names
                               the batch's first sequence number, and the retry
                               from there completes the batch exactly once
  stream_e2e.py compaction  -- many small batches, then the compact-partitions
                               bootstrap: few files, the same rows, and a second run
                               that changes nothing

Needs AWS_ENDPOINT_URL (the emulator), INGEST_STREAM_ZIP and COMPACT_ZIP (the
cargo-lambda zips). Prints 'N passed, N failed' and exits non-zero on a failure.
"""

import base64
import http.client
import http.server
import io
import json
import os
import sys
import tempfile
import threading
import time
import urllib.parse
import zipfile

import boto3
import duckdb

ENDPOINT = os.environ["AWS_ENDPOINT_URL"]
KW = dict(endpoint_url=ENDPOINT, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
s3 = boto3.client("s3", **KW)
glue = boto3.client("glue", **KW)
lam = boto3.client("lambda", **KW)
kinesis = boto3.client("kinesis", **KW)

failures = []
checks = 0


def check(condition, message):
    global checks
    checks += 1
    if not condition:
        failures.append(message)
        print("FAIL:", message, file=sys.stderr)


def session(event_id, day, hour, user="u1", channel="c1"):
    start = f"2024-01-{day:02d}T{hour:02d}:00:00Z"
    return json.dumps({"event_id": event_id, "user_id": user, "channel_id": channel, "start_time": start,
                       "duration_seconds": 900, "platform": "stb"})


def lake_objects(bucket):
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: o["ETag"] for o in listed}


def staged_rows(bucket):
    """(event_id, source_key) of every staged row, read with DuckDB."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for key in lake_objects(bucket):
            if key.startswith("staging/viewership/") and key.endswith(".parquet"):
                path = os.path.join(tmp, f"{len(paths)}.parquet")
                s3.download_file(bucket, key, path)
                paths.append(path)
        if not paths:
            return []
        return duckdb.sql(f"SELECT event_id, source_key FROM read_parquet({paths!r}) ORDER BY event_id").fetchall()


def quarantined(bucket):
    out = []
    for key in lake_objects(bucket):
        if key.startswith("quarantine/"):
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
            out.extend(json.loads(line) for line in body.splitlines() if line.strip())
    return out


def partitions(database):
    try:
        parts = glue.get_partitions(DatabaseName=database, TableName="viewership")["Partitions"]
        return sorted(p["Values"][0] for p in parts)
    except Exception as e:  # noqa: BLE001 - reported by the caller's check
        return [f"error: {e}"]


def deploy(name, zip_env, variables):
    with open(os.environ[zip_env], "rb") as f:
        code = f.read()
    check("bootstrap" in zipfile.ZipFile(io.BytesIO(code)).namelist(), f"{zip_env} holds a bootstrap")
    variables = {"AWS_ENDPOINT_URL": ENDPOINT, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", **variables}
    fn = lam.create_function(
        FunctionName=name, Runtime="provided.al2023", Role=f"arn:aws:iam::000000000000:role/{name}",
        Handler="bootstrap", Code={"ZipFile": code}, Timeout=120, MemorySize=512,
        Environment={"Variables": variables},
    )
    for _ in range(60):
        if lam.get_function(FunctionName=name)["Configuration"].get("State", "Active") == "Active":
            break
        time.sleep(0.5)
    return fn["FunctionArn"]


def invoke(name, event):
    answer = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode())
    payload = json.loads(answer["Payload"].read() or b"null")
    check("FunctionError" not in answer, f"{name} failed: {payload}")
    return payload


def kinesis_event(stream_arn, shard, records):
    """The event a Kinesis mapping sends, from (sequence number, data, arrival)."""
    return {"Records": [{
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "p", "sequenceNumber": seq,
                    "data": base64.b64encode(data).decode(), "approximateArrivalTimestamp": arrival},
        "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": f"{shard}:{seq}",
        "eventName": "aws:kinesis:record", "invokeIdentityArn": "arn:aws:iam::000000000000:role/ingest-stream",
        "awsRegion": "us-east-1", "eventSourceARN": stream_arn,
    } for seq, data, arrival in records]}


def stream_records(stream, shard):
    it = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    out = []
    while it:
        page = kinesis.get_records(ShardIterator=it, Limit=1000)
        out.extend((r["SequenceNumber"], r["Data"], r["ApproximateArrivalTimestamp"].timestamp()) for r in page["Records"])
        if not page["Records"]:
            break
        it = page.get("NextShardIterator")
    return out


def create_stream(name):
    kinesis.create_stream(StreamName=name, ShardCount=1)
    for _ in range(60):
        desc = kinesis.describe_stream(StreamName=name)["StreamDescription"]
        if desc["StreamStatus"] == "ACTIVE":
            return desc["StreamARN"], desc["Shards"][0]["ShardId"]
        time.sleep(0.5)
    raise RuntimeError(f"stream {name} never became ACTIVE")


# 30 sessions over two days, in arrival order with late records mixed in, one
# record carrying two sessions, and three bad records.
def batch_lines():
    lines = []
    for i in range(30):
        lines.append(session(f"s{i:03d}", 1 if i % 4 else 2, i % 24, user=f"u{i % 5}"))
    lines[7] = session("s007", 2, 3) + "\n" + session("s007b", 1, 4)
    lines.insert(10, "{this is not json")
    lines.insert(20, json.dumps({"event_id": "bad-dur", "user_id": "u1", "channel_id": "c1",
                                 "start_time": "2024-01-01T10:00:00Z", "duration_seconds": -30}))
    lines.insert(25, json.dumps({"event_id": "no-user", "channel_id": "c1", "start_time": "2024-01-01T10:00:00Z",
                                 "duration_seconds": 30}))
    return lines


EXPECTED_IDS = sorted([f"s{i:03d}" for i in range(30)] + ["s007b"])


def kinesis_test():
    stream, lake, database = "tvetl-views-e2e", "tvetl-lake-stream", "tvetl_stream"
    s3.create_bucket(Bucket=lake)
    stream_arn, shard = create_stream(stream)
    fn_arn = deploy("ingest-stream", "INGEST_STREAM_ZIP", {"LAKE_BUCKET": lake, "GLUE_DATABASE": database})
    lines = batch_lines()
    for line in lines:
        kinesis.put_record(StreamName=stream, Data=line.encode(), PartitionKey="box-1")
    lam.create_event_source_mapping(
        FunctionName=fn_arn, EventSourceArn=stream_arn, StartingPosition="TRIM_HORIZON", BatchSize=100,
        FunctionResponseTypes=["ReportBatchItemFailures"], BisectBatchOnFunctionError=False,
        MaximumRecordAgeInSeconds=3600, MaximumRetryAttempts=5,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        objects = lake_objects(lake)
        if sum(k.startswith("staging/viewership/") for k in objects) >= 2 and any(k.startswith("quarantine/") for k in objects):
            break
        time.sleep(1)
    objects = lake_objects(lake)
    staged = sorted(k for k in objects if k.startswith("staging/"))
    check([k.split("/")[2] for k in staged] == ["event_date=2024-01-01", "event_date=2024-01-02"],
          f"one file per day: {staged}")
    check(all(f"/kinesis~{stream}~{shard}~" in k for k in staged), f"names carry stream and shard: {staged}")
    rows = staged_rows(lake)
    check(sorted(r[0] for r in rows) == EXPECTED_IDS, f"every session once: {[r[0] for r in rows]}")
    bad = quarantined(lake)
    check(sorted(b["reason"] for b in bad) == ["BAD_DURATION", "MALFORMED", "MISSING_FIELD"], f"quarantine {bad}")
    records = stream_records(stream, shard)
    by_seq = {seq: data for seq, data, _ in records}
    check(all(by_seq[b["stream"]["position"]].decode() == b["original"] for b in bad),
          "each quarantined record names the sequence number it came from")
    check(partitions(database) == ["2024-01-01", "2024-01-02"], f"Glue partitions {partitions(database)}")

    # The same batch again, as a retry or a replay would bring it.
    response = invoke("ingest-stream", kinesis_event(stream_arn, shard, records))
    check(response == {"batchItemFailures": []}, f"replay response {response}")
    check(lake_objects(lake) == objects, "a replayed batch changes no object")
    check(len(staged_rows(lake)) == len(EXPECTED_IDS), "a replayed batch adds no row")


class FlakyS3Proxy(http.server.BaseHTTPRequestHandler):
    """Forwards to the emulator; once `budget` PUTs have passed, answers every
    PUT with 503 SlowDown (the SDK retries it, then gives up)."""

    budget = None
    puts_refused = 0
    lock = threading.Lock()
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = b""
            while True:
                size_line = self.rfile.readline()
                raw += size_line
                size = int(size_line.split(b";")[0].strip(), 16)
                chunk = self.rfile.read(size + 2)
                raw += chunk
                if size == 0:
                    # Trailers end with an empty line.
                    while chunk not in (b"\r\n", b""):
                        chunk = self.rfile.readline()
                        raw += chunk
                    return raw
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _forward(self):
        body = self._body()
        cls = FlakyS3Proxy
        if self.command == "PUT":
            with cls.lock:
                refuse = cls.budget is not None and cls.budget <= 0
                if refuse:
                    cls.puts_refused += 1
                elif cls.budget is not None:
                    cls.budget -= 1
            if refuse:
                msg = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                self.wfile.write(msg)
                return
        target = urllib.parse.urlsplit(ENDPOINT)
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        headers["Host"] = target.netloc
        conn.request(self.command, self.path, body=body, headers=headers, encode_chunked=False)
        answer = conn.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for k, v in answer.getheaders():
            if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


def failure_test():
    stream, lake, database = "tvetl-views-flaky", "tvetl-lake-flaky", "tvetl_flaky"
    s3.create_bucket(Bucket=lake)
    stream_arn, shard = create_stream(stream)
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FlakyS3Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
    # S3 only goes through the proxy: a service-specific endpoint beats
    # AWS_ENDPOINT_URL in the SDK, and Glue still talks to the emulator.
    deploy("ingest-stream-flaky", "INGEST_STREAM_ZIP",
           {"LAKE_BUCKET": lake, "GLUE_DATABASE": database, "AWS_ENDPOINT_URL_S3": proxy_url})
    lines = batch_lines()
    for line in lines:
        kinesis.put_record(StreamName=stream, Data=line.encode(), PartitionKey="box-1")
    records = stream_records(stream, shard)
    check(len(records) == len(lines), f"{len(records)} records on the stream")
    # Groups are written in the order of their first record: 2024-01-02's
    # starts at record 0, 2024-01-01's at record 1, the quarantine's at record
    # 10. With one PUT allowed, the first day is written and the second fails.
    FlakyS3Proxy.budget = 1
    response = invoke("ingest-stream-flaky", kinesis_event(stream_arn, shard, records))
    stopped = [f["itemIdentifier"] for f in response.get("batchItemFailures", [])]
    print(f"   stopped at {stopped} after {FlakyS3Proxy.puts_refused} refused PUTs")
    check(stopped == [records[0][0]], f"the failure names the batch's first sequence number: {stopped}")
    check(FlakyS3Proxy.puts_refused >= 2, f"the SDK retried the refused PUT ({FlakyS3Proxy.puts_refused} refused)")
    written = lake_objects(lake)
    check(len([k for k in written if k.startswith("staging/")]) == 1, f"one group was written: {sorted(written)}")

    # Lambda retries from the named record (the batch's first) to its end.
    FlakyS3Proxy.budget = None
    start = [seq for seq, _, _ in records].index(stopped[0]) if stopped else 0
    response = invoke("ingest-stream-flaky", kinesis_event(stream_arn, shard, records[start:]))
    check(response == {"batchItemFailures": []}, f"the retry completes: {response}")
    rows = staged_rows(lake)
    check(sorted(r[0] for r in rows) == EXPECTED_IDS, f"every session exactly once: {[r[0] for r in rows]}")
    check(len(quarantined(lake)) == 3, "every bad record exactly once")
    check(partitions(database) == ["2024-01-01", "2024-01-02"], f"Glue partitions {partitions(database)}")
    proxy.shutdown()


def compaction_test():
    stream, lake, database = "tvetl-views-small", "tvetl-lake-compact", "tvetl_compact"
    s3.create_bucket(Bucket=lake)
    stream_arn, shard = create_stream(stream)
    deploy("ingest-stream-small", "INGEST_STREAM_ZIP", {"LAKE_BUCKET": lake, "GLUE_DATABASE": database})
    deploy("compact-partitions", "COMPACT_ZIP", {"LAKE_BUCKET": lake, "COMPACT_MIN_AGE_SECONDS": "0"})
    lines = batch_lines()
    for line in lines:
        kinesis.put_record(StreamName=stream, Data=line.encode(), PartitionKey="box-1")
    records = stream_records(stream, shard)
    for i in range(0, len(records), 3):
        invoke("ingest-stream-small", kinesis_event(stream_arn, shard, records[i:i + 3]))
    before = staged_rows(lake)
    small = [k for k in lake_objects(lake) if k.startswith("staging/")]
    check(len(small) >= 10, f"{len(small)} small files to compact")

    report = invoke("compact-partitions", {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}})
    after_keys = sorted(k for k in lake_objects(lake) if k.startswith("staging/"))
    check(len(after_keys) == 2 and all("/compacted-" in k for k in after_keys), f"one file per day: {after_keys}")
    after = staged_rows(lake)
    check(sorted(after) == sorted(before), "the same rows, with their lineage")
    check(not [k for k in lake_objects(lake) if k.startswith("compaction/")], "no journal left")
    snapshot = lake_objects(lake)
    again = invoke("compact-partitions", {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}})
    check(lake_objects(lake) == snapshot, f"a second run changes nothing: {again}")
    check(report is not None, "the first run answered")


if __name__ == "__main__":
    {"kinesis": kinesis_test, "failure": failure_test, "compaction": compaction_test}[sys.argv[1]]()
    print(f"   {checks} checks, {len(failures)} failed")
    print(f"{sys.argv[1]}: {0 if failures else 1} passed, {1 if failures else 0} failed")
    sys.exit(1 if failures else 0)
