//! STOMP listener settings, the `[stomp]` section of the config file.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::codec::Limits;

/// Settings for the STOMP listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StompConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Most concurrent connections; further accepts wait.
    pub max_connections: usize,
    /// Seconds a client has to send CONNECT before it is dropped.
    pub handshake_timeout: u64,
    /// Largest frame body accepted, in bytes (the core's `max_message_size` also applies to SEND).
    pub max_body_size: usize,
    /// Most header lines in one frame (ActiveMQ: 1000).
    pub max_headers: usize,
    /// Longest header line in bytes (ActiveMQ: 10240).
    pub max_header_length: usize,
    /// Shortest heart-beat interval we send or ask for, in ms; a client asking for more
    /// frequent beats gets this. 0 disables heart-beating.
    pub heart_beat_min_ms: u64,
    /// Login used when CONNECT has no `login` header (RabbitMQ's `default_user`); empty refuses such clients.
    pub default_login: String,
    /// Passcode used with `default_login` when CONNECT has no `passcode` header.
    pub default_passcode: String,
    /// Prefetch for `client`/`client-individual` subscriptions without a `prefetch-count`
    /// header; 0 means unlimited (RabbitMQ's default).
    pub default_prefetch: u32,
}

impl Default for StompConfig {
    fn default() -> Self {
        let limits = Limits::default();
        StompConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 61613)),
            max_connections: 16_384,
            handshake_timeout: 10,
            max_body_size: limits.max_body,
            max_headers: limits.max_headers,
            max_header_length: limits.max_header_length,
            heart_beat_min_ms: 1000,
            default_login: "guest".into(),
            default_passcode: "guest".into(),
            default_prefetch: 0,
        }
    }
}

impl StompConfig {
    /// The decoder limits these settings describe.
    pub fn limits(&self) -> Limits {
        Limits {
            max_headers: self.max_headers,
            max_header_length: self.max_header_length,
            max_body: self.max_body_size,
        }
    }
}
