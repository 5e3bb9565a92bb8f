#!/usr/bin/env bash
# The stream path against the running emulator (scripts/test.sh starts it):
# the ingest-stream and compact-partitions `bootstrap` zips deployed as
# provided.al2023 functions, fed by a Kinesis event source mapping, by direct
# invocations replaying a batch, through an S3 proxy that fails part-way, and
# on a lake of small files. See tests/emulator/stream_e2e.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
use_test_lambda_builds
venv="${TVETL_VENV:-$HOME/.cache/tvetl-venv}"
export PATH="$venv/bin:$PATH"
: "${AWS_ENDPOINT_URL:?the emulator endpoint (scripts/test.sh sets it)}"

echo "== cargo lambda build (ingest-stream, compact-partitions, x86_64, zip)"
cargo lambda build -p ingest-stream -p compact-partitions --target "$TVETL_LAMBDA_TARGET" --output-format zip 2>&1 | tail -n 2
export INGEST_STREAM_ZIP="$CARGO_TARGET_DIR/lambda/ingest-stream/bootstrap.zip"
export COMPACT_ZIP="$CARGO_TARGET_DIR/lambda/compact-partitions/bootstrap.zip"
ls -l "$INGEST_STREAM_ZIP" "$COMPACT_ZIP"

status=0
for test in kinesis failure compaction; do
  echo "== stream: $test"
  python tests/emulator/stream_e2e.py "$test" || status=1
done
exit $status
