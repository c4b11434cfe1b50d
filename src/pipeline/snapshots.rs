//! Snapshot scheduling: a partition's snapshot is taken when its state
//! moved, staged until every alert and dead letter it covers is
//! acknowledged, then written to the state topic.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use futures::FutureExt;

use crate::consumer::ledger::Ledger;
use crate::engine::Engine;
use crate::events::{self, Event};
use crate::kafka::{Health, RenewableProducer};
use crate::metrics as m;
use crate::pipeline::Core;
use crate::state::StateStore;

impl Core {
    pub(super) fn new(engine: Engine, snapshot_max_bytes: usize) -> Core {
        Core {
            engine,
            ledger: Ledger::default(),
            next: BTreeMap::new(),
            restoring: BTreeMap::new(),
            snapshotted: BTreeMap::new(),
            staged: BTreeMap::new(),
            due: BTreeSet::new(),
            round: false,
            writes: Vec::new(),
            spare: Vec::new(),
            snapshot_max_bytes,
            realign: BTreeMap::new(),
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

    /// Forgets everything about partitions no longer owned.
    pub(super) fn forget(&mut self, partitions: &[i32], health: &Health) {
        for p in partitions {
            self.owned.remove(p);
            self.engine.drop_partition(*p);
            self.ledger.forget(*p);
            self.next.remove(p);
            self.snapshotted.remove(p);
            self.staged.remove(p);
            self.realign.remove(p);
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
    pub(super) fn rewind(&mut self, partition: i32, health: &Health) {
        self.ledger.forget(partition);
        self.next.remove(&partition);
        self.staged.remove(&partition);
        self.realign.remove(&partition);
        self.restored(partition, health);
    }

    /// Ends the restore of `partition`: it goes live.
    pub(super) fn restored(&mut self, partition: i32, health: &Health) {
        let Some(r) = self.restoring.remove(&partition) else {
            return;
        };
        health.restoring.fetch_sub(1, Ordering::Relaxed);
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
    pub(super) fn take_snapshots(&mut self, topic: &str, only: Option<&[i32]>) {
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
            let mut bytes = std::mem::take(&mut self.spare);
            self.engine
                .partition_state_record_into(p, topic, next, &mut bytes);
            if bytes.len() > self.snapshot_max_bytes {
                events::SnapshotTooLarge {
                    partition: p,
                    bytes: bytes.len(),
                }
                .emit();
                self.spare = bytes;
                continue;
            }
            self.staged.insert(p, (next, bytes));
        }
    }

    /// Takes the next due periodic snapshot once nothing is staged and the
    /// last write is acknowledged: one partition's record (megabytes, and
    /// librdkafka's copy of it until delivered) at a time.
    pub(super) fn stage_due(&mut self, topic: &str) {
        while self.staged.is_empty()
            && self.writes.is_empty()
            && let Some(p) = self.due.pop_first()
        {
            self.take_snapshots(topic, Some(&[p]));
        }
    }

    /// Writes the staged snapshots whose records are all acknowledged, and
    /// counts the writes acknowledged since.
    pub(super) fn write_snapshots(&mut self, store: &StateStore) {
        let ready: Vec<i32> = self
            .staged
            .iter()
            .filter(|(p, (off, _))| self.ledger.snapshot_ready(**p, *off))
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
                    self.spare = bytes;
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
                    events::SnapshotWritten {
                        partition: *p,
                        bytes: *size,
                        ok: true,
                    }
                    .emit();
                    false
                }
                Some(_) => {
                    events::SnapshotWritten {
                        partition: *p,
                        bytes: *size,
                        ok: false,
                    }
                    .emit();
                    // Taken again at the next interval.
                    if snapshotted.get(p) == Some(off) {
                        snapshotted.remove(p);
                    }
                    false
                }
            });
    }
}
