//! The case tracker (issue 17): opening a case per alert and applying a
//! case event, per item, on a tracker already holding 1,000,000 open
//! cases; and the once-a-second due check on it (nothing due, and 1,000
//! due).
//!
//!   cargo bench --bench cases
//!
//! Targets: <= 1 us per alert or case event; the due check <= 1 ms.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use nps_stream::cases::{AlertIn, AlertKey, CaseConfig, EventIn, RootCause, Tracker, alert_key};
use nps_stream::pb::{AlertPriority, CaseOutcome, CaseState};

const T0: i64 = 1_767_225_600_000;
const OPEN: usize = 1_000_000;
const BATCH: usize = 1_000;

fn key(i: u64) -> AlertKey {
    alert_key(&nps_stream::alerts::alert_id(&format!("r-{i}"))).unwrap_or(0)
}

fn customer(i: u64) -> String {
    format!("cust-{}", i % 5_000_000)
}

fn alert_in(i: u64, alert: AlertKey, customer: &str) -> AlertIn<'_> {
    AlertIn {
        alert,
        customer_id: customer,
        product: ["p0", "p1", "p2", "p3", "p4"][(i % 5) as usize],
        region: ["r0", "r1", "r2", "r3"][(i % 4) as usize],
        priority: [
            AlertPriority::Normal,
            AlertPriority::High,
            AlertPriority::Critical,
        ][(i % 3) as usize],
        // One alert per 100 ms: 1,000,000 cover 28 hours.
        emitted_at_ms: T0 + i as i64 * 100,
        partition: (i % 6) as i32,
        offset: i as i64,
    }
}

fn bench(c: &mut Criterion) {
    // The events and due checks: on a million open cases.
    let mut t = Tracker::<()>::new(CaseConfig::default());
    let customers: Vec<String> = (0..OPEN as u64).map(customer).collect();
    for i in 0..OPEN as u64 {
        t.open(&alert_in(i, key(i), &customers[i as usize]));
    }
    let mut next = OPEN as u64;
    let mut g = c.benchmark_group("cases");
    g.sample_size(20);

    g.throughput(Throughput::Elements(BATCH as u64));
    // Steady state: a tracker of its own holding a million open cases;
    // before each batch (not timed) the oldest thousand are resolved and
    // forgotten, so the batch opens cases into a table that neither grows
    // nor sits at its cap.
    // (Setup and routine both use it: a RefCell lends it to each in turn.)
    let s = std::cell::RefCell::new(Tracker::<()>::new(CaseConfig {
        closed_retention: std::time::Duration::ZERO,
        ..CaseConfig::default()
    }));
    for i in 0..OPEN as u64 {
        s.borrow_mut()
            .open(&alert_in(i, key(i), &customers[i as usize]));
    }
    let mut oldest = 0u64;
    g.bench_function("open_per_alert", |b| {
        b.iter_batched(
            || {
                let now = T0 + next as i64 * 100;
                let mut s = s.borrow_mut();
                for i in oldest..oldest + BATCH as u64 {
                    let resolved = EventIn {
                        alert: key(i),
                        state: CaseState::Resolved,
                        occurred_at_ms: now,
                        outcome: CaseOutcome::Recovered,
                        root_cause: RootCause::NONE,
                    };
                    s.event(0, &resolved, (), now);
                }
                oldest += BATCH as u64;
                black_box(s.due(now));
                let batch: Vec<(u64, AlertKey, String)> = (next..next + BATCH as u64)
                    .map(|i| (i, key(i), customer(i)))
                    .collect();
                next += BATCH as u64;
                batch
            },
            |batch| {
                let mut s = s.borrow_mut();
                for (i, k, c) in &batch {
                    black_box(s.open(&alert_in(*i, *k, c)));
                }
                batch
            },
            BatchSize::PerIteration,
        )
    });
    eprintln!(
        "open bench: {} cases held (a million expected)",
        s.borrow().len()
    );

    let mut target = 0u64;
    g.bench_function("event_per_case_event", |b| {
        b.iter_batched(
            || {
                // Cases of the million opened first, round and round, each
                // event later than the last (so none is stale).
                let batch: Vec<EventIn> = (target..target + BATCH as u64)
                    .map(|i| EventIn {
                        alert: key(i % OPEN as u64),
                        state: CaseState::Acknowledged,
                        occurred_at_ms: T0 + 1_000_000_000 + i as i64,
                        outcome: CaseOutcome::Unspecified,
                        root_cause: RootCause::NONE,
                    })
                    .collect();
                target += BATCH as u64;
                batch
            },
            |batch| {
                for e in &batch {
                    black_box(t.event(0, e, (), T0));
                }
                batch
            },
            BatchSize::PerIteration,
        )
    });

    g.throughput(Throughput::Elements(1));
    // Before the first due time: nothing to do but look.
    g.bench_function("due_check_1m_open_nothing_due", |b| {
        b.iter(|| black_box(t.due(T0)))
    });
    // Ten cases falling due at each check, on the million open (none of
    // which is due yet: the first falls due 4 hours after T0). Before each
    // check (not timed) the ten of the last one are resolved and ten more
    // normal-priority alerts, 48 hours old, are opened.
    let t = std::cell::RefCell::new(t);
    let (mut now, mut fresh, mut escalated) = (T0 + 2 * 3_600_000, 1u64 << 40, 0usize);
    let mut last: Vec<AlertKey> = Vec::new();
    g.bench_function("due_check_1m_open_10_due", |b| {
        b.iter_batched(
            || {
                let mut t = t.borrow_mut();
                now += 1;
                for alert in last.drain(..) {
                    let resolved = EventIn {
                        alert,
                        state: CaseState::Resolved,
                        occurred_at_ms: now,
                        outcome: CaseOutcome::Recovered,
                        root_cause: RootCause::NONE,
                    };
                    t.event(0, &resolved, (), now);
                }
                for _ in 0..10 {
                    let k = key(fresh);
                    t.open(&AlertIn {
                        customer_id: "",
                        priority: AlertPriority::Normal,
                        emitted_at_ms: now - 48 * 3_600_000,
                        ..alert_in(fresh, k, "")
                    });
                    last.push(k);
                    fresh += 1;
                }
                now
            },
            |now| {
                let due = t.borrow_mut().due(now);
                escalated += due.len();
                black_box(due)
            },
            BatchSize::PerIteration,
        )
    });
    let t = t.into_inner();
    eprintln!(
        "due checks: {:.1} escalations per check (10 expected)",
        escalated as f64 / (fresh - (1 << 40)) as f64 * 10.0
    );
    g.finish();
    eprintln!(
        "tracker: {} cases held, {} events waiting for their alert (must be 0)",
        t.len(),
        t.orphans()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
