//! Before case tracking starts: the alerts and case-events topics must be
//! co-partitioned; the case-events topic and the outputs created like the
//! alerts topic (`Creation::LikeAlerts`: escalations) are created, as many
//! partitions as the alerts topic, when missing.

use crate::config::Settings;
use crate::consumer::outputs::{Creation, Outputs};
use crate::consumer::ready::Ready;
use crate::error::Error;
use crate::metrics as m;
use crate::topics::{Admin, Missing};

/// Checks (and creates where missing) the topics case tracking uses;
/// `Ready::Yes` with both topics' partition count. Blocking: run it off
/// the async task.
pub(super) fn prepare(settings: &Settings) -> Result<Ready<i32>, Error> {
    let config = crate::kafka::client_config(&settings.brokers, &[], &settings.kafka);
    let admin = Admin::new(&config, "the case tracker's admin client")?;
    let cases = &settings.cases;
    let Some(alerts) = admin.partitions(&settings.alerts_topic) else {
        return Ok(Ready::Waiting(format!(
            "the alerts topic {} does not exist yet",
            settings.alerts_topic
        )));
    };
    let outputs = Outputs::new(settings);
    let outputs = outputs
        .created(Creation::LikeAlerts)
        .map(|(_, topic)| topic);
    for topic in std::iter::once(cases.case_events_topic.as_str()).chain(outputs) {
        match admin.ensure(topic, alerts) {
            Ok(_) => {}
            Err(Missing::Waiting(why)) => return Ok(Ready::Waiting(why)),
            Err(Missing::Refused(reason)) => {
                return Err(Error::CasesTopic {
                    topic: topic.to_string(),
                    partitions: alerts,
                    reason,
                });
            }
        }
    }
    match admin.partitions(&cases.case_events_topic) {
        Some(events) if events == alerts => {
            for topic in [&settings.alerts_topic, &cases.case_events_topic] {
                metrics::gauge!(m::TOPIC_PARTITIONS, "topic" => topic.clone())
                    .set(f64::from(alerts));
            }
            Ok(Ready::Yes(alerts))
        }
        Some(events) => Err(Error::CasesPartitions {
            alerts_topic: settings.alerts_topic.clone(),
            alerts,
            events_topic: cases.case_events_topic.clone(),
            events,
        }),
        None => Ok(Ready::Waiting(format!(
            "{} created but not visible yet",
            cases.case_events_topic
        ))),
    }
}
