//! The case tracker's consumer: the shared recipe, subscribed to the
//! alerts and case-events topics with the range assignor (partition *i*
//! of both to one member), and its rebalances, handled inside `recv`: a
//! revoke finishes, commits and snapshots the partitions; an assignment
//! restores each one (its snapshot, then a replay up to the committed
//! offsets).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use super::{Core, Src, lock};
use crate::config::Settings;
use crate::consumer::assign::{self, Facts};
use crate::consumer::context::{ConsumerCtx, RebalanceHandler, Recipe};
use crate::consumer::handover::Handover;
use crate::consumer::holds::Holds;
use crate::kafka::{Health, RenewableProducer};
use crate::state::StateStore;

/// The case tracker's rebalances: a revoke finishes, commits and
/// snapshots the partitions; an assignment restores each one.
struct Rebalancer {
    core: Arc<Mutex<Core>>,
    producer: Arc<RenewableProducer>,
    store: Arc<StateStore>,
    settings: Settings,
    handover: Arc<Handover>,
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

    /// Through the shared hand-over (`consumer::handover`): a lost
    /// assignment is only forgotten.
    fn revoke(&self, consumer: &BaseConsumer<ConsumerCtx>, alerts_partitions: &[i32], lost: bool) {
        let (core, store) = (&*self.core, &*self.store);
        self.handover.revoke(
            core,
            consumer,
            &self.producer,
            store,
            alerts_partitions,
            lost,
        );
    }
}

/// The case tracker's fetch buffers: it reads alerts (one per detractor)
/// and case events, a fraction of the input's records and bytes, so
/// librdkafka's defaults (a 64 MiB fetch queue, 50 MiB fetches, sized for
/// the input's rate) would only hold memory. 8 MiB queued and 4 MiB per
/// fetch still keep thousands of alerts in hand; `-X` overrides both.
pub(crate) const FETCH: [(&str, &str); 2] = [
    ("queued.max.messages.kbytes", "8192"),
    ("fetch.max.bytes", "4194304"),
];

/// The case tracker's consumer, subscribed to both topics.
pub(super) fn subscribe(
    settings: &Settings,
    core: &Arc<Mutex<Core>>,
    producer: &Arc<RenewableProducer>,
    store: &Arc<StateStore>,
    handover: &Arc<Handover>,
    beat: Arc<crate::liveness::Beat>,
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
        beat,
        defaults: &FETCH,
    };
    let handler = Rebalancer {
        core: core.clone(),
        producer: producer.clone(),
        store: store.clone(),
        settings: settings.clone(),
        handover: handover.clone(),
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
                let topic = src.topic(&self.settings);
                let done = committed
                    .as_ref()
                    .and_then(|t| t.find_partition(topic, p))
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    });
                let facts = Facts {
                    topic,
                    partition: p,
                    snapshot: snapshot.as_ref().map(|s| match src {
                        Src::Alerts => s.alerts_next_offset,
                        Src::Events => s.events_next_offset,
                    }),
                    committed: done,
                    reset: self.settings.auto_offset_reset,
                };
                let started = assign::start(consumer, &self.store, &facts, tpl);
                if let Some(d) = started.plan.replay_until {
                    c.replay_until.insert((src, p), d);
                }
                c.positions.realign((src, p), started.realign);
                let Some(first) = started.first else {
                    continue;
                };
                // A commit past the log's end belongs to a log that is gone.
                let done = done.filter(|_| !started.committed_beyond_log);
                c.ledgers[src as usize].done_up_to(p, done.unwrap_or(first).max(first));
                c.positions.set_next((src, p), first);
                if let Some(high) = started.high.filter(|high| *high > first) {
                    c.catching_up.insert((src, p), high);
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
                Err(e) => {
                    if let crate::cases::CasesSnapshotError::Version(found) = e {
                        crate::events::Event::emit(crate::events::SnapshotVersionUnreadable {
                            state: "cases",
                            found,
                            reads: (
                                crate::cases::CASES_OLDEST_READ,
                                crate::cases::CASES_FORMAT_VERSION,
                            ),
                        });
                    }
                    format!("case snapshot unreadable: {e}")
                }
            },
            Err(e) => format!("case snapshot not read: {e}"),
        };
        tracing::warn!(partition = p, error = %why, "rebuilding the partition's cases from the topics");
        None
    }
}
