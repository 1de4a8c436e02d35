//! `--count-writes`: the server's write syscalls over the sending window, counted by `perf stat` on the
//! server's process, so a run reports how many deliveries each write carried.
//!
//! Why: per delivery, a fan-out server's cost is mostly the kernel's cost per write (docs/BENCHMARKS.md,
//! "The kernel's floor"), so deliveries per write is the figure that explains deliveries per core-second.
//! Counting needs `perf` and access to the syscall tracepoints (root, or a low
//! `kernel.perf_event_paranoid`); [`check`] says so before the run starts rather than after it. perf
//! attaches to the threads the process has when the window opens: a thread started later is not counted.

use std::process::{Child, Command, Stdio};

/// Every syscall a TCP, WebSocket or UDP server writes to its clients with: group-server uses `sendmsg`,
/// redis `write`, nats `writev`.
const EVENTS: &str = "syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendmsg,\
                      syscalls:sys_enter_sendto,syscalls:sys_enter_sendmmsg";

/// How long a check or a count may outlive what it waits for.
const GRACE_SECS: u64 = 10;

fn perf_stat(pid: u32, command: &[String]) -> Result<Child, String> {
    Command::new("perf")
        .args([
            "stat",
            "-x",
            ",",
            "-e",
            EVENTS,
            "-p",
            &pid.to_string(),
            "--",
        ])
        .args(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "--count-writes needs perf (Debian: apt-get install linux-perf): running it: {e}"
            )
        })
}

/// Waits for a `perf stat` started by [`perf_stat`] and sums its counts.
fn finish(child: Child) -> Result<u64, String> {
    let output = child
        .wait_with_output()
        .map_err(|e| format!("--count-writes: waiting for perf: {e}"))?;
    let text = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        // perf's own words, without the usage text it prints after them.
        let said: Vec<&str> = text
            .lines()
            .take_while(|l| !l.starts_with(" Usage:"))
            .filter(|l| !l.trim().is_empty())
            .take(3)
            .collect();
        return Err(format!(
            "--count-writes: perf stat on the server's process failed ({}): {}. It needs that process \
             to exist, and access to the syscall tracepoints (root, or kernel.perf_event_paranoid -1)",
            output.status,
            said.join(" / ")
        ));
    }
    sum_counts(&text)
}

/// Fails unless `perf stat` can count `pid`'s write syscalls. It counts for a fifth of a second: over
/// a shorter run perf reports the events as not counted.
pub fn check(pid: u32) -> Result<(), String> {
    finish(perf_stat(pid, &["sleep".to_string(), "0.2".to_string()])?).map(|_| ())
}

/// A count running over the sending window: it ends by itself `seconds` after it starts.
pub struct WriteCount {
    child: Child,
}

impl WriteCount {
    pub fn start(pid: u32, seconds: u64) -> Result<WriteCount, String> {
        let child = perf_stat(pid, &["sleep".to_string(), seconds.to_string()])?;
        Ok(WriteCount { child })
    }

    /// The writes counted, once the count has ended (at most [`GRACE_SECS`] after the window).
    pub async fn finish(self) -> Result<u64, String> {
        let waiting = tokio::task::spawn_blocking(move || finish(self.child));
        match tokio::time::timeout(std::time::Duration::from_secs(GRACE_SECS), waiting).await {
            Ok(Ok(counted)) => counted,
            Ok(Err(e)) => Err(format!("--count-writes: {e}")),
            Err(_) => Err(format!(
                "--count-writes: perf stat did not end within {GRACE_SECS} s of the window"
            )),
        }
    }
}

/// The sum of the counts in `perf stat -x ,` output: one `count,unit,event,...` line per event.
/// `<not counted>` is a zero (perf says so when the process never ran while it counted: an idle
/// server); any other count that is not a number (`<not supported>`) is an error.
pub fn sum_counts(text: &str) -> Result<u64, String> {
    let mut total = 0u64;
    let mut events = 0;
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(count), Some(event)) = (fields.first(), fields.get(2)) else {
            continue;
        };
        if !event.starts_with("syscalls:") {
            continue;
        }
        let count: u64 = match count.trim() {
            "<not counted>" => 0,
            count => count
                .parse()
                .map_err(|_| format!("--count-writes: perf could not count {event}: {line:?}"))?,
        };
        total = total.saturating_add(count);
        events += 1;
    }
    if events == 0 {
        return Err(format!(
            "--count-writes: no counts in perf's output: {:?}",
            text.lines().take(3).collect::<Vec<_>>()
        ));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counts_of_every_event_add_up() {
        let text = "\n 1200,,syscalls:sys_enter_write,4000123456,100.00,,\n\
                    30,,syscalls:sys_enter_writev,4000123456,100.00,,\n\
                    5,,syscalls:sys_enter_sendmsg,4000123456,100.00,,\n";
        assert_eq!(sum_counts(text), Ok(1235));
    }

    #[test]
    fn an_event_of_a_process_that_never_ran_counts_zero() {
        let text = "12,,syscalls:sys_enter_write,1,100.00,,\n\
                    <not counted>,,syscalls:sys_enter_sendmsg,0,100.00,,\n";
        assert_eq!(sum_counts(text), Ok(12));
    }

    #[test]
    fn an_event_perf_cannot_count_is_an_error() {
        let text = "12,,syscalls:sys_enter_write,1,100.00,,\n\
                    <not supported>,,syscalls:sys_enter_sendmsg,0,0.00,,\n";
        let error = sum_counts(text).expect_err("a count is missing");
        assert!(error.contains("sys_enter_sendmsg"), "{error}");
        assert!(sum_counts("Error: no access to tracepoints\n").is_err());
        assert!(sum_counts("").is_err());
    }
}
