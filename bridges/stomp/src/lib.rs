//! STOMP 1.0, 1.1 and 1.2 front-end: RabbitMQ's STOMP conventions, plus the
//! ActiveMQ features JMS-era applications rely on (selectors, durable
//! subscriptions by client id and name), on the Switchyard core.
//!
//! Layers, each with one job:
//! - [`codec`]: bytes ⇄ frames, pure and bounded (no I/O, no core types).
//! - [`destination`]: `/queue/`, `/topic/`, ... ⇄ exchanges, keys and queues.
//! - [`convert`]: STOMP headers ⇄ the core's message properties.
//! - [`selector`]: JMS SQL-92 selectors, parsed and evaluated.
//! - [`session`]: one session's state machine (sans-IO).
//! - `conn`: the connection task — the only file that does I/O.
//! - [`server`]: the accept loop.
//! - [`error`]: ERROR frames and the one mapping from core errors.
//!
//! Mapping onto the core, and deviations, are documented in `docs/stomp.md`.

pub mod codec;
pub mod config;
pub mod convert;
pub mod destination;
pub mod error;
pub mod selector;
pub mod server;
pub mod session;

mod conn;

pub use config::StompConfig;
pub use conn::{CloseReason, serve_connection};
pub use server::serve;
