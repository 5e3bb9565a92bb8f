//! Compaction: the small staging files of a partition merged into files of a
//! target size.
//!
//! Stream batches leave one small file per shard, batch and day; readers and
//! COPY pay per file. Compaction merges them, keeping every row's lineage
//! columns, so the warehouse's ledger recognises rows it already loaded.
//!
//! # Order of effects
//!
//! For each group of small files (a *bin*):
//!
//! 1. a journal `compaction/<table>/<id>.json` names the output and the
//!    members (key and version);
//! 2. the merged file `compacted-<id>.parquet` is written and committed, and
//!    its row count checked against the members' footers;
//! 3. the members are removed, then the journal.
//!
//! A row is therefore never missing. A run that stops between 2 and 3 leaves
//! rows in both the output and its members; the next run finishes it first
//! (members whose version still matches are removed), so the overlap lasts
//! until then, and the warehouse never counts such rows twice because its
//! ledger skips lineage it has loaded.
//!
//! `<id>` hashes the members' keys and versions, so the same members give the
//! same output, byte for byte. Outputs are never members: a second run over
//! the same lake changes nothing.
//!
//! Files younger than `min_age` are left alone. Stream retries find what an
//! earlier attempt wrote by file name ([`crate::stream`]), so stream files
//! must outlive the stream's maximum record age, and a retry that started
//! just before it, before they are merged.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::error::IngestError;
use crate::source::Source;
use crate::staging::{StagingOptions, WrittenFile, lineage_metadata, writer_properties};
use crate::store::{ObjectMeta, ObjectStore, StoreError};

/// Name prefix of compaction outputs.
const OUTPUT_PREFIX: &str = "compacted-";

/// What to compact.
#[derive(Debug, Clone)]
pub struct CompactionOptions {
    /// Files at least this large are left as they are; bins are filled up to
    /// this size.
    pub target_bytes: u64,
    /// Files modified less than this long ago are left alone (microseconds).
    pub min_age_us: i64,
    /// The current time, UTC microseconds.
    pub now_us: i64,
    /// Settings of the merged files.
    pub staging: StagingOptions,
}

/// What a compaction run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompactionReport {
    /// Merged files written.
    pub written: Vec<WrittenFile>,
    /// Small files removed.
    pub removed: Vec<String>,
    /// Interrupted compactions finished first.
    pub recovered: u64,
    /// Small files that could not be read as staging Parquet (`key: why`):
    /// left where they are, and their bins compacted without them.
    pub unreadable: Vec<String>,
}

/// A compaction in progress, written before its output.
#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    output: String,
    members: Vec<Member>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Member {
    key: String,
    version: String,
}

/// A failure of compaction.
#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    /// Reading, writing or encoding failed.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The merged file does not hold what its members held; it was removed
    /// and the members kept.
    #[error("{output}: wrote {written} rows, the members hold {expected}; members kept")]
    RowCountMismatch {
        /// The key of the merged file.
        output: String,
        /// Rows the merged file holds.
        written: u64,
        /// Rows its members hold together.
        expected: u64,
    },
    /// A member that cannot be read as staging Parquet (not a fault a retry
    /// mends); its bin's journal is removed, and nothing was written.
    #[error("{key}: not readable as staging Parquet: {message}")]
    UnreadableMember {
        /// The member's key.
        key: String,
        /// Why it cannot be read.
        message: String,
    },
    /// A journal that cannot be read.
    #[error("{key}: unreadable compaction journal: {message}")]
    Journal {
        /// The journal's key.
        key: String,
        /// Why it cannot be read.
        message: String,
    },
}

impl CompactionError {
    /// True when a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CompactionError::Ingest(e) if e.is_retryable())
    }
}

impl From<StoreError> for CompactionError {
    fn from(e: StoreError) -> Self {
        CompactionError::Ingest(e.into())
    }
}

impl From<parquet::errors::ParquetError> for CompactionError {
    fn from(e: parquet::errors::ParquetError) -> Self {
        CompactionError::Ingest(e.into())
    }
}

/// Compacts every partition of `source`'s staging table.
pub fn compact_table(
    lake: &dyn ObjectStore,
    source: Source,
    options: &CompactionOptions,
) -> Result<CompactionReport, CompactionError> {
    let mut report = CompactionReport::default();
    report.recovered = recover(lake, source, &mut report.removed)?;

    let mut partitions: BTreeMap<String, Vec<ObjectMeta>> = BTreeMap::new();
    for object in lake.list(&format!("staging/{}/", source.name()))? {
        let Some((dir, name)) = object.key.rsplit_once('/') else { continue };
        let small = object.size < options.target_bytes;
        let settled = object.last_modified_us <= options.now_us - options.min_age_us;
        if name.ends_with(".parquet") && !name.starts_with(OUTPUT_PREFIX) && small && settled {
            partitions.entry(dir.to_owned()).or_default().push(object);
        }
    }
    for (dir, files) in partitions {
        for mut bin in bins(files, options.target_bytes) {
            // A member that cannot be read would otherwise stop every run
            // here, and no later partition would ever be compacted.
            while bin.len() > 1 {
                match compact_bin(lake, source, &dir, &bin, options, &mut report) {
                    Err(CompactionError::UnreadableMember { key, message }) => {
                        bin.retain(|m| m.key != key);
                        report.unreadable.push(format!("{key}: {message}"));
                    }
                    result => {
                        result?;
                        break;
                    }
                }
            }
        }
    }
    Ok(report)
}

/// Consecutive files (in key order) packed into bins of at most
/// `target_bytes`; a bin of one file is no compaction.
fn bins(files: Vec<ObjectMeta>, target_bytes: u64) -> Vec<Vec<ObjectMeta>> {
    let mut bins: Vec<Vec<ObjectMeta>> = Vec::new();
    let mut current: Vec<ObjectMeta> = Vec::new();
    let mut size = 0u64;
    for file in files {
        if !current.is_empty() && size + file.size > target_bytes {
            bins.push(std::mem::take(&mut current));
            size = 0;
        }
        size += file.size;
        current.push(file);
    }
    bins.push(current);
    bins.retain(|b| b.len() > 1);
    bins
}

fn compact_bin(
    lake: &dyn ObjectStore,
    source: Source,
    dir: &str,
    bin: &[ObjectMeta],
    options: &CompactionOptions,
    report: &mut CompactionReport,
) -> Result<(), CompactionError> {
    let mut hasher = Xxh3::new();
    for m in bin {
        hasher.update(m.key.as_bytes());
        hasher.update(b"\0");
        hasher.update(m.version.as_bytes());
        hasher.update(b"\0");
    }
    let id = format!("{:016x}", hasher.digest());
    let output = format!("{dir}/{OUTPUT_PREFIX}{id}.parquet");
    let journal_key = format!("compaction/{}/{id}.json", source.name());
    let members: Vec<Member> = bin.iter().map(|m| Member { key: m.key.clone(), version: m.version.clone() }).collect();
    let journal = Journal { output: output.clone(), members };
    lake.put(&journal_key, &serde_json::to_vec_pretty(&journal).expect("journal serializes"))?;

    let props = writer_properties(&options.staging, lineage_metadata("compaction", &id));
    let schema = crate::schema::staging_schema(source);
    let mut writer = ArrowWriter::try_new(lake.create(&output)?, schema.clone(), Some(props))?;
    let mut expected = 0u64;
    let mut written = 0u64;
    for member in bin {
        let mut bytes = Vec::with_capacity(member.size as usize);
        lake.open(&member.key)?
            .read_to_end(&mut bytes)
            .map_err(|e| StoreError::Read { key: member.key.clone(), source: e })?;
        let rows = match member_batches(bytes, &schema) {
            Ok(rows) => rows,
            Err(message) => {
                // The output's upload is dropped uncommitted; without its
                // journal, nothing of this attempt is left.
                drop(writer);
                lake.delete(&journal_key)?;
                return Err(CompactionError::UnreadableMember { key: member.key.clone(), message });
            }
        };
        expected += rows.expected;
        for batch in rows.batches {
            written += batch.num_rows() as u64;
            writer.write(&batch)?;
        }
    }
    if written != expected {
        return Err(CompactionError::RowCountMismatch { output, written, expected });
    }
    writer.into_inner()?.commit()?;
    report.written.push(WrittenFile { key: output, partition: partition_of(dir), rows: written });

    for member in bin {
        lake.delete(&member.key)?;
        report.removed.push(member.key.clone());
    }
    lake.delete(&journal_key)?;
    Ok(())
}

/// A member's rows in the staging schema, and the count its footer gives.
struct MemberRows {
    batches: Vec<arrow_array::RecordBatch>,
    expected: u64,
}

/// Decodes a member whole (it is smaller than the target size) so that a
/// file that cannot be read is found before any of it is written; the error
/// is the reason.
fn member_batches(bytes: Vec<u8>, schema: &arrow_schema::SchemaRef) -> Result<MemberRows, String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).map_err(|e| e.to_string())?;
    let expected = reader.metadata().file_metadata().num_rows() as u64;
    let mut batches = Vec::new();
    for batch in reader.build().map_err(|e| e.to_string())? {
        let batch = batch.map_err(|e| e.to_string())?;
        // Columns are taken by name, so a member whose columns come in
        // another order still merges (and one lacking a column does not).
        let columns = schema
            .fields()
            .iter()
            .map(|f| batch.column_by_name(f.name()).cloned().ok_or_else(|| format!("no column {}", f.name())))
            .collect::<Result<Vec<_>, _>>()?;
        batches.push(arrow_array::RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())?);
    }
    Ok(MemberRows { batches, expected })
}

/// `2024-01-01` for `…/event_date=2024-01-01`.
fn partition_of(dir: &str) -> Option<String> {
    dir.rsplit_once("event_date=").map(|(_, d)| d.to_owned())
}

/// The journals of `source`'s compactions that have not finished, with
/// their keys.
fn unfinished(lake: &dyn ObjectStore, source: Source) -> Result<Vec<(String, Journal)>, CompactionError> {
    let mut journals = Vec::new();
    for entry in lake.list(&format!("compaction/{}/", source.name()))? {
        let mut text = Vec::new();
        lake.open(&entry.key)?
            .read_to_end(&mut text)
            .map_err(|e| StoreError::Io { key: entry.key.clone(), source: e })?;
        let journal: Journal = serde_json::from_slice(&text)
            .map_err(|e| CompactionError::Journal { key: entry.key.clone(), message: e.to_string() })?;
        journals.push((entry.key, journal));
    }
    Ok(journals)
}

/// The staging files among `files` whose rows a compacted file also among
/// them holds: the members that a compaction stopped between steps 2 and 3
/// (see the module's order of effects) has not removed yet. A load must not
/// stage both. Their copies of a row have the same lineage, so the load's
/// dedup would take each for the other's superseded delivery and delete
/// both, and its ledger would then skip that lineage for good. The
/// journals are read only when `files` holds a compacted file.
pub fn unremoved_members(
    lake: &dyn ObjectStore,
    source: Source,
    files: &[ObjectMeta],
) -> Result<BTreeSet<String>, CompactionError> {
    let is_output = |key: &str| key.rsplit('/').next().is_some_and(|name| name.starts_with(OUTPUT_PREFIX));
    let outputs: BTreeSet<&str> = files.iter().map(|f| f.key.as_str()).filter(|k| is_output(k)).collect();
    let mut members = BTreeSet::new();
    if outputs.is_empty() {
        return Ok(members);
    }
    let versions: BTreeMap<&str, &str> = files.iter().map(|f| (f.key.as_str(), f.version.as_str())).collect();
    for (_, journal) in unfinished(lake, source)? {
        if !outputs.contains(journal.output.as_str()) {
            continue;
        }
        for member in journal.members {
            // A member rewritten since holds rows the output does not.
            if versions.get(member.key.as_str()) == Some(&member.version.as_str()) {
                members.insert(member.key);
            }
        }
    }
    Ok(members)
}

/// Finishes compactions a previous run left between writing the output and
/// removing its members. Returns how many it finished.
fn recover(lake: &dyn ObjectStore, source: Source, removed: &mut Vec<String>) -> Result<u64, CompactionError> {
    let mut finished = 0;
    for (journal_key, journal) in unfinished(lake, source)? {
        match lake.head(&journal.output) {
            Ok(_) => {
                for member in &journal.members {
                    match lake.head(&member.key) {
                        // Rewritten since (same key, new bytes): not in the output.
                        Ok(now) if now.version != member.version => {}
                        Ok(_) => {
                            lake.delete(&member.key)?;
                            removed.push(member.key.clone());
                        }
                        Err(StoreError::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                finished += 1;
            }
            // The output never committed: the members are all there is.
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        lake.delete(&journal_key)?;
    }
    Ok(finished)
}
