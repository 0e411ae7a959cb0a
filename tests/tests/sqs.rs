//! SQS scenarios that need their own broker configuration or several brokers: the boto3
//! administration script (tags, permissions, DLQ sources, move tasks, every settable
//! attribute), the relaxed limits, strict SigV4 mode with boto3's own signatures, and the
//! query protocol as an older botocore (aws CLI v1 era) speaks it.

use switchyard_tests::{Broker, Client, run_client_script, run_client_script_with};

#[test]
fn sqs_boto3_admin() {
    let broker = Broker::start();
    run_client_script(Client::Python, "sqs_admin.py", &broker);
}

#[test]
fn sqs_boto3_relaxed_limits() {
    let broker = Broker::start_with("[aws]\nlimits = \"relaxed\"\n", &[]);
    run_client_script(Client::Python, "sqs_relaxed.py", &broker);
}

#[test]
fn sqs_boto3_sigv4_strict() {
    let broker = Broker::start_with("[aws]\nauth = \"sigv4\"\n[aws.credentials]\nAKIDGOOD = \"good-secret\"\n", &[]);
    run_client_script_with(Client::Python, "sqs_sigv4.py", &broker, &["AKIDGOOD", "good-secret"]);
}

#[test]
fn sqs_query_protocol_signed_requests() {
    let broker = Broker::start();
    run_client_script(Client::Python, "sqs_query.py", &broker);
}

#[test]
fn sqs_aws_cli() {
    let broker = Broker::start();
    run_client_script(Client::Python, "sqs_awscli.py", &broker);
}
