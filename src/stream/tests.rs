//! Tests of the stream state machine (time is an argument: no sleeps) and of the runtime
//! wired to a real segment log in a temporary directory.

use std::collections::BTreeMap;

use super::hashkey::hash_key;
use super::state::*;
use super::*;

const H: u64 = HOUR_MS;

fn settings(segment_bytes: u64) -> StreamSettings {
    StreamSettings { segment_bytes, ..StreamSettings::default() }
}

/// Place and make durable one record of `len` bytes with partition key `pk` at `now`.
fn put(s: &mut StreamState, pk: &str, len: u32, now: u64) -> Placement {
    let p = s.place(hash_key(pk), len, now).expect("place");
    s.mark_durable(p.sequence.shard, p.sequence.counter);
    p
}

fn read_all(s: &StreamState, shard: u32, from: u64) -> Located {
    s.locate(shard, from, 10_000, u64::MAX).expect("locate")
}

#[test]
fn records_go_to_the_shard_owning_their_hash_and_counters_increase() {
    let mut s = StreamState::new("s", 1, 4, settings(1 << 20), 0).expect("new");
    let mut last = BTreeMap::new();
    for i in 0..200 {
        let pk = format!("key-{i}");
        let p = put(&mut s, &pk, 100, 10);
        let shard = s.shard(p.sequence.shard).expect("shard");
        let h = hash_key(&pk);
        assert!(shard.start_hash <= h && h <= shard.end_hash);
        if let Some(prev) = last.insert(p.sequence.shard, p.sequence) {
            assert!(p.sequence > prev);
            assert!(p.sequence.to_string() > prev.to_string());
        }
    }
    let total: usize = (0..4).map(|i| read_all(&s, i, 0).entries.len()).sum();
    assert_eq!(total, 200);
}

#[test]
fn explicit_hash_keys_pick_the_shard() {
    let mut s = StreamState::new("s", 1, 2, settings(1 << 20), 0).expect("new");
    assert_eq!(s.place(0, 10, 0).expect("place").sequence.shard, 0);
    assert_eq!(s.place(u128::MAX, 10, 0).expect("place").sequence.shard, 1);
    assert_eq!(s.place(1u128 << 127, 10, 0).expect("place").sequence.shard, 1);
    assert_eq!(s.place((1u128 << 127) - 1, 10, 0).expect("place").sequence.shard, 0);
}

#[test]
fn records_are_invisible_until_durable() {
    let mut s = StreamState::new("s", 1, 1, settings(1 << 20), 0).expect("new");
    let a = s.place(1, 10, 5).expect("place");
    let b = s.place(1, 10, 6).expect("place");
    assert!(read_all(&s, 0, 0).entries.is_empty());
    s.mark_durable(0, a.sequence.counter);
    assert_eq!(read_all(&s, 0, 0).entries.len(), 1);
    s.mark_durable(0, b.sequence.counter);
    let loc = read_all(&s, 0, 0);
    assert_eq!(loc.entries.iter().map(|e| e.counter).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(loc.next, 2);
    assert!(!loc.end_of_shard);
}

#[test]
fn start_positions() {
    let mut s = StreamState::new("s", 1, 1, settings(1 << 20), 0).expect("new");
    for t in [100, 200, 300] {
        put(&mut s, "k", 10, t);
    }
    let seq = |c| SequenceNumber { counter: c, shard: 0 };
    assert_eq!(s.start_counter(0, StartPosition::TrimHorizon).expect("th"), 0);
    assert_eq!(s.start_counter(0, StartPosition::Latest).expect("latest"), 3);
    assert_eq!(s.start_counter(0, StartPosition::At(seq(1))).expect("at"), 1);
    assert_eq!(s.start_counter(0, StartPosition::After(seq(1))).expect("after"), 2);
    assert_eq!(s.start_counter(0, StartPosition::AtTimestamp(150)).expect("ts"), 1);
    assert_eq!(s.start_counter(0, StartPosition::AtTimestamp(200)).expect("ts"), 1);
    assert_eq!(s.start_counter(0, StartPosition::AtTimestamp(999)).expect("ts"), 3);
    // A sequence number of another shard is refused; an unknown shard is not found.
    let other = SequenceNumber { counter: 1, shard: 5 };
    assert!(matches!(s.start_counter(0, StartPosition::At(other)), Err(StreamError::Invalid(_))));
    assert!(matches!(s.start_counter(9, StartPosition::Latest), Err(StreamError::ShardNotFound { .. })));
}

#[test]
fn arrival_times_never_go_backwards_within_a_shard() {
    let mut s = StreamState::new("s", 1, 1, settings(1 << 20), 0).expect("new");
    put(&mut s, "k", 10, 500);
    let p = put(&mut s, "k", 10, 400);
    assert_eq!(p.arrival, 500);
}

#[test]
fn reads_are_bounded_by_records_and_bytes_but_return_at_least_one() {
    let mut s = StreamState::new("s", 1, 1, settings(1 << 20), 0).expect("new");
    for _ in 0..10 {
        put(&mut s, "k", 100, 1);
    }
    assert_eq!(s.locate(0, 0, 3, u64::MAX).expect("locate").entries.len(), 3);
    assert_eq!(s.locate(0, 0, 100, 250).expect("locate").entries.len(), 2);
    assert_eq!(s.locate(0, 0, 100, 1).expect("locate").entries.len(), 1);
    let loc = s.locate(0, 8, 100, u64::MAX).expect("locate");
    assert_eq!(loc.entries.len(), 2);
    assert_eq!(loc.next, 10);
    assert_eq!(loc.next_arrival, None);
    let loc = s.locate(0, 0, 4, u64::MAX).expect("locate");
    assert_eq!(loc.next_arrival, Some(1));
    assert_eq!(s.last_visible(0), Some(9));
    assert_eq!(s.last_visible(7), None);
}

#[test]
fn segments_roll_at_their_size() {
    let mut s = StreamState::new("s", 1, 1, settings(1000), 0).expect("new");
    let a = put(&mut s, "k", 600, 1);
    let b = put(&mut s, "k", 600, 1);
    let c = put(&mut s, "k", 300, 1);
    assert_eq!((a.segment, a.offset), (0, 0));
    assert_eq!((b.segment, b.offset), (1, 0));
    assert_eq!((c.segment, c.offset), (1, 600));
}

#[test]
fn retention_drops_whole_expired_segments_only() {
    let mut s = StreamState::new("s", 1, 1, settings(1000), 0).expect("new");
    put(&mut s, "k", 600, H); // segment 0
    put(&mut s, "k", 600, 2 * H); // segment 1
    put(&mut s, "k", 300, 30 * H); // segment 1
    // Segment 0 expires 24 h after its newest record; segment 1 holds a record from 30 h.
    assert_eq!(s.tick(24 * H), vec![]);
    assert_eq!(s.next_deadline(), Some(25 * H + 1));
    let fx = s.tick(25 * H + 1);
    assert_eq!(fx, vec![Effect::DeleteSegment { shard: 0, segment: 0 }, Effect::SaveMeta]);
    let loc = read_all(&s, 0, 0);
    assert_eq!(loc.entries.iter().map(|e| e.counter).collect::<Vec<_>>(), [1, 2]);
    // A reader from the trim horizon starts at what is left.
    assert_eq!(s.locate(0, 0, 1, u64::MAX).expect("locate").entries[0].counter, 1);
    assert_eq!(s.tick(53 * H), vec![]);
    let fx = s.tick(54 * H + 1);
    assert_eq!(fx, vec![Effect::DeleteSegment { shard: 0, segment: 1 }, Effect::SaveMeta]);
    assert!(read_all(&s, 0, 0).entries.is_empty());
    assert_eq!(read_all(&s, 0, 0).next, 0);
    // Appends go on in a fresh segment and counters keep growing.
    let p = put(&mut s, "k", 10, 55 * H);
    assert_eq!(p.sequence.counter, 3);
    assert_eq!(p.segment, 2);
}

#[test]
fn longer_retention_keeps_records_longer() {
    let mut s = StreamState::new("s", 1, 1, settings(100), 0).expect("new");
    put(&mut s, "k", 100, 0);
    put(&mut s, "k", 100, 0);
    s.set_retention(48).expect("retention");
    assert!(s.tick(47 * H).is_empty());
    assert!(!s.tick(48 * H + 1).is_empty());
    assert!(s.set_retention(23).is_err());
    assert!(s.set_retention(8_761).is_err());
    assert!(s.set_retention(8_760).is_ok());
}

#[test]
fn size_retention_drops_oldest_segments_across_shards() {
    let mut s = StreamState::new("s", 1, 2, settings(100), 0).expect("new");
    s.set_max_bytes(Some(250));
    put(&mut s, "a", 100, 1); // counter 0
    put(&mut s, "b", 100, 1); // counter 1
    put(&mut s, "a", 100, 1); // counter 2
    put(&mut s, "b", 100, 1); // counter 3
    let fx = s.tick(2);
    let deleted = fx.iter().filter(|e| matches!(e, Effect::DeleteSegment { .. })).count();
    assert_eq!(deleted, 2);
    assert!(s.bytes() <= 250);
    let left: Vec<u64> = (0..2).flat_map(|i| read_all(&s, i, 0).entries.into_iter().map(|e| e.counter)).collect();
    let mut left = left;
    left.sort_unstable();
    assert_eq!(left, [2, 3]);
}

#[test]
fn split_closes_the_parent_and_readers_follow_lineage() {
    let mut s = StreamState::new("s", 1, 1, settings(1 << 20), 0).expect("new");
    put(&mut s, "k", 10, 1);
    put(&mut s, "k", 10, 1);
    let (a, b) = s.split(0, 1u128 << 127, 5).expect("split");
    assert_eq!((a, b), (1, 2));
    let parent = s.shard(0).expect("parent").clone();
    assert_eq!(parent.ending_counter, Some(1));
    assert_eq!(s.shard(a).expect("a").parent, Some(0));
    assert_eq!(s.shard(a).expect("a").end_hash, (1u128 << 127) - 1);
    assert_eq!(s.shard(b).expect("b").start_hash, 1u128 << 127);
    // New records go to children; the parent is readable to its end, then says so.
    let p = put(&mut s, "k", 10, 6);
    assert!(p.sequence.shard == a || p.sequence.shard == b);
    assert!(p.sequence.counter > 1);
    let loc = read_all(&s, 0, 0);
    assert_eq!(loc.entries.len(), 2);
    assert!(loc.end_of_shard);
    assert_eq!(s.children(0).iter().map(|c| c.index).collect::<Vec<_>>(), [a, b]);
    // Errors: closed shard, key outside the range, unknown shard.
    assert!(matches!(s.split(0, 5, 7), Err(StreamError::ShardClosed { .. })));
    assert!(matches!(s.split(a, 0, 7), Err(StreamError::Invalid(_))));
    assert!(matches!(s.split(a, 1u128 << 127, 7), Err(StreamError::Invalid(_))));
    assert!(matches!(s.split(42, 5, 7), Err(StreamError::ShardNotFound { .. })));
}

#[test]
fn an_empty_closed_shard_ends_at_once() {
    let mut s = StreamState::new("s", 1, 1, settings(1 << 20), 0).expect("new");
    s.split(0, 10, 1).expect("split");
    let loc = read_all(&s, 0, 0);
    assert!(loc.entries.is_empty());
    assert!(loc.end_of_shard);
    let latest = s.start_counter(0, StartPosition::Latest).expect("latest");
    assert!(read_all(&s, 0, latest).end_of_shard);
}

#[test]
fn merge_needs_adjacent_open_shards() {
    let mut s = StreamState::new("s", 1, 3, settings(1 << 20), 0).expect("new");
    assert!(matches!(s.merge(0, 2, 1), Err(StreamError::Invalid(_))));
    assert!(matches!(s.merge(0, 0, 1), Err(StreamError::Invalid(_))));
    let c = s.merge(1, 0, 1).expect("merge");
    let child = s.shard(c).expect("child").clone();
    assert_eq!((child.parent, child.adjacent_parent), (Some(1), Some(0)));
    assert_eq!(child.start_hash, 0);
    assert_eq!(child.end_hash, s.shard(1).expect("s1").end_hash);
    assert!(matches!(s.merge(0, 2, 1), Err(StreamError::ShardClosed { .. })));
    assert_eq!(s.open_shard_count(), 2);
}

#[test]
fn update_shard_count_rescales_with_lineage_within_limits() {
    let mut s = StreamState::new("s", 1, 2, settings(1 << 20), 0).expect("new");
    assert!(s.update_shard_count(5, 1).is_err());
    let created = s.update_shard_count(3, 1).expect("rescale");
    assert_eq!(created, [2, 3, 4]);
    assert_eq!(s.open_shard_count(), 3);
    let mid = s.shard(3).expect("mid");
    assert_eq!((mid.parent, mid.adjacent_parent), (Some(0), Some(1)));
    assert_eq!(s.shard(2).expect("first").parent, Some(0));
    assert_eq!(s.shard(4).expect("last").parent, Some(1));
    assert!(s.update_shard_count(1, 2).is_err());
    s.update_shard_count(2, 2).expect("down");
    assert_eq!(s.open_shard_count(), 2);
}

#[test]
fn closed_shards_expire_after_retention_when_empty() {
    let mut s = StreamState::new("s", 1, 1, settings(100), 0).expect("new");
    put(&mut s, "k", 100, 0);
    s.split(0, 10, H).expect("split");
    assert!(s.shard(0).is_some());
    let fx = s.tick(25 * H + 1);
    assert!(fx.contains(&Effect::DeleteShard(0)));
    assert!(s.shard(0).is_none());
    assert_eq!(s.open_shard_count(), 2);
}

#[test]
fn named_reader_offsets_tags_and_consumers() {
    let mut s = StreamState::new("s", 1, 1, settings(100), 0).expect("new");
    s.store_offset("app", 0, 17).expect("store");
    assert_eq!(s.stored_offset("app", 0), Some(17));
    assert_eq!(s.stored_offset("other", 0), None);
    assert!(s.store_offset("app", 9, 1).is_err());
    let mut tags = BTreeMap::new();
    tags.insert("env".to_string(), "test".to_string());
    s.add_tags(&tags).expect("tags");
    s.remove_tags(&["env".to_string(), "absent".to_string()]);
    assert!(s.tags().is_empty());
    let many: BTreeMap<String, String> = (0..51).map(|i| (format!("k{i}"), String::new())).collect();
    assert!(matches!(s.add_tags(&many), Err(StreamError::Limit(_))));
    s.register_consumer("c1", 5).expect("register");
    assert!(matches!(s.register_consumer("c1", 6), Err(StreamError::ConsumerExists(_))));
    s.deregister_consumer("c1").expect("deregister");
    assert!(matches!(s.deregister_consumer("c1"), Err(StreamError::ConsumerNotFound(_))));
    let back = StreamState::from_meta(s.meta());
    assert_eq!(back.meta(), s.meta());
}

#[test]
fn recovery_restores_entries_and_seals_the_tail() {
    let mut s = StreamState::new("s", 1, 1, settings(1 << 20), 0).expect("new");
    let meta = s.meta();
    let a = put(&mut s, "k", 50, 1);
    let mut r = StreamState::from_meta(meta);
    r.restore_entry(0, Entry { counter: 0, arrival: 1, segment: 0, offset: 0, len: 50 });
    r.restore_entry(0, Entry { counter: 4, arrival: 2, segment: 0, offset: 50, len: 50 });
    r.seal_after_recovery(0, 1);
    assert_eq!(read_all(&r, 0, 0).entries.len(), 2);
    let p = r.place(hash_key("k"), 10, 3).expect("place");
    assert_eq!(p.sequence.counter, 5);
    assert_eq!((p.segment, p.offset), (1, 0));
    assert_eq!(a.sequence.counter, 0);
}

#[test]
fn bad_shard_counts_and_retention_are_refused() {
    assert!(StreamState::new("s", 1, 0, StreamSettings::default(), 0).is_err());
    assert!(StreamState::new("s", 1, MAX_OPEN_SHARDS + 1, StreamSettings::default(), 0).is_err());
    let bad = StreamSettings { retention_hours: 1, ..StreamSettings::default() };
    assert!(StreamState::new("s", 1, 1, bad, 0).is_err());
}

#[test]
fn shard_ids_parse_and_render() {
    assert_eq!(shard_id(3), "shardId-000000000003");
    assert_eq!(parse_shard_id("shardId-000000000003"), Some(3));
    assert_eq!(parse_shard_id("3"), Some(3));
    assert_eq!(parse_shard_id("shardId-x"), None);
    assert_eq!(parse_shard_id(""), None);
}

#[tokio::test]
async fn the_runtime_appends_durably_reads_and_recovers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let streams = Streams::new("/", Some(tmp.path()));
    let t0 = crate::time::now_ms();
    let s = streams.create("clicks", 2, StreamSettings::default(), &[], t0).expect("create");
    assert!(matches!(
        streams.create("clicks", 1, StreamSettings::default(), &[], 1_000),
        Err(StreamError::StreamExists(_))
    ));
    let mut wake = s.subscribe();
    let recs: Vec<NewRecord> = (0..20)
        .map(|i| NewRecord {
            partition_key: format!("pk{i}"),
            data: Bytes::from(format!("d{i}")),
            ..NewRecord::default()
        })
        .collect();
    let out = s.append(recs, t0).await;
    assert!(out.iter().all(Result::is_ok));
    assert!(wake.has_changed().expect("watch"));
    wake.borrow_and_update();
    let mut got = Vec::new();
    for shard in 0..2 {
        let b = s.read(shard, 0, 100, 1 << 20, t0).expect("read");
        assert_eq!(b.millis_behind_latest, 0);
        got.extend(b.records.into_iter().map(|r| (r.sequence.counter, r.data)));
    }
    got.sort();
    assert_eq!(got.len(), 20);
    assert_eq!(got[7], (7, Bytes::from("d7")));
    s.update(|st| st.split(0, 10, t0).map(|_| ())).expect("split");
    drop(s);
    drop(streams);

    let again = Streams::new("/", Some(tmp.path()));
    assert_eq!(again.load().expect("load"), 1);
    let s = again.get("clicks").expect("recovered");
    assert_eq!(s.with_state(|st| st.shards().len()), 4);
    let mut n = 0;
    for shard in 0..2 {
        let b = s.read(shard, 0, 100, 1 << 20, t0).expect("read");
        assert!(b.end_of_shard || shard == 1);
        n += b.records.len();
    }
    assert_eq!(n, 20);
    let out = s.append(vec![NewRecord { partition_key: "x".into(), ..NewRecord::default() }], t0).await;
    let seq = out[0].as_ref().expect("append").sequence;
    assert_eq!(seq.counter, 20);
    again.delete("clicks").expect("delete");
    assert!(again.get("clicks").is_none());
    assert!(s.read(1, 0, 1, 1, 0).is_err());
}

#[tokio::test]
async fn retention_deletes_segment_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let streams = Streams::new("v", Some(tmp.path()));
    let st = StreamSettings { segment_bytes: 200, ..StreamSettings::default() };
    let t0 = crate::time::now_ms();
    let s = streams.create("r", 1, st, &[], t0).expect("create");
    for t in [t0, t0 + 1_000, t0 + 2_000] {
        let rec = NewRecord { partition_key: "k".into(), data: Bytes::from(vec![7u8; 150]), ..NewRecord::default() };
        assert!(s.append(vec![rec], t).await[0].is_ok());
    }
    let files = |p: &Path| walk(p).into_iter().filter(|f| f.extension().is_some_and(|e| e == "seg")).count();
    assert_eq!(files(tmp.path()), 3);
    s.apply_retention(t0 + 1_000 + 24 * H + 1);
    s.log.barrier();
    assert_eq!(files(tmp.path()), 1);
    let b = s.read(0, 0, 10, 1 << 20, 0).expect("read");
    assert_eq!(b.records.iter().map(|r| r.sequence.counter).collect::<Vec<_>>(), [2]);
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test]
async fn counters_never_go_back_after_retention_emptied_a_stream() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let t0 = crate::time::now_ms();
    let last = {
        let streams = Streams::new("/", Some(tmp.path()));
        let s = streams.create("c", 1, StreamSettings::default(), &[], t0).expect("create");
        let rec = || NewRecord { partition_key: "k".into(), ..NewRecord::default() };
        let out = s.append(vec![rec(), rec(), rec()], t0).await;
        let last = out[2].as_ref().expect("append").sequence.counter;
        s.apply_retention(t0 + 25 * H);
        s.log.barrier();
        assert!(s.read(0, 0, 10, 1 << 20, t0).expect("read").records.is_empty());
        last
    };
    let again = Streams::new("/", Some(tmp.path()));
    again.load().expect("load");
    let s = again.get("c").expect("recovered");
    let out = s.append(vec![NewRecord { partition_key: "k".into(), ..NewRecord::default() }], t0).await;
    assert!(out[0].as_ref().expect("append").sequence.counter > last);
}
