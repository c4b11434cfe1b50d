//! Where each partition a loop reads stands: the offset after the last
//! record handled (what a snapshot taken now reflects, where fetching
//! starts again after a pause), and, for a partition that starts before
//! its snapshot's offset, its realign (`Realign`). Keyed by what the loop
//! reads: a partition of the pipeline's input, a (topic, partition) of the
//! tracker's two topics.
//!
//! Pure: the shell tells it what came and when, and seeks where it says
//! (`consumer::seek`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::realign::{Realign, Seen};

/// What to do with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// Handle it.
    Yes,
    /// Handle it, and say in the log that the records between the
    /// snapshot's offset `want` and this one were not returned.
    Gap { want: i64 },
    /// In the snapshot already, or a start inside the snapshot's batch
    /// (then `seeks` says where to go): not handled.
    Skip,
}

#[derive(Debug)]
pub(crate) struct Positions<K> {
    next: BTreeMap<K, i64>,
    realign: BTreeMap<K, Realign>,
    /// Realigning partitions whose start was inside the snapshot's batch:
    /// to start further back.
    back: BTreeSet<K>,
}

impl<K> Default for Positions<K> {
    fn default() -> Self {
        Positions {
            next: BTreeMap::new(),
            realign: BTreeMap::new(),
            back: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Copy> Positions<K> {
    /// The offset after the last record handled (or where a restored
    /// partition starts).
    pub(crate) fn next(&self, key: K) -> Option<i64> {
        self.next.get(&key).copied()
    }

    /// Every partition with a position.
    pub(crate) fn keys(&self) -> impl Iterator<Item = K> + '_ {
        self.next.keys().copied()
    }

    /// The record at `offset` was handled.
    pub(crate) fn handled(&mut self, key: K, offset: i64) {
        self.next.insert(key, offset + 1);
    }

    /// Sets where `key` stands (a restore, a reset).
    pub(crate) fn set_next(&mut self, key: K, next: i64) {
        self.next.insert(key, next);
    }

    /// Starts or ends `key`'s realign.
    pub(crate) fn realign(&mut self, key: K, realign: Option<Realign>) {
        self.back.remove(&key);
        match realign {
            Some(r) => self.realign.insert(key, r),
            None => self.realign.remove(&key),
        };
    }

    /// A record at `offset` of `key` came.
    pub(crate) fn record(&mut self, key: K, offset: i64) -> Take {
        let Some(r) = self.realign.get_mut(&key) else {
            return Take::Yes;
        };
        let want = r.want();
        match r.seen(offset) {
            Seen::Skip => Take::Skip,
            Seen::FurtherBack => {
                self.back.insert(key);
                Take::Skip
            }
            Seen::Take => {
                self.realign.remove(&key);
                Take::Yes
            }
            Seen::Gap => {
                self.realign.remove(&key);
                Take::Gap { want }
            }
        }
    }

    /// Whether a partition waits to start further back.
    pub(crate) fn seeks_waiting(&self) -> bool {
        !self.back.is_empty()
    }

    /// Where to seek at `now`: partitions whose start was inside the
    /// snapshot's batch, and those that got nothing for a second
    /// (`Realign::silent`), each eight times further back.
    pub(crate) fn seeks(&mut self, now: Instant) -> Vec<(K, i64)> {
        let mut keys = std::mem::take(&mut self.back);
        keys.extend(
            self.realign
                .iter()
                .filter(|(_, r)| r.silent(now))
                .map(|(k, _)| *k),
        );
        keys.into_iter()
            .filter_map(|k| self.realign.get_mut(&k).map(|r| (k, r.further_back(now))))
            .collect()
    }

    /// Forgets `key` (revoked, or its log gone).
    pub(crate) fn forget(&mut self, key: K) {
        self.next.remove(&key);
        self.realign(key, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_partition_without_a_realign_takes_every_record_and_moves_on() {
        let mut ps = Positions::<i32>::default();
        assert_eq!(ps.record(3, 17), Take::Yes);
        ps.handled(3, 17);
        assert_eq!(ps.next(3), Some(18));
        assert_eq!(ps.keys().collect::<Vec<_>>(), [3]);
        ps.forget(3);
        assert_eq!(ps.next(3), None);
    }

    #[test]
    fn a_restored_partition_skips_its_snapshot_and_goes_further_back_when_asked() {
        let t = Instant::now();
        let mut ps = Positions::<(u8, i32)>::default();
        let k = (1, 0);
        ps.set_next(k, 50_000);
        ps.realign(k, Realign::start(50_000, 0, t));
        // The first record is past the snapshot: the start was inside
        // its batch.
        assert_eq!(ps.record(k, 50_200), Take::Skip);
        assert!(ps.seeks_waiting());
        assert_eq!(ps.seeks(t), [(k, 42_000)]);
        assert!(!ps.seeks_waiting());
        assert_eq!(ps.record(k, 42_000), Take::Skip);
        assert_eq!(ps.record(k, 50_000), Take::Yes);
        // Realigned: later records are taken, nothing is sought.
        assert_eq!(ps.record(k, 50_001), Take::Yes);
        assert!(ps.seeks(t + Duration::from_secs(5)).is_empty());
    }

    #[test]
    fn a_silent_start_goes_further_back_and_a_gap_is_said() {
        let t = Instant::now();
        let mut ps = Positions::<i32>::default();
        ps.realign(0, Realign::start(3_000, 1_500, t));
        assert!(ps.seeks(t).is_empty(), "not silent yet");
        assert_eq!(ps.seeks(t + Duration::from_millis(1_100)), [(0, 1_500)]);
        assert_eq!(ps.record(0, 3_100), Take::Gap { want: 3_000 });
        assert_eq!(ps.record(0, 3_101), Take::Yes);
    }

    #[test]
    fn forgetting_a_partition_ends_its_realign_and_pending_seek() {
        let t = Instant::now();
        let mut ps = Positions::<i32>::default();
        ps.realign(0, Realign::start(50_000, 0, t));
        assert_eq!(ps.record(0, 50_200), Take::Skip);
        ps.forget(0);
        assert!(ps.seeks(t + Duration::from_secs(5)).is_empty());
        assert_eq!(ps.record(0, 50_200), Take::Yes);
    }
}
