//! The case tracker's consumer: the shared recipe, subscribed to the
//! alerts and case-events topics with the range assignor (partition *i*
//! of both to one member), and its rebalances, handled inside `recv`: a
//! revoke finishes, commits and snapshots the partitions; an assignment
//! restores each one (its snapshot, then a replay up to the committed
//! offsets).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use super::{Core, Src, commit_sync, lock};
use crate::config::Settings;
use crate::consumer::context::{ConsumerCtx, RebalanceHandler, Recipe};
use crate::consumer::holds::Holds;
use crate::consumer::produce::finish_until;
use crate::consumer::restore::{Known, Plan};
use crate::kafka::{Health, RenewableProducer};
use crate::state::StateStore;

/// The case tracker's rebalances: a revoke finishes, commits and
/// snapshots the partitions; an assignment restores each one.
struct Rebalancer {
    core: Arc<Mutex<Core>>,
    producer: Arc<RenewableProducer>,
    store: Arc<StateStore>,
    settings: Settings,
}

impl RebalanceHandler for Rebalancer {
    fn assign(
        &self,
        consumer: &BaseConsumer<ConsumerCtx>,
        _alerts_partitions: &[i32],
        tpl: &mut TopicPartitionList,
    ) {
        self.restore(consumer, tpl);
    }

    /// A lost assignment is finished too: what is delivered is committed
    /// (another owner only reads it again).
    fn revoke(&self, consumer: &BaseConsumer<ConsumerCtx>, alerts_partitions: &[i32], _lost: bool) {
        self.finish(consumer, alerts_partitions);
    }
}

/// The case tracker's consumer, subscribed to both topics.
pub(super) fn subscribe(
    settings: &Settings,
    core: &Arc<Mutex<Core>>,
    producer: &Arc<RenewableProducer>,
    store: &Arc<StateStore>,
) -> crate::error::Result<StreamConsumer<ConsumerCtx>> {
    let group = format!("{}-cases", settings.group_id);
    let recipe = Recipe {
        brokers: &settings.brokers,
        properties: &settings.kafka,
        group: &group,
        topics: &[&settings.alerts_topic, &settings.cases.case_events_topic],
        reset: settings.auto_offset_reset,
        co_partitioned: true,
        reports: false,
        what: "the case tracker's consumer",
    };
    let handler = Rebalancer {
        core: core.clone(),
        producer: producer.clone(),
        store: store.clone(),
        settings: settings.clone(),
    };
    // Its own Health: the readiness and broker gauges are the main
    // pipeline's.
    crate::consumer::context::subscribe(&recipe, Health::new(), Arc::new(handler), Holds::default())
}

impl Rebalancer {
    /// Restores each assigned partition and sets where both topics start.
    fn restore(&self, consumer: &BaseConsumer<ConsumerCtx>, tpl: &mut TopicPartitionList) {
        let timeout = Duration::from_secs(10);
        let parts: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let committed = consumer.committed_offsets(tpl.clone(), timeout).ok();
        let mut c = lock(&self.core);
        for &p in &parts {
            let snapshot = self.restore_snapshot(&mut c, p, timeout);
            for src in [Src::Alerts, Src::Events] {
                let topic = src.topic(&self.settings).to_string();
                let done = committed
                    .as_ref()
                    .and_then(|t| t.find_partition(&topic, p))
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    });
                let marks = consumer.fetch_watermarks(&topic, p, timeout).ok();
                let (low, high) = marks.unwrap_or((0, 0));
                let reset = self.settings.auto_offset_reset;
                // A commit past the log's end is not looked for here: the
                // replay waits for the offset (`Core::replay_until`).
                let plan = Plan::for_partition(&Known {
                    snapshot: snapshot.as_ref().map(|s| match src {
                        Src::Alerts => s.alerts_next_offset,
                        Src::Events => s.events_next_offset,
                    }),
                    committed: done,
                    low: marks.map(|(low, _)| low),
                    committed_beyond_log: false,
                    reset,
                });
                let from = plan.first_offset(low, high, reset);
                if let Some(d) = plan.replay_until {
                    c.replay_until.insert((src, p), d);
                }
                c.ledgers[src as usize].done_up_to(p, done.unwrap_or(from).max(from));
                c.next.insert((src, p), from);
                if high > from {
                    c.catching_up.insert((src, p), high);
                }
                // From a snapshot: fetching starts a little before it and
                // skips what it holds (Tansu 0.6 answers a fetch from inside
                // a batch with the next one: docs/operations.md).
                let realign = snapshot.as_ref().and_then(|_| {
                    crate::consumer::realign::Realign::start(from, low, std::time::Instant::now())
                });
                let fetch_from = realign.map_or(from, |r| r.from());
                match realign {
                    Some(r) => c.realign.insert((src, p), r),
                    None => c.realign.remove(&(src, p)),
                };
                if let Some(mut e) = tpl.find_partition(&topic, p) {
                    let _ = e.set_offset(Offset::Offset(fetch_from));
                }
            }
            c.assigned.insert(p);
            tracing::info!(
                partition = p,
                restored = snapshot.is_some(),
                "case tracker partition assigned"
            );
        }
    }

    /// Reads partition `p`'s latest snapshot and restores it into the
    /// tracker; None when there is none or it cannot be used (said in the
    /// log): the partition is rebuilt from the topics.
    fn restore_snapshot(
        &self,
        c: &mut Core,
        p: i32,
        timeout: Duration,
    ) -> Option<crate::pb::CasesPartitionSnapshot> {
        let why = match self.store.read_latest(p, timeout) {
            Ok(None) => return None,
            Ok(Some(bytes)) => match crate::cases::decode_snapshot(&bytes) {
                Ok(s) => match c.tracker.restore_partition(&s) {
                    Ok(()) => return Some(s),
                    Err(e) => format!("case snapshot refused: {e}"),
                },
                Err(e) => format!("case snapshot unreadable: {e}"),
            },
            Err(e) => format!("case snapshot not read: {e}"),
        };
        tracing::warn!(partition = p, error = %why, "rebuilding the partition's cases from the topics");
        None
    }

    /// Finishes the partitions' deliveries (bounded), commits, snapshots
    /// and forgets them.
    fn finish(&self, consumer: &BaseConsumer<ConsumerCtx>, parts: &[i32]) {
        // After the loop's stop (closing the consumer), all is done.
        let stopped = lock(&self.core).stopped;
        let deadline = if stopped {
            Instant::now()
        } else {
            Instant::now() + self.settings.shutdown_timeout
        };
        finish_until(deadline, &self.producer, || {
            let mut c = lock(&self.core);
            c.drain(&self.producer, false);
            c.sending() > 0
        });
        if !stopped {
            commit_sync(consumer, &lock(&self.core), &self.settings, Some(parts));
            write_snapshots(&self.core, &self.store, Some(parts), deadline);
        }
        let mut c = lock(&self.core);
        c.forget(parts);
        for p in parts {
            c.assigned.remove(p);
        }
        tracing::info!(partitions = ?parts, "case tracker partitions revoked");
    }
}

/// Sends partition `p`'s snapshot to the state topic; `Core::writes`
/// follows its delivery. The producer keeps its own copy: the buffer is
/// kept for the next snapshot (`Core::spare`).
pub(super) fn write_snapshot(c: &mut Core, store: &StateStore, p: i32, bytes: Vec<u8>) {
    match store.write(p, &bytes) {
        Ok(f) => {
            c.writes.push((p, f));
            c.purge = true;
        }
        Err(e) => tracing::warn!(partition = p, error = %e, "case snapshot not written"),
    }
    c.spare = bytes;
}

/// Writes the snapshot of each partition (of `partitions`, or every
/// assigned one) whose escalations are delivered, all at once (a revoke,
/// a stop; the periodic rounds go one partition at a time,
/// `Core::next_in_round`); waits for the writes until `deadline` (not at
/// all when it has passed).
pub(super) fn write_snapshots(
    core: &Mutex<Core>,
    store: &StateStore,
    partitions: Option<&[i32]>,
    deadline: Instant,
) {
    let mut c = lock(core);
    let parts: Vec<i32> = match partitions {
        Some(ps) => ps.to_vec(),
        None => c.assigned.iter().copied().collect(),
    };
    for p in parts {
        // A write for this partition still on its way: the next round.
        if c.writes.iter().any(|(q, _)| *q == p) {
            continue;
        }
        if let Some(bytes) = c.snapshot_to_write(p) {
            write_snapshot(&mut c, store, p, bytes);
        }
    }
    drop(c);
    while Instant::now() < deadline {
        let _ = store.flush(Duration::from_millis(100));
        let mut c = lock(core);
        c.writes
            .retain_mut(|(_, f)| futures::FutureExt::now_or_never(f).is_none());
        if c.writes.is_empty() {
            break;
        }
    }
}
