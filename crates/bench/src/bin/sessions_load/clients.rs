//! The WebSocket clients: tokio tasks (not a thread each), one per session,
//! on a runtime with one worker per core. Each joins `/ws?instance=room-K`,
//! waits for the common start, sends `CLIENT:SEQ` (SEQ counting from 1) at
//! its rate until the stop, and reads everything: its own acks and the
//! room's broadcasts, checked as [`crate::received`] says. A close ends the
//! session, unless the load says to reconnect: then any close (a close
//! frame of any code, or a dropped connection) is followed by a join of the
//! same room again, and the session goes on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::received::InFlight;
pub use crate::received::SessionResult;

/// How long after the stop a session waits for its acks and its room's
/// last broadcasts: a server behind its load delivers late, which is not a loss.
pub const DRAIN: Duration = Duration::from_secs(60);

/// The load's shape.
#[derive(Debug)]
pub struct Load {
    pub sessions: usize,
    pub rooms: usize,
    pub rate_hz: f64,
    pub duration: Duration,
    /// Whether a closed session (any code, or dropped) joins its room again
    /// and goes on (else any close ends it).
    pub reconnect: bool,
}

/// Opens every session (64 handshakes at a time), calls `ready` once all
/// have joined (or failed to), then starts the load, calls `started` with
/// its start and runs it for `load.duration` (a rate of 0: idle sessions);
/// the results once every session has drained (every ack back and its room
/// quiet for 1 s, or DRAIN after the stop) and closed.
pub fn run(
    addr: SocketAddr,
    load: &Load,
    ready: impl FnOnce(),
    started: impl FnOnce(Instant),
) -> Vec<SessionResult> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let (start_tx, start_rx) = watch::channel(None::<Instant>);
        let (joined_tx, mut joined_rx) = tokio::sync::mpsc::channel::<()>(load.sessions.max(1));
        let handshakes = Arc::new(Semaphore::new(64));
        let period = (load.rate_hz > 0.0).then(|| Duration::from_secs_f64(1.0 / load.rate_hz));
        let tasks: Vec<_> = (0..load.sessions)
            .map(|client| {
                let (start_rx, joined_tx, handshakes) =
                    (start_rx.clone(), joined_tx.clone(), handshakes.clone());
                let plan = Plan {
                    addr,
                    client,
                    room: client % load.rooms,
                    period,
                    duration: load.duration,
                    reconnect: load.reconnect,
                };
                tokio::spawn(session(plan, start_rx, joined_tx, handshakes))
            })
            .collect();
        drop(joined_tx);
        for _ in 0..load.sessions {
            joined_rx.recv().await;
        }
        ready();
        let start = Instant::now();
        started(start);
        start_tx.send(Some(start)).expect("the sessions wait for the start");
        let mut results = Vec::with_capacity(tasks.len());
        for task in tasks {
            results.push(task.await.expect("a session task panicked"));
        }
        results
    })
}

/// One session's part of the load.
#[derive(Debug, Clone, Copy)]
struct Plan {
    addr: SocketAddr,
    client: usize,
    room: usize,
    /// Between two sends (`None`: it sends nothing).
    period: Option<Duration>,
    duration: Duration,
    reconnect: bool,
}

type Sink = SplitSink<WebSocketStream<TcpStream>, Message>;
type Stream = SplitStream<WebSocketStream<TcpStream>>;

/// How one connection of a session ended.
enum Ended {
    /// The load stopped and every ack came back (or the drain ran out).
    Stopped,
    /// The server closed it (`code` of its close frame) or it broke (`None`).
    Closed { code: Option<u16>, what: String },
}

impl Ended {
    fn closed_by(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> Ended {
        let code = frame.as_ref().map_or(CloseCode::Status, |frame| frame.code);
        Ended::Closed { code: Some(u16::from(code)), what: format!("closed by the server: {frame:?}") }
    }
}

async fn session(
    plan: Plan,
    mut start_rx: watch::Receiver<Option<Instant>>,
    joined_tx: tokio::sync::mpsc::Sender<()>,
    handshakes: Arc<Semaphore>,
) -> SessionResult {
    let mut result = SessionResult::new(plan.client, plan.room);
    let joined = join(&plan, &handshakes).await;
    let _ = joined_tx.send(()).await;
    let mut ws = match joined {
        Ok(ws) => ws,
        Err(why) => {
            result.join_failed = Some(why);
            return result;
        }
    };
    let start = loop {
        if let Some(start) = *start_rx.borrow_and_update() {
            break start;
        }
        if start_rx.changed().await.is_err() {
            return result;
        }
    };
    let mut talk = Talk::new(&plan, start);
    loop {
        let (mut sink, mut stream) = ws.split();
        match talk.converse(&mut sink, &mut stream, &mut result).await {
            Ended::Stopped => {
                let _ = sink.send(Message::Close(None)).await;
                let drained = async { while stream.next().await.is_some() {} };
                let _ = tokio::time::timeout(Duration::from_secs(5), drained).await;
                return result;
            }
            Ended::Closed { code, what } => {
                let at_s = start.elapsed().as_secs_f64();
                result.closed(at_s, code, &mut talk.in_flight);
                if !plan.reconnect {
                    result.closed_early = Some(what);
                    return result;
                }
                let closed_at = Instant::now();
                match rejoin(&plan, &handshakes, &mut result).await {
                    Ok(again) => {
                        ws = again;
                        result.rejoined(closed_at.elapsed());
                    }
                    Err(why) => {
                        result.closed_early = Some(format!("{what}; joining again failed: {why}"));
                        return result;
                    }
                }
            }
        }
    }
}

/// Opens the session's connection and joins its room (64 handshakes at a
/// time, 30 s at most).
async fn join(plan: &Plan, handshakes: &Semaphore) -> Result<WebSocketStream<TcpStream>, String> {
    let _permit = handshakes.acquire().await.expect("the semaphore stays open");
    let connected = async {
        let stream = TcpStream::connect(plan.addr).await?;
        stream.set_nodelay(true)?;
        let url = format!("ws://{}/ws?instance=room-{}", plan.addr, plan.room);
        tokio_tungstenite::client_async(url, stream).await.map_err(std::io::Error::other)
    };
    match tokio::time::timeout(Duration::from_secs(30), connected).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("no handshake within 30 s".into()),
    }
}

/// Joins the room again after a close, as a client that reconnects
/// would: a refused attempt (an old process still draining may answer 503)
/// is counted and tried again 100 ms later, for 30 s.
async fn rejoin(
    plan: &Plan,
    handshakes: &Semaphore,
    result: &mut SessionResult,
) -> Result<WebSocketStream<TcpStream>, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match join(plan, handshakes).await {
            Ok(ws) => return Ok(ws),
            Err(why) if Instant::now() >= deadline => return Err(why),
            Err(_) => {
                result.rejoins_refused += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What a session keeps across its connections: its sends' schedule, the
/// messages waiting for an ack, the last ack's room number.
struct Talk {
    start: Instant,
    stop: Instant,
    sends: bool,
    ticker: tokio::time::Interval,
    in_flight: InFlight,
    last_ack: u64,
    last_heard: Instant,
}

impl Talk {
    fn new(plan: &Plan, start: Instant) -> Talk {
        // Spread the first sends of the clients over one period.
        let period = plan.period.unwrap_or(Duration::from_secs(1));
        let offset = period.mul_f64((plan.client % 997) as f64 / 997.0);
        let mut ticker = tokio::time::interval_at((start + offset).into(), period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Talk {
            start,
            stop: start + plan.duration,
            sends: plan.period.is_some(),
            ticker,
            in_flight: InFlight::new(),
            last_ack: 0,
            last_heard: Instant::now(),
        }
    }

    /// Sends and reads on one connection until the load is over and
    /// drained, or the connection ends.
    async fn converse(&mut self, sink: &mut Sink, stream: &mut Stream, result: &mut SessionResult) -> Ended {
        loop {
            let now = Instant::now();
            let sending = now < self.stop;
            if !sending {
                if self.in_flight.is_empty() && result.drained_after_s.is_none() {
                    result.drained_after_s = Some(now.duration_since(self.stop).as_secs_f64());
                }
                let quiet = now.duration_since(self.last_heard) > Duration::from_secs(1);
                if (self.in_flight.is_empty() && quiet) || now > self.stop + DRAIN {
                    return Ended::Stopped;
                }
            }
            tokio::select! {
                _ = self.ticker.tick(), if sending && self.sends => {
                    result.sent += 1;
                    self.in_flight.push_back((result.sent, Instant::now()));
                    let text = Message::text(format!("{}:{}", result.client, result.sent));
                    if let Err(err) = sink.send(text).await {
                        return self.after_send_failed(stream, result, format!("send failed: {err}")).await;
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(200)), if !sending || !self.sends => {}
                frame = stream.next() => {
                    self.last_heard = Instant::now();
                    match frame {
                        Some(Ok(Message::Text(text))) => {
                            result.on_text(&text, self.start, &mut self.in_flight, &mut self.last_ack);
                        }
                        Some(Ok(Message::Close(frame))) => return Ended::closed_by(frame),
                        Some(Ok(_)) => {}
                        Some(Err(err)) => return Ended::Closed { code: None, what: format!("read failed: {err}") },
                        None => return Ended::Closed { code: None, what: "the connection ended".into() },
                    }
                }
            }
        }
    }

    /// A send failed, most likely because the server closed the connection
    /// while it was sent: reads what the server wrote before (up to 1 s),
    /// to find its close frame.
    async fn after_send_failed(
        &mut self,
        stream: &mut Stream,
        result: &mut SessionResult,
        what: String,
    ) -> Ended {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    result.on_text(&text, self.start, &mut self.in_flight, &mut self.last_ack);
                }
                Ok(Some(Ok(Message::Close(frame)))) => return Ended::closed_by(frame),
                Ok(Some(Ok(_))) => {}
                _ => return Ended::Closed { code: None, what },
            }
        }
    }
}
