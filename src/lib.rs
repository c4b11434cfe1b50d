//! nps-stream: streaming Net Promoter Score from Kafka.
//!
//! Consumes protobuf `SurveyResponse` events, keeps rolling-window NPS per
//! product × region in memory (several windows at once, with counts, margin
//! of error and value-weighted NPS), publishes Prometheus metrics, emits a
//! detractor alert per detractor, and dead-letters what it cannot accept.
//!
//! # Layout
//! The same map as docs/design.md's module table (a test holds them
//! together). Pure cores, which take `now` as an argument and do no I/O:
//! - [`pb`]: the types generated from `proto/nps/v1/*.proto` (prost), with
//!   their protobuf-JSON mapping (pbjson).
//! - [`schema`]: decoding (plain protobuf and Confluent Schema Registry
//!   framing) and validation; every refusal is a named [`schema::Reason`].
//! - [`engine`]: the NPS engine: bucketed rolling windows, NPS math,
//!   dedup and revisions, cardinality guard, per-partition state and
//!   snapshots. No clock, no I/O, no Kafka, no metrics.
//! - [`cases`]: the case tracker (closing the loop: contact SLAs,
//!   escalations, repeat detractors), case-event decoding and validation,
//!   the escalation record, per-partition snapshots.
//! - [`alerts`]: which detractors raise an alert, its priority, content,
//!   deterministic id, Kafka key and encoding (protobuf or JSON).
//! - [`promoters`]: which promoters raise an event, its tier and actions,
//!   content, id, key and encoding.
//! - [`themes`]: comment themes: the taxonomy (the user's or the shipped
//!   one), normalisation and matching into a set of themes.
//! - [`generator`]: the demo's deterministic answers.
//!
//! The shell, which does the I/O and reads the clock:
//! - [`config`]: flags, `NPS_*` environment and TOML file, validated before
//!   anything connects.
//! - [`kafka`]: rdkafka client settings (with the TLS CA default), the
//!   producer's context, the shared health view and the renewable
//!   producer.
//! - [`consumer`]: the one consumer driver both applications run on (the
//!   loop, the consumer recipe and context, backpressure that pauses
//!   partitions and polls on), an assigned partition's start and its
//!   restore plan, each partition's position and realign, seeks, the
//!   ledger of pending deliveries, snapshot rounds and writes, the output
//!   registry and the sending of what the cores emit, the wait for the
//!   brokers before a loop starts, the state lock.
//! - [`liveness`]: each consuming loop's heartbeat, and the loops stalled
//!   past `--stall-timeout` (`/healthz`).
//! - [`sizing`]: the most memory an instance holds at given settings,
//!   from the measured unit costs (`check-config` prints it).
//! - [`state`]: the state topic: created compacted, snapshots written per
//!   partition, a partition's latest one read back on assignment.
//! - [`topics`]: output topics created when missing, with the partitions
//!   of the topic they follow.
//! - [`pipeline`]: the NPS pipeline, an application of the consumer
//!   driver: answers in, windows, alerts, promoter events, snapshots.
//! - [`tracker`]: the case tracker, the driver's other application:
//!   alerts and case events in, escalations out.
//! - [`clock`]: the wall clock behind a trait, read by the shell only.
//! - [`error`]: why a command could not start or had to stop, typed.
//! - `events` (private): the shell's telemetry, one type per occurrence
//!   whose `emit()` logs and counts together.
//! - [`metrics`]: metric names (the contract), descriptions, and the
//!   rendering of the per-window gauges.
//! - [`http`]: /metrics, /healthz, /readyz, the live page and its API.
//! - [`service`]: wiring of `run`; [`demo`]: the embedded-Kafka demo;
//!   [`send`]: JSON lines (or generated answers) to protobuf records;
//!   [`shutdown`]: the signal.

pub mod alerts;
pub mod cases;
pub mod clock;
pub mod config;
pub mod consumer;
pub mod demo;
pub mod engine;
pub mod error;
mod events;
pub mod generator;
pub mod http;
pub mod kafka;
pub mod liveness;
pub mod metrics;
pub mod pipeline;
pub mod promoters;
pub mod schema;
pub mod send;
pub mod service;
pub mod shutdown;
pub mod sizing;
pub mod state;
pub mod themes;
pub mod topics;
pub mod tracker;

/// Generated protobuf types of package `nps.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/nps.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/nps.v1.serde.rs"));
}
