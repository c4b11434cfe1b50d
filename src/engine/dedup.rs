//! What the engine remembers of each response_id within a horizon of
//! processing time: enough of its latest version to tell a duplicate
//! (same content) from a revision (new content) or a stale version (older
//! than the one counted), and to take that version's contribution back out
//! of the windows when a revision replaces it.
//!
//! Layout, per partition: the versions in a ring of fixed chunks in the
//! order they were first seen (processing time never goes back), and a hash
//! table of 4-byte sequence numbers finding them by id. First sight decides
//! the horizon, so the oldest are always at the front: expiry and the
//! `max_ids` bound pop the front, never search. A version is 36 bytes; the
//! index adds 5 to 11 (its load swings between 87% and 44%).
//!
//! Two different ids share a 64-bit hash with probability ~n²/2⁶⁵ (for a
//! million ids remembered, about 3 in 100 million): such a response would
//! be taken for a version of the other. Two versions' contents share a
//! 32-bit hash with probability 2⁻³²: such a revision would be taken for a
//! duplicate.

use std::collections::VecDeque;

use hashbrown::HashTable;

use super::KeyId;
use crate::pb;

/// The hash the dedup set and snapshots use for a response_id. xxh3-64 is
/// specified and stable across versions, so snapshots stay readable.
pub fn id_hash(response_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(response_id.as_bytes())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dedup snapshot is inconsistent: {0}")]
pub struct CorruptDedup(pub &'static str);

/// A response's latest version as the engine counted it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Version {
    /// xxh3 of everything a duplicate must repeat (comment included).
    pub content: u32,
    /// Of the comment alone: only to name a revision's effect.
    pub comment: u16,
    pub score: u8,
    /// `updated_at` (None: the first version).
    pub updated_ms: Option<i64>,
    /// Where it sits in the windows: event time and segment.
    pub t_ms: i64,
    pub key: KeyId,
    pub weight: f32,
    /// Alert records sent for this response (the next one's revision).
    pub alerts: u8,
    /// The last alert sent withdrew it.
    pub withdrawn: bool,
}

/// Ids per chunk.
const CHUNK: usize = 1024;

/// Largest key id a version can hold (24 bits; the alert count has the
/// other 8).
pub(crate) const MAX_KEY: u32 = (1 << 24) - 1;

/// A version as stored: 36 bytes, 4-aligned. Times are relative: `seen`
/// to its chunk's base, `updated` and `t` to `seen`; `t` in grains (the
/// greatest common divisor of the windows' bucket widths: the windows
/// cannot tell event times within a grain apart).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, packed(4))]
struct Entry {
    id: u64,
    seen: u32,
    /// updated_at − seen, whole seconds (its ms in `bits`), saturated;
    /// `i32::MIN` for none.
    updated: i32,
    /// ⌊t / grain⌋ − ⌊seen / grain⌋, saturated.
    t: i32,
    /// Key id (low 24 bits) and alert count (high 8).
    key_alerts: u32,
    weight: f32,
    content: u32,
    comment: u16,
    /// Score (bits 0–3), withdrawn (bit 4), the ms of `updated` (bits
    /// 5–14), a padding entry (bit 15).
    bits: u16,
}

const PAD: u16 = 1 << 15;
const WITHDRAWN: u16 = 1 << 4;

fn sat_i32(x: i64) -> i32 {
    x.clamp(i64::from(i32::MIN) + 1, i64::from(i32::MAX)) as i32
}

impl Entry {
    fn new(id: u64, seen: i64, base: i64, grain: i64, v: &Version) -> Entry {
        let mut e = Entry {
            id,
            seen: (seen - base).clamp(0, i64::from(u32::MAX)) as u32,
            ..Entry::default()
        };
        e.set(seen, grain, v);
        e
    }

    fn set(&mut self, seen: i64, grain: i64, v: &Version) {
        let (updated, ms) = match v.updated_ms {
            Some(u) => {
                let d = u.saturating_sub(seen);
                (sat_i32(d.div_euclid(1000)), d.rem_euclid(1000) as u16)
            }
            None => (i32::MIN, 0),
        };
        self.updated = updated;
        self.t = sat_i32(v.t_ms.div_euclid(grain) - seen.div_euclid(grain));
        self.key_alerts = (v.key.0.min(MAX_KEY)) | (u32::from(v.alerts) << 24);
        self.weight = v.weight;
        self.content = v.content;
        self.comment = v.comment;
        self.bits = u16::from(v.score & 0xF) | if v.withdrawn { WITHDRAWN } else { 0 } | (ms << 5);
    }

    fn seen(&self, base: i64) -> i64 {
        base + i64::from(self.seen)
    }

    fn version(&self, seen: i64, grain: i64) -> Version {
        let (updated, t, key_alerts, weight) = (self.updated, self.t, self.key_alerts, self.weight);
        let bits = self.bits;
        Version {
            content: self.content,
            comment: self.comment,
            score: (bits & 0xF) as u8,
            updated_ms: (updated != i32::MIN)
                .then(|| seen + i64::from(updated) * 1000 + i64::from((bits >> 5) & 0x3FF)),
            t_ms: (seen.div_euclid(grain) + i64::from(t)).saturating_mul(grain),
            key: KeyId(key_alerts & MAX_KEY),
            weight,
            alerts: (key_alerts >> 24) as u8,
            withdrawn: bits & WITHDRAWN != 0,
        }
    }
}

struct Chunk {
    /// Processing time the `seen` fields count from.
    base: i64,
    entries: Vec<Entry>,
}

/// Where a version is, from `Dedup::find`: valid until the next insert or
/// expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot(u64);

#[derive(Default)]
pub(crate) struct Dedup {
    horizon_ms: i64,
    max_ids: usize,
    /// Event times are kept to this many ms (see `Entry`).
    grain: i64,
    chunks: VecDeque<Chunk>,
    /// Sequence number of the first entry of the first chunk.
    first: u64,
    /// Entries of the first chunk already gone.
    gone: usize,
    /// Sequence number the next entry gets.
    end: u64,
    index: HashTable<u32>,
    /// Ids forgotten before their horizon because `max_ids` was reached.
    pub(crate) evicted_early: u64,
}

impl Clone for Dedup {
    fn clone(&self) -> Self {
        let mut d = Dedup::new(self.horizon_ms, self.max_ids, self.grain);
        d.evicted_early = self.evicted_early;
        for (id, seen, v) in self.iter() {
            d.push(id, seen, &v);
        }
        d
    }
}

/// The index's hash of an id hash (already uniform: mixed only so that a
/// crafted id cannot crowd one group).
fn mix(id: u64) -> u64 {
    id.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(32)
}

impl Dedup {
    pub(crate) fn new(horizon_ms: i64, max_ids: usize, grain: i64) -> Self {
        Dedup {
            horizon_ms,
            max_ids,
            grain: grain.max(1),
            ..Dedup::default()
        }
    }

    /// Dedup is off (`max_ids` 0): every response counts as new.
    pub(crate) fn disabled(&self) -> bool {
        self.max_ids == 0
    }

    fn entry(&self, seq: u64) -> (&Entry, i64) {
        let at = (seq - self.first) as usize;
        let c = &self.chunks[at / CHUNK];
        (&c.entries[at % CHUNK], c.base)
    }

    fn entry_mut(&mut self, seq: u64) -> (&mut Entry, i64) {
        let at = (seq - self.first) as usize;
        let c = &mut self.chunks[at / CHUNK];
        (&mut c.entries[at % CHUNK], c.base)
    }

    /// The full sequence number of a stored (truncated) one.
    fn seq(&self, short: u32) -> u64 {
        self.first + u64::from(short.wrapping_sub(self.first as u32))
    }

    /// The latest version of `id` first seen within the horizon at `now`.
    pub(crate) fn find(&mut self, id: u64, now: i64) -> Option<(Slot, Version)> {
        if self.disabled() {
            return None;
        }
        self.expire(now);
        let short = self.lookup(id)?;
        let seq = self.seq(short);
        let (e, base) = self.entry(seq);
        let seen = e.seen(base);
        Some((Slot(seq), e.version(seen, self.grain)))
    }

    fn lookup(&self, id: u64) -> Option<u32> {
        self.index
            .find(mix(id), |&s| {
                let seq = self.seq(s);
                seq >= self.first + self.gone as u64 && self.entry(seq).0.id == id
            })
            .copied()
    }

    /// Remembers a new id's first version, seen at `now`.
    pub(crate) fn insert(&mut self, id: u64, now: i64, v: &Version) {
        if self.disabled() {
            return;
        }
        let cutoff = now.saturating_sub(self.horizon_ms);
        while self.len() >= self.max_ids {
            match self.pop_front() {
                Some(seen) if seen > cutoff => self.evicted_early += 1,
                Some(_) => {}
                None => break,
            }
        }
        self.push(id, now, v);
    }

    /// Replaces the version in `slot` (from `find`, no insert since).
    pub(crate) fn update(&mut self, slot: Slot, v: &Version) {
        let grain = self.grain;
        let (e, base) = self.entry_mut(slot.0);
        let seen = e.seen(base);
        e.set(seen, grain, v);
    }

    fn push(&mut self, id: u64, seen: i64, v: &Version) {
        let fits = |c: &Chunk| {
            c.entries.len() < CHUNK && seen >= c.base && seen - c.base <= i64::from(u32::MAX)
        };
        if !self.chunks.back().is_some_and(fits) {
            // A chunk whose times would overflow is closed with padding:
            // sequence numbers stay chunk-aligned.
            if let Some(last) = self.chunks.back_mut() {
                let pad = Entry {
                    bits: PAD,
                    seen: u32::MAX,
                    ..Entry::default()
                };
                self.end += (CHUNK - last.entries.len()) as u64;
                last.entries.resize(CHUNK, pad);
            }
            self.chunks.push_back(Chunk {
                base: seen,
                entries: Vec::with_capacity(CHUNK),
            });
        }
        let seq = self.end;
        let Some(last) = self.chunks.back_mut() else {
            return;
        };
        self.end += 1;
        let base = last.base;
        last.entries.push(Entry::new(id, seen, base, self.grain, v));
        let chunks = &self.chunks;
        let first = self.first;
        self.index.insert_unique(mix(id), seq as u32, |&s| {
            let at = s.wrapping_sub(first as u32) as usize;
            mix(chunks[at / CHUNK].entries[at % CHUNK].id)
        });
    }

    /// The oldest entry still held, past padding and spent chunks (which
    /// this drops); None when empty.
    fn front(&mut self) -> Option<Entry> {
        loop {
            let front = self.chunks.front()?;
            match front.entries.get(self.gone) {
                Some(e) if e.bits & PAD != 0 => self.gone += 1,
                Some(e) => return Some(*e),
                None if self.gone < CHUNK => {
                    if self.chunks.len() > 1 {
                        // Only the last chunk is ever short.
                        return None;
                    }
                    // The only chunk, all gone: start afresh after it.
                    self.first += self.gone as u64;
                    self.chunks.clear();
                    self.gone = 0;
                    return None;
                }
                None => {
                    self.first += CHUNK as u64;
                    self.chunks.pop_front();
                    self.gone = 0;
                }
            }
        }
    }

    /// Forgets the oldest entry; its first sight (None when empty).
    fn pop_front(&mut self) -> Option<i64> {
        let e = self.front()?;
        let base = self.chunks.front()?.base;
        let seq = self.first + self.gone as u64;
        self.gone += 1;
        let first = self.first;
        if let Ok(found) = self.index.find_entry(mix(e.id), |&s| {
            first + u64::from(s.wrapping_sub(first as u32)) == seq
        }) {
            found.remove();
        }
        Some(e.seen(base))
    }

    /// Forgets what was first seen a horizon or more before `now`.
    pub(crate) fn expire(&mut self, now: i64) {
        let cutoff = now.saturating_sub(self.horizon_ms);
        while let Some(e) = self.front() {
            let base = self.chunks.front().map_or(0, |c| c.base);
            if e.seen(base) > cutoff {
                break;
            }
            self.pop_front();
        }
    }

    /// Ids remembered (some may already be past the horizon).
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.chunks.len() * CHUNK * std::mem::size_of::<Entry>()
            + self.index.capacity() * (std::mem::size_of::<u32>() + 1)
    }

    /// Every remembered id, oldest first: (id, first sight, version).
    fn iter(&self) -> impl Iterator<Item = (u64, i64, Version)> + '_ {
        self.chunks.iter().enumerate().flat_map(move |(i, c)| {
            let skip = if i == 0 { self.gone } else { 0 };
            c.entries[skip.min(c.entries.len())..]
                .iter()
                .filter(|e| e.bits & PAD == 0)
                .map(move |e| {
                    let seen = e.seen(c.base);
                    (e.id, seen, e.version(seen, self.grain))
                })
        })
    }

    /// The ids and versions, oldest first; segments by index into `names`
    /// (which `name` fills).
    pub(crate) fn to_proto(&self, mut name: impl FnMut(KeyId) -> u32) -> pb::DedupSnapshot {
        let mut s = pb::DedupSnapshot::default();
        for (id, seen, v) in self.iter() {
            s.id_hashes.push(id);
            s.seen_at_ms.push(seen);
            s.versions.push(pb::VersionRecord {
                content: v.content,
                comment: u32::from(v.comment),
                score: u32::from(v.score),
                updated_at_ms: v.updated_ms,
                t_ms: v.t_ms,
                segment: name(v.key),
                weight: v.weight,
                alerts: u32::from(v.alerts),
                withdrawn: v.withdrawn,
            });
        }
        s
    }

    /// Loads a snapshot (oldest first) into this set, as if its ids had
    /// been seen in order; `key` maps a segment index to a key id.
    pub(crate) fn absorb(
        &mut self,
        s: &pb::DedupSnapshot,
        mut key: impl FnMut(u32) -> Option<KeyId>,
    ) -> Result<(), CorruptDedup> {
        if s.id_hashes.len() != s.seen_at_ms.len() || s.versions.len() != s.id_hashes.len() {
            return Err(CorruptDedup("id, time and version arrays differ in length"));
        }
        if s.seen_at_ms.windows(2).any(|w| w[0] > w[1]) {
            return Err(CorruptDedup("times are not in order"));
        }
        let mut versions = Vec::with_capacity(s.versions.len());
        for r in &s.versions {
            let key = key(r.segment).ok_or(CorruptDedup("a version's segment is unknown"))?;
            if r.score > 10 || r.alerts > 255 || key.0 > MAX_KEY || !r.weight.is_finite() {
                return Err(CorruptDedup("a version out of range"));
            }
            versions.push(Version {
                content: r.content,
                comment: r.comment as u16,
                score: r.score as u8,
                updated_ms: r.updated_at_ms,
                t_ms: r.t_ms,
                key,
                weight: r.weight,
                alerts: r.alerts as u8,
                withdrawn: r.withdrawn,
            });
        }
        for ((&h, &t), v) in s.id_hashes.iter().zip(&s.seen_at_ms).zip(&versions) {
            self.expire(t);
            if self.lookup(h).is_none() {
                self.insert(h, t, v);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
