//! Unit tests of tiers, actions, transitions and the event's fields.

use super::*;
use crate::pb::{Channel, SurveyResponse};
use crate::schema::{Limits, validate};

const NOW: i64 = 1_763_812_800_000;

fn response(score: u32, value: Option<f64>, comment: &str) -> ValidResponse {
    let msg = SurveyResponse {
        response_id: "resp-7".into(),
        customer_id: "cust-7".into(),
        product: "Cuenta Nómina".into(),
        region: "Sur".into(),
        channel: Channel::Email as i32,
        score: Some(score),
        responded_at: Some(timestamp(NOW - 60_000)),
        comment: comment.into(),
        customer_value: value,
        survey_id: "s-1".into(),
        attributes: [("agent".to_string(), "3".to_string())].into(),
        updated_at: None,
    };
    validate(msg, NOW, &Limits::default()).unwrap()
}

fn policy() -> PromoterPolicy {
    let mut p = PromoterPolicy::default();
    p.validate().unwrap();
    p
}

#[test]
fn default_tiers_follow_customer_value_and_absent_value_is_the_lowest() {
    let p = policy();
    let tier = |v| p.tiers[p.tier(v)].name.as_str();
    assert_eq!(tier(Some(10_000.0)), "strategic");
    assert_eq!(tier(Some(9_999.99)), "high_value");
    assert_eq!(tier(Some(1_000.0)), "high_value");
    assert_eq!(tier(Some(999.0)), "standard");
    assert_eq!(tier(Some(0.0)), "standard");
    assert_eq!(tier(None), "standard");
}

#[test]
fn default_actions_ask_every_promoter_to_refer_and_valuable_commenters_for_a_case_study() {
    let p = policy();
    let actions = |score, value, comment| {
        build(
            &response(score, value, comment),
            &p,
            (false, false),
            Vec::new(),
            NOW,
        )
        .0
        .suggested_actions
    };
    assert_eq!(actions(9, None, "Muy bien"), vec!["referral"]);
    assert_eq!(actions(10, Some(5_000.0), ""), vec!["referral"]);
    assert_eq!(
        actions(10, Some(5_000.0), "   "),
        vec!["referral"],
        "blank is no comment"
    );
    assert_eq!(
        actions(9, Some(50_000.0), "La app es excelente"),
        vec!["referral", "case_study"]
    );
}

#[test]
fn configured_tiers_and_actions_are_read_from_toml_in_any_order() {
    let mut p: PromoterPolicy = toml::from_str(
        r#"
        topic = "promotores"
        [[tiers]]
        name = "base"
        [[tiers]]
        name = "vip"
        min_customer_value = 500
        [[actions]]
        name = "beta_program"
        min_score = 10
        tiers = ["vip"]
        [[actions]]
        name = "testimonial"
        with_comment = true
        "#,
    )
    .unwrap();
    p.validate().unwrap();
    assert!(p.enabled);
    assert_eq!(
        p.tier_names(),
        vec!["vip", "base"],
        "highest threshold first"
    );
    let event = |score, value, comment| {
        build(
            &response(score, value, comment),
            &p,
            (false, false),
            Vec::new(),
            NOW,
        )
        .0
    };
    let e = event(10, Some(600.0), "gracias");
    assert_eq!(
        (e.tier.as_str(), e.suggested_actions.clone()),
        (
            "vip",
            vec!["beta_program".to_string(), "testimonial".to_string()]
        )
    );
    let e = event(9, Some(600.0), "");
    assert_eq!((e.tier.as_str(), e.suggested_actions.len()), ("vip", 0));
    let e = event(10, Some(100.0), "");
    assert_eq!((e.tier.as_str(), e.suggested_actions.len()), ("base", 0));
}

#[test]
fn invalid_policies_are_refused_with_the_reason() {
    let refused = |text: &str| {
        let mut p: PromoterPolicy = toml::from_str(text).unwrap();
        p.validate().unwrap_err()
    };
    assert!(refused("tiers = []").contains("from 1 to"));
    assert!(refused("[[tiers]]\nname = \"Gold\"").contains("label value"));
    assert!(refused("[[tiers]]\nname = \"vip\"\nmin_customer_value = 5").contains("= 0"));
    assert!(
        refused("[[tiers]]\nname = \"a\"\n[[tiers]]\nname = \"b\"")
            .contains("same min_customer_value")
    );
    assert!(
        refused("[[tiers]]\nname = \"a\"\n[[tiers]]\nname = \"a\"\nmin_customer_value = 1")
            .contains("twice")
    );
    assert!(refused("[[tiers]]\nname = \"a\"\nmin_customer_value = -1").contains("≥ 0"));
    assert!(refused("[[actions]]\nname = \"x\"\ntiers = [\"gold\"]").contains("no tier `gold`"));
    assert!(refused("[[actions]]\nname = \"x\"\nmin_score = 8").contains("9 or 10"));
    assert!(refused("[[actions]]\nname = \"x\"\n[[actions]]\nname = \"x\"").contains("twice"));
    let many: String = (0..=MAX_TIERS)
        .map(|i| format!("[[tiers]]\nname = \"t{i}\"\nmin_customer_value = {i}\n"))
        .collect();
    assert!(refused(&many).contains("from 1 to"));
}

#[test]
fn promoters_send_revisions_resend_and_leaving_withdraws() {
    use Category::*;
    assert_eq!(transition(Promoter, None), Some(false));
    assert_eq!(transition(Passive, None), None);
    assert_eq!(transition(Detractor, None), None);
    assert_eq!(transition(Promoter, Some(Promoter)), Some(false));
    assert_eq!(transition(Promoter, Some(Detractor)), Some(false));
    assert_eq!(transition(Passive, Some(Promoter)), Some(true));
    assert_eq!(transition(Detractor, Some(Promoter)), Some(true));
    assert_eq!(transition(Detractor, Some(Passive)), None);
}

#[test]
fn the_event_carries_the_response_and_a_withdrawn_one_no_actions() {
    let p = policy();
    let r = response(10, Some(20_000.0), "Excelente atención");
    let (e, tier) = build(&r, &p, (true, false), Vec::new(), NOW);
    assert_eq!(tier, 0);
    assert_eq!(e.event_id, crate::alerts::alert_id("resp-7"));
    assert_eq!(e.event_id.len(), 32);
    assert_eq!(
        (
            e.response_id.as_str(),
            e.customer_id.as_str(),
            e.product.as_str(),
            e.region.as_str()
        ),
        ("resp-7", "cust-7", "Cuenta Nómina", "Sur")
    );
    assert_eq!((e.channel, e.score), (Channel::Email as i32, 10));
    assert_eq!(e.comment, "Excelente atención");
    assert_eq!(e.responded_at, r.msg.responded_at);
    assert_eq!(
        (e.customer_value, e.survey_id.as_str()),
        (Some(20_000.0), "s-1")
    );
    assert_eq!(e.attributes.get("agent").map(String::as_str), Some("3"));
    assert_eq!(e.tier, "strategic");
    assert_eq!(e.emitted_at.unwrap().seconds, NOW / 1000);
    assert!(e.late && !e.withdrawn && e.updated_at.is_none());
    assert_eq!(key(&e), "cust-7");

    let mut revised = response(6, Some(20_000.0), "Ya no");
    revised.msg.updated_at = Some(timestamp(NOW));
    let (w, _) = build(&revised, &p, (false, true), Vec::new(), NOW);
    assert!(w.withdrawn);
    assert!(w.suggested_actions.is_empty());
    assert_eq!((w.event_id, w.score), (e.event_id, 6));
    assert_eq!(w.updated_at, Some(timestamp(NOW)));

    let mut anonymous = r.clone();
    anonymous.msg.customer_id.clear();
    assert_eq!(
        key(&build(&anonymous, &p, (false, false), Vec::new(), NOW).0),
        "resp-7"
    );
}

#[test]
fn both_formats_round_trip() {
    use crate::alerts::{AlertFormat, encode};
    let (e, _) = build(
        &response(9, None, "ok"),
        &policy(),
        (false, false),
        vec!["staff_attitude".into()],
        NOW,
    );
    let (bytes, _) = encode(&e, AlertFormat::Protobuf);
    assert_eq!(
        <PromoterEvent as prost::Message>::decode(bytes.as_slice()).unwrap(),
        e
    );
    let (json, _) = encode(&e, AlertFormat::Json);
    let text = String::from_utf8(json).unwrap();
    assert!(
        text.contains(r#""eventId""#) && text.contains(r#""suggestedActions":["referral"]"#),
        "{text}"
    );
    assert_eq!(serde_json::from_str::<PromoterEvent>(&text).unwrap(), e);
}
