//! Streaming decoders: CSV, JSON Lines and JSON arrays, plain or gzip.
//!
//! A decoder reads an object once, front to back, and hands each record to a
//! callback as borrowed field values in the source's canonical field order;
//! nothing but the current record is held, so memory does not grow with the
//! object. Records that cannot be framed (wrong column count, bad JSON, bad
//! UTF-8) are handed over as [`RecordBody::Malformed`]; faults that make the
//! rest of the object unreadable (bad gzip, a broken JSON array) end decoding
//! with [`IngestError::Unreadable`].

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::rc::Rc;

use serde_json::Value;

use crate::error::IngestError;
use crate::source::{Compression, InputFormat};

/// One decoded record.
pub struct Record<'a> {
    /// 1-based record number within the object (header excluded).
    pub record_no: u64,
    /// 1-based line on which the record starts (for a JSON array element,
    /// the line on which it ends).
    pub line: u64,
    /// The field values, or why there are none.
    pub body: RecordBody<'a>,
}

/// What a record holds.
pub enum RecordBody<'a> {
    /// Field values in canonical order (`None`: absent or JSON null).
    Fields { values: &'a [Option<&'a str>], original: Original<'a> },
    /// Not a record of the format.
    Malformed { message: String, original: Original<'a> },
}

/// The original text of a record, rendered only when it is quarantined.
#[derive(Clone, Copy)]
pub enum Original<'a> {
    /// A CSV record's fields, re-quoted as one CSV line.
    Csv(&'a csv::ByteRecord),
    /// The record's own text.
    Text(&'a str),
    /// Bytes that are not UTF-8.
    Bytes(&'a [u8]),
}

impl Original<'_> {
    /// The text to keep in the quarantine.
    pub fn render(&self) -> String {
        match self {
            Original::Text(t) => (*t).to_owned(),
            Original::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            Original::Csv(record) => {
                let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
                let _ = w.write_byte_record(record);
                let mut bytes = w.into_inner().unwrap_or_default();
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                }
                String::from_utf8_lossy(&bytes).into_owned()
            }
        }
    }
}

/// What the decoder saw besides records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DecodeSummary {
    /// Columns or keys that are not fields of the source (ignored).
    pub unknown_columns: Vec<String>,
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
    let reader: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
    };
    let reader = BufReader::with_capacity(256 * 1024, reader);
    match format {
        InputFormat::Csv => decode_csv(key, reader, fields, on_record),
        InputFormat::JsonLines => decode_json_lines(key, reader, fields, on_record),
        InputFormat::JsonArray => decode_json_array(key, reader, fields, on_record),
    }
}

/// An object-level fault; `line` 0 means the position is not known (a gzip
/// stream does not say where in the text it broke).
fn unreadable(key: &str, line: u64, message: impl ToString) -> IngestError {
    IngestError::Unreadable { key: key.to_owned(), line: (line > 0).then_some(line), message: message.to_string() }
}

/// The most fields any source has (viewing sessions: 9).
const MAX_FIELDS: usize = 16;

fn normalize_name(name: &str) -> String {
    name.trim_start_matches('\u{feff}').trim().to_ascii_lowercase()
}

fn decode_csv<R: Read, F>(key: &str, reader: R, fields: &[&str], mut on_record: F) -> Result<DecodeSummary, IngestError>
where
    F: FnMut(Record<'_>) -> Result<(), IngestError>,
{
    let breaks = BreakTracker { inner: reader, offset: 0, breaks: VecDeque::new(), newlines_before: 0 };
    let mut csv = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(breaks);
    let csv_error = |e: csv::Error| {
        let line = e.position().map_or(0, |p| p.line());
        unreadable(key, line, e)
    };
    let header = csv.byte_headers().map_err(csv_error)?.clone();
    let names: Vec<String> = header.iter().map(|h| normalize_name(&String::from_utf8_lossy(h))).collect();
    // For each canonical field, the column holding it (first match wins).
    let column_of: Vec<Option<usize>> = fields.iter().map(|f| names.iter().position(|n| n == f)).collect();
    let unknown_columns = names.iter().filter(|n| !fields.contains(&n.as_str()) && !n.is_empty()).cloned().collect();

    let mut record = csv::ByteRecord::new();
    let mut record_no = 0u64;
    loop {
        match csv.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_error(e)),
        }
        record_no += 1;
        let line = record.position().map_or(0, |p| csv.get_mut().line_at(p.byte()));
        let original = Original::Csv(&record);
        if record.len() != header.len() {
            let message = format!("expected {} columns as in the header, found {}", header.len(), record.len());
            on_record(Record { record_no, line, body: RecordBody::Malformed { message, original } })?;
            continue;
        }
        // Bad UTF-8 anywhere, an ignored column included, makes the record
        // malformed.
        let bad_utf8 = record.iter().position(|bytes| std::str::from_utf8(bytes).is_err());
        let mut values: [Option<&str>; MAX_FIELDS] = [None; MAX_FIELDS];
        let body = match bad_utf8 {
            Some(column) => {
                let name = names.get(column).map_or("?", String::as_str);
                RecordBody::Malformed {
                    message: format!("column {} ({name}) is not valid UTF-8", column + 1),
                    original,
                }
            }
            None => {
                for (slot, column) in values.iter_mut().zip(&column_of) {
                    *slot = column.map(|c| std::str::from_utf8(&record[c]).expect("checked above"));
                }
                RecordBody::Fields { values: &values[..fields.len()], original }
            }
        };
        on_record(Record { record_no, line, body })?;
    }
    Ok(DecodeSummary { unknown_columns })
}

/// Remembers where the line breaks are in the bytes the CSV reader takes, so
/// that a record's line can be found from its byte offset. The csv crate's own
/// `Position::line` is taken before the line breaks that precede a record are
/// skipped (the `\n` of the previous record's CRLF, blank lines), so it lags
/// behind by as many lines.
struct BreakTracker<R> {
    inner: R,
    /// Bytes read so far.
    offset: u64,
    /// Offsets and values of the `\r` and `\n` bytes not yet passed by [`line_at`].
    ///
    /// [`line_at`]: BreakTracker::line_at
    breaks: VecDeque<(u64, u8)>,
    /// `\n` bytes before the first entry of `breaks`.
    newlines_before: u64,
}

impl<R: Read> Read for BreakTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for (i, &b) in buf[..n].iter().enumerate() {
            if b == b'\n' || b == b'\r' {
                self.breaks.push_back((self.offset + i as u64, b));
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

impl<R> BreakTracker<R> {
    /// The 1-based line of the first byte at or after `offset` that is not a
    /// line break: where a record read from `offset` starts. Offsets must not
    /// decrease from one call to the next.
    fn line_at(&mut self, offset: u64) -> u64 {
        while let Some(&(at, b)) = self.breaks.front() {
            if at >= offset {
                break;
            }
            self.newlines_before += u64::from(b == b'\n');
            self.breaks.pop_front();
        }
        let mut line = 1 + self.newlines_before;
        let mut next = offset;
        for &(at, b) in &self.breaks {
            if at != next {
                break;
            }
            line += u64::from(b == b'\n');
            next += 1;
        }
        line
    }
}

/// Lower-cased JSON keys mapped to canonical fields; values rendered as text
/// (numbers keep their JSON spelling so `1800` and `"1800"` validate alike).
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

    fn borrowed(&self) -> Vec<Option<&str>> {
        self.values.iter().map(|v| v.as_deref()).collect()
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

fn decode_json_lines<R: BufRead, F>(
    key: &str,
    mut reader: R,
    fields: &[&str],
    mut on_record: F,
) -> Result<DecodeSummary, IngestError>
where
    F: FnMut(Record<'_>) -> Result<(), IngestError>,
{
    let mut buf = Vec::with_capacity(1024);
    let mut line = 0u64;
    let mut record_no = 0u64;
    let mut json = JsonFields::new(fields.len());
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(|e| unreadable(key, line + 1, e))?;
        if n == 0 {
            break;
        }
        line += 1;
        let mut bytes = buf.as_slice();
        if line == 1 {
            bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
        }
        while let Some((last, rest)) = bytes.split_last() {
            if matches!(last, b'\n' | b'\r') { bytes = rest } else { break }
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
                    original: Original::Bytes(bytes),
                };
                on_record(Record { record_no, line, body })?;
                continue;
            }
        };
        let original = Original::Text(text);
        let parsed = serde_json::from_str::<Value>(text)
            .map_err(|e| format!("not valid JSON: {e}"))
            .and_then(|v| json.fill(fields, v));
        match parsed {
            Ok(()) => {
                let values = json.borrowed();
                on_record(Record { record_no, line, body: RecordBody::Fields { values: &values, original } })?;
            }
            Err(message) => on_record(Record { record_no, line, body: RecordBody::Malformed { message, original } })?,
        }
    }
    Ok(DecodeSummary { unknown_columns: json.unknown })
}

/// Counts the lines a JSON array's deserializer has consumed so far; the
/// count is shared with the visitor, which cannot reach the reader itself.
struct LineCounter<R> {
    inner: R,
    lines: Rc<Cell<u64>>,
}

impl<R: Read> Read for LineCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let newlines = buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        self.lines.set(self.lines.get() + newlines);
        Ok(n)
    }
}

struct ArrayVisitor<'f, F> {
    fields: &'f [&'f str],
    on_record: F,
    lines: Rc<Cell<u64>>,
    callback_error: Option<IngestError>,
    json: JsonFields,
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
        while let Some(value) = seq.next_element::<Value>()? {
            record_no += 1;
            let line = self.lines.get() + 1;
            let text = value.to_string();
            let original = Original::Text(&text);
            let result = match self.json.fill(self.fields, value) {
                Ok(()) => {
                    let values = self.json.borrowed();
                    (self.on_record)(Record { record_no, line, body: RecordBody::Fields { values: &values, original } })
                }
                Err(message) => {
                    (self.on_record)(Record { record_no, line, body: RecordBody::Malformed { message, original } })
                }
            };
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
    if reader.fill_buf().map_err(|e| unreadable(key, 1, e))?.starts_with("\u{feff}".as_bytes()) {
        reader.consume(3);
    }
    let lines = Rc::new(Cell::new(0));
    let mut de = serde_json::Deserializer::from_reader(LineCounter { inner: reader, lines: lines.clone() });
    let mut visitor =
        ArrayVisitor { fields, on_record, lines, callback_error: None, json: JsonFields::new(fields.len()) };
    let result = (&mut de).deserialize_seq(&mut visitor);
    if let Some(e) = visitor.callback_error.take() {
        return Err(e);
    }
    result.and_then(|()| de.end()).map_err(|e| unreadable(key, e.line() as u64, e))?;
    Ok(DecodeSummary { unknown_columns: visitor.json.unknown })
}
