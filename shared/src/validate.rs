//! Validation: decoded field values become typed rows or a [`Rejection`]
//! carrying one of the contract's reason codes.
//!
//! The checks run in the contract's order, so a record with several faults
//! gets the first code: `MALFORMED`, `MISSING_FIELD`, `BAD_TIMESTAMP`,
//! `BAD_DURATION`, `TOO_LONG`. The decoder decides most of `MALFORMED`; here
//! it is a value wider than the warehouse's column for it (see
//! [`SESSION_WIDTHS`]).

use crate::quarantine::{QuarantineReason, Rejection};
use crate::text::trim;
use crate::timestamp::{MAX_MICROS, MAX_MICROS_TEXT, MICROS_PER_DAY, MICROS_PER_SECOND, parse_timestamp};

/// Canonical viewing-session fields, in decoder order.
pub const SESSION_FIELDS: [&str; 9] = [
    "event_id",
    "user_id",
    "device_id",
    "channel_id",
    "program_id",
    "start_time",
    "end_time",
    "duration_seconds",
    "platform",
];
/// Canonical channel-metadata fields.
pub const CHANNEL_FIELDS: [&str; 5] = ["channel_id", "channel_name", "genre", "network", "language"];
/// Canonical demographics fields.
pub const DEMOGRAPHIC_FIELDS: [&str; 4] = ["user_id", "age_band", "gender", "region"];

/// The widest value, in UTF-8 bytes, that each of [`SESSION_FIELDS`] may
/// hold once trimmed: the `VARCHAR` widths of the warehouse's staging tables
/// (`infra/sql/schema.sql`). Redshift enforces them, and one longer value
/// fails the whole `COPY` it is in, and with it every retry of that load;
/// so a record that would not fit, or that holds a NUL character, which
/// fails a `COPY` too, is quarantined as `MALFORMED` here, on every path
/// alike. `None`: the field is not stored as text.
pub const SESSION_WIDTHS: [Option<usize>; 9] =
    [Some(256), Some(256), Some(256), Some(256), Some(256), None, None, None, None];
/// The widths of [`CHANNEL_FIELDS`], as [`SESSION_WIDTHS`].
pub const CHANNEL_WIDTHS: [Option<usize>; 5] = [Some(256), Some(1024), Some(256), Some(256), Some(64)];
/// The widths of [`DEMOGRAPHIC_FIELDS`], as [`SESSION_WIDTHS`].
pub const DEMOGRAPHIC_WIDTHS: [Option<usize>; 4] = [Some(256), Some(32), Some(32), Some(256)];

/// The first stored text the warehouse cannot hold, as a `MALFORMED`
/// rejection: wider than its column, or with a NUL character in it (which
/// Redshift's `COPY` also fails on).
fn check_storable(values: &[Option<&str>], fields: &[&'static str], widths: &[Option<usize>]) -> Result<(), Rejection> {
    for (i, width) in widths.iter().enumerate() {
        let (Some(width), Some(value)) = (width, present(values, i)) else { continue };
        let fault = if value.len() > *width {
            format!("{} is {} bytes long; the warehouse's column holds at most {width}", fields[i], value.len())
        } else if value.contains('\0') {
            format!("{} holds a NUL character, which the warehouse cannot store", fields[i])
        } else {
            continue;
        };
        return Err(Rejection::field(QuarantineReason::Malformed, fields[i], fault));
    }
    Ok(())
}

/// The longest session the contract accepts.
pub const MAX_SESSION_MICROS: i64 = MICROS_PER_DAY;

/// The platforms the contract names; anything else is stored as `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// A set-top box (`stb`).
    Stb,
    /// A smart TV's own app (`smart_tv`).
    SmartTv,
    /// A phone or tablet app (`mobile`).
    Mobile,
    /// A browser (`web`).
    Web,
    /// Any other delivered name, stored as `other`.
    Other,
}

impl Platform {
    /// Normalizes a delivered platform name (case and surrounding space ignored).
    pub fn parse(text: &str) -> Platform {
        let t = trim(text);
        if t.eq_ignore_ascii_case("stb") {
            Platform::Stb
        } else if t.eq_ignore_ascii_case("smart_tv") {
            Platform::SmartTv
        } else if t.eq_ignore_ascii_case("mobile") {
            Platform::Mobile
        } else if t.eq_ignore_ascii_case("web") {
            Platform::Web
        } else {
            Platform::Other
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Stb => "stb",
            Platform::SmartTv => "smart_tv",
            Platform::Mobile => "mobile",
            Platform::Web => "web",
            Platform::Other => "other",
        }
    }
}

/// A valid viewing session, borrowing its text from the decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewingSession<'a> {
    /// The session's natural key: deliveries with the same id are versions
    /// of one session, and the last delivery wins.
    pub event_id: &'a str,
    /// The viewer.
    pub user_id: &'a str,
    /// The device, when delivered.
    pub device_id: Option<&'a str>,
    /// The channel watched; it need not be in the channel metadata.
    pub channel_id: &'a str,
    /// The programme, when delivered.
    pub program_id: Option<&'a str>,
    /// UTC microseconds.
    pub start_us: i64,
    /// UTC microseconds; `start_us + duration` when only a duration came.
    pub end_us: i64,
    /// The delivered duration, when the end was derived from it.
    pub duration_seconds: Option<i64>,
    /// The normalized platform, when delivered.
    pub platform: Option<Platform>,
}

/// A field value with surrounding space removed; empty counts as absent.
fn present<'a>(values: &[Option<&'a str>], i: usize) -> Option<&'a str> {
    values.get(i).copied().flatten().map(trim).filter(|s| !s.is_empty())
}

fn required<'a>(values: &[Option<&'a str>], fields: &[&'static str], i: usize) -> Result<&'a str, Rejection> {
    present(values, i).ok_or_else(|| {
        Rejection::field(
            QuarantineReason::MissingField,
            fields[i],
            format!("required field {} is absent or empty", fields[i]),
        )
    })
}

/// Validates one viewing session given its values in [`SESSION_FIELDS`] order.
pub fn validate_session<'a>(values: &[Option<&'a str>]) -> Result<ViewingSession<'a>, Rejection> {
    let f = &SESSION_FIELDS;
    check_storable(values, f, &SESSION_WIDTHS)?;
    let event_id = required(values, f, 0)?;
    let user_id = required(values, f, 1)?;
    let channel_id = required(values, f, 3)?;
    let start_text = required(values, f, 5)?;
    let end_text = present(values, 6);
    let duration_text = present(values, 7);
    if end_text.is_none() && duration_text.is_none() {
        return Err(Rejection::field(
            QuarantineReason::MissingField,
            "end_time",
            "one of end_time and duration_seconds is required",
        ));
    }

    let timestamp = |field: &'static str, text: &str| {
        parse_timestamp(text).map_err(|e| Rejection::field(QuarantineReason::BadTimestamp, field, e.to_string()))
    };
    let start_us = timestamp("start_time", start_text)?;
    let end_given = end_text.map(|end| timestamp("end_time", end)).transpose()?;
    // A delivered duration must be valid even when end_time makes it unused:
    // a garbled duration is a sign of a garbled record.
    let duration_seconds = duration_text
        .map(|text| match parse_duration(text) {
            Duration::Seconds(seconds) => Ok(seconds),
            // A positive integer all the same, and far more than 24 hours.
            Duration::OutOfRange => Err(Rejection::field(
                QuarantineReason::TooLong,
                "duration_seconds",
                format!("duration_seconds {text} is more than 24 h (and more than a 64-bit integer holds)"),
            )),
            Duration::Invalid => Err(Rejection::field(
                QuarantineReason::BadDuration,
                "duration_seconds",
                format!("duration_seconds must be a positive integer, got {text:?}"),
            )),
        })
        .transpose()?;
    let end_us = match (end_given, duration_seconds) {
        (Some(end), _) => end,
        (None, Some(seconds)) => {
            seconds.checked_mul(MICROS_PER_SECOND).and_then(|d| start_us.checked_add(d)).ok_or_else(|| {
                Rejection::field(QuarantineReason::TooLong, "duration_seconds", "duration is out of range")
            })?
        }
        (None, None) => unreachable!("checked above: one of the two is present"),
    };
    if end_us <= start_us {
        return Err(Rejection::field(QuarantineReason::BadDuration, "end_time", "end_time is not after start_time"));
    }
    if end_us - start_us > MAX_SESSION_MICROS {
        let seconds = (end_us - start_us) as f64 / 1e6;
        // The field that set the end: the one to look at, as start_time is
        // what every other check of the record reads too.
        let field = if end_given.is_some() { "end_time" } else { "duration_seconds" };
        return Err(Rejection::field(
            QuarantineReason::TooLong,
            field,
            format!("session lasts {seconds} s ({:.2} h), more than 24 h", seconds / 3600.0),
        ));
    }
    // Only a derived end can pass the last instant a timestamp may name (a
    // delivered one would not have parsed): the same session with its end
    // written out is a BAD_TIMESTAMP, and so is this.
    if end_us > MAX_MICROS {
        return Err(Rejection::field(
            QuarantineReason::BadTimestamp,
            "end_time",
            format!("start_time plus duration_seconds ends after {MAX_MICROS_TEXT}, the last instant kept"),
        ));
    }
    Ok(ViewingSession {
        event_id,
        user_id,
        device_id: present(values, 2),
        channel_id,
        program_id: present(values, 4),
        start_us,
        end_us,
        // The contract uses a duration only when end_time is absent; one
        // delivered beside an end need not agree with it.
        duration_seconds: duration_seconds.filter(|_| end_given.is_none()),
        platform: present(values, 8).map(Platform::parse),
    })
}

/// What a `duration_seconds` text is.
enum Duration {
    /// A positive integer number of seconds (`"1800"`).
    Seconds(i64),
    /// A positive integer too large for 64 bits.
    OutOfRange,
    /// Not a positive integer (`1800.5`, `0`, `-5`, `+5`, `abc`).
    Invalid,
}

fn parse_duration(text: &str) -> Duration {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Duration::Invalid;
    }
    match text.parse::<i64>() {
        Ok(seconds) if seconds > 0 => Duration::Seconds(seconds),
        Ok(_) => Duration::Invalid,
        // Only digits, so the one way to fail is overflow; "000…0" parses.
        Err(_) => Duration::OutOfRange,
    }
}

/// Validates a channel-metadata record ([`CHANNEL_FIELDS`] order): the id and
/// name are required; returns the trimmed values.
pub fn validate_channel<'a>(values: &[Option<&'a str>]) -> Result<[Option<&'a str>; 5], Rejection> {
    check_storable(values, &CHANNEL_FIELDS, &CHANNEL_WIDTHS)?;
    required(values, &CHANNEL_FIELDS, 0)?;
    required(values, &CHANNEL_FIELDS, 1)?;
    Ok(std::array::from_fn(|i| present(values, i)))
}

/// Validates a demographics record ([`DEMOGRAPHIC_FIELDS`] order): the user id
/// is required; returns the trimmed values.
pub fn validate_demographic<'a>(values: &[Option<&'a str>]) -> Result<[Option<&'a str>; 4], Rejection> {
    check_storable(values, &DEMOGRAPHIC_FIELDS, &DEMOGRAPHIC_WIDTHS)?;
    required(values, &DEMOGRAPHIC_FIELDS, 0)?;
    Ok(std::array::from_fn(|i| present(values, i)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(pairs: &[(&str, &'static str)]) -> Vec<Option<&'static str>> {
        SESSION_FIELDS.iter().map(|f| pairs.iter().find(|(k, _)| k == f).map(|(_, v)| *v)).collect()
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("event_id", "e1"),
            ("user_id", "u1"),
            ("channel_id", "c1"),
            ("start_time", "2024-01-01T23:00:00Z"),
            ("end_time", "2024-01-02T01:00:00Z"),
        ]
    }

    fn with(changes: &[(&'static str, &'static str)]) -> Vec<Option<&'static str>> {
        let mut pairs = base();
        for (k, v) in changes {
            pairs.retain(|(name, _)| name != k);
            pairs.push((k, v));
        }
        session(&pairs)
    }

    fn reason(values: &[Option<&str>]) -> QuarantineReason {
        validate_session(values).unwrap_err().reason
    }

    #[test]
    fn a_valid_session_is_typed() {
        let s = validate_session(&with(&[("platform", " Smart_TV "), ("device_id", "")])).unwrap();
        assert_eq!(s.end_us - s.start_us, 2 * 3_600_000_000);
        assert_eq!(s.platform, Some(Platform::SmartTv));
        assert_eq!(s.device_id, None);
        let s = validate_session(&with(&[("platform", "roku")])).unwrap();
        assert_eq!(s.platform, Some(Platform::Other));
    }

    #[test]
    fn duration_is_used_when_end_is_absent() {
        let s = validate_session(&with(&[("end_time", ""), ("duration_seconds", "90")])).unwrap();
        assert_eq!(s.end_us - s.start_us, 90_000_000);
        assert_eq!(s.duration_seconds, Some(90));
        // An end time wins over a duration; a garbled duration is still rejected.
        let s = validate_session(&with(&[("duration_seconds", "60")])).unwrap();
        assert_eq!(s.end_us - s.start_us, 2 * 3_600_000_000);
        assert_eq!(s.duration_seconds, None, "an unused duration is not kept beside the end it disagrees with");
        assert_eq!(reason(&with(&[("duration_seconds", "abc")])), QuarantineReason::BadDuration);
    }

    #[test]
    fn a_derived_end_past_the_year_9999_is_a_bad_timestamp_as_a_written_one_is() {
        let late = [("start_time", "9999-12-31T23:00:00Z")];
        let derived = validate_session(&with(&[late[0], ("end_time", ""), ("duration_seconds", "7200")])).unwrap_err();
        assert_eq!((derived.reason, derived.field), (QuarantineReason::BadTimestamp, Some("end_time")));
        assert!(derived.message.contains("9999-12-31T23:59:59.999999Z"), "{}", derived.message);
        let written = validate_session(&with(&[late[0], ("end_time", "10000-01-01T01:00:00Z")])).unwrap_err();
        assert_eq!((written.reason, written.field), (QuarantineReason::BadTimestamp, Some("end_time")));
        let to_the_last_instant = with(&[late[0], ("end_time", ""), ("duration_seconds", "3599")]);
        let last = validate_session(&to_the_last_instant).unwrap();
        // 9999-12-31T23:59:59Z, 3599 s after the start.
        assert_eq!((last.start_us, last.end_us), (253_402_297_200_000_000, 253_402_300_799_000_000));
    }

    #[test]
    fn each_reason_code_is_given() {
        use QuarantineReason::*;
        assert_eq!(reason(&with(&[("event_id", "")])), MissingField);
        assert_eq!(reason(&with(&[("user_id", "   ")])), MissingField);
        assert_eq!(reason(&with(&[("channel_id", "")])), MissingField);
        assert_eq!(reason(&with(&[("start_time", "")])), MissingField);
        assert_eq!(reason(&with(&[("end_time", "")])), MissingField);
        assert_eq!(reason(&with(&[("start_time", "not a time")])), BadTimestamp);
        assert_eq!(reason(&with(&[("end_time", "2024-02-30T00:00:00Z")])), BadTimestamp);
        assert_eq!(reason(&with(&[("end_time", "2024-01-01T23:00:00Z")])), BadDuration);
        assert_eq!(reason(&with(&[("end_time", "2024-01-01T22:00:00Z")])), BadDuration);
        for bad in ["0", "-5", "1.5", "abc", "1e3"] {
            assert_eq!(reason(&with(&[("end_time", ""), ("duration_seconds", bad)])), BadDuration, "{bad}");
        }
        assert_eq!(reason(&with(&[("end_time", "2024-01-03T00:00:01Z")])), TooLong);
        assert_eq!(reason(&with(&[("end_time", ""), ("duration_seconds", "86401")])), TooLong);
        // Named by the field that set the end.
        let given = validate_session(&with(&[("end_time", "2024-01-03T00:00:01Z")])).unwrap_err();
        assert_eq!(given.field, Some("end_time"));
        let derived = validate_session(&with(&[("end_time", ""), ("duration_seconds", "86401")])).unwrap_err();
        assert_eq!(derived.field, Some("duration_seconds"));
        // A positive integer beyond 64 bits is still a positive integer: too long.
        for huge in ["100000000000000000000", "9223372036854775808"] {
            let r = validate_session(&with(&[("end_time", ""), ("duration_seconds", huge)])).unwrap_err();
            assert_eq!(r.reason, TooLong, "{huge}");
            assert_eq!(r.field, Some("duration_seconds"));
            assert_eq!(reason(&with(&[("duration_seconds", huge)])), TooLong, "with an end_time too: {huge}");
        }
        // The largest that fits overflows the end time: too long as well.
        assert_eq!(reason(&with(&[("end_time", ""), ("duration_seconds", "9223372036854775807")])), TooLong);
        let message = validate_session(&with(&[("end_time", ""), ("duration_seconds", "86401")])).unwrap_err().message;
        assert!(message.contains("86401 s"), "{message}");
        // Exactly 24 hours is allowed.
        let day = validate_session(&with(&[("end_time", ""), ("duration_seconds", "86400")])).unwrap();
        assert_eq!((day.end_us - day.start_us, day.duration_seconds), (86_400_000_000, Some(86400)));
    }

    #[test]
    fn the_extremes_of_the_timestamp_range_are_checked_not_overflowed() {
        use QuarantineReason::*;
        // The earliest start and the latest end there are: a session of ten
        // thousand years, whose length still fits an i64 of microseconds.
        let r = validate_session(&with(&[("start_time", "-62135596800000"), ("end_time", "253402300799999")]));
        assert_eq!(r.unwrap_err().reason, TooLong);
        // Integers past the year 9999 (here, past chrono's last date) are not
        // timestamps, whichever field holds them.
        let r = validate_session(&with(&[
            ("start_time", "9000000000000000"),
            ("end_time", ""),
            ("duration_seconds", "60"),
        ]));
        let r = r.unwrap_err();
        assert_eq!((r.reason, r.field), (BadTimestamp, Some("start_time")));
        assert_eq!(
            reason(&with(&[("start_time", "-8000000000000000"), ("end_time", "8000000000000000")])),
            BadTimestamp
        );
        assert_eq!(reason(&with(&[("end_time", "8300000000000000")])), BadTimestamp);
    }

    #[test]
    fn rejections_name_the_field() {
        let r = validate_session(&with(&[("start_time", "nope")])).unwrap_err();
        assert_eq!(r.field, Some("start_time"));
        assert!(r.message.contains("nope"), "{}", r.message);
    }

    #[test]
    fn dimensions_require_their_keys() {
        let ok = [Some("c1"), Some(" News 24 "), None, Some(""), None];
        assert_eq!(validate_channel(&ok).unwrap()[1], Some("News 24"));
        assert_eq!(
            validate_channel(&[Some("c1"), Some(""), None, None, None]).unwrap_err().reason,
            QuarantineReason::MissingField
        );
        assert_eq!(validate_demographic(&[Some(" u1 "), None, None, None]).unwrap(), [Some("u1"), None, None, None]);
        let no_user = validate_demographic(&[None, Some("18-24"), None, None]).unwrap_err();
        assert_eq!((no_user.reason, no_user.field), (QuarantineReason::MissingField, Some("user_id")));
    }

    /// A value wider than its warehouse column is MALFORMED, counted in
    /// UTF-8 bytes as Redshift counts them, and before any other fault; so
    /// is one with a NUL character.
    #[test]
    fn values_the_warehouse_cannot_hold_are_malformed() {
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        let fits = leak("e".repeat(256));
        assert_eq!(validate_session(&with(&[("event_id", fits)])).unwrap().event_id, fits);
        // Surrounding space is trimmed before it is measured, as before it is stored.
        assert_eq!(validate_session(&with(&[("event_id", leak(format!("  {fits}  ")))])).unwrap().event_id, fits);
        for (field, value) in
            [("event_id", "e".repeat(257)), ("user_id", "é".repeat(129)), ("program_id", "p".repeat(300))]
        {
            let r = validate_session(&with(&[(field, leak(value.clone()))])).unwrap_err();
            assert_eq!((r.reason, r.field), (QuarantineReason::Malformed, Some(field)), "{}", r.message);
            assert!(r.message.contains(&format!("{} bytes", value.len())), "{}", r.message);
        }
        // A NUL character, which Redshift's COPY fails on as well.
        let r = validate_session(&with(&[("channel_id", "c\u{0}1")])).unwrap_err();
        assert_eq!((r.reason, r.field), (QuarantineReason::Malformed, Some("channel_id")));
        assert!(r.message.contains("NUL"), "{}", r.message);
        // Before a missing field or a bad timestamp.
        let r =
            validate_session(&with(&[("device_id", leak("d".repeat(257))), ("start_time", "nope"), ("user_id", "")]));
        assert_eq!(r.unwrap_err().reason, QuarantineReason::Malformed);

        let name = leak("n".repeat(1025));
        let r = validate_channel(&[Some("c1"), Some(name), None, None, None]).unwrap_err();
        assert_eq!((r.reason, r.field), (QuarantineReason::Malformed, Some("channel_name")));
        assert!(validate_channel(&[Some("c1"), Some(&name[1..]), None, None, None]).is_ok());
        let r = validate_demographic(&[Some("u1"), Some(leak("a".repeat(33))), None, None]).unwrap_err();
        assert_eq!((r.reason, r.field), (QuarantineReason::Malformed, Some("age_band")));
    }

    /// The widths are the staging tables' VARCHAR widths in the schema that
    /// Redshift runs, so the two cannot drift apart.
    #[test]
    fn the_widths_are_the_schemas() {
        let widths_in = |table: &str| -> std::collections::BTreeMap<String, usize> {
            let ddl = crate::warehouse::SCHEMA_SQL;
            let start = ddl.find(&format!("CREATE TABLE IF NOT EXISTS {table} (")).expect("the table is in the schema");
            let body = &ddl[start..start + ddl[start..].find(");").expect("the table ends")];
            body.lines()
                .filter_map(|line| {
                    let (name, rest) = line.trim().split_once(' ')?;
                    let width = rest.strip_prefix("VARCHAR(")?.split(')').next()?.parse().ok()?;
                    Some((name.to_owned(), width))
                })
                .collect()
        };
        let check = |table: &str, fields: &[&str], widths: &[Option<usize>]| {
            let ddl = widths_in(table);
            for (field, width) in fields.iter().zip(widths) {
                match width {
                    Some(w) => assert_eq!(ddl.get(*field), Some(w), "{table}.{field}"),
                    // Stored normalized: every stored platform name fits.
                    None if *field == "platform" => assert!(ddl["platform"] >= "smart_tv".len()),
                    None => assert!(!ddl.contains_key(*field), "{table}.{field} is text in the schema"),
                }
            }
        };
        check("staging.viewing_sessions", &SESSION_FIELDS, &SESSION_WIDTHS);
        check("staging.channels", &CHANNEL_FIELDS, &CHANNEL_WIDTHS);
        check("staging.demographics", &DEMOGRAPHIC_FIELDS, &DEMOGRAPHIC_WIDTHS);
    }
}
