//! MQTT reason codes, why connections end, and the one mapping from core errors.
//!
//! MQTT 5 reports problems with a reason code on the ack or on DISCONNECT; MQTT 3.x
//! has only the CONNACK return codes and SUBACK's 0x80, so everything else closes
//! the connection (the spec's answer to a protocol violation).

use switchyard::{CoreError, ErrorKind};

use crate::codec::DecodeError;

/// MQTT 5 reason codes used by this server (MQTT 5 §2.4).
pub mod reason {
    /// Success / normal disconnection / granted QoS 0.
    pub const SUCCESS: u8 = 0x00;
    /// Disconnect with will message.
    pub const DISCONNECT_WITH_WILL: u8 = 0x04;
    /// PUBACK/PUBREC: no subscriber matched.
    pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    /// UNSUBACK: no such subscription.
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    /// Unspecified error.
    pub const UNSPECIFIED: u8 = 0x80;
    /// Malformed packet.
    pub const MALFORMED: u8 = 0x81;
    /// Protocol error.
    pub const PROTOCOL_ERROR: u8 = 0x82;
    /// Implementation specific error.
    pub const IMPLEMENTATION_SPECIFIC: u8 = 0x83;
    /// Unsupported protocol version.
    pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    /// Client identifier not valid.
    pub const CLIENT_ID_NOT_VALID: u8 = 0x85;
    /// Bad user name or password.
    pub const BAD_USERNAME_OR_PASSWORD: u8 = 0x86;
    /// Not authorized.
    pub const NOT_AUTHORIZED: u8 = 0x87;
    /// Server unavailable.
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    /// Server busy.
    pub const SERVER_BUSY: u8 = 0x89;
    /// Bad authentication method.
    pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;
    /// Keep alive timeout.
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    /// Session taken over.
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    /// Topic filter invalid.
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    /// Topic name invalid.
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    /// Packet identifier not found.
    pub const PACKET_ID_NOT_FOUND: u8 = 0x92;
    /// Receive maximum exceeded.
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    /// Topic alias invalid.
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    /// Packet too large.
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    /// Quota exceeded.
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    /// Payload format invalid.
    pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
    /// Server shutting down.
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    /// Shared subscriptions not supported.
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0x9E;
}

/// MQTT 3.x CONNACK return codes.
pub mod v3_connack {
    /// Connection accepted.
    pub const ACCEPTED: u8 = 0;
    /// Unacceptable protocol version.
    pub const UNACCEPTABLE_PROTOCOL: u8 = 1;
    /// Identifier rejected.
    pub const IDENTIFIER_REJECTED: u8 = 2;
    /// Server unavailable.
    pub const SERVER_UNAVAILABLE: u8 = 3;
    /// Bad user name or password.
    pub const BAD_CREDENTIALS: u8 = 4;
    /// Not authorized.
    pub const NOT_AUTHORIZED: u8 = 5;
}

/// The MQTT 3.x CONNACK return code closest to an MQTT 5 CONNACK reason.
pub fn v3_connack_code(v5_reason: u8) -> u8 {
    match v5_reason {
        reason::SUCCESS => v3_connack::ACCEPTED,
        reason::UNSUPPORTED_PROTOCOL_VERSION => v3_connack::UNACCEPTABLE_PROTOCOL,
        reason::CLIENT_ID_NOT_VALID => v3_connack::IDENTIFIER_REJECTED,
        reason::BAD_USERNAME_OR_PASSWORD => v3_connack::BAD_CREDENTIALS,
        reason::NOT_AUTHORIZED => v3_connack::NOT_AUTHORIZED,
        _ => v3_connack::SERVER_UNAVAILABLE,
    }
}

/// Why a connection ended, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent DISCONNECT.
    ClientDisconnected,
    /// The peer closed the socket without DISCONNECT.
    PeerGone,
    /// A protocol violation or malformed packet.
    ProtocolError,
    /// No packet within 1.5 × keep alive.
    KeepAliveTimeout,
    /// No CONNECT in time.
    ConnectTimeout,
    /// CONNECT was refused.
    ConnectRefused,
    /// Another connection took the session over.
    TakenOver,
    /// The broker is shutting down.
    Shutdown,
    /// A core error that MQTT can only report by disconnecting.
    ServerError,
}

/// A protocol problem that ends the connection: a DISCONNECT reason (MQTT 5) and text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text} (reason 0x{reason:02x})")]
pub struct Violation {
    /// MQTT 5 DISCONNECT reason code.
    pub reason: u8,
    /// Human-readable detail (sent as Reason String under MQTT 5).
    pub text: String,
}

impl Violation {
    /// A violation with `reason` and `text`.
    pub fn new(reason: u8, text: impl Into<String>) -> Violation {
        Violation { reason, text: text.into() }
    }
    /// A protocol error (0x82).
    pub fn protocol(text: impl Into<String>) -> Violation {
        Violation::new(reason::PROTOCOL_ERROR, text)
    }
}

impl From<DecodeError> for Violation {
    fn from(e: DecodeError) -> Violation {
        Violation::new(e.reason_code(), e.to_string())
    }
}

/// The MQTT 5 reason code for a core error (on an ack, or on DISCONNECT).
pub fn core_reason(e: &CoreError) -> u8 {
    match e.kind {
        ErrorKind::AccessRefused | ErrorKind::NotAllowed => reason::NOT_AUTHORIZED,
        ErrorKind::ResourceLimit => reason::QUOTA_EXCEEDED,
        ErrorKind::NotFound | ErrorKind::ResourceLocked | ErrorKind::PreconditionFailed | ErrorKind::Invalid => {
            reason::IMPLEMENTATION_SPECIFIC
        }
        ErrorKind::CommandInvalid | ErrorKind::NotImplemented => reason::IMPLEMENTATION_SPECIFIC,
        ErrorKind::Internal => reason::UNSPECIFIED,
    }
}

/// The text to show a client for a core error: internal details stay in the log.
pub fn core_text(e: &CoreError) -> String {
    if e.kind == ErrorKind::Internal {
        tracing::error!(error = %e.text, "internal error");
        "internal error".to_string()
    } else {
        e.text.clone()
    }
}

impl From<CoreError> for Violation {
    fn from(e: CoreError) -> Violation {
        Violation::new(core_reason(&e), core_text(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_errors_map_to_reason_codes() {
        assert_eq!(core_reason(&CoreError::access_refused("x")), reason::NOT_AUTHORIZED);
        let v: Violation = CoreError::new(ErrorKind::Internal, "secret").into();
        assert_eq!(v.reason, reason::UNSPECIFIED);
        assert!(!v.text.contains("secret"));
        assert_eq!(v3_connack_code(reason::BAD_USERNAME_OR_PASSWORD), 4);
        assert_eq!(v3_connack_code(reason::NOT_AUTHORIZED), 5);
    }
}
