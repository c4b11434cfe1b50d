//! The output registry: every kind of record nps-stream emits (a sink),
//! with its topic, how the topic comes to exist, and how a record of it
//! goes out (key, encoded value, headers).
//!
//! The cores decide what a record says (`alerts::build`,
//! `promoters::build`, `cases::escalation::build`); this module only says
//! how it travels. A new output is a builder in its core, one `Sink` arm
//! with its entry in `ENTRIES`, and an `Emitted` impl naming its message
//! type, id and key.

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};

use crate::alerts::AlertFormat;
use crate::config::Settings;
use crate::pb::{CaseEscalation, DetractorAlert, PromoterEvent};

/// Headers of an emitted record.
pub const CONTENT_TYPE: &str = "content-type";
pub const MESSAGE_TYPE_HEADER: &str = "nps.message-type";
/// The id of an alert (and of the alert an escalation is about).
pub const ALERT_ID_HEADER: &str = "nps.alert-id";
/// The id of a promoter event.
pub const EVENT_ID_HEADER: &str = "nps.event-id";
/// Dead-letter headers, besides the record's own.
pub const DLQ_REASON: &str = "nps.dlq.reason";
pub const DLQ_ERROR: &str = "nps.dlq.error";
pub const DLQ_TOPIC: &str = "nps.dlq.source.topic";
pub const DLQ_PARTITION: &str = "nps.dlq.source.partition";
pub const DLQ_OFFSET: &str = "nps.dlq.source.offset";
pub const DLQ_FAILED_AT: &str = "nps.dlq.failed_at_ms";
/// What of a record too large for the broker was dropped so that it could
/// go out.
pub const VALUE_DROPPED: &str = "nps.value-dropped";
pub const HEADERS_DROPPED: &str = "nps.headers-dropped";
pub const KEY_DROPPED: &str = "nps.key-dropped";

/// The message type of an escalation.
pub const ESCALATION_MESSAGE_TYPE: &str = "nps.v1.CaseEscalation";

/// A kind of record nps-stream emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Sink {
    Alerts,
    PromoterEvents,
    Escalations,
    DeadLetters,
}

/// How a sink's topic comes to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// Made by the operator (or the broker's auto-creation); never by
    /// nps-stream, which would have to guess its retention and size.
    Operator,
    /// Created when missing with as many partitions as the input topic,
    /// and created again while nps-stream runs if it disappears.
    LikeInput,
    /// Created when missing with as many partitions as the alerts topic,
    /// checked with the case tracker's topics.
    LikeAlerts,
}

/// One entry of the registry.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub sink: Sink,
    /// Its name in logs, before "topic".
    pub name: &'static str,
    pub creation: Creation,
}

/// The registry.
pub const ENTRIES: [Entry; 4] = [
    Entry {
        sink: Sink::Alerts,
        name: "alert",
        creation: Creation::Operator,
    },
    Entry {
        sink: Sink::PromoterEvents,
        name: "promoter",
        creation: Creation::LikeInput,
    },
    Entry {
        sink: Sink::Escalations,
        name: "escalation",
        creation: Creation::LikeAlerts,
    },
    Entry {
        sink: Sink::DeadLetters,
        name: "dead-letter",
        creation: Creation::Operator,
    },
];

/// A record on its way out: its sink, key, value and headers.
pub struct Output {
    pub sink: Sink,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: OwnedHeaders,
}

/// A record a core builds, and what the registry needs to send it.
pub trait Emitted: prost::Message + serde::Serialize {
    const SINK: Sink;
    const MESSAGE_TYPE: &'static str;
    /// The header carrying `id()`.
    const ID_HEADER: &'static str;
    fn id(&self) -> &str;
    /// The Kafka key: one customer's records stay in order on one
    /// partition.
    fn key(&self) -> &str;
}

impl Emitted for DetractorAlert {
    const SINK: Sink = Sink::Alerts;
    const MESSAGE_TYPE: &'static str = crate::alerts::MESSAGE_TYPE;
    const ID_HEADER: &'static str = ALERT_ID_HEADER;
    fn id(&self) -> &str {
        &self.alert_id
    }
    fn key(&self) -> &str {
        crate::alerts::key(self)
    }
}

impl Emitted for PromoterEvent {
    const SINK: Sink = Sink::PromoterEvents;
    const MESSAGE_TYPE: &'static str = crate::promoters::MESSAGE_TYPE;
    const ID_HEADER: &'static str = EVENT_ID_HEADER;
    fn id(&self) -> &str {
        &self.event_id
    }
    fn key(&self) -> &str {
        crate::promoters::key(self)
    }
}

impl Emitted for CaseEscalation {
    const SINK: Sink = Sink::Escalations;
    const MESSAGE_TYPE: &'static str = ESCALATION_MESSAGE_TYPE;
    const ID_HEADER: &'static str = ALERT_ID_HEADER;
    fn id(&self) -> &str {
        &self.alert_id
    }
    fn key(&self) -> &str {
        crate::cases::escalation::key(self)
    }
}

/// The registry as configured: each sink's topic, whether it is on, and
/// the format records are encoded in.
#[derive(Debug, Clone)]
pub struct Outputs {
    topics: [String; 4],
    enabled: [bool; 4],
    format: AlertFormat,
}

impl Outputs {
    pub fn new(settings: &Settings) -> Outputs {
        Outputs {
            topics: [
                settings.alerts_topic.clone(),
                settings.promoters.topic.clone(),
                settings.cases.escalations_topic.clone(),
                settings.dlq_topic.clone(),
            ],
            enabled: [
                true,
                settings.promoters.enabled,
                settings.cases.enabled,
                true,
            ],
            format: settings.alerts_format,
        }
    }

    pub fn topic(&self, sink: Sink) -> &str {
        &self.topics[sink as usize]
    }

    /// The topics of the sinks that are on and created as `creation` says.
    pub fn created(&self, creation: Creation) -> impl Iterator<Item = (&'static str, &str)> {
        ENTRIES
            .iter()
            .filter(move |e| e.creation == creation && self.enabled[e.sink as usize])
            .map(|e| (e.name, self.topic(e.sink)))
    }

    /// A core's record, encoded, with its content type, message type and
    /// id headers.
    pub fn emit<E: Emitted>(&self, record: &E) -> Output {
        let (value, content_type) = crate::alerts::encode(record, self.format);
        Output {
            sink: E::SINK,
            key: Some(record.key().as_bytes().to_vec()),
            value: Some(value),
            headers: emitted_headers(content_type, E::MESSAGE_TYPE, (E::ID_HEADER, record.id())),
        }
    }

    /// The dead letter of a record refused for `reason` (`detail` says
    /// more): its key, value and headers, then why and where it came from.
    pub fn dead_letter(&self, msg: &impl Message, reason: &str, detail: &str, now: i64) -> Output {
        Output {
            sink: Sink::DeadLetters,
            key: msg.key().map(<[u8]>::to_vec),
            value: msg.payload().map(<[u8]>::to_vec),
            headers: dlq_headers(msg, reason, detail, now),
        }
    }
}

/// The headers of a record nps-stream emits: its content type, its
/// message type and its id.
fn emitted_headers(content_type: &str, message_type: &str, id: (&str, &str)) -> OwnedHeaders {
    OwnedHeaders::new()
        .insert(Header {
            key: CONTENT_TYPE,
            value: Some(content_type),
        })
        .insert(Header {
            key: MESSAGE_TYPE_HEADER,
            value: Some(message_type),
        })
        .insert(Header {
            key: id.0,
            value: Some(id.1),
        })
}

/// A dead letter's headers: the record's own, then why it was refused and
/// where it came from.
fn dlq_headers(msg: &impl Message, reason: &str, detail: &str, now: i64) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    if let Some(h) = msg.headers() {
        for header in h.iter() {
            headers = headers.insert(header);
        }
    }
    let (partition, offset, failed_at) = (
        msg.partition().to_string(),
        msg.offset().to_string(),
        now.to_string(),
    );
    [
        (DLQ_REASON, reason),
        (DLQ_ERROR, detail),
        (DLQ_TOPIC, msg.topic()),
        (DLQ_PARTITION, partition.as_str()),
        (DLQ_OFFSET, offset.as_str()),
        (DLQ_FAILED_AT, failed_at.as_str()),
    ]
    .into_iter()
    .fold(headers, |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(value),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::OwnedMessage;

    fn header(h: &OwnedHeaders, key: &str) -> Option<String> {
        h.iter()
            .find(|x| x.key == key)
            .and_then(|x| x.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    #[test]
    fn every_sink_has_one_entry_and_its_own_topic() {
        let outputs = Outputs::new(&Settings::default());
        for (i, e) in ENTRIES.iter().enumerate() {
            assert_eq!(e.sink as usize, i, "{} is out of place", e.name);
        }
        let mut topics: Vec<&str> = ENTRIES.iter().map(|e| outputs.topic(e.sink)).collect();
        topics.sort_unstable();
        topics.dedup();
        assert_eq!(topics.len(), ENTRIES.len());
        assert_eq!(outputs.topic(Sink::Alerts), "nps-detractor-alerts");
        assert_eq!(outputs.topic(Sink::DeadLetters), "survey-responses-dlq");
    }

    #[test]
    fn only_sinks_that_are_on_are_created() {
        let mut settings = Settings::default();
        settings.promoters.enabled = false;
        settings.cases.enabled = true;
        let outputs = Outputs::new(&settings);
        assert_eq!(outputs.created(Creation::LikeInput).count(), 0);
        let like_alerts: Vec<_> = outputs.created(Creation::LikeAlerts).collect();
        assert_eq!(
            like_alerts,
            vec![("escalation", settings.cases.escalations_topic.as_str())]
        );
        settings.promoters.enabled = true;
        let outputs = Outputs::new(&settings);
        let like_input: Vec<_> = outputs.created(Creation::LikeInput).collect();
        assert_eq!(
            like_input,
            vec![("promoter", settings.promoters.topic.as_str())]
        );
    }

    #[test]
    fn an_emitted_record_carries_its_type_id_and_customer_key() {
        let outputs = Outputs::new(&Settings::default());
        let alert = DetractorAlert {
            alert_id: "a1".into(),
            response_id: "r1".into(),
            customer_id: "c1".into(),
            ..Default::default()
        };
        let out = outputs.emit(&alert);
        assert_eq!(out.sink, Sink::Alerts);
        assert_eq!(out.key.as_deref(), Some(&b"c1"[..]));
        assert_eq!(
            header(&out.headers, MESSAGE_TYPE_HEADER).as_deref(),
            Some("nps.v1.DetractorAlert")
        );
        assert_eq!(header(&out.headers, ALERT_ID_HEADER).as_deref(), Some("a1"));
        let event = PromoterEvent {
            event_id: "e1".into(),
            response_id: "r2".into(),
            ..Default::default()
        };
        let out = outputs.emit(&event);
        assert_eq!(out.sink, Sink::PromoterEvents);
        // No customer: keyed by the response.
        assert_eq!(out.key.as_deref(), Some(&b"r2"[..]));
        assert_eq!(header(&out.headers, EVENT_ID_HEADER).as_deref(), Some("e1"));
        let esc = CaseEscalation {
            alert_id: "a9".into(),
            ..Default::default()
        };
        let out = outputs.emit(&esc);
        assert_eq!(out.sink, Sink::Escalations);
        assert_eq!(
            header(&out.headers, MESSAGE_TYPE_HEADER).as_deref(),
            Some(ESCALATION_MESSAGE_TYPE)
        );
    }

    #[test]
    fn a_dead_letter_keeps_the_record_and_says_why_and_where_from() {
        let own = OwnedHeaders::new().insert(Header {
            key: "trace",
            value: Some("t-1"),
        });
        let msg = OwnedMessage::new(
            Some(b"bytes".to_vec()),
            Some(b"k".to_vec()),
            "survey-responses".into(),
            rdkafka::Timestamp::NotAvailable,
            4,
            17,
            Some(own),
        );
        let out = Outputs::new(&Settings::default()).dead_letter(&msg, "undecodable", "bad", 99);
        assert_eq!(out.sink, Sink::DeadLetters);
        assert_eq!(
            (out.key.as_deref(), out.value.as_deref()),
            (Some(&b"k"[..]), Some(&b"bytes"[..]))
        );
        let h = &out.headers;
        assert_eq!(header(h, "trace").as_deref(), Some("t-1"));
        assert_eq!(header(h, DLQ_REASON).as_deref(), Some("undecodable"));
        assert_eq!(header(h, DLQ_ERROR).as_deref(), Some("bad"));
        assert_eq!(header(h, DLQ_TOPIC).as_deref(), Some("survey-responses"));
        assert_eq!(header(h, DLQ_PARTITION).as_deref(), Some("4"));
        assert_eq!(header(h, DLQ_OFFSET).as_deref(), Some("17"));
        assert_eq!(header(h, DLQ_FAILED_AT).as_deref(), Some("99"));
    }
}
