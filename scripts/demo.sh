#!/usr/bin/env bash
# The demo: generate dirty raw data, run the pipeline, print the reports and
# draw their charts. Output goes to ./demo (or $DEMO_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

rows="${ROWS:-200000}"
out="${DEMO_DIR:-demo}"
cargo build -p tvetl
tvetl="$CARGO_TARGET_DIR/debug/tvetl"

# A lake keeps what it loaded, as a warehouse should, so a lake loaded from
# another ROWS would mix both datasets into the reports: the demo starts a
# fresh lake when the data it generates is not the data the lake was loaded
# from. With the same data it keeps the lake, and the run shows that loading
# the same files again changes nothing.
params="rows=$rows days=7 start=2024-01-01 seed=42 dirty=0.02"
if [ -e "$out/lake" ] && [ "$(cat "$out/.demo-params" 2>/dev/null)" != "$params" ]; then
  echo "== $out/lake was loaded from other generated data: starting a fresh lake"
  rm -rf "$out/lake"
fi
"$tvetl" generate --out "$out/raw" --rows "$rows" --days 7 --start 2024-01-01 --seed 42 --dirty 0.02
echo "$params" >"$out/.demo-params"
"$tvetl" run --input "$out/raw" --lake "$out/lake"
echo
"$tvetl" report --lake "$out/lake" top-channels --date 2024-01-01 --limit 10 --chart "$out/top-channels-2024-01-01.png"
echo
"$tvetl" report --lake "$out/lake" top-genres --date 2024-01-01 --chart "$out/top-genres-2024-01-01.png"
echo
"$tvetl" report --lake "$out/lake" user-average --from 2024-01-01 --to 2024-01-07 --chart "$out/user-average.png"
echo
"$tvetl" report --lake "$out/lake" audience --by age_band --from 2024-01-01 --to 2024-01-07 --chart "$out/audience-age-band.png"
echo
echo "charts: $out/top-channels-2024-01-01.png $out/top-genres-2024-01-01.png $out/user-average.png $out/audience-age-band.png"
echo "lake:   $out/lake/staging (Parquet), $out/lake/quarantine (rejected rows), $out/lake/_catalog/catalog.json"
echo "rejected rows, per file and reason: $tvetl report --lake $out/lake quarantine"
echo "your own queries on the warehouse:  $tvetl sql --lake $out/lake \"SELECT * FROM core.load_audit\""
