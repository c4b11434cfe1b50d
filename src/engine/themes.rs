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

use hashbrown::HashMap;

use super::nps::{Category, WindowStats};
use super::window::{NowIndex, Segment, WindowLayout};
use super::{Engine, KeyId, PartitionState, SnapshotError};
use crate::pb;

/// The row of the answers with a comment (theme rows are 0..64).
pub const COMMENTED: u8 = 64;

/// One partition's theme rings, by (segment, row).
#[derive(Clone, Default)]
pub(crate) struct ThemeRings {
    rings: HashMap<(KeyId, u8), Segment>,
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
        for row in rows(v.themes, v.commented) {
            self.rings
                .entry((v.key, row))
                .or_insert_with(|| Segment::new(layout))
                .insert(layout, v.t, now, v.category, 0.0);
            totals.add(layout, now, (v.key, row), v, 1);
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
        for row in rows(v.themes, v.commented) {
            if let Some(ring) = self.rings.get_mut(&(v.key, row))
                && ring.remove(layout, v.t, now, v.category, 0.0)
            {
                totals.add(layout, now, (v.key, row), v, -1);
            }
        }
    }

    /// Drops the rings that left every window at `now`.
    pub(crate) fn expire(&mut self, layout: &WindowLayout, now: i64) {
        self.rings.retain(|_, ring| !ring.is_expired(layout, now));
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.rings.capacity() * (std::mem::size_of::<((KeyId, u8), Segment)>() + 1)
            + self.rings.values().map(Segment::heap_bytes).sum::<usize>()
    }
}

/// Per (segment, row), its counts by category in each window, merged
/// over partitions: what `Engine::theme_stats` reads.
#[derive(Clone, Default)]
pub(crate) struct ThemeTotals {
    rows: HashMap<(KeyId, u8), Box<[[u32; 3]]>>,
    /// Windows to sum again from the rings before the next read (bit w:
    /// window w).
    stale: u64,
}

impl ThemeTotals {
    /// Moves a row's counts by `delta` in every window holding `v.t`.
    fn add(
        &mut self,
        layout: &WindowLayout,
        now: &NowIndex,
        row: (KeyId, u8),
        v: &Placed,
        delta: i32,
    ) {
        let counts = self
            .rows
            .entry(row)
            .or_insert_with(|| vec![[0; 3]; layout.len()].into_boxed_slice());
        let c = v.category.index();
        for (w, n) in counts.iter_mut().enumerate() {
            if layout.holds_at(w, v.t, now) {
                n[c] = n[c].saturating_add_signed(delta);
            }
        }
    }

    /// Marks windows (bits) to sum again from the rings.
    pub(crate) fn invalidate(&mut self, windows: u64) {
        self.stale |= windows;
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
    pub fn set_themes(&mut self, names: &[String]) {
        self.themes = names.to_vec();
        self.counting_themes = true;
        self.theme_totals.invalidate(u64::MAX);
    }

    /// Every (segment, row) with answers in some window at `now`, merged
    /// over partitions, sorted by segment and row. Moves the engine's
    /// clock to `now` (never backwards).
    pub fn theme_stats(&mut self, now: i64) -> Vec<ThemeStats> {
        let now = self.tick(now);
        if self.theme_totals.stale != 0 {
            self.sum_theme_rows(now);
        }
        let mut out: Vec<ThemeStats> = self
            .theme_totals
            .rows
            .iter()
            .filter(|(_, counts)| counts.iter().flatten().any(|n| *n > 0))
            .map(|(&(key, row), counts)| ThemeStats {
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
            })
            .collect();
        out.sort_unstable_by_key(|s| (s.key, s.row));
        out
    }

    /// Sums the stale windows of the merged rows again from every
    /// partition's rings at `now`, and forgets rows left empty.
    fn sum_theme_rows(&mut self, now: i64) {
        let (stale, nwin) = (self.theme_totals.stale, self.layout.len());
        let windows: Vec<usize> = (0..nwin)
            .filter(|w| stale >> (*w).min(63) & 1 == 1)
            .collect();
        let totals = &mut self.theme_totals.rows;
        for counts in totals.values_mut() {
            for &w in &windows {
                counts[w] = [0; 3];
            }
        }
        for part in self.partitions.values() {
            for (&row, ring) in &part.themes.rings {
                let counts = totals
                    .entry(row)
                    .or_insert_with(|| vec![[0; 3]; nwin].into_boxed_slice());
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
        totals.retain(|_, counts| counts.iter().flatten().any(|n| *n > 0));
        self.theme_totals.stale = 0;
    }

    /// A partition's theme rings as snapshot records (`theme` named),
    /// sorted by segment and theme: equal states give equal bytes.
    pub(super) fn theme_rings_proto(&self, part: &PartitionState) -> Vec<pb::SegmentSnapshot> {
        let mut out: Vec<pb::SegmentSnapshot> = part
            .themes
            .rings
            .iter()
            .filter_map(|(&(key, row), ring)| {
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
        for (s, row, ring) in staged {
            let key = self.keys.resolve(&s.product, &s.region, now).key;
            match part.themes.rings.entry((key, row)) {
                hashbrown::hash_map::Entry::Vacant(e) => {
                    e.insert(ring);
                }
                hashbrown::hash_map::Entry::Occupied(mut e) => e
                    .get_mut()
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
