#!/usr/bin/env bash
# Memory of a run that replaces rows already in the warehouse, at the default
# DuckDB memory limit: the case a first load never exercises.
#
# usage: bench/redelivery.sh
#
#   sessions: load 5M generated sessions, then a run over a 1M generation
#             with the same object keys and event ids (new content), so about
#             0.94M loaded sessions are replaced;
#   users:    load a 3M-user demographics snapshot, then a second snapshot
#             with new values for every user.
#
# For each second run it prints its exit status, CPU seconds and peak RSS
# (/usr/bin/time -v), and how many rows core holds afterwards.
#
# environment:
#   TVETL      tvetl binary to use (default: cargo build -p tvetl)
#   BENCH_DIR  work folder (default: mktemp -d); bench/run.sh's inputs there
#              (in-1000000, in-5000000) are reused
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/common.sh"
bench_setup

users() {
  local dir=$1 band=$2
  mkdir -p "$dir/demographics"
  { echo "user_id,age_band,gender,region"
    seq 0 2999999 | awk -v band="$band" '{ printf "u%07d,%s,f,region-%d\n", $1, band, $1 % 50 }'
  } >"$dir/demographics/users.csv"
}

core_rows() {
  local db="$1/_warehouse/warehouse.duckdb" py="$here/.venv/bin/python"
  if [ -x "$py" ]; then
    "$py" -c "import duckdb,sys; print('  core.$2:', duckdb.connect(sys.argv[1], read_only=True).execute('SELECT COUNT(*) FROM core.$2').fetchone()[0], 'rows')" "$db"
  fi
}

bench_input "$work" 5000000; big=$in
bench_input "$work" 1000000; small=$in
lake="$work/redelivery-sessions"
rm -rf "$lake"
"$tvetl" run --input "$big" --lake "$lake" --format json --quiet >/dev/null
timed_run sessions "$lake" "$small"
core_rows "$lake" viewing_sessions

lake="$work/redelivery-users"
rm -rf "$lake" "$work/users-first" "$work/users-second"
users "$work/users-first" 18-24
users "$work/users-second" 25-34
"$tvetl" run --input "$work/users-first" --lake "$lake" --format json --quiet >/dev/null
timed_run users "$lake" "$work/users-second"
core_rows "$lake" users
