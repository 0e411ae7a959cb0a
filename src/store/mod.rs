//! Durable storage: the message log for persistent messages in durable queues
//! ([`log`]), the on-disk message encoding ([`codec`]), and definitions
//! (exchanges, durable queues, bindings) per vhost ([`definitions`]), and atomic replacement
//! of small state files ([`atomic`]).

pub mod atomic;
pub mod codec;
pub mod definitions;
pub mod log;

pub use log::{Lsn, MessageLog, Persisted, SyncPolicy};
