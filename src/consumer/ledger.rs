//! The offset ledger: which offsets of each partition may be committed.
//!
//! Pure bookkeeping (no Kafka, no clock, no metrics), in the style of
//! quinn-proto: the shell tells it what was read and hands it a way to ask
//! after each record's delivery; it answers which offsets have become
//! committable. The rule it keeps (rust-rdkafka's at_least_once example):
//! an offset is committable only once the record and everything before it
//! in its partition is done, so a delivery still pending, or failed and
//! being sent again, holds back every later offset of its partition, and
//! never those of another.
//!
//! `D` is the shell's handle on a delivery (a future, a record to send
//! again): the ledger stores it in the record's place and never looks
//! inside.

use std::collections::{BTreeMap, VecDeque};

/// A delivery's state, as the shell's `step` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Acknowledged by the broker.
    Done,
    /// Still on its way.
    Waiting,
    /// Failed and handed to the producer again (in place): still pending.
    Retried,
}

/// A record read and not yet committable.
struct Entry<D> {
    offset: i64,
    /// What the record sent (an alert or a dead letter), until done.
    delivery: Option<D>,
}

pub(crate) struct Ledger<D> {
    pending: BTreeMap<i32, VecDeque<Entry<D>>>,
    /// Per partition, the next offset to commit (last done + 1).
    done: BTreeMap<i32, i64>,
    /// What was last committed, per partition.
    committed: BTreeMap<i32, i64>,
    /// Deliveries not yet done, over every partition.
    in_flight: usize,
}

/// What a `drain` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Drained {
    /// Partitions whose committable offset moved, and where to.
    pub(crate) moved: Vec<(i32, i64)>,
    /// Deliveries the shell sent again.
    pub(crate) retried: u64,
}

impl<D> Default for Ledger<D> {
    fn default() -> Self {
        Ledger {
            pending: BTreeMap::new(),
            done: BTreeMap::new(),
            committed: BTreeMap::new(),
            in_flight: 0,
        }
    }
}

impl<D> Ledger<D> {
    /// Records that `offset` of `partition` was read (offsets come in
    /// order), with the delivery it caused, if any.
    pub(crate) fn read(&mut self, partition: i32, offset: i64, delivery: Option<D>) {
        if delivery.is_some() {
            self.in_flight += 1;
        }
        self.pending
            .entry(partition)
            .or_default()
            .push_back(Entry { offset, delivery });
    }

    /// Asks `step` after the deliveries at the head of each partition,
    /// pops those done, and so moves the committable offsets. When a head
    /// failed (`Retried`), the deliveries behind it are asked too: failures
    /// come in bursts (a broker gone, a producer renewed) and are better
    /// sent again at once than one per turn.
    pub(crate) fn drain(&mut self, mut step: impl FnMut(&mut D) -> Step) -> Drained {
        let mut out = Drained::default();
        for (p, queue) in self.pending.iter_mut() {
            let mut last = None;
            let mut failing = false;
            while let Some(front) = queue.front_mut() {
                let s = front.delivery.as_mut().map_or(Step::Done, &mut step);
                match s {
                    Step::Done => {
                        if front.delivery.is_some() {
                            self.in_flight -= 1;
                        }
                        last = Some(front.offset);
                        queue.pop_front();
                    }
                    Step::Retried => {
                        out.retried += 1;
                        failing = true;
                        break;
                    }
                    Step::Waiting => break,
                }
            }
            if failing {
                for entry in queue.iter_mut().skip(1) {
                    let Some(d) = entry.delivery.as_mut() else {
                        continue;
                    };
                    match step(d) {
                        Step::Retried => out.retried += 1,
                        Step::Done => {
                            entry.delivery = None;
                            self.in_flight -= 1;
                        }
                        Step::Waiting => {}
                    }
                }
            }
            if let Some(off) = last {
                self.done.insert(*p, off + 1);
                out.moved.push((*p, off + 1));
            }
        }
        out
    }

    /// Asks `step` after every delivery behind each partition's head, and
    /// lets go of those done (the head's own wait still holds the commit).
    /// Without it, a delivery done behind a record that waits long (a case
    /// event waiting for its alert) counts as in flight until that record
    /// is done. O(pending): for a loop that is held back, not per record.
    pub(crate) fn settle(&mut self, mut step: impl FnMut(&mut D) -> Step) -> u64 {
        let mut retried = 0;
        for queue in self.pending.values_mut() {
            for entry in queue.iter_mut().skip(1) {
                let Some(d) = entry.delivery.as_mut() else {
                    continue;
                };
                match step(d) {
                    Step::Retried => retried += 1,
                    Step::Done => {
                        entry.delivery = None;
                        self.in_flight -= 1;
                    }
                    Step::Waiting => {}
                }
            }
        }
        retried
    }

    /// The committable offsets not committed yet (`all`: every committable
    /// one, as a synchronous commit on revoke or shutdown wants), of
    /// `partitions` only when given.
    pub(crate) fn committable(&self, partitions: Option<&[i32]>, all: bool) -> Vec<(i32, i64)> {
        self.done
            .iter()
            .filter(|(p, _)| partitions.is_none_or(|ps| ps.contains(p)))
            .filter(|(p, off)| all || self.committed.get(p) != Some(off))
            .map(|(p, off)| (*p, *off))
            .collect()
    }

    /// Records a commit the broker accepted.
    pub(crate) fn committed(&mut self, offsets: impl IntoIterator<Item = (i32, i64)>) {
        self.committed.extend(offsets);
    }

    /// Whether an offset of `partition` was committed while it was owned.
    pub(crate) fn was_committed(&self, partition: i32) -> bool {
        self.committed.contains_key(&partition)
    }

    /// Marks `offset` of `partition` done without a record: restored state
    /// (a snapshot) reflects everything before it, so it is committable
    /// even when its own commit was lost and no record follows.
    pub(crate) fn done_up_to(&mut self, partition: i32, offset: i64) {
        self.done.insert(partition, offset);
    }

    /// Drops what is committable for `partition` and not committed (an
    /// offset the brokers no longer hold: the next record sets it again).
    pub(crate) fn forget_done(&mut self, partition: i32) {
        self.done.remove(&partition);
    }

    /// Forgets `partition` entirely (revoked, or its log gone): nothing
    /// pending or done of it will be committed.
    pub(crate) fn forget(&mut self, partition: i32) {
        if let Some(q) = self.pending.remove(&partition) {
            self.in_flight -= q.iter().filter(|e| e.delivery.is_some()).count();
        }
        self.done.remove(&partition);
        self.committed.remove(&partition);
    }

    /// Whether `partition` has nothing pending.
    pub(crate) fn idle(&self, partition: i32) -> bool {
        self.pending.get(&partition).is_none_or(VecDeque::is_empty)
    }

    /// Whether a snapshot reflecting the records of `partition` before
    /// `offset` may be written: every one of them is done.
    pub(crate) fn snapshot_ready(&self, partition: i32, offset: i64) -> bool {
        self.done.get(&partition).is_some_and(|d| *d >= offset) || self.idle(partition)
    }

    /// Pending deliveries `counted` says to count.
    pub(crate) fn count_pending(&self, counted: impl Fn(&D) -> bool) -> usize {
        self.pending
            .values()
            .flatten()
            .filter(|e| e.delivery.as_ref().is_some_and(&counted))
            .count()
    }

    /// Deliveries not yet done.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delivery in the tests: its state is set by the test.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum D {
        Acked,
        Waiting,
        Failed,
    }

    /// A step that reports Acked as done, Failed as sent again (it stays
    /// pending until the test acks it).
    fn step(d: &mut D) -> Step {
        match d {
            D::Acked => Step::Done,
            D::Waiting => Step::Waiting,
            D::Failed => Step::Retried,
        }
    }

    #[test]
    fn records_without_deliveries_are_committable_at_once_in_order() {
        let mut l: Ledger<D> = Ledger::default();
        for off in 0..3 {
            l.read(0, off, None);
        }
        let d = l.drain(step);
        assert_eq!(d.moved, vec![(0, 3)]);
        assert_eq!(l.committable(None, false), vec![(0, 3)]);
        assert!(l.idle(0));
    }

    #[test]
    fn a_pending_delivery_holds_back_later_offsets_of_its_partition_only() {
        let mut l: Ledger<D> = Ledger::default();
        l.read(0, 10, None);
        l.read(0, 11, Some(D::Waiting));
        l.read(0, 12, None);
        l.read(1, 5, None);
        let d = l.drain(step);
        assert_eq!(d.moved, vec![(0, 11), (1, 6)]);
        assert_eq!(l.in_flight(), 1);
        assert!(!l.idle(0));
        // Nothing moves until it is acknowledged; then all of it.
        assert_eq!(l.drain(step).moved, vec![]);
        let mut acked = |d: &mut D| {
            *d = D::Acked;
            Step::Done
        };
        assert_eq!(l.drain(&mut acked).moved, vec![(0, 13)]);
        assert_eq!(l.in_flight(), 0);
    }

    #[test]
    fn a_failed_delivery_holds_its_partition_and_the_ones_behind_it_are_retried_too() {
        let mut l: Ledger<D> = Ledger::default();
        l.read(0, 0, Some(D::Failed));
        l.read(0, 1, Some(D::Failed));
        l.read(0, 2, Some(D::Acked));
        l.read(0, 3, Some(D::Waiting));
        let d = l.drain(step);
        assert_eq!(d.moved, vec![], "the failed head holds everything");
        assert_eq!(d.retried, 2, "the head and the failed one behind it");
        // The acknowledged one behind the head is done but keeps its place.
        assert_eq!(l.in_flight(), 3);
        assert_eq!(l.committable(None, true), vec![]);
    }

    #[test]
    fn settling_lets_go_of_deliveries_done_behind_a_waiting_head_but_keeps_their_place() {
        let mut l: Ledger<D> = Ledger::default();
        l.read(0, 0, Some(D::Waiting));
        l.read(0, 1, Some(D::Acked));
        l.read(0, 2, Some(D::Failed));
        l.read(0, 3, None);
        l.read(1, 0, Some(D::Waiting));
        l.read(1, 1, Some(D::Acked));
        assert_eq!(l.drain(step).moved, vec![]);
        assert_eq!(l.in_flight(), 5);
        // The heads are left to `drain`; the failed one is sent again.
        assert_eq!(l.settle(step), 1);
        assert_eq!(l.in_flight(), 3);
        assert_eq!(l.committable(None, true), vec![]);
        // Once the heads are done, the settled ones are not asked again.
        let mut asked = 0;
        let mut acked = |d: &mut D| {
            asked += 1;
            *d = D::Acked;
            Step::Done
        };
        assert_eq!(l.drain(&mut acked).moved, vec![(0, 4), (1, 2)]);
        assert_eq!(asked, 3);
        assert_eq!(l.in_flight(), 0);
    }

    #[test]
    fn only_offsets_not_yet_committed_are_committed_again_unless_all_are_asked() {
        let mut l: Ledger<D> = Ledger::default();
        l.read(0, 0, None);
        l.read(1, 0, None);
        l.drain(step);
        assert_eq!(l.committable(None, false), vec![(0, 1), (1, 1)]);
        l.committed([(0, 1)]);
        assert_eq!(l.committable(None, false), vec![(1, 1)]);
        assert_eq!(l.committable(None, true), vec![(0, 1), (1, 1)]);
        assert_eq!(l.committable(Some(&[0]), true), vec![(0, 1)]);
        assert!(l.was_committed(0) && !l.was_committed(1));
    }

    #[test]
    fn revoke_in_the_middle_of_pending_deliveries_forgets_them_all() {
        let mut l: Ledger<D> = Ledger::default();
        l.read(0, 0, None);
        l.read(0, 1, Some(D::Waiting));
        l.read(0, 2, Some(D::Waiting));
        l.read(1, 0, Some(D::Waiting));
        l.drain(step);
        l.committed([(0, 1)]);
        l.forget(0);
        assert_eq!(l.in_flight(), 1, "partition 1's delivery stays");
        assert!(l.idle(0));
        assert_eq!(l.committable(None, true), vec![]);
        assert!(!l.was_committed(0));
        // Read again later (the partition came back): starts clean.
        l.read(0, 7, None);
        assert_eq!(l.drain(step).moved, vec![(0, 8)]);
    }

    #[test]
    fn rewind_drops_the_old_logs_offsets_and_the_new_log_starts_over() {
        let mut l: Ledger<D> = Ledger::default();
        l.read(0, 500, None);
        l.read(0, 501, Some(D::Waiting));
        l.drain(step);
        l.committed([(0, 501)]);
        // The log was recreated: its offsets mean nothing any more.
        l.forget(0);
        l.read(0, 0, None);
        assert_eq!(l.drain(step).moved, vec![(0, 1)]);
        assert_eq!(l.committable(None, false), vec![(0, 1)]);
    }

    #[test]
    fn a_snapshot_ahead_of_the_last_commit_is_committable_with_no_record_after_it() {
        let mut l: Ledger<D> = Ledger::default();
        // Restored at offset 40, last commit at 30: done up to 40.
        l.committed([(0, 30)]);
        l.done_up_to(0, 40);
        assert_eq!(l.committable(None, false), vec![(0, 40)]);
        assert!(l.snapshot_ready(0, 40));
    }

    #[test]
    fn a_snapshot_may_be_written_only_once_its_records_are_done() {
        let mut l: Ledger<D> = Ledger::default();
        l.read(0, 0, None);
        l.read(0, 1, Some(D::Waiting));
        l.read(0, 2, None);
        l.drain(step);
        assert!(l.snapshot_ready(0, 1), "everything before 1 is done");
        assert!(!l.snapshot_ready(0, 3), "1 is not delivered");
        l.drain(|d| {
            *d = D::Acked;
            Step::Done
        });
        assert!(l.snapshot_ready(0, 3));
    }

    #[test]
    fn an_offset_the_brokers_forgot_is_no_longer_committable() {
        let mut l: Ledger<D> = Ledger::default();
        l.read(0, 0, None);
        l.drain(step);
        l.forget_done(0);
        assert_eq!(l.committable(None, true), vec![]);
    }
}
