//! End-to-end tests of the local pipeline: the `tvetl` binary over generated
//! and hand-written data, checked against the generator's manifest, an
//! independent reference computation, hand-computed answers, and an outside
//! Parquet reader.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tvetl_core::source::format_of;
use tvetl_core::warehouse::{LOAD_VIEWING_SESSIONS_SQL, split_statements};
use tvetl_core::{Compression, InputFormat, Source};

const DAY_US: i64 = 86_400_000_000;

fn tvetl(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tvetl")).args(args).output().expect("tvetl runs");
    assert!(
        out.status.success(),
        "tvetl {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Runs tvetl, expects it to fail, and returns its stderr.
fn tvetl_fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tvetl")).args(args).output().expect("tvetl runs");
    assert!(!out.status.success(), "tvetl {args:?} succeeded:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&tvetl(args)).unwrap_or_else(|e| panic!("tvetl {args:?}: not JSON: {e}"))
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

fn run(input: &Path, lake: &Path) -> Value {
    run_logged(input, lake, &[]).0
}

/// Runs `tvetl run` with the environment variables `env` added, expects it
/// to succeed, and returns its JSON summary and its stderr.
fn run_logged(input: &Path, lake: &Path, env: &[(&str, &str)]) -> (Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tvetl"))
        .args(["run", "--input", path(input), "--lake", path(lake), "--format", "json", "--quiet"])
        .envs(env.iter().copied())
        .output()
        .expect("tvetl runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "tvetl run failed:\n{}\n{stderr}", String::from_utf8_lossy(&out.stdout));
    let summary = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("tvetl run: not JSON: {e}"));
    (summary, stderr)
}

fn top_channels(lake: &Path, date: &str) -> Value {
    json(&["report", "--lake", path(lake), "top-channels", "--date", date, "--limit", "1000", "--format", "json"])
}

fn user_average(lake: &Path) -> Value {
    json(&["report", "--lake", path(lake), "user-average", "--format", "json"])
}

fn day_name(day: i64) -> String {
    tvetl_core::timestamp::format_day(day as i32)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

/// The contract's metrics computed straight from the generator's truth, by
/// plain loops: nothing of the pipeline's code or SQL is used.
struct Reference {
    /// day -> channel -> (watch micros, users)
    channels: BTreeMap<i64, BTreeMap<String, (i64, BTreeSet<String>)>>,
    /// day -> user -> watch micros
    users: BTreeMap<i64, BTreeMap<String, i64>>,
    names: HashMap<String, String>,
}

impl Reference {
    fn from_truth(truth: &Value) -> Reference {
        let mut r = Reference { channels: BTreeMap::new(), users: BTreeMap::new(), names: HashMap::new() };
        for (id, name) in truth["channel_names"].as_object().expect("names") {
            r.names.insert(id.clone(), name.as_str().expect("name").to_owned());
        }
        for s in truth["sessions"].as_array().expect("sessions") {
            let user = s[1].as_str().unwrap().to_owned();
            let channel = s[2].as_str().unwrap().to_owned();
            let (start, end) = (s[3].as_i64().unwrap(), s[4].as_i64().unwrap());
            let mut t = start;
            while t < end {
                let day = t.div_euclid(DAY_US);
                let part_end = end.min((day + 1) * DAY_US);
                let entry = r.channels.entry(day).or_default().entry(channel.clone()).or_default();
                entry.0 += part_end - t;
                entry.1.insert(user.clone());
                *r.users.entry(day).or_default().entry(user.clone()).or_default() += part_end - t;
                t = part_end;
            }
        }
        r
    }

    fn ranking(&self, day: i64) -> Vec<(String, f64, usize)> {
        let mut rows: Vec<_> = self
            .channels
            .get(&day)
            .map(|m| m.iter().map(|(c, (us, users))| (c.clone(), *us, users.len())).collect())
            .unwrap_or_default();
        rows.sort_by(|a: &(String, i64, usize), b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rows.into_iter().map(|(c, us, reach)| (c, us as f64 / 1e6, reach)).collect()
    }
}

fn assert_reports_match(lake: &Path, reference: &Reference) {
    for &day in reference.channels.keys() {
        let date = day_name(day);
        let report = top_channels(lake, &date);
        assert_eq!(report["date"], date.as_str());
        let got = report["channels"].as_array().expect("channels");
        let want = reference.ranking(day);
        assert_eq!(got.len(), want.len(), "{date}: number of channels");
        for (i, (g, (channel, seconds, reach))) in got.iter().zip(&want).enumerate() {
            assert_eq!(g["rank"], i as u64 + 1);
            assert_eq!(g["channel_id"].as_str(), Some(channel.as_str()), "{date}: rank {}", i + 1);
            let watched = g["watch_seconds"].as_f64().unwrap();
            assert!(close(watched, *seconds), "{date} {channel}: {watched} vs {seconds}");
            assert_eq!(g["reach"].as_u64(), Some(*reach as u64), "{date} {channel}: reach");
            let name = reference.names.get(channel).map_or("Unknown", String::as_str);
            assert_eq!(g["channel_name"].as_str(), Some(name), "{date} {channel}: name");
        }
    }
    let averages = user_average(lake);
    let days = averages["days"].as_array().expect("days");
    assert_eq!(days.len(), reference.users.len(), "one row per day with viewing");
    for (got, (day, users)) in days.iter().zip(&reference.users) {
        assert_eq!(got["date"].as_str(), Some(day_name(*day).as_str()));
        assert_eq!(got["active_users"].as_u64(), Some(users.len() as u64));
        let want = users.values().sum::<i64>() as f64 / 1e6 / users.len() as f64;
        let avg = got["avg_watch_seconds_per_user"].as_f64().unwrap();
        assert!(close(avg, want), "{}: {avg} vs {want}", day_name(*day));
    }
}

/// Every lake object (staging, quarantine, catalog, anything else) with its
/// bytes; not the warehouse's folder, whose database file is compared by its
/// rows ([`warehouse_rows`]).
fn snapshot(lake: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p == root.join("_warehouse") {
                continue;
            }
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(lake, lake, &mut out);
    out
}

/// Asserts that two [`snapshot`]s of a lake hold the same files with the
/// same bytes, naming those that differ.
fn assert_same_lake(before: &BTreeMap<PathBuf, Vec<u8>>, after: &BTreeMap<PathBuf, Vec<u8>>, what: &str) {
    let changed: BTreeSet<&PathBuf> =
        before.keys().chain(after.keys()).filter(|k| before.get(*k) != after.get(*k)).collect();
    assert!(changed.is_empty(), "{what}: {changed:?}");
}

/// Asserts that two run summaries have the same counts of the contract's
/// (rows read and accepted, duplicates removed, quarantined per code).
fn assert_same_counts(a: &Value, b: &Value) {
    for field in ["rows_read", "rows_accepted", "duplicates_removed", "quarantined"] {
        assert_eq!(a[field], b[field], "{field}");
    }
}

fn warehouse_rows(lake: &Path) -> Vec<String> {
    let conn = duckdb::Connection::open(lake.join("_warehouse/warehouse.duckdb")).unwrap();
    let mut out = Vec::new();
    for table in [
        "core.viewing_sessions",
        "core.channels",
        "core.users",
        "core.load_ledger",
        "core.load_audit",
        "core.analytics_pending",
        "analytics.daily_channel_viewing",
        "analytics.daily_user_viewing",
    ] {
        let sql = format!(
            "SELECT CAST(COUNT(*) AS VARCHAR) || ':' || CAST(COALESCE(SUM(hash(t)), 0) AS VARCHAR) FROM {table} t"
        );
        let v: String = conn.query_row(&sql, [], |r| r.get(0)).unwrap();
        out.push(format!("{table}={v}"));
    }
    out
}

/// The header line of a raw CSV file, lower-cased, without its BOM.
fn csv_header(file: &Path, compression: Compression) -> String {
    let file = std::fs::File::open(file).unwrap();
    let reader: Box<dyn std::io::Read> = match compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Compression::None => Box::new(file),
    };
    let mut header = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(reader), &mut header).unwrap();
    header.trim_start_matches('\u{feff}').trim_end().to_lowercase()
}

/// The local catalog (`LAKE/_catalog/catalog.json`).
fn catalog(lake: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(lake.join("_catalog/catalog.json")).unwrap()).unwrap()
}

/// `report quarantine` counts every record the run quarantined, per code,
/// lists the files it failed, and its records are the raw files' own text.
fn assert_quarantine_report_accounts_for(lake: &Path, input: &Path, summary: &Value) {
    let report = json(&["report", "--lake", path(lake), "quarantine", "--format", "json"]);
    let dims = &summary["dimensions"];
    let mut total = 0;
    for code in ["MALFORMED", "MISSING_FIELD", "BAD_TIMESTAMP", "BAD_DURATION", "TOO_LONG"] {
        let want = summary["quarantined"][code].as_u64().unwrap()
            + dims["channels"]["quarantined"][code].as_u64().unwrap()
            + dims["demographics"]["quarantined"][code].as_u64().unwrap();
        assert_eq!(report["by_reason"][code].as_u64().unwrap_or(0), want, "{code}");
        total += want;
    }
    assert_eq!(report["records_quarantined"], total);
    let per_object: u64 = report["objects"].as_array().unwrap().iter().map(|o| o["records"].as_u64().unwrap()).sum();
    assert_eq!(per_object, total);
    let unreadable: Vec<&str> =
        report["unreadable"].as_array().unwrap().iter().map(|u| u["source_key"].as_str().unwrap()).collect();
    let failed: Vec<&str> = summary["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "failed")
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(unreadable, failed);

    // The quarantine folders are catalogued tables of JSON lines: every line
    // of every file (rejected records and unreadable objects alike) is one
    // object, and every landing day a registered partition.
    let catalog = catalog(lake);
    let (mut records, mut objects) = (0, 0);
    for source in ["viewership", "channels", "demographics"] {
        let table = &catalog["tables"][format!("quarantine_{source}")];
        assert_eq!(table["format"], "json_lines", "{source}");
        let mut days = Vec::new();
        for day in std::fs::read_dir(lake.join("quarantine").join(source)).unwrap() {
            let day = day.unwrap().path();
            days.push(day.file_name().unwrap().to_str().unwrap().strip_prefix("ingest_date=").unwrap().to_owned());
            for file in std::fs::read_dir(&day).unwrap() {
                let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
                for line in text.lines() {
                    let row: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{source}: {e}: {line}"));
                    if row["reason"].is_string() {
                        records += 1;
                    } else if row["error"].is_string() {
                        objects += 1;
                    } else {
                        panic!("{source}: neither a record nor an unreadable object: {line}");
                    }
                }
            }
        }
        days.sort();
        assert_eq!(table["partitions"], serde_json::json!(days), "{source}");
    }
    assert_eq!((records, objects), (total, failed.len() as u64));

    // One code of one source: its records only, the first by key and record.
    let timestamps = json(&[
        "report",
        "--lake",
        path(lake),
        "quarantine",
        "--source",
        "viewership",
        "--reason",
        "bad_timestamp",
        "--limit",
        "3",
        "--format",
        "json",
    ]);
    assert_eq!(timestamps["records_quarantined"], summary["quarantined"]["BAD_TIMESTAMP"]);
    assert!(timestamps["unreadable"].as_array().unwrap().is_empty());
    let records = timestamps["records"].as_array().unwrap();
    assert_eq!(records.len(), 3);
    let order: Vec<(&str, u64)> =
        records.iter().map(|r| (r["source_key"].as_str().unwrap(), r["record_no"].as_u64().unwrap())).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    for r in records {
        assert_eq!(r["reason"], "BAD_TIMESTAMP");
        let key = r["source_key"].as_str().unwrap();
        if !key.ends_with(".gz") {
            let raw = String::from_utf8_lossy(&std::fs::read(input.join(key)).unwrap()).into_owned();
            assert!(raw.contains(r["original"].as_str().unwrap()), "{key}: {r}");
        }
    }
}

#[test]
fn dirty_data_counts_and_reports_match_the_generator_and_a_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (input, lake, truth) = (dir.path().join("raw"), dir.path().join("lake"), dir.path().join("truth.json"));
    tvetl(&[
        "generate",
        "--out",
        path(&input),
        "--rows",
        "6000",
        "--days",
        "4",
        "--seed",
        "7",
        "--dirty",
        "0.05",
        "--truth",
        path(&truth),
    ]);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(input.join("generator-manifest.json")).unwrap()).unwrap();
    let expected = &manifest["expected"];
    let summary = run(&input, &lake);

    for field in ["rows_read", "rows_accepted", "duplicates_removed"] {
        assert_eq!(summary[field], expected[field], "{field}");
    }
    for code in ["MALFORMED", "MISSING_FIELD", "BAD_TIMESTAMP", "BAD_DURATION", "TOO_LONG"] {
        assert!(expected["quarantined"][code].as_u64().unwrap() > 0, "the generator injects {code}");
        assert_eq!(summary["quarantined"][code], expected["quarantined"][code], "{code}");
    }
    let quarantined: u64 = summary["quarantined"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(summary["rows_read"].as_u64().unwrap(), summary["rows_accepted"].as_u64().unwrap() + quarantined);

    // The truncated file fails alone; everything else loads.
    let files = summary["files"].as_array().unwrap();
    let failed: Vec<_> = files.iter().filter(|f| f["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["key"], manifest["unreadable_files"][0]);
    assert!(failed[0]["error"].as_str().unwrap().contains("sessions-9999-truncated.csv.gz"));
    let keys: Vec<&str> = files.iter().map(|f| f["key"].as_str().unwrap()).collect();
    let objects: Vec<&str> = manifest["objects"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(keys, objects, "every object generated is in the summary, once");
    assert_eq!(files.iter().filter(|f| f["status"] == "loaded").count(), objects.len() - 1);

    // Each CSV file lists the columns of its header that are not fields,
    // and the run lists every one of them.
    let mut with_extra = 0;
    for f in files.iter().filter(|f| f["status"] == "loaded") {
        let key = f["key"].as_str().unwrap();
        let listed: Vec<&str> =
            f["unknown_columns"].as_array().map_or(Vec::new(), |a| a.iter().map(|c| c.as_str().unwrap()).collect());
        for column in &listed {
            assert!(summary["unknown_columns"].as_array().unwrap().iter().any(|c| c == column), "{key}: {column}");
        }
        let (Some(Source::Viewership), Some((InputFormat::Csv, compression))) = (Source::from_key(key), format_of(key))
        else {
            continue;
        };
        let header = csv_header(&input.join(key), compression);
        let extra: Vec<&str> = header.split(',').filter(|c| !Source::Viewership.fields().contains(c)).collect();
        assert_eq!(listed, extra, "{key}");
        with_extra += usize::from(!extra.is_empty());
    }
    assert!(with_extra > 0, "the generator adds an unknown column to some CSV file");

    // Dimensions: one bad record each, quarantined.
    assert_eq!(summary["dimensions"]["channels"]["quarantined"]["MISSING_FIELD"], expected["channels_quarantined"]);
    assert_eq!(
        summary["dimensions"]["demographics"]["quarantined"]["MISSING_FIELD"],
        expected["demographics_quarantined"]
    );

    assert_quarantine_report_accounts_for(&lake, &input, &summary);

    let truth: Value = serde_json::from_slice(&std::fs::read(&truth).unwrap()).unwrap();
    let reference = Reference::from_truth(&truth);
    assert!(reference.names["ch003"].ends_with(" HD"), "the generator renames ch003 in a later file");
    assert_reports_match(&lake, &reference);

    // An outside reader sees the Hive partitions and exactly the accepted rows.
    let conn = duckdb::Connection::open_in_memory().unwrap();
    let glob = lake.join("staging/viewership/*/*.parquet");
    let sql = format!(
        "SELECT COUNT(*), COUNT(DISTINCT event_date), \
         COUNT(*) FILTER (WHERE CAST(event_date AS VARCHAR) <> CAST(CAST(CAST(start_time AS TIMESTAMP) AS DATE) AS VARCHAR)) \
         FROM read_parquet('{}', hive_partitioning = true)",
        glob.display()
    );
    let (rows, partitions, misplaced): (i64, i64, i64) =
        conn.query_row(&sql, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
    assert_eq!(rows as u64, summary["rows_accepted"].as_u64().unwrap());
    assert_eq!(partitions, 4, "4 days of starts");
    assert_eq!(misplaced, 0, "every row sits in the partition of its start day");
}

/// Many small raw files (a set-top box's upload each) stage more files than
/// one copy statement reads (the local warehouse's `FILES_PER_COPY`, 500), so
/// the load fills staging in several statements; counts, duplicates across
/// those statements and both reports must come out as from a few large files.
#[test]
fn many_small_files_load_over_several_copy_statements_with_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (input, lake, truth) = (dir.path().join("raw"), dir.path().join("lake"), dir.path().join("truth.json"));
    #[rustfmt::skip]
    tvetl(&["generate", "--out", path(&input), "--rows", "3000", "--rows-per-file", "5", "--days", "2",
        "--seed", "5", "--dirty", "0.04", "--truth", path(&truth)]);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(input.join("generator-manifest.json")).unwrap()).unwrap();
    let (summary, timings) = run_logged(&input, &lake, &[("TVETL_SQL_TIMINGS", "1")]);

    let staged = snapshot(&lake).keys().filter(|k| k.starts_with("staging/viewership/")).count();
    let copies = timings.matches("INSERT INTO staging_viewing_sessions SELECT").count();
    assert!(staged > 2 * 500, "{staged} staged files");
    assert_eq!(copies, staged.div_ceil(500), "{staged} staged files in copy statements of at most 500");

    let expected = &manifest["expected"];
    assert_same_counts(&summary, expected);
    assert!(expected["duplicates_removed"].as_u64().unwrap() > 0, "re-deliveries across files");
    assert_eq!(summary["loads"]["viewership"]["rows_staged"], summary["rows_accepted"]);
    let truth: Value = serde_json::from_slice(&std::fs::read(&truth).unwrap()).unwrap();
    assert_reports_match(&lake, &Reference::from_truth(&truth));
}

#[test]
fn running_twice_changes_nothing() {
    let (_dir, input, lake) = workspace();
    tvetl(&["generate", "--out", path(&input), "--rows", "3000", "--days", "3", "--seed", "11", "--dirty", "0.04"]);
    let first = run(&input, &lake);
    let objects = snapshot(&lake);
    assert!(objects.keys().any(|k| k.starts_with("staging/viewership")));
    assert!(objects.keys().any(|k| k.starts_with("quarantine/viewership")));
    let rows = warehouse_rows(&lake);
    let reports = (top_channels(&lake, "2024-01-02"), user_average(&lake));

    let second = run(&input, &lake);
    assert_same_lake(&objects, &snapshot(&lake), "a rerun added, removed or changed lake objects");
    assert_eq!(warehouse_rows(&lake), rows, "same warehouse rows");
    assert_eq!((top_channels(&lake, "2024-01-02"), user_average(&lake)), reports);
    assert_same_counts(&first, &second);
    assert_eq!(second["loads"]["viewership"]["rows_merged"], 0, "nothing new to merge");
    assert_eq!(second["loads"]["viewership"]["rows_already_loaded"], first["loads"]["viewership"]["rows_staged"]);
}

/// The files of a run's summary that it did not read again, and those it read.
fn unchanged_and_read(summary: &Value) -> (Vec<String>, Vec<String>) {
    let loaded = summary["files"].as_array().unwrap().iter().filter(|f| f["status"] == "loaded");
    let (unchanged, read): (Vec<&Value>, Vec<&Value>) = loaded.partition(|f| f["unchanged"] == true);
    let keys = |files: Vec<&Value>| files.iter().map(|f| f["key"].as_str().unwrap().to_owned()).collect();
    (keys(unchanged), keys(read))
}

#[test]
fn a_rerun_reads_only_new_and_changed_files_and_reports_every_files_counts() {
    let (dir, input, lake) = workspace();
    tvetl(&["generate", "--out", path(&input), "--rows", "3000", "--days", "3", "--seed", "17", "--dirty", "0.04"]);
    let jsonl = "viewership/sessions-0004.jsonl".to_owned();
    let file = input.join(&jsonl);
    let truncated = input.join("viewership/sessions-9999-truncated.csv.gz");
    // Files that landed long before the run: a time that old vouches for
    // the content (a file of the last few seconds is hashed instead). A
    // fixed time, not one an hour ago: the unreadable file's record sits
    // under the day of its time (ingest_date), which its rewrite below must
    // keep, as an hour ago and now do not between midnight and 1 am UTC.
    let landed = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_717_243_200); // 2024-06-01T12:00:00Z
    let set_modified = |file: &Path, at: std::time::SystemTime| {
        std::fs::File::options().write(true).open(file).unwrap().set_modified(at).unwrap();
    };
    set_modified(&file, landed);
    set_modified(&truncated, landed);
    let first = run(&input, &lake);
    let (unchanged, loaded) = unchanged_and_read(&first);
    assert!(unchanged.is_empty() && loaded.contains(&jsonl), "{first}");
    let objects = snapshot(&lake);
    assert!(lake.join("_warehouse/ingested.json").is_file());
    let rows = warehouse_rows(&lake);

    // Not read at all: a file whose size, times and change time are as they
    // were is taken to be the same. The same goes for a file an earlier run
    // found unreadable (truncated).
    let original = std::fs::read(&file).unwrap();
    let truncated_bytes = std::fs::read(&truncated).unwrap();
    let (second, timings) = run_logged(&input, &lake, &[("TVETL_SQL_TIMINGS", "1")]);
    assert_eq!(unchanged_and_read(&second), (loaded.clone(), vec![]), "every file skipped");
    // Sessions loaded before are not staged: every file the ledger lists is
    // in the input, so core's ids are theirs, and they are tallied there.
    let (full, thin, tally) = (
        "INSERT INTO staging_viewing_sessions SELECT *",
        "INSERT INTO staging_viewing_sessions (event_id,",
        "CREATE OR REPLACE TEMP TABLE loaded_tally",
    );
    assert!(!timings.contains(full) && !timings.contains(thin) && timings.contains(tally), "{timings}");
    assert_same_counts(&first, &second);
    let mut expected = first["files"].clone();
    for f in expected.as_array_mut().unwrap() {
        f["unchanged"] = Value::Bool(true);
    }
    assert_eq!(second["files"], expected, "each file's recorded counts, and the truncated file's error");
    assert!(expected.as_array().unwrap().iter().any(|f| f["status"] == "failed"), "{expected}");
    assert_same_lake(&objects, &snapshot(&lake), "skipping files changed the lake");
    assert_eq!(warehouse_rows(&lake), rows);

    // The same bytes at a new time (later that day): read for their hash,
    // and skipped; and a skipped file's tables and partitions are catalogued
    // again if the catalog was lost.
    let later_that_day = landed + std::time::Duration::from_secs(3600);
    std::fs::write(&file, &original).unwrap();
    std::fs::write(&truncated, &truncated_bytes).unwrap();
    set_modified(&file, later_that_day);
    set_modified(&truncated, later_that_day);
    std::fs::remove_file(lake.join("_catalog/catalog.json")).unwrap();
    assert_eq!(unchanged_and_read(&run(&input, &lake)).1, Vec::<String>::new());
    assert_same_lake(&objects, &snapshot(&lake), "the catalog differs");

    // A changed file (its last record dropped) and a new one are read.
    let text = String::from_utf8(original).unwrap();
    let shorter = &text[..text.trim_end().rfind('\n').unwrap() + 1];
    std::fs::write(&file, shorter).unwrap();
    write_sessions(
        &input,
        "viewership/zz-late.csv",
        &["late-1,u-late,ch-late,2024-01-02T10:00:00Z,2024-01-02T11:00:00Z"],
    );
    // The changed file's earlier version is in the ledger and not in the
    // input, so the files loaded before are staged for their ids alone.
    let (third, timings) = run_logged(&input, &lake, &[("TVETL_SQL_TIMINGS", "1")]);
    assert!(timings.contains(full) && timings.contains(thin) && !timings.contains(tally), "{timings}");
    let (_, read) = unchanged_and_read(&third);
    assert_eq!(read, [jsonl.clone(), "viewership/zz-late.csv".to_owned()]);
    let (dropped, added) = (1, 1);
    assert_eq!(third["rows_read"].as_u64(), Some(first["rows_read"].as_u64().unwrap() - dropped + added));
    let top = top_channels(&lake, "2024-01-02");
    assert!(top["channels"].as_array().unwrap().iter().any(|c| c["channel_id"] == "ch-late"), "{top}");

    // A staging file gone from the lake: its object is read again, and it
    // comes back as it was.
    let staged = snapshot(&lake).into_iter().find(|(k, _)| k.starts_with("staging/viewership/")).unwrap();
    std::fs::remove_file(lake.join(&staged.0)).unwrap();
    let fourth = run(&input, &lake);
    assert_eq!(unchanged_and_read(&fourth).1.len(), 1, "the object that wrote it: {fourth}");
    assert_eq!(std::fs::read(lake.join(&staged.0)).unwrap(), staged.1);
    assert_same_counts(&third, &fourth);

    // --reingest reads everything, to the same lake and counts; so does a
    // fresh lake.
    let objects = snapshot(&lake);
    let again =
        json(&["run", "--input", path(&input), "--lake", path(&lake), "--quiet", "--format", "json", "--reingest"]);
    assert_eq!(unchanged_and_read(&again).0, Vec::<String>::new());
    assert_same_counts(&third, &again);
    assert_same_lake(&objects, &snapshot(&lake), "--reingest changed the lake");
    assert_same_counts(&third, &run(&input, &dir.path().join("fresh")));
}

/// A catalog file cut short or overwritten is rebuilt from the lake's
/// staging and quarantine files, with a word on stderr, and the run goes on
/// as it would have: the damage used to fail every file's registration, so
/// that a run loaded nothing and exited 0. Rebuilt from the lake, the
/// catalog keeps the partitions of a file no longer in the landing folder,
/// which registering this run's files again would not.
#[test]
fn a_damaged_catalog_is_rebuilt_from_the_lake_and_the_run_goes_on() {
    let (dir, input, lake) = workspace();
    tvetl(&["generate", "--out", path(&input), "--rows", "2000", "--days", "2", "--seed", "23", "--dirty", "0.05"]);
    run(&input, &lake);
    // A landed file moved away keeps its staging files and partitions.
    std::fs::rename(input.join("viewership/sessions-0001.csv"), dir.path().join("moved.csv")).unwrap();
    let before = run(&input, &lake);
    let (objects, rows) = (snapshot(&lake), warehouse_rows(&lake));
    let catalog_file = lake.join("_catalog/catalog.json");
    let whole = std::fs::read(&catalog_file).unwrap();
    let cut_short = whole[..whole.len() / 2].to_vec();
    for damaged in [cut_short, b"garbage".to_vec(), b"{}".to_vec(), Vec::new()] {
        std::fs::write(&catalog_file, &damaged).unwrap();
        let (after, stderr) = run_logged(&input, &lake, &[]);
        assert!(stderr.contains("rebuilt it from the lake's staging and quarantine files"), "{stderr}");
        assert!(stderr.contains(path(&catalog_file)), "{stderr}");
        assert_eq!(after["files"], before["files"], "{}", String::from_utf8_lossy(&damaged));
        assert_same_counts(&before, &after);
        assert_same_lake(&objects, &snapshot(&lake), "the rebuilt catalog differs");
        assert_eq!(warehouse_rows(&lake), rows);
    }
    // A new file loads beside the rebuild.
    std::fs::write(&catalog_file, b"garbage").unwrap();
    write_sessions(
        &input,
        "viewership/zz-late.csv",
        &["late-1,u-late,ch-late,2024-01-02T10:00:00Z,2024-01-02T11:00:00Z"],
    );
    let (after, _) = run_logged(&input, &lake, &[]);
    let late = after["files"].as_array().unwrap().iter().find(|f| f["key"] == "viewership/zz-late.csv").unwrap();
    assert_eq!(late["status"], "loaded", "{after}");
    assert_eq!(after["rows_read"].as_u64(), Some(before["rows_read"].as_u64().unwrap() + 1));

    // The warehouse lost: built again from the landing folder, which no
    // longer holds the moved file, and the run says how many staging files
    // that leaves out (those a fresh lake of the folder lacks). Put back,
    // the file brings its sessions back.
    let sessions = core_sessions(&lake).0;
    let fresh = dir.path().join("fresh");
    run(&input, &fresh);
    let of_the_folder = snapshot(&fresh);
    let left_out =
        snapshot(&lake).into_keys().filter(|k| k.starts_with("staging/") && !of_the_folder.contains_key(k)).count();
    assert!(left_out > 0);
    std::fs::remove_file(lake.join("_warehouse/warehouse.duckdb")).unwrap();
    let (_, stderr) = run_logged(&input, &lake, &[]);
    let said = format!("{left_out} staging file(s) of the lake, such as staging/viewership/");
    assert!(stderr.contains("no warehouse at") && stderr.contains(&said), "{stderr}");
    assert!(core_sessions(&lake).0 < sessions);
    std::fs::rename(dir.path().join("moved.csv"), input.join("viewership/sessions-0001.csv")).unwrap();
    let (_, stderr) = run_logged(&input, &lake, &[]);
    assert!(!stderr.contains("no warehouse at"), "{stderr}");
    assert_eq!(core_sessions(&lake).0, sessions);
}

/// A staging file damaged in place, to other bytes of its size (which the
/// sizes the ingest recorded do not tell), fails a load that reads it, and
/// the error names the file and what writes it again: `--reingest`, after
/// which the lake and the reports are as they were.
#[test]
fn a_damaged_staging_file_that_a_load_reads_fails_the_run_with_the_way_out() {
    let (_dir, input, lake) = workspace();
    tvetl(&["generate", "--out", path(&input), "--rows", "2000", "--days", "2", "--seed", "29", "--dirty", "0.03"]);
    run(&input, &lake);
    let (objects, top) = (snapshot(&lake), top_channels(&lake, "2024-01-01"));
    let (staged, bytes) = objects.iter().find(|(key, _)| key.starts_with("staging/viewership/")).unwrap();
    std::fs::write(lake.join(staged), vec![0u8; bytes.len()]).unwrap();
    // With the warehouse lost, the next run loads every staging file again.
    std::fs::remove_file(lake.join("_warehouse/warehouse.duckdb")).unwrap();
    let stderr = tvetl_fails(&["run", "--input", path(&input), "--lake", path(&lake), "--quiet"]);
    assert!(!stderr.contains("no warehouse at"), "every staging file is the landing folder's: {stderr}");
    let way_out = "`tvetl run --reingest` writes every staging file again from the landing folder's files";
    assert!(stderr.contains(way_out) && stderr.contains(staged.to_str().unwrap()), "{stderr}");
    json(&["run", "--input", path(&input), "--lake", path(&lake), "--quiet", "--format", "json", "--reingest"]);
    assert_same_lake(&objects, &snapshot(&lake), "--reingest left the lake otherwise");
    assert_eq!(top_channels(&lake, "2024-01-01"), top);
}

/// A corrected file of the same size given the old file's modification time
/// back (as `touch -d`, `cp -p` or an archive extracted again leave it) is
/// read again: its inode change time is new.
#[test]
fn a_corrected_file_given_its_old_time_back_is_read_again() {
    let (_dir, input, lake) = workspace();
    let landed = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let deliver = |channel: &str| {
        write_sessions(
            &input,
            "viewership/a.csv",
            &[&format!("x1,u1,{channel},2024-03-10T06:00:00Z,2024-03-10T06:30:00Z")],
        );
        let file = std::fs::File::options().write(true).open(input.join("viewership/a.csv")).unwrap();
        file.set_modified(landed).unwrap();
    };
    deliver("c4");
    run(&input, &lake);
    // The kernel's file clock ticks every few milliseconds: rewritten until
    // the change time moves (on the first try, unless the clock is coarse).
    let changed = || {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(input.join("viewership/a.csv")).unwrap();
        (m.ctime(), m.ctime_nsec())
    };
    let first_change = changed();
    for _ in 0..300 {
        std::thread::sleep(std::time::Duration::from_millis(10));
        deliver("c6");
        if changed() != first_change {
            break;
        }
    }
    assert_ne!(changed(), first_change, "the file's change time never moved");
    let second = run(&input, &lake);
    assert_eq!(unchanged_and_read(&second), (vec![], vec!["viewership/a.csv".to_owned()]), "{second}");
    let top = ranking(&top_channels(&lake, "2024-03-10"));
    assert_eq!(top.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), ["c6"], "{top:?}");
}

/// A correction undone: a file put back to content a run loaded before is
/// delivered again, and the later run wins, for sessions and for channel
/// names alike. (Its staging files have the names and lineage of the first
/// time, which the ledger lists as loaded.) Running once more changes
/// nothing.
#[test]
fn a_file_put_back_to_what_it_held_before_a_correction_wins_again() {
    let (_dir, input, lake) = workspace();
    let deliver = |end: &str, name: &str| {
        write_sessions(&input, "viewership/s.csv", &[&format!("e1,u1,c1,2024-01-01T10:00:00Z,{end}")]);
        write(&input, "channels/ch.json", format!(r#"[{{"channel_id":"c1","channel_name":"{name}"}}]"#).as_bytes());
    };
    let top = |lake: &Path| ranking(&top_channels(lake, "2024-01-01"));
    deliver("2024-01-01T11:00:00Z", "Old Name");
    run(&input, &lake);
    assert_eq!(top(&lake), [(s("c1"), s("Old Name"), 3600.0, 1)]);
    deliver("2024-01-01T10:10:00Z", "New Name");
    run(&input, &lake);
    assert_eq!(top(&lake), [(s("c1"), s("New Name"), 600.0, 1)]);

    deliver("2024-01-01T11:00:00Z", "Old Name");
    let reverted = run(&input, &lake);
    assert_eq!(top(&lake), [(s("c1"), s("Old Name"), 3600.0, 1)], "{reverted}");
    let sessions = &reverted["loads"]["viewership"];
    assert_eq!((sessions["rows_already_loaded"].as_u64(), sessions["rows_merged"].as_u64()), (Some(0), Some(1)));

    let again = run(&input, &lake);
    assert_eq!(top(&lake), [(s("c1"), s("Old Name"), 3600.0, 1)]);
    assert_eq!(again["loads"]["viewership"]["rows_merged"], 0, "{again}");
    // What a fresh lake over the same files holds.
    let fresh = input.parent().unwrap().join("fresh");
    run(&input, &fresh);
    assert_eq!(top(&fresh), top(&lake));
}

/// A version of a file that staged nothing (its rows all rejected, none,
/// or the file unreadable) is a version all the same: the content before it, put back, is
/// delivered again and wins over a file loaded in between. And the run
/// that puts content back counts duplicates over its input as a rerun and
/// a fresh lake do, though core still holds sessions of that content's
/// first load.
#[test]
fn a_file_put_back_after_a_version_that_staged_nothing_wins_and_counts_as_a_rerun_does() {
    let (dir, input, lake) = workspace();
    let top = |day: &str| ranking(&top_channels(&lake, day));
    let first =
        ["e1,u1,c1,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z", "e5,u5,c5,2024-01-01T12:00:00Z,2024-01-01T12:30:00Z"];
    write_sessions(&input, "viewership/a.csv", &first);
    write(&input, "channels/ch.json", br#"[{"channel_id":"c1","channel_name":"One"}]"#);
    write(&input, "channels/nine.json", br#"[{"channel_id":"c9","channel_name":"Nine"}]"#);
    run(&input, &lake);
    // a.csv now holds a rejected row only, ch.json a channel without its
    // name, nine.json cannot be read; b.csv re-delivers e1 and another file
    // names c1 and c9.
    write_sessions(&input, "viewership/a.csv", &["e1,u1,c1,not-a-time,2024-01-01T11:00:00Z"]);
    write_sessions(&input, "viewership/b.csv", &["e1,u1,c2,2024-01-01T10:00:00Z,2024-01-01T10:10:00Z"]);
    write(&input, "channels/ch.json", br#"[{"channel_id":"c1","channel_name":""}]"#);
    write(&input, "channels/nine.json", br#"[{"channel_id":"c9","#);
    write(
        &input,
        "channels/other.json",
        br#"[{"channel_id":"c1","channel_name":"Two"},{"channel_id":"c9","channel_name":"Ninety"}]"#,
    );
    run(&input, &lake);
    let nine = || {
        tvetl(&[
            "sql",
            "--lake",
            path(&lake),
            "--format",
            "csv",
            "SELECT channel_name FROM core.channels WHERE channel_id = 'c9'",
        ])
    };
    assert_eq!(nine(), "channel_name\nNinety\n");
    assert_eq!(top("2024-01-01"), [(s("c5"), s("Unknown"), 1800.0, 1), (s("c2"), s("Unknown"), 600.0, 1)]);

    // Both put back: the later run's e1 and name win.
    write_sessions(&input, "viewership/a.csv", &first);
    write(&input, "channels/ch.json", br#"[{"channel_id":"c1","channel_name":"One"}]"#);
    write(&input, "channels/nine.json", br#"[{"channel_id":"c9","channel_name":"Nine"}]"#);
    let put_back = run(&input, &lake);
    assert_eq!(top("2024-01-01"), [(s("c1"), s("One"), 3600.0, 1), (s("c5"), s("Unknown"), 1800.0, 1)]);
    assert_eq!(nine(), "channel_name\nNine\n");
    // e1 is delivered twice in the input (a.csv, b.csv); e5 once.
    assert_eq!(put_back["duplicates_removed"], 1, "{put_back}");
    let again = run(&input, &lake);
    assert_eq!(again["duplicates_removed"], 1);
    assert_eq!(again["loads"]["viewership"]["rows_merged"], 0);
    assert_eq!(run(&input, &dir.path().join("fresh"))["duplicates_removed"], 1);
}

/// A landing folder that keeps every day's files: each run sees the earlier
/// days again, whose sessions it does not stage, and still counts the
/// duplicates of its whole input, among the earlier files, within the new
/// ones and between them, as a first run over the same files does. A lake
/// also loaded from elsewhere counts them over its input alone.
#[test]
fn a_landing_folders_duplicates_are_counted_over_every_file_without_staging_the_loaded_ones() {
    let (dir, input, lake) = workspace();
    // (event id, user, channel, hour): a half-hour session on 2024-01-01.
    let write_day = |root: &Path, key: &str, rows: &[(&str, &str, &str, u32)]| {
        let rows: Vec<String> = rows
            .iter()
            .map(|(id, user, channel, hour)| {
                format!("{id},{user},{channel},2024-01-01T{hour:02}:00:00Z,2024-01-01T{hour:02}:30:00Z")
            })
            .collect();
        write_sessions(root, key, &rows.iter().map(String::as_str).collect::<Vec<_>>());
    };
    // Day 1: e1 twice in one file, e2 in both files. 6 rows, 4 ids.
    write_day(
        &input,
        "viewership/day-1/a.csv",
        &[("e1", "u1", "ch1", 1), ("e2", "u2", "ch1", 2), ("e3", "u3", "ch2", 3), ("e1", "u1", "ch1", 4)],
    );
    write_day(&input, "viewership/day-1/b.csv", &[("e2", "u2", "ch2", 5), ("e4", "u4", "ch2", 6)]);
    let first = run(&input, &lake);
    assert_eq!((first["rows_accepted"].as_u64(), first["duplicates_removed"].as_u64()), (Some(6), Some(2)));

    // Day 2 lands beside it: e3 delivered again, e5 twice. 10 rows, 6 ids.
    write_day(
        &input,
        "viewership/day-2/c.csv",
        &[("e3", "u3", "ch1", 7), ("e5", "u5", "ch1", 8), ("e6", "u6", "ch2", 9), ("e5", "u5", "ch2", 10)],
    );
    let (second, timings) = run_logged(&input, &lake, &[("TVETL_SQL_TIMINGS", "1")]);
    assert_eq!((second["rows_accepted"].as_u64(), second["duplicates_removed"].as_u64()), (Some(10), Some(4)));
    let load = &second["loads"]["viewership"];
    assert_eq!((load["rows_staged"].as_u64(), load["rows_already_loaded"].as_u64()), (Some(10), Some(6)));
    assert_eq!(load["rows_merged"], 3, "e3 replaced, e5 and e6 added: {load}");
    // Only day 2's file was staged, whole; day 1's were tallied in core.
    let staged: Vec<&str> = timings
        .lines()
        .filter(|l| l.contains("INSERT INTO staging_viewing_sessions") && l.contains("read_parquet"))
        .collect();
    assert_eq!(staged.len(), 1, "{timings}");
    assert!(staged[0].contains("SELECT *") && timings.contains("loaded_tally"), "{timings}");

    // The same as one run over both days into a fresh lake: counts, core
    // and the reports. The later deliveries win: e3 of day 2 on ch1, e5's
    // second record on ch2, e2 of b.csv on ch2.
    let fresh = dir.path().join("fresh");
    let once = run(&input, &fresh);
    assert_same_counts(&second, &once);
    assert_eq!(core_sessions(&lake), core_sessions(&fresh));
    let top = top_channels(&lake, "2024-01-01");
    assert_eq!(top, top_channels(&fresh, "2024-01-01"));
    let reach: Vec<(String, u64)> = ranking(&top).into_iter().map(|(id, _, _, reach)| (id, reach)).collect();
    assert_eq!(reach, [(s("ch2"), 4), (s("ch1"), 2)]);

    // a.csv corrected: the same sessions, e1 now on ch2. Its first version
    // is in the ledger and no longer in the input, and core holds e1 as it
    // delivered it last, so the files loaded before are staged thin. Once
    // the correction is loaded, core holds nothing the first version
    // delivered last, and the next run tallies again. Both count what a
    // fresh lake counts over the same files.
    let (thin, tally) = ("INSERT INTO staging_viewing_sessions (event_id,", "loaded_tally");
    write_day(
        &input,
        "viewership/day-1/a.csv",
        &[("e1", "u1", "ch1", 1), ("e2", "u2", "ch1", 2), ("e3", "u3", "ch2", 3), ("e1", "u1", "ch2", 4)],
    );
    let fresh_counts = run(&input, &dir.path().join("fresh-corrected"));
    let (corrected, timings) = run_logged(&input, &lake, &[("TVETL_SQL_TIMINGS", "1")]);
    assert!(timings.contains(thin) && !timings.contains(tally), "{timings}");
    assert_same_counts(&corrected, &fresh_counts);
    let (again, timings) = run_logged(&input, &lake, &[("TVETL_SQL_TIMINGS", "1")]);
    assert!(!timings.contains(thin) && timings.contains(tally), "{timings}");
    assert_same_counts(&again, &fresh_counts);
    assert_eq!(again["loads"]["viewership"]["rows_already_loaded"], 10);

    // A run over another folder that holds one of day 1's files and a new
    // one: the ledger lists files that are not in its input, so core also
    // holds ids this input lacks. Its files loaded before are staged for
    // their ids, and it counts what a fresh lake counts for its input.
    let other = dir.path().join("other");
    std::fs::create_dir_all(other.join("viewership/day-1")).unwrap();
    std::fs::copy(input.join("viewership/day-1/b.csv"), other.join("viewership/day-1/b.csv")).unwrap();
    // e4 again (in b.csv), e1 (in core, not in this input) and a new e7: 5
    // rows, 4 ids.
    write_day(
        &other,
        "viewership/day-3/d.csv",
        &[("e4", "u4", "ch1", 11), ("e1", "u1", "ch2", 12), ("e7", "u7", "ch1", 13)],
    );
    let (third, timings) = run_logged(&other, &lake, &[("TVETL_SQL_TIMINGS", "1")]);
    assert!(timings.contains(thin) && !timings.contains(tally), "{timings}");
    assert_eq!((third["rows_accepted"].as_u64(), third["duplicates_removed"].as_u64()), (Some(5), Some(1)));
    assert_same_counts(&third, &run(&other, &dir.path().join("fresh-other")));
}

#[test]
fn a_rerun_removes_what_a_run_killed_while_writing_left_and_loads_the_same() {
    use std::io::Write;
    use tvetl_core::store::{LocalObjectStore, ObjectStore};
    let (_dir, input, lake) = workspace();
    tvetl(&["generate", "--out", path(&input), "--rows", "2000", "--days", "2", "--seed", "5", "--dirty", "0.04"]);
    let first = run(&input, &lake);
    let objects = snapshot(&lake);
    let rows = warehouse_rows(&lake);

    // What a run killed while writing leaves behind: each upload's
    // temporary file, half written (no drop runs to remove it), beside a
    // staged file, in a partition folder of its own, and in the quarantine.
    let staged = objects.keys().find(|k| k.to_str().unwrap().starts_with("staging/viewership/event_date=")).unwrap();
    let store = LocalObjectStore::new(&lake);
    for key in [
        staged.to_str().unwrap(),
        "staging/viewership/event_date=2030-01-01/part-0123456789abcdef.parquet",
        "quarantine/viewership/ingest_date=2030-01-01/part-0123456789abcdef.jsonl",
    ] {
        let mut upload = store.create(key).unwrap();
        upload.write_all(b"PAR1, then nothing").unwrap();
        std::mem::forget(upload);
    }
    assert_eq!(snapshot(&lake).len(), objects.len() + 3);

    let (second, stderr) = run_logged(&input, &lake, &[]);
    assert!(
        stderr.contains("removed 2 unfinished file(s)") && stderr.contains("removed 1 unfinished file(s)"),
        "{stderr}"
    );
    assert_same_lake(&objects, &snapshot(&lake), "the lake differs from the uninterrupted run's");
    assert!(!lake.join("staging/viewership/event_date=2030-01-01").exists());
    assert!(!lake.join("quarantine/viewership/ingest_date=2030-01-01").exists());
    assert_eq!(warehouse_rows(&lake), rows);
    assert_same_counts(&first, &second);
}

#[test]
fn the_generator_gives_the_same_bytes_for_the_same_seed() {
    let dir = tempfile::tempdir().unwrap();
    let generate = |name: &str, seed: &str| {
        let out = dir.path().join(name);
        tvetl(&["generate", "--out", path(&out), "--rows", "2000", "--days", "2", "--seed", seed, "--dirty", "0.05"]);
        snapshot(&out)
    };
    let first = generate("a", "5");
    assert!(first.keys().any(|k| k.starts_with("viewership")), "{:?}", first.keys());
    assert!(first.keys().any(|k| k.extension().is_some_and(|e| e == "gz")), "a gzip file among {:?}", first.keys());
    let again = generate("b", "5");
    let differ: Vec<&PathBuf> = first.keys().chain(again.keys()).filter(|k| first.get(*k) != again.get(*k)).collect();
    assert!(differ.is_empty(), "the same seed gave other files or bytes: {differ:?}");
    assert_ne!(generate("c", "6"), first, "another seed gives other data");
}

/// A second generate into the same folder replaces the first one's files,
/// even when it writes fewer: the folder then holds what its manifest lists
/// and a run reads only the new data. A raw file of the user's is never
/// removed; the generation is refused instead.
#[test]
fn generate_replaces_its_earlier_output_and_refuses_foreign_files() {
    let (_dir, input, lake) = workspace();
    let generate = |rows: &str, dirty: &str| {
        tvetl(&["generate", "--out", path(&input), "--rows", rows, "--rows-per-file", "250", "--dirty", dirty]);
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(input.join("generator-manifest.json")).unwrap()).unwrap();
        let on_disk: BTreeSet<String> = snapshot(&input)
            .into_keys()
            .map(|p| p.to_str().unwrap().to_owned())
            .filter(|k| k != "generator-manifest.json")
            .collect();
        let listed: BTreeSet<String> =
            manifest["objects"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_owned()).collect();
        assert_eq!(on_disk, listed, "the folder holds exactly what the manifest lists");
        (manifest, on_disk)
    };
    let (_, big) = generate("2000", "0.05");
    assert!(big.contains("viewership/sessions-0008.csv") && big.contains("viewership/sessions-9999-truncated.csv.gz"));
    let (small_manifest, small) = generate("600", "0");
    assert_eq!(small.iter().filter(|k| k.starts_with("viewership/")).count(), 3, "{small:?}");
    assert!(!small.contains("channels/updates/channels-update-0001.jsonl"), "{small:?}");
    let summary = run(&input, &lake);
    assert_eq!(summary["rows_read"], small_manifest["records_written"]);
    assert_eq!(summary["rows_accepted"], 600);

    // What a generate killed while writing one of its files left is its
    // own, and goes with the rest.
    write(&input, "viewership/.sessions-0001.csv.tmp-4242", b"event_id,user_id");
    generate("600", "0");

    // Anyone else's file is refused: one named like tvetl's temporary
    // files (which run reads as any other), and one not named in UTF-8.
    for (name, shown) in
        [(&b".mine.csv.tmp-42"[..], ".mine.csv.tmp-42"), (b"m\xefne.csv", "m\\xefne.csv"), (b"mine.csv", "mine.csv")]
    {
        use std::os::unix::ffi::OsStrExt;
        let file = input.join("viewership").join(std::ffi::OsStr::from_bytes(name));
        std::fs::write(&file, b"event_id,user_id,channel_id,start_time,duration_seconds\n").unwrap();
        let before = snapshot(&input);
        let stderr = tvetl_fails(&["generate", "--out", path(&input), "--rows", "100"]);
        assert!(stderr.contains(&format!("did not write (viewership/{shown})")), "{stderr}");
        assert_eq!(snapshot(&input), before, "a refused generate changed the folder");
        std::fs::remove_file(&file).unwrap();
    }
}

#[test]
fn days_a_failed_rebuild_left_pending_are_rebuilt_by_the_next_run() {
    let (_dir, input, lake) = workspace();
    tvetl(&["generate", "--out", path(&input), "--rows", "2000", "--days", "3", "--seed", "5", "--dirty", "0.04"]);
    let first = run(&input, &lake);
    assert_eq!(first["analytics_days_rebuilt"], first["loads"]["viewership"]["days_touched"]);
    let rows = warehouse_rows(&lake);
    let reports = (top_channels(&lake, "2024-01-02"), user_average(&lake));

    // As if the rebuild after a committed load had failed: the day's
    // analytics are missing and the day is still pending.
    let conn = duckdb::Connection::open(lake.join("_warehouse/warehouse.duckdb")).unwrap();
    conn.execute_batch(
        "DELETE FROM analytics.daily_channel_viewing WHERE view_date = DATE '2024-01-02'; \
         DELETE FROM analytics.daily_user_viewing WHERE view_date = DATE '2024-01-02'; \
         INSERT INTO core.analytics_pending VALUES (DATE '2024-01-02', 1);",
    )
    .unwrap();
    drop(conn);
    assert_eq!(top_channels(&lake, "2024-01-02")["channels"], serde_json::json!([]));

    let second = run(&input, &lake);
    assert_eq!(second["loads"]["viewership"]["rows_merged"], 0, "nothing new to load");
    assert_eq!(second["analytics_days_rebuilt"], 1);
    assert_eq!((top_channels(&lake, "2024-01-02"), user_average(&lake)), reports);
    assert_eq!(warehouse_rows(&lake), rows);
}

/// Every business column of the core sessions, hashed per row: what a later
/// delivery replaces (lineage aside, as load ids differ between lakes).
fn core_sessions(lake: &Path) -> (i64, String) {
    let conn = duckdb::Connection::open(lake.join("_warehouse/warehouse.duckdb")).unwrap();
    let sql = "SELECT COUNT(*), CAST(COALESCE(SUM(hash(event_id, user_id, device_id, channel_id, program_id, \
               start_time, end_time, duration_seconds, platform, source_key, source_version, source_record_no)), 0) \
               AS VARCHAR) FROM core.viewing_sessions";
    conn.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap()
}

#[test]
fn a_later_delivery_of_every_loaded_session_replaces_them_all() {
    // Two generations with the same rows and object keys but other seeds:
    // the same event ids with other values, so the second run re-delivers
    // every session the first loaded: the load deletes 30,000 versions and
    // merges their replacements. (What that costs in memory at scale is
    // measured by bench/redelivery.sh, not here.)
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    for (out, seed) in [(&first, "1"), (&second, "2")] {
        tvetl(&["generate", "--out", path(out), "--rows", "30000", "--days", "3", "--seed", seed, "--dirty", "0"]);
    }
    let lake = dir.path().join("lake");
    run(&first, &lake);
    let loaded = core_sessions(&lake);
    let again = run(&second, &lake);
    assert_eq!(again["loads"]["viewership"]["rows_merged"], 30_000);

    // The same as a warehouse that only ever saw the second generation.
    let fresh = dir.path().join("fresh");
    run(&second, &fresh);
    let replaced = core_sessions(&lake);
    assert_eq!(replaced, core_sessions(&fresh));
    assert_eq!(replaced.0, loaded.0, "every id re-delivered, none added");
    assert_ne!(replaced.1, loaded.1, "the values are the second generation's");
    for day in ["2024-01-01", "2024-01-02", "2024-01-03"] {
        assert_eq!(top_channels(&lake, day), top_channels(&fresh, day), "{day}");
    }
    assert_eq!(user_average(&lake), user_average(&fresh));
}

#[test]
fn a_later_snapshot_of_every_user_replaces_them_all() {
    // A full demographics snapshot delivered again with new values, as a
    // daily export would be: every one of 50,000 users is replaced.
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    for (generation, age_band) in [("first", "18-24"), ("second", "25-34")] {
        let mut csv = String::from("user_id,age_band,gender,region\n");
        for i in 0..50_000 {
            csv.push_str(&format!("u{i:07},{age_band},f,region-{}\n", i % 50));
        }
        let input = dir.path().join(generation);
        write(&input, "demographics/users.csv", csv.as_bytes());
        let summary = run(&input, &lake);
        assert_eq!(summary["loads"]["demographics"]["rows_merged"], 50_000, "{generation}");
    }
    let conn = duckdb::Connection::open(lake.join("_warehouse/warehouse.duckdb")).unwrap();
    let bands: Vec<(String, i64)> = conn
        .prepare("SELECT age_band, COUNT(*) FROM core.users GROUP BY age_band")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(bands, [(s("25-34"), 50_000)]);
}

/// A temporary folder with the paths of its raw input and its lake (neither
/// made yet); the folder goes when the first value is dropped.
/// A build that reads a file another build could not (a change to the
/// decoders) leaves no record of it as unreadable, nor records of rejected
/// rows it no longer rejects: the quarantine holds what this build's ingest
/// of each version wrote, as a fresh lake's does.
#[test]
fn a_file_that_reads_now_keeps_no_earlier_record_of_it_as_unreadable() {
    let (_dir, input, lake) = workspace();
    write_sessions(
        &input,
        "viewership/a.csv",
        &["e1,u1,c1,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z", "e2,,c1,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z"],
    );
    write_sessions(&input, "viewership/b.csv", &["e3,u1,c1,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z"]);
    run(&input, &lake);
    let files = |prefix: &str| -> Vec<String> {
        let mut keys: Vec<String> =
            snapshot(&lake).into_keys().map(|k| k.display().to_string()).filter(|k| k.starts_with(prefix)).collect();
        keys.sort();
        keys
    };
    let fresh = files("quarantine/");
    assert_eq!(fresh.len(), 1, "a.csv's rejected row: {fresh:?}");
    // What an older build that could read neither file would have left,
    // under another ingest date: each version's record as unreadable, and
    // a record of rejected rows for b.csv, which has none.
    let id_of = |staged: &str| staged.rsplit_once("part-").unwrap().1.trim_end_matches(".parquet").to_owned();
    let ids: Vec<String> = files("staging/viewership/").iter().map(|k| id_of(k)).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let old = "quarantine/viewership/ingest_date=2023-12-31";
    for (id, key) in ids.iter().zip(["viewership/a.csv", "viewership/b.csv"]) {
        let record =
            serde_json::json!({"source_key": key, "source_version": "v", "size": 1, "error": "an older build's"});
        write(&lake, &format!("{old}/unreadable-{id}.json"), format!("{record}\n").as_bytes());
    }
    let b_id = ids.iter().find(|id| !fresh[0].contains(id.as_str())).unwrap();
    write(&lake, &format!("{old}/part-{b_id}.jsonl"), std::fs::read(lake.join(&fresh[0])).unwrap().as_slice());
    assert_eq!(files("quarantine/").len(), 4);

    json(&["run", "--input", path(&input), "--lake", path(&lake), "--quiet", "--format", "json", "--reingest"]);
    assert_eq!(files("quarantine/"), fresh, "only what this build's ingest wrote");
    let report = json(&["report", "--lake", path(&lake), "quarantine", "--format", "json"]);
    assert_eq!(
        (report["records_quarantined"].as_u64(), report["unreadable"].as_array().map(Vec::len)),
        (Some(1), Some(0)),
        "{report}"
    );
}

fn workspace() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (input, lake) = (dir.path().join("raw"), dir.path().join("lake"));
    (dir, input, lake)
}

fn write(root: &Path, key: &str, body: &[u8]) {
    let p = root.join(key);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

/// Writes a sessions CSV of the contract's required columns and end times:
/// its header, then `rows`, a line each.
fn write_sessions(root: &Path, key: &str, rows: &[&str]) {
    let body = format!("event_id,user_id,channel_id,start_time,end_time\n{}\n", rows.join("\n"));
    write(root, key, body.as_bytes());
}

fn ranking(report: &Value) -> Vec<(String, String, f64, u64)> {
    report["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["channel_id"].as_str().unwrap().to_owned(),
                c["channel_name"].as_str().unwrap().to_owned(),
                c["watch_seconds"].as_f64().unwrap(),
                c["reach"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn averages(lake: &Path) -> Vec<(String, u64, f64)> {
    user_average(lake)["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["date"].as_str().unwrap().to_owned(),
                d["active_users"].as_u64().unwrap(),
                d["avg_watch_seconds_per_user"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn s(x: &str) -> String {
    x.to_owned()
}

#[test]
fn hand_computed_answers_hold_and_later_files_add_to_the_same_warehouse() {
    let (dir, input, lake) = workspace();
    write(
        &input,
        "viewership/a.csv",
        b"\xEF\xBB\xBFEvent_ID,user_id,CHANNEL_ID,start_time,end_time,duration_seconds,platform,extra\r\n\
          e1,u1,c1,2024-01-01T23:00:00Z,2024-01-02T01:00:00Z,,stb,x\r\n\
          e2,u2,c1,2024-01-01 10:00:00,,1800,web,\r\n\
          e3,u1,c2,1704103200000,,600,mobile,\"a, \"\"quoted\"\"\nvalue\"\r\n\
          e4,u3,c9,2024-01-01T12:00:00+02:00,2024-01-01T10:30:00Z,,,\r\n\
          e5,,c1,2024-01-01T10:00:00Z,,60,,\r\n",
    );
    write(
        &input,
        "viewership/b.jsonl",
        b"{\"event_id\":\"e2\",\"user_id\":\"u2\",\"channel_id\":\"c2\",\"start_time\":\"2024-01-01T10:00:00Z\",\"duration_seconds\":3600}\n\
          {\"event_id\":\"e6\",\"user_id\":\"u4\",\"channel_id\":\"c1\",\"start_time\":\"2024-01-01T10:00:00Z\",\"end_time\":\"2024-01-01T09:00:00Z\"}\n\
          not json\n",
    );
    write(&input, "viewership/broken.csv.gz", b"this is not gzip");
    write(&input, "channels/channels.csv", b"channel_id,channel_name\nc1,One\nc2,Two\n");
    write(&input, "channels/more.json", b"[{\"channel_id\": \"c3\", \"channel_name\": \"Three\"}, {\"channel_id\": ");

    let summary = run(&input, &lake);
    assert_eq!(summary["rows_read"], 8);
    assert_eq!(summary["rows_accepted"], 5);
    assert_eq!(summary["duplicates_removed"], 1);
    assert_eq!(
        summary["quarantined"],
        serde_json::json!({"MALFORMED": 1, "MISSING_FIELD": 1, "BAD_TIMESTAMP": 0, "BAD_DURATION": 1, "TOO_LONG": 0})
    );
    let failed: BTreeSet<&str> = summary["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "failed")
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(failed, BTreeSet::from(["channels/more.json", "viewership/broken.csv.gz"]));
    // No channel record was rejected: the unreadable file alone makes the
    // channels' quarantine table and its partition.
    let catalog = catalog(&lake);
    let channels_quarantine = catalog["tables"]["quarantine_channels"]["partitions"].as_array().unwrap();
    assert_eq!(channels_quarantine.len(), 1, "{catalog}");

    // e2's later delivery (b.jsonl > a.csv) moved it to c2 for an hour; e1
    // crosses midnight; c9 has no metadata.
    assert_eq!(
        ranking(&top_channels(&lake, "2024-01-01")),
        [(s("c2"), s("Two"), 4200.0, 2), (s("c1"), s("One"), 3600.0, 1), (s("c9"), s("Unknown"), 1800.0, 1)]
    );
    assert_eq!(ranking(&top_channels(&lake, "2024-01-02")), [(s("c1"), s("One"), 3600.0, 1)]);
    assert_eq!(averages(&lake), [(s("2024-01-01"), 3, 3200.0), (s("2024-01-02"), 1, 3600.0)]);

    // A later file re-delivers e1 on another day: both old days are rebuilt.
    write_sessions(&input, "viewership/c.csv", &["e1,u1,c1,2024-01-03T10:00:00Z,2024-01-03T10:10:00Z"]);
    let again = run(&input, &lake);
    assert_eq!(again["loads"]["viewership"]["rows_merged"], 1, "only the new file is merged");
    assert_eq!(
        ranking(&top_channels(&lake, "2024-01-01")),
        [(s("c2"), s("Two"), 4200.0, 2), (s("c9"), s("Unknown"), 1800.0, 1)]
    );
    assert!(ranking(&top_channels(&lake, "2024-01-02")).is_empty());
    assert_eq!(ranking(&top_channels(&lake, "2024-01-03")), [(s("c1"), s("One"), 600.0, 1)]);
    assert_eq!(averages(&lake), [(s("2024-01-01"), 3, 2000.0), (s("2024-01-03"), 1, 600.0)]);

    // Reports in every format, and charts in both image formats.
    let csv = tvetl(&["report", "--lake", path(&lake), "top-channels", "--date", "2024-01-01", "--format", "csv"]);
    assert_eq!(csv.lines().next(), Some("rank,channel_id,channel_name,watch_seconds,reach"));
    assert_eq!(csv.lines().nth(1), Some("1,c2,Two,4200,2"));
    let table = tvetl(&["report", "--lake", path(&lake), "user-average", "--from", "2024-01-03", "--to", "2024-01-03"]);
    assert!(table.contains("2024-01-03") && !table.contains("2024-01-01"), "{table}");
    // A chart's folder is created, as an export's is.
    let png = dir.path().join("charts/top.png");
    let svg = dir.path().join("avg.svg");
    tvetl(&["report", "--lake", path(&lake), "top-channels", "--date", "2024-01-01", "--chart", path(&png)]);
    tvetl(&["report", "--lake", path(&lake), "user-average", "--chart", path(&svg)]);
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("2024-01-03"));
}

#[test]
fn a_load_of_one_day_rebuilds_it_with_the_sessions_crossing_in_from_the_day_before() {
    let (_dir, input, lake) = workspace();
    // e1 crosses from 2024-01-01 into 2024-01-02 (an hour each side); e2 is
    // on 2024-01-01 alone.
    write_sessions(
        &input,
        "viewership/a.csv",
        &["e1,u1,c1,2024-01-01T23:00:00Z,2024-01-02T01:00:00Z", "e2,u2,c1,2024-01-01T10:00:00Z,2024-01-01T10:30:00Z"],
    );
    run(&input, &lake);
    assert_eq!(ranking(&top_channels(&lake, "2024-01-02")), [(s("c1"), s("Unknown"), 3600.0, 1)]);

    // A later file holds one session of 2024-01-02: the load touches that day
    // alone, and its rebuild must still count the hour e1 (loaded earlier,
    // starting the day before) spends in it.
    write_sessions(&input, "viewership/b.csv", &["e3,u2,c1,2024-01-02T10:00:00Z,2024-01-02T10:20:00Z"]);
    let again = run(&input, &lake);
    assert_eq!(again["loads"]["viewership"]["days_touched"], 1, "{again}");
    assert_eq!(ranking(&top_channels(&lake, "2024-01-02")), [(s("c1"), s("Unknown"), 4800.0, 2)]);
    assert_eq!(ranking(&top_channels(&lake, "2024-01-01")), [(s("c1"), s("Unknown"), 5400.0, 2)]);
    assert_eq!(averages(&lake), [(s("2024-01-01"), 2, 2700.0), (s("2024-01-02"), 2, 2400.0)]);
}

#[test]
fn the_loads_delete_removes_every_version_it_replaces() {
    let (_dir, input, lake) = workspace();
    // e1 crosses midnight, e2 is two days later, e3 stays as it is.
    write_sessions(
        &input,
        "viewership/a.csv",
        &[
            "e1,u1,c1,2024-01-01T23:00:00Z,2024-01-02T01:00:00Z",
            "e2,u1,c1,2024-01-03T10:00:00Z,2024-01-03T11:00:00Z",
            "e3,u2,c1,2024-01-03T12:00:00Z,2024-01-03T13:00:00Z",
        ],
    );
    run(&input, &lake);
    // The load's DELETE, over staged re-deliveries of e1 and e2 (and a new
    // e4), must remove both loaded versions, so that the MERGE after it only
    // inserts. The MERGE would replace them on its own too, so the reports
    // cannot tell; but an update in place is what DuckDB cannot spill. The
    // DELETE reads core only if the join that finds the replaced versions'
    // days found any, so it runs after that statement.
    let statements: Vec<String> = split_statements(LOAD_VIEWING_SESSIONS_SQL)
        .into_iter()
        .filter(|s| {
            s.starts_with("CREATE TEMP TABLE replaced_days") || s.starts_with("DELETE FROM core.viewing_sessions")
        })
        .map(|s| s.replace("staging.viewing_sessions", "staged"))
        .collect();
    assert_eq!(statements.len(), 2, "{statements:?}");
    let conn = duckdb::Connection::open(lake.join("_warehouse/warehouse.duckdb")).unwrap();
    let delete_staged = |ids: &str| {
        conn.execute_batch(&format!(
            "CREATE OR REPLACE TEMP TABLE staged AS SELECT * FROM (VALUES {ids}) t(event_id); {}",
            statements[0]
        ))
        .unwrap();
        let replaced: String = conn
            .query_row(
                "SELECT COALESCE(string_agg(start_day || ' ' || end_day, ', ' ORDER BY start_day), '') FROM replaced_days",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let deleted = conn.execute(&statements[1], []).unwrap();
        conn.execute_batch("DROP TABLE replaced_days").unwrap();
        (replaced, deleted)
    };
    // Nothing staged is in core: nothing is replaced or deleted.
    assert_eq!(delete_staged("('e9')"), (String::new(), 0));
    assert_eq!(delete_staged("('e1'), ('e2'), ('e4')"), ("2024-01-01 2024-01-02, 2024-01-03 2024-01-03".to_owned(), 2));
    let left: String = conn
        .query_row("SELECT string_agg(event_id, ',' ORDER BY event_id) FROM core.viewing_sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, "e3");
}

/// (date, segment, active users, watch seconds, average) of each row of
/// the audience report by `by`.
fn audience(lake: &Path, by: &str) -> Vec<(String, String, u64, f64, f64)> {
    let report = json(&["report", "--lake", path(lake), "audience", "--by", by, "--format", "json"]);
    assert_eq!(report["by"], by);
    let mut rows = Vec::new();
    for day in report["days"].as_array().unwrap() {
        for seg in day["segments"].as_array().unwrap() {
            rows.push((
                day["date"].as_str().unwrap().to_owned(),
                seg["segment"].as_str().unwrap().to_owned(),
                seg["active_users"].as_u64().unwrap(),
                seg["watch_seconds"].as_f64().unwrap(),
                seg["avg_watch_seconds_per_user"].as_f64().unwrap(),
            ));
        }
    }
    rows
}

#[test]
fn audience_segments_follow_each_users_latest_record_and_unknown_holds_the_rest() {
    let (dir, input, lake) = workspace();
    // u1 watches an hour, then half an hour either side of midnight; u2 20
    // minutes, u3 10 and u4 5, all on 2024-01-01.
    write(
        &input,
        "viewership/s.csv",
        b"event_id,user_id,channel_id,start_time,duration_seconds\n\
          e1,u1,c1,2024-01-01T10:00:00Z,3600\n\
          e2,u1,c2,2024-01-01T23:30:00Z,3600\n\
          e3,u2,c1,2024-01-01T12:00:00Z,1200\n\
          e4,u3,c1,2024-01-01T12:00:00Z,600\n\
          e5,u4,c2,2024-01-01T12:00:00Z,300\n",
    );
    // u3 has no record; u4 no age band. u2's later record (z.jsonl sorts
    // after users.csv) moves it to 25-34 and has no gender.
    write(
        &input,
        "demographics/users.csv",
        b"user_id,age_band,gender,region\nu1,18-24,f,\"North, East\"\nu2,18-24,m,South\nu4,,f,West\n",
    );
    write(&input, "demographics/z.jsonl", b"{\"user_id\": \"u2\", \"age_band\": \"25-34\", \"gender\": null}\n");
    run(&input, &lake);

    assert_eq!(
        audience(&lake, "age_band"),
        [
            (s("2024-01-01"), s("18-24"), 1, 5400.0, 5400.0),
            (s("2024-01-01"), s("25-34"), 1, 1200.0, 1200.0),
            (s("2024-01-01"), s("Unknown"), 2, 900.0, 450.0),
            (s("2024-01-02"), s("18-24"), 1, 1800.0, 1800.0),
        ]
    );
    // Byte order: 'U' sorts before 'f'.
    assert_eq!(
        audience(&lake, "gender"),
        [
            (s("2024-01-01"), s("Unknown"), 2, 1800.0, 900.0),
            (s("2024-01-01"), s("f"), 2, 5700.0, 2850.0),
            (s("2024-01-02"), s("f"), 1, 1800.0, 1800.0),
        ]
    );
    // The segments of a day add up to the user-average report's day.
    for (date, users, avg) in averages(&lake) {
        let segments: Vec<_> = audience(&lake, "region").into_iter().filter(|r| r.0 == date).collect();
        assert_eq!(segments.iter().map(|r| r.2).sum::<u64>(), users, "{date}");
        let total: f64 = segments.iter().map(|r| r.3).sum();
        assert!(close(total / users as f64, avg), "{date}: {total} over {users} users, average {avg}");
    }

    // A later snapshot gives u3 a record: the report follows it without
    // any session being loaded again.
    write(&input, "demographics/zz.csv", b"user_id,age_band\nu3,65+\n");
    let again = run(&input, &lake);
    assert_eq!(again["loads"]["viewership"]["rows_merged"], 0);
    let first_day: Vec<_> = audience(&lake, "age_band").into_iter().filter(|r| r.0 == "2024-01-01").collect();
    assert_eq!(
        first_day,
        [
            (s("2024-01-01"), s("18-24"), 1, 5400.0, 5400.0),
            (s("2024-01-01"), s("25-34"), 1, 1200.0, 1200.0),
            (s("2024-01-01"), s("65+"), 1, 600.0, 600.0),
            (s("2024-01-01"), s("Unknown"), 1, 300.0, 300.0),
        ]
    );

    let csv = tvetl(&["report", "--lake", path(&lake), "audience", "--by", "region", "--format", "csv"]);
    assert_eq!(csv.lines().next(), Some("date,region,active_users,watch_seconds,avg_watch_seconds_per_user"));
    assert!(csv.contains("2024-01-01,\"North, East\",1,5400,5400\n"), "{csv}");
    // u2's latest record has no region, and u3's none either.
    assert!(csv.contains("2024-01-01,Unknown,2,1800,900\n") && !csv.contains("South"), "{csv}");
    let table = tvetl(&["report", "--lake", path(&lake), "audience", "--from", "2024-01-02"]);
    assert!(table.contains("18-24") && !table.contains("2024-01-01"), "{table}");
    let png = dir.path().join("audience.png");
    tvetl(&["report", "--lake", path(&lake), "audience", "--by", "gender", "--chart", path(&png)]);
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let bad = tvetl_fails(&["report", "--lake", path(&lake), "audience", "--by", "income"]);
    assert!(bad.contains("income") && bad.contains("age_band"), "{bad}");
}

/// The rows of an exported Parquet file, read back by DuckDB, each as its
/// columns' text ("NULL" for NULL).
fn exported_rows(file: &Path) -> Vec<Vec<String>> {
    let conn = duckdb::Connection::open_in_memory().unwrap();
    let sql = format!(
        "SELECT user_id, active_days, watch_seconds, avg_watch_seconds_per_active_day, avg_channels_per_active_day, \
         CAST(first_view_date AS VARCHAR), CAST(last_view_date AS VARCHAR), sessions_started, top_channel_id, \
         top_platform, age_band, gender, region FROM read_parquet('{}') ORDER BY user_id",
        file.display()
    );
    let mut statement = conn.prepare(&sql).unwrap();
    let rows = statement
        .query_map([], |row| {
            Ok((0..13)
                .map(|i| match row.get_ref(i).unwrap() {
                    duckdb::types::ValueRef::Null => "NULL".to_owned(),
                    duckdb::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    duckdb::types::ValueRef::BigInt(n) => n.to_string(),
                    duckdb::types::ValueRef::Double(x) => x.to_string(),
                    other => panic!("column {i}: {other:?}"),
                })
                .collect())
        })
        .unwrap();
    rows.map(Result::unwrap).collect()
}

#[test]
fn the_user_features_export_holds_hand_computed_features() {
    let (dir, input, lake) = workspace();
    // u1: an hour on c1 (stb), then an hour on c2 (web) from 23:30, half of
    // it on 2024-01-02. u2 has no platform, u3 no demographics.
    write(
        &input,
        "viewership/s.csv",
        b"event_id,user_id,channel_id,start_time,duration_seconds,platform\n\
          e1,u1,c1,2024-01-01T10:00:00Z,3600,stb\n\
          e2,u1,c2,2024-01-01T23:30:00Z,3600,web\n\
          e3,u2,c1,2024-01-01T12:00:00Z,1200,\n\
          e4,u3,c1,2024-01-01T12:00:00Z,600,mobile\n\
          e5,u4,c2,2024-01-01T12:00:00Z,300,smart_tv\n",
    );
    write(
        &input,
        "demographics/users.csv",
        b"user_id,age_band,gender,region\nu1,18-24,f,North\nu2,25-34,,\nu4,,f,West\n",
    );
    run(&input, &lake);

    let all = dir.path().join("out/features.parquet");
    tvetl(&["export", "--lake", path(&lake), "user-features", "--out", path(&all)]);
    let row = |cells: &[&str]| cells.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    assert_eq!(
        exported_rows(&all),
        [
            // Ties (3600 s each) go to the smaller id: c1, and stb before web.
            row(&[
                "u1",
                "2",
                "7200",
                "3600",
                "1.5",
                "2024-01-01",
                "2024-01-02",
                "2",
                "c1",
                "stb",
                "18-24",
                "f",
                "North"
            ]),
            row(&[
                "u2",
                "1",
                "1200",
                "1200",
                "1",
                "2024-01-01",
                "2024-01-01",
                "1",
                "c1",
                "NULL",
                "25-34",
                "NULL",
                "NULL"
            ]),
            row(&[
                "u3",
                "1",
                "600",
                "600",
                "1",
                "2024-01-01",
                "2024-01-01",
                "1",
                "c1",
                "mobile",
                "NULL",
                "NULL",
                "NULL"
            ]),
            row(&[
                "u4",
                "1",
                "300",
                "300",
                "1",
                "2024-01-01",
                "2024-01-01",
                "1",
                "c2",
                "smart_tv",
                "NULL",
                "f",
                "West"
            ]),
        ]
    );

    // From 2024-01-02: u1's half hour after midnight, of a session that
    // started the day before.
    let second_day = dir.path().join("day2.parquet");
    tvetl(&["export", "--lake", path(&lake), "user-features", "--from", "2024-01-02", "--out", path(&second_day)]);
    assert_eq!(
        exported_rows(&second_day),
        [row(&[
            "u1",
            "1",
            "1800",
            "1800",
            "1",
            "2024-01-02",
            "2024-01-02",
            "0",
            "NULL",
            "NULL",
            "18-24",
            "f",
            "North"
        ])]
    );

    let csv = dir.path().join("features.csv");
    tvetl(&["export", "--lake", path(&lake), "user-features", "--out", path(&csv)]);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with("user_id,active_days,watch_seconds,"), "{text}");
    assert_eq!(text.lines().count(), 5, "{text}");

    let bad = tvetl_fails(&["export", "--lake", path(&lake), "user-features", "--out", "features.xlsx"]);
    assert!(bad.contains(".parquet or .csv"), "{bad}");
    let reversed = dir.path().join("none.csv");
    let bad = tvetl_fails(&[
        "export",
        "--lake",
        path(&lake),
        "user-features",
        "--from",
        "2024-01-03",
        "--to",
        "2024-01-01",
        "--out",
        path(&reversed),
    ]);
    assert!(bad.contains("after to 2024-01-01"), "{bad}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!left.iter().any(|n| n.to_string_lossy().starts_with(".export-")), "no partial file is left: {left:?}");
    assert!(!reversed.exists());
}

#[test]
fn the_user_features_rank_an_exact_tie_by_id_whatever_floating_point_makes_of_it() {
    let (dir, input, lake) = workspace();
    // c2 and web get 0.1 s + 0.2 s, c1 and mobile 0.3 s: a tie, which goes
    // to the smaller id. Summed as doubles, 0.1 + 0.2 is 0.30000000000000004,
    // more than 0.3, and c2 and web would win it.
    write(
        &input,
        "viewership/s.csv",
        b"event_id,user_id,channel_id,start_time,end_time,platform\n\
          e1,u1,c2,2024-01-01T10:00:00Z,2024-01-01T10:00:00.1Z,web\n\
          e2,u1,c2,2024-01-01T11:00:00Z,2024-01-01T11:00:00.2Z,web\n\
          e3,u1,c1,2024-01-01T12:00:00Z,2024-01-01T12:00:00.3Z,mobile\n",
    );
    run(&input, &lake);
    let out = dir.path().join("features.csv");
    tvetl(&["export", "--lake", path(&lake), "user-features", "--out", path(&out)]);
    let mut reader = csv::Reader::from_path(&out).unwrap();
    let headers = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1);
    let field = |name: &str| &rows[0][headers.iter().position(|h| h == name).unwrap()];
    assert_eq!((field("top_channel_id"), field("top_platform")), ("c1", "mobile"));
    assert_eq!(field("sessions_started"), "3");
}

#[test]
fn top_genres_count_a_user_once_per_genre_and_split_sessions_at_midnight() {
    let (_dir, input, lake) = workspace();
    // u1 watches both news channels; u2 one news channel from 23:00 for two
    // hours; u3 sport and a channel without metadata, u4 a channel without a genre.
    write(
        &input,
        "viewership/s.csv",
        b"event_id,user_id,channel_id,start_time,duration_seconds\n\
          e1,u1,n1,2024-01-01T10:00:00Z,600\n\
          e2,u1,n2,2024-01-01T11:00:00Z,600\n\
          e3,u2,n1,2024-01-01T23:00:00Z,7200\n\
          e4,u3,s1,2024-01-01T12:00:00Z,2400\n\
          e5,u3,x9,2024-01-01T12:00:00Z,300\n\
          e6,u4,g0,2024-01-01T12:00:00Z,100\n",
    );
    write(
        &input,
        "channels/c.jsonl",
        b"{\"channel_id\": \"n1\", \"channel_name\": \"N1\", \"genre\": \"news\"}\n\
          {\"channel_id\": \"n2\", \"channel_name\": \"N2\", \"genre\": \"news\"}\n\
          {\"channel_id\": \"s1\", \"channel_name\": \"S1\", \"genre\": \"sport\"}\n\
          {\"channel_id\": \"g0\", \"channel_name\": \"G0\"}\n",
    );
    run(&input, &lake);
    let genres = |date: &str| -> Vec<(String, f64, u64, u64)> {
        let report = json(&["report", "--lake", path(&lake), "top-genres", "--date", date, "--format", "json"]);
        assert_eq!(report["date"], date);
        report["genres"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, g)| {
                assert_eq!(g["rank"], i as u64 + 1);
                let text = g["genre"].as_str().unwrap().to_owned();
                (
                    text,
                    g["watch_seconds"].as_f64().unwrap(),
                    g["reach"].as_u64().unwrap(),
                    g["channels"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    // news: 600 + 600 + the hour before midnight, and u1 counts once; x9 (no
    // metadata) and g0 (no genre) are Unknown.
    assert_eq!(
        genres("2024-01-01"),
        [(s("news"), 4800.0, 2, 2), (s("sport"), 2400.0, 1, 1), (s("Unknown"), 400.0, 2, 2)]
    );
    assert_eq!(genres("2024-01-02"), [(s("news"), 3600.0, 1, 1)]);
    assert!(genres("2024-01-03").is_empty());
    let top_one = tvetl(&[
        "report",
        "--lake",
        path(&lake),
        "top-genres",
        "--date",
        "2024-01-01",
        "--limit",
        "1",
        "--format",
        "csv",
    ]);
    assert_eq!(top_one, "rank,genre,watch_seconds,reach,channels\n1,news,4800,2,2\n");
}

#[test]
fn the_table_summary_lines_up_and_names_each_failed_file_once() {
    let (dir, input, lake) = workspace();
    write(
        &input,
        "viewership/a.csv",
        b"event_id,user_id,channel_id,start_time,duration_seconds\n\
          e1,u1,c1,2024-01-01T10:00:00Z,60\n\
          e2,,c1,2024-01-01T10:00:00Z,60\n\
          e3,u1,c1,2024-01-01T10:00:00Z,-1\n",
    );
    write(&input, "viewership/broken.csv.gz", b"this is not gzip");
    let table = tvetl(&["run", "--input", path(&input), "--lake", path(&lake), "--quiet"]);
    let counts: Vec<&str> =
        table.lines().skip_while(|l| *l != "viewing sessions").skip(1).take_while(|l| l.starts_with("  ")).collect();
    assert_eq!(counts.len(), 8, "{table}");
    let ends: BTreeSet<usize> = counts.iter().map(|l| l.len()).collect();
    assert_eq!(ends.len(), 1, "the counts end in one column:\n{table}");
    let count = |label: &str| -> u64 {
        let line =
            counts.iter().find(|l| l.trim_start().starts_with(label)).unwrap_or_else(|| panic!("{label}: {table}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!((count("rows read"), count("rows accepted")), (3, 1));
    assert_eq!((count("quarantined MISSING_FIELD"), count("quarantined BAD_DURATION")), (1, 1));
    assert!(table.lines().any(|l| l == "analytics: 1 day rebuilt"), "{table}");
    let failed: Vec<&str> = table.lines().filter(|l| l.trim_start().starts_with("FAILED")).collect();
    assert_eq!(failed.len(), 1, "{table}");
    assert_eq!(failed[0].matches("viewership/broken.csv.gz").count(), 1, "{}", failed[0]);
    let files_line = |table: &str| table.lines().find(|l| l.starts_with("files:")).unwrap().to_owned();
    assert_eq!(files_line(&table), "files: 1 loaded, 1 failed");

    // A rerun reads neither file again, and reports the same failure.
    let again = tvetl(&["run", "--input", path(&input), "--lake", path(&lake), "--quiet"]);
    let not_read = "(1 of them unchanged since an earlier run, not read again)";
    assert_eq!(files_line(&again), format!("files: 1 loaded {not_read}, 1 failed {not_read}"));
    assert_eq!(again.lines().filter(|l| l.trim_start().starts_with("FAILED")).collect::<Vec<_>>(), failed);

    // --strict: the same summary, and exit status 1 for the failed file.
    let strict = |lake: &Path| {
        Command::new(env!("CARGO_BIN_EXE_tvetl"))
            .args(["run", "--input", path(&input), "--lake", path(lake), "--quiet", "--format", "json", "--strict"])
            .output()
            .expect("tvetl runs")
    };
    let fresh = dir.path().join("strict-lake");
    let out = strict(&fresh);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 of 2 files failed (see the summary); the others loaded"),
        "{out:?}"
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["rows_accepted"], 1, "the readable file loaded all the same");
    assert_eq!(top_channels(&fresh, "2024-01-01")["channels"][0]["channel_id"], "c1");
    assert_eq!(strict(&fresh).status.code(), Some(1), "still failed, though not read again");
    let readable = std::fs::read(input.join("viewership/a.csv")).unwrap();
    std::fs::remove_file(input.join("viewership/a.csv")).unwrap();
    let out = strict(&fresh);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 of 1 files failed (see the summary); none loaded"),
        "{out:?}"
    );
    write(&input, "viewership/a.csv", &readable);
    std::fs::remove_file(input.join("viewership/broken.csv.gz")).unwrap();
    assert_eq!(strict(&fresh).status.code(), Some(0));
}

#[test]
fn a_load_out_of_memory_says_what_to_do_and_a_rerun_with_more_loads_everything() {
    let (dir, input, lake) = workspace();
    tvetl(&["generate", "--out", path(&input), "--rows", "2000", "--days", "2", "--seed", "9", "--dirty", "0.04"]);
    let stderr = tvetl_fails(&[
        "run",
        "--input",
        path(&input),
        "--lake",
        path(&lake),
        "--quiet",
        "--memory-limit",
        "1MB",
        "--threads",
        "2",
    ]);
    assert!(
        stderr.contains("ran out of its memory limit (1MB) on 2 threads and again on one")
            && stderr.contains("--memory-limit"),
        "{stderr}"
    );

    let after = run(&input, &lake);
    let fresh_lake = dir.path().join("fresh");
    let fresh = run(&input, &fresh_lake);
    assert_same_counts(&after, &fresh);
    assert_eq!(after["loads"]["viewership"]["rows_merged"], fresh["loads"]["viewership"]["rows_merged"]);
    assert_eq!(
        (top_channels(&lake, "2024-01-01"), user_average(&lake)),
        (top_channels(&fresh_lake, "2024-01-01"), user_average(&fresh_lake))
    );
}

#[test]
fn sql_queries_read_the_warehouse_and_cannot_change_it() {
    let (dir, input, lake) = workspace();
    write(
        &input,
        "viewership/a.csv",
        b"event_id,user_id,channel_id,start_time,end_time,duration_seconds\n\
          e1,u1,c1,2024-01-01T23:00:00Z,2024-01-02T01:00:00.5Z,\n\
          e2,u2,c2,2024-01-01 10:00:00,,1800\n\
          e3,u2,c1,1704103200000,,600\n",
    );
    write(&input, "channels/c.csv", b"channel_id,channel_name\nc1,\"One, the first\"\nc2,Two\n");
    run(&input, &lake);
    let sql = |format: &str, query: &str| tvetl(&["sql", "--lake", path(&lake), "--format", format, query]);

    // The analytics table is what the report ranks.
    let rows: Value = serde_json::from_str(&sql(
        "json",
        "SELECT channel_id, watch_seconds, reach FROM analytics.daily_channel_viewing \
         WHERE view_date = DATE '2024-01-01' ORDER BY watch_seconds DESC, channel_id",
    ))
    .unwrap();
    assert_eq!(rows["columns"], serde_json::json!(["channel_id", "watch_seconds", "reach"]));
    let from_report: Vec<Value> = ranking(&top_channels(&lake, "2024-01-01"))
        .into_iter()
        .map(|(id, _, watch, reach)| serde_json::json!([id, watch, reach]))
        .collect();
    assert_eq!(rows["rows"], Value::from(from_report));
    assert_eq!(rows["rows"][0], serde_json::json!(["c1", 4200.0, 2]));

    // Timestamps and dates in DuckDB's text form, a fraction only where
    // there is one; a name with a comma quoted.
    assert_eq!(
        sql(
            "csv",
            "SELECT s.event_id, s.start_time, s.end_time, s.event_date, s.session_seconds, c.channel_name \
             FROM core.viewing_sessions s JOIN core.channels c USING (channel_id) ORDER BY event_id",
        ),
        "event_id,start_time,end_time,event_date,session_seconds,channel_name\n\
         e1,2024-01-01 23:00:00,2024-01-02 01:00:00.5,2024-01-01,7200.5,\"One, the first\"\n\
         e2,2024-01-01 10:00:00,2024-01-01 10:30:00,2024-01-01,1800,Two\n\
         e3,2024-01-01 10:00:00,2024-01-01 10:10:00,2024-01-01,600,\"One, the first\"\n"
    );
    let table = sql("table", "SELECT table_name, rows_merged FROM core.load_audit ORDER BY load_id");
    assert_eq!(
        table,
        "table_name        rows_merged\n\
         ----------------  -----------\n\
         channels                    2\n\
         viewing_sessions            3\n\
         (2 rows)\n"
    );

    // The query can come on standard input.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tvetl"))
        .args(["sql", "--lake", path(&lake), "--format", "csv", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"SELECT COUNT(*) AS sessions\nFROM core.viewing_sessions\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "sessions\n3\n");

    // A write is refused, and nothing changes: the file is opened read-only.
    // A query's result may still go to a file of its own, with --out.
    let before = warehouse_rows(&lake);
    let copy = dir.path().join("daily users.parquet");
    let wrote = tvetl(&[
        "sql",
        "--lake",
        path(&lake),
        "--out",
        path(&copy),
        "SELECT * FROM analytics.daily_user_viewing ORDER BY view_date, user_id",
    ]);
    assert_eq!(wrote.trim(), format!("wrote 3 rows to {}", path(&copy)));
    // The output's folder is created if missing.
    let as_csv = dir.path().join("out/n.csv");
    tvetl(&["sql", "--lake", path(&lake), "--out", path(&as_csv), "SELECT 1 AS n, 'a, b' AS s"]);
    assert_eq!(std::fs::read_to_string(&as_csv).unwrap(), "n,s\n1,\"a, b\"\n");
    // The query runs as confined as on screen; tvetl writes the file, and not
    // into the warehouse's folder.
    let (csv_out, in_warehouse, txt) = (
        path(&as_csv).to_owned(),
        lake.join("_warehouse/warehouse.csv").display().to_string(),
        dir.path().join("n.txt").display().to_string(),
    );
    // Below it, or reached through a folder that does not exist yet.
    let (under_warehouse, round_about) = (
        lake.join("_warehouse/new/w.csv").display().to_string(),
        lake.join("new/../_warehouse/w.csv").display().to_string(),
    );
    for (query, out, why) in [
        ("SELECT 1) TO 'x.csv'; ATTACH 'y.db' AS y; COPY (SELECT 1", &csv_out, "holds 3 statements"),
        ("SELECT 1) TO 'x.csv' --", &csv_out, "syntax error"),
        ("SELECT 1 AS a; SELECT 2 AS b", &csv_out, "runs one query"),
        ("SELECT * FROM read_csv('x.csv')", &csv_out, "disabled by configuration"),
        ("SELECT 1 AS n", &in_warehouse, "warehouse's own folder"),
        ("SELECT 1 AS n", &under_warehouse, "warehouse's own folder"),
        ("SELECT 1 AS n", &round_about, "warehouse's own folder"),
        ("SELECT 1 AS n", &txt, ".parquet or .csv"),
    ] {
        let stderr = tvetl_fails(&["sql", "--lake", path(&lake), "--out", out, query]);
        assert!(stderr.contains(why), "{query} -> {out}: {stderr}");
    }
    let in_warehouse_parquet = in_warehouse.replace(".csv", ".parquet");
    let stderr = tvetl_fails(&["export", "--lake", path(&lake), "user-features", "--out", &in_warehouse_parquet]);
    assert!(stderr.contains("warehouse's own folder"), "export: {stderr}");
    assert!(!Path::new(&in_warehouse).exists() && !Path::new(&in_warehouse_parquet).exists());
    assert!(!lake.join("_warehouse/new").exists() && !lake.join("new").exists());
    assert!(!Path::new("y.db").exists());
    let copied: Vec<(String, String, f64)> = duckdb::Connection::open_in_memory()
        .unwrap()
        .prepare(&format!(
            "SELECT CAST(view_date AS VARCHAR), user_id, watch_seconds FROM read_parquet('{}')",
            path(&copy)
        ))
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        copied,
        [(s("2024-01-01"), s("u1"), 3600.0), (s("2024-01-01"), s("u2"), 2400.0), (s("2024-01-02"), s("u1"), 3600.5)]
    );
    for write in ["DELETE FROM core.viewing_sessions", "CREATE TABLE core.x AS SELECT 1 AS n"] {
        let stderr = tvetl_fails(&["sql", "--lake", path(&lake), write]);
        assert!(stderr.contains("only reads") && stderr.contains(write), "{stderr}");
    }
    // Nor around it: no file written, no database attached read-write (the
    // warehouse's own, detached first), no setting turned back on.
    let outside = lake.join("outside.csv");
    let warehouse_file = lake.join("_warehouse/warehouse.duckdb");
    for write in [
        format!("COPY (SELECT 1 AS n) TO '{}' (FORMAT CSV)", path(&outside)),
        format!("EXPORT DATABASE '{}'", path(&lake.join("exported"))),
        format!(
            "DETACH warehouse; ATTACH '{}' AS w (READ_WRITE); DELETE FROM w.core.viewing_sessions",
            path(&warehouse_file)
        ),
        "SET enable_external_access = true".to_owned(),
    ] {
        tvetl_fails(&["sql", "--lake", path(&lake), &write]);
        assert!(!outside.exists() && !lake.join("exported").exists(), "{write}");
    }
    assert_eq!(warehouse_rows(&lake), before);
    let stderr = tvetl_fails(&["sql", "--lake", path(&lake), "SELECT nope FROM core.viewing_sessions"]);
    assert!(stderr.contains("nope") && !stderr.contains("only reads"), "{stderr}");

    // Reports, exports and queries open the file read-only, so they run
    // while another process reads it (a writer would be refused its lock).
    let read_only = duckdb::Config::default().access_mode(duckdb::AccessMode::ReadOnly).unwrap();
    let reader = duckdb::Connection::open_with_flags(lake.join("_warehouse/warehouse.duckdb"), read_only).unwrap();
    assert_eq!(ranking(&top_channels(&lake, "2024-01-01"))[0].0, "c1");
    assert_eq!(sql("csv", "SELECT COUNT(*) AS n FROM core.viewing_sessions"), "n\n3\n");
    let features = dir.path().join("features.csv");
    tvetl(&["export", "--lake", path(&lake), "user-features", "--out", path(&features)]);
    assert_eq!(std::fs::read_to_string(&features).unwrap().lines().count(), 3, "a header and two users");
    drop(reader);
}

#[test]
fn a_second_run_on_a_lake_in_use_fails_at_once_and_changes_nothing() {
    use std::os::fd::AsRawFd;
    let (_dir, input, lake) = workspace();
    write(
        &input,
        "viewership/a.csv",
        b"event_id,user_id,channel_id,start_time,duration_seconds\ne1,u1,c1,2024-01-01T10:00:00Z,60\n",
    );
    run(&input, &lake);
    write(
        &input,
        "viewership/b.csv",
        b"event_id,user_id,channel_id,start_time,duration_seconds\ne2,u2,c1,2024-01-01T11:00:00Z,60\n",
    );
    let (lake_before, warehouse_before) = (snapshot(&lake), warehouse_rows(&lake));

    // Another run holds the lake: this test, as `tvetl run` would.
    let holder = std::fs::OpenOptions::new().read(true).write(true).open(lake.join("_warehouse/run.lock")).unwrap();
    // SAFETY: flock only reads the descriptor, which `holder` keeps open.
    assert_eq!(unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    let stderr = tvetl_fails(&["run", "--input", path(&input), "--lake", path(&lake), "--quiet"]);
    let expected = format!("another tvetl run (pid {}) is loading", std::process::id());
    assert!(stderr.contains(&expected), "{stderr}");
    assert_eq!((snapshot(&lake), warehouse_rows(&lake)), (lake_before, warehouse_before));

    // Once it ends, the run takes the new file in.
    drop(holder);
    assert_eq!(run(&input, &lake)["loads"]["viewership"]["rows_merged"], 1);
}

/// Output that cannot be written is an error naming stdout, and a reader
/// that stops early (`| head`) ends the run quietly: never a panic.
#[test]
fn stdout_that_cannot_be_written_is_an_error_and_a_closed_pipe_ends_quietly() {
    let (_dir, input, lake) = workspace();
    let rows: Vec<String> =
        (0..2000).map(|i| format!("e{i},u{i},c1,2024-01-01T10:00:00Z,2024-01-01T10:30:00Z")).collect();
    write_sessions(&input, "viewership/a.csv", &rows.iter().map(String::as_str).collect::<Vec<_>>());
    let full = || std::fs::File::options().write(true).open("/dev/full").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tvetl"))
        .args(["run", "--input", path(&input), "--lake", path(&lake), "--quiet"])
        .stdout(full())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("error: writing to stdout: No space left on device"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let query = "SELECT * FROM core.viewing_sessions";
    let mut child = Command::new(env!("CARGO_BIN_EXE_tvetl"))
        .args(["sql", "--lake", path(&lake), query])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}

#[test]
fn bad_arguments_get_clear_errors() {
    let stderr = tvetl_fails(&["report", "--lake", "/nonexistent-lake", "top-channels", "--date", "2024-01-01"]);
    assert!(stderr.contains("no warehouse"));
    let stderr = tvetl_fails(&["sql", "--lake", "/nonexistent-lake", "SELECT 1"]);
    assert!(stderr.contains("no warehouse"));
    let stderr = tvetl_fails(&["run", "--input", "/nonexistent-in", "--lake", "/tmp/x"]);
    assert!(stderr.contains("does not exist"));
    // Checked as arguments, before the report runs: the lake does not even
    // exist, yet the message is about the argument.
    let ranked = ["report", "--lake", "/nonexistent-lake", "top-channels", "--date", "2024-01-01"];
    let stderr = tvetl_fails(&[&ranked[..], &["--chart", "top.jpg"]].concat());
    assert!(stderr.contains("a chart is written as .png or .svg"), "{stderr}");
    let stderr = tvetl_fails(&[&ranked[..], &["--limit", "0"]].concat());
    assert!(stderr.contains("invalid value '0' for '--limit"), "{stderr}");
    let stderr = tvetl_fails(&["report", "--lake", "/nonexistent-lake", "user-average", "--chart", "avg.PDF"]);
    assert!(stderr.contains("a chart is written as .png or .svg"), "{stderr}");
    // A folder that is not a lake (an input folder, say) has no quarantine
    // to report, rather than an empty one.
    let input = tempfile::tempdir().unwrap();
    write_sessions(input.path(), "viewership/a.csv", &["e1,u1,c1,2024-01-01T10:00:00Z,2024-01-01T10:30:00Z"]);
    let stderr = tvetl_fails(&["report", "--lake", path(input.path()), "quarantine"]);
    assert!(stderr.contains("is not a lake (it has no _catalog/ or _warehouse/)"), "{stderr}");
    // A lake inside an input's prefix folder, or an input inside a lake:
    // each run would read what the last one wrote as raw files.
    let inside = input.path().join("viewership/lake");
    let stderr = tvetl_fails(&["run", "--input", path(input.path()), "--lake", path(&inside)]);
    assert!(stderr.contains("is inside the input's viewership/ folder"), "{stderr}");
    assert!(!inside.exists(), "refused before anything is written");
    let stderr = tvetl_fails(&["run", "--input", path(input.path()), "--lake", path(&input.path().join("."))]);
    assert!(stderr.contains("is inside the lake"), "{stderr}");
    // Beside the prefix folders is fine.
    tvetl(&["run", "--input", path(input.path()), "--lake", path(&input.path().join("lake")), "--quiet"]);

    // Limits are checked as arguments, before the run writes anything.
    let elsewhere = input.path().join("lake-2");
    let run = ["run", "--input", path(input.path()), "--lake", path(&elsewhere)];
    let stderr = tvetl_fails(&[&run[..], &["--memory-limit", "banana"]].concat());
    assert!(stderr.contains("invalid value 'banana' for '--memory-limit"), "{stderr}");
    assert!(stderr.contains("Memory must have a number"), "DuckDB's reason: {stderr}");
    for flag in ["--jobs", "--threads"] {
        let stderr = tvetl_fails(&[&run[..], &[flag, "0"]].concat());
        assert!(stderr.contains(&format!("invalid value '0' for '{flag}")), "{stderr}");
    }
    assert!(!elsewhere.exists());
    let stderr = tvetl_fails(&["generate", "--out", path(&elsewhere), "--rows", "10", "--rows-per-file", "0"]);
    assert!(stderr.contains("invalid value '0' for '--rows-per-file"), "{stderr}");
}

/// A raw file whose name is not UTF-8 (a Latin-1 name from an SFTP client)
/// cannot be an object key: it fails alone, shown with its bytes that are
/// not UTF-8 written `\xNN`, with a message that says why, as does a folder
/// so named, a file that cannot be opened, or one that is not a file (a
/// named pipe); and the other files still load: among them UTF-8 names that
/// a lossy or escaped spelling of the Latin-1 ones would give, and one named
/// like this program's temporary files.
#[test]
fn a_file_name_that_is_not_utf8_fails_alone() {
    use std::os::unix::ffi::OsStrExt;
    let (_dir, input, lake) = workspace();
    let body = |id: &str| {
        format!("event_id,user_id,channel_id,start_time,duration_seconds\n{id},u1,c1,2024-01-01T10:00:00Z,60\n")
    };
    write(&input, "viewership/ok.csv", body("e1").as_bytes());
    write(&input, "viewership/r\u{FFFD}sum\u{FFFD}.csv", body("e2").as_bytes());
    write(&input, "viewership/.batch.tmp-7/b.csv", body("e3").as_bytes());
    write(&input, "viewership/r\\xe9sum\\xe9.csv", body("e4").as_bytes());
    let latin1 = |name: &[u8]| input.join("viewership").join(std::ffi::OsStr::from_bytes(name));
    for name in [&b"r\xe9sum\xe9.csv"[..], b"r\xe8sum\xe9.csv"] {
        std::fs::write(latin1(name), body("e9")).unwrap();
    }
    std::fs::create_dir(latin1(b"d\xe9")).unwrap();
    std::fs::write(latin1(b"d\xe9/inner.csv"), body("e8")).unwrap();
    // And one that cannot be opened: a link to nowhere; and a named pipe,
    // which no writer feeds.
    std::os::unix::fs::symlink("/nonexistent/sessions.csv", input.join("viewership/dangling.csv")).unwrap();
    assert!(Command::new("mkfifo").arg(input.join("viewership/pipe.csv")).status().unwrap().success());
    let summary = run(&input, &lake);
    let files = summary["files"].as_array().unwrap();
    let failed: Vec<(&str, &str)> = files
        .iter()
        .filter(|f| f["status"] == "failed")
        .map(|f| (f["key"].as_str().unwrap(), f["error"].as_str().unwrap()))
        .collect();
    assert_eq!(failed.len(), 5, "{files:?}");
    assert_eq!(failed[0].0, "viewership/d\\xe9/");
    assert!(failed[0].1.contains("folder's name is not valid UTF-8"), "{failed:?}");
    assert_eq!(failed[1].0, "viewership/dangling.csv");
    assert!(failed[1].1.contains("no such object"), "{failed:?}");
    assert_eq!(failed[2].0, "viewership/pipe.csv");
    assert!(failed[2].1.contains("not a regular file"), "{failed:?}");
    for (i, key) in [(3, "viewership/r\\xe8sum\\xe9.csv"), (4, "viewership/r\\xe9sum\\xe9.csv")] {
        assert_eq!(failed[i].0, key);
        assert!(failed[i].1.starts_with(key) && failed[i].1.contains("file's name is not valid UTF-8"), "{failed:?}");
    }
    // A consumer keyed by `key` tells the shown Latin-1 name from the UTF-8
    // file of that spelling by the flag.
    let flagged: Vec<(&str, &str)> = files
        .iter()
        .filter(|f| f["name_not_utf8"] == true)
        .map(|f| (f["key"].as_str().unwrap(), f["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        flagged,
        [
            ("viewership/d\\xe9/", "failed"),
            ("viewership/r\\xe8sum\\xe9.csv", "failed"),
            ("viewership/r\\xe9sum\\xe9.csv", "failed")
        ]
    );
    let loaded: Vec<&str> =
        files.iter().filter(|f| f["status"] == "loaded").map(|f| f["key"].as_str().unwrap()).collect();
    assert_eq!(
        loaded,
        [
            "viewership/.batch.tmp-7/b.csv",
            "viewership/ok.csv",
            "viewership/r\\xe9sum\\xe9.csv",
            "viewership/r\u{FFFD}sum\u{FFFD}.csv"
        ]
    );
    assert_eq!((summary["rows_read"].as_u64(), summary["rows_accepted"].as_u64()), (Some(4), Some(4)));
    assert_eq!(summary["loads"]["viewership"]["rows_merged"], 4);
    let ids = tvetl(&[
        "sql",
        "--lake",
        path(&lake),
        "--format",
        "csv",
        "SELECT event_id FROM core.viewing_sessions ORDER BY 1",
    ]);
    assert_eq!(ids, "event_id\ne1\ne2\ne3\ne4\n", "each file's own session, none of the Latin-1 files'");
}

/// The run's table prints the names of failed files and unknown columns,
/// which whoever lands the files chooses: escaped, so that none can set the
/// terminal's title, rewrite a line or reorder it.
#[test]
fn the_run_table_prints_names_from_the_files_escaped() {
    let (_dir, input, lake) = workspace();
    let header = "event_id,user_id,channel_id,start_time,duration_seconds,\u{1b}]0;pwned\u{7}\n";
    write(&input, "viewership/ok.csv", format!("{header}e1,u1,c1,2024-01-01T10:00:00Z,60,x\n").as_bytes());
    write(&input, "viewership/esc\u{1b}[31mRED\r\u{202e}.txt", b"whatever");
    let table = tvetl(&["run", "--input", path(&input), "--lake", path(&lake), "--quiet"]);
    assert!(!table.chars().any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'), "{table:?}");
    assert!(table.contains("FAILED viewership/esc\\u{1b}[31mRED\\r\\u{202e}.txt: "), "{table}");
    assert!(table.contains("ignored unknown columns: \\u{1b}]0;pwned\\u{7} (in 1 file)"), "{table}");
}

/// `--input` pointed one folder too high (the demo's root instead of its
/// `raw/`) fails, names the folder to use and creates no lake; a folder that
/// has the prefixes but no files yet is a quiet run with nothing to load.
#[test]
fn input_without_raw_prefixes_is_an_error_with_a_hint() {
    let (dir, input, lake) = workspace();
    write(
        &input,
        "viewership/a.csv",
        b"event_id,user_id,channel_id,start_time,duration_seconds\ne1,u1,c1,2024-01-01T10:00:00Z,60\n",
    );
    let stderr = tvetl_fails(&["run", "--input", path(dir.path()), "--lake", path(&lake), "--quiet"]);
    assert!(stderr.contains("has none of channels/, demographics/, viewership/"), "{stderr}");
    assert!(stderr.contains(&format!("did you mean --input {}?", input.display())), "{stderr}");
    assert!(!lake.exists(), "a refused run created {}", lake.display());

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("viewership")).unwrap();
    let summary = run(&empty, &lake);
    assert_eq!((summary["rows_read"].as_u64(), summary["files"].as_array().map(Vec::len)), (Some(0), Some(0)));
}

/// A lake's path goes into the warehouse's SQL (its spill folder, the staged
/// files it reads): a quote in it must not break the statements, and a path
/// that is not UTF-8, which SQL text cannot name, or that DuckDB would read
/// as another path, is refused before anything is written.
#[test]
fn a_lake_path_with_a_quote_loads_and_one_not_utf8_is_refused_up_front() {
    let (dir, input, _) = workspace();
    write_sessions(&input, "viewership/a.csv", &["e1,u1,c1,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z"]);
    let quoted = dir.path().join("o'brien's lake");
    assert_eq!(run(&input, &quoted)["rows_accepted"], 1);
    assert_eq!(ranking(&top_channels(&quoted, "2024-01-01")), [(s("c1"), s("Unknown"), 3600.0, 1)]);
    assert_eq!(
        tvetl(&["sql", "--lake", path(&quoted), "--format", "csv", "SELECT COUNT(*) AS n FROM core.viewing_sessions"]),
        "n\n1\n"
    );

    use std::os::unix::ffi::OsStrExt;
    let not_utf8 = dir.path().join(std::ffi::OsStr::from_bytes(b"l\xe9ke"));
    let out = Command::new(env!("CARGO_BIN_EXE_tvetl"))
        .args(["run", "--input", path(&input), "--lake"])
        .arg(&not_utf8)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not valid UTF-8"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_dir(&not_utf8).unwrap().count(), 0, "nothing written in the lake");

    // DuckDB reads `?` in a database path as the start of options, and `\`
    // as a separator: refused up front too.
    for name in ["lake?mode=x", "la\\ke"] {
        let odd = dir.path().join(name);
        let stderr = tvetl_fails(&["run", "--input", path(&input), "--lake", path(&odd), "--quiet"]);
        assert!(stderr.contains("reads otherwise in a database path"), "{stderr}");
        assert_eq!(std::fs::read_dir(&odd).unwrap().count(), 0, "nothing written in the lake");
    }
}

/// A quarantine file's partition is its raw file's modification date. Read
/// again after that date moved (here with --reingest), the same bytes must
/// not leave their rejected records under both dates.
#[test]
fn the_same_file_read_again_after_its_date_moved_is_quarantined_once() {
    let (_dir, input, lake) = workspace();
    write_sessions(
        &input,
        "viewership/a.csv",
        &["e1,u1,c1,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z", "e2,,c1,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z"],
    );
    write(&input, "viewership/broken.csv.gz", b"not gzip");
    let dated = |day: u64| {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_704_067_200 + day * 86_400);
        for key in ["viewership/a.csv", "viewership/broken.csv.gz"] {
            std::fs::File::options().write(true).open(input.join(key)).unwrap().set_modified(at).unwrap();
        }
    };
    dated(4);
    run(&input, &lake);
    dated(8);
    json(&["run", "--input", path(&input), "--lake", path(&lake), "--quiet", "--format", "json", "--reingest"]);
    let mut files: Vec<String> =
        snapshot(&lake).into_keys().map(|k| k.display().to_string()).filter(|k| k.starts_with("quarantine/")).collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().all(|f| f.contains("/ingest_date=2024-01-09/")), "{files:?}");
    let report = json(&["report", "--lake", path(&lake), "quarantine", "--format", "json"]);
    assert_eq!(report["records_quarantined"], 1, "{report}");
}
