#!/usr/bin/env python3
"""Comparisons used by check.sh (stdlib only).

  compare.py selfcheck --truth T --oracle O
      generator intent vs oracle re-parse (catches oracle/generator bugs)
  compare.py tvetl --oracle O --dir OUT [--runs N]
      oracle vs tvetl's outputs saved by check.sh in OUT:
        run-<i>.json, avg.json, top-<date>.json (default limit), topall-<date>.json (--limit 100000)
      and tvetl's per-record quarantine files under OUT/lake/quarantine/viewership/.
Prints one line per mismatch; exit status 1 if any.
"""
import argparse
import csv
import glob
import json
import os
import sys

CODES = ["MALFORMED", "MISSING_FIELD", "BAD_TIMESTAMP", "BAD_DURATION", "TOO_LONG"]
problems = []


def bad(label, msg):
    problems.append("%s: %s" % (label, msg))


def load_json(d, name, lab):
    """The JSON tvetl wrote to d/name, or None (and a mismatch) when it is not there."""
    try:
        with open(os.path.join(d, name), encoding="utf-8") as fh:
            return json.load(fh)
    except Exception as e:
        bad(lab, "unreadable: %s" % e)
        return None


def close(a, b, rel=1e-12):
    """Equal but for floating-point rounding. Watch times are whole
    microseconds, summed as integers on both sides and divided once, so the
    two agree to the last digit or nearly: a microsecond off on a channel's
    day (at most 8.64e10 us) is a relative 1.2e-11, which this catches."""
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return False
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-9)


def selfcheck(a):
    t = json.load(open(a.truth))
    o = json.load(open(a.oracle))
    lab = "selfcheck " + os.path.basename(os.path.dirname(a.oracle))
    orec = {(r["key"], r["record_no"]): r for r in o["records"]}
    trec = {(r["key"], r["record_no"]): r for r in t["records"]}
    for k in sorted(set(orec) | set(trec)):
        x, y = trec.get(k), orec.get(k)
        if x is None or y is None:
            bad(lab, "record %s only in %s" % (k, "oracle" if x is None else "generator"))
            continue
        if x["code"] != y["code"]:
            bad(lab, "record %s: generator meant %s (%s), oracle says %s (%s)"
                % (k, x["code"], x["variant"], y["code"], y["why"]))
        elif x["session"] != y["session"]:
            bad(lab, "record %s: session generator %s oracle %s" % (k, x["session"], y["session"]))
    failed = sorted(k for k, s in o["runs"][0]["files"].items() if s == "failed")
    if failed != t["failed_files"]:
        bad(lab, "failed files generator %s oracle %s" % (t["failed_files"], failed))
    for cid, nm in t["channel_names"].items():
        if o["channel_names"].get(cid) != nm:
            bad(lab, "channel %r name generator %r oracle %r" % (cid, nm, o["channel_names"].get(cid)))


def cmp_top(lab, want, got):
    if not isinstance(got, dict) or "channels" not in got:
        bad(lab, "unexpected output %r" % (got,))
        return
    gl = got["channels"]
    if len(gl) != len(want):
        bad(lab, "%d channels, oracle %d" % (len(gl), len(want)))
    for i in range(max(len(gl), len(want))):
        w = want[i] if i < len(want) else None
        g = gl[i] if i < len(gl) else None
        if w is None or g is None:
            bad(lab, "rank %d: tvetl %s oracle %s" % (i + 1, g, w))
            continue
        diffs = []
        for f in ["rank", "channel_id", "channel_name", "reach"]:
            if g.get(f) != w[f]:
                diffs.append("%s tvetl=%r oracle=%r" % (f, g.get(f), w[f]))
        if not close(g.get("watch_seconds"), w["watch_seconds"]):
            diffs.append("watch_seconds tvetl=%r oracle=%r" % (g.get("watch_seconds"), w["watch_seconds"]))
        if diffs:
            bad(lab, "rank %d (%r): %s" % (i + 1, w["channel_id"], "; ".join(diffs)))


def tvetl(a):
    o = json.load(open(a.oracle))
    lab0 = os.path.basename(a.dir.rstrip("/"))
    for i in range(a.runs):
        lab = "%s run-%d" % (lab0, i + 1)
        try:
            got = json.load(open(os.path.join(a.dir, "run-%d.json" % (i + 1))))
        except Exception as e:
            bad(lab, "tvetl run output unreadable: %s" % e)
            continue
        want = o["runs"][i]
        for f in ["rows_read", "rows_accepted", "duplicates_removed"]:
            if got.get(f) != want[f]:
                bad(lab, "%s tvetl=%r oracle=%r" % (f, got.get(f), want[f]))
        q = got.get("quarantined", {})
        for c in CODES:
            if q.get(c) != want["quarantined"][c]:
                bad(lab, "quarantined.%s tvetl=%r oracle=%r" % (c, q.get(c), want["quarantined"][c]))
        if set(q) != set(CODES):
            bad(lab, "quarantined keys %s" % sorted(q))
        try:
            if got["rows_read"] != got["rows_accepted"] + sum(q.values()):
                bad(lab, "tvetl inconsistent: rows_read != rows_accepted + quarantined")
        except Exception:
            pass
        gfiles = {f["key"]: f for f in got.get("files", [])}
        for k in sorted(set(gfiles) | set(want["files"])):
            g, w = gfiles.get(k), want["files"].get(k)
            if g is None or w is None:
                bad(lab, "file %s: tvetl %s oracle %s" % (k, g and g.get("status"), w))
            elif g.get("status") != w:
                bad(lab, "file %s: tvetl status %r (%s) oracle %r (%s)"
                    % (k, g.get("status"), g.get("error"), w, want["file_errors"].get(k)))
            elif w == "failed" and not g.get("error"):
                bad(lab, "file %s failed without an error message" % k)
    # per-record fates (diagnostics for the counts above): final run only
    if a.runs == 1:
        q = {}
        for p in glob.glob(os.path.join(a.dir, "lake/quarantine/viewership/*/*.jsonl")):
            for line in open(p, encoding="utf-8", errors="replace"):
                r = json.loads(line)
                if "record_no" in r and r.get("reason") in CODES:
                    q[(r["source_key"], r["record_no"])] = r
        orec = {(r["key"], r["record_no"]): r for r in o["records"]}
        n = 0
        for k in sorted(set(q) | {k for k, r in orec.items() if r["code"]}):
            w = orec.get(k)
            g = q.get(k)
            wc = w["code"] if w else "<no such record>"
            gc = g["reason"] if g else "accepted"
            if (wc or "accepted") != gc:
                n += 1
                if n <= 25:
                    bad(lab0 + " record", "%s #%d: tvetl %s%s, oracle %s (%s)%s"
                        % (k[0], k[1], gc, " [%s: %s]" % (g.get("field"), g.get("message")) if g else "",
                           wc or "accepted", w and w["why"],
                           " original=%r" % g["original"][:160] if g else ""))
        if n > 25:
            bad(lab0 + " record", "... %d record-level differences in all" % n)
    # reports
    try:
        avg = json.load(open(os.path.join(a.dir, "avg.json")))
    except Exception as e:
        bad(lab0 + " user-average", "unreadable: %s" % e)
        avg = {"days": []}
    gd = {d["date"]: d for d in avg.get("days", [])}
    wd = {d["date"]: d for d in o["user_average"]["days"]}
    for ds in sorted(set(gd) | set(wd)):
        g, w = gd.get(ds), wd.get(ds)
        if g is None or w is None:
            bad(lab0 + " user-average", "day %s: tvetl %s oracle %s" % (ds, g, w))
            continue
        if g.get("active_users") != w["active_users"]:
            bad(lab0 + " user-average", "%s active_users tvetl=%r oracle=%r" % (ds, g.get("active_users"), w["active_users"]))
        if not close(g.get("avg_watch_seconds_per_user"), w["avg_watch_seconds_per_user"]):
            bad(lab0 + " user-average", "%s avg tvetl=%r oracle=%r" % (ds, g.get("avg_watch_seconds_per_user"),
                                                                       w["avg_watch_seconds_per_user"]))
    if [d["date"] for d in avg.get("days", [])] != sorted(gd):
        bad(lab0 + " user-average", "days not in date order")
    for by, want in sorted(o["audience"].items()):
        lab = lab0 + " audience --by " + by
        got = load_json(a.dir, "aud-%s.json" % by, lab)
        if got is None:
            continue
        if got.get("by") != by:
            bad(lab, "by field %r" % got.get("by"))
        gdays = [d.get("date") for d in got.get("days", [])]
        wdays = [d["date"] for d in want["days"]]
        if gdays != wdays:
            bad(lab, "days tvetl=%s oracle=%s" % (gdays, wdays))
            continue
        for g, w in zip(got["days"], want["days"]):
            gs = [s.get("segment") for s in g.get("segments", [])]
            ws = [s["segment"] for s in w["segments"]]
            if gs != ws:
                bad(lab, "%s segments tvetl=%s oracle=%s" % (w["date"], gs, ws))
                continue
            for gseg, wseg in zip(g["segments"], w["segments"]):
                where = "%s %s" % (w["date"], wseg["segment"])
                if gseg.get("active_users") != wseg["active_users"]:
                    bad(lab, "%s active_users tvetl=%r oracle=%r" % (where, gseg.get("active_users"), wseg["active_users"]))
                for f in ["watch_seconds", "avg_watch_seconds_per_user"]:
                    if not close(gseg.get(f), wseg[f]):
                        bad(lab, "%s %s tvetl=%r oracle=%r" % (where, f, gseg.get(f), wseg[f]))
    lab = lab0 + " export user-features"
    try:
        with open(os.path.join(a.dir, "features.csv"), newline="", encoding="utf-8") as fh:
            rows = {r["user_id"]: r for r in csv.DictReader(fh)}
    except Exception as e:
        bad(lab, "unreadable: %s" % e)
        rows = {}
    want_features = o["user_features"]
    if set(rows) != set(want_features):
        bad(lab, "users tvetl-only %s, oracle-only %s" % (sorted(set(rows) - set(want_features))[:5],
                                                        sorted(set(want_features) - set(rows))[:5]))
    n = 0
    for user in sorted(set(rows) & set(want_features)):
        g, w = rows[user], want_features[user]
        for f, v in w.items():
            got = g.get(f)
            if isinstance(v, float):
                ok = close(float(got), v) if got not in (None, "") else False
            elif isinstance(v, int):
                ok = got == str(v)
            else:
                ok = got == ("" if v is None else v)
            if not ok:
                n += 1
                if n <= 10:
                    bad(lab, "%s %s tvetl=%r oracle=%r" % (user, f, got, v))
    if n > 10:
        bad(lab, "... %d differences in all" % n)
    for ds in sorted(set(gd) | set(wd)):
        lab = "%s top-genres %s" % (lab0, ds)
        want = o["top_genres"].get(ds, [])
        got = load_json(a.dir, "genres-%s.json" % ds, lab)
        if got is None:
            continue
        if got.get("date") != ds:
            bad(lab, "date field %r" % got.get("date"))
        gl = got.get("genres", [])
        if [g.get("genre") for g in gl] != [w["genre"] for w in want]:
            bad(lab, "genres tvetl=%s oracle=%s" % ([g.get("genre") for g in gl], [w["genre"] for w in want]))
            continue
        for g, w in zip(gl, want):
            for f in ["rank", "reach", "channels"]:
                if g.get(f) != w[f]:
                    bad(lab, "%s %s tvetl=%r oracle=%r" % (w["genre"], f, g.get(f), w[f]))
            if not close(g.get("watch_seconds"), w["watch_seconds"]):
                bad(lab, "%s watch_seconds tvetl=%r oracle=%r" % (w["genre"], g.get("watch_seconds"), w["watch_seconds"]))
    for ds in sorted(set(gd) | set(wd)):
        want = o["top_channels"].get(ds, [])
        for kind, wl in [("top", want[:10]), ("topall", want)]:
            p = os.path.join(a.dir, "%s-%s.json" % (kind, ds))
            try:
                got = json.load(open(p))
            except Exception as e:
                bad(lab0, "%s %s unreadable: %s" % (kind, ds, e))
                continue
            if got.get("date") != ds:
                bad(lab0, "%s %s: date field %r" % (kind, ds, got.get("date")))
            cmp_top("%s %s %s" % (lab0, "top-channels" if kind == "top" else "top-channels --limit 100000", ds), wl, got)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("selfcheck")
    s.add_argument("--truth", required=True)
    s.add_argument("--oracle", required=True)
    t = sub.add_parser("tvetl")
    t.add_argument("--oracle", required=True)
    t.add_argument("--dir", required=True)
    t.add_argument("--runs", type=int, default=1)
    a = ap.parse_args()
    selfcheck(a) if a.cmd == "selfcheck" else tvetl(a)
    for p in problems:
        print("MISMATCH " + p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
