//! The close-the-loop metrics: what the case tracker knows, as Prometheus
//! series. Labels carry product, region, priority, outcome, SLA, reason,
//! level, state and root cause: never a customer, an owner or an alert.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

pub const CASES_OPEN: &str = "nps_cases_open";
pub const CASES_OVERDUE: &str = "nps_cases_overdue";
pub const CASE_FIRST_CONTACT: &str = "nps_case_first_contact_seconds";
pub const CASES_CLOSED_TOTAL: &str = "nps_cases_closed_total";
pub const CASES_DUE_TOTAL: &str = "nps_cases_due_total";
pub const CASE_ESCALATIONS_TOTAL: &str = "nps_case_escalations_total";
pub const REPEAT_DETRACTORS_TOTAL: &str = "nps_repeat_detractors_total";
pub const CASE_EVENTS_TOTAL: &str = "nps_case_events_total";
pub const CASE_EVENTS_STALE_TOTAL: &str = "nps_case_events_stale_total";
pub const CASES_EVICTED_TOTAL: &str = "nps_cases_evicted_total";
pub const CASE_ORPHANS: &str = "nps_case_orphan_events";
pub const CASE_CUSTOMERS: &str = "nps_case_customers";
pub const CASE_ALERTS_SKIPPED_TOTAL: &str = "nps_case_alerts_skipped_total";
pub const CASE_READBACK_ERRORS_TOTAL: &str = "nps_case_readback_errors_total";
pub const CASE_REPLAYING: &str = "nps_case_replaying_partitions";
pub const CASE_ROOT_CAUSES_TOTAL: &str = "nps_case_root_causes_total";

/// The close-the-loop series, for `NAMES`.
pub const CASE_NAMES: [&str; 16] = [
    CASES_OPEN,
    CASES_DUE_TOTAL,
    CASES_OVERDUE,
    CASE_FIRST_CONTACT,
    CASES_CLOSED_TOTAL,
    CASE_ESCALATIONS_TOTAL,
    REPEAT_DETRACTORS_TOTAL,
    CASE_EVENTS_TOTAL,
    CASE_EVENTS_STALE_TOTAL,
    CASES_EVICTED_TOTAL,
    CASE_ORPHANS,
    CASE_CUSTOMERS,
    CASE_ALERTS_SKIPPED_TOTAL,
    CASE_READBACK_ERRORS_TOTAL,
    CASE_REPLAYING,
    CASE_ROOT_CAUSES_TOTAL,
];

/// Buckets of the time to first contact, seconds: from seconds (a demo's
/// SLAs) to a week.
pub const FIRST_CONTACT_BUCKETS: [f64; 15] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 28800.0, 86400.0, 172800.0,
    345600.0, 604800.0,
];

/// The tracker's unlabelled series, exported from its start rather than
/// from their first change: a gauge reads 0 and a counter counts from 0,
/// so `rate()` and alerts see them before anything happens.
pub fn cases_start_at_zero() {
    for name in [
        CASES_EVICTED_TOTAL,
        CASE_READBACK_ERRORS_TOTAL,
        CASE_EVENTS_STALE_TOTAL,
    ] {
        metrics::counter!(name).increment(0);
    }
    for name in [CASE_ORPHANS, CASE_CUSTOMERS, CASE_REPLAYING] {
        metrics::gauge!(name).increment(0.0);
    }
}

pub(super) fn describe() {
    describe_counter!(
        CASE_ROOT_CAUSES_TOTAL,
        "Cases resolved with a root cause, by product, region and root cause ([cases] root_causes; any other value is `other`)."
    );
    describe_gauge!(
        CASES_OPEN,
        "Open cases (detractor alerts not resolved or unreachable), by product, region and priority."
    );
    describe_gauge!(
        CASES_OVERDUE,
        "Open cases past their contact SLA and not contacted, by product, region and priority."
    );
    describe_histogram!(
        CASE_FIRST_CONTACT,
        Unit::Seconds,
        "Time from the alert's emitted_at to the first CONTACTED, RESOLVED or UNREACHABLE, by priority."
    );
    describe_counter!(
        CASES_CLOSED_TOTAL,
        "Cases closed (RESOLVED or UNREACHABLE), by product, region, priority, outcome and whether the contact SLA was met."
    );
    describe_counter!(
        CASES_DUE_TOTAL,
        "Cases whose contact SLA was decided, by product, region, priority and sla: met (first contact by the due time) or missed (the due time passed without one). The close-the-loop rate is met over all."
    );
    describe_counter!(
        CASE_ESCALATIONS_TOTAL,
        "Escalations sent, by product, region, priority, reason (contact_sla_missed, repeat_detractor) and level."
    );
    describe_counter!(
        REPEAT_DETRACTORS_TOTAL,
        "Detractor alerts for a customer with a case opened within the repeat horizon, by product and region."
    );
    describe_counter!(
        CASE_EVENTS_TOTAL,
        "Case events applied to a case, by state (stale ones included; one that waited for its alert counts once applied; refused ones count in nps_events_rejected_total instead)."
    );
    describe_counter!(
        CASE_EVENTS_STALE_TOTAL,
        "Case events older than the state they would replace: ignored."
    );
    describe_counter!(
        CASES_EVICTED_TOTAL,
        "Open cases forgotten because the case table was full."
    );
    describe_gauge!(
        CASE_ORPHANS,
        "Case events waiting for their alert (dead-lettered as unknown_alert after --orphan-grace)."
    );
    describe_gauge!(
        CASE_CUSTOMERS,
        "Customers remembered for repeat-detractor detection."
    );
    describe_counter!(
        CASE_ALERTS_SKIPPED_TOTAL,
        "Records of the alerts topic that open no case (not written by nps-stream), by reason."
    );
    describe_counter!(
        CASE_READBACK_ERRORS_TOTAL,
        "Escalations whose alert could not be read back from the alerts topic (sent without the alert's content after a minute of retries)."
    );
    describe_gauge!(
        CASE_REPLAYING,
        "Alerts partitions of the case tracker still catching up (escalations wait until none is)."
    );
}
