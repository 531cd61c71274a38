//! The threads module calls run on.
//!
//! Tokio's blocking pool would do, but each call there wakes a parked
//! thread and parks it again: measured on 2 cores, the daemon's CPU time per
//! request tripled (10 → 34 µs) and requests/s fell by 60%. This pool keeps
//! as many threads as there are cores taking calls from one queue: under
//! load they find the next call waiting and never park, so a call costs a
//! queue push and a wake-up of the waiting task.
//!
//! A call that takes long holds its thread. So that calls queued behind
//! such calls still run, a caller whose call has not ended within
//! [`RESCUE_AFTER`] asks the pool to [`rescue`](CallPool::rescue) it: if every
//! thread is busy with a call older than that, one more thread starts.
//! Threads above the base number leave after [`IDLE_EXIT`] without work.
//! How many calls can be stuck at once is bounded by the instances (one call
//! runs per instance; the others wait for their turn without a thread).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a call may wait or run before its caller asks for a rescue.
pub const RESCUE_AFTER: Duration = Duration::from_millis(5);
/// How long a thread above the base number stays without work.
const IDLE_EXIT: Duration = Duration::from_secs(10);
/// Threads at most; a call past it waits for a thread to be free.
const MAX_THREADS: usize = 1024;

type Job = Box<dyn FnOnce() + Send>;

/// A pool of threads for module calls. See the module docs.
#[derive(Debug, Clone)]
pub struct CallPool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    work: Condvar,
    base: usize,
    started: Instant,
}

struct State {
    queue: VecDeque<Job>,
    /// Threads waiting for work.
    idle: usize,
    /// When each thread's current call started (ns since `started`; 0: none).
    busy_since: Vec<Arc<AtomicU64>>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("queued", &self.queue.len())
            .field("idle", &self.idle)
            .field("threads", &self.busy_since.len())
            .finish()
    }
}

impl Default for CallPool {
    fn default() -> CallPool {
        CallPool::new()
    }
}

impl CallPool {
    /// A pool with one thread per core (at least 2).
    pub fn new() -> CallPool {
        let base = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let shared = Arc::new(Shared {
            state: Mutex::new(State { queue: VecDeque::new(), idle: 0, busy_since: Vec::new() }),
            work: Condvar::new(),
            base,
            started: Instant::now(),
        });
        let pool = CallPool { shared };
        for _ in 0..base {
            let mut state = pool.shared.lock();
            pool.shared.start_thread(&mut state);
        }
        pool
    }

    /// Runs `job` on a pool thread; its outcome arrives through the returned channel.
    pub fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce() -> R + Send + 'static,
    ) -> tokio::sync::oneshot::Receiver<R> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = sender.send(job());
        });
        let mut state = self.shared.lock();
        state.queue.push_back(job);
        if state.idle > 0 {
            self.shared.work.notify_one();
        }
        receiver
    }

    /// Runs `job` on a pool thread and waits for its outcome (`None` if it
    /// panicked), asking for a [`rescue`](Self::rescue) while it waits long.
    pub async fn run_and_wait<R: Send + 'static>(
        &self,
        job: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        let mut answer = self.run(job);
        let mut wait = RESCUE_AFTER;
        loop {
            match tokio::time::timeout(wait, &mut answer).await {
                Ok(outcome) => return outcome.ok(),
                Err(_) => {
                    self.rescue();
                    // A call that runs for long is checked less and less often.
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Starts one more thread if every thread is held by a call that has
    /// run for [`RESCUE_AFTER`] or longer and calls wait in the queue.
    pub fn rescue(&self) {
        let mut state = self.shared.lock();
        if state.queue.is_empty() || state.idle > 0 || state.busy_since.len() >= MAX_THREADS {
            return;
        }
        let now = self.shared.now_ns();
        let rescue_ns = RESCUE_AFTER.as_nanos() as u64;
        let all_held = state.busy_since.iter().all(|since| {
            let since = since.load(Relaxed);
            since != 0 && now.saturating_sub(since) >= rescue_ns
        });
        if all_held {
            tracing::debug!(threads = state.busy_since.len() + 1, "every call thread is held by a slow call");
            self.shared.start_thread(&mut state);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Jobs run outside the lock, so a panic cannot leave it half-changed.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now_ns(&self) -> u64 {
        // At least 1: 0 means "no call".
        (self.started.elapsed().as_nanos() as u64).max(1)
    }

    fn start_thread(self: &Arc<Self>, state: &mut State) {
        let busy_since = Arc::new(AtomicU64::new(0));
        let shared = self.clone();
        let mine = busy_since.clone();
        let spawned =
            std::thread::Builder::new().name("hotswap-call".into()).spawn(move || shared.work_loop(&mine));
        match spawned {
            Ok(_) => state.busy_since.push(busy_since),
            Err(error) => tracing::error!("cannot start a thread for module calls: {error}"),
        }
    }

    fn work_loop(&self, busy_since: &Arc<AtomicU64>) {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.queue.pop_front() {
                drop(state);
                busy_since.store(self.now_ns(), Relaxed);
                // A job only sends its outcome; catching keeps the thread
                // alive if anything in it ever panics (the caller then gets
                // "the call's thread failed").
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                busy_since.store(0, Relaxed);
                state = self.lock();
                continue;
            }
            state.idle += 1;
            let (next, waited) =
                self.work.wait_timeout(state, IDLE_EXIT).unwrap_or_else(std::sync::PoisonError::into_inner);
            state = next;
            state.idle -= 1;
            if waited.timed_out() && state.queue.is_empty() && state.busy_since.len() > self.base {
                state.busy_since.retain(|since| !Arc::ptr_eq(since, busy_since));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_run_and_answer() {
        let pool = CallPool::new();
        let answers: Vec<_> = (0..100).map(|i| pool.run(move || i * 2)).collect();
        for (i, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.blocking_recv().unwrap(), i * 2);
        }
    }

    #[test]
    fn calls_held_by_slow_ones_are_rescued() {
        let pool = CallPool::new();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = Arc::new(Mutex::new(held));
        // Every base thread is held by a call that does not end until released.
        let blockers: Vec<_> = (0..pool.shared.base)
            .map(|_| {
                let held = held.clone();
                pool.run(move || {
                    let _ = held.lock().unwrap().recv();
                })
            })
            .collect();
        let waiting = pool.run(|| 42);
        let deadline = Instant::now() + Duration::from_secs(20);
        let answer = loop {
            std::thread::sleep(RESCUE_AFTER);
            pool.rescue();
            if pool.shared.lock().busy_since.len() > pool.shared.base {
                break waiting.blocking_recv().unwrap();
            }
            assert!(Instant::now() < deadline, "no thread was added");
        };
        assert_eq!(answer, 42, "a call queued behind held threads runs");
        for _ in &blockers {
            release.send(()).unwrap();
        }
        for blocker in blockers {
            blocker.blocking_recv().unwrap();
        }
    }

    #[test]
    fn no_thread_is_added_while_calls_are_short() {
        let pool = CallPool::new();
        for _ in 0..100 {
            let answer = pool.run(|| ());
            pool.rescue();
            answer.blocking_recv().unwrap();
        }
        assert_eq!(pool.shared.lock().busy_since.len(), pool.shared.base);
    }
}
