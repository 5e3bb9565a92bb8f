//! Configuration by environment variables, and the AWS clients.

use aws_config::BehaviorVersion;

/// A missing or invalid environment variable.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}: {problem}")]
pub struct ConfigError {
    /// The variable's name.
    pub name: &'static str,
    /// What is wrong with it: absent, or the value and why it is invalid.
    pub problem: String,
}

fn required(name: &'static str) -> Result<String, ConfigError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => Err(ConfigError { name, problem: "is required".into() }),
    }
}

/// What `ingest-batch` needs.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// `LAKE_BUCKET`: where staging Parquet and the quarantine go.
    pub lake_bucket: String,
    /// `GLUE_DATABASE`: the catalog database of the staging tables.
    pub glue_database: String,
    /// `MULTIPART_PART_SIZE` (bytes, default 8 MiB): the part size of
    /// uploads of large staging files.
    pub part_size: usize,
    /// `UPLOAD_MEMORY_BYTES` (default 64 MiB): what the open uploads hold in
    /// memory together. Beyond it, parts in the making go to temporary files
    /// under `TMPDIR` (`/tmp`, the function's ephemeral storage).
    pub upload_memory: usize,
    /// `RESTORE_ARCHIVED_DAYS` (default 0: off) and `RESTORE_ARCHIVED_TIER`
    /// (default `Bulk`): what to do with a raw object that has moved to an
    /// archive storage class (the raw bucket's lifecycle rule sends it to
    /// Glacier), as a backfill finds it. It is always reported as
    /// `archived`; with days set, a restore of it is requested too, and the
    /// bucket's `s3:ObjectRestore:Completed` notification ingests it.
    pub restore_archived: Option<RestorePolicy>,
}

/// How ingest-batch restores an archived raw object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePolicy {
    /// How long the restored copy stays readable.
    pub days: i32,
    /// S3's retrieval tier: `Bulk`, `Standard` or `Expedited`.
    pub tier: String,
}

impl IngestConfig {
    /// Reads the configuration from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(IngestConfig {
            lake_bucket: required("LAKE_BUCKET")?,
            glue_database: required("GLUE_DATABASE")?,
            part_size: number("MULTIPART_PART_SIZE", tvetl_core::aws::s3::DEFAULT_PART_SIZE)?,
            upload_memory: number("UPLOAD_MEMORY_BYTES", tvetl_core::aws::s3::DEFAULT_UPLOAD_MEMORY)?,
            restore_archived: restore_policy(
                number("RESTORE_ARCHIVED_DAYS", 0)?,
                optional("RESTORE_ARCHIVED_TIER").as_deref(),
            )?,
        })
    }
}

fn restore_policy(days: i32, tier: Option<&str>) -> Result<Option<RestorePolicy>, ConfigError> {
    const TIERS: [&str; 3] = ["Bulk", "Standard", "Expedited"];
    let tier = tier.unwrap_or("Bulk");
    let Some(tier) = TIERS.iter().find(|t| t.eq_ignore_ascii_case(tier)) else {
        return Err(ConfigError { name: "RESTORE_ARCHIVED_TIER", problem: format!("{tier:?}: not one of {TIERS:?}") });
    };
    match days {
        0 => Ok(None),
        // S3 refuses a restore for more days than this.
        1..=36_500 => Ok(Some(RestorePolicy { days, tier: (*tier).to_owned() })),
        _ => Err(ConfigError { name: "RESTORE_ARCHIVED_DAYS", problem: format!("{days}: not 0 (off) or 1-36500") }),
    }
}

impl IngestConfig {
    /// The lake bucket as the core's object store, on the current runtime.
    pub fn lake(&self, clients: &AwsClients) -> tvetl_core::aws::s3::S3ObjectStore {
        tvetl_core::aws::s3::S3ObjectStore::new(
            clients.s3.clone(),
            self.lake_bucket.clone(),
            tokio::runtime::Handle::current(),
        )
        .with_part_size(self.part_size)
        .with_upload_memory(self.upload_memory, std::env::temp_dir())
    }

    /// The Glue database as the core's catalog, on the current runtime.
    pub fn catalog(&self, clients: &AwsClients) -> tvetl_core::aws::glue::GlueCatalog {
        tvetl_core::aws::glue::GlueCatalog::new(
            clients.glue.clone(),
            self.glue_database.clone(),
            self.lake_bucket.clone(),
            tokio::runtime::Handle::current(),
        )
    }
}

/// Every AWS client, from one configuration load: `AWS_ENDPOINT_URL` (or
/// `AWS_ENDPOINT_URL_S3`, …) points them all at an emulator.
#[derive(Clone)]
pub struct AwsClients {
    /// S3, path-style when an emulator's endpoint is set.
    pub s3: aws_sdk_s3::Client,
    /// The Glue Data Catalog.
    pub glue: aws_sdk_glue::Client,
    /// The Redshift Data API.
    pub redshift_data: aws_sdk_redshiftdata::Client,
    /// SQS, for the lake queue's message visibility.
    pub sqs: aws_sdk_sqs::Client,
}

impl AwsClients {
    /// Loads the shared configuration (credentials chain, region, endpoint).
    pub async fn load() -> Self {
        let shared = aws_config::load_defaults(BehaviorVersion::latest()).await;
        // Emulators serve buckets by path, not by virtual host.
        let path_style =
            std::env::var_os("AWS_ENDPOINT_URL").is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        let s3 = aws_sdk_s3::config::Builder::from(&shared).force_path_style(path_style).build();
        AwsClients {
            s3: aws_sdk_s3::Client::from_conf(s3),
            glue: aws_sdk_glue::Client::new(&shared),
            redshift_data: aws_sdk_redshiftdata::Client::new(&shared),
            sqs: aws_sdk_sqs::Client::new(&shared),
        }
    }
}

/// What `load-warehouse` needs.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `LAKE_BUCKET`: where the staging files are.
    pub lake_bucket: String,
    /// `REDSHIFT_WORKGROUP_NAME` (Serverless) …
    pub workgroup: Option<String>,
    /// … or `REDSHIFT_CLUSTER_IDENTIFIER` (provisioned).
    pub cluster: Option<String>,
    /// `REDSHIFT_DATABASE`.
    pub database: String,
    /// `REDSHIFT_SECRET_ARN` (optional: temporary credentials otherwise).
    pub secret_arn: Option<String>,
    /// `REDSHIFT_COPY_ROLE_ARN`: the role COPY reads the lake with.
    pub copy_role_arn: String,
    /// `LOAD_RETRY_BASE_SECONDS` and `LOAD_RETRY_MAX_SECONDS`: when a
    /// queued batch fails in a way a retry may fix.
    pub retry_backoff: RetryBackoff,
}

/// How long a queued batch that failed retryably waits before it is
/// received again: `base_seconds` after its first receive, doubling with
/// each receive up to `max_seconds`. (Without it, the messages would wait
/// the queue's whole visibility timeout, 90 minutes.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBackoff {
    /// The wait after a message's first receive.
    pub base_seconds: u32,
    /// The longest wait.
    pub max_seconds: u32,
}

impl RetryBackoff {
    /// One minute, doubling up to 15 minutes.
    pub const DEFAULT: RetryBackoff = RetryBackoff { base_seconds: 60, max_seconds: 900 };
    /// SQS's largest visibility timeout, 12 hours.
    pub const SQS_MAX_SECONDS: u32 = 43_200;

    /// The visibility timeout for a message received `receive_count` times
    /// (1 the first time).
    pub fn delay_seconds(&self, receive_count: u32) -> u32 {
        let doublings = receive_count.saturating_sub(1).min(31);
        self.base_seconds.saturating_mul(1u32 << doublings).min(self.max_seconds)
    }

    fn from_env() -> Result<Self, ConfigError> {
        let seconds = |name: &'static str, default: u32| -> Result<u32, ConfigError> {
            let Some(text) = optional(name) else { return Ok(default) };
            match text.parse::<u32>() {
                Ok(n) if (1..=Self::SQS_MAX_SECONDS).contains(&n) => Ok(n),
                _ => Err(ConfigError {
                    name,
                    problem: format!("{text:?} is not a number of seconds from 1 to {}", Self::SQS_MAX_SECONDS),
                }),
            }
        };
        let backoff = RetryBackoff {
            base_seconds: seconds("LOAD_RETRY_BASE_SECONDS", Self::DEFAULT.base_seconds)?,
            max_seconds: seconds("LOAD_RETRY_MAX_SECONDS", Self::DEFAULT.max_seconds)?,
        };
        if backoff.base_seconds > backoff.max_seconds {
            return Err(ConfigError {
                name: "LOAD_RETRY_BASE_SECONDS",
                problem: format!(
                    "{} is more than LOAD_RETRY_MAX_SECONDS ({})",
                    backoff.base_seconds, backoff.max_seconds
                ),
            });
        }
        Ok(backoff)
    }
}

fn optional(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

impl LoadConfig {
    /// Reads the configuration from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let workgroup = optional("REDSHIFT_WORKGROUP_NAME");
        let cluster = optional("REDSHIFT_CLUSTER_IDENTIFIER");
        if workgroup.is_none() && cluster.is_none() {
            return Err(ConfigError {
                name: "REDSHIFT_WORKGROUP_NAME",
                problem: "one of it and REDSHIFT_CLUSTER_IDENTIFIER is required".into(),
            });
        }
        Ok(LoadConfig {
            lake_bucket: required("LAKE_BUCKET")?,
            workgroup,
            cluster,
            database: required("REDSHIFT_DATABASE")?,
            secret_arn: optional("REDSHIFT_SECRET_ARN"),
            copy_role_arn: required("REDSHIFT_COPY_ROLE_ARN")?,
            retry_backoff: RetryBackoff::from_env()?,
        })
    }
}

/// What `compact-partitions` needs.
#[derive(Debug, Clone)]
pub struct CompactConfig {
    /// `LAKE_BUCKET`: whose `staging/` is compacted.
    pub lake_bucket: String,
    /// `COMPACT_TARGET_BYTES` (default 128 MiB): the size merged files are
    /// filled up to; files at least this large are left alone.
    pub target_bytes: u64,
    /// `COMPACT_MIN_AGE_SECONDS` (default one day): files younger than this
    /// are left alone.
    pub min_age_seconds: u64,
    /// `STREAM_MAX_RECORD_AGE_SECONDS` (optional): the stream mappings'
    /// maximum record age. Stream retries find earlier writes by file name,
    /// so files are also left alone until older than this plus
    /// [`crate::compact::RETRY_IN_FLIGHT_SECONDS`].
    pub stream_max_record_age_seconds: Option<u64>,
    /// `MULTIPART_PART_SIZE` (bytes, default 8 MiB).
    pub part_size: usize,
}

fn number<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match optional(name) {
        Some(v) => v.parse().map_err(|e| ConfigError { name, problem: format!("{v:?}: {e}") }),
        None => Ok(default),
    }
}

impl CompactConfig {
    /// Reads the configuration from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(CompactConfig {
            lake_bucket: required("LAKE_BUCKET")?,
            target_bytes: number("COMPACT_TARGET_BYTES", 128 << 20)?,
            min_age_seconds: number("COMPACT_MIN_AGE_SECONDS", 86_400)?,
            stream_max_record_age_seconds: optional("STREAM_MAX_RECORD_AGE_SECONDS")
                .map(|_| number("STREAM_MAX_RECORD_AGE_SECONDS", 0))
                .transpose()?,
            part_size: number("MULTIPART_PART_SIZE", tvetl_core::aws::s3::DEFAULT_PART_SIZE)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archived_objects_are_restored_only_when_days_are_set_and_the_tier_is_s3s() {
        assert_eq!(restore_policy(0, None).unwrap(), None);
        assert_eq!(restore_policy(0, Some("Expedited")).unwrap(), None);
        assert_eq!(restore_policy(7, None).unwrap(), Some(RestorePolicy { days: 7, tier: "Bulk".into() }));
        assert_eq!(
            restore_policy(1, Some("standard")).unwrap(),
            Some(RestorePolicy { days: 1, tier: "Standard".into() })
        );
        let tier = restore_policy(7, Some("Fast")).unwrap_err();
        assert_eq!(tier.name, "RESTORE_ARCHIVED_TIER");
        assert!(tier.to_string().contains("\"Fast\""), "{tier}");
        assert_eq!(restore_policy(-1, None).unwrap_err().name, "RESTORE_ARCHIVED_DAYS");
        assert_eq!(restore_policy(36_501, None).unwrap_err().name, "RESTORE_ARCHIVED_DAYS");
    }
}
