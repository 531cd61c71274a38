//! Where the module's pushes go: every session's outgoing queue, by room.
//! The engine delivers pushes while it holds the room, so this only enqueues;
//! each session's writer (session.rs) sends its queue.

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

/// Every session's queue, by room.
#[derive(Default)]
pub struct Rooms(Mutex<HashMap<String, Queues>>);

impl Rooms {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Queues>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Session `id` of `room` gets what the room pushes to it from now on.
    pub fn insert(&self, room: &str, id: u64, queue: mpsc::Sender<Message>) {
        self.lock().entry(room.to_owned()).or_default().insert(id, queue);
    }

    /// The rooms that have sessions.
    pub fn busy(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The push sink: runs while the engine holds the room, so it only enqueues.
    pub fn deliver(&self, room: &str, pushes: Vec<Push>) {
        let mut rooms = self.lock();
        let Some(sessions) = rooms.get_mut(room) else { return };
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
        let mut rooms = self.lock();
        let Some(sessions) = rooms.get_mut(room) else { return };
        enqueue(sessions, id, last);
        if sessions.is_empty() {
            rooms.remove(room);
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
