//! Snapshot scheduling: a partition's snapshot is taken when its state
//! moved, staged until every alert and dead letter it covers is
//! acknowledged, then written to the state topic.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::consumer::handover::Handed;
use crate::consumer::ledger::Ledger;
use crate::consumer::positions::Positions;
use crate::consumer::snapshots::{Snapshots, Staged};
use crate::engine::Engine;
use crate::events::{self, Event};
use crate::kafka::{Health, RenewableProducer};
use crate::metrics as m;
use crate::pipeline::Core;
use crate::pipeline::commit::{commit_done, offsets};
use crate::state::StateStore;
use crate::themes::Taxonomy;
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

impl Core {
    pub(super) fn new(
        (engine, themes): (Engine, Option<Taxonomy>),
        snapshot_max_bytes: usize,
        topic: &str,
        health: &Arc<Health>,
    ) -> Core {
        Core {
            topic: topic.to_string(),
            health: health.clone(),
            engine,
            themes,
            ledger: Ledger::default(),
            positions: Positions::default(),
            restoring: BTreeMap::new(),
            snapshots: Snapshots::default(),
            snapshot_max_bytes,
            owned: BTreeSet::new(),
            input_partitions: 0,
        }
    }

    /// Asks after every pending delivery (acknowledged, failed, waiting),
    /// sends failed ones again in their place, and lets the ledger move
    /// the committable offsets. Returns the partitions whose committable
    /// offset moved.
    pub(super) fn drain(&mut self, producer: &RenewableProducer) -> Vec<(i32, i64)> {
        let drained = self.ledger.drain(|delivery| delivery.step(producer));
        events::DeliveriesRetried {
            count: drained.retried,
        }
        .emit();
        drained.moved
    }

    /// Forgets the offsets of `partition`'s log, which is gone (recreated,
    /// truncated, or lost by the brokers), keeping its windows: what is
    /// pending or done is never committed, no snapshot or replay refers
    /// to them, and a restore in progress ends.
    pub(super) fn rewind(&mut self, partition: i32) {
        self.ledger.forget(partition);
        self.positions.forget(partition);
        self.snapshots.forget(partition);
        self.restored(partition);
    }

    /// Ends the restore of `partition`: it goes live.
    pub(super) fn restored(&mut self, partition: i32) {
        let Some(r) = self.restoring.remove(&partition) else {
            return;
        };
        self.health.restoring.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(m::STATE_RESTORING).set(self.restoring.len() as f64);
        events::RestoreDone {
            partition,
            from: r.from,
            replayed: r.replayed,
            started: r.started,
        }
        .emit();
    }

    /// Takes a snapshot of every partition whose state moved since its
    /// last one (`only`: of these partitions only), staged until its
    /// records are acknowledged.
    pub(super) fn take_snapshots(&mut self, only: Option<&[i32]>) {
        let parts: Vec<(i32, i64)> = self
            .positions
            .keys()
            .filter(|p| only.is_none_or(|o| o.contains(p)))
            .filter_map(|p| Some((p, self.positions.next(p)?)))
            .collect();
        for (p, next) in parts {
            if self.snapshots.current(p) == Some(next) {
                continue;
            }
            let mut bytes = self.snapshots.buffer();
            self.engine
                .partition_state_record_into(p, &self.topic, next, &mut bytes);
            if bytes.len() > self.snapshot_max_bytes {
                events::SnapshotTooLarge {
                    partition: p,
                    bytes: bytes.len(),
                }
                .emit();
                self.snapshots.give_back(bytes);
                continue;
            }
            let staged = Staged {
                offset: next,
                bytes,
                waits: (),
            };
            self.snapshots.stage(p, staged);
        }
    }

    /// Takes the next due periodic snapshot once nothing is staged and the
    /// last write is acknowledged: one partition's record (megabytes, and
    /// librdkafka's copy of it until delivered) at a time.
    pub(super) fn stage_due(&mut self) {
        while let Some(p) = self.snapshots.next_due() {
            self.take_snapshots(Some(&[p]));
        }
    }

    /// Writes the staged snapshots whose records are all acknowledged, and
    /// counts the writes answered since.
    pub(super) fn write_snapshots(&mut self, store: &StateStore) {
        let ledger = &self.ledger;
        let written = self.snapshots.write(
            |p, bytes| store.write(p, bytes),
            |p, s| ledger.snapshot_ready(p, s.offset),
        );
        written_events(written);
    }
}

fn written_events(written: Vec<crate::consumer::snapshots::Written>) {
    for w in written {
        events::SnapshotWritten {
            partition: w.partition,
            bytes: w.bytes,
            ok: w.ok,
        }
        .emit();
    }
}

/// The pipeline's state as a revoke and the stop see it.
impl Handed for Core {
    fn drain(&mut self, producer: &RenewableProducer, _settle: bool) {
        Core::drain(self, producer);
    }

    fn waiting(&self, partitions: Option<&[i32]>) -> bool {
        match partitions {
            Some(ps) => ps.iter().any(|p| !self.ledger.idle(*p)),
            None => self.ledger.in_flight() > 0,
        }
    }

    fn offsets(&self, partitions: Option<&[i32]>) -> TopicPartitionList {
        offsets(&self.topic, &self.ledger.committable(partitions, true))
    }

    fn committed(&mut self, offsets: &TopicPartitionList, result: &KafkaResult<()>) {
        let moved = offsets
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect();
        commit_done(self, (moved, result.clone()));
    }

    /// Snapshots `partitions` (every one when `None`) whose records are
    /// all acknowledged, and waits for the writes until `deadline`: a
    /// revoke's or a stop's, so that the next owner restores them with no
    /// replay.
    fn final_snapshots(
        &mut self,
        store: &StateStore,
        partitions: Option<&[i32]>,
        deadline: Instant,
    ) {
        self.take_snapshots(partitions);
        let ledger = &self.ledger;
        let (written, late) = self.snapshots.wait(store, partitions, deadline, |p, s| {
            ledger.snapshot_ready(p, s.offset)
        });
        written_events(written);
        let unfinished: Vec<i32> = self
            .snapshots
            .staged_partitions()
            .into_iter()
            .filter(|p| partitions.is_none_or(|ps| ps.contains(p)))
            .collect();
        if !unfinished.is_empty() {
            tracing::warn!(partitions = ?unfinished, "deliveries unacknowledged: no final snapshot; the next owner replays from the previous one");
        }
        if late {
            tracing::warn!("final snapshots not acknowledged in time");
        }
    }

    /// Forgets everything about partitions no longer owned.
    fn forget(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.owned.remove(p);
            self.engine.drop_partition(*p);
            self.ledger.forget(*p);
            self.positions.forget(*p);
            self.snapshots.forget(*p);
            if self.restoring.remove(p).is_some() {
                self.health.restoring.fetch_sub(1, Ordering::Relaxed);
            }
        }
        metrics::gauge!(m::STATE_RESTORING).set(self.restoring.len() as f64);
    }
}
