//! Latency percentiles, /proc memory readings, rates: the arithmetic of group-bench's summary.

use std::time::Duration;

/// Latency percentiles over all samples, in microseconds.
#[derive(Debug, Default, Clone, Copy)]
pub struct Percentiles {
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// Nearest-rank percentiles; sorts `samples` in place.
pub fn percentiles(samples: &mut [u32]) -> Percentiles {
    if samples.is_empty() {
        return Percentiles::default();
    }
    samples.sort_unstable();
    let last = samples.len() - 1;
    let at = |per_mille: usize| {
        let index = (last * per_mille + 500) / 1000;
        u64::from(samples.get(index).copied().unwrap_or(0))
    };
    Percentiles {
        p50_us: at(500),
        p99_us: at(990),
        p999_us: at(999),
        max_us: at(1000),
    }
}

/// Resident memory of a process in bytes, from /proc (Linux only; `None` elsewhere).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Events per second over `elapsed`.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut samples: Vec<u32> = (1..=1000).collect();
        let p = percentiles(&mut samples);
        assert_eq!(
            (p.p50_us, p.p99_us, p.p999_us, p.max_us),
            (501, 990, 999, 1000)
        );
        assert_eq!(percentiles(&mut []).p99_us, 0);
        assert_eq!(per_second(10, Duration::from_secs(2)), 5.0);
    }
}
