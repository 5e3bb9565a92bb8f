//! Compaction over a lake of many small stream files: few files after, the
//! same rows, a second run that changes nothing, and an interrupted run that
//! the next one finishes.

mod common;

use common::{MemoryCatalog, StagedRow, seq, session, snapshot, staged_rows};
use tvetl_core::Source;
use tvetl_core::compact::{CompactionOptions, compact_table, unremoved_members};
use tvetl_core::staging::StagingOptions;
use tvetl_core::store::{FaultyObjectStore, MemoryObjectStore, ObjectMeta, ObjectStore};
use tvetl_core::stream::{ShardId, StreamKind, StreamRecord, ingest_stream_batch};

/// 30 batches of 20 records over two shards and two days: 60 small files per
/// day at most, 600 sessions.
fn small_files(lake: &dyn ObjectStore) {
    let catalog = MemoryCatalog::default();
    for batch in 0..30u64 {
        let shard = ShardId {
            kind: StreamKind::Kinesis,
            stream: "views".into(),
            shard: format!("shardId-00000000000{}", batch % 2),
        };
        let lines: Vec<(String, String)> = (0..20u64)
            .map(|i| {
                let n = batch * 20 + i;
                (seq(n + 1), session(&format!("e{n:04}"), (n % 2) as i64, (n % 20) as i64))
            })
            .collect();
        let records: Vec<StreamRecord<'_>> = lines
            .iter()
            .map(|(position, line)| StreamRecord { position: position.clone(), arrival_us: 0, data: line.as_bytes() })
            .collect();
        let (_, failure) = ingest_stream_batch(lake, &catalog, &shard, &records, &StagingOptions::default());
        assert!(failure.is_none());
    }
}

fn options(target_bytes: u64) -> CompactionOptions {
    CompactionOptions { target_bytes, min_age_us: 0, now_us: 0, staging: StagingOptions::default() }
}

/// The rows without the file that holds them.
fn content(lake: &dyn ObjectStore) -> Vec<StagedRow> {
    let mut rows: Vec<StagedRow> =
        staged_rows(lake).into_iter().map(|r| StagedRow { file: String::new(), ..r }).collect();
    rows.sort();
    rows
}

fn staged_files(lake: &dyn ObjectStore) -> Vec<ObjectMeta> {
    lake.list("staging/").unwrap()
}

#[test]
fn many_small_files_become_few_with_the_same_rows_and_a_rerun_changes_nothing() {
    let lake = MemoryObjectStore::new();
    small_files(&lake);
    let before = content(&lake);
    assert_eq!(before.len(), 600);
    assert_eq!(staged_files(&lake).len(), 60);

    let report = compact_table(&lake, Source::Viewership, &options(64 << 20)).unwrap();
    let after_files = staged_files(&lake);
    assert_eq!(after_files.len(), 2, "one file per day: {after_files:?}");
    assert!(after_files.iter().all(|f| f.key.contains("/compacted-")));
    assert_eq!(report.removed.len(), 60);
    assert_eq!(report.written.iter().map(|w| w.rows).sum::<u64>(), 600);
    assert_eq!(content(&lake), before, "every row, with its lineage, exactly once");
    assert!(lake.list("compaction/").unwrap().is_empty(), "no journal left");

    let snap = snapshot(&lake);
    let again = compact_table(&lake, Source::Viewership, &options(64 << 20)).unwrap();
    assert!(again.written.is_empty() && again.removed.is_empty());
    assert_eq!(snapshot(&lake), snap, "a second run changes nothing");
}

#[test]
fn a_file_that_cannot_be_read_is_left_alone_and_the_rest_is_compacted() {
    let lake = MemoryObjectStore::new();
    small_files(&lake);
    let files = staged_files(&lake);
    // One file of each day is bad: bytes that are not Parquet, and Parquet
    // without the staging columns.
    let garbage = files.iter().find(|f| f.key.contains("2024-01-01")).unwrap().key.clone();
    let foreign = files.iter().find(|f| f.key.contains("2024-01-02")).unwrap().key.clone();
    let rows = staged_rows(&lake);
    let mut kept: Vec<StagedRow> = rows
        .into_iter()
        .filter(|r| r.file != garbage && r.file != foreign)
        .map(|r| StagedRow { file: String::new(), ..r })
        .collect();
    kept.sort();
    lake.put(&garbage, b"not parquet at all").unwrap();
    let other = arrow_array::RecordBatch::try_from_iter([(
        "x",
        std::sync::Arc::new(arrow_array::Int32Array::from(vec![1])) as arrow_array::ArrayRef,
    )])
    .unwrap();
    let mut bytes = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut bytes, other.schema(), None).unwrap();
    writer.write(&other).unwrap();
    writer.close().unwrap();
    lake.put(&foreign, &bytes).unwrap();

    let report = compact_table(&lake, Source::Viewership, &options(64 << 20)).unwrap();
    assert_eq!(report.unreadable.len(), 2, "{:?}", report.unreadable);
    assert!(report.unreadable.iter().any(|u| u.starts_with(&format!("{garbage}: "))), "{:?}", report.unreadable);
    assert!(report.unreadable.iter().any(|u| u.contains(&foreign) && u.contains("no column event_id")));
    assert_eq!(report.written.len(), 2, "each day compacted without its bad file");
    assert_eq!(report.removed.len(), 58);
    assert!(lake.list("compaction/").unwrap().is_empty(), "no journal left");
    let mut left: Vec<String> = staged_files(&lake).into_iter().map(|f| f.key).collect();
    left.retain(|k| !k.contains("/compacted-"));
    assert_eq!(left, [garbage.clone(), foreign.clone()], "the bad files stay where they were");

    lake.delete(&garbage).unwrap();
    lake.delete(&foreign).unwrap();
    assert_eq!(content(&lake), kept, "every other row, with its lineage, exactly once");
}

#[test]
fn the_same_small_files_compact_to_the_same_bytes() {
    let (a, b) = (MemoryObjectStore::new(), MemoryObjectStore::new());
    small_files(&a);
    small_files(&b);
    compact_table(&a, Source::Viewership, &options(64 << 20)).unwrap();
    compact_table(&b, Source::Viewership, &options(64 << 20)).unwrap();
    assert_eq!(snapshot(&a), snapshot(&b));
}

#[test]
fn bins_stay_within_the_target_size() {
    let lake = MemoryObjectStore::new();
    small_files(&lake);
    let before = content(&lake);
    let sizes: Vec<u64> = staged_files(&lake).iter().map(|f| f.size).collect();
    let (smallest, largest) = (*sizes.iter().min().unwrap(), *sizes.iter().max().unwrap());
    // 60 files of 10 rows: each batch of 20 records puts 10 on each of 2 days.
    assert_eq!(sizes.len(), 60);
    let target = largest * 5;
    let report = compact_table(&lake, Source::Viewership, &options(target)).unwrap();
    for w in &report.written {
        assert_eq!(w.rows % 10, 0, "{w:?}: whole files");
        let members = w.rows / 10;
        // Within the target (at least `members` files of the smallest
        // size went in), and filled: a bin closes only when the next file
        // would not fit, so it holds five files or more.
        assert!(members * smallest <= target, "{w:?}: {members} files of {smallest}+ bytes over {target}");
        assert!(members >= 2, "{w:?}");
    }
    // Each day's 30 files go in bins of five or more (but its last): at most
    // six per day, each bin a file, and a last bin of one file left as is.
    let files = staged_files(&lake);
    assert!(files.len() <= 2 * 6, "{} files", files.len());
    assert_eq!(report.removed.len() as u64, report.written.iter().map(|w| w.rows / 10).sum::<u64>());
    assert_eq!(content(&lake), before);
}

#[test]
fn young_files_are_left_alone() {
    let lake = MemoryObjectStore::new();
    small_files(&lake);
    let snap = snapshot(&lake);
    // The memory store's objects were modified at time 0; one microsecond
    // later they are younger than a minute.
    let young = CompactionOptions { min_age_us: 60_000_000, now_us: 1, ..options(64 << 20) };
    let report = compact_table(&lake, Source::Viewership, &young).unwrap();
    assert!(report.written.is_empty());
    assert_eq!(snapshot(&lake), snap);
}

/// A lake of small files whose compaction stopped after writing its first
/// output (its members could not be removed), with the rows before it.
fn interrupted_compaction() -> (FaultyObjectStore, Vec<StagedRow>) {
    let lake = FaultyObjectStore::new();
    small_files(&lake);
    let before = content(&lake);
    lake.fail_deletes(true);
    let error = compact_table(&lake, Source::Viewership, &options(64 << 20)).unwrap_err();
    assert!(error.is_retryable(), "{error}");
    lake.fail_deletes(false);
    (lake, before)
}

#[test]
fn an_interrupted_compaction_is_finished_by_the_next_run() {
    let (lake, before) = interrupted_compaction();
    // Stopped after writing the first output: its rows are also still in
    // the members, never missing.
    assert_eq!(staged_files(&lake).len(), 61);
    assert_eq!(lake.list("compaction/").unwrap().len(), 1, "the journal says what to finish");

    let report = compact_table(&lake, Source::Viewership, &options(64 << 20)).unwrap();
    assert_eq!(report.recovered, 1);
    assert_eq!(staged_files(&lake).len(), 2);
    assert_eq!(content(&lake), before, "after recovery every row is there once");
    assert!(lake.list("compaction/").unwrap().is_empty());
}

/// A load given both a compacted file and the members a stopped compaction
/// left (a prefix load in that window) leaves the members out: their rows
/// are in the compacted file, and staging both would give every such row
/// twice with the same lineage.
#[test]
fn the_members_a_stopped_compaction_left_are_named_for_a_load_to_skip() {
    let (lake, before) = interrupted_compaction();

    let files = staged_files(&lake);
    let output: Vec<&ObjectMeta> = files.iter().filter(|f| f.key.contains("/compacted-")).collect();
    assert_eq!(output.len(), 1);
    let members = unremoved_members(&lake, Source::Viewership, &files).unwrap();
    assert_eq!(members.len(), 30, "one day's files went into the output");
    let day = output[0].key.rsplit_once('/').unwrap().0;
    assert!(members.iter().all(|m| m.starts_with(day) && !m.contains("/compacted-")));
    let mut loaded: Vec<StagedRow> = staged_rows(&lake)
        .into_iter()
        .filter(|r| !members.contains(&r.file))
        .map(|r| StagedRow { file: String::new(), ..r })
        .collect();
    loaded.sort();
    assert_eq!(loaded, before, "without them, every row once");

    // Without the compacted file in the load, its members are all there is.
    let without_output: Vec<ObjectMeta> = files.iter().filter(|f| f.key != output[0].key).cloned().collect();
    assert!(unremoved_members(&lake, Source::Viewership, &without_output).unwrap().is_empty());

    // A member rewritten since holds rows the compacted file does not.
    let rewritten = members.iter().next().unwrap().clone();
    let other = files.iter().find(|f| !members.contains(&f.key) && f.key != output[0].key).unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut lake.open(&other.key).unwrap(), &mut bytes).unwrap();
    lake.put(&rewritten, &bytes).unwrap();
    let files = staged_files(&lake);
    let now = unremoved_members(&lake, Source::Viewership, &files).unwrap();
    assert_eq!(now.len(), 29);
    assert!(!now.contains(&rewritten));
}
