//! Charts of the reports, as PNG or SVG (by the file's extension), drawn with
//! `plotters` and a bundled font so they render on machines without fonts.

use std::path::Path;

use anyhow::{anyhow, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};
use tvetl_core::warehouse::{ChannelRank, DailyAudience, DailyUserAverage, Demographic, GenreRank};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn ensure_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The bundled font is valid: registering it only fails on bad bytes.
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

const SIZE: (u32, u32) = (1000, 600);

fn with_backend(
    path: &Path,
    draw: impl Fn(DrawingArea<BitMapBackend, Shift>) -> anyhow::Result<()>,
    draw_svg: impl Fn(DrawingArea<SVGBackend, Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    ensure_font();
    let Some(format) = ChartFormat::of(path) else { bail!("{}: {}", path.display(), ChartFormat::EXPECTED) };
    // Drawn beside the file and renamed over it once whole: a chart appears
    // complete or not at all, and a folder that cannot be written fails with
    // the system's own reason. (The PNG backend picks its encoder by the
    // name's extension, which the temporary name keeps.)
    let partial = crate::export::partial_file(path, "chart")?;
    match format {
        ChartFormat::Png => draw(BitMapBackend::new(partial.path(), SIZE).into_drawing_area())?,
        ChartFormat::Svg => draw_svg(SVGBackend::new(partial.path(), SIZE).into_drawing_area())?,
    }
    partial.persist(path)?;
    Ok(())
}

/// The image formats a chart is drawn in, chosen by the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChartFormat {
    Png,
    Svg,
}

impl ChartFormat {
    pub(crate) const EXPECTED: &'static str = "a chart is written as .png or .svg";

    /// The format `path`'s extension names (any case), if it is one.
    pub(crate) fn of(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "png" => Some(ChartFormat::Png),
            "svg" => Some(ChartFormat::Svg),
            _ => None,
        }
    }
}

fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing chart: {e}")
}

/// A chart of nothing (a day or days without viewing): its caption and a
/// line saying so, not axes whose every label is 0.
fn nothing_to_chart<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, caption: &str) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root.margin(20, 20, 20, 20).titled(caption, ("sans-serif", 26)).map_err(plot_err)?;
    let (width, height) = root.dim_in_pixel();
    let style = TextStyle::from(("sans-serif", 20).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
    root.draw(&Text::new("no viewing to chart", (width as i32 / 2, height as i32 / 2), style)).map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// A ranked horizontal bar chart of watch hours, one bar per label, the
/// first at the top.
fn ranked_bars_chart<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    caption: &str,
    bars: &[(String, f64)],
) -> anyhow::Result<()> {
    if bars.is_empty() {
        return nothing_to_chart(root, caption);
    }
    root.fill(&WHITE).map_err(plot_err)?;
    let n = bars.len().max(1) as i32;
    let max_hours = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-9) * 1.1;
    // A segmented 0..k has a segment for each of 0..=k, but 0..0 has no
    // height at all: one bar gets a second, empty segment above it.
    let top = (n - 1).max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(230)
        .build_cartesian_2d(0.0..max_hours, (0..top).into_segmented())
        .map_err(plot_err)?;
    let label = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) => bars.get((n - 1 - *i) as usize).map(|b| b.0.clone()).unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(bars.len().max(1))
        .y_label_formatter(&label)
        .x_desc("watch hours")
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, hours))| {
            let y = n - 1 - i as i32;
            let mut bar = Rectangle::new(
                [(0.0, SegmentValue::Exact(y)), (*hours, SegmentValue::Exact(y + 1))],
                RGBColor(31, 119, 180).filled(),
            );
            bar.set_margin(4, 4, 0, 0);
            bar
        }))
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// A ranked horizontal bar chart of the top channels (watch hours).
pub fn top_channels_chart(path: &Path, date: &str, channels: &[ChannelRank]) -> anyhow::Result<()> {
    let bars: Vec<(String, f64)> =
        channels.iter().map(|c| (format!("{}. {}", c.rank, c.channel_name), c.watch_seconds / 3600.0)).collect();
    let caption = format!("Top channels by watch time, {date}");
    with_backend(path, |root| ranked_bars_chart(root, &caption, &bars), |root| ranked_bars_chart(root, &caption, &bars))
}

/// A ranked horizontal bar chart of the top genres (watch hours).
pub fn top_genres_chart(path: &Path, date: &str, genres: &[GenreRank]) -> anyhow::Result<()> {
    let bars: Vec<(String, f64)> =
        genres.iter().map(|g| (format!("{}. {}", g.rank, g.genre), g.watch_seconds / 3600.0)).collect();
    let caption = format!("Top genres by watch time, {date}");
    with_backend(path, |root| ranked_bars_chart(root, &caption, &bars), |root| ranked_bars_chart(root, &caption, &bars))
}

/// One line of a daily chart: its name (for the legend), colour and points
/// (day index, minutes per user).
struct DailyLine {
    name: String,
    color: RGBAColor,
    /// (day, minutes): the day as an index into the chart's dates.
    points: Vec<(i32, f64)>,
}

/// Every day from the first of `dates` (`YYYY-MM-DD`, ascending) to the
/// last, as labels, and where each of `dates` falls among them: a day
/// without viewing keeps its place on the axis, so the line does not run
/// evenly across a gap.
fn calendar(dates: &[&str]) -> (Vec<String>, Vec<i32>) {
    let days: Vec<i32> = dates.iter().map(|d| tvetl_core::timestamp::parse_day(d).unwrap_or(0)).collect();
    let Some(&first) = days.first() else { return (Vec::new(), Vec::new()) };
    let last = days.iter().copied().max().unwrap_or(first);
    let labels = (first..=last).map(tvetl_core::timestamp::format_day).collect();
    (labels, days.iter().map(|d| d - first).collect())
}

/// The runs of consecutive days in `points`: a line is not drawn across a
/// day it has no point on.
fn runs(points: &[(i32, f64)]) -> Vec<&[(i32, f64)]> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=points.len() {
        if i == points.len() || points[i].0 != points[i - 1].0 + 1 {
            runs.push(&points[start..i]);
            start = i;
        }
    }
    runs.retain(|r| !r.is_empty());
    runs
}

/// A line chart over `dates` of minutes per active user, one line per entry
/// of `lines`; a legend when there is more than one.
fn daily_lines_chart<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    caption: &str,
    dates: &[String],
    lines: &[DailyLine],
) -> anyhow::Result<()> {
    if lines.iter().all(|l| l.points.is_empty()) {
        return nothing_to_chart(root, caption);
    }
    root.fill(&WHITE).map_err(plot_err)?;
    let max_y = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)).fold(0.0, f64::max).max(1e-9) * 1.15;
    let last = (dates.len() as i32 - 1).max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 26))
        .margin(20)
        // Room for the last day's label, centred on the right edge.
        .margin_right(60)
        .x_label_area_size(60)
        .y_label_area_size(70)
        .build_cartesian_2d(0..last, 0.0..max_y)
        .map_err(plot_err)?;
    let label = |i: &i32| dates.get(*i as usize).cloned().unwrap_or_default();
    chart
        .configure_mesh()
        .x_labels(dates.len().clamp(2, 12))
        .x_label_formatter(&label)
        .y_desc("minutes per user")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(plot_err)?;
    for line in lines {
        let color = line.color;
        for (n, run) in runs(&line.points).into_iter().enumerate() {
            let series =
                chart.draw_series(LineSeries::new(run.iter().copied(), color.stroke_width(3))).map_err(plot_err)?;
            if n == 0 {
                series
                    .label(line.name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
            }
        }
        chart.draw_series(line.points.iter().map(|&p| Circle::new(p, 4, color.filled()))).map_err(plot_err)?;
    }
    if lines.len() > 1 {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .position(SeriesLabelPosition::LowerLeft)
            .draw()
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// A line chart of the daily average viewing per active user (minutes).
pub fn user_average_chart(path: &Path, days: &[DailyUserAverage]) -> anyhow::Result<()> {
    let (dates, at) = calendar(&days.iter().map(|d| d.date.as_str()).collect::<Vec<_>>());
    let line = DailyLine {
        name: "all users".to_owned(),
        color: RGBColor(214, 39, 40).to_rgba(),
        points: days.iter().zip(&at).map(|(d, &x)| (x, d.avg_watch_seconds_per_user / 60.0)).collect(),
    };
    let lines = [line];
    let caption = "Average viewing per active user";
    with_backend(
        path,
        |root| daily_lines_chart(root, caption, &dates, &lines),
        |root| daily_lines_chart(root, caption, &dates, &lines),
    )
}

/// A line chart per segment of the daily average viewing per active user
/// (minutes); a segment without viewers on a day has no point that day.
pub fn audience_chart(path: &Path, by: Demographic, days: &[DailyAudience]) -> anyhow::Result<()> {
    let (dates, at) = calendar(&days.iter().map(|d| d.date.as_str()).collect::<Vec<_>>());
    let mut segments: Vec<&str> = days.iter().flat_map(|d| d.segments.iter().map(|s| s.segment.as_str())).collect();
    segments.sort_unstable();
    segments.dedup();
    let lines: Vec<DailyLine> = segments
        .iter()
        .enumerate()
        .map(|(n, name)| DailyLine {
            name: (*name).to_owned(),
            color: Palette99::pick(n).to_rgba(),
            points: days
                .iter()
                .zip(&at)
                .filter_map(|(d, &x)| {
                    let segment = d.segments.iter().find(|s| s.segment == *name)?;
                    Some((x, segment.avg_watch_seconds_per_user / 60.0))
                })
                .collect(),
        })
        .collect();
    let caption = format!("Average viewing per active user by {}", by.column());
    with_backend(
        path,
        |root| daily_lines_chart(root, &caption, &dates, &lines),
        |root| daily_lines_chart(root, &caption, &dates, &lines),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The heights of the bars of a top-channels chart of `names`, drawn
    /// as SVG, and whether each name is labelled.
    fn drawn_bars(names: &[&str]) -> (Vec<f64>, Vec<bool>) {
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("top.svg");
        let channels: Vec<ChannelRank> = names
            .iter()
            .enumerate()
            .map(|(i, name)| ChannelRank {
                rank: i as u32 + 1,
                channel_id: format!("c{i}"),
                channel_name: (*name).to_owned(),
                watch_seconds: 3600.0 * (names.len() - i) as f64,
                reach: 1,
            })
            .collect();
        top_channels_chart(&svg, "2024-01-01", &channels).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        // The bars are the filled rectangles of the series' colour.
        let heights = text
            .split("<rect")
            .skip(1)
            .filter(|r| r.contains("#1F77B4"))
            .map(|r| {
                let h = r.split("height=\"").nth(1).unwrap();
                h[..h.find('"').unwrap()].parse::<f64>().unwrap()
            })
            .collect();
        (heights, names.iter().map(|n| text.contains(n)).collect())
    }

    #[test]
    fn one_bar_is_drawn_with_its_label_like_several() {
        let (heights, labelled) = drawn_bars(&["Solo"]);
        assert_eq!(heights.len(), 1);
        assert!(heights[0] > 10.0, "{heights:?}");
        assert_eq!(labelled, [true]);
        let (heights, labelled) = drawn_bars(&["One", "Two", "Three"]);
        assert_eq!(heights.len(), 3);
        assert!(heights.iter().all(|h| *h > 10.0), "{heights:?}");
        assert_eq!(labelled, [true, true, true]);
    }

    #[test]
    fn a_day_without_viewing_keeps_its_place_and_breaks_the_line() {
        let day = |date: &str, avg: f64| DailyUserAverage {
            date: date.to_owned(),
            active_users: 1,
            avg_watch_seconds_per_user: avg,
        };
        let days =
            [day("2024-03-10", 600.0), day("2024-03-11", 1200.0), day("2024-03-13", 900.0), day("2024-03-14", 60.0)];
        let (labels, at) = calendar(&days.iter().map(|d| d.date.as_str()).collect::<Vec<_>>());
        assert_eq!(labels, ["2024-03-10", "2024-03-11", "2024-03-12", "2024-03-13", "2024-03-14"]);
        assert_eq!(at, [0, 1, 3, 4]);
        let points: Vec<(i32, f64)> = at.iter().map(|&x| (x, 1.0)).collect();
        assert_eq!(runs(&points).iter().map(|r| r.len()).collect::<Vec<_>>(), [2, 2]);
        assert!(runs(&[]).is_empty());

        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("avg.svg");
        user_average_chart(&svg, &days).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("2024-03-12"), "the day without viewing is on the axis");
        // The line is drawn in its colour (the mesh in others).
        let line_parts = text.split("<polyline").skip(1).filter(|p| p.split('>').next().unwrap().contains("#D62728"));
        assert_eq!(line_parts.count(), 2, "one line a side of the gap");
        let png = dir.path().join("avg.png");
        user_average_chart(&png, &days).unwrap();
        assert_eq!(&std::fs::read(&png).unwrap()[..4], b"\x89PNG");
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["avg.png", "avg.svg"], "no partial file left");

        // Nothing to chart: said so, without axes of zeros.
        let empty = dir.path().join("empty.svg");
        user_average_chart(&empty, &[]).unwrap();
        let text = std::fs::read_to_string(&empty).unwrap();
        assert!(text.contains("no viewing to chart") && !text.contains(">0.0<"), "{text}");
        top_channels_chart(&empty, "2024-03-12", &[]).unwrap();
        assert!(std::fs::read_to_string(&empty).unwrap().contains("no viewing to chart"));

        // A folder that does not exist is created; one that cannot be (a
        // file is in its place) fails with the system's reason, no panic.
        user_average_chart(&dir.path().join("new/avg.png"), &days).unwrap();
        assert_eq!(&std::fs::read(dir.path().join("new/avg.png")).unwrap()[..4], b"\x89PNG");
        let error = user_average_chart(&dir.path().join("avg.png/avg.png"), &days).unwrap_err();
        assert!(format!("{error:#}").contains("creating") && format!("{error:#}").contains("exists"), "{error:#}");
    }
}
