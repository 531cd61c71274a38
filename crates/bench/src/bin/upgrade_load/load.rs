//! The load: client threads that call the public port back to back for the
//! whole run, each request's outcome recorded, while one more thread runs
//! the plan's events.

use std::io::{self, BufReader, ErrorKind};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hotswap_test_support::http::{self, CLOSE, Response};

use crate::closes::{Closed, ServerClose};
use crate::options::Options;
use crate::plan::{Action, Event};

/// The counter instances the clients spread their adds over.
pub const ROOMS: usize = 16;
/// Connect, read and write timeout of the clients' sockets.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Ok,
    Refused,
    Reset,
    Eof,
    Timeout,
    Non2xx,
    Other,
}

pub const FAILURE_CLASSES: [Outcome; 6] =
    [Outcome::Refused, Outcome::Reset, Outcome::Eof, Outcome::Timeout, Outcome::Non2xx, Outcome::Other];

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Reset => "reset",
            Outcome::Eof => "eof",
            Outcome::Timeout => "timeout",
            Outcome::Non2xx => "non2xx",
            Outcome::Other => "other",
        }
    }
}

/// One request: when it ended (µs since the start), how long it took, which
/// pid answered (or served the connection last, for a failure).
#[derive(Clone, Copy, Debug)]
pub struct Record {
    pub t_us: u32,
    pub lat_us: u32,
    pub pid: u32,
    pub outcome: Outcome,
}

#[derive(Debug)]
pub struct Failure {
    pub t_us: u64,
    pub thread: usize,
    pub outcome: Outcome,
    pub pid: u32,
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct ClientResult {
    pub records: Vec<Record>,
    pub failures: Vec<Failure>,
    pub acked: u64,
    /// Keep-alive clients only (see [`crate::closes`]).
    pub server_closes: Vec<ServerClose>,
}

/// Runs the clients for `options.duration` and the plan's events meanwhile.
pub fn drive<F>(
    options: &Options,
    addr: SocketAddr,
    plan: &[(f64, Action)],
    run: F,
) -> (Vec<ClientResult>, Vec<Event>)
where
    F: Fn(Instant, &Action) -> Event + Sync,
{
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let end = started + options.duration;
    let (results, events) = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..options.keepalive + options.per_request)
            .map(|id| {
                let keep_alive = id < options.keepalive;
                let stop = &stop;
                scope.spawn(move || client(id, addr, keep_alive, started, end, stop))
            })
            .collect();
        let events = scope.spawn(|| {
            let mut events = Vec::new();
            for (at, action) in plan {
                let when = started + Duration::from_secs_f64(*at);
                if when >= end || Instant::now() >= end {
                    break;
                }
                if let Some(wait) = when.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let event = run(started, action);
                let label = match action {
                    Action::Upgrade if event.ok => format!(
                        "upgrade {} -> {}: took {} ms (start-up {} ms, frozen {} ms), {} state bytes",
                        event.old_pid,
                        event.new_pid,
                        event.took_ms,
                        event.startup_ms,
                        event.frozen_ms,
                        event.state_bytes
                    ),
                    Action::Upgrade => format!("upgrade FAILED: {}", event.detail),
                    Action::Swap(version) => {
                        format!("swap to v{version}: {}", if event.ok { "ok" } else { &event.detail })
                    }
                    Action::Resize(bytes) => {
                        format!(
                            "resize blob to {bytes} bytes: {}",
                            if event.ok { "ok" } else { &event.detail }
                        )
                    }
                };
                println!("  {:>6.3} s  {label}", event.start_s);
                events.push(event);
            }
            events
        });
        let events = events.join().expect("the event thread");
        let results: Vec<ClientResult> =
            clients.into_iter().map(|c| c.join().expect("a client thread")).collect();
        stop.store(true, Ordering::Relaxed);
        (results, events)
    });
    (results, events)
}

/// One client thread: requests back to back until `end`.
fn client(
    id: usize,
    addr: SocketAddr,
    keep_alive: bool,
    started: Instant,
    end: Instant,
    stop: &AtomicBool,
) -> ClientResult {
    let mut result = ClientResult::default();
    let mut connection: Option<BufReader<TcpStream>> = None;
    let mut connection_pid = 0u32;
    let mut sent = 0usize;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        let room = (id + sent) % ROOMS;
        sent += 1;
        let path = format!("/call/counter/add?instance=room-{room}");
        let begin = Instant::now();
        let outcome: Result<Response, (Outcome, String, Option<Closed>)> = (|| {
            if connection.is_none() {
                let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|err| {
                    let class = if err.kind() == ErrorKind::ConnectionRefused {
                        Outcome::Refused
                    } else {
                        Outcome::Other
                    };
                    (class, format!("connect: {err}"), None)
                })?;
                let _ = stream.set_nodelay(true);
                let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
                let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
                connection = Some(BufReader::new(stream));
                connection_pid = 0;
            }
            let reader = connection.as_mut().expect("connected");
            http::exchange(reader, "POST", &path, b"1", if keep_alive { &[] } else { &[CLOSE] }).map_err(
                |err| {
                    let class = match err.error.kind() {
                        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => {
                            Outcome::Reset
                        }
                        ErrorKind::UnexpectedEof => Outcome::Eof,
                        ErrorKind::WouldBlock | ErrorKind::TimedOut => Outcome::Timeout,
                        _ => Outcome::Other,
                    };
                    (class, err.to_string(), Closed::of_error(&err))
                },
            )
        })();
        let now = Instant::now();
        let t_us = (now - started).as_micros() as u64;
        let lat_us = (now - begin).as_micros() as u32;
        match outcome {
            Ok(response) => {
                let outcome =
                    if (200..300).contains(&response.status) { Outcome::Ok } else { Outcome::Non2xx };
                if outcome == Outcome::Ok {
                    result.acked += 1;
                } else {
                    result.failures.push(Failure {
                        t_us,
                        thread: id,
                        outcome,
                        pid: response.pid().unwrap_or(0),
                        detail: format!(
                            "{} {}",
                            response.status,
                            String::from_utf8_lossy(&response.body).replace(['\n', ','], " ")
                        ),
                    });
                }
                result.records.push(Record {
                    t_us: t_us as u32,
                    lat_us,
                    pid: response.pid().unwrap_or(0),
                    outcome,
                });
                connection_pid = response.pid().unwrap_or(0);
                if keep_alive && response.closes() {
                    result.server_closes.push(ServerClose { t_us: t_us as u32, how: Closed::Said });
                }
                if response.closes() || !keep_alive {
                    connection = None;
                }
            }
            Err((class, detail, closed)) => {
                if let Some(how) = closed.filter(|_| keep_alive) {
                    result.server_closes.push(ServerClose { t_us: t_us as u32, how });
                }
                result.failures.push(Failure {
                    t_us,
                    thread: id,
                    outcome: class,
                    pid: connection_pid,
                    detail: format!(
                        "{} connection: {detail}",
                        if keep_alive { "keep-alive" } else { "per-request" }
                    )
                    .replace(',', ";"),
                });
                result.records.push(Record {
                    t_us: t_us as u32,
                    lat_us,
                    pid: connection_pid,
                    outcome: class,
                });
                connection = None;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    result
}

/// One request to the public port on a fresh connection: status, body and
/// the pid that answered (0 if it did not say).
pub fn call(addr: SocketAddr, path: &str, body: &[u8]) -> io::Result<(u16, Vec<u8>, u32)> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let response = http::exchange(&mut BufReader::new(stream), "POST", path, body, &[CLOSE])?;
    let pid = response.pid().unwrap_or(0);
    Ok((response.status, response.body, pid))
}
