//! A loop's consumer: the recipe both loops share (`subscribe`: group,
//! offsets committed by the loop only, assignor), and its context: broker
//! health and lag from its statistics, errors, and rebalances handed to
//! the loop's `RebalanceHandler` inside `recv`, with the loop's holds
//! applied to the partitions that come and go (`Holds`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rdkafka::ClientContext;
use rdkafka::TopicPartitionList;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};

use super::holds::Holds;
use crate::config::OffsetReset;
use crate::kafka::{Health, Role, blocking, client_config, count_up, log_client, on_client_error};
use crate::liveness::Beat;
use crate::metrics as m;

/// What a loop does when Kafka moves partitions. Called on the consumer's
/// polling thread, inside `recv`.
pub trait RebalanceHandler: Send + Sync {
    /// Before `partitions` are taken away: finish and commit their work
    /// and snapshot their state, unless `lost` (another member may own
    /// them already): then only drop it.
    fn revoke(&self, consumer: &BaseConsumer<ConsumerCtx>, partitions: &[i32], lost: bool);
    /// Before `partitions` are given to this instance: restore their state
    /// and set in `tpl` the offset each starts from.
    fn assign(
        &self,
        consumer: &BaseConsumer<ConsumerCtx>,
        partitions: &[i32],
        tpl: &mut TopicPartitionList,
    );
}

/// The consumer's context: health, lag, errors and rebalances.
pub struct ConsumerCtx {
    pub health: Arc<Health>,
    /// The topic whose partitions the handler is told about and whose lag
    /// the health view follows (the first subscribed).
    pub input_topic: String,
    pub handler: Arc<dyn RebalanceHandler>,
    /// Why the loop holds fetching paused: partitions come in paused while
    /// it does, and leave resumed (`Holds`).
    pub(crate) holds: Holds,
    /// Told when this consumer loses every broker, so that its loop can
    /// pause fetching at once rather than at its next tick (a fetch still
    /// going when a broker comes back without its data crashes librdkafka
    /// as released: docs/operations.md, Known issues).
    pub(crate) cut_off: Arc<tokio::sync::Notify>,
    /// This consumer's assignment and commits are the service's
    /// (`nps_assigned_partitions`, `nps_commits_total`): the pipeline's,
    /// not the case tracker's.
    pub(crate) reports: bool,
    /// The loop's heartbeat: a rebalance (restores can take minutes) does
    /// not count as a stall.
    pub(crate) beat: Arc<Beat>,
}

/// How a loop's consumer differs from the recipe both share.
pub(crate) struct Recipe<'a> {
    pub(crate) brokers: &'a str,
    /// The user's `-X` properties.
    pub(crate) properties: &'a BTreeMap<String, String>,
    pub(crate) group: &'a str,
    /// The first is the one whose partitions the handler is told about.
    pub(crate) topics: &'a [&'a str],
    pub(crate) reset: OffsetReset,
    /// Partition *i* of every topic to one member (range assignor): the
    /// case tracker's alerts and case events meet.
    pub(crate) co_partitioned: bool,
    /// Statistics every second feed the health view, and the assignment
    /// and commits are reported (`ConsumerCtx::reports`): the pipeline's.
    pub(crate) reports: bool,
    /// Its name in errors.
    pub(crate) what: &'static str,
    /// Its loop's heartbeat, held still while a rebalance runs.
    pub(crate) beat: Arc<Beat>,
    /// librdkafka defaults of its own, under the user's `-X` properties
    /// (e.g. a smaller fetch queue for a loop that reads little).
    pub(crate) defaults: &'a [(&'a str, &'a str)],
}

/// A loop's consumer, subscribed. Offsets are committed by the loop
/// itself, only behind finished work (auto commit and offset store off).
pub(crate) fn subscribe(
    recipe: &Recipe<'_>,
    health: Arc<Health>,
    handler: Arc<dyn RebalanceHandler>,
    holds: Holds,
) -> crate::error::Result<StreamConsumer<ConsumerCtx>> {
    let mut defaults = vec![
        ("auto.offset.reset", recipe.reset.as_str()),
        // librdkafka's default is 5 minutes: a group that formed while
        // a topic was missing (created after nps-stream started) would
        // wait that long to notice it. One small metadata request
        // every 10 s.
        ("topic.metadata.refresh.interval.ms", "10000"),
    ];
    defaults.extend_from_slice(recipe.defaults);
    let mut config = client_config(recipe.brokers, &defaults, recipe.properties);
    if !recipe.reports {
        config.set("statistics.interval.ms", "0");
    }
    config
        .set("group.id", recipe.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    if recipe.co_partitioned {
        config.set("partition.assignment.strategy", "range");
    }
    let consumer: StreamConsumer<ConsumerCtx> = config
        .create_with_context(ConsumerCtx {
            health,
            input_topic: recipe.topics.first().map_or("", |t| *t).to_string(),
            handler,
            holds,
            cut_off: Arc::new(tokio::sync::Notify::new()),
            reports: recipe.reports,
            beat: recipe.beat.clone(),
        })
        .map_err(|source| crate::error::Error::Client {
            what: recipe.what,
            source,
        })?;
    consumer
        .subscribe(recipe.topics)
        .map_err(|source| crate::error::Error::Subscribe {
            topic: recipe.topics.join(","),
            source,
        })?;
    Ok(consumer)
}

impl ConsumerCtx {
    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements()
            .iter()
            .filter(|e| e.topic() == self.input_topic)
            .map(|e| e.partition())
            .collect()
    }

    fn rebalance_now(
        &self,
        consumer: &BaseConsumer<ConsumerCtx>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = !consumer_protocol_is_eager(consumer);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assigned(consumer, tpl, cooperative);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoked(consumer, tpl, cooperative);
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                tracing::warn!(error = %code, "rebalance error");
                self.health.joined.store(false, Ordering::Relaxed);
                let parts = self.partitions(tpl);
                self.handler.revoke(consumer, &parts, true);
                self.holds.on_revoking(consumer, tpl);
                let _ = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
            }
        }
    }

    /// `tpl` given to this member: the handler restores each partition and
    /// sets where it starts, then the assignment takes effect.
    fn assigned(
        &self,
        consumer: &BaseConsumer<ConsumerCtx>,
        tpl: &mut TopicPartitionList,
        cooperative: bool,
    ) {
        let parts = self.partitions(tpl);
        // The case tracker's handler says it in its own words.
        if self.reports {
            tracing::info!(partitions = ?parts, "partitions assigned");
        }
        self.handler.assign(consumer, &parts, tpl);
        self.health.joined.store(true, Ordering::Relaxed);
        let done = if cooperative {
            consumer.incremental_assign(tpl)
        } else {
            consumer.assign(tpl)
        };
        if let Err(e) = done {
            tracing::error!(error = %e, "assigning partitions failed");
        }
        self.holds.on_assigned(consumer, tpl);
        if let Ok(mut lags) = self.health.lags.lock() {
            for p in &parts {
                lags.entry(*p).or_insert(0);
            }
        }
        let total = match consumer.assignment() {
            Ok(a) => self.partitions(&a).len(),
            Err(_) => parts.len(),
        };
        self.set_assigned(total);
    }

    /// `tpl` taken away: the handler finishes (or, lost, drops) each
    /// partition's work, then the assignment ends.
    fn revoked(
        &self,
        consumer: &BaseConsumer<ConsumerCtx>,
        tpl: &TopicPartitionList,
        cooperative: bool,
    ) {
        let parts = self.partitions(tpl);
        let lost = consumer.assignment_lost();
        if lost {
            // A lost assignment means the group no longer counts this
            // member (its heartbeats stopped for `session.timeout.ms`, or
            // `max.poll.interval.ms` passed between polls): not ready
            // until the group assigns to it again.
            self.health.joined.store(false, Ordering::Relaxed);
        }
        if self.reports {
            tracing::info!(partitions = ?parts, lost, "partitions revoked");
        }
        self.handler.revoke(consumer, &parts, lost);
        self.health.forget_lag(&parts);
        self.holds.on_revoking(consumer, tpl);
        let done = if cooperative {
            consumer.incremental_unassign(tpl)
        } else {
            consumer.unassign()
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, "unassigning partitions failed");
        }
        // An eager rebalance revokes everything; cooperative only some.
        let left = if cooperative {
            self.health
                .assigned
                .load(Ordering::Relaxed)
                .saturating_sub(parts.len())
        } else {
            0
        };
        self.set_assigned(left);
    }

    fn set_assigned(&self, n: usize) {
        self.health.assigned.store(n, Ordering::Relaxed);
        if self.reports {
            metrics::gauge!(m::ASSIGNED_PARTITIONS).set(n as f64);
        }
    }
}

impl ClientContext for ConsumerCtx {
    fn stats(&self, stats: Statistics) {
        self.health.brokers_seen(Role::Consumer, count_up(&stats));
        if let Some(topic) = stats.topics.get(&self.input_topic) {
            if let (Ok(mut lags), Ok(mut beyond)) =
                (self.health.lags.lock(), self.health.beyond_end.lock())
            {
                for (p, part) in &topic.partitions {
                    // Only partitions this instance consumes.
                    if *p < 0 || !lags.contains_key(p) {
                        continue;
                    }
                    if part.consumer_lag >= 0 {
                        lags.insert(*p, part.consumer_lag);
                    }
                    if part.hi_offset >= 0 && part.next_offset > part.hi_offset {
                        *beyond.entry(*p).or_insert(0) += 1;
                    } else {
                        beyond.remove(p);
                    }
                }
            }
        }
    }
    fn error(&self, error: KafkaError, reason: &str) {
        // Told at once, rather than at the next statistics.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health.brokers_seen(Role::Consumer, 0);
            self.cut_off.notify_one();
        }
        on_client_error(&self.health, Role::Consumer, &error, reason);
    }
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_client(level, fac, log_message);
    }
}

impl ConsumerContext for ConsumerCtx {
    // Only commits librdkafka makes by itself report here (none: auto
    // commit is off); the pipeline counts its own commits' answers.
    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &rdkafka::TopicPartitionList,
    ) {
        if !self.reports {
            return;
        }
        match result {
            Ok(()) => metrics::counter!(m::COMMITS_TOTAL, "result" => "ok").increment(1),
            Err(e) => {
                metrics::counter!(m::COMMITS_TOTAL, "result" => "error").increment(1);
                tracing::debug!(error = %e, "offset commit failed");
            }
        }
    }

    // Replaces rdkafka's default so that the handler can set where each
    // assigned partition starts (the offset its restored state reflects)
    // before the assignment takes effect.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        // The handler blocks (waits for deliveries, reads the state topic,
        // asks the brokers for offsets), and this runs inside the async
        // consumer's `recv`.
        self.beat.rebalancing(true, Instant::now());
        blocking(|| self.rebalance_now(consumer, err, tpl));
        self.beat.rebalancing(false, Instant::now());
    }
}

fn consumer_protocol_is_eager(consumer: &BaseConsumer<ConsumerCtx>) -> bool {
    matches!(
        consumer.rebalance_protocol(),
        rdkafka::consumer::RebalanceProtocol::Eager
    )
}
