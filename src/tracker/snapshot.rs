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

use std::time::Instant;

use rdkafka::error::KafkaResult;
use rdkafka::producer::DeliveryFuture;

use super::{Core, Escalating, Src, Unread};
use crate::cases::AlertKey;
use crate::consumer::snapshots::{Staged, Written};
use crate::state::StateStore;

/// What a staged snapshot waits for: the (case, level) of the escalations
/// on their way when it was taken.
pub(super) type Waits = Vec<(AlertKey, u8)>;

/// The escalations of alerts partition `p` still on their way.
fn escalations_pending(
    escalating: &[Escalating],
    unread: &[Unread],
    p: i32,
) -> BTreeSet<(AlertKey, u8)> {
    let sending = escalating
        .iter()
        .filter(|e| e.partition == p)
        .map(|e| (e.alert, e.level));
    let unread = unread
        .iter()
        .filter(|u| u.esc.partition == p)
        .map(|u| (u.esc.alert, u.esc.level));
    sending.chain(unread).collect()
}

impl Core {
    /// The offset of (topic, partition) the tracker's state reflects
    /// everything before, as far as is delivered.
    fn reflected(&self, src: Src, p: i32) -> Option<i64> {
        let ledger = &self.ledgers[src as usize];
        if ledger.idle(p) {
            self.positions.next((src, p))
        } else {
            ledger
                .committable(Some(&[p]), true)
                .first()
                .map(|(_, o)| *o)
        }
    }

    /// The snapshot of `p` as the state is now, written into `bytes`, its
    /// alerts offset, and the escalations it waits for.
    fn capture(&self, p: i32, bytes: &mut Vec<u8>) -> Option<(i64, Waits)> {
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
        let waits = escalations_pending(&self.escalating, &self.unread, p);
        Some((alerts, waits.into_iter().collect()))
    }

    /// The snapshot of `p`, when none of its escalations is on its way.
    #[cfg(test)]
    pub(super) fn snapshot(&self, p: i32) -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        let (_, waits) = self.capture(p, &mut bytes)?;
        waits.is_empty().then_some(bytes)
    }

    /// Takes `p`'s snapshot and stages it until the escalations on their
    /// way now are delivered; not while one taken earlier still waits
    /// (under a steady flow of escalations, a snapshot that waited for a
    /// moment with none on their way would never be written).
    pub(super) fn stage(&mut self, p: i32) {
        if self.snapshots.is_staged(p) || self.snapshots.writing(p) {
            return;
        }
        let mut bytes = self.snapshots.buffer();
        match self.capture(p, &mut bytes) {
            Some((offset, waits)) => self.snapshots.stage(
                p,
                Staged {
                    offset,
                    bytes,
                    waits,
                },
            ),
            None => self.snapshots.give_back(bytes),
        }
    }

    /// The round's next snapshots: taken one partition at a time, each
    /// written once its escalations are delivered (`send`:
    /// `StateStore::write`).
    pub(super) fn snapshot_round(
        &mut self,
        send: impl FnMut(i32, &[u8]) -> KafkaResult<DeliveryFuture>,
    ) -> Vec<Written> {
        while let Some(p) = self.snapshots.next_due() {
            self.stage(p);
        }
        let (escalating, unread) = (&self.escalating, &self.unread);
        self.snapshots
            .write(send, |p, s| delivered(escalating, unread, p, &mut s.waits))
    }

    /// Snapshots `partitions` (every assigned one when `None`) all at
    /// once (a revoke, a stop), and waits for the writes until `deadline`.
    pub(super) fn final_snapshots(
        &mut self,
        store: &StateStore,
        partitions: Option<&[i32]>,
        deadline: Instant,
    ) {
        let parts: Vec<i32> =
            partitions.map_or_else(|| self.assigned.iter().copied().collect(), <[i32]>::to_vec);
        for p in parts {
            self.stage(p);
        }
        let (escalating, unread) = (&self.escalating, &self.unread);
        let (written, _) = self.snapshots.wait(store, partitions, deadline, |p, s| {
            delivered(escalating, unread, p, &mut s.waits)
        });
        said(written);
    }
}

/// Whether the escalations a snapshot of `p` waits for are delivered
/// (those delivered are struck off).
fn delivered(escalating: &[Escalating], unread: &[Unread], p: i32, waits: &mut Waits) -> bool {
    if waits.is_empty() {
        return true;
    }
    let pending = escalations_pending(escalating, unread, p);
    waits.retain(|w| pending.contains(w));
    waits.is_empty()
}

/// Says in the log which snapshot writes failed (the next round writes
/// them again).
pub(super) fn said(written: Vec<Written>) {
    for w in written.iter().filter(|w| !w.ok) {
        tracing::warn!(
            partition = w.partition,
            "case snapshot write failed; the next one follows"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use rdkafka::message::OwnedMessage;

    use super::super::tests::{escalation, sent};
    use super::super::*;
    use crate::config::Settings;
    use crate::consumer::snapshots::tests::write_on_its_way;

    #[test]
    fn a_snapshot_starts_its_events_at_the_first_one_waiting_for_its_alert() {
        let settings = Settings::default();
        let mut c = Core::new(&settings);
        let event = |alert| crate::cases::EventIn {
            alert,
            state: crate::pb::CaseState::Contacted,
            occurred_at_ms: 1_000,
            outcome: crate::pb::CaseOutcome::Unspecified,
            root_cause: crate::cases::RootCause::NONE,
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
        c.positions.set_next((Src::Events, 2), 10);
        c.positions.set_next((Src::Alerts, 2), 6);
        let snap = |c: &Core| crate::cases::decode_snapshot(&c.snapshot(2).unwrap()).unwrap();
        let s = snap(&c);
        assert_eq!((s.alerts_next_offset, s.events_next_offset), (6, 4));
        // Another partition's waiting events do not hold this one back.
        c.positions.set_next((Src::Events, 1), 10);
        c.positions.set_next((Src::Alerts, 1), 6);
        let s = crate::cases::decode_snapshot(&c.snapshot(1).unwrap()).unwrap();
        assert_eq!(s.events_next_offset, 10);
        // Once nothing waits, the snapshot reflects every event read.
        c.tracker.drop_partition(2);
        assert_eq!(snap(&c).events_next_offset, 10);
    }

    /// The round's snapshots written now, by their alerts offset.
    fn written(c: &mut Core) -> Vec<i64> {
        let mut sent = Vec::new();
        let _ = c.snapshot_round(|_, bytes| {
            let snap = crate::cases::decode_snapshot(bytes).unwrap();
            sent.push(snap.alerts_next_offset);
            Ok(write_on_its_way())
        });
        c.snapshots.acknowledge_all();
        sent
    }

    #[test]
    fn a_snapshot_waits_only_for_the_escalations_on_their_way_when_it_was_taken() {
        let settings = Settings::default();
        let mut c = Core::new(&settings);
        c.positions.set_next((Src::Events, 2), 10);
        c.positions.set_next((Src::Alerts, 2), 6);
        // Nothing on its way: written at once.
        c.stage(2);
        assert_eq!(written(&mut c), [6]);
        // An escalation waiting for its alert: the snapshot taken now waits.
        c.unread.push(Unread::new(escalation(7, 2)));
        c.stage(2);
        assert!(written(&mut c).is_empty());
        // The state moves on and another escalation starts; the first is
        // read back and sent, not delivered yet.
        c.positions.set_next((Src::Alerts, 2), 9);
        c.unread.push(Unread::new(escalation(8, 2)));
        let u = c.unread.remove(0);
        c.escalating.push(Escalating {
            partition: 2,
            alert: u.esc.alert,
            level: u.esc.level,
            delivery: sent(),
            holds: None,
        });
        c.stage(2);
        assert!(written(&mut c).is_empty());
        // Another partition's escalations do not hold it back.
        c.unread.push(Unread::new(escalation(9, 1)));
        // Delivered: the snapshot taken before is written, as it was then,
        // although the second escalation is still on its way.
        c.escalating.clear();
        assert_eq!(written(&mut c), [6]);
        // The next one waits for the second.
        c.stage(2);
        assert!(written(&mut c).is_empty());
        c.unread.retain(|u| u.esc.alert != 8);
        assert_eq!(written(&mut c), [9]);
        // A revoked partition's waiting snapshot is dropped with it.
        c.unread.push(Unread::new(escalation(10, 2)));
        c.stage(2);
        assert!(written(&mut c).is_empty());
        c.forget(&[2]);
        assert!(!c.snapshots.is_staged(2));
    }

    #[test]
    fn a_round_writes_one_partition_at_a_time_each_once_the_one_before_is_acknowledged() {
        let settings = Settings::default();
        let mut c = Core::new(&settings);
        c.assigned = [1, 2, 3, 4].into();
        for p in [1, 2, 4] {
            c.positions.set_next((Src::Events, p), 10);
            c.positions.set_next((Src::Alerts, p), 6 + i64::from(p));
        }
        assert!(written(&mut c).is_empty(), "no round started");
        c.snapshots.start_round(c.assigned.clone());
        let mut on_its_way = Vec::new();
        let _ = c.snapshot_round(|p, _| {
            on_its_way.push(p);
            Ok(write_on_its_way())
        });
        assert_eq!(on_its_way, [1]);
        assert!(
            c.snapshot_round(|_, _| unreachable!()).is_empty(),
            "partition 1's write on its way"
        );
        // A tick while the round goes on does not start it again.
        c.snapshots.start_round(c.assigned.clone());
        c.snapshots.acknowledge_all();
        // Partition 2's snapshot waits for an escalation: the round waits
        // there.
        c.unread.push(Unread::new(escalation(7, 2)));
        assert!(written(&mut c).is_empty());
        assert!(written(&mut c).is_empty());
        c.unread.clear();
        assert_eq!(written(&mut c), [8]);
        // Partition 3 has nothing to snapshot (never read): passed.
        assert_eq!(written(&mut c), [10]);
        assert!(written(&mut c).is_empty(), "the round is over");
        assert!(c.snapshots.round_over());
        // A revoke takes a partition out of the round.
        c.snapshots.start_round(c.assigned.clone());
        c.forget(&[1]);
        assert_eq!(written(&mut c), [8]);
    }
}
