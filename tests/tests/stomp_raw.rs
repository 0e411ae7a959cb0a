//! STOMP over raw TCP against the real binary: every frame, version
//! negotiation, escaping, ack modes, transactions, selectors, heart-beats,
//! and bad input (an ERROR frame with a `message` header, then close, while
//! other clients carry on). The client here is a few lines of independent
//! parsing, not the bridge's codec.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use switchyard_tests::Broker;

/// A received frame.
#[derive(Debug, Clone)]
struct Frame {
    command: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Frame {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    fn h(&self, name: &str) -> &str {
        self.header(name).unwrap_or_else(|| panic!("{} frame has no '{name}' header: {self:?}", self.command))
    }
}

struct Stomp {
    s: TcpStream,
    buf: Vec<u8>,
    v12: bool,
    /// Frames read while waiting for a RECEIPT (a MESSAGE may overtake the receipt of
    /// the SEND that produced it: receipts wait for the fsync of persistent messages).
    stash: std::collections::VecDeque<Frame>,
}

fn unescape(s: &str) -> String {
    s.replace("\\n", "\n").replace("\\c", ":").replace("\\r", "\r").replace("\\\\", "\\")
}

impl Stomp {
    fn raw(broker: &Broker) -> Stomp {
        let s = TcpStream::connect(broker.stomp).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        Stomp { s, buf: Vec::new(), v12: false, stash: Default::default() }
    }

    /// Connect as guest with STOMP 1.2.
    fn open(broker: &Broker) -> Stomp {
        let mut c = Stomp::raw(broker);
        c.frame("CONNECT", &[("accept-version", "1.2"), ("host", "/"), ("login", "guest"), ("passcode", "guest")], b"");
        let f = c.expect("CONNECTED");
        assert_eq!(f.h("version"), "1.2");
        c.v12 = true;
        c
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write");
    }

    fn frame(&mut self, command: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut out = format!("{command}\n").into_bytes();
        for (k, v) in headers {
            out.extend_from_slice(format!("{k}:{v}\n").as_bytes());
        }
        out.push(b'\n');
        out.extend_from_slice(body);
        out.push(0);
        self.send(&out);
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.s.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next frame (skipping heart-beats), or None at EOF / timeout.
    fn read(&mut self) -> Option<Frame> {
        if let Some(f) = self.stash.pop_front() {
            return Some(f);
        }
        self.read_wire()
    }

    fn read_wire(&mut self) -> Option<Frame> {
        loop {
            while matches!(self.buf.first(), Some(b'\n' | b'\r')) {
                self.buf.remove(0);
            }
            if let Some(f) = self.parse() {
                return Some(f);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    fn parse(&mut self) -> Option<Frame> {
        let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
        let head = String::from_utf8(self.buf[..end].to_vec()).expect("utf-8 head");
        let mut lines = head.lines();
        let command = lines.next()?.to_string();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (k, v) = l.split_once(':').expect("colon");
                if command == "CONNECTED" || !self.v12 {
                    (k.to_string(), v.to_string())
                } else {
                    (unescape(k), unescape(v))
                }
            })
            .collect();
        let start = end + 2;
        let len = headers.iter().find(|(k, _)| k == "content-length").map(|(_, v)| v.parse::<usize>().expect("len"));
        let body_end = match len {
            Some(n) => {
                if self.buf.len() < start + n + 1 {
                    return None;
                }
                n + start
            }
            None => start + self.buf[start..].iter().position(|b| *b == 0)?,
        };
        assert_eq!(self.buf[body_end], 0, "frame ends with NUL");
        let body = self.buf[start..body_end].to_vec();
        self.buf.drain(..=body_end);
        Some(Frame { command, headers, body })
    }

    fn expect(&mut self, command: &str) -> Frame {
        let f = self.read().unwrap_or_else(|| panic!("expected {command}, got EOF/timeout"));
        assert_eq!(f.command, command, "unexpected frame: {f:?}");
        f
    }

    /// An ERROR with `message`, then the server closes the connection.
    fn expect_error_and_close(&mut self, message: &str) -> Frame {
        let f = self.expect("ERROR");
        assert_eq!(f.h("message"), message, "ERROR frame: {f:?} body {:?}", String::from_utf8_lossy(&f.body));
        assert!(!f.body.is_empty(), "ERROR body explains");
        assert!(self.read().is_none(), "connection closed after ERROR");
        f
    }

    fn receipt(&mut self, command: &str, headers: &[(&str, &str)], body: &[u8]) {
        let id = format!("r-{}", rand_suffix());
        let mut hs = headers.to_vec();
        hs.push(("receipt", &id));
        self.frame(command, &hs, body);
        loop {
            let f = self.read_wire().unwrap_or_else(|| panic!("expected RECEIPT {id}, got EOF/timeout"));
            if f.command == "RECEIPT" {
                assert_eq!(f.h("receipt-id"), id);
                return;
            }
            assert_eq!(f.command, "MESSAGE", "unexpected frame while waiting for a receipt: {f:?}");
            self.stash.push_back(f);
        }
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

#[test]
fn version_negotiation_and_login() {
    let broker = Broker::start();
    let mut c = Stomp::raw(&broker);
    c.frame("CONNECT", &[("login", "guest"), ("passcode", "guest")], b"");
    assert_eq!(c.expect("CONNECTED").h("version"), "1.0", "no accept-version means 1.0");

    let mut c = Stomp::raw(&broker);
    c.frame("STOMP", &[("accept-version", "1.0,1.1,1.2"), ("host", "localhost"), ("heart-beat", "0,0")], b"");
    let f = c.expect("CONNECTED");
    assert_eq!(f.h("version"), "1.2");
    assert!(f.h("session").starts_with("session-"));
    assert!(f.h("server").starts_with("Switchyard/"));
    assert_eq!(f.h("heart-beat"), "0,0");

    let mut c = Stomp::raw(&broker);
    c.frame("CONNECT", &[("accept-version", "1.1")], b"");
    assert_eq!(c.expect("CONNECTED").h("version"), "1.1");

    let mut c = Stomp::raw(&broker);
    c.frame("CONNECT", &[("accept-version", "2.0")], b"");
    let f = c.expect_error_and_close("Version mismatch");
    assert_eq!(f.h("version"), "1.0,1.1,1.2");

    let mut c = Stomp::raw(&broker);
    c.frame("CONNECT", &[("accept-version", "1.2"), ("login", "guest"), ("passcode", "nope")], b"");
    c.expect_error_and_close("Bad CONNECT");

    let mut c = Stomp::raw(&broker);
    c.frame("SEND", &[("destination", "/queue/x")], b"too early");
    c.expect_error_and_close("Illegal command");
}

#[test]
fn send_subscribe_headers_escaping_and_binary_bodies() {
    let broker = Broker::start();
    let mut c = Stomp::open(&broker);
    let q = format!("/queue/raw-{}", rand_suffix());
    c.receipt("SUBSCRIBE", &[("destination", &q), ("id", "s1"), ("ack", "client-individual")], b"");
    let body = b"bin\0ary\0";
    c.receipt(
        "SEND",
        &[
            ("destination", &q),
            ("content-type", "application/octet-stream"),
            ("content-length", "8"),
            ("colour", "a\\cb\\nc\\\\d"),
            ("colour", "ignored: first wins"),
            ("persistent", "true"),
            ("priority", "3"),
            ("correlation-id", "c-1"),
        ],
        body,
    );
    let m = c.expect("MESSAGE");
    assert_eq!(m.body, body);
    assert_eq!(m.h("subscription"), "s1");
    assert_eq!(m.h("destination"), q);
    assert_eq!(m.h("redelivered"), "false");
    assert_eq!(m.h("ack"), m.h("message-id"), "1.2 ack header");
    assert_eq!(m.h("content-type"), "application/octet-stream");
    assert_eq!(m.h("colour"), "a:b\nc\\d", "escaped header survives");
    assert_eq!(m.h("persistent"), "true");
    assert_eq!(m.h("priority"), "3");
    assert_eq!(m.h("correlation-id"), "c-1");
    let ack = m.h("ack").to_string();
    c.receipt("ACK", &[("id", &ack)], b"");
    c.receipt("UNSUBSCRIBE", &[("id", "s1")], b"");
    c.receipt("DISCONNECT", &[], b"");
    assert!(c.read().is_none(), "closed after DISCONNECT");
}

#[test]
fn ack_modes_nack_and_redelivery() {
    let broker = Broker::start();
    let q = format!("/queue/acks-{}", rand_suffix());
    let mut p = Stomp::open(&broker);
    for i in 0..4 {
        p.receipt("SEND", &[("destination", &q)], format!("m{i}").as_bytes());
    }
    // ack:client is cumulative: acking m1 acks m0 too; m2, m3 come back redelivered.
    let mut c = Stomp::open(&broker);
    c.receipt("SUBSCRIBE", &[("destination", &q), ("id", "a"), ("ack", "client")], b"");
    let ms: Vec<Frame> = (0..4).map(|_| c.expect("MESSAGE")).collect();
    assert_eq!(
        ms.iter().map(|m| m.body.clone()).collect::<Vec<_>>(),
        vec![b"m0".to_vec(), b"m1".to_vec(), b"m2".to_vec(), b"m3".to_vec()]
    );
    c.receipt("ACK", &[("id", ms[1].h("ack"))], b"");
    drop(c);
    let mut c = Stomp::open(&broker);
    c.receipt("SUBSCRIBE", &[("destination", &q), ("id", "b"), ("ack", "client-individual")], b"");
    let (m2, m3) = (c.expect("MESSAGE"), c.expect("MESSAGE"));
    assert_eq!((m2.body.as_slice(), m3.body.as_slice()), (b"m2".as_slice(), b"m3".as_slice()), "m0/m1 were acked");
    assert_eq!((m2.h("redelivered"), m3.h("redelivered")), ("true", "true"));
    // NACK requeue:false drops m3 (no dead-letter exchange); a plain NACK requeues m2.
    c.receipt("NACK", &[("id", m3.h("ack")), ("requeue", "false")], b"");
    c.receipt("NACK", &[("id", m2.h("ack"))], b"");
    let again = c.expect("MESSAGE");
    assert_eq!(again.body, b"m2", "NACK requeues by default");
    c.receipt("ACK", &[("id", again.h("ack"))], b"");
    c.frame("ACK", &[("id", again.h("ack"))], b"");
    c.expect_error_and_close("Unknown message id");
}

#[test]
fn transactions_cover_send_and_ack() {
    let broker = Broker::start();
    let q = format!("/queue/tx-{}", rand_suffix());
    let mut c = Stomp::open(&broker);
    c.receipt("BEGIN", &[("transaction", "t1")], b"");
    c.receipt("SEND", &[("destination", &q), ("transaction", "t1")], b"aborted");
    c.receipt("ABORT", &[("transaction", "t1")], b"");
    c.receipt("BEGIN", &[("transaction", "t2")], b"");
    c.receipt("SEND", &[("destination", &q), ("transaction", "t2")], b"committed");
    c.receipt("SUBSCRIBE", &[("destination", &q), ("id", "s"), ("ack", "client-individual")], b"");
    c.receipt("COMMIT", &[("transaction", "t2")], b"");
    let m = c.expect("MESSAGE");
    assert_eq!(m.body, b"committed", "the aborted SEND never arrives");
    c.receipt("BEGIN", &[("transaction", "t3")], b"");
    c.receipt("ACK", &[("id", m.h("ack")), ("transaction", "t3")], b"");
    c.receipt("ABORT", &[("transaction", "t3")], b"");
    c.receipt("UNSUBSCRIBE", &[("id", "s")], b"");
    drop(c);
    let mut c = Stomp::open(&broker);
    c.receipt("SUBSCRIBE", &[("destination", &q), ("id", "s"), ("ack", "client-individual")], b"");
    let m = c.expect("MESSAGE");
    assert_eq!((m.body.as_slice(), m.h("redelivered")), (b"committed".as_slice(), "true"), "aborted ACK did not ack");
    c.frame("COMMIT", &[("transaction", "nope")], b"");
    c.expect_error_and_close("Bad transaction");
}

#[test]
fn selectors_on_a_shared_queue_and_a_topic() {
    let broker = Broker::start();
    let q = format!("/queue/sel-{}", rand_suffix());
    let mut red = Stomp::open(&broker);
    red.receipt("SUBSCRIBE", &[("destination", &q), ("id", "r"), ("selector", "colour = 'red' AND n > 1")], b"");
    let mut topic = Stomp::open(&broker);
    topic.receipt("SUBSCRIBE", &[("destination", "/topic/sel.t"), ("id", "t"), ("selector", "n BETWEEN 2 AND 3")], b"");
    let mut p = Stomp::open(&broker);
    for (colour, n) in [("red", "1"), ("blue", "2"), ("red", "2"), ("red", "3")] {
        let body = format!("{colour}{n}");
        p.receipt("SEND", &[("destination", &q), ("colour", colour), ("n", n)], body.as_bytes());
        p.receipt("SEND", &[("destination", "/topic/sel.t"), ("colour", colour), ("n", n)], body.as_bytes());
    }
    assert_eq!(red.expect("MESSAGE").body, b"red2");
    assert_eq!(red.expect("MESSAGE").body, b"red3");
    assert_eq!(topic.expect("MESSAGE").body, b"blue2");
    assert_eq!(topic.expect("MESSAGE").body, b"red2");
    assert_eq!(topic.expect("MESSAGE").body, b"red3");
    // Non-matching messages stay in the shared queue for others.
    let mut rest = Stomp::open(&broker);
    rest.receipt("SUBSCRIBE", &[("destination", &q), ("id", "all")], b"");
    let mut got = vec![rest.expect("MESSAGE").body, rest.expect("MESSAGE").body];
    got.sort();
    assert_eq!(got, vec![b"blue2".to_vec(), b"red1".to_vec()]);

    let mut bad = Stomp::open(&broker);
    bad.frame("SUBSCRIBE", &[("destination", &q), ("id", "x"), ("selector", "colour = ")], b"");
    bad.expect_error_and_close("Invalid selector");
}

#[test]
fn durable_topic_subscription_keeps_messages() {
    let broker = Broker::start();
    let sub = [("destination", "/topic/dur.a"), ("id", "d1"), ("durable", "true"), ("ack", "client-individual")];
    let mut c = Stomp::open(&broker);
    c.receipt("SUBSCRIBE", &sub, b"");
    c.receipt("UNSUBSCRIBE", &[("id", "d1")], b"");
    drop(c);
    let mut p = Stomp::open(&broker);
    p.receipt("SEND", &[("destination", "/topic/dur.a")], b"while away");
    let mut c = Stomp::open(&broker);
    c.receipt("SUBSCRIBE", &sub, b"");
    let m = c.expect("MESSAGE");
    assert_eq!(m.body, b"while away");
    c.receipt("ACK", &[("id", m.h("ack"))], b"");
    c.receipt("UNSUBSCRIBE", &[("id", "d1"), ("durable", "true")], b"");
    p.receipt("SEND", &[("destination", "/topic/dur.a")], b"after removal");
    c.receipt("SUBSCRIBE", &sub, b"");
    c.receipt("SEND", &[("destination", "/topic/dur.a")], b"fresh");
    assert_eq!(c.expect("MESSAGE").body, b"fresh", "the durable queue was deleted with the subscription");

    let mut c = Stomp::open(&broker);
    c.frame("SUBSCRIBE", &[("destination", "/topic/dur.a"), ("persistent", "true")], b"");
    c.expect_error_and_close("Missing header");
}

#[test]
fn temp_queue_reply_to_is_rewritten() {
    let broker = Broker::start();
    let q = format!("/queue/rpc-{}", rand_suffix());
    let mut server = Stomp::open(&broker);
    server.receipt("SUBSCRIBE", &[("destination", &q), ("id", "srv")], b"");
    let mut client = Stomp::open(&broker);
    client.receipt("SEND", &[("destination", &q), ("reply-to", "/temp-queue/answers")], b"ping");
    let req = server.expect("MESSAGE");
    let reply_to = req.h("reply-to").to_string();
    assert!(reply_to.starts_with("/reply-queue/"), "{reply_to}");
    server.receipt("SEND", &[("destination", &reply_to)], b"pong");
    let rep = client.expect("MESSAGE");
    assert_eq!(rep.body, b"pong");
    assert_eq!(rep.h("subscription"), "/temp-queue/answers");
}

#[test]
fn heart_beats_both_ways() {
    let broker = Broker::start();
    // We ask to hear from the server every second.
    let mut c = Stomp::raw(&broker);
    c.frame("CONNECT", &[("accept-version", "1.2"), ("heart-beat", "0,1000")], b"");
    assert_eq!(c.expect("CONNECTED").h("heart-beat"), "1000,0");
    let t = Instant::now();
    let mut byte = [0u8; 1];
    c.s.read_exact(&mut byte).expect("a heart-beat");
    assert_eq!(byte[0], b'\n');
    assert!(t.elapsed() < Duration::from_secs(3));

    // We promise a beat every second and send none: dropped after the grace period.
    let mut c = Stomp::raw(&broker);
    c.frame("CONNECT", &[("accept-version", "1.2"), ("heart-beat", "1000,0")], b"");
    assert_eq!(c.expect("CONNECTED").h("heart-beat"), "0,1000");
    let t = Instant::now();
    assert!(c.read().is_none(), "closed");
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(1500) && waited < Duration::from_secs(6), "closed after {waited:?}");

    // ... but kept while it beats.
    let mut c = Stomp::raw(&broker);
    c.frame("CONNECT", &[("accept-version", "1.2"), ("heart-beat", "1000,0")], b"");
    c.expect("CONNECTED");
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(600));
        c.send(b"\n");
    }
    c.receipt("SEND", &[("destination", "/topic/hb")], b"still here");
}

/// Sends one kind of bad input.
type BadInput<'a> = Box<dyn Fn(&mut Stomp) + 'a>;

/// Each bad input gets its ERROR and a closed connection; a bystander is unaffected.
#[test]
fn bad_input_gets_error_then_close() {
    let broker = Broker::start_with("[stomp]\nmax_body_size = 1024\nmax_headers = 8\nmax_header_length = 256\n", &[]);
    let mut bystander = Stomp::open(&broker);
    let q = format!("/queue/bystander-{}", rand_suffix());
    bystander.receipt("SUBSCRIBE", &[("destination", &q), ("id", "b")], b"");

    let big = vec![b'x'; 2000];
    let many: Vec<(String, String)> = (0..20).map(|i| (format!("h{i}"), "v".to_string())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let cases: Vec<(&str, BadInput<'_>)> = vec![
        ("Bad command", Box::new(|c| c.send(b"FOO\n\n\0"))),
        ("Invalid frame", Box::new(|c| c.send(b"SEND\ndestination /queue/a\n\n\0"))),
        ("Frame too large", Box::new(move |c| c.frame("SEND", &[("destination", "/queue/a")], &big))),
        (
            "Frame too large",
            Box::new(|c| {
                let mut f = b"SEND\ndestination:/queue/a\n\n".to_vec();
                f.extend(std::iter::repeat_n(b'y', 3000));
                c.send(&f);
            }),
        ),
        ("Frame too large", Box::new(move |c| c.frame("SEND", &many, b""))),
        ("Frame too large", Box::new(|c| c.send(format!("SEND\nh:{}\n\n\0", "z".repeat(300)).as_bytes()))),
        ("Invalid header", Box::new(|c| c.send(b"SEND\ndestination:/queue/a\\t\n\n\0"))),
        ("Invalid frame", Box::new(|c| c.send(b"SEND\ndestination:/queue/a\ncontent-length:2\n\nabc\0"))),
        ("Missing header", Box::new(|c| c.frame("SEND", &[], b"no destination"))),
        ("Unknown destination", Box::new(|c| c.frame("SEND", &[("destination", "/nope/x")], b""))),
        ("Invalid destination", Box::new(|c| c.frame("SEND", &[("destination", "/queue/")], b""))),
        ("Missing header", Box::new(|c| c.frame("SUBSCRIBE", &[("destination", "/queue/a")], b""))),
        ("Unknown message id", Box::new(|c| c.frame("ACK", &[("id", "T_x@@session-y@@99")], b""))),
        (
            "Invalid selector",
            Box::new(|c| {
                c.frame("SUBSCRIBE", &[("destination", "/queue/a"), ("id", "1"), ("selector", "a LIKE 5")], b"")
            }),
        ),
        ("not_found", Box::new(|c| c.frame("SEND", &[("destination", "/exchange/missing/k")], b""))),
        ("not_found", Box::new(|c| c.frame("SUBSCRIBE", &[("destination", "/amq/queue/missing"), ("id", "1")], b""))),
    ];
    for (message, send) in cases {
        let mut c = Stomp::open(&broker);
        send(&mut c);
        c.expect_error_and_close(message);
    }
    // A receipt on the failing frame is echoed as receipt-id on the ERROR.
    let mut c = Stomp::open(&broker);
    c.frame("SEND", &[("destination", "/bad"), ("receipt", "r9")], b"");
    assert_eq!(c.expect_error_and_close("Unknown destination").h("receipt-id"), "r9");

    let mut p = Stomp::open(&broker);
    p.receipt("SEND", &[("destination", &q)], b"still fine");
    assert_eq!(bystander.expect("MESSAGE").body, b"still fine");
}
