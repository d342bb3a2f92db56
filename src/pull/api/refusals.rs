//! Requests the API refuses as the client's fault (4xx), and connections
//! refused past `max_connections`, are logged as one WARN line per minute
//! with counts by kind, never one line each: a client that sends garbage, or
//! a flood of it, cannot drown the log.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often at most a summary line is written.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// Counts since the last summary.
#[derive(Debug)]
pub struct RefusalLog {
    /// What is counted, plural, as the summary names it.
    what: &'static str,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    counts: BTreeMap<String, u64>,
    /// When the last summary was written (`None`: never).
    written: Option<Instant>,
}

impl Default for RefusalLog {
    /// Counts client requests, by status.
    fn default() -> Self {
        Self::new("client request(s)")
    }
}

impl RefusalLog {
    /// Counts refused `what` (plural, e.g. "connection(s)").
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            window: Mutex::new(Window {
                counts: BTreeMap::new(),
                written: None,
            }),
        }
    }

    /// Counts a refusal of `kind` (a status, a reason); returns the summary
    /// line to write when an interval has passed since the last one (or for
    /// the first).
    pub fn count(&self, kind: impl ToString, now: Instant) -> Option<String> {
        let mut w = self.window.lock().ok()?;
        *w.counts.entry(kind.to_string()).or_default() += 1;
        if w.written.is_some_and(|t| now.duration_since(t) < INTERVAL) {
            return None;
        }
        let total: u64 = w.counts.values().sum();
        let by_status: Vec<String> = w
            .counts
            .iter()
            .map(|(kind, n)| format!("{kind}: {n}"))
            .collect();
        w.counts.clear();
        w.written = Some(now);
        Some(format!(
            "refused {total} {} since the last report ({}); next report in {} s at the earliest",
            self.what,
            by_status.join(", "),
            INTERVAL.as_secs()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_counts_by_status() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        let first = log.count(400, t0).expect("the first refusal is reported");
        assert!(
            first.contains("refused 1 ") && first.contains("400: 1"),
            "{first}"
        );
        for i in 0..1000 {
            assert_eq!(
                log.count(
                    if i % 2 == 0 { 400 } else { 404 },
                    t0 + Duration::from_secs(1)
                ),
                None
            );
        }
        let next = log
            .count(413, t0 + INTERVAL)
            .expect("a summary after the interval");
        assert!(
            next.contains("refused 1001 ") && next.contains("400: 500, 404: 500, 413: 1"),
            "{next}"
        );
    }
}
