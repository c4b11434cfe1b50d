//! NPS arithmetic: categories, and the statistics of one window's counts.
//!
//! Pure functions over counts; nothing here knows about time or Kafka.

use std::fmt;

/// Where a 0–10 score falls. 9–10 promoter, 7–8 passive, 0–6 detractor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Promoter,
    Passive,
    Detractor,
}

impl Category {
    /// All categories, in the order metrics and tables list them.
    pub const ALL: [Category; 3] = [Category::Promoter, Category::Passive, Category::Detractor];

    /// The category of a score. Scores above 10 never reach here: validation
    /// refuses them, and this treats them as promoters rather than panic.
    pub fn of_score(score: u32) -> Category {
        match score {
            0..=6 => Category::Detractor,
            7..=8 => Category::Passive,
            _ => Category::Promoter,
        }
    }

    /// Its place in `ALL`: where per-category counts keep it.
    pub fn index(self) -> usize {
        match self {
            Category::Promoter => 0,
            Category::Passive => 1,
            Category::Detractor => 2,
        }
    }

    /// The label value used in metrics: `promoter`, `passive`, `detractor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Promoter => "promoter",
            Category::Passive => "passive",
            Category::Detractor => "detractor",
        }
    }

    /// The response's contribution to NPS as a mean: +1, 0 or −1.
    pub fn sign(self) -> f64 {
        match self {
            Category::Promoter => 1.0,
            Category::Passive => 0.0,
            Category::Detractor => -1.0,
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The z-value of a two-sided 95% confidence interval.
const Z_95: f64 = 1.96;

/// What one window holds for one segment: counts per category and the
/// value-weighted sums. Adding two of these merges two disjoint sets of
/// responses (two partitions, two instances).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowStats {
    pub promoters: u64,
    pub passives: u64,
    pub detractors: u64,
    /// Σ weight × sign (+1 promoter, 0 passive, −1 detractor).
    pub weight_net: f64,
    /// Σ weight.
    pub weight_total: f64,
}

impl WindowStats {
    /// Number of responses in the window.
    pub fn responses(&self) -> u64 {
        self.promoters + self.passives + self.detractors
    }

    pub fn count(&self, category: Category) -> u64 {
        match category {
            Category::Promoter => self.promoters,
            Category::Passive => self.passives,
            Category::Detractor => self.detractors,
        }
    }

    /// NPS = 100 × (P − D) / N, in −100..=100. `None` for an empty window:
    /// no responses is not an NPS of 0.
    pub fn nps(&self) -> Option<f64> {
        let n = self.responses();
        if n == 0 {
            return None;
        }
        Some(100.0 * (self.promoters as f64 - self.detractors as f64) / n as f64)
    }

    /// Half-width of the 95% confidence interval of the NPS, in NPS points.
    /// NPS is the mean of +1/0/−1 per response; with p and d the promoter
    /// and detractor shares its variance is p + d − (p − d)², so the margin
    /// is 1.96 × sqrt((p + d − (p − d)²) / n) × 100.
    pub fn margin_of_error(&self) -> Option<f64> {
        let n = self.responses();
        if n == 0 {
            return None;
        }
        let n = n as f64;
        let p = self.promoters as f64 / n;
        let d = self.detractors as f64 / n;
        // Rounding can make the variance a hair below zero when it is 0.
        let variance = (p + d - (p - d) * (p - d)).max(0.0);
        Some(Z_95 * (variance / n).sqrt() * 100.0)
    }

    /// Value-weighted NPS: 100 × Σ w·sign / Σ w, weights being the
    /// customers' value (1 when absent). `None` when the window is empty or
    /// all its weights are 0.
    pub fn weighted_nps(&self) -> Option<f64> {
        if self.responses() == 0 || self.weight_total <= 0.0 {
            return None;
        }
        Some((100.0 * self.weight_net / self.weight_total).clamp(-100.0, 100.0))
    }

    /// Adds one response.
    pub fn add(&mut self, category: Category, weight: f64) {
        match category {
            Category::Promoter => self.promoters += 1,
            Category::Passive => self.passives += 1,
            Category::Detractor => self.detractors += 1,
        }
        self.weight_net += weight * category.sign();
        self.weight_total += weight;
    }

    /// Merges another disjoint set of responses into this one.
    pub fn merge(&mut self, other: &WindowStats) {
        self.promoters += other.promoters;
        self.passives += other.passives;
        self.detractors += other.detractors;
        self.weight_net += other.weight_net;
        self.weight_total += other.weight_total;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(p: u64, pa: u64, d: u64) -> WindowStats {
        let mut s = WindowStats::default();
        for (c, k) in [
            (Category::Promoter, p),
            (Category::Passive, pa),
            (Category::Detractor, d),
        ] {
            for _ in 0..k {
                s.add(c, 1.0);
            }
        }
        s
    }

    #[test]
    fn categories_follow_the_0_6_7_8_9_10_bands() {
        let got: Vec<_> = (0..=10).map(Category::of_score).collect();
        use Category::*;
        assert_eq!(
            got,
            vec![
                Detractor, Detractor, Detractor, Detractor, Detractor, Detractor, Detractor,
                Passive, Passive, Promoter, Promoter
            ]
        );
    }

    #[test]
    fn empty_window_has_no_nps_not_zero() {
        let s = WindowStats::default();
        assert_eq!(s.nps(), None);
        assert_eq!(s.margin_of_error(), None);
        assert_eq!(s.weighted_nps(), None);
    }

    #[test]
    fn nps_is_promoter_share_minus_detractor_share() {
        // 50 P, 30 passives, 20 D: NPS 30.
        let s = stats(50, 30, 20);
        assert_eq!(s.nps(), Some(30.0));
        // p = .5, d = .2: variance .7 − .09 = .61; 1.96 × sqrt(.61/100) × 100
        let moe = s.margin_of_error().unwrap();
        assert!((moe - 1.96 * (0.61f64 / 100.0).sqrt() * 100.0).abs() < 1e-9);
        assert!((moe - 15.308_089_4).abs() < 1e-6, "{moe}");
    }

    #[test]
    fn all_promoters_is_100_with_zero_margin() {
        let s = stats(7, 0, 0);
        assert_eq!(s.nps(), Some(100.0));
        assert_eq!(s.margin_of_error(), Some(0.0));
        let s = stats(0, 0, 3);
        assert_eq!(s.nps(), Some(-100.0));
    }

    #[test]
    fn weighted_nps_weighs_by_customer_value() {
        let mut s = WindowStats::default();
        s.add(Category::Promoter, 1.0);
        s.add(Category::Detractor, 3.0);
        // Unweighted 0, weighted (1 − 3) / 4 = −50.
        assert_eq!(s.nps(), Some(0.0));
        assert_eq!(s.weighted_nps(), Some(-50.0));
    }

    #[test]
    fn zero_weights_give_no_weighted_nps() {
        let mut s = WindowStats::default();
        s.add(Category::Promoter, 0.0);
        assert_eq!(s.nps(), Some(100.0));
        assert_eq!(s.weighted_nps(), None);
    }
}
