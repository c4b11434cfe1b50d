//! The wall clock, behind a trait: the shell reads the time through it and
//! hands it to the pure cores as `now`, and tests can put another in its
//! place. Nothing else in the crate reads the system time.

/// Wall-clock source, injected so tests control time.
pub trait Clock: Send + Sync {
    /// Unix milliseconds.
    fn now_ms(&self) -> i64;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}
