use super::*;
use proptest::prelude::*;

const H: i64 = 3_600_000;

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
    }
}

fn seen(d: &mut Dedup, id: u64, now: i64) -> bool {
    d.find(id, now).is_some()
}

#[test]
fn an_id_is_remembered_within_the_horizon_only() {
    let mut d = Dedup::new(24 * H, 100, 1);
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
fn a_version_round_trips_through_its_20_odd_bytes() {
    assert_eq!(std::mem::size_of::<Entry>(), 36);
    let mut d = Dedup::new(24 * H, 100, 60_000);
    let want = Version {
        content: 0xdead_beef,
        comment: 0x1234,
        score: 3,
        updated_ms: Some(1_763_800_000_123),
        // Kept to the grain (a minute here): a whole minute.
        t_ms: 1_763_700_000_000,
        key: KeyId(MAX_KEY),
        weight: 1234.5,
        alerts: 7,
        withdrawn: true,
    };
    d.insert(9, 1_763_800_000_000, &want);
    let (slot, got) = d.find(9, 1_763_800_000_000).unwrap();
    assert_eq!(got, want);
    let later = Version { alerts: 8, ..want };
    d.update(slot, &later);
    assert_eq!(d.find(9, 1_763_800_000_001).unwrap().1, later);
}

#[test]
fn memory_is_bounded_by_max_ids() {
    let mut d = Dedup::new(24 * H, 4, 1);
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
    let mut d = Dedup::new(24 * H, 0, 1);
    d.insert(1, 0, &v(1));
    assert!(!seen(&mut d, 1, 0));
    assert!(d.disabled());
}

#[test]
fn snapshot_round_trips_and_rejects_disorder() {
    let mut d = Dedup::new(24 * H, 100, 1);
    for i in 0..5 {
        d.insert(id_hash(&format!("r{i}")), i * 1000, &v(i as u32));
    }
    let snap = d.to_proto(|k| k.0);
    let mut back = Dedup::new(24 * H, 100, 1);
    back.absorb(&snap, |i| Some(KeyId(i))).unwrap();
    assert_eq!(back.to_proto(|k| k.0), snap);
    assert_eq!(back.find(id_hash("r3"), 10_000).unwrap().1, v(3));

    let mut bad = snap.clone();
    bad.seen_at_ms.swap(0, 4);
    assert!(
        Dedup::new(H, 10, 1)
            .absorb(&bad, |i| Some(KeyId(i)))
            .is_err()
    );
    bad.seen_at_ms.pop();
    assert!(
        Dedup::new(H, 10, 1)
            .absorb(&bad, |i| Some(KeyId(i)))
            .is_err()
    );
}

#[test]
fn a_chunk_whose_times_would_overflow_is_closed_early() {
    let mut d = Dedup::new(i64::MAX / 4, 10_000, 1);
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

proptest! {
    /// Against a map of (first sight, version): inserts, updates, lookups
    /// and the clock moving, with a small cap and horizon.
    #[test]
    fn the_store_agrees_with_a_map(ops in proptest::collection::vec((0u64..200, 0i64..5_000, 0u8..3), 1..3000)) {
        let (horizon, cap) = (50_000i64, 150usize);
        let mut d = Dedup::new(horizon, cap, 1);
        let mut m: std::collections::BTreeMap<u64, (i64, Version)> = Default::default();
        let mut order: std::collections::VecDeque<u64> = Default::default();
        let mut now = 0i64;
        for (id, step, op) in ops {
            now += step;
            // The model's expiry: first sight a horizon old; then the cap,
            // oldest first.
            m.retain(|_, (t, _)| *t > now - horizon);
            order.retain(|i| m.contains_key(i));
            let got = d.find(id, now).map(|(_, v)| v);
            prop_assert_eq!(got, m.get(&id).map(|(_, v)| *v));
            match (op, got) {
                (0, None) => {
                    if m.len() >= cap {
                        let oldest = order.pop_front().unwrap();
                        m.remove(&oldest);
                    }
                    d.insert(id, now, &v(id as u32));
                    m.insert(id, (now, v(id as u32)));
                    order.push_back(id);
                }
                (1, Some(_)) => {
                    let (slot, _) = d.find(id, now).unwrap();
                    let new = Version { alerts: 1, content: 7, ..v(id as u32) };
                    d.update(slot, &new);
                    m.get_mut(&id).unwrap().1 = new;
                }
                _ => {}
            }
            prop_assert_eq!(d.len(), m.len());
        }
    }
}
