//! The streaming decoders against the data contract (§1, §2): RFC 4180 CSV,
//! JSON Lines, JSON arrays, plain or gzip, fed real bytes.

use std::cell::Cell;
use std::io::{Read, Write};
use std::rc::Rc;

use tvetl_core::decode::{
    DecodeSummary, MAX_RECORD_BYTES, MAX_UNKNOWN_COLUMNS, RecordBody, decode, decode_json_message,
};
use tvetl_core::error::IngestError;
use tvetl_core::validate::SESSION_FIELDS;
use tvetl_core::{Compression, InputFormat};

/// A decoded record, owned.
#[derive(Debug, Clone, PartialEq)]
struct Rec {
    record_no: u64,
    line: u64,
    /// `Ok(values in SESSION_FIELDS order)` or `Err(malformed message)`.
    body: Result<Vec<Option<String>>, String>,
    /// `Original::render()`.
    original: String,
    /// The field a malformed record names as at fault.
    field: Option<usize>,
}

impl Rec {
    fn values(&self) -> &[Option<String>] {
        match &self.body {
            Ok(v) => v,
            Err(m) => panic!("record {} is malformed ({m}), expected fields", self.record_no),
        }
    }

    /// The value of a canonical field.
    fn get(&self, field: &str) -> Option<&str> {
        let i = SESSION_FIELDS.iter().position(|f| *f == field).unwrap_or_else(|| panic!("no field {field}"));
        self.values()[i].as_deref()
    }

    fn malformed(&self) -> &str {
        match &self.body {
            Err(m) => m,
            Ok(v) => panic!("record {} has fields {v:?}, expected malformed", self.record_no),
        }
    }

    fn is_malformed(&self) -> bool {
        self.body.is_err()
    }
}

fn run(bytes: &[u8], format: InputFormat, compression: Compression) -> (Vec<Rec>, Result<DecodeSummary, IngestError>) {
    let mut out = Vec::new();
    let result = decode("viewership/test", bytes, format, compression, &SESSION_FIELDS, |record| {
        let (body, original, field) = match record.body {
            RecordBody::Fields { values, original } => {
                assert_eq!(values.len(), SESSION_FIELDS.len(), "one value per canonical field");
                (Ok(values.iter().map(|v| v.map(str::to_owned)).collect()), original.render(), None)
            }
            RecordBody::Malformed { message, field, original } => (Err(message), original.render(), field),
        };
        out.push(Rec { record_no: record.record_no, line: record.line, body, original, field });
        Ok(())
    });
    (out, result)
}

/// Decodes and expects success.
fn ok(bytes: &[u8], format: InputFormat, compression: Compression) -> (Vec<Rec>, DecodeSummary) {
    let (records, result) = run(bytes, format, compression);
    match result {
        Ok(summary) => (records, summary),
        Err(e) => panic!("decoding failed: {e}"),
    }
}

fn csv(bytes: &[u8]) -> (Vec<Rec>, DecodeSummary) {
    ok(bytes, InputFormat::Csv, Compression::None)
}

fn jsonl(bytes: &[u8]) -> (Vec<Rec>, DecodeSummary) {
    ok(bytes, InputFormat::JsonLines, Compression::None)
}

fn json_array(bytes: &[u8]) -> (Vec<Rec>, DecodeSummary) {
    ok(bytes, InputFormat::JsonArray, Compression::None)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn assert_unreadable(result: Result<DecodeSummary, IngestError>) -> IngestError {
    match result {
        Err(e @ IngestError::Unreadable { .. }) => {
            assert!(e.is_bad_object(), "an unreadable object is a bad object");
            assert!(!e.is_retryable());
            let IngestError::Unreadable { key, .. } = &e else { unreachable!() };
            assert_eq!(key, "viewership/test");
            e
        }
        Err(e) => panic!("expected Unreadable, got {e:?}"),
        Ok(summary) => panic!("expected Unreadable, decoding succeeded ({summary:?})"),
    }
}

const HEADER: &str = "event_id,user_id,device_id,channel_id,program_id,start_time,end_time,duration_seconds,platform";

fn record_nos(records: &[Rec]) -> Vec<u64> {
    records.iter().map(|r| r.record_no).collect()
}

fn lines(records: &[Rec]) -> Vec<u64> {
    records.iter().map(|r| r.line).collect()
}

// ---------------------------------------------------------------- CSV

#[test]
fn csv_quoted_commas_doubled_quotes_and_a_quoted_newline() {
    let text = format!(
        "{HEADER}\n\
         e1,u1,d1,c1,\"News, Weather\",2024-01-01T10:00:00Z,,60,stb\n\
         e2,u2,,c2,\"He said \"\"hi\"\"\",2024-01-01T10:00:00Z,,60,web\n\
         e3,u3,,c3,\"line one\nline two\",2024-01-01T10:00:00Z,,60,web\n\
         e4,u4,,c4,p4,2024-01-01T10:00:00Z,,60,web\n"
    );
    let (records, summary) = csv(text.as_bytes());
    assert_eq!(summary.unknown_columns, Vec::<String>::new());
    assert_eq!(record_nos(&records), [1, 2, 3, 4], "a quoted newline does not start a record");
    // Header on line 1; e3 spans lines 4-5, so e4 starts on line 6.
    assert_eq!(lines(&records), [2, 3, 4, 6]);

    assert_eq!(records[0].get("program_id"), Some("News, Weather"));
    assert_eq!(records[0].get("start_time"), Some("2024-01-01T10:00:00Z"));
    assert_eq!(records[0].get("platform"), Some("stb"));
    assert_eq!(records[1].get("program_id"), Some("He said \"hi\""));
    assert_eq!(records[2].get("program_id"), Some("line one\nline two"));
    assert_eq!(records[2].get("start_time"), Some("2024-01-01T10:00:00Z"));
    assert_eq!(records[3].get("event_id"), Some("e4"));
    assert_eq!(records[3].get("program_id"), Some("p4"));
    // Empty fields are delivered as empty strings (validation treats them as absent).
    assert_eq!(records[1].get("device_id"), Some(""));

    // The original text is the record as it was written.
    assert_eq!(records[0].original, "e1,u1,d1,c1,\"News, Weather\",2024-01-01T10:00:00Z,,60,stb");
    assert_eq!(records[1].original, "e2,u2,,c2,\"He said \"\"hi\"\"\",2024-01-01T10:00:00Z,,60,web");
    assert_eq!(records[2].original, "e3,u3,,c3,\"line one\nline two\",2024-01-01T10:00:00Z,,60,web");
}

#[test]
fn csv_bom_and_crlf() {
    let text = format!(
        "\u{feff}{}\r\n\
         e1,u1,,c1,,2024-01-01T10:00:00Z,,60,stb\r\n\
         e2,u2,,c2,\"two\r\nlines\",2024-01-01T10:00:00Z,2024-01-01T11:00:00Z,,web\r\n\
         e3,u3,,c3,,2024-01-01T10:00:00Z,,60,mobile\r\n",
        HEADER
    );
    let (records, summary) = csv(text.as_bytes());
    assert_eq!(summary.unknown_columns, Vec::<String>::new(), "the BOM is not part of the first column's name");
    assert_eq!(record_nos(&records), [1, 2, 3]);
    assert_eq!(lines(&records), [2, 3, 5]);
    assert_eq!(records[0].get("event_id"), Some("e1"), "the first column maps despite the BOM");
    // No carriage return leaks into the last field.
    assert_eq!(records[0].get("platform"), Some("stb"));
    assert_eq!(records[1].get("platform"), Some("web"));
    assert_eq!(records[2].get("platform"), Some("mobile"));
    assert_eq!(records[1].get("program_id"), Some("two\r\nlines"), "quoted line breaks are kept verbatim");
    assert_eq!(records[1].get("end_time"), Some("2024-01-01T11:00:00Z"));
    // The originals have neither the BOM nor the line breaks between records.
    assert_eq!(records[0].original, "e1,u1,,c1,,2024-01-01T10:00:00Z,,60,stb");
    assert_eq!(records[1].original, "e2,u2,,c2,\"two\r\nlines\",2024-01-01T10:00:00Z,2024-01-01T11:00:00Z,,web");
    assert_eq!(records[2].original, "e3,u3,,c3,,2024-01-01T10:00:00Z,,60,mobile");
}

#[test]
fn csv_original_text_keeps_the_quoting_as_written() {
    // Quotes that were not needed, a quoted empty field, blank lines between
    // records and a last record without a line break: the quarantine keeps
    // each record's bytes, not its fields re-quoted.
    let text = format!(
        "{HEADER}\r\n\
         \"\",u1,,c1,,2024-01-01T10:00:00Z,,60,stb\r\n\
         \r\n\
         \n\
         \"e2\",\"u2\",,\"c2\",\"\",\"2024-01-01T10:00:00Z\",\"\",\"0\",\"web\"\n\
         e3,u3,,\"c,3\",,2024-01-01T10:00:00Z,,\"a \"\"b\"\"\",web,surplus\n\
         e4,u4,,c4,,2024-01-01T10:00:00Z,,60,\"mob\""
    );
    let (records, _) = csv(text.as_bytes());
    assert_eq!(record_nos(&records), [1, 2, 3, 4]);
    assert_eq!(lines(&records), [2, 5, 6, 7]);
    assert_eq!(records[0].get("event_id"), Some(""));
    assert_eq!(records[0].original, "\"\",u1,,c1,,2024-01-01T10:00:00Z,,60,stb");
    assert_eq!(records[1].original, "\"e2\",\"u2\",,\"c2\",\"\",\"2024-01-01T10:00:00Z\",\"\",\"0\",\"web\"");
    assert!(records[2].is_malformed());
    assert_eq!(records[2].original, "e3,u3,,\"c,3\",,2024-01-01T10:00:00Z,,\"a \"\"b\"\"\",web,surplus");
    assert_eq!(records[3].original, "e4,u4,,c4,,2024-01-01T10:00:00Z,,60,\"mob\"");
}

#[test]
fn csv_original_text_is_exact_across_a_large_object() {
    // Enough records (2 MB) that the decoder lets go of the text it has
    // passed (in steps of hundreds of kilobytes) many times over: every
    // record's original must still be its own line.
    let mut text = format!("{HEADER}\n");
    let mut expected = Vec::new();
    for i in 0..40_000 {
        let line = if i % 7 == 0 {
            format!("\"e{i}\",u{i},,\"c,{i}\",\"p\"\"{i}\",2024-01-01T10:00:00Z,,{i},stb")
        } else {
            format!("e{i},u{i},,c{i},,2024-01-01T10:00:00Z,,{i},web")
        };
        text.push_str(&line);
        text.push_str(if i % 3 == 0 { "\r\n" } else { "\n" });
        expected.push(line);
    }
    let (records, _) = csv(text.as_bytes());
    assert_eq!(records.len(), expected.len());
    for (record, line) in records.iter().zip(&expected) {
        assert_eq!(&record.original, line, "record {}", record.record_no);
    }
}

#[test]
fn csv_headers_in_any_order_and_case_with_unknown_and_missing_columns() {
    let text = " Platform ,START_TIME,  Event_ID,Extra_Col,user_id ,Channel_Id,Duration_Seconds\n\
                WEB,2024-01-01T10:00:00Z,e1,whatever,u1,c1,60\n\
                stb,2024-01-02 08:00:00,e2,,u2,c2,1800\n";
    let (records, summary) = csv(text.as_bytes());
    assert_eq!(summary.unknown_columns, ["extra_col"]);
    assert_eq!(records.len(), 2);
    let r = &records[0];
    assert_eq!(r.get("event_id"), Some("e1"));
    assert_eq!(r.get("user_id"), Some("u1"));
    assert_eq!(r.get("channel_id"), Some("c1"));
    assert_eq!(r.get("start_time"), Some("2024-01-01T10:00:00Z"));
    assert_eq!(r.get("duration_seconds"), Some("60"));
    assert_eq!(r.get("platform"), Some("WEB"));
    // Columns the file lacks are absent, not empty.
    assert_eq!(r.get("device_id"), None);
    assert_eq!(r.get("program_id"), None);
    assert_eq!(r.get("end_time"), None);
    let r = &records[1];
    assert_eq!(
        r.values(),
        [Some("e2"), Some("u2"), None, Some("c2"), None, Some("2024-01-02 08:00:00"), None, Some("1800"), Some("stb")]
            .map(|v| v.map(str::to_owned))
    );
}

#[test]
fn csv_wrong_column_count_is_malformed_and_decoding_goes_on() {
    let text = format!(
        "{HEADER}\n\
         e1,u1,,c1,,2024-01-01T10:00:00Z,,60,stb\n\
         e2,u2,,c2,,2024-01-01T10:00:00Z,,60\n\
         e3,u3,,c3,,2024-01-01T10:00:00Z,,60,web,surplus\n\
         e4,u4,,c4,,2024-01-01T10:00:00Z,,60,mobile\n"
    );
    let (records, _) = csv(text.as_bytes());
    assert_eq!(record_nos(&records), [1, 2, 3, 4]);
    assert_eq!(lines(&records), [2, 3, 4, 5]);
    assert!(!records[0].is_malformed());
    let m = records[1].malformed();
    assert!(m.contains('9') && m.contains('8'), "message names both counts: {m}");
    assert_eq!(records[1].original, "e2,u2,,c2,,2024-01-01T10:00:00Z,,60");
    let m = records[2].malformed();
    assert!(m.contains("10"), "{m}");
    assert_eq!(records[2].original, "e3,u3,,c3,,2024-01-01T10:00:00Z,,60,web,surplus");
    assert_eq!(records[3].get("event_id"), Some("e4"));
    assert_eq!(records[3].get("platform"), Some("mobile"));
}

#[test]
fn csv_invalid_utf8_in_a_field_is_malformed() {
    let mut bytes = format!("{HEADER}\n").into_bytes();
    bytes.extend_from_slice(b"e1,u\xff\xfe1,,c1,,2024-01-01T10:00:00Z,,60,stb\n");
    bytes.extend_from_slice("e2,u2,,c2,Café,2024-01-01T10:00:00Z,,60,stb\n".as_bytes());
    let (records, _) = csv(&bytes);
    assert_eq!(records.len(), 2);
    let m = records[0].malformed();
    assert!(m.contains("user_id") && m.contains("UTF-8"), "{m}");
    assert_eq!(records[0].field.map(|i| SESSION_FIELDS[i]), Some("user_id"), "the field at fault is named");
    assert_eq!(
        records[0].original, "e1,u\u{fffd}\u{fffd}1,,c1,,2024-01-01T10:00:00Z,,60,stb",
        "original is kept, lossily"
    );
    assert_eq!(records[0].line, 2);
    // A quoted field keeps its quotes in the original.
    let mut bytes = format!("{HEADER}\n").into_bytes();
    bytes.extend_from_slice(b"e3,u3,,c3,,2024-01-01T10:00:00Z,,60,\"mob\xe9ile\"\n");
    let (quoted, _) = csv(&bytes);
    assert!(quoted[0].is_malformed());
    assert_eq!(quoted[0].field.map(|i| SESSION_FIELDS[i]), Some("platform"));
    // In a column that is no field of the source, no field is at fault.
    let mut bytes = format!("{HEADER},note\n").into_bytes();
    bytes.extend_from_slice(b"e4,u4,,c4,,2024-01-01T10:00:00Z,,60,stb,n\xff\n");
    let (unknown, _) = csv(&bytes);
    assert!(unknown[0].malformed().contains("column 10 (note)"), "{}", unknown[0].malformed());
    assert_eq!(unknown[0].field, None);
    assert_eq!(quoted[0].original, "e3,u3,,c3,,2024-01-01T10:00:00Z,,60,\"mob\u{fffd}ile\"");
    // Valid multi-byte UTF-8 is fine.
    assert_eq!(records[1].get("program_id"), Some("Café"));
}

#[test]
fn csv_blank_trailing_lines_are_not_records() {
    for ending in ["\n\n", "\n\n\n", "\r\n\r\n"] {
        let text = format!("{HEADER}\ne1,u1,,c1,,2024-01-01T10:00:00Z,,60,stb{ending}");
        let (records, _) = csv(text.as_bytes());
        assert_eq!(records.len(), 1, "ending {ending:?}");
        assert!(!records[0].is_malformed());
    }
    // No final line break at all.
    let text = format!("{HEADER}\ne1,u1,,c1,,2024-01-01T10:00:00Z,,60,stb");
    let (records, _) = csv(text.as_bytes());
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].get("platform"), Some("stb"));
}

#[test]
fn csv_header_only_and_empty_objects_have_no_records() {
    let (records, _) = csv(format!("{HEADER}\n").as_bytes());
    assert!(records.is_empty());
    let (records, _) = csv(b"");
    assert!(records.is_empty());
}

// ---------------------------------------------------------------- JSON Lines

#[test]
fn json_lines_keys_numbers_nulls_blank_lines_and_bad_lines() {
    let text = concat!(
        "{\"Event_ID\":\"e1\",\"USER_ID\":\"u1\",\" channel_id \":\"c1\",\"Start_Time\":\"2024-01-01T10:00:00Z\",\"duration_seconds\":1800,\"Device_Id\":null,\"Extra\":true}\r\n",
        "\r\n",
        "   \t \r\n",
        "{\"event_id\":\"e2\",\"user_id\":\"u2\",\"channel_id\":\"c2\",\"start_time\":1704103200000,\"end_time\":\"2024-01-01T11:00:00Z\",\"platform\":\"web\"}\r\n",
        "{\"event_id\": \"e3\", \"user_id\": \r\n",
        "[\"e4\", \"u4\"]\r\n",
        "\"just a string\"\r\n",
        "{\"event_id\":\"e6\",\"user_id\":\"u6\",\"channel_id\":\"c6\",\"start_time\":\"2024-01-01T10:00:00Z\",\"duration_seconds\":\"60\",\"program_id\":{\"n\":1}}\r\n",
    );
    let (records, summary) = jsonl(text.as_bytes());
    assert_eq!(summary.unknown_columns, ["extra"]);
    // Blank and whitespace-only lines are skipped and not counted as records,
    // but they still count as lines.
    assert_eq!(record_nos(&records), [1, 2, 3, 4, 5, 6]);
    assert_eq!(lines(&records), [1, 4, 5, 6, 7, 8]);

    let r = &records[0];
    assert_eq!(r.get("event_id"), Some("e1"));
    assert_eq!(r.get("user_id"), Some("u1"));
    assert_eq!(r.get("channel_id"), Some("c1"), "keys are trimmed");
    assert_eq!(r.get("start_time"), Some("2024-01-01T10:00:00Z"));
    assert_eq!(r.get("duration_seconds"), Some("1800"), "numbers are rendered as their JSON text");
    assert_eq!(r.get("device_id"), None, "null is absent");
    assert_eq!(r.get("program_id"), None);
    assert!(!r.original.ends_with('\r') && !r.original.ends_with('\n'), "{:?}", r.original);
    assert!(r.original.starts_with("{\"Event_ID\":\"e1\""));

    let r = &records[1];
    assert_eq!(r.get("start_time"), Some("1704103200000"));
    assert_eq!(r.get("end_time"), Some("2024-01-01T11:00:00Z"));
    assert_eq!(r.get("platform"), Some("web"));

    let m = records[2].malformed();
    assert!(m.contains("JSON"), "{m}");
    assert_eq!(records[2].original, "{\"event_id\": \"e3\", \"user_id\": ");
    let m = records[3].malformed();
    assert!(m.contains("array"), "{m}");
    assert_eq!(records[3].original, "[\"e4\", \"u4\"]");
    assert!(records[4].malformed().contains("string"));

    let r = &records[5];
    assert_eq!(r.get("event_id"), Some("e6"));
    assert_eq!(r.get("duration_seconds"), Some("60"), "\"60\" and 60 decode alike");
    assert_eq!(r.get("program_id"), Some("{\"n\":1}"), "a nested value is kept as JSON text");
}

#[test]
fn json_lines_numbers_as_text_and_as_numbers_are_the_same() {
    let text = "{\"duration_seconds\":1800}\n{\"duration_seconds\":\"1800\"}\n{\"duration_seconds\":1800.5}\n";
    let (records, _) = jsonl(text.as_bytes());
    assert_eq!(records[0].get("duration_seconds"), Some("1800"));
    assert_eq!(records[1].get("duration_seconds"), Some("1800"));
    assert_eq!(records[2].get("duration_seconds"), Some("1800.5"));
    assert_eq!(records[0].get("event_id"), None);
}

#[test]
fn a_repeated_column_or_key_keeps_its_last_value_in_csv_and_json() {
    let (csv_records, _) = csv(b"event_id,Channel_ID,user_id,channel_id\ne1,first,u1,last\n");
    let (json_records, _) =
        jsonl(b"{\"event_id\":\"e1\",\"channel_id\":\"first\",\"user_id\":\"u1\",\"channel_id\":\"last\"}\n");
    for records in [&csv_records, &json_records] {
        assert_eq!(records[0].get("channel_id"), Some("last"));
        assert_eq!(records[0].get("user_id"), Some("u1"));
    }
}

#[test]
fn json_numbers_keep_their_spelling_in_lines_and_arrays() {
    // Read as f64, these two ids would both be 1.2345678901234568e29.
    let objects = [
        r#"{"event_id": 123456789012345678901234567890, "duration_seconds": 99999999999999999999}"#,
        r#"{"event_id": 123456789012345678901234567891, "duration_seconds": 6.0e1}"#,
    ];
    let (by_line, _) = jsonl(format!("{}\n{}\n", objects[0], objects[1]).as_bytes());
    let (array, _) = json_array(format!("[{},\n {}]", objects[0], objects[1]).as_bytes());
    for records in [&by_line, &array] {
        assert_eq!(records[0].get("event_id"), Some("123456789012345678901234567890"));
        assert_eq!(records[1].get("event_id"), Some("123456789012345678901234567891"));
        assert_eq!(records[0].get("duration_seconds"), Some("99999999999999999999"));
        assert_eq!(records[1].get("duration_seconds"), Some("6.0e1"));
        assert_eq!(records[0].original, objects[0]);
        assert_eq!(records[1].original, objects[1]);
    }
    assert_eq!(lines(&array), [1, 2]);
}

#[test]
fn json_lines_values_do_not_leak_between_records() {
    let text = "{\"event_id\":\"e1\",\"device_id\":\"d1\"}\n{\"event_id\":\"e2\"}\n";
    let (records, _) = jsonl(text.as_bytes());
    assert_eq!(records[0].get("device_id"), Some("d1"));
    assert_eq!(records[1].get("device_id"), None, "a key of the previous record must not carry over");
}

#[test]
fn json_lines_bom_invalid_utf8_and_no_final_newline() {
    let mut bytes = "\u{feff}{\"event_id\":\"e1\"}\n".as_bytes().to_vec();
    bytes.extend_from_slice(b"{\"event_id\":\"e\xff2\"}\n");
    bytes.extend_from_slice(b"{\"event_id\":\"e3\"}");
    let (records, summary) = jsonl(&bytes);
    assert!(summary.unknown_columns.is_empty());
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].get("event_id"), Some("e1"), "the BOM is skipped");
    let m = records[1].malformed();
    assert!(m.contains("UTF-8"), "{m}");
    assert_eq!(records[1].original, "{\"event_id\":\"e\u{fffd}2\"}");
    assert_eq!(records[1].line, 2);
    assert_eq!(records[2].get("event_id"), Some("e3"));
    assert_eq!(records[2].line, 3);
}

// ---------------------------------------------------------------- JSON arrays

#[test]
fn json_array_streams_objects_with_bom_and_a_non_object_element() {
    let text = "\u{feff}[\n\
                {\"event_id\": \"e1\", \"User_Id\": \"u1\", \"duration_seconds\": 60},\n\
                {\"EVENT_ID\": \"e2\", \"device_id\": null, \"genre\": \"news\"},\n\
                42,\n\
                {\"event_id\": \"e4\",\n\
                 \"start_time\": \"2024-01-01T10:00:00+04:00\"}\n\
                ]\n";
    let (records, summary) = json_array(text.as_bytes());
    assert_eq!(summary.unknown_columns, ["genre"]);
    assert_eq!(record_nos(&records), [1, 2, 3, 4]);
    // As for every format, the line on which the record starts.
    assert_eq!(lines(&records), [2, 3, 4, 5]);
    // The original is the element as written, over its two lines.
    assert_eq!(records[3].original, "{\"event_id\": \"e4\",\n\"start_time\": \"2024-01-01T10:00:00+04:00\"}");
    assert_eq!(records[0].get("event_id"), Some("e1"));
    assert_eq!(records[0].get("user_id"), Some("u1"));
    assert_eq!(records[0].get("duration_seconds"), Some("60"));
    assert_eq!(records[1].get("event_id"), Some("e2"));
    assert_eq!(records[1].get("device_id"), None);
    assert_eq!(records[1].get("user_id"), None);
    assert!(records[2].malformed().contains("number"), "{}", records[2].malformed());
    assert_eq!(records[2].original, "42");
    assert_eq!(records[3].get("start_time"), Some("2024-01-01T10:00:00+04:00"));
}

#[test]
fn a_number_element_is_placed_on_its_own_line_whatever_follows_it() {
    // A number ends where the next byte is not part of it, so the decoder
    // reads one byte past it: here a line break, which is not its line.
    let text = "[\n{\"event_id\": \"e1\"},\n1\n,\n-5.5e3\n\n,\"x\"\n,7\r\n,8]\n";
    let (records, _) = json_array(text.as_bytes());
    assert_eq!(
        records.iter().map(|r| r.original.as_str()).collect::<Vec<_>>(),
        ["{\"event_id\": \"e1\"}", "1", "-5.5e3", "\"x\"", "7", "8"]
    );
    assert_eq!(lines(&records), [2, 3, 5, 7, 8, 9]);
}

#[test]
fn json_array_empty_and_whitespace() {
    let (records, _) = json_array(b"  [ ]  \n");
    assert!(records.is_empty());
}

#[test]
fn json_array_syntax_error_mid_array_is_unreadable() {
    let text = "[\n{\"event_id\": \"e1\"},\n{\"event_id\": },\n{\"event_id\": \"e3\"}\n]\n";
    let (records, result) = run(text.as_bytes(), InputFormat::JsonArray, Compression::None);
    let e = assert_unreadable(result);
    let IngestError::Unreadable { line, .. } = &e else { unreachable!() };
    assert_eq!(*line, Some(3), "the error names the line: {e}");
    assert!(records.iter().all(|r| r.get("event_id") != Some("e3")), "nothing after the fault is decoded");
}

#[test]
fn json_array_other_faults_are_unreadable() {
    for bad in [
        "{\"event_id\": \"e1\"}",                         // an object, not an array
        "[{\"event_id\": \"e1\"}",                        // unterminated
        "[{\"event_id\": \"e1\"}] trailing",              // garbage after the array
        "[{\"event_id\": \"e1\"}, {\"event_id\": \"e2\"", // cut mid-element
        " \n",                                            // nothing but blanks (no bytes at all is empty)
    ] {
        let (_, result) = run(bad.as_bytes(), InputFormat::JsonArray, Compression::None);
        assert_unreadable(result);
    }
}

// ---------------------------------------------------------------- gzip

fn sample_csv(rows: usize) -> String {
    let mut text = format!("{HEADER}\n");
    for i in 0..rows {
        text.push_str(&format!(
            "e{i},u{},d{i},c{},\"prog, {i}\",2024-01-01T10:00:00Z,,{},stb\n",
            i % 97,
            i % 13,
            60 + i
        ));
    }
    text
}

#[test]
fn gzip_decodes_like_plain() {
    let text = sample_csv(500);
    let (plain, plain_summary) = csv(text.as_bytes());
    let (gz, gz_summary) = ok(&gzip(text.as_bytes()), InputFormat::Csv, Compression::Gzip);
    assert_eq!(plain.len(), 500);
    assert_eq!(gz, plain);
    assert_eq!(gz_summary, plain_summary);
    assert_eq!(gz[499].get("event_id"), Some("e499"));
    assert_eq!(gz[499].get("program_id"), Some("prog, 499"));

    let lines_text = "{\"event_id\":\"e1\"}\n{\"event_id\":\"e2\"}\n";
    let (gz, _) = ok(&gzip(lines_text.as_bytes()), InputFormat::JsonLines, Compression::Gzip);
    assert_eq!(gz, jsonl(lines_text.as_bytes()).0);
    let array_text = "[{\"event_id\":\"e1\"},{\"event_id\":\"e2\"}]";
    let (gz, _) = ok(&gzip(array_text.as_bytes()), InputFormat::JsonArray, Compression::Gzip);
    assert_eq!(gz, json_array(array_text.as_bytes()).0);
}

/// A gzip file whose name lacks `.gz` is refused as one fault, instead of
/// its binary noise being quarantined row by row.
#[test]
fn gzip_under_a_plain_name_is_refused_whole() {
    for (format, text) in [
        (InputFormat::Csv, sample_csv(20)),
        (InputFormat::JsonLines, "{\"event_id\":\"e1\"}\n".to_owned()),
        (InputFormat::JsonArray, "[{\"event_id\":\"e1\"}]".to_owned()),
    ] {
        let (records, result) = run(&gzip(text.as_bytes()), format, Compression::None);
        let error = result.expect_err("a gzip body under a plain name");
        assert!(matches!(error, IngestError::Unreadable { .. }), "{format:?}: {error:?}");
        assert!(error.to_string().contains("does not end in .gz"), "{format:?}: {error}");
        assert!(records.is_empty(), "{format:?}: no record of it is handed over");
    }
}

/// UTF-16 text (what spreadsheet programs write as "Unicode text") is
/// refused whole, plain or inside gzip, rather than read as noise.
#[test]
fn utf16_text_is_refused_whole() {
    let text = "user_id,age_band\r\nu1,18-24\r\n";
    let le: Vec<u8> = [0xff, 0xfe].into_iter().chain(text.encode_utf16().flat_map(u16::to_le_bytes)).collect();
    let be: Vec<u8> = [0xfe, 0xff].into_iter().chain(text.encode_utf16().flat_map(u16::to_be_bytes)).collect();
    for (bytes, compression) in
        [(le.clone(), Compression::None), (be, Compression::None), (gzip(&le), Compression::Gzip)]
    {
        let (records, result) = run(&bytes, InputFormat::Csv, compression);
        let error = result.expect_err("UTF-16 text");
        assert!(error.to_string().contains("UTF-16"), "{compression:?}: {error}");
        assert!(records.is_empty());
    }
}

#[test]
fn multi_member_gzip_yields_the_records_of_every_member() {
    let text = sample_csv(300);
    // Split mid-record: members are concatenated byte streams.
    let split = text.len() / 2 + 7;
    let mut bytes = gzip(&text.as_bytes()[..split]);
    bytes.extend(gzip(&text.as_bytes()[split..]));
    let (records, _) = ok(&bytes, InputFormat::Csv, Compression::Gzip);
    assert_eq!(records, csv(text.as_bytes()).0);
    assert_eq!(records.len(), 300);

    // Three members of JSON Lines, one record each.
    let mut bytes = Vec::new();
    for i in 1..=3 {
        bytes.extend(gzip(format!("{{\"event_id\":\"e{i}\"}}\n").as_bytes()));
    }
    let (records, _) = ok(&bytes, InputFormat::JsonLines, Compression::Gzip);
    assert_eq!(records.iter().map(|r| r.get("event_id").unwrap()).collect::<Vec<_>>(), ["e1", "e2", "e3"]);
    assert_eq!(lines(&records), [1, 2, 3]);
}

#[test]
fn truncated_gzip_is_unreadable() {
    let text = sample_csv(2000);
    let full = gzip(text.as_bytes());
    for cut in [full.len() - 1, full.len() - 4, full.len() - 8, full.len() / 2, 20, 5] {
        for format in [InputFormat::Csv, InputFormat::JsonLines] {
            let (records, result) = run(&full[..cut], format, Compression::Gzip);
            let e = assert_unreadable(result);
            assert!(e.to_string().contains("viewership/test"), "{e}");
            if cut == full.len() / 2 && format == InputFormat::Csv {
                assert!(records.len() > 100, "records before the fault were streamed: {}", records.len());
            }
        }
    }
}

#[test]
fn bytes_that_are_not_gzip_are_unreadable() {
    let text = sample_csv(10);
    for format in [InputFormat::Csv, InputFormat::JsonLines, InputFormat::JsonArray] {
        let (records, result) = run(text.as_bytes(), format, Compression::Gzip);
        assert_unreadable(result);
        assert!(records.is_empty());
        let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let (_, result) = run(&noise, format, Compression::Gzip);
        assert_unreadable(result);
    }
    // A valid member followed by garbage is not a clean multi-member stream.
    let mut bytes = gzip(text.as_bytes());
    bytes.extend_from_slice(b"this is not gzip");
    let (_, result) = run(&bytes, InputFormat::Csv, Compression::Gzip);
    assert_unreadable(result);
}

// ---------------------------------------------------------------- a large stream

/// Generates a CSV object of `rows` fixed-width records on the fly.
struct CsvGenerator {
    rows: u64,
    next_row: u64,
    pending: Vec<u8>,
    pos: usize,
    produced: Rc<Cell<u64>>,
}

const ROW_LEN: usize = 100;

impl CsvGenerator {
    fn row(i: u64) -> String {
        let row = format!(
            "e{i:09},u{:07},d{:05},c{:03},p{:06},2024-01-{:02}T{:02}:{:02}:00Z,,{:05},stb",
            i % 1_000_003,
            i % 7919,
            i % 150,
            i % 100_000,
            1 + i % 28,
            i % 24,
            i % 60,
            1 + i % 7200,
        );
        let row = format!("{row:<width$}\n", width = ROW_LEN - 1);
        assert_eq!(row.len(), ROW_LEN);
        row
    }
}

impl Read for CsvGenerator {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.pending.len() {
            self.pending.clear();
            self.pos = 0;
            if self.next_row == 0 {
                self.pending.extend_from_slice(format!("{HEADER}\n").as_bytes());
            }
            // About 64 KiB per refill.
            while self.next_row < self.rows && self.pending.len() < 64 * 1024 {
                self.pending.extend_from_slice(Self::row(self.next_row).as_bytes());
                self.next_row += 1;
            }
        }
        let n = buf.len().min(self.pending.len() - self.pos);
        buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        self.produced.set(self.produced.get() + n as u64);
        Ok(n)
    }
}

#[test]
fn a_large_stream_is_decoded_record_by_record() {
    const ROWS: u64 = 300_000;
    let produced = Rc::new(Cell::new(0u64));
    let generator = CsvGenerator { rows: ROWS, next_row: 0, pending: Vec::new(), pos: 0, produced: produced.clone() };
    let header_len = HEADER.len() as u64 + 1;
    let started = std::time::Instant::now();
    let mut count = 0u64;
    let mut max_ahead = 0u64;
    let mut last_line = 0;
    let mut checked = 0;
    let summary = decode("viewership/big.csv", generator, InputFormat::Csv, Compression::None, &SESSION_FIELDS, |r| {
        count += 1;
        assert_eq!(r.record_no, count);
        last_line = r.line;
        // The decoder must not read far ahead of the record it hands over.
        let consumed = header_len + r.record_no * ROW_LEN as u64;
        max_ahead = max_ahead.max(produced.get().saturating_sub(consumed));
        let RecordBody::Fields { values, .. } = r.body else { panic!("record {count} is malformed") };
        if count.is_multiple_of(99_991) || count == ROWS {
            let i = count - 1;
            let expected = CsvGenerator::row(i);
            let fields: Vec<&str> = expected.trim_end().split(',').collect();
            assert_eq!(values[0], Some(fields[0]), "event_id of record {count}");
            assert_eq!(values[5], Some(fields[5]), "start_time of record {count}");
            assert_eq!(values[6], Some(""));
            assert_eq!(values[7], Some(fields[7]));
            // The padding is part of the last field.
            assert_eq!(values[8].map(str::trim_end), Some("stb"));
            checked += 1;
        }
        Ok(())
    })
    .unwrap();
    let elapsed = started.elapsed();
    assert!(summary.unknown_columns.is_empty());
    assert_eq!(count, ROWS);
    assert_eq!(last_line, ROWS + 1);
    assert_eq!(checked, 4);
    assert_eq!(produced.get(), header_len + ROWS * ROW_LEN as u64, "the whole stream was read");
    assert!(max_ahead < 2 * 1024 * 1024, "the decoder read {max_ahead} bytes ahead of the record it handed over");
    eprintln!("decoded {ROWS} CSV records ({} MB) in {elapsed:?}", produced.get() / 1_000_000);
}

/// Records that each carry keys of their own (a map written as top-level
/// keys) are decoded as ever, but the summary names only the first
/// MAX_UNKNOWN_COLUMNS distinct unknown columns and says there were more;
/// a CSV header with too many extra columns the same.
#[test]
fn unknown_columns_are_listed_up_to_a_limit() {
    let lines: String = (0..5_000).map(|i| format!("{{\"event_id\":\"e{i}\",\"X_{i}\":1,\"ad_slot\":2}}\n")).collect();
    let (records, summary) = jsonl(lines.as_bytes());
    assert_eq!(records.len(), 5_000);
    assert_eq!(records[4_999].get("event_id"), Some("e4999"));
    assert_eq!(summary.unknown_columns.len(), MAX_UNKNOWN_COLUMNS);
    // In the order seen (an object's keys in byte order: `X_0` before
    // `ad_slot`), lower-cased.
    assert_eq!(&summary.unknown_columns[..3], ["x_0", "ad_slot", "x_1"]);
    assert!(summary.more_unknown_columns);

    let extra: Vec<String> = (0..MAX_UNKNOWN_COLUMNS + 6).map(|i| format!("extra{i}")).collect();
    let header = format!("{HEADER},{}", extra.join(","));
    let row = format!("e1,u1,,c1,,2024-01-01T10:00:00Z,,60,stb{}", ",x".repeat(extra.len()));
    let (records, summary) = csv(format!("{header}\n{row}\n").as_bytes());
    assert_eq!(records[0].get("platform"), Some("stb"));
    assert_eq!(summary.unknown_columns, extra[..MAX_UNKNOWN_COLUMNS]);
    assert!(summary.more_unknown_columns);

    // At the limit exactly, nothing is left out.
    let header = format!("{HEADER},{}", extra[..MAX_UNKNOWN_COLUMNS].join(","));
    let (_, summary) = csv(format!("{header}\n").as_bytes());
    assert_eq!((summary.unknown_columns.len(), summary.more_unknown_columns), (MAX_UNKNOWN_COLUMNS, false));
}

/// Bytes `head` then `filler` for as long as asked, counting what was read.
struct EndlessAfter {
    head: Vec<u8>,
    filler: u8,
    left: u64,
    read: Rc<Cell<u64>>,
}

impl Read for EndlessAfter {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = if !self.head.is_empty() {
            let n = buf.len().min(self.head.len());
            buf[..n].copy_from_slice(&self.head[..n]);
            self.head.drain(..n);
            n
        } else {
            let n = buf.len().min(self.left as usize);
            buf[..n].fill(self.filler);
            self.left -= n as u64;
            n
        };
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// A record that never ends (an unclosed CSV quote, a JSON Lines file
/// without line breaks, a JSON string never closed) makes the object
/// unreadable once it passes MAX_RECORD_BYTES, naming where it began. The
/// decoder stops reading soon after that limit, so its memory stays bounded
/// however large the object is (here 64 MiB).
#[test]
fn a_record_that_never_ends_stops_the_object_near_the_limit() {
    let good = "e1,u1,,c1,,2024-01-01T10:00:00Z,,60,stb";
    let cases: [(InputFormat, String, &str); 2] = [
        (InputFormat::Csv, format!("{HEADER}\n{good}\n{good}\ne3,\"u3"), "the record from line 4 runs past 1 MiB"),
        (
            InputFormat::JsonArray,
            "[\n{\"event_id\":\"a1\"},\n{\"event_id\":\"".to_owned(),
            "the element from line 2 runs past 1 MiB",
        ),
    ];
    for (format, head, expected) in cases {
        let read = Rc::new(Cell::new(0u64));
        let endless = EndlessAfter { head: head.into_bytes(), filler: b'x', left: 64 << 20, read: read.clone() };
        let mut handed = 0;
        let result = decode("viewership/x", endless, format, Compression::None, &SESSION_FIELDS, |_| {
            handed += 1;
            Ok(())
        });
        let error = match result {
            Err(e @ IngestError::Unreadable { .. }) => e.to_string(),
            other => panic!("{format:?}: expected the object to be unreadable, got {other:?}"),
        };
        assert!(error.contains(expected), "{format:?}: {error}");
        assert!(handed >= 1, "{format:?}: the records before it were handed over");
        // The limit, plus the read buffer of 256 KiB and the CSV tracker's slack.
        assert!(read.get() < MAX_RECORD_BYTES + (1 << 20), "{format:?}: read {} bytes before stopping", read.get());
    }

    // A JSON Lines record ends at its line break, which it cannot hold: a
    // line past the limit is a malformed record, kept up to the limit, and
    // the rest of it is read past without being held, to the next line or
    // the object's end (here 64 MiB on).
    for tail in ["", "\n{\"event_id\":\"j9\"}\n"] {
        let read = Rc::new(Cell::new(0u64));
        let head = b"{\"event_id\":\"j1\"}\n\n{\"event_id\":\"".to_vec();
        let endless = EndlessAfter { head, filler: b'x', left: 64 << 20, read: read.clone() };
        let mut records = Vec::new();
        let decoded = decode(
            "viewership/x",
            endless.chain(tail.as_bytes()),
            InputFormat::JsonLines,
            Compression::None,
            &SESSION_FIELDS,
            |r| {
                let (malformed, original) = match r.body {
                    RecordBody::Malformed { message, original, .. } => (Some(message), original.render().len()),
                    RecordBody::Fields { original, .. } => (None, original.render().len()),
                };
                records.push((r.record_no, r.line, malformed, original));
                Ok(())
            },
        );
        decoded.expect("the object is read to its end");
        assert_eq!(read.get(), 18 + 1 + 13 + (64 << 20), "every byte is read");
        assert_eq!(records.len(), if tail.is_empty() { 2 } else { 3 }, "{records:?}");
        let (record_no, line, message, kept) = &records[1];
        assert_eq!((*record_no, *line, *kept), (2, 3, MAX_RECORD_BYTES as usize));
        let message = message.as_deref().expect("the long line is malformed");
        assert!(message.contains(&format!("the line is {} bytes long", 13 + (64 << 20))), "{message}");
        if !tail.is_empty() {
            assert_eq!((records[2].0, records[2].1, records[2].2.is_none()), (3, 4, true), "the next line loads");
        }
    }

    // A stream message is in memory already: a line of 2 MiB in it is a
    // record like any other (a Kafka message may be that large).
    let line = format!("{{\"event_id\":\"k1\",\"program_id\":\"{}\"}}", "p".repeat(2 << 20));
    let mut program_ids = Vec::new();
    decode_json_message("kafka~t~0~7", line.as_bytes(), &SESSION_FIELDS, |r| {
        let RecordBody::Fields { values, .. } = r.body else { panic!("record {} is malformed", r.record_no) };
        program_ids.push(values[4].map(str::len));
        Ok(())
    })
    .unwrap();
    assert_eq!(program_ids, [Some(2 << 20)]);

    // Long but ending records are records: a quoted CSV field of 900 KiB with
    // line breaks in it, and a JSON line as long.
    let long = "ab\n".repeat(300 * 1024);
    let (records, _) = csv(format!("{HEADER}\ne1,u1,,c1,\"{long}\",2024-01-01T10:00:00Z,,60,stb\n{good}\n").as_bytes());
    assert_eq!((records.len(), records[0].get("program_id").map(str::len)), (2, Some(long.len())));
    assert_eq!(records[1].line, 2 + 300 * 1024 + 1);
    let line = format!("{{\"event_id\":\"e1\",\"program_id\":\"{}\"}}\n", "p".repeat(900 * 1024));
    let (records, _) = jsonl(line.as_bytes());
    assert_eq!(records.len(), 1);
}

#[test]
fn a_callback_error_stops_decoding_and_is_returned() {
    let text = sample_csv(50);
    for (format, bytes) in [
        (InputFormat::Csv, text.into_bytes()),
        (InputFormat::JsonLines, b"{\"event_id\":\"a\"}\n{\"event_id\":\"b\"}\n{\"event_id\":\"c\"}\n".to_vec()),
        (InputFormat::JsonArray, b"[{\"event_id\":\"a\"},{\"event_id\":\"b\"},{\"event_id\":\"c\"}]".to_vec()),
    ] {
        let mut seen = 0;
        let result = decode("k", bytes.as_slice(), format, Compression::None, &SESSION_FIELDS, |_| {
            seen += 1;
            if seen == 2 { Err(IngestError::Unsupported { key: "stop".into() }) } else { Ok(()) }
        });
        assert!(matches!(result, Err(IngestError::Unsupported { ref key }) if key == "stop"), "{format:?}: {result:?}");
        assert_eq!(seen, 2, "{format:?}");
    }
}

#[test]
fn csv_lines_after_blank_lines_and_crlf() {
    let lf = format!(
        "{HEADER}\n\
         e1,u1,,c1,,2024-01-01T10:00:00Z,,60,stb\n\
         \n\
         \n\
         e2,u2,,c2,,2024-01-01T10:00:00Z,,60,stb\n\
         e3,u3,,c3,,2024-01-01T10:00:00Z,,60\n"
    );
    let (records, _) = csv(lf.as_bytes());
    assert_eq!(record_nos(&records), [1, 2, 3]);
    assert_eq!(lines(&records), [2, 5, 6], "blank lines count as lines");
    assert!(records[2].is_malformed());

    let crlf = lf.replace('\n', "\r\n");
    let (records, _) = csv(crlf.as_bytes());
    assert_eq!(lines(&records), [2, 5, 6], "CRLF endings count one line each");
    assert_eq!(records[1].get("platform"), Some("stb"));

    // Old Mac files end lines in a lone CR, which the csv reader takes as a
    // record end: their lines are counted at each CR.
    let cr = lf.replace('\n', "\r");
    let (records, _) = csv(cr.as_bytes());
    assert_eq!(record_nos(&records), [1, 2, 3]);
    assert_eq!(lines(&records), [2, 5, 6], "CR endings count one line each");

    // In a LF or CRLF file, a bare CR inside a quoted field is not a line break.
    let text = format!("{HEADER}\r\ne1,u1,,c1,\"a\rb\",2024-01-01T10:00:00Z,,60,stb\r\ne2,u2,,c2,,x,,60,stb\r\n");
    let (records, _) = csv(text.as_bytes());
    assert_eq!(records[0].get("program_id"), Some("a\rb"));
    assert_eq!(lines(&records), [2, 3]);
}

/// A lone-CR file is told by the byte after its first `\r`. Where the
/// header ends at the end of a read (the csv reader reads 8 KiB at a time),
/// that byte is not read yet when the header is: it is looked at once it is.
#[test]
fn a_lone_cr_file_whose_header_ends_where_a_read_does_counts_its_lines() {
    for header_bytes in 8180..8200 {
        let extra = format!(",{}", "x".repeat(header_bytes - HEADER.len() - 1));
        let header = format!("{HEADER}{extra}");
        assert_eq!(header.len(), header_bytes);
        let text =
            format!("{header}\re1,u1,,c1,,2024-01-01T10:00:00Z,,60,stb,\r\re2,,,c1,,2024-01-01T10:00:00Z,,60,stb,\r");
        let (records, _) = csv(text.as_bytes());
        assert_eq!(lines(&records), [2, 4], "a header of {header_bytes} bytes");
    }
}

/// A gzip fault found after the last line (the trailer's checksum) is in
/// no line of the text: the error says it is after the last; one inside a
/// line names it.
#[test]
fn a_gzip_fault_names_the_line_only_when_it_is_in_one() {
    let text = "{\"event_id\":\"a\"}\n{\"event_id\":\"b\"}\n{\"event_id\":\"c\"}\n";
    let mut bad_checksum = gzip(text.as_bytes());
    let crc_at = bad_checksum.len() - 8;
    bad_checksum[crc_at] ^= 0xff;
    let e = assert_unreadable(run(&bad_checksum, InputFormat::JsonLines, Compression::Gzip).1);
    assert!(matches!(e, IngestError::Unreadable { line: None, .. }), "{e}");
    assert!(e.to_string().contains("unreadable: after line 3: ") && e.to_string().contains("checksum"), "{e}");

    // Cut short inside the last line (its own compressed block, after the
    // others were flushed).
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(b"{\"event_id\":\"a\"}\n{\"event_id\":\"b\"}\n").unwrap();
    encoder.flush().unwrap();
    let flushed = encoder.get_ref().len();
    // Letters that do not compress, so that half the compressed line
    // holds some of it.
    let mut state = 7u32;
    let noise: String = (0..4000)
        .map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            char::from(b'a' + ((state >> 16) % 26) as u8)
        })
        .collect();
    encoder.write_all(format!("{{\"event_id\":\"c\",\"program_id\":\"{noise}\"}}\n").as_bytes()).unwrap();
    let whole = encoder.finish().unwrap();
    let cut = &whole[..flushed + (whole.len() - flushed) / 2];
    let e = assert_unreadable(run(cut, InputFormat::JsonLines, Compression::Gzip).1);
    assert!(matches!(e, IngestError::Unreadable { line: Some(3), .. }), "{e}");
}

/// Blank lines belong to no record: a run of them longer than a record may
/// be (here 1.1 MiB of LF, then of CRLF) neither makes the next record
/// "too long" nor is held, and the lines after it are numbered right.
#[test]
fn a_long_run_of_blank_lines_between_records_is_passed() {
    let good = |id: &str| format!("{id},u1,,c1,,2024-01-01T10:00:00Z,,60,stb");
    for blank in ["\n", "\r\n"] {
        let run = 1_100_000;
        let text = format!("{HEADER}\n{}\n{}{}\n", good("e1"), blank.repeat(run), good("e2"));
        let (records, _) = csv(text.as_bytes());
        let ids: Vec<_> = records.iter().map(|r| (r.get("event_id").unwrap().to_owned(), r.line)).collect();
        assert_eq!(ids, [("e1".to_owned(), 2), ("e2".to_owned(), 3 + run as u64)], "{blank:?}");
        assert_eq!(records[1].original, good("e2"));
    }
    // Endless blank lines are read to the end.
    let read = Rc::new(Cell::new(0u64));
    let head = format!("{HEADER}\n{}\n", good("e1")).into_bytes();
    let endless = EndlessAfter { head, filler: b'\n', left: 16 << 20, read: read.clone() };
    let mut lines = Vec::new();
    decode(
        "viewership/x",
        endless.chain(good("e3").as_bytes()),
        InputFormat::Csv,
        Compression::None,
        &SESSION_FIELDS,
        |r| {
            lines.push(r.line);
            Ok(())
        },
    )
    .expect("blank lines are no fault");
    assert_eq!(lines, [2, 3 + (16 << 20)]);
}

/// An object of no bytes holds no records, whatever its name: it is not a
/// broken gzip or JSON array.
#[test]
fn an_object_of_no_bytes_is_empty_in_every_format() {
    for format in [InputFormat::Csv, InputFormat::JsonLines, InputFormat::JsonArray] {
        for compression in [Compression::None, Compression::Gzip] {
            let (records, summary) = ok(b"", format, compression);
            assert!(records.is_empty(), "{format:?} {compression:?}");
            assert_eq!(summary, DecodeSummary::default());
        }
    }
    // One byte is not nothing: a gzip of one byte is broken.
    assert_unreadable(run(b"\x1f", InputFormat::Csv, Compression::Gzip).1);
    // And the first byte read is not lost.
    let (records, _) = ok(
        &gzip(format!("{HEADER}\ne1,u1,,c1,,2024-01-01T10:00:00Z,,60,stb\n").as_bytes()),
        InputFormat::Csv,
        Compression::Gzip,
    );
    assert_eq!(records.len(), 1);
}

/// The record limit is on a JSON line's text: a record of exactly 1 MiB
/// loads whatever its line ends with, and a blank line stays blank however
/// long it is.
#[test]
fn a_json_line_of_exactly_the_limit_loads_with_any_line_end_and_a_long_blank_line_is_no_record() {
    let record = |id: &str| {
        let head = format!("{{\"event_id\":\"{id}\",\"program_id\":\"");
        let tail = "\"}";
        format!("{head}{}{tail}", "p".repeat(MAX_RECORD_BYTES as usize - head.len() - tail.len()))
    };
    assert_eq!(record("j1").len() as u64, MAX_RECORD_BYTES);
    for (bom, end) in [("", "\n"), ("", "\r\n"), ("\u{feff}", "\r\n")] {
        let text = format!("{bom}{}{end}{}", record("j1"), record("j2"));
        let (records, _) = jsonl(text.as_bytes());
        let ids: Vec<_> = records.iter().map(|r| r.get("event_id").unwrap().to_owned()).collect();
        assert_eq!(ids, ["j1", "j2"], "{bom:?} {end:?}, the second at the end of the object");
    }
    // One byte more is past it, whatever the line end.
    let over = format!("{}x\r\n{{\"event_id\":\"j3\"}}\n", record("j1"));
    let (records, _) = jsonl(over.as_bytes());
    assert!(records[0].malformed().contains(&format!("the line is {} bytes long", MAX_RECORD_BYTES + 1)));
    assert_eq!((records[1].line, records[1].get("event_id")), (2, Some("j3")));

    let blank =
        format!("{{\"event_id\":\"j1\"}}\n{}\n{}\r\n{{\"event_id\":\"j2\"}}\n", " ".repeat(10), " ".repeat(2 << 20));
    let (records, _) = jsonl(blank.as_bytes());
    let lines: Vec<_> = records.iter().map(|r| (r.record_no, r.line, r.is_malformed())).collect();
    assert_eq!(lines, [(1, 1, false), (2, 4, false)], "blank lines are no records, long or short");
}

/// A JSON line is read in a window of the limit and a few bytes for its
/// line end. When the window ends inside a run of `\r`s, the line is whole
/// only if nothing but line ends follows: else it is past the limit, one
/// record however its `\r`s fall, and the lines after it keep their
/// numbers.
#[test]
fn a_json_line_whose_read_stops_in_a_run_of_carriage_returns_is_one_line() {
    let mib = MAX_RECORD_BYTES as usize;
    let summary = |records: &[Rec]| -> Vec<(u64, u64, bool)> {
        records.iter().map(|r| (r.record_no, r.line, r.is_malformed())).collect()
    };
    let head = "{\"event_id\":\"j1\",\"program_id\":\"";
    // A record of exactly the limit ending in `\r\r\n`, after a BOM.
    let exact = format!("{head}{}\"}}", "p".repeat(mib - head.len() - 2));
    let text = format!("\u{feff}{exact}\r\r\n{{bad}}\n{{\"event_id\":\"j3\"}}\n");
    let (records, _) = jsonl(text.as_bytes());
    assert_eq!(summary(&records), [(1, 1, false), (2, 2, true), (3, 3, false)]);

    // A line past the limit whose `\r`s (JSON whitespace) straddle the
    // window's end.
    let long = format!("{head}{}\"{}}}", "p".repeat(mib - 20 - head.len() - 1), "\r".repeat(300));
    let text = format!("{long}\n{{bad}}\n{{\"event_id\":\"j3\"}}\n");
    let (records, _) = jsonl(text.as_bytes());
    assert_eq!(summary(&records), [(1, 1, true), (2, 2, true), (3, 3, false)]);
    assert!(records[0].malformed().contains(&format!("the line is {} bytes long", long.len())), "{:?}", records[0]);

    // Blank up to the limit, then `\r`s and an object: not blank, and past it.
    let padded = format!("{}{}{{\"event_id\":\"j1\"}}", " ".repeat(mib), "\r".repeat(10));
    let text = format!("{padded}\n{{bad}}\n{{\"event_id\":\"j3\"}}\n");
    let (records, _) = jsonl(text.as_bytes());
    assert_eq!(summary(&records), [(1, 1, true), (2, 2, true), (3, 3, false)]);
}

/// A file whose lines end in a lone `\r` is counted so from its first line,
/// even when a run of blank lines longer than a record comes before the
/// header.
#[test]
fn lone_cr_lines_are_counted_through_a_long_blank_run_before_the_header() {
    let run = (2 << 20) + 3;
    let text = format!(
        "{}{HEADER}\re1,u1,,c1,,2024-01-01T10:00:00Z,,60,stb\re2,u1,,c1,,2024-01-01T10:00:00Z,,60,stb\r",
        "\r".repeat(run)
    );
    let (records, _) = csv(text.as_bytes());
    let lines: Vec<_> = records.iter().map(|r| r.line).collect();
    assert_eq!(lines, [run as u64 + 2, run as u64 + 3]);
}
