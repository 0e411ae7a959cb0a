//! AMQP 0-9-1 front-end: RabbitMQ's wire protocol onto the Switchyard core.
//!
//! Layers, each with one job:
//! - [`codec`]: bytes ⇄ frames, pure (no I/O, no core types), plus the
//!   property and field-table conversions to the core's message form.
//! - `channel`: one channel's state and the method handlers that call the core.
//! - `conn`: the connection task — handshake, read/deliver/write loop,
//!   heartbeats, blocking — the only file that does I/O.
//! - [`server`]: the accept loop.
//! - [`error`]: reply codes and the one mapping from core errors.

pub mod codec;
pub mod config;
pub mod error;
pub mod server;

mod channel;
mod conn;
mod outbound;

pub use config::AmqpConfig;
pub use conn::{CloseReason, serve_connection};
pub use server::serve;
