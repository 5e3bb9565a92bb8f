#!/usr/bin/env python3
"""Tiny single-issue datasets, run through tvetl (stdlib only).

  probes.py --work DIR [--only SUBSTR]

STRICT probes: the contract decides the answer; oracle.py computes it and any
difference is printed as MISMATCH (exit 1).
AMBIGUOUS probes: the contract is silent; tvetl's behaviour is printed as INFO.
"""
import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
import compare  # noqa: E402
import oracle   # noqa: E402

TVETL = os.environ.get("TVETL", os.path.expanduser("~/.cache/tvetl-target/debug/tvetl"))
H = "event_id,user_id,channel_id,start_time,end_time,duration_seconds"
CH = {"channels/c.json": b'[{"channel_id":"c1","channel_name":"One"},{"channel_id":"c2","channel_name":"Two"}]'}


def csvf(*rows, header=H):
    return ("\n".join((header,) + rows) + "\n").encode()


def jl(*objs):
    return b"".join((o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n" for o in objs)


def S(eid="e1", user="u1", chan="c1", start="2024-01-01T10:00:00Z", end=None, dur=None, **kw):
    o = {"event_id": eid, "user_id": user, "channel_id": chan, "start_time": start}
    if end is not None:
        o["end_time"] = end
    if dur is not None:
        o["duration_seconds"] = dur
    o.update(kw)
    return o


OK = "e0,u0,c2,2024-01-01T08:00:00Z,2024-01-01T08:10:00Z,"   # one clean control row


def gz_multi(*parts):
    return b"".join(gzip.compress(p, mtime=0) for p in parts)


P = []   # (name, strict, note, [run files dict, ...])


def probe(name, strict, note, *runs):
    P.append((name, strict, note, [dict(CH, **r) if isinstance(r, dict) else r for r in runs]))


# ------------------------------------------------------------------ strict ones
probe("ties_bytewise", True, "ties by channel_id ascending, byte-wise",
      {"viewership/t.csv": csvf(*["e%d,u%d,%s,2024-01-01T10:00:00Z,2024-01-01T10:10:00Z," % (i, i, c)
                                  for i, c in enumerate(["Zeta", "alpha", "éclair", "ch10", "ch9", "B", "c1"])])})
probe("epoch_ms_zero_and_seconds_like", True, "integers are epoch MILLISECONDS: 0 and 1704103200 are in 1970",
      {"viewership/e.csv": csvf("e1,u1,c1,0,,60", "e2,u2,c1,1704103200,1704103260,")},
      )
probe("epoch_ms_past_year_9999", True, "epoch ms whose instant has no YYYY-MM-DD date (year > 9999, or < 1) is BAD_TIMESTAMP",
      {"viewership/e.csv": csvf("e1,u1,c1,300000000000000,,60", "e2,u2,c1,9000000000000000,,60",
                                "e3,u3,c1,-9000000000000000,,60", "e4,u4,c1,1704103200000,8300000000000000,",
                                "e5,u5,c1,253402300739999,,59", OK)})
probe("empty_object_and_empty_row", True, "{} and an all-empty CSV row are MISSING_FIELD",
      {"viewership/a.jsonl": b"{}\n", "viewership/b.csv": csvf(",,,,,", OK)})
probe("bad_utf8_in_unknown_column", True, "bad UTF-8 anywhere in the row is MALFORMED",
      {"viewership/b.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z,,caf\xe9".replace("\xe9", "@"),
                                header=H + ",notes").replace(b"caf@", b"caf\xe9")})
probe("bad_utf8_in_json_unknown_key", True, "bad UTF-8 anywhere in the line is MALFORMED",
      {"viewership/b.jsonl": json.dumps(S(end="2024-01-01T11:00:00Z", note="@@")).encode().replace(b"@@", b"\xff") + b"\n"})
probe("event_id_case_sensitive", True, "E1 and e1 are different sessions",
      {"viewership/a.csv": csvf("E1,u1,c1,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z,",
                                "e1,u2,c1,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z,")})
probe("redelivery_later_key_bytewise", True, "'a.csv' > 'Z.csv' byte-wise, so a.csv's c2 wins",
      {"viewership/Z.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z,"),
       "viewership/a.csv": csvf("e1,u1,c2,2024-01-02T10:00:00Z,2024-01-02T10:30:00Z,")})
probe("redelivery_within_file_last_wins", True, "later record of the same object wins",
      {"viewership/a.jsonl": jl(S(end="2024-01-01T11:00:00Z"), S(chan="c2", end="2024-01-01T10:05:00Z"))})
probe("offset_moves_day", True, "23:30-02:00 is the next UTC day; +05:30 the previous",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01T23:30:00-02:00,,600",
                                "e2,u2,c1,2024-01-02T03:00:00+05:30,2024-01-02T06:00:00+05:30,")})
probe("midnight_split_and_exact_end", True, "split at midnight; ending exactly at 00:00 adds nothing to the next day",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01T23:00:00Z,2024-01-02T01:00:00Z,",
                                "e2,u2,c2,2024-01-01T23:00:00Z,2024-01-02T00:00:00Z,")})
probe("too_long_by_1us", True, "24h + 1us is TOO_LONG; duration 86401 too",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,2024-01-02T10:00:00.000001Z,",
                                "e2,u1,c1,2024-01-01T10:00:00Z,,86401", OK)})
probe("end_before_start_via_offset", True, "end 11:00+02:00 is 09:00Z, before start 10:00Z",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,2024-01-01T11:00:00+02:00,", OK)})
probe("later_run_wins", True, "a later run wins even when its key sorts first",
      {"viewership/z.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z,")},
      {"viewership/a.csv": csvf("e1,u1,c2,2024-01-01T10:00:00Z,2024-01-01T10:30:00Z,")})
probe("missing_required_column", True, "no channel_id column: every row MISSING_FIELD",
      {"viewership/a.csv": csvf("e1,u1,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z",
                                header="event_id,user_id,start_time,end_time"),
       "viewership/b.csv": csvf(OK)})
probe("failed_file_loads_nothing", True, "truncated gzip: no record of it counts or wins",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z,"),
       "viewership/b.csv.gz": gzip.compress(csvf(*["e1,u9,c2,2024-01-01T10:00:00Z,2024-01-01T10:01:00Z,"] * 3000),
                                            mtime=0)[:-200]})
probe("json_array_channels_failed_file_unknown", True, "channel only in a failed file is Unknown",
      {"viewership/a.csv": csvf("e1,u1,c9,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z,"),
       "channels/z.json.gz": b"not gzip at all"})

L1 = "e1,u1,c1,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z,"
probe("exact_duplicate_lines", True, "byte-identical deliveries: within a file (x3) and across files",
      {"viewership/a.csv": csvf(L1, L1, L1, "e2,u2,c2,2024-01-01T10:00:00Z,,60", "e2,u2,c2,2024-01-01T10:00:00Z,,60"),
       "viewership/b.csv": csvf(L1)})
probe("key_order_path_vs_bytes", True, "'a-b.csv' < 'a/b.csv' byte-wise (component-wise Path order says the opposite)",
      {"viewership/a/b.csv": csvf("e1,u1,c2,2024-01-01T10:00:00Z,,120"),
       "viewership/a-b.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,,60")})
probe("key_order_gz_suffix", True, "'x.csv' < 'x.csv.gz': the .gz delivery wins",
      {"viewership/x.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,,60"),
       "viewership/x.csv.gz": gzip.compress(csvf("e1,u1,c2,2024-01-01T10:00:00Z,,120"), mtime=0)})
probe("key_order_non_ascii", True, "'z.csv' < '\u00e9.csv' byte-wise: \u00e9.csv wins",
      {"viewership/\u00e9.csv": csvf("e1,u1,c2,2024-01-01T10:00:00Z,,120"),
       "viewership/z.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,,60")})
probe("key_order_numeric_names", True, "'part10' < 'part9' byte-wise: part9 wins",
      {"viewership/part9.jsonl": jl(S(chan="c2", dur=120)), "viewership/part10.jsonl": jl(S(dur=60))})
probe("redelivery_moves_day", True, "re-delivery moves a midnight-crossing session to another day",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01T23:00:00Z,2024-01-02T01:00:00Z,", OK),
       "viewership/b.csv": csvf("e1,u1,c1,2024-01-05T10:00:00Z,,60")})
probe("redelivery_moves_day_next_run", True, "same, with the re-delivery in a later run",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01T23:00:00Z,2024-01-02T01:00:00Z,", OK)},
      {"viewership/b.csv": csvf("e1,u1,c1,2024-01-05T10:00:00Z,,60")})

def _many_files():
    import random
    r = random.Random(3)
    files = {}
    names = set()
    while len(names) < 150:
        names.add(r.choice("aAbBzZ09") + "".join(r.choice("aAbBzZ09-_.") for _ in range(r.randint(0, 5))))
    for i, n in enumerate(sorted(names)):
        ext = r.choice([".csv", ".jsonl", ".ndjson", ".csv.gz"])
        chan = "ch%03d" % i
        if ext.startswith(".csv"):
            body = csvf("e1,u1,%s,2024-01-01T10:00:00Z,,%d" % (chan, i + 1))
        else:
            body = jl(S(chan=chan, dur=i + 1))
        files["viewership/%s%s" % (n, ext)] = gzip.compress(body, mtime=0) if ext.endswith(".gz") else body
    return files


def _big_file():
    rows = ["x%06d,u%d,c%d,2024-01-0%dT%02d:00:00Z,,%d" % (i, i % 97, i % 2 + 1, i % 3 + 1, i % 24, i % 5000 + 1)
            for i in range(60000)]
    for pos, ch in [(0, "first"), (29999, "middle"), (59998, "last")]:
        rows[pos] = "e1,u1,%s,2024-01-01T10:00:00Z,,%d" % (ch, pos + 1)
    return {"viewership/big.csv": csvf(*rows), "viewership/big.jsonl.gz": gzip.compress(
        b"".join(json.dumps(S("e2", chan="j%d" % i, dur=i + 1)).encode() + b"\n" for i in range(30000)), mtime=0)}


probe("many_files_same_event", True, "150 files (parallel ingest) re-deliver e1: byte-wise last key wins", _many_files())
probe("names_starting_with_dot_or_underscore", True, "'every object under viewership/' includes _x.csv and .y.jsonl",
      {"viewership/_late.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,,60"),
       "viewership/.y.jsonl": jl(S("e2", dur=60)),
       "viewership/_incoming/z.csv": csvf("e3,u1,c1,2024-01-01T10:00:00Z,,60"),
       "viewership/a.csv": csvf(OK)})
probe("big_file_last_record_wins", True, "60k-row CSV and 30k-line gz JSONL repeating e1/e2: last record wins", _big_file())

probe("exact_24h", True, "exactly 86400 s (end_time and duration) is not longer than 24 hours: accepted",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,2024-01-02T10:00:00Z,", "e2,u2,c1,2024-01-01T10:00:00Z,,86400")})
probe("end_and_duration_disagree", True, "duration_seconds is used when end_time is absent: end_time's 1h counts, not the 7200",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z,7200")})
probe("end_toolong_duration_ok", True, "end_time sets the end when present: 25h is TOO_LONG whatever the duration says",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,2024-01-02T11:00:00Z,60")})

# --------------------------------------------------------------- ambiguous ones
probe("end_ok_duration_bad", False, "valid end_time, duration 'abc' / 0 / 1.5",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z,abc",
                                "e2,u1,c1,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z,0",
                                "e3,u1,c1,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z,1.5")})
probe("end_bad_duration_ok", False, "unparseable end_time, valid duration",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,garbage,60")})
probe("precedence_missing_vs_badts", False, "empty user_id AND bad start_time",
      {"viewership/a.csv": csvf("e1,,c1,garbage,2024-01-01T11:00:00Z,")})
probe("precedence_missing_end_vs_badts", False, "bad start_time and neither end nor duration",
      {"viewership/a.csv": csvf("e1,u1,c1,garbage,,")})
probe("precedence_badts_vs_badduration", False, "bad start_time AND duration 0",
      {"viewership/a.csv": csvf("e1,u1,c1,garbage,,0")})
probe("whitespace_required", False, "user_id of spaces; tab in channel_id",
      {"viewership/a.csv": csvf("e1,   ,c1,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z,",
                                "e2,u2,\t,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z,")})
probe("padded_values", False, "' u1' vs 'u1', timestamps and durations with spaces",
      {"viewership/a.csv": csvf("e1, u1,c1,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z,",
                                "e2,u1,c1, 2024-01-01T10:00:00Z,2024-01-01T11:00:00Z,",
                                "e3,u1,c1,2024-01-01T10:00:00Z,, 60")})
probe("lowercase_t_z", False, "RFC 3339 allows t/z in lower case",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01t10:00:00z,2024-01-01T11:00:00Z,")})
probe("fraction_lengths", False, "space form with 1/6/9 fraction digits; RFC with 9 digits .9999999995",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01 10:00:00.5,2024-01-01T11:00:00Z,",
                                "e2,u2,c1,2024-01-01 10:00:00.123456,2024-01-01T11:00:00Z,",
                                "e3,u3,c1,2024-01-01 10:00:00.123456789,2024-01-01T11:00:00Z,",
                                "e4,u4,c2,2024-01-01T10:00:00.9999999995Z,2024-01-01T11:00:00Z,")})
probe("offset_forms", False, "+0200 / -00:00 / +24:00 / no offset with T",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01T10:00:00+0200,2024-01-01T11:00:00Z,",
                                "e2,u2,c1,2024-01-01T10:00:00-00:00,2024-01-01T11:00:00Z,",
                                "e3,u3,c1,2024-01-01T10:00:00+24:00,2024-01-02T11:00:00Z,",
                                "e4,u4,c1,2024-01-01T10:00:00,2024-01-01T11:00:00Z,")})
probe("space_with_zone", False, "'YYYY-MM-DD HH:MM:SS' followed by Z or an offset",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01 10:00:00Z,2024-01-01T11:00:00Z,",
                                "e2,u2,c1,2024-01-01 10:00:00+02:00,2024-01-01T11:00:00Z,")})
probe("hour24_leapsecond", False, "T24:00:00Z and 23:59:60Z",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01T24:00:00Z,2024-01-02T01:00:00Z,",
                                "e2,u2,c1,2016-12-31T23:59:60Z,2017-01-01T01:00:00Z,")})
probe("epoch_forms", False, "negative ms, ms as JSON string, as JSON float, huge",
      {"viewership/a.jsonl": jl(S("e1", start=-1000, dur=60), S("e2", start="1704103200000", dur=60),
                                S("e3", start=1704103200000.0, dur=60), S("e4", start=99999999999999999, dur=60))})
probe("duration_forms_csv", False, "+60, 060, 60.0, 1e2, huge",
      {"viewership/a.csv": csvf(*["e%d,u1,c1,2024-01-01T10:00:00Z,,%s" % (i, d) for i, d in
                                  enumerate(["+60", "060", "60.0", "1e2", "99999999999999999999999"])])})
probe("duration_forms_json", False, "60.0, \"60\", true, 1e2, huge",
      {"viewership/a.jsonl": jl(S("e1", dur=60.0), S("e2", dur="60"), S("e3", dur=True),
                                b'{"event_id":"e4","user_id":"u1","channel_id":"c1","start_time":"2024-01-01T10:00:00Z","duration_seconds":1e2}',
                                b'{"event_id":"e5","user_id":"u1","channel_id":"c1","start_time":"2024-01-01T10:00:00Z","duration_seconds":99999999999999999999999}')})
probe("json_empty_end_with_duration", False, "end_time '' (empty) with duration 60",
      {"viewership/a.jsonl": jl(S(end="", dur=60))})
probe("json_key_case", False, "JSON keys in other case (CSV headers are case-insensitive)",
      {"viewership/a.jsonl": jl({"Event_ID": "e1", "USER_ID": "u1", "channel_id": "c1",
                                 "start_time": "2024-01-01T10:00:00Z", "duration_seconds": 60})})
probe("json_number_ids", False, "user_id 42, channel_id 7 as JSON numbers",
      {"viewership/a.jsonl": jl(S(user=42, chan=7, dur=60))})
probe("blank_lines", False, "blank lines in CSV and JSONL",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,,60", "", "e2,u1,c1,2024-01-01T10:00:00Z,,60") + b"\n\n",
       "viewership/b.jsonl": jl(S("e3", dur=60)) + b"\n  \n" + jl(S("e4", dur=60))})
probe("jsonl_bom", False, "JSON Lines file starting with a UTF-8 BOM",
      {"viewership/a.jsonl": b"\xef\xbb\xbf" + jl(S(dur=60))})
probe("json_array_bom", False, "channels JSON array file starting with a UTF-8 BOM",
      {"channels/c.json": b"\xef\xbb\xbf" + CH["channels/c.json"], "viewership/a.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,,60")})
probe("multimember_gzip", False, "gzip of two concatenated members (valid per RFC 1952)",
      {"viewership/a.csv.gz": gz_multi(csvf("e1,u1,c1,2024-01-01T10:00:00Z,,60"),
                                       b"e2,u2,c1,2024-01-01T10:00:00Z,,60\n")})
probe("gzip_under_plain_name", False, "a gzip body named .csv (the contract takes the compression from the name)",
      {"viewership/a.csv": gzip.compress(csvf("e1,u1,c1,2024-01-01T10:00:00Z,,60"), mtime=0),
       "viewership/b.csv": csvf(OK)})
probe("wider_than_warehouse", False, "an event_id of 257 bytes (Redshift's column is VARCHAR(256))",
      {"viewership/a.csv": csvf("%s,u1,c1,2024-01-01T10:00:00Z,,60" % ("e" * 257), OK)})
probe("zero_byte_files", False, "0-byte .csv, .jsonl, .csv.gz",
      {"viewership/a.csv": b"", "viewership/b.jsonl": b"", "viewership/c.csv.gz": b"",
       "viewership/d.csv": csvf(OK)})
probe("other_extensions", False, ".CSV upper case, .txt, .json array in viewership/",
      {"viewership/A.CSV": csvf("e1,u1,c1,2024-01-01T10:00:00Z,,60"), "viewership/readme.txt": b"hello\n",
       "viewership/arr.json": json.dumps([S("e2", dur=60)]).encode()})
probe("rejected_redelivery", False, "valid e1 in a.csv, then a BAD_TIMESTAMP e1 in b.csv",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,,60"),
       "viewership/b.csv": csvf("e1,u1,c2,garbage,,60")})
probe("channel_rename", False, "c1 named 'Old' in a.json, 'New' in b.jsonl (same run)",
      {"channels/c.json": b'[]', "channels/a.json": b'[{"channel_id":"c1","channel_name":"Old"}]',
       "channels/b.jsonl": b'{"channel_id":"c1","channel_name":"New"}\n',
       "viewership/a.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,,60")})
probe("channel_rename_later_run", False, "c1 'One' then renamed 'Uno' in a later run",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,,60")},
      {"channels/z.json": b'[{"channel_id":"c1","channel_name":"Uno"}]'})
probe("quarantined_channel_used", False, "channel row without a name; sessions on its id",
      {"channels/c.json": b'[{"channel_id":"c1"}]', "viewership/a.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,,60")})
probe("broken_json_array", False, "channels JSON array cut mid-way",
      {"channels/c.json": b'[{"channel_id":"c1","channel_name":"One"},{"channel_id":"c2","chan',
       "viewership/a.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,,60")})
probe("csv_stray_quotes", False, "a quote inside an unquoted field; an unterminated quote at EOF",
      {"viewership/a.csv": csvf('e1,u1,c1,2024-01-01T10:00:00Z,,60', 'e2,u"1,c1,2024-01-01T10:00:00Z,,60'),
       "viewership/b.csv": csvf('e3,u1,c1,2024-01-01T10:00:00Z,,60', 'e4,"u1,c1,2024-01-01T10:00:00Z,,60')})
probe("csv_header_oddities", False, "duplicated column; padded header name",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,,60,u2", header=H + ",user_id"),
       "viewership/b.csv": csvf("e2,u1,c1,2024-01-01T10:00:00Z,,60", header=H.replace("user_id", " user_id "))})
probe("rerun_identical", False, "the same input twice: second run's counts, lake unchanged?",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,,60", "e1,u1,c2,2024-01-01T10:00:00Z,,60")},
      "SAME")
probe("rerun_old_after_newer", False, "run1 old e1, run2 newer e1, run3 = run1's files again",
      {"viewership/z.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,,60")},
      {"viewership/a.csv": csvf("e1,u1,c2,2024-01-01T10:00:00Z,,120")},
      "FIRST")
probe("same_key_new_content", False, "run2 re-uploads viewership/a.csv with e1 changed",
      {"viewership/a.csv": csvf("e1,u1,c1,2024-01-01T10:00:00Z,,60")},
      {"viewership/a.csv": csvf("e1,u1,c2,2024-01-01T10:00:00Z,,120")})


def write_tree(root, files):
    for k, data in files.items():
        p = os.path.join(root, k)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as fh:
            fh.write(data)


def sh(args, out=None):
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if out:
        with open(out, "wb") as fh:
            fh.write(r.stdout)
    return r


def summarize(d):
    """tvetl's view: per-record fates and the reports."""
    out = []
    q = {}
    for sub, _dirs, files in os.walk(os.path.join(d, "lake/quarantine/viewership")):
        for f in files:
            if f.endswith(".jsonl"):
                for line in open(os.path.join(sub, f), encoding="utf-8", errors="replace"):
                    r = json.loads(line)
                    q.setdefault(r.get("source_key"), []).append(
                        "#%s %s(%s)" % (r.get("record_no"), r.get("reason"), r.get("field")))
    if q:
        out.append("quarantine " + "; ".join("%s: %s" % (k, ", ".join(v)) for k, v in sorted(q.items())))
    avg = json.load(open(os.path.join(d, "avg.json")))
    for day in avg.get("days", []):
        top = json.load(open(os.path.join(d, "topall-%s.json" % day["date"])))
        out.append("%s users=%d avg=%s top=%s" % (day["date"], day["active_users"], day["avg_watch_seconds_per_user"],
                                                   [(c["channel_id"], c["channel_name"], c["watch_seconds"], c["reach"])
                                                    for c in top["channels"]]))
    return out


def run_probe(work, name, strict, note, runs):
    d = os.path.join(work, name)
    shutil.rmtree(d, ignore_errors=True)
    inputs = []
    lines = []
    for i, files in enumerate(runs):
        if isinstance(files, str):          # "SAME"/"FIRST": run the first run's folder again
            inputs.append(inputs[0])
            continue
        root = os.path.join(d, "in-%d" % (i + 1))
        write_tree(root, files)
        inputs.append(root)
    for i, root in enumerate(inputs):
        r = sh([TVETL, "run", "--input", root, "--lake", os.path.join(d, "lake"), "--format", "json", "--quiet"],
               os.path.join(d, "run-%d.json" % (i + 1)))
        if r.returncode != 0:
            lines.append("run %d exit %d: %s" % (i + 1, r.returncode, r.stderr.decode(errors="replace").strip()[-300:]))
        else:
            j = json.loads(r.stdout)
            lines.append("run %d: read=%s accepted=%s dups=%s q=%s files=%s" % (
                i + 1, j.get("rows_read"), j.get("rows_accepted"), j.get("duplicates_removed"),
                {k: v for k, v in j.get("quarantined", {}).items() if v},
                ["%s:%s%s" % (f["key"], f["status"], "(%s)" % f["error"][:90] if f.get("error") else "")
                 for f in j.get("files", []) if f["key"].startswith("viewership/") or f["status"] != "loaded"]))
    lake = os.path.join(d, "lake")
    sh([TVETL, "report", "--lake", lake, "user-average", "--format", "json"], os.path.join(d, "avg.json"))
    sh([TVETL, "export", "--lake", lake, "user-features", "--out", os.path.join(d, "features.csv")],
       os.path.join(d, "features.out"))
    for by in oracle.DEMOGRAPHICS:
        sh([TVETL, "report", "--lake", lake, "audience", "--by", by, "--format", "json"],
           os.path.join(d, "aud-%s.json" % by))
    try:
        days = [x["date"] for x in json.load(open(os.path.join(d, "avg.json")))["days"]]
    except Exception:
        days = []
    o = None
    if strict:
        o = oracle.run_oracle(inputs)
        with open(os.path.join(d, "oracle.json"), "w") as fh:
            json.dump(o, fh)
        days = sorted(set(days) | set(o["top_channels"]))
    for ds in days:
        sh([TVETL, "report", "--lake", lake, "top-channels", "--date", ds, "--format", "json"],
           os.path.join(d, "top-%s.json" % ds))
        sh([TVETL, "report", "--lake", lake, "top-channels", "--date", ds, "--limit", "100000", "--format", "json"],
           os.path.join(d, "topall-%s.json" % ds))
        sh([TVETL, "report", "--lake", lake, "top-genres", "--date", ds, "--limit", "100000", "--format", "json"],
           os.path.join(d, "genres-%s.json" % ds))
    try:
        lines += summarize(d)
    except Exception as e:
        lines.append("summary failed: %s" % e)
    mism = []
    if strict:
        before = len(compare.problems)
        compare.tvetl(types.SimpleNamespace(oracle=os.path.join(d, "oracle.json"), dir=d, runs=len(inputs)))
        mism = compare.problems[before:]
    return lines, mism


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--only")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    n_bad = n_ok = 0
    t0 = time.time()
    for name, strict, note, runs in P:
        if a.only and a.only not in name:
            continue
        lines, mism = run_probe(a.work, name, strict, note, runs)
        tag = ("STRICT " if strict else "AMBIGUOUS ") + name
        if strict and not mism:
            print("ok   %s -- %s" % (tag, note))
            n_ok += 1
            continue
        print("%s %s -- %s" % ("FAIL" if mism else "INFO", tag, note))
        for l in lines:
            print("       " + l)
        for m in mism:
            print("       MISMATCH " + m)
        n_bad += bool(mism)
    print("probes: %d strict passing, %d strict failing, %.1fs" % (n_ok, n_bad, time.time() - t0))
    with open(os.path.join(a.work, "counts"), "w") as fh:
        fh.write("%d %d\n" % (n_ok, n_bad))
    sys.exit(1 if n_bad else 0)


if __name__ == "__main__":
    main()
