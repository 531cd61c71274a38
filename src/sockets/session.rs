//! One WebSocket connection: the handshake on the public port, then join,
//! messages in the order sent, pushes out, and leave once.
//!
//! The module's hooks run like calls (`public.rs`): through the upgrade
//! gate, on the instance's turn, on a thread of the call pool; messages go
//! through their room's inbox, which runs them in batches (`inbox.rs`). A
//! session runs one message at a time and reads the next only after it, so
//! its messages reach the module in the order the client sent them; a stuck
//! instance holds its own sessions only. Pushes go out on a writer task of
//! their own, so a client that reads slowly never holds up the module.
//!
//! After the 101 the session takes the raw TCP stream back from hyper and
//! frames it itself (`wire.rs`), so what it read ahead can be handed over.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hotswap::CallError;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, watch};
use tungstenite::handshake::derive_accept_key;

use super::moving::{MovedSession, Queued, Verdict};
use super::wire::park::ReadState;
use super::wire::{Received, WireError, WireReader, WireWriter};
use super::{CloseKind, Full, Outgoing, Room, SessionHandle, inbox};
use crate::config::{DEFAULT_INSTANCE, SocketEndpoint, SocketInstance};
use crate::connections::{Admission, Counted};
use crate::daemon::Daemon;

mod writer;

use crate::http::parked::ConnectionIo;
use crate::http::{self, Listening, Response};
use writer::{ParkedWriter, write};

/// How long a close frame may take to go out before the connection is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// What a client is told when this process stops or hands over.
const GOING_AWAY: &str = "going away: the server restarts; reconnect";

/// Answers a request to a `[[socket]]` path: 101 and a session task, or a
/// status that says why not.
pub fn accept(daemon: &Arc<Daemon>, endpoint: &SocketEndpoint, request: Request<Incoming>) -> Response {
    if let Err((status, why)) = check_handshake(&request) {
        return http::error(status, format!("{} is a WebSocket endpoint: {why}", endpoint.path));
    }
    if daemon.handed_over.get().is_some() || daemon.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return http::error(503, "this process is handing over or stopping; connect again");
    }
    let instance = match &endpoint.instance {
        SocketInstance::Fixed(key) => key.clone(),
        SocketInstance::FromQuery => {
            match crate::public::instance_key(request.uri().query(), DEFAULT_INSTANCE) {
                Ok(key) => key,
                Err(reason) => return http::error(400, reason),
            }
        }
    };
    let room = Room { module: endpoint.module.clone(), instance };
    let opened = daemon.sockets.open(&endpoint.path, endpoint.max_sessions, room, endpoint.queue);
    let (handle, outgoing) = match opened {
        Ok(opened) => opened,
        Err(Full { max_sessions }) => {
            return http::error(
                503,
                format!("{} has {max_sessions} sessions open (its max_sessions); try later", endpoint.path),
            );
        }
    };
    let key = request.headers().get(SEC_WEBSOCKET_KEY).expect("checked").as_bytes().to_vec();
    let join_request = request.uri().query().unwrap_or("").as_bytes().to_vec();
    let running = daemon.clone();
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(request).await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!("a WebSocket upgrade failed: {err}");
                running.sockets.remove(&handle, CloseKind::Dropped);
                return;
            }
        };
        match upgraded.downcast::<PublicIo>() {
            Ok(parts) => {
                // What hyper read past the handshake comes first, then what
                // the connection had read ahead and not yet given to hyper.
                let (counted, not_given) = parts.io.into_inner().into_parts();
                let (stream, _admitted) = counted.into_parts();
                let read_ahead = crate::http::parked::read_ahead(parts.read_buf, not_given);
                run(&running, &handle, outgoing, stream, read_ahead, join_request).await;
            }
            Err(_) => {
                // Only a change to the accept loop (`http::serve`,
                // `connections::Capped`) can get here; the tests would see it.
                tracing::error!(
                    "a WebSocket connection is not the public port's TCP stream ({}); closing it",
                    std::any::type_name::<PublicIo>()
                );
                running.sockets.remove(&handle, CloseKind::Dropped);
            }
        }
    });
    let mut response = http::bytes(101, "");
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(&key)).expect("base64 is a valid header value"),
    );
    response
}

/// What RFC 6455 asks of an opening handshake; `Err` is the status and why.
fn check_handshake(request: &Request<Incoming>) -> Result<(), (u16, String)> {
    let header = |name| request.headers().get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    let has_token = |name, token: &str| {
        header(name).is_some_and(|value| value.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
    };
    if request.method() != Method::GET {
        return Err((405, format!("open it with GET, not {}", request.method())));
    }
    if !has_token(UPGRADE, "websocket") || !has_token(CONNECTION, "upgrade") {
        return Err((426, "send Upgrade: websocket and Connection: upgrade".into()));
    }
    if header(hyper::header::SEC_WEBSOCKET_VERSION) != Some("13") {
        return Err((426, "only Sec-WebSocket-Version: 13 is spoken".into()));
    }
    if request.headers().get(SEC_WEBSOCKET_KEY).is_none() {
        return Err((400, "the Sec-WebSocket-Key header is missing".into()));
    }
    Ok(())
}

/// What the public port's accept loop hands hyper (`serve.rs`, `http::serve`,
/// `http::parked`):
/// a session takes it back after the 101.
type PublicIo = TokioIo<ConnectionIo<Counted<TcpStream>>>;

/// A session's connection while it serves: the reader here, the writer on
/// a task of its own.
struct Connection {
    reader: WireReader<OwnedReadHalf>,
    /// Only the latest ping needs its pong (RFC 6455 section 5.5.3).
    pong: watch::Sender<Option<Bytes>>,
    /// Tells the writer to stop for a move: only the session does, once it
    /// paused itself (a session still joining does not move).
    park: watch::Sender<bool>,
    writer: tokio::task::JoinHandle<Option<ParkedWriter>>,
}

impl Connection {
    fn start(
        daemon: &Arc<Daemon>,
        handle: &Arc<SessionHandle>,
        stream: TcpStream,
        (read_state, unwritten): (ReadState, Vec<u8>),
        outgoing: mpsc::Receiver<Outgoing>,
        backlog: Vec<Outgoing>,
    ) -> Connection {
        let (read_half, write_half) = stream.into_split();
        let reader = WireReader::resume(read_half, read_state, daemon.config().max_body);
        let (pong, pongs) = watch::channel(None);
        let writer = WireWriter::resume(write_half, unwritten);
        let (park, parking) = watch::channel(false);
        let writing = write(daemon.clone(), handle.clone(), writer, outgoing, pongs, parking, backlog);
        Connection { reader, pong, park, writer: tokio::spawn(writing) }
    }
}

/// The session from join to leave. `read_ahead` is what hyper read past
/// the upgrade request: the first bytes of the stream.
async fn run(
    daemon: &Arc<Daemon>,
    handle: &Arc<SessionHandle>,
    outgoing: mpsc::Receiver<Outgoing>,
    stream: TcpStream,
    read_ahead: Bytes,
    join_request: Vec<u8>,
) {
    let parked = (ReadState::read_ahead(&read_ahead), Vec::new());
    let connection = Connection::start(daemon, handle, stream, parked, outgoing, Vec::new());
    let id = handle.id;
    let joining = handle.clone();
    let joined = hook(daemon, handle, "on_join", move |engine, module, instance| {
        // On the room's turn: every call before this one has routed its
        // broadcasts, so none of them reaches a session the module may yet refuse.
        joining.joins();
        engine.session_join(module, instance, id, &join_request)
    })
    .await;
    match joined {
        Ok(()) => serve(daemon, handle, connection, None).await,
        Err(failed) => {
            failed.close(handle, CloseKind::Refused);
            end(daemon, handle, connection.writer).await;
        }
    }
}

/// The sessions an upgrade moved here from the old process: each goes on
/// where it stopped there, with no `on_join`. All are registered before
/// any starts, so the first message one of them runs broadcasts to all.
///
/// Each takes a place in the public port's count of open connections, as an
/// accepted one does; one past `server.max_connections` (a config that
/// lowered it) is closed without a close frame and counted as refused.
pub fn resume_moved(daemon: &Arc<Daemon>, moved: super::moving::Adopted, admission: &Admission) {
    let registered: Vec<_> = moved
        .into_iter()
        .filter_map(|(moved, stream)| match admission.admit(stream) {
            Ok(counted) => Some((moved, counted.into_parts())),
            Err(refused) => {
                tracing::warn!(
                    session = moved.id,
                    "a moved session is past server.max_connections ({}); closing it",
                    admission.max()
                );
                drop(refused);
                None
            }
        })
        .map(|(moved, (stream, admitted))| {
            let room = Room { module: moved.module.clone(), instance: moved.instance.clone() };
            let (handle, outgoing) = daemon.sockets.adopt(moved.id, &moved.endpoint, room, moved.queue);
            (handle, outgoing, moved, stream, admitted)
        })
        .collect();
    for (handle, outgoing, moved, stream, admitted) in registered {
        let backlog = moved.backlog.into_iter().map(Queued::into_outgoing).collect();
        let running = daemon.clone();
        tokio::spawn(async move {
            let _admitted = admitted;
            match crate::upgrade::connections::into_tokio(stream) {
                Ok(stream) => {
                    let parked = (moved.read_state, moved.unwritten);
                    let connection = Connection::start(&running, &handle, stream, parked, outgoing, backlog);
                    serve(&running, &handle, connection, moved.pending).await;
                }
                Err(err) => {
                    tracing::warn!(session = handle.id, "a moved session's socket cannot be used: {err}");
                    running.sockets.remove(&handle, CloseKind::Dropped);
                }
            }
        });
    }
}

/// Serves a joined session until it ends or moves: its messages (`pending`
/// first), pauses for a move, and `on_leave`.
async fn serve(
    daemon: &Arc<Daemon>,
    handle: &Arc<SessionHandle>,
    mut connection: Connection,
    mut pending: Option<Bytes>,
) {
    let id = handle.id;
    loop {
        // Counted until its verdict: a pause waits for every serving session's report.
        let serving = daemon.sockets.moving.serving();
        let stopped = serve_messages(daemon, handle, &mut connection, &mut pending).await;
        if !stopped {
            break;
        }
        let resumed = moving_session(daemon, handle, connection, pending.take()).await;
        drop(serving);
        match resumed {
            Resumed::Here(again, message) => (connection, pending) = (again, message),
            Resumed::Moved => {
                daemon.sockets.remove(handle, CloseKind::Moved);
                return;
            }
            Resumed::Closed(None) => {
                handle.close(1001, GOING_AWAY, CloseKind::GoingAway);
                daemon.sockets.remove(handle, CloseKind::GoingAway);
                return;
            }
            // Its writer sends what was queued, then the 1001 (as `end` does
            // for every close).
            Resumed::Closed(Some(closing)) => return end(daemon, handle, closing.writer).await,
        }
    }
    // After a hand-over the state (and this session in it) lives in the
    // new process: nothing runs here any more.
    let left = hook(daemon, handle, "on_leave", move |engine, module, instance| {
        engine.session_leave(module, instance, id)
    })
    .await;
    if let Err(HookFailed::Call(error)) = left {
        tracing::warn!(module = %handle.room.module, instance = %handle.room.instance, "on_leave failed: {error}");
    }
    end(daemon, handle, connection.writer).await;
}

/// Unregisters an ended session and lets its writer send the close.
async fn end(
    daemon: &Arc<Daemon>,
    handle: &Arc<SessionHandle>,
    writer: tokio::task::JoinHandle<Option<ParkedWriter>>,
) {
    let kind = handle.closing.borrow().as_ref().map_or(CloseKind::Dropped, |closing| closing.kind);
    daemon.sockets.remove(handle, kind);
    if tokio::time::timeout(CLOSE_WAIT * 2, writer).await.is_err() {
        tracing::debug!(session = handle.id, "the writer did not end; dropping the connection");
    }
}

/// What became of a session paused for a move.
enum Resumed {
    /// The upgrade failed: serve on, `pending` first.
    Here(Connection, Option<Bytes>),
    /// The new process has it.
    Moved,
    /// It could not move: closed with 1001, by its connection's writer when
    /// it still has one (what was queued goes out first).
    Closed(Option<Connection>),
}

/// Pauses the session for a move: reports what it takes and waits for its
/// verdict (`moving.rs`).
async fn moving_session(
    daemon: &Arc<Daemon>,
    handle: &Arc<SessionHandle>,
    connection: Connection,
    pending: Option<Bytes>,
) -> Resumed {
    let Connection { reader, writer, park, .. } = connection;
    park.send_replace(true);
    let parked = match tokio::time::timeout(CLOSE_WAIT, writer).await {
        Ok(Ok(Some(parked))) => parked,
        // The writer ended (the session closes) or is stuck on a client
        // that does not read: this one does not move.
        _ => return Resumed::Closed(None),
    };
    let ParkedWriter { writer, taken, mut outgoing } = parked;
    let (read_half, read_state) = reader.park();
    let (write_half, unwritten) = writer.park();
    let stream = match read_half.reunite(write_half) {
        Ok(stream) => stream,
        Err(_) => return Resumed::Closed(None),
    };
    let mut backlog = Vec::from(taken);
    while let Ok(queued) = outgoing.try_recv() {
        backlog.push(queued);
    }
    let socket = match stream.as_fd().try_clone_to_owned() {
        Ok(socket) => socket,
        Err(err) => {
            tracing::warn!(session = handle.id, "cannot duplicate a session's socket to move it: {err}");
            return resume_here(daemon, handle, stream, (read_state, unwritten), outgoing, backlog, pending);
        }
    };
    let session = MovedSession {
        id: handle.id,
        module: handle.room.module.clone(),
        instance: handle.room.instance.clone(),
        endpoint: handle.endpoint.clone(),
        queue: handle.outgoing.max_capacity(),
        read_state: read_state.clone(),
        unwritten: unwritten.clone(),
        pending: pending.clone(),
        backlog: backlog.iter().map(Queued::from_outgoing).collect(),
    };
    match daemon.sockets.moving.report(session, socket).await {
        Ok(Verdict::Moved) => Resumed::Moved,
        Ok(Verdict::Resume) => {
            resume_here(daemon, handle, stream, (read_state, unwritten), outgoing, backlog, pending)
        }
        Ok(Verdict::Close) | Err(_) => {
            // Closing before its writer starts: the writer sends the
            // unwritten bytes and the queued pushes, then the close.
            handle.close(1001, GOING_AWAY, CloseKind::GoingAway);
            let parked = (read_state, unwritten);
            Resumed::Closed(Some(Connection::start(daemon, handle, stream, parked, outgoing, backlog)))
        }
    }
}

fn resume_here(
    daemon: &Arc<Daemon>,
    handle: &Arc<SessionHandle>,
    stream: TcpStream,
    parked: (ReadState, Vec<u8>),
    outgoing: mpsc::Receiver<Outgoing>,
    backlog: Vec<Outgoing>,
    pending: Option<Bytes>,
) -> Resumed {
    Resumed::Here(Connection::start(daemon, handle, stream, parked, outgoing, backlog), pending)
}

/// Runs the session's messages, one at a time, until it is closing
/// (`false`) or pauses to move (`true`, with a message that did not run
/// in `pending`).
async fn serve_messages(
    daemon: &Arc<Daemon>,
    handle: &Arc<SessionHandle>,
    connection: &mut Connection,
    pending: &mut Option<Bytes>,
) -> bool {
    let id = handle.id;
    let mut closing = handle.closing.subscribe();
    let mut listening = daemon.listening.subscribe();
    let mut pause = daemon.sockets.moving.subscribe();
    loop {
        let message = match pending.take() {
            Some(message) => message,
            None => {
                // Biased: once the session is closing (its last message
                // failed, its queue overflowed), no further message of it runs.
                let received = tokio::select! {
                    biased;
                    _ = closing.wait_for(Option::is_some) => return false,
                    _ = pause.wait_for(|paused| *paused) => return true,
                    _ = listening.wait_for(|mode| matches!(mode, Listening::Stop | Listening::HandOver)) => {
                        handle.close(1001, GOING_AWAY, CloseKind::GoingAway);
                        return false;
                    }
                    // Cancel-safe: a frame half read stays in the reader.
                    received = connection.reader.next() => received,
                };
                match received {
                    Ok(Received::Text(bytes) | Received::Binary(bytes)) => bytes,
                    Ok(Received::Ping(payload)) => {
                        connection.pong.send_replace(Some(payload));
                        continue;
                    }
                    Ok(Received::Pong(_)) => continue,
                    Ok(Received::Close(close)) => {
                        // The reply echoes the client's code (RFC 6455 section 5.5.1).
                        let code = close.map_or(1000, |(code, _)| code);
                        handle.close(code, "", CloseKind::Client);
                        return false;
                    }
                    Err(WireError::Protocol { code, reason }) => {
                        tracing::debug!(
                            session = id,
                            "closing a session that broke the protocol ({code}): {reason}"
                        );
                        handle.close(code, reason, CloseKind::Protocol);
                        return false;
                    }
                    Err(WireError::Ended) => {
                        handle.close(1006, "", CloseKind::Dropped);
                        return false;
                    }
                    Err(WireError::Io(err)) => {
                        tracing::debug!(session = id, "a session's connection broke: {err}");
                        handle.close(1006, "", CloseKind::Dropped);
                        return false;
                    }
                }
            }
        };
        daemon.sockets.messages_in.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match inbox::run_message(daemon, &handle.inbox, &handle.room, id, message, &mut pause).await {
            Ok(()) => {}
            Err(HookFailed::Withdrawn(message)) => {
                *pending = Some(message);
                return true;
            }
            Err(failed) => failed.close(handle, CloseKind::Failed),
        }
    }
}

#[derive(Debug)]
pub(super) enum HookFailed {
    /// The state moved to a new process: the hook must not run here.
    GoingAway,
    /// Taken back before it ran: the session moves, and the message with it.
    Withdrawn(Bytes),
    Call(CallError),
    /// The call thread running it failed (logged there).
    Thread(&'static str),
}

impl HookFailed {
    /// The close frame a session gets for a failed hook.
    fn close(self, handle: &SessionHandle, kind: CloseKind) {
        match self {
            HookFailed::GoingAway | HookFailed::Withdrawn(_) => {
                handle.close(1001, GOING_AWAY, CloseKind::GoingAway)
            }
            HookFailed::Call(error @ CallError::Refused { .. }) => {
                handle.close(1008, error.to_string(), kind)
            }
            HookFailed::Call(error) => handle.close(1011, error.to_string(), kind),
            HookFailed::Thread(what) => {
                handle.close(1011, format!("the call thread running {what} failed"), kind)
            }
        }
    }
}

/// Runs one session hook like a call: through the upgrade gate, on the
/// instance's turn, on a call thread.
async fn hook(
    daemon: &Arc<Daemon>,
    handle: &Arc<SessionHandle>,
    what: &'static str,
    run: impl FnOnce(&hotswap::Engine, &str, &str) -> Result<(), CallError> + Send + 'static,
) -> Result<(), HookFailed> {
    let _open = daemon.gate.read().await;
    if daemon.handed_over.get().is_some() {
        return Err(HookFailed::GoingAway);
    }
    let turn = daemon.calls.turn(&handle.room.module, &handle.room.instance).await;
    let running = daemon.clone();
    let ran = daemon
        .calls
        .pool
        .run_and_wait(move || turn.run(what, || run(&running.engine, turn.module(), turn.instance())).0)
        .await;
    match ran {
        Some(result) => result.map_err(HookFailed::Call),
        None => Err(HookFailed::Thread(what)),
    }
}
