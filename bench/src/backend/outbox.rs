//! The coalescing writer the lean clients share (AMQP, STOMP, STOMP and MQTT over WebSocket): callers
//! append encoded frames to a buffer, and one writer task writes whatever accumulated while it
//! was busy — many messages per `write` under load, one per `write` when idle, never a timer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, bail};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A producer waits for the writer once this many bytes are queued.
const OUTBOX_LIMIT: usize = 1 << 20;
/// How long a flush may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes waiting for the writer task.
pub(crate) struct Outbox {
    buf: Mutex<Vec<u8>>,
    wake_writer: Notify,
    drained: Notify,
    queued: AtomicU64,
    written: AtomicU64,
    failed: Mutex<Option<String>>,
    stopping: AtomicBool,
}

impl Outbox {
    /// An outbox and its writer task on `wr`.
    pub(crate) fn start<W>(wr: W) -> (Arc<Self>, JoinHandle<()>)
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let outbox = Arc::new(Self {
            buf: Mutex::new(Vec::with_capacity(64 * 1024)),
            wake_writer: Notify::new(),
            drained: Notify::new(),
            queued: AtomicU64::new(0),
            written: AtomicU64::new(0),
            failed: Mutex::new(None),
            stopping: AtomicBool::new(false),
        });
        let writer = tokio::spawn(Arc::clone(&outbox).write_loop(wr));
        (outbox, writer)
    }

    /// The write error that stopped the writer, if any.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failed.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Appends without waiting (acks from a reader task, which must never block on the writer).
    pub(crate) fn push_now(&self, encode: impl FnOnce(&mut Vec<u8>)) {
        {
            let mut buf = self.buf.lock().unwrap_or_else(PoisonError::into_inner);
            let before = buf.len();
            encode(&mut buf);
            self.queued.fetch_add((buf.len() - before) as u64, Ordering::Release);
        }
        self.wake_writer.notify_one();
    }

    /// Appends with `encode`, waiting first while more than [`OUTBOX_LIMIT`] bytes are queued.
    pub(crate) async fn push(&self, encode: impl FnOnce(&mut Vec<u8>)) -> anyhow::Result<()> {
        let mut encode = Some(encode);
        loop {
            let drained = self.drained.notified();
            if let Some(err) = self.failure() {
                bail!("writing to the broker: {err}");
            }
            {
                let mut buf = self.buf.lock().unwrap_or_else(PoisonError::into_inner);
                if buf.len() < OUTBOX_LIMIT
                    && let Some(f) = encode.take()
                {
                    let before = buf.len();
                    f(&mut buf);
                    self.queued.fetch_add((buf.len() - before) as u64, Ordering::Release);
                }
            }
            if encode.is_none() {
                self.wake_writer.notify_one();
                return Ok(());
            }
            drained.await;
        }
    }

    /// Waits until everything queued so far has been written.
    pub(crate) async fn flush(&self) -> anyhow::Result<()> {
        let target = self.queued.load(Ordering::Acquire);
        tokio::time::timeout(TIMEOUT, async {
            loop {
                let drained = self.drained.notified();
                if let Some(err) = self.failure() {
                    bail!("writing to the broker: {err}");
                }
                if self.written.load(Ordering::Acquire) >= target {
                    return Ok(());
                }
                drained.await;
            }
        })
        .await
        .map_err(|_| anyhow!("the broker did not take our writes within {TIMEOUT:?}"))?
    }

    async fn write_loop<W>(self: Arc<Self>, mut wr: W)
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let mut spare = Vec::with_capacity(64 * 1024);
        loop {
            {
                let mut buf = self.buf.lock().unwrap_or_else(PoisonError::into_inner);
                std::mem::swap(&mut *buf, &mut spare);
            }
            if spare.is_empty() {
                if self.stopping.load(Ordering::Acquire) {
                    break;
                }
                self.wake_writer.notified().await;
                continue;
            }
            if let Err(err) = wr.write_all(&spare).await {
                self.failed.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(err.to_string());
                self.drained.notify_waiters();
                break;
            }
            self.written.fetch_add(spare.len() as u64, Ordering::Release);
            spare.clear();
            self.drained.notify_waiters();
        }
        let _ = wr.shutdown().await;
    }

    /// Stops the writer task, which shuts the socket down.
    pub(crate) async fn stop(&self, writer: JoinHandle<()>) {
        self.stopping.store(true, Ordering::Release);
        self.wake_writer.notify_one();
        let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    }
}
