//! Lambda `ingest-stream`: Kinesis (and MSK / self-managed Kafka) batches →
//! staging Parquet per `event_date` in `LAKE_BUCKET`, partitions in
//! `GLUE_DATABASE`. See `functions/ingest-stream/README.md`.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use tvetl_lambda::stream::{IngestStream, StreamEvent};
use tvetl_lambda::{AwsClients, IngestConfig};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // JSON logs under AWS_LAMBDA_LOG_FORMAT=JSON, text otherwise.
    lambda_runtime::tracing::init_default_subscriber();
    let function = IngestStream { clients: AwsClients::load().await, config: IngestConfig::from_env()? };
    let function = &function;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let outcome = match StreamEvent::from_value(event.payload) {
            Ok(event) => function.handle(event).await,
            Err(e) => Err(e),
        };
        tvetl_lambda::respond(outcome)
    }))
    .await
}
