//! How far in time the tracker has read each of its topics.
//!
//! A contact SLA is judged by what the case events say, so an escalation
//! at its due time T is only right once every case event written up to T
//! has been read: a tracker behind on its case events (a restart replaying
//! them, a burst, a slow machine) would otherwise escalate cases whose
//! contact is waiting in the unread part of the log, and each of those
//! escalations costs a read-back of its alert, which puts the tracker
//! further behind, until most cases contacted in time are escalated. In
//! the same way, a case event waiting for its alert (an orphan) is only
//! given up once the alerts written up to its grace have been read.
//!
//! So the tracker's clock for due escalations is the case events' read
//! time, for orphans the alerts': the wall clock less `IN_TRANSIT_MS`
//! when every assigned partition of the topic is read to its end
//! (librdkafka's high watermark from the last fetch), else the time of the
//! last record read from the partition furthest behind. The margin is for
//! a record written just before now that no fetch has answered yet: a case
//! contacted just in time would be escalated without it.

use rdkafka::consumer::{Consumer, StreamConsumer};

use super::Src;
use super::lock;
use super::records::Shell;
use crate::consumer::context::ConsumerCtx;

impl Shell {
    /// The instant up to which `src`'s assigned partitions were read, at
    /// most `now` (see `watermark`). The log ends are librdkafka's from
    /// the last fetches: no request.
    pub(super) fn read_up_to(
        &self,
        consumer: &StreamConsumer<ConsumerCtx>,
        src: Src,
        now: i64,
    ) -> i64 {
        let topic = src.topic(&self.settings);
        let c = lock(&self.core);
        let standing = c.assigned.iter().map(|&p| Standing {
            next: c.positions.next((src, p)),
            high: crate::kafka::cached_log_end(consumer.client(), topic, p),
            last_read: c.read_at.get(&(src, p)).copied(),
        });
        read_up_to(now, standing)
    }
}

/// Where one assigned partition stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Standing {
    /// The offset after the last record handled (or where fetching
    /// started).
    pub(super) next: Option<i64>,
    /// The end of the log as the last fetch answered; `None` before any.
    pub(super) high: Option<i64>,
    /// The timestamp of the last record handled.
    pub(super) last_read: Option<i64>,
}

impl Standing {
    fn read_to_end(&self) -> bool {
        matches!((self.next, self.high), (Some(n), Some(h)) if n >= h)
    }
}

/// How long a record written before now may still be on its way to the
/// tracker although every partition is read to its known end: a producer's
/// linger, the broker's append, and the tracker's next fetch (librdkafka
/// waits up to `fetch.wait.max.ms`, 500 ms by default, for one).
pub(super) const IN_TRANSIT_MS: i64 = 2_000;

/// The instant up to which everything written to the partitions was read,
/// at most `now - IN_TRANSIT_MS`.
pub(super) fn read_up_to(now: i64, partitions: impl IntoIterator<Item = Standing>) -> i64 {
    partitions
        .into_iter()
        .filter(|s| !s.read_to_end())
        .map(|s| s.last_read.unwrap_or(i64::MIN))
        .fold(now.saturating_sub(IN_TRANSIT_MS), i64::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000_000;

    fn at(next: i64, high: Option<i64>, last_read: Option<i64>) -> Standing {
        Standing {
            next: Some(next),
            high,
            last_read,
        }
    }

    #[test]
    fn partitions_read_to_their_end_follow_the_clock_less_what_may_be_in_transit() {
        assert_eq!(read_up_to(NOW, []), NOW - IN_TRANSIT_MS);
        let done = [at(10, Some(10), Some(NOW - 60_000)), at(0, Some(0), None)];
        assert_eq!(read_up_to(NOW, done), NOW - IN_TRANSIT_MS);
    }

    #[test]
    fn the_partition_furthest_behind_holds_the_clock_at_its_last_record() {
        let parts = [
            at(10, Some(10), Some(NOW - 1_000)),
            at(5, Some(90), Some(NOW - 45_000)),
            at(7, Some(20), Some(NOW - 3_000)),
        ];
        assert_eq!(read_up_to(NOW, parts), NOW - 45_000);
    }

    #[test]
    fn a_partition_not_fetched_yet_or_behind_with_nothing_read_holds_everything() {
        assert_eq!(read_up_to(NOW, [at(0, None, None)]), i64::MIN);
        assert_eq!(read_up_to(NOW, [at(0, Some(5), None)]), i64::MIN);
    }

    #[test]
    fn records_stamped_after_the_clock_do_not_move_it_forward() {
        assert_eq!(
            read_up_to(NOW, [at(1, Some(9), Some(NOW + 5_000))]),
            NOW - IN_TRANSIT_MS
        );
    }

    #[test]
    fn a_partition_behind_holds_the_clock_at_its_last_record_or_the_margin_whichever_is_earlier() {
        let parts = [at(3, Some(4), Some(NOW - 500)), at(8, Some(8), None)];
        assert_eq!(read_up_to(NOW, parts), NOW - IN_TRANSIT_MS);
        let parts = [at(3, Some(4), Some(NOW - 2_500)), at(8, Some(8), None)];
        assert_eq!(read_up_to(NOW, parts), NOW - 2_500);
    }
}
