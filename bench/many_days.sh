#!/usr/bin/env bash
# Memory and CPU of ingesting one object whose sessions span many days, so
# that the staging writer has a partition open for every day at once.
#
# usage: bench/many_days.sh [ROWS [DAYS]]     (default: 3000000 365)
#
# One file of ROWS sessions over DAYS days (or, with DIRTY, a dirty input
# like the benchmark's, in six files) is generated into BENCH_DIR and
# reused by later runs, then run into a fresh lake by tvetl
# and, if TVETL_BASELINE names another tvetl binary (say, a build of an
# earlier commit), by that one too, alternating, twice each. It prints exit
# status, CPU seconds, the ingest step's CPU seconds and peak RSS
# (/usr/bin/time -v) of each run, and the ingest step's own peak RSS:
# sampled every 50 ms until the run opens its warehouse, as the warehouse
# load's peak (about 420 MB) otherwise hides it.
#
# environment:
#   TVETL           tvetl binary to use (default: cargo build -p tvetl)
#   TVETL_BASELINE  a tvetl binary to compare with (default: none)
#   BENCH_DIR       work folder (default: mktemp -d)
#   DIRTY           fraction of defective records (default: 0)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/common.sh"
bench_rows_days many_days.sh "$@"
bench_setup
if [ -n "${TVETL_BASELINE:-}" ] && [ ! -x "$TVETL_BASELINE" ]; then
  echo "error: TVETL_BASELINE is not an executable: $TVETL_BASELINE" >&2; exit 1
fi

# measured NAME BIN: one run of BIN over $in into a fresh lake, with the
# ingest step's peak RSS sampled alongside timed_run's figures.
measured() {
  local name=$1 bin=$2 lake="$work/days-$1" peak=0 rss pid
  rm -rf "$lake"
  timed_run "$name" "$lake" "$in" "$bin" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if [ ! -e "$lake/_warehouse" ]; then
      # The run's processes (GNU time and tvetl) are the ones naming its lake.
      for rss in $(pgrep -f -- "--lake $lake " | xargs -r ps -o rss= -p 2>/dev/null); do
        [ "$rss" -gt "$peak" ] && peak=$rss
      done
    fi
    sleep 0.05
  done
  wait "$pid"
  echo "          ingest step's peak RSS $((peak / 1024)) MB (sampled)"
}

bench_input "$work" "$rows" "$days" "$rows" "${DIRTY:-0}"
for round in 1 2; do
  if [ -n "${TVETL_BASELINE:-}" ]; then measured "baseline-$round" "$TVETL_BASELINE"; fi
  measured "tvetl-$round" "$tvetl"
done
