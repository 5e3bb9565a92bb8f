#!/usr/bin/env bash
# Every test: unit, property, SQL dialect, end to end, and the AWS path
# against a local emulator (ministack) and a Redshift Data API stand-in over
# DuckDB, both installed into a venv, started here and stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

# One run at a time per machine: the emulator's port, its state (reset
# below) and the Lambda watch ports are the machine's, not the checkout's.
# The lock is held by flock itself (-o), so no process this run starts
# can keep it after the run.
run_dir="${TVETL_RUN_DIR:-$HOME/.cache/tvetl-run}"
if [ -z "${TVETL_TEST_LOCKED:-}" ]; then
  mkdir -p "$run_dir"
  if ! flock -n -o "$run_dir/test.lock" true; then
    echo "== another scripts/test.sh is running on this machine: waiting for it" >&2
  fi
  exec env TVETL_TEST_LOCKED=1 flock -o "$run_dir/test.lock" "$0" "$@"
fi
source scripts/env.sh

# Two cargo invocations on purpose: one workspace-wide build would unify
# features across the DuckDB side and the AWS side and compile DuckDB's C++
# engine a second time.
cargo test --locked -p tvetl-core -p tvetl "$@"

# An independent oracle written from the data contract alone (stdlib Python):
# its own dirty datasets and single-defect probes, its own answers, compared
# with `tvetl run` and both reports. Four more datasets of drawn size, span
# and dirt, from a fixed seed so that a failure replays (FUZZ_SEED=… to vary).
FUZZ="${FUZZ:-4}" FUZZ_SEED="${FUZZ_SEED:-20261206}" TVETL="$CARGO_TARGET_DIR/debug/tvetl" tests/oracle/check.sh

scripts/emulator.sh start >/dev/null
trap 'scripts/emulator.sh standin-stop; scripts/emulator.sh stop' EXIT
# A small page size, so the SDK's result paging is exercised.
STANDIN_PAGE_SIZE=5 scripts/emulator.sh standin-start >/dev/null
export AWS_ENDPOINT_URL="$(scripts/emulator.sh endpoint)"
# Redshift Data API calls go to the stand-in; every other client to ministack.
export AWS_ENDPOINT_URL_REDSHIFT_DATA="$(scripts/emulator.sh standin-endpoint)"
# The AWS path's end-to-end test compares with the local runner's reports.
export TVETL_BIN="$CARGO_TARGET_DIR/debug/tvetl"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN
scripts/emulator.sh reset
# For the Lambda triple, so that the Lambda builds below reuse this build.
use_test_lambda_builds
cargo test --locked -p tvetl-lambda -p ingest-batch -p load-warehouse -p ingest-stream -p compact-partitions \
  --target "$TVETL_LAMBDA_TARGET" "$@" -- --include-ignored

# The Lambda binaries themselves: cargo lambda watch/invoke, and the
# bootstrap zip fired by the emulator's S3 notification.
tests/emulator/lambda_e2e.sh

# The stream path: Kinesis mapping -> ingest-stream bootstrap, replays, an S3
# failure part-way, and compaction.
tests/emulator/stream_e2e.sh

# The SAM template: sam validate --lint, cfn-lint, checkov; then built with
# cargo-lambda, deployed to the emulator's CloudFormation and driven end to end.
scripts/infra-check.sh
tests/emulator/sam_deploy_e2e.sh
