//! Case events read far ahead of their alerts are held back.
//!
//! An event whose alert is not read yet waits in the tracker (an orphan),
//! bounded by `max_orphans`: past it the oldest are given up, and their
//! cases, opened when the alert comes, never see their contact. The two
//! topics are fetched side by side, and after a restore or a rebalance the
//! case events can run ahead: an instance that takes two partitions
//! replaying minutes of both can reach the 100,000 bound in seconds, give
//! up the oldest, and be left with thousands of cases open and overdue
//! although worked and closed. So while many events wait, each
//! partition whose alerts have more to read stops fetching its case
//! events, until the alerts catch up (fewer wait, or its alerts are read to
//! their end). Alerts are never held back this way: only reading them
//! brings the waiting events' alerts.

use std::collections::BTreeSet;

use rdkafka::TopicPartitionList;
use rdkafka::consumer::{Consumer, StreamConsumer};

use super::records::Shell;
use super::{Src, lock};
use crate::consumer::context::ConsumerCtx;

/// Waiting events from which a partition's case events stop while its
/// alerts are behind.
pub(super) const ORPHANS_HIGH: usize = 20_000;
/// Waiting events below which they go on again.
pub(super) const ORPHANS_LOW: usize = 10_000;

/// The partitions whose case events are held back, given how many events
/// wait, whether some are held back now, and for each assigned partition
/// whether its alerts have more to read.
pub(super) fn braked(
    orphans: usize,
    braking: bool,
    alerts_behind: impl IntoIterator<Item = (i32, bool)>,
) -> BTreeSet<i32> {
    let bound = if braking { ORPHANS_LOW } else { ORPHANS_HIGH };
    if orphans <= bound {
        return BTreeSet::new();
    }
    alerts_behind
        .into_iter()
        .filter(|(_, behind)| *behind)
        .map(|(p, _)| p)
        .collect()
}

impl Shell {
    /// Holds back or lets go the case events of each partition (see the
    /// module's doc). After each record (cheap unless the bound is
    /// crossed) and at each tick (`tick`), which also pauses again what a
    /// resume of the whole assignment (backpressure) let go.
    pub(super) fn brake_events(&mut self, consumer: &StreamConsumer<ConsumerCtx>, tick: bool) {
        let orphans = lock(&self.core).tracker.orphans();
        if !tick && (orphans <= ORPHANS_HIGH || !self.braked.is_empty()) {
            return;
        }
        // Cut off from the brokers, everything is paused already.
        if self.holds.has(crate::consumer::holds::Hold::CutOff) {
            return;
        }
        let alerts = self.settings.alerts_topic.clone();
        let want = {
            let c = lock(&self.core);
            let behind = c.assigned.iter().map(|&p| {
                let next = c.positions.next((Src::Alerts, p));
                let end = crate::kafka::cached_log_end(consumer.client(), &alerts, p);
                let behind = match (next, end) {
                    (Some(n), Some(e)) => n < e,
                    // Not fetched yet.
                    _ => true,
                };
                (p, behind)
            });
            braked(orphans, !self.braked.is_empty(), behind)
        };
        let topic = &self.settings.cases.case_events_topic;
        let list = |ps: &mut dyn Iterator<Item = &i32>| {
            let mut tpl = TopicPartitionList::new();
            for p in ps {
                tpl.add_partition(topic, *p);
            }
            tpl
        };
        let pause = if tick {
            list(&mut want.iter())
        } else {
            list(&mut want.difference(&self.braked))
        };
        if pause.count() > 0 {
            let _ = consumer.pause(&pause);
        }
        // A resume while backpressure holds everything would undo it (it
        // resumes the whole assignment when it lets go).
        if !self.holds.has(crate::consumer::holds::Hold::Behind) {
            let let_go: Vec<i32> = self.braked.difference(&want).copied().collect();
            let resume = list(&mut let_go.iter());
            if resume.count() > 0 && consumer.resume(&resume).is_ok() {
                self.refetch(consumer, let_go.iter().map(|p| (Src::Events, *p)).collect());
            }
        }
        if want.is_empty() != self.braked.is_empty() {
            if want.is_empty() {
                tracing::info!(
                    waiting = orphans,
                    "case tracker: alerts caught up, case events fetched again"
                );
            } else {
                tracing::info!(
                    waiting = orphans,
                    partitions = ?want,
                    "case tracker: case events far ahead of their alerts: their fetching paused until the alerts catch up"
                );
            }
        }
        self.braked = want;
    }

    /// After a resume: `keys` fetch again from their next record
    /// (`crate::consumer::seek::refetch`).
    pub(super) fn refetch(&self, consumer: &StreamConsumer<ConsumerCtx>, keys: Vec<(Src, i32)>) {
        for (src, p) in keys {
            let topic = src.topic(&self.settings);
            let Some(next) = lock(&self.core).positions.next((src, p)) else {
                continue;
            };
            let realign = crate::consumer::seek::refetch(consumer, topic, p, next);
            lock(&self.core).positions.realign((src, p), realign);
        }
    }

    /// `refetch` for both topics of every assigned partition.
    pub(super) fn refetch_all(&self, consumer: &StreamConsumer<ConsumerCtx>) {
        let keys = lock(&self.core)
            .assigned
            .iter()
            .flat_map(|&p| [(Src::Alerts, p), (Src::Events, p)])
            .collect();
        self.refetch(consumer, keys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_stop_only_where_alerts_are_behind_and_go_on_below_the_lower_bound() {
        let parts = [(0, true), (1, false), (2, true)];
        // Few waiting: nothing held back.
        assert!(braked(ORPHANS_HIGH, false, parts).is_empty());
        // Many: the partitions whose alerts have more to read.
        let held = braked(ORPHANS_HIGH + 1, false, parts);
        assert_eq!(held, BTreeSet::from([0, 2]));
        // Held back, they stay so down to the lower bound...
        assert_eq!(braked(ORPHANS_LOW + 1, true, parts), held);
        assert!(braked(ORPHANS_LOW, true, parts).is_empty());
        // ...or until their alerts are read to the end.
        assert!(braked(ORPHANS_HIGH + 1, true, [(0, false), (2, false)]).is_empty());
    }
}
