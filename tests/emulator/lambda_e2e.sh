#!/usr/bin/env bash
# The Lambda binaries against the running emulator and Data API stand-in
# (scripts/test.sh starts both): `cargo lambda watch` + `cargo lambda invoke`
# of each function with its hand-written event,
# then the cargo-lambda `bootstrap` zip deployed to the emulator and fired by
# its own S3 notification.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
use_test_lambda_builds
venv="${TVETL_VENV:-$HOME/.cache/tvetl-venv}"
export PATH="$venv/bin:$PATH"
run_dir="${TVETL_RUN_DIR:-$HOME/.cache/tvetl-run}"
mkdir -p "$run_dir"
: "${AWS_ENDPOINT_URL:?the emulator endpoint (scripts/test.sh sets it)}"

echo "== cargo lambda build (ingest-batch, x86_64, zip)"
cargo lambda build -p ingest-batch --target "$TVETL_LAMBDA_TARGET" --output-format zip 2>&1 | tail -n 2
export INGEST_BATCH_ZIP="$CARGO_TARGET_DIR/lambda/ingest-batch/bootstrap.zip"
ls -l "$INGEST_BATCH_ZIP"

scripts/emulator.sh reset
export INVOKE_ADDR=127.0.0.1 INVOKE_PORT="${INVOKE_PORT:-9010}"
export LAKE_BUCKET=tvetl-lake-dev GLUE_DATABASE=tvetl_dev
echo "== cargo lambda watch on $INVOKE_ADDR:$INVOKE_PORT"
setsid cargo lambda watch -p ingest-batch --target "$TVETL_LAMBDA_TARGET" -A "$INVOKE_ADDR" -P "$INVOKE_PORT" --ignore-changes \
  --env-var "LAKE_BUCKET=$LAKE_BUCKET,GLUE_DATABASE=$GLUE_DATABASE,AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL,AWS_ACCESS_KEY_ID=test,AWS_SECRET_ACCESS_KEY=test,AWS_REGION=us-east-1" \
  >"$run_dir/watch.log" 2>&1 < /dev/null &
watch_pid=$!
trap 'kill -TERM -- "-$watch_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  curl -s -o /dev/null "http://$INVOKE_ADDR:$INVOKE_PORT/" && break
  sleep 0.5
done
python "tests/emulator/lambda_e2e.py" invoke
kill -TERM -- "-$watch_pid" 2>/dev/null || true

: "${AWS_ENDPOINT_URL_REDSHIFT_DATA:?the Data API stand-in endpoint (scripts/test.sh sets it)}"
export LOAD_INVOKE_PORT="${LOAD_INVOKE_PORT:-9011}"
echo "== cargo lambda watch (load-warehouse) on $INVOKE_ADDR:$LOAD_INVOKE_PORT"
setsid cargo lambda watch -p load-warehouse --target "$TVETL_LAMBDA_TARGET" -A "$INVOKE_ADDR" -P "$LOAD_INVOKE_PORT" --ignore-changes \
  --env-var "LAKE_BUCKET=$LAKE_BUCKET,REDSHIFT_WORKGROUP_NAME=tvetl-dev,REDSHIFT_DATABASE=dev,REDSHIFT_COPY_ROLE_ARN=arn:aws:iam::000000000000:role/tvetl-copy,AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL,AWS_ENDPOINT_URL_REDSHIFT_DATA=$AWS_ENDPOINT_URL_REDSHIFT_DATA,AWS_ACCESS_KEY_ID=test,AWS_SECRET_ACCESS_KEY=test,AWS_REGION=us-east-1" \
  >"$run_dir/watch-load.log" 2>&1 < /dev/null &
watch_pid=$!
for _ in $(seq 1 600); do
  curl -s -o /dev/null "http://$INVOKE_ADDR:$LOAD_INVOKE_PORT/" && break
  sleep 0.5
done
python "tests/emulator/lambda_e2e.py" invoke-load
kill -TERM -- "-$watch_pid" 2>/dev/null || true

echo "== S3 notification -> bootstrap (provided.al2023)"
python "tests/emulator/lambda_e2e.py" notification
