//! The case tracker cut off from the brokers: fetching paused, and resumed
//! only once they list both topics again, with positions past the end of
//! a log (a broker back without its data) started again.

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};

use super::lock;
use super::records::Shell;
use crate::consumer::context::ConsumerCtx;
use crate::consumer::driver::App;
use crate::consumer::seek;

impl Shell {
    /// Pauses fetching (at once when this consumer loses every broker, at
    /// the latest at the tick after the main consumer does), and resumes
    /// only once the brokers list both topics again: a missing case-events
    /// topic is created again, and the consumer's metadata is refreshed so
    /// that it fetches by the topics' current ids (docs/operations.md,
    /// Known issues: a fetch by the ids of a broker that came back without
    /// its data crashes librdkafka as released). A partition whose position is then
    /// past its log's end (the broker lost it) starts again from the reset
    /// point, with its cases forgotten. False while paused.
    pub(super) fn brokers_reachable(&mut self, consumer: &StreamConsumer<ConsumerCtx>) -> bool {
        let up = self.health.consumer_brokers_up();
        if !App::cut_off(self) {
            if up == 0 {
                self.pause(consumer);
            }
            return !App::cut_off(self);
        }
        if up <= 0 {
            return false;
        }
        let settings = self.settings.clone();
        let ready = crate::kafka::blocking(|| {
            matches!(
                super::setup::prepare(&settings),
                Ok(crate::consumer::ready::Ready::Yes(_))
            ) && [&settings.alerts_topic, &settings.cases.case_events_topic]
                .into_iter()
                .all(|topic| {
                    crate::kafka::partition_count(consumer.client(), topic, Duration::from_secs(2))
                        .is_some()
                })
        });
        if !ready {
            return false;
        }
        let Ok(assignment) = consumer.assignment() else {
            return false;
        };
        self.reset_beyond_end(consumer, &assignment);
        if self.holds.reconnected(consumer, &assignment) {
            self.refetch_all(consumer);
            tracing::info!("case tracker: brokers reachable, fetching resumed");
        }
        !App::cut_off(self)
    }

    /// Stops fetching every assigned partition (see `brokers_reachable`).
    pub(super) fn pause(&mut self, consumer: &StreamConsumer<ConsumerCtx>) {
        if !App::cut_off(self) && self.holds.cut_off(consumer).is_some() {
            tracing::warn!("case tracker: brokers unreachable, fetching paused");
        }
    }

    /// Partitions whose position is past their log's end start again from
    /// the reset point, their cases forgotten (the log they came from is
    /// gone).
    fn reset_beyond_end(
        &self,
        consumer: &StreamConsumer<ConsumerCtx>,
        assignment: &rdkafka::TopicPartitionList,
    ) {
        let Ok(positions) = consumer.position() else {
            return;
        };
        let mut gone = BTreeSet::new();
        for e in assignment.elements() {
            let (topic, p) = (e.topic(), e.partition());
            let pos = positions.find_partition(topic, p).map(|x| x.offset());
            if let Some(rdkafka::Offset::Offset(pos)) = pos
                && seek::beyond_end(consumer, &self.store, topic, p, pos) == Some(true)
            {
                gone.insert(p);
            }
        }
        if gone.is_empty() {
            return;
        }
        tracing::warn!(partitions = ?gone, "case tracker: positions past the end of their logs (broker data lost); starting again from the reset point");
        lock(&self.core).forget(&gone.iter().copied().collect::<Vec<_>>());
        let reset = self.settings.auto_offset_reset;
        for e in assignment.elements() {
            if gone.contains(&e.partition()) {
                seek::to_reset_point(consumer, e.topic(), e.partition(), reset);
            }
        }
    }
}
