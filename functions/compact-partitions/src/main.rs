//! Lambda `compact-partitions`: on an EventBridge schedule, merges the small
//! staging files of each partition of `LAKE_BUCKET`. See
//! `functions/compact-partitions/README.md`.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use tvetl_lambda::compact::CompactPartitions;
use tvetl_lambda::{AwsClients, CompactConfig};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // JSON logs under AWS_LAMBDA_LOG_FORMAT=JSON, text otherwise.
    lambda_runtime::tracing::init_default_subscriber();
    let function = CompactPartitions { clients: AwsClients::load().await, config: CompactConfig::from_env()? };
    let function = &function;
    lambda_runtime::run(service_fn(move |_event: LambdaEvent<serde_json::Value>| async move {
        tvetl_lambda::respond(function.handle().await)
    }))
    .await
}
