//! The daemon's lifecycle: one state machine that every operation which
//! changes modules or writes state holds while it runs.
//!
//! ```text
//! Starting ──► Serving ──► Upgrading ──► HandedOver   (terminal: never writes state again)
//!                 ▲  │          │
//!                 │  │          └─► Serving            (the new process failed)
//!                 │  └─► Stopping                      (terminal: the final save is the stop path's)
//! ```
//!
//! Flags read once and acted on later let a save that passed "not
//! upgrading" write after the hand-over (the old process then overwrote
//! the new one's state). Here an operation *holds* the lifecycle
//! ([`Lifecycle::hold`]) for as long as it runs, and a transition out of
//! `Serving` first waits until no operation holds it: so no swap, save or
//! instance removal ever straddles an upgrade or a shutdown.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where the daemon stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Loading modules and state; nothing is served yet.
    Starting,
    Serving,
    /// A process upgrade moves the state to a new process.
    Upgrading,
    /// The state lives in process `to_pid` now.
    HandedOver {
        to_pid: u32,
    },
    /// Shutting down; the stop path writes the final state.
    Stopping,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Phase::Starting => f.write_str("starting"),
            Phase::Serving => f.write_str("serving"),
            Phase::Upgrading => f.write_str("upgrading"),
            Phase::HandedOver { to_pid } => write!(f, "handed over to pid {to_pid}"),
            Phase::Stopping => f.write_str("stopping"),
        }
    }
}

/// Why an operation may not run now. Its text says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotNow {
    pub phase: Phase,
    pub operation: String,
}

impl std::fmt::Display for NotNow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = &self.operation;
        match self.phase {
            Phase::Starting => {
                write!(f, "cannot {what}: the daemon is still starting; try again once it serves")
            }
            Phase::Serving => write!(f, "cannot {what} now"),
            Phase::Upgrading => write!(
                f,
                "cannot {what}: a process upgrade is in progress; try again once the new process serves"
            ),
            Phase::HandedOver { to_pid } => write!(
                f,
                "cannot {what}: this process (pid {}) handed over to pid {to_pid}, which serves now and owns \
                 the state; send the request again on a new connection",
                std::process::id()
            ),
            Phase::Stopping => write!(f, "cannot {what}: the daemon is shutting down"),
        }
    }
}

impl std::error::Error for NotNow {}

#[derive(Debug)]
pub struct Lifecycle {
    inner: Mutex<Inner>,
    /// Notified when an operation ends or the phase changes.
    changed: Condvar,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// What holds the lifecycle now, by id, for the message of a transition
    /// that cannot wait any longer.
    running: Vec<(u64, String)>,
    next_id: u64,
}

/// An operation in progress; the lifecycle cannot leave `Serving` while it lives.
#[derive(Debug)]
#[must_use = "the operation holds the lifecycle only while this guard lives"]
pub struct Held<'a> {
    lifecycle: &'a Lifecycle,
    id: u64,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut inner = self.lifecycle.lock();
        inner.running.retain(|(id, _)| *id != self.id);
        drop(inner);
        self.lifecycle.changed.notify_all();
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            inner: Mutex::new(Inner { phase: Phase::Starting, running: Vec::new(), next_id: 0 }),
            changed: Condvar::new(),
        }
    }
}

impl Lifecycle {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding this lock; should it, the data is still consistent.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn phase(&self) -> Phase {
        self.lock().phase
    }

    /// The operations holding the lifecycle now ("swap counter", "save the state"…), oldest first.
    pub fn running(&self) -> Vec<String> {
        self.lock().running.iter().map(|(_, what)| what.clone()).collect()
    }

    /// Starts `operation` (for example "swap counter"): allowed only while
    /// serving. The lifecycle stays in `Serving` until the guard is dropped.
    pub fn hold(&self, operation: &str) -> Result<Held<'_>, NotNow> {
        let mut inner = self.lock();
        if inner.phase != Phase::Serving {
            return Err(NotNow { phase: inner.phase, operation: operation.to_owned() });
        }
        inner.next_id += 1;
        let id = inner.next_id;
        inner.running.push((id, operation.to_owned()));
        Ok(Held { lifecycle: self, id })
    }

    fn set(&self, mut inner: MutexGuard<'_, Inner>, phase: Phase) {
        inner.phase = phase;
        drop(inner);
        self.changed.notify_all();
    }

    /// `Starting` → `Serving`.
    pub fn serving(&self) {
        let inner = self.lock();
        if inner.phase == Phase::Starting {
            self.set(inner, Phase::Serving);
        }
    }

    /// `Serving` → `Upgrading`, once every operation that holds the
    /// lifecycle has ended. New operations are refused from the moment this
    /// is called. If some are still running at `deadline`, the daemon goes
    /// back to serving and the error names them.
    pub fn begin_upgrade(&self, deadline: Instant) -> Result<(), String> {
        let mut inner = self.lock();
        match inner.phase {
            Phase::Serving => {}
            Phase::Upgrading => return Err("an upgrade is already in progress; wait for it to finish".into()),
            Phase::HandedOver { to_pid } => {
                return Err(format!("this process already handed over to pid {to_pid}"));
            }
            Phase::Starting => return Err("the daemon is still starting; try again once it serves".into()),
            Phase::Stopping => return Err("the daemon is shutting down".into()),
        }
        inner.phase = Phase::Upgrading;
        let inner = self.wait_while(inner, deadline, |inner| !inner.running.is_empty());
        if inner.running.is_empty() {
            return Ok(());
        }
        let running: Vec<&str> = inner.running.iter().map(|(_, what)| what.as_str()).collect();
        let error = format!(
            "still running after waiting for it: {}; try the upgrade again when it has finished",
            running.join(", ")
        );
        self.set(inner, Phase::Serving);
        Err(error)
    }

    /// `Upgrading` (or `HandedOver`, when COMMIT could not be sent) →
    /// `Serving`: the new process did not take over. A stop that began
    /// meanwhile stays a stop.
    pub fn upgrade_failed(&self) {
        let inner = self.lock();
        if matches!(inner.phase, Phase::Upgrading | Phase::HandedOver { .. }) {
            self.set(inner, Phase::Serving);
        }
    }

    /// `Upgrading` → `HandedOver`: the point of no return. Refused if the
    /// daemon began to stop meanwhile (its final save is about to run).
    pub fn hand_over(&self, to_pid: u32) -> Result<(), String> {
        let inner = self.lock();
        if inner.phase != Phase::Upgrading {
            return Err(format!("this process is {} now", inner.phase));
        }
        self.set(inner, Phase::HandedOver { to_pid });
        Ok(())
    }

    /// Waits for an upgrade under way to end (at most until `deadline`);
    /// then, unless it handed over, → `Stopping`, and waits until no
    /// operation holds the lifecycle or `deadline` passes. Returns what is
    /// still running then. Whoever saves at shutdown checks
    /// [`phase`](Self::phase) is `Stopping` first.
    pub fn begin_stop(&self, deadline: Instant) -> Vec<String> {
        let mut inner = self.wait_while(self.lock(), deadline, |inner| inner.phase == Phase::Upgrading);
        if !matches!(inner.phase, Phase::HandedOver { .. }) {
            inner.phase = Phase::Stopping;
        }
        let inner = self.wait_while(inner, deadline, |inner| !inner.running.is_empty());
        inner.running.iter().map(|(_, what)| what.clone()).collect()
    }

    fn wait_while<'a>(
        &'a self,
        mut inner: MutexGuard<'a, Inner>,
        deadline: Instant,
        waiting: impl Fn(&Inner) -> bool,
    ) -> MutexGuard<'a, Inner> {
        while waiting(&inner) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            inner = self
                .changed
                .wait_timeout(inner, left.min(Duration::from_secs(1)))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn serving() -> Lifecycle {
        let lifecycle = Lifecycle::default();
        lifecycle.serving();
        lifecycle
    }

    #[test]
    fn operations_run_only_while_serving() {
        let lifecycle = Lifecycle::default();
        let refused = lifecycle.hold("save counter").unwrap_err();
        assert!(refused.to_string().contains("still starting"), "{refused}");
        lifecycle.serving();
        drop(lifecycle.hold("save counter").unwrap());
        lifecycle.begin_upgrade(Instant::now()).unwrap();
        let refused = lifecycle.hold("save counter").unwrap_err();
        assert!(refused.to_string().contains("upgrade is in progress"), "{refused}");
        lifecycle.hand_over(4242).unwrap();
        let refused = lifecycle.hold("save counter").unwrap_err();
        assert!(refused.to_string().contains("handed over to pid 4242"), "{refused}");
        assert_eq!(lifecycle.begin_stop(Instant::now()), Vec::<String>::new());
        assert_eq!(lifecycle.phase(), Phase::HandedOver { to_pid: 4242 }, "a stop never undoes a hand-over");
    }

    /// The race behind issue 7.12: an operation that started before the
    /// upgrade must end before the upgrade moves the state.
    #[test]
    fn an_upgrade_waits_for_running_operations_and_refuses_new_ones() {
        let lifecycle = Arc::new(serving());
        let held = lifecycle.hold("save counter").unwrap();
        let upgrading = {
            let lifecycle = lifecycle.clone();
            std::thread::spawn(move || lifecycle.begin_upgrade(Instant::now() + Duration::from_secs(30)))
        };
        // Once the upgrade has begun, new operations are refused even though
        // the old one still runs.
        let deadline = Instant::now() + Duration::from_secs(10);
        while lifecycle.phase() != Phase::Upgrading {
            assert!(Instant::now() < deadline);
            std::thread::yield_now();
        }
        assert!(lifecycle.hold("swap counter").is_err());
        assert!(!upgrading.is_finished(), "the upgrade must wait for the running save");
        drop(held);
        upgrading.join().unwrap().unwrap();
        assert_eq!(lifecycle.phase(), Phase::Upgrading);
    }

    #[test]
    fn an_upgrade_that_cannot_wait_any_longer_goes_back_to_serving_and_says_why() {
        let lifecycle = serving();
        let _held = lifecycle.hold("swap counter").unwrap();
        let error = lifecycle.begin_upgrade(Instant::now() + Duration::from_millis(20)).unwrap_err();
        assert!(error.contains("swap counter"), "{error}");
        assert_eq!(lifecycle.phase(), Phase::Serving);
        let error = {
            let _second = lifecycle.hold("save counter").unwrap();
            lifecycle.begin_upgrade(Instant::now()).unwrap_err()
        };
        assert!(error.contains("swap counter, save counter"), "{error}");
    }

    /// A stop that arrives in the middle of an upgrade: either the upgrade
    /// hands over first (and the stop saves nothing), or the stop wins and
    /// the hand-over is refused. Never both.
    #[test]
    fn a_stop_during_an_upgrade_waits_for_it_and_never_both_save_and_hand_over() {
        let lifecycle = Arc::new(serving());
        lifecycle.begin_upgrade(Instant::now()).unwrap();
        let stopping = {
            let lifecycle = lifecycle.clone();
            std::thread::spawn(move || lifecycle.begin_stop(Instant::now() + Duration::from_secs(30)))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!stopping.is_finished(), "the stop waits for the upgrade");
        lifecycle.hand_over(7).unwrap();
        stopping.join().unwrap();
        assert_eq!(lifecycle.phase(), Phase::HandedOver { to_pid: 7 });

        let lifecycle = serving();
        lifecycle.begin_upgrade(Instant::now()).unwrap();
        lifecycle.begin_stop(Instant::now());
        assert_eq!(lifecycle.phase(), Phase::Stopping, "the stop's deadline passed first");
        assert!(lifecycle.hand_over(7).is_err(), "then the hand-over is refused");
    }

    #[test]
    fn one_upgrade_at_a_time() {
        let lifecycle = serving();
        lifecycle.begin_upgrade(Instant::now()).unwrap();
        let error = lifecycle.begin_upgrade(Instant::now()).unwrap_err();
        assert!(error.contains("already in progress"), "{error}");
        lifecycle.upgrade_failed();
        lifecycle.begin_upgrade(Instant::now()).unwrap();
    }
}
