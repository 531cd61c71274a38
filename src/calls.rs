//! Module calls, run off the async workers.
//!
//! Module code may take long or never return. Run on one of tokio's async
//! workers, such a call stalls requests it has nothing to do with: the
//! blocked worker's LIFO slot holds the next task and no other worker
//! steals it (tokio issue 4941), so even `/healthz` and the admin API wait.
//! So every call goes through a [`CallRunner`]:
//!
//! 1. It waits for its instance's turn *asynchronously*: one async lock per
//!    `(module, instance)` that has a call running or waiting. The entry is
//!    removed when the last of them is done, so memory is bounded by the
//!    instances in use, not by every key a client ever sent.
//! 2. It runs the engine call on a thread of the call pool (`call_pool.rs`),
//!    holding the turn until the engine returns, even if the client gave up
//!    meanwhile. A stuck instance therefore holds one thread, however many
//!    callers pile up behind it.
//!
//! While a call runs, its method and start time are kept with its turn, so
//! status, metrics and shutdown can name calls that run for long.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::call_pool::CallPool;

/// The turns of every instance that has a call running or waiting.
type Turns = Mutex<HashMap<InstanceKey, Arc<Turn>>>;

/// Serializes calls per instance, asynchronously, and lists the running ones.
#[derive(Debug, Default)]
pub struct CallRunner {
    turns: Arc<Turns>,
    /// The threads the calls run on.
    pub pool: CallPool,
    /// `engine.slow_call` in nanoseconds (changed by a config reload).
    slow_call_ns: AtomicU64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct InstanceKey {
    module: Box<str>,
    instance: Box<str>,
}

#[derive(Debug, Default)]
struct Turn {
    /// Held by the call that runs; the others wait for it without a thread.
    lock: Arc<tokio::sync::Mutex<()>>,
    /// The call that runs now, once its thread started it.
    running: Mutex<Option<Running>>,
}

#[derive(Debug, Clone)]
struct Running {
    method: Box<str>,
    started: Instant,
    started_at: SystemTime,
}

/// A call that is running now, as status, metrics and shutdown report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningCall {
    pub module: String,
    pub instance: String,
    pub method: String,
    pub started_at: SystemTime,
    pub running: Duration,
}

impl std::fmt::Display for RunningCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} '{}' {}, running for {:.1} s",
            self.module,
            self.instance,
            self.method,
            self.running.as_secs_f64()
        )
    }
}

impl CallRunner {
    pub fn new(slow_call: Duration) -> CallRunner {
        let runner = CallRunner::default();
        runner.set_slow_call(slow_call);
        runner
    }

    /// Calls that run this long are slow: listed by [`slow_calls`](Self::slow_calls).
    pub fn slow_call(&self) -> Duration {
        Duration::from_nanos(self.slow_call_ns.load(Relaxed))
    }

    pub fn set_slow_call(&self, slow_call: Duration) {
        self.slow_call_ns.store(u64::try_from(slow_call.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// The calls running for `engine.slow_call` or longer, longest first.
    pub fn slow_calls(&self) -> Vec<RunningCall> {
        self.running_for(self.slow_call())
    }

    /// Waits until no other call of `instance` of `module` runs, and returns
    /// the turn. Cancel-safe: dropping the future while it waits gives up its
    /// place in the queue.
    pub async fn turn(&self, module: &str, instance: &str) -> InstanceTurn {
        let key = InstanceKey { module: module.into(), instance: instance.into() };
        let turn = lock(&self.turns).entry(key.clone()).or_default().clone();
        let claim = Claim { turns: self.turns.clone(), key, turn: Some(turn) };
        let held = claim.turn().lock.clone().lock_owned().await;
        InstanceTurn { _held: held, claim }
    }

    /// The calls that have run for `at_least` or longer, longest first.
    pub fn running_for(&self, at_least: Duration) -> Vec<RunningCall> {
        let now = Instant::now();
        // Read under the map's lock, without cloning a turn: see `Claim`.
        let mut calls: Vec<RunningCall> = lock(&self.turns)
            .iter()
            .filter_map(|(key, turn)| {
                let running = lock(&turn.running).clone()?;
                let elapsed = now.saturating_duration_since(running.started);
                (elapsed >= at_least).then(|| RunningCall {
                    module: key.module.clone().into(),
                    instance: key.instance.clone().into(),
                    method: running.method.into(),
                    started_at: running.started_at,
                    running: elapsed,
                })
            })
            .collect();
        calls.sort_by_key(|call| std::cmp::Reverse(call.running));
        calls
    }
}

/// The right to run one call on an instance, until dropped.
#[derive(Debug)]
pub struct InstanceTurn {
    // Fields drop in this order: the lock is released before the claim may
    // remove the entry, so a caller that arrives in between never sees a
    // fresh lock while this one is still held.
    _held: tokio::sync::OwnedMutexGuard<()>,
    claim: Claim,
}

impl InstanceTurn {
    pub fn module(&self) -> &str {
        &self.claim.key.module
    }

    pub fn instance(&self) -> &str {
        &self.claim.key.instance
    }

    /// Runs `call` (a method of this instance) as the running call: listed
    /// while it runs. Returns its outcome and how long it took. Blocks: run
    /// it on a blocking thread.
    pub fn run<R>(&self, method: &str, call: impl FnOnce() -> R) -> (R, Duration) {
        let turn = self.claim.turn();
        let started = Instant::now();
        *lock(&turn.running) =
            Some(Running { method: method.into(), started, started_at: SystemTime::now() });
        // Cleared even if `call` unwinds.
        let _listed = Listed(turn);
        let outcome = call();
        (outcome, started.elapsed())
    }
}

/// Clears the running call of a turn when dropped.
struct Listed<'a>(&'a Turn);

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        *lock(&self.0.running) = None;
    }
}

/// One caller's reference to an instance's turn; the last one removes the
/// entry. Every clone and every drop of the `Arc<Turn>` of an entry happens
/// under the map's lock, so the count read there is exact.
#[derive(Debug)]
struct Claim {
    turns: Arc<Turns>,
    key: InstanceKey,
    /// `Some` until dropped.
    turn: Option<Arc<Turn>>,
}

impl Claim {
    fn turn(&self) -> &Turn {
        self.turn.as_ref().expect("present until dropped")
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut turns = lock(&self.turns);
        let turn = self.turn.take().expect("dropped once");
        // The map's reference and this one: nobody else runs or waits.
        if Arc::strong_count(&turn) == 2 {
            turns.remove(&self.key);
        }
        drop(turn);
    }
}

/// Locks a mutex that guards plain data: a panic elsewhere while it was
/// held left nothing half-written, so the data is used as it is.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn entries_are_removed_when_nobody_runs_or_waits() {
        runtime().block_on(async {
            let runner = CallRunner::default();
            for i in 0..1000 {
                let turn = runner.turn("counter", &format!("key-{i}")).await;
                let ((), _) = turn.run("add", || ());
            }
            assert!(lock(&runner.turns).is_empty(), "one entry per key ever used");
        });
    }

    #[test]
    fn a_caller_that_gives_up_while_waiting_leaves_no_entry() {
        runtime().block_on(async {
            let runner = CallRunner::default();
            let first = runner.turn("counter", "a").await;
            let waiting = tokio::time::timeout(Duration::from_millis(10), runner.turn("counter", "a")).await;
            assert!(waiting.is_err(), "the second call waits for the first");
            assert_eq!(lock(&runner.turns).len(), 1);
            drop(first);
            assert!(lock(&runner.turns).is_empty());
        });
    }

    #[test]
    fn calls_of_one_instance_take_turns_and_others_do_not_wait() {
        runtime().block_on(async {
            let runner = CallRunner::default();
            let first = runner.turn("counter", "a").await;
            let other = tokio::time::timeout(Duration::from_secs(5), runner.turn("counter", "b")).await;
            assert!(other.is_ok(), "another instance does not wait");
            let same = tokio::time::timeout(Duration::from_millis(10), runner.turn("counter", "a")).await;
            assert!(same.is_err(), "the same instance waits");
            drop(first);
            let same = tokio::time::timeout(Duration::from_secs(5), runner.turn("counter", "a")).await;
            assert!(same.is_ok(), "and gets its turn once the first is done");
        });
    }

    #[test]
    fn running_calls_are_listed_while_they_run() {
        runtime().block_on(async {
            let runner = CallRunner::default();
            let turn = runner.turn("counter", "a").await;
            assert!(runner.running_for(Duration::ZERO).is_empty(), "a turn that has not started");
            turn.run("sleep", || {
                let listed = runner.running_for(Duration::ZERO);
                assert_eq!(listed.len(), 1);
                assert_eq!(
                    (listed[0].module.as_str(), listed[0].instance.as_str(), listed[0].method.as_str()),
                    ("counter", "a", "sleep")
                );
                assert!(runner.running_for(Duration::from_secs(3600)).is_empty());
            });
            assert!(runner.running_for(Duration::ZERO).is_empty(), "no longer running");
        });
    }
}
