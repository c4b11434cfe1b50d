//! What a partition's snapshot holds, and when it may be written.
//!
//! A snapshot marks the escalations it reflects as sent (their bits in
//! each case), so it must not reach the state topic before they are
//! delivered: a restore would never send them. A snapshot is taken at each
//! round (`Captured`) and written once the escalations that were on their
//! way *when it was taken* are delivered; later ones do not hold it back.
//! (Waiting for a moment with no escalation on its way would, under a
//! steady flow of escalations, leave a partition without a snapshot for
//! minutes, and its next owner replaying minutes of both topics.)

use std::collections::BTreeSet;

use super::{Core, Src};
use crate::cases::AlertKey;

/// A snapshot taken, waiting for escalations to be delivered.
pub(super) struct Captured {
    bytes: Vec<u8>,
    /// (case, level) of the escalations on their way when it was taken.
    waits: Vec<(AlertKey, u8)>,
}

impl Core {
    /// The escalations of alerts partition `p` still on their way.
    fn escalations_pending(&self, p: i32) -> BTreeSet<(AlertKey, u8)> {
        let sending = self
            .escalating
            .iter()
            .filter(|e| e.partition == p)
            .map(|e| (e.alert, e.level));
        let unread = self
            .unread
            .iter()
            .filter(|u| u.esc.partition == p)
            .map(|u| (u.esc.alert, u.esc.level));
        sending.chain(unread).collect()
    }

    /// The offset of (topic, partition) the tracker's state reflects
    /// everything before, as far as is delivered.
    fn reflected(&self, src: Src, p: i32) -> Option<i64> {
        let ledger = &self.ledgers[src as usize];
        if ledger.idle(p) {
            self.next.get(&(src, p)).copied()
        } else {
            ledger
                .committable(Some(&[p]), true)
                .first()
                .map(|(_, o)| *o)
        }
    }

    /// The snapshot of `p` as the state is now, written into `bytes`, and
    /// the escalations it waits for.
    fn capture(&self, p: i32, bytes: &mut Vec<u8>) -> Option<Vec<(AlertKey, u8)>> {
        let alerts = self.reflected(Src::Alerts, p)?;
        // Events waiting for their alert are not in the snapshot: it
        // starts at the first of them, so they are read again. (Read
        // during a replay they are not in the ledger: without this, a
        // revoke while restoring would write them off, and the next owner
        // would open their cases again with no contact, stuck open.)
        let waiting = self
            .tracker
            .orphans_of(p)
            .map(|h| rdkafka::Message::offset(&h.record))
            .min();
        let events = self.reflected(Src::Events, p)?;
        let events = waiting.map_or(events, |w| w.min(events));
        let snap = self.tracker.partition_snapshot(p, alerts, events);
        crate::cases::encode_snapshot_into(&snap, bytes);
        Some(self.escalations_pending(p).into_iter().collect())
    }

    /// The snapshot of `p`, when none of its escalations is on its way.
    #[cfg(test)]
    pub(super) fn snapshot(&self, p: i32) -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        let waits = self.capture(p, &mut bytes)?;
        waits.is_empty().then_some(bytes)
    }

    /// What to write for `p` now: the snapshot taken earlier once the
    /// escalations it waited for are delivered; else one taken now, at
    /// once if nothing is on its way, or kept until that is delivered.
    pub(super) fn snapshot_to_write(&mut self, p: i32) -> Option<Vec<u8>> {
        if self.captured.contains_key(&p) {
            let pending = self.escalations_pending(p);
            let c = self.captured.get_mut(&p)?;
            c.waits.retain(|w| pending.contains(w));
            if !c.waits.is_empty() {
                return None;
            }
            return self.captured.remove(&p).map(|c| c.bytes);
        }
        // Encoded into the buffer of the last one written (`spare`).
        let mut bytes = std::mem::take(&mut self.spare);
        let Some(waits) = self.capture(p, &mut bytes) else {
            self.spare = bytes;
            return None;
        };
        if waits.is_empty() {
            return Some(bytes);
        }
        self.captured.insert(p, Captured { bytes, waits });
        None
    }

    /// Starts a round of snapshots of every assigned partition, unless
    /// the last one is still going.
    pub(super) fn start_round(&mut self) {
        if self.round.is_empty() {
            self.round = self.assigned.clone();
        }
    }

    /// The round's next snapshot to write, once the one before is
    /// acknowledged: one partition's records (megabytes with tens of
    /// thousands of customers a partition) are alive at a time, not every
    /// partition's at once. A partition whose snapshot waits for its
    /// escalations holds the round there; one with nothing to snapshot
    /// yet (not read from) is passed.
    pub(super) fn next_in_round(&mut self) -> Option<(i32, Vec<u8>)> {
        if !self.writes.is_empty() {
            return None;
        }
        while let Some(&p) = self.round.first() {
            if let Some(bytes) = self.snapshot_to_write(p) {
                self.round.remove(&p);
                return Some((p, bytes));
            }
            if self.captured.contains_key(&p) {
                return None;
            }
            self.round.remove(&p);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use rdkafka::message::OwnedMessage;

    use super::super::tests::{escalation, sent};
    use super::super::*;
    use crate::config::Settings;

    #[test]
    fn a_snapshot_starts_its_events_at_the_first_one_waiting_for_its_alert() {
        let settings = Settings::default();
        let mut c = Core::new(&settings);
        let event = |alert| crate::cases::EventIn {
            alert,
            state: crate::pb::CaseState::Contacted,
            occurred_at_ms: 1_000,
            outcome: crate::pb::CaseOutcome::Unspecified,
        };
        // Replayed (not live, so not in the ledger): events 0..10 of
        // partition 2 read, those at 4 and 7 waiting for alerts not read
        // yet; the alerts read up to 6.
        for off in [4i64, 7] {
            let record = OwnedMessage::new(
                None,
                None,
                settings.cases.case_events_topic.clone(),
                rdkafka::Timestamp::NotAvailable,
                2,
                off,
                None,
            );
            let held = Held {
                record,
                slot: Arc::new(Mutex::new(Slot::Waiting(crate::pb::CaseState::Contacted))),
                live: false,
            };
            let applied = c
                .tracker
                .event(2, &event(u128::from(off as u64) + 1), held, 0);
            assert!(matches!(applied, crate::cases::Applied::Waiting));
        }
        c.next.insert((Src::Events, 2), 10);
        c.next.insert((Src::Alerts, 2), 6);
        let snap = |c: &Core| crate::cases::decode_snapshot(&c.snapshot(2).unwrap()).unwrap();
        let s = snap(&c);
        assert_eq!((s.alerts_next_offset, s.events_next_offset), (6, 4));
        // Another partition's waiting events do not hold this one back.
        c.next.insert((Src::Events, 1), 10);
        c.next.insert((Src::Alerts, 1), 6);
        let s = crate::cases::decode_snapshot(&c.snapshot(1).unwrap()).unwrap();
        assert_eq!(s.events_next_offset, 10);
        // Once nothing waits, the snapshot reflects every event read.
        c.tracker.drop_partition(2);
        assert_eq!(snap(&c).events_next_offset, 10);
    }

    #[test]
    fn a_snapshot_waits_only_for_the_escalations_on_their_way_when_it_was_taken() {
        let settings = Settings::default();
        let mut c = Core::new(&settings);
        c.next.insert((Src::Events, 2), 10);
        c.next.insert((Src::Alerts, 2), 6);
        let alerts_at = |bytes: Vec<u8>| {
            crate::cases::decode_snapshot(&bytes)
                .unwrap()
                .alerts_next_offset
        };
        // Nothing on its way: written at once.
        assert_eq!(c.snapshot_to_write(2).map(alerts_at), Some(6));
        // An escalation waiting for its alert: the snapshot taken now waits.
        c.unread.push(Unread::new(escalation(7, 2)));
        assert!(c.snapshot_to_write(2).is_none());
        // The state moves on and another escalation starts; the first is
        // read back and sent, not delivered yet.
        c.next.insert((Src::Alerts, 2), 9);
        c.unread.push(Unread::new(escalation(8, 2)));
        let u = c.unread.remove(0);
        c.escalating.push(Escalating {
            partition: 2,
            alert: u.esc.alert,
            level: u.esc.level,
            delivery: sent(),
            holds: None,
        });
        assert!(c.snapshot_to_write(2).is_none());
        // Another partition's escalations do not hold it back.
        c.unread.push(Unread::new(escalation(9, 1)));
        // Delivered: the snapshot taken before is written, as it was then,
        // although the second escalation is still on its way.
        c.escalating.clear();
        assert_eq!(c.snapshot_to_write(2).map(alerts_at), Some(6));
        // The next one waits for the second.
        assert!(c.snapshot_to_write(2).is_none());
        c.unread.retain(|u| u.esc.alert != 8);
        assert_eq!(c.snapshot_to_write(2).map(alerts_at), Some(9));
        // A revoked partition's waiting snapshot is dropped with it.
        c.unread.push(Unread::new(escalation(10, 2)));
        assert!(c.snapshot_to_write(2).is_none());
        c.forget(&[2]);
        assert!(c.captured.is_empty());
    }

    /// A delivery that never completes (a producer with no broker).
    fn write_on_its_way() -> rdkafka::producer::DeliveryFuture {
        let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9")
            .create()
            .unwrap();
        let record = rdkafka::producer::FutureRecord::<(), [u8]>::to("state").payload(&[1u8][..]);
        producer.send_result(record).map_err(|(e, _)| e).unwrap()
    }

    #[test]
    fn a_round_writes_one_partition_at_a_time_each_once_the_one_before_is_acknowledged() {
        let settings = Settings::default();
        let mut c = Core::new(&settings);
        c.assigned = [1, 2, 3, 4].into();
        for p in [1, 2, 4] {
            c.next.insert((Src::Events, p), 10);
            c.next.insert((Src::Alerts, p), 6);
        }
        assert!(c.next_in_round().is_none(), "no round started");
        c.start_round();
        let (p, _) = c.next_in_round().unwrap();
        assert_eq!(p, 1);
        c.writes.push((1, write_on_its_way()));
        assert!(
            c.next_in_round().is_none(),
            "partition 1's write on its way"
        );
        // A tick while the round goes on does not start it again.
        c.start_round();
        c.writes.clear();
        // Partition 2's snapshot waits for an escalation: the round waits
        // there.
        c.unread.push(Unread::new(escalation(7, 2)));
        assert!(c.next_in_round().is_none());
        assert!(c.next_in_round().is_none());
        c.unread.clear();
        assert_eq!(c.next_in_round().map(|(p, _)| p), Some(2));
        // Partition 3 has nothing to snapshot (never read): passed.
        assert_eq!(c.next_in_round().map(|(p, _)| p), Some(4));
        assert!(c.next_in_round().is_none(), "the round is over");
        assert!(c.round.is_empty());
        // A revoke takes a partition out of the round.
        c.start_round();
        c.forget(&[1]);
        assert_eq!(c.next_in_round().map(|(p, _)| p), Some(2));
    }

    #[test]
    fn the_allocator_gives_pages_back_once_a_round_of_writes_is_acknowledged() {
        let mut c = Core::new(&Settings::default());
        assert!(!c.take_purge(), "nothing written");
        c.purge = true;
        c.writes.push((2, write_on_its_way()));
        assert!(!c.take_purge(), "a write still on its way");
        c.writes.clear();
        c.round = [3].into();
        assert!(!c.take_purge(), "partitions of the round still to write");
        c.round.clear();
        assert!(c.take_purge());
        assert!(!c.take_purge(), "once per round");
    }
}
