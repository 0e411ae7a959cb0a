//! Kinesis errors and their AWS JSON 1.1 shape: HTTP 400 (500 for internal failures) with
//! `{"__type": "<Code>", "message": "..."}`, the shape boto3 and the Java SDK parse.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use switchyard::stream::StreamError;

/// Every error a Kinesis action can answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KinesisError {
    /// The stream, shard or consumer does not exist.
    #[error("{0}")]
    ResourceNotFound(String),
    /// The resource exists already or is busy.
    #[error("{0}")]
    ResourceInUse(String),
    /// An argument is invalid.
    #[error("{0}")]
    InvalidArgument(String),
    /// A required parameter is missing or malformed (the AWS "ValidationException").
    #[error("{0}")]
    Validation(String),
    /// The shard iterator is older than five minutes.
    #[error("{0}")]
    ExpiredIterator(String),
    /// A per-shard throughput limit was hit.
    #[error("{0}")]
    ProvisionedThroughputExceeded(String),
    /// An account or stream limit was hit.
    #[error("{0}")]
    LimitExceeded(String),
    /// The request body is not valid JSON/CBOR of the expected shape.
    #[error("{0}")]
    Serialization(String),
    /// `X-Amz-Target` names no Kinesis action.
    #[error("{0}")]
    UnknownOperation(String),
    /// Something failed inside the broker (storage).
    #[error("{0}")]
    Internal(String),
}

impl KinesisError {
    /// The `__type` code.
    pub fn code(&self) -> &'static str {
        match self {
            KinesisError::ResourceNotFound(_) => "ResourceNotFoundException",
            KinesisError::ResourceInUse(_) => "ResourceInUseException",
            KinesisError::InvalidArgument(_) => "InvalidArgumentException",
            KinesisError::Validation(_) => "ValidationException",
            KinesisError::ExpiredIterator(_) => "ExpiredIteratorException",
            KinesisError::ProvisionedThroughputExceeded(_) => "ProvisionedThroughputExceededException",
            KinesisError::LimitExceeded(_) => "LimitExceededException",
            KinesisError::Serialization(_) => "SerializationException",
            KinesisError::UnknownOperation(_) => "UnknownOperationException",
            KinesisError::Internal(_) => "InternalFailure",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            KinesisError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// Map a core stream error, phrasing it as Kinesis does for `account`.
    pub fn from_stream(e: StreamError, account: &str) -> KinesisError {
        match e {
            StreamError::StreamNotFound(s) => {
                KinesisError::ResourceNotFound(format!("Stream {s} under account {account} not found."))
            }
            StreamError::StreamExists(s) => {
                KinesisError::ResourceInUse(format!("Stream {s} under account {account} already exists."))
            }
            StreamError::ShardNotFound { stream, shard } => KinesisError::ResourceNotFound(format!(
                "Could not find shard {shard} in stream {stream} under account {account}."
            )),
            StreamError::ShardClosed { stream, shard } => KinesisError::InvalidArgument(format!(
                "Shard {shard} in stream {stream} under account {account} has already been merged or split, and thus is not eligible for merging or splitting."
            )),
            StreamError::ConsumerNotFound(c) => {
                KinesisError::ResourceNotFound(format!("Consumer {c}, account {account} not found."))
            }
            StreamError::ConsumerExists(c) => {
                KinesisError::ResourceInUse(format!("Consumer {c} under account {account} already exists."))
            }
            StreamError::Invalid(t) => KinesisError::InvalidArgument(t),
            StreamError::Limit(t) => KinesisError::LimitExceeded(t),
            StreamError::Storage(t) => KinesisError::Internal(t),
        }
    }
}

/// The JSON 1.1 error response.
pub fn json_error(err: &KinesisError) -> Response {
    let body = serde_json::json!({ "__type": err.code(), "message": err.to_string() });
    let mut resp = (err.status(), body.to_string()).into_response();
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/x-amz-json-1.1"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_errors_map_to_kinesis_codes_and_texts() {
        let e = KinesisError::from_stream(StreamError::StreamNotFound("s".into()), "000000000000");
        assert_eq!(e.code(), "ResourceNotFoundException");
        assert_eq!(e.to_string(), "Stream s under account 000000000000 not found.");
        let e = KinesisError::from_stream(StreamError::StreamExists("s".into()), "1");
        assert_eq!(e.code(), "ResourceInUseException");
        assert_eq!(KinesisError::from_stream(StreamError::Storage("x".into()), "1").status(), 500);
    }
}
