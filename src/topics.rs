//! Topics nps-stream writes to and creates when they are missing (case
//! events, escalations, promoter events): the broker's default replication
//! (then one replica, for brokers that want a number), as many partitions
//! as a topic they follow. Blocking: run off the async task.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::Settings;
use crate::error::Error;
use crate::kafka::client_config;

/// A metadata client and an admin client on the settings' brokers.
pub struct Admin {
    meta: BaseConsumer,
    admin: AdminClient<DefaultClientContext>,
}

/// Why a topic is not there yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// The brokers refused to create it, for a reason no retry changes
    /// (no rights): the start stops and says how to fix it.
    Refused(String),
    /// Not yet (a request timed out, creation is on its way): ask again.
    Waiting(String),
}

impl Admin {
    pub fn new(settings: &Settings, what: &'static str) -> Result<Admin, Error> {
        let client = |source| Error::Client { what, source };
        let mut config = client_config(&settings.brokers, &[], &settings.kafka);
        config.set("statistics.interval.ms", "0");
        Ok(Admin {
            meta: config.create().map_err(client)?,
            admin: config.create().map_err(client)?,
        })
    }

    /// The topic's partition count, when the brokers list it.
    pub fn partitions(&self, topic: &str) -> Option<i32> {
        crate::kafka::partition_count(self.meta.client(), topic, Duration::from_secs(10))
    }

    /// As `ensure`; and when CreateTopics is not answered (a broker without
    /// it, like librdkafka's mock cluster), asks the brokers to create it
    /// on a producer's metadata request (`auto.create.topics.enable`, with
    /// the broker's default partition count). For topics whose partition
    /// count does not matter.
    pub fn ensure_any(
        &self,
        settings: &Settings,
        topic: &str,
        partitions: i32,
    ) -> Result<i32, Missing> {
        match self.ensure(topic, partitions) {
            Err(Missing::Waiting(why)) => {
                let producer: Option<BaseProducer> =
                    client_config(&settings.brokers, &[], &settings.kafka)
                        .set("statistics.interval.ms", "0")
                        .create()
                        .ok();
                if let Some(p) = producer {
                    let _ = p
                        .client()
                        .fetch_metadata(Some(topic), Duration::from_secs(5));
                }
                self.partitions(topic).ok_or(Missing::Waiting(why))
            }
            other => other,
        }
    }

    /// The topic's partition count, after creating it with `partitions`
    /// partitions when it is missing.
    pub fn ensure(&self, topic: &str, partitions: i32) -> Result<i32, Missing> {
        if let Some(n) = self.partitions(topic) {
            return Ok(n);
        }
        self.create(topic, partitions)?;
        // Wait until the metadata shows it (brokers answer before it is
        // usable).
        for _ in 0..50 {
            if let Some(n) = self.partitions(topic) {
                return Ok(n);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(Missing::Waiting(format!(
            "{topic} created but not visible yet"
        )))
    }

    fn create(&self, topic: &str, partitions: i32) -> Result<(), Missing> {
        let opts = AdminOptions::new()
            .request_timeout(Some(Duration::from_secs(5)))
            .operation_timeout(Some(Duration::from_secs(5)));
        let mut last = String::new();
        for replication in [TopicReplication::Fixed(-1), TopicReplication::Fixed(1)] {
            let new = NewTopic::new(topic, partitions, replication);
            match futures::executor::block_on(self.admin.create_topics([&new], &opts)) {
                Ok(results) => match results.first() {
                    Some(Ok(_)) | Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => {
                        tracing::info!(topic, partitions, "topic created");
                        return Ok(());
                    }
                    Some(Err((_, code @ RDKafkaErrorCode::TopicAuthorizationFailed)))
                    | Some(Err((_, code @ RDKafkaErrorCode::ClusterAuthorizationFailed))) => {
                        return Err(Missing::Refused(format!("{code}")));
                    }
                    Some(Err((_, code))) => last = format!("{code}"),
                    None => last = "no answer".into(),
                },
                Err(e) => return Err(Missing::Waiting(format!("creating {topic}: {e}"))),
            }
        }
        Err(Missing::Refused(last))
    }
}
