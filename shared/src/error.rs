//! Errors of the ingest step, classified so that callers can tell a bad object
//! (report it, quarantine it, go on) from a failing dependency (retry).

use crate::store::StoreError;

/// Why an object could not be ingested.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The object's key maps to no source or format of the contract.
    #[error(
        "{key}: not a raw input of the contract (expected viewership/, channels/ or demographics/ with .csv, .jsonl, .ndjson or .json, optionally .gz)"
    )]
    Unsupported {
        /// The object's key.
        key: String,
    },
    /// The object's bytes cannot be decoded at all: not gzip, truncated, a
    /// JSON array broken mid-way. Records before the fault are discarded so
    /// that an object loads entirely or not at all.
    #[error("{key}: unreadable{}: {message}", line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Unreadable {
        /// The object's key.
        key: String,
        /// The line of the fault, when the decoder knows it.
        line: Option<u64>,
        /// The decoder's or decompressor's message.
        message: String,
    },
    /// Reading the object or writing the lake failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Encoding Parquet failed (a bug or an I/O failure underneath).
    #[error("writing Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Encoding Arrow batches failed (a bug: the schema is ours).
    #[error("building Arrow batch: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

impl IngestError {
    /// True when the fault is in the object itself: retrying cannot help, so
    /// it is reported (and quarantined) and the rest of the run goes on.
    pub fn is_bad_object(&self) -> bool {
        matches!(self, IngestError::Unsupported { .. } | IngestError::Unreadable { .. })
    }

    /// True when a retry may succeed (a store that timed out or throttled).
    pub fn is_retryable(&self) -> bool {
        match self {
            IngestError::Store(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// True when the raw object must be restored before it can be read
    /// ([`StoreError::Archived`]): neither a bad object nor one a retry now
    /// would load.
    pub fn is_archived(&self) -> bool {
        matches!(self, IngestError::Store(StoreError::Archived { .. }))
    }
}
