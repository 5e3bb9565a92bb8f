//! `tvetl report quarantine`: what the lake's quarantine holds, counted per
//! object and reason code, with the files that could not be read and the
//! first records themselves, for whoever has to fix the data at its source.
//!
//! It reads the quarantine files, not the warehouse: rejected records never
//! reach the warehouse.

use std::collections::{BTreeMap, BinaryHeap};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tvetl_core::Source;
use tvetl_core::quarantine::QuarantineReason;

use crate::report::{OutputFormat, csv_line, printable, truncate};

/// Which quarantined records to report.
#[derive(Debug, Clone, Default)]
pub struct QuarantineFilter {
    pub source: Option<Source>,
    pub reason: Option<QuarantineReason>,
    /// How many records to list in full (all are counted).
    pub limit: usize,
}

/// One quarantined record, as the ingest step wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantinedEntry {
    pub source_key: String,
    pub record_no: u64,
    pub line: u64,
    pub reason: QuarantineReason,
    pub field: Option<String>,
    pub message: String,
    pub original: String,
}

/// The records of one reason code from one object version (one quarantine
/// file). `ingest_date` is the day that version landed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectCount {
    pub source: &'static str,
    pub source_key: String,
    pub ingest_date: String,
    pub reason: QuarantineReason,
    pub records: u64,
}

/// A raw object that could not be read at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnreadableObject {
    pub source_key: String,
    pub source_version: String,
    pub error: String,
}

/// What `report quarantine` prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QuarantineReport {
    pub records_quarantined: u64,
    pub by_reason: BTreeMap<QuarantineReason, u64>,
    pub objects: Vec<ObjectCount>,
    pub unreadable: Vec<UnreadableObject>,
    /// The first `limit` matching records, by object key and record number.
    pub records: Vec<QuarantinedEntry>,
}

/// Reads `LAKE/quarantine/` (every source, or `filter.source`). A line that
/// is not a quarantine record is an error naming its file and line: the lake
/// has been written by something else.
pub fn read_quarantine(lake: &Path, filter: &QuarantineFilter) -> anyhow::Result<QuarantineReport> {
    let mut report = QuarantineReport::default();
    let mut counts: BTreeMap<(&'static str, String, String, QuarantineReason), u64> = BTreeMap::new();
    let mut samples = Samples::default();
    for source in Source::ALL {
        if filter.source.is_some_and(|s| s != source) {
            continue;
        }
        for (ingest_date, path) in quarantine_files(&lake.join("quarantine").join(source.name()))? {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with("unreadable-") && name.ends_with(".json") {
                if filter.reason.is_none() {
                    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                    let object: UnreadableObject = serde_json::from_str(&text)
                        .with_context(|| format!("{}: not a record of an unreadable file", path.display()))?;
                    report.unreadable.push(object);
                }
                continue;
            }
            if !name.ends_with(".jsonl") {
                continue;
            }
            let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
                let line = line.with_context(|| format!("reading {} line {}", path.display(), i + 1))?;
                let entry: QuarantinedEntry = serde_json::from_str(&line)
                    .with_context(|| format!("{} line {}: not a quarantine record", path.display(), i + 1))?;
                if filter.reason.is_some_and(|r| r != entry.reason) {
                    continue;
                }
                report.records_quarantined += 1;
                *report.by_reason.entry(entry.reason).or_default() += 1;
                *counts
                    .entry((source.name(), entry.source_key.clone(), ingest_date.clone(), entry.reason))
                    .or_default() += 1;
                samples.offer(entry, filter.limit);
            }
        }
    }
    report.records = samples.into_sorted();
    report.unreadable.sort_by(|a, b| (&a.source_key, &a.source_version).cmp(&(&b.source_key, &b.source_version)));
    report.objects = counts
        .into_iter()
        .map(|((source, source_key, ingest_date, reason), records)| ObjectCount {
            source,
            source_key,
            ingest_date,
            reason,
            records,
        })
        .collect();
    Ok(report)
}

/// The first records by object key and record number, whatever order the
/// quarantine files are read in (their names are hashes): a max-heap of at
/// most `limit` records, so memory does not grow with the quarantine.
#[derive(Default)]
struct Samples(BinaryHeap<Sample>);

struct Sample(QuarantinedEntry);

impl Sample {
    fn order_key(&self) -> (&str, u64) {
        (&self.0.source_key, self.0.record_no)
    }
}

impl PartialEq for Sample {
    fn eq(&self, other: &Self) -> bool {
        self.order_key() == other.order_key()
    }
}

impl Eq for Sample {}

impl PartialOrd for Sample {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Sample {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order_key().cmp(&other.order_key())
    }
}

impl Samples {
    fn offer(&mut self, entry: QuarantinedEntry, limit: usize) {
        if limit == 0 {
            return;
        }
        let sample = Sample(entry);
        if self.0.len() < limit {
            self.0.push(sample);
        } else if self.0.peek().is_some_and(|last| sample < *last) {
            self.0.pop();
            self.0.push(sample);
        }
    }

    fn into_sorted(self) -> Vec<QuarantinedEntry> {
        self.0.into_sorted_vec().into_iter().map(|s| s.0).collect()
    }
}

/// `(ingest date, file)` of every file under `dir/ingest_date=*/`, sorted.
fn quarantine_files(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    let days = match std::fs::read_dir(dir) {
        Ok(days) => days,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for day in days {
        let day = day.with_context(|| format!("listing {}", dir.display()))?.path();
        let Some(date) = day.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("ingest_date=")) else {
            continue;
        };
        let date = date.to_owned();
        for file in std::fs::read_dir(&day).with_context(|| format!("listing {}", day.display()))? {
            files.push((date.clone(), file.with_context(|| format!("listing {}", day.display()))?.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// Renders the report.
pub fn render_quarantine(report: &QuarantineReport, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => serde_json::to_string(report).expect("serializes"),
        OutputFormat::Csv => {
            let mut out = csv_line(&["source", "source_key", "ingest_date", "reason", "records"].map(String::from));
            for o in &report.objects {
                out.push_str(&csv_line(&[
                    o.source.to_owned(),
                    o.source_key.clone(),
                    o.ingest_date.clone(),
                    o.reason.code().to_owned(),
                    o.records.to_string(),
                ]));
            }
            out
        }
        OutputFormat::Table => {
            let objects = report
                .objects
                .iter()
                .map(|o| (&o.source_key, &o.ingest_date))
                .collect::<std::collections::BTreeSet<_>>();
            let counted = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
            let mut out = format!(
                "Quarantine: {} from {}; unreadable files: {}\n",
                counted(report.records_quarantined as usize, "record", "records"),
                counted(objects.len(), "object", "objects"),
                report.unreadable.len()
            );
            for (reason, n) in &report.by_reason {
                out.push_str(&format!("  {:<14} {:>10}\n", reason.code(), n));
            }
            if !report.objects.is_empty() {
                out.push_str(&format!(
                    "\n{:<13} {:<12} {:<14} {:>8}  object\n",
                    "source", "ingest_date", "reason", "records"
                ));
                for o in &report.objects {
                    out.push_str(&format!(
                        "{:<13} {:<12} {:<14} {:>8}  {}\n",
                        o.source,
                        o.ingest_date,
                        o.reason.code(),
                        o.records,
                        printable(&o.source_key)
                    ));
                }
            }
            if !report.unreadable.is_empty() {
                out.push_str("\nUnreadable files (nothing of them loaded)\n");
                for u in &report.unreadable {
                    out.push_str(&format!("  {}\n", printable(&u.error)));
                }
            }
            if !report.records.is_empty() {
                out.push_str(&format!("\nFirst {} records\n", report.records.len()));
                for r in &report.records {
                    let field = r.field.as_deref().map(|f| format!(" [{}]", printable(f))).unwrap_or_default();
                    out.push_str(&format!(
                        "  {} line {} (record {}): {}{}: {}\n      {}\n",
                        printable(&r.source_key),
                        r.line,
                        r.record_no,
                        r.reason.code(),
                        field,
                        printable(&r.message),
                        truncate(&r.original, 100)
                    ));
                }
            }
            if report.records_quarantined == 0 && report.unreadable.is_empty() {
                out.push_str("  (nothing quarantined)\n");
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(lake: &Path, rel: &str, text: &str) {
        let path = lake.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn record(key: &str, record_no: u64, reason: &str) -> String {
        serde_json::json!({
            "source_key": key, "record_no": record_no, "line": record_no + 1, "reason": reason,
            "field": null, "message": "m", "original": format!("row {record_no}"),
        })
        .to_string()
    }

    #[test]
    fn records_are_counted_per_object_and_the_first_ones_kept_in_key_order() {
        let lake = tempfile::tempdir().unwrap();
        // File names are hashes: b.csv's file sorts before a.csv's.
        let b: Vec<String> = (1..=4).map(|n| record("viewership/b.csv", n, "MALFORMED")).collect();
        write(lake.path(), "quarantine/viewership/ingest_date=2024-01-02/part-0a.jsonl", &(b.join("\n") + "\n"));
        let a = [record("viewership/a.csv", 9, "TOO_LONG"), record("viewership/a.csv", 3, "MALFORMED")];
        write(lake.path(), "quarantine/viewership/ingest_date=2024-01-01/part-ff.jsonl", &(a.join("\n") + "\n"));
        let unreadable =
            r#"{"source_key": "channels/x.json.gz", "source_version": "v1", "size": 3, "error": "bad gzip"}"#;
        write(lake.path(), "quarantine/channels/ingest_date=2024-01-01/unreadable-01.json", unreadable);

        let all = read_quarantine(lake.path(), &QuarantineFilter { limit: 3, ..Default::default() }).unwrap();
        assert_eq!(all.records_quarantined, 6);
        assert_eq!(all.by_reason, BTreeMap::from([(QuarantineReason::Malformed, 5), (QuarantineReason::TooLong, 1)]));
        let kept: Vec<(&str, u64)> = all.records.iter().map(|r| (r.source_key.as_str(), r.record_no)).collect();
        assert_eq!(kept, [("viewership/a.csv", 3), ("viewership/a.csv", 9), ("viewership/b.csv", 1)]);
        let objects: Vec<(&str, &str, QuarantineReason, u64)> =
            all.objects.iter().map(|o| (o.source_key.as_str(), o.ingest_date.as_str(), o.reason, o.records)).collect();
        assert_eq!(
            objects,
            [
                ("viewership/a.csv", "2024-01-01", QuarantineReason::Malformed, 1),
                ("viewership/a.csv", "2024-01-01", QuarantineReason::TooLong, 1),
                ("viewership/b.csv", "2024-01-02", QuarantineReason::Malformed, 4),
            ]
        );
        assert_eq!(all.unreadable.len(), 1);
        // The table prints each unreadable file's error as the ingest wrote it.
        assert!(render_quarantine(&all, OutputFormat::Table).contains("\n  bad gzip\n"));

        let only =
            QuarantineFilter { source: Some(Source::Viewership), reason: Some(QuarantineReason::TooLong), limit: 10 };
        let too_long = read_quarantine(lake.path(), &only).unwrap();
        assert_eq!(too_long.records_quarantined, 1);
        assert!(too_long.unreadable.is_empty(), "a reason filter leaves out unreadable files");
        assert_eq!(too_long.records[0].original, "row 9");
    }

    #[test]
    fn names_from_the_files_reach_the_terminal_escaped() {
        // Whoever lands a file names it: an escape sequence that sets the
        // terminal's title, a carriage return, a line break and a
        // right-to-left override, in the key, the error and the message.
        let lake = tempfile::tempdir().unwrap();
        let key = "viewership/esc\u{1b}]0;pwned\u{7}\rfake\n\u{202e}vsc.csv";
        let rejected = serde_json::json!({
            "source_key": key, "record_no": 1, "line": 2, "reason": "BAD_TIMESTAMP",
            "field": "start\u{1b}[31m", "message": "'\u{1b}[2J' does not parse", "original": "x",
        });
        write(lake.path(), "quarantine/viewership/ingest_date=2024-01-01/part-1.jsonl", &format!("{rejected}\n"));
        let unreadable = serde_json::json!({"source_key": key, "source_version": "v", "size": 1, "error": format!("{key}: bad gzip")});
        write(lake.path(), "quarantine/viewership/ingest_date=2024-01-01/unreadable-1.json", &unreadable.to_string());
        let report = read_quarantine(lake.path(), &QuarantineFilter { limit: 5, ..Default::default() }).unwrap();
        let table = render_quarantine(&report, OutputFormat::Table);
        assert!(!table.chars().any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'), "{table:?}");
        let escaped = "viewership/esc\\u{1b}]0;pwned\\u{7}\\rfake\\n\\u{202e}vsc.csv";
        assert_eq!(table.matches(escaped).count(), 3, "the object, the unreadable file and the record: {table}");
        assert!(table.contains("BAD_TIMESTAMP [start\\u{1b}[31m]: '\\u{1b}[2J' does not parse"), "{table}");
    }

    #[test]
    fn a_line_that_is_not_a_quarantine_record_is_named_with_its_file_and_line() {
        let lake = tempfile::tempdir().unwrap();
        let text = record("viewership/a.csv", 1, "MALFORMED") + "\n{\"source_key\": 5}\n";
        write(lake.path(), "quarantine/viewership/ingest_date=2024-01-01/part-1.jsonl", &text);
        let err = read_quarantine(lake.path(), &QuarantineFilter::default()).unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("part-1.jsonl line 2: not a quarantine record"), "{message}");
    }

    #[test]
    fn a_lake_with_no_quarantine_reports_nothing() {
        let lake = tempfile::tempdir().unwrap();
        let report = read_quarantine(lake.path(), &QuarantineFilter { limit: 5, ..Default::default() }).unwrap();
        assert_eq!(report, QuarantineReport::default());
        assert!(render_quarantine(&report, OutputFormat::Table).contains("(nothing quarantined)"));
    }
}
