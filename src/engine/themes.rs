//! Per segment, the answers whose comment mentions each theme, and the
//! answers with a comment, in rings of their own laid out as the
//! segment's: counted where the segment counts them, taken back when a
//! revision replaces them, gone when they leave every window. Counts only
//! (the rings' weights stay 0).
//!
//! A version remembers its themes (`dedup::Version::themes`), whether it
//! has a comment (its comment hash is 0 without one) and whether it was
//! counted in the rows at all (themes on), so a revision takes back
//! exactly the rows it added, across restarts that turn themes on or off.
//! The rings live beside the segments in each partition's state and go
//! into its snapshot by theme name; a snapshot taken under another
//! taxonomy is read by name (themes no longer listed are dropped).
//!
//! Reading every ring of every partition each second costs about as much
//! as counting the answers, so the engine keeps the rows merged over
//! partitions (`ThemeTotals`): each insert and removal moves them too, and
//! only a window whose oldest bucket moved since (every 75 s for the
//! default 1h window, less often for the others), or a partition dropped
//! or restored, is summed again from the rings when read.

use super::nps::{Category, WindowStats};
use super::window::{NowIndex, Segment, WindowLayout};
use super::{Engine, KeyId, PartitionState, SnapshotError};
use crate::pb;

/// The row of the answers with a comment (theme rows are 0..64).
pub const COMMENTED: u8 = 64;

/// Where a (segment, row) sits in the flat arrays below: the rows of one
/// segment side by side (theme rows by number, then `COMMENTED`), the
/// segments by key id (small and dense, as `SegmentMap` relies on). An
/// answer's rows are then neighbours in memory, reached without hashing.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Rows {
    /// Rows per segment: the taxonomy's themes, and the commented row.
    per_key: usize,
}

impl Rows {
    fn new(themes: usize) -> Self {
        Rows {
            per_key: themes + 1,
        }
    }

    /// The rows a version counts in (`COMMENTED` when it has a comment),
    /// leaving out theme numbers the taxonomy does not have.
    fn of(self, themes: u64, commented: bool) -> impl Iterator<Item = u8> {
        let (known, commented) = match self.per_key.checked_sub(1) {
            None => (0, false),
            Some(64..) => (u64::MAX, commented),
            Some(n) => ((1u64 << n) - 1, commented),
        };
        rows(themes & known, commented)
    }

    fn at(self, key: KeyId, row: u8) -> usize {
        let r = if row == COMMENTED {
            self.per_key - 1
        } else {
            usize::from(row)
        };
        key.index() * self.per_key + r
    }

    fn key_row(self, i: usize) -> (KeyId, u8) {
        let r = i % self.per_key;
        let row = if r == self.per_key - 1 {
            COMMENTED
        } else {
            r as u8
        };
        (KeyId::from_index(i / self.per_key), row)
    }
}

/// One partition's theme rings, by (segment, row) as `Rows` places them.
#[derive(Clone, Default)]
pub(crate) struct ThemeRings {
    rings: Vec<Option<Segment>>,
}

/// The rows a version counts in: its themes, and `COMMENTED` when it has
/// a comment.
fn rows(themes: u64, commented: bool) -> impl Iterator<Item = u8> {
    let mut x = themes;
    let mut commented = commented;
    std::iter::from_fn(move || {
        if x != 0 {
            let i = x.trailing_zeros() as u8;
            x &= x - 1;
            Some(i)
        } else {
            std::mem::take(&mut commented).then_some(COMMENTED)
        }
    })
}

/// Where a version sits: its segment, its rows, its event time and
/// category.
pub(crate) struct Placed {
    pub key: KeyId,
    pub themes: u64,
    pub commented: bool,
    pub t: i64,
    pub category: Category,
}

impl ThemeRings {
    /// Counts a version in its rows, in every window that holds `t`, and
    /// in the merged `totals`.
    pub(crate) fn insert(
        &mut self,
        layout: &WindowLayout,
        now: &NowIndex,
        v: &Placed,
        totals: &mut ThemeTotals,
    ) {
        let rows = totals.rows;
        for row in rows.of(v.themes, v.commented) {
            let i = rows.at(v.key, row);
            if self.rings.len() <= i {
                self.rings.resize_with(i + 1, || None);
            }
            self.rings[i]
                .get_or_insert_with(|| Segment::new(layout))
                .insert(layout, v.t, now, v.category, 0.0);
            totals.add(layout, now, i, v, 1);
        }
    }

    /// Takes a version back out of its rows (what `insert` put there).
    pub(crate) fn remove(
        &mut self,
        layout: &WindowLayout,
        now: &NowIndex,
        v: &Placed,
        totals: &mut ThemeTotals,
    ) {
        let rows = totals.rows;
        for row in rows.of(v.themes, v.commented) {
            let i = rows.at(v.key, row);
            if let Some(Some(ring)) = self.rings.get_mut(i)
                && ring.remove(layout, v.t, now, v.category, 0.0)
            {
                totals.add(layout, now, i, v, -1);
            }
        }
    }

    /// Drops the rings that left every window at `now`.
    pub(crate) fn expire(&mut self, layout: &WindowLayout, now: i64) {
        for slot in &mut self.rings {
            if slot.as_ref().is_some_and(|r| r.is_expired(layout, now)) {
                *slot = None;
            }
        }
    }

    /// The rings in use, by index (`Rows::key_row` names them).
    fn iter(&self) -> impl Iterator<Item = (usize, &Segment)> {
        self.rings
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().map(|r| (i, r)))
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.rings.capacity() * std::mem::size_of::<Option<Segment>>()
            + self.iter().map(|(_, r)| r.heap_bytes()).sum::<usize>()
    }
}

/// Per (segment, row), its counts by category in each window, merged
/// over partitions: what `Engine::theme_stats` reads.
#[derive(Clone, Default)]
pub(crate) struct ThemeTotals {
    rows: Rows,
    windows: usize,
    /// By (segment, row) as `Rows` places them, then window.
    counts: Vec<[u32; 3]>,
    /// Windows to sum again from the rings before the next read (bit w:
    /// window w).
    stale: u64,
}

impl ThemeTotals {
    fn new(rows: Rows, windows: usize) -> Self {
        ThemeTotals {
            rows,
            windows,
            counts: Vec::new(),
            stale: u64::MAX,
        }
    }

    /// Row `i`'s counts, one per window (made zero if new).
    fn row_mut(&mut self, i: usize) -> &mut [[u32; 3]] {
        let at = i * self.windows;
        if self.counts.len() < at + self.windows {
            self.counts.resize(at + self.windows, [0; 3]);
        }
        &mut self.counts[at..at + self.windows]
    }

    /// Moves row `i`'s counts by `delta` in every window holding `v.t`.
    fn add(&mut self, layout: &WindowLayout, now: &NowIndex, i: usize, v: &Placed, delta: i32) {
        let c = v.category.index();
        for (w, n) in self.row_mut(i).iter_mut().enumerate() {
            if layout.holds_at(w, v.t, now) {
                n[c] = n[c].saturating_add_signed(delta);
            }
        }
    }

    /// Marks windows (bits) to sum again from the rings.
    pub(crate) fn invalidate(&mut self, windows: u64) {
        self.stale |= windows;
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.counts.capacity() * std::mem::size_of::<[u32; 3]>()
    }
}

/// One segment's counts in one row, per window, merged over partitions.
#[derive(Debug, Clone, PartialEq)]
pub struct ThemeStats {
    pub key: KeyId,
    /// A theme's number in the taxonomy, or `COMMENTED`.
    pub row: u8,
    /// One per window, in layout order (weights 0).
    pub windows: Vec<WindowStats>,
}

impl Engine {
    /// Counts theme rows from now on: the answers with a comment, and
    /// those mentioning each of `names` (the taxonomy's theme names, in
    /// theme number order: what snapshots name the themes by). Without it
    /// the engine counts no theme row.
    /// Rows counted before under other names are dropped.
    pub fn set_themes(&mut self, names: &[String]) {
        self.themes = names.to_vec();
        self.counting_themes = true;
        let rows = Rows::new(names.len());
        if rows != self.theme_totals.rows {
            for part in self.partitions.values_mut() {
                part.themes = ThemeRings::default();
            }
        }
        self.theme_totals = ThemeTotals::new(rows, self.layout.len());
    }

    /// Every (segment, row) with answers in some window at `now`, merged
    /// over partitions, sorted by segment and row. Moves the engine's
    /// clock to `now` (never backwards).
    pub fn theme_stats(&mut self, now: i64) -> Vec<ThemeStats> {
        let now = self.tick(now);
        if self.theme_totals.stale != 0 {
            self.sum_theme_rows(now);
        }
        let totals = &self.theme_totals;
        totals
            .counts
            .chunks_exact(totals.windows.max(1))
            .enumerate()
            .filter(|(_, counts)| counts.iter().flatten().any(|n| *n > 0))
            .map(|(i, counts)| {
                let (key, row) = totals.rows.key_row(i);
                ThemeStats {
                    key,
                    row,
                    windows: counts
                        .iter()
                        .map(|n| WindowStats {
                            promoters: u64::from(n[0]),
                            passives: u64::from(n[1]),
                            detractors: u64::from(n[2]),
                            ..WindowStats::default()
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// Sums the stale windows of the merged rows again from every
    /// partition's rings at `now`.
    fn sum_theme_rows(&mut self, now: i64) {
        let (stale, nwin) = (self.theme_totals.stale, self.layout.len());
        let windows: Vec<usize> = (0..nwin)
            .filter(|w| stale >> (*w).min(63) & 1 == 1)
            .collect();
        let totals = &mut self.theme_totals;
        for counts in totals.counts.chunks_exact_mut(nwin.max(1)) {
            for &w in &windows {
                counts[w] = [0; 3];
            }
        }
        for part in self.partitions.values() {
            for (i, ring) in part.themes.iter() {
                let counts = totals.row_mut(i);
                for &w in &windows {
                    let mut s = WindowStats::default();
                    ring.accumulate(&self.layout, w, now, &mut s);
                    for (n, add) in
                        counts[w]
                            .iter_mut()
                            .zip([s.promoters, s.passives, s.detractors])
                    {
                        *n = n.saturating_add(u32::try_from(add).unwrap_or(u32::MAX));
                    }
                }
            }
        }
        totals.stale = 0;
    }

    /// A partition's theme rings as snapshot records (`theme` named),
    /// sorted by segment and theme: equal states give equal bytes.
    pub(super) fn theme_rings_proto(&self, part: &PartitionState) -> Vec<pb::SegmentSnapshot> {
        let rows = self.theme_totals.rows;
        let mut out: Vec<pb::SegmentSnapshot> = part
            .themes
            .iter()
            .filter_map(|(i, ring)| {
                let (key, row) = rows.key_row(i);
                let (product, region) = self.keys.name(key)?;
                let theme = match row {
                    COMMENTED => "",
                    i => self.themes.get(usize::from(i))?.as_str(),
                };
                let mut s = ring.to_proto(&self.layout, product, region);
                s.theme = theme.to_string();
                Some(s)
            })
            .collect();
        out.sort_unstable_by(|a, b| {
            (&a.product, &a.region, &a.theme).cmp(&(&b.product, &b.region, &b.theme))
        });
        out
    }

    /// The theme numbers of a snapshot's theme names (`None`: no longer
    /// listed).
    pub(super) fn theme_numbers(&self, names: &[String]) -> Vec<Option<u8>> {
        names
            .iter()
            .map(|n| self.themes.iter().position(|t| t == n).map(|i| i as u8))
            .collect()
    }

    /// A snapshot's theme rings read aside, each with its row (rings of
    /// themes no longer listed are left out): what `place_theme_rings`
    /// loads once the whole snapshot has been read.
    pub(super) fn stage_theme_rings<'s>(
        &self,
        rings: &'s [pb::SegmentSnapshot],
    ) -> Result<Vec<(&'s pb::SegmentSnapshot, u8, Segment)>, SnapshotError> {
        let mut staged = Vec::with_capacity(rings.len());
        if !self.counting_themes {
            return Ok(staged);
        }
        for s in rings {
            let row = if s.theme.is_empty() {
                COMMENTED
            } else {
                match self.themes.iter().position(|t| *t == s.theme) {
                    Some(i) => i as u8,
                    None => continue,
                }
            };
            let mut ring = Segment::new(&self.layout);
            ring.absorb(&self.layout, s)
                .map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
            staged.push((s, row, ring));
        }
        Ok(staged)
    }

    /// Puts staged theme rings in `part`, by segment (rings of segments
    /// folded into `__other__` merge).
    pub(super) fn place_theme_rings(
        &mut self,
        part: &mut PartitionState,
        staged: Vec<(&pb::SegmentSnapshot, u8, Segment)>,
        now: i64,
    ) -> Result<(), SnapshotError> {
        let rows = self.theme_totals.rows;
        for (s, row, ring) in staged {
            let key = self.keys.resolve(&s.product, &s.region, now).key;
            let i = rows.at(key, row);
            let rings = &mut part.themes.rings;
            if rings.len() <= i {
                rings.resize_with(i + 1, || None);
            }
            match &mut rings[i] {
                None => rings[i] = Some(ring),
                Some(kept) => kept
                    .absorb(&self.layout, s)
                    .map_err(|e| SnapshotError::Corrupt(e.to_string()))?,
            }
        }
        Ok(())
    }
}

/// A snapshot's theme bits in the engine's numbering.
pub(super) fn renumber(bits: u64, numbers: &[Option<u8>]) -> u64 {
    let mut out = 0;
    for i in rows(bits, false) {
        if let Some(Some(n)) = numbers.get(usize::from(i)) {
            out |= 1 << n;
        }
    }
    out
}
