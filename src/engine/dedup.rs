//! Duplicate detection by response_id within a horizon of processing time.
//!
//! Remembers the 64-bit xxh3 hash of each response_id with the processing
//! time it was first seen, oldest first. A hash older than the horizon is
//! forgotten; when more than `max_ids` are remembered the oldest is
//! forgotten early (counted), so memory is bounded by `max_ids` whatever
//! the rate: about 40 bytes per remembered id (8-byte hash in a hash set
//! at ≤ 87.5% load, 16-byte queue entry).
//!
//! Two different ids share a hash with probability ~n²/2⁶⁵: for a million
//! ids remembered, about 3 in 100 million; such a response would be counted
//! as a duplicate.

use std::collections::VecDeque;
use std::hash::{BuildHasherDefault, Hasher};

use crate::pb;

/// The hash the dedup set and snapshots use for a response_id. xxh3-64 is
/// specified and stable across versions, so snapshots stay readable.
pub fn id_hash(response_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(response_id.as_bytes())
}

/// The keys are already uniform hashes: hashing them again is wasted work.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; fold anything else in anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type IdSet = hashbrown::HashSet<u64, BuildHasherDefault<Identity>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dedup snapshot is inconsistent: {0}")]
pub struct CorruptDedup(pub &'static str);

#[derive(Clone)]
pub(crate) struct Dedup {
    horizon_ms: i64,
    max_ids: usize,
    seen: IdSet,
    /// (hash, first seen at), oldest first: processing time only moves on.
    order: VecDeque<(u64, i64)>,
    /// Ids forgotten before their horizon because `max_ids` was reached.
    pub(crate) evicted_early: u64,
}

impl Dedup {
    pub(crate) fn new(horizon_ms: i64, max_ids: usize) -> Self {
        Dedup {
            horizon_ms,
            max_ids,
            seen: IdSet::default(),
            order: VecDeque::new(),
            evicted_early: 0,
        }
    }

    /// Records `hash` as seen at `now`; returns true if it was already seen
    /// within the horizon (a duplicate, which is not recorded again).
    pub(crate) fn check_and_insert(&mut self, hash: u64, now: i64) -> bool {
        if self.max_ids == 0 {
            return false;
        }
        self.expire(now);
        if self.seen.contains(&hash) {
            return true;
        }
        if self.order.len() >= self.max_ids {
            if let Some((old, _)) = self.order.pop_front() {
                self.seen.remove(&old);
                self.evicted_early += 1;
            }
        }
        self.seen.insert(hash);
        self.order.push_back((hash, now));
        false
    }

    /// Forgets what was first seen at or before `now − horizon`.
    pub(crate) fn expire(&mut self, now: i64) {
        let cutoff = now.saturating_sub(self.horizon_ms);
        while let Some(&(h, at)) = self.order.front() {
            if at > cutoff {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&h);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    pub(crate) fn to_proto(&self) -> pb::DedupSnapshot {
        pb::DedupSnapshot {
            id_hashes: self.order.iter().map(|&(h, _)| h).collect(),
            seen_at_ms: self.order.iter().map(|&(_, t)| t).collect(),
        }
    }

    /// Loads a snapshot into this (empty or not) set, oldest first.
    pub(crate) fn absorb(&mut self, s: &pb::DedupSnapshot) -> Result<(), CorruptDedup> {
        if s.id_hashes.len() != s.seen_at_ms.len() {
            return Err(CorruptDedup("hash and time arrays differ in length"));
        }
        if s.seen_at_ms.windows(2).any(|w| w[0] > w[1]) {
            return Err(CorruptDedup("times are not in order"));
        }
        let mut merged: Vec<(u64, i64)> = self.order.drain(..).collect();
        merged.extend(
            s.id_hashes
                .iter()
                .copied()
                .zip(s.seen_at_ms.iter().copied()),
        );
        merged.sort_by_key(|&(_, t)| t);
        self.seen.clear();
        for (h, t) in merged {
            if self.seen.insert(h) {
                self.order.push_back((h, t));
            }
        }
        while self.order.len() > self.max_ids {
            if let Some((old, _)) = self.order.pop_front() {
                self.seen.remove(&old);
                self.evicted_early += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn same_id_within_horizon_is_duplicate_whatever_the_event_time() {
        let mut d = Dedup::new(24 * H, 100);
        assert!(!d.check_and_insert(id_hash("r1"), 0));
        assert!(d.check_and_insert(id_hash("r1"), 23 * H));
        assert!(!d.check_and_insert(id_hash("r2"), 23 * H));
    }

    #[test]
    fn id_is_forgotten_after_the_horizon() {
        let mut d = Dedup::new(24 * H, 100);
        assert!(!d.check_and_insert(id_hash("r1"), 0));
        // A duplicate does not extend the horizon.
        assert!(d.check_and_insert(id_hash("r1"), 20 * H));
        assert!(!d.check_and_insert(id_hash("r1"), 24 * H));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn memory_is_bounded_by_max_ids() {
        let mut d = Dedup::new(24 * H, 3);
        for i in 0..10 {
            d.check_and_insert(id_hash(&format!("r{i}")), i);
        }
        assert_eq!(d.len(), 3);
        assert_eq!(d.evicted_early, 7);
        assert!(d.check_and_insert(id_hash("r9"), 11));
        assert!(!d.check_and_insert(id_hash("r0"), 11));
    }

    #[test]
    fn zero_max_ids_disables_dedup() {
        let mut d = Dedup::new(24 * H, 0);
        assert!(!d.check_and_insert(1, 0));
        assert!(!d.check_and_insert(1, 0));
    }

    #[test]
    fn snapshot_round_trips_and_rejects_disorder() {
        let mut d = Dedup::new(24 * H, 100);
        for i in 0..5 {
            d.check_and_insert(id_hash(&format!("r{i}")), i * 1000);
        }
        let snap = d.to_proto();
        let mut back = Dedup::new(24 * H, 100);
        back.absorb(&snap).unwrap();
        assert_eq!(back.order, d.order);
        assert!(back.check_and_insert(id_hash("r3"), 10_000));

        let mut bad = snap.clone();
        bad.seen_at_ms.swap(0, 4);
        assert!(Dedup::new(H, 10).absorb(&bad).is_err());
        bad.seen_at_ms.pop();
        assert!(Dedup::new(H, 10).absorb(&bad).is_err());
    }
}
