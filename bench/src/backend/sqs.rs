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

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Backend, ConsumeSettings, Consumer, Layout, Producer, PublishSettings, Topology};
use crate::stats::{Counters, Received, STAMP_LEN};

/// Entries per batch request (SQS's maximum).
const BATCH: usize = 10;
/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

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
        Ok(Http { stream, host: self.addr.clone(), buf: Vec::with_capacity(64 * 1024), out: Vec::new() })
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
}

impl Http {
    /// Posts a JSON 1.0 `action` and returns the response body; a non-200 is an error.
    async fn call(&mut self, action: &str, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        tokio::time::timeout(TIMEOUT, self.exchange(action, body))
            .await
            .map_err(|_| anyhow!("{action}: no answer within {TIMEOUT:?}"))?
    }

    async fn exchange(&mut self, action: &str, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.out.clear();
        self.out.extend_from_slice(b"POST / HTTP/1.1\r\nHost: ");
        self.out.extend_from_slice(self.host.as_bytes());
        self.out.extend_from_slice(b"\r\nContent-Type: application/x-amz-json-1.0\r\nX-Amz-Target: AmazonSQS.");
        self.out.extend_from_slice(action.as_bytes());
        self.out.extend_from_slice(format!("\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
        self.out.extend_from_slice(body);
        self.stream.write_all(&self.out).await?;
        // Read the head.
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
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
        let body = self.buf[head_end..head_end + length].to_vec();
        self.buf.drain(..head_end + length);
        if status != 200 {
            bail!("{action}: HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(body)
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let start = self.buf.len();
        self.buf.resize(start + 64 * 1024, 0);
        let n = self.stream.read(&mut self.buf[start..]).await?;
        self.buf.truncate(start + n);
        if n == 0 {
            bail!("the broker closed the connection");
        }
        Ok(())
    }
}

/// The SQS body for a stamped payload: the stamp as 16 hex digits, then `x` up to its length.
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
        Ok(SqsProducer {
            http: self.connect().await?,
            url: self.queue_url(topology),
            batch: Vec::new(),
            size,
            next_id: 0,
        })
    }

    async fn consumer(&self, topology: &Topology, _index: usize, _s: ConsumeSettings) -> anyhow::Result<SqsConsumer> {
        let url = self.queue_url(topology);
        let receive =
            format!("{{\"QueueUrl\":{},\"MaxNumberOfMessages\":{BATCH},\"WaitTimeSeconds\":1}}", quoted(&url));
        Ok(SqsConsumer { http: self.connect().await?, url, receive, ready: VecDeque::new() })
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

/// A producer: one connection, one batch being filled.
#[derive(Debug)]
pub struct SqsProducer {
    http: Http,
    url: String,
    batch: Vec<String>,
    /// Messages per request.
    size: usize,
    next_id: u64,
}

impl SqsProducer {
    async fn send_batch(&mut self, counters: &Counters) -> anyhow::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut body = format!("{{\"QueueUrl\":{},\"Entries\":[", quoted(&self.url));
        for (i, b) in self.batch.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&format!("{{\"Id\":\"m{}\",\"MessageBody\":\"{b}\"}}", self.next_id));
            self.next_id += 1;
        }
        body.push_str("]}");
        let answer = self.http.call("SendMessageBatch", body.as_bytes()).await?;
        let v: Value = serde_json::from_slice(&answer).context("SendMessageBatch answer")?;
        let failed = v.get("Failed").and_then(Value::as_array).map_or(0, Vec::len);
        if failed > 0 {
            counters.nacked.fetch_add(failed as u64, Ordering::Relaxed);
        }
        counters.confirmed.fetch_add((self.batch.len() - failed) as u64, Ordering::Relaxed);
        self.batch.clear();
        Ok(())
    }
}

impl Producer for SqsProducer {
    async fn send(&mut self, payload: &[u8], counters: &Counters) -> anyhow::Result<()> {
        self.batch.push(body_of(payload));
        if self.batch.len() >= self.size {
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
    url: String,
    /// The ReceiveMessage request body (the same every time).
    receive: String,
    ready: VecDeque<Received>,
}

impl Consumer for SqsConsumer {
    async fn recv(&mut self) -> anyhow::Result<Option<Received>> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Ok(Some(r));
            }
            let answer = self.http.call("ReceiveMessage", self.receive.as_bytes()).await?;
            let v: Value = serde_json::from_slice(&answer).context("ReceiveMessage answer")?;
            let Some(messages) = v.get("Messages").and_then(Value::as_array) else { continue };
            let mut delete = format!("{{\"QueueUrl\":{},\"Entries\":[", quoted(&self.url));
            for (i, m) in messages.iter().enumerate() {
                let body = m.get("Body").and_then(Value::as_str).unwrap_or_default();
                let handle = m.get("ReceiptHandle").and_then(Value::as_str).unwrap_or_default();
                if i > 0 {
                    delete.push(',');
                }
                delete.push_str(&format!("{{\"Id\":\"d{i}\",\"ReceiptHandle\":{}}}", quoted(handle)));
                self.ready.push_back(Received { stamp_ns: stamp_of(body), len: body.len() });
            }
            delete.push_str("]}");
            if !messages.is_empty() {
                self.http.call("DeleteMessageBatch", delete.as_bytes()).await?;
            }
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
    fn queue_names_fit_sqs() {
        let t = Topology { name: "bench.flow-1/x".repeat(10), layout: Layout::Shared, durable: true };
        let n = queue_name(&t);
        assert!(n.len() <= 80 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
