//! Why a loop holds its fetching paused (cut off from the brokers,
//! deliveries behind), shared between the loop and its consumer's
//! rebalance callback.
//!
//! librdkafka keeps a partition's pause flag while the partition is away:
//! a partition paused, revoked and later given back would come back
//! paused, and a loop that resumes only its assignment would never fetch
//! it again. And a partition assigned while the loop holds fetching would
//! fetch at once. So the callback resumes each partition on its way out
//! and pauses each one on its way in while a hold is on; the loop then
//! resumes only what is assigned when its last hold ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

/// A reason to hold fetching paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// No broker reachable (or the input topic missing after an outage).
    CutOff = 1,
    /// Too many records wait for their deliveries (`Backpressure`).
    Behind = 2,
}

/// The holds on one consumer's fetching (cheap to clone: shared).
#[derive(Debug, Default, Clone)]
pub(crate) struct Holds(Arc<AtomicU8>);

impl Holds {
    pub(crate) fn set(&self, hold: Hold, on: bool) {
        if on {
            self.0.fetch_or(hold as u8, Ordering::SeqCst);
        } else {
            self.0.fetch_and(!(hold as u8), Ordering::SeqCst);
        }
    }

    pub(crate) fn has(&self, hold: Hold) -> bool {
        self.0.load(Ordering::SeqCst) & hold as u8 != 0
    }

    pub(crate) fn any(&self) -> bool {
        self.0.load(Ordering::SeqCst) != 0
    }

    /// Cut off from the brokers: every assigned partition paused, the hold
    /// set first (a partition assigned from now on comes in paused).
    /// Whether the assignment had partitions; None when pausing failed
    /// (the hold is off again: the next look tries again).
    pub(crate) fn cut_off<C: ConsumerContext>(&self, consumer: &impl Consumer<C>) -> Option<bool> {
        self.set(Hold::CutOff, true);
        let paused = consumer.assignment().and_then(|a| {
            consumer.pause(&a)?;
            Ok(a.count() > 0)
        });
        match paused {
            Ok(had) => Some(had),
            Err(e) => {
                self.set(Hold::CutOff, false);
                tracing::debug!(error = %e, "pausing fetches failed; retrying");
                None
            }
        }
    }

    /// Back in reach: `assignment` resumed, and the cut-off hold ended.
    /// Only what is assigned: partitions that left while paused were
    /// resumed on their way out. False when resuming failed (the next
    /// look tries again).
    pub(crate) fn reconnected<C: ConsumerContext>(
        &self,
        consumer: &impl Consumer<C>,
        assignment: &TopicPartitionList,
    ) -> bool {
        if let Err(e) = consumer.resume(assignment) {
            tracing::warn!(error = %e, "resuming fetches failed; retrying");
            return false;
        }
        self.set(Hold::CutOff, false);
        true
    }

    /// In the rebalance callback, once `tpl` is assigned: paused at once
    /// while any hold is on.
    pub(crate) fn on_assigned<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        tpl: &TopicPartitionList,
    ) {
        if self.any()
            && tpl.count() > 0
            && let Err(e) = consumer.pause(tpl)
        {
            tracing::warn!(error = %e, "pausing newly assigned partitions failed");
        }
    }

    /// In the rebalance callback, before `tpl` is unassigned: resumed, so
    /// that none comes back paused.
    pub(crate) fn on_revoking<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        tpl: &TopicPartitionList,
    ) {
        if tpl.count() > 0
            && let Err(e) = consumer.resume(tpl)
        {
            tracing::debug!(error = %e, "resuming revoked partitions failed");
        }
    }
}
