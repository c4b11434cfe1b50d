//! The breakdowns' series (`nps_breakdown_*`) and the sector benchmarks
//! (`nps_benchmark`), rendered as Prometheus text from the view when
//! scraped: values come and go with the windows, so their series do too.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::{
    BENCHMARK, BREAKDOWN_MIN_RESPONSES, BREAKDOWN_RESPONSES, BREAKDOWN_VALUES, BREAKDOWN_WEIGHT,
    BREAKDOWN_WEIGHT_NET, escape, header,
};
use crate::config::{ANY_PRODUCT, Benchmark, Breakdown, benchmark_of};
use crate::engine::{Category, WindowStats};

/// One breakdown as the last refresh saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BreakdownView {
    pub label: String,
    /// Below this many answers in a window, a value's NPS is not shown.
    pub min_responses: u64,
    /// Whether its values go to /metrics.
    pub prometheus: bool,
    /// Values admitted (`unknown`, `other` and `invalid` excluded).
    pub admitted: usize,
    /// Each value with answers in some window: its windows, in layout
    /// order.
    pub values: ValueFigures,
}

/// Values and their windows (in layout order).
pub type ValueFigures = Vec<(String, Vec<WindowStats>)>;

impl BreakdownView {
    /// The view of a configured breakdown, before any refresh.
    pub fn of(b: &Breakdown) -> Self {
        BreakdownView {
            label: b.label.clone(),
            min_responses: b.min_responses,
            prometheus: b.prometheus,
            ..Default::default()
        }
    }
}

/// The quartile label values of `nps_benchmark`.
pub const QUANTILES: [&str; 3] = ["0.25", "0.5", "0.75"];

/// The breakdowns' families, then `nps_benchmark` for every product with
/// a benchmark of its own and every product of `products` the `*` entry
/// covers.
pub fn render<'a>(
    breakdowns: &[BreakdownView],
    windows: &[String],
    benchmarks: &'a [Benchmark],
    products: impl Iterator<Item = &'a str>,
    out: &mut String,
) {
    let value_family =
        |out: &mut String, name: &str, help: &str, f: &dyn Fn(&mut String, &str, &WindowStats)| {
            per_value(breakdowns, windows, (name, help), f, out);
        };
    value_family(
        out,
        BREAKDOWN_RESPONSES,
        "Responses in the window per breakdown value ([[breakdowns]]), window and category.",
        &|out, labels, w| {
            for c in Category::ALL {
                let _ = writeln!(
                    out,
                    "{BREAKDOWN_RESPONSES}{{{labels},category=\"{}\"}} {}",
                    c.as_str(),
                    w.count(c)
                );
            }
        },
    );
    value_family(
        out,
        BREAKDOWN_WEIGHT,
        "Sum of weights (customer_value, 1 when absent) in the window, per breakdown value.",
        &|out, labels, w| {
            let _ = writeln!(out, "{BREAKDOWN_WEIGHT}{{{labels}}} {}", w.weight_total);
        },
    );
    value_family(
        out,
        BREAKDOWN_WEIGHT_NET,
        "Sum of weight x sign (+1 promoter, 0 passive, -1 detractor) in the window, per breakdown value.",
        &|out, labels, w| {
            let _ = writeln!(out, "{BREAKDOWN_WEIGHT_NET}{{{labels}}} {}", w.weight_net);
        },
    );
    let breakdown_family =
        |out: &mut String, name: &str, help: &str, v: &dyn Fn(&BreakdownView) -> f64| {
            per_breakdown(breakdowns, (name, help), v, out);
        };
    breakdown_family(
        out,
        BREAKDOWN_VALUES,
        "Values a breakdown counts as themselves (unknown, other and invalid excluded); at max_values, new ones count under other.",
        &|b| b.admitted as f64,
    );
    breakdown_family(
        out,
        BREAKDOWN_MIN_RESPONSES,
        "A breakdown's min_responses: below it in a window, a value's NPS is not shown (API, page, nps:score:breakdown).",
        &|b| b.min_responses as f64,
    );
    render_benchmarks(benchmarks, products, out);
}

/// A family with a series per (breakdown, value, window) holding answers
/// (breakdowns off /metrics left out); `f` writes a series' lines from
/// its labels and figures.
fn per_value(
    breakdowns: &[BreakdownView],
    windows: &[String],
    (name, help): (&str, &str),
    f: &dyn Fn(&mut String, &str, &WindowStats),
    out: &mut String,
) {
    let mut headed = false;
    for b in breakdowns.iter().filter(|b| b.prometheus) {
        for (value, stats) in &b.values {
            for (window, w) in windows.iter().zip(stats) {
                if w.responses() == 0 {
                    continue;
                }
                if !headed {
                    header(out, name, help, "gauge");
                    headed = true;
                }
                let mut labels = String::from("breakdown=\"");
                escape(&b.label, &mut labels);
                labels.push_str("\",value=\"");
                escape(value, &mut labels);
                let _ = write!(labels, "\",window=\"{window}\"");
                f(out, &labels, w);
            }
        }
    }
}

/// A family with a series per breakdown, valued by `v`.
fn per_breakdown(
    breakdowns: &[BreakdownView],
    (name, help): (&str, &str),
    v: &dyn Fn(&BreakdownView) -> f64,
    out: &mut String,
) {
    if breakdowns.is_empty() {
        return;
    }
    header(out, name, help, "gauge");
    for b in breakdowns {
        let mut label = String::new();
        escape(&b.label, &mut label);
        let _ = writeln!(out, "{name}{{breakdown=\"{label}\"}} {}", v(b));
    }
}

fn render_benchmarks<'a>(
    benchmarks: &'a [Benchmark],
    products: impl Iterator<Item = &'a str>,
    out: &mut String,
) {
    if benchmarks.is_empty() {
        return;
    }
    let mut covered: BTreeSet<&str> = benchmarks
        .iter()
        .map(|b| b.product.as_str())
        .filter(|p| *p != ANY_PRODUCT)
        .collect();
    if benchmarks.iter().any(|b| b.product == ANY_PRODUCT) {
        covered.extend(products);
    }
    if covered.is_empty() {
        return;
    }
    header(
        out,
        BENCHMARK,
        "Sector NPS quartiles per product from [[benchmarks]] (a product of * covers every product seen without one).",
        "gauge",
    );
    for product in covered {
        let Some(b) = benchmark_of(benchmarks, product) else {
            continue;
        };
        let mut p = String::new();
        escape(product, &mut p);
        for (q, v) in QUANTILES.iter().zip([b.p25, b.median, b.p75]) {
            let _ = writeln!(out, "{BENCHMARK}{{product=\"{p}\",quantile=\"{q}\"}} {v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(p: u64, d: u64) -> WindowStats {
        WindowStats {
            promoters: p,
            passives: 1,
            detractors: d,
            weight_net: (p as f64) - (d as f64),
            weight_total: (p + d + 1) as f64,
        }
    }

    #[test]
    fn values_with_answers_are_rendered_and_agents_kept_off_metrics() {
        let team = BreakdownView {
            label: "team".into(),
            min_responses: 30,
            prometheus: true,
            admitted: 2,
            values: vec![
                (
                    "Cobros \"Norte\"".into(),
                    vec![stats(3, 1), WindowStats::default()],
                ),
                ("unknown".into(), vec![stats(0, 2), stats(0, 2)]),
            ],
        };
        let agent = BreakdownView {
            label: "agent".into(),
            min_responses: 10,
            prometheus: false,
            admitted: 1,
            values: vec![("a-17".into(), vec![stats(1, 0), stats(1, 0)])],
        };
        let windows = ["24h".to_string(), "30d".to_string()];
        let benchmarks = [
            Benchmark {
                product: "*".into(),
                p25: 10.0,
                median: 30.0,
                p75: 50.0,
                source: "s".into(),
            },
            Benchmark {
                product: "Tarjeta".into(),
                p25: 20.0,
                median: 40.0,
                p75: 60.0,
                source: "s".into(),
            },
        ];
        let mut out = String::new();
        render(
            &[team, agent],
            &windows,
            &benchmarks,
            ["Seguro", "Tarjeta"].into_iter(),
            &mut out,
        );
        let has = |line: &str| out.lines().any(|l| l == line);
        assert!(has(
            r#"nps_breakdown_responses{breakdown="team",value="Cobros \"Norte\"",window="24h",category="promoter"} 3"#
        ));
        assert!(has(
            r#"nps_breakdown_responses{breakdown="team",value="unknown",window="30d",category="detractor"} 2"#
        ));
        assert!(
            !out.contains(r#"value="Cobros \"Norte\"",window="30d""#),
            "an empty window has no series"
        );
        assert!(!out.contains("a-17"), "agents stay off /metrics");
        assert!(has(
            r#"nps_breakdown_weight{breakdown="team",value="unknown",window="24h"} 3"#
        ));
        assert!(has(
            r#"nps_breakdown_weight_net{breakdown="team",value="unknown",window="24h"} -2"#
        ));
        assert!(has(r#"nps_breakdown_min_responses{breakdown="agent"} 10"#));
        assert!(has(r#"nps_breakdown_values{breakdown="team"} 2"#));
        assert!(has(r#"nps_benchmark{product="Seguro",quantile="0.5"} 30"#));
        assert!(has(
            r#"nps_benchmark{product="Tarjeta",quantile="0.75"} 60"#
        ));
        assert_eq!(out.matches("# TYPE nps_benchmark gauge").count(), 1);
    }
}
