//! The case tracker's consumer: subscribed to the alerts and case-events
//! topics with the range assignor (partition *i* of both to one member),
//! and its rebalances, handled inside `recv`: a revoke finishes, commits
//! and snapshots the partitions; an assignment restores each one (its
//! snapshot, then a replay up to the committed offsets).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{Core, Src, commit_sync, lock};
use crate::config::Settings;
use crate::consumer::holds::Holds;
use crate::consumer::produce::finish_until;
use crate::consumer::restore::{Known, Plan};
use crate::kafka::{Health, RenewableProducer, Role, blocking, log_client, on_client_error};
use crate::state::StateStore;

pub(super) struct CasesCtx {
    health: Arc<Health>,
    /// Told when this consumer loses every broker: the loop pauses
    /// fetching at once rather than at its next tick (a fetch still going
    /// when a broker comes back without its data crashes librdkafka as
    /// released).
    pub(super) cut_off: Arc<tokio::sync::Notify>,
    core: Arc<Mutex<Core>>,
    producer: Arc<RenewableProducer>,
    store: Arc<StateStore>,
    settings: Settings,
    /// Why the loop holds fetching paused: partitions come in paused while
    /// it does, and leave resumed (`Holds`).
    pub(super) holds: Holds,
}

impl ClientContext for CasesCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
            self.cut_off.notify_one();
        }
        on_client_error(&self.health, Role::Consumer, &error, reason);
    }
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_client(level, fac, message);
    }
}

impl ConsumerContext for CasesCtx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        blocking(|| match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assign(consumer, tpl);
                if let Err(e) = consumer.assign(tpl) {
                    tracing::error!(error = %e, "case tracker: assigning partitions failed");
                }
                self.holds.on_assigned(consumer, tpl);
            }
            _ => {
                self.revoke(consumer, tpl);
                self.holds.on_revoking(consumer, tpl);
                let _ = consumer.unassign();
            }
        });
    }
}

/// The case tracker's consumer, subscribed to both topics.
pub(super) fn subscribe(
    settings: &Settings,
    health: &Arc<Health>,
    core: &Arc<Mutex<Core>>,
    producer: &Arc<RenewableProducer>,
    store: &Arc<StateStore>,
) -> crate::error::Result<StreamConsumer<CasesCtx>> {
    let group = format!("{}-cases", settings.group_id);
    let consumer: StreamConsumer<CasesCtx> = crate::kafka::client_config(
        &settings.brokers,
        &[
            ("auto.offset.reset", settings.auto_offset_reset.as_str()),
            ("topic.metadata.refresh.interval.ms", "10000"),
        ],
        &settings.kafka,
    )
    .set("statistics.interval.ms", "0")
    .set("group.id", &group)
    .set("enable.auto.commit", "false")
    .set("enable.auto.offset.store", "false")
    // Range hands partition i of every subscribed topic to one member:
    // a case and its events meet.
    .set("partition.assignment.strategy", "range")
    .create_with_context(CasesCtx {
        health: health.clone(),
        cut_off: Arc::new(tokio::sync::Notify::new()),
        core: core.clone(),
        producer: producer.clone(),
        store: store.clone(),
        settings: settings.clone(),
        holds: Holds::default(),
    })
    .map_err(|source| crate::error::Error::Client {
        what: "the case tracker's consumer",
        source,
    })?;
    let topics = [
        settings.alerts_topic.as_str(),
        settings.cases.case_events_topic.as_str(),
    ];
    consumer
        .subscribe(&topics)
        .map_err(|source| crate::error::Error::Subscribe {
            topic: topics.join(","),
            source,
        })?;
    Ok(consumer)
}

impl CasesCtx {
    /// Restores each assigned partition and sets where both topics start.
    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let timeout = Duration::from_secs(10);
        let parts: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let committed = consumer.committed_offsets(tpl.clone(), timeout).ok();
        let mut c = lock(&self.core);
        for &p in &parts {
            let snapshot = match self.store.read_latest(p, timeout) {
                Ok(Some(bytes)) => match crate::cases::decode_snapshot(&bytes) {
                    Ok(s) => match c.tracker.restore_partition(&s) {
                        Ok(()) => Some(s),
                        Err(e) => {
                            tracing::warn!(partition = p, error = %e, "case snapshot refused; rebuilding from the topics");
                            None
                        }
                    },
                    Err(e) => {
                        tracing::warn!(partition = p, error = %e, "case snapshot unreadable; rebuilding from the topics");
                        None
                    }
                },
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "case snapshot not read; rebuilding from the topics");
                    None
                }
            };
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

    /// Finishes the partitions' deliveries (bounded), commits, snapshots
    /// and forgets them.
    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let parts: Vec<i32> = tpl
            .elements()
            .iter()
            .filter(|e| Src::of(e.topic(), &self.settings) == Src::Alerts)
            .map(|e| e.partition())
            .collect();
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
            commit_sync(consumer, &lock(&self.core), &self.settings, Some(&parts));
            write_snapshots(&self.core, &self.store, Some(&parts), deadline);
        }
        let mut c = lock(&self.core);
        c.forget(&parts);
        for p in &parts {
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
