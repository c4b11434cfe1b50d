//! Offset commits: the periodic one (synchronous, off the consuming task,
//! its answer counted), the early one once reading is quiet and every
//! delivery is acknowledged (`EarlyCommit`), and the synchronous ones on
//! revoke and shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

use super::lock;
use crate::consumer::context::ConsumerCtx;
use crate::events::{self, Event};
use crate::pipeline::{Core, Pipeline};

/// The offsets to commit, as Kafka wants them.
pub(super) fn offsets(topic: &str, moved: &[(i32, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (p, off) in moved {
        let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*off));
    }
    tpl
}

/// Offsets of the periodic commit, and the broker's answer.
pub(super) type CommitOutcome = (Vec<(i32, i64)>, KafkaResult<()>);

/// Starts the periodic commit of what is done and not yet committed, on a
/// thread of its own: librdkafka tells an application the outcome of its
/// asynchronous commits only through an `offset_commit_cb`, which
/// rust-rdkafka does not install, so the commit is synchronous (its answer
/// counted and only then recorded as committed) but off the consuming
/// task, which a slow broker must not hold up. The thread is detached: a
/// stop never waits for it (the final commit is made anew). Returns
/// whether one was started.
pub(super) fn start_commit(
    consumer: &Arc<StreamConsumer<ConsumerCtx>>,
    topic: &str,
    core: &Core,
    results: &tokio::sync::mpsc::UnboundedSender<CommitOutcome>,
) -> bool {
    let moved = core.ledger.committable(None, false);
    if moved.is_empty() {
        return false;
    }
    let tpl = offsets(topic, &moved);
    let consumer = consumer.clone();
    let results = results.clone();
    let started = std::thread::Builder::new()
        .name("nps-commit".into())
        .spawn(move || {
            let result = consumer.commit(&tpl, CommitMode::Sync);
            let _ = results.send((moved, result));
        });
    match started {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the commit thread; will retry");
            false
        }
    }
}

/// Records a commit's outcome as the broker answered it.
pub(super) fn commit_done(core: &mut Core, (moved, result): CommitOutcome) {
    events::CommitAnswered {
        moved: &moved,
        error: result.as_ref().err(),
    }
    .emit();
    if result.is_ok() {
        core.ledger.committed(moved);
    }
}

impl Pipeline {
    /// Starts a commit on its thread, unless one is on its way or the
    /// brokers are cut off (the group may be gone when they come back, and
    /// its offsets with it).
    pub(super) fn start_commit(&mut self, consumer: &Arc<StreamConsumer<ConsumerCtx>>) {
        if !self.guard.paused() && !self.committing {
            self.committing = start_commit(
                consumer,
                &self.settings.input_topic,
                &lock(&self.core),
                &self.commits,
            );
            self.early.started(Instant::now());
        }
    }

    /// Commits before the one-second tick once reading is quiet and every
    /// delivery is acknowledged (`EarlyCommit`).
    pub(super) fn commit_early(&mut self, consumer: &Arc<StreamConsumer<ConsumerCtx>>) {
        if self.early.due(Instant::now(), self.in_flight) {
            self.start_commit(consumer);
        }
    }

    /// Records the periodic commit's answer.
    pub(super) fn commit_answered(&mut self, outcome: CommitOutcome) {
        self.committing = false;
        commit_done(&mut lock(&self.core), outcome);
    }
}

/// How long reading must have been quiet before an early commit.
const QUIET: Duration = Duration::from_millis(50);
/// Least time between two commits started early.
const EARLY_GAP: Duration = Duration::from_millis(200);

/// When to commit before the one-second tick: once reading has gone quiet
/// (no record for `QUIET`) and every delivery is acknowledged, so the
/// group's committed offsets, and the lag that Kafka's tools show from
/// them, reach the end of a burst within a fraction of a second instead of
/// up to a second later (docs/performance.md has what this costs in
/// throughput). At most one every `EARLY_GAP`: a
/// trickle of records does not turn into a commit per record. Takes `now`
/// as an argument, does no I/O.
#[derive(Debug)]
pub(super) struct EarlyCommit {
    last_record: Instant,
    last_commit: Instant,
    /// Records handled since the last commit started.
    uncommitted: bool,
}

impl EarlyCommit {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            last_record: now,
            last_commit: now,
            uncommitted: false,
        }
    }

    /// Records were handled at `now`.
    pub(super) fn records(&mut self, now: Instant) {
        self.last_record = now;
        self.uncommitted = true;
    }

    /// Offsets were freed by acknowledgements (after a commit that came
    /// while their deliveries were on their way).
    pub(super) fn freed(&mut self) {
        self.uncommitted = true;
    }

    /// A commit (periodic or early) was started at `now`.
    pub(super) fn started(&mut self, now: Instant) {
        self.last_commit = now;
        self.uncommitted = false;
    }

    /// Whether to commit now, with `in_flight` deliveries unacknowledged.
    pub(super) fn due(&self, now: Instant, in_flight: usize) -> bool {
        self.uncommitted
            && in_flight == 0
            && now.saturating_duration_since(self.last_record) >= QUIET
            && now.saturating_duration_since(self.last_commit) >= EARLY_GAP
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_early_commit_comes_once_reading_is_quiet_and_all_is_acknowledged() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut e = EarlyCommit::new(t0);
        assert!(!e.due(at(5_000), 0), "nothing handled since the start");
        e.records(at(1_000));
        assert!(!e.due(at(1_020), 0), "reading not quiet yet");
        assert!(!e.due(at(1_060), 3), "deliveries unacknowledged");
        assert!(e.due(at(1_060), 0));
        e.started(at(1_060));
        assert!(!e.due(at(1_500), 0), "nothing handled since");
        // A trickle: one record every 60 ms commits at most every 200 ms.
        e.records(at(1_100));
        assert!(!e.due(at(1_200), 0), "too soon after the last commit");
        assert!(e.due(at(1_260), 0));
        // The periodic commit counts as well.
        e.started(at(1_260));
        e.records(at(1_300));
        assert!(!e.due(at(1_400), 0));
        assert!(e.due(at(1_460), 0));
        // A commit while deliveries were on their way; their offsets are
        // freed later, with no record since: one more commit for them.
        e.started(at(1_460));
        assert!(!e.due(at(1_700), 0));
        e.freed();
        assert!(e.due(at(1_700), 0));
    }
}
