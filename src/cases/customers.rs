//! Remembered customers, for repeat detection: per partition, a customer's
//! 64-bit id hash, when their last case opened (ms) and that case's alert
//! id, in 30 bytes.
//!
//! A hash table would cost 36–70 bytes per customer (its load swings
//! between 44% and 87% as it doubles). Here most customers live in one
//! sorted array sized exactly; new ones go to a small table that is
//! merged into the array (in place, from the back) once it holds a
//! thirty-second as many. The hashes being uniform, a directory of where
//! each 1/2^k of the hash space starts (one u32 per 16 customers) takes a
//! lookup to a run of about 16 neighbours: two or three cache lines,
//! whatever the array's size.

use hashbrown::HashTable;

use super::{AlertKey, halves, join};

/// A customer's last case: when it opened, and its alert's id (a repeat
/// detractor's escalation names it as `previous_alert_id` at once, with no
/// read-back of the alerts topic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Last {
    pub opened_ms: i64,
    /// Zero when not known (restored from a format-2 snapshot, which kept
    /// the alert's offset instead).
    pub alert: AlertKey,
}

/// One customer in the sorted array: 30 bytes, 2-aligned (ms in 48 bits:
/// up to the year 10889).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, packed(2))]
struct Entry {
    hash: u64,
    alert: [u64; 2],
    ms_lo: u32,
    ms_hi: u16,
}

impl Entry {
    fn new(hash: u64, last: Last) -> Entry {
        let ms = last.opened_ms.clamp(0, (1 << 48) - 1) as u64;
        Entry {
            hash,
            alert: halves(last.alert),
            ms_lo: ms as u32,
            ms_hi: (ms >> 32) as u16,
        }
    }
    fn last(&self) -> Last {
        let (alert, lo, hi) = (self.alert, self.ms_lo, self.ms_hi);
        Last {
            opened_ms: (i64::from(hi) << 32) | i64::from(lo),
            alert: join(alert),
        }
    }
    fn hash(&self) -> u64 {
        self.hash
    }
}

/// A prefetch hint for the cache line at `p` (x86-64; nothing elsewhere).
#[inline(always)]
fn prefetch(p: *const i8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults, whatever the address,
    // and reads nothing the program sees.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Fewest new customers held apart before a merge.
const MIN_RECENT: usize = 1024;

/// New customers are merged into the array once they are this fraction of
/// it: each merge moves the whole array, so its cost per new customer is
/// about this many entries moved.
const RECENT_SHARE: usize = 16;

/// Customers per directory slot, about.
const PER_SLOT: usize = 16;

/// One partition's customers.
#[derive(Default)]
pub(super) struct Index {
    sorted: Vec<Entry>,
    /// New customers in arrival order, until merged into `sorted`.
    recent: Vec<Entry>,
    /// Positions in `recent`, by hash.
    recent_at: HashTable<u32>,
    /// `dir[b]`: the first position in `sorted` whose hash's top `bits`
    /// bits are `b` or more; one more slot holds the length.
    dir: Vec<u32>,
    bits: u32,
}

/// The directory's size for an array of `n`: `bits` of the hash, 0 (no
/// directory) for a small array.
fn dir_bits(n: usize) -> u32 {
    if n < 2 * PER_SLOT {
        0
    } else {
        (n / PER_SLOT).max(1).next_power_of_two().trailing_zeros()
    }
}

impl Index {
    pub(super) fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where `hash` is in the array (or would go).
    fn find(&self, hash: u64) -> Result<usize, usize> {
        let (lo, hi) = if self.bits == 0 {
            (0, self.sorted.len())
        } else {
            let b = (hash >> (64 - self.bits)) as usize;
            (self.dir[b] as usize, self.dir[b + 1] as usize)
        };
        // A run of about 16: counted through rather than halved, so the
        // loads do not wait on each other (a binary search's would, one
        // cache miss after another).
        let run = &self.sorted[lo..hi];
        if run.len() > 4 * PER_SLOT {
            return run
                .binary_search_by_key(&hash, Entry::hash)
                .map(|i| i + lo)
                .map_err(|i| i + lo);
        }
        let at = run.iter().filter(|e| e.hash() < hash).count();
        match run.get(at) {
            Some(e) if e.hash() == hash => Ok(lo + at),
            _ => Err(lo + at),
        }
    }

    /// Starts loading the run of the array where `hash` would be, so that
    /// its cache misses overlap the caller's other lookups (the case table)
    /// instead of following them. Only a hint: no effect on results.
    pub(super) fn prefetch(&self, hash: u64) {
        if self.bits == 0 {
            return;
        }
        let b = (hash >> (64 - self.bits)) as usize;
        let (Some(&lo), Some(&hi)) = (self.dir.get(b), self.dir.get(b + 1)) else {
            return;
        };
        if let Some(run) = self.sorted.get(lo as usize..hi as usize) {
            // A run is about 16 entries: 5 cache lines.
            for line in run.chunks(64 / std::mem::size_of::<Entry>()) {
                prefetch(line.as_ptr().cast());
            }
        }
    }

    /// Where `hash` is among the recent customers.
    fn find_recent(&self, hash: u64) -> Option<usize> {
        let recent = &self.recent;
        self.recent_at
            .find(hash, |&i| recent[i as usize].hash() == hash)
            .map(|&i| i as usize)
    }

    /// Builds the directory of the array as it is now.
    fn index(&mut self) {
        let n = self.sorted.len();
        self.bits = dir_bits(n);
        self.dir.clear();
        if self.bits == 0 {
            self.dir.shrink_to_fit();
            return;
        }
        let slots = 1usize << self.bits;
        self.dir.reserve_exact(slots + 1);
        let mut at = 0usize;
        for b in 0..slots {
            while at < n && ((self.sorted[at].hash() >> (64 - self.bits)) as usize) < b {
                at += 1;
            }
            self.dir.push(at as u32);
        }
        self.dir.push(n as u32);
    }

    #[cfg(test)]
    pub(super) fn get(&self, hash: u64) -> Option<Last> {
        if let Some(i) = self.find_recent(hash) {
            return Some(self.recent[i].last());
        }
        self.find(hash).ok().map(|i| self.sorted[i].last())
    }

    /// Sets a customer's last case; true when the customer is new.
    pub(super) fn set(&mut self, hash: u64, last: Last) -> bool {
        self.update(hash, |_| last).is_none()
    }

    /// Sets a customer's last case to what `f` makes of the one before
    /// (none for a new customer), with one search; the one before.
    pub(super) fn update(
        &mut self,
        hash: u64,
        f: impl FnOnce(Option<Last>) -> Last,
    ) -> Option<Last> {
        if let Some(i) = self.find_recent(hash) {
            let before = self.recent[i].last();
            self.recent[i] = Entry::new(hash, f(Some(before)));
            return Some(before);
        }
        if let Ok(i) = self.find(hash) {
            let before = self.sorted[i].last();
            self.sorted[i] = Entry::new(hash, f(Some(before)));
            return Some(before);
        }
        let i = self.recent.len() as u32;
        self.recent.push(Entry::new(hash, f(None)));
        let recent = &self.recent;
        self.recent_at
            .insert_unique(hash, i, |&j| recent[j as usize].hash());
        if self.recent.len() >= MIN_RECENT.max(self.sorted.len() / RECENT_SHARE) {
            self.merge();
        }
        None
    }

    /// Moves the recent customers into the array, in place, from the back,
    /// building the directory on the way (one pass over the array).
    fn merge(&mut self) {
        let mut new = std::mem::take(&mut self.recent);
        self.recent_at.clear();
        new.sort_unstable_by_key(Entry::hash);
        let (n, k) = (self.sorted.len(), new.len());
        // A thirty-second to spare: the array grows (and may move) at most
        // every other merge.
        if self.sorted.capacity() < n + k {
            self.sorted.reserve_exact(k + (n + k) / 32);
        }
        self.sorted.resize(n + k, Entry::default());
        self.bits = dir_bits(n + k);
        let slots = if self.bits == 0 {
            0
        } else {
            1usize << self.bits
        };
        self.dir.clear();
        self.dir.reserve_exact(slots + 1);
        self.dir.resize(slots + 1, 0);
        self.dir[slots] = (n + k) as u32;
        // `dir[filled..]` is set; `dir[b]` for a bucket b is set as soon
        // as an entry of a lower bucket is written (going down), to the
        // position after it.
        let mut filled = slots;
        let bits = self.bits;
        let (s, dir) = (&mut self.sorted, &mut self.dir);
        let (mut i, mut j) = (n, k);
        for w in (0..n + k).rev() {
            let e = if j > 0 && (i == 0 || s[i - 1].hash() <= new[j - 1].hash()) {
                j -= 1;
                new[j]
            } else {
                i -= 1;
                s[i]
            };
            s[w] = e;
            if bits > 0 {
                let bucket = (e.hash() >> (64 - bits)) as usize;
                while filled > bucket + 1 {
                    filled -= 1;
                    dir[filled] = (w + 1) as u32;
                }
            }
        }
        for d in &mut dir[..filled] {
            *d = 0;
        }
        if bits == 0 {
            dir.clear();
            dir.shrink_to_fit();
        }
        // The recent buffer's room is kept for the next round.
        new.clear();
        self.recent = new;
    }

    /// Keeps the customers `keep` says to.
    pub(super) fn retain(&mut self, keep: impl Fn(Last) -> bool) {
        if !self.recent.is_empty() {
            self.merge();
        }
        self.sorted.retain(|e| keep(e.last()));
        if self.sorted.capacity() > self.sorted.len() + self.sorted.len() / 4 {
            self.sorted.shrink_to_fit();
        }
        self.index();
    }

    /// Every customer: (hash, last case), in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, Last)> + '_ {
        self.sorted
            .iter()
            .chain(&self.recent)
            .map(|e| (e.hash(), e.last()))
    }

    /// Bytes held, for the memory figures.
    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<Entry>();
        (self.sorted.capacity() + self.recent.capacity()) * entry
            + self.dir.capacity() * 4
            + self.recent_at.capacity() * 5
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn an_entry_is_30_bytes_and_keeps_the_whole_alert_id() {
        assert_eq!(std::mem::size_of::<Entry>(), 30);
        let last = Last {
            opened_ms: 1_767_225_600_123,
            alert: u128::MAX - 12_345,
        };
        assert_eq!(Entry::new(7, last).last(), last);
    }

    #[test]
    fn a_million_customers_cost_about_30_bytes_each() {
        let mut ix = Index::default();
        for i in 0..1_000_000u64 {
            let h = xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes());
            ix.set(
                h,
                Last {
                    opened_ms: i as i64,
                    alert: u128::from(i) << 64 | 1,
                },
            );
        }
        assert_eq!(ix.len(), 1_000_000);
        let per = ix.heap_bytes() as f64 / 1e6;
        assert!(per <= 33.0, "{per} bytes per customer");
        for i in (0..1_000_000u64).step_by(997) {
            let h = xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes());
            assert_eq!(ix.get(h).map(|l| l.alert), Some(u128::from(i) << 64 | 1));
        }
    }

    proptest! {
        #[test]
        fn the_index_agrees_with_a_map(
            ops in proptest::collection::vec((0u64..3000, 0i64..1_000_000, any::<bool>()), 1..6000),
            spread in prop_oneof![Just(u64::MAX), Just(1u64 << 20), Just(0u64)],
            cutoff in 0i64..1_000_000,
        ) {
            // Hashes uniform, crowded in a narrow range, or tiny: the
            // search must not depend on the spread.
            let hash = |k: u64| if spread == 0 { k } else {
                xxhash_rust::xxh3::xxh3_64(&k.to_le_bytes()) % spread.max(1)
            };
            let mut ix = Index::default();
            let mut m: BTreeMap<u64, Last> = BTreeMap::new();
            for (k, at, probe) in ops {
                let h = hash(k);
                if probe {
                    prop_assert_eq!(ix.get(h), m.get(&h).copied());
                } else {
                    let l = Last { opened_ms: at, alert: (at as u128) << 70 | k as u128 };
                    prop_assert_eq!(ix.set(h, l), m.insert(h, l).is_none());
                }
            }
            prop_assert_eq!(ix.len(), m.len());
            ix.retain(|l| l.opened_ms >= cutoff);
            m.retain(|_, l| l.opened_ms >= cutoff);
            let mut all: Vec<(u64, Last)> = ix.iter().collect();
            all.sort_by_key(|(h, _)| *h);
            prop_assert_eq!(all, m.into_iter().collect::<Vec<_>>());
        }
    }
}
