"""The SAM stack (infra/template.yaml) as deployed to the emulator's CloudFormation.

  sam_deploy_e2e.py STACK

tests/emulator/sam_deploy_e2e.sh builds the template with `sam build` (x86_64
bootstraps) and deploys it with `sam deploy` to ministack; this script then
checks what the stack created and drives it end to end:

- the resources: functions (provided.al2023, x86_64, environment, JSON
  logging, dead-letter queue), bucket versioning, public access block and
  TLS-only policy, S3 notifications by prefix (the lake's to the load queue,
  which load-warehouse takes in batches), the Kinesis mapping
  (ReportBatchItemFailures, no bisection, retry age, on-failure queue), the Glue
  database and the state machine;
- a raw CSV dropped in the stack's raw bucket reaches the lake as Parquet in
  each day's partition (read back with DuckDB), with the bad rows quarantined
  and the Glue partitions registered, through the deployed ingest-batch and
  the bucket's own notification;
- the deployed backfill state machine (a Distributed Map over a raw
  prefix) runs ingest-batch on each object already there, and rewrites the
  same staging files;
- a record put on the stack's Kinesis stream reaches the lake through the
  deployed mapping and ingest-stream;
- with $AWS_ENDPOINT_URL_REDSHIFT_DATA (the Data API stand-in), the lake's
  notification, through the load queue and its event source, runs the
  deployed load-warehouse, and the report query of
  infra/sql/reports/top_channels.sql gives the hand-computed answer; then the
  deployed state machine loads a day's prefix and rebuilds the analytics.

Prints 'sam-deploy: N passed, N failed' and exits non-zero on a failure.
"""

import json
import os
import sys
import tempfile
import time

import boto3
import duckdb

ENDPOINT = os.environ["AWS_ENDPOINT_URL"]
KW = dict(endpoint_url=ENDPOINT, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
s3 = boto3.client("s3", **KW)
glue = boto3.client("glue", **KW)
lam = boto3.client("lambda", **KW)
cfn = boto3.client("cloudformation", **KW)
kinesis = boto3.client("kinesis", **KW)
sfn = boto3.client("stepfunctions", **KW)
iam = boto3.client("iam", **KW)

# Dates far from the other tests' data, and every id prefixed with the run's
# project name (see ids()), since the Data API stand-in is shared.
RAW_CSV = (
    "event_id,user_id,channel_id,start_time,end_time,duration_seconds,platform\r\n"
    # crosses midnight: 3600 s on each day
    "sam-e1,sam-u1,sam-c1,2031-03-01T23:00:00Z,2031-03-02T01:00:00Z,,stb\r\n"
    "sam-e2,sam-u2,sam-c1,2031-03-02 10:00:00,,1800,web\r\n"
    "sam-e3,sam-u3,sam-c2,2031-03-02T12:00:00Z,,600,smart_tv\r\n"
    "sam-e4,,sam-c2,2031-03-02T12:00:00Z,,600,\r\n"  # MISSING_FIELD
    "sam-e5,sam-u3,sam-c2,yesterday,,600,\r\n"  # BAD_TIMESTAMP
)
CHANNELS = json.dumps([{"channel_id": "sam-c1", "channel_name": "Sam One"}, {"channel_id": "sam-c2", "channel_name": "Sam Two"}])
STREAM_RECORD = {"event_id": "sam-k1", "user_id": "sam-u4", "channel_id": "sam-c2",
                 "start_time": "2031-03-03T20:00:00Z", "end_time": "2031-03-03T20:30:00Z", "platform": "mobile"}

passed = 0
failed = 0
RUN = "sam"


def ids(text):
    """The run's own ids: 'sam-' becomes '<project>-'."""
    return text.replace("sam-", RUN + "-")


def check(condition, message):
    global passed, failed
    if condition:
        passed += 1
        print("ok:", message)
    else:
        failed += 1
        print("FAIL:", message, file=sys.stderr)


def wait_for(predicate, seconds):
    """Polls predicate() until it returns something truthy or time runs out."""
    deadline = time.time() + seconds
    while True:
        value = predicate()
        if value or time.time() > deadline:
            return value
        time.sleep(1)


def run_execution(state_machine_arn, request, seconds):
    """Starts the state machine with request and waits up to seconds for the
    execution to end; returns (its ARN, its description)."""
    arn = sfn.start_execution(stateMachineArn=state_machine_arn, input=json.dumps(request))["executionArn"]

    def finished():
        described = sfn.describe_execution(executionArn=arn)
        return described if described["status"] != "RUNNING" else None
    return arn, wait_for(finished, seconds) or sfn.describe_execution(executionArn=arn)


def lake_keys(bucket):
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def parquet_rows(bucket, key):
    with tempfile.NamedTemporaryFile(suffix=".parquet") as f:
        s3.download_fileobj(bucket, key, f)
        f.flush()
        return duckdb.sql(f"SELECT event_id FROM read_parquet('{f.name}') ORDER BY event_id").fetchall()


def check_resources(outputs, project):
    raw, lake = outputs["RawBucketName"], outputs["LakeBucketName"]
    functions = {name: lam.get_function_configuration(FunctionName=f"{project}-dev-{name}")
                 for name in ("ingest-batch", "load-warehouse", "ingest-stream", "compact-partitions")}
    for name, fn in functions.items():
        check(fn["Runtime"] == "provided.al2023" and fn["Handler"] == "bootstrap" and fn["Architectures"] == ["x86_64"],
              f"{name}: provided.al2023, bootstrap, x86_64 ({fn['Runtime']}, {fn['Architectures']})")
        check(fn.get("LoggingConfig", {}).get("LogFormat") == "JSON", f"{name}: JSON logs {fn.get('LoggingConfig')}")
        check(fn["Environment"]["Variables"].get("LAKE_BUCKET") == lake, f"{name}: LAKE_BUCKET {fn['Environment']}")
    # ministack's AWS::Lambda::Function provisioner drops DeadLetterConfig and
    # KMSKeyArn; checkov checks them in the template (CKV_AWS_116, CKV_AWS_173).
    check(functions["ingest-batch"]["TracingConfig"]["Mode"] == "Active", "ingest-batch: X-Ray tracing active")
    check(functions["ingest-batch"]["Environment"]["Variables"].get("GLUE_DATABASE") == outputs["GlueDatabaseName"],
          "ingest-batch: GLUE_DATABASE is the stack's database")
    restores = {k: v for k, v in functions["ingest-batch"]["Environment"]["Variables"].items() if k.startswith("RESTORE_")}
    check(restores == {"RESTORE_ARCHIVED_DAYS": "3", "RESTORE_ARCHIVED_TIER": "Bulk"},
          f"ingest-batch: archived raw objects are restored ({restores})")
    load_env = functions["load-warehouse"]["Environment"]["Variables"]
    check(load_env.get("REDSHIFT_COPY_ROLE_ARN") == outputs["RedshiftCopyRoleArn"] and load_env.get("REDSHIFT_DATABASE"),
          f"load-warehouse: Redshift environment {sorted(load_env)}")

    # The unload role may write the lake's exports/ and nothing else; the
    # copy role writes nowhere.
    def role_statements(arn):
        name = arn.rsplit("/", 1)[1]
        return [st for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]
                for st in iam.get_role_policy(RoleName=name, PolicyName=policy)["PolicyDocument"]["Statement"]]
    def writes(statements):
        return sorted(r for st in statements for r in ([st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"])
                      if any(a in ("s3:PutObject", "s3:DeleteObject", "s3:*") for a in
                             ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])))
    unload_writes = writes(role_statements(outputs["RedshiftUnloadRoleArn"]))
    check(unload_writes == [f"arn:aws:s3:::{lake}/exports/*"], f"unload role writes exports/ alone {unload_writes}")
    copy_writes = writes(role_statements(outputs["RedshiftCopyRoleArn"]))
    check(copy_writes == [], f"copy role writes nothing {copy_writes}")

    # ministack's AWS::S3::Bucket provisioner stores versioning, the public
    # access block and notifications, but drops BucketEncryption,
    # LifecycleConfiguration and LoggingConfiguration; checkov checks those
    # in the template (scripts/infra-check.sh).
    for bucket in (raw, lake):
        check(s3.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled", f"{bucket}: versioning")
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        check(all(block.values()) and len(block) == 4, f"{bucket}: public access blocked {block}")
        policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
        check(any(st["Effect"] == "Deny" and "aws:SecureTransport" in json.dumps(st.get("Condition", {}))
                  for st in policy["Statement"]), f"{bucket}: policy denies non-TLS access")

    def prefixes(bucket):
        configs = s3.get_bucket_notification_configuration(Bucket=bucket).get("LambdaFunctionConfigurations", [])
        return sorted((c["LambdaFunctionArn"].rsplit(":", 1)[1], tuple(sorted(c["Events"])),
                       tuple(sorted((r["Name"].lower(), r["Value"]) for r in c["Filter"]["Key"]["FilterRules"])))
                      for c in configs)
    # New objects, and archived ones once the restore ingest-batch asked for
    # has completed.
    check(prefixes(raw) == sorted((f"{project}-dev-ingest-batch", (event,), (("prefix", p),))
                                  for p in ("channels/", "demographics/", "viewership/")
                                  for event in ("s3:ObjectCreated:*", "s3:ObjectRestore:Completed")),
          f"raw notifications by prefix and event {prefixes(raw)}")
    queues = [(c["QueueArn"].rsplit(":", 1)[1],
               tuple(sorted((r["Name"].lower(), r["Value"]) for r in c["Filter"]["Key"]["FilterRules"])))
              for c in s3.get_bucket_notification_configuration(Bucket=lake).get("QueueConfigurations", [])]
    check(prefixes(lake) == [] and queues == [(f"{project}-dev-load", (("prefix", "staging/"), ("suffix", ".parquet")))],
          f"lake notification to the load queue {queues} (to functions: {prefixes(lake)})")
    load_queue_arn = f"arn:aws:sqs:us-east-1:{functions['load-warehouse']['FunctionArn'].split(':')[4]}:{project}-dev-load"
    load_mappings = [m for m in lam.list_event_source_mappings(FunctionName=f"{project}-dev-load-warehouse")["EventSourceMappings"]
                     if m["EventSourceArn"] == load_queue_arn]
    load_mapping = load_mappings[0] if load_mappings else {}
    check(load_mapping.get("BatchSize") == 1000 and load_mapping.get("ScalingConfig", {}).get("MaximumConcurrency") == 2,
          f"load-warehouse takes the load queue in batches {load_mapping}")

    stream_arn = kinesis.describe_stream_summary(StreamName=outputs["StreamName"])["StreamDescriptionSummary"]["StreamARN"]
    mappings = [m for m in lam.list_event_source_mappings(FunctionName=f"{project}-dev-ingest-stream")["EventSourceMappings"]
                if m["EventSourceArn"] == stream_arn]
    mapping = mappings[0] if mappings else {}
    check(mapping.get("FunctionResponseTypes") == ["ReportBatchItemFailures"]
          and not mapping.get("BisectBatchOnFunctionError") and mapping.get("ParallelizationFactor") in (None, 1)
          and mapping.get("MaximumRecordAgeInSeconds") and "stream-failures" in json.dumps(mapping.get("DestinationConfig")),
          f"Kinesis mapping {mapping}")
    check(glue.get_database(Name=outputs["GlueDatabaseName"])["Database"]["Name"] == outputs["GlueDatabaseName"], "Glue database")
    definition = json.loads(sfn.describe_state_machine(stateMachineArn=outputs["LoadStateMachineArn"])["definition"])
    states = definition["States"]
    check({"LoadAndMerge", "RebuildAnalytics", "NotifyFailure", "LoadFailed"} <= set(states)
          and states["LoadAndMerge"]["Retry"] and states["LoadAndMerge"]["Catch"]
          and functions["load-warehouse"]["FunctionArn"] in json.dumps(states["LoadAndMerge"]["Parameters"]),
          f"state machine load -> analytics with retry and catch {sorted(states)}")


def check_batch(outputs):
    raw, lake, database = outputs["RawBucketName"], outputs["LakeBucketName"], outputs["GlueDatabaseName"]
    s3.put_object(Bucket=raw, Key="channels/sam-channels.json", Body=ids(CHANNELS).encode())
    s3.put_object(Bucket=raw, Key="viewership/2031/sam day 1.csv", Body=ids(RAW_CSV).encode())

    def staged():
        keys = lake_keys(lake)
        days = sorted(k.split("/")[2] for k in keys if k.startswith("staging/viewership/event_date=2031-03-0")
                      and "kinesis" not in k)
        # The quarantine file too: the ingest writes it after the staging
        # files, so a listing between the two misses it.
        quarantined = any(k.startswith("quarantine/viewership/") and not k.split("/")[-1].startswith("kinesis")
                          for k in keys)
        return keys if days == ["event_date=2031-03-01", "event_date=2031-03-02"] and quarantined else None
    keys = wait_for(staged, 120) or lake_keys(lake)
    day1 = [k for k in keys if k.startswith("staging/viewership/event_date=2031-03-01/") and k.endswith(".parquet")]
    day2 = [k for k in keys if k.startswith("staging/viewership/event_date=2031-03-02/") and k.endswith(".parquet")]
    check(len(day1) == 1 and len(day2) == 1, f"a raw file in the raw bucket became Parquet per day in the lake: {keys}")
    if day1 and day2:
        check(parquet_rows(lake, day1[0]) == [(ids("sam-e1"),)], "2031-03-01 Parquet holds the session that starts that day")
        check(parquet_rows(lake, day2[0]) == [(ids("sam-e2"),), (ids("sam-e3"),)], "2031-03-02 Parquet holds the sessions that start that day")
    check(any(k.startswith("staging/channels/") for k in keys), "the channels file became Parquet")
    quarantine = [k for k in keys if k.startswith("quarantine/viewership/") and not k.split("/")[-1].startswith("kinesis")]
    if quarantine:
        lines = [json.loads(line) for k in quarantine
                 for line in s3.get_object(Bucket=lake, Key=k)["Body"].read().decode().splitlines()]
        reasons = sorted(line.get("reason") or line.get("reason_code") or "" for line in lines)
    else:
        reasons = []
    check(reasons == ["BAD_TIMESTAMP", "MISSING_FIELD"], f"the two bad rows quarantined with their reasons: {reasons}")

    def partitions():
        try:
            parts = glue.get_partitions(DatabaseName=database, TableName="viewership")["Partitions"]
        except glue.exceptions.EntityNotFoundException:
            return None
        values = sorted(p["Values"][0] for p in parts if p["Values"][0].startswith("2031-03-0"))
        return values if {"2031-03-01", "2031-03-02"} <= set(values) else None
    check(wait_for(partitions, 30), f"Glue partitions of the stack's database: {partitions()}")


def check_backfill(outputs):
    """The backfill state machine over a raw prefix that check_batch filled:
    a Distributed Map whose child executions run the deployed ingest-batch
    on each listed object, a folder marker included. Ingesting the same
    objects again rewrites the same staging files."""
    raw, lake = outputs["RawBucketName"], outputs["LakeBucketName"]
    s3.put_object(Bucket=raw, Key="viewership/2031/", Body=b"")  # as the console's "Create folder" does

    def staged_etags():
        return {k: s3.head_object(Bucket=lake, Key=k)["ETag"] for k in lake_keys(lake)
                if k.startswith("staging/viewership/event_date=2031-03-0") and "kinesis" not in k}
    before = staged_etags()
    arn, described = run_execution(outputs["BackfillStateMachineArn"], {"prefix": "viewership/2031/"}, 180)
    check(described["status"] == "SUCCEEDED", f"backfill: {described['status']} {described.get('error')} {described.get('cause')}")
    runs = sfn.list_map_runs(executionArn=arn).get("mapRuns", [])
    children = sfn.list_executions(mapRunArn=runs[0]["mapRunArn"])["executions"] if runs else []
    answers = {}
    for child in children:
        child_input = json.loads(sfn.describe_execution(executionArn=child["executionArn"])["input"])
        output = json.loads(sfn.describe_execution(executionArn=child["executionArn"]).get("output") or "{}")
        answers[child_input.get("key")] = [(o["status"], o["counts"]["rows_read"]) for o in output.get("objects", [])]
    check(answers == {"viewership/2031/": [("skipped", 0)], "viewership/2031/sam day 1.csv": [("loaded", 5)]},
          f"backfill: one child execution per listed object, through ingest-batch: {answers}")
    check(staged_etags() == before and before, f"backfill: the same staging files, byte for byte ({len(before)})")


def check_archived(outputs):
    """A raw object in Glacier, as the raw bucket's lifecycle rule leaves
    old ones: the deployed ingest-batch reports it and requests a restore
    (RestoreArchivedDays), and the bucket's restore-completed notification
    runs it again on the restored copy, which lands in the lake."""
    raw, lake = outputs["RawBucketName"], outputs["LakeBucketName"]
    key = "viewership/2030/sam archived.csv"
    body = ids("event_id,user_id,channel_id,start_time,duration_seconds\nsam-g1,sam-u1,sam-c1,2030-06-01T10:00:00Z,60\n")
    s3.put_object(Bucket=raw, Key=key, Body=body.encode(), StorageClass="GLACIER")

    def staged():
        keys = [k for k in lake_keys(lake) if k.startswith("staging/viewership/event_date=2030-06-01/")]
        return keys or None
    keys = wait_for(staged, 120) or []
    restore = s3.head_object(Bucket=raw, Key=key).get("Restore", "")
    check("ongoing-request" in restore, f"archived: ingest-batch requested a restore of the Glacier object ({restore!r})")
    check(len(keys) == 1 and parquet_rows(lake, keys[0]) == [(ids("sam-g1"),)],
          f"archived: the restore-completed notification ingested the restored copy: {keys}")


def check_stream(outputs):
    lake = outputs["LakeBucketName"]
    kinesis.put_record(StreamName=outputs["StreamName"], Data=ids(json.dumps(STREAM_RECORD)).encode(), PartitionKey="u4")

    def streamed():
        return [k for k in lake_keys(lake)
                if k.startswith("staging/viewership/event_date=2031-03-03/") and k.endswith(".parquet")]
    keys = wait_for(streamed, 120)
    check(len(keys) == 1, f"a Kinesis record became Parquet through the deployed mapping: {keys}")
    if keys:
        check(parquet_rows(lake, keys[0]) == [(ids("sam-k1"),)], "the streamed Parquet holds the record")


def check_warehouse(outputs):
    data = boto3.client("redshift-data", **{**KW, "endpoint_url": os.environ["AWS_ENDPOINT_URL_REDSHIFT_DATA"]})
    with open(os.path.join(ROOT, "infra/sql/reports/top_channels.sql")) as f:
        sql = "\n".join(line for line in f.read().splitlines() if not line.lstrip().startswith("--"))
    sql = sql.replace("{date}", "2031-03-02").replace("{limit}", "10").strip().rstrip(";")

    # What the last query saw, so that a failure says how far the load got.
    seen = {"rows": "no query finished"}

    def query():
        try:
            sid = data.execute_statement(WorkgroupName=outputs["RedshiftWorkgroupName"],
                                         Database=outputs["RedshiftDatabaseName"], Sql=sql)["Id"]
            for _ in range(50):
                status = data.describe_statement(Id=sid)
                if status["Status"] in ("FINISHED", "FAILED", "ABORTED"):
                    break
                time.sleep(0.2)
            if status["Status"] != "FINISHED":
                seen["rows"] = f"statement {status['Status']}: {status.get('Error')}"
                return None
            records = data.get_statement_result(Id=sid)["Records"]
        except data.exceptions.ClientError as e:
            seen["rows"] = f"client error: {e}"
            return None
        rows = [tuple(list(field.values())[0] for field in record) for record in records]
        rows = [(r[0], r[1], float(r[2]), int(r[3])) for r in rows if str(r[0]).startswith(ids("sam-"))]
        seen["rows"] = rows
        # Both channels, with the channel names once the channels file is loaded too.
        return rows if len(rows) == 2 and rows[0][1] != "Unknown" and rows[0][2] == 5400 else None
    rows = wait_for(query, 180)
    check(rows == [(ids("sam-c1"), "Sam One", 5400.0, 2), (ids("sam-c2"), "Sam Two", 600.0, 1)],
          f"the lake notification loaded the warehouse: top channels on 2031-03-02 = {rows or seen['rows']}")


def check_state_machine(outputs):
    """load -> merge -> analytics through the deployed state machine (the
    emulator runs its Lambda tasks), with the prefix request form."""
    # A failing task is retried twice (30 s, then 60 s) before the catch.
    _, described = run_execution(outputs["LoadStateMachineArn"],
                                 {"prefix": "staging/viewership/event_date=2031-03-02/"}, 200)
    result = json.loads(described.get("output") or "{}")
    check(described["status"] == "SUCCEEDED" and "loads" in result.get("load", {}) and "analytics" in result,
          f"state machine load -> analytics: {described['status']} {described.get('error')} {json.dumps(result)[:400]}")


def main():
    stack = sys.argv[1]
    description = cfn.describe_stacks(StackName=stack)["Stacks"][0]
    check(description["StackStatus"] in ("CREATE_COMPLETE", "UPDATE_COMPLETE"), f"stack {stack}: {description['StackStatus']}")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in description.get("Outputs", [])}
    project = outputs["RawBucketName"].split("-dev-raw-")[0]
    global RUN
    RUN = project
    check_resources(outputs, project)
    check_batch(outputs)
    check_backfill(outputs)
    check_stream(outputs)
    if os.environ.get("AWS_ENDPOINT_URL_REDSHIFT_DATA"):
        check_warehouse(outputs)
        check_state_machine(outputs)
    else:
        print("(no AWS_ENDPOINT_URL_REDSHIFT_DATA: the warehouse step is not checked)")
    check_archived(outputs)
    print(f"sam-deploy: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
