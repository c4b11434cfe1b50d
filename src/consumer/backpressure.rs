//! Reading held back while too many records wait for their deliveries,
//! without leaving the group.
//!
//! A loop that simply stops polling its consumer when it is full leaves
//! the group after `max.poll.interval.ms` (5 minutes by default) of slow
//! deliveries: librdkafka takes a consumer that is not polled for dead and
//! gives its partitions away. So the partitions are paused instead, and the loop polls on: librdkafka
//! then hands out no record of a paused partition (it drops what it had
//! fetched ahead, and fetches again from the next record when resumed),
//! while rebalances and errors are still served.

use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};

use super::holds::{Hold, Holds};

/// Whether this loop holds its partitions paused because it is full.
#[derive(Debug)]
pub(crate) struct Backpressure {
    /// Whose fetching, for the log.
    what: &'static str,
    /// The consumer's holds (`Hold::Behind` is this one's).
    holds: Holds,
}

impl Backpressure {
    pub(crate) fn new(what: &'static str, holds: Holds) -> Backpressure {
        Backpressure { what, holds }
    }

    /// After a record: pauses every assigned partition while there is no
    /// `room`. Again after each record that still comes (one fetched
    /// before the pause took effect, or from a partition assigned since).
    pub(crate) fn after_record<C: ConsumerContext>(
        &mut self,
        consumer: &StreamConsumer<C>,
        room: bool,
    ) {
        if room {
            return;
        }
        match consumer.assignment().and_then(|a| consumer.pause(&a)) {
            Ok(()) => {
                if !self.held() {
                    tracing::info!(
                        what = self.what,
                        "deliveries behind: fetching paused until they catch up"
                    );
                }
                self.holds.set(Hold::Behind, true);
            }
            Err(e) => tracing::debug!(error = %e, "pausing fetches failed; retrying"),
        }
    }

    /// Once there is `room` again: resumes the assignment, unless the
    /// consumer is cut off from the brokers (that pause ends by itself once
    /// they are back).
    pub(crate) fn release<C: ConsumerContext>(&mut self, consumer: &StreamConsumer<C>, room: bool) {
        if !self.held() || !room {
            return;
        }
        if !self.holds.has(Hold::CutOff) {
            if let Err(e) = consumer.assignment().and_then(|a| consumer.resume(&a)) {
                tracing::debug!(error = %e, "resuming fetches failed; retrying");
                return;
            }
            tracing::info!(what = self.what, "deliveries caught up: fetching resumed");
        }
        self.holds.set(Hold::Behind, false);
    }

    pub(crate) fn held(&self) -> bool {
        self.holds.has(Hold::Behind)
    }
}
