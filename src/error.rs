//! Why a command could not start or had to stop: one typed error for the
//! library's entry points (`service::run`, `demo::run`, `send::run`, the
//! state store, the HTTP surface), each variant naming what failed, so
//! that callers can tell them apart. Only `main` turns them into text and
//! an exit code. Refusals of records and of snapshots have their own
//! types with `reason()` labels (`schema::Rejection`,
//! `engine::SnapshotError`, `StateReadError`).

use std::net::SocketAddr;

use rdkafka::error::KafkaError;

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A Kafka client could not be created.
    #[error("creating {what}: {source}")]
    Client {
        what: &'static str,
        source: KafkaError,
    },
    #[error("subscribing to {topic}: {source}")]
    Subscribe { topic: String, source: KafkaError },
    #[error("state topic {topic}: cannot create it or see it; create it (compacted) by hand")]
    StateTopicUnavailable { topic: String },
    /// Case tracking needs the alerts and case-events topics
    /// co-partitioned.
    #[error(
        "case tracking: {alerts_topic} has {alerts} partitions but {events_topic} has {events}; they must have the same count (recreate {events_topic} with {alerts}, or run with --cases off)"
    )]
    CasesPartitions {
        alerts_topic: String,
        alerts: i32,
        events_topic: String,
        events: i32,
    },
    /// A topic case tracking needs is missing and cannot be created.
    #[error(
        "case tracking: topic {topic} is missing and cannot be created ({reason}); create it with {partitions} partitions (as many as the alerts topic), or run with --cases off"
    )]
    CasesTopic {
        topic: String,
        partitions: i32,
        reason: String,
    },
    /// The promoter events topic is missing and cannot be created.
    #[error(
        "promoter events: topic {topic} is missing and cannot be created ({reason}); create it, name another with --promoter-topic, or run with --promoters off"
    )]
    PromoterTopic { topic: String, reason: String },
    #[error("--metrics-addr: cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("installing the metrics recorder: {0}")]
    Recorder(String),
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    /// `healthcheck`'s probe.
    #[error("{url}: {reason}")]
    Probe { url: String, reason: String },
    /// `send`: the input file.
    #[error("--file: cannot open {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("reading line {line}: {source}")]
    ReadLine { line: usize, source: std::io::Error },
    /// `send`: a record the producer refused (not a failed delivery).
    #[error("producing {what}: {source}")]
    Produce { what: String, source: KafkaError },
    /// The demo's embedded Kafka.
    #[error("embedded Kafka: {what}: {source}")]
    Embedded { what: String, source: KafkaError },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Why a partition's latest snapshot could not be read. `reason()` is the
/// label of `nps_state_read_errors_total`.
#[derive(Debug, thiserror::Error)]
pub enum StateReadError {
    #[error("state topic {topic} not on the brokers")]
    TopicMissing { topic: String },
    #[error("watermarks of {topic}/{partition}: {source}")]
    Watermarks {
        topic: String,
        partition: i32,
        source: KafkaError,
    },
    #[error("cannot read {topic}/{partition}: {source}")]
    Assign {
        topic: String,
        partition: i32,
        source: KafkaError,
    },
    #[error("timed out reading {topic}/{partition}")]
    Timeout { topic: String, partition: i32 },
}

impl StateReadError {
    /// A metric label: what kind of failure, no topic names.
    pub fn reason(&self) -> &'static str {
        match self {
            StateReadError::TopicMissing { .. } => "topic_missing",
            StateReadError::Watermarks { .. } => "watermarks",
            StateReadError::Assign { .. } => "assign",
            StateReadError::Timeout { .. } => "timeout",
        }
    }
}
