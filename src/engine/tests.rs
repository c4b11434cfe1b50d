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
        alerting: score <= 6,
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

// ---- properties ---------------------------------------------------------

#[derive(Debug, Clone)]
pub(super) struct Ev {
    pub(super) partition: i32,
    id: u8,
    product: u8,
    region: u8,
    score: u32,
    /// Event time relative to the clock at arrival (negative = past).
    offset_ms: i64,
    weight: Option<u16>,
    /// How far the clock moves before this event.
    pub(super) step_ms: i64,
    /// A later version of its response (updated_at, minutes after T0).
    updated: Option<u8>,
    /// The same content as this id's last event (a duplicate, or a stale
    /// or revived version).
    again: bool,
}

pub(super) fn ev() -> impl Strategy<Value = Ev> {
    (
        0..3i32,
        0..60u8,
        0..4u8,
        0..3u8,
        0..=10u32,
        prop_oneof![
            4 => -2 * HOUR..5 * MIN,
            3 => -40 * DAY..0i64,
        ],
        proptest::option::of(0..5000u16),
        prop_oneof![3 => 0..5 * MIN, 1 => 0..3 * DAY],
        proptest::option::of(0..50u8),
        proptest::bool::weighted(0.2),
    )
        .prop_map(
            |(
                partition,
                id,
                product,
                region,
                score,
                offset_ms,
                weight,
                step_ms,
                updated,
                again,
            )| Ev {
                partition,
                id,
                product,
                region,
                score,
                offset_ms,
                weight,
                step_ms,
                updated,
                again,
            },
        )
}

pub(super) fn windows() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        Just(vec!["1h", "24h", "7d", "30d"]),
        Just(vec!["90m", "1d"]),
        Just(vec!["10m", "7h", "3d"]),
    ]
    .prop_map(|v| v.into_iter().map(String::from).collect())
}

/// Buckets per window: the default, one bitmap word with room to spare,
/// and rings that span several words.
pub(super) fn buckets() -> impl Strategy<Value = u32> {
    prop_oneof![3 => Just(48u32), 1 => Just(7), 1 => Just(64), 1 => Just(150)]
}

struct Placed {
    partition: i32,
    product: String,
    region: String,
    category: Category,
    t: i64,
    weight: f64,
}

/// What the model remembers of a response: first sight, its latest
/// version's updated_at and content, and where that version was placed.
struct Known {
    first_seen: i64,
    updated: Option<i64>,
    content: u32,
    placed: usize,
}

/// One event as the engine gets it (and its content, the model's key).
pub(super) fn observe<'a>(
    ev: &Ev,
    last: &mut HashMap<u8, Ev>,
    now: i64,
    names: &'a mut (String, String, String),
) -> (Observation<'a>, Ev) {
    let ev = match last.get(&ev.id) {
        Some(prev) if ev.again => Ev {
            partition: ev.partition,
            step_ms: ev.step_ms,
            updated: ev.updated,
            again: true,
            ..prev.clone()
        },
        _ => ev.clone(),
    };
    last.insert(ev.id, ev.clone());
    *names = (
        format!("resp-{}", ev.id),
        format!("p{}", ev.product),
        format!("r{}", ev.region),
    );
    let weight = ev.weight.map_or(1.0, |w| f64::from(w) / 7.0);
    let mut o = obs(
        &names.0,
        &names.1,
        &names.2,
        ev.score,
        now + ev.offset_ms,
        weight,
    );
    // Content independent of the clock: the same fields again are a
    // duplicate, whenever they come.
    o.content = content(&names.1, &names.2, ev.score, ev.offset_ms, weight);
    o.updated_at_ms = ev.updated.map(|u| T0 + i64::from(u) * MIN);
    (o, ev)
}

/// Runs the events through the engine and, independently, keeps what a
/// brute-force model says is counted: the latest version of each response
/// first seen within the horizon (earlier versions are taken out), every
/// response forgotten past it as it was.
fn run(
    e: &mut Engine,
    events: &[Ev],
    start: i64,
    horizon: i64,
) -> (i64, Vec<Placed>, Vec<Outcome>) {
    let mut now = start;
    let mut seen: HashMap<(i32, u8), Known> = HashMap::new();
    let mut last: HashMap<u8, Ev> = HashMap::new();
    let mut placed: Vec<Option<Placed>> = Vec::new();
    let mut outcomes = Vec::new();
    for ev in events {
        now += ev.step_ms;
        let mut names = Default::default();
        let (o, ev) = observe(ev, &mut last, now, &mut names);
        let (category, weight, content, updated) =
            (o.category, o.weight, o.content, o.updated_at_ms);
        let out = e.record(ev.partition, &o, now);
        let t = (now + ev.offset_ms).min(now);
        let late = !e.layout().in_any_window(t, now);
        let key = (ev.partition, ev.id);
        let known = seen.get(&key).filter(|k| k.first_seen > now - horizon);
        let place = Placed {
            partition: ev.partition,
            product: names.1.clone(),
            region: names.2.clone(),
            category,
            t,
            weight,
        };
        match (known, out) {
            (Some(k), Outcome::Duplicate) => assert_eq!(k.content, content),
            (Some(k), Outcome::Stale) => assert!(k.content != content && updated < k.updated),
            (Some(k), Outcome::Revised { counted, .. }) => {
                assert!(k.content != content && updated >= k.updated, "{ev:?}");
                assert_eq!(counted.late, late);
                let old = k.placed;
                placed[old] = None;
                placed.push(Some(place));
                let k = seen.get_mut(&key).unwrap();
                (k.updated, k.content, k.placed) = (updated, content, placed.len() - 1);
            }
            (None, Outcome::RevisionAfterHorizon) => assert!(updated.is_some()),
            (None, Outcome::Counted(counted, _)) => {
                assert!(updated.is_none(), "{ev:?}");
                assert_eq!(counted.late, late);
                placed.push(Some(place));
                seen.insert(
                    key,
                    Known {
                        first_seen: now,
                        updated,
                        content,
                        placed: placed.len() - 1,
                    },
                );
            }
            (k, out) => panic!(
                "model {:?} vs engine {out:?} for {ev:?}",
                k.map(|k| (k.content, k.updated))
            ),
        }
        outcomes.push(out);
        if ev.step_ms > DAY {
            e.sweep(now);
        }
    }
    (now, placed.into_iter().flatten().collect(), outcomes)
}

fn brute_force(
    layout: &WindowLayout,
    placed: &[Placed],
    now: i64,
) -> BTreeMap<(String, String), Vec<WindowStats>> {
    let mut out: BTreeMap<(String, String), Vec<WindowStats>> = BTreeMap::new();
    for p in placed {
        let windows = out
            .entry((p.product.clone(), p.region.clone()))
            .or_insert_with(|| vec![WindowStats::default(); layout.len()]);
        for (w, spec) in layout.specs().iter().enumerate() {
            let n = i64::from(spec.buckets);
            if p.t.div_euclid(spec.bucket_ms) > now.div_euclid(spec.bucket_ms) - n {
                windows[w].add(p.category, p.weight);
            }
        }
    }
    out.retain(|_, w| w.iter().any(|s| s.responses() > 0));
    out
}

fn assert_same(
    got: &BTreeMap<(String, String), Vec<WindowStats>>,
    want: &BTreeMap<(String, String), Vec<WindowStats>>,
) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, g) in got {
        for (w, (a, b)) in g.iter().zip(&want[k]).enumerate() {
            assert_eq!(
                (a.promoters, a.passives, a.detractors),
                (b.promoters, b.passives, b.detractors),
                "{k:?} window {w}"
            );
            let tol = 1e-5 * b.weight_total.max(1.0);
            assert!(
                (a.weight_total - b.weight_total).abs() <= tol,
                "{k:?} w{w}: {a:?} vs {b:?}"
            );
            assert!(
                (a.weight_net - b.weight_net).abs() <= tol,
                "{k:?} w{w}: {a:?} vs {b:?}"
            );
        }
    }
}

fn names(e: &Engine, outs: &[Outcome]) -> Vec<Option<(String, String, Category, bool)>> {
    outs.iter()
        .map(|o| match *o {
            Outcome::Counted(c, _) | Outcome::Revised { counted: c, .. } => {
                let (p, r) = e.segment_name(c.key).unwrap_or(("?", "?"));
                Some((p.to_string(), r.to_string(), c.category, c.late))
            }
            _ => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn window_counts_equal_brute_force(
        windows in windows(),
        buckets_per_window in buckets(),
        events in proptest::collection::vec(ev(), 1..400),
        read_after in 0..10 * DAY,
    ) {
        let cfg = EngineConfig { windows, buckets_per_window, ..EngineConfig::default() };
        let mut e = Engine::new(&cfg).unwrap();
        let (now, placed, _) = run(&mut e, &events, T0, 24 * HOUR);
        for read_at in [now, now + read_after] {
            assert_same(&by_name(&e, read_at), &brute_force(e.layout(), &placed, read_at));
        }
        e.sweep(now + read_after);
        assert_same(&by_name(&e, now + read_after), &brute_force(e.layout(), &placed, now + read_after));
    }

    #[test]
    fn dropping_a_partition_removes_exactly_its_share(
        events in proptest::collection::vec(ev(), 1..300),
        drop in 0..3i32,
    ) {
        let mut e = engine();
        let (now, placed, _) = run(&mut e, &events, T0, 24 * HOUR);
        e.drop_partition(drop);
        let rest: Vec<Placed> = placed.into_iter().filter(|p| p.partition != drop).collect();
        assert_same(&by_name(&e, now), &brute_force(e.layout(), &rest, now));
    }

    #[test]
    fn state_records_hold_exactly_the_partition_snapshot(
        windows in windows(),
        events in proptest::collection::vec(ev(), 0..300),
        offset in 0..i64::MAX,
    ) {
        let cfg = EngineConfig { windows, ..EngineConfig::default() };
        let mut e = Engine::new(&cfg).unwrap();
        run(&mut e, &events, T0, 24 * HOUR);
        for p in 0..4 {
            let bytes = e.partition_state_record(p, "survey-responses", offset);
            let mut part = e.partition_snapshot(p).unwrap_or_default();
            part.partition = p;
            part.source_topic = "survey-responses".into();
            part.next_offset = offset;
            let want = crate::pb::EngineSnapshot {
                windows: e.snapshot().windows,
                now_ms: e.now_ms(),
                partitions: vec![part],
            };
            prop_assert_eq!(snapshot::decode(&bytes).unwrap(), want);
        }
    }

    #[test]
    fn snapshot_restore_continue_equals_never_stopping(
        windows in windows(),
        buckets_per_window in buckets(),
        events in proptest::collection::vec(ev(), 1..300),
        split in 0usize..300,
    ) {
        let cfg = EngineConfig { windows, buckets_per_window, ..EngineConfig::default() };
        let split = split.min(events.len());
        let mut straight = Engine::new(&cfg).unwrap();
        let (end, _, all) = run(&mut straight, &events, T0, 24 * HOUR);

        let mut first = Engine::new(&cfg).unwrap();
        let (mid, _, head) = run(&mut first, &events[..split], T0, 24 * HOUR);
        let bytes = snapshot::encode(&first.snapshot());
        let mut resumed = Engine::restore(&cfg, &snapshot::decode(&bytes).unwrap()).unwrap();
        let mut tail_outs = Vec::new();
        let mut now = mid;
        // Same calls as `run`, on the restored engine (the head's last
        // contents first, for events that repeat them).
        let mut last: HashMap<u8, Ev> = HashMap::new();
        for ev in &events[..split] {
            let mut names = Default::default();
            observe(ev, &mut last, 0, &mut names);
        }
        for ev in &events[split..] {
            now += ev.step_ms;
            let mut names = Default::default();
            let (o, ev) = observe(ev, &mut last, now, &mut names);
            tail_outs.push(resumed.record(ev.partition, &o, now));
            if ev.step_ms > DAY {
                resumed.sweep(now);
            }
        }
        prop_assert_eq!(now, end);
        let mut got = names(&first, &head);
        got.extend(names(&resumed, &tail_outs));
        // Names of the head's outcomes are read from `first`, whose table
        // may have swept them since; compare only what both can name.
        let want = names(&straight, &all);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            prop_assert_eq!(g.is_none(), w.is_none(), "outcome {} dup-ness", i);
        }
        prop_assert_eq!(by_name(&resumed, end), by_name(&straight, end));
        prop_assert_eq!(by_name(&resumed, end + 3 * DAY), by_name(&straight, end + 3 * DAY));
    }
}
