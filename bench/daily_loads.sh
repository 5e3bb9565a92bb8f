#!/usr/bin/env bash
# Does a day's load cost the same when the warehouse already holds months?
# A daily feed, one run per day into the same lake: each run's CPU should
# follow the day's sessions, not the history in core.
#
# usage: bench/daily_loads.sh [DAYS [ROWS_PER_DAY [IDS [FEED]]]]   (default: 30 200000 ordered separate)
#
# DAYS inputs of ROWS_PER_DAY records each (2% dirty, one day each from
# 2024-01-01, seed = the day's number) are generated into BENCH_DIR once and
# reused by later runs. The generator numbers event ids from 0 in every
# input, so each day's ids are renamed to make them new sessions, as a real
# feed's are: with IDS=ordered to eNNN-… (NNN the day), so that they grow
# day by day like a counter's or a timestamp's; with IDS=random to 16 hex
# digits of a hash, scattered like UUIDs. Then they are run one a day into a fresh
# lake, by tvetl and, if TVETL_BASELINE names another tvetl binary (say, a
# build of an earlier commit), by that one into a lake of its own,
# alternating day by day. With FEED=separate each day's run reads that
# day's input alone; with FEED=landing it reads one landing folder that
# every day's files are added to (hard links under <source>/day-NNN/, so
# with their sizes and times), as an SFTP drop that is never emptied: the
# run sees the whole history's files again. It prints, per load: the
# sessions in core before it, the run's CPU seconds (/usr/bin/time), the
# ingest's and the warehouse load's, and two of its statements'
# (TVETL_SQL_TIMINGS): the analytics rebuild's scan of core (day_viewing)
# and closing the database, then the mean of the first and of the last
# five loads.
#
# environment:
#   TVETL           tvetl binary to use (default: cargo build -p tvetl)
#   TVETL_BASELINE  a tvetl binary to compare with (default: none)
#   BENCH_DIR       work folder (default: mktemp -d)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/common.sh"
days=${1:-30}
rows=${2:-200000}
ids=${3:-ordered}
feed=${4:-separate}
usage="bench/daily_loads.sh [DAYS [ROWS_PER_DAY [IDS [FEED]]]]"
case "$ids/$feed" in ordered/separate | ordered/landing | random/separate | random/landing) ;; *)
  echo "usage: $usage  (IDS: ordered or random, FEED: separate or landing; got '$ids', '$feed')" >&2; exit 2 ;;
esac
require_positive_integers "$usage" "$days" "$rows"
bench_setup
check_baseline

# -- one input per day, with ids of its own -----------------------------
inputs="$work/daily-$rows-$ids"
mkdir -p "$inputs"
# day_input DAY: the folder of DAY's input.
day_input() { printf '%s/day-%03d' "$inputs" "$1"; }
for ((d = 1; d <= days; d++)); do
  in=$(day_input "$d")
  [ -e "$in.done" ] && continue
  start=$(date -u -d "2024-01-01 + $((d - 1)) days" +%F)
  echo "== generating day $d ($start): $rows records into $in" >&2
  rm -rf "$in"
  "$tvetl" generate --out "$in" --rows "$rows" --days 1 --start "$start" --seed "$d" --dirty 0.02 \
    >"$in.generate.out" 2>"$in.generate.err"
  python3 - "$in/viewership" "$d" "$ids" <<'EOF'
import gzip, hashlib, os, re, sys
folder, day, ids = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def renamed(match):
    if ids == "ordered":
        return b"e%03d-%s" % (day, match.group(1))
    return hashlib.blake2b(b"%d-%s" % (day, match.group(1)), digest_size=8).hexdigest().encode()
for name in os.listdir(folder):
    path = os.path.join(folder, name)
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            body = f.read()
    except (OSError, EOFError):
        continue  # the generator's truncated gzip file: unreadable, and meant to be
    with opener(path, "wb") as f:
        f.write(re.sub(rb"\bev(\d{10})", renamed, body))
EOF
  touch "$in.done"
done

# -- the loads ----------------------------------------------------------
landing="$work/daily-landing-$rows-$ids"
# run_input DAY: the folder DAY's runs read; with FEED=landing, DAY's files
# are added to the landing folder first (once, for every binary's run).
run_input() {
  if [ "$feed" = separate ]; then
    day_input "$1"
    return
  fi
  local from source
  from=$(day_input "$1")
  [ "$1" -gt 1 ] || rm -rf "$landing"
  for source in viewership channels demographics; do
    [ -d "$landing/$source/day-$(printf %03d "$1")" ] || [ ! -d "$from/$source" ] ||
      { mkdir -p "$landing/$source" && cp -al "$from/$source" "$landing/$source/day-$(printf %03d "$1")"; }
  done
  echo "$landing"
}

# load NAME BIN DAY INPUT: BIN's run of INPUT (DAY's) into NAME's lake (a
# fresh one on day 1); writes what it measured to
# $work/daily-IDS-FEED-NAME-DAY.json, with the sessions in core before and
# after it.
load() {
  local name=$1 bin=$2 d=$3 lake="$work/daily-lake-$ids-$feed-$1" log="$work/daily-$ids-$feed-$1-$3"
  [ "$d" -gt 1 ] || rm -rf "$lake"
  TVETL_SQL_TIMINGS=1 /usr/bin/time -v -o "$log.time" "$bin" run --input "$4" --lake "$lake" \
    --format json --quiet >"$log.out" 2>"$log.err" ||
    { echo "error: $name's run of day $d failed:" >&2; tail -n 5 "$log.err" >&2; exit 1; }
  python3 - "$log" "$(cpu_seconds "$log.time")" "$work/daily-$ids-$feed-$1-$((d - 1)).json" <<'EOF'
import json, os, re, sys
log, cpu, previous = sys.argv[1], float(sys.argv[2]), sys.argv[3]
before = json.load(open(previous))["core"] if os.path.exists(previous) else 0
out = json.load(open(log + ".out"))
timings = open(log + ".err").read()
def statement(pattern):
    return sum(float(m.group(1)) for m in re.finditer(rf"^\s*[0-9.]+s wall\s+([0-9.]+)s cpu  {pattern}", timings, re.M))
row = {"run_cpu": cpu, "ingest_cpu": out["seconds"]["ingest_cpu"], "warehouse_cpu": out["seconds"]["warehouse_cpu"],
       "day_viewing_cpu": statement(r"CREATE TEMP TABLE day_viewing AS"),
       "closing_cpu": statement(r"\(closing the warehouse\)"),
       "core_before": before, "core": before + out["loads"]["viewership"]["rows_merged"]}
json.dump(row, open(log + ".json", "w"))
EOF
}

names=()
[ -z "${TVETL_BASELINE:-}" ] || names+=(baseline)
names+=(tvetl)
for ((d = 1; d <= days; d++)); do
  input=$(run_input "$d")
  for name in "${names[@]}"; do
    bin=$tvetl
    [ "$name" = tvetl ] || bin=$TVETL_BASELINE
    load "$name" "$bin" "$d" "$input"
  done
done

python3 - "$work/daily-$ids-$feed" "$days" "${names[@]}" <<'EOF'
import json, sys
prefix, days, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows = {n: [json.load(open(f"{prefix}-{n}-{d}.json")) for d in range(1, days + 1)] for n in names}
keys = ("run_cpu", "ingest_cpu", "warehouse_cpu", "day_viewing_cpu", "closing_cpu")
print(f"{'load':>4} {'core before':>11} | " + " | ".join(f"{n}: run, ingest, warehouse, day_viewing, closing (CPU s)" for n in names))
for d in range(days):
    print(f"{d + 1:>4} {rows[names[-1]][d]['core_before']:>11,} | "
          + " | ".join("  ".join(f"{rows[n][d][k]:6.2f}" for k in keys) for n in names))
span = min(5, days)
for n in names:
    first = {k: sum(r[k] for r in rows[n][:span]) / span for k in keys}
    last = {k: sum(r[k] for r in rows[n][-span:]) / span for k in keys}
    print(f"{n}: mean of the first {span} loads " + ", ".join(f"{k} {first[k]:.2f}" for k in keys))
    print(f"{' ' * len(n)}  mean of the last {span} loads  " + ", ".join(f"{k} {last[k]:.2f}" for k in keys))
EOF
