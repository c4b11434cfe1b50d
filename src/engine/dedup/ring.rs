//! The dedup set's versions, oldest first, in a ring of chunks.
//!
//! Every entry has a sequence number; sequence numbers only grow. A chunk
//! holds up to `CHUNK` entries with consecutive numbers starting at a
//! multiple of `CHUNK`; a chunk closed short (ids too far apart in time)
//! leaves the rest of its numbers unused. The ring has a power of two of
//! places; entry `seq` sits in place `(seq / CHUNK) mod places`, so its
//! position, `seq mod (places × CHUNK)`, fits the index's few bits. Live
//! entries are those from `front` to `end`: what the ring forgets is only
//! the front moving, and the index learns of it from `Live`.

use super::Entry;

/// Entries per chunk (a power of two).
pub(super) const CHUNK: usize = 1024;
pub(super) const CHUNK_BITS: u32 = CHUNK.trailing_zeros();

#[derive(Default, Clone)]
struct Chunk {
    /// Processing time the entries' `seen` count from.
    base: i64,
    entries: Vec<Entry>,
    /// Beside each entry, a word the ring keeps for its owner (the values
    /// of the answer's breakdowns); empty when the ring keeps none.
    words: Vec<u64>,
}

/// Which positions are live: those less than `span` after `front`
/// (modulo the ring). Positions inside the range that a chunk closed short
/// never used count as live; `Ring::id_at` has no id for them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Live {
    front: u32,
    span: u32,
    mask: u32,
}

impl Live {
    #[inline]
    pub(super) fn holds(&self, pos: u32) -> bool {
        (pos.wrapping_sub(self.front) & self.mask) < self.span
    }
}

#[derive(Default)]
pub(super) struct Ring {
    chunks: Vec<Chunk>,
    /// Sequence numbers of the oldest live entry and the next one.
    front: u64,
    end: u64,
    /// Entries live (fewer than end − front when chunks closed short).
    live: usize,
    /// Whether each entry has a word beside it.
    words: bool,
}

impl Ring {
    /// A ring of `places` (a power of two) chunk places, with a word
    /// beside each entry when `words`.
    pub(super) fn new(places: usize, words: bool) -> Self {
        Ring {
            chunks: vec![Chunk::default(); places],
            words,
            ..Ring::default()
        }
    }

    /// The word beside the entry at a live position (0 when none is kept).
    pub(super) fn word_at(&self, pos: u32) -> u64 {
        let c = self.chunks.get((pos >> CHUNK_BITS) as usize);
        c.and_then(|c| c.words.get(pos as usize & (CHUNK - 1)))
            .copied()
            .unwrap_or(0)
    }

    /// Replaces the word beside the entry at a live position.
    pub(super) fn set_word_at(&mut self, pos: u32, word: u64) {
        let c = self.chunks.get_mut((pos >> CHUNK_BITS) as usize);
        if let Some(w) = c.and_then(|c| c.words.get_mut(pos as usize & (CHUNK - 1))) {
            *w = word;
        }
    }

    /// Bits of a position.
    pub(super) fn pos_bits(&self) -> u32 {
        self.chunks.len().trailing_zeros() + CHUNK_BITS
    }

    fn positions(&self) -> u64 {
        (self.chunks.len() * CHUNK) as u64
    }

    pub(super) fn live_count(&self) -> usize {
        self.live
    }

    pub(super) fn live(&self) -> Live {
        let mask = (self.positions() - 1) as u32;
        Live {
            front: self.front as u32 & mask,
            // At most the whole ring, which fits: positions < 2^32.
            span: (self.end - self.front).min(self.positions()) as u32,
            mask,
        }
    }

    fn place(&self, seq: u64) -> usize {
        (seq >> CHUNK_BITS) as usize & (self.chunks.len() - 1)
    }

    /// The entry at a live position and its chunk's base.
    pub(super) fn at(&self, pos: u32) -> Option<(&Entry, i64)> {
        let c = self.chunks.get((pos >> CHUNK_BITS) as usize)?;
        Some((c.entries.get(pos as usize & (CHUNK - 1))?, c.base))
    }

    pub(super) fn at_mut(&mut self, pos: u32) -> Option<(&mut Entry, i64)> {
        let c = self.chunks.get_mut((pos >> CHUNK_BITS) as usize)?;
        Some((c.entries.get_mut(pos as usize & (CHUNK - 1))?, c.base))
    }

    /// The id at a position the index holds, if an entry is there.
    #[inline]
    pub(super) fn id_at(&self, pos: u32) -> Option<u64> {
        self.at(pos).map(|(e, _)| e.id)
    }

    /// The oldest live entry's first sight.
    pub(super) fn front_seen(&self) -> Option<i64> {
        if self.live == 0 {
            return None;
        }
        let c = &self.chunks[self.place(self.front)];
        let e = c.entries.get(self.front as usize & (CHUNK - 1))?;
        Some(e.seen(c.base))
    }

    /// Forgets the oldest live entry.
    pub(super) fn pop_front(&mut self) {
        if self.live == 0 {
            return;
        }
        self.live -= 1;
        self.front += 1;
        if self.live == 0 {
            self.front = self.end;
        } else {
            let off = self.front as usize & (CHUNK - 1);
            let place = self.place(self.front);
            if off != 0 && off >= self.chunks[place].entries.len() {
                // The rest of a chunk closed short: on to the next one.
                self.front = (self.front | (CHUNK as u64 - 1)) + 1;
            }
        }
        if self.front & (CHUNK as u64 - 1) == 0 {
            self.free_behind();
        }
    }

    /// Frees chunks wholly behind the front (a place is reused only a lap
    /// later: holding its memory meanwhile would double the ring's).
    fn free_behind(&mut self) {
        let first_live_chunk = self.front >> CHUNK_BITS;
        if first_live_chunk > 0 {
            let place = self.place((first_live_chunk - 1) << CHUNK_BITS);
            let open = self.end & (CHUNK as u64 - 1) != 0 && self.place(self.end) == place;
            if !open {
                self.chunks[place].entries = Vec::new();
                self.chunks[place].words = Vec::new();
            }
        }
    }

    /// Whether an id seen at `seen` can go into the open chunk.
    fn fits(&self, seen: i64, span_ms: i64) -> bool {
        self.end & (CHUNK as u64 - 1) != 0
            && seen - self.chunks[self.place(self.end)].base < span_ms
    }

    /// Appends an entry (built from its offset in ms from its chunk's
    /// base) and its word; returns its position, and how many live entries
    /// it pushed out (a new chunk's place still held, a lap before), with
    /// the first sight of each.
    pub(super) fn push(
        &mut self,
        seen: i64,
        span_ms: i64,
        (entry, word): (impl FnOnce(u32) -> Entry, u64),
        mut evicted: impl FnMut(i64),
    ) -> u32 {
        if !self.fits(seen, span_ms) {
            // Close the open chunk; the next starts at a multiple of CHUNK.
            self.end = (self.end + CHUNK as u64 - 1) & !(CHUNK as u64 - 1);
            while self.live > 0 && self.front + self.positions() < self.end + CHUNK as u64 {
                if let Some(s) = self.front_seen() {
                    evicted(s);
                }
                self.pop_front();
            }
            if self.live == 0 {
                self.front = self.end;
            }
            let place = self.place(self.end);
            self.chunks[place] = Chunk {
                base: seen,
                entries: Vec::with_capacity(CHUNK),
                words: Vec::with_capacity(if self.words { CHUNK } else { 0 }),
            };
        }
        let place = self.place(self.end);
        let c = &mut self.chunks[place];
        let rel = (seen - c.base).clamp(0, span_ms - 1) as u32;
        c.entries.push(entry(rel));
        if self.words {
            c.words.push(word);
        }
        let pos = (self.end & (self.positions() - 1)) as u32;
        self.end += 1;
        self.live += 1;
        pos
    }

    /// Every live (position, entry, first sight, word), oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, &Entry, i64, u64)> + '_ {
        let mask = self.positions() - 1;
        let chunks = (self.end.div_ceil(CHUNK as u64)).saturating_sub(self.front >> CHUNK_BITS);
        (0..chunks).flat_map(move |i| {
            let start = ((self.front >> CHUNK_BITS) + i) << CHUNK_BITS;
            let c = &self.chunks[self.place(start)];
            let from = if i == 0 {
                (self.front - start) as usize
            } else {
                0
            };
            c.entries
                .iter()
                .enumerate()
                .skip(from)
                .take_while(move |&(off, _)| start + (off as u64) < self.end)
                .map(move |(off, e)| {
                    let word = c.words.get(off).copied().unwrap_or(0);
                    (
                        ((start + off as u64) & mask) as u32,
                        e,
                        e.seen(c.base),
                        word,
                    )
                })
        })
    }

    /// Heap bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| {
                c.entries.capacity() * std::mem::size_of::<Entry>()
                    + c.words.capacity() * std::mem::size_of::<u64>()
            })
            .sum::<usize>()
            + self.chunks.capacity() * std::mem::size_of::<Chunk>()
    }
}
