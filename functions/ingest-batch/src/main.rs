//! Lambda `ingest-batch`: S3 ObjectCreated on the raw bucket → staging
//! Parquet and quarantine in `LAKE_BUCKET`, partitions in `GLUE_DATABASE`.
//! See `functions/ingest-batch/README.md`.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use tvetl_lambda::ingest::{IngestBatch, IngestRequest};
use tvetl_lambda::{AwsClients, IngestConfig};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // JSON logs under AWS_LAMBDA_LOG_FORMAT=JSON, text otherwise.
    lambda_runtime::tracing::init_default_subscriber();
    let function = IngestBatch { clients: AwsClients::load().await, config: IngestConfig::from_env()? };
    let function = &function;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<IngestRequest>| async move {
        tvetl_lambda::respond(function.handle(&event.payload).await)
    }))
    .await
}
