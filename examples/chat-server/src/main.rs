//! Run with: cargo run -p chat-server -- MODULE FILE [PORT]
//! (e.g. `room target/debug/libroom.so 9001`, after `cargo build -p room`)
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
use std::error::Error;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use hotswap::{Engine, EngineConfig, Push, PushSink};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, accept_hdr_async_with_config};

/// Pushes a session may have waiting; one more means the client reads too
/// slowly, and the session is closed rather than queued without bound.
const QUEUE: usize = 256;
/// How long one frame may take to reach a client before it is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_secs(1);
/// Room names come from clients: cap how many rooms they can start.
const MAX_ROOMS: usize = 1000;

/// The outgoing queue of every session, by room and session id.
#[derive(Default)]
struct Rooms(Mutex<HashMap<String, HashMap<u64, mpsc::Sender<Message>>>>);

impl Rooms {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<u64, mpsc::Sender<Message>>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The push sink: runs while the engine holds the room, so it only enqueues.
    fn deliver(&self, room: &str, pushes: Vec<Push>) {
        let mut rooms = self.lock();
        let Some(sessions) = rooms.get_mut(room) else { return };
        for push in pushes {
            let (targets, message) = match push {
                Push::Send { session, bytes } => (vec![session], text(bytes)),
                Push::Broadcast { bytes } => (sessions.keys().copied().collect(), text(bytes)),
                Push::Close { session, reason } => (vec![session], close(CloseCode::Normal, reason)),
                _ => continue,
            };
            for id in targets {
                enqueue(sessions, id, message.clone());
            }
        }
    }

    /// Removes a session; `last` (a close frame) is the last thing it is sent.
    fn remove(&self, room: &str, id: u64, last: Option<Message>) {
        let mut rooms = self.lock();
        let Some(sessions) = rooms.get_mut(room) else { return };
        match last {
            Some(last) => enqueue(sessions, id, last),
            None => drop(sessions.remove(&id)),
        }
        if sessions.is_empty() {
            rooms.remove(room);
        }
    }
}

/// Queues `message` for session `id`. A full queue, or a close frame, ends
/// the session's queue: its writer sends what is queued, then closes.
fn enqueue(sessions: &mut HashMap<u64, mpsc::Sender<Message>>, id: u64, message: Message) {
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
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.truncate(end);
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(reason) }))
}

struct Server {
    engine: Engine,
    module: String,
    file: PathBuf,
    rooms: Arc<Rooms>,
}

/// Runs `job` on the blocking pool: engine calls wait for their room (and
/// during a swap, for the new version), which must not stall tokio's workers.
async fn on_engine<T: Send + 'static, E: ToString>(
    server: &Arc<Server>,
    job: impl FnOnce(&Server) -> Result<T, E> + Send + 'static,
) -> Result<T, String> {
    let server = server.clone();
    let done = tokio::task::spawn_blocking(move || job(&server).map_err(|e| e.to_string())).await;
    done.unwrap_or_else(|panicked| Err(format!("engine call failed: {panicked}")))
}

/// One connection, from the WebSocket handshake to the session's leave.
async fn serve(server: Arc<Server>, stream: TcpStream, id: u64) -> Result<(), Box<dyn Error>> {
    let mut target = String::new();
    let on_request = |request: &Request, response: Response| {
        target = request.uri().to_string();
        Ok(response)
    };
    let limits = WebSocketConfig::default().max_message_size(Some(64 << 10));
    let socket = accept_hdr_async_with_config(stream, on_request, Some(limits)).await?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let room = Some(path.trim_matches('/')).filter(|room| !room.is_empty()).unwrap_or("lobby").to_owned();
    let (queue, outgoing) = mpsc::channel(QUEUE);
    server.rooms.lock().entry(room.clone()).or_default().insert(id, queue);
    let (sink, mut incoming) = socket.split();
    let mut writer = tokio::spawn(write(sink, outgoing));

    let (request, key) = (query.as_bytes().to_vec(), room.clone());
    let joined = on_engine(&server, move |s| s.engine.session_join(&s.module, &key, id, &request)).await;
    if let Err(refusal) = joined {
        server.rooms.remove(&room, id, Some(close(CloseCode::Policy, refusal)));
        let _ = writer.await;
        return Ok(());
    }
    loop {
        let message = tokio::select! {
            message = incoming.next() => message,
            _ = &mut writer => break, // closed by the module, or too slow
        };
        let bytes = match message {
            Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
            Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
            Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            Some(Ok(_)) => continue,
        };
        let key = room.clone();
        if let Err(refusal) =
            on_engine(&server, move |s| s.engine.session_message(&s.module, &key, id, &bytes)).await
        {
            eprintln!("session {id}: {refusal}");
        }
    }
    writer.abort();
    server.rooms.remove(&room, id, None);
    on_engine(&server, move |s| s.engine.session_leave(&s.module, &room, id)).await?;
    Ok(())
}

/// Sends a session's queue to its client; the queue ending without a close
/// frame means it overflowed.
async fn write(mut sink: SplitSink<WebSocketStream<TcpStream>, Message>, mut queue: mpsc::Receiver<Message>) {
    loop {
        let message = queue.recv().await;
        let last = !matches!(message, Some(Message::Text(_) | Message::Binary(_)));
        let message =
            message.unwrap_or_else(|| close(CloseCode::Policy, "too slow: your queue was full".into()));
        if !matches!(timeout(SEND_TIMEOUT, sink.send(message)).await, Ok(Ok(()))) || last {
            return;
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
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

    let ticker = server.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(TICK);
        loop {
            every.tick().await;
            let busy: Vec<String> = ticker.rooms.lock().keys().cloned().collect();
            for room in busy {
                if let Err(failed) = on_engine(&ticker, move |s| s.engine.tick(&s.module, &room)).await {
                    eprintln!("tick: {failed}");
                }
            }
        }
    });

    let mut hangups = signal(SignalKind::hangup())?;
    let swapper = server.clone();
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match on_engine(&swapper, |s| s.engine.load(&s.module, &s.file)).await {
                Ok(report) => println!("swapped {report}"),
                Err(refused) => println!("swap refused: {refused}"),
            }
        }
    });

    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on {}", listener.local_addr()?);
    let next_id = AtomicU64::new(1);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, say: wait for some to be freed.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let server = server.clone();
        tokio::spawn(async move {
            if let Err(failed) = serve(server, stream, id).await {
                eprintln!("session {id}: {failed}");
            }
        });
    }
}
