//! AWS adapters of the core's ports: S3 for [`ObjectStore`], the Glue Data
//! Catalog for [`Catalog`].
//!
//! The ports are synchronous (the core decodes and encodes on a blocking
//! thread); each adapter holds a Tokio runtime handle and drives the async SDK
//! from there. Call them from `tokio::task::spawn_blocking`, never from an
//! async task.
//!
//! [`ObjectStore`]: crate::store::ObjectStore
//! [`Catalog`]: crate::catalog::Catalog

pub mod glue;
pub mod redshift;
pub mod s3;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// Whether an SDK failure is worth retrying: transport failures, timeouts,
/// throttling and 5xx answers are; client errors are not. The adapters
/// classify their failures with it (public for the Lambdas' tests, which
/// build this module).
///
/// The status decides first: a service answers 5xx for its own faults and
/// 429 for throttling, whatever its error code. The codes cover the services'
/// throttling and capacity errors that come as plain 4xx, such as the Data
/// API's limits on active statements and sessions, which free up as other
/// loads finish.
pub fn is_retryable<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(e) => {
            let status = e.raw().status().as_u16();
            status >= 500 || status == 429 || e.err().code().is_some_and(is_retryable_code)
        }
        _ => false,
    }
}

/// The error codes of S3, Glue and the Redshift Data API that a later
/// attempt can get past.
fn is_retryable_code(code: &str) -> bool {
    matches!(
        code,
        "SlowDown"
            | "InternalError"
            | "ServiceUnavailable"
            | "RequestTimeout"
            | "Throttling"
            | "ThrottlingException"
            | "InternalServiceException"
            | "OperationTimeoutException"
            | "ConcurrentModificationException"
            | "InternalServerException"
            | "ExecuteStatementException"
            | "BatchExecuteStatementException"
            | "ActiveStatementsExceededException"
            | "ActiveSessionsExceededException"
            | "ActiveWaitingRequestsExceededException"
    )
}

/// A readable message for an SDK failure: the service's code and message
/// when it gave them.
pub(crate) fn describe<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match error {
        SdkError::ServiceError(e) => {
            format!("{}: {}", e.err().code().unwrap_or("service error"), e.err().message().unwrap_or("(no message)"))
        }
        other => aws_sdk_s3::error::DisplayErrorContext(other).to_string(),
    }
}
