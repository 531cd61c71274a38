//! WebSocket sessions: who is connected to which instance, and where the
//! modules' pushes go.
//!
//! | file | what |
//! |---|---|
//! | `sockets.rs` | the session registry, push routing, the counts |
//! | `sockets/session.rs` | one connection: handshake, join, messages, leave |
//! | `sockets/session/writer.rs` | one connection's writer: pushes out in order, parked for a move |
//! | `sockets/inbox.rs` | a room's messages, run in batches on a call thread |
//! | `sockets/moving.rs` | sessions moving with their connections to a new process |
//! | `sockets/record.rs` | the byte layout of what a moving session takes with it |
//! | `sockets/ticks.rs` | `tick`: periodic `on_tick` of instances with sessions |
//! | `sockets/wire.rs` | WebSocket framing over the raw stream; a reader can be parked and resumed |
//!
//! A session id is never reused, in this process or the ones before and
//! after it across upgrades and restarts: ids count up from a first id made
//! of the wall clock at start (see [`first_session_id`]), below 2^53. Module state
//! carried over an upgrade may still name the old process's sessions (the
//! old process cannot run their `on_leave` once the state moved); a new id
//! never collides with one of them.
//! The engine hands every call's pushes to [`Sockets::route`] while the
//! instance is still locked, so pushes reach each session's queue in the
//! order the instance made them. `route` only enqueues: each session's
//! queue holds `queue` messages at most, and one more closes that session
//! ("too slow"), so a client that does not read never grows memory or
//! stalls the others.
//!
//! Bytes a module pushes go out as a Text frame when they are UTF-8, as a
//! Binary frame otherwise.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::{Arc, Mutex};

use hotswap::Push;
use tokio::sync::{mpsc, watch};
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;

use crate::api;
use crate::calls::lock;

mod inbox;
pub mod moving;
mod record;
mod session;
pub mod ticks;
pub mod wire;

pub use session::{accept, resume_moved};

/// Every open session, by id and by instance, and the counts.
#[derive(Debug, Default)]
pub struct Sockets {
    next_id: AtomicU64,
    registry: Mutex<Registry>,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    /// Pushes an operator must act on: a full queue, an id that is not a
    /// session of the pushing instance, a push kind this daemon does not know.
    pushes_dropped: AtomicU64,
    /// Pushes to a session of the room that is already closing: the normal
    /// end of a session (a room's "left" broadcast reaching the leaver).
    pushes_after_close: AtomicU64,
    queue_depth_max: AtomicUsize,
    closes: Mutex<HashMap<CloseKind, u64>>,
    /// Told each time a session ends (shutdown waits for them).
    ended: tokio::sync::Notify,
    pub ticks: ticks::TickStats,
    /// Sessions moving to a new process: pause, report, wait (`moving.rs`).
    pub moving: moving::Moving,
}

#[derive(Debug, Default)]
struct Registry {
    sessions: HashMap<u64, Arc<SessionHandle>>,
    rooms: HashMap<Room, BTreeSet<u64>>,
    /// The inbox of each room in `rooms`.
    inboxes: HashMap<Room, Arc<inbox::Inbox>>,
    /// Open sessions per endpoint path.
    per_endpoint: HashMap<String, usize>,
}

/// A module and one of its instances.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Room {
    pub module: String,
    pub instance: String,
}

/// What the connection task and the push router share of one session.
#[derive(Debug)]
pub struct SessionHandle {
    pub id: u64,
    pub room: Room,
    endpoint: String,
    /// Where its messages wait to run (shared by its room).
    inbox: Arc<inbox::Inbox>,
    outgoing: mpsc::Sender<Outgoing>,
    /// Set once, by whoever ends the session first.
    closing: watch::Sender<Option<Closing>>,
    /// A member of its room: broadcasts reach it. From its `on_join` on
    /// (set on the room's turn, so the broadcasts of calls that ran before
    /// it never arrive); from the start for a session an upgrade moved here.
    member: AtomicBool,
}

/// What the writer of a session sends, in order.
#[derive(Debug)]
enum Outgoing {
    Frame(Message),
    /// The module closed the session (`ctx.close`): after what it sent before.
    Close(String),
}

/// Why a session ends, and the close frame it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    pub code: u16,
    pub reason: String,
    pub kind: CloseKind,
}

/// Why sessions end, as status and metrics count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CloseKind {
    /// The client sent a close frame.
    Client,
    /// The connection dropped or broke.
    Dropped,
    /// `on_join` refused it (1008).
    Refused,
    /// The module closed it (`ctx.close`, 1000).
    Module,
    /// `on_message` failed (1008 for an error, 1011 for a panic).
    Failed,
    /// Its outgoing queue was full (1008 "too slow").
    TooSlow,
    /// The client broke the protocol (1002), sent text that is not UTF-8
    /// (1007) or a message over `server.max_body` (1009).
    Protocol,
    /// The process stops or handed over to a new one (1001).
    GoingAway,
    /// Moved with its connection to a new process (no close: the session
    /// goes on there).
    Moved,
}

impl CloseKind {
    pub fn name(self) -> &'static str {
        match self {
            CloseKind::Client => "client",
            CloseKind::Dropped => "dropped",
            CloseKind::Refused => "refused",
            CloseKind::Module => "module",
            CloseKind::Failed => "failed",
            CloseKind::TooSlow => "too_slow",
            CloseKind::Protocol => "protocol",
            CloseKind::GoingAway => "going_away",
            CloseKind::Moved => "moved",
        }
    }
}

/// A new session was refused before the handshake.
#[derive(Debug, PartialEq, Eq)]
pub struct Full {
    pub max_sessions: usize,
}

impl SessionHandle {
    /// Its `on_join` runs now: from here on it is a member of its room.
    /// Call it on the room's turn, before the engine's `session_join`.
    pub fn joins(&self) {
        self.member.store(true, Release);
    }

    /// Ends the session with this close frame, unless something ended it first.
    pub fn close(&self, code: u16, reason: impl Into<String>, kind: CloseKind) {
        let closing = Closing { code, reason: reason.into(), kind };
        self.closing.send_if_modified(|now| match now {
            Some(_) => false,
            None => {
                *now = Some(closing);
                true
            }
        });
    }

    /// Queues `item`; a full queue closes the session (too slow). A session
    /// that is already closing gets nothing more (counted apart).
    fn push(&self, item: Outgoing, sockets: &Sockets) {
        if self.closing.borrow().is_some() {
            sockets.pushes_after_close.fetch_add(1, Relaxed);
            return;
        }
        match self.outgoing.try_send(item) {
            Ok(()) => {
                let depth = self.outgoing.max_capacity() - self.outgoing.capacity();
                sockets.queue_depth_max.fetch_max(depth, Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                sockets.pushes_dropped.fetch_add(1, Relaxed);
                let queued = self.outgoing.max_capacity();
                self.close(
                    1008,
                    format!("too slow: {queued} messages queued (the socket's `queue`)"),
                    CloseKind::TooSlow,
                );
            }
            // The session is ending: its writer is gone.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                sockets.pushes_after_close.fetch_add(1, Relaxed);
            }
        }
    }
}

/// The frame for bytes a module pushed: Text when they are UTF-8.
fn frame(bytes: Vec<u8>) -> Message {
    match String::from_utf8(bytes) {
        Ok(text) => Message::text(text),
        Err(not_text) => Message::binary(not_text.into_bytes()),
    }
}

/// A close frame: the reason is cut (at a character boundary) to the 123
/// bytes a control frame has room for.
pub fn close_frame(code: u16, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame { code: code.into(), reason: reason[..end].to_owned().into() }
}

impl Sockets {
    /// No sessions yet; ids start after [`first_session_id`].
    pub fn new() -> Sockets {
        Sockets {
            next_id: AtomicU64::new(first_session_id(std::time::SystemTime::now())),
            ..Sockets::default()
        }
    }

    /// The engine's push sink: routes every push to its session queues.
    pub fn push_sink(self: &Arc<Self>) -> hotswap::PushSink {
        let sockets = Arc::downgrade(self);
        hotswap::PushSink::new(move |module: &str, instance: &str, pushes: Vec<Push>| {
            if let Some(sockets) = sockets.upgrade() {
                sockets.route(module, instance, pushes);
            }
        })
    }

    /// Queues what `instance` of `module` pushed. Only sessions of that same
    /// instance can be reached; a push to any other id is dropped (counted).
    pub fn route(&self, module: &str, instance: &str, pushes: Vec<Push>) {
        let registry = lock(&self.registry);
        let in_room = |id: &u64| {
            registry.sessions.get(id).filter(|s| s.room.module == module && s.room.instance == instance)
        };
        for push in pushes {
            match push {
                Push::Send { session, bytes } => match in_room(&session) {
                    Some(handle) => handle.push(Outgoing::Frame(frame(bytes)), self),
                    None => {
                        self.pushes_dropped.fetch_add(1, Relaxed);
                    }
                },
                Push::Close { session, reason } => match in_room(&session) {
                    Some(handle) => handle.push(Outgoing::Close(reason), self),
                    None => {
                        self.pushes_dropped.fetch_add(1, Relaxed);
                    }
                },
                Push::Broadcast { bytes } => {
                    let room = Room { module: module.to_owned(), instance: instance.to_owned() };
                    let Some(ids) = registry.rooms.get(&room) else { continue };
                    let message = frame(bytes);
                    let members = ids.iter().filter_map(|id| registry.sessions.get(id));
                    for handle in members.filter(|handle| handle.member.load(Acquire)) {
                        handle.push(Outgoing::Frame(message.clone()), self);
                    }
                }
                other => {
                    tracing::warn!(module, instance, "a push this daemon does not know: {other:?}");
                    self.pushes_dropped.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Registers a new session of `room` on `endpoint`, unless it already has
    /// `max_sessions` open.
    fn open(
        &self,
        endpoint: &str,
        max_sessions: usize,
        room: Room,
        queue: usize,
    ) -> Result<(Arc<SessionHandle>, mpsc::Receiver<Outgoing>), Full> {
        let mut registry = lock(&self.registry);
        let open = registry.per_endpoint.entry(endpoint.to_owned()).or_default();
        if *open >= max_sessions {
            return Err(Full { max_sessions });
        }
        *open += 1;
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        Ok(Self::register(&mut registry, id, endpoint, room, queue, false))
    }

    /// Registers a session that an earlier process opened, under its id
    /// (an upgrade moved it here). Past `max_sessions` too: it is open.
    fn adopt(
        &self,
        id: u64,
        endpoint: &str,
        room: Room,
        queue: usize,
    ) -> (Arc<SessionHandle>, mpsc::Receiver<Outgoing>) {
        let mut registry = lock(&self.registry);
        *registry.per_endpoint.entry(endpoint.to_owned()).or_default() += 1;
        Self::register(&mut registry, id, endpoint, room, queue, true)
    }

    fn register(
        registry: &mut Registry,
        id: u64,
        endpoint: &str,
        room: Room,
        queue: usize,
        member: bool,
    ) -> (Arc<SessionHandle>, mpsc::Receiver<Outgoing>) {
        let (outgoing, receiver) = mpsc::channel(queue.max(1));
        let inbox = registry.inboxes.entry(room.clone()).or_default().clone();
        let handle = Arc::new(SessionHandle {
            id,
            room: room.clone(),
            endpoint: endpoint.to_owned(),
            inbox,
            outgoing,
            closing: watch::Sender::new(None),
            member: AtomicBool::new(member),
        });
        registry.rooms.entry(room).or_default().insert(id);
        registry.sessions.insert(id, handle.clone());
        (handle, receiver)
    }

    /// Removes an ended session and counts why it ended.
    fn remove(&self, handle: &SessionHandle, kind: CloseKind) {
        let mut registry = lock(&self.registry);
        registry.sessions.remove(&handle.id);
        if let Some(ids) = registry.rooms.get_mut(&handle.room) {
            ids.remove(&handle.id);
            if ids.is_empty() {
                registry.rooms.remove(&handle.room);
                // A drain task still running keeps its own reference.
                registry.inboxes.remove(&handle.room);
            }
        }
        if let Some(open) = registry.per_endpoint.get_mut(&handle.endpoint) {
            *open -= 1;
        }
        drop(registry);
        *lock(&self.closes).entry(kind).or_default() += 1;
        self.ended.notify_waiters();
    }

    /// The instances of `module` with at least one session.
    pub fn instances_of(&self, module: &str) -> Vec<String> {
        let registry = lock(&self.registry);
        registry.rooms.keys().filter(|room| room.module == module).map(|room| room.instance.clone()).collect()
    }

    /// Open sessions in all.
    pub fn open_sessions(&self) -> usize {
        lock(&self.registry).sessions.len()
    }

    /// Waits until every session ended, or `deadline`.
    pub async fn wait_all_ended(&self, deadline: tokio::time::Instant) {
        loop {
            let ended = self.ended.notified();
            if self.open_sessions() == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return;
            }
        }
    }

    /// Sessions per module and instance, and the counts, for `/v1/status`.
    pub fn status(&self) -> api::Sessions {
        let registry = lock(&self.registry);
        let mut rooms: Vec<api::SessionRoom> = registry
            .rooms
            .iter()
            .map(|(room, ids)| api::SessionRoom {
                module: room.module.clone(),
                instance: room.instance.clone(),
                sessions: ids.len() as u64,
            })
            .collect();
        drop(registry);
        rooms.sort_by(|a, b| (&a.module, &a.instance).cmp(&(&b.module, &b.instance)));
        let mut closes: Vec<(String, u64)> =
            lock(&self.closes).iter().map(|(kind, n)| (kind.name().to_owned(), *n)).collect();
        closes.sort();
        api::Sessions {
            open: rooms.iter().map(|room| room.sessions).sum(),
            rooms,
            messages_in: self.messages_in.load(Relaxed),
            messages_out: self.messages_out.load(Relaxed),
            pushes_dropped: self.pushes_dropped.load(Relaxed),
            pushes_after_close: self.pushes_after_close.load(Relaxed),
            queue_depth_max: self.queue_depth_max.load(Relaxed) as u64,
            closes: closes.into_iter().collect(),
            ticks: self.ticks.status(),
        }
    }

    /// The session lines of `GET /metrics`.
    pub fn render(&self, text: &mut String) {
        use std::fmt::Write as _;
        let status = self.status();
        let _ = writeln!(
            text,
            "# HELP hotswap_sessions Open WebSocket sessions per module and instance.\n# TYPE hotswap_sessions gauge"
        );
        for room in &status.rooms {
            let _ = writeln!(
                text,
                "hotswap_sessions{{module=\"{}\",instance=\"{}\"}} {}",
                room.module,
                room.instance.escape_default(),
                room.sessions
            );
        }
        let counters: [(&str, &str, &str, u64); 5] = [
            ("hotswap_session_messages_in_total", "counter", "Messages from clients.", status.messages_in),
            ("hotswap_session_messages_out_total", "counter", "Frames sent to clients.", status.messages_out),
            (
                "hotswap_session_pushes_dropped_total",
                "counter",
                "Pushes not queued: a full queue, an id not of the instance, an unknown kind.",
                status.pushes_dropped,
            ),
            (
                "hotswap_session_pushes_after_close_total",
                "counter",
                "Pushes not queued because their session was already closing.",
                status.pushes_after_close,
            ),
            (
                "hotswap_session_queue_depth_max",
                "gauge",
                "The most messages one session's queue held.",
                status.queue_depth_max,
            ),
        ];
        for (name, kind, help, value) in counters {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        let name = "hotswap_session_closes_total";
        let _ = writeln!(text, "# HELP {name} Sessions ended, by why.\n# TYPE {name} counter");
        for (reason, count) in &status.closes {
            let _ = writeln!(text, "{name}{{reason=\"{reason}\"}} {count}");
        }
        self.ticks.render(text);
    }
}

/// Where a process started at `now` begins numbering sessions:
/// milliseconds since the Unix epoch, times 2048. A process started later
/// begins higher, and an earlier one could only reach it by opening 2,048
/// sessions for every millisecond between the two starts — so ids never
/// collide across an upgrade or a restart, unless the wall clock is set back
/// between them. Ids stay under 2^53 (until the year 2109), so JSON readers
/// that hold numbers as doubles (a browser) read them exactly.
pub fn first_session_id(now: std::time::SystemTime) -> u64 {
    let millis = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis());
    u64::try_from(millis.saturating_mul(2048)).unwrap_or(1 << 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(instance: &str) -> Room {
        Room { module: "room".into(), instance: instance.into() }
    }

    /// A session of `instance` that joined (its `on_join` ran).
    fn joined(
        sockets: &Sockets,
        instance: &str,
        queue: usize,
    ) -> (Arc<SessionHandle>, mpsc::Receiver<Outgoing>) {
        let (handle, outgoing) = sockets.open("/ws", 10, room(instance), queue).unwrap();
        handle.joins();
        (handle, outgoing)
    }

    #[test]
    fn close_reasons_are_cut_to_fit_a_close_frame_at_a_character_boundary() {
        let frame = close_frame(1008, &"é".repeat(100));
        assert_eq!(frame.reason.len(), 122, "61 two-byte characters fit in 123 bytes");
        assert_eq!(close_frame(1000, "short").reason.as_str(), "short");
    }

    #[test]
    fn session_ids_are_never_reused_and_endpoints_stay_within_max_sessions() {
        let sockets = Sockets::new();
        let (first, _rx1) = sockets.open("/ws", 2, room("a"), 4).unwrap();
        let (second, _rx2) = sockets.open("/ws", 2, room("a"), 4).unwrap();
        assert_eq!(sockets.open("/ws", 2, room("a"), 4).unwrap_err(), Full { max_sessions: 2 });
        sockets.remove(&first, CloseKind::Client);
        let (third, _rx3) = sockets.open("/ws", 2, room("b"), 4).unwrap();
        assert!(third.id > second.id && second.id > first.id, "ids only grow");
        // A process started later numbers above this one's.
        std::thread::sleep(std::time::Duration::from_millis(3));
        let later = Sockets::new();
        let (next_process, _rx4) = later.open("/ws", 2, room("a"), 4).unwrap();
        assert!(next_process.id > third.id, "{} after {}", next_process.id, third.id);
        let start = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let one_ms_later = start + std::time::Duration::from_millis(1);
        assert_eq!(first_session_id(one_ms_later) - first_session_id(start), 2048);
        assert!(first_session_id(start) < 1 << 53, "exact as a JSON number in a browser");
        let mut instances = sockets.instances_of("room");
        instances.sort();
        assert_eq!(instances, ["a", "b"]);
    }

    #[test]
    fn a_full_queue_closes_only_that_session_and_broadcasts_reach_only_its_room() {
        let sockets = Sockets::default();
        let (slow, _slow_rx) = joined(&sockets, "a", 2);
        let (_fast, mut fast_rx) = joined(&sockets, "a", 8);
        let (_other, mut other_rx) = joined(&sockets, "b", 8);
        for n in 0..3 {
            sockets.route("room", "a", vec![Push::Broadcast { bytes: format!("{n}").into_bytes() }]);
        }
        let closing = slow.closing.borrow().clone().expect("the slow session is closing");
        assert_eq!((closing.code, closing.kind), (1008, CloseKind::TooSlow));
        assert!(closing.reason.contains("too slow: 2 messages queued"), "{}", closing.reason);
        for n in 0..3 {
            match fast_rx.try_recv() {
                Ok(Outgoing::Frame(Message::Text(text))) => assert_eq!(text.as_str(), n.to_string()),
                other => panic!("message {n}: {other:?}"),
            }
        }
        assert!(other_rx.try_recv().is_err(), "another instance's session got nothing");
        assert_eq!(sockets.status().pushes_dropped, 1);
    }

    /// A session is a member of its room from its `on_join` on: what the
    /// room broadcast before (a tick that ran while it was still in its
    /// handshake) never reaches it — it might yet be refused.
    #[test]
    fn broadcasts_reach_a_session_only_from_its_join_on() {
        let sockets = Sockets::default();
        let (member, mut member_rx) = sockets.open("/ws", 10, room("a"), 8).unwrap();
        member.joins();
        let (joining, mut joining_rx) = sockets.open("/ws", 10, room("a"), 8).unwrap();
        sockets.route("room", "a", vec![Push::Broadcast { bytes: b"before".to_vec() }]);
        assert!(matches!(member_rx.try_recv(), Ok(Outgoing::Frame(_))), "a member gets it");
        assert!(joining_rx.try_recv().is_err(), "a session not yet joined got a broadcast");
        // Its on_join runs: what it pushes, and what the room broadcasts next, reach it.
        joining.joins();
        sockets.route("room", "a", vec![Push::Broadcast { bytes: b"after".to_vec() }]);
        match joining_rx.try_recv() {
            Ok(Outgoing::Frame(Message::Text(text))) => assert_eq!(text.as_str(), "after"),
            other => panic!("{other:?}"),
        }
        assert_eq!(sockets.status().pushes_dropped, 0, "not a drop: it was not a member yet");
    }

    #[test]
    fn pushes_to_closing_sessions_are_counted_apart_from_drops_an_operator_must_act_on() {
        let sockets = Sockets::default();
        let (leaving, _leaving_rx) = joined(&sockets, "a", 8);
        let (gone, gone_rx) = joined(&sockets, "a", 8);
        let (_staying, mut staying_rx) = joined(&sockets, "a", 8);
        let (other, _other_rx) = joined(&sockets, "b", 8);
        // `leaving` is closing (its on_leave runs, still in the room), and
        // `gone`'s writer ended: the room's "left" broadcast reaches neither.
        leaving.close(1000, "", CloseKind::Client);
        drop(gone_rx);
        sockets.route("room", "a", vec![Push::Broadcast { bytes: b"left".to_vec() }]);
        sockets.route("room", "a", vec![Push::Send { session: leaving.id, bytes: b"bye".to_vec() }]);
        sockets.route("room", "a", vec![Push::Close { session: gone.id, reason: "bye".into() }]);
        let status = sockets.status();
        assert_eq!((status.pushes_after_close, status.pushes_dropped), (4, 0), "{status:?}");
        assert!(matches!(staying_rx.try_recv(), Ok(Outgoing::Frame(_))), "the open session got it");
        // What an operator must act on stays in pushes_dropped: an id of
        // another instance, an id no session has.
        sockets.route("room", "a", vec![Push::Send { session: other.id, bytes: b"x".to_vec() }]);
        sockets.route("room", "a", vec![Push::Close { session: u64::MAX, reason: "x".into() }]);
        let status = sockets.status();
        assert_eq!((status.pushes_after_close, status.pushes_dropped), (4, 2), "{status:?}");
        let mut metrics = String::new();
        sockets.render(&mut metrics);
        assert!(metrics.contains("\nhotswap_session_pushes_after_close_total 4\n"), "{metrics}");
        assert!(metrics.contains("\nhotswap_session_pushes_dropped_total 2\n"), "{metrics}");
    }

    #[test]
    fn pushes_are_text_when_utf8_and_binary_otherwise() {
        assert!(matches!(frame(b"hi".to_vec()), Message::Text(_)));
        assert!(matches!(frame(vec![0xFF, 0]), Message::Binary(_)));
    }
}
