//! `tvetl report`: the insights, as a table, JSON or CSV.

use serde::Serialize;
use tvetl_core::warehouse::{ChannelRank, DailyAudience, DailyUserAverage, Demographic, GenreRank, SegmentViewing};

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
        OutputFormat::Table => audience_table(by, days),
    }
}

/// The widest audience table laid out with a column per segment; one with
/// more segments than fit (say, many regions) has a row per day and segment.
const AUDIENCE_PIVOT_MAX_WIDTH: usize = 120;

/// The width of a table's date column.
const DATE_WIDTH: usize = 12;

/// The audience report for a reader: a row per day and a column per segment,
/// so that segments compare at a glance, with each cell's minutes per
/// active user and, in brackets, its active users. The watch seconds behind
/// each average are in the CSV and JSON forms.
fn audience_table(by: Demographic, days: &[DailyAudience]) -> String {
    if days.is_empty() {
        return format!("Viewing per active user by {}\n  (no viewing in that range)\n", by.column());
    }
    let mut segments: Vec<&str> = Vec::new();
    for s in days.iter().flat_map(|d| &d.segments) {
        if !segments.contains(&s.segment.as_str()) {
            segments.push(&s.segment);
        }
    }
    // Each cell's text, formatted once: the widths and the rows both use it.
    let grid: Vec<Vec<String>> = days
        .iter()
        .map(|d| {
            let cell = |name: &&str| d.segments.iter().find(|s| s.segment == *name).map(cell_text);
            segments.iter().map(|name| cell(name).unwrap_or_else(|| "-".into())).collect()
        })
        .collect();
    let widths: Vec<usize> = segments
        .iter()
        .enumerate()
        .map(|(i, name)| grid.iter().map(|row| row[i].chars().count()).chain([name.chars().count()]).max().unwrap_or(0))
        .collect();
    if DATE_WIDTH + widths.iter().map(|w| w + 2).sum::<usize>() > AUDIENCE_PIVOT_MAX_WIDTH {
        return audience_rows(by, days);
    }
    let mut out = format!(
        "Minutes per active user by {} (active users in brackets), per UTC day\n{:<DATE_WIDTH$}",
        by.column(),
        "date"
    );
    for (name, width) in segments.iter().zip(&widths) {
        out.push_str(&format!("  {name:>width$}"));
    }
    out.push('\n');
    for (d, row) in days.iter().zip(&grid) {
        out.push_str(&format!("{:<DATE_WIDTH$}", d.date));
        for (text, width) in row.iter().zip(&widths) {
            out.push_str(&format!("  {text:>width$}"));
        }
        out.push('\n');
    }
    out
}

/// An audience table cell: minutes per active user (active users).
fn cell_text(s: &SegmentViewing) -> String {
    format!("{:.1} ({})", s.avg_watch_seconds_per_user / 60.0, s.active_users)
}

/// The audience table with a row per day and segment.
fn audience_rows(by: Demographic, days: &[DailyAudience]) -> String {
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
    out
}

/// `s` as it may go to a terminal: control characters (escape sequences,
/// carriage returns, line breaks) and the marks that reorder text (right-to-
/// left overrides and isolates) escaped as `\u{…}`. File names and field
/// values come from whoever lands the files, and are printed in tables.
pub(crate) fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `s` as a table cell: control characters escaped (a newline as `\n`), so
/// a value keeps to its row, and cut to `width` characters with `…`.
pub(crate) fn truncate(s: &str, width: usize) -> String {
    let cell = printable(s).into_owned();
    if cell.chars().count() <= width {
        cell
    } else {
        let mut t: String = cell.chars().take(width - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(name: &str, active_users: u64, avg_minutes: f64) -> SegmentViewing {
        SegmentViewing {
            segment: name.into(),
            active_users,
            watch_seconds: avg_minutes * 60.0 * active_users as f64,
            avg_watch_seconds_per_user: avg_minutes * 60.0,
        }
    }

    #[test]
    fn the_audience_table_has_a_column_per_segment_and_a_dash_where_a_day_has_none() {
        let days = vec![
            DailyAudience {
                date: "2024-01-01".into(),
                segments: vec![segment("18-24", 3, 10.0), segment("65+", 1, 2.5)],
            },
            DailyAudience {
                date: "2024-01-02".into(),
                segments: vec![segment("65+", 2, 4.0), segment("Unknown", 12, 1.3)],
            },
        ];
        let table = audience_table(Demographic::AgeBand, &days);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("Minutes per active user by age_band"), "{table}");
        let header: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(header, ["date", "18-24", "65+", "Unknown"]);
        let day1: Vec<&str> = lines[2].split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(day1, ["2024-01-01", "10.0 (3)", "2.5 (1)", "-"]);
        let day2: Vec<&str> = lines[3].split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(day2, ["2024-01-02", "-", "4.0 (2)", "1.3 (12)"]);
        // Every column is right-aligned under its header.
        let end_of = |line: &str, text: &str| line.find(text).map(|i| i + text.len());
        assert_eq!(end_of(lines[1], "Unknown"), end_of(lines[3], "1.3 (12)"));
        assert_eq!(end_of(lines[1], "18-24"), end_of(lines[2], "10.0 (3)"));
    }

    #[test]
    fn an_audience_too_wide_for_columns_gets_a_row_per_day_and_segment() {
        let segments: Vec<SegmentViewing> = (0..12).map(|i| segment(&format!("region-{i}"), 1000 + i, 290.5)).collect();
        let days = vec![DailyAudience { date: "2024-01-01".into(), segments }];
        let table = audience_table(Demographic::Region, &days);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "Viewing per active user by region");
        assert_eq!(lines.len(), 2 + 12, "{table}");
        assert!(lines[2].starts_with("2024-01-01   region-0 "), "{table}");
        assert!(lines.iter().all(|l| l.chars().count() <= AUDIENCE_PIVOT_MAX_WIDTH));
    }

    #[test]
    fn a_cell_keeps_to_its_row_and_its_width() {
        assert_eq!(truncate("News\nOne", 28), "News\\nOne");
        assert_eq!(truncate("a\tb\r\u{1b}", 28), "a\\tb\\r\\u{1b}");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("Café", 4), "Café");
        assert_eq!(truncate("\u{202e}fdp.exe", 28), "\\u{202e}fdp.exe");
        assert_eq!(printable("עברית, café"), "עברית, café");
    }

    #[test]
    fn an_empty_audience_says_so() {
        assert_eq!(
            audience_table(Demographic::Gender, &[]),
            "Viewing per active user by gender\n  (no viewing in that range)\n"
        );
    }
}
