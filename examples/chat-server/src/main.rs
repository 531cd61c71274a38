//! Run with: `cargo run -p chat-server -- MODULE FILE [PORT]`
//! e.g. `cargo build -p chat-room`, then `cargo run -p chat-server -- chat-room
//! target/debug/libchat_room.so 9001`, and connect browsers or `websocat` to
//! `ws://127.0.0.1:9001/kitchen?name=ann`, saying `{"text": "hi"}`.
//!
//! A WebSocket chat server in plain tokio that embeds the engine: the
//! engine's sessions API is all a host needs to put a module behind its own
//! WebSocket front (docs/README.md, "Sessions").
//!
//! Connect to `ws://127.0.0.1:PORT/ROOM?QUERY`: the path names the room (an
//! instance of the module, `lobby` if empty), the query is the join request
//! the module's `on_join` sees. Each text or binary message goes to its
//! `on_message`; what the module pushes comes back on the socket. Rooms with
//! sessions tick every second. Overwrite FILE and send SIGHUP to swap the
//! module's code: every connection stays open, every room keeps its state.
//!
//! Prints `listening on ADDRESS`, then `swapped ..` or `swap refused: ..`
//! per SIGHUP, on stdout (its test reads them: tests/swap.rs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use hotswap::{Engine, EngineConfig, Push, PushSink};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::block_in_place;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::{WebSocketStream, accept_hdr_async_with_config};

/// Pushes a session may have waiting; one more means the client reads too
/// slowly, and the session is closed rather than queued without bound.
const QUEUE: usize = 256;
/// How long one frame may take to reach a client before it is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_secs(1);
/// Room names come from clients: cap how many rooms they can start.
const MAX_ROOMS: usize = 1000;

/// The outgoing queues of a room's sessions, by session id.
type Queues = HashMap<u64, mpsc::Sender<Message>>;

/// Every session's queue, by room.
#[derive(Default)]
struct Rooms(Mutex<HashMap<String, Queues>>);

impl Rooms {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Queues>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The push sink: runs while the engine holds the room, so it only enqueues.
    fn deliver(&self, room: &str, pushes: Vec<Push>) {
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
    fn remove(&self, room: &str, id: u64, last: Message) {
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
fn close(code: CloseCode, mut reason: String) -> Message {
    reason.truncate((0..=reason.len().min(123)).rfind(|&end| reason.is_char_boundary(end)).unwrap_or(0));
    Message::Close(Some(CloseFrame { code, reason: reason.into() }))
}

struct Server {
    engine: Engine,
    module: String,
    file: std::path::PathBuf,
    rooms: Arc<Rooms>,
}

/// One connection, from the WebSocket handshake to the session's leave.
async fn serve(server: Arc<Server>, stream: TcpStream, id: u64) {
    let mut target = String::new();
    #[allow(clippy::result_large_err)] // the signature is tungstenite's handshake callback
    let on_request = |request: &Request, response: Response| {
        target = request.uri().to_string();
        Ok(response)
    };
    let limits = WebSocketConfig::default().max_message_size(Some(64 << 10));
    let Ok(socket) = accept_hdr_async_with_config(stream, on_request, Some(limits)).await else { return };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let room = Some(path.trim_matches('/')).filter(|room| !room.is_empty()).unwrap_or("lobby").to_owned();
    let (queue, outgoing) = mpsc::channel(QUEUE);
    server.rooms.lock().entry(room.clone()).or_default().insert(id, queue);
    let (sink, mut incoming) = socket.split();
    let mut writer = tokio::spawn(write(sink, outgoing));

    // Engine calls wait for their room (and, during a swap, for the new
    // version): block_in_place lets tokio move other tasks off this worker.
    let (engine, module) = (&server.engine, server.module.as_str());
    if let Err(refused) = block_in_place(|| engine.session_join(module, &room, id, query.as_bytes())) {
        server.rooms.remove(&room, id, close(CloseCode::Policy, refused.to_string()));
        return drop(writer.await);
    }
    loop {
        let bytes = tokio::select! {
            message = incoming.next() => match message {
                Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => continue,
            },
            _ = &mut writer => break, // closed by the module, or too slow
        };
        let said = block_in_place(|| engine.session_message(module, &room, id, &bytes));
        said.unwrap_or_else(|refused| eprintln!("session {id}: {refused}"));
    }
    writer.abort();
    server.rooms.remove(&room, id, close(CloseCode::Normal, String::new()));
    let left = block_in_place(|| engine.session_leave(module, &room, id));
    left.unwrap_or_else(|failed| eprintln!("session {id}: {failed}"));
}

/// Sends a session's queue to its client; the queue ending without a close
/// frame means it overflowed.
async fn write(mut sink: SplitSink<WebSocketStream<TcpStream>, Message>, mut queue: mpsc::Receiver<Message>) {
    loop {
        let message = queue.recv().await;
        let last = !matches!(message, Some(Message::Text(_) | Message::Binary(_)));
        let message =
            message.unwrap_or_else(|| close(CloseCode::Policy, "too slow: your queue was full".into()));
        if !matches!(tokio::time::timeout(SEND_TIMEOUT, sink.send(message)).await, Ok(Ok(()))) || last {
            return;
        }
    }
}

/// Ticks every room with sessions.
async fn tick(server: Arc<Server>) {
    let busy: Vec<String> = server.rooms.lock().keys().cloned().collect();
    for room in busy {
        let ticked = block_in_place(|| server.engine.tick(&server.module, &room));
        ticked.unwrap_or_else(|failed| eprintln!("tick: {failed}"));
    }
}

/// Loads the module's file again: a swap, which the sessions do not notice.
async fn swap(server: Arc<Server>) {
    match block_in_place(|| server.engine.load(&server.module, &server.file)) {
        Ok(report) => println!("swapped {report}"),
        Err(refused) => println!("swap refused: {refused}"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(module), Some(file)) = (args.next(), args.next()) else {
        return Err("usage: chat-server MODULE FILE [PORT]".into());
    };
    let port: u16 = args.next().map_or(Ok(0), |port| port.parse())?;

    let rooms = Arc::new(Rooms::default());
    let sink_rooms = rooms.clone();
    let on_push = Some(PushSink::new(move |_module, room, pushes| sink_rooms.deliver(room, pushes)));
    let engine = Engine::new(EngineConfig { on_push, ..EngineConfig::default() });
    println!("loaded {}", engine.load(&module, &file)?);
    engine.set_max_instances(&module, Some(MAX_ROOMS))?;
    let server = Arc::new(Server { engine, module, file: file.into(), rooms });

    let mut hangups = signal(SignalKind::hangup())?;
    let mut ticks = tokio::time::interval(TICK);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on {}", listener.local_addr()?);
    for id in 1.. {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => drop(tokio::spawn(serve(server.clone(), stream, id))),
                // Out of descriptors, say: wait for some to be freed.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            },
            _ = hangups.recv() => drop(tokio::spawn(swap(server.clone()))),
            _ = ticks.tick() => drop(tokio::spawn(tick(server.clone()))),
        }
    }
    Ok(())
}
