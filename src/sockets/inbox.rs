//! The messages of one room's sessions, run in batches.
//!
//! Each message is its own `on_message` call, but a trip to a call thread
//! per message (the upgrade gate, the instance's turn, a pool job, a
//! wake-up back) cost the daemon half its throughput against a plain tokio
//! server under broadcast load (BENCHMARKS.md, "Issue 9"). So the sessions
//! of a room put their messages in the room's inbox, and one drain task
//! per room takes what has arrived — up to [`MAX_BATCH`] — and runs it on
//! one call thread in one turn. Under light load a batch is one message and
//! costs what a call did; under heavy load the trip is shared.
//!
//! What stays as it was: a session has one message in the inbox at most
//! (it reads the next only after its message ran), so its messages reach
//! the module in the order sent; each message is one engine call, so a
//! module swap can land between any two of them; a stuck instance holds
//! only its own room's drain task and one thread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering::AcqRel};
use std::sync::{Arc, Mutex};

use hyper::body::Bytes;
use tokio::sync::{oneshot, watch};

use super::lock;
use super::session::HookFailed;
use crate::daemon::Daemon;

/// The most messages one trip to a call thread runs. Bounds how long an
/// upgrade's freeze waits for a batch and how long one room holds a thread
/// while others wait in the pool's queue.
pub const MAX_BATCH: usize = 64;

/// One room's messages waiting to run. See the module docs.
#[derive(Debug, Default)]
pub struct Inbox {
    state: Mutex<InboxState>,
}

#[derive(Debug, Default)]
struct InboxState {
    waiting: VecDeque<Waiting>,
    /// A drain task runs (or is about to): a new message must not start another.
    draining: bool,
}

/// A message and where its outcome goes.
#[derive(Debug)]
struct Waiting {
    session: u64,
    message: Bytes,
    ran: oneshot::Sender<Result<(), HookFailed>>,
    /// [`WAITS`], then [`RUNS`] (taken by a call thread) or [`WITHDRAWN`]
    /// (taken back by its session to move it): whichever comes first.
    state: Arc<AtomicU8>,
}

const WAITS: u8 = 0;
const RUNS: u8 = 1;
const WITHDRAWN: u8 = 2;

impl Inbox {
    /// Queues `message` of `session`; `true` if no drain task runs, so the
    /// caller must start one.
    fn put(&self, waiting: Waiting) -> bool {
        let mut state = lock(&self.state);
        state.waiting.push_back(waiting);
        !std::mem::replace(&mut state.draining, true)
    }

    /// The next batch; empty (and the drain task must end) when nothing waits.
    fn take(&self) -> Vec<Waiting> {
        let mut state = lock(&self.state);
        let batch: Vec<Waiting> = {
            let take = state.waiting.len().min(MAX_BATCH);
            state.waiting.drain(..take).collect()
        };
        if batch.is_empty() {
            state.draining = false;
        }
        batch
    }
}

/// Runs `message` of the session `session` of `room`'s `module` and
/// `instance` through the room's inbox, and returns when it ran — or, when
/// `pause` says the session moves before it ran, takes it back:
/// `Err(HookFailed::Withdrawn)` with the message, which did not run.
pub async fn run_message(
    daemon: &Arc<Daemon>,
    inbox: &Arc<Inbox>,
    room: &super::Room,
    session: u64,
    message: Bytes,
    pause: &mut watch::Receiver<bool>,
) -> Result<(), HookFailed> {
    let (ran, mut outcome) = oneshot::channel();
    let state = Arc::new(AtomicU8::new(WAITS));
    let waiting = Waiting { session, message: message.clone(), ran, state: state.clone() };
    if inbox.put(waiting) {
        tokio::spawn(drain(daemon.clone(), room.clone(), inbox.clone()));
    }
    let mut can_withdraw = true;
    loop {
        tokio::select! {
            // A closed channel: the thread running the batch panicked before
            // this message ran, or the runtime is shutting down.
            outcome = &mut outcome => return outcome.unwrap_or(Err(HookFailed::Thread("on_message"))),
            _ = pause.wait_for(|paused| *paused), if can_withdraw => {
                if state.compare_exchange(WAITS, WITHDRAWN, AcqRel, std::sync::atomic::Ordering::Acquire).is_ok() {
                    return Err(HookFailed::Withdrawn(message));
                }
                // A call thread took it: its outcome comes.
                can_withdraw = false;
            }
        }
    }
}

/// Runs the room's messages, batch after batch, until none waits.
async fn drain(daemon: Arc<Daemon>, room: super::Room, inbox: Arc<Inbox>) {
    loop {
        let batch = inbox.take();
        if batch.is_empty() {
            return;
        }
        let _open = daemon.gate.read().await;
        // After a hand-over the state lives in the new process: nothing runs here.
        if daemon.handed_over.get().is_some() {
            for waiting in batch {
                let _ = waiting.ran.send(Err(HookFailed::GoingAway));
            }
            continue;
        }
        let turn = daemon.calls.turn(&room.module, &room.instance).await;
        let running = daemon.clone();
        // `None` (the thread panicked) drops the senders of what did not
        // run; their sessions hear of it through `run_message`.
        let _ = daemon
            .calls
            .pool
            .run_and_wait(move || {
                for Waiting { session, message, ran, state } in batch {
                    let taken =
                        state.compare_exchange(WAITS, RUNS, AcqRel, std::sync::atomic::Ordering::Acquire);
                    if taken.is_err() {
                        continue; // withdrawn by a session that moves
                    }
                    let (outcome, _took) = turn.run("on_message", || {
                        running.engine.session_message(turn.module(), turn.instance(), session, &message)
                    });
                    let _ = ran.send(outcome.map_err(HookFailed::Call));
                }
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(session: u64) -> (Waiting, oneshot::Receiver<Result<(), HookFailed>>) {
        let (ran, outcome) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(WAITS));
        (Waiting { session, message: Bytes::from_static(b"m"), ran, state }, outcome)
    }

    #[test]
    fn one_drain_task_at_a_time_and_batches_keep_the_order_of_arrival() {
        let inbox = Inbox::default();
        let mut receivers = Vec::new();
        let mut starts = 0;
        for session in 0..(MAX_BATCH as u64 + 3) {
            let (item, receiver) = waiting(session);
            starts += usize::from(inbox.put(item));
            receivers.push(receiver);
        }
        assert_eq!(starts, 1, "only the first message starts a drain task");
        let first: Vec<u64> = inbox.take().iter().map(|w| w.session).collect();
        assert_eq!(first, (0..MAX_BATCH as u64).collect::<Vec<_>>());
        let (late, _receiver) = waiting(99);
        assert!(!inbox.put(late), "a message during a drain joins it");
        let second: Vec<u64> = inbox.take().iter().map(|w| w.session).collect();
        assert_eq!(second, [64, 65, 66, 99]);
        assert!(inbox.take().is_empty());
        let (after, _receiver) = waiting(100);
        assert!(inbox.put(after), "once drained, the next message starts a new task");
    }
}
