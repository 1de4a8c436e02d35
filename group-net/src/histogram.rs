//! A latency histogram with fixed buckets that any task can record into without a lock, rendered in
//! Prometheus's text format. Fixed buckets (0.5 ms to 10 s) fit what the server times: remote joins (a
//! mesh round trip, up to `meshRequestTimeout` x `remoteJoinTries`) and hooks (up to `server.hookTimeout`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds; one more bucket (`+Inf`) takes the rest.
const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counts per bucket (not cumulative: rendering sums them), the sum of all values, and their count.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let index = BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BOUNDS.len());
        if let Some(bucket) = self.buckets.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes the `_bucket`, `_sum` and `_count` series of `name`; `labels` is empty or `key="value",...`
    /// without braces. The caller writes the HELP and TYPE lines once per name.
    pub fn render(&self, name: &str, labels: &str, out: &mut String) {
        let separator = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (index, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let bound = BOUNDS
                .get(index)
                .map_or_else(|| "+Inf".to_string(), f64::to_string);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{separator}le=\"{bound}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(500));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60));
        let mut out = String::new();
        histogram.render("t_seconds", "hook=\"x\"", &mut out);
        assert!(
            out.contains("t_seconds_bucket{hook=\"x\",le=\"0.0005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("t_seconds_bucket{hook=\"x\",le=\"0.0025\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("t_seconds_bucket{hook=\"x\",le=\"0.005\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("t_seconds_bucket{hook=\"x\",le=\"10\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("t_seconds_bucket{hook=\"x\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("t_seconds_sum{hook=\"x\"} 60.0035\n"), "{out}");
        assert!(out.contains("t_seconds_count{hook=\"x\"} 3\n"), "{out}");
    }
}
