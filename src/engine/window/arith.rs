//! Bucket arithmetic: which bucket an instant falls in, fast, and which
//! buckets `now` has already let go of.

/// For one `now`: per window, the newest bucket number that is already out
/// of the window (⌊now / b⌋ − buckets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NowIndex {
    pub(crate) now: i64,
    pub(super) oldest_excluded: Vec<i64>,
}

impl NowIndex {
    /// Whether every window's oldest bucket is the same at both instants.
    pub(crate) fn same_buckets(&self, other: &NowIndex) -> bool {
        self.oldest_excluded == other.oldest_excluded
    }

    /// The windows whose oldest bucket differs between the two instants,
    /// as bits (window w: bit w; windows beyond 64 share bit 63).
    pub(crate) fn moved(&self, other: &NowIndex) -> u64 {
        self.oldest_excluded
            .iter()
            .zip(&other.oldest_excluded)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .fold(0, |bits, (w, _)| bits | 1 << w.min(63))
    }
}

/// Floor division and remainder by a positive constant: multiply-shift for
/// non-negative operands, the hardware division for the rare negative ones
/// (instants before 1970, the "no event" marker).
#[derive(Debug, Clone, Copy)]
pub(super) struct Divisor {
    fast: strength_reduce::StrengthReducedU64,
    d: i64,
}

impl PartialEq for Divisor {
    fn eq(&self, other: &Self) -> bool {
        self.d == other.d
    }
}
impl Eq for Divisor {}

impl Divisor {
    pub(super) fn new(d: i64) -> Self {
        // Layout construction guarantees d >= 1.
        let d = d.max(1);
        Divisor {
            fast: strength_reduce::StrengthReducedU64::new(d as u64),
            d,
        }
    }

    #[inline]
    pub(super) fn div_floor(&self, x: i64) -> i64 {
        if x >= 0 {
            (x as u64 / self.fast) as i64
        } else {
            x.div_euclid(self.d)
        }
    }

    #[inline]
    pub(super) fn rem_floor(&self, x: i64) -> i64 {
        if x >= 0 {
            (x as u64 % self.fast) as i64
        } else {
            x.rem_euclid(self.d)
        }
    }
}
