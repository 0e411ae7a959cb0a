//! Switchyard's broker core: virtual hosts, exchanges, queues (and, later,
//! streams) behind one API that every front-end uses.
//!
//! The core never touches a socket and names no wire protocol. A front-end
//! gets a [`BrokerHandle`], authenticates a client, opens a [`VHost`], and then
//! declares, binds, publishes, consumes and settles through it. Deliveries come
//! back as [`queue::ConsumerEvent`]s on a channel the front-end owns.
//!
//! Map:
//! - [`message`]: the one message form all protocols convert to and from.
//! - [`exchange`], [`topic`]: routing.
//! - [`queue`]: the queue state machine ([`queue::state`]) and its runtime wrapper.
//! - [`vhost`]: the operations, permission checks and error texts.
//! - [`dead_letter`]: `x-death` bookkeeping.
//! - [`stream`]: streams (sharded, replayable logs with Kinesis semantics) and their log.
//! - [`auth`], [`memory`], [`config`], [`broker`].

#![warn(missing_docs, unreachable_pub)]

pub mod auth;
pub mod broker;
pub mod config;
pub mod dead_letter;
pub mod error;
pub mod exchange;
pub mod filter_policy;
pub mod memory;
pub mod message;
pub mod queue;
pub mod store;
pub mod stream;
pub mod time;
pub mod topic;
pub mod vhost;

pub use broker::{Broker, BrokerHandle};
pub use config::CoreConfig;
pub use error::{CoreError, CoreResult, ErrorKind, OpenError};
pub use message::{FieldTable, FieldValue, Message, Properties};
pub use vhost::{ClientContext, VHost};
