//! The stream segment log: each shard is a directory of append-only segment files
//! (`NNNNNNNNNN.seg`), written by one writer thread per vhost with group commit.
//!
//! Record: `[len u32 LE][crc32c u32 LE][payload]`, payload =
//! `[counter u64][arrival ms u64][hash key u128][pk len u16][pk][meta len u32][meta][data]`
//! (all little-endian), the same framing idea as the message log (`store/log.rs`).
//!
//! - **Where** a record goes is decided by the state machine ([`super::state`]); this file only
//!   executes: it checks that the offset is the file's end, writes, and fsyncs.
//! - **Group commit**: the writer drains every queued append, writes them in order, fsyncs each
//!   touched file once, then runs each append's completion (which makes the records readable and
//!   acknowledges the client). A new segment file or shard directory is fsynced into its
//!   parent directory before anything in it is acknowledged.
//! - **Failure**: a failed write or fsync is never retried; the log refuses every later append.
//! - **Retention** deletes whole segment files; **deleting a stream** removes its directory.
//! - **Recovery** ([`scan_shard`]) validates every record's CRC; a torn or corrupt tail of the
//!   newest segment is truncated with a warning, a bad record in an older segment ends that
//!   segment with an error. Nothing here panics on any file content.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use bytes::Bytes;
use parking_lot::Mutex;

use super::state::Entry;
use crate::time::Millis;

const HEADER: usize = 8;
/// Fixed part of the payload: counter, arrival, hash key, pk length, meta length.
const FIXED: usize = 8 + 8 + 16 + 2 + 4;
/// Refuse records larger than this when reading (a corrupt length must not allocate GiBs).
pub const MAX_RECORD: u32 = 64 * 1024 * 1024;

/// A record as stored and read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Stream-wide append counter.
    pub counter: u64,
    /// Arrival time.
    pub arrival: Millis,
    /// The hash key it was placed by.
    pub hash_key: u128,
    /// Partition key.
    pub partition_key: String,
    /// Front-end metadata (e.g. encoded AMQP properties); empty if none.
    pub meta: Bytes,
    /// The data.
    pub data: Bytes,
}

/// The on-disk size of a record with these parts.
pub fn record_len(partition_key: &str, meta: &[u8], data: &[u8]) -> usize {
    HEADER + FIXED + partition_key.len() + meta.len() + data.len()
}

/// Encode a record (header included).
pub fn encode_record(
    counter: u64,
    arrival: Millis,
    hash_key: u128,
    partition_key: &str,
    meta: &[u8],
    data: &[u8],
) -> Vec<u8> {
    let total = record_len(partition_key, meta, data);
    let mut b = Vec::with_capacity(total);
    b.extend_from_slice(&((total - HEADER) as u32).to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&counter.to_le_bytes());
    b.extend_from_slice(&arrival.to_le_bytes());
    b.extend_from_slice(&hash_key.to_le_bytes());
    b.extend_from_slice(&(partition_key.len() as u16).to_le_bytes());
    b.extend_from_slice(partition_key.as_bytes());
    b.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    b.extend_from_slice(meta);
    b.extend_from_slice(data);
    let crc = crc32c::crc32c(&b[HEADER..]);
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    b
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Decode a payload whose CRC was checked; `None` if its inner lengths do not add up.
fn decode_payload(p: &[u8]) -> Option<StoredRecord> {
    if p.len() < FIXED {
        return None;
    }
    let counter = le_u64(&p[0..8]);
    let arrival = le_u64(&p[8..16]);
    let mut h = [0u8; 16];
    h.copy_from_slice(&p[16..32]);
    let pk_len = u16::from_le_bytes([p[32], p[33]]) as usize;
    let pk = p.get(34..34 + pk_len)?;
    let ml = p.get(34 + pk_len..38 + pk_len)?;
    let meta_len = u32::from_le_bytes([ml[0], ml[1], ml[2], ml[3]]) as usize;
    let meta_start = 38 + pk_len;
    let meta = p.get(meta_start..meta_start.checked_add(meta_len)?)?;
    let data = p.get(meta_start + meta_len..)?;
    Some(StoredRecord {
        counter,
        arrival,
        hash_key: u128::from_le_bytes(h),
        partition_key: String::from_utf8_lossy(pk).into_owned(),
        meta: Bytes::copy_from_slice(meta),
        data: Bytes::copy_from_slice(data),
    })
}

/// Check one record at `pos` of `buf`: its payload if the header, length and CRC are valid.
fn record_at(buf: &[u8], pos: usize) -> Option<&[u8]> {
    let h = buf.get(pos..pos + HEADER)?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    if (len as usize) < FIXED || len > MAX_RECORD {
        return None;
    }
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let payload = buf.get(pos + HEADER..pos + HEADER + len as usize)?;
    (crc32c::crc32c(payload) == crc).then_some(payload)
}

/// The file of `segment` in shard directory `dir`.
pub fn segment_path(dir: &Path, segment: u32) -> PathBuf {
    dir.join(format!("{segment:010}.seg"))
}

/// What recovery found in one shard directory.
#[derive(Debug, Default)]
pub struct ShardScan {
    /// Every valid record, in log order.
    pub entries: Vec<Entry>,
    /// One more than the highest segment number seen (appends must start at or after it).
    pub next_segment: u32,
}

/// Read a shard directory back (see the module docs for what happens to damaged files).
pub fn scan_shard(dir: &Path) -> io::Result<ShardScan> {
    let mut numbers: Vec<u32> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok()?.strip_suffix(".seg")?.parse().ok())
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ShardScan::default()),
        Err(e) => return Err(e),
    };
    numbers.sort_unstable();
    let mut scan = ShardScan { entries: Vec::new(), next_segment: numbers.last().map_or(0, |n| n + 1) };
    let last = numbers.last().copied();
    for n in numbers {
        let path = segment_path(dir, n);
        let buf = std::fs::read(&path)?;
        let mut pos = 0usize;
        let before = scan.entries.len();
        while pos < buf.len() {
            let Some(payload) = record_at(&buf, pos) else {
                if Some(n) == last {
                    tracing::warn!(
                        path = %path.display(),
                        offset = pos,
                        dropped_bytes = buf.len() - pos,
                        "torn tail in a stream segment; truncating to the last valid record"
                    );
                    let f = OpenOptions::new().write(true).open(&path)?;
                    f.set_len(pos as u64)?;
                    f.sync_all()?;
                } else {
                    tracing::error!(
                        path = %path.display(),
                        offset = pos,
                        "corrupt record in a sealed stream segment; the rest of this segment is skipped"
                    );
                }
                break;
            };
            let len = (HEADER + payload.len()) as u32;
            let counter = le_u64(&payload[0..8]);
            let arrival = le_u64(&payload[8..16]);
            if scan.entries.last().is_some_and(|e: &Entry| e.counter >= counter) {
                tracing::error!(path = %path.display(), offset = pos, "stream record out of order; skipped");
            } else {
                scan.entries.push(Entry { counter, arrival, segment: n, offset: pos as u64, len });
            }
            pos += len as usize;
        }
        if scan.entries.len() == before {
            // An empty segment (or one holding nothing valid) is not worth keeping.
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(scan)
}

/// A write the writer performs: `bytes` at `offset` of a segment of shard directory `dir`.
#[derive(Debug)]
pub struct Write {
    /// Shard directory.
    pub dir: PathBuf,
    /// Segment number.
    pub segment: u32,
    /// Expected offset (the file's current length).
    pub offset: u64,
    /// The encoded record.
    pub bytes: Vec<u8>,
}

/// Called by the writer thread once a batch of writes is durable (or failed).
pub type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;

enum Cmd {
    Append { writes: Vec<Write>, done: Completion },
    DeleteFile(PathBuf),
    DeleteDir(PathBuf),
    Barrier(mpsc::Sender<()>),
}

struct Shared {
    tx: Mutex<mpsc::Sender<Cmd>>,
    failed: Arc<AtomicBool>,
    readers: Mutex<HashMap<PathBuf, Arc<File>>>,
}

/// The stream log of one vhost (cheap to clone).
#[derive(Clone)]
pub struct StreamLog {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamLog").field("failed", &self.is_failed()).finish_non_exhaustive()
    }
}

impl StreamLog {
    /// Start the writer thread.
    pub fn start(name: &str) -> io::Result<StreamLog> {
        let (tx, rx) = mpsc::channel();
        let failed = Arc::new(AtomicBool::new(false));
        let writer_failed = Arc::clone(&failed);
        std::thread::Builder::new()
            .name(format!("switchyard-streams-{name}"))
            .spawn(move || writer_loop(&rx, &writer_failed))?;
        Ok(StreamLog { shared: Arc::new(Shared { tx: Mutex::new(tx), failed, readers: Mutex::new(HashMap::new()) }) })
    }

    /// True once a write or fsync failed.
    pub fn is_failed(&self) -> bool {
        self.shared.failed.load(Ordering::Acquire)
    }

    /// Queue `writes` (in order); `done` runs on the writer thread once they are all durable.
    pub fn append(&self, writes: Vec<Write>, done: Completion) {
        if self.is_failed() {
            return done(Err("an earlier write failed; the stream log refuses writes".into()));
        }
        let sent = self.shared.tx.lock().send(Cmd::Append { writes, done });
        if let Err(mpsc::SendError(Cmd::Append { done, .. })) = sent {
            done(Err("stream log writer stopped".into()));
        }
    }

    /// Delete a segment file (after everything queued before it).
    pub fn delete_segment(&self, dir: &Path, segment: u32) {
        let path = segment_path(dir, segment);
        self.shared.readers.lock().remove(&path);
        let _ = self.shared.tx.lock().send(Cmd::DeleteFile(path));
    }

    /// Delete a whole directory (a shard or a stream).
    pub fn delete_dir(&self, dir: &Path) {
        self.shared.readers.lock().retain(|p, _| !p.starts_with(dir));
        let _ = self.shared.tx.lock().send(Cmd::DeleteDir(dir.to_path_buf()));
    }

    /// Wait until the writer has handled everything queued so far.
    pub fn barrier(&self) {
        let (tx, rx) = mpsc::channel();
        if self.shared.tx.lock().send(Cmd::Barrier(tx)).is_ok() {
            let _ = rx.recv_timeout(std::time::Duration::from_secs(30));
        }
    }

    /// Read the record of `entry` in shard directory `dir`.
    pub fn read(&self, dir: &Path, entry: &Entry) -> io::Result<StoredRecord> {
        use std::os::unix::fs::FileExt;
        let path = segment_path(dir, entry.segment);
        let file = {
            let mut readers = self.shared.readers.lock();
            match readers.get(&path) {
                Some(f) => Arc::clone(f),
                None => {
                    let f = Arc::new(File::open(&path)?);
                    if readers.len() > 256 {
                        readers.clear();
                    }
                    readers.insert(path.clone(), Arc::clone(&f));
                    f
                }
            }
        };
        if entry.len > MAX_RECORD + HEADER as u32 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "stream record too large"));
        }
        let mut buf = vec![0u8; entry.len as usize];
        file.read_exact_at(&mut buf, entry.offset)?;
        let payload =
            record_at(&buf, 0).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad stream record"))?;
        decode_payload(payload).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad stream record fields"))
    }
}

/// Create `dir` (and parents) and fsync each new directory into its parent.
fn create_dirs(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

struct Open {
    segment: u32,
    file: File,
    len: u64,
    dirty: bool,
}

struct Writer<'a> {
    failed: &'a AtomicBool,
    open: HashMap<PathBuf, Open>,
}

impl Writer<'_> {
    fn fail(&self, what: &str, e: &io::Error) -> String {
        tracing::error!(error = %e, "stream log {what} failed; refusing further stream appends");
        self.failed.store(true, Ordering::Release);
        format!("stream log {what} failed: {e}")
    }

    fn write(&mut self, w: &Write) -> Result<(), String> {
        if self.failed.load(Ordering::Acquire) {
            return Err("stream log failed earlier".into());
        }
        let current = self.open.get(&w.dir).map(|o| o.segment);
        if current != Some(w.segment) {
            if let Some(old) = self.open.remove(&w.dir)
                && old.dirty
                && let Err(e) = old.file.sync_data()
            {
                return Err(self.fail("fsync", &e));
            }
            create_dirs(&w.dir).map_err(|e| self.fail("directory create", &e))?;
            let path = segment_path(&w.dir, w.segment);
            let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| self.fail("open", &e))?;
            let len = file.metadata().map_err(|e| self.fail("stat", &e))?.len();
            File::open(&w.dir).and_then(|d| d.sync_all()).map_err(|e| self.fail("directory fsync", &e))?;
            self.open.insert(w.dir.clone(), Open { segment: w.segment, file, len, dirty: false });
        }
        let Some(o) = self.open.get_mut(&w.dir) else { return Err("segment not open".into()) };
        if o.len != w.offset {
            let e = io::Error::other(format!("segment length {} but record offset {}", o.len, w.offset));
            return Err(self.fail("offset check", &e));
        }
        if let Err(e) = o.file.write_all(&w.bytes) {
            return Err(self.fail("write", &e));
        }
        o.len += w.bytes.len() as u64;
        o.dirty = true;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), String> {
        let mut err = None;
        for o in self.open.values_mut().filter(|o| o.dirty) {
            if let Err(e) = o.file.sync_data() {
                err = Some(e);
                break;
            }
            o.dirty = false;
        }
        match err {
            Some(e) => Err(self.fail("fsync", &e)),
            None => Ok(()),
        }
    }
}

fn writer_loop(rx: &mpsc::Receiver<Cmd>, failed: &AtomicBool) {
    let mut w = Writer { failed, open: HashMap::new() };
    while let Ok(first) = rx.recv() {
        let mut done: Vec<(Completion, Result<(), String>)> = Vec::new();
        let mut barriers = Vec::new();
        let mut deletes = Vec::new();
        let mut next = Some(first);
        while let Some(cmd) = next {
            match cmd {
                Cmd::Append { writes, done: d } => {
                    let r = writes.iter().try_for_each(|x| w.write(x));
                    done.push((d, r));
                }
                Cmd::DeleteFile(p) => deletes.push((p, false)),
                Cmd::DeleteDir(p) => deletes.push((p, true)),
                Cmd::Barrier(b) => barriers.push(b),
            }
            // Deletions go after this batch's fsync; stop draining at one so that an append
            // queued after a deletion is not written before it.
            if !deletes.is_empty() {
                break;
            }
            next = rx.try_recv().ok();
        }
        let synced = w.sync();
        for (d, r) in done {
            d(r.and(synced.clone()));
        }
        for (path, dir) in deletes {
            w.open.retain(|k, _| !(k == &path || k.starts_with(&path) || (!dir && path.starts_with(k))));
            let r = if dir { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            if let Err(e) = r
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "could not delete stream data");
            }
        }
        for b in barriers {
            let _ = b.send(());
        }
    }
    let _ = w.sync();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(counter: u64, segment: u32, offset: u64, len: usize) -> Entry {
        Entry { counter, arrival: 1000 + counter, segment, offset, len: len as u32 }
    }

    /// Append records 0..n to `dir` through the writer, one segment; returns their entries.
    fn write_records(log: &StreamLog, dir: &Path, n: u64) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut writes = Vec::new();
        let mut offset = 0u64;
        for c in 0..n {
            let bytes =
                encode_record(c, 1000 + c, u128::from(c) << 64, &format!("pk{c}"), b"", format!("data-{c}").as_bytes());
            entries.push(entry(c, 0, offset, bytes.len()));
            writes.push(Write { dir: dir.to_path_buf(), segment: 0, offset, bytes: bytes.clone() });
            offset += bytes.len() as u64;
        }
        let (tx, rx) = mpsc::channel();
        log.append(writes, Box::new(move |r| tx.send(r).expect("send")));
        rx.recv().expect("completion").expect("durable");
        entries
    }

    #[test]
    fn records_round_trip_through_the_writer() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("s").join("000");
        let log = StreamLog::start("t").expect("start");
        let entries = write_records(&log, &dir, 5);
        let r = log.read(&dir, &entries[3]).expect("read");
        assert_eq!(r.counter, 3);
        assert_eq!(r.partition_key, "pk3");
        assert_eq!(r.data, Bytes::from("data-3"));
        assert_eq!(r.hash_key, 3u128 << 64);
        let scan = scan_shard(&dir).expect("scan");
        assert_eq!(scan.entries, entries);
        assert_eq!(scan.next_segment, 1);
    }

    #[test]
    fn a_wrong_offset_fails_the_log_for_good() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("x");
        let log = StreamLog::start("t").expect("start");
        let bytes = encode_record(0, 1, 0, "k", b"", b"d");
        let (tx, rx) = mpsc::channel();
        log.append(
            vec![Write { dir: dir.clone(), segment: 0, offset: 7, bytes }],
            Box::new(move |r| tx.send(r).expect("send")),
        );
        assert!(rx.recv().expect("completion").is_err());
        assert!(log.is_failed());
        let (tx, rx) = mpsc::channel();
        log.append(Vec::new(), Box::new(move |r| tx.send(r).expect("send")));
        assert!(rx.recv().expect("completion").is_err());
    }

    #[test]
    fn a_torn_tail_is_truncated_with_earlier_records_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("shard");
        let log = StreamLog::start("t").expect("start");
        let entries = write_records(&log, &dir, 4);
        let path = segment_path(&dir, 0);
        let full = std::fs::metadata(&path).expect("meta").len();
        // Half of a fifth record.
        let fifth = encode_record(4, 5, 0, "pk4", b"", b"data-4");
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&fifth[..fifth.len() / 2]).expect("write");
        drop(f);
        let scan = scan_shard(&dir).expect("scan");
        assert_eq!(scan.entries, entries);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), full);
    }

    #[test]
    fn a_flipped_byte_keeps_every_record_before_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("shard");
        let log = StreamLog::start("t").expect("start");
        let entries = write_records(&log, &dir, 10);
        let path = segment_path(&dir, 0);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[entries[6].offset as usize + HEADER + 3] ^= 0xFF;
        std::fs::write(&path, &bytes).expect("write");
        let scan = scan_shard(&dir).expect("scan");
        assert_eq!(scan.entries, entries[..6]);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), entries[6].offset);
    }

    #[test]
    fn garbage_lengths_and_empty_files_do_not_panic() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("shard");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(segment_path(&dir, 0), [0xFFu8; 64]).expect("write");
        std::fs::write(segment_path(&dir, 1), []).expect("write");
        std::fs::write(segment_path(&dir, 2), [1u8, 2, 3]).expect("write");
        let scan = scan_shard(&dir).expect("scan");
        assert!(scan.entries.is_empty());
        assert_eq!(scan.next_segment, 3);
        assert!(decode_payload(&[0u8; 10]).is_none());
        let mut p = vec![0u8; FIXED];
        p[32] = 0xFF; // pk length past the end
        assert!(decode_payload(&p).is_none());
    }

    #[test]
    fn deleting_a_segment_removes_its_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("shard");
        let log = StreamLog::start("t").expect("start");
        write_records(&log, &dir, 2);
        log.delete_segment(&dir, 0);
        log.barrier();
        assert!(!segment_path(&dir, 0).exists());
        log.delete_dir(&dir);
        log.barrier();
        assert!(!dir.exists());
    }
}
