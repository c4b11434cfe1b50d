//! The segment table: (product, region) names ↔ small ids, and the
//! cardinality guard.
//!
//! Names become Prometheus label values, so their number must be bounded: at
//! most `max_keys` real segments are admitted; a response for a new segment
//! beyond that is folded into the reserved segment `__other__`/`__other__`
//! and reported as an overflow. A segment leaves the table once no partition
//! holds window state for it and it has not been seen for the longest
//! window, which frees its place for another.

use std::hash::BuildHasher;

/// Product and region of the segment responses are folded into once the
/// table is full. Validation refuses it as input, so it is never spoofed.
pub const OTHER: &str = "__other__";

/// A segment's id in the table. Ids are reused after a segment leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub(crate) u32);

impl KeyId {
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// The id of index `i` (benchmarks and tests of the shell).
    pub fn from_index(i: usize) -> Self {
        KeyId(u32::try_from(i).unwrap_or(u32::MAX))
    }
}

/// Borrowed (product, region); hashes the same way whether looked up or
/// stored.
#[derive(Hash)]
struct NameRef<'a>(&'a str, &'a str);

#[derive(Debug, Clone)]
struct Entry {
    /// product then region, in one allocation; `split` is where region
    /// starts.
    name: Box<str>,
    split: u32,
    /// Partitions holding window state for this segment.
    holders: u32,
    /// Processing time it was last seen.
    last_seen_ms: i64,
}

impl Entry {
    fn parts(&self) -> (&str, &str) {
        self.name.split_at(self.split as usize)
    }
}

#[derive(Clone)]
pub(crate) struct KeyTable {
    /// Index from name hash to id; the names live in `entries` only.
    ids: hashbrown::HashTable<KeyId>,
    hasher: hashbrown::DefaultHashBuilder,
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    max_keys: usize,
    /// Admitted segments, reserved names excluded.
    real: usize,
    /// Where new names go once `max_keys` are admitted.
    other: Name,
    /// Names admitted beyond `max_keys` and never folded (`other` too).
    reserved: &'static [Name],
}

/// A (product, region) name known when the program is built.
pub(crate) type Name = (&'static str, &'static str);

/// How a response's segment was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub(crate) key: KeyId,
    /// True when the table was full and the response went to `__other__`.
    pub(crate) overflowed: bool,
}

impl KeyTable {
    pub(crate) fn new(max_keys: usize) -> Self {
        Self::with_names(max_keys, (OTHER, OTHER), &[])
    }

    /// A table folding overflow into `other`, and admitting `reserved`
    /// names (and `other`) whatever its size.
    pub(crate) fn with_names(max_keys: usize, other: Name, reserved: &'static [Name]) -> Self {
        KeyTable {
            ids: hashbrown::HashTable::new(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            entries: Vec::new(),
            free: Vec::new(),
            max_keys,
            real: 0,
            other,
            reserved,
        }
    }

    fn is_reserved(&self, product: &str, region: &str) -> bool {
        (product, region) == self.other || self.reserved.contains(&(product, region))
    }

    /// Finds or admits the segment, or folds it into `other` when full.
    pub(crate) fn resolve(&mut self, product: &str, region: &str, now: i64) -> Resolved {
        let (key, overflowed) = match self.lookup(product, region) {
            Some(id) => (id, false),
            // Validation refuses `__other__` as input: only restored
            // snapshots name it.
            None if self.is_reserved(product, region) => (self.insert(product, region), false),
            None if self.real < self.max_keys => {
                self.real += 1;
                (self.insert(product, region), false)
            }
            None => {
                let (p, r) = self.other;
                (self.lookup(p, r).unwrap_or_else(|| self.insert(p, r)), true)
            }
        };
        if let Some(e) = self.entries[key.index()].as_mut() {
            e.last_seen_ms = e.last_seen_ms.max(now);
        }
        Resolved { key, overflowed }
    }

    fn hash(&self, product: &str, region: &str) -> u64 {
        self.hasher.hash_one(NameRef(product, region))
    }

    fn insert(&mut self, product: &str, region: &str) -> KeyId {
        let entry = Entry {
            name: format!("{product}{region}").into_boxed_str(),
            // Labels are bounded far below 4 GiB by validation.
            split: u32::try_from(product.len()).unwrap_or(u32::MAX),
            holders: 0,
            last_seen_ms: i64::MIN,
        };
        let id = match self.free.pop() {
            Some(i) => {
                self.entries[i as usize] = Some(entry);
                KeyId(i)
            }
            None => {
                self.entries.push(Some(entry));
                // The table never outgrows max_keys + 1 entries, far below u32.
                KeyId(u32::try_from(self.entries.len() - 1).unwrap_or(u32::MAX))
            }
        };
        let hash = self.hash(product, region);
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.ids.insert_unique(hash, id, |k| {
            let (p, r) = entries[k.index()].as_ref().map_or(("", ""), Entry::parts);
            hasher.hash_one(NameRef(p, r))
        });
        id
    }

    pub(crate) fn name(&self, key: KeyId) -> Option<(&str, &str)> {
        self.entries
            .get(key.index())
            .and_then(|e| e.as_ref())
            .map(Entry::parts)
    }

    pub(crate) fn lookup(&self, product: &str, region: &str) -> Option<KeyId> {
        let hash = self.hash(product, region);
        self.ids
            .find(hash, |k| self.name(*k) == Some((product, region)))
            .copied()
    }

    /// A partition now holds window state for `key`.
    pub(crate) fn hold(&mut self, key: KeyId) {
        if let Some(e) = self.entries.get_mut(key.index()).and_then(|e| e.as_mut()) {
            e.holders += 1;
        }
    }

    /// A partition let go of its window state for `key`.
    pub(crate) fn release(&mut self, key: KeyId) {
        if let Some(e) = self.entries.get_mut(key.index()).and_then(|e| e.as_mut()) {
            e.holders = e.holders.saturating_sub(1);
        }
    }

    /// Removes segments no partition holds and not seen since `cutoff`;
    /// returns their names.
    pub(crate) fn sweep(&mut self, cutoff: i64) -> Vec<(String, String)> {
        let mut gone = Vec::new();
        for i in 0..self.entries.len() {
            let idle =
                matches!(&self.entries[i], Some(e) if e.holders == 0 && e.last_seen_ms <= cutoff);
            if !idle {
                continue;
            }
            if let Some(e) = self.entries[i].take() {
                let (p, r) = e.parts();
                let hash = self.hash(p, r);
                if let Ok(found) = self.ids.find_entry(hash, |k| k.0 == i as u32) {
                    found.remove();
                }
                self.free.push(i as u32);
                if !self.is_reserved(p, r) {
                    self.real -= 1;
                }
                gone.push((p.to_string(), r.to_string()));
            }
        }
        gone
    }

    /// Most real segments admitted.
    #[cfg(test)]
    pub(crate) fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Admitted real segments (reserved names excluded).
    pub(crate) fn len(&self) -> usize {
        self.real
    }

    /// One past the highest id in use: sizes per-key scratch arrays.
    pub(crate) fn id_bound(&self) -> usize {
        self.entries.len()
    }

    /// Heap bytes of the names and the index.
    pub(crate) fn heap_bytes(&self) -> usize {
        let names: usize = self.entries.iter().flatten().map(|e| e.name.len()).sum();
        names
            + self.ids.capacity() * (std::mem::size_of::<KeyId>() + 1)
            + self.entries.capacity() * std::mem::size_of::<Option<Entry>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_keys_beyond_the_limit_fold_into_other() {
        let mut t = KeyTable::new(2);
        let a = t.resolve("a", "x", 0);
        let b = t.resolve("b", "x", 0);
        assert!(!a.overflowed && !b.overflowed);
        let c = t.resolve("c", "x", 0);
        assert!(c.overflowed);
        assert_eq!(t.name(c.key), Some((OTHER, OTHER)));
        // Known keys still resolve to themselves.
        assert_eq!(t.resolve("a", "x", 1), a);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn swept_keys_free_their_place() {
        let mut t = KeyTable::new(1);
        let a = t.resolve("a", "x", 10).key;
        t.hold(a);
        assert!(t.sweep(100).is_empty(), "held keys stay");
        t.release(a);
        assert!(t.sweep(9).is_empty(), "recently seen keys stay");
        assert_eq!(t.sweep(10), vec![("a".to_string(), "x".to_string())]);
        let b = t.resolve("b", "y", 20);
        assert!(!b.overflowed);
        assert_eq!(t.lookup("a", "x"), None);
        assert_eq!(t.lookup("b", "y"), Some(b.key));
    }
}
