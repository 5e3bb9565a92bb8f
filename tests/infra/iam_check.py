"""Checks that each function's role in infra/template.yaml allows the S3
requests its code makes.

The table REQUESTS below lists those requests, read from the Rust code: the
S3 calls of shared/src/aws/s3.rs (S3ObjectStore) as made by
functions/common/src/{ingest,load,stream,compact}.rs and the core they call
(shared/src/{ingest,staging,stream,compact}.rs). Each row names the code that
makes the request. The check evaluates every row against the identity
policies of the role the template gives that function (its inline policies
and the AWS::IAM::Policy resources attached to it without a Condition) and
fails, naming the role, the action and the key, for any request no statement
allows.

    ~/.cache/tvetl-sam-venv/bin/python tests/infra/iam_check.py [--verbose] [template]

prints the denied requests and a count (with --verbose, every request, the
statement that allows it and the code that makes it), and exits 1 if any is
denied, 2 if the template holds what the check does not model.

Run by scripts/infra-check.sh, with the SAM venv's Python: it reads the
template with cfn-lint's reader (pinned in infra/requirements.txt). Bucket names and ARNs are resolved with the
parameters' defaults and a fixed account and region; the requests' buckets
are taken from the template too (the functions' LAKE_BUCKET, RawBucket's
name), so a policy naming another bucket fails as well.

What it models, and what it does not:
- S3 API calls map to the IAM actions S3 authorizes them with: HeadObject is
  s3:GetObject, a multipart upload's create, parts and completion are
  s3:PutObject, ListObjectsV2 is s3:ListBucket with the s3:prefix key.
- HeadObject of a missing key answers 404 only to a caller that may
  s3:ListBucket the bucket, 403 otherwise. The code tells "gone" (404) from
  a failure, so where it heads keys that may be gone, a row asks for
  s3:ListBucket on the bucket without a prefix.
- Allow and Deny statements, Action and Resource with * and ? wildcards,
  Condition operators StringEquals and StringLike on the request's keys. A
  condition key the request does not carry makes the statement not apply.
  NotAction, NotResource and other operators are refused (the check fails)
  rather than guessed.
- Not modelled: bucket policies, KMS key policies, SCPs, permission
  boundaries. The lake and raw bucket policies only deny requests without
  TLS, which the SDK never sends.
"""

import re
import sys
from pathlib import Path

from cfnlint.decode import cfn_yaml

REPO = Path(__file__).resolve().parents[2]
PSEUDO = {
    "AWS::AccountId": "123456789012",
    "AWS::Region": "us-east-1",
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
}

# Example keys, as the code builds them (shared/src/staging.rs staging_dir,
# quarantine_dir; shared/src/stream.rs stem; shared/src/compact.rs).
DAY = "staging/viewership/event_date=2024-01-01"
QDAY = "quarantine/viewership/ingest_date=2024-01-01"
KINESIS = "kinesis~tvetl-dev-viewing~shardId-000000000000"
KAFKA = "kafka~viewing-sessions~0"
JOURNAL = "compaction/viewership/0123456789abcdef.json"

# (function, bucket, action, key or prefix, code), where:
# - function is the logical id of the AWS::Serverless::Function whose Role is
#   checked; "LoadWarehouseFunction/REDSHIFT_COPY_ROLE_ARN" checks the role
#   that this environment variable of the function names instead (Redshift
#   COPY reads the lake with it);
# - bucket is "lake" (the function's LAKE_BUCKET) or "raw" (RawBucket);
# - for s3:ListBucket, the key is the listing's prefix (the s3:prefix
#   condition key), or None for the ListBucket that turns a HeadObject of a
#   missing key into 404.
REQUESTS = [
    # ingest-batch: an S3 notification or a backfill item names a raw object.
    ("IngestBatchFunction", "raw", "s3:GetObject", "viewership/2024/sessions.csv",
     "functions/common/src/ingest.rs ingest_one: raw.head(&object.key) (HeadObject)"),
    ("IngestBatchFunction", "raw", "s3:GetObject", "channels/channels.json",
     "functions/common/src/ingest.rs ingest_one: raw.head(&object.key) (HeadObject)"),
    ("IngestBatchFunction", "raw", "s3:GetObject", "demographics/households.csv",
     "functions/common/src/ingest.rs ingest_one: raw.head(&object.key) (HeadObject)"),
    ("IngestBatchFunction", "raw", "s3:ListBucket", None,
     "functions/common/src/ingest.rs ingest_one: raw.head of an object deleted since its event -> NotFound, 'missing'"),
    ("IngestBatchFunction", "raw", "s3:GetObject", "viewership/2024/sessions.csv",
     "shared/src/ingest.rs ingest_object: raw.open_listed(object) (GetObject If-Match)"),
    ("IngestBatchFunction", "raw", "s3:RestoreObject", "viewership/2024/sessions.csv",
     "functions/common/src/ingest.rs ingest_one: raw.request_restore (archived object)"),
    ("IngestBatchFunction", "lake", "s3:PutObject", f"{DAY}/part-0123456789abcdef.parquet",
     "shared/src/staging.rs PartitionWriter::push: store.create(&key), committed (PutObject or multipart)"),
    ("IngestBatchFunction", "lake", "s3:PutObject", "staging/channels/part-0123456789abcdef.parquet",
     "shared/src/staging.rs PartitionWriter::push: store.create(&key) (unpartitioned table)"),
    ("IngestBatchFunction", "lake", "s3:AbortMultipartUpload", f"{DAY}/part-0123456789abcdef.parquet",
     "shared/src/aws/s3.rs S3Upload::drop: an upload dropped uncommitted"),
    ("IngestBatchFunction", "lake", "s3:PutObject", f"{QDAY}/part-0123456789abcdef.jsonl",
     "shared/src/staging.rs QuarantineWriter::write: store.create(&self.key)"),
    ("IngestBatchFunction", "lake", "s3:PutObject", f"{QDAY}/unreadable-0123456789abcdef.json",
     "shared/src/ingest.rs record_unreadable: lake.put(&key, &line)"),

    # load-warehouse
    ("LoadWarehouseFunction", "lake", "s3:ListBucket", f"{DAY}/",
     "functions/common/src/load.rs LoadRequest::requested: lake.list(prefix) ({\"prefix\": ...} request)"),
    ("LoadWarehouseFunction", "lake", "s3:GetObject", f"{DAY}/part-0123456789abcdef.parquet",
     "functions/common/src/load.rs files_to_load: lake.head(key) (HeadObject)"),
    ("LoadWarehouseFunction", "lake", "s3:GetObject", f"{DAY}/compacted-0123456789abcdef.parquet",
     "functions/common/src/load.rs files_to_load: lake.head(key) of a compacted file"),
    ("LoadWarehouseFunction", "lake", "s3:ListBucket", None,
     "functions/common/src/load.rs files_to_load: lake.head of a notified file merged since -> NotFound, 'missing'"),
    ("LoadWarehouseFunction", "lake", "s3:ListBucket", "compaction/viewership/",
     "shared/src/compact.rs unfinished: lake.list(\"compaction/<table>/\") (via load.rs files_to_load -> unremoved_members)"),
    ("LoadWarehouseFunction", "lake", "s3:GetObject", JOURNAL,
     "shared/src/compact.rs unfinished: lake.open(&entry.key) (via load.rs files_to_load -> unremoved_members)"),
    ("LoadWarehouseFunction", "lake", "s3:ListBucket", f"{DAY}/",
     "functions/common/src/load.rs vanished_files: lake.list(folder) of a load that failed for good"),
    ("LoadWarehouseFunction", "lake", "s3:PutObject", "manifests/load/viewership/0123456789abcdef.manifest",
     "functions/common/src/load.rs load: lake.put(&manifest_key, &body)"),
    ("LoadWarehouseFunction/REDSHIFT_COPY_ROLE_ARN", "lake", "s3:GetObject",
     "manifests/load/viewership/0123456789abcdef.manifest",
     "functions/common/src/load.rs copy_statement: COPY ... MANIFEST reads the manifest"),
    ("LoadWarehouseFunction/REDSHIFT_COPY_ROLE_ARN", "lake", "s3:GetObject",
     f"{DAY}/compacted-0123456789abcdef.parquet",
     "functions/common/src/load.rs copy_statement: COPY reads each file the manifest lists"),

    # ingest-stream: a batch of one shard (Kinesis) or partition (Kafka).
    ("IngestStreamFunction", "lake", "s3:ListBucket", f"{DAY}/{KINESIS}~",
     "shared/src/stream.rs written_ranges: lake.list(&format!(\"{dir}/{stem}~\")) (staging)"),
    ("IngestStreamFunction", "lake", "s3:ListBucket", f"{QDAY}/{KAFKA}~",
     "shared/src/stream.rs written_ranges: lake.list(&format!(\"{dir}/{stem}~\")) (quarantine)"),
    ("IngestStreamFunction", "lake", "s3:PutObject", f"{DAY}/{KINESIS}~49650-49659.parquet",
     "shared/src/stream.rs write_rows: lake.create(key), committed"),
    ("IngestStreamFunction", "lake", "s3:AbortMultipartUpload", f"{DAY}/{KINESIS}~49650-49659.parquet",
     "shared/src/aws/s3.rs S3Upload::drop: an upload dropped uncommitted"),
    ("IngestStreamFunction", "lake", "s3:PutObject", f"{QDAY}/{KAFKA}~17-17.jsonl",
     "shared/src/stream.rs write_group: QuarantineWriter::at(lake, key)"),

    # compact-partitions: compact_table per table.
    ("CompactPartitionsFunction", "lake", "s3:ListBucket", "staging/viewership/",
     "shared/src/compact.rs compact_table: lake.list(\"staging/<table>/\")"),
    ("CompactPartitionsFunction", "lake", "s3:ListBucket", "compaction/viewership/",
     "shared/src/compact.rs unfinished: lake.list(\"compaction/<table>/\") (recover)"),
    ("CompactPartitionsFunction", "lake", "s3:GetObject", JOURNAL,
     "shared/src/compact.rs unfinished: lake.open(&entry.key) (recover)"),
    ("CompactPartitionsFunction", "lake", "s3:GetObject", f"{DAY}/compacted-0123456789abcdef.parquet",
     "shared/src/compact.rs recover: lake.head(&journal.output)"),
    ("CompactPartitionsFunction", "lake", "s3:ListBucket", None,
     "shared/src/compact.rs recover: lake.head of an output or member that is gone -> NotFound"),
    ("CompactPartitionsFunction", "lake", "s3:PutObject", JOURNAL,
     "shared/src/compact.rs compact_bin: lake.put(&journal_key, ...)"),
    ("CompactPartitionsFunction", "lake", "s3:PutObject", f"{DAY}/compacted-0123456789abcdef.parquet",
     "shared/src/compact.rs compact_bin: lake.create(&output), committed"),
    ("CompactPartitionsFunction", "lake", "s3:PutObject", "staging/channels/compacted-0123456789abcdef.parquet",
     "shared/src/compact.rs compact_bin: lake.create(&output) (unpartitioned table)"),
    ("CompactPartitionsFunction", "lake", "s3:AbortMultipartUpload", f"{DAY}/compacted-0123456789abcdef.parquet",
     "shared/src/aws/s3.rs S3Upload::drop: an output dropped uncommitted (row count mismatch)"),
    ("CompactPartitionsFunction", "lake", "s3:GetObject", f"{DAY}/part-0123456789abcdef.parquet",
     "shared/src/compact.rs compact_bin: lake.open(&member.key)"),
    ("CompactPartitionsFunction", "lake", "s3:GetObject", f"{DAY}/{KINESIS}~49650-49659.parquet",
     "shared/src/compact.rs compact_bin: lake.open(&member.key) (a stream file)"),
    ("CompactPartitionsFunction", "lake", "s3:DeleteObject", f"{DAY}/part-0123456789abcdef.parquet",
     "shared/src/compact.rs compact_bin / recover: lake.delete(&member.key)"),
    ("CompactPartitionsFunction", "lake", "s3:DeleteObject", JOURNAL,
     "shared/src/compact.rs compact_bin / recover: lake.delete(&journal_key)"),
]


class CheckError(Exception):
    """The template holds something this check does not model."""


# --------------------------------------------------------------- template
class Template:
    def __init__(self, path):
        # cfn-lint's reader: short-form tags come back in their long forms
        # (!Sub x as {"Fn::Sub": x}, !GetAtt a.b as {"Fn::GetAtt": ["a", "b"]}).
        self.doc = cfn_yaml.load(str(path))
        self.resources = self.doc["Resources"]
        self.values = dict(PSEUDO)
        for name, param in self.doc.get("Parameters", {}).items():
            if "Default" in param:
                self.values[name] = str(param["Default"])

    def resolve(self, value):
        """A string, as far as parameters and pseudo parameters go. What
        depends on a resource (its Ref or attributes) becomes a placeholder
        <...>, which no request ARN matches."""
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and len(value) == 1:
            (fn, arg), = value.items()
            if fn == "Ref":
                return self.values.get(arg, f"<{arg}>")
            if fn == "Fn::GetAtt":
                return "<" + ".".join(arg) + ">"
            if fn == "Fn::Sub":
                text, local = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

                def var(m):
                    name = m.group(1)
                    if name.startswith("!"):
                        return "${" + name[1:] + "}"
                    if name in local:
                        return self.resolve(local[name])
                    return self.values.get(name, f"<{name}>")

                return re.sub(r"\$\{([^}]+)\}", var, text)
        return "<" + repr(value) + ">"

    def statements_of(self, role):
        """The identity-policy statements of role `role`."""
        res = self.resources.get(role)
        if res is None or res["Type"] != "AWS::IAM::Role":
            raise CheckError(f"{role}: not an AWS::IAM::Role of the template")
        docs = [p["PolicyDocument"] for p in res["Properties"].get("Policies", [])]
        if res["Properties"].get("ManagedPolicyArns"):
            raise CheckError(f"{role}: managed policies are not modelled")
        for name, other in self.resources.items():
            if other["Type"] == "AWS::IAM::Policy" and "Condition" not in other:
                if {"Ref": role} in other["Properties"].get("Roles", []):
                    docs.append(other["Properties"]["PolicyDocument"])
        statements = []
        for doc in docs:
            s = doc["Statement"]
            statements += s if isinstance(s, list) else [s]
        return statements

    def role_of(self, principal):
        """The role logical id of "Function" (its Role) or "Function/VAR"
        (the role its environment variable VAR names)."""
        function, _, variable = principal.partition("/")
        props = self.resources[function]["Properties"]
        ref = props["Environment"]["Variables"][variable] if variable else props["Role"]
        if not (isinstance(ref, dict) and "Fn::GetAtt" in ref and ref["Fn::GetAtt"][1] == "Arn"):
            raise CheckError(f"{principal}: not !GetAtt <Role>.Arn")
        return ref["Fn::GetAtt"][0]

    def bucket(self, principal, which):
        if which == "raw":
            return self.resolve(self.resources["RawBucket"]["Properties"]["BucketName"])
        function = principal.partition("/")[0]
        return self.resolve(self.resources[function]["Properties"]["Environment"]["Variables"]["LAKE_BUCKET"])


# ---------------------------------------------------------- evaluation
def as_list(v):
    return v if isinstance(v, list) else [v]


def wildcard(pattern, value, ignore_case=False):
    """IAM's matching: * any run of characters, ? one character."""
    flags = re.IGNORECASE if ignore_case else 0
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags) is not None


def applies(statement, template, action, resource, context):
    for unsupported in ("NotAction", "NotResource", "NotPrincipal"):
        if unsupported in statement:
            raise CheckError(f"statement {statement.get('Sid', '?')}: {unsupported} is not modelled")
    if not any(wildcard(a, action, ignore_case=True) for a in as_list(statement["Action"])):
        return False
    resources = [template.resolve(r) for r in as_list(statement["Resource"])]
    if not any(wildcard(r, resource) for r in resources):
        return False
    for operator, keys in statement.get("Condition", {}).items():
        if operator not in ("StringEquals", "StringLike"):
            raise CheckError(f"statement {statement.get('Sid', '?')}: condition {operator} is not modelled")
        for key, wanted in keys.items():
            if key not in context:
                return False
            wanted = [template.resolve(w) for w in as_list(wanted)]
            if operator == "StringEquals" and context[key] not in wanted:
                return False
            if operator == "StringLike" and not any(wildcard(w, context[key]) for w in wanted):
                return False
    return True


def evaluate(template, role, action, resource, context):
    """The Sid of the statement that allows the request, or None (no Allow
    applies, or a Deny does)."""
    allowed = None
    for st in template.statements_of(role):
        if applies(st, template, action, resource, context):
            if st["Effect"] == "Deny":
                return None
            allowed = allowed or st.get("Sid", "(no Sid)")
    return allowed


def main():
    args = sys.argv[1:]
    verbose = "--verbose" in args
    paths = [a for a in args if a != "--verbose"]
    template = Template(paths[0] if paths else REPO / "infra" / "template.yaml")
    denied = []
    for principal, which, action, key, code in REQUESTS:
        role = template.role_of(principal)
        bucket = template.bucket(principal, which)
        if action == "s3:ListBucket":
            resource = f"arn:{PSEUDO['AWS::Partition']}:s3:::{bucket}"
            context = {} if key is None else {"s3:prefix": key}
            shown = f"s3://{bucket}" + ("" if key is None else f" prefix {key}")
        else:
            resource = f"arn:{PSEUDO['AWS::Partition']}:s3:::{bucket}/{key}"
            context = {}
            shown = f"s3://{bucket}/{key}"
        sid = evaluate(template, role, action, resource, context)
        if verbose:
            print(f"{'ok    ' if sid else 'DENIED'} {role} {action} {shown}"
                  + (f" (allowed by {sid})" if sid else "") + f"\n       <- {code}")
        if not sid:
            denied.append(f"{role} may not {action} on {shown}\n       <- {code}")
    for d in denied:
        print(f"DENIED: {d}", file=sys.stderr)
    print(f"{len(REQUESTS)} S3 requests of the functions' code, {len(denied)} denied by their roles")
    return 1 if denied else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CheckError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
