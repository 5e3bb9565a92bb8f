//! Rejected records as data: the contract's reason codes and the record kept
//! for each rejection.

use serde::{Deserialize, Serialize};

/// Why a record was quarantined. The string forms are the contract's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum QuarantineReason {
    /// Not parseable as a row/object of the format (column count, JSON, UTF-8).
    Malformed,
    /// A required field is absent or empty.
    MissingField,
    /// A timestamp does not parse.
    BadTimestamp,
    /// End not after start, or `duration_seconds` not a positive integer.
    BadDuration,
    /// Session longer than 24 hours.
    TooLong,
}

impl QuarantineReason {
    /// Every code, in the contract's order.
    pub const ALL: [QuarantineReason; 5] = [
        QuarantineReason::Malformed,
        QuarantineReason::MissingField,
        QuarantineReason::BadTimestamp,
        QuarantineReason::BadDuration,
        QuarantineReason::TooLong,
    ];

    /// The contract's code, e.g. `BAD_TIMESTAMP`.
    pub fn code(self) -> &'static str {
        match self {
            QuarantineReason::Malformed => "MALFORMED",
            QuarantineReason::MissingField => "MISSING_FIELD",
            QuarantineReason::BadTimestamp => "BAD_TIMESTAMP",
            QuarantineReason::BadDuration => "BAD_DURATION",
            QuarantineReason::TooLong => "TOO_LONG",
        }
    }
}

impl std::fmt::Display for QuarantineReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// A rejection: the code plus the field and message that explain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The contract's reason code.
    pub reason: QuarantineReason,
    /// The field at fault, where one is.
    pub field: Option<&'static str>,
    /// What was wrong, for a person.
    pub message: String,
}

impl Rejection {
    /// A rejection of one field.
    pub fn field(reason: QuarantineReason, field: &'static str, message: impl Into<String>) -> Self {
        Rejection { reason, field: Some(field), message: message.into() }
    }

    /// A rejection of the record as a whole.
    pub fn record(reason: QuarantineReason, message: impl Into<String>) -> Self {
        Rejection { reason, field: None, message: message.into() }
    }

    /// A record that is not one of its format (`MALFORMED`), naming the
    /// field at fault when the fault is in one.
    pub fn malformed(field: Option<&'static str>, message: impl Into<String>) -> Self {
        Rejection { reason: QuarantineReason::Malformed, field, message: message.into() }
    }
}

/// Quarantined-record counts per code, serialized with the contract's codes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineCounts {
    /// [`QuarantineReason::Malformed`].
    #[serde(rename = "MALFORMED")]
    pub malformed: u64,
    /// [`QuarantineReason::MissingField`].
    #[serde(rename = "MISSING_FIELD")]
    pub missing_field: u64,
    /// [`QuarantineReason::BadTimestamp`].
    #[serde(rename = "BAD_TIMESTAMP")]
    pub bad_timestamp: u64,
    /// [`QuarantineReason::BadDuration`].
    #[serde(rename = "BAD_DURATION")]
    pub bad_duration: u64,
    /// [`QuarantineReason::TooLong`].
    #[serde(rename = "TOO_LONG")]
    pub too_long: u64,
}

impl QuarantineCounts {
    /// Counts one more record for `reason`.
    pub fn add(&mut self, reason: QuarantineReason) {
        *self.slot(reason) += 1;
    }

    /// The count for `reason`.
    pub fn get(&self, reason: QuarantineReason) -> u64 {
        match reason {
            QuarantineReason::Malformed => self.malformed,
            QuarantineReason::MissingField => self.missing_field,
            QuarantineReason::BadTimestamp => self.bad_timestamp,
            QuarantineReason::BadDuration => self.bad_duration,
            QuarantineReason::TooLong => self.too_long,
        }
    }

    fn slot(&mut self, reason: QuarantineReason) -> &mut u64 {
        match reason {
            QuarantineReason::Malformed => &mut self.malformed,
            QuarantineReason::MissingField => &mut self.missing_field,
            QuarantineReason::BadTimestamp => &mut self.bad_timestamp,
            QuarantineReason::BadDuration => &mut self.bad_duration,
            QuarantineReason::TooLong => &mut self.too_long,
        }
    }

    /// All quarantined records.
    pub fn total(&self) -> u64 {
        QuarantineReason::ALL.iter().map(|&r| self.get(r)).sum()
    }

    /// Adds another set of counts to this one.
    pub fn merge(&mut self, other: &QuarantineCounts) {
        for reason in QuarantineReason::ALL {
            *self.slot(reason) += other.get(reason);
        }
    }
}

/// One quarantined record as it is written to `quarantine/` (one JSON line).
#[derive(Debug, Clone, Serialize)]
pub struct QuarantinedRecord<'a> {
    /// The raw object the record came from.
    pub source_key: &'a str,
    /// 1-based record number within the object (header excluded).
    pub record_no: u64,
    /// 1-based line on which the record starts.
    pub line: u64,
    /// The contract's reason code.
    pub reason: QuarantineReason,
    /// The field at fault, where one is.
    pub field: Option<&'static str>,
    /// What was wrong, for a person.
    pub message: &'a str,
    /// The record's original text, as it was written (a CSV record's quoting
    /// included); bytes that are not UTF-8 are replaced by U+FFFD.
    pub original: &'a str,
    /// Where in a stream the record was, for records that came from one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamPosition<'a>>,
}

/// A record's place in a stream: Kinesis shard and sequence number, or Kafka
/// partition and offset.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StreamPosition<'a> {
    /// `kinesis` or `kafka`.
    pub kind: &'a str,
    /// The stream name or topic.
    pub stream: &'a str,
    /// The shard id or partition number.
    pub shard: &'a str,
    /// The sequence number or offset, as the event source gave it.
    pub position: &'a str,
}
