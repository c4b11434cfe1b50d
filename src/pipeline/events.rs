//! The shell's telemetry, one type per occurrence (Vector's internal
//! events): `emit()` writes the log line and moves the metric together, so
//! a call site is one line and the two can never drift apart. Log fields
//! and metric labels carry partitions, offsets and reasons, never customer
//! data.

use std::time::Instant;

use crate::engine::SnapshotError;
use crate::metrics as m;
use crate::schema::Rejection;
use crate::state::StateReadError;

/// Something the shell observed, to log and count.
pub(super) trait Event {
    fn emit(self);
}

/// Why a partition starts again from `--auto-offset-reset`.
pub(super) enum ResetCause {
    /// The consumer's position is past the end of its log.
    PositionBeyondEnd,
    /// At assignment, the committed offset is past the end of the log.
    CommittedBeyondLog { committed: i64, log_end: i64 },
    /// The brokers no longer hold the group's committed offset.
    CommitForgotten,
}

/// A partition goes back to the reset point: its log is not the one its
/// offsets were about (recreated, truncated, or lost by the brokers).
pub(super) struct OffsetReset {
    pub(super) partition: i32,
    pub(super) reset: &'static str,
    pub(super) cause: ResetCause,
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
pub(super) struct RestoreDone<'a> {
    pub(super) partition: i32,
    /// `snapshot`, `rebuild` or `empty`.
    pub(super) from: &'a str,
    pub(super) replayed: u64,
    pub(super) started: Instant,
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

/// The latest snapshot of a partition was read but cannot be used.
pub(super) struct SnapshotUnusable<'a> {
    pub(super) partition: i32,
    pub(super) error: &'a SnapshotError,
}

impl Event for SnapshotUnusable<'_> {
    fn emit(self) {
        metrics::counter!(m::SNAPSHOT_ERRORS_TOTAL, "reason" => self.error.reason()).increment(1);
        tracing::error!(
            partition = self.partition,
            error = %self.error,
            "snapshot unusable: rebuilding the partition from its earliest input"
        );
    }
}

/// The state topic could not be read for a partition's snapshot.
pub(super) struct StateUnreadable<'a> {
    pub(super) partition: i32,
    pub(super) error: &'a StateReadError,
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
pub(super) struct SnapshotTooLarge {
    pub(super) partition: i32,
    pub(super) bytes: usize,
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
pub(super) struct SnapshotWritten {
    pub(super) partition: i32,
    pub(super) bytes: usize,
    pub(super) ok: bool,
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
pub(super) struct DeliveriesRetried {
    pub(super) count: u64,
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
pub(super) struct Refused<'a> {
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) rejection: &'a Rejection,
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
pub(super) struct CommitAnswered<'a> {
    pub(super) moved: &'a [(i32, i64)],
    pub(super) error: Option<&'a rdkafka::error::KafkaError>,
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
