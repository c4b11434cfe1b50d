//! Decoding and validation of `SurveyResponse` payloads: pure functions
//! from untrusted bytes to a `ValidResponse` or a named `Rejection`.
//!
//! Accepts, detected per message:
//! - plain protobuf;
//! - the Confluent Schema Registry framing: `0x00`, a 4-byte big-endian
//!   schema id, the message-index array (`[0]` written as the single byte
//!   `0x00`, otherwise a zigzag-varint count then zigzag-varint indexes),
//!   then protobuf;
//! - the schema id in a `__value_schema_id` record header (newer Confluent
//!   serializers): `0x00` + 4-byte id or `0x01` + 16-byte GUID, then the
//!   message-index array; the payload is then plain protobuf.
//!
//! A plain protobuf SurveyResponse never starts with byte 0x00 (that would
//! be field number 0, which protobuf forbids), so the detection is exact.
//! Every step is bounds-checked: garbage yields a `Rejection`, never a panic.

use std::time::Duration;

use prost::Message;
use serde::Deserialize;

use crate::engine::{Category, FieldHasher, OTHER, Observation};
pub use crate::pb::{Channel, SurveyResponse};

/// Every channel an answer can come through, in enum order.
pub const CHANNELS: [Channel; 6] = [
    Channel::Sms,
    Channel::Email,
    Channel::Chat,
    Channel::Phone,
    Channel::Web,
    Channel::InApp,
];

/// A protobuf Timestamp from Unix milliseconds.
pub fn timestamp_from_ms(ms: i64) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// Unix milliseconds of a protobuf Timestamp (saturating: an out-of-range
/// one from an unchecked source gives an extreme time, never an overflow).
pub fn ms_from_timestamp(ts: &pbjson_types::Timestamp) -> i64 {
    ts.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(ts.nanos / 1_000_000))
}

/// The record header newer Confluent serializers put the schema id in.
pub const VALUE_SCHEMA_ID_HEADER: &str = "__value_schema_id";

/// The reason an event is refused. A closed set: each is a metric label
/// value (`nps_events_rejected_total{reason}`) and a dead-letter header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    EmptyPayload,
    PayloadTooLarge,
    InvalidFraming,
    UnexpectedMessageType,
    Undecodable,
    MissingResponseId,
    MissingProduct,
    MissingRegion,
    MissingChannel,
    UnknownChannel,
    MissingScore,
    ScoreOutOfRange,
    MissingTimestamp,
    InvalidTimestamp,
    FutureTimestamp,
    InvalidCustomerValue,
    FieldTooLong,
    TooManyAttributes,
    InvalidLabelValue,
    RevisionAfterHorizon,
}

impl Reason {
    pub const ALL: [Reason; 20] = [
        Reason::EmptyPayload,
        Reason::PayloadTooLarge,
        Reason::InvalidFraming,
        Reason::UnexpectedMessageType,
        Reason::Undecodable,
        Reason::MissingResponseId,
        Reason::MissingProduct,
        Reason::MissingRegion,
        Reason::MissingChannel,
        Reason::UnknownChannel,
        Reason::MissingScore,
        Reason::ScoreOutOfRange,
        Reason::MissingTimestamp,
        Reason::InvalidTimestamp,
        Reason::FutureTimestamp,
        Reason::InvalidCustomerValue,
        Reason::FieldTooLong,
        Reason::TooManyAttributes,
        Reason::InvalidLabelValue,
        Reason::RevisionAfterHorizon,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::EmptyPayload => "empty_payload",
            Reason::PayloadTooLarge => "payload_too_large",
            Reason::InvalidFraming => "invalid_framing",
            Reason::UnexpectedMessageType => "unexpected_message_type",
            Reason::Undecodable => "undecodable",
            Reason::MissingResponseId => "missing_response_id",
            Reason::MissingProduct => "missing_product",
            Reason::MissingRegion => "missing_region",
            Reason::MissingChannel => "missing_channel",
            Reason::UnknownChannel => "unknown_channel",
            Reason::MissingScore => "missing_score",
            Reason::ScoreOutOfRange => "score_out_of_range",
            Reason::MissingTimestamp => "missing_timestamp",
            Reason::InvalidTimestamp => "invalid_timestamp",
            Reason::FutureTimestamp => "future_timestamp",
            Reason::InvalidCustomerValue => "invalid_customer_value",
            Reason::FieldTooLong => "field_too_long",
            Reason::TooManyAttributes => "too_many_attributes",
            Reason::InvalidLabelValue => "invalid_label_value",
            Reason::RevisionAfterHorizon => "revision_after_horizon",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an event was refused, with details that carry no customer data
/// (field names and sizes, never values), so they may be logged and put in
/// dead-letter headers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    #[error("empty payload")]
    EmptyPayload,
    #[error("payload of {size} bytes exceeds the limit of {limit}")]
    PayloadTooLarge { size: usize, limit: usize },
    #[error("invalid schema-registry framing: {0}")]
    InvalidFraming(&'static str),
    #[error("schema-registry message index {0:?} is not SurveyResponse ([0])")]
    UnexpectedMessageType(Vec<i64>),
    #[error("not a SurveyResponse protobuf: {0}")]
    Undecodable(String),
    #[error("response_id is missing")]
    MissingResponseId,
    #[error("product is missing")]
    MissingProduct,
    #[error("region is missing")]
    MissingRegion,
    #[error("channel is missing (CHANNEL_UNSPECIFIED)")]
    MissingChannel,
    #[error("channel {0} is not a known Channel")]
    UnknownChannel(i32),
    #[error("score is missing")]
    MissingScore,
    #[error("score {0} is outside 0..=10")]
    ScoreOutOfRange(u32),
    #[error("responded_at is missing")]
    MissingTimestamp,
    #[error("responded_at is not a valid timestamp")]
    InvalidTimestamp,
    #[error("responded_at is {ahead_ms} ms in the future, more than the allowed skew")]
    FutureTimestamp { ahead_ms: i64 },
    #[error("customer_value must be finite, >= 0 and <= the configured maximum")]
    InvalidCustomerValue,
    #[error("{field} is {len} bytes, over the limit of {limit}")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("{count} attributes, over the limit of {limit}")]
    TooManyAttributes { count: usize, limit: usize },
    #[error("{field} holds a control character or a reserved value")]
    InvalidLabelValue { field: &'static str },
    #[error(
        "a revision (updated_at set) of a response not remembered: its first version left --dedup-horizon, or never came"
    )]
    RevisionAfterHorizon,
}

impl Rejection {
    pub fn reason(&self) -> Reason {
        match self {
            Rejection::EmptyPayload => Reason::EmptyPayload,
            Rejection::PayloadTooLarge { .. } => Reason::PayloadTooLarge,
            Rejection::InvalidFraming(_) => Reason::InvalidFraming,
            Rejection::UnexpectedMessageType(_) => Reason::UnexpectedMessageType,
            Rejection::Undecodable(_) => Reason::Undecodable,
            Rejection::MissingResponseId => Reason::MissingResponseId,
            Rejection::MissingProduct => Reason::MissingProduct,
            Rejection::MissingRegion => Reason::MissingRegion,
            Rejection::MissingChannel => Reason::MissingChannel,
            Rejection::UnknownChannel(_) => Reason::UnknownChannel,
            Rejection::MissingScore => Reason::MissingScore,
            Rejection::ScoreOutOfRange(_) => Reason::ScoreOutOfRange,
            Rejection::MissingTimestamp => Reason::MissingTimestamp,
            Rejection::InvalidTimestamp => Reason::InvalidTimestamp,
            Rejection::FutureTimestamp { .. } => Reason::FutureTimestamp,
            Rejection::InvalidCustomerValue => Reason::InvalidCustomerValue,
            Rejection::FieldTooLong { .. } => Reason::FieldTooLong,
            Rejection::TooManyAttributes { .. } => Reason::TooManyAttributes,
            Rejection::InvalidLabelValue { .. } => Reason::InvalidLabelValue,
            Rejection::RevisionAfterHorizon => Reason::RevisionAfterHorizon,
        }
    }
}

/// Bounds on what an event may hold. Deserialized from the `[limits]`
/// table of the config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest payload accepted, bytes.
    pub max_payload_bytes: usize,
    /// Longest product or region, bytes (they become label values).
    pub max_label_bytes: usize,
    /// Longest response_id, customer_id or survey_id, bytes.
    pub max_id_bytes: usize,
    pub max_comment_bytes: usize,
    pub max_attributes: usize,
    /// Longest attribute key or value, bytes.
    pub max_attribute_bytes: usize,
    /// How far in the future responded_at may be (clock skew).
    #[serde(deserialize_with = "de_duration")]
    pub max_future_skew: Duration,
    /// Largest customer_value accepted.
    pub max_customer_value: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 1024 * 1024,
            max_label_bytes: 128,
            max_id_bytes: 256,
            max_comment_bytes: 16 * 1024,
            max_attributes: 64,
            max_attribute_bytes: 1024,
            max_future_skew: Duration::from_secs(300),
            max_customer_value: 1e12,
        }
    }
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(serde::de::Error::custom)
}

/// How the payload was framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Plain,
    /// Confluent framing in the payload, with its schema id.
    SchemaRegistry {
        schema_id: u32,
    },
    /// Schema id (or GUID) in the `__value_schema_id` header.
    SchemaIdHeader,
}

/// Decodes a record value (`None` for a Kafka null value) with its headers.
pub fn decode<'h>(
    payload: Option<&[u8]>,
    headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    limits: &Limits,
) -> Result<(SurveyResponse, Framing), Rejection> {
    let (body, framing) = unframe(payload, headers, limits)?;
    let mut msg = SurveyResponse::default();
    merge_body(&mut msg, body)?;
    Ok((msg, framing))
}

/// Decodes a protobuf body into `msg` (default or cleared: prost's
/// `decode` is `default()` then `merge`).
fn merge_body(msg: &mut SurveyResponse, body: &[u8]) -> Result<(), Rejection> {
    msg.merge(body)
        .map_err(|e| Rejection::Undecodable(e.to_string()))
}

/// The protobuf body of a record value: checks size and framing (plain,
/// Confluent prefix, or the schema-id header) and strips the prefix.
pub fn unframe<'p, 'h>(
    payload: Option<&'p [u8]>,
    headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    limits: &Limits,
) -> Result<(&'p [u8], Framing), Rejection> {
    let payload = match payload {
        None | Some([]) => return Err(Rejection::EmptyPayload),
        Some(p) => p,
    };
    if payload.len() > limits.max_payload_bytes {
        return Err(Rejection::PayloadTooLarge {
            size: payload.len(),
            limit: limits.max_payload_bytes,
        });
    }
    let header = headers
        .into_iter()
        .find(|(k, _)| *k == VALUE_SCHEMA_ID_HEADER)
        .and_then(|(_, v)| v);
    let (body, framing) = if let Some(h) = header {
        parse_header_schema_id(h)?;
        (payload, Framing::SchemaIdHeader)
    } else if payload[0] == 0 {
        let (schema_id, rest) = parse_prefix(payload)?;
        (rest, Framing::SchemaRegistry { schema_id })
    } else {
        (payload, Framing::Plain)
    };
    Ok((body, framing))
}

/// `0x00` + 4-byte schema id + message indexes; returns the id and the rest.
fn parse_prefix(payload: &[u8]) -> Result<(u32, &[u8]), Rejection> {
    let Some((&[0, a, b, c, d], rest)) = payload.split_first_chunk::<5>() else {
        return Err(Rejection::InvalidFraming(
            "shorter than the 5-byte schema-registry header",
        ));
    };
    let rest = check_message_indexes(rest)?;
    Ok((u32::from_be_bytes([a, b, c, d]), rest))
}

/// `0x00` + 4-byte id or `0x01` + 16-byte GUID, then (optionally, when the
/// header ends there) the message indexes.
fn parse_header_schema_id(h: &[u8]) -> Result<(), Rejection> {
    let rest = match h.split_first() {
        Some((0, rest)) if rest.len() >= 4 => &rest[4..],
        Some((1, rest)) if rest.len() >= 16 => &rest[16..],
        Some((0 | 1, _)) => {
            return Err(Rejection::InvalidFraming(
                "__value_schema_id header is truncated",
            ));
        }
        _ => {
            return Err(Rejection::InvalidFraming(
                "__value_schema_id header has an unknown magic byte",
            ));
        }
    };
    if rest.is_empty() {
        return Ok(());
    }
    match check_message_indexes(rest)? {
        [] => Ok(()),
        _ => Err(Rejection::InvalidFraming(
            "__value_schema_id header has trailing bytes",
        )),
    }
}

/// Reads the message-index array; it must name the file's first message.
fn check_message_indexes(buf: &[u8]) -> Result<&[u8], Rejection> {
    let (count, mut rest) = read_zigzag(buf)?;
    if count == 0 {
        return Ok(rest); // the common [0]
    }
    if !(1..=32).contains(&count) {
        return Err(Rejection::InvalidFraming(
            "message-index count out of range",
        ));
    }
    let mut indexes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (i, r) = read_zigzag(rest)?;
        indexes.push(i);
        rest = r;
    }
    if indexes == [0] {
        Ok(rest)
    } else {
        Err(Rejection::UnexpectedMessageType(indexes))
    }
}

/// One zigzag-encoded varint of at most 10 bytes.
fn read_zigzag(buf: &[u8]) -> Result<(i64, &[u8]), Rejection> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let decoded = ((value >> 1) as i64) ^ -((value & 1) as i64);
            return Ok((decoded, &buf[i + 1..]));
        }
    }
    Err(Rejection::InvalidFraming(
        "truncated or overlong varint in message indexes",
    ))
}

/// A response that passed validation, with its derived fields.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidResponse {
    pub msg: SurveyResponse,
    pub channel: Channel,
    pub score: u32,
    pub category: Category,
    /// Event time, Unix ms.
    pub responded_at_ms: i64,
    /// customer_value, or 1 when absent.
    pub weight: f64,
    /// `updated_at`, Unix ms (None: the first version).
    pub updated_at_ms: Option<i64>,
    /// What tells a duplicate from a revision (see `content_hash`).
    pub content: u32,
    /// Of the comment alone, to name a revision's effect (`comment_hash`).
    pub comment_hash: u8,
}

impl ValidResponse {
    /// What the engine counts. `alerting` is false and `themes` empty here:
    /// the caller sets them (its alert rules, its taxonomy).
    pub fn observation(&self) -> Observation<'_> {
        Observation {
            response_id: &self.msg.response_id,
            product: &self.msg.product,
            region: &self.msg.region,
            category: self.category,
            responded_at_ms: self.responded_at_ms,
            weight: self.weight,
            score: self.score as u8,
            updated_at_ms: self.updated_at_ms,
            content: self.content,
            comment: self.comment_hash,
            themes: crate::themes::ThemeSet(0),
            alerting: false,
            breakdowns: [None; crate::engine::MAX_BREAKDOWNS],
        }
    }
}

/// A comment's 8-bit hash, only to name a revision's effect: 0 for none,
/// so a comment that follows the score is always told; two different
/// comments share one with probability 1/255 (the revision is then named
/// by its other effects, or `other`).
pub fn comment_hash(comment: &str) -> u8 {
    if comment.is_empty() {
        0
    } else {
        1 + (xxhash_rust::xxh3::xxh3_64(comment.as_bytes()) % 255) as u8
    }
}

/// xxh3-64 (low 32 bits) of everything a duplicate repeats: score,
/// product, region, channel, responded_at, customer_value, comment,
/// customer_id and attributes (sorted), each length-prefixed. Not
/// response_id (the same in every version), survey_id or updated_at.
pub fn content_hash(msg: &SurveyResponse) -> u32 {
    let mut h = FieldHasher::default();
    h.field(&msg.score.unwrap_or(u32::MAX).to_le_bytes());
    h.field(msg.product.as_bytes());
    h.field(msg.region.as_bytes());
    h.field(&msg.channel.to_le_bytes());
    let t = msg
        .responded_at
        .as_ref()
        .map_or((0, 0), |t| (t.seconds, t.nanos));
    h.field(&t.0.to_le_bytes());
    h.field(&t.1.to_le_bytes());
    match msg.customer_value {
        Some(v) => h.field(&v.to_bits().to_le_bytes()),
        None => h.field(&[]),
    }
    h.field(msg.comment.as_bytes());
    h.field(msg.customer_id.as_bytes());
    if !msg.attributes.is_empty() {
        let mut attrs: Vec<(&String, &String)> = msg.attributes.iter().collect();
        attrs.sort_unstable();
        for (k, v) in attrs {
            h.field(k.as_bytes());
            h.field(v.as_bytes());
        }
    }
    h.digest() as u32
}

/// Earliest and latest instants protobuf's Timestamp allows
/// (0001-01-01T00:00:00Z, 9999-12-31T23:59:59Z).
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// Checks every rule on a decoded response at processing time `now_ms`.
pub fn validate(
    msg: SurveyResponse,
    now_ms: i64,
    limits: &Limits,
) -> Result<ValidResponse, Rejection> {
    if msg.response_id.is_empty() {
        return Err(Rejection::MissingResponseId);
    }
    check_len("response_id", &msg.response_id, limits.max_id_bytes)?;
    check_len("customer_id", &msg.customer_id, limits.max_id_bytes)?;
    check_len("survey_id", &msg.survey_id, limits.max_id_bytes)?;
    check_label("product", &msg.product, limits, Rejection::MissingProduct)?;
    check_label("region", &msg.region, limits, Rejection::MissingRegion)?;
    let channel = match Channel::try_from(msg.channel) {
        Ok(Channel::Unspecified) => return Err(Rejection::MissingChannel),
        Ok(c) => c,
        Err(_) => return Err(Rejection::UnknownChannel(msg.channel)),
    };
    let score = match msg.score {
        None => return Err(Rejection::MissingScore),
        Some(s) if s > 10 => return Err(Rejection::ScoreOutOfRange(s)),
        Some(s) => s,
    };
    let responded_at_ms = timestamp_ms(msg.responded_at.as_ref(), now_ms, limits)?;
    let weight = match msg.customer_value {
        None => 1.0,
        Some(v) if v.is_finite() && v >= 0.0 && v <= limits.max_customer_value => v,
        Some(_) => return Err(Rejection::InvalidCustomerValue),
    };
    check_len("comment", &msg.comment, limits.max_comment_bytes)?;
    if msg.attributes.len() > limits.max_attributes {
        return Err(Rejection::TooManyAttributes {
            count: msg.attributes.len(),
            limit: limits.max_attributes,
        });
    }
    for (k, v) in &msg.attributes {
        check_len("attribute key", k, limits.max_attribute_bytes)?;
        check_len("attribute value", v, limits.max_attribute_bytes)?;
    }
    let updated_at_ms = match &msg.updated_at {
        None => None,
        Some(t) => Some(timestamp_ms(Some(t), now_ms, limits)?),
    };
    Ok(ValidResponse {
        channel,
        score,
        category: Category::of_score(score),
        responded_at_ms,
        weight,
        updated_at_ms,
        content: content_hash(&msg),
        comment_hash: comment_hash(&msg.comment),
        msg,
    })
}

/// A required event time in Unix ms: present, a valid protobuf Timestamp,
/// and not further in the future than the allowed skew.
pub fn timestamp_ms(
    ts: Option<&pbjson_types::Timestamp>,
    now_ms: i64,
    limits: &Limits,
) -> Result<i64, Rejection> {
    let ts = ts.ok_or(Rejection::MissingTimestamp)?;
    if !(0..1_000_000_000).contains(&ts.nanos)
        || !(MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&ts.seconds)
    {
        return Err(Rejection::InvalidTimestamp);
    }
    let ms = ms_from_timestamp(ts);
    let skew_ms = i64::try_from(limits.max_future_skew.as_millis()).unwrap_or(i64::MAX);
    if ms > now_ms.saturating_add(skew_ms) {
        return Err(Rejection::FutureTimestamp {
            ahead_ms: ms - now_ms,
        });
    }
    Ok(ms)
}

/// Decode then validate.
pub fn decode_and_validate<'h>(
    payload: Option<&[u8]>,
    headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    now_ms: i64,
    limits: &Limits,
) -> Result<ValidResponse, Rejection> {
    Decoder::default().decode_and_validate(payload, headers, now_ms, limits)
}

/// Decode then validate, record after record, into one reused message: its
/// strings keep their capacity, so the common path allocates nothing (a
/// decode into a cleared message is a decode into a new one: prost's
/// `decode` is `default()` then `merge`). Hand each response back with
/// `recycle` once done with it.
#[derive(Debug, Default)]
pub struct Decoder {
    spare: SurveyResponse,
}

impl Decoder {
    /// As `decode_and_validate`.
    pub fn decode_and_validate<'h>(
        &mut self,
        payload: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
        now_ms: i64,
        limits: &Limits,
    ) -> Result<ValidResponse, Rejection> {
        let (body, _) = unframe(payload, headers, limits)?;
        let mut msg = std::mem::take(&mut self.spare);
        msg.clear();
        if let Err(rejection) = merge_body(&mut msg, body) {
            self.spare = msg;
            return Err(rejection);
        }
        validate(msg, now_ms, limits)
    }

    /// Takes a response's message back for the next record.
    pub fn recycle(&mut self, response: ValidResponse) {
        self.spare = response.msg;
    }
}

/// A field no longer than `limit` bytes.
pub fn check_len(field: &'static str, value: &str, limit: usize) -> Result<(), Rejection> {
    if value.len() > limit {
        return Err(Rejection::FieldTooLong {
            field,
            len: value.len(),
            limit,
        });
    }
    Ok(())
}

/// A label value: present, bounded, printable, not the reserved `__other__`.
fn check_label(
    field: &'static str,
    value: &str,
    limits: &Limits,
    missing: Rejection,
) -> Result<(), Rejection> {
    if value.trim().is_empty() {
        return Err(missing);
    }
    check_len(field, value, limits.max_label_bytes)?;
    if value.chars().any(char::is_control) || value == OTHER {
        return Err(Rejection::InvalidLabelValue { field });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
