//! Staging output: Arrow batch builders per table, the [`PartitionWriter`]
//! that streams them into one Parquet file per Hive partition, and the
//! [`QuarantineWriter`] for rejected records.
//!
//! File names are derived from the input object (key and version) and the
//! step, never from time or randomness, so that re-processing an object
//! rewrites the same files with the same bytes.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::error::IngestError;
use crate::quarantine::QuarantinedRecord;
use crate::schema::staging_schema;
use crate::source::Source;
use crate::store::{ObjectMeta, ObjectStore, ObjectUpload, StoreError};
use crate::timestamp::format_day;
use crate::validate::ViewingSession;

/// Tuning of the staging files.
///
/// The last two bound a writer's memory across all its open partitions,
/// which the first two alone do not: an object whose sessions span a year
/// has 365 partitions open at once, each with its own buffered rows and row
/// group.
#[derive(Debug, Clone)]
pub struct StagingOptions {
    /// Rows buffered per partition before they are encoded.
    pub batch_rows: usize,
    /// Rows per Parquet row group (bounds one encoder's memory).
    pub row_group_rows: usize,
    /// zstd level.
    pub zstd_level: i32,
    /// Unencoded rows buffered over all partitions: beyond it, the
    /// partitions with the most are written out as row groups.
    pub buffered_rows_limit: usize,
    /// Bytes the encoders hold over all partitions (their row groups in
    /// progress): beyond it, the largest row groups are written out early.
    pub encoder_bytes_limit: usize,
}

impl Default for StagingOptions {
    fn default() -> Self {
        StagingOptions {
            batch_rows: 8192,
            row_group_rows: 256 * 1024,
            zstd_level: 1,
            // About 90 MB of sessions. An object of up to 63 days never
            // reaches it: each partition's batch is encoded at batch_rows
            // first.
            buffered_rows_limit: 512 * 1024,
            encoder_bytes_limit: 128 * 1024 * 1024,
        }
    }
}

/// The deterministic id of the files one step writes for one input object.
pub fn output_id(step: &str, object: &ObjectMeta) -> String {
    version_output_id(step, &object.key, &object.version)
}

/// [`output_id`] of the object version `key`, `version`.
pub fn version_output_id(step: &str, key: &str, version: &str) -> String {
    let identity = format!("{step}\0{key}\0{version}");
    format!("{:016x}", xxh3_64(identity.as_bytes()))
}

/// A file the step wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenFile {
    /// The lake key.
    pub key: String,
    /// `event_date=YYYY-MM-DD` value, for partitioned tables.
    pub partition: Option<String>,
    /// Rows in the file.
    pub rows: u64,
}

/// Where a record came from, stored with every staging row.
#[derive(Debug, Clone, Copy)]
pub struct Lineage<'a> {
    /// The source object's key.
    pub key: &'a str,
    /// The source object's version ([`crate::store::ObjectMeta::version`]).
    pub version: &'a str,
    /// The record's number in its object, from 1 (header excluded); within
    /// one object the later record wins.
    pub record_no: u64,
}

/// Builds one table's Arrow batches.
pub trait BatchBuilder: Send {
    /// Rows buffered so far.
    fn len(&self) -> usize;
    /// Whether no rows are buffered.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Takes the buffered rows as a batch of `schema`.
    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch, IngestError>;
}

/// A text column builder that allocates nothing until its first value: an
/// object spanning many days opens a builder per column and day, and
/// arrow's default capacity (1024 values) is about 90 KB per partition.
fn text_builder() -> StringBuilder {
    StringBuilder::with_capacity(0, 0)
}

struct LineageColumns {
    key: StringBuilder,
    version: StringBuilder,
    record_no: Int64Builder,
}

impl Default for LineageColumns {
    fn default() -> Self {
        LineageColumns { key: text_builder(), version: text_builder(), record_no: Int64Builder::with_capacity(0) }
    }
}

impl LineageColumns {
    fn append(&mut self, l: Lineage<'_>) {
        self.key.append_value(l.key);
        self.version.append_value(l.version);
        self.record_no.append_value(l.record_no as i64);
    }

    fn finish_into(&mut self, columns: &mut Vec<ArrayRef>) {
        columns.push(Arc::new(self.key.finish()));
        columns.push(Arc::new(self.version.finish()));
        columns.push(Arc::new(self.record_no.finish()));
    }
}

/// Viewing sessions as Arrow columns.
pub struct SessionBatch {
    event_id: StringBuilder,
    user_id: StringBuilder,
    device_id: StringBuilder,
    channel_id: StringBuilder,
    program_id: StringBuilder,
    start_time: TimestampMicrosecondBuilder,
    end_time: TimestampMicrosecondBuilder,
    duration_seconds: Int64Builder,
    platform: StringBuilder,
    lineage: LineageColumns,
    rows: usize,
}

impl Default for SessionBatch {
    fn default() -> Self {
        SessionBatch {
            event_id: text_builder(),
            user_id: text_builder(),
            device_id: text_builder(),
            channel_id: text_builder(),
            program_id: text_builder(),
            start_time: TimestampMicrosecondBuilder::with_capacity(0),
            end_time: TimestampMicrosecondBuilder::with_capacity(0),
            duration_seconds: Int64Builder::with_capacity(0),
            platform: text_builder(),
            lineage: LineageColumns::default(),
            rows: 0,
        }
    }
}

impl SessionBatch {
    /// Appends one valid session.
    pub fn append(&mut self, s: &ViewingSession<'_>, lineage: Lineage<'_>) {
        self.event_id.append_value(s.event_id);
        self.user_id.append_value(s.user_id);
        self.device_id.append_option(s.device_id);
        self.channel_id.append_value(s.channel_id);
        self.program_id.append_option(s.program_id);
        self.start_time.append_value(s.start_us);
        self.end_time.append_value(s.end_us);
        self.duration_seconds.append_option(s.duration_seconds);
        self.platform.append_option(s.platform.map(|p| p.as_str()));
        self.lineage.append(lineage);
        self.rows += 1;
    }
}

impl BatchBuilder for SessionBatch {
    fn len(&self) -> usize {
        self.rows
    }

    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch, IngestError> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.user_id.finish()),
            Arc::new(self.device_id.finish()),
            Arc::new(self.channel_id.finish()),
            Arc::new(self.program_id.finish()),
            Arc::new(self.start_time.finish().with_timezone("UTC")),
            Arc::new(self.end_time.finish().with_timezone("UTC")),
            Arc::new(self.duration_seconds.finish()),
            Arc::new(self.platform.finish()),
        ];
        self.lineage.finish_into(&mut columns);
        self.rows = 0;
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// A dimension table whose data columns are all text (channels, demographics).
pub struct TextBatch {
    columns: Vec<StringBuilder>,
    lineage: LineageColumns,
    rows: usize,
}

impl TextBatch {
    /// A builder for `width` text columns.
    pub fn new(width: usize) -> Self {
        TextBatch { columns: (0..width).map(|_| text_builder()).collect(), lineage: LineageColumns::default(), rows: 0 }
    }

    /// Appends one row of text values.
    pub fn append(&mut self, values: &[Option<&str>], lineage: Lineage<'_>) {
        for (builder, value) in self.columns.iter_mut().zip(values) {
            builder.append_option(*value);
        }
        self.lineage.append(lineage);
        self.rows += 1;
    }
}

impl BatchBuilder for TextBatch {
    fn len(&self) -> usize {
        self.rows
    }

    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch, IngestError> {
        let mut columns: Vec<ArrayRef> = self.columns.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
        self.lineage.finish_into(&mut columns);
        self.rows = 0;
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// The key-value metadata naming a staging file's input, which readers see
/// without reading the rows.
pub fn lineage_metadata(source_key: &str, source_version: &str) -> Vec<KeyValue> {
    vec![
        KeyValue::new("tvetl.source_key".to_owned(), source_key.to_owned()),
        KeyValue::new("tvetl.source_version".to_owned(), source_version.to_owned()),
    ]
}

/// The Parquet settings of every staging file, with `metadata` as its
/// key-value metadata.
pub fn writer_properties(options: &StagingOptions, metadata: Vec<KeyValue>) -> WriterProperties {
    let level = ZstdLevel::try_new(options.zstd_level).unwrap_or_default();
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        // Row-group statistics are what readers prune with; page-level
        // string statistics cost more than they save here.
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_max_row_group_row_count(Some(options.row_group_rows))
        .set_key_value_metadata(Some(metadata));
    // (Nearly) unique per row: a dictionary would only be built and abandoned
    // (and interning every value costs more than the plain encoding).
    for unique in ["event_id", "device_id", "user_id", "start_time", "end_time", "source_record_no"] {
        props = props.set_column_dictionary_enabled(ColumnPath::from(unique), false);
    }
    // Random ids: min/max prune nothing, and comparing every value costs.
    // Times, channels, platforms and the lineage keep their statistics.
    for id in ["event_id", "device_id", "user_id", "program_id"] {
        props = props.set_column_statistics_enabled(ColumnPath::from(id), EnabledStatistics::None);
    }
    props.build()
}

struct OpenPartition<'s, B> {
    key: String,
    rows: B,
    writer: ArrowWriter<Box<dyn ObjectUpload + 's>>,
    written: u64,
}

/// What one column's encoder holds, beyond its data, while a row group is in
/// progress: the parquet writer keeps a zstd compression and decompression
/// context per column until the row group is written. parquet's
/// `memory_size` does not count them (zstd allocates them itself). Measured
/// as the process's RSS above its Rust heap, ingesting an object of a
/// million sessions over 365 days with a row group open for every day:
/// about 400 KB per partition of 12 columns.
const ROW_GROUP_CONTEXT_BYTES: usize = 32 * 1024;

impl<B: BatchBuilder> OpenPartition<'_, B> {
    /// Hands the buffered rows to the encoder.
    fn encode_buffered(&mut self, schema: &SchemaRef) -> Result<(), IngestError> {
        if !self.rows.is_empty() {
            let batch = self.rows.finish(schema)?;
            self.written += batch.num_rows() as u64;
            self.writer.write(&batch)?;
        }
        Ok(())
    }

    /// What this partition's encoder holds (parquet's estimate of its data,
    /// and the contexts of its columns), while a row group is in progress.
    fn encoder_bytes(&self, columns: usize) -> usize {
        if self.writer.in_progress_rows() == 0 {
            return 0;
        }
        self.writer.memory_size() + columns * ROW_GROUP_CONTEXT_BYTES
    }
}

/// What a [`PartitionWriter`] holds in memory now, over all its partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferedSize {
    /// Partitions open.
    pub partitions: usize,
    /// Rows not yet encoded.
    pub rows: usize,
    /// Bytes of the encoders' row groups in progress (parquet's estimate,
    /// and the compression contexts it does not count).
    pub encoder_bytes: usize,
}

/// Streams one table's rows into one Parquet file per partition.
///
/// Memory is bounded whatever the object's size and however many
/// partitions it spans: by `batch_rows` per partition and
/// `buffered_rows_limit` in all of unencoded rows, and by one row group per
/// partition and `encoder_bytes_limit` in all in the encoders. A
/// partition's row group is in progress only from its first full batch on.
/// Which rows go into which row group depends on the rows alone, so
/// re-processing an object still writes the same bytes. Files become
/// visible only on [`finish`]; an aborted (dropped) writer leaves nothing.
///
/// [`finish`]: PartitionWriter::finish
pub struct PartitionWriter<'s, B> {
    store: &'s dyn ObjectStore,
    source: Source,
    file_name: String,
    schema: SchemaRef,
    props: WriterProperties,
    batch_rows: usize,
    buffered_rows_limit: usize,
    encoder_bytes_limit: usize,
    /// Unencoded rows over all open partitions.
    buffered_rows: usize,
    new_rows: Box<dyn Fn() -> B + Send + 's>,
    open: BTreeMap<Option<i32>, OpenPartition<'s, B>>,
}

impl<'s, B: BatchBuilder> PartitionWriter<'s, B> {
    /// A writer of `source`'s staging table for the input `object`.
    pub fn new(
        store: &'s dyn ObjectStore,
        source: Source,
        object: &ObjectMeta,
        step: &str,
        options: &StagingOptions,
        new_rows: impl Fn() -> B + Send + 's,
    ) -> Self {
        let props = writer_properties(options, lineage_metadata(&object.key, &object.version));
        PartitionWriter {
            store,
            source,
            file_name: format!("part-{}.parquet", output_id(step, object)),
            schema: staging_schema(source),
            props,
            batch_rows: options.batch_rows.max(1),
            buffered_rows_limit: options.buffered_rows_limit.max(1),
            encoder_bytes_limit: options.encoder_bytes_limit,
            buffered_rows: 0,
            new_rows: Box::new(new_rows),
            open: BTreeMap::new(),
        }
    }

    /// The lake key of a partition's file.
    pub fn key_of(&self, day: Option<i32>) -> String {
        format!("{}/{}", staging_dir(self.source, day), self.file_name)
    }

    /// Adds a row to partition `day` (`None` for unpartitioned tables).
    pub fn push(&mut self, day: Option<i32>, append: impl FnOnce(&mut B)) -> Result<(), IngestError> {
        if !self.open.contains_key(&day) {
            let key = self.key_of(day);
            let upload = self.store.create(&key)?;
            let writer = ArrowWriter::try_new(upload, self.schema.clone(), Some(self.props.clone()))?;
            self.open.insert(day, OpenPartition { key, rows: (self.new_rows)(), writer, written: 0 });
        }
        let part = self.open.get_mut(&day).expect("opened above");
        append(&mut part.rows);
        self.buffered_rows += 1;
        if part.rows.len() >= self.batch_rows {
            self.buffered_rows -= part.rows.len();
            part.encode_buffered(&self.schema)?;
            self.limit_encoders()?;
        } else if self.buffered_rows >= self.buffered_rows_limit {
            self.write_out_largest_buffers()?;
        }
        Ok(())
    }

    /// Writes the partitions with the most buffered rows out as row groups
    /// of their own until half of `buffered_rows_limit` is left.
    ///
    /// Buffered rows are what a partition of few rows holds most cheaply: a
    /// row group in progress costs its columns' compression contexts on top
    /// of its data (see [`ROW_GROUP_CONTEXT_BYTES`]), so one is only opened
    /// to be written out at once.
    fn write_out_largest_buffers(&mut self) -> Result<(), IngestError> {
        for (rows, day) in self.largest_first(|p| p.rows.len()) {
            if self.buffered_rows <= self.buffered_rows_limit / 2 || rows == 0 {
                break;
            }
            let part = self.open.get_mut(&day).expect("listed by largest_first");
            part.encode_buffered(&self.schema)?;
            part.writer.flush()?;
            self.buffered_rows -= rows;
        }
        Ok(())
    }

    /// Writes out the largest row groups in progress while the encoders hold
    /// more than `encoder_bytes_limit`.
    fn limit_encoders(&mut self) -> Result<(), IngestError> {
        // One partition's row group is bounded by row_group_rows already.
        if self.open.len() < 2 {
            return Ok(());
        }
        let columns = self.schema.fields().len();
        let mut total = self.buffered().encoder_bytes;
        for (bytes, day) in self.largest_first(|p| p.encoder_bytes(columns)) {
            if total <= self.encoder_bytes_limit || bytes == 0 {
                break;
            }
            self.open.get_mut(&day).expect("listed by largest_first").writer.flush()?;
            total -= bytes;
        }
        Ok(())
    }

    /// Every open partition's `size` and day, the largest first, then the
    /// earliest day: what is written out early depends on the rows alone.
    fn largest_first(&self, size: impl Fn(&OpenPartition<'s, B>) -> usize) -> Vec<(usize, Option<i32>)> {
        let mut sizes: Vec<(usize, Option<i32>)> = self.open.iter().map(|(day, p)| (size(p), *day)).collect();
        sizes.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        sizes
    }

    /// What the writer holds in memory now.
    pub fn buffered(&self) -> BufferedSize {
        let columns = self.schema.fields().len();
        BufferedSize {
            partitions: self.open.len(),
            rows: self.buffered_rows,
            encoder_bytes: self.open.values().map(|p| p.encoder_bytes(columns)).sum(),
        }
    }

    /// Encodes what is buffered, closes every file and makes them visible.
    pub fn finish(self) -> Result<Vec<WrittenFile>, IngestError> {
        let mut written = Vec::with_capacity(self.open.len());
        for (day, mut part) in self.open {
            part.encode_buffered(&self.schema)?;
            let upload = part.writer.into_inner()?;
            upload.commit()?;
            written.push(WrittenFile { key: part.key, partition: day.map(format_day), rows: part.written });
        }
        Ok(written)
    }
}

/// Writes quarantined records as JSON Lines under
/// `quarantine/<source>/ingest_date=YYYY-MM-DD/part-<id>.jsonl`, where the
/// date is the input object's last-modified day (not the wall clock, so a
/// rerun rewrites the same object).
pub struct QuarantineWriter<'s> {
    store: &'s dyn ObjectStore,
    key: String,
    upload: Option<Box<dyn ObjectUpload + 's>>,
    line: Vec<u8>,
}

impl<'s> QuarantineWriter<'s> {
    /// A writer for `object`'s rejected records.
    pub fn new(store: &'s dyn ObjectStore, source: Source, object: &ObjectMeta, step: &str) -> Self {
        let key = format!("{}/{}", quarantine_prefix(source, object), Self::file_name(&output_id(step, object)));
        Self::at(store, key)
    }

    /// The name of the rejected records' file of the output `id`.
    pub fn file_name(id: &str) -> String {
        format!("part-{id}.jsonl")
    }

    /// A writer of the quarantine object `key`.
    pub fn at(store: &'s dyn ObjectStore, key: String) -> Self {
        QuarantineWriter { store, key, upload: None, line: Vec::with_capacity(512) }
    }

    /// Appends one record.
    pub fn write(&mut self, record: &QuarantinedRecord<'_>) -> Result<(), IngestError> {
        if self.upload.is_none() {
            self.upload = Some(self.store.create(&self.key)?);
        }
        self.line.clear();
        serde_json::to_writer(&mut self.line, record).expect("quarantine records serialize");
        self.line.push(b'\n');
        let upload = self.upload.as_mut().expect("opened above");
        upload.write_all(&self.line).map_err(|e| StoreError::Io { key: self.key.clone(), source: e })?;
        Ok(())
    }

    /// Makes the file visible; returns its key if anything was quarantined.
    pub fn finish(self) -> Result<Option<String>, IngestError> {
        match self.upload {
            Some(upload) => {
                upload.commit()?;
                Ok(Some(self.key))
            }
            None => Ok(None),
        }
    }
}

/// `quarantine/<source>/ingest_date=YYYY-MM-DD` for an input object.
pub fn quarantine_prefix(source: Source, object: &ObjectMeta) -> String {
    quarantine_dir(source, crate::timestamp::utc_day(object.last_modified_us))
}

/// The lake folder of a staging partition: `staging/<source>/event_date=YYYY-MM-DD`,
/// or `staging/<source>` for unpartitioned tables (`day` `None`).
pub fn staging_dir(source: Source, day: Option<i32>) -> String {
    match day {
        Some(d) => format!("staging/{}/event_date={}", source.name(), format_day(d)),
        None => format!("staging/{}", source.name()),
    }
}

/// The lake folder of a source's quarantine: `quarantine/<source>`.
pub fn quarantine_root(source: Source) -> String {
    format!("quarantine/{}", source.name())
}

/// The lake folder of a quarantine day: `quarantine/<source>/ingest_date=YYYY-MM-DD`.
pub fn quarantine_dir(source: Source, day: i32) -> String {
    format!("{}/ingest_date={}", quarantine_root(source), format_day(day))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryObjectStore;

    const DAY_US: i64 = 86_400_000_000;

    /// Writes `rows` sessions spread round-robin over `days` days (2024-01-01
    /// on), checking after every row that the writer's memory stays within
    /// `options`' limits, if `check`. Returns the files, their bytes, and
    /// the most the writer held at once.
    fn write_spread(
        rows: usize,
        days: i32,
        options: &StagingOptions,
        check: bool,
    ) -> (Vec<WrittenFile>, BTreeMap<String, Vec<u8>>, BufferedSize) {
        let store = MemoryObjectStore::new();
        let object =
            ObjectMeta { key: "viewership/year.csv".into(), size: 0, version: "v1".into(), last_modified_us: 0 };
        let mut writer =
            PartitionWriter::new(&store, Source::Viewership, &object, "test", options, SessionBatch::default);
        let first_day = 19_723; // 2024-01-01
        let mut most = BufferedSize::default();
        for i in 0..rows {
            let day = first_day + (i as i32 % days);
            let (event_id, user_id) = (format!("event-{i:08}"), format!("user-{}", i % 997));
            let start_us = i64::from(day) * DAY_US + (i as i64 % 80_000) * 1_000_000;
            let session = ViewingSession {
                event_id: &event_id,
                user_id: &user_id,
                device_id: Some("stb-0001"),
                channel_id: "ch001",
                program_id: None,
                start_us,
                end_us: start_us + 1_800_000_000,
                duration_seconds: None,
                platform: None,
            };
            let lineage = Lineage { key: &object.key, version: &object.version, record_no: i as u64 + 1 };
            writer.push(Some(day), |b| b.append(&session, lineage)).unwrap();
            let held = writer.buffered();
            most.rows = most.rows.max(held.rows);
            most.encoder_bytes = most.encoder_bytes.max(held.encoder_bytes);
            most.partitions = most.partitions.max(held.partitions);
            if check {
                assert!(held.rows <= options.buffered_rows_limit, "row {i}: {held:?}");
                assert!(held.encoder_bytes <= options.encoder_bytes_limit, "row {i}: {held:?}");
            }
        }
        let files = writer.finish().unwrap();
        let bytes = files.iter().map(|f| (f.key.clone(), store.bytes(&f.key).unwrap())).collect();
        (files, bytes, most)
    }

    /// Every row of `files` is in its day's file; returns the number of row
    /// groups.
    fn check_days(files: &[WrittenFile], bytes: &BTreeMap<String, Vec<u8>>) -> usize {
        let mut row_groups = 0;
        for f in files {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(
                bytes[&f.key].clone(),
            ))
            .unwrap();
            row_groups += reader.metadata().num_row_groups();
            let day = f.partition.as_deref().unwrap();
            let batches: Vec<RecordBatch> = reader.build().unwrap().collect::<Result<_, _>>().unwrap();
            assert_eq!(batches.iter().map(|b| b.num_rows() as u64).sum::<u64>(), f.rows, "{day}");
            for batch in &batches {
                let start = batch.column(5).as_any().downcast_ref::<arrow_array::TimestampMicrosecondArray>().unwrap();
                assert!(start.values().iter().all(|us| format_day((us.div_euclid(DAY_US)) as i32) == day), "{day}");
            }
        }
        row_groups
    }

    #[test]
    fn an_object_spanning_many_days_stays_within_the_memory_limits() {
        // Two ways an object of many days fills a writer: many days of few
        // rows each (buffered rows), and many days past their first batch
        // (row groups in progress, here with batches of 16 rows).
        let few_rows = StagingOptions { buffered_rows_limit: 1_000, ..StagingOptions::default() };
        let row_groups =
            StagingOptions { batch_rows: 16, encoder_bytes_limit: 4 * 1024 * 1024, ..StagingOptions::default() };
        for limits in [few_rows, row_groups] {
            let (files, bytes, most) = write_spread(8_000, 200, &limits, true);
            assert_eq!(most.partitions, 200);
            assert_eq!(files.len(), 200);
            assert!(files.iter().all(|f| f.rows == 40), "8000 rows over 200 days");
            // The limits made smaller row groups, not fewer rows.
            let row_groups = check_days(&files, &bytes);
            assert!(row_groups > files.len(), "{row_groups} row groups in {} files", files.len());

            // The same rows give the same bytes.
            let (_, again, _) = write_spread(8_000, 200, &limits, false);
            assert!(bytes == again, "a second write of the same rows differs");
        }

        // Without the limits, the writer held far more: what they are for.
        let (_, _, most) = write_spread(8_000, 200, &StagingOptions::default(), false);
        assert_eq!(most.rows, 8_000);
        let (_, _, most) =
            write_spread(8_000, 200, &StagingOptions { batch_rows: 16, ..StagingOptions::default() }, false);
        assert!(most.encoder_bytes > 32 * 1024 * 1024, "{most:?}");
    }

    #[test]
    fn an_object_of_few_days_is_encoded_as_before() {
        // The limits change nothing for an object of a week: its partitions
        // reach batch_rows long before the writer reaches its limits.
        let unlimited = StagingOptions {
            buffered_rows_limit: usize::MAX,
            encoder_bytes_limit: usize::MAX,
            ..StagingOptions::default()
        };
        let (_, default_bytes, _) = write_spread(70_000, 7, &StagingOptions::default(), true);
        let (_, unlimited_bytes, _) = write_spread(70_000, 7, &unlimited, false);
        assert!(default_bytes == unlimited_bytes);
    }
}
