//! The core's error type. Each front-end maps [`ErrorKind`] onto its own wire
//! errors in one place (AMQP reply codes, SQS error codes, STOMP ERROR frames).

use thiserror::Error;

/// A stable classification of core errors that front-ends switch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The named object does not exist (AMQP 404).
    NotFound,
    /// Access to the resource is refused (AMQP 403).
    AccessRefused,
    /// The resource is exclusively held by another connection (AMQP 405).
    ResourceLocked,
    /// The request conflicts with the resource's current state or definition (AMQP 406).
    PreconditionFailed,
    /// The request is not allowed in this context (AMQP 530).
    NotAllowed,
    /// The request is well-formed but asks for something invalid (AMQP 406 on args, 502 otherwise).
    Invalid,
    /// A limit was hit (AMQP 506).
    ResourceLimit,
    /// The command is invalid in this state, e.g. an unknown exchange type (AMQP 503).
    CommandInvalid,
    /// Not implemented by this broker (AMQP 540).
    NotImplemented,
    /// Something went wrong inside the broker (AMQP 541).
    Internal,
}

/// An error from the core, with RabbitMQ-style text (`NOT_FOUND - no queue 'q' in vhost '/'`
/// is built by the AMQP bridge from the kind and this text).
#[derive(Debug, Clone, Error)]
#[error("{text}")]
pub struct CoreError {
    /// What kind of failure this is.
    pub kind: ErrorKind,
    /// Human-readable detail, already phrased as RabbitMQ phrases it (without the code prefix).
    pub text: String,
}

impl CoreError {
    /// A new error of `kind` with `text`.
    pub fn new(kind: ErrorKind, text: impl Into<String>) -> CoreError {
        CoreError { kind, text: text.into() }
    }
    /// `NOT_FOUND`.
    pub fn not_found(text: impl Into<String>) -> CoreError {
        CoreError::new(ErrorKind::NotFound, text)
    }
    /// `PRECONDITION_FAILED`.
    pub fn precondition(text: impl Into<String>) -> CoreError {
        CoreError::new(ErrorKind::PreconditionFailed, text)
    }
    /// `ACCESS_REFUSED`.
    pub fn access_refused(text: impl Into<String>) -> CoreError {
        CoreError::new(ErrorKind::AccessRefused, text)
    }
    /// `RESOURCE_LOCKED`.
    pub fn locked(text: impl Into<String>) -> CoreError {
        CoreError::new(ErrorKind::ResourceLocked, text)
    }
    /// Invalid argument.
    pub fn invalid(text: impl Into<String>) -> CoreError {
        CoreError::new(ErrorKind::Invalid, text)
    }
    /// `NOT_ALLOWED`.
    pub fn not_allowed(text: impl Into<String>) -> CoreError {
        CoreError::new(ErrorKind::NotAllowed, text)
    }
}

/// Result alias for core operations.
pub type CoreResult<T> = Result<T, CoreError>;

/// Failure to open the broker at start-up.
#[derive(Debug, Error)]
pub enum OpenError {
    /// The data directory could not be created or used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration is inconsistent (bad regex, unknown hash format, ...).
    #[error("configuration: {0}")]
    Config(String),
    /// Stored definitions could not be loaded.
    #[error("definitions: {0}")]
    Definitions(String),
}
