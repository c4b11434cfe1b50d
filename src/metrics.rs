//! Metric names (a contract: dashboards and alert rules are written against
//! them), their descriptions, and the rendering of the window gauges.
//!
//! Counters, histograms and fixed gauges go through the `metrics` facade to
//! metrics-exporter-prometheus. The per-segment window gauges and the
//! per-partition lag are different: their series must disappear when a
//! segment leaves every window or a partition is revoked, and the exporter
//! can only forget series by idle timeout at render time (a cached handle to
//! an evicted gauge keeps updating a series never exported again). So they
//! are rendered here, from the engine's state at each refresh: a series is
//! exported exactly while its segment holds responses in that window.

use std::fmt::Write;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

use crate::engine::{Category, SegmentStats, WindowSpec};

// Window gauges (rendered by `render_windows`).
pub const NPS_SCORE: &str = "nps_score";
pub const NPS_WINDOW_RESPONSES: &str = "nps_window_responses";
pub const NPS_MARGIN_OF_ERROR: &str = "nps_score_margin_of_error";
pub const NPS_WEIGHTED_SCORE: &str = "nps_weighted_score";
pub const NPS_WEIGHT_NET: &str = "nps_window_weight_net";
pub const NPS_WEIGHT_TOTAL: &str = "nps_window_weight";
pub const CONSUMER_LAG: &str = "nps_consumer_lag";

// Through the exporter.
pub const RESPONSES_TOTAL: &str = "nps_responses_total";
pub const EVENTS_REJECTED_TOTAL: &str = "nps_events_rejected_total";
pub const DETRACTOR_ALERTS_TOTAL: &str = "nps_detractor_alerts_total";
pub const EVENTS_CONSUMED_TOTAL: &str = "nps_events_consumed_total";
pub const DUPLICATES_TOTAL: &str = "nps_duplicates_total";
pub const LATE_EVENTS_TOTAL: &str = "nps_late_events_total";
pub const CARDINALITY_OVERFLOW_TOTAL: &str = "nps_cardinality_overflow_total";
pub const END_TO_END_DELAY: &str = "nps_end_to_end_delay_seconds";
pub const ENGINE_KEYS: &str = "nps_engine_keys";
pub const ENGINE_SEGMENT_STATES: &str = "nps_engine_segment_states";
pub const DEDUP_IDS: &str = "nps_dedup_ids";
pub const DEDUP_EVICTED_EARLY: &str = "nps_dedup_evicted_early_total";
pub const ASSIGNED_PARTITIONS: &str = "nps_assigned_partitions";
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
pub const BUILD_INFO: &str = "nps_build_info";

/// Every metric nps-stream exports (a histogram adds `_bucket`, `_sum` and
/// `_count`): dashboards and rules may use these and nothing else.
pub const NAMES: [&str; 36] = [
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
    EVENTS_CONSUMED_TOTAL,
    DUPLICATES_TOTAL,
    LATE_EVENTS_TOTAL,
    CARDINALITY_OVERFLOW_TOTAL,
    END_TO_END_DELAY,
    ENGINE_KEYS,
    ENGINE_SEGMENT_STATES,
    DEDUP_IDS,
    DEDUP_EVICTED_EARLY,
    ASSIGNED_PARTITIONS,
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
    BUILD_INFO,
];

/// Histogram buckets of the end-to-end delay, seconds: from a second to a
/// month, as answers can arrive days after the survey.
pub const DELAY_BUCKETS: [f64; 14] = [
    0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0, 259200.0, 604800.0,
    2592000.0,
];

/// Describes every exporter-managed metric once.
pub fn describe() {
    describe_counter!(
        RESPONSES_TOTAL,
        "Responses counted (late ones included, duplicates excluded), by product, region, channel and category."
    );
    describe_counter!(
        EVENTS_REJECTED_TOTAL,
        "Events refused and dead-lettered, by reason."
    );
    describe_counter!(
        DETRACTOR_ALERTS_TOTAL,
        "Detractor alerts emitted, by product, region and priority."
    );
    describe_counter!(EVENTS_CONSUMED_TOTAL, "Records read from the input topic.");
    describe_counter!(
        DUPLICATES_TOTAL,
        "Responses whose response_id was already seen within the dedup horizon."
    );
    describe_counter!(
        LATE_EVENTS_TOTAL,
        "Responses older than every window: counted in totals, in no window."
    );
    describe_counter!(
        CARDINALITY_OVERFLOW_TOTAL,
        "Responses counted under __other__ because the segment table was full."
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
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label says which build runs."
    );
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

fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

fn labels(out: &mut String, s: &SegmentStats<'_>, window: &str) {
    out.push_str("{product=\"");
    escape(s.product, out);
    out.push_str("\",region=\"");
    escape(s.region, out);
    out.push_str("\",window=\"");
    escape(window, out);
    out.push('"');
}

/// Renders the window gauges of every segment in Prometheus text format.
/// A window with no responses publishes counts but no score; a segment
/// with nothing in any window is not in `segments` and publishes nothing.
pub fn render_windows(segments: &[SegmentStats<'_>], windows: &[WindowSpec]) -> String {
    // About 500 bytes per segment and window (8 series of ~60 bytes), so
    // the text rarely grows while rendered; it is kept until the next
    // refresh, so it is trimmed to its length at the end.
    let mut out = String::with_capacity(segments.len() * windows.len() * 520);
    header(
        &mut out,
        NPS_SCORE,
        "Net Promoter Score (-100..100) per product, region and window.",
    );
    for s in segments {
        for (spec, w) in windows.iter().zip(&s.windows) {
            if let Some(v) = w.nps() {
                out.push_str(NPS_SCORE);
                labels(&mut out, s, &spec.name);
                let _ = writeln!(out, "}} {v}");
            }
        }
    }
    header(
        &mut out,
        NPS_WINDOW_RESPONSES,
        "Responses in the window per product, region, window and category (promoter, passive, detractor).",
    );
    for s in segments {
        for (spec, w) in windows.iter().zip(&s.windows) {
            if w.responses() == 0 {
                continue;
            }
            for c in Category::ALL {
                out.push_str(NPS_WINDOW_RESPONSES);
                labels(&mut out, s, &spec.name);
                let _ = writeln!(out, ",category=\"{}\"}} {}", c.as_str(), w.count(c));
            }
        }
    }
    header(
        &mut out,
        NPS_MARGIN_OF_ERROR,
        "Half-width of the 95% confidence interval of nps_score, in NPS points.",
    );
    for s in segments {
        for (spec, w) in windows.iter().zip(&s.windows) {
            if let Some(v) = w.margin_of_error() {
                out.push_str(NPS_MARGIN_OF_ERROR);
                labels(&mut out, s, &spec.name);
                let _ = writeln!(out, "}} {v}");
            }
        }
    }
    header(
        &mut out,
        NPS_WEIGHTED_SCORE,
        "NPS weighted by customer_value (1 when absent), per product, region and window.",
    );
    for s in segments {
        for (spec, w) in windows.iter().zip(&s.windows) {
            if let Some(v) = w.weighted_nps() {
                out.push_str(NPS_WEIGHTED_SCORE);
                labels(&mut out, s, &spec.name);
                let _ = writeln!(out, "}} {v}");
            }
        }
    }
    // The weighted score's parts, so that Prometheus can roll it up across
    // instances, products or regions: Σ net / Σ total.
    for (name, help, part) in [
        (
            NPS_WEIGHT_NET,
            "Sum of weight x sign (+1 promoter, 0 passive, -1 detractor) in the window.",
            0,
        ),
        (
            NPS_WEIGHT_TOTAL,
            "Sum of weights (customer_value, 1 when absent) in the window.",
            1,
        ),
    ] {
        header(&mut out, name, help);
        for s in segments {
            for (spec, w) in windows.iter().zip(&s.windows) {
                if w.responses() == 0 {
                    continue;
                }
                out.push_str(name);
                labels(&mut out, s, &spec.name);
                let v = if part == 0 {
                    w.weight_net
                } else {
                    w.weight_total
                };
                let _ = writeln!(out, "}} {v}");
            }
        }
    }
    out.shrink_to_fit();
    out
}

/// Renders the consumer lag of the assigned partitions.
pub fn render_lag(topic: &str, lags: &[(i32, i64)]) -> String {
    let mut out = String::new();
    header(
        &mut out,
        CONSUMER_LAG,
        "Messages between the consumer's position and the partition's end.",
    );
    for (p, lag) in lags {
        out.push_str(CONSUMER_LAG);
        out.push_str("{topic=\"");
        escape(topic, &mut out);
        let _ = writeln!(out, "\",partition=\"{p}\"}} {lag}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, EngineConfig, KeyId, Observation, WindowStats};

    #[test]
    fn window_series_exist_exactly_while_the_window_holds_responses() {
        let mut e = Engine::new(&EngineConfig::default()).unwrap();
        let t0 = 1_763_812_800_000;
        e.record(
            0,
            &Observation {
                response_id: "r",
                product: "Tarjeta \"Oro\"",
                region: "Norte",
                category: Category::Detractor,
                responded_at_ms: t0,
                weight: 1.0,
            },
            t0,
        );
        let text = render_windows(&e.segments(t0), e.layout().specs());
        assert!(
            text.contains(
                r#"nps_score{product="Tarjeta \"Oro\"",region="Norte",window="1h"} -100"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"nps_window_responses{product="Tarjeta \"Oro\"",region="Norte",window="30d",category="detractor"} 1"#
        ));
        // Two hours later the 1h series are gone, the 24h ones remain.
        let later = t0 + 2 * 3_600_000;
        let text = render_windows(&e.segments(later), e.layout().specs());
        assert!(!text.contains(r#"window="1h""#), "{text}");
        assert!(
            text.contains(
                r#"nps_score{product="Tarjeta \"Oro\"",region="Norte",window="24h"} -100"#
            )
        );
        // After 31 days nothing but the headers.
        let gone = t0 + 31 * 86_400_000;
        e.sweep(gone);
        let text = render_windows(&e.segments(gone), e.layout().specs());
        assert_eq!(
            text.lines().filter(|l| !l.starts_with('#')).count(),
            0,
            "{text}"
        );
        // A new response brings the segment's series back, from zero.
        e.record(
            1,
            &Observation {
                response_id: "r2",
                product: "Tarjeta \"Oro\"",
                region: "Norte",
                category: Category::Promoter,
                responded_at_ms: gone,
                weight: 1.0,
            },
            gone,
        );
        let text = render_windows(&e.segments(gone), e.layout().specs());
        let hour = r#"nps_score{product="Tarjeta \"Oro\"",region="Norte",window="1h"} 100"#;
        assert!(text.contains(hour), "{text}");
        let month = r#"nps_window_responses{product="Tarjeta \"Oro\"",region="Norte",window="30d",category="detractor"} 0"#;
        assert!(text.contains(month), "{text}");
    }

    #[test]
    fn empty_window_publishes_no_score() {
        let layout = crate::engine::WindowLayout::new(&["1h"], 48).unwrap();
        let seg = SegmentStats {
            key: KeyId(0),
            product: "p",
            region: "r",
            windows: vec![WindowStats::default()],
        };
        let text = render_windows(&[seg], layout.specs());
        assert_eq!(
            text.lines().filter(|l| !l.starts_with('#')).count(),
            0,
            "{text}"
        );
    }
}
