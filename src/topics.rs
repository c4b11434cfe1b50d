//! Topics nps-stream writes to and creates when they are missing (case
//! events, escalations, promoter events): the broker's default replication
//! (then one replica, for brokers that want a number), as many partitions
//! as a topic they follow. Blocking: run off the async task.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;

use rdkafka::ClientConfig;

use crate::error::Error;

/// A metadata client and an admin client on the brokers of a client
/// configuration (`kafka::client_config`).
pub struct Admin {
    config: ClientConfig,
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
    pub fn new(config: &ClientConfig, what: &'static str) -> Result<Admin, Error> {
        let client = |source| Error::Client { what, source };
        let mut config = config.clone();
        config.set("statistics.interval.ms", "0");
        Ok(Admin {
            meta: config.create().map_err(client)?,
            admin: config.create().map_err(client)?,
            config,
        })
    }

    /// The topic's `retention.ms` as the brokers describe it (`None`:
    /// kept for ever, -1), or why it cannot be known (a broker without
    /// DescribeConfigs, like librdkafka's mock cluster, or Tansu).
    pub fn retention(&self, topic: &str) -> Result<Option<Duration>, String> {
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
        let asked = [ResourceSpecifier::Topic(topic)];
        let described = futures::executor::block_on(self.admin.describe_configs(&asked, &opts))
            .map_err(|e| e.to_string())?;
        let resource = described
            .into_iter()
            .next()
            .ok_or("no answer")?
            .map_err(|code| code.to_string())?;
        let value = resource
            .entries
            .iter()
            .find(|e| e.name == "retention.ms")
            .and_then(|e| e.value.clone())
            .ok_or("retention.ms not described")?;
        match value.trim().parse::<i64>() {
            Ok(ms) if ms < 0 => Ok(None),
            Ok(ms) => Ok(Some(Duration::from_millis(ms.unsigned_abs()))),
            Err(_) => Err(format!("retention.ms `{value}` is not a number")),
        }
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
    pub fn ensure_any(&self, topic: &str, partitions: i32) -> Result<i32, Missing> {
        match self.ensure(topic, partitions) {
            Err(Missing::Waiting(why)) => {
                let producer: Option<BaseProducer> = self.config.create().ok();
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
                Ok(results) => {
                    let answer = results
                        .first()
                        .map(|r| r.as_ref().map(|_| ()).map_err(|e| e.1));
                    match verdict(answer) {
                        Verdict::Created => {
                            tracing::info!(topic, partitions, "topic created");
                            return Ok(());
                        }
                        Verdict::Refused(why) => return Err(Missing::Refused(why)),
                        Verdict::TryAnother(why) => last = why,
                    }
                }
                Err(e) => return Err(Missing::Waiting(format!("creating {topic}: {e}"))),
            }
        }
        Err(Missing::Refused(last))
    }
}

/// What a CreateTopics answer means for the topic.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Created now, or it already was.
    Created,
    /// No rights to create it: no retry changes that.
    Refused(String),
    /// Refused for this replication factor (or not answered): the next
    /// one may do.
    TryAnother(String),
}

fn verdict(answer: Option<Result<(), RDKafkaErrorCode>>) -> Verdict {
    match answer {
        Some(Ok(())) | Some(Err(RDKafkaErrorCode::TopicAlreadyExists)) => Verdict::Created,
        Some(Err(
            code @ (RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed),
        )) => Verdict::Refused(format!("{code}")),
        Some(Err(code)) => Verdict::TryAnother(format!("{code}")),
        None => Verdict::TryAnother("no answer".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::{Verdict, verdict};
    use rdkafka::types::RDKafkaErrorCode as Code;

    /// No broker the tests start refuses CreateTopics (librdkafka's mock
    /// cluster does not answer it, Tansu 0.6 has no ACLs), so the reading
    /// of its answers is tested here: authorization errors stop the start,
    /// other errors try the next replication factor.
    #[test]
    fn create_topics_answers_are_read_as_created_refused_or_try_another() {
        assert_eq!(verdict(Some(Ok(()))), Verdict::Created);
        assert_eq!(
            verdict(Some(Err(Code::TopicAlreadyExists))),
            Verdict::Created
        );
        for code in [
            Code::TopicAuthorizationFailed,
            Code::ClusterAuthorizationFailed,
        ] {
            assert_eq!(
                verdict(Some(Err(code))),
                Verdict::Refused(format!("{code}"))
            );
        }
        assert_eq!(
            verdict(Some(Err(Code::InvalidReplicationFactor))),
            Verdict::TryAnother(format!("{}", Code::InvalidReplicationFactor))
        );
        assert_eq!(verdict(None), Verdict::TryAnother("no answer".into()));
    }
}
