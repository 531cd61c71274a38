//! How late timers and ticks started: the last samples, their median and
//! 99th percentile, and the summary lines `GET /metrics` shows for them.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// How many recent samples the percentiles are taken over.
pub const WINDOW: usize = 1024;

/// The last [`WINDOW`] lateness samples, newest last.
#[derive(Debug, Default)]
pub struct Lateness(Mutex<VecDeque<Duration>>);

impl Lateness {
    pub fn record(&self, late: Duration) {
        let mut samples = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if samples.len() == WINDOW {
            samples.pop_front();
        }
        samples.push_back(late);
    }

    /// The median and the 99th percentile, in milliseconds; `None` before
    /// the first sample.
    pub fn p50_p99_ms(&self) -> (Option<f64>, Option<f64>) {
        let mut samples: Vec<Duration> =
            self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().copied().collect();
        samples.sort();
        let percentile = |p: usize| {
            let at = (samples.len() * p).div_ceil(100).saturating_sub(1);
            samples.get(at).map(|late| late.as_secs_f64() * 1000.0)
        };
        (percentile(50), percentile(99))
    }
}

/// The summary lines of metric `name` ("How late {what} started").
pub fn render_summary(
    text: &mut String,
    name: &str,
    what: &str,
    (p50_ms, p99_ms): (Option<f64>, Option<f64>),
) {
    let _ = writeln!(
        text,
        "# HELP {name} How late {what} started, over the last {WINDOW}.\n# TYPE {name} summary"
    );
    for (quantile, ms) in [("0.5", p50_ms), ("0.99", p99_ms)] {
        if let Some(ms) = ms {
            let _ = writeln!(text, "{name}{{quantile=\"{quantile}\"}} {}", ms / 1000.0);
        }
    }
}
