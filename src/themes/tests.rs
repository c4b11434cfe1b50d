use proptest::prelude::*;

use super::*;

fn spec(name: &str, patterns: &[&str]) -> ThemeSpec {
    ThemeSpec {
        name: name.into(),
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
    }
}

fn taxonomy(specs: &[ThemeSpec]) -> Taxonomy {
    Taxonomy::new(specs).unwrap()
}

fn names(t: &Taxonomy, comment: &str) -> Vec<String> {
    t.names_of(t.classify(comment))
}

fn words(text: &str) -> Vec<String> {
    let mut w = Words::default();
    w.read(text);
    w.iter().map(String::from).collect()
}

#[test]
fn normalising_lowercases_removes_accents_and_splits_on_punctuation() {
    assert_eq!(
        words("¡Atención PÉSIMA, señor!¿Cuándo?"),
        ["atencion", "pesima", "senor", "cuando"]
    );
    assert_eq!(words("ÇA VA  très-bien"), ["ca", "va", "tres", "bien"]);
    // Compatibility forms fold to their plain letters and digits.
    assert_eq!(words("ﬁne ２４h x²"), ["fine", "24h", "x2"]);
    // A combining mark written apart is removed, not a boundary.
    assert_eq!(words("atencio\u{301}n"), ["atencion"]);
    assert_eq!(words("don't"), ["don", "t"]);
    assert!(words("  ... !!! ").is_empty());
}

#[test]
fn accents_and_case_do_not_matter_on_either_side() {
    let t = taxonomy(&[spec("staff", &["atención"]), spec("price", &["CARO"])]);
    assert_eq!(names(&t, "Muy buena ATENCION"), ["staff"]);
    assert_eq!(names(&t, "atención"), ["staff"]);
    assert_eq!(names(&t, "es carísimo pero caro"), ["price"]);
    assert!(names(&t, "atencional").is_empty());
}

#[test]
fn a_prefix_pattern_matches_every_word_that_starts_with_it() {
    let t = taxonomy(&[spec("waiting_time", &["lent*"])]);
    for c in ["muy lento", "la lentitud", "LENTÍSIMO", "lent"] {
        assert_eq!(names(&t, c), ["waiting_time"], "{c}");
    }
    assert!(names(&t, "violento").is_empty());
    assert!(names(&t, "len").is_empty());
}

#[test]
fn a_phrase_matches_only_its_words_in_order_and_together() {
    let t = taxonomy(&[spec("waiting_time", &["tiempo de espera", "on hold"])]);
    assert_eq!(names(&t, "El tiempo de espera, eterno."), ["waiting_time"]);
    assert_eq!(names(&t, "tiempo-de-espera"), ["waiting_time"]);
    assert!(names(&t, "espera de tiempo").is_empty());
    assert!(names(&t, "tiempo, y de espera").is_empty());
    assert!(names(&t, "tiempo de").is_empty());
    assert_eq!(names(&t, "I was on hold"), ["waiting_time"]);
}

#[test]
fn patterns_match_at_the_start_and_at_the_end_of_a_comment() {
    let t = taxonomy(&[
        spec("billing_errors", &["doble cargo"]),
        spec("app_website", &["app"]),
    ]);
    assert_eq!(names(&t, "doble cargo en mi cuenta"), ["billing_errors"]);
    assert_eq!(names(&t, "me hicieron un doble cargo"), ["billing_errors"]);
    assert_eq!(names(&t, "app"), ["app_website"]);
    assert_eq!(names(&t, "la app"), ["app_website"]);
    assert_eq!(names(&t, "app mala"), ["app_website"]);
}

#[test]
fn a_comment_mentions_several_themes_listed_by_name() {
    let t = taxonomy(&[
        spec("waiting_time", &["lent*"]),
        spec("app_website", &["app"]),
        spec("billing_errors", &["cobr* de mas"]),
    ]);
    assert_eq!(
        names(&t, "La app es lenta y me cobraron de más"),
        ["app_website", "billing_errors", "waiting_time"]
    );
    assert!(names(&t, "").is_empty());
    assert!(names(&t, "todo bien").is_empty());
    let set = t.classify("lento");
    assert_eq!(set.iter().collect::<Vec<_>>(), [2]);
    assert!(set.contains(2) && !set.contains(0) && !set.contains(64));
}

#[test]
fn refusals_name_what_is_wrong() {
    let err = |specs: &[ThemeSpec]| Taxonomy::new(specs).unwrap_err().to_string();
    assert!(err(&[spec("Bad-Name", &["x"])]).contains("`Bad-Name` must be 1 to 32"));
    assert!(err(&[spec("", &["x"])]).contains("1 to 32"));
    assert!(err(&[spec(&"a".repeat(33), &["x"])]).contains("1 to 32"));
    assert!(err(&[spec("a", &["x"]), spec("a", &["y"])]).contains("`a` is listed twice"));
    assert!(err(&[spec("a", &[])]).contains("1 to 64 patterns, has 0"));
    let many: Vec<String> = (0..65).map(|i| format!("w{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert!(err(&[spec("a", &many)]).contains("has 65"));
    assert!(err(&[spec("a", &["?!"])]).contains("has no letters or digits"));
    assert!(err(&[spec("a", &["*"])]).contains("does not end a word"));
    assert!(err(&[spec("a", &["le*nto"])]).contains("inside a word"));
    let specs: Vec<ThemeSpec> = (0..65).map(|i| spec(&format!("t{i}"), &["x"])).collect();
    assert!(err(&specs).contains("at most 64 themes, got 65"));
    let specs: Vec<ThemeSpec> = (0..64).map(|i| spec(&format!("t{i}"), &["x"])).collect();
    assert_eq!(Taxonomy::new(&specs).unwrap().names().len(), 64);
}

#[test]
fn the_shipped_taxonomy_is_valid_and_speaks_spanish_and_english() {
    let specs = default_specs();
    assert!((12..=16).contains(&specs.len()), "{}", specs.len());
    let t = taxonomy(&specs);
    let mut sorted = t.names().to_vec();
    sorted.sort();
    assert_eq!(t.names(), sorted);
    for (comment, theme) in [
        ("Demasiada espera para ser atendido", "waiting_time"),
        ("I waited two hours", "waiting_time"),
        ("El agente fue muy grosero", "staff_attitude"),
        ("Very friendly staff", "staff_attitude"),
        ("No resolvieron mi problema", "resolution"),
        ("Me cobraron dos veces la factura", "billing_errors"),
        ("La aplicación se cae todo el tiempo", "app_website"),
        ("Precio muy caro", "price_fees"),
        ("Nadie contesta el teléfono", "reachability"),
        ("El trámite es muy complicado", "process_complexity"),
        ("It doesn't work", "product_quality"),
        ("Sospecho de un fraude", "trust_security"),
        ("No me avisaron del cambio", "communication"),
        ("El paquete llegó roto", "delivery"),
    ] {
        assert!(names(&t, comment).contains(&theme.to_string()), "{comment}");
    }
}

/// A naive matcher: every pattern at every position.
fn brute_force(specs: &[ThemeSpec], comment: &str) -> Vec<String> {
    let cw = words(comment);
    let mut out: Vec<String> = specs
        .iter()
        .filter(|s| {
            s.patterns.iter().any(|p| {
                let pw = pattern_words(p).unwrap();
                (0..cw.len()).any(|i| {
                    i + pw.len() <= cw.len() && pw.iter().zip(&cw[i..]).all(|(a, b)| a.matches(b))
                })
            })
        })
        .map(|s| s.name.clone())
        .collect();
    out.sort();
    out
}

const VOCABULARY: &[&str] = &[
    "lento",
    "lenta",
    "app",
    "la",
    "de",
    "espera",
    "tiempo",
    "cobro",
    "atención",
    "Caro",
    "x",
];

proptest! {
    #[test]
    fn matching_finds_what_trying_every_pattern_everywhere_finds(
        comment in prop::collection::vec(prop::sample::select(VOCABULARY), 0..12),
        seps in prop::collection::vec(prop::sample::select(&[" ", ", ", "-", "¡"][..]), 12),
        patterns in prop::collection::vec(
            prop::collection::vec(
                (prop::sample::select(VOCABULARY), any::<bool>()),
                1..4,
            ),
            1..8,
        ),
    ) {
        let comment: String = comment
            .iter()
            .zip(&seps)
            .map(|(w, s)| format!("{w}{s}"))
            .collect();
        let specs: Vec<ThemeSpec> = patterns
            .iter()
            .enumerate()
            .map(|(i, words)| {
                let p: Vec<String> = words
                    .iter()
                    .map(|(w, star)| {
                        let w = w.chars().take(if *star { 3 } else { 20 }).collect::<String>();
                        if *star { format!("{w}*") } else { w }
                    })
                    .collect();
                spec(&format!("t{}", i % 5), &[p.join(" ").as_str()])
            })
            .fold(Vec::<ThemeSpec>::new(), |mut acc, s| {
                match acc.iter_mut().find(|a| a.name == s.name) {
                    Some(a) => a.patterns.extend(s.patterns),
                    None => acc.push(s),
                }
                acc
            });
        let t = taxonomy(&specs);
        prop_assert_eq!(names(&t, &comment), brute_force(&specs, &comment));
    }
}

#[test]
fn the_demo_comments_exercise_the_shipped_taxonomy() {
    use crate::generator::{COMPLAINTS, PRAISES, REMARKS};
    let t = taxonomy(&default_specs());
    let mut seen = std::collections::BTreeSet::new();
    for c in COMPLAINTS.iter().chain(&PRAISES).chain(&REMARKS) {
        let themes = names(&t, c);
        assert!(!themes.is_empty() || *c == "Correcto, sin más", "{c}");
        seen.extend(themes);
    }
    // Nearly every theme is mentioned somewhere.
    assert!(seen.len() + 2 >= t.names().len(), "{seen:?}");
    assert_eq!(names(&t, COMPLAINTS[0]), ["app_website"]);
}

#[test]
fn the_latin_table_folds_every_character_as_fold_does() {
    let mut tabled = 0;
    for u in LATIN {
        let Some(c) = char::from_u32(u) else { continue };
        let mut want = Vec::new();
        fold(c, |d| want.push(d));
        if let Some(f) = latin(c) {
            assert_eq!(f.iter().collect::<Vec<_>>(), want, "{c:?}");
            tabled += 1;
        }
    }
    // Every character of the range but a few that fold into more than three.
    assert!(tabled > 240, "{tabled}");
    assert_eq!(
        latin('é').map(|f| f.iter().collect::<Vec<_>>()),
        Some(vec![Some('e')])
    );
    assert!(latin('Ā').is_some() && latin('ƀ').is_none());
}
