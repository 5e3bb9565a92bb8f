//! The stream ingest step over an in-memory lake: partitions by day,
//! quarantine with positions, replays, and failures part-way whose retries
//! complete the batch exactly once.

mod common;

use std::sync::atomic::Ordering;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use common::{JAN_1, MemoryCatalog, ids, seq, session, snapshot, staged_rows};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;
use tvetl_core::staging::StagingOptions;
use tvetl_core::store::{FaultyObjectStore, MemoryObjectStore, ObjectStore};
use tvetl_core::stream::{ShardId, StreamKind, StreamRecord, ingest_stream_batch};

struct Batch {
    shard: ShardId,
    data: Vec<(String, Vec<u8>)>,
}

impl Batch {
    fn kinesis(lines: &[String]) -> Batch {
        let shard = ShardId { kind: StreamKind::Kinesis, stream: "views".into(), shard: "shardId-000000000000".into() };
        Batch {
            shard,
            data: lines.iter().enumerate().map(|(i, l)| (seq(i as u64 + 1), l.clone().into_bytes())).collect(),
        }
    }

    /// Records from position index `from` (0-based) up to `to`, exclusive.
    fn records(&self, from: usize, to: usize) -> Vec<StreamRecord<'_>> {
        // Arrived on 2024-01-03, whatever the sessions' days.
        let arrival_us = (JAN_1 + 2 * 86_400 + 600) * 1_000_000;
        self.data[from..to]
            .iter()
            .map(|(position, data)| StreamRecord { position: position.clone(), arrival_us, data })
            .collect()
    }

    /// Ingests every record of the batch into `lake` with default options.
    fn ingest_all(
        &self,
        lake: &MemoryObjectStore,
    ) -> (tvetl_core::stream::StreamReport, Option<tvetl_core::stream::StreamFailure>) {
        ingest_stream_batch(
            lake,
            &MemoryCatalog::default(),
            &self.shard,
            &self.records(0, self.data.len()),
            &StagingOptions::default(),
        )
    }

    fn index_of(&self, position: &str) -> usize {
        self.data.iter().position(|(p, _)| p == position).expect("a position of the batch")
    }
}

/// Days of sessions interleaved, as late records are: two days, a bad
/// timestamp, a line that is not JSON, and one record with two sessions.
fn mixed_lines() -> Vec<String> {
    vec![
        session("e1", 0, 10),
        session("e2", 1, 9),
        session("e3", 0, 11),
        r#"{"event_id":"e4","user_id":"u4","channel_id":"c1","start_time":"yesterday","duration_seconds":60}"#.into(),
        "{not json".into(),
        session("e6", 1, 10),
        format!("{}\n{}", session("e7", 0, 12), session("e8", 1, 11)),
        session("e9", 0, 13),
    ]
}

use std::io::Read;

fn quarantined(lake: &dyn ObjectStore) -> Vec<Value> {
    let mut out = Vec::new();
    for object in lake.list("quarantine/").unwrap() {
        let mut text = String::new();
        lake.open(&object.key).unwrap().read_to_string(&mut text).unwrap();
        out.extend(text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
    }
    out
}

#[test]
fn one_file_per_day_and_bad_records_quarantined_with_positions() {
    let batch = Batch::kinesis(&mixed_lines());
    let lake = MemoryObjectStore::new();
    let catalog = MemoryCatalog::default();
    let records = batch.records(0, batch.data.len());
    let (report, failure) = ingest_stream_batch(&lake, &catalog, &batch.shard, &records, &StagingOptions::default());
    assert!(failure.is_none(), "{failure:?}");

    assert_eq!(report.counts.rows_read, 9, "8 records, one of them with two sessions");
    assert_eq!(report.counts.rows_accepted, 7);
    assert_eq!(report.counts.quarantined.bad_timestamp, 1);
    assert_eq!(report.counts.quarantined.malformed, 1);
    assert_eq!(report.already_written, 0);

    let stem = "kinesis~views~shardId-000000000000";
    let keys: Vec<String> = lake.list("").unwrap().into_iter().map(|m| m.key).collect();
    assert_eq!(
        keys,
        [
            format!("quarantine/viewership/ingest_date=2024-01-03/{stem}~{}-{}.jsonl", seq(4), seq(5)),
            format!("staging/viewership/event_date=2024-01-01/{stem}~{}-{}.parquet", seq(1), seq(8)),
            format!("staging/viewership/event_date=2024-01-02/{stem}~{}-{}.parquet", seq(2), seq(7)),
        ]
    );
    assert_eq!(catalog.partitions.lock().unwrap()["viewership"], ["2024-01-01", "2024-01-02"]);
    assert_eq!(catalog.partitions.lock().unwrap()["quarantine_viewership"], ["2024-01-03"], "the arrival day");

    let rows = staged_rows(&lake);
    assert_eq!(ids(&rows), ["e1", "e2", "e3", "e6", "e7", "e8", "e9"]);
    // Lineage: the batch's first position in the key, the file's range
    // (marked ~) as the version, and each row numbered by its line's place
    // in the batch (the record of e7 and e8 holds lines 7 and 8).
    let batch_key = format!("kinesis/views/shardId-000000000000/{}", seq(1));
    assert!(rows.iter().all(|r| r.source_key == batch_key), "{rows:?}");
    let in_file = |first: u64, last: u64| {
        let range = format!("{}-{}", seq(first), seq(last));
        rows.iter()
            .filter(|r| r.source_version == format!("~{range}") && r.file.ends_with(&format!("~{range}.parquet")))
            .map(|r| (r.event_id.as_str(), r.record_no))
            .collect::<Vec<_>>()
    };
    assert_eq!(in_file(1, 8), [("e1", 1), ("e3", 3), ("e7", 7), ("e9", 9)]);
    assert_eq!(in_file(2, 7), [("e2", 2), ("e6", 6), ("e8", 8)]);

    let bad = quarantined(&lake);
    assert_eq!(bad.len(), 2);
    assert_eq!(bad[0]["reason"], "BAD_TIMESTAMP");
    assert_eq!(bad[0]["field"], "start_time");
    assert_eq!(bad[0]["stream"]["shard"], "shardId-000000000000");
    assert_eq!(bad[0]["stream"]["position"], seq(4).as_str());
    assert_eq!(bad[1]["reason"], "MALFORMED");
    assert_eq!(bad[1]["stream"]["position"], seq(5).as_str());
    assert_eq!(bad[1]["original"], "{not json");
}

#[test]
fn a_replayed_batch_writes_nothing_new() {
    let batch = Batch::kinesis(&mixed_lines());
    let lake = MemoryObjectStore::new();
    let catalog = MemoryCatalog::default();
    let records = batch.records(0, batch.data.len());
    let options = StagingOptions::default();
    ingest_stream_batch(&lake, &catalog, &batch.shard, &records, &options);
    let before = snapshot(&lake);

    let (report, failure) = ingest_stream_batch(&lake, &catalog, &batch.shard, &records, &options);
    assert!(failure.is_none());
    assert_eq!(snapshot(&lake), before, "same objects, same bytes");
    assert_eq!(report.counts.rows_read, 0);
    assert_eq!(report.already_written, 9);
    assert!(report.staged.is_empty() && report.quarantined.is_empty());
    // Partitions are registered again (idempotent), in case Glue missed them.
    assert_eq!(report.partitions, ["2024-01-01", "2024-01-02"]);
}

/// Fails the lake after `successes` commits, then retries as Lambda does:
/// from the position the failure names to the end of the batch.
fn fail_then_retry(successes: usize) {
    let batch = Batch::kinesis(&mixed_lines());
    let lake = FaultyObjectStore::new();
    let catalog = MemoryCatalog::default();
    let options = StagingOptions::default();
    let all = batch.data.len();

    lake.fail_commits_after(successes);
    let (first, failure) = ingest_stream_batch(&lake, &catalog, &batch.shard, &batch.records(0, all), &options);
    let failure = failure.expect("the lake fails part-way");
    assert!(failure.error.is_retryable());
    // Whichever group failed (day 1, day 2 or the quarantine), the batch's
    // first record: the retry starts where this attempt did.
    assert_eq!(failure.position, seq(1), "the batch's first record");
    assert_eq!(first.staged.len() + first.quarantined.len(), successes);

    lake.heal();
    let from = batch.index_of(&failure.position);
    let (r, f) = ingest_stream_batch(&lake, &catalog, &batch.shard, &batch.records(from, all), &options);
    assert!(f.is_none());
    let records_in = |key: &String| {
        let mut text = String::new();
        lake.open(key).unwrap().read_to_string(&mut text).unwrap();
        text.lines().count() as u64
    };
    let first_wrote: u64 =
        first.staged.iter().map(|w| w.rows).sum::<u64>() + first.quarantined.iter().map(records_in).sum::<u64>();
    assert_eq!(r.already_written, first_wrote, "what the first attempt wrote is skipped");

    let rows = staged_rows(&lake);
    assert_eq!(ids(&rows), ["e1", "e2", "e3", "e6", "e7", "e8", "e9"], "every session exactly once");
    assert_eq!(quarantined(&lake).len(), 2, "every bad record exactly once");
    let days = catalog.partitions.lock().unwrap()["viewership"].clone();
    assert_eq!(days, ["2024-01-01", "2024-01-02"]);
}

#[test]
fn a_failure_before_anything_is_written_names_the_first_record() {
    fail_then_retry(0);
}

#[test]
fn a_retry_after_a_partial_write_completes_the_batch_exactly_once() {
    fail_then_retry(1);
    fail_then_retry(2);
}

/// The delivery the warehouse keeps of `id`: the greatest (source_key,
/// source_record_no), as its load ranks them.
fn last_delivery(id: &str, rows: Vec<common::StagedRow>) -> common::StagedRow {
    let mut xs: Vec<_> = rows.into_iter().filter(|r| r.event_id == id).collect();
    xs.sort_by(|a, b| b.source_key.cmp(&a.source_key).then(b.record_no.cmp(&a.record_no)));
    xs.into_iter().next().expect("a delivery of the id")
}

/// x is delivered on 2024-01-02 (record 2), then corrected to 2024-01-01
/// (record 3). Day 1's file {1, 3} commits and day 2's {2} fails: however
/// the retries go, record 3 must still rank above record 2, which a retry
/// writes. (Had the retry started at record 2, a batch of its own, its key
/// would have ranked above the first attempt's.)
#[test]
fn records_written_by_different_attempts_rank_by_position() {
    let lines = [session("a", 0, 1), session("x", 1, 5), session("x", 0, 5), session("c", 0, 2)];
    let batch = Batch::kinesis(&lines);
    // The retry is the same batch, or the same with a newer record (a Kafka
    // re-poll, or Kinesis reading on from the first record).
    for retry_to in [3, 4] {
        let lake = FaultyObjectStore::new();
        let catalog = MemoryCatalog::default();
        let options = StagingOptions::default();
        lake.fail_commits_after(1);
        let (_, failure) = ingest_stream_batch(&lake, &catalog, &batch.shard, &batch.records(0, 3), &options);
        let failure = failure.expect("day 2's file fails");
        assert_eq!(failure.position, seq(1));
        lake.heal();
        let from = batch.index_of(&failure.position);
        let (report, failure) =
            ingest_stream_batch(&lake, &catalog, &batch.shard, &batch.records(from, retry_to), &options);
        assert!(failure.is_none());
        assert_eq!(report.already_written, 2, "day 1's file holds records 1 and 3");

        let rows = staged_rows(&lake);
        let expected: &[&str] = if retry_to == 3 { &["a", "x", "x"] } else { &["a", "c", "x", "x"] };
        assert_eq!(ids(&rows), expected, "every record once");
        let versions: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.source_version.as_str()).collect();
        assert_eq!(versions.len(), if retry_to == 3 { 2 } else { 3 }, "a version per file: {versions:?}");
        assert!(rows.iter().all(|r| r.source_key.ends_with(&seq(1))), "one key, the batch's first record's");
        let x = last_delivery("x", rows);
        assert_eq!(x.start_us, (JAN_1 + 5 * 3600) * 1_000_000, "record 3, on 2024-01-01, retry to {retry_to}");
        assert!(!report.starts_inside_earlier_attempt);
    }
}

/// What the lineage cannot rank (a batch that starts inside a file an
/// earlier attempt wrote, as a retry shorter than that attempt does) is at
/// least reported: nothing is lost or written twice, but the later batch's
/// key ranks its older record first.
#[test]
fn a_batch_starting_inside_an_earlier_attempts_file_is_reported() {
    // a (day 1), b (day 2), x (day 2), x corrected (day 1).
    let lines = [session("a", 0, 1), session("b", 1, 1), session("x", 1, 5), session("x", 0, 5)];
    let batch = Batch::kinesis(&lines);
    let lake = FaultyObjectStore::new();
    let catalog = MemoryCatalog::default();
    let options = StagingOptions::default();
    lake.fail_commits_after(1);
    let (first, failure) = ingest_stream_batch(&lake, &catalog, &batch.shard, &batch.records(0, 4), &options);
    assert_eq!(failure.expect("day 2 fails").position, seq(1));
    assert!(!first.starts_inside_earlier_attempt);
    lake.heal();
    // A shorter retry, then the next batch from record 3: inside day 1's
    // file, which holds records 1 and 4.
    let (retry, failure) = ingest_stream_batch(&lake, &catalog, &batch.shard, &batch.records(0, 2), &options);
    assert!(failure.is_none() && !retry.starts_inside_earlier_attempt);
    let (next, failure) = ingest_stream_batch(&lake, &catalog, &batch.shard, &batch.records(2, 4), &options);
    assert!(failure.is_none());
    assert!(next.starts_inside_earlier_attempt);
    assert_eq!(ids(&staged_rows(&lake)), ["a", "b", "x", "x"], "every record once");
}

/// The warehouse keeps an event's delivery with the greatest (source_key,
/// source_record_no). Two deliveries of one event in one batch, the later
/// one moving it to another day, land in two days' files: the later record
/// must still rank first, and a later batch's above both.
#[test]
fn the_later_record_ranks_first_whatever_day_file_it_lands_in() {
    let batch = Batch::kinesis(&[
        session("a", 0, 1),
        session("x", 1, 5), // x first delivered on 2024-01-02 …
        session("x", 0, 5), // … then corrected to 2024-01-01
        session("b", 1, 6),
    ]);
    let lake = MemoryObjectStore::new();
    let catalog = MemoryCatalog::default();
    let options = StagingOptions::default();
    let (_, failure) = ingest_stream_batch(&lake, &catalog, &batch.shard, &batch.records(0, 4), &options);
    assert!(failure.is_none());
    let rank = |rows: &mut Vec<common::StagedRow>| {
        rows.sort_by(|a, b| b.source_key.cmp(&a.source_key).then(b.record_no.cmp(&a.record_no)));
    };
    let mut xs: Vec<_> = staged_rows(&lake).into_iter().filter(|r| r.event_id == "x").collect();
    assert_eq!(xs.len(), 2);
    rank(&mut xs);
    assert_eq!(xs[0].start_us, (JAN_1 + 5 * 3600) * 1_000_000, "record 3's delivery, on 2024-01-01");

    // A later batch delivers x again, on 2024-01-02: it ranks first.
    let later = Batch {
        shard: batch.shard.clone(),
        data: vec![(seq(5), session("x", 1, 7).into_bytes()), (seq(6), session("c", 0, 2).into_bytes())],
    };
    let (_, failure) = ingest_stream_batch(&lake, &catalog, &later.shard, &later.records(0, 2), &options);
    assert!(failure.is_none());
    let mut xs: Vec<_> = staged_rows(&lake).into_iter().filter(|r| r.event_id == "x").collect();
    rank(&mut xs);
    assert_eq!(xs[0].start_us, (JAN_1 + 86_400 + 7 * 3600) * 1_000_000, "the later batch's delivery");
}

/// A listing fails before anything is written: the retry must start at the
/// batch's first record, even when a later record's day is listed first
/// (days are listed in date order), or Lambda checkpoints past records that
/// were never written.
#[test]
fn a_listing_failure_names_the_batchs_first_record() {
    // e1 is on 2024-01-02 and comes first; e2 on 2024-01-01.
    let batch = Batch::kinesis(&[session("e1", 1, 10), session("e2", 0, 10), session("e3", 1, 11)]);
    let lake = FaultyObjectStore::new();
    let catalog = MemoryCatalog::default();
    let options = StagingOptions::default();
    let all = batch.data.len();
    lake.fail_lists(true);
    let (report, failure) = ingest_stream_batch(&lake, &catalog, &batch.shard, &batch.records(0, all), &options);
    let failure = failure.expect("the listing fails");
    assert!(failure.error.is_retryable());
    assert_eq!(failure.position, seq(1));
    assert!(report.staged.is_empty() && lake.inner.list("staging/").unwrap().is_empty(), "nothing written");

    lake.heal();
    let from = batch.index_of(&failure.position);
    let (_, failure) = ingest_stream_batch(&lake, &catalog, &batch.shard, &batch.records(from, all), &options);
    assert!(failure.is_none());
    assert_eq!(ids(&staged_rows(&lake)), ["e1", "e2", "e3"], "every session once");
}

#[test]
fn a_catalog_failure_is_retried_from_the_batchs_first_record() {
    let batch = Batch::kinesis(&mixed_lines());
    let lake = MemoryObjectStore::new();
    let catalog = MemoryCatalog::default();
    catalog.fail_next.store(1, Ordering::SeqCst);
    let options = StagingOptions::default();
    let all = batch.data.len();
    let (_, failure) = ingest_stream_batch(&lake, &catalog, &batch.shard, &batch.records(0, all), &options);
    let failure = failure.expect("Glue fails");
    assert_eq!(failure.position, seq(1));
    assert!(failure.to_string().contains("Glue unavailable"));

    let (report, failure) = ingest_stream_batch(&lake, &catalog, &batch.shard, &batch.records(0, all), &options);
    assert!(failure.is_none());
    assert_eq!(report.already_written, 4, "day 1's file was written before Glue failed");
    assert_eq!(ids(&staged_rows(&lake)).len(), 7);
    assert_eq!(catalog.partitions.lock().unwrap()["viewership"], ["2024-01-01", "2024-01-02"]);
}

#[test]
fn kafka_offsets_are_padded_so_names_sort_like_offsets() {
    let shard = ShardId { kind: StreamKind::Kafka, stream: "views.v1".into(), shard: "3".into() };
    let lines = [session("k1", 0, 1), session("k2", 0, 2)];
    let records: Vec<StreamRecord<'_>> = lines
        .iter()
        .zip(["9", "10"])
        .map(|(l, offset)| StreamRecord { position: offset.into(), arrival_us: 0, data: l.as_bytes() })
        .collect();
    let lake = MemoryObjectStore::new();
    let (report, failure) =
        ingest_stream_batch(&lake, &MemoryCatalog::default(), &shard, &records, &StagingOptions::default());
    assert!(failure.is_none());
    assert_eq!(
        report.staged[0].key,
        "staging/viewership/event_date=2024-01-01/kafka~views.v1~3~00000000000000000009-00000000000000000010.parquet"
    );
    let rows = staged_rows(&lake);
    assert_eq!(rows.iter().map(|r| (r.event_id.as_str(), r.record_no)).collect::<Vec<_>>(), [("k1", 1), ("k2", 2)]);
}

#[test]
fn an_empty_record_is_quarantined_not_dropped() {
    let batch = Batch::kinesis(&["   ".to_owned(), session("e1", 0, 1)]);
    let lake = MemoryObjectStore::new();
    let (report, _) = batch.ingest_all(&lake);
    assert_eq!(report.counts.rows_read, 2);
    assert_eq!(report.counts.quarantined.malformed, 1);
    assert_eq!(quarantined(&lake)[0]["message"], "empty record");
}

#[test]
fn a_pretty_printed_session_is_one_record() {
    let one: Value = serde_json::from_str(&session("e1", 0, 1)).unwrap();
    let pretty = serde_json::to_string_pretty(&one).unwrap();
    assert!(pretty.lines().count() > 5, "{pretty}");
    // Two pretty-printed sessions in one record are neither one value nor
    // JSON Lines: each of their lines is quarantined, none lost.
    let two = format!("{pretty}\n{pretty}");
    let mut late: Value = serde_json::from_str(&session("e3", 0, 3)).unwrap();
    late["start_time"] = "yesterday".into();
    let bad = serde_json::to_string_pretty(&late).unwrap();
    let batch = Batch::kinesis(&[format!("\u{feff}\n{pretty}\n"), session("e2", 0, 2), bad.clone(), two.clone()]);
    let lake = MemoryObjectStore::new();
    let (report, failure) = batch.ingest_all(&lake);
    assert!(failure.is_none(), "{failure:?}");
    assert_eq!(ids(&staged_rows(&lake)), ["e1", "e2"]);
    let lines_of_two = two.lines().count() as u64;
    assert_eq!(report.counts.rows_read, 3 + lines_of_two);
    assert_eq!(report.counts.quarantined.bad_timestamp, 1);
    assert_eq!(report.counts.quarantined.malformed, lines_of_two);
    let rejected = quarantined(&lake);
    let timestamp = rejected.iter().find(|q| q["reason"] == "BAD_TIMESTAMP").unwrap();
    assert_eq!(timestamp["original"], bad.as_str(), "the record as it was written, over its lines");
    assert_eq!(timestamp["line"], 1);
}

#[test]
fn staged_files_have_the_staging_schema() {
    let batch = Batch::kinesis(&[session("e1", 0, 1)]);
    let lake = MemoryObjectStore::new();
    batch.ingest_all(&lake);
    let key = lake.list("staging/").unwrap()[0].key.clone();
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(lake.bytes(&key).unwrap())).unwrap();
    let schema = reader.schema().clone();
    assert_eq!(schema.fields(), tvetl_core::schema::staging_schema(tvetl_core::Source::Viewership).fields());
    let batch = reader.build().unwrap().next().unwrap().unwrap();
    assert_eq!(batch.column_by_name("duration_seconds").unwrap().as_primitive::<Int64Type>().value(0), 600);
    assert!(!batch.column_by_name("end_time").unwrap().is_null(0));
}
