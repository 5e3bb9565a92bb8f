//! `load-warehouse`: new staging objects into Redshift: COPY into staging,
//! then the `infra/sql` load (ledger, dedup, MERGE, analytics) in the same
//! Data API batch, which Redshift runs as one transaction.

use std::collections::BTreeMap;

use aws_lambda_events::event::s3::S3Event;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tvetl_core::Source;
use tvetl_core::aws::redshift::{RedshiftDataWarehouse, RedshiftTarget};
use tvetl_core::warehouse::{LoadStats, Warehouse, WarehouseError, load_statements, schema_statements, staging_table};

use crate::config::LoadConfig;
use crate::events::s3_objects;
use crate::{AwsClients, HandlerError};

/// What to load: an S3 event on the lake's `staging/` prefix, or a list of
/// staging keys (from a schedule or the state machine).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum LoadRequest {
    Keys { objects: Vec<String> },
    S3(S3Event),
}

impl LoadRequest {
    /// The staging keys named by the request.
    pub fn keys(&self) -> Vec<String> {
        match self {
            LoadRequest::Keys { objects } => objects.clone(),
            LoadRequest::S3(event) => s3_objects(event).into_iter().map(|o| o.key).collect(),
        }
    }
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

/// Redshift's COPY of one staging file. The key is the whole object name,
/// so the prefix COPY matches is that file alone.
pub fn copy_statement(source: Source, bucket: &str, key: &str, role_arn: &str) -> String {
    format!(
        "COPY {} FROM 's3://{}/{}' IAM_ROLE '{}' FORMAT AS PARQUET",
        staging_table(source),
        bucket,
        key.replace('\'', "''"),
        role_arn.replace('\'', "''")
    )
}

/// What one invocation loaded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadResponse {
    pub loads: BTreeMap<Source, LoadStats>,
}

/// The load-warehouse function.
pub struct LoadWarehouse {
    pub clients: AwsClients,
    pub config: LoadConfig,
}

fn classify(e: WarehouseError) -> HandlerError {
    if e.is_retryable() { HandlerError::Retryable(e.to_string()) } else { HandlerError::Permanent(e.to_string()) }
}

impl LoadWarehouse {
    /// Loads every staging file of `request`, one transaction per table.
    pub async fn handle(&self, request: &LoadRequest) -> Result<LoadResponse, HandlerError> {
        let groups = group_by_table(&request.keys());
        let clients = self.clients.clone();
        let config = self.config.clone();
        let handle = Handle::current();
        let response = tokio::task::spawn_blocking(move || -> Result<LoadResponse, HandlerError> {
            let target = match (&config.workgroup, &config.cluster) {
                (Some(w), _) => RedshiftTarget::Workgroup(w.clone()),
                (None, Some(c)) => RedshiftTarget::Cluster(c.clone()),
                (None, None) => unreachable!("LoadConfig::from_env requires one"),
            };
            let mut warehouse =
                RedshiftDataWarehouse::new(clients.redshift_data.clone(), target, &config.database, config.secret_arn.clone(), handle);
            warehouse.execute_transaction(&schema_statements()).map_err(classify)?;
            let mut response = LoadResponse::default();
            for source in Source::ALL {
                let Some(keys) = groups.get(&source) else { continue };
                let next = warehouse
                    .query("SELECT COALESCE(MAX(load_id), 0) + 1 AS next_id FROM core.load_ledger")
                    .and_then(|r| r.int(0, "next_id"))
                    .map_err(classify)?;
                let copies = keys.iter().map(|k| copy_statement(source, &config.lake_bucket, k, &config.copy_role_arn)).collect();
                let statements = load_statements(source, copies, next);
                let stats = warehouse.execute_transaction(&statements).map_err(classify)?;
                let stats = LoadStats::from_result(&stats).map_err(classify)?;
                tracing::info!(table = %source, files = keys.len(), rows_staged = stats.rows_staged, rows_merged = stats.rows_merged, "loaded");
                response.loads.insert(source, stats);
            }
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
    fn copy_names_one_file_and_parses_as_redshift() {
        let sql = copy_statement(
            Source::Viewership,
            "lake",
            "staging/viewership/event_date=2024-01-01/part-a.parquet",
            "arn:aws:iam::1:role/copy",
        );
        assert_eq!(
            sql,
            "COPY staging.viewing_sessions FROM 's3://lake/staging/viewership/event_date=2024-01-01/part-a.parquet' \
             IAM_ROLE 'arn:aws:iam::1:role/copy' FORMAT AS PARQUET"
        );
        let parsed = sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::RedshiftSqlDialect {}, &sql);
        assert_eq!(parsed.map(|p| p.len()).map_err(|e| e.to_string()), Ok(1));
    }

    #[test]
    fn requests_are_key_lists_or_s3_events() {
        let keys: LoadRequest = serde_json::from_str(r#"{"objects": ["staging/channels/part-c.parquet"]}"#).unwrap();
        assert_eq!(keys.keys(), ["staging/channels/part-c.parquet"]);
        let event: LoadRequest =
            serde_json::from_str(include_str!("../../../infra/events/s3-staging-created.json")).unwrap();
        assert_eq!(event.keys(), ["staging/viewership/event_date=2024-01-01/part-0123456789abcdef.parquet"]);
    }
}
