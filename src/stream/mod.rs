//! Streams: append-only, sharded, replayable logs with Kinesis Data Streams semantics.
//!
//! - [`state`]: the deterministic state machine (shards, hash-key ranges, split/merge/rescale
//!   lineage, the record index, retention, named reader offsets, consumers, tags). Time is an
//!   argument; storage effects are returned.
//! - [`log`]: the durable per-shard segment log (CRC32C records, group-commit fsync, torn-tail
//!   recovery, retention by deleting whole segments).
//! - [`meta`]: the per-vhost metadata file (written atomically).
//! - [`hashkey`], [`seqno`]: MD5 hash keys and Kinesis-like sequence numbers.
//! - [`kpl`]: splitting KPL-aggregated records for other protocols.
//! - [`amqp`]: stream queues (`x-queue-type: stream`): feeding, `x-stream-offset` consumers.
//! - this file: [`Stream`] (the state machine behind a lock, wired to the log) and [`Streams`]
//!   (the streams of one vhost).
//!
//! # Reading a stream live (for tails: WebSocket, AMQP stream consumers, SubscribeToShard)
//!
//! ```ignore
//! let stream = vhost.stream("clicks").ok_or(..)?;
//! let mut wake = stream.subscribe();                 // before the first read: no lost wake-up
//! let mut next = stream.start(shard, StartPosition::TrimHorizon)?;
//! loop {
//!     let batch = stream.read(shard, next, 500, 1 << 20, stream.now())?;
//!     next = batch.next;
//!     for r in &batch.records { /* deliver r */ }
//!     if batch.end_of_shard { /* go on with batch.children */ break; }
//!     if batch.records.is_empty() && wake.changed().await.is_err() { break; } // stream gone
//! }
//! ```
//!
//! [`Stream::subscribe`] is a `watch` that changes whenever records become readable (after
//! their fsync), when the shard layout changes, and when the stream is deleted
//! ([`Stream::is_deleted`]). Reads never block and never remove anything; a reader's position
//! is just the counter to read from next ([`ReadBatch::next`]).

pub mod amqp;
pub mod error;
pub mod hashkey;
pub mod kpl;
pub mod log;
pub mod meta;
pub mod seqno;
pub mod state;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, oneshot, watch};

use crate::time::{Millis, now_ms};
pub use error::StreamError;
pub use hashkey::HashKey;
use log::{StreamLog, Write, encode_record, record_len, scan_shard};
use meta::MetaFile;
pub use seqno::SequenceNumber;
use state::{Effect, Placement};
pub use state::{ShardMeta, StartPosition, StreamMode, StreamSettings, StreamState};

/// Longest partition key (Kinesis: 256 characters).
pub const MAX_PARTITION_KEY: usize = 256;

/// A record to append.
#[derive(Debug, Clone, Default)]
pub struct NewRecord {
    /// Partition key (1–256 characters); its MD5 picks the shard unless `explicit_hash_key` is set.
    pub partition_key: String,
    /// Place by this hash key instead.
    pub explicit_hash_key: Option<HashKey>,
    /// The data.
    pub data: Bytes,
    /// Front-end metadata kept with the record (e.g. encoded AMQP properties), empty if none.
    pub meta: Bytes,
}

/// An appended record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Its sequence number.
    pub sequence: SequenceNumber,
    /// Its arrival timestamp.
    pub arrival: Millis,
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    /// Sequence number.
    pub sequence: SequenceNumber,
    /// Arrival timestamp.
    pub arrival: Millis,
    /// Partition key.
    pub partition_key: String,
    /// Hash key it was placed by.
    pub hash_key: HashKey,
    /// Data.
    pub data: Bytes,
    /// Front-end metadata (empty if none).
    pub meta: Bytes,
}

/// The answer to [`Stream::read`].
#[derive(Debug, Clone, Default)]
pub struct ReadBatch {
    /// Records in order.
    pub records: Vec<StreamRecord>,
    /// Counter to read from next.
    pub next: u64,
    /// The shard is closed and fully read; read `children` next.
    pub end_of_shard: bool,
    /// The shards that continue this one (set with `end_of_shard`).
    pub children: Vec<ShardMeta>,
    /// How far behind the newest record this read is, in milliseconds (0 at the tip).
    pub millis_behind_latest: u64,
}

/// One stream at runtime.
pub struct Stream {
    name: String,
    dir: PathBuf,
    state: Mutex<StreamState>,
    log: StreamLog,
    /// Bumped whenever something becomes readable or the layout changes.
    changed: watch::Sender<u64>,
    /// Wakes the retention timer (settings changed, or deleted).
    timer: Notify,
    deleted: AtomicBool,
    registry: Weak<Registry>,
    /// The vhost's stream clock offset (see [`Streams::now`]).
    clock: Arc<AtomicU64>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Stream {
    /// Name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This stream's notion of now: the vhost's stream clock ([`Streams::now`]).
    pub fn now(&self) -> Millis {
        now_ms().saturating_add(self.clock.load(Ordering::Relaxed))
    }

    /// True once deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Look at the state (describe, list shards, ...).
    pub fn with_state<R>(&self, f: impl FnOnce(&StreamState) -> R) -> R {
        f(&self.state.lock())
    }

    /// Change the state (reshard, retention, tags, consumers, offsets, ...); on success the
    /// metadata is saved before this returns and readers are woken.
    pub fn update<R>(&self, f: impl FnOnce(&mut StreamState) -> Result<R, StreamError>) -> Result<R, StreamError> {
        if self.is_deleted() {
            return Err(StreamError::StreamNotFound(self.name.clone()));
        }
        let r = f(&mut self.state.lock())?;
        if let Some(reg) = self.registry.upgrade() {
            reg.save();
        }
        self.timer.notify_one();
        self.changed.send_modify(|n| *n += 1);
        Ok(r)
    }

    /// A watch that changes whenever records become readable, the layout changes, or the
    /// stream is deleted (see the module docs).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn shard_dir(&self, shard: u32) -> PathBuf {
        self.dir.join(format!("{shard:012}"))
    }

    /// Append records; each gets its own result (PutRecords reports per record). Returns once
    /// the accepted records are fsynced: only then may a client be told they are stored.
    pub async fn append(self: &Arc<Self>, records: Vec<NewRecord>, now: Millis) -> Vec<Result<Appended, StreamError>> {
        let mut results: Vec<Result<Placement, StreamError>> = Vec::with_capacity(records.len());
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.state.lock();
            if self.is_deleted() {
                return records.iter().map(|_| Err(StreamError::StreamNotFound(self.name.clone()))).collect();
            }
            let mut writes = Vec::with_capacity(records.len());
            let mut marks: BTreeMap<u32, u64> = BTreeMap::new();
            for r in &records {
                let hash = r.explicit_hash_key.unwrap_or_else(|| hashkey::hash_key(&r.partition_key));
                let len = record_len(&r.partition_key, &r.meta, &r.data);
                let Ok(len32) = u32::try_from(len) else {
                    results.push(Err(StreamError::Invalid("record too large".into())));
                    continue;
                };
                let placed = st.place(hash, len32, now);
                if let Ok(p) = &placed {
                    let bytes = encode_record(p.sequence.counter, p.arrival, hash, &r.partition_key, &r.meta, &r.data);
                    writes.push(Write {
                        dir: self.shard_dir(p.sequence.shard),
                        segment: p.segment,
                        offset: p.offset,
                        bytes,
                    });
                    marks.insert(p.sequence.shard, p.sequence.counter);
                }
                results.push(placed);
            }
            if writes.is_empty() {
                return results.into_iter().map(|r| r.map(appended)).collect();
            }
            let me = Arc::clone(self);
            // Sent under the state lock, so the writer sees appends in placement order.
            self.log.append(
                writes,
                Box::new(move |r| {
                    if r.is_ok() {
                        let mut st = me.state.lock();
                        for (shard, counter) in marks {
                            st.mark_durable(shard, counter);
                        }
                        drop(st);
                        me.changed.send_modify(|n| *n += 1);
                    }
                    let _ = tx.send(r);
                }),
            );
        }
        let stored = match rx.await {
            Ok(r) => r,
            Err(_) => Err("stream log writer stopped".to_string()),
        };
        results
            .into_iter()
            .map(|r| match (&stored, r) {
                (Ok(()), r) => r.map(appended),
                (Err(e), Ok(_)) => Err(StreamError::Storage(e.clone())),
                (Err(_), Err(e)) => Err(e),
            })
            .collect()
    }

    /// The counter a reader of `shard` starting at `start` reads from.
    pub fn start(&self, shard: u32, start: StartPosition) -> Result<u64, StreamError> {
        self.state.lock().start_counter(shard, start)
    }

    /// Read up to `max_records` records (about `max_bytes`, at least one) of `shard` from
    /// counter `from`. Never blocks on new data and never removes anything.
    pub fn read(
        &self,
        shard: u32,
        from: u64,
        max_records: usize,
        max_bytes: u64,
        now: Millis,
    ) -> Result<ReadBatch, StreamError> {
        if self.is_deleted() {
            return Err(StreamError::StreamNotFound(self.name.clone()));
        }
        let (loc, children) = {
            let st = self.state.lock();
            let loc = st.locate(shard, from, max_records, max_bytes)?;
            let children = if loc.end_of_shard { st.children(shard) } else { Vec::new() };
            (loc, children)
        };
        let dir = self.shard_dir(shard);
        let mut records = Vec::with_capacity(loc.entries.len());
        for e in &loc.entries {
            match self.log.read(&dir, e) {
                Ok(r) => records.push(StreamRecord {
                    sequence: SequenceNumber { counter: r.counter, shard },
                    arrival: r.arrival,
                    partition_key: r.partition_key,
                    hash_key: r.hash_key,
                    data: r.data,
                    meta: r.meta,
                }),
                // Dropped by retention between locating and reading: skip it.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    tracing::error!(stream = %self.name, shard, counter = e.counter, error = %err, "unreadable stream record skipped");
                }
            }
        }
        Ok(ReadBatch {
            records,
            next: loc.next,
            end_of_shard: loc.end_of_shard,
            children,
            millis_behind_latest: loc.next_arrival.map_or(0, |a| now.saturating_sub(a)),
        })
    }

    /// Apply retention as of `now` (the timer calls this; tests call it with any time).
    pub fn apply_retention(&self, now: Millis) {
        let fx = self.state.lock().tick(now);
        self.run_effects(fx);
    }

    fn run_effects(&self, fx: Vec<Effect>) {
        // Metadata first: it carries the counter floor, so a crash after the deletions can
        // never bring back a lower counter (and reuse sequence numbers) on recovery.
        if fx.contains(&Effect::SaveMeta)
            && let Some(reg) = self.registry.upgrade()
        {
            reg.save();
        }
        for e in fx {
            match e {
                Effect::DeleteSegment { shard, segment } => self.log.delete_segment(&self.shard_dir(shard), segment),
                Effect::DeleteShard(shard) => self.log.delete_dir(&self.shard_dir(shard)),
                Effect::SaveMeta => {}
            }
        }
    }

    fn spawn_timer(self: &Arc<Self>) {
        // The task holds the stream until it is deleted (the notify wakes it then).
        let s = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                if s.is_deleted() {
                    return;
                }
                let notified = s.timer.notified();
                let next = s.state.lock().next_deadline();
                // Re-check at least every minute: retention is coarse, and this bounds drift.
                // (A test moving the clock forward wakes this loop: see `Streams::advance_clock`.)
                let delay = next.map_or(60_000, |at| at.saturating_sub(s.now()).min(60_000));
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(delay)) => {}
                    _ = notified => {}
                }
                if s.is_deleted() {
                    return;
                }
                s.apply_retention(s.now());
            }
        });
    }
}

fn appended(p: Placement) -> Appended {
    Appended { sequence: p.sequence, arrival: p.arrival }
}

#[derive(Debug)]
struct Registry {
    vhost: String,
    /// `<data>/streams/<vhost hex>`; `None` when the vhost has no data directory.
    root: Option<PathBuf>,
    log: Option<StreamLog>,
    file: Option<MetaFile>,
    map: RwLock<BTreeMap<String, Arc<Stream>>>,
    save_lock: Mutex<()>,
    /// Milliseconds added to the wall clock (moved only by tests: [`Streams::advance_clock`]).
    clock: Arc<AtomicU64>,
}

impl Registry {
    /// Write every stream's metadata. A failure is logged; the next save includes the change.
    fn save(&self) {
        let Some(file) = &self.file else { return };
        let _guard = self.save_lock.lock();
        let metas: Vec<_> = self.map.read().values().map(|s| s.state.lock().meta()).collect();
        if let Err(e) = file.save(&metas) {
            tracing::error!(vhost = %self.vhost, error = %e, "cannot save stream metadata");
        }
    }
}

/// The streams of one vhost.
#[derive(Debug, Clone)]
pub struct Streams {
    reg: Arc<Registry>,
}

impl Streams {
    /// The streams of `vhost`, stored under `data_dir` (none: streams are unavailable).
    pub fn new(vhost: &str, data_dir: Option<&Path>) -> Streams {
        let root = data_dir.map(|d| {
            let hex: String = vhost.bytes().map(|b| format!("{b:02x}")).collect();
            d.join("streams").join(if hex.is_empty() { "_".to_string() } else { hex })
        });
        let log = match &root {
            Some(_) => match StreamLog::start(vhost) {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::error!(vhost, error = %e, "cannot start the stream log; streams unavailable");
                    None
                }
            },
            None => None,
        };
        let file = root.as_ref().map(|r| MetaFile::new(r.join("streams.json")));
        Streams {
            reg: Arc::new(Registry {
                vhost: vhost.to_string(),
                root,
                log,
                file,
                map: RwLock::new(BTreeMap::new()),
                save_lock: Mutex::new(()),
                clock: Arc::new(AtomicU64::new(0)),
            }),
        }
    }

    fn stream_dir(root: &Path, name: &str, incarnation: u64) -> PathBuf {
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        root.join(format!("{hex}-{incarnation:016x}"))
    }

    fn build(&self, state: StreamState) -> Result<Arc<Stream>, StreamError> {
        let (Some(root), Some(log)) = (&self.reg.root, &self.reg.log) else {
            return Err(StreamError::Storage("streams need a data directory".into()));
        };
        let dir = Self::stream_dir(root, state.name(), state.incarnation());
        let (changed, _) = watch::channel(0);
        Ok(Arc::new(Stream {
            name: state.name().to_string(),
            dir,
            state: Mutex::new(state),
            log: log.clone(),
            changed,
            timer: Notify::new(),
            deleted: AtomicBool::new(false),
            registry: Arc::downgrade(&self.reg),
            clock: Arc::clone(&self.reg.clock),
        }))
    }

    /// Recover every stored stream (at start-up, inside the runtime).
    pub fn load(&self) -> Result<usize, String> {
        let (Some(file), Some(root)) = (&self.reg.file, &self.reg.root) else { return Ok(0) };
        let metas = file.load()?;
        let mut n = 0;
        for m in metas {
            let mut state = StreamState::from_meta(m);
            let dir = Self::stream_dir(root, state.name(), state.incarnation());
            let mut records = 0usize;
            for shard in state.shards() {
                let scan = scan_shard(&dir.join(format!("{:012}", shard.index)))
                    .map_err(|e| format!("stream {} shard {}: {e}", state.name(), shard.index))?;
                records += scan.entries.len();
                for e in scan.entries {
                    state.restore_entry(shard.index, e);
                }
                state.seal_after_recovery(shard.index, scan.next_segment);
            }
            tracing::info!(vhost = %self.reg.vhost, stream = %state.name(), records, "stream recovered");
            let stream = self.build(state).map_err(|e| e.to_string())?;
            self.reg.map.write().insert(stream.name.clone(), Arc::clone(&stream));
            stream.apply_retention(self.now());
            stream.spawn_timer();
            n += 1;
        }
        self.reg.save();
        Ok(n)
    }

    /// Create a stream of `shard_count` shards.
    pub fn create(
        &self,
        name: &str,
        shard_count: u32,
        settings: StreamSettings,
        attributes: &[(&str, &str)],
        now: Millis,
    ) -> Result<Arc<Stream>, StreamError> {
        let mut state = StreamState::new(name, rand::random(), shard_count, settings, now)?;
        for (k, v) in attributes {
            state.set_attribute(k, v);
        }
        let stream = self.build(state)?;
        {
            let mut map = self.reg.map.write();
            if map.contains_key(name) {
                return Err(StreamError::StreamExists(name.to_string()));
            }
            map.insert(name.to_string(), Arc::clone(&stream));
        }
        self.reg.save();
        stream.spawn_timer();
        Ok(stream)
    }

    /// The streams' notion of now: the wall clock plus an offset that only tests move
    /// ([`Streams::advance_clock`]). Retention timers, appends and reads of every front-end
    /// use it, so a test can expire records without waiting.
    pub fn now(&self) -> Millis {
        now_ms().saturating_add(self.reg.clock.load(Ordering::Relaxed))
    }

    /// Move this vhost's stream clock forward by `ms` (tests: the Kinesis
    /// `SwitchyardAdvanceClock` action) and wake every retention timer, so records older than
    /// their retention as of the new time are dropped at once. Returns the new now.
    pub fn advance_clock(&self, ms: u64) -> Millis {
        self.reg.clock.fetch_add(ms, Ordering::Relaxed);
        for s in self.reg.map.read().values() {
            s.timer.notify_one();
        }
        self.now()
    }

    /// A stream by name.
    pub fn get(&self, name: &str) -> Option<Arc<Stream>> {
        self.reg.map.read().get(name).cloned()
    }

    /// Every stream, by name.
    pub fn list(&self) -> Vec<Arc<Stream>> {
        self.reg.map.read().values().cloned().collect()
    }

    /// Delete a stream and its records.
    pub fn delete(&self, name: &str) -> Result<(), StreamError> {
        let stream = self.reg.map.write().remove(name).ok_or_else(|| StreamError::StreamNotFound(name.to_string()))?;
        {
            // Under the state lock, so no append is between placement and its write.
            let _st = stream.state.lock();
            stream.deleted.store(true, Ordering::Release);
        }
        self.reg.save();
        stream.log.delete_dir(&stream.dir);
        stream.timer.notify_one();
        stream.changed.send_modify(|n| *n += 1);
        Ok(())
    }
}
