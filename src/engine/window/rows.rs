//! A segment's theme rows: for each bucket in use, a block of `per_bucket`
//! counts by category of the bucket's answers, one row per theme (theme i
//! at i) and the answers with a comment last. Rows follow their bucket's
//! ring rotation and expiry, so a bucket's rows never count more than the
//! bucket, and counting an answer in its rows touches one block.
//!
//! Blocks are packed in one array in no particular order, each bucket
//! naming its block: a new bucket's block goes at the end and a freed one
//! is filled by the last, so putting a bucket in use never shifts the
//! others' rows.

use super::snapshot::check;
use super::{CorruptSegment, NO_EVENT, Segment, WindowLayout};
use crate::engine::nps::Category;
use crate::pb;

/// The theme rows an answer counts in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RowSet {
    /// Bit i: theme i.
    pub themes: u64,
    /// Whether it has a comment.
    pub commented: bool,
}

impl RowSet {
    pub(crate) const NONE: RowSet = RowSet {
        themes: 0,
        commented: false,
    };

    /// Its rows among `k` per bucket: themes below k − 1 (others are left
    /// out), the commented row at k − 1.
    pub(crate) fn indexes(self, k: usize) -> impl Iterator<Item = usize> {
        let (known, commented) = match k.checked_sub(1) {
            None => (0, false),
            Some(64..) => (u64::MAX, self.commented),
            Some(n) => ((1u64 << n) - 1, self.commented),
        };
        let mut x = self.themes & known;
        let mut commented = commented;
        std::iter::from_fn(move || {
            if x != 0 {
                let i = x.trailing_zeros() as usize;
                x &= x - 1;
                Some(i)
            } else {
                std::mem::take(&mut commented).then(|| k - 1)
            }
        })
    }
}

/// The row blocks of a segment's buckets in use.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Rows {
    /// Rows per block (0: none kept).
    per_bucket: u8,
    /// Each bucket's block, in the buckets' order.
    blocks: Vec<u32>,
    counts: Vec<[u32; 3]>,
}

impl Rows {
    fn k(&self) -> usize {
        usize::from(self.per_bucket)
    }

    /// A block of zeros for a bucket put in use at `r`.
    pub(super) fn insert(&mut self, r: usize) {
        let k = self.k();
        if k == 0 {
            return;
        }
        let block = (self.counts.len() / k) as u32;
        if self.counts.len() == self.counts.capacity() {
            // Grow by a quarter: `Vec` would double.
            self.counts
                .reserve_exact((self.counts.len() / 4).max(4 * k));
        }
        self.counts.resize(self.counts.len() + k, [0; 3]);
        self.blocks.insert(r, block);
    }

    /// Frees the blocks of the buckets at `rs`, taken out of use.
    pub(super) fn remove(&mut self, rs: std::ops::Range<usize>) {
        let k = self.k();
        if k == 0 {
            return;
        }
        let mut freed: Vec<u32> = self.blocks.drain(rs).collect();
        // From the highest: the last block is then either the one freed or
        // one in use, which moves into the freed place.
        freed.sort_unstable_by(|a, b| b.cmp(a));
        for b in freed {
            let last = (self.counts.len() / k - 1) as u32;
            if b != last {
                let (at, from) = (b as usize * k, last as usize * k);
                self.counts.copy_within(from..from + k, at);
                if let Some(owner) = self.blocks.iter_mut().find(|x| **x == last) {
                    *owner = b;
                }
            }
            self.counts.truncate(last as usize * k);
        }
    }

    /// The rows of the bucket at `r`.
    fn block(&self, r: usize) -> &[[u32; 3]] {
        let k = self.k();
        let at = self.blocks[r] as usize * k;
        &self.counts[at..at + k]
    }

    fn block_mut(&mut self, r: usize) -> &mut [[u32; 3]] {
        let k = self.k();
        let at = self.blocks[r] as usize * k;
        &mut self.counts[at..at + k]
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.blocks.capacity() * std::mem::size_of::<u32>()
            + self.counts.capacity() * std::mem::size_of::<[u32; 3]>()
    }
}

impl Segment {
    /// An empty segment keeping `k` theme rows per bucket.
    pub(crate) fn with_rows(layout: &WindowLayout, k: usize) -> Self {
        let mut seg = Segment::new(layout);
        seg.set_rows(k);
        seg
    }

    /// Keeps `k` theme rows per bucket (at most 65) from now on, all zero.
    pub(crate) fn set_rows(&mut self, k: usize) {
        let n = self.buckets.len();
        let per_bucket = u8::try_from(k).unwrap_or(u8::MAX);
        self.rows = Rows {
            per_bucket,
            blocks: (0..n as u32).collect(),
            counts: vec![[0; 3]; n * usize::from(per_bucket)],
        };
    }

    pub(crate) fn rows_per_bucket(&self) -> usize {
        self.rows.k()
    }

    /// Moves the counts of `rows` in the bucket kept at `r` by `delta`.
    pub(super) fn count_rows(&mut self, r: usize, rows: RowSet, category: Category, delta: i32) {
        let k = self.rows.k();
        if k == 0 || rows == RowSet::NONE {
            return;
        }
        let c = category.index();
        let block = self.rows.block_mut(r);
        for i in rows.indexes(k) {
            block[i][c] = block[i][c].saturating_add_signed(delta);
        }
    }

    /// Calls `add(row, counts)` for each bucket's rows in window `w` at
    /// `now` that count something.
    pub(crate) fn accumulate_rows(
        &self,
        layout: &WindowLayout,
        w: usize,
        now: i64,
        mut add: impl FnMut(usize, &[u32; 3]),
    ) {
        if self.latest_ms == NO_EVENT || self.rows.k() == 0 {
            return;
        }
        let oldest = layout.bucket(w, now) - i64::from(layout.specs[w].buckets) + 1;
        self.ring_buckets(layout, w, |idx, r| {
            if idx >= oldest {
                for (i, n) in self.rows.block(r).iter().enumerate() {
                    if *n != [0; 3] {
                        add(i, n);
                    }
                }
            }
        });
    }

    /// Row `i` as a snapshot record named `theme` (its buckets' counts, no
    /// weights), or `None` when it counts nothing.
    pub(crate) fn row_to_proto(
        &self,
        layout: &WindowLayout,
        i: usize,
        names: (&str, &str, &str),
    ) -> Option<pb::SegmentSnapshot> {
        if i >= self.rows.k() {
            return None;
        }
        let mut any = false;
        let rings = (0..layout.len())
            .map(|w| {
                let mut buckets = Vec::new();
                self.ring_buckets(layout, w, |index, r| {
                    let [promoters, passives, detractors] = self.rows.block(r)[i];
                    if promoters | passives | detractors != 0 {
                        buckets.push(pb::BucketSnapshot {
                            index,
                            promoters,
                            passives,
                            detractors,
                            weight_net: 0.0,
                            weight_total: 0.0,
                        });
                    }
                });
                buckets.sort_unstable_by_key(|b| b.index);
                any |= !buckets.is_empty();
                pb::RingSnapshot {
                    open_weight_net: 0.0,
                    open_weight_total: 0.0,
                    buckets,
                }
            })
            .collect();
        let (product, region, theme) = names;
        any.then(|| pb::SegmentSnapshot {
            product: product.to_string(),
            region: region.to_string(),
            latest_ms: self.latest_ms,
            rings,
            theme: theme.to_string(),
        })
    }

    /// Adds a snapshotted row into row `i` of this segment's buckets, which
    /// hold the answers it counts (the segment is restored first): a
    /// bucket of the row that the segment does not have is corrupt.
    /// Buckets older than what the segment's rings still hold are left out.
    pub(crate) fn absorb_row(
        &mut self,
        layout: &WindowLayout,
        i: usize,
        s: &pb::SegmentSnapshot,
    ) -> Result<(), CorruptSegment> {
        if !check(layout, s)? || i >= self.rows.k() {
            return Ok(());
        }
        // Where each bucket goes, all found before any is added.
        let mut places = Vec::new();
        for (w, ring) in s.rings.iter().enumerate() {
            let n = i64::from(layout.specs[w].buckets);
            let head = layout.bucket(w, self.latest_ms);
            for b in &ring.buckets {
                if b.index <= head - n || (b.promoters | b.passives | b.detractors) == 0 {
                    continue;
                }
                let r = (self.latest_ms != NO_EVENT && b.index <= head)
                    .then(|| self.bucket_at(layout, w, layout.ring_slot(w, b.index)))
                    .flatten()
                    .ok_or(CorruptSegment(
                        "a theme row counts answers its segment lacks",
                    ))?;
                places.push((r, [b.promoters, b.passives, b.detractors]));
            }
        }
        for (r, add) in places {
            for (n, a) in self.rows.block_mut(r)[i].iter_mut().zip(add) {
                *n = n.saturating_add(a);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Rows;
    use proptest::prelude::*;

    proptest! {
        /// Blocks put in use and freed in any order keep each bucket's
        /// rows: what a model holding them in the buckets' order says.
        #[test]
        fn each_bucket_keeps_its_rows_as_blocks_come_and_go(
            steps in proptest::collection::vec((any::<bool>(), 0usize..64, 1usize..4), 1..200),
        ) {
            let k = 3;
            let mut rows = Rows { per_bucket: k as u8, ..Rows::default() };
            let mut model: Vec<Vec<[u32; 3]>> = Vec::new();
            for (n, (put, at, len)) in steps.into_iter().enumerate() {
                if put || model.is_empty() {
                    let r = at % (model.len() + 1);
                    rows.insert(r);
                    let mark = [n as u32, 1, 2];
                    rows.block_mut(r)[n % k] = mark;
                    let mut block = vec![[0; 3]; k];
                    block[n % k] = mark;
                    model.insert(r, block);
                } else {
                    let r = at % model.len();
                    let end = (r + len).min(model.len());
                    rows.remove(r..end);
                    model.drain(r..end);
                }
                prop_assert_eq!(rows.counts.len(), model.len() * k);
                for (r, block) in model.iter().enumerate() {
                    prop_assert_eq!(rows.block(r), block.as_slice());
                }
            }
        }
    }
}
