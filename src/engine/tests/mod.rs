use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

pub(super) const MIN: i64 = 60_000;
pub(super) const HOUR: i64 = 60 * MIN;
pub(super) const DAY: i64 = 24 * HOUR;
pub(super) const T0: i64 = 1_763_800_000_000;

fn engine() -> Engine {
    Engine::new(&EngineConfig::default()).unwrap()
}

fn obs<'a>(
    id: &'a str,
    product: &'a str,
    region: &'a str,
    score: u32,
    t: i64,
    weight: f64,
) -> Observation<'a> {
    Observation {
        response_id: id,
        product,
        region,
        category: Category::of_score(score),
        responded_at_ms: t,
        weight,
        score: score as u8,
        updated_at_ms: None,
        content: content(product, region, score, t, weight),
        comment: 0,
        themes: crate::themes::ThemeSet(0),
        alerting: score <= 6,
        breakdowns: [None; MAX_BREAKDOWNS],
    }
}

/// What tells a version apart in these tests: every field given.
fn content(product: &str, region: &str, score: u32, t: i64, weight: f64) -> u32 {
    xxhash_rust::xxh3::xxh3_64(format!("{product}|{region}|{score}|{t}|{weight}").as_bytes()) as u32
}

fn by_name(e: &Engine, now: i64) -> BTreeMap<(String, String), Vec<WindowStats>> {
    e.segments(now)
        .into_iter()
        .map(|s| ((s.product.to_string(), s.region.to_string()), s.windows))
        .collect()
}

#[test]
fn duplicate_changes_nothing_and_is_reported() {
    let mut e = engine();
    let first = e.record(0, &obs("r1", "p", "r", 10, T0, 1.0), T0);
    assert!(matches!(
        first,
        Outcome::Counted(Counted { late: false, .. }, None)
    ));
    let before = by_name(&e, T0 + HOUR);
    assert_eq!(
        e.record(0, &obs("r1", "p", "r", 10, T0, 1.0), T0 + HOUR),
        Outcome::Duplicate
    );
    assert_eq!(by_name(&e, T0 + HOUR), before);
}

#[test]
fn a_revision_moves_the_contribution_and_an_older_version_is_stale() {
    let mut e = engine();
    // A detractor: counted, first alert.
    let first = e.record(0, &obs("r1", "p", "r", 3, T0, 2.0), T0);
    assert!(matches!(
        first,
        Outcome::Counted(
            _,
            Some(AlertMark {
                revision: 0,
                withdrawn: false
            })
        )
    ));
    // Revised to a 9 in another region (updated_at set): the detractor
    // leaves p/r, a promoter arrives in p/s; the alert is withdrawn.
    let mut v2 = obs("r1", "p", "s", 9, T0, 2.0);
    v2.updated_at_ms = Some(T0 + MIN);
    let out = e.record(0, &v2, T0 + MIN);
    let Outcome::Revised {
        before,
        effects,
        alert,
        ..
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(before, Category::Detractor);
    assert_eq!(
        alert,
        Some(AlertMark {
            revision: 1,
            withdrawn: true
        })
    );
    let names: Vec<&str> = effects.names().collect();
    assert_eq!(names, vec!["score", "segment"]);
    let segs = by_name(&e, T0 + MIN);
    assert!(!segs.contains_key(&("p".into(), "r".into())), "{segs:?}");
    let s = &segs[&("p".into(), "s".into())][0];
    assert_eq!((s.promoters, s.detractors), (1, 0));
    // The first version again, late: older than the one counted.
    assert_eq!(
        e.record(0, &obs("r1", "p", "r", 3, T0, 2.0), T0 + 2 * MIN),
        Outcome::Stale
    );
    // Revised back into a detractor: alerted again, next revision.
    let mut v3 = obs("r1", "p", "s", 1, T0, 2.0);
    v3.updated_at_ms = Some(T0 + 3 * MIN);
    let out = e.record(0, &v3, T0 + 3 * MIN);
    assert!(
        matches!(
            out,
            Outcome::Revised {
                alert: Some(AlertMark {
                    revision: 2,
                    withdrawn: false
                }),
                ..
            }
        ),
        "{out:?}"
    );
    let s = &by_name(&e, T0 + 3 * MIN)[&("p".into(), "s".into())][0];
    assert_eq!((s.promoters, s.detractors), (0, 1));
    // A revision of an id not remembered: refused.
    let mut lost = obs("r9", "p", "s", 5, T0, 1.0);
    lost.updated_at_ms = Some(T0);
    assert_eq!(
        e.record(0, &lost, T0 + 3 * MIN),
        Outcome::RevisionAfterHorizon
    );
}

#[test]
fn late_response_counts_in_no_window_but_is_counted() {
    let mut e = engine();
    let out = e.record(0, &obs("r1", "p", "r", 2, T0 - 31 * DAY, 1.0), T0);
    let Outcome::Counted(
        Counted {
            key,
            category,
            late,
            overflowed,
            ..
        },
        _,
    ) = out
    else {
        panic!("{out:?}")
    };
    assert!(late && !overflowed);
    assert_eq!(category, Category::Detractor);
    assert_eq!(e.segment_name(key), Some(("p", "r")));
    assert!(e.segments(T0).is_empty());
}

#[test]
fn future_response_within_skew_counts_now() {
    let mut e = engine();
    e.record(0, &obs("r1", "p", "r", 9, T0 + 4 * MIN, 1.0), T0);
    let s = by_name(&e, T0);
    assert_eq!(s[&("p".into(), "r".into())][0].promoters, 1);
}

#[test]
fn windows_slide_with_the_clock_without_new_traffic() {
    let mut e = engine();
    e.record(0, &obs("a", "p", "r", 9, T0, 1.0), T0);
    e.record(0, &obs("b", "p", "r", 3, T0 - 2 * HOUR, 1.0), T0);
    let mut counts = |now| -> Vec<u64> {
        let key = e.keys.lookup("p", "r").unwrap();
        e.segment_stats(key, now)
            .iter()
            .map(WindowStats::responses)
            .collect()
    };
    assert_eq!(counts(T0), vec![1, 2, 2, 2]);
    assert_eq!(counts(T0 + 2 * HOUR), vec![0, 2, 2, 2]);
    assert_eq!(counts(T0 + 23 * HOUR), vec![0, 1, 2, 2]);
    assert_eq!(counts(T0 + 8 * DAY), vec![0, 0, 0, 2]);
    assert_eq!(counts(T0 + 31 * DAY), vec![0, 0, 0, 0]);
}

#[test]
fn cardinality_guard_folds_new_keys_into_other() {
    let cfg = EngineConfig {
        max_keys: 3,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(&cfg).unwrap();
    let mut overflowed = 0;
    for i in 0..1000 {
        let id = format!("r{i}");
        let product = format!("bogus-{i}");
        if let Outcome::Counted(
            Counted {
                overflowed: true, ..
            },
            _,
        ) = e.record(0, &obs(&id, &product, "x", 5, T0, 1.0), T0)
        {
            overflowed += 1;
        }
    }
    assert_eq!(overflowed, 997);
    let segs = by_name(&e, T0);
    assert_eq!(segs.len(), 4);
    assert_eq!(segs[&(OTHER.into(), OTHER.into())][0].detractors, 997);
    assert_eq!(e.gauges().keys, 3);
}

#[test]
fn expired_keys_leave_and_free_their_place() {
    let cfg = EngineConfig {
        max_keys: 1,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(&cfg).unwrap();
    e.record(0, &obs("a", "old", "x", 9, T0, 1.0), T0);
    let later = T0 + 31 * DAY;
    let report = e.sweep(later);
    assert_eq!(report.segments_expired, 1);
    assert_eq!(
        report.keys_removed,
        vec![("old".to_string(), "x".to_string())]
    );
    let out = e.record(0, &obs("b", "new", "x", 9, later, 1.0), later);
    assert!(matches!(
        out,
        Outcome::Counted(
            Counted {
                overflowed: false,
                ..
            },
            _
        )
    ));
}

#[test]
fn partitions_merge_on_read_and_drop_alone() {
    let mut e = engine();
    e.record(0, &obs("a", "p", "r", 10, T0, 1.0), T0);
    e.record(1, &obs("b", "p", "r", 0, T0, 1.0), T0);
    e.record(1, &obs("c", "q", "r", 8, T0, 1.0), T0);
    let s = by_name(&e, T0);
    assert_eq!(s[&("p".into(), "r".into())][0].nps(), Some(0.0));
    assert!(e.drop_partition(1));
    let s = by_name(&e, T0);
    assert_eq!(s.len(), 1);
    assert_eq!(s[&("p".into(), "r".into())][0].nps(), Some(100.0));
    // Dedup state went with the partition.
    assert!(matches!(
        e.record(1, &obs("b", "p", "r", 0, T0, 1.0), T0),
        Outcome::Counted(..)
    ));
}

#[test]
fn clock_stepping_back_is_treated_as_standing_still() {
    let mut e = engine();
    e.record(0, &obs("a", "p", "r", 10, T0, 1.0), T0);
    e.record(
        0,
        &obs("b", "p", "r", 10, T0 - 2 * HOUR, 1.0),
        T0 - 3 * HOUR,
    );
    assert_eq!(e.now_ms(), T0);
    assert_eq!(
        by_name(&e, T0 - 5 * HOUR)[&("p".into(), "r".into())][0].responses(),
        1
    );
}

#[test]
fn snapshot_bytes_are_checked() {
    let mut e = engine();
    e.record(3, &obs("a", "p", "r", 10, T0, 2.5), T0);
    let bytes = snapshot::encode(&e.snapshot());
    let back =
        Engine::restore(&EngineConfig::default(), &snapshot::decode(&bytes).unwrap()).unwrap();
    assert_eq!(by_name(&back, T0), by_name(&e, T0));

    let mut flipped = bytes.clone();
    let last = flipped.len() - 10;
    flipped[last] ^= 0x40;
    assert!(snapshot::decode(&flipped).is_err());
    assert!(matches!(
        snapshot::decode(b"garbage"),
        Err(SnapshotError::Undecodable(_))
    ));

    let other_windows = EngineConfig {
        windows: vec!["1h".into(), "7d".into()],
        ..EngineConfig::default()
    };
    assert_eq!(
        Engine::restore(&other_windows, &snapshot::decode(&bytes).unwrap()).err(),
        Some(SnapshotError::Layout)
    );
    let mut env =
        <crate::pb::SnapshotEnvelope as prost::Message>::decode(bytes.as_slice()).unwrap();
    env.format_version = 99;
    let bytes99 = prost::Message::encode_to_vec(&env);
    assert_eq!(
        snapshot::decode(&bytes99).err(),
        Some(SnapshotError::Version(99))
    );
}

#[test]
fn corrupt_partition_snapshot_leaves_the_engine_unchanged() {
    let mut e = engine();
    e.record(0, &obs("a", "p", "r", 10, T0, 1.0), T0);
    let mut snap = e.partition_snapshot(0).unwrap();
    snap.segments[0].rings[1].buckets[0].index = -5;
    let before = by_name(&e, T0);
    assert!(matches!(
        e.restore_partition(&snap),
        Err(SnapshotError::Corrupt(_))
    ));
    assert_eq!(by_name(&e, T0), before);
}

#[test]
fn state_records_carry_one_partition_and_its_offset() {
    let mut e = engine();
    e.record(0, &obs("a", "p", "r", 10, T0, 1.0), T0);
    e.record(1, &obs("b", "p", "r", 0, T0, 1.0), T0);
    e.record(1, &obs("c", "q", "r", 8, T0, 1.0), T0);
    let bytes = e.partition_state_record(1, "in", 42);

    // A new owner holding partition 0 already gets exactly partition 1's share.
    let mut other = engine();
    other.record(0, &obs("a", "p", "r", 10, T0, 1.0), T0);
    assert_eq!(other.restore_state_record(&bytes, 1, "in"), Ok(42));
    assert_eq!(by_name(&other, T0), by_name(&e, T0));
    assert_eq!(other.now_ms(), T0);
    // Its dedup ids came along.
    assert_eq!(
        other.record(1, &obs("b", "p", "r", 0, T0, 1.0), T0),
        Outcome::Duplicate
    );

    // Another partition's or topic's record is refused and changes nothing.
    let mut fresh = engine();
    for (p, t) in [(2, "in"), (1, "other")] {
        assert!(matches!(
            fresh.restore_state_record(&bytes, p, t),
            Err(SnapshotError::Corrupt(_))
        ));
    }
    assert!(fresh.segments(T0).is_empty());
    // A partition with nothing in it still records its offset.
    let empty = engine().partition_state_record(5, "in", 7);
    assert_eq!(fresh.restore_state_record(&empty, 5, "in"), Ok(7));
    let mut bad = bytes.clone();
    let at = bad.len() / 2;
    bad[at] ^= 1;
    assert!(fresh.restore_state_record(&bad, 1, "in").is_err());
    assert!(fresh.segments(T0).is_empty());
}

mod formats;
mod properties;
pub(crate) use properties::{buckets, ev, observe, windows};

/// The (theme row, window 0's responses) of segment p/r.
fn theme_rows(e: &mut Engine, now: i64) -> Vec<(u8, u64)> {
    e.theme_stats(now)
        .iter()
        .map(|s| (s.row, s.windows[0].responses()))
        .collect()
}

#[test]
fn themes_follow_the_latest_version_and_a_snapshot_names_them() {
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut e = engine();
    e.set_themes(&names(&["app", "billing"]));
    let mut o = obs("a", "p", "r", 2, T0, 1.0);
    o.themes = crate::themes::ThemeSet(0b10);
    o.comment = 7;
    e.record(0, &o, T0);
    assert_eq!(theme_rows(&mut e, T0), [(1, 1), (COMMENTED, 1)]);
    // A revision whose comment mentions app instead: the answer moves.
    let mut revised = o;
    revised.themes = crate::themes::ThemeSet(0b01);
    revised.comment = 8;
    revised.content ^= 1;
    revised.updated_at_ms = Some(T0 + MIN);
    assert!(matches!(
        e.record(0, &revised, T0 + MIN),
        Outcome::Revised { .. }
    ));
    assert_eq!(theme_rows(&mut e, T0 + MIN), [(0, 1), (COMMENTED, 1)]);

    // Restored under a taxonomy that lists billing first and drops app:
    // the rows and the remembered version are renumbered by name.
    let snap = snapshot::decode(&snapshot::encode(&e.snapshot())).unwrap();
    let mut other =
        Engine::restore_themed(&EngineConfig::default(), &names(&["app2", "app"]), &snap).unwrap();
    assert_eq!(theme_rows(&mut other, T0 + MIN), [(1, 1), (COMMENTED, 1)]);
    // Its comment removed: every row lets go of it.
    let mut silent = revised;
    silent.themes = crate::themes::ThemeSet(0);
    silent.comment = 0;
    silent.content ^= 2;
    silent.updated_at_ms = Some(T0 + 2 * MIN);
    other.record(0, &silent, T0 + 2 * MIN);
    assert_eq!(theme_rows(&mut other, T0 + 2 * MIN), []);
    let mut dropped =
        Engine::restore_themed(&EngineConfig::default(), &names(&["billing"]), &snap).unwrap();
    assert_eq!(theme_rows(&mut dropped, T0 + MIN), [(COMMENTED, 1)]);
}

#[test]
fn answers_counted_with_themes_off_are_never_taken_out_of_theme_rows() {
    let mut off = engine();
    let mut old = obs("old", "p", "r", 2, T0, 1.0);
    old.comment = 9;
    off.record(0, &old, T0);
    assert_eq!(theme_rows(&mut off, T0), []);
    let snap = snapshot::decode(&snapshot::encode(&off.snapshot())).unwrap();
    let mut on =
        Engine::restore_themed(&EngineConfig::default(), &["app".to_string()], &snap).unwrap();
    // A new commented answer in the same bucket, then the old one revised
    // without its comment: only the new one is in the rows, before and
    // after.
    let mut new = obs("new", "p", "r", 2, T0, 1.0);
    new.comment = 4;
    on.record(0, &new, T0);
    assert_eq!(theme_rows(&mut on, T0), [(COMMENTED, 1)]);
    let mut revised = old;
    revised.comment = 0;
    revised.content ^= 1;
    revised.updated_at_ms = Some(T0 + 1);
    assert!(matches!(
        on.record(0, &revised, T0 + 1),
        Outcome::Revised { .. }
    ));
    assert_eq!(theme_rows(&mut on, T0 + 1), [(COMMENTED, 1)]);
}
