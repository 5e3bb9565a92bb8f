#!/usr/bin/env bash
# CPU and memory of a run over many small raw files: a set-top box's upload
# each, where every file stages one small Parquet file per day it holds.
#
# usage: bench/many_files.sh [ROWS [ROWS_PER_FILE [DAYS]]]   (default: 400000 25 7)
#
# ROWS sessions in files of ROWS_PER_FILE records over DAYS days (the
# generator spreads each file's sessions over all the days) are generated
# into BENCH_DIR once and reused by later runs, then run into a fresh lake
# by tvetl and, if TVETL_BASELINE names another tvetl binary (say, a build
# of an earlier commit), by that one too, alternating, twice each. It prints
# each run's exit status, CPU seconds, the ingest step's CPU seconds and
# peak RSS (/usr/bin/time -v), then the CPU per raw file and per staged file.
#
# environment:
#   TVETL           tvetl binary to use (default: cargo build -p tvetl)
#   TVETL_BASELINE  a tvetl binary to compare with (default: none)
#   BENCH_DIR       work folder (default: mktemp -d)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/common.sh"
rows=${1:-400000}
per_file=${2:-25}
days=${3:-7}
require_positive_integers "bench/many_files.sh [ROWS [ROWS_PER_FILE [DAYS]]]" "$rows" "$per_file" "$days"
bench_setup
check_baseline

bench_input "$work" "$rows" "$days" "$per_file" 0
raw_files=$(find "$in/viewership" -type f | wc -l)

# measured NAME BIN: one run of BIN over $in into a fresh lake, and its CPU
# per raw and per staged file.
measured() {
  local name=$1 bin=$2 lake="$work/files-$1"
  rm -rf "$lake"
  timed_run "$name" "$lake" "$in" "$bin"
  local staged
  staged=$(find "$lake/staging/viewership" -name '*.parquet' 2>/dev/null | wc -l)
  python3 - "$(cpu_seconds "$work/$name.time")" "$work/$name.out" "$raw_files" "$staged" <<'EOF'
import json, sys
cpu, out, raw, staged = float(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = json.load(open(out))["seconds"]
print(f"          {raw} raw files, {staged} staged: {1000 * cpu / raw:.2f} ms CPU per raw file "
      f"(ingest {1000 * s['ingest_cpu'] / raw:.2f}), {1000 * s['warehouse_cpu'] / max(staged, 1):.2f} ms "
      f"of warehouse CPU per staged file")
EOF
}

for round in 1 2; do
  if [ -n "${TVETL_BASELINE:-}" ]; then measured "baseline-$round" "$TVETL_BASELINE"; fi
  measured "tvetl-$round" "$tvetl"
done
