//! nps-stream: streaming Net Promoter Score from Kafka.
//!
//! Consumes protobuf `SurveyResponse` events, keeps rolling-window NPS per
//! product × region in memory (several windows at once, with counts, margin
//! of error and value-weighted NPS), publishes Prometheus metrics, emits a
//! detractor alert per detractor, and dead-letters what it cannot accept.
//!
//! # Layout
//! - [`pb`]: the types generated from `proto/nps/v1/*.proto` (prost), with
//!   their protobuf-JSON mapping (pbjson).
//! - [`schema`]: decoding (plain protobuf and Confluent Schema Registry
//!   framing) and validation; every refusal is a named [`schema::Reason`].
//! - [`engine`]: the pure NPS engine: bucketed rolling windows, NPS math,
//!   dedup, cardinality guard, per-partition state and snapshots. No clock,
//!   no I/O, no Kafka, no metrics.
//! - [`cases`]: the pure case tracker (closing the loop: contact SLAs,
//!   escalations, repeat detractors), case-event decoding and validation,
//!   the escalation record, per-partition snapshots. Not driven by the
//!   shell yet.
//! - [`alerts`]: which detractors raise an alert, its priority, content,
//!   deterministic id, Kafka key and encoding (protobuf or JSON).
//! - [`config`]: flags, `NPS_*` environment and TOML file, validated before
//!   anything connects.
//! - [`metrics`]: metric names (the contract), descriptions, and the
//!   rendering of the per-window gauges.
//! - [`kafka`]: rdkafka client settings (with the TLS CA default), the
//!   consumer and producer contexts (statistics, errors, rebalances), the
//!   shared health view and the renewable producer. The shell's own calls
//!   on the clients (`pipeline`, `state`, `send`) are outside it.
//! - [`state`]: the state topic: created compacted, snapshots written per
//!   partition, a partition's latest one read back on assignment.
//! - [`pipeline`]: the async shell: the consume loop (`mod.rs`) and one
//!   file per job: `records` (one record through decode, engine, alert or
//!   dead letter; replay), `produce` (sending, retrying, oversize records),
//!   `ledger` (pending deliveries per partition, committable offsets),
//!   `commit`, `snapshots` (when a snapshot may be written), `rebalance`
//!   (revoke and restore), `outage` (brokers out of reach).
//! - [`clock`]: the wall clock behind a trait, read by the shell only.
//! - [`error`]: why a command could not start or had to stop, typed.
//! - `events` (private): the shell's telemetry, one type per occurrence
//!   whose `emit()` logs and counts together.
//! - [`http`]: /metrics, /healthz, /readyz.
//! - [`service`]: wiring of `run`; [`demo`]: the embedded-Kafka demo;
//!   [`send`]: JSON lines (or [`generator`] answers) to protobuf records;
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
pub mod metrics;
pub mod pipeline;
pub mod promoters;
pub mod schema;
pub mod send;
pub mod service;
pub mod shutdown;
pub mod state;
pub mod topics;

/// Generated protobuf types of package `nps.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/nps.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/nps.v1.serde.rs"));
}
