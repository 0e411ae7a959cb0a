//! WebSocket front-ends for Switchyard: STOMP and MQTT over WebSocket (the
//! same connection tasks as over TCP, run on a [`WsByteStream`]), the JSON
//! live API for browsers (`/ws/live`), and the demo page (`/demo`).
//!
//! Layers, each with one job:
//! - [`stream`]: a WebSocket as a byte stream (frames may span or share
//!   messages), WebSocket keepalive, close codes.
//! - [`server`]: the listeners, the upgrade (origin, limit, subprotocol,
//!   credentials), and the hand-off to STOMP, MQTT or the live API.
//! - `live`: one JSON live API connection: requests, subscriptions, the bounded
//!   outbound buffer and its overflow policy.
//! - [`json`]: the live API's wire forms and the message ⇄ JSON conversion.
//! - [`config`], [`error`].
//!
//! This crate depends on the core but not on the STOMP or MQTT bridges: the
//! binary passes their connection tasks in as [`server::Handlers`]. The API,
//! close codes and limits are documented in `docs/websocket.md`.

#![warn(missing_docs, unreachable_pub)]

pub mod config;
pub mod error;
pub mod json;
pub mod server;
pub mod stream;

mod live;

pub use config::{TopicOverflow, WsConfig};
pub use live::{CLOSE_AUTH_FAILED, CLOSE_SLOW_CONSUMER};
pub use server::{Handlers, StreamHandler, WsServer};
pub use stream::{CLOSE_IDLE_TIMEOUT, WsByteStream};
