use super::*;
use proptest::prelude::*;

const H: i64 = 3_600_000;

/// Event times kept to `grain` ms, for windows up to 30 days.
fn tc(grain: i64) -> TimeCode {
    TimeCode::new(grain, 30 * 24 * H)
}

fn v(content: u32) -> Version {
    Version {
        content,
        comment: 0,
        score: 9,
        updated_ms: None,
        t_ms: 1_000,
        key: KeyId(3),
        weight: 1.5,
        alerts: 0,
        withdrawn: false,
        themes: 0,
        themed: false,
        values: 0,
    }
}

fn seen(d: &mut Dedup, id: u64, now: i64) -> bool {
    d.find(id, now).is_some()
}

#[test]
fn an_id_is_remembered_within_the_horizon_only() {
    let mut d = Dedup::new(24 * H, 100, tc(1), false);
    assert!(!seen(&mut d, id_hash("r1"), 0));
    d.insert(id_hash("r1"), 0, &v(1));
    assert!(seen(&mut d, id_hash("r1"), 23 * H));
    assert!(!seen(&mut d, id_hash("r2"), 23 * H));
    // First sight decides: a horizon later it is gone.
    assert!(!seen(&mut d, id_hash("r1"), 24 * H));
    d.expire(100 * H);
    assert_eq!(d.len(), 0);
}

#[test]
fn a_version_round_trips_through_its_42_bytes() {
    // 34, and 8 for the themes.
    assert_eq!(std::mem::size_of::<Entry>(), 42);
    let mut d = Dedup::new(24 * H, 100, tc(60_000), true);
    let want = Version {
        content: 0xdead_beef,
        comment: 0x12,
        score: 3,
        updated_ms: Some(1_763_800_000_123),
        // Kept to the grain (a minute here): a whole minute.
        t_ms: 1_763_700_000_000,
        key: KeyId(MAX_KEY),
        weight: 1234.5,
        alerts: 7,
        withdrawn: true,
        themes: 1 << 63 | 5,
        themed: true,
        values: 0xFFFF_0001_0000_EA62,
    };
    d.insert(9, 1_763_800_000_000, &want);
    let (slot, got) = d.find(9, 1_763_800_000_000).unwrap();
    assert_eq!(got, want);
    let later = Version {
        alerts: 8,
        values: 7,
        ..want
    };
    d.update(slot, &later);
    assert_eq!(d.find(9, 1_763_800_000_001).unwrap().1, later);
    // Without breakdowns, no values are kept: 42 bytes a version.
    let mut d = Dedup::new(24 * H, 100, tc(60_000), false);
    d.insert(9, 1_763_800_000_000, &want);
    let got = d.find(9, 1_763_800_000_000).unwrap().1;
    assert_eq!(got, Version { values: 0, ..want });
}

#[test]
fn memory_is_bounded_by_max_ids() {
    let mut d = Dedup::new(24 * H, 4, tc(1), false);
    for i in 0..10 {
        d.insert(id_hash(&format!("r{i}")), i, &v(1));
    }
    assert!(d.len() <= 4, "{}", d.len());
    assert_eq!(d.evicted_early, 10 - d.len() as u64);
    assert!(seen(&mut d, id_hash("r9"), 11));
    assert!(!seen(&mut d, id_hash("r0"), 11));
}

#[test]
fn zero_max_ids_disables_dedup() {
    let mut d = Dedup::new(24 * H, 0, tc(1), false);
    d.insert(1, 0, &v(1));
    assert!(!seen(&mut d, 1, 0));
    assert!(d.disabled());
}

#[test]
fn snapshot_round_trips_and_rejects_disorder() {
    let mut d = Dedup::new(24 * H, 100, tc(1), true);
    for i in 0..5 {
        let values = 1 + i as u64;
        d.insert(
            id_hash(&format!("r{i}")),
            i * 1000,
            &Version {
                values,
                ..v(i as u32)
            },
        );
    }
    // Values named by their number, and read back from it.
    let name = |v: &Version| (v.key.0, vec![v.values as u32]);
    let values = |i: &[u32]| u64::from(i[0]);
    let snap = d.to_proto(name);
    let mut back = Dedup::new(24 * H, 100, tc(1), true);
    back.absorb(&snap, |i| Some(KeyId(i)), |b| b, values)
        .unwrap();
    assert_eq!(back.to_proto(name), snap);
    let want = Version { values: 4, ..v(3) };
    assert_eq!(back.find(id_hash("r3"), 10_000).unwrap().1, want);

    let mut bad = snap.clone();
    bad.seen_at_ms.swap(0, 4);
    assert!(
        Dedup::new(H, 10, tc(1), false)
            .absorb(&bad, |i| Some(KeyId(i)), |b| b, values)
            .is_err()
    );
    bad.seen_at_ms.pop();
    assert!(
        Dedup::new(H, 10, tc(1), false)
            .absorb(&bad, |i| Some(KeyId(i)), |b| b, values)
            .is_err()
    );
}

#[test]
fn a_chunk_whose_times_would_overflow_is_closed_early() {
    let mut d = Dedup::new(i64::MAX / 4, 10_000, tc(1), false);
    // Two ids 60 days apart: the second cannot count from the first's
    // base in 32 bits of ms.
    let later = Version {
        t_ms: 60 * 24 * H - 5_000,
        ..v(2)
    };
    d.insert(1, 0, &v(1));
    d.insert(2, 60 * 24 * H, &later);
    assert_eq!(d.find(1, 60 * 24 * H).unwrap().1, v(1));
    assert_eq!(d.find(2, 60 * 24 * H).unwrap().1, later);
    assert_eq!(d.len(), 2);
}

/// Runs `ops` (id, clock step, op) against `Dedup` and against a map of
/// (first sight, version) with the same expiry and cap, oldest first.
fn agrees_with_a_map(
    ops: &[(u64, i64, u8)],
    horizon: i64,
    cap: usize,
) -> Result<(), TestCaseError> {
    let mut d = Dedup::new(horizon, cap, tc(1), false);
    let mut m: std::collections::HashMap<u64, (i64, Version)> = Default::default();
    let mut order: std::collections::VecDeque<u64> = Default::default();
    let mut now = 0i64;
    for &(id, step, op) in ops {
        now += step;
        while let Some(&oldest) = order.front() {
            if m[&oldest].0 > now - horizon {
                break;
            }
            m.remove(&oldest);
            order.pop_front();
        }
        let got = d.find(id, now).map(|(_, v)| v);
        prop_assert_eq!(got, m.get(&id).map(|(_, v)| *v));
        match (op, got) {
            (0, None) => {
                if m.len() >= cap {
                    let oldest = order.pop_front().unwrap();
                    m.remove(&oldest);
                }
                // Answered a little before it arrived (kept to the ms).
                let first = Version {
                    t_ms: now - (id as i64 % 5000),
                    ..v(id as u32)
                };
                d.insert(id, now, &first);
                m.insert(id, (now, first));
                order.push_back(id);
            }
            (1, Some(_)) => {
                let (slot, _) = d.find(id, now).unwrap();
                let e = m.get_mut(&id).unwrap();
                let new = Version {
                    alerts: 1,
                    content: 7,
                    ..e.1
                };
                d.update(slot, &new);
                e.1 = new;
            }
            _ => {}
        }
        prop_assert_eq!(d.len(), m.len());
    }
    Ok(())
}

#[test]
fn when_every_ring_place_is_taken_the_oldest_chunk_goes_whole() {
    // A horizon of years, one id per ~4.7 hours: every id closes a chunk,
    // and the ring runs out of places before anything expires.
    let mut d = Dedup::new(i64::MAX / 4, 100_000, tc(1), false);
    let n = 9000u64;
    for i in 0..n {
        d.insert(i, i as i64 * SPAN_MS, &v(1));
    }
    let now = n as i64 * SPAN_MS;
    let kept = d.len() as u64;
    assert!(kept >= 4096 && kept < n, "{kept}");
    assert_eq!(d.evicted_early, n - kept);
    assert!(d.find(n - 1, now).is_some());
    assert!(d.find(n - kept, now).is_some());
    assert!(d.find(n - kept - 1, now).is_none());
    assert!(d.find(0, now).is_none());
}

proptest! {
    /// Inserts, updates, lookups and the clock moving, with a small cap
    /// and horizon.
    #[test]
    fn the_store_agrees_with_a_map(ops in proptest::collection::vec((0u64..200, 0i64..5_000, 0u8..3), 1..3000)) {
        agrees_with_a_map(&ops, 50_000, 150)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// The same over several chunks: the ring wraps, the index grows and
    /// reuses slots of forgotten ids; now and then the clock jumps a third
    /// of a chunk's span, closing chunks short.
    #[test]
    fn the_store_agrees_with_a_map_across_chunks(
        ops in proptest::collection::vec(
            (0u64..6000, prop_oneof![50 => 0i64..40, 1 => Just(SPAN_MS / 3)], 0u8..3),
            1..30_000,
        )
    ) {
        agrees_with_a_map(&ops, 2 * SPAN_MS, 1200)?;
    }
}
