//! `ingest-batch`: each object of an S3 event through the core's ingest step,
//! with S3 as both stores and Glue as the catalog.

use aws_lambda_events::event::s3::S3Event;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tvetl_core::aws::glue::GlueCatalog;
use tvetl_core::aws::s3::{RestoreRequest, S3ObjectStore};
use tvetl_core::catalog::{register_outputs, register_quarantine};
use tvetl_core::ingest::{IngestOptions, RecordCounts, ingest_object, record_unreadable};
use tvetl_core::store::{ObjectStore, StoreError};

use crate::events::{ObjectRef, s3_objects};
use crate::{AwsClients, HandlerError, IngestConfig, RestorePolicy};

/// How one object of the event fared.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectOutcome {
    /// The raw object's bucket.
    pub bucket: String,
    /// The raw object's key.
    pub key: String,
    /// `loaded`, `failed` (unreadable or unsupported: recorded in the
    /// quarantine), `archived` (in Glacier with no restored copy: not read,
    /// not quarantined), `missing` (deleted before it was read) or
    /// `skipped` (a folder marker: a key ending in `/`, as the S3 console
    /// makes).
    pub status: &'static str,
    /// Why it was not loaded; absent when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its records read, accepted and quarantined.
    pub counts: RecordCounts,
    /// The lake keys of the staging files it wrote.
    pub staged: Vec<String>,
    /// The lake key of its quarantine file, when it had rejected records or
    /// could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine_key: Option<String>,
    /// For an `archived` object: `requested` when this invocation asked S3
    /// to restore it, `in_progress` when a restore was already under way.
    /// Absent when restores are off (`RESTORE_ARCHIVED_DAYS` = 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore: Option<&'static str>,
}

/// The handler's answer: every object, and the totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestResponse {
    /// Each object of the request, in its order.
    pub objects: Vec<ObjectOutcome>,
    /// The objects' counts added up.
    pub totals: RecordCounts,
}

/// What ingest-batch is invoked with: an S3 notification of new raw
/// objects, or one raw object named directly. The backfill state machine's
/// Distributed Map sends the second for every object it lists under a
/// prefix, with the key as stored (not URL-encoded as in a notification).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum IngestRequest {
    /// One object, named directly.
    Object {
        /// The raw bucket.
        bucket: String,
        /// The object's key, as stored.
        key: String,
    },
    /// An S3 ObjectCreated notification.
    S3(S3Event),
}

impl IngestRequest {
    /// The objects to ingest, in order.
    pub fn objects(&self) -> Result<Vec<ObjectRef>, HandlerError> {
        match self {
            IngestRequest::Object { bucket, key } if bucket.is_empty() || key.is_empty() => {
                Err(HandlerError::Permanent(format!("the request names no object: bucket {bucket:?}, key {key:?}")))
            }
            IngestRequest::Object { bucket, key } => Ok(vec![ObjectRef { bucket: bucket.clone(), key: key.clone() }]),
            IngestRequest::S3(event) => Ok(s3_objects(event)),
        }
    }
}

impl From<S3Event> for IngestRequest {
    fn from(event: S3Event) -> Self {
        IngestRequest::S3(event)
    }
}

/// The ingest-batch function: configuration and clients, loaded once per
/// execution environment.
pub struct IngestBatch {
    /// The AWS clients.
    pub clients: AwsClients,
    /// The environment's configuration.
    pub config: IngestConfig,
}

impl IngestBatch {
    /// Ingests every object of `request`. Returns an error only for what a
    /// retry of the whole request may fix; bad objects are reported and
    /// quarantined, and the other objects still load.
    pub async fn handle(&self, request: &IngestRequest) -> Result<IngestResponse, HandlerError> {
        let mut response = IngestResponse::default();
        for object in request.objects()? {
            // Versions by S3 version id: content put back to what a key held
            // before is a new version, which a later load takes.
            let raw = S3ObjectStore::new(self.clients.s3.clone(), object.bucket.clone(), Handle::current())
                .with_object_versions();
            let (lake, catalog) = (self.config.lake(&self.clients), self.config.catalog(&self.clients));
            let restore = self.config.restore_archived.clone();
            // The core is synchronous and CPU-bound: run it off the async
            // workers, where the adapters may block on the runtime.
            let outcome =
                tokio::task::spawn_blocking(move || ingest_one(&raw, &object, &lake, &catalog, restore.as_ref()))
                    .await
                    .map_err(|e| HandlerError::Permanent(format!("ingest task panicked: {e}")))??;
            tracing::info!(
                key = %outcome.key,
                status = outcome.status,
                rows_read = outcome.counts.rows_read,
                rows_accepted = outcome.counts.rows_accepted,
                rows_quarantined = outcome.counts.quarantined.total(),
                error = outcome.error.as_deref().unwrap_or(""),
                "object ingested"
            );
            response.totals.merge(&outcome.counts);
            response.objects.push(outcome);
        }
        let count = |status: &str| response.objects.iter().filter(|o| o.status == status).count() as u64;
        crate::metrics::emit(
            "ingest-batch",
            &[
                ("ObjectsLoaded", count("loaded")),
                ("ObjectsFailed", count("failed")),
                ("ObjectsMissing", count("missing")),
                ("ObjectsSkipped", count("skipped")),
                ("ObjectsArchived", count("archived")),
                ("RowsRead", response.totals.rows_read),
                ("RowsAccepted", response.totals.rows_accepted),
                ("RowsQuarantined", response.totals.quarantined.total()),
            ],
        );
        Ok(response)
    }
}

fn ingest_one(
    raw: &S3ObjectStore,
    object: &ObjectRef,
    lake: &S3ObjectStore,
    catalog: &GlueCatalog,
    restore: Option<&RestorePolicy>,
) -> Result<ObjectOutcome, HandlerError> {
    let mut outcome = ObjectOutcome {
        bucket: object.bucket.clone(),
        key: object.key.clone(),
        status: "loaded",
        error: None,
        counts: RecordCounts::default(),
        staged: Vec::new(),
        quarantine_key: None,
        restore: None,
    };
    if object.key.ends_with('/') {
        // Nothing to read, and not an input to quarantine: a backfill over a
        // prefix lists the console's folders along with the files.
        outcome.status = "skipped";
        outcome.error = Some(format!("{}: a folder marker, not a raw object", object.key));
        return Ok(outcome);
    }
    let meta = match raw.head(&object.key) {
        Ok(meta) => meta,
        Err(StoreError::NotFound { .. }) => {
            outcome.status = "missing";
            outcome.error = Some(format!("s3://{}/{} no longer exists", object.bucket, object.key));
            return Ok(outcome);
        }
        Err(e) => return Err(e.into()),
    };
    match ingest_object(raw, &meta, lake, &IngestOptions::default()) {
        Ok(report) => {
            register_outputs(catalog, &report)?;
            outcome.counts = report.counts;
            outcome.staged = report.staged.into_iter().map(|f| f.key).collect();
            outcome.quarantine_key = report.quarantine_key;
            Ok(outcome)
        }
        Err(e) if e.is_bad_object() => {
            outcome.status = "failed";
            outcome.error = Some(e.to_string());
            let key = record_unreadable(lake, &meta, &e)?;
            register_quarantine(catalog, &key)?;
            outcome.quarantine_key = Some(key);
            Ok(outcome)
        }
        // Not the object's fault and not fixed by a retry within the
        // hour: reported, so that a backfill over old raw data goes on past
        // it, and restored if so configured, to be ingested on completion.
        Err(e) if e.is_archived() => {
            outcome.status = "archived";
            let mut error = format!("s3://{}/{}", object.bucket, e);
            match restore {
                None => {
                    error.push_str("; restores are off (RESTORE_ARCHIVED_DAYS = 0): restore it, then ingest it again")
                }
                Some(policy) => {
                    let (state, phrase) = match raw.request_restore(&object.key, policy.days, &policy.tier)? {
                        RestoreRequest::Requested => ("requested", "requested"),
                        RestoreRequest::AlreadyInProgress => ("in_progress", "already under way"),
                    };
                    outcome.restore = Some(state);
                    error.push_str(&format!(
                        "; a {} restore for {} days is {phrase}: the raw bucket's restore-completed notification ingests it",
                        policy.tier, policy.days
                    ));
                }
            }
            outcome.error = Some(error);
            Ok(outcome)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(json: &str) -> Result<Vec<ObjectRef>, HandlerError> {
        serde_json::from_str::<IngestRequest>(json).expect("a request").objects()
    }

    #[test]
    fn requests_are_s3_notifications_or_one_object_named_as_stored() {
        let named = objects(r#"{"bucket": "raw", "key": "viewership/day 1/a+b%20.csv"}"#).unwrap();
        assert_eq!(named, [ObjectRef { bucket: "raw".into(), key: "viewership/day 1/a+b%20.csv".into() }]);
        let example = objects(include_str!("../../../infra/events/ingest-object.json")).unwrap();
        assert_eq!(example[0].key, "viewership/2023/sessions 2023-12-31.csv");

        // The backfill's items carry more fields (size, storage class):
        // they are ignored.
        let listed = objects(r#"{"bucket": "raw", "key": "channels/c.json", "size": 10, "storage_class": "STANDARD"}"#);
        assert_eq!(listed.unwrap()[0].key, "channels/c.json");

        let event = include_str!("../../../infra/events/s3-object-created.json");
        let notified = objects(event).unwrap();
        assert!(!notified.is_empty());
        let parsed: S3Event = serde_json::from_str(event).unwrap();
        assert_eq!(notified, s3_objects(&parsed), "a notification's keys are decoded as before");
    }

    #[test]
    fn a_request_naming_no_object_is_a_permanent_error() {
        let error = objects(r#"{"bucket": "raw", "key": ""}"#).unwrap_err();
        assert!(!error.is_retryable());
        assert!(error.to_string().contains("names no object"), "{error}");
        assert!(
            serde_json::from_str::<IngestRequest>(r#"{"key": "viewership/a.csv"}"#).is_err(),
            "a bucket is required"
        );
    }
}
