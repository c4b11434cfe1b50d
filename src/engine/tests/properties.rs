//! Properties against a brute-force model: the windows equal a count of
//! what was placed, through revisions, sweeps, partition drops and
//! snapshots.

use super::*;

#[derive(Debug, Clone)]
pub(crate) struct Ev {
    pub(crate) partition: i32,
    id: u8,
    product: u8,
    region: u8,
    score: u32,
    /// Event time relative to the clock at arrival (negative = past).
    offset_ms: i64,
    weight: Option<u16>,
    /// How far the clock moves before this event.
    pub(crate) step_ms: i64,
    /// A later version of its response (updated_at, minutes after T0).
    updated: Option<u8>,
    /// The same content as this id's last event (a duplicate, or a stale
    /// or revived version).
    again: bool,
    /// The themes its comment mentions (of three), and whether it has a
    /// comment (always, with a theme).
    themes: (u8, bool),
    /// Its `team` attribute: `TEAMS[i]`.
    team: u8,
}

/// The `team` attributes the property tests give (more than `MAX_TEAMS`
/// real ones; none; one too long; the reserved names).
const TEAMS: [Option<&str>; 9] = [
    Some("t0"),
    Some("t1"),
    Some("t2"),
    Some("t3"),
    Some("t4"),
    None,
    Some("team-name-well-over-sixty-four-bytes-long-so-that-it-is-refused-as-a-value"),
    Some("other"),
    Some(""),
];

/// Values the `team` breakdown admits before `other`.
const MAX_TEAMS: usize = 3;

pub(crate) fn ev() -> impl Strategy<Value = Ev> {
    (
        0..3i32,
        0..60u8,
        0..4u8,
        0..3u8,
        0..=10u32,
        prop_oneof![
            4 => -2 * HOUR..5 * MIN,
            3 => -40 * DAY..0i64,
        ],
        proptest::option::of(0..5000u16),
        prop_oneof![3 => 0..5 * MIN, 1 => 0..3 * DAY],
        proptest::option::of(0..50u8),
        proptest::bool::weighted(0.2),
        (0..8u8, any::<bool>()),
        0..TEAMS.len() as u8,
    )
        .prop_map(
            |(
                partition,
                id,
                product,
                region,
                score,
                offset_ms,
                weight,
                step_ms,
                updated,
                again,
                themes,
                team,
            )| Ev {
                partition,
                id,
                product,
                region,
                score,
                offset_ms,
                weight,
                step_ms,
                updated,
                again,
                themes,
                team,
            },
        )
}

/// The theme names the property tests count.
pub(crate) fn theme_names() -> Vec<String> {
    ["billing", "staff", "waiting"].map(String::from).to_vec()
}

/// The breakdowns the property tests count: `team`, of `TEAMS`, with
/// at most `max_values` of them.
fn teams(max_values: usize) -> Vec<BreakdownSpec> {
    vec![BreakdownSpec {
        label: "team".into(),
        max_values,
    }]
}

/// An engine counting `theme_names()` and `teams(MAX_TEAMS)`.
fn themed(cfg: &EngineConfig) -> Engine {
    themed_with(cfg, MAX_TEAMS)
}

/// An engine counting `theme_names()` and `teams(max_teams)`.
fn themed_with(cfg: &EngineConfig, max_teams: usize) -> Engine {
    let mut e = Engine::new(cfg).unwrap();
    e.set_themes(&theme_names());
    e.set_breakdowns(&teams(max_teams));
    e
}

pub(crate) fn windows() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        Just(vec!["1h", "24h", "7d", "30d"]),
        Just(vec!["90m", "1d"]),
        Just(vec!["10m", "7h", "3d"]),
    ]
    .prop_map(|v| v.into_iter().map(String::from).collect())
}

/// Buckets per window: the default, one bitmap word with room to spare,
/// and rings that span several words.
pub(crate) fn buckets() -> impl Strategy<Value = u32> {
    prop_oneof![3 => Just(48u32), 1 => Just(7), 1 => Just(64), 1 => Just(150)]
}

struct Placed {
    partition: i32,
    product: String,
    region: String,
    category: Category,
    t: i64,
    weight: f64,
    /// Theme bits, and whether it has a comment.
    themes: (u8, bool),
    /// The team value it is counted under.
    team: String,
}

/// What the model remembers of a response: first sight, its latest
/// version's updated_at and content, and where that version was placed.
struct Known {
    first_seen: i64,
    updated: Option<i64>,
    content: u32,
    placed: usize,
}

/// One event as the engine gets it (and its content, the model's key).
pub(crate) fn observe<'a>(
    ev: &Ev,
    last: &mut HashMap<u8, Ev>,
    now: i64,
    names: &'a mut (String, String, String, Option<&'static str>),
) -> (Observation<'a>, Ev) {
    let ev = match last.get(&ev.id) {
        Some(prev) if ev.again => Ev {
            partition: ev.partition,
            step_ms: ev.step_ms,
            updated: ev.updated,
            again: true,
            ..prev.clone()
        },
        _ => ev.clone(),
    };
    last.insert(ev.id, ev.clone());
    *names = (
        format!("resp-{}", ev.id),
        format!("p{}", ev.product),
        format!("r{}", ev.region),
        TEAMS[usize::from(ev.team)],
    );
    let weight = ev.weight.map_or(1.0, |w| f64::from(w) / 7.0);
    let mut o = obs(
        &names.0,
        &names.1,
        &names.2,
        ev.score,
        now + ev.offset_ms,
        weight,
    );
    // Content independent of the clock: the same fields again are a
    // duplicate, whenever they come. The comment (its themes) is part of it.
    let (themes, commented) = ev.themes;
    let commented = commented || themes != 0;
    let product_and_comment = format!("{}|{themes}|{commented}|{:?}", names.1, names.3);
    o.content = content(
        &product_and_comment,
        &names.2,
        ev.score,
        ev.offset_ms,
        weight,
    );
    o.themes = crate::themes::ThemeSet(u64::from(themes));
    o.comment = if commented { 1 + themes } else { 0 };
    o.updated_at_ms = ev.updated.map(|u| T0 + i64::from(u) * MIN);
    o.breakdowns[0] = names.3;
    (o, ev)
}

/// The windows as docs/windows.md defines them, computed here from the
/// configuration's own words rather than by the engine: a window of
/// length W with B buckets has buckets W/B wide (ms, rounded down) and at
/// `now` holds an event time `t` when `t`'s bucket is one of the B newest
/// up to `now`'s.
struct Model {
    lengths: Vec<i64>,
    buckets: i64,
}

impl Model {
    fn of(cfg: &EngineConfig) -> Model {
        let lengths = cfg
            .windows
            .iter()
            .map(|w| {
                let (n, unit) = w.split_at(w.len() - 1);
                let n: i64 = n.parse().unwrap();
                n * match unit {
                    "m" => MIN,
                    "h" => HOUR,
                    "d" => DAY,
                    other => panic!("unit {other}"),
                }
            })
            .collect();
        Model {
            lengths,
            buckets: i64::from(cfg.buckets_per_window),
        }
    }

    fn holds(&self, w: usize, t: i64, now: i64) -> bool {
        let width = self.lengths[w] / self.buckets;
        t.div_euclid(width) > now.div_euclid(width) - self.buckets
    }

    fn late(&self, t: i64, now: i64) -> bool {
        !(0..self.lengths.len()).any(|w| self.holds(w, t, now))
    }
}

/// Runs the events through the engine and, independently, keeps what a
/// brute-force model says is counted: the latest version of each response
/// first seen within the horizon (earlier versions are taken out), every
/// response forgotten past it as it was.
fn run(
    e: &mut Engine,
    model: &Model,
    events: &[Ev],
    start: i64,
    horizon: i64,
) -> (i64, Vec<Placed>, Vec<Outcome>) {
    let mut now = start;
    let mut seen: HashMap<(i32, u8), Known> = HashMap::new();
    let mut last: HashMap<u8, Ev> = HashMap::new();
    let mut placed: Vec<Option<Placed>> = Vec::new();
    let mut outcomes = Vec::new();
    for ev in events {
        now += ev.step_ms;
        let mut names = Default::default();
        let (o, ev) = observe(ev, &mut last, now, &mut names);
        let (category, weight, content, updated) =
            (o.category, o.weight, o.content, o.updated_at_ms);
        let themes = (o.themes.0 as u8, o.comment != 0);
        let team = value_of(o.breakdowns[0]).to_string();
        let admitted = e.breakdown_value_counts()[0];
        let out = e.record(ev.partition, &o, now);
        // A new value is counted as itself while the table has room, and
        // under `other` once `MAX_TEAMS` are admitted.
        let team = match out {
            Outcome::Counted(c, _) | Outcome::Revised { counted: c, .. } => {
                let over = c.breakdowns_overflowed & 1 == 1;
                let max = e.breakdowns.tables[0].max_keys();
                assert!(!over || admitted == max, "{team} overflowed at {admitted}");
                if over { "other".to_string() } else { team }
            }
            _ => team,
        };
        let t = (now + ev.offset_ms).min(now);
        let late = model.late(t, now);
        let key = (ev.partition, ev.id);
        let known = seen.get(&key).filter(|k| k.first_seen > now - horizon);
        let place = Placed {
            partition: ev.partition,
            product: names.1.clone(),
            region: names.2.clone(),
            category,
            t,
            weight,
            themes,
            team,
        };
        match (known, out) {
            (Some(k), Outcome::Duplicate) => assert_eq!(k.content, content),
            (Some(k), Outcome::Stale) => assert!(k.content != content && updated < k.updated),
            (Some(k), Outcome::Revised { counted, .. }) => {
                assert!(k.content != content && updated >= k.updated, "{ev:?}");
                assert_eq!(counted.late, late);
                let old = k.placed;
                placed[old] = None;
                placed.push(Some(place));
                let k = seen.get_mut(&key).unwrap();
                (k.updated, k.content, k.placed) = (updated, content, placed.len() - 1);
            }
            (None, Outcome::RevisionAfterHorizon) => assert!(updated.is_some()),
            (None, Outcome::Counted(counted, _)) => {
                assert!(updated.is_none(), "{ev:?}");
                assert_eq!(counted.late, late);
                placed.push(Some(place));
                seen.insert(
                    key,
                    Known {
                        first_seen: now,
                        updated,
                        content,
                        placed: placed.len() - 1,
                    },
                );
            }
            (k, out) => panic!(
                "model {:?} vs engine {out:?} for {ev:?}",
                k.map(|k| (k.content, k.updated))
            ),
        }
        outcomes.push(out);
        if ev.step_ms > DAY {
            e.sweep(now);
        }
    }
    (now, placed.into_iter().flatten().collect(), outcomes)
}

fn brute_force(
    model: &Model,
    placed: &[Placed],
    now: i64,
) -> BTreeMap<(String, String), Vec<WindowStats>> {
    let mut out: BTreeMap<(String, String), Vec<WindowStats>> = BTreeMap::new();
    for p in placed {
        let windows = out
            .entry((p.product.clone(), p.region.clone()))
            .or_insert_with(|| vec![WindowStats::default(); model.lengths.len()]);
        for (w, stats) in windows.iter_mut().enumerate() {
            if model.holds(w, p.t, now) {
                stats.add(p.category, p.weight);
            }
        }
    }
    out.retain(|_, w| w.iter().any(|s| s.responses() > 0));
    out
}

/// Per team value, per window: what the placed answers count.
fn brute_force_teams(
    model: &Model,
    placed: &[Placed],
    now: i64,
) -> BTreeMap<(String, String), Vec<WindowStats>> {
    let by_team: Vec<Placed> = placed
        .iter()
        .map(|p| Placed {
            product: "team".into(),
            region: p.team.clone(),
            team: p.team.clone(),
            ..*p
        })
        .collect();
    brute_force(model, &by_team, now)
}

/// The engine's `team` breakdown, as `brute_force_teams` keeps it.
fn teams_by_name(e: &Engine, now: i64) -> BTreeMap<(String, String), Vec<WindowStats>> {
    e.breakdown_stats(0, now)
        .into_iter()
        .map(|v| (("team".to_string(), v.value.to_string()), v.windows))
        .collect()
}

/// Per (product, region, row), per window: promoters, passives, detractors.
type ThemeCounts = BTreeMap<(String, String, String), Vec<(u64, u64, u64)>>;

/// Per (product, region, row): the answers placed with that theme (rows
/// by name) or with a comment (row `*`), counted in each window as the
/// engine's rows count them.
fn brute_force_themes(model: &Model, placed: &[Placed], now: i64) -> ThemeCounts {
    let names = theme_names();
    let mut out: ThemeCounts = BTreeMap::new();
    for p in placed {
        let (bits, commented) = p.themes;
        let rows = names
            .iter()
            .enumerate()
            .filter(|(i, _)| bits >> i & 1 == 1)
            .map(|(_, n)| n.clone())
            .chain(commented.then(|| "*".to_string()));
        for row in rows {
            let windows = out
                .entry((p.product.clone(), p.region.clone(), row))
                .or_insert_with(|| vec![(0, 0, 0); model.lengths.len()]);
            for (w, c) in windows.iter_mut().enumerate() {
                if model.holds(w, p.t, now) {
                    match p.category {
                        Category::Promoter => c.0 += 1,
                        Category::Passive => c.1 += 1,
                        Category::Detractor => c.2 += 1,
                    }
                }
            }
        }
    }
    out.retain(|_, w| w.iter().any(|c| *c != (0, 0, 0)));
    out
}

/// The engine's theme rows by name, as `brute_force_themes` keeps them.
fn themes_by_name(e: &mut Engine, now: i64) -> ThemeCounts {
    let names = theme_names();
    let stats = e.theme_stats(now);
    stats
        .into_iter()
        .map(|s| {
            let (p, r) = e.segment_name(s.key).unwrap();
            let row = match s.row {
                COMMENTED => "*".to_string(),
                i => names[usize::from(i)].clone(),
            };
            let counts = s
                .windows
                .iter()
                .map(|w| (w.promoters, w.passives, w.detractors))
                .collect();
            ((p.to_string(), r.to_string(), row), counts)
        })
        .collect()
}

fn assert_same(
    got: &BTreeMap<(String, String), Vec<WindowStats>>,
    want: &BTreeMap<(String, String), Vec<WindowStats>>,
) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, g) in got {
        for (w, (a, b)) in g.iter().zip(&want[k]).enumerate() {
            assert_eq!(
                (a.promoters, a.passives, a.detractors),
                (b.promoters, b.passives, b.detractors),
                "{k:?} window {w}"
            );
            let tol = 1e-5 * b.weight_total.max(1.0);
            assert!(
                (a.weight_total - b.weight_total).abs() <= tol,
                "{k:?} w{w}: {a:?} vs {b:?}"
            );
            assert!(
                (a.weight_net - b.weight_net).abs() <= tol,
                "{k:?} w{w}: {a:?} vs {b:?}"
            );
        }
    }
}

fn names(e: &Engine, outs: &[Outcome]) -> Vec<Option<(String, String, Category, bool)>> {
    outs.iter()
        .map(|o| match *o {
            Outcome::Counted(c, _) | Outcome::Revised { counted: c, .. } => {
                let (p, r) = e.segment_name(c.key).unwrap_or(("?", "?"));
                Some((p.to_string(), r.to_string(), c.category, c.late))
            }
            _ => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn window_counts_equal_brute_force(
        windows in windows(),
        buckets_per_window in buckets(),
        events in proptest::collection::vec(ev(), 1..400),
        read_after in 0..10 * DAY,
    ) {
        let cfg = EngineConfig { windows, buckets_per_window, ..EngineConfig::default() };
        let mut e = themed(&cfg);
        let model = Model::of(&cfg);
        let (now, placed, _) = run(&mut e, &model, &events, T0, 24 * HOUR);
        for read_at in [now, now + read_after] {
            assert_same(&by_name(&e, read_at), &brute_force(&model, &placed, read_at));
            assert_same(&teams_by_name(&e, read_at), &brute_force_teams(&model, &placed, read_at));
            prop_assert_eq!(themes_by_name(&mut e, read_at), brute_force_themes(&model, &placed, read_at));
        }
        e.sweep(now + read_after);
        assert_same(&by_name(&e, now + read_after), &brute_force(&model, &placed, now + read_after));
        assert_same(
            &teams_by_name(&e, now + read_after),
            &brute_force_teams(&model, &placed, now + read_after),
        );
        prop_assert_eq!(
            themes_by_name(&mut e, now + read_after),
            brute_force_themes(&model, &placed, now + read_after)
        );
    }

    #[test]
    fn kept_theme_rows_equal_the_rows_summed_again_from_the_rings(
        windows in windows(),
        events in proptest::collection::vec(ev(), 1..300),
        every in 1usize..20,
    ) {
        let cfg = EngineConfig { windows, ..EngineConfig::default() };
        let mut e = themed(&cfg);
        let mut last: HashMap<u8, Ev> = HashMap::new();
        let mut now = T0;
        for (i, ev) in events.iter().enumerate() {
            now += ev.step_ms;
            let mut names = Default::default();
            let (o, ev) = observe(ev, &mut last, now, &mut names);
            e.record(ev.partition, &o, now);
            if ev.step_ms > DAY {
                e.sweep(now);
            }
            if i % every == 0 {
                if i % (3 * every) == 0 {
                    e.drop_partition(ev.partition);
                }
                let kept = e.theme_stats(now);
                let mut fresh = e.clone();
                fresh.theme_totals.invalidate(u64::MAX);
                prop_assert_eq!(kept, fresh.theme_stats(now));
            }
        }
    }

    #[test]
    fn dropping_a_partition_removes_exactly_its_share(
        events in proptest::collection::vec(ev(), 1..300),
        drop in 0..3i32,
    ) {
        let mut e = themed(&EngineConfig::default());
        let model = Model::of(&EngineConfig::default());
        let (now, placed, _) = run(&mut e, &model, &events, T0, 24 * HOUR);
        e.drop_partition(drop);
        let rest: Vec<Placed> = placed.into_iter().filter(|p| p.partition != drop).collect();
        assert_same(&by_name(&e, now), &brute_force(&model, &rest, now));
        assert_same(&teams_by_name(&e, now), &brute_force_teams(&model, &rest, now));
        prop_assert_eq!(themes_by_name(&mut e, now), brute_force_themes(&model, &rest, now));
    }

    #[test]
    fn state_records_hold_exactly_the_partition_snapshot(
        windows in windows(),
        events in proptest::collection::vec(ev(), 0..300),
        offset in 0..i64::MAX,
    ) {
        let cfg = EngineConfig { windows, ..EngineConfig::default() };
        let mut e = themed(&cfg);
        run(&mut e, &Model::of(&cfg), &events, T0, 24 * HOUR);
        for p in 0..4 {
            let bytes = e.partition_state_record(p, "survey-responses", offset);
            let mut part = e.partition_snapshot(p).unwrap_or_default();
            part.partition = p;
            part.source_topic = "survey-responses".into();
            part.next_offset = offset;
            let want = crate::pb::EngineSnapshot {
                windows: e.snapshot().windows,
                now_ms: e.now_ms(),
                partitions: vec![part],
            };
            prop_assert_eq!(snapshot::decode(&bytes).unwrap(), want);
            // The dedup entries written straight into the record are the
            // message's bytes.
            if let Some(part) = e.partitions.get(&p) {
                let mut direct = Vec::new();
                e.encode_dedup(part, 3, &mut direct);
                let mut tree = Vec::new();
                prost::encoding::message::encode(3, &e.dedup_proto(part), &mut tree);
                prop_assert_eq!(direct, tree);
            }
        }
    }

    #[test]
    fn snapshot_restore_continue_equals_never_stopping(
        windows in windows(),
        buckets_per_window in buckets(),
        events in proptest::collection::vec(ev(), 1..300),
        split in 0usize..300,
    ) {
        let cfg = EngineConfig { windows, buckets_per_window, ..EngineConfig::default() };
        let split = split.min(events.len());
        // Every team admitted: which values a full table folds into
        // `other` after a restore is not kept (docs/breakdowns.md).
        let mut straight = themed_with(&cfg, TEAMS.len());
        let model = Model::of(&cfg);
        let (end, _, all) = run(&mut straight, &model, &events, T0, 24 * HOUR);

        let mut first = themed_with(&cfg, TEAMS.len());
        let (mid, _, head) = run(&mut first, &model, &events[..split], T0, 24 * HOUR);
        let bytes = snapshot::encode(&first.snapshot());
        let snap = snapshot::decode(&bytes).unwrap();
        let mut resumed = Engine::new(&cfg).unwrap();
        resumed.set_themes(&theme_names());
        resumed.set_breakdowns(&teams(TEAMS.len()));
        let resumed = &mut resumed;
        resumed.check_layout(&snap).unwrap();
        resumed.tick(snap.now_ms);
        for p in &snap.partitions {
            resumed.restore_partition(p).unwrap();
        }
        let mut tail_outs = Vec::new();
        let mut now = mid;
        // Same calls as `run`, on the restored engine (the head's last
        // contents first, for events that repeat them).
        let mut last: HashMap<u8, Ev> = HashMap::new();
        for ev in &events[..split] {
            let mut names = Default::default();
            observe(ev, &mut last, 0, &mut names);
        }
        for ev in &events[split..] {
            now += ev.step_ms;
            let mut names = Default::default();
            let (o, ev) = observe(ev, &mut last, now, &mut names);
            tail_outs.push(resumed.record(ev.partition, &o, now));
            if ev.step_ms > DAY {
                resumed.sweep(now);
            }
        }
        prop_assert_eq!(now, end);
        let mut got = names(&first, &head);
        got.extend(names(resumed, &tail_outs));
        // Names of the head's outcomes are read from `first`, whose table
        // may have swept them since; compare only what both can name.
        let want = names(&straight, &all);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            prop_assert_eq!(g.is_none(), w.is_none(), "outcome {} dup-ness", i);
        }
        prop_assert_eq!(by_name(resumed, end), by_name(&straight, end));
        prop_assert_eq!(by_name(resumed, end + 3 * DAY), by_name(&straight, end + 3 * DAY));
        prop_assert_eq!(teams_by_name(resumed, end), teams_by_name(&straight, end));
        prop_assert_eq!(
            teams_by_name(resumed, end + 3 * DAY),
            teams_by_name(&straight, end + 3 * DAY)
        );
        prop_assert_eq!(themes_by_name(resumed, end), themes_by_name(&mut straight, end));
        prop_assert_eq!(
            themes_by_name(resumed, end + 3 * DAY),
            themes_by_name(&mut straight, end + 3 * DAY)
        );
    }
}
