//! The WebSocket front-ends of the real binary, driven by tokio-tungstenite: STOMP and
//! MQTT over WebSocket (frames split across and packed into WebSocket messages), the JSON
//! live API (topics, queues with a window and acks, publish, auth), bad input (each gets
//! its close code or error event while a bystander keeps working), the demo page, and a
//! stalled browser under 10,000 msg/s.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};
use switchyard_tests::{Broker, rss_kib};
use tokio::net::TcpStream as TokioTcp;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TokioTcp>>;

const WAIT: Duration = Duration::from_secs(10);

/// Opens a WebSocket to `url` offering `protocols`; returns it and the chosen subprotocol.
async fn open(url: &str, protocols: &[&str], extra: &[(&'static str, &str)]) -> Result<(Ws, Option<String>), WsError> {
    let mut req = url.into_client_request().expect("request");
    if !protocols.is_empty() {
        req.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_str(&protocols.join(", ")).expect("hv"));
    }
    for (k, v) in extra {
        req.headers_mut().insert(*k, HeaderValue::from_str(v).expect("hv"));
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req).await?;
    let chosen = resp.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).map(str::to_string);
    Ok((ws, chosen))
}

/// The next data message's bytes (pings answered by tungstenite are skipped).
async fn next_data(ws: &mut Ws) -> Vec<u8> {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next()).await.expect("timed out waiting for a message");
        match msg.expect("stream ended").expect("websocket error") {
            Message::Text(t) => return t.as_bytes().to_vec(),
            Message::Binary(b) => return b.to_vec(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// Waits for the close frame and returns its code and reason.
async fn expect_close(ws: &mut Ws) -> (u16, String) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(CloseFrame { code, reason }))))) => {
                return (code.into(), reason.to_string());
            }
            Ok(Some(Ok(Message::Close(None)))) => return (1005, String::new()),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("error instead of a close frame: {e}"),
            Ok(None) => panic!("stream ended without a close frame"),
            Err(_) => break,
        }
    }
    panic!("no close frame within {WAIT:?}");
}

// ------------------------------------------------------------------------------------ STOMP

/// Reads STOMP frames (NUL-terminated, heart-beat newlines skipped) across messages.
struct StompReader {
    buf: Vec<u8>,
}

impl StompReader {
    async fn frame(&mut self, ws: &mut Ws) -> String {
        loop {
            while self.buf.first() == Some(&b'\n') {
                self.buf.remove(0);
            }
            if let Some(end) = self.buf.iter().position(|b| *b == 0) {
                let frame: Vec<u8> = self.buf.drain(..=end).collect();
                return String::from_utf8_lossy(&frame[..end]).into_owned();
            }
            let more = next_data(ws).await;
            self.buf.extend_from_slice(&more);
        }
    }
}

async fn stomp_session(url: &str, protocols: &[&str]) {
    let (mut ws, chosen) = open(url, protocols, &[]).await.expect("stomp upgrade");
    if let Some(first) = protocols.first() {
        assert_eq!(chosen.as_deref(), Some(*first), "the first offered STOMP subprotocol is chosen");
    }
    let mut r = StompReader { buf: Vec::new() };
    // CONNECT split over two WebSocket messages.
    ws.send(Message::text("CONNECT\naccept-version:1.2\nlogin:gu")).await.expect("send");
    ws.send(Message::text("est\npasscode:guest\nheart-beat:0,0\n\n\0")).await.expect("send");
    let connected = r.frame(&mut ws).await;
    assert!(connected.starts_with("CONNECTED\n") && connected.contains("version:1.2"), "{connected}");
    // SUBSCRIBE and a SEND packed into one message; the SEND asks for a receipt.
    ws.send(Message::text(
        "SUBSCRIBE\nid:0\ndestination:/topic/ws.stomp\nreceipt:r1\n\n\0\
         SEND\ndestination:/topic/ws.stomp\ncontent-type:text/plain\nx-k:v\n\nhello over ws\0",
    ))
    .await
    .expect("send");
    let mut got = vec![r.frame(&mut ws).await, r.frame(&mut ws).await];
    got.sort();
    assert!(got[1].starts_with("RECEIPT\n") && got[1].contains("receipt-id:r1"), "{got:?}");
    assert!(
        got[0].starts_with("MESSAGE\n") && got[0].ends_with("\n\nhello over ws") && got[0].contains("x-k:v"),
        "{got:?}"
    );
    // A binary body (content-length) in a binary message comes back in a binary message.
    let mut send = b"SEND\ndestination:/topic/ws.stomp\ncontent-length:4\n\n".to_vec();
    send.extend_from_slice(&[0, 0xff, 1, 0]);
    send.push(0);
    ws.send(Message::binary(send)).await.expect("send");
    let raw = loop {
        let m = tokio::time::timeout(WAIT, ws.next()).await.expect("timeout").expect("end").expect("err");
        if let Message::Binary(b) = m {
            break b;
        }
    };
    assert!(raw.starts_with(b"MESSAGE\n") && raw.ends_with(&[0, 0xff, 1, 0, 0]), "{raw:?}");
    ws.send(Message::text("DISCONNECT\nreceipt:bye\n\n\0")).await.expect("send");
    let receipt = r.frame(&mut ws).await;
    assert!(receipt.contains("receipt-id:bye"), "{receipt}");
    let (code, _) = expect_close(&mut ws).await;
    assert_eq!(code, 1000);
}

#[tokio::test]
async fn stomp_over_websocket_on_its_port_and_the_http_port() {
    let broker = Broker::start();
    stomp_session(&format!("ws://{}/ws", broker.ws_stomp), &["v12.stomp", "v11.stomp", "v10.stomp"]).await;
    stomp_session(&format!("ws://{}/ws", broker.ws_stomp), &[]).await;
    stomp_session(&format!("ws://{}/ws/stomp", broker.http), &["v12.stomp"]).await;
    stomp_session(&format!("ws://{}/ws", broker.http), &["v11.stomp"]).await;
}

// ------------------------------------------------------------------------------------- MQTT

fn mqtt_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn mqtt_packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn mqtt_connect(client_id: &str) -> Vec<u8> {
    let mut b = Vec::new();
    mqtt_str(&mut b, "MQTT");
    b.extend_from_slice(&[4, 0x02, 0, 60]);
    mqtt_str(&mut b, client_id);
    mqtt_packet(0x10, &b)
}

fn mqtt_subscribe(id: u16, filter: &str) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    mqtt_str(&mut b, filter);
    b.push(1);
    mqtt_packet(0x82, &b)
}

fn mqtt_publish_qos0(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    mqtt_str(&mut b, topic);
    b.extend_from_slice(payload);
    mqtt_packet(0x30, &b)
}

/// Reads MQTT packets (first byte, body) across WebSocket messages.
struct MqttReader {
    buf: Vec<u8>,
}

impl MqttReader {
    async fn packet(&mut self, ws: &mut Ws) -> (u8, Vec<u8>) {
        loop {
            if self.buf.len() >= 2 {
                let (mut len, mut mult, mut i) = (0usize, 1usize, 1);
                let mut complete = false;
                while i < self.buf.len() && i < 5 {
                    len += (self.buf[i] & 0x7f) as usize * mult;
                    mult *= 128;
                    i += 1;
                    if self.buf[i - 1] & 0x80 == 0 {
                        complete = true;
                        break;
                    }
                }
                if complete && self.buf.len() >= i + len {
                    let first = self.buf[0];
                    let body = self.buf[i..i + len].to_vec();
                    self.buf.drain(..i + len);
                    return (first, body);
                }
            }
            let m = tokio::time::timeout(WAIT, ws.next()).await.expect("timeout").expect("end").expect("err");
            match m {
                Message::Binary(b) => self.buf.extend_from_slice(&b),
                Message::Text(_) => panic!("MQTT over WebSocket must use binary messages"),
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => {}
            }
        }
    }
}

async fn mqtt_session(url: &str, protocol: &str, client_id: &str) {
    let (mut ws, chosen) = open(url, &[protocol], &[]).await.expect("mqtt upgrade");
    assert_eq!(chosen.as_deref(), Some(protocol));
    let mut r = MqttReader { buf: Vec::new() };
    let connect = mqtt_connect(client_id);
    let (a, b) = connect.split_at(5);
    ws.send(Message::binary(a.to_vec())).await.expect("send");
    ws.send(Message::binary(b.to_vec())).await.expect("send");
    let (first, body) = r.packet(&mut ws).await;
    assert_eq!((first, body), (0x20, vec![0, 0]), "CONNACK accepted");
    let mut both = mqtt_subscribe(7, "ws/mqtt/+");
    ws.send(Message::binary(both.clone())).await.expect("send");
    let (first, body) = r.packet(&mut ws).await;
    assert_eq!((first, body), (0x90, vec![0, 7, 1]), "SUBACK granted QoS 1");
    both = mqtt_publish_qos0("ws/mqtt/a", b"first");
    both.extend(mqtt_publish_qos0("ws/mqtt/b", &[0, 1, 2, 0xff]));
    ws.send(Message::binary(both)).await.expect("send");
    for (topic, payload) in [("ws/mqtt/a", b"first".to_vec()), ("ws/mqtt/b", vec![0, 1, 2, 0xff])] {
        let (first, body) = r.packet(&mut ws).await;
        assert_eq!(first & 0xf0, 0x30, "PUBLISH");
        let tlen = u16::from_be_bytes([body[0], body[1]]) as usize;
        assert_eq!(&body[2..2 + tlen], topic.as_bytes());
        assert_eq!(&body[2 + tlen..], &payload[..]);
    }
    ws.send(Message::binary(vec![0xe0, 0])).await.expect("DISCONNECT");
    let (code, _) = expect_close(&mut ws).await;
    assert_eq!(code, 1000);
}

#[tokio::test]
async fn mqtt_over_websocket_on_its_port_and_the_http_port() {
    let broker = Broker::start();
    mqtt_session(&format!("ws://{}/ws", broker.ws_mqtt), "mqtt", "ws-a").await;
    mqtt_session(&format!("ws://{}/ws", broker.ws_mqtt), "mqttv3.1", "ws-b").await;
    mqtt_session(&format!("ws://{}/ws/mqtt", broker.http), "mqtt", "ws-c").await;
    mqtt_session(&format!("ws://{}/ws", broker.http), "mqtt", "ws-d").await;
}

// -------------------------------------------------------------------------------- live API

fn live_url(broker: &Broker) -> String {
    format!("ws://{}/ws/live", broker.http)
}

async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

async fn next_json(ws: &mut Ws) -> Value {
    let raw = next_data(ws).await;
    serde_json::from_slice(&raw).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&raw)))
}

/// The next event of `kind`, skipping others.
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let v = next_json(ws).await;
        if v["type"] == kind {
            return v;
        }
        assert_ne!(v["type"], "error", "unexpected error while waiting for {kind}: {v}");
    }
}

async fn live_login(broker: &Broker) -> Ws {
    let (mut ws, _) = open(&live_url(broker), &[], &[]).await.expect("live upgrade");
    send_json(&mut ws, json!({"type": "auth", "user": "guest", "password": "guest"})).await;
    let v = next_json(&mut ws).await;
    assert_eq!(v["type"], "authenticated", "{v}");
    ws
}

async fn amqp(broker: &Broker) -> (Connection, Channel) {
    let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default()).await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    (conn, ch)
}

async fn amqp_publish(ch: &Channel, exchange: &str, key: &str, body: &[u8], props: BasicProperties) {
    ch.basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), body, props).await.expect("publish");
}

#[tokio::test]
async fn live_api_topics_queues_publish_and_acks() {
    let broker = Broker::start();
    let (_conn, ch) = amqp(&broker).await;
    let mut ws = live_login(&broker).await;

    // A topic pattern on amq.topic: an AMQP message arrives with key, headers, base64 body.
    send_json(&mut ws, json!({"type": "subscribe", "subscription": "t", "topic": "live.*", "req": 1})).await;
    let v = next_of(&mut ws, "subscribed").await;
    assert_eq!(
        (v["subscription"].as_str(), v["req"].as_i64(), v["kind"].as_str()),
        (Some("t"), Some(1), Some("topic"))
    );
    let mut headers = FieldTable::default();
    headers.insert(ShortString::from("who"), AMQPValue::LongString(LongString::from(b"amqp".to_vec())));
    headers.insert(ShortString::from("n"), AMQPValue::LongLongInt(42));
    let props = BasicProperties::default().with_headers(headers).with_content_type("application/x-bin".into());
    amqp_publish(&ch, "amq.topic", "live.a", &[0, 159, 146, 150], props).await;
    amqp_publish(&ch, "amq.topic", "other.a", b"not for us", BasicProperties::default()).await;
    amqp_publish(&ch, "amq.topic", "live.b", "text ✓".as_bytes(), BasicProperties::default()).await;
    let m = next_of(&mut ws, "message").await;
    assert_eq!(m["routing_key"], "live.a");
    assert_eq!(m["exchange"], "amq.topic");
    assert_eq!(m["subscription"], "t");
    assert_eq!(m["headers"], json!({"who": "amqp", "n": 42}));
    assert_eq!(m["properties"]["content_type"], "application/x-bin");
    assert_eq!((m["body"].as_str(), m["encoding"].as_str()), (Some("AJ+Slg=="), Some("base64")));
    let m = next_of(&mut ws, "message").await;
    assert_eq!((m["routing_key"].as_str(), m["body"].as_str()), (Some("live.b"), Some("text ✓")));
    assert!(m.get("encoding").is_none());

    // Publishing from the live API reaches the topic subscription and an AMQP queue.
    ch.queue_declare("live.q".into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    ch.queue_bind(
        "live.q".into(),
        "amq.topic".into(),
        "live.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    send_json(
        &mut ws,
        json!({"type": "publish", "routing_key": "live.c", "body": "from ws", "headers": {"h": "v"},
               "properties": {"persistent": true, "correlation_id": "c1"}, "req": "p1"}),
    )
    .await;
    let p = next_of(&mut ws, "published").await;
    assert_eq!((p["req"].as_str(), p["routed"].as_bool()), (Some("p1"), Some(true)));
    let m = next_of(&mut ws, "message").await;
    assert_eq!((m["body"].as_str(), m["headers"]["h"].as_str()), (Some("from ws"), Some("v")));
    let got = ch.basic_get("live.q".into(), BasicGetOptions { no_ack: true }).await.expect("get").expect("a message");
    assert_eq!(got.delivery.data, b"from ws");
    assert_eq!(got.delivery.properties.correlation_id().as_ref().map(|s| s.as_str()), Some("c1"));
    assert_eq!(*got.delivery.properties.delivery_mode(), Some(2));

    // A queue with a window of 2: two deliveries, then nothing until an ack.
    send_json(&mut ws, json!({"type": "unsubscribe", "subscription": "t"})).await;
    next_of(&mut ws, "unsubscribed").await;
    ch.queue_declare("live.work".into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    for i in 0..5 {
        amqp_publish(&ch, "", "live.work", format!("job {i}").as_bytes(), BasicProperties::default()).await;
    }
    send_json(&mut ws, json!({"type": "subscribe", "subscription": "w", "queue": "live.work", "window": 2})).await;
    next_of(&mut ws, "subscribed").await;
    let a = next_of(&mut ws, "message").await;
    let b = next_of(&mut ws, "message").await;
    assert_eq!((a["body"].as_str(), b["body"].as_str()), (Some("job 0"), Some("job 1")));
    let quiet = tokio::time::timeout(Duration::from_millis(500), next_json(&mut ws)).await;
    assert!(quiet.is_err(), "a third delivery beyond the window: {quiet:?}");
    send_json(&mut ws, json!({"type": "ack", "tag": a["tag"]})).await;
    let c = next_of(&mut ws, "message").await;
    assert_eq!(c["body"], "job 2");
    // nack with requeue puts job 1 back; it comes again, redelivered.
    send_json(&mut ws, json!({"type": "nack", "tag": b["tag"]})).await;
    let again = next_of(&mut ws, "message").await;
    assert_eq!((again["body"].as_str(), again["redelivered"].as_bool()), (Some("job 1"), Some(true)));
    send_json(&mut ws, json!({"type": "ack", "tag": again["tag"], "multiple": true})).await;
    send_json(&mut ws, json!({"type": "ack", "tag": 9999})).await;
    let e = next_of(&mut ws, "error").await;
    assert_eq!(e["code"], "unknown_tag");
    // Closing the connection returns the unacked rest to the queue.
    ws.close(None).await.expect("close");
    drop(ws);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let q = ch
        .queue_declare(
            "live.work".into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("passive declare");
    assert_eq!(q.message_count(), 2, "job 3 and job 4 are back (or never left)");
}

#[tokio::test]
async fn live_api_auth_on_upgrade_and_refusals() {
    let broker = Broker::start();
    let url = live_url(&broker);
    // Basic credentials on the upgrade request log in at once.
    let (mut ws, _) = open(&url, &[], &[("authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")]).await.expect("upgrade");
    assert_eq!(next_json(&mut ws).await["type"], "authenticated");
    // Wrong credentials on the upgrade: HTTP 401, no WebSocket.
    match open(&url, &[], &[("authorization", "Basic Z3Vlc3Q6bm9wZQ==")]).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected HTTP 401, got {:?}", other.map(|_| ())),
    }
    // Wrong password in the auth message: an error event, then close 4401.
    let (mut bad, _) = open(&url, &[], &[]).await.expect("upgrade");
    send_json(&mut bad, json!({"type": "subscribe", "topic": "#"})).await;
    assert_eq!(next_json(&mut bad).await["code"], "not_authenticated");
    send_json(&mut bad, json!({"type": "auth", "user": "guest", "password": "wrong"})).await;
    let e = next_json(&mut bad).await;
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("access_refused")), "{e}");
    assert_eq!(expect_close(&mut bad).await.0, 4401);
    // A page from a foreign origin is refused; loopback and same-origin pages are not.
    match open(&url, &[], &[("origin", "https://evil.example")]).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected HTTP 403, got {:?}", other.map(|_| ())),
    }
    open(&url, &[], &[("origin", "http://localhost:3000")]).await.expect("loopback origin");
    // The first connection is unaffected.
    send_json(&mut ws, json!({"type": "ping", "req": 5})).await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "pong", "req": 5}));
}

/// Checks that `ws` (a logged-in live connection) still answers.
async fn still_works(ws: &mut Ws, n: i64) {
    send_json(ws, json!({"type": "ping", "req": n})).await;
    assert_eq!(next_of(ws, "pong").await["req"], n);
}

#[tokio::test]
async fn bad_input_gets_its_close_code_or_error_and_harms_no_one() {
    let broker = Broker::start();
    let mut bystander = live_login(&broker).await;
    let url = live_url(&broker);

    // Malformed JSON and unknown requests: error events, the connection stays.
    let mut ws = live_login(&broker).await;
    ws.send(Message::text("{\"type\": \"subscribe\", ")).await.expect("send");
    let e = next_json(&mut ws).await;
    assert_eq!(e["code"], "bad_request");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("malformed JSON")), "{e}");
    send_json(&mut ws, json!({"type": "teleport"})).await;
    assert_eq!(next_json(&mut ws).await["code"], "bad_request");
    // A subscription to a missing queue: RabbitMQ's not_found text.
    send_json(&mut ws, json!({"type": "subscribe", "queue": "no-such-queue", "req": "s"})).await;
    let e = next_json(&mut ws).await;
    assert_eq!((e["code"].as_str(), e["req"].as_str()), (Some("not_found"), Some("s")));
    assert_eq!(e["message"], "no queue 'no-such-queue' in vhost '/'");
    send_json(&mut ws, json!({"type": "subscribe", "topic": "a", "exchange": "no-such-exchange"})).await;
    assert_eq!(next_json(&mut ws).await["code"], "not_found");
    send_json(&mut ws, json!({"type": "subscribe", "stream": "no-such-stream", "from": "oldest"})).await;
    assert_eq!(next_json(&mut ws).await["code"], "not_found");
    still_works(&mut ws, 1).await;

    // Invalid UTF-8 in a text frame: close 1007.
    let (mut ws, _) = open(&url, &[], &[]).await.expect("upgrade");
    let frame = Frame::message(Bytes::from_static(&[b'{', 0xff, 0xfe, b'}']), OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(frame)).await.expect("send raw frame");
    assert_eq!(expect_close(&mut ws).await.0, 1007);

    // A 16 MiB message: close 1009 (the limit is 8 MiB).
    let (mut ws, _) = open(&url, &[], &[]).await.expect("upgrade");
    let _ = ws.send(Message::binary(vec![b' '; 16 * 1024 * 1024])).await;
    assert_eq!(expect_close(&mut ws).await.0, 1009);
    // The same on the STOMP port.
    let (mut ws, _) = open(&format!("ws://{}/ws", broker.ws_stomp), &["v12.stomp"], &[]).await.expect("upgrade");
    let _ = ws.send(Message::binary(vec![b'x'; 16 * 1024 * 1024])).await;
    assert_eq!(expect_close(&mut ws).await.0, 1009);

    // Unknown subprotocols: HTTP 400 naming the supported ones.
    for (url, protos) in [
        (format!("ws://{}/ws", broker.ws_stomp), vec!["v13.stomp"]),
        (format!("ws://{}/ws", broker.ws_mqtt), vec!["v12.stomp"]),
        (format!("ws://{}/ws", broker.http), vec!["graphql-ws"]),
        (format!("ws://{}/ws", broker.http), vec![]),
        (url.clone(), vec!["mqtt"]),
    ] {
        match open(&url, &protos, &[]).await {
            Err(WsError::Http(resp)) => {
                assert_eq!(resp.status(), 400, "{url} {protos:?}");
                let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned();
                assert!(body.contains("subprotocol"), "{body}");
            }
            other => panic!("{url} {protos:?}: expected HTTP 400, got {:?}", other.map(|_| ())),
        }
    }

    // Garbage on the STOMP and MQTT endpoints: the protocols' own errors, then a close.
    let (mut ws, _) = open(&format!("ws://{}/ws", broker.ws_stomp), &["v12.stomp"], &[]).await.expect("upgrade");
    ws.send(Message::text("HELLO\n\n\0")).await.expect("send");
    let err = StompReader { buf: Vec::new() }.frame(&mut ws).await;
    assert!(err.starts_with("ERROR\n"), "{err}");
    let (mut ws, _) = open(&format!("ws://{}/ws", broker.ws_mqtt), &["mqtt"], &[]).await.expect("upgrade");
    ws.send(Message::binary(vec![0x30, 0x02, 0, 0])).await.expect("send");
    let (code, _) = expect_close(&mut ws).await;
    assert!(code == 1000 || code == 1002, "close {code}");

    still_works(&mut bystander, 2).await;
}

/// One Kinesis JSON 1.1 call on the AWS listener; returns the parsed answer.
fn kinesis(broker: &Broker, action: &str, body: Value) -> Value {
    let addr = broker.listeners["aws"];
    let body = body.to_string();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: {addr}\r\nX-Amz-Target: Kinesis_20131202.{action}\r\n\
         Content-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    assert!(out.starts_with("HTTP/1.1 200"), "{action}: {out}");
    let json = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(json).unwrap_or(Value::Null)
}

fn put(broker: &Broker, stream: &str, key: &str, data: &[u8]) -> String {
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD.encode(data);
    let r = kinesis(broker, "PutRecord", json!({"StreamName": stream, "PartitionKey": key, "Data": data}));
    r["SequenceNumber"].as_str().expect("sequence number").to_string()
}

#[tokio::test]
async fn live_api_tails_a_stream_from_a_position() {
    let broker = Broker::start();
    kinesis(&broker, "CreateStream", json!({"StreamName": "clicks", "ShardCount": 2}));
    let mut seqs = Vec::new();
    for i in 0..6 {
        seqs.push(put(&broker, "clicks", &format!("user-{i}"), format!("click {i}").as_bytes()));
    }
    let mut ws = live_login(&broker).await;
    // From the oldest record: all six (per shard in order), then live ones as they land.
    send_json(&mut ws, json!({"type": "subscribe", "subscription": "all", "stream": "clicks", "from": "oldest"})).await;
    let v = next_of(&mut ws, "subscribed").await;
    assert_eq!((v["kind"].as_str(), v["shards"].as_array().map(Vec::len)), (Some("stream"), Some(2)));
    let mut bodies = Vec::new();
    for _ in 0..6 {
        let m = next_of(&mut ws, "message").await;
        assert_eq!((m["stream"].as_str(), m["subscription"].as_str()), (Some("clicks"), Some("all")));
        assert!(m["partition_key"].as_str().is_some_and(|k| k.starts_with("user-")) && m["sequence"].is_string());
        bodies.push(m["body"].as_str().expect("text body").to_string());
    }
    bodies.sort();
    assert_eq!(bodies, (0..6).map(|i| format!("click {i}")).collect::<Vec<_>>());
    // From latest: only what arrives after subscribing (binary data as base64).
    send_json(&mut ws, json!({"type": "subscribe", "subscription": "new", "stream": "clicks", "from": "latest"})).await;
    next_of(&mut ws, "subscribed").await;
    put(&broker, "clicks", "user-x", &[0, 255]);
    let mut subs = Vec::new();
    for _ in 0..2 {
        let m = next_of(&mut ws, "message").await;
        assert_eq!((m["body"].as_str(), m["encoding"].as_str()), (Some("AP8="), Some("base64")));
        subs.push(m["subscription"].as_str().expect("sub").to_string());
    }
    subs.sort();
    assert_eq!(subs, ["all", "new"], "both tails see the new record");
    send_json(&mut ws, json!({"type": "unsubscribe", "subscription": "all"})).await;
    next_of(&mut ws, "unsubscribed").await;
    send_json(&mut ws, json!({"type": "unsubscribe", "subscription": "new"})).await;
    next_of(&mut ws, "unsubscribed").await;
    // From a sequence number: that record and the later ones of its shard.
    send_json(
        &mut ws,
        json!({"type": "subscribe", "subscription": "seq", "stream": "clicks", "from": {"sequence": seqs[0]}}),
    )
    .await;
    next_of(&mut ws, "subscribed").await;
    let m = next_of(&mut ws, "message").await;
    assert_eq!((m["sequence"].as_str(), m["body"].as_str()), (Some(seqs[0].as_str()), Some("click 0")));
    // From a timestamp in the future: nothing until a new record.
    let future =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64 + 500;
    send_json(
        &mut ws,
        json!({"type": "subscribe", "subscription": "ts", "stream": "clicks", "from": {"timestamp": future}}),
    )
    .await;
    next_of(&mut ws, "subscribed").await;
    send_json(&mut ws, json!({"type": "subscribe", "stream": "clicks", "from": "yesterday"})).await;
    assert_eq!(next_of(&mut ws, "error").await["code"], "bad_request");
}

/// Kinesis PutRecords, then a WebSocket tail from the sequence number of the 3rd record: the
/// 3rd record and every later one, in order, then a record put after subscribing.
#[tokio::test]
async fn live_api_tails_kinesis_put_records_from_a_sequence_number() {
    use base64::Engine as _;
    let broker = Broker::start();
    kinesis(&broker, "CreateStream", json!({"StreamName": "orders", "ShardCount": 1}));
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let records: Vec<Value> =
        (0..10).map(|i| json!({"PartitionKey": format!("k{i}"), "Data": b64(format!("order {i}"))})).collect();
    let r = kinesis(&broker, "PutRecords", json!({"StreamName": "orders", "Records": records}));
    assert_eq!(r["FailedRecordCount"], 0, "{r}");
    let seqs: Vec<String> = r["Records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|x| x["SequenceNumber"].as_str().expect("sequence number").to_string())
        .collect();
    let mut ws = live_login(&broker).await;
    send_json(
        &mut ws,
        json!({"type": "subscribe", "subscription": "o", "stream": "orders", "from": {"sequence": seqs[2]}}),
    )
    .await;
    next_of(&mut ws, "subscribed").await;
    for (i, seq) in seqs.iter().enumerate().skip(2) {
        let m = next_of(&mut ws, "message").await;
        let want = format!("order {i}");
        assert_eq!(
            (m["sequence"].as_str(), m["body"].as_str(), m["partition_key"].as_str()),
            (Some(seq.as_str()), Some(want.as_str()), Some(format!("k{i}").as_str())),
            "record {i} in order"
        );
    }
    let live = put(&broker, "orders", "k10", b"order 10");
    let m = next_of(&mut ws, "message").await;
    assert_eq!((m["sequence"].as_str(), m["body"].as_str()), (Some(live.as_str()), Some("order 10")));
}

#[test]
fn the_demo_page_is_served() {
    let broker = Broker::start();
    let body = http_get(broker.http, "/demo");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("text/html") && body.contains("Switchyard live demo") && body.contains("/ws/live"));
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

// ------------------------------------------------------------------------- slow consumers

/// A browser that subscribes and then reads nothing, while 10,000 msg/s of 1 KiB are
/// published for 5 s: the broker's RSS stays bounded, another consumer of the same topic
/// (AMQP, so the debug-built test client is not the bottleneck) gets every message at the
/// publish rate, a live consumer of another topic is served meanwhile, and once the stalled
/// browser reads again it sees how many of its messages were dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_browser_does_not_hurt_the_broker() {
    let broker = Broker::start();
    let pid = broker.pid().expect("running");
    let mut stalled = live_login(&broker).await;
    send_json(&mut stalled, json!({"type": "subscribe", "topic": "load.#"})).await;
    next_of(&mut stalled, "subscribed").await;
    let mut bystander = live_login(&broker).await;
    send_json(&mut bystander, json!({"type": "subscribe", "topic": "side.#"})).await;
    next_of(&mut bystander, "subscribed").await;

    const RATE: u64 = 10_000;
    const SECS: u64 = 5;
    let total = RATE * SECS;
    let (_cconn, cch) = amqp(&broker).await;
    cch.queue_declare("load.copy".into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("declare");
    cch.queue_bind(
        "load.copy".into(),
        "amq.topic".into(),
        "load.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    let mut consumer = cch
        .basic_consume(
            "load.copy".into(),
            "c".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let counter = tokio::spawn(async move {
        let mut n = 0u64;
        let started = Instant::now();
        while n < total {
            match tokio::time::timeout(WAIT, futures_lite::StreamExt::next(&mut consumer)).await {
                Ok(Some(Ok(_))) => n += 1,
                _ => break,
            }
        }
        (n, started.elapsed())
    });
    let rss_before = rss_kib(pid);
    let (_conn, ch) = amqp(&broker).await;
    let body = vec![b'x'; 1024];
    let started = Instant::now();
    let mut peak = rss_before;
    for i in 0..total {
        amqp_publish(&ch, "amq.topic", "load.x", &body, BasicProperties::default()).await;
        if i % 1000 == 999 {
            peak = peak.max(rss_kib(pid));
            amqp_publish(&ch, "amq.topic", "side.tick", format!("{i}").as_bytes(), BasicProperties::default()).await;
            let due = started + Duration::from_micros((i + 1) * 1_000_000 / RATE);
            tokio::time::sleep_until(due.into()).await;
        }
    }
    let publish_secs = started.elapsed().as_secs_f64();
    let (got, took) = counter.await.expect("counter");
    peak = peak.max(rss_kib(pid));
    eprintln!(
        "published {total} in {publish_secs:.2}s; the AMQP consumer got {got} in {:.2}s; \
         broker RSS {rss_before} KiB before, peak {peak} KiB",
        took.as_secs_f64()
    );
    assert_eq!(got, total, "the other consumer lost messages");
    // Its rate is the publisher's: it finishes right after the last publish. (The publish
    // rate itself is what a debug-built lapin reaches on a busy machine; it is printed.)
    let lag = took.as_secs_f64() - publish_secs;
    assert!(lag < 3.0, "the other consumer fell {lag:.2}s behind the publisher");
    // 50,000 x 1 KiB = 50 MiB went to the stalled browser; it may hold the outbox (4 MiB)
    // plus socket buffers, not the stream.
    assert!(peak < rss_before + 48 * 1024, "RSS grew from {rss_before} KiB to {peak} KiB");
    // The live consumer of another topic got all 50 ticks.
    eprintln!("checking the bystander's ticks");
    for _ in 0..(total / 1000) {
        let m = next_of(&mut bystander, "message").await;
        assert_eq!(m["routing_key"], "side.tick");
    }

    // Reading again, the stalled browser sees the drop counter: every message written after
    // the drops carries the running total; the pong comes after everything buffered.
    eprintln!("draining the stalled browser");
    send_json(&mut stalled, json!({"type": "ping", "req": "end"})).await;
    let (mut dropped, mut received) = (0, 0u64);
    loop {
        let v = next_json(&mut stalled).await;
        if v["type"] == "pong" {
            break;
        }
        received += 1;
        dropped = dropped.max(v["dropped"].as_u64().unwrap_or(0));
    }
    eprintln!("the stalled browser then read {received} messages; {dropped} were dropped");
    assert!(dropped > 0, "no drop counter seen");
    assert!(received + dropped <= total, "{received} + {dropped} > {total}");
    still_works(&mut stalled, 3).await;
}

#[tokio::test]
async fn a_slow_consumer_can_be_disconnected_instead() {
    let broker = Broker::start_with("[ws]\ntopic_overflow = \"disconnect\"\noutbound_max_messages = 100\n", &[]);
    let mut stalled = live_login(&broker).await;
    send_json(&mut stalled, json!({"type": "subscribe", "topic": "flood"})).await;
    next_of(&mut stalled, "subscribed").await;
    let (_conn, ch) = amqp(&broker).await;
    let body = vec![b'y'; 16 * 1024];
    for _ in 0..3000 {
        amqp_publish(&ch, "amq.topic", "flood", &body, BasicProperties::default()).await;
    }
    let deadline = Instant::now() + WAIT;
    let code = loop {
        assert!(Instant::now() < deadline, "not disconnected");
        match tokio::time::timeout(WAIT, stalled.next()).await.expect("timeout") {
            Some(Ok(Message::Close(Some(f)))) => break (u16::from(f.code), f.reason.to_string()),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code.0, 4429, "{code:?}");
    assert!(code.1.contains("slow consumer"), "{code:?}");
    let mut ok = live_login(&broker).await;
    still_works(&mut ok, 4).await;
}

#[tokio::test]
async fn shutdown_says_going_away() {
    let broker = Broker::start();
    let mut ws = live_login(&broker).await;
    let (mut st, _) = open(&format!("ws://{}/ws", broker.ws_stomp), &["v12.stomp"], &[]).await.expect("upgrade");
    st.send(Message::text("CONNECT\naccept-version:1.2\nlogin:guest\npasscode:guest\n\n\0")).await.expect("send");
    StompReader { buf: Vec::new() }.frame(&mut st).await;
    broker.signal("TERM");
    assert_eq!(expect_close(&mut ws).await.0, 1001);
    // STOMP first says ERROR "Server shutdown", then the WebSocket closes.
    let mut r = StompReader { buf: Vec::new() };
    let err = r.frame(&mut st).await;
    assert!(err.contains("Server shutdown"), "{err}");
}

// ------------------------------------------------------------------------- stock clients

/// @stomp/stompjs and mqtt.js over WebSocket (Node, the `ws` package as the WebSocket).
#[test]
fn stompjs_and_mqttjs_over_websocket() {
    let broker = Broker::start();
    switchyard_tests::run_client_script(switchyard_tests::Client::Node, "ws_stompjs_mqttjs.js", &broker);
}

/// The demo page in headless Debian Chromium; screenshot in `target/test-artifacts/demo.png`.
#[test]
fn demo_page_in_headless_chromium() {
    let broker = Broker::start();
    switchyard_tests::run_client_script(switchyard_tests::Client::Node, "demo_chromium.js", &broker);
}

// ----------------------------------------------------------------------------- measurements

/// Opens a logged-in live connection (Basic credentials on the upgrade) subscribed to `topic`.
async fn live_subscriber(broker: &Broker, topic: &str) -> Ws {
    let (mut ws, _) =
        open(&live_url(broker), &[], &[("authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")]).await.expect("live upgrade");
    next_of(&mut ws, "authenticated").await;
    send_json(&mut ws, json!({"type": "subscribe", "topic": topic})).await;
    next_of(&mut ws, "subscribed").await;
    ws
}

/// Messages/s of 1 KiB delivered to `n` live consumers of one topic while an AMQP publisher
/// publishes flat out for `secs`; returns (delivered/s over all consumers, dropped total).
async fn fanout_rate(broker: &Broker, n: usize, secs: u64) -> (f64, u64) {
    let mut tasks = Vec::new();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for _ in 0..n {
        let mut ws = live_subscriber(broker, "bench.#").await;
        let stop = std::sync::Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let (mut got, mut dropped) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) => {
                        got += 1;
                        // Cheap scan for the drop counter instead of parsing every message.
                        if let Some(i) = t.as_str().find("\"dropped\":") {
                            let rest = &t.as_str()[i + 10..];
                            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                            dropped = dropped.max(digits.parse().unwrap_or(0));
                        }
                    }
                    Ok(Some(Ok(_))) | Err(_) => {}
                    _ => break,
                }
            }
            (got, dropped)
        }));
    }
    let (_conn, ch) = amqp(broker).await;
    let body = vec![b'x'; 1024];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        for _ in 0..100 {
            amqp_publish(&ch, "amq.topic", "bench.x", &body, BasicProperties::default()).await;
        }
        tokio::task::yield_now().await;
    }
    // Let the consumers drain what is already on its way, then stop counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut got, mut dropped) = (0, 0);
    for t in tasks {
        let (g, d) = t.await.expect("consumer");
        got += g;
        dropped += d;
    }
    (got as f64 / elapsed, dropped)
}

/// Figures for the closing note: delivered msg/s (1 KiB) to 1 and to 100 live consumers of a
/// topic, three runs each. Run against a release build:
/// `cargo build --release -p switchyard-server && SWITCHYARD_BIN=target/release/switchyard
///  cargo nextest run --cargo-profile release -p switchyard-tests --test websocket
///  --run-ignored only -E 'test(measure_)' --no-capture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: prints figures, takes a minute"]
async fn measure_topic_fanout_to_live_consumers() {
    for n in [1usize, 100] {
        let mut rates = Vec::new();
        for run in 0..3 {
            let broker = Broker::start();
            let (rate, dropped) = fanout_rate(&broker, n, 5).await;
            eprintln!("fan-out to {n} live consumer(s), run {run}: {rate:.0} msg/s delivered, {dropped} dropped");
            rates.push(rate);
        }
        rates.sort_by(f64::total_cmp);
        eprintln!(
            "FIGURE fan-out to {n} live consumer(s), 1 KiB: median {:.0} msg/s delivered (runs {rates:.0?})",
            rates[1]
        );
    }
}

/// Figures for the closing note: broker RSS with 10,000 idle, authenticated live WebSocket
/// connections (three runs). Same command as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: prints figures, opens 10,000 connections"]
async fn measure_rss_with_10000_idle_connections() {
    const N: usize = 10_000;
    let mut per_conn = Vec::new();
    for run in 0..3 {
        let broker = Broker::start_with("[ws]\nidle_timeout = 600\nping_interval = 300\n", &[]);
        let pid = broker.pid().expect("running");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = rss_kib(pid);
        let mut conns = Vec::with_capacity(N);
        for i in 0..N {
            let (mut ws, _) = open(&live_url(&broker), &[], &[("authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")])
                .await
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            next_of(&mut ws, "authenticated").await;
            conns.push(ws);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_kib(pid);
        let each = (after - before) as f64 / N as f64;
        eprintln!("run {run}: RSS {before} KiB idle, {after} KiB with {N} WebSocket connections ({each:.1} KiB each)");
        per_conn.push((after, each));
        drop(conns);
    }
    per_conn.sort_by_key(|a| a.0);
    eprintln!(
        "FIGURE RSS with {N} idle live WebSocket connections: median {} KiB ({:.1} KiB per connection)",
        per_conn[1].0, per_conn[1].1
    );
}
