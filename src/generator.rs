//! Generated survey answers for the demo and for `send --generate`:
//! several products and regions with different score distributions, every
//! channel, detractors with comments (and half the promoters, a third of
//! the passives), a few high-value customers, phone and chat answers with
//! the agent and team who served them (one team clearly worse), email
//! answers arriving hours late, and three malformed events in a hundred
//! for the dead-letter topic. Pure and deterministic: the caller gives the
//! time.

use prost::Message;

use crate::pb::{Channel, SurveyResponse};
use crate::schema::{CHANNELS, timestamp_from_ms};

const PRODUCTS: [(&str, u32); 5] = [
    // (name, how good it is: shifts the score distribution)
    ("Cuenta Corriente", 1),
    ("Tarjeta Oro", 2),
    ("Préstamo Personal", 0),
    ("Seguro Auto", 1),
    ("App Móvil", 2),
];
const REGIONS: [&str; 4] = ["Norte", "Sur", "Centro", "Occidente"];
/// The detractors' comments (public so tests can check they never reach
/// a log). They mention the shipped taxonomy's themes, in Spanish and
/// English; the first is the app's, which the dropping segment's
/// detractors name more often.
pub const COMPLAINTS: [&str; 12] = [
    "La app se cae al transferir",
    "Nadie me devolvió la llamada",
    "Me cobraron una comisión que no me explicaron",
    "Tardaron tres semanas en resolver mi reclamo",
    "El ejecutivo no conocía el producto",
    "Me hicieron repetir mi caso cuatro veces",
    "Esperé 40 minutos en la sucursal",
    "Cobro duplicado en mi tarjeta y nadie responde",
    "El trámite del préstamo es muy complicado",
    "Me trataron de forma grosera en el call center",
    "Tengo un cargo que no reconozco, temo un fraude",
    "The app keeps crashing and nobody calls back",
];

/// What half the promoters say (public for the same reason).
pub const PRAISES: [&str; 5] = [
    "Me resolvieron todo en una llamada",
    "La app es rápida y clara",
    "Mi ejecutiva es muy amable y siempre me ayuda",
    "Excelente atención en sucursal",
    "Very friendly staff and quick answers",
];

/// What a third of the passives say (public for the same reason).
pub const REMARKS: [&str; 4] = [
    "Bien, aunque la espera fue larga",
    "Buen producto, pero la comisión es cara",
    "La página web podría ser más fácil",
    "Correcto, sin más",
];

/// The contact-centre teams of phone and chat answers
/// (`attributes["team"]`), eight agents each (`attributes["agent_id"]`).
pub const TEAMS: [&str; 5] = [
    "Cobranzas",
    "Atención Premium",
    "Soporte Digital",
    "Reclamos",
    "Ventas",
];

/// The team whose customers score two quality steps lower, so the demo's
/// Teams tab has one team clearly worse than the others.
pub const WORSE_TEAM: &str = "Reclamos";

/// The agent and team of an answer given at `t` on `channel`: phone and
/// chat answers only, from the answer's time (no draw of the generator,
/// so the rest of the stream is as before).
fn desk(channel: Channel, t: i64) -> Option<(String, &'static str)> {
    if !matches!(channel, Channel::Phone | Channel::Chat) {
        return None;
    }
    let agent = t.div_euclid(1000).rem_euclid(8 * TEAMS.len() as i64) as usize;
    Some((format!("ag-{agent:02}"), TEAMS[agent % TEAMS.len()]))
}

/// A small deterministic generator (xorshift64*), enough for demo data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Score distributions (0..=10 weights) by product quality: 0 struggling,
/// 1 average, 2 loved.
const SCORE_WEIGHTS: [[u64; 11]; 3] = [
    [4, 2, 3, 4, 5, 8, 10, 12, 14, 18, 20],
    [2, 1, 1, 2, 3, 5, 7, 12, 18, 24, 25],
    [1, 0, 1, 1, 1, 2, 4, 9, 17, 28, 36],
];

fn score(rng: &mut Rng, quality: u32) -> u32 {
    let weights = &SCORE_WEIGHTS[quality.min(2) as usize];
    let mut pick = rng.below(weights.iter().sum());
    for (s, w) in weights.iter().enumerate() {
        if pick < *w {
            return s as u32;
        }
        pick -= w;
    }
    10
}

/// The segment whose NPS drops in the last 24 hours (a release that broke
/// the app in one region), so the demo shows a significant shift.
pub const DROPPING: (&str, &str) = ("App Móvil", "Centro");

/// One generated answer with this id, given at `t`; `recent`: within the
/// last 24 hours.
fn answer(rng: &mut Rng, response_id: String, t: i64, recent: bool) -> SurveyResponse {
    let (product, quality) = PRODUCTS[rng.below(PRODUCTS.len() as u64) as usize];
    let region = REGIONS[rng.below(REGIONS.len() as u64) as usize];
    let channel = CHANNELS[rng.below(CHANNELS.len() as u64) as usize];
    let desk = desk(channel, t);
    // The south had a bad month: one quality step down.
    let quality = if (product, region) == DROPPING && recent {
        0
    } else if region == "Sur" {
        quality.saturating_sub(1)
    } else {
        quality
    };
    let quality = match &desk {
        Some((_, team)) if *team == WORSE_TEAM => quality.saturating_sub(2),
        _ => quality,
    };
    let score = score(rng, quality);
    let customer = rng.below(50_000);
    SurveyResponse {
        response_id,
        customer_id: format!("cli-{customer:05}"),
        product: product.into(),
        region: region.into(),
        channel: channel as i32,
        score: Some(score),
        responded_at: Some(timestamp_from_ms(t)),
        comment: if score <= 6 {
            let i = rng.below(COMPLAINTS.len() as u64) as usize;
            // The broken release: half its detractors name the app.
            let i = if (product, region) == DROPPING && recent && i % 2 == 0 {
                0
            } else {
                i
            };
            COMPLAINTS[i].into()
        } else if (7..=8).contains(&score) && customer % 3 == 0 {
            REMARKS[(customer / 3) as usize % REMARKS.len()].into()
        } else if score >= 9 && customer % 2 == 0 {
            // From the customer already drawn: the rest of the stream is
            // as before.
            PRAISES[(customer / 2) as usize % PRAISES.len()].into()
        } else {
            String::new()
        },
        // A few high-value customers weigh much more.
        customer_value: Some(if rng.below(20) == 0 {
            5_000.0 + rng.below(50_000) as f64
        } else {
            50.0 + rng.below(2_000) as f64
        }),
        survey_id: "nps-relacional-2026".into(),
        attributes: desk
            .map(|(agent, team)| {
                [("agent_id", agent), ("team", team.to_string())]
                    .map(|(k, v)| (k.to_string(), v))
                    .into()
            })
            .unwrap_or_default(),
        updated_at: None,
    }
}

/// When an answer given around `now` arrives stamped: email answers come
/// hours later than the others.
fn live_time(rng: &mut Rng, now_ms: i64) -> i64 {
    now_ms
        - rng.below(120_000) as i64
        - if rng.below(6) == 0 {
            rng.below(6 * 3_600_000) as i64
        } else {
            0
        }
}

/// The bytes to produce for an answer given at `t`: three in a hundred
/// are malformed.
fn payload(rng: &mut Rng, response_id: String, t: i64, recent: bool) -> Vec<u8> {
    let mut msg = answer(rng, response_id, t, recent);
    match rng.below(100) {
        0 => msg.score = None,
        1 => msg.channel = 42,
        2 => return b"\x00\x00\x01".to_vec(),
        _ => {}
    }
    msg.encode_to_vec()
}

/// A stream of generated answers: a month of history, then live ones.
pub struct Generator {
    rng: Rng,
    id_prefix: String,
    n: u64,
}

impl Generator {
    /// Response ids are `{id_prefix}-{n:010}`: a producer that may run
    /// again must use a new prefix, or its answers are duplicates.
    pub fn new(seed: u64, id_prefix: impl Into<String>) -> Generator {
        Generator {
            rng: Rng(seed | 1),
            id_prefix: id_prefix.into(),
            n: 0,
        }
    }

    /// (key, payload) of an answer given at some point of the 30 days
    /// before `now_ms`.
    pub fn history(&mut self, now_ms: i64) -> (String, Vec<u8>) {
        let t = now_ms - self.rng.below(30 * 86_400_000) as i64;
        self.at(t, now_ms)
    }

    /// (key, payload) of an answer given around `now_ms`.
    pub fn live(&mut self, now_ms: i64) -> (String, Vec<u8>) {
        let t = live_time(&mut self.rng, now_ms);
        self.at(t, now_ms)
    }

    /// (key, payload): keyed by response_id, like `send` of a file.
    fn at(&mut self, t: i64, now_ms: i64) -> (String, Vec<u8>) {
        self.n += 1;
        let id = format!("{}-{:010}", self.id_prefix, self.n);
        let bytes = payload(&mut self.rng, id.clone(), t, t > now_ms - 86_400_000);
        (id, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Limits, decode_and_validate};

    #[test]
    fn answers_are_mostly_valid_with_a_few_malformed() {
        let mut g = Generator::new(7, "t");
        let now = 1_700_000_000_000;
        let mut bad = 0;
        let mut keys = std::collections::HashSet::new();
        for i in 0..10_000 {
            let (k, bytes) = if i % 2 == 0 {
                g.history(now)
            } else {
                g.live(now)
            };
            assert!(keys.insert(k));
            if decode_and_validate(Some(&bytes), std::iter::empty(), now, &Limits::default())
                .is_err()
            {
                bad += 1;
            }
        }
        // three in a hundred are malformed on purpose
        assert!((150..=450).contains(&bad), "{bad} malformed of 10000");
    }

    #[test]
    fn ids_carry_the_prefix_and_are_the_key() {
        let now = 1_700_000_000_000;
        let (k, bytes) = Generator::new(7, "run-a").live(now);
        assert_eq!(k, "run-a-0000000001");
        // seed 7 gives a valid first answer; its id is the key
        let msg = crate::pb::SurveyResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(msg.response_id, k);
        let (k2, _) = Generator::new(7, "run-b").live(now);
        assert_ne!(k, k2, "another prefix, other ids");
    }

    /// NPS per team: the worse team stands far below every other.
    #[test]
    fn phone_and_chat_answers_name_their_team_and_one_team_is_worse() {
        let now = 1_700_000_000_000;
        let mut g = Generator::new(11, "t");
        let mut tally: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
        let mut agents = std::collections::BTreeSet::new();
        for _ in 0..100_000 {
            let (_, bytes) = g.history(now);
            let Ok(v) =
                decode_and_validate(Some(&bytes), std::iter::empty(), now, &Limits::default())
            else {
                continue;
            };
            let staffed = matches!(v.channel, Channel::Phone | Channel::Chat);
            assert_eq!(v.msg.attributes.contains_key("team"), staffed);
            let Some(team) = v.msg.attributes.get("team") else {
                continue;
            };
            agents.insert(v.msg.attributes["agent_id"].clone());
            let e = tally.entry(team.clone()).or_default();
            e.0 += i64::from(v.score >= 9) - i64::from(v.score <= 6);
            e.1 += 1;
        }
        assert_eq!(agents.len(), 40);
        let nps = |(net, n): (i64, i64)| 100.0 * net as f64 / n as f64;
        let worse = nps(tally[WORSE_TEAM]);
        for (team, t) in &tally {
            assert!(t.1 > 5_000, "{team}: {} answers", t.1);
            if team != WORSE_TEAM {
                assert!(
                    nps(*t) - worse > 20.0,
                    "{team} {:.1} vs {worse:.1}",
                    nps(*t)
                );
            }
        }
    }

    /// NPS of the dropping segment and of the others, recent and older.
    #[test]
    fn one_segment_drops_in_the_last_24_hours_and_no_other() {
        let now = 1_700_000_000_000;
        let mut g = Generator::new(11, "t");
        // (promoters − detractors, n) for [dropping, others] × [older, recent]
        let mut tally = [[(0i64, 0i64); 2]; 2];
        for _ in 0..200_000 {
            let (_, bytes) = g.history(now);
            let Ok(v) =
                decode_and_validate(Some(&bytes), std::iter::empty(), now, &Limits::default())
            else {
                continue;
            };
            let seg = usize::from((v.msg.product.as_str(), v.msg.region.as_str()) != DROPPING);
            let recent = usize::from(v.responded_at_ms > now - 86_400_000);
            let s = v.score as i64;
            let e = &mut tally[seg][recent];
            e.0 += i64::from(s >= 9) - i64::from(s <= 6);
            e.1 += 1;
        }
        let nps = |(net, n): (i64, i64)| 100.0 * net as f64 / n as f64;
        let (older, recent) = (nps(tally[0][0]), nps(tally[0][1]));
        assert!(
            older - recent > 40.0,
            "dropping segment: {older:.1} then {recent:.1}"
        );
        let (older, recent) = (nps(tally[1][0]), nps(tally[1][1]));
        assert!(
            (older - recent).abs() < 5.0,
            "others: {older:.1} then {recent:.1}"
        );
    }
}
