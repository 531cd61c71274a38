//! One WebSocket session: the handshake and the join, then its reader (this
//! task: messages to the module) and its writer (a task: the room's pushes
//! to the client) until it leaves — or until an upgrade parks it between
//! two messages, to go on in this process again or in the next one
//! ([`Parked`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, block_in_place};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, accept_hdr_async_with_config};

use crate::Server;
use crate::rooms::{QUEUE, close, too_slow};
use crate::whole_frames::{FrameTooBig, WholeFrames, WriteStop};

/// The largest message (and frame) a client may send; over it, 1009.
pub const MAX_MESSAGE: usize = 64 << 10;
/// How long one frame may take to reach a client before it is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a session asked to park may take to reach a message boundary
/// (the end of a fragmented message, its writer's frame written); past it
/// the session is closed with 1001 rather than moved.
pub const PARK_WAIT: Duration = Duration::from_secs(2);

pub type Socket = WebSocketStream<WholeFrames<TcpStream>>;
type Sink = SplitSink<Socket, Message>;
/// A writer stopped for parking: its sink, the pushes it had not sent, its queue.
type StoppedWriter = (Sink, VecDeque<Message>, mpsc::Receiver<Message>);

/// A session stopped between two messages, with all it needs to go on.
pub struct Parked {
    pub id: u64,
    pub room: String,
    /// tungstenite holds nothing of what the client sent: the rest is in
    /// the [`WholeFrames`] under it.
    pub socket: Socket,
    /// Pushes not yet written, oldest first.
    pub outgoing: VecDeque<Message>,
    /// Where the room's next pushes arrive.
    pub queue: mpsc::Receiver<Message>,
    /// A message read whose `on_message` has not run: it runs first.
    pub unrun: Option<Message>,
}

/// Asks a running session to park: it answers on this, or drops it if it
/// closed instead.
pub type ParkRequest = oneshot::Sender<Parked>;

pub fn config() -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE)).max_frame_size(Some(MAX_MESSAGE))
}

/// A connection just accepted: the handshake, the join (under the gate),
/// then the session.
pub async fn serve(server: Arc<Server>, stream: TcpStream, id: u64) {
    let mut target = String::new();
    #[allow(clippy::result_large_err)] // the signature is tungstenite's handshake callback
    let on_request = |request: &Request, response: Response| {
        target = request.uri().to_string();
        Ok(response)
    };
    let frames = WholeFrames::handshake(stream, MAX_MESSAGE);
    let Ok(mut socket) = accept_hdr_async_with_config(frames, on_request, Some(config())).await else {
        return;
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let room = Some(path.trim_matches('/')).filter(|room| !room.is_empty()).unwrap_or("lobby").to_owned();
    let (queue, mut outgoing) = mpsc::channel(QUEUE);

    let gate = server.gate.clone().read_owned().await;
    // Engine calls wait for their room (and, during a swap, for the new
    // version): block_in_place lets tokio move other tasks off this worker.
    // The session is a member of its room from its join on (rooms.rs).
    let joined = block_in_place(|| {
        let join = || server.engine.session_join(&server.module, &room, id, query.as_bytes());
        server.rooms.join(id, queue, join)
    });
    if let Err(refused) = joined {
        drop(gate);
        server.rooms.remove(&room, id, close(CloseCode::Policy, refused.to_string()));
        // What the module pushed before refusing, then the close.
        while let Ok(message) = outgoing.try_recv() {
            if !matches!(timeout(SEND_TIMEOUT, socket.send(message)).await, Ok(Ok(()))) {
                break;
            }
        }
        return;
    }
    // Enlisted under the gate: an upgrade's freeze finds it.
    let park = enlist(&server, id);
    drop(gate);
    let session = Parked { id, room, socket, outgoing: VecDeque::new(), queue: outgoing, unrun: None };
    run(server, session, park).await;
}

/// Makes session `id` one that an upgrade's freeze asks to park.
pub fn enlist(server: &Server, id: u64) -> oneshot::Receiver<ParkRequest> {
    let (ask, asked) = oneshot::channel();
    server.parking().insert(id, ask);
    asked
}

/// Why a session's loop ended.
enum Ending {
    /// Closed: this close frame goes after what is queued.
    Close(Message),
    /// Asked to park, with a message read whose call did not run.
    Park(ParkRequest, Option<Message>),
}

/// A joined session, from where it stands (just joined, resumed after a
/// refused upgrade, or moved from the old process) until it leaves or parks.
pub async fn run(server: Arc<Server>, session: Parked, mut park: oneshot::Receiver<ParkRequest>) {
    let Parked { id, room, socket, outgoing, queue, mut unrun } = session;
    let write_stop = socket.get_ref().write_stop();
    write_stop.go_on(); // Stopped if it was parked before.
    let (sink, mut incoming) = socket.split();
    let (stop, stopped) = oneshot::channel();
    let mut writer = tokio::spawn(write(sink, outgoing, queue, stopped));
    let ending = loop {
        let message = match unrun.take() {
            Some(message) => message,
            None => tokio::select! {
                request = &mut park => break asked(request, None),
                received = incoming.next() => match received {
                    Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => message,
                    Some(Err(WsError::Io(err))) if err.get_ref().is_some_and(|err| err.is::<FrameTooBig>()) => {
                        break Ending::Close(close(CloseCode::Size, err.to_string()));
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break Ending::Close(close(CloseCode::Normal, String::new())),
                    Some(Ok(_)) => continue,
                },
                _ = &mut writer => break Ending::Close(close(CloseCode::Normal, String::new())),
            },
        };
        // Run it under the gate, unless asked to park first: then it is the
        // first thing the session does where it goes on.
        let gate = tokio::select! {
            biased;
            request = &mut park => break asked(request, Some(message)),
            gate = server.gate.clone().read_owned() => gate,
        };
        let said =
            block_in_place(|| server.engine.session_message(&server.module, &room, id, &message.into_data()));
        drop(gate);
        said.unwrap_or_else(|refused| eprintln!("session {id}: {refused}"));
    };
    drop(park); // A freeze that asks from now on hears at once that it will not park.
    let last = match ending {
        Ending::Close(last) => last,
        Ending::Park(reply, unrun) => {
            let parking = stop_at_boundary(id, room.clone(), incoming, &mut writer, stop, &write_stop, unrun);
            if let Ok(parked) = parking.await {
                let Err(parked) = reply.send(parked) else { return };
                // The upgrade stopped waiting for it: closed, and it leaves.
                drop(parked);
            }
            write_stop.go_on(); // A writer that did not stop in time sends the close.
            close(CloseCode::Away, "the server is upgrading: connect again".into())
        }
    };
    server.parking().remove(&id);
    server.rooms.remove(&room, id, last);
    if !writer.is_finished() {
        let _ = timeout(SEND_TIMEOUT, &mut writer).await;
        writer.abort();
    }
    let gate = server.gate.clone().read_owned().await;
    let left = block_in_place(|| server.engine.session_leave(&server.module, &room, id));
    drop(gate);
    left.unwrap_or_else(|failed| eprintln!("session {id}: {failed}"));
}

fn asked(request: Result<ParkRequest, oneshot::error::RecvError>, unrun: Option<Message>) -> Ending {
    match request {
        Ok(reply) => Ending::Park(reply, unrun),
        Err(_) => Ending::Close(close(CloseCode::Away, "the server is stopping".into())),
    }
}

/// Parks a session asked to: its writer stops after the frame it is
/// writing (let go if the socket does not take it: the rest waits in
/// [`WholeFrames::write_behind`]), its reader finishes a fragmented message
/// it is inside of. `Err` if that took longer than [`PARK_WAIT`] (the
/// session then closes).
async fn stop_at_boundary(
    id: u64,
    room: String,
    incoming: SplitStream<Socket>,
    writer: &mut JoinHandle<Option<StoppedWriter>>,
    stop: oneshot::Sender<()>,
    write_stop: &WriteStop,
    mut unrun: Option<Message>,
) -> Result<Parked, ()> {
    let deadline = Instant::now() + PARK_WAIT;
    write_stop.stop();
    let _ = stop.send(());
    let Ok(Ok(Some((sink, mut outgoing, mut queue)))) = timeout_at(deadline, writer).await else {
        return Err(());
    };
    let mut socket = incoming.reunite(sink).expect("the two halves of one socket");
    while unrun.is_none() && socket.get_ref().in_message() {
        match timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(message @ (Message::Text(_) | Message::Binary(_))))) => unrun = Some(message),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            _ => {
                // Inside a message past the deadline, or closing: 1001.
                write_stop.go_on();
                let going = close(CloseCode::Away, "the server is upgrading: connect again".into());
                let _ = timeout(SEND_TIMEOUT, socket.send(going)).await;
                return Err(());
            }
        }
    }
    // Nothing can be pushed any more (the gate is shut): the queue is all.
    loop {
        match queue.try_recv() {
            Ok(message) => outgoing.push_back(message),
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => {
                if !matches!(outgoing.back(), Some(Message::Close(_))) {
                    outgoing.push_back(too_slow());
                }
                break;
            }
        }
    }
    Ok(Parked { id, room, socket, outgoing, queue, unrun })
}

/// Sends a session's pushes to its client: `outgoing` first, then its
/// queue, whose end without a close frame means it overflowed. Returns its
/// parts when told to `stop` (after the frame it is writing), `None` once
/// the session is closed.
async fn write(
    mut sink: Sink,
    mut outgoing: VecDeque<Message>,
    mut queue: mpsc::Receiver<Message>,
    mut stop: oneshot::Receiver<()>,
) -> Option<StoppedWriter> {
    loop {
        let message = tokio::select! {
            biased;
            _ = &mut stop => break,
            message = next(&mut outgoing, &mut queue) => message,
        };
        let last = !matches!(message, Some(Message::Text(_) | Message::Binary(_)));
        let message = message.unwrap_or_else(too_slow);
        if !matches!(timeout(SEND_TIMEOUT, sink.send(message)).await, Ok(Ok(()))) || last {
            return None;
        }
    }
    // What tungstenite buffered (a pong) goes out before the socket moves.
    matches!(timeout(SEND_TIMEOUT, sink.flush()).await, Ok(Ok(()))).then_some((sink, outgoing, queue))
}

async fn next(outgoing: &mut VecDeque<Message>, queue: &mut mpsc::Receiver<Message>) -> Option<Message> {
    match outgoing.pop_front() {
        Some(message) => Some(message),
        None => queue.recv().await,
    }
}
