//! The case tracker, the consumer driver's second application: a consumer
//! of its own, in group `<group_id>-cases`, reads the alerts topic back
//! and the case-events topic (co-partitioned: partition *i* of both goes
//! to one member, by the range assignor), drives the pure tracker
//! (`crate::cases`), and sends escalations and dead letters.
//!
//! Offsets, as in the main pipeline: a record's offset is committed only
//! once what it caused is acknowledged (a repeat detractor's escalation, a
//! refused event's dead letter), and an event waiting for its alert holds
//! back its partition's offsets until it is applied or dead-lettered.
//! Escalations that fall due are not tied to a record: a partition's
//! snapshot is written only once the escalations on their way when it was
//! taken are acknowledged (`snapshot`), so a restored snapshot never marks
//! an unsent escalation as sent (after a crash one may be sent again, with
//! the same escalation_id). Case events far ahead of their alerts stop
//! until the alerts catch up (`brake`).
//!
//! The loop's state (`records::Shell`) has an impl block per concern, in
//! that concern's file: records, due checks and escalations (`records`),
//! the outage (`outage`), case events held back (`brake`), how far both
//! topics are read (`watermark`); the driver's arms are `impl App` here.
//! The shared state (`Core`) likewise: offsets and hand-over here, what a
//! snapshot holds and when it goes in `snapshot`.
//!
//! State: per alerts partition, a `CasesPartitionSnapshot` on the state
//! topic (key `<alerts topic>/<partition>`), restored on assignment; the
//! records between it and the committed offsets are replayed without
//! escalations, dead letters or metrics. Escalations that fall due wait
//! until every assigned partition has caught up with both topics, so a
//! contact already recorded is never escalated for being read late.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, OwnedMessage};

use crate::cases::{Escalation, Tracker};
use crate::clock::Clock;
use crate::config::Settings;
use crate::consumer::driver::{App, Input, drive};
use crate::consumer::handover::{Handed, Handover};
use crate::consumer::holds::Hold;
use crate::consumer::ledger::{Ledger, Step};
use crate::consumer::positions::Positions;
use crate::consumer::produce::{Delivery, producer};
use crate::consumer::ready::{open_store, wait_until_ready};
use crate::consumer::snapshots::Snapshots;
use crate::kafka::{Health, RenewableProducer};
use crate::shutdown::Shutdown;
use crate::state::StateStore;

mod brake;
mod context;
pub(crate) use context::FETCH;
mod outage;
mod readback;
pub(crate) use readback::READBACK_FETCH;
mod records;
mod setup;
mod snapshot;
mod watermark;

/// Which topic a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Src {
    Alerts = 0,
    Events = 1,
}

impl Src {
    /// The topic it names in `settings`.
    fn topic(self, settings: &Settings) -> &str {
        match self {
            Src::Alerts => &settings.alerts_topic,
            Src::Events => &settings.cases.case_events_topic,
        }
    }

    /// Which of the two a record's `topic` is.
    fn of(topic: &str, settings: &Settings) -> Src {
        if topic == settings.alerts_topic {
            Src::Alerts
        } else {
            Src::Events
        }
    }
}

/// What a record caused, held in its place in the ledger.
enum Out {
    /// An escalation (a repeat detractor's) or a dead letter on its way.
    Sent(Delivery),
    /// An event waiting for its alert.
    Held(Arc<Mutex<Slot>>),
}

/// Where a waiting event stands.
enum Slot {
    /// In the tracker: done when the tracker lets go of it (applied when
    /// its alert came; counted then, by its state).
    Waiting(crate::pb::CaseState),
    /// On its way: the dead letter of an event whose alert never came.
    Sending(Delivery),
    /// Its alert never came, during a replay (dead-lettered before).
    Done,
}

/// The tracker's handle on a waiting event.
struct Held {
    record: OwnedMessage,
    slot: Arc<Mutex<Slot>>,
    live: bool,
}

/// A due check's escalation waiting for its alert to be read back.
struct Unread {
    since: Instant,
    esc: Escalation,
    /// The record whose reading caused it (a late contact's event, or the
    /// alert that let a waiting late contact apply), or for an escalation
    /// at its due time, the next case event: no offset from it on is
    /// committed until the escalation is delivered, so whoever takes the
    /// partition after a crash or a rebalance reads that record again live
    /// and escalates again. (Without it, the commit would pass the
    /// contact, the next owner would replay it without effects, and the
    /// escalation would be lost.)
    holds: Option<(Src, i64)>,
}

impl Unread {
    fn new(esc: Escalation) -> Unread {
        Unread {
            since: Instant::now(),
            esc,
            holds: None,
        }
    }

    fn holding(esc: Escalation, cause: (Src, i64)) -> Unread {
        Unread {
            holds: Some(cause),
            ..Unread::new(esc)
        }
    }
}

/// An escalation on its way, with the record it holds back (see
/// `Unread::holds`).
struct Escalating {
    partition: i32,
    /// The case and level it escalates (what a snapshot waits for).
    alert: crate::cases::AlertKey,
    level: u8,
    delivery: Delivery,
    holds: Option<(Src, i64)>,
}

/// The shell's state, shared with the rebalance callback (which runs on
/// the loop's task, inside `recv`).
struct Core {
    tracker: Tracker<Held>,
    /// Per source topic.
    ledgers: [Ledger<Out>; 2],
    /// Per (topic, partition), the next offset after the last record
    /// handled, and the realign of one restored from a snapshot (records
    /// before its offset are in the snapshot; a start still inside its
    /// batch goes further back).
    positions: Positions<(Src, i32)>,
    /// The timestamp of the last record handled per (topic, partition)
    /// (see `watermark`).
    read_at: BTreeMap<(Src, i32), i64>,
    /// Records below this were handled by a previous owner: replayed into
    /// the tracker without effects.
    replay_until: BTreeMap<(Src, i32), i64>,
    /// The end of each (topic, partition) at assignment: until the
    /// consumer's position reaches it, due escalations wait.
    catching_up: BTreeMap<(Src, i32), i64>,
    assigned: BTreeSet<i32>,
    /// Escalations sent, per alerts partition, not acknowledged yet.
    escalating: Vec<Escalating>,
    /// Escalations whose alert is not read back yet.
    unread: Vec<Unread>,
    /// Snapshot rounds (one partition at a time), snapshots staged until
    /// the escalations on their way when they were taken are delivered (a
    /// restored snapshot never marks an unsent escalation as sent), their
    /// writes.
    snapshots: Snapshots<snapshot::Waits>,
    /// The alerts and case-events topics (`Src`).
    topics: [String; 2],
}

/// The tracker's state, locked (`crate::consumer::lock`: a poisoned lock
/// ends the process with status 70).
fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    crate::consumer::lock(core, "case tracker")
}

impl Core {
    fn live(&self, src: Src, p: i32, offset: i64) -> bool {
        self.replay_until
            .get(&(src, p))
            .is_none_or(|u| offset >= *u)
    }

    /// Asks after every delivery, sends failed ones again; `settle`: also
    /// those behind each partition's head (see `Ledger::settle`).
    fn drain(&mut self, producer: &RenewableProducer, settle: bool) {
        for ledger in &mut self.ledgers {
            ledger.drain(|out| step_out(out, producer));
            if settle {
                ledger.settle(|out| step_out(out, producer));
            }
        }
        self.escalating
            .retain_mut(|e| e.delivery.step(producer) != Step::Done);
    }

    /// Records on their way to the broker (escalations, dead letters):
    /// what a stop waits for. Events waiting for their alert are not: they
    /// stay uncommitted and are read again by the next owner.
    fn sending(&self) -> usize {
        let sent = |o: &Out| match o {
            Out::Sent(_) => true,
            Out::Held(slot) => slot.lock().is_ok_and(|s| matches!(*s, Slot::Sending(_))),
        };
        self.ledgers[0].count_pending(sent)
            + self.ledgers[1].count_pending(sent)
            + self.escalating.len()
    }

    /// Forgets everything of `partitions` (revoked, or their logs gone):
    /// cases, offsets, replay and catch-up marks, escalations not sent.
    fn forget(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.tracker.drop_partition(*p);
            for src in [Src::Alerts, Src::Events] {
                self.ledgers[src as usize].forget(*p);
                self.positions.forget((src, *p));
                self.read_at.remove(&(src, *p));
                self.replay_until.remove(&(src, *p));
                self.catching_up.remove(&(src, *p));
            }
        }
        self.unread
            .retain(|u| !partitions.contains(&u.esc.partition));
        self.escalating
            .retain(|e| !partitions.contains(&e.partition));
        for p in partitions {
            self.snapshots.forget(*p);
        }
    }

    fn new(settings: &Settings) -> Core {
        Core {
            tracker: Tracker::new(settings.cases.tracker()),
            ledgers: [Ledger::default(), Ledger::default()],
            positions: Positions::default(),
            read_at: BTreeMap::new(),
            replay_until: BTreeMap::new(),
            catching_up: BTreeMap::new(),
            assigned: BTreeSet::new(),
            escalating: Vec::new(),
            unread: Vec::new(),
            snapshots: Snapshots::default(),
            topics: [
                settings.alerts_topic.clone(),
                settings.cases.case_events_topic.clone(),
            ],
        }
    }

    /// The first offset of (topic, partition) an undelivered escalation
    /// holds back from the commit (see `Unread::holds`).
    fn held(&self, src: Src, p: i32) -> Option<i64> {
        let unread = self
            .unread
            .iter()
            .filter(|u| u.esc.partition == p)
            .map(|u| u.holds);
        let sending = self
            .escalating
            .iter()
            .filter(|e| e.partition == p)
            .map(|e| e.holds);
        unread
            .chain(sending)
            .flatten()
            .filter(|(s, _)| *s == src)
            .map(|(_, o)| o)
            .min()
    }

    /// Done offsets of both topics, as Kafka wants them.
    fn offsets(&self, partitions: Option<&[i32]>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (src, topic) in [Src::Alerts, Src::Events].into_iter().zip(&self.topics) {
            for (p, off) in self.ledgers[src as usize].committable(partitions, true) {
                let off = self.held(src, p).map_or(off, |h| h.min(off));
                let _ = tpl.add_partition_offset(topic, p, Offset::Offset(off));
            }
        }
        tpl
    }
}

/// Where what a record caused stands.
fn step_out(out: &mut Out, producer: &RenewableProducer) -> Step {
    match out {
        Out::Sent(d) => d.step(producer),
        Out::Held(slot) => {
            let alone = Arc::strong_count(slot) == 1;
            let Ok(mut s) = slot.lock() else {
                return Step::Waiting;
            };
            match &mut *s {
                Slot::Waiting(state) if alone => {
                    metrics::counter!(crate::metrics::CASE_EVENTS_TOTAL, "state" => records::state_label(*state))
                        .increment(1);
                    *s = Slot::Done;
                    Step::Done
                }
                Slot::Waiting(_) => Step::Waiting,
                Slot::Done => Step::Done,
                Slot::Sending(d) => d.step(producer),
            }
        }
    }
}

/// Runs case tracking until `shutdown` fires (returns at once when it is
/// off). An error (topics not co-partitioned, not creatable) stops the
/// process with a message naming the topics and `--cases off`.
pub async fn run(
    settings: Settings,
    clock: Arc<dyn Clock>,
    mut shutdown: Shutdown,
    health: Arc<Health>,
    view: Arc<std::sync::RwLock<crate::metrics::View>>,
) -> crate::error::Result<()> {
    if !settings.cases.enabled {
        return Ok(());
    }
    let s = settings.clone();
    let ready = wait_until_ready("case tracking", &mut shutdown, move || setup::prepare(&s));
    let Some(n) = ready.await? else {
        return Ok(());
    };
    tracing::info!(
        alerts = %settings.alerts_topic,
        case_events = %settings.cases.case_events_topic,
        escalations = %settings.cases.escalations_topic,
        partitions = n,
        group = %format!("{}-cases", settings.group_id),
        "case tracking on"
    );
    crate::metrics::cases_start_at_zero();
    // Its own Health: the readiness and broker gauges are the main
    // pipeline's.
    let producer = producer(
        &settings.brokers,
        &settings.kafka,
        Health::new(),
        false,
        "the case tracker's producer",
    )?;
    let opened = open_store(&settings, &settings.alerts_topic, &health, &mut shutdown);
    let Some(store) = opened.await else {
        return Ok(());
    };
    let reader = Arc::new(readback::Reader::new(&settings, health.clone())?);
    let (readbacks, read_back) = tokio::sync::mpsc::unbounded_channel();
    let core = Arc::new(Mutex::new(Core::new(&settings)));
    let handover = Arc::new(Handover::new("case tracker", settings.shutdown_timeout));
    let beat = health
        .heartbeats
        .beat("case tracker", std::time::Instant::now());
    let consumer = context::subscribe(&settings, &core, &producer, &store, &handover, beat)?;
    let outputs = crate::consumer::outputs::Outputs::new(&settings);
    let shell = records::Shell {
        settings,
        clock,
        core,
        producer,
        store,
        reader,
        readbacks,
        reading: false,
        health,
        holds: consumer.context().holds.clone(),
        braked: BTreeSet::new(),
        gauges: BTreeSet::new(),
        view,
        summary: crate::metrics::CaseSummary::default(),
        outputs,
        handover,
    };
    let snapshot_interval = shell.settings.snapshot_interval;
    drive(
        shell,
        Arc::new(consumer),
        read_back,
        shutdown,
        snapshot_interval,
    )
    .await;
    Ok(())
}

/// The case tracker on the consumer driver.
impl App for records::Shell {
    const NAME: &'static str = "case tracker";
    const BATCH: usize = 1;
    type Event = records::Found;

    async fn record(&mut self, msg: &BorrowedMessage<'_>, consumer: &Input, stop: &Shutdown) {
        self.take(msg, consumer, stop).await;
    }

    fn room(&self) -> bool {
        room(&self.core)
    }

    fn after_record(&mut self, consumer: &Input) {
        self.brake_events(consumer, false);
    }

    /// Held back: what is done behind a waiting record no longer counts
    /// (else a case event waiting minutes for its alert could hold
    /// fetching paused, and so its alert unread, until its grace ran out).
    fn acknowledge(&mut self, _consumer: &Input, held: bool) {
        let purge = {
            let mut c = lock(&self.core);
            c.drain(&self.producer, held);
            let store = &self.store;
            snapshot::said(c.snapshot_round(|p, bytes| store.write(p, bytes)));
            c.snapshots.round_over()
        };
        if purge {
            crate::consumer::memory::release_free_memory();
        }
    }

    fn cut_off(&self) -> bool {
        self.holds.has(Hold::CutOff)
    }

    fn brokers_lost(&mut self, consumer: &Input) {
        self.pause(consumer);
    }

    fn refetch(&mut self, consumer: &Input) {
        self.refetch_all(consumer);
    }

    fn snapshots_due(&mut self) {
        self.snapshots();
    }

    async fn tick(&mut self, consumer: &mut Input, stop: &Shutdown) {
        self.every_second(consumer, stop).await;
    }

    async fn event(&mut self, found: records::Found, stop: &Shutdown) {
        self.readback_done(found, stop).await;
    }

    /// Deliveries waited for (bounded), the final commit and snapshots.
    async fn stop(self, consumer: &Input) {
        let (core, store) = (&*self.core, &*self.store);
        self.handover
            .stop(core, consumer.as_ref(), &self.producer, store);
        tracing::info!("case tracker stopped");
    }
}

/// Most deliveries awaiting acknowledgement before reading pauses.
const MAX_PENDING: usize = 10_000;

fn room(core: &Mutex<Core>) -> bool {
    let c = lock(core);
    room_for(
        c.ledgers[0].in_flight() + c.ledgers[1].in_flight(),
        c.tracker.orphans(),
        c.escalating.len(),
    )
}

/// Whether reading goes on with `in_flight` records not yet done, of
/// which `orphans` are case events waiting for their alert. Those do not
/// count: only reading on brings their alerts (counting them would stall
/// the tracker for good once enough of them wait), and they
/// have their own bounds (`--orphan-grace`, `max_orphans`).
fn room_for(in_flight: usize, orphans: usize, escalating: usize) -> bool {
    in_flight.saturating_sub(orphans) + escalating < MAX_PENDING
}

/// The tracker's state as a revoke and the stop see it.
impl Handed for Core {
    fn drain(&mut self, producer: &RenewableProducer, settle: bool) {
        Core::drain(self, producer, settle);
    }

    /// Escalations and dead letters on their way, of every partition:
    /// events waiting for their alert are not waited for (they stay
    /// uncommitted and are read again by the next owner).
    fn waiting(&self, _partitions: Option<&[i32]>) -> bool {
        self.sending() > 0
    }

    fn offsets(&self, partitions: Option<&[i32]>) -> TopicPartitionList {
        Core::offsets(self, partitions)
    }

    fn final_snapshots(
        &mut self,
        store: &StateStore,
        partitions: Option<&[i32]>,
        deadline: Instant,
    ) {
        Core::final_snapshots(self, store, partitions, deadline);
    }

    fn forget(&mut self, partitions: &[i32]) {
        Core::forget(self, partitions);
        for p in partitions {
            self.assigned.remove(p);
        }
        tracing::info!(partitions = ?partitions, "case tracker partitions revoked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A level-1 escalation of a late contact.
    pub(super) fn escalation(alert: u128, partition: i32) -> Escalation {
        Escalation {
            alert,
            level: 1,
            reason: crate::cases::EscalationReason::ContactSlaMissed,
            previous: None,
            segment: crate::cases::SegmentId(0),
            priority: crate::pb::AlertPriority::High,
            opened_at_ms: 0,
            due_at_ms: 1,
            state: crate::pb::CaseState::Contacted,
            partition,
            alert_offset: 3,
        }
    }

    /// An escalation handed to the producer, not delivered yet.
    pub(super) fn sent() -> Delivery {
        Delivery::Retry(OwnedMessage::new(
            None,
            None,
            "nps-case-escalations".into(),
            rdkafka::Timestamp::NotAvailable,
            0,
            0,
            None,
        ))
    }

    #[test]
    fn a_late_contact_s_escalation_holds_its_event_back_from_the_commit() {
        let settings = Settings::default();
        let mut c = Core::new(&settings);
        for off in 0..10 {
            c.ledgers[Src::Events as usize].read(2, off, None);
            c.ledgers[Src::Alerts as usize].read(2, off, None);
        }
        for l in &mut c.ledgers {
            l.drain(|_| Step::Done);
        }
        let esc = escalation(7, 2);
        let committed = |c: &Core| {
            let tpl = c.offsets(None);
            let at = |topic: &str| tpl.find_partition(topic, 2).map(|e| e.offset());
            (
                at(&settings.cases.case_events_topic),
                at(&settings.alerts_topic),
            )
        };
        assert_eq!(
            committed(&c),
            (Some(Offset::Offset(10)), Some(Offset::Offset(10)))
        );
        // The contact at events offset 6 was late: until its escalation
        // is delivered, the commit stops at that event (alerts go on).
        c.unread.push(Unread::holding(esc, (Src::Events, 6)));
        assert_eq!(
            committed(&c),
            (Some(Offset::Offset(6)), Some(Offset::Offset(10)))
        );
        // Read back and on its way: still held.
        let u = c.unread.pop().unwrap();
        c.escalating.push(Escalating {
            partition: 2,
            alert: u.esc.alert,
            level: u.esc.level,
            delivery: sent(),
            holds: u.holds,
        });
        assert_eq!(committed(&c).0, Some(Offset::Offset(6)));
        // Another partition's escalation holds nothing here.
        c.escalating[0].partition = 3;
        assert_eq!(committed(&c).0, Some(Offset::Offset(10)));
    }

    #[test]
    fn events_waiting_for_their_alert_never_stop_reading() {
        // However many wait, the alerts they wait for are still read.
        assert!(room_for(250_000, 250_000, 0));
        assert!(room_for(MAX_PENDING + 5, MAX_PENDING, 0));
        // Deliveries and escalations still do.
        assert!(!room_for(MAX_PENDING + 5, 5, 0));
        assert!(!room_for(MAX_PENDING, 0, 0));
        assert!(!room_for(100, 100, MAX_PENDING));
        assert!(room_for(MAX_PENDING - 1, 0, 0));
    }
}
