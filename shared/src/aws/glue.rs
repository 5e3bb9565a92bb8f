//! The Glue Data Catalog as a [`Catalog`]: the database and tables are
//! created when missing, columns are added by UpdateTable (additive changes
//! only), partitions are added with BatchCreatePartition where
//! `AlreadyExists` counts as success.

use aws_sdk_glue::Client;
use aws_sdk_glue::config::http::HttpResponse;
use aws_sdk_glue::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_glue::types::{Column, DatabaseInput, PartitionInput, SerDeInfo, StorageDescriptor, TableInput};
use tokio::runtime::Handle;

use crate::catalog::{Catalog, CatalogError};
use crate::schema::{TableDef, TableFormat};

/// BatchCreatePartition takes at most 100 partitions a call.
const PARTITION_BATCH: usize = 100;

/// One Glue database whose tables point into the lake bucket.
pub struct GlueCatalog {
    client: Client,
    database: String,
    lake_bucket: String,
    handle: Handle,
}

fn unavailable(what: &str, message: String, retryable: bool) -> CatalogError {
    CatalogError::Unavailable { what: what.to_owned(), message, retryable }
}

fn sdk_error<E>(what: &str, error: SdkError<E, HttpResponse>) -> CatalogError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let retryable = super::is_retryable(&error);
    unavailable(what, super::describe(&error), retryable)
}

fn code<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> Option<&str> {
    match error {
        SdkError::ServiceError(e) => e.err().code(),
        _ => None,
    }
}

impl GlueCatalog {
    /// A catalog of `database`, with table locations in `lake_bucket`.
    pub fn new(client: Client, database: impl Into<String>, lake_bucket: impl Into<String>, handle: Handle) -> Self {
        GlueCatalog { client, database: database.into(), lake_bucket: lake_bucket.into(), handle }
    }

    fn location(&self, prefix: &str) -> String {
        format!("s3://{}/{}", self.lake_bucket, prefix)
    }

    fn columns(pairs: &[(String, String)]) -> Result<Vec<Column>, CatalogError> {
        pairs
            .iter()
            .map(|(name, kind)| {
                Column::builder().name(name).r#type(kind).build().map_err(|e| unavailable(name, e.to_string(), false))
            })
            .collect()
    }

    fn storage(&self, format: TableFormat, location: String, columns: Vec<Column>) -> StorageDescriptor {
        let (input, output, serde) = match format {
            TableFormat::Parquet => (
                "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
                "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
                "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
            ),
            TableFormat::JsonLines => (
                "org.apache.hadoop.mapred.TextInputFormat",
                "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
                "org.openx.data.jsonserde.JsonSerDe",
            ),
        };
        StorageDescriptor::builder()
            .set_columns(Some(columns))
            .location(location)
            .input_format(input)
            .output_format(output)
            .serde_info(SerDeInfo::builder().serialization_library(serde).build())
            .build()
    }

    fn table_input(&self, table: &TableDef) -> Result<TableInput, CatalogError> {
        let classification = match table.format {
            TableFormat::Parquet => "parquet",
            TableFormat::JsonLines => "json",
        };
        TableInput::builder()
            .name(&table.name)
            .table_type("EXTERNAL_TABLE")
            .parameters("classification", classification)
            .parameters("EXTERNAL", "TRUE")
            .storage_descriptor(self.storage(
                table.format,
                self.location(&table.location),
                Self::columns(&table.columns)?,
            ))
            .set_partition_keys(Some(Self::columns(&table.partition_keys)?))
            .build()
            .map_err(|e| unavailable(&table.name, e.to_string(), false))
    }

    async fn ensure_database(&self) -> Result<(), CatalogError> {
        let input = DatabaseInput::builder()
            .name(&self.database)
            .description("TV viewership lake (tvetl)")
            .build()
            .map_err(|e| unavailable(&self.database, e.to_string(), false))?;
        match self.client.create_database().database_input(input).send().await {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some("AlreadyExistsException") => Ok(()),
            Err(e) => Err(sdk_error(&self.database, e)),
        }
    }
}

impl Catalog for GlueCatalog {
    fn ensure_table(&self, table: &TableDef) -> Result<(), CatalogError> {
        self.handle.block_on(async {
            let existing = self.client.get_table().database_name(&self.database).name(&table.name).send().await;
            let existing = match existing {
                Ok(found) => found.table,
                Err(e) if code(&e) == Some("EntityNotFoundException") => None,
                Err(e) => return Err(sdk_error(&table.name, e)),
            };
            let Some(existing) = existing else {
                self.ensure_database().await?;
                let created = self
                    .client
                    .create_table()
                    .database_name(&self.database)
                    .table_input(self.table_input(table)?)
                    .send()
                    .await;
                return match created {
                    Ok(_) => Ok(()),
                    // A concurrent invocation created it first.
                    Err(e) if code(&e) == Some("AlreadyExistsException") => Ok(()),
                    Err(e) => Err(sdk_error(&table.name, e)),
                };
            };
            let have: Vec<String> = existing
                .storage_descriptor()
                .map(|sd| sd.columns().iter().map(|c| c.name().to_owned()).collect())
                .unwrap_or_default();
            if table.columns.iter().all(|(name, _)| have.contains(name)) {
                return Ok(());
            }
            // Additive change: keep the stored columns, append the new ones.
            let mut columns = existing.storage_descriptor().map(|sd| sd.columns().to_vec()).unwrap_or_default();
            let missing: Vec<(String, String)> =
                table.columns.iter().filter(|(name, _)| !have.contains(name)).cloned().collect();
            columns.extend(Self::columns(&missing)?);
            let mut input = self.table_input(table)?;
            input.storage_descriptor = Some(self.storage(table.format, self.location(&table.location), columns));
            self.client
                .update_table()
                .database_name(&self.database)
                .table_input(input)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| sdk_error(&table.name, e))
        })
    }

    fn add_partitions(&self, table: &TableDef, values: &[String]) -> Result<(), CatalogError> {
        let Some((key, _)) = table.partition_keys.first() else { return Ok(()) };
        let columns = Self::columns(&table.columns)?;
        self.handle.block_on(async {
            for chunk in values.chunks(PARTITION_BATCH) {
                let inputs: Vec<PartitionInput> = chunk
                    .iter()
                    .map(|v| {
                        let location = self.location(&format!("{}{key}={v}/", table.location));
                        PartitionInput::builder()
                            .values(v)
                            .storage_descriptor(self.storage(table.format, location, columns.clone()))
                            .build()
                    })
                    .collect();
                let out = self
                    .client
                    .batch_create_partition()
                    .database_name(&self.database)
                    .table_name(&table.name)
                    .set_partition_input_list(Some(inputs))
                    .send()
                    .await
                    .map_err(|e| sdk_error(&table.name, e))?;
                for failure in out.errors() {
                    let detail = failure.error_detail();
                    let code = detail.and_then(|d| d.error_code()).unwrap_or_default();
                    if code != "AlreadyExistsException" {
                        let message = format!(
                            "partition {:?}: {code}: {}",
                            failure.partition_values(),
                            detail.and_then(|d| d.error_message()).unwrap_or_default()
                        );
                        let retryable = matches!(code, "InternalServiceException" | "OperationTimeoutException");
                        return Err(unavailable(&table.name, message, retryable));
                    }
                }
            }
            Ok(())
        })
    }
}
