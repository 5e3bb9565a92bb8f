//! `tvetl export`: warehouse tables for other tools, written as files.

use std::path::Path;

use anyhow::{Context, bail};
use tvetl_core::warehouse::{Warehouse, user_features_sql};

use crate::paths::resolved;
use crate::warehouse::DuckDbWarehouse;

/// The formats a result is written to a file in (exports, `tvetl sql
/// --out`), chosen by the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// `.parquet`, zstd-compressed.
    Parquet,
    /// `.csv`, with a header line.
    Csv,
}

impl FileFormat {
    /// The format `out`'s extension names, if it names one.
    pub fn of(out: &Path) -> Option<FileFormat> {
        match out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("parquet") => Some(FileFormat::Parquet),
            Some("csv") => Some(FileFormat::Csv),
            _ => None,
        }
    }
}

/// A temporary file `.<what>-…` in `out`'s folder (created if missing, as
/// every output of tvetl's is), with `out`'s extension, to be persisted over
/// `out` once whole: a write that fails part-way leaves no file, or the one
/// that was there.
pub fn partial_file(out: &Path, what: &str) -> anyhow::Result<tempfile::NamedTempFile> {
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    tempfile::Builder::new()
        .prefix(&format!(".{what}-"))
        .suffix(&format!(".{}", out.extension().and_then(|e| e.to_str()).unwrap_or("tmp")))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))
}

/// Refuses an output file in the warehouse's own folder or below it, which
/// holds the database, its write-ahead log and the runner's records: a file
/// of ours there could be taken for one of them, or be lost with the folder.
pub fn outside_warehouse(out: &Path, warehouse_file: &Path) -> anyhow::Result<()> {
    let warehouse_folder = warehouse_file.parent().unwrap_or(Path::new("."));
    anyhow::ensure!(
        !resolved(out)?.starts_with(resolved(warehouse_folder)?),
        "--out {}: not in the warehouse's own folder",
        out.display()
    );
    Ok(())
}

/// Writes the user features over `[from, to]` (infra/sql/exports/user_features.sql)
/// to `out`, Parquet or CSV by its extension, and returns how many users it
/// holds. The file appears whole or not at all: DuckDB writes a temporary
/// file beside it, which is renamed into place once complete.
pub fn export_user_features(
    wh: &mut DuckDbWarehouse,
    from: Option<&str>,
    to: Option<&str>,
    out: &Path,
) -> anyhow::Result<u64> {
    let options = match FileFormat::of(out) {
        Some(FileFormat::Parquet) => "FORMAT PARQUET, COMPRESSION ZSTD",
        Some(FileFormat::Csv) => "FORMAT CSV, HEADER",
        None => bail!("{}: an export is written as .parquet or .csv", out.display()),
    };
    let query = user_features_sql(from, to)?;
    let partial = partial_file(out, "export")?.into_temp_path();
    let target = partial.to_str().context("the export's folder is not UTF-8")?.replace('\'', "''");
    let result = wh.query(&format!("COPY ({query}) TO '{target}' ({options})"))?;
    let users = result.int(0, "Count")? as u64;
    partial.persist(out).with_context(|| format!("moving the export into {}", out.display()))?;
    Ok(users)
}
