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

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// Whether an SDK failure is worth retrying: transport failures, timeouts,
/// throttling and 5xx answers are; client errors are not.
pub(crate) fn is_retryable<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(e) => matches!(
            e.err().code(),
            Some(
                "SlowDown"
                    | "InternalError"
                    | "ServiceUnavailable"
                    | "RequestTimeout"
                    | "Throttling"
                    | "ThrottlingException"
                    | "InternalServiceException"
                    | "OperationTimeoutException"
                    | "ConcurrentModificationException"
            )
        ),
        _ => false,
    }
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
