//! MQTT 3.1, 3.1.1 and 5.0 front-end on the Switchyard core, following RabbitMQ's
//! MQTT plugin conventions.
//!
//! Layers, each with one job:
//! - [`codec`]: bytes ⇄ packets, pure and bounded (no I/O, no core types).
//! - [`topic`]: topic names and filters, matching, and the topic ⇄ routing-key mapping.
//! - [`convert`]: PUBLISH ⇄ the core's message (the table in `docs/mqtt.md`).
//! - [`retained`]: the durable retained-message store.
//! - `session`: one session's packet handlers on the core (no I/O).
//! - `conn`: the connection task — the only file that does I/O.
//! - [`shared`]: the session registry (takeover) and per-vhost retained stores.
//! - [`server`]: the accept loop.
//! - [`error`]: reason codes and the one mapping from core errors.
//!
//! Mapping onto the core, lifecycles and deviations from Mosquitto and RabbitMQ are
//! documented in `docs/mqtt.md`.

pub mod codec;
pub mod config;
pub mod convert;
pub mod error;
pub mod retained;
pub mod server;
pub mod shared;
pub mod topic;

mod conn;
mod session;

pub use config::MqttConfig;
pub use conn::serve_connection;
pub use error::CloseReason;
pub use server::{serve, serve_shared};
pub use session::{clean_queue_name, persistent_queue_name, shared_queue_name};
