#!/usr/bin/env bash
# Memory and CPU of one tvetl run far larger than the benchmark's, at the
# default DuckDB memory limit: does the whole run stay under 512 MB of RSS?
#
# usage: bench/scale.sh [ROWS ...]      (default: 10000000 20000000)
#
# Each ROWS is generated like bench/run.sh's inputs (7 days, 2% dirty) into
# BENCH_DIR/in-ROWS (about 90 MB per million rows) and reused by later runs,
# then run into a fresh lake. It prints exit status, CPU seconds and peak RSS
# (/usr/bin/time -v).
#
# environment:
#   TVETL      tvetl binary to use (default: cargo build -p tvetl)
#   BENCH_DIR  work folder (default: mktemp -d)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ "$#" -gt 0 ]; then rows_list=("$@"); else rows_list=(10000000 20000000); fi
source "$here/common.sh"
bench_setup

for rows in "${rows_list[@]}"; do
  bench_input "$work" "$rows"
  lake="$work/scale-$rows"
  rm -rf "$lake"
  timed_run "scale-$rows" "$lake" "$in"
done
