//! The per-segment series: counters and window gauges kept as numbers by
//! segment id and rendered as Prometheus text when scraped (see the
//! module above for why they do not go through the exporter).

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::{
    COMMENTED, Category, KeyId, SegmentStats, ThemeStats, WindowSpec, WindowStats,
};
use crate::metrics::{
    COMMENTED_RESPONSES, DETRACTOR_ALERTS_TOTAL, NPS_MARGIN_OF_ERROR, NPS_SCORE, NPS_WEIGHT_NET,
    NPS_WEIGHT_TOTAL, NPS_WEIGHTED_SCORE, NPS_WINDOW_RESPONSES, PROMOTER_EVENTS_TOTAL,
    PROMOTER_EVENTS_WITHDRAWN_TOTAL, RESPONSES_TOTAL, THEME_RESPONSES, escape, header,
};
use crate::pb::{AlertPriority, Channel};
use crate::promoters::MAX_TIERS;

/// Channel label values, by protobuf number.
const CHANNEL_LABELS: [&str; 7] = [
    "unspecified",
    "sms",
    "email",
    "chat",
    "phone",
    "web",
    "in_app",
];
/// Priority label values, by protobuf number.
const PRIORITY_LABELS: [&str; 4] = ["unspecified", "normal", "high", "critical"];

/// One segment's series.
struct Row {
    /// `product="…",region="…"`, escaped; set at refresh while the segment
    /// is in the engine's table. A row without labels is not rendered.
    labels: Option<Arc<str>>,
    /// (product, region), set with `labels`.
    name: Option<(Arc<str>, Arc<str>)>,
    /// `nps_responses_total` by channel and category.
    responses: [[AtomicU64; 3]; CHANNEL_LABELS.len()],
    /// `nps_detractor_alerts_total` by priority.
    alerts: [AtomicU64; PRIORITY_LABELS.len()],
    /// `nps_promoter_events_total` and `nps_promoter_events_withdrawn_total`
    /// by tier.
    promoters: [[AtomicU64; 2]; MAX_TIERS],
    /// Whether `SegmentSeries::stats` holds this segment's windows.
    in_windows: bool,
    /// Per theme row (a theme's number, or `COMMENTED`) with answers in
    /// some window at the last refresh: its counts per window.
    themes: Vec<(u8, Vec<WindowStats>)>,
}

impl Default for Row {
    fn default() -> Self {
        Row {
            labels: None,
            name: None,
            responses: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            alerts: std::array::from_fn(|_| AtomicU64::new(0)),
            promoters: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            in_windows: false,
            themes: Vec::new(),
        }
    }
}

/// The per-segment series of an instance: the counters
/// `nps_responses_total` and `nps_detractor_alerts_total`, and the window
/// gauges. Kept as numbers, by segment id, and rendered as Prometheus text
/// only when scraped, in chunks ([`SegmentSeries::render_some`]): holding
/// the text (about 2 KB per segment) or handing the counters to the
/// exporter (about 10 KB per segment in its registry) cost more than the
/// windows themselves.
///
/// Counters are atomics, so that records count them under a shared lock;
/// they start from zero when a segment enters the table and their series
/// go when it leaves (a counter reset, as Prometheus understands it). The
/// window statistics are those of the last refresh: a series is exported
/// exactly while its segment holds responses in that window.
#[derive(Default)]
pub struct SegmentSeries {
    windows: Vec<String>,
    /// Promoter tier label values, by tier index.
    tiers: Vec<String>,
    /// Theme label values, by theme number.
    theme_names: Vec<String>,
    rows: Vec<Row>,
    /// `rows.len() × windows.len()`, row after row.
    stats: Vec<WindowStats>,
}

impl std::fmt::Debug for SegmentSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentSeries")
            .field("windows", &self.windows)
            .field("rows", &self.rows.len())
            .finish()
    }
}

/// Where a chunked rendering stands: which family, which row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderCursor {
    family: usize,
    row: usize,
}

/// Families rendered from a [`SegmentSeries`], in order.
const FAMILIES: [(&str, &str, &str); 12] = [
    (
        RESPONSES_TOTAL,
        "Responses counted (late ones included, duplicates excluded), by product, region, channel and category.",
        "counter",
    ),
    (
        DETRACTOR_ALERTS_TOTAL,
        "Detractor alerts emitted, by product, region and priority.",
        "counter",
    ),
    (
        NPS_SCORE,
        "Net Promoter Score (-100..100) per product, region and window.",
        "gauge",
    ),
    (
        NPS_WINDOW_RESPONSES,
        "Responses in the window per product, region, window and category (promoter, passive, detractor).",
        "gauge",
    ),
    (
        NPS_MARGIN_OF_ERROR,
        "Half-width of the 95% confidence interval of nps_score, in NPS points.",
        "gauge",
    ),
    (
        NPS_WEIGHTED_SCORE,
        "NPS weighted by customer_value (1 when absent), per product, region and window.",
        "gauge",
    ),
    // The weighted score's parts, so that Prometheus can roll it up across
    // instances, products or regions: Σ net / Σ total.
    (
        NPS_WEIGHT_NET,
        "Sum of weight x sign (+1 promoter, 0 passive, -1 detractor) in the window.",
        "gauge",
    ),
    (
        NPS_WEIGHT_TOTAL,
        "Sum of weights (customer_value, 1 when absent) in the window.",
        "gauge",
    ),
    (
        PROMOTER_EVENTS_TOTAL,
        "Promoter events emitted (revisions of a promoter included, withdrawals not), by product, region and tier.",
        "counter",
    ),
    (
        PROMOTER_EVENTS_WITHDRAWN_TOTAL,
        "Promoter events withdrawn (the response revised below 9), by product, region and tier.",
        "counter",
    ),
    (
        THEME_RESPONSES,
        "Responses in the window whose comment mentions the theme, per product, region, window, theme and category.",
        "gauge",
    ),
    (
        COMMENTED_RESPONSES,
        "Responses in the window with a non-empty comment, per product, region, window and category.",
        "gauge",
    ),
];

impl SegmentSeries {
    /// Counts a response of segment `key`.
    pub fn count_response(&self, key: KeyId, channel: Channel, category: Category) -> bool {
        let Some(row) = self.rows.get(key.index()) else {
            return false;
        };
        let ch = (channel as usize).min(CHANNEL_LABELS.len() - 1);
        row.responses[ch][category.index()].fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Counts an alert of segment `key`.
    pub fn count_alert(&self, key: KeyId, priority: AlertPriority) -> bool {
        let Some(row) = self.rows.get(key.index()) else {
            return false;
        };
        let p = (priority as usize).min(PRIORITY_LABELS.len() - 1);
        row.alerts[p].fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The window names, in order, as of the last refresh.
    pub fn windows(&self) -> &[String] {
        &self.windows
    }

    /// Every segment holding responses in some window as of the last
    /// refresh: (product, region, its statistics per window in `windows()`
    /// order), in segment id order. The same numbers /metrics renders.
    pub fn segments(&self) -> impl Iterator<Item = (&str, &str, &[WindowStats])> + '_ {
        let nwin = self.windows.len();
        self.rows.iter().enumerate().filter_map(move |(i, row)| {
            let (product, region) = row.name.as_ref()?;
            row.in_windows.then(|| {
                (
                    product.as_ref(),
                    region.as_ref(),
                    &self.stats[i * nwin..(i + 1) * nwin],
                )
            })
        })
    }

    /// Counts a promoter event of segment `key` in tier `tier` (an index
    /// in the tiers given to `set_tiers`).
    pub fn count_promoter(&self, key: KeyId, tier: usize, withdrawn: bool) -> bool {
        let Some(row) = self.rows.get(key.index()) else {
            return false;
        };
        if let Some(n) = row.promoters.get(tier) {
            n[usize::from(withdrawn)].fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// The promoter tiers' label values, by index (at most `MAX_TIERS`).
    pub fn set_tiers(&mut self, tiers: &[String]) {
        self.tiers = tiers.iter().take(MAX_TIERS).cloned().collect();
    }

    /// Makes room for segment ids below `bound` (the engine's id bound), so
    /// that `count_*` find their row.
    pub fn grow(&mut self, bound: usize) {
        if self.rows.len() < bound {
            // By an eighth: a row is 352 bytes, and doubling would leave
            // up to half of them unused.
            let len = self.rows.len();
            if self.rows.capacity() < bound {
                self.rows.reserve_exact(bound - len + len / 8 + 16);
            }
            self.rows.resize_with(bound, Row::default);
            self.stats
                .resize(bound * self.windows.len(), WindowStats::default());
        }
    }

    /// At each refresh, after the engine's sweep: forgets the segments no
    /// longer in the table (`name` answers None; their counters go), names
    /// the ones that are, and takes the window statistics of `segments`.
    pub fn refresh<'a>(
        &mut self,
        windows: &[WindowSpec],
        segments: &[SegmentStats<'_>],
        name: impl Fn(KeyId) -> Option<(&'a str, &'a str)>,
    ) {
        if self.windows.len() != windows.len()
            || self.windows.iter().zip(windows).any(|(a, b)| *a != b.name)
        {
            self.windows = windows.iter().map(|w| w.name.clone()).collect();
            self.stats.clear();
        }
        let bound = segments
            .iter()
            .map(|s| s.key.index() + 1)
            .max()
            .unwrap_or(0);
        self.grow(bound);
        let nwin = self.windows.len();
        self.stats
            .resize(self.rows.len() * nwin, WindowStats::default());
        for (i, row) in self.rows.iter_mut().enumerate() {
            row.in_windows = false;
            match name(KeyId(i as u32)) {
                None => {
                    if row.labels.is_some() || row.counted() {
                        *row = Row::default();
                    }
                }
                Some((product, region)) => {
                    if row.labels.is_none() {
                        let mut l = String::with_capacity(product.len() + region.len() + 20);
                        l.push_str("product=\"");
                        escape(product, &mut l);
                        l.push_str("\",region=\"");
                        escape(region, &mut l);
                        l.push('"');
                        row.labels = Some(l.into());
                        row.name = Some((product.into(), region.into()));
                    }
                }
            }
        }
        for s in segments {
            let i = s.key.index();
            self.rows[i].in_windows = true;
            for (out, w) in self.stats[i * nwin..(i + 1) * nwin]
                .iter_mut()
                .zip(&s.windows)
            {
                *out = *w;
            }
        }
    }

    /// At each refresh, after `refresh`: the theme names (by number) and
    /// every segment's theme rows (`Engine::theme_stats`).
    pub fn refresh_themes(&mut self, names: &[String], stats: Vec<ThemeStats>) {
        if self.theme_names != names {
            self.theme_names = names.to_vec();
        }
        for row in &mut self.rows {
            row.themes.clear();
        }
        for s in stats {
            if let Some(row) = self.rows.get_mut(s.key.index())
                && row.labels.is_some()
            {
                row.themes.push((s.row, s.windows));
            }
        }
    }

    /// Theme label values, by theme number.
    pub fn theme_names(&self) -> &[String] {
        &self.theme_names
    }

    /// Every segment with theme rows as of the last refresh: (product,
    /// region, its rows), in segment id order.
    pub fn theme_rows(&self) -> impl Iterator<Item = (&str, &str, &[(u8, Vec<WindowStats>)])> + '_ {
        self.rows.iter().filter_map(|row| {
            let (product, region) = row.name.as_ref()?;
            (!row.themes.is_empty())
                .then(|| (product.as_ref(), region.as_ref(), row.themes.as_slice()))
        })
    }

    /// Appends the next rows (at most `max_rows`) of the current family to
    /// `out`, with the family's header before its first row. Returns false
    /// once every family is rendered. Rows are visited in id order, each
    /// once per family, so a refresh between two calls never duplicates a
    /// series.
    pub fn render_some(
        &self,
        cursor: &mut RenderCursor,
        max_rows: usize,
        out: &mut String,
    ) -> bool {
        let Some(&(name, help, kind)) = FAMILIES.get(cursor.family) else {
            return false;
        };
        if cursor.row == 0 {
            header(out, name, help, kind);
        }
        let end = (cursor.row + max_rows).min(self.rows.len());
        for i in cursor.row..end {
            self.render_row(cursor.family, i, out);
        }
        if end >= self.rows.len() {
            *cursor = RenderCursor {
                family: cursor.family + 1,
                row: 0,
            };
        } else {
            cursor.row = end;
        }
        true
    }

    /// Everything at once (tests, benchmarks).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut cursor = RenderCursor::default();
        while self.render_some(&mut cursor, usize::MAX, &mut out) {}
        out
    }

    fn render_row(&self, family: usize, i: usize, out: &mut String) {
        let row = &self.rows[i];
        let Some(labels) = row.labels.as_deref() else {
            return;
        };
        let name = FAMILIES[family].0;
        match family {
            0 => {
                for (channel, counts) in CHANNEL_LABELS.iter().zip(&row.responses) {
                    for (c, n) in Category::ALL.iter().zip(counts) {
                        let n = n.load(Ordering::Relaxed);
                        if n > 0 {
                            let _ = writeln!(
                                out,
                                "{name}{{{labels},channel=\"{channel}\",category=\"{}\"}} {n}",
                                c.as_str()
                            );
                        }
                    }
                }
            }
            1 => {
                for (priority, n) in PRIORITY_LABELS.iter().zip(&row.alerts) {
                    let n = n.load(Ordering::Relaxed);
                    if n > 0 {
                        let _ = writeln!(out, "{name}{{{labels},priority=\"{priority}\"}} {n}");
                    }
                }
            }
            8 | 9 => {
                let withdrawn = usize::from(family == 9);
                for (tier, n) in self.tiers.iter().zip(&row.promoters) {
                    let n = n[withdrawn].load(Ordering::Relaxed);
                    if n > 0 {
                        out.push_str(name);
                        out.push('{');
                        out.push_str(labels);
                        out.push_str(",tier=\"");
                        escape(tier, out);
                        let _ = writeln!(out, "\"}} {n}");
                    }
                }
            }
            10 | 11 => self.render_themes(family == 11, row, labels, out),
            _ if row.in_windows => {
                let nwin = self.windows.len();
                for (window, w) in self
                    .windows
                    .iter()
                    .zip(&self.stats[i * nwin..(i + 1) * nwin])
                {
                    let v = match family {
                        2 => w.nps(),
                        3 => {
                            if w.responses() > 0 {
                                for c in Category::ALL {
                                    let _ = writeln!(
                                        out,
                                        "{name}{{{labels},window=\"{window}\",category=\"{}\"}} {}",
                                        c.as_str(),
                                        w.count(c)
                                    );
                                }
                            }
                            None
                        }
                        4 => w.margin_of_error(),
                        5 => w.weighted_nps(),
                        6 => (w.responses() > 0).then_some(w.weight_net),
                        7 => (w.responses() > 0).then_some(w.weight_total),
                        _ => None,
                    };
                    if let Some(v) = v {
                        let _ = writeln!(out, "{name}{{{labels},window=\"{window}\"}} {v}");
                    }
                }
            }
            _ => {}
        }
    }
}

impl SegmentSeries {
    /// A row's `nps_theme_responses` (or, `commented`,
    /// `nps_commented_responses`): each category of each window with
    /// answers.
    fn render_themes(&self, commented: bool, row: &Row, labels: &str, out: &mut String) {
        let name = if commented {
            COMMENTED_RESPONSES
        } else {
            THEME_RESPONSES
        };
        for (theme, windows) in &row.themes {
            let theme_label = match (*theme, commented) {
                (COMMENTED, true) => None,
                (COMMENTED, false) | (_, true) => continue,
                (i, false) => match self.theme_names.get(usize::from(i)) {
                    Some(n) => Some(n.as_str()),
                    None => continue,
                },
            };
            for (window, w) in self.windows.iter().zip(windows) {
                if w.responses() == 0 {
                    continue;
                }
                for c in Category::ALL {
                    out.push_str(name);
                    out.push('{');
                    out.push_str(labels);
                    let _ = write!(out, ",window=\"{window}\"");
                    if let Some(t) = theme_label {
                        let _ = write!(out, ",theme=\"{t}\"");
                    }
                    let _ = writeln!(out, ",category=\"{}\"}} {}", c.as_str(), w.count(c));
                }
            }
        }
    }
}

impl Row {
    fn counted(&self) -> bool {
        self.responses
            .iter()
            .flatten()
            .chain(&self.alerts)
            .chain(self.promoters.iter().flatten())
            .any(|n| n.load(Ordering::Relaxed) > 0)
    }
}
