//! Partitions handed over, on a revoke and when a loop stops, the same for
//! both applications: what is on its way is waited for (bounded by
//! `--shutdown-timeout`, and never past a stop's own bound), what is done
//! is committed (never an offset behind an undelivered record: the next
//! owner redoes what did not finish), the final snapshots are written, and
//! revoked partitions are forgotten. The application's state says what it
//! waits for and which offsets are done (`Handed`).

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;

use super::lock;
use super::produce::finish_until;
use crate::kafka::RenewableProducer;
use crate::state::StateStore;

/// What a stop keeps of `--shutdown-timeout` for the commit, leaving the
/// group and the exit: a tenth of it, within these bounds.
const STOP_RESERVE: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(3));

/// An application's state, as a hand-over sees it.
pub(crate) trait Handed {
    /// Asks after every delivery, sending failed ones again in their
    /// place; `settle`: also those behind a partition's head (a stop).
    fn drain(&mut self, producer: &RenewableProducer, settle: bool);
    /// Whether deliveries of `partitions` (every one when `None`) are
    /// still to wait for.
    fn waiting(&self, partitions: Option<&[i32]>) -> bool;
    /// The done offsets of `partitions` (every one when `None`).
    fn offsets(&self, partitions: Option<&[i32]>) -> TopicPartitionList;
    /// The broker's answer to a commit of `offsets`.
    fn committed(&mut self, _offsets: &TopicPartitionList, _result: &KafkaResult<()>) {}
    /// Snapshots `partitions` (every one when `None`) and waits for the
    /// writes until `deadline`.
    fn final_snapshots(
        &mut self,
        store: &StateStore,
        partitions: Option<&[i32]>,
        deadline: Instant,
    );
    /// Forgets `partitions`: revoked.
    fn forget(&mut self, partitions: &[i32]);
}

/// How one application hands its partitions over.
pub(crate) struct Handover {
    /// The application's name in logs and in the lock's message.
    pub(crate) what: &'static str,
    /// `--shutdown-timeout`: how long a revoke waits for deliveries.
    pub(crate) timeout: Duration,
    /// Set when the loop stops: the end of the stop's bound. The revoke
    /// that closing the consumer brings comes after the stop's own final
    /// commit and snapshots, and has nothing left to do but forget.
    stopped: OnceLock<Instant>,
}

impl Handover {
    pub(crate) fn new(what: &'static str, timeout: Duration) -> Handover {
        Handover {
            what,
            timeout,
            stopped: OnceLock::new(),
        }
    }

    /// A revoke of `partitions`. `lost`: another member may own them
    /// already (the coordinator stopped hearing from this one in time), so
    /// nothing is committed or written for them.
    pub(crate) fn revoke<H: Handed, C: ConsumerContext>(
        &self,
        core: &Mutex<H>,
        consumer: &impl Consumer<C>,
        producer: &RenewableProducer,
        store: &StateStore,
        partitions: &[i32],
        lost: bool,
    ) {
        if !lost && self.stopped.get().is_none() {
            let deadline = Instant::now() + self.timeout;
            self.hand_over(core, consumer, producer, store, Some(partitions), deadline);
        }
        lock(core, self.what).forget(partitions);
    }

    /// The loop's stop: every partition handed over within
    /// `--shutdown-timeout`, less what the commit and leaving the group
    /// after it need (`STOP_RESERVE`), so that the whole stop fits the
    /// bound the watchdog holds (`shutdown::watchdog`). Returns whether
    /// deliveries were left unacknowledged (their offsets stay
    /// uncommitted).
    pub(crate) fn stop<H: Handed, C: ConsumerContext>(
        &self,
        core: &Mutex<H>,
        consumer: &impl Consumer<C>,
        producer: &RenewableProducer,
        store: &StateStore,
    ) -> bool {
        let reserve = (self.timeout / 10).clamp(STOP_RESERVE.0, STOP_RESERVE.1);
        let deadline = Instant::now() + self.timeout.saturating_sub(reserve);
        let left = self.hand_over(core, consumer, producer, store, None, deadline);
        let _ = self.stopped.set(deadline);
        left
    }

    fn hand_over<H: Handed, C: ConsumerContext>(
        &self,
        core: &Mutex<H>,
        consumer: &impl Consumer<C>,
        producer: &RenewableProducer,
        store: &StateStore,
        partitions: Option<&[i32]>,
        deadline: Instant,
    ) -> bool {
        let settle = partitions.is_none();
        let left = crate::kafka::blocking(|| {
            finish_until(deadline, producer, || {
                let mut c = lock(core, self.what);
                c.drain(producer, settle);
                c.waiting(partitions)
            })
        });
        let mut c = lock(core, self.what);
        commit(consumer, &mut *c, partitions);
        c.final_snapshots(store, partitions, deadline);
        left
    }
}

/// Commits the done offsets of `partitions` (every one when `None`) and
/// waits for the broker's answer.
fn commit<H: Handed, C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    core: &mut H,
    partitions: Option<&[i32]>,
) {
    let offsets = core.offsets(partitions);
    if offsets.count() == 0 {
        return;
    }
    let result = consumer.commit(&offsets, CommitMode::Sync);
    core.committed(&offsets, &result);
}
