//! Errors of the JSON live API and how each becomes an `error` event.

use switchyard::CoreError;
use thiserror::Error;

use crate::json;

/// Why a live API request failed. Each is answered with an `error` event; the
/// connection stays open.
#[derive(Debug, Error)]
pub enum LiveError {
    /// The request is not valid JSON or not a known request.
    #[error("{0}")]
    BadRequest(String),
    /// A request other than `auth` before authenticating.
    #[error("authenticate first: send {{\"type\":\"auth\",\"user\":...,\"password\":...}}")]
    NotAuthenticated,
    /// `auth` on an authenticated connection.
    #[error("already authenticated")]
    AlreadyAuthenticated,
    /// A subscription id that is already in use.
    #[error("subscription {0:?} already exists")]
    DuplicateSubscription(String),
    /// A subscription id that is not in use.
    #[error("no subscription {0:?}")]
    UnknownSubscription(String),
    /// An ack/nack tag that is not awaiting settlement.
    #[error("unknown delivery tag {0}")]
    UnknownTag(u64),
    /// The core refused.
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl LiveError {
    /// The stable `code` of the `error` event.
    pub fn code(&self) -> &'static str {
        match self {
            LiveError::BadRequest(_) => "bad_request",
            LiveError::NotAuthenticated => "not_authenticated",
            LiveError::AlreadyAuthenticated => "already_authenticated",
            LiveError::DuplicateSubscription(_) => "duplicate_subscription",
            LiveError::UnknownSubscription(_) => "unknown_subscription",
            LiveError::UnknownTag(_) => "unknown_tag",
            LiveError::Core(e) => json::error_code(e.kind),
        }
    }
}
