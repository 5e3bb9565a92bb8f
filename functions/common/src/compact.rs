//! `compact-partitions`: on a schedule, the small staging files of every
//! table merged per partition (see `tvetl_core::compact`).

use serde::Serialize;
use tokio::runtime::Handle;
use tvetl_core::Source;
use tvetl_core::aws::s3::S3ObjectStore;
use tvetl_core::compact::{CompactionOptions, CompactionReport, compact_table};
use tvetl_core::staging::StagingOptions;
use tvetl_core::store::ObjectStore;

use crate::{AwsClients, CompactConfig, HandlerError};

/// What one run compacted, per table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompactResponse {
    /// Each staging table and what its compaction wrote and removed.
    pub tables: Vec<(Source, CompactionReport)>,
}

/// The longest a Lambda invocation runs (its maximum timeout). The stream's
/// maximum record age bounds when Lambda may *start* a retry of a file's
/// records; the retry lists what the earlier attempt wrote after it starts,
/// so the file must outlive the record age by as long as an invocation runs.
pub const RETRY_IN_FLIGHT_SECONDS: u64 = 900;

/// The age below which compaction leaves a file alone: the configured
/// minimum, and when the stream's maximum record age is known, at least that
/// age plus [`RETRY_IN_FLIGHT_SECONDS`].
pub fn min_age_seconds(config: &CompactConfig) -> u64 {
    let retries_end = config.stream_max_record_age_seconds.map(|age| age.saturating_add(RETRY_IN_FLIGHT_SECONDS));
    config.min_age_seconds.max(retries_end.unwrap_or(0))
}

/// Compacts every table of `lake`, as of `now_us`: files older than
/// [`min_age_seconds`].
pub fn compact_lake(
    lake: &dyn ObjectStore,
    config: &CompactConfig,
    now_us: i64,
) -> Result<CompactResponse, HandlerError> {
    let min_age_seconds = min_age_seconds(config);
    let options = CompactionOptions {
        target_bytes: config.target_bytes,
        min_age_us: i64::try_from(min_age_seconds).unwrap_or(i64::MAX / 2).saturating_mul(1_000_000),
        now_us,
        staging: StagingOptions::default(),
    };
    let mut response = CompactResponse::default();
    for source in Source::ALL {
        let report = compact_table(lake, source, &options)?;
        tracing::info!(
            table = %source,
            written = report.written.len(),
            removed = report.removed.len(),
            recovered = report.recovered,
            "compacted"
        );
        response.tables.push((source, report));
    }
    Ok(response)
}

/// The run's outcome: a failure naming the staging files it could not read,
/// if any. Every other file was compacted; the run still fails, as they need
/// someone to look at them (a load's COPY rejects them too).
pub fn outcome(response: CompactResponse) -> Result<CompactResponse, HandlerError> {
    let unreadable: Vec<&String> = response.tables.iter().flat_map(|(_, r)| &r.unreadable).collect();
    let Some(first) = unreadable.first() else { return Ok(response) };
    for file in &unreadable {
        tracing::error!(file = %file, "staging file not readable; left uncompacted");
    }
    Err(HandlerError::Permanent(format!(
        "{} staging file(s) could not be read and were left uncompacted (the rest was compacted); the first: {first}",
        unreadable.len()
    )))
}

/// The compact-partitions function.
pub struct CompactPartitions {
    /// The AWS clients, loaded once per execution environment.
    pub clients: AwsClients,
    /// The environment's configuration.
    pub config: CompactConfig,
}

impl CompactPartitions {
    /// Compacts the lake; the event (a schedule's) carries nothing it needs.
    pub async fn handle(&self) -> Result<CompactResponse, HandlerError> {
        let lake = S3ObjectStore::new(self.clients.s3.clone(), self.config.lake_bucket.clone(), Handle::current())
            .with_part_size(self.config.part_size);
        let config = self.config.clone();
        let now_us =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
        let response = tokio::task::spawn_blocking(move || compact_lake(&lake, &config, now_us))
            .await
            .map_err(|e| HandlerError::Permanent(format!("compaction task panicked: {e}")))??;
        let sum = |f: fn(&CompactionReport) -> u64| response.tables.iter().map(|(_, r)| f(r)).sum::<u64>();
        crate::metrics::emit(
            "compact-partitions",
            &[
                ("FilesWritten", sum(|r| r.written.len() as u64)),
                ("FilesRemoved", sum(|r| r.removed.len() as u64)),
                ("CompactionsRecovered", sum(|r| r.recovered)),
                ("FilesUnreadable", sum(|r| r.unreadable.len() as u64)),
            ],
        );
        outcome(response)
    }
}

#[cfg(test)]
mod tests {
    use tvetl_core::catalog::NoCatalog;
    use tvetl_core::store::MemoryObjectStore;
    use tvetl_core::stream::{ShardId, StreamKind, StreamRecord, ingest_stream_batch};

    use super::*;

    /// One small staging file of 2024-01-01 per id, from a stream batch of
    /// one record each, written at time 0 (the memory store's).
    fn stream_files(lake: &MemoryObjectStore, ids: &[&str]) {
        let shard = ShardId { kind: StreamKind::Kinesis, stream: "views".into(), shard: "shardId-0".into() };
        for (n, id) in ids.iter().enumerate() {
            let data = format!(
                r#"{{"event_id":"{id}","user_id":"u1","channel_id":"c1","start_time":"2024-01-01T10:00:00Z","duration_seconds":60}}"#
            );
            let record = StreamRecord { position: format!("{}", 100 * (n + 1)), arrival_us: 0, data: data.as_bytes() };
            let (_, failure) = ingest_stream_batch(lake, &NoCatalog, &shard, &[record], &StagingOptions::default());
            assert!(failure.is_none());
        }
    }

    fn config(min_age_seconds: u64, stream_max_record_age_seconds: Option<u64>) -> CompactConfig {
        CompactConfig {
            lake_bucket: "lake".into(),
            target_bytes: 128 << 20,
            min_age_seconds,
            stream_max_record_age_seconds,
            part_size: 8 << 20,
        }
    }

    #[test]
    fn stream_files_outlive_the_record_age_by_the_longest_invocation_before_they_are_merged() {
        let lake = MemoryObjectStore::new();
        stream_files(&lake, &["e1", "e2"]);
        let staged = || lake.list("staging/viewership/").unwrap().len();
        assert_eq!(staged(), 2);

        // As the template sets it: the record age as the minimum too.
        let record_age = 3_600u64;
        let config = config(record_age, Some(record_age));
        let at = |seconds: u64| (seconds * 1_000_000) as i64;
        // Past the record age, a retry Lambda started just before it may
        // still be listing the files: they stay.
        compact_lake(&lake, &config, at(record_age + RETRY_IN_FLIGHT_SECONDS - 1)).unwrap();
        assert_eq!(staged(), 2);
        // Once that invocation must have ended, they are merged.
        let response = compact_lake(&lake, &config, at(record_age + RETRY_IN_FLIGHT_SECONDS)).unwrap();
        assert_eq!(staged(), 1);
        let viewership = &response.tables.iter().find(|(s, _)| *s == Source::Viewership).unwrap().1;
        assert_eq!(viewership.removed.len(), 2);
    }

    #[test]
    fn the_minimum_age_is_the_configured_one_or_the_streams_retries_whichever_is_longer() {
        assert_eq!(min_age_seconds(&config(0, None)), 0, "no stream: the configured age alone");
        assert_eq!(min_age_seconds(&config(86_400, Some(3_600))), 86_400);
        assert_eq!(min_age_seconds(&config(3_600, Some(3_600))), 4_500);
        assert_eq!(min_age_seconds(&config(0, Some(604_800))), 605_700, "the longest record age");
    }

    #[test]
    fn a_run_that_left_a_file_it_could_not_read_fails_after_compacting_the_rest() {
        let lake = MemoryObjectStore::new();
        stream_files(&lake, &["e1", "e2", "e3"]);
        let keys: Vec<String> = lake.list("staging/viewership/").unwrap().into_iter().map(|o| o.key).collect();
        lake.put(&keys[1], b"not parquet").unwrap();
        let response = compact_lake(&lake, &config(0, None), 0).unwrap();
        let viewership = &response.tables.iter().find(|(s, _)| *s == Source::Viewership).unwrap().1;
        assert_eq!((viewership.written.len(), viewership.unreadable.len()), (1, 1), "counted for the metrics");
        match outcome(response) {
            Err(HandlerError::Permanent(message)) => {
                assert!(message.starts_with("1 staging file(s) could not be read"), "{message}");
                assert!(message.contains(&keys[1]), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let left: Vec<String> = lake.list("staging/viewership/").unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.contains(&keys[1]) && left.iter().any(|k| k.contains("/compacted-")), "{left:?}");
    }
}
