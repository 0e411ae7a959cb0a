//! The `[aws]` configuration section.

use std::collections::BTreeMap;
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
    /// Largest request body accepted, in bytes. The default takes Kinesis' largest
    /// `PutRecords` (5 MiB of data, base64 in JSON ≈ 6.7 MiB) and SQS's largest batch; each
    /// action still checks its own AWS limits.
    pub max_body_bytes: usize,
    /// Which limits apply: `strict` (AWS's numbers, the default) or `relaxed`
    /// (see `sqs::limits`).
    pub limits: crate::sqs::limits::LimitsMode,
    /// Request authentication: `any` (the default: any credentials or none are accepted)
    /// or `sigv4` (signatures are verified against `credentials`).
    pub auth: AuthMode,
    /// Access key id → secret access key, for `auth = "sigv4"`.
    pub credentials: BTreeMap<String, String>,
    /// Test hooks for users' own test suites (off by default): the SQS action
    /// `SwitchyardReset` deletes every SQS-visible queue and all SQS front-end state, and
    /// `SwitchyardAdvanceClock` moves the broker's clock forward.
    pub test_hooks: bool,
    /// Kinesis settings (`[aws.kinesis]`).
    pub kinesis: crate::kinesis::KinesisConfig,
}

/// How requests are authenticated (`[aws] auth`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Any credentials, or none, are accepted (as LocalStack does).
    #[default]
    Any,
    /// AWS Signature Version 4 is verified, in the `Authorization` header or the query string.
    Sigv4,
}

impl AwsConfig {
    /// Largest request body accepted: the configured limit, raised in relaxed mode so the
    /// larger messages it allows fit (twice the message size: escaping or base64 included).
    pub fn body_limit(&self) -> usize {
        match self.limits {
            crate::sqs::limits::LimitsMode::Strict => self.max_body_bytes,
            crate::sqs::limits::LimitsMode::Relaxed => {
                let max_message = crate::sqs::limits::Limits::RELAXED.max_message_size as usize;
                self.max_body_bytes.max(2 * max_message + 64 * 1024)
            }
        }
    }
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 4566)),
            vhost: "/".into(),
            account_id: "000000000000".into(),
            region: "us-east-1".into(),
            max_body_bytes: 8 * 1024 * 1024,
            limits: crate::sqs::limits::LimitsMode::Strict,
            auth: AuthMode::Any,
            credentials: BTreeMap::new(),
            test_hooks: false,
            kinesis: crate::kinesis::KinesisConfig::default(),
        }
    }
}
