#!/usr/bin/env python3
"""Expected answers of `tvetl run` / `tvetl report`, computed straight from the
raw files per /work/shared/spec/data-contract.md.  Pure standard library.

    oracle.py --input DIR [--input DIR2 ...] [--out FILE]

Each --input is one successive `tvetl run` over that folder.  The JSON written
holds, per run, the counts `tvetl run --format json` must print, and for the
final state the per-day top channels and user averages, and every record's fate.

Where the contract is silent the oracle follows the narrowest literal reading
and the generator (make_dataset.py) avoids the case; see probes.py.
"""
import argparse
import csv
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import re
import sys
import zlib

US = 1_000_000
DAY_US = 86_400 * US
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
CODES = ["MALFORMED", "MISSING_FIELD", "BAD_TIMESTAMP", "BAD_DURATION", "TOO_LONG"]
SESSION_FIELDS = ["event_id", "user_id", "device_id", "channel_id", "program_id",
                  "start_time", "end_time", "duration_seconds", "platform"]
SOURCES = ["viewership", "channels", "demographics"]
DEMOGRAPHICS = ["age_band", "gender", "region"]

csv.field_size_limit(1 << 30)

D = "[0-9]"
RFC3339 = re.compile(r"^(%s{4})-(%s{2})-(%s{2})[Tt](%s{2}):(%s{2}):(%s{2})(?:\.(%s+))?(?:([Zz])|([+-])(%s{2}):(%s{2}))$"
                     % ((D,) * 9))
SPACE = re.compile(r"^(%s{4})-(%s{2})-(%s{2}) (%s{2}):(%s{2}):(%s{2})(?:\.(%s{1,6}))?$" % ((D,) * 7))
EPOCH_MS = re.compile(r"^-?[0-9]+$")
POS_INT = re.compile(r"^[0-9]+$")


class Reject(Exception):
    def __init__(self, code, why):
        super().__init__(why)
        self.code = code


class FileFailed(Exception):
    pass


def parse_ts(v):
    """-> UTC microseconds, or raise Reject(BAD_TIMESTAMP)."""
    if isinstance(v, bool) or isinstance(v, float):
        raise Reject("BAD_TIMESTAMP", "non-integer number %r" % (v,))
    if isinstance(v, int):
        v = str(v)
    if not isinstance(v, str):
        raise Reject("BAD_TIMESTAMP", "type %s" % type(v).__name__)
    try:
        m = RFC3339.match(v)
        if m:
            y, mo, d, h, mi, s, frac, z, sign, oh, om = m.groups()
            off = 0
            if not z:
                oh, om = int(oh), int(om)
                if oh > 23 or om > 59:
                    raise ValueError("offset")
                off = (oh * 60 + om) * (-1 if sign == "-" else 1)
            base = dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=dt.timezone.utc)
            us = (base - EPOCH) // dt.timedelta(microseconds=1)
            if frac:
                us += int((frac + "000000")[:6])    # >6 digits: truncated (not generated)
            return us - off * 60 * US
        m = SPACE.match(v)
        if m:
            y, mo, d, h, mi, s, frac = m.groups()
            base = dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=dt.timezone.utc)
            us = (base - EPOCH) // dt.timedelta(microseconds=1)
            if frac:
                us += int((frac + "000000")[:6])
            return us
        if EPOCH_MS.match(v):
            ms = int(v)
            EPOCH + dt.timedelta(milliseconds=ms)      # range check (OverflowError)
            return ms * 1000
    except (ValueError, OverflowError) as e:
        raise Reject("BAD_TIMESTAMP", "%r: %s" % (v, e))
    raise Reject("BAD_TIMESTAMP", "%r" % (v,))


def parse_duration(v):
    if isinstance(v, bool):
        raise Reject("BAD_DURATION", "bool")
    if isinstance(v, int):
        n = v
    elif isinstance(v, str) and POS_INT.match(v):
        n = int(v)
    else:
        raise Reject("BAD_DURATION", "duration_seconds %r not an integer" % (v,))
    if n <= 0:
        raise Reject("BAD_DURATION", "duration_seconds %r not positive" % (v,))
    return n


PLATFORMS = ["stb", "smart_tv", "mobile", "web"]


def platform_of(v):
    """The stored platform: None when absent or blank, else one of PLATFORMS or 'other'."""
    if not present(v):
        return None
    t = as_text(v).strip()
    if t == "":
        return None
    return t.lower() if t.lower() in PLATFORMS else "other"


def present(v):
    return v is not None and v != ""


def as_text(v):
    if isinstance(v, str):
        return v
    if isinstance(v, bool) or v is None:
        return v
    return json.dumps(v)        # numbers as ids: not generated


def validate_session(f):
    """f: field -> value (str/int/float/None). -> (event_id, user_id, channel_id, start_us, end_us)."""
    for k in ["event_id", "user_id", "channel_id", "start_time"]:
        if not present(f.get(k)):
            raise Reject("MISSING_FIELD", k)
    has_end, has_dur = present(f.get("end_time")), present(f.get("duration_seconds"))
    if not has_end and not has_dur:
        raise Reject("MISSING_FIELD", "end_time/duration_seconds")
    start = parse_ts(f["start_time"])
    if has_end:
        end = parse_ts(f["end_time"])
        if end <= start:
            raise Reject("BAD_DURATION", "end not after start")
    else:
        end = start + parse_duration(f["duration_seconds"]) * US
    if end - start > DAY_US:
        raise Reject("TOO_LONG", "%d us" % (end - start))
    return (as_text(f["event_id"]), as_text(f["user_id"]), as_text(f["channel_id"]), start, end)


# --------------------------------------------------------------------- decoding
def object_bytes(path, key):
    with open(path, "rb") as fh:
        data = fh.read()
    if key.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise FileFailed("gzip: %s" % e)
        key = key[:-3]
    if key.endswith(".csv"):
        return "csv", data
    if key.endswith(".jsonl") or key.endswith(".ndjson"):
        return "jsonl", data
    if key.endswith(".json"):
        return "json", data
    raise FileFailed("unknown extension")


def has_bad_utf8(s):
    return any("\udc80" <= ch <= "\udcff" for ch in s)


def decode_csv(data):
    """-> list of (record_no, fields or None for MALFORMED, why)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    text = data.decode("utf-8", "surrogateescape")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        return []
    header = [h.strip().lower() for h in rows[0]]     # names are never padded in generated data
    out = []
    for i, row in enumerate(rows[1:], 1):
        if row == []:
            raise FileFailed("blank line in CSV (not generated)")
        if len(row) != len(header):
            out.append((i, None, "%d cells, header has %d" % (len(row), len(header))))
            continue
        if any(has_bad_utf8(c) for c in row):
            out.append((i, None, "bad UTF-8"))
            continue
        out.append((i, {h: (c if c != "" else None) for h, c in zip(header, row)}, None))
    return out


def _no_constants(name):
    raise ValueError("non-JSON constant %s" % name)


def decode_jsonl(data):
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for i, line in enumerate(lines, 1):
        if line.strip() == b"":
            raise FileFailed("blank JSON line (not generated)")
        try:
            obj = json.loads(line.decode("utf-8"), parse_constant=_no_constants)
        except (UnicodeDecodeError, ValueError) as e:
            out.append((i, None, "bad JSON/UTF-8: %s" % e))
            continue
        if not isinstance(obj, dict):
            out.append((i, None, "not an object"))
            continue
        out.append((i, obj, None))
    return out


def decode_json_array(data):
    try:
        arr = json.loads(data.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError) as e:
        raise FileFailed("JSON array: %s" % e)
    if not isinstance(arr, list):
        raise FileFailed("not a JSON array")
    return [(i, o if isinstance(o, dict) else None, None if isinstance(o, dict) else "not an object")
            for i, o in enumerate(arr, 1)]


def decode(path, key):
    fmt, data = object_bytes(path, key)
    if fmt == "csv":
        return decode_csv(data)
    if fmt == "jsonl":
        return decode_jsonl(data)
    return decode_json_array(data)


def list_objects(root):
    keys = []
    for src in SOURCES:
        base = os.path.join(root, src)
        for dp, _dn, fn in os.walk(base):
            for n in fn:
                p = os.path.join(dp, n)
                keys.append((os.path.relpath(p, root).replace(os.sep, "/"), p))
    return sorted(keys, key=lambda kp: kp[0].encode("utf-8"))


# ------------------------------------------------------------------------- runs
def run_oracle(inputs):
    seen_objects = set()           # (key, sha256): an object already ingested changes nothing
    deliveries = []                # (run, key bytes, record_no, session)
    channel_rows = []              # (run, key bytes, record_no, id, name, genre or None)
    user_rows = []                 # (run, key bytes, record_no, id, {attribute: value or None})
    runs = []
    records = []                   # final run's per-record fates
    for run_i, root in enumerate(inputs):
        counts = {"rows_read": 0, "rows_accepted": 0, "quarantined": {c: 0 for c in CODES}}
        files = {}
        run_deliveries = []
        recs = []
        for key, path in list_objects(root):
            src = key.split("/", 1)[0]
            try:
                decoded = decode(path, key)
            except FileFailed as e:
                files[key] = ("failed", str(e))
                continue
            files[key] = ("loaded", None)
            with open(path, "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest()
            fresh = (key, digest) not in seen_objects
            seen_objects.add((key, digest))
            if src == "channels":
                if not fresh:
                    continue
                for n, obj, _why in decoded:
                    if obj is None:
                        continue
                    cid, name = obj.get("channel_id"), obj.get("channel_name")
                    if present(cid) and present(name):
                        genre = obj.get("genre")
                        channel_rows.append((run_i, key.encode(), n, as_text(cid), as_text(name),
                                             as_text(genre) if present(genre) else None))
                continue
            if src == "demographics":
                if not fresh:
                    continue
                for n, obj, _why in decoded:
                    if obj is None or not present(obj.get("user_id")):
                        continue
                    attrs = {a: as_text(obj.get(a)) if present(obj.get(a)) else None for a in DEMOGRAPHICS}
                    user_rows.append((run_i, key.encode(), n, as_text(obj["user_id"]), attrs))
                continue
            if src != "viewership":
                continue
            for n, obj, why in decoded:
                counts["rows_read"] += 1
                if obj is None:
                    code, sess = "MALFORMED", None
                else:
                    try:
                        sess = validate_session({k: obj.get(k) for k in SESSION_FIELDS})
                        code = None
                    except Reject as e:
                        code, sess, why = e.code, None, str(e)
                if code:
                    counts["quarantined"][code] += 1
                else:
                    counts["rows_accepted"] += 1
                    run_deliveries.append((run_i, key.encode(), n, sess, fresh, platform_of(obj.get("platform"))))
                recs.append({"key": key, "record_no": n, "code": code, "why": why,
                             "session": list(sess) if sess else None})
        # within the run: later key byte-wise, then later record
        run_deliveries.sort(key=lambda d: (d[1], d[2]))
        counts["duplicates_removed"] = len(run_deliveries) - len({d[3][0] for d in run_deliveries})
        counts["files"] = {k: v[0] for k, v in files.items()}
        counts["file_errors"] = {k: v[1] for k, v in files.items() if v[1]}
        runs.append(counts)
        deliveries += [d for d in run_deliveries if d[4]]
        records = recs
    deliveries.sort(key=lambda d: (d[0], d[1], d[2]))
    final = {}
    platform = {}    # event_id -> the final delivery's platform (or None)
    for d in deliveries:
        final[d[3][0]] = d[3]
        platform[d[3][0]] = d[5]
    channel_rows.sort(key=lambda r: r[:3])
    names, genres = {}, {}
    for r in channel_rows:
        names[r[3]] = r[4]
        genres[r[3]] = r[5]

    user_rows.sort(key=lambda r: r[:3])
    demographics = {}
    for r in user_rows:
        demographics[r[3]] = r[4]

    watch = {}       # (day, channel) -> us
    reach = {}       # (day, channel) -> set(users)
    day_total = {}   # day -> us
    day_users = {}   # day -> set
    user_day = {}    # (day, user) -> us
    user_day_channels = {}   # (day, user) -> channels with watch time
    genre_day = {}   # (day, genre) -> [us, users, channels]
    for eid, user, chan, s, e in final.values():
        cur = s
        while cur < e:
            day = cur // DAY_US
            seg_end = min(e, (day + 1) * DAY_US)
            part = seg_end - cur
            if part > 0:
                ds = (EPOCH + dt.timedelta(days=day)).strftime("%Y-%m-%d")
                watch[(ds, chan)] = watch.get((ds, chan), 0) + part
                reach.setdefault((ds, chan), set()).add(user)
                day_total[ds] = day_total.get(ds, 0) + part
                day_users.setdefault(ds, set()).add(user)
                genre = genres.get(chan) or "Unknown"
                g = genre_day.setdefault((ds, genre), [0, set(), set()])
                g[0] += part
                g[1].add(user)
                g[2].add(chan)
                user_day[(ds, user)] = user_day.get((ds, user), 0) + part
                user_day_channels.setdefault((ds, user), set()).add(chan)
            cur = seg_end
    top = {}
    for (ds, chan), us in watch.items():
        top.setdefault(ds, []).append((chan, us))
    top_out = {}
    for ds, lst in sorted(top.items()):
        lst.sort(key=lambda cu: (-cu[1], cu[0].encode("utf-8")))
        top_out[ds] = [{"rank": i, "channel_id": c, "channel_name": names.get(c, "Unknown"),
                        "watch_seconds": us / US, "reach": len(reach[(ds, c)])}
                       for i, (c, us) in enumerate(lst, 1)]
    avg = [{"date": ds, "active_users": len(day_users[ds]),
            "avg_watch_seconds_per_user": day_total[ds] / US / len(day_users[ds])}
           for ds in sorted(day_total)]
    # user features over every day: day-split activity, and the sessions
    # (all of which start in "every day") with their top channel and platform
    features = {}
    for (ds, user), us in user_day.items():
        f = features.setdefault(user, {"active_days": 0, "watch_us": 0, "channel_days": 0, "days": [],
                                       "sessions_started": 0, "by_channel": {}, "by_platform": {}})
        f["active_days"] += 1
        f["watch_us"] += us
        f["channel_days"] += len(user_day_channels[(ds, user)])
        f["days"].append(ds)
    for eid, user, chan, s, e in final.values():
        f = features.get(user)
        if f is None:       # not possible: every session has watch time
            continue
        f["sessions_started"] += 1
        f["by_channel"][chan] = f["by_channel"].get(chan, 0) + (e - s)
        if platform[eid] is not None:
            f["by_platform"][platform[eid]] = f["by_platform"].get(platform[eid], 0) + (e - s)
    def top(seconds):
        return min(seconds.items(), key=lambda kv: (-kv[1], kv[0].encode("utf-8")))[0] if seconds else None
    user_features = {}
    for user, f in features.items():
        demo = demographics.get(user, {})
        user_features[user] = {
            "active_days": f["active_days"], "watch_seconds": f["watch_us"] / US,
            "avg_watch_seconds_per_active_day": f["watch_us"] / US / f["active_days"],
            "avg_channels_per_active_day": f["channel_days"] / f["active_days"],
            "first_view_date": min(f["days"]), "last_view_date": max(f["days"]),
            "sessions_started": f["sessions_started"], "top_channel_id": top(f["by_channel"]),
            "top_platform": top(f["by_platform"]),
            "age_band": demo.get("age_band"), "gender": demo.get("gender"), "region": demo.get("region")}
    # top genres: per day, by watch time, ties by genre byte-wise
    genres_out = {}
    for (ds, genre), (us, users, chans) in genre_day.items():
        genres_out.setdefault(ds, []).append((genre, us, len(users), len(chans)))
    for ds, lst in genres_out.items():
        lst.sort(key=lambda g: (-g[1], g[0].encode("utf-8")))
        genres_out[ds] = [{"rank": i, "genre": g, "watch_seconds": us / US, "reach": r, "channels": c}
                          for i, (g, us, r, c) in enumerate(lst, 1)]
    # audience: per attribute, day and segment (the attribute's value, or
    # Unknown for a user with no record or no value), active users and watch time
    audience = {}
    for attr in DEMOGRAPHICS:
        seg = {}     # (day, segment) -> [users, us]
        for (ds, user), us in user_day.items():
            value = demographics.get(user, {}).get(attr) or "Unknown"
            acc = seg.setdefault((ds, value), [0, 0])
            acc[0] += 1
            acc[1] += us
        days = {}
        for (ds, value) in sorted(seg, key=lambda dv: (dv[0], dv[1].encode("utf-8"))):
            n, us = seg[(ds, value)]
            days.setdefault(ds, []).append({"segment": value, "active_users": n, "watch_seconds": us / US,
                                            "avg_watch_seconds_per_user": us / US / n})
        audience[attr] = {"by": attr, "days": [{"date": ds, "segments": segs} for ds, segs in sorted(days.items())]}
    return {"runs": runs, "top_channels": top_out, "user_average": {"days": avg}, "audience": audience,
            "top_genres": dict(sorted(genres_out.items())), "user_features": user_features,
            "records": records, "channel_names": names, "sessions": sorted(map(list, final.values()))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", action="append", required=True)
    ap.add_argument("--out")
    a = ap.parse_args()
    res = run_oracle(a.input)
    txt = json.dumps(res, ensure_ascii=False, indent=1)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(txt)
    else:
        sys.stdout.write(txt + "\n")


if __name__ == "__main__":
    main()
