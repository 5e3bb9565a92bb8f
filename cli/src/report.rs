//! `tvetl report`: the insights, as a table, JSON or CSV.

use serde::Serialize;
use tvetl_core::warehouse::{ChannelRank, DailyAudience, DailyUserAverage, Demographic, GenreRank};

/// Output format of reports and summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

#[derive(Serialize)]
struct TopChannelsJson<'a> {
    date: &'a str,
    channels: &'a [ChannelRank],
}

#[derive(Serialize)]
struct TopGenresJson<'a> {
    date: &'a str,
    genres: &'a [GenreRank],
}

#[derive(Serialize)]
struct UserAverageJson<'a> {
    days: &'a [DailyUserAverage],
}

#[derive(Serialize)]
struct AudienceJson<'a> {
    by: Demographic,
    days: &'a [DailyAudience],
}

pub(crate) fn csv_line(fields: &[String]) -> String {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
    w.write_record(fields).expect("writing to memory");
    String::from_utf8(w.into_inner().expect("flushing memory")).expect("fields are UTF-8")
}

/// Renders the top-channels report.
pub fn render_top_channels(date: &str, channels: &[ChannelRank], format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => serde_json::to_string(&TopChannelsJson { date, channels }).expect("serializes"),
        OutputFormat::Csv => {
            let mut out = csv_line(&["rank", "channel_id", "channel_name", "watch_seconds", "reach"].map(String::from));
            for c in channels {
                out.push_str(&csv_line(&[
                    c.rank.to_string(),
                    c.channel_id.clone(),
                    c.channel_name.clone(),
                    c.watch_seconds.to_string(),
                    c.reach.to_string(),
                ]));
            }
            out
        }
        OutputFormat::Table => {
            let mut out = format!("Top channels on {date}\n");
            out.push_str(&format!(
                "{:>4}  {:<12} {:<28} {:>14} {:>10} {:>8}\n",
                "rank", "channel", "name", "watch_seconds", "hours", "reach"
            ));
            for c in channels {
                out.push_str(&format!(
                    "{:>4}  {:<12} {:<28} {:>14.1} {:>10.1} {:>8}\n",
                    c.rank,
                    c.channel_id,
                    truncate(&c.channel_name, 28),
                    c.watch_seconds,
                    c.watch_seconds / 3600.0,
                    c.reach
                ));
            }
            if channels.is_empty() {
                out.push_str("  (no viewing on that day)\n");
            }
            out
        }
    }
}

/// Renders the top-genres report.
pub fn render_top_genres(date: &str, genres: &[GenreRank], format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => serde_json::to_string(&TopGenresJson { date, genres }).expect("serializes"),
        OutputFormat::Csv => {
            let mut out = csv_line(&["rank", "genre", "watch_seconds", "reach", "channels"].map(String::from));
            for g in genres {
                out.push_str(&csv_line(&[
                    g.rank.to_string(),
                    g.genre.clone(),
                    g.watch_seconds.to_string(),
                    g.reach.to_string(),
                    g.channels.to_string(),
                ]));
            }
            out
        }
        OutputFormat::Table => {
            let mut out = format!("Top genres on {date}\n");
            out.push_str(&format!(
                "{:>4}  {:<28} {:>14} {:>10} {:>8} {:>9}\n",
                "rank", "genre", "watch_seconds", "hours", "reach", "channels"
            ));
            for g in genres {
                out.push_str(&format!(
                    "{:>4}  {:<28} {:>14.1} {:>10.1} {:>8} {:>9}\n",
                    g.rank,
                    truncate(&g.genre, 28),
                    g.watch_seconds,
                    g.watch_seconds / 3600.0,
                    g.reach,
                    g.channels
                ));
            }
            if genres.is_empty() {
                out.push_str("  (no viewing on that day)\n");
            }
            out
        }
    }
}

/// Renders the user-average report.
pub fn render_user_average(days: &[DailyUserAverage], format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => serde_json::to_string(&UserAverageJson { days }).expect("serializes"),
        OutputFormat::Csv => {
            let mut out = csv_line(&["date", "active_users", "avg_watch_seconds_per_user"].map(String::from));
            for d in days {
                out.push_str(&csv_line(&[
                    d.date.clone(),
                    d.active_users.to_string(),
                    d.avg_watch_seconds_per_user.to_string(),
                ]));
            }
            out
        }
        OutputFormat::Table => {
            let mut out = String::from("Average viewing per active user\n");
            out.push_str(&format!(
                "{:<12} {:>12} {:>26} {:>10}\n",
                "date", "active_users", "avg_watch_seconds_per_user", "minutes"
            ));
            for d in days {
                out.push_str(&format!(
                    "{:<12} {:>12} {:>26.1} {:>10.1}\n",
                    d.date,
                    d.active_users,
                    d.avg_watch_seconds_per_user,
                    d.avg_watch_seconds_per_user / 60.0
                ));
            }
            if days.is_empty() {
                out.push_str("  (no viewing in that range)\n");
            }
            out
        }
    }
}

/// Renders the audience report.
pub fn render_audience(by: Demographic, days: &[DailyAudience], format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => serde_json::to_string(&AudienceJson { by, days }).expect("serializes"),
        OutputFormat::Csv => {
            let mut out = csv_line(
                &["date", by.column(), "active_users", "watch_seconds", "avg_watch_seconds_per_user"].map(String::from),
            );
            for d in days {
                for s in &d.segments {
                    out.push_str(&csv_line(&[
                        d.date.clone(),
                        s.segment.clone(),
                        s.active_users.to_string(),
                        s.watch_seconds.to_string(),
                        s.avg_watch_seconds_per_user.to_string(),
                    ]));
                }
            }
            out
        }
        OutputFormat::Table => {
            let mut out = format!("Viewing per active user by {}\n", by.column());
            out.push_str(&format!(
                "{:<12} {:<20} {:>12} {:>14} {:>26} {:>10}\n",
                "date",
                by.column(),
                "active_users",
                "watch_seconds",
                "avg_watch_seconds_per_user",
                "minutes"
            ));
            for d in days {
                for s in &d.segments {
                    out.push_str(&format!(
                        "{:<12} {:<20} {:>12} {:>14.1} {:>26.1} {:>10.1}\n",
                        d.date,
                        truncate(&s.segment, 20),
                        s.active_users,
                        s.watch_seconds,
                        s.avg_watch_seconds_per_user,
                        s.avg_watch_seconds_per_user / 60.0
                    ));
                }
            }
            if days.is_empty() {
                out.push_str("  (no viewing in that range)\n");
            }
            out
        }
    }
}

pub(crate) fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(width - 1).collect();
        t.push('…');
        t
    }
}
