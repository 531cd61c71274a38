//! Where the module's pushes go: every session's outgoing queue, by room.
//! The engine delivers pushes while it holds the room, so this only enqueues;
//! each session's writer (session.rs) sends its queue.
//!
//! A session is a member of its room — broadcasts reach it — from its join
//! on, not from its handshake: the engine delivers every join (even one
//! that pushed nothing) on the joining thread, after every call that ran
//! before it, and that is where [`Rooms::deliver`] makes it a member. So a
//! client never sees what the room broadcast before it joined, nor, if its
//! `on_join` refuses it, anything but what that `on_join` sent it.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use hotswap::Push;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Pushes a session may have waiting; one more means the client reads too
/// slowly, and the session is closed rather than queued without bound.
pub const QUEUE: usize = 256;

/// The outgoing queues of a room's sessions, by session id.
type Queues = HashMap<u64, mpsc::Sender<Message>>;

thread_local! {
    /// The session whose join runs on this thread ([`Rooms::join`]).
    static JOINING: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Every session's queue, by room.
#[derive(Default)]
pub struct Rooms(Mutex<Inner>);

#[derive(Default)]
struct Inner {
    rooms: HashMap<String, Queues>,
    /// Queues of sessions whose join has not run yet.
    joining: Queues,
}

impl Rooms {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Session `id` of `room` gets what the room pushes to it from now on
    /// (a session an upgrade moved here: it joined long ago).
    pub fn insert(&self, room: &str, id: u64, queue: mpsc::Sender<Message>) {
        self.lock().rooms.entry(room.to_owned()).or_default().insert(id, queue);
    }

    /// Runs `join` (the engine's `session_join` for session `id`, on this
    /// thread): `queue` gets the room's pushes from that join on.
    pub fn join<T>(&self, id: u64, queue: mpsc::Sender<Message>, join: impl FnOnce() -> T) -> T {
        self.lock().joining.insert(id, queue);
        JOINING.set(Some(id));
        let joined = join();
        JOINING.set(None);
        // A join that failed before the module ran was not delivered: its
        // queue waits in `joining` for the close (`remove`).
        joined
    }

    /// The rooms that have sessions.
    pub fn busy(&self) -> Vec<String> {
        self.lock().rooms.keys().cloned().collect()
    }

    /// The push sink: runs while the engine holds the room, so it only enqueues.
    pub fn deliver(&self, room: &str, pushes: Vec<Push>) {
        let mut inner = self.lock();
        // This thread's join is delivered: that session is a member from here.
        if let Some(id) = JOINING.get()
            && let Some(queue) = inner.joining.remove(&id)
        {
            inner.rooms.entry(room.to_owned()).or_default().insert(id, queue);
        }
        let Some(sessions) = inner.rooms.get_mut(room) else { return };
        for push in pushes {
            match push {
                Push::Send { session, bytes } => enqueue(sessions, session, text(bytes)),
                Push::Close { session, reason } => {
                    enqueue(sessions, session, close(CloseCode::Normal, reason))
                }
                Push::Broadcast { bytes } => {
                    let message = text(bytes);
                    sessions.retain(|_, queue| queue.try_send(message.clone()).is_ok());
                }
                _ => {} // a kind of push this server does not know yet
            }
        }
    }

    /// Ends session `id`'s queue with `last`, a close frame its writer sends
    /// after what was queued before (unless the writer is gone).
    pub fn remove(&self, room: &str, id: u64, last: Message) {
        let mut inner = self.lock();
        if let Some(queue) = inner.joining.remove(&id) {
            let _ = queue.try_send(last);
            return;
        }
        let Some(sessions) = inner.rooms.get_mut(room) else { return };
        enqueue(sessions, id, last);
        if sessions.is_empty() {
            inner.rooms.remove(room);
        }
    }
}

/// Queues `message` for session `id`. A full queue (the client reads too
/// slowly), or a close frame, ends the session's queue: its writer sends
/// what is queued, then closes.
fn enqueue(sessions: &mut Queues, id: u64, message: Message) {
    let closing = matches!(message, Message::Close(_));
    if let Some(queue) = sessions.get(&id)
        && (queue.try_send(message).is_err() || closing)
    {
        sessions.remove(&id);
    }
}

fn text(bytes: Vec<u8>) -> Message {
    String::from_utf8(bytes).map_or_else(|bad| Message::binary(bad.into_bytes()), Message::text)
}

/// A close frame; its reason cut to the 123 bytes a frame can carry.
pub fn close(code: CloseCode, mut reason: String) -> Message {
    reason.truncate((0..=reason.len().min(123)).rfind(|&end| reason.is_char_boundary(end)).unwrap_or(0));
    Message::Close(Some(CloseFrame { code, reason: reason.into() }))
}

/// What the writer sends when a session's queue overflowed.
pub fn too_slow() -> Message {
    close(CloseCode::Policy, "too slow: your queue was full".into())
}
