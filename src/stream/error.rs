//! Errors of stream operations. Front-ends map each variant onto their own wire error once
//! (Kinesis exception names in the AWS bridge, AMQP reply codes through [`CoreError`]).

use crate::error::{CoreError, ErrorKind};

/// Why a stream operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// No stream of that name.
    #[error("stream '{0}' not found")]
    StreamNotFound(String),
    /// A stream (or queue) of that name exists already.
    #[error("stream '{0}' already exists")]
    StreamExists(String),
    /// No shard with that index in the stream (never existed, or expired).
    #[error("could not find shard {shard} in stream '{stream}'")]
    ShardNotFound {
        /// The stream.
        stream: String,
        /// The shard id as text (`shardId-000000000003`).
        shard: String,
    },
    /// The operation needs an open shard.
    #[error("shard {shard} in stream '{stream}' is closed")]
    ShardClosed {
        /// The stream.
        stream: String,
        /// The shard id as text.
        shard: String,
    },
    /// A reader or consumer name that does not exist.
    #[error("consumer '{0}' not found")]
    ConsumerNotFound(String),
    /// A consumer name that exists already.
    #[error("consumer '{0}' already exists")]
    ConsumerExists(String),
    /// An argument is out of range or malformed.
    #[error("{0}")]
    Invalid(String),
    /// A limit of the stream was hit (shard count, consumers, ...).
    #[error("{0}")]
    Limit(String),
    /// The stream log cannot store records (I/O failure); nothing more is accepted.
    #[error("stream storage unavailable: {0}")]
    Storage(String),
}

impl From<StreamError> for CoreError {
    fn from(e: StreamError) -> CoreError {
        let kind = match &e {
            StreamError::StreamNotFound(_) | StreamError::ShardNotFound { .. } | StreamError::ConsumerNotFound(_) => {
                ErrorKind::NotFound
            }
            StreamError::StreamExists(_) | StreamError::ConsumerExists(_) | StreamError::ShardClosed { .. } => {
                ErrorKind::PreconditionFailed
            }
            StreamError::Invalid(_) => ErrorKind::PreconditionFailed,
            StreamError::Limit(_) | StreamError::Storage(_) => ErrorKind::ResourceLimit,
        };
        CoreError::new(kind, e.to_string())
    }
}
