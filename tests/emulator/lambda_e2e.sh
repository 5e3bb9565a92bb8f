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
# Refuses a port something already answers on (another run's watch would be
# tested in place of this build's), and waits for this watch while it lives.
port_free() {
  if curl -s -o /dev/null --max-time 2 "http://$INVOKE_ADDR:$1/"; then
    echo "error: something already answers on $INVOKE_ADDR:$1 (another test run?)" >&2
    exit 1
  fi
}
wait_for_watch() {
  local port=$1 log=$2
  for _ in $(seq 1 600); do
    curl -s -o /dev/null --max-time 2 "http://$INVOKE_ADDR:$port/" && return 0
    if ! kill -0 "$watch_pid" 2>/dev/null; then
      echo "error: cargo lambda watch ended before it served; log: $log" >&2
      tail -20 "$log" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  echo "error: cargo lambda watch did not serve on $INVOKE_ADDR:$port; log: $log" >&2
  exit 1
}

port_free "$INVOKE_PORT"
echo "== cargo lambda watch on $INVOKE_ADDR:$INVOKE_PORT"
setsid cargo lambda watch -p ingest-batch --target "$TVETL_LAMBDA_TARGET" -A "$INVOKE_ADDR" -P "$INVOKE_PORT" --ignore-changes \
  --env-var "LAKE_BUCKET=$LAKE_BUCKET,GLUE_DATABASE=$GLUE_DATABASE,AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL,AWS_ACCESS_KEY_ID=test,AWS_SECRET_ACCESS_KEY=test,AWS_REGION=us-east-1" \
  >"$run_dir/watch.log" 2>&1 < /dev/null &
watch_pid=$!
trap 'kill -TERM -- "-$watch_pid" 2>/dev/null || true' EXIT
wait_for_watch "$INVOKE_PORT" "$run_dir/watch.log"
python "tests/emulator/lambda_e2e.py" invoke
kill -TERM -- "-$watch_pid" 2>/dev/null || true

: "${AWS_ENDPOINT_URL_REDSHIFT_DATA:?the Data API stand-in endpoint (scripts/test.sh sets it)}"
export LOAD_INVOKE_PORT="${LOAD_INVOKE_PORT:-9011}"
port_free "$LOAD_INVOKE_PORT"
echo "== cargo lambda watch (load-warehouse) on $INVOKE_ADDR:$LOAD_INVOKE_PORT"
setsid cargo lambda watch -p load-warehouse --target "$TVETL_LAMBDA_TARGET" -A "$INVOKE_ADDR" -P "$LOAD_INVOKE_PORT" --ignore-changes \
  --env-var "LAKE_BUCKET=$LAKE_BUCKET,REDSHIFT_WORKGROUP_NAME=tvetl-dev,REDSHIFT_DATABASE=dev,REDSHIFT_COPY_ROLE_ARN=arn:aws:iam::000000000000:role/tvetl-copy,AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL,AWS_ENDPOINT_URL_REDSHIFT_DATA=$AWS_ENDPOINT_URL_REDSHIFT_DATA,AWS_ACCESS_KEY_ID=test,AWS_SECRET_ACCESS_KEY=test,AWS_REGION=us-east-1" \
  >"$run_dir/watch-load.log" 2>&1 < /dev/null &
watch_pid=$!
wait_for_watch "$LOAD_INVOKE_PORT" "$run_dir/watch-load.log"
python "tests/emulator/lambda_e2e.py" invoke-load
kill -TERM -- "-$watch_pid" 2>/dev/null || true

echo "== S3 notification -> bootstrap (provided.al2023)"
python "tests/emulator/lambda_e2e.py" notification
