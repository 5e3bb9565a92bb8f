#!/usr/bin/env bash
# Benchmark: tvetl (run + both reports) against a DuckDB baseline doing the
# same job (bench/duckdb_baseline.py), on data made by `tvetl generate`.
#
# usage: bench/run.sh [ROWS ...]            (default: 1000000 5000000)
#
# environment:
#   TVETL           tvetl binary to use (default: cargo build -p tvetl, the dev
#                   profile, which optimises every crate at opt-level 2; see
#                   Cargo.toml for why the demo and bench do not use --release)
#   CARGO_TARGET_DIR  where that build goes (default: ~/.cache/tvetl-target, as scripts/env.sh sets)
#   BENCH_DIR       work folder for inputs, outputs and results (default: mktemp -d);
#                   a generated input is kept there and reused by the next run
#   DUCKDB_THREADS  threads for the DuckDB baseline (default: 2)
#
# For each ROWS it prints CPU seconds (user + sys), wall seconds, rows per
# CPU-second and peak RSS of each tool, the tvetl/duckdb ratio of rows per
# CPU-second, where tvetl's CPU went (ingest, the warehouse's copy-in, the
# load into core, analytics, the rest, the reports), and writes
# $BENCH_DIR/results-ROWS.json. For context it also runs the baseline with
# --warehouse (DuckDB persisting core and analytics tables as tvetl does), and
# tvetl run --threads 1 (the warehouse load on one DuckDB thread) and
# --memory-limit 4GB (a load that does not spill), and prints those ratios
# too; the target's ratio is tvetl's default against the plain baseline. It
# also prints a ceiling: the ratio tvetl would reach if its warehouse load
# cost no more than the baseline's own bulk write of the same tables, and the
# ingest speed the 2x target would then need. A difference in
# the tools' counts or top channels is reported as a warning, not a failure.
set -euo pipefail

DUCKDB_VERSION=2.0.1
BENCH_DATE=2024-01-03
UNBOUNDED_MEMORY=4GB

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
if [ "$#" -gt 0 ]; then rows_list=("$@"); else rows_list=(1000000 5000000); fi
for r in "${rows_list[@]}"; do
  [[ "$r" =~ ^[0-9]+$ ]] || { echo "usage: bench/run.sh [ROWS ...]  (ROWS: a positive integer, got '$r')" >&2; exit 2; }
done
source "$here/common.sh"
bench_work_dir
threads=${DUCKDB_THREADS:-2}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# -- GNU time ------------------------------------------------------------
if [ ! -x /usr/bin/time ]; then
  echo "== installing GNU time (apt-get install time)" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi

# -- Python venv with a pinned duckdb ----------------------------------------
venv="$here/.venv"
py="$venv/bin/python"
if [ ! -x "$py" ]; then
  echo "== creating $venv" >&2
  python3 -m venv "$venv"
fi
if ! "$py" -c "import duckdb, sys; sys.exit(duckdb.__version__ != '$DUCKDB_VERSION')" 2>/dev/null; then
  echo "== pip install duckdb==$DUCKDB_VERSION" >&2
  "$py" -m pip install --quiet --disable-pip-version-check "duckdb==$DUCKDB_VERSION"
fi

# -- tvetl -------------------------------------------------------------------
bench_tvetl "$repo"

echo "== work dir: $work" >&2
echo "== tvetl: $tvetl" >&2
echo "== duckdb $DUCKDB_VERSION, $threads threads; $(nproc) cores" >&2

# timed NAME CMD...: runs CMD under /usr/bin/time -v; stdout -> $work/NAME.out,
# stderr -> $work/NAME.err, the time report -> $work/NAME.time.
timed() {
  local name=$1; shift
  echo "   $name: $*" >&2
  if ! /usr/bin/time -v -o "$work/$name.time" "$@" >"$work/$name.out" 2>"$work/$name.err"; then
    echo "error: '$*' failed; last lines of its stderr ($work/$name.err):" >&2
    tail -n 20 "$work/$name.err" >&2
    exit 1
  fi
}

results=()
for rows in "${rows_list[@]}"; do
  bench_input "$work" "$rows"
  sync

  echo "== tvetl, $rows rows" >&2
  lake="$work/lake-$rows"
  rm -rf "$lake"
  # TVETL_SQL_TIMINGS: each warehouse statement's wall and CPU seconds on
  # stderr, for the breakdown below (printing them costs nothing measurable).
  TVETL_SQL_TIMINGS=1 timed "tvetl-run-$rows" "$tvetl" run --input "$in" --lake "$lake" --format json
  timed "tvetl-top-$rows" "$tvetl" report --lake "$lake" top-channels --date "$BENCH_DATE" --limit 10 --format json
  timed "tvetl-avg-$rows" "$tvetl" report --lake "$lake" user-average --format json
  # For context: the same run with the warehouse load on one DuckDB thread
  # (fewer CPU seconds, more wall time); its reports are the ones above.
  echo "== tvetl --threads 1, $rows rows" >&2
  rm -rf "$lake-t1"
  timed "tvetl-t1-run-$rows" "$tvetl" run --input "$in" --lake "$lake-t1" --format json --threads 1
  # For context: the same run with DuckDB free to use 4GB, so that the load
  # does not spill. It shows what the 512 MB memory target costs, and how far
  # the ratio stays from 2x even without it.
  echo "== tvetl --memory-limit $UNBOUNDED_MEMORY, $rows rows" >&2
  rm -rf "$lake-mem"
  timed "tvetl-mem-run-$rows" "$tvetl" run --input "$in" --lake "$lake-mem" --format json --memory-limit "$UNBOUNDED_MEMORY"

  echo "== duckdb baseline, $rows rows" >&2
  out2="$work/duckdb-$rows"
  rm -rf "$out2"
  timed "duckdb-$rows" "$py" "$here/duckdb_baseline.py" --input "$in" --out "$out2" \
    --date "$BENCH_DATE" --threads "$threads"
  # For context, not the target's ratio: DuckDB also keeping a warehouse
  # (core sessions and both daily tables in a database file), as tvetl does.
  echo "== duckdb baseline + warehouse, $rows rows" >&2
  rm -rf "$out2-wh"
  timed "duckdb-wh-$rows" "$py" "$here/duckdb_baseline.py" --input "$in" --out "$out2-wh" \
    --date "$BENCH_DATE" --threads "$threads" --warehouse "$out2-wh/warehouse.duckdb"

  "$py" - "$work" "$rows" "$DUCKDB_VERSION" "$threads" "$UNBOUNDED_MEMORY" <<'PY'
import json, os, sys

work, rows, duckdb_version, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
unbounded_memory = sys.argv[5]

def time_v(name, step):
    """user, sys, wall seconds and max RSS (MB) from a `/usr/bin/time -v` report,
    labelled with the step it timed."""
    out = {"step": step}
    for line in open(os.path.join(work, name + ".time")):
        key, _, val = line.strip().rpartition(": ")
        if key == "User time (seconds)":
            out["user_s"] = float(val)
        elif key == "System time (seconds)":
            out["sys_s"] = float(val)
        elif key.startswith("Elapsed (wall clock) time"):
            secs = 0.0
            for part in val.split(":"):
                secs = secs * 60 + float(part)
            out["wall_s"] = secs
        elif key == "Maximum resident set size (kbytes)":
            out["peak_rss_mb"] = int(val) / 1024
    return out

def stdout_json(name):
    text = open(os.path.join(work, name + ".out")).read().strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        # tolerate a progress line before the JSON object
        return json.loads(text[text.index("{"):])

def cpu_s(step):
    return step["user_s"] + step["sys_s"]

def summary(steps, rows_read):
    cpu = sum(cpu_s(s) for s in steps)
    return {
        "rows_read": rows_read,
        "cpu_s": round(cpu, 3),
        "user_s": round(sum(s["user_s"] for s in steps), 3),
        "sys_s": round(sum(s["sys_s"] for s in steps), 3),
        "wall_s": round(sum(s["wall_s"] for s in steps), 3),
        "rows_per_cpu_s": round(rows_read / cpu, 1) if cpu > 0 else None,
        "peak_rss_mb": round(max(s["peak_rss_mb"] for s in steps), 1),
        "steps": steps,
    }

run = stdout_json(f"tvetl-run-{rows}")
top = stdout_json(f"tvetl-top-{rows}")
avg = stdout_json(f"tvetl-avg-{rows}")
ddb = stdout_json(f"duckdb-{rows}")

run_step = time_v(f"tvetl-run-{rows}", "run")
report_steps = [time_v(f"tvetl-{step}-{rows}", step) for step in ("top", "avg")]
tsteps = [run_step] + report_steps
tv = summary(tsteps, int(run["rows_read"]))
dd = summary([time_v(f"duckdb-{rows}", "all")], int(ddb["rows_read"]))
tv1 = summary([time_v(f"tvetl-t1-run-{rows}", "run --threads 1")] + report_steps,
              int(stdout_json(f"tvetl-t1-run-{rows}")["rows_read"]))
tvm = summary([time_v(f"tvetl-mem-run-{rows}", f"run --memory-limit {unbounded_memory}")] + report_steps,
              int(stdout_json(f"tvetl-mem-run-{rows}")["rows_read"]))
ddb_wh = stdout_json(f"duckdb-wh-{rows}")
dwh = summary([time_v(f"duckdb-wh-{rows}", "all")], int(ddb_wh["rows_read"]))

# Where tvetl's CPU went: the run's own phase accounting, its warehouse
# statements (TVETL_SQL_TIMINGS lines: "<wall>s wall <cpu>s cpu  <statement>"),
# and the two report processes.
def statement_cpu():
    out = []
    for line in open(os.path.join(work, f"tvetl-run-{rows}.err")):
        parts = line.split()
        if len(parts) >= 5 and parts[1] == "wall" and parts[3] == "cpu":
            out.append((float(parts[2].rstrip("s")), " ".join(parts[4:])))
    return out
stmts = statement_cpu()
def cpu_of(pred):
    return round(sum(c for c, text in stmts if pred(text)), 3)
phases = run.get("seconds", {})
breakdown = {
    "ingest": round(phases.get("ingest_cpu", 0.0), 3),
    "warehouse_copy_in": cpu_of(lambda t: t.startswith("INSERT INTO staging_viewing_sessions")),
    # The delete of the versions being replaced, and the MERGE.
    "warehouse_core_load": cpu_of(lambda t: t.startswith(("DELETE FROM core.viewing_sessions",
                                                         "MERGE INTO core.viewing_sessions"))),
    "warehouse_analytics": cpu_of(lambda t: "day_viewing" in t or t.startswith("INSERT INTO analytics.")),
    "warehouse_all": round(phases.get("warehouse_cpu", 0.0), 3),
    "reports": round(sum(cpu_s(s) for s in report_steps), 3),
}
breakdown["warehouse_other"] = round(breakdown["warehouse_all"] - breakdown["warehouse_copy_in"]
                                     - breakdown["warehouse_core_load"] - breakdown["warehouse_analytics"], 3)
breakdown["process_other"] = round(cpu_s(run_step) - breakdown["ingest"] - breakdown["warehouse_all"], 3)
tv["cpu_breakdown_s"] = breakdown
tv["report"] = {"run": run, "top_channels": top, "user_average": avg}
dd["report"] = ddb
dwh["report"] = ddb_wh

warnings, notes = [], []
def check(what, a, b, sink):
    if a != b:
        sink.append(f"{what} differ at {rows} rows: tvetl {json.dumps(a)} vs duckdb {json.dumps(b)}")

check("rows_read", run.get("rows_read"), ddb.get("rows_read"), warnings)
check("duplicates_removed", run.get("duplicates_removed"), ddb.get("duplicates_removed"), warnings)
t_ids = [c.get("channel_id") for c in top.get("channels", [])]
d_ids = [c.get("channel_id") for c in ddb.get("top_channels", [])]
check(f"top-channel ids on {ddb.get('date')}", t_ids, d_ids, warnings)
# further differences, for information
check("rows_accepted", run.get("rows_accepted"), ddb.get("rows_accepted"), notes)
check("quarantined", run.get("quarantined"), ddb.get("quarantined"), notes)
if t_ids == d_ids:
    tw = [round(float(c.get("watch_seconds", 0)), 3) for c in top.get("channels", [])]
    dw = [round(float(c.get("watch_seconds", 0)), 3) for c in ddb.get("top_channels", [])]
    check("top-channel watch_seconds", tw, dw, notes)
    check("top-channel reach", [c.get("reach") for c in top.get("channels", [])],
          [c.get("reach") for c in ddb.get("top_channels", [])], notes)
ta = [(d.get("date"), d.get("active_users"), round(float(d.get("avg_watch_seconds_per_user", 0)), 3)) for d in avg.get("days", [])]
da = [(d.get("date"), d.get("active_users"), round(float(d.get("avg_watch_seconds_per_user", 0)), 3)) for d in ddb.get("days", [])]
check("user-average days", ta, da, notes)

def ratio_of(a, b):
    """a's rows per CPU-second over b's (None if either is unknown)."""
    if a["rows_per_cpu_s"] and b["rows_per_cpu_s"]:
        return round(a["rows_per_cpu_s"] / b["rows_per_cpu_s"], 3)
    return None
ratio, ratio_t1, ratio_wh = ratio_of(tv, dd), ratio_of(tv1, dd), ratio_of(tv, dwh)
ratio_mem = ratio_of(tvm, dd)

# How far the target is from reach: tvetl's own work (ingest, reports, the
# rest of its process) as measured, with a warehouse that cost no more than
# DuckDB's own bulk write of the same tables (the baseline's --warehouse
# step: CREATE TABLE AS, no MERGE, ledger or dedup). That is a ceiling, not a
# measurement of a build. It also gives the ingest speed the 2x target would
# need on top of such a warehouse. The bulk write's CPU is measured around
# that step inside the baseline's process (a difference of the two baseline
# runs' totals would carry both runs' noise).
warehouse_floor = ddb_wh["cpu_s"]["warehouse"]
besides_ingest = breakdown["reports"] + max(breakdown["process_other"], 0.0)
with_floor = breakdown["ingest"] + besides_ingest + warehouse_floor
ingest_budget = dd["cpu_s"] / 2 - warehouse_floor - besides_ingest
ceiling = {
    "duckdb_warehouse_write_cpu_s": round(warehouse_floor, 3),
    "tvetl_cpu_s_with_that_warehouse": round(with_floor, 3),
    "ratio": ratio_of({"rows_per_cpu_s": tv["rows_read"] / with_floor}, dd) if with_floor > 0 else None,
    "ingest_cpu_s_needed_for_2x": round(ingest_budget, 3),
    "ingest_rows_per_cpu_s_needed_for_2x": round(tv["rows_read"] / ingest_budget) if ingest_budget > 0 else None,
    "ingest_rows_per_cpu_s_now": round(tv["rows_read"] / breakdown["ingest"]) if breakdown["ingest"] > 0 else None,
}
result = {
    "rows": rows,
    "date": ddb.get("date"),
    "cores": os.cpu_count(),
    "duckdb_version": duckdb_version,
    "duckdb_threads": threads,
    "tvetl": tv,
    "duckdb": dd,
    "ratio_rows_per_cpu_s_tvetl_over_duckdb": ratio,
    "tvetl_threads_1": tv1,
    "ratio_rows_per_cpu_s_tvetl_threads_1_over_duckdb": ratio_t1,
    "unbounded_memory_limit": unbounded_memory,
    "tvetl_unbounded_memory": tvm,
    "ratio_rows_per_cpu_s_tvetl_unbounded_memory_over_duckdb": ratio_mem,
    "duckdb_with_warehouse": dwh,
    "ratio_rows_per_cpu_s_tvetl_over_duckdb_with_warehouse": ratio_wh,
    "ceiling_with_duckdb_bulk_write_warehouse": ceiling,
    "warnings": warnings,
    "notes": notes,
}
path = os.path.join(work, f"results-{rows}.json")
with open(path, "w") as fh:
    json.dump(result, fh, indent=2)
for w in warnings:
    print("WARNING: " + w, file=sys.stderr)
for n in notes:
    print("note: " + n, file=sys.stderr)
print(f"== wrote {path}", file=sys.stderr)
PY
  results+=("$work/results-$rows.json")
done

# -- table -------------------------------------------------------------------
"$py" - "$work" "${results[@]}" <<'PY'
import json, os, sys

work, paths = sys.argv[1], sys.argv[2:]
res = [json.load(open(p)) for p in paths]
head = ("ROWS", "tool", "rows_read", "CPU s", "wall s", "rows per CPU-second", "peak RSS MB")
lines = []
for r in res:
    for tool, label in (("tvetl", "tvetl"), ("tvetl_threads_1", "tvetl --threads 1"),
                        ("tvetl_unbounded_memory", f"tvetl --memory-limit {r['unbounded_memory_limit']}"), ("duckdb", "duckdb"),
                       ("duckdb_with_warehouse", "duckdb+warehouse")):
        t = r[tool]
        lines.append((str(r["rows"]), label, str(t["rows_read"]), f"{t['cpu_s']:.2f}", f"{t['wall_s']:.2f}",
                      f"{t['rows_per_cpu_s']:,.0f}" if t["rows_per_cpu_s"] else "-", f"{t['peak_rss_mb']:.0f}"))
w = [max(len(x[i]) for x in [head] + lines) for i in range(len(head))]
fmt = lambda row: " | ".join(c.ljust(w[i]) if i < 2 else c.rjust(w[i]) for i, c in enumerate(row))
print()
print(fmt(head))
print("-+-".join("-" * n for n in w))
for l in lines:
    print(fmt(l))
print()
for r in res:
    ratio = r["ratio_rows_per_cpu_s_tvetl_over_duckdb"]
    print(f"ROWS {r['rows']}: tvetl/duckdb rows per CPU-second = {ratio if ratio is not None else '-'}"
          f"  (tvetl --threads 1: {r['ratio_rows_per_cpu_s_tvetl_threads_1_over_duckdb']};"
          f" --memory-limit {r['unbounded_memory_limit']}: {r['ratio_rows_per_cpu_s_tvetl_unbounded_memory_over_duckdb']};"
          f" against duckdb+warehouse: {r['ratio_rows_per_cpu_s_tvetl_over_duckdb_with_warehouse']})")
    c = r["ceiling_with_duckdb_bulk_write_warehouse"]
    need = c["ingest_rows_per_cpu_s_needed_for_2x"]
    print(f"   ceiling: with a warehouse costing only DuckDB's bulk write ({c['duckdb_warehouse_write_cpu_s']:.2f} CPU s),"
          f" tvetl would be at {c['ratio']}; 2x would also need ingest at "
          + (f"{need:,} rows per CPU-second (now {c['ingest_rows_per_cpu_s_now']:,})" if need
             else "to take no CPU at all, and still would not reach it"))
    b = r["tvetl"]["cpu_breakdown_s"]
    print("   tvetl CPU seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in b.items()))
    for warn in r["warnings"]:
        print(f"WARNING: {warn}")
combined = os.path.join(work, "results.json")
with open(combined, "w") as fh:
    json.dump(res, fh, indent=2)
print(f"\nresults: {', '.join(paths)} (all: {combined})")
PY
