//! The room of the `room` test module compiled into a plain tokio WebSocket
//! server, with no hotswap layer: the comparison for `sessions-load --part
//! plain`. It listens on 127.0.0.1 (an ephemeral port, printed as
//! `listening on ADDR` on stdout) and serves `GET /ws?instance=K`:
//! each message is numbered per room, acked `ack N` to its sender and
//! broadcast `SESSION:N:TEXT` to the room; a join broadcasts `joined ID`, a
//! leave `left ID`. Like the daemon, each session has at most 256 outgoing
//! messages queued (one more closes it, 1008 "too slow") and a writer task
//! of its own that sends the frames waiting together in one write.
//! It runs until killed.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

const QUEUE: usize = 256;

#[derive(Default)]
struct Room {
    seq: u64,
    sessions: HashMap<u64, mpsc::Sender<Message>>,
}

impl Room {
    /// Queues `message` for `id`; a full queue closes that session: its
    /// queue leaves the room, and its writer, once it has sent what was
    /// queued, closes with 1008 (as the daemon does).
    fn push(&mut self, id: u64, message: Message) {
        if let Some(queue) = self.sessions.get(&id)
            && let Err(mpsc::error::TrySendError::Full(_)) = queue.try_send(message)
        {
            self.sessions.remove(&id);
        }
    }

    fn broadcast(&mut self, message: &Message) {
        let ids: Vec<u64> = self.sessions.keys().copied().collect();
        for id in ids {
            self.push(id, message.clone());
        }
    }
}

type Rooms = Arc<Mutex<HashMap<String, Room>>>;

fn main() {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        println!("listening on {}", listener.local_addr().expect("the bound address"));
        std::io::stdout().flush().expect("flush stdout");
        let rooms = Rooms::default();
        let ids = Arc::new(AtomicU64::new(0));
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (rooms, ids) = (rooms.clone(), ids.clone());
            tokio::spawn(session(stream, rooms, ids));
        }
    });
}

async fn session(stream: TcpStream, rooms: Rooms, ids: Arc<AtomicU64>) {
    let _ = stream.set_nodelay(true);
    let mut instance = String::from("default");
    // The error type is tungstenite's (an HTTP response), not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        let query = request.uri().query().unwrap_or("");
        if let Some(value) = query.split('&').find_map(|pair| pair.strip_prefix("instance=")) {
            instance = value.to_owned();
        }
        Ok(response)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else { return };
    let id = ids.fetch_add(1, Ordering::Relaxed) + 1;
    let (mut sink, mut incoming) = ws.split();
    let (queue, mut outgoing) = mpsc::channel::<Message>(QUEUE);
    let writer = tokio::spawn(async move {
        // Like the daemon's writer: the frames that wait together go out in
        // one write and one flush.
        while let Some(message) = outgoing.recv().await {
            let mut closing = message.is_close();
            let mut fed = sink.feed(message).await.is_ok();
            let mut batch = 1;
            while fed && !closing && batch < 64 {
                let Ok(next) = outgoing.try_recv() else { break };
                closing = next.is_close();
                fed = sink.feed(next).await.is_ok();
                batch += 1;
            }
            if !fed || sink.flush().await.is_err() || closing {
                return;
            }
        }
        // The room dropped this session's queue: it was too slow.
        let too_slow = CloseFrame { code: 1008.into(), reason: "too slow".into() };
        let _ = sink.send(Message::Close(Some(too_slow))).await;
    });
    {
        let mut rooms = rooms.lock().expect("rooms");
        let room = rooms.entry(instance.clone()).or_default();
        room.sessions.insert(id, queue);
        room.broadcast(&Message::text(format!("joined {id}")));
    }
    while let Some(Ok(frame)) = incoming.next().await {
        let text = match frame {
            Message::Text(text) => text.to_string(),
            Message::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Message::Close(_) => break,
            _ => continue,
        };
        let mut rooms = rooms.lock().expect("rooms");
        let room = rooms.entry(instance.clone()).or_default();
        room.seq += 1;
        let seq = room.seq;
        room.push(id, Message::text(format!("ack {seq}")));
        room.broadcast(&Message::text(format!("{id}:{seq}:{text}")));
    }
    {
        let mut rooms = rooms.lock().expect("rooms");
        if let Some(room) = rooms.get_mut(&instance) {
            if let Some(queue) = room.sessions.remove(&id) {
                let _ = queue.try_send(Message::Close(None));
            }
            room.broadcast(&Message::text(format!("left {id}")));
        }
    }
    let _ = writer.await;
}
