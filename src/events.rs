//! The shell's telemetry (the pipeline's and the Kafka clients'), one
//! type per occurrence (Vector's internal events): `emit()` writes the log line and moves the metric together, so
//! a call site is one line and the two can never drift apart. Log fields
//! and metric labels carry partitions, offsets and reasons, never customer
//! data.

use std::time::Instant;

use crate::engine::SnapshotError;
use crate::error::StateReadError;
use crate::metrics as m;
use crate::schema::Rejection;

/// Something the shell observed, to log and count.
pub(crate) trait Event {
    fn emit(self);
}

/// Why a partition starts again from `--auto-offset-reset`.
pub(crate) enum ResetCause {
    /// The consumer's position is past the end of its log.
    PositionBeyondEnd,
    /// At assignment, the committed offset is past the end of the log.
    CommittedBeyondLog { committed: i64, log_end: i64 },
    /// The brokers no longer hold the group's committed offset.
    CommitForgotten,
}

/// A partition goes back to the reset point: its log is not the one its
/// offsets were about (recreated, truncated, or lost by the brokers).
pub(crate) struct OffsetReset {
    pub(crate) partition: i32,
    pub(crate) reset: &'static str,
    pub(crate) cause: ResetCause,
}

impl Event for OffsetReset {
    fn emit(self) {
        let OffsetReset {
            partition,
            reset,
            cause,
        } = self;
        match cause {
            ResetCause::PositionBeyondEnd => tracing::warn!(
                partition,
                reset,
                "position beyond the end of the log (topic recreated or truncated?): starting again from the reset point"
            ),
            ResetCause::CommittedBeyondLog { committed, log_end } => tracing::warn!(
                partition,
                committed,
                log_end,
                reset,
                "committed offset beyond the end of the log (topic recreated or truncated?): starting again from the reset point"
            ),
            ResetCause::CommitForgotten => tracing::warn!(
                partition,
                reset,
                "the brokers no longer hold this group's committed offset (a broker back without its data?): starting again from the reset point"
            ),
        }
        metrics::counter!(m::OFFSET_RESETS_TOTAL).increment(1);
    }
}

/// A partition's restore ended: it is live.
pub(crate) struct RestoreDone<'a> {
    pub(crate) partition: i32,
    /// `snapshot`, `rebuild` or `empty`.
    pub(crate) from: &'a str,
    pub(crate) replayed: u64,
    pub(crate) started: Instant,
}

impl Event for RestoreDone<'_> {
    fn emit(self) {
        let seconds = self.started.elapsed().as_secs_f64();
        metrics::counter!(m::STATE_RESTORES_TOTAL, "from" => self.from.to_string()).increment(1);
        metrics::gauge!(m::STATE_LAST_RESTORE_SECONDS).set(seconds);
        tracing::info!(
            partition = self.partition,
            from = self.from,
            replayed = self.replayed,
            seconds,
            "partition restored: live"
        );
    }
}

/// A snapshot in a format this build does not read: `state` (the
/// windows', the case tracker's), the format found and those read.
pub(crate) struct SnapshotVersionUnreadable {
    pub(crate) state: &'static str,
    pub(crate) found: u32,
    pub(crate) reads: (u32, u32),
}

impl Event for SnapshotVersionUnreadable {
    fn emit(self) {
        let (oldest, newest) = self.reads;
        metrics::counter!(
            m::SNAPSHOT_VERSIONS_UNREADABLE_TOTAL,
            "state" => self.state,
            "found" => self.found.to_string(),
            "reads" => format!("{oldest}-{newest}")
        )
        .increment(1);
    }
}

/// The latest snapshot of a partition was read but cannot be used.
pub(crate) struct SnapshotUnusable<'a> {
    pub(crate) partition: i32,
    pub(crate) error: &'a SnapshotError,
}

impl Event for SnapshotUnusable<'_> {
    fn emit(self) {
        metrics::counter!(m::SNAPSHOT_ERRORS_TOTAL, "reason" => self.error.reason()).increment(1);
        if let SnapshotError::Version(found) = self.error {
            SnapshotVersionUnreadable {
                state: "windows",
                found: *found,
                reads: (crate::engine::OLDEST_READ, crate::engine::FORMAT_VERSION),
            }
            .emit();
        }
        tracing::error!(
            partition = self.partition,
            error = %self.error,
            "snapshot unusable: rebuilding the partition from its earliest input"
        );
    }
}

/// The state topic could not be read for a partition's snapshot.
pub(crate) struct StateUnreadable<'a> {
    pub(crate) partition: i32,
    pub(crate) error: &'a StateReadError,
}

impl Event for StateUnreadable<'_> {
    fn emit(self) {
        metrics::counter!(m::SNAPSHOT_ERRORS_TOTAL, "reason" => "unreadable").increment(1);
        metrics::counter!(m::STATE_READ_ERRORS_TOTAL, "reason" => self.error.reason()).increment(1);
        tracing::error!(
            partition = self.partition,
            error = %self.error,
            reason = self.error.reason(),
            "state topic unreadable: rebuilding the partition from its earliest input"
        );
    }
}

/// A partition's snapshot is over `--snapshot-max-bytes`: not written.
pub(crate) struct SnapshotTooLarge {
    pub(crate) partition: i32,
    pub(crate) bytes: usize,
}

impl Event for SnapshotTooLarge {
    fn emit(self) {
        metrics::counter!(m::SNAPSHOTS_WRITTEN_TOTAL, "result" => "too_large").increment(1);
        tracing::warn!(
            partition = self.partition,
            bytes = self.bytes,
            "snapshot larger than --snapshot-max-bytes: not written, the partition is rebuilt by replay when it moves (lower --dedup-max-ids or raise the limit)"
        );
    }
}

/// A snapshot write was acknowledged, or failed.
pub(crate) struct SnapshotWritten {
    pub(crate) partition: i32,
    pub(crate) bytes: usize,
    pub(crate) ok: bool,
}

impl Event for SnapshotWritten {
    fn emit(self) {
        if self.ok {
            metrics::counter!(m::SNAPSHOTS_WRITTEN_TOTAL, "result" => "ok").increment(1);
            metrics::counter!(m::SNAPSHOT_BYTES_TOTAL).increment(self.bytes as u64);
            tracing::debug!(
                partition = self.partition,
                bytes = self.bytes,
                "snapshot written"
            );
        } else {
            metrics::counter!(m::SNAPSHOTS_WRITTEN_TOTAL, "result" => "error").increment(1);
            tracing::warn!(
                partition = self.partition,
                "snapshot write failed; a new one follows"
            );
        }
    }
}

/// Deliveries that failed and were handed to the producer again.
pub(crate) struct DeliveriesRetried {
    pub(crate) count: u64,
}

impl Event for DeliveriesRetried {
    fn emit(self) {
        if self.count > 0 {
            metrics::counter!(m::DELIVERY_RETRIES_TOTAL).increment(self.count);
            tracing::warn!(count = self.count, "deliveries failed; sending them again");
        }
    }
}

/// A record refused with a named reason, on its way to the dead-letter
/// topic.
pub(crate) struct Refused<'a> {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) rejection: &'a Rejection,
}

impl Event for Refused<'_> {
    fn emit(self) {
        let reason = self.rejection.reason().as_str();
        metrics::counter!(m::EVENTS_REJECTED_TOTAL, "reason" => reason).increment(1);
        tracing::debug!(
            partition = self.partition,
            offset = self.offset,
            reason,
            error = %self.rejection,
            "dead-lettering"
        );
    }
}

/// The broker's answer to an offset commit.
pub(crate) struct CommitAnswered<'a> {
    pub(crate) moved: &'a [(i32, i64)],
    pub(crate) error: Option<&'a rdkafka::error::KafkaError>,
}

impl Event for CommitAnswered<'_> {
    fn emit(self) {
        match self.error {
            None => {
                metrics::counter!(m::COMMITS_TOTAL, "result" => "ok").increment(1);
                tracing::debug!(moved = ?self.moved, "offsets committed");
            }
            Some(e) => {
                metrics::counter!(m::COMMITS_TOTAL, "result" => "error").increment(1);
                tracing::warn!(error = %e, "offset commit failed; will retry");
            }
        }
    }
}

/// A Kafka client reported an error (logged at warn once a minute per
/// kind, else at debug; always counted).
pub(crate) struct ClientError<'a> {
    pub(crate) client: &'static str,
    pub(crate) error: &'a rdkafka::error::KafkaError,
    pub(crate) reason: &'a str,
    /// First of its kind this minute.
    pub(crate) loud: bool,
}

impl Event for ClientError<'_> {
    fn emit(self) {
        metrics::counter!(m::KAFKA_ERRORS_TOTAL, "client" => self.client).increment(1);
        if self.loud {
            tracing::warn!(client = self.client, error = %self.error, reason = self.reason, "kafka client error (repeats of it are not logged for a minute)");
        } else {
            tracing::debug!(client = self.client, error = %self.error, reason = self.reason, "kafka client error");
        }
    }
}

/// The idempotent producer failed fatally and is being replaced.
pub(crate) struct ProducerRenewed<'a> {
    pub(crate) code: rdkafka::types::RDKafkaErrorCode,
    pub(crate) reason: &'a str,
}

impl Event for ProducerRenewed<'_> {
    fn emit(self) {
        metrics::counter!(m::PRODUCER_RENEWALS_TOTAL).increment(1);
        tracing::error!(
            error = ?self.code,
            reason = self.reason,
            "producer failed fatally; replacing it and resending what it held"
        );
    }
}

/// The state topic was created with less than asked for: the broker
/// refused its replication (one replica: a broker lost loses the
/// snapshots) or also its compaction and record size (the topic grows
/// with every snapshot, and large ones are refused).
pub(crate) struct StateTopicDegraded<'a> {
    pub(crate) topic: &'a str,
    /// `replication`, or `compaction` (which also gives up replication).
    pub(crate) dropped: &'static str,
}

impl Event for StateTopicDegraded<'_> {
    fn emit(self) {
        tracing::warn!(
            topic = self.topic,
            dropped = self.dropped,
            "state topic created without what the broker refused; create it yourself as docs/operations.md says (compacted, max.message.bytes for --snapshot-max-bytes, replicated)"
        );
        metrics::gauge!(m::STATE_TOPIC_DEGRADED, "dropped" => self.dropped).set(1.0);
    }
}

/// The input topic's retention, checked at start against the longest
/// window.
pub(crate) struct InputRetention<'a> {
    pub(crate) topic: &'a str,
    /// As `Admin::retention` answers (`None`: kept for ever).
    pub(crate) retention: Result<Option<std::time::Duration>, String>,
    pub(crate) longest: std::time::Duration,
}

impl Event for InputRetention<'_> {
    fn emit(self) {
        let InputRetention {
            topic,
            retention,
            longest,
        } = self;
        if let Ok(r) = &retention {
            let seconds = r.map_or(-1.0, |d| d.as_secs_f64());
            metrics::gauge!(m::INPUT_RETENTION_SECONDS, "topic" => topic.to_string()).set(seconds);
        }
        let check = RetentionCheck::of(retention, longest);
        metrics::counter!(m::INPUT_RETENTION_CHECKS_TOTAL, "result" => check.as_str()).increment(1);
        match check {
            RetentionCheck::Enough => {
                tracing::info!(
                    topic,
                    "the input topic's retention covers the longest window"
                )
            }
            RetentionCheck::Short { retention, longest } => tracing::warn!(
                topic,
                retention = %humantime::format_duration(retention),
                longest_window = %humantime::format_duration(longest),
                "the input topic's retention is shorter than the longest window: a partition rebuilt from the input (no usable snapshot) gets that window, and the shift rule over it, short; raise retention.ms (docs/operations.md)"
            ),
            RetentionCheck::Unknown(why) => tracing::info!(
                topic,
                why = %why,
                "the input topic's retention is unknown (the brokers do not describe topic configs): make sure it covers the longest window (docs/operations.md)"
            ),
        }
    }
}

/// What the input topic's retention means for the windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetentionCheck {
    /// Kept at least as long as the longest window (or for ever).
    Enough,
    /// Shorter than the longest window: a partition rebuilt from the input
    /// (no usable snapshot) has that window, and the shift rule over it,
    /// short.
    Short {
        retention: std::time::Duration,
        longest: std::time::Duration,
    },
    /// The brokers did not say (why).
    Unknown(String),
}

impl RetentionCheck {
    /// `retention` as `Admin::retention` answers, against the longest window.
    pub fn of(
        retention: Result<Option<std::time::Duration>, String>,
        longest: std::time::Duration,
    ) -> RetentionCheck {
        match retention {
            Ok(None) => RetentionCheck::Enough,
            Ok(Some(r)) if r >= longest => RetentionCheck::Enough,
            Ok(Some(r)) => RetentionCheck::Short {
                retention: r,
                longest,
            },
            Err(why) => RetentionCheck::Unknown(why),
        }
    }

    /// Its name in `nps_input_retention_checks_total{result}`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RetentionCheck::Enough => "ok",
            RetentionCheck::Short { .. } => "short",
            RetentionCheck::Unknown(_) => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RetentionCheck;
    use std::time::Duration;

    #[test]
    fn an_input_retention_shorter_than_the_longest_window_is_short() {
        let day = Duration::from_secs(86_400);
        let longest = 30 * day;
        assert_eq!(
            RetentionCheck::of(Ok(None), longest),
            RetentionCheck::Enough
        );
        assert_eq!(
            RetentionCheck::of(Ok(Some(longest)), longest),
            RetentionCheck::Enough
        );
        assert_eq!(
            RetentionCheck::of(Ok(Some(31 * day)), longest),
            RetentionCheck::Enough
        );
        let week = RetentionCheck::of(Ok(Some(7 * day)), longest);
        assert_eq!(
            week,
            RetentionCheck::Short {
                retention: 7 * day,
                longest
            }
        );
        assert_eq!(week.as_str(), "short");
        let unknown = RetentionCheck::of(Err("no DescribeConfigs".into()), longest);
        assert_eq!(unknown.as_str(), "unknown");
    }
}
