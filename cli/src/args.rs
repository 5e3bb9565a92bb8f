//! The command line of `tvetl`: its commands and their arguments (clap),
//! and how the arguments map to the core's types.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tvetl_core::quarantine::QuarantineReason;
use tvetl_core::warehouse::Demographic;

use crate::chart::ChartFormat;
use crate::generate;
use crate::report::OutputFormat;
use crate::warehouse;

#[derive(Parser)]
#[command(
    name = "tvetl",
    version,
    about = "Run the TV viewership pipeline locally: generate data, ingest it into a lake and warehouse, report insights."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
        #[arg(long, value_parser = at_least_one())]
        jobs: Option<usize>,
        /// DuckDB memory limit (it spills to disk beyond it). The process
        /// peaks above it by what DuckDB does not count: about 120 MB at the
        /// default, which keeps a run under 512 MB of RSS, and more at
        /// higher limits (about 200 MB at 900MB). A lower limit spills more
        /// and costs more CPU.
        #[arg(long, default_value = warehouse::DEFAULT_MEMORY_LIMIT, value_parser = warehouse::parse_memory_limit)]
        memory_limit: String,
        /// DuckDB worker threads for the warehouse load (default: the number
        /// of cores; 1 spends less CPU time in all and more wall time).
        #[arg(long, value_parser = at_least_one())]
        threads: Option<usize>,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
        /// Exit with status 1 when a file could not be read (the other
        /// files still load, and the summary is printed as ever), so that
        /// a scheduler notices; without it only a fatal error fails the run.
        #[arg(long)]
        strict: bool,
        /// Read every file again, even those an earlier run into this lake
        /// ingested as they are now (by default they are skipped and their
        /// recorded counts reported).
        #[arg(long)]
        reingest: bool,
    },
    /// Export warehouse tables as files for other tools.
    Export {
        /// The lake folder given to `run`.
        #[arg(long)]
        lake: PathBuf,
        #[command(subcommand)]
        export: ExportCommand,
    },
    /// Report insights from the warehouse, or the lake's rejected records (`quarantine`).
    Report {
        /// The lake folder given to `run`.
        #[arg(long)]
        lake: PathBuf,
        #[command(subcommand)]
        report: ReportCommand,
    },
    /// Run one read-only SQL query on the warehouse (its staging, core and analytics schemas).
    Sql {
        /// The lake folder given to `run`.
        #[arg(long)]
        lake: PathBuf,
        /// The query, in DuckDB's SQL; `-` reads it from standard input.
        query: String,
        /// JSON is one object: {"columns": [...], "rows": [[...], ...]}.
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// Write the result to this file instead (.parquet or .csv), for
        /// another tool; the query must then be one SELECT.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RunFormat {
    Table,
    Json,
}

#[derive(Subcommand)]
pub(crate) enum ReportCommand {
    /// Channels ranked by watch time on one UTC day (ties by channel id).
    TopChannels(RankedDay),
    /// Genres ranked by watch time on one UTC day, with their reach (ties by genre).
    TopGenres(RankedDay),
    /// Average watch time per active user, per UTC day.
    UserAverage(DailyReport),
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
        report: DailyReport,
    },
}

#[derive(Subcommand)]
pub(crate) enum ExportCommand {
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
pub(crate) struct RankedDay {
    /// The UTC day (YYYY-MM-DD).
    #[arg(long)]
    pub(crate) date: String,
    /// How many to list (at least 1).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) limit: u32,
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: OutputFormat,
    /// Also draw a ranked bar chart (.png or .svg).
    #[arg(long, value_parser = chart_path)]
    pub(crate) chart: Option<PathBuf>,
}

/// A report per day over a range of days: what `user-average` and
/// `audience` take.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DailyReport {
    #[command(flatten)]
    pub(crate) days: DayRange,
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: OutputFormat,
    /// Also draw a line chart (.png or .svg): the daily average, or for `audience` a line per segment.
    #[arg(long, value_parser = chart_path)]
    pub(crate) chart: Option<PathBuf>,
}

/// The days a report covers, both ends included; an open end takes every
/// day on that side.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DayRange {
    /// The first day (YYYY-MM-DD).
    #[arg(long)]
    pub(crate) from: Option<String>,
    /// The last day (YYYY-MM-DD).
    #[arg(long)]
    pub(crate) to: Option<String>,
}

/// `--source` of `report quarantine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SourceArg {
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
pub(crate) enum ReasonArg {
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
pub(crate) enum AudienceBy {
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

/// A chart's file name, checked before the report runs so that a wrong
/// extension fails at once instead of after the report is printed.
fn chart_path(value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    match ChartFormat::of(&path) {
        Some(_) => Ok(path),
        None => Err(ChartFormat::EXPECTED.into()),
    }
}

/// A count of at least 1.
fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}
