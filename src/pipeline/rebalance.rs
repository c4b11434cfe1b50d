//! Rebalances, handled inside `recv`: a revoke finishes and commits the
//! partitions' work and snapshots them; an assignment restores each
//! partition (snapshot, replay up to the commit, or the reset point).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::lock;
use crate::consumer::assign::{self, Facts, Started};
use crate::consumer::context::{ConsumerCtx, RebalanceHandler};
use crate::consumer::handover::Handover;
use crate::consumer::restore::{Start, StateFrom};
use crate::events::{self, Event};
use crate::kafka::{Health, RenewableProducer};
use crate::metrics as m;
use crate::pipeline::{Core, Restore};
use crate::state::StateStore;

/// Rebalance handling, called inside `recv`.
pub(super) struct Rebalancer {
    pub(super) core: Arc<Mutex<Core>>,
    pub(super) producer: Arc<RenewableProducer>,
    pub(super) store: Arc<StateStore>,
    pub(super) health: Arc<Health>,
    pub(super) topic: String,
    /// Revokes and the stop: deliveries waited for, commits, final
    /// snapshots.
    pub(super) handover: Handover,
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
            handover: Handover::new("pipeline", settings.shutdown_timeout),
            reset: settings.auto_offset_reset,
        }
    }

    /// Reads `partition`'s latest snapshot and restores it into the engine;
    /// returns the offset it continues from, or `None` when there is none
    /// or it cannot be used (said in the log and counted).
    fn restore_snapshot(&self, partition: i32) -> Option<i64> {
        match self.store.read_latest(partition, self.handover.timeout) {
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
        let facts = Facts {
            topic: &self.topic,
            partition: p,
            snapshot: self.restore_snapshot(p),
            committed: c,
            reset: self.reset,
        };
        let Started {
            plan,
            realign,
            committed_beyond_log,
            high,
            ..
        } = assign::start(consumer, &self.store, &facts, tpl);
        if let (true, Some(committed), Some(log_end)) = (committed_beyond_log, c, high) {
            events::OffsetReset {
                partition: p,
                reset: self.reset.as_str(),
                cause: events::ResetCause::CommittedBeyondLog { committed, log_end },
            }
            .emit();
        }
        let from = plan.from.as_str();
        let mut core = lock(&self.core);
        core.positions.realign(p, realign);
        if let (Start::At(s), StateFrom::Snapshot) = (plan.start, plan.from) {
            core.positions.set_next(p, s);
            core.snapshots.restored(p, s);
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
                    start = ?plan.start,
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
        let (core, store) = (&*self.core, &*self.store);
        self.handover
            .revoke(core, consumer, &self.producer, store, partitions, lost);
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
        if let Some(n) = total {
            metrics::gauge!(m::TOPIC_PARTITIONS, "topic" => self.topic.clone()).set(f64::from(n));
        }
        let committed = consumer
            .committed_offsets(ask, self.handover.timeout)
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
