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

/// CPU time (user + system) a process used so far, in seconds, from `/proc/<pid>/stat` (`None` for
/// "self" elsewhere than Linux). Clock ticks are taken as 100 per second, Linux's USER_HZ on every
/// mainstream architecture.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_string(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count fields after it.
    let after_name = stat.rsplit_once(')')?.1;
    let mut fields = after_name.split_whitespace();
    // Fields 3.. follow; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// CPU use between two readings over `elapsed`, in percent of one core.
pub fn cpu_percent(before: Option<f64>, after: Option<f64>, elapsed: Duration) -> Option<f64> {
    Some((after? - before?) * 100.0 / elapsed.as_secs_f64().max(1e-9))
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
        assert!(
            cpu_seconds(None).is_some_and(|s| s >= 0.0),
            "this process's own CPU time"
        );
        assert_eq!(
            cpu_percent(Some(1.0), Some(2.5), Duration::from_secs(3)),
            Some(50.0)
        );
    }
}
