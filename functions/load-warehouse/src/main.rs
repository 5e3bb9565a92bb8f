//! Lambda `load-warehouse`: staging objects (an S3 event on the lake's
//! `staging/` prefix, or `{"objects": [...]}` from a schedule or the state
//! machine) → Redshift through the Data API. See
//! `functions/load-warehouse/README.md`.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use tvetl_lambda::load::{LoadRequest, LoadWarehouse};
use tvetl_lambda::{AwsClients, LoadConfig};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let function = LoadWarehouse::new(AwsClients::load().await, LoadConfig::from_env()?);
    let function = &function;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<LoadRequest>| async move {
        tvetl_lambda::respond(function.handle(&event.payload).await)
    }))
    .await
}
