//! The TV viewership ETL core.
//!
//! Everything the Lambdas and the local runner (`tvetl`) have in common lives
//! here: decoding raw objects ([`decode`]), validating them into
//! [`ViewingSession`]s or [`QuarantineReason`]s ([`validate`]), writing
//! Hive-partitioned staging Parquet ([`staging`]), and the warehouse SQL
//! ([`warehouse`]). Side effects go through small ports ([`store::ObjectStore`],
//! [`catalog::Catalog`], [`warehouse::Warehouse`]) so the same code runs against
//! S3/Glue/Redshift, an emulator, or a folder on disk.
//!
//! The one entry point most callers need is [`ingest::ingest_object`]:
//!
//! ```
//! use tvetl_core::{ingest::{ingest_object, IngestOptions}, store::{LocalObjectStore, ObjectStore}};
//! let raw = tempfile::tempdir().unwrap();
//! let lake = tempfile::tempdir().unwrap();
//! std::fs::create_dir_all(raw.path().join("viewership")).unwrap();
//! std::fs::write(
//!     raw.path().join("viewership/a.csv"),
//!     "event_id,user_id,channel_id,start_time,duration_seconds\ne1,u1,c1,2024-01-01T10:00:00Z,60\ne2,,c1,2024-01-01T10:00:00Z,60\n",
//! ).unwrap();
//! let raw = LocalObjectStore::new(raw.path());
//! let lake = LocalObjectStore::new(lake.path());
//! let object = raw.head("viewership/a.csv").unwrap();
//! let report = ingest_object(&raw, &object, &lake, &IngestOptions::default()).unwrap();
//! assert_eq!(report.counts.rows_read, 2);
//! assert_eq!(report.counts.rows_accepted, 1);
//! assert_eq!(report.counts.quarantined.missing_field, 1);
//! ```

// A warning, so CI's `clippy -D warnings` fails on an undocumented public item.
#![warn(missing_docs)]

#[cfg(feature = "aws")]
pub mod aws;
pub mod catalog;
pub mod compact;
pub mod daysplit;
pub mod decode;
pub mod error;
pub mod ingest;
pub mod part_buffer;
pub mod quarantine;
pub mod schema;
pub mod source;
pub mod staging;
pub mod store;
pub mod stream;
mod text;
pub mod timestamp;
pub mod validate;
pub mod warehouse;

pub use quarantine::QuarantineReason;
pub use source::{Compression, InputFormat, Source};
pub use validate::ViewingSession;
