#!/usr/bin/env bash
# Every test: unit, property, SQL dialect, end to end, and the AWS path
# against a local emulator (ministack, installed into a venv and started
# here, stopped on exit).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

# Two cargo invocations on purpose: one workspace-wide build would unify
# features across the DuckDB side and the AWS side and compile DuckDB's C++
# engine a second time.
cargo test -p tvetl-core -p tvetl "$@"

scripts/emulator.sh start >/dev/null
trap 'scripts/emulator.sh stop' EXIT
export AWS_ENDPOINT_URL="$(scripts/emulator.sh endpoint)"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN
cargo test -p tvetl-lambda -p ingest-batch -p load-warehouse "$@" -- --include-ignored
