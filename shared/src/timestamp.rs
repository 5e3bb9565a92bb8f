//! The contract's timestamp forms, all stored as UTC microseconds since the
//! Unix epoch.
//!
//! ```
//! use tvetl_core::timestamp::parse_timestamp;
//! let a = parse_timestamp("2024-01-01T19:30:00+04:00").unwrap();
//! let b = parse_timestamp("2024-01-01 15:30:00").unwrap();
//! let c = parse_timestamp("1704123000000").unwrap();
//! assert_eq!(a, b);
//! assert_eq!(b, c);
//! ```

use std::sync::LazyLock;

use chrono::DateTime;
use chrono::format::{Item, Parsed, StrftimeItems};

/// Microseconds in one second.
pub const MICROS_PER_SECOND: i64 = 1_000_000;
/// Microseconds in one UTC day.
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// Why a timestamp was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a timestamp (expected RFC 3339, 'YYYY-MM-DD HH:MM:SS[.fff]' UTC or epoch milliseconds): {0:?}")]
pub struct TimestampError(pub String);

/// Epoch milliseconds of 0001-01-01T00:00:00Z, the earliest instant an
/// integer timestamp may name.
pub const MIN_EPOCH_MILLIS: i64 = -62_135_596_800_000;
/// Epoch milliseconds of 9999-12-31T23:59:59.999Z, the latest instant an
/// integer timestamp may name.
pub const MAX_EPOCH_MILLIS: i64 = 253_402_300_799_999;

/// UTC microseconds of 0001-01-01T00:00:00Z, the earliest instant kept.
pub const MIN_MICROS: i64 = MIN_EPOCH_MILLIS * 1000;
/// UTC microseconds of 9999-12-31T23:59:59.999999Z, the latest instant kept.
pub const MAX_MICROS: i64 = MAX_EPOCH_MILLIS * 1000 + 999;
/// [`MAX_MICROS`] as RFC 3339, for messages.
pub const MAX_MICROS_TEXT: &str = "9999-12-31T23:59:59.999999Z";

/// Parses RFC 3339 (`Z` or an offset, optional fraction), `YYYY-MM-DD
/// HH:MM:SS[.fff]` as UTC, or an integer of epoch milliseconds.
///
/// Every form must name an instant of the UTC years 1 to 9999
/// ([`MIN_MICROS`]..=[`MAX_MICROS`]): anything else is rejected rather than
/// staged under a partition like `event_date=+10000-01-01` or
/// `event_date=0000-12-31`, which no `YYYY-MM-DD` reader takes (and near
/// chrono's limits it had no date at all). An offset can carry a text
/// timestamp over the edge: `9999-12-31T23:30:00-01:00` is in the year
/// 10000 in UTC.
pub fn parse_timestamp(text: &str) -> Result<i64, TimestampError> {
    let s = crate::text::trim(text);
    let bad = || TimestampError(text.to_owned());
    let micros = if is_integer(s) {
        let millis: i64 = s.parse().map_err(|_| bad())?;
        millis.checked_mul(1000).ok_or_else(bad)?
    } else if s.as_bytes().get(10) == Some(&b' ')
        && let Some(t) = parse_utc_naive(s)
    {
        // The UTC form needs a space after the date's 10 bytes; RFC 3339
        // allows a space there too (with a zone), so that form is tried second.
        t
    } else {
        DateTime::parse_from_rfc3339(s).map(|t| t.timestamp_micros()).map_err(|_| bad())?
    };
    if !(MIN_MICROS..=MAX_MICROS).contains(&micros) {
        return Err(bad());
    }
    Ok(micros)
}

/// `YYYY-MM-DD HH:MM:SS[.fff]` as UTC. Same as `NaiveDateTime::parse_from_str`
/// with that format, whose format string is parsed once here rather than on
/// every call (it showed in profiles of large runs).
fn parse_utc_naive(s: &str) -> Option<i64> {
    // chrono's `%Y` also takes a sign and fewer digits (`+999-01-01`,
    // `-001-01-01`), which are not this form.
    if !is_day_layout(s.as_bytes().get(..10)?) {
        return None;
    }
    static ITEMS: LazyLock<Vec<Item<'static>>> = LazyLock::new(|| StrftimeItems::new("%Y-%m-%d %H:%M:%S%.f").collect());
    let mut parsed = Parsed::new();
    chrono::format::parse(&mut parsed, s, ITEMS.iter()).ok()?;
    parsed.to_naive_datetime_with_offset(0).ok().map(|t| t.and_utc().timestamp_micros())
}

fn is_integer(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Days since 1970-01-01 of the UTC calendar date holding `micros`.
pub fn utc_day(micros: i64) -> i32 {
    micros.div_euclid(MICROS_PER_DAY) as i32
}

/// `YYYY-MM-DD` of a day number (days since the Unix epoch).
pub fn format_day(day: i32) -> String {
    let date = chrono::NaiveDate::from_num_days_from_ce_opt(day + EPOCH_DAYS_FROM_CE)
        .expect("day numbers of parsed timestamps are in chrono's range (years 1 to 9999)");
    date.format("%Y-%m-%d").to_string()
}

/// Day number (days since the Unix epoch) of a `YYYY-MM-DD` date, written
/// exactly so (`2024-1-2` is refused, as it would be echoed back unpadded).
pub fn parse_day(text: &str) -> Option<i32> {
    use chrono::Datelike;
    if !is_day_layout(text.as_bytes()) {
        return None;
    }
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(date.num_days_from_ce() - EPOCH_DAYS_FROM_CE)
}

/// Whether `b` is laid out as `YYYY-MM-DD`: ten bytes, digits and two dashes.
fn is_day_layout(b: &[u8]) -> bool {
    b.len() == 10 && b.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() })
}

/// `num_days_from_ce` of 1970-01-01.
const EPOCH_DAYS_FROM_CE: i32 = 719_163;

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_704_103_200_000_000; // 2024-01-01T10:00:00Z

    #[test]
    fn every_contract_form_parses_to_the_same_instant() {
        for form in [
            "2024-01-01T10:00:00Z",
            "2024-01-01T10:00:00.000Z",
            "2024-01-01t10:00:00z",
            "2024-01-01T14:00:00+04:00",
            "2024-01-01T05:30:00-04:30",
            "2024-01-01 10:00:00",
            "2024-01-01 10:00:00.000",
            " 2024-01-01 10:00:00 ",
            "2024-01-01 14:00:00+04:00",
            "2024-01-01 10:00:00Z",
            "1704103200000",
        ] {
            assert_eq!(parse_timestamp(form), Ok(T0), "{form}");
        }
    }

    #[test]
    fn fractions_keep_microseconds() {
        assert_eq!(parse_timestamp("2024-01-01T10:00:00.123456Z"), Ok(T0 + 123_456));
        assert_eq!(parse_timestamp("2024-01-01 10:00:00.5"), Ok(T0 + 500_000));
        assert_eq!(parse_timestamp("1704103200001"), Ok(T0 + 1_000));
    }

    #[test]
    fn rejects_what_is_not_a_timestamp() {
        for bad in [
            "",
            "yesterday",
            "2024-13-01T10:00:00Z",
            "2024-01-32 10:00:00",
            "2024-01-01T25:00:00Z",
            "2024-01-01",
            "10:00:00",
            "1.7e12",
            "99999999999999999999999",
            "-",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn epoch_milliseconds_name_only_the_years_1_to_9999() {
        let first = parse_timestamp(&MIN_EPOCH_MILLIS.to_string()).unwrap();
        let last = parse_timestamp(&MAX_EPOCH_MILLIS.to_string()).unwrap();
        assert_eq!(format_day(utc_day(first)), "0001-01-01");
        assert_eq!(format_day(utc_day(last)), "9999-12-31");
        assert_eq!(parse_timestamp("9999-12-31T23:59:59.999Z"), Ok(last));
        assert_eq!(parse_timestamp("0001-01-01 00:00:00"), Ok(first));
        // Each fits an i64 of microseconds; the last two are past chrono's
        // last date, where formatting the day used to panic.
        let beyond = [
            MAX_EPOCH_MILLIS + 1,
            MIN_EPOCH_MILLIS - 1,
            300_000_000_000_000,
            9_000_000_000_000_000,
            -9_000_000_000_000_000,
        ];
        for out in beyond.map(|ms| ms.to_string()) {
            assert!(parse_timestamp(&out).is_err(), "{out} parsed");
        }
    }

    #[test]
    fn text_forms_name_only_the_utc_years_1_to_9999_too() {
        assert_eq!(parse_timestamp("9999-12-31T23:59:59.999999Z"), Ok(MAX_MICROS));
        assert_eq!(parse_timestamp("0001-01-01T01:00:00+01:00"), Ok(MIN_MICROS));
        for out in [
            // An offset carries them over the edge in UTC.
            "9999-12-31T23:30:00-01:00",
            "9999-12-31 23:30:00-01:00",
            "0001-01-01T00:30:00+01:00",
            "0000-01-01 10:00:00",
            "0000-01-01T10:00:00Z",
            // Signed or short years are not the UTC form's `YYYY`.
            "-001-01-01 10:00:00",
            "+999-01-01 10:00:00",
            "+2024-01-01 10:00:00",
        ] {
            assert!(parse_timestamp(out).is_err(), "{out} parsed");
        }
    }

    #[test]
    fn days_round_trip() {
        assert_eq!(utc_day(T0), 19_723);
        assert_eq!(format_day(19_723), "2024-01-01");
        assert_eq!(parse_day("2024-01-01"), Some(19_723));
        for loose in ["2024-1-1", "2024-01-1", " 2024-01-01", "2024/01/01", "2024-02-30", "+2024-01-01"] {
            assert_eq!(parse_day(loose), None, "{loose:?}");
        }
        assert_eq!(utc_day(-1), -1);
        assert_eq!(format_day(-1), "1969-12-31");
    }
}
