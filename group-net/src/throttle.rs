//! Log lines that a peer can cause at will (a refused connection, datagram, token or mesh peer) are
//! throttled: at most one per second per kind, carrying the count of the ones left out. A flood then costs
//! the operator one line a second, not one line per packet.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a throttled kind of line may be written.
const EVERY: Duration = Duration::from_secs(1);

/// One kind of throttled log line.
pub(crate) struct Throttle {
    /// When a line was last let through, and how many were held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub(crate) const fn new() -> Self {
        Throttle {
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(held_back)` when a line may be written now (`held_back` lines of this kind were left out
    /// since the last one); `None` when this one must be left out.
    pub(crate) fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, held_back) = &mut *state;
        if last.is_some_and(|at| now.duration_since(at) < EVERY) {
            *held_back += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_with_the_count_of_those_left_out() {
        let throttle = Throttle::new();
        let start = Instant::now();
        assert_eq!(throttle.allow_at(start), Some(0));
        for ms in [1, 10, 500, 999] {
            assert_eq!(throttle.allow_at(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(
            throttle.allow_at(start + Duration::from_millis(1000)),
            Some(4)
        );
        assert_eq!(throttle.allow_at(start + Duration::from_millis(1001)), None);
    }
}
