//! Amazon SNS through stock clients: the boto3 scenario scripts `tests/clients/python/sns_*.py`
//! (and the aws CLI where installed) against the real binary, one broker per script; the
//! cross-protocol script also speaks AMQP (pika) and MQTT (paho); one test restarts the broker
//! between a setup and a check run.

use switchyard_tests::{Broker, Client, run_client_script, run_client_script_with};

macro_rules! scenario {
    ($name:ident, $script:literal) => {
        #[test]
        fn $name() {
            let broker = Broker::start();
            run_client_script(Client::Python, $script, &broker);
        }
    };
}

scenario!(sns_boto3_topics, "sns_topics.py");
scenario!(sns_boto3_subscriptions, "sns_subscriptions.py");
scenario!(sns_boto3_publish, "sns_publish.py");
scenario!(sns_boto3_filters, "sns_filters.py");
scenario!(sns_boto3_fifo, "sns_fifo.py");
scenario!(sns_boto3_http_endpoints, "sns_http.py");
scenario!(sns_amqp_and_mqtt_interop, "sns_interop.py");

#[test]
fn sns_topics_and_subscriptions_survive_a_restart() {
    let mut broker = Broker::start();
    run_client_script_with(Client::Python, "sns_persist.py", &broker, &["setup"]);
    broker.restart();
    run_client_script_with(Client::Python, "sns_persist.py", &broker, &["check"]);
}
