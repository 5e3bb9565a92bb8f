//! `tvetl export`: warehouse tables for other tools, written as files.

use std::path::Path;

use anyhow::{Context, bail};
use tvetl_core::warehouse::{Warehouse, user_features_sql};

use crate::warehouse::DuckDbWarehouse;

/// The file formats an export writes, by the output's extension.
fn copy_options(out: &Path) -> anyhow::Result<&'static str> {
    match out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("parquet") => Ok("FORMAT PARQUET, COMPRESSION ZSTD"),
        Some("csv") => Ok("FORMAT CSV, HEADER"),
        _ => bail!("{}: an export is written as .parquet or .csv", out.display()),
    }
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
    let options = copy_options(out)?;
    let query = user_features_sql(from, to)?;
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let partial = tempfile::Builder::new()
        .prefix(".export-")
        .suffix(&format!(".{}", out.extension().and_then(|e| e.to_str()).unwrap_or("tmp")))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?
        .into_temp_path();
    let target = partial.to_str().context("the export's folder is not UTF-8")?.replace('\'', "''");
    let result = wh.query(&format!("COPY ({query}) TO '{target}' ({options})"))?;
    let users = result.int(0, "Count")? as u64;
    partial.persist(out).with_context(|| format!("moving the export into {}", out.display()))?;
    Ok(users)
}
