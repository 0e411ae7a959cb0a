//! AWS API errors and the one function that turns them into AWS's wire shape.
//!
//! JSON protocols answer `{"__type": "<namespace>#<Code>", "message": "..."}` with the legacy
//! query-protocol code in the `x-amzn-query-error` header (`<code>;Sender`). SDKs pick the
//! exception class by the `__type` code, which is the service model's exception shape name
//! (`QueueNameExists`), and report the header code as the error `Code`
//! (`QueueAlreadyExists`, `AWS.SimpleQueueService.NonExistentQueue`).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Everything an AWS action can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// The named queue does not exist.
    #[error("The specified queue does not exist.")]
    QueueDoesNotExist,
    /// A queue with this name exists with different attributes.
    #[error("A queue already exists with the same name and a different value for attribute {0}")]
    QueueAlreadyExists(String),
    /// A receipt handle that this broker did not issue, or whose lease is gone.
    #[error("The input receipt handle \"{0}\" is not a valid receipt handle.")]
    ReceiptHandleIsInvalid(String),
    /// A receipt handle whose message is no longer in flight (ChangeMessageVisibility).
    #[error(
        "Value {0} for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not available for visibility timeout change."
    )]
    MessageNotInflight(String),
    /// A parameter has a bad value.
    #[error("{0}")]
    InvalidParameterValue(String),
    /// A required parameter is absent.
    #[error("The request must contain the parameter {0}.")]
    MissingParameter(String),
    /// An attribute name this broker does not know.
    #[error("Unknown Attribute {0}.")]
    InvalidAttributeName(String),
    /// The body is not valid JSON, or has the wrong shape.
    #[error("{0}")]
    SerializationException(String),
    /// `X-Amz-Target`/`Action` names nothing this broker serves.
    #[error("{0}")]
    UnknownOperation(String),
    /// A known action or attribute this broker does not implement yet.
    #[error("{0}")]
    UnsupportedOperation(String),
    /// The body has characters SQS does not allow.
    #[error("{0}")]
    InvalidMessageContents(String),
    /// The request body is larger than the configured limit.
    #[error("Request body is larger than {0} bytes.")]
    RequestTooLarge(usize),
    /// A batch of more than 10 entries.
    #[error("Maximum number of entries per request are 10. You have sent {0}.")]
    TooManyEntriesInBatchRequest(usize),
    /// A batch with no entries.
    #[error("There should be at least one {0} in the request.")]
    EmptyBatchRequest(String),
    /// Two batch entries share an id.
    #[error("Id {0} repeated.")]
    BatchEntryIdsNotDistinct(String),
    /// A batch entry id with bad characters or length.
    #[error(
        "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long."
    )]
    InvalidBatchEntryId,
    /// The batch's bodies add up to more than the maximum message size.
    #[error("Batch requests cannot be longer than {0} bytes.")]
    BatchRequestTooLong(usize),
    /// PurgeQueue twice within 60 s (not enforced yet; kept for the mapping).
    #[error("Only one PurgeQueue operation on {0} is allowed every 60 seconds.")]
    PurgeQueueInProgress(String),
    /// Too many messages in flight on the queue (short poll).
    #[error("Too many messages in flight (the limit is {0}).")]
    OverLimit(u64),
    /// A resource (a move task handle) that does not exist.
    #[error("{0}")]
    ResourceNotFound(String),
    /// A request the signature check refused (strict SigV4 mode); see [`crate::sigv4`].
    #[error("{1}")]
    Auth(AuthFailure, String),
    /// The core refused for a reason with no closer AWS code.
    #[error("{0}")]
    Internal(String),
}

/// Why a signature check refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header and no `X-Amz-Signature` query parameter.
    Missing,
    /// The signature's parts are malformed or missing.
    Incomplete,
    /// The access key id is not configured.
    UnknownKey,
    /// The signature does not match the request.
    BadSignature,
    /// The request time is too far from now (or a presigned URL expired).
    Expired,
}

/// The AWS shape of an error: HTTP status, JSON `__type` code, and the query-protocol code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// HTTP status.
    pub status: StatusCode,
    /// The code in `__type` (without the namespace).
    pub code: &'static str,
    /// The legacy code in `x-amzn-query-error` (and in query-protocol XML).
    pub query_code: &'static str,
    /// `Sender` or `Receiver`.
    pub fault: &'static str,
}

/// Maps every error to its AWS shape: the single place codes are chosen.
pub fn shape(err: &AwsError) -> Shape {
    use AwsError::*;
    let s = |code: &'static str, query_code: &'static str| Shape {
        status: StatusCode::BAD_REQUEST,
        code,
        query_code,
        fault: "Sender",
    };
    match err {
        QueueDoesNotExist => s("QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"),
        QueueAlreadyExists(_) => s("QueueNameExists", "QueueAlreadyExists"),
        ReceiptHandleIsInvalid(_) => s("ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid"),
        MessageNotInflight(_) => s("MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight"),
        InvalidParameterValue(_) => s("InvalidParameterValue", "InvalidParameterValue"),
        MissingParameter(_) => s("MissingParameter", "MissingParameter"),
        InvalidAttributeName(_) => s("InvalidAttributeName", "InvalidAttributeName"),
        SerializationException(_) => s("SerializationException", "SerializationException"),
        UnknownOperation(_) => s("UnknownOperationException", "InvalidAction"),
        UnsupportedOperation(_) => s("UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation"),
        InvalidMessageContents(_) => s("InvalidMessageContents", "InvalidMessageContents"),
        RequestTooLarge(_) => {
            Shape { status: StatusCode::PAYLOAD_TOO_LARGE, ..s("RequestEntityTooLarge", "RequestEntityTooLarge") }
        }
        TooManyEntriesInBatchRequest(_) => {
            s("TooManyEntriesInBatchRequest", "AWS.SimpleQueueService.TooManyEntriesInBatchRequest")
        }
        EmptyBatchRequest(_) => s("EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest"),
        BatchEntryIdsNotDistinct(_) => s("BatchEntryIdsNotDistinct", "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"),
        InvalidBatchEntryId => s("InvalidBatchEntryId", "AWS.SimpleQueueService.InvalidBatchEntryId"),
        BatchRequestTooLong(_) => s("BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong"),
        PurgeQueueInProgress(_) => s("PurgeQueueInProgress", "AWS.SimpleQueueService.PurgeQueueInProgress"),
        OverLimit(_) => s("OverLimit", "OverLimit"),
        ResourceNotFound(_) => s("ResourceNotFoundException", "ResourceNotFoundException"),
        Auth(kind, _) => {
            let (status, code) = match kind {
                AuthFailure::Missing => (StatusCode::FORBIDDEN, "MissingAuthenticationToken"),
                AuthFailure::Incomplete => (StatusCode::BAD_REQUEST, "IncompleteSignature"),
                AuthFailure::UnknownKey => (StatusCode::FORBIDDEN, "InvalidClientTokenId"),
                AuthFailure::BadSignature => (StatusCode::FORBIDDEN, "SignatureDoesNotMatch"),
                AuthFailure::Expired => (StatusCode::FORBIDDEN, "RequestExpired"),
            };
            Shape { status, ..s(code, code) }
        }
        Internal(_) => Shape {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "InternalError",
            query_code: "InternalError",
            fault: "Receiver",
        },
    }
}

/// An error answered in the AWS JSON protocol of service `namespace` (e.g. `com.amazonaws.sqs`).
pub fn json_error(namespace: &str, err: &AwsError) -> Response {
    let sh = shape(err);
    let body = serde_json::json!({
        "__type": format!("{namespace}#{}", sh.code),
        "message": err.to_string(),
    });
    let mut resp = (sh.status, body.to_string()).into_response();
    let headers = resp.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/x-amz-json-1.0"));
    if let Ok(v) = HeaderValue::from_str(&format!("{};{}", sh.query_code, sh.fault)) {
        headers.insert("x-amzn-query-error", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonexistent_queue_maps_to_legacy_code() {
        let sh = shape(&AwsError::QueueDoesNotExist);
        assert_eq!(sh.code, "QueueDoesNotExist");
        assert_eq!(sh.query_code, "AWS.SimpleQueueService.NonExistentQueue");
        assert_eq!(sh.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn json_error_has_type_and_header() {
        let resp = json_error("com.amazonaws.sqs", &AwsError::MissingParameter("QueueUrl".into()));
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            resp.headers().get("x-amzn-query-error").and_then(|v| v.to_str().ok()),
            Some("MissingParameter;Sender")
        );
    }
}
