//! Virtual time. The core never reads a clock: every input carries an [`Instant`] chosen by the driver.

use std::time::Duration;

/// A point on the driver's monotonic clock, in nanoseconds since an origin the driver picks.
///
/// The core only compares instants and adds durations to them; it never asks what time it is. A tokio
/// driver maps `tokio::time::Instant` onto this by subtracting its start instant; a simulation simply
/// counts. Using our own type (rather than `std::time::Instant`) lets tests start at zero and jump to any
/// deadline, which makes transcripts reproducible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The origin of the driver's clock.
    pub const ZERO: Instant = Instant(0);

    /// An instant `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Instant(nanos)
    }

    /// An instant `millis` milliseconds after the origin.
    pub const fn from_millis(millis: u64) -> Self {
        Instant(millis.saturating_mul(1_000_000))
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self + duration`, saturating at the end of time instead of overflowing.
    #[must_use]
    pub fn saturating_add(self, duration: Duration) -> Instant {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(nanos))
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_saturates_instead_of_wrapping() {
        let late = Instant::from_nanos(u64::MAX - 5);
        assert_eq!(
            late.saturating_add(Duration::from_secs(1)),
            Instant::from_nanos(u64::MAX)
        );
        assert_eq!(
            Instant::from_millis(3).saturating_add(Duration::from_millis(2)),
            Instant::from_millis(5)
        );
    }

    #[test]
    fn duration_since_never_goes_negative() {
        let a = Instant::from_millis(10);
        let b = Instant::from_millis(4);
        assert_eq!(a.saturating_duration_since(b), Duration::from_millis(6));
        assert_eq!(b.saturating_duration_since(a), Duration::ZERO);
    }
}
