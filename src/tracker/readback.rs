//! Alerts read back from the alerts topic by offset: an escalation at a
//! due check carries the alert's customer id, value, score and comment,
//! which a case does not keep (that is how it stays at 64 bytes). A repeat
//! detractor's escalation needs none of this: it is built from the alert
//! at hand.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::cases::escalation::decode_alert;
use crate::config::Settings;
use crate::kafka::Health;
use crate::pb::DetractorAlert;

/// The read-back consumer's fetch buffers: it reads single alerts back,
/// so small ones (`-X` overrides them, as every default).
pub(crate) const READBACK_FETCH: [(&str, &str); 3] = [
    ("queued.max.messages.kbytes", "4096"),
    ("fetch.max.bytes", "4194304"),
    ("max.partition.fetch.bytes", "1048576"),
];

/// Wanted offsets further apart than this are fetched by seeking rather
/// than by reading through. A seek costs a reassignment (`STOP_SETTLE`,
/// and on Tansu sometimes a start further back after `NOTHING_YET`);
/// reading through 20,000 alerts (about 8 MB in JSON) takes less.
const MAX_GAP: i64 = 20_000;

/// How long a partition's fetch is given to stop before it is assigned
/// again (see `Read::partition`).
const STOP_SETTLE: Duration = Duration::from_millis(100);

/// A fetch of a record known to exist that brings nothing for this long
/// starts further back (see `Read::partition`).
const NOTHING_YET: Duration = Duration::from_millis(500);

/// Reads alerts back with one consumer kept between reads (unassigned
/// between them), so the process's threads and file descriptors stay as
/// they are; it is dropped while the brokers are out of reach and made
/// again when they are back. Its fetch buffers are small: a read wants a
/// few thousand alerts, and librdkafka's defaults would let it hold up to
/// 64 MB ahead (docs/reliability.md has the memory a consumer made afresh
/// per read costs).
/// How a fetch from one start ended.
enum Fetched {
    /// The read is over: out of time, brokers gone, or the wanted offset
    /// is not in the log any more.
    Over,
    /// The start was inside a record batch: start further back.
    FurtherBack,
    /// Past what was wanted from here: the next start.
    Next,
}

pub(super) struct Reader {
    config: rdkafka::ClientConfig,
    topic: String,
    /// The main consumer's view of the brokers: a read stops (and drops
    /// its consumer) as soon as they are out of reach.
    health: Arc<Health>,
    /// The consumer, when it last let go of its assignment, and the
    /// brokers' outages it was made after (`Health::consumer_outages`).
    kept: Mutex<Option<Kept>>,
}

struct Kept {
    consumer: BaseConsumer,
    unassigned: Instant,
    outages: u64,
}

struct Read<'a> {
    kept: &'a mut Kept,
    topic: &'a str,
    health: &'a Health,
}

impl Reader {
    pub(super) fn new(settings: &Settings, health: Arc<Health>) -> crate::error::Result<Reader> {
        let group = format!("{}-cases-reader", settings.group_id);
        let mut defaults = vec![
            ("enable.partition.eof", "true"),
            ("fetch.wait.max.ms", "10"),
            ("auto.offset.reset", "earliest"),
        ];
        defaults.extend_from_slice(&READBACK_FETCH);
        let mut config = crate::kafka::client_config(&settings.brokers, &defaults, &settings.kafka);
        config
            .set("statistics.interval.ms", "0")
            .set("group.id", &group)
            .set("enable.auto.commit", "false");
        // Checked once here: a read later only logs a failure.
        config
            .create::<BaseConsumer>()
            .map_err(|source| crate::error::Error::Client {
                what: "the alerts reader",
                source,
            })?;
        Ok(Reader {
            config,
            topic: settings.alerts_topic.clone(),
            health,
            kept: Mutex::new(None),
        })
    }

    /// The alerts at the wanted (partition, offsets), as far as they can be
    /// read before `timeout`. Blocking; one read at a time.
    pub(super) fn read(
        &self,
        wanted: &BTreeMap<i32, Vec<i64>>,
        timeout: Duration,
    ) -> HashMap<(i32, i64), DetractorAlert> {
        let deadline = Instant::now() + timeout;
        let mut found = HashMap::new();
        let Ok(mut kept) = self.kept.lock() else {
            return found;
        };
        // A fetch still on its way when a broker comes back without its
        // data crashes librdkafka 2.12.1 as released (docs/operations.md, Known
        // issues): no consumer is kept while they are gone, nor one made
        // before they were last gone (it may know the topics' old ids).
        let outages = self.health.consumer_outages();
        let down = self.health.consumer_brokers_up() == 0;
        if down || kept.as_ref().is_some_and(|k| k.outages != outages) {
            *kept = None;
        }
        if down {
            return found;
        }
        if kept.is_none() {
            match self.config.create::<BaseConsumer>() {
                Ok(consumer) => {
                    *kept = Some(Kept {
                        consumer,
                        unassigned: Instant::now(),
                        outages,
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create the alerts reader");
                    return found;
                }
            }
        }
        let Some(k) = kept.as_mut() else {
            return found;
        };
        let mut read = Read {
            kept: k,
            topic: &self.topic,
            health: &self.health,
        };
        for (p, offsets) in wanted {
            if self.health.consumer_brokers_up() == 0 {
                break;
            }
            let mut offsets = offsets.clone();
            offsets.sort_unstable();
            offsets.dedup();
            if let Err(e) = read.partition(*p, &offsets, deadline, &mut found) {
                tracing::debug!(partition = p, error = %e, "reading alerts back");
            }
        }
        let ok = read.release();
        if !ok || self.health.consumer_brokers_up() == 0 {
            *kept = None;
        }
        found
    }
}

impl Read<'_> {
    /// Lets go of the assignment (fetching stops); false if the consumer
    /// refused, when it is better made again.
    fn release(&mut self) -> bool {
        let ok = self.kept.consumer.unassign().is_ok();
        self.kept.unassigned = Instant::now();
        ok
    }

    /// The fetch position in partition `p` of the alerts topic.
    fn position(&self, p: i32) -> Option<i64> {
        let positions = self.kept.consumer.position().ok()?;
        match positions.find_partition(self.topic, p)?.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }
    }

    /// Starts fetching partition `p` at `from`; `again`: the consumer
    /// fetched something before in this read.
    ///
    /// A partition assigned again: its previous fetch is let stop first.
    /// Assigning it again while librdkafka 2.12 is still stopping it can
    /// send two stops, which ends the process on an assertion
    /// (`rd_kafka_assignment_partition_stopped: rktp->rktp_started`,
    /// librdkafka #5573, fixed after 2.15). A fresh consumer for each start
    /// instead is too slow to fetch within the read's patience, and
    /// escalations would go out without content. The consumer is kept
    /// between reads and partitions: whatever it fetched last is let stop
    /// first.
    fn fetch_from(&mut self, p: i32, from: i64, again: bool) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(self.topic, p, Offset::Offset(from))?;
        if again {
            self.release();
        }
        std::thread::sleep(STOP_SETTLE.saturating_sub(self.kept.unassigned.elapsed()));
        self.kept.consumer.assign(&tpl)
    }

    fn partition(
        &mut self,
        p: i32,
        offsets: &[i64],
        deadline: Instant,
        found: &mut HashMap<(i32, i64), DetractorAlert>,
    ) -> Result<(), KafkaError> {
        let mut i = 0;
        // How far before the wanted offset the fetch starts (see `fetch`).
        let mut back = 0i64;
        let mut again = false;
        while i < offsets.len() {
            let from = offsets[i].saturating_sub(back).max(0);
            self.fetch_from(p, from, again)?;
            again = true;
            match self.fetch(p, offsets, &mut i, from, deadline, found) {
                Fetched::Over => return Ok(()),
                Fetched::FurtherBack => back = (back * 4).max(16),
                Fetched::Next => back = 0,
            }
        }
        Ok(())
    }

    /// Reads partition `p` from `from` (just assigned), keeping the alerts
    /// at `offsets[*i..]` and moving `*i` past what it read, until the
    /// start proves wrong, a gap larger than `MAX_GAP` asks for a new
    /// start, or the read is over.
    fn fetch(
        &mut self,
        p: i32,
        offsets: &[i64],
        i: &mut usize,
        from: i64,
        deadline: Instant,
        found: &mut HashMap<(i32, i64), DetractorAlert>,
    ) -> Fetched {
        let mut first = true;
        let assigned = Instant::now();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Brokers out of reach: stop now. A fetch still on its way
            // when a broker comes back without its data (new topic
            // ids) gets an answer that crashes librdkafka 2.12.1 as released
            // (docs/operations.md, Known issues): the consumer must be
            // gone by then.
            if left.is_zero() || self.health.consumer_brokers_up() == 0 {
                return Fetched::Over;
            }
            match self
                .kept
                .consumer
                .poll(left.min(Duration::from_millis(100)))
            {
                // Tansu 0.6 answers a fetch from inside its last batch
                // with nothing at all: further back.
                None if first && from > 0 && assigned.elapsed() > NOTHING_YET => {
                    return Fetched::FurtherBack;
                }
                None => {}
                Some(Ok(m)) if m.partition() == p => {
                    let at = m.offset();
                    tracing::trace!(partition = p, at, wanted = ?&offsets[*i..], "alert read back");
                    // Tansu 0.6 answers a fetch from inside a record
                    // batch with the next batch: start further back
                    // (Kafka itself returns the batch holding it).
                    if first && at > offsets[*i] && from > 0 {
                        return Fetched::FurtherBack;
                    }
                    first = false;
                    if offsets[*i..].binary_search(&at).is_ok()
                        && let Some(Ok(alert)) = m.payload().map(decode_alert)
                    {
                        found.insert((p, at), alert);
                    }
                    while *i < offsets.len() && offsets[*i] <= at {
                        *i += 1;
                    }
                    if *i == offsets.len() || offsets[*i] > at + MAX_GAP {
                        return Fetched::Next;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(KafkaError::PartitionEOF(q))) if q == p => {
                    // Nothing from inside the last batch (Tansu, as
                    // above): further back.
                    if first && from > 0 {
                        return Fetched::FurtherBack;
                    }
                    // Reached past the wanted offset: it is not there
                    // (deleted by retention).
                    if self.position(p).is_some_and(|pos| pos > offsets[*i]) {
                        return Fetched::Over;
                    }
                }
                Some(Err(e)) => tracing::debug!(error = %e, "alerts read back"),
            }
        }
    }
}
