//! A segment's theme rows: for each bucket in use, the counts by category
//! of the bucket's answers in each row that counts something, one row per
//! theme (theme i at i) and the answers with a comment last. Rows follow
//! their bucket's ring rotation and expiry, so a bucket's rows never count
//! more than the bucket.
//!
//! A segment keeps its rows' cells packed in one array, bucket after
//! bucket, each cell naming its row: memory grows with the rows the
//! buckets counted in, not with the taxonomy, and counting an answer's
//! rows reads one bucket's few cells. A cell takes 8 bytes (16-bit
//! counts) until a count of the segment passes 65,535; the segment's cells
//! are then 16 bytes (32-bit counts) from then on.

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

/// One row's counts by category in one bucket: narrow (16-bit counts)
/// while every count of the segment fits, wide after.
trait Cell: Copy {
    fn new(row: usize) -> Self;
    fn row(&self) -> usize;
    fn counts(&self) -> [u32; 3];
    /// Moves category `c` by `delta`; false (unchanged) when the result
    /// does not fit.
    fn add(&mut self, c: usize, delta: i64) -> bool;
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Narrow {
    row: u16,
    counts: [u16; 3],
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Wide {
    row: u32,
    counts: [u32; 3],
}

impl Cell for Narrow {
    fn new(row: usize) -> Self {
        Narrow {
            row: row as u16,
            counts: [0; 3],
        }
    }

    fn row(&self) -> usize {
        usize::from(self.row)
    }

    fn counts(&self) -> [u32; 3] {
        self.counts.map(u32::from)
    }

    fn add(&mut self, c: usize, delta: i64) -> bool {
        let n = (i64::from(self.counts[c]) + delta).max(0);
        match u16::try_from(n) {
            Ok(n) => {
                self.counts[c] = n;
                true
            }
            Err(_) => false,
        }
    }
}

impl Cell for Wide {
    fn new(row: usize) -> Self {
        Wide {
            row: row as u32,
            counts: [0; 3],
        }
    }

    fn row(&self) -> usize {
        self.row as usize
    }

    fn counts(&self) -> [u32; 3] {
        self.counts
    }

    fn add(&mut self, c: usize, delta: i64) -> bool {
        let n = (i64::from(self.counts[c]) + delta).clamp(0, i64::from(u32::MAX));
        self.counts[c] = n as u32;
        true
    }
}

/// A segment's cells, all narrow or all wide.
#[derive(Debug, Clone, PartialEq)]
enum Cells {
    Narrow(Vec<Narrow>),
    Wide(Vec<Wide>),
}

impl Default for Cells {
    fn default() -> Self {
        Cells::Narrow(Vec::new())
    }
}

/// Runs `$body` with `$v` bound to the cells' vector, whichever kind.
macro_rules! with_cells {
    ($cells:expr, $v:ident => $body:expr) => {
        match $cells {
            Cells::Narrow($v) => $body,
            Cells::Wide($v) => $body,
        }
    };
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
    cells: Cells,
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

    fn add(&mut self, r: usize, i: usize, counts: [i64; 3]) {
        if let Some(b) = &mut self.0 {
            b.add(r, i, counts);
        }
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

/// Where row `row` is among `cells[span]`, given a cell when `make` (the
/// starts of the buckets after `r` then move by one).
fn place<C: Cell>(
    cells: &mut Vec<C>,
    starts: &mut [u32],
    (r, span): (usize, std::ops::Range<usize>),
    row: usize,
    make: bool,
) -> Option<usize> {
    if let Some(at) = cells[span.clone()].iter().position(|c| c.row() == row) {
        return Some(span.start + at);
    }
    if !make {
        return None;
    }
    if cells.len() == cells.capacity() {
        // Grow by an eighth: the doubling of `Vec` would leave up to half
        // unused in every segment.
        cells.reserve_exact((cells.len() / 8).max(4));
    }
    cells.insert(span.end, C::new(row));
    for s in &mut starts[r + 1..] {
        *s += 1;
    }
    Some(span.end)
}

impl Blocks {
    fn k(&self) -> usize {
        usize::from(self.per_bucket)
    }

    fn len(&self) -> usize {
        with_cells!(&self.cells, v => v.len())
    }

    /// The place of the bucket at `r`'s cells in `cells`.
    fn span(&self, r: usize) -> Option<std::ops::Range<usize>> {
        let start = *self.starts.get(r)? as usize;
        let end = self.starts.get(r + 1).map_or(self.len(), |e| *e as usize);
        Some(start..end)
    }

    fn insert(&mut self, r: usize) {
        let at = self.starts.get(r).copied().unwrap_or(self.len() as u32);
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
        with_cells!(&mut self.cells, v => {
            v.drain(first.start..last.end);
        });
        for s in &mut self.starts[rs.end..] {
            *s -= gone as u32;
        }
        self.starts.drain(rs);
    }

    /// Moves row `i`'s counts in the bucket at `r` by `delta` per category
    /// (a row with none yet gets a cell when some delta is positive). A
    /// count past a narrow cell's reach makes every cell wide first.
    fn add(&mut self, r: usize, i: usize, delta: [i64; 3]) {
        let Some(span) = self.span(r) else {
            return;
        };
        let make = delta.iter().any(|d| *d > 0);
        let fits = match &mut self.cells {
            Cells::Narrow(v) => match place(v, &mut self.starts, (r, span.clone()), i, make) {
                Some(at) => {
                    let mut cell = v[at];
                    let fits = (0..3).all(|c| cell.add(c, delta[c]));
                    if fits {
                        v[at] = cell;
                    }
                    fits
                }
                None => true,
            },
            Cells::Wide(_) => false,
        };
        if fits {
            return;
        }
        if let Cells::Narrow(v) = &self.cells {
            let wide = v.iter().map(|c| Wide {
                row: c.row as u32,
                counts: c.counts(),
            });
            self.cells = Cells::Wide(wide.collect());
        }
        let span = self.span(r).unwrap_or(span);
        if let Cells::Wide(v) = &mut self.cells
            && let Some(at) = place(v, &mut self.starts, (r, span), i, make)
        {
            for (c, d) in delta.iter().enumerate() {
                v[at].add(c, *d);
            }
        }
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
            with_cells!(&self.cells, v => {
                for c in &v[span] {
                    f(c.row(), &c.counts());
                }
            });
        }
    }

    fn heap_bytes(&self) -> usize {
        let cells = match &self.cells {
            Cells::Narrow(v) => v.capacity() * std::mem::size_of::<Narrow>(),
            Cells::Wide(v) => v.capacity() * std::mem::size_of::<Wide>(),
        };
        self.starts.capacity() * std::mem::size_of::<u32>() + cells
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
                cells: Cells::default(),
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
        let mut by_category = [0; 3];
        by_category[category.index()] = i64::from(delta);
        for i in rows.indexes(k) {
            self.rows.add(r, i, by_category);
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
            self.rows.add(r, i, add.map(i64::from));
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
mod tests;
