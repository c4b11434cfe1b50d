//! Moving where a partition fetches from, and telling whether a position
//! is past its log's end: further back while a restored partition
//! realigns, again from its next record after a resume, to the reset point
//! when the log it was read from is gone.

use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::consumer::{Consumer, ConsumerContext};

use super::realign::Realign;
use crate::config::OffsetReset;
use crate::state::StateStore;

/// How long a seek or a watermark request may block.
const ASK: Duration = Duration::from_secs(5);

/// Seeks `partition` of `topic` to `to` (blocking, at most 5 s); false
/// when it failed (said in the log).
pub(crate) fn seek<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    partition: i32,
    to: Offset,
) -> bool {
    match crate::kafka::blocking(|| consumer.seek(topic, partition, to, ASK)) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(topic, partition, error = %e, "seek failed");
            false
        }
    }
}

/// Seeks each partition a realign sends further back
/// (`Positions::seeks`); returns those whose seek failed (their realign
/// ends: what comes next is taken).
pub(crate) fn further_back<'a, K: Copy, C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    seeks: Vec<(K, i64)>,
    place: impl Fn(K) -> (&'a str, i32),
) -> Vec<K> {
    let mut failed = Vec::new();
    for (key, from) in seeks {
        let (topic, partition) = place(key);
        tracing::debug!(
            topic,
            partition,
            from,
            "start was inside the snapshot's batch: further back"
        );
        if !seek(consumer, topic, partition, Offset::Offset(from)) {
            failed.push(key);
        }
    }
    failed
}

/// Says that a realigning partition's first record came past its
/// snapshot's offset with no further back to go.
pub(crate) fn gap(topic: &str, partition: i32, want: i64, first: i64) {
    tracing::warn!(
        topic,
        partition,
        snapshot = want,
        first,
        "records between the snapshot and the first one fetched were not returned by the broker"
    );
}

/// After a resume, `partition` of `topic` fetches again from a little
/// before `next`, the first record not handled yet; the `Realign` returned
/// (to keep for the partition) skips what was handled. A pause drops what
/// librdkafka had fetched ahead, and a resume fetches from the next record,
/// often inside a record batch: Tansu 0.6 answers such a fetch with the
/// batch after it (docs/operations.md, Known issues), so the rest of the
/// batch would never be read (for the case tracker, a batch of alerts
/// whose events end dead-lettered as `unknown_alert`). `None` when
/// nothing is to be skipped, or the seek failed.
pub(crate) fn refetch<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    partition: i32,
    next: i64,
) -> Option<Realign> {
    let low = crate::kafka::cached_watermarks(consumer.client(), topic, partition)
        .map_or(0, |(low, _)| low.max(0));
    let realign = Realign::start(next, low, Instant::now());
    let from = realign.map_or(next, |r| r.from());
    seek(consumer, topic, partition, Offset::Offset(from))
        .then_some(realign)
        .flatten()
}

/// Seeks `partition` of `topic` to where `--auto-offset-reset` starts a
/// partition (the log it was read from is gone); false when it failed.
pub(crate) fn to_reset_point<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    partition: i32,
    reset: OffsetReset,
) -> bool {
    let to = match reset {
        OffsetReset::Earliest => Offset::Beginning,
        OffsetReset::Latest => Offset::End,
    };
    seek(consumer, topic, partition, to)
}

/// Whether a position may be beyond the end of a log whose high watermark
/// the broker has just answered. One past the reported end is allowed:
/// some brokers answer one below the true end; Tansu 0.6 answers up to a
/// batch below it, so a fetch confirms (`past_end`).
pub(crate) fn position_beyond_end(position: i64, high: i64) -> bool {
    position > high.saturating_add(1)
}

/// Whether `position` is past the end of `partition` of `topic`, whose
/// high watermark ListOffsets answered `high`: the answer raises the
/// suspicion, a fetch decides (`StateStore::log_reaches`); unanswered,
/// ListOffsets stands.
pub(crate) fn past_end(
    store: &StateStore,
    topic: &str,
    partition: i32,
    position: i64,
    high: i64,
) -> bool {
    if !position_beyond_end(position, high) {
        return false;
    }
    let reaches =
        crate::kafka::blocking(|| store.log_reaches(topic, partition, position, high, ASK));
    if reaches.is_none() {
        tracing::warn!(
            topic,
            partition,
            position,
            high,
            "log end unconfirmed by a fetch; trusting ListOffsets"
        );
    }
    reaches != Some(true)
}

/// Whether `position` is past the end of `partition` of `topic`, asking
/// the broker for its watermarks; None while it cannot say.
pub(crate) fn beyond_end<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    store: &StateStore,
    topic: &str,
    partition: i32,
    position: i64,
) -> Option<bool> {
    match crate::kafka::blocking(|| consumer.fetch_watermarks(topic, partition, ASK)) {
        Ok((_, high)) => Some(past_end(store, topic, partition, position, high)),
        Err(e) => {
            tracing::debug!(topic, partition, error = %e, "watermarks unknown");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::position_beyond_end;

    #[test]
    fn only_a_position_past_the_fresh_end_is_beyond_it() {
        // At the end, or one past what some brokers report as the end.
        assert!(!position_beyond_end(100, 100));
        assert!(!position_beyond_end(101, 100));
        assert!(!position_beyond_end(5, 100));
        // A log recreated on a broker that lost its data.
        assert!(position_beyond_end(5_000, 12));
        assert!(!position_beyond_end(i64::MAX, i64::MAX));
    }
}
