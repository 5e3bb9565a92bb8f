//! `tvetl`: the TV viewership pipeline on one machine.
//!
//! A folder is the bucket, `LAKE/_catalog/catalog.json` the catalog and
//! `LAKE/_warehouse/warehouse.duckdb` the warehouse; the ingest code and the
//! warehouse SQL are the ones the Lambdas run.

mod chart;
mod cpu;
mod export;
mod generate;
mod quarantine;
mod report;
mod run;
mod warehouse;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tvetl_core::ingest::IngestOptions;
use tvetl_core::quarantine::QuarantineReason;
use tvetl_core::warehouse::{Demographic, audience, top_channels, top_genres, user_average};

use crate::report::OutputFormat;
use crate::warehouse::{DuckDbWarehouse, EngineLimits};

#[derive(Parser)]
#[command(
    name = "tvetl",
    version,
    about = "Run the TV viewership pipeline locally: generate data, ingest it into a lake and warehouse, report insights."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate raw viewership, channel and demographics files (deterministic per seed).
    Generate(generate::GenerateArgs),
    /// Ingest every file under INPUT/{viewership,channels,demographics}/ into the lake and warehouse.
    Run {
        /// The raw folder (the bucket).
        #[arg(long)]
        input: PathBuf,
        /// The lake folder: staging Parquet, quarantine, catalog and warehouse.
        #[arg(long)]
        lake: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        format: RunFormat,
        /// Files ingested in parallel (default: the number of cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// DuckDB memory limit (it spills to disk beyond it). The process
        /// peaks about 110 MB above it, so the default keeps a run under
        /// 512 MB of RSS; a lower limit spills more and costs more CPU.
        #[arg(long, default_value = warehouse::DEFAULT_MEMORY_LIMIT)]
        memory_limit: String,
        /// DuckDB worker threads for the warehouse load (default: the number
        /// of cores; 1 spends less CPU time in all and more wall time).
        #[arg(long)]
        threads: Option<usize>,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
        /// Exit with status 1 when a file could not be read (the other
        /// files still load, and the summary is printed as ever), so that
        /// a scheduler notices; without it only a fatal error fails the run.
        #[arg(long)]
        strict: bool,
    },
    /// Export warehouse tables as files for other tools.
    Export {
        /// The lake folder given to `run`.
        #[arg(long)]
        lake: PathBuf,
        #[command(subcommand)]
        export: ExportCommand,
    },
    /// Report insights from the warehouse.
    Report {
        /// The lake folder given to `run`.
        #[arg(long)]
        lake: PathBuf,
        #[command(subcommand)]
        report: ReportCommand,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RunFormat {
    Table,
    Json,
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Channels ranked by watch time on one UTC day (ties by channel id).
    TopChannels(RankedDay),
    /// Genres ranked by watch time on one UTC day, with their reach (ties by genre).
    TopGenres(RankedDay),
    /// Average watch time per active user, per UTC day.
    UserAverage {
        #[command(flatten)]
        days: DayRange,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// Also draw a line chart (.png or .svg).
        #[arg(long)]
        chart: Option<PathBuf>,
    },
    /// What the quarantine holds: records per object and reason code, unreadable files, and the first records.
    Quarantine {
        /// Only this source's quarantine.
        #[arg(long, value_enum)]
        source: Option<SourceArg>,
        /// Only records of this reason code (unreadable files are then left out).
        #[arg(long, value_enum, ignore_case = true)]
        reason: Option<ReasonArg>,
        /// How many records to list in full (all are counted).
        #[arg(long, default_value_t = 10)]
        limit: usize,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
    },
    /// Viewing per active user by audience segment (a demographic attribute), per UTC day.
    Audience {
        /// The demographic attribute that segments the viewers.
        #[arg(long, value_enum, default_value = "age_band")]
        by: AudienceBy,
        #[command(flatten)]
        days: DayRange,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// Also draw a line chart per segment (.png or .svg).
        #[arg(long)]
        chart: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ExportCommand {
    /// One row per user with viewing in the days: activity, watch time, top channel and platform, demographics.
    UserFeatures {
        #[command(flatten)]
        days: DayRange,
        /// The file to write: .parquet (zstd) or .csv.
        #[arg(long)]
        out: PathBuf,
    },
}

/// A ranking of one day: what `top-channels` and `top-genres` take.
#[derive(Debug, Clone, clap::Args)]
struct RankedDay {
    /// The UTC day (YYYY-MM-DD).
    #[arg(long)]
    date: String,
    /// How many to list.
    #[arg(long, default_value_t = 10)]
    limit: u32,
    #[arg(long, value_enum, default_value = "table")]
    format: OutputFormat,
    /// Also draw a ranked bar chart (.png or .svg).
    #[arg(long)]
    chart: Option<PathBuf>,
}

/// The days a report covers, both ends included; an open end takes every
/// day on that side.
#[derive(Debug, Clone, clap::Args)]
struct DayRange {
    /// The first day (YYYY-MM-DD).
    #[arg(long)]
    from: Option<String>,
    /// The last day (YYYY-MM-DD).
    #[arg(long)]
    to: Option<String>,
}

/// `--source` of `report quarantine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SourceArg {
    Viewership,
    Channels,
    Demographics,
}

impl From<SourceArg> for tvetl_core::Source {
    fn from(source: SourceArg) -> tvetl_core::Source {
        match source {
            SourceArg::Viewership => tvetl_core::Source::Viewership,
            SourceArg::Channels => tvetl_core::Source::Channels,
            SourceArg::Demographics => tvetl_core::Source::Demographics,
        }
    }
}

/// `--reason` of `report quarantine`: the contract's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ReasonArg {
    #[value(name = "MALFORMED")]
    Malformed,
    #[value(name = "MISSING_FIELD")]
    MissingField,
    #[value(name = "BAD_TIMESTAMP")]
    BadTimestamp,
    #[value(name = "BAD_DURATION")]
    BadDuration,
    #[value(name = "TOO_LONG")]
    TooLong,
}

impl From<ReasonArg> for QuarantineReason {
    fn from(reason: ReasonArg) -> QuarantineReason {
        match reason {
            ReasonArg::Malformed => QuarantineReason::Malformed,
            ReasonArg::MissingField => QuarantineReason::MissingField,
            ReasonArg::BadTimestamp => QuarantineReason::BadTimestamp,
            ReasonArg::BadDuration => QuarantineReason::BadDuration,
            ReasonArg::TooLong => QuarantineReason::TooLong,
        }
    }
}

/// `--by` of `report audience`: the contract's names of the attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AudienceBy {
    #[value(name = "age_band")]
    AgeBand,
    Gender,
    Region,
}

impl From<AudienceBy> for Demographic {
    fn from(by: AudienceBy) -> Demographic {
        match by {
            AudienceBy::AgeBand => Demographic::AgeBand,
            AudienceBy::Gender => Demographic::Gender,
            AudienceBy::Region => Demographic::Region,
        }
    }
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn open_warehouse(lake: &std::path::Path) -> anyhow::Result<DuckDbWarehouse> {
    let path = run::warehouse_path(lake);
    anyhow::ensure!(
        path.exists(),
        "no warehouse at {}: run `tvetl run --lake {}` first",
        path.display(),
        lake.display()
    );
    Ok(DuckDbWarehouse::open(&path, &EngineLimits::default())?)
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
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
        Command::Run { input, lake, format, jobs, memory_limit, threads, quiet, strict } => {
            let options = run::RunOptions {
                ingest: IngestOptions::default(),
                engine: EngineLimits { memory_limit, threads: threads.unwrap_or_else(available_cores) },
                jobs: jobs.unwrap_or_else(available_cores),
                progress: !quiet && std::io::stderr().is_terminal(),
            };
            let summary = run::run(&input, &lake, &options)?;
            match format {
                RunFormat::Json => println!("{}", serde_json::to_string(&summary)?),
                RunFormat::Table => run::print_table(&summary),
            }
            // Failed files are reported, not fatal: the rest has loaded.
            let failed = summary.files.iter().filter(|f| f.status == "failed").count();
            if strict && failed > 0 {
                eprintln!(
                    "error: {failed} of {} files failed (see the summary); the others loaded",
                    summary.files.len()
                );
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { lake, report } => {
            run_report(&lake, report)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { lake, export: ExportCommand::UserFeatures { days, out } } => {
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
            print!("{}", with_newline(report::render_top_channels(&date, &channels, format)));
            if let Some(path) = chart {
                chart::top_channels_chart(&path, &date, &channels)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        ReportCommand::TopGenres(RankedDay { date, limit, format, chart }) => {
            let genres = top_genres(&mut open_warehouse(lake)?, &date, limit).map_err(|e| anyhow::anyhow!(e))?;
            print!("{}", with_newline(report::render_top_genres(&date, &genres, format)));
            if let Some(path) = chart {
                chart::top_genres_chart(&path, &date, &genres)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        ReportCommand::UserAverage { days: range, format, chart } => {
            let days = user_average(&mut open_warehouse(lake)?, range.from.as_deref(), range.to.as_deref())
                .map_err(|e| anyhow::anyhow!(e))?;
            print!("{}", with_newline(report::render_user_average(&days, format)));
            if let Some(path) = chart {
                chart::user_average_chart(&path, &days).with_context(|| format!("writing {}", path.display()))?;
            }
        }
        ReportCommand::Audience { by, days: range, format, chart } => {
            let by = Demographic::from(by);
            let days = audience(&mut open_warehouse(lake)?, by, range.from.as_deref(), range.to.as_deref())
                .map_err(|e| anyhow::anyhow!(e))?;
            print!("{}", with_newline(report::render_audience(by, &days, format)));
            if let Some(path) = chart {
                chart::audience_chart(&path, by, &days).with_context(|| format!("writing {}", path.display()))?;
            }
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
            let filter =
                quarantine::QuarantineFilter { source: source.map(Into::into), reason: reason.map(Into::into), limit };
            let report = quarantine::read_quarantine(lake, &filter)?;
            print!("{}", with_newline(quarantine::render_quarantine(&report, format)));
        }
    }
    Ok(())
}

fn with_newline(mut s: String) -> String {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}
