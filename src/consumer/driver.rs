//! The one consumer loop both applications run on (the NPS pipeline and
//! the case tracker): an application is a state machine behind `App`,
//! and `drive` is the task that feeds it.
//!
//! Each turn serves, in order: shutdown first; a consumer cut off from
//! every broker (the application pauses at once); acknowledgements every
//! 5 ms (to free offsets), with fetching resumed once deliveries caught up;
//! a snapshot round when due; the one-second tick; the application's own
//! channel (a commit's answer, alerts read back); then records, up to
//! `App::BATCH` of those already fetched. The consumer is polled even when
//! the application is full: its partitions are paused instead
//! (`Backpressure`), so the group keeps this member. Rebalances arrive
//! inside `recv`, on this task (the consumer's context hands them to the
//! application's `RebalanceHandler`).

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Interval, MissedTickBehavior};

use super::backpressure::Backpressure;
use super::context::ConsumerCtx;
use crate::shutdown::Shutdown;

/// The consumer a loop reads from: shared with the records it hands out,
/// and replaced by a new member when the group must be rejoined.
pub(crate) type Input = Arc<StreamConsumer<ConsumerCtx>>;

/// An application the driver runs.
pub(crate) trait App {
    /// Its name in logs.
    const NAME: &'static str;
    /// Records handled in one turn when they are already fetched: a
    /// turn's timers and channels can cost as much as a record's work.
    const BATCH: usize;
    /// What its own channel brings.
    type Event;

    /// One record.
    async fn record(&mut self, msg: &BorrowedMessage<'_>, consumer: &Input, stop: &Shutdown);
    /// Whether reading goes on: what waits for deliveries is under the
    /// application's bound.
    fn room(&self) -> bool;
    /// After each record (and its backpressure check).
    fn after_record(&mut self, _consumer: &Input) {}
    /// After a turn's records.
    fn after_records(&mut self) {}
    /// Every 5 ms: acknowledgements, snapshot writes, an early commit.
    /// `held`: fetching is held back by backpressure.
    fn acknowledge(&mut self, consumer: &Input, held: bool);
    /// Whether fetching is paused because the brokers are out of reach
    /// (then backpressure's end resumes nothing).
    fn cut_off(&self) -> bool;
    /// The consumer lost every broker.
    fn brokers_lost(&mut self, _consumer: &Input) {}
    /// Fetching resumed after backpressure: each partition fetches again
    /// from its next record.
    fn refetch(&mut self, consumer: &Input);
    /// A periodic snapshot round is due.
    fn snapshots_due(&mut self);
    /// Every second; may replace the consumer (a new member).
    async fn tick(&mut self, consumer: &mut Input, stop: &Shutdown);
    /// One event of its own channel.
    async fn event(&mut self, event: Self::Event, stop: &Shutdown);
    /// After the loop: bounded waits for deliveries, the final commit and
    /// snapshots.
    async fn stop(self, consumer: &Input);
}

fn every(period: Duration) -> Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

/// Runs `app` on `consumer` until `shutdown` fires, then stops it.
pub(crate) async fn drive<A: App>(
    mut app: A,
    mut consumer: Input,
    mut events: UnboundedReceiver<A::Event>,
    mut shutdown: Shutdown,
    snapshot_interval: Duration,
) {
    let mut backpressure = Backpressure::new(A::NAME, consumer.context().holds.clone());
    let mut ack_tick = every(Duration::from_millis(5));
    let mut second = every(Duration::from_secs(1));
    let mut snapshot_tick = every(snapshot_interval);
    snapshot_tick.reset();
    // Seen by the producers' retry loops, which run inside an arm.
    let stop = shutdown.clone();
    loop {
        let cut_off = consumer.context().cut_off.clone();
        tokio::select! {
            biased;
            _ = shutdown.recv() => break,
            _ = cut_off.notified() => app.brokers_lost(&consumer),
            _ = ack_tick.tick() => {
                let held = backpressure.held();
                app.acknowledge(&consumer, held);
                if held {
                    backpressure.release(&consumer, app.room());
                    if !backpressure.held() && !app.cut_off() {
                        app.refetch(&consumer);
                    }
                }
            }
            _ = snapshot_tick.tick() => app.snapshots_due(),
            _ = second.tick() => {
                consumer.context().beat.turn(std::time::Instant::now());
                app.tick(&mut consumer, &stop).await;
            }
            Some(event) = events.recv() => app.event(event, &stop).await,
            msg = consumer.recv() => {
                let mut msg = msg;
                // One stream for the turn's records: each `recv` would
                // register a waker of its own and drop it again.
                let mut more = consumer.stream();
                for taken in 1..=A::BATCH {
                    match msg {
                        Ok(msg) => {
                            app.record(&msg, &consumer, &stop).await;
                            let room = app.room();
                            backpressure.after_record(&consumer, room);
                            app.after_record(&consumer);
                            if !room {
                                break;
                            }
                        }
                        // Client-level errors (brokers down, ...) also
                        // reach the context's error callback, which logs
                        // and counts them.
                        Err(e) => tracing::debug!(what = A::NAME, error = %e, "consume error"),
                    }
                    if taken == A::BATCH {
                        break;
                    }
                    match more.next().now_or_never() {
                        Some(Some(next)) => msg = next,
                        _ => break,
                    }
                }
                app.after_records();
            }
        }
    }
    app.stop(&consumer).await;
}
