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
use serde::Serialize;
use xxhash_rust::xxh3::xxh3_64;

use crate::error::IngestError;
use crate::quarantine::QuarantinedRecord;
use crate::schema::staging_schema;
use crate::source::Source;
use crate::store::{ObjectMeta, ObjectStore, ObjectUpload, StoreError};
use crate::timestamp::format_day;
use crate::validate::ViewingSession;

/// Tuning of the staging files.
#[derive(Debug, Clone)]
pub struct StagingOptions {
    /// Rows buffered per partition before they are encoded.
    pub batch_rows: usize,
    /// Rows per Parquet row group (bounds the encoder's memory).
    pub row_group_rows: usize,
    /// zstd level.
    pub zstd_level: i32,
}

impl Default for StagingOptions {
    fn default() -> Self {
        StagingOptions { batch_rows: 8192, row_group_rows: 256 * 1024, zstd_level: 1 }
    }
}

/// The deterministic id of the files one step writes for one input object.
pub fn output_id(step: &str, object: &ObjectMeta) -> String {
    let identity = format!("{step}\0{}\0{}", object.key, object.version);
    format!("{:016x}", xxh3_64(identity.as_bytes()))
}

/// A file the step wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    pub key: &'a str,
    pub version: &'a str,
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

#[derive(Default)]
struct LineageColumns {
    key: StringBuilder,
    version: StringBuilder,
    record_no: Int64Builder,
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
#[derive(Default)]
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
        TextBatch {
            columns: (0..width).map(|_| StringBuilder::new()).collect(),
            lineage: LineageColumns::default(),
            rows: 0,
        }
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

/// Streams one table's rows into one Parquet file per partition.
///
/// Memory is bounded by `batch_rows` buffered rows plus one row group in the
/// encoder, per open partition. Files become visible only on [`finish`]; an
/// aborted (dropped) writer leaves nothing.
///
/// [`finish`]: PartitionWriter::finish
pub struct PartitionWriter<'s, B> {
    store: &'s dyn ObjectStore,
    source: Source,
    file_name: String,
    schema: SchemaRef,
    props: WriterProperties,
    batch_rows: usize,
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
            batch_rows: options.batch_rows,
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
        if part.rows.len() >= self.batch_rows {
            let batch = part.rows.finish(&self.schema)?;
            part.written += batch.num_rows() as u64;
            part.writer.write(&batch)?;
        }
        Ok(())
    }

    /// Encodes what is buffered, closes every file and makes them visible.
    pub fn finish(self) -> Result<Vec<WrittenFile>, IngestError> {
        let mut written = Vec::with_capacity(self.open.len());
        for (day, mut part) in self.open {
            if part.rows.len() > 0 {
                let batch = part.rows.finish(&self.schema)?;
                part.written += batch.num_rows() as u64;
                part.writer.write(&batch)?;
            }
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
        let key = format!("{}/part-{}.jsonl", quarantine_prefix(source, object), output_id(step, object));
        Self::at(store, key)
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

/// The lake folder of a quarantine day: `quarantine/<source>/ingest_date=YYYY-MM-DD`.
pub fn quarantine_dir(source: Source, day: i32) -> String {
    format!("quarantine/{}/ingest_date={}", source.name(), format_day(day))
}
