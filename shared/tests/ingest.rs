//! The ingest step end to end over real files: a folder as the raw bucket, a
//! folder as the lake, staging Parquet and quarantine read back.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;
use tempfile::TempDir;
use tvetl_core::error::IngestError;
use tvetl_core::ingest::{IngestOptions, IngestReport, ingest_object, record_unreadable};
use tvetl_core::schema::staging_schema;
use tvetl_core::staging::StagingOptions;
use tvetl_core::store::{LocalObjectStore, ObjectMeta, ObjectStore, ObjectUpload, StoreError};
use tvetl_core::{QuarantineReason, Source};

/// 2024-03-05T12:00:00Z: the raw objects' last-modified time, hence the
/// quarantine's `ingest_date`.
const MTIME_SECS: u64 = 1_709_640_000;
const INGEST_DATE: &str = "2024-03-05";
/// 2024-03-01T00:00:00Z in seconds.
const MAR_1: i64 = 1_709_251_200;

const HEADER: &str = "event_id,user_id,device_id,channel_id,program_id,start_time,end_time,duration_seconds,platform";

/// A raw bucket and a lake, each a temporary folder.
struct Env {
    raw_dir: TempDir,
    lake_dir: TempDir,
    raw: LocalObjectStore,
    lake: LocalObjectStore,
}

impl Env {
    fn new() -> Self {
        let raw_dir = tempfile::tempdir().unwrap();
        let lake_dir = tempfile::tempdir().unwrap();
        let raw = LocalObjectStore::new(raw_dir.path());
        let lake = LocalObjectStore::new(lake_dir.path());
        Env { raw_dir, lake_dir, raw, lake }
    }

    /// Writes a raw object with a fixed modification time; returns its metadata.
    fn put(&self, key: &str, bytes: &[u8]) -> ObjectMeta {
        let path = self.raw_dir.path().join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(MTIME_SECS))
            .unwrap();
        let meta = self.raw.head(key).unwrap();
        assert_eq!(meta.size, bytes.len() as u64);
        meta
    }

    fn ingest(&self, object: &ObjectMeta) -> Result<IngestReport, IngestError> {
        ingest_object(&self.raw, object, &self.lake, &IngestOptions::default())
    }

    fn lake_root(&self) -> &Path {
        self.lake_dir.path()
    }
}

/// Every regular file under `root` (hidden ones included), relative, sorted.
fn files_under(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                walk(&path, root, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Every file under `root` with its bytes.
fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    files_under(root).into_iter().map(|k| (k.clone(), std::fs::read(root.join(&k)).unwrap())).collect()
}

fn read_parquet(path: &Path) -> (arrow_schema::SchemaRef, Vec<RecordBatch>, usize) {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    let schema = builder.schema().clone();
    let row_groups = builder.metadata().num_row_groups();
    let batches = builder.build().unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    (schema, batches, row_groups)
}

/// One staged viewing session, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SessionRow {
    event_id: String,
    user_id: String,
    device_id: Option<String>,
    channel_id: String,
    program_id: Option<String>,
    start_us: i64,
    end_us: i64,
    duration_seconds: Option<i64>,
    platform: Option<String>,
    source_key: String,
    source_version: String,
    source_record_no: i64,
}

fn text(batch: &RecordBatch, column: &str, row: usize) -> Option<String> {
    let array = batch.column_by_name(column).unwrap_or_else(|| panic!("no column {column}")).as_string::<i32>();
    array.is_valid(row).then(|| array.value(row).to_owned())
}

fn int(batch: &RecordBatch, column: &str, row: usize) -> Option<i64> {
    let array = batch.column_by_name(column).unwrap().as_primitive::<Int64Type>();
    array.is_valid(row).then(|| array.value(row))
}

fn micros(batch: &RecordBatch, column: &str, row: usize) -> i64 {
    let array = batch.column_by_name(column).unwrap().as_primitive::<TimestampMicrosecondType>();
    assert!(array.is_valid(row));
    array.value(row)
}

fn session_rows(path: &Path) -> Vec<SessionRow> {
    let (_, batches, _) = read_parquet(path);
    let mut rows = Vec::new();
    for b in &batches {
        for i in 0..b.num_rows() {
            rows.push(SessionRow {
                event_id: text(b, "event_id", i).unwrap(),
                user_id: text(b, "user_id", i).unwrap(),
                device_id: text(b, "device_id", i),
                channel_id: text(b, "channel_id", i).unwrap(),
                program_id: text(b, "program_id", i),
                start_us: micros(b, "start_time", i),
                end_us: micros(b, "end_time", i),
                duration_seconds: int(b, "duration_seconds", i),
                platform: text(b, "platform", i),
                source_key: text(b, "source_key", i).unwrap(),
                source_version: text(b, "source_version", i).unwrap(),
                source_record_no: int(b, "source_record_no", i).unwrap(),
            });
        }
    }
    rows
}

/// The staged sessions of a report, by partition value.
fn staged_sessions(env: &Env, report: &IngestReport) -> BTreeMap<String, Vec<SessionRow>> {
    report
        .staged
        .iter()
        .map(|f| (f.partition.clone().expect("viewership is partitioned"), session_rows(&env.lake_root().join(&f.key))))
        .collect()
}

fn quarantine_lines(env: &Env, report: &IngestReport) -> Vec<Value> {
    let key = report.quarantine_key.as_ref().expect("something was quarantined");
    let text = std::fs::read_to_string(env.lake_root().join(key)).unwrap();
    assert!(text.ends_with('\n'));
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn is_hex16(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The `<id>` of `…/part-<id>.parquet` or `…/part-<id>.jsonl`.
fn part_id(key: &str) -> &str {
    let name = key.rsplit('/').next().unwrap();
    let id = name.strip_prefix("part-").unwrap_or_else(|| panic!("{key}: not a part file"));
    let id = id.strip_suffix(".parquet").or_else(|| id.strip_suffix(".jsonl")).unwrap();
    assert!(is_hex16(id), "{key}: id is not 16 hex digits");
    id
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

// ------------------------------------------------------------------ counts and quarantine

/// (record_no, line, reason, field, original) of each rejected record of
/// [`mixed_csv`] with `\n` endings.
fn expected_rejections() -> Vec<(u64, u64, &'static str, Option<&'static str>, &'static str)> {
    vec![
        (2, 3, "MALFORMED", None, "mal1,u3,,c1,,2024-03-01T10:00:00Z,,60"),
        (3, 4, "MISSING_FIELD", Some("user_id"), "miss1,,d,c1,,2024-03-01T10:00:00Z,,60,web"),
        (4, 5, "BAD_TIMESTAMP", Some("start_time"), "ts1,u5,,c1,\"a, b\",2024-03-01T25:00:00Z,,60,web"),
        (5, 6, "BAD_DURATION", Some("end_time"), "dur1,u6,,c1,,2024-03-01T10:00:00Z,2024-03-01T09:00:00Z,,web"),
        (6, 7, "BAD_DURATION", Some("duration_seconds"), "dur2,u7,,c1,,2024-03-01T10:00:00Z,,-5,web"),
        (7, 8, "TOO_LONG", Some("end_time"), "long1,u8,,c1,,2024-03-01T00:00:00Z,2024-03-02T00:00:01Z,,web"),
        (9, 11, "MISSING_FIELD", Some("end_time"), "miss2,u10,,c1,,2024-03-01T10:00:00Z,,,web"),
        (10, 12, "MALFORMED", Some("event_id"), "bad\u{fffd},u11,,c1,,2024-03-01T10:00:00Z,,60,web"),
        (12, 14, "BAD_TIMESTAMP", Some("end_time"), "ts2,u13,,c1,,2024-03-01T10:00:00Z,2024-02-30T00:00:00Z,,web"),
    ]
}

/// Twelve records: three valid, nine rejected with every reason code.
fn mixed_csv(newline: &str) -> Vec<u8> {
    let lines: Vec<&[u8]> = vec![
        HEADER.as_bytes(),
        b"ok1,u1,d1,c1,p1,2024-03-01T10:00:00Z,2024-03-01T11:00:00Z,,stb",
        b"mal1,u3,,c1,,2024-03-01T10:00:00Z,,60",
        b"miss1,,d,c1,,2024-03-01T10:00:00Z,,60,web",
        b"ts1,u5,,c1,\"a, b\",2024-03-01T25:00:00Z,,60,web",
        b"dur1,u6,,c1,,2024-03-01T10:00:00Z,2024-03-01T09:00:00Z,,web",
        b"dur2,u7,,c1,,2024-03-01T10:00:00Z,,-5,web",
        b"long1,u8,,c1,,2024-03-01T00:00:00Z,2024-03-02T00:00:01Z,,web",
        b"ok2,u9,,c1,\"multi",
        b"line\",2024-03-01T10:00:00Z,,60,mobile",
        b"miss2,u10,,c1,,2024-03-01T10:00:00Z,,,web",
        b"bad\xff,u11,,c1,,2024-03-01T10:00:00Z,,60,web",
        b"ok3,u12,,c2,,2024-03-01 12:00:00,,1800,Smart_TV",
        b"ts2,u13,,c1,,2024-03-01T10:00:00Z,2024-02-30T00:00:00Z,,web",
    ];
    let mut out = Vec::new();
    for line in lines {
        out.extend_from_slice(line);
        out.extend_from_slice(newline.as_bytes());
    }
    out
}

#[test]
fn counts_add_up_and_every_reason_code_is_quarantined_with_its_record() {
    let env = Env::new();
    let object = env.put("viewership/2024/mixed.csv", &mixed_csv("\n"));
    let report = env.ingest(&object).unwrap();
    let c = report.counts;
    assert_eq!(c.rows_read, 12);
    assert_eq!(c.rows_accepted, 3);
    assert_eq!(c.quarantined.malformed, 2);
    assert_eq!(c.quarantined.missing_field, 2);
    assert_eq!(c.quarantined.bad_timestamp, 2);
    assert_eq!(c.quarantined.bad_duration, 2);
    assert_eq!(c.quarantined.too_long, 1);
    assert_eq!(c.rows_read, c.rows_accepted + c.quarantined.total());
    for reason in QuarantineReason::ALL {
        assert!(c.quarantined.get(reason) > 0, "{reason} was not produced");
    }
    assert_eq!(report.source, Source::Viewership);
    assert_eq!(report.key, "viewership/2024/mixed.csv");
    assert!(report.unknown_columns.is_empty());

    // The quarantine file: one JSON line per rejection, in record order.
    let qkey = report.quarantine_key.clone().unwrap();
    assert!(qkey.starts_with(&format!("quarantine/viewership/ingest_date={INGEST_DATE}/part-")), "{qkey}");
    let lines = quarantine_lines(&env, &report);
    assert_eq!(lines.len() as u64, c.quarantined.total());
    let got: Vec<_> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["source_key"], "viewership/2024/mixed.csv");
            assert!(!l["message"].as_str().unwrap().is_empty(), "{l}");
            (
                l["record_no"].as_u64().unwrap(),
                l["line"].as_u64().unwrap(),
                l["reason"].as_str().unwrap().to_owned(),
                l["field"].as_str().map(str::to_owned),
                l["original"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<_> = expected_rejections()
        .into_iter()
        .map(|(n, line, reason, field, original)| {
            (n, line, reason.to_owned(), field.map(str::to_owned), original.to_owned())
        })
        .collect();
    assert_eq!(got, expected);
    // Per-code counts in the report match the file.
    for reason in QuarantineReason::ALL {
        let in_file = lines.iter().filter(|l| l["reason"] == reason.code()).count() as u64;
        assert_eq!(in_file, c.quarantined.get(reason), "{reason}");
    }

    // The three accepted rows, all on 2024-03-01, and nothing else in the lake.
    assert_eq!(report.staged.len(), 1);
    let staged = &report.staged[0];
    assert_eq!(staged.partition.as_deref(), Some("2024-03-01"));
    assert_eq!(staged.rows, 3);
    assert!(staged.key.starts_with("staging/viewership/event_date=2024-03-01/part-"));
    assert_eq!(part_id(&staged.key), part_id(&qkey), "outputs of one object share its id");
    let rows = session_rows(&env.lake_root().join(&staged.key));
    assert_eq!(rows.iter().map(|r| r.event_id.as_str()).collect::<Vec<_>>(), ["ok1", "ok2", "ok3"]);
    assert_eq!(rows.iter().map(|r| r.source_record_no).collect::<Vec<_>>(), [1, 8, 11]);
    assert_eq!(rows[1].program_id.as_deref(), Some("multi\nline"));
    assert_eq!(rows[2].platform.as_deref(), Some("smart_tv"));
    assert_eq!(files_under(env.lake_root()), [qkey, staged.key.clone()]);
}

#[test]
fn crlf_objects_quarantine_the_same_records_on_the_same_lines() {
    let env = Env::new();
    let object = env.put("viewership/mixed-crlf.csv", &mixed_csv("\r\n"));
    let report = env.ingest(&object).unwrap();
    assert_eq!(report.counts.rows_read, 12);
    assert_eq!(report.counts.rows_accepted, 3);
    let got: Vec<_> = quarantine_lines(&env, &report)
        .iter()
        .map(|l| {
            (
                l["record_no"].as_u64().unwrap(),
                l["line"].as_u64().unwrap(),
                l["reason"].as_str().unwrap().to_owned(),
                l["original"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<_> = expected_rejections()
        .into_iter()
        .map(|(n, line, reason, _, original)| (n, line, reason.to_owned(), original.to_owned()))
        .collect();
    assert_eq!(got, expected);
    let rows = staged_sessions(&env, &report);
    assert_eq!(rows["2024-03-01"][1].program_id.as_deref(), Some("multi\r\nline"));
    assert_eq!(rows["2024-03-01"][0].platform.as_deref(), Some("stb"), "no CR leaks into the last column");
}

// ------------------------------------------------------------------ staging Parquet

/// Sessions on three days; see `staging_parquet_…` for what each must become.
const SESSIONS_CSV: &str = "\
event_id,user_id,device_id,channel_id,program_id,start_time,end_time,duration_seconds,platform
a,u1,d1,c1,p1,2024-03-01T19:30:00+04:00,2024-03-01T20:00:00+04:00,,STB 
b,u2,,c2,,1709337600000,,600,
c,u3,,c1,,2024-03-01T23:30:00Z,2024-03-02T00:30:00Z,,web
d,u1,,c3,,2024-03-02 10:00:00,,60,roku
e,u4,,c1,,2024-02-29T23:59:59.5Z,,1,mobile
x,u5,,c1,,2024-03-01T10:00:00Z,,0,web
";

#[test]
fn staging_parquet_is_partitioned_by_start_day_with_typed_values() {
    let env = Env::new();
    let object = env.put("viewership/sessions.csv", SESSIONS_CSV.as_bytes());
    let report = env.ingest(&object).unwrap();
    assert_eq!(report.counts.rows_read, 6);
    assert_eq!(report.counts.rows_accepted, 5);
    assert_eq!(report.counts.quarantined.bad_duration, 1);

    // One file per partition, all named after the object.
    let id = part_id(&report.staged[0].key).to_owned();
    let expected: Vec<(String, Option<String>, u64)> = [("2024-02-29", 1), ("2024-03-01", 2), ("2024-03-02", 2)]
        .iter()
        .map(|(day, rows)| {
            (format!("staging/viewership/event_date={day}/part-{id}.parquet"), Some(day.to_string()), *rows)
        })
        .collect();
    let got: Vec<_> = report.staged.iter().map(|f| (f.key.clone(), f.partition.clone(), f.rows)).collect();
    assert_eq!(got, expected);
    let mut on_disk = files_under(env.lake_root());
    on_disk.retain(|k| k.starts_with("staging/"));
    assert_eq!(on_disk, expected.iter().map(|e| e.0.clone()).collect::<Vec<_>>());

    // The schema, as read back from the file.
    let (schema, batches, _) = read_parquet(&env.lake_root().join(&expected[1].0));
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    assert_eq!(schema.field_with_name("start_time").unwrap().data_type(), &utc);
    assert_eq!(schema.field_with_name("end_time").unwrap().data_type(), &utc);
    let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "event_id",
            "user_id",
            "device_id",
            "channel_id",
            "program_id",
            "start_time",
            "end_time",
            "duration_seconds",
            "platform",
            "source_key",
            "source_version",
            "source_record_no"
        ]
    );
    let declared = staging_schema(Source::Viewership);
    for (read, want) in schema.fields().iter().zip(declared.fields()) {
        assert_eq!(
            (read.name(), read.data_type(), read.is_nullable()),
            (want.name(), want.data_type(), want.is_nullable())
        );
    }
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);

    // Row counts and values per partition.
    let parts = staged_sessions(&env, &report);
    let ids = |day: &str| parts[day].iter().map(|r| r.event_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids("2024-02-29"), ["e"]);
    assert_eq!(ids("2024-03-01"), ["a", "c"], "the midnight-crossing session c stays on its start day");
    assert_eq!(ids("2024-03-02"), ["b", "d"]);

    let lineage = |record_no| ("viewership/sessions.csv".to_owned(), object.version.clone(), record_no);
    let a = &parts["2024-03-01"][0];
    assert_eq!(
        *a,
        SessionRow {
            event_id: "a".into(),
            user_id: "u1".into(),
            device_id: Some("d1".into()),
            channel_id: "c1".into(),
            program_id: Some("p1".into()),
            // 19:30 at +04:00 is 15:30 UTC.
            start_us: (MAR_1 + 15 * 3600 + 1800) * 1_000_000,
            end_us: (MAR_1 + 16 * 3600) * 1_000_000,
            duration_seconds: None,
            platform: Some("stb".into()),
            source_key: lineage(1).0,
            source_version: lineage(1).1,
            source_record_no: 1,
        }
    );
    let b = &parts["2024-03-02"][0];
    assert_eq!(b.start_us, (MAR_1 + 86_400) * 1_000_000, "epoch milliseconds");
    assert_eq!(b.end_us, (MAR_1 + 86_400 + 600) * 1_000_000);
    assert_eq!(b.duration_seconds, Some(600));
    assert_eq!(b.platform, None);
    assert_eq!(b.device_id, None);
    assert_eq!((b.source_key.clone(), b.source_version.clone(), b.source_record_no), lineage(2));
    let c = &parts["2024-03-01"][1];
    assert_eq!(c.start_us, (MAR_1 + 23 * 3600 + 1800) * 1_000_000);
    assert_eq!(c.end_us, (MAR_1 + 86_400 + 1800) * 1_000_000);
    assert_eq!(c.source_record_no, 3);
    let d = &parts["2024-03-02"][1];
    assert_eq!(d.start_us, (MAR_1 + 86_400 + 10 * 3600) * 1_000_000);
    assert_eq!(d.platform.as_deref(), Some("other"));
    let e = &parts["2024-02-29"][0];
    assert_eq!(e.start_us, MAR_1 * 1_000_000 - 500_000);
    assert_eq!(e.end_us, MAR_1 * 1_000_000 + 500_000);

    // The lineage is also in the file's key-value metadata.
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(File::open(env.lake_root().join(&expected[0].0)).unwrap()).unwrap();
    let kv: BTreeMap<_, _> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    assert_eq!(kv.get("tvetl.source_key").cloned().flatten().as_deref(), Some("viewership/sessions.csv"));
    assert_eq!(kv.get("tvetl.source_version").cloned().flatten().as_deref(), Some(object.version.as_str()));
}

#[test]
fn json_lines_and_gzip_objects_stage_the_same_sessions_as_csv() {
    let jsonl = concat!(
        "{\"EVENT_ID\":\"a\",\"user_id\":\"u1\",\"device_id\":\"d1\",\"channel_id\":\"c1\",\"program_id\":\"p1\",\"start_time\":\"2024-03-01T19:30:00+04:00\",\"end_time\":\"2024-03-01T20:00:00+04:00\",\"platform\":\"STB \"}\n",
        "{\"event_id\":\"b\",\"user_id\":\"u2\",\"channel_id\":\"c2\",\"start_time\":1709337600000,\"duration_seconds\":600,\"platform\":null}\n",
        "\n",
        "{\"event_id\":\"c\",\"user_id\":\"u3\",\"channel_id\":\"c1\",\"start_time\":\"2024-03-01T23:30:00Z\",\"end_time\":\"2024-03-02T00:30:00Z\",\"platform\":\"web\"}\n",
        "{\"event_id\":\"d\",\"user_id\":\"u1\",\"channel_id\":\"c3\",\"start_time\":\"2024-03-02 10:00:00\",\"duration_seconds\":\"60\",\"platform\":\"roku\"}\n",
        "{\"event_id\":\"e\",\"user_id\":\"u4\",\"channel_id\":\"c1\",\"start_time\":\"2024-02-29T23:59:59.5Z\",\"duration_seconds\":1,\"platform\":\"mobile\"}\n",
        "{\"event_id\":\"x\",\"user_id\":\"u5\",\"channel_id\":\"c1\",\"start_time\":\"2024-03-01T10:00:00Z\",\"duration_seconds\":0,\"platform\":\"web\"}\n",
    );
    let strip = |parts: BTreeMap<String, Vec<SessionRow>>| -> BTreeMap<String, Vec<SessionRow>> {
        parts
            .into_iter()
            .map(|(day, rows)| {
                let rows = rows
                    .into_iter()
                    .map(|r| SessionRow { source_key: String::new(), source_version: String::new(), ..r })
                    .collect();
                (day, rows)
            })
            .collect()
    };
    let env = Env::new();
    let csv_report = env.ingest(&env.put("viewership/s.csv", SESSIONS_CSV.as_bytes())).unwrap();
    let csv_rows = strip(staged_sessions(&env, &csv_report));
    assert_eq!(csv_rows.values().map(Vec::len).sum::<usize>(), 5);
    for (key, bytes) in [
        ("viewership/s.jsonl", jsonl.as_bytes().to_vec()),
        ("viewership/s.ndjson.gz", gzip(jsonl.as_bytes())),
        ("viewership/s.csv.gz", gzip(SESSIONS_CSV.as_bytes())),
    ] {
        let report = env.ingest(&env.put(key, &bytes)).unwrap();
        assert_eq!(report.counts, csv_report.counts, "{key}");
        let rows = staged_sessions(&env, &report);
        assert!(rows.values().flatten().all(|r| r.source_key == key));
        assert_eq!(strip(rows), csv_rows, "{key}");
    }
}

#[test]
fn json_numbers_are_validated_as_written_like_csv_fields() {
    let env = Env::new();
    let start = r#""user_id": "u1", "channel_id": "c1", "start_time": "2024-03-01T10:00:00Z""#;
    let jsonl = format!(
        "{{\"event_id\": 123456789012345678901234567890, {start}, \"duration_seconds\": 60}}\n\
         {{\"event_id\": 123456789012345678901234567891, {start}, \"duration_seconds\": 60}}\n\
         {{\"event_id\": \"huge\", {start}, \"duration_seconds\": 99999999999999999999}}\n\
         {{\"event_id\": \"float\", {start}, \"duration_seconds\": 6.0e1}}\n"
    );
    let csv = "event_id,user_id,channel_id,start_time,duration_seconds\n\
               huge,u1,c1,2024-03-01T10:00:00Z,99999999999999999999\n\
               float,u1,c1,2024-03-01T10:00:00Z,6.0e1\n";
    let report = env.ingest(&env.put("viewership/numbers.jsonl", jsonl.as_bytes())).unwrap();
    let c = report.counts;
    assert_eq!((c.rows_read, c.rows_accepted), (4, 2), "two ids that differ in the 30th digit are two sessions");
    let staged = staged_sessions(&env, &report);
    let ids: Vec<_> = staged["2024-03-01"].iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(ids, ["123456789012345678901234567890", "123456789012345678901234567891"]);

    // The same values in a CSV object get the same codes and messages.
    let csv_report = env.ingest(&env.put("viewership/numbers.csv", csv.as_bytes())).unwrap();
    let codes = |report: &IngestReport| -> Vec<(String, String)> {
        quarantine_lines(&env, report)
            .iter()
            .map(|q| (q["reason"].as_str().unwrap().to_owned(), q["message"].as_str().unwrap().to_owned()))
            .collect()
    };
    assert_eq!(codes(&report), codes(&csv_report));
    assert_eq!(codes(&report)[0].0, "TOO_LONG");
    assert_eq!(codes(&report)[1].0, "BAD_DURATION");
    assert!(codes(&report)[1].1.contains("\"6.0e1\""), "the message quotes what was written: {:?}", codes(&report));
}

#[test]
fn small_batches_and_row_groups_keep_every_row() {
    let mut text = format!("{HEADER}\n");
    for i in 0..1000 {
        // Spread over three days, interleaved.
        text.push_str(&format!("e{i},u{},,c{},,2024-03-0{}T{:02}:00:00Z,,60,web\n", i % 50, i % 7, 1 + i % 3, i % 24));
    }
    let default_env = Env::new();
    let object = default_env.put("viewership/many.csv", text.as_bytes());
    let expected = staged_sessions(&default_env, &default_env.ingest(&object).unwrap());

    let env = Env::new();
    let object = env.put("viewership/many.csv", text.as_bytes());
    let options = IngestOptions {
        staging: StagingOptions { batch_rows: 7, row_group_rows: 50, zstd_level: 3, ..StagingOptions::default() },
    };
    let report = ingest_object(&env.raw, &object, &env.lake, &options).unwrap();
    assert_eq!(report.staged.iter().map(|f| f.rows).collect::<Vec<_>>(), [334, 333, 333]);
    for f in &report.staged {
        let (_, batches, row_groups) = read_parquet(&env.lake_root().join(&f.key));
        assert!(row_groups >= 6, "{}: {row_groups} row groups", f.key);
        assert_eq!(batches.iter().map(|b| b.num_rows() as u64).sum::<u64>(), f.rows);
    }
    assert_eq!(staged_sessions(&env, &report), expected);
    let all: Vec<i64> = expected.values().flatten().map(|r| r.source_record_no).collect();
    assert_eq!(all.len(), 1000);
}

// ------------------------------------------------------------------ determinism

#[test]
fn the_same_object_gives_the_same_files_and_bytes() {
    let content = [SESSIONS_CSV.as_bytes(), b"y,,,c1,,2024-03-01T10:00:00Z,,60,web\n"].concat();
    let env_a = Env::new();
    let env_b = Env::new();
    let report_a = env_a.ingest(&env_a.put("viewership/day.csv", &content)).unwrap();
    let report_b = env_b.ingest(&env_b.put("viewership/day.csv", &content)).unwrap();
    assert_eq!(report_a.staged, report_b.staged);
    assert_eq!(report_a.quarantine_key, report_b.quarantine_key);
    let a = snapshot(env_a.lake_root());
    let b = snapshot(env_b.lake_root());
    assert_eq!(a.len(), 4, "three partitions and a quarantine file: {:?}", a.keys());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (key, bytes) in &a {
        assert!(bytes == &b[key], "{key} differs between the two lakes");
    }

    // Ingesting again into the same lake rewrites the same files, nothing more.
    let again = env_a.ingest(&env_a.raw.head("viewership/day.csv").unwrap()).unwrap();
    assert_eq!(again.staged, report_a.staged);
    assert_eq!(snapshot(env_a.lake_root()), a);
}

#[test]
fn a_changed_object_gives_new_file_names() {
    let env_a = Env::new();
    let env_b = Env::new();
    let report_a = env_a.ingest(&env_a.put("viewership/day.csv", SESSIONS_CSV.as_bytes())).unwrap();
    let changed = SESSIONS_CSV.replace("u4", "u9");
    let object_b = env_b.put("viewership/day.csv", changed.as_bytes());
    let report_b = env_b.ingest(&object_b).unwrap();
    assert_ne!(env_a.raw.head("viewership/day.csv").unwrap().version, object_b.version);

    let partitions = |r: &IngestReport| r.staged.iter().map(|f| f.partition.clone()).collect::<Vec<_>>();
    assert_eq!(partitions(&report_a), partitions(&report_b));
    let id_a = part_id(&report_a.staged[0].key).to_owned();
    let id_b = part_id(&report_b.staged[0].key).to_owned();
    assert_ne!(id_a, id_b);
    let names_a = files_under(env_a.lake_root());
    let names_b = files_under(env_b.lake_root());
    assert!(names_a.iter().all(|n| n.contains(&id_a) && !names_b.contains(n)), "{names_a:?} vs {names_b:?}");
    assert!(names_b.iter().all(|n| n.contains(&id_b)));
    // Both versions can live in one lake side by side.
    let report_b_in_a = ingest_object(&env_b.raw, &object_b, &env_a.lake, &IngestOptions::default()).unwrap();
    assert_eq!(report_b_in_a.staged, report_b.staged);
    assert_eq!(files_under(env_a.lake_root()).len(), names_a.len() + names_b.len());
}

// ------------------------------------------------------------------ atomicity

/// 3000 sessions over three days, every tenth with a bad timestamp.
fn big_csv() -> String {
    let mut text = format!("{HEADER}\n");
    for i in 0..3000 {
        let start = if i % 10 == 9 { "not-a-time".to_owned() } else { format!("2024-03-0{}T10:00:00Z", 1 + i % 3) };
        text.push_str(&format!("e{i},u{},d{i},c{},,{start},,{},smart_tv\n", i % 100, i % 9, 30 + i));
    }
    text
}

#[test]
fn an_unreadable_object_writes_nothing_and_is_recorded() {
    let env = Env::new();
    let full = gzip(big_csv().as_bytes());

    // The complete object would have written three partitions and a quarantine file …
    let complete = env.put("viewership/complete.csv.gz", &full);
    let report = env.ingest(&complete).unwrap();
    assert_eq!(report.staged.len(), 3);
    assert_eq!(report.counts.rows_read, 3000);
    assert_eq!(report.counts.quarantined.bad_timestamp, 300);
    let after_complete = snapshot(env.lake_root());
    assert_eq!(after_complete.len(), 4);

    // … the same bytes cut in half write nothing at all.
    let broken = env.put("viewership/broken.csv.gz", &full[..full.len() / 2]);
    let err = env.ingest(&broken).unwrap_err();
    assert!(err.is_bad_object(), "{err:?}");
    assert!(!err.is_retryable());
    match &err {
        IngestError::Unreadable { key, .. } => assert_eq!(key, "viewership/broken.csv.gz"),
        other => panic!("expected Unreadable, got {other:?}"),
    }
    assert_eq!(snapshot(env.lake_root()), after_complete, "a failed object leaves no file, temporary or not");
    assert_eq!(env.lake.list("").unwrap().len(), 4);

    // Recording it writes one JSON file that names the object.
    let key = record_unreadable(&env.lake, &broken, &err).unwrap();
    let prefix = format!("quarantine/viewership/ingest_date={INGEST_DATE}/unreadable-");
    let id = key.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".json")).unwrap_or_else(|| panic!("{key}"));
    assert!(is_hex16(id), "{key}");
    let now = snapshot(env.lake_root());
    assert_eq!(now.len(), 5);
    assert_eq!(now.keys().filter(|k| !after_complete.contains_key(*k)).collect::<Vec<_>>(), [&key]);
    let body: Value = serde_json::from_slice(&now[&key]).unwrap();
    assert_eq!(body["source_key"], "viewership/broken.csv.gz");
    assert_eq!(body["source_version"], broken.version.as_str());
    assert_eq!(body["size"], broken.size);
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("viewership/broken.csv.gz") && message.contains("unreadable"), "{message}");
}

#[test]
fn a_fresh_lake_stays_empty_when_the_only_object_is_unreadable() {
    for (key, bytes) in [
        ("viewership/cut.csv.gz", {
            let full = gzip(big_csv().as_bytes());
            full[..full.len() - 6].to_vec()
        }),
        ("viewership/plain-text.csv.gz", big_csv().into_bytes()),
        ("viewership/cut.jsonl.gz", {
            let full = gzip("{\"event_id\":\"e1\",\"user_id\":\"u1\",\"channel_id\":\"c1\",\"start_time\":\"2024-03-01T10:00:00Z\",\"duration_seconds\":60}\n{\"event_id\":\"e2\"}\n".repeat(500).as_bytes());
            full[..full.len() / 2].to_vec()
        }),
        ("channels/broken.json", b"[{\"channel_id\":\"c1\",\"channel_name\":\"A\"}, {\"channel_id\": }]".to_vec()),
    ] {
        let env = Env::new();
        let object = env.put(key, &bytes);
        let err = env.ingest(&object).unwrap_err();
        assert!(matches!(err, IngestError::Unreadable { .. }), "{key}: {err:?}");
        assert_eq!(files_under(env.lake_root()), Vec::<String>::new(), "{key}");
        let recorded = record_unreadable(&env.lake, &object, &err).unwrap();
        let source = key.split('/').next().unwrap();
        assert!(recorded.starts_with(&format!("quarantine/{source}/ingest_date={INGEST_DATE}/unreadable-")));
        assert_eq!(files_under(env.lake_root()), [recorded]);
    }
}

/// A raw store whose reads break after `after` bytes of each object, as an
/// S3 body does when its connection is reset part-way.
struct BreaksPartWay<'a> {
    inner: &'a LocalObjectStore,
    after: usize,
}

struct BrokenBody<R> {
    inner: R,
    left: usize,
}

impl<R: std::io::Read> std::io::Read for BrokenBody<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer"));
        }
        let cap = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..cap])?;
        self.left -= n;
        Ok(n)
    }
}

impl ObjectStore for BreaksPartWay<'_> {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix)
    }
    fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.inner.head(key)
    }
    fn open(&self, key: &str) -> Result<Box<dyn std::io::Read + Send + '_>, StoreError> {
        Ok(Box::new(BrokenBody { inner: self.inner.open(key)?, left: self.after }))
    }
    fn create(&self, key: &str) -> Result<Box<dyn ObjectUpload + '_>, StoreError> {
        self.inner.create(key)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key)
    }
}

/// A connection that breaks while an object is read is the store's failure,
/// which a retry may get past: not a fault of the object, which would be
/// quarantined as unreadable and never loaded. Whatever reads the bytes
/// (gzip, CSV, JSON Lines, a JSON array) and wherever it breaks.
#[test]
fn a_read_that_breaks_part_way_is_a_retryable_store_failure_not_a_bad_object() {
    let jsonl = "{\"event_id\":\"e1\",\"user_id\":\"u1\",\"channel_id\":\"c1\",\"start_time\":\"2024-03-01T10:00:00Z\",\"duration_seconds\":60}\n".repeat(2000);
    let channels = format!(
        "[{}]",
        (0..2000)
            .map(|i| format!("{{\"channel_id\":\"c{i}\",\"channel_name\":\"C{i}\"}}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    // big_csv's every tenth record has a bad start time.
    for (key, bytes, accepted) in [
        ("viewership/day.csv", big_csv().into_bytes(), 2700),
        ("viewership/day.csv.gz", gzip(big_csv().as_bytes()), 2700),
        ("viewership/day.jsonl", jsonl.into_bytes(), 2000),
        ("channels/all.json", channels.into_bytes(), 2000),
    ] {
        let env = Env::new();
        let object = env.put(key, &bytes);
        for after in [0, 10, bytes.len() / 2] {
            let raw = BreaksPartWay { inner: &env.raw, after };
            let err = ingest_object(&raw, &object, &env.lake, &IngestOptions::default()).unwrap_err();
            assert!(!err.is_bad_object() && err.is_retryable(), "{key} after {after} bytes: {err:?}");
            match &err {
                IngestError::Store(StoreError::Read { key: read, source }) => {
                    assert_eq!(read, key);
                    assert_eq!(source.kind(), std::io::ErrorKind::ConnectionReset, "{key}");
                }
                other => panic!("{key} after {after} bytes: expected a store read failure, got {other:?}"),
            }
            assert_eq!(files_under(env.lake_root()), Vec::<String>::new(), "{key}: nothing written");
        }
        // Read whole, the same object loads.
        let raw = BreaksPartWay { inner: &env.raw, after: usize::MAX };
        let report = ingest_object(&raw, &object, &env.lake, &IngestOptions::default()).unwrap();
        assert_eq!(report.counts.rows_accepted, accepted, "{key}");
    }
}

// ------------------------------------------------------------------ dimensions

#[test]
fn channels_and_demographics_land_unpartitioned() {
    let env = Env::new();
    let channels = env.put(
        "channels/channels.json",
        br#"[
  {"channel_id": "c1", "channel_name": "News 24", "genre": "news", "network": "N1", "language": "en"},
  {"Channel_ID": "c2", "Channel_Name": " Sport ", "extra": 1},
  {"channel_id": "c3", "genre": "kids"},
  {"channel_id": "c4", "channel_name": ""}
]"#,
    );
    let report = env.ingest(&channels).unwrap();
    assert_eq!(report.source, Source::Channels);
    assert_eq!(report.counts.rows_read, 4);
    assert_eq!(report.counts.rows_accepted, 2);
    assert_eq!(report.counts.quarantined.missing_field, 2);
    assert_eq!(report.counts.quarantined.total(), 2);
    assert_eq!(report.unknown_columns, ["extra"]);
    assert_eq!(report.staged.len(), 1);
    let file = &report.staged[0];
    assert_eq!(file.partition, None);
    assert_eq!(file.rows, 2);
    assert_eq!(file.key, format!("staging/channels/part-{}.parquet", part_id(&file.key)));
    let (schema, batches, _) = read_parquet(&env.lake_root().join(&file.key));
    let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "channel_id",
            "channel_name",
            "genre",
            "network",
            "language",
            "source_key",
            "source_version",
            "source_record_no"
        ]
    );
    assert_eq!(batches.len(), 1);
    let b = &batches[0];
    assert_eq!(text(b, "channel_id", 0).as_deref(), Some("c1"));
    assert_eq!(text(b, "channel_name", 0).as_deref(), Some("News 24"));
    assert_eq!(text(b, "language", 0).as_deref(), Some("en"));
    assert_eq!(text(b, "channel_id", 1).as_deref(), Some("c2"));
    assert_eq!(text(b, "channel_name", 1).as_deref(), Some("Sport"), "values are trimmed");
    assert_eq!(text(b, "genre", 1), None);
    assert_eq!(int(b, "source_record_no", 1), Some(2));
    let q = quarantine_lines(&env, &report);
    assert!(
        report.quarantine_key.as_ref().unwrap().starts_with(&format!("quarantine/channels/ingest_date={INGEST_DATE}/"))
    );
    assert_eq!(q.len(), 2);
    for (line, record_no) in q.iter().zip([3, 4]) {
        assert_eq!(line["reason"], "MISSING_FIELD");
        assert_eq!(line["field"], "channel_name");
        assert_eq!(line["record_no"], record_no);
        assert_eq!(line["source_key"], "channels/channels.json");
    }
    assert!(q[0]["original"].as_str().unwrap().contains("\"kids\""));

    let demographics = env.put(
        "demographics/users.csv",
        b"\xef\xbb\xbfUser_ID , age_band,GENDER,region\r\nu1,18-24,f,north\r\nu2,,,\r\n,25-34,m,south\r\nu4,35-44,x\r\n",
    );
    let report = env.ingest(&demographics).unwrap();
    assert_eq!(report.source, Source::Demographics);
    assert_eq!(report.counts.rows_read, 4);
    assert_eq!(report.counts.rows_accepted, 2);
    assert_eq!(report.counts.quarantined.missing_field, 1);
    assert_eq!(report.counts.quarantined.malformed, 1);
    let file = &report.staged[0];
    assert_eq!(report.staged.len(), 1);
    assert_eq!(file.partition, None);
    assert_eq!(file.key, format!("staging/demographics/part-{}.parquet", part_id(&file.key)));
    let (_, batches, _) = read_parquet(&env.lake_root().join(&file.key));
    let b = &batches[0];
    assert_eq!(b.num_rows(), 2);
    assert_eq!(text(b, "user_id", 0).as_deref(), Some("u1"));
    assert_eq!(text(b, "region", 0).as_deref(), Some("north"));
    assert_eq!(text(b, "user_id", 1).as_deref(), Some("u2"));
    assert_eq!(text(b, "age_band", 1), None, "empty is stored as null");
    let q = quarantine_lines(&env, &report);
    let got: Vec<_> =
        q.iter().map(|l| (l["line"].as_u64().unwrap(), l["reason"].as_str().unwrap().to_owned())).collect();
    assert_eq!(got, [(4, "MISSING_FIELD".to_owned()), (5, "MALFORMED".to_owned())]);
    assert_eq!(q[0]["field"], "user_id");

    // Nothing of either landed under the viewership table.
    assert!(files_under(env.lake_root()).iter().all(|k| !k.contains("viewership")));
}

// ------------------------------------------------------------------ unsupported keys

#[test]
fn keys_of_no_known_source_or_format_are_unsupported() {
    let env = Env::new();
    for key in [
        "misc/a.csv",
        "a.csv",
        "viewership/a.txt",
        "viewership/a.parquet",
        "viewership/a.csv.zip",
        "viewership/noextension",
        "channels/a.gz",
    ] {
        let object = env.put(key, format!("{HEADER}\ne1,u1,,c1,,2024-03-01T10:00:00Z,,60,web\n").as_bytes());
        match env.ingest(&object) {
            Err(e @ IngestError::Unsupported { .. }) => {
                assert!(e.is_bad_object());
                assert!(e.to_string().starts_with(key), "{e}");
            }
            other => panic!("{key}: expected Unsupported, got {other:?}"),
        }
    }
    assert!(files_under(env.lake_root()).is_empty());
}
