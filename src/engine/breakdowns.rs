//! Breakdowns: the windows of the answers by the value of one of their
//! attributes (`team`, `agent`), beside the segments.
//!
//! Each breakdown has a table of values like the segment table
//! (`KeyTable`): at most `max_values` values are admitted, a new value
//! beyond them is counted under `other`. An answer without the attribute
//! (or with it empty) is counted under `unknown`; a value longer than
//! `MAX_VALUE_BYTES` or holding a control character under `invalid`. The
//! three never take a place of the `max_values`.
//!
//! An answer's values are kept with its version in the dedup set, a
//! 16-bit id per breakdown (`Values`), so that a revision takes its
//! contribution out of the values it was counted under, exactly as the
//! segments do.

use super::KeyId;
use super::keys::{KeyTable, Name};
use super::segments::SegmentMap;
use super::window::{CorruptSegment, NowIndex, RowSet, Segment, WindowLayout};
use super::{Category, WindowStats};
use crate::pb;

/// Most breakdowns an engine counts.
pub const MAX_BREAKDOWNS: usize = 4;
/// Longest value counted as itself.
pub const MAX_VALUE_BYTES: usize = 64;
/// Most values a breakdown may admit (`max_values`): ids fit 16 bits.
pub const MAX_VALUES: usize = 60_000;
/// The value of an answer without the attribute.
pub const UNKNOWN: &str = "unknown";
/// The value new values are counted under once `max_values` are admitted.
pub const OTHER_VALUE: &str = "other";
/// The value of an answer whose value is not printable or too long.
pub const INVALID: &str = "invalid";

const RESERVED: &[Name] = &[("", UNKNOWN), ("", INVALID)];

/// A breakdown as the engine counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakdownSpec {
    /// The label value naming it (`team`).
    pub label: String,
    /// Most values admitted before `other`.
    pub max_values: usize,
}

/// The value an answer is counted under for one breakdown, from its
/// attribute: the value itself, `unknown` or `invalid`.
pub fn value_of(attribute: Option<&str>) -> &str {
    match attribute {
        None | Some("") => UNKNOWN,
        Some(v) if v.len() > MAX_VALUE_BYTES || v.chars().any(char::is_control) => INVALID,
        Some(v) => v,
    }
}

/// An answer's value id per breakdown, 16 bits each (the id + 1; 0: not
/// counted under that breakdown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Values(pub u64);

impl Values {
    pub(crate) fn get(self, i: usize) -> Option<KeyId> {
        let v = (self.0 >> (16 * i)) & 0xFFFF;
        (v != 0).then(|| KeyId(v as u32 - 1))
    }

    /// Sets breakdown `i`'s value (once: a value already set stays).
    pub(crate) fn set(&mut self, i: usize, key: KeyId) {
        if i < MAX_BREAKDOWNS && self.get(i).is_none() {
            self.0 |= (u64::from(key.0 + 1) & 0xFFFF) << (16 * i);
        }
    }

    /// (breakdown, value id) of each breakdown it was counted under.
    pub(crate) fn iter(self) -> impl Iterator<Item = (usize, KeyId)> {
        (0..MAX_BREAKDOWNS).filter_map(move |i| self.get(i).map(|k| (i, k)))
    }
}

/// A value's windows read from a snapshot: breakdown, value id, record,
/// windows.
pub(super) type Staged<'s> = (usize, KeyId, &'s pb::SegmentSnapshot, Segment);

/// One breakdown value's windows, merged over partitions.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueStats<'a> {
    pub value: &'a str,
    /// One per window, in layout order.
    pub windows: Vec<WindowStats>,
}

/// The breakdowns' labels and value tables (a partition's windows per
/// value are its `SegmentMap`s, one per breakdown).
#[derive(Clone, Default)]
pub(super) struct Breakdowns {
    labels: Vec<String>,
    pub(super) tables: Vec<KeyTable>,
}

impl Breakdowns {
    pub(super) fn new(specs: &[BreakdownSpec]) -> Self {
        let specs = &specs[..specs.len().min(MAX_BREAKDOWNS)];
        Breakdowns {
            labels: specs.iter().map(|s| s.label.clone()).collect(),
            tables: specs
                .iter()
                .map(|s| {
                    let max = s.max_values.min(MAX_VALUES);
                    KeyTable::with_names(max, ("", OTHER_VALUE), RESERVED)
                })
                .collect(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.labels.len()
    }

    pub(super) fn labels(&self) -> &[String] {
        &self.labels
    }

    pub(super) fn index_of(&self, label: &str) -> Option<usize> {
        self.labels.iter().position(|l| l == label)
    }

    /// The id of a value breakdown `i` holds.
    pub(super) fn lookup(&self, i: usize, value: &str) -> Option<KeyId> {
        self.tables.get(i)?.lookup("", value)
    }

    /// A value's name.
    pub(super) fn name(&self, i: usize, key: KeyId) -> Option<&str> {
        self.tables.get(i)?.name(key).map(|(_, v)| v)
    }

    /// The ids of an answer's values (the attribute of each breakdown, in
    /// order), and which breakdowns overflowed into `other` (bit i).
    pub(super) fn resolve(&mut self, given: &[Option<&str>], now: i64) -> (Values, u8) {
        let mut values = Values::default();
        let mut overflowed = 0;
        for (i, table) in self.tables.iter_mut().enumerate() {
            let r = table.resolve("", value_of(given.get(i).copied().flatten()), now);
            values.set(i, r.key);
            overflowed |= u8::from(r.overflowed) << i;
        }
        (values, overflowed)
    }

    /// The id of a named value, admitted as an answer's would be.
    pub(super) fn resolve_name(&mut self, i: usize, value: &str, now: i64) -> Option<KeyId> {
        Some(self.tables.get_mut(i)?.resolve("", value, now).key)
    }

    /// Counts an answer in the windows of its values.
    pub(super) fn insert(
        &mut self,
        maps: &mut [SegmentMap],
        values: Values,
        (layout, now): (&WindowLayout, &NowIndex),
        (t, category, weight): (i64, Category, f64),
    ) {
        for (i, key) in values.iter() {
            let (Some(map), Some(table)) = (maps.get_mut(i), self.tables.get_mut(i)) else {
                continue;
            };
            let (seg, created) = map.get_or_insert_with(key, || Segment::with_rows(layout, 0));
            if created {
                table.hold(key);
            }
            seg.insert(layout, t, now, category, weight, RowSet::NONE);
        }
    }

    /// Takes an answer back out of the windows of its values.
    pub(super) fn remove(
        maps: &mut [SegmentMap],
        values: Values,
        (layout, now): (&WindowLayout, &NowIndex),
        (t, category, weight): (i64, Category, f64),
    ) {
        for (i, key) in values.iter() {
            if let Some(seg) = maps.get_mut(i).and_then(|m| m.get_mut(key)) {
                seg.remove(layout, t, now, category, weight, RowSet::NONE);
            }
        }
    }

    /// A partition's value windows as snapshot records, sorted by label
    /// and value: equal states give equal bytes.
    pub(super) fn to_proto(
        &self,
        maps: &[SegmentMap],
        layout: &WindowLayout,
    ) -> Vec<pb::SegmentSnapshot> {
        let mut out = Vec::new();
        for ((map, table), label) in maps.iter().zip(&self.tables).zip(&self.labels) {
            for (key, seg) in map.iter() {
                let Some((_, value)) = table.name(key) else {
                    continue;
                };
                let mut s = seg.to_proto(layout, "", "");
                s.breakdown.clone_from(label);
                s.value = value.to_string();
                out.push(s);
            }
        }
        out.sort_unstable_by(|a, b| (&a.breakdown, &a.value).cmp(&(&b.breakdown, &b.value)));
        out
    }

    /// Reads snapshot records of value windows, checked, for `place`,
    /// and admits their values (those of breakdowns not counted are left
    /// out): values with windows are admitted before any other a restore
    /// names, and beyond the table they fold into `other`.
    pub(super) fn stage<'s>(
        &mut self,
        layout: &WindowLayout,
        records: &'s [pb::SegmentSnapshot],
        now: i64,
    ) -> Result<Vec<Staged<'s>>, CorruptSegment> {
        let mut staged = Vec::new();
        for s in records {
            let Some(i) = self.index_of(&s.breakdown) else {
                continue;
            };
            let mut seg = Segment::with_rows(layout, 0);
            seg.absorb(layout, s)?;
            staged.push((i, s, seg));
        }
        Ok(staged
            .into_iter()
            .filter_map(|(i, s, seg)| Some((i, self.resolve_name(i, &s.value, now)?, s, seg)))
            .collect())
    }

    /// Puts staged value windows into `maps` (a partition's, being
    /// restored).
    pub(super) fn place(
        &mut self,
        maps: &mut [SegmentMap],
        layout: &WindowLayout,
        staged: Vec<Staged<'_>>,
    ) -> Result<(), CorruptSegment> {
        for (i, key, s, seg) in staged {
            let (Some(map), Some(table)) = (maps.get_mut(i), self.tables.get_mut(i)) else {
                continue;
            };
            if map.place(key, seg, (layout, s))? {
                table.hold(key);
            }
        }
        Ok(())
    }

    /// A partition's value windows: their states, or nothing yet.
    pub(super) fn maps(&self) -> Vec<SegmentMap> {
        vec![SegmentMap::default(); self.len()]
    }

    /// Drops a partition's value windows that left every window; returns
    /// how many.
    pub(super) fn expire(&mut self, maps: &mut [SegmentMap], layout: &WindowLayout, now: i64) {
        for (map, table) in maps.iter_mut().zip(&mut self.tables) {
            map.retain(|key, seg| {
                let keep = !seg.is_expired(layout, now);
                if !keep {
                    table.release(key);
                }
                keep
            });
        }
    }

    /// Removes values no partition holds and not seen since `cutoff`.
    pub(super) fn sweep(&mut self, cutoff: i64) {
        for table in &mut self.tables {
            table.sweep(cutoff);
        }
    }

    /// Lets go of a dropped partition's value windows.
    pub(super) fn release(&mut self, maps: &[SegmentMap]) {
        for (map, table) in maps.iter().zip(&mut self.tables) {
            for (key, _) in map.iter() {
                table.release(key);
            }
        }
    }

    /// Breakdown `i`'s values with anything in a window at `now`, merged
    /// over the partitions' maps, in value order.
    pub(super) fn stats<'a>(
        &'a self,
        i: usize,
        maps: impl Iterator<Item = &'a [SegmentMap]>,
        layout: &WindowLayout,
        now: i64,
    ) -> Vec<ValueStats<'a>> {
        let Some(table) = self.tables.get(i) else {
            return Vec::new();
        };
        let maps = maps.filter_map(|m| m.get(i));
        let mut out: Vec<ValueStats<'a>> = SegmentMap::merged(maps, table.id_bound(), layout, now)
            .into_iter()
            .enumerate()
            .filter_map(|(k, windows)| {
                let (_, value) = table.name(KeyId(k as u32))?;
                Some(ValueStats {
                    value,
                    windows: windows?,
                })
            })
            .collect();
        out.sort_unstable_by(|a, b| a.value.cmp(b.value));
        out
    }

    /// Admitted values per breakdown (`unknown`, `other`, `invalid`
    /// excluded).
    pub(super) fn value_counts(&self) -> Vec<usize> {
        self.tables.iter().map(KeyTable::len).collect()
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.tables.iter().map(KeyTable::heap_bytes).sum()
    }
}

impl super::Engine {
    /// Counts answers by the values of these breakdowns, the first
    /// `MAX_BREAKDOWNS` of them (their attributes come in
    /// `Observation::breakdowns`, in this order), from the next record on:
    /// partitions already held start their breakdowns empty, and the
    /// answers they remember were counted under none.
    pub fn set_breakdowns(&mut self, specs: &[BreakdownSpec]) {
        self.breakdowns = Breakdowns::new(specs);
        let counting = self.breakdowns.len() > 0;
        for part in self.partitions.values_mut() {
            part.breakdowns = self.breakdowns.maps();
            part.dedup = part.dedup.keeping_values(counting);
        }
    }

    /// The breakdowns' labels, in order.
    pub fn breakdown_labels(&self) -> &[String] {
        self.breakdowns.labels()
    }

    /// Breakdown `i`'s values with anything in a window at `now`, merged
    /// over partitions, in value order.
    pub fn breakdown_stats(&self, i: usize, now: i64) -> Vec<ValueStats<'_>> {
        let now = self.now_ms.max(now);
        let maps = self.partitions.values().map(|p| p.breakdowns.as_slice());
        self.breakdowns.stats(i, maps, &self.layout, now)
    }

    /// Values admitted per breakdown (`unknown`, `other` and `invalid`
    /// excluded).
    pub fn breakdown_value_counts(&self) -> Vec<usize> {
        self.breakdowns.value_counts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_themselves_unknown_or_invalid() {
        assert_eq!(value_of(Some("blue")), "blue");
        assert_eq!(value_of(None), UNKNOWN);
        assert_eq!(value_of(Some("")), UNKNOWN);
        assert_eq!(value_of(Some(&"x".repeat(64))), "x".repeat(64));
        assert_eq!(value_of(Some(&"x".repeat(65))), INVALID);
        assert_eq!(value_of(Some("a\nb")), INVALID);
        assert_eq!(value_of(Some("equipo ñandú")), "equipo ñandú");
    }

    #[test]
    fn values_past_the_limit_are_other_and_reserved_names_take_no_place() {
        let mut b = Breakdowns::new(&[
            BreakdownSpec {
                label: "team".into(),
                max_values: 2,
            },
            BreakdownSpec {
                label: "agent".into(),
                max_values: 1,
            },
        ]);
        let (v, over) = b.resolve(&[None, Some("bad\u{7}")], 0);
        assert_eq!(over, 0);
        assert_eq!(b.name(0, v.get(0).unwrap()), Some(UNKNOWN));
        assert_eq!(b.name(1, v.get(1).unwrap()), Some(INVALID));
        let (v, over) = b.resolve(&[Some("a"), Some("x")], 0);
        assert_eq!((over, b.name(0, v.get(0).unwrap())), (0, Some("a")));
        let (_, over) = b.resolve(&[Some("b"), Some("y")], 0);
        assert_eq!(over, 0b10, "the agent table holds one value");
        let (v, over) = b.resolve(&[Some("c"), Some("x")], 0);
        assert_eq!(over, 0b01);
        assert_eq!(b.name(0, v.get(0).unwrap()), Some(OTHER_VALUE));
        assert_eq!(b.value_counts(), vec![2, 1]);
        assert_eq!(v.iter().count(), 2);
    }

    #[test]
    fn breakdowns_set_after_records_count_what_comes_next_and_revisions_move_it() {
        use crate::engine::{Engine, EngineConfig, Observation, Outcome};
        const T0: i64 = 1_763_812_800_000;
        let mut e = Engine::new(&EngineConfig::default()).unwrap();
        e.record(0, &Observation::new("before", "p", "r", 10, T0, 1.0), T0);
        e.set_breakdowns(&[BreakdownSpec {
            label: "team".into(),
            max_values: 10,
        }]);
        let mut first = Observation::new("a", "p", "r", 2, T0, 1.0);
        first.breakdowns[0] = Some("Altas");
        e.record(0, &first, T0);
        let mut moved = Observation::new("a", "p", "r", 2, T0, 1.0);
        moved.breakdowns[0] = Some("Bajas");
        moved.updated_at_ms = Some(T0);
        moved.content ^= 1;
        assert!(matches!(e.record(0, &moved, T0), Outcome::Revised { .. }));
        let values: Vec<(&str, u64)> = e
            .breakdown_stats(0, T0)
            .iter()
            .map(|v| (v.value, v.windows[0].responses()))
            .collect();
        assert_eq!(
            values,
            [("Bajas", 1)],
            "the answer before counts under none"
        );
    }
}
