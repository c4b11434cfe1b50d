//! Snapshots across format versions: this build reads the format before
//! its own, and writes it on request (`EngineConfig::snapshot_format`) so
//! that a release reading only that one restores every window.

use super::*;
use prost::Message;

const TOPIC: &str = "survey-responses";

/// Answers in every window of two segments, one of them revised.
fn filled() -> Engine {
    filled_with(EngineConfig::default())
}

/// Answer `r{i}`: a product by parity, `i` times 17 hours old.
fn answer(id: &str, i: i64, score: u32, weight: f64) -> Observation<'_> {
    let product = if i % 2 == 0 {
        "Tarjeta Oro"
    } else {
        "Hipoteca"
    };
    obs(
        id,
        product,
        "Norte",
        score,
        T0 - i * (17 * HOUR + MIN),
        weight,
    )
}

fn filled_with(config: EngineConfig) -> Engine {
    let mut e = Engine::new(&config).unwrap();
    for i in 0..40i64 {
        let id = format!("r{i}");
        e.record(0, &answer(&id, i, (i % 11) as u32, 1.0 + i as f64), T0);
    }
    let mut revised = answer("r3", 3, 10, 4.0);
    revised.updated_at_ms = Some(T0);
    assert!(matches!(e.record(0, &revised, T0), Outcome::Revised { .. }));
    e
}

/// The envelope's format and body.
fn open(record: &[u8]) -> (u32, Vec<u8>) {
    let env = crate::pb::SnapshotEnvelope::decode(record).unwrap();
    (env.format_version, env.body)
}

/// A state record as a format-1 build wrote it: no versions, no theme rows.
fn as_format_1_build_wrote_it(e: &Engine) -> Vec<u8> {
    let record = e.partition_state_record(0, TOPIC, 40);
    let mut snap = snapshot::decode(&record).unwrap();
    for p in &mut snap.partitions {
        p.theme_segments.clear();
        let d = p.dedup.as_mut().unwrap();
        (d.versions, d.products, d.regions, d.themes) = Default::default();
    }
    snapshot::encode_as(&snap, 1)
}

#[test]
fn a_format_1_snapshot_restores_its_windows_and_its_ids_are_never_counted_again() {
    let e = filled();
    let record = as_format_1_build_wrote_it(&e);
    assert_eq!(open(&record).0, 1);
    let mut back = engine();
    assert_eq!(back.restore_state_record(&record, 0, TOPIC), Ok(40));
    assert_eq!(by_name(&back, T0), by_name(&e, T0));
    // Format 1 kept no versions: a redelivery, or a revision, of an answer
    // it remembered is stale, so nothing is counted twice or taken out.
    let again = answer("r5", 5, 5, 6.0);
    assert_eq!(back.record(0, &again, T0 + MIN), Outcome::Stale);
    let mut revision = again;
    revision.score = 10;
    revision.category = Category::Promoter;
    revision.content ^= 1;
    revision.updated_at_ms = Some(T0 + MIN);
    assert_eq!(back.record(0, &revision, T0 + MIN), Outcome::Stale);
    assert_eq!(by_name(&back, T0 + MIN), by_name(&e, T0 + MIN));
    // A new answer counts, and the ids survive the next snapshot (now in
    // this build's format).
    let new = obs("r-new", "Hipoteca", "Norte", 9, T0, 1.0);
    assert!(matches!(
        back.record(0, &new, T0 + MIN),
        Outcome::Counted(..)
    ));
    let next = back.partition_state_record(0, TOPIC, 41);
    assert_eq!(open(&next).0, FORMAT_VERSION);
    let mut again_back = engine();
    again_back.restore_state_record(&next, 0, TOPIC).unwrap();
    assert_eq!(again_back.record(0, &again, T0 + 2 * MIN), Outcome::Stale);
    assert_eq!(by_name(&again_back, T0 + MIN), by_name(&back, T0 + MIN));
}

/// What a format-1 build decoded (proto/nps/v1/snapshot.proto as it was):
/// the messages and fields it knew, every later field skipped.
mod format_1 {
    use crate::pb::{RingSnapshot, WindowSpec};

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EngineSnapshot {
        #[prost(message, repeated, tag = "1")]
        pub windows: Vec<WindowSpec>,
        #[prost(int64, tag = "2")]
        pub now_ms: i64,
        #[prost(message, repeated, tag = "3")]
        pub partitions: Vec<PartitionSnapshot>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PartitionSnapshot {
        #[prost(int32, tag = "1")]
        pub partition: i32,
        #[prost(message, repeated, tag = "2")]
        pub segments: Vec<SegmentSnapshot>,
        #[prost(message, optional, tag = "3")]
        pub dedup: Option<DedupSnapshot>,
        #[prost(string, tag = "4")]
        pub source_topic: String,
        #[prost(int64, tag = "5")]
        pub next_offset: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SegmentSnapshot {
        #[prost(string, tag = "1")]
        pub product: String,
        #[prost(string, tag = "2")]
        pub region: String,
        #[prost(int64, tag = "3")]
        pub latest_ms: i64,
        #[prost(message, repeated, tag = "4")]
        pub rings: Vec<RingSnapshot>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DedupSnapshot {
        #[prost(fixed64, repeated, tag = "1")]
        pub id_hashes: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub seen_at_ms: Vec<i64>,
    }
}

#[test]
fn written_as_format_1_a_format_1_reader_gets_every_window_and_id_and_this_build_loses_nothing() {
    let config = EngineConfig {
        snapshot_format: 1,
        ..EngineConfig::default()
    };
    let e = filled_with(config);
    let record = e.partition_state_record(0, TOPIC, 40);
    // The reader of format 1: its envelope check, then its messages.
    let (format, body) = open(&record);
    assert_eq!(format, 1);
    let old = format_1::EngineSnapshot::decode(body.as_slice()).unwrap();
    let [part] = old.partitions.as_slice() else {
        panic!("one partition")
    };
    let mine = e.partition_snapshot(0).unwrap();
    let as_old = |s: &crate::pb::SegmentSnapshot| format_1::SegmentSnapshot {
        product: s.product.clone(),
        region: s.region.clone(),
        latest_ms: s.latest_ms,
        rings: s.rings.clone(),
    };
    assert_eq!(
        part.segments,
        mine.segments.iter().map(as_old).collect::<Vec<_>>()
    );
    assert!(!part.segments.is_empty());
    let dedup = part.dedup.as_ref().unwrap();
    let my_dedup = mine.dedup.unwrap();
    assert_eq!(dedup.id_hashes, my_dedup.id_hashes);
    assert_eq!(dedup.seen_at_ms, my_dedup.seen_at_ms);
    assert_eq!((part.partition, part.next_offset), (0, 40));
    assert_eq!(old.windows, e.snapshot().windows);
    // This build reads its own format-1 record with every version: a
    // revision after the restore still takes the old answer out.
    let mut back = engine();
    back.restore_state_record(&record, 0, TOPIC).unwrap();
    assert_eq!(by_name(&back, T0), by_name(&e, T0));
    let mut revision = answer("r8", 8, 10, 9.0);
    revision.updated_at_ms = Some(T0 + MIN);
    let mut reference = e.clone();
    let want = reference.record(0, &revision, T0 + MIN);
    assert!(matches!(want, Outcome::Revised { .. }));
    assert_eq!(back.record(0, &revision, T0 + MIN), want);
    assert_eq!(by_name(&back, T0 + MIN), by_name(&reference, T0 + MIN));
}

#[test]
fn only_this_format_and_the_one_before_are_read_or_written() {
    for format in [0, FORMAT_VERSION + 1] {
        let config = EngineConfig {
            snapshot_format: format,
            ..EngineConfig::default()
        };
        assert_eq!(
            Engine::new(&config).err(),
            Some(ConfigError::SnapshotFormat)
        );
        let bytes = snapshot::encode_as(&filled().snapshot(), format);
        assert_eq!(
            snapshot::decode(&bytes).err(),
            Some(SnapshotError::Version(format))
        );
    }
    assert_eq!(OLDEST_READ, FORMAT_VERSION - 1);
}
