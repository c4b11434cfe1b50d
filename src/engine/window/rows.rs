//! A segment's theme rows: beside each bucket in use, `per_bucket` counts
//! by category of the bucket's answers, one row per theme (theme i at i)
//! and the answers with a comment last. Rows share their bucket's place,
//! its ring's rotation and its expiry, so counting an answer in its rows
//! touches the memory its counts are in, and a bucket's rows never count
//! more than the bucket.

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

impl Segment {
    /// An empty segment keeping `k` theme rows per bucket.
    pub(crate) fn with_rows(layout: &WindowLayout, k: usize) -> Self {
        let mut seg = Segment::new(layout);
        seg.set_rows(k);
        seg
    }

    /// Keeps `k` theme rows per bucket (at most 65) from now on, all zero.
    pub(crate) fn set_rows(&mut self, k: usize) {
        self.per_bucket = u8::try_from(k).unwrap_or(u8::MAX);
        self.rows.clear();
        self.rows
            .resize(self.buckets.len() * usize::from(self.per_bucket), [0; 3]);
    }

    pub(crate) fn rows_per_bucket(&self) -> usize {
        usize::from(self.per_bucket)
    }

    /// Moves the counts of `rows` in the bucket kept at `r` by `delta`.
    pub(super) fn count_rows(&mut self, r: usize, rows: RowSet, category: Category, delta: i32) {
        let k = usize::from(self.per_bucket);
        if k == 0 || rows == RowSet::NONE {
            return;
        }
        let c = category.index();
        let block = &mut self.rows[r * k..(r + 1) * k];
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
        let k = usize::from(self.per_bucket);
        if self.latest_ms == NO_EVENT || k == 0 {
            return;
        }
        let oldest = layout.bucket(w, now) - i64::from(layout.specs[w].buckets) + 1;
        self.ring_buckets(layout, w, |idx, r| {
            if idx >= oldest {
                for (i, n) in self.rows[r * k..(r + 1) * k].iter().enumerate() {
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
        let k = usize::from(self.per_bucket);
        if i >= k {
            return None;
        }
        let mut any = false;
        let rings = (0..layout.len())
            .map(|w| {
                let mut buckets = Vec::new();
                self.ring_buckets(layout, w, |index, r| {
                    let [promoters, passives, detractors] = self.rows[r * k + i];
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
        let k = usize::from(self.per_bucket);
        if !check(layout, s)? || i >= k {
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
            for (n, a) in self.rows[r * k + i].iter_mut().zip(add) {
                *n = n.saturating_add(a);
            }
        }
        Ok(())
    }
}
