//! Remembered customers, for repeat detection: per partition, a customer's
//! 64-bit id hash, when their last case opened (ms) and that case's alert
//! offset, in 20 bytes.
//!
//! A hash table would cost 36–70 bytes per customer (its load swings
//! between 44% and 87% as it doubles). Here most customers live in one
//! sorted array sized exactly; new ones go to a small table that is
//! merged into the array (in place, from the back) once it holds a
//! thirty-second as many. The hashes being uniform, a directory of where
//! each 1/2^k of the hash space starts (one u32 per 16 customers) takes a
//! lookup to a run of about 16 neighbours: two or three cache lines,
//! whatever the array's size.

use hashbrown::HashMap;

/// A customer's last case: when it opened, and its alert's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Last {
    pub opened_ms: i64,
    pub offset: i64,
}

/// 48 bits of each: ms up to the year 10889, offsets up to 2.8e14.
const MASK48: u64 = (1 << 48) - 1;

/// One customer in the sorted array: 20 bytes, 4-aligned.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, packed(4))]
struct Entry {
    hash: u64,
    /// opened ms (48 bits) and the offset's low 16 bits.
    lo: u64,
    /// The offset's high 32 bits.
    hi: u32,
}

impl Entry {
    fn new(hash: u64, last: Last) -> Entry {
        let ms = (last.opened_ms.max(0) as u64).min(MASK48);
        let off = (last.offset.max(0) as u64).min(MASK48);
        Entry {
            hash,
            lo: ms | (off << 48),
            hi: (off >> 16) as u32,
        }
    }
    fn last(&self) -> Last {
        let (lo, hi) = (self.lo, self.hi);
        Last {
            opened_ms: (lo & MASK48) as i64,
            offset: ((lo >> 48) | (u64::from(hi) << 16)) as i64,
        }
    }
    fn hash(&self) -> u64 {
        self.hash
    }
}

/// Fewest new customers held apart before a merge.
const MIN_RECENT: usize = 1024;

/// Customers per directory slot, about.
const PER_SLOT: usize = 16;

/// One partition's customers.
#[derive(Default)]
pub(super) struct Index {
    sorted: Vec<Entry>,
    recent: HashMap<u64, Last>,
    /// `dir[b]`: the first position in `sorted` whose hash's top `bits`
    /// bits are `b` or more; one more slot holds the length.
    dir: Vec<u32>,
    bits: u32,
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

    /// Builds the directory of the array as it is now.
    fn index(&mut self) {
        let n = self.sorted.len();
        let want = (n / PER_SLOT).max(1).next_power_of_two();
        self.bits = if n < 2 * PER_SLOT {
            0
        } else {
            want.trailing_zeros()
        };
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
        if let Some(l) = self.recent.get(&hash) {
            return Some(*l);
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
        if let Some(l) = self.recent.get_mut(&hash) {
            let before = *l;
            *l = f(Some(before));
            return Some(before);
        }
        if let Ok(i) = self.find(hash) {
            let before = self.sorted[i].last();
            self.sorted[i] = Entry::new(hash, f(Some(before)));
            return Some(before);
        }
        self.recent.insert(hash, f(None));
        if self.recent.len() >= MIN_RECENT.max(self.sorted.len() / 32) {
            self.merge();
        }
        None
    }

    /// Moves the recent customers into the array, in place.
    fn merge(&mut self) {
        let mut new: Vec<Entry> = self.recent.drain().map(|(h, l)| Entry::new(h, l)).collect();
        new.sort_unstable_by_key(Entry::hash);
        let (n, k) = (self.sorted.len(), new.len());
        // A thirty-second to spare: the array grows (and may move) at most
        // every other merge.
        if self.sorted.capacity() < n + k {
            self.sorted.reserve_exact(k + (n + k) / 32);
        }
        self.sorted.resize(n + k, Entry::default());
        let s = &mut self.sorted;
        let (mut i, mut j) = (n, k);
        while j > 0 {
            let w = i + j - 1;
            if i > 0 && s[i - 1].hash() > new[j - 1].hash() {
                s[w] = s[i - 1];
                i -= 1;
            } else {
                s[w] = new[j - 1];
                j -= 1;
            }
        }
        self.index();
    }

    /// Keeps the customers `keep` says to.
    pub(super) fn retain(&mut self, keep: impl Fn(Last) -> bool) {
        self.recent.retain(|_, l| keep(*l));
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
            .map(|e| (e.hash(), e.last()))
            .chain(self.recent.iter().map(|(h, l)| (*h, *l)))
    }

    /// Bytes held, for the memory figures.
    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        self.sorted.capacity() * std::mem::size_of::<Entry>()
            + self.dir.capacity() * 4
            + self.recent.capacity() * (std::mem::size_of::<(u64, Last)>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn an_entry_is_20_bytes_and_keeps_48_bits_of_each() {
        assert_eq!(std::mem::size_of::<Entry>(), 20);
        let last = Last {
            opened_ms: 1_767_225_600_123,
            offset: (1 << 47) + 12_345,
        };
        assert_eq!(Entry::new(7, last).last(), last);
    }

    #[test]
    fn a_million_customers_cost_about_20_bytes_each() {
        let mut ix = Index::default();
        for i in 0..1_000_000u64 {
            let h = xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes());
            ix.set(
                h,
                Last {
                    opened_ms: i as i64,
                    offset: i as i64,
                },
            );
        }
        assert_eq!(ix.len(), 1_000_000);
        let per = ix.heap_bytes() as f64 / 1e6;
        assert!(per <= 24.0, "{per} bytes per customer");
        for i in (0..1_000_000u64).step_by(997) {
            let h = xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes());
            assert_eq!(ix.get(h).map(|l| l.offset), Some(i as i64));
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
                    let l = Last { opened_ms: at, offset: at / 2 };
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
