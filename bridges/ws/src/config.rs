//! The `[ws]` configuration section: the three listeners and the limits every
//! WebSocket connection obeys.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// What a topic subscription of the JSON live API does when the connection's
/// outbound buffer is full (the browser reads slower than messages arrive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TopicOverflow {
    /// Drop the oldest buffered topic message; the next message of that
    /// subscription carries the running count in `dropped`.
    DropOldest,
    /// Close the connection with code 4429 and the reason `slow consumer`.
    Disconnect,
}

/// Settings of the WebSocket front-ends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct WsConfig {
    /// STOMP over WebSocket (RabbitMQ Web-STOMP's port; path `path`).
    pub stomp_listen: SocketAddr,
    /// MQTT over WebSocket (RabbitMQ Web-MQTT's port; path `path`).
    pub mqtt_listen: SocketAddr,
    /// The main HTTP port: `/ws` (protocol by subprotocol), `/ws/stomp`, `/ws/mqtt`,
    /// `/ws/live` (the JSON live API) and `/demo`.
    pub http_listen: SocketAddr,
    /// The WebSocket path on the STOMP and MQTT ports.
    pub path: String,
    /// Origins allowed to open a WebSocket: `"*"` for any, else exact values such as
    /// `"https://app.example.com"`. Requests without `Origin` (non-browser clients),
    /// same-origin requests and loopback origins are always allowed.
    pub allowed_origins: Vec<String>,
    /// Most WebSocket connections per listener; further connections wait to be accepted.
    pub max_connections: usize,
    /// Largest WebSocket message (and frame) accepted, in bytes; larger ones close the
    /// connection with 1009. A STOMP or MQTT frame may span several messages.
    pub max_message_size: usize,
    /// Seconds between the server's WebSocket pings.
    pub ping_interval: u64,
    /// Seconds without anything from the client (a pong included) before the connection
    /// is closed (code 4408).
    pub idle_timeout: u64,
    /// JSON live API: seconds a client has to authenticate.
    pub auth_timeout: u64,
    /// JSON live API: most messages waiting to be written to one connection.
    pub outbound_max_messages: usize,
    /// JSON live API: most body bytes waiting to be written to one connection.
    pub outbound_max_bytes: usize,
    /// JSON live API: what a topic subscription does when the outbound buffer is full:
    /// `"drop-oldest"` or `"disconnect"`.
    pub topic_overflow: TopicOverflow,
    /// JSON live API: the exchange topic subscriptions bind to when none is given.
    pub default_exchange: String,
    /// JSON live API: the window (most unacknowledged messages) of a queue subscription
    /// that gives none.
    pub default_window: u32,
    /// JSON live API: the virtual host used when `auth` names none.
    pub vhost: String,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            stomp_listen: SocketAddr::from(([0, 0, 0, 0], 15674)),
            mqtt_listen: SocketAddr::from(([0, 0, 0, 0], 15675)),
            http_listen: SocketAddr::from(([0, 0, 0, 0], 15672)),
            path: "/ws".into(),
            allowed_origins: Vec::new(),
            max_connections: 65536,
            max_message_size: 8 * 1024 * 1024,
            ping_interval: 20,
            idle_timeout: 60,
            auth_timeout: 10,
            outbound_max_messages: 1024,
            outbound_max_bytes: 4 * 1024 * 1024,
            topic_overflow: TopicOverflow::DropOldest,
            default_exchange: "amq.topic".into(),
            default_window: 16,
            vhost: "/".into(),
        }
    }
}
