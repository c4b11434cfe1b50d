//! What goes into the tracker and what comes out of it, as values.

use super::AlertKey;
use crate::pb::{AlertPriority, CaseOutcome, CaseState};

/// What the tracker needs of an alert read back from the alerts topic.
#[derive(Debug, Clone, Copy)]
pub struct AlertIn<'a> {
    pub alert: AlertKey,
    pub customer_id: &'a str,
    pub product: &'a str,
    pub region: &'a str,
    pub priority: AlertPriority,
    pub emitted_at_ms: i64,
    /// The alert's partition and offset in the alerts topic.
    pub partition: i32,
    pub offset: i64,
}

/// A validated case event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventIn {
    pub alert: AlertKey,
    pub state: CaseState,
    pub occurred_at_ms: i64,
    pub outcome: CaseOutcome,
    /// Its root cause (`CaseConfig::root_cause`), meaningful on RESOLVED.
    pub root_cause: RootCause,
}

/// A root cause as a number: none, one of `CaseConfig::root_causes` (its
/// index + 1), or another value (`OTHER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RootCause(pub u8);

impl RootCause {
    pub const NONE: RootCause = RootCause(0);
    pub const OTHER: RootCause = RootCause(u8::MAX);
}

/// Why an escalation was raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EscalationReason {
    ContactSlaMissed,
    RepeatDetractor,
}

impl EscalationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EscalationReason::ContactSlaMissed => "contact_sla_missed",
            EscalationReason::RepeatDetractor => "repeat_detractor",
        }
    }
}

/// An escalation to emit. For a repeat detractor the shell has the alert
/// at hand; at a due check it reads the alert back (partition, offset) for
/// the customer id, value, score and comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escalation {
    pub alert: AlertKey,
    pub level: u8,
    pub reason: EscalationReason,
    /// A repeat detractor's previous alert id (`None` when not a repeat,
    /// or not known after a restore from a format-2 snapshot).
    pub previous: Option<AlertKey>,
    pub segment: SegmentId,
    pub priority: AlertPriority,
    pub opened_at_ms: i64,
    pub due_at_ms: i64,
    pub state: CaseState,
    pub partition: i32,
    pub alert_offset: i64,
}

/// How a case was closed, for `nps_cases_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClosedAs {
    Recovered,
    NotRecovered,
    Churned,
    Unreachable,
    Unspecified,
    /// The response was revised out of alerting (a revision withdrew its
    /// alert).
    Withdrawn,
}

impl ClosedAs {
    pub fn as_str(self) -> &'static str {
        match self {
            ClosedAs::Recovered => "recovered",
            ClosedAs::NotRecovered => "not_recovered",
            ClosedAs::Churned => "churned",
            ClosedAs::Unreachable => "unreachable",
            ClosedAs::Unspecified => "unspecified",
            ClosedAs::Withdrawn => "withdrawn",
        }
    }
}

/// What opening a case did.
#[derive(Debug, Clone, PartialEq)]
pub enum Opened {
    /// A new case; a repeat detractor's comes with its escalation. Events
    /// that were waiting for this alert were applied (their effects
    /// follow).
    New {
        repeat: Option<Escalation>,
        applied: Vec<Applied>,
    },
    /// The alert was already a case (a redelivered alert): nothing changed.
    Known,
}

/// What applying an event did. Returned and consumed at once, never kept
/// in bulk: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Applied {
    /// The case moved.
    Moved {
        segment: SegmentId,
        priority: AlertPriority,
        /// First contact (CONTACTED, RESOLVED or UNREACHABLE) now: time
        /// from opening, ms (never negative), and whether within SLA.
        first_contact: Option<(i64, bool)>,
        /// The case closed: how, and whether its SLA was met.
        closed: Option<(ClosedAs, bool)>,
        /// The root cause of a RESOLVED event that closed it (else `NONE`).
        root_cause: RootCause,
        /// Escalations of levels whose due time passed before this first
        /// contact (by `occurred_at`) and whose check had not run yet.
        missed: [Option<Escalation>; 2],
    },
    /// Older than the case's current state: ignored.
    Stale,
    /// No case for its alert: kept until its alert comes or the grace
    /// passes.
    Waiting,
}

/// A (product, region) id in the tracker's name table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId(pub u32);
