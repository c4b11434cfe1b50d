//! Per segment, the answers whose comment mentions each theme, and the
//! answers with a comment: rows kept in the segment's own buckets
//! (`window::RowSet`, `Segment::set_rows`), counted where the segment
//! counts the answer, taken back when a revision replaces it, gone when it
//! leaves every window. Counts only.
//!
//! A version remembers its themes (`dedup::Version::themes`), whether it
//! has a comment (its comment hash is 0 without one) and whether it was
//! counted in the rows at all (themes on), so a revision takes back
//! exactly the rows it added, across restarts that turn themes on or off.
//! Rows go into a partition's snapshot by theme name, a record per
//! (segment, row); a snapshot taken under another taxonomy is read by name
//! (themes no longer listed are dropped).
//!
//! Reading every segment's rows of every partition each second costs about
//! as much as counting the answers, so the engine keeps the rows merged
//! over partitions (`ThemeTotals`): each insert and removal moves them too,
//! and only a window whose oldest bucket moved since (every 75 s for the
//! default 1h window, less often for the others), or a partition dropped
//! or restored, is summed again from the segments when read.

use super::nps::{Category, WindowStats};
use super::window::{RowSet, check_snapshot};
use super::{Engine, KeyId, PartitionState, SnapshotError};
use crate::pb;
use crate::themes::ThemeSet;

/// The row of the answers with a comment (theme rows are 0..64).
pub const COMMENTED: u8 = 64;

/// Per (segment, row), its counts by category in each window, merged
/// over partitions: what `Engine::theme_stats` reads. Laid out by key id
/// (small and dense), then row (`per_key` of them: the themes, then the
/// commented row), then window.
#[derive(Clone, Default)]
pub(crate) struct ThemeTotals {
    per_key: usize,
    windows: usize,
    counts: Vec<[u32; 3]>,
    /// Windows to sum again from the segments before the next read (bit
    /// w: window w).
    stale: u64,
}

impl ThemeTotals {
    fn new(per_key: usize, windows: usize) -> Self {
        ThemeTotals {
            per_key,
            windows,
            counts: Vec::new(),
            stale: u64::MAX,
        }
    }

    /// Rows per segment.
    pub(crate) fn per_key(&self) -> usize {
        self.per_key
    }

    /// Row `i` of `key`'s counts, one per window (made zero if new).
    fn row_mut(&mut self, key: KeyId, i: usize) -> &mut [[u32; 3]] {
        let at = (key.index() * self.per_key + i) * self.windows;
        if self.counts.len() < at + self.windows {
            self.counts.resize(at + self.windows, [0; 3]);
        }
        &mut self.counts[at..at + self.windows]
    }

    /// Moves the counts of an answer's `rows` in `key` by `delta`, in the
    /// `windows` (bit w: window w) its segment counted it in.
    pub(crate) fn add(
        &mut self,
        key: KeyId,
        rows: RowSet,
        (windows, category): (u64, Category),
        delta: i32,
    ) {
        if rows == RowSet::NONE || windows == 0 {
            return;
        }
        let c = category.index();
        let first = key.index() * self.per_key * self.windows;
        let end = first + self.per_key * self.windows;
        if self.counts.len() < end {
            self.counts.resize(end, [0; 3]);
        }
        let block = &mut self.counts[first..end];
        for i in rows.indexes(self.per_key) {
            let row = &mut block[i * self.windows..(i + 1) * self.windows];
            let mut x = windows;
            while x != 0 {
                let w = x.trailing_zeros() as usize;
                x &= x - 1;
                if let Some(n) = row.get_mut(w) {
                    n[c] = n[c].saturating_add_signed(delta);
                }
            }
        }
    }

    /// Marks windows (bits) to sum again from the segments.
    pub(crate) fn invalidate(&mut self, windows: u64) {
        self.stale |= windows;
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.counts.capacity() * std::mem::size_of::<[u32; 3]>()
    }

    /// The (key, row) of row `i` of the layout.
    fn key_row(&self, i: usize) -> (KeyId, u8) {
        let r = i % self.per_key;
        let row = if r == self.per_key - 1 {
            COMMENTED
        } else {
            r as u8
        };
        (KeyId::from_index(i / self.per_key), row)
    }

    /// Where `row` (a theme number or `COMMENTED`) is among a segment's rows.
    fn index(&self, row: u8) -> usize {
        if row == COMMENTED {
            self.per_key - 1
        } else {
            usize::from(row)
        }
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
    /// the engine counts no theme row. Rows counted before are dropped.
    pub fn set_themes(&mut self, names: &[String]) {
        self.themes = names.to_vec();
        self.counting_themes = true;
        let per_key = names.len() + 1;
        for part in self.partitions.values_mut() {
            for seg in part.segments.iter_mut() {
                seg.set_rows(per_key);
            }
        }
        self.theme_totals = ThemeTotals::new(per_key, self.layout.len());
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
                let (key, row) = totals.key_row(i);
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
    /// partition's segments at `now`.
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
            for (key, seg) in part.segments.iter() {
                for &w in &windows {
                    seg.accumulate_rows(&self.layout, w, now, |i, add| {
                        let n = &mut totals.row_mut(key, i)[w];
                        for (n, a) in n.iter_mut().zip(add) {
                            *n = n.saturating_add(*a);
                        }
                    });
                }
            }
        }
        totals.stale = 0;
    }

    /// Row `i`'s name in snapshots: its theme's, `""` for the commented
    /// row (`None`: no such row).
    pub(super) fn row_name(&self, i: usize) -> Option<&str> {
        match self.theme_totals.key_row(i).1 {
            COMMENTED => Some(""),
            t => self.themes.get(usize::from(t)).map(String::as_str),
        }
    }

    /// A partition's theme rows as snapshot records (`theme` named, the
    /// commented row unnamed), by segment (as `named_segments` orders
    /// them) and row: what `encode_rows` writes into a state record.
    pub(super) fn theme_rings_proto(&self, part: &PartitionState) -> Vec<pb::SegmentSnapshot> {
        let mut out = Vec::new();
        for (product, region, seg) in self.named_segments(part) {
            for i in 0..seg.rows_per_bucket() {
                if let Some(theme) = self.row_name(i) {
                    out.extend(seg.row_to_proto(&self.layout, i, (product, region, theme)));
                }
            }
        }
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

    /// A snapshot's theme rows, checked, each with where it goes among a
    /// segment's rows (rows of themes no longer listed are left out): what
    /// `place_theme_rings` loads once the segments are in place.
    pub(super) fn stage_theme_rings<'s>(
        &self,
        rings: &'s [pb::SegmentSnapshot],
    ) -> Result<Vec<(&'s pb::SegmentSnapshot, usize)>, SnapshotError> {
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
            check_snapshot(&self.layout, s).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
            staged.push((s, self.theme_totals.index(row)));
        }
        Ok(staged)
    }

    /// Adds staged theme rows into `part`'s segments (rows of segments
    /// folded into `__other__` merge).
    pub(super) fn place_theme_rings(
        &mut self,
        part: &mut PartitionState,
        staged: Vec<(&pb::SegmentSnapshot, usize)>,
        now: i64,
    ) -> Result<(), SnapshotError> {
        for (s, i) in staged {
            let key = self.keys.resolve(&s.product, &s.region, now).key;
            let corrupt = |why: &str| SnapshotError::Corrupt(why.to_string());
            part.segments
                .get_mut(key)
                .ok_or_else(|| corrupt("theme rows of a segment the snapshot does not hold"))?
                .absorb_row(&self.layout, i, s)
                .map_err(|e| corrupt(&e.to_string()))?;
        }
        Ok(())
    }
}

/// A snapshot's theme bits in the engine's numbering.
pub(super) fn renumber(bits: u64, numbers: &[Option<u8>]) -> u64 {
    ThemeSet(bits)
        .iter()
        .filter_map(|i| numbers.get(i).copied().flatten())
        .fold(0, |out, n| out | 1 << n)
}
