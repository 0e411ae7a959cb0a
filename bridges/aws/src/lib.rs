//! AWS-compatible HTTP front-end for the Switchyard broker.
//!
//! One HTTP listener (port 4566 by default, as LocalStack) serves every AWS API. A request is
//! routed by its wire protocol:
//!
//! 1. AWS JSON protocols name the action in `X-Amz-Target: <Service>.<Action>`
//!    (`AmazonSQS.SendMessage`); the prefix picks the service module ([`sqs`] today; SNS and
//!    Kinesis slot in as further prefixes).
//! 2. The query protocol sends a form with an `Action` field and gets XML back; [`query`]
//!    converts the form to the JSON input shape and the JSON output to XML around the same
//!    handlers (SQS only so far).
//!
//! Modules: [`config`] (the `[aws]` section), [`server`] (listener and router), [`error`]
//! (errors and their one mapping to AWS shapes), [`sqs`] (SQS on the core's queues),
//! [`query`] (the query/XML protocol), [`md5`] (the checksums SDKs verify), [`sigv4`]
//! (request signature verification).
//!
//! By default any credentials are accepted (`[aws] auth = "any"`); with `auth = "sigv4"`
//! every request's SigV4 signature is verified against `[aws] credentials` first.

pub mod config;
pub mod error;
pub mod kinesis;
pub mod md5;
pub mod query;
pub mod server;
pub mod sigv4;
pub mod sns;
pub mod sqs;

pub use config::AwsConfig;
pub use server::serve;
