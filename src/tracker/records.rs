//! What the case tracker's loop does with a record, and every second.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};

use super::readback::Reader;
use super::{Core, Held, Out, Slot, Src, Unread, lock};
use crate::cases::escalation::{self, AlertReadError, alert_in, decode_alert};
use crate::cases::event::decode_event;
use crate::cases::{Applied, Escalation, EscalationReason, Opened, SegmentId, alert_id};
use crate::clock::Clock;
use crate::config::Settings;
use crate::consumer::context::ConsumerCtx;
use crate::consumer::outputs::Outputs;
use crate::consumer::positions::Take;
use crate::consumer::produce::{Delivery, Outbox};
use crate::consumer::seek;
use crate::kafka::RenewableProducer;
use crate::metrics as m;
use crate::pb::{AlertPriority, CaseState, DetractorAlert};
use crate::shutdown::Shutdown;
use crate::state::StateStore;

/// Alerts read back, by (partition, offset).
pub(super) type Found = std::collections::HashMap<(i32, i64), DetractorAlert>;

/// How long an escalation waits for its alert to be read back before it
/// goes out without the alert's content.
const READBACK_PATIENCE: Duration = Duration::from_secs(60);

/// The loop's state, owned by its task.
pub(super) struct Shell {
    pub(super) settings: Settings,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) core: Arc<Mutex<Core>>,
    pub(super) producer: Arc<RenewableProducer>,
    pub(super) store: Arc<StateStore>,
    pub(super) reader: Arc<Reader>,
    /// Where read-backs report, and whether one is under way.
    pub(super) readbacks: tokio::sync::mpsc::UnboundedSender<Found>,
    pub(super) reading: bool,
    /// The main pipeline's view of the brokers (this consumer pauses when
    /// they are gone, as the main one does).
    pub(super) health: Arc<crate::kafka::Health>,
    /// Why fetching is held paused (cut off, deliveries behind), shared
    /// with the consumer's rebalance callback.
    pub(super) holds: crate::consumer::holds::Holds,
    /// Partitions whose case events are held back (`brake`).
    pub(super) braked: BTreeSet<i32>,
    /// Label sets of the open/overdue gauges set last time (to zero those
    /// that are gone).
    pub(super) gauges: BTreeSet<(SegmentId, i32)>,
    /// The demo's totals, published to `view` every second.
    pub(super) view: Arc<std::sync::RwLock<crate::metrics::View>>,
    pub(super) summary: crate::metrics::CaseSummary,
    /// Where escalations and dead letters go.
    pub(super) outputs: Outputs,
    /// Revokes and the stop (shared with the rebalance callback).
    pub(super) handover: Arc<crate::consumer::handover::Handover>,
}

fn priority_label(p: AlertPriority) -> &'static str {
    match p {
        AlertPriority::Critical => "critical",
        AlertPriority::High => "high",
        AlertPriority::Normal => "normal",
        AlertPriority::Unspecified => "unspecified",
    }
}

pub(super) fn state_label(s: CaseState) -> &'static str {
    match s {
        CaseState::Unspecified => "unspecified",
        CaseState::Acknowledged => "acknowledged",
        CaseState::ContactAttempted => "contact_attempted",
        CaseState::Contacted => "contacted",
        CaseState::Resolved => "resolved",
        CaseState::Unreachable => "unreachable",
        CaseState::Reopened => "reopened",
    }
}

impl Shell {
    fn out<'a>(&'a self, stop: &'a Shutdown) -> Outbox<'a> {
        Outbox {
            producer: &self.producer,
            stop,
            outputs: &self.outputs,
        }
    }

    /// One record of either topic.
    pub(super) async fn take(
        &mut self,
        msg: &BorrowedMessage<'_>,
        consumer: &StreamConsumer<ConsumerCtx>,
        stop: &Shutdown,
    ) {
        let (p, off) = (msg.partition(), msg.offset());
        let src = Src::of(msg.topic(), &self.settings);
        let live = {
            let mut c = lock(&self.core);
            match c.positions.record((src, p), off) {
                Take::Yes => {}
                Take::Gap { want } => seek::gap(msg.topic(), p, want, off),
                Take::Skip => {
                    let back = c.positions.seeks_waiting();
                    drop(c);
                    if back {
                        self.further_back(consumer);
                    }
                    return;
                }
            }
            c.live(src, p, off)
        };
        let out = match src {
            Src::Alerts => self.alert(msg, p, off, live, stop).await,
            Src::Events => self.event(msg, p, live, stop).await,
        };
        let mut c = lock(&self.core);
        if live {
            c.ledgers[src as usize].read(p, off, out);
        }
        c.positions.handled((src, p), off);
        if let Some(ts) = msg.timestamp().to_millis() {
            c.read_at.insert((src, p), ts);
        }
        let sla = c.tracker.take_sla();
        drop(c);
        if live {
            self.count_sla(sla);
        }
    }

    /// Counts contact SLAs decided.
    fn count_sla(&self, decided: Vec<(SegmentId, AlertPriority, bool)>) {
        if decided.is_empty() {
            return;
        }
        let c = lock(&self.core);
        for (seg, prio, met) in decided {
            let (product, region) = c.tracker.segment_name(seg);
            metrics::counter!(m::CASES_DUE_TOTAL,
                "product" => product.to_string(),
                "region" => region.to_string(),
                "priority" => priority_label(prio),
                "sla" => if met { "met" } else { "missed" })
            .increment(1);
        }
    }

    /// A revision of the response behind a case: withdrawn, it closes the
    /// case; a detractor again, it opens it again. Whether the alert was
    /// one (and is done with).
    fn revised(
        &mut self,
        alert: &DetractorAlert,
        input: &crate::cases::AlertIn<'_>,
        off: i64,
        live: bool,
    ) -> bool {
        if !alert.withdrawn && alert.revision == 0 {
            return false;
        }
        let applied = {
            let mut c = lock(&self.core);
            if alert.withdrawn {
                c.tracker.withdraw(input.alert, input.emitted_at_ms)
            } else {
                c.tracker.reinstate(input.alert, input.emitted_at_ms)
            }
        };
        if live && let Some(a) = &applied {
            self.count_applied(a, (Src::Alerts, off));
        }
        alert.withdrawn || applied.is_some()
    }

    async fn alert(
        &mut self,
        msg: &BorrowedMessage<'_>,
        p: i32,
        off: i64,
        live: bool,
        stop: &Shutdown,
    ) -> Option<Out> {
        let alert = msg
            .payload()
            .ok_or(AlertReadError::Undecodable)
            .and_then(decode_alert);
        let input = alert
            .as_ref()
            .map_err(|e| *e)
            .and_then(|a| alert_in(a, p, off));
        let input = match input {
            Ok(i) => i,
            Err(e) => {
                let reason = match e {
                    AlertReadError::Undecodable => "undecodable",
                    AlertReadError::AlertId => "alert_id",
                    AlertReadError::EmittedAt => "emitted_at",
                };
                if live {
                    metrics::counter!(m::CASE_ALERTS_SKIPPED_TOTAL, "reason" => reason)
                        .increment(1);
                }
                return None;
            }
        };
        if let Ok(a) = &alert
            && self.revised(a, &input, off, live)
        {
            return None;
        }
        let (opened, released) = {
            let mut c = lock(&self.core);
            let opened = c.tracker.open(&input);
            (opened, c.tracker.take_released())
        };
        let Opened::New { repeat, applied } = opened else {
            return None;
        };
        // Events that waited for this alert: what they cause counts when
        // they were read live, even if this alert is replayed (after a
        // restore, a late contact read live before its alert is replayed
        // would otherwise lose its escalation); each
        // such escalation holds back the record read live that caused it
        // (the event, else this alert).
        for (a, held) in applied.iter().zip(&released) {
            if held.live {
                self.count_applied(a, (Src::Events, held.record.offset()));
            } else if live {
                self.count_applied(a, (Src::Alerts, off));
            }
        }
        drop(released);
        if !live {
            return None;
        }
        let esc = repeat?;
        let alert = alert.ok()?;
        // Sent at once, from the alert at hand and the previous alert's id
        // the tracker remembers with the customer; this alert's offset is
        // held until it is acknowledged.
        Some(Out::Sent(self.escalate(&esc, &alert, stop).await))
    }

    async fn event(
        &mut self,
        msg: &BorrowedMessage<'_>,
        p: i32,
        live: bool,
        stop: &Shutdown,
    ) -> Option<Out> {
        let now = self.clock.now_ms();
        let headers = msg.headers();
        let headers = headers
            .iter()
            .flat_map(|h| h.iter())
            .map(|h| (h.key, h.value));
        match decode_event(msg.payload(), headers, now, &self.settings.limits) {
            Err(rejection) => {
                if !live {
                    return None;
                }
                let reason = rejection.reason();
                metrics::counter!(m::EVENTS_REJECTED_TOTAL, "reason" => reason).increment(1);
                tracing::debug!(
                    partition = p,
                    offset = msg.offset(),
                    reason,
                    "case event refused"
                );
                let out = self.out(stop);
                let dead = out
                    .outputs
                    .dead_letter(msg, reason, &rejection.to_string(), now);
                let d = out.output(dead).await;
                Some(Out::Sent(d))
            }
            Ok((msg_in, mut ev)) => {
                ev.root_cause = lock(&self.core)
                    .tracker
                    .config()
                    .root_cause(&msg_in.root_cause);
                let slot = Arc::new(Mutex::new(Slot::Waiting(ev.state)));
                let held = Held {
                    record: msg.detach(),
                    slot: slot.clone(),
                    live,
                };
                let applied = lock(&self.core).tracker.event(p, &ev, held, now);
                match applied {
                    // Counted when applied (or dead-lettered instead).
                    Applied::Waiting => Some(Out::Held(slot)),
                    a => {
                        if live {
                            metrics::counter!(m::CASE_EVENTS_TOTAL, "state" => state_label(ev.state))
                                .increment(1);
                            self.count_applied(&a, (Src::Events, msg.offset()));
                        }
                        None
                    }
                }
            }
        }
    }

    /// Counts what an applied event did.
    /// `cause`: the record being read (see `Unread::holds`).
    fn count_applied(&mut self, a: &Applied, cause: (Src, i64)) {
        match a {
            Applied::Stale => metrics::counter!(m::CASE_EVENTS_STALE_TOTAL).increment(1),
            Applied::Waiting => {}
            Applied::Moved {
                segment,
                priority,
                first_contact,
                closed,
                root_cause,
                missed,
            } => {
                let prio = priority_label(*priority);
                let late: Vec<_> = missed
                    .iter()
                    .flatten()
                    .map(|e| Unread::holding(*e, cause))
                    .collect();
                lock(&self.core).unread.extend(late);
                if let Some((ms, _)) = first_contact {
                    metrics::histogram!(m::CASE_FIRST_CONTACT, "priority" => prio)
                        .record(*ms as f64 / 1000.0);
                }
                if let Some((how, met)) = closed {
                    self.summary.closed += 1;
                    self.summary.closed_within_sla += u64::from(*met);
                    let c = lock(&self.core);
                    let (product, region) = c.tracker.segment_name(*segment);
                    metrics::counter!(m::CASES_CLOSED_TOTAL,
                        "product" => product.to_string(),
                        "region" => region.to_string(),
                        "priority" => prio,
                        "outcome" => how.as_str(),
                        "sla" => if *met { "met" } else { "missed" })
                    .increment(1);
                    if let Some(cause) = c.tracker.config().root_cause_name(*root_cause) {
                        let key = (product.to_string(), region.to_string(), cause.to_string());
                        metrics::counter!(m::CASE_ROOT_CAUSES_TOTAL,
                            "product" => key.0.clone(),
                            "region" => key.1.clone(),
                            "root_cause" => key.2.clone())
                        .increment(1);
                        if let Ok(mut v) = self.view.write() {
                            *v.root_causes.entry(key).or_default() += 1;
                        }
                    }
                }
            }
        }
    }

    /// Sends an escalation built from the alert it is about.
    async fn escalate(
        &mut self,
        esc: &Escalation,
        alert: &DetractorAlert,
        stop: &Shutdown,
    ) -> Delivery {
        let now = self.clock.now_ms();
        let (product, region) = {
            let c = lock(&self.core);
            let (p, r) = c.tracker.segment_name(esc.segment);
            (p.to_string(), r.to_string())
        };
        let record = escalation::build(esc, alert, &product, &region, now);
        self.summary.escalations += 1;
        if esc.reason == EscalationReason::RepeatDetractor {
            metrics::counter!(m::REPEAT_DETRACTORS_TOTAL, "product" => product.clone(), "region" => region.clone())
                .increment(1);
        }
        metrics::counter!(m::CASE_ESCALATIONS_TOTAL,
            "product" => product,
            "region" => region,
            "priority" => priority_label(esc.priority),
            "reason" => esc.reason.as_str(),
            "level" => esc.level.to_string())
        .increment(1);
        let out = self.out(stop);
        out.output(out.outputs.emit(&record)).await
    }

    /// Starts realigning partitions further before their snapshots, as
    /// their positions ask (`Positions::seeks`).
    fn further_back(&mut self, consumer: &StreamConsumer<ConsumerCtx>) {
        let seeks = lock(&self.core).positions.seeks(Instant::now());
        let settings = &self.settings;
        let failed = seek::further_back(consumer, seeks, |(src, p)| (src.topic(settings), p));
        for key in failed {
            lock(&self.core).positions.realign(key, None);
        }
    }

    /// Every second: catching up, orphans, due escalations, the commit and
    /// the gauges.
    pub(super) async fn every_second(
        &mut self,
        consumer: &StreamConsumer<ConsumerCtx>,
        stop: &Shutdown,
    ) {
        if !self.brokers_reachable(consumer) {
            return;
        }
        let now = self.clock.now_ms();
        self.further_back(consumer);
        self.caught_up(consumer);
        self.report_lag(consumer);
        self.brake_events(consumer, true);
        // Orphans wait for the alerts read so far, escalations for the case
        // events (`watermark`).
        let alerts_read = self.read_up_to(consumer, Src::Alerts, now);
        let events_read = self.read_up_to(consumer, Src::Events, now);
        let expired = lock(&self.core).tracker.expire_orphans(alerts_read);
        for held in expired {
            let dead = if held.live {
                metrics::counter!(m::EVENTS_REJECTED_TOTAL, "reason" => "unknown_alert")
                    .increment(1);
                let detail = format!(
                    "no alert with this alert_id was read within --orphan-grace ({})",
                    humantime::format_duration(self.settings.cases.orphan_grace)
                );
                let out = self.out(stop);
                let dead = out
                    .outputs
                    .dead_letter(&held.record, "unknown_alert", &detail, now);
                Slot::Sending(out.output(dead).await)
            } else {
                Slot::Done
            };
            if let Ok(mut s) = held.slot.lock() {
                *s = dead;
            }
        }
        {
            let mut c = lock(&self.core);
            if c.catching_up.is_empty() {
                // Each holds back the case events read from here on: the
                // next owner after a crash or a rebalance replays those
                // before it without effects, and must see the case still
                // unescalated, so that it escalates again (at its own due
                // check, or at a late contact read live).
                let due = c.tracker.due(events_read);
                let unread: Vec<Unread> = due
                    .into_iter()
                    .map(|esc| match c.positions.next((Src::Events, esc.partition)) {
                        Some(at) => Unread::holding(esc, (Src::Events, at)),
                        None => Unread::new(esc),
                    })
                    .collect();
                c.unread.extend(unread);
            }
            let sla = c.tracker.take_sla();
            drop(c);
            self.count_sla(sla);
        }
        self.start_readback();
        {
            let c = lock(&self.core);
            let tpl = c.offsets(None);
            if tpl.count() > 0
                && let Err(e) = consumer.commit(&tpl, CommitMode::Async)
            {
                tracing::debug!(error = %e, "case tracker commit");
            }
        }
        self.publish();
    }

    /// The tracker's lag on each partition it holds: the log's end as
    /// librdkafka last heard it (no request) less the consumer's position,
    /// or less the log's start while nothing was read from it (an empty
    /// partition: 0); a partition not fetched yet is left out until it is.
    fn report_lag(&self, consumer: &StreamConsumer<ConsumerCtx>) {
        let Ok(positions) = consumer.position() else {
            return;
        };
        let lags = positions
            .elements()
            .iter()
            .filter_map(|e| {
                let (start, end) =
                    crate::kafka::cached_watermarks(consumer.client(), e.topic(), e.partition())?;
                let from = match e.offset() {
                    rdkafka::Offset::Offset(pos) => pos,
                    _ => start.max(0),
                };
                Some(((e.topic().to_string(), e.partition()), (end - from).max(0)))
            })
            .collect();
        self.health.set_case_lags(lags);
    }

    /// Clears the partitions whose consumer position reached the end seen
    /// at assignment.
    fn caught_up(&self, consumer: &StreamConsumer<ConsumerCtx>) {
        let mut c = lock(&self.core);
        if c.catching_up.is_empty() {
            return;
        }
        let Ok(positions) = consumer.position() else {
            return;
        };
        tracing::debug!(positions = ?positions, waiting = ?c.catching_up, "case tracker catching up");
        for e in positions.elements() {
            let src = Src::of(e.topic(), &self.settings);
            if let rdkafka::Offset::Offset(pos) = e.offset()
                && c.catching_up
                    .get(&(src, e.partition()))
                    .is_some_and(|end| pos >= *end)
            {
                c.catching_up.remove(&(src, e.partition()));
            }
        }
        let parts: BTreeSet<i32> = c.catching_up.keys().map(|(_, p)| *p).collect();
        metrics::gauge!(m::CASE_REPLAYING).set(parts.len() as f64);
        if parts.is_empty() {
            tracing::info!(partitions = ?c.assigned, "case tracker caught up");
        }
    }

    /// Starts reading back the alerts of the due escalations, on a thread
    /// of its own (a slow broker must not hold up the loop, which would
    /// delay the events that stop later escalations); one read at a time.
    fn start_readback(&mut self) {
        if self.reading {
            return;
        }
        let mut wanted: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for Unread { esc: e, .. } in &lock(&self.core).unread {
            let offsets = wanted.entry(e.partition).or_default();
            offsets.push(e.alert_offset);
        }
        if wanted.is_empty() {
            return;
        }
        let (reader, tx) = (self.reader.clone(), self.readbacks.clone());
        self.reading = true;
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let found = reader.read(&wanted, Duration::from_secs(5));
            tracing::debug!(
                wanted = wanted.values().map(Vec::len).sum::<usize>(),
                found = found.len(),
                seconds = started.elapsed().as_secs_f64(),
                "alerts of due escalations read back"
            );
            let _ = tx.send(found);
        });
    }

    /// Sends the due escalations whose alert was read back; those whose
    /// alert could not be read for a minute go without its content.
    pub(super) async fn readback_done(&mut self, found: Found, stop: &Shutdown) {
        self.reading = false;
        let unread = std::mem::take(&mut lock(&self.core).unread);
        let mut keep = Vec::new();
        for u in unread {
            let esc = u.esc;
            let alert = found
                .get(&(esc.partition, esc.alert_offset))
                .filter(|a| crate::cases::alert_key(&a.alert_id) == Some(esc.alert));
            let d = match alert {
                Some(a) => self.escalate(&esc, a, stop).await,
                None if u.since.elapsed() >= READBACK_PATIENCE => {
                    metrics::counter!(m::CASE_READBACK_ERRORS_TOTAL).increment(1);
                    tracing::warn!(
                        partition = esc.partition,
                        offset = esc.alert_offset,
                        "alert not readable from the alerts topic: escalating without its content"
                    );
                    let bare = DetractorAlert {
                        alert_id: alert_id(esc.alert),
                        ..Default::default()
                    };
                    self.escalate(&esc, &bare, stop).await
                }
                None => {
                    keep.push(u);
                    continue;
                }
            };
            lock(&self.core).escalating.push(super::Escalating {
                partition: esc.partition,
                alert: esc.alert,
                level: esc.level,
                delivery: d,
                holds: u.holds,
            });
        }
        lock(&self.core).unread.extend(keep);
    }

    /// Every `--snapshot-interval`: a round of every partition's
    /// snapshot, written one at a time from the acknowledgement tick.
    pub(super) fn snapshots(&self) {
        let mut c = lock(&self.core);
        let assigned = c.assigned.clone();
        c.snapshots.start_round(assigned);
    }

    /// The gauges from the tracker.
    fn publish(&mut self) {
        let c = lock(&self.core);
        let mut now_set = BTreeSet::new();
        let (mut open, mut overdue) = (0, 0);
        let mut by_priority = ([0u64; 4], [0u64; 4]);
        for (seg, prio, counts) in c.tracker.counts() {
            let (product, region) = c.tracker.segment_name(seg);
            let labels = [
                ("product", product.to_string()),
                ("region", region.to_string()),
                ("priority", priority_label(prio).to_string()),
            ];
            metrics::gauge!(m::CASES_OPEN, &labels).set(counts.open as f64);
            metrics::gauge!(m::CASES_OVERDUE, &labels).set(counts.overdue as f64);
            now_set.insert((seg, prio as i32));
            open += counts.open;
            overdue += counts.overdue;
            let p = (prio as usize).min(3);
            by_priority.0[p] += counts.open;
            by_priority.1[p] += counts.overdue;
        }
        for (seg, prio) in self.gauges.difference(&now_set) {
            let (product, region) = c.tracker.segment_name(*seg);
            let prio = AlertPriority::try_from(*prio).unwrap_or_default();
            let labels = [
                ("product", product.to_string()),
                ("region", region.to_string()),
                ("priority", priority_label(prio).to_string()),
            ];
            metrics::gauge!(m::CASES_OPEN, &labels).set(0.0);
            metrics::gauge!(m::CASES_OVERDUE, &labels).set(0.0);
        }
        self.gauges = now_set;
        self.summary.enabled = true;
        self.summary.open = open;
        self.summary.overdue = overdue;
        (
            self.summary.open_by_priority,
            self.summary.overdue_by_priority,
        ) = by_priority;
        if let Ok(mut v) = self.view.write() {
            v.cases = self.summary;
        }
        metrics::gauge!(m::CASE_ORPHANS).set(c.tracker.orphans() as f64);
        metrics::gauge!(m::CASE_CUSTOMERS).set(c.tracker.customers() as f64);
        metrics::counter!(m::CASES_EVICTED_TOTAL).absolute(c.tracker.evicted_open);
    }
}
