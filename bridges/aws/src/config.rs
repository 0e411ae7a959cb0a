//! The `[aws]` configuration section.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Settings of the AWS-compatible HTTP listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AwsConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The vhost whose queues SQS serves.
    pub vhost: String,
    /// The account id in queue URLs and ARNs.
    pub account_id: String,
    /// The region in ARNs.
    pub region: String,
    /// Largest request body accepted, in bytes (a 10-entry batch of 1 MiB messages plus
    /// JSON overhead fits in the default).
    pub max_body_bytes: usize,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 4566)),
            vhost: "/".into(),
            account_id: "000000000000".into(),
            region: "us-east-1".into(),
            max_body_bytes: 2 * 1024 * 1024 + 64 * 1024,
        }
    }
}
