//! What the engine remembers of each response_id within a horizon of
//! processing time: enough of its latest version to tell a duplicate
//! (same content) from a revision (new content) or a stale version (older
//! than the one counted), and to take that version's contribution back out
//! of the windows when a revision replaces it.
//!
//! Layout, per partition: the versions in a ring of chunks in the order
//! they were first seen (processing time never goes back), and an index of
//! 4-byte slots finding them by id (`index.rs`). First sight decides the
//! horizon, so the oldest are always at the front: expiry and the
//! `max_ids` bound move the front and never touch the index. A version is
//! 42 bytes (8 of them the themes its comment mentions); the index adds about 4.7 at the `max_ids` bound (85% full)
//! and is rebuilt from the ring, not copied, when it grows.
//!
//! Two different ids share a 64-bit hash with probability ~n²/2⁶⁵ (for a
//! million ids remembered, about 3 in 100 million): such a response would
//! be taken for a version of the other. Two versions' contents share a
//! 32-bit hash with probability 2⁻³²: such a revision would be taken for a
//! duplicate.

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
    pub comment: u8,
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
    /// The themes its comment mentions (`crate::themes::ThemeSet`).
    pub themes: u64,
    /// Counted in the theme rows (the engine counted themes then).
    pub themed: bool,
    /// The breakdown values it was counted under (`breakdowns::Values`).
    pub values: u64,
}

impl Version {
    /// As a snapshot keeps it, naming its segment by `segment` and its
    /// breakdown values by `values`.
    pub(crate) fn to_proto(self, segment: u32, values: Vec<u32>) -> pb::VersionRecord {
        pb::VersionRecord {
            content: self.content,
            comment: u32::from(self.comment),
            score: u32::from(self.score),
            updated_at_ms: self.updated_ms,
            t_ms: self.t_ms,
            segment,
            weight: self.weight,
            alerts: u32::from(self.alerts),
            withdrawn: self.withdrawn,
            themes: self.themes,
            themed: self.themed,
            breakdowns: values,
        }
    }
}

/// A chunk takes ids first seen within this many ms of its first (24 bits
/// of ms, ~4.7 h); a slower trickle closes it short.
const SPAN_MS: i64 = 1 << 24;

/// Largest key id a version can hold (24 bits; the alert count has the
/// other 8).
pub(crate) const MAX_KEY: u32 = (1 << 24) - 1;

/// Most ids a partition's set may hold (the index needs ring positions in
/// at most 26 bits, leaving 6 for a fingerprint).
pub const MAX_IDS: usize = 1 << 24;

/// A version as stored: 42 bytes. Times are relative: `seen` to its
/// chunk's base, `updated` to `seen`, `t` to the oldest instant any window
/// could still hold at `seen` (see `TimeCode`).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, packed(2))]
pub(super) struct Entry {
    pub(super) id: u64,
    weight: f32,
    content: u32,
    /// Key id (low 24 bits) and alert count (high 8).
    key_alerts: u32,
    /// updated_at − seen, whole seconds (its ms in `bits`), saturated;
    /// `i32::MIN` for none.
    updated: i32,
    /// Event time, `TimeCode`.
    t: u32,
    /// seen − chunk base in ms (bits 0–23), the comment's hash (24–31).
    seen_comment: u32,
    /// Score (bits 0–3), withdrawn (bit 4), the ms of `updated` (bits
    /// 5–14), themed (bit 15).
    bits: u16,
    /// The themes its comment mentions.
    themes: u64,
}

const WITHDRAWN: u16 = 1 << 4;
const THEMED: u16 = 1 << 15;

fn sat_i32(x: i64) -> i32 {
    x.clamp(i64::from(i32::MIN) + 1, i64::from(i32::MAX)) as i32
}

/// How an event time is kept in 32 bits: in grains (the greatest common
/// divisor of the windows' bucket widths: the windows cannot tell event
/// times within a grain apart), counted from `reach` grains before first
/// sight, the oldest any window could hold then. 0 is an event time no
/// window holds (older still). A version's event time is at most its
/// first sight plus the dedup horizon, so `reach` + horizon must fit in
/// 32 bits of grains (`Engine::new` checks).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TimeCode {
    pub grain: i64,
    /// ⌈longest window / grain⌉ + 1.
    pub reach: i64,
}

impl TimeCode {
    pub(crate) fn new(grain: i64, longest_window_ms: i64) -> Self {
        let grain = grain.max(1);
        TimeCode {
            grain,
            reach: longest_window_ms.div_euclid(grain) + 2,
        }
    }

    fn origin(&self, seen: i64) -> i64 {
        seen.div_euclid(self.grain) - self.reach
    }

    fn encode(&self, t: i64, seen: i64) -> u32 {
        (t.div_euclid(self.grain) - self.origin(seen)).clamp(0, i64::from(u32::MAX)) as u32
    }

    fn decode(&self, t: u32, seen: i64) -> i64 {
        if t == 0 {
            // Before every window, for good.
            return i64::MIN / 2;
        }
        (self.origin(seen) + i64::from(t)).saturating_mul(self.grain)
    }
}

impl Entry {
    fn new(id: u64, seen_rel: u32, v: &Version, seen: i64, time: TimeCode) -> Entry {
        let mut e = Entry {
            id,
            seen_comment: seen_rel,
            ..Entry::default()
        };
        e.set(seen, time, v);
        e
    }

    fn seen_rel(&self) -> u32 {
        self.seen_comment & 0xFF_FFFF
    }

    fn set(&mut self, seen: i64, time: TimeCode, v: &Version) {
        let (updated, ms) = match v.updated_ms {
            Some(u) => {
                let d = u.saturating_sub(seen);
                (sat_i32(d.div_euclid(1000)), d.rem_euclid(1000) as u16)
            }
            None => (i32::MIN, 0),
        };
        self.updated = updated;
        self.t = time.encode(v.t_ms, seen);
        self.seen_comment = self.seen_rel() | (u32::from(v.comment) << 24);
        self.key_alerts = (v.key.0.min(MAX_KEY)) | (u32::from(v.alerts) << 24);
        self.weight = v.weight;
        self.content = v.content;
        self.bits = u16::from(v.score & 0xF)
            | if v.withdrawn { WITHDRAWN } else { 0 }
            | (ms << 5)
            | if v.themed { THEMED } else { 0 };
        self.themes = v.themes;
    }

    pub(super) fn seen(&self, base: i64) -> i64 {
        base + i64::from(self.seen_rel())
    }

    fn version(&self, seen: i64, time: TimeCode, values: u64) -> Version {
        let (updated, key_alerts, weight, t) = (self.updated, self.key_alerts, self.weight, self.t);
        let bits = self.bits;
        Version {
            content: self.content,
            comment: (self.seen_comment >> 24) as u8,
            score: (bits & 0xF) as u8,
            updated_ms: (updated != i32::MIN)
                .then(|| seen + i64::from(updated) * 1000 + i64::from((bits >> 5) & 0x3FF)),
            t_ms: time.decode(t, seen),
            key: KeyId(key_alerts & MAX_KEY),
            weight,
            alerts: (key_alerts >> 24) as u8,
            withdrawn: bits & WITHDRAWN != 0,
            themes: self.themes,
            themed: bits & THEMED != 0,
            values,
        }
    }
}

/// Where a version is, from `Dedup::find`: valid until the next insert or
/// expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot(u32);

#[derive(Default)]
pub(crate) struct Dedup {
    horizon_ms: i64,
    max_ids: usize,
    /// How event times are kept.
    time: TimeCode,
    ring: Ring,
    index: index::Index,
    /// Ids forgotten before their horizon because `max_ids` was reached.
    pub(crate) evicted_early: u64,
    /// Whether versions keep breakdown values (8 bytes each).
    values: bool,
}

impl Clone for Dedup {
    fn clone(&self) -> Self {
        self.keeping_values(self.values)
    }
}

impl Dedup {
    /// A set keeping breakdown values with each version when `values`.
    pub(crate) fn new(horizon_ms: i64, max_ids: usize, time: TimeCode, values: bool) -> Self {
        let max_ids = max_ids.min(MAX_IDS);
        // Places for the ring: enough for max_ids in full chunks and for a
        // horizon of short ones, twice over (a position freed is then
        // reused late, so the index rarely meets a stale one that looks
        // live).
        let full = max_ids.div_ceil(CHUNK) + 2;
        let short = usize::try_from(horizon_ms / SPAN_MS + 2)
            .unwrap_or(usize::MAX)
            .min(4096);
        let places = if max_ids == 0 {
            1
        } else {
            (2 * full.max(short)).next_power_of_two()
        };
        let ring = Ring::new(places, values);
        Dedup {
            horizon_ms,
            max_ids,
            time,
            index: index::Index::new(ring.pos_bits(), max_ids),
            ring,
            evicted_early: 0,
            values,
        }
    }

    /// A copy that keeps breakdown values with each version (`values`) or
    /// none; a version copied into a set that starts keeping them was
    /// counted under none.
    pub(crate) fn keeping_values(&self, values: bool) -> Dedup {
        let mut d = Dedup::new(self.horizon_ms, self.max_ids, self.time, values);
        d.evicted_early = self.evicted_early;
        for (_, e, seen, word) in self.ring.iter() {
            let v = e.version(seen, self.time, if values { word } else { 0 });
            d.push(e.id, seen, &v);
        }
        d
    }

    /// Dedup is off (`max_ids` 0): every response counts as new.
    pub(crate) fn disabled(&self) -> bool {
        self.max_ids == 0
    }

    /// The latest version of `id` first seen within the horizon at `now`.
    pub(crate) fn find(&mut self, id: u64, now: i64) -> Option<(Slot, Version)> {
        if self.disabled() {
            return None;
        }
        self.expire(now);
        let pos = self.lookup(id)?;
        let (e, base) = self.ring.at(pos)?;
        let seen = e.seen(base);
        let values = self.ring.word_at(pos);
        Some((Slot(pos), e.version(seen, self.time, values)))
    }

    fn lookup(&self, id: u64) -> Option<u32> {
        let ring = &self.ring;
        self.index.find(id, ring.live(), |p| ring.id_at(p))
    }

    /// Remembers a new id's first version, seen at `now`.
    pub(crate) fn insert(&mut self, id: u64, now: i64, v: &Version) {
        if self.disabled() {
            return;
        }
        let cutoff = now.saturating_sub(self.horizon_ms);
        while self.ring.live_count() >= self.max_ids {
            let Some(seen) = self.ring.front_seen() else {
                break;
            };
            self.evicted_early += u64::from(seen > cutoff);
            self.ring.pop_front();
        }
        self.push(id, now, v);
    }

    /// Replaces the version in `slot` (from `find`, no insert since).
    pub(crate) fn update(&mut self, slot: Slot, v: &Version) {
        let time = self.time;
        if let Some((e, base)) = self.ring.at_mut(slot.0) {
            let seen = e.seen(base);
            e.set(seen, time, v);
        }
        self.ring.set_word_at(slot.0, v.values);
    }

    fn push(&mut self, id: u64, seen: i64, v: &Version) {
        let (time, cutoff) = (self.time, seen.saturating_sub(self.horizon_ms));
        let mut early = 0;
        let pos = self.ring.push(
            seen,
            SPAN_MS,
            (|rel| Entry::new(id, rel, v, seen, time), v.values),
            // A place still held a lap before: its ids go (only with a
            // horizon of many short chunks).
            |s| early += u64::from(s > cutoff),
        );
        self.evicted_early += early;
        let ring = &self.ring;
        self.index.insert(
            id,
            pos,
            ring.live_count(),
            ring.live(),
            |p| ring.id_at(p),
            || ring.iter().map(|(p, e, _, _)| (p, e.id)),
        );
    }

    /// Forgets what was first seen a horizon or more before `now`.
    pub(crate) fn expire(&mut self, now: i64) {
        let cutoff = now.saturating_sub(self.horizon_ms);
        while let Some(seen) = self.ring.front_seen() {
            if seen > cutoff {
                break;
            }
            self.ring.pop_front();
        }
    }

    /// Ids remembered (some may already be past the horizon).
    pub(crate) fn len(&self) -> usize {
        self.ring.live_count()
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.ring.heap_bytes() + self.index.heap_bytes()
    }

    /// Every remembered id, oldest first: (id, first sight, version).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, i64, Version)> + '_ {
        self.ring
            .iter()
            .map(move |(_, e, seen, values)| (e.id, seen, e.version(seen, self.time, values)))
    }

    /// The ids and versions, oldest first; each version's segment and
    /// breakdown values by the indexes `name` gives them.
    pub(crate) fn to_proto(
        &self,
        mut name: impl FnMut(&Version) -> (u32, Vec<u32>),
    ) -> pb::DedupSnapshot {
        let mut s = pb::DedupSnapshot::default();
        for (id, seen, v) in self.iter() {
            s.id_hashes.push(id);
            s.seen_at_ms.push(seen);
            let (segment, values) = name(&v);
            s.versions.push(v.to_proto(segment, values));
        }
        s
    }

    /// Loads a snapshot (oldest first) into this set, as if its ids had
    /// been seen in order; `key` maps a segment index to a key id, `themes`
    /// the snapshot's theme bits to the engine's, `values` a version's
    /// breakdown values to the engine's.
    pub(crate) fn absorb(
        &mut self,
        s: &pb::DedupSnapshot,
        mut key: impl FnMut(u32) -> Option<KeyId>,
        themes: impl Fn(u64) -> u64,
        values: impl Fn(&[u32]) -> u64,
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
            if r.score > 10
                || r.alerts > 255
                || r.comment > 255
                || key.0 > MAX_KEY
                || !r.weight.is_finite()
            {
                return Err(CorruptDedup("a version out of range"));
            }
            versions.push(Version {
                content: r.content,
                comment: r.comment as u8,
                score: r.score as u8,
                updated_ms: r.updated_at_ms,
                t_ms: r.t_ms,
                key,
                weight: r.weight,
                alerts: r.alerts as u8,
                withdrawn: r.withdrawn,
                themes: themes(r.themes),
                themed: r.themed,
                values: values(&r.breakdowns),
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

mod index;
mod ring;

use ring::{CHUNK, Ring};
#[cfg(test)]
mod tests;
