//! The case tracker: every detractor alert becomes a case with a contact
//! SLA; case events from a CRM move it along; escalations come out when
//! nobody acts, and at once for a repeat detractor.
//!
//! Pure, like the engine: no clock (`now` is an argument), no I/O, no
//! Kafka, no metrics. The shell reads alerts back from the alerts topic and
//! case events from the case-events topic (co-partitioned: both keyed by
//! customer_id), hands them in, asks `due(now)` every second, and turns
//! what comes out into records and metrics.
//!
//! Rules (docs/closing-the-loop.md):
//! - A case opens at the alert's `emitted_at`; it is due `sla(priority)`
//!   later. It meets its SLA when CONTACTED, RESOLVED or UNREACHABLE comes
//!   at or before its due time (by the event's `occurred_at`);
//!   ACKNOWLEDGED and CONTACT_ATTEMPTED do not stop the clock.
//! - Not contacted at its due time: escalation level 1 (reason
//!   `contact_sla_missed`), and the case counts as overdue; at twice the
//!   SLA, level 2. At most one escalation per (case, level).
//! - An alert for a customer whose previous case opened within the repeat
//!   horizon escalates at once at level 1 (reason `repeat_detractor`).
//!   Both times are the alerts' `emitted_at`; a customer is forgotten a day
//!   after the horizon has passed on the processing clock (swept hourly
//!   by `due(now)`), so an alert read back up to a day late is still
//!   judged against the previous case.
//! - An event older than the case's current state is stale: ignored.
//! - An event for an alert not seen yet waits `orphan_grace` for it, then
//!   comes back out of `expire_orphans` (the shell dead-letters it).
//!
//! Memory: a case keeps no strings (its segment is an id in a table of
//! names; a contact-SLA escalation's customer id and comment are read back
//! from the alert at `alert_offset` by the shell; a repeat detractor's
//! escalation is built from the alert at hand, and the previous alert's id
//! is remembered with the customer). See `Case` for the layout.

use std::collections::BTreeSet;

use hashbrown::HashMap;

use crate::pb::{AlertPriority, CaseOutcome, CaseState};

mod config;
mod customers;
pub mod escalation;
pub mod event;
mod snapshot;
mod store;
#[cfg(test)]
mod tests;
mod types;

use config::ms;
pub use config::{
    AlertKey, CaseConfig, DEFAULT_ROOT_CAUSES, MAX_ROOT_CAUSES, Sla, alert_id, alert_key,
};
use customers::Last;
pub use snapshot::{
    CASES_FORMAT_VERSION, CASES_OLDEST_READ, CasesSnapshotError, decode_snapshot, encode_snapshot,
    encode_snapshot_into,
};
pub use types::{
    AlertIn, Applied, ClosedAs, Escalation, EscalationReason, EventIn, Opened, RootCause, SegmentId,
};

/// One case: 64 bytes, no strings (the `Tracker` doc says where the rest
/// lives).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Case {
    alert_offset: i64,
    opened_at: i64,
    /// occurred_at of the current state (stale check); `opened_at` at first.
    state_at: i64,
    /// First CONTACTED/RESOLVED/UNREACHABLE, `NEVER` until then.
    contacted_at: i64,
    /// A repeat detractor's previous alert id, in two halves; zero for
    /// none (or not known: restored from a format-2 snapshot).
    previous: [u64; 2],
    segment: SegmentId,
    partition: i32,
    /// `AlertPriority` and `CaseState`, as bytes.
    priority: u8,
    state: u8,
    /// Bit 0: level 1 escalated; bit 1: level 2.
    escalated: u8,
    /// Counted as overdue (past due, not contacted, open).
    overdue: bool,
}

const NEVER: i64 = i64::MAX;

/// An alert id as its high and low 64 bits: stored this way, a case, a due
/// check or a customer needs no 16-byte alignment.
fn halves(key: AlertKey) -> [u64; 2] {
    [(key >> 64) as u64, key as u64]
}

/// The alert id of its two halves.
fn join([hi, lo]: [u64; 2]) -> AlertKey {
    (u128::from(hi) << 64) | u128::from(lo)
}

impl Case {
    fn open(&self) -> bool {
        !matches!(self.state(), CaseState::Resolved | CaseState::Unreachable)
    }
    fn priority(&self) -> AlertPriority {
        AlertPriority::try_from(i32::from(self.priority)).unwrap_or_default()
    }
    fn state(&self) -> CaseState {
        CaseState::try_from(i32::from(self.state)).unwrap_or_default()
    }
    fn contacted(&self) -> bool {
        self.contacted_at != NEVER
    }
    fn previous(&self) -> Option<AlertKey> {
        (self.previous != [0, 0]).then(|| join(self.previous))
    }
    /// When the check of escalation `level` (1 or 2) falls due: the
    /// priority's SLA after opening, or twice it.
    fn due_at(&self, config: &CaseConfig, level: i64) -> i64 {
        let sla = config.sla.ms(self.priority());
        self.opened_at.saturating_add(sla.saturating_mul(level))
    }
    /// When a closed case is forgotten: `closed_retention` after it closed.
    fn forget_at(&self, config: &CaseConfig) -> i64 {
        self.state_at.saturating_add(ms(config.closed_retention))
    }
}

/// Open and overdue cases of one (segment, priority).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub open: u64,
    pub overdue: u64,
}

/// An event waiting for its alert, with the shell's handle on its record.
struct Orphan<O> {
    partition: i32,
    event: EventIn,
    expires: i64,
    handle: O,
}

/// The tracker. `O` is the shell's handle on a waiting event's record
/// (what it dead-letters if the alert never comes).
pub struct Tracker<O> {
    config: CaseConfig,
    cases: store::Cases,
    /// (due time, level, alert) of every escalation still to check.
    due: DueQueue,
    /// Closed cases by the time they are forgotten.
    closed: BTreeSet<(i64, AlertKey)>,
    /// Per customer (hash of the id, per partition): the last case opened.
    customers: HashMap<i32, customers::Index>,
    customer_count: usize,
    /// Processing time of the next sweep of customers past the horizon.
    customer_sweep_at: i64,
    orphans: HashMap<AlertKey, Vec<Orphan<O>>>,
    orphan_expiry: BTreeSet<(i64, AlertKey)>,
    orphan_count: usize,
    /// Handles of waiting events `open` applied, in the order of its
    /// `applied` (see `take_released`).
    released: Vec<O>,
    names: Vec<(Box<str>, Box<str>)>,
    name_ids: HashMap<(Box<str>, Box<str>), SegmentId>,
    counts: HashMap<(SegmentId, AlertPriority), Counts>,
    /// Cases forgotten while open because the table was full.
    pub evicted_open: u64,
    /// Contact SLAs decided since the last `take_sla`: (segment,
    /// priority, met). Each case's once: met at a first contact by its due
    /// time; missed at its level-1 check without contact, or at a late
    /// first contact read before that check ran.
    sla: Vec<(SegmentId, AlertPriority, bool)>,
}

/// Due checks by time: (due time, alert id in two halves), 24 bytes each.
/// The level is not stored: a check at the case's SLA is level 1, at twice
/// it level 2.
#[derive(Default)]
struct DueQueue(BTreeSet<(i64, u64, u64)>);

impl DueQueue {
    fn insert(&mut self, at: i64, alert: AlertKey) {
        let [hi, lo] = halves(alert);
        self.0.insert((at, hi, lo));
    }
    fn remove(&mut self, at: i64, alert: AlertKey) {
        let [hi, lo] = halves(alert);
        self.0.remove(&(at, hi, lo));
    }
    fn first(&self) -> Option<(i64, AlertKey)> {
        self.0.first().map(|&(at, hi, lo)| (at, join([hi, lo])))
    }
}

/// A borrowed (product, region): hashes as the stored pair does, so the
/// table is searched without building a key.
#[derive(Hash)]
struct NameRef<'a>(&'a str, &'a str);

impl hashbrown::Equivalent<(Box<str>, Box<str>)> for NameRef<'_> {
    fn equivalent(&self, key: &(Box<str>, Box<str>)) -> bool {
        *key.0 == *self.0 && *key.1 == *self.1
    }
}

/// How late (after its emitted_at) an alert may be read back and still be
/// judged a repeat against a customer's previous case: customers are kept
/// this long past the repeat horizon.
const LATE_ALERT_SLACK_MS: i64 = 86_400_000;

/// How often customers past the horizon are swept out (processing time).
const CUSTOMER_SWEEP_MS: i64 = 3_600_000;

/// The customer hash: customers are remembered by a 64-bit hash of their
/// id, never by the id itself.
fn customer_hash(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

impl<O> Tracker<O> {
    pub fn new(config: CaseConfig) -> Self {
        Tracker {
            config,
            cases: store::Cases::default(),
            due: DueQueue::default(),
            closed: BTreeSet::new(),
            customers: HashMap::new(),
            customer_count: 0,
            customer_sweep_at: i64::MIN,
            orphans: HashMap::new(),
            orphan_expiry: BTreeSet::new(),
            orphan_count: 0,
            released: Vec::new(),
            names: Vec::new(),
            name_ids: HashMap::new(),
            counts: HashMap::new(),
            evicted_open: 0,
            sla: Vec::new(),
        }
    }

    pub fn config(&self) -> &CaseConfig {
        &self.config
    }

    /// Product and region of a segment id.
    pub fn segment_name(&self, id: SegmentId) -> (&str, &str) {
        self.names
            .get(id.0 as usize)
            .map_or((crate::engine::OTHER, crate::engine::OTHER), |(p, r)| {
                (p.as_ref(), r.as_ref())
            })
    }

    /// The id of a (product, region), added when new; `__other__` once the
    /// table is full. Looked up without allocating.
    fn segment(&mut self, product: &str, region: &str) -> SegmentId {
        if let Some(id) = self.name_ids.get(&NameRef(product, region)) {
            return *id;
        }
        let (product, region) = if self.names.len() >= self.config.max_segments {
            let other = crate::engine::OTHER;
            if let Some(id) = self.name_ids.get(&NameRef(other, other)) {
                return *id;
            }
            (other, other)
        } else {
            (product, region)
        };
        let id = SegmentId(self.names.len() as u32);
        let key: (Box<str>, Box<str>) = (product.into(), region.into());
        self.names.push(key.clone());
        self.name_ids.insert(key, id);
        id
    }

    /// Number of cases held (open and closed).
    pub fn len(&self) -> usize {
        self.cases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
    }

    /// Customers remembered.
    pub fn customers(&self) -> usize {
        self.customer_count
    }

    /// Events waiting for their alert.
    pub fn orphans(&self) -> usize {
        self.orphan_count
    }

    /// The handles of `partition`'s events waiting for their alert.
    pub fn orphans_of(&self, partition: i32) -> impl Iterator<Item = &O> {
        self.orphans
            .values()
            .flatten()
            .filter(move |o| o.partition == partition)
            .map(|o| &o.handle)
    }

    /// Open and overdue cases per (segment, priority), zeros included for
    /// what was ever seen (so a gauge goes back to 0).
    pub fn counts(&self) -> impl Iterator<Item = (SegmentId, AlertPriority, Counts)> + '_ {
        self.counts.iter().map(|((s, p), c)| (*s, *p, *c))
    }

    fn count(&mut self, c: &Case) -> &mut Counts {
        self.counts.entry((c.segment, c.priority())).or_default()
    }

    /// Opens the case of an alert read back from the alerts topic.
    pub fn open(&mut self, alert: &AlertIn<'_>) -> Opened {
        // The customer's place is loaded while the case table is searched.
        let who = (!alert.customer_id.is_empty()).then(|| customer_hash(alert.customer_id));
        if let Some(who) = who
            && let Some(known) = self.customers.get(&alert.partition)
        {
            known.prefetch(who);
        }
        if self.cases.contains_key(&alert.alert) {
            return Opened::Known;
        }
        self.make_room();
        let segment = self.segment(alert.product, alert.region);
        let mut case = Case {
            alert_offset: alert.offset,
            opened_at: alert.emitted_at_ms,
            state_at: alert.emitted_at_ms,
            contacted_at: NEVER,
            previous: [0, 0],
            segment,
            partition: alert.partition,
            priority: alert.priority as u8,
            state: CaseState::Unspecified as u8,
            escalated: 0,
            overdue: false,
        };
        // A repeat detractor: escalated at once.
        let mut repeat = None;
        if let Some(who) = who {
            let horizon = ms(self.config.repeat_horizon);
            let known = self.customers.entry(alert.partition).or_default();
            // Remember the customer's latest case.
            let this = Last {
                opened_ms: alert.emitted_at_ms,
                alert: alert.alert,
            };
            let before = known.update(who, |b| match b {
                Some(b) if b.opened_ms > alert.emitted_at_ms => b,
                _ => this,
            });
            if before.is_none() {
                self.customer_count += 1;
            }
            if let Some(b) = before
                && alert.emitted_at_ms.saturating_sub(b.opened_ms) <= horizon
            {
                case.previous = halves(b.alert);
                case.escalated |= 1;
                repeat =
                    Some(self.escalation(alert.alert, &case, 1, EscalationReason::RepeatDetractor));
            }
            if self.customer_count > self.config.max_customers {
                self.forget_oldest_customers();
            }
        }
        self.due.insert(case.due_at(&self.config, 1), alert.alert);
        self.count(&case).open += 1;
        let slot = self.cases.insert_new(alert.alert, case);
        // Events that came before their alert.
        let mut applied = Vec::new();
        if let Some(mut waiting) = self.orphans.remove(&alert.alert) {
            waiting.sort_by_key(|o| o.event.occurred_at_ms);
            for o in waiting {
                self.orphan_count -= 1;
                self.orphan_expiry.remove(&(o.expires, alert.alert));
                applied.push(self.apply(slot, &o.event));
                self.released.push(o.handle);
            }
        }
        // Whatever is already due (an alert read late) is left to `due`.
        Opened::New { repeat, applied }
    }

    /// The handles of the waiting events the last `open` applied, in the
    /// order of its `applied`: whether such an event was read live is the
    /// shell's to know, and its effects count even when the alert that
    /// opened the case was replayed.
    pub fn take_released(&mut self) -> Vec<O> {
        std::mem::take(&mut self.released)
    }

    fn escalation(
        &self,
        alert: AlertKey,
        case: &Case,
        level: u8,
        reason: EscalationReason,
    ) -> Escalation {
        Escalation {
            alert,
            level,
            reason,
            previous: case.previous(),
            segment: case.segment,
            priority: case.priority(),
            opened_at_ms: case.opened_at,
            due_at_ms: case.due_at(&self.config, 1),
            state: case.state(),
            partition: case.partition,
            alert_offset: case.alert_offset,
        }
    }

    /// Applies a case event, or keeps it until its alert comes (`handle`
    /// is given back by `expire_orphans` if it never does).
    pub fn event(&mut self, partition: i32, event: &EventIn, handle: O, now: i64) -> Applied {
        if let Some(slot) = self.cases.find(event.alert) {
            return self.apply(slot, event);
        }
        let expires = now.saturating_add(ms(self.config.orphan_grace));
        self.orphans.entry(event.alert).or_default().push(Orphan {
            partition,
            event: *event,
            expires,
            handle,
        });
        self.orphan_expiry.insert((expires, event.alert));
        self.orphan_count += 1;
        Applied::Waiting
    }

    /// The response behind an alert was revised out of alerting (issue
    /// 18): its case closes as `withdrawn` at `at` (or its last state's
    /// time, if later), with no contact and no more escalations. None when
    /// the tracker holds no open case for it.
    pub fn withdraw(&mut self, alert: AlertKey, at: i64) -> Option<Applied> {
        let slot = self.cases.find(alert)?;
        let case = self.cases.at(slot);
        if !case.open() {
            return None;
        }
        // No escalation for it any more; no longer overdue.
        self.due.remove(case.due_at(&self.config, 1), alert);
        self.due.remove(case.due_at(&self.config, 2), alert);
        if case.overdue {
            self.count(&case).overdue -= 1;
            self.cases.set(
                slot,
                Case {
                    overdue: false,
                    ..case
                },
            );
        }
        let event = EventIn {
            alert,
            state: CaseState::Resolved,
            occurred_at_ms: at.max(case.state_at),
            outcome: CaseOutcome::Unspecified,
            root_cause: RootCause::NONE,
        };
        Some(self.apply_as(slot, &event, true))
    }

    /// A withdrawn alert's response became a detractor again: its case,
    /// closed as withdrawn, opens again at `at`, its due checks back where
    /// no contact has stopped them. None when there is no such case.
    pub fn reinstate(&mut self, alert: AlertKey, at: i64) -> Option<Applied> {
        let slot = self.cases.find(alert)?;
        let case = self.cases.at(slot);
        if case.open() || case.contacted() {
            return None;
        }
        for level in 1..=2u8 {
            if case.escalated & (1 << (level - 1)) == 0 {
                self.due
                    .insert(case.due_at(&self.config, i64::from(level)), alert);
                break;
            }
        }
        let event = EventIn {
            alert,
            state: CaseState::Reopened,
            occurred_at_ms: at.max(case.state_at),
            outcome: CaseOutcome::Unspecified,
            root_cause: RootCause::NONE,
        };
        Some(self.apply(slot, &event))
    }

    /// Applies an event to the case in `slot` (from `cases.find`).
    fn apply(&mut self, slot: u32, event: &EventIn) -> Applied {
        self.apply_as(slot, event, false)
    }

    /// `apply`; `withdrawn` closes the case as withdrawn, without contact.
    fn apply_as(&mut self, slot: u32, event: &EventIn, withdrawn: bool) -> Applied {
        let mut case = self.cases.at(slot);
        if event.occurred_at_ms < case.state_at || event.state == CaseState::Unspecified {
            return Applied::Stale;
        }
        let due = case.due_at(&self.config, 1);
        let was_open = case.open();
        let mut first_contact = None;
        let mut closed = None;
        let contact = !withdrawn
            && matches!(
                event.state,
                CaseState::Contacted | CaseState::Resolved | CaseState::Unreachable
            );
        let mut missed = [None, None];
        if contact && !case.contacted() {
            case.contacted_at = event.occurred_at_ms;
            let met = case.contacted_at <= due;
            // Missed and already counted when the level-1 check ran.
            if !case.overdue {
                self.sla.push((case.segment, case.priority(), met));
            }
            first_contact = Some(((case.contacted_at - case.opened_at).max(0), met));
            // A contact after a due time whose check has not run yet (the
            // event read before the check, or the check held back while
            // catching up): that level was missed all the same, so its
            // escalation goes now. Escalations follow event times, not
            // when records happen to be read.
            for level in 1..=2u8 {
                let bit = 1 << (level - 1);
                if case.contacted_at > case.due_at(&self.config, i64::from(level))
                    && case.escalated & bit == 0
                {
                    case.escalated |= bit;
                    missed[usize::from(level - 1)] = Some(self.escalation(
                        event.alert,
                        &case,
                        level,
                        EscalationReason::ContactSlaMissed,
                    ));
                }
            }
            // No more escalations; no longer overdue.
            self.due.remove(due, event.alert);
            self.due.remove(case.due_at(&self.config, 2), event.alert);
            if case.overdue {
                case.overdue = false;
                self.count(&case).overdue -= 1;
            }
        }
        // While closed, a case is forgotten `closed_retention` after its
        // last state: the time it was filed under, before this event.
        let filed_at = case.forget_at(&self.config);
        case.state = event.state as u8;
        case.state_at = event.occurred_at_ms;
        let now_open = case.open();
        if was_open && !now_open {
            let how = match (event.state, event.outcome) {
                _ if withdrawn => ClosedAs::Withdrawn,
                (CaseState::Unreachable, _) => ClosedAs::Unreachable,
                (_, CaseOutcome::Recovered) => ClosedAs::Recovered,
                (_, CaseOutcome::NotRecovered) => ClosedAs::NotRecovered,
                (_, CaseOutcome::Churned) => ClosedAs::Churned,
                (_, CaseOutcome::Unspecified) => ClosedAs::Unspecified,
            };
            // A withdrawn case was never called: its SLA counts as met
            // when the need went away before the due time.
            let met = if withdrawn {
                event.occurred_at_ms <= due
            } else {
                case.contacted_at <= due
            };
            closed = Some((how, met));
            self.count(&case).open -= 1;
            self.closed
                .insert((case.forget_at(&self.config), event.alert));
        } else if !was_open && now_open {
            self.count(&case).open += 1;
            self.closed.remove(&(filed_at, event.alert));
        } else if !now_open {
            // Closed again (a later close event): forgotten from the later time.
            self.closed.remove(&(filed_at, event.alert));
            self.closed
                .insert((case.forget_at(&self.config), event.alert));
        }
        let (segment, priority) = (case.segment, case.priority());
        self.cases.set(slot, case);
        let resolved = closed.is_some() && event.state == CaseState::Resolved && !withdrawn;
        Applied::Moved {
            segment,
            priority,
            first_contact,
            closed,
            root_cause: if resolved {
                event.root_cause
            } else {
                RootCause::NONE
            },
            missed,
        }
    }

    /// The escalations due at `now` (each once), in due order; and forgets
    /// closed cases and customers past their time.
    pub fn due(&mut self, now: i64) -> Vec<Escalation> {
        let mut out = Vec::new();
        while let Some((at, alert)) = self.due.first() {
            if at > now {
                break;
            }
            self.due.remove(at, alert);
            let Some(slot) = self.cases.find(alert) else {
                continue;
            };
            let mut case = self.cases.at(slot);
            if case.contacted() || !case.open() {
                continue;
            }
            let level = if at == case.due_at(&self.config, 1) {
                1
            } else {
                2
            };
            if level == 1 {
                if !case.overdue {
                    case.overdue = true;
                    self.count(&case).overdue += 1;
                    self.sla.push((case.segment, case.priority(), false));
                }
                self.due.insert(case.due_at(&self.config, 2), alert);
            }
            let bit = 1 << (level - 1);
            if case.escalated & bit == 0 {
                case.escalated |= bit;
                out.push(self.escalation(alert, &case, level, EscalationReason::ContactSlaMissed));
            }
            self.cases.set(slot, case);
        }
        while let Some(&(at, alert)) = self.closed.first() {
            if at > now {
                break;
            }
            self.closed.pop_first();
            self.cases.remove(&alert);
        }
        if now >= self.customer_sweep_at {
            self.sweep_customers(now);
            self.customer_sweep_at = now.saturating_add(CUSTOMER_SWEEP_MS);
        }
        out
    }

    /// The contact SLAs decided since the last call (see `sla`).
    pub fn take_sla(&mut self) -> Vec<(SegmentId, AlertPriority, bool)> {
        std::mem::take(&mut self.sla)
    }

    /// Events whose alert did not come within the grace (or that the cap
    /// pushed out): their handles, to dead-letter as `unknown_alert`.
    pub fn expire_orphans(&mut self, now: i64) -> Vec<O> {
        let mut out = Vec::new();
        while let Some(&(at, alert)) = self.orphan_expiry.first() {
            if at > now && self.orphan_count <= self.config.max_orphans {
                break;
            }
            self.orphan_expiry.pop_first();
            if let Some(list) = self.orphans.get_mut(&alert) {
                let (gone, kept): (Vec<_>, Vec<_>) = list.drain(..).partition(|o| o.expires == at);
                *list = kept;
                if list.is_empty() {
                    self.orphans.remove(&alert);
                }
                self.orphan_count -= gone.len();
                out.extend(gone.into_iter().map(|o| o.handle));
            }
        }
        out
    }

    /// Keeps the table under its cap: the oldest closed case goes first,
    /// then the oldest open one.
    fn make_room(&mut self) {
        while self.cases.len() >= self.config.max_cases {
            if let Some((_, alert)) = self.closed.pop_first() {
                self.cases.remove(&alert);
                continue;
            }
            // No closed case: the open case due first goes (or, when every
            // open case was contacted already, any of them).
            let next = self.due.first().map(|(_, a)| a);
            let Some(alert) = next.or_else(|| self.cases.any_key()) else {
                break;
            };
            self.forget(alert);
            self.evicted_open += 1;
        }
    }

    /// Forgets customers whose last case is older than the horizon by more
    /// than `LATE_ALERT_SLACK` (an alert read back that late still finds
    /// its customer's previous case).
    fn sweep_customers(&mut self, now: i64) {
        let cutoff = now
            .saturating_sub(ms(self.config.repeat_horizon))
            .saturating_sub(LATE_ALERT_SLACK_MS);
        self.retain_customers(|c| c.opened_ms >= cutoff);
    }

    /// Over the cap: the oldest tenth of the customers goes.
    fn forget_oldest_customers(&mut self) {
        let mut times: Vec<i64> = self
            .customers
            .values()
            .flat_map(|k| k.iter().map(|(_, c)| c.opened_ms))
            .collect();
        let n = times.len() / 10;
        let (_, cutoff, _) = times.select_nth_unstable(n);
        let cutoff = *cutoff;
        self.retain_customers(|c| c.opened_ms > cutoff);
    }

    /// Keeps the customers `keep` says to, over every partition.
    fn retain_customers(&mut self, keep: impl Fn(Last) -> bool) {
        let mut count = 0;
        for known in self.customers.values_mut() {
            known.retain(&keep);
            count += known.len();
        }
        self.customers.retain(|_, known| !known.is_empty());
        self.customer_count = count;
    }

    /// Removes a case with its due checks, and takes it out of the counts.
    fn forget(&mut self, alert: AlertKey) {
        let Some(case) = self.cases.remove(&alert) else {
            return;
        };
        for level in 1..=2 {
            self.due.remove(case.due_at(&self.config, level), alert);
        }
        if case.open() {
            let c = self.count(&case);
            c.open -= 1;
            if case.overdue {
                c.overdue -= 1;
            }
        } else {
            self.closed.remove(&(case.forget_at(&self.config), alert));
        }
    }

    /// Forgets everything of `partition` (revoked): cases, customers and
    /// waiting events (their handles are dropped: the next owner reads
    /// them again from the last commit).
    pub fn drop_partition(&mut self, partition: i32) {
        let gone: Vec<AlertKey> = self
            .cases
            .iter()
            .filter(|(_, c)| c.partition == partition)
            .map(|(a, _)| a)
            .collect();
        for a in gone {
            self.forget(a);
        }
        if let Some(gone) = self.customers.remove(&partition) {
            self.customer_count -= gone.len();
        }
        let mut dropped = 0;
        self.orphans.retain(|_, list| {
            let before = list.len();
            list.retain(|o| o.partition != partition);
            dropped += before - list.len();
            !list.is_empty()
        });
        self.orphan_count -= dropped;
        let orphans = &self.orphans;
        self.orphan_expiry.retain(|(at, a)| {
            orphans
                .get(a)
                .is_some_and(|l| l.iter().any(|o| o.expires == *at))
        });
    }
}
