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
