//! Which source an object belongs to (by key prefix) and how it is encoded
//! (by key extension).

use serde::{Deserialize, Serialize};

/// The three raw sources of the contract, routed by the key's first segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Viewing sessions (`viewership/`).
    Viewership,
    /// Channel metadata (`channels/`).
    Channels,
    /// Viewer demographics (`demographics/`).
    Demographics,
}

impl Source {
    /// All sources, dimensions first: a run loads them in this order so that
    /// facts are enriched with the freshest dimensions.
    pub const ALL: [Source; 3] = [Source::Channels, Source::Demographics, Source::Viewership];

    /// Routes a raw key to its source: the outermost folder that names one.
    /// The prefix may sit under a leading path (`landing/viewership/…`) as
    /// SFTP users often nest uploads; folders under it are the producer's
    /// own, so `viewership/channels/a.csv` is a file of sessions, as the
    /// local runner lists it and the raw bucket's notification (by prefix)
    /// delivers it.
    pub fn from_key(key: &str) -> Option<Source> {
        let folders = key.rsplit_once('/').map_or("", |(folders, _file)| folders);
        folders.split('/').find_map(Source::from_prefix)
    }

    fn from_prefix(segment: &str) -> Option<Source> {
        match segment {
            "viewership" => Some(Source::Viewership),
            "channels" => Some(Source::Channels),
            "demographics" => Some(Source::Demographics),
            _ => None,
        }
    }

    /// The raw prefix (and the staging table name) of this source.
    pub fn name(self) -> &'static str {
        match self {
            Source::Viewership => "viewership",
            Source::Channels => "channels",
            Source::Demographics => "demographics",
        }
    }

    /// Canonical field names, in the order decoders present them.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Source::Viewership => &crate::validate::SESSION_FIELDS,
            Source::Channels => &crate::validate::CHANNEL_FIELDS,
            Source::Demographics => &crate::validate::DEMOGRAPHIC_FIELDS,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The record framing of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// RFC 4180 CSV with a header row.
    Csv,
    /// One JSON object per line (`.jsonl`, `.ndjson`).
    JsonLines,
    /// One JSON array of objects (`.json`).
    JsonArray,
}

/// Whether the object is gzip-compressed (`.gz` suffix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain bytes.
    None,
    /// gzip (possibly multi-member).
    Gzip,
}

/// Format and compression from a key's extension, case-insensitively.
pub fn format_of(key: &str) -> Option<(InputFormat, Compression)> {
    let name = key.rsplit('/').next().unwrap_or(key).to_ascii_lowercase();
    let (stem, compression) = match name.strip_suffix(".gz") {
        Some(stem) => (stem, Compression::Gzip),
        None => (name.as_str(), Compression::None),
    };
    let format = match stem.rsplit_once('.')?.1 {
        "csv" => InputFormat::Csv,
        "jsonl" | "ndjson" => InputFormat::JsonLines,
        "json" => InputFormat::JsonArray,
        _ => return None,
    };
    Some((format, compression))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_prefix_and_extension() {
        assert_eq!(Source::from_key("viewership/a.csv"), Some(Source::Viewership));
        assert_eq!(Source::from_key("sftp/acme/channels/x.json"), Some(Source::Channels));
        assert_eq!(Source::from_key("demographics/2024/01/u.csv.gz"), Some(Source::Demographics));
        assert_eq!(Source::from_key("other/viewership"), None);
        assert_eq!(Source::from_key("viewership/channels/sessions.csv"), Some(Source::Viewership));
        assert_eq!(Source::from_key("channels/viewership/names.csv"), Some(Source::Channels));
        assert_eq!(Source::from_key("landing/demographics/viewership/u.csv"), Some(Source::Demographics));
        assert_eq!(Source::from_key("misc/a.csv"), None);
        assert_eq!(format_of("a/B.CSV"), Some((InputFormat::Csv, Compression::None)));
        assert_eq!(format_of("a/b.ndjson.gz"), Some((InputFormat::JsonLines, Compression::Gzip)));
        assert_eq!(format_of("a/b.json"), Some((InputFormat::JsonArray, Compression::None)));
        assert_eq!(format_of("a/b.parquet"), None);
        assert_eq!(format_of("a/gz"), None);
    }
}
