use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use std::time::Duration;

fn config() -> CaseConfig {
    CaseConfig {
        sla: Sla {
            critical: Duration::from_millis(20),
            high: Duration::from_millis(50),
            normal: Duration::from_millis(100),
        },
        repeat_horizon: Duration::from_millis(1000),
        orphan_grace: Duration::from_millis(30),
        ..CaseConfig::default()
    }
}

fn alert(n: u128, customer: &str, priority: AlertPriority, at: i64) -> AlertIn<'_> {
    AlertIn {
        alert: n,
        customer_id: customer,
        product: "p",
        region: "r",
        priority,
        emitted_at_ms: at,
        partition: 0,
        offset: n as i64,
    }
}

fn ev(n: u128, state: CaseState, at: i64) -> EventIn {
    EventIn {
        alert: n,
        state,
        occurred_at_ms: at,
        outcome: CaseOutcome::Unspecified,
        root_cause: RootCause::NONE,
    }
}

fn totals<O>(t: &Tracker<O>) -> Counts {
    t.counts().fold(Counts::default(), |a, (_, _, c)| Counts {
        open: a.open + c.open,
        overdue: a.overdue + c.overdue,
    })
}

#[test]
fn an_uncontacted_case_escalates_at_its_sla_then_at_twice_it() {
    let mut t = Tracker::<()>::new(config());
    assert!(matches!(
        t.open(&alert(1, "c", AlertPriority::Normal, 1000)),
        Opened::New { repeat: None, .. }
    ));
    assert!(t.due(1099).is_empty());
    let e = t.due(1100);
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].level, e[0].reason),
        (1, EscalationReason::ContactSlaMissed)
    );
    assert_eq!((e[0].opened_at_ms, e[0].due_at_ms), (1000, 1100));
    assert_eq!(
        totals(&t),
        Counts {
            open: 1,
            overdue: 1
        }
    );
    assert!(t.due(1150).is_empty(), "once per level");
    let e = t.due(1200);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].level, 2);
    assert!(t.due(10_000).is_empty());
}

#[test]
fn contact_in_time_meets_the_sla_and_stops_escalations() {
    let mut t = Tracker::<()>::new(config());
    t.open(&alert(1, "c", AlertPriority::Critical, 0));
    // Acknowledging does not stop the clock.
    let a = t.event(0, &ev(1, CaseState::Acknowledged, 5), (), 5);
    assert!(matches!(
        a,
        Applied::Moved {
            first_contact: None,
            ..
        }
    ));
    let a = t.event(0, &ev(1, CaseState::Contacted, 20), (), 21);
    assert!(matches!(
        a,
        Applied::Moved {
            first_contact: Some((20, true)),
            closed: None,
            ..
        }
    ));
    assert!(t.due(1000).is_empty());
    let mut resolved = ev(1, CaseState::Resolved, 30);
    resolved.outcome = CaseOutcome::Recovered;
    let a = t.event(0, &resolved, (), 31);
    assert!(matches!(
        a,
        Applied::Moved {
            first_contact: None,
            closed: Some((ClosedAs::Recovered, true)),
            ..
        }
    ));
    assert_eq!(totals(&t), Counts::default());
}

#[test]
fn a_withdrawn_alert_closes_its_case_and_a_detractor_again_reopens_it() {
    let mut t = Tracker::<()>::new(config());
    t.open(&alert(1, "c", AlertPriority::High, 0));
    // Past due: escalated and overdue.
    assert_eq!(t.due(60).len(), 1);
    assert_eq!(totals(&t).overdue, 1);
    // Revised to a 9: closed as withdrawn, not contacted, no level 2.
    let a = t.withdraw(1, 70);
    assert!(
        matches!(
            a,
            Some(Applied::Moved {
                first_contact: None,
                closed: Some((ClosedAs::Withdrawn, false)),
                ..
            })
        ),
        "{a:?}"
    );
    assert_eq!(totals(&t), Counts::default());
    assert!(t.due(10_000).is_empty());
    assert!(t.withdraw(1, 80).is_none(), "already closed");
    // A detractor again: open, and its level-2 check is back.
    assert!(t.reinstate(1, 90).is_some());
    assert_eq!(totals(&t).open, 1);
    let later: Vec<_> = t.due(10_000).iter().map(|e| e.level).collect();
    assert_eq!(later, vec![2]);
    // Withdrawn before its due time: its SLA is not missed.
    t.open(&alert(2, "d", AlertPriority::High, 20_000));
    assert!(matches!(
        t.withdraw(2, 20_010),
        Some(Applied::Moved {
            closed: Some((ClosedAs::Withdrawn, true)),
            ..
        })
    ));
}

#[test]
fn late_contact_after_the_escalation_closes_overdue() {
    let mut t = Tracker::<()>::new(config());
    t.open(&alert(1, "c", AlertPriority::High, 0));
    assert_eq!(t.due(60).len(), 1);
    assert_eq!(totals(&t).overdue, 1);
    let a = t.event(0, &ev(1, CaseState::Unreachable, 70), (), 70);
    assert!(matches!(
        a,
        Applied::Moved {
            first_contact: Some((70, false)),
            closed: Some((ClosedAs::Unreachable, false)),
            ..
        }
    ));
    assert_eq!(totals(&t), Counts::default());
    assert!(t.due(10_000).is_empty(), "no level 2 after contact");
}

#[test]
fn stale_events_change_nothing() {
    let mut t = Tracker::<()>::new(config());
    t.open(&alert(1, "c", AlertPriority::Normal, 100));
    assert_eq!(
        t.event(0, &ev(1, CaseState::Contacted, 99), (), 120),
        Applied::Stale
    );
    t.event(0, &ev(1, CaseState::ContactAttempted, 130), (), 130);
    assert_eq!(
        t.event(0, &ev(1, CaseState::Contacted, 110), (), 140),
        Applied::Stale
    );
    assert_eq!(t.due(200).len(), 1, "still uncontacted");
}

#[test]
fn a_repeat_detractor_escalates_at_once_naming_the_previous_alert() {
    let mut t = Tracker::<()>::new(config());
    t.open(&alert(1, "ana", AlertPriority::Normal, 0));
    let Opened::New {
        repeat: Some(e), ..
    } = t.open(&alert(2, "ana", AlertPriority::Normal, 500))
    else {
        panic!("not a repeat");
    };
    assert_eq!(
        (e.level, e.reason, e.previous, e.alert),
        (1, EscalationReason::RepeatDetractor, Some(1), 2)
    );
    // Level 1 for the SLA is not sent again; level 2 is.
    let later: Vec<_> = t.due(10_000).iter().map(|e| (e.alert, e.level)).collect();
    assert_eq!(later, vec![(1, 1), (1, 2), (2, 2)]);
    // Beyond the horizon: no repeat.
    assert!(matches!(
        t.open(&alert(3, "ana", AlertPriority::Normal, 1600)),
        Opened::New { repeat: None, .. }
    ));
    // Another customer, or none: no repeat.
    assert!(matches!(
        t.open(&alert(4, "", AlertPriority::Normal, 1600)),
        Opened::New { repeat: None, .. }
    ));
    assert!(matches!(
        t.open(&alert(5, "", AlertPriority::Normal, 1601)),
        Opened::New { repeat: None, .. }
    ));
}

#[test]
fn events_before_their_alert_wait_then_apply_or_expire() {
    let mut t = Tracker::<&str>::new(config());
    assert_eq!(
        t.event(0, &ev(1, CaseState::Contacted, 5), "e1", 6),
        Applied::Waiting
    );
    assert_eq!(
        t.event(0, &ev(2, CaseState::Contacted, 5), "e2", 6),
        Applied::Waiting
    );
    assert_eq!(t.orphans(), 2);
    let Opened::New { applied, .. } = t.open(&alert(1, "c", AlertPriority::Normal, 0)) else {
        panic!()
    };
    assert!(matches!(
        applied.as_slice(),
        [Applied::Moved {
            first_contact: Some((5, true)),
            ..
        }]
    ));
    // The handle of the event applied, for the shell to know whether it
    // was read live; taken once.
    assert_eq!(t.take_released(), vec!["e1"]);
    assert!(t.take_released().is_empty());
    assert!(t.expire_orphans(35).is_empty());
    assert_eq!(t.expire_orphans(36), vec!["e2"]);
    assert_eq!(t.orphans(), 0);
}

#[test]
fn a_late_contact_waiting_for_its_alert_escalates_when_the_alert_opens_the_case() {
    let mut t = Tracker::<&str>::new(config());
    // Normal: due 100 ms after opening; contacted at 150, read first.
    t.event(0, &ev(1, CaseState::Contacted, 150), "late", 160);
    let Opened::New { applied, .. } = t.open(&alert(1, "c", AlertPriority::Normal, 0)) else {
        panic!()
    };
    assert!(
        matches!(
            applied.as_slice(),
            [Applied::Moved {
                missed: [Some(Escalation { level: 1, .. }), None],
                ..
            }]
        ),
        "{applied:?}"
    );
    assert_eq!(t.take_released(), vec!["late"]);
}

#[test]
fn a_redelivered_alert_is_known_and_reopened_cases_count_as_open() {
    let mut t = Tracker::<()>::new(config());
    let a = alert(1, "c", AlertPriority::Normal, 0);
    t.open(&a);
    assert_eq!(t.open(&a), Opened::Known);
    t.event(0, &ev(1, CaseState::Resolved, 10), (), 10);
    assert_eq!(totals(&t).open, 0);
    let r = t.event(0, &ev(1, CaseState::Reopened, 20), (), 20);
    assert!(matches!(r, Applied::Moved { closed: None, .. }));
    assert_eq!(totals(&t).open, 1);
    assert!(t.due(10_000).is_empty(), "contacted before: no escalation");
}

#[test]
fn a_closed_case_is_kept_for_its_retention_then_forgotten() {
    let mut t = Tracker::<()>::new(CaseConfig {
        closed_retention: Duration::from_millis(100),
        ..config()
    });
    t.open(&alert(1, "c", AlertPriority::Normal, 0));
    t.open(&alert(2, "d", AlertPriority::Normal, 0));
    t.event(0, &ev(1, CaseState::Unreachable, 30), (), 31);
    t.due(129); // the open one escalates; the closed one stays
    assert_eq!(t.len(), 2, "closed, still within its retention");
    t.due(131);
    assert_eq!(t.len(), 1, "the closed case is gone, the open one stays");
    assert_eq!(totals(&t).open, 1);
}

#[test]
fn the_table_is_capped_closed_cases_first() {
    let mut t = Tracker::<()>::new(CaseConfig {
        max_cases: 3,
        ..config()
    });
    t.open(&alert(1, "", AlertPriority::Normal, 0));
    t.open(&alert(2, "", AlertPriority::Normal, 1));
    t.event(0, &ev(2, CaseState::Resolved, 2), (), 2);
    t.open(&alert(3, "", AlertPriority::Normal, 3));
    t.open(&alert(4, "", AlertPriority::Normal, 4));
    assert_eq!((t.len(), t.evicted_open), (3, 0), "the closed one went");
    t.open(&alert(5, "", AlertPriority::Normal, 5));
    assert_eq!((t.len(), t.evicted_open), (3, 1));
    assert_eq!(totals(&t).open, 3);
    let due: Vec<_> = t.due(1000).iter().map(|e| e.alert).collect();
    assert!(!due.contains(&1), "the oldest open one went: {due:?}");
}

#[test]
fn dropping_a_partition_forgets_its_cases_and_counts() {
    let mut t = Tracker::<()>::new(config());
    t.open(&alert(1, "a", AlertPriority::Normal, 0));
    let mut other = alert(2, "b", AlertPriority::Normal, 0);
    other.partition = 1;
    t.open(&other);
    t.event(1, &ev(9, CaseState::Contacted, 0), (), 0);
    t.drop_partition(1);
    assert_eq!((t.len(), t.customers(), t.orphans()), (1, 1, 0));
    assert_eq!(totals(&t).open, 1);
    assert_eq!(t.due(1000).len(), 2, "levels 1 and 2 of case 1 only");
}

#[test]
fn sla_settings_parse() {
    let s = Sla::parse("critical=1h, normal=3d").unwrap();
    assert_eq!(s.critical, Duration::from_secs(3600));
    assert_eq!(s.high, Sla::default().high);
    assert_eq!(s.normal, Duration::from_secs(3 * 86_400));
    for bad in ["urgent=1h", "high", "high=soon", "high=0s"] {
        assert!(Sla::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(alert_key(&alert_id(0xabc)), Some(0xabc));
    assert_eq!(alert_key("xyz"), None);
}

// --- a brute-force model: plain lists scanned in full ----------------------

#[derive(Debug, Clone)]
enum Op {
    Open {
        alert: u128,
        customer: Option<u8>,
        priority: u8,
        ago: i64,
    },
    Event {
        alert: u128,
        state: u8,
        outcome: u8,
        ago: i64,
    },
    Tick(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1..16u128, proptest::option::of(0..4u8), 1..4u8, 0..40i64).prop_map(
            |(alert, customer, priority, ago)| Op::Open {
                alert,
                customer,
                priority,
                ago
            }
        ),
        (1..16u128, 1..7u8, 0..4u8, 0..60i64).prop_map(|(alert, state, outcome, ago)| Op::Event {
            alert,
            state,
            outcome,
            ago
        }),
        (0..80i64).prop_map(Op::Tick),
    ]
}

#[derive(Debug, Clone)]
struct MCase {
    alert: u128,
    priority: AlertPriority,
    opened: i64,
    state: CaseState,
    state_at: i64,
    contacted: bool,
    escalated: [bool; 2],
    overdue: bool,
}

#[derive(Default)]
struct Model {
    cases: Vec<MCase>,
    /// customer → (last opened, its alert)
    customers: BTreeMap<u8, (i64, u128)>,
    orphans: Vec<(EventIn, i64)>,
}

fn is_open(s: CaseState) -> bool {
    !matches!(s, CaseState::Resolved | CaseState::Unreachable)
}

impl Model {
    fn sla(p: AlertPriority) -> i64 {
        config().sla.ms(p)
    }

    fn apply(&mut self, e: &EventIn) -> Applied {
        let Some(c) = self.cases.iter_mut().find(|c| c.alert == e.alert) else {
            return Applied::Stale;
        };
        if e.occurred_at_ms < c.state_at {
            return Applied::Stale;
        }
        let due = c.opened + Self::sla(c.priority);
        let mut first = None;
        let mut missed = [None, None];
        if matches!(
            e.state,
            CaseState::Contacted | CaseState::Resolved | CaseState::Unreachable
        ) && !c.contacted
        {
            c.contacted = true;
            c.overdue = false;
            for level in 1..=2usize {
                if e.occurred_at_ms > c.opened + Self::sla(c.priority) * level as i64
                    && !c.escalated[level - 1]
                {
                    c.escalated[level - 1] = true;
                    missed[level - 1] = Some(key_only(c.alert, level as u8));
                }
            }
            first = Some((
                (e.occurred_at_ms - c.opened).max(0),
                e.occurred_at_ms <= due,
            ));
        }
        let was = is_open(c.state);
        c.state = e.state;
        c.state_at = e.occurred_at_ms;
        let closed = (was && !is_open(c.state)).then_some(());
        Applied::Moved {
            segment: SegmentId(0),
            priority: c.priority,
            first_contact: first,
            closed: closed.map(|_| {
                let how = match (e.state, e.outcome) {
                    (CaseState::Unreachable, _) => ClosedAs::Unreachable,
                    (_, CaseOutcome::Recovered) => ClosedAs::Recovered,
                    (_, CaseOutcome::NotRecovered) => ClosedAs::NotRecovered,
                    (_, CaseOutcome::Churned) => ClosedAs::Churned,
                    _ => ClosedAs::Unspecified,
                };
                // Met: contacted at or before due (first contact time).
                (how, false)
            }),
            root_cause: if closed.is_some() && e.state == CaseState::Resolved {
                e.root_cause
            } else {
                RootCause::NONE
            },
            missed,
        }
    }
}

/// An escalation as the model knows it: its alert and level.
fn key_only(alert: u128, level: u8) -> Escalation {
    Escalation {
        alert,
        level,
        reason: EscalationReason::ContactSlaMissed,
        previous: None,
        segment: SegmentId(0),
        priority: AlertPriority::Unspecified,
        opened_at_ms: 0,
        due_at_ms: 0,
        state: CaseState::Unspecified,
        partition: 0,
        alert_offset: 0,
    }
}

/// `closed`'s SLA flag depends on the first contact time; the model checks
/// it apart, so it is blanked on both sides.
fn blank(a: Applied) -> Applied {
    match a {
        Applied::Moved {
            priority,
            first_contact,
            closed,
            root_cause,
            missed,
            ..
        } => Applied::Moved {
            segment: SegmentId(0),
            priority,
            first_contact,
            closed: closed.map(|(h, _)| (h, false)),
            root_cause,
            missed: missed.map(|e| e.map(|e| key_only(e.alert, e.level))),
        },
        other => other,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn the_tracker_agrees_with_a_brute_force_model(ops in proptest::collection::vec(op(), 1..120)) {
        let mut t = Tracker::<u32>::new(config());
        let mut m = Model::default();
        let mut now = 1000i64;
        let mut seq = 0u32;
        let customers = ["c0", "c1", "c2", "c3"];
        for op in ops {
            match op {
                Op::Open { alert: a, customer, priority, ago } => {
                    let p = AlertPriority::try_from(i32::from(priority)).unwrap();
                    let at = now - ago;
                    let cust = customer.map_or("", |c| customers[c as usize]);
                    let got = t.open(&alert(a, cust, p, at));
                    if m.cases.iter().any(|c| c.alert == a) {
                        prop_assert_eq!(got, Opened::Known);
                        continue;
                    }
                    let mut case = MCase { alert: a, priority: p, opened: at, state: CaseState::Unspecified,
                        state_at: at, contacted: false, escalated: [false; 2], overdue: false };
                    let mut want_repeat = None;
                    if let Some(c) = customer {
                        if let Some(&(last, prev)) = m.customers.get(&c) {
                            if at - last <= 1000 {
                                want_repeat = Some(prev);
                                case.escalated[0] = true;
                            }
                            if last > at {
                                m.customers.insert(c, (last, prev));
                            } else {
                                m.customers.insert(c, (at, a));
                            }
                        } else {
                            m.customers.insert(c, (at, a));
                        }
                    }
                    m.cases.push(case);
                    let mut waiting: Vec<EventIn> = m.orphans.iter().filter(|(e, _)| e.alert == a).map(|(e, _)| *e).collect();
                    m.orphans.retain(|(e, _)| e.alert != a);
                    waiting.sort_by_key(|e| e.occurred_at_ms);
                    let want_applied: Vec<Applied> = waiting.iter().map(|e| blank(m.apply(e))).collect();
                    let Opened::New { repeat, applied } = got else { panic!("known") };
                    prop_assert_eq!(repeat.map(|e| (e.alert, e.level, e.previous)), want_repeat.map(|p| (a, 1, Some(p))));
                    prop_assert_eq!(applied.into_iter().map(blank).collect::<Vec<_>>(), want_applied);
                }
                Op::Event { alert: a, state, outcome, ago } => {
                    let e = EventIn {
                        alert: a,
                        state: CaseState::try_from(i32::from(state)).unwrap(),
                        occurred_at_ms: now - ago,
                        outcome: CaseOutcome::try_from(i32::from(outcome)).unwrap(),
                        // Varied with the outcome: the model says where it shows.
                        root_cause: RootCause(outcome),
                    };
                    seq += 1;
                    let got = t.event(0, &e, seq, now);
                    let want = if m.cases.iter().any(|c| c.alert == a) {
                        blank(m.apply(&e))
                    } else {
                        m.orphans.push((e, now + 30));
                        Applied::Waiting
                    };
                    prop_assert_eq!(blank(got), want);
                }
                Op::Tick(dt) => {
                    now += dt;
                    let got: Vec<(u128, u8)> = t.due(now).iter().map(|e| (e.alert, e.level)).collect();
                    let mut want = Vec::new();
                    // Due order: (due time, level, alert), as many rounds as levels.
                    let mut due: Vec<(i64, u8, u128)> = Vec::new();
                    for c in &m.cases {
                        let sla = Model::sla(c.priority);
                        for level in 1..=2u8 {
                            if c.opened + sla * i64::from(level) <= now && is_open(c.state) && !c.contacted {
                                due.push((c.opened + sla * i64::from(level), level, c.alert));
                            }
                        }
                    }
                    // Due order: time, then alert id.
                    due.sort_by_key(|(at, _, a)| (*at, *a));
                    for (_, level, a) in due {
                        let c = m.cases.iter_mut().find(|c| c.alert == a).unwrap();
                        c.overdue = true;
                        if !c.escalated[level as usize - 1] {
                            c.escalated[level as usize - 1] = true;
                            want.push((a, level));
                        }
                    }
                    prop_assert_eq!(got, want);
                    let expired = t.expire_orphans(now);
                    let want_expired = m.orphans.iter().filter(|(_, x)| *x <= now).count();
                    m.orphans.retain(|(_, x)| *x > now);
                    prop_assert_eq!(expired.len(), want_expired);
                }
            }
            let open = m.cases.iter().filter(|c| is_open(c.state)).count() as u64;
            let overdue = m.cases.iter().filter(|c| is_open(c.state) && c.overdue && !c.contacted).count() as u64;
            prop_assert_eq!(totals(&t), Counts { open, overdue });
            prop_assert_eq!(t.orphans(), m.orphans.len());
        }
    }
}

#[test]
fn a_case_holds_no_strings_and_stays_small() {
    assert_eq!(std::mem::size_of::<Case>(), 64);
}

/// Runs one op on a tracker; what it answered, as text, and the clock.
fn drive(t: &mut Tracker<u32>, op: &Op, now: &mut i64) -> String {
    let customers = ["c0", "c1", "c2", "c3"];
    match *op {
        Op::Open {
            alert: a,
            customer,
            priority,
            ago,
        } => {
            let p = AlertPriority::try_from(i32::from(priority)).unwrap();
            let cust = customer.map_or("", |c| customers[c as usize]);
            format!("{:?}", t.open(&alert(a, cust, p, *now - ago)))
        }
        Op::Event {
            alert: a,
            state,
            outcome,
            ago,
        } => {
            let e = EventIn {
                alert: a,
                state: CaseState::try_from(i32::from(state)).unwrap(),
                occurred_at_ms: *now - ago,
                outcome: CaseOutcome::try_from(i32::from(outcome)).unwrap(),
                root_cause: RootCause(outcome),
            };
            format!("{:?}", t.event(0, &e, 0, *now))
        }
        Op::Tick(dt) => {
            *now += dt;
            format!("{:?} {:?}", t.due(*now), t.expire_orphans(*now).len())
        }
    }
}

fn sorted_counts(t: &Tracker<u32>) -> Vec<(String, AlertPriority, Counts)> {
    let mut v: Vec<_> = t
        .counts()
        .filter(|(_, _, c)| *c != Counts::default())
        .map(|(s, p, c)| (format!("{:?}", t.segment_name(s)), p, c))
        .collect();
    v.sort_by_key(|(s, p, _)| (s.clone(), *p as i32));
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn a_restored_partition_goes_on_as_if_never_stopped(
        before in proptest::collection::vec(op(), 1..80),
        after in proptest::collection::vec(op(), 1..80),
    ) {
        let mut a = Tracker::<u32>::new(config());
        let mut now = 1000i64;
        for op in &before {
            drive(&mut a, op, &mut now);
        }
        // Waiting events are not in a snapshot (their records are read again).
        a.expire_orphans(i64::MAX);
        let snap = a.partition_snapshot(0, 10, 20);
        let mut b = Tracker::<u32>::new(config());
        b.restore_partition(&snap).unwrap();
        prop_assert_eq!(b.partition_snapshot(0, 10, 20), snap);
        prop_assert_eq!(sorted_counts(&a), sorted_counts(&b));
        let (mut now_a, mut now_b) = (now, now);
        for op in &after {
            let x = drive(&mut a, op, &mut now_a);
            let y = drive(&mut b, op, &mut now_b);
            prop_assert_eq!(x, y);
        }
        prop_assert_eq!(sorted_counts(&a), sorted_counts(&b));
    }
}

#[test]
fn a_contradictory_snapshot_changes_nothing() {
    let mut t = Tracker::<u32>::new(config());
    t.open(&alert(1, "c", AlertPriority::Normal, 0));
    let good = t.partition_snapshot(0, 0, 0);
    let mut bad = good.clone();
    bad.cases.push(bad.cases[0].clone());
    assert!(t.restore_partition(&bad).is_err());
    let mut bad = good.clone();
    bad.cases[0].state = 99;
    assert!(t.restore_partition(&bad).is_err());
    assert_eq!(t.partition_snapshot(0, 0, 0), good);
}

#[test]
fn a_late_contact_read_before_its_check_still_escalates_the_levels_it_missed() {
    let missed = |a: Applied| match a {
        Applied::Moved { missed, .. } => {
            missed.iter().flatten().map(|e| e.level).collect::<Vec<_>>()
        }
        other => panic!("{other:?}"),
    };
    let mut t = Tracker::<()>::new(config());
    // Normal: due at 1100 (level 1) and 1200 (level 2). No check has run.
    t.open(&alert(1, "", AlertPriority::Normal, 1000));
    t.open(&alert(2, "", AlertPriority::Normal, 1000));
    t.open(&alert(3, "", AlertPriority::Normal, 1000));
    assert_eq!(
        missed(t.event(0, &ev(1, CaseState::Contacted, 1100), (), 0)),
        Vec::<u8>::new(),
        "at the due time is in time"
    );
    assert_eq!(
        missed(t.event(0, &ev(2, CaseState::Contacted, 1150), (), 0)),
        vec![1]
    );
    assert_eq!(
        missed(t.event(0, &ev(3, CaseState::Resolved, 1300), (), 0)),
        vec![1, 2]
    );
    // Checks that run later send nothing more for them.
    assert!(t.due(10_000).is_empty());
    // A level already sent by its check is not sent again.
    t.open(&alert(4, "", AlertPriority::Normal, 1000));
    assert_eq!(t.due(1100).len(), 1);
    assert_eq!(
        missed(t.event(0, &ev(4, CaseState::Contacted, 1250), (), 0)),
        vec![2]
    );
}

#[test]
fn every_case_s_contact_sla_is_decided_once() {
    let mut t = Tracker::<()>::new(config());
    let mets = |t: &mut Tracker<()>| t.take_sla().iter().map(|x| x.2).collect::<Vec<_>>();
    // Normal: due at 1100.
    for n in 1..=3 {
        t.open(&alert(n, "", AlertPriority::Normal, 1000));
    }
    t.event(0, &ev(1, CaseState::Contacted, 1050), (), 0);
    assert_eq!(mets(&mut t), vec![true]);
    // 2: missed at its check; its late contact decides nothing more.
    // 3: contacted late before any check: missed once.
    t.event(0, &ev(3, CaseState::Contacted, 1150), (), 0);
    assert_eq!(mets(&mut t), vec![false]);
    t.due(1100);
    assert_eq!(mets(&mut t), vec![false]);
    t.event(0, &ev(2, CaseState::Contacted, 1120), (), 0);
    t.event(0, &ev(2, CaseState::Resolved, 1130), (), 0);
    t.due(5000);
    assert!(mets(&mut t).is_empty());
}

#[test]
fn a_resolution_carries_its_root_cause_and_only_a_resolution_does() {
    let config = CaseConfig {
        root_causes: vec!["long_wait".into(), "billing_error".into()],
        ..CaseConfig::default()
    };
    assert_eq!(config.root_cause(""), RootCause::NONE);
    assert_eq!(config.root_cause("billing_error"), RootCause(2));
    assert_eq!(config.root_cause("Billing_Error"), RootCause::OTHER);
    assert_eq!(config.root_cause("lo que sea"), RootCause::OTHER);
    assert_eq!(config.root_cause_name(RootCause(2)), Some("billing_error"));
    assert_eq!(config.root_cause_name(RootCause::OTHER), Some("other"));
    assert_eq!(config.root_cause_name(RootCause::NONE), None);
    assert_eq!(config.root_cause_name(RootCause(9)), Some("other"));

    const T0: i64 = 1_767_225_600_000;
    let mut t: Tracker<()> = Tracker::new(config);
    for n in 1..=3 {
        t.open(&alert(n, "c", AlertPriority::Normal, T0));
    }
    let with_cause = |n, state, cause| EventIn {
        root_cause: cause,
        ..ev(n, state, T0 + 1000)
    };
    // Contacted: not closed, no root cause even if one is sent.
    let a = t.event(
        0,
        &with_cause(1, CaseState::Contacted, RootCause(1)),
        (),
        T0,
    );
    assert!(matches!(
        a,
        Applied::Moved {
            root_cause: RootCause::NONE,
            closed: None,
            ..
        }
    ));
    // Resolved: the cause comes out with the close.
    let a = t.event(0, &with_cause(2, CaseState::Resolved, RootCause(1)), (), T0);
    assert!(
        matches!(
            a,
            Applied::Moved {
                root_cause: RootCause(1),
                closed: Some(_),
                ..
            }
        ),
        "{a:?}"
    );
    // Unreachable closes without a cause.
    let a = t.event(
        0,
        &with_cause(3, CaseState::Unreachable, RootCause(2)),
        (),
        T0,
    );
    assert!(matches!(
        a,
        Applied::Moved {
            root_cause: RootCause::NONE,
            closed: Some(_),
            ..
        }
    ));
}
