"""The Lambda binaries end to end against the emulator (ministack).

  lambda_e2e.py invoke        -- with `cargo lambda watch` serving ingest-batch on
                                 $INVOKE_ADDR:$INVOKE_PORT, sends the hand-written
                                 event infra/events/s3-object-created.json twice
                                 through `cargo lambda invoke`
  lambda_e2e.py invoke-load   -- the same for load-warehouse on $LOAD_INVOKE_PORT,
                                 with infra/events/load-keys.json, through the
                                 Data API stand-in
  lambda_e2e.py notification  -- deploys the cargo-lambda `bootstrap` zip
                                 ($INGEST_BATCH_ZIP) as a provided.al2023 function,
                                 wires the raw bucket's S3 notification to it and
                                 drops a dirty file in the bucket

Each checks the staging Parquet, quarantine and Glue partitions written to the
lake, prints 'N passed, N failed' and exits non-zero on a failure.
"""

import json
import os
import subprocess
import sys
import time
import zipfile

import boto3

ENDPOINT = os.environ["AWS_ENDPOINT_URL"]
KW = dict(endpoint_url=ENDPOINT, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
s3 = boto3.client("s3", **KW)
glue = boto3.client("glue", **KW)
lam = boto3.client("lambda", **KW)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIRTY_CSV = (
    "\ufeffEvent_ID,USER_ID,channel_id,start_time,end_time,duration_seconds,platform,extra\r\n"
    "e1,u1,c1,2024-01-01T23:00:00Z,2024-01-02T01:00:00Z,,stb,x\r\n"
    "e2,u2,c1,2024-01-02 10:00:00,,1800,web,\r\n"
    "e3,,c2,2024-01-02T10:00:00Z,,60,,\r\n"
    "e4,u3,c2,not-a-time,,60,,\r\n"
    "e5,u3\r\n"
).encode()
CHANNELS = json.dumps([{"channel_id": "c1", "channel_name": "One"}, {"channel_id": "c2", "channel_name": "Two"}]).encode()

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
        print("FAIL:", message, file=sys.stderr)


def lake_objects(bucket):
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: o["ETag"] for o in listed}


def check_lake(lake, database, label):
    objects = lake_objects(lake)
    staged = sorted(k for k in objects if k.startswith("staging/viewership/event_date="))
    check(
        [k.split("/")[2] for k in staged] == ["event_date=2024-01-01", "event_date=2024-01-02"],
        f"{label}: staging partitions {staged}",
    )
    check(any(k.startswith("quarantine/viewership/ingest_date=") for k in objects), f"{label}: no quarantine in {list(objects)}")
    try:
        parts = glue.get_partitions(DatabaseName=database, TableName="viewership")["Partitions"]
        values = sorted(p["Values"][0] for p in parts)
    except Exception as e:  # noqa: BLE001 - reported as a failure
        values = [f"error: {e}"]
    check(values == ["2024-01-01", "2024-01-02"], f"{label}: Glue partitions {values}")
    return objects


def invoke():
    raw, lake, database = "tvetl-raw-dev", os.environ["LAKE_BUCKET"], os.environ["GLUE_DATABASE"]
    for bucket in (raw, lake):
        s3.create_bucket(Bucket=bucket)
    event = json.load(open(os.path.join(ROOT, "infra/events/s3-object-created.json")))
    s3.put_object(Bucket=raw, Key="viewership/2024-01-01 evening+late.csv", Body=DIRTY_CSV)
    s3.put_object(Bucket=raw, Key="channels/channels.json", Body=CHANNELS)
    address, port = os.environ["INVOKE_ADDR"], os.environ["INVOKE_PORT"]
    cmd = ["cargo", "lambda", "invoke", "ingest-batch", "-A", address, "-P", port,
           "--data-file", os.path.join(ROOT, "infra/events/s3-object-created.json"), "--output-format", "json"]
    first = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    statuses = {o["key"]: o["status"] for o in first["objects"]}
    check(statuses == {"viewership/2024-01-01 evening+late.csv": "loaded", "channels/channels.json": "loaded"}, f"statuses {statuses}")
    check(first["totals"]["rows_read"] == 5 + 2, f"rows_read {first['totals']}")
    check(first["totals"]["quarantined"]["MALFORMED"] == 1, f"quarantined {first['totals']}")
    objects = check_lake(lake, database, "invoke")
    second = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    check(second["totals"] == first["totals"], "a second invocation counts the same")
    check(lake_objects(lake) == objects, "a second invocation with the same event changes no object")
    assert len(event["Records"]) == 2


def invoke_load():
    """load-warehouse under `cargo lambda watch`, with infra/events/load-keys.json.

    The example event names two staging keys; real staging files written by
    the `invoke` step are copied to those keys first.
    """
    lake = os.environ["LAKE_BUCKET"]
    request = json.load(open(os.path.join(ROOT, "infra/events/load-keys.json")))
    objects = lake_objects(lake)
    sources = {
        "staging/channels/": next(k for k in objects if k.startswith("staging/channels/")),
        "staging/viewership/event_date=2024-01-01/": next(k for k in objects if k.startswith("staging/viewership/event_date=2024-01-01/")),
    }
    for target in request["objects"]:
        source = next(v for prefix, v in sources.items() if target.startswith(prefix))
        s3.copy_object(Bucket=lake, Key=target, CopySource={"Bucket": lake, "Key": source})
    address, port = os.environ["INVOKE_ADDR"], os.environ["LOAD_INVOKE_PORT"]
    cmd = ["cargo", "lambda", "invoke", "load-warehouse", "-A", address, "-P", port,
           "--data-file", os.path.join(ROOT, "infra/events/load-keys.json"), "--output-format", "json"]
    first = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    loads = first["loads"]
    check(loads["channels"]["rows_staged"] == 2, f"channels load {loads.get('channels')}")
    check(loads["viewership"]["rows_staged"] == 1, f"viewership load {loads.get('viewership')}")
    second = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    check(all(l["rows_merged"] == 0 for l in second["loads"].values()), f"a replayed load merges nothing: {second}")


def notification():
    raw, lake, database = "tvetl-raw-notify", "tvetl-lake-notify", "tvetl_notify"
    for bucket in (raw, lake):
        s3.create_bucket(Bucket=bucket)
    with open(os.environ["INGEST_BATCH_ZIP"], "rb") as f:
        code = f.read()
    check("bootstrap" in zipfile.ZipFile(os.environ["INGEST_BATCH_ZIP"]).namelist(), "the zip holds a bootstrap")
    fn = lam.create_function(
        FunctionName="ingest-batch",
        Runtime="provided.al2023",
        Role="arn:aws:iam::000000000000:role/ingest-batch",
        Handler="bootstrap",
        Code={"ZipFile": code},
        Timeout=120,
        Environment={"Variables": {"LAKE_BUCKET": lake, "GLUE_DATABASE": database, "AWS_ENDPOINT_URL": ENDPOINT,
                                   "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}},
    )
    for _ in range(60):
        if lam.get_function(FunctionName="ingest-batch")["Configuration"].get("State", "Active") == "Active":
            break
        time.sleep(0.5)
    s3.put_bucket_notification_configuration(
        Bucket=raw,
        NotificationConfiguration={"LambdaFunctionConfigurations": [{
            "LambdaFunctionArn": fn["FunctionArn"], "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "viewership/"}]}},
        }]},
    )
    s3.put_object(Bucket=raw, Key="viewership/day 1/late+night.csv", Body=DIRTY_CSV)
    deadline = time.time() + 90
    while time.time() < deadline:
        objects = lake_objects(lake)
        if sum(k.startswith("staging/viewership/") for k in objects) >= 2 and any(k.startswith("quarantine/") for k in objects):
            break
        time.sleep(1)
    check_lake(lake, database, "notification")


if __name__ == "__main__":
    {"invoke": invoke, "invoke-load": invoke_load, "notification": notification}[sys.argv[1]]()
    print(f"{sys.argv[1]}: {0 if failures else 1} passed, {1 if failures else 0} failed")
    sys.exit(1 if failures else 0)
