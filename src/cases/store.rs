//! The cases by alert id, in memory that does not double: cases live in
//! fixed chunks of slots (a freed slot is reused), and a hash table of
//! 4-byte slot numbers finds them. A `HashMap<AlertKey, Case>` costs 82 to
//! 166 bytes per case as its load swings between 87% and 44%; this costs
//! 72 bytes per slot plus 5 to 11 for the index.

use hashbrown::HashTable;

use super::{AlertKey, Case};

/// Slots per chunk: a chunk is 288 KiB.
const CHUNK: usize = 4096;

/// A slot: the alert id (zero when free: an alert id is a 128-bit hash,
/// never zero in practice) and its case.
#[derive(Clone, Copy)]
struct Slot {
    key: [u64; 2],
    case: Case,
}

fn halves(key: AlertKey) -> [u64; 2] {
    [(key >> 64) as u64, key as u64]
}

fn join([hi, lo]: [u64; 2]) -> AlertKey {
    (u128::from(hi) << 64) | u128::from(lo)
}

/// The table's hash of an alert id: its bits folded and mixed (ids are
/// hashes already; the mix keeps a skewed id from crowding the table).
fn hash([hi, lo]: [u64; 2]) -> u64 {
    (hi ^ lo)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(29)
}

#[derive(Default)]
pub(super) struct Cases {
    chunks: Vec<Vec<Slot>>,
    free: Vec<u32>,
    index: HashTable<u32>,
}

impl Cases {
    fn slot(&self, i: u32) -> &Slot {
        &self.chunks[i as usize / CHUNK][i as usize % CHUNK]
    }

    fn slot_mut(&mut self, i: u32) -> &mut Slot {
        &mut self.chunks[i as usize / CHUNK][i as usize % CHUNK]
    }

    /// The slot of `key`'s case: valid until a case is inserted or removed.
    pub(super) fn find(&self, key: AlertKey) -> Option<u32> {
        let k = halves(key);
        let chunks = &self.chunks;
        self.index
            .find(hash(k), |&i| {
                chunks[i as usize / CHUNK][i as usize % CHUNK].key == k
            })
            .copied()
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub(super) fn contains_key(&self, key: &AlertKey) -> bool {
        self.find(*key).is_some()
    }

    pub(super) fn get(&self, key: &AlertKey) -> Option<&Case> {
        self.find(*key).map(|i| &self.slot(i).case)
    }

    /// The case in a slot `find` gave.
    pub(super) fn at(&self, slot: u32) -> Case {
        self.slot(slot).case
    }

    /// Replaces the case in a slot `find` gave.
    pub(super) fn set(&mut self, slot: u32, case: Case) {
        self.slot_mut(slot).case = case;
    }

    /// Sets the case of `key`, new or not.
    pub(super) fn insert(&mut self, key: AlertKey, case: Case) {
        match self.find(key) {
            Some(i) => self.set(i, case),
            None => {
                self.insert_new(key, case);
            }
        }
    }

    /// Adds the case of `key`, which the caller knows is not held; its slot.
    pub(super) fn insert_new(&mut self, key: AlertKey, case: Case) -> u32 {
        let k = halves(key);
        let slot = Slot { key: k, case };
        let i = match self.free.pop() {
            Some(i) => {
                *self.slot_mut(i) = slot;
                i
            }
            None => {
                if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
                    self.chunks.push(Vec::with_capacity(CHUNK));
                }
                let n = self.chunks.len() - 1;
                let last = &mut self.chunks[n];
                last.push(slot);
                (n * CHUNK + last.len() - 1) as u32
            }
        };
        let chunks = &self.chunks;
        self.index.insert_unique(hash(k), i, |&j| {
            hash(chunks[j as usize / CHUNK][j as usize % CHUNK].key)
        });
        i
    }

    pub(super) fn remove(&mut self, key: &AlertKey) -> Option<Case> {
        let k = halves(*key);
        let chunks = &self.chunks;
        let found = self.index.find_entry(hash(k), |&i| {
            chunks[i as usize / CHUNK][i as usize % CHUNK].key == k
        });
        let (i, _) = found.ok()?.remove();
        let slot = self.slot_mut(i);
        let case = slot.case;
        slot.key = [0, 0];
        self.free.push(i);
        Some(case)
    }

    /// Every case, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (AlertKey, &Case)> + '_ {
        self.chunks
            .iter()
            .flatten()
            .filter(|s| s.key != [0, 0])
            .map(|s| (join(s.key), &s.case))
    }

    /// Some case's alert id.
    pub(super) fn any_key(&self) -> Option<AlertKey> {
        self.index.iter().next().map(|&i| join(self.slot(i).key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn case(n: i64) -> Case {
        Case {
            alert_offset: n,
            opened_at: n,
            state_at: n,
            contacted_at: super::super::NEVER,
            previous: [0, 0],
            segment: super::super::SegmentId(0),
            partition: 0,
            priority: 0,
            state: 0,
            escalated: 0,
            overdue: false,
        }
    }

    proptest! {
        #[test]
        fn the_store_agrees_with_a_map(ops in proptest::collection::vec((1u128..10_000, 0u8..3), 1..12_000)) {
            let mut s = Cases::default();
            let mut m: BTreeMap<AlertKey, Case> = BTreeMap::new();
            for (k, op) in ops {
                // Spread the keys over all 128 bits, as alert ids are.
                let key = k.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) | 1;
                match op {
                    0 => { s.insert(key, case(k as i64)); m.insert(key, case(k as i64)); }
                    1 => prop_assert_eq!(s.remove(&key), m.remove(&key)),
                    _ => prop_assert_eq!(s.get(&key), m.get(&key)),
                }
                prop_assert_eq!(s.len(), m.len());
            }
            let mut all: Vec<(AlertKey, Case)> = s.iter().map(|(k, c)| (k, *c)).collect();
            all.sort_by_key(|(k, _)| *k);
            prop_assert_eq!(all, m.into_iter().collect::<Vec<_>>());
        }
    }
}
