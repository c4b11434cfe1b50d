//! An assigned partition's start, the same for every loop: the log's
//! watermarks and whether the group's commit is past its end read from
//! the broker, the plan decided from them (`restore::Plan`), and where
//! fetching starts, a little before a snapshot's offset (`Realign`).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use super::realign::Realign;
use super::restore::{Known, Plan, Start};
use super::seek;
use crate::config::OffsetReset;
use crate::state::StateStore;

/// How an assigned partition starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Started {
    pub(crate) plan: Plan,
    /// The first offset read, when the broker's watermarks are known (or
    /// the plan starts at a snapshot's offset).
    pub(crate) first: Option<i64>,
    /// The log's high watermark, when the broker gave it.
    pub(crate) high: Option<i64>,
    /// Records before the snapshot's offset to skip (`Positions`).
    pub(crate) realign: Option<Realign>,
    /// The group's commit is past the end of the log (confirmed by a
    /// fetch): it starts from the reset point.
    pub(crate) committed_beyond_log: bool,
}

/// What is known of the partition before the broker is asked.
pub(crate) struct Facts<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    /// The offset the restored snapshot continues from.
    pub(crate) snapshot: Option<i64>,
    /// The group's committed offset.
    pub(crate) committed: Option<i64>,
    pub(crate) reset: OffsetReset,
}

/// Starts `facts`' partition: asks the broker, plans, and sets where it
/// fetches from in `tpl` (left to the client, its committed offset else
/// the reset point, when the plan says so).
pub(crate) fn start<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    store: &StateStore,
    facts: &Facts<'_>,
    tpl: &mut TopicPartitionList,
) -> Started {
    let (topic, p) = (facts.topic, facts.partition);
    let marks = consumer
        .fetch_watermarks(topic, p, Duration::from_secs(5))
        .ok();
    let (low, high) = (marks.map(|(low, _)| low), marks.map(|(_, high)| high));
    // ListOffsets only raises the suspicion of a commit past the log's
    // end; a fetch decides.
    let committed_beyond_log = match (facts.committed, high) {
        (Some(c), Some(h)) => seek::past_end(store, topic, p, c, h),
        _ => false,
    };
    let plan = Plan::for_partition(&Known {
        snapshot: facts.snapshot,
        committed: facts.committed,
        low,
        committed_beyond_log,
        reset: facts.reset,
    });
    let first = match (plan.start, marks) {
        (_, Some((low, high))) => Some(plan.first_offset(low, high, facts.reset)),
        (Start::At(s), None) => Some(s),
        _ => None,
    };
    // (The high watermark cannot tell whether a snapshot's offset is at
    // the end: Tansu 0.6 answers the last batch's base offset + 1.)
    let realign = match (plan.start, first) {
        (Start::At(_), Some(s)) => Realign::start(s, low.unwrap_or(0), Instant::now()),
        _ => None,
    };
    let fetch_from = match (realign, plan.start, first) {
        (Some(r), ..) => Offset::Offset(r.from()),
        (None, Start::At(_), Some(s)) => Offset::Offset(s),
        (None, Start::Earliest, _) => Offset::Beginning,
        (None, Start::Latest, _) => Offset::End,
        _ => Offset::Invalid,
    };
    if fetch_from != Offset::Invalid
        && let Err(e) = tpl.set_partition_offset(topic, p, fetch_from)
    {
        tracing::error!(topic, partition = p, error = %e, "cannot set the start offset");
    }
    Started {
        plan,
        first,
        high,
        realign,
        committed_beyond_log,
    }
}
