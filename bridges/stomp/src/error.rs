//! STOMP errors and the one place core and decode errors become ERROR frames.
//!
//! An ERROR frame carries a short `message` header and a body with the detail;
//! the texts follow RabbitMQ's STOMP plugin (`message:not_found`, body
//! `NOT_FOUND - no queue 'q' in vhost '/'`). Every ERROR ends the connection
//! (STOMP 1.2: "the server MUST then close the connection").

use switchyard::{CoreError, ErrorKind};

use crate::codec::DecodeError;

/// A protocol error to report to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}: {detail}")]
pub struct StompError {
    /// The ERROR frame's `message` header.
    pub message: String,
    /// The ERROR frame's body.
    pub detail: String,
    /// Extra headers (e.g. `version` on a version mismatch).
    pub headers: Vec<(String, String)>,
}

impl StompError {
    /// An error with `message` and `detail`.
    pub fn new(message: impl Into<String>, detail: impl Into<String>) -> StompError {
        StompError { message: message.into(), detail: detail.into(), headers: Vec::new() }
    }

    /// Add a header to the ERROR frame.
    pub fn with(mut self, name: &str, value: impl Into<String>) -> StompError {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// A required header is absent.
    pub fn missing(command: &str, header: &str) -> StompError {
        StompError::new("Missing header", format!("{command} must include a '{header}' header\n"))
    }
}

/// RabbitMQ's symbolic name and code-prefix for a core error kind.
fn names(kind: ErrorKind) -> (&'static str, &'static str) {
    match kind {
        ErrorKind::NotFound => ("not_found", "NOT_FOUND"),
        ErrorKind::AccessRefused => ("access_refused", "ACCESS_REFUSED"),
        ErrorKind::ResourceLocked => ("resource_locked", "RESOURCE_LOCKED"),
        ErrorKind::PreconditionFailed | ErrorKind::Invalid => ("precondition_failed", "PRECONDITION_FAILED"),
        ErrorKind::NotAllowed => ("not_allowed", "NOT_ALLOWED"),
        ErrorKind::ResourceLimit => ("resource_error", "RESOURCE_ERROR"),
        ErrorKind::CommandInvalid => ("command_invalid", "COMMAND_INVALID"),
        ErrorKind::NotImplemented => ("not_implemented", "NOT_IMPLEMENTED"),
        ErrorKind::Internal => ("internal_error", "INTERNAL_ERROR"),
    }
}

impl From<CoreError> for StompError {
    fn from(e: CoreError) -> StompError {
        let (message, prefix) = names(e.kind);
        let text = if e.kind == ErrorKind::Internal {
            tracing::error!(error = %e.text, "internal error");
            "internal error".to_string()
        } else {
            e.text
        };
        StompError::new(message, format!("{prefix} - {text}\n"))
    }
}

impl From<DecodeError> for StompError {
    fn from(e: DecodeError) -> StompError {
        let message = match &e {
            DecodeError::UnknownCommand(_) => "Bad command",
            DecodeError::TooManyHeaders { .. }
            | DecodeError::HeaderTooLong { .. }
            | DecodeError::BodyTooLarge { .. } => "Frame too large",
            DecodeError::BadEscape { .. } | DecodeError::NotUtf8 { .. } | DecodeError::BadContentLength(_) => {
                "Invalid header"
            }
            DecodeError::MissingColon { .. } | DecodeError::MissingNul { .. } => "Invalid frame",
        };
        StompError::new(message, format!("{e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_errors_use_rabbitmq_words() {
        let e: StompError = CoreError::not_found("no queue 'q' in vhost '/'").into();
        assert_eq!(e.message, "not_found");
        assert_eq!(e.detail, "NOT_FOUND - no queue 'q' in vhost '/'\n");
        let e: StompError = CoreError::new(ErrorKind::Internal, "secret").into();
        assert!(!e.detail.contains("secret"));
    }

    #[test]
    fn decode_errors_are_classified() {
        let e: StompError = DecodeError::UnknownCommand("FOO".into()).into();
        assert_eq!(e.message, "Bad command");
        assert!(e.detail.contains("FOO"));
        let e: StompError = DecodeError::BodyTooLarge { size: 10, max: 5 }.into();
        assert_eq!(e.message, "Frame too large");
    }
}
