//! Malformed and hostile AMQP input, sent as raw bytes (no client library),
//! must get the protocol's own close code while other clients carry on.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use switchyard_tests::Broker;

/// A blocking raw AMQP peer that speaks just enough of the handshake.
struct Raw {
    s: TcpStream,
}

fn shortstr(out: &mut Vec<u8>, s: &str) {
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn longstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

fn method(channel: u16, class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut p = class.to_be_bytes().to_vec();
    p.extend_from_slice(&method.to_be_bytes());
    p.extend_from_slice(args);
    frame(1, channel, &p)
}

/// A received frame: type, channel, payload.
type Frame = (u8, u16, Vec<u8>);

impl Raw {
    fn connect(broker: &Broker) -> Raw {
        let s = TcpStream::connect(broker.amqp).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        Raw { s }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write");
    }

    fn read_frame(&mut self) -> Option<Frame> {
        let mut h = [0u8; 7];
        self.s.read_exact(&mut h).ok()?;
        let size = u32::from_be_bytes([h[3], h[4], h[5], h[6]]) as usize;
        let mut p = vec![0u8; size + 1];
        self.s.read_exact(&mut p).ok()?;
        assert_eq!(p.pop(), Some(0xCE), "frame end");
        Some((h[0], u16::from_be_bytes([h[1], h[2]]), p))
    }

    /// The next method frame's (channel, class, method, args), skipping heartbeats.
    fn read_method(&mut self) -> Option<(u16, u16, u16, Vec<u8>)> {
        loop {
            let (kind, ch, p) = self.read_frame()?;
            if kind == 1 {
                let class = u16::from_be_bytes([p[0], p[1]]);
                let m = u16::from_be_bytes([p[2], p[3]]);
                return Some((ch, class, m, p[4..].to_vec()));
            }
        }
    }

    /// Handshake as guest and open channel 1.
    fn open(broker: &Broker) -> Raw {
        let mut r = Raw::connect(broker);
        r.send(b"AMQP\x00\x00\x09\x01");
        let (_, c, m, _) = r.read_method().expect("start");
        assert_eq!((c, m), (10, 10));
        let mut args = 0u32.to_be_bytes().to_vec(); // empty client properties
        shortstr(&mut args, "PLAIN");
        longstr(&mut args, b"\0guest\0guest");
        shortstr(&mut args, "en_US");
        r.send(&method(0, 10, 11, &args));
        let (_, c, m, _) = r.read_method().expect("tune");
        assert_eq!((c, m), (10, 30));
        let mut tune = 2047u16.to_be_bytes().to_vec();
        tune.extend_from_slice(&131_072u32.to_be_bytes());
        tune.extend_from_slice(&0u16.to_be_bytes());
        r.send(&method(0, 10, 31, &tune));
        let mut open = Vec::new();
        shortstr(&mut open, "/");
        shortstr(&mut open, "");
        open.push(0);
        r.send(&method(0, 10, 40, &open));
        let (_, c, m, _) = r.read_method().expect("open-ok");
        assert_eq!((c, m), (10, 41));
        r.send(&method(1, 20, 10, &[0]));
        let (ch, c, m, _) = r.read_method().expect("channel open-ok");
        assert_eq!((ch, c, m), (1, 20, 11));
        r
    }

    /// Expect `connection.close` with `code`; answer close-ok; return the reply text.
    fn expect_connection_close(&mut self, code: u16) -> String {
        let (ch, c, m, args) = self.read_method().expect("connection.close");
        assert_eq!((ch, c, m), (0, 10, 50), "expected connection.close, got {c}.{m} args {args:?}");
        let got = u16::from_be_bytes([args[0], args[1]]);
        let text = String::from_utf8_lossy(&args[3..3 + args[2] as usize]).into_owned();
        assert_eq!(got, code, "reply code (text: {text})");
        self.send(&method(0, 10, 51, &[]));
        text
    }

    fn expect_channel_close(&mut self, channel: u16, code: u16) -> String {
        let (ch, c, m, args) = self.read_method().expect("channel.close");
        assert_eq!((ch, c, m), (channel, 20, 40), "expected channel.close, got {c}.{m} args {args:?}");
        let got = u16::from_be_bytes([args[0], args[1]]);
        let text = String::from_utf8_lossy(&args[3..3 + args[2] as usize]).into_owned();
        assert_eq!(got, code, "reply code (text: {text})");
        text
    }
}

fn publish_args(exchange: &str, key: &str) -> Vec<u8> {
    let mut a = 0u16.to_be_bytes().to_vec();
    shortstr(&mut a, exchange);
    shortstr(&mut a, key);
    a.push(0);
    a
}

fn content_header(channel: u16, body_size: u64) -> Vec<u8> {
    let mut p = 60u16.to_be_bytes().to_vec();
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&body_size.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes()); // no properties
    frame(2, channel, &p)
}

/// A healthy client still works: declares, publishes and gets a message.
fn assert_broker_healthy(broker: &Broker) {
    let mut r = Raw::open(broker);
    let mut decl = 0u16.to_be_bytes().to_vec();
    shortstr(&mut decl, "healthy");
    decl.push(0);
    decl.extend_from_slice(&0u32.to_be_bytes());
    r.send(&method(1, 50, 10, &decl));
    let (_, c, m, _) = r.read_method().expect("declare-ok");
    assert_eq!((c, m), (50, 11));
}

#[test]
fn wrong_protocol_header_gets_ours_back() {
    let broker = Broker::start();
    let mut r = Raw::connect(&broker);
    r.send(b"AMQP\x01\x01\x00\x0a");
    let mut back = [0u8; 8];
    r.s.read_exact(&mut back).expect("header back");
    assert_eq!(&back, b"AMQP\x00\x00\x09\x01");
    assert_broker_healthy(&broker);
}

#[test]
fn truncated_frame_then_disconnect_harms_no_one() {
    let broker = Broker::start();
    let mut r = Raw::open(&broker);
    let f = method(1, 60, 40, &publish_args("", "q"));
    r.send(&f[..f.len() - 3]);
    drop(r);
    assert_broker_healthy(&broker);
}

#[test]
fn frame_over_frame_max_is_a_frame_error() {
    let broker = Broker::start();
    let mut r = Raw::open(&broker);
    // Announce a 1 MiB method frame but send only its header: the broker must refuse
    // before waiting for (or allocating) the payload.
    let mut h = vec![1u8];
    h.extend_from_slice(&1u16.to_be_bytes());
    h.extend_from_slice(&(1u32 << 20).to_be_bytes());
    r.send(&h);
    r.expect_connection_close(501);
    assert_broker_healthy(&broker);
}

#[test]
fn bad_frame_end_is_a_frame_error() {
    let broker = Broker::start();
    let mut r = Raw::open(&broker);
    let mut f = method(1, 60, 40, &publish_args("", "q"));
    let last = f.len() - 1;
    f[last] = 0x00;
    r.send(&f);
    r.expect_connection_close(501);
}

#[test]
fn unknown_method_is_not_implemented() {
    let broker = Broker::start();
    let mut r = Raw::open(&broker);
    r.send(&method(1, 60, 99, &[]));
    r.expect_connection_close(540);
    assert_broker_healthy(&broker);
}

#[test]
fn malformed_arguments_are_a_syntax_error() {
    let broker = Broker::start();
    let mut r = Raw::open(&broker);
    // queue.declare whose short string claims 200 bytes but has 3.
    r.send(&method(1, 50, 10, &[0, 0, 200, b'a', b'b', b'c']));
    r.expect_connection_close(502);
}

#[test]
fn content_header_without_publish_is_unexpected() {
    let broker = Broker::start();
    let mut r = Raw::open(&broker);
    r.send(&content_header(1, 3));
    r.expect_connection_close(505);
}

#[test]
fn method_in_the_middle_of_content_is_unexpected() {
    let broker = Broker::start();
    let mut r = Raw::open(&broker);
    r.send(&method(1, 60, 40, &publish_args("", "q")));
    r.send(&method(1, 60, 40, &publish_args("", "q")));
    r.expect_connection_close(505);
}

#[test]
fn body_larger_than_announced_is_a_frame_error() {
    let broker = Broker::start();
    let mut r = Raw::open(&broker);
    r.send(&method(1, 60, 40, &publish_args("", "q")));
    r.send(&content_header(1, 3));
    r.send(&frame(3, 1, b"too long"));
    r.expect_connection_close(501);
}

#[test]
fn method_on_unopened_channel_is_a_channel_error() {
    let broker = Broker::start();
    let mut r = Raw::open(&broker);
    r.send(&method(7, 60, 40, &publish_args("", "q")));
    r.expect_connection_close(504);
}

#[test]
fn publish_to_missing_exchange_closes_only_the_channel() {
    let broker = Broker::start();
    let mut r = Raw::open(&broker);
    r.send(&method(1, 60, 40, &publish_args("no-such-exchange", "k")));
    r.send(&content_header(1, 0));
    let text = r.expect_channel_close(1, 404);
    assert_eq!(text, "NOT_FOUND - no exchange 'no-such-exchange' in vhost '/'");
    // The connection is still usable on another channel.
    r.send(&method(2, 20, 10, &[0]));
    let (ch, c, m, _) = r.read_method().expect("open-ok");
    assert_eq!((ch, c, m), (2, 20, 11));
}

#[test]
fn wrong_password_is_access_refused() {
    let broker = Broker::start();
    let mut r = Raw::connect(&broker);
    r.send(b"AMQP\x00\x00\x09\x01");
    r.read_method().expect("start");
    let mut args = 0u32.to_be_bytes().to_vec();
    shortstr(&mut args, "PLAIN");
    longstr(&mut args, b"\0guest\0nope");
    shortstr(&mut args, "en_US");
    r.send(&method(0, 10, 11, &args));
    let text = r.expect_connection_close(403);
    assert!(text.starts_with("ACCESS_REFUSED - Login was refused"), "{text}");
}

#[test]
fn garbage_bytes_never_crash_the_broker() {
    let broker = Broker::start();
    // Deterministic pseudo-random junk after a valid handshake, many times over.
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..50 {
        let mut r = Raw::open(&broker);
        let mut junk = Vec::new();
        for _ in 0..512 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            junk.push(seed as u8);
        }
        let _ = r.s.write_all(&junk);
    }
    assert_broker_healthy(&broker);
}
