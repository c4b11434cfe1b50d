//! What the criterion benchmarks share: the instant they measure at and a
//! deterministic PRNG, so that runs compare.

/// "Now" in every benchmark (2025-11-22T12:00:00Z), in Unix ms.
pub const T0: i64 = 1_763_812_800_000;

/// A small deterministic PRNG (xorshift).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
