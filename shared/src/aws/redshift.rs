//! Amazon Redshift through the Data API as a [`Warehouse`]: a transaction is
//! one `BatchExecuteStatement` (the Data API runs a batch as one
//! transaction), polled with backoff up to a deadline.

use std::time::{Duration, Instant};

use aws_sdk_redshiftdata::Client;
use aws_sdk_redshiftdata::config::http::HttpResponse;
use aws_sdk_redshiftdata::types::{Field, StatusString};
use serde_json::Value;
use tokio::runtime::Handle;

use crate::warehouse::{ResultSet, Warehouse, WarehouseError};

/// Which Redshift to talk to.
#[derive(Debug, Clone)]
pub enum RedshiftTarget {
    /// Redshift Serverless.
    Workgroup(String),
    /// A provisioned cluster.
    Cluster(String),
}

/// Polling of statements.
#[derive(Debug, Clone)]
pub struct Polling {
    /// First wait between DescribeStatement calls; doubles up to `max_delay`.
    pub first_delay: Duration,
    /// The longest wait between two DescribeStatement calls.
    pub max_delay: Duration,
    /// Give up (and cancel) after this long.
    pub deadline: Duration,
}

impl Default for Polling {
    fn default() -> Self {
        Polling {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            deadline: Duration::from_secs(600),
        }
    }
}

/// The warehouse behind the Data API.
pub struct RedshiftDataWarehouse {
    client: Client,
    target: RedshiftTarget,
    database: String,
    secret_arn: Option<String>,
    polling: Polling,
    handle: Handle,
}

fn unavailable<E>(error: aws_sdk_redshiftdata::error::SdkError<E, HttpResponse>) -> WarehouseError
where
    E: aws_sdk_redshiftdata::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    WarehouseError::Unavailable { message: super::describe(&error), retryable: super::is_retryable(&error) }
}

fn field_value(field: &Field) -> Value {
    match field {
        Field::IsNull(true) => Value::Null,
        Field::BooleanValue(b) => Value::Bool(*b),
        Field::LongValue(i) => Value::from(*i),
        Field::DoubleValue(f) => Value::from(*f),
        Field::StringValue(s) => Value::String(s.clone()),
        other => Value::String(format!("{other:?}")),
    }
}

impl RedshiftDataWarehouse {
    /// A warehouse in `database` of `target`, authenticated by `secret_arn`
    /// (or temporary credentials when `None`).
    pub fn new(
        client: Client,
        target: RedshiftTarget,
        database: impl Into<String>,
        secret_arn: Option<String>,
        handle: Handle,
    ) -> Self {
        RedshiftDataWarehouse {
            client,
            target,
            database: database.into(),
            secret_arn,
            polling: Polling::default(),
            handle,
        }
    }

    /// Sets the polling intervals and deadline.
    pub fn with_polling(mut self, polling: Polling) -> Self {
        self.polling = polling;
        self
    }

    /// Waits for statement `id`; returns the DescribeStatement answer once
    /// FINISHED, or a typed error carrying Redshift's message.
    async fn wait(
        &self,
        id: &str,
        statements: &[String],
    ) -> Result<aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput, WarehouseError> {
        let started = Instant::now();
        let mut delay = self.polling.first_delay;
        loop {
            let described = self.client.describe_statement().id(id).send().await.map_err(unavailable)?;
            match described.status() {
                Some(StatusString::Finished) => return Ok(described),
                Some(StatusString::Failed) | Some(StatusString::Aborted) => {
                    let failed = described.sub_statements().iter().position(|s| s.error().is_some()).unwrap_or(0);
                    let message = described.error().unwrap_or("statement failed without a message").to_owned();
                    let statement = statements.get(failed).cloned().unwrap_or_default();
                    if statement.trim_start().to_ascii_uppercase().starts_with("COPY") {
                        let query_id = described
                            .sub_statements()
                            .get(failed)
                            .map_or(described.redshift_query_id(), |s| s.redshift_query_id());
                        self.log_load_errors(query_id).await;
                    }
                    return Err(WarehouseError::failed_statement(failed, statement, message));
                }
                _ => {}
            }
            if started.elapsed() > self.polling.deadline {
                let _ = self.client.cancel_statement().id(id).send().await;
                return Err(WarehouseError::Unavailable {
                    message: format!("statement {id} still running after {:?}; cancelled", self.polling.deadline),
                    retryable: true,
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.polling.max_delay);
        }
    }

    /// Fetches every page of a statement's result.
    async fn result(&self, id: &str) -> Result<ResultSet, WarehouseError> {
        let mut out = ResultSet::default();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .get_statement_result()
                .id(id)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(unavailable)?;
            if out.columns.is_empty() {
                out.columns = page.column_metadata().iter().map(|c| c.name().unwrap_or_default().to_owned()).collect();
            }
            out.rows.extend(page.records().iter().map(|r| r.iter().map(field_value).collect()));
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(out),
            }
        }
    }

    /// Logs the rows `sys_load_error_detail` holds about a failed COPY
    /// (`query_id` 0 when the Data API did not say: then the latest rows),
    /// which say which file, line and column Redshift rejected.
    async fn log_load_errors(&self, query_id: i64) {
        let filter = if query_id > 0 { format!("WHERE query_id = {query_id} ") } else { String::new() };
        let sql = format!(
            "SELECT query_id, file_name, line_number, column_name, error_code, error_message \
             FROM sys_load_error_detail {filter}ORDER BY start_time DESC LIMIT 20"
        );
        let sql = sql.as_str();
        // Boxed: this runs inside `wait`, which `run_one` calls.
        let rows: std::pin::Pin<Box<dyn std::future::Future<Output = Result<ResultSet, WarehouseError>> + '_>> =
            Box::pin(self.run_one(sql));
        match rows.await {
            Ok(rows) => {
                tracing::error!(rows = %serde_json::to_string(&rows.rows).unwrap_or_default(), "COPY load errors")
            }
            Err(e) => tracing::warn!(error = %e, "could not read sys_load_error_detail"),
        }
    }

    async fn run_one(&self, sql: &str) -> Result<ResultSet, WarehouseError> {
        let request =
            self.client.execute_statement().sql(sql).database(&self.database).set_secret_arn(self.secret_arn.clone());
        let request = match &self.target {
            RedshiftTarget::Workgroup(w) => request.workgroup_name(w),
            RedshiftTarget::Cluster(c) => request.cluster_identifier(c),
        };
        let id = request.send().await.map_err(unavailable)?.id().unwrap_or_default().to_owned();
        let described = self.wait(&id, &[sql.to_owned()]).await?;
        if described.has_result_set() == Some(true) { self.result(&id).await } else { Ok(ResultSet::default()) }
    }
}

/// A token unique to one batch. The SDK resends the same request on its own
/// retries, so a batch that reached Redshift before a network failure is not
/// run twice. A later, deliberate retry gets a new token and relies on the
/// load ledger instead: reusing a token would only replay a failed batch's
/// outcome.
pub fn fresh_client_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let seed = format!("{nanos}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("tvetl-{:016x}", xxhash_rust::xxh3::xxh3_64(seed.as_bytes()))
}

impl Warehouse for RedshiftDataWarehouse {
    fn execute_transaction(&mut self, statements: &[String]) -> Result<ResultSet, WarehouseError> {
        self.handle.block_on(async {
            let request = self
                .client
                .batch_execute_statement()
                .set_sqls(Some(statements.to_vec()))
                .database(&self.database)
                .set_secret_arn(self.secret_arn.clone())
                .client_token(fresh_client_token());
            let request = match &self.target {
                RedshiftTarget::Workgroup(w) => request.workgroup_name(w),
                RedshiftTarget::Cluster(c) => request.cluster_identifier(c),
            };
            let id = request.send().await.map_err(unavailable)?.id().unwrap_or_default().to_owned();
            let described = self.wait(&id, statements).await?;
            match described.sub_statements().last() {
                Some(last) if last.has_result_set() == Some(true) => self.result(last.id()).await,
                _ => Ok(ResultSet::default()),
            }
        })
    }

    fn query(&mut self, sql: &str) -> Result<ResultSet, WarehouseError> {
        self.handle.block_on(self.run_one(sql))
    }
}
