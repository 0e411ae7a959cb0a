//! Publish a message over AMQP 0-9-1 and consume it back, against a running
//! broker: `cargo run -p switchyard-examples --bin amqp_hello [amqp://guest:guest@127.0.0.1:5672/%2F]`.

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2F".into());
    let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    ch.queue_declare("hello".into(), durable, FieldTable::default()).await?;
    let props = BasicProperties::default().with_delivery_mode(2).with_content_type("text/plain".into());
    let confirm = ch
        .basic_publish("".into(), "hello".into(), BasicPublishOptions::default(), b"hello, switchyard", props)
        .await?
        .await?;
    println!("published; broker confirmed (after fsync): {}", confirm.is_ack());
    let mut consumer = ch
        .basic_consume("hello".into(), "example".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    if let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        println!("received: {}", String::from_utf8_lossy(&delivery.data));
        delivery.ack(BasicAckOptions::default()).await?;
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}
