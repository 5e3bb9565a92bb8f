//! `ingest-stream`: Kinesis and Kafka (MSK or self-managed) record batches
//! through the core's stream step, with S3 as the lake and Glue as the
//! catalog.
//!
//! Kinesis batches answer with `batchItemFailures` (the event source mapping
//! uses `ReportBatchItemFailures`): a shard that stopped part-way names its
//! batch's first sequence number, and Lambda retries the batch from there,
//! skipping what was written (see `tvetl_core::stream`). Kafka event
//! sources retry whole batches, so a Kafka failure is returned as an error;
//! the core skips what the failed attempt wrote either way.

use aws_lambda_events::event::kafka::KafkaEvent;
use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};
use base64::Engine;
use serde::Serialize;
use tvetl_core::catalog::Catalog;
use tvetl_core::staging::StagingOptions;
use tvetl_core::store::ObjectStore;
use tvetl_core::stream::{ShardId, StreamFailure, StreamKind, StreamRecord, StreamReport, ingest_stream_batch};

use crate::{AwsClients, HandlerError, IngestConfig};

/// One shard's records of an event, with owned bytes.
#[derive(Debug, Clone)]
pub struct ShardBatch {
    /// The shard or topic partition.
    pub shard: ShardId,
    /// (position, arrival time in UTC microseconds, data), in event order.
    pub records: Vec<(String, i64, Vec<u8>)>,
}

impl ShardBatch {
    fn records(&self) -> Vec<StreamRecord<'_>> {
        self.records
            .iter()
            .map(|(position, arrival_us, data)| StreamRecord {
                position: position.clone(),
                arrival_us: *arrival_us,
                data,
            })
            .collect()
    }
}

/// How one shard's batch fared.
#[derive(Debug, Clone, Serialize)]
pub struct ShardOutcome {
    /// The shard or topic partition.
    pub shard: ShardId,
    /// What its batch staged and quarantined.
    pub report: StreamReport,
    /// The batch's first record, when the batch stopped part-way: where
    /// its retry starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<String>,
    /// Why it stopped, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    retryable: bool,
}

/// The Kinesis records of an event grouped by shard (a mapping's batch holds
/// one shard, but nothing here relies on it).
pub fn kinesis_batches(event: &KinesisEvent) -> Result<Vec<ShardBatch>, HandlerError> {
    let mut batches: Vec<ShardBatch> = Vec::new();
    for record in &event.records {
        let arn = record.event_source_arn.as_deref().unwrap_or_default();
        let stream = arn.rsplit_once(":stream/").map(|(_, name)| name).unwrap_or_default();
        let event_id = record.event_id.as_deref().unwrap_or_default();
        let shard = event_id.split_once(':').map(|(shard, _)| shard).unwrap_or_default();
        if stream.is_empty() || shard.is_empty() {
            return Err(HandlerError::Permanent(format!(
                "Kinesis record without a stream ARN or shard id (eventSourceARN {arn:?}, eventID {event_id:?})"
            )));
        }
        let id = ShardId { kind: StreamKind::Kinesis, stream: stream.to_owned(), shard: shard.to_owned() };
        let arrival_us = record.kinesis.approximate_arrival_timestamp.0.timestamp_micros();
        let entry = (record.kinesis.sequence_number.clone(), arrival_us, record.kinesis.data.0.clone());
        match batches.iter_mut().find(|b| b.shard == id) {
            Some(batch) => batch.records.push(entry),
            None => batches.push(ShardBatch { shard: id, records: vec![entry] }),
        }
    }
    Ok(batches)
}

/// The Kafka records of an event by topic partition. A value that is not
/// base64 is kept as its text, so the core quarantines it as malformed.
pub fn kafka_batches(event: &KafkaEvent) -> Vec<ShardBatch> {
    let mut partitions: Vec<(&String, _)> = event.records.iter().collect();
    partitions.sort_by_key(|(key, _)| *key);
    let mut batches = Vec::with_capacity(partitions.len());
    for (key, records) in partitions {
        let Some(first) = records.first() else { continue };
        let topic =
            first.topic.clone().unwrap_or_else(|| key.rsplit_once('-').map_or(key.as_str(), |(t, _)| t).to_owned());
        let shard = ShardId { kind: StreamKind::Kafka, stream: topic, shard: first.partition.to_string() };
        let records = records
            .iter()
            .map(|r| {
                let value = r.value.as_deref().unwrap_or_default();
                let data = base64::engine::general_purpose::STANDARD
                    .decode(value)
                    .unwrap_or_else(|_| value.as_bytes().to_vec());
                (r.offset.to_string(), r.timestamp.0.timestamp_micros(), data)
            })
            .collect();
        batches.push(ShardBatch { shard, records });
    }
    batches
}

/// Runs every shard's batch through the core.
pub fn ingest_batches(lake: &dyn ObjectStore, catalog: &dyn Catalog, batches: &[ShardBatch]) -> Vec<ShardOutcome> {
    batches
        .iter()
        .map(|batch| {
            let (report, failure) =
                ingest_stream_batch(lake, catalog, &batch.shard, &batch.records(), &StagingOptions::default());
            let (failed_at, error, retryable) = match failure {
                Some(StreamFailure { position, error }) => {
                    (Some(position), Some(error.to_string()), error.is_retryable())
                }
                None => (None, None, false),
            };
            ShardOutcome { shard: batch.shard.clone(), report, failed_at, error, retryable }
        })
        .collect()
}

/// The partial batch response for Kinesis: the first record of the batch of
/// every shard that stopped.
pub fn kinesis_response(outcomes: &[ShardOutcome]) -> KinesisEventResponse {
    let mut response = KinesisEventResponse::default();
    for position in outcomes.iter().filter_map(|o| o.failed_at.clone()) {
        let mut failure = KinesisBatchItemFailure::default();
        failure.item_identifier = Some(position);
        response.batch_item_failures.push(failure);
    }
    response
}

/// The answer to a Kafka batch: an error when any partition stopped, so the
/// event source retries the batch (the core skips what was written).
pub fn kafka_result(outcomes: &[ShardOutcome]) -> Result<(), HandlerError> {
    match outcomes.iter().find(|o| o.failed_at.is_some()) {
        None => Ok(()),
        Some(o) => {
            let message = format!(
                "{} {}/{} stopped at offset {}: {}",
                o.shard.kind.name(),
                o.shard.stream,
                o.shard.shard,
                o.failed_at.as_deref().unwrap_or_default(),
                o.error.as_deref().unwrap_or_default()
            );
            Err(if o.retryable { HandlerError::Retryable(message) } else { HandlerError::Permanent(message) })
        }
    }
}

/// An event this function takes.
#[derive(Debug, Clone)]
pub enum StreamEvent {
    /// A batch of a Kinesis stream's records.
    Kinesis(KinesisEvent),
    /// A batch of Kafka records (Amazon MSK or self-managed).
    Kafka(KafkaEvent),
}

impl StreamEvent {
    /// Tells a Kinesis event (`Records`) from a Kafka one (`records` by topic
    /// partition, `eventSource` `aws:kafka` or `SelfManagedKafka`).
    pub fn from_value(value: serde_json::Value) -> Result<Self, HandlerError> {
        let bad = |e: serde_json::Error| HandlerError::Permanent(format!("not a Kinesis or Kafka event: {e}"));
        if value.get("Records").is_some() {
            serde_json::from_value(value).map(StreamEvent::Kinesis).map_err(bad)
        } else if value.get("records").is_some() {
            serde_json::from_value(value).map(StreamEvent::Kafka).map_err(bad)
        } else {
            Err(HandlerError::Permanent("not a Kinesis or Kafka event: no Records or records".into()))
        }
    }
}

/// The ingest-stream function.
pub struct IngestStream {
    /// The AWS clients.
    pub clients: AwsClients,
    /// The environment's configuration.
    pub config: IngestConfig,
}

impl IngestStream {
    /// Ingests an event; answers Kinesis with its partial batch response and
    /// Kafka with `{}` or an error.
    pub async fn handle(&self, event: StreamEvent) -> Result<serde_json::Value, HandlerError> {
        let (lake, catalog) = (self.config.lake(&self.clients), self.config.catalog(&self.clients));
        let batches = match &event {
            StreamEvent::Kinesis(e) => kinesis_batches(e)?,
            StreamEvent::Kafka(e) => kafka_batches(e),
        };
        // The core is synchronous: run it off the async workers, where the
        // adapters may block on the runtime.
        let outcomes = tokio::task::spawn_blocking(move || ingest_batches(&lake, &catalog, &batches))
            .await
            .map_err(|e| HandlerError::Permanent(format!("ingest task panicked: {e}")))?;
        for o in &outcomes {
            if o.report.starts_inside_earlier_attempt {
                tracing::warn!(
                    stream = %o.shard.stream,
                    shard = %o.shard.shard,
                    "the batch starts inside a file an earlier attempt wrote (a retry shorter than an earlier \
                     attempt?): a session delivered in both may keep its older delivery in the warehouse"
                );
            }
            tracing::info!(
                stream = %o.shard.stream,
                shard = %o.shard.shard,
                rows_read = o.report.counts.rows_read,
                rows_accepted = o.report.counts.rows_accepted,
                rows_quarantined = o.report.counts.quarantined.total(),
                already_written = o.report.already_written,
                failed_at = o.failed_at.as_deref().unwrap_or(""),
                error = o.error.as_deref().unwrap_or(""),
                "shard batch ingested"
            );
        }
        let sum = |f: fn(&ShardOutcome) -> u64| outcomes.iter().map(f).sum::<u64>();
        crate::metrics::emit(
            "ingest-stream",
            &[
                ("RowsRead", sum(|o| o.report.counts.rows_read)),
                ("RowsAccepted", sum(|o| o.report.counts.rows_accepted)),
                ("RowsQuarantined", sum(|o| o.report.counts.quarantined.total())),
                ("RowsAlreadyWritten", sum(|o| o.report.already_written)),
                ("ShardsStopped", sum(|o| u64::from(o.failed_at.is_some()))),
                ("BatchesStartingInsideEarlierAttempt", sum(|o| u64::from(o.report.starts_inside_earlier_attempt))),
            ],
        );
        match event {
            StreamEvent::Kinesis(_) => Ok(serde_json::to_value(kinesis_response(&outcomes)).expect("serializes")),
            StreamEvent::Kafka(_) => kafka_result(&outcomes).map(|()| serde_json::json!({})),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinesis_records_group_by_shard_with_their_positions() {
        let event: KinesisEvent =
            serde_json::from_str(include_str!("../../../infra/events/kinesis-viewing.json")).unwrap();
        let batches = kinesis_batches(&event).unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].shard.stream, "tvetl-views-dev");
        assert_eq!(batches[0].shard.shard, "shardId-000000000000");
        assert_eq!(batches[0].records.len(), 3);
        assert_eq!(batches[0].records[0].0, "49590338271490256608559692538361571095921575989136588898");
        assert!(batches[0].records[0].2.starts_with(b"{"));
    }

    #[test]
    fn a_kinesis_record_without_a_shard_is_refused() {
        let mut event: serde_json::Value =
            serde_json::from_str(include_str!("../../../infra/events/kinesis-viewing.json")).unwrap();
        event["Records"][0]["eventID"] = serde_json::json!("");
        let event: KinesisEvent = serde_json::from_value(event).unwrap();
        assert!(matches!(kinesis_batches(&event), Err(HandlerError::Permanent(_))));
    }

    #[test]
    fn events_are_told_apart() {
        let kinesis = serde_json::from_str(include_str!("../../../infra/events/kinesis-viewing.json")).unwrap();
        assert!(matches!(StreamEvent::from_value(kinesis), Ok(StreamEvent::Kinesis(_))));
        let kafka = serde_json::from_str(include_str!("../../../infra/events/kafka-viewing.json")).unwrap();
        assert!(matches!(StreamEvent::from_value(kafka), Ok(StreamEvent::Kafka(_))));
        assert!(StreamEvent::from_value(serde_json::json!({"detail": {}})).is_err());
    }

    use tvetl_core::catalog::FileCatalog;
    use tvetl_core::store::{FaultyObjectStore, MemoryObjectStore};

    /// A catalog file in a temporary folder (kept while the folder lives).
    fn file_catalog() -> (tempfile::TempDir, FileCatalog) {
        let dir = tempfile::tempdir().unwrap();
        let catalog = FileCatalog::new(dir.path().join("catalog.json"));
        (dir, catalog)
    }

    fn kafka_fixture(name: &str) -> KafkaEvent {
        let text = match name {
            "viewing" => include_str!("../../../infra/events/kafka-viewing.json"),
            _ => include_str!("../../../infra/events/kafka-msk-example.json"),
        };
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn kafka_partitions_land_as_files_named_by_offsets() {
        let (_dir, catalog) = file_catalog();
        let lake = MemoryObjectStore::new();
        let outcomes = ingest_batches(&lake, &catalog, &kafka_batches(&kafka_fixture("viewing")));
        assert!(kafka_result(&outcomes).is_ok());
        assert_eq!(outcomes.len(), 2);
        assert_eq!(outcomes[0].shard.stream, "tvetl.views");
        assert_eq!(outcomes[0].report.counts.rows_accepted, 2);
        assert_eq!(outcomes[1].report.counts.quarantined.missing_field, 1, "m-3 has no user_id");
        let keys: Vec<String> = lake.list("").unwrap().into_iter().map(|m| m.key).collect();
        assert_eq!(
            keys,
            [
                "quarantine/viewership/ingest_date=2024-01-02/kafka~tvetl.views~1~00000000000000000007-00000000000000000007.jsonl",
                "staging/viewership/event_date=2024-01-02/kafka~tvetl.views~0~00000000000000000041-00000000000000000042.parquet",
            ]
        );
        let tables = catalog.tables().unwrap();
        assert_eq!(tables["viewership"].1, ["2024-01-02"]);
    }

    #[test]
    fn the_msk_example_value_is_not_a_session_and_is_quarantined() {
        let (_dir, catalog) = file_catalog();
        let lake = MemoryObjectStore::new();
        let outcomes = ingest_batches(&lake, &catalog, &kafka_batches(&kafka_fixture("msk")));
        assert!(kafka_result(&outcomes).is_ok());
        assert_eq!(outcomes[0].shard.stream, "AWSKafkaTopic");
        assert_eq!(outcomes[0].report.counts.rows_read, 1);
        assert_eq!(outcomes[0].report.counts.quarantined.malformed, 1);
        let quarantine = lake.list("quarantine/").unwrap();
        let text = String::from_utf8(lake.bytes(&quarantine[0].key).unwrap()).unwrap();
        let record: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(record["original"], "8d5596b4-1813-4238-b24b-6dad8e3d1c0c");
        assert_eq!(record["stream"]["kind"], "kafka");
        assert_eq!(record["stream"]["position"], "0");
    }

    #[test]
    fn a_kafka_batch_that_stops_is_an_error_and_its_retry_writes_each_record_once() {
        let (_dir, catalog) = file_catalog();
        let lake = FaultyObjectStore::new();
        let batches = kafka_batches(&kafka_fixture("viewing"));
        lake.fail_commits_after(0);
        let error = kafka_result(&ingest_batches(&lake, &catalog, &batches)).unwrap_err();
        assert!(error.is_retryable(), "{error}");
        assert!(error.to_string().contains("tvetl.views/0 stopped at offset 41"), "{error}");

        lake.heal();
        assert!(kafka_result(&ingest_batches(&lake, &catalog, &batches)).is_ok());
        let replay = ingest_batches(&lake, &catalog, &batches);
        assert_eq!(replay.iter().map(|o| o.report.already_written).sum::<u64>(), 3);
        assert_eq!(lake.inner.list("").unwrap().len(), 2);
    }

    #[test]
    fn a_stopped_kinesis_shard_is_reported_by_its_batchs_first_record() {
        let (_dir, catalog) = file_catalog();
        let lake = FaultyObjectStore::new();
        let event: KinesisEvent =
            serde_json::from_str(include_str!("../../../infra/events/kinesis-viewing.json")).unwrap();
        let batches = kinesis_batches(&event).unwrap();
        lake.fail_commits_after(0);
        let response = serde_json::to_value(kinesis_response(&ingest_batches(&lake, &catalog, &batches))).unwrap();
        // Nothing could be written, so the shard stops at its first record.
        assert_eq!(
            response,
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": "49590338271490256608559692538361571095921575989136588898"}]})
        );
        lake.heal();
        let response = serde_json::to_value(kinesis_response(&ingest_batches(&lake, &catalog, &batches))).unwrap();
        assert_eq!(response, serde_json::json!({"batchItemFailures": []}));
    }
}
