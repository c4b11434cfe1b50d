//! The async shell: Kafka in, engine, alerts and dead letters out, offsets
//! committed only behind what is done.
//!
//! Invariant (at-least-once): the offset of a record becomes committable
//! only after the record is in the engine and its alert or dead letter (if
//! any) is acknowledged by the broker, and only in order: a record whose
//! delivery is still pending holds back the offsets of every later record
//! of its partition. The pipeline commits those offsets itself (auto-commit
//! is off): every second, and synchronously on revoke and shutdown. A crash therefore loses nothing; it can only make the
//! next owner redo work after the last commit (the alerts it re-sends carry
//! the same alert_id).
//!
//! One task owns the loop. Each turn it serves, in order: shutdown first,
//! then acknowledgements (to free offsets), then the refresh tick (window
//! gauges, sweep), then one new record. Rebalances arrive inside `recv` on
//! the same task; a revoke finishes the partition's pending deliveries
//! (bounded by the shutdown timeout), commits and drops its state.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::FutureExt;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::alerts::{self, MESSAGE_TYPE};
use crate::config::Settings;
use crate::engine::{Category, Engine, KeyId, Outcome, WindowStats};
use crate::kafka::{ConsumerCtx, Health, RebalanceHandler, RenewableProducer, client_config};
use crate::metrics as m;
use crate::schema::{self, Rejection};
use crate::shutdown::Shutdown;
use crate::state::StateStore;

/// Wall-clock source, injected so tests control time.
pub trait Clock: Send + Sync {
    /// Unix milliseconds.
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// Dead-letter headers, besides the record's own.
pub const DLQ_REASON: &str = "nps.dlq.reason";
pub const DLQ_ERROR: &str = "nps.dlq.error";
pub const DLQ_TOPIC: &str = "nps.dlq.source.topic";
pub const DLQ_PARTITION: &str = "nps.dlq.source.partition";
pub const DLQ_OFFSET: &str = "nps.dlq.source.offset";
pub const DLQ_FAILED_AT: &str = "nps.dlq.failed_at_ms";
/// Alert headers.
pub const CONTENT_TYPE: &str = "content-type";
pub const MESSAGE_TYPE_HEADER: &str = "nps.message-type";
pub const ALERT_ID_HEADER: &str = "nps.alert-id";

/// Most deliveries awaiting acknowledgement before reading pauses.
const MAX_PENDING: usize = 50_000;

/// What the refresh tick publishes for the HTTP handler and the demo.
#[derive(Debug, Default)]
pub struct View {
    /// The per-segment series, rendered when /metrics is scraped.
    pub series: m::SegmentSeries,
    /// Per segment and window, when `keep_table` was asked for.
    pub table: Vec<(String, String, Vec<WindowStats>)>,
    pub window_names: Vec<String>,
    pub alerts_sent: u64,
    pub consumed: u64,
    pub rejected: u64,
}

/// A record read but whose offset cannot be committed yet.
struct Pending {
    offset: i64,
    /// What the record sent (an alert or a dead letter), until acknowledged.
    delivery: Option<Delivery>,
}

enum Delivery {
    InFlight(DeliveryFuture),
    /// Failed and not yet accepted again by the producer.
    Retry(OwnedMessage),
}

/// State shared between the loop and the rebalance callback (which runs on
/// the same task, inside `recv`, never while the loop holds the lock).
struct Core {
    engine: Engine,
    pending: BTreeMap<i32, VecDeque<Pending>>,
    /// Next offset to commit, per partition (last done + 1).
    done: BTreeMap<i32, i64>,
    /// What was last committed, per partition.
    committed: BTreeMap<i32, i64>,
    in_flight: usize,
    /// Per partition, the offset after the last record in the engine: what
    /// a snapshot taken now reflects.
    next: BTreeMap<i32, i64>,
    /// Partitions replaying input to rebuild their state.
    restoring: BTreeMap<i32, Restore>,
    /// Offset of the last snapshot handed to the state topic per partition.
    snapshotted: BTreeMap<i32, i64>,
    /// Snapshots taken but not written yet: a snapshot is written only
    /// once every alert and dead letter of the records it reflects is
    /// acknowledged, so restoring it never skips an undelivered alert.
    staged: BTreeMap<i32, (i64, Vec<u8>)>,
    /// Partitions due for a periodic snapshot, taken one at a time (each
    /// once the previous one is written): a single record's worth of
    /// memory at a time, however many partitions this instance owns.
    due: BTreeSet<i32>,
    /// A periodic round of snapshots is under way.
    round: bool,
    /// Snapshot writes awaiting acknowledgement: partition, offset, size.
    writes: Vec<(i32, i64, usize, DeliveryFuture)>,
    /// Largest snapshot written (`--snapshot-max-bytes`).
    snapshot_max_bytes: usize,
}

/// A partition being rebuilt: records before `until` (the committed
/// offset) were fully processed by a previous owner, so they go into the
/// windows again without alerts or dead letters.
struct Restore {
    until: i64,
    started: Instant,
    replayed: u64,
    from: &'static str,
}

enum Ack {
    /// Delivered.
    Done,
    /// Failed after librdkafka's own retries, or waiting to be sent again;
    /// the flag says it failed for its size.
    Failed(OwnedMessage, bool),
    NotYet,
}

fn poll_delivery(d: &mut Delivery) -> Ack {
    match d {
        Delivery::Retry(msg) => Ack::Failed(msg.clone(), false),
        Delivery::InFlight(fut) => match fut.now_or_never() {
            None => Ack::NotYet,
            Some(Ok(Ok(_))) => Ack::Done,
            Some(Ok(Err((e, msg)))) => {
                tracing::debug!(error = %e, topic = msg.topic(), "delivery failed");
                Ack::Failed(msg, too_large(&e))
            }
            // The producer was dropped without failing it back: only at
            // shutdown; the offset stays uncommitted.
            Some(Err(_)) => Ack::NotYet,
        },
    }
}

impl Core {
    /// Pops every acknowledged head of every partition queue, and sends
    /// failed deliveries again (they keep their place, holding back the
    /// offsets behind them). Returns the partitions whose done offset moved.
    fn drain(&mut self, producer: &RenewableProducer) -> Vec<(i32, i64)> {
        let mut moved = Vec::new();
        let mut retried = 0u64;
        for (p, queue) in self.pending.iter_mut() {
            let mut last = None;
            let mut failing = false;
            while let Some(front) = queue.front_mut() {
                let ack = match front.delivery.as_mut() {
                    None => Ack::Done,
                    Some(d) => poll_delivery(d),
                };
                match ack {
                    Ack::Done => {
                        if front.delivery.is_some() {
                            self.in_flight -= 1;
                        }
                        last = Some(front.offset);
                        queue.pop_front();
                    }
                    Ack::Failed(msg, too_big) => {
                        front.delivery = Some(send_again(producer, msg, too_big));
                        retried += 1;
                        failing = true;
                        break;
                    }
                    Ack::NotYet => break,
                }
            }
            // Failures come in bursts (a broker gone, a producer renewed):
            // send the rest again now rather than one per turn.
            if failing {
                for entry in queue.iter_mut().skip(1) {
                    let Some(d) = entry.delivery.as_mut() else {
                        continue;
                    };
                    match poll_delivery(d) {
                        Ack::Failed(msg, too_big) => {
                            entry.delivery = Some(send_again(producer, msg, too_big));
                            retried += 1;
                        }
                        Ack::Done => {
                            entry.delivery = None;
                            self.in_flight -= 1;
                        }
                        Ack::NotYet => {}
                    }
                }
            }
            if let Some(off) = last {
                self.done.insert(*p, off + 1);
                moved.push((*p, off + 1));
            }
        }
        if retried > 0 {
            metrics::counter!(m::DELIVERY_RETRIES_TOTAL).increment(retried);
            tracing::warn!(count = retried, "deliveries failed; sending them again");
        }
        moved
    }
}

impl Core {
    /// Forgets everything about partitions no longer owned.
    fn forget(&mut self, partitions: &[i32], health: &Health) {
        for p in partitions {
            self.engine.drop_partition(*p);
            if let Some(q) = self.pending.remove(p) {
                let left = q.iter().filter(|x| x.delivery.is_some()).count();
                self.in_flight -= left;
            }
            self.done.remove(p);
            self.committed.remove(p);
            self.next.remove(p);
            self.snapshotted.remove(p);
            self.staged.remove(p);
            if self.restoring.remove(p).is_some() {
                health.restoring.fetch_sub(1, Ordering::Relaxed);
            }
        }
        metrics::gauge!(m::STATE_RESTORING).set(self.restoring.len() as f64);
    }

    /// Forgets the offsets of `partition`'s log, which is gone (recreated,
    /// truncated, or lost by the brokers), keeping its windows: what is
    /// pending or done is never committed, no snapshot or replay refers
    /// to them, and a restore in progress ends.
    fn rewind(&mut self, partition: i32, health: &Health) {
        if let Some(q) = self.pending.remove(&partition) {
            let in_flight = q.iter().filter(|x| x.delivery.is_some()).count();
            self.in_flight -= in_flight;
        }
        self.done.remove(&partition);
        self.committed.remove(&partition);
        self.next.remove(&partition);
        self.staged.remove(&partition);
        self.restored(partition, health);
    }

    /// Ends the restore of `partition`: it goes live.
    fn restored(&mut self, partition: i32, health: &Health) {
        let Some(r) = self.restoring.remove(&partition) else {
            return;
        };
        health.restoring.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(m::STATE_RESTORING).set(self.restoring.len() as f64);
        restore_done(partition, r.from, r.replayed, r.started);
    }

    /// Takes a snapshot of every partition whose state moved since its
    /// last one (`only`: of these partitions only), staged until its
    /// records are acknowledged.
    fn take_snapshots(&mut self, topic: &str, only: Option<&[i32]>) {
        let parts: Vec<(i32, i64)> = self
            .next
            .iter()
            .filter(|(p, _)| only.is_none_or(|o| o.contains(p)))
            .map(|(p, n)| (*p, *n))
            .collect();
        for (p, next) in parts {
            let current = self
                .staged
                .get(&p)
                .map(|(o, _)| *o)
                .or(self.snapshotted.get(&p).copied());
            if current == Some(next) {
                continue;
            }
            let bytes = self.engine.partition_state_record(p, topic, next);
            if bytes.len() > self.snapshot_max_bytes {
                metrics::counter!(m::SNAPSHOTS_WRITTEN_TOTAL, "result" => "too_large").increment(1);
                tracing::warn!(
                    partition = p,
                    bytes = bytes.len(),
                    "snapshot larger than --snapshot-max-bytes: not written, the partition is rebuilt by replay when it moves (lower --dedup-max-ids or raise the limit)"
                );
                continue;
            }
            self.staged.insert(p, (next, bytes));
        }
    }

    /// Takes the next due periodic snapshot once nothing is staged.
    fn stage_due(&mut self, topic: &str) {
        while self.staged.is_empty()
            && let Some(p) = self.due.pop_first()
        {
            self.take_snapshots(topic, Some(&[p]));
        }
    }

    /// Writes the staged snapshots whose records are all acknowledged, and
    /// counts the writes acknowledged since.
    fn write_snapshots(&mut self, store: &StateStore) {
        let ready: Vec<i32> = self
            .staged
            .iter()
            .filter(|(p, (off, _))| {
                self.done.get(p).is_some_and(|d| d >= off)
                    || self.pending.get(p).is_none_or(VecDeque::is_empty)
            })
            .map(|(p, _)| *p)
            .collect();
        for p in ready {
            let Some((off, bytes)) = self.staged.remove(&p) else {
                continue;
            };
            match store.write(p, &bytes) {
                Ok(f) => {
                    self.snapshotted.insert(p, off);
                    self.writes.push((p, off, bytes.len(), f));
                }
                Err(e) => {
                    tracing::debug!(partition = p, error = %e, "snapshot not accepted; will retry");
                    self.staged.insert(p, (off, bytes));
                }
            }
        }
        let snapshotted = &mut self.snapshotted;
        self.writes
            .retain_mut(|(p, off, size, f)| match f.now_or_never() {
                None => true,
                Some(Ok(Ok(_))) => {
                    metrics::counter!(m::SNAPSHOTS_WRITTEN_TOTAL, "result" => "ok").increment(1);
                    metrics::counter!(m::SNAPSHOT_BYTES_TOTAL).increment(*size as u64);
                    false
                }
                Some(_) => {
                    metrics::counter!(m::SNAPSHOTS_WRITTEN_TOTAL, "result" => "error").increment(1);
                    tracing::warn!(partition = *p, "snapshot write failed; a new one follows");
                    // Taken again at the next interval.
                    if snapshotted.get(p) == Some(off) {
                        snapshotted.remove(p);
                    }
                    false
                }
            });
    }
}

fn restore_done(partition: i32, from: &str, replayed: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    metrics::counter!(m::STATE_RESTORES_TOTAL, "from" => from.to_string()).increment(1);
    metrics::gauge!(m::STATE_LAST_RESTORE_SECONDS).set(secs);
    tracing::info!(
        partition,
        from,
        replayed,
        seconds = secs,
        "partition restored: live"
    );
}

/// Hands a failed record to the producer again (renewing it first if it
/// failed fatally); keeps it for the next turn if the producer refuses.
fn send_again(producer: &RenewableProducer, msg: OwnedMessage, too_big: bool) -> Delivery {
    producer.renew_if_fatal();
    let msg = if too_big { without_value(msg) } else { msg };
    match resend(producer, &msg) {
        Ok(f) => Delivery::InFlight(f),
        Err(e) => {
            tracing::debug!(error = %e, "resend refused, will retry");
            Delivery::Retry(msg)
        }
    }
}

/// The record without its value, marked as such (see `send_without_value`).
fn without_value(msg: OwnedMessage) -> OwnedMessage {
    tracing::warn!(
        topic = msg.topic(),
        "record too large for the broker: sending it without its value"
    );
    let headers = msg
        .headers()
        .cloned()
        .unwrap_or_else(OwnedHeaders::new)
        .insert(Header {
            key: VALUE_DROPPED,
            value: Some("too_large"),
        });
    OwnedMessage::new(
        None,
        msg.key().map(<[u8]>::to_vec),
        msg.topic().to_string(),
        msg.timestamp(),
        msg.partition(),
        msg.offset(),
        Some(headers),
    )
}

fn resend(producer: &RenewableProducer, msg: &OwnedMessage) -> Result<DeliveryFuture, KafkaError> {
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(msg.topic());
    if let Some(k) = msg.key() {
        record = record.key(k);
    }
    if let Some(p) = msg.payload() {
        record = record.payload(p);
    }
    if let Some(h) = msg.headers() {
        record = record.headers(h.clone());
    }
    producer.get().send_result(record).map_err(|(e, _)| e)
}

/// Where records go out: the producer, and the shutdown signal that ends
/// any wait for it.
struct Outbox<'a> {
    producer: &'a RenewableProducer,
    stop: &'a Shutdown,
}

/// Sends a record, waiting while the producer's local queue is full or
/// it refuses the record. Once shutdown is asked for it waits no more:
/// the record is kept as a delivery to retry, which holds its offset back
/// (uncommitted, so the next owner sends it), and the shutdown bound
/// holds whatever the broker does.
async fn send(
    out: &Outbox<'_>,
    topic: &str,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    headers: OwnedHeaders,
) -> Delivery {
    let producer = out.producer;
    loop {
        if out.stop.is_shutdown() {
            tracing::debug!(
                topic,
                "shutdown: record kept unsent, its offset uncommitted"
            );
            return Delivery::Retry(OwnedMessage::new(
                payload.map(<[u8]>::to_vec),
                key.map(<[u8]>::to_vec),
                topic.to_string(),
                rdkafka::Timestamp::NotAvailable,
                -1,
                -1,
                Some(headers),
            ));
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).headers(headers.clone());
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        match producer.get().send_result(record) {
            Ok(f) => return Delivery::InFlight(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((e, _)) if too_large(&e) && payload.is_some() => {
                tracing::warn!(
                    topic,
                    "record too large for the producer: sending it without its value"
                );
                return send_without_value(out, topic, key, headers).await;
            }
            Err((e, _)) => {
                // A producer in a fatal state is replaced; anything else is
                // a local problem: wait and try again, never drop or skip.
                if !producer.renew_if_fatal() {
                    tracing::warn!(topic, error = %e, "produce refused, retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Whether a produce failed because the record exceeds a size limit
/// (`message.max.bytes`, or the topic's `max.message.bytes`).
fn too_large(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge)
    )
}

/// Header saying a record's value was dropped because it was too large.
pub const VALUE_DROPPED: &str = "nps.value-dropped";

/// A record whose value cannot be delivered (too large) still goes out,
/// without it and with a header saying so: a poison record must never stall
/// its partition.
async fn send_without_value(
    out: &Outbox<'_>,
    topic: &str,
    key: Option<&[u8]>,
    headers: OwnedHeaders,
) -> Delivery {
    let headers = headers.insert(Header {
        key: VALUE_DROPPED,
        value: Some("too_large"),
    });
    Box::pin(send(out, topic, key, None, headers)).await
}

/// The pipeline's shared state, locked. A poisoned lock means a panic left
/// it half changed: going on could drop a record silently (a later commit
/// would pass its offset) or snapshot state no commit matches. So the
/// process exits at once (status 70, EX_SOFTWARE) without committing, and
/// whoever takes its partitions resumes from the last commit and snapshot,
/// which lose nothing.
fn lock(core: &Mutex<Core>) -> std::sync::MutexGuard<'_, Core> {
    match core.lock() {
        Ok(c) => c,
        Err(_) => {
            tracing::error!(
                "pipeline state poisoned by a panic: exiting without committing; the next owner resumes from the last commit"
            );
            std::process::exit(70);
        }
    }
}

/// Rebalance handling, called inside `recv`.
struct Rebalancer {
    core: Arc<Mutex<Core>>,
    producer: Arc<RenewableProducer>,
    store: Arc<StateStore>,
    health: Arc<Health>,
    topic: String,
    timeout: Duration,
    /// Where a partition starts whose committed offset its log does not
    /// hold (`--auto-offset-reset`).
    reset: crate::config::OffsetReset,
}

impl Rebalancer {
    /// Waits (bounded) for the partitions' pending deliveries, then commits
    /// what is done. Offsets of what did not finish stay uncommitted: the
    /// next owner redoes it.
    fn finish(&self, consumer: &BaseConsumer<ConsumerCtx>, partitions: &[i32]) {
        let deadline = Instant::now() + self.timeout;
        let mut core = lock(&self.core);
        loop {
            core.drain(&self.producer);
            let busy = partitions
                .iter()
                .any(|p| core.pending.get(p).is_some_and(|q| !q.is_empty()));
            if !busy || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        commit(
            consumer,
            &self.topic,
            &mut core,
            partitions,
            CommitMode::Sync,
        );
    }
}

/// Commits the done offsets of `partitions`: in async mode only those that
/// moved since the last commit (an async commit that failed is caught by the
/// next sync one), in sync mode all of them. Offsets are only ever committed
/// from `done`: behind work whose every effect is acknowledged.
fn commit<C: rdkafka::consumer::ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    core: &mut Core,
    partitions: &[i32],
    mode: CommitMode,
) {
    let mut tpl = TopicPartitionList::new();
    let mut moved = Vec::new();
    for p in partitions {
        if let Some(&off) = core.done.get(p) {
            let moved_since = core.committed.get(p) != Some(&off);
            if moved_since || matches!(mode, CommitMode::Sync) {
                let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(off));
                moved.push((*p, off));
            }
        }
    }
    if moved.is_empty() {
        return;
    }
    let result = consumer.commit(&tpl, mode);
    if matches!(mode, CommitMode::Sync) {
        // A synchronous commit's result is the broker's answer.
        count_commit(&result);
    }
    match result {
        Ok(()) => {
            tracing::debug!(?moved, "offsets committed");
            core.committed.extend(moved);
        }
        Err(e) => tracing::warn!(error = %e, ?partitions, "offset commit failed; will retry"),
    }
}

/// Counts a commit's outcome as the broker answered it.
fn count_commit(result: &KafkaResult<()>) {
    let label = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!(m::COMMITS_TOTAL, "result" => label).increment(1);
}

/// Offsets of the periodic commit, and the broker's answer.
type CommitOutcome = (Vec<(i32, i64)>, KafkaResult<()>);

/// Starts the periodic commit of what is done and not yet committed, on a
/// thread of its own: librdkafka tells an application the outcome of its
/// asynchronous commits only through an `offset_commit_cb`, which
/// rust-rdkafka does not install, so the commit is synchronous (its answer
/// counted and only then recorded as committed) but off the consuming
/// task, which a slow broker must not hold up. The thread is detached: a
/// stop never waits for it (the final commit is made anew). Returns
/// whether one was started.
fn start_commit(
    consumer: &Arc<StreamConsumer<ConsumerCtx>>,
    topic: &str,
    core: &Core,
    results: &tokio::sync::mpsc::UnboundedSender<CommitOutcome>,
) -> bool {
    let mut tpl = TopicPartitionList::new();
    let mut moved = Vec::new();
    for (p, off) in &core.done {
        if core.committed.get(p) != Some(off) {
            let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*off));
            moved.push((*p, *off));
        }
    }
    if moved.is_empty() {
        return false;
    }
    let consumer = consumer.clone();
    let results = results.clone();
    let started = std::thread::Builder::new()
        .name("nps-commit".into())
        .spawn(move || {
            let result = consumer.commit(&tpl, CommitMode::Sync);
            let _ = results.send((moved, result));
        });
    match started {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the commit thread; will retry");
            false
        }
    }
}

/// Records the periodic commit's outcome.
fn commit_done(core: &Mutex<Core>, (moved, result): CommitOutcome) {
    count_commit(&result);
    match result {
        Ok(()) => {
            tracing::debug!(?moved, "offsets committed");
            lock(core).committed.extend(moved);
        }
        Err(e) => tracing::warn!(error = %e, "offset commit failed; will retry"),
    }
}

impl Rebalancer {
    /// Writes the final snapshots of `partitions` (those whose records are
    /// all acknowledged) and waits for them, bounded.
    fn final_snapshots(&self, partitions: &[i32]) {
        let mut core = lock(&self.core);
        core.take_snapshots(&self.topic, Some(partitions));
        core.write_snapshots(&self.store);
        let unfinished: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| core.staged.contains_key(p))
            .collect();
        if !unfinished.is_empty() {
            tracing::warn!(partitions = ?unfinished, "deliveries unacknowledged: no final snapshot; the next owner replays from the previous one");
        }
        let deadline = Instant::now() + self.timeout;
        while core.writes.iter().any(|(p, ..)| partitions.contains(p)) {
            let _ = self.store.flush(Duration::from_millis(100));
            core.write_snapshots(&self.store);
            if Instant::now() >= deadline {
                tracing::warn!("final snapshots not acknowledged in time");
                break;
            }
        }
    }

    /// Restores one assigned partition; returns where it starts and, if its
    /// state must be rebuilt by replaying input, up to which offset.
    fn restore(
        &self,
        consumer: &BaseConsumer<ConsumerCtx>,
        partition: i32,
        committed: Option<i64>,
    ) -> (Offset, Option<i64>, &'static str) {
        let snapshot = match self.store.read_latest(partition, self.timeout) {
            Ok(Some(bytes)) => {
                tracing::debug!(partition, bytes = bytes.len(), "snapshot read");
                let mut core = lock(&self.core);
                core.engine.drop_partition(partition);
                match core
                    .engine
                    .restore_state_record(&bytes, partition, &self.topic)
                {
                    Ok(offset) => Some(offset),
                    Err(e) => {
                        metrics::counter!(m::SNAPSHOT_ERRORS_TOTAL, "reason" => e.reason())
                            .increment(1);
                        tracing::error!(partition, error = %e, "snapshot unusable: rebuilding the partition from its earliest input");
                        None
                    }
                }
            }
            Ok(None) => None,
            Err(e) => {
                metrics::counter!(m::SNAPSHOT_ERRORS_TOTAL, "reason" => "unreadable").increment(1);
                tracing::error!(partition, error = %e, "state topic unreadable: rebuilding the partition from its earliest input");
                None
            }
        };
        let (start, from) = match (snapshot, committed) {
            (Some(s), _) => (Offset::Offset(s), "snapshot"),
            (None, Some(_)) => (Offset::Beginning, "rebuild"),
            (None, None) => (Offset::Invalid, "empty"),
        };
        let Some(until) = committed else {
            return (start, None, from);
        };
        let (low, high) = consumer
            .fetch_watermarks(&self.topic, partition, Duration::from_secs(5))
            .unwrap_or((0, i64::MAX));
        // A committed offset past the end of the log belongs to another log
        // (the topic was recreated or truncated): what the log holds now was
        // never processed, so it is not replayed without alerts (nor waited
        // for up to an offset that may never come) but read live from the
        // reset point, as README promises. One past the reported end is
        // allowed: some brokers answer one below the true end.
        if until > high.saturating_add(1) {
            tracing::warn!(
                partition,
                committed = until,
                log_end = high,
                reset = self.reset.as_str(),
                "committed offset beyond the end of the log (topic recreated or truncated?): starting again from the reset point"
            );
            metrics::counter!(m::OFFSET_RESETS_TOTAL).increment(1);
            let reset = match self.reset {
                crate::config::OffsetReset::Earliest => Offset::Beginning,
                crate::config::OffsetReset::Latest => Offset::End,
            };
            return (reset, None, from);
        }
        // Replay only what the log still holds. (Not capped by the high
        // watermark: some brokers answer one below the true end.)
        let first = match start {
            Offset::Offset(s) => s.max(low),
            _ => low,
        };
        (start, (first < until).then_some(until), from)
    }
}

impl RebalanceHandler for Rebalancer {
    fn revoke(&self, consumer: &BaseConsumer<ConsumerCtx>, partitions: &[i32], lost: bool) {
        if !lost {
            self.finish(consumer, partitions);
            self.final_snapshots(partitions);
        }
        lock(&self.core).forget(partitions, &self.health);
    }

    fn assign(
        &self,
        consumer: &BaseConsumer<ConsumerCtx>,
        partitions: &[i32],
        tpl: &mut TopicPartitionList,
    ) {
        let mut ask = TopicPartitionList::new();
        for p in partitions {
            let _ = ask.add_partition(&self.topic, *p);
        }
        let committed = consumer
            .committed_offsets(ask, self.timeout)
            .map_err(|e| tracing::warn!(error = %e, "committed offsets unknown"))
            .ok();
        for &p in partitions {
            let started = Instant::now();
            let c = committed
                .as_ref()
                .and_then(|t| t.find_partition(&self.topic, p))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) if o >= 0 => Some(o),
                    _ => None,
                });
            let (start, replay_until, from) = self.restore(consumer, p, c);
            if !matches!(start, Offset::Invalid) {
                if let Err(e) = tpl.set_partition_offset(&self.topic, p, start) {
                    tracing::error!(partition = p, error = %e, "cannot set the start offset");
                }
            }
            let mut core = lock(&self.core);
            if let Offset::Offset(s) = start
                && from == "snapshot"
            {
                core.next.insert(p, s);
                core.snapshotted.insert(p, s);
                // A snapshot is written only once every alert and dead
                // letter before it is delivered, but the commit that
                // follows it can be lost (a broker gone in between): what
                // it reflects is done, so it is committed, even if no
                // record comes after it.
                if c.is_none_or(|c| s > c) {
                    core.done.insert(p, s);
                }
            }
            match replay_until {
                Some(until) => {
                    tracing::info!(
                        partition = p,
                        from,
                        start = ?start,
                        until,
                        "partition restoring: replaying input up to the committed offset, without alerts"
                    );
                    core.restoring.insert(
                        p,
                        Restore {
                            until,
                            started,
                            replayed: 0,
                            from,
                        },
                    );
                    self.health.restoring.fetch_add(1, Ordering::Relaxed);
                }
                None => restore_done(p, from, 0, started),
            }
            metrics::gauge!(m::STATE_RESTORING).set(core.restoring.len() as f64);
        }
    }
}

/// Runs the pipeline until `shutdown` fires; then stops consuming, flushes
/// alerts and dead letters, commits, and returns.
pub async fn run(
    settings: Settings,
    clock: Arc<dyn Clock>,
    mut shutdown: Shutdown,
    view: Arc<RwLock<View>>,
    health: Arc<Health>,
    keep_table: bool,
) -> anyhow::Result<()> {
    let engine = Engine::new(&settings.engine).context("engine")?;
    let window_names: Vec<String> = engine
        .layout()
        .specs()
        .iter()
        .map(|s| s.name.clone())
        .collect();

    let producer = Arc::new(
        RenewableProducer::new(
            client_config(
                &settings.brokers,
                &[("enable.idempotence", "true"), ("linger.ms", "5")],
                &settings.kafka,
            ),
            health.clone(),
        )
        .context("creating the Kafka producer")?,
    );

    let store = loop {
        // On a thread of its own (blocking requests), which a shutdown
        // does not wait for.
        let (tx, opening) = tokio::sync::oneshot::channel();
        {
            let (settings, health) = (settings.clone(), health.clone());
            std::thread::spawn(move || tx.send(StateStore::open(&settings, health).map(Box::new)));
        }
        let opened = tokio::select! {
            _ = shutdown.recv() => return Ok(()),
            r = opening => r.map_err(anyhow::Error::from).and_then(|r| r),
        };
        match opened {
            Ok(store) => break Arc::<StateStore>::from(store),
            Err(e) => {
                tracing::warn!(error = %e, "state topic not available yet; retrying");
                tokio::select! {
                    _ = shutdown.recv() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    };

    let core = Arc::new(Mutex::new(Core {
        engine,
        pending: BTreeMap::new(),
        done: BTreeMap::new(),
        committed: BTreeMap::new(),
        in_flight: 0,
        next: BTreeMap::new(),
        restoring: BTreeMap::new(),
        snapshotted: BTreeMap::new(),
        staged: BTreeMap::new(),
        due: BTreeSet::new(),
        round: false,
        writes: Vec::new(),
        snapshot_max_bytes: settings.snapshot_max_bytes,
    }));
    let handler = Arc::new(Rebalancer {
        core: core.clone(),
        producer: producer.clone(),
        store: store.clone(),
        health: health.clone(),
        topic: settings.input_topic.clone(),
        timeout: settings.shutdown_timeout,
        reset: settings.auto_offset_reset,
    });
    let mut consumer = Arc::new(subscribed_consumer(&settings, &health, &handler)?);
    let (commit_results, mut commit_outcomes) = tokio::sync::mpsc::unbounded_channel();
    let mut committing = false;
    tracing::info!(
        topic = %settings.input_topic,
        group = %settings.group_id,
        alerts = %settings.alerts_topic,
        dlq = %settings.dlq_topic,
        state = %settings.state_topic,
        windows = ?window_names,
        "consuming"
    );

    let mut ack_tick = tokio::time::interval(Duration::from_millis(5));
    ack_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refresh = tokio::time::interval(Duration::from_secs(1));
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut snapshot_tick = tokio::time::interval(settings.snapshot_interval);
    snapshot_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    snapshot_tick.reset();
    let mut stats = Counters::default();
    let mut guard = OutageGuard::default();

    // Seen by the producer's retry loops, which run inside a select arm.
    let stop = shutdown.clone();
    let outbox = Outbox {
        producer: &producer,
        stop: &stop,
    };
    loop {
        tokio::select! {
            biased;
            _ = shutdown.recv() => break,
            _ = ack_tick.tick() => {
                acknowledge(&core, &producer, &store, &settings.input_topic);
            }
            _ = snapshot_tick.tick() => {
                let mut c = lock(&core);
                c.due = c.next.keys().copied().collect();
                c.round = true;
            }
            _ = refresh.tick() => {
                if guard.check(&consumer, &core, &store, &health, &settings) {
                    // Closing it leaves the group, which makes the
                    // coordinator start a new generation for the new member.
                    match subscribed_consumer(&settings, &health, &handler) {
                        Ok(fresh) => consumer = Arc::new(fresh),
                        Err(e) => tracing::warn!(error = %e, "recreating the consumer failed; retrying"),
                    }
                }
                rewind_beyond_end(&core, &consumer, &health, &settings);
                caught_up(&core, &consumer, &health, &settings.input_topic);
                // Not while cut off: the group may be gone when the
                // brokers come back, and its offsets with it.
                if !guard.paused && !committing {
                    committing = start_commit(&consumer, &settings.input_topic, &lock(&core), &commit_results);
                }
                refresh_view(&core, &*clock, &view, &window_names, &mut stats, keep_table, &health);
            }
            Some(outcome) = commit_outcomes.recv() => {
                committing = false;
                commit_done(&core, outcome);
            }
            msg = consumer.recv(), if pending_room(&core) => match msg {
                Ok(msg) => {
                    if !replay(&msg, &settings, &*clock, &core, &health) {
                        handle(&msg, &settings, &*clock, &core, &outbox, &view, &mut stats).await;
                    }
                }
                // Client-level errors (brokers down, ...) also reach the
                // context's error callback, which logs and counts them.
                Err(e) => tracing::debug!(error = %e, "consume error"),
            },
        }
    }

    tracing::info!("shutting down: flushing alerts and dead letters");
    let deadline = Instant::now() + settings.shutdown_timeout;
    loop {
        let left = {
            let mut c = lock(&core);
            c.drain(&producer);
            c.in_flight
        };
        if left == 0 || Instant::now() >= deadline {
            if left > 0 {
                tracing::warn!(
                    pending = left,
                    "shutdown timeout: unacknowledged deliveries stay uncommitted"
                );
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    {
        let mut c = lock(&core);
        let parts: Vec<i32> = c.done.keys().copied().collect();
        commit(
            &*consumer,
            &settings.input_topic,
            &mut c,
            &parts,
            CommitMode::Sync,
        );
    }
    shutdown_snapshots(&core, &store, &settings);
    refresh_view(
        &core,
        &*clock,
        &view,
        &window_names,
        &mut stats,
        keep_table,
        &health,
    );
    tracing::info!(
        consumed = stats.consumed,
        alerts = stats.alerts,
        rejected = stats.rejected,
        "stopped"
    );
    Ok(())
}

/// The input topic's consumer, subscribed.
fn subscribed_consumer(
    settings: &Settings,
    health: &Arc<Health>,
    handler: &Arc<Rebalancer>,
) -> anyhow::Result<StreamConsumer<ConsumerCtx>> {
    let consumer: StreamConsumer<ConsumerCtx> = client_config(
        &settings.brokers,
        &[
            ("auto.offset.reset", settings.auto_offset_reset.as_str()),
            // librdkafka's default is 5 minutes: a group that formed while
            // the input topic was missing (created after nps-stream
            // started) would wait that long to notice it. One small
            // metadata request every 10 s.
            ("topic.metadata.refresh.interval.ms", "10000"),
        ],
        &settings.kafka,
    )
    // Owned by nps-stream: offsets are committed by the pipeline itself,
    // every second and on revoke and shutdown, only behind finished work.
    .set("group.id", &settings.group_id)
    .set("enable.auto.commit", "false")
    .set("enable.auto.offset.store", "false")
    .create_with_context(ConsumerCtx {
        health: health.clone(),
        input_topic: settings.input_topic.clone(),
        handler: handler.clone(),
    })
    .context("creating the Kafka consumer")?;
    consumer
        .subscribe(&[&settings.input_topic])
        .context("subscribing to the input topic")?;
    Ok(consumer)
}

/// Stops fetching while no broker is reachable, and starts again only once
/// a broker answers metadata for the input topic with its partitions.
///
/// A broker that comes back without its data (or with the topic
/// recreated) no longer knows the topic id the consumer fetched with. Some
/// brokers (Tansu 0.6) answer such a fetch with a zero topic id and a
/// leader hint, which librdkafka 2.12 turns into a metadata update for a
/// topic with neither name nor id, and crashes on (docs/operations.md, Known issues).
/// Fresh metadata gives the consumer the topic's new id first; a topic
/// that is not there yet is waited for, fetching nothing.
#[derive(Default)]
struct OutageGuard {
    paused: bool,
    /// The partitions paused: librdkafka keeps a partition paused through
    /// a rebalance (a lost assignment given back), so these are resumed
    /// whether or not they are still assigned.
    paused_partitions: Vec<i32>,
    told_missing: bool,
    /// After an outage that took this member's partitions, until when to
    /// watch for them to come back, and when the group was last rejoined.
    watch_until: Option<Instant>,
    rejoined: Option<Instant>,
    rejoins: u32,
}

/// How long after an outage a member that lost its partitions keeps
/// asking for them, and how often.
const REJOIN_WATCH: Duration = Duration::from_secs(300);
const REJOIN_EVERY: Duration = Duration::from_secs(10);

fn topic_listed(consumer: &StreamConsumer<ConsumerCtx>, topic: &str) -> KafkaResult<bool> {
    // Blocking, at most two seconds.
    tokio::task::block_in_place(|| consumer.fetch_metadata(Some(topic), Duration::from_secs(2)))
        .map(|md| {
            md.topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        })
}

impl OutageGuard {
    /// Returns true when the consumer should be replaced by a new one
    /// (see `watch`).
    fn check(
        &mut self,
        consumer: &StreamConsumer<ConsumerCtx>,
        core: &Mutex<Core>,
        store: &StateStore,
        health: &Health,
        settings: &Settings,
    ) -> bool {
        let topic = settings.input_topic.as_str();
        let up = health.consumer_brokers_up();
        if !self.paused {
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
        match topic_listed(consumer, topic) {
            Ok(true) => {}
            Ok(false) => {
                if !self.told_missing {
                    self.told_missing = true;
                    tracing::warn!(
                        topic,
                        "input topic not on the brokers; fetching stays paused until it is"
                    );
                }
                return false;
            }
            Err(e) => {
                tracing::debug!(error = %e, "metadata after the outage not available yet");
                return false;
            }
        }
        // What is assigned now: a rebalance may have happened.
        let assignment = match consumer.assignment() {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "assignment unknown; retrying");
                return false;
            }
        };
        let lost = if assignment.count() == 0 {
            Vec::new()
        } else {
            match tokio::task::block_in_place(|| {
                consumer.committed_offsets(assignment.clone(), Duration::from_secs(5))
            }) {
                Ok(theirs) => forget_lost_offsets(core, health, topic, &theirs),
                Err(e) => {
                    tracing::debug!(error = %e, "committed offsets after the outage unknown; retrying");
                    return false;
                }
            }
        };
        // Snapshots need it before the next restore or write.
        tokio::task::block_in_place(|| store.ensure_topic());
        // An empty assignment: the group may have re-formed while the
        // topic was missing (see `watch`).
        let mut resume = assignment.clone();
        for &p in &self.paused_partitions {
            if resume.find_partition(topic, p).is_none() {
                resume.add_partition(topic, p);
            }
        }
        if let Err(e) = consumer.resume(&resume) {
            tracing::warn!(error = %e, "resuming fetches failed; retrying");
            return false;
        }
        self.paused = false;
        if !self.paused_partitions.is_empty() {
            self.watch_until = Some(Instant::now() + REJOIN_WATCH);
        }
        self.paused_partitions.clear();
        self.told_missing = false;
        tracing::info!(topic, "fetching resumed");
        for p in lost {
            seek_to_reset_point(consumer, settings, p);
        }
        false
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
    fn watch(&mut self, consumer: &StreamConsumer<ConsumerCtx>, topic: &str) -> bool {
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

    fn pause(&mut self, consumer: &StreamConsumer<ConsumerCtx>) {
        let paused = consumer.assignment().and_then(|a| {
            consumer.pause(&a)?;
            Ok(a.elements().iter().map(|e| e.partition()).collect())
        });
        match paused {
            Ok(partitions) => {
                self.paused = true;
                self.paused_partitions = partitions;
                tracing::info!("fetching paused until a broker answers for the input topic");
            }
            Err(e) => tracing::debug!(error = %e, "pausing fetches failed; retrying"),
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
fn forget_lost_offsets(
    core: &Mutex<Core>,
    health: &Health,
    topic: &str,
    theirs: &TopicPartitionList,
) -> Vec<i32> {
    let mut c = lock(core);
    let mut lost = Vec::new();
    for e in theirs.elements_for_topic(topic) {
        if matches!(e.offset(), Offset::Offset(o) if o >= 0) {
            continue;
        }
        let p = e.partition();
        if c.committed.contains_key(&p) {
            tracing::warn!(
                partition = p,
                "the brokers no longer hold this group's committed offset (a broker back without its data?): starting again from the reset point"
            );
            metrics::counter!(m::OFFSET_RESETS_TOTAL).increment(1);
            c.rewind(p, health);
            lost.push(p);
        } else {
            c.done.remove(&p);
        }
    }
    lost
}

fn seek_to_reset_point(consumer: &StreamConsumer<ConsumerCtx>, settings: &Settings, p: i32) {
    let to = match settings.auto_offset_reset {
        crate::config::OffsetReset::Earliest => Offset::Beginning,
        crate::config::OffsetReset::Latest => Offset::End,
    };
    if let Err(e) = consumer.seek(&settings.input_topic, p, to, Duration::from_secs(5)) {
        tracing::warn!(partition = p, error = %e, "seek failed; will retry");
    }
}

/// Starts again from the reset point on partitions whose position is
/// beyond the end of their log (see `Health::take_beyond_end`), dropping
/// what is pending for the old log: its offsets mean nothing any more.
fn rewind_beyond_end(
    core: &Mutex<Core>,
    consumer: &StreamConsumer<ConsumerCtx>,
    health: &Health,
    settings: &Settings,
) {
    for p in health.take_beyond_end() {
        tracing::warn!(
            partition = p,
            reset = settings.auto_offset_reset.as_str(),
            "position beyond the end of the log (topic recreated or truncated?): starting again from the reset point"
        );
        metrics::counter!(m::OFFSET_RESETS_TOTAL).increment(1);
        lock(core).rewind(p, health);
        seek_to_reset_point(consumer, settings, p);
    }
}

#[derive(Default)]
struct Counters {
    consumed: u64,
    alerts: u64,
    rejected: u64,
}

/// Counts a response in its segment's `nps_responses_total`: under the
/// view's shared lock (the counters are atomics), or its exclusive one the
/// first time a segment id is seen.
fn count_response(
    view: &RwLock<View>,
    key: KeyId,
    channel: crate::pb::Channel,
    category: Category,
) {
    let counted = view
        .read()
        .is_ok_and(|v| v.series.count_response(key, channel, category));
    if !counted && let Ok(mut v) = view.write() {
        v.series.grow(key.index() + 1);
        v.series.count_response(key, channel, category);
    }
}

fn pending_room(core: &Mutex<Core>) -> bool {
    lock(core).in_flight < MAX_PENDING
}

/// Snapshots every partition whose records are all acknowledged and waits
/// (bounded) for the writes: a restart restores them with no replay.
fn shutdown_snapshots(core: &Mutex<Core>, store: &StateStore, settings: &Settings) {
    let deadline = Instant::now() + settings.shutdown_timeout;
    let mut c = lock(core);
    c.take_snapshots(&settings.input_topic, None);
    c.write_snapshots(store);
    if !c.staged.is_empty() {
        let parts: Vec<i32> = c.staged.keys().copied().collect();
        tracing::warn!(partitions = ?parts, "deliveries unacknowledged: no shutdown snapshot for these; the next owner replays");
    }
    while !c.writes.is_empty() && Instant::now() < deadline {
        let _ = store.flush(Duration::from_millis(100));
        c.write_snapshots(store);
    }
    if !c.writes.is_empty() {
        tracing::warn!("shutdown snapshots not acknowledged in time");
    }
}

/// Ends the restores whose partition's position reached its replay end
/// without a record at that offset (compacted, deleted or idle logs).
fn caught_up(
    core: &Mutex<Core>,
    consumer: &StreamConsumer<ConsumerCtx>,
    health: &Health,
    topic: &str,
) {
    let mut c = lock(core);
    if c.restoring.is_empty() {
        return;
    }
    let Ok(positions) = consumer.position() else {
        return;
    };
    let reached: Vec<i32> = c
        .restoring
        .iter()
        .filter(|(p, r)| {
            positions
                .find_partition(topic, **p)
                .is_some_and(|e| matches!(e.offset(), Offset::Offset(o) if o >= r.until))
        })
        .map(|(p, _)| *p)
        .collect();
    for p in reached {
        c.restored(p, health);
    }
}

/// Replays a record of a restoring partition into the windows, without
/// alerts or dead letters (a previous owner delivered them before it
/// committed). Returns false if the record is live and must be handled.
fn replay(
    msg: &BorrowedMessage<'_>,
    settings: &Settings,
    clock: &dyn Clock,
    core: &Mutex<Core>,
    health: &Health,
) -> bool {
    let (partition, offset) = (msg.partition(), msg.offset());
    let mut c = lock(core);
    let Some(until) = c.restoring.get(&partition).map(|r| r.until) else {
        return false;
    };
    if offset >= until {
        c.restored(partition, health);
        return false;
    }
    let now = clock.now_ms();
    let headers = msg
        .headers()
        .into_iter()
        .flat_map(|h| h.iter())
        .map(|h| (h.key, h.value));
    if let Ok(response) = schema::decode_and_validate(msg.payload(), headers, now, &settings.limits)
    {
        c.engine.record(partition, &response.observation(), now);
    }
    metrics::counter!(m::STATE_REPLAYED_TOTAL).increment(1);
    c.next.insert(partition, offset + 1);
    c.pending.entry(partition).or_default().push_back(Pending {
        offset,
        delivery: None,
    });
    if let Some(r) = c.restoring.get_mut(&partition) {
        r.replayed += 1;
    }
    if offset + 1 >= until {
        c.restored(partition, health);
    }
    true
}

/// Hands the allocator's free pages back to the OS. glibc keeps what the
/// Kafka clients' fetch queues and the snapshot records freed in its
/// arenas, so without this the process's RSS stays at its peak, made of
/// holes, long after the peak is over.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    // SAFETY: malloc_trim only walks and trims the allocator's own arenas;
    // it takes their locks and has no preconditions on the caller.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

fn acknowledge(core: &Mutex<Core>, producer: &RenewableProducer, store: &StateStore, topic: &str) {
    let round_over = {
        let mut c = lock(core);
        c.drain(producer);
        c.stage_due(topic);
        c.write_snapshots(store);
        metrics::gauge!(m::PENDING_DELIVERIES).set(c.in_flight as f64);
        let over = c.round && c.due.is_empty() && c.staged.is_empty() && c.writes.is_empty();
        if over {
            c.round = false;
        }
        over
    };
    if round_over {
        // The records of the round are in the broker and freed.
        release_free_memory();
    }
}

fn refresh_view(
    core: &Mutex<Core>,
    clock: &dyn Clock,
    view: &RwLock<View>,
    window_names: &[String],
    stats: &mut Counters,
    keep_table: bool,
    health: &Health,
) {
    let now = clock.now_ms();
    let mut c = lock(core);
    let sweep = c.engine.sweep(now);
    if !sweep.keys_removed.is_empty() {
        tracing::debug!(
            segments = sweep.keys_removed.len(),
            "segments left every window"
        );
    }
    let segments = c.engine.segments(now);
    // With the engine still locked: segment ids freed by the sweep are not
    // reused before their counters are forgotten.
    if let Ok(mut v) = view.write() {
        v.series.refresh(c.engine.layout().specs(), &segments, |k| {
            c.engine.segment_name(k)
        });
    }
    let table = if keep_table {
        segments
            .iter()
            .map(|s| {
                (
                    s.product.to_string(),
                    s.region.to_string(),
                    s.windows.clone(),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let g = c.engine.gauges();
    drop(c);
    metrics::gauge!(m::ENGINE_KEYS).set(g.keys as f64);
    metrics::gauge!(m::ENGINE_SEGMENT_STATES).set(g.segment_states as f64);
    metrics::gauge!(m::DEDUP_IDS).set(g.dedup_ids as f64);
    metrics::counter!(m::DEDUP_EVICTED_EARLY).absolute(g.dedup_evicted_early);
    metrics::gauge!(m::READY).set(if health.ready() { 1.0 } else { 0.0 });
    if let Ok(mut v) = view.write() {
        v.table = table;
        v.window_names = window_names.to_vec();
        v.alerts_sent = stats.alerts;
        v.consumed = stats.consumed;
        v.rejected = stats.rejected;
    }
}

/// Processes one record: engine, alert or dead letter, pending offset.
async fn handle(
    msg: &BorrowedMessage<'_>,
    settings: &Settings,
    clock: &dyn Clock,
    core: &Mutex<Core>,
    out: &Outbox<'_>,
    view: &RwLock<View>,
    stats: &mut Counters,
) {
    let now = clock.now_ms();
    let partition = msg.partition();
    let offset = msg.offset();
    stats.consumed += 1;
    metrics::counter!(m::EVENTS_CONSUMED_TOTAL).increment(1);
    let headers = msg
        .headers()
        .into_iter()
        .flat_map(|h| h.iter())
        .map(|h| (h.key, h.value));
    let delivery = match schema::decode_and_validate(msg.payload(), headers, now, &settings.limits)
    {
        Ok(response) => {
            let alert = {
                let mut c = lock(core);
                let outcome = c.engine.record(partition, &response.observation(), now);
                match outcome {
                    Outcome::Duplicate => {
                        metrics::counter!(m::DUPLICATES_TOTAL).increment(1);
                        None
                    }
                    Outcome::Counted {
                        key,
                        category,
                        late,
                        overflowed,
                    } => {
                        count_response(view, key, response.channel, category);
                        if late {
                            metrics::counter!(m::LATE_EVENTS_TOTAL).increment(1);
                        }
                        if overflowed {
                            metrics::counter!(m::CARDINALITY_OVERFLOW_TOTAL).increment(1);
                        }
                        let delay = (now - response.responded_at_ms).max(0) as f64 / 1000.0;
                        metrics::histogram!(m::END_TO_END_DELAY).record(delay);
                        if settings.alerts.should_alert(&response) {
                            let stats_now = c.engine.segment_stats(key, now);
                            let specs = c.engine.layout().specs();
                            let windows: Vec<_> = specs.iter().zip(stats_now).collect();
                            let alert =
                                alerts::build(&response, &windows, late, now, &settings.alerts);
                            Some((alert, key))
                        } else {
                            None
                        }
                    }
                }
            };
            match alert {
                None => None,
                Some((alert, key)) => {
                    let (bytes, content_type) = alerts::encode(&alert, settings.alerts_format);
                    let headers = OwnedHeaders::new()
                        .insert(Header {
                            key: CONTENT_TYPE,
                            value: Some(content_type),
                        })
                        .insert(Header {
                            key: MESSAGE_TYPE_HEADER,
                            value: Some(MESSAGE_TYPE),
                        })
                        .insert(Header {
                            key: ALERT_ID_HEADER,
                            value: Some(alert.alert_id.as_str()),
                        });
                    let fut = send(
                        out,
                        &settings.alerts_topic,
                        Some(alerts::key(&alert).as_bytes()),
                        Some(&bytes),
                        headers,
                    )
                    .await;
                    if let Ok(v) = view.read() {
                        v.series.count_alert(key, alert.priority());
                    }
                    stats.alerts += 1;
                    Some(fut)
                }
            }
        }
        Err(rejection) => {
            stats.rejected += 1;
            Some(dead_letter(msg, &rejection, settings, out, now).await)
        }
    };
    {
        let mut c = lock(core);
        if delivery.is_some() {
            c.in_flight += 1;
        }
        c.next.insert(partition, offset + 1);
        c.pending
            .entry(partition)
            .or_default()
            .push_back(Pending { offset, delivery });
    }
}

async fn dead_letter(
    msg: &BorrowedMessage<'_>,
    rejection: &Rejection,
    settings: &Settings,
    out: &Outbox<'_>,
    now: i64,
) -> Delivery {
    let reason = rejection.reason().as_str();
    metrics::counter!(m::EVENTS_REJECTED_TOTAL, "reason" => reason).increment(1);
    tracing::debug!(partition = msg.partition(), offset = msg.offset(), reason, error = %rejection, "dead-lettering");
    let mut headers = OwnedHeaders::new();
    if let Some(h) = msg.headers() {
        for header in h.iter() {
            headers = headers.insert(header);
        }
    }
    let detail = rejection.to_string();
    let (partition, offset, failed_at) = (
        msg.partition().to_string(),
        msg.offset().to_string(),
        now.to_string(),
    );
    let headers = headers
        .insert(Header {
            key: DLQ_REASON,
            value: Some(reason),
        })
        .insert(Header {
            key: DLQ_ERROR,
            value: Some(detail.as_str()),
        })
        .insert(Header {
            key: DLQ_TOPIC,
            value: Some(msg.topic()),
        })
        .insert(Header {
            key: DLQ_PARTITION,
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: DLQ_OFFSET,
            value: Some(offset.as_str()),
        })
        .insert(Header {
            key: DLQ_FAILED_AT,
            value: Some(failed_at.as_str()),
        });
    send(out, &settings.dlq_topic, msg.key(), msg.payload(), headers).await
}
