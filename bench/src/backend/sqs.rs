//! Amazon SQS backend: AWS JSON 1.0 over plain HTTP/1.1 keep-alive connections, on a
//! minimal client of our own (no TLS, no SDK) so the load generator costs little CPU.
//!
//! Producers batch: every N payloads go out as one `SendMessageBatch` (a partial batch on
//! `flush`), N = `--confirm` clamped to 1–10 (a batch is N unconfirmed messages; 0 means 10);
//! a 200 means the broker has the batch on disk, so each message counts as confirmed. Use
//! `--confirm 1` for latency runs (one message per request, no batching delay). Consumers long-poll `ReceiveMessage` (10 at a time, 1 s wait) and delete what
//! they got with one `DeleteMessageBatch` before handing the messages out. SQS bodies must be
//! text, so the 8-byte send stamp travels as 16 hex digits at the start of the body, padded
//! with `x` to `--size`. Only the shared layout exists (SQS has no fan-out of its own).
//!
//! The client is kept lean so it is not what limits a run: requests are written straight into
//! one reused buffer (no per-message strings), a response is read into a reused buffer without
//! zeroing it, answers are parsed into borrowed typed structs (no `Value` tree, bodies not
//! copied), and a `SendMessageBatch` answer is only parsed when its `Failed` list is not empty.
//! Requests are unsigned: Switchyard's default `[aws] auth = "any"` accepts them.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Backend, ConsumeSettings, Consumer, Layout, Producer, PublishSettings, Topology, put_decimal};
use crate::stats::{Counters, Received, STAMP_LEN};

/// Entries per batch request (SQS's maximum).
const BATCH: usize = 10;
/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Free room kept in the read buffer before each read.
const READ_CHUNK: usize = 64 * 1024;

/// An SQS endpoint at one address.
#[derive(Debug)]
pub struct SqsBackend {
    /// `host:port`.
    addr: String,
}

impl SqsBackend {
    /// Parses `http://host[:port]`.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("http://").ok_or_else(|| anyhow!("SQS URL must start with http:// ({url:?})"))?;
        let hostport = rest.split('/').next().unwrap_or_default();
        if hostport.is_empty() {
            bail!("no host in SQS URL {url:?}");
        }
        let addr = if hostport.contains(':') { hostport.to_owned() } else { format!("{hostport}:80") };
        Ok(Self { addr })
    }

    async fn connect(&self) -> anyhow::Result<Http> {
        let stream = TcpStream::connect(&self.addr).await.with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        Ok(Http {
            stream,
            host: self.addr.clone(),
            buf: Vec::with_capacity(READ_CHUNK),
            out: Vec::new(),
            consumed: None,
        })
    }

    /// The queue URL of a topology (names sanitised to SQS's alphabet and length).
    fn queue_url(&self, topology: &Topology) -> String {
        format!("http://{}/000000000000/{}", self.addr, queue_name(topology))
    }
}

/// The SQS queue name of a topology.
fn queue_name(topology: &Topology) -> String {
    let mut n: String =
        topology.name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect();
    n.truncate(80);
    n
}

/// One keep-alive HTTP/1.1 connection.
#[derive(Debug)]
struct Http {
    stream: TcpStream,
    host: String,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
    /// The request being written.
    out: Vec<u8>,
    /// Bytes of `buf` the last response took (dropped before the next request).
    consumed: Option<usize>,
}

impl Http {
    /// Posts a JSON 1.0 `action` and returns the response body; a non-200 is an error. The
    /// body stays valid until the next call.
    async fn call(&mut self, action: &str, body: &[u8]) -> anyhow::Result<&[u8]> {
        let range = tokio::time::timeout(TIMEOUT, self.exchange(action, body))
            .await
            .map_err(|_| anyhow!("{action}: no answer within {TIMEOUT:?}"))??;
        Ok(&self.buf[range])
    }

    /// Sends one request and reads its response; returns where its body is in `buf`.
    async fn exchange(&mut self, action: &str, body: &[u8]) -> anyhow::Result<Range<usize>> {
        // The previous response's bytes were handed out until now; drop them.
        if let Some(done) = self.consumed.take() {
            self.buf.drain(..done);
        }
        self.out.clear();
        self.out.extend_from_slice(b"POST / HTTP/1.1\r\nHost: ");
        self.out.extend_from_slice(self.host.as_bytes());
        self.out.extend_from_slice(b"\r\nContent-Type: application/x-amz-json-1.0\r\nX-Amz-Target: AmazonSQS.");
        self.out.extend_from_slice(action.as_bytes());
        self.out.extend_from_slice(b"\r\nContent-Length: ");
        put_decimal(&mut self.out, body.len() as u64);
        self.out.extend_from_slice(b"\r\n\r\n");
        self.out.extend_from_slice(body);
        self.stream.write_all(&self.out).await?;
        // Read the head.
        let mut searched = 0;
        let head_end = loop {
            if let Some(i) = find(&self.buf[searched..], b"\r\n\r\n") {
                break searched + i + 4;
            }
            searched = self.buf.len().saturating_sub(3);
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).context("response head is not UTF-8")?;
        let status: u16 =
            head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| anyhow!("bad status line"))?;
        let mut length = None;
        for line in head.split("\r\n").skip(1) {
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    bail!("chunked responses are not supported by loadgen's SQS client");
                }
            }
        }
        let length = length.ok_or_else(|| anyhow!("{action}: response without Content-Length"))?;
        while self.buf.len() < head_end + length {
            self.fill().await?;
        }
        self.consumed = Some(head_end + length);
        if status != 200 {
            let text = String::from_utf8_lossy(&self.buf[head_end..head_end + length]).into_owned();
            bail!("{action}: HTTP {status}: {text}");
        }
        Ok(head_end..head_end + length)
    }

    /// Reads more into `buf`'s spare room (not zeroed first).
    async fn fill(&mut self) -> anyhow::Result<()> {
        self.buf.reserve(READ_CHUNK);
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            bail!("the broker closed the connection");
        }
        Ok(())
    }
}

/// Where `needle` starts in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Appends the SQS body for a stamped payload (see [`body_of`]) without building a string.
fn push_body(out: &mut Vec<u8>, payload: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const PAD: &[u8; 256] = &[b'x'; 256];
    let stamp = payload.get(..STAMP_LEN).unwrap_or_default();
    for b in stamp {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
    let mut left = payload.len().saturating_sub(2 * stamp.len());
    while left > 0 {
        let n = left.min(PAD.len());
        out.extend_from_slice(&PAD[..n]);
        left -= n;
    }
}

/// The parts of a `ReceiveMessage` answer the consumer uses, borrowed from it.
#[derive(Debug, Deserialize)]
struct ReceiveAnswer<'a> {
    #[serde(borrow, rename = "Messages", default)]
    messages: Vec<ReceivedMessage<'a>>,
}

/// One received message.
#[derive(Debug, Deserialize)]
struct ReceivedMessage<'a> {
    #[serde(borrow, rename = "Body")]
    body: Cow<'a, str>,
    #[serde(borrow, rename = "ReceiptHandle")]
    handle: Cow<'a, str>,
}

/// The SQS body for a stamped payload: the stamp as 16 hex digits, then `x` up to its length.
#[cfg(test)]
fn body_of(payload: &[u8]) -> String {
    let stamp = payload.get(..STAMP_LEN).unwrap_or_default();
    let mut s: String = stamp.iter().map(|b| format!("{b:02x}")).collect();
    while s.len() < payload.len() {
        s.push('x');
    }
    s
}

/// The stamp carried by a body made by [`body_of`].
fn stamp_of(body: &str) -> Option<u64> {
    u64::from_str_radix(body.get(..2 * STAMP_LEN)?, 16).ok()
}

/// JSON string content needs no escaping for [`body_of`] bodies and our queue URLs, so
/// requests are written directly.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

impl Backend for SqsBackend {
    type Producer = SqsProducer;
    type Consumer = SqsConsumer;
    type Idle = TcpStream;

    async fn declare(&self, topology: &Topology) -> anyhow::Result<()> {
        if topology.layout != Layout::Shared {
            bail!("SQS has no fan-out; use a shared-queue scenario");
        }
        let mut http = self.connect().await?;
        let body = format!("{{\"QueueName\":{}}}", quoted(&queue_name(topology)));
        http.call("CreateQueue", body.as_bytes()).await?;
        Ok(())
    }

    async fn producer(&self, topology: &Topology, settings: PublishSettings) -> anyhow::Result<SqsProducer> {
        let size = if settings.confirm_window == 0 { BATCH } else { settings.confirm_window.min(BATCH) };
        let prefix = format!("{{\"QueueUrl\":{},\"Entries\":[", quoted(&self.queue_url(topology))).into_bytes();
        Ok(SqsProducer { http: self.connect().await?, request: prefix.clone(), prefix, entries: 0, size, next_id: 0 })
    }

    async fn consumer(&self, topology: &Topology, _index: usize, _s: ConsumeSettings) -> anyhow::Result<SqsConsumer> {
        let url = self.queue_url(topology);
        let receive =
            format!("{{\"QueueUrl\":{},\"MaxNumberOfMessages\":{BATCH},\"WaitTimeSeconds\":1}}", quoted(&url));
        let delete_prefix = format!("{{\"QueueUrl\":{},\"Entries\":[", quoted(&url)).into_bytes();
        Ok(SqsConsumer {
            http: self.connect().await?,
            receive,
            delete_prefix,
            delete: Vec::new(),
            ready: VecDeque::new(),
        })
    }

    async fn teardown(&self, topology: &Topology) -> anyhow::Result<()> {
        let mut http = self.connect().await?;
        let body = format!("{{\"QueueUrl\":{}}}", quoted(&self.queue_url(topology)));
        http.call("DeleteQueue", body.as_bytes()).await?;
        Ok(())
    }

    async fn idle_connection(&self) -> anyhow::Result<TcpStream> {
        Ok(TcpStream::connect(&self.addr).await?)
    }
}

/// A producer: one connection, one batch request being written.
#[derive(Debug)]
pub struct SqsProducer {
    http: Http,
    /// `{"QueueUrl":"...","Entries":[`: how every request starts.
    prefix: Vec<u8>,
    /// The request being filled (starts with `prefix`).
    request: Vec<u8>,
    /// Entries in `request`.
    entries: usize,
    /// Messages per request.
    size: usize,
    next_id: u64,
}

impl SqsProducer {
    async fn send_batch(&mut self, counters: &Counters) -> anyhow::Result<()> {
        if self.entries == 0 {
            return Ok(());
        }
        self.request.extend_from_slice(b"]}");
        let answer = self.http.call("SendMessageBatch", &self.request).await?;
        // The broker answers `"Failed":[]` when every entry went through; anything else is parsed.
        let failed = if find(answer, b"\"Failed\":[]").is_some() {
            0
        } else {
            let v: Value = serde_json::from_slice(answer).context("SendMessageBatch answer")?;
            v.get("Failed").and_then(Value::as_array).map_or(0, Vec::len)
        };
        if failed > 0 {
            counters.nacked.fetch_add(failed as u64, Ordering::Relaxed);
        }
        counters.confirmed.fetch_add((self.entries - failed) as u64, Ordering::Relaxed);
        self.request.clear();
        self.request.extend_from_slice(&self.prefix);
        self.entries = 0;
        Ok(())
    }
}

impl Producer for SqsProducer {
    async fn send(&mut self, payload: &[u8], counters: &Counters) -> anyhow::Result<()> {
        if self.entries > 0 {
            self.request.push(b',');
        }
        self.request.extend_from_slice(b"{\"Id\":\"m");
        put_decimal(&mut self.request, self.next_id);
        self.request.extend_from_slice(b"\",\"MessageBody\":\"");
        push_body(&mut self.request, payload);
        self.request.extend_from_slice(b"\"}");
        self.next_id += 1;
        self.entries += 1;
        if self.entries >= self.size {
            self.send_batch(counters).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, counters: &Counters) -> anyhow::Result<()> {
        self.send_batch(counters).await
    }

    async fn close(self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A consumer: receives 10 at a time and deletes them in one batch.
#[derive(Debug)]
pub struct SqsConsumer {
    http: Http,
    /// The ReceiveMessage request body (the same every time).
    receive: String,
    /// `{"QueueUrl":"...","Entries":[`: how every delete request starts.
    delete_prefix: Vec<u8>,
    /// The delete request being written.
    delete: Vec<u8>,
    ready: VecDeque<Received>,
}

impl Consumer for SqsConsumer {
    async fn recv(&mut self) -> anyhow::Result<Option<Received>> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Ok(Some(r));
            }
            let answer = self.http.call("ReceiveMessage", self.receive.as_bytes()).await?;
            let answer: ReceiveAnswer = serde_json::from_slice(answer).context("ReceiveMessage answer")?;
            if answer.messages.is_empty() {
                continue;
            }
            self.delete.clear();
            self.delete.extend_from_slice(&self.delete_prefix);
            for (i, m) in answer.messages.iter().enumerate() {
                if i > 0 {
                    self.delete.push(b',');
                }
                self.delete.extend_from_slice(b"{\"Id\":\"d");
                put_decimal(&mut self.delete, i as u64);
                self.delete.extend_from_slice(b"\",\"ReceiptHandle\":");
                if m.handle.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'+' | b'/'))
                {
                    self.delete.push(b'"');
                    self.delete.extend_from_slice(m.handle.as_bytes());
                    self.delete.push(b'"');
                } else {
                    self.delete.extend_from_slice(quoted(&m.handle).as_bytes());
                }
                self.delete.push(b'}');
                self.ready.push_back(Received { stamp_ns: stamp_of(&m.body), len: m.body.len() });
            }
            self.delete.extend_from_slice(b"]}");
            drop(answer);
            self.http.call("DeleteMessageBatch", &self.delete).await?;
        }
    }

    async fn close(self) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_survive_the_text_body() {
        let mut payload = vec![0u8; 64];
        crate::stats::stamp(&mut payload, 0x0123_4567_89ab_cdef);
        let body = body_of(&payload);
        assert_eq!(body.len(), 64);
        assert_eq!(stamp_of(&body), Some(0x0123_4567_89ab_cdef));
        assert!(body.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn requests_are_written_as_json() {
        let mut payload = vec![0u8; 600];
        crate::stats::stamp(&mut payload, 42);
        let mut out = Vec::new();
        push_body(&mut out, &payload);
        assert_eq!(out, body_of(&payload).into_bytes());
        let mut n = Vec::new();
        for x in [0u64, 7, 10, 1234567890, u64::MAX] {
            n.clear();
            put_decimal(&mut n, x);
            assert_eq!(n, x.to_string().into_bytes());
        }
        let answer = br#"{"Messages":[{"MessageId":"a","Body":"00x","MD5OfBody":"m","ReceiptHandle":"h\/1"}]}"#;
        let a: ReceiveAnswer = serde_json::from_slice(answer).expect("typed");
        assert_eq!((a.messages[0].body.as_ref(), a.messages[0].handle.as_ref()), ("00x", "h/1"));
        let none: ReceiveAnswer = serde_json::from_slice(b"{}").expect("typed");
        assert!(none.messages.is_empty());
    }

    #[test]
    fn queue_names_fit_sqs() {
        let t = Topology { name: "bench.flow-1/x".repeat(10), layout: Layout::Shared, durable: true };
        let n = queue_name(&t);
        assert!(n.len() <= 80 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
