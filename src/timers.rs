//! The timer scheduler: runs the calls modules asked for with `ctx.after`.
//!
//! The engine keeps every pending timer with its instance, in due order
//! (`Engine::next_timer_due`, `Engine::take_due_timers`); this task sleeps
//! until the next one is due, or until the engine says an earlier one was
//! set (`EngineConfig::on_earlier_timer` wakes [`Timers::wake`]), and
//! starts each due timer as a call of its own. Each runs like a client's
//! call: through the upgrade gate, on its instance's turn, on a thread of
//! the call pool (`calls.rs`). So a timer whose instance is stuck waits for
//! that instance alone, and neither the scheduler nor other modules wait.
//!
//! Timers stop with the process: on stop or hand-over the scheduler ends.
//! A timer it took but had not run yet is still pending with its instance,
//! so the final save, or the state sent to the new process, still holds it
//! and it runs after the start or in the new process. A timer due while
//! the daemon was down runs right after the start, and counts as late.
//!
//! Ticks (`sockets/ticks.rs`) are a task of their own per ticking module,
//! on the same tokio timer, call pool, upgrade gate and lateness measure:
//! a tick is not state to keep with its instance (as a timer is), and which
//! instances tick is decided by their sessions, which only the daemon knows.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use hotswap::DueTimer;

use crate::api;
use crate::daemon::Daemon;
use crate::http::Listening;
use crate::lateness::{self, Lateness};

/// The longest the scheduler sleeps without looking at the wall clock
/// again: due times are wall-clock times, and that clock can be set.
const LONGEST_SLEEP: Duration = Duration::from_secs(1);

/// What the daemon counts of its timers, and the scheduler's wake-up.
#[derive(Debug, Default)]
pub struct Timers {
    /// Told by the engine when a timer is set that is due before every
    /// other (a stored permit covers a wake-up while the scheduler is busy).
    pub wake: Arc<tokio::sync::Notify>,
    fired: AtomicU64,
    failed: AtomicU64,
    /// How late each of the last timers started.
    lateness: Lateness,
}

impl Timers {
    /// The engine's hook that wakes the scheduler.
    pub fn engine_wake(&self) -> hotswap::TimerWake {
        let wake = self.wake.clone();
        hotswap::TimerWake::new(move |_due| wake.notify_one())
    }

    fn ran(&self, late: Duration, ok: bool) {
        self.fired.fetch_add(1, Relaxed);
        if !ok {
            self.failed.fetch_add(1, Relaxed);
        }
        self.lateness.record(late);
    }

    /// The counts and lateness percentiles, with `pending` from the engine.
    pub fn status(&self, pending: usize) -> api::Timers {
        let (late_p50_ms, late_p99_ms) = self.lateness.p50_p99_ms();
        api::Timers {
            pending: pending as u64,
            fired: self.fired.load(Relaxed),
            failed: self.failed.load(Relaxed),
            late_p50_ms,
            late_p99_ms,
        }
    }

    /// The timer lines of `GET /metrics`.
    pub fn render(&self, text: &mut String, pending: usize) {
        let status = self.status(pending);
        let lines: [(&str, &str, &str, u64); 3] = [
            (
                "hotswap_timers_pending",
                "gauge",
                "Timers set by modules (ctx.after) that have not run.",
                status.pending,
            ),
            ("hotswap_timers_fired_total", "counter", "Timers whose call ran.", status.fired),
            (
                "hotswap_timers_failed_total",
                "counter",
                "Timers whose call returned an error or panicked.",
                status.failed,
            ),
        ];
        for (name, kind, help, value) in lines {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        let percentiles = (status.late_p50_ms, status.late_p99_ms);
        lateness::render_summary(text, "hotswap_timer_lateness_seconds", "timers", percentiles);
    }
}

/// The scheduler task: runs until the daemon stops or hands over.
pub async fn run(daemon: Arc<Daemon>) {
    let mut listening = daemon.listening.subscribe();
    loop {
        for timer in daemon.engine.take_due_timers(SystemTime::now()) {
            tokio::spawn(fire(daemon.clone(), timer));
        }
        let sleep = daemon.engine.next_timer_due().map_or(LONGEST_SLEEP, |due| {
            due.duration_since(SystemTime::now()).unwrap_or_default().min(LONGEST_SLEEP)
        });
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = daemon.timers.wake.notified() => {}
            _ = listening.wait_for(|mode| matches!(mode, Listening::Stop | Listening::HandOver)) => return,
        }
    }
}

/// Runs one due timer as a call of its own, and counts it.
async fn fire(daemon: Arc<Daemon>, timer: DueTimer) {
    // Through the upgrade gate, as every call: none runs while the state moves.
    let _open = daemon.gate.read().await;
    if daemon.handed_over.get().is_some() {
        // The state sent to the new process holds this timer: it runs there.
        return;
    }
    let turn = daemon.calls.turn(&timer.module, &timer.instance).await;
    let pool = daemon.calls.pool.clone();
    let running = daemon.clone();
    let ran = pool
        .run_and_wait(move || {
            let late = SystemTime::now().duration_since(timer.due).unwrap_or_default();
            let (result, _) = turn.run(&timer.method, || running.engine.run_timer(&timer));
            (timer, late, result)
        })
        .await;
    match ran {
        // Its instance was removed, or its module unloaded: nothing to run.
        Some((_, _, Ok(None))) => {}
        Some((_, late, Ok(Some(_)))) => daemon.timers.ran(late, true),
        Some((timer, late, Err(error))) => {
            daemon.timers.ran(late, false);
            tracing::warn!(
                module = %timer.module,
                instance = %timer.instance,
                method = %timer.method,
                "a timer's call failed: {error}"
            );
        }
        None => tracing::error!("the thread of a timer's call failed; see the log"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_percentiles_cover_the_last_timers_only() {
        let timers = Timers::default();
        assert_eq!(timers.status(0).late_p50_ms, None, "none ran yet");
        for ms in 1..=100 {
            timers.ran(Duration::from_millis(ms), ms % 10 != 0);
        }
        let status = timers.status(3);
        assert_eq!((status.pending, status.fired, status.failed), (3, 100, 10));
        assert_eq!((status.late_p50_ms, status.late_p99_ms), (Some(50.0), Some(99.0)));
        for _ in 0..lateness::WINDOW {
            timers.ran(Duration::ZERO, true);
        }
        assert_eq!(timers.status(0).late_p99_ms, Some(0.0), "older ones left the window");
    }
}
