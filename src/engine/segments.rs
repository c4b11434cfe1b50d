//! A partition's segments by key id.

use super::window::{CorruptSegment, Segment, WindowLayout};
use super::{KeyId, WindowStats};
use crate::pb;

/// A partition's segments, indexed directly by key id: key ids are small
/// and dense (at most `max_keys` + 1), so a vector beats a hash map in
/// both speed and memory (48 bytes per id, no hashing).
#[derive(Clone, Default)]
pub(super) struct SegmentMap {
    slots: Vec<Option<Segment>>,
    len: usize,
}

impl SegmentMap {
    pub(super) fn get(&self, key: KeyId) -> Option<&Segment> {
        self.slots.get(key.index()).and_then(Option::as_ref)
    }

    pub(super) fn get_mut(&mut self, key: KeyId) -> Option<&mut Segment> {
        self.slots.get_mut(key.index()).and_then(Option::as_mut)
    }

    /// The segment for `key`, created by `make` if absent; the flag says
    /// whether it was created.
    pub(super) fn get_or_insert_with(
        &mut self,
        key: KeyId,
        make: impl FnOnce() -> Segment,
    ) -> (&mut Segment, bool) {
        if self.slots.len() <= key.index() {
            self.slots.resize_with(key.index() + 1, || None);
        }
        let slot = &mut self.slots[key.index()];
        let created = slot.is_none();
        if created {
            self.len += 1;
        }
        (slot.get_or_insert_with(make), created)
    }

    /// Puts `seg`, read from `snapshot`, in at `key`; when a segment is
    /// there already (two snapshotted ones folded into one key), the
    /// snapshot is merged into it instead. Returns whether `seg` went in.
    pub(super) fn place(
        &mut self,
        key: KeyId,
        seg: Segment,
        (layout, snapshot): (&WindowLayout, &pb::SegmentSnapshot),
    ) -> Result<bool, CorruptSegment> {
        match self.get_mut(key) {
            Some(there) => there.absorb(layout, snapshot).map(|()| false),
            None => Ok(self.get_or_insert_with(key, || seg).1),
        }
    }

    /// Each key's windows at `now`, summed over `maps` (by key index below
    /// `bound`); `None` for a key with nothing in any window.
    pub(super) fn merged<'a>(
        maps: impl Iterator<Item = &'a SegmentMap>,
        bound: usize,
        layout: &WindowLayout,
        now: i64,
    ) -> Vec<Option<Vec<WindowStats>>> {
        let mut acc: Vec<Option<Vec<WindowStats>>> = vec![None; bound];
        for map in maps {
            for (key, seg) in map.iter() {
                let Some(slot) = acc.get_mut(key.index()) else {
                    continue;
                };
                let windows =
                    slot.get_or_insert_with(|| vec![WindowStats::default(); layout.len()]);
                for (w, out) in windows.iter_mut().enumerate() {
                    seg.accumulate(layout, w, now, out);
                }
            }
        }
        for slot in &mut acc {
            if slot
                .as_ref()
                .is_some_and(|w| w.iter().all(|s| s.responses() == 0))
            {
                *slot = None;
            }
        }
        acc
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (KeyId, &Segment)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (KeyId(i as u32), s)))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Segment> {
        self.slots.iter_mut().flatten()
    }

    /// Keeps the segments for which `keep` is true.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(KeyId, &Segment) -> bool) {
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(seg) = slot {
                if !keep(KeyId(i as u32), seg) {
                    *slot = None;
                    self.len -= 1;
                }
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Option<Segment>>()
            + self.iter().map(|(_, s)| s.heap_bytes()).sum::<usize>()
    }
}
