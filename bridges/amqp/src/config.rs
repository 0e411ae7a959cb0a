//! AMQP listener settings, the `[amqp]` section of the config file.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Settings for the AMQP 0-9-1 listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest frame we accept and advertise in `connection.tune` (RabbitMQ: 131072).
    pub frame_max: u32,
    /// Most channels per connection (RabbitMQ: 2047).
    pub channel_max: u16,
    /// Heartbeat interval we propose in seconds (RabbitMQ: 60); 0 disables.
    pub heartbeat: u16,
    /// Most concurrent connections; further accepts wait.
    pub max_connections: usize,
    /// Seconds a client has to finish the handshake before it is dropped.
    pub handshake_timeout: u64,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 5672)),
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            max_connections: 16_384,
            handshake_timeout: 10,
        }
    }
}
