//! The dedup set's index: finds a remembered id's position in the ring in
//! one cache line most of the time, at about 4.7 bytes per id.
//!
//! Buckets of 16 four-byte slots (one cache line each). A slot holds a
//! ring position (low `pos_bits`) and a fingerprint of the id (the other
//! bits; all ones is an empty slot). Each id has two candidate buckets and
//! goes into the one with room ("two choices": at 85% load almost never
//! both full). Nothing is removed when the ring forgets an entry: a slot
//! whose position is no longer live (`live(pos)` false) is free for the
//! next insert into its bucket, so expiry never touches the index. A slot
//! whose position the ring has since reused for another id still looks
//! live; it is told apart by the id stored in the ring (`id_at`), and
//! becomes free again when that entry goes.
//!
//! When both buckets are full the id goes to the next bucket after its
//! first with room, and the first remembers how far it had to look
//! (`over`). The index grows by doubling up to the size `max_ids` needs and
//! is rebuilt from the ring (the old table freed first, so there is no
//! moment with both) when it grows or overflow distances pile up.

use super::ring::Live;

/// Slots per bucket.
const SLOTS: usize = 16;
const EMPTY: u32 = u32::MAX;

/// Live ids per slot the index is sized for.
const LOAD: f64 = 0.85;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket([u32; SLOTS]);

const EMPTY_BUCKET: Bucket = Bucket([EMPTY; SLOTS]);

#[derive(Clone, Default)]
pub(super) struct Index {
    buckets: Vec<Bucket>,
    /// Per bucket: how many buckets past it an id homed there was placed.
    over: Vec<u8>,
    /// Buckets with a non-zero `over`.
    overflowed: usize,
    pos_bits: u32,
    /// Buckets the index may grow to (what `max_ids` needs).
    max_buckets: usize,
}

/// Where an id may be: its two buckets and its fingerprint.
#[derive(Clone, Copy)]
struct Probe {
    first: usize,
    second: usize,
    fp: u32,
}

/// Buckets for `n` live ids at the design load.
fn buckets_for(n: usize) -> usize {
    ((n as f64 / LOAD / SLOTS as f64).ceil() as usize).max(1)
}

impl Index {
    pub(super) fn new(pos_bits: u32, max_ids: usize) -> Self {
        Index {
            pos_bits,
            max_buckets: buckets_for(max_ids),
            ..Index::default()
        }
    }

    fn probe(&self, id: u64) -> Probe {
        let n = self.buckets.len() as u64;
        let h = (id ^ (id >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let g = (id ^ (id >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        // All ones is reserved for empty slots.
        let fps = (1u64 << (32 - self.pos_bits)) - 1;
        Probe {
            first: (((h >> 32) * n) >> 32) as usize,
            second: (((h & 0xFFFF_FFFF) * n) >> 32) as usize,
            fp: (((g >> 32) * fps) >> 32) as u32,
        }
    }

    fn slot(&self, p: Probe, pos: u32) -> u32 {
        (p.fp << self.pos_bits) | pos
    }

    /// Slots of bucket `b` whose fingerprint is `fp`, as bits.
    #[inline]
    fn matching(&self, b: usize, fp: u32) -> u32 {
        let mut m = 0;
        for (i, &s) in self.buckets[b].0.iter().enumerate() {
            m |= u32::from(s >> self.pos_bits == fp) << i;
        }
        m
    }

    /// Slots of bucket `b` that are free (empty or no longer live), as bits.
    #[inline]
    fn free(&self, b: usize, live: Live) -> u32 {
        let mut m = 0;
        for (i, &s) in self.buckets[b].0.iter().enumerate() {
            m |= u32::from(s == EMPTY || !live.holds(s)) << i;
        }
        m
    }

    /// The position of `id`, if the index holds it live.
    pub(super) fn find(
        &self,
        id: u64,
        live: Live,
        id_at: impl Fn(u32) -> Option<u64>,
    ) -> Option<u32> {
        if self.buckets.is_empty() {
            return None;
        }
        let p = self.probe(id);
        let mask = (1u32 << self.pos_bits) - 1;
        let look = |b: usize| {
            let mut m = self.matching(b, p.fp);
            while m != 0 {
                let pos = self.buckets[b].0[m.trailing_zeros() as usize] & mask;
                if live.holds(pos) && id_at(pos) == Some(id) {
                    return Some(pos);
                }
                m &= m - 1;
            }
            None
        };
        if let Some(pos) = look(p.first) {
            return Some(pos);
        }
        if p.second != p.first
            && let Some(pos) = look(p.second)
        {
            return Some(pos);
        }
        let n = self.buckets.len();
        (1..=usize::from(self.over[p.first])).find_map(|d| look((p.first + d) % n))
    }

    /// Adds `id` at ring position `pos` (just added to the ring).
    /// `live_count` is the number of live ids with it; `each` lists every
    /// live (position, id) of the ring, it included, for a rebuild.
    pub(super) fn insert<I: Iterator<Item = (u32, u64)>>(
        &mut self,
        id: u64,
        pos: u32,
        live_count: usize,
        live: Live,
        id_at: impl Fn(u32) -> Option<u64>,
        each: impl Fn() -> I,
    ) {
        let n = self.buckets.len();
        let grow = live_count as f64 > (n * SLOTS) as f64 * LOAD && n < self.max_buckets;
        if grow || self.overflowed * 16 > n.max(64) {
            let want = if grow {
                (n * 2).max(1).min(self.max_buckets)
            } else {
                n
            };
            self.rebuild(want, &each, live, &id_at);
        } else if !self.place(id, pos, live, &id_at) {
            // Nowhere near: a larger table (only when ids crowd).
            self.rebuild(n + n / 8 + 1, &each, live, &id_at);
        }
    }

    /// Puts `id` at `pos` in the table; false when no bucket within reach
    /// of its first has room.
    fn place(
        &mut self,
        id: u64,
        pos: u32,
        live: Live,
        id_at: &impl Fn(u32) -> Option<u64>,
    ) -> bool {
        let p = self.probe(id);
        let slot = self.slot(p, pos);
        let first = self.free(p.first, live);
        let second = self.free(p.second, live);
        // The bucket with more room, so both fill evenly.
        let (b, m) = if first.count_ones() >= second.count_ones() {
            (p.first, first)
        } else {
            (p.second, second)
        };
        let (b, i) = if m != 0 {
            (b, m.trailing_zeros() as usize)
        } else if let Some(at) = self
            .make_room(p.first, live, id_at)
            .or_else(|| self.make_room(p.second, live, id_at))
        {
            at
        } else {
            let n = self.buckets.len();
            let reach = (n - 1).min(usize::from(u8::MAX));
            let Some((d, b, m)) = (1..=reach).find_map(|d| {
                let b = (p.first + d) % n;
                let m = self.free(b, live);
                (m != 0).then_some((d, b, m))
            }) else {
                return false;
            };
            if self.over[p.first] == 0 {
                self.overflowed += 1;
            }
            self.over[p.first] = self.over[p.first].max(d as u8);
            (b, m.trailing_zeros() as usize)
        };
        self.buckets[b].0[i] = slot;
        true
    }

    /// Frees a slot of full bucket `b` by moving one of its ids to its
    /// other bucket, if that has room (cuckoo hashing, one step; rare, and
    /// it reads ids from the ring). Returns the slot freed.
    fn make_room(
        &mut self,
        b: usize,
        live: Live,
        id_at: &impl Fn(u32) -> Option<u64>,
    ) -> Option<(usize, usize)> {
        let mask = (1u32 << self.pos_bits) - 1;
        for i in 0..SLOTS {
            let s = self.buckets[b].0[i];
            let Some(other) = id_at(s & mask).map(|id| self.probe(id)) else {
                continue;
            };
            // Only an id at home here (not one that overflowed into it),
            // and whose fingerprint matches (not a stale slot whose
            // position holds another id now).
            let alt = match (other.first == b, other.second == b) {
                (true, false) => other.second,
                (false, true) => other.first,
                _ => continue,
            };
            if s >> self.pos_bits != other.fp {
                continue;
            }
            let free = self.free(alt, live);
            if free != 0 {
                self.buckets[alt].0[free.trailing_zeros() as usize] = s;
                return Some((b, i));
            }
        }
        None
    }

    /// A fresh table of `buckets` (or more, until everything fits) holding
    /// every live (position, id) `each` lists.
    fn rebuild<I: Iterator<Item = (u32, u64)>>(
        &mut self,
        mut buckets: usize,
        each: &impl Fn() -> I,
        live: Live,
        id_at: &impl Fn(u32) -> Option<u64>,
    ) {
        loop {
            // The old table goes before the new one is allocated.
            self.buckets = Vec::new();
            self.over = Vec::new();
            self.buckets = vec![EMPTY_BUCKET; buckets];
            self.over = vec![0; buckets];
            self.overflowed = 0;
            let mut all = true;
            for (pos, id) in each() {
                if !self.place(id, pos, live, id_at) {
                    all = false;
                    break;
                }
            }
            if all {
                return;
            }
            buckets += buckets / 8 + 1;
        }
    }

    /// Heap bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>() + self.over.capacity()
    }
}
