//! Duplicate detection by response_id within a horizon of processing time.
//!
//! Remembers the 64-bit xxh3 hash of each response_id with the processing
//! time it was first seen, in two generations of hash maps: new ids go into
//! the current one; when it is a horizon old, or holds half of `max_ids`,
//! it becomes the previous one and the old previous one is dropped whole.
//! Dropping whole maps, never single entries, keeps the tables free of
//! tombstones, so a lookup stays one or two cache misses however much ids
//! churn. A remembered id counts as a duplicate only while its first sight
//! is less than a horizon old, so the horizon is exact; ids dropped before
//! their horizon because `max_ids` was reached are counted
//! (`evicted_early`). Memory is bounded by `max_ids` whatever the rate:
//! about 20–40 bytes per remembered id (16-byte entry, map load 44–87%).
//!
//! Two different ids share a hash with probability ~n²/2⁶⁵: for a million
//! ids remembered, about 3 in 100 million; such a response would be counted
//! as a duplicate.

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

type IdMap = hashbrown::HashMap<u64, i64, BuildHasherDefault<Identity>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dedup snapshot is inconsistent: {0}")]
pub struct CorruptDedup(pub &'static str);

#[derive(Clone, Default)]
struct Generation {
    /// Processing time the generation was opened.
    opened_ms: i64,
    /// Newest first-sight time in it.
    newest_ms: i64,
    /// id hash → processing time first seen.
    ids: IdMap,
}

#[derive(Clone)]
pub(crate) struct Dedup {
    horizon_ms: i64,
    max_ids: usize,
    current: Generation,
    previous: Generation,
    /// Ids forgotten before their horizon because `max_ids` was reached.
    pub(crate) evicted_early: u64,
}

impl Dedup {
    pub(crate) fn new(horizon_ms: i64, max_ids: usize) -> Self {
        Dedup {
            horizon_ms,
            max_ids,
            current: Generation::default(),
            previous: Generation::default(),
            evicted_early: 0,
        }
    }

    /// Ids per generation: two generations hold at most `max_ids`.
    fn generation_cap(&self) -> usize {
        (self.max_ids / 2).max(1)
    }

    /// Records `hash` as seen at `now`; returns true if it was already seen
    /// within the horizon (a duplicate, which is not recorded again).
    pub(crate) fn check_and_insert(&mut self, hash: u64, now: i64) -> bool {
        if self.max_ids == 0 {
            return false;
        }
        self.expire(now);
        let cutoff = now.saturating_sub(self.horizon_ms);
        if let Some(&at) = self.current.ids.get(&hash) {
            if at > cutoff {
                return true;
            }
        } else if let Some(&at) = self.previous.ids.get(&hash) {
            if at > cutoff {
                return true;
            }
        }
        if self.current.ids.len() >= self.generation_cap() {
            self.rotate(now);
        }
        if self.current.ids.is_empty() {
            self.current.opened_ms = now;
        }
        self.current.ids.insert(hash, now);
        self.current.newest_ms = now;
        false
    }

    /// Current becomes previous; the old previous is dropped, counting what
    /// in it was still within the horizon.
    fn rotate(&mut self, now: i64) {
        let cutoff = now.saturating_sub(self.horizon_ms);
        if self.previous.newest_ms > cutoff {
            self.evicted_early += self
                .previous
                .ids
                .values()
                .filter(|&&at| at > cutoff)
                .count() as u64;
        }
        self.previous = std::mem::take(&mut self.current);
    }

    /// Drops generations whose ids are all past the horizon.
    pub(crate) fn expire(&mut self, now: i64) {
        let cutoff = now.saturating_sub(self.horizon_ms);
        if !self.current.ids.is_empty() && self.current.opened_ms <= cutoff {
            self.rotate(now);
        }
        if !self.previous.ids.is_empty() && self.previous.newest_ms <= cutoff {
            self.previous = Generation::default();
        }
    }

    /// Ids remembered (some may already be past the horizon).
    pub(crate) fn len(&self) -> usize {
        self.current.ids.len() + self.previous.ids.len()
    }

    /// Heap bytes of both generations.
    pub(crate) fn heap_bytes(&self) -> usize {
        (self.current.ids.capacity() + self.previous.ids.capacity())
            * (std::mem::size_of::<(u64, i64)>() + 1)
    }

    pub(crate) fn to_proto(&self) -> pb::DedupSnapshot {
        let mut all: Vec<(u64, i64)> = self
            .previous
            .ids
            .iter()
            .chain(self.current.ids.iter())
            .map(|(&h, &t)| (h, t))
            .collect();
        all.sort_unstable_by_key(|&(h, t)| (t, h));
        pb::DedupSnapshot {
            id_hashes: all.iter().map(|&(h, _)| h).collect(),
            seen_at_ms: all.iter().map(|&(_, t)| t).collect(),
        }
    }

    /// Loads a snapshot (oldest first) into this set, as if its ids had
    /// been checked in order.
    pub(crate) fn absorb(&mut self, s: &pb::DedupSnapshot) -> Result<(), CorruptDedup> {
        if s.id_hashes.len() != s.seen_at_ms.len() {
            return Err(CorruptDedup("hash and time arrays differ in length"));
        }
        if s.seen_at_ms.windows(2).any(|w| w[0] > w[1]) {
            return Err(CorruptDedup("times are not in order"));
        }
        for (&h, &t) in s.id_hashes.iter().zip(&s.seen_at_ms) {
            self.check_and_insert(h, t);
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
        // Seen again after the horizon: remembered afresh.
        assert!(d.check_and_insert(id_hash("r1"), 25 * H));
        // Everything past the horizon is eventually dropped.
        d.expire(100 * H);
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn memory_is_bounded_by_max_ids() {
        let mut d = Dedup::new(24 * H, 4);
        for i in 0..10 {
            d.check_and_insert(id_hash(&format!("r{i}")), i);
        }
        assert!(d.len() <= 4, "{}", d.len());
        assert_eq!(d.evicted_early, 10 - d.len() as u64);
        assert!(d.check_and_insert(id_hash("r9"), 11));
        assert!(!d.check_and_insert(id_hash("r0"), 11));
    }

    #[test]
    fn horizon_is_exact_across_generations() {
        let mut d = Dedup::new(10 * H, 1000);
        assert!(!d.check_and_insert(1, 0));
        // The generation holding id 1 rotates to previous at 10h; the id
        // still counts until it is a full horizon old.
        assert!(!d.check_and_insert(2, 9 * H));
        assert!(!d.check_and_insert(3, 10 * H));
        assert!(d.check_and_insert(2, 18 * H + 59 * 60_000));
        assert!(!d.check_and_insert(2, 19 * H));
        assert_eq!(d.evicted_early, 0);
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
        assert_eq!(back.to_proto(), snap);
        assert!(back.check_and_insert(id_hash("r3"), 10_000));

        let mut bad = snap.clone();
        bad.seen_at_ms.swap(0, 4);
        assert!(Dedup::new(H, 10).absorb(&bad).is_err());
        bad.seen_at_ms.pop();
        assert!(Dedup::new(H, 10).absorb(&bad).is_err());
    }
}
