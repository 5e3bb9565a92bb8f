//! `ingest-batch`: each object of an S3 event through the core's ingest step,
//! with S3 as both stores and Glue as the catalog.

use aws_lambda_events::event::s3::S3Event;
use serde::Serialize;
use tokio::runtime::Handle;
use tvetl_core::aws::glue::GlueCatalog;
use tvetl_core::aws::s3::S3ObjectStore;
use tvetl_core::catalog::register_outputs;
use tvetl_core::ingest::{IngestOptions, RecordCounts, ingest_object, record_unreadable};
use tvetl_core::store::{ObjectStore, StoreError};

use crate::events::{ObjectRef, s3_objects};
use crate::{AwsClients, HandlerError, IngestConfig};

/// How one object of the event fared.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectOutcome {
    pub bucket: String,
    pub key: String,
    /// `loaded`, `failed` (unreadable or unsupported: recorded in the
    /// quarantine) or `missing` (deleted before it was read).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub counts: RecordCounts,
    pub staged: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine_key: Option<String>,
}

/// The handler's answer: every object, and the totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestResponse {
    pub objects: Vec<ObjectOutcome>,
    pub totals: RecordCounts,
}

/// The ingest-batch function: configuration and clients, loaded once per
/// execution environment.
pub struct IngestBatch {
    pub clients: AwsClients,
    pub config: IngestConfig,
}

impl IngestBatch {
    /// Ingests every object of `event`. Returns an error only for what a
    /// retry of the whole event may fix; bad objects are reported and
    /// quarantined, and the other objects still load.
    pub async fn handle(&self, event: &S3Event) -> Result<IngestResponse, HandlerError> {
        let mut response = IngestResponse::default();
        for object in s3_objects(event) {
            let raw = S3ObjectStore::new(self.clients.s3.clone(), object.bucket.clone(), Handle::current());
            let (lake, catalog) = (self.config.lake(&self.clients), self.config.catalog(&self.clients));
            // The core is synchronous and CPU-bound: run it off the async
            // workers, where the adapters may block on the runtime.
            let outcome = tokio::task::spawn_blocking(move || ingest_one(&raw, &object, &lake, &catalog))
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
        let failed = response.objects.iter().filter(|o| o.status != "loaded").count() as u64;
        crate::metrics::emit(
            "ingest-batch",
            &[
                ("ObjectsLoaded", response.objects.len() as u64 - failed),
                ("ObjectsFailed", failed),
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
) -> Result<ObjectOutcome, HandlerError> {
    let mut outcome = ObjectOutcome {
        bucket: object.bucket.clone(),
        key: object.key.clone(),
        status: "loaded",
        error: None,
        counts: RecordCounts::default(),
        staged: Vec::new(),
        quarantine_key: None,
    };
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
            outcome.quarantine_key = Some(record_unreadable(lake, &meta, &e)?);
            Ok(outcome)
        }
        Err(e) => Err(e.into()),
    }
}
