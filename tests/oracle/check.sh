#!/usr/bin/env bash
# Contract oracle check of the `tvetl` binary (no cargo: it uses the built binary).
#
#   tests/oracle/check.sh            # datasets + strict probes; ambiguous probes printed as INFO
#   TVETL=/path/to/tvetl WORK=/tmp/x PROBES=0 tests/oracle/check.sh
#   FUZZ=50 tests/oracle/check.sh    # plus 50 datasets of random size, span and dirt
#   FUZZ=50 FUZZ_SEED=123 ...        # the same 50 again (the seed is printed)
#
# For each generated dataset (make_dataset.py, written from the data contract):
#   oracle.py computes the expected answers from the raw files, compare.py selfcheck
#   cross-checks it against the generator's intent, then tvetl run / report outputs
#   are compared with the oracle (floats to 1e-6 relative).  Exit 1 on any mismatch.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
TVETL=${TVETL:-$HOME/.cache/tvetl-target/debug/tvetl}
if [ -z "${WORK:-}" ]; then   # a folder of our own, removed at exit unless it shows a failure
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/tvetl-oracle.XXXXXX")
    trap '[ "$fail" = 0 ] && rm -rf "$WORK"' EXIT
fi
PROBES=${PROBES:-1}
PY=python3
fail=0
checks_ok=0 checks_failed=0
# tally NAME STATUS: one check's outcome (0 = passed)
tally() { if [ "$2" = 0 ]; then checks_ok=$((checks_ok + 1)); else checks_failed=$((checks_failed + 1)); fail=1; fi; }
start=$(date +%s.%N)

[ -x "$TVETL" ] || { echo "no tvetl binary at $TVETL" >&2; exit 2; }
echo "tvetl: $TVETL (built $(stat -c %y "$TVETL" | cut -d. -f1), sha256 $(sha256sum < "$TVETL" | cut -c1-16))"
echo "work:  $WORK"

# seconds since $1 (a `date +%s.%N` stamp)
elapsed() { python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$1"; }

# query every day either side knows of; $1 = dir, $2 = lake
reports() {
    local d=$1 lake=$2
    "$TVETL" report --lake "$lake" user-average --format json > "$d/avg.json" 2> "$d/avg.err" ||
        echo "tvetl report user-average failed: $(tail -c 300 "$d/avg.err")"
    "$TVETL" export --lake "$lake" user-features --out "$d/features.csv" 2> "$d/features.err" ||
        echo "tvetl export user-features failed: $(tail -c 300 "$d/features.err")"
    for by in age_band gender region; do
        "$TVETL" report --lake "$lake" audience --by "$by" --format json > "$d/aud-$by.json" 2> "$d/aud.err" ||
            echo "tvetl report audience --by $by failed: $(tail -c 300 "$d/aud.err")"
    done
    local days
    days=$($PY - "$d" <<'EOF'
import json, sys
d = sys.argv[1]
s = set(json.load(open(d + "/oracle.json"))["top_channels"])
try:
    s |= {x["date"] for x in json.load(open(d + "/avg.json"))["days"]}
except Exception:
    pass
print(" ".join(sorted(s)))
EOF
)
    for day in $days; do
        "$TVETL" report --lake "$lake" top-channels --date "$day" --format json > "$d/top-$day.json" 2>> "$d/top.err"
        "$TVETL" report --lake "$lake" top-channels --date "$day" --limit 100000 --format json > "$d/topall-$day.json" 2>> "$d/top.err"
        "$TVETL" report --lake "$lake" top-genres --date "$day" --limit 100000 --format json > "$d/genres-$day.json" 2>> "$d/top.err"
    done
}

lake_digest() { (cd "$1" && find . -type f ! -path './_warehouse/*' -print0 | sort -z | xargs -0 sha256sum); }

run_tvetl() {  # $1 input, $2 lake, $3 out json
    if ! "$TVETL" run --input "$1" --lake "$2" --format json --quiet > "$3" 2> "$3.err"; then
        echo "MISMATCH tvetl run --input $1 exited non-zero: $(tail -c 400 "$3.err")"
        tally run 1
    fi
}

# name seed rows days start dirty redeliver
DATASETS="
small   1   300  2 2024-01-01 0.15 0.15
leapday 7  3000  4 2024-02-27 0.10 0.10
dense  42  2000  1 2023-12-31 0.20 0.30
wide   99  6000  7 2024-03-28 0.05 0.10
"
# FUZZ=N adds N datasets whose seed, size, span, start, dirt and re-delivery
# are drawn from FUZZ_SEED, so that a mismatch found once can be replayed.
FUZZ=${FUZZ:-0}
if [ "$FUZZ" -gt 0 ]; then
    FUZZ_SEED=${FUZZ_SEED:-$(date +%s)}
    echo "fuzz: $FUZZ datasets from FUZZ_SEED=$FUZZ_SEED"
    DATASETS+=$($PY - "$FUZZ" "$FUZZ_SEED" <<'PYEOF'
import datetime, random, sys
n, seed = int(sys.argv[1]), int(sys.argv[2])
r = random.Random(seed)
for i in range(n):
    start = datetime.date(2023, 1, 1) + datetime.timedelta(days=r.randrange(800))
    print(f"fuzz{i} {r.randrange(1, 10**6)} {r.randrange(50, 4000)} {r.randrange(1, 9)} {start} "
          f"{r.choice([0.0, 0.02, 0.1, 0.2, 0.35])} {r.choice([0.0, 0.05, 0.2, 0.4])}")
PYEOF
)
fi
while read -r name seed rows days startd dirty redel; do
    [ -n "$name" ] || continue
    t0=$(date +%s.%N)
    d=$WORK/$name
    rm -rf "$d"; mkdir -p "$d"
    $PY "$HERE/make_dataset.py" --out "$d/in" --seed "$seed" --rows "$rows" --days "$days" --start "$startd" \
        --dirty "$dirty" --redeliver "$redel" --truth "$d/truth.json"
    $PY "$HERE/oracle.py" --input "$d/in" --out "$d/oracle.json"
    $PY "$HERE/compare.py" selfcheck --truth "$d/truth.json" --oracle "$d/oracle.json" || {
        echo "ORACLE/GENERATOR DISAGREE on $name (fix the oracle before trusting the comparison)"; tally selfcheck 1; }
    run_tvetl "$d/in" "$d/lake" "$d/run-1.json"
    if [ "$name" = small ]; then   # running again over the same files changes nothing
        lake_digest "$d/lake" > "$d/lake-1.sha"
        run_tvetl "$d/in" "$d/lake" "$d/rerun.json"
        lake_digest "$d/lake" > "$d/lake-2.sha"
        if ! diff -q "$d/lake-1.sha" "$d/lake-2.sha" > /dev/null; then
            echo "MISMATCH $name: a second run over the same files changed lake objects:"
            diff "$d/lake-1.sha" "$d/lake-2.sha" | head -10
            tally rerun 1
        fi
    fi
    reports "$d" "$d/lake"
    status=0
    $PY "$HERE/compare.py" tvetl --oracle "$d/oracle.json" --dir "$d" || status=1
    tally "$name" "$status"
    printf '%-8s seed=%-3s rows=%-5s %5.1fs  %s\n' "$name" "$seed" "$rows" "$(elapsed "$t0")" \
        "$($PY -c "import json;r=json.load(open('$d/oracle.json'))['runs'][0];print('read=%d accepted=%d dups=%d q=%s' % (r['rows_read'],r['rows_accepted'],r['duplicates_removed'],r['quarantined']))")"
done <<< "$DATASETS"

# incremental: run A, then B (new keys, re-delivering A's event ids), then A again (changes nothing)
t0=$(date +%s.%N)
d=$WORK/incremental
rm -rf "$d"; mkdir -p "$d"
$PY "$HERE/make_dataset.py" --out "$d/A" --seed 5 --rows 800 --days 3 --dirty 0.1 --redeliver 0.1
$PY "$HERE/make_dataset.py" --out "$d/B.tmp" --seed 6 --rows 800 --days 3 --dirty 0.1 --redeliver 0.1
for src in viewership channels demographics; do mkdir -p "$d/B/$src"; mv "$d/B.tmp/$src" "$d/B/$src/run2"; done
rm -rf "$d/B.tmp"
$PY "$HERE/oracle.py" --input "$d/A" --input "$d/B" --input "$d/A" --out "$d/oracle.json"
run_tvetl "$d/A" "$d/lake" "$d/run-1.json"
run_tvetl "$d/B" "$d/lake" "$d/run-2.json"
run_tvetl "$d/A" "$d/lake" "$d/run-3.json"
reports "$d" "$d/lake"
status=0
$PY "$HERE/compare.py" tvetl --oracle "$d/oracle.json" --dir "$d" --runs 3 || status=1
tally incremental "$status"
printf '%-8s %5.1fs\n' incremental "$(elapsed "$t0")"

if [ "$PROBES" = 1 ]; then
    $PY "$HERE/probes.py" --work "$WORK/probes" || fail=1
    read -r probes_ok probes_failed < "$WORK/probes/counts"
    checks_ok=$((checks_ok + probes_ok)) checks_failed=$((checks_failed + probes_failed))
fi

# The line CI adds to its totals.
echo "oracle: $checks_ok passed, $checks_failed failed"
printf 'check.sh: %s in %.1fs\n' "$([ $fail = 0 ] && echo PASS || echo FAIL)" "$(elapsed "$start")"
exit $fail
