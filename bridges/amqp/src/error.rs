//! AMQP errors and the one place core errors become reply codes.
//!
//! A *soft* error closes one channel (`channel.close`); a *hard* error closes
//! the connection (`connection.close`). Which codes are hard is fixed by the
//! 0-9-1 spec; the texts follow RabbitMQ (`NOT_FOUND - no queue 'q' in vhost '/'`).

use switchyard::{CoreError, ErrorKind};

/// AMQP 0-9-1 reply codes used by this server.
pub mod code {
    /// Normal close.
    pub const REPLY_SUCCESS: u16 = 200;
    /// The message could not be routed (basic.return with mandatory).
    pub const NO_ROUTE: u16 = 312;
    /// The server is going away.
    pub const CONNECTION_FORCED: u16 = 320;
    /// Bad virtual host path.
    pub const INVALID_PATH: u16 = 402;
    /// Permission denied.
    pub const ACCESS_REFUSED: u16 = 403;
    /// No such entity.
    pub const NOT_FOUND: u16 = 404;
    /// Held exclusively by another connection.
    pub const RESOURCE_LOCKED: u16 = 405;
    /// Precondition failed.
    pub const PRECONDITION_FAILED: u16 = 406;
    /// Malformed frame.
    pub const FRAME_ERROR: u16 = 501;
    /// Malformed method arguments.
    pub const SYNTAX_ERROR: u16 = 502;
    /// Invalid command in this state.
    pub const COMMAND_INVALID: u16 = 503;
    /// Channel misuse.
    pub const CHANNEL_ERROR: u16 = 504;
    /// A frame arrived out of sequence.
    pub const UNEXPECTED_FRAME: u16 = 505;
    /// A server resource ran out.
    pub const RESOURCE_ERROR: u16 = 506;
    /// Not allowed (e.g. vhost access).
    pub const NOT_ALLOWED: u16 = 530;
    /// Not implemented.
    pub const NOT_IMPLEMENTED: u16 = 540;
    /// Internal error.
    pub const INTERNAL_ERROR: u16 = 541;
}

/// The symbolic name RabbitMQ prefixes to reply texts.
pub fn code_name(code: u16) -> &'static str {
    match code {
        200 => "OK",
        312 => "NO_ROUTE",
        320 => "CONNECTION_FORCED",
        402 => "INVALID_PATH",
        403 => "ACCESS_REFUSED",
        404 => "NOT_FOUND",
        405 => "RESOURCE_LOCKED",
        406 => "PRECONDITION_FAILED",
        501 => "FRAME_ERROR",
        502 => "SYNTAX_ERROR",
        503 => "COMMAND_INVALID",
        504 => "CHANNEL_ERROR",
        505 => "UNEXPECTED_FRAME",
        506 => "RESOURCE_ERROR",
        530 => "NOT_ALLOWED",
        540 => "NOT_IMPLEMENTED",
        _ => "INTERNAL_ERROR",
    }
}

/// A protocol error to report to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {text}")]
pub struct AmqpError {
    /// Close the whole connection rather than one channel.
    pub hard: bool,
    /// Reply code.
    pub code: u16,
    /// Reply text, already prefixed with the code name.
    pub text: String,
    /// Class of the method that failed (0 if none).
    pub class_id: u16,
    /// Method that failed (0 if none).
    pub method_id: u16,
}

impl AmqpError {
    /// A channel-level error.
    pub fn channel(code: u16, detail: impl AsRef<str>) -> AmqpError {
        AmqpError {
            hard: false,
            code,
            text: format!("{} - {}", code_name(code), detail.as_ref()),
            class_id: 0,
            method_id: 0,
        }
    }

    /// A connection-level error.
    pub fn connection(code: u16, detail: impl AsRef<str>) -> AmqpError {
        AmqpError { hard: true, ..AmqpError::channel(code, detail) }
    }

    /// Attach the failing method's ids.
    pub fn on(mut self, class_id: u16, method_id: u16) -> AmqpError {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }

    /// Reply text truncated to fit a short string.
    pub fn short_text(&self) -> String {
        truncate(&self.text, 255)
    }
}

/// Truncate to at most `max` bytes on a char boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl From<CoreError> for AmqpError {
    fn from(e: CoreError) -> AmqpError {
        let (code, hard) = match e.kind {
            ErrorKind::NotFound => (code::NOT_FOUND, false),
            ErrorKind::AccessRefused => (code::ACCESS_REFUSED, false),
            ErrorKind::ResourceLocked => (code::RESOURCE_LOCKED, false),
            ErrorKind::PreconditionFailed | ErrorKind::Invalid => (code::PRECONDITION_FAILED, false),
            ErrorKind::ResourceLimit => (code::RESOURCE_ERROR, false),
            ErrorKind::NotAllowed => (code::NOT_ALLOWED, true),
            ErrorKind::CommandInvalid => (code::COMMAND_INVALID, true),
            ErrorKind::NotImplemented => (code::NOT_IMPLEMENTED, true),
            ErrorKind::Internal => (code::INTERNAL_ERROR, true),
        };
        let text = if e.kind == ErrorKind::Internal {
            tracing::error!(error = %e.text, "internal error");
            "internal error".to_string()
        } else {
            e.text
        };
        AmqpError { hard, code, text: format!("{} - {}", code_name(code), text), class_id: 0, method_id: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_errors_map_to_rabbitmq_codes() {
        let e: AmqpError = CoreError::not_found("no queue 'q' in vhost '/'").into();
        assert_eq!((e.code, e.hard), (404, false));
        assert_eq!(e.text, "NOT_FOUND - no queue 'q' in vhost '/'");
        let e: AmqpError = CoreError::not_allowed("x").into();
        assert_eq!((e.code, e.hard), (530, true));
        let e: AmqpError = CoreError::new(ErrorKind::Internal, "secret detail").into();
        assert!(!e.text.contains("secret"));
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let s = "é".repeat(200);
        let t = truncate(&s, 255);
        assert!(t.len() <= 255);
        assert!(s.starts_with(&t));
    }
}
