//! The WebSocket clients: tokio tasks (not a thread each), one per session,
//! on a runtime with one worker per core. Each joins `/ws?instance=room-K`,
//! waits for the common start, sends `CLIENT:SEQ` (SEQ counting from 1) at
//! its rate until the stop, and reads everything: its own acks (`ack N`,
//! timed against its sends, in order) and the room's broadcasts
//! (`SESSION:N:CLIENT:SEQ`), whose SEQ it checks per sender.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

/// How long after the stop a session waits for its acks and its room's
/// last broadcasts: a server behind its load delivers late, which is not a loss.
pub const DRAIN: Duration = Duration::from_secs(60);

/// What one session saw. Times are seconds from the load's start.
#[derive(Debug, Default)]
pub struct SessionResult {
    pub client: usize,
    pub room: usize,
    pub sent: u64,
    pub acks: u64,
    /// Acks whose room number was not above the previous ack's.
    pub acks_out_of_order: u64,
    /// Acks past the number of messages sent.
    pub acks_extra: u64,
    /// (send time, round trip ms) per acknowledged message.
    pub round_trips: Vec<(f64, f64)>,
    /// Per sender client: the next SEQ expected from it.
    pub next_from: HashMap<usize, u64>,
    /// Broadcasts whose SEQ was below the next expected (a repeat or a reorder).
    pub repeated_or_reordered: u64,
    /// Gaps: SEQs skipped over when a later one came first.
    pub gaps: u64,
    /// `Some(why)` if the session ended before the clients stopped.
    pub closed_early: Option<String>,
    /// Seconds from the stop until every ack was back (None: not within the drain).
    pub drained_after_s: Option<f64>,
    /// `Some(why)` if it could not join.
    pub join_failed: Option<String>,
}

/// The load's shape.
pub struct Load {
    pub sessions: usize,
    pub rooms: usize,
    pub rate_hz: f64,
    pub duration: Duration,
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
                let room = client % load.rooms;
                let duration = load.duration;
                tokio::spawn(session(addr, client, room, period, duration, start_rx, joined_tx, handshakes))
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

#[allow(clippy::too_many_arguments)]
async fn session(
    addr: SocketAddr,
    client: usize,
    room: usize,
    period: Option<Duration>,
    duration: Duration,
    mut start_rx: watch::Receiver<Option<Instant>>,
    joined_tx: tokio::sync::mpsc::Sender<()>,
    handshakes: Arc<Semaphore>,
) -> SessionResult {
    let mut result = SessionResult { client, room, ..SessionResult::default() };
    let permit = handshakes.acquire().await.expect("the semaphore stays open");
    let connected = async {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let url = format!("ws://{addr}/ws?instance=room-{room}");
        tokio_tungstenite::client_async(url, stream).await.map_err(std::io::Error::other)
    };
    let ws = match tokio::time::timeout(Duration::from_secs(30), connected).await {
        Ok(Ok((ws, _))) => Some(ws),
        Ok(Err(err)) => {
            result.join_failed = Some(err.to_string());
            None
        }
        Err(_) => {
            result.join_failed = Some("no handshake within 30 s".into());
            None
        }
    };
    drop(permit);
    let _ = joined_tx.send(()).await;
    let Some(ws) = ws else { return result };
    let (mut sink, mut stream) = ws.split();
    let start = loop {
        if let Some(start) = *start_rx.borrow_and_update() {
            break start;
        }
        if start_rx.changed().await.is_err() {
            return result;
        }
    };
    // Spread the first sends of the clients over one period.
    let sends = period.is_some();
    let period = period.unwrap_or(Duration::from_secs(1));
    let offset = period.mul_f64((client % 997) as f64 / 997.0);
    let mut ticker = tokio::time::interval_at((start + offset).into(), period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = start + duration;
    let mut in_flight: VecDeque<Instant> = VecDeque::new();
    let mut last_ack = 0u64;
    let mut last_heard = Instant::now();
    loop {
        let now = Instant::now();
        let sending = now < stop;
        if !sending {
            if in_flight.is_empty() && result.drained_after_s.is_none() {
                result.drained_after_s = Some(now.duration_since(stop).as_secs_f64());
            }
            let drained = in_flight.is_empty() && now.duration_since(last_heard) > Duration::from_secs(1);
            if drained || now > stop + DRAIN {
                break;
            }
        }
        tokio::select! {
            _ = ticker.tick(), if sending && sends => {
                result.sent += 1;
                in_flight.push_back(Instant::now());
                if let Err(err) = sink.send(Message::text(format!("{client}:{}", result.sent))).await {
                    result.closed_early = Some(format!("send failed: {err}"));
                    return result;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(200)), if !sending || !sends => {}
            frame = stream.next() => {
                last_heard = Instant::now();
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        on_text(&text, start, &mut in_flight, &mut last_ack, &mut result);
                    }
                    Some(Ok(Message::Close(frame))) => {
                        result.closed_early = Some(format!("closed by the server: {frame:?}"));
                        return result;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => {
                        result.closed_early = Some(format!("read failed: {err}"));
                        return result;
                    }
                    None => {
                        result.closed_early = Some("the connection ended".into());
                        return result;
                    }
                }
            }
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    let _ =
        tokio::time::timeout(Duration::from_secs(5), async { while stream.next().await.is_some() {} }).await;
    result
}

fn on_text(
    text: &str,
    start: Instant,
    in_flight: &mut VecDeque<Instant>,
    last_ack: &mut u64,
    result: &mut SessionResult,
) {
    if let Some(number) = text.strip_prefix("ack ") {
        let number: u64 = number.parse().unwrap_or(0);
        if number <= *last_ack {
            result.acks_out_of_order += 1;
        }
        *last_ack = number;
        match in_flight.pop_front() {
            Some(sent) => {
                result.acks += 1;
                let rtt = sent.elapsed().as_secs_f64() * 1e3;
                result.round_trips.push((sent.duration_since(start).as_secs_f64(), rtt));
            }
            None => result.acks_extra += 1,
        }
        return;
    }
    // SESSION:N:CLIENT:SEQ; `joined N` and `left N` are not messages.
    let mut parts = text.splitn(4, ':');
    let (Some(_session), Some(_n), Some(sender), Some(seq)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let (Ok(sender), Ok(seq)) = (sender.parse::<usize>(), seq.parse::<u64>()) else { return };
    let next = result.next_from.entry(sender).or_insert(1);
    if seq < *next {
        result.repeated_or_reordered += 1;
    } else {
        result.gaps += seq - *next;
        *next = seq + 1;
    }
}
