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

/// Compacts every table of `lake`, as of `now_us`.
pub fn compact_lake(
    lake: &dyn ObjectStore,
    config: &CompactConfig,
    now_us: i64,
) -> Result<CompactResponse, HandlerError> {
    let options = CompactionOptions {
        target_bytes: config.target_bytes,
        min_age_us: i64::try_from(config.min_age_seconds).unwrap_or(i64::MAX / 2).saturating_mul(1_000_000),
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
            ],
        );
        Ok(response)
    }
}
