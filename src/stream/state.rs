//! The stream state machine: shards, lineage, the record index, retention, reader offsets.
//!
//! Deterministic and free of I/O, locks and clocks: every command takes `now`, and effects on
//! storage come back as [`Effect`]s that the runtime ([`super::Stream`]) carries out through
//! the segment log. Bytes never pass through here; the machine only decides *where* a record
//! goes (shard, segment, offset), and keeps an index of where each record is.
//!
//! A record becomes readable only once the runtime reports it durable
//! ([`StreamState::mark_durable`]), so no reader ever sees a record that a crash could lose.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::error::StreamError;
use super::hashkey::{HashKey, even_ranges, even_split};
use super::seqno::SequenceNumber;
use crate::time::Millis;

/// One hour in milliseconds.
pub const HOUR_MS: u64 = 3_600_000;
/// Default retention: 24 hours.
pub const DEFAULT_RETENTION_HOURS: u32 = 24;
/// Longest retention: 365 days.
pub const MAX_RETENTION_HOURS: u32 = 8_760;
/// Most shards one stream may have open.
pub const MAX_OPEN_SHARDS: u32 = 500;
/// Default segment size of a shard's log.
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// How a stream's capacity is managed (Kinesis' stream modes; informational here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum StreamMode {
    /// A fixed number of shards, changed by resharding.
    #[default]
    Provisioned,
    /// Capacity managed by the service.
    OnDemand,
}

/// A stream's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamSettings {
    /// Records older than this are dropped (whole segments at a time).
    pub retention_hours: u32,
    /// If set, the oldest segments are dropped while the stream holds more bytes than this.
    pub max_bytes: Option<u64>,
    /// Size at which a shard's log starts a new segment.
    pub segment_bytes: u64,
    /// Capacity mode.
    pub mode: StreamMode,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            retention_hours: DEFAULT_RETENTION_HOURS,
            max_bytes: None,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            mode: StreamMode::Provisioned,
        }
    }
}

/// Serde for `u128` as a decimal string (JSON numbers lose precision past 2^53 in many readers).
mod dec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What is kept about a shard (persisted in the stream's metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    /// Index: `shardId-000000000003` is 3.
    pub index: u32,
    /// First hash key of its range.
    #[serde(with = "dec")]
    pub start_hash: HashKey,
    /// Last hash key of its range (inclusive).
    #[serde(with = "dec")]
    pub end_hash: HashKey,
    /// The shard it was split from, or the first of the two it was merged from.
    pub parent: Option<u32>,
    /// The second shard of a merge (or the second overlapping shard of a rescale).
    pub adjacent_parent: Option<u32>,
    /// First counter that may land here.
    pub starting_counter: u64,
    /// Set when closed: the last counter the stream had assigned by then.
    pub ending_counter: Option<u64>,
    /// When it was closed.
    pub closed_at: Option<Millis>,
}

impl ShardMeta {
    /// True while it takes appends.
    pub fn is_open(&self) -> bool {
        self.ending_counter.is_none()
    }

    /// The shard id as Kinesis spells it.
    pub fn id(&self) -> String {
        shard_id(self.index)
    }

    /// The first sequence number that may be in this shard.
    pub fn starting_sequence(&self) -> SequenceNumber {
        SequenceNumber { counter: self.starting_counter, shard: self.index }
    }

    /// The last sequence number of a closed shard.
    pub fn ending_sequence(&self) -> Option<SequenceNumber> {
        self.ending_counter.map(|c| SequenceNumber { counter: c, shard: self.index })
    }
}

/// `shardId-` + 12 digits.
pub fn shard_id(index: u32) -> String {
    format!("shardId-{index:012}")
}

/// Parse a shard id (`shardId-000000000003`, or the bare number as Kinesis also accepts).
pub fn parse_shard_id(text: &str) -> Option<u32> {
    let digits = text.strip_prefix("shardId-").unwrap_or(text);
    if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A registered (enhanced fan-out) consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerMeta {
    /// Its name.
    pub name: String,
    /// When it was registered.
    pub created_at: Millis,
}

/// Everything about a stream that is persisted outside its records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMeta {
    /// Name.
    pub name: String,
    /// Random id of this incarnation (a deleted and re-created stream gets a new one).
    pub incarnation: u64,
    /// Creation time.
    pub created_at: Millis,
    /// Settings.
    pub settings: StreamSettings,
    /// Every shard still known (open, or closed and not yet past retention).
    pub shards: Vec<ShardMeta>,
    /// Next append counter (a floor: recovery also looks at the records).
    pub next_counter: u64,
    /// Next shard index.
    pub next_shard: u32,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Registered consumers.
    pub consumers: Vec<ConsumerMeta>,
    /// Named readers' stored positions: reader → shard index → next counter to read.
    pub offsets: BTreeMap<String, BTreeMap<u32, u64>>,
    /// Free-form attributes front-ends keep with the stream (e.g. the AMQP declare arguments).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// Where one record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Its counter.
    pub counter: u64,
    /// Arrival time (non-decreasing within a shard).
    pub arrival: Millis,
    /// Segment number.
    pub segment: u32,
    /// Byte offset in the segment.
    pub offset: u64,
    /// Bytes on disk (header included).
    pub len: u32,
}

#[derive(Debug, Clone)]
struct Segment {
    number: u32,
    /// First index in `Shard::entries` of this segment's records.
    first: usize,
    count: usize,
    bytes: u64,
    /// Appends go to this segment while true (the newest segment of a shard).
    writable: bool,
}

#[derive(Debug, Clone)]
struct Shard {
    meta: ShardMeta,
    /// Index of the retained records, in counter order. Entries at or below `durable` are visible.
    entries: VecDeque<Entry>,
    /// How many entries were dropped from the front (so segment `first` stays absolute).
    dropped: usize,
    segments: VecDeque<Segment>,
    next_segment: u32,
    durable: Option<u64>,
    bytes: u64,
}

impl Shard {
    fn new(meta: ShardMeta) -> Shard {
        Shard {
            meta,
            entries: VecDeque::new(),
            dropped: 0,
            segments: VecDeque::new(),
            next_segment: 0,
            durable: None,
            bytes: 0,
        }
    }

    /// Position (in `entries`) of the first entry with counter >= `counter`.
    fn position(&self, counter: u64) -> usize {
        self.entries.partition_point(|e| e.counter < counter)
    }

    fn visible_len(&self) -> usize {
        match self.durable {
            Some(d) => self.entries.partition_point(|e| e.counter <= d),
            None => 0,
        }
    }
}

/// What the runtime must do to storage after a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Delete one segment file of a shard.
    DeleteSegment {
        /// Shard index.
        shard: u32,
        /// Segment number.
        segment: u32,
    },
    /// Delete a shard's directory (the shard expired).
    DeleteShard(u32),
    /// The metadata changed: save it.
    SaveMeta,
}

/// Where an append goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Its sequence number (counter and shard).
    pub sequence: SequenceNumber,
    /// Arrival timestamp given to it.
    pub arrival: Millis,
    /// Segment number.
    pub segment: u32,
    /// Byte offset in the segment.
    pub offset: u64,
}

/// Where a reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest retained record.
    TrimHorizon,
    /// Just after the newest record.
    Latest,
    /// At this sequence number.
    At(SequenceNumber),
    /// Just after this sequence number.
    After(SequenceNumber),
    /// At the first record that arrived at or after this time.
    AtTimestamp(Millis),
}

/// The answer to a read: where the records are, and where to continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The records to read, in order.
    pub entries: Vec<Entry>,
    /// The counter to continue from.
    pub next: u64,
    /// True when the shard is closed and everything in it has been read: there is no next.
    pub end_of_shard: bool,
    /// Arrival time of the first readable record not returned (for `MillisBehindLatest`);
    /// `None` when the reader is at the tip.
    pub next_arrival: Option<Millis>,
}

/// The state of one stream.
#[derive(Debug, Clone)]
pub struct StreamState {
    name: String,
    incarnation: u64,
    created_at: Millis,
    settings: StreamSettings,
    shards: BTreeMap<u32, Shard>,
    next_counter: u64,
    next_shard: u32,
    tags: BTreeMap<String, String>,
    consumers: Vec<ConsumerMeta>,
    offsets: BTreeMap<String, BTreeMap<u32, u64>>,
    attributes: BTreeMap<String, String>,
}

impl StreamState {
    /// A new stream of `shard_count` shards splitting the hash-key space evenly.
    pub fn new(
        name: &str,
        incarnation: u64,
        shard_count: u32,
        settings: StreamSettings,
        now: Millis,
    ) -> Result<StreamState, StreamError> {
        if shard_count == 0 || shard_count > MAX_OPEN_SHARDS {
            return Err(StreamError::Invalid(format!(
                "shard count {shard_count} must be between 1 and {MAX_OPEN_SHARDS}"
            )));
        }
        check_retention(settings.retention_hours)?;
        let shards = even_ranges(shard_count)
            .into_iter()
            .zip(0u32..)
            .map(|((start_hash, end_hash), index)| {
                let meta = ShardMeta {
                    index,
                    start_hash,
                    end_hash,
                    parent: None,
                    adjacent_parent: None,
                    starting_counter: 0,
                    ending_counter: None,
                    closed_at: None,
                };
                (index, Shard::new(meta))
            })
            .collect();
        Ok(StreamState {
            name: name.to_string(),
            incarnation,
            created_at: now,
            settings,
            shards,
            next_counter: 0,
            next_shard: shard_count,
            tags: BTreeMap::new(),
            consumers: Vec::new(),
            offsets: BTreeMap::new(),
            attributes: BTreeMap::new(),
        })
    }

    /// Rebuild from stored metadata; records are added back with [`StreamState::restore_entry`].
    pub fn from_meta(meta: StreamMeta) -> StreamState {
        let shards = meta.shards.into_iter().map(|s| (s.index, Shard::new(s))).collect();
        StreamState {
            name: meta.name,
            incarnation: meta.incarnation,
            created_at: meta.created_at,
            settings: meta.settings,
            shards,
            next_counter: meta.next_counter,
            next_shard: meta.next_shard,
            tags: meta.tags,
            consumers: meta.consumers,
            offsets: meta.offsets,
            attributes: meta.attributes,
        }
    }

    /// The persisted part.
    pub fn meta(&self) -> StreamMeta {
        StreamMeta {
            name: self.name.clone(),
            incarnation: self.incarnation,
            created_at: self.created_at,
            settings: self.settings.clone(),
            shards: self.shards.values().map(|s| s.meta.clone()).collect(),
            next_counter: self.next_counter,
            next_shard: self.next_shard,
            tags: self.tags.clone(),
            consumers: self.consumers.clone(),
            offsets: self.offsets.clone(),
            attributes: self.attributes.clone(),
        }
    }

    /// Put back a record found on disk at start-up (in log order per shard); it is durable.
    /// Segment `segment` becomes the shard's newest.
    pub fn restore_entry(&mut self, shard: u32, entry: Entry) {
        let Some(s) = self.shards.get_mut(&shard) else { return };
        if s.entries.back().is_some_and(|e| e.counter >= entry.counter) {
            return;
        }
        let pos = s.dropped + s.entries.len();
        match s.segments.back_mut() {
            Some(seg) if seg.number == entry.segment => {
                seg.count += 1;
                seg.bytes += u64::from(entry.len);
            }
            _ => {
                if let Some(seg) = s.segments.back_mut() {
                    seg.writable = false;
                }
                s.segments.push_back(Segment {
                    number: entry.segment,
                    first: pos,
                    count: 1,
                    bytes: u64::from(entry.len),
                    writable: true,
                });
            }
        }
        s.next_segment = s.next_segment.max(entry.segment + 1);
        s.bytes += u64::from(entry.len);
        s.durable = Some(entry.counter);
        s.entries.push_back(entry);
        self.next_counter = self.next_counter.max(entry.counter + 1);
    }

    /// After recovery: the newest segment of each shard is sealed (appends start a new one, so
    /// a truncated tail is never appended to at a stale offset), and `next_segment` is at least
    /// `floor`.
    pub fn seal_after_recovery(&mut self, shard: u32, next_segment_floor: u32) {
        if let Some(s) = self.shards.get_mut(&shard) {
            if let Some(seg) = s.segments.back_mut() {
                seg.writable = false;
            }
            s.next_segment = s.next_segment.max(next_segment_floor);
        }
    }

    /// Name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Incarnation id.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Creation time.
    pub fn created_at(&self) -> Millis {
        self.created_at
    }

    /// Settings.
    pub fn settings(&self) -> &StreamSettings {
        &self.settings
    }

    /// The next counter an append would get.
    pub fn next_counter(&self) -> u64 {
        self.next_counter
    }

    /// Every known shard (open and closed), by index.
    pub fn shards(&self) -> Vec<ShardMeta> {
        self.shards.values().map(|s| s.meta.clone()).collect()
    }

    /// One shard's metadata.
    pub fn shard(&self, index: u32) -> Option<&ShardMeta> {
        self.shards.get(&index).map(|s| &s.meta)
    }

    /// Open shards.
    pub fn open_shard_count(&self) -> u32 {
        self.shards.values().filter(|s| s.meta.is_open()).count() as u32
    }

    /// Bytes of records retained, over all shards.
    pub fn bytes(&self) -> u64 {
        self.shards.values().map(|s| s.bytes).sum()
    }

    /// Retained records, over all shards (including ones not yet durable).
    pub fn record_count(&self) -> u64 {
        self.shards.values().map(|s| s.entries.len() as u64).sum()
    }

    /// Tags.
    pub fn tags(&self) -> &BTreeMap<String, String> {
        &self.tags
    }

    /// Front-end attributes.
    pub fn attributes(&self) -> &BTreeMap<String, String> {
        &self.attributes
    }

    /// Set a front-end attribute.
    pub fn set_attribute(&mut self, key: &str, value: &str) -> Vec<Effect> {
        self.attributes.insert(key.to_string(), value.to_string());
        vec![Effect::SaveMeta]
    }

    fn shard_err(&self, index: u32) -> StreamError {
        StreamError::ShardNotFound { stream: self.name.clone(), shard: shard_id(index) }
    }

    fn closed_err(&self, index: u32) -> StreamError {
        StreamError::ShardClosed { stream: self.name.clone(), shard: shard_id(index) }
    }

    /// The open shard whose range holds `hash`.
    pub fn shard_for(&self, hash: HashKey) -> Option<u32> {
        self.shards
            .values()
            .find(|s| s.meta.is_open() && s.meta.start_hash <= hash && hash <= s.meta.end_hash)
            .map(|s| s.meta.index)
    }

    /// Place a record of `len` bytes (on disk) whose hash key is `hash`: pick the shard, give
    /// it the next counter and an arrival time, and say where in the shard's log it goes. The
    /// record is not readable until [`StreamState::mark_durable`].
    pub fn place(&mut self, hash: HashKey, len: u32, now: Millis) -> Result<Placement, StreamError> {
        let index =
            self.shard_for(hash).ok_or_else(|| StreamError::Invalid("no open shard covers the hash key".into()))?;
        let segment_bytes = self.settings.segment_bytes;
        let counter = self.next_counter;
        let Some(s) = self.shards.get_mut(&index) else { return Err(self.shard_err(index)) };
        let arrival = s.entries.back().map_or(now, |e| e.arrival.max(now));
        let pos = s.dropped + s.entries.len();
        let roll = match s.segments.back() {
            Some(seg) => !seg.writable || (seg.bytes > 0 && seg.bytes + u64::from(len) > segment_bytes),
            None => true,
        };
        if roll {
            if let Some(seg) = s.segments.back_mut() {
                seg.writable = false;
            }
            let number = s.next_segment;
            s.next_segment += 1;
            s.segments.push_back(Segment { number, first: pos, count: 0, bytes: 0, writable: true });
        }
        let Some(seg) = s.segments.back_mut() else { return Err(StreamError::Storage("no segment".into())) };
        let offset = seg.bytes;
        seg.count += 1;
        seg.bytes += u64::from(len);
        s.bytes += u64::from(len);
        let entry = Entry { counter, arrival, segment: seg.number, offset, len };
        s.entries.push_back(entry);
        self.next_counter += 1;
        Ok(Placement { sequence: SequenceNumber { counter, shard: index }, arrival, segment: entry.segment, offset })
    }

    /// Records of `shard` up to `counter` are on disk: make them readable. Returns true if
    /// anything new became visible.
    pub fn mark_durable(&mut self, shard: u32, counter: u64) -> bool {
        match self.shards.get_mut(&shard) {
            Some(s) if s.durable.is_none_or(|d| d < counter) => {
                s.durable = Some(counter);
                true
            }
            _ => false,
        }
    }

    /// The counter a reader of `shard` starting at `start` reads from.
    pub fn start_counter(&self, shard: u32, start: StartPosition) -> Result<u64, StreamError> {
        let s = self.shards.get(&shard).ok_or_else(|| self.shard_err(shard))?;
        let check = |seq: SequenceNumber| {
            if seq.shard != shard {
                return Err(StreamError::Invalid(format!(
                    "Invalid StartingSequenceNumber. It encodes {}, while it was used in a call to a shard with {}",
                    shard_id(seq.shard),
                    shard_id(shard)
                )));
            }
            Ok(seq.counter)
        };
        Ok(match start {
            StartPosition::TrimHorizon => s.meta.starting_counter,
            StartPosition::Latest => match s.meta.ending_counter {
                Some(end) => end + 1,
                None => self.next_counter,
            },
            StartPosition::At(seq) => check(seq)?,
            StartPosition::After(seq) => check(seq)?.saturating_add(1),
            StartPosition::AtTimestamp(t) => {
                let pos = s.entries.partition_point(|e| e.arrival < t);
                match s.entries.get(pos) {
                    Some(e) => e.counter,
                    None => match s.meta.ending_counter {
                        Some(end) => end + 1,
                        None => self.next_counter,
                    },
                }
            }
        })
    }

    /// The counter of the newest readable record of `shard`, if any.
    pub fn last_visible(&self, shard: u32) -> Option<u64> {
        let s = self.shards.get(&shard)?;
        let n = s.visible_len();
        n.checked_sub(1).map(|i| s.entries[i].counter)
    }

    /// Where to read up to `max_records` records (and about `max_bytes`, at least one record)
    /// of `shard` from counter `from`.
    pub fn locate(&self, shard: u32, from: u64, max_records: usize, max_bytes: u64) -> Result<Located, StreamError> {
        let s = self.shards.get(&shard).ok_or_else(|| self.shard_err(shard))?;
        let visible = s.visible_len();
        let mut pos = s.position(from);
        let mut entries = Vec::new();
        let mut bytes = 0u64;
        while pos < visible && entries.len() < max_records {
            let e = s.entries[pos];
            if !entries.is_empty() && bytes + u64::from(e.len) > max_bytes {
                break;
            }
            bytes += u64::from(e.len);
            entries.push(e);
            pos += 1;
        }
        let next = match entries.last() {
            Some(e) => e.counter + 1,
            // Nothing to read: keep the reader's place, but never behind what was trimmed.
            None => match s.entries.front() {
                Some(first) if first.counter > from => first.counter,
                _ => from,
            },
        };
        let end_of_shard = s.meta.ending_counter.is_some() && pos >= s.entries.len();
        let next_arrival = if pos < visible { Some(s.entries[pos].arrival) } else { None };
        Ok(Located { entries, next, end_of_shard, next_arrival })
    }

    /// The shards whose parent or adjacent parent is `shard`.
    pub fn children(&self, shard: u32) -> Vec<ShardMeta> {
        self.shards
            .values()
            .filter(|s| s.meta.parent == Some(shard) || s.meta.adjacent_parent == Some(shard))
            .map(|s| s.meta.clone())
            .collect()
    }

    fn open_shard(&self, index: u32) -> Result<&Shard, StreamError> {
        let s = self.shards.get(&index).ok_or_else(|| self.shard_err(index))?;
        if !s.meta.is_open() {
            return Err(self.closed_err(index));
        }
        Ok(s)
    }

    fn close(&mut self, index: u32, now: Millis) {
        let end = self.next_counter.saturating_sub(1);
        if let Some(s) = self.shards.get_mut(&index) {
            s.meta.ending_counter = Some(end);
            s.meta.closed_at = Some(now);
            if let Some(seg) = s.segments.back_mut() {
                seg.writable = false;
            }
        }
    }

    fn add_child(&mut self, range: (HashKey, HashKey), parent: Option<u32>, adjacent: Option<u32>) -> u32 {
        let index = self.next_shard;
        self.next_shard += 1;
        let meta = ShardMeta {
            index,
            start_hash: range.0,
            end_hash: range.1,
            parent,
            adjacent_parent: adjacent,
            starting_counter: self.next_counter,
            ending_counter: None,
            closed_at: None,
        };
        self.shards.insert(index, Shard::new(meta));
        index
    }

    /// Split open shard `index` at `new_start` (the first hash key of the second child).
    pub fn split(&mut self, index: u32, new_start: HashKey, now: Millis) -> Result<(u32, u32), StreamError> {
        let s = self.open_shard(index)?;
        let (lo, hi) = (s.meta.start_hash, s.meta.end_hash);
        if new_start <= lo || new_start > hi {
            return Err(StreamError::Invalid(format!(
                "NewStartingHashKey {new_start} used in SplitShard() on shard {} in stream {} is not within the shard's hash key range [{}, {}]",
                shard_id(index),
                self.name,
                lo.saturating_add(1),
                hi
            )));
        }
        if self.open_shard_count() + 1 > MAX_OPEN_SHARDS {
            return Err(StreamError::Limit(format!("stream {} would exceed {MAX_OPEN_SHARDS} open shards", self.name)));
        }
        self.close(index, now);
        let a = self.add_child((lo, new_start - 1), Some(index), None);
        let b = self.add_child((new_start, hi), Some(index), None);
        Ok((a, b))
    }

    /// Merge open shards `index` and `adjacent` (their ranges must touch).
    pub fn merge(&mut self, index: u32, adjacent: u32, now: Millis) -> Result<u32, StreamError> {
        let a = self.open_shard(index)?.meta.clone();
        let b = self.open_shard(adjacent)?.meta.clone();
        let touching =
            a.end_hash.checked_add(1) == Some(b.start_hash) || b.end_hash.checked_add(1) == Some(a.start_hash);
        if index == adjacent || !touching {
            return Err(StreamError::Invalid(format!(
                "Shards {} and {} in stream {} are not an adjacent pair of shards eligible for merging",
                shard_id(index),
                shard_id(adjacent),
                self.name
            )));
        }
        self.close(index, now);
        self.close(adjacent, now);
        let range = (a.start_hash.min(b.start_hash), a.end_hash.max(b.end_hash));
        Ok(self.add_child(range, Some(index), Some(adjacent)))
    }

    /// Rescale to `target` open shards of even width (Kinesis' `UNIFORM_SCALING`): every open
    /// shard is closed and each new shard names as parents the (at most two) old shards
    /// overlapping its range the most.
    pub fn update_shard_count(&mut self, target: u32, now: Millis) -> Result<Vec<u32>, StreamError> {
        let current = self.open_shard_count();
        if target == 0 || target > MAX_OPEN_SHARDS {
            return Err(StreamError::Invalid(format!(
                "TargetShardCount {target} must be between 1 and {MAX_OPEN_SHARDS}"
            )));
        }
        if target > current.saturating_mul(2) || target.saturating_mul(2) < current {
            return Err(StreamError::Invalid(format!(
                "UpdateShardCount cannot scale up over double your current open shard count ({current}) or scale down below half your current open shard count"
            )));
        }
        let old: Vec<ShardMeta> = self.shards.values().filter(|s| s.meta.is_open()).map(|s| s.meta.clone()).collect();
        for s in &old {
            self.close(s.index, now);
        }
        let mut created = Vec::new();
        for range in even_split(0, u128::MAX, target) {
            let mut overlaps: Vec<(u128, u32)> = old
                .iter()
                .filter(|o| o.start_hash <= range.1 && range.0 <= o.end_hash)
                .map(|o| (o.end_hash.min(range.1) - o.start_hash.max(range.0), o.index))
                .collect();
            overlaps.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
            let mut parents: Vec<u32> = overlaps.iter().take(2).map(|o| o.1).collect();
            parents.sort_unstable();
            created.push(self.add_child(range, parents.first().copied(), parents.get(1).copied()));
        }
        Ok(created)
    }

    /// Change the retention period.
    pub fn set_retention(&mut self, hours: u32) -> Result<Vec<Effect>, StreamError> {
        check_retention(hours)?;
        self.settings.retention_hours = hours;
        Ok(vec![Effect::SaveMeta])
    }

    /// Change the size limit.
    pub fn set_max_bytes(&mut self, max: Option<u64>) -> Vec<Effect> {
        self.settings.max_bytes = max;
        vec![Effect::SaveMeta]
    }

    /// Change the capacity mode.
    pub fn set_mode(&mut self, mode: StreamMode) -> Vec<Effect> {
        self.settings.mode = mode;
        vec![Effect::SaveMeta]
    }

    /// Add or overwrite tags.
    pub fn add_tags(&mut self, tags: &BTreeMap<String, String>) -> Result<Vec<Effect>, StreamError> {
        let new = tags.keys().filter(|k| !self.tags.contains_key(*k)).count();
        if self.tags.len() + new > 50 {
            return Err(StreamError::Limit(format!("stream {} would have more than 50 tags", self.name)));
        }
        self.tags.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(vec![Effect::SaveMeta])
    }

    /// Remove tags (absent ones are ignored).
    pub fn remove_tags(&mut self, keys: &[String]) -> Vec<Effect> {
        for k in keys {
            self.tags.remove(k);
        }
        vec![Effect::SaveMeta]
    }

    /// Registered consumers.
    pub fn consumers(&self) -> &[ConsumerMeta] {
        &self.consumers
    }

    /// Register a consumer.
    pub fn register_consumer(&mut self, name: &str, now: Millis) -> Result<ConsumerMeta, StreamError> {
        if self.consumers.iter().any(|c| c.name == name) {
            return Err(StreamError::ConsumerExists(name.to_string()));
        }
        if self.consumers.len() >= 20 {
            return Err(StreamError::Limit(format!("stream {} already has 20 consumers", self.name)));
        }
        let c = ConsumerMeta { name: name.to_string(), created_at: now };
        self.consumers.push(c.clone());
        Ok(c)
    }

    /// Deregister a consumer.
    pub fn deregister_consumer(&mut self, name: &str) -> Result<(), StreamError> {
        let before = self.consumers.len();
        self.consumers.retain(|c| c.name != name);
        if self.consumers.len() == before {
            return Err(StreamError::ConsumerNotFound(name.to_string()));
        }
        Ok(())
    }

    /// Store a named reader's position in `shard` (the next counter it will read).
    pub fn store_offset(&mut self, reader: &str, shard: u32, next: u64) -> Result<Vec<Effect>, StreamError> {
        if !self.shards.contains_key(&shard) {
            return Err(self.shard_err(shard));
        }
        self.offsets.entry(reader.to_string()).or_default().insert(shard, next);
        Ok(vec![Effect::SaveMeta])
    }

    /// A named reader's stored position in `shard`.
    pub fn stored_offset(&self, reader: &str, shard: u32) -> Option<u64> {
        self.offsets.get(reader).and_then(|m| m.get(&shard)).copied()
    }

    /// Forget a named reader.
    pub fn remove_reader(&mut self, reader: &str) -> Vec<Effect> {
        if self.offsets.remove(reader).is_some() { vec![Effect::SaveMeta] } else { Vec::new() }
    }

    /// Apply retention at `now`: drop every sealed segment whose newest record is past the
    /// retention period, then the oldest segments while the stream is over its size limit,
    /// then closed shards that are past retention and empty.
    pub fn tick(&mut self, now: Millis) -> Vec<Effect> {
        let retention = u64::from(self.settings.retention_hours) * HOUR_MS;
        let cutoff = now.saturating_sub(retention);
        let mut fx = Vec::new();
        for s in self.shards.values_mut() {
            while let Some(seg) = s.segments.front() {
                let newest = seg.count.checked_sub(1).and_then(|i| s.entries.get(seg.first + i - s.dropped));
                let expired = match newest {
                    Some(e) => e.arrival < cutoff && s.durable.is_some_and(|d| d >= e.counter),
                    None => !seg.writable,
                };
                if !expired {
                    break;
                }
                fx.push(Effect::DeleteSegment { shard: s.meta.index, segment: seg.number });
                drop_front_segment(s);
            }
        }
        if let Some(max) = self.settings.max_bytes {
            while self.bytes() > max {
                // The shard whose oldest segment holds the oldest record.
                let victim = self
                    .shards
                    .values()
                    .filter(|s| s.segments.len() > 1 || s.segments.front().is_some_and(|g| !g.writable))
                    .filter_map(|s| s.entries.front().map(|e| (e.counter, s.meta.index)))
                    .min();
                let Some((_, index)) = victim else { break };
                let Some(s) = self.shards.get_mut(&index) else { break };
                let Some(seg) = s.segments.front() else { break };
                fx.push(Effect::DeleteSegment { shard: index, segment: seg.number });
                drop_front_segment(s);
            }
        }
        let expired: Vec<u32> = self
            .shards
            .values()
            .filter(|s| s.segments.is_empty() && s.meta.closed_at.is_some_and(|t| t < cutoff))
            .map(|s| s.meta.index)
            .collect();
        for index in expired {
            self.shards.remove(&index);
            for m in self.offsets.values_mut() {
                m.remove(&index);
            }
            fx.push(Effect::DeleteShard(index));
        }
        if !fx.is_empty() {
            fx.push(Effect::SaveMeta);
        }
        fx
    }

    /// When [`StreamState::tick`] next has something to do (the oldest record's expiry).
    pub fn next_deadline(&self) -> Option<Millis> {
        let retention = u64::from(self.settings.retention_hours) * HOUR_MS;
        let oldest_segment_end = self
            .shards
            .values()
            .filter_map(|s| {
                let seg = s.segments.front()?;
                let i = seg.count.checked_sub(1)?;
                s.entries.get(seg.first + i - s.dropped).map(|e| e.arrival)
            })
            .min();
        let closed = self.shards.values().filter(|s| s.segments.is_empty()).filter_map(|s| s.meta.closed_at).min();
        [oldest_segment_end, closed].into_iter().flatten().min().map(|t| t.saturating_add(retention).saturating_add(1))
    }
}

fn drop_front_segment(s: &mut Shard) {
    let Some(seg) = s.segments.pop_front() else { return };
    let n = seg.count.min(s.entries.len());
    s.entries.drain(..n);
    s.dropped += n;
    s.bytes = s.bytes.saturating_sub(seg.bytes);
}

fn check_retention(hours: u32) -> Result<(), StreamError> {
    if !(DEFAULT_RETENTION_HOURS..=MAX_RETENTION_HOURS).contains(&hours) {
        return Err(StreamError::Invalid(format!(
            "Minimum allowed retention period is {DEFAULT_RETENTION_HOURS} hours. Maximum allowed retention period is {MAX_RETENTION_HOURS} hours. Requested retention period ({hours} hours) is out of range."
        )));
    }
    Ok(())
}
