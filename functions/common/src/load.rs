//! `load-warehouse`: new staging objects into Redshift: COPY into staging,
//! then the `infra/sql` load (ledger, dedup, MERGE, analytics) in the same
//! Data API batch, which Redshift runs as one transaction.

use std::collections::BTreeMap;

use aws_lambda_events::event::s3::S3Event;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::runtime::Handle;
use tvetl_core::Source;
use tvetl_core::aws::redshift::{RedshiftDataWarehouse, RedshiftTarget};
use tvetl_core::aws::s3::S3ObjectStore;
use tvetl_core::compact::unremoved_members;
use tvetl_core::store::{ObjectMeta, ObjectStore, StoreError};
use tvetl_core::warehouse::{
    LOAD_LOCK_SQL, LoadStats, Warehouse, WarehouseError, load_statements, locked, rebuild_analytics_statements,
    rebuild_pending_analytics, schema_statements, staging_table,
};

use crate::backoff::back_off_queued;
use crate::config::LoadConfig;
use crate::events::{SqsEvent, queued_objects, s3_objects};
use crate::{AwsClients, HandlerError};

/// What to do: load the staging files an S3 event on the lake's `staging/`
/// prefix names, a list of staging keys, or every staging file under a
/// prefix (from a schedule or the state machine; the ledger makes files
/// already loaded no-ops); or rebuild the analytics of recent days.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum LoadRequest {
    /// `{"objects": [...]}`: these staging files.
    Keys {
        /// Lake keys under `staging/`.
        objects: Vec<String>,
    },
    /// `{"prefix": "staging/…"}`: every staging file under the prefix.
    Prefix {
        /// A lake prefix under `staging/`.
        prefix: String,
    },
    /// `{"rebuild_analytics": {...}}`: rebuild these days' analytics, loading
    /// nothing.
    RebuildAnalytics {
        /// The days.
        rebuild_analytics: RebuildDays,
    },
    /// A batch of the lake queue's messages, each an S3 notification. Before
    /// `S3`: an S3 record has no `body`, so it is never taken for one.
    Sqs(SqsEvent),
    /// An S3 ObjectCreated notification on the lake's `staging/` prefix.
    S3(S3Event),
}

/// The days whose analytics to rebuild: `days_back` days before today (UTC)
/// up to today, or `from`..=`to` (`YYYY-MM-DD`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RebuildDays {
    /// Today and this many days before it; more than 366 counts as 366.
    #[serde(default)]
    pub days_back: Option<u32>,
    /// The first day, `YYYY-MM-DD`, with `to`.
    #[serde(default)]
    pub from: Option<String>,
    /// The last day, `YYYY-MM-DD`, with `from`.
    #[serde(default)]
    pub to: Option<String>,
}

impl RebuildDays {
    /// The first and last day (days since 1970-01-01), as of `today`.
    pub fn range(&self, today: i32) -> Result<(i32, i32), HandlerError> {
        let day = |text: &Option<String>, name: &str| match text {
            None => Ok(None),
            Some(t) => tvetl_core::timestamp::parse_day(t)
                .map(Some)
                .ok_or_else(|| HandlerError::Permanent(format!("rebuild_analytics.{name}: {t:?} is not YYYY-MM-DD"))),
        };
        let (from, to) = (day(&self.from, "from")?, day(&self.to, "to")?);
        let (first, last) = match (from, to, self.days_back) {
            (Some(f), Some(t), None) => (f, t),
            (None, None, Some(back)) => (today - back.min(366) as i32, today),
            _ => {
                return Err(HandlerError::Permanent(
                    "rebuild_analytics takes either days_back or both from and to".into(),
                ));
            }
        };
        if last < first || last - first > 366 {
            return Err(HandlerError::Permanent(format!(
                "rebuild_analytics: {first}..{last} is not a range of at most a year"
            )));
        }
        Ok((first, last))
    }
}

/// What a request names: staging keys, and the queued messages set aside
/// (`id: why`) because they are not S3 notifications.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestedKeys {
    /// Lake keys of staging files.
    pub keys: Vec<String>,
    /// `message id: why` for each message set aside.
    pub ignored_messages: Vec<String>,
    /// What the listing of a prefix told of the files it found, so that
    /// they need no HEAD each: a prefix of 100,000 files would otherwise
    /// spend the Lambda's timeout on them.
    pub listed: BTreeMap<String, ObjectMeta>,
}

impl LoadRequest {
    /// The staging keys named by the request; a prefix is listed in `lake`.
    pub fn keys(&self, lake: &dyn ObjectStore) -> Result<Vec<String>, HandlerError> {
        self.requested(lake).map(|r| r.keys)
    }

    /// The staging keys named by the request, and the queued messages it
    /// sets aside; each message body is read once.
    pub fn requested(&self, lake: &dyn ObjectStore) -> Result<RequestedKeys, HandlerError> {
        let keys = match self {
            LoadRequest::Sqs(event) => {
                let queued = queued_objects(event);
                return Ok(RequestedKeys {
                    keys: queued.objects.into_iter().map(|o| o.key).collect(),
                    ignored_messages: queued.ignored.into_iter().map(|(id, why)| format!("{id}: {why}")).collect(),
                    listed: BTreeMap::new(),
                });
            }
            LoadRequest::Keys { objects } => objects.clone(),
            LoadRequest::Prefix { prefix } => {
                if !prefix.starts_with("staging/") {
                    return Err(HandlerError::Permanent(format!("prefix {prefix:?} is not under staging/")));
                }
                let listed: BTreeMap<String, ObjectMeta> =
                    lake.list(prefix)?.into_iter().map(|o| (o.key.clone(), o)).collect();
                return Ok(RequestedKeys {
                    keys: listed.keys().cloned().collect(),
                    ignored_messages: Vec::new(),
                    listed,
                });
            }
            LoadRequest::RebuildAnalytics { .. } => Vec::new(),
            LoadRequest::S3(event) => s3_objects(event).into_iter().map(|o| o.key).collect(),
        };
        Ok(RequestedKeys { keys, ignored_messages: Vec::new(), listed: BTreeMap::new() })
    }

    /// True for the notifications of new staging files (direct or queued),
    /// which may name files deleted since: a compaction that merged them
    /// (its merged file has a notification of its own). A request that names
    /// files itself wants them all.
    fn is_notification(&self) -> bool {
        matches!(self, LoadRequest::Sqs(_) | LoadRequest::S3(_))
    }
}

/// The files of one table that a load takes, with their sizes for the
/// manifest: what a listing told of them, or else a HEAD each. A missing file
/// is a permanent error, unless a notification named it (a compaction may
/// have merged it since): then it is added to `missing` and skipped. The
/// members of a stopped compaction are left out when its compacted file is
/// among the files ([`unremoved_members`]).
pub fn files_to_load(
    lake: &dyn ObjectStore,
    bucket: &str,
    request: &LoadRequest,
    listed: &BTreeMap<String, ObjectMeta>,
    source: Source,
    keys: &[String],
    missing: &mut Vec<String>,
) -> Result<Vec<ObjectMeta>, HandlerError> {
    let mut files = Vec::with_capacity(keys.len());
    for key in keys {
        if let Some(meta) = listed.get(key) {
            files.push(meta.clone());
            continue;
        }
        match lake.head(key) {
            Ok(meta) => files.push(meta),
            Err(StoreError::NotFound { .. }) if request.is_notification() => {
                tracing::warn!(key = %key, "notified staging file no longer exists; skipped");
                missing.push(key.clone());
            }
            Err(StoreError::NotFound { .. }) => {
                return Err(HandlerError::Permanent(format!("staging file s3://{bucket}/{key} does not exist")));
            }
            Err(other) => return Err(other.into()),
        }
    }
    let merged = unremoved_members(lake, source, &files)?;
    if !merged.is_empty() {
        tracing::warn!(
            files = merged.len(),
            "left out: members of a stopped compaction whose compacted file this load takes"
        );
        files.retain(|f| !merged.contains(&f.key));
    }
    Ok(files)
}

/// The class of a load's failed transaction. A failure that is permanent on
/// its own is tried again when some of the load's `files` (key and size) are
/// gone since the load read them: a compaction merged them in between, and
/// COPY failed on a file its manifest names. The retry reads its request
/// again, and takes the compacted file (a prefix load) or skips the
/// notified files that are gone ([`files_to_load`]). A request that names
/// its files itself cannot load them once they are gone, so its failure
/// stays permanent. If the check itself fails, the failure keeps its own
/// class.
pub fn classify_load_failure(
    lake: &dyn ObjectStore,
    request: &LoadRequest,
    files: &[(String, u64)],
    error: WarehouseError,
) -> HandlerError {
    if error.is_retryable() || matches!(request, LoadRequest::Keys { .. }) {
        return error.into();
    }
    match vanished_files(lake, files) {
        Ok(gone) if !gone.is_empty() => HandlerError::Retryable(format!(
            "{error}\n  {} of the load's {} files were removed since it read them (a compaction merges and removes \
             staging files), so the load is tried again; the first: {}",
            gone.len(),
            files.len(),
            gone[0]
        )),
        Ok(_) => error.into(),
        Err(check) => {
            tracing::warn!(%check, "could not check whether the failed load's files still exist");
            error.into()
        }
    }
}

/// Which of `files` no longer exist: one listing per folder, not a HEAD per
/// file, as a prefix load can take many thousands.
fn vanished_files(lake: &dyn ObjectStore, files: &[(String, u64)]) -> Result<Vec<String>, StoreError> {
    let mut by_folder: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (key, _) in files {
        let folder = key.rfind('/').map_or("", |slash| &key[..=slash]);
        by_folder.entry(folder).or_default().push(key);
    }
    let mut gone = Vec::new();
    for (folder, keys) in by_folder {
        let listed: std::collections::BTreeSet<String> = lake.list(folder)?.into_iter().map(|o| o.key).collect();
        gone.extend(keys.into_iter().filter(|k| !listed.contains(*k)).map(str::to_owned));
    }
    Ok(gone)
}

/// The staging keys of a request grouped by table, dimensions first; keys
/// that are not staging Parquet files are ignored.
pub fn group_by_table(keys: &[String]) -> BTreeMap<Source, Vec<String>> {
    let mut out: BTreeMap<Source, Vec<String>> = BTreeMap::new();
    for key in keys {
        let Some(rest) = key.strip_prefix("staging/") else { continue };
        if !key.ends_with(".parquet") {
            continue;
        }
        let table = rest.split('/').next().unwrap_or_default();
        let source = match table {
            "viewership" => Source::Viewership,
            "channels" => Source::Channels,
            "demographics" => Source::Demographics,
            _ => continue,
        };
        out.entry(source).or_default().push(key.clone());
    }
    for keys in out.values_mut() {
        keys.sort();
        keys.dedup();
    }
    out
}

/// Redshift's COPY of the files a manifest lists: one statement whatever
/// the number of files (a Data API batch holds at most 40 statements).
pub fn copy_statement(source: Source, bucket: &str, manifest_key: &str, role_arn: &str) -> String {
    format!(
        "COPY {} FROM 's3://{}/{}' IAM_ROLE '{}' FORMAT AS PARQUET MANIFEST",
        staging_table(source),
        bucket,
        manifest_key.replace('\'', "''"),
        role_arn.replace('\'', "''")
    )
}

/// A COPY manifest of staging files, with the sizes that Parquet COPY
/// requires (`meta.content_length`), and its key: derived from the files, so
/// a retried load rewrites the same manifest.
pub fn manifest(source: Source, bucket: &str, files: &[(String, u64)]) -> (String, Vec<u8>) {
    let entries: Vec<serde_json::Value> = files
        .iter()
        .map(|(key, size)| {
            serde_json::json!({"url": format!("s3://{bucket}/{key}"), "mandatory": true, "meta": {"content_length": size}})
        })
        .collect();
    let body = serde_json::to_vec_pretty(&serde_json::json!({ "entries": entries })).expect("serializes");
    let id = xxhash_rust::xxh3::xxh3_64(&body);
    (format!("manifests/load/{}/{id:016x}.manifest", source.name()), body)
}

/// What one invocation loaded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadResponse {
    /// What each table's load did, for the tables with files to load.
    pub loads: BTreeMap<Source, LoadStats>,
    /// Days whose analytics were rebuilt: those of a `rebuild_analytics`
    /// request, or after loads, the days they changed (and any an earlier
    /// invocation left pending).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analytics_days_rebuilt: Option<i64>,
    /// Notified staging files that no longer exist, skipped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// Queued messages that were not S3 notifications (`id: why`), set aside.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored_messages: Vec<String>,
}

/// The load-warehouse function.
pub struct LoadWarehouse {
    clients: AwsClients,
    config: LoadConfig,
    /// The (idempotent) schema is applied once per execution environment,
    /// not on every invocation.
    schema_applied: Arc<AtomicBool>,
}

impl LoadWarehouse {
    /// The function with its clients and configuration.
    pub fn new(clients: AwsClients, config: LoadConfig) -> Self {
        LoadWarehouse { clients, config, schema_applied: Arc::new(AtomicBool::new(false)) }
    }

    /// Loads every staging file of `request`, one transaction per table. A
    /// queued batch that fails retryably has its messages' visibility set to
    /// their backoff first ([`crate::backoff`]).
    pub async fn handle(&self, request: &LoadRequest) -> Result<LoadResponse, HandlerError> {
        let result = self.load(request).await;
        if let (Err(error), LoadRequest::Sqs(event)) = (&result, request)
            && error.is_retryable()
        {
            match back_off_queued(&self.clients.sqs, event, &self.config.retry_backoff).await {
                Ok(messages) => {
                    tracing::warn!(messages, %error, "retryable failure: the batch is received again after its backoff")
                }
                Err(backoff_error) => tracing::warn!(
                    %backoff_error,
                    %error,
                    "retryable failure: setting the backoff failed, so the batch waits the queue's visibility timeout"
                ),
            }
        }
        result
    }

    async fn load(&self, request: &LoadRequest) -> Result<LoadResponse, HandlerError> {
        let request = request.clone();
        let today = tvetl_core::timestamp::utc_day(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64),
        );
        let clients = self.clients.clone();
        let config = self.config.clone();
        let handle = Handle::current();
        let schema_applied = self.schema_applied.clone();
        let response = tokio::task::spawn_blocking(move || -> Result<LoadResponse, HandlerError> {
            let target = match (&config.workgroup, &config.cluster) {
                (Some(w), _) => RedshiftTarget::Workgroup(w.clone()),
                (None, Some(c)) => RedshiftTarget::Cluster(c.clone()),
                (None, None) => unreachable!("LoadConfig::from_env requires one"),
            };
            let lake = S3ObjectStore::new(clients.s3.clone(), config.lake_bucket.clone(), handle.clone());
            let mut warehouse =
                RedshiftDataWarehouse::new(clients.redshift_data.clone(), target, &config.database, config.secret_arn.clone(), handle);
            if !schema_applied.load(Ordering::Acquire) {
                warehouse.execute_transaction(&schema_statements())?;
                schema_applied.store(true, Ordering::Release);
            }
            let mut response = LoadResponse::default();
            if let LoadRequest::RebuildAnalytics { rebuild_analytics } = &request {
                let (first, last) = rebuild_analytics.range(today)?;
                let result = warehouse.execute_transaction(&locked(rebuild_analytics_statements(first, last)))?;
                let days = result.int(0, "days_rebuilt")?;
                tracing::info!(first, last, days, "analytics rebuilt");
                response.analytics_days_rebuilt = Some(days);
                return Ok(response);
            }
            let requested = request.requested(&lake)?;
            for message in &requested.ignored_messages {
                tracing::warn!(message = %message, "queued message set aside");
            }
            response.ignored_messages = requested.ignored_messages;
            let groups = group_by_table(&requested.keys);
            for source in Source::ALL {
                let Some(keys) = groups.get(&source) else { continue };
                let load_id = fresh_load_id();
                let files = files_to_load(
                    &lake,
                    &config.lake_bucket,
                    &request,
                    &requested.listed,
                    source,
                    keys,
                    &mut response.missing,
                )?;
                if files.is_empty() {
                    continue;
                }
                let files: Vec<(String, u64)> = files.into_iter().map(|f| (f.key, f.size)).collect();
                let (manifest_key, body) = manifest(source, &config.lake_bucket, &files);
                lake.put(&manifest_key, &body)?;
                let copy = copy_statement(source, &config.lake_bucket, &manifest_key, &config.copy_role_arn);
                let statements = locked(load_statements(source, vec![copy], load_id));
                let stats = warehouse
                    .execute_transaction(&statements)
                    .map_err(|error| classify_load_failure(&lake, &request, &files, error))?;
                let stats = LoadStats::from_result(&stats)?;
                tracing::info!(table = %source, files = files.len(), rows_staged = stats.rows_staged, rows_merged = stats.rows_merged, "loaded");
                response.loads.insert(source, stats);
            }
            // Once the loads have committed, in a transaction of its own (see
            // infra/sql/analytics_pending.sql); it also catches up with days
            // an earlier invocation's rebuild left pending.
            let days = rebuild_pending_analytics(&mut warehouse, &[LOAD_LOCK_SQL])?;
            tracing::info!(days, "analytics of pending days rebuilt");
            response.analytics_days_rebuilt = Some(days as i64);
            Ok(response)
        })
        .await
        .map_err(|e| HandlerError::Permanent(format!("load task panicked: {e}")))??;
        let total = |f: fn(&LoadStats) -> u64| response.loads.values().map(f).sum::<u64>();
        crate::metrics::emit(
            "load-warehouse",
            &[
                ("RowsStaged", total(|s| s.rows_staged)),
                ("RowsAlreadyLoaded", total(|s| s.rows_already_loaded)),
                ("DuplicatesRemoved", total(|s| s.duplicates_removed)),
                ("RowsMerged", total(|s| s.rows_merged)),
            ],
        );
        Ok(response)
    }
}

/// A load's id, unique without asking the warehouse: its start in
/// microseconds since 1970, made unique within the process. Loads run
/// concurrently (S3 events, the state machines), so the largest id in the
/// ledger plus one, read before the load's transaction, could be taken by
/// two of them; the load's counts select its ledger rows by id.
fn fresh_load_id() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
    let previous = LAST.fetch_max(now, Ordering::Relaxed);
    if now > previous { now } else { LAST.fetch_add(1, Ordering::Relaxed) + 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_keys_group_by_table_and_others_are_ignored() {
        let keys: Vec<String> = [
            "staging/viewership/event_date=2024-01-02/part-b.parquet",
            "staging/viewership/event_date=2024-01-01/part-a.parquet",
            "staging/channels/part-c.parquet",
            "staging/viewership/event_date=2024-01-01/part-a.parquet",
            "quarantine/viewership/ingest_date=2024-01-01/part-a.jsonl",
            "staging/unknown/part-x.parquet",
        ]
        .map(String::from)
        .to_vec();
        let groups = group_by_table(&keys);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[&Source::Viewership].len(), 2, "duplicates collapse");
        assert!(groups[&Source::Viewership][0].contains("2024-01-01"));
        assert_eq!(groups[&Source::Channels], ["staging/channels/part-c.parquet"]);
    }

    #[test]
    fn one_copy_reads_a_manifest_and_parses_as_redshift() {
        let files = [("staging/viewership/event_date=2024-01-01/part-a.parquet".to_owned(), 1234u64)];
        let (key, body) = manifest(Source::Viewership, "lake", &files);
        assert!(key.starts_with("manifests/load/viewership/") && key.ends_with(".manifest"), "{key}");
        assert_eq!(manifest(Source::Viewership, "lake", &files).0, key, "the same files, the same manifest");
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["entries"][0]["url"], "s3://lake/staging/viewership/event_date=2024-01-01/part-a.parquet");
        assert_eq!(doc["entries"][0]["meta"]["content_length"], 1234);
        assert_eq!(doc["entries"][0]["mandatory"], true);
        let sql = copy_statement(Source::Viewership, "lake", &key, "arn:aws:iam::1:role/copy");
        assert_eq!(
            sql,
            format!(
                "COPY staging.viewing_sessions FROM 's3://lake/{key}' IAM_ROLE 'arn:aws:iam::1:role/copy' FORMAT AS PARQUET MANIFEST"
            )
        );
        let parsed = sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::RedshiftSqlDialect {}, &sql);
        assert_eq!(parsed.map(|p| p.len()).map_err(|e| e.to_string()), Ok(1));
    }

    /// A memory store that counts its HEAD requests.
    #[derive(Default)]
    struct CountingHeads {
        inner: tvetl_core::store::MemoryObjectStore,
        heads: std::sync::atomic::AtomicUsize,
    }

    impl ObjectStore for CountingHeads {
        fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
            self.inner.list(prefix)
        }
        fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
            self.heads.fetch_add(1, Ordering::SeqCst);
            self.inner.head(key)
        }
        fn open(&self, key: &str) -> Result<Box<dyn std::io::Read + Send + '_>, StoreError> {
            self.inner.open(key)
        }
        fn create(&self, key: &str) -> Result<Box<dyn tvetl_core::store::ObjectUpload + '_>, StoreError> {
            self.inner.create(key)
        }
        fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.inner.delete(key)
        }
    }

    #[test]
    fn a_prefix_load_sizes_its_files_from_the_listing_and_named_files_are_headed() {
        let lake = CountingHeads::default();
        let day = "staging/viewership/event_date=2024-01-01";
        for (name, bytes) in [("a.parquet", &b"aa"[..]), ("b.parquet", b"bbb"), ("c.parquet", b"c")] {
            lake.put(&format!("{day}/{name}"), bytes).unwrap();
        }
        let load = |request: &LoadRequest, missing: &mut Vec<String>| {
            let requested = request.requested(&lake)?;
            let keys = &group_by_table(&requested.keys)[&Source::Viewership];
            files_to_load(&lake, "lake", request, &requested.listed, Source::Viewership, keys, missing)
        };
        let sizes = |files: Vec<ObjectMeta>| files.into_iter().map(|f| f.size).collect::<Vec<_>>();

        let prefix: LoadRequest = serde_json::from_value(serde_json::json!({"prefix": format!("{day}/")})).unwrap();
        assert_eq!(sizes(load(&prefix, &mut Vec::new()).unwrap()), [2, 3, 1]);
        assert_eq!(lake.heads.load(Ordering::SeqCst), 0, "the listing gave every size");

        let named: LoadRequest = serde_json::from_value(
            serde_json::json!({"objects": [format!("{day}/c.parquet"), format!("{day}/a.parquet")]}),
        )
        .unwrap();
        assert_eq!(sizes(load(&named, &mut Vec::new()).unwrap()), [2, 1]);
        assert_eq!(lake.heads.load(Ordering::SeqCst), 2);

        let gone: LoadRequest =
            serde_json::from_value(serde_json::json!({"objects": [format!("{day}/gone.parquet")]})).unwrap();
        let error = load(&gone, &mut Vec::new()).unwrap_err();
        assert!(
            !error.is_retryable()
                && error.to_string().contains(&format!("s3://lake/{day}/gone.parquet does not exist")),
            "{error}"
        );
        // A notification may name a file a compaction merged since.
        let notified: LoadRequest =
            serde_json::from_str(include_str!("../../../infra/events/s3-staging-created.json")).unwrap();
        let mut missing = Vec::new();
        assert!(load(&notified, &mut missing).unwrap().is_empty());
        assert_eq!(missing, ["staging/viewership/event_date=2024-01-01/part-0123456789abcdef.parquet"]);
    }

    #[test]
    fn requests_are_key_lists_prefixes_rebuilds_or_s3_events() {
        let lake = tvetl_core::store::MemoryObjectStore::new();
        lake.put("staging/viewership/event_date=2024-01-01/a.parquet", b"x").unwrap();
        lake.put("staging/viewership/event_date=2024-01-02/b.parquet", b"x").unwrap();
        let keys: LoadRequest = serde_json::from_str(r#"{"objects": ["staging/channels/part-c.parquet"]}"#).unwrap();
        assert_eq!(keys.keys(&lake).unwrap(), ["staging/channels/part-c.parquet"]);
        let event: LoadRequest =
            serde_json::from_str(include_str!("../../../infra/events/s3-staging-created.json")).unwrap();
        assert_eq!(
            event.keys(&lake).unwrap(),
            ["staging/viewership/event_date=2024-01-01/part-0123456789abcdef.parquet"]
        );
        let queued: LoadRequest =
            serde_json::from_str(include_str!("../../../infra/events/sqs-staging-created.json")).unwrap();
        assert!(matches!(queued, LoadRequest::Sqs(_)), "{queued:?}");
        assert!(queued.is_notification() && event.is_notification() && !keys.is_notification());
        assert_eq!(
            queued.keys(&lake).unwrap(),
            ["staging/viewership/event_date=2024-01-01/part-0123456789abcdef.parquet"],
            "the queued S3 notification's key; the s3:TestEvent names none"
        );
        assert!(matches!(event, LoadRequest::S3(_)), "an S3 event is not taken for a queued one: {event:?}");
        let prefix: LoadRequest =
            serde_json::from_str(r#"{"prefix": "staging/viewership/event_date=2024-01-02/"}"#).unwrap();
        assert_eq!(prefix.keys(&lake).unwrap(), ["staging/viewership/event_date=2024-01-02/b.parquet"]);
        let outside: LoadRequest = serde_json::from_str(r#"{"prefix": "quarantine/"}"#).unwrap();
        assert!(matches!(outside.keys(&lake), Err(HandlerError::Permanent(_))));

        let rebuild: LoadRequest = serde_json::from_str(r#"{"rebuild_analytics": {"days_back": 2}}"#).unwrap();
        let LoadRequest::RebuildAnalytics { rebuild_analytics } = rebuild else { panic!("{rebuild:?}") };
        assert_eq!(rebuild_analytics.range(19_725).unwrap(), (19_723, 19_725));
        let dated: LoadRequest =
            serde_json::from_str(r#"{"rebuild_analytics": {"from": "2024-01-01", "to": "2024-01-03"}}"#).unwrap();
        let LoadRequest::RebuildAnalytics { rebuild_analytics } = dated else { panic!() };
        assert_eq!(rebuild_analytics.range(0).unwrap(), (19_723, 19_725));
        let both = RebuildDays { days_back: Some(1), from: Some("2024-01-01".into()), to: None };
        assert!(both.range(19_725).is_err());
        let backwards = RebuildDays { days_back: None, from: Some("2024-01-03".into()), to: Some("2024-01-01".into()) };
        assert!(backwards.range(0).is_err());
    }

    #[test]
    fn a_load_that_failed_for_good_is_retried_when_a_compaction_removed_its_files_since() {
        let lake = tvetl_core::store::MemoryObjectStore::new();
        let day = |d: u32| format!("staging/viewership/event_date=2024-01-0{d}");
        let keys = [
            format!("{}/part-a.parquet", day(1)),
            format!("{}/part-b.parquet", day(1)),
            format!("{}/part-c.parquet", day(2)),
        ];
        for key in &keys {
            lake.put(key, b"PAR1").unwrap();
        }
        let files: Vec<(String, u64)> = keys.iter().map(|k| (k.clone(), 4)).collect();
        let copy_failed = || WarehouseError::Statement {
            index: 1,
            statement: "COPY staging.viewing_sessions FROM 's3://lake/manifests/load/x.manifest' …".into(),
            message: "ERROR: Problem reading manifest file - S3ServiceException:The specified key does not exist"
                .into(),
        };

        // Every file is still there: the failure is the load's own.
        let prefix = LoadRequest::Prefix { prefix: "staging/viewership/".into() };
        assert!(matches!(classify_load_failure(&lake, &prefix, &files, copy_failed()), HandlerError::Permanent(_)));

        // A compaction merged day 1's files into one and removed them.
        lake.put(&format!("{}/compacted-0123456789abcdef.parquet", day(1)), b"PAR1").unwrap();
        lake.delete(&keys[0]).unwrap();
        lake.delete(&keys[1]).unwrap();
        match classify_load_failure(&lake, &prefix, &files, copy_failed()) {
            HandlerError::Retryable(message) => {
                assert!(message.contains("2 of the load's 3 files were removed"), "{message}");
                assert!(message.contains(&keys[0]), "{message}");
                assert!(message.contains("Problem reading manifest file"), "the warehouse's own message: {message}");
            }
            other => panic!("{other:?}"),
        }

        // A retryable failure stays retryable, with no listing needed.
        let busy = WarehouseError::Unavailable { message: "throttled".into(), retryable: true };
        assert!(classify_load_failure(&CountingHeads::default(), &prefix, &files, busy).is_retryable());
        // A request that names the files cannot load them once they are gone.
        let named = LoadRequest::Keys { objects: keys.to_vec() };
        assert!(matches!(classify_load_failure(&lake, &named, &files, copy_failed()), HandlerError::Permanent(_)));
    }

    #[test]
    fn a_failed_check_of_the_files_leaves_the_failure_its_own_class() {
        let unlistable = tvetl_core::store::FaultyObjectStore::new();
        unlistable.fail_lists(true);
        let files = [("staging/channels/part-a.parquet".to_owned(), 4)];
        let sql_error = WarehouseError::Statement { index: 5, statement: "MERGE …".into(), message: "boom".into() };
        let prefix = LoadRequest::Prefix { prefix: "staging/channels/".into() };
        assert!(matches!(classify_load_failure(&unlistable, &prefix, &files, sql_error), HandlerError::Permanent(_)));
    }
}
