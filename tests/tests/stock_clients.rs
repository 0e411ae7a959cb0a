//! The scenario scripts under `tests/clients/` — written for and checked
//! against RabbitMQ — run with stock clients (Python pika, Node amqplib)
//! against the real `switchyard` binary. One broker per script, so scripts
//! run in parallel and a failure names its scenario.

use switchyard_tests::{Broker, Client, run_client_script};

macro_rules! scenario {
    ($name:ident, $client:expr, $script:literal) => {
        #[test]
        fn $name() {
            let broker = Broker::start();
            run_client_script($client, $script, &broker);
        }
    };
}

scenario!(pika_basic_pubsub, Client::Python, "basic_pubsub.py");
scenario!(pika_exchanges, Client::Python, "exchanges.py");
scenario!(pika_queues, Client::Python, "queues.py");
scenario!(pika_ttl_dlx, Client::Python, "ttl_dlx.py");
scenario!(pika_limits, Client::Python, "limits.py");
scenario!(pika_acks, Client::Python, "acks.py");
scenario!(pika_confirms_tx, Client::Python, "confirms_tx.py");
scenario!(pika_consumers, Client::Python, "consumers.py");
scenario!(pika_direct_reply_to, Client::Python, "direct_reply_to.py");
scenario!(pika_errors, Client::Python, "errors.py");
scenario!(pika_connection, Client::Python, "connection.py");
scenario!(pika_many_connections, Client::Python, "many_connections.py");
scenario!(aio_pika_headers, Client::Python, "aio_headers.py");
scenario!(amqplib_pubsub, Client::Node, "pubsub.js");
scenario!(amqplib_confirms, Client::Node, "confirms.js");
scenario!(amqplib_acks, Client::Node, "acks.js");
scenario!(amqplib_exchanges, Client::Node, "exchanges.js");
scenario!(amqplib_dlx, Client::Node, "dlx.js");
scenario!(amqplib_errors, Client::Node, "errors.js");
scenario!(stomp_py_basic, Client::Python, "stomp_basic.py");
scenario!(stomp_py_acks_tx, Client::Python, "stomp_acks_tx.py");
scenario!(stomp_py_selectors, Client::Python, "stomp_selectors.py");
scenario!(stomp_py_destinations, Client::Python, "stomp_destinations.py");
scenario!(stomp_py_errors, Client::Python, "stomp_errors.py");
scenario!(stomp_py_amqp_interop, Client::Python, "stomp_amqp_interop.py");
scenario!(stomp_py_mqtt_interop, Client::Python, "stomp_mqtt_interop.py");
scenario!(stompjs_tcp, Client::Node, "stomp_stompjs.js");
scenario!(paho_mqtt, Client::Python, "mqtt_paho.py");
scenario!(mqttjs, Client::Node, "mqtt_mqttjs.js");
scenario!(sqs_boto3_queues, Client::Python, "sqs_queues.py");
scenario!(sqs_boto3_messages, Client::Python, "sqs_messages.py");
scenario!(sqs_boto3_fifo, Client::Python, "sqs_fifo.py");
scenario!(sqs_boto3_fair, Client::Python, "sqs_fair.py");
scenario!(sqs_boto3_mqtt_interop, Client::Python, "sqs_mqtt_interop.py");
scenario!(sqs_boto3_redrive, Client::Python, "sqs_redrive.py");
scenario!(sqs_boto3_amqp_interop, Client::Python, "sqs_amqp_interop.py");
