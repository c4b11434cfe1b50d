//! Rolling windows as rings of time buckets.
//!
//! Owns the window layout (which windows, how wide their buckets) and the
//! per-segment rings. Memory per segment is bounded by the layout, whatever
//! the event rate: one 20-byte bucket per slot in use, at most `buckets`
//! slots per window (see `Segment` for the sparse layout).
//!
//! # Semantics
//! A window of length W has buckets of width b = W / buckets (75 s for 1h
//! with the default 48 buckets). Bucket number k holds the responses whose
//! event time t (ms since the Unix epoch) has ⌊t / b⌋ = k. At time `now` the
//! window holds the `buckets` newest bucket numbers up to ⌊now / b⌋, so it
//! covers the interval ((⌊now / b⌋ − buckets + 1) · b, now]: never a response
//! older than W, and at its old edge it may already have let go of up to one
//! bucket width of responses (the edge error is at most b).
//!
//! A response placed in no window is *late*.
//!
//! # Precision
//! Counts are exact (u32 per bucket, saturating). Weight sums of the newest
//! bucket of each ring accumulate in f64 and are rounded to f32 once, when
//! that bucket closes; responses arriving out of order into an older bucket
//! add in f32. The relative error of a window's weight sum is thus about
//! 1e-7 for in-order streams.

use std::time::Duration;

use super::nps::{Category, WindowStats};
use crate::pb;

mod arith;
mod rows;
mod snapshot;
use arith::Divisor;
pub(crate) use arith::NowIndex;
pub(crate) use rows::RowSet;
use rows::Rows;
pub(crate) use snapshot::check as check_snapshot;

/// One configured window, with the bucket width derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    /// As configured (e.g. `24h`); used as the `window` label.
    pub name: String,
    pub length_ms: i64,
    pub bucket_ms: i64,
    pub buckets: u32,
}

impl WindowSpec {
    /// The interval, in ms, that the window really covers at its shortest:
    /// length minus the edge error.
    pub fn min_span_ms(&self) -> i64 {
        self.bucket_ms * (i64::from(self.buckets) - 1)
    }
}

/// A window list that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("no windows configured")]
    Empty,
    #[error("at most 64 windows, got {0}")]
    TooMany(usize),
    #[error("window `{0}` cannot be parsed as a duration (e.g. 1h, 24h, 7d, 30d)")]
    Unparsable(String),
    #[error("window `{name}` is shorter than {buckets} ms: it cannot hold {buckets} buckets")]
    TooShort { name: String, buckets: u32 },
    #[error("window `{0}` is listed twice")]
    Duplicate(String),
    #[error("buckets per window must be between 2 and 4096, got {0}")]
    Buckets(u32),
}

/// The windows every segment keeps, and where each ring lives in a
/// segment's bucket array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowLayout {
    specs: Vec<WindowSpec>,
    /// Per window: bucket width and ring length as multiply-shift divisors;
    /// a hardware 64-bit division per window per event would dominate.
    divisors: Vec<(Divisor, Divisor)>,
    /// Index of each ring's first word in a segment's slot bitmaps; a ring
    /// takes ⌈buckets / 64⌉ words.
    word_offsets: Vec<usize>,
    total_words: usize,
    /// Slots over all rings: a segment never holds more buckets.
    total_slots: usize,
}

impl WindowLayout {
    /// Builds the layout from window names (`1h`, `24h`, `7d`, …) and the
    /// number of buckets per window. Windows keep the given order.
    pub fn new<S: AsRef<str>>(windows: &[S], buckets: u32) -> Result<Self, LayoutError> {
        if !(2..=4096).contains(&buckets) {
            return Err(LayoutError::Buckets(buckets));
        }
        if windows.is_empty() {
            return Err(LayoutError::Empty);
        }
        if windows.len() > 64 {
            return Err(LayoutError::TooMany(windows.len()));
        }
        let mut specs: Vec<WindowSpec> = Vec::with_capacity(windows.len());
        for w in windows {
            let name = w.as_ref().trim().to_string();
            let length = humantime::parse_duration(&name)
                .map_err(|_| LayoutError::Unparsable(name.clone()))?;
            let length_ms = i64::try_from(length.as_millis())
                .map_err(|_| LayoutError::Unparsable(name.clone()))?;
            let bucket_ms = length_ms / i64::from(buckets);
            if bucket_ms == 0 {
                return Err(LayoutError::TooShort { name, buckets });
            }
            if specs.iter().any(|s| s.length_ms == length_ms) {
                return Err(LayoutError::Duplicate(name));
            }
            specs.push(WindowSpec {
                name,
                length_ms,
                bucket_ms,
                buckets,
            });
        }
        Ok(Self::from_specs(specs))
    }

    fn from_specs(specs: Vec<WindowSpec>) -> Self {
        let mut word_offsets = Vec::with_capacity(specs.len());
        let mut words = 0usize;
        for s in &specs {
            word_offsets.push(words);
            words += (s.buckets as usize).div_ceil(64);
        }
        let total = specs.iter().map(|s| s.buckets as usize).sum();
        let divisors = specs
            .iter()
            .map(|s| {
                (
                    Divisor::new(s.bucket_ms),
                    Divisor::new(i64::from(s.buckets)),
                )
            })
            .collect();
        WindowLayout {
            specs,
            divisors,
            word_offsets,
            total_words: words,
            total_slots: total,
        }
    }

    pub fn specs(&self) -> &[WindowSpec] {
        &self.specs
    }

    pub fn len(&self) -> usize {
        self.specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// The longest window's length.
    pub fn longest(&self) -> Duration {
        let ms = self.specs.iter().map(|s| s.length_ms).max().unwrap_or(0);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    /// Whether a response at event time `t` falls in at least one window at
    /// `now` (`t` already clamped to `now`). A response that does not is late.
    pub fn in_any_window(&self, t: i64, now: i64) -> bool {
        (0..self.len())
            .any(|w| self.bucket(w, t) > self.bucket(w, now) - i64::from(self.specs[w].buckets))
    }

    /// The greatest common divisor of the bucket widths, ms: event times
    /// within one grain fall in the same bucket of every window.
    pub fn grain_ms(&self) -> i64 {
        fn gcd(a: i64, b: i64) -> i64 {
            if b == 0 { a } else { gcd(b, a % b) }
        }
        self.specs.iter().fold(0, |g, s| gcd(s.bucket_ms, g)).max(1)
    }

    /// Same as `in_any_window`, with `now`'s bucket numbers precomputed.
    pub(crate) fn in_any_window_at(&self, t: i64, now: &NowIndex) -> bool {
        (0..self.len()).any(|w| self.bucket(w, t) > now.oldest_excluded[w])
    }

    /// Whether window `w` holds event time `t` at `now` (where `insert`
    /// places a response).
    pub(crate) fn holds_at(&self, w: usize, t: i64, now: &NowIndex) -> bool {
        self.bucket(w, t) > now.oldest_excluded[w]
    }

    /// Bucket number of instant `t` in window `w`: ⌊t / bucket_ms⌋.
    #[inline]
    fn bucket(&self, w: usize, t: i64) -> i64 {
        self.divisors[w].0.div_floor(t)
    }

    /// Slot of bucket number `idx` in window `w`'s ring.
    #[inline]
    fn ring_slot(&self, w: usize, idx: i64) -> usize {
        self.divisors[w].1.rem_floor(idx) as usize
    }

    /// Bit of `slot` of window `w`'s ring in a segment's bitmaps.
    #[inline]
    fn bit(&self, w: usize, slot: usize) -> usize {
        self.word_offsets[w] * 64 + slot
    }

    /// Window `w`'s words in a segment's bitmaps.
    fn ring_words(&self, w: usize) -> std::ops::Range<usize> {
        let first = self.word_offsets[w];
        first..first + (self.specs[w].buckets as usize).div_ceil(64)
    }

    /// `now`'s bucket numbers, computed once per clock change.
    pub(crate) fn now_index(&self, now: i64) -> NowIndex {
        NowIndex {
            now,
            oldest_excluded: (0..self.len())
                .map(|w| self.bucket(w, now) - i64::from(self.specs[w].buckets))
                .collect(),
        }
    }

    /// Heap bytes of a segment with every slot in use.
    pub fn dense_segment_heap_bytes(&self) -> usize {
        self.total_slots * std::mem::size_of::<Bucket>()
            + (self.total_words + 2 * self.len()) * std::mem::size_of::<u64>()
    }

    pub(crate) fn to_proto(&self) -> Vec<pb::WindowSpec> {
        self.specs
            .iter()
            .map(|s| pb::WindowSpec {
                name: s.name.clone(),
                length_ms: s.length_ms,
                bucket_ms: s.bucket_ms,
                buckets: s.buckets,
            })
            .collect()
    }

    /// Whether rings written under `other` can be read under this layout.
    pub(crate) fn matches_proto(&self, other: &[pb::WindowSpec]) -> bool {
        self.specs.len() == other.len()
            && self.specs.iter().zip(other).all(|(a, b)| {
                a.length_ms == b.length_ms && a.bucket_ms == b.bucket_ms && a.buckets == b.buckets
            })
    }
}

/// One time bucket of one ring: 20 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Bucket {
    promoters: u32,
    passives: u32,
    detractors: u32,
    /// Only for closed buckets; the open one accumulates in `Segment::open`.
    weight_net: f32,
    weight_total: f32,
}

impl Bucket {
    fn is_empty(&self) -> bool {
        self.promoters == 0 && self.passives == 0 && self.detractors == 0
    }

    fn count(&mut self, category: Category) {
        let c = match category {
            Category::Promoter => &mut self.promoters,
            Category::Passive => &mut self.passives,
            Category::Detractor => &mut self.detractors,
        };
        *c = c.saturating_add(1);
    }
}

/// "No response yet": every ring's newest bucket number derived from it is
/// far below any real one.
const NO_EVENT: i64 = i64::MIN;

/// The rings of one segment (product × region) in one partition, sparse.
///
/// Beside each bucket in use, its theme rows (see `rows`): counts by
/// category of the bucket's answers that mention each theme, and of those
/// with a comment, so that an answer's rows sit next to its counts.
///
/// Answers are spread over partitions by response_id, so every partition
/// holds a state for nearly every segment, and most of those hold a few
/// answers in a few buckets. Only buckets that hold something exist: per
/// ring a bitmap of the slots in use, and the buckets themselves packed in
/// `buckets`, ring after ring, in slot order, so a slot's bucket is at the
/// number of set bits before it. A segment with every slot in use takes
/// the 20 bytes per slot of a dense array, plus the bitmaps.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Segment {
    /// Newest event time placed here; each ring's newest bucket number is
    /// ⌊latest_ms / bucket_ms⌋, so no per-ring head is stored.
    latest_ms: i64,
    /// The slot bitmaps (`WindowLayout::words` words, each ring starting at
    /// a word), then per window the newest bucket's (Σ w·sign, Σ w) as f64
    /// bits: one allocation instead of two.
    head: Box<[u64]>,
    /// The buckets in use, ring after ring, in slot order.
    buckets: Vec<Bucket>,
    /// The theme rows of the buckets in use.
    rows: Rows,
}

/// A snapshot that does not fit the layout or contradicts itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("segment snapshot is inconsistent: {0}")]
pub struct CorruptSegment(pub &'static str);

impl Segment {
    pub(crate) fn new(layout: &WindowLayout) -> Self {
        Segment {
            latest_ms: NO_EVENT,
            head: vec![0; layout.total_words + 2 * layout.len()].into_boxed_slice(),
            buckets: Vec::new(),
            rows: Rows::default(),
        }
    }

    /// Heap bytes this segment holds.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.head.len() * std::mem::size_of::<u64>()
            + self.buckets.capacity() * std::mem::size_of::<Bucket>()
            + self.rows.heap_bytes()
    }

    /// Buckets in use, over all rings.
    #[cfg(test)]
    pub(crate) fn buckets_in_use(&self) -> usize {
        self.buckets.len()
    }

    fn open(&self, layout: &WindowLayout, w: usize) -> [f64; 2] {
        let i = layout.total_words + 2 * w;
        [
            f64::from_bits(self.head[i]),
            f64::from_bits(self.head[i + 1]),
        ]
    }

    fn set_open(&mut self, layout: &WindowLayout, w: usize, v: [f64; 2]) {
        let i = layout.total_words + 2 * w;
        self.head[i] = v[0].to_bits();
        self.head[i + 1] = v[1].to_bits();
    }

    fn add_open(&mut self, layout: &WindowLayout, w: usize, net: f64, total: f64) {
        let [a, b] = self.open(layout, w);
        self.set_open(layout, w, [a + net, b + total]);
    }

    /// Number of buckets in use before bit `g` of the bitmaps.
    #[inline]
    fn rank(&self, g: usize) -> usize {
        let (word, bit) = (g / 64, g % 64);
        let before: u32 = self.head[..word].iter().map(|x| x.count_ones()).sum();
        (before + (self.head[word] & ((1u64 << bit) - 1)).count_ones()) as usize
    }

    #[inline]
    fn in_use(&self, g: usize) -> bool {
        self.head[g / 64] >> (g % 64) & 1 == 1
    }

    /// Where the bucket in `slot` of window `w`'s ring is kept, if in use.
    fn bucket_at(&self, layout: &WindowLayout, w: usize, slot: usize) -> Option<usize> {
        let g = layout.bit(w, slot);
        self.in_use(g).then(|| self.rank(g))
    }

    /// Where the bucket in `slot` of window `w`'s ring is kept, put in use
    /// (empty, its rows too) if it was not.
    fn bucket_or_new(&mut self, layout: &WindowLayout, w: usize, slot: usize) -> usize {
        let g = layout.bit(w, slot);
        let r = self.rank(g);
        if !self.in_use(g) {
            self.head[g / 64] |= 1 << (g % 64);
            if self.buckets.len() == self.buckets.capacity() {
                // Grow by an eighth, never past every slot in use: the
                // doubling of `Vec` would leave up to half unused.
                let len = self.buckets.len();
                let more = (len / 8).max(4).min(layout.total_slots - len).max(1);
                self.buckets.reserve_exact(more);
            }
            self.buckets.insert(r, Bucket::default());
            self.rows.insert(r);
        }
        r
    }

    /// Takes `slot` of window `w`'s ring out of use.
    fn clear_slot(&mut self, layout: &WindowLayout, w: usize, slot: usize) {
        let g = layout.bit(w, slot);
        if self.in_use(g) {
            let r = self.rank(g);
            self.buckets.remove(r);
            self.rows.remove(r..r + 1);
            self.head[g / 64] &= !(1 << (g % 64));
        }
    }

    /// Takes every slot of window `w`'s ring out of use.
    fn clear_ring(&mut self, layout: &WindowLayout, w: usize) {
        let words = layout.ring_words(w);
        let first = self.rank(words.start * 64);
        let used: u32 = self.head[words.clone()]
            .iter()
            .map(|x| x.count_ones())
            .sum();
        self.buckets.drain(first..first + used as usize);
        self.rows.remove(first..first + used as usize);
        self.head[words].fill(0);
    }

    /// Visits the buckets in use in window `w`'s ring with their bucket
    /// numbers and where each is kept (the ring holds the numbers in
    /// (head − buckets, head]). One division per ring, none per bucket:
    /// this runs for every alert, over every bucket of the alert's segment
    /// in every partition.
    fn ring_buckets(&self, layout: &WindowLayout, w: usize, mut f: impl FnMut(i64, usize)) {
        if self.latest_ms == NO_EVENT {
            return;
        }
        let n = i64::from(layout.specs[w].buckets);
        let head = layout.bucket(w, self.latest_ms);
        let head_slot = layout.ring_slot(w, head) as i64;
        // Slot s holds bucket number base + s up to the head's slot, and
        // base + s − n after it (the ring's older half).
        let base = head - head_slot;
        let words = layout.ring_words(w);
        let mut r = self.rank(words.start * 64);
        for (i, &word) in self.head[words].iter().enumerate() {
            let mut x = word;
            while x != 0 {
                let slot = (i * 64) as i64 + i64::from(x.trailing_zeros());
                x &= x - 1;
                let idx = base + slot - if slot > head_slot { n } else { 0 };
                f(idx, r);
                r += 1;
            }
        }
    }

    /// Moves every ring's newest bucket forward to the one holding `t`,
    /// closing the previous newest bucket and clearing the ones skipped.
    fn advance_to(&mut self, layout: &WindowLayout, t: i64) {
        if t <= self.latest_ms {
            return;
        }
        for (w, spec) in layout.specs.iter().enumerate() {
            let n = i64::from(spec.buckets);
            let old_head = layout.bucket(w, self.latest_ms);
            let new_head = layout.bucket(w, t);
            if new_head == old_head {
                continue;
            }
            if self.latest_ms != NO_EVENT {
                let [net, total] = self.open(layout, w);
                if let Some(r) = self.bucket_at(layout, w, layout.ring_slot(w, old_head)) {
                    let closed = &mut self.buckets[r];
                    closed.weight_net = net as f32;
                    closed.weight_total = total as f32;
                }
            }
            self.set_open(layout, w, [0.0; 2]);
            if new_head.saturating_sub(old_head) >= n {
                self.clear_ring(layout, w);
            } else {
                for k in old_head + 1..=new_head {
                    self.clear_slot(layout, w, layout.ring_slot(w, k));
                }
            }
        }
        self.latest_ms = t;
    }

    /// Adds one response at event time `t` (clamped to `now` by the caller)
    /// to every window that holds it at `now`, and to its theme `rows`.
    /// Returns the windows that did (bit w: window w).
    pub(crate) fn insert(
        &mut self,
        layout: &WindowLayout,
        t: i64,
        now: &NowIndex,
        category: Category,
        weight: f64,
        rows: RowSet,
    ) -> u64 {
        self.advance_to(layout, t);
        let weight_net = weight * category.sign();
        let mut placed = 0;
        for w in 0..layout.len() {
            if !layout.holds_at(w, t, now) {
                continue;
            }
            let idx = layout.bucket(w, t);
            let head = layout.bucket(w, self.latest_ms);
            let r = self.bucket_or_new(layout, w, layout.ring_slot(w, idx));
            let slot = &mut self.buckets[r];
            slot.count(category);
            if idx == head {
                self.add_open(layout, w, weight_net, weight);
            } else {
                slot.weight_net += weight_net as f32;
                slot.weight_total += weight as f32;
            }
            self.count_rows(r, rows, category, 1);
            placed |= 1 << w;
        }
        placed
    }

    /// Takes one response at event time `t` back out of every window that
    /// still holds it at `now`, and out of its theme `rows`: what `insert`
    /// put there with the same arguments. A bucket left with no response
    /// goes out of use. Returns the windows that held it (bit w: window w).
    pub(crate) fn remove(
        &mut self,
        layout: &WindowLayout,
        t: i64,
        now: &NowIndex,
        category: Category,
        weight: f64,
        rows: RowSet,
    ) -> u64 {
        if self.latest_ms == NO_EVENT || t > self.latest_ms {
            return 0;
        }
        let weight_net = weight * category.sign();
        let mut taken = 0;
        for w in 0..layout.len() {
            let idx = layout.bucket(w, t);
            let head = layout.bucket(w, self.latest_ms);
            if idx <= now.oldest_excluded[w] || idx <= head - i64::from(layout.specs[w].buckets) {
                continue;
            }
            let slot = layout.ring_slot(w, idx);
            let Some(r) = self.bucket_at(layout, w, slot) else {
                continue;
            };
            let b = &mut self.buckets[r];
            let c = match category {
                Category::Promoter => &mut b.promoters,
                Category::Passive => &mut b.passives,
                Category::Detractor => &mut b.detractors,
            };
            if *c == 0 {
                continue;
            }
            *c -= 1;
            let empty = b.is_empty();
            if idx != head {
                b.weight_net -= weight_net as f32;
                b.weight_total -= weight as f32;
            }
            self.count_rows(r, rows, category, -1);
            if empty {
                self.clear_slot(layout, w, slot);
            }
            if idx == head {
                if empty {
                    self.set_open(layout, w, [0.0; 2]);
                } else {
                    self.add_open(layout, w, -weight_net, -weight);
                }
            }
            taken |= 1 << w;
        }
        taken
    }

    /// Adds what window `w` holds at `now` into `out`.
    pub(crate) fn accumulate(
        &self,
        layout: &WindowLayout,
        w: usize,
        now: i64,
        out: &mut WindowStats,
    ) {
        if self.latest_ms == NO_EVENT {
            return;
        }
        let head = layout.bucket(w, self.latest_ms);
        // Buckets older than this have left the window at `now`.
        let oldest = layout.bucket(w, now) - i64::from(layout.specs[w].buckets) + 1;
        self.ring_buckets(layout, w, |idx, r| {
            if idx < oldest {
                return;
            }
            let b = &self.buckets[r];
            out.promoters += u64::from(b.promoters);
            out.passives += u64::from(b.passives);
            out.detractors += u64::from(b.detractors);
            if idx == head {
                let [net, total] = self.open(layout, w);
                out.weight_net += net;
                out.weight_total += total;
            } else {
                out.weight_net += f64::from(b.weight_net);
                out.weight_total += f64::from(b.weight_total);
            }
        });
    }

    /// Adds window `w`'s buckets at `now` into `out`, one per bucket from
    /// the oldest the window holds (`out[0]`) to `now`'s (counts only).
    pub(crate) fn accumulate_buckets(
        &self,
        layout: &WindowLayout,
        w: usize,
        now: i64,
        out: &mut [WindowStats],
    ) {
        let oldest = layout.bucket(w, now) - i64::from(layout.specs[w].buckets) + 1;
        self.ring_buckets(layout, w, |idx, r| {
            let Some(slot) = usize::try_from(idx - oldest)
                .ok()
                .and_then(|i| out.get_mut(i))
            else {
                return;
            };
            let b = &self.buckets[r];
            slot.promoters += u64::from(b.promoters);
            slot.passives += u64::from(b.passives);
            slot.detractors += u64::from(b.detractors);
        });
    }

    /// The start (ms) of window `w`'s oldest bucket at `now`.
    pub(crate) fn oldest_bucket_ms(layout: &WindowLayout, w: usize, now: i64) -> i64 {
        let spec = &layout.specs[w];
        (layout.bucket(w, now) - i64::from(spec.buckets) + 1) * spec.bucket_ms
    }

    /// True when no window holds anything at `now`: the segment can go.
    pub(crate) fn is_expired(&self, layout: &WindowLayout, now: i64) -> bool {
        self.latest_ms == NO_EVENT || !layout.in_any_window(self.latest_ms, now)
    }

    pub(crate) fn latest_ms(&self) -> i64 {
        self.latest_ms
    }
}

#[cfg(test)]
mod tests;
