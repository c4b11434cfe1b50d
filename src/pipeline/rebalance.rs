//! Rebalances, handled inside `recv`: a revoke finishes and commits the
//! partitions' work and snapshots them; an assignment restores each
//! partition (snapshot, replay up to the commit, or the reset point).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::lock;
use super::outage::position_beyond_end;
use crate::consumer::context::{ConsumerCtx, RebalanceHandler};
use crate::consumer::produce::finish_until;
use crate::consumer::realign::Realign;
use crate::consumer::restore::{Known, Plan, Start, StateFrom};
use crate::events::{self, Event};
use crate::kafka::{Health, RenewableProducer};
use crate::metrics as m;
use crate::pipeline::commit::commit;
use crate::pipeline::{Core, Restore};
use crate::state::StateStore;

/// Rebalance handling, called inside `recv`.
pub(super) struct Rebalancer {
    pub(super) core: Arc<Mutex<Core>>,
    pub(super) producer: Arc<RenewableProducer>,
    pub(super) store: Arc<StateStore>,
    pub(super) health: Arc<Health>,
    pub(super) topic: String,
    pub(super) timeout: Duration,
    /// Set when the pipeline stops: the end of the shutdown's bound, which
    /// the revoke of its leaving the group does not wait past (the bound
    /// is one, not one per step).
    pub(super) stop_by: std::sync::OnceLock<Instant>,
    /// Where a partition starts whose committed offset its log does not
    /// hold (`--auto-offset-reset`).
    pub(super) reset: crate::config::OffsetReset,
}

impl Rebalancer {
    pub(super) fn new(
        settings: &crate::config::Settings,
        core: &Arc<Mutex<Core>>,
        producer: &Arc<RenewableProducer>,
        store: &Arc<StateStore>,
        health: &Arc<Health>,
    ) -> Rebalancer {
        Rebalancer {
            core: core.clone(),
            producer: producer.clone(),
            store: store.clone(),
            health: health.clone(),
            topic: settings.input_topic.clone(),
            timeout: settings.shutdown_timeout,
            stop_by: std::sync::OnceLock::new(),
            reset: settings.auto_offset_reset,
        }
    }

    /// How long a revoke may wait from now: the shutdown timeout, and
    /// never past a stop's bound.
    fn deadline(&self) -> Instant {
        let own = Instant::now() + self.timeout;
        self.stop_by.get().map_or(own, |stop| own.min(*stop))
    }

    /// Waits (bounded) for the partitions' pending deliveries, then commits
    /// what is done. Offsets of what did not finish stay uncommitted: the
    /// next owner redoes it.
    pub(super) fn finish(&self, consumer: &BaseConsumer<ConsumerCtx>, partitions: &[i32]) {
        finish_until(self.deadline(), &self.producer, || {
            let mut core = lock(&self.core);
            core.drain(&self.producer);
            partitions.iter().any(|p| !core.ledger.idle(*p))
        });
        commit(
            consumer,
            &self.topic,
            &mut lock(&self.core),
            Some(partitions),
        );
    }

    /// Writes the final snapshots of `partitions` (those whose records are
    /// all acknowledged) and waits for them, bounded.
    pub(super) fn final_snapshots(&self, partitions: &[i32]) {
        let mut core = lock(&self.core);
        core.take_snapshots(&self.topic, Some(partitions));
        core.write_snapshots(&self.store);
        let unfinished: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| core.staged.contains_key(p))
            .collect();
        if !unfinished.is_empty() {
            tracing::warn!(partitions = ?unfinished, "deliveries unacknowledged: no final snapshot; the next owner replays from the previous one");
        }
        let deadline = self.deadline();
        while core.writes.iter().any(|(p, ..)| partitions.contains(p)) {
            let _ = self.store.flush(Duration::from_millis(100));
            core.write_snapshots(&self.store);
            if Instant::now() >= deadline {
                tracing::warn!("final snapshots not acknowledged in time");
                break;
            }
        }
    }

    /// Restores one assigned partition; returns its plan (where it starts,
    /// what it replays, where its state came from) and the log's low
    /// watermark when it was read.
    pub(super) fn restore(
        &self,
        consumer: &BaseConsumer<ConsumerCtx>,
        partition: i32,
        committed: Option<i64>,
    ) -> (Plan, Option<i64>) {
        let snapshot = self.restore_snapshot(partition);
        let mut known = Known {
            snapshot,
            committed,
            low: None,
            committed_beyond_log: false,
            reset: self.reset,
        };
        if let Some(until) = committed {
            let marks = consumer
                .fetch_watermarks(&self.topic, partition, Duration::from_secs(5))
                .ok();
            // Only a low watermark the broker gave is handed on.
            known.low = marks.map(|(low, _)| low);
            let high = marks.map_or(i64::MAX, |(_, high)| high);
            // ListOffsets only raises the suspicion of a commit past the
            // log's end; a fetch decides (`StateStore::log_reaches`: Tansu
            // 0.6 answers below the true end, by up to a batch).
            known.committed_beyond_log =
                position_beyond_end(until, high) && !self.log_reaches(partition, until, high);
            if known.committed_beyond_log {
                events::OffsetReset {
                    partition,
                    reset: self.reset.as_str(),
                    cause: events::ResetCause::CommittedBeyondLog {
                        committed: until,
                        log_end: high,
                    },
                }
                .emit();
            }
        }
        (Plan::for_partition(&known), known.low)
    }

    /// Reads `partition`'s latest snapshot and restores it into the engine;
    /// returns the offset it continues from, or `None` when there is none
    /// or it cannot be used (said in the log and counted).
    fn restore_snapshot(&self, partition: i32) -> Option<i64> {
        match self.store.read_latest(partition, self.timeout) {
            Ok(Some(bytes)) => {
                tracing::debug!(partition, bytes = bytes.len(), "snapshot read");
                let mut core = lock(&self.core);
                core.engine.drop_partition(partition);
                match core
                    .engine
                    .restore_state_record(&bytes, partition, &self.topic)
                {
                    Ok(offset) => Some(offset),
                    Err(error) => {
                        events::SnapshotUnusable {
                            partition,
                            error: &error,
                        }
                        .emit();
                        None
                    }
                }
            }
            Ok(None) => None,
            Err(error) => {
                events::StateUnreadable {
                    partition,
                    error: &error,
                }
                .emit();
                None
            }
        }
    }

    /// Whether the input log of `partition` reaches `end` although
    /// ListOffsets answered `high`: asked of a fetch. Unanswered, the
    /// broker's answer stands.
    fn log_reaches(&self, partition: i32, end: i64, high: i64) -> bool {
        let answer =
            self.store
                .log_reaches(&self.topic, partition, end, high, Duration::from_secs(5));
        if answer.is_none() {
            tracing::warn!(
                partition,
                end,
                high,
                "log end unconfirmed by a fetch; trusting ListOffsets"
            );
        }
        answer == Some(true)
    }

    /// A partition starting at an offset starts fetching a little before
    /// it (see `Realign`); `low`: the log's start, when already read.
    fn realign(
        &self,
        consumer: &BaseConsumer<ConsumerCtx>,
        p: i32,
        start: Start,
        low: Option<i64>,
    ) -> Option<Realign> {
        let Start::At(s) = start else {
            return None;
        };
        if s <= 0 {
            return None;
        }
        // (The high watermark cannot tell whether `s` is at the end: Tansu
        // 0.6 answers the last batch's base offset + 1.)
        let low = low.unwrap_or_else(|| {
            consumer
                .fetch_watermarks(&self.topic, p, Duration::from_secs(5))
                .map_or(s, |(low, _)| low)
        });
        Realign::start(s, low, Instant::now())
    }

    /// Starts assigned partition `p`, committed at `c`: its state restored,
    /// where it fetches from set in `tpl`, its replay up to the commit
    /// begun.
    fn start(
        &self,
        consumer: &BaseConsumer<ConsumerCtx>,
        p: i32,
        c: Option<i64>,
        tpl: &mut TopicPartitionList,
    ) {
        let started = Instant::now();
        let (plan, low) = self.restore(consumer, p, c);
        let from = plan.from.as_str();
        let start = match plan.start {
            Start::At(s) => Offset::Offset(s),
            Start::Earliest => Offset::Beginning,
            Start::Latest => Offset::End,
            Start::Client => Offset::Invalid,
        };
        let realign = self.realign(consumer, p, plan.start, low);
        let fetch_from = realign.map_or(start, |r| Offset::Offset(r.from()));
        if !matches!(fetch_from, Offset::Invalid) {
            if let Err(e) = tpl.set_partition_offset(&self.topic, p, fetch_from) {
                tracing::error!(partition = p, error = %e, "cannot set the start offset");
            }
        }
        let mut core = lock(&self.core);
        match realign {
            Some(r) => core.realign.insert(p, r),
            None => core.realign.remove(&p),
        };
        if let (Start::At(s), StateFrom::Snapshot) = (plan.start, plan.from) {
            core.next.insert(p, s);
            core.snapshotted.insert(p, s);
            // A snapshot is written only once every alert and dead
            // letter before it is delivered, but the commit that
            // follows it can be lost (a broker gone in between): what
            // it reflects is done, so it is committed, even if no
            // record comes after it.
            if c.is_none_or(|c| s > c) {
                core.ledger.done_up_to(p, s);
            }
        }
        match plan.replay_until {
            Some(until) => {
                tracing::info!(
                    partition = p,
                    from,
                    start = ?start,
                    until,
                    "partition restoring: replaying input up to the committed offset, without alerts"
                );
                core.restoring.insert(
                    p,
                    Restore {
                        until,
                        started,
                        replayed: 0,
                        from,
                    },
                );
                self.health.restoring.fetch_add(1, Ordering::Relaxed);
            }
            None => events::RestoreDone {
                partition: p,
                from,
                replayed: 0,
                started,
            }
            .emit(),
        }
        metrics::gauge!(m::STATE_RESTORING).set(core.restoring.len() as f64);
    }
}

impl RebalanceHandler for Rebalancer {
    fn revoke(&self, consumer: &BaseConsumer<ConsumerCtx>, partitions: &[i32], lost: bool) {
        if !lost {
            self.finish(consumer, partitions);
            self.final_snapshots(partitions);
        }
        lock(&self.core).forget(partitions, &self.health);
    }

    fn assign(
        &self,
        consumer: &BaseConsumer<ConsumerCtx>,
        partitions: &[i32],
        tpl: &mut TopicPartitionList,
    ) {
        let mut ask = TopicPartitionList::new();
        for p in partitions {
            let _ = ask.add_partition(&self.topic, *p);
        }
        // The topic's partition count, for the share alerts cover (it
        // changes only with a rebalance).
        let total =
            crate::kafka::partition_count(consumer.client(), &self.topic, Duration::from_secs(5));
        {
            let mut core = lock(&self.core);
            core.owned.extend(partitions);
            if let Some(n) = total {
                core.input_partitions = u32::try_from(n).unwrap_or(0);
            }
        }
        let committed = consumer
            .committed_offsets(ask, self.timeout)
            .map_err(|e| tracing::warn!(error = %e, "committed offsets unknown"))
            .ok();
        for &p in partitions {
            let c = committed
                .as_ref()
                .and_then(|t| t.find_partition(&self.topic, p))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) if o >= 0 => Some(o),
                    _ => None,
                });
            self.start(consumer, p, c, tpl);
        }
    }
}
