//! The stream ingest step: a batch of Kinesis or Kafka records from one shard
//! (or partition) in, one staging Parquet file per `event_date` and the
//! quarantine out.
//!
//! Each record's data is a JSON viewing session, pretty-printed or not (or
//! several, one per line).
//! Bad records are quarantined with their shard and sequence number; they
//! never fail the batch.
//!
//! # Exactly once across retries
//!
//! A batch is a contiguous run of one shard's records. Its records are
//! grouped by target (a staging day, or a quarantine day) and each group is
//! written as one object named after the first and last sequence number *of
//! that group*: `…/kinesis~<stream>~<shard>~<first>-<last>.parquet`. Because
//! the batch is contiguous, such an object holds every record of its target
//! whose sequence number lies in `[first, last]`. So, before writing, the
//! step lists the objects already under each target and skips the records
//! that an earlier attempt wrote: a replayed batch writes nothing new, and a
//! retry writes only what is missing.
//!
//! Groups are written (and their Glue partitions registered) in the order of
//! their first record. When a write fails, the step stops and reports the
//! batch's *first* record as failed, not the failed group's: Lambda then
//! retries from where this attempt started, so that every attempt at a batch
//! starts at the same record and gives each row the same lineage (below).
//! What earlier attempts committed is skipped. (A retry from the failed
//! group would start a batch of its own, whose rows would rank above later
//! records that this attempt had written.) For the same reason the Kinesis
//! mapping does not bisect a failing batch.
//!
//! # Lineage: which delivery of a session is the last
//!
//! The warehouse keeps, of one `event_id`'s deliveries, the one with the
//! greatest `(source_key, source_record_no)`. A stream row's `source_key` is
//! `<kind>/<stream>/<shard>/<first>`, the position its batch starts at, and
//! its `source_record_no` is its line's place in the batch, counting every
//! line of every record in position order from there. Every attempt at a
//! batch starts at the same record (above), so the same record gets the same
//! lineage in every attempt, and a retry that brings newer records numbers
//! them after it. So within a batch the later record wins even when the two
//! deliveries land in different days' files, or were written by different
//! attempts; and a later batch's rows rank above an earlier one's.
//!
//! Its `source_version` is `~<first>-<last>` of its file, which with the day
//! tells the files apart in the warehouse's ledger (an attempt may add a file
//! to a day an earlier attempt wrote, for newer records). The `~` marks a
//! stream version: the warehouse takes all of a key's stream versions for one
//! delivery, in whatever loads their files arrive, where a raw object's
//! versions are each a delivery of its own (an object's version is its
//! content hash, or its S3 ETag, named with its upload time and version id
//! on a versioned bucket, which never starts with `~`).
//!
//! Compaction must leave stream files alone while a retry can still come
//! (see [`crate::compact`]'s minimum age), since it renames what the listing
//! above relies on.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;

use serde::Serialize;

use crate::catalog::{Catalog, CatalogError};
use crate::decode::{RecordBody, decode_json_message};
use crate::error::IngestError;
use crate::ingest::RecordCounts;
use crate::quarantine::{QuarantineReason, QuarantinedRecord, Rejection, StreamPosition};
use crate::schema::{quarantine_table_def, staging_schema, table_def};
use crate::source::Source;
use crate::staging::{
    BatchBuilder, Lineage, QuarantineWriter, SessionBatch, StagingOptions, WrittenFile, lineage_metadata,
    quarantine_dir, staging_dir, writer_properties,
};
use crate::store::ObjectStore;
use crate::timestamp::{format_day, utc_day};
use crate::validate::validate_session;

/// The kind of stream a batch came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    /// An Amazon Kinesis data stream: positions are sequence numbers.
    Kinesis,
    /// A Kafka topic (MSK or self-managed): positions are offsets.
    Kafka,
}

impl StreamKind {
    /// `kinesis` or `kafka`.
    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Kinesis => "kinesis",
            StreamKind::Kafka => "kafka",
        }
    }
}

/// One shard of one stream (a Kinesis shard, or a Kafka topic partition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardId {
    /// Which kind of stream it is.
    pub kind: StreamKind,
    /// The stream name or topic.
    pub stream: String,
    /// The shard id or partition number.
    pub shard: String,
}

impl ShardId {
    /// The start of every object name this shard's batches write. `~` occurs
    /// in neither stream, topic nor shard names, so stems never run into each
    /// other.
    fn stem(&self) -> String {
        format!("{}~{}~{}", self.kind.name(), self.stream, self.shard)
    }

    /// `kinesis/<stream>/<shard>`: the source key of its quarantined records,
    /// and (with a batch's first position) of its staged rows.
    fn source_key(&self) -> String {
        format!("{}/{}/{}", self.kind.name(), self.stream, self.shard)
    }

    /// The position as it appears in object names: offsets are zero-padded
    /// so that names sort like positions; sequence numbers are kept as they
    /// are (Kinesis gives them a fixed width).
    fn name_position(&self, position: &str) -> String {
        match (self.kind, position.parse::<u64>()) {
            (StreamKind::Kafka, Ok(offset)) => format!("{offset:020}"),
            _ => position.to_owned(),
        }
    }
}

/// Orders decimal positions numerically (shorter is smaller, then byte-wise).
fn position_order(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// One record of a batch.
#[derive(Debug, Clone)]
pub struct StreamRecord<'a> {
    /// The sequence number (Kinesis) or offset (Kafka), as the source gave it.
    pub position: String,
    /// When the stream received it, UTC microseconds: its quarantine day.
    pub arrival_us: i64,
    /// The record's bytes: JSON, one viewing session per line.
    pub data: &'a [u8],
}

/// What one call did with a batch.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamReport {
    /// Records processed by this call: `read = accepted + quarantined`.
    pub counts: RecordCounts,
    /// Records skipped because an earlier attempt already wrote them.
    pub already_written: u64,
    /// Staging files written.
    pub staged: Vec<WrittenFile>,
    /// Quarantine files written.
    pub quarantined: Vec<String>,
    /// `event_date` partitions registered in the catalog.
    pub partitions: Vec<String>,
    /// True when the batch starts inside a file an earlier attempt wrote (its
    /// first position lies after that file's first and at or before its
    /// last): a retry shorter than an attempt before it, or one resuming past
    /// records dropped for their age. Nothing is lost or written twice, but
    /// this batch's key ranks its records above that attempt's, older ones
    /// included (see the module's doc), so it is reported.
    pub starts_inside_earlier_attempt: bool,
}

/// Why a batch stopped part-way.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Listing or writing the lake failed.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// Registering a partition failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl StreamError {
    /// True when a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StreamError::Ingest(e) => e.is_retryable(),
            StreamError::Catalog(e) => e.is_retryable(),
        }
    }
}

/// A batch that stopped part-way. `position` is the batch's first record:
/// a retry from it completes the batch, skipping what this attempt wrote,
/// and gives every row the lineage this attempt gave it (see the module's
/// doc).
#[derive(Debug, thiserror::Error)]
#[error("stopped at position {position}: {error}")]
pub struct StreamFailure {
    /// The batch's first record, as the source spelled it.
    pub position: String,
    /// Why it stopped there.
    pub error: StreamError,
}

/// Where a record's line goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// The staging partition of this UTC day.
    Staging(i32),
    /// The quarantine of this arrival day.
    Quarantine(i32),
}

/// One target's records.
struct Group {
    target: Target,
    /// The records with lines for this target, in position order.
    members: Vec<Member>,
}

/// A record with lines for a group's target.
struct Member {
    /// Index into the sorted records.
    index: usize,
    /// How many of its lines go to the target.
    lines: u64,
    /// True when an earlier attempt already wrote it.
    written: bool,
}

impl Group {
    fn pending(&self) -> impl Iterator<Item = usize> + '_ {
        self.members.iter().filter(|m| !m.written).map(|m| m.index)
    }

    fn first(&self) -> usize {
        self.members[0].index
    }
}

/// Lineage of rows decoded before their file is named, but for their
/// numbers; [`write_rows`] fills it in.
const UNNAMED: Lineage<'static> = Lineage { key: "", version: "", record_no: 0 };

/// Ingests one batch of one shard's records into the `lake`, registering the
/// staging partitions in `catalog`.
///
/// Returns what was done, and the failure if the batch stopped part-way.
pub fn ingest_stream_batch(
    lake: &dyn ObjectStore,
    catalog: &dyn Catalog,
    shard: &ShardId,
    records: &[StreamRecord<'_>],
    staging: &StagingOptions,
) -> (StreamReport, Option<StreamFailure>) {
    let mut report = StreamReport::default();
    let mut sorted: Vec<&StreamRecord<'_>> = records.iter().collect();
    sorted.sort_by(|a, b| position_order(&a.position, &b.position));
    let stem = shard.stem();
    let source = Source::Viewership;

    // Which targets each record's lines go to. Accepted sessions are kept
    // as Arrow rows of their day as they are decoded: when nothing of a day
    // was written before (the usual case) they are written as they are, and
    // no record is decoded twice.
    let mut groups: BTreeMap<Target, Group> = BTreeMap::new();
    let mut decoded: BTreeMap<i32, SessionBatch> = BTreeMap::new();
    let mut targets: Vec<(Target, u64)> = Vec::with_capacity(2);
    let mut lines_before = Vec::with_capacity(sorted.len());
    let mut line_no = 0u64;
    for (index, record) in sorted.iter().enumerate() {
        targets.clear();
        lines_before.push(line_no);
        each_line(&stem, record, |line| {
            line_no += 1;
            if let Line::Accepted(session) = &line {
                let lineage = Lineage { record_no: line_no, ..UNNAMED };
                decoded.entry(utc_day(session.start_us)).or_default().append(session, lineage);
            }
            let target = line.target(record);
            match targets.iter_mut().find(|(t, _)| *t == target) {
                Some((_, lines)) => *lines += 1,
                None => targets.push((target, 1)),
            }
        });
        for &(target, lines) in &targets {
            let group = groups.entry(target).or_insert_with(|| Group { target, members: Vec::new() });
            group.members.push(Member { index, lines, written: false });
        }
    }

    // Skip what an earlier attempt wrote; write groups in order of their
    // first record, so a failure splits the batch at one position.
    let mut ordered: Vec<Group> = Vec::with_capacity(groups.len());
    let batch_first = sorted.first().map(|r| shard.name_position(&r.position)).unwrap_or_default();
    for (target, mut group) in groups {
        let dir = target_dir(source, target);
        let written = match written_ranges(lake, &dir, &stem) {
            Ok(ranges) => ranges,
            Err(error) => {
                // Nothing is written before every group is listed, so the
                // whole batch is still to do: from its first record, not
                // this group's (groups are listed in day order).
                let position = sorted[0].position.clone();
                return (report, Some(StreamFailure { position, error: error.into() }));
            }
        };
        report.starts_inside_earlier_attempt |= written.iter().any(|(first, last)| {
            position_order(first, &batch_first) == Ordering::Less
                && position_order(&batch_first, last) != Ordering::Greater
        });
        for member in &mut group.members {
            let name = shard.name_position(&sorted[member.index].position);
            member.written = written.iter().any(|(first, last)| {
                position_order(first, &name) != Ordering::Greater && position_order(&name, last) != Ordering::Greater
            });
        }
        ordered.push(group);
    }
    ordered.sort_by_key(Group::first);

    let batch = BatchLineage {
        key: if sorted.is_empty() { String::new() } else { format!("{}/{batch_first}", shard.source_key()) },
        lines_before,
    };
    let table = table_def(source);
    let mut table_ready = false;
    let quarantine_table = quarantine_table_def(source);
    let mut quarantine_ready = false;
    for group in &ordered {
        let untouched = group.members.iter().all(|m| !m.written);
        let prebuilt = match group.target {
            Target::Staging(day) if untouched => decoded.remove(&day),
            _ => None,
        };
        let result =
            write_group(lake, shard, &stem, &sorted, &batch, group, prebuilt, staging, &mut report).and_then(|()| {
                match group.target {
                    Target::Staging(day) => {
                        if !table_ready {
                            catalog.ensure_table(&table)?;
                            table_ready = true;
                        }
                        let value = format_day(day);
                        catalog.add_partitions(&table, std::slice::from_ref(&value))?;
                        report.partitions.push(value);
                    }
                    Target::Quarantine(day) => {
                        if !quarantine_ready {
                            catalog.ensure_table(&quarantine_table)?;
                            quarantine_ready = true;
                        }
                        catalog.add_partitions(&quarantine_table, &[format_day(day)])?;
                    }
                }
                Ok(())
            });
        if let Err(error) = result {
            let position = sorted[0].position.clone();
            return (report, Some(StreamFailure { position, error }));
        }
    }
    (report, None)
}

/// What starts a stream file's `source_version` (`~<first>-<last>`); an
/// object's version (a content hash, S3's version or ETag) never does.
pub const STREAM_VERSION_MARK: char = '~';

/// The delivery a row's `source_version` belongs to, within its key: a raw
/// object's version is a delivery of its own, and all of a stream key's
/// versions are one (`~`), as the warehouse's load takes them.
pub fn delivery(version: &str) -> &str {
    if version.starts_with(STREAM_VERSION_MARK) { "~" } else { version }
}

/// The lineage that a batch gives its rows (see the module's doc).
struct BatchLineage {
    /// `<kind>/<stream>/<shard>/<first>`: where the batch starts.
    key: String,
    /// For each record (in position order), how many lines the records
    /// before it hold: its first line is line `lines_before + 1`.
    lines_before: Vec<u64>,
}

/// Writes one group's pending records as one object; `prebuilt` holds the
/// group's rows already decoded, when all of them are pending.
#[allow(clippy::too_many_arguments)]
fn write_group(
    lake: &dyn ObjectStore,
    shard: &ShardId,
    stem: &str,
    sorted: &[&StreamRecord<'_>],
    batch: &BatchLineage,
    group: &Group,
    prebuilt: Option<SessionBatch>,
    staging: &StagingOptions,
    report: &mut StreamReport,
) -> Result<(), StreamError> {
    report.already_written += group.members.iter().filter(|m| m.written).map(|m| m.lines).sum::<u64>();
    let pending: Vec<usize> = group.pending().collect();
    let (Some(&first), Some(&last)) = (pending.first(), pending.last()) else {
        return Ok(());
    };
    let range =
        format!("{}-{}", shard.name_position(&sorted[first].position), shard.name_position(&sorted[last].position));
    let dir = target_dir(Source::Viewership, group.target);
    let mut counts = RecordCounts::default();
    match group.target {
        Target::Staging(day) => {
            // After a partial write, only the pending records are decoded
            // again; otherwise the rows decoded while grouping are used.
            let mut rows = prebuilt.unwrap_or_else(|| {
                let mut rows = SessionBatch::default();
                for &i in &pending {
                    let mut line_no = batch.lines_before[i];
                    each_line(stem, sorted[i], |line| {
                        line_no += 1;
                        if let Line::Accepted(session) = &line
                            && utc_day(session.start_us) == day
                        {
                            rows.append(session, Lineage { record_no: line_no, ..UNNAMED });
                        }
                    });
                }
                rows
            });
            let key = format!("{dir}/{stem}~{range}.parquet");
            let rows =
                write_rows(lake, &key, &mut rows, &batch.key, &format!("{STREAM_VERSION_MARK}{range}"), staging)?;
            counts.rows_read += rows;
            counts.rows_accepted += rows;
            report.staged.push(WrittenFile { key, partition: Some(format_day(day)), rows });
        }
        Target::Quarantine(_) => {
            let key = format!("{dir}/{stem}~{range}.jsonl");
            let mut writer = QuarantineWriter::at(lake, key);
            let source_key = shard.source_key();
            for &i in &pending {
                let record = sorted[i];
                let mut written: Result<(), IngestError> = Ok(());
                each_line(stem, record, |line| {
                    if let (Line::Rejected { record_no, line, rejection, original }, Ok(())) = (&line, &written) {
                        counts.rows_read += 1;
                        counts.quarantined.add(rejection.reason);
                        written = writer.write(&QuarantinedRecord {
                            source_key: &source_key,
                            record_no: *record_no,
                            line: *line,
                            reason: rejection.reason,
                            field: rejection.field,
                            message: &rejection.message,
                            original,
                            stream: Some(StreamPosition {
                                kind: shard.kind.name(),
                                stream: &shard.stream,
                                shard: &shard.shard,
                                position: &record.position,
                            }),
                        });
                    }
                });
                written?;
            }
            if let Some(key) = writer.finish()? {
                report.quarantined.push(key);
            }
        }
    }
    report.counts.merge(&counts);
    Ok(())
}

/// Writes rows decoded ahead as one Parquet file, with the lineage key and
/// version filled in; the rows bring their numbers. Returns the number of
/// rows.
fn write_rows(
    lake: &dyn ObjectStore,
    key: &str,
    rows: &mut SessionBatch,
    lineage_key: &str,
    version: &str,
    staging: &StagingOptions,
) -> Result<u64, IngestError> {
    let schema = staging_schema(Source::Viewership);
    let batch = rows.finish(&schema)?;
    let n = batch.num_rows();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    let width = columns.len();
    columns[width - 3] = Arc::new(StringArray::from_iter_values(std::iter::repeat_n(lineage_key, n)));
    columns[width - 2] = Arc::new(StringArray::from_iter_values(std::iter::repeat_n(version, n)));
    let props = writer_properties(staging, lineage_metadata(lineage_key, version));
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let mut writer = ArrowWriter::try_new(lake.create(key)?, schema, Some(props))?;
    writer.write(&batch)?;
    writer.into_inner()?.commit()?;
    Ok(n as u64)
}

/// One line of a record, decoded and validated.
enum Line<'v> {
    Accepted(crate::validate::ViewingSession<'v>),
    Rejected { record_no: u64, line: u64, rejection: Rejection, original: String },
}

impl Line<'_> {
    fn target(&self, record: &StreamRecord<'_>) -> Target {
        match self {
            Line::Accepted(session) => Target::Staging(utc_day(session.start_us)),
            Line::Rejected { .. } => Target::Quarantine(utc_day(record.arrival_us)),
        }
    }
}

/// Decodes and validates every line of a record. A record with no line at
/// all is one malformed line, so that nothing disappears silently.
fn each_line(stem: &str, record: &StreamRecord<'_>, mut on_line: impl FnMut(Line<'_>)) {
    let key = format!("{stem}~{}", record.position);
    let fields = Source::Viewership.fields();
    let mut lines = 0u64;
    let decoded = decode_json_message(&key, record.data, fields, |r| {
        lines += 1;
        let line = match r.body {
            RecordBody::Malformed { message, field, original } => Line::Rejected {
                record_no: r.record_no,
                line: r.line,
                rejection: Rejection::malformed(field.map(|i| fields[i]), message),
                original: original.render(),
            },
            RecordBody::Fields { values, original } => match validate_session(values) {
                Ok(session) => Line::Accepted(session),
                Err(rejection) => {
                    Line::Rejected { record_no: r.record_no, line: r.line, rejection, original: original.render() }
                }
            },
        };
        on_line(line);
        Ok(())
    });
    // Decoding a message held in memory has no limit on a line's length and
    // no I/O to fail; should it fail all the same, the record is kept as
    // malformed.
    if let Err(e) = decoded {
        lines += 1;
        on_line(Line::Rejected {
            record_no: 1,
            line: 1,
            rejection: Rejection::record(QuarantineReason::Malformed, e.to_string()),
            original: String::from_utf8_lossy(record.data).into_owned(),
        });
    }
    if lines == 0 {
        on_line(Line::Rejected {
            record_no: 1,
            line: 1,
            rejection: Rejection::record(QuarantineReason::Malformed, "empty record"),
            original: String::from_utf8_lossy(record.data).into_owned(),
        });
    }
}

/// The folder of a target's objects.
fn target_dir(source: Source, target: Target) -> String {
    match target {
        Target::Staging(day) => staging_dir(source, Some(day)),
        Target::Quarantine(day) => quarantine_dir(source, day),
    }
}

/// The `[first, last]` ranges of this shard's objects already in `dir`.
fn written_ranges(lake: &dyn ObjectStore, dir: &str, stem: &str) -> Result<Vec<(String, String)>, IngestError> {
    let prefix = format!("{dir}/{stem}~");
    let mut ranges = Vec::new();
    for object in lake.list(&prefix)? {
        let rest = &object.key[prefix.len()..];
        let range = rest.split_once('.').map_or(rest, |(r, _)| r);
        if let Some((first, last)) = range.split_once('-')
            && !first.is_empty()
            && first.bytes().chain(last.bytes()).all(|b| b.is_ascii_digit())
        {
            ranges.push((first.to_owned(), last.to_owned()));
        }
    }
    Ok(ranges)
}
