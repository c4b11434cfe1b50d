use super::*;
use crate::pb;
use proptest::prelude::*;

const NOW: i64 = 1_763_800_000_000; // 2025-11-22T08:26:40Z

fn good() -> SurveyResponse {
    SurveyResponse {
        response_id: "r-1".into(),
        customer_id: "c-1".into(),
        product: "Tarjeta Oro".into(),
        region: "Norte".into(),
        channel: Channel::Sms as i32,
        score: Some(3),
        responded_at: Some(pbjson_types::Timestamp {
            seconds: NOW / 1000 - 60,
            nanos: 250_000_000,
        }),
        comment: "Nadie me llamó".into(),
        customer_value: Some(1200.5),
        survey_id: "s-1".into(),
        attributes: [("store".to_string(), "42".to_string())].into(),
        updated_at: None,
    }
}

fn check(msg: SurveyResponse) -> Result<ValidResponse, Rejection> {
    validate(msg, NOW, &Limits::default())
}

fn reason(msg: SurveyResponse) -> Reason {
    check(msg).expect_err("must be refused").reason()
}

const NO_HEADERS: [(&str, Option<&[u8]>); 0] = [];

#[test]
fn a_good_response_validates_with_derived_fields() {
    let v = check(good()).unwrap();
    assert_eq!(v.channel, Channel::Sms);
    assert_eq!(v.score, 3);
    assert_eq!(v.category, Category::Detractor);
    assert_eq!(v.responded_at_ms, NOW - 60_000 + 250);
    assert_eq!(v.weight, 1200.5);
    let o = v.observation();
    assert_eq!(
        (o.product, o.region, o.response_id),
        ("Tarjeta Oro", "Norte", "r-1")
    );
}

#[test]
fn missing_score_is_rejected_not_zero() {
    let mut m = good();
    m.score = None;
    assert_eq!(reason(m), Reason::MissingScore);
    // An explicit 0 is a valid detractor.
    let mut m = good();
    m.score = Some(0);
    assert_eq!(check(m).unwrap().category, Category::Detractor);
}

#[test]
fn missing_score_on_the_wire_is_rejected_not_zero() {
    let mut m = good();
    m.score = None;
    let bytes = m.encode_to_vec();
    let err = decode_and_validate(Some(&bytes), NO_HEADERS, NOW, &Limits::default()).unwrap_err();
    assert_eq!(err, Rejection::MissingScore);
    let mut m = good();
    m.score = Some(0);
    let bytes = m.encode_to_vec();
    assert_eq!(
        decode_and_validate(Some(&bytes), NO_HEADERS, NOW, &Limits::default())
            .unwrap()
            .score,
        0
    );
}

#[test]
fn each_rule_has_its_own_reason() {
    type Mutation = Box<dyn Fn(&mut SurveyResponse)>;
    let cases: Vec<(Reason, Mutation)> = vec![
        (
            Reason::MissingResponseId,
            Box::new(|m| m.response_id.clear()),
        ),
        (Reason::MissingProduct, Box::new(|m| m.product.clear())),
        (
            Reason::MissingProduct,
            Box::new(|m| m.product = "   ".into()),
        ),
        (Reason::MissingRegion, Box::new(|m| m.region.clear())),
        (Reason::MissingChannel, Box::new(|m| m.channel = 0)),
        (Reason::UnknownChannel, Box::new(|m| m.channel = 99)),
        (Reason::UnknownChannel, Box::new(|m| m.channel = -3)),
        (Reason::ScoreOutOfRange, Box::new(|m| m.score = Some(11))),
        (
            Reason::ScoreOutOfRange,
            Box::new(|m| m.score = Some(u32::MAX)),
        ),
        (
            Reason::MissingTimestamp,
            Box::new(|m| m.responded_at = None),
        ),
        (
            Reason::InvalidTimestamp,
            Box::new(|m| m.responded_at.as_mut().unwrap().nanos = -1),
        ),
        (
            Reason::InvalidTimestamp,
            Box::new(|m| m.responded_at.as_mut().unwrap().seconds = i64::MAX),
        ),
        (
            Reason::FutureTimestamp,
            Box::new(|m| m.responded_at.as_mut().unwrap().seconds = NOW / 1000 + 301),
        ),
        (
            Reason::InvalidCustomerValue,
            Box::new(|m| m.customer_value = Some(f64::NAN)),
        ),
        (
            Reason::InvalidCustomerValue,
            Box::new(|m| m.customer_value = Some(f64::INFINITY)),
        ),
        (
            Reason::InvalidCustomerValue,
            Box::new(|m| m.customer_value = Some(-0.01)),
        ),
        (
            Reason::InvalidCustomerValue,
            Box::new(|m| m.customer_value = Some(1e13)),
        ),
        (
            Reason::FieldTooLong,
            Box::new(|m| m.product = "p".repeat(129)),
        ),
        (
            Reason::FieldTooLong,
            Box::new(|m| m.region = "r".repeat(129)),
        ),
        (
            Reason::FieldTooLong,
            Box::new(|m| m.response_id = "x".repeat(257)),
        ),
        (
            Reason::FieldTooLong,
            Box::new(|m| m.comment = "c".repeat(16 * 1024 + 1)),
        ),
        (
            Reason::FieldTooLong,
            Box::new(|m| {
                m.attributes.insert("k".into(), "v".repeat(1025));
            }),
        ),
        (
            Reason::TooManyAttributes,
            Box::new(|m| m.attributes = (0..65).map(|i| (i.to_string(), String::new())).collect()),
        ),
        (
            Reason::InvalidLabelValue,
            Box::new(|m| m.product = "a\nb".into()),
        ),
        (
            Reason::InvalidLabelValue,
            Box::new(|m| m.region = "Norte\u{7}".into()),
        ),
        (
            Reason::InvalidLabelValue,
            Box::new(|m| m.product = OTHER.into()),
        ),
    ];
    for (i, (want, mutate)) in cases.iter().enumerate() {
        let mut m = good();
        mutate(&mut m);
        assert_eq!(reason(m), *want, "case {i}");
    }
}

#[test]
fn future_within_skew_is_accepted() {
    let mut m = good();
    m.responded_at.as_mut().unwrap().seconds = NOW / 1000 + 299;
    assert!(check(m).is_ok());
}

#[test]
fn reasons_are_distinct_snake_case_labels() {
    let names: std::collections::BTreeSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names.len(), Reason::ALL.len());
    for n in names {
        assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{n}");
    }
}

#[test]
fn rejection_messages_carry_no_customer_data() {
    let mut m = good();
    m.product = "secret-product\n".into();
    let text = check(m).unwrap_err().to_string();
    assert!(!text.contains("secret"), "{text}");
}

fn confluent(schema_id: u32, indexes: &[u8], msg: &SurveyResponse) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(indexes);
    out.extend_from_slice(&msg.encode_to_vec());
    out
}

#[test]
fn plain_and_confluent_framings_decode_to_the_same_message() {
    let m = good();
    let limits = Limits::default();
    let (plain, f) = decode(Some(&m.encode_to_vec()), NO_HEADERS, &limits).unwrap();
    assert_eq!((plain, f), (m.clone(), Framing::Plain));

    // The common [0] as the single byte 0x00.
    let bytes = confluent(7, &[0], &m);
    assert_eq!(
        decode(Some(&bytes), NO_HEADERS, &limits).unwrap(),
        (m.clone(), Framing::SchemaRegistry { schema_id: 7 })
    );
    // [0] written in full: count 1 (zigzag 2), index 0.
    let bytes = confluent(0x01020304, &[2, 0], &m);
    assert_eq!(
        decode(Some(&bytes), NO_HEADERS, &limits).unwrap(),
        (
            m.clone(),
            Framing::SchemaRegistry {
                schema_id: 0x01020304
            }
        )
    );
}

#[test]
fn another_message_type_is_refused() {
    // Count 1, index 1 (zigzag 2): the file's second message.
    let bytes = confluent(7, &[2, 2], &good());
    let err = decode(Some(&bytes), NO_HEADERS, &Limits::default()).unwrap_err();
    assert_eq!(err, Rejection::UnexpectedMessageType(vec![1]));
}

#[test]
fn truncated_framing_is_a_refusal_not_a_panic() {
    let limits = Limits::default();
    for bytes in [
        &[0u8][..],
        &[0, 0, 0],
        &[0, 0, 0, 0, 7],
        &[0, 0, 0, 0, 7, 0x80],
        &[0, 0, 0, 0, 7, 4, 2],
    ] {
        let err = decode(Some(bytes), NO_HEADERS, &limits).unwrap_err();
        assert_eq!(err.reason(), Reason::InvalidFraming, "{bytes:?}");
    }
}

#[test]
fn schema_id_in_header_means_plain_payload() {
    let m = good();
    let limits = Limits::default();
    let mut guid = vec![1u8];
    guid.extend_from_slice(&[0xab; 16]);
    guid.push(0); // message indexes [0]
    let payload = m.encode_to_vec();
    let headers = [
        ("other", Some(&b"x"[..])),
        (VALUE_SCHEMA_ID_HEADER, Some(&guid[..])),
    ];
    assert_eq!(
        decode(Some(&payload), headers, &limits).unwrap(),
        (m.clone(), Framing::SchemaIdHeader)
    );
    // 0x00 + 4-byte id, no index array.
    let id = [0u8, 0, 0, 0, 9];
    assert!(
        decode(
            Some(&payload),
            [(VALUE_SCHEMA_ID_HEADER, Some(&id[..]))],
            &limits
        )
        .is_ok()
    );
    for bad in [&[1u8, 2, 3][..], &[7, 0, 0, 0, 0], &[]] {
        let err = decode(
            Some(&payload),
            [(VALUE_SCHEMA_ID_HEADER, Some(bad))],
            &limits,
        )
        .unwrap_err();
        assert_eq!(err.reason(), Reason::InvalidFraming, "{bad:?}");
    }
}

#[test]
fn null_and_empty_values_are_empty_payload() {
    let limits = Limits::default();
    assert_eq!(
        decode(None, NO_HEADERS, &limits).unwrap_err(),
        Rejection::EmptyPayload
    );
    assert_eq!(
        decode(Some(&[]), NO_HEADERS, &limits).unwrap_err(),
        Rejection::EmptyPayload
    );
}

#[test]
fn oversized_payload_is_refused_before_decoding() {
    let limits = Limits {
        max_payload_bytes: 10,
        ..Limits::default()
    };
    let err = decode(Some(&good().encode_to_vec()), NO_HEADERS, &limits).unwrap_err();
    assert_eq!(err.reason(), Reason::PayloadTooLarge);
}

#[test]
fn garbage_is_undecodable() {
    let err = decode(
        Some(b"\xff\xff\xff not protobuf"),
        NO_HEADERS,
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(err.reason(), Reason::Undecodable);
}

#[test]
fn protobuf_json_mapping_reads_both_field_spellings() {
    let json = r#"{"responseId":"r-9","product":"P","region":"R","channel":"CHANNEL_PHONE","score":0,
                  "responded_at":"2025-11-22T08:00:00Z","customerValue":10}"#;
    let m: pb::SurveyResponse = serde_json::from_str(json).unwrap();
    assert_eq!(m.score, Some(0));
    assert_eq!(m.channel, Channel::Phone as i32);
    assert_eq!(m.responded_at.unwrap().seconds, 1_763_798_400);
    let v = check(m).unwrap();
    assert_eq!(v.category, Category::Detractor);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_and_validate(Some(&bytes), NO_HEADERS, NOW, &Limits::default());
        let mut framed = vec![0u8];
        framed.extend_from_slice(&bytes);
        let _ = decode_and_validate(Some(&framed), NO_HEADERS, NOW, &Limits::default());
        let _ = decode_and_validate(Some(&bytes), [(VALUE_SCHEMA_ID_HEADER, Some(&bytes[..]))], NOW, &Limits::default());
    }

    /// One `Decoder` reused over a run of payloads (valid responses with
    /// fields present or not, garbage, truncations; each valid one
    /// recycled) decides every payload exactly as a fresh decode does:
    /// nothing of a previous record leaks into the next.
    #[test]
    fn a_reused_decoder_decides_as_a_fresh_decode(
        runs in proptest::collection::vec(
            (any::<u8>(), any::<bool>(), any::<bool>(), 0u32..12, proptest::collection::vec(any::<u8>(), 0..40)),
            1..24,
        )
    ) {
        let mut decoder = Decoder::default();
        for (kind, with_optional, with_attrs, score, noise) in runs {
            let mut m = good();
            m.score = Some(score);
            if !with_optional {
                m.comment.clear();
                m.customer_value = None;
                m.customer_id.clear();
                m.survey_id.clear();
            }
            if !with_attrs {
                m.attributes.clear();
            }
            m.response_id = format!("r-{kind}");
            let payload = match kind % 4 {
                0 | 1 => m.encode_to_vec(),
                2 => noise,
                _ => {
                    let b = m.encode_to_vec();
                    b[..(noise.len() % b.len().max(1))].to_vec()
                }
            };
            let fresh = decode_and_validate(Some(&payload), NO_HEADERS, NOW, &Limits::default());
            let reused = decoder.decode_and_validate(Some(&payload), NO_HEADERS, NOW, &Limits::default());
            prop_assert_eq!(&reused, &fresh);
            if let Ok(v) = reused {
                decoder.recycle(v);
            }
        }
    }

    #[test]
    fn truncations_of_a_good_message_never_panic(cut in 0usize..200) {
        let bytes = confluent(3, &[0], &good());
        let cut = cut.min(bytes.len());
        let _ = decode_and_validate(Some(&bytes[..cut]), NO_HEADERS, NOW, &Limits::default());
    }
}

// ------------------------------------------------------- input at the edges

fn decode_bytes(payload: &[u8]) -> Result<ValidResponse, Rejection> {
    decode_and_validate(Some(payload), NO_HEADERS, NOW, &Limits::default())
}

#[test]
fn thousands_of_headers_are_read_once_and_the_schema_header_found_among_them() {
    let names: Vec<String> = (0..5_000).map(|i| format!("h-{i}")).collect();
    let value = [7u8; 16];
    let mut headers: Vec<(&str, Option<&[u8]>)> = names
        .iter()
        .map(|n| (n.as_str(), Some(&value[..])))
        .collect();
    let bytes = good().encode_to_vec();
    let started = std::time::Instant::now();
    let plain = decode_and_validate(Some(&bytes), headers.clone(), NOW, &Limits::default());
    assert!(plain.is_ok(), "{plain:?}");
    // The schema-id header, last of 5,001.
    headers.push((VALUE_SCHEMA_ID_HEADER, Some(&[0, 0, 0, 0, 9][..])));
    let framed = decode_and_validate(Some(&bytes), headers, NOW, &Limits::default());
    assert!(framed.is_ok(), "{framed:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn a_one_mib_schema_id_header_is_refused_as_invalid_framing() {
    let mut h = vec![0u8, 0, 0, 0, 9];
    h.extend(std::iter::repeat_n(0xAB, 1 << 20));
    let bytes = good().encode_to_vec();
    let err = decode_and_validate(
        Some(&bytes),
        [(VALUE_SCHEMA_ID_HEADER, Some(h.as_slice()))],
        NOW,
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(err.reason(), Reason::InvalidFraming);
}

#[test]
fn deeply_nested_unknown_groups_are_undecodable_not_a_stack_overflow() {
    // Field 99 as a start-group tag, 100,000 deep, inside a valid answer.
    let mut bytes = good().encode_to_vec();
    let depth = 100_000;
    for _ in 0..depth {
        bytes.extend_from_slice(&[0x9b, 0x06]); // (99 << 3) | 3, varint
    }
    for _ in 0..depth {
        bytes.extend_from_slice(&[0x9c, 0x06]); // (99 << 3) | 4
    }
    assert_eq!(
        decode_bytes(&bytes).unwrap_err().reason(),
        Reason::Undecodable
    );
}

#[test]
fn deeply_nested_unknown_length_delimited_fields_are_skipped() {
    // Unknown length-delimited fields are skipped whole, however deep
    // their content pretends to go.
    let mut inner: Vec<u8> = Vec::new();
    for _ in 0..1_000 {
        let mut outer = vec![0x9a, 0x06]; // field 99, wire type 2
        prost::encoding::encode_varint(inner.len() as u64, &mut outer);
        outer.extend_from_slice(&inner);
        inner = outer;
    }
    let mut bytes = good().encode_to_vec();
    bytes.extend_from_slice(&inner);
    assert!(decode_bytes(&bytes).is_ok());
}

#[test]
fn attributes_at_the_limit_pass_and_one_more_is_refused() {
    let limit = Limits::default().max_attributes;
    let mut m = good();
    m.attributes = (0..limit).map(|i| (format!("k{i}"), "v".into())).collect();
    assert!(check(m.clone()).is_ok());
    m.attributes.insert("one-more".into(), "v".into());
    assert_eq!(reason(m), Reason::TooManyAttributes);
}

/// `good()` encoded with `bad` (invalid UTF-8) in place of string field
/// `field`, appended last so that it wins.
fn with_invalid_utf8(field: u32) -> Vec<u8> {
    let mut bytes = good().encode_to_vec();
    prost::encoding::encode_key(
        field,
        prost::encoding::WireType::LengthDelimited,
        &mut bytes,
    );
    let bad = [b'o', 0xff, 0xfe, b'k'];
    prost::encoding::encode_varint(bad.len() as u64, &mut bytes);
    bytes.extend_from_slice(&bad);
    bytes
}

#[test]
fn invalid_utf8_in_every_string_field_is_undecodable() {
    // response_id, customer_id, product, region, comment, survey_id.
    for field in [1, 2, 3, 4, 8, 10] {
        let err = decode_bytes(&with_invalid_utf8(field)).unwrap_err();
        assert_eq!(err.reason(), Reason::Undecodable, "field {field}");
    }
    // An attribute key or value (map entry: key = 1, value = 2).
    for entry_field in [1u32, 2] {
        let mut entry = Vec::new();
        prost::encoding::encode_key(
            entry_field,
            prost::encoding::WireType::LengthDelimited,
            &mut entry,
        );
        prost::encoding::encode_varint(2, &mut entry);
        entry.extend_from_slice(&[0xc3, 0x28]);
        let mut bytes = good().encode_to_vec();
        prost::encoding::encode_key(11, prost::encoding::WireType::LengthDelimited, &mut bytes);
        prost::encoding::encode_varint(entry.len() as u64, &mut bytes);
        bytes.extend_from_slice(&entry);
        let err = decode_bytes(&bytes).unwrap_err();
        assert_eq!(
            err.reason(),
            Reason::Undecodable,
            "attribute part {entry_field}"
        );
    }
}

#[test]
fn the_field_hasher_gives_the_streaming_hash_short_and_long() {
    for sizes in [
        vec![3usize, 10, 0, 7],
        vec![100, 300, 200],
        vec![600],
        vec![511, 1],
    ] {
        let mut fast = FieldHasher::default();
        let mut slow = xxhash_rust::xxh3::Xxh3::new();
        for (i, n) in sizes.iter().enumerate() {
            let field: Vec<u8> = (0..*n).map(|j| (i * 31 + j) as u8).collect();
            fast.field(&field);
            slow.update(&(field.len() as u64).to_le_bytes());
            slow.update(&field);
        }
        assert_eq!(fast.digest(), slow.digest(), "{sizes:?}");
    }
}
