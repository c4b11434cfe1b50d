//! Alerts read back from the alerts topic by offset: an escalation carries
//! the alert's customer id, value, score and comment, which a case does
//! not keep (that is how it stays at 64 bytes).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::cases::escalation::decode_alert;
use crate::config::Settings;
use crate::pb::DetractorAlert;

/// Wanted offsets further apart than this are fetched by seeking rather
/// than by reading through.
const MAX_GAP: i64 = 1_000;

pub(super) struct Reader {
    consumer: BaseConsumer,
    topic: String,
}

impl Reader {
    pub(super) fn new(settings: &Settings) -> crate::error::Result<Reader> {
        let group = format!("{}-cases-reader", settings.group_id);
        let consumer: BaseConsumer = crate::kafka::client_config(
            &settings.brokers,
            &[
                ("enable.partition.eof", "true"),
                ("fetch.wait.max.ms", "10"),
                ("auto.offset.reset", "earliest"),
            ],
            &settings.kafka,
        )
        .set("statistics.interval.ms", "0")
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|source| crate::error::Error::Client {
            what: "the alerts reader",
            source,
        })?;
        Ok(Reader {
            consumer,
            topic: settings.alerts_topic.clone(),
        })
    }

    /// The alerts at the wanted (partition, offsets), as far as they can be
    /// read before `timeout`. Blocking.
    pub(super) fn read(
        &self,
        wanted: &BTreeMap<i32, Vec<i64>>,
        timeout: Duration,
    ) -> HashMap<(i32, i64), DetractorAlert> {
        let deadline = Instant::now() + timeout;
        let mut found = HashMap::new();
        for (p, offsets) in wanted {
            let mut offsets = offsets.clone();
            offsets.sort_unstable();
            offsets.dedup();
            if let Err(e) = self.read_partition(*p, &offsets, deadline, &mut found) {
                tracing::debug!(partition = p, error = %e, "reading alerts back");
            }
        }
        let _ = self.consumer.unassign();
        found
    }

    fn read_partition(
        &self,
        p: i32,
        offsets: &[i64],
        deadline: Instant,
        found: &mut HashMap<(i32, i64), DetractorAlert>,
    ) -> Result<(), KafkaError> {
        let mut i = 0;
        while i < offsets.len() {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(offsets[i]))?;
            self.consumer.assign(&tpl)?;
            'fetch: loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(());
                }
                match self.consumer.poll(left.min(Duration::from_millis(200))) {
                    None => {}
                    Some(Ok(m)) if m.partition() == p => {
                        let at = m.offset();
                        if offsets[i..].binary_search(&at).is_ok()
                            && let Some(Ok(alert)) = m.payload().map(decode_alert)
                        {
                            found.insert((p, at), alert);
                        }
                        while i < offsets.len() && offsets[i] <= at {
                            i += 1;
                        }
                        if i == offsets.len() || offsets[i] > at + MAX_GAP {
                            break 'fetch;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(KafkaError::PartitionEOF(q))) if q == p => {
                        // Nothing more: the wanted offsets left are beyond
                        // the end (cannot happen for an alert read before).
                        return Ok(());
                    }
                    Some(Err(e)) => tracing::debug!(error = %e, "alerts read back"),
                }
            }
        }
        Ok(())
    }
}
