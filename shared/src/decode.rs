//! Streaming decoders: CSV, JSON Lines and JSON arrays, plain or gzip.
//!
//! A decoder reads an object once, front to back, and hands each record to a
//! callback as borrowed field values in the source's canonical field order;
//! nothing but the current record is held, so memory does not grow with the
//! object. Records that cannot be framed (wrong column count, bad JSON, bad
//! UTF-8) are handed over as [`RecordBody::Malformed`]; faults that make the
//! rest of the object unreadable (bad gzip, a broken JSON array, a record
//! that runs past [`MAX_RECORD_BYTES`], as after an unclosed quote) end
//! decoding with [`IngestError::Unreadable`].

use std::borrow::Cow;
use std::cell::Cell;
use std::io::{BufRead, BufReader, Read};
use std::rc::Rc;

use serde_json::value::RawValue;

use crate::error::IngestError;
use crate::source::{Compression, InputFormat};
use crate::store::StoreBody;

/// One decoded record.
pub struct Record<'a> {
    /// 1-based record number within the object (header excluded).
    pub record_no: u64,
    /// 1-based line on which the record starts.
    pub line: u64,
    /// The field values, or why there are none.
    pub body: RecordBody<'a>,
}

/// What a record holds.
pub enum RecordBody<'a> {
    /// Field values in canonical order (`None`: absent or JSON null).
    Fields {
        /// One value per canonical field of the source.
        values: &'a [Option<&'a str>],
        /// The record as delivered, kept for quarantine.
        original: Original<'a>,
    },
    /// Not a record of the format.
    Malformed {
        /// What is wrong with it, for the quarantine row.
        message: String,
        /// The canonical field at fault (an index into the decoder's
        /// `fields`), when the fault is in one: bad UTF-8 in its column.
        field: Option<usize>,
        /// The record as delivered, kept for quarantine.
        original: Original<'a>,
    },
}

/// The original text of a record, rendered only when it is quarantined.
#[derive(Clone, Copy)]
pub enum Original<'a> {
    /// The record's own text.
    Text(&'a str),
    /// The record's own bytes, as they were read (a CSV record's quoting
    /// included), which may not be UTF-8.
    Bytes(&'a [u8]),
}

impl Original<'_> {
    /// The text to keep in the quarantine (bytes that are not UTF-8 become
    /// U+FFFD, as the quarantine is JSON text).
    pub fn render(&self) -> String {
        match self {
            Original::Text(t) => (*t).to_owned(),
            Original::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        }
    }
}

/// What the decoder saw besides records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DecodeSummary {
    /// Columns or keys that are not fields of the source (ignored), in the
    /// order first seen, lower-cased, at most [`MAX_UNKNOWN_COLUMNS`].
    pub unknown_columns: Vec<String>,
    /// Whether the object had more distinct unknown columns than the list
    /// holds.
    pub more_unknown_columns: bool,
}

/// How many distinct unknown columns an object's summary names. The names
/// are there to trace an extra column to its files; an object whose records
/// each carry keys of their own (a map written as top-level keys) would
/// otherwise grow the list, and the time to check each name against it,
/// with every record: 200,000 such JSON lines took 86 CPU seconds.
pub const MAX_UNKNOWN_COLUMNS: usize = 64;

/// Unknown column names as they are seen, each once (case aside),
/// lower-cased, at most [`MAX_UNKNOWN_COLUMNS`], and whether there were
/// more: what an object's summary lists, and a run's over its objects.
#[derive(Debug, Default)]
pub struct UnknownColumns {
    names: Vec<String>,
    more: bool,
}

impl UnknownColumns {
    /// Notes one name.
    pub fn note(&mut self, name: &str) {
        if self.names.iter().any(|u| name.eq_ignore_ascii_case(u)) {
            return;
        }
        if self.names.len() < MAX_UNKNOWN_COLUMNS {
            self.names.push(name.to_ascii_lowercase());
        } else {
            self.more = true;
        }
    }

    /// Notes another list's names, and whether it had more.
    pub fn merge(&mut self, names: &[String], more: bool) {
        names.iter().for_each(|name| self.note(name));
        self.more |= more;
    }

    /// The names, and whether there were more than they.
    pub fn into_parts(self) -> (Vec<String>, bool) {
        (self.names, self.more)
    }

    fn into_summary(self) -> DecodeSummary {
        let (unknown_columns, more_unknown_columns) = self.into_parts();
        DecodeSummary { unknown_columns, more_unknown_columns }
    }
}

/// Decodes `reader` as `format`, calling `on_record` for every record.
///
/// `fields` are the source's canonical (lower-case) field names; headers and
/// JSON keys match them case-insensitively and in any order.
pub fn decode<R, F>(
    key: &str,
    reader: R,
    format: InputFormat,
    compression: Compression,
    fields: &[&str],
    on_record: F,
) -> Result<DecodeSummary, IngestError>
where
    R: Read,
    F: FnMut(Record<'_>) -> Result<(), IngestError>,
{
    // An object of no bytes holds no records, whatever its name says: a
    // placeholder, or a file created before it was written. (Read as gzip
    // or as a JSON array, it would be a broken one.)
    let reader: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => {
            let mut compressed = BufReader::with_capacity(32 * 1024, reader);
            if compressed.fill_buf().map_err(|e| read_error(key, 1, e))?.is_empty() {
                return Ok(DecodeSummary::default());
            }
            Box::new(flate2::bufread::MultiGzDecoder::new(compressed))
        }
    };
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let head = reader.fill_buf().map_err(|e| read_error(key, 1, e))?;
    if head.is_empty() {
        return Ok(DecodeSummary::default());
    }
    if let Some(fault) = not_utf8_text(head, compression) {
        return Err(unreadable(key, 0, fault));
    }
    match format {
        InputFormat::Csv => decode_csv(key, reader, fields, on_record),
        InputFormat::JsonLines => decode_json_lines(key, reader, MAX_RECORD_BYTES, fields, on_record),
        InputFormat::JsonArray => decode_json_array(key, reader, fields, on_record),
    }
}

/// Decodes a stream message's data (a Kinesis or Kafka record) in memory,
/// without the read buffer that input of unknown size needs: one JSON
/// object, which may be pretty-printed over several lines, or several
/// objects, one per line, as JSON Lines.
pub fn decode_json_message<F>(
    key: &str,
    data: &[u8],
    fields: &[&str],
    mut on_record: F,
) -> Result<DecodeSummary, IngestError>
where
    F: FnMut(Record<'_>) -> Result<(), IngestError>,
{
    let data = data.strip_prefix("\u{feff}".as_bytes()).unwrap_or(data);
    let body = data.trim_ascii();
    // One line is what the JSON Lines path reads anyway; only data that
    // spans lines is tried as a single value first.
    if let Ok(text) = std::str::from_utf8(body)
        && body.contains(&b'\n')
        && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
    {
        let leading = &data[..data.len() - data.trim_ascii_start().len()];
        let line = 1 + leading.iter().filter(|&&b| b == b'\n').count() as u64;
        let mut unknown = UnknownColumns::default();
        decode_json_record(text, 1, line, fields, &mut unknown, &mut on_record)?;
        return Ok(unknown.into_summary());
    }
    // The message is in memory already, its size bounded by the stream: a
    // long line in it is a record like any other.
    decode_json_lines(key, data, u64::MAX, fields, on_record)
}

/// An object-level fault; `line` 0 means the position is not known (a gzip
/// stream does not say where in the text it broke).
fn unreadable(key: &str, line: u64, message: impl ToString) -> IngestError {
    IngestError::Unreadable { key: key.to_owned(), line: (line > 0).then_some(line), message: message.to_string() }
}

/// An I/O error met while decoding `key`: the store's own failure when its
/// reader raised it (see [`StoreBody`]), else a fault of the object's bytes.
fn read_error(key: &str, line: u64, error: std::io::Error) -> IngestError {
    match StoreBody::store_failure(key, error) {
        Ok(failure) => IngestError::Store(failure),
        Err(error) => unreadable(key, line, error),
    }
}

/// Why an object whose (decompressed) text begins with `head` cannot be
/// the UTF-8 text the contract asks for, when its first bytes say so. Read
/// as UTF-8 anyway, such an object gives rows of noise, each quarantined as
/// malformed; it is better refused as the one fault it has. Neither a gzip
/// header (0x1f 0x8b) nor a UTF-16 byte-order mark (0xff 0xfe, 0xfe 0xff)
/// can begin UTF-8 text.
fn not_utf8_text(head: &[u8], compression: Compression) -> Option<&'static str> {
    if compression == Compression::None && head.starts_with(&[0x1f, 0x8b]) {
        Some(
            "the object is gzip-compressed but its name does not end in .gz, \
             and the contract takes the compression from the name: rename it",
        )
    } else if head.starts_with(&[0xff, 0xfe]) || head.starts_with(&[0xfe, 0xff]) {
        Some("the object is UTF-16 text (it begins with a UTF-16 byte-order mark); the contract's inputs are UTF-8")
    } else {
        None
    }
}

/// The most fields any source has (viewing sessions: 9).
const MAX_FIELDS: usize = 16;

/// The most bytes one record may take. A record of the contract is a few
/// hundred bytes; one that runs on past this is a framing fault (a CSV quote
/// that is never closed makes the rest of the object one field, a JSON Lines
/// file without line breaks one line), and holding it whole would make the
/// decoder's memory grow with the object. Such an object is unreadable, like
/// a truncated gzip: it fails alone and the run's other objects load.
/// A stream message ([`decode_json_message`]) is in memory already, so it has
/// no such limit.
pub const MAX_RECORD_BYTES: u64 = 1 << 20;

/// Why decoding stopped at a record that does not end: `what` names it.
fn record_too_long(what: &str) -> String {
    format!(
        "{what} runs past {} MiB without ending (an unclosed quote, or a value longer than a record may be)",
        MAX_RECORD_BYTES >> 20
    )
}

fn normalize_name(name: &str) -> String {
    name.trim_start_matches('\u{feff}').trim().to_ascii_lowercase()
}

fn decode_csv<R: Read, F>(key: &str, reader: R, fields: &[&str], mut on_record: F) -> Result<DecodeSummary, IngestError>
where
    F: FnMut(Record<'_>) -> Result<(), IngestError>,
{
    let mut csv = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(RecordTracker::new(reader));
    let csv_error = |e: csv::Error| {
        let line = e.position().map_or(0, |p| p.line());
        if e.is_io_error() {
            let csv::ErrorKind::Io(io) = e.into_kind() else { unreachable!("is_io_error") };
            read_error(key, line, io)
        } else {
            unreadable(key, line, e)
        }
    };
    let header = csv.byte_headers().map_err(csv_error)?.clone();
    csv.get_mut().next_record_at = csv.position().byte();
    csv.get_mut().detect_line_ends();
    let names: Vec<String> = header.iter().map(|h| normalize_name(&String::from_utf8_lossy(h))).collect();
    // For each canonical field, the column holding it. A name the header
    // repeats (in any case) is its last column, as a repeated JSON key is its
    // last member.
    let column_of: Vec<Option<usize>> = fields.iter().map(|f| names.iter().rposition(|n| n == f)).collect();
    let mut unknown = UnknownColumns::default();
    for name in names.iter().filter(|n| !fields.contains(&n.as_str()) && !n.is_empty()) {
        unknown.note(name);
    }

    // The record is moved into a `StringRecord` to check its UTF-8 (all of it
    // at once when it is ASCII) and moved back for the next read.
    let mut slot = Some(csv::ByteRecord::new());
    let mut record_no = 0u64;
    loop {
        let record = slot.as_mut().expect("put back after every record");
        match csv.read_byte_record(record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_error(e)),
        }
        record_no += 1;
        let start = record.position().map_or(0, |p| p.byte());
        let end = csv.position().byte();
        csv.get_mut().next_record_at = end;
        let line = csv.get_mut().line_at(start);
        // Bytes before this record are not needed again.
        csv.get_mut().release_before(start);
        let tracker = csv.get_ref();
        if record.len() != header.len() {
            let message = format!("expected {} columns as in the header, found {}", header.len(), record.len());
            let original = Original::Bytes(tracker.record_bytes(start, end));
            on_record(Record { record_no, line, body: RecordBody::Malformed { message, field: None, original } })?;
            continue;
        }
        // Bad UTF-8 anywhere, an ignored column included, makes the record
        // malformed.
        match csv::StringRecord::from_byte_record(slot.take().expect("read above")) {
            Ok(text) => {
                let mut values: [Option<&str>; MAX_FIELDS] = [None; MAX_FIELDS];
                let bytes = text.as_byte_record();
                for (value, column) in values.iter_mut().zip(&column_of) {
                    // SAFETY: a `StringRecord`'s fields are valid UTF-8 (checked
                    // by `from_byte_record`). Not `&text[c]`, whose debug
                    // assertion checks each field again in dev builds.
                    *value = column.map(|c| unsafe { std::str::from_utf8_unchecked(&bytes[c]) });
                }
                let original = Original::Bytes(tracker.record_bytes(start, end));
                let result = on_record(Record {
                    record_no,
                    line,
                    body: RecordBody::Fields { values: &values[..fields.len()], original },
                });
                slot = Some(text.into_byte_record());
                result?;
            }
            Err(e) => {
                let column = e.utf8_error().field();
                slot = Some(e.into_byte_record());
                let name = names.get(column).map_or("?", String::as_str);
                let message = format!("column {} ({name}) is not valid UTF-8", column + 1);
                let original = Original::Bytes(tracker.record_bytes(start, end));
                let field = column_of.iter().position(|c| *c == Some(column));
                on_record(Record { record_no, line, body: RecordBody::Malformed { message, field, original } })?;
            }
        }
    }
    Ok(unknown.into_summary())
}

/// Keeps the bytes the CSV reader takes, from the current record on, for two
/// things the csv crate does not give: a record's own text (it unquotes), and
/// the line a record starts on. The crate's own `Position::line` is taken
/// before the line breaks that precede a record are skipped (the `\n` of the
/// previous record's CRLF, blank lines), so it lags behind by as many lines.
struct RecordTracker<R> {
    inner: R,
    /// The bytes read from `retained_from` on.
    retained: Vec<u8>,
    /// The offset of `retained[0]`.
    retained_from: u64,
    /// How many `\n` bytes come before `counted_to`.
    newlines: u64,
    /// How far [`line_at`] has counted (never past a byte still retained).
    ///
    /// [`line_at`]: RecordTracker::line_at
    counted_to: u64,
    /// Where the record the reader is on starts (the end of the last one).
    next_record_at: u64,
    /// Whether a lone `\r` ends a line (see [`RecordTracker::detect_line_ends`]).
    cr_lines: bool,
    /// Whether `cr_lines` is set yet.
    line_ends_known: bool,
}

impl<R: Read> Read for RecordTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // The csv reader reads a few KiB at a time, so a record that does not
        // end is stopped before it holds much more than the limit.
        let read_to = self.retained_from + self.retained.len() as u64;
        if read_to.saturating_sub(self.next_record_at) > MAX_RECORD_BYTES {
            self.pass_line_breaks();
        }
        if read_to.saturating_sub(self.next_record_at) > MAX_RECORD_BYTES {
            let line = self.line_at(self.next_record_at);
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                record_too_long(&format!("the record from line {line}")),
            ));
        }
        let n = self.inner.read(buf)?;
        self.retained.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// How many bytes the tracker may hold before the current record before it
/// drops them: dropping is a copy of what follows, so it is done in bulk.
const RETAIN_SLACK: u64 = 256 * 1024;

fn is_line_break(b: &u8) -> bool {
    *b == b'\n' || *b == b'\r'
}

impl<R> RecordTracker<R> {
    fn new(inner: R) -> Self {
        RecordTracker {
            inner,
            retained: Vec::new(),
            retained_from: 0,
            newlines: 0,
            counted_to: 0,
            next_record_at: 0,
            cr_lines: false,
            line_ends_known: false,
        }
    }

    /// The retained bytes from offset `from` on, up to offset `to` if given.
    fn bytes(&self, from: u64, to: Option<u64>) -> &[u8] {
        let at = |offset: u64| (offset.saturating_sub(self.retained_from) as usize).min(self.retained.len());
        let from = at(from);
        &self.retained[from..to.map_or(self.retained.len(), at).max(from)]
    }

    /// Lets go of the bytes before `offset` (no later record starts there)
    /// that the line count has passed.
    fn release_before(&mut self, offset: u64) {
        let offset = offset.min(self.counted_to);
        if offset >= self.retained_from + RETAIN_SLACK {
            let n = ((offset - self.retained_from) as usize).min(self.retained.len());
            self.retained.drain(..n);
            self.retained_from += n as u64;
        }
    }

    /// The text of the record read from `start` to `end`, without the line
    /// breaks around it: those before it are the previous record's CRLF or
    /// blank lines, and one after it is its terminator (neither an unquoted
    /// field nor a closing quote can end in a line break).
    fn record_bytes(&self, start: u64, end: u64) -> &[u8] {
        let bytes = self.bytes(start, Some(end));
        let first = bytes.iter().position(|b| !is_line_break(b)).unwrap_or(bytes.len());
        let last = bytes.iter().rposition(|b| !is_line_break(b)).map_or(first, |at| at + 1);
        &bytes[first..last.max(first)]
    }

    /// Passes the line breaks read since the last record: blank lines, which
    /// belong to no record (the csv reader skips them). They are counted for
    /// line numbers and let go, so that a run of them neither counts toward
    /// the next record's limit nor stays in memory. The last one read stays:
    /// it may be the `\r` of a CRLF whose `\n` is not read yet.
    fn pass_line_breaks(&mut self) {
        self.detect_line_ends();
        let ahead = self.bytes(self.next_record_at, None);
        let run = ahead.iter().take_while(|b| is_line_break(b)).count();
        let pass = if run == ahead.len() { run.saturating_sub(1) } else { run };
        if pass > 0 {
            let to = self.next_record_at + pass as u64;
            self.line_at(to);
            self.next_record_at = to;
            self.release_before(to);
        }
    }

    /// The 1-based line of the first byte at or after `offset` that is not a
    /// line break: where a record read from `offset` starts. Offsets must not
    /// decrease from one call to the next, except back to the start of blank
    /// lines that [`RecordTracker::pass_line_breaks`] has passed: those are
    /// counted from where it stopped.
    fn line_at(&mut self, offset: u64) -> u64 {
        self.detect_line_ends();
        let offset = offset.max(self.counted_to);
        let next = self.bytes(offset, None).first().copied();
        self.newlines += line_breaks(self.bytes(self.counted_to, Some(offset)), next, self.cr_lines);
        self.counted_to = self.counted_to.max(offset);
        let ahead = self.bytes(offset, None);
        let run = ahead.iter().take_while(|b| is_line_break(b)).count();
        1 + self.newlines + line_breaks(&ahead[..run], ahead.get(run).copied(), self.cr_lines)
    }

    /// Sets how lines end from the first line break read: a file whose first
    /// line ends in a lone `\r` (as old Mac files do) has its lines counted
    /// at each `\r`, which the csv reader also takes as a record end; any
    /// other file at each `\n`, so a `\r` inside a quoted field of a LF or
    /// CRLF file is not a line, as in an editor.
    /// Set once: by the header's end, or before it by a run of blank lines
    /// that [`RecordTracker::pass_line_breaks`] passes, which it must count.
    fn detect_line_ends(&mut self) {
        if self.line_ends_known {
            return;
        }
        let first = self.retained.iter().position(is_line_break);
        // A `\r` whose next byte is not read yet (the header ending where a
        // read did) is decided by that byte, at the next call: by the next
        // record's line. One that no byte follows, at the end of the file,
        // stays undecided, as CRLF, the contract's: only a file with more
        // after a lone `\r` has CR lines.
        if first.is_some_and(|i| i + 1 == self.retained.len() && self.retained[i] == b'\r') {
            return;
        }
        self.line_ends_known = true;
        self.cr_lines = first.is_some_and(|i| self.retained[i] == b'\r' && self.retained[i + 1] != b'\n');
    }
}

/// The line breaks in `bytes`, followed by `next`: each `\n`, and with
/// `cr_lines` also each `\r` that no `\n` follows.
fn line_breaks(bytes: &[u8], next: Option<u8>, cr_lines: bool) -> u64 {
    let lf = bytes.iter().filter(|&&b| b == b'\n').count();
    if !cr_lines {
        return lf as u64;
    }
    let cr = bytes.iter().filter(|&&b| b == b'\r').count();
    // A `\r` followed by `\n` is one break with it.
    let crlf = bytes.windows(2).filter(|w| w == b"\r\n").count()
        + usize::from(bytes.last() == Some(&b'\r') && next == Some(b'\n'));
    (lf + cr - crlf) as u64
}

/// One JSON record (a JSON Lines line, or an element of a JSON array),
/// parsed without building a `Value` tree: the object's members with their
/// text borrowed from the record where it has no escapes (see
/// [`member_text`]), or the kind of value that is not an object.
enum JsonLine<'a> {
    Object(Vec<(Cow<'a, str>, Option<Cow<'a, str>>)>),
    Other(&'static str),
}

impl<'de> serde::Deserialize<'de> for JsonLine<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonLineVisitor)
    }
}

struct JsonLineVisitor;

impl<'de> serde::de::Visitor<'de> for JsonLineVisitor {
    type Value = JsonLine<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::with_capacity(MAX_FIELDS);
        while let Some(JsonText(key)) = map.next_key()? {
            let value = member_text(map.next_value::<&'de RawValue>()?)?;
            entries.push((key, value));
        }
        Ok(JsonLine::Object(entries))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(JsonLine::Other("an array"))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(JsonLine::Other("null"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(JsonLine::Other("a boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(JsonLine::Other("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(JsonLine::Other("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(JsonLine::Other("a number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(JsonLine::Other("a string"))
    }
}

/// A JSON string, borrowed when it has no escapes.
struct JsonText<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for JsonText<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = JsonText<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonText(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonText(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonText(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// A member's value as field text: `None` for null, a string's contents,
/// and anything else exactly as the record spells it.
///
/// A number is kept as written, as a CSV field is: `1800` and `"1800"`
/// validate alike, `6.0e1` is reported as `6.0e1`, and an integer too large
/// for 64 bits keeps its digits (read as an `f64`, two such ids 1 apart
/// would be the same text, and so the same session).
fn member_text<E: serde::de::Error>(raw: &RawValue) -> Result<Option<Cow<'_, str>>, E> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'n') => Ok(None),
        Some(b'"') => match text[1..text.len() - 1].contains('\\') {
            false => Ok(Some(Cow::Borrowed(&text[1..text.len() - 1]))),
            true => serde_json::from_str::<String>(text).map(|s| Some(Cow::Owned(s))).map_err(|e| {
                // The position is the record's, which the caller's error adds.
                let message = e.to_string();
                E::custom(message.rsplit_once(" at line ").map_or(message.as_str(), |(m, _)| m))
            }),
        },
        _ => Ok(Some(Cow::Borrowed(text))),
    }
}

/// Fills `values` from an object's members as a `serde_json::Map` would
/// hold them: a repeated key keeps its last value, keys are taken in byte
/// order, names match case-insensitively after trimming, and the first
/// non-null member of a field wins.
fn fill_from_entries<'a>(
    fields: &[&str],
    entries: &'a mut [(Cow<'_, str>, Option<Cow<'_, str>>)],
    values: &mut [Option<&'a str>; MAX_FIELDS],
    unknown: &mut UnknownColumns,
) {
    // Stable: members with the same key stay in document order. (Producers
    // often write keys sorted already; checking is cheaper than sorting.)
    if !entries.is_sorted_by(|a, b| a.0 <= b.0) {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let entries = &*entries;
    for (i, (key, value)) in entries.iter().enumerate() {
        if entries.get(i + 1).is_some_and(|(next, _)| next == key) {
            continue; // a later member with the same key replaces this one
        }
        let name = crate::text::trim(key);
        // An exact match is the only possible one when there is one (the
        // fields are distinct and lower-case).
        let field =
            fields.iter().position(|f| *f == name).or_else(|| fields.iter().position(|f| name.eq_ignore_ascii_case(f)));
        match field {
            Some(f) if values[f].is_none() => values[f] = value.as_deref(),
            Some(_) => {}
            None => unknown.note(name),
        }
    }
}

/// Hands one JSON record's text (a line, or an array element) to
/// `on_record`: its fields if it is an object, else why it is malformed.
fn decode_json_record<F>(
    text: &str,
    record_no: u64,
    line: u64,
    fields: &[&str],
    unknown: &mut UnknownColumns,
    on_record: &mut F,
) -> Result<(), IngestError>
where
    F: FnMut(Record<'_>) -> Result<(), IngestError>,
{
    let original = Original::Text(text);
    match serde_json::from_str::<JsonLine<'_>>(text) {
        Ok(JsonLine::Object(mut entries)) => {
            let mut values: [Option<&str>; MAX_FIELDS] = [None; MAX_FIELDS];
            fill_from_entries(fields, &mut entries, &mut values, unknown);
            on_record(Record {
                record_no,
                line,
                body: RecordBody::Fields { values: &values[..fields.len()], original },
            })
        }
        Ok(JsonLine::Other(kind)) => {
            let message = format!("expected a JSON object, found {kind}");
            on_record(Record { record_no, line, body: RecordBody::Malformed { message, field: None, original } })
        }
        Err(e) => {
            let message = json_error(&e);
            on_record(Record { record_no, line, body: RecordBody::Malformed { message, field: None, original } })
        }
    }
}

/// serde_json's reason with its position made the record's: its "at line 1
/// column 2" counts within the record's text, and read beside the file's
/// line number the record is reported at, it would name another line.
fn json_error(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let reason = message.rsplit_once(" at line ").map_or(message.as_str(), |(reason, _)| reason);
    match e.line() {
        0 | 1 => format!("not valid JSON: {reason} at column {} of the record", e.column()),
        line => format!("not valid JSON: {reason} at line {line}, column {} of the record", e.column()),
    }
}

/// Decodes JSON Lines; a line longer than `max_line` bytes makes the object
/// unreadable (see [`MAX_RECORD_BYTES`]).
fn decode_json_lines<R: BufRead, F>(
    key: &str,
    mut reader: R,
    max_line: u64,
    fields: &[&str],
    mut on_record: F,
) -> Result<DecodeSummary, IngestError>
where
    F: FnMut(Record<'_>) -> Result<(), IngestError>,
{
    // The limit is on a record's text: a line also holds its line break, a
    // CRLF's `\r` and, on the first line, a byte-order mark.
    const LINE_OVERHEAD: u64 = 5;
    let window = max_line.saturating_add(LINE_OVERHEAD);
    let mut buf = Vec::with_capacity(1024);
    let mut line = 0u64;
    let mut record_no = 0u64;
    let mut unknown = UnknownColumns::default();
    loop {
        buf.clear();
        let n = match (&mut reader).take(window).read_until(b'\n', &mut buf) {
            Ok(n) => n,
            // A fault met before any byte of a next line (a gzip trailer's
            // checksum, a stream cut right after a line break) is in no
            // line: it is after the last one read.
            Err(e) if buf.is_empty() => {
                return Err(match read_error(key, 0, e) {
                    IngestError::Unreadable { key, message, .. } if line > 0 => {
                        IngestError::Unreadable { key, line: None, message: format!("after line {line}: {message}") }
                    }
                    other => other,
                });
            }
            Err(e) => return Err(read_error(key, line + 1, e)),
        };
        if n == 0 {
            break;
        }
        line += 1;
        // A line that fills the window goes on past it: read to its end,
        // without holding it. If all that is left is line ends (the window
        // ended in a run of `\r`s), the line is whole.
        let rest = if buf.last() != Some(&b'\n') && n as u64 == window {
            pass_rest_of_line(&mut reader).map_err(|e| read_error(key, line, e))?
        } else {
            RestOfLine { bytes: 0, blank: true, line_ends_only: true }
        };
        let mut unstripped = buf.as_slice();
        if line == 1 {
            unstripped = unstripped.strip_prefix("\u{feff}".as_bytes()).unwrap_or(unstripped);
        }
        let mut bytes = unstripped;
        while let Some((last, rest)) = bytes.split_last() {
            if matches!(last, b'\n' | b'\r') { bytes = rest } else { break }
        }
        if bytes.len() as u64 > max_line || !rest.line_ends_only {
            // A line break always ends a JSON Lines record (a JSON string
            // cannot hold one), so the rest of the line is passed over without
            // being held, and the line is a malformed record like any other,
            // unless it is blank.
            if rest.blank && unstripped.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            record_no += 1;
            let text = if rest.line_ends_only { bytes } else { unstripped };
            let message = format!(
                "the line is {} bytes long, past the {limit} MiB a record may take (its first {limit} MiB is kept here)",
                text.len() as u64 + rest.bytes,
                limit = max_line >> 20
            );
            let original = Original::Bytes(&text[..text.len().min(max_line as usize)]);
            on_record(Record { record_no, line, body: RecordBody::Malformed { message, field: None, original } })?;
            continue;
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        record_no += 1;
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let body = RecordBody::Malformed {
                    message: format!("not valid UTF-8: {e}"),
                    field: None,
                    original: Original::Bytes(bytes),
                };
                on_record(Record { record_no, line, body })?;
                continue;
            }
        };
        decode_json_record(text, record_no, line, fields, &mut unknown, &mut on_record)?;
    }
    Ok(unknown.into_summary())
}

/// Reads past the rest of a line, its line break included, without holding
/// it, and says what came before the line break (or the end).
fn pass_rest_of_line(reader: &mut impl BufRead) -> std::io::Result<RestOfLine> {
    let (mut passed, mut blank, mut line_ends_only, mut cr_last) = (0u64, true, true, false);
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(RestOfLine { bytes: passed, blank, line_ends_only });
        }
        let (part, ended) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (&available[..at], true),
            None => (available, false),
        };
        blank &= part.iter().all(u8::is_ascii_whitespace);
        line_ends_only &= part.iter().all(|&b| b == b'\r');
        passed += part.len() as u64;
        cr_last = part.last().map_or(cr_last, |b| *b == b'\r');
        let consumed = part.len() + usize::from(ended);
        reader.consume(consumed);
        if ended {
            return Ok(RestOfLine { bytes: passed - u64::from(cr_last), blank, line_ends_only });
        }
    }
}

/// What [`pass_rest_of_line`] passed over.
struct RestOfLine {
    /// Its length, a CRLF's `\r` not counted.
    bytes: u64,
    /// Whether it was all whitespace.
    blank: bool,
    /// Whether it was all `\r`s: the line ended where it began.
    line_ends_only: bool,
}

/// How far a JSON array's deserializer has read, shared between the reader
/// that counts it and the visitor, which cannot reach the reader itself.
#[derive(Default)]
struct ArrayProgress {
    /// Lines consumed so far.
    lines: Cell<u64>,
    /// Bytes consumed since the visitor last took an element.
    since_element: Cell<u64>,
    /// The line on which the bytes since the last element began.
    since_line: Cell<u64>,
    /// The last byte consumed.
    last_byte: Cell<u8>,
}

impl ArrayProgress {
    fn element_taken(&self) {
        self.since_element.set(0);
        self.since_line.set(self.lines.get() + 1);
    }
}

struct LineCounter<R> {
    inner: R,
    progress: Rc<ArrayProgress>,
}

impl<R: Read> Read for LineCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let p = &self.progress;
        p.lines.set(p.lines.get() + buf[..n].iter().filter(|&&b| b == b'\n').count() as u64);
        p.since_element.set(p.since_element.get() + n as u64);
        if let Some(&last) = buf[..n].last() {
            p.last_byte.set(last);
        }
        if p.since_element.get() > MAX_RECORD_BYTES {
            let message = record_too_long(&format!("the element from line {}", p.since_line.get().max(1)));
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, message));
        }
        Ok(n)
    }
}

struct ArrayVisitor<'f, F> {
    fields: &'f [&'f str],
    on_record: F,
    progress: Rc<ArrayProgress>,
    callback_error: Option<IngestError>,
    unknown: UnknownColumns,
}

impl<'de, F> serde::de::Visitor<'de> for &mut ArrayVisitor<'_, F>
where
    F: FnMut(Record<'_>) -> Result<(), IngestError>,
{
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of objects")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut record_no = 0;
        // Each element is taken as its own text, then decoded like a JSON
        // Lines record, so that its quarantined original is what was written.
        while let Some(element) = seq.next_element::<Box<RawValue>>()? {
            record_no += 1;
            let text = element.get();
            // The deserializer has read up to the element's last byte, and
            // past a number's by one (a number ends where something else
            // begins; it reads a byte at a time), which may be a line break.
            let is_number = text.starts_with(|c: char| c == '-' || c.is_ascii_digit());
            let peeked_break = is_number && self.progress.last_byte.get() == b'\n';
            let line = self.progress.lines.get() + 1
                - text.bytes().filter(|&b| b == b'\n').count() as u64
                - u64::from(peeked_break);
            self.progress.element_taken();
            let result = decode_json_record(text, record_no, line, self.fields, &mut self.unknown, &mut self.on_record);
            if let Err(e) = result {
                self.callback_error = Some(e);
                return Err(serde::de::Error::custom("stopped by the record handler"));
            }
        }
        Ok(())
    }
}

fn decode_json_array<R: BufRead, F>(
    key: &str,
    mut reader: R,
    fields: &[&str],
    on_record: F,
) -> Result<DecodeSummary, IngestError>
where
    F: FnMut(Record<'_>) -> Result<(), IngestError>,
{
    use serde::de::Deserializer;

    // A BOM is not JSON; skip it like the CSV reader does.
    if reader.fill_buf().map_err(|e| read_error(key, 1, e))?.starts_with("\u{feff}".as_bytes()) {
        reader.consume(3);
    }
    let progress = Rc::new(ArrayProgress::default());
    let mut de = serde_json::Deserializer::from_reader(LineCounter { inner: reader, progress: progress.clone() });
    let mut visitor =
        ArrayVisitor { fields, on_record, progress, callback_error: None, unknown: UnknownColumns::default() };
    let result = (&mut de).deserialize_seq(&mut visitor);
    if let Some(e) = visitor.callback_error.take() {
        return Err(e);
    }
    result.and_then(|()| de.end()).map_err(|e| {
        let line = e.line() as u64;
        if e.is_io() { read_error(key, line, e.into()) } else { unreadable(key, line, e) }
    })?;
    Ok(visitor.unknown.into_summary())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use serde_json::Value;

    const FIELDS: [&str; 4] = ["event_id", "user_id", "start_time", "duration_seconds"];

    /// The reference for [`fill_from_entries`]: a `serde_json::Value` object's
    /// members mapped to canonical fields, values rendered as text.
    struct JsonFields {
        values: Vec<Option<String>>,
        unknown: Vec<String>,
    }

    impl JsonFields {
        fn new(width: usize) -> Self {
            JsonFields { values: vec![None; width], unknown: Vec::new() }
        }

        /// Fills the values from `object`, or says why it is not a record.
        fn fill(&mut self, fields: &[&str], value: Value) -> Result<(), String> {
            let Value::Object(map) = value else {
                return Err(format!("expected a JSON object, found {}", json_kind(&value)));
            };
            self.values.iter_mut().for_each(|v| *v = None);
            for (k, v) in map {
                let name = k.trim().to_ascii_lowercase();
                match fields.iter().position(|f| *f == name) {
                    Some(i) if self.values[i].is_none() => {
                        self.values[i] = match v {
                            Value::Null => None,
                            Value::String(s) => Some(s),
                            Value::Number(n) => Some(n.to_string()),
                            Value::Bool(b) => Some(b.to_string()),
                            other => Some(other.to_string()),
                        }
                    }
                    Some(_) => {}
                    None => {
                        if !self.unknown.contains(&name) {
                            self.unknown.push(name);
                        }
                    }
                }
            }
            Ok(())
        }
    }

    fn json_kind(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }

    proptest! {
        #[test]
        fn the_line_at_an_offset_is_counted_like_a_scan_of_the_whole_text(
            bytes in prop::collection::vec(prop::sample::select(vec![b'a', b'\n', b'\r', 0x8a, 0x00]), 0..60),
            mut offsets in prop::collection::vec(0u64..64, 0..8),
        ) {
            offsets.sort_unstable();
            let mut tracker = RecordTracker::new(bytes.as_slice());
            std::io::copy(&mut tracker, &mut std::io::sink()).unwrap();
            tracker.detect_line_ends();
            // A file whose first line break is a lone `\r` counts lines at
            // each `\n` and each lone `\r`; any other at each `\n`.
            let lone_cr = |i: usize| bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n');
            let cr_file = bytes
                .iter()
                .position(is_line_break)
                .is_some_and(|i| bytes[i] == b'\r' && bytes.get(i + 1).is_some_and(|b| *b != b'\n'));
            for offset in offsets {
                let at = (offset as usize).min(bytes.len());
                let start = at + bytes[at..].iter().take_while(|b| is_line_break(b)).count();
                let breaks = (0..start).filter(|&i| bytes[i] == b'\n' || (cr_file && lone_cr(i))).count();
                let expected = 1 + breaks as u64;
                prop_assert_eq!(tracker.line_at(offset), expected, "offset {}", offset);
            }
        }
    }

    /// What a line decodes to: the field values, or the malformed message.
    fn by_value(line: &str, unknown: &mut JsonFields) -> Result<Vec<Option<String>>, String> {
        let value = serde_json::from_str::<Value>(line).map_err(|e| format!("not valid JSON: {e}"))?;
        unknown.fill(&FIELDS, value)?;
        Ok(unknown.values.clone())
    }

    fn by_members(line: &str, unknown: &mut UnknownColumns) -> Result<Vec<Option<String>>, String> {
        match serde_json::from_str::<JsonLine<'_>>(line).map_err(|e| format!("not valid JSON: {e}"))? {
            JsonLine::Object(mut entries) => {
                let mut values = [None; MAX_FIELDS];
                fill_from_entries(&FIELDS, &mut entries, &mut values, unknown);
                Ok(values[..FIELDS.len()].iter().map(|v| v.map(str::to_owned)).collect())
            }
            JsonLine::Other(kind) => Err(format!("expected a JSON object, found {kind}")),
        }
    }

    /// `text` with a number, array or object in `Value`'s spelling: the
    /// members keep what the record wrote, the reference re-renders it.
    fn respelled(text: String) -> String {
        match serde_json::from_str::<Value>(&text) {
            Ok(v @ (Value::Number(_) | Value::Array(_) | Value::Object(_))) => v.to_string(),
            _ => text,
        }
    }

    fn assert_same(lines: &[String]) {
        let mut old = JsonFields::new(FIELDS.len());
        let mut unknown = UnknownColumns::default();
        // An error in a string's escapes is placed at the string's end,
        // where the reference places it at the escape: compare the lines.
        let respell = |r: Result<Vec<Option<String>>, String>| {
            r.map(|v| v.into_iter().map(|t| t.map(respelled)).collect::<Vec<_>>())
                .map_err(|e| e.rsplit_once(" column ").map_or(e.clone(), |(m, _)| m.to_owned()))
        };
        for line in lines {
            assert_eq!(respell(by_members(line, &mut unknown)), respell(by_value(line, &mut old)), "{line}");
        }
        assert_eq!(unknown.names, old.unknown);
    }

    #[test]
    fn a_json_error_counts_its_position_within_the_record() {
        let error = |text: &str| match serde_json::from_str::<JsonLine<'_>>(text) {
            Err(e) => json_error(&e),
            Ok(_) => panic!("{text} parsed"),
        };
        assert_eq!(error("{not json"), "not valid JSON: key must be a string at column 2 of the record");
        assert_eq!(
            error("{\n  \"a\": 1,\n  oops\n}"),
            "not valid JSON: key must be a string at line 3, column 3 of the record"
        );
    }

    #[test]
    fn members_keep_the_spelling_of_what_is_not_a_string() {
        let line = r#"{"event_id": 123456789012345678901234567891, "user_id": [1, {"b": 2}], "start_time": 1e999, "duration_seconds": 6.0e1}"#;
        assert_eq!(
            by_members(line, &mut UnknownColumns::default()).unwrap(),
            ["123456789012345678901234567891", "[1, {\"b\": 2}]", "1e999", "6.0e1"].map(|t| Some(t.to_owned()))
        );
        let line = r#"{"event_id": "e\u0031", "user_id": null, "start_time": -0, "duration_seconds": true}"#;
        assert_eq!(
            by_members(line, &mut UnknownColumns::default()).unwrap(),
            [Some("e1"), None, Some("-0"), Some("true")].map(|t| t.map(str::to_owned))
        );
    }

    #[test]
    fn member_parsing_matches_value_parsing() {
        let lines = [
            r#"{"event_id":"e1","user_id":"u1","start_time":1704103200000,"duration_seconds":"60"}"#,
            r#"{"EVENT_ID":"a","event_id":"b"," Event_Id ":"c"}"#,
            r#"{"event_id":null,"Event_ID":"x"}"#,
            r#"{"event_id":"first","event_id":"last"}"#,
            r#"{"event_id":"e\u0031\n","user_id":"\"q\"","x":1,"X":2,"Ünknown":3}"#,
            r#"{"duration_seconds":1.5e3,"start_time":-0.0,"user_id":true,"event_id":[1,{"b":2,"a":null}]}"#,
            r#"{"duration_seconds":18446744073709551615,"start_time":-9223372036854775808,"event_id":{"z":1,"a":[]}}"#,
            r#"{"duration_seconds":1E2,"start_time":0.1,"user_id":1e-7,"event_id":123456789012345678901234567890}"#,
            r#"{}"#,
            r#"  {"event_id" : "spaced"}  "#,
            r#"[1,2,{"a":3}]"#,
            r#"null"#,
            r#"true"#,
            r#""text""#,
            r#"12.5"#,
            r#"{"event_id":"e1"} trailing"#,
            r#"{"event_id":"e1","#,
            r#"[1,2"#,
            r#"{"a":"\ud800"}"#,
            r#"not json"#,
            r#"{"event_id":"dup","event_id":null}"#,
        ];
        assert_same(&lines.map(String::from));
    }

    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "event_id",
            "EVENT_ID",
            "Event_Id",
            " event_id",
            "user_id",
            "User_ID",
            "start_time",
            "duration_seconds",
            "other",
            "OTHER",
            "x",
            "ü",
        ])
        .prop_map(|k| serde_json::to_string(k).unwrap())
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
            "[a-z0-9 \"\\\\é]{0,8}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just(r#"[1,"two",{"b":null,"a":1.50}]"#.to_owned()),
            Just(r#"{"k":"v","a":[true]}"#.to_owned()),
        ]
    }

    proptest! {
        #[test]
        fn member_parsing_matches_value_parsing_on_any_object(
            objects in prop::collection::vec(prop::collection::vec((key(), value()), 0..8), 1..6)
        ) {
            let lines: Vec<String> = objects
                .iter()
                .map(|members| {
                    let body: Vec<String> = members.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    format!("{{{}}}", body.join(","))
                })
                .collect();
            assert_same(&lines);
        }
    }
}
