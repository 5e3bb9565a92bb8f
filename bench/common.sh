# Sourced by the bench scripts. They take their tvetl and their generated
# inputs from here, so that one BENCH_DIR's inputs serve them all.

# The scripts' cargo target folder and build settings (scripts/env.sh).
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"

# require_positive_integers USAGE N...: stops with USAGE unless every N is a
# positive integer.
require_positive_integers() {
  local usage=$1 n
  shift
  for n in "$@"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] ||
      { echo "usage: $usage  (positive integers, got '$n')" >&2; exit 2; }
  done
}

# bench_rows_days SCRIPT [ROWS [DAYS]]: sets $rows and $days (default: 3M
# sessions over 365 days), or stops with SCRIPT's usage.
bench_rows_days() {
  local script=$1
  rows=${2:-3000000}
  days=${3:-365}
  require_positive_integers "bench/$script [ROWS [DAYS]]" "$rows" "$days"
}

# cpu_seconds TIME_FILE: the user + system CPU seconds a `/usr/bin/time -v`
# report gives.
cpu_seconds() {
  awk '/User time/ { u = $NF } /System time/ { s = $NF } END { printf "%.2f\n", u + s }' "$1"
}

# bench_work_dir: sets $work to BENCH_DIR (created), or to a new temp folder.
bench_work_dir() {
  work=${BENCH_DIR:-$(mktemp -d)}
  mkdir -p "$work"
  work=$(cd "$work" && pwd)
}

# require_gnu_time: stops unless /usr/bin/time is GNU time (bench/run.sh
# installs it).
require_gnu_time() {
  [ -x /usr/bin/time ] || { echo "error: needs GNU time at /usr/bin/time (bench/run.sh installs it)" >&2; exit 1; }
}

# check_baseline: stops unless TVETL_BASELINE is unset or names an executable.
check_baseline() {
  if [ -n "${TVETL_BASELINE:-}" ] && [ ! -x "$TVETL_BASELINE" ]; then
    echo "error: TVETL_BASELINE is not an executable: $TVETL_BASELINE" >&2; exit 1
  fi
}

# bench_setup: what every script but run.sh starts with: the work folder
# ($work), the tvetl binary ($tvetl, its build's output on stderr) and GNU
# time.
bench_setup() {
  bench_work_dir
  bench_tvetl "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" >&2
  require_gnu_time
}

# bench_tvetl REPO: sets $tvetl to $TVETL, or to a dev-profile build of the
# repo (see Cargo.toml for why the benchmarks do not use --release).
bench_tvetl() {
  if [ -n "${TVETL:-}" ]; then
    tvetl=$TVETL
  else
    echo "== cargo build -p tvetl" >&2
    (cd "$1" && cargo build -p tvetl)
    tvetl="$CARGO_TARGET_DIR/debug/tvetl"
  fi
  [ -x "$tvetl" ] || { echo "error: tvetl binary not found or not executable: $tvetl" >&2; exit 1; }
  case "$tvetl" in /*) ;; */*) tvetl="$PWD/$tvetl" ;; esac
}

# bench_input WORK ROWS [DAYS ROWS_PER_FILE DIRTY]: sets $in to WORK/in-ROWS,
# the benchmark's input of ROWS sessions over 7 days, 2% dirty (or DAYS
# days, in files of ROWS_PER_FILE records, DIRTY dirty:
# WORK/in-ROWS-dDAYS-fROWS_PER_FILE-xDIRTY), generated once and reused by
# later runs. (A dirty input always comes in six files of different formats.)
bench_input() {
  local work=$1 rows=$2 days=${3:-7} per_file=${4:-250000} dirty=${5:-0.02}
  in="$work/in-$rows"
  if [ "$days" != 7 ] || [ "$per_file" != 250000 ] || [ "$dirty" != 0.02 ]; then
    in="$in-d$days-f$per_file-x$dirty"
  fi
  if [ ! -e "$in.done" ]; then
    echo "== generating $rows rows over $days days into $in" >&2
    rm -rf "$in"
    "$tvetl" generate --out "$in" --rows "$rows" --days "$days" --rows-per-file "$per_file" \
      --start 2024-01-01 --seed 42 --dirty "$dirty" \
      >"$in.generate.out" 2>"$in.generate.err" || {
        echo "error: tvetl generate failed:" >&2; tail -n 20 "$in.generate.err" >&2; exit 1; }
    touch "$in.done"
  else
    echo "== reusing $in" >&2
  fi
}

# timed_run NAME LAKE INPUT [TVETL]: tvetl run (of the binary TVETL, default
# $tvetl) of INPUT into LAKE under /usr/bin/time -v (into
# $work/NAME.{time,out,err}); prints its exit status, CPU seconds and peak
# RSS, the ingest step's CPU seconds, and the error of a run that failed.
timed_run() {
  local name=$1 lake=$2 in=$3 bin=${4:-$tvetl} status=0
  /usr/bin/time -v -o "$work/$name.time" "$bin" run --input "$in" --lake "$lake" --format json --quiet \
    >"$work/$name.out" 2>"$work/$name.err" || status=$?
  local ingest_cpu
  ingest_cpu=$(python3 -c 'import json, sys; print("%.2f" % json.load(open(sys.argv[1]))["seconds"]["ingest_cpu"])' \
    "$work/$name.out" 2>/dev/null || echo "?")
  awk -v name="$name" -v status="$status" -v ingest="$ingest_cpu" '
    /User time/ { u = $NF } /System time/ { s = $NF } /Maximum resident/ { rss = $NF }
    END { printf "%-9s exit %d, %.2f CPU s (ingest %s), peak RSS %d MB\n", name, status, u + s, ingest, rss / 1024 }' \
    "$work/$name.time"
  [ "$status" -eq 0 ] || grep -m1 "^error" "$work/$name.err" || true
}
