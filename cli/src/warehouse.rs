//! The local warehouse: DuckDB running the same SQL as Redshift.
//!
//! Only the copy step differs: Redshift's `COPY … FORMAT AS PARQUET` becomes
//! an `INSERT … SELECT * FROM read_parquet([...])` over the lake's files.
//!
//! Staging tables are transit tables: every load empties its own before it
//! commits. Here they are session-local temporary tables
//! (`temp.main.staging_<table>`, which the adapter substitutes for
//! `staging.<table>` in every statement), so staged rows stay in memory
//! (spilling past the memory limit) instead of being compressed into the
//! database file only to be deleted again. The persistent `staging` schema
//! still exists, empty, as `schema.sql` creates it.
//!
//! Physical storage is the other local difference, as Redshift's column
//! encodings are its own: the near-unique id columns of the core sessions
//! table are stored uncompressed (see [`UNCOMPRESSED_COLUMNS`]).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::cpu::Stopwatch;
use duckdb::Connection;
use duckdb::types::ValueRef;
use serde_json::Value;
use tvetl_core::Source;
use tvetl_core::store::with_suffix;
use tvetl_core::stream::delivery;
use tvetl_core::warehouse::{
    LoadStats, ResultSet, Warehouse, WarehouseError, ledger_table, load_statements, schema_statements, staging_table,
};

/// A failure of the file (or folder) at `path`, as the error names it.
fn file_error(path: &Path, e: impl std::fmt::Display) -> WarehouseError {
    WarehouseError::Unavailable { message: format!("{}: {e}", path.display()), retryable: false }
}

/// A failure to open the database file at `path`, with the way out when
/// DuckDB says the file is damaged ([`damage_advice`]); other failures (a
/// lock, a permission, a full disk, a newer build's storage version) are
/// not met by moving the file away.
fn open_error(path: &Path, e: duckdb::Error) -> WarehouseError {
    let message = e.to_string();
    let advice = damage_advice(&message).map(|advice| format!(". {advice}")).unwrap_or_default();
    file_error(path, format!("{message}{advice}"))
}

const DAMAGED_FILE_ADVICE: &str = "If the lake's database file (_warehouse/warehouse.duckdb) is damaged, move it \
    (and a .wal file beside it) away: the next run builds the warehouse again from the landing folder's files, \
    without the sessions that only files no longer there delivered";

const DAMAGED_LOG_ADVICE: &str = "If the database's write-ahead log (_warehouse/warehouse.duckdb.wal) is damaged, \
    move it away: the next run does again, from the landing folder's files, the loads it held, without what \
    only files no longer there delivered";

/// The way out of an engine error (`message`) that says the database file
/// or its write-ahead log is damaged, which DuckDB finds on opening it or
/// on reading a block: none for other errors. By DuckDB's own words, so
/// that no other error that says "corrupt" (a raw file's gzip) is taken
/// for one.
pub fn damage_advice(message: &str) -> Option<&'static str> {
    let damaged = ["Corruption Error", "Corrupt database file", "Corrupt WAL file", "not a valid DuckDB database file"];
    // A short read, of the database file only: DuckDB says the same of any
    // file it reads (a staging file cut short).
    let cut_short = message.contains("Could not read enough bytes") && message.contains("warehouse.duckdb");
    if !cut_short && !damaged.iter().any(|sign| message.contains(sign)) {
        None
    } else if message.contains("WAL file") {
        Some(DAMAGED_LOG_ADVICE)
    } else {
        Some(DAMAGED_FILE_ADVICE)
    }
}

/// Limits of the embedded engine.
#[derive(Debug, Clone)]
pub struct EngineLimits {
    /// DuckDB's `memory_limit` (it spills to disk beyond it).
    pub memory_limit: String,
    /// DuckDB worker threads.
    pub threads: usize,
}

/// DuckDB's default memory limit (`tvetl run --help` says why this value).
pub const DEFAULT_MEMORY_LIMIT: &str = "320MB";

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits { memory_limit: DEFAULT_MEMORY_LIMIT.into(), threads: 2 }
    }
}

/// `--memory-limit`'s value, if DuckDB takes it: checked as an argument, so
/// that a typo fails before the run writes anything, naming the flag.
pub fn parse_memory_limit(limit: &str) -> Result<String, String> {
    let conn = Connection::open_in_memory().map_err(|e| e.to_string())?;
    conn.execute_batch(&format!("SET memory_limit = {}", quoted(limit)))
        .map_err(|e| e.to_string().trim_start_matches("Parser Error: ").to_owned())?;
    Ok(limit.to_owned())
}

/// A DuckDB database file holding the staging, core and analytics schemas.
pub struct DuckDbWarehouse {
    conn: Connection,
    /// Whether statements read and write the session's temporary staging
    /// tables in place of the persistent ones: so for a connection that
    /// loads ([`DuckDbWarehouse::open`]); a read-only one has none.
    local_staging: bool,
}

fn engine_error(index: usize, statement: &str, e: duckdb::Error) -> WarehouseError {
    WarehouseError::Statement { index, statement: statement.to_owned(), message: e.to_string() }
}

/// Sets the engine's limits on a connection to the database at `path`,
/// which spills beside it. The loads do not keep insertion order: none of
/// their statements relies on it, and keeping it costs memory. Ad-hoc
/// queries keep it, so a table without `ORDER BY` lists as it was loaded.
fn apply_limits(
    conn: &Connection,
    path: &Path,
    limits: &EngineLimits,
    keep_insertion_order: bool,
) -> Result<(), WarehouseError> {
    let settings = format!(
        "SET memory_limit = {}; SET threads = {}; SET preserve_insertion_order = {keep_insertion_order}; SET temp_directory = {};",
        quoted(&limits.memory_limit),
        limits.threads.max(1),
        quoted(&path.with_extension("spill").display().to_string())
    );
    conn.execute_batch(&settings).map_err(|e| engine_error(0, &settings, e))
}

impl DuckDbWarehouse {
    /// Opens (or creates, with [`DuckDbWarehouse::create`]) the database at
    /// `path` and applies the schema.
    pub fn open(path: &Path, limits: &EngineLimits) -> Result<Self, WarehouseError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
        }
        if !path.exists() {
            Self::create(path, limits)?;
        }
        Self::connect(path, limits)
    }

    /// Creates the database at `path` whole or not at all: it is made under
    /// another name beside it, given the schema and written out, then
    /// renamed. DuckDB writes a new database's first blocks in place, and a
    /// file cut short there (a full disk) is no database: every later run
    /// and report would refuse it, however much room there was by then. A
    /// write-ahead log left without its database is dropped, as DuckDB drops
    /// one when it creates a database.
    fn create(path: &Path, limits: &EngineLimits) -> Result<(), WarehouseError> {
        let creating = with_suffix(path, ".creating");
        let remove = |file: &Path| match std::fs::remove_file(file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(file_error(file, e)),
            _ => Ok(()),
        };
        let remove_creating = || remove(&creating).and_then(|()| remove(&with_suffix(&creating, ".wal")));
        // What a run killed while creating it left.
        remove_creating()?;
        let created = Connection::open(&creating)
            .map_err(|e| file_error(&creating, e))
            .and_then(|conn| Self::with_schema(conn, &creating, limits))
            .and_then(|warehouse| {
                warehouse.conn.execute_batch("CHECKPOINT").map_err(|e| file_error(&creating, e))?;
                warehouse.conn.close().map_err(|(_, e)| file_error(&creating, e))?;
                remove(&with_suffix(path, ".wal"))?;
                std::fs::rename(&creating, path).map_err(|e| file_error(path, e))
            });
        if created.is_err() {
            let _ = remove_creating();
        }
        created
    }

    /// Opens the database at `path` and applies the schema.
    fn connect(path: &Path, limits: &EngineLimits) -> Result<Self, WarehouseError> {
        let conn = Connection::open(path).map_err(|e| open_error(path, e))?;
        Self::with_schema(conn, path, limits)
    }

    /// The connection `conn` to the database at `path`, with the engine's
    /// limits and the schema applied.
    fn with_schema(conn: Connection, path: &Path, limits: &EngineLimits) -> Result<Self, WarehouseError> {
        apply_limits(&conn, path, limits, false)?;
        let mut warehouse = DuckDbWarehouse { conn, local_staging: true };
        let mut statements = schema_statements();
        for (index, statement) in statements.iter_mut().enumerate() {
            if let Cow::Owned(local) = with_local_storage(index, statement)? {
                *statement = local;
            }
        }
        // The session's staging tables, typed like the persistent ones.
        statements.extend(Source::ALL.iter().map(|&source| {
            let table = staging_table(source);
            format!("CREATE TEMP TABLE IF NOT EXISTS {} AS SELECT * FROM {table} WITH NO DATA", local_staging(table))
        }));
        warehouse.transaction(&statements, false)?;
        Ok(warehouse)
    }

    /// Writes what the loads committed into the database file and closes
    /// it. Dropped, the connection does the same but cannot say that the
    /// write failed (a full disk). The loads stay committed then, in the
    /// write-ahead log beside the file, which the next open reads.
    pub fn close(self) -> Result<(), WarehouseError> {
        let sql = "CHECKPOINT";
        self.conn.execute_batch(sql).map_err(|e| engine_error(0, sql, e))
    }

    /// Opens the database at `path` read-only, for reports, exports and
    /// ad-hoc queries: no schema is applied, a statement that would write
    /// fails, and other read-only processes may open the file at the same
    /// time. Queries run as written, so the persistent `staging` tables are
    /// the ones read (empty between loads).
    pub fn open_read_only(path: &Path, limits: &EngineLimits) -> Result<Self, WarehouseError> {
        let config =
            duckdb::Config::default().access_mode(duckdb::AccessMode::ReadOnly).map_err(|e| file_error(path, e))?;
        let conn = Connection::open_with_flags(path, config).map_err(|e| open_error(path, e))?;
        apply_limits(&conn, path, limits, true)?;
        Ok(DuckDbWarehouse { conn, local_staging: false })
    }

    /// Confines this connection to reading its own database. Read-only mode
    /// refuses writes to it, but not writes around it: `COPY … TO` a file,
    /// `EXPORT DATABASE`, or `ATTACH` of a database file (this warehouse's
    /// own, after a `DETACH`) in read-write mode. Without external access
    /// none of these run; with the configuration locked, no query can turn
    /// it back on. For `tvetl sql`, whose queries are the user's.
    pub fn confine_to_reads(&self) -> Result<(), WarehouseError> {
        let sql = "SET enable_external_access = false; SET lock_configuration = true;";
        self.conn.execute_batch(sql).map_err(|e| engine_error(0, sql, e))
    }

    /// Runs one query and hands its result to a sink that `start` makes
    /// from the result's Arrow schema, batch by batch (`each`); returns the
    /// sink and the number of rows. The batches come from DuckDB's Arrow
    /// interface, typed as DuckDB types them.
    pub fn query_batches<W>(
        &self,
        sql: &str,
        start: impl FnOnce(arrow_schema::SchemaRef) -> Result<W, WarehouseError>,
        mut each: impl FnMut(&mut W, &arrow_array::RecordBatch) -> Result<(), WarehouseError>,
    ) -> Result<(W, u64), WarehouseError> {
        let mut statement = self.conn.prepare(sql).map_err(|e| engine_error(0, sql, e))?;
        let batches = statement.query_arrow([]).map_err(|e| engine_error(0, sql, e))?;
        let mut sink = start(batches.get_schema())?;
        let mut rows = 0;
        for batch in batches {
            rows += batch.num_rows() as u64;
            each(&mut sink, &batch)?;
        }
        Ok((sink, rows))
    }

    /// The statements that fill a staging table from staging Parquet files,
    /// [`FILES_PER_COPY`] files each, in the files' order.
    fn copy_statements(source: Source, files: &[impl AsRef<Path>]) -> Vec<String> {
        // The partition value is derived from start_time in SQL, as on
        // Redshift, whose COPY does not see the path either.
        copies(files, &format!("INSERT INTO {} SELECT *", staging_table(source)))
    }

    /// The statements that stage a run's staging `files` of `source`, and
    /// how the load's counts are to be completed: a dimension's files are
    /// copied in whole ([`DuckDbWarehouse::copy_statements`]), the viewing
    /// sessions' as follows.
    ///
    /// A run over a folder that keeps every day's files (an SFTP drop that
    /// is never emptied) holds mostly files loaded before. The load drops
    /// their rows through its ledger, but counts their event ids in the
    /// run's duplicates, which are counted over the whole input as a first
    /// run over the same files counts them. Two ways to have those ids:
    ///
    /// - When every session in core was last delivered by one of `files`,
    ///   core holds exactly their ids. So it is when every file the ledger
    ///   lists is among them (such a folder, loaded by no other run), or
    ///   when the sessions of those that are not have all been delivered
    ///   again since (a file replaced by a corrected version with the same
    ///   sessions), which a query of core tells. Their rows are then not
    ///   staged at all: the load counts core's ids and those of the new
    ///   files that core holds, before it changes core
    ///   ([`LoadCopies::load_statements`]), and
    ///   [`DuckDbWarehouse::complete_counts`] adds what their staging
    ///   would have added. A run then costs what is new (plus a scan of
    ///   core's ids if the new files re-deliver some of its sessions),
    ///   where staging them cost what the folder holds, and grouping their
    ///   ids is what a run of 40M sessions ran out of memory in.
    /// - Otherwise (core holds sessions last delivered by other files, or
    ///   there are more than [`MAX_FOREIGN_FILES`] of those to ask about),
    ///   they are staged "thin": their event ids alone, with what the
    ///   ledger matches them by. Copying the other columns too cost twice
    ///   the CPU (4.8 s against 2.1 s for the benchmark's 5M sessions).
    ///
    /// A file put back to content a load took in before another version of
    /// it is delivered again: its ledger rows are dropped first, in the same
    /// transaction, so that it loads as new; `empty` are the run's raw files
    /// of `source` that staged nothing, which the ledger records too
    /// ([`DuckDbWarehouse::deliveries_again`]).
    pub fn load_copies(
        &mut self,
        source: Source,
        files: &[StagedFile],
        empty: &[RawVersion],
    ) -> Result<LoadCopies, WarehouseError> {
        let (again, to_record) = self.deliveries_again(source, files, empty)?;
        let ledger_changes = LedgerChanges { source, forget: again.clone(), record_empty: to_record };
        if files.is_empty() {
            // Only files that staged nothing: the ledger's changes are all.
            return Ok(LoadCopies { statements: Vec::new(), tallied_rows: None, ledger_changes });
        }
        if source != Source::Viewership {
            let paths: Vec<&PathBuf> = files.iter().map(|f| &f.path).collect();
            return Ok(LoadCopies {
                statements: Self::copy_statements(source, &paths),
                tallied_rows: None,
                ledger_changes,
            });
        }
        let ledger = self.session_ledger()?;
        let (mut loaded, mut new) = (Vec::new(), Vec::new());
        let (mut loaded_entries, mut loaded_rows) = (HashSet::new(), 0);
        for file in files {
            let (key, version, _) = &file.ledger_entry;
            if ledger.contains(&file.ledger_entry) && !again.iter().any(|(k, v)| k == key && v == version) {
                loaded_entries.insert(&file.ledger_entry);
                loaded_rows += file.rows;
                loaded.push(&file.path);
            } else {
                new.push(&file.path);
            }
        }
        let mut statements = Self::copy_statements(Source::Viewership, &new);
        // The files delivered again count as other files here: core may
        // hold sessions of their first load that no file of the run holds
        // now, and its ids are then not those of the files loaded before.
        let foreign: Vec<&LedgerEntry> = ledger.iter().filter(|e| !loaded_entries.contains(e)).collect();
        let tallied = !loaded.is_empty() && self.sessions_last_delivered_by(&foreign)? == Some(0);
        if !tallied {
            let columns = "event_id, start_time, source_key, source_version";
            let insert = format!("INSERT INTO {} ({columns}) SELECT {columns}", staging_table(Source::Viewership));
            statements.extend(copies(&loaded, &insert));
        }
        Ok(LoadCopies { statements, tallied_rows: tallied.then_some(loaded_rows), ledger_changes })
    }

    /// Which of the run's raw files of `source` (key and version) the
    /// ledger must take in again: of those that staged rows (`files`), the
    /// ones whose content a load took in before it took another version of
    /// the same key (a file put back to what it held before a correction);
    /// and of those that staged nothing (`empty`), the ones the ledger does
    /// not list as the last version of their key.
    ///
    /// The ledger lists a file's staging files as loaded (their names and
    /// lineage come from the key and content, as a rerun needs), so the
    /// load would skip them and keep the correction; but the run's input
    /// holds this content now, and a later run wins. A version that staged
    /// nothing (only rejected rows, or unreadable) is a version all the
    /// same: recorded with no rows, it is what tells that the content
    /// before it came back. The run's files are each key's current content,
    /// so a load of them is this question's to answer; a Lambda's load,
    /// which may be handed an older version's files again (a notification
    /// delivered twice, a folder loaded again), keeps the ledger's rule.
    fn deliveries_again(
        &mut self,
        source: Source,
        files: &[StagedFile],
        empty: &[RawVersion],
    ) -> Result<(Vec<RawVersion>, Vec<RawVersion>), WarehouseError> {
        let loads = self.query(&format!(
            "SELECT source_key, source_version, MAX(load_id) AS last_load FROM core.load_ledger \
             WHERE table_name = {} GROUP BY source_key, source_version",
            quoted(ledger_table(source))
        ))?;
        let mut by_key: HashMap<String, Vec<(String, i64)>> = HashMap::new();
        for row in 0..loads.rows.len() {
            let key = loads.text(row, "source_key")?.unwrap_or_default();
            let version = loads.text(row, "source_version")?.unwrap_or_default();
            by_key.entry(key).or_default().push((version, loads.int(row, "last_load")?));
        }
        // None: not in the ledger; Some(true): another version of its key
        // was loaded after it.
        let superseded = |key: &str, version: &str| -> Option<bool> {
            let versions = by_key.get(key)?;
            let last_load = versions.iter().find(|(v, _)| v == version).map(|(_, load)| *load)?;
            Some(versions.iter().any(|(v, load)| *load > last_load && delivery(v) != delivery(version)))
        };
        let staged: BTreeSet<(&str, &str)> =
            files.iter().map(|f| (f.ledger_entry.0.as_str(), f.ledger_entry.1.as_str())).collect();
        let again = staged
            .into_iter()
            .filter(|(key, version)| superseded(key, version) == Some(true))
            .map(|(key, version)| (key.to_owned(), version.to_owned()))
            .collect();
        let to_record =
            empty.iter().filter(|(key, version)| superseded(key, version) != Some(false)).cloned().collect();
        Ok((again, to_record))
    }

    /// Completes the counts of a load whose copies tallied the files it
    /// had loaded before, holding `loaded_rows` sessions
    /// ([`LoadCopies::tallied_rows`]), to what staging them would have
    /// counted: their rows are staged and already loaded, and every
    /// delivery of their ids past the first, among them and in the new
    /// files, is a duplicate.
    pub fn complete_counts(&mut self, stats: &mut LoadStats, loaded_rows: u64) -> Result<(), WarehouseError> {
        let tally = self.query("SELECT ids_loaded, ids_delivered_again FROM loaded_tally")?;
        let (ids_loaded, ids_delivered_again) =
            (tally.int(0, "ids_loaded")? as u64, tally.int(0, "ids_delivered_again")? as u64);
        stats.rows_staged += loaded_rows;
        stats.rows_already_loaded += loaded_rows;
        stats.duplicates_removed += loaded_rows.saturating_sub(ids_loaded) + ids_delivered_again;
        Ok(())
    }

    /// How many sessions in core were last delivered by the staging files
    /// `files` (as the ledger lists them); `None` if there are more than
    /// [`MAX_FOREIGN_FILES`] to ask about. A file without a day holds
    /// none.
    fn sessions_last_delivered_by(&mut self, files: &[&LedgerEntry]) -> Result<Option<i64>, WarehouseError> {
        let files: Vec<String> = files
            .iter()
            .filter(|(_, _, day)| !day.is_empty())
            .map(|(key, version, day)| format!("({}, {}, DATE {})", quoted(key), quoted(version), quoted(day)))
            .collect();
        if files.is_empty() {
            return Ok(Some(0));
        }
        if files.len() > MAX_FOREIGN_FILES {
            return Ok(None);
        }
        let sql = format!(
            "SELECT COUNT(*) AS sessions FROM core.viewing_sessions c \
             JOIN (VALUES {}) AS f(source_key, source_version, event_date) \
             ON c.source_key = f.source_key AND c.source_version = f.source_version AND c.event_date = f.event_date",
            files.join(", ")
        );
        self.query(&sql)?.int(0, "sessions").map(Some)
    }

    /// Every staging file of viewing sessions the load ledger lists: those
    /// a load drops from staging. A row without a day matches no file.
    fn session_ledger(&mut self) -> Result<HashSet<LedgerEntry>, WarehouseError> {
        let ledger = self.query(
            "SELECT source_key, source_version, COALESCE(CAST(event_date AS VARCHAR), '') AS event_date \
             FROM core.load_ledger WHERE table_name = 'viewing_sessions'",
        )?;
        (0..ledger.rows.len())
            .map(|row| {
                let text = |column| ledger.text(row, column).map(Option::unwrap_or_default);
                Ok((text("source_key")?, text("source_version")?, text("event_date")?))
            })
            .collect()
    }

    /// Sets how many worker threads DuckDB runs the next statements on.
    pub fn set_threads(&mut self, threads: usize) -> Result<(), WarehouseError> {
        let sql = format!("SET threads = {}", threads.max(1));
        self.conn.execute_batch(&sql).map_err(|e| engine_error(0, &sql, e))
    }

    /// The next load id (loads are numbered in order).
    pub fn next_load_id(&mut self) -> Result<i64, WarehouseError> {
        let r = self.query("SELECT COALESCE(MAX(load_id), 0) + 1 AS next_id FROM core.load_ledger")?;
        r.int(0, "next_id")
    }
}

/// A raw file as the load ledger names it: its key and version.
pub type RawVersion = (String, String);

/// What a run's load changes in the ledger before it copies
/// ([`DuckDbWarehouse::load_copies`]).
pub struct LedgerChanges {
    source: Source,
    /// Files delivered again: their ledger rows are dropped.
    forget: Vec<RawVersion>,
    /// Files that staged nothing, recorded with no rows (their earlier
    /// rows, if any, dropped).
    record_empty: Vec<RawVersion>,
}

impl LedgerChanges {
    /// Whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.forget.is_empty() && self.record_empty.is_empty()
    }

    /// The statements, for load `load_id`.
    pub fn statements(&self, load_id: i64) -> Vec<String> {
        let table = quoted(ledger_table(self.source));
        let values = |files: &mut dyn Iterator<Item = &RawVersion>| -> String {
            files.map(|(key, version)| format!("({}, {})", quoted(key), quoted(version))).collect::<Vec<_>>().join(", ")
        };
        let mut statements = Vec::new();
        if !self.is_empty() {
            statements.push(format!(
                "DELETE FROM core.load_ledger USING (VALUES {}) AS again(source_key, source_version) \
                 WHERE core.load_ledger.table_name = {table} AND core.load_ledger.source_key = again.source_key \
                 AND core.load_ledger.source_version = again.source_version",
                values(&mut self.forget.iter().chain(&self.record_empty))
            ));
        }
        if !self.record_empty.is_empty() {
            statements.push(format!(
                "INSERT INTO core.load_ledger (table_name, source_key, source_version, event_date, row_count, load_id) \
                 SELECT {table}, source_key, source_version, NULL, 0, {load_id} \
                 FROM (VALUES {}) AS empty(source_key, source_version)",
                values(&mut self.record_empty.iter())
            ));
        }
        statements
    }
}

/// A staging file of viewing sessions as the load ledger lists it: its
/// source key, source version and event date.
pub type LedgerEntry = (String, String, String);

/// A staging file that a run holds, as its load takes it in.
pub struct StagedFile {
    /// Its path.
    pub path: PathBuf,
    /// How the load ledger lists it once loaded.
    pub ledger_entry: LedgerEntry,
    /// The rows in it.
    pub rows: u64,
}

/// The copy statements of a load, and what its counts still need
/// ([`DuckDbWarehouse::load_copies`]).
pub struct LoadCopies {
    /// The statements, in order.
    pub statements: Vec<String>,
    /// The sessions of the files loaded before, if they were tallied
    /// instead of staged: the load's counts then need
    /// [`DuckDbWarehouse::complete_counts`].
    pub tallied_rows: Option<u64>,
    /// What the load changes in the ledger before it copies.
    pub ledger_changes: LedgerChanges,
}

impl LoadCopies {
    /// The load's statements: the ledger's changes, the copies, then
    /// `source`'s load SQL as load `load_id`, with [`LOADED_TALLY_SQL`] in
    /// it when the files loaded before are tallied, right after the
    /// statement that finds the days of the versions the load replaces
    /// ([`TALLY_AFTER`]).
    pub fn load_statements(self, source: Source, load_id: i64) -> Vec<String> {
        let mut statements = self.ledger_changes.statements(load_id);
        statements.extend(load_statements(source, self.statements, load_id));
        if self.tallied_rows.is_some() {
            // The load SQL is compiled in, and a test holds it to having
            // that statement.
            let after = statements
                .iter()
                .position(|s| s.starts_with(TALLY_AFTER))
                .expect("the sessions' load finds the days of the versions it replaces");
            statements.insert(after + 1, LOADED_TALLY_SQL.to_owned());
        }
        statements
    }
}

/// The statement of the sessions' load after which the files loaded before
/// are tallied: core is as it was, staging holds the new files' sessions
/// (deduplicated, so with the same ids), and `replaced_days` has a row
/// whenever one of them is in core.
const TALLY_AFTER: &str = "CREATE TEMP TABLE replaced_days";

/// Core's event ids, which are those of the files loaded before when the
/// ledger lists no others, and how many of the staged ids core holds. The
/// second needs a join that reads all of core's ids (1.0 CPU s over 19.2M
/// sessions); when `replaced_days` is empty, none of the staged ids is in
/// core, and the condition on it lets DuckDB skip the join (0.00 CPU s), as
/// a landing folder's run over a day of new sessions does.
const LOADED_TALLY_SQL: &str = "CREATE OR REPLACE TEMP TABLE loaded_tally AS SELECT \
    (SELECT COUNT(*) FROM core.viewing_sessions) AS ids_loaded, \
    (SELECT COUNT(DISTINCT n.event_id) FROM staging.viewing_sessions n \
     JOIN core.viewing_sessions c ON c.event_id = n.event_id \
     WHERE (SELECT COUNT(*) FROM replaced_days) > 0) AS ids_delivered_again";

/// Files the ledger lists and a run does not hold, up to which a run asks
/// core whether it holds sessions they delivered last
/// ([`DuckDbWarehouse::load_copies`]); past it, the files loaded before
/// are staged thin. Such a run's core is mostly other files' anyway: a
/// folder a day's, say, of which a run holds a few files again.
pub const MAX_FOREIGN_FILES: usize = 1000;

/// Whether `e` is DuckDB running out of its memory limit.
pub fn out_of_memory(e: &WarehouseError) -> bool {
    e.to_string().contains("Out of Memory")
}

/// `text` as a SQL string literal.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `insert` (an `INSERT … SELECT` without its `FROM`) from `files`,
/// [`FILES_PER_COPY`] a statement, in the files' order.
fn copies(files: &[impl AsRef<Path>], insert: &str) -> Vec<String> {
    files
        .chunks(FILES_PER_COPY)
        .map(|chunk| {
            let list: Vec<String> = chunk.iter().map(|f| quoted(&f.as_ref().display().to_string())).collect();
            format!("{insert} FROM read_parquet([{}], hive_partitioning = false)", list.join(", "))
        })
        .collect()
}

/// Staging files one copy statement reads at most.
///
/// DuckDB's `read_parquet` keeps what it learnt of each file of its list
/// until the statement ends, outside its memory limit. Thousands of small raw
/// files (a set-top box's upload each) spread over a week stage tens of
/// thousands of small files: 16,000 raw files of 25 sessions over 7 days
/// stage 110K, and one statement over all of them took the run to 821-866 MB
/// of RSS. In statements of 500 files the same run peaks at 334-383 MB, for
/// the same CPU (60 s of copy-in either way). The Python package, replaying the
/// copy-in alone, peaks at 272, 314 and 365 MB with 100, 500 and 1,000 files
/// a statement.
pub const FILES_PER_COPY: usize = 500;

/// Columns the local warehouse stores without compression, by table.
///
/// They are near-unique strings. DuckDB's dictionary+FSST analysis of them
/// costs about a fifth of a load's CPU (0.7 s per million sessions, measured
/// with the bench data) for a database file 1.6x smaller; for a local
/// warehouse the CPU matters more. The other columns compress cheaply.
pub const UNCOMPRESSED_COLUMNS: &[(&str, &[&str])] =
    &[("core.viewing_sessions", &["event_id", "user_id", "device_id"])];

/// `sql` (statement `index` of the schema) with DuckDB's `USING COMPRESSION
/// uncompressed` added to the columns of [`UNCOMPRESSED_COLUMNS`] if it
/// creates one of their tables. The schema declares one column per line; a
/// listed column not found that way is an error, so the list cannot silently
/// go stale.
fn with_local_storage(index: usize, sql: &str) -> Result<Cow<'_, str>, WarehouseError> {
    const UNCOMPRESSED: &str = " USING COMPRESSION uncompressed";
    let Some((table, columns)) = UNCOMPRESSED_COLUMNS
        .iter()
        .find(|(table, _)| sql.trim_start().starts_with(&format!("CREATE TABLE IF NOT EXISTS {table} (")))
    else {
        return Ok(Cow::Borrowed(sql));
    };
    let mut found = Vec::new();
    let mut out = String::with_capacity(sql.len() + UNCOMPRESSED.len() * columns.len());
    for line in sql.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if columns.contains(&name) && !found.contains(&name) {
            found.push(name);
            let (definition, comma) = match line.trim_end().strip_suffix(',') {
                Some(definition) => (definition, ","),
                None => (line.trim_end(), ""),
            };
            out.push_str(&format!("{definition}{UNCOMPRESSED}{comma}"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    match columns.iter().find(|c| !found.contains(c)) {
        Some(missing) => Err(WarehouseError::Statement {
            index,
            statement: sql.to_owned(),
            message: format!(
                "schema.sql: no line declaring column {missing} of {table}, which the local warehouse stores uncompressed"
            ),
        }),
        None => Ok(Cow::Owned(out.trim_end().to_owned())),
    }
}

/// The temporary table standing in for the staging table `table`
/// (`staging.viewing_sessions` → `staging_viewing_sessions`).
fn local_staging(table: &str) -> String {
    table.replacen('.', "_", 1)
}

/// `sql` with every staging table replaced by its temporary stand-in.
fn with_local_staging(sql: &str) -> Cow<'_, str> {
    let mut sql = Cow::Borrowed(sql);
    for source in Source::ALL {
        let table = staging_table(source);
        if sql.contains(table) {
            sql = Cow::Owned(replace_table(&sql, table, &local_staging(table)));
        }
    }
    sql
}

/// Replaces `table` where it is a whole name: not part of a longer
/// identifier, nor qualified by a catalog.
fn replace_table(sql: &str, table: &str, with: &str) -> String {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find(table) {
        out.push_str(&rest[..at]);
        let before = out.chars().next_back();
        let after = rest[at + table.len()..].chars().next();
        let whole = !before.is_some_and(|c| is_ident(c) || c == '.') && !after.is_some_and(is_ident);
        out.push_str(if whole { with } else { table });
        rest = &rest[at + table.len()..];
    }
    out.push_str(rest);
    out
}

/// A DuckDB value as JSON: numbers as numbers, dates and timestamps in
/// DuckDB's own text form, lists and structs as arrays and objects.
fn json_value(v: ValueRef<'_>) -> Value {
    json_of(v.to_owned())
}

/// A double as JSON: NaN and the infinities, which JSON has no number for,
/// as DuckDB prints them (`nan`, `inf`, `-inf`), not as NULL.
fn float(f: f64) -> Value {
    match f {
        f if f.is_nan() => Value::String("nan".into()),
        f if f.is_infinite() => Value::String(if f > 0.0 { "inf" } else { "-inf" }.into()),
        f => f.into(),
    }
}

fn json_of(v: duckdb::types::Value) -> Value {
    use duckdb::types::Value as Db;
    match v {
        Db::Null => Value::Null,
        Db::Boolean(b) => Value::Bool(b),
        Db::TinyInt(i) => i.into(),
        Db::SmallInt(i) => i.into(),
        Db::Int(i) => i.into(),
        Db::BigInt(i) => i.into(),
        Db::HugeInt(i) => i64::try_from(i).map_or_else(|_| Value::String(i.to_string()), Value::from),
        Db::UHugeInt(i) => u64::try_from(i).map_or_else(|_| Value::String(i.to_string()), Value::from),
        Db::UTinyInt(i) => i.into(),
        Db::USmallInt(i) => i.into(),
        Db::UInt(i) => i.into(),
        Db::UBigInt(i) => i.into(),
        Db::Float(f) => float(f64::from(f)),
        Db::Double(f) => float(f),
        Db::Decimal(d) => d.to_string().parse::<f64>().map_or(Value::Null, Value::from),
        Db::Text(t) | Db::Enum(t) => Value::String(t),
        Db::Blob(b) | Db::Geometry(b) => Value::String(b.iter().map(|byte| format!("\\x{byte:02X}")).collect()),
        // DuckDB's infinite dates and timestamps are the extreme values.
        Db::Date32(i32::MAX) | Db::Timestamp(_, i64::MAX) => Value::String("infinity".into()),
        Db::Date32(days) if days == -i32::MAX => Value::String("-infinity".into()),
        Db::Timestamp(_, value) if value == -i64::MAX => Value::String("-infinity".into()),
        Db::Date32(days) => Value::String(
            chrono::DateTime::from_timestamp(i64::from(days) * 86_400, 0)
                .map_or_else(|| format!("date {days}"), |t| t.format("%Y-%m-%d").to_string()),
        ),
        // A fraction only where there is one, as DuckDB prints them.
        Db::Timestamp(unit, value) => {
            let micros = unit.to_micros(value);
            Value::String(chrono::DateTime::from_timestamp_micros(micros).map_or_else(
                || format!("timestamp {value} {unit:?}"),
                |t| format!("{}{}", t.format("%Y-%m-%d %H:%M:%S"), fraction(micros.rem_euclid(1_000_000) as u64)),
            ))
        }
        Db::Time64(unit, value) => Value::String(clock(unit.to_micros(value))),
        Db::Interval { months, days, nanos } => Value::String(interval(months, days, nanos / 1000)),
        Db::List(items) | Db::Array(items) => Value::Array(items.into_iter().map(json_of).collect()),
        Db::Struct(fields) => {
            Value::Object(fields.iter().map(|(name, value)| (name.clone(), json_of(value.clone()))).collect())
        }
        Db::Map(entries) => Value::Array(
            entries.iter().map(|(k, v)| Value::Array(vec![json_of(k.clone()), json_of(v.clone())])).collect(),
        ),
        Db::Union(inner) => json_of(*inner),
        // The enum is non-exhaustive: a type added later is still shown.
        other => Value::String(format!("{other:?}")),
    }
}

/// `HH:MM:SS[.ffffff]` of a time of day or an interval's time part.
fn clock(micros: i64) -> String {
    let (sign, micros) = if micros < 0 { ("-", micros.unsigned_abs()) } else { ("", micros as u64) };
    let seconds = micros / 1_000_000;
    format!("{sign}{:02}:{:02}:{:02}{}", seconds / 3600, seconds / 60 % 60, seconds % 60, fraction(micros % 1_000_000))
}

/// `.5` of 500,000 microseconds; nothing of none.
fn fraction(micros: u64) -> String {
    if micros == 0 { String::new() } else { format!(".{micros:06}").trim_end_matches('0').to_owned() }
}

/// An interval as DuckDB prints one: `1 year 2 months 3 days 04:05:06`.
fn interval(months: i32, days: i32, micros: i64) -> String {
    let unit = |n: i32, name: &str| format!("{n} {name}{}", if n.abs() == 1 { "" } else { "s" });
    let mut parts = Vec::new();
    if months / 12 != 0 {
        parts.push(unit(months / 12, "year"));
    }
    if months % 12 != 0 {
        parts.push(unit(months % 12, "month"));
    }
    if days != 0 {
        parts.push(unit(days, "day"));
    }
    if micros != 0 || parts.is_empty() {
        parts.push(clock(micros));
    }
    parts.join(" ")
}

fn run_query(conn: &Connection, index: usize, sql: &str) -> Result<ResultSet, WarehouseError> {
    let mut statement = conn.prepare(sql).map_err(|e| engine_error(index, sql, e))?;
    let mut rows = statement.query([]).map_err(|e| engine_error(index, sql, e))?;
    let mut out = ResultSet::default();
    // Columns of DuckDB's NULL type (`SELECT NULL`): the duckdb crate panics
    // reading their values, which are all NULL.
    let mut untyped = Vec::new();
    while let Some(row) = rows.next().map_err(|e| engine_error(index, sql, e))? {
        if out.columns.is_empty() {
            out.columns = row.as_ref().column_names();
            untyped =
                (0..out.columns.len()).map(|i| row.as_ref().column_type(i) == arrow_schema::DataType::Null).collect();
        }
        let mut values = Vec::with_capacity(untyped.len());
        for (i, untyped) in untyped.iter().enumerate() {
            values.push(if *untyped {
                Value::Null
            } else {
                json_value(row.get_ref(i).map_err(|e| engine_error(index, sql, e))?)
            });
        }
        out.rows.push(values);
    }
    if out.columns.is_empty() {
        out.columns = rows.as_ref().map(|s| s.column_names()).unwrap_or_default();
    }
    Ok(out)
}

/// With `TVETL_SQL_TIMINGS` set, prints the wall and CPU seconds a statement
/// took, and its first words, on stderr.
pub fn report_timing(watch: &Stopwatch, sql: &str) {
    static ENABLED: std::sync::LazyLock<bool> =
        std::sync::LazyLock::new(|| std::env::var_os("TVETL_SQL_TIMINGS").is_some());
    if *ENABLED {
        let head: String = sql.split_whitespace().take(8).collect::<Vec<_>>().join(" ");
        eprintln!("{:>8.3}s wall {:>8.3}s cpu  {head}", watch.wall(), watch.cpu());
    }
}

fn is_query(sql: &str) -> bool {
    let head = sql.trim_start().get(..6).unwrap_or("");
    head.eq_ignore_ascii_case("select") || sql.trim_start().to_ascii_lowercase().starts_with("with ")
}

impl DuckDbWarehouse {
    /// Runs `statements` as one transaction, with the temporary staging
    /// tables in place of the persistent ones if `local_staging` (not while
    /// [`DuckDbWarehouse::open`] is making them).
    fn transaction(&mut self, statements: &[String], local_staging: bool) -> Result<ResultSet, WarehouseError> {
        let tx = self.conn.transaction().map_err(|e| engine_error(0, "BEGIN", e))?;
        let mut last = ResultSet::default();
        for (index, sql) in statements.iter().enumerate() {
            let watch = Stopwatch::start();
            let sql = &*if local_staging { with_local_staging(sql) } else { Cow::Borrowed(sql.as_str()) };
            if index + 1 == statements.len() && is_query(sql) {
                last = run_query(&tx, index, sql)?;
            } else {
                tx.execute_batch(sql).map_err(|e| engine_error(index, sql, e))?;
            }
            report_timing(&watch, sql);
        }
        let watch = Stopwatch::start();
        tx.commit().map_err(|e| engine_error(statements.len(), "COMMIT", e))?;
        report_timing(&watch, "COMMIT");
        Ok(last)
    }
}

impl Warehouse for DuckDbWarehouse {
    fn execute_transaction(&mut self, statements: &[String]) -> Result<ResultSet, WarehouseError> {
        self.transaction(statements, self.local_staging)
    }

    fn query(&mut self, sql: &str) -> Result<ResultSet, WarehouseError> {
        let sql = if self.local_staging { with_local_staging(sql) } else { Cow::Borrowed(sql) };
        run_query(&self.conn, 0, &sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A warehouse in a folder of its own, on one thread (so that what a
    /// test measures does not depend on the machine's cores).
    fn one_thread_warehouse() -> (tempfile::TempDir, DuckDbWarehouse) {
        let dir = tempfile::tempdir().unwrap();
        let limits = EngineLimits { threads: 1, ..EngineLimits::default() };
        let wh = DuckDbWarehouse::open(&dir.path().join("w.duckdb"), &limits).unwrap();
        (dir, wh)
    }

    /// A staged viewing session's row, as `VALUES` text: 10 minutes from
    /// 10:00 on 2024-01-0`day`, with the lineage given.
    fn staged_session(id: &str, user: &str, channel: &str, day: u32, lineage: (&str, &str, u32)) -> String {
        let (key, version, record_no) = lineage;
        format!(
            "('{id}', '{user}', NULL, '{channel}', NULL, TIMESTAMP '2024-01-0{day} 10:00:00', \
             TIMESTAMP '2024-01-0{day} 10:10:00', NULL, NULL, '{key}', '{version}', {record_no})"
        )
    }

    /// Loads `rows` ([`staged_session`]s) as staged viewing sessions, in
    /// load `load_id`, and returns its counts.
    fn load_staged(wh: &mut DuckDbWarehouse, load_id: i64, rows: &[String]) -> LoadStats {
        let copy = format!("INSERT INTO staging.viewing_sessions VALUES {}", rows.join(", "));
        let counts = wh.execute_transaction(&load_statements(Source::Viewership, vec![copy], load_id)).unwrap();
        LoadStats::from_result(&counts).unwrap()
    }

    /// A staged row of channel c1 named `name`, as `VALUES` text, with the
    /// lineage given.
    fn staged_channel(name: &str, lineage: (&str, &str, u32)) -> String {
        let (key, version, record_no) = lineage;
        format!("('c1', '{name}', NULL, NULL, NULL, '{key}', '{version}', {record_no})")
    }

    /// A staged row of user u1 in age band `band`, as `VALUES` text, with
    /// the lineage given.
    fn staged_user(band: &str, lineage: (&str, &str, u32)) -> String {
        let (key, version, record_no) = lineage;
        format!("('u1', '{band}', NULL, NULL, '{key}', '{version}', {record_no})")
    }

    /// Loads `rows` ([`staged_channel`]s or [`staged_user`]s) as the staged
    /// rows of the dimension `source`, in load `load_id`, and returns its
    /// counts.
    fn load_dimension(wh: &mut DuckDbWarehouse, source: Source, load_id: i64, rows: &[String]) -> LoadStats {
        let copy = format!("INSERT INTO {} VALUES {}", staging_table(source), rows.join(", "));
        let counts = wh.execute_transaction(&load_statements(source, vec![copy], load_id)).unwrap();
        LoadStats::from_result(&counts).unwrap()
    }

    /// Core's sessions as `expression` renders each, in order.
    fn core_sessions(wh: &mut DuckDbWarehouse, expression: &str) -> Vec<String> {
        let core = wh.query(&format!("SELECT {expression} AS s FROM core.viewing_sessions ORDER BY 1")).unwrap();
        (0..core.rows.len()).map(|r| core.text(r, "s").unwrap().unwrap()).collect()
    }

    /// The files of `dir`, by name.
    fn file_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_new_database_appears_whole_with_its_schema_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.duckdb");
        // What a run killed while creating it left, and a log without its
        // database.
        for (name, bytes) in
            [("w.duckdb.creating", "a half-made"), ("w.duckdb.creating.wal", "log"), ("w.duckdb.wal", "x")]
        {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        // A failure once the file is begun (here, a limit the engine
        // refuses) leaves no database, and nothing beside it.
        let refused = EngineLimits { memory_limit: "lots".into(), threads: 1 };
        let Err(err) = DuckDbWarehouse::open(&path, &refused) else { panic!("opened with {refused:?}") };
        assert!(err.to_string().contains("lots"), "{err}");
        assert_eq!(file_names(dir.path()), ["w.duckdb.wal"], "the log of no database is dropped only with one made");

        let limits = EngineLimits { threads: 1, ..EngineLimits::default() };
        drop(DuckDbWarehouse::open(&path, &limits).unwrap());
        assert_eq!(file_names(dir.path()), ["w.duckdb"]);
        // Written out with its schema: read-only, which applies none, it has
        // the tables.
        let mut wh = DuckDbWarehouse::open_read_only(&path, &limits).unwrap();
        let tables = wh.query("SELECT COUNT(*) AS n FROM duckdb_tables() WHERE schema_name = 'core'").unwrap();
        assert!(tables.int(0, "n").unwrap() >= 3, "{:?}", tables.rows);
    }

    /// DuckDB's messages as it gives them, on opening the file or on
    /// reading a block of it later.
    #[test]
    fn damage_is_told_from_other_failures_and_a_damaged_log_from_a_damaged_file() {
        let block = "Data Corruption Error: Corrupt database file: computed checksum 1 does not match stored \
                     checksum 2 in block at location 536576";
        assert_eq!(damage_advice(block), Some(DAMAGED_FILE_ADVICE));
        let header = "IO Error: The file \"w.duckdb\" exists, but it is not a valid DuckDB database file!";
        assert_eq!(damage_advice(header), Some(DAMAGED_FILE_ADVICE));
        let log = "Data Corruption Error: Failure while replaying WAL file \"w.duckdb.wal\": Corrupt WAL file: \
                   entry at byte position 392055 computed checksum 1 does not match stored checksum 2";
        assert_eq!(damage_advice(log), Some(DAMAGED_LOG_ADVICE));
        let short = "IO Error: Could not read enough bytes from file \"/l/_warehouse/warehouse.duckdb\": attempted \
                     to read 4096 bytes from location 8192";
        assert_eq!(damage_advice(short), Some(DAMAGED_FILE_ADVICE));
        for other in [
            "IO Error: Could not read enough bytes from file \"/l/staging/viewership/part-1.parquet\"",
            "IO Error: Trying to read a database file with storage version number 65, which is not supported",
            "IO Error: Could not write file \"/l/_warehouse/warehouse.duckdb.wal\": No space left on device",
            "viewership/a.csv.gz: unreadable: corrupt deflate stream",
            "IO Error: Could not set lock on file \"w.duckdb\": Conflicting lock is held",
            "IO Error: Cannot open file \"w.duckdb\": Permission denied",
            "Out of Memory Error: could not allocate block of size 256.0 KiB",
        ] {
            assert_eq!(damage_advice(other), None, "{other}");
        }
    }

    #[test]
    fn a_damaged_database_file_is_refused_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.duckdb");
        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        let limits = EngineLimits { threads: 1, ..EngineLimits::default() };
        for err in [DuckDbWarehouse::open(&path, &limits).err(), DuckDbWarehouse::open_read_only(&path, &limits).err()]
        {
            let err = err.expect("a damaged file is refused").to_string();
            assert!(
                err.contains(path.to_str().unwrap()) && err.contains("move it (and a .wal file beside it) away"),
                "{err}"
            );
        }
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 8192], "and left as it was");
    }

    #[test]
    fn values_print_as_duckdb_prints_them() {
        use duckdb::types::{TimeUnit, Value as Db};
        let text = |v: Db| json_of(v).as_str().unwrap().to_owned();
        assert_eq!(text(Db::Timestamp(TimeUnit::Microsecond, 1_704_153_600_500_000)), "2024-01-02 00:00:00.5");
        assert_eq!(text(Db::Timestamp(TimeUnit::Microsecond, -750_000)), "1969-12-31 23:59:59.25");
        assert_eq!(text(Db::Timestamp(TimeUnit::Second, 1_704_153_600)), "2024-01-02 00:00:00");
        assert_eq!(text(Db::Date32(19_724)), "2024-01-02");
        assert_eq!(text(Db::Date32(i32::MAX)), "infinity");
        assert_eq!(text(Db::Timestamp(TimeUnit::Microsecond, -i64::MAX)), "-infinity");
        // Doubles JSON has no number for, not NULL.
        assert_eq!(text(Db::Double(f64::NAN)), "nan");
        assert_eq!(text(Db::Double(f64::INFINITY)), "inf");
        assert_eq!(text(Db::Float(f32::NEG_INFINITY)), "-inf");
        assert_eq!(json_of(Db::Double(0.5)), Value::from(0.5));
        assert_eq!(text(Db::Time64(TimeUnit::Microsecond, 3_723_040_000)), "01:02:03.04");
        assert_eq!(
            text(Db::Interval { months: 14, days: 3, nanos: 3_723_500_000_000 }),
            "1 year 2 months 3 days 01:02:03.5"
        );
        assert_eq!(text(Db::Interval { months: 0, days: 1, nanos: 0 }), "1 day");
        assert_eq!(text(Db::Interval { months: 0, days: 0, nanos: -90_000_000_000 }), "-00:01:30");
        assert_eq!(json_of(Db::List(vec![Db::Int(1), Db::Null])), serde_json::json!([1, null]));
    }

    #[test]
    fn staging_names_are_replaced_only_where_whole() {
        let sql = "DELETE FROM staging.channels USING core.load_ledger \
                   WHERE core.load_ledger.source_key = staging.channels.source_key \
                   AND x.staging.channels_old = 1 AND mystaging.channels = 2";
        assert_eq!(
            with_local_staging(sql),
            "DELETE FROM staging_channels USING core.load_ledger \
             WHERE core.load_ledger.source_key = staging_channels.source_key \
             AND x.staging.channels_old = 1 AND mystaging.channels = 2"
        );
        assert!(matches!(with_local_staging("SELECT 1"), Cow::Borrowed(_)));
    }

    #[test]
    fn listed_columns_get_uncompressed_storage_and_a_missing_one_is_an_error() {
        let sql = "CREATE TABLE IF NOT EXISTS core.viewing_sessions (\n    event_id VARCHAR(256) NOT NULL,\n    \
                   user_idx VARCHAR(256),\n    user_id VARCHAR(256) NOT NULL,\n    device_id VARCHAR(256)\n)";
        assert_eq!(
            with_local_storage(0, sql).unwrap(),
            "CREATE TABLE IF NOT EXISTS core.viewing_sessions (\n    \
             event_id VARCHAR(256) NOT NULL USING COMPRESSION uncompressed,\n    user_idx VARCHAR(256),\n    \
             user_id VARCHAR(256) NOT NULL USING COMPRESSION uncompressed,\n    \
             device_id VARCHAR(256) USING COMPRESSION uncompressed\n)"
        );
        let err =
            with_local_storage(0, "CREATE TABLE IF NOT EXISTS core.viewing_sessions (\n    event_id VARCHAR(256)\n)")
                .unwrap_err();
        assert!(err.to_string().contains("column user_id of core.viewing_sessions"), "{err}");
        assert!(matches!(
            with_local_storage(0, "CREATE TABLE IF NOT EXISTS core.users (x INT)").unwrap(),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn core_ids_are_stored_uncompressed_and_other_columns_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.duckdb");
        let mut wh = DuckDbWarehouse::open(&path, &EngineLimits::default()).unwrap();
        // Enough distinct rows for a full row group, so that DuckDB picks a
        // compression per column segment when it persists them.
        wh.execute_transaction(&["INSERT INTO core.viewing_sessions SELECT 'e' || i, 'u' || (i % 5000), 'd' || (i % 7000), \
              'c' || (i % 40), NULL, TIMESTAMP '2024-01-01' + to_seconds(i), TIMESTAMP '2024-01-01' + to_seconds(i + 60), \
              DATE '2024-01-01', 60, 60, 'stb', 'viewership/a.csv', 'v1', i, 1 FROM range(200000) t(i)"
            .into()])
        .unwrap();
        wh.conn.execute_batch("CHECKPOINT").unwrap();
        let r = wh
            .query(
                "SELECT column_name, string_agg(DISTINCT compression, ',' ORDER BY compression) AS methods \
                 FROM pragma_storage_info('core.viewing_sessions') WHERE segment_type = 'VARCHAR' \
                 GROUP BY column_name ORDER BY column_name",
            )
            .unwrap();
        let methods: std::collections::BTreeMap<String, String> = r
            .rows
            .iter()
            .map(|row| (row[0].as_str().unwrap().to_owned(), row[1].as_str().unwrap().to_owned()))
            .collect();
        for id in ["event_id", "user_id", "device_id"] {
            assert_eq!(methods[id], "Uncompressed", "{id}: {methods:?}");
        }
        for other in ["channel_id", "platform", "source_key"] {
            assert_ne!(methods[other], "Uncompressed", "{other}: {methods:?}");
        }
    }

    /// Two files can hold the same delivery, lineage and all (a compacted
    /// file and the members a stopped compaction left, or a stream batch
    /// written again after compaction): the load must rank it as one
    /// delivery and keep it once, not take each copy for the other's
    /// superseded delivery and delete both.
    #[test]
    fn a_delivery_staged_twice_with_one_lineage_is_loaded_once() {
        let (_dir, mut wh) = one_thread_warehouse();
        let row =
            |id: &str, user: &str, key: &str, record_no: u32| staged_session(id, user, "c1", 1, (key, "v1", record_no));
        let rows = [
            // e1: delivered by k1, then by k2, whose delivery is staged twice.
            row("e1", "old", "k1", 1),
            row("e1", "new", "k2", 5),
            row("e1", "new", "k2", 5),
            // e2: one delivery, staged twice; e3 and e4: staged once.
            row("e2", "u2", "k1", 2),
            row("e2", "u2", "k1", 2),
            row("e3", "u3", "k1", 3),
            row("e4", "u4", "k2", 6),
        ];
        let copy = format!("INSERT INTO staging.viewing_sessions VALUES {}", rows.join(", "));
        let counts = wh.execute_transaction(&load_statements(Source::Viewership, vec![copy], 1)).unwrap();
        assert_eq!(counts.int(0, "rows_staged").unwrap(), 7);
        assert_eq!(counts.int(0, "duplicates_removed").unwrap(), 3);
        assert_eq!(counts.int(0, "rows_merged").unwrap(), 4);
        let core = core_sessions(&mut wh, "event_id || ':' || user_id || ':' || source_key");
        assert_eq!(core, ["e1:new:k2", "e2:u2:k1", "e3:u3:k1", "e4:u4:k2"]);
    }

    #[test]
    fn an_earlier_record_of_a_delivery_loaded_after_a_later_one_does_not_replace_it() {
        // On AWS each staging file is loaded as its queue batch comes, so a
        // raw object's (or a stream batch's) day files can commit in any
        // order: here the later record's file first.
        let (_dir, mut wh) = one_thread_warehouse();
        let mut load = |load_id: i64, rows: &[(&str, &str, &str, &str, u32, u32)]| {
            let rows: Vec<String> = rows
                .iter()
                .map(|&(id, channel, key, version, day, record_no)| {
                    staged_session(id, "u1", channel, day, (key, version, record_no))
                })
                .collect();
            let stats = load_staged(&mut wh, load_id, &rows);
            (stats.duplicates_removed, stats.rows_merged, stats.days_touched)
        };
        let batch = "kinesis/views/shardId-000000000000/100";
        // The later records: e1's record 2 of a.csv (day 2), e2's record 5 of
        // a stream batch (day 3), e3's record 1 of b.csv.
        assert_eq!(
            load(1, &[("e1", "cB", "viewership/a.csv", "v1", 2, 2), ("e2", "cS5", batch, "~150-160", 3, 5)]),
            (0, 2, 2)
        );
        assert_eq!(load(2, &[("e3", "cX", "viewership/b.csv", "v1", 1, 1)]), (0, 1, 1));
        // Their earlier records, in the day files loaded after: each is a
        // duplicate that changes nothing. A stream batch's files each carry
        // their own range as version (the file of another day, or of a
        // retry), marked ~: one delivery all the same.
        assert_eq!(
            load(3, &[("e1", "cA", "viewership/a.csv", "v1", 1, 1), ("e2", "cS2", batch, "~100-140", 2, 2)]),
            (2, 0, 0)
        );
        // Another delivery replaces core's, whatever its record numbers: a
        // corrected a.csv (a new version), and e3's record 7 of an earlier
        // key in a later run.
        assert_eq!(
            load(4, &[("e1", "cC", "viewership/a.csv", "v2", 1, 1), ("e3", "cY", "viewership/0.csv", "v1", 1, 7)]),
            (0, 2, 2)
        );
        assert_eq!(core_sessions(&mut wh, "event_id || ':' || channel_id"), ["e1:cC", "e2:cS5", "e3:cY"]);
    }

    #[test]
    fn of_two_uploads_of_one_raw_file_in_one_load_the_later_wins_whatever_the_record_numbers() {
        // On AWS a file uploaded again before its first upload's load ran
        // reaches one load as two versions, named by upload time. The
        // correction moves e1 to its first line: by record number alone the
        // first upload's e1 (line 2) would win.
        let (_dir, mut wh) = one_thread_warehouse();
        let key = "viewership/2024-01-01.csv";
        let (first, second) = ("20240101T100000Z_ffff@zz", "20240101T100001Z_0000@aa");
        // A stream batch's files: ~9-9 sorts after ~10-10 as text, but its
        // record 10 is the later.
        let batch = "kinesis/views/shardId-000000000000/9";
        // Another file: a version named before upload times (or stored
        // before the bucket kept versions), whose ETag sorts above the time,
        // and a later upload; and two uploads of one second.
        let (other, same) = ("viewership/2024-01-02.csv", "viewership/2024-01-03.csv");
        let rows = [
            staged_session("e0", "u0", "cOld", 1, (key, first, 1)),
            staged_session("e1", "u1", "cOld", 1, (key, first, 2)),
            staged_session("e1", "u1", "cNew", 1, (key, second, 1)),
            staged_session("e2", "u2", "cS9", 1, (batch, "~9-9", 9)),
            staged_session("e2", "u2", "cS10", 1, (batch, "~10-10", 10)),
            staged_session("e3", "u3", "cNamedBefore", 1, (other, "f9b2c@3HL4kq", 5)),
            staged_session("e3", "u3", "cTimed", 1, (other, first, 1)),
            staged_session("e4", "u4", "cLaterRecord", 1, (same, "20240101T100000Z_0000@aa", 2)),
            staged_session("e4", "u4", "cEarlierRecord", 1, (same, "20240101T100000Z_ffff@zz", 1)),
        ];
        let stats = load_staged(&mut wh, 1, &rows);
        assert_eq!((stats.duplicates_removed, stats.rows_merged), (4, 5));
        let core = core_sessions(&mut wh, "event_id || ':' || channel_id");
        assert_eq!(
            core,
            ["e0:cOld", "e1:cNew", "e2:cS10", "e3:cTimed", "e4:cLaterRecord"],
            "e1 and e3 of the later upload, e2 and e4 of the later record; e0, not in the correction, stays"
        );

        // The dimensions the same way.
        let (channels, users) = ("channels/list.csv", "demographics/users.csv");
        let staged = [staged_channel("Old", (channels, first, 2)), staged_channel("New", (channels, second, 1))];
        load_dimension(&mut wh, Source::Channels, 2, &staged);
        let staged = [staged_user("18-24", (users, first, 2)), staged_user("25-34", (users, second, 1))];
        load_dimension(&mut wh, Source::Demographics, 2, &staged);
        let named = wh.query("SELECT channel_name AS v FROM core.channels").unwrap();
        assert_eq!(named.text(0, "v").unwrap().as_deref(), Some("New"));
        let banded = wh.query("SELECT age_band AS v FROM core.users").unwrap();
        assert_eq!(banded.text(0, "v").unwrap().as_deref(), Some("25-34"));
    }

    #[test]
    fn an_earlier_upload_of_a_raw_file_loaded_after_a_later_one_does_not_replace_it() {
        // On AWS two uploads' staging files can sit in separate queue
        // batches, which commit in any order: here the later upload's first.
        let (_dir, mut wh) = one_thread_warehouse();
        let key = "viewership/2024-01-01.csv";
        let (first, second, third) =
            ("20240101T100000Z_ffff@zz", "20240101T100001Z_0000@aa", "20240101T100002Z_8888@mm");
        let mut load = |load_id: i64, rows: &[(&str, &str, &str, &str, u32)]| {
            let rows: Vec<String> = rows
                .iter()
                .map(|&(id, channel, key, version, record_no)| {
                    staged_session(id, "u1", channel, 1, (key, version, record_no))
                })
                .collect();
            let stats = load_staged(&mut wh, load_id, &rows);
            (stats.duplicates_removed, stats.rows_merged)
        };
        assert_eq!(load(1, &[("e1", "cNew", key, second, 1)]), (0, 1));
        // The first upload, loaded after: its e1 is a duplicate that changes
        // nothing; e0, which the correction dropped, loads.
        assert_eq!(load(2, &[("e0", "cOld", key, first, 1), ("e1", "cOld", key, first, 2)]), (1, 1));
        // A version named without an upload time, loaded after, may be the
        // later (the ETag alone is also what a bucket whose versioning was
        // suspended names an upload): the one loaded later wins.
        assert_eq!(load(21, &[("e1", "cNoTime", key, "f9b2c", 1)]), (0, 1));
        // A later upload loaded later wins as ever, and so does one of the
        // same second, whatever its ETag: the times tell no order then.
        assert_eq!(load(3, &[("e1", "cNewer", key, third, 1)]), (0, 1));
        assert_eq!(load(31, &[("e1", "cSameSecond", key, "20240101T100002Z_0000@ab", 1)]), (0, 1));
        assert_eq!(load(32, &[("e1", "cNewer", key, "20240101T100002Z_ffff@ac", 1)]), (0, 1));
        // Versions not named by upload time (locally a content hash, on AWS
        // an ETag alone) are not ordered: the one loaded later wins.
        let other = "viewership/b.csv";
        assert_eq!(load(4, &[("e5", "cA", other, "ffff", 1)]), (0, 1));
        assert_eq!(load(5, &[("e5", "cB", other, "0000", 1)]), (0, 1));
        let core = core_sessions(&mut wh, "event_id || ':' || channel_id");
        assert_eq!(core, ["e0:cOld", "e1:cNewer", "e5:cB"]);

        // The dimensions the same way, one row a load.
        let counts = |stats: LoadStats| (stats.duplicates_removed, stats.rows_merged);
        let load_channel = |wh: &mut DuckDbWarehouse, load_id: i64, name: &str, key: &str, version: &str| {
            counts(load_dimension(wh, Source::Channels, load_id, &[staged_channel(name, (key, version, 1))]))
        };
        let load_user = |wh: &mut DuckDbWarehouse, load_id: i64, band: &str, key: &str, version: &str| {
            counts(load_dimension(wh, Source::Demographics, load_id, &[staged_user(band, (key, version, 1))]))
        };
        let (channels, users) = ("channels/list.csv", "demographics/users.csv");
        assert_eq!(load_channel(&mut wh, 6, "New", channels, second), (0, 1));
        assert_eq!(load_channel(&mut wh, 7, "Old", channels, first), (1, 0));
        assert_eq!(load_user(&mut wh, 6, "25-34", users, second), (0, 1));
        assert_eq!(load_user(&mut wh, 7, "18-24", users, first), (1, 0));
        let text = |wh: &mut DuckDbWarehouse, sql: &str| wh.query(sql).unwrap().text(0, "v").unwrap();
        assert_eq!(text(&mut wh, "SELECT channel_name AS v FROM core.channels").as_deref(), Some("New"));
        assert_eq!(text(&mut wh, "SELECT age_band AS v FROM core.users").as_deref(), Some("25-34"));
        // Unordered versions: the one loaded later wins.
        assert_eq!(load_channel(&mut wh, 8, "Hashed", "channels/other.csv", "0000"), (0, 1));
        assert_eq!(load_channel(&mut wh, 9, "Hashed later", "channels/other.csv", "ffff"), (0, 1));
        assert_eq!(load_channel(&mut wh, 10, "Hashed last", "channels/other.csv", "1111"), (0, 1));
        assert_eq!(text(&mut wh, "SELECT channel_name AS v FROM core.channels").as_deref(), Some("Hashed last"));
    }

    #[test]
    fn a_corrected_raw_file_in_a_folder_named_after_a_stream_is_another_delivery() {
        // A raw object's key can start like a stream batch's (an S3 export of
        // a Kinesis stream landed under kinesis/): its versions are still
        // separate deliveries, and the corrected one replaces core's rows
        // whatever their record numbers.
        let (_dir, mut wh) = one_thread_warehouse();
        let key = "kinesis/viewership/2024-01-01.csv";
        let mut load = |load_id: i64, channel: &str, version: &str, record_no: u32| {
            let stats =
                load_staged(&mut wh, load_id, &[staged_session("e1", "u1", channel, 1, (key, version, record_no))]);
            (stats.duplicates_removed, stats.rows_merged)
        };
        assert_eq!(load(1, "cA", "v1", 2), (0, 1));
        assert_eq!(load(2, "cB", "v2", 1), (0, 1), "v2 is a correction of the file, not v1's earlier record");
        assert_eq!(core_sessions(&mut wh, "event_id || ':' || channel_id"), ["e1:cB"]);
    }

    #[test]
    fn loads_and_analytics_rebuilds_follow_each_other_on_one_connection() {
        // As on a Redshift stand-in's one connection, or a local run that
        // rebuilds the days a failed rebuild left pending: the temporary
        // tables one leaves must not stop the next.
        let (_dir, mut wh) = one_thread_warehouse();
        let copy = |id: &str| {
            vec![format!(
                "INSERT INTO staging.viewing_sessions VALUES {}",
                staged_session(id, "u1", "c1", 1, ("k", id, 1))
            )]
        };
        let channels = "INSERT INTO staging.channels VALUES ('c1', 'One', NULL, NULL, NULL, 'c.json', 'v', 1)";
        for (load_id, id) in [(1, "e1"), (2, "e2")] {
            wh.execute_transaction(&tvetl_core::warehouse::rebuild_analytics_statements(19_723, 19_723)).unwrap();
            wh.execute_transaction(&load_statements(Source::Channels, vec![channels.to_owned()], load_id)).unwrap();
            wh.execute_transaction(&load_statements(Source::Viewership, copy(id), load_id)).unwrap();
            wh.execute_transaction(&tvetl_core::warehouse::pending_analytics_statements()).unwrap();
        }
        let core = wh.query("SELECT COUNT(*) AS n FROM core.viewing_sessions").unwrap();
        assert_eq!(core.int(0, "n").unwrap(), 2);
        let day = wh.query("SELECT SUM(reach) AS reach FROM analytics.daily_channel_viewing").unwrap();
        assert_eq!(day.int(0, "reach").unwrap(), 1, "u1 watched c1 on 2024-01-01");
    }

    #[test]
    fn the_tally_runs_once_replaced_days_is_known_and_before_core_changes() {
        let copies = |tallied_rows| LoadCopies {
            statements: vec!["INSERT INTO staging_x SELECT 1".into()],
            tallied_rows,
            ledger_changes: LedgerChanges { source: Source::Viewership, forget: vec![], record_empty: vec![] },
        };
        let tallied = copies(Some(3)).load_statements(Source::Viewership, 7);
        let at = |prefix: &str| {
            let one_line = |s: &String| s.split_whitespace().collect::<Vec<_>>().join(" ");
            tallied.iter().position(|s| one_line(s).starts_with(prefix)).unwrap_or_else(|| panic!("{prefix}"))
        };
        let tally = at("CREATE OR REPLACE TEMP TABLE loaded_tally");
        assert_eq!(tally, at(TALLY_AFTER) + 1);
        assert!(tally > at("DELETE FROM staging.viewing_sessions USING ranked_deliveries"));
        assert!(tally > at("INSERT INTO staging.viewing_sessions ( event_id"));
        assert!(tally < at("DELETE FROM core.viewing_sessions"));
        assert!(tally < at("MERGE INTO core.viewing_sessions"));
        assert_eq!(tallied[0], "INSERT INTO staging_x SELECT 1");
        let staged = copies(None).load_statements(Source::Viewership, 7);
        assert_eq!(staged.len() + 1, tallied.len());
        assert!(!staged.iter().any(|s| s.contains("loaded_tally")));
    }

    #[test]
    fn the_daily_average_does_not_depend_on_the_order_rows_were_loaded_in() {
        // 0.1 + 0.2 + 0.3 in floating point is 0.6000000000000001 added in
        // this order and 0.6 in the reverse one: a report that summed the
        // doubles would differ between two loads of the same data.
        let mut averages = Vec::new();
        for order in [["0.1", "0.2", "0.3"], ["0.3", "0.2", "0.1"]] {
            let (_dir, mut wh) = one_thread_warehouse();
            let rows: Vec<String> =
                order.iter().enumerate().map(|(i, w)| format!("(DATE '2024-01-01', 'u{i}', {w}, 1, 1)")).collect();
            wh.execute_transaction(&[format!("INSERT INTO analytics.daily_user_viewing VALUES {}", rows.join(", "))])
                .unwrap();
            let days = tvetl_core::warehouse::user_average(&mut wh, None, None).unwrap();
            assert_eq!(days.len(), 1);
            assert_eq!(days[0].active_users, 3);
            averages.push(days[0].avg_watch_seconds_per_user);
        }
        assert_eq!(averages[0].to_bits(), averages[1].to_bits(), "{averages:?}");
        assert_eq!(averages[0], 600_000.0 / 1e6 / 3.0);
    }

    mod day_split {
        //! The day split the reports rest on is the SQL's
        //! (`infra/sql/analytics_days.sql`), so it is held here against
        //! `tvetl_core::daysplit::split_by_day` on random sessions, through a
        //! real load (staging -> core) and the analytics rebuild that follows.

        use std::collections::{BTreeMap, BTreeSet};

        use proptest::prelude::*;
        use tvetl_core::Source;
        use tvetl_core::daysplit::split_by_day;
        use tvetl_core::timestamp::{MICROS_PER_DAY, format_day};
        use tvetl_core::warehouse::{load_statements, rebuild_pending_analytics};

        use super::super::*;

        /// (start, length) in microseconds: at most 24 hours, as validation
        /// allows, in 1900-2100. A third start anywhere; a third start
        /// within seconds of a midnight and end just before, on or just
        /// after it, where the split has its edges; a third start at one.
        fn session() -> impl Strategy<Value = (i64, i64)> {
            let day = || -25_567i64..47_482;
            prop_oneof![
                (day(), 0..MICROS_PER_DAY, 1..=MICROS_PER_DAY)
                    .prop_map(|(day, offset, length)| (day * MICROS_PER_DAY + offset, length)),
                (day(), 1..=5_000_000i64, -1_000_000..=5_000_000i64).prop_map(|(day, before, after)| {
                    ((day + 1) * MICROS_PER_DAY - before, (before + after).max(1))
                }),
                (day(), prop_oneof![1..=MICROS_PER_DAY, Just(MICROS_PER_DAY)])
                    .prop_map(|(day, length)| (day * MICROS_PER_DAY, length)),
            ]
        }

        fn timestamp_sql(us: i64) -> String {
            format!("make_timestamp({us}::BIGINT)")
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

            #[test]
            fn each_day_gets_the_parts_of_the_sessions_that_fall_in_it(
                sessions in prop::collection::vec((session(), 0u8..4, 0u8..3), 1..40)
            ) {
                let (_dir, mut wh) = super::one_thread_warehouse();
                let rows: Vec<String> = sessions
                    .iter()
                    .enumerate()
                    .map(|(i, ((start, length), user, channel))| {
                        format!(
                            "('e{i}', 'u{user}', NULL, 'c{channel}', NULL, {}, {}, NULL, NULL, 'k', 'v', {i})",
                            timestamp_sql(*start),
                            timestamp_sql(start + length)
                        )
                    })
                    .collect();
                let copy = format!("INSERT INTO staging.viewing_sessions VALUES {}", rows.join(", "));
                wh.execute_transaction(&load_statements(Source::Viewership, vec![copy], 1)).unwrap();
                rebuild_pending_analytics(&mut wh, &[]).unwrap();

                // The reference: each session's parts per day, summed per
                // (day, channel) and (day, user) in microseconds.
                let mut by_channel: BTreeMap<(String, String), (i64, BTreeSet<u8>)> = BTreeMap::new();
                let mut user_us: BTreeMap<(String, String), i64> = BTreeMap::new();
                for ((start, length), user, channel) in &sessions {
                    let parts = split_by_day(*start, start + length);
                    prop_assert_eq!(parts.iter().map(|p| p.1).sum::<i64>(), *length);
                    for (day, us) in parts {
                        let day = format_day(day);
                        let (watch_us, users) = by_channel.entry((day.clone(), format!("c{channel}"))).or_default();
                        *watch_us += us;
                        users.insert(*user);
                        *user_us.entry((day, format!("u{user}"))).or_default() += us;
                    }
                }

                let got = wh
                    .query("SELECT CAST(view_date AS VARCHAR) AS d, channel_id, watch_seconds, reach \
                            FROM analytics.daily_channel_viewing ORDER BY 1, 2")
                    .unwrap();
                let got: Vec<(String, String, f64, i64)> = (0..got.rows.len())
                    .map(|r| {
                        (
                            got.text(r, "d").unwrap().unwrap(),
                            got.text(r, "channel_id").unwrap().unwrap(),
                            got.float(r, "watch_seconds").unwrap(),
                            got.int(r, "reach").unwrap(),
                        )
                    })
                    .collect();
                let want: Vec<(String, String, f64, i64)> = by_channel
                    .into_iter()
                    .map(|((day, channel), (us, users))| (day, channel, us as f64 / 1e6, users.len() as i64))
                    .collect();
                prop_assert_eq!(got, want);

                let got = wh
                    .query("SELECT CAST(view_date AS VARCHAR) AS d, user_id, watch_seconds \
                            FROM analytics.daily_user_viewing ORDER BY 1, 2")
                    .unwrap();
                let got: Vec<(String, String, f64)> = (0..got.rows.len())
                    .map(|r| {
                        let text = |column| got.text(r, column).unwrap().unwrap();
                        (text("d"), text("user_id"), got.float(r, "watch_seconds").unwrap())
                    })
                    .collect();
                let want: Vec<(String, String, f64)> =
                    user_us.iter().map(|((d, u), us)| (d.clone(), u.clone(), *us as f64 / 1e6)).collect();
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn staging_tables_are_temporary_and_empty_after_a_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut wh = DuckDbWarehouse::open(&dir.path().join("w.duckdb"), &EngineLimits::default()).unwrap();
        let r = wh
            .query("SELECT COUNT(*) AS n FROM duckdb_tables() WHERE temporary AND table_name LIKE 'staging_%'")
            .unwrap();
        assert_eq!(r.int(0, "n").unwrap(), 3);
        wh.execute_transaction(&[
            "INSERT INTO staging.channels VALUES ('c', 'C', NULL, NULL, NULL, 'k', 'v', 1)".into()
        ])
        .unwrap();
        assert_eq!(wh.query("SELECT COUNT(*) AS n FROM staging.channels").unwrap().int(0, "n").unwrap(), 1);
        assert_eq!(wh.query("SELECT COUNT(*) AS n FROM w.staging.channels").unwrap().int(0, "n").unwrap(), 0);
    }
}
