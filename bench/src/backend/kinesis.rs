//! Amazon Kinesis Data Streams backend: Kinesis JSON 1.1 (`X-Amz-Target: Kinesis_20131202.*`)
//! over plain HTTP/1.1 keep-alive connections, on a minimal client of our own (no TLS, no SDK),
//! so that the load generator spends its CPU on records, not on a client stack.
//!
//! - `declare`: `CreateStream` (provisioned, `--shards` shards, `StreamModeDetails`), then
//!   waits for `ACTIVE`. `teardown`: `DeleteStream` with `EnforceConsumerDeletion`.
//! - Producers batch: every `--batch` payloads (1–500, and at most ~5 MiB of data) go out as one
//!   `PutRecords`; a 200 means the broker has the records on disk, so each record without an
//!   `ErrorCode` counts as confirmed and each failed one as nacked. One request in flight per
//!   producer; use several producers for parallel requests. Partition keys vary per record,
//!   so records spread over the shards. Use `--batch 1` for latency runs.
//! - Consumers: `ListShards`, then one `TRIM_HORIZON` iterator per shard they read and a
//!   `GetRecords` loop (up to 10,000 records per call) round-robin over those shards; an empty
//!   answer backs off 5 ms. Shared layout: consumer `i` of `M` reads the shards `s` with
//!   `s % M == i`; fan-out: every consumer reads every shard (Kinesis readers each see every
//!   record, so the stream itself is the fan-out).
//! - Data blobs are base64 in JSON. Only the first 12 base64 characters of a record are decoded
//!   (they hold the 8-byte send stamp); the length comes from the base64 length.
//!
//! URL: `http://host[:port]` (the broker's `[aws]` listener).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Backend, ConsumeSettings, Consumer, Layout, Producer, PublishSettings, Topology, put_decimal};
use crate::stats::{Counters, Received, STAMP_LEN};

/// Kinesis' limit on records per `PutRecords`.
pub const MAX_BATCH: usize = 500;
/// Data bytes per `PutRecords` we stay under (Kinesis allows 5 MiB including keys).
const MAX_BATCH_BYTES: usize = 5 * 1024 * 1024 - 64 * 1024;
/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Back-off after a `GetRecords` that returned nothing.
const EMPTY_POLL_BACKOFF: Duration = Duration::from_millis(5);

/// A Kinesis endpoint at one address.
#[derive(Debug)]
pub struct KinesisBackend {
    /// `host:port`.
    addr: String,
    /// Records per `PutRecords`.
    batch: usize,
    /// Shards of each created stream.
    shards: u32,
    /// Consumers of a run (the shared layout splits the shards between them).
    consumers: usize,
}

impl KinesisBackend {
    /// Parses `http://host[:port]`; `batch` records per `PutRecords` (clamped to 1–500),
    /// `shards` per stream, `consumers` of the run.
    pub fn new(url: &str, batch: usize, shards: u32, consumers: usize) -> anyhow::Result<Self> {
        let rest =
            url.strip_prefix("http://").ok_or_else(|| anyhow!("Kinesis URL must start with http:// ({url:?})"))?;
        let hostport = rest.split('/').next().unwrap_or_default();
        if hostport.is_empty() {
            bail!("no host in Kinesis URL {url:?}");
        }
        if !(1..=500).contains(&shards) {
            bail!("--shards must be 1–500, got {shards}");
        }
        let addr = if hostport.contains(':') { hostport.to_owned() } else { format!("{hostport}:80") };
        Ok(Self { addr, batch: batch.clamp(1, MAX_BATCH), shards, consumers: consumers.max(1) })
    }

    async fn connect(&self) -> anyhow::Result<Http> {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| anyhow!("connecting to {} timed out", self.addr))?
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        Ok(Http {
            stream,
            host: self.addr.clone(),
            buf: Vec::with_capacity(256 * 1024),
            out: Vec::with_capacity(64 * 1024),
            scanned: 0,
        })
    }
}

/// The stream name of a topology (Kinesis' alphabet: letters, digits, `_`, `.`, `-`).
fn stream_name(topology: &Topology) -> String {
    let mut n: String = topology
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' })
        .collect();
    n.truncate(128);
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
    /// How much of `buf` was already searched for the end of the head.
    scanned: usize,
}

impl Http {
    /// Posts a JSON 1.1 `action` and returns the response body; a non-200 is an error.
    async fn call(&mut self, action: &str, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        tokio::time::timeout(TIMEOUT, self.exchange(action, body))
            .await
            .map_err(|_| anyhow!("{action}: no answer within {TIMEOUT:?}"))?
    }

    async fn exchange(&mut self, action: &str, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.out.clear();
        self.out.extend_from_slice(b"POST / HTTP/1.1\r\nHost: ");
        self.out.extend_from_slice(self.host.as_bytes());
        self.out.extend_from_slice(b"\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: Kinesis_20131202.");
        self.out.extend_from_slice(action.as_bytes());
        self.out.extend_from_slice(format!("\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
        // Small bodies go out with the head in one write; big ones are written separately
        // rather than copied.
        if body.len() <= 16 * 1024 {
            self.out.extend_from_slice(body);
            self.stream.write_all(&self.out).await?;
        } else {
            self.stream.write_all(&self.out).await?;
            self.stream.write_all(body).await?;
        }
        let head_end = loop {
            let from = self.scanned.saturating_sub(3);
            if let Some(i) = self.buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
                break from + i + 4;
            }
            self.scanned = self.buf.len();
            self.fill().await?;
        };
        self.scanned = 0;
        let head = std::str::from_utf8(&self.buf[..head_end]).context("response head is not UTF-8")?;
        let status: u16 =
            head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| anyhow!("bad status line"))?;
        let mut length = None;
        for line in head.split("\r\n").skip(1) {
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    bail!("chunked responses are not supported by loadgen's Kinesis client");
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
        let grow = (start / 2).max(64 * 1024);
        self.buf.resize(start + grow, 0);
        let n = self.stream.read(&mut self.buf[start..]).await;
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(start);
                return Err(e.into());
            }
        };
        self.buf.truncate(start + n);
        if n == 0 {
            bail!("the broker closed the connection");
        }
        Ok(())
    }
}

/// A JSON string literal.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Appends the standard, padded base64 of `data` to `out`.
fn base64_into(out: &mut Vec<u8>, data: &[u8]) {
    out.reserve(data.len().div_ceil(3) * 4);
    let mut chunks = data.chunks_exact(3);
    for c in &mut chunks {
        let n = (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]);
        out.extend_from_slice(&[
            B64[(n >> 18) as usize & 63],
            B64[(n >> 12) as usize & 63],
            B64[(n >> 6) as usize & 63],
            B64[n as usize & 63],
        ]);
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.extend_from_slice(&[B64[(n >> 18) as usize & 63], B64[(n >> 12) as usize & 63], b'=', b'=']);
        }
        [a, b] => {
            let n = (u32::from(a) << 16) | (u32::from(b) << 8);
            out.extend_from_slice(&[
                B64[(n >> 18) as usize & 63],
                B64[(n >> 12) as usize & 63],
                B64[(n >> 6) as usize & 63],
                b'=',
            ]);
        }
        _ => {}
    }
}

/// The value of one base64 character.
fn b64_value(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    } as u32)
}

/// The send stamp at the start of a base64 blob (its first 12 characters = 9 bytes).
fn stamp_of_base64(data: &str) -> Option<u64> {
    let head = data.as_bytes().get(..12)?;
    let mut bytes = [0u8; 9];
    for (i, quad) in head.chunks_exact(4).enumerate() {
        let mut n = 0u32;
        for &c in quad {
            // Padding (an 8-byte record ends in `=`) stands for zero bits here.
            n = (n << 6) | if c == b'=' { 0 } else { b64_value(c)? };
        }
        bytes[i * 3] = (n >> 16) as u8;
        bytes[i * 3 + 1] = (n >> 8) as u8;
        bytes[i * 3 + 2] = n as u8;
    }
    crate::stats::read_stamp(&bytes[..STAMP_LEN])
}

/// The decoded length of a padded base64 blob.
fn decoded_len(data: &str) -> usize {
    let pad = data.bytes().rev().take_while(|&c| c == b'=').count();
    (data.len() / 4 * 3).saturating_sub(pad)
}

impl Backend for KinesisBackend {
    type Producer = KinesisProducer;
    type Consumer = KinesisConsumer;
    type Idle = TcpStream;

    async fn declare(&self, topology: &Topology) -> anyhow::Result<()> {
        let mut http = self.connect().await?;
        let name = quoted(&stream_name(topology));
        let body = format!(
            "{{\"StreamName\":{name},\"ShardCount\":{},\"StreamModeDetails\":{{\"StreamMode\":\"PROVISIONED\"}}}}",
            self.shards
        );
        http.call("CreateStream", body.as_bytes()).await?;
        let describe = format!("{{\"StreamName\":{name}}}");
        for _ in 0..200 {
            let answer = http.call("DescribeStreamSummary", describe.as_bytes()).await?;
            let v: serde_json::Value = serde_json::from_slice(&answer).context("DescribeStreamSummary answer")?;
            if v["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE" {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("stream {name} did not become ACTIVE within 10 s")
    }

    async fn producer(&self, topology: &Topology, _settings: PublishSettings) -> anyhow::Result<KinesisProducer> {
        let prefix = format!("{{\"StreamName\":{},\"Records\":[", quoted(&stream_name(topology)));
        let mut body = Vec::with_capacity(prefix.len() + self.batch * 1500);
        body.extend_from_slice(prefix.as_bytes());
        Ok(KinesisProducer {
            http: self.connect().await?,
            prefix_len: prefix.len(),
            body,
            records: 0,
            data_bytes: 0,
            batch: self.batch,
            next_key: 0,
        })
    }

    async fn consumer(
        &self,
        topology: &Topology,
        index: usize,
        _s: ConsumeSettings,
    ) -> anyhow::Result<KinesisConsumer> {
        let mut http = self.connect().await?;
        let name = stream_name(topology);
        let answer = http.call("ListShards", format!("{{\"StreamName\":{}}}", quoted(&name)).as_bytes()).await?;
        let list: ListShardsOut = serde_json::from_slice(&answer).context("ListShards answer")?;
        let readers = match topology.layout {
            Layout::Shared => self.consumers,
            Layout::Fanout(_) => 1,
        };
        let mut iterators = Vec::new();
        for (i, shard) in list.shards.iter().enumerate() {
            if readers > 1 && i % readers != index % readers {
                continue;
            }
            let req = format!(
                "{{\"StreamName\":{},\"ShardId\":{},\"ShardIteratorType\":\"TRIM_HORIZON\"}}",
                quoted(&name),
                quoted(&shard.shard_id)
            );
            let answer = http.call("GetShardIterator", req.as_bytes()).await?;
            let it: IteratorOut = serde_json::from_slice(&answer).context("GetShardIterator answer")?;
            iterators.push(it.shard_iterator);
        }
        Ok(KinesisConsumer { http, iterators, next: 0, ready: VecDeque::new(), empty_in_a_row: 0 })
    }

    async fn teardown(&self, topology: &Topology) -> anyhow::Result<()> {
        let mut http = self.connect().await?;
        let body = format!("{{\"StreamName\":{},\"EnforceConsumerDeletion\":true}}", quoted(&stream_name(topology)));
        http.call("DeleteStream", body.as_bytes()).await?;
        Ok(())
    }

    async fn idle_connection(&self) -> anyhow::Result<TcpStream> {
        Ok(TcpStream::connect(&self.addr).await?)
    }
}

#[derive(Deserialize)]
struct ListShardsOut {
    #[serde(rename = "Shards")]
    shards: Vec<ShardOut>,
}

#[derive(Deserialize)]
struct ShardOut {
    #[serde(rename = "ShardId")]
    shard_id: String,
}

#[derive(Deserialize)]
struct IteratorOut {
    #[serde(rename = "ShardIterator")]
    shard_iterator: String,
}

#[derive(Deserialize)]
struct PutRecordsOut {
    #[serde(rename = "FailedRecordCount", default)]
    failed: u64,
}

#[derive(Deserialize)]
struct GetRecordsOut<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<RecordOut<'a>>,
    #[serde(rename = "NextShardIterator")]
    next: Option<String>,
}

#[derive(Deserialize)]
struct RecordOut<'a> {
    #[serde(rename = "Data", borrow)]
    data: Cow<'a, str>,
}

/// A producer: one connection, one `PutRecords` body being filled.
#[derive(Debug)]
pub struct KinesisProducer {
    http: Http,
    /// Length of `{"StreamName":…,"Records":[` at the start of `body`.
    prefix_len: usize,
    /// The request body so far (records separated by commas).
    body: Vec<u8>,
    /// Records in `body`.
    records: usize,
    /// Data bytes in `body` (before base64).
    data_bytes: usize,
    /// Records per request.
    batch: usize,
    next_key: u64,
}

impl KinesisProducer {
    async fn put_batch(&mut self, counters: &Counters) -> anyhow::Result<()> {
        if self.records == 0 {
            return Ok(());
        }
        self.body.extend_from_slice(b"]}");
        let n = self.records as u64;
        let answer = self.http.call("PutRecords", &self.body).await;
        self.body.truncate(self.prefix_len);
        self.records = 0;
        self.data_bytes = 0;
        let out: PutRecordsOut = serde_json::from_slice(&answer?).context("PutRecords answer")?;
        if out.failed > 0 {
            counters.nacked.fetch_add(out.failed, Ordering::Relaxed);
        }
        counters.confirmed.fetch_add(n.saturating_sub(out.failed), Ordering::Relaxed);
        Ok(())
    }
}

impl Producer for KinesisProducer {
    async fn send(&mut self, payload: &[u8], counters: &Counters) -> anyhow::Result<()> {
        if self.records > 0 && self.data_bytes + payload.len() > MAX_BATCH_BYTES {
            self.put_batch(counters).await?;
        }
        if self.records > 0 {
            self.body.push(b',');
        }
        self.body.extend_from_slice(b"{\"Data\":\"");
        base64_into(&mut self.body, payload);
        self.body.extend_from_slice(b"\",\"PartitionKey\":\"k");
        put_decimal(&mut self.body, self.next_key);
        self.body.extend_from_slice(b"\"}");
        self.next_key = self.next_key.wrapping_add(1);
        self.records += 1;
        self.data_bytes += payload.len() + 21;
        if self.records >= self.batch {
            self.put_batch(counters).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, counters: &Counters) -> anyhow::Result<()> {
        self.put_batch(counters).await
    }

    async fn close(self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A consumer: `GetRecords` round-robin over its shards' iterators.
#[derive(Debug)]
pub struct KinesisConsumer {
    http: Http,
    /// One iterator per shard read (`None` once a shard is closed and read to its end).
    iterators: Vec<String>,
    /// The shard polled next.
    next: usize,
    ready: VecDeque<Received>,
    /// `GetRecords` calls in a row that returned nothing.
    empty_in_a_row: usize,
}

impl Consumer for KinesisConsumer {
    async fn recv(&mut self) -> anyhow::Result<Option<Received>> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Ok(Some(r));
            }
            if self.iterators.is_empty() {
                // No shard to read (more consumers than shards): wait to be dropped.
                std::future::pending::<()>().await;
            }
            let i = self.next % self.iterators.len();
            self.next = self.next.wrapping_add(1);
            let req = format!("{{\"ShardIterator\":{},\"Limit\":10000}}", quoted(&self.iterators[i]));
            let answer = self.http.call("GetRecords", req.as_bytes()).await?;
            let out: GetRecordsOut<'_> = serde_json::from_slice(&answer).context("GetRecords answer")?;
            for r in &out.records {
                self.ready.push_back(Received { stamp_ns: stamp_of_base64(&r.data), len: decoded_len(&r.data) });
            }
            match out.next {
                Some(next) => self.iterators[i] = next,
                None => {
                    self.iterators.swap_remove(i);
                }
            }
            if out.records.is_empty() {
                self.empty_in_a_row += 1;
                if self.empty_in_a_row >= self.iterators.len().max(1) {
                    self.empty_in_a_row = 0;
                    tokio::time::sleep(EMPTY_POLL_BACKOFF).await;
                }
            } else {
                self.empty_in_a_row = 0;
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
    fn base64_round_trips_the_stamp_and_length() {
        for len in [8usize, 9, 10, 11, 1024, 1025] {
            let mut payload = vec![0xa5u8; len];
            crate::stats::stamp(&mut payload, 0x0123_4567_89ab_cdef);
            let mut out = Vec::new();
            base64_into(&mut out, &payload);
            let s = std::str::from_utf8(&out).unwrap();
            assert_eq!(s.len(), len.div_ceil(3) * 4);
            assert_eq!(decoded_len(s), len);
            assert_eq!(stamp_of_base64(s), Some(0x0123_4567_89ab_cdef), "len {len}");
        }
        let mut out = Vec::new();
        base64_into(&mut out, b"any carnal pleas");
        assert_eq!(out, b"YW55IGNhcm5hbCBwbGVhcw==");
    }

    #[test]
    fn parses_urls() {
        let b = KinesisBackend::new("http://127.0.0.1:4566", 1000, 1, 1).unwrap();
        assert_eq!((b.addr.as_str(), b.batch), ("127.0.0.1:4566", MAX_BATCH));
        assert!(KinesisBackend::new("https://x", 1, 1, 1).is_err());
        assert!(KinesisBackend::new("http://x", 1, 0, 1).is_err());
    }
}
