//! Snapshot writing, the same for both applications: periodic rounds that
//! take one partition at a time, each once the write before it is
//! acknowledged (one partition's record, megabytes, alive at a time,
//! however many partitions an instance owns); a snapshot staged until what
//! it reflects is delivered (restoring it must never skip an undelivered
//! alert, nor mark an unsent escalation as sent); writes followed to their
//! acknowledgement; and the bounded wait of a revoke or a stop. The
//! application says what a partition's snapshot holds and when it may go:
//! `W` is what a staged snapshot waits for.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::error::KafkaResult;
use rdkafka::producer::DeliveryFuture;

use crate::state::StateStore;

/// A snapshot taken and not written yet.
pub(crate) struct Staged<W> {
    /// The offset it continues from (the application's mark).
    pub(crate) offset: i64,
    pub(crate) bytes: Vec<u8>,
    pub(crate) waits: W,
}

/// A write the broker answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub(crate) partition: i32,
    pub(crate) bytes: usize,
    pub(crate) ok: bool,
}

struct Write {
    partition: i32,
    offset: i64,
    bytes: usize,
    ack: DeliveryFuture,
}

pub(crate) struct Snapshots<W> {
    /// Partitions still to take in this round.
    round: BTreeSet<i32>,
    /// A round is under way (its end gives memory back).
    in_round: bool,
    staged: BTreeMap<i32, Staged<W>>,
    writes: Vec<Write>,
    /// Per partition, the offset of the last snapshot handed to the state
    /// topic (forgotten when its write fails).
    written: BTreeMap<i32, i64>,
    /// The buffer the next snapshot is encoded into, kept from the last
    /// one written (the producer has its own copy): its megabytes stay the
    /// same pages instead of being allocated and given back each time.
    spare: Vec<u8>,
}

impl<W> Default for Snapshots<W> {
    fn default() -> Self {
        Snapshots {
            round: BTreeSet::new(),
            in_round: false,
            staged: BTreeMap::new(),
            writes: Vec::new(),
            written: BTreeMap::new(),
            spare: Vec::new(),
        }
    }
}

impl<W> Snapshots<W> {
    /// Starts a round of `partitions`, unless the last one is still going.
    pub(crate) fn start_round(&mut self, partitions: impl IntoIterator<Item = i32>) {
        if !self.in_round {
            self.round = partitions.into_iter().collect();
            self.in_round = true;
        }
    }

    /// The round's next partition to take, once nothing is staged or on
    /// its way.
    pub(crate) fn next_due(&mut self) -> Option<i32> {
        if !self.staged.is_empty() || !self.writes.is_empty() {
            return None;
        }
        self.round.pop_first()
    }

    /// Whether a round just ended: everything taken, written and
    /// acknowledged (the allocator should give the freed pages back).
    pub(crate) fn round_over(&mut self) -> bool {
        let over = self.in_round
            && self.round.is_empty()
            && self.staged.is_empty()
            && self.writes.is_empty();
        if over {
            self.in_round = false;
        }
        over
    }

    /// The buffer to encode a snapshot into.
    pub(crate) fn buffer(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.spare)
    }

    /// A buffer not staged after all, kept for the next snapshot.
    pub(crate) fn give_back(&mut self, bytes: Vec<u8>) {
        self.spare = bytes;
    }

    /// The offset of `partition`'s newest snapshot, staged or written.
    pub(crate) fn current(&self, partition: i32) -> Option<i64> {
        self.staged
            .get(&partition)
            .map(|s| s.offset)
            .or(self.written.get(&partition).copied())
    }

    /// Marks `partition`'s state as written at `offset` (restored from a
    /// snapshot that is on the state topic).
    pub(crate) fn restored(&mut self, partition: i32, offset: i64) {
        self.written.insert(partition, offset);
    }

    pub(crate) fn stage(&mut self, partition: i32, staged: Staged<W>) {
        self.staged.insert(partition, staged);
    }

    /// Whether a snapshot of `partition` is staged.
    pub(crate) fn is_staged(&self, partition: i32) -> bool {
        self.staged.contains_key(&partition)
    }

    /// Partitions with a snapshot staged.
    pub(crate) fn staged_partitions(&self) -> Vec<i32> {
        self.staged.keys().copied().collect()
    }

    /// Whether a write of `partition` is on its way.
    pub(crate) fn writing(&self, partition: i32) -> bool {
        self.writes.iter().any(|w| w.partition == partition)
    }

    /// Writes with `send` (`StateStore::write`) the staged snapshots
    /// `ready` lets go (a refused one stays staged, tried again), and
    /// returns the writes answered since.
    pub(crate) fn write(
        &mut self,
        mut send: impl FnMut(i32, &[u8]) -> KafkaResult<DeliveryFuture>,
        mut ready: impl FnMut(i32, &mut Staged<W>) -> bool,
    ) -> Vec<Written> {
        let go: Vec<i32> = self
            .staged
            .iter_mut()
            .filter_map(|(p, s)| ready(*p, s).then_some(*p))
            .collect();
        for p in go {
            let Some(s) = self.staged.remove(&p) else {
                continue;
            };
            match send(p, &s.bytes) {
                Ok(ack) => {
                    self.written.insert(p, s.offset);
                    self.writes.push(Write {
                        partition: p,
                        offset: s.offset,
                        bytes: s.bytes.len(),
                        ack,
                    });
                    self.spare = s.bytes;
                }
                Err(e) => {
                    tracing::debug!(partition = p, error = %e, "snapshot not accepted; will retry");
                    self.staged.insert(p, s);
                }
            }
        }
        self.answered()
    }

    /// The writes answered since the last call.
    fn answered(&mut self) -> Vec<Written> {
        let mut done = Vec::new();
        let written = &mut self.written;
        self.writes.retain_mut(|w| {
            let ok = match (&mut w.ack).now_or_never() {
                None => return true,
                Some(r) => matches!(r, Ok(Ok(_))),
            };
            // Taken again at the next round.
            if !ok && written.get(&w.partition) == Some(&w.offset) {
                written.remove(&w.partition);
            }
            done.push(Written {
                partition: w.partition,
                bytes: w.bytes,
                ok,
            });
            false
        });
        done
    }

    /// Waits for the writes of `partitions` (all when `None`) until
    /// `deadline`, writing what `ready` lets go meanwhile; returns the
    /// writes answered, and whether some are still on their way.
    pub(crate) fn wait(
        &mut self,
        store: &StateStore,
        partitions: Option<&[i32]>,
        deadline: Instant,
        mut ready: impl FnMut(i32, &mut Staged<W>) -> bool,
    ) -> (Vec<Written>, bool) {
        let mut done = self.write(|p, b| store.write(p, b), &mut ready);
        let mine = |w: &Write| partitions.is_none_or(|ps| ps.contains(&w.partition));
        while self.writes.iter().any(mine) {
            if Instant::now() >= deadline {
                return (done, true);
            }
            let _ = store.flush(Duration::from_millis(100));
            done.extend(self.write(|p, b| store.write(p, b), &mut ready));
        }
        (done, false)
    }

    /// Forgets `partition` (revoked, or its log gone); a write on its way
    /// is still followed.
    pub(crate) fn forget(&mut self, partition: i32) {
        self.round.remove(&partition);
        self.staged.remove(&partition);
        self.written.remove(&partition);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A delivery that does not complete while a test runs (a producer
    /// with no broker, kept for the whole test binary).
    pub(crate) fn write_on_its_way() -> DeliveryFuture {
        static PRODUCER: std::sync::OnceLock<rdkafka::producer::FutureProducer> =
            std::sync::OnceLock::new();
        let producer = PRODUCER.get_or_init(|| {
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", "127.0.0.1:9")
                .create()
                .unwrap()
        });
        let record = rdkafka::producer::FutureRecord::<(), [u8]>::to("state").payload(&[1u8][..]);
        producer.send_result(record).map_err(|(e, _)| e).unwrap()
    }

    impl<W> Snapshots<W> {
        /// Every write on its way taken as acknowledged.
        pub(crate) fn acknowledge_all(&mut self) {
            self.writes.clear();
        }
    }

    fn staged(offset: i64) -> Staged<bool> {
        Staged {
            offset,
            bytes: vec![1; 8],
            waits: false,
        }
    }

    /// Writes what is ready (`waits` false); the partitions written.
    fn write(s: &mut Snapshots<bool>) -> Vec<i32> {
        let mut sent = Vec::new();
        let _ = s.write(
            |p, _| {
                sent.push(p);
                Ok(write_on_its_way())
            },
            |_, st| !st.waits,
        );
        sent
    }

    #[test]
    fn a_round_takes_one_partition_at_a_time_each_once_the_one_before_is_acknowledged() {
        let mut s = Snapshots::default();
        assert_eq!(s.next_due(), None, "no round started");
        s.start_round([1, 2, 3]);
        assert_eq!(s.next_due(), Some(1));
        s.stage(1, staged(10));
        assert_eq!(s.next_due(), None, "partition 1 staged");
        assert_eq!(write(&mut s), [1]);
        assert!(s.writing(1));
        assert_eq!(s.next_due(), None, "partition 1's write on its way");
        // A round asked for while one goes on does not start it again.
        s.start_round([1, 2, 3]);
        s.acknowledge_all();
        assert_eq!(s.next_due(), Some(2));
        // A snapshot waiting for deliveries holds the round there.
        s.stage(
            2,
            Staged {
                waits: true,
                ..staged(20)
            },
        );
        assert!(write(&mut s).is_empty());
        assert_eq!(s.next_due(), None);
        s.staged.get_mut(&2).unwrap().waits = false;
        assert_eq!(write(&mut s), [2]);
        s.acknowledge_all();
        // A revoke takes a partition out of the round.
        s.forget(3);
        assert_eq!(s.next_due(), None);
        assert!(s.round_over());
    }

    #[test]
    fn memory_is_given_back_once_a_round_is_written_and_acknowledged() {
        let mut s = Snapshots::default();
        assert!(!s.round_over(), "no round");
        s.start_round([1]);
        assert!(!s.round_over(), "partitions of the round still to take");
        assert_eq!(s.next_due(), Some(1));
        s.stage(1, staged(10));
        assert!(!s.round_over(), "a snapshot staged");
        assert_eq!(write(&mut s), [1]);
        assert!(!s.round_over(), "a write still on its way");
        s.acknowledge_all();
        assert!(s.round_over());
        assert!(!s.round_over(), "once per round");
    }

    #[test]
    fn an_unchanged_state_is_known_by_its_offset_and_a_refused_write_stays_staged() {
        let mut s = Snapshots::default();
        s.restored(4, 100);
        assert_eq!(s.current(4), Some(100));
        s.stage(4, staged(150));
        assert_eq!(s.current(4), Some(150));
        let refused = s.write(
            |_, _| Err(rdkafka::error::KafkaError::Canceled),
            |_, _| true,
        );
        assert!(refused.is_empty());
        assert!(s.is_staged(4), "tried again at the next look");
        assert_eq!(write(&mut s), [4]);
        assert!(!s.is_staged(4));
        assert_eq!(s.current(4), Some(150));
        // The buffer comes back for the next snapshot.
        assert_eq!(s.buffer().len(), 8);
        s.forget(4);
        assert_eq!(s.current(4), None);
    }
}
