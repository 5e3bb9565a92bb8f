//! `tvetl run`: every raw file through the ingest step, the lake into the
//! warehouse, and one summary whose counts add up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tvetl_core::Source;
use tvetl_core::catalog::{CatalogError, FileCatalog, register_lake_keys, register_outputs, register_quarantine};
use tvetl_core::decode::UnknownColumns;
use tvetl_core::error::IngestError;
use tvetl_core::ingest::{IngestOptions, RecordCounts, ingest_object, record_unreadable};
use tvetl_core::quarantine::QuarantineCounts;
use tvetl_core::store::{
    FileStamp, FolderListing, HELD_UPLOADS_DIR, HeldUploads, LocalObjectStore, ObjectMeta, ObjectStore, StoreError,
    with_suffix,
};
use tvetl_core::warehouse::{LoadStats, Warehouse, WarehouseError, rebuild_pending_analytics};

use crate::cpu::Stopwatch;
use crate::ingest_manifest::{
    IngestManifest, IngestedObject, UnreadableObject, ingester_fingerprint, manifest_path, written_size,
};
use crate::lake_lock::LakeLock;
use crate::paths::resolved;
use crate::warehouse::{DuckDbWarehouse, EngineLimits, RawVersion, StagedFile, out_of_memory};

/// Where the local lake keeps what is not a lake object.
pub fn catalog_path(lake: &Path) -> PathBuf {
    lake.join("_catalog").join("catalog.json")
}

/// The local warehouse database file.
pub fn warehouse_path(lake: &Path) -> PathBuf {
    lake.join("_warehouse").join("warehouse.duckdb")
}

/// The file a run locks while it loads the lake. It sits with the
/// warehouse, not among the lake's objects, which a rerun over the same
/// files leaves byte for byte as they were (the lock holds a process id).
pub fn run_lock_path(lake: &Path) -> PathBuf {
    lake.join("_warehouse").join("run.lock")
}

/// How one input file fared.
#[derive(Debug, Clone, Serialize)]
pub struct FileOutcome {
    pub key: String,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    pub rows_read: u64,
    pub rows_accepted: u64,
    /// Columns (or JSON keys) of this file that are not fields of its
    /// source, and so were ignored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_columns: Vec<String>,
    /// Whether the file had more unknown columns than those listed (at most
    /// `tvetl_core::decode::MAX_UNKNOWN_COLUMNS`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub more_unknown_columns: bool,
    /// Whether the file was not read again: an earlier run ingested it as
    /// it is now, and its counts are those that ingest recorded; or it
    /// found it unreadable, and its error is the one that run reported.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
    /// Whether the file's (or a folder's) name is not UTF-8, so it has no
    /// key and `key` only shows it (`\xNN` for each byte that is not), a
    /// spelling a file of another name may have too.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub name_not_utf8: bool,
}

impl FileOutcome {
    /// A file that failed with `error`, now or (`unchanged`) in an earlier run.
    fn failed(key: &str, source: Option<Source>, error: String, unchanged: bool) -> FileOutcome {
        FileOutcome {
            key: key.to_owned(),
            status: "failed",
            error: Some(error),
            source,
            rows_read: 0,
            rows_accepted: 0,
            unknown_columns: Vec::new(),
            more_unknown_columns: false,
            unchanged,
            name_not_utf8: false,
        }
    }
}

/// The contract's summary of a run (counts are of viewing-session records),
/// plus the dimensions and the warehouse loads.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub rows_read: u64,
    pub rows_accepted: u64,
    pub duplicates_removed: u64,
    pub quarantined: QuarantineCounts,
    pub files: Vec<FileOutcome>,
    pub dimensions: BTreeMap<Source, RecordCounts>,
    pub loads: BTreeMap<Source, LoadStats>,
    /// Days whose analytics were rebuilt after the loads: those the loads
    /// changed, and any an earlier run left pending.
    pub analytics_days_rebuilt: u64,
    /// The files' unknown columns, each once, at most
    /// `tvetl_core::decode::MAX_UNKNOWN_COLUMNS`.
    pub unknown_columns: Vec<String>,
    /// Whether the files had more unknown columns than those listed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub more_unknown_columns: bool,
    /// The warehouse steps (a source's load, or `analytics`) that ran out
    /// of the memory limit on more than one thread and were then done on
    /// one (see `warehouse_step`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retried_on_one_thread: Vec<String>,
    /// Wall-clock seconds per phase.
    pub seconds: PhaseSeconds,
}

/// Seconds of a run's phases: wall clock, and CPU over all threads.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseSeconds {
    pub ingest: f64,
    pub warehouse: f64,
    pub ingest_cpu: f64,
    pub warehouse_cpu: f64,
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub ingest: IngestOptions,
    pub engine: EngineLimits,
    /// Files ingested at once.
    pub jobs: usize,
    /// Show a progress bar (when stderr is a terminal).
    pub progress: bool,
    /// Read every file, even those an earlier run ingested as they are now.
    pub reingest: bool,
}

enum Ingested {
    /// Ingested now, or (`unchanged`) by an earlier run.
    Loaded { object: IngestedObject, unchanged: bool },
    /// Its bytes could not be decoded, now or (`unchanged`) in an earlier
    /// run, and it is recorded in the quarantine.
    Unreadable { object: UnreadableObject, unchanged: bool },
    /// Any other failure, which the next run tries again.
    Failed { source: Option<Source>, error: String },
}

/// Rebuilds the catalog at `path` from the lake's staging and quarantine
/// files when its content is not a catalog (cut short, overwritten): until
/// then every file's registration would fail, and the run load nothing. It
/// holds nothing those files do not show. A catalog that cannot be read at
/// all (its permissions) fails the run.
fn repair_catalog(catalog: &FileCatalog, path: &Path, lake: &LocalObjectStore) -> anyhow::Result<()> {
    let Err(CatalogError::Unavailable { message: damage, .. }) = catalog.tables() else { return Ok(()) };
    std::fs::read(path).with_context(|| format!("reading the catalog {}", path.display()))?;
    // Rebuilt beside it and put in its place whole: a rebuild cut short (a
    // full disk) leaves the damaged file, which the next run rebuilds.
    let rebuilding = with_suffix(path, ".rebuilding");
    let rebuilt = [lake.keys("staging/"), lake.keys("quarantine/")]
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::from)
        .and_then(|keys| {
            let _ = std::fs::remove_file(&rebuilding);
            register_lake_keys(&FileCatalog::new(&rebuilding), keys.iter().flatten().map(String::as_str))?;
            // No table at all is no file.
            let put = if rebuilding.exists() { std::fs::rename(&rebuilding, path) } else { std::fs::remove_file(path) };
            Ok(put?)
        });
    if rebuilt.is_err() {
        let _ = std::fs::remove_file(&rebuilding);
    }
    rebuilt.with_context(|| format!("rebuilding the damaged catalog {} ({damage})", path.display()))?;
    eprintln!(
        "the catalog {} was damaged ({damage}): rebuilt it from the lake's staging and quarantine files",
        path.display()
    );
    Ok(())
}

/// Runs the pipeline over `input` into `lake`.
pub fn run(input: &Path, lake: &Path, options: &RunOptions) -> anyhow::Result<RunSummary> {
    anyhow::ensure!(input.is_dir(), "input folder {} does not exist", input.display());
    check_input_layout(input)?;
    check_apart(input, lake)?;
    std::fs::create_dir_all(lake).with_context(|| format!("creating lake folder {}", lake.display()))?;
    // Absolute paths: the warehouse reads the staging files by path, in SQL,
    // which holds text: a path that is not UTF-8 would name other files.
    let lake = &lake.canonicalize().with_context(|| format!("resolving {}", lake.display()))?;
    anyhow::ensure!(
        lake.to_str().is_some(),
        "lake folder {}: its path is not valid UTF-8, which the warehouse needs to read its files",
        lake.display()
    );
    // DuckDB reads a `?` in a database's path as the start of options, and a
    // `\` as a folder separator: the warehouse would open another file than
    // the lake's, and fail once the ingest had written.
    if let Some(c) = lake.to_str().and_then(|p| p.chars().find(|c| matches!(c, '?' | '\\'))) {
        anyhow::bail!(
            "lake folder {}: its path holds {c:?}, which the warehouse (DuckDB) reads otherwise in a database path: \
             choose a folder without it",
            lake.display()
        );
    }
    let _lock = LakeLock::acquire(lake, &run_lock_path(lake))?;
    // Someone else's folder: a file named like this program's temporary
    // files is an input like any other.
    let raw = LocalObjectStore::new(input).listing_every_file();
    let lake_store = LocalObjectStore::new(lake);
    let catalog = FileCatalog::new(catalog_path(lake));
    // A run killed while writing leaves its uploads' temporary files, and
    // the uploads it held back until a raw file's read was done, which no
    // reader lists but which would stay in the lake for good. Holding the
    // lock, this run is the lake's only writer, so any there are abandoned.
    for folder in ["staging", "quarantine", HELD_UPLOADS_DIR] {
        let removed = lake_store
            .remove_abandoned_uploads(folder)
            .with_context(|| format!("removing what an interrupted run left under {}", lake.join(folder).display()))?;
        if !removed.is_empty() {
            eprintln!(
                "removed {} unfinished file(s) that an interrupted run left in {}, such as {}",
                removed.len(),
                lake.display(),
                removed[0]
            );
        }
    }

    repair_catalog(&catalog, &catalog_path(lake), &lake_store)?;
    let warehouse_missing = !warehouse_path(lake).exists();

    let ingester = ingester_fingerprint(&options.ingest);
    let manifest = match &ingester {
        Some(ingester) if !options.reingest => {
            IngestManifest::load(&manifest_path(lake), ingester).unwrap_or_else(|e| {
                eprintln!("reading every file again: the record of what earlier runs ingested is unreadable ({e})");
                IngestManifest::empty()
            })
        }
        _ => IngestManifest::empty(),
    };

    // Keys only: an object's version (its content hash) is read by the worker
    // that ingests it, so a file that cannot be read fails alone.
    let FolderListing { keys, not_utf8 } = raw_listing(&raw).with_context(|| format!("listing {}", input.display()))?;
    // Each file's size and time, for the progress bar and the manifest.
    let stamps: Vec<Option<FileStamp>> = keys.iter().map(|k| raw.stamp(k).ok()).collect();
    let sizes: Vec<u64> = stamps.iter().map(|s| s.map_or(0, |s| s.size)).collect();

    let ingest_watch = Stopwatch::start();
    let total_bytes: u64 = sizes.iter().sum();
    let bar = if options.progress { ProgressBar::new(total_bytes) } else { ProgressBar::hidden() };
    if options.progress {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} ingest [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
    }

    // Files are independent: a few workers take them in turn.
    let take = FileIngest {
        raw: &raw,
        raw_bytes: &raw,
        lake: &lake_store,
        lake_root: lake,
        catalog: &catalog,
        manifest: &manifest,
        options: &options.ingest,
    };
    let results: Vec<Mutex<Option<Ingested>>> = keys.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..options.jobs.max(1).min(keys.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(key) = keys.get(i) else { break };
                    bar.set_message(key.clone());
                    let outcome = take.file(key, stamps[i]);
                    bar.inc(sizes[i]);
                    *results[i].lock().expect("no worker panics holding it") = Some(outcome);
                }
            });
        }
    });
    bar.finish_and_clear();
    // Every held upload is published or removed by now; the folder goes if
    // empty (the workers made it, and may make it again, so not before).
    let _ = std::fs::remove_dir(lake.join(HELD_UPLOADS_DIR));

    let mut sessions = RecordCounts::default();
    let mut dimensions: BTreeMap<Source, RecordCounts> = BTreeMap::new();
    let mut files = Vec::with_capacity(keys.len());
    let (mut ingested, mut unreadable) = (BTreeMap::new(), BTreeMap::new());
    // The quarantine of each object version this run ingested (not recalled
    // from the manifest).
    let mut quarantined_now: Vec<FreshQuarantine> = Vec::new();
    for (key, result) in keys.iter().zip(results) {
        match result.into_inner().expect("no worker panics holding it").expect("every file was ingested") {
            Ingested::Loaded { object, unchanged } => {
                let report = &object.report;
                match report.source {
                    Source::Viewership => sessions.merge(&report.counts),
                    other => dimensions.entry(other).or_default().merge(&report.counts),
                }
                files.push(FileOutcome {
                    key: key.clone(),
                    status: "loaded",
                    error: None,
                    source: Some(report.source),
                    rows_read: report.counts.rows_read,
                    rows_accepted: report.counts.rows_accepted,
                    unknown_columns: report.unknown_columns.clone(),
                    more_unknown_columns: report.more_unknown_columns,
                    unchanged,
                    name_not_utf8: false,
                });
                if !unchanged {
                    quarantined_now.push(FreshQuarantine::of(key, &object.version, report.quarantine_key.clone()));
                }
                ingested.insert(key.clone(), object);
            }
            Ingested::Unreadable { object, unchanged } => {
                files.push(FileOutcome::failed(key, Source::from_key(key), object.error.clone(), unchanged));
                if !unchanged {
                    quarantined_now.push(FreshQuarantine::of(
                        key,
                        &object.version,
                        Some(object.quarantine_key.clone()),
                    ));
                }
                unreadable.insert(key.clone(), object);
            }
            Ingested::Failed { source, error } => files.push(FileOutcome::failed(key, source, error, false)),
        }
    }
    // Names that are no key fail beside the files, in key order.
    for name in &not_utf8 {
        let error = format!("{}: {}", name.shown, name.reason());
        let failed = FileOutcome::failed(&name.shown, Source::from_key(&name.shown), error, false);
        files.push(FileOutcome { name_not_utf8: true, ..failed });
    }
    files.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
    if let Err(e) = remove_earlier_quarantine_copies(&lake_store, &quarantined_now) {
        eprintln!("the quarantine may list some records twice: removing earlier copies failed ({e})");
    }
    // Before the load: what is staged stays staged whether or not the load
    // commits, and the load ledger says what of it is loaded.
    if let Some(ingester) = &ingester
        && let Err(e) = IngestManifest::save(&manifest_path(lake), ingester, &ingested, &unreadable)
    {
        eprintln!("the next run will read again the files this run read: recording what it ingested failed ({e})");
    }
    // The run's list is the files' lists, each name once, in file order.
    let mut unknown = UnknownColumns::default();
    for f in &files {
        unknown.merge(&f.unknown_columns, f.more_unknown_columns);
    }
    let (unknown_columns, more_unknown_columns) = unknown.into_parts();

    let (ingest_seconds, ingest_cpu) = (ingest_watch.wall(), ingest_watch.cpu());
    let warehouse_watch = Stopwatch::start();
    // The load has no measure of its own progress; a spinner with the step
    // and the time it has taken shows it is alive (a 10M-session load takes
    // about a minute).
    let spinner = warehouse_spinner(options.progress);
    spinner.set_message("opening");
    if warehouse_missing {
        let said = match staged_elsewhere(&lake_store, &keys, &ingested, &manifest) {
            Ok(orphans) if orphans.is_empty() => None,
            Ok(orphans) => Some(format!(
                "{} staging file(s) of the lake, such as {}, come from files or versions no longer there (or \
                 from files that failed in this run). What they alone delivered is not in the warehouse; a run \
                 over those files puts it back",
                orphans.len(),
                orphans[0]
            )),
            Err(e) => Some(format!("which of the lake's staging files it leaves out is not known ({e:#})")),
        };
        if let Some(said) = said {
            spinner.suspend(|| {
                let path = warehouse_path(lake);
                eprintln!(
                    "no warehouse at {}: this run builds it from the landing folder's files; {said}",
                    path.display()
                )
            });
        }
    }
    let mut warehouse = DuckDbWarehouse::open(&warehouse_path(lake), &options.engine)?;
    let mut loads = BTreeMap::new();
    let mut retried_on_one_thread = Vec::new();
    for source in Source::ALL {
        let staged: Vec<StagedFile> = ingested
            .values()
            .filter(|o| o.report.source == source)
            .flat_map(|object| {
                object.report.staged.iter().map(|file| StagedFile {
                    path: lake.join(&file.key),
                    ledger_entry: (
                        object.report.key.clone(),
                        object.version.clone(),
                        file.partition.clone().unwrap_or_default(),
                    ),
                    rows: file.rows,
                })
            })
            .collect();
        // The files that staged nothing (their rows all rejected, or none,
        // or the file unreadable): the ledger keeps their versions too.
        let empty: Vec<RawVersion> = ingested
            .iter()
            .filter(|(_, o)| o.report.source == source && o.report.staged.is_empty())
            .map(|(key, o)| (key.clone(), o.version.clone()))
            .chain(
                unreadable
                    .iter()
                    .filter(|(key, _)| Source::from_key(key) == Some(source))
                    .map(|(key, o)| (key.clone(), o.version.clone())),
            )
            .collect();
        if staged.is_empty() && empty.is_empty() {
            continue;
        }
        // Of the sessions' staging files, those loaded before are tallied
        // or staged thin (see load_copies): over a folder that keeps every
        // day's files, most of a run's.
        let copies = warehouse.load_copies(source, &staged, &empty)?;
        if staged.is_empty() {
            if !copies.ledger_changes.is_empty() {
                let statements = copies.ledger_changes.statements(warehouse.next_load_id()?);
                warehouse
                    .execute_transaction(&statements)
                    .with_context(|| format!("recording {source} files that staged nothing"))?;
            }
            continue;
        }
        let count = staged.len();
        let files = if count == 1 { "1 staged file".to_owned() } else { format!("{count} staged files") };
        spinner.set_message(format!("loading {source} ({files})"));
        let tallied_rows = copies.tallied_rows;
        let statements = copies.load_statements(source, warehouse.next_load_id()?);
        let result = warehouse_step(&mut warehouse, &options.engine, source.name(), &mut retried_on_one_thread, |w| {
            w.execute_transaction(&statements)
        })
        .with_context(|| format!("loading {source} into the warehouse"))?;
        let mut stats = LoadStats::from_result(&result)?;
        if let Some(rows) = tallied_rows {
            warehouse.complete_counts(&mut stats, rows)?;
        }
        loads.insert(source, stats);
    }
    // Once the loads have committed, in a transaction of its own (see
    // infra/sql/analytics_pending.sql).
    spinner.set_message("rebuilding the analytics of the days the loads changed");
    let analytics_days_rebuilt =
        warehouse_step(&mut warehouse, &options.engine, "analytics", &mut retried_on_one_thread, |w| {
            rebuild_pending_analytics(w, &[])
        })
        .context("rebuilding the analytics of the days the loads changed")?;

    spinner.set_message("writing the database file");
    let closing = Stopwatch::start();
    if let Err(e) = warehouse.close() {
        spinner.suspend(|| {
            eprintln!(
                "writing the warehouse's database file failed ({e}): what this run loaded is committed in the \
                 write-ahead log beside it ({}.wal), which reports read meanwhile and the next run writes out",
                warehouse_path(lake).display()
            )
        });
    }
    crate::warehouse::report_timing(&closing, "(closing the warehouse)");
    spinner.finish_and_clear();
    let (warehouse_seconds, warehouse_cpu) = (warehouse_watch.wall(), warehouse_watch.cpu());

    Ok(RunSummary {
        rows_read: sessions.rows_read,
        rows_accepted: sessions.rows_accepted,
        duplicates_removed: loads.get(&Source::Viewership).map_or(0, |l| l.duplicates_removed),
        quarantined: sessions.quarantined,
        files,
        dimensions,
        loads,
        analytics_days_rebuilt,
        unknown_columns,
        more_unknown_columns,
        retried_on_one_thread,
        seconds: PhaseSeconds { ingest: ingest_seconds, warehouse: warehouse_seconds, ingest_cpu, warehouse_cpu },
    })
}

/// Every object under the raw prefixes (`viewership/`, `channels/`,
/// `demographics/`) of a folder used as the raw bucket, in byte-wise order,
/// and the files and folders there whose names are not UTF-8.
pub(crate) fn raw_listing(raw: &LocalObjectStore) -> Result<FolderListing, StoreError> {
    let mut listing = FolderListing::default();
    for source in Source::ALL {
        let FolderListing { keys, not_utf8 } = raw.listing(&format!("{}/", source.name()))?;
        listing.keys.extend(keys);
        listing.not_utf8.extend(not_utf8);
    }
    listing.keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(listing)
}

/// An input folder with none of the contract's raw prefixes can never yield
/// a row, so it is almost always a wrong `--input` (the demo's root instead
/// of its `raw/`). Saying so beats a run that reports nothing and exits 0. A
/// prefix folder that is present but empty stays a valid, quiet run: a
/// scheduled run with nothing new to load.
fn check_input_layout(input: &Path) -> anyhow::Result<()> {
    let has_prefix = |dir: &Path| Source::ALL.iter().any(|s| dir.join(s.name()).is_dir());
    if has_prefix(input) {
        return Ok(());
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(input)
        .with_context(|| format!("listing {}", input.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_dir() && has_prefix(path))
        .collect();
    candidates.sort();
    let prefixes = Source::ALL.map(|s| format!("{}/", s.name())).join(", ");
    let hint = match candidates.as_slice() {
        [] => String::new(),
        found => format!(
            "; did you mean {}?",
            found.iter().map(|p| format!("--input {}", p.display())).collect::<Vec<_>>().join(" or ")
        ),
    };
    anyhow::bail!("input folder {} has none of {prefixes}, so there is nothing to load{hint}", input.display())
}

/// Refuses a lake inside one of the input's prefix folders, or an input
/// inside the lake: each run would read what the runs before it wrote (its
/// catalog, Parquet and quarantine) as raw files.
fn check_apart(input: &Path, lake: &Path) -> anyhow::Result<()> {
    let (input_at, lake_at) = (resolved(input)?, resolved(lake)?);
    for source in Source::ALL {
        anyhow::ensure!(
            !lake_at.starts_with(input_at.join(source.name())),
            "the lake {} is inside the input's {}/ folder, so each run would read what the last one wrote as \
             input: put the lake elsewhere",
            lake.display(),
            source.name()
        );
    }
    anyhow::ensure!(
        !input_at.starts_with(&lake_at),
        "the input {} is inside the lake {}, so the run would read the lake's own files as input",
        input.display(),
        lake.display()
    );
    Ok(())
}

/// The warehouse step's spinner on stderr, or a hidden one.
fn warehouse_spinner(visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let spinner = ProgressBar::new_spinner();
    spinner.set_draw_target(ProgressDrawTarget::stderr());
    spinner.set_style(ProgressStyle::with_template("{spinner} warehouse: {msg} ({elapsed})").expect("valid template"));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    spinner
}

/// Runs the warehouse step `step`, named `name`. If DuckDB ran out of its
/// memory limit on more than one thread, the step runs once more on one
/// (and `name` goes in `retried`), then the engine goes back to
/// `limits.threads`. That is the first of DuckDB's own remedies for the
/// error, and nothing of a failed step is committed, so the step starts
/// again from what it started from. Near the limit, what decides is each
/// thread's buffers beside a hash table built in memory: re-delivering
/// 0.96M of 4.8M loaded sessions under new object keys failed in its
/// `MERGE` at 320 MB on two threads, and loaded on one. An error that is
/// still out of memory gets what to do about it: DuckDB's own advice names
/// its settings, not tvetl's flags.
fn warehouse_step<T>(
    warehouse: &mut DuckDbWarehouse,
    limits: &EngineLimits,
    name: &str,
    retried: &mut Vec<String>,
    mut step: impl FnMut(&mut DuckDbWarehouse) -> Result<T, WarehouseError>,
) -> anyhow::Result<T> {
    let mut result = step(warehouse);
    let on_one_thread = limits.threads > 1 && matches!(&result, Err(e) if out_of_memory(e));
    if on_one_thread {
        warehouse.set_threads(1)?;
        result = step(warehouse);
        warehouse.set_threads(limits.threads)?;
        if result.is_ok() {
            retried.push(name.to_owned());
        }
    }
    result.map_err(|e| {
        if reads_a_staging_file(&e) && !out_of_memory(&e) {
            return anyhow::Error::new(e).context(
                "a staging file of the lake could not be read (damaged, or removed during the run): \
                 `tvetl run --reingest` writes every staging file again from the landing folder's files",
            );
        }
        if !out_of_memory(&e) {
            return e.into();
        }
        let threads =
            if on_one_thread { format!(" on {} threads and again on one", limits.threads) } else { String::new() };
        anyhow::Error::new(e).context(format!(
            "the warehouse ran out of its memory limit ({}){threads}; nothing of this step was committed and the \
             lake's files are written, so run again with a larger --memory-limit (the process takes some 120 to \
             200 MB more than it), or over fewer input files at a time (a file that delivers one event id millions \
             of times needs the larger limit)",
            limits.memory_limit
        ))
    })
}

/// The lake's staging files that none of the run's raw files (`keys`) wrote:
/// as ingested now or skipped as unchanged (`ingested`), or, for one that
/// failed in this run, as an earlier run recorded it (`manifest`). They are
/// an earlier run's, of files since gone from the landing folder or changed.
fn staged_elsewhere(
    lake: &LocalObjectStore,
    keys: &[String],
    ingested: &BTreeMap<String, IngestedObject>,
    manifest: &IngestManifest,
) -> anyhow::Result<Vec<String>> {
    let written: BTreeSet<&str> = keys
        .iter()
        .filter_map(|key| ingested.get(key).or_else(|| manifest.earlier(key)))
        .flat_map(|object| object.report.staged.iter().map(|f| f.key.as_str()))
        .collect();
    let mut staged = lake.keys("staging/").context("listing the lake's staging files")?;
    staged.retain(|key| key.ends_with(".parquet") && !written.contains(key.as_str()));
    Ok(staged)
}

/// Whether the engine failed on a lake staging file: its error (not the
/// statement, which lists every file it copies) names the Parquet file it
/// could not read (cut short, not Parquet, gone).
fn reads_a_staging_file(e: &WarehouseError) -> bool {
    matches!(e, WarehouseError::Statement { message, .. } if message.contains("/staging/") && message.contains(".parquet"))
}

/// The quarantine of one object version a run ingested: the file it wrote,
/// if any, and the names that any of its files has, under any ingest date.
struct FreshQuarantine {
    source_prefix: String,
    written: Option<String>,
    names: [String; 2],
}

impl FreshQuarantine {
    fn of(key: &str, version: &str, written: Option<String>) -> Self {
        let source = Source::from_key(key).unwrap_or(Source::Viewership);
        FreshQuarantine {
            source_prefix: tvetl_core::staging::quarantine_root(source),
            written,
            names: tvetl_core::ingest::quarantine_file_names(key, version),
        }
    }
}

/// Removes the quarantine files that an earlier ingest of the same object
/// version left, other than what this run's ingest of it wrote. A file's
/// name derives from its object's key and version, and its partition from
/// the raw file's modification time. So the same bytes read again after
/// that time moved (`--reingest`, or a new build of tvetl, with the file
/// touched since) wrote the same records under a new date, and the
/// quarantine would count them twice. And a version a new build reads
/// otherwise (one an older build could not read, which now loads) would
/// keep its old `unreadable` record beside its new records, or none.
/// Returns how many it removed.
fn remove_earlier_quarantine_copies(lake: &LocalObjectStore, fresh: &[FreshQuarantine]) -> Result<usize, StoreError> {
    let mut removed = 0;
    // Each source's quarantine, listed once whatever the number of files and
    // kept by file name, so that a run writing many files does not compare
    // each with every file there.
    let mut listed: BTreeMap<&str, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for version in fresh {
        let source_prefix = version.source_prefix.as_str();
        if !listed.contains_key(source_prefix) {
            let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for copy in lake.keys(&format!("{source_prefix}/"))? {
                if let Some((_, copy_name)) = copy.rsplit_once('/') {
                    by_name.entry(copy_name.to_owned()).or_default().push(copy);
                }
            }
            listed.insert(source_prefix, by_name);
        }
        for name in &version.names {
            for copy in listed[source_prefix].get(name).into_iter().flatten() {
                if Some(copy) != version.written.as_ref() {
                    lake.delete(copy)?;
                    removed += 1;
                }
            }
        }
    }
    Ok(removed)
}

/// What a run's ingest workers share to take a raw file.
struct FileIngest<'a> {
    raw: &'a LocalObjectStore,
    /// Where the raw files' bytes are read: `raw` itself, but for a test's
    /// store that changes a file while it is read.
    raw_bytes: &'a dyn ObjectStore,
    lake: &'a LocalObjectStore,
    /// The lake's folder, which the manifest checks for what an earlier
    /// ingest wrote.
    lake_root: &'a Path,
    catalog: &'a FileCatalog,
    manifest: &'a IngestManifest,
    options: &'a IngestOptions,
}

impl FileIngest<'_> {
    /// The raw file `key`, whose stamp was `stamp` when listed (none if it
    /// could not be read): as an earlier run ingested it, or found it
    /// unreadable, if the manifest vouches that it is unchanged (its
    /// outputs are catalogued again); else ingested now.
    fn file(&self, key: &str, stamp: Option<FileStamp>) -> Ingested {
        let failed =
            |e: &dyn std::fmt::Display| Ingested::Failed { source: Source::from_key(key), error: e.to_string() };
        let (manifest, root) = (self.manifest, self.lake_root);
        if let Some(earlier) = stamp.and_then(|stamp| manifest.unchanged(self.raw, key, stamp, root)) {
            return match register_outputs(self.catalog, &earlier.report) {
                Ok(()) => Ingested::Loaded { object: earlier, unchanged: true },
                Err(e) => failed(&e),
            };
        }
        if let Some(earlier) = stamp.and_then(|stamp| manifest.unchanged_unreadable(self.raw, key, stamp, root)) {
            return match register_quarantine(self.catalog, &earlier.quarantine_key) {
                Ok(()) => Ingested::Unreadable { object: earlier, unchanged: true },
                Err(e) => failed(&e),
            };
        }
        match self.raw.head(key) {
            Ok(object) => self.ingest(&object, stamp),
            Err(e) => failed(&e),
        }
    }

    /// Ingests `object`, whose file's stamp was `listed` when listed (if it
    /// could be taken): the stamp the manifest keeps, and what the file must
    /// still show before and after its read.
    ///
    /// A file written to while it was read (an upload landing over it, or
    /// one still arriving) was read in part, or mixed, under a version named
    /// by other bytes. So is one that could not be looked at when listed, or
    /// is gone once read (an aborted upload, removed): nothing says its bytes
    /// held still. Such a read writes nothing to the lake, and the next run
    /// reads the file as it is then: what the ingest wrote is held back
    /// ([`HeldUploads`]) until the file is looked at once more, so that a
    /// torn read of a version an earlier run ingested (`--reingest`, or a
    /// new build) leaves that run's files of it as they were. Looked at
    /// before the read too, so that a change under way since the listing
    /// costs no read.
    fn ingest(&self, object: &ObjectMeta, listed: Option<FileStamp>) -> Ingested {
        let source = Source::from_key(&object.key);
        let held_still = || listed.is_some() && self.raw.stamp(&object.key).ok() == listed;
        let Some(stamp) = listed.filter(|_| held_still()) else {
            return self.torn_read(object);
        };
        let held = HeldUploads::new(self.lake);
        let result = ingest_object(self.raw_bytes, object, &held, self.options);
        if !held_still() {
            return self.torn_read(object);
        }
        let result = result.and_then(|report| held.publish().map(|()| report).map_err(IngestError::from));
        match result {
            Ok(report) => match register_outputs(self.catalog, &report) {
                Ok(()) => Ingested::Loaded {
                    object: IngestedObject::written(stamp, object.version.clone(), report, self.lake_root),
                    unchanged: false,
                },
                Err(e) => Ingested::Failed { source, error: e.to_string() },
            },
            Err(e) if e.is_bad_object() => {
                match record_unreadable_object(object, stamp, &e, self.lake, self.lake_root, self.catalog) {
                    Ok(object) => Ingested::Unreadable { object, unchanged: false },
                    Err(error) => Ingested::Failed { source, error },
                }
            }
            Err(e) => Ingested::Failed { source, error: e.to_string() },
        }
    }

    /// `object`, whose file changed while it was read, as a failure of this
    /// run.
    fn torn_read(&self, object: &ObjectMeta) -> Ingested {
        let error = format!(
            "{}: changed while this run read it (still being written, or replaced): nothing of it is loaded; \
             the next run reads it again",
            object.key
        );
        Ingested::Failed { source: Source::from_key(&object.key), error }
    }
}

/// Records `object`, whose bytes could not be decoded (`e`), in the lake's
/// quarantine and the catalog. What failed of that is added to the error,
/// and the object is then not recorded as unreadable, so that the next run
/// tries it again.
fn record_unreadable_object(
    object: &ObjectMeta,
    stamp: FileStamp,
    e: &IngestError,
    lake: &LocalObjectStore,
    lake_root: &Path,
    catalog: &FileCatalog,
) -> Result<UnreadableObject, String> {
    let error = e.to_string();
    let key = record_unreadable(lake, object, e).map_err(|q| format!("{error} (and recording it failed: {q})"))?;
    let error = format!("{error} (recorded in {key})");
    register_quarantine(catalog, &key).map_err(|c| format!("{error} (and cataloguing it failed: {c})"))?;
    let quarantine_bytes = written_size(lake_root, &key);
    Ok(UnreadableObject { stamp, version: object.version.clone(), error, quarantine_key: key, quarantine_bytes })
}

/// The summary as a table.
pub fn render_table(summary: &RunSummary) -> Result<String, std::fmt::Error> {
    use std::fmt::Write;
    let mut out = String::new();
    let mut rows = vec![
        ("rows read".to_owned(), summary.rows_read),
        ("rows accepted".to_owned(), summary.rows_accepted),
        ("duplicates removed".to_owned(), summary.duplicates_removed),
    ];
    for reason in tvetl_core::QuarantineReason::ALL {
        rows.push((format!("quarantined {}", reason.code()), summary.quarantined.get(reason)));
    }
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    writeln!(out, "viewing sessions")?;
    for (label, count) in rows {
        writeln!(out, "  {label:<width$}{count:>12}")?;
    }
    for (source, counts) in &summary.dimensions {
        writeln!(
            out,
            "{source}: {} read, {} accepted, {} quarantined",
            counts.rows_read,
            counts.rows_accepted,
            counts.quarantined.total()
        )?;
    }
    if !summary.unknown_columns.is_empty() {
        let in_files = summary.files.iter().filter(|f| !f.unknown_columns.is_empty()).count();
        let files = if in_files == 1 { "1 file".to_owned() } else { format!("{in_files} files") };
        // The JSON summary lists them all (up to MAX_UNKNOWN_COLUMNS); the
        // table keeps to one line.
        const SHOWN: usize = 10;
        let names = &summary.unknown_columns;
        let shown = crate::report::printable(&names[..names.len().min(SHOWN)].join(", ")).into_owned();
        let more = match (names.len().saturating_sub(SHOWN), summary.more_unknown_columns) {
            (0, false) => String::new(),
            (n, false) => format!(" and {n} more"),
            (n, true) => format!(" and over {n} more"),
        };
        writeln!(out, "ignored unknown columns: {shown}{more} (in {files})")?;
    }
    let days = summary.analytics_days_rebuilt;
    writeln!(out, "analytics: {days} {} rebuilt", if days == 1 { "day" } else { "days" })?;
    if !summary.retried_on_one_thread.is_empty() {
        writeln!(
            out,
            "warehouse: out of its memory limit, so done again on one thread (slower; a larger --memory-limit avoids it): {}",
            summary.retried_on_one_thread.join(", ")
        )?;
    }
    let (failed, loaded): (Vec<_>, Vec<_>) = summary.files.iter().partition(|f| f.status == "failed");
    let unchanged = |files: &[&FileOutcome]| match files.iter().filter(|f| f.unchanged).count() {
        0 => String::new(),
        n => format!(" ({n} of them unchanged since an earlier run, not read again)"),
    };
    writeln!(
        out,
        "files: {} loaded{}, {} failed{}",
        loaded.len(),
        unchanged(&loaded),
        failed.len(),
        unchanged(&failed)
    )?;
    for f in failed {
        // The error names the file already when it comes from the decoder.
        let line = match f.error.as_deref() {
            Some(error) if error.starts_with(&f.key) => error.to_owned(),
            error => format!("{}: {}", f.key, error.unwrap_or("")),
        };
        writeln!(out, "  FAILED {}", crate::report::printable(&line))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rebuild that cannot be written whole (a full disk: `/dev/full`
    /// where it writes) leaves the damaged catalog, which the next run then
    /// rebuilds, and nothing beside it.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_catalog_rebuild_cut_short_leaves_the_damaged_catalog_for_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let lake = LocalObjectStore::new(dir.path());
        lake.put("staging/viewership/event_date=2024-01-01/part-1.parquet", b"x").unwrap();
        let path = catalog_path(dir.path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "garbage").unwrap();
        let full = dir.path().join("_catalog/catalog.json.rebuilding.tmp");
        std::os::unix::fs::symlink("/dev/full", &full).unwrap();
        let catalog = FileCatalog::new(&path);
        let err = repair_catalog(&catalog, &path, &lake).unwrap_err();
        assert!(format!("{err:#}").contains("rebuilding the damaged catalog"), "{err:#}");
        assert_eq!(std::fs::read(&path).unwrap(), b"garbage");
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["catalog.json"]);

        repair_catalog(&catalog, &path, &lake).unwrap();
        assert_eq!(catalog.tables().unwrap()["viewership"].1, ["2024-01-01"]);
    }

    /// Of the lake's staging files, those of a file read now, and of one
    /// that failed now but an earlier run ingested (by the manifest), are
    /// the landing folder's; those of a file gone from it are not.
    #[test]
    fn the_staging_files_no_landing_file_wrote_are_those_of_files_gone() {
        let dir = tempfile::tempdir().unwrap();
        let lake = LocalObjectStore::new(dir.path().join("lake"));
        let object = |key: &str, staged: &str| {
            lake.put(staged, b"parquet").unwrap();
            let written = tvetl_core::staging::WrittenFile { key: staged.to_owned(), partition: None, rows: 1 };
            let report = tvetl_core::ingest::IngestReport {
                key: key.to_owned(),
                source: Source::Channels,
                counts: RecordCounts::default(),
                staged: vec![written],
                quarantine_key: None,
                unknown_columns: Vec::new(),
                more_unknown_columns: false,
            };
            let stamp = FileStamp::of(&std::fs::metadata(dir.path()).unwrap());
            (key.to_owned(), IngestedObject::written(stamp, "v1".into(), report, &dir.path().join("lake")))
        };
        let read_now = object("channels/a.csv", "staging/channels/part-a.parquet");
        let failed_now = object("channels/b.csv", "staging/channels/part-b.parquet");
        let gone = object("channels/c.csv", "staging/channels/part-c.parquet");
        lake.put("staging/channels/notes.txt", b"not a table's file").unwrap();
        let manifest_file = dir.path().join("ingested.json");
        let earlier = BTreeMap::from([read_now.clone(), failed_now.clone(), gone]);
        IngestManifest::save(&manifest_file, "build 1", &earlier, &BTreeMap::new()).unwrap();
        let manifest = IngestManifest::load(&manifest_file, "build 1").unwrap();

        let keys = ["channels/a.csv".to_owned(), "channels/b.csv".to_owned()];
        let ingested = BTreeMap::from([read_now]);
        let orphans = staged_elsewhere(&lake, &keys, &ingested, &manifest).unwrap();
        assert_eq!(orphans, ["staging/channels/part-c.parquet"]);
        // With no record of the failed file (another build's manifest), its
        // files count among the rest, as the warning says they may.
        let orphans = staged_elsewhere(&lake, &keys, &ingested, &IngestManifest::empty()).unwrap();
        assert_eq!(orphans, ["staging/channels/part-b.parquet", "staging/channels/part-c.parquet"]);
    }

    /// A raw folder's and a lake's stores, for [`FileIngest`]s over them.
    struct IngestStores {
        raw: LocalObjectStore,
        lake: LocalObjectStore,
        lake_root: PathBuf,
        catalog: FileCatalog,
        manifest: IngestManifest,
        options: tvetl_core::ingest::IngestOptions,
    }

    impl IngestStores {
        fn new(input: &Path, lake_root: &Path) -> Self {
            IngestStores {
                raw: LocalObjectStore::new(input).listing_every_file(),
                lake: LocalObjectStore::new(lake_root),
                lake_root: lake_root.to_owned(),
                catalog: FileCatalog::new(lake_root.join("catalog.json")),
                manifest: IngestManifest::empty(),
                options: tvetl_core::ingest::IngestOptions::default(),
            }
        }

        /// Every object of the lake, with its bytes, in key order.
        fn lake_files(&self) -> Vec<(String, Vec<u8>)> {
            let with_bytes = |key: String| {
                let bytes = std::fs::read(self.lake_root.join(&key)).unwrap();
                (key, bytes)
            };
            self.lake.keys("").unwrap().into_iter().map(with_bytes).collect()
        }

        fn file_ingest(&self) -> FileIngest<'_> {
            FileIngest {
                raw: &self.raw,
                raw_bytes: &self.raw,
                lake: &self.lake,
                lake_root: &self.lake_root,
                catalog: &self.catalog,
                manifest: &self.manifest,
                options: &self.options,
            }
        }
    }

    /// Checks that `ingested` failed as a torn read.
    fn assert_torn(ingested: Ingested) {
        match ingested {
            Ingested::Failed { error, .. } => assert!(error.contains("changed while this run read it"), "{error}"),
            _ => panic!("a file that did not hold still must not load"),
        }
    }

    /// Gives `file` a modification time long past, so that a rewrite shows
    /// in its stamp whatever the clock's resolution.
    fn set_old_time(file: &Path) {
        let when = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        std::fs::File::options().write(true).open(file).unwrap().set_modified(when).unwrap();
    }

    /// A raw file written to between its listing and the end of its read
    /// (an upload landing over it, here with the same bytes cut short as a
    /// torn read sees them): nothing of it is loaded, nothing is left in the
    /// lake, and a later read of the file as it then is loads it whole.
    #[test]
    fn a_file_written_to_while_it_is_read_gives_nothing_now_and_loads_whole_next_time() {
        let dir = tempfile::tempdir().unwrap();
        let (input, lake_root) = (dir.path().join("in"), dir.path().join("lake"));
        let key = "viewership/a.csv";
        let rows: Vec<String> = (1..=3).map(|i| format!("e{i},u{i},c1,2024-01-01T10:00:00Z,60")).collect();
        let whole = format!("event_id,user_id,channel_id,start_time,duration_seconds\n{}\n", rows.join("\n"));
        std::fs::create_dir_all(input.join("viewership")).unwrap();
        std::fs::write(input.join(key), &whole).unwrap();
        let stores = IngestStores::new(&input, &lake_root);
        let (take, raw, lake) = (stores.file_ingest(), &stores.raw, &stores.lake);
        let listed = raw.stamp(key).unwrap();

        // Cut within the last row: read now, two rows and a malformed one.
        std::fs::write(input.join(key), &whole[..whole.len() - 30]).unwrap();
        set_old_time(&input.join(key));
        match take.file(key, Some(listed)) {
            Ingested::Failed { error, .. } => assert!(error.contains("changed while this run read it"), "{error}"),
            _ => panic!("a torn read must not load"),
        }
        let left = |folder: &str| lake.keys(folder).unwrap();
        assert_eq!((left("staging/"), left("quarantine/")), (vec![], vec![]), "what the torn read wrote is removed");

        std::fs::write(input.join(key), &whole).unwrap();
        match take.file(key, Some(raw.stamp(key).unwrap())) {
            Ingested::Loaded { object, unchanged: false } => assert_eq!(object.report.counts.rows_accepted, 3),
            _ => panic!("the whole file loads"),
        }
    }

    /// A raw store whose readers append a row to a file once its read has
    /// reached the end: an upload landing on the file during the read, after
    /// the decoder has seen every byte of the version headed.
    struct ChangedWhileRead<'a>(&'a LocalObjectStore, PathBuf);

    struct AppendAtEnd<'a> {
        bytes: Box<dyn std::io::Read + Send + 'a>,
        file: PathBuf,
        appended: bool,
    }

    impl std::io::Read for AppendAtEnd<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.bytes.read(buf)?;
            if n == 0 && !std::mem::replace(&mut self.appended, true) {
                use std::io::Write;
                let mut file = std::fs::File::options().append(true).open(&self.file)?;
                file.write_all(b"e9,u9,c1,2024-01-03T10:00:00Z,60\n")?;
            }
            Ok(n)
        }
    }

    impl ObjectStore for ChangedWhileRead<'_> {
        fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
            self.0.list(prefix)
        }
        fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
            self.0.head(key)
        }
        fn open(&self, key: &str) -> Result<Box<dyn std::io::Read + Send + '_>, StoreError> {
            Ok(Box::new(AppendAtEnd { bytes: self.0.open(key)?, file: self.1.join(key), appended: false }))
        }
        fn create(&self, key: &str) -> Result<Box<dyn tvetl_core::store::ObjectUpload + '_>, StoreError> {
            self.0.create(key)
        }
        fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.0.delete(key)
        }
    }

    /// A file that changes during its read, after the decoder has read all
    /// of the version headed, is a torn read too. What the read wrote is
    /// never seen: into a fresh lake, no file and no partition folder; over
    /// the files an earlier run wrote for the same version (`--reingest`),
    /// those files as they were, none removed.
    #[test]
    fn a_read_torn_at_its_end_leaves_the_lake_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let (input, lake_root) = (dir.path().join("in"), dir.path().join("lake"));
        let key = "viewership/a.csv";
        std::fs::create_dir_all(input.join("viewership")).unwrap();
        std::fs::write(
            input.join(key),
            "event_id,user_id,channel_id,start_time,duration_seconds\n\
             e1,u1,c1,2024-01-01T10:00:00Z,60\ne2,,c1,2024-01-01T10:00:00Z,60\ne3,u3,c1,2024-01-02T10:00:00Z,60\n",
        )
        .unwrap();
        let stores = IngestStores::new(&input, &lake_root);
        let raw = &stores.raw;
        let changing = ChangedWhileRead(raw, input.clone());
        let take = FileIngest { raw_bytes: &changing, ..stores.file_ingest() };
        let files = || stores.lake_files();
        let folders = || ["staging", "quarantine", HELD_UPLOADS_DIR].map(|f| lake_root.join(f).exists());
        let original = std::fs::read(input.join(key)).unwrap();
        let put_back = || std::fs::write(input.join(key), &original).unwrap();

        put_back();
        assert_torn(take.file(key, Some(raw.stamp(key).unwrap())));
        assert_eq!(files(), vec![], "a torn read into a fresh lake writes no file");
        assert_eq!(
            folders(),
            [false, false, true],
            "nor a partition's folder (the held folder is the run's to remove)"
        );

        put_back();
        let earlier = stores.file_ingest();
        match earlier.file(key, Some(raw.stamp(key).unwrap())) {
            Ingested::Loaded { object, .. } => assert_eq!(object.report.counts.rows_accepted, 2),
            _ => panic!("the file loads while it holds still"),
        }
        let before = files();
        let days = |prefix: &str| before.iter().filter(|(k, _)| k.starts_with(prefix)).count();
        assert_eq!((days("staging/viewership/event_date="), days("quarantine/")), (2, 1), "{before:?}");
        assert_torn(take.file(key, Some(raw.stamp(key).unwrap())));
        let (after, keys) =
            (files(), |files: &[(String, Vec<u8>)]| files.iter().map(|f| f.0.clone()).collect::<Vec<_>>());
        assert_eq!(keys(&after), keys(&before), "the earlier run's files of the version");
        assert!(after == before, "as it wrote them");
    }

    /// The run heads a file (naming the version an earlier run ingested),
    /// then the file is replaced before its read: nothing is written, so the
    /// earlier run's staging and quarantine files of that version stay as
    /// they were. A file that could not be looked at when listed is not read.
    #[test]
    fn a_change_before_the_read_writes_nothing_over_the_files_of_the_version_headed() {
        let dir = tempfile::tempdir().unwrap();
        let (input, lake_root) = (dir.path().join("in"), dir.path().join("lake"));
        let key = "viewership/a.csv";
        let header = "event_id,user_id,channel_id,start_time,duration_seconds\n";
        std::fs::create_dir_all(input.join("viewership")).unwrap();
        std::fs::write(
            input.join(key),
            format!("{header}e1,u1,c1,2024-01-01T10:00:00Z,60\ne2,,c1,2024-01-01T10:00:00Z,60\n"),
        )
        .unwrap();
        let stores = IngestStores::new(&input, &lake_root);
        let (take, raw) = (stores.file_ingest(), &stores.raw);
        assert!(matches!(take.file(key, Some(raw.stamp(key).unwrap())), Ingested::Loaded { .. }));
        let files = || stores.lake_files();
        let before = files();
        assert!(
            before.iter().any(|(k, _)| k.starts_with("quarantine/"))
                && before.iter().any(|(k, _)| k.starts_with("staging/"))
        );

        let (listed, headed) = (raw.stamp(key).unwrap(), raw.head(key).unwrap());
        std::fs::write(input.join(key), format!("{header}e1,u1,c9,2024-01-01T10:00:00Z,60\n")).unwrap();
        set_old_time(&input.join(key));
        assert_torn(take.ingest(&headed, Some(listed)));
        assert_eq!(files(), before, "the version's files as the earlier run wrote them");
        assert_torn(take.ingest(&raw.head(key).unwrap(), None));
        assert_eq!(files(), before);
    }

    fn threads(wh: &mut DuckDbWarehouse) -> i64 {
        wh.query("SELECT CAST(current_setting('threads') AS BIGINT) AS threads").unwrap().int(0, "threads").unwrap()
    }

    /// DuckDB's error when it runs out of its memory limit, as a load's
    /// `MERGE` gave it.
    fn merge_out_of_memory() -> WarehouseError {
        WarehouseError::Statement {
            index: 17,
            statement: "MERGE INTO core.viewing_sessions …".into(),
            message: "Out of Memory Error: failed to allocate data of size 4.0 KiB (305.1 MiB/305.1 MiB used)".into(),
        }
    }

    #[test]
    fn a_step_out_of_memory_on_two_threads_runs_again_on_one_and_then_the_engine_is_back_on_two() {
        let dir = tempfile::tempdir().unwrap();
        let limits = EngineLimits { threads: 2, ..EngineLimits::default() };
        let mut wh = DuckDbWarehouse::open(&dir.path().join("w.duckdb"), &limits).unwrap();
        let (mut seen, mut retried) = (Vec::new(), Vec::new());
        let done = warehouse_step(&mut wh, &limits, "viewership", &mut retried, |w| {
            seen.push(threads(w));
            if seen.last() == Some(&1) { Ok("loaded") } else { Err(merge_out_of_memory()) }
        });
        assert_eq!(done.unwrap(), "loaded");
        assert_eq!((seen, retried), (vec![2, 1], vec!["viewership".to_owned()]));
        assert_eq!(threads(&mut wh), 2, "the next step runs on the threads it was given");

        // Another error is not run again, nor is a step already on one thread.
        let (mut seen, mut retried) = (Vec::new(), Vec::new());
        let failed = warehouse_step(&mut wh, &limits, "channels", &mut retried, |w| {
            seen.push(threads(w));
            w.query("SELECT * FROM core.no_such_table")
        })
        .unwrap_err();
        assert!(!failed.to_string().contains("memory limit"), "{failed:#}");
        assert_eq!((seen, retried), (vec![2], vec![]));
        let one = EngineLimits { threads: 1, ..EngineLimits::default() };
        wh.set_threads(1).unwrap();
        let (mut seen, mut retried) = (Vec::new(), Vec::new());
        let failed = warehouse_step(&mut wh, &one, "analytics", &mut retried, |w| {
            seen.push(threads(w));
            Err::<(), _>(merge_out_of_memory())
        })
        .unwrap_err();
        assert!(
            failed.to_string().starts_with("the warehouse ran out of its memory limit (320MB); nothing"),
            "{failed}"
        );
        assert_eq!((seen, retried), (vec![1], vec![]));
    }

    #[test]
    fn duckdb_out_of_its_memory_limit_on_one_thread_too_says_so_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let limits = EngineLimits { memory_limit: "1MB".into(), threads: 2 };
        let mut wh = DuckDbWarehouse::open(&dir.path().join("w.duckdb"), &limits).unwrap();
        let (mut seen, mut retried) = (Vec::new(), Vec::new());
        let failed = warehouse_step(&mut wh, &limits, "analytics", &mut retried, |w| {
            seen.push(threads(w));
            w.query("SELECT COUNT(DISTINCT CAST(i AS VARCHAR) || 'x') AS n FROM range(2000000) t(i)")
        })
        .unwrap_err();
        assert!(
            failed
                .to_string()
                .starts_with("the warehouse ran out of its memory limit (1MB) on 2 threads and again on one"),
            "{failed}"
        );
        assert!(format!("{failed:#}").contains("Out of Memory"), "{failed:#}");
        assert_eq!((seen, retried), (vec![2, 1], vec![]));
        assert_eq!(threads(&mut wh), 2);
    }
}
