//! Recovery through Kafka: the state topic, which holds each input
//! partition's latest snapshot (as Kafka Streams keeps changelog topics;
//! no database).
//!
//! Input partition `p` of topic `T` is snapshotted as one record keyed
//! `T/p` on state partition `p` (modulo the state topic's partition count,
//! if it has fewer). The latest snapshot of `p` is therefore the last record
//! of its state partition with that key: a restore reads the partition's
//! tail, normally exactly one record. The topic is created compacted if
//! missing, so only the latest snapshot per key is kept.
//!
//! The record's value is `Engine::partition_state_record`: versioned
//! protobuf with a checksum; decoding and checking it is the engine's job.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::events::{Event, StateTopicDegraded};
use crate::kafka::{Role, client_config, log_client, on_client_error};

/// Room for a record's framing beyond the snapshot it carries: the state
/// topic's and the clients' record size limit is the largest snapshot
/// (`--snapshot-max-bytes`) plus this (64 MiB → 68157440).
const RECORD_FRAMING_BYTES: usize = 1 << 20;

/// The record size limit for snapshots of at most `snapshot_max_bytes`.
pub fn record_limit(snapshot_max_bytes: usize) -> String {
    (snapshot_max_bytes + RECORD_FRAMING_BYTES).to_string()
}
/// Longest tail of a state partition read to find a partition's latest
/// snapshot (more than one record only when input partitions share a state
/// partition, or a broker misreports the end).
const MAX_SCAN: i64 = 4096;

/// The state topic's clients' context: errors counted and throttled like
/// the others, librdkafka's logs through `tracing`.
pub struct StateCtx {
    health: std::sync::Arc<crate::kafka::Health>,
}

impl ClientContext for StateCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        on_client_error(&self.health, Role::State, &error, reason);
    }
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_client(level, fac, log_message);
    }
}

impl ConsumerContext for StateCtx {}

impl rdkafka::producer::ProducerContext for StateCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

pub use crate::error::StateReadError;

/// Writes and reads partition snapshots on the state topic.
pub struct StateStore {
    topic: String,
    input_topic: String,
    /// Partitions of the state topic.
    partitions: i32,
    producer: FutureProducer<StateCtx>,
    reader: BaseConsumer<StateCtx>,
    admin: AdminClient<StateCtx>,
    /// The topic's record size limit (`max.message.bytes`) when created.
    record_limit: String,
}

/// Where the state topic is and how to reach it: what the store needs,
/// and nothing of the command line.
#[derive(Debug, Clone)]
pub struct StateConfig<'a> {
    pub brokers: &'a str,
    /// The user's librdkafka properties (`-X`).
    pub properties: &'a BTreeMap<String, String>,
    pub state_topic: &'a str,
    /// The topic whose partitions' state this holds.
    pub input_topic: &'a str,
    /// Largest snapshot record (`--snapshot-max-bytes`).
    pub snapshot_max_bytes: usize,
}

impl StateStore {
    /// Connects, creating the state topic (compacted, one partition per
    /// input partition) if it does not exist. Blocking (metadata and admin
    /// requests), bounded to about a minute.
    pub fn open(
        settings: &StateConfig<'_>,
        health: std::sync::Arc<crate::kafka::Health>,
    ) -> crate::error::Result<StateStore> {
        let client = |what| move |source| crate::error::Error::Client { what, source };
        let ctx = || StateCtx {
            health: health.clone(),
        };
        // No statistics: these clients are not what health reports on.
        let base = |defaults: &[(&str, &str)]| {
            let mut c = client_config(settings.brokers, defaults, settings.properties);
            c.set("statistics.interval.ms", "0");
            c
        };
        let limit = record_limit(settings.snapshot_max_bytes);
        let producer: FutureProducer<StateCtx> = base(&[
            ("compression.type", "lz4"),
            ("linger.ms", "20"),
            ("message.max.bytes", &limit),
        ])
        .create_with_context(ctx())
        .map_err(client("the state producer"))?;
        // Assigns partitions by hand: the group id is required by
        // librdkafka but never joined, and nothing is committed.
        let reader_group = format!("{}-reader", settings.state_topic);
        let reader: BaseConsumer<StateCtx> = base(&[
            ("group.id", reader_group.as_str()),
            ("enable.partition.eof", "true"),
            // Reads are point reads: never let a fetch wait at the end.
            ("fetch.wait.max.ms", "10"),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            ("fetch.max.bytes", &limit),
            ("max.partition.fetch.bytes", &limit),
            ("receive.message.max.bytes", "100000000"),
        ])
        .create_with_context(ctx())
        .map_err(client("the state reader"))?;

        let admin: AdminClient<StateCtx> = base(&[])
            .create_with_context(ctx())
            .map_err(client("the admin client"))?;
        let mut store = StateStore {
            topic: settings.state_topic.to_string(),
            input_topic: settings.input_topic.to_string(),
            partitions: 0,
            producer,
            reader,
            admin,
            record_limit: limit.clone(),
        };
        let input_partitions = store.partition_count(settings.input_topic);
        store.partitions = match store.partition_count(&store.topic) {
            Some(n) => n,
            None => {
                create_topic(
                    &store.admin,
                    &store.topic,
                    input_partitions.unwrap_or(1),
                    &store.record_limit,
                );
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    if let Some(n) = store.partition_count(&store.topic) {
                        break n;
                    }
                    // A broker without CreateTopics may still create it on
                    // a producer's metadata request (auto.create.topics).
                    let _ = store
                        .producer
                        .client()
                        .fetch_metadata(Some(&store.topic), Duration::from_secs(2));
                    if Instant::now() >= deadline {
                        return Err(crate::error::Error::StateTopicUnavailable {
                            topic: store.topic.clone(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        };
        if let Some(n) = input_partitions {
            if store.partitions < n {
                tracing::warn!(
                    state_topic = %store.topic,
                    state_partitions = store.partitions,
                    input_partitions = n,
                    "state topic has fewer partitions than the input: restores read more"
                );
            }
        }
        tracing::info!(state_topic = %store.topic, partitions = store.partitions, "state topic ready");
        Ok(store)
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Creates the state topic again, with as many partitions as before,
    /// if the brokers no longer list it (a broker back without its data).
    /// Blocking, bounded to about half a minute.
    pub fn ensure_topic(&self) {
        if self.partition_count(&self.topic).is_some() {
            return;
        }
        tracing::warn!(
            state_topic = %self.topic,
            "state topic missing (a broker back without its data?): creating it again"
        );
        create_topic(
            &self.admin,
            &self.topic,
            self.partitions,
            &self.record_limit,
        );
    }

    fn partition_count(&self, topic: &str) -> Option<i32> {
        // Blocking: at start, and before each restore.
        crate::kafka::partition_count(self.reader.client(), topic, Duration::from_secs(10))
    }

    fn key(&self, partition: i32) -> String {
        format!("{}/{}", self.input_topic, partition)
    }

    fn state_partition(&self, partition: i32) -> i32 {
        partition.rem_euclid(self.partitions.max(1))
    }

    /// Hands a snapshot of `partition` to the producer.
    pub fn write(&self, partition: i32, bytes: &[u8]) -> KafkaResult<DeliveryFuture> {
        let key = self.key(partition);
        let record = FutureRecord::to(&self.topic)
            .partition(self.state_partition(partition))
            .key(key.as_bytes())
            .payload(bytes);
        self.producer.send_result(record).map_err(|(e, _)| e)
    }

    /// Waits (bounded) for the snapshots handed over so far to be sent.
    pub fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        self.producer.flush(timeout)
    }

    /// The latest snapshot of `partition`, or `None` if there is none.
    /// Blocking, bounded by `timeout`.
    ///
    /// Reads the partition's tail forward to its end, keeping the last
    /// record with the key; if the tail has none, a tail 16 times longer,
    /// and so on. Forward, because some Kafka-compatible brokers answer a
    /// high watermark below the true end (Tansu 0.6 gives the last batch's
    /// base offset): the end is where the reads stop, not where they start.
    pub fn read_latest(
        &self,
        partition: i32,
        timeout: Duration,
    ) -> Result<Option<Vec<u8>>, StateReadError> {
        let deadline = Instant::now() + timeout;
        let sp = self.state_partition(partition);
        let key = self.key(partition);
        // Fresh metadata before assigning: after a broker lost its data the
        // state topic may be gone or have a new id, and a fetch by a stale
        // id crashes librdkafka 2.12 as released (see the pipeline's OutageGuard).
        if self.partition_count(&self.topic).is_none() {
            return Err(StateReadError::TopicMissing {
                topic: self.topic.clone(),
            });
        }
        let (low, high) = self
            .reader
            .fetch_watermarks(&self.topic, sp, timeout)
            .map_err(|source| StateReadError::Watermarks {
                topic: self.topic.clone(),
                partition: sp,
                source,
            })?;
        let mut tail = 1i64;
        let result = loop {
            let from = high.saturating_sub(tail).max(low);
            if let Some(value) = self.scan(sp, from, key.as_bytes(), deadline)? {
                break Some(value);
            }
            if from <= low || tail >= MAX_SCAN {
                break None;
            }
            tail *= 16;
        };
        self.reader.unassign().ok();
        Ok(result)
    }

    /// Whether the log of `topic`/`partition` reaches `end` (holds the
    /// record before it), read from a fetch rather than from ListOffsets:
    /// Tansu 0.6 answers ListOffsets (latest) with the last batch's base
    /// offset + 1 (`reported_high`), so a committed offset or a position
    /// up to a batch past that answer is still inside the log. Reads from
    /// `reported_high - 1`, which is that batch's start on Tansu and the
    /// last record on Kafka (a fetch from inside a batch can skip to the
    /// next one on Tansu), forward to a record at `end - 1` or later
    /// (true) or to the end (false). `None` when no answer came within
    /// `timeout`. Blocking.
    pub fn log_reaches(
        &self,
        topic: &str,
        partition: i32,
        end: i64,
        reported_high: i64,
        timeout: Duration,
    ) -> Option<bool> {
        if end <= 0 {
            return Some(true);
        }
        let from = reported_high.saturating_sub(1).clamp(0, end - 1);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from))
            .ok()?;
        self.reader.assign(&tpl).ok()?;
        let deadline = Instant::now() + timeout;
        let answer = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break None;
            }
            match self.reader.poll(left.min(Duration::from_millis(200))) {
                Some(Ok(m)) if m.topic() == topic && m.partition() == partition => {
                    if m.offset() >= end - 1 {
                        break Some(true);
                    }
                    // Below where the read started: the start was out of
                    // range and reset to the beginning of a shorter log.
                    if m.offset() < from {
                        break Some(false);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) if p == partition => break Some(false),
                Some(Err(e)) => tracing::debug!(error = %e, topic, partition, "log end read"),
                _ => {}
            }
        };
        self.reader.unassign().ok();
        answer
    }

    /// The value of the last record keyed `key` from `from` to the end of
    /// state partition `sp`.
    fn scan(
        &self,
        sp: i32,
        from: i64,
        key: &[u8],
        deadline: Instant,
    ) -> Result<Option<Vec<u8>>, StateReadError> {
        let assign = |source| StateReadError::Assign {
            topic: self.topic.clone(),
            partition: sp,
            source,
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, sp, Offset::Offset(from))
            .map_err(assign)?;
        self.reader.assign(&tpl).map_err(assign)?;
        let mut last = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StateReadError::Timeout {
                    topic: self.topic.clone(),
                    partition: sp,
                });
            }
            match self.reader.poll(left.min(Duration::from_millis(200))) {
                None => {}
                Some(Ok(m)) if m.partition() == sp && m.key() == Some(key) => {
                    last = Some(m.payload().map(<[u8]>::to_vec).unwrap_or_default());
                }
                Some(Ok(_)) => {}
                Some(Err(KafkaError::PartitionEOF(p))) if p == sp => return Ok(last),
                Some(Err(e)) => tracing::debug!(error = %e, "state topic read"),
            }
        }
    }
}

/// Creates the state topic: compacted, records up to the snapshot limit,
/// the broker's default replication. A broker that refuses the settings
/// gets a plain topic; one that refuses creation is reported (the topic
/// may still be auto-created, or made by hand).
fn create_topic(admin: &AdminClient<StateCtx>, topic: &str, partitions: i32, record_limit: &str) {
    let opts = AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(5)))
        .operation_timeout(Some(Duration::from_secs(5)));
    let compacted = |replication| {
        NewTopic::new(topic, partitions, TopicReplication::Fixed(replication))
            .set("cleanup.policy", "compact")
            .set("max.message.bytes", record_limit)
    };
    // Each attempt with what it gives up against the one before.
    let attempts = [
        (None, compacted(-1)),
        (Some("replication"), compacted(1)),
        (
            Some("compaction"),
            NewTopic::new(topic, partitions, TopicReplication::Fixed(1)),
        ),
    ];
    let created = create_with_fallbacks(&attempts, |new| {
        match futures::executor::block_on(admin.create_topics([new], &opts)) {
            Ok(results) => match results.first() {
                Some(Ok(_)) => Attempt::Made,
                Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Attempt::Exists,
                Some(Err((_, code))) => {
                    tracing::warn!(topic, error = ?code, config = ?new.config, "state topic creation refused");
                    Attempt::Refused
                }
                None => Attempt::Refused,
            },
            Err(e) => Attempt::Unsupported(e.to_string()),
        }
    });
    match created {
        Created::Exists => {}
        Created::Full => tracing::info!(topic, partitions, "state topic created"),
        Created::Without(dropped) => StateTopicDegraded { topic, dropped }.emit(),
        Created::Not(why) => tracing::warn!(
            topic,
            error = why.as_deref().unwrap_or("every setting refused"),
            "could not create the state topic with CreateTopics; waiting for it to appear (create it compacted, as docs/operations.md says)"
        ),
    }
}

/// One attempt at creating the state topic.
#[derive(Debug)]
enum Attempt {
    Made,
    Exists,
    /// The broker refused these settings.
    Refused,
    /// The request itself failed (not supported, timed out): other
    /// settings would fare no better.
    Unsupported(String),
}

/// What creating the state topic came to.
#[derive(Debug, PartialEq)]
enum Created {
    Full,
    Exists,
    /// Created without what the broker refused: `replication` (one
    /// replica), or `compaction` (one replica, not compacted, not sized).
    Without(&'static str),
    /// Not created (why, when the request failed).
    Not(Option<String>),
}

/// Tries the state topic's settings in order, each giving up more than
/// the one before (the first gives up nothing), until one is taken.
fn create_with_fallbacks<T>(
    attempts: &[(Option<&'static str>, T)],
    mut try_create: impl FnMut(&T) -> Attempt,
) -> Created {
    for (dropped, settings) in attempts {
        match (try_create(settings), dropped) {
            (Attempt::Exists, _) => return Created::Exists,
            (Attempt::Made, None) => return Created::Full,
            (Attempt::Made, Some(d)) => return Created::Without(d),
            (Attempt::Refused, _) => continue,
            (Attempt::Unsupported(why), _) => return Created::Not(Some(why)),
        }
    }
    Created::Not(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(answers: Vec<Attempt>) -> (Created, usize) {
        let attempts = [(None, 0), (Some("replication"), 1), (Some("compaction"), 2)];
        let mut answers = answers.into_iter();
        let mut tried = 0;
        let created = create_with_fallbacks(&attempts, |i| {
            assert_eq!(*i, tried, "attempts in order");
            tried += 1;
            answers.next().unwrap_or(Attempt::Refused)
        });
        (created, tried)
    }

    #[test]
    fn the_state_topic_falls_back_step_by_step_and_says_what_it_gave_up() {
        use Attempt::*;
        assert_eq!(run(vec![Made]), (Created::Full, 1));
        assert_eq!(run(vec![Exists]), (Created::Exists, 1));
        assert_eq!(
            run(vec![Refused, Made]),
            (Created::Without("replication"), 2)
        );
        assert_eq!(
            run(vec![Refused, Refused, Made]),
            (Created::Without("compaction"), 3)
        );
        assert_eq!(
            run(vec![Refused, Refused, Refused]),
            (Created::Not(None), 3)
        );
        // A request the broker cannot take stops the fallbacks at once.
        let (c, tried) = run(vec![Unsupported("no CreateTopics".into())]);
        assert_eq!(
            (c, tried),
            (Created::Not(Some("no CreateTopics".into())), 1)
        );
    }
}
