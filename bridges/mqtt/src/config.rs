//! MQTT listener settings, the `[mqtt]` section of the config file.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// What a full offline session queue does with a new message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SessionOverflow {
    /// Drop the oldest queued message (RabbitMQ's default `x-overflow`).
    #[default]
    DropHead,
    /// Refuse the new message (its publisher's PUBACK says so under MQTT 5).
    RejectPublish,
}

impl SessionOverflow {
    /// The `x-overflow` queue argument value.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionOverflow::DropHead => "drop-head",
            SessionOverflow::RejectPublish => "reject-publish",
        }
    }
}

/// Settings for the MQTT listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Most concurrent connections; further accepts wait.
    pub max_connections: usize,
    /// Seconds a client has to send CONNECT before it is dropped.
    pub connect_timeout: u64,
    /// Largest packet accepted before CONNECT has been authenticated, in bytes
    /// (RabbitMQ's `mqtt.max_packet_size_unauthenticated`).
    pub max_packet_size_unauthenticated: u32,
    /// Largest packet accepted from an authenticated client, in bytes; also announced as
    /// MQTT 5 Maximum Packet Size (RabbitMQ's `mqtt.max_packet_size_authenticated`).
    pub max_packet_size: u32,
    /// Virtual host used when the user name has no `vhost:` prefix.
    pub vhost: String,
    /// Exchange topics are published to and subscriptions bound on.
    pub exchange: String,
    /// Let clients without a user name in as `default_user` (RabbitMQ's `mqtt.allow_anonymous`).
    pub allow_anonymous: bool,
    /// User for anonymous clients; RabbitMQ's `loopback_users` still applies (guest: local only).
    pub default_user: String,
    /// Password of `default_user`.
    pub default_pass: String,
    /// Longest a session outlives its connection, in seconds: the cap on MQTT 5 Session Expiry
    /// Interval and the expiry of every MQTT 3.x persistent session (RabbitMQ's
    /// `mqtt.max_session_expiry_interval_seconds`).
    pub max_session_expiry: u32,
    /// Most messages an offline session queues (`x-max-length` of its queue).
    pub session_max_messages: u64,
    /// Most body bytes an offline session queues (`x-max-length-bytes`); 0 = no limit.
    pub session_max_bytes: u64,
    /// What a full session queue does: `drop-head` (oldest dropped) or `reject-publish`.
    pub session_overflow: SessionOverflow,
    /// Most unacknowledged QoS 1/2 messages sent to one client (the consumer prefetch;
    /// RabbitMQ's `mqtt.prefetch`); a smaller MQTT 5 Receive Maximum wins.
    pub prefetch: u16,
    /// Most unacknowledged QoS 1/2 PUBLISHes a client may have in flight towards us
    /// (announced as MQTT 5 Receive Maximum).
    pub receive_maximum: u16,
    /// Highest topic alias a client may use (announced as MQTT 5 Topic Alias Maximum); 0 = none.
    pub topic_alias_maximum: u16,
    /// Longest keep-alive granted, in seconds; a longer request gets this value back as
    /// MQTT 5 Server Keep Alive. 0 = grant what the client asks.
    pub max_keep_alive: u16,
    /// Most retained messages per vhost; further retained publishes are routed but not kept.
    pub max_retained: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            max_connections: 65_536,
            connect_timeout: 10,
            max_packet_size_unauthenticated: 65_536,
            max_packet_size: 16 * 1024 * 1024,
            vhost: "/".into(),
            exchange: "amq.topic".into(),
            allow_anonymous: true,
            default_user: "guest".into(),
            default_pass: "guest".into(),
            max_session_expiry: 86_400,
            session_max_messages: 10_000,
            session_max_bytes: 0,
            session_overflow: SessionOverflow::DropHead,
            prefetch: 64,
            receive_maximum: 1024,
            topic_alias_maximum: 64,
            max_keep_alive: 0,
            max_retained: 100_000,
        }
    }
}
