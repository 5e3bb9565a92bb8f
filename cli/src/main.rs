//! `tvetl`: the TV viewership pipeline on one machine.
//!
//! A folder is the bucket, `LAKE/_catalog/catalog.json` the catalog and
//! `LAKE/_warehouse/warehouse.duckdb` the warehouse; the ingest code and the
//! warehouse SQL are the ones the Lambdas run.

mod args;
mod chart;
mod cpu;
mod export;
mod generate;
mod ingest_manifest;
mod lake_lock;
mod paths;
mod quarantine;
mod report;
mod run;
mod sql;
mod warehouse;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tvetl_core::ingest::IngestOptions;
use tvetl_core::warehouse::{Demographic, audience, top_channels, top_genres, user_average};

use crate::args::{Cli, Command, DailyReport, ExportCommand, RankedDay, ReportCommand, RunFormat};
use crate::warehouse::{DuckDbWarehouse, EngineLimits};

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The lake's warehouse for reading, which `run` must have made: reports,
/// exports and `sql` only query, and read-only processes can share the file
/// with each other.
fn open_warehouse(lake: &std::path::Path) -> anyhow::Result<DuckDbWarehouse> {
    let path = run::warehouse_path(lake);
    anyhow::ensure!(
        path.exists(),
        "no warehouse at {}: run `tvetl run --lake {}` first",
        path.display(),
        lake.display()
    );
    Ok(DuckDbWarehouse::open_read_only(&path, &EngineLimits::default())?)
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when whoever reads stdout has gone
    // (`tvetl sql … | head`); Rust ignores SIGPIPE, and each write then fails.
    #[cfg(unix)]
    // SAFETY: at the start of main, before any thread exists, setting a
    // signal's disposition to its default.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            let message = format!("{e:#}");
            // A block found damaged by a query, after the file opened.
            let advice = warehouse::damage_advice(&message).filter(|advice| !message.contains(advice));
            eprintln!("error: {message}{}", advice.map(|a| format!("\n{a}")).unwrap_or_default());
            ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Generate(args) => {
            let manifest = generate::generate(&args)?;
            eprintln!(
                "generated {} viewing-session records in {} files under {}",
                manifest.records_written,
                manifest.files.len(),
                args.out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { input, lake, format, jobs, memory_limit, threads, quiet, strict, reingest } => {
            let options = run::RunOptions {
                ingest: IngestOptions::default(),
                engine: EngineLimits { memory_limit, threads: threads.unwrap_or_else(available_cores) },
                jobs: jobs.unwrap_or_else(available_cores),
                progress: !quiet && std::io::stderr().is_terminal(),
                reingest,
            };
            let summary = run::run(&input, &lake, &options)?;
            match format {
                RunFormat::Json => write_stdout(&with_newline(serde_json::to_string(&summary)?))?,
                RunFormat::Table => write_stdout(&run::render_table(&summary)?)?,
            }
            // Failed files are reported, not fatal: the rest has loaded.
            let failed = summary.files.iter().filter(|f| f.status == "failed").count();
            if strict && failed > 0 {
                let total = summary.files.len();
                let others = if failed == total { "none loaded" } else { "the others loaded" };
                eprintln!("error: {failed} of {total} files failed (see the summary); {others}");
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { lake, report } => {
            run_report(&lake, report)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sql { lake, query, format, out } => {
            let mut warehouse = open_warehouse(&lake)?;
            match out {
                Some(out) => write_stdout(&with_newline(sql::write_sql(
                    &mut warehouse,
                    &query,
                    &out,
                    &run::warehouse_path(&lake),
                )?))?,
                None => write_stdout(&with_newline(sql::run_sql(&mut warehouse, &query, format)?))?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { lake, export: ExportCommand::UserFeatures { days, out } } => {
            export::outside_warehouse(&out, &run::warehouse_path(&lake))?;
            let users = export::export_user_features(
                &mut open_warehouse(&lake)?,
                days.from.as_deref(),
                days.to.as_deref(),
                &out,
            )?;
            eprintln!("wrote the features of {users} users to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_report(lake: &std::path::Path, report: ReportCommand) -> anyhow::Result<()> {
    match report {
        ReportCommand::TopChannels(RankedDay { date, limit, format, chart }) => {
            let channels = top_channels(&mut open_warehouse(lake)?, &date, limit).map_err(|e| anyhow::anyhow!(e))?;
            let rendered = report::render_top_channels(&date, &channels, format);
            emit(rendered, chart, |path| chart::top_channels_chart(path, &date, &channels))
        }
        ReportCommand::TopGenres(RankedDay { date, limit, format, chart }) => {
            let genres = top_genres(&mut open_warehouse(lake)?, &date, limit).map_err(|e| anyhow::anyhow!(e))?;
            emit(report::render_top_genres(&date, &genres, format), chart, |path| {
                chart::top_genres_chart(path, &date, &genres)
            })
        }
        ReportCommand::UserAverage(DailyReport { days: range, format, chart }) => {
            let days = user_average(&mut open_warehouse(lake)?, range.from.as_deref(), range.to.as_deref())
                .map_err(|e| anyhow::anyhow!(e))?;
            emit(report::render_user_average(&days, format), chart, |path| chart::user_average_chart(path, &days))
        }
        ReportCommand::Audience { by, report: DailyReport { days: range, format, chart } } => {
            let by = Demographic::from(by);
            let days = audience(&mut open_warehouse(lake)?, by, range.from.as_deref(), range.to.as_deref())
                .map_err(|e| anyhow::anyhow!(e))?;
            emit(report::render_audience(by, &days, format), chart, |path| chart::audience_chart(path, by, &days))
        }
        // The quarantine is read from the lake's files: rejected records
        // never reach the warehouse.
        ReportCommand::Quarantine { source, reason, limit, format } => {
            anyhow::ensure!(
                lake.is_dir(),
                "no lake at {}: run `tvetl run --lake {}` first",
                lake.display(),
                lake.display()
            );
            // An input folder given as the lake would otherwise read as a
            // lake with nothing quarantined.
            anyhow::ensure!(
                lake.join("_catalog").is_dir() || run::warehouse_path(lake).exists(),
                "{} is not a lake (it has no _catalog/ or _warehouse/): run `tvetl run --lake {}` first",
                lake.display(),
                lake.display()
            );
            let filter =
                quarantine::QuarantineFilter { source: source.map(Into::into), reason: reason.map(Into::into), limit };
            let report = quarantine::read_quarantine(lake, &filter)?;
            write_stdout(&with_newline(quarantine::render_quarantine(&report, format)))
        }
    }
}

/// Writes `text` to stdout: a write that fails (a full disk) is an error
/// naming stdout, not a panic.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).context("writing to stdout")
}

/// Draws a report's chart, when one was asked for, then prints the report:
/// a chart that cannot be written fails the report before it prints.
fn emit(
    rendered: String,
    chart: Option<PathBuf>,
    draw: impl FnOnce(&std::path::Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if let Some(path) = chart {
        draw(&path).with_context(|| format!("writing {}", path.display()))?;
    }
    write_stdout(&with_newline(rendered))
}

fn with_newline(mut s: String) -> String {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}
