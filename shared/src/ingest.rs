//! The ingest step: one raw object in, staging Parquet and quarantine out.
//!
//! This is what `functions/ingest-batch` runs for every S3 record and what
//! `tvetl run` runs for every file; only the stores differ.

use serde::{Deserialize, Serialize};

use crate::decode::{Record, RecordBody, decode};
use crate::error::IngestError;
use crate::quarantine::{QuarantineCounts, QuarantinedRecord, Rejection};
use crate::source::{Source, format_of};
use crate::staging::{
    Lineage, PartitionWriter, QuarantineWriter, SessionBatch, StagingOptions, TextBatch, WrittenFile, quarantine_prefix,
};
use crate::store::{ObjectMeta, ObjectStore, StoreBody};
use crate::timestamp::utc_day;
use crate::validate::{validate_channel, validate_demographic, validate_session};

/// The name of this step, part of every output's deterministic id.
pub const STEP: &str = "ingest-batch/v1";

/// Options of the ingest step.
#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    /// Staging file tuning.
    pub staging: StagingOptions,
}

/// Records read, accepted and quarantined; `read = accepted + quarantined`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordCounts {
    /// Records decoded, malformed ones included.
    pub rows_read: u64,
    /// Records that passed validation and were staged.
    pub rows_accepted: u64,
    /// Records sent to quarantine, per reason code.
    pub quarantined: QuarantineCounts,
}

impl RecordCounts {
    /// Adds another object's counts.
    pub fn merge(&mut self, other: &RecordCounts) {
        self.rows_read += other.rows_read;
        self.rows_accepted += other.rows_accepted;
        self.quarantined.merge(&other.quarantined);
    }
}

/// What ingesting one object did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestReport {
    /// The raw object.
    pub key: String,
    /// Its source.
    pub source: Source,
    /// Its record counts.
    pub counts: RecordCounts,
    /// Staging files written, one per partition.
    pub staged: Vec<WrittenFile>,
    /// The quarantine file, if any record was rejected.
    pub quarantine_key: Option<String>,
    /// Columns or keys that are not fields of the source (ignored), at most
    /// [`crate::decode::MAX_UNKNOWN_COLUMNS`].
    pub unknown_columns: Vec<String>,
    /// Whether the object had more unknown columns than those listed.
    pub more_unknown_columns: bool,
}

impl IngestReport {
    /// The lake keys of everything the ingest wrote: its staging files and
    /// its quarantine file.
    pub fn written_keys(&self) -> impl Iterator<Item = &String> {
        self.staged.iter().map(|f| &f.key).chain(&self.quarantine_key)
    }
}

/// Ingests one raw object from `raw` into the `lake`.
///
/// The object loads entirely or not at all: on an error nothing it would
/// have written is visible. A bad object ([`IngestError::is_bad_object`])
/// should then be recorded with [`record_unreadable`].
pub fn ingest_object(
    raw: &dyn ObjectStore,
    object: &ObjectMeta,
    lake: &dyn ObjectStore,
    options: &IngestOptions,
) -> Result<IngestReport, IngestError> {
    let unsupported = || IngestError::Unsupported { key: object.key.clone() };
    let source = Source::from_key(&object.key).ok_or_else(unsupported)?;
    let (format, compression) = format_of(&object.key).ok_or_else(unsupported)?;
    let reader = StoreBody::new(raw.open_listed(object)?);

    let mut counts = RecordCounts::default();
    let mut quarantine = QuarantineWriter::new(lake, source, object, STEP);
    let mut reject = |record_no: u64, line: u64, rejection: Rejection, original: String| {
        counts.quarantined.add(rejection.reason);
        quarantine.write(&QuarantinedRecord {
            source_key: &object.key,
            record_no,
            line,
            reason: rejection.reason,
            field: rejection.field,
            message: &rejection.message,
            original: &original,
            stream: None,
        })
    };
    let lineage = |record_no| Lineage { key: &object.key, version: &object.version, record_no };
    let staging = &options.staging;

    let (summary, staged) = match source {
        Source::Viewership => {
            let mut writer = PartitionWriter::new(lake, source, object, STEP, staging, SessionBatch::default);
            let summary = decode(&object.key, reader, format, compression, source.fields(), |record: Record<'_>| {
                counts.rows_read += 1;
                match record.body {
                    RecordBody::Malformed { message, field, original } => reject(
                        record.record_no,
                        record.line,
                        Rejection::malformed(field.map(|i| source.fields()[i]), message),
                        original.render(),
                    ),
                    RecordBody::Fields { values, original } => match validate_session(values) {
                        Ok(session) => {
                            counts.rows_accepted += 1;
                            let day = utc_day(session.start_us);
                            writer.push(Some(day), |rows| rows.append(&session, lineage(record.record_no)))
                        }
                        Err(rejection) => reject(record.record_no, record.line, rejection, original.render()),
                    },
                }
            })?;
            (summary, writer.finish()?)
        }
        Source::Channels | Source::Demographics => {
            let width = source.fields().len();
            let mut writer = PartitionWriter::new(lake, source, object, STEP, staging, || TextBatch::new(width));
            let summary = decode(&object.key, reader, format, compression, source.fields(), |record: Record<'_>| {
                counts.rows_read += 1;
                match record.body {
                    RecordBody::Malformed { message, field, original } => reject(
                        record.record_no,
                        record.line,
                        Rejection::malformed(field.map(|i| source.fields()[i]), message),
                        original.render(),
                    ),
                    RecordBody::Fields { values, original } => {
                        let valid = match source {
                            Source::Channels => validate_channel(values).map(|v| v.to_vec()),
                            _ => validate_demographic(values).map(|v| v.to_vec()),
                        };
                        match valid {
                            Ok(values) => {
                                counts.rows_accepted += 1;
                                writer.push(None, |rows| rows.append(&values, lineage(record.record_no)))
                            }
                            Err(rejection) => reject(record.record_no, record.line, rejection, original.render()),
                        }
                    }
                }
            })?;
            (summary, writer.finish()?)
        }
    };
    let quarantine_key = quarantine.finish()?;
    Ok(IngestReport {
        key: object.key.clone(),
        source,
        counts,
        staged,
        quarantine_key,
        unknown_columns: summary.unknown_columns,
        more_unknown_columns: summary.more_unknown_columns,
    })
}

/// The file names an ingest of the object version `key`, `version` gives
/// its quarantine files, whatever their ingest date: its rejected records'
/// (`part-<id>.jsonl`) and its record as unreadable (`unreadable-<id>.json`).
/// An ingest writes one of them or neither.
pub fn quarantine_file_names(key: &str, version: &str) -> [String; 2] {
    let id = crate::staging::version_output_id(STEP, key, version);
    [crate::staging::QuarantineWriter::file_name(&id), format!("unreadable-{id}.json")]
}

/// Records an object that could not be read at all as
/// `quarantine/<source>/ingest_date=…/unreadable-<id>.json`, so the failure is
/// data like any rejected record. Returns the key written.
pub fn record_unreadable(
    lake: &dyn ObjectStore,
    object: &ObjectMeta,
    error: &IngestError,
) -> Result<String, IngestError> {
    #[derive(Serialize)]
    struct Unreadable<'a> {
        source_key: &'a str,
        source_version: &'a str,
        size: u64,
        error: String,
    }
    let source = Source::from_key(&object.key).unwrap_or(Source::Viewership);
    let [_, name] = quarantine_file_names(&object.key, &object.version);
    let key = format!("{}/{name}", quarantine_prefix(source, object));
    let body = Unreadable {
        source_key: &object.key,
        source_version: &object.version,
        size: object.size,
        error: error.to_string(),
    };
    // One line, like the quarantine's record files beside it, so that the
    // quarantine table (JSON lines) reads it as a row.
    let mut line = serde_json::to_vec(&body).expect("serializes");
    line.push(b'\n');
    lake.put(&key, &line)?;
    Ok(key)
}
