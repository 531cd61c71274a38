//! Bots that play the game over WebSocket sessions (`/ws/game`), as the
//! page does, through the tour's process upgrade and module swap.
//!
//! Each bot sends one numbered move at a time and waits for its ack, so it
//! knows exactly which messages the game took. A module swap and a process
//! upgrade must keep every session open: the bot sees the new version's
//! ticks on the same connection, and the upgrade moves its connection to
//! the new process. A close with 1001 (going away) would make it reconnect:
//! the tour counts that, and fails.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// What one bot saw.
#[derive(Debug, Default)]
pub struct BotReport {
    pub name: String,
    /// Moves acknowledged, over all its connections.
    pub acked: u64,
    /// Connections closed by the server with 1001 (going away: an upgrade).
    pub reconnects: u64,
    /// Connections on which it saw one version's ticks and then another's.
    pub swaps_on_open_connections: u64,
    /// What went wrong: an ack missing or out of order, another close code.
    pub failures: Vec<String>,
}

/// Starts `count` bots against `address` until `stop`; `acks` counts every ack.
pub fn start(
    address: &str,
    count: usize,
    stop: &Arc<AtomicBool>,
    acks: &Arc<AtomicU64>,
) -> Vec<JoinHandle<BotReport>> {
    (0..count)
        .map(|index| {
            let (address, stop, acks) = (address.to_owned(), stop.clone(), acks.clone());
            std::thread::spawn(move || play(&address, &format!("bot-{}", index + 1), &stop, &acks))
        })
        .collect()
}

/// How a connection ended.
enum Ended {
    Stopped,
    /// Closed by the server with 1001, perhaps with one move not yet acked.
    GoingAway,
    Failed(String),
}

fn play(address: &str, name: &str, stop: &AtomicBool, acks: &AtomicU64) -> BotReport {
    let mut report = BotReport { name: name.to_owned(), ..BotReport::default() };
    let mut attempts = 0;
    while !stop.load(Relaxed) {
        match connect(address, name) {
            Ok(mut socket) => {
                attempts = 0;
                match one_connection(&mut socket, stop, acks, &mut report) {
                    Ended::Stopped => {
                        let _ = socket.close(None);
                        let _ = socket.flush();
                        break;
                    }
                    Ended::GoingAway => report.reconnects += 1,
                    Ended::Failed(failure) => {
                        report.failures.push(failure);
                        break;
                    }
                }
            }
            // The old process stopped accepting and the new one is starting:
            // try again for a while.
            Err(err) if attempts < 50 => {
                attempts += 1;
                if attempts == 50 {
                    report.failures.push(format!("{name} could not reconnect: {err}"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(_) => break,
        }
    }
    report
}

fn connect(address: &str, name: &str) -> Result<WebSocket<TcpStream>, String> {
    let stream = TcpStream::connect(address).map_err(|err| format!("connect: {err}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|err| err.to_string())?;
    stream.set_nodelay(true).map_err(|err| err.to_string())?;
    let url = format!("ws://{address}/ws/game?instance=arena&name={name}");
    tungstenite::client(url.as_str(), stream).map(|(socket, _)| socket).map_err(|err| format!("join: {err}"))
}

/// Plays on one connection until told to stop or the server closes it.
fn one_connection(
    socket: &mut WebSocket<TcpStream>,
    stop: &AtomicBool,
    acks: &AtomicU64,
    report: &mut BotReport,
) -> Ended {
    let name = report.name.clone();
    let mut version: Option<String> = None;
    let mut swapped = false;
    let mut seq = 0u64;
    while !stop.load(Relaxed) {
        seq += 1;
        let step = json!({"type": "move", "dx": if seq % 32 < 16 { 1 } else { -1 }, "dy": 0, "seq": seq});
        if let Err(err) = socket.send(Message::text(step.to_string())) {
            return Ended::Failed(format!("{name}: sending move {seq}: {err}"));
        }
        // Until this move's ack; ticks tell which version serves.
        loop {
            let message = match socket.read() {
                Ok(Message::Text(text)) => serde_json::from_str::<Value>(text.as_str()).unwrap_or_default(),
                Ok(Message::Close(frame)) => {
                    return match frame.map(|frame| frame.code) {
                        Some(CloseCode::Away) => Ended::GoingAway,
                        other => {
                            Ended::Failed(format!("{name}: closed with {other:?} waiting for ack {seq}"))
                        }
                    };
                }
                Ok(_) => continue,
                Err(err) => return Ended::Failed(format!("{name}: waiting for ack {seq}: {err}")),
            };
            match message["type"].as_str() {
                Some("ack") if message["seq"] == seq => {
                    report.acked += 1;
                    acks.fetch_add(1, Relaxed);
                    break;
                }
                Some("ack") => {
                    return Ended::Failed(format!("{name}: ack {} while waiting for {seq}", message["seq"]));
                }
                Some("tick") => {
                    let now = message["version"].as_str().unwrap_or("?").to_owned();
                    if version.as_ref().is_some_and(|before| *before != now) && !swapped {
                        swapped = true;
                        report.swaps_on_open_connections += 1;
                    }
                    version = Some(now);
                }
                _ => {}
            }
        }
    }
    Ended::Stopped
}

/// Prints what the bots saw; whether it is what the tour promises: every
/// move acked in order, and every bot kept its session through the swap.
pub fn verify(reports: &[BotReport]) -> bool {
    let acked: u64 = reports.iter().map(|report| report.acked).sum();
    let reconnects: u64 = reports.iter().map(|report| report.reconnects).sum();
    let kept = reports.iter().filter(|report| report.swaps_on_open_connections > 0).count();
    println!("\n  WebSocket bots: {acked} moves acknowledged, each in the order sent");
    println!(
        "  sessions kept open through the process upgrade and the module swap: {kept} of {}",
        reports.len()
    );
    println!("  sessions closed by the server and reconnected: {reconnects}");
    let mut ok = kept == reports.len() && reconnects == 0;
    for report in reports {
        for failure in &report.failures {
            println!("    failed: {failure}");
            ok = false;
        }
    }
    ok
}
