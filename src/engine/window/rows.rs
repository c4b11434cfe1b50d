//! A segment's theme rows: for each bucket in use, the counts by category
//! of the bucket's answers in each row that counts something, one row per
//! theme (theme i at i) and the answers with a comment last. Rows follow
//! their bucket's ring rotation and expiry, so a bucket's rows never count
//! more than the bucket.
//!
//! A segment keeps its rows' cells packed in one array, bucket after
//! bucket, each cell naming its row: memory grows with the rows the
//! buckets counted in, not with the taxonomy, and counting an answer's
//! rows reads one bucket's few cells.

use super::snapshot::check;
use super::{CorruptSegment, NO_EVENT, Segment, WindowLayout};
use crate::engine::nps::Category;
use crate::pb;
use crate::themes::ThemeSet;

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

    /// An answer's rows: its themes (bit i: theme i) and whether it has a
    /// comment, when theme rows are counted (`NONE` otherwise).
    pub(crate) fn counted(counting: bool, themes: u64, commented: bool) -> RowSet {
        match counting {
            true => RowSet { themes, commented },
            false => RowSet::NONE,
        }
    }

    /// Its rows among `k` per bucket: themes below k − 1 (others are left
    /// out), the commented row at k − 1.
    pub(crate) fn indexes(self, k: usize) -> impl Iterator<Item = usize> {
        let (known, commented) = match k.checked_sub(1) {
            None => (0, false),
            Some(64..) => (u64::MAX, self.commented),
            Some(n) => ((1u64 << n) - 1, self.commented),
        };
        ThemeSet(self.themes & known)
            .iter()
            .chain(commented.then(|| k - 1))
    }
}

/// One row's counts by category in one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cell {
    row: u32,
    counts: [u32; 3],
}

/// The cells of a segment's buckets in use, packed: a cell for each row
/// that has counted something in a bucket (in no particular order within
/// it), each bucket's cells after those of the buckets before it. Answers
/// spread thinly over time leave most rows of most buckets at zero, so a
/// segment keeps only the rows its buckets counted in.
#[derive(Debug, Clone, Default, PartialEq)]
struct Blocks {
    /// Rows per bucket.
    per_bucket: u8,
    /// Where each bucket's cells start in `cells`, in the buckets' order;
    /// a bucket's cells end where the next one's start (the last one's at
    /// the end of `cells`).
    starts: Vec<u32>,
    cells: Vec<Cell>,
}

/// A segment's theme rows, boxed (a pointer in every segment, none
/// allocated while themes are off): `None` keeps no row.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Rows(Option<Box<Blocks>>);

impl Rows {
    fn k(&self) -> usize {
        self.0.as_ref().map_or(0, |b| b.k())
    }

    /// A bucket put in use at `r` has no cell yet: one comes with its
    /// first count (most buckets of thinly spread answers hold no comment).
    pub(super) fn insert(&mut self, r: usize) {
        if let Some(b) = &mut self.0 {
            b.insert(r);
        }
    }

    /// Drops the cells of the buckets at `rs`, taken out of use.
    pub(super) fn remove(&mut self, rs: std::ops::Range<usize>) {
        if let Some(b) = &mut self.0 {
            b.remove(rs);
        }
    }

    fn counts_mut(&mut self, r: usize, i: usize, make: bool) -> Option<&mut [u32; 3]> {
        self.0.as_mut()?.counts_mut(r, i, make)
    }

    fn get(&self, r: usize, i: usize) -> [u32; 3] {
        self.0.as_ref().map_or([0; 3], |b| b.get(r, i))
    }

    fn each(&self, r: usize, f: impl FnMut(usize, &[u32; 3])) {
        if let Some(b) = &self.0 {
            b.each(r, f);
        }
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.0
            .as_ref()
            .map_or(0, |b| std::mem::size_of::<Blocks>() + b.heap_bytes())
    }
}

impl Blocks {
    fn k(&self) -> usize {
        usize::from(self.per_bucket)
    }

    /// The place of the bucket at `r`'s cells in `cells`.
    fn span(&self, r: usize) -> Option<std::ops::Range<usize>> {
        let start = *self.starts.get(r)? as usize;
        let end = self
            .starts
            .get(r + 1)
            .map_or(self.cells.len(), |e| *e as usize);
        Some(start..end)
    }

    fn insert(&mut self, r: usize) {
        let at = self
            .starts
            .get(r)
            .copied()
            .unwrap_or(self.cells.len() as u32);
        self.starts.insert(r, at);
    }

    fn remove(&mut self, rs: std::ops::Range<usize>) {
        let (Some(first), Some(last)) = (self.span(rs.start), rs.end.checked_sub(1)) else {
            return;
        };
        let Some(last) = self.span(last) else {
            return;
        };
        let gone = last.end - first.start;
        self.cells.drain(first.start..last.end);
        for s in &mut self.starts[rs.end..] {
            *s -= gone as u32;
        }
        self.starts.drain(rs);
    }

    /// Row `i`'s counts in the bucket at `r`; a row with none yet gets a
    /// cell when `make` (else `None`).
    fn counts_mut(&mut self, r: usize, i: usize, make: bool) -> Option<&mut [u32; 3]> {
        let span = self.span(r)?;
        let row = i as u32;
        let at = match self.cells[span.clone()].iter().position(|c| c.row == row) {
            Some(at) => span.start + at,
            None if make => {
                if self.cells.len() == self.cells.capacity() {
                    // Grow by an eighth: the doubling of `Vec` would leave
                    // up to half unused in every segment.
                    self.cells.reserve_exact((self.cells.len() / 8).max(4));
                }
                self.cells.insert(
                    span.end,
                    Cell {
                        row,
                        counts: [0; 3],
                    },
                );
                for s in &mut self.starts[r + 1..] {
                    *s += 1;
                }
                span.end
            }
            None => return None,
        };
        Some(&mut self.cells[at].counts)
    }

    /// Row `i`'s counts in the bucket at `r`.
    fn get(&self, r: usize, i: usize) -> [u32; 3] {
        let mut out = [0; 3];
        self.each(r, |row, n| {
            if row == i {
                out = *n;
            }
        });
        out
    }

    /// Calls `f(row, counts)` for the rows of the bucket at `r` that have
    /// a cell.
    fn each(&self, r: usize, mut f: impl FnMut(usize, &[u32; 3])) {
        if let Some(span) = self.span(r) {
            for c in &self.cells[span] {
                f(c.row as usize, &c.counts);
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        self.starts.capacity() * std::mem::size_of::<u32>()
            + self.cells.capacity() * std::mem::size_of::<Cell>()
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
        self.rows = Rows((per_bucket > 0).then(|| {
            Box::new(Blocks {
                per_bucket,
                starts: vec![0; n],
                cells: Vec::new(),
            })
        }));
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
        for i in rows.indexes(k) {
            if let Some(n) = self.rows.counts_mut(r, i, delta > 0) {
                n[c] = n[c].saturating_add_signed(delta);
            }
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
                self.rows.each(r, |i, n| {
                    if *n != [0; 3] {
                        add(i, n);
                    }
                });
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
                    let [promoters, passives, detractors] = self.rows.get(r, i);
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
            ..Default::default()
        })
    }

    /// `row_to_proto`'s records of every row that counts something, in row
    /// order, encoded as field `tag` straight into `buf`; `theme(i)` names
    /// row i (`None`: left out). One walk over the buckets, no message
    /// made: a snapshot writes one per segment.
    pub(crate) fn encode_rows<'t>(
        &self,
        layout: &WindowLayout,
        (product, region): (&str, &str),
        theme: impl Fn(usize) -> Option<&'t str>,
        (tag, buf): (u32, &mut Vec<u8>),
    ) {
        if self.rows.k() == 0 || self.latest_ms == NO_EVENT {
            return;
        }
        let mut cells: Vec<RowCell> = Vec::new();
        for w in 0..layout.len() {
            self.ring_buckets(layout, w, |index, r| {
                self.rows.each(r, |row, n| {
                    if *n != [0; 3] {
                        cells.push(RowCell {
                            row,
                            w,
                            index,
                            counts: *n,
                        });
                    }
                });
            });
        }
        cells.sort_unstable_by_key(|c| (c.row, c.w, c.index));
        for row in cells.chunk_by(|a, b| a.row == b.row) {
            if let Some(theme) = theme(row[0].row) {
                let names = (product, region, theme);
                encode_row(names, self.latest_ms, layout.len(), row, (tag, buf));
            }
        }
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
            if let Some(n) = self.rows.counts_mut(r, i, true) {
                for (n, a) in n.iter_mut().zip(add) {
                    *n = n.saturating_add(a);
                }
            }
        }
        Ok(())
    }
}

/// A row's count in one bucket, as a snapshot writes it.
struct RowCell {
    row: usize,
    w: usize,
    index: i64,
    counts: [u32; 3],
}

/// Length of a proto3 varint field (0: the default, left out).
fn varint_len(x: u64) -> usize {
    use prost::encoding::encoded_len_varint;
    if x == 0 { 0 } else { 1 + encoded_len_varint(x) }
}

/// Length of a proto3 string field (empty: left out).
fn string_len(s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        varint_len(s.len() as u64) + s.len()
    }
}

fn put_varint(field: u32, x: u64, buf: &mut Vec<u8>) {
    use prost::encoding::{WireType, encode_key, encode_varint};
    if x != 0 {
        encode_key(field, WireType::Varint, buf);
        encode_varint(x, buf);
    }
}

fn put_length(field: u32, len: usize, buf: &mut Vec<u8>) {
    use prost::encoding::{WireType, encode_key, encode_varint};
    encode_key(field, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn put_string(field: u32, s: &str, buf: &mut Vec<u8>) {
    if !s.is_empty() {
        put_length(field, s.len(), buf);
        buf.extend_from_slice(s.as_bytes());
    }
}

/// A `BucketSnapshot`'s length (weights 0).
fn bucket_len(c: &RowCell) -> usize {
    varint_len(c.index as u64)
        + c.counts
            .iter()
            .map(|n| varint_len(u64::from(*n)))
            .sum::<usize>()
}

/// One row's `SegmentSnapshot` (`cells` in window and bucket order), as
/// prost writes it, into `buf` as field `tag`.
fn encode_row(
    (product, region, theme): (&str, &str, &str),
    latest_ms: i64,
    windows: usize,
    cells: &[RowCell],
    (tag, buf): (u32, &mut Vec<u8>),
) {
    use prost::encoding::encoded_len_varint;
    let mut ring_lens = vec![0usize; windows];
    for c in cells {
        let b = bucket_len(c);
        ring_lens[c.w] += 1 + encoded_len_varint(b as u64) + b;
    }
    let rings: usize = ring_lens
        .iter()
        .map(|l| 1 + encoded_len_varint(*l as u64) + l)
        .sum();
    let len = string_len(product)
        + string_len(region)
        + varint_len(latest_ms as u64)
        + rings
        + string_len(theme);
    put_length(tag, len, buf);
    put_string(1, product, buf);
    put_string(2, region, buf);
    put_varint(3, latest_ms as u64, buf);
    for (w, ring_len) in ring_lens.iter().enumerate() {
        put_length(4, *ring_len, buf);
        for c in cells.iter().filter(|c| c.w == w) {
            put_length(3, bucket_len(c), buf);
            put_varint(1, c.index as u64, buf);
            for (field, n) in (2..).zip(c.counts) {
                put_varint(field, u64::from(n), buf);
            }
        }
    }
    put_string(5, theme, buf);
}

#[cfg(test)]
mod tests {
    use super::Blocks;
    use proptest::prelude::*;

    proptest! {
        /// Buckets put in use and freed in any order keep each bucket's
        /// rows: what a model holding them in the buckets' order says.
        #[test]
        fn each_bucket_keeps_its_rows_as_buckets_come_and_go(
            steps in proptest::collection::vec((any::<bool>(), 0usize..64, 1usize..8), 1..300),
        ) {
            let k = 7;
            let mut rows = Blocks { per_bucket: k as u8, ..Blocks::default() };
            let mut model: Vec<Vec<[u32; 3]>> = Vec::new();
            for (n, (put, at, len)) in steps.into_iter().enumerate() {
                if put || model.is_empty() {
                    let r = at % (model.len() + 1);
                    rows.insert(r);
                    model.insert(r, vec![[0; 3]; k]);
                } else if at % 3 != 0 {
                    // A count in one of the rows of a bucket in use.
                    let (r, i) = (at % model.len(), len % k);
                    let mark = [n as u32, 1, 2];
                    *rows.counts_mut(r, i, true).unwrap() = mark;
                    model[r][i] = mark;
                } else {
                    let r = at % model.len();
                    let end = (r + len).min(model.len());
                    rows.remove(r..end);
                    model.drain(r..end);
                }
                for (r, block) in model.iter().enumerate() {
                    let kept: Vec<[u32; 3]> = (0..k).map(|i| rows.get(r, i)).collect();
                    prop_assert_eq!(&kept, block);
                }
                // One cell per row counted in a bucket in use, none for
                // the others.
                let counted: usize = model.iter().flatten().filter(|c| **c != [0; 3]).count();
                prop_assert_eq!(rows.cells.len(), counted);
                prop_assert_eq!(rows.starts.len(), model.len());
            }
        }
    }
}
