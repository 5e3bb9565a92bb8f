//! The catalog port (Glue Data Catalog in AWS) and its local adapter, a JSON
//! file in the lake.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::Source;
use crate::ingest::IngestReport;
use crate::schema::{TableDef, partition_column, quarantine_table_def, table_def};

/// A failure of the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The catalog could not be read or written.
    #[error("catalog {what}: {message}")]
    Unavailable {
        /// What failed: the catalog file, or the database, table or column.
        what: String,
        /// The underlying failure, as its service or the file system gave it.
        message: String,
        /// Whether a retry may succeed (a throttle or a timeout, not a refusal).
        retryable: bool,
    },
}

impl CatalogError {
    /// True when a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            CatalogError::Unavailable { retryable, .. } => *retryable,
        }
    }
}

/// Tables and their partitions.
pub trait Catalog: Send + Sync {
    /// Creates the table if missing; adds columns it lacks (additive changes
    /// only).
    fn ensure_table(&self, table: &TableDef) -> Result<(), CatalogError>;
    /// Registers partitions by their values (`2024-01-01`); existing ones are
    /// left as they are.
    fn add_partitions(&self, table: &TableDef, values: &[String]) -> Result<(), CatalogError>;
}

/// A catalog that keeps nothing: for a caller that reads the lake by path
/// alone, such as a benchmark or a test of what is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCatalog;

impl Catalog for NoCatalog {
    fn ensure_table(&self, _table: &TableDef) -> Result<(), CatalogError> {
        Ok(())
    }
    fn add_partitions(&self, _table: &TableDef, _values: &[String]) -> Result<(), CatalogError> {
        Ok(())
    }
}

/// Registers the tables and partitions an ingest wrote: staging, and the
/// quarantine when it rejected records.
pub fn register_outputs(catalog: &dyn Catalog, report: &IngestReport) -> Result<(), CatalogError> {
    if let Some(key) = &report.quarantine_key {
        register_quarantine(catalog, key)?;
    }
    if report.staged.is_empty() {
        return Ok(());
    }
    let table = table_def(report.source);
    catalog.ensure_table(&table)?;
    let partitions: Vec<String> = report.staged.iter().filter_map(|f| f.partition.clone()).collect();
    if !partitions.is_empty() {
        catalog.add_partitions(&table, &partitions)?;
    }
    Ok(())
}

/// Registers the quarantine table and partition of the quarantine file
/// `key` (`quarantine/<source>/ingest_date=YYYY-MM-DD/…`, a file of rejected
/// records or of an unreadable object).
pub fn register_quarantine(catalog: &dyn Catalog, key: &str) -> Result<(), CatalogError> {
    let not_quarantine = || CatalogError::Unavailable {
        what: key.to_owned(),
        message: "not a quarantine key (quarantine/<source>/ingest_date=YYYY-MM-DD/…)".to_owned(),
        retryable: false,
    };
    let source = key.strip_prefix("quarantine/").and_then(Source::from_key).ok_or_else(not_quarantine)?;
    let day = key.split('/').find_map(|part| part.strip_prefix("ingest_date=")).ok_or_else(not_quarantine)?;
    let table = quarantine_table_def(source);
    catalog.ensure_table(&table)?;
    catalog.add_partitions(&table, &[day.to_owned()])
}

/// Registers the tables and partitions that the lake's `keys` show: staging
/// Parquet files (`staging/<table>/[event_date=YYYY-MM-DD/]…parquet`) and
/// quarantine files (`quarantine/<source>/ingest_date=YYYY-MM-DD/…`). Other
/// keys are passed over. A catalog holds nothing these keys do not show, so
/// a lost or damaged one is rebuilt from them.
pub fn register_lake_keys<'k>(
    catalog: &dyn Catalog,
    keys: impl IntoIterator<Item = &'k str>,
) -> Result<(), CatalogError> {
    let mut staged: BTreeMap<Source, BTreeSet<String>> = BTreeMap::new();
    // One key per quarantine folder is enough: its folder is its partition.
    let mut quarantine: BTreeMap<&str, &str> = BTreeMap::new();
    let source_named = |table: &str| Source::ALL.into_iter().find(|s| s.name() == table);
    for key in keys {
        let segments: Vec<&str> = key.split('/').collect();
        match segments.as_slice() {
            ["staging", table, file] if file.ends_with(".parquet") => {
                if let Some(source) = source_named(table).filter(|&s| partition_column(s).is_none()) {
                    staged.entry(source).or_default();
                }
            }
            ["staging", table, folder, file] if file.ends_with(".parquet") => {
                if let Some(source) = source_named(table)
                    && let Some(column) = partition_column(source)
                    && let Some(day) = folder.strip_prefix(column).and_then(|v| v.strip_prefix('='))
                    && is_day(day)
                {
                    staged.entry(source).or_default().insert(day.to_owned());
                }
            }
            ["quarantine", table, folder, _]
                if source_named(table).is_some() && folder.strip_prefix("ingest_date=").is_some_and(is_day) =>
            {
                quarantine.entry(key.rsplit_once('/').map_or(key, |(f, _)| f)).or_insert(key);
            }
            _ => {}
        }
    }
    for key in quarantine.values() {
        register_quarantine(catalog, key)?;
    }
    for (source, partitions) in staged {
        let table = table_def(source);
        catalog.ensure_table(&table)?;
        if !partitions.is_empty() {
            catalog.add_partitions(&table, &partitions.into_iter().collect::<Vec<_>>())?;
        }
    }
    Ok(())
}

/// Whether a partition folder's value is a day as the lake writes them
/// (`2024-01-01`): a folder someone made by hand may hold anything.
fn is_day(value: &str) -> bool {
    value.len() == 10 && chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok()
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CatalogFile {
    tables: BTreeMap<String, CatalogTable>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CatalogTable {
    #[serde(flatten)]
    def: TableDef,
    partitions: BTreeSet<String>,
}

/// The catalog as one JSON file (`LAKE/_catalog/catalog.json` in local mode).
/// Its content is sorted, so the same tables and partitions give the same
/// bytes.
pub struct FileCatalog {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FileCatalog {
    /// A catalog kept in `path` (created on first write).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileCatalog { path: path.into(), lock: Mutex::new(()) }
    }

    fn error(&self, e: impl ToString) -> CatalogError {
        CatalogError::Unavailable { what: self.path.display().to_string(), message: e.to_string(), retryable: false }
    }

    fn update(&self, change: impl FnOnce(&mut CatalogFile)) -> Result<(), CatalogError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let (mut file, before): (CatalogFile, Option<Vec<u8>>) = match std::fs::read(&self.path) {
            Ok(bytes) => (serde_json::from_slice(&bytes).map_err(|e| self.error(e))?, Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (CatalogFile::default(), None),
            Err(e) => return Err(self.error(e)),
        };
        change(&mut file);
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| self.error(e))?;
        // Registering what is registered already is the common case (every
        // file of a day adds that day's partition): no write then.
        if before.as_deref() == Some(bytes.as_slice()) {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.error(e))?;
        }
        crate::store::replace_file(&self.path, &bytes).map_err(|e| self.error(e))
    }

    /// Every table with its partitions, for inspection and tests.
    pub fn tables(&self) -> Result<BTreeMap<String, (TableDef, Vec<String>)>, CatalogError> {
        let file: CatalogFile = match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| self.error(e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CatalogFile::default(),
            Err(e) => return Err(self.error(e)),
        };
        Ok(file.tables.into_iter().map(|(k, t)| (k, (t.def, t.partitions.into_iter().collect()))).collect())
    }
}

impl Catalog for FileCatalog {
    fn ensure_table(&self, table: &TableDef) -> Result<(), CatalogError> {
        self.update(|file| {
            let entry = file
                .tables
                .entry(table.name.clone())
                .or_insert_with(|| CatalogTable { def: table.clone(), partitions: BTreeSet::new() });
            for column in &table.columns {
                if !entry.def.columns.iter().any(|(name, _)| *name == column.0) {
                    entry.def.columns.push(column.clone());
                }
            }
        })
    }

    fn add_partitions(&self, table: &TableDef, values: &[String]) -> Result<(), CatalogError> {
        self.update(|file| {
            if let Some(entry) = file.tables.get_mut(&table.name) {
                entry.partitions.extend(values.iter().cloned());
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Source;

    #[test]
    fn tables_and_partitions_are_idempotent_and_additive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("_catalog/catalog.json");
        let catalog = FileCatalog::new(&path);
        let mut def = table_def(Source::Viewership);
        catalog.ensure_table(&def).unwrap();
        catalog.add_partitions(&def, &["2024-01-02".into(), "2024-01-01".into()]).unwrap();
        let first = std::fs::read(&path).unwrap();
        let long_ago = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(long_ago).unwrap();
        catalog.ensure_table(&def).unwrap();
        catalog.add_partitions(&def, &["2024-01-01".into()]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), first, "re-registering changes nothing");
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), long_ago, "nor writes the file");

        def.columns.push(("ad_break".into(), "string".into()));
        catalog.ensure_table(&def).unwrap();
        let tables = catalog.tables().unwrap();
        let (stored, partitions) = &tables["viewership"];
        assert_eq!(stored.columns.last().unwrap().0, "ad_break");
        assert_eq!(partitions, &["2024-01-01", "2024-01-02"]);
    }

    #[test]
    fn the_lake_keys_rebuild_the_tables_and_partitions_their_files_show() {
        let dir = tempfile::tempdir().unwrap();
        let registered = FileCatalog::new(dir.path().join("registered.json"));
        let viewership = table_def(Source::Viewership);
        registered.ensure_table(&viewership).unwrap();
        registered.add_partitions(&viewership, &["2024-01-01".into(), "2024-01-02".into()]).unwrap();
        registered.ensure_table(&table_def(Source::Channels)).unwrap();
        register_quarantine(&registered, "quarantine/demographics/ingest_date=2024-03-01/part-1.jsonl").unwrap();

        let rebuilt = FileCatalog::new(dir.path().join("rebuilt.json"));
        let keys = [
            "staging/viewership/event_date=2024-01-02/part-1.parquet",
            "staging/viewership/event_date=2024-01-01/part-1.parquet",
            "staging/viewership/event_date=2024-01-01/part-2.parquet",
            "staging/channels/part-1.parquet",
            "quarantine/demographics/ingest_date=2024-03-01/part-1.jsonl",
            "quarantine/demographics/ingest_date=2024-03-01/unreadable-2.json",
            // None of these is a table's file.
            "staging/viewership/event_date=2024-01-03/notes.txt",
            "staging/viewership/event_date=2024-02-30/part-1.parquet",
            "staging/viewership/event_date=notadate/part-1.parquet",
            "staging/viewership/event_date=2024-1-3/part-1.parquet",
            "quarantine/viewership/ingest_date=bogus/part-1.jsonl",
            "staging/viewership/part-outside-a-partition.parquet",
            "staging/demographics/event_date=2024-01-01/part-1.parquet",
            "staging/ratings/part-1.parquet",
            "quarantine/viewership/part-1.jsonl",
            "_warehouse/warehouse.duckdb",
        ];
        register_lake_keys(&rebuilt, keys).unwrap();
        let read = |catalog: &FileCatalog| std::fs::read(&catalog.path).unwrap();
        assert_eq!(String::from_utf8(read(&rebuilt)).unwrap(), String::from_utf8(read(&registered)).unwrap());
    }

    /// A full disk (`/dev/full`, where the temporary file is written).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_catalog_that_cannot_be_written_keeps_the_one_before_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.json");
        let catalog = FileCatalog::new(&path);
        let def = table_def(Source::Viewership);
        catalog.ensure_table(&def).unwrap();
        let before = std::fs::read(&path).unwrap();
        let temp = path.with_extension("json.tmp");
        std::os::unix::fs::symlink("/dev/full", &temp).unwrap();
        let err = catalog.add_partitions(&def, &["2024-01-01".into()]).unwrap_err();
        assert!(err.to_string().contains("catalog.json"), "{err}");
        assert!(std::fs::symlink_metadata(&temp).is_err(), "the temporary file is gone");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn a_quarantine_file_registers_its_sources_table_and_landing_day() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = FileCatalog::new(dir.path().join("catalog.json"));
        register_quarantine(&catalog, "quarantine/channels/ingest_date=2024-03-01/part-00ff.jsonl").unwrap();
        register_quarantine(&catalog, "quarantine/channels/ingest_date=2024-02-29/unreadable-01.json").unwrap();
        let tables = catalog.tables().unwrap();
        let (def, partitions) = &tables["quarantine_channels"];
        assert_eq!(def.format, crate::schema::TableFormat::JsonLines);
        assert_eq!(def.location, "quarantine/channels/");
        assert_eq!(def.partition_keys, [("ingest_date".to_owned(), "date".to_owned())]);
        assert_eq!(partitions, &["2024-02-29", "2024-03-01"]);
        assert_eq!(tables.len(), 1, "no other table: {:?}", tables.keys());

        for key in ["staging/viewership/event_date=2024-01-01/part-1.parquet", "quarantine/viewership/part-1.jsonl"] {
            let err = register_quarantine(&catalog, key).unwrap_err();
            assert!(err.to_string().contains(key) && !err.is_retryable(), "{err}");
        }
    }
}
