//! Brokers out of reach: fetching paused while cut off, resumed once the
//! input topic is back, offsets the brokers forgot dropped, and a member
//! left without partitions after an outage made to rejoin.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

use super::lock;
use crate::config::Settings;
use crate::consumer::context::ConsumerCtx;
use crate::consumer::holds::{Hold, Holds};
use crate::consumer::seek;
use crate::events::{self, Event};
use crate::kafka::Health;
use crate::pipeline::Core;
use crate::state::StateStore;

/// Stops fetching while no broker is reachable, and starts again only once
/// a broker answers metadata for the input topic with its partitions.
///
/// A broker that comes back without its data (or with the topic
/// recreated) no longer knows the topic id the consumer fetched with. Some
/// brokers (Tansu 0.6) answer such a fetch with a zero topic id and a
/// leader hint, which librdkafka 2.12 as released turns into a metadata
/// update for a topic with neither name nor id, and crashes on (the copy
/// in vendor/rdkafka-sys skips it; docs/operations.md, Known issues).
/// Fresh metadata gives the consumer the topic's new id first; a topic
/// that is not there yet is waited for, fetching nothing.
pub(super) struct OutageGuard {
    /// The consumer's holds: `Hold::CutOff` is this guard's.
    holds: Holds,
    /// The outage paused a non-empty assignment (see `watch`).
    had_partitions: bool,
    pub(super) told_missing: bool,
    /// After an outage that took this member's partitions, until when to
    /// watch for them to come back, and when the group was last rejoined.
    pub(super) watch_until: Option<Instant>,
    pub(super) rejoined: Option<Instant>,
    pub(super) rejoins: u32,
}

/// How long after an outage a member that lost its partitions keeps
/// asking for them, and how often.
pub(super) const REJOIN_WATCH: Duration = Duration::from_secs(300);
pub(super) const REJOIN_EVERY: Duration = Duration::from_secs(10);

pub(super) fn topic_listed(
    consumer: &StreamConsumer<ConsumerCtx>,
    topic: &str,
) -> KafkaResult<bool> {
    // Blocking, at most two seconds.
    tokio::task::block_in_place(|| consumer.fetch_metadata(Some(topic), Duration::from_secs(2)))
        .map(|md| {
            md.topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        })
}

impl OutageGuard {
    pub(super) fn new(holds: Holds) -> OutageGuard {
        OutageGuard {
            holds,
            had_partitions: false,
            told_missing: false,
            watch_until: None,
            rejoined: None,
            rejoins: 0,
        }
    }

    /// Fetching is paused for the outage.
    pub(super) fn paused(&self) -> bool {
        self.holds.has(Hold::CutOff)
    }

    /// Returns true when the consumer should be replaced by a new one
    /// (see `watch`).
    pub(super) fn check(
        &mut self,
        consumer: &StreamConsumer<ConsumerCtx>,
        core: &Mutex<Core>,
        store: &StateStore,
        health: &Health,
        settings: &Settings,
    ) -> bool {
        let topic = settings.input_topic.as_str();
        let up = health.consumer_brokers_up();
        if !self.paused() {
            if up == 0 {
                self.pause(consumer);
                return false;
            }
            return self.watch(consumer, topic);
        }
        if up <= 0 {
            return false;
        }
        // Once a second, only while paused.
        if !self.input_listed(consumer, topic) {
            return false;
        }
        // What is assigned now: a rebalance may have happened.
        let assignment = match consumer.assignment() {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "assignment unknown; retrying");
                return false;
            }
        };
        let Some(lost) = lost_offsets(consumer, &assignment, core, settings) else {
            return false;
        };
        // Snapshots need it before the next restore or write.
        tokio::task::block_in_place(|| store.ensure_topic());
        // An empty assignment: the group may have re-formed while the
        // topic was missing (see `watch`).
        if !self.holds.reconnected(consumer, &assignment) {
            return false;
        }
        if self.had_partitions {
            self.watch_until = Some(Instant::now() + REJOIN_WATCH);
        }
        self.had_partitions = false;
        self.told_missing = false;
        tracing::info!(topic, "fetching resumed");
        // The others fetch again from their next record.
        let kept: Vec<i32> = assignment
            .elements()
            .iter()
            .map(|e| e.partition())
            .filter(|p| !lost.contains(p))
            .collect();
        refetch_partitions(consumer, core, topic, kept);
        for p in lost {
            seek::to_reset_point(consumer, topic, p, settings.auto_offset_reset);
        }
        false
    }

    /// Whether the brokers list the input topic with its partitions (said
    /// once in the log while they do not).
    fn input_listed(&mut self, consumer: &StreamConsumer<ConsumerCtx>, topic: &str) -> bool {
        match topic_listed(consumer, topic) {
            Ok(true) => true,
            Ok(false) => {
                if !self.told_missing {
                    self.told_missing = true;
                    tracing::warn!(
                        topic,
                        "input topic not on the brokers; fetching stays paused until it is"
                    );
                }
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, "metadata after the outage not available yet");
                false
            }
        }
    }

    /// After an outage that took this member's partitions: while it has
    /// none and the input topic is listed, rejoin the group every 10 s.
    /// A group that re-formed on a broker back without its data, before
    /// the topic was created again, gave it nothing; librdkafka does not
    /// rejoin when the topic appears (to its group the subscription never
    /// changed). The first time it subscribes again, which makes it rejoin
    /// as the group's leader (Apache Kafka then starts a new generation);
    /// after that it asks for a new consumer (returns true): Tansu 0.6
    /// keeps the old assignment for a leader that rejoins unchanged, and
    /// only a member leaving starts a new generation there.
    pub(super) fn watch(&mut self, consumer: &StreamConsumer<ConsumerCtx>, topic: &str) -> bool {
        let Some(until) = self.watch_until else {
            return false;
        };
        let assigned = consumer.assignment().map_or(0, |a| a.count());
        if assigned > 0 || Instant::now() >= until {
            self.watch_until = None;
            self.rejoined = None;
            self.rejoins = 0;
            return false;
        }
        if self.rejoined.is_some_and(|t| t.elapsed() < REJOIN_EVERY)
            || !topic_listed(consumer, topic).unwrap_or(false)
        {
            return false;
        }
        // The first look is only a start: the group may still be forming.
        self.rejoined = Some(Instant::now());
        self.rejoins += 1;
        match self.rejoins {
            1 => false,
            2 => {
                tracing::info!(
                    topic,
                    "no partitions since the outage although the input topic is listed: rejoining the group"
                );
                if let Err(e) = consumer.subscribe(&[topic]) {
                    tracing::warn!(error = %e, "subscribing again failed");
                }
                false
            }
            _ => {
                tracing::info!(
                    topic,
                    "still no partitions: rejoining the group as a new member"
                );
                true
            }
        }
    }

    pub(super) fn pause(&mut self, consumer: &StreamConsumer<ConsumerCtx>) {
        if let Some(had_partitions) = self.holds.cut_off(consumer) {
            self.had_partitions = had_partitions;
            tracing::info!("fetching paused until a broker answers for the input topic");
        }
    }
}

/// After a resume: partitions `ps` fetch again from their next record,
/// realigning past what was handled (`seek::refetch`).
pub(super) fn refetch_partitions(
    consumer: &StreamConsumer<ConsumerCtx>,
    core: &Mutex<Core>,
    topic: &str,
    ps: impl IntoIterator<Item = i32>,
) {
    for p in ps {
        let Some(next) = lock(core).positions.next(p) else {
            continue;
        };
        let realign = seek::refetch(consumer, topic, p, next);
        lock(core).positions.realign(p, realign);
    }
}

/// After an outage: the assigned partitions whose committed offsets the
/// brokers forgot (`forget_lost_offsets`); None while the brokers cannot
/// say.
fn lost_offsets(
    consumer: &StreamConsumer<ConsumerCtx>,
    assignment: &TopicPartitionList,
    core: &Mutex<Core>,
    settings: &Settings,
) -> Option<Vec<i32>> {
    if assignment.count() == 0 {
        return Some(Vec::new());
    }
    let asked = tokio::task::block_in_place(|| {
        consumer.committed_offsets(assignment.clone(), Duration::from_secs(5))
    });
    match asked {
        Ok(theirs) => Some(forget_lost_offsets(
            core,
            &settings.input_topic,
            settings.auto_offset_reset.as_str(),
            &theirs,
        )),
        Err(e) => {
            tracing::debug!(error = %e, "committed offsets after the outage unknown; retrying");
            None
        }
    }
}

/// After an outage: the partitions for which this instance had committed
/// offsets that the brokers no longer hold (a broker back without its
/// data). Their offsets belong to a log that is gone: what is pending or
/// done for them is dropped (never committed onto the new log), and they
/// are returned to start again from the reset point. Partitions with
/// nothing committed yet only lose their uncommitted `done` offset, which
/// the next record sets again.
pub(super) fn forget_lost_offsets(
    core: &Mutex<Core>,
    topic: &str,
    reset: &'static str,
    theirs: &TopicPartitionList,
) -> Vec<i32> {
    let mut c = lock(core);
    let mut lost = Vec::new();
    for e in theirs.elements_for_topic(topic) {
        if matches!(e.offset(), Offset::Offset(o) if o >= 0) {
            continue;
        }
        let p = e.partition();
        if c.ledger.was_committed(p) {
            events::OffsetReset {
                partition: p,
                reset,
                cause: events::ResetCause::CommitForgotten,
            }
            .emit();
            c.rewind(p);
            lost.push(p);
        } else {
            c.ledger.forget_done(p);
        }
    }
    lost
}

/// Starts again from the reset point on partitions whose position is
/// beyond the end of their log, dropping what is pending for the old log:
/// its offsets mean nothing any more.
///
/// The statistics only raise the suspicion (`Health::take_beyond_end`):
/// their high watermark can be stale, e.g. left from an earlier
/// assignment of the same partition to this consumer, while the position
/// comes from a newer snapshot; a partition taken back from a departing
/// instance would be rewound to the earliest offset and its whole log
/// counted a second time. So the broker is asked for the watermark, and
/// only a position beyond it rewinds.
pub(super) fn rewind_beyond_end(
    core: &Mutex<Core>,
    consumer: &StreamConsumer<ConsumerCtx>,
    store: &StateStore,
    health: &Health,
    settings: &Settings,
) {
    for p in health.take_beyond_end() {
        let position = lock(core).positions.next(p);
        let Some(position) = position else {
            continue; // nothing read or restored yet: nothing to be beyond
        };
        let topic = settings.input_topic.as_str();
        if seek::beyond_end(consumer, store, topic, p, position) != Some(true) {
            tracing::debug!(partition = p, position, "not beyond the end after all");
            continue;
        }
        events::OffsetReset {
            partition: p,
            reset: settings.auto_offset_reset.as_str(),
            cause: events::ResetCause::PositionBeyondEnd,
        }
        .emit();
        lock(core).rewind(p);
        seek::to_reset_point(consumer, topic, p, settings.auto_offset_reset);
    }
}
