//! Run with: examples/game/run.sh (it builds this, starts the demo daemon and runs it)
//!
//! Eight players score nonstop against the game demo while, first, the
//! daemon process itself is replaced (`hotswap upgrade`) and then the game's
//! code is swapped from game1 (1001) to game2 (1002, a new state layout).
//! Every second a line shows what serves and how it goes. At the end every
//! player's score in the game state must be what the last answer told that
//! player, and the answers must account for every acknowledged point: no
//! update lost, no request failed. It exits non-zero otherwise.
//!
//! Beside them, four bots play over WebSocket sessions (`bots.rs`): every
//! move they send must be acknowledged in order, and every bot's session
//! must stay open, on the same connection, through the upgrade (its
//! connection moves to the new process) and the swap.
//!
//! Arguments: the daemon's address, the `hotswap` binary, the config file.

mod bots;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PLAYERS: usize = 8;
const BOTS: usize = 4;

/// What one player saw.
#[derive(Default)]
struct Player {
    /// Points acknowledged (one per successful `score`).
    acknowledged: u64,
    /// The score the first and the last answer reported.
    first_reported: Option<u64>,
    last_reported: u64,
}

struct Shared {
    address: String,
    stop: AtomicBool,
    scores: AtomicU64,
    failures: Mutex<Vec<String>>,
    serving_pid: AtomicU32,
    players: Vec<Mutex<Player>>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, hotswap, config] = args.as_slice() else {
        eprintln!("usage: game-tour ADDRESS HOTSWAP_BINARY CONFIG (examples/game/run.sh runs it)");
        return ExitCode::FAILURE;
    };
    let shared = Arc::new(Shared {
        address: address.clone(),
        stop: AtomicBool::new(false),
        scores: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
        serving_pid: AtomicU32::new(0),
        players: (0..PLAYERS).map(|_| Mutex::new(Player::default())).collect(),
    });
    println!("\nThe tour: {PLAYERS} players score nonstop while the daemon process is replaced");
    println!("and then the game's code is swapped for a version with a new state layout.\n");
    let threads: Vec<_> = (0..PLAYERS)
        .map(|index| {
            let shared = shared.clone();
            std::thread::spawn(move || play(&shared, index))
        })
        .collect();

    let bots_stop = Arc::new(AtomicBool::new(false));
    let moves = Arc::new(AtomicU64::new(0));
    let bots = bots::start(address, BOTS, &bots_stop, &moves);

    println!("   time  game            pid   scores/s  failed   moves/s");
    let started = Instant::now();
    let (mut last, mut last_moves) = (0, 0);
    let hotswap_cli = |args: &[&str]| -> String {
        let output = Command::new(hotswap).arg("--config").arg(config).args(args).output();
        match output {
            Ok(output) if output.status.success() => {
                String::from_utf8_lossy(&output.stdout).trim().to_owned()
            }
            Ok(output) => format!("FAILED: {}", String::from_utf8_lossy(&output.stderr).trim()),
            Err(err) => format!("FAILED: cannot run {hotswap}: {err}"),
        }
    };
    for second in 1..=10 {
        std::thread::sleep(
            Duration::from_secs(1).saturating_sub(started.elapsed() - Duration::from_secs(second - 1)),
        );
        let scores = shared.scores.load(Relaxed);
        let game =
            get(address, "/hello").map(|hello| game_of(&hello)).unwrap_or_else(|err| format!("({err})"));
        let moved = moves.load(Relaxed);
        println!(
            "  {:>4}s  {game:<14} {:>6} {:>10} {:>7} {:>9}",
            second,
            shared.serving_pid.load(Relaxed),
            group(scores - last),
            shared.failures.lock().unwrap().len(),
            group(moved - last_moves)
        );
        (last, last_moves) = (scores, moved);
        match second {
            3 => println!("  >> replace the daemon process: {}", hotswap_cli(&["upgrade"])),
            6 => println!(
                "  >> swap the game's code: {}",
                get(address, "/load?name=game2").unwrap_or_else(|err| format!("FAILED: {err}")).trim()
            ),
            _ => {}
        }
    }
    shared.stop.store(true, Relaxed);
    bots_stop.store(true, Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    let reports: Vec<bots::BotReport> = bots.into_iter().filter_map(|bot| bot.join().ok()).collect();
    let bots_ok = reports.len() == BOTS && bots::verify(&reports);
    match (verify(&shared), bots_ok) {
        (ExitCode::SUCCESS, true) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// One player: joins, then scores a point at a time until told to stop.
fn play(shared: &Shared, index: usize) {
    let name = format!("tour-{}", index + 1);
    let (address, pid) = (shared.address.as_str(), Some(&shared.serving_pid));
    let join = serde_json::json!({ "name": name }).to_string();
    if let Err(err) = request(address, pid, &mut None, "POST", "/join", &join) {
        // A player from an earlier tour is already in the game: fine.
        if !err.contains("already joined") {
            shared.failures.lock().unwrap().push(format!("{name} join: {err}"));
        }
    }
    let score = serde_json::json!({ "name": name, "points": 1 }).to_string();
    let mut connection = None;
    while !shared.stop.load(Relaxed) {
        match request(address, pid, &mut connection, "POST", "/score", &score) {
            Ok(reply) => {
                // {"name": "tour-3", "score": 1234, ...}
                let reported = serde_json::from_str::<serde_json::Value>(&reply)
                    .ok()
                    .and_then(|scored| scored["score"].as_u64())
                    .unwrap_or(0);
                let mut player = shared.players[index].lock().unwrap();
                player.acknowledged += 1;
                player.first_reported.get_or_insert(reported);
                player.last_reported = reported;
                shared.scores.fetch_add(1, Relaxed);
            }
            Err(err) => shared.failures.lock().unwrap().push(format!("{name} score: {err}")),
        }
    }
}

/// One request on a keep-alive connection (reconnecting when the server
/// closed it); returns the body of a 2xx answer and notes the serving pid.
fn request(
    address: &str,
    serving_pid: Option<&AtomicU32>,
    connection: &mut Option<BufReader<TcpStream>>,
    method: &str,
    path: &str,
    body: &str,
) -> Result<String, String> {
    if connection.is_none() {
        let stream = TcpStream::connect(address).map_err(|err| format!("connect: {err}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|err| err.to_string())?;
        // Small requests: send each at once instead of waiting to coalesce.
        stream.set_nodelay(true).map_err(|err| err.to_string())?;
        *connection = Some(BufReader::new(stream));
    }
    let reader = connection.as_mut().expect("connected above");
    // One write per request: a request split into small writes stalls on
    // delayed acknowledgements.
    let text =
        format!("{method} {path} HTTP/1.1\r\nHost: game\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let sent = reader.get_mut().write_all(text.as_bytes());
    let answer = sent.map_err(|err| err.to_string()).and_then(|()| read_response(reader));
    let (status, headers, reply) = match answer {
        Ok(answer) => answer,
        Err(err) => {
            *connection = None;
            return Err(err);
        }
    };
    if let (Some(sink), Some(pid)) =
        (serving_pid, headers.get("hotswap-pid").and_then(|pid| pid.parse().ok()))
    {
        sink.store(pid, Relaxed);
    }
    if headers.get("connection").is_some_and(|value| value == "close") {
        *connection = None;
    }
    match status {
        200..300 => Ok(reply),
        _ => Err(format!("{status}: {reply}")),
    }
}

fn read_response(reader: &mut impl BufRead) -> Result<(u16, BTreeMap<String, String>, String), String> {
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|err| err.to_string())?;
    let status =
        line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("the connection closed")?;
    let mut headers = BTreeMap::new();
    loop {
        line.clear();
        reader.read_line(&mut line).map_err(|err| err.to_string())?;
        let Some((name, value)) = line.trim_end().split_once(':') else { break };
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let length = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).map_err(|err| err.to_string())?;
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

/// A GET on a fresh connection.
fn get(address: &str, path: &str) -> Result<String, String> {
    request(address, None, &mut None, "GET", path, "")
}

/// "name=game1" and "version=1001" out of the hello line (a JSON string).
fn game_of(hello: &str) -> String {
    let hello = serde_json::from_str::<String>(hello).unwrap_or_default();
    let field =
        |key: &str| hello.split(", ").find_map(|part| part.strip_prefix(key)).unwrap_or("?").to_owned();
    format!("{} ({})", field("name="), field("version="))
}

fn verify(shared: &Shared) -> ExitCode {
    let failures = shared.failures.lock().unwrap();
    let total = shared.scores.load(Relaxed);
    println!("\n  {} points acknowledged, {} request(s) failed", group(total), failures.len());
    for failure in failures.iter().take(5) {
        println!("    failed: {failure}");
    }
    let state =
        match get(&shared.address, "/state").map(|text| serde_json::from_str::<serde_json::Value>(&text)) {
            Ok(Ok(state)) => state,
            other => {
                println!("  could not read the game state: {other:?}");
                return ExitCode::FAILURE;
            }
        };
    let mut ok = failures.is_empty();
    for (index, player) in shared.players.iter().enumerate() {
        let name = format!("tour-{}", index + 1);
        let player = player.lock().unwrap();
        // game2 keeps players as a list of records, game1 as name -> score.
        let in_state = state["players"]
            .as_array()
            .and_then(|players| players.iter().find(|p| p["name"] == name.as_str()))
            .map(|p| p["score"].as_u64())
            .unwrap_or_else(|| state["players"][&name].as_u64());
        let counted = player.first_reported.map_or(0, |first| player.last_reported - first + 1);
        if in_state != Some(player.last_reported) || counted != player.acknowledged {
            println!(
                "  {name}: state says {in_state:?}, its last answer said {}, {} point(s) acknowledged",
                player.last_reported, player.acknowledged
            );
            ok = false;
        }
    }
    if ok {
        println!("  every player's score in the game state is what the last answer told them, and the");
        println!("  answers account for every acknowledged point: nothing was lost across the upgrade");
        println!("  and the swap.");
        ExitCode::SUCCESS
    } else {
        println!("  the tour found a problem (above)");
        ExitCode::FAILURE
    }
}

/// 12345 -> "12,345".
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
