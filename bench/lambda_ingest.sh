#!/usr/bin/env bash
# Memory and CPU of the ingest-batch Lambda's handler over one object whose
# sessions span many days, against the local emulator (ministack), with its
# uploads' memory budget (UPLOAD_MEMORY_BYTES) at the default and lifted.
#
# usage: bench/lambda_ingest.sh [ROWS [DAYS]]     (default: 3000000 365)
#
# One file of ROWS sessions over DAYS days is generated into BENCH_DIR (as
# bench/many_days.sh does, and reused by later runs), put in a raw bucket,
# and ingested by the handler in process (the ingest_s3_object example of
# functions/common) into a fresh lake bucket: twice with the default budget
# and twice with it lifted (what every upload held before session 12),
# alternating. It prints each run's CPU seconds and peak RSS
# (/usr/bin/time -v), and checks that every run staged the same bytes.
#
# environment:
#   TVETL      tvetl binary that generates the input (default: cargo build -p tvetl)
#   BENCH_DIR  work folder (default: mktemp -d)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
source "$here/common.sh"
bench_rows_days lambda_ingest.sh "$@"
bench_setup

# Built for the triple the tests build the Lambda crates for, so that it
# reuses their artifacts instead of building the AWS side again for the host.
use_test_lambda_builds
echo "== cargo build -p tvetl-lambda --example ingest_s3_object --target $TVETL_LAMBDA_TARGET" >&2
(cd "$repo" && cargo build -p tvetl-lambda --example ingest_s3_object --target "$TVETL_LAMBDA_TARGET")
example="$CARGO_TARGET_DIR/$TVETL_LAMBDA_TARGET/debug/examples/ingest_s3_object"

"$repo/scripts/emulator.sh" start >/dev/null
trap '"$repo/scripts/emulator.sh" stop' EXIT
export AWS_ENDPOINT_URL="$("$repo/scripts/emulator.sh" endpoint)"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN
export GLUE_DATABASE=bench_lambda_ingest

bench_input "$work" "$rows" "$days" "$rows" 0
file=$(find "$in/viewership" -type f | head -n 1)
key="viewership/$(basename "$file")"
"$example" put bench-raw "$key" "$file"
echo "== $key: $(du -h "$file" | cut -f1), $rows sessions over $days days" >&2

# measured NAME BUDGET: one run of the handler into the fresh bucket
# bench-NAME, with UPLOAD_MEMORY_BYTES=BUDGET (empty: the default).
measured() {
  local name=$1 budget=$2
  local lake="bench-$name"
  LAKE_BUCKET=$lake UPLOAD_MEMORY_BYTES=$budget /usr/bin/time -v -o "$work/lambda-$name.time" \
    "$example" ingest bench-raw "$key" >"$work/lambda-$name.out" 2>"$work/lambda-$name.err" || {
      echo "error: the $name run failed; last lines of $work/lambda-$name.err:" >&2
      tail -n 20 "$work/lambda-$name.err" >&2; exit 1; }
  awk -v name="$name" '
    /User time/ { u = $NF } /System time/ { s = $NF } /Maximum resident/ { rss = $NF }
    END { printf "%-16s %.2f CPU s, peak RSS %d MB\n", name, u + s, rss / 1024 }' "$work/lambda-$name.time"
  "$example" digest "$lake" staging/ >"$work/lambda-$name.digest"
}

for round in 1 2; do
  measured "lifted-$round" 4611686018427387904
  measured "default-$round" ""
done
for name in lifted-2 default-1 default-2; do
  cmp -s "$work/lambda-lifted-1.digest" "$work/lambda-$name.digest" ||
    { echo "error: $name staged other bytes than lifted-1 (see $work/lambda-*.digest)" >&2; exit 1; }
done
echo "== every run staged the same $(wc -l <"$work/lambda-lifted-1.digest") files, byte for byte" >&2
