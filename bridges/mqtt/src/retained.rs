//! Retained messages: one store per vhost, in memory, written to a file the bridge
//! owns under the data directory (`<data_dir>/mqtt/retained-<vhost hex>.bin`).
//!
//! The file is rewritten whole and atomically (temporary file, fsync, rename, fsync
//! of the directory) by one writer task per store, which coalesces bursts of changes
//! into one write. Every change gets a generation number; [`RetainedStore::durable`]
//! watches the newest generation on disk, so a PUBACK for a retained publish can wait
//! until the retained copy is durable, as it waits for the message log.
//!
//! File format: the magic `SYMQTTR1`, then per message `u64` store time (ms since the
//! epoch), `u32` length and the message as an MQTT 5 PUBLISH packet, then a CRC32C of
//! everything before it. A file that fails the check is ignored with an error in the
//! log (never half-loaded).
//!
//! Invariant worth naming: the store holds at most `max` topics; a retained publish for
//! a new topic beyond that is routed but not kept.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Buf, BufMut, BytesMut};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use crate::codec::{self, Packet, Protocol, Publish, QoS};
use crate::topic;

const MAGIC: &[u8; 8] = b"SYMQTTR1";

/// One retained message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    /// The PUBLISH as received (topic resolved, packet id and DUP cleared).
    pub publish: Publish,
    /// When it was stored, ms since the epoch (for Message Expiry Interval).
    pub stored_at: u64,
}

impl Retained {
    /// Seconds of life left at `now` (`None`: it never expires); `Err` once expired.
    fn remaining(&self, now: u64) -> Result<Option<u32>, ()> {
        match self.publish.properties.message_expiry_interval {
            None => Ok(None),
            Some(secs) => {
                let end = self.stored_at.saturating_add(u64::from(secs) * 1000);
                if now >= end { Err(()) } else { Ok(Some((end - now).div_ceil(1000) as u32)) }
            }
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    messages: BTreeMap<String, Retained>,
    generation: u64,
}

/// The retained messages of one vhost.
#[derive(Debug)]
pub struct RetainedStore {
    inner: Mutex<Inner>,
    path: Option<PathBuf>,
    max: usize,
    durable: watch::Sender<u64>,
    /// Wakes the writer task; an `Arc` so the task can wait without keeping the store alive.
    dirty: Arc<Notify>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl RetainedStore {
    /// Open the store kept in `path` (`None`: memory only), holding at most `max` topics,
    /// and start its writer task.
    pub fn open(path: Option<PathBuf>, max: usize) -> Arc<RetainedStore> {
        let messages = match &path {
            Some(p) => match load(p) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(path = %p.display(), error = %e, "retained messages not loaded");
                    BTreeMap::new()
                }
            },
            None => BTreeMap::new(),
        };
        if !messages.is_empty() {
            tracing::info!(count = messages.len(), "retained messages loaded");
        }
        let (durable, _) = watch::channel(0);
        let store = Arc::new(RetainedStore {
            inner: Mutex::new(Inner { messages, generation: 0 }),
            path,
            max,
            durable,
            dirty: Arc::new(Notify::new()),
        });
        if store.path.is_some() {
            let weak = Arc::downgrade(&store);
            let dirty = Arc::clone(&store.dirty);
            tokio::spawn(async move {
                loop {
                    dirty.notified().await;
                    let Some(s) = weak.upgrade() else { return };
                    s.flush().await;
                }
            });
        }
        store
    }

    /// Store (or, with an empty payload, clear) the retained message of `p.topic`.
    /// Returns the generation to wait for with [`RetainedStore::durable`]; `None` when
    /// nothing changed on disk (memory-only store, or the store is full).
    pub fn set(&self, p: &Publish) -> Option<u64> {
        let mut inner = self.inner.lock();
        if p.payload.is_empty() {
            inner.messages.remove(&p.topic)?;
        } else {
            if !inner.messages.contains_key(&p.topic) && inner.messages.len() >= self.max {
                tracing::warn!(topic = %p.topic, max = self.max, "retained message store full; message not retained");
                return None;
            }
            let mut publish = p.clone();
            publish.dup = false;
            publish.packet_id = None;
            publish.retain = true;
            publish.properties.topic_alias = None;
            publish.properties.subscription_identifiers.clear();
            inner.messages.insert(p.topic.clone(), Retained { publish, stored_at: now_ms() });
        }
        inner.generation += 1;
        let generation = inner.generation;
        drop(inner);
        self.path.as_ref()?;
        self.dirty.notify_one();
        Some(generation)
    }

    /// The unexpired retained messages whose topics match `filter`, with their
    /// remaining Message Expiry Interval filled in.
    pub fn matching(&self, filter: &str) -> Vec<Publish> {
        let now = now_ms();
        let inner = self.inner.lock();
        let mut out = Vec::new();
        let mut visit = |r: &Retained| {
            if let Ok(left) = r.remaining(now) {
                let mut p = r.publish.clone();
                p.properties.message_expiry_interval = left;
                out.push(p);
            }
        };
        if topic::has_wildcard(filter) {
            for (t, r) in &inner.messages {
                if topic::matches(filter, t) {
                    visit(r);
                }
            }
        } else if let Some(r) = inner.messages.get(filter) {
            visit(r);
        }
        out
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.inner.lock().messages.len()
    }

    /// True when no message is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A watch of the newest generation written to disk.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    /// Write the current contents if they changed since the last write.
    async fn flush(self: &Arc<Self>) {
        let Some(path) = self.path.clone() else { return };
        let (generation, bytes) = {
            let inner = self.inner.lock();
            if inner.generation <= *self.durable.borrow() {
                return;
            }
            (inner.generation, serialize(&inner.messages))
        };
        let result = tokio::task::spawn_blocking(move || write_atomically(&path, &bytes)).await;
        match result {
            Ok(Ok(())) => {
                self.durable.send_replace(generation);
            }
            Ok(Err(e)) => tracing::error!(error = %e, "cannot write retained messages"),
            Err(e) => tracing::error!(error = %e, "retained message writer failed"),
        }
        // Changes made while writing are written by the next turn.
        if self.inner.lock().generation > generation {
            self.dirty.notify_one();
        }
    }
}

fn serialize(messages: &BTreeMap<String, Retained>) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.extend_from_slice(MAGIC);
    let mut packet = BytesMut::new();
    for r in messages.values() {
        packet.clear();
        let mut p = r.publish.clone();
        if p.qos != QoS::AtMostOnce {
            p.packet_id = Some(1);
        }
        Packet::Publish(Box::new(p)).encode(Protocol::V5, &mut packet);
        out.put_u64(r.stored_at);
        out.put_u32(packet.len() as u32);
        out.extend_from_slice(&packet);
    }
    let crc = crc32c::crc32c(&out);
    out.put_u32(crc);
    out.to_vec()
}

/// Why the retained file could not be read.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt file: {0}")]
    Corrupt(&'static str),
}

fn load(path: &Path) -> Result<BTreeMap<String, Retained>, LoadError> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e.into()),
    };
    if data.len() < MAGIC.len() + 4 || &data[..MAGIC.len()] != MAGIC {
        return Err(LoadError::Corrupt("bad magic"));
    }
    let (body, crc) = data.split_at(data.len() - 4);
    let crc = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(body) != crc {
        return Err(LoadError::Corrupt("checksum mismatch"));
    }
    let mut rest = &body[MAGIC.len()..];
    let mut out = BTreeMap::new();
    while !rest.is_empty() {
        if rest.len() < 12 {
            return Err(LoadError::Corrupt("truncated record"));
        }
        let stored_at = rest.get_u64();
        let len = rest.get_u32() as usize;
        if rest.len() < len {
            return Err(LoadError::Corrupt("truncated record"));
        }
        let mut packet = BytesMut::from(&rest[..len]);
        rest = &rest[len..];
        match codec::decode(&mut packet, Some(Protocol::V5), usize::MAX) {
            Ok(Some(Packet::Publish(p))) => {
                let mut p = *p;
                p.packet_id = None;
                out.insert(p.topic.clone(), Retained { publish: p, stored_at });
            }
            _ => return Err(LoadError::Corrupt("bad record")),
        }
    }
    Ok(out)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The file of `vhost`'s retained messages under `data_dir`.
pub fn path_for(data_dir: &Path, vhost: &str) -> PathBuf {
    let hex: String = vhost.bytes().map(|b| format!("{b:02x}")).collect();
    data_dir.join("mqtt").join(format!("retained-{hex}.bin"))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::codec::Properties;

    fn publish(topic: &str, payload: &'static [u8]) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: topic.into(),
            packet_id: Some(7),
            properties: Properties { content_type: Some("t".into()), ..Properties::default() },
            payload: Bytes::from_static(payload),
        }
    }

    #[tokio::test]
    async fn retained_messages_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_for(dir.path(), "/");
        let store = RetainedStore::open(Some(path.clone()), 10);
        store.set(&publish("a/b", b"1"));
        store.set(&publish("a/c", b"2"));
        let g = store.set(&publish("a/c", b"")).expect("cleared");
        let mut durable = store.durable();
        durable.wait_for(|d| *d >= g).await.expect("written");
        assert_eq!(store.matching("a/+").len(), 1);
        let reopened = RetainedStore::open(Some(path), 10);
        let got = reopened.matching("#");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].topic, "a/b");
        assert_eq!(got[0].payload, Bytes::from_static(b"1"));
        assert_eq!(got[0].packet_id, None);
        assert_eq!(got[0].properties.content_type.as_deref(), Some("t"));
    }

    #[tokio::test]
    async fn the_store_is_bounded_and_dollar_topics_hide_from_wildcards() {
        let store = RetainedStore::open(None, 2);
        store.set(&publish("$SYS/x", b"1"));
        store.set(&publish("b", b"2"));
        store.set(&publish("c", b"3"));
        assert_eq!(store.len(), 2);
        assert_eq!(store.matching("#").len(), 1);
        assert_eq!(store.matching("$SYS/#").len(), 1);
    }

    #[test]
    fn a_corrupt_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.bin");
        std::fs::write(&path, b"SYMQTTR1garbage").expect("write");
        assert!(load(&path).is_err());
    }
}
