//! What the stream and compaction tests share: sessions as JSON, a catalog in
//! memory, and reading the staged rows back.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tvetl_core::catalog::{Catalog, CatalogError};
use tvetl_core::schema::TableDef;
use tvetl_core::store::ObjectStore;

/// 2024-01-01T00:00:00Z in seconds.
pub const JAN_1: i64 = 1_704_067_200;

/// A valid session as one JSON line, starting `hour` hours into day `day`
/// (0 = 2024-01-01).
pub fn session(id: &str, day: i64, hour: i64) -> String {
    let start = chrono::DateTime::from_timestamp(JAN_1 + day * 86_400 + hour * 3600, 0).unwrap();
    format!(
        r#"{{"event_id":"{id}","user_id":"u-{id}","channel_id":"c1","start_time":"{}","duration_seconds":600,"platform":"stb"}}"#,
        start.format("%Y-%m-%dT%H:%M:%SZ")
    )
}

/// A Kinesis sequence number of the fixed width Kinesis gives them.
pub fn seq(n: u64) -> String {
    format!("4959{n:052}")
}

/// A catalog in memory whose next `fail_next` calls fail retryably.
#[derive(Default)]
pub struct MemoryCatalog {
    pub partitions: Mutex<BTreeMap<String, Vec<String>>>,
    pub fail_next: AtomicUsize,
}

impl Catalog for MemoryCatalog {
    fn ensure_table(&self, _table: &TableDef) -> Result<(), CatalogError> {
        Ok(())
    }

    fn add_partitions(&self, table: &TableDef, values: &[String]) -> Result<(), CatalogError> {
        if self.fail_next.load(Ordering::SeqCst) > 0 {
            self.fail_next.fetch_sub(1, Ordering::SeqCst);
            let message = "Glue unavailable".into();
            return Err(CatalogError::Unavailable { what: table.name.clone(), message, retryable: true });
        }
        let mut partitions = self.partitions.lock().unwrap();
        let known = partitions.entry(table.name.clone()).or_default();
        for v in values {
            if !known.contains(v) {
                known.push(v.clone());
            }
        }
        Ok(())
    }
}

/// One staged viewing session row: what it says and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StagedRow {
    pub event_id: String,
    pub user_id: String,
    pub start_us: i64,
    pub source_key: String,
    pub source_version: String,
    pub record_no: i64,
    /// The lake key of the file holding it.
    pub file: String,
}

/// Every viewing session row under `staging/viewership/`, file by file.
pub fn staged_rows(lake: &dyn ObjectStore) -> Vec<StagedRow> {
    let mut rows = Vec::new();
    for object in lake.list("staging/viewership/").unwrap() {
        let mut bytes = Vec::new();
        lake.open(&object.key).unwrap().read_to_end(&mut bytes).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap().build().unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let text = |name: &str| batch.column_by_name(name).unwrap().as_string::<i32>().clone();
            let (ids, users, keys, versions) =
                (text("event_id"), text("user_id"), text("source_key"), text("source_version"));
            let starts = batch.column_by_name("start_time").unwrap().as_primitive::<TimestampMicrosecondType>().clone();
            let nos = batch.column_by_name("source_record_no").unwrap().as_primitive::<Int64Type>().clone();
            for i in 0..batch.num_rows() {
                rows.push(StagedRow {
                    event_id: ids.value(i).to_owned(),
                    user_id: users.value(i).to_owned(),
                    start_us: starts.value(i),
                    source_key: keys.value(i).to_owned(),
                    source_version: versions.value(i).to_owned(),
                    record_no: nos.value(i),
                    file: object.key.clone(),
                });
            }
        }
    }
    rows
}

/// The sorted event ids of `rows`.
pub fn ids(rows: &[StagedRow]) -> Vec<String> {
    let mut ids: Vec<String> = rows.iter().map(|r| r.event_id.clone()).collect();
    ids.sort();
    ids
}

/// Every object's key and version.
pub fn snapshot(lake: &dyn ObjectStore) -> Vec<(String, String)> {
    lake.list("").unwrap().into_iter().map(|m| (m.key, m.version)).collect()
}
