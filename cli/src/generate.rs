//! `tvetl generate`: deterministic raw data for demos, tests and benchmarks.
//!
//! With `--dirty F`, about a fraction F of the viewing-session records carry
//! one defect each (cycling through the five reason codes) and about F are
//! re-deliveries of earlier sessions (later in key order, so they win); the
//! files also mix every input shape the contract allows: BOM, CRLF, shuffled
//! and mixed-case headers, unknown columns, quoted commas/quotes/newlines,
//! every timestamp form, durations instead of end times, gzip, JSON Lines,
//! unknown channels, midnight-crossing sessions, and one truncated gzip file.
//!
//! `OUT/generator-manifest.json` says what was injected, so tests can check
//! the pipeline's counts against it, and which objects were written, so that
//! the next generation into the folder replaces them; `--truth FILE` writes
//! the sessions that should survive (after last-delivery-wins) and the final
//! channel names.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, FixedOffset, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::json;
use tvetl_core::QuarantineReason;
use tvetl_core::store::{LocalObjectStore, ObjectStore, upload_in_flight_to};
use tvetl_core::timestamp::{MICROS_PER_DAY, MICROS_PER_SECOND, parse_day};

#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Output folder (gets viewership/, channels/, demographics/).
    #[arg(long)]
    pub out: PathBuf,
    /// Viewing-session records to write (defects and re-deliveries included).
    #[arg(long, default_value_t = 10_000)]
    pub rows: u64,
    /// Days of viewing.
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// First UTC day (YYYY-MM-DD).
    #[arg(long, default_value = "2024-01-01")]
    pub start: String,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Fraction of defective records (and, as many again, re-deliveries).
    #[arg(long, default_value_t = 0.0)]
    pub dirty: f64,
    /// Records per viewership file (at least 1).
    #[arg(long, default_value_t = 250_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rows_per_file: u64,
    /// Write the expected surviving sessions and channel names here (JSON).
    #[arg(long)]
    pub truth: Option<PathBuf>,
}

/// What was generated; written as `OUT/generator-manifest.json`.
#[derive(Debug, Serialize)]
pub struct Manifest {
    pub seed: u64,
    pub dirty: f64,
    /// Viewing-session records in readable files.
    pub records_written: u64,
    pub files: Vec<FileEntry>,
    /// Files that cannot be read at all (their records are not counted).
    pub unreadable_files: Vec<String>,
    /// Every object written, in byte-wise key order: what a later `generate`
    /// into the same folder replaces.
    pub objects: Vec<String>,
    /// What `tvetl run --format json` should report on a fresh lake.
    pub expected: Expected,
}

#[derive(Debug, Serialize)]
pub struct FileEntry {
    pub key: String,
    pub records: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Expected {
    pub rows_read: u64,
    pub rows_accepted: u64,
    pub duplicates_removed: u64,
    pub quarantined: BTreeMap<&'static str, u64>,
    pub channels_quarantined: u64,
    pub demographics_quarantined: u64,
}

const KNOWN_CHANNELS: usize = 40;
const GENRES: [&str; 6] = ["news", "sports", "movies", "kids", "music", "documentary"];
const NETWORKS: [&str; 4] = ["Northwind", "Contoso", "Fabrikam", "Tailspin"];
const PLATFORMS: [&str; 4] = ["stb", "smart_tv", "mobile", "web"];
/// The contract's viewing-session header; dirty files shuffle and re-case it.
const HEADER: [&str; 9] = tvetl_core::validate::SESSION_FIELDS;

fn channel_name(i: usize) -> String {
    const WORDS: [&str; 10] = ["Prime", "Metro", "Global", "Star", "Coast", "Nova", "Summit", "River", "Pulse", "Arc"];
    format!("{} {} {}", WORDS[i % 10], GENRES[i % GENRES.len()].to_uppercase(), i / 10 + 1)
}

#[derive(Clone)]
struct Session {
    event_id: String,
    user: u32,
    device: u32,
    channel: String,
    program: u32,
    start_us: i64,
    end_us: i64,
    platform: &'static str,
    use_duration: bool,
}

/// How one viewership file is shaped.
#[derive(Clone, Copy)]
enum Shape {
    Csv { bom: bool, crlf: bool, shuffled: bool, extra_column: bool, gzip: bool },
    JsonLines { gzip: bool, mixed_case: bool },
}

impl Shape {
    fn for_file(i: usize, dirty: bool) -> Shape {
        if !dirty {
            return Shape::Csv { bom: false, crlf: false, shuffled: false, extra_column: false, gzip: false };
        }
        match i % 6 {
            0 => Shape::Csv { bom: false, crlf: false, shuffled: false, extra_column: false, gzip: false },
            1 => Shape::Csv { bom: true, crlf: true, shuffled: true, extra_column: true, gzip: false },
            2 => Shape::Csv { bom: false, crlf: false, shuffled: false, extra_column: false, gzip: true },
            3 => Shape::JsonLines { gzip: false, mixed_case: false },
            4 => Shape::JsonLines { gzip: true, mixed_case: true },
            _ => Shape::Csv { bom: true, crlf: false, shuffled: true, extra_column: false, gzip: false },
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Shape::Csv { gzip: false, .. } => "csv",
            Shape::Csv { gzip: true, .. } => "csv.gz",
            Shape::JsonLines { gzip: false, .. } => "jsonl",
            Shape::JsonLines { gzip: true, .. } => "jsonl.gz",
        }
    }
}

fn create(path: &Path, gzip: bool) -> anyhow::Result<Box<dyn Write>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?);
    Ok(if gzip {
        Box::new(flate2::GzBuilder::new().mtime(0).write(file, flate2::Compression::fast()))
    } else {
        Box::new(file)
    })
}

/// One record as it will be written: canonical-order values, or raw text.
// Nearly every row holds values, so boxing them would add an allocation per
// row and save no memory.
#[allow(clippy::large_enum_variant)]
enum Row {
    Values([Option<String>; 9]),
    /// A record that is not a record of the format.
    Malformed,
}

struct Generator {
    rng: ChaCha8Rng,
    dirty: f64,
    day0_us: i64,
    days: u32,
    users: u32,
    next_event: u64,
    channel_weights: Vec<f64>,
    weight_total: f64,
}

impl Generator {
    fn fresh_id(&mut self) -> String {
        self.next_event += 1;
        format!("ev{:010}", self.next_event)
    }

    fn channel(&mut self) -> String {
        if self.dirty > 0.0 && self.rng.random_bool(0.01) {
            return format!("ch_unknown_{}", self.rng.random_range(1..=3));
        }
        let mut x = self.rng.random::<f64>() * self.weight_total;
        for (i, w) in self.channel_weights.iter().enumerate() {
            if x < *w {
                return format!("ch{:03}", i + 1);
            }
            x -= w;
        }
        format!("ch{KNOWN_CHANNELS:03}")
    }

    fn session(&mut self) -> Session {
        let user = self.rng.random_range(1..=self.users);
        let late_evening = self.rng.random_bool(0.03);
        let day = self.rng.random_range(0..self.days) as i64;
        let second_of_day =
            if late_evening { self.rng.random_range(82_800..86_400) } else { self.rng.random_range(0..86_400) };
        let millis = if self.dirty > 0.0 && self.rng.random_bool(0.1) { self.rng.random_range(1..1000) } else { 0 };
        let start_us = self.day0_us + day * MICROS_PER_DAY + second_of_day * MICROS_PER_SECOND + millis * 1000;
        let r = self.rng.random::<f64>();
        let seconds = if late_evening {
            self.rng.random_range(1_800..10_800)
        } else if r < 0.70 {
            self.rng.random_range(60..3_600)
        } else if r < 0.95 {
            self.rng.random_range(3_600..14_400)
        } else {
            self.rng.random_range(14_400..43_200)
        };
        Session {
            event_id: self.fresh_id(),
            user,
            device: user * 3 + self.rng.random_range(0..3),
            channel: self.channel(),
            program: self.rng.random_range(1..500),
            start_us,
            end_us: start_us + seconds * MICROS_PER_SECOND,
            platform: PLATFORMS[self.rng.random_range(0..PLATFORMS.len())],
            use_duration: self.rng.random_bool(0.3),
        }
    }

    fn timestamp(&mut self, us: i64) -> String {
        let t = DateTime::<Utc>::from_timestamp_micros(us).expect("generated times are in range");
        let style = if self.dirty > 0.0 { self.rng.random_range(0..5) } else { 0 };
        let frac = us % MICROS_PER_SECOND != 0;
        match style {
            0 | 4 if frac => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            0 | 4 => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            1 => {
                let offset = [4 * 3600, -(5 * 3600 + 1800), 3600][self.rng.random_range(0..3)];
                let local = t.with_timezone(&FixedOffset::east_opt(offset).expect("valid offset"));
                if frac { local.format("%Y-%m-%dT%H:%M:%S%.3f%:z") } else { local.format("%Y-%m-%dT%H:%M:%S%:z") }
                    .to_string()
            }
            2 if frac => t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
            2 => t.format("%Y-%m-%d %H:%M:%S").to_string(),
            _ => (us / 1000).to_string(),
        }
    }

    fn values(&mut self, s: &Session) -> [Option<String>; 9] {
        let program = if self.dirty > 0.0 && self.rng.random_bool(0.01) {
            format!("Late Show, \"Live\"\nPart {}", s.program)
        } else {
            format!("p{:04}", s.program)
        };
        let platform = if self.dirty > 0.0 && self.rng.random_bool(0.02) {
            ["SmartTV", "Roku", "STB", ""][self.rng.random_range(0..4)].to_owned()
        } else {
            s.platform.to_owned()
        };
        let start = self.timestamp(s.start_us);
        let (end, duration) = if s.use_duration {
            (None, Some(((s.end_us - s.start_us) / MICROS_PER_SECOND).to_string()))
        } else {
            (Some(self.timestamp(s.end_us)), None)
        };
        [
            Some(s.event_id.clone()),
            Some(format!("u{:06}", s.user)),
            Some(format!("d{:07}", s.device)),
            Some(s.channel.clone()),
            Some(program),
            Some(start),
            end,
            duration,
            Some(platform),
        ]
    }

    /// A record with exactly one defect of `reason`.
    fn defect(&mut self, reason: QuarantineReason) -> Row {
        let mut s = self.session();
        // Defects need whole-second times so a duration stays an integer.
        s.start_us -= s.start_us % MICROS_PER_SECOND;
        s.end_us -= s.end_us % MICROS_PER_SECOND;
        let variant = self.rng.random_range(0..4);
        match reason {
            QuarantineReason::Malformed => Row::Malformed,
            QuarantineReason::MissingField => {
                let mut v = self.values(&s);
                match variant {
                    0 => v[0] = Some(String::new()),
                    1 => v[1] = None,
                    2 => v[3] = Some("  ".into()),
                    _ => {
                        v[6] = None;
                        v[7] = None;
                    }
                }
                Row::Values(v)
            }
            QuarantineReason::BadTimestamp => {
                let mut v = self.values(&s);
                let bad = ["2024-13-45T10:00:00Z", "not-a-time", "2024-01-01T25:61:00Z", "01/02/2024 10:00"][variant];
                if variant % 2 == 0 || v[6].is_none() {
                    v[5] = Some(bad.into())
                } else {
                    v[6] = Some(bad.into())
                }
                Row::Values(v)
            }
            QuarantineReason::BadDuration => {
                if variant < 2 {
                    s.use_duration = false;
                    s.end_us = s.start_us - if variant == 0 { 600 * MICROS_PER_SECOND } else { 0 };
                    Row::Values(self.values(&s))
                } else {
                    s.use_duration = true;
                    let mut v = self.values(&s);
                    v[7] = Some(["0", "-30", "abc", "12.5"][self.rng.random_range(0..4)].into());
                    Row::Values(v)
                }
            }
            QuarantineReason::TooLong => {
                s.end_us = s.start_us + (25 * 3600 + self.rng.random_range(0..3600)) * MICROS_PER_SECOND;
                Row::Values(self.values(&s))
            }
        }
    }
}

fn write_csv_rows(out: Box<dyn Write>, shape: Shape, rows: &[Row], rng: &mut ChaCha8Rng) -> anyhow::Result<()> {
    let Shape::Csv { bom, crlf, shuffled, extra_column, .. } = shape else { unreachable!("a CSV shape") };
    let mut out = out;
    if bom {
        out.write_all("\u{feff}".as_bytes())?;
    }
    let mut order: Vec<usize> = (0..HEADER.len()).collect();
    if shuffled {
        order.reverse();
        order.swap(0, 4);
    }
    let terminator = if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') };
    let mut w = csv::WriterBuilder::new().flexible(true).terminator(terminator).from_writer(out);
    let mut header: Vec<String> = order
        .iter()
        .map(|&i| if shuffled && i % 2 == 0 { HEADER[i].to_uppercase() } else { HEADER[i].to_owned() })
        .collect();
    if extra_column {
        header.push("ad_slot".into());
    }
    w.write_record(&header)?;
    for row in rows {
        match row {
            Row::Values(v) => {
                let mut fields: Vec<&str> = order.iter().map(|&i| v[i].as_deref().unwrap_or("")).collect();
                if extra_column {
                    fields.push(if rng.random_bool(0.5) { "pre-roll" } else { "" });
                }
                w.write_record(&fields)?;
            }
            Row::Malformed => {
                // One field too many.
                let fields: Vec<String> = (0..=header.len()).map(|i| format!("x{i}")).collect();
                w.write_record(&fields)?;
            }
        }
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("flushing CSV: {e}"))?.flush()?;
    Ok(())
}

fn write_json_lines(mut out: Box<dyn Write>, shape: Shape, rows: &[Row]) -> anyhow::Result<()> {
    let Shape::JsonLines { mixed_case, .. } = shape else { unreachable!("a JSON Lines shape") };
    for row in rows {
        match row {
            Row::Values(v) => {
                let mut object = serde_json::Map::new();
                for (i, value) in v.iter().enumerate() {
                    let Some(value) = value else { continue };
                    let key = if mixed_case && i == 0 { "Event_ID".to_owned() } else { HEADER[i].to_owned() };
                    let json_value = match (i, value.parse::<i64>()) {
                        (5..=7, Ok(n)) => json!(n),
                        _ => json!(value),
                    };
                    object.insert(key, json_value);
                }
                serde_json::to_writer(&mut out, &object)?;
                out.write_all(b"\n")?;
            }
            Row::Malformed => out.write_all(b"{\"event_id\": \"broken\", \"user_id\": \n")?,
        }
    }
    out.flush()?;
    Ok(())
}

const MANIFEST_NAME: &str = "generator-manifest.json";
const CHANNELS_KEY: &str = "channels/channels.json";
const CHANNEL_UPDATE_KEY: &str = "channels/updates/channels-update-0001.jsonl";
const DEMOGRAPHICS_KEY: &str = "demographics/users.csv";

/// Every object of a generation whose session files (readable or not) are
/// `session_keys`: those and its channel and demographics files, in
/// byte-wise key order (`String`'s order).
fn generated_objects(session_keys: impl IntoIterator<Item = String>, dirty: bool) -> BTreeSet<String> {
    let dimensions = [CHANNELS_KEY, DEMOGRAPHICS_KEY].into_iter().chain(dirty.then_some(CHANNEL_UPDATE_KEY));
    session_keys.into_iter().chain(dimensions.map(str::to_owned)).collect()
}

/// Makes `out` ready for a new generation: removes what an earlier one
/// wrote there (its manifest lists it), so that a smaller or clean dataset
/// does not leave the earlier one's extra files behind for `run` to read.
/// Raw files that no earlier generation wrote are the user's: they are left
/// alone, and the generation is refused, since `run` would read them with it.
fn clear_earlier_generation(out: &Path) -> anyhow::Result<()> {
    let manifest_path = out.join(MANIFEST_NAME);
    let earlier: BTreeSet<String> = match std::fs::read(&manifest_path) {
        Ok(bytes) => earlier_objects(&bytes).with_context(|| format!("reading {}", manifest_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", manifest_path.display())),
    };
    // As `run` lists it: every file, those named like an upload in flight
    // too. An earlier generation's own (it was killed while writing that
    // file) goes with its files; anyone else's is the user's.
    let store = LocalObjectStore::new(out).listing_every_file();
    let listing = crate::run::raw_listing(&store).with_context(|| format!("listing {}", out.display()))?;
    let present = listing.keys;
    let earlier_or_its_upload = |key: &String| {
        earlier.contains(key) || upload_in_flight_to(key).is_some_and(|target| earlier.contains(&target))
    };
    let foreign: Vec<&str> = present
        .iter()
        .filter(|k| !earlier_or_its_upload(k))
        .map(String::as_str)
        .chain(listing.not_utf8.iter().map(|n| n.shown.as_str()))
        .collect();
    if let Some(first) = foreign.first() {
        let more = match foreign.len() - 1 {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        anyhow::bail!(
            "{} already holds raw files that tvetl generate did not write ({first}{more}); \
             generate into an empty folder, or one an earlier generate wrote, so that a run reads only the generated data",
            out.display()
        );
    }
    for key in &present {
        store.delete(key).with_context(|| format!("removing the earlier generation's {key}"))?;
    }
    Ok(())
}

/// The objects an earlier manifest says its generation wrote. Manifests from
/// before `objects` was recorded list the session files; the dimension files
/// then are the ones every generation writes.
fn earlier_objects(manifest: &[u8]) -> anyhow::Result<BTreeSet<String>> {
    let value: serde_json::Value = serde_json::from_slice(manifest)?;
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(str::to_owned)).collect()
    };
    if value.get("objects").is_some() {
        return Ok(strings(&value["objects"]).into_iter().collect());
    }
    let files = value["files"].as_array().into_iter().flatten().filter_map(|f| f["key"].as_str().map(str::to_owned));
    Ok(generated_objects(files.chain(strings(&value["unreadable_files"])), true))
}

/// Writes the dataset; returns its manifest.
pub fn generate(args: &GenerateArgs) -> anyhow::Result<Manifest> {
    anyhow::ensure!((0.0..=0.4).contains(&args.dirty), "--dirty is a fraction between 0 and 0.4");
    anyhow::ensure!(args.days >= 1, "--days must be at least 1");
    let day0 = parse_day(&args.start).with_context(|| format!("--start {:?} is not YYYY-MM-DD", args.start))?;
    clear_earlier_generation(&args.out)?;
    let dirty = args.dirty > 0.0;
    let mut g = Generator {
        rng: ChaCha8Rng::seed_from_u64(args.seed),
        dirty: args.dirty,
        day0_us: day0 as i64 * MICROS_PER_DAY,
        days: args.days,
        users: (args.rows / 25).clamp(50, 2_000_000) as u32,
        next_event: 0,
        channel_weights: (0..KNOWN_CHANNELS).map(|i| 1.0 / (i as f64 + 1.0).powf(0.8)).collect(),
        weight_total: 0.0,
    };
    g.weight_total = g.channel_weights.iter().sum();

    let mut expected = Expected::default();
    for reason in QuarantineReason::ALL {
        expected.quarantined.insert(reason.code(), 0);
    }
    let mut truth: HashMap<String, Session> = HashMap::new();
    let keep_truth = args.truth.is_some();
    let mut recent: Vec<Session> = Vec::with_capacity(1024);

    let mut files = Vec::new();
    let file_count = args.rows.div_ceil(args.rows_per_file.max(1)).max(if dirty { 6 } else { 1 }).max(1);
    let per_file = args.rows.div_ceil(file_count);
    let mut written = 0u64;
    let mut defect_no = 0usize;
    for f in 0..file_count as usize {
        let shape = Shape::for_file(f, dirty);
        let key = session_file_key(f, file_count, shape.extension());
        let count = per_file.min(args.rows - written);
        let mut rows = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let u: f64 = g.rng.random();
            if u < args.dirty {
                let reason = QuarantineReason::ALL[defect_no % 5];
                defect_no += 1;
                *expected.quarantined.get_mut(reason.code()).expect("all codes") += 1;
                rows.push(g.defect(reason));
            } else if u < 2.0 * args.dirty && !recent.is_empty() {
                let i = g.rng.random_range(0..recent.len());
                let mut again = recent.swap_remove(i);
                // A re-delivery may correct the end time; it must win.
                let extra = g.rng.random_range(0..600) * MICROS_PER_SECOND;
                again.end_us = (again.end_us + extra).min(again.start_us + MICROS_PER_DAY);
                expected.duplicates_removed += 1;
                rows.push(Row::Values(g.values(&again)));
                if keep_truth {
                    truth.insert(again.event_id.clone(), again);
                }
            } else {
                let s = g.session();
                rows.push(Row::Values(g.values(&s)));
                if recent.len() < 1024 {
                    recent.push(s.clone());
                } else {
                    let slot = g.rng.random_range(0..recent.len());
                    recent[slot] = s.clone();
                }
                if keep_truth {
                    truth.insert(s.event_id.clone(), s);
                }
            }
        }
        let out = create(
            &args.out.join(&key),
            matches!(shape, Shape::Csv { gzip: true, .. } | Shape::JsonLines { gzip: true, .. }),
        )?;
        match shape {
            Shape::Csv { .. } => write_csv_rows(out, shape, &rows, &mut g.rng)?,
            Shape::JsonLines { .. } => write_json_lines(out, shape, &rows)?,
        }
        written += count;
        files.push(FileEntry { key, records: count });
    }

    let mut unreadable_files = Vec::new();
    if dirty {
        // A gzip file cut short: it fails alone, the rest still loads.
        let key = "viewership/sessions-9999-truncated.csv.gz".to_owned();
        let mut gz = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::fast());
        gz.write_all(HEADER.join(",").as_bytes())?;
        for i in 0..200 {
            gz.write_all(format!("\nlost{i},u000001,,ch001,,2024-01-01T10:00:00Z,,60,stb").as_bytes())?;
        }
        let bytes = gz.finish()?;
        std::fs::write(args.out.join(&key), &bytes[..bytes.len() / 2])?;
        unreadable_files.push(key);
    }

    // Channels: a JSON array; dirty adds a nameless record and a later
    // update that renames one channel (the later delivery wins).
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut channels = Vec::new();
    for i in 0..KNOWN_CHANNELS {
        let id = format!("ch{:03}", i + 1);
        names.insert(id.clone(), channel_name(i));
        channels.push(json!({
            "channel_id": id, "channel_name": channel_name(i), "genre": GENRES[i % GENRES.len()],
            "network": NETWORKS[i % NETWORKS.len()], "language": if i % 7 == 0 { "es" } else { "en" }
        }));
    }
    if dirty {
        channels.push(json!({"channel_id": "ch999", "channel_name": "", "genre": "news"}));
        expected.channels_quarantined += 1;
    }
    let mut out = create(&args.out.join(CHANNELS_KEY), false)?;
    serde_json::to_writer_pretty(&mut out, &channels)?;
    out.flush()?;
    if dirty {
        let renamed = format!("{} HD", channel_name(2));
        let mut out = create(&args.out.join(CHANNEL_UPDATE_KEY), false)?;
        writeln!(out, "{}", json!({"Channel_ID": "ch003", "channel_name": renamed, "genre": "news"}))?;
        out.flush()?;
        names.insert("ch003".into(), renamed);
    }

    let mut out = create(&args.out.join(DEMOGRAPHICS_KEY), false)?;
    writeln!(out, "user_id,age_band,gender,region")?;
    const BANDS: [&str; 6] = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"];
    for u in 1..=g.users {
        writeln!(out, "u{u:06},{},{},region-{}", BANDS[u as usize % 6], ["f", "m", "x"][u as usize % 3], u % 12)?;
    }
    if dirty {
        writeln!(out, ",25-34,f,region-1")?;
        expected.demographics_quarantined += 1;
    }
    out.flush()?;

    expected.rows_read = written;
    expected.rows_accepted = written - expected.quarantined.values().sum::<u64>();
    let sessions = files.iter().map(|f| f.key.clone()).chain(unreadable_files.iter().cloned());
    let objects = generated_objects(sessions, dirty).into_iter().collect();
    let manifest = Manifest {
        seed: args.seed,
        dirty: args.dirty,
        records_written: written,
        files,
        unreadable_files,
        objects,
        expected,
    };
    std::fs::write(args.out.join(MANIFEST_NAME), serde_json::to_vec_pretty(&manifest)?)?;

    if let Some(path) = &args.truth {
        let mut sessions: Vec<_> = truth
            .values()
            .map(|s| json!([s.event_id, format!("u{:06}", s.user), s.channel, s.start_us, s.end_us]))
            .collect();
        sessions.sort_by(|a, b| a[0].as_str().cmp(&b[0].as_str()));
        let body = json!({"sessions": sessions, "channel_names": names});
        std::fs::write(path, serde_json::to_vec(&body)?).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(manifest)
}

/// The key of viewership file `index` (from 0) of `file_count`. Keys sort
/// as the files are written, which carry the later deliveries, as the later
/// key wins: numbers as wide as the last file's, four digits at least.
fn session_file_key(index: usize, file_count: u64, extension: &str) -> String {
    let width = file_count.to_string().len().max(4);
    format!("viewership/sessions-{:0width$}.{extension}", index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_keys_sort_in_the_order_the_files_are_written() {
        assert_eq!(session_file_key(0, 6, "csv"), "viewership/sessions-0001.csv");
        for count in [9_999u64, 12_000, 123_456] {
            let keys: Vec<String> = (0..count as usize).map(|i| session_file_key(i, count, "csv")).collect();
            assert!(keys.windows(2).all(|w| w[0] < w[1]), "{count} files");
        }
    }

    #[test]
    fn an_earlier_manifest_names_the_objects_to_replace() {
        let now = br#"{"files": [{"key": "viewership/sessions-0001.csv", "records": 5}],
                       "objects": ["channels/channels.json", "viewership/sessions-0001.csv"]}"#;
        assert_eq!(
            earlier_objects(now).unwrap().into_iter().collect::<Vec<_>>(),
            ["channels/channels.json", "viewership/sessions-0001.csv"]
        );
        // Written before `objects` was: its session files, and every
        // dimension file a generation may write.
        let before = br#"{"files": [{"key": "viewership/sessions-0002.csv.gz", "records": 5}],
                          "unreadable_files": ["viewership/sessions-9999-truncated.csv.gz"]}"#;
        assert_eq!(
            earlier_objects(before).unwrap().into_iter().collect::<Vec<_>>(),
            [
                CHANNELS_KEY,
                CHANNEL_UPDATE_KEY,
                DEMOGRAPHICS_KEY,
                "viewership/sessions-0002.csv.gz",
                "viewership/sessions-9999-truncated.csv.gz"
            ]
        );
        assert!(earlier_objects(b"not json").is_err());
    }
}
