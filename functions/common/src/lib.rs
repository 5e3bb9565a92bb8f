//! What every tvetl Lambda shares: configuration from the environment, AWS
//! clients from one `aws-config` load, event parsing, retryable/not
//! classification and CloudWatch embedded-metric lines.
//!
//! The handlers' `main.rs` files only wire these to `lambda_runtime`.

// A warning, so CI's `clippy -D warnings` fails on an undocumented public item.
#![warn(missing_docs)]

pub mod backoff;
pub mod compact;
pub mod config;
pub mod events;
pub mod ingest;
pub mod load;
pub mod metrics;
pub mod stream;

pub use config::{AwsClients, CompactConfig, ConfigError, IngestConfig, LoadConfig, RestorePolicy, RetryBackoff};

/// A handler failure, classified: a retryable one is returned to Lambda so
/// that it retries the event (outputs are deterministic, so a retry rewrites
/// the same objects); a permanent one is logged and reported, never retried.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// A dependency failed in a way a retry may fix (throttling, 5xx, timeout).
    #[error("retryable: {0}")]
    Retryable(String),
    /// The event or the configuration is wrong; a retry cannot help.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl HandlerError {
    /// True for [`HandlerError::Retryable`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, HandlerError::Retryable(_))
    }
}

/// A core error that knows whether a retry may help.
pub trait Retryability: std::fmt::Display {
    /// True when a retry may succeed.
    fn retryable(&self) -> bool;
}

macro_rules! retryability {
    ($($error:ty),*) => {$(
        impl Retryability for $error {
            fn retryable(&self) -> bool {
                self.is_retryable()
            }
        }
    )*};
}

retryability!(
    tvetl_core::store::StoreError,
    tvetl_core::catalog::CatalogError,
    tvetl_core::warehouse::WarehouseError,
    tvetl_core::error::IngestError,
    tvetl_core::stream::StreamError,
    tvetl_core::compact::CompactionError
);

/// The `errorType` Lambda reports for a retryable failure, which retry
/// policies (the state machine's `Retry`) match on.
pub const RETRYABLE_ERROR_TYPE: &str = "tvetl.Retryable";
/// The `errorType` of a failure that a retry cannot fix.
pub const PERMANENT_ERROR_TYPE: &str = "tvetl.Permanent";

impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(error: HandlerError) -> Self {
        let error_type = if error.is_retryable() { RETRYABLE_ERROR_TYPE } else { PERMANENT_ERROR_TYPE };
        lambda_runtime::Diagnostic { error_type: error_type.into(), error_message: error.to_string() }
    }
}

/// A handler's outcome as Lambda's answer: the response as JSON, or the
/// error under its class's `errorType`.
pub fn respond<T: serde::Serialize>(
    outcome: Result<T, HandlerError>,
) -> Result<serde_json::Value, lambda_runtime::Diagnostic> {
    let response = outcome?;
    serde_json::to_value(response)
        .map_err(|e| HandlerError::Permanent(format!("the response does not serialize: {e}")).into())
}

/// Every core error becomes a handler error of its class, so `?` classifies.
impl<E: Retryability> From<E> for HandlerError {
    fn from(error: E) -> Self {
        if error.retryable() {
            HandlerError::Retryable(error.to_string())
        } else {
            HandlerError::Permanent(error.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_redshiftdata::config::http::HttpResponse;
    use aws_sdk_redshiftdata::error::{ErrorMetadata, SdkError};
    use aws_sdk_redshiftdata::operation::batch_execute_statement::BatchExecuteStatementError;
    use aws_sdk_s3::primitives::SdkBody;
    use tvetl_core::aws::is_retryable;

    use super::*;

    /// A service's answer with this status and error code.
    fn answer(status: u16, code: &str) -> SdkError<BatchExecuteStatementError, HttpResponse> {
        let error = BatchExecuteStatementError::generic(ErrorMetadata::builder().code(code).message("m").build());
        SdkError::service_error(error, HttpResponse::new(status.try_into().unwrap(), SdkBody::empty()))
    }

    #[test]
    fn the_data_apis_limits_and_any_server_fault_or_throttle_are_retryable() {
        for code in [
            "ActiveStatementsExceededException",
            "ActiveSessionsExceededException",
            "ActiveWaitingRequestsExceededException",
            "ThrottlingException",
        ] {
            assert!(is_retryable(&answer(400, code)), "{code}");
        }
        for (status, code) in [
            (500, "InternalServerException"),
            (500, "BatchExecuteStatementException"),
            (503, "ACodeNotListed"),
            (429, "ACodeNotListed"),
        ] {
            assert!(is_retryable(&answer(status, code)), "{status} {code}");
        }
    }

    #[test]
    fn client_errors_are_not_retryable() {
        for (status, code) in [
            (400, "ValidationException"),
            (400, "ResourceNotFoundException"),
            (403, "AccessDenied"),
            (404, "NoSuchKey"),
        ] {
            assert!(!is_retryable(&answer(status, code)), "{status} {code}");
        }
    }

    #[test]
    fn errors_reach_lambda_under_their_class() {
        let retryable: lambda_runtime::Diagnostic = HandlerError::Retryable("S3 503".into()).into();
        assert_eq!(retryable.error_type, RETRYABLE_ERROR_TYPE);
        assert_eq!(retryable.error_message, "retryable: S3 503");
        let permanent = respond::<()>(Err(HandlerError::Permanent("no such key".into()))).unwrap_err();
        assert_eq!(permanent.error_type, PERMANENT_ERROR_TYPE);
        assert_eq!(respond(Ok(serde_json::json!({"a": 1}))).unwrap(), serde_json::json!({"a": 1}));
    }
}
