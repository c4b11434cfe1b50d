//! Metric names (a contract: dashboards and alert rules are written against
//! them), their descriptions, and the rendering of the window gauges.
//!
//! Counters, histograms and fixed gauges go through the `metrics` facade to
//! metrics-exporter-prometheus. The per-segment series (window gauges and
//! the per-segment counters) and the per-partition lag are different: their
//! series must disappear when a segment leaves every window or the table, or
//! a partition is revoked, and the exporter can only forget series by idle
//! timeout at render time (a cached handle to an evicted gauge keeps updating
//! a series never exported again); and at 10,000 segments its registry took
//! more memory than the windows. So they are kept here as numbers
//! ([`SegmentSeries`]) and rendered when scraped.

use std::fmt::Write;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

mod breakdowns;
mod cases;
pub use breakdowns::{BreakdownView, QUANTILES, ValueFigures, render as render_breakdowns};
pub use cases::{
    CASE_ALERTS_SKIPPED_TOTAL, CASE_CUSTOMERS, CASE_ESCALATIONS_TOTAL, CASE_EVENTS_STALE_TOTAL,
    CASE_EVENTS_TOTAL, CASE_FIRST_CONTACT, CASE_NAMES, CASE_ORPHANS, CASE_READBACK_ERRORS_TOTAL,
    CASE_REPLAYING, CASE_ROOT_CAUSES_TOTAL, CASES_CLOSED_TOTAL, CASES_DUE_TOTAL,
    CASES_EVICTED_TOTAL, CASES_OPEN, CASES_OVERDUE, FIRST_CONTACT_BUCKETS, REPEAT_DETRACTORS_TOTAL,
    cases_start_at_zero,
};

// Per-segment series (rendered by `SegmentSeries`).
pub const RESPONSES_TOTAL: &str = "nps_responses_total";
pub const DETRACTOR_ALERTS_TOTAL: &str = "nps_detractor_alerts_total";
pub const PROMOTER_EVENTS_TOTAL: &str = "nps_promoter_events_total";
pub const PROMOTER_EVENTS_WITHDRAWN_TOTAL: &str = "nps_promoter_events_withdrawn_total";
pub const NPS_SCORE: &str = "nps_score";
pub const NPS_WINDOW_RESPONSES: &str = "nps_window_responses";
pub const NPS_MARGIN_OF_ERROR: &str = "nps_score_margin_of_error";
pub const NPS_WEIGHTED_SCORE: &str = "nps_weighted_score";
pub const NPS_WEIGHT_NET: &str = "nps_window_weight_net";
pub const NPS_WEIGHT_TOTAL: &str = "nps_window_weight";
pub const CONSUMER_LAG: &str = "nps_consumer_lag";

// Through the exporter.
pub const EVENTS_REJECTED_TOTAL: &str = "nps_events_rejected_total";
pub const EVENTS_CONSUMED_TOTAL: &str = "nps_events_consumed_total";
pub const DUPLICATES_TOTAL: &str = "nps_duplicates_total";
pub const REVISIONS_TOTAL: &str = "nps_revisions_total";
pub const REVISIONS_STALE_TOTAL: &str = "nps_revisions_stale_total";
pub const LATE_EVENTS_TOTAL: &str = "nps_late_events_total";
pub const CARDINALITY_OVERFLOW_TOTAL: &str = "nps_cardinality_overflow_total";
pub const END_TO_END_DELAY: &str = "nps_end_to_end_delay_seconds";
pub const ENGINE_KEYS: &str = "nps_engine_keys";
pub const ENGINE_SEGMENT_STATES: &str = "nps_engine_segment_states";
pub const DEDUP_IDS: &str = "nps_dedup_ids";
pub const DEDUP_EVICTED_EARLY: &str = "nps_dedup_evicted_early_total";
pub const ASSIGNED_PARTITIONS: &str = "nps_assigned_partitions";
pub const TOPIC_PARTITIONS: &str = "nps_topic_partitions";
pub const KAFKA_BROKERS_UP: &str = "nps_kafka_brokers_up";
pub const KAFKA_ERRORS_TOTAL: &str = "nps_kafka_errors_total";
pub const DELIVERY_RETRIES_TOTAL: &str = "nps_delivery_retries_total";
pub const PENDING_DELIVERIES: &str = "nps_pending_deliveries";
pub const COMMITS_TOTAL: &str = "nps_offset_commits_total";
pub const OFFSET_RESETS_TOTAL: &str = "nps_offset_resets_total";
pub const PRODUCER_RENEWALS_TOTAL: &str = "nps_producer_renewals_total";
pub const READY: &str = "nps_ready";
pub const STATE_RESTORING: &str = "nps_state_restoring_partitions";
pub const STATE_RESTORES_TOTAL: &str = "nps_state_restores_total";
pub const STATE_REPLAYED_TOTAL: &str = "nps_state_replayed_total";
pub const STATE_LAST_RESTORE_SECONDS: &str = "nps_state_last_restore_seconds";
pub const SNAPSHOTS_WRITTEN_TOTAL: &str = "nps_snapshots_written_total";
pub const SNAPSHOT_BYTES_TOTAL: &str = "nps_snapshot_bytes_total";
pub const SNAPSHOT_ERRORS_TOTAL: &str = "nps_snapshot_errors_total";
pub const STATE_READ_ERRORS_TOTAL: &str = "nps_state_read_errors_total";
pub const STATE_TOPIC_DEGRADED: &str = "nps_state_topic_degraded";
pub const SNAPSHOT_VERSIONS_UNREADABLE_TOTAL: &str = "nps_snapshot_versions_unreadable_total";
pub const INPUT_RETENTION_CHECKS_TOTAL: &str = "nps_input_retention_checks_total";
pub const INPUT_RETENTION_SECONDS: &str = "nps_input_retention_seconds";
pub const BUILD_INFO: &str = "nps_build_info";
pub const SNAPSHOT_FORMAT_WRITTEN: &str = "nps_snapshot_format_written";
pub const NPS_TARGET: &str = "nps_target";
pub const THEME_RESPONSES: &str = "nps_theme_responses";
pub const COMMENTED_RESPONSES: &str = "nps_commented_responses";
pub const BREAKDOWN_OVERFLOW_TOTAL: &str = "nps_breakdown_overflow_total";
pub const BREAKDOWN_RESPONSES: &str = "nps_breakdown_responses";
pub const BREAKDOWN_WEIGHT: &str = "nps_breakdown_weight";
pub const BREAKDOWN_WEIGHT_NET: &str = "nps_breakdown_weight_net";
pub const BREAKDOWN_VALUES: &str = "nps_breakdown_values";
pub const BREAKDOWN_MIN_RESPONSES: &str = "nps_breakdown_min_responses";
pub const BENCHMARK: &str = "nps_benchmark";

/// Every metric nps-stream exports (a histogram adds `_bucket`, `_sum` and
/// `_count`): dashboards and rules may use these and nothing else.
pub const NAMES: [&str; 73] = [
    NPS_SCORE,
    NPS_WINDOW_RESPONSES,
    NPS_MARGIN_OF_ERROR,
    NPS_WEIGHTED_SCORE,
    NPS_WEIGHT_NET,
    NPS_WEIGHT_TOTAL,
    CONSUMER_LAG,
    RESPONSES_TOTAL,
    EVENTS_REJECTED_TOTAL,
    DETRACTOR_ALERTS_TOTAL,
    PROMOTER_EVENTS_TOTAL,
    PROMOTER_EVENTS_WITHDRAWN_TOTAL,
    EVENTS_CONSUMED_TOTAL,
    DUPLICATES_TOTAL,
    REVISIONS_TOTAL,
    REVISIONS_STALE_TOTAL,
    LATE_EVENTS_TOTAL,
    CARDINALITY_OVERFLOW_TOTAL,
    END_TO_END_DELAY,
    ENGINE_KEYS,
    ENGINE_SEGMENT_STATES,
    DEDUP_IDS,
    DEDUP_EVICTED_EARLY,
    ASSIGNED_PARTITIONS,
    TOPIC_PARTITIONS,
    KAFKA_BROKERS_UP,
    KAFKA_ERRORS_TOTAL,
    DELIVERY_RETRIES_TOTAL,
    PENDING_DELIVERIES,
    COMMITS_TOTAL,
    OFFSET_RESETS_TOTAL,
    PRODUCER_RENEWALS_TOTAL,
    READY,
    STATE_RESTORING,
    STATE_RESTORES_TOTAL,
    STATE_REPLAYED_TOTAL,
    STATE_LAST_RESTORE_SECONDS,
    SNAPSHOTS_WRITTEN_TOTAL,
    SNAPSHOT_BYTES_TOTAL,
    SNAPSHOT_ERRORS_TOTAL,
    STATE_READ_ERRORS_TOTAL,
    STATE_TOPIC_DEGRADED,
    INPUT_RETENTION_CHECKS_TOTAL,
    INPUT_RETENTION_SECONDS,
    SNAPSHOT_VERSIONS_UNREADABLE_TOTAL,
    BUILD_INFO,
    SNAPSHOT_FORMAT_WRITTEN,
    NPS_TARGET,
    THEME_RESPONSES,
    COMMENTED_RESPONSES,
    BREAKDOWN_OVERFLOW_TOTAL,
    BREAKDOWN_RESPONSES,
    BREAKDOWN_WEIGHT,
    BREAKDOWN_WEIGHT_NET,
    BREAKDOWN_VALUES,
    BREAKDOWN_MIN_RESPONSES,
    BENCHMARK,
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

/// Histogram buckets of the end-to-end delay, seconds: from a second to a
/// month, as answers can arrive days after the survey.
pub const DELAY_BUCKETS: [f64; 14] = [
    0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0, 259200.0, 604800.0,
    2592000.0,
];

/// Describes every exporter-managed metric once.
pub fn describe() {
    cases::describe();
    describe_counter!(
        EVENTS_REJECTED_TOTAL,
        "Events refused and dead-lettered, by reason."
    );
    describe_counter!(EVENTS_CONSUMED_TOTAL, "Records read from the input topic.");
    describe_counter!(
        DUPLICATES_TOTAL,
        "Responses whose response_id was already seen within the dedup horizon with the same content."
    );
    describe_counter!(
        REVISIONS_TOTAL,
        "Revisions applied (a response_id seen again within the dedup horizon with new content), by what they changed: comment, score, segment, event_time, weight, other (a revision counts under each)."
    );
    describe_counter!(
        REVISIONS_STALE_TOTAL,
        "Versions of a response older (by updated_at) than the one counted: ignored."
    );
    describe_counter!(
        LATE_EVENTS_TOTAL,
        "Responses older than every window: counted in totals, in no window."
    );
    describe_counter!(
        CARDINALITY_OVERFLOW_TOTAL,
        "Responses counted under __other__ because the segment table was full."
    );
    describe_counter!(
        BREAKDOWN_OVERFLOW_TOTAL,
        "Responses counted under the value other of a breakdown because it had max_values values, by breakdown."
    );
    describe_histogram!(
        END_TO_END_DELAY,
        Unit::Seconds,
        "Processing time minus responded_at, per counted response."
    );
    describe_gauge!(ENGINE_KEYS, "(product, region) segments in the table.");
    describe_gauge!(
        ENGINE_SEGMENT_STATES,
        "Per-partition segment states held in memory."
    );
    describe_gauge!(
        DEDUP_IDS,
        "response_ids remembered for duplicate detection."
    );
    describe_counter!(
        DEDUP_EVICTED_EARLY,
        "response_ids forgotten before their horizon (memory bound)."
    );
    describe_gauge!(
        ASSIGNED_PARTITIONS,
        "Input partitions assigned to this instance."
    );
    describe_gauge!(
        TOPIC_PARTITIONS,
        "Partitions of each topic a consuming loop reads (the input; the alerts and case events for the case tracker), as the brokers list them: the partitions nps_consumer_lag should cover across the instances."
    );
    describe_gauge!(
        KAFKA_BROKERS_UP,
        "Brokers in state UP, by client (consumer, producer)."
    );
    describe_counter!(
        KAFKA_ERRORS_TOTAL,
        "Client-level Kafka errors reported by librdkafka, by client."
    );
    describe_counter!(
        DELIVERY_RETRIES_TOTAL,
        "Alerts and dead letters sent again after a failed delivery."
    );
    describe_gauge!(
        PENDING_DELIVERIES,
        "Alerts and dead letters sent but not yet acknowledged."
    );
    describe_counter!(COMMITS_TOTAL, "Offset commits, by result.");
    describe_counter!(
        PRODUCER_RENEWALS_TOTAL,
        "Producers replaced after a fatal error (e.g. a broker that lost the idempotence state)."
    );
    describe_counter!(
        OFFSET_RESETS_TOTAL,
        "Positions found beyond the end of their log (topic recreated or truncated) and reset."
    );
    describe_gauge!(
        READY,
        "1 when partitions are assigned, none is restoring and the brokers are reachable."
    );
    describe_gauge!(
        STATE_RESTORING,
        "Assigned partitions still replaying input to rebuild their state (alerts suppressed)."
    );
    describe_counter!(
        STATE_RESTORES_TOTAL,
        "Partitions taken over, by where their state came from: snapshot, rebuild (no usable snapshot: replay from the earliest input) or empty (nothing committed yet)."
    );
    describe_counter!(
        STATE_REPLAYED_TOTAL,
        "Input records replayed into the windows during restores, without alerts or dead letters."
    );
    describe_gauge!(
        STATE_LAST_RESTORE_SECONDS,
        Unit::Seconds,
        "How long the last partition restore took, from assignment to live."
    );
    describe_counter!(
        SNAPSHOTS_WRITTEN_TOTAL,
        "Partition snapshots written to the state topic, by result (ok, error)."
    );
    describe_counter!(
        SNAPSHOT_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes of partition snapshots acknowledged by the state topic."
    );
    describe_counter!(
        SNAPSHOT_ERRORS_TOTAL,
        "Snapshots found unusable at restore, by reason (checksum, version, layout, undecodable, corrupt, unreadable); the partition is rebuilt from the input."
    );
    describe_counter!(
        STATE_READ_ERRORS_TOTAL,
        "Reads of the state topic that failed at restore, by reason (topic_missing, watermarks, assign, timeout); each is also an unreadable snapshot."
    );
    describe_counter!(
        SNAPSHOT_VERSIONS_UNREADABLE_TOTAL,
        "Snapshots in a format version this build cannot read, by state (windows, cases), the version found and the versions this build reads (a windows snapshot is also an unusable snapshot, reason version)."
    );
    describe_counter!(
        INPUT_RETENTION_CHECKS_TOTAL,
        "Checks of the input topic's retention against the longest window at start, by result (ok, short, unknown: the brokers do not describe topic configs)."
    );
    describe_gauge!(
        INPUT_RETENTION_SECONDS,
        "The input topic's retention.ms in seconds as the brokers describe it (-1: kept for ever); absent when unknown."
    );
    describe_gauge!(
        STATE_TOPIC_DEGRADED,
        "1 when this instance created the state topic with less than it asked for, by what the broker refused (replication: one replica; compaction: neither compacted nor sized for snapshots)."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label says which build runs."
    );
    describe_gauge!(
        SNAPSHOT_FORMAT_WRITTEN,
        "The snapshot format this instance writes (--snapshot-format): this release's, or the one before it during an upgrade's first roll."
    );
    describe_gauge!(
        NPS_TARGET,
        "Target NPS from the settings' [[targets]], by product and region (no region: the product's, every region)."
    );
}

/// Exports the configured targets (`nps_target`), once at start.
pub fn set_targets(targets: &[crate::config::Target]) {
    for t in targets {
        metrics::gauge!(
            NPS_TARGET,
            "product" => t.product.clone(),
            "region" => t.region.clone().unwrap_or_default()
        )
        .set(t.nps);
    }
}

/// Escapes a Prometheus label value.
fn escape(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

mod series;
pub use series::{RenderCursor, SegmentSeries};

/// Renders the consumer lag of the assigned partitions, of every topic
/// the loops read: the pipeline's input, the case tracker's alerts and
/// case events.
pub fn render_lag<'a>(lags: impl IntoIterator<Item = (&'a str, i32, i64)>) -> String {
    let mut out = String::new();
    header(
        &mut out,
        CONSUMER_LAG,
        "Messages between the consumer's position and the partition's end.",
        "gauge",
    );
    for (topic, p, lag) in lags {
        out.push_str(CONSUMER_LAG);
        out.push_str("{topic=\"");
        escape(topic, &mut out);
        let _ = writeln!(out, "\",partition=\"{p}\"}} {lag}");
    }
    out
}

/// What the pipeline's refresh tick publishes for the HTTP surface and the
/// demo: the per-segment series and, when asked, a table of the windows.
#[derive(Debug, Default)]
pub struct View {
    /// The per-segment series, rendered when /metrics is scraped.
    pub series: SegmentSeries,
    /// Per segment and window, when `keep_table` was asked for.
    pub table: Vec<(String, String, Vec<crate::engine::WindowStats>)>,
    pub window_names: Vec<String>,
    /// Each window's bucket width, ms.
    pub window_bucket_ms: Vec<i64>,
    pub alerts_sent: u64,
    /// Promoter events sent (withdrawals not counted).
    pub promoter_events: u64,
    pub consumed: u64,
    pub rejected: u64,
    /// The case tracker's totals (refreshed by its own loop).
    pub cases: CaseSummary,
    /// Cases resolved with a root cause since this process started, by
    /// (product, region, root cause): `nps_case_root_causes_total`'s
    /// values, for the API and the page.
    pub root_causes: std::collections::BTreeMap<(String, String, String), u64>,
    /// Refused input records by reason (the DLQ's reasons).
    pub rejected_by_reason: std::collections::BTreeMap<&'static str, u64>,
    /// Input partitions this instance holds, and the topic's count (0 when
    /// unknown).
    pub partitions_held: Vec<i32>,
    pub partitions_total: u32,
    /// When the windows were last refreshed (Unix ms; 0 before the first).
    pub refreshed_at_ms: i64,
    /// The breakdowns (`[[breakdowns]]`) as of the last refresh.
    pub breakdowns: Vec<BreakdownView>,
    /// The sector benchmarks (`[[benchmarks]]`).
    pub benchmarks: Vec<crate::config::Benchmark>,
    /// Reads a trend from the engine, for the API (set by the pipeline).
    pub trends: Option<TrendSource>,
}

/// What a trend is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrendOf<'a> {
    Segment {
        product: &'a str,
        region: &'a str,
    },
    /// A value of the breakdown at this index of `View::breakdowns`.
    Value {
        breakdown: usize,
        value: &'a str,
    },
}

/// A trend's window (by index) and the time it is read at.
pub type TrendRead = (usize, i64);

/// The engine's trends, read under its lock: `None` when the engine does
/// not hold what is asked for.
#[derive(Clone)]
pub struct TrendSource(
    #[allow(clippy::type_complexity)]
    pub  std::sync::Arc<
        dyn Fn(TrendOf<'_>, TrendRead) -> Option<Vec<crate::engine::TrendPoint>> + Send + Sync,
    >,
);

impl std::fmt::Debug for TrendSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrendSource")
    }
}

/// The case tracker's totals, for the demo's table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CaseSummary {
    /// Case tracking runs in this process.
    pub enabled: bool,
    pub open: u64,
    pub overdue: u64,
    /// Open and overdue cases by priority (protobuf number: unspecified,
    /// normal, high, critical).
    pub open_by_priority: [u64; 4],
    pub overdue_by_priority: [u64; 4],
    pub escalations: u64,
    pub closed: u64,
    pub closed_within_sla: u64,
}

#[cfg(test)]
mod tests;
