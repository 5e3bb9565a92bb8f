#!/usr/bin/env python3
"""Deterministic dirty-dataset generator written from the data contract
(/work/shared/spec/data-contract.md), independently of `tvetl generate`.

    make_dataset.py --out DIR [--seed S] [--rows N] [--days D] [--start YYYY-MM-DD]
                    [--dirty F] [--redeliver F] [--truth FILE]

Writes DIR/viewership/, DIR/channels/, DIR/demographics/.  Only defects whose
outcome the contract pins down are generated here (ambiguous corners live in
probes.py).  --truth writes what the generator *intended* (per-record reason
code, the parsed values of every accepted record, failed files, channel names)
so that oracle.py, which re-parses the raw bytes, can be cross-checked.

Pure Python standard library.
"""
import argparse
import datetime as dt
import gzip
import io
import json
import os
import random

US = 1_000_000
DAY_US = 86_400 * US
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

FIELDS = ["event_id", "user_id", "device_id", "channel_id", "program_id",
          "start_time", "end_time", "duration_seconds", "platform"]
REQUIRED = ["event_id", "user_id", "channel_id", "start_time"]
OPTIONAL = ["device_id", "program_id", "platform"]

# timestamp renderings: name -> quantum in microseconds
TS_KINDS = {
    "z0": US, "z1": US // 10, "z3": 1000, "z6": 1,          # RFC 3339 ...Z
    "off0": US, "off3": 1000, "off6": 1,                     # RFC 3339 ...+hh:mm / -hh:mm
    "sp0": US, "sp3": 1000,                                  # YYYY-MM-DD HH:MM:SS[.fff]
    "ms": 1000,                                              # epoch milliseconds
}
OFFSETS_MIN = [-720, -600, -300, -210, -60, 0, 60, 180, 330, 345, 540, 600, 840]

PLATFORMS = ["stb", "smart_tv", "mobile", "web", "STB", "Smart_TV", "MOBILE", "Web",
             "sMaRt_Tv", "roku", "tablet", "", None]
PROGRAMS = ["News at 9", "Film, \"The\" Sequel", "Line one\nline two", "Café – été",
            "日本のドラマ", "plain", "a\r\nb, \"c\"", None, ""]


def ts_to_dt(us):
    return EPOCH + dt.timedelta(microseconds=us)


def fmt_ts(us, kind, rng, json_mode):
    """Render UTC microseconds `us` (already quantized for `kind`)."""
    if kind == "ms":
        assert us % 1000 == 0
        v = us // 1000
        return v if json_mode else str(v)
    if kind.startswith("off"):
        off = rng.choice(OFFSETS_MIN)
        d = ts_to_dt(us + off * 60 * US)
        sign = "-" if off < 0 else "+"
        a = abs(off)
        tail = "%s%02d:%02d" % (sign, a // 60, a % 60)
        digits = int(kind[3:])
        sep = "T"
    elif kind.startswith("z"):
        d = ts_to_dt(us)
        tail = "Z"
        digits = int(kind[1:])
        sep = "T"
    else:  # sp
        d = ts_to_dt(us)
        tail = ""
        digits = int(kind[2:])
        sep = " "
    s = d.strftime("%Y-%m-%d") + sep + d.strftime("%H:%M:%S")
    if digits:
        frac = "%06d" % d.microsecond
        assert frac[digits:] == "0" * (6 - digits), (us, kind)
        s += "." + frac[:digits]
    return s + tail


def quant(us, kind):
    q = TS_KINDS[kind]
    return us - us % q


class Rec:
    """One record to write. fields: name -> value; a missing key means absent
    (JSON) or empty cell / absent column (CSV)."""

    def __init__(self, fields, code=None, session=None, variant=None):
        self.fields = fields
        self.code = code            # intended reason code, None = accepted
        self.session = session      # (event_id, user_id, channel_id, start_us, end_us)
        self.variant = variant      # defect variant name, for the truth file
        self.raw = None             # bytes replacing the whole JSON line
        self.col_delta = 0          # CSV: +n extra cells / -n missing cells


class FileSpec:
    def __init__(self, key, fmt, gz=False, bom=False, crlf=False, cols=None, extra=(),
                 shuffle=False, mixed_case=False, trailing_nl=True, fail=None,
                 mode="both", ensure_ascii=False):
        self.key, self.fmt, self.gz, self.bom, self.crlf = key, fmt, gz, bom, crlf
        self.cols = cols if cols is not None else list(FIELDS)
        self.extra = list(extra)
        self.shuffle, self.mixed_case, self.trailing_nl = shuffle, mixed_case, trailing_nl
        self.fail = fail            # None | 'truncated' | 'notgzip'
        self.mode = mode            # 'end' | 'duration' | 'both' (what the columns allow)
        self.ensure_ascii = ensure_ascii
        self.recs = []


class Gen:
    def __init__(self, seed, rows, days, start, dirty, redeliver):
        self.rng = random.Random(seed)
        self.rows, self.days, self.dirty, self.redeliver = rows, days, dirty, redeliver
        d0 = dt.datetime.strptime(start, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
        self.day0_us = (d0 - EPOCH) // dt.timedelta(microseconds=1)
        self.n_users = max(5, rows // 6)
        self.users = ["u%05d" % i for i in range(self.n_users)] + ["U00001", "ü-user", "user,with\"comma"]
        self.known_channels = ["ch%02d" % i for i in range(1, 26)] + ["CH07", "ch9", "ch10", "ch100"]
        self.unknown_channels = ["ch99", "Ch01", "zz-unknown", "odd,\"ch\"", "only_in_truncated_file"]
        self.eid_seq = 0

    # ---------------------------------------------------------------- files
    def make_files(self):
        r = self.rng
        V = "viewership/"
        all_cols = list(FIELDS)
        files = [
            FileSpec(V + "sessions_a.csv", "csv", bom=True, crlf=True, shuffle=True, mixed_case=True,
                     extra=["Ingest_Batch", "notes"]),
            FileSpec(V + "Sessions_B.csv", "csv", cols=REQUIRED + ["end_time"], trailing_nl=False,
                     mode="end"),
            FileSpec(V + "durations_only.csv", "csv", crlf=True, mixed_case=True,
                     cols=[c for c in all_cols if c != "end_time"], mode="duration"),
            FileSpec(V + "batch-2.csv.gz", "csv", gz=True, bom=True, shuffle=True, extra=["x-extra"]),
            FileSpec(V + "batch-10.csv.gz", "csv", gz=True, crlf=True),
            FileSpec(V + "stream.jsonl", "jsonl"),
            FileSpec(V + "stream.ndjson", "jsonl", crlf=True, ensure_ascii=True),
            FileSpec(V + "stream.jsonl.gz", "jsonl", gz=True),
            FileSpec(V + "part9.ndjson.gz", "jsonl", gz=True, ensure_ascii=True),
            FileSpec(V + "part10.jsonl", "jsonl"),
            FileSpec(V + "2024/01/nested.csv", "csv", shuffle=True),
            FileSpec(V + "2024-late.jsonl", "jsonl", trailing_nl=False),
            FileSpec(V + "Z_upper.jsonl", "jsonl"),
            FileSpec(V + "a_lower.csv", "csv", bom=True, mixed_case=True),
            FileSpec(V + "header_only.csv", "csv", bom=True, crlf=True),          # zero records
            FileSpec(V + "m_truncated.csv.gz", "csv", gz=True, fail="truncated"),
            FileSpec(V + "b_plain_named.jsonl.gz", "jsonl", gz=True, fail="notgzip"),
            # a file lacking a required column: every record is MISSING_FIELD
            FileSpec(V + "no_channel_column.csv", "csv", cols=["event_id", "user_id", "start_time",
                                                               "end_time", "platform"], mode="end"),
        ]
        self.files = files
        self.loadable = [f for f in files if f.fail is None and f.key not in
                         (V + "header_only.csv", V + "no_channel_column.csv")]
        self.failed = [f for f in files if f.fail]
        self.no_chan = files[-1]

    # ------------------------------------------------------------- sessions
    def new_eid(self):
        self.eid_seq += 1
        r = self.rng.random()
        if r < 0.02:
            return "ev,\"%06d\"" % self.eid_seq        # needs CSV quoting
        if r < 0.04:
            return "EV-%06d" % self.eid_seq
        return "ev-%06d" % self.eid_seq

    def times(self):
        """(start_us, dur_us) of a fresh valid session, before quantization."""
        r = self.rng
        day = self.day0_us + r.randrange(self.days) * DAY_US
        k = r.random()
        if k < 0.55:
            s = day + r.randrange(DAY_US)
            d = r.randrange(30 * US, 2 * 3600 * US)
        elif k < 0.70:   # crosses midnight
            s = day + DAY_US - r.randrange(1, 2 * 3600 * US)
            d = (day + DAY_US - s) + r.randrange(1 * US, 3 * 3600 * US)
        elif k < 0.75:   # ends exactly at midnight
            d = r.randrange(60, 5 * 3600) * US
            s = day + DAY_US - d
        elif k < 0.80:   # starts exactly at midnight
            s = day
            d = r.randrange(60, 3 * 3600) * US
        elif k < 0.87:   # long but < 24h
            s = day + r.randrange(DAY_US)
            d = r.randrange(10 * 3600 * US, 23 * 3600 * US)
        elif k < 0.90:   # just under 24h
            s = day + r.randrange(DAY_US) // US * US
            d = DAY_US - r.choice([1, 1000, US])
        elif k < 0.95:   # round durations, to force ties between channels
            s = day + r.randrange(86400 - 7200) * US
            d = r.choice([600, 1800, 3600]) * US
        else:            # tiny
            s = day + r.randrange(DAY_US)
            d = r.randrange(1, 10) * US
        return s, d

    def session_fields(self, f, eid, user, chan, s_us, d_us, force_mode=None):
        """Render a valid session into file f. Returns (fields, start_us, end_us)
        with the exact (quantized) times the text encodes."""
        r = self.rng
        json_mode = f.fmt == "jsonl"
        mode = force_mode or f.mode
        if mode == "both":
            mode = "duration" if r.random() < 0.3 else "end"
        skind = r.choice(list(TS_KINDS))
        s_q = quant(s_us, skind)
        fields = {"event_id": eid, "user_id": user, "channel_id": chan,
                  "start_time": fmt_ts(s_q, skind, r, json_mode)}
        if mode == "duration":
            secs = max(1, (s_us + d_us - s_q) // US)
            secs = min(secs, 86399)        # exactly 24h is left to probes.py
            e_q = s_q + secs * US
            fields["duration_seconds"] = secs if json_mode else str(secs)
            if json_mode and r.random() < 0.3:
                fields["end_time"] = None           # explicit null end_time
        else:
            ekind = r.choice(list(TS_KINDS))
            e_q = quant(s_us + d_us, ekind)
            while e_q <= s_q:
                e_q += TS_KINDS[ekind]
            while e_q - s_q >= DAY_US:
                e_q -= TS_KINDS[ekind]
            fields["end_time"] = fmt_ts(e_q, ekind, r, json_mode)
            if "duration_seconds" in f.cols and (e_q - s_q) % US == 0 and r.random() < 0.3:
                secs = (e_q - s_q) // US        # consistent duration alongside end_time
                fields["duration_seconds"] = secs if json_mode else str(secs)
            elif json_mode and r.random() < 0.2:
                fields["duration_seconds"] = None
        for opt in OPTIONAL:
            if r.random() < 0.6:
                if opt == "platform":
                    v = r.choice(PLATFORMS)
                elif opt == "program_id":
                    v = r.choice(PROGRAMS)
                else:
                    v = "dev-%d" % r.randrange(10000)
                if v is not None:
                    fields[opt] = v
                elif json_mode:
                    fields[opt] = None
        return fields, s_q, e_q

    def valid_rec(self, f, eid=None, user=None, chan=None, times=None):
        r = self.rng
        eid = eid or self.new_eid()
        user = user or r.choice(self.users)
        if chan is None:
            chan = r.choice(self.unknown_channels) if r.random() < 0.05 else r.choice(self.known_channels)
        s, d = times or self.times()
        fields, s_q, e_q = self.session_fields(f, eid, user, chan, s, d)
        return Rec(fields, None, (eid, user, chan, s_q, e_q))

    # -------------------------------------------------------------- defects
    MALFORMED_CSV = ["extra_cell", "missing_cell", "bad_utf8_required", "bad_utf8_optional",
                     "two_extra_cells"]
    MALFORMED_JSON = ["truncated", "trailing_comma", "array", "string", "number", "null",
                      "bad_utf8", "single_quotes", "trailing_garbage", "bare_word"]
    MISSING = ["event_id", "user_id", "channel_id", "start_time", "no_end_no_duration"]
    BAD_TS_STRINGS = ["2024-13-01T10:00:00Z", "2024-02-30T10:00:00Z", "2023-02-29 10:00:00",
                      "2024-01-01T25:00:00Z", "2024-01-01T10:60:00Z", "not a time", "yesterday",
                      "2024/01/01 10:00:00", "2024-01-01", "01/02/2024 10:00", "1704067200000ms",
                      "2024-01-01T10:00:00+2:00", "2024-01-01T10:00Z", "2024-01-0110:00:00Z"]
    BAD_DUR = ["end_eq_start", "end_before_start", "end_before_start_via_offset", "dur_zero",
               "dur_negative", "dur_fraction", "dur_abc"]
    TOO_LONG = ["dur_86401", "dur_big", "end_24h_plus_1us", "end_25h", "end_3days", "dur_200000"]

    def defect_rec(self, f, code, variant):
        r = self.rng
        json_mode = f.fmt == "jsonl"
        rec = self.valid_rec(f)
        fl = rec.fields
        rec.code, rec.session, rec.variant = code, None, variant
        if code == "MALFORMED":
            if not json_mode:
                if variant == "extra_cell":
                    rec.col_delta = 1
                elif variant == "two_extra_cells":
                    rec.col_delta = 2
                elif variant == "missing_cell":
                    rec.col_delta = -1
                elif variant == "bad_utf8_required":
                    k = r.choice(REQUIRED[:3])
                    fl[k] = fl[k].encode() + b"\xff\xfe"
                elif variant == "bad_utf8_optional":
                    opt = "program_id" if "program_id" in f.cols else "user_id"
                    fl[opt] = b"caf\xe9 latin-1"
            else:
                text = json.dumps(fl, ensure_ascii=False)
                if variant == "truncated":
                    rec.raw = text[: max(5, len(text) // 2)].encode()
                elif variant == "trailing_comma":
                    rec.raw = (text[:-1] + ",}").encode()
                elif variant == "array":
                    rec.raw = json.dumps(list(fl.values())).encode()
                elif variant == "string":
                    rec.raw = json.dumps(text).encode()
                elif variant == "number":
                    rec.raw = b"42"
                elif variant == "null":
                    rec.raw = b"null"
                elif variant == "bad_utf8":
                    fl["user_id"] = "@@BAD@@"
                    rec.raw = json.dumps(fl, ensure_ascii=False).encode().replace(b"@@BAD@@", b"u\xc3\x28x")
                elif variant == "single_quotes":
                    rec.raw = text.replace('"', "'").encode()
                elif variant == "trailing_garbage":
                    rec.raw = (text + " x").encode()
                elif variant == "bare_word":
                    rec.raw = b"event_id=ev-1 user_id=u1"
        elif code == "MISSING_FIELD":
            if variant == "no_end_no_duration":
                fl.pop("end_time", None)
                fl.pop("duration_seconds", None)
                if json_mode and r.random() < 0.5:
                    fl["end_time"] = None
                    fl["duration_seconds"] = None
            else:
                if json_mode:
                    how = r.choice(["absent", "null", "empty"])
                else:
                    how = "empty"
                if how == "absent":
                    del fl[variant]
                elif how == "null":
                    fl[variant] = None
                else:
                    fl[variant] = ""
        elif code == "BAD_TIMESTAMP":
            bad = r.choice(self.BAD_TS_STRINGS)
            if "end_time" in fl and fl["end_time"] is not None and r.random() < 0.5:
                fl["end_time"] = bad
                fl.pop("duration_seconds", None)      # nothing to fall back on
            else:
                fl["start_time"] = bad
        elif code == "BAD_DURATION":
            s_str = fl["start_time"]
            dur_variants = variant.startswith("dur_")
            if dur_variants and f.mode == "end":
                variant = "end_eq_start"
            if not dur_variants and f.mode == "duration":
                variant = "dur_zero"
            rec.variant = variant
            if variant.startswith("dur_"):
                fl.pop("end_time", None)
                val = {"dur_zero": 0, "dur_negative": -r.randrange(1, 5000), "dur_fraction": 1.5,
                       "dur_abc": "abc"}[variant]
                fl["duration_seconds"] = val if json_mode else str(val)
            else:
                fl.pop("duration_seconds", None)
                if variant == "end_eq_start":
                    fl["end_time"] = s_str
                elif variant == "end_before_start":
                    ts = r.choice(["z0", "sp3", "ms", "off0"])
                    st = "2024-03-10T12:00:00Z"
                    fl["start_time"] = st
                    fl["end_time"] = fmt_ts(1710072000 * US - r.choice([1000, US, 3600 * US]), ts, r,
                                            json_mode)
                else:
                    # end's wall clock is later, but its offset makes it earlier in UTC
                    fl["start_time"] = "2024-03-10T10:00:00Z"
                    fl["end_time"] = "2024-03-10T11:00:00+02:00"
        elif code == "TOO_LONG":
            if variant.startswith("dur_") and f.mode == "end":
                variant = "end_25h"
            if variant.startswith("end_") and f.mode == "duration":
                variant = "dur_86401"
            rec.variant = variant
            if variant.startswith("dur_"):
                fl.pop("end_time", None)
                val = {"dur_86401": 86401, "dur_big": 10 ** 7, "dur_200000": 200000}[variant]
                fl["duration_seconds"] = val if json_mode else str(val)
            else:
                fl.pop("duration_seconds", None)
                base = 1709251200 * US + r.randrange(86400) * US     # 2024-03-01 + s
                fl["start_time"] = fmt_ts(base, "z0", r, json_mode)
                extra = {"end_24h_plus_1us": DAY_US + 1, "end_25h": 25 * 3600 * US,
                         "end_3days": 3 * DAY_US}[variant]
                fl["end_time"] = fmt_ts(base + extra, "z6" if extra % 1000 else "off3", r, json_mode)
        return rec

    # ---------------------------------------------------------------- build
    def build(self):
        r = self.rng
        self.make_files()
        valid = []
        for _ in range(self.rows):
            f = r.choice(self.loadable)
            rec = self.valid_rec(f)
            f.recs.append(rec)
            valid.append(rec)
        # re-deliveries of the same event_id, within and across files, with changes
        n_re = int(self.rows * self.redeliver)
        for _ in range(n_re):
            orig = r.choice(valid)
            eid, user, chan, s, e = orig.session
            times = (s, e - s)
            k = r.random()
            if k < 0.3:
                chan = r.choice(self.known_channels)
            elif k < 0.5:
                times = self.times()                     # other day / other times
            elif k < 0.6:
                user = r.choice(self.users)
            elif k < 0.7:
                chan = r.choice(self.unknown_channels[:-1])
            # else: same content again (maybe in another rendering)
            f = r.choice([orig_file for orig_file in self.loadable if orig in orig_file.recs]) \
                if r.random() < 0.3 else r.choice(self.loadable)
            rec = self.valid_rec(f, eid=eid, user=user, chan=chan, times=times)
            f.recs.append(rec)
        # defects, the five codes in turn, cycling through their variants
        n_bad = int(self.rows * self.dirty)
        codes = ["MALFORMED", "MISSING_FIELD", "BAD_TIMESTAMP", "BAD_DURATION", "TOO_LONG"]
        counters = {c: 0 for c in codes}
        for i in range(n_bad):
            code = codes[i % 5]
            f = r.choice(self.loadable)
            if code == "MALFORMED":
                vs = self.MALFORMED_JSON if f.fmt == "jsonl" else self.MALFORMED_CSV
            elif code == "MISSING_FIELD":
                vs = self.MISSING
            elif code == "BAD_TIMESTAMP":
                vs = ["ts"]
            elif code == "BAD_DURATION":
                vs = self.BAD_DUR
            else:
                vs = self.TOO_LONG
            v = vs[counters[code] % len(vs)]
            counters[code] += 1
            if code == "MISSING_FIELD" and v == "no_end_no_duration" and f.mode == "duration" and f.fmt == "csv":
                pass
            f.recs.append(self.defect_rec(f, code, v))
        # the file without a channel_id column: valid-looking rows, all MISSING_FIELD
        for _ in range(r.randrange(2, 6)):
            rec = self.valid_rec(self.no_chan)
            rec.code, rec.session, rec.variant = "MISSING_FIELD", None, "no_channel_column"
            self.no_chan.recs.append(rec)
        # failed files: re-deliveries that must NOT win, plus fresh sessions that must not appear
        for f in self.failed:
            for _ in range(max(20, self.rows // 20)):
                if r.random() < 0.5:
                    orig = r.choice(valid)
                    eid, user, _c, s, e = orig.session
                    rec = self.valid_rec(f, eid=eid, user=user, chan="ch01", times=(s, e - s))
                else:
                    rec = self.valid_rec(f)
                f.recs.append(rec)
        for f in self.files:
            r.shuffle(f.recs)

    # --------------------------------------------------------------- render
    def header_names(self, f):
        r = self.rng
        cols = list(f.cols) + list(f.extra)
        if f.shuffle:
            r.shuffle(cols)
        names = []
        for c in cols:
            if f.mixed_case:
                c2 = "".join(ch.upper() if r.random() < 0.5 else ch for ch in c)
            else:
                c2 = c
            names.append(c2)
        return cols, names

    @staticmethod
    def csv_cell(v, force_quote):
        if v is None:
            b = b""
        elif isinstance(v, bytes):
            b = v
        else:
            b = str(v).encode("utf-8")
        if force_quote or any(ch in b for ch in (b",", b'"', b"\n", b"\r")):
            return b'"' + b.replace(b'"', b'""') + b'"'
        return b

    def render_csv(self, f):
        r = self.rng
        nl = b"\r\n" if f.crlf else b"\n"
        cols, names = self.header_names(f)
        out = bytearray()
        if f.bom:
            out += b"\xef\xbb\xbf"
        out += b",".join(self.csv_cell(n, r.random() < 0.1) for n in names) + nl
        lines = []
        for rec in f.recs:
            cells = []
            for c in cols:
                if c in FIELDS:
                    v = rec.fields.get(c)
                else:
                    v = r.choice(["", "batch 7", "free, text", "say \"hi\"", "multi\nline"])
                if isinstance(v, str) and "\n" in v and f.crlf:
                    v = v.replace("\r\n", "\n").replace("\n", "\r\n")
                cells.append(self.csv_cell(v, r.random() < 0.1))
            if rec.col_delta > 0:
                cells += [b"surplus"] * rec.col_delta
            elif rec.col_delta < 0:
                cells = cells[: rec.col_delta]
            lines.append(b",".join(cells))
        out += nl.join(lines)
        if lines and f.trailing_nl:
            out += nl
        return bytes(out)

    def render_jsonl(self, f):
        r = self.rng
        nl = b"\r\n" if f.crlf else b"\n"
        lines = []
        for rec in f.recs:
            if rec.raw is not None:
                lines.append(rec.raw)
                continue
            items = list(rec.fields.items())
            r.shuffle(items)
            if r.random() < 0.3:
                items.append(("unknown_key", r.choice([1, "x", None, {"nested": [1, 2]}])))
            obj = dict(items)
            seps = (",", ":") if r.random() < 0.5 else (", ", ": ")
            lines.append(json.dumps(obj, ensure_ascii=f.ensure_ascii, separators=seps).encode("utf-8"))
        out = nl.join(lines)
        if lines and f.trailing_nl:
            out += nl
        return out

    def write(self, out_dir):
        r = self.rng
        written = []
        for f in self.files:
            data = self.render_csv(f) if f.fmt == "csv" else self.render_jsonl(f)
            if f.gz:
                if f.fail == "notgzip":
                    pass
                else:
                    data = gzip.compress(data, mtime=0)
                    if f.fail == "truncated":
                        data = data[: len(data) * 6 // 10]
            written.append((f.key, data))
        written += self.channel_files()
        written += self.demographic_files()
        # mtimes opposite to byte-wise key order, so mtime/name-insensitive orderings differ
        keys_sorted = sorted(k for k, _ in written)
        order = list(written)
        r.shuffle(order)
        for k, data in order:
            p = os.path.join(out_dir, k)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as fh:
                fh.write(data)
            t = 1_700_000_000 + (len(keys_sorted) - keys_sorted.index(k)) * 1000
            os.utime(p, (t, t))

    # ------------------------------------------------------------ channels
    def channel_files(self):
        r = self.rng
        names = {}
        genres = ["news", "sports", "kids", "film", None]
        ids = list(self.known_channels)
        r.shuffle(ids)
        parts = [ids[0::4], ids[1::4], ids[2::4], ids[3::4]]
        rows = []
        for cid in ids:
            nm = r.choice(["%s TV" % cid.upper(), "Chaîne %s" % cid, "%s, \"the\" channel" % cid,
                           "%s\nsecond line" % cid, "%s 日本" % cid])
            names[cid] = nm
        self.channel_names = names

        def obj(cid):
            o = {"channel_id": cid, "channel_name": names[cid]}
            if r.random() < 0.7:
                o["genre"] = r.choice(genres)
            if r.random() < 0.5:
                o["network"] = "net-%d" % r.randrange(5)
            if r.random() < 0.3:
                o["language"] = r.choice(["en", "fr", "ja", None])
            if r.random() < 0.2:
                o["launched"] = 1999
            return o

        files = []
        arr = [obj(c) for c in parts[0]] + [{"channel_id": "bad_chan_no_name", "genre": "x"}]
        files.append(("channels/channels.json", json.dumps(arr, ensure_ascii=False, indent=1).encode()))
        jl = b"\n".join(json.dumps(obj(c), ensure_ascii=False).encode() for c in parts[1])
        jl += b"\n" + json.dumps({"channel_id": "", "channel_name": "empty id"}).encode() + b"\n"
        files.append(("channels/more.jsonl", jl))
        # CSV with BOM, CRLF, shuffled mixed-case headers, an unknown column
        cols = ["Channel_Name", "GENRE", "channel_id", "network", "Extra Col", "language"]
        b = io.BytesIO()
        b.write(b"\xef\xbb\xbf" + b",".join(self.csv_cell(c, False) for c in cols) + b"\r\n")
        for c in parts[2]:
            o = obj(c)
            vals = [o["channel_name"], o.get("genre"), c, o.get("network"), "zzz", o.get("language")]
            b.write(b",".join(self.csv_cell(v, False) for v in vals) + b"\r\n")
        files.append(("channels/extra.csv", b.getvalue()))
        files.append(("channels/arr.json.gz",
                      gzip.compress(json.dumps([obj(c) for c in parts[3]]).encode(), mtime=0)))
        # a truncated channel file: its only channel must stay Unknown
        t = gzip.compress(b"".join(json.dumps({"channel_id": "only_in_truncated_file",
                                               "channel_name": "Ghost %d" % i}).encode() + b"\n"
                                   for i in range(200)), mtime=0)
        files.append(("channels/zz_truncated.jsonl.gz", t[: len(t) // 2]))
        self.failed_keys_extra = ["channels/zz_truncated.jsonl.gz"]
        return files

    def demographic_files(self):
        r = self.rng
        out = []
        rows = [b"user_id,age_band,gender,region"]
        for u in self.users[: len(self.users) // 2]:
            rows.append(b",".join(self.csv_cell(v, False) for v in
                                  [u, r.choice(["18-24", "25-34", "35-44", "65+", ""]),
                                   r.choice(["f", "m", "x", ""]), r.choice(["North, East", "South", ""])]))
        rows.append(b",18-24,f,West")        # missing user_id
        out.append(("demographics/users.csv", b"\r\n".join(rows) + b"\r\n"))
        # the last few users have no record at all: their segment is Unknown
        jl = b"\n".join(json.dumps({"user_id": u, "age_band": "25-34", "region": None}).encode()
                        for u in self.users[len(self.users) // 2:-3])
        out.append(("demographics/users.jsonl.gz", gzip.compress(jl + b"\n", mtime=0)))
        out.append(("demographics/broken.csv.gz", b"user_id,age_band\nu1,18-24\n"))   # not gzip
        self.failed_keys_extra.append("demographics/broken.csv.gz")
        return out

    # ---------------------------------------------------------------- truth
    def truth(self):
        recs = []
        for f in self.files:
            if f.fail:
                continue
            for i, rec in enumerate(f.recs, 1):
                recs.append({"key": f.key, "record_no": i, "code": rec.code, "variant": rec.variant,
                             "session": list(rec.session) if rec.session else None})
        return {"records": recs,
                "failed_files": sorted([f.key for f in self.failed] + self.failed_keys_extra),
                "channel_names": self.channel_names}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--start", default="2024-01-01")
    ap.add_argument("--dirty", type=float, default=0.1)
    ap.add_argument("--redeliver", type=float, default=0.1)
    ap.add_argument("--truth")
    a = ap.parse_args()
    g = Gen(a.seed, a.rows, a.days, a.start, a.dirty, a.redeliver)
    g.build()
    os.makedirs(a.out, exist_ok=True)
    g.write(a.out)
    if a.truth:
        with open(a.truth, "w") as fh:
            json.dump(g.truth(), fh, ensure_ascii=False, indent=0)


if __name__ == "__main__":
    main()
