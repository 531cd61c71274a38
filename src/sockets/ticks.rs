//! `tick`: each instance of a module with at least one session gets
//! `on_tick` at the socket's period.
//!
//! One task per ticking module (not the `ctx.after` scheduler of
//! `timers.rs`): ticks are not state, they need no due times kept with the
//! instance, and the set of instances to tick is the set with sessions,
//! which only this daemon knows. Every period the task starts one tick per
//! such instance, as a call of its own (upgrade gate, the instance's turn,
//! a call thread). A tick whose instance has not finished the previous
//! one is skipped and counted, never queued: a slow instance falls behind
//! by skipping, and holds no more than one tick. When the task itself is
//! late by whole periods (a loaded machine), those periods are skipped for
//! every instance and counted the same way, so `skipped` accounts for every
//! tick that did not run. Instances without sessions
//! get no ticks; the period is read at start (a reload does not change it).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use super::lock;
use crate::api;
use crate::daemon::Daemon;
use crate::http::Listening;
use crate::lateness::{self, Lateness};

/// What the daemon counts of ticks.
#[derive(Debug, Default)]
pub struct TickStats {
    ran: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
    /// How late each of the last ticks started.
    lateness: Lateness,
}

impl TickStats {
    fn ran(&self, late: Duration, ok: bool) {
        self.ran.fetch_add(1, Relaxed);
        if !ok {
            self.failed.fetch_add(1, Relaxed);
        }
        self.lateness.record(late);
    }

    pub fn status(&self) -> api::Ticks {
        let (late_p50_ms, late_p99_ms) = self.lateness.p50_p99_ms();
        api::Ticks {
            ran: self.ran.load(Relaxed),
            failed: self.failed.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            late_p50_ms,
            late_p99_ms,
        }
    }

    pub fn render(&self, text: &mut String) {
        let status = self.status();
        for (name, help, value) in [
            ("hotswap_ticks_total", "Ticks (on_tick) that ran.", status.ran),
            ("hotswap_ticks_failed_total", "Ticks that returned an error or panicked.", status.failed),
            (
                "hotswap_ticks_skipped_total",
                "Ticks that did not run: the instance's previous one still ran, or the tick task was late by whole periods.",
                status.skipped,
            ),
        ] {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        let percentiles = (status.late_p50_ms, status.late_p99_ms);
        lateness::render_summary(text, "hotswap_tick_lateness_seconds", "ticks", percentiles);
    }
}

/// Starts a tick task for each module a `[[socket]]` gives a `tick`.
pub fn spawn_all(daemon: &Arc<Daemon>, tasks: &mut tokio::task::JoinSet<()>) {
    let config = daemon.config();
    let mut started = HashSet::new();
    for socket in &config.sockets {
        // Config validation gives every socket of a module the same tick.
        if let Some(period) = socket.tick
            && started.insert(socket.module.clone())
        {
            tasks.spawn(run(daemon.clone(), socket.module.clone(), period));
        }
    }
}

/// Ticks `module`'s instances with sessions every `period` until the
/// daemon stops or hands over.
async fn run(daemon: Arc<Daemon>, module: String, period: Duration) {
    let mut listening = daemon.listening.subscribe();
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut last_due = None;
    loop {
        let due = tokio::select! {
            due = every.tick() => due,
            _ = listening.wait_for(|mode| matches!(mode, Listening::Stop | Listening::HandOver)) => return,
        };
        let instances = daemon.sockets.instances_of(&module);
        if let Some(last) = last_due.replace(due) {
            let missed = missed_periods(last, due, period).saturating_mul(instances.len() as u64);
            daemon.sockets.ticks.skipped.fetch_add(missed, Relaxed);
        }
        for instance in instances {
            if !lock(&running).insert(instance.clone()) {
                daemon.sockets.ticks.skipped.fetch_add(1, Relaxed);
                continue;
            }
            tokio::spawn(tick(daemon.clone(), module.clone(), instance, due, running.clone()));
        }
    }
}

/// The whole periods between two ticks the interval gave (it skips the
/// periods it was too late for, so `due` is `last` plus a whole number of
/// periods): none when it kept time.
fn missed_periods(last: Instant, due: Instant, period: Duration) -> u64 {
    let periods = due.saturating_duration_since(last).as_nanos() / period.as_nanos().max(1);
    u64::try_from(periods.saturating_sub(1)).unwrap_or(u64::MAX)
}

/// One tick of one instance.
async fn tick(
    daemon: Arc<Daemon>,
    module: String,
    instance: String,
    due: Instant,
    running: Arc<Mutex<HashSet<String>>>,
) {
    let done = Done { running, instance: instance.clone() };
    let _open = daemon.gate.read().await;
    if daemon.handed_over.get().is_some() {
        return;
    }
    let turn = daemon.calls.turn(&module, &instance).await;
    let ticking = daemon.clone();
    let ran = daemon
        .calls
        .pool
        .run_and_wait(move || {
            let late = Instant::now().saturating_duration_since(due);
            let (result, _) = turn.run("on_tick", || ticking.engine.tick(turn.module(), turn.instance()));
            (late, result)
        })
        .await;
    drop(done);
    match ran {
        Some((late, Ok(()))) => daemon.sockets.ticks.ran(late, true),
        Some((late, Err(error))) => {
            daemon.sockets.ticks.ran(late, false);
            tracing::warn!(module, instance, "on_tick failed: {error}");
        }
        None => tracing::error!(module, instance, "the thread of a tick failed; see the log"),
    }
}

/// Lets the instance's next tick start, even if this one's task ends early.
struct Done {
    running: Arc<Mutex<HashSet<String>>>,
    instance: String,
}

impl Drop for Done {
    fn drop(&mut self) {
        lock(&self.running).remove(&self.instance);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_the_tick_task_was_too_late_for_are_counted() {
        let start = Instant::now();
        let period = Duration::from_millis(50);
        assert_eq!(missed_periods(start, start + period, period), 0, "on time");
        assert_eq!(missed_periods(start, start + period * 4, period), 3);
        assert_eq!(missed_periods(start, start, period), 0);
    }

    #[test]
    fn tick_lateness_percentiles_cover_the_last_ticks_only() {
        let stats = TickStats::default();
        assert_eq!(stats.status().late_p50_ms, None);
        for ms in 1..=100 {
            stats.ran(Duration::from_millis(ms), true);
        }
        let status = stats.status();
        assert_eq!((status.ran, status.late_p50_ms, status.late_p99_ms), (100, Some(50.0), Some(99.0)));
        for _ in 0..lateness::WINDOW {
            stats.ran(Duration::ZERO, true);
        }
        assert_eq!(stats.status().late_p99_ms, Some(0.0));
    }
}
