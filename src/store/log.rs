//! The message log: one append-only, segmented log for every persistent
//! message in every durable queue, with group commit.
//!
//! Layout in `<data>/messages/`: `NNNNNNNNNN.log` holds enqueue records,
//! `NNNNNNNNNN.acks` holds the settle ("forget") and "delivered" marks for the
//! records of the segment with the same number. Keeping a segment's marks next
//! to it means a segment and its marks are deleted together, once every record
//! in it is forgotten, and no mark ever outlives the record it refers to.
//!
//! Record: `[len u32 LE][crc32c u32 LE][payload]`, payload =
//! `[queue id u64][enqueued-at ms u64][message]`. Mark: `[kind u8][offset u64 LE][crc32c u32 LE]`.
//!
//! Durability: one writer thread owns the files. Callers get a log sequence
//! number (LSN) for each append; the writer fsyncs a batch of appends and then
//! publishes the highest LSN it made durable on a watch channel, which is what
//! publisher confirms wait for (group commit: every append that arrived during
//! an fsync shares the next one). Marks are written only after the appends
//! before them are fsynced, so a forget never reaches the disk ahead of the
//! dead-letter copy it may stand for. An fsync that fails is never retried:
//! the log is marked failed and refuses further appends.
//!
//! Batches: inside a [`LogBatch`] scope (see [`MessageLog::batch`]) the appends, marks and
//! deletions a thread makes are queued in order and reach the writer as one channel message
//! when the scope ends, so a request that writes ten records wakes the writer once. The
//! writer writes everything it received in one go with one `write` per file.
//!
//! Prepared segments: once a segment is a quarter full, a helper thread writes the next one
//! out in full (zeros, with `O_DIRECT`, so no dirty pages reach the writer's fsyncs) under a
//! temporary name; the writer renames it into place when it rolls over. Appends then
//! overwrite blocks that already exist, so an fsync flushes data only, not the file's size
//! and block map as well (one I/O wait fewer per group commit). A segment is cut to its
//! records when the writer leaves it; recovery cuts the zero tail of the last one.
//!
//! Backlog: appends reach the writer through an unbounded channel, so when the disk falls
//! behind (the kernel throttles writers once dirty pages pile up) the records wait in memory.
//! The log counts those bytes and calls the hook given to [`MessageLog::on_backlog`] with
//! `true` once they pass [`BACKLOG_HIGH`] and with `false` once the writer brought them under
//! [`BACKLOG_LOW`]; the broker blocks publishers in between, as RabbitMQ's flow control does.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::message::Message;
use crate::store::codec::{decode_message, encode_message};
use crate::time::Millis;

/// A log sequence number: appends are numbered 1, 2, 3... in log order.
pub type Lsn = u64;

/// Where a record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoreRef {
    /// Segment number.
    pub segment: u32,
    /// Byte offset of the record in the segment.
    pub offset: u64,
}

/// When appends are fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// As soon as the writer has appends and is not already syncing (group commit).
    Always,
    /// At most this long after the first unsynced append, to merge more appends per fsync.
    Batch(Duration),
}

const RECORD_HEADER: usize = 8;
const MARK_LEN: usize = 13;
const MARK_FORGET: u8 = 1;
const MARK_DELIVERED: u8 = 2;
/// Set in a record's queue id for copies written only to page a transient message
/// out of memory; recovery ignores them.
pub const TRANSIENT: u64 = 1 << 63;

/// Set in a record's enqueued-at field when a FIFO message group follows it:
/// `[len u16 LE][group]` before the message. (Times are milliseconds, far below 2^63.)
const GROUPED: u64 = 1 << 63;

/// Split a record payload into (enqueued-at, group, encoded message).
fn split_payload(payload: &[u8]) -> Result<(Millis, Option<&str>, &[u8]), LogError> {
    let bad = || LogError::Io(io::Error::new(io::ErrorKind::InvalidData, "bad record payload"));
    let mut at = [0u8; 8];
    at.copy_from_slice(payload.get(8..16).ok_or_else(bad)?);
    let at = u64::from_le_bytes(at);
    if at & GROUPED == 0 {
        return Ok((at, None, &payload[16..]));
    }
    let len = payload.get(16..18).ok_or_else(bad)?;
    let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
    let group = payload.get(18..18 + len).ok_or_else(bad)?;
    let group = std::str::from_utf8(group).map_err(|_| bad())?;
    Ok((at & !GROUPED, Some(group), &payload[18 + len..]))
}

/// A fresh store id for a durable queue: random, nonzero, never with the [`TRANSIENT`] bit.
pub fn new_store_id() -> u64 {
    (rand::random::<u64>() & !TRANSIENT).max(1)
}
/// Unwritten append bytes above which the backlog hook is told to block publishers.
pub const BACKLOG_HIGH: u64 = 256 << 20;
/// Unwritten append bytes under which the backlog hook is told to let them go again.
pub const BACKLOG_LOW: u64 = 64 << 20;

/// Told `true` when the writer's backlog passed the high mark, `false` when it fell under the low.
pub type BacklogHook = Box<dyn Fn(bool) + Send + Sync>;

/// Refuse records larger than this on recovery (a corrupt length must not make us allocate GiBs).
const MAX_RECORD: u32 = 512 * 1024 * 1024;

enum Cmd {
    /// `durable: false` for paging copies, which need no fsync.
    Append {
        segment: u32,
        bytes: Vec<u8>,
        lsn: Lsn,
        durable: bool,
    },
    /// A mark for the record at `offset` of generation `gen` of `segment`.
    Mark {
        segment: u32,
        generation: u32,
        kind: u8,
        offset: u64,
    },
    Delete(u32),
    Sync(mpsc::Sender<()>),
    /// Recovery found `segment` at this generation (it was compacted before).
    Generation(u32, u32),
    /// Every mark sent before `segment`'s last compaction has been received.
    RenameDone(u32),
    /// Compact every sparse segment now (tests), then reply.
    Compact(mpsc::Sender<()>),
    /// Several of the above, in order (a [`LogBatch`], or commands queued behind one).
    Many(Vec<Cmd>),
}

struct Head {
    tx: mpsc::Sender<Cmd>,
    next_lsn: Lsn,
    segment: u32,
    offset: u64,
    /// Records not yet forgotten, per segment.
    live: HashMap<u32, u64>,
    /// Records in each segment's current file (live or not), to spot sparse segments.
    total: HashMap<u32, u64>,
    /// Current generation of segments that were compacted (absent = 0).
    generations: HashMap<u32, u32>,
    /// For compacted segments: the offset a handle holds → the record's current offset.
    moved: HashMap<u32, HashMap<u64, u64>>,
    /// Commands held back by [`LogBatch`] scopes, in the order they were made; the next
    /// command sent (or the end of the scope) takes them to the writer.
    pending: Vec<Cmd>,
}

thread_local! {
    /// The log this thread is batching commands for (its `Shared`'s address, 0 = none) and
    /// how many [`LogBatch`] scopes for it are open.
    static BATCHING: Cell<(usize, u32)> = const { Cell::new((0, 0)) };
}

/// True while the current thread is inside a [`LogBatch`] scope of `shared`.
fn batching(shared: &Shared) -> bool {
    BATCHING.with(|b| b.get().0 == std::ptr::from_ref(shared) as usize)
}

impl Head {
    /// Send an append, mark or deletion: held back while this thread is batching for this
    /// log, else sent at once (after anything held back, which keeps the log's order).
    fn send(&mut self, shared: &Shared, cmd: Cmd) -> Result<(), LogError> {
        if batching(shared) {
            self.pending.push(cmd);
            Ok(())
        } else {
            self.send_now(cmd)
        }
    }

    /// Send `cmd` now, behind whatever is held back.
    fn send_now(&mut self, cmd: Cmd) -> Result<(), LogError> {
        self.pending.push(cmd);
        self.flush()
    }

    /// Send whatever is held back: one command as it is, several as one [`Cmd::Many`].
    fn flush(&mut self) -> Result<(), LogError> {
        let cmd = match self.pending.len() {
            0 => return Ok(()),
            1 => self.pending.pop(),
            _ => Some(Cmd::Many(std::mem::take(&mut self.pending))),
        };
        cmd.map_or(Ok(()), |cmd| self.tx.send(cmd).map_err(|_| LogError::Failed))
    }

    /// Where the record a handle knows as `at` is now: (generation, offset).
    fn resolve(&self, at: StoreRef) -> (u32, u64) {
        let generation = self.generations.get(&at.segment).copied().unwrap_or(0);
        let offset = self.moved.get(&at.segment).and_then(|m| m.get(&at.offset)).copied().unwrap_or(at.offset);
        (generation, offset)
    }

    fn drop_segment(&mut self, segment: u32) {
        self.live.remove(&segment);
        self.total.remove(&segment);
        self.generations.remove(&segment);
        self.moved.remove(&segment);
    }
}

/// A segment is compacted once fewer than 1 in this many of its records are live.
const SPARSE: u64 = 4;
/// Segments with fewer records than this are left alone.
const COMPACT_MIN_RECORDS: u64 = 8;
/// How often the writer looks for sparse segments while idle.
const COMPACT_EVERY: Duration = Duration::from_secs(5);
/// A segment is compacted at most this many times (its generation is part of its file name).
const MAX_GENERATION: u32 = 1_000_000;

/// What the message log's writer has done since the log was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// fsyncs (`fdatasync`) of segment files.
    pub fsyncs: u64,
    /// Durable appends made durable by those fsyncs: `synced_records / fsyncs` is how many
    /// appends shared one fsync (group commit).
    pub synced_records: u64,
    /// Records written to segment files (durable ones and paging copies).
    pub records_written: u64,
    /// Bytes written to segment files.
    pub record_bytes: u64,
    /// Marks (forget, delivered) written.
    pub marks_written: u64,
    /// Bytes written to marks files.
    pub mark_bytes: u64,
    /// Segments deleted because nothing in them was live any more.
    pub segments_deleted: u64,
    /// Sparse segments compacted (live records copied forward, segment deleted).
    pub segments_compacted: u64,
    /// Record bytes those compactions copied.
    pub compacted_bytes: u64,
    /// Failed writes or fsyncs (after the first the log refuses writes).
    pub failures: u64,
    /// Segments that were prepared ahead (written out in full) before the writer used them.
    pub prepared_segments: u64,
}

impl LogStats {
    /// Appends per fsync (group-commit factor); 0 before the first fsync.
    pub fn records_per_fsync(&self) -> f64 {
        if self.fsyncs == 0 { 0.0 } else { self.synced_records as f64 / self.fsyncs as f64 }
    }
}

#[derive(Default)]
struct Counters {
    fsyncs: AtomicU64,
    synced_records: AtomicU64,
    records_written: AtomicU64,
    record_bytes: AtomicU64,
    marks_written: AtomicU64,
    mark_bytes: AtomicU64,
    segments_deleted: AtomicU64,
    segments_compacted: AtomicU64,
    compacted_bytes: AtomicU64,
    failures: AtomicU64,
    prepared_segments: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    fn snapshot(&self) -> LogStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LogStats {
            fsyncs: g(&self.fsyncs),
            synced_records: g(&self.synced_records),
            records_written: g(&self.records_written),
            record_bytes: g(&self.record_bytes),
            marks_written: g(&self.marks_written),
            mark_bytes: g(&self.mark_bytes),
            segments_deleted: g(&self.segments_deleted),
            segments_compacted: g(&self.segments_compacted),
            compacted_bytes: g(&self.compacted_bytes),
            failures: g(&self.failures),
            prepared_segments: g(&self.prepared_segments),
        }
    }
}

/// Environment variable that arms the fsync fault-injection hook (tests only): while it is
/// set at start-up, every fsync of the message log fails once a file named
/// [`FAULT_FILE`] exists in the log directory.
pub const FAULT_ENV: &str = "SWITCHYARD_FAULT_INJECTION";
/// See [`FAULT_ENV`].
pub const FAULT_FILE: &str = "fail-fsync";

struct Shared {
    dir: PathBuf,
    stats: Counters,
    /// Test hook: fsyncs fail while this is set (see [`MessageLog::inject_fsync_failure`]).
    fail_fsync: AtomicBool,
    /// Test hook: fsyncs fail while this file exists (see [`FAULT_ENV`]).
    fault_file: Option<PathBuf>,
    /// Set once any segment has a generation above 0: until then reads need no relocation
    /// lookup (and so no `head` lock).
    relocated: AtomicBool,
    /// Open segment files for reading paged-out messages back.
    readers: Mutex<HashMap<(u32, u32), Arc<File>>>,
    head: Mutex<Head>,
    synced: watch::Sender<Lsn>,
    closing: AtomicBool,
    failed: Arc<AtomicBool>,
    segment_size: u64,
    /// Bytes appended that the writer has not taken yet.
    unwritten: AtomicU64,
    /// Set while the backlog is above [`BACKLOG_HIGH`] and not yet back under [`BACKLOG_LOW`].
    backlogged: AtomicBool,
    /// Held while `backlogged` changes and the hook hears of it, so an appender and the
    /// writer crossing the marks at once leave the two in agreement.
    backlog_turn: Mutex<()>,
    /// Where backlog changes go (see [`MessageLog::on_backlog`]).
    backlog_hook: std::sync::OnceLock<BacklogHook>,
    /// [`BACKLOG_HIGH`] and [`BACKLOG_LOW`] (tests lower them).
    backlog_high: AtomicU64,
    backlog_low: AtomicU64,
}

impl Shared {
    /// Count `bytes` more appended and not yet taken by the writer.
    fn add_unwritten(&self, bytes: u64) {
        let now = self.unwritten.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if now > self.backlog_high.load(Ordering::Relaxed) && !self.backlogged.load(Ordering::Acquire) {
            self.settle_backlog();
        }
    }

    /// Count `bytes` taken by the writer.
    fn take_unwritten(&self, bytes: u64) {
        let now = self.unwritten.fetch_sub(bytes, Ordering::AcqRel).saturating_sub(bytes);
        if now < self.backlog_low.load(Ordering::Relaxed) && self.backlogged.load(Ordering::Acquire) {
            self.settle_backlog();
        }
    }

    /// Bring `backlogged`, and the hook, in line with the count as it is now (off the hot
    /// path: only when a mark looks crossed).
    fn settle_backlog(&self) {
        let _turn = self.backlog_turn.lock();
        let now = self.unwritten.load(Ordering::Acquire);
        let was = self.backlogged.load(Ordering::Acquire);
        let on = if was {
            now >= self.backlog_low.load(Ordering::Relaxed)
        } else {
            now > self.backlog_high.load(Ordering::Relaxed)
        };
        if on == was {
            return;
        }
        self.backlogged.store(on, Ordering::Release);
        tracing::debug!(unwritten = now, on, "message log backlog alarm");
        if let Some(hook) = self.backlog_hook.get() {
            hook(on);
        }
    }
}

/// Errors from the message log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed.
    #[error("message log i/o: {0}")]
    Io(#[from] io::Error),
    /// An earlier write or fsync failed; the log accepts nothing more.
    #[error("message log failed earlier and refuses writes")]
    Failed,
}

/// The message log handle (cheap to clone).
#[derive(Clone)]
pub struct MessageLog {
    shared: Arc<Shared>,
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for MessageLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageLog").finish_non_exhaustive()
    }
}

/// A message that is on disk. Dropping it records that the message is gone
/// (acked, dropped, dead-lettered elsewhere); [`Persisted::mark_delivered`]
/// records that it was handed to a consumer, so a restart redelivers it flagged.
pub struct Persisted {
    /// `None` once [`Persisted::detach`]ed: the record is then owned by a [`Detached`].
    log: Option<Arc<Shared>>,
    at: StoreRef,
    delivered: bool,
}

/// A record's place without the log handle: 8 bytes, for compact indexes of long queues.
/// Unlike [`Persisted`] it forgets nothing when dropped; its owner must hand it back to
/// [`MessageLog::attach`] or [`MessageLog::forget_detached`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detached {
    /// Segment number.
    pub segment: u32,
    /// Byte offset in the segment (segments are smaller than 4 GiB).
    pub offset: u32,
}

impl std::fmt::Debug for Persisted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persisted").field("at", &self.at).field("delivered", &self.delivered).finish()
    }
}

impl Persisted {
    /// Read the message back from disk (for a message paged out of memory).
    pub fn read(&self) -> Result<Message, LogError> {
        let log = self.log.as_ref().ok_or(LogError::Failed)?;
        let payload = match log.read_record(self.at) {
            Ok(p) => p,
            // The writer may not have written it yet: wait for it once, then retry.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof || e.kind() == io::ErrorKind::NotFound => {
                log.barrier();
                log.readers.lock().retain(|(s, _), _| *s != self.at.segment);
                log.read_record(self.at)?
            }
            Err(e) => return Err(e.into()),
        };
        let (_, _, message) = split_payload(&payload)?;
        decode_message(message).map_err(|e| LogError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))
    }

    /// Record the first delivery (not fsynced: losing it only loses a redelivered flag).
    pub fn mark_delivered(&mut self) {
        if !self.delivered
            && let Some(log) = &self.log
        {
            self.delivered = true;
            log.mark(self.at, MARK_DELIVERED);
        }
    }

    /// True once the first delivery was recorded.
    pub fn delivered(&self) -> bool {
        self.delivered
    }

    /// Give up the handle but keep the record: the returned [`Detached`] (plus the
    /// delivered flag) is all that is needed to [`MessageLog::attach`] it again.
    pub fn detach(mut self) -> (Detached, bool) {
        self.log = None;
        // Segments are capped below 4 GiB (see `MessageLog::open_deferred`), and a record
        // always starts below the cap, so the offset fits.
        let offset = u32::try_from(self.at.offset).unwrap_or(u32::MAX);
        (Detached { segment: self.at.segment, offset }, self.delivered)
    }
}

impl Drop for Persisted {
    fn drop(&mut self) {
        if let Some(log) = &self.log {
            log.forget(self.at);
        }
    }
}

fn mark_bytes(kind: u8, offset: u64) -> [u8; MARK_LEN] {
    let mut m = [0u8; MARK_LEN];
    m[0] = kind;
    m[1..9].copy_from_slice(&offset.to_le_bytes());
    let crc = crc32c::crc32c(&m[..9]);
    m[9..].copy_from_slice(&crc.to_le_bytes());
    m
}

impl Shared {
    fn mark(&self, at: StoreRef, kind: u8) {
        let mut head = self.head.lock();
        let (generation, offset) = head.resolve(at);
        let _ = head.send(self, Cmd::Mark { segment: at.segment, generation, kind, offset });
    }

    fn forget(&self, at: StoreRef) {
        // During shutdown queues are torn down, but their messages are not gone.
        if self.closing.load(Ordering::Acquire) {
            return;
        }
        let mut head = self.head.lock();
        let (generation, offset) = head.resolve(at);
        if let Some(m) = head.moved.get_mut(&at.segment) {
            m.remove(&at.offset);
        }
        let _ = head.send(self, Cmd::Mark { segment: at.segment, generation, kind: MARK_FORGET, offset });
        let now_empty = match head.live.get_mut(&at.segment) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if now_empty && at.segment != head.segment {
            head.drop_segment(at.segment);
            self.readers.lock().retain(|(s, _), _| *s != at.segment);
            let _ = head.send(self, Cmd::Delete(at.segment));
        }
    }

    /// Wait until the writer has written (not necessarily fsynced) everything sent so far.
    fn barrier(&self) {
        let (done_tx, done_rx) = mpsc::channel();
        let _ = self.head.lock().send_now(Cmd::Sync(done_tx));
        let _ = done_rx.recv_timeout(Duration::from_secs(30));
    }

    fn read_record(&self, at: StoreRef) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let (generation, offset) =
            if self.relocated.load(Ordering::Acquire) { self.head.lock().resolve(at) } else { (0, at.offset) };
        let at = StoreRef { segment: at.segment, offset };
        let file = {
            let mut readers = self.readers.lock();
            match readers.get(&(at.segment, generation)) {
                Some(f) => Arc::clone(f),
                None => {
                    let f = Arc::new(File::open(generation_path(&self.dir, at.segment, generation, "log"))?);
                    readers.insert((at.segment, generation), Arc::clone(&f));
                    f
                }
            }
        };
        let mut header = [0u8; RECORD_HEADER];
        file.read_exact_at(&mut header, at.offset)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        if header == [0; RECORD_HEADER] {
            // A prepared segment's zeros: the record is not written yet.
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "record not written yet"));
        }
        if !(16..=MAX_RECORD).contains(&len) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad record length"));
        }
        let mut payload = vec![0u8; len as usize];
        file.read_exact_at(&mut payload, at.offset + RECORD_HEADER as u64)?;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if crc32c::crc32c(&payload) != crc {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "record checksum mismatch"));
        }
        Ok(payload)
    }
}

/// A message found in the log at start-up.
pub struct Recovered {
    /// The queue (by store id) it belongs to.
    pub queue_id: u64,
    /// Its FIFO message group, if it was published with one.
    pub group: Option<Arc<str>>,
    /// When it was first enqueued.
    pub enqueued_at: Millis,
    /// The message.
    pub message: Message,
    /// Its on-disk handle.
    pub persisted: Persisted,
}

impl Recovered {
    /// True if it was delivered before the restart.
    pub fn delivered(&self) -> bool {
        self.persisted.delivered
    }
}

fn segment_path(dir: &Path, n: u32, ext: &str) -> PathBuf {
    generation_path(dir, n, 0, ext)
}

/// `NNNNNNNNNN.log` for a segment as first written, `NNNNNNNNNN.gG.log` after its G-th
/// compaction (the marks file likewise).
fn generation_path(dir: &Path, n: u32, generation: u32, ext: &str) -> PathBuf {
    if generation == 0 { dir.join(format!("{n:010}.{ext}")) } else { dir.join(format!("{n:010}.g{generation}.{ext}")) }
}

/// Parse a file name of the log directory: (segment, generation, extension).
fn parse_name(name: &str) -> Option<(u32, u32, &str)> {
    let (stem, ext) = name.rsplit_once('.')?;
    let (n, generation) = match stem.split_once(".g") {
        Some((n, g)) => (n, g.parse().ok()?),
        None => (stem, 0),
    };
    if n.len() != 10 {
        return None;
    }
    Some((n.parse().ok()?, generation, ext))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl MessageLog {
    /// Open (creating) the log in `dir`, recover everything it holds into memory, and start
    /// the writer. Convenient for tests; the broker uses [`MessageLog::open_deferred`] so
    /// recovery streams one segment at a time.
    pub fn open(dir: &Path, policy: SyncPolicy, segment_size: u64) -> Result<(MessageLog, Vec<Recovered>), LogError> {
        let (log, recovery) = MessageLog::open_deferred(dir, policy, segment_size)?;
        let mut out = Vec::new();
        recovery.run(|r| out.push(r))?;
        Ok((log, out))
    }

    /// Open (creating) the log in `dir` and start the writer; new appends go to a fresh
    /// segment. The returned [`Recovery`] then hands back what the old segments hold.
    pub fn open_deferred(
        dir: &Path,
        policy: SyncPolicy,
        segment_size: u64,
    ) -> Result<(MessageLog, Recovery), LogError> {
        std::fs::create_dir_all(dir)?;
        // The newest generation of each segment wins; older ones (a crash during compaction
        // left them) and unfinished compactions (`.tmp`) go.
        let names: Vec<String> =
            std::fs::read_dir(dir)?.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect();
        let mut newest: std::collections::BTreeMap<u32, u32> = std::collections::BTreeMap::new();
        for name in &names {
            if let Some((n, g, "log")) = parse_name(name) {
                let e = newest.entry(n).or_insert(g);
                *e = (*e).max(g);
            }
        }
        for name in &names {
            let stale = match parse_name(name) {
                Some((_, _, "tmp")) => true,
                Some((n, g, _)) => newest.get(&n) != Some(&g),
                None => false,
            };
            if stale {
                let _ = std::fs::remove_file(dir.join(name));
            }
        }
        let numbers: Vec<(u32, u32)> = newest.into_iter().collect();
        let (synced, _) = watch::channel(0);
        let (tx, rx) = mpsc::channel();
        let next_segment = numbers.last().map_or(0, |(n, _)| n + 1);
        let failed = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            stats: Counters::default(),
            fail_fsync: AtomicBool::new(false),
            fault_file: std::env::var_os(FAULT_ENV).map(|_| dir.join(FAULT_FILE)),
            relocated: AtomicBool::new(false),
            readers: Mutex::new(HashMap::new()),
            head: Mutex::new(Head {
                tx,
                next_lsn: 1,
                segment: next_segment,
                offset: 0,
                live: HashMap::new(),
                total: HashMap::new(),
                generations: HashMap::new(),
                moved: HashMap::new(),
                pending: Vec::new(),
            }),
            synced,
            closing: AtomicBool::new(false),
            failed: Arc::clone(&failed),
            // Offsets must fit a `Detached`'s u32.
            segment_size: segment_size.clamp(4096, u64::from(u32::MAX / 2)),
            unwritten: AtomicU64::new(0),
            backlogged: AtomicBool::new(false),
            backlog_turn: Mutex::new(()),
            backlog_hook: std::sync::OnceLock::new(),
            backlog_high: AtomicU64::new(BACKLOG_HIGH),
            backlog_low: AtomicU64::new(BACKLOG_LOW),
        });
        let writer_dir = dir.to_path_buf();
        let writer_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("switchyard-log".into())
            .spawn(move || writer_loop(&writer_dir, &rx, &writer_shared, policy))?;
        let recovery = Recovery { dir: dir.to_path_buf(), segments: numbers, shared: Arc::clone(&shared) };
        Ok((MessageLog { shared, writer: Arc::new(Mutex::new(Some(handle))) }, recovery))
    }

    /// Append `message` for queue `queue_id`; returns its handle and the LSN a
    /// confirm must wait for (see [`MessageLog::synced`]).
    pub fn append(&self, queue_id: u64, enqueued_at: Millis, encoded: &[u8]) -> Result<(Persisted, Lsn), LogError> {
        self.append_grouped(queue_id, enqueued_at, None, encoded)
    }

    /// [`MessageLog::append`] for a message of a FIFO message group, which recovery hands back.
    pub fn append_grouped(
        &self,
        queue_id: u64,
        enqueued_at: Millis,
        group: Option<&str>,
        encoded: &[u8],
    ) -> Result<(Persisted, Lsn), LogError> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(LogError::Failed);
        }
        // A group longer than u16::MAX can't be stored; SQS caps group ids at 128 bytes.
        let group = group.filter(|g| g.len() <= usize::from(u16::MAX));
        let extra = group.map_or(0, |g| 2 + g.len());
        let payload_len = 16 + extra + encoded.len();
        let mut bytes = Vec::with_capacity(RECORD_HEADER + payload_len);
        bytes.extend_from_slice(&(payload_len as u32).to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&queue_id.to_le_bytes());
        let flagged = if group.is_some() { enqueued_at | GROUPED } else { enqueued_at & !GROUPED };
        bytes.extend_from_slice(&flagged.to_le_bytes());
        if let Some(g) = group {
            bytes.extend_from_slice(&(g.len() as u16).to_le_bytes());
            bytes.extend_from_slice(g.as_bytes());
        }
        bytes.extend_from_slice(encoded);
        let crc = crc32c::crc32c(&bytes[RECORD_HEADER..]);
        bytes[4..8].copy_from_slice(&crc.to_le_bytes());
        let mut head = self.shared.head.lock();
        if head.offset > 0 && head.offset + bytes.len() as u64 > self.shared.segment_size {
            let old = head.segment;
            head.segment += 1;
            head.offset = 0;
            // A segment whose messages were all forgotten while it was current goes now.
            if head.live.get(&old) == Some(&0) {
                head.drop_segment(old);
                let _ = head.send(&self.shared, Cmd::Delete(old));
            }
        }
        let at = StoreRef { segment: head.segment, offset: head.offset };
        head.offset += bytes.len() as u64;
        let lsn = head.next_lsn;
        head.next_lsn += 1;
        *head.live.entry(at.segment).or_insert(0) += 1;
        *head.total.entry(at.segment).or_insert(0) += 1;
        let durable = queue_id & TRANSIENT == 0;
        let len = bytes.len() as u64;
        // Counted before the writer can see it, so its subtraction never comes first.
        self.shared.add_unwritten(len);
        if let Err(e) = head.send(&self.shared, Cmd::Append { segment: at.segment, bytes, lsn, durable }) {
            drop(head);
            self.shared.take_unwritten(len);
            return Err(e);
        }
        Ok((Persisted { log: Some(Arc::clone(&self.shared)), at, delivered: false }, lsn))
    }

    /// Open a batch scope on this thread: until the returned guard is dropped, the appends,
    /// marks and deletions this thread makes (directly or through queues, e.g. the forget
    /// of an acked message) are held back and then reach the writer as one channel message,
    /// so the writer is woken once and writes them in one go. Appends still get their LSNs
    /// at once; [`MessageLog::wait_synced`] must only be awaited after the guard is dropped
    /// (the guard is not `Send`, so it cannot be held across an `.await` in a spawned
    /// task). Scopes nest; a scope for another log opened inside one is a no-op.
    pub fn batch(&self) -> LogBatch {
        let me = Arc::as_ptr(&self.shared) as usize;
        let active = BATCHING.with(|b| match b.get() {
            (0, _) => {
                b.set((me, 1));
                true
            }
            (log, depth) if log == me => {
                b.set((me, depth + 1));
                true
            }
            _ => false,
        });
        LogBatch { shared: active.then(|| Arc::clone(&self.shared)), _not_send: PhantomData }
    }

    /// Write a transient message to the log only so it can leave memory; recovery
    /// ignores such records.
    pub fn append_transient(&self, queue_id: u64, enqueued_at: Millis, encoded: &[u8]) -> Result<Persisted, LogError> {
        self.append(queue_id | TRANSIENT, enqueued_at, encoded).map(|(p, _)| p)
    }

    /// Take back a record given up with [`Persisted::detach`].
    pub fn attach(&self, at: Detached, delivered: bool) -> Persisted {
        Persisted {
            log: Some(Arc::clone(&self.shared)),
            at: StoreRef { segment: at.segment, offset: u64::from(at.offset) },
            delivered,
        }
    }

    /// Record that a detached record is gone (as dropping its [`Persisted`] would).
    pub fn forget_detached(&self, at: Detached) {
        self.shared.forget(StoreRef { segment: at.segment, offset: u64::from(at.offset) });
    }

    /// Call `hook` with `true` when the writer's backlog of unwritten appends passes
    /// [`BACKLOG_HIGH`] and with `false` when it is back under [`BACKLOG_LOW`] (from the
    /// appending thread and the writer thread respectively). Only the first hook set counts.
    pub fn on_backlog(&self, hook: BacklogHook) {
        let _ = self.shared.backlog_hook.set(hook);
    }

    /// Test hook: move the backlog marks from [`BACKLOG_HIGH`] and [`BACKLOG_LOW`].
    pub fn set_backlog_marks(&self, high: u64, low: u64) {
        self.shared.backlog_high.store(high, Ordering::Relaxed);
        self.shared.backlog_low.store(low, Ordering::Relaxed);
    }

    /// Bytes appended that the writer has not taken yet.
    pub fn unwritten_bytes(&self) -> u64 {
        self.shared.unwritten.load(Ordering::Acquire)
    }

    /// Compact every sparse segment now and wait for it (the writer also does this on its
    /// own, one segment at a time, every few seconds).
    pub fn compact_now(&self) {
        let (done_tx, done_rx) = mpsc::channel();
        let _ = self.shared.head.lock().send_now(Cmd::Compact(done_tx));
        let _ = done_rx.recv_timeout(Duration::from_secs(300));
    }

    /// Test hook: make every later fsync fail (as a full or broken disk would), so the
    /// appends waiting for it fail and the log refuses further writes.
    pub fn inject_fsync_failure(&self) {
        self.shared.fail_fsync.store(true, Ordering::Release);
    }

    /// Counters of what the writer did so far.
    pub fn stats(&self) -> LogStats {
        self.shared.stats.snapshot()
    }

    /// Encode a message for [`MessageLog::append`] (once per publish, shared by every queue).
    pub fn encode(message: &Message) -> Vec<u8> {
        let mut out = Vec::with_capacity(message.body.len() + 128);
        encode_message(message, &mut out);
        out
    }

    /// The highest LSN known durable; changes as the writer fsyncs.
    pub fn synced(&self) -> watch::Receiver<Lsn> {
        self.shared.synced.subscribe()
    }

    /// True once an I/O error stopped the log.
    pub fn is_failed(&self) -> bool {
        self.shared.failed.load(Ordering::Acquire)
    }

    /// Wait until `lsn` is durable (or the log failed).
    pub async fn wait_synced(&self, lsn: Lsn) -> Result<(), LogError> {
        let mut rx = self.synced();
        loop {
            if *rx.borrow_and_update() >= lsn {
                return Ok(());
            }
            if self.is_failed() {
                return Err(LogError::Failed);
            }
            if rx.changed().await.is_err() {
                return Err(LogError::Failed);
            }
        }
    }

    /// Flush and fsync everything, stop the writer, and stop recording forgets
    /// (queues torn down after this keep their messages on disk).
    pub fn close(&self) {
        self.shared.closing.store(true, Ordering::Release);
        let (done_tx, done_rx) = mpsc::channel();
        let _ = self.shared.head.lock().send_now(Cmd::Sync(done_tx));
        let _ = done_rx.recv_timeout(Duration::from_secs(30));
        // The writer exits when every sender is gone; the handles in queues keep one
        // alive, so just detach: everything appended so far is on disk.
        drop(self.writer.lock().take());
    }
}

/// A batch scope of the message log (see [`MessageLog::batch`]): dropping it sends what the
/// thread held back.
#[must_use = "the batch ends when the guard is dropped"]
pub struct LogBatch {
    /// The log batched for; `None` for a no-op scope.
    shared: Option<Arc<Shared>>,
    /// Tied to the thread whose commands it holds back.
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for LogBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBatch").field("active", &self.shared.is_some()).finish()
    }
}

impl Drop for LogBatch {
    fn drop(&mut self) {
        let Some(shared) = &self.shared else { return };
        let last = BATCHING.with(|b| {
            let (log, depth) = b.get();
            if depth <= 1 {
                b.set((0, 0));
                true
            } else {
                b.set((log, depth - 1));
                false
            }
        });
        if !last {
            return;
        }
        if shared.head.lock().flush().is_err() {
            // The writer is gone: what was held back will never be written. Fail the log so
            // that every append waiting for its fsync sees it.
            tracing::error!("message log writer is gone; refusing further persistent messages");
            shared.failed.store(true, Ordering::Release);
            shared.synced.send_modify(|_| {});
        }
    }
}

/// The old segments of a log opened with [`MessageLog::open_deferred`], to be read back.
pub struct Recovery {
    dir: PathBuf,
    /// (segment, generation), oldest first.
    segments: Vec<(u32, u32)>,
    shared: Arc<Shared>,
}

impl Recovery {
    /// Read the segments in order and hand every live message to `each`, one segment at a
    /// time, so memory holds at most one segment's messages (plus whatever `each` keeps).
    /// Dropping a handed-out message forgets it. Returns how many messages were found.
    pub fn run(self, mut each: impl FnMut(Recovered)) -> Result<usize, LogError> {
        let last = self.segments.last().copied();
        let mut total = 0;
        for &(n, generation) in &self.segments {
            if generation > 0 {
                self.shared.relocated.store(true, Ordering::Release);
                let mut head = self.shared.head.lock();
                head.generations.insert(n, generation);
                let _ = head.send_now(Cmd::Generation(n, generation));
            }
            let (found, records) =
                recover_segment(&self.dir, n, generation, Some((n, generation)) == last, &self.shared)?;
            if found.is_empty() {
                self.shared.head.lock().generations.remove(&n);
                let _ = self.shared.head.lock().send_now(Cmd::Delete(n));
                continue;
            }
            {
                let mut head = self.shared.head.lock();
                head.live.insert(n, found.len() as u64);
                head.total.insert(n, records);
            }
            total += found.len();
            found.into_iter().for_each(&mut each);
        }
        if total > 0 {
            tracing::info!(messages = total, segments = self.segments.len(), "message log recovered");
        }
        Ok(total)
    }
}

fn remove_segment(dir: &Path, n: u32, generation: u32) {
    for ext in ["log", "acks"] {
        let p = generation_path(dir, n, generation, ext);
        if let Err(e) = std::fs::remove_file(&p)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), error = %e, "could not delete a message log segment");
        }
    }
}

/// Read a marks file: (forgotten offsets, delivered offsets). Stops at the first bad mark.
fn read_marks(path: &Path) -> io::Result<(HashSet<u64>, HashSet<u64>)> {
    let mut forgotten = HashSet::new();
    let mut delivered = HashSet::new();
    if let Ok(mut f) = File::open(path) {
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        for m in buf.chunks_exact(MARK_LEN) {
            let crc = u32::from_le_bytes([m[9], m[10], m[11], m[12]]);
            if crc != crc32c::crc32c(&m[..9]) {
                break;
            }
            let mut off = [0u8; 8];
            off.copy_from_slice(&m[1..9]);
            let offset = u64::from_le_bytes(off);
            match m[0] {
                MARK_FORGET => {
                    forgotten.insert(offset);
                }
                MARK_DELIVERED => {
                    delivered.insert(offset);
                }
                _ => break,
            }
        }
    }
    Ok((forgotten, delivered))
}

/// The valid records of a segment file's bytes: (offset, record length incl. header).
/// Stops at the first invalid one, returning its offset as the second value if any.
fn scan_records(buf: &[u8]) -> (Vec<(usize, usize)>, Option<usize>) {
    let mut pos = 0usize;
    let mut out = Vec::new();
    while pos < buf.len() {
        let valid = (|| {
            let header = buf.get(pos..pos + RECORD_HEADER)?;
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            if !(16..=MAX_RECORD).contains(&len) {
                return None;
            }
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            let payload = buf.get(pos + RECORD_HEADER..pos + RECORD_HEADER + len as usize)?;
            (crc32c::crc32c(payload) == crc).then_some(RECORD_HEADER + len as usize)
        })();
        let Some(len) = valid else { return (out, Some(pos)) };
        out.push((pos, len));
        pos += len;
    }
    (out, None)
}

/// Read one segment's marks and records; truncate a torn tail of the last segment.
/// Returns the live messages and how many records the file holds.
fn recover_segment(
    dir: &Path,
    n: u32,
    generation: u32,
    is_last: bool,
    shared: &Arc<Shared>,
) -> Result<(Vec<Recovered>, u64), LogError> {
    let (forgotten, delivered) = read_marks(&generation_path(dir, n, generation, "acks"))?;
    let path = generation_path(dir, n, generation, "log");
    let mut buf = Vec::new();
    File::open(&path)?.read_to_end(&mut buf)?;
    let (records, bad) = scan_records(&buf);
    if let Some(pos) = bad
        && buf[pos..].iter().all(|b| *b == 0)
    {
        // The unused end of a prepared segment: no record was ever written there.
        tracing::debug!(segment = n, offset = pos, "cutting the unused end of a prepared segment");
        let f = OpenOptions::new().write(true).open(&path)?;
        f.set_len(pos as u64)?;
        f.sync_all()?;
    } else if let Some(pos) = bad {
        if is_last {
            tracing::warn!(
                segment = n,
                offset = pos,
                dropped_bytes = buf.len() - pos,
                "torn tail in the message log; truncating to the last valid record"
            );
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(pos as u64)?;
            f.sync_all()?;
        } else {
            tracing::error!(
                segment = n,
                offset = pos,
                "corrupt record in a sealed message log segment; the rest of this segment is skipped"
            );
        }
    }
    let mut out = Vec::new();
    let mut dead = Vec::new();
    for &(pos, len) in &records {
        let offset = pos as u64;
        let payload = &buf[pos + RECORD_HEADER..pos + len];
        if forgotten.contains(&offset) {
            continue;
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&payload[..8]);
        if u64::from_le_bytes(id) & TRANSIENT != 0 {
            // A paging copy of an earlier run: dead now; say so, so compaction drops it.
            dead.push(offset);
            continue;
        }
        let decoded = split_payload(payload).and_then(|(at, group, m)| {
            Ok((at, group, decode_message(m).map_err(|e| io::Error::other(e.to_string()))?))
        });
        match decoded {
            Ok((enqueued_at, group, message)) => out.push(Recovered {
                queue_id: u64::from_le_bytes(id),
                group: group.map(Arc::from),
                enqueued_at,
                message,
                persisted: Persisted {
                    log: Some(Arc::clone(shared)),
                    at: StoreRef { segment: n, offset },
                    delivered: delivered.contains(&offset),
                },
            }),
            Err(e) => {
                tracing::error!(segment = n, offset, error = %e, "undecodable message in the log; skipped");
                dead.push(offset);
            }
        }
    }
    if !out.is_empty() {
        let mut head = shared.head.lock();
        for offset in dead {
            let _ = head.send_now(Cmd::Mark { segment: n, generation, kind: MARK_FORGET, offset });
        }
    }
    // Recovered handles must not record forgets while we are still opening: their
    // live counts are set by the caller. They are real handles from here on.
    Ok((out, records.len() as u64))
}

struct Writer<'a> {
    dir: &'a Path,
    shared: &'a Shared,
    current: Option<(u32, File)>,
    marks: HashMap<u32, File>,
    pending_marks: Vec<(u32, [u8; MARK_LEN])>,
    pending_deletes: Vec<u32>,
    unsynced: Option<(Lsn, Instant)>,
    /// Durable appends written since the last fsync.
    unsynced_records: u64,
    /// Current generation of compacted segments (absent = 0).
    generations: HashMap<u32, u32>,
    /// The last compaction of a segment: the generation it replaced and old → new offsets,
    /// for marks sent before it, until [`Cmd::RenameDone`] says none are left.
    renames: HashMap<u32, (u32, HashMap<u64, u64>)>,
    last_compaction: Instant,
    /// Records received for the current segment but not written yet: everything received
    /// in one go is written with one `write`.
    out: Vec<u8>,
    /// Where the next write goes in the current segment.
    pos: u64,
    /// The current segment was prepared (written out in full): cut it to `pos` on leaving it.
    prepared_current: bool,
    /// The helper that prepares segments ahead (`None` if it could not be started).
    preparer: Option<Preparer>,
}

/// The writer's end of the segment-preparing helper thread.
struct Preparer {
    /// Segment numbers to prepare.
    requests: mpsc::Sender<u32>,
    /// Segment numbers prepared (their `.tmp` file is complete and durable).
    ready: mpsc::Receiver<u32>,
    /// The last segment asked for.
    requested: Option<u32>,
}

/// Zeros are written in chunks of this size (a multiple of the 4 KiB `O_DIRECT` alignment).
const PREPARE_CHUNK: usize = 1 << 20;
/// `O_DIRECT` alignment of buffers, offsets and lengths.
const DIRECT_ALIGN: usize = 4096;

/// The helper thread: write each requested segment out in full under its temporary name.
fn preparer_loop(dir: &Path, segment_size: u64, requests: &mpsc::Receiver<u32>, ready: &mpsc::Sender<u32>) {
    // An aligned window of zeros, without `unsafe`: over-allocate, then start at the boundary.
    let raw = vec![0u8; PREPARE_CHUNK + DIRECT_ALIGN];
    let start = raw.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
    let zeros = &raw[start..start + PREPARE_CHUNK];
    while let Ok(n) = requests.recv() {
        let path = segment_path(dir, n, "tmp");
        match prepare_segment(&path, segment_size, zeros) {
            Ok(()) => {
                if ready.send(n).is_err() {
                    let _ = std::fs::remove_file(&path);
                    return;
                }
            }
            Err(e) => {
                // Not fatal: the writer then creates the segment as it goes.
                tracing::debug!(segment = n, error = %e, "could not prepare a message log segment");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Write `path` out as `size` zero bytes (rounded up to the alignment), durably.
fn prepare_segment(path: &Path, size: u64, zeros: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let direct = i32::try_from(rustix::fs::OFlags::DIRECT.bits()).map_err(io::Error::other)?;
    let f = OpenOptions::new().write(true).create(true).truncate(true).custom_flags(direct).open(path)?;
    let len = size.div_ceil(DIRECT_ALIGN as u64) * DIRECT_ALIGN as u64;
    let mut at = 0;
    while at < len {
        let n = (len - at).min(zeros.len() as u64);
        f.write_all_at(&zeros[..n as usize], at)?;
        at += n;
    }
    f.sync_all()
}

/// The writer writes its buffered records once they reach this many bytes, whatever else
/// is still to come.
const WRITE_CHUNK: usize = 1 << 20;

impl Writer<'_> {
    /// Stop for good: an error is never retried, because a failed fsync may have dropped
    /// the dirty pages it was meant to write, and a later fsync succeeding would not bring
    /// them back. Waiters on the durable LSN are woken to see the failure: every append
    /// above the last durable LSN has failed.
    fn fail(&self, what: &str, e: &io::Error) {
        tracing::error!(error = %e, "message log {what} failed; refusing further persistent messages");
        Counters::add(&self.shared.stats.failures, 1);
        self.shared.failed.store(true, Ordering::Release);
        self.shared.synced.send_modify(|_| {});
    }

    /// Queue a mark for writing, translating offsets of a generation compacted since.
    fn mark(&mut self, segment: u32, generation: u32, kind: u8, offset: u64) {
        let current = self.generations.get(&segment).copied().unwrap_or(0);
        let offset = if generation == current {
            Some(offset)
        } else {
            match self.renames.get(&segment) {
                Some((old, map)) if *old == generation => map.get(&offset).copied(),
                _ => None,
            }
        };
        if let Some(offset) = offset {
            self.pending_marks.push((segment, mark_bytes(kind, offset)));
        }
    }

    /// Compact up to `max` sparse segments (see [`MessageLog::compact_now`]).
    fn compact_sparse(&mut self, max: usize) {
        self.last_compaction = Instant::now();
        // Marks already received must be in the files compaction reads.
        self.sync();
        if self.shared.failed.load(Ordering::Acquire) {
            return;
        }
        // Only segments the writer has moved past: all their appends are written.
        let Some(writing) = self.current.as_ref().map(|(n, _)| *n) else { return };
        for _ in 0..max {
            let candidate = {
                let head = self.shared.head.lock();
                head.live
                    .iter()
                    .filter(|(s, _)| {
                        **s < writing && !self.renames.contains_key(s) && !self.pending_deletes.contains(s)
                    })
                    .filter_map(|(s, live)| {
                        let total = *head.total.get(s)?;
                        (total >= COMPACT_MIN_RECORDS && live * SPARSE < total).then_some(*s)
                    })
                    .min()
            };
            let Some(segment) = candidate else { return };
            if let Err(e) = self.compact(segment) {
                // Nothing was replaced: the segment stays as it was.
                tracing::warn!(segment, error = %e, "compacting a message log segment failed");
                return;
            }
        }
    }

    /// Copy the live records of `segment` into its next generation, then delete the old
    /// one. Handles keep their offsets; [`Head::moved`] maps them to the new ones.
    fn compact(&mut self, segment: u32) -> io::Result<()> {
        let generation = self.generations.get(&segment).copied().unwrap_or(0);
        if generation >= MAX_GENERATION {
            return Ok(());
        }
        let next = generation + 1;
        let (forgotten, delivered) = read_marks(&generation_path(self.dir, segment, generation, "acks"))?;
        let buf = std::fs::read(generation_path(self.dir, segment, generation, "log"))?;
        let (records, _) = scan_records(&buf);
        let mut out = Vec::new();
        let mut marks = Vec::new();
        let mut renames = HashMap::new();
        for (pos, len) in records {
            if forgotten.contains(&(pos as u64)) {
                continue;
            }
            let new = out.len() as u64;
            renames.insert(pos as u64, new);
            if delivered.contains(&(pos as u64)) {
                marks.extend_from_slice(&mark_bytes(MARK_DELIVERED, new));
            }
            out.extend_from_slice(&buf[pos..pos + len]);
        }
        drop(buf);
        // Write the new generation completely, then make it the segment in one rename.
        let tmp = generation_path(self.dir, segment, next, "tmp");
        let log = generation_path(self.dir, segment, next, "log");
        let acks = generation_path(self.dir, segment, next, "acks");
        let mut f = File::create(&tmp)?;
        f.write_all(&out)?;
        self.fsync(&f)?;
        let mut a = File::create(&acks)?;
        a.write_all(&marks)?;
        self.fsync(&a)?;
        std::fs::rename(&tmp, &log)?;
        sync_dir(self.dir)?;
        {
            let mut head = self.shared.head.lock();
            if !head.live.contains_key(&segment) {
                // Everything in it was forgotten meanwhile; its deletion is on the way.
                drop(head);
                remove_segment(self.dir, segment, next);
                return Ok(());
            }
            let moved = head.moved.remove(&segment).unwrap_or_default();
            let now: HashMap<u64, u64> = if moved.is_empty() {
                // Handles hold offsets of the generation just replaced.
                renames.clone()
            } else {
                moved.into_iter().filter_map(|(h, c)| renames.get(&c).map(|n| (h, *n))).collect()
            };
            self.shared.relocated.store(true, Ordering::Release);
            head.moved.insert(segment, now);
            head.generations.insert(segment, next);
            head.total.insert(segment, renames.len() as u64);
            self.shared.readers.lock().retain(|(s, _), _| *s != segment);
            let _ = head.send_now(Cmd::RenameDone(segment));
        }
        self.generations.insert(segment, next);
        self.renames.insert(segment, (generation, renames));
        self.marks.remove(&segment);
        remove_segment(self.dir, segment, generation);
        sync_dir(self.dir)?;
        Counters::add(&self.shared.stats.segments_compacted, 1);
        Counters::add(&self.shared.stats.compacted_bytes, (out.len() + marks.len()) as u64);
        tracing::debug!(segment, generation = next, kept_bytes = out.len(), "compacted a message log segment");
        Ok(())
    }

    fn fsync(&self, f: &File) -> io::Result<()> {
        if self.shared.fail_fsync.load(Ordering::Acquire) || self.shared.fault_file.as_ref().is_some_and(|p| p.exists())
        {
            return Err(io::Error::other("injected fsync failure (test hook)"));
        }
        f.sync_data()?;
        Counters::add(&self.shared.stats.fsyncs, 1);
        Ok(())
    }

    fn append(&mut self, segment: u32, bytes: &[u8], lsn: Lsn, durable: bool) {
        if self.shared.failed.load(Ordering::Acquire) {
            return;
        }
        if self.current.as_ref().map(|(n, _)| *n) != Some(segment) {
            self.write_out();
            if self.shared.failed.load(Ordering::Acquire) {
                return;
            }
            if let Some((_, f)) = &self.current {
                // A prepared segment is cut to its records before its last fsync.
                if self.prepared_current
                    && let Err(e) = f.set_len(self.pos)
                {
                    return self.fail("truncate", &e);
                }
                if let Err(e) = self.fsync(f) {
                    return self.fail("fsync", &e);
                }
            }
            let path = segment_path(self.dir, segment, "log");
            let prepared =
                self.take_prepared(segment) && std::fs::rename(segment_path(self.dir, segment, "tmp"), &path).is_ok();
            // Never truncate: a prepared segment keeps its blocks.
            let opened = OpenOptions::new().create(true).truncate(false).write(true).open(&path);
            match opened {
                Ok(f) => {
                    if let Err(e) = sync_dir(self.dir) {
                        return self.fail("directory fsync", &e);
                    }
                    self.current = Some((segment, f));
                    self.pos = 0;
                    self.prepared_current = prepared;
                    if prepared {
                        Counters::add(&self.shared.stats.prepared_segments, 1);
                    }
                }
                Err(e) => return self.fail("segment create", &e),
            }
        }
        self.out.extend_from_slice(bytes);
        if self.out.len() >= WRITE_CHUNK {
            self.write_out();
            if self.shared.failed.load(Ordering::Acquire) {
                return;
            }
        }
        Counters::add(&self.shared.stats.records_written, 1);
        Counters::add(&self.shared.stats.record_bytes, bytes.len() as u64);
        if durable {
            self.unsynced_records += 1;
            let since = self.unsynced.map_or_else(Instant::now, |(_, t)| t);
            self.unsynced = Some((lsn, since));
        }
    }

    /// Write the buffered records to the current segment (one `write`).
    fn write_out(&mut self) {
        use std::os::unix::fs::FileExt;
        if self.out.is_empty() {
            return;
        }
        if !self.shared.failed.load(Ordering::Acquire)
            && let Some((segment, f)) = self.current.as_ref()
        {
            let segment = *segment;
            let len = self.out.len();
            if self.prepared_current {
                // Write up to the end of the last page: a page only partly overwritten would
                // first be read from the disk (the zeros were written around the page cache).
                // The padding is zeros, as the file already holds there.
                let end = self.pos + len as u64;
                let pad = end.next_multiple_of(DIRECT_ALIGN as u64) - end;
                self.out.resize(len + pad as usize, 0);
            }
            match f.write_all_at(&self.out, self.pos) {
                Ok(()) => {
                    self.pos += len as u64;
                    self.request_preparation(segment);
                }
                Err(e) => self.fail("write", &e),
            }
        }
        self.out.clear();
        if self.out.capacity() > 2 * WRITE_CHUNK {
            self.out = Vec::new();
        }
    }

    /// Once `segment` (the current one) is a quarter full, have the next one prepared.
    fn request_preparation(&mut self, segment: u32) {
        let size = self.shared.segment_size;
        let Some(p) = self.preparer.as_mut() else { return };
        let next = segment.wrapping_add(1);
        if self.pos >= size / 4 && p.requested != Some(next) {
            p.requested = Some(next);
            if p.requests.send(next).is_err() {
                self.preparer = None;
            }
        }
    }

    /// True if `segment` was prepared; prepared segments that are no longer wanted go.
    fn take_prepared(&mut self, segment: u32) -> bool {
        let Some(p) = self.preparer.as_ref() else { return false };
        let mut found = false;
        while let Ok(n) = p.ready.try_recv() {
            if n == segment {
                found = true;
            } else {
                let _ = std::fs::remove_file(segment_path(self.dir, n, "tmp"));
            }
        }
        found
    }

    /// Carry out one command received; a reply waits in `replies` for the next sync.
    fn apply(&mut self, cmd: Cmd, replies: &mut Vec<mpsc::Sender<()>>) {
        match cmd {
            Cmd::Append { segment, bytes, lsn, durable } => {
                self.append(segment, &bytes, lsn, durable);
                self.shared.take_unwritten(bytes.len() as u64);
            }
            Cmd::Mark { segment, generation, kind, offset } => self.mark(segment, generation, kind, offset),
            Cmd::Delete(segment) => self.pending_deletes.push(segment),
            Cmd::Sync(reply) => replies.push(reply),
            Cmd::Generation(segment, generation) => {
                self.generations.insert(segment, generation);
            }
            Cmd::RenameDone(segment) => {
                self.renames.remove(&segment);
            }
            Cmd::Compact(reply) => {
                self.sync();
                self.compact_sparse(usize::MAX);
                replies.push(reply);
            }
            Cmd::Many(cmds) => {
                for cmd in cmds {
                    self.apply(cmd, replies);
                }
            }
        }
    }

    fn sync(&mut self) {
        self.write_out();
        // After a failure nothing more touches the files: what is on disk stays as it was.
        if self.shared.failed.load(Ordering::Acquire) {
            self.pending_marks.clear();
            self.pending_deletes.clear();
            return;
        }
        if let Some((lsn, _)) = self.unsynced.take() {
            if let Some((_, f)) = &self.current
                && let Err(e) = self.fsync(f)
            {
                return self.fail("fsync", &e);
            }
            Counters::add(&self.shared.stats.synced_records, std::mem::take(&mut self.unsynced_records));
            self.shared.synced.send_replace(lsn);
        }
        // Marks and deletions only after the appends before them are durable. The marks of
        // one segment go out in one write (their order within a file does not matter).
        let mut marks = std::mem::take(&mut self.pending_marks);
        marks.sort_by_key(|(segment, _)| *segment);
        let mut bytes = Vec::new();
        for run in marks.chunk_by(|a, b| a.0 == b.0) {
            let segment = run[0].0;
            if self.pending_deletes.contains(&segment) {
                continue;
            }
            let file = match self.marks.entry(segment) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let generation = self.generations.get(&segment).copied().unwrap_or(0);
                    let path = generation_path(self.dir, segment, generation, "acks");
                    match OpenOptions::new().create(true).append(true).open(path) {
                        Ok(f) => v.insert(f),
                        Err(e) => {
                            tracing::warn!(error = %e, segment, "cannot open marks file");
                            continue;
                        }
                    }
                }
            };
            bytes.clear();
            for (_, mark) in run {
                bytes.extend_from_slice(mark);
            }
            match file.write_all(&bytes) {
                Ok(()) => {
                    Counters::add(&self.shared.stats.marks_written, run.len() as u64);
                    Counters::add(&self.shared.stats.mark_bytes, bytes.len() as u64);
                }
                Err(e) => tracing::warn!(error = %e, segment, "cannot write marks"),
            }
        }
        marks.clear();
        self.pending_marks = marks;
        for segment in std::mem::take(&mut self.pending_deletes) {
            self.marks.remove(&segment);
            if self.current.as_ref().is_some_and(|(n, _)| *n == segment) {
                self.current = None;
            }
            self.renames.remove(&segment);
            remove_segment(self.dir, segment, self.generations.remove(&segment).unwrap_or(0));
            Counters::add(&self.shared.stats.segments_deleted, 1);
        }
    }
}

fn writer_loop(dir: &Path, rx: &mpsc::Receiver<Cmd>, shared: &Shared, policy: SyncPolicy) {
    let mut w = Writer {
        dir,
        shared,
        current: None,
        marks: HashMap::new(),
        pending_marks: Vec::new(),
        pending_deletes: Vec::new(),
        unsynced: None,
        unsynced_records: 0,
        generations: HashMap::new(),
        renames: HashMap::new(),
        last_compaction: Instant::now(),
        out: Vec::new(),
        pos: 0,
        prepared_current: false,
        preparer: None,
    };
    let (requests, requested) = mpsc::channel();
    let (ready_tx, ready) = mpsc::channel();
    let prep_dir = dir.to_path_buf();
    let segment_size = shared.segment_size;
    let spawned = std::thread::Builder::new()
        .name("switchyard-log-prep".into())
        .spawn(move || preparer_loop(&prep_dir, segment_size, &requested, &ready_tx));
    match spawned {
        Ok(_) => w.preparer = Some(Preparer { requests, ready, requested: None }),
        Err(e) => tracing::warn!(error = %e, "cannot start the message log's segment preparer"),
    }
    let mut reported = (Instant::now(), LogStats::default());
    loop {
        let first = match (policy, w.unsynced) {
            (SyncPolicy::Batch(d), Some((_, since))) => {
                let left = d.saturating_sub(since.elapsed());
                match rx.recv_timeout(left) {
                    Ok(c) => Some(c),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return w.sync(),
                }
            }
            _ if !w.pending_marks.is_empty() || !w.pending_deletes.is_empty() => {
                // Nothing unsynced: marks can go out now.
                w.sync();
                continue;
            }
            _ => match rx.recv_timeout(COMPACT_EVERY) {
                Ok(c) => Some(c),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    w.compact_sparse(1);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return w.sync(),
            },
        };
        let mut replies = Vec::new();
        let mut next = first;
        while let Some(cmd) = next {
            w.apply(cmd, &mut replies);
            next = rx.try_recv().ok();
        }
        w.write_out();
        let due = match (policy, w.unsynced) {
            (_, None) => true,
            (SyncPolicy::Always, Some(_)) => true,
            (SyncPolicy::Batch(d), Some((_, since))) => since.elapsed() >= d,
        };
        if due || !replies.is_empty() {
            w.sync();
        }
        for r in replies {
            let _ = r.send(());
        }
        if w.unsynced.is_none() && w.last_compaction.elapsed() >= COMPACT_EVERY {
            w.compact_sparse(1);
        }
        if reported.0.elapsed() >= STATS_EVERY {
            let now = shared.stats.snapshot();
            if now != reported.1 {
                let fsyncs = now.fsyncs - reported.1.fsyncs;
                let records = now.synced_records - reported.1.synced_records;
                tracing::info!(
                    fsyncs,
                    records,
                    records_per_fsync = if fsyncs == 0 { 0.0 } else { records as f64 / fsyncs as f64 },
                    record_bytes = now.record_bytes - reported.1.record_bytes,
                    mark_bytes = now.mark_bytes - reported.1.mark_bytes,
                    "message log activity in the last minute"
                );
            }
            reported = (Instant::now(), now);
        }
    }
}

/// How often the writer logs its counters (when they changed).
const STATS_EVERY: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Properties;
    use bytes::Bytes;

    fn msg(body: &str) -> Message {
        Message::new(
            "",
            "q",
            Properties { delivery_mode: Some(2), ..Properties::default() },
            Bytes::from(body.to_string()),
        )
    }

    fn append(log: &MessageLog, q: u64, body: &str) -> (Persisted, Lsn) {
        log.append(q, 1, &MessageLog::encode(&msg(body))).expect("append")
    }

    async fn open(dir: &Path) -> (MessageLog, Vec<Recovered>) {
        MessageLog::open(dir, SyncPolicy::Always, 1 << 20).expect("open")
    }

    #[tokio::test]
    async fn the_backlog_hook_sees_unwritten_appends_pass_the_high_mark_and_drain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = open(dir.path()).await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        log.on_backlog(Box::new(move |on| sink.lock().push(on)));
        log.set_backlog_marks(8 * 1024, 2 * 1024);
        let body = "x".repeat(1000);
        let mut kept = Vec::new();
        let mut last = 0;
        {
            // Held back in a batch scope, so nothing reaches the writer before the scope ends.
            let _batch = log.batch();
            for _ in 0..7 {
                let (p, lsn) = append(&log, 7, &body);
                kept.push(p);
                last = lsn;
            }
            assert!(log.unwritten_bytes() < 8 * 1024);
            assert!(seen.lock().is_empty(), "under the high mark, no alarm");
            for _ in 0..3 {
                let (p, lsn) = append(&log, 7, &body);
                kept.push(p);
                last = lsn;
            }
            assert!(log.unwritten_bytes() > 8 * 1024);
            assert_eq!(*seen.lock(), vec![true], "told once, when the mark was passed");
        }
        log.wait_synced(last).await.expect("synced");
        assert_eq!(log.unwritten_bytes(), 0);
        assert_eq!(*seen.lock(), vec![true, false], "told again once the writer took them");
    }

    #[tokio::test]
    async fn appended_messages_survive_and_forgotten_ones_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (log, rec) = open(dir.path()).await;
            assert!(rec.is_empty());
            let (keep, _) = append(&log, 7, "keep");
            let (gone, lsn) = append(&log, 7, "gone");
            let (mut seen, _) = append(&log, 8, "seen");
            seen.mark_delivered();
            drop(gone);
            log.wait_synced(lsn).await.expect("synced");
            log.close();
            drop((keep, seen));
        }
        let (_log, rec) = open(dir.path()).await;
        let got: Vec<_> = rec.iter().map(|r| (r.queue_id, r.message.body.clone(), r.delivered())).collect();
        assert_eq!(got, [(7, Bytes::from("keep"), false), (8, Bytes::from("seen"), true)]);
    }

    #[tokio::test]
    async fn torn_tail_is_truncated_and_earlier_records_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (log, _) = open(dir.path()).await;
            let (a, _) = append(&log, 1, "a");
            let (b, lsn) = append(&log, 1, "b");
            log.wait_synced(lsn).await.expect("synced");
            log.close();
            drop((a, b));
        }
        let seg = segment_path(dir.path(), 0, "log");
        let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
        f.write_all(&[200, 0, 0, 0, 1, 2, 3]).expect("garbage");
        drop(f);
        let (_log, rec) = open(dir.path()).await;
        assert_eq!(rec.len(), 2);
        // Corrupting the last record's body drops just that record.
        drop(rec);
    }

    #[tokio::test]
    async fn a_flipped_byte_keeps_every_record_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut at = Vec::new();
        {
            let (log, _) = open(dir.path()).await;
            let mut keep = Vec::new();
            let mut last = 0;
            for i in 0..10 {
                let (p, lsn) = append(&log, 1, &format!("m{i}"));
                at.push(p.at.offset);
                keep.push(p);
                last = lsn;
            }
            log.wait_synced(last).await.expect("synced");
            log.close();
            drop(keep);
        }
        // Flip a byte inside record 6's payload.
        let seg = segment_path(dir.path(), 0, "log");
        let mut bytes = std::fs::read(&seg).expect("read");
        let target = at[6] as usize + RECORD_HEADER + 20;
        bytes[target] ^= 0xFF;
        std::fs::write(&seg, &bytes).expect("write");
        let (_log, rec) = open(dir.path()).await;
        let bodies: Vec<_> = rec.iter().map(|r| r.message.body.clone()).collect();
        assert_eq!(bodies, (0..6).map(|i| Bytes::from(format!("m{i}"))).collect::<Vec<_>>());
        // The damaged tail was cut, so the file now ends at record 6.
        assert_eq!(std::fs::metadata(&seg).expect("meta").len(), at[6]);
    }

    #[tokio::test]
    async fn fully_forgotten_segments_are_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = MessageLog::open(dir.path(), SyncPolicy::Always, 4096).expect("open");
        let big = "x".repeat(3000);
        let (first, _) = append(&log, 1, &big);
        let (second, lsn) = append(&log, 1, &big); // rolls to segment 1
        log.wait_synced(lsn).await.expect("synced");
        drop(first);
        // Force the writer to process the forget + delete.
        let (third, lsn) = append(&log, 1, "small");
        log.wait_synced(lsn).await.expect("synced");
        log.close();
        assert!(!segment_path(dir.path(), 0, "log").exists(), "segment 0 should be gone");
        assert!(segment_path(dir.path(), 1, "log").exists());
        drop((second, third));
    }

    #[tokio::test]
    async fn paged_messages_read_back_and_transient_copies_are_not_recovered() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (log, _) = open(dir.path()).await;
            let (durable, _) = append(&log, 3, "durable");
            let transient = log.append_transient(3, 1, &MessageLog::encode(&msg("transient"))).expect("append");
            // Read back immediately: the writer may not have written it yet.
            assert_eq!(transient.read().expect("read").body, Bytes::from("transient"));
            assert_eq!(durable.read().expect("read").body, Bytes::from("durable"));
            log.close();
            drop((durable, transient));
        }
        let (_log, rec) = open(dir.path()).await;
        assert_eq!(rec.iter().map(|r| r.message.body.clone()).collect::<Vec<_>>(), [Bytes::from("durable")]);
    }

    /// Fill segment 0 (4 KiB segments) with 12 records of ~300 bytes, roll to segment 1.
    fn sparse_log(dir: &Path) -> (MessageLog, Vec<Persisted>, Lsn) {
        let (log, _) = MessageLog::open(dir, SyncPolicy::Always, 4096).expect("open");
        let mut kept = Vec::new();
        let mut last = 0;
        for i in 0..14 {
            let (p, lsn) = append(&log, 1, &format!("{i:02}{}", "x".repeat(300)));
            kept.push(p);
            last = lsn;
        }
        assert!(kept.iter().any(|p| p.at.segment == 1), "rolled");
        (log, kept, last)
    }

    #[tokio::test]
    async fn a_sparse_segment_is_compacted_and_its_survivors_stay_readable_and_recoverable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, mut kept, lsn) = sparse_log(dir.path());
        log.wait_synced(lsn).await.expect("synced");
        let in_first = kept.iter().filter(|p| p.at.segment == 0).count();
        // Keep records 3 and 9 of segment 0 (9 delivered), forget the rest of it.
        let mut survivors = Vec::new();
        for (i, p) in kept.drain(..).enumerate() {
            match i {
                3 | 9 => survivors.push(p),
                _ if p.at.segment == 0 => drop(p),
                _ => survivors.push(p),
            }
        }
        survivors[1].mark_delivered();
        let before = std::fs::metadata(segment_path(dir.path(), 0, "log")).expect("meta").len();
        log.compact_now();
        assert!(!segment_path(dir.path(), 0, "log").exists(), "generation 0 is gone");
        let after = std::fs::metadata(generation_path(dir.path(), 0, 1, "log")).expect("gen 1").len();
        assert!(after * 4 < before, "{in_first} records, {before} -> {after} bytes");
        assert_eq!(log.stats().segments_compacted, 1);
        // Handles still read their messages; marks after compaction land on the copies.
        assert!(survivors[0].read().expect("read").body.starts_with(b"03"));
        assert!(survivors[1].read().expect("read").body.starts_with(b"09"));
        let (d, delivered) = survivors.remove(0).detach();
        let mut again = log.attach(d, delivered);
        again.mark_delivered();
        // A forget after compaction: record 9 goes.
        drop(survivors.remove(0));
        let (tail, lsn) = append(&log, 1, "tail");
        log.wait_synced(lsn).await.expect("synced");
        log.close();
        drop((again, survivors, tail));
        let (_log, rec) = open(dir.path()).await;
        let got: Vec<_> = rec.iter().map(|r| (r.message.body[..2].to_vec(), r.delivered())).collect();
        assert_eq!(got[0], (b"03".to_vec(), true), "the survivor, delivered mark kept: {got:?}");
        assert!(got.iter().all(|(b, _)| b != b"09"), "the forgotten copy stays forgotten");
        assert_eq!(got.len(), 1 + (14 - in_first) + 1, "{in_first} {got:?}");
    }

    #[tokio::test]
    async fn a_crash_during_compaction_keeps_one_copy_of_each_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (log, kept, lsn) = sparse_log(dir.path());
            log.wait_synced(lsn).await.expect("synced");
            log.close();
            drop(kept);
        }
        // As if compaction wrote generation 1 but died before deleting generation 0,
        // and another died mid-write (a .tmp).
        std::fs::copy(segment_path(dir.path(), 0, "log"), generation_path(dir.path(), 0, 1, "log")).expect("copy");
        std::fs::write(generation_path(dir.path(), 0, 2, "tmp"), b"half").expect("tmp");
        let (_log, rec) = open(dir.path()).await;
        assert_eq!(rec.len(), 14, "no duplicates");
        assert!(!segment_path(dir.path(), 0, "log").exists());
        assert!(!generation_path(dir.path(), 0, 2, "tmp").exists());
    }

    /// Write amplification with churn: most messages are settled soon after they are
    /// written, 1 in 100 lives on. Without compaction every segment would stay on disk.
    #[tokio::test]
    async fn churn_with_long_lived_stragglers_keeps_disk_use_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = MessageLog::open(dir.path(), SyncPolicy::Always, 64 * 1024).expect("open");
        let body = "y".repeat(1000);
        let mut stragglers = Vec::new();
        let mut last = 0;
        let n = 20_000;
        for i in 0..n {
            let (p, lsn) = append(&log, 1, &body);
            last = lsn;
            if i % 100 == 0 {
                stragglers.push(p);
            }
            if i % 2_000 == 1_999 {
                log.wait_synced(last).await.expect("synced");
                log.compact_now();
            }
        }
        log.wait_synced(last).await.expect("synced");
        log.compact_now();
        let s = log.stats();
        let disk: u64 =
            std::fs::read_dir(dir.path()).expect("dir").filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
        let published = s.record_bytes;
        let amplification = (s.record_bytes + s.mark_bytes + s.compacted_bytes) as f64 / published as f64;
        eprintln!(
            "churn: {n} x ~1 KiB, 1% long-lived: written {:.3}x of appended bytes              (marks {:.3}x, compaction {:.3}x); on disk {} KiB for {} KiB live; {} segments compacted",
            amplification,
            s.mark_bytes as f64 / published as f64,
            s.compacted_bytes as f64 / published as f64,
            disk / 1024,
            stragglers.len() as u64 * 1042 / 1024,
            s.segments_compacted,
        );
        assert!(s.segments_compacted > 0);
        assert!(disk < published / 10, "disk {disk} for {published} appended");
        assert!(amplification < 1.2, "{amplification}");
        log.close();
        drop(stragglers);
    }

    /// 8 publishers, each waiting for its confirm before the next publish (the worst case
    /// for fsync sharing): the writer's counters show them sharing fsyncs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_publishers_share_fsyncs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = MessageLog::open(dir.path(), SyncPolicy::Always, 1 << 24).expect("open");
        let per = 200;
        let tasks: Vec<_> = (0..8)
            .map(|p| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut kept = Vec::new();
                    for i in 0..per {
                        let (h, lsn) = append(&log, 1, &format!("{p}-{i}"));
                        log.wait_synced(lsn).await.expect("synced");
                        kept.push(h);
                    }
                    kept
                })
            })
            .collect();
        let mut kept = Vec::new();
        for t in tasks {
            kept.extend(t.await.expect("publisher"));
        }
        let s = log.stats();
        eprintln!(
            "8 publishers x {per} confirmed appends: {} fsyncs, {:.1} records per fsync",
            s.fsyncs,
            s.records_per_fsync()
        );
        assert_eq!(s.synced_records, 8 * per);
        assert!(s.fsyncs < s.synced_records / 2, "{s:?}");
        assert!(s.records_per_fsync() >= 2.0, "{s:?}");
        log.close();
        drop(kept);
    }

    #[tokio::test]
    async fn an_injected_fsync_failure_fails_the_waiting_appends_and_is_never_retried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = open(dir.path()).await;
        let (a, lsn) = append(&log, 1, "durable");
        log.wait_synced(lsn).await.expect("synced");
        log.inject_fsync_failure();
        let (b, lsn_b) = append(&log, 1, "doomed");
        assert!(matches!(log.wait_synced(lsn_b).await, Err(LogError::Failed)));
        assert!(log.is_failed());
        assert!(matches!(log.append(1, 1, &MessageLog::encode(&msg("late"))), Err(LogError::Failed)));
        assert_eq!(*log.synced().borrow(), lsn, "the durable LSN never moves past the failure");
        assert_eq!(log.stats().failures, 1);
        // What was stored before is intact.
        assert_eq!(a.read().expect("read").body, Bytes::from("durable"));
        log.close();
        drop((a, b));
        let (_log, rec) = open(dir.path()).await;
        assert_eq!(rec[0].message.body, Bytes::from("durable"));
    }

    #[tokio::test]
    async fn a_batch_reaches_the_writer_when_its_scope_ends_and_is_durable_as_a_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut kept = Vec::new();
        {
            let (log, _) = open(dir.path()).await;
            let (acked, lsn) = append(&log, 1, "acked");
            let (mut seen, _) = append(&log, 1, "seen");
            log.wait_synced(lsn).await.expect("synced");
            let before = log.stats();
            let mut last = 0;
            {
                let _batch = log.batch();
                for i in 0..10 {
                    let (p, lsn) = append(&log, 1, &format!("b{i}"));
                    assert!(lsn > last, "LSNs are handed out at once, in order");
                    last = lsn;
                    kept.push(p);
                }
                drop(acked);
                seen.mark_delivered();
                // Nothing was sent: the writer cannot have written any of it.
                std::thread::sleep(Duration::from_millis(20));
                let now = log.stats();
                assert_eq!(now.records_written, before.records_written, "held back until the scope ends");
                assert_eq!(now.marks_written, before.marks_written);
                assert!(*log.synced().borrow() < last);
            }
            log.wait_synced(last).await.expect("the whole batch is durable");
            let after = log.stats();
            assert_eq!(after.records_written, before.records_written + 10);
            assert_eq!(after.synced_records, before.synced_records + 10);
            log.close();
            kept.push(seen);
        }
        let (_log, rec) = open(dir.path()).await;
        let got: Vec<_> = rec.iter().map(|r| (r.message.body.clone(), r.delivered())).collect();
        let mut want = vec![(Bytes::from("seen"), true)];
        want.extend((0..10).map(|i| (Bytes::from(format!("b{i}")), false)));
        assert_eq!(got, want, "the forget and the delivered mark made in the batch were written");
        drop(kept);
    }

    #[tokio::test]
    async fn batch_scopes_nest_and_reads_and_barriers_inside_one_do_not_wait_for_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = open(dir.path()).await;
        let before = log.stats().records_written;
        let outer = log.batch();
        let (a, _) = append(&log, 1, "a");
        {
            let _inner = log.batch();
            let paged = log.append_transient(1, 1, &MessageLog::encode(&msg("paged"))).expect("append");
            // A read of a record still held back sends it first instead of waiting 30 s.
            let started = Instant::now();
            assert_eq!(paged.read().expect("read").body, Bytes::from("paged"));
            assert!(started.elapsed() < Duration::from_secs(5));
            drop(paged);
        }
        let (b, lsn) = append(&log, 1, "b");
        let written = log.stats().records_written;
        assert_eq!(written, before + 2, "the read sent what was held back, then nothing more");
        drop(outer);
        log.wait_synced(lsn).await.expect("synced");
        assert_eq!(log.stats().records_written, before + 3);
        // A scope of another log inside this one's is a no-op and holds nothing back.
        let other_dir = tempfile::tempdir().expect("tempdir");
        let (other, _) = open(other_dir.path()).await;
        {
            let _mine = log.batch();
            let _theirs = other.batch();
            let (c, lsn) = append(&other, 1, "c");
            other.wait_synced(lsn).await.expect("not held back");
            drop(c);
        }
        log.close();
        other.close();
        drop((a, b));
    }

    /// A thread that appends outside any scope sends what another thread's scope holds back
    /// first: the log's order, and so the meaning of the durable LSN, is kept.
    #[tokio::test]
    async fn an_append_outside_a_scope_sends_earlier_held_back_ones_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (log, _) = open(dir.path()).await;
            let (held_tx, held_rx) = mpsc::channel();
            let (done_tx, done_rx) = mpsc::channel::<()>();
            let batching = {
                let log = log.clone();
                std::thread::spawn(move || {
                    let _batch = log.batch();
                    let (p, lsn) = append(&log, 1, "held");
                    let _ = held_tx.send(lsn);
                    // Keep the scope open until the other append is durable.
                    let _ = done_rx.recv_timeout(Duration::from_secs(30));
                    p
                })
            };
            let held_lsn = held_rx.recv_timeout(Duration::from_secs(30)).expect("held");
            let (direct, lsn) = append(&log, 1, "direct");
            assert!(lsn > held_lsn);
            log.wait_synced(lsn).await.expect("synced");
            assert!(*log.synced().borrow() >= held_lsn, "the earlier append is durable too");
            let _ = done_tx.send(());
            let held = batching.join().expect("thread");
            log.close();
            drop((held, direct));
        }
        let (_log, rec) = open(dir.path()).await;
        let bodies: Vec<_> = rec.iter().map(|r| r.message.body.clone()).collect();
        assert_eq!(bodies, [Bytes::from("held"), Bytes::from("direct")]);
    }

    #[tokio::test]
    async fn marks_of_many_segments_written_in_one_go_all_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (log, kept, lsn) = sparse_log(dir.path());
            log.wait_synced(lsn).await.expect("synced");
            let batch = log.batch();
            // Forget every other record, in both segments, in one batch.
            let mut keep = Vec::new();
            for (i, p) in kept.into_iter().enumerate() {
                if i % 2 == 0 {
                    drop(p);
                } else {
                    keep.push(p);
                }
            }
            let (tail, lsn) = append(&log, 1, "tail");
            drop(batch);
            log.wait_synced(lsn).await.expect("synced");
            // Closing waits for the marks, which follow the fsync.
            log.close();
            assert_eq!(log.stats().marks_written, 7);
            drop((keep, tail));
        }
        let (_log, rec) = open(dir.path()).await;
        let got: Vec<_> = rec.iter().map(|r| r.message.body[..2].to_vec()).collect();
        let mut want: Vec<Vec<u8>> = (0..14).filter(|i| i % 2 == 1).map(|i| format!("{i:02}").into_bytes()).collect();
        want.push(b"ta".to_vec());
        assert_eq!(got, want);
    }

    /// Segments after the first are prepared ahead (written out in full); records written
    /// into them read back before and after they are written, survive a restart, and the
    /// unused end is cut (from the segment the writer left at once, from the last one at
    /// recovery, silently).
    #[tokio::test]
    async fn prepared_segments_are_used_read_back_and_cut_to_their_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = 64 * 1024;
        let body = "p".repeat(1000);
        let mut kept = Vec::new();
        {
            let (log, _) = MessageLog::open(dir.path(), SyncPolicy::Always, size).expect("open");
            let mut last = 0;
            for i in 0..200 {
                let (p, lsn) = append(&log, 1, &format!("{i:03}{body}"));
                // Give the helper time to prepare the next segment now and then.
                if i % 10 == 9 {
                    log.wait_synced(lsn).await.expect("synced");
                    std::thread::sleep(Duration::from_millis(2));
                }
                last = lsn;
                kept.push(p);
            }
            log.wait_synced(last).await.expect("synced");
            assert!(log.stats().prepared_segments >= 1, "{:?}", log.stats());
            // A record of the current (prepared) segment, read at once: not written yet.
            let paged = log.append_transient(1, 1, &MessageLog::encode(&msg("fresh"))).expect("append");
            assert_eq!(paged.read().expect("read").body, Bytes::from("fresh"));
            for p in kept.iter().step_by(37) {
                assert!(p.read().expect("read").body.ends_with(body.as_bytes()));
            }
            let last_segment = kept.iter().map(|p| p.at.segment).max().unwrap_or(0);
            for n in 1..last_segment {
                let len = std::fs::metadata(segment_path(dir.path(), n, "log")).expect("sealed").len();
                assert!(len <= size, "segment {n} was cut to its records: {len}");
            }
            log.close();
            drop(paged);
        }
        let (_log, rec) = open(dir.path()).await;
        let got: Vec<_> = rec.iter().map(|r| r.message.body[..3].to_vec()).collect();
        let want: Vec<_> = (0..200).map(|i| format!("{i:03}").into_bytes()).collect();
        assert_eq!(got, want);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        for n in &names {
            if n.ends_with(".log") {
                let bytes = std::fs::read(dir.path().join(n)).expect("read");
                let (records, bad) = scan_records(&bytes);
                assert!(bad.is_none(), "{n}: no zero tail left after recovery ({} records)", records.len());
            }
        }
        drop(kept);
    }

    /// A kill right after a prepared segment was renamed into place (nothing written to it
    /// yet), or while the next one was being prepared: recovery keeps every record, drops the
    /// all-zero segment and the unfinished preparation.
    #[tokio::test]
    async fn a_kill_around_segment_preparation_loses_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (log, _) = open(dir.path()).await;
            let (a, _) = append(&log, 1, "a");
            let (b, lsn) = append(&log, 1, "b");
            log.wait_synced(lsn).await.expect("synced");
            log.close();
            drop((a, b));
        }
        std::fs::write(segment_path(dir.path(), 1, "log"), vec![0u8; 8192]).expect("prepared, unused");
        std::fs::write(segment_path(dir.path(), 2, "tmp"), vec![0u8; 4096]).expect("half prepared");
        let (log, rec) = open(dir.path()).await;
        let bodies: Vec<_> = rec.iter().map(|r| r.message.body.clone()).collect();
        assert_eq!(bodies, [Bytes::from("a"), Bytes::from("b")]);
        assert!(!segment_path(dir.path(), 2, "tmp").exists());
        // The zero segment is emptied at once and deleted by the writer.
        log.close();
        let unused = segment_path(dir.path(), 1, "log");
        assert!(!unused.exists() || std::fs::metadata(&unused).expect("meta").len() == 0);
        // New appends go after it and recover too.
        let (c, lsn) = append(&log, 1, "c");
        log.wait_synced(lsn).await.expect("synced");
        assert!(c.at.segment >= 2);
        drop(c);
    }

    #[tokio::test]
    async fn group_commit_confirms_many_appends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) =
            MessageLog::open(dir.path(), SyncPolicy::Batch(Duration::from_millis(5)), 1 << 20).expect("open");
        let mut handles = Vec::new();
        let mut last = 0;
        for i in 0..1000 {
            let (p, lsn) = append(&log, 1, &i.to_string());
            handles.push(p);
            last = lsn;
        }
        log.wait_synced(last).await.expect("synced");
        assert_eq!(*log.synced().borrow(), 1000);
        log.close();
    }
}
