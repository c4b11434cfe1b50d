//! What the refresh tick publishes for the HTTP surface (/metrics, the
//! live page and its API) and the demo: the windows swept and taken from
//! the engine, the engine's gauges, and the pipeline's counts.

use std::sync::{Arc, Mutex, RwLock};

use super::lock;
use crate::clock::Clock;
use crate::engine::Engine;
use crate::kafka::Health;
use crate::metrics::{self as m, TrendOf, TrendSource, View};
use crate::pipeline::{Core, Counters};

/// Sweeps the engine, refreshes the per-segment series (and the table,
/// when kept) and publishes the counts, the partitions held and the time.
pub(super) fn refresh_view(
    core: &Mutex<Core>,
    clock: &dyn Clock,
    view: &RwLock<View>,
    window_names: &[String],
    stats: &mut Counters,
    keep_table: bool,
    health: &Health,
) {
    let now = clock.now_ms();
    let mut c = lock(core);
    let sweep = c.engine.sweep(now);
    if !sweep.keys_removed.is_empty() {
        tracing::debug!(
            segments = sweep.keys_removed.len(),
            "segments left every window"
        );
    }
    let themes = c.engine.theme_stats(now);
    let segments = c.engine.segments(now);
    let breakdowns = breakdown_figures(&c.engine, now);
    let bucket_ms: Vec<i64> = c
        .engine
        .layout()
        .specs()
        .iter()
        .map(|s| s.bucket_ms)
        .collect();
    // With the engine still locked: segment ids freed by the sweep are not
    // reused before their counters are forgotten.
    if let Ok(mut v) = view.write() {
        v.series.refresh(c.engine.layout().specs(), &segments, |k| {
            c.engine.segment_name(k)
        });
        let names = c.themes.as_ref().map_or(&[][..], |t| t.names());
        v.series.refresh_themes(names, themes);
    }
    let table = if keep_table {
        segments
            .iter()
            .map(|s| {
                (
                    s.product.to_string(),
                    s.region.to_string(),
                    s.windows.clone(),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let g = c.engine.gauges();
    let held: Vec<i32> = c.owned.iter().copied().collect();
    let total = c.input_partitions;
    drop(c);
    metrics::gauge!(m::ENGINE_KEYS).set(g.keys as f64);
    metrics::gauge!(m::ENGINE_SEGMENT_STATES).set(g.segment_states as f64);
    metrics::gauge!(m::DEDUP_IDS).set(g.dedup_ids as f64);
    metrics::counter!(m::DEDUP_EVICTED_EARLY).absolute(g.dedup_evicted_early);
    metrics::gauge!(m::READY).set(if health.ready() { 1.0 } else { 0.0 });
    if let Ok(mut v) = view.write() {
        v.table = table;
        v.window_names = window_names.to_vec();
        v.window_bucket_ms = bucket_ms;
        v.alerts_sent = stats.alerts;
        v.promoter_events = stats.promoters;
        v.consumed = stats.consumed;
        v.rejected = stats.rejected;
        v.rejected_by_reason.clone_from(&stats.rejected_by_reason);
        v.partitions_held = held;
        v.partitions_total = total;
        v.refreshed_at_ms = now;
        for (b, (values, admitted)) in v.breakdowns.iter_mut().zip(breakdowns) {
            b.values = values;
            b.admitted = admitted;
        }
    }
}

/// Each breakdown's values with answers at `now` (their windows) and how
/// many values it admits.
fn breakdown_figures(engine: &Engine, now: i64) -> Vec<(m::ValueFigures, usize)> {
    let admitted = engine.breakdown_value_counts();
    (admitted.into_iter().enumerate())
        .map(|(i, admitted)| {
            let values = engine.breakdown_stats(i, now).into_iter();
            (
                values.map(|v| (v.value.to_string(), v.windows)).collect(),
                admitted,
            )
        })
        .collect()
}

/// The engine's trends for the API, read under the pipeline's lock (the
/// caller holds no lock of the view: the refresh takes the core's lock,
/// then the view's).
pub(super) fn trend_source(core: &Arc<Mutex<Core>>) -> TrendSource {
    let core = Arc::clone(core);
    TrendSource(Arc::new(move |of, (window, now)| {
        let c = lock(&core);
        match of {
            TrendOf::Segment { product, region } => {
                c.engine.segment_trend(product, region, window, now)
            }
            TrendOf::Value { breakdown, value } => {
                c.engine.breakdown_trend(breakdown, value, window, now)
            }
        }
    }))
}
