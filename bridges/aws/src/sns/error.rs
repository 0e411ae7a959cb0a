//! SNS errors and their wire shape (query protocol: `<ErrorResponse>` XML with SNS's codes).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::sns::xml::{esc, request_id};

/// The XML namespace of SNS responses.
pub const XMLNS: &str = "http://sns.amazonaws.com/doc/2010-03-31/";

/// Everything an SNS action can fail with; the text is SNS's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnsError {
    /// A topic, subscription or endpoint that does not exist (`NotFound`, 404).
    #[error("{0}")]
    NotFound(String),
    /// A bad parameter (`InvalidParameter`, 400); texts start with `Invalid parameter: `.
    #[error("{0}")]
    InvalidParameter(String),
    /// A bad parameter value (`InvalidParameterValue`, 400), used for message attributes.
    #[error("{0}")]
    InvalidParameterValue(String),
    /// The caller may not do this (`AuthorizationError`, 403).
    #[error("{0}")]
    AuthorizationError(String),
    /// A tagged resource that does not exist (`ResourceNotFound`, 404).
    #[error("{0}")]
    ResourceNotFound(String),
    /// Too many tags (`TagLimitExceeded`, 400).
    #[error("{0}")]
    TagLimitExceeded(String),
    /// More than 10 batch entries.
    #[error("The batch request contains more entries than permissible.")]
    TooManyEntriesInBatchRequest,
    /// A batch with no entries.
    #[error("The batch request doesn't contain any entries.")]
    EmptyBatchRequest,
    /// Two batch entries with one id.
    #[error("Two or more batch entries in the request have the same Id.")]
    BatchEntryIdsNotDistinct,
    /// A batch entry id with bad characters or length.
    #[error(
        "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long."
    )]
    InvalidBatchEntryId,
    /// The entries of a batch add up to more than 256 KiB.
    #[error("The length of all the batch messages put together is more than the limit.")]
    BatchRequestTooLong,
    /// An action this broker does not know (`InvalidAction`, 400).
    #[error("{0}")]
    InvalidAction(String),
    /// The broker failed (`InternalError`, 500).
    #[error("{0}")]
    Internal(String),
}

impl SnsError {
    /// `Invalid parameter: <what>`.
    pub fn param(what: impl std::fmt::Display) -> SnsError {
        SnsError::InvalidParameter(format!("Invalid parameter: {what}"))
    }

    /// `Topic does not exist`.
    pub fn no_topic() -> SnsError {
        SnsError::NotFound("Topic does not exist".into())
    }

    /// HTTP status, code and fault side.
    pub fn shape(&self) -> (StatusCode, &'static str, &'static str) {
        use SnsError::*;
        let bad = StatusCode::BAD_REQUEST;
        match self {
            NotFound(_) => (StatusCode::NOT_FOUND, "NotFound", "Sender"),
            InvalidParameter(_) => (bad, "InvalidParameter", "Sender"),
            InvalidParameterValue(_) => (bad, "ParameterValueInvalid", "Sender"),
            AuthorizationError(_) => (StatusCode::FORBIDDEN, "AuthorizationError", "Sender"),
            ResourceNotFound(_) => (StatusCode::NOT_FOUND, "ResourceNotFound", "Sender"),
            TagLimitExceeded(_) => (bad, "TagLimitExceeded", "Sender"),
            TooManyEntriesInBatchRequest => (bad, "TooManyEntriesInBatchRequest", "Sender"),
            EmptyBatchRequest => (bad, "EmptyBatchRequest", "Sender"),
            BatchEntryIdsNotDistinct => (bad, "BatchEntryIdsNotDistinct", "Sender"),
            InvalidBatchEntryId => (bad, "InvalidBatchEntryId", "Sender"),
            BatchRequestTooLong => (bad, "BatchRequestTooLong", "Sender"),
            InvalidAction(_) => (bad, "InvalidAction", "Sender"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "Receiver"),
        }
    }

    /// The query-protocol error response.
    pub fn to_response(&self) -> Response {
        let (status, code, fault) = self.shape();
        let body = format!(
            "<ErrorResponse xmlns=\"{XMLNS}\"><Error><Type>{fault}</Type><Code>{code}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
            esc(&self.to_string()),
            request_id()
        );
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert("content-type", HeaderValue::from_static("text/xml"));
        resp
    }
}
