//! Sessions that move, with their connections, to the new process of an
//! upgrade.
//!
//! While the old process is frozen (no call runs), [`Moving::pause_all`]
//! asks every serving session to stop: its reader stops between two reads
//! (what it read but did not use stays in its [`ReadState`]), a message it
//! read but whose `on_message` has not run is taken back from its room's
//! inbox, and its writer stops, leaving the bytes of frames it had not
//! written yet (a client that does not read can hold it inside a frame)
//! and the pushes still queued. Each session then reports a
//! [`MovedSession`] (its id, room, read state, that message, those pushes)
//! with a duplicate of its socket, and waits. The upgrade sends them to the
//! new process (`upgrade.rs`) and then gives each its [`Verdict`]:
//!
//! - `Moved` once the new process committed: the session ends here without
//!   a close frame and without `on_leave`; its socket stays open, held by
//!   the new process, which goes on from where this one stopped.
//! - `Resume` if the upgrade failed before its commit: the session goes on
//!   here as if nothing happened (its message runs, its pushes go out).
//! - `Close` for a session that reported too late to be sent: it is closed
//!   with 1001, as before sessions moved.
//!
//! Sessions not serving at the freeze (a join not yet run) do not move:
//! they are closed with 1001 after the commit, and counted.

use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use super::record::{put_bytes, put_u64, take_sized};
use super::wire::park::ReadState;
use super::{Outgoing, lock, record};

/// What a session moving to a new process takes with it, besides its socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedSession {
    pub id: u64,
    pub module: String,
    pub instance: String,
    /// The `[[socket]]` path it connected to.
    pub endpoint: String,
    /// Its outgoing queue's size.
    pub queue: usize,
    pub read_state: ReadState,
    /// Bytes of frames queued but not yet written (the first perhaps begun):
    /// written first, so the client reads every frame whole and once.
    pub unwritten: Vec<u8>,
    /// A message read but not yet run: it runs first in the new process.
    pub pending: Option<Bytes>,
    /// Pushes queued but not yet written, in order.
    pub backlog: Vec<Queued>,
}

/// A push waiting in a session's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queued {
    Text(Bytes),
    Binary(Bytes),
    /// The module closed the session (`ctx.close`) after the pushes before.
    Close(String),
}

impl Queued {
    pub(super) fn from_outgoing(outgoing: &Outgoing) -> Queued {
        match outgoing {
            Outgoing::Frame(tungstenite::Message::Text(text)) => Queued::Text(Bytes::from(text.clone())),
            Outgoing::Frame(message) => Queued::Binary(message.clone().into_data()),
            Outgoing::Close(reason) => Queued::Close(reason.clone()),
        }
    }

    pub(super) fn into_outgoing(self) -> Outgoing {
        match self {
            Queued::Text(bytes) => match tungstenite::Utf8Bytes::try_from(bytes.clone()) {
                Ok(text) => Outgoing::Frame(tungstenite::Message::Text(text)),
                Err(_) => Outgoing::Frame(tungstenite::Message::binary(bytes)),
            },
            Queued::Binary(bytes) => Outgoing::Frame(tungstenite::Message::binary(bytes)),
            Queued::Close(reason) => Outgoing::Close(reason),
        }
    }
}

/// What becomes of a paused session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Moved,
    Resume,
    Close,
}

/// A paused session's report: what it takes, a duplicate of its socket,
/// and where its verdict goes.
#[derive(Debug)]
pub struct Paused {
    pub session: MovedSession,
    pub socket: OwnedFd,
    verdict: oneshot::Sender<Verdict>,
}

/// The pause signal and the sessions' reports.
#[derive(Debug)]
pub struct Moving {
    pause: watch::Sender<bool>,
    /// Sessions in their message loop: the ones a pause waits for.
    serving: AtomicUsize,
    reports: Mutex<Option<mpsc::UnboundedSender<Paused>>>,
    /// Whether the last pause ended in a move: the fate of a session that
    /// reports after it ended.
    last_moved: AtomicBool,
}

impl Default for Moving {
    fn default() -> Moving {
        Moving {
            pause: watch::Sender::new(false),
            serving: AtomicUsize::new(0),
            reports: Mutex::new(None),
            last_moved: AtomicBool::new(false),
        }
    }
}

/// Counts a session as serving while it lives.
pub(super) struct Serving<'a>(&'a Moving);

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.0.serving.fetch_sub(1, Relaxed);
    }
}

impl Moving {
    pub(super) fn serving(&self) -> Serving<'_> {
        self.serving.fetch_add(1, Relaxed);
        Serving(self)
    }

    /// Told when sessions must pause.
    pub(super) fn subscribe(&self) -> watch::Receiver<bool> {
        self.pause.subscribe()
    }

    /// A paused session reports; its verdict comes back on the receiver.
    /// One that reports after the pause ended gets that pause's fate at
    /// once: closed if the others moved, resumed if the upgrade failed.
    pub(super) fn report(&self, session: MovedSession, socket: OwnedFd) -> oneshot::Receiver<Verdict> {
        let (verdict, receiver) = oneshot::channel();
        let paused = Paused { session, socket, verdict };
        let refused = match &*lock(&self.reports) {
            Some(reports) => reports.send(paused).err().map(|err| err.0),
            None => Some(paused),
        };
        if let Some(paused) = refused {
            let _ = paused.verdict.send(self.unsent_fate());
        }
        receiver
    }

    /// The verdict of a session that was not sent with the last pause.
    fn unsent_fate(&self) -> Verdict {
        if self.last_moved.load(SeqCst) { Verdict::Close } else { Verdict::Resume }
    }

    /// Pauses every serving session and collects their reports, waiting at
    /// most `wait` for the last one. The returned sessions resume when it
    /// is dropped, unless [`PausedSessions::moved`] was called.
    pub async fn pause_all(&self, wait: Duration) -> PausedSessions<'_> {
        let (reports, mut received) = mpsc::unbounded_channel();
        *lock(&self.reports) = Some(reports);
        self.pause.send_replace(true);
        let deadline = tokio::time::Instant::now() + wait;
        let mut sessions = Vec::new();
        while sessions.len() < self.serving.load(Relaxed) {
            match tokio::time::timeout_at(deadline, received.recv()).await {
                Ok(Some(paused)) => sessions.push(paused),
                Ok(None) | Err(_) => break,
            }
        }
        // Reports from now on are late: they are not sent, and learn their
        // fate when the pause ends (`PausedSessions`'s drop).
        PausedSessions { moving: self, sessions, late: received, moved: false }
    }
}

/// Sessions paused for a move. Dropped without [`moved`](Self::moved),
/// they resume.
#[derive(Debug)]
pub struct PausedSessions<'a> {
    moving: &'a Moving,
    pub sessions: Vec<Paused>,
    /// Sessions that reported after the count: a join that ran just before
    /// the freeze, say. Not sent: closed if the others moved, else resumed.
    late: mpsc::UnboundedReceiver<Paused>,
    moved: bool,
}

impl PausedSessions<'_> {
    /// The new process has them: each ends here without a close frame.
    pub fn moved(mut self) {
        self.moved = true;
    }
}

impl Drop for PausedSessions<'_> {
    fn drop(&mut self) {
        let verdict = if self.moved { Verdict::Moved } else { Verdict::Resume };
        // The fate of any later report, set before reports stop being taken.
        self.moving.last_moved.store(self.moved, SeqCst);
        lock(&self.moving.reports).take();
        let unsent = self.moving.unsent_fate();
        // Unpaused first, so a resumed session does not pause again.
        self.moving.pause.send_replace(false);
        for paused in self.sessions.drain(..) {
            let _ = paused.verdict.send(verdict);
        }
        while let Ok(late) = self.late.try_recv() {
            let _ = late.verdict.send(unsent);
        }
    }
}

/// The layout version of [`encode`].
const RECORDS_VERSION: u8 = 1;

/// Sessions as bytes: a version byte, their count, then each session's
/// fields, byte strings prefixed with their u64 length (little-endian).
pub fn encode(sessions: &[&MovedSession]) -> Vec<u8> {
    let mut out = vec![RECORDS_VERSION];
    put_u64(&mut out, sessions.len() as u64);
    for session in sessions {
        put_u64(&mut out, session.id);
        put_bytes(&mut out, session.module.as_bytes());
        put_bytes(&mut out, session.instance.as_bytes());
        put_bytes(&mut out, session.endpoint.as_bytes());
        put_u64(&mut out, session.queue as u64);
        put_bytes(&mut out, &session.read_state.to_bytes());
        put_bytes(&mut out, &session.unwritten);
        match &session.pending {
            None => out.push(0),
            Some(message) => {
                out.push(1);
                put_bytes(&mut out, message);
            }
        }
        put_u64(&mut out, session.backlog.len() as u64);
        for queued in &session.backlog {
            let (kind, bytes): (u8, &[u8]) = match queued {
                Queued::Text(bytes) => (1, bytes),
                Queued::Binary(bytes) => (2, bytes),
                Queued::Close(reason) => (3, reason.as_bytes()),
            };
            out.push(kind);
            put_bytes(&mut out, bytes);
        }
    }
    out
}

/// Reads what [`encode`] wrote; names what is wrong otherwise.
pub fn decode(bytes: &[u8]) -> Result<Vec<MovedSession>, String> {
    decode_records(bytes).map_err(|error| format!("the moved sessions' record {error}"))
}

fn decode_records(bytes: &[u8]) -> Result<Vec<MovedSession>, String> {
    let mut rest = bytes;
    let version = record::take(&mut rest, 1, "the version")?[0];
    if version != RECORDS_VERSION {
        return Err(format!("has layout version {version}, this build reads {RECORDS_VERSION}"));
    }
    let count = record::take_u64(&mut rest, "the count")?;
    let mut sessions = Vec::new();
    for _ in 0..count {
        let id = record::take_u64(&mut rest, "an id")?;
        let text = |rest: &mut &[u8], what: &str| {
            String::from_utf8(take_sized(rest, what)?.to_vec())
                .map_err(|_| format!("holds {what} that is not UTF-8"))
        };
        let module = text(&mut rest, "a module")?;
        let instance = text(&mut rest, "an instance")?;
        let endpoint = text(&mut rest, "an endpoint")?;
        let queue = usize::try_from(record::take_u64(&mut rest, "a queue size")?).unwrap_or(usize::MAX);
        let read_state = ReadState::from_bytes(take_sized(&mut rest, "a read state")?)
            .map_err(|e| format!("holds a bad read state: {e}"))?;
        let unwritten = take_sized(&mut rest, "unwritten bytes")?.to_vec();
        let pending = match record::take(&mut rest, 1, "a pending flag")?[0] {
            0 => None,
            _ => Some(Bytes::copy_from_slice(take_sized(&mut rest, "a pending message")?)),
        };
        let mut backlog = Vec::new();
        for _ in 0..record::take_u64(&mut rest, "a backlog count")? {
            let kind = record::take(&mut rest, 1, "a push kind")?[0];
            let bytes = Bytes::copy_from_slice(take_sized(&mut rest, "a push")?);
            backlog.push(match kind {
                1 => Queued::Text(bytes),
                2 => Queued::Binary(bytes),
                3 => Queued::Close(String::from_utf8_lossy(&bytes).into_owned()),
                other => return Err(format!("holds a queued push of kind {other}; 1, 2 or 3 were expected")),
            });
        }
        sessions.push(MovedSession {
            id,
            module,
            instance,
            endpoint,
            queue,
            read_state,
            unwritten,
            pending,
            backlog,
        });
    }
    if !rest.is_empty() {
        return Err(format!("has {} bytes left over after its end", rest.len()));
    }
    Ok(sessions)
}

/// The sessions a new process took over, waiting for the commit to start.
pub type Adopted = Vec<(MovedSession, std::net::TcpStream)>;

/// Pairs decoded sessions with the sockets that came with them.
pub fn adopt(records: &[u8], sockets: Vec<OwnedFd>) -> Result<Adopted, String> {
    let sessions = decode(records)?;
    if sessions.len() != sockets.len() {
        return Err(format!("{} moved sessions came with {} sockets", sessions.len(), sockets.len()));
    }
    Ok(sessions.into_iter().zip(sockets.into_iter().map(std::net::TcpStream::from)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: u64) -> MovedSession {
        MovedSession {
            id,
            module: "room".into(),
            instance: "a".into(),
            endpoint: "/ws".into(),
            queue: 8,
            read_state: ReadState::default(),
            unwritten: vec![],
            pending: None,
            backlog: vec![],
        }
    }

    fn socket() -> OwnedFd {
        OwnedFd::from(std::os::unix::net::UnixStream::pair().unwrap().0)
    }

    /// A session that starts serving just after a pause counted the serving
    /// ones (its join ran right before the freeze) reports late. Its fate is
    /// the upgrade's: it resumes when the upgrade rolls back (it used to be
    /// closed with 1001 even then), and is closed when the others moved
    /// without it — also when it reports after the pause ended.
    #[tokio::test]
    async fn a_session_that_reports_after_the_pause_counted_shares_the_upgrades_fate() {
        let moving = Moving::default();
        for moved in [false, true] {
            let paused = moving.pause_all(Duration::from_millis(10)).await;
            assert!(paused.sessions.is_empty(), "none was serving when it counted");
            let late = moving.report(session(7), socket());
            let fate = if moved {
                paused.moved();
                Verdict::Close
            } else {
                drop(paused);
                Verdict::Resume
            };
            assert_eq!(late.await.unwrap(), fate, "reported during the pause, moved: {moved}");
            let after = moving.report(session(8), socket());
            assert_eq!(after.await.unwrap(), fate, "reported after the pause, moved: {moved}");
        }
    }

    #[test]
    fn moved_sessions_read_back_as_written_and_damage_is_named() {
        let session = MovedSession {
            id: 42,
            module: "room".into(),
            instance: "é-7".into(),
            endpoint: "/ws".into(),
            queue: 256,
            read_state: ReadState::default(),
            unwritten: b"\x81\x05hel".to_vec(),
            pending: Some(Bytes::from_static(b"half")),
            backlog: vec![
                Queued::Text("ack 1".into()),
                Queued::Binary(vec![0xFF].into()),
                Queued::Close("bye".into()),
            ],
        };
        let other = MovedSession { id: 43, pending: None, backlog: vec![], ..session.clone() };
        let bytes = encode(&[&session, &other]);
        assert_eq!(decode(&bytes).unwrap(), vec![session, other]);
        assert!(decode(&bytes[..bytes.len() - 1]).unwrap_err().contains("record ends in"));
        let mut newer = bytes.clone();
        newer[0] = 9;
        assert!(decode(&newer).unwrap_err().contains("version 9, this build reads 1"));
        assert!(adopt(&bytes, vec![]).unwrap_err().contains("2 moved sessions came with 0 sockets"));
    }
}
